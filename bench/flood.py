"""A hostile flood through the sink's intake, in a process of its own, for ``dcm bench faults``.

``python -m bench.flood <workdir> <messages> <kind>`` builds a sink (no broker: messages go
through :meth:`Sink.ingest`, the intake's own path after MQTT) and feeds it ``messages`` messages
in batches of 500, then prints one JSON object: the process's peak RSS (``VmHWM``), the
quarantine's files and bytes against its budget, packets parked, schemas held. ``kind`` is
``hostile`` (cycling: garbage, 256 KiB junk, bit-flipped packets, packets of unknown schemas
that park, a schema flood) or ``valid`` (the same number of valid packets: the baseline).
"""
from __future__ import annotations

import json
import os
import random
import sys
import uuid
from pathlib import Path
from typing import Any

QUARANTINE_MIB = 16
MAX_SCHEMAS = 200


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _messages(kind: str, count: int, schema) -> Any:
    """Yield (topic, payload) pairs."""
    import dataclasses

    import numpy as np

    from minute_packet import MinutePacket, Schema, encode

    rng = random.Random(7)
    boot = uuid.uuid4().bytes
    cols = len(schema.columns)
    values = np.arange(cols * 5, dtype=np.uint64).reshape(cols, 5) % 50
    present = np.ones((cols, 5), dtype=bool)
    base = MinutePacket(vehicle_id="V0", model="ref", boot_id=boot, seq=0, start_time=1_767_225_600,
                        fingerprint=schema.fingerprint, values=values, present=present)
    small = json.loads(_small_schema_json())
    for i in range(count):
        if kind == "valid":
            p = dataclasses.replace(base, vehicle_id=f"V{i % 100}", seq=i // 100,
                                    start_time=1_767_225_600 + 60 * (i // 100))
            yield f"dcm/{p.vehicle_id}/telemetry", encode(p, level=1)
            continue
        what = i % 5
        if what == 0:
            yield f"dcm/G{i % 50}/telemetry", rng.randbytes(rng.randrange(64, 4096))
        elif what == 1:
            yield f"dcm/J{i % 50}/telemetry", rng.randbytes(256 << 10)
        elif what == 2:
            data = bytearray(encode(dataclasses.replace(base, vehicle_id="F1", seq=i), level=1))
            data[rng.randrange(8, len(data))] ^= 1 << rng.randrange(8)
            yield "dcm/F1/telemetry", bytes(data)
        elif what == 3:
            fp = rng.randbytes(8)
            p = dataclasses.replace(base, vehicle_id=f"P{i % 100}", seq=i, fingerprint=fp)
            yield f"dcm/{p.vehicle_id}/telemetry", encode(p, level=1)
        else:
            small["columns"][0]["name"] = small["columns"][0]["signal"] = f"S{i}"
            text = json.dumps(small).encode()
            yield f"dcm/schemas/{Schema.from_json(text).fingerprint.hex()}", text


def _small_schema_json() -> bytes:
    import dbc
    from minute_packet import Collection, schema_from_dbc

    return schema_from_dbc(dbc.load(dbc.REFERENCE_DBC), Collection(signals=frozenset({"VehicleSpeed"}))).to_json()


def run_flood(workdir: Path, count: int, kind: str) -> dict[str, Any]:
    import dbc
    from cloud_sink.intake import Incoming
    from cloud_sink.service import Sink, SinkConfig
    from dcm_base.broker_url import BrokerUrl
    from minute_packet import schema_from_dbc

    schema = schema_from_dbc(dbc.load(dbc.REFERENCE_DBC))
    sink = Sink(SinkConfig(broker=BrokerUrl("127.0.0.1", 1), lake_root=workdir / "lake",
                           state_path=workdir / "state.sqlite", quarantine_dir=workdir / "quarantine",
                           vehicle_secret=os.urandom(16), dbc_paths=(dbc.REFERENCE_DBC,),
                           quarantine_max_bytes=QUARANTINE_MIB << 20, max_schemas=MAX_SCHEMAS))
    rss_start = _rss_mib("VmRSS")
    batch: list[Incoming] = []
    for i, (topic, payload) in enumerate(_messages(kind, count, schema)):
        batch.append(Incoming(topic, payload, i + 1, 1))
        if len(batch) == 500:
            sink.ingest(batch)
            batch = []
    if batch:
        sink.ingest(batch)
    q = sink.quarantine
    disk = sum(p.stat().st_size for p in (workdir / "quarantine").rglob("*") if p.is_file())
    out = {"kind": kind, "messages": count, "rss_at_start_mib": round(rss_start, 1),
           "peak_rss_mib": round(_rss_mib("VmHWM"), 1), "rejects": q.total, "quarantine_files": q.files,
           "quarantine_bytes_on_disk": disk, "quarantine_budget_bytes": q.max_bytes, "quarantine_evicted": q.evicted,
           "quarantine_unsaved": q.dropped, "staged": sink.stats.packets_staged,
           "pending_in_staging": sink.staging.queue.pending(), "schemas_held": len(sink.schemas),
           "schemas_pruned": sink.registry.pruned, "schema_budget": MAX_SCHEMAS}
    sink.staging.close()
    return out


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.ERROR)
    print(json.dumps(run_flood(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])))
