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
port facing a receiver that cannot keep up are the receiver's doing. Without
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
host, a hang: loss without idle time) from bending it, as they would bend least
squares. With too little idle time to fit, the identity (``b = 1``) is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd
from sklearn.linear_model import HuberRegressor
from threadpoolctl import threadpool_limits

from detector.congestion import Congestion
from detector.jobs import Allocation
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


def job_members(allocations: Iterable[Allocation]) -> pd.DataFrame:
    """One row per (job, host, GPU, span) of the jobs file."""
    rows = [(a.job, a.host, gpu, pd.Timestamp(a.start), pd.Timestamp(a.end) if a.end else pd.NaT)
            for a in allocations for gpu in a.gpus]
    frame = pd.DataFrame(rows, columns=["job", "host", "gpu", "start", "end"])
    for column in ("start", "end"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def attribute(
    telemetry: Telemetry, congestion: Congestion, topology: Topology, allocations: Iterable[Allocation],
    settings: AttributionSettings = AttributionSettings(),
) -> Attribution:
    """Loss, its split into network and other causes, and the evidence, per job and interval."""
    members = job_members(allocations)
    samples = _job_samples(telemetry.gpus, members)
    if samples.empty:
        return Attribution(pd.DataFrame(columns=INTERVAL_COLUMNS), {})
    frames, models = [], {}
    # Per job, the link scores on its path: links as integer codes, so a job's selection is no string search.
    link_codes, link_names = pd.factorize(congestion.scores["link"])
    link_index = pd.Index(link_names)
    for job, job_samples in samples.groupby("job", sort=True):
        mine = members[members["job"] == job]
        gpus = list(zip(mine["host"], mine["gpu"]))
        path = link_index.get_indexer(list(topology.path_links(gpus)))
        on_path = congestion.scores[np.isin(link_codes, path[path >= 0])]
        frame, model = _attribute_job(str(job), job_samples, gpus, on_path, congestion, topology, settings)
        # Every allocated GPU loses the time, also those whose sample is missing in an interval.
        frame["n_gpus"] = _allocated(mine, frame["time"])
        frames.append(frame)
        models[str(job)] = model
    intervals = pd.concat(frames, ignore_index=True)
    intervals["dt"] = telemetry.step_s
    return Attribution(intervals[INTERVAL_COLUMNS], models)


INTERVAL_COLUMNS = [
    "time", "job", "dt", "n_gpus", "busy", "kernel", "baseline", "noise", "loss_fraction", "idle_fraction",
    "network_fraction", "other_fraction", "other_cause", "path_score", "local_score", "fabric_score", "links",
    "pause_host", "pause_score", "straggler", "suspect_host", "tx_bytes", "rx_bytes", "power_w", "model",
]


def _job_samples(gpus: pd.DataFrame, members: pd.DataFrame) -> pd.DataFrame:
    if gpus.empty or members.empty:
        return pd.DataFrame()
    joined = gpus.merge(members, on=["host", "gpu"], how="inner")
    inside = (joined["time"] > joined["start"]) & (joined["end"].isna() | (joined["time"] <= joined["end"]))
    return joined.loc[inside].drop(columns=["start", "end"]).drop_duplicates(["job", "host", "gpu", "time"])


def _allocated(members: pd.DataFrame, times: pd.Series) -> np.ndarray:
    """How many of the job's GPUs are allocated in the interval ending at each time."""
    count = np.zeros(len(times), dtype=int)
    for (start, end), gpus in members.groupby(["start", "end"], dropna=False).size().items():
        inside = (times > start) & (times <= end) if not pd.isna(end) else times > start
        count += np.where(inside.to_numpy(), gpus, 0)
    return count


def _attribute_job(
    job: str, samples: pd.DataFrame, gpus: list[tuple[str, int]], on_path: pd.DataFrame, congestion: Congestion,
    topology: Topology, settings: AttributionSettings,
) -> tuple[pd.DataFrame, IdleLossModel]:
    """One job's intervals; ``on_path`` holds the link scores of the links on its path."""
    grouped = samples.groupby("time")
    host_busy = samples.groupby(["time", "host"])["busy"].mean().unstack("host")
    frame = pd.DataFrame({
        "n_gpus": grouped["gpu"].size(),
        # The job moves at the pace of the hosts that wait: a straggler's extra busy time is not progress.
        "busy": host_busy.median(axis=1),
        "kernel": grouped["kernel"].mean(),
        "power_w": grouped["power_w"].sum(min_count=1),
        "model": grouped["model"].first(),
    })
    hosts = sorted({host for host, _ in gpus})

    frame = frame.join(_own_pause(congestion.host_pause, hosts), how="left")
    frame["pause_score"] = frame["pause_score"].fillna(0.0)
    frame = frame.join(_path_state(on_path, settings), how="left")
    for column in ("path_score", "local_score"):
        frame[column] = frame[column].fillna(0.0)
    frame["links"] = frame["links"].apply(lambda value: value if isinstance(value, tuple) else ())
    traffic = congestion.host_traffic
    traffic = traffic[traffic["host"].isin(hosts)].groupby("time")[["tx_bytes", "rx_bytes"]].sum(min_count=1)
    frame = frame.join(traffic, how="left")
    frame["model"] = _gpu_model(topology, hosts, frame["model"])

    clean = (frame["path_score"] < settings.clean) & (frame["pause_score"] < settings.clean)
    # Utilization sits at its top while the host feeds the GPUs (NCCL's waits included) and drops only
    # when it does not: its healthy level is the top mode, and only fed intervals define the busy baseline,
    # so a job that spent most of its clean time in an input stall is not measured against the stall.
    kernel_baseline = _baseline(frame["kernel"], clean, settings, near_top=settings.fed_share)
    fed = frame["kernel"].isna() | (frame["kernel"] >= settings.fed_share * kernel_baseline) \
        if kernel_baseline > 0 else pd.Series(True, index=frame.index)
    baseline = _baseline(frame["busy"], clean & fed, settings)
    frame["baseline"] = baseline
    busy = frame["busy"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["loss_fraction"] = np.clip(1.0 - busy / baseline, 0.0, 1.0) if baseline > 0 else np.nan
        frame["idle_fraction"] = np.clip(1.0 - frame["kernel"].to_numpy(dtype=float) / kernel_baseline, 0.0, 1.0) \
            if kernel_baseline > 0 else np.nan

    pausing = congestion.host_pause.loc[congestion.host_pause["host"].isin(hosts)
                                        & (congestion.host_pause["score"] >= settings.congested), ["time", "host"]]
    stragglers = _stragglers(host_busy, clean, settings)
    suspects = pd.concat([pausing, stragglers], ignore_index=True).drop_duplicates()
    frame["fabric_score"] = _fabric_score(on_path, suspects, topology).reindex(frame.index).fillna(0.0)
    frame["straggler"] = stragglers.set_index("time")["host"].reindex(frame.index)
    frame["suspect_host"] = frame["pause_host"].where(frame["pause_score"] >= settings.congested, frame["straggler"])

    frame["noise"] = _noise(frame["busy"], baseline, settings)
    model = idle_loss_model(frame, clean, settings)
    _split(frame, model, len(hosts), settings)
    frame.index.name = "time"
    frame = frame.reset_index()
    frame.insert(1, "job", job)
    return frame, model


def _gpu_model(topology: Topology, hosts: list[str], names: pd.Series) -> str:
    """The job's GPU model: the topology's, else the GPUs' own name."""
    for host in hosts:
        if host in topology.hosts and topology.hosts[host].gpu_model not in ("", "default"):
            return topology.hosts[host].gpu_model
    known = names.dropna()
    return str(known.iloc[0]) if not known.empty else ""


def _path_state(on_path: pd.DataFrame, settings: AttributionSettings) -> pd.DataFrame:
    """Per interval: the worst congestion on the job's path and the links to blame, worst first.

    A link is blamed when it is congested, or saturated (local evidence of its
    own) on a congested path; links with local evidence rank before links that
    only see congestion from their end.
    """
    if on_path.empty:
        return pd.DataFrame(columns=["path_score", "local_score", "links"])
    state = on_path.groupby("time").agg(path_score=("score", "max"), local_score=("local_score", "max"))
    congested_times = state.index[state["path_score"] >= settings.congested]
    candidates = on_path[on_path["time"].isin(congested_times)
                         & ((on_path["score"] >= settings.congested) | (on_path["local_score"] >= settings.clean))]
    candidates = candidates.sort_values(["time", "local_score", "score", "link"], ascending=[True, False, False, True])
    state["links"] = candidates.groupby("time")["link"].agg(tuple)
    return state


def _fabric_score(on_path: pd.DataFrame, suspects: pd.DataFrame, topology: Topology) -> pd.Series:
    """Per interval: the worst local evidence on the path, leaving out the links of suspect hosts.

    A leaf port that drops or marks toward a receiver that cannot keep up (a
    host sending pauses, or a straggler) shows the receiver's trouble, not the
    fabric's; what is left says whether the fabric is in trouble on its own.
    """
    if on_path.empty:
        return pd.Series(dtype=float)
    host_of_link = {link: host for (host, _), link in topology.nic_links().items()}
    suspected = pd.MultiIndex.from_frame(suspects[["time", "host"]]) if not suspects.empty \
        else pd.MultiIndex.from_tuples([], names=["time", "host"])
    theirs = pd.MultiIndex.from_arrays([on_path["time"], on_path["link"].map(host_of_link)]).isin(suspected)
    return on_path.loc[~theirs].groupby("time")["local_score"].max()


def _stragglers(host_busy: pd.DataFrame, clean: pd.Series, settings: AttributionSettings) -> pd.DataFrame:
    """(time, host) where one host computes while the job's other hosts wait for it.

    Each host is compared with its own healthy level, so a job whose hosts
    always differ (pipeline stages) does not look like it has stragglers.
    """
    if host_busy.shape[1] < 2:
        return pd.DataFrame(columns=["time", "host"])
    usable = clean.reindex(host_busy.index, fill_value=False)
    levels = host_busy[usable].median() if usable.sum() >= settings.min_baseline_intervals else host_busy.quantile(0.9)
    ratio = (host_busy / levels.where(levels > 0)).to_numpy(dtype=float)
    reported = np.isfinite(ratio).sum(axis=1) >= 2
    ratio, times = ratio[reported], host_busy.index[reported]
    top = np.nanargmax(ratio, axis=1)
    rows = np.arange(len(ratio))
    best = ratio[rows, top]
    others = ratio.copy()
    others[rows, top] = np.nan
    rest = np.nanmedian(others, axis=1)
    waiting = (best - rest >= settings.straggler_gap) & (rest <= 1.0 - settings.straggler_gap / 2)
    return pd.DataFrame({"time": times[waiting], "host": host_busy.columns.to_numpy()[top[waiting]]})


def _own_pause(host_pause: pd.DataFrame, hosts: list[str]) -> pd.DataFrame:
    own = host_pause[host_pause["host"].isin(hosts)]
    if own.empty:
        return pd.DataFrame(columns=["pause_score", "pause_host"])
    worst = own.sort_values("score", ascending=False, kind="stable").drop_duplicates("time")
    return worst.set_index("time")[["score", "host"]].rename(columns={"score": "pause_score", "host": "pause_host"})


def _baseline(
    values: pd.Series, clean: pd.Series, settings: AttributionSettings, near_top: float | None = None,
) -> float:
    """A healthy level: the median over clean intervals that are not idle (else a high quantile).

    With ``near_top``, only clean intervals within that share of the clean intervals' 90th percentile
    count: for a signal whose healthy level is its top mode (utilization), however long the dips last.
    """
    if values.notna().sum() == 0:
        return float("nan")
    high = values.quantile(0.9)
    if not high > 0:
        return float("nan")
    usable = clean & (values >= settings.idle_fraction * high)
    if near_top is not None and usable.sum() >= settings.min_baseline_intervals:
        usable &= values >= near_top * values[usable].quantile(0.9)
    if usable.sum() >= settings.min_baseline_intervals:
        return float(values[usable].median())
    return float(high)


def _noise(busy: pd.Series, baseline: float, settings: AttributionSettings) -> float:
    """The smallest loss share that is not noise for this job.

    A few standard deviations of its progress rate from one interval to the
    next, estimated from the median absolute difference of successive
    intervals: robust to the level shifts that events cause, which only show at
    their edges.
    """
    rate = (busy / baseline).dropna().to_numpy(dtype=float) if baseline > 0 else np.array([])
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
    # A fit of a few hundred points is all thread start-up: on 2 cores BLAS threads made it 30x slower.
    with threadpool_limits(limits=1, user_api="blas"):
        fit = HuberRegressor(epsilon=1.35, alpha=0.0, max_iter=500).fit(idle.reshape(-1, 1), loss)
    slope = float(fit.coef_[0])
    if not 0.5 <= slope <= 2.0:
        return IDENTITY  # a fit this far from one instrument tracking the other is not to be trusted
    return IdleLossModel(float(fit.intercept_), slope, True)


def _split(frame: pd.DataFrame, model: IdleLossModel, n_hosts: int, settings: AttributionSettings) -> None:
    """Add network_fraction, other_fraction and other_cause columns."""
    n = len(frame)
    loss = np.nan_to_num(frame["loss_fraction"].to_numpy(dtype=float))
    busy = frame["busy"].to_numpy(dtype=float)
    baseline = float(frame["baseline"].iloc[0]) if n else float("nan")
    idle_share = frame["idle_fraction"].to_numpy(dtype=float)
    tx = np.nan_to_num(frame["tx_bytes"].to_numpy(dtype=float)) if "tx_bytes" in frame else np.zeros(n)
    rx = np.nan_to_num(frame["rx_bytes"].to_numpy(dtype=float)) if "rx_bytes" in frame else np.zeros(n)

    noise = float(frame["noise"].iloc[0]) if n else settings.min_loss_fraction
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

    # A host of the job that pauses or straggles explains the waiting, unless the fabric has trouble of its own.
    host_to_blame = frame["suspect_host"].notna().to_numpy() \
        & (frame["fabric_score"].to_numpy(dtype=float) < settings.congested)
    congested = frame["path_score"].to_numpy(dtype=float) >= settings.congested
    # GPUs with (almost) no kernel to run were not waiting in a collective: whatever the path, not network.
    network = np.where(congested & ~host_to_blame & ~quiet & ~long_silence & ~no_kernel, waiting, 0.0)
    network = np.where(network >= noise, network, 0.0)
    other = loss - network

    host_side_dominant = host_side >= waiting
    cause = np.full(n, UNKNOWN, dtype=object)
    cause[host_side_dominant] = INPUT_STALL
    cause[host_side_dominant & writing] = CHECKPOINT
    cause[long_silence] = HUNG
    cause[frame["suspect_host"].notna().to_numpy() & ~host_side_dominant & ~long_silence] = SLOW_HOST
    cause[other < noise] = ""
    frame["network_fraction"] = network
    frame["other_fraction"] = np.where(cause != "", other, 0.0)
    frame["other_cause"] = cause


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
