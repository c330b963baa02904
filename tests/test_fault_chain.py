"""Network and broker faults end to end: gateway outbox + publisher → fault proxy → Mosquitto →
fault proxy → sink, compared with what was sent (dcm.faultchain). Keepalives are 2 s so a blackhole
or a half-open connection is noticed in seconds; the 10-minute blackhole is `dcm bench faults`."""
from __future__ import annotations

import asyncio

from dcm.faultchain import Chain
from dcm.testing import until_async

VEHICLES = ("FA", "FB")


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def _exact(chain: Chain) -> None:
    await chain.settled()
    v = chain.verdict()
    assert (v.stored, v.duplicated, v.lost, v.altered) == (v.sent, 0, 0, 0), v


def test_blackhole_on_either_hop_loses_nothing(tmp_path):
    async def main():
        async with Chain(tmp_path, vehicles=VEHICLES) as chain:
            chain.send(3)
            await chain.drained()
            chain.up.blackhole()
            chain.send(5)  # published into the void: no PUBACK, kept in the outbox
            await asyncio.sleep(4)  # > 1.5 keepalives: the publisher gives up on the connection
            assert chain.outbox_depth() >= 5
            chain.up.blackhole(False)
            await chain.drained()
            chain.down.blackhole()
            chain.send(5)
            # the sink's connection dies (keepalive) and it connects again, into the hole; its
            # session queues at the broker meanwhile: waited for, not timed (slow under load)
            assert await until_async(lambda: chain.down.stats.connections >= 2, 120)
            chain.down.blackhole(False)
            await _exact(chain)
            assert chain.publishers["FA"].stats.connects >= 2 and chain.down.stats.connections >= 2

    _run(main())


def test_repeated_drops_and_latency(tmp_path):
    async def main():
        async with Chain(tmp_path, vehicles=VEHICLES) as chain:
            chain.up.latency(0.1)
            chain.down.latency(0.1)
            for _ in range(5):
                chain.send(3)
                await asyncio.sleep(0.3)
                assert chain.up.drop() + chain.down.drop() >= 1
            await _exact(chain)
            assert chain.up.stats.dropped + chain.down.stats.dropped >= 5

    _run(main())


def test_half_open_connections_on_both_hops(tmp_path):
    async def main():
        async with Chain(tmp_path, vehicles=VEHICLES) as chain:
            chain.send(3)
            await chain.drained()
            assert chain.down.half_open() == 1  # the broker sees the sink leave; the sink does not
            chain.send(4)
            assert chain.up.half_open() == 2
            chain.send(4)
            await _exact(chain)
            assert chain.down.stats.connections >= 2 and chain.up.stats.connections >= 4

    _run(main())


async def _broker_restart(chain: Chain, queued: int) -> None:
    """Keep the sink away, let the broker acknowledge ``queued`` packets per vehicle (so only its
    queue for the sink's session holds them), restart it cleanly, send 2 more, let the sink back,
    send 2 more (a loss shows as a gap only once a later packet arrives)."""
    chain.send(2)
    await _exact(chain)
    chain.down.refuse()
    chain.down.drop()
    chain.send(queued)
    await chain.drained()  # PUBACKed: the gateways have deleted them
    await asyncio.to_thread(chain.broker.restart)
    chain.send(2)
    await chain.drained()
    chain.down.refuse(False)
    await chain.wait(lambda: chain.sink.intake.connected.is_set(), 20, "the sink did not reconnect")
    chain.send(2)
    await chain.settled()


def test_broker_restart_with_persistence_loses_nothing(tmp_path):
    async def main():
        async with Chain(tmp_path, vehicles=VEHICLES, persistence=True) as chain:
            await _broker_restart(chain, queued=5)
            v = chain.verdict()
            assert (v.stored, v.duplicated, v.lost, v.gap_packets) == (v.sent, 0, 0, 0), v

    _run(main())


def test_broker_restart_without_persistence_loss_is_counted_as_gaps(tmp_path):
    async def main():
        async with Chain(tmp_path, vehicles=VEHICLES, persistence=False) as chain:
            await _broker_restart(chain, queued=5)
            v = chain.verdict()
            # the broker's queue for the sink is gone: exactly those packets, and the gap detector
            # reports every one of them (what `dcm sink gaps` prints)
            # (7 per vehicle: the 5 queued, and the 2 sent before the sink had subscribed again)
            assert v.lost == 7 * len(VEHICLES) and v.lost_in_gaps == v.lost == v.gap_packets, v
            assert v.duplicated == 0 and v.altered == 0 and v.stored == v.sent - v.lost

    _run(main())
