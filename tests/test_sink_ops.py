"""Operations: the TOML config loader, ``dcm sink gaps``, and a running sink's HTTP endpoints and
schema events against a real Mosquitto."""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid

import paho.mqtt.client as mqtt
import pyarrow.parquet as pq
import pytest

import dbc
from cloud_sink.config import ConfigError, SinkConfig, load_config
from cloud_sink.http import render
from cloud_sink.intake import Incoming
from cloud_sink.lake import mask_vehicle
from cloud_sink.service import Sink
from dcm.broker import BrokerUrl
from dcm.cli import main as dcm_main
from dcm.testing import until_async
from minute_packet import encode

from test_sink import SECRET, Publish, _config, _packet, _run_sink


def test_toml_config_with_overrides(tmp_path):
    (tmp_path / "key.bin").write_bytes(b"0123456789abcdef\n")
    cfg = tmp_path / "sink.toml"
    cfg.write_text('secret_file = "key.bin"\nstate = "st/s.sqlite"\n'
                   'http = "127.0.0.1:0"\ndbc = ["a.dbc"]\n'
                   '[mqtt]\nurl = "mqtt://broker.example:1884"\nallow_plaintext = true\nshare_group = "sinks"\n'
                   '[lake]\nroot = "s3://bucket/lake"\nlayout = "bucket"\nroll_mib = 0.5\nroll_interval_s = 60\n')
    c = load_config(cfg, {"mqtt.client_id": "w7", "lake.roll_interval_s": 5.0})
    assert (c.broker.host, c.broker.port, c.vehicle_secret) == ("broker.example", 1884, b"0123456789abcdef")
    assert c.state_path == tmp_path / "st" / "s.sqlite" and c.dbc_paths == (tmp_path / "a.dbc",)
    assert (c.lake_root, c.layout, c.roll_bytes, c.roll_interval_s) == ("s3://bucket/lake", "bucket", 1 << 19, 5.0)
    assert (c.http_host, c.http_port, c.share_group, c.worker) == ("127.0.0.1", 0, "sinks", "w7")
    with pytest.raises(AttributeError):
        c.layout = "vehicle"  # frozen


@pytest.mark.parametrize("text, words", [
    ("brokr = 'mqtt://x'\n", ["brokr: unknown key"]),
    ("broker = 'mqtt://x'\n", ["broker: unknown key (renamed mqtt.url)"]),
    ("[lake]\nbuckets = 'many'\n", ["lake.buckets: must be an integer"]),
    ("[lake]\nlayout = 'daily'\n", ["lake.layout: must be one of vehicle, bucket"]),
    ("[mqtt]\nurl = 'http://x'\n", ["mqtt.url: broker URL must look like"]),
    ("secret_file = 'missing.key'\n", ["secret_file"]),
    ("http = 'nope'\n", ["http"]),
    ("broker = \n", []),
])
def test_config_errors_name_the_file_and_key_and_exit_2(tmp_path, capsys, text, words):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert str(cfg) in str(err.value) and all(w in str(err.value) for w in words)
    assert dcm_main(["sink", "--config", str(cfg)]) == 2
    assert str(cfg) in capsys.readouterr().err


def test_gaps_cli_lists_missing_ranges(tmp_path, schema, capsys):
    sink = Sink(SinkConfig(broker=BrokerUrl("127.0.0.1", 1), lake_root=tmp_path / "lake",
                           state_path=tmp_path / "s.sqlite", quarantine_dir=tmp_path / "q", vehicle_secret=SECRET,
                           dbc_paths=(dbc.REFERENCE_DBC,)))
    boot = uuid.uuid4().bytes
    sink.ingest([Incoming("dcm/CAR1/telemetry", encode(_packet(schema, "CAR1", s, boot, rows=5)), s, 1)
                 for s in (0, 1, 4, 5, 9)])
    assert sink.gap_count() == 5
    sink.staging.close()
    assert dcm_main(["sink", "gaps", "--state", str(tmp_path / "s.sqlite"), "--json"]) == 0
    gaps = json.loads(capsys.readouterr().out)
    assert [(g["vehicle"], g["boot"], g["first"], g["last"]) for g in gaps] == [
        ("CAR1", boot.hex(), 2, 3), ("CAR1", boot.hex(), 6, 8)]


