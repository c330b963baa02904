"""The ground truth of a fleet run: what was generated, what was sent, what a sink should hold.

The manifest depends only on the fleet spec (same seed, same manifest), never
on wall-clock time or the broker; what happened at run time (rates,
reconnects) goes in the run summary instead. Per vehicle: model, profile,
schema fingerprint, boot id, sequence range, packet count, the packets hit
by each fault, the injected scenario with when it showed and the checks
that hold at that second; totals of what a sink should report.
"""
from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path
from typing import Any

from .fleet_spec import FleetSpec, VehiclePlan

MANIFEST_VERSION = 1


class ManifestRecorder:
    """Collects a run's ground truth while it is generated and sent."""

    def __init__(self, spec: FleetSpec, plans: list[VehiclePlan], fingerprints: dict[str, bytes]) -> None:
        self.spec = spec
        self.plans = plans
        self.fingerprints = fingerprints
        self.windows = 0
        self.faults: dict[int, dict[str, list]] = collections.defaultdict(lambda: collections.defaultdict(list))
        self.disconnects: list[dict[str, int]] = []
        self.messages_sent = 0
        self.complete = False
        self._digest = hashlib.sha256()

    def add_payloads(self, payloads: list[bytes]) -> None:
        """Fold generated (pre-fault) payloads into the content digest, in generation order."""
        for p in payloads:
            self._digest.update(len(p).to_bytes(4, "little"))
            self._digest.update(p)

    def record_fault(self, kind: str, vehicle: int, seq: int, detail: dict[str, Any]) -> None:
        self.faults[vehicle][kind].append(dict(detail, seq=seq) if detail else seq)

    def record_disconnect(self, window: int, connection: int) -> None:
        self.disconnects.append({"window": window, "connection": connection})

    def to_json(self, events: dict[int, dict[str, Any]]) -> dict[str, Any]:
        spec, w = self.spec, self.windows
        vehicles = []
        totals: collections.Counter[str] = collections.Counter()
        events_by_kind: collections.Counter[str] = collections.Counter()
        for plan in self.plans:
            faults = {k: v for k, v in self.faults.get(plan.index, {}).items()}
            corrupted = len(faults.get("corrupt", []))
            row: dict[str, Any] = {
                "vehicle_id": plan.vehicle_id, "model": plan.model, "profile": plan.profile,
                "fingerprint": self.fingerprints[plan.model].hex(), "boot_id": plan.boot_id.hex(),
                "seq_first": 0 if w else None, "seq_last": w - 1 if w else None, "packets": w,
                "expected_stored": w - corrupted, "rows_expected": (w - corrupted) * spec.interval_s,
                "faults": faults,
                "scenario": (dict(kind=plan.scenario.kind, planned_t=plan.scenario.t) if plan.scenario else None),
                "event": events.get(plan.index),
            }
            if plan.index in events:
                events_by_kind[events[plan.index]["kind"]] += 1
            totals["packets_generated"] += w
            totals["packets_expected_stored"] += w - corrupted
            totals["rows_expected"] += (w - corrupted) * spec.interval_s
            totals["corrupted"] += corrupted
            for kind, key in (("duplicate", "duplicates_injected"), ("delay", "delayed"), ("reorder", "reordered")):
                totals[key] += len(faults.get(kind, []))
            vehicles.append(row)
        expected = dict(totals)
        expected["quarantined"] = expected.pop("corrupted", 0)
        expected["events_by_kind"] = dict(sorted(events_by_kind.items()))
        return {
            "version": MANIFEST_VERSION,
            "complete": self.complete,
            "spec": spec.to_json(),
            "start_time": spec.start_time,
            "end_time": spec.start_time + w * spec.interval_s,
            "windows": w,
            "schemas": {m: fp.hex() for m, fp in self.fingerprints.items()},
            "payload_sha256": self._digest.hexdigest(),
            "expected": expected,
            "disconnects": self.disconnects,
            "vehicles": vehicles,
        }


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str))
    tmp.replace(path)
