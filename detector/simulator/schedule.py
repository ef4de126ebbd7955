"""Which jobs run where and when, and what goes wrong when: all drawn from the seed.

Jobs are synchronous data-parallel: each step computes for ``compute_s`` and
then all-reduces its gradients over the NICs (``comm_bytes`` per NIC and step),
rail by rail, in a ring over the job's hosts ordered by leaf. A single-host job
reduces over NVLink and sends nothing over the fabric. Jobs are packed onto
runs of consecutive hosts (wrapping around from the last host to the first),
so some span two leaves and their rings cross the uplinks; some hosts and GPUs
stay unallocated. When a job ends, its hosts sit idle for 10 to 30 minutes and
then get a new job of the same shape.

Events are placed one after another with gaps (so they mostly do not overlap),
cycling over ``SimConfig.event_kinds`` in a shuffled order per cycle; each picks
a victim that fits it (a congestion event needs a job whose ring crosses the
uplinks). Checkpoints come on top, periodically per job.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace

import numpy as np

from detector.simulator.cluster import Cluster
from detector.simulator.config import SimConfig

HEALTHY_LINK_EFFICIENCY = 0.9
"""Share of a host link's rate that a healthy all-reduce reaches (protocol overhead, NCCL)."""

_JOB_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
_IDLE_HOST_PROBABILITY = 0.1
_PARTIAL_HOST_PROBABILITY = 0.5

# Event durations in minutes (low, high); gaps between events; quiet start.
_DURATION_MIN = {
    "congestion/ecmp_collision": (5, 15),
    "congestion/oversubscription": (5, 15),
    "link_degradation": (10, 20),
    "pfc_storm": (3, 10),
    "input_stall": (4, 12),
    "slow_host": (5, 15),
    "hung_job": (6, 20),
}
_GAP_MIN = (3, 6)
_WARMUP_MIN = 10


@dataclass(frozen=True, slots=True)
class Job:
    """One job's placement, lifetime (in steps from the scenario start) and step profile."""

    index: int
    name: str
    hosts: tuple[int, ...]
    """Host indices in ring order (by leaf, then host)."""
    gpus: tuple[int, ...]
    """Local GPU indices used on every one of its hosts."""
    start_step: int
    """First step it runs; negative for a job already running when the scenario starts."""
    end_step: int | None
    """First step it no longer runs; ``None`` if it outlives the scenario."""
    compute_s: float
    comm_bytes: float
    """Bytes each of its NICs sends per step in the all-reduce (0 for a single host)."""
    sm_level: float
    """Fraction of SMs busy while it computes."""
    memory_mib: float
    input_bytes_s: float
    """Training data read from storage per host while it runs."""
    checkpoint_every: int
    checkpoint_steps: int
    checkpoint_phase: int
    checkpoint_bytes_s: float
    """Storage write rate per host while it checkpoints."""
    pid: int

    @property
    def multi_host(self) -> bool:
        return len(self.hosts) > 1

    @property
    def n_gpus(self) -> int:
        return len(self.hosts) * len(self.gpus)

    def active(self, step: int) -> bool:
        return self.start_step <= step and (self.end_step is None or step < self.end_step)

    def alive_through(self, first: int, last: int) -> bool:
        """Runs in every step of [first, last)."""
        return self.start_step <= first and (self.end_step is None or last <= self.end_step)

    def leaves(self, cluster: Cluster) -> list[int]:
        return sorted({int(cluster.host_leaf[h]) for h in self.hosts})


@dataclass(frozen=True, slots=True)
class Event:
    """One injected cause over steps [start_step, end_step).

    ``links`` are physical link indices the event acts on (the responsible links of
    a network event); ``nics`` the NICs it acts on directly; ``level`` its severity
    (pause fraction, peak loss rate, slowdown, stall per compute time) and
    ``level2`` a second one (the slow host's receive pause fraction).
    """

    id: int
    kind: str
    variant: str
    start_step: int
    end_step: int
    job: int | None = None
    host: int | None = None
    switch: int | None = None
    leaf: int | None = None
    uplink: int | None = None
    """Uplink position on the leaf (``u``) a congestion event concentrates traffic on."""
    rails: tuple[int, ...] = ()
    links: tuple[int, ...] = ()
    nics: tuple[int, ...] = ()
    level: float = 0.0
    level2: float = 0.0
    detail: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.variant}" if self.variant else self.kind