def test_render_prometheus_text():
    text = render([("a_total", "counter", "things", {}, 3), ("b", "gauge", "x", {"reason": 'q"1'}, 1.5)])
    assert text == ('# HELP a_total things\n# TYPE a_total counter\na_total 3\n'
                    '# HELP b x\n# TYPE b gauge\nb{reason="q\\"1"} 1.5\n')


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class _Events:
    def __init__(self, broker, topic):
        self.got: list[dict] = []
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.c.on_message = lambda c, u, m: self.got.append(json.loads(m.payload))
        self.c.connect(broker.host, broker.port)
        self.c.subscribe(topic, qos=1)
        self.c.loop_start()

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_http_metrics_latest_state_and_schema_events(tmp_path, broker, schema):
    prefix = f"t{uuid.uuid4().hex[:6]}"
    boot = uuid.uuid4().bytes
    topic = f"{prefix}/CAR5/telemetry"
    items = [(topic, encode(_packet(schema, "CAR5", s, boot)), False) for s in (0, 1, 3)]
    items += [(topic, items[0][1], False), (topic, b"MP\x01\x00junk", False),
              (topic, b"MP\x01\x00" + bytes(1_100_000), False)]  # oversized
    events = _Events(broker, f"{prefix}/events/schema")
    seen: dict[str, tuple[int, str]] = {}
    masked = mask_vehicle(SECRET, "CAR5")

    class Check(Publish):
        async def __call__(self, sink):
            await super().__call__(sink)
            await until_async(lambda: sink.stats.packets_written >= 3, 10)
            base = f"http://127.0.0.1:{sink.http_port}"
            seen["metrics"] = await asyncio.to_thread(_get, base + "/metrics")
            seen["latest"] = await asyncio.to_thread(_get, f"{base}/vehicles/{masked}/latest")
            seen["unknown"] = await asyncio.to_thread(_get, f"{base}/vehicles/0000/latest")

    config = _config(tmp_path, broker, prefix, dbc_paths=(dbc.REFERENCE_DBC,), http_host="127.0.0.1", http_port=0)
    sink = asyncio.run(_run_sink(config, Check(broker, items, lambda s: True)))
    events.close()
    status, metrics = seen["metrics"]
    assert status == 200
    lines = set(metrics.splitlines())
    for line in ("dcm_sink_packets_in_total 6", 'dcm_sink_rejects_total{reason="too_large"} 1', "dcm_sink_packets_written_total 3", "dcm_sink_duplicates_total 1",
                 'dcm_sink_rejects_total{reason="corrupt_compression"} 1', "dcm_sink_gap_packets 1",
                 "dcm_sink_staging_backlog_packets 0", "# TYPE dcm_sink_lag_seconds gauge"):
        assert line in lines, line
    assert any(line.startswith('dcm_sink_out_of_range_total{column="') for line in lines)
    status, body = seen["latest"]
    latest = json.loads(body)
    assert status == 200 and latest["vehicle"] == masked and len(latest["signals"]) == len(schema.columns)
    assert seen["unknown"][0] == 404
    assert sink.stats.packets_written == 3
    assert [(e["kind"], e["scope"], e["key"]) for e in events.got] == [("new", "model", "ref")]


def _get_with(url: str, headers: dict[str, str]) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("WWW-Authenticate", "")


def test_http_token_from_the_config_file_is_required_on_every_route(tmp_path):
    """``http_token_file``: no token or a wrong one gets 401 with a Bearer challenge; the right one
    gets the API. A token file too short is a config error."""
    from cloud_sink.http import serve

    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-0123456789\n")
    toml = tmp_path / "sink.toml"
    (tmp_path / "mask.key").write_text("0123456789abcdef")
    toml.write_text('secret_file = "mask.key"\nhttp = "127.0.0.1:0"\nhttp_token_file = "token"\n'
                    f'[lake]\nroot = "{(tmp_path / "lake").as_posix()}"\n')
    config = load_config(toml, {"state": tmp_path / "s.sqlite", "quarantine": tmp_path / "q"})
    assert config.http_token == b"s3cret-token-0123456789"
    sink = Sink(config)
    got: dict[str, tuple[int, str]] = {}

    async def run() -> None:
        stop, bound = asyncio.Event(), asyncio.Event()
        ports: list[int] = []
        task = asyncio.create_task(serve(sink, "127.0.0.1", 0, stop, lambda p: (ports.append(p), bound.set()),
                                         config.http_token))
        await asyncio.wait_for(bound.wait(), 10)
        base = f"http://127.0.0.1:{ports[0]}"
        for name, path, headers in (
                ("none", "/metrics", {}), ("wrong", "/metrics", {"Authorization": "Bearer nope"}),
                ("basic", "/vehicles/00/latest", {"Authorization": "Basic czNjcmV0"}),
                ("odd", "/metrics", {"Authorization": "Bearer \xe9t\xe9"}),  # not UTF-8 on the wire
                ("metrics", "/metrics", {"Authorization": "Bearer s3cret-token-0123456789"}),
                ("latest", "/vehicles/00/latest", {"Authorization": "bearer s3cret-token-0123456789"})):
            got[name] = await asyncio.to_thread(_get_with, base + path, headers)
        stop.set()
        await task

    asyncio.run(run())
    sink.staging.close()
    assert got["none"] == got["wrong"] == got["basic"] == got["odd"] == (401, "Bearer")
    assert got["metrics"][0] == 200 and "dcm_sink_packets_in_total 0" in got["metrics"][1]
    assert got["latest"][0] == 404  # authorised; this vehicle is unknown
    token_file.write_text("short")
    with pytest.raises(ConfigError, match="http_token_file: .*at least 16 characters"):
        load_config(toml)


