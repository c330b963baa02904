"""The gateway's retained status message: what it read, dropped, made, stored and published."""
from __future__ import annotations

import dataclasses
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import can

if TYPE_CHECKING:
    from .service import Gateway


def interface_drops(channel: str) -> dict[str, int] | None:
    """Frames the kernel or the CAN controller dropped on a SocketCAN interface (MCP2515 overruns
    show up here), from sysfs; None where the interface has no such statistics."""
    stats = Path("/sys/class/net") / channel / "statistics"
    out = {}
    for name in ("rx_dropped", "rx_over_errors", "rx_fifo_errors"):
        try:
            out[name] = int((stats / name).read_text())
        except (OSError, ValueError):
            return None
    return out


def _version() -> str:
    try:
        return metadata.version("dcm-telemetry")
    except metadata.PackageNotFoundError:
        return "unknown"


def gateway_status(gw: Gateway, drops: dict[str, int] | None) -> dict[str, Any]:
    """The status body of a running gateway; ``drops`` are its interface's (None for a bus it was
    handed)."""
    src, smp, box = gw.source.stats, gw.sampler.stats, gw.outbox
    return {
        "vehicle_id": gw.config.vehicle_id,
        "boot_id": gw.boot_id.hex(),
        "versions": {"dcm": _version(), "python-can": can.__version__},
        "schema": gw.schema.fingerprint.hex(),
        "frames": src.frames,
        "error_frames": src.error_frames,
        "remote_frames": src.remote_frames,
        "bus_outages": src.outages,
        "bus_errors": src.bus_errors,
        "bus_down_s": round(gw.source.down_for_s, 1),
        "interface_drops": drops,
        "frames_malformed": smp.frames_malformed,
        "frames_late": smp.frames_late,
        "packets_made": gw.stats.packets_made,
        "packets_unstored": gw.stats.packets_unstored,
        "writer_stalls": gw.stats.writer_stalls,
        "packets_published": gw.publisher.stats.published,
        "events_made": gw.stats.events_made,
        "triggers": dataclasses.asdict(gw.triggers.stats) if gw.triggers is not None else None,
        "outbox": {"depth": box.depth, "bytes": box.bytes, "budget": box.max_bytes, "budget_now": box.budget,
                   "evicted_packets": box.stats.evicted_packets, "evicted_bytes": box.stats.evicted_bytes,
                   "disk_evicted_packets": box.stats.disk_evicted_packets, "disk_full": box.stats.disk_full},
        "clock": {"synchronised": gw.clock_synced, "correction_ms": gw.clock.correction_ms,
                  "steps_forward": gw.clock.stats.steps_forward,
                  "steps_backward": gw.clock.stats.steps_backward},
    }
