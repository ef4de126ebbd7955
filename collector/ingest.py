"""The ingest service: deliveries from the bus into the store, acknowledged only once stored.

Several ingest processes share the load: on brokers with MQTT 5 shared
subscriptions (Mosquitto, EMQX, HiveMQ, VerneMQ) each subscribes to
``$share/<group>/strandwatch/v1/#`` and the broker hands every message to one
of them; elsewhere (NATS) each takes a fixed shard of the hosts' topics
(``collector.transport.mqtt.shard_filters``).

The loop gathers deliveries into a batch until it holds ``batch_points``
points or ``batch_messages`` messages or ``linger_s`` passed since its first
message, writes the batch to the store in one call and only then
acknowledges its messages. A crash between receipt and write therefore
loses nothing: the broker redelivers to the same session, and the second
write overwrites the first (same series, field and timestamp).

- The store failing (database away, disk full) stops the loop from taking
  more; the batch is retried with exponential backoff until it is accepted,
  and the broker holds everything behind it.
- A batch the store refuses as invalid is retried message by message; a
  message it still refuses is counted (``store_rejected``), logged and dropped.
- Malformed messages never reach this loop: the subscription validates every
  envelope, counts and drops the bad ones (see ``MqttSubscription.rejects``).

Run it: ``strandwatch ingest --config /etc/strandwatch/strandwatch.yaml``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from collector.bus import Delivery
from collector.schema import INGEST_HEALTH, FieldValue, Point

if TYPE_CHECKING:
    from collector.config import ServiceConfig

__all__ = ["IngestService", "IngestStats", "PointWriter", "add_ingest_arguments", "maintain_embedded", "run_ingest_command", "serve"]

log = logging.getLogger(__name__)

_TRANSIENT = (OSError, ConnectionError, TimeoutError, sqlite3.OperationalError)
"""Store errors worth retrying: the store may accept the same batch later."""


class PointWriter(Protocol):
    """What ingest writes to: AsyncEmbeddedStore, AsyncInfluxWriter, or anything with this method.

    A writer that also has ``async write_line_protocol(text: bytes, count: int)``
    (AsyncInfluxWriter) gets the messages' validated line protocol as it came,
    and no point is ever built for it.
    """

    async def write(self, points: Iterable[Point]) -> int: ...


@dataclass
class IngestStats:
    messages: int = 0
    points: int = 0
    batches: int = 0
    write_retries: int = 0
    store_rejected: int = 0
    last_write_s: float = 0.0
    rejected: dict[str, int] = field(default_factory=dict)
    """Malformed messages by kind (shared with the subscription's RejectCounter when it has one)."""


class IngestService:
    """Consumes ``deliveries`` into ``store`` in batches, acknowledging after each write."""

    def __init__(
        self,
        deliveries: AsyncIterator[Delivery],
        store: PointWriter,
        *,
        batch_points: int = 50_000,
        batch_messages: int = 128,
        linger_s: float = 0.25,
        retry_min_s: float = 0.2,
        retry_max_s: float = 30.0,
        report_every_s: float = 10.0,
        host: str | None = None,
    ) -> None:
        if batch_points < 1 or batch_messages < 1 or linger_s < 0:
            raise ValueError("ingest: batch_points and batch_messages must be positive, linger_s not negative")
        self.deliveries = deliveries
        self.store = store
        self.batch_points = batch_points
        self.batch_messages = batch_messages
        self.linger_s = linger_s
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.stats = IngestStats()
        self.report_every_s = report_every_s
        self.host = host or socket.gethostname()
        self._reported_at = time.monotonic()
        self._written_since_report = 0
        self._newest_written_ns = 0
        rejects = getattr(deliveries, "rejects", None)
        if rejects is not None:
            self.stats.rejected = rejects.counts

    async def run(self) -> None:
        """Consume until the deliveries end (the subscription closed) or the task is cancelled."""
        iterator = aiter(self.deliveries)
        pending: list[Delivery] = []
        points = 0
        deadline = 0.0
        ended = False
        while not ended:
            timeout = None if not pending else max(0.0, deadline - time.monotonic())
            try:
                delivery = await asyncio.wait_for(anext(iterator), timeout)
            except StopAsyncIteration:
                ended = True
            except TimeoutError:
                pass
            else:
                if not pending:
                    deadline = time.monotonic() + self.linger_s
                pending.append(delivery)
                points += delivery.count
                if points < self.batch_points and len(pending) < self.batch_messages:
                    continue
            if pending:
                await self._write_and_ack(pending)
                pending = []
                points = 0

    async def _write_and_ack(self, pending: list[Delivery]) -> None:
        count = sum(delivery.count for delivery in pending)
        try:
            await self._write(pending, count)
        except _StoreRefused:
            for delivery in pending:
                try:
                    await self._write([delivery], delivery.count)
                except _StoreRefused as refused:
                    self.stats.store_rejected += 1
                    log.error("ingest: the store refused a message of %d points; dropped: %s",
                              delivery.count, refused.__cause__)
        for delivery in pending:
            await delivery.ack()
        self.stats.messages += len(pending)
        self.stats.points += count
        self.stats.batches += 1
        self._written_since_report += count
        self._newest_written_ns = max(self._newest_written_ns, *(delivery.newest_ns for delivery in pending))
        if time.monotonic() - self._reported_at >= self.report_every_s:
            await self._report()

    async def _report(self) -> None:
        """Writes a ``strandwatch_ingest`` point: what the collector-health dashboard and the ingest alert read."""
        now_ns = time.time_ns()
        writer = getattr(self.store, "writer", None)
        spool = getattr(writer, "spool", None)
        fields: dict[str, FieldValue] = {
            "points_written": self._written_since_report,
            "spool_depth": len(spool) if spool is not None else 0,
        }
        if self._newest_written_ns:
            fields["lag_seconds"] = max(0.0, (now_ns - self._newest_written_ns) / 1e9)
        point = Point(INGEST_HEALTH, {"component": "ingester", "host": self.host}, fields, now_ns)
        try:
            await self.store.write([point])
        except _TRANSIENT as error:
            log.warning("ingest: could not store its own health point: %s", error)
            return
        self._reported_at = time.monotonic()
        self._written_since_report = 0

    def _line_protocol(self, deliveries: list[Delivery]) -> bytes | None:
        """The deliveries as validated line protocol, when the store takes it and every one has it."""
        if not hasattr(self.store, "write_line_protocol"):
            return None
        texts = [getattr(delivery, "line_protocol", None) for delivery in deliveries]
        if any(text is None for text in texts):
            return None
        return b"".join(text if text.endswith(b"\n") or not text else text + b"\n" for text in texts)

    async def _write(self, deliveries: list[Delivery], count: int) -> None:
        line_protocol = self._line_protocol(deliveries)
        # InfluxDB takes the text the publishers sent: no point is built, nothing is encoded again.
        points = [point for delivery in deliveries for point in delivery.points] if line_protocol is None else []
        delay = self.retry_min_s
        while True:
            started = time.monotonic()
            try:
                if line_protocol is not None:
                    await self.store.write_line_protocol(line_protocol, count)
                else:
                    await self.store.write(points)
            except _TRANSIENT as error:
                self.stats.write_retries += 1
                log.warning("ingest: store write of %d points failed (%s); retrying in %.1f s", count, error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            except (ValueError, TypeError) as error:
                raise _StoreRefused() from error
            self.stats.last_write_s = time.monotonic() - started
            return


class _StoreRefused(Exception):
    """The store said the points themselves are wrong: retrying the same batch cannot help."""


async def serve(config: ServiceConfig, stop: asyncio.Event) -> IngestStats:
    """Run one ingest process until ``stop`` is set; then store and acknowledge what it holds."""
    from collector.config import open_writer
    from collector.transport.mqtt import MqttSubscription

    writer = open_writer(config.store)
    subscription = MqttSubscription(config.mqtt, config.ingest.filters(config.mqtt))
    service = IngestService(
        subscription,
        writer,
        batch_points=config.ingest.batch_points,
        batch_messages=config.ingest.batch_messages,
        linger_s=config.ingest.linger_s,
    )
    await subscription.start()
    maintenance = asyncio.create_task(maintain_embedded(config.store, writer))
    consuming = asyncio.create_task(service.run())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait((consuming, stopping), return_when=asyncio.FIRST_COMPLETED)
    # Closing the subscription ends the deliveries; the loop writes and acks what it holds, then returns.
    await subscription.close()
    await consuming
    stopping.cancel()
    maintenance.cancel()
    await writer.close()
    log.info("ingest stopped: %s", service.stats)
    return service.stats


async def maintain_embedded(store_config, writer, interval_s: float = 60.0) -> None:
    """Embedded store only: every ``interval_s``, update the rollups and apply the raw retention."""
    if store_config.backend != "embedded":
        return
    from collector.store.rollup import Resolution, Rollups

    store = writer.store
    rollups = Rollups(store, [Resolution(r.resolution, r.retention) for r in store_config.rollups]) \
        if store_config.rollups else None
    try:
        while True:
            await asyncio.sleep(interval_s)
            try:
                if rollups is not None:
                    await asyncio.to_thread(rollups.update)
                await asyncio.to_thread(store.apply_retention)
            except (OSError, sqlite3.Error) as error:
                log.error("ingest: store maintenance failed (retried in %.0f s): %s", interval_s, error)
    finally:
        if rollups is not None:
            rollups.close()


def add_ingest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the service configuration file (strandwatch.yaml)")


def run_ingest_command(args: argparse.Namespace) -> int:
    """``strandwatch ingest``: the first SIGTERM or SIGINT stores what is held, a second stops at once."""
    from collector.config import ConfigError, load_config
    from collector.service.logs import register_secrets, secret_values
    from collector.service.signals import run_service

    try:
        config = load_config(args.config)
    except ConfigError as error:
        log.error("%s", error)
        return 2
    register_secrets(secret_values(config))

    async def main(signals) -> int:
        await serve(config, signals.stop)
        return 0

    return run_service(main, "ingest", "storing and acknowledging what it holds, then stopping")