def test_a_failing_lake_is_retried_without_losing_packets(tmp_path, broker, schema):
    prefix = f"t{uuid.uuid4().hex[:6]}"
    boot = uuid.uuid4().bytes
    blocker = tmp_path / "lake"
    blocker.write_text("not a folder")  # the lake root cannot be created: every write fails
    items = [(f"{prefix}/CAR8/telemetry", encode(_packet(schema, "CAR8", s, boot, rows=5)), False) for s in range(2)]

    class Heal(Publish):
        async def __call__(self, sink):
            await super().__call__(sink)
            await until_async(lambda: sink.stats.write_errors, 10)
            blocker.unlink()

    config = _config(tmp_path, broker, prefix, dbc_paths=(dbc.REFERENCE_DBC,))
    sink = asyncio.run(_run_sink(config, Heal(broker, items, lambda s: s.stats.packets_written >= 2)))
    assert sink.stats.write_errors >= 1 and sink.stats.packets_written == 2


def test_compact_cli(tmp_path, schema, capsys):
    sink = Sink(SinkConfig(broker=BrokerUrl("127.0.0.1", 1), lake_root=tmp_path / "lake",
                           state_path=tmp_path / "s.sqlite", quarantine_dir=tmp_path / "q", vehicle_secret=SECRET,
                           dbc_paths=(dbc.REFERENCE_DBC,)))
    boot = uuid.uuid4().bytes
    for s in range(3):
        sink.ingest([Incoming("dcm/CAR1/telemetry", encode(_packet(schema, "CAR1", s, boot, rows=5)), s, 1)])
        sink.flush()
    sink.staging.close()
    assert dcm_main(["sink", "compact", "--lake", str(tmp_path / "lake"), "--min-age", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["partitions"], report["merged_files"], report["outputs"], report["rows"]) == (1, 3, 1, 15)
    (merged,) = (tmp_path / "lake").rglob("*.parquet")
    assert merged.name.startswith("compact-")  # live files are lz4, merged ones zstd
    assert pq.ParquetFile(merged).metadata.row_group(0).column(0).compression == "ZSTD"


def test_freed_chunk_memory_is_reused_without_page_faults():
    """A writer chunk's pattern: several arrays of a few MiB held, then all freed. With glibc's
    defaults the freed heap top is trimmed and the next chunk faults its pages in again (about
    4,000 faults here); after ``keep_freed_memory`` the next chunk reuses them."""
    import subprocess
    import sys

    script = ("import resource, sys, numpy as np\n"
              "from dcm.allocator import keep_freed_memory\n"
              "tuned = sys.argv[1] == '1' and keep_freed_memory()\n"
              "def chunk():\n"
              "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
              "    held = [np.ones(6 << 20, dtype=np.uint8) for _ in range(8)]\n"
              "    del held\n"
              "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
              "chunk(); chunk()\n"
              "print(int(tuned), chunk())\n")
    runs = {}
    for tune in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", script, tune], capture_output=True, text=True, check=True)
        tuned, faults = map(int, out.stdout.split())
        runs[tune] = (tuned, faults)
    if not runs["1"][0]:
        pytest.skip(f"no glibc mallopt on {sys.platform}")
    if runs["0"][1] < 2000:  # e.g. another allocator preloaded: nothing to show
        pytest.skip(f"this allocator keeps freed memory by itself ({runs['0'][1]} faults untuned)")
    assert runs["1"][1] < 200  # untuned: most of the 8 x 6 MiB = 12,288 pages faulted in again


def test_the_deployed_example_config_and_unit_check_out(tmp_path, capsys):
    """deploy/sink.example.toml validates with the flags deploy/dcm-sink@.service adds (secret and
    token files placed here instead of /etc/dcm)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    unit = (root / "deploy" / "dcm-sink@.service").read_text()
    start = next(line for line in unit.splitlines() if line.startswith("ExecStartPre="))
    run = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert start.removeprefix("ExecStartPre=") == run.removeprefix("ExecStart=") + " --check-config"
    flags = start.split("--config /etc/dcm/sink.toml ", 1)[1].replace("%i", "3").replace("%H", "host7").split()
    (tmp_path / "mask.key").write_bytes(b"0123456789abcdef")
    (tmp_path / "token").write_text("t" * 32)
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    flags = [f.replace("/var/lib/dcm-sink", str(tmp_path)) for f in flags]
    extra = ["--secret-file", str(tmp_path / "mask.key"), "--http-token-file", str(tmp_path / "token")]
    example = ["sink", "--config", str(root / "deploy" / "sink.example.toml"), *flags, *extra]
    assert dcm_main(example) == 2  # its ca_file is not on this machine
    assert "mqtt.ca_file: no such file /etc/dcm/broker-ca.pem" in capsys.readouterr().err
    code = dcm_main(example + ["--ca-file", str(tmp_path / "ca.pem")])
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads(out)
    assert summary["ok"] is True and (summary["worker"], summary["share_group"], summary["layout"]) == (
        "host7-3", "sinks", "bucket")