@dataclass(slots=True)
class Plan:
    jobs: list[Job]
    events: list[Event] = field(default_factory=list)


def _minutes(config: SimConfig, minutes: float) -> int:
    return max(1, round(minutes * 60 / config.interval_s))


def plan(cluster: Cluster, config: SimConfig, rng: np.random.Generator) -> Plan:
    """Jobs, then checkpoints, then the injected events (which avoid victims' checkpoints)."""
    jobs = plan_jobs(cluster, config, rng)
    checkpoints = plan_checkpoints(config, jobs) if config.checkpoints else []
    events = plan_events(cluster, config, jobs, checkpoints, rng) if config.events else []
    if config.switch_reboot:
        events.append(plan_reboot(cluster, config, rng))
    ordered = sorted(events + checkpoints, key=lambda event: (event.start_step, event.kind, event.job or 0))
    return Plan(jobs, [replace(event, id=index) for index, event in enumerate(ordered)])


# Jobs ------------------------------------------------------------------------


def plan_jobs(cluster: Cluster, config: SimConfig, rng: np.random.Generator) -> list[Job]:
    """Pack jobs until the mix has what the scenarios need (tries a few layouts)."""
    jobs: list[Job] = []
    for _ in range(200):
        jobs = _pack_cluster(cluster, config, rng)
        if _varied(cluster, config, jobs):
            break
    return jobs


