"""Run a service object (``run()`` coroutine + ``stop()``) until SIGINT/SIGTERM."""
from __future__ import annotations

import asyncio
import signal
from typing import Protocol


class Service(Protocol):
    async def run(self) -> None: ...
    def stop(self) -> None: ...


def run_until_signal(service: Service) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, service.stop)
        await service.run()

    asyncio.run(main())
