"""The node agent: one process on every GPU host, reporting what only the host can see.

It reads one YAML file (see ``collector/agent.sample.yaml``)::

    host: gpu-node-07          # default: this machine's host name
    interval_s: 10
    output: "-"                # line protocol to stdout, or a file to append to
    sources:
      rdma: {sysfs_root: /sys}
      ethtool: {}
      gpu: {gpm: true}
      dcgm: {enabled: false}
      jobs: {slurm: true}

builds the sources (``rdma``, ``ethtool``, ``gpu``, ``dcgm``, ``jobs``; each
block holds ``enabled`` and the source's own options, ``false`` turns it off; a
source the file names is on, one it leaves out keeps its default: all but
``dcgm`` are on)
and polls them together on a schedule aligned to the interval, so that every
host stamps the same instants and nothing drifts. A host without RDMA devices,
GPUs or the NVML library says so once after the first poll and keeps polling
what it has. Batches go to a :class:`collector.bus.Bus`.

The first SIGTERM or SIGINT lets the current poll finish and be published,
then the agent stops; a second one stops it at once (the handling is
:mod:`collector.service.signals`). SIGHUP re-reads the configuration file and
swaps the sources between two polls.

``strandwatch agent --config FILE --once --output -`` prints one sample as
line protocol; without ``--once`` it prints every poll until stopped.

To publish to MQTT instead, give ``--config`` a service configuration
(``collector/strandwatch.sample.yaml``) holding this file's keys in an
``agent:`` section beside ``mqtt:`` (brokers, TLS, the spool) and
``health_address``: the agent then runs as a service and publishes each
source's poll as one message on ``<prefix>/<site>/<source>/<agent host>``,
with ``/healthz``, ``/readyz`` and ``/metrics``; ``--output`` prints line
protocol instead. It polls every ``agent.interval_s`` when the section sets
it, else every top-level ``interval_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, TextIO

import yaml

from collector.bus import Bus, InProcessBus, Subscription
from collector.lineprotocol import encode
from collector.runner import poll_sources
from collector.schema import COLLECTOR_HEALTH, Point
from collector.service.reload import SourceSet
from collector.service.signals import EXIT_FORCED, ForcedExit, ShutdownSignals
from collector.sources.base import Source
from collector.sources.dcgm import DcgmSource
from collector.sources.ethtool import EthtoolSource
from collector.sources.gpu import GpuSource, ProcessTable
from collector.sources.jobs import JobsFileError, JobsSource
from collector.sources.jobs.source import DEFAULT_WAIT_S
from collector.sources.rdma import RdmaSource

if TYPE_CHECKING:
    from collector.config import ServiceConfig

log = logging.getLogger(__name__)

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentConfigError",
    "ForcedExit",
    "add_agent_arguments",
    "build_sources",
    "load_config",
    "main",
    "parse_config",
    "run_agent",
    "run_agent_command",
    "run_agent_once",
]

DEFAULT_INTERVAL_S = 10.0

SOURCES_ON_BY_DEFAULT: Mapping[str, bool] = {"rdma": True, "ethtool": True, "gpu": True, "dcgm": False, "jobs": True}
"""Every source the agent knows, in polling order, and whether it runs when the config does not say."""

_TOP_LEVEL = ("host", "interval_s", "output", "sources")

_NOTHING_FOUND = {
    "rdma": "no RDMA devices (no /sys/class/infiniband)",
    "ethtool": "no RDMA network interfaces with statistics",
    "gpu": "no GPUs (or no NVIDIA driver / NVML library)",
    "dcgm": "no GPUs in the DCGM exporter's scrape",
}
"""What a source that found nothing on its first poll means, for the one message at start."""


class AgentConfigError(ValueError):
    """The agent's configuration is unusable; the message names the file and the key."""


@dataclass(slots=True)
class AgentConfig:
    """What the agent runs: the host name it reports, the poll interval, the
    enabled sources with their options, where ``--output`` goes by default,
    and where the configuration came from (for messages)."""

    host: str
    interval_s: float = DEFAULT_INTERVAL_S
    sources: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {name: {} for name, on in SOURCES_ON_BY_DEFAULT.items() if on}
    )
    output: str = "-"
    origin: str = "<defaults>"
    explicit: frozenset[str] = frozenset()
    """``sources.<name>.<option>`` keys the file set, as opposed to defaults."""


