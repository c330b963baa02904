"""A simulated car on its own CAN bus, read by a real gateway in this process.

One end of a python-can bus pair (``virtual``, or ``socketcan`` on ``vcan<k>``)
carries the frames of a :class:`~simulator.can_vehicle.CanVehicle`, sent by a
thread; a :class:`gateway.service.Gateway` reads the other end, exactly as on
a car. Used by the demo and by the fleet simulator's CAN mode.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable

import can

from gateway.service import Gateway, GatewayConfig
from simulator.bus_writer import send_frames


class CarRig:
    """Frames → bus → gateway for one car. :meth:`start` inside a running event loop, then
    :meth:`close` (stops the gateway, which flushes what it sampled, and shuts both buses)."""

    def __init__(self, gateway_config: GatewayConfig, frames: Iterable[can.Message], *, realtime: bool = False,
                 stop: threading.Event | None = None, on_frame: Callable[[can.Message], None] | None = None) -> None:
        extra = {"preserve_timestamps": True} if gateway_config.interface == "virtual" else {}
        # on virtual buses the *sender's* bus decides whether frames keep the simulator's timestamps
        self._buses = [can.Bus(interface=gateway_config.interface, channel=gateway_config.channel, **extra)
                       for _ in range(2)]
        self.gateway = Gateway(gateway_config, bus=self._buses[0])
        self._own_stop = stop is None
        self._stop = stop or threading.Event()
        self.sender_error: BaseException | None = None  # what stopped the simulator's sender, if anything
        self._thread = threading.Thread(
            target=self._send, args=(self._buses[1], frames),
            kwargs={"realtime": realtime, "stop": self._stop, "on_frame": on_frame},
            name=f"can-sim-{gateway_config.vehicle_id}", daemon=True)
        self._task: asyncio.Task | None = None

    def _send(self, bus: can.BusABC, frames: Iterable[can.Message], **kwargs) -> None:
        try:
            send_frames(bus, frames, **kwargs)
        except Exception as exc:  # the simulator broke (a DBC it cannot encode): the caller reports it
            self.sender_error = exc

    def start(self) -> None:
        self._task = asyncio.create_task(self.gateway.run(), name=f"gateway-{self.gateway.config.vehicle_id}")
        self._thread.start()

    @property
    def sending(self) -> bool:
        return self._thread.is_alive()

    async def close(self, join_timeout: float = 5.0) -> BaseException | None:
        """Stop sending (unless the caller owns the stop event: then wait for the sender) and
        stop the gateway; returns the gateway's exception if it failed, else the sender's
        (:attr:`sender_error`). The buses are shut down whatever happens."""
        try:
            if self._own_stop:
                self._stop.set()
            await asyncio.to_thread(self._thread.join, join_timeout)
            self.gateway.stop()
            if self._task is not None:
                try:
                    await self._task
                except Exception as exc:  # reported to the caller, which decides
                    return exc
            return self.sender_error
        finally:
            for bus in self._buses:
                bus.shutdown()
