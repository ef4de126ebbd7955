"""The long-running services: ``strandwatch run`` (all in one) and ``strandwatch detect --follow``.

``run`` is the whole pipeline in one process: the SNMP poller and, where this
host has them, the node agent's sources feed the in-process bus; the ingest
loop writes their batches to the configured store and acknowledges them only
once stored; the streaming detector decides each new interval, writes its
results back to the store and logs an alert when an episode opens or closes.
``detect --follow`` runs only the detector, against a store that other
processes (``collect``, ``agent``, ``ingest``) fill.

Both read one configuration file (``collector/strandwatch.sample.yaml``),
serve ``/healthz``, ``/readyz`` and ``/metrics`` on localhost, drain and flush on
the first SIGTERM or SIGINT, stop at once on the second, and reload their
sources on SIGHUP.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from collector.agent import build_sources
from collector.bus import InProcessBus
from collector.config import ConfigError, DetectorConfig, ServiceConfig, load_config, open_writer
from collector.ingest import IngestService
from collector.service.health import HealthServer, directory_writable_check
from collector.service.logs import register_secrets, secret_values
from collector.service.metrics import ServiceMetrics
from collector.service.publish import poll_loop, stopped_within
from collector.service.reload import SourceSet
from collector.service.signals import ShutdownSignals, run_service
from collector.sources.base import Source
from collector.sources.snmp import SnmpSource
from collector.store import EmbeddedStore
from detector.heap import release_free_heap
from detector.jobs import load_jobs
from detector.pricing import Prices
from detector.streaming import Alert, StreamingDetector, store_sink
from detector.topology import Topology

log = logging.getLogger(__name__)


def add_service_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, metavar="FILE",
                        help="service configuration (see collector/strandwatch.sample.yaml)")


def run_all_in_one(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    if config.detector is None and config.snmp is None and config.agent is None:
        log.error("%s: nothing to run: configure at least one of snmp, agent, detector", args.config)
        return 2
    return run_service(lambda signals: _all_in_one(config, args.config, signals), "run",
                       "finishing the poll under way, storing what is queued, then stopping")


def run_detect_follow(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    if config.detector is None:
        log.error("%s: 'detector' section missing: detect --follow needs its topology and jobs", args.config)
        return 2
    return run_service(lambda signals: _detect_only(config, signals), "detect",
                       "finishing the interval under way, then stopping")


def _load(path: Path) -> ServiceConfig | None:
    try:
        config = load_config(path)
    except ConfigError as error:
        log.error("%s", error)
        return None
    register_secrets(secret_values(config))
    return config


async def _all_in_one(config: ServiceConfig, path: Path, signals: ShutdownSignals) -> int:
    metrics = ServiceMetrics()
    health = await _start_health(config, metrics)
    bus = InProcessBus()
    writer = open_writer(config.store)
    subscription = bus.subscribe()
    metrics.queue_depth.set_function(subscription.depth, queue="bus")
    ingest = IngestService(subscription, writer, batch_points=config.ingest.batch_points,
                           batch_messages=config.ingest.batch_messages, linger_s=config.ingest.linger_s)
    ingesting = asyncio.create_task(ingest.run())
    sources = SourceSet(_sources(config), lambda: _sources(load_config(path)), name="run")
    signals.on_reload = sources.request
    tasks = [asyncio.create_task(poll_loop(sources, config.interval_s, signals.stop, bus.publish, metrics=metrics))]
    if config.detector is not None:
        tasks.append(asyncio.create_task(_detect_loop(config, signals, metrics, health)))
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await bus.close()
        await ingesting
        metrics.points_out.inc(ingest.stats.points, stage="stored")
        await writer.close()
        for source in sources.sources:
            await source.close()
        await health.close()
    log.info("run: stopped; %d points stored", ingest.stats.points)
    return 0


async def _detect_only(config: ServiceConfig, signals: ShutdownSignals) -> int:
    metrics = ServiceMetrics()
    health = await _start_health(config, metrics)
    try:
        await _detect_loop(config, signals, metrics, health)
    finally:
        await health.close()
    return 0


def _sources(config: ServiceConfig) -> list[Source]:
    sources: list[Source] = []
    if config.snmp is not None:
        sources.append(SnmpSource(config.snmp))
    if config.agent is not None:
        sources.extend(build_sources(config.agent))
    return sources


async def _start_health(config: ServiceConfig, metrics: ServiceMetrics) -> HealthServer:
    host, port = config.health_address
    health = HealthServer(metrics.registry, host, port)
    if config.store.backend == "embedded":
        health.add_check("database", directory_writable_check(Path(config.store.path).parent))
    await health.start()
    return health


async def _detect_loop(config: ServiceConfig, signals: ShutdownSignals, metrics: ServiceMetrics,
                       health: HealthServer) -> None:
    settings: DetectorConfig = config.detector  # type: ignore[assignment]
    topology = Topology.load(settings.topology)
    store = EmbeddedStore(config.store.path, read_only=False) if config.store.backend == "embedded" else None
    if store is None:
        raise ConfigError(f"{config.source}: detector: the streaming detector reads the embedded store; "
                          f"store.backend is {config.store.backend}")
    detector = StreamingDetector(
        store, topology, lambda: load_jobs(settings.jobs), settings.state_path,
        sink=store_sink(store), on_alert=_log_alert,
        prices=Prices(override_per_gpu_hour=settings.price_per_gpu_hour, per_kwh=settings.price_per_kwh),
    )
    health.add_check("detector", lambda: True)
    # One thread for every step: the store keeps a read connection (and its page cache) per thread.
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detector")
    loop = asyncio.get_running_loop()
    try:
        while not signals.stop.is_set():
            try:
                await loop.run_in_executor(thread, _step, detector)
            except Exception:
                # A detector bug or a bad batch of data must not stop the pollers and ingest beside it.
                log.exception("detector: step failed; retrying next interval")
            decided = detector.decided_until
            if decided is not None:
                metrics.detector_lag.set(time.time() - decided.timestamp())
            if await stopped_within(signals.stop, settings.interval_s):
                return
    finally:
        thread.shutdown(wait=False)
        store.close()


def _step(detector: StreamingDetector) -> None:
    try:
        detector.step()
    finally:
        release_free_heap()


def _log_alert(alert: Alert) -> None:
    episode = alert.episode
    log.warning("episode %s: %s %s on %s, %.0f GPU-s, $%.2f so far (%s)", alert.event, episode.job, episode.cause,
                ", ".join(episode.links[:3]) or "no link", episode.gpu_seconds_lost, episode.dollars_lost, alert.id)
