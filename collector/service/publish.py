"""The publishing poll loop of ``strandwatch collect snmp`` and ``strandwatch agent``.

Both commands poll their sources every interval, on the wall clock's
multiples of it (so every poller and agent stamps the same instants), and
hand each batch to a sink: the MQTT publisher (one QoS 1 message per source
per poll, spooled to disk while no broker answers) or, with ``--output``,
line protocol on a stream. As services (:func:`serve_publishing`) they also
serve ``/healthz``, ``/readyz`` (broker connected, spool writable) and
``/metrics``; the first SIGTERM or SIGINT lets the poll under way finish and
be published and then flushes the spool to the broker (for up to
``mqtt.timeout_s``; what is left stays on disk for the next start), a second
one stops at once; SIGHUP rebuilds the sources between two polls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TextIO

from collector.lineprotocol import encode
from collector.runner import poll_sources
from collector.schema import Point
from collector.service.health import HealthServer, directory_writable_check
from collector.service.metrics import ServiceMetrics
from collector.service.reload import SourceSet
from collector.service.signals import ShutdownSignals
from collector.sources.base import Source

if TYPE_CHECKING:
    from collector.config import ServiceConfig

__all__ = ["Deliver", "Poll", "line_protocol_sink", "poll_loop", "serve_publishing", "stopped_within"]

log = logging.getLogger(__name__)

Poll = Callable[[Sequence[Source], int], Awaitable[list[list[Point]]]]
"""Polls the sources once, stamped with the given time: one batch per source."""
Deliver = Callable[[list[Point]], Awaitable[None]]
"""Hands one batch on (publishes or prints it)."""


def line_protocol_sink(output: TextIO) -> Deliver:
    """A sink that writes each batch to ``output`` as line protocol and flushes it."""

    async def deliver(batch: list[Point]) -> None:
        output.write(encode(batch))
        output.flush()

    return deliver


async def poll_loop(sources: SourceSet, interval_s: float, stop: asyncio.Event, deliver: Deliver, *,
                    poll: Poll = poll_sources, metrics: ServiceMetrics | None = None) -> int:
    """Poll every ``interval_s`` until ``stop`` is set and deliver each batch; the number of polls.

    The poll under way when ``stop`` is set finishes and is delivered. A
    poll that overruns its interval skips the instants it missed.
    """
    interval_ns = round(interval_s * 1e9)
    polls = 0
    while not stop.is_set():
        tick = (time.time_ns() // interval_ns + 1) * interval_ns
        if await stopped_within(stop, (tick - time.time_ns()) / 1e9):
            break
        await sources.apply_pending()
        for batch in await poll(sources.sources, tick):
            if metrics is not None:
                metrics.observe_batch(batch)
            await deliver(batch)
            if metrics is not None:
                metrics.points_out.inc(len(batch), stage="published")
        polls += 1
    return polls


async def serve_publishing(config: ServiceConfig, sources: SourceSet, interval_s: float, signals: ShutdownSignals,
                           *, host: str | None = None, poll: Poll = poll_sources) -> int:
    """Run ``sources`` as a service publishing to ``config.mqtt`` until ``signals.stop``; exit status 0.

    ``host`` names the publisher in topics and envelopes (default ``mqtt.host``).
    Always closes the sources; flushes the spool unless a second signal forced the exit.
    """
    from collector.transport.mqtt import MqttPublisher  # here: printing needs neither aiomqtt nor paho

    metrics = ServiceMetrics()
    publisher = MqttPublisher(config.mqtt)
    metrics.spool_depth.set_function(lambda: len(publisher.spool), spool="mqtt")
    health = HealthServer(metrics.registry, *config.health_address)
    health.add_check("broker", lambda: publisher.connected)
    health.add_check("spool", directory_writable_check(publisher.spool.directory))
    signals.on_reload = sources.request

    async def deliver(batch: list[Point]) -> None:
        await publisher.publish(batch, host=host)

    await health.start()
    try:
        await publisher.start()
        polls = await poll_loop(sources, interval_s, signals.stop, deliver, poll=poll, metrics=metrics)
        if not publisher.connected and len(publisher.spool):
            log.info("%s: no broker; %d messages wait in the spool %s", signals.name, len(publisher.spool),
                     publisher.spool.directory)
        await publisher.close(drain_timeout=config.mqtt.timeout_s)
        if len(publisher.spool):
            log.warning("%s: %d messages stay in the spool %s for the next start", signals.name,
                        len(publisher.spool), publisher.spool.directory)
        log.info("%s: stopped after %d polls; %d messages published, %d spooled, %d dropped from a full spool",
                 signals.name, polls, publisher.published, publisher.spooled, publisher.spool.dropped)
        return 0
    finally:
        if not signals.forced:
            await sources.close()
            await health.close()


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Sleeps up to ``seconds``; true when ``stop`` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), max(0.0, seconds))
    except TimeoutError:
        return False
    return True
