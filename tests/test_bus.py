"""The in-process bus: every subscriber gets every batch, backpressure, drain on close, acks."""

from __future__ import annotations

import asyncio

import pytest

from collector.bus import Bus, BusClosedError, InProcessBus, NoSubscriberError
from collector.schema import Point
from collector.store import AsyncEmbeddedStore, EmbeddedStore

T = 1_700_000_000_000_000_000


def batch(step: int, size: int = 2) -> list[Point]:
    return [Point("m", {"h": str(i)}, {"step": step}, T + step) for i in range(size)]


async def consume(subscription, received: list, *, ack: bool = True) -> None:
    async for delivery in subscription:
        received.append(delivery.points)
        if ack:
            await delivery.ack()


def test_in_process_bus_is_a_bus():
    assert isinstance(InProcessBus(), Bus)


async def test_every_subscriber_gets_every_batch_in_order():
    bus = InProcessBus(maxsize=4)
    first, second = [], []
    consumers = [asyncio.create_task(consume(bus.subscribe(), received)) for received in (first, second)]
    batches = [batch(step) for step in range(20)]
    for published in batches:
        await bus.publish(published)
    await bus.close()
    await asyncio.gather(*consumers)
    assert first == batches and second == batches


async def test_publish_waits_while_a_subscriber_is_full():
    bus = InProcessBus(maxsize=2)
    subscription = bus.subscribe()
    await bus.publish(batch(0))
    await bus.publish(batch(1))
    blocked = asyncio.create_task(bus.publish(batch(2)))
    await asyncio.sleep(0.05)
    assert not blocked.done()  # waits, drops nothing
    delivery = await anext(subscription)
    await asyncio.wait_for(blocked, 1)
    received = [delivery.points]
    closer = asyncio.create_task(bus.close())  # waits for room too
    await consume(subscription, received)
    await closer
    assert received == [batch(0), batch(1), batch(2)]


async def test_close_lets_subscribers_drain_then_ends_them():
    bus = InProcessBus(maxsize=8)
    subscription = bus.subscribe()
    for step in range(5):
        await bus.publish(batch(step))
    await bus.close()
    await bus.close()  # closing twice is fine
    received = []
    await consume(subscription, received)
    assert received == [batch(step) for step in range(5)]
    assert [delivery async for delivery in subscription] == []  # stays ended
    with pytest.raises(BusClosedError):
        await bus.publish(batch(9))
    with pytest.raises(BusClosedError):
        bus.subscribe()


async def test_close_waits_for_room_behind_blocked_publishers():
    bus = InProcessBus(maxsize=1)
    subscription = bus.subscribe()
    await bus.publish(batch(0))
    publisher = asyncio.create_task(bus.publish(batch(1)))
    await asyncio.sleep(0)
    closer = asyncio.create_task(bus.close())
    received = []
    await consume(subscription, received)
    await asyncio.gather(publisher, closer)
    assert received == [batch(0), batch(1)]


async def test_publishing_to_nobody_is_an_error_not_a_silent_drop():
    with pytest.raises(NoSubscriberError, match="2 points with no subscriber"):
        await InProcessBus().publish(batch(0))


async def test_join_waits_for_every_acknowledgement():
    bus = InProcessBus()
    subscription = bus.subscribe()
    for step in range(3):
        await bus.publish(batch(step))
    joined = asyncio.create_task(bus.join())
    deliveries = [await anext(subscription) for _ in range(3)]
    await asyncio.sleep(0.02)
    assert not joined.done()
    for delivery in deliveries:
        await delivery.ack()
        await delivery.ack()  # a second ack changes nothing
    await asyncio.wait_for(joined, 1)
    assert all(delivery.acked for delivery in deliveries)


async def test_unsubscribing_releases_a_blocked_publisher():
    bus = InProcessBus(maxsize=1)
    stalled = bus.subscribe()  # never consumed
    active = bus.subscribe()
    received = []
    consumer = asyncio.create_task(consume(active, received))
    await bus.publish(batch(0))
    blocked = asyncio.create_task(bus.publish(batch(1)))
    await asyncio.sleep(0.02)
    assert not blocked.done()
    stalled.unsubscribe()
    await asyncio.wait_for(blocked, 1)
    await bus.publish(batch(2))
    await bus.close()
    await consumer
    assert received == [batch(0), batch(1), batch(2)]
    assert [delivery async for delivery in stalled] == []


async def test_ack_after_the_store_wrote_the_batch(tmp_path):
    store = AsyncEmbeddedStore(EmbeddedStore(tmp_path / "s.db"))
    bus = InProcessBus(maxsize=2)
    subscription = bus.subscribe()

    async def ingest() -> None:
        async for delivery in subscription:
            await store.write(delivery.points)
            await delivery.ack()

    consumer = asyncio.create_task(ingest())
    for step in range(10):
        await bus.publish(batch(step, size=50))
    await bus.join()  # everything published so far is stored
    assert len(await store.read("m")) == 500
    await bus.close()
    await consumer
    await store.close()
