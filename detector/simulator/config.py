"""What a simulated scenario looks like: cluster size, time span, seed, what to inject."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

NETWORK_CAUSES = ("congestion", "link_degradation", "pfc_storm")
"""Causes whose loss counts as network loss."""

CONFOUNDERS = ("checkpoint", "input_stall", "slow_host", "hung_job")
"""Causes that idle or slow GPUs without the network being at fault."""

UNALLOCATED = "unallocated"
"""GPUs in no job: idle, and no job's loss."""

SCHEDULED_KINDS = (
    "congestion/ecmp_collision",
    "congestion/oversubscription",
    "link_degradation",
    "pfc_storm",
    "input_stall",
    "slow_host",
    "hung_job",
)
"""Event kinds (``kind`` or ``kind/variant``) that the scheduler cycles through.
Checkpoints are periodic per job and switch reboots a separate option."""


class SimConfigError(ValueError):
    """A simulator setting is out of range; the message names the setting."""


@dataclass(frozen=True, slots=True)
class GpuModel:
    """The constants of one GPU model that the simulated gauges need."""

    name: str
    memory_total_mib: int
    idle_power_w: float
    max_power_w: float
    max_sm_clock_mhz: int
    memory_clock_mhz: int


GPU_MODELS: Mapping[str, GpuModel] = {
    "H100": GpuModel("NVIDIA H100 80GB HBM3", 81559, 70.0, 700.0, 1980, 2619),
    "H200": GpuModel("NVIDIA H200", 143771, 75.0, 700.0, 1980, 3201),
    "A100": GpuModel("NVIDIA A100-SXM4-80GB", 81920, 55.0, 400.0, 1410, 1593),
    "B200": GpuModel("NVIDIA B200", 183359, 120.0, 1000.0, 1965, 3996),
}


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One scenario. Every random choice follows from ``seed``.

    The cluster: ``leaves`` leaf switches, each wired to every one of
    ``spines`` spines by ``uplinks_per_leaf`` ports in all (spread round-robin
    over the spines); ``hosts`` hosts spread over the leaves in contiguous
    blocks, each with ``gpus_per_host`` GPUs and ``nics_per_host`` RoCE NICs
    (rail-optimised: NIC ``r`` of every host is rail ``r``). Each spine also
    has one port to the storage cluster. Speeds in Gb/s.

    Time: ``duration`` from ``start`` in steps of ``interval_s``; events start
    and end on step boundaries.

    What happens: synchronous data-parallel jobs (``job_mean_hours`` is the
    mean remaining lifetime of a job, after which its hosts are idle for a
    while and then get a new job), periodic ``checkpoints``, and with
    ``events`` a cycle over ``event_kinds``. ``switch_reboot`` adds one warm
    reboot of a switch (counters and sysUpTime restart, traffic flows on).
    """

    seed: int = 1
    start: datetime = datetime(2026, 11, 2, tzinfo=timezone.utc)
    duration: timedelta = timedelta(hours=3)
    interval_s: float = 30.0
    leaves: int = 2
    spines: int = 2
    hosts: int = 8
    gpus_per_host: int = 8
    gpu_model: str = "H100"
    nics_per_host: int = 8
    host_link_gbps: int = 400
    uplinks_per_leaf: int = 8
    uplink_gbps: int = 800
    storage_link_gbps: int = 800
    job_mean_hours: float = 8.0
    events: bool = True
    event_kinds: tuple[str, ...] = SCHEDULED_KINDS
    checkpoints: bool = True
    switch_reboot: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.start, str):
            object.__setattr__(self, "start", _parse_start(self.start))
        if isinstance(self.duration, (int, float)) and not isinstance(self.duration, bool):
            object.__setattr__(self, "duration", timedelta(seconds=self.duration))
        if isinstance(self.event_kinds, list):
            object.__setattr__(self, "event_kinds", tuple(self.event_kinds))
        _validate(self)

    @property
    def steps(self) -> int:
        """Number of intervals the scenario runs."""
        return round(self.duration.total_seconds() / self.interval_s)

    @property
    def end(self) -> datetime:
        return self.start + self.duration

    @property
    def model(self) -> GpuModel:
        return GPU_MODELS[self.gpu_model]

    def with_(self, **changes: Any) -> SimConfig:
        """A copy with some settings changed (validated like a new one)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly settings, for the ground-truth file."""
        result: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, datetime):
                value = value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            elif isinstance(value, timedelta):
                value = value.total_seconds()
            elif isinstance(value, tuple):
                value = list(value)
            result[item.name] = value
        return result


def _parse_start(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as error:
        raise SimConfigError(f"SimConfig.start: not an RFC 3339 time: {text!r}") from error
    if value.tzinfo is None:
        raise SimConfigError(f"SimConfig.start: {text!r} has no UTC offset")
    return value.astimezone(timezone.utc)


def _validate(config: SimConfig) -> None:
    def need(condition: bool, setting: str, problem: str) -> None:
        if not condition:
            raise SimConfigError(f"SimConfig.{setting}: {problem}, got {getattr(config, setting)!r}")

    need(isinstance(config.seed, int) and not isinstance(config.seed, bool), "seed", "must be an integer")
    need(isinstance(config.start, datetime) and config.start.tzinfo is not None, "start", "must be an aware datetime")
    need(isinstance(config.duration, timedelta) and config.duration > timedelta(0), "duration", "must be positive")
    need(isinstance(config.interval_s, (int, float)) and config.interval_s >= 1, "interval_s", "must be >= 1 second")
    ratio = config.duration.total_seconds() / config.interval_s
    need(abs(ratio - round(ratio)) < 1e-9, "duration", f"must be a whole number of {config.interval_s} s intervals")
    for name in ("leaves", "spines", "hosts", "gpus_per_host", "nics_per_host", "uplinks_per_leaf"):
        value = getattr(config, name)
        need(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name, "must be an integer >= 1")
    need(config.hosts >= config.leaves, "hosts", f"must be at least the number of leaves ({config.leaves})")
    need(config.gpus_per_host % config.nics_per_host == 0, "gpus_per_host",
         f"must be a multiple of nics_per_host ({config.nics_per_host})")
    need(config.uplinks_per_leaf % config.spines == 0, "uplinks_per_leaf",
         f"must be a multiple of spines ({config.spines}) so every spine gets the same share")
    need(config.gpu_model in GPU_MODELS, "gpu_model", f"must be one of {sorted(GPU_MODELS)}")
    for name in ("host_link_gbps", "uplink_gbps", "storage_link_gbps"):
        need(getattr(config, name) > 0, name, "must be positive")
    need(config.job_mean_hours > 0, "job_mean_hours", "must be positive")
    unknown = [kind for kind in config.event_kinds if kind not in SCHEDULED_KINDS]
    need(not unknown, "event_kinds", f"has unknown kinds {unknown}; known: {list(SCHEDULED_KINDS)}")
