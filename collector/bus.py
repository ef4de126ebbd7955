"""The seam between sources and the store: batches of points go in, deliveries come out.

All-in-one mode runs ``InProcessBus``: an asyncio queue per subscriber. A
distributed deployment puts an MQTT transport behind the same protocol, with
QoS 1: a message counts as handled only once the consumer acknowledged it,
after its points are written. So every batch arrives as a ``Delivery`` that
the consumer acks when done::

    subscription = bus.subscribe()        # before anything is published
    async for delivery in subscription:
        await store.write(delivery.points)
        await delivery.ack()

Nothing is dropped: ``publish`` waits while a subscriber's queue is full
(backpressure reaches the sources), and it raises if nobody subscribed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Protocol, runtime_checkable

from collector.schema import Point

__all__ = ["Bus", "BusClosedError", "Delivery", "InProcessBus", "NoSubscriberError", "Subscription"]


class BusClosedError(RuntimeError):
    """Publishing or subscribing on a bus that was closed."""


class NoSubscriberError(RuntimeError):
    """Publishing with nobody subscribed: the batch would be lost."""


class Delivery:
    """One batch handed to one subscriber; ``ack()`` once its points are safely stored.

    ``points`` is a property so that a transport can validate a batch without
    building its points and build them only for a consumer that asks
    (``MqttDelivery``); ``count`` and ``newest_ns`` never need them.
    """

    __slots__ = ("_points", "_on_ack", "acked")

    def __init__(self, points: list[Point] | None, on_ack: Callable[[], None]) -> None:
        self._points = points
        self._on_ack = on_ack
        self.acked = False

    @property
    def points(self) -> list[Point]:
        return self._points  # type: ignore[return-value]

    @property
    def count(self) -> int:
        """How many points the batch holds."""
        return len(self.points)

    @property
    def newest_ns(self) -> int:
        """The newest timestamp in the batch (0 for an empty one)."""
        return max((point.time_ns for point in self.points), default=0)

    async def ack(self) -> None:
        """Acknowledge the delivery; acknowledging twice does nothing."""
        if not self.acked:
            self.acked = True
            self._on_ack()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.count} points, acked={self.acked})"


@runtime_checkable
class Bus(Protocol):
    """How batches travel from sources to consumers.

    ``publish`` returns once the transport has taken the batch (waiting while
    the transport is full). ``subscribe`` registers a consumer immediately
    and returns the async iterator of its deliveries. ``close`` stops new
    publishing; each subscription then yields what was already published and
    ends.
    """

    async def publish(self, batch: list[Point]) -> None: ...

    def subscribe(self) -> AsyncIterator[Delivery]: ...

    async def close(self) -> None: ...


_END = object()  # queued after the last batch of a closed bus


class Subscription:
    """The deliveries of one subscriber of an InProcessBus, in publishing order."""

    def __init__(self, bus: InProcessBus, maxsize: int) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize)
        self._ended = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Delivery:
        if self._ended:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _END:
            self._ended = True
            self._queue.task_done()
            raise StopAsyncIteration
        return Delivery(item, self._queue.task_done)  # type: ignore[arg-type]

    def depth(self) -> int:
        """Batches queued here and not yet taken by the consumer."""
        return self._queue.qsize()

    def next_ready(self) -> Delivery | None:
        """The next delivery if one is already queued, else None: lets a consumer group writes."""
        if self._ended or self._queue.empty():
            return None
        item = self._queue.get_nowait()
        if item is _END:
            self._ended = True
            self._queue.task_done()
            return None
        return Delivery(item, self._queue.task_done)  # type: ignore[arg-type]

    def unsubscribe(self) -> None:
        """Stop receiving; batches still queued here are discarded, publishers no longer wait on it."""
        self._bus._subscriptions.discard(self)
        self._ended = True
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()

    async def _put(self, item: object) -> None:
        if not self._ended:
            await self._queue.put(item)

    async def _join(self) -> None:
        await self._queue.join()


class InProcessBus:
    """The bus of all-in-one mode: every subscriber gets every batch, through a bounded queue.

    ``maxsize`` is the number of batches a subscriber may fall behind before
    ``publish`` waits for it.
    """

    def __init__(self, maxsize: int = 64) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, not {maxsize}")
        self.maxsize = maxsize
        self._subscriptions: set[Subscription] = set()
        self._closed = False
        self._publishing = 0
        self._no_publish_under_way = asyncio.Event()
        self._no_publish_under_way.set()

    def subscribe(self) -> Subscription:
        """Register a subscriber now; it receives every batch published from here on."""
        if self._closed:
            raise BusClosedError("subscribe on a closed bus")
        subscription = Subscription(self, self.maxsize)
        self._subscriptions.add(subscription)
        return subscription

    async def publish(self, batch: list[Point]) -> None:
        """Queue ``batch`` for every subscriber, waiting while any of their queues is full.

        The batch is shared, not copied: neither the publisher nor the
        consumers may change it afterwards.
        """
        if self._closed:
            raise BusClosedError(f"publish of {len(batch)} points on a closed bus")
        if not self._subscriptions:
            raise NoSubscriberError(f"publish of {len(batch)} points with no subscriber")
        self._publishing += 1
        self._no_publish_under_way.clear()
        try:
            for subscription in list(self._subscriptions):
                await subscription._put(batch)
        finally:
            self._publishing -= 1
            if not self._publishing:
                self._no_publish_under_way.set()

    async def join(self) -> None:
        """Wait until every subscriber acknowledged every batch published so far."""
        for subscription in list(self._subscriptions):
            await subscription._join()

    async def close(self) -> None:
        """Stop publishing; subscriptions end after delivering what was already published.

        Returns once publishes under way are done and every subscription has
        its end queued (waiting for room, like publish); it does not wait for
        the acknowledgements (see join).
        """
        if self._closed:
            return
        self._closed = True
        # A waiting publisher is not first in line when room frees up; the end
        # marker must not overtake its batch.
        await self._no_publish_under_way.wait()
        for subscription in list(self._subscriptions):
            await subscription._put(_END)
