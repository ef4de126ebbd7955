"""Per job and interval: how much GPU time was lost, and to what.

A synchronous job advances at the pace of its slowest collective. When its
traffic meets congestion its GPUs wait, and their busy signal (``sm_active``,
else ``utilization_gpu``) falls below the job's healthy level. Per job and
interval of length ``dt``::

    busy = median over the job's hosts of their GPUs' mean busy signal
    r    = busy / baseline                  the job's progress rate, healthy = 1
    loss = n_gpus * dt * clip(1 - r, 0, 1)   GPU-seconds

The median over hosts follows the hosts that wait: a straggler's extra busy
time is not progress. ``baseline`` is the job's busy level while it runs
normally: the median of its intervals whose path is clean, whose own hosts send
no pauses and whose GPUs are not idle. ``n_gpus`` counts the job's allocated
GPUs, also those whose sample is missing; a GPU in no job never counts.

Where the GPUs report both SM activity and NVML's utilization, the loss splits
in two. Utilization is the share of time *any* kernel ran, NCCL's spinning
collectives included, so ``1 - utilization / its baseline`` is the share of the
interval the GPUs had nothing to run: the host did not feed them (input stall,
checkpoint). The rest of the loss, kernels running but SMs idle, is waiting in
communication: the network, a slow peer, or a hang. How loss follows idle time
is fitted per job (:func:`idle_loss_model`, see below), then::

    host-side share = clip(model(idle share), 0, loss)
    waiting share   = loss - host-side share

The waiting share is **network** loss when a link on the job's path
(``Topology.path_links``) is congested, the job still talks (it is not hung),
and no host of the job is to blame. A host is to blame when it sends PFC pauses
(a slow receiver back-pressuring the fabric) or straggles (its GPUs busy,
against its own healthy level, while its peers wait), unless the path shows
local trouble away from that host's own links: the drops and marks on the leaf
port facing a receiver that cannot keep up are the receiver's doing. Where a
suspect host and such trouble meet, the fabric is charged what the job waited
when its fabric was in as much trouble without a suspect host, and the host the
rest: an uplink that always drops a little keeps costing what it cost before a
host turned slow, and no more. Without
utilization, idle GPUs that write (checkpoint) or fall silent count as
host-side, everything else as waiting.

The loss that is not network gets one of these causes:

- ``slow_host``: a host of the job is to blame (it pauses or straggles);
- ``hung``: GPUs idle and no traffic for ``hung_intervals`` intervals or more;
- ``checkpoint``: host-side idle while the job's hosts write (they send far more
  than they receive, or send at all while the GPUs have no kernel to run);
- ``input_stall``: host-side idle otherwise;
- ``unknown``: waiting with no cause in sight (say, a path congested only a little).

Why a robust regression for the host-side share: the idle share from NVML's
utilization and the loss from SM activity are different instruments, and how
one maps onto the other depends on the job (kernel mix, sampling). Fitting
``loss ~ a + b * idle`` over the job's clean-path intervals calibrates the map
on the job's own data; Huber's loss keeps the handful of odd intervals (a slow
host: loss without idle time) from bending it, as they would bend least
squares. A hang's intervals (GPUs idle while their kernels spin) are left out:
where a job's path is never clean while it works, they would be much of the fit.
With too little idle time to fit, the identity (``b = 1``) is used.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cache
from typing import Iterable

import numpy as np
import pandas as pd
from sklearn.linear_model import HuberRegressor
from threadpoolctl import ThreadpoolController

from detector.compiled import jit
from detector.congestion import Congestion, FrameScores, GridScores
from detector.jobs import Allocation
from detector.rates import (all_distinct, factorize_runs, grid_codes, grid_step_ns, nanoseconds, sorted_positions,
                            utc_times)
from detector.telemetry import Telemetry
from detector.topology import Topology

NETWORK = "network"
SLOW_HOST = "slow_host"
CHECKPOINT = "checkpoint"
INPUT_STALL = "input_stall"
HUNG = "hung"
UNKNOWN = "unknown"
CAUSES = (NETWORK, SLOW_HOST, CHECKPOINT, INPUT_STALL, HUNG, UNKNOWN)


@dataclass(frozen=True, slots=True)
class AttributionSettings:
    congested: float = 1.0
    """Path (and pause) score from which a job's path counts as congested (its hosts as pausing)."""
    clean: float = 0.5
    """Path and pause scores below which an interval may define the healthy baseline."""
    min_loss_fraction: float = 0.005
    """Loss below this share of the job's GPU time in an interval is noise (per cause) ..."""
    noise_sigmas: float = 4.0
    """... and so is loss below this many standard deviations of the job's own progress noise."""
    idle_fraction: float = 0.15
    """Busy below this share of baseline: the GPUs are idle, not slowed."""
    no_kernel_share: float = 0.7
    """Utilization this far below baseline: the GPUs had (almost) nothing to run."""
    hung_intervals: int = 4
    """Idle with no traffic for at least this many intervals in a row: hung."""
    quiet_traffic_fraction: float = 0.05
    """Job traffic below this share of its healthy traffic counts as none."""
    checkpoint_asymmetry: float = 3.0
    """Sending this many times what it receives while idle: writing a checkpoint."""
    writing_bytes_per_host: float = 1e8
    """Outbound bytes/s per host that count as writing while the GPUs have nothing to run."""
    straggler_gap: float = 0.15
    """A host this much busier (against its own healthy level) than the job's other hosts, while they wait,
    is a straggler."""
    fed_share: float = 0.9
    """Utilization at least this share of its healthy (top) level: the host fed the GPUs in that interval."""
    min_baseline_intervals: int = 3
    located: float = 0.2
    """Evidence that places trouble on a link itself (local, or a NIC paused by its own leaf port; see
    ``congestion.located_scores``) from which a link on a congested path is blamed and ranks before links that
    only see the congestion pass by (ECN marks, CNPs): a fifth of a signal's floor above its normal."""
    chronic_ratio: float = 2.0
    """A link whose score is within this factor of its usual (median) score for the job is congested as usual,
    and ranks after links whose trouble is new (see :func:`_path_state`)."""
    shared_blame_ratio: float = 1.5
    """Where a suspect host and the fabric's own trouble meet, the fabric is charged what the job waited in
    intervals without a suspect host whose fabric trouble was within this factor (see :func:`_fabric_cost`)."""
    min_fit_intervals: int = 8
    """Clean-path intervals needed to fit the idle-to-loss map, with some idle time among them."""


