"""A gateway process for crash tests: frames from an in-process sender, prints every packet
key once its outbox write has committed ("STORED <boot> <seq>"), runs until killed.

usage: python gateway_proc.py OUTBOX HOST PORT PREFIX [--no-frames]
"""
from __future__ import annotations

import asyncio
import sys
import threading
import uuid

import can

import dbc
from dcm.broker import BrokerUrl
from gateway.config import GatewayConfig
from gateway.service import Gateway
from minute_packet import decode


def main() -> None:
    outbox, host, port, prefix = sys.argv[1:5]
    frames = "--no-frames" not in sys.argv
    channel = uuid.uuid4().hex
    gw_bus = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
    gw = Gateway(GatewayConfig(vehicle_id="VKILL", broker=BrokerUrl(host, int(port)), outbox_path=outbox,
                               topic_prefix=prefix, zstd_level=3, idle_flush_s=0.5), bus=gw_bus)
    put = gw.outbox.put

    def put_and_report(topic: str, payload: bytes) -> None:
        put(topic, payload)
        p = decode(payload)
        print(f"STORED {p.boot_id.hex()} {p.seq}", flush=True)

    gw.outbox.put = put_and_report

    def send() -> None:
        db = dbc.load(dbc.REFERENCE_DBC)
        m = db.get_message_by_name("VEHICLE_SPEED")
        payloads = [m.encode({s.name: 0 for s in m.signals} | {"VehicleSpeed": v / 10}, strict=False) for v in range(100)]
        with can.Bus(interface="virtual", channel=channel, preserve_timestamps=True) as sim:
            i = 0
            while True:
                sim.send(can.Message(timestamp=1_767_225_600 + i / 100, arbitration_id=m.frame_id,
                                     is_extended_id=False, data=payloads[i % 100]))
                i += 1

    if frames:
        threading.Thread(target=send, daemon=True).start()
    print("READY", flush=True)
    asyncio.run(gw.run())


if __name__ == "__main__":
    main()