def _varied(cluster: Cluster, config: SimConfig, jobs: list[Job]) -> bool:
    """A large cross-leaf job that lasts most of the scenario, a one-leaf multi-host
    job, a single-host job and unallocated GPUs, as far as the cluster's size allows."""
    at_start = [job for job in jobs if job.active(0)]
    lasting = min(int(config.steps * 0.8), _minutes(config, 180))
    large = min(4, max(2, cluster.n_hosts // 2))
    wants = []
    if cluster.n_leaves > 1:
        wants.append(any(
            len(job.hosts) >= large and len(job.leaves(cluster)) > 1 and job.alive_through(0, lasting)
            for job in at_start
        ))
    if cluster.n_hosts >= 4:
        wants.append(any(job.multi_host and len(job.leaves(cluster)) == 1 for job in at_start))
        wants.append(any(not job.multi_host for job in at_start))
        used = sum(job.n_gpus for job in at_start)
        wants.append(used < cluster.n_gpus)
    return all(wants)


def _pack_cluster(cluster: Cluster, config: SimConfig, rng: np.random.Generator) -> list[Job]:
    """Fill the cluster once, then replace every job that ends by one on the same hosts."""
    steps = config.steps
    mean_steps = config.job_mean_hours * 3600 / config.interval_s
    # The first fill starts at a random host and wraps around, so jobs straddle
    # every leaf boundary, the last leaf's and the first's included.
    offset = int(rng.integers(cluster.n_hosts))
    hosts = list(range(cluster.n_hosts))
    ready = [(0, position, placement) for position, placement in
             enumerate(_pack_run(cluster, hosts[offset:] + hosts[:offset], rng))]
    heapq.heapify(ready)
    jobs: list[Job] = []
    while ready:
        start, order, (job_hosts, gpus) = heapq.heappop(ready)
        begun = start if start > 0 else -int(rng.integers(1, max(2, round(48 * 3600 / config.interval_s))))
        end = start + max(1, int(rng.exponential(mean_steps)))
        job = _job(cluster, config, rng, len(jobs), job_hosts, gpus, begun, end if end < steps else None)
        jobs.append(job)
        if job.end_step is not None:
            restart = job.end_step + _minutes(config, rng.uniform(10, 30))
            if restart < steps:
                heapq.heappush(ready, (restart, order, (job_hosts, gpus)))
    return jobs


def _pack_run(cluster: Cluster, run: list[int],
              rng: np.random.Generator) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Split a run of hosts (in leaf order) into jobs, leaving some hosts or GPUs idle."""
    largest = max(2, cluster.n_hosts // 2)
    placed = []
    position = 0
    while position < len(run):
        remaining = len(run) - position
        if rng.random() < _IDLE_HOST_PROBABILITY:
            position += 1
            continue
        sizes = np.array([size for size in _JOB_SIZES if size <= min(remaining, largest)])
        weights = np.where(sizes == 1, 0.5, sizes ** -0.3)
        size = int(rng.choice(sizes, p=weights / weights.sum()))
        gpus = tuple(range(cluster.gpus_per_host))
        if size == 1 and rng.random() < _PARTIAL_HOST_PROBABILITY:
            gpus = tuple(range(max(1, cluster.gpus_per_host // 2)))
        placed.append((tuple(run[position:position + size]), gpus))
        position += size
    return placed


def _job(cluster: Cluster, config: SimConfig, rng: np.random.Generator, index: int, hosts: tuple[int, ...],
         gpus: tuple[int, ...], start: int, end: int | None) -> Job:
    compute_s = float(rng.uniform(1.2, 3.0))
    healthy_bandwidth = HEALTHY_LINK_EFFICIENCY * config.host_link_gbps * 1e9 / 8
    comm_share = float(rng.uniform(0.15, 0.3)) if len(hosts) > 1 else 0.0
    comm_bytes = compute_s * comm_share / (1 - comm_share) * healthy_bandwidth
    every = _minutes(config, rng.uniform(40, 70))
    return Job(
        index=index,
        name=f"job-{index + 1:02d}",
        hosts=tuple(sorted(hosts, key=lambda h: (int(cluster.host_leaf[h]), h))),
        gpus=gpus,
        start_step=start,
        end_step=end,
        compute_s=compute_s,
        comm_bytes=comm_bytes,
        sm_level=float(rng.uniform(0.72, 0.9)),
        memory_mib=float(rng.uniform(0.72, 0.93)) * config.model.memory_total_mib,
        input_bytes_s=float(rng.uniform(0.2e9, 1.5e9)),
        checkpoint_every=every,
        checkpoint_steps=_minutes(config, rng.uniform(2, 5)),
        checkpoint_phase=int(rng.integers(0, every)),
        checkpoint_bytes_s=float(rng.uniform(2e9, 8e9)),
        pid=int(rng.integers(2000, 60000)),
    )


# Events ----------------------------------------------------------------------


def plan_events(cluster: Cluster, config: SimConfig, jobs: list[Job], checkpoints: list[Event],
                rng: np.random.Generator) -> list[Event]:
    busy: dict[int, list[tuple[int, int]]] = {}
    for checkpoint in checkpoints:
        busy.setdefault(checkpoint.job, []).append((checkpoint.start_step, checkpoint.end_step))
    events: list[Event] = []
    steps = config.steps
    step = _minutes(config, _WARMUP_MIN)
    pending: list[str] = []
    last_victim: int | None = None
    while step < steps:
        if not pending:
            pending = [str(kind) for kind in rng.permutation(list(config.event_kinds))]
        placed = None
        while pending and placed is None:
            label = pending.pop(0)
            low, high = _DURATION_MIN[label]
            end = step + _minutes(config, rng.uniform(low, high))
            if end > steps:
                continue
            placed = _make_event(cluster, jobs, busy, rng, label, step, end, last_victim)
        if placed is None:
            step += _minutes(config, _GAP_MIN[0])
            continue
        events.append(placed)
        last_victim = placed.job
        step = placed.end_step + _minutes(config, rng.uniform(*_GAP_MIN))
    return events


def _candidates(jobs: list[Job], busy: dict[int, list[tuple[int, int]]], first: int, last: int, *,
                multi_host: bool, cross_leaf: bool, cluster: Cluster, avoid: int | None) -> list[Job]:
    """Jobs that run throughout [first, last), fit the event, and preferably are not checkpointing."""
    fitting = [
        job for job in jobs
        if job.alive_through(first, last)
        and (job.multi_host or not multi_host)
        and (len(job.leaves(cluster)) > 1 or not cross_leaf)
    ]
    quiet = [job for job in fitting if not any(a < last and first < b for a, b in busy.get(job.index, ()))]
    pool = quiet or fitting
    fresh = [job for job in pool if job.index != avoid]
    return fresh or pool


def _make_event(cluster: Cluster, jobs: list[Job], busy: dict[int, list[tuple[int, int]]], rng: np.random.Generator,
                label: str, first: int, last: int, avoid: int | None) -> Event | None:
    kind, _, variant = label.partition("/")
    needs_cross = kind == "congestion"
    needs_multi = kind in ("congestion", "link_degradation", "pfc_storm", "slow_host", "hung_job")
    pool = _candidates(jobs, busy, first, last, multi_host=needs_multi, cross_leaf=needs_cross, cluster=cluster,
                       avoid=avoid)
    if kind == "hung_job" and not pool:
        pool = _candidates(jobs, busy, first, last, multi_host=False, cross_leaf=False, cluster=cluster, avoid=avoid)
    if not pool:
        return None
    job = pool[int(rng.integers(len(pool)))]
    base = dict(id=-1, kind=kind, variant=variant, start_step=first, end_step=last, job=job.index)
    host_names = cluster.host_names

    if kind == "congestion" and variant == "ecmp_collision":
        leaves = job.leaves(cluster)
        position = int(rng.integers(len(leaves)))
        leaf, next_leaf = leaves[position], leaves[(position + 1) % len(leaves)]
        capacity = cluster.dl_capacity[2 * cluster.uplink(leaf, 0)]
        healthy = HEALTHY_LINK_EFFICIENCY * cluster.dl_capacity[0]
        count = int(min(cluster.rails, max(3, np.ceil(1.6 * capacity / healthy))))
        rails = tuple(sorted(int(r) for r in rng.choice(cluster.rails, size=count, replace=False)))
        u = rails[0] % cluster.uplinks_per_leaf
        links = (cluster.uplink(leaf, u), cluster.uplink(next_leaf, u))
        return Event(**base, leaf=leaf, uplink=u, rails=rails, links=links, detail=(
            f"ECMP hashes rails {','.join(map(str, rails))} of {job.name} leaving {cluster.leaf_names[leaf]} "
            f"onto one uplink, {', '.join(i for link in links for i in cluster.link_ids(link))}"))

    if kind == "congestion":  # oversubscription: bulk traffic from storage into one leaf over one uplink
        leaf = job.leaves(cluster)[int(rng.integers(len(job.leaves(cluster))))]
        rail = int(rng.integers(cluster.rails))
        u = rail % cluster.uplinks_per_leaf
        others = [h for h in cluster.hosts_of_leaf(leaf) if h not in job.hosts] or cluster.hosts_of_leaf(leaf)
        capacity = cluster.dl_capacity[2 * cluster.uplink(leaf, u)]
        count = int(np.ceil(1.5 * capacity / cluster.dl_capacity[0]))
        nics = tuple(cluster.nic(others[i % len(others)], (rail + i // len(others)) % cluster.rails)
                     for i in range(count))
        links = (cluster.uplink(leaf, u), *nics)
        return Event(**base, leaf=leaf, uplink=u, rails=(rail,), links=links, nics=nics, level=0.95, detail=(
            f"bulk transfer from storage to {', '.join(sorted({host_names[int(cluster.nic_host[n])] for n in nics}))} "
            f"oversubscribes {', '.join(cluster.link_ids(links[0]))}, which {job.name}'s ring crosses"))

    if kind == "link_degradation":
        nic = cluster.nic(job.hosts[int(rng.integers(len(job.hosts)))], int(rng.integers(cluster.rails)))
        link = nic
        leaves = job.leaves(cluster)
        if len(leaves) > 1 and rng.random() < 0.5:
            rail = int(cluster.nic_rail[nic])
            link = cluster.uplink(int(cluster.host_leaf[cluster.nic_host[nic]]), rail % cluster.uplinks_per_leaf)
        peak = float(rng.uniform(3e-4, 1e-3))
        return Event(**base, links=(link,), level=peak, detail=(
            f"{', '.join(cluster.link_ids(link))} degrades: packet loss rises to {peak:.0e}, {job.name} retransmits"))

    if kind == "pfc_storm":
        leaves = job.leaves(cluster)
        leaf = leaves[int(rng.integers(len(leaves)))]
        nics = tuple(cluster.nic(h, r) for h in cluster.hosts_of_leaf(leaf) for r in range(cluster.rails))
        fraction = float(rng.uniform(0.35, 0.7))
        return Event(**base, leaf=leaf, links=nics, nics=nics, level=fraction, detail=(
            f"{cluster.leaf_names[leaf]} pauses its hosts {fraction:.0%} of the time (PFC storm from the fabric)"))

    if kind == "input_stall":
        stall = float(rng.uniform(0.6, 2.5))
        return Event(**base, level=stall,
                     detail=f"{job.name}'s input pipeline stalls {stall:.1f}x its compute time per step")

    if kind == "slow_host":
        host = job.hosts[int(rng.integers(len(job.hosts)))]
        slowdown = float(rng.uniform(1.25, 1.7))
        pause = float(rng.uniform(0.2, 0.45))
        nics = tuple(cluster.nic(host, r) for r in range(cluster.rails))
        return Event(**base, host=host, nics=nics, level=slowdown, level2=pause, detail=(
            f"{host_names[host]} throttles ({slowdown:.2f}x compute) and back-pressures {job.name}'s ring "
            f"with PFC pauses {pause:.0%} of the time"))

    return Event(**base, detail=f"{job.name} hangs in a collective")


def plan_checkpoints(config: SimConfig, jobs: list[Job]) -> list[Event]:
    """One event per checkpoint of every job within the scenario.

    A job checkpoints for ``checkpoint_steps`` every ``checkpoint_every`` steps,
    counted from its ``checkpoint_phase``; one that was already running when the
    scenario starts may be in the middle of a checkpoint at step 0.
    """
    events = []
    for job in jobs:
        begin = max(job.start_step, 0)
        finish = config.steps if job.end_step is None else min(job.end_step, config.steps)
        step = begin + (job.checkpoint_phase - begin) % job.checkpoint_every
        under_way_until = step - job.checkpoint_every + job.checkpoint_steps
        if job.start_step < 0 and under_way_until > begin:
            events.append(_checkpoint(job, begin, under_way_until))
        while step < finish:
            events.append(_checkpoint(job, step, min(step + job.checkpoint_steps, finish)))
            step += job.checkpoint_every
    return events


def _checkpoint(job: Job, first: int, last: int) -> Event:
    return Event(id=-1, kind="checkpoint", variant="", start_step=first, end_step=last, job=job.index,
                 detail=f"{job.name} writes a checkpoint")


def plan_reboot(cluster: Cluster, config: SimConfig, rng: np.random.Generator) -> Event:
    """A warm reboot: the switch's counters and sysUpTime restart, forwarding carries on."""
    switch = int(rng.integers(len(cluster.switch_names)))
    step = int(rng.integers(max(1, config.steps // 5), max(2, config.steps * 4 // 5)))
    return Event(id=-1, kind="switch_reboot", variant="", start_step=step, end_step=step + 1, switch=switch,
                 detail=f"{cluster.switch_names[switch]} reboots (warm): counters and sysUpTime restart")