@dataclass(frozen=True, slots=True)
class IdleLossModel:
    """loss share = intercept + slope * idle share, for one job (see the module docstring)."""

    intercept: float
    slope: float
    fitted: bool

    def host_side(self, idle: np.ndarray) -> np.ndarray:
        return np.where(idle > 0, self.intercept + self.slope * idle, 0.0)


IDENTITY = IdleLossModel(0.0, 1.0, False)


@dataclass(slots=True)
class Attribution:
    intervals: pd.DataFrame
    """One row per job and interval: time, job, n_gpus, busy, kernel, baseline, loss_fraction,
    idle_fraction, network_fraction, other_fraction, other_cause, path_score, local_score,
    fabric_score, links, pause_host, pause_score, straggler, suspect_host, tx_bytes, rx_bytes, power_w, model."""
    idle_models: dict[str, IdleLossModel]
    never_clean: list[str] = field(default_factory=list)
    """Jobs whose path was congested whenever their GPUs worked: no clean-path baseline, so their loss is
    measured against their own best intervals and what that congestion costs them all along is not counted."""


def job_members(allocations: Iterable[Allocation]) -> pd.DataFrame:
    """One row per (job, host, GPU, span) of the jobs file."""
    rows = [(a.job, a.host, gpu, pd.Timestamp(a.start), pd.Timestamp(a.end) if a.end else pd.NaT)
            for a in allocations for gpu in a.gpus]
    frame = pd.DataFrame(rows, columns=["job", "host", "gpu", "start", "end"])
    for column in ("start", "end"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


@dataclass(frozen=True, slots=True)
class _JobGpus:
    """What one job's GPUs did per interval: all its attribution needs of them, known before any link is scored."""

    times: np.ndarray
    """The intervals with samples of the job's GPUs (time codes, sorted)."""
    kernel: np.ndarray
    """Mean utilization per interval."""
    host_busy: np.ndarray
    """(interval, reporting host): each host's mean busy signal (see :func:`_host_busy`) ..."""
    reporting: np.ndarray
    """... and those hosts (codes, sorted)."""
    busy: np.ndarray
    """The job's busy signal per interval: the median of its hosts'."""
    power_w: np.ndarray
    hosts: np.ndarray
    """The job's hosts in the jobs file (codes, sorted)."""
    path: frozenset[str]
    """The links its GPUs' traffic crosses."""
    gpu_model: str


@dataclass(frozen=True, slots=True)
class JobActivity:
    """The jobs' GPUs on integer codes (a job, host or time is its position among the sorted names), per job
    what its GPUs did (:class:`_JobGpus`).

    It needs the GPU samples, jobs and topology only, so it can be made while the links are scored.
    """

    step_s: float
    """The grid's interval."""
    jobs: pd.Index
    hosts: pd.Index
    times: pd.DatetimeIndex
    """The time codes' times."""
    allocated: np.ndarray
    """(job, time code): allocated GPUs."""
    of_job: dict[int, _JobGpus]
    """Per job code with samples, by job name."""


def job_activity(telemetry: Telemetry, topology: Topology, allocations: Iterable[Allocation]) -> JobActivity:
    """What each job's GPUs did per interval (see :class:`JobActivity`)."""
    members = job_members(allocations)
    jobs = pd.Index(sorted(set(members["job"])))
    hosts = pd.Index(sorted(set(members["host"])))
    samples, times = _job_samples(telemetry.gpus, members, jobs, hosts, grid_step_ns(telemetry.step_s))
    if samples.empty:
        return JobActivity(telemetry.step_s, jobs, hosts, times, np.zeros((len(jobs), 0), dtype=int), {})
    member_job, member_host = jobs.get_indexer(members["job"]), hosts.get_indexer(members["host"])
    of_job = {}
    for job, span in _spans(samples["job"].to_numpy()).items():
        mine = member_job == job
        path = frozenset(topology.path_links(zip(members["host"][mine], members["gpu"][mine])))
        of_job[job] = _job_gpus(samples.iloc[span], np.unique(member_host[mine]), path, hosts, topology,
                                telemetry.gpus["model"])
    return JobActivity(telemetry.step_s, jobs, hosts, times,
                       _allocated(members, member_job, len(jobs), nanoseconds(times)), of_job)


def _job_gpus(samples: pd.DataFrame, hosts: np.ndarray, path: frozenset[str], host_names: pd.Index,
              topology: Topology, reported_models: pd.Series) -> _JobGpus:
    """One job's :class:`_JobGpus` from its samples (see :func:`_job_samples`)."""
    # Per job and by pandas, as always: pandas adds a group's values with compensation, or plainly where the
    # keys come sorted and without NaN, so grouping one job's rows as before keeps every figure to the bit.
    grouped = samples.groupby("time", sort=True)
    kernel = grouped["kernel"].mean()
    times = kernel.index.to_numpy()
    host_busy, reporting = _host_busy(samples, times, len(host_names))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an interval without a busy value: NaN
        # The job moves at the pace of the hosts that wait: a straggler's extra busy time is not progress.
        busy = np.nanmedian(host_busy, axis=1)
    return _JobGpus(times, kernel.to_numpy(), host_busy, reporting, busy,
                    grouped["power_w"].sum(min_count=1).to_numpy(), hosts, path,
                    _gpu_model(topology, list(host_names[hosts]), samples, reported_models))


def attribute(
    telemetry: Telemetry, congestion: Congestion, topology: Topology, allocations: Iterable[Allocation],
    settings: AttributionSettings = AttributionSettings(),
) -> Attribution:
    """Loss, its split into network and other causes, and the evidence, per job and interval
    (:func:`attribute_jobs` of the :func:`job_activity`)."""
    return attribute_jobs(job_activity(telemetry, topology, allocations), congestion, topology, settings)


def attribute_jobs(
    activity: JobActivity, congestion: Congestion, topology: Topology,
    settings: AttributionSettings = AttributionSettings(),
) -> Attribution:
    """Loss, its split into network and other causes, and the evidence, per job and interval.

    What the jobs share is laid out once on integer codes: the samples joined to the jobs
    (``activity``), the link scores as a (time, link) matrix, the pauses as a (time, host)
    matrix, the traffic rows by host and the allocated GPUs per job and time. Each job then
    cuts small arrays from those: scanning whole frames once per job made the cost grow with
    the data times the number of jobs.
    """
    if not activity.of_job:
        return Attribution(pd.DataFrame(columns=INTERVAL_COLUMNS), {})
    jobs, hosts, times = activity.jobs, activity.hosts, activity.times
    links = pd.Index(sorted(set().union(*(gpus.path for gpus in activity.of_job.values()))))
    stamps = nanoseconds(times)
    shared = _Shared(
        stamps, jobs, hosts, activity.allocated,
        _LinkScores.of(congestion.link_scores, stamps, links, hosts, topology),
        _Pauses.of(congestion.host_pause, times, hosts), _Traffic.of(congestion.host_traffic, hosts),
    )
    parts, models, never_clean = [], {}, []
    for job, gpus in activity.of_job.items():
        part, models[str(jobs[job])], clean_baseline = _attribute_job(
            gpus, job, np.sort(links.get_indexer(list(gpus.path))), shared, settings,
        )
        parts.append(part)
        if not clean_baseline:
            never_clean.append(str(jobs[job]))
    intervals = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    intervals["time"] = times[intervals["time"]]
    for name in ("pause_host", "straggler", "suspect_host"):
        intervals[name] = _names(hosts, intervals[name])
    intervals["dt"] = activity.step_s
    return Attribution(pd.DataFrame(intervals, columns=INTERVAL_COLUMNS), models, never_clean)


INTERVAL_COLUMNS = [
    "time", "job", "dt", "n_gpus", "busy", "kernel", "baseline", "noise", "loss_fraction", "idle_fraction",
    "network_fraction", "other_fraction", "other_cause", "path_score", "local_score", "fabric_score", "links",
    "pause_host", "pause_score", "straggler", "suspect_host", "tx_bytes", "rx_bytes", "power_w", "model",
]


def _job_samples(
    gpus: pd.DataFrame, members: pd.DataFrame, jobs: pd.Index, hosts: pd.Index, step_ns: int,
) -> tuple[pd.DataFrame, pd.DatetimeIndex]:
    """The GPU samples inside a job's span, each (job, GPU, time) once, by job and then in the order of ``gpus``.

    Columns job, host and time are codes (positions in ``jobs``, ``hosts`` and the sorted sample times
    returned with the frame), then busy, kernel, power_w and sample (the row of ``gpus``). A GPU can be
    in several jobs over time: each sample meets every member row of its GPU, in the jobs file's order,
    and keeps those whose span holds its time.
    """
    if gpus.empty or members.empty:
        return pd.DataFrame(), pd.DatetimeIndex([])
    time, stamps = grid_codes(nanoseconds(gpus["time"]), step_ns)
    times = utc_times(stamps)
    low, high = int(members["gpu"].min()), int(members["gpu"].max())
    width = high - low + 1
    member_gpu = hosts.get_indexer(members["host"]) * width + (members["gpu"].to_numpy() - low)
    by_gpu = np.argsort(member_gpu, kind="stable")
    host_codes, host_names = factorize_runs(gpus["host"], use_na_sentinel=False)
    host, gpu = hosts.get_indexer(host_names)[host_codes], gpus["gpu"].to_numpy()
    sample_gpu = np.where((host >= 0) & (gpu >= low) & (gpu <= high) & (time >= 0), host * width + gpu - low, -1)
    gpu_ids = np.arange(len(hosts) * width)
    sorted_gpus = member_gpu[by_gpu]
    sample, job = _member_samples(
        sample_gpu, time, stamps, by_gpu, np.searchsorted(sorted_gpus, gpu_ids, "left"),
        np.searchsorted(sorted_gpus, gpu_ids, "right"), _span_ends(members["start"]), _span_ends(members["end"]),
        jobs.get_indexer(members["job"]), len(jobs),
    )
    # A job may list a GPU twice over a time: keep one sample per (job, GPU, time), taken as one integer.
    cell = sample_gpu[sample] * len(times) + time[sample]
    if not all_distinct(cell, len(hosts) * width * len(times)):
        kept = np.flatnonzero(~pd.Series(cell * len(jobs) + job).duplicated())
        sample, job = sample[kept], job[kept]
    return pd.DataFrame({
        "job": job, "host": host[sample], "time": time[sample],
        "busy": gpus["busy"].to_numpy(dtype=float)[sample], "kernel": gpus["kernel"].to_numpy(dtype=float)[sample],
        "power_w": gpus["power_w"].to_numpy(dtype=float)[sample], "sample": sample,
    }), times


def _span_ends(times: pd.Series) -> np.ndarray:
    """Span ends as integer nanoseconds since the epoch (:func:`nanoseconds`); a missing one as the largest integer.

    A missing start then lets no time in (as ``NaT`` compares) and a missing end leaves the span open.
    """
    return np.where(times.isna().to_numpy(), np.iinfo(np.int64).max, nanoseconds(times))


@jit
def _member_samples(
    sample_gpu: np.ndarray, time: np.ndarray, stamps: np.ndarray, by_gpu: np.ndarray, first: np.ndarray,
    stop: np.ndarray, start_ns: np.ndarray, end_ns: np.ndarray, member_job: np.ndarray, n_jobs: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Each sample (its GPU's code, -1 for none) met with every member row of its GPU whose span holds its
    time: the samples and their jobs, by job, then in sample order and the members' order.

    ``by_gpu`` lists the member rows by GPU; a GPU's rows are ``by_gpu[first[gpu]:stop[gpu]]``. One pass
    counts each job's samples and a second places them, instead of gathering and sorting every pair.
    """
    counts = np.zeros(n_jobs, dtype=np.int64)
    next_slot = counts
    samples, jobs = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    for placing in (False, True):
        if placing:
            next_slot = np.cumsum(counts) - counts
            samples, jobs = np.empty(counts.sum(), dtype=np.int64), np.empty(counts.sum(), dtype=np.int64)
        for sample in range(len(sample_gpu)):
            gpu = sample_gpu[sample]
            if gpu < 0:
                continue
            for at in range(first[gpu], stop[gpu]):
                member = by_gpu[at]
                if start_ns[member] < stamps[time[sample]] <= end_ns[member]:
                    job = member_job[member]
                    if placing:
                        samples[next_slot[job]] = sample
                        jobs[next_slot[job]] = job
                        next_slot[job] += 1
                    else:
                        counts[job] += 1
    return samples, jobs


def _spans(codes: np.ndarray) -> dict[int, slice]:
    """Where each code's run is in sorted ``codes``."""
    starts = np.flatnonzero(np.diff(codes, prepend=-1))
    return {int(codes[start]): slice(int(start), int(stop)) for start, stop in zip(starts, [*starts[1:], len(codes)])}


def _allocated(members: pd.DataFrame, member_job: np.ndarray, n_jobs: int, stamps: np.ndarray) -> np.ndarray:
    """(job, time code): how many of the job's GPUs are allocated in the interval ending at that time
    (``stamps``: the times in nanoseconds).

    Every allocated GPU loses the time, also one whose sample is missing in the interval. Each member
    row adds one GPU from the first time after its start to the last time up to its end: +1 and -1
    steps per job, summed along the times.
    """
    first = np.searchsorted(stamps, _span_ends(members["start"]), "right")
    stop = np.maximum(np.searchsorted(stamps, _span_ends(members["end"]), "right"), first)
    steps = np.zeros((n_jobs, len(stamps) + 1), dtype=int)
    np.add.at(steps, (member_job, first), 1)
    np.add.at(steps, (member_job, stop), -1)
    return np.cumsum(steps, axis=1)


@dataclass(frozen=True, slots=True)
class _Traffic:
    """The hosts' traffic rows, found by host (code), for sums over a job's hosts."""

    values: pd.DataFrame
    """tx_bytes and rx_bytes, as in the frame."""
    stamps: np.ndarray
    """Each row's time in nanoseconds."""
    by_host: np.ndarray
    """The rows of the jobs' hosts, by host code and then in the frame's order ..."""
    first: np.ndarray
    """... where each host code's rows start there (one more entry: the end)."""

    @staticmethod
    def of(host_traffic: pd.DataFrame, hosts: pd.Index) -> _Traffic:
        host = hosts.get_indexer(host_traffic["host"])
        by_host = np.flatnonzero(host >= 0)
        by_host = by_host[np.argsort(host[by_host], kind="stable")]
        first = np.searchsorted(host[by_host], np.arange(len(hosts) + 1))
        return _Traffic(host_traffic[["tx_bytes", "rx_bytes"]], pd.DatetimeIndex(host_traffic["time"]).as_unit("ns")
                        .asi8, by_host, first)

    def of_job(self, hosts: np.ndarray, stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The bytes/s the hosts send and receive together at these times (NaN where none reports).

        The hosts' rows in the frame's order, grouped by their own times (also those between the samples'):
        pandas then adds them exactly as when one job's rows were cut from the frame and grouped by time.
        """
        rows = np.sort(np.concatenate([self.by_host[self.first[host]:self.first[host + 1]] for host in hosts]))
        sums = self.values.iloc[rows].groupby(self.stamps[rows], sort=True).sum(min_count=1).reindex(stamps)
        return sums["tx_bytes"].to_numpy(dtype=float), sums["rx_bytes"].to_numpy(dtype=float)


@dataclass(frozen=True, slots=True)
class _LinkScores:
    """``score``, ``local_score`` and the located score of the links on the jobs' paths as (time, link) matrices,
    NaN where no row.

    Links are codes in their sorted names, so a job's path sorted by code is sorted by name. The
    congestion scores hold one row per link and interval.
    """

    names: np.ndarray
    host: np.ndarray
    """Per link, the host whose NIC it faces (a code), -1 for a switch-to-switch link."""
    score: np.ndarray
    local: np.ndarray
    located: np.ndarray

    @staticmethod
    def of(scores: GridScores | FrameScores, stamps: np.ndarray, links: pd.Index, hosts: pd.Index,
           topology: Topology) -> _LinkScores:
        """The scores of ``links`` at these times (nanoseconds) as (time, link) matrices."""
        matrices = scores.matrices(stamps, links)
        host_of_link = {link: host for (host, _), link in topology.nic_links().items()}
        faced = pd.Index([host_of_link.get(name) for name in links], dtype=object)
        return _LinkScores(links.to_numpy(), hosts.get_indexer(faced), *matrices)

    def on_path(self, times: np.ndarray, path: np.ndarray) -> _PathScores:
        """The job's rows (time codes) of its path's links (codes, sorted)."""
        cells = np.ix_(times, path)
        return _PathScores(self.names[path], self.host[path], self.score[cells], self.local[cells],
                           self.located[cells])


@dataclass(frozen=True, slots=True)
class _PathScores:
    """One job's link scores: a row per interval, a column per link on its path (sorted by name)."""

    names: np.ndarray
    host: np.ndarray
    score: np.ndarray
    local: np.ndarray
    located: np.ndarray
    """Evidence that places the trouble on the link itself (``congestion.located_scores``)."""


@dataclass(frozen=True, slots=True)
class _Pauses:
    """The pauses hosts send, on (time, host) codes: per cell its worst row.

    Rows rank by score, worst first with missing scores last, then in the frame's order; per cell the
    best rank is kept. For a job and time the best of its hosts' cells is the row it reports, and
    whether a host pauses is whether its best row's score is congested.
    """

    best: np.ndarray
    """(time, host): the rank of the cell's worst row, one past the last rank where it has none."""
    score: np.ndarray
    """By rank, the row's score (NaN past the last)."""
    host: np.ndarray
    """By rank, the row's host (-1 past the last)."""

    @staticmethod
    def of(host_pause: pd.DataFrame, times: pd.DatetimeIndex, hosts: pd.Index) -> _Pauses:
        time, host = times.get_indexer(host_pause["time"]), hosts.get_indexer(host_pause["host"])
        kept = (time >= 0) & (host >= 0)
        time, host, score = time[kept], host[kept], host_pause["score"].to_numpy(dtype=float)[kept]
        missing = np.isnan(score)
        order = np.lexsort((np.arange(len(score)), -np.where(missing, 0.0, score), missing))
        rank = np.empty(len(order), dtype=np.intp)
        rank[order] = np.arange(len(order))
        best = np.full(len(times) * len(hosts), len(order), dtype=np.intp)
        np.minimum.at(best, time * len(hosts) + host, rank)
        return _Pauses(best.reshape(len(times), len(hosts)), np.append(score[order], np.nan),
                       np.append(host[order], -1))

    def of_job(self, times: np.ndarray, hosts: np.ndarray, congested: float) -> tuple[np.ndarray, ...]:
        """Per interval the worst pause score and its host (NaN, -1 where none), and which hosts pause."""
        cells = self.best[np.ix_(times, hosts)]
        worst = cells.min(axis=1)
        return self.score[worst], self.host[worst], self.score[cells] >= congested


@dataclass(frozen=True, slots=True)
class _Shared:
    """What every job's attribution reads, laid out once (see :func:`attribute`)."""

    stamps: np.ndarray
    """The time codes' times in nanoseconds."""
    jobs: pd.Index
    """The job codes' names."""
    hosts: pd.Index
    """The host codes' names."""
    allocated: np.ndarray
    """(job, time code): allocated GPUs."""
    scores: _LinkScores
    pauses: _Pauses
    traffic: _Traffic


def _attribute_job(
    gpus: _JobGpus, job: int, path: np.ndarray, shared: _Shared, settings: AttributionSettings,
) -> tuple[dict[str, np.ndarray], IdleLossModel, bool]:
    """One job's intervals as columns, from what its GPUs did and its path's links (codes, sorted); times and
    hosts in the columns as codes (-1 for none). Also its idle-to-loss model, and whether its path was clean
    in enough intervals in which its GPUs worked (False: see ``Attribution.never_clean``)."""
    times, kernel, busy, hosts, host_busy = gpus.times, gpus.kernel, gpus.busy, gpus.hosts, gpus.host_busy
    pause_score, pause_host, pausing = shared.pauses.of_job(times, hosts, settings.congested)
    pause_score = np.where(np.isnan(pause_score), 0.0, pause_score)
    path = shared.scores.on_path(times, path)
    path_score, local_score, links = _path_state(path, settings)
    tx, rx = shared.traffic.of_job(hosts, shared.stamps[times])

    clean = (path_score < settings.clean) & (pause_score < settings.clean)
    # Utilization sits at its top while the host feeds the GPUs (NCCL's waits included) and drops only
    # when it does not: its healthy level is the top mode, and only fed intervals define the busy baseline,
    # so a job that spent most of its clean time in an input stall is not measured against the stall.
    kernel_baseline = _baseline(kernel, clean, settings, near_top=settings.fed_share)
    fed = np.isnan(kernel) | (kernel >= settings.fed_share * kernel_baseline) if kernel_baseline > 0 \
        else np.ones(len(kernel), dtype=bool)
    baseline = _baseline(busy, clean & fed, settings)
    working = _working(busy, settings)
    clean_baseline = (working & (path_score < settings.clean)).sum() >= settings.min_baseline_intervals \
        or working.sum() < settings.min_baseline_intervals
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = np.clip(1.0 - busy / baseline, 0.0, 1.0) if baseline > 0 else np.full(len(busy), np.nan)
        idle = np.clip(1.0 - kernel / kernel_baseline, 0.0, 1.0) if kernel_baseline > 0 \
            else np.full(len(kernel), np.nan)

    # Each host's healthy level from the intervals the baseline uses: a checkpoint's idle GPUs are on a clean
    # path too, and where the path is seldom clean while the job works they would be most of the level.
    straggling, straggler_column = _stragglers(host_busy, clean & fed & working, settings)
    straggler = np.full(len(busy), -1)
    straggler[straggling] = gpus.reporting[straggler_column]
    suspects = pausing.copy()
    suspects[straggling, np.searchsorted(hosts, straggler[straggling])] = True
    fabric_score = _fabric_score(path, hosts, suspects)
    suspect_host = np.where(pause_score >= settings.congested, pause_host, straggler)

    noise = _noise(busy, baseline, settings)
    # GPUs idle while their kernels still run (a hung collective spins) lost time to no host-side stall: in the
    # fit they would make any idle share look like a stall (where the path is never clean, they are most of it).
    with np.errstate(invalid="ignore"):
        spinning = (busy < settings.idle_fraction * baseline) & (idle < settings.no_kernel_share)
    model = idle_loss_model(pd.DataFrame({"idle_fraction": idle, "loss_fraction": loss}), pd.Series(clean & ~spinning),
                            settings)
    network, other, cause = _split(
        loss, idle, busy, baseline, noise, tx, rx, path_score, fabric_score, suspect_host >= 0, model, len(hosts),
        settings,
    )
    n = len(times)
    return {
        "time": times, "job": np.full(n, str(shared.jobs[job]), dtype=object), "n_gpus": shared.allocated[job, times],
        "busy": busy, "kernel": kernel, "baseline": np.full(n, baseline), "noise": np.full(n, noise),
        "loss_fraction": loss, "idle_fraction": idle, "network_fraction": network, "other_fraction": other,
        "other_cause": cause, "path_score": path_score, "local_score": local_score, "fabric_score": fabric_score,
        "links": links, "pause_host": pause_host, "pause_score": pause_score, "straggler": straggler,
        "suspect_host": suspect_host, "tx_bytes": tx, "rx_bytes": rx,
        "power_w": gpus.power_w, "model": np.full(n, gpus.gpu_model, dtype=object),
    }, model, clean_baseline


def _host_busy(samples: pd.DataFrame, times: np.ndarray, n_hosts: int) -> tuple[np.ndarray, np.ndarray]:
    """Each reporting host's mean busy signal per interval, as an (interval, host) matrix (NaN where a host has
    no sample), and those hosts (codes, sorted)."""
    cell = samples["time"].to_numpy() * n_hosts + samples["host"].to_numpy()
    means = samples["busy"].groupby(cell, sort=True).mean()  # by (time, host), as pandas groups the pair
    cells = means.index.to_numpy()
    reporting, column = np.unique(cells % n_hosts, return_inverse=True)
    matrix = np.full((len(times), len(reporting)), np.nan)
    matrix[np.searchsorted(times, cells // n_hosts), column] = means.to_numpy()
    return matrix, reporting


def _names(hosts: pd.Index, codes: np.ndarray) -> np.ndarray:
    """Host names for codes, NaN for -1."""
    names = hosts.to_numpy(dtype=object)[codes]
    names[codes < 0] = np.nan
    return names


def _gpu_model(topology: Topology, hosts: list[str], samples: pd.DataFrame, reported: pd.Series) -> str:
    """The job's GPU model: the topology's, else the first its GPUs report (earliest time, then sample order)."""
    for host in hosts:
        if host in topology.hosts and topology.hosts[host].gpu_model not in ("", "default"):
            return topology.hosts[host].gpu_model
    names = reported.iloc[samples["sample"].to_numpy()]
    known = np.flatnonzero(names.notna().to_numpy())
    return str(names.iloc[known[np.argmin(samples["time"].to_numpy()[known])]]) if len(known) else ""


def _path_state(path: _PathScores, settings: AttributionSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per interval: the worst congestion on the job's path, its worst local evidence, and the links to blame,
    worst first (a tuple of names).

    A link is blamed when it is congested, or when the evidence places trouble on it (``located``: local
    evidence of its own, or a NIC paused by its own leaf port) on a congested path. Links so located rank
    before links that only see congestion pass by (ECN marks and CNPs at a host's NIC say the path is
    congested, not where): the uplink that drops is named before the host ports whose NICs count the
    marks. Among those, a link congested as usual for this job (its score within ``chronic_ratio`` of its
    median over the job's intervals, a median that is congested itself) ranks after links whose trouble is
    new: an uplink that always drops a little is not what a PFC storm's episode is about.
    """
    path_score = np.fmax.reduce(path.score, axis=1, initial=np.nan)
    local_score = np.fmax.reduce(path.local, axis=1, initial=np.nan)
    links = np.empty(len(path_score), dtype=object)
    links.fill(())
    congested = np.flatnonzero(path_score >= settings.congested)
    score, local, located = path.score[congested], path.local[congested], path.located[congested] >= settings.located
    row, column = np.nonzero((score >= settings.congested) | located)
    if len(row):
        score, local, located = score[row, column], local[row, column], located[row, column]
        blamed = np.unique(column)
        usual = np.full(path.score.shape[1], np.nan)
        usual[blamed] = _column_medians(path.score[:, blamed])
        usual = usual[column]
        chronic = (usual >= settings.congested) & (score <= settings.chronic_ratio * usual)
        # Located before passing by; new trouble before usual; then worst local evidence, then worst score,
        # missing ones last; then by name (the columns' order).
        order = np.lexsort((column, -np.where(np.isnan(score), 0.0, score), np.isnan(score),
                            -np.where(np.isnan(local), 0.0, local), np.isnan(local), chronic, ~located, row))
        row, column = row[order], column[order]
        starts = np.flatnonzero(np.diff(row, prepend=-1))
        for start, blamed in zip(starts, np.split(column, starts[1:])):
            links[congested[row[start]]] = tuple(path.names[blamed])
    return np.where(np.isnan(path_score), 0.0, path_score), np.where(np.isnan(local_score), 0.0, local_score), links


def _column_medians(matrix: np.ndarray) -> np.ndarray:
    """``np.nanmedian(matrix, axis=0)`` from one sort of all columns (NaN where a column has no value)."""
    ordered = np.sort(matrix, axis=0)  # NaN last
    counts = np.count_nonzero(~np.isnan(matrix), axis=0)
    known = np.maximum(counts, 1)  # a column without values: any row, NaN below
    columns = np.arange(matrix.shape[1])
    middle = (ordered[(known - 1) // 2, columns] + ordered[known // 2, columns]) / 2
    return np.where(counts > 0, middle, np.nan)


def _fabric_score(path: _PathScores, hosts: np.ndarray, suspects: np.ndarray) -> np.ndarray:
    """Per interval: the worst local evidence on the path, leaving out the links of suspect hosts.

    A leaf port that drops or marks toward a receiver that cannot keep up (a
    host sending pauses, or a straggler) shows the receiver's trouble, not the
    fabric's; what is left says whether the fabric is in trouble on its own.
    ``suspects`` is (interval, host of ``hosts``).
    """
    column = sorted_positions(hosts, path.host)
    theirs = np.zeros(path.local.shape, dtype=bool)
    theirs[:, column >= 0] = suspects[:, column[column >= 0]]
    worst = np.fmax.reduce(np.where(theirs, np.nan, path.local), axis=1, initial=np.nan)
    return np.where(np.isnan(worst), 0.0, worst)


def _stragglers(host_busy: np.ndarray, clean: np.ndarray, settings: AttributionSettings) -> tuple[np.ndarray, ...]:
    """(interval, column) of ``host_busy`` where one host computes while the job's other hosts wait for it.

    Each host is compared with its own healthy level, so a job whose hosts
    always differ (pipeline stages) does not look like it has stragglers.
    """
    if host_busy.shape[1] < 2:
        return np.array([], dtype=int), np.array([], dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a host with no sample at a clean time: no level
        levels = np.nanmedian(host_busy[clean], axis=0) if clean.sum() >= settings.min_baseline_intervals \
            else np.array([_top(column) for column in host_busy.T])
    ratio = host_busy / np.where(levels > 0, levels, np.nan)
    reported = np.flatnonzero(np.isfinite(ratio).sum(axis=1) >= 2)
    ratio = ratio[reported]
    top = np.nanargmax(ratio, axis=1)
    rows = np.arange(len(ratio))
    best = ratio[rows, top]
    others = ratio.copy()
    others[rows, top] = np.nan
    rest = np.nanmedian(others, axis=1)
    waiting = (best - rest >= settings.straggler_gap) & (rest <= 1.0 - settings.straggler_gap / 2)
    return reported[waiting], top[waiting]


def _top(values: np.ndarray) -> float:
    """The 90th percentile of the known values (NaN if none), as pandas' ``quantile`` computes it."""
    known = values[~np.isnan(values)]
    return float(np.quantile(known, 0.9)) if len(known) else float("nan")


def _working(values: np.ndarray, settings: AttributionSettings) -> np.ndarray:
    """The intervals in which the GPUs worked: not idle against the signal's 90th percentile."""
    return values >= settings.idle_fraction * _top(values)


def _baseline(
    values: np.ndarray, clean: np.ndarray, settings: AttributionSettings, near_top: float | None = None,
) -> float:
    """A healthy level: the median over clean intervals that are not idle (else a high quantile).

    With ``near_top``, only clean intervals within that share of the clean intervals' 90th percentile
    count: for a signal whose healthy level is its top mode (utilization), however long the dips last.
    """
    high = _top(values)
    if not high > 0:
        return float("nan")
    usable = clean & _working(values, settings)
    if near_top is not None and usable.sum() >= settings.min_baseline_intervals:
        usable &= values >= near_top * _top(values[usable])
    if usable.sum() >= settings.min_baseline_intervals:
        return float(np.median(values[usable]))
    return high


def _noise(busy: np.ndarray, baseline: float, settings: AttributionSettings) -> float:
    """The smallest loss share that is not noise for this job.

    A few standard deviations of its progress rate from one interval to the
    next, estimated from the median absolute difference of successive
    intervals: robust to the level shifts that events cause, which only show at
    their edges.
    """
    rate = busy / baseline if baseline > 0 else np.array([])
    rate = rate[~np.isnan(rate)]
    if len(rate) < settings.min_baseline_intervals:
        return settings.min_loss_fraction * 6
    spread = 1.4826 * float(np.median(np.abs(np.diff(rate)))) / np.sqrt(2)
    return max(settings.min_loss_fraction, settings.noise_sigmas * spread)


def idle_loss_model(frame: pd.DataFrame, clean: pd.Series, settings: AttributionSettings) -> IdleLossModel:
    """Fit loss ~ idle share over the job's clean-path intervals (Huber); the identity if it cannot."""
    usable = clean & frame["idle_fraction"].notna() & frame["loss_fraction"].notna()
    idle = frame.loc[usable, "idle_fraction"].to_numpy(dtype=float)
    loss = frame.loc[usable, "loss_fraction"].to_numpy(dtype=float)
    if len(idle) < settings.min_fit_intervals or (idle >= 0.2).sum() < 2:
        return IDENTITY
    # Started at the identity, the map the fit is expected to be near, with the spread of its residuals as the
    # scale: the same optimum as from scikit-learn's start (zero coefficients, scale 1) in a third fewer steps.
    fit = HuberRegressor(epsilon=1.35, alpha=0.0, max_iter=500, warm_start=True)
    fit.coef_, fit.intercept_, fit.scale_ = np.array([1.0]), 0.0, _spread(loss - idle)
    # A fit of a few hundred points is all thread start-up: on 2 cores BLAS threads made it 30x slower.
    with _thread_pools().limit(limits=1, user_api="blas"):
        fit.fit(idle.reshape(-1, 1), loss)
    slope = float(fit.coef_[0])
    if not 0.5 <= slope <= 2.0:
        return IDENTITY  # a fit this far from one instrument tracking the other is not to be trusted
    return IdleLossModel(float(fit.intercept_), slope, True)


def _spread(residuals: np.ndarray) -> float:
    """A robust standard deviation (1.4826 median absolute deviations), at least 0.001 (a tenth of a percent)."""
    deviation = np.median(np.abs(residuals - np.median(residuals)))
    return max(1.4826 * float(deviation), 1e-3)


@cache
def _thread_pools() -> ThreadpoolController:
    """The process's thread pools, looked up once: a lookup costs more than a small fit."""
    return ThreadpoolController()


def _split(
    loss: np.ndarray, idle_share: np.ndarray, busy: np.ndarray, baseline: float, noise: float, tx: np.ndarray,
    rx: np.ndarray, path_score: np.ndarray, fabric_score: np.ndarray, suspected: np.ndarray, model: IdleLossModel,
    n_hosts: int, settings: AttributionSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One job's network_fraction, other_fraction and other_cause per interval."""
    n = len(loss)
    loss = np.nan_to_num(loss)
    tx, rx = np.nan_to_num(tx), np.nan_to_num(rx)
    lossy = loss >= noise
    idle = busy < settings.idle_fraction * baseline
    traffic = tx + rx
    healthy_traffic = np.median(traffic[~lossy]) if (~lossy).any() else np.nan
    quiet = traffic < settings.quiet_traffic_fraction * healthy_traffic if healthy_traffic > 0 \
        else np.ones(n, dtype=bool)
    no_kernel = np.nan_to_num(idle_share) >= settings.no_kernel_share
    sending = tx >= settings.writing_bytes_per_host * n_hosts
    writing = ((tx > settings.checkpoint_asymmetry * rx) | no_kernel) & sending

    kernel_known = np.isfinite(idle_share)
    host_side = np.where(kernel_known, np.clip(model.host_side(np.nan_to_num(idle_share)), 0.0, loss),
                         np.where(idle & writing, loss, 0.0))
    waiting = loss - host_side
    # Hung: no compute, no traffic, for long; with utilization known, kernels still "run" (a collective spins).
    silent = idle & quiet & ~writing & ~(kernel_known & (host_side > waiting))
    long_silence = silent & (_run_lengths(silent) >= settings.hung_intervals)
    host_side = np.where(~kernel_known & idle & quiet & ~long_silence, loss, host_side)
    waiting = loss - host_side

    # GPUs with (almost) no kernel to run were not waiting in a collective: whatever the path, not network.
    waited_on_path = (path_score >= settings.congested) & ~quiet & ~long_silence & ~no_kernel
    # A host of the job that pauses or straggles explains the waiting, unless the fabric has trouble of its own;
    # then the fabric is charged what that much trouble costs the job without a suspect host, the host the rest.
    fabric_trouble = fabric_score >= settings.congested
    network = np.where(waited_on_path & (~suspected | fabric_trouble), waiting, 0.0)
    shared = waited_on_path & suspected & fabric_trouble
    if shared.any():
        network[shared] = np.minimum(waiting[shared], _fabric_cost(
            waiting, fabric_score, waited_on_path & ~suspected, np.flatnonzero(shared), settings))
    network = np.where(_beside_loud(network, noise), network, 0.0)
    other = loss - network

    host_side_dominant = host_side >= waiting
    cause = np.full(n, UNKNOWN, dtype=object)
    cause[host_side_dominant] = INPUT_STALL
    cause[host_side_dominant & writing] = CHECKPOINT
    cause[long_silence] = HUNG
    cause[suspected & ~host_side_dominant & ~long_silence] = SLOW_HOST
    cause[other < noise] = ""
    return network, np.where(cause != "", other, 0.0), cause


def _beside_loud(share: np.ndarray, noise: float) -> np.ndarray:
    """Where ``share`` counts: at least ``noise``, or at least half of it in a run of such intervals that
    reaches one at least ``noise`` (hysteresis: a degradation's early, quieter intervals join its loud ones)."""
    quiet = share >= noise / 2
    run_start = quiet & ~np.r_[False, quiet[:-1]]
    if not run_start.any():
        return quiet
    run = np.cumsum(run_start) - 1
    has_loud = np.zeros(int(run_start.sum()), dtype=bool)
    has_loud[run[share >= noise]] = True
    return quiet & has_loud[np.maximum(run, 0)]


def _fabric_cost(
    waiting: np.ndarray, fabric_score: np.ndarray, reference: np.ndarray, at: np.ndarray,
    settings: AttributionSettings,
) -> np.ndarray:
    """What the fabric's own trouble cost the job at intervals ``at``, where a suspect host waits as well.

    The median waiting share of ``reference`` intervals (congested, no suspect host) whose fabric
    score lies within ``shared_blame_ratio`` of the interval's: a chronically congested uplink
    keeps costing what it cost before a host turned slow, and the host's own share is not the
    fabric's. With too few such intervals the fabric's cost cannot be told apart, and the whole
    waiting share stays the fabric's (infinity here).
    """
    order = np.flatnonzero(reference)
    order = order[np.argsort(fabric_score[order], kind="stable")]
    scores, waited = fabric_score[order], waiting[order]
    low = np.searchsorted(scores, fabric_score[at] / settings.shared_blame_ratio, side="left")
    high = np.searchsorted(scores, fabric_score[at] * settings.shared_blame_ratio, side="right")
    return np.array([np.median(waited[a:b]) if b - a >= settings.min_baseline_intervals else np.inf
                     for a, b in zip(low, high)])


def _run_lengths(flags: np.ndarray) -> np.ndarray:
    """For each True, the length of the run of Trues it belongs to (0 for False)."""
    flags = np.asarray(flags, dtype=bool)
    if not flags.any():
        return np.zeros(len(flags), dtype=int)
    edges = np.diff(np.concatenate([[0], flags.astype(int), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    lengths = np.zeros(len(flags), dtype=int)
    for start, end in zip(starts, ends):
        lengths[start:end] = end - start
    return lengths


def loss_rows(intervals: pd.DataFrame) -> pd.DataFrame:
    """The intervals' losses in long form: one row per job, interval and cause that lost GPU time.

    Columns: time, job, cause, fraction, gpu_seconds_lost, energy_joules, links
    (network rows only), plus the interval's evidence columns.
    """
    keep = ["time", "job", "dt", "n_gpus", "busy", "baseline", "path_score", "suspect_host", "pause_score",
            "tx_bytes", "rx_bytes", "model", "power_w", "loss_fraction"]
    network = intervals[intervals["network_fraction"] > 0]
    other = intervals[intervals["other_fraction"] > 0]
    parts = [
        network[keep].assign(cause=NETWORK, fraction=network["network_fraction"], links=network["links"]),
        other[keep].assign(cause=other["other_cause"], fraction=other["other_fraction"],
                           links=[() for _ in range(len(other))]),
    ]
    rows = pd.concat(parts, ignore_index=True)
    rows["gpu_seconds_lost"] = rows["n_gpus"] * rows["dt"] * rows["fraction"]
    rows["energy_joules"] = rows["power_w"].fillna(0.0) * rows["dt"] * rows["fraction"]
    return rows.sort_values(["job", "time", "cause"]).reset_index(drop=True)
