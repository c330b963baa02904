"""Packet mode: generate a fleet's packets, inject faults, publish them, write the manifest.

One generating thread (this one) encodes every packet with the gateway's
codec and hands it to :class:`~simulator.mqtt_mux.MqttMux`, whose thread
owns the MQTT connections. ``speed`` maps simulated to wall time: 1 is real
time (each window is published once it has ended, its groups spread over
the next interval, like gateways whose minutes end at the same time but
whose uplinks are not synchronised), ``k`` is k times faster, 0 as fast as
possible. Without a broker it only generates and encodes (a dry run).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dcm_base.broker_url import BrokerUrl
from minute_packet import Topics, encode

from .faults import FaultInjector, Outgoing
from .fleet_generator import FleetGenerator
from .fleet_spec import FleetSpec
from .manifest import ManifestRecorder, write_manifest
from .mqtt_mux import MqttMux

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FleetRunConfig:
    spec: FleetSpec
    broker: BrokerUrl | None = None  # None: generate and encode only
    topic_prefix: str = "dcm"
    connections: int = 4  # 0: one MQTT connection per vehicle
    speed: float = 0.0  # 0: as fast as possible, 1: real time, k: k x real time
    level: int = 3  # zstd level of the packets (the gateway uses 19; 3 is the codec default)
    manifest_path: Path | None = None
    window: int = 100  # messages awaiting PUBACK per connection
    queue_size: int = 20_000
    flush_timeout_s: float = 60.0
    client_prefix: str = "dcm-fleet"


class FleetRun:
    """One packet-mode run; :meth:`run` returns the summary, :attr:`manifest` the ground truth."""

    def __init__(self, config: FleetRunConfig) -> None:
        self.config = config
        self.generator = FleetGenerator(config.spec)
        fps = {m: s.fingerprint for m, s in self.generator.schemas.items()}
        self.recorder = ManifestRecorder(config.spec, self.generator.plans, fps)
        self.faults = FaultInjector(config.spec.faults, config.spec.seed, self.recorder.record_fault)
        self.manifest: dict[str, Any] | None = None
        n = len(self.generator.plans)
        self.connections = n if config.connections <= 0 else min(config.connections, n)
        self.counters = {"packets": 0, "messages": 0, "bytes_generated": 0}

    def run(self, stop: threading.Event | None = None,
            progress: Callable[[dict[str, Any]], None] | None = None, progress_every_s: float = 1.0
            ) -> dict[str, Any]:
        cfg, spec, gen = self.config, self.config.spec, self.generator
        topics = Topics(cfg.topic_prefix)
        stop = stop or threading.Event()
        mux = None
        if cfg.broker is not None:
            retained = [(topics.schema(s.fingerprint), s.to_json())
                        for s in gen.schemas.values()]
            mux = MqttMux(cfg.broker, connections=self.connections, client_prefix=cfg.client_prefix,
                          window=cfg.window, queue_size=cfg.queue_size, retained=retained)
            mux.start()
        telemetry = [topics.telemetry(p.vehicle_id) for p in gen.plans]
        t_wall0, cpu0 = time.monotonic(), time.process_time()
        next_progress = t_wall0
        interval, groups = spec.interval_s, len(gen.groups)

        def send(items: list[Outgoing]) -> None:
            for item in items:
                if mux is not None:
                    mux.publish(item.vehicle % self.connections, telemetry[item.vehicle], item.payload)
                self.counters["messages"] += 1

        def report(final: bool = False) -> None:
            if progress is not None:
                progress(self._progress(mux, t_wall0, final))

        try:
            for window in range(gen.windows):
                t_end = gen.window_start(window) + interval
                drops = self.faults.disconnects(window, self.connections)
                for gi, group in enumerate(gen.groups):
                    if cfg.speed > 0:
                        due = t_wall0 + (window + gi / groups) * interval / cfg.speed
                        while not stop.is_set() and time.monotonic() < due:
                            stop.wait(min(0.2, due - time.monotonic()))
                    if stop.is_set():
                        raise _Stopped
                    gw = gen.generate(group, window)
                    payloads = [encode(p, level=cfg.level) for p in gw.packets]
                    self.recorder.add_payloads(payloads)
                    self.counters["packets"] += len(payloads)
                    self.counters["bytes_generated"] += sum(map(len, payloads))
                    if gi == groups // 2:
                        for c in drops:
                            self.recorder.record_disconnect(window, c)
                            if mux is not None:
                                mux.drop(c)
                    send(self.faults.apply(gi, window, t_end, [p.index for p in group.plans],
                                           [window] * len(payloads), payloads))
                    if time.monotonic() >= next_progress:
                        next_progress = time.monotonic() + progress_every_s
                        report()
                self.recorder.windows += 1
            send(self.faults.drain())
            self.recorder.complete = True
        except _Stopped:
            log.info("stopped after %d of %d windows", self.recorder.windows, gen.windows)
        gen_cpu = time.process_time() - cpu0
        unacked = 0
        if mux is not None:
            if not mux.flush(cfg.flush_timeout_s if not stop.is_set() else 5.0):
                unacked = mux.outstanding
                log.warning("%d messages not acknowledged when the run ended", unacked)
        report(final=True)
        summary = self._progress(mux, t_wall0, True)
        if mux is not None:
            mux.close()
        self.manifest = self.recorder.to_json(gen.events())
        if cfg.manifest_path is not None:
            write_manifest(cfg.manifest_path, self.manifest)
        summary.update({
            "complete": self.recorder.complete, "windows": self.recorder.windows, "unacked": unacked,
            "cpu_s": round(gen_cpu, 2), "mode": "packet", "connections": self.connections,
            "mean_packet_bytes": round(self.counters["bytes_generated"] / max(1, self.counters["packets"]), 1),
            "expected": self.manifest["expected"], "manifest": str(cfg.manifest_path) if cfg.manifest_path else None,
            "broker": str(cfg.broker) if cfg.broker else None, "start_time": spec.start_time,
        })
        return summary

    def _progress(self, mux: MqttMux | None, t0: float, final: bool) -> dict[str, Any]:
        spec = self.config.spec
        elapsed = time.monotonic() - t0
        total = self.generator.windows * len(self.generator.plans)
        done = self.counters["packets"]
        acked = mux.stats.acked if mux else self.counters["messages"]
        nbytes = mux.stats.acked_bytes if mux else self.counters["bytes_generated"]
        if self.config.speed > 0:
            remaining = max(0.0, (spec.end_time - spec.start_time) / self.config.speed - elapsed)
        else:
            remaining = elapsed / done * (total - done) if done else None
        return {
            "vehicles": len(self.generator.plans), "elapsed_s": round(elapsed, 1),
            "remaining_s": None if final or remaining is None else round(remaining, 1),
            "packets_generated": done, "packets_total": total, "messages_sent": self.counters["messages"],
            "messages_acked": acked, "bytes_acked": nbytes,
            "packets_per_s": round(acked / elapsed, 1) if elapsed > 0 else 0.0,
            "bytes_per_s": round(nbytes / elapsed, 1) if elapsed > 0 else 0.0,
            "errors": mux.stats.errors if mux else 0,
            "disconnects": mux.stats.disconnects if mux else 0, "reconnects": mux.stats.reconnects if mux else 0,
            "sim_time": spec.start_time + self.recorder.windows * spec.interval_s,
        }


class _Stopped(Exception):
    pass
