"""The simulated car on a real python-can bus: a failing simulator is reported, not swallowed."""
from __future__ import annotations

import asyncio
import uuid

import can

from dcm.car_rig import CarRig
from gateway.config import GatewayConfig


class SimulatorBroke(RuntimeError):
    pass


def test_a_sender_that_fails_is_returned_by_close(tmp_path, broker):
    def frames():
        for i in range(5):
            yield can.Message(arbitration_id=0x100, data=bytes(8), timestamp=1_767_225_600 + i * 0.01,
                              is_extended_id=False)
        raise SimulatorBroke("cannot encode message 0x101")

    config = GatewayConfig(vehicle_id="RIG1", broker=broker, outbox_path=tmp_path / "outbox.sqlite",
                           interface="virtual", channel=f"rig-{uuid.uuid4().hex[:8]}", topic_prefix="rig")

    async def main() -> BaseException | None:
        rig = CarRig(config, frames())
        rig.start()
        while rig.sending:
            await asyncio.sleep(0.05)
        return await rig.close()

    error = asyncio.run(main())
    assert isinstance(error, SimulatorBroke) and "0x101" in str(error)