def parse_config(data: Mapping[str, Any] | None, origin: str = "<config>") -> AgentConfig:
    """An :class:`AgentConfig` from the parsed YAML; :class:`AgentConfigError` names what is wrong."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise AgentConfigError(f"{origin}: the configuration must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_TOP_LEVEL))
    if unknown:
        raise AgentConfigError(f"{origin}: unknown key(s) {unknown}; known: {list(_TOP_LEVEL)}")

    host = data.get("host") or socket.gethostname()
    if not isinstance(host, str) or not host.strip():
        raise AgentConfigError(f"{origin}: host must be a non-empty string, got {host!r}")
    interval = data.get("interval_s", DEFAULT_INTERVAL_S)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not (0 < interval < math.inf):
        raise AgentConfigError(f"{origin}: interval_s must be a positive number of seconds, got {interval!r}")
    output = data.get("output", "-")
    if not isinstance(output, str) or not output:
        raise AgentConfigError(f"{origin}: output must be '-' (stdout) or a file path, got {output!r}")

    blocks = data.get("sources") or {}
    if not isinstance(blocks, Mapping):
        raise AgentConfigError(f"{origin}: sources must be a mapping of source name to options")
    unknown = sorted(set(blocks) - set(SOURCES_ON_BY_DEFAULT))
    if unknown:
        raise AgentConfigError(f"{origin}: unknown source(s) {unknown}; known: {list(SOURCES_ON_BY_DEFAULT)}")
    sources: dict[str, dict[str, Any]] = {}
    explicit: set[str] = set()
    for name, on_by_default in SOURCES_ON_BY_DEFAULT.items():
        # A source the file names is on unless it says otherwise; one it leaves out keeps its default.
        block = blocks[name] if name in blocks else {"enabled": on_by_default}
        if isinstance(block, bool):
            block = {"enabled": block}
        elif block is None:
            block = {}
        elif not isinstance(block, Mapping):
            raise AgentConfigError(f"{origin}: sources.{name} must be true, false or a mapping of options")
        options = dict(block)
        enabled = options.pop("enabled", True)
        if not isinstance(enabled, bool):
            raise AgentConfigError(f"{origin}: sources.{name}.enabled must be true or false, got {enabled!r}")
        if enabled:
            sources[name] = options
            explicit.update(f"sources.{name}.{option}" for option in options)
    return AgentConfig(host.strip(), float(interval), sources, output, origin, frozenset(explicit))


def load_config(path: str | Path) -> AgentConfig:
    """Read and check an agent configuration file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise AgentConfigError(f"{path}: cannot read the agent configuration: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise AgentConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_config(data, str(path))


def build_sources(config: AgentConfig) -> list[Source]:
    """The enabled sources, built from their options; :class:`AgentConfigError` names a bad one.

    The gpu and jobs sources share a :class:`ProcessTable`: Slurm job mapping
    reads the GPU processes the gpu source found in the same poll. Without the
    gpu source, Slurm mapping is off unless the file asks for it (an error).
    """
    options = config.sources
    process_table = ProcessTable() if "gpu" in options else None
    sources: list[Source] = []
    for name in SOURCES_ON_BY_DEFAULT:
        if name not in options:
            continue
        block = dict(options[name])
        try:
            if name == "rdma":
                sources.append(RdmaSource.from_config(config.host, block))
            elif name == "ethtool":
                sources.append(EthtoolSource.from_config(config.host, block))
            elif name == "gpu":
                sources.append(GpuSource.from_config(config.host, block, process_table))
            elif name == "dcgm":
                sources.append(DcgmSource.from_config(config.host, block))
            elif name == "jobs":
                if process_table is None and "sources.jobs.slurm" not in config.explicit:
                    block["slurm"] = False
                if block.get("slurm", True) is False and not block.get("file"):
                    log.info("agent: jobs source off: no gpu source to map Slurm jobs from and no jobs file")
                    continue
                wait_s = min(DEFAULT_WAIT_S, config.interval_s / 2)
                sources.append(JobsSource.from_config(config.host, block, process_table, wait_s))
        except (ValueError, JobsFileError) as err:
            raise AgentConfigError(f"{config.origin}: sources.{name}: {err}") from None
    return sources


class Agent:
    """The sources of one host, polled together; reports once what found nothing."""

    def __init__(self, config: AgentConfig, sources: Sequence[Source] | None = None) -> None:
        self.config = config
        self.sources: list[Source] = list(sources) if sources is not None else build_sources(config)
        self._reported_start = False

    async def poll(self, time_ns: int) -> list[list[Point]]:
        """One batch per source, all stamped ``time_ns``."""
        batches = await poll_sources(self.sources, time_ns)
        if not self._reported_start:
            self._reported_start = True
            self._report_start(batches)
        return batches

    def _report_start(self, batches: list[list[Point]]) -> None:
        names = [source.name for source in self.sources]
        log.info(
            "agent: %s polls %s every %g s", self.config.host, ", ".join(names) or "nothing", self.config.interval_s
        )
        for batch in batches:
            health = batch[-1]
            if health.measurement != COLLECTOR_HEALTH or health.fields.get("up") != 1 or health.fields.get("points"):
                continue
            meaning = _NOTHING_FOUND.get(health.tags.get("source", ""))
            if meaning:
                log.info("agent: %s source found %s; it keeps polling", health.tags["source"], meaning)

    async def close(self) -> None:
        for source in self.sources:
            try:
                await source.close()
            except Exception as err:  # one source failing to close must not keep the others open
                log.warning("agent: closing source %s failed: %r", source.name, err)


def run_agent_once(
    config: AgentConfig, time_ns: int | None = None, sources: Sequence[Source] | None = None
) -> list[Point]:
    """Poll the sources (built from ``config`` unless given) once, stamped ``time_ns``
    (default now), close them and return the points."""

    async def once() -> list[Point]:
        agent = Agent(config, sources)
        try:
            batches = await agent.poll(time.time_ns() if time_ns is None else time_ns)
        finally:
            await agent.close()
        return [point for batch in batches for point in batch]

    return asyncio.run(once())


async def run_agent(
    config: AgentConfig,
    bus: Bus,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    sources: Sequence[Source] | None = None,
    reload: Callable[[], Sequence[Source]] | None = None,
) -> int:
    """Poll every ``config.interval_s`` and publish each batch on ``bus`` until ``stop`` is set.

    Polls happen at whole multiples of the interval (wall clock), each stamped
    with its scheduled time, so stamps line up across hosts and never drift; a
    poll that overruns skips the instants it missed (logged). ``stop`` is set
    by the first SIGTERM or SIGINT when ``handle_signals`` (the current poll
    finishes and is published, then the sources are closed); a second signal
    raises :class:`ForcedExit` at once, without waiting for the sources.
    With ``reload``, SIGHUP rebuilds the sources from it before the next poll
    (see :class:`collector.service.SourceSet`). Returns the number of polls made.
    """
    agent = Agent(config, sources)
    source_set = SourceSet(agent.sources, reload or (lambda: agent.sources), "agent")
    signals = ShutdownSignals(
        "agent", "finishing the current poll, then stopping", stop, source_set.request if reload else None
    )
    stop = signals.stop
    if handle_signals:
        signals.install()

    async def finish() -> None:
        try:
            await agent.close()
        except asyncio.CancelledError:
            if signals.forced:
                raise ForcedExit("stopped by a second signal") from None
            raise

    interval_ns = round(config.interval_s * 1e9)
    tick = (time.time_ns() // interval_ns + 1) * interval_ns
    polls = 0
    try:
        while not stop.is_set():
            delay = (tick - time.time_ns()) / 1e9
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    break
                except TimeoutError:
                    pass
            if await source_set.apply_pending():
                agent.sources = source_set.sources
            for batch in await agent.poll(tick):
                await bus.publish(batch)
            polls += 1
            tick += interval_ns
            now = time.time_ns()
            if tick <= now:
                missed = (now - tick) // interval_ns + 1
                log.warning("agent: a poll took longer than the interval; skipping %d poll(s)", missed)
                tick += missed * interval_ns
    except asyncio.CancelledError:
        if signals.forced:
            raise ForcedExit("stopped by a second signal") from None
        await finish()
        raise
    except BaseException:
        await finish()
        raise
    else:
        await finish()
    finally:
        signals.uninstall()
    return polls


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``strandwatch agent``."""
    parser.add_argument(
        "--config", type=Path,
        help="agent configuration (YAML: print line protocol), or a service configuration with agent: and mqtt: "
             "sections (publish to MQTT); default: every source with its defaults, printed",
    )
    parser.add_argument("--once", action="store_true", help="poll once, print the sample and exit")
    parser.add_argument("--output", help="'-' for stdout or a file to append line protocol to, instead of "
                                         "publishing (default: the agent configuration's output)")
    parser.add_argument("--host", help="host name to report (default: the config's, else this machine's)")


def _open_output(target: str) -> TextIO:
    return sys.stdout if target == "-" else open(target, "a", encoding="utf-8")


async def _write_deliveries(subscription: Subscription, output: TextIO) -> None:
    async for delivery in subscription:
        output.write(encode(delivery.points))
        output.flush()
        await delivery.ack()


def _reloader(args: argparse.Namespace, running: AgentConfig) -> Callable[[], list[Source]] | None:
    """SIGHUP: the sources of the configuration file as it reads now (the host and interval stay)."""
    if not args.config:
        return None

    def rebuild() -> list[Source]:
        fresh = load_config(args.config)
        fresh.host = running.host
        if fresh.interval_s != running.interval_s:
            log.warning("agent: interval_s changed to %g s in %s; it applies after a restart",
                        fresh.interval_s, args.config)
        fresh.interval_s = running.interval_s
        return build_sources(fresh)

    return rebuild


async def _serve(
    config: AgentConfig, sources: list[Source], output: TextIO, reload: Callable[[], list[Source]] | None
) -> int:
    bus = InProcessBus()
    writer = asyncio.create_task(_write_deliveries(bus.subscribe(), output))
    polls = await run_agent(config, bus, sources=sources, reload=reload)
    await bus.close()
    await writer
    return polls


def run_agent_command(args: argparse.Namespace) -> int:
    """``strandwatch agent``: 0 when stopped by a signal or after ``--once``, 2 for a bad configuration.

    A second stop signal ends the process at once (exit status 130) without
    waiting for sources that may be stuck in a driver call. SIGHUP re-reads
    ``--config`` and rebuilds the sources between two polls.
    """
    from collector.config import ConfigError, read_service_document
    from collector.config import load_config as load_service_config

    try:
        service = None
        document = read_service_document(args.config) if args.config else None
        if document is not None:
            service = load_service_config(args.config)
            if service.agent is None:
                raise AgentConfigError(f"{args.config}: no 'agent' section: nothing to poll")
            config = service.agent
            section = document.get("agent") if isinstance(document.get("agent"), dict) else {}
            if "interval_s" not in section:
                config.interval_s = service.interval_s
        else:
            config = load_config(args.config) if args.config else parse_config({}, "<defaults>")
        if args.host:
            config.host = args.host
        sources = build_sources(config)
        if service is not None and not args.once and not args.output:
            return _publish(service, config, sources, args)
        output = _open_output(args.output or config.output)
    except (AgentConfigError, ConfigError, OSError) as err:
        print(f"strandwatch agent: {err}", file=sys.stderr)
        return 2
    try:
        if args.once:
            output.write(encode(run_agent_once(config, sources=sources)))
            return 0
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(_serve(config, sources, output, _reloader(args, config)))
        except ForcedExit:
            output.flush()
            os._exit(EXIT_FORCED)
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        return 0
    finally:
        output.flush()
        if output is not sys.stdout:
            output.close()


def _publish(service: ServiceConfig, config: AgentConfig, sources: list[Source], args: argparse.Namespace) -> int:
    """The agent as a service publishing to ``service.mqtt`` (see the module docstring)."""
    from collector.config import load_config as load_service_config
    from collector.service.logs import register_secrets, secret_values
    from collector.service.publish import serve_publishing
    from collector.service.signals import run_service

    register_secrets(secret_values(service))
    agent = Agent(config, sources)

    def rebuild() -> list[Source]:
        fresh = load_service_config(args.config).agent
        if fresh is None:
            raise AgentConfigError(f"{args.config}: the 'agent' section is gone; keeping the running sources")
        fresh.host = config.host
        fresh.interval_s = config.interval_s
        return build_sources(fresh)

    async def poll(current: Sequence[Source], time_ns: int) -> list[list[Point]]:
        agent.sources = list(current)
        return await agent.poll(time_ns)

    source_set = SourceSet(sources, rebuild, "agent")
    return run_service(
        lambda signals: serve_publishing(service, source_set, config.interval_s, signals, host=config.host, poll=poll),
        "agent", "finishing the current poll, publishing it and flushing the spool",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m collector.agent``: the same as ``strandwatch agent``."""
    parser = argparse.ArgumentParser(prog="strandwatch agent", description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    add_agent_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return run_agent_command(args)


if __name__ == "__main__":
    sys.exit(main())
