"""The detector over a store, window by window: any past range in bounded memory.

A week of a large cluster's telemetry does not fit in memory as one set of
frames, so the range is cut into *windows* and each window is decided on its
own: the intervals in ``(start, end]`` of a window are judged from the store's
data in ``[start - context, end]``. The ``context`` before the window is what
rates (the previous sample of every counter), normals (a link's 25th
percentile), job baselines and the noise level need to be the same as they
would be for a window in the middle of a long read; nothing before
``start - context`` is read, nothing of the context is reported.

Each window keeps only what a result needs: the loss rows (one per job,
interval and cause that lost GPU time), the evidence behind them, the link
scores worth showing (``min_link_score``) and the lossy intervals. Episodes are
built once, over all windows' loss rows, so an episode that crosses a window
boundary is one episode. :class:`detector.streaming.StreamingDetector` decides
its newest intervals with the same :func:`decide_window`, which is why batch
and streaming give the same episodes over the same data.

A window is decided in two steps: its links are scored (what its jobs' GPUs did
is laid out beside, on a second core), then its jobs are attributed. Only the
first step needs the window's telemetry, so :func:`detect_store` lets go of it
and makes the next window's telemetry on the second core while the jobs are
attributed, which is mostly Python on one core.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Iterable, Iterator, Mapping, Protocol, Sequence

import pandas as pd

from collector.schema import ETHTOOL, INFINIBAND, INTERFACE, NVIDIA_SMI
from detector.attribution import (INTERVAL_COLUMNS, NETWORK, SLOW_HOST, JobActivity, attribute_jobs, job_activity,
                                  loss_rows)
from detector.congestion import UTILIZATION, Congestion, Evidence, FrameEvidence, link_congestion
from detector.detect import DetectionResult, DetectorSettings, _warnings, missing_data_warnings
from detector.episodes import build_episodes
from detector.heap import freed_pages_kept, large_blocks_from_heap, large_blocks_mapped
from detector.jobs import Allocation
from detector.pricing import Prices
from detector.telemetry import Telemetry, TelemetryError, load_telemetry, used_fields
from detector.topology import Topology

MEASUREMENTS = (INTERFACE, INFINIBAND, ETHTOOL, NVIDIA_SMI)
"""What the detector reads from a store."""

DEFAULT_WINDOW = timedelta(hours=6)
DEFAULT_CONTEXT = timedelta(hours=2)
"""Enough that a window of minutes decides like one pass over hours (checked in tests/test_batch_streaming.py)."""
DEFAULT_MIN_LINK_SCORE = 0.1
"""Link scores below this are not kept (a score of 1 is "congested"; utilization alone tops out at 0.9)."""


class TelemetryReader(Protocol):
    """What the detector needs of a store (``collector.store.EmbeddedStore`` has it)."""

    def read(self, measurement: str, start=None, end=None, fields=None, tags=None) -> pd.DataFrame: ...

    def time_range(self, measurement: str): ...


@dataclass(frozen=True, slots=True)
class WindowSettings:
    window: timedelta = DEFAULT_WINDOW
    """How much time one detector pass decides (bounds memory: frames of window + context)."""
    context: timedelta = DEFAULT_CONTEXT
    """Data before a window that its pass reads for rates, normals and baselines, without reporting it."""
    min_link_score: float = DEFAULT_MIN_LINK_SCORE

    def __post_init__(self) -> None:
        if self.window <= timedelta(0):
            raise ValueError(f"window must be positive, got {self.window}")
        if self.context < timedelta(0):
            raise ValueError(f"context must not be negative, got {self.context}")


@dataclass(slots=True)
class Decided:
    """What a window (or several, concatenated) decided: only the rows a result needs."""

    losses: pd.DataFrame
    intervals: pd.DataFrame
    congestion: pd.DataFrame
    evidence: pd.DataFrame
    host_pause: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    @staticmethod
    def concat(parts: Sequence[Decided]) -> Decided:
        def join(frames: list[pd.DataFrame]) -> pd.DataFrame:
            # All empty: keep the one with the most columns, so readers still find theirs.
            frames = [frame for frame in frames if not frame.empty] or sorted(frames, key=lambda f: len(f.columns))[-1:]
            return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return Decided(
            join([p.losses for p in parts]), join([p.intervals for p in parts]), join([p.congestion for p in parts]),
            join([p.evidence for p in parts]), join([p.host_pause for p in parts]),
            list(dict.fromkeys(w for p in parts for w in p.warnings)),
        )


def read_frames(store: TelemetryReader, start: pd.Timestamp, end: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """The detector's measurements in ``[start, end]`` (both ends included), those with rows, all read at once.

    A store that lists its field names (``field_names()``, as ``EmbeddedStore`` does) is
    asked only for the fields the detector uses (``telemetry.used_fields``); any other
    store for every field.
    """
    listing = getattr(store, "field_names", None)
    names = listing() if callable(listing) else None
    frames = {}
    for measurement in MEASUREMENTS:
        fields = used_fields(measurement, names) if names is not None else None
        with large_blocks_mapped():  # what a store keeps from a read must not pin the heap (detector.heap)
            frame = store.read(measurement, start, end + pd.Timedelta(1, "ns"), fields=fields or None)
        if not frame.empty:
            frames[measurement] = frame
    return frames


class _HandedOutOnce(Mapping[str, pd.DataFrame]):
    """Frames read together, each dropped here once handed out, so its memory goes when its rates are made.

    ``load_telemetry`` works on two measurements at once. Reading every measurement before
    it starts keeps the store's reads off that second core: in the scale benchmark they
    are the peer, and must not overlap the detector's computing.
    """

    def __init__(self, frames: dict[str, pd.DataFrame]) -> None:
        self._frames = frames
        self._names = list(frames)

    def __getitem__(self, measurement: str) -> pd.DataFrame:
        return self._frames.pop(measurement)

    def __iter__(self) -> Iterator[str]:
        """Every measurement read, handed out or not (for messages)."""
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def decide_window(
    frames: Mapping[str, pd.DataFrame], topology: Topology, allocations: Sequence[Allocation],
    start: pd.Timestamp, end: pd.Timestamp, step_s: float | None, settings: DetectorSettings,
    min_link_score: float = DEFAULT_MIN_LINK_SCORE,
) -> tuple[Decided, float]:
    """Decide the intervals in ``(start, end]`` from ``frames`` (which also hold the context before ``start``).

    Returns what was decided and the grid's interval (``step_s``, or the data's when None).
    """
    telemetry = load_telemetry(frames, step_s if step_s is not None else settings.step_s)
    return decide_telemetry(telemetry, topology, allocations, start, end, settings, min_link_score), telemetry.step_s


def decide_telemetry(
    telemetry: Telemetry, topology: Topology, allocations: Sequence[Allocation], start: pd.Timestamp,
    end: pd.Timestamp, settings: DetectorSettings, min_link_score: float = DEFAULT_MIN_LINK_SCORE,
) -> Decided:
    """:func:`decide_window` from the telemetry already on its grid (the frames read need not be kept)."""
    return _decided(_scored(telemetry, topology, allocations, settings), topology, allocations, start, end,
                    settings, min_link_score)


@dataclass(slots=True)
class _Scored:
    """A window's links scored and its jobs' GPUs laid out: all that the rest of its decision needs of its
    telemetry, which can go before the rest is decided."""

    congestion: Congestion
    activity: JobActivity
    warnings: list[str]


def _scored(telemetry: Telemetry, topology: Topology, allocations: Sequence[Allocation],
            settings: DetectorSettings) -> _Scored:
    # What the jobs' GPUs did needs no link scores: it is made beside the scoring.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-activity") as pool:
        activity = pool.submit(job_activity, telemetry, topology, allocations)
        congestion = link_congestion(telemetry, topology, dict(settings.signals), keep_unscored=False)
        return _Scored(congestion, activity.result(), missing_data_warnings(telemetry))


def _decided(
    scored: _Scored, topology: Topology, allocations: Sequence[Allocation], start: pd.Timestamp, end: pd.Timestamp,
    settings: DetectorSettings, min_link_score: float,
) -> Decided:
    """The intervals in ``(start, end]`` decided: what a result keeps of them."""
    congestion = scored.congestion
    attribution = attribute_jobs(scored.activity, congestion, topology, settings.attribution)
    intervals = attribution.intervals
    inside = (intervals["time"] > start) & (intervals["time"] <= end)
    intervals = intervals[inside]
    losses = loss_rows(intervals)
    lossy = intervals[(intervals["network_fraction"] > 0) | (intervals["other_fraction"] > 0)]

    scores = congestion.link_scores.frame(start, end, min_link_score)
    evidence = _evidence_for(congestion.evidence, losses[losses["cause"] == NETWORK])
    host_pause = _pauses_for(congestion.host_pause, losses[losses["cause"] == SLOW_HOST])
    warnings = scored.warnings + _warnings(congestion, topology, allocations, attribution)
    return Decided(losses.reset_index(drop=True), lossy.reset_index(drop=True), scores.reset_index(drop=True),
                   evidence, host_pause, warnings)


def _evidence_for(evidence: Evidence | FrameEvidence, network: pd.DataFrame) -> pd.DataFrame:
    """The signal rows an episode's evidence may quote: blamed links, at the times they were blamed."""
    blamed = network[["time", "links"]].explode("links").dropna().rename(columns={"links": "link"})
    return evidence.scored_at(blamed)


def _pauses_for(host_pause: pd.DataFrame, slow: pd.DataFrame) -> pd.DataFrame:
    if slow.empty or host_pause.empty:
        return host_pause.iloc[:0]
    times = set(slow["time"])
    hosts = set(slow["suspect_host"].dropna())
    keep = host_pause["time"].isin(times) & host_pause["host"].isin(hosts) & (host_pause["score"] > 0)
    return host_pause[keep].reset_index(drop=True)


def finish(
    decided: Decided, topology: Topology, step_s: float, prices: Prices, settings: DetectorSettings,
    start: pd.Timestamp | None, end: pd.Timestamp | None,
) -> DetectionResult:
    """Episodes over everything decided, as the DetectionResult ``detect`` gives for one pass."""
    losses = decided.losses
    episodes, positions = build_episodes(
        losses, decided.evidence, decided.host_pause, step_s, prices, settings.episodes,
        {**settings.signals, UTILIZATION.name: UTILIZATION},
    )
    losses = losses.assign(episode=positions.to_numpy() if len(losses) else [])
    return DetectionResult(
        episodes=episodes, intervals=decided.intervals, losses=losses, congestion=decided.congestion,
        evidence=decided.evidence, step_s=step_s, start=start, end=end, idle_models={}, prices=prices,
        switch_of_link=topology.switch_of_link(), warnings=list(decided.warnings),
    )


def window_bounds(start: pd.Timestamp, end: pd.Timestamp, window: timedelta) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """``(start, end]`` cut into consecutive windows of at most ``window``."""
    bounds = []
    step = pd.Timedelta(window)
    cursor = start
    while cursor < end:
        bounds.append((cursor, min(cursor + step, end)))
        cursor += step
    return bounds


def detect_store(
    store: TelemetryReader, topology: Topology, allocations: Iterable[Allocation],
    start: pd.Timestamp | None = None, end: pd.Timestamp | None = None,
    prices: Prices | None = None, settings: DetectorSettings = DetectorSettings(),
    windows: WindowSettings = WindowSettings(),
    progress: Callable[[int, int], None] | None = None,
) -> DetectionResult:
    """Detect over the store's data in ``(start, end]`` (default: all of it), one window at a time.

    ``progress(done, total)`` is called after each window.
    """
    prices = prices or Prices()
    allocations = list(allocations)
    first, last = _store_span(store)
    if first is None:
        raise TelemetryError(f"the store has none of the measurements {', '.join(MEASUREMENTS)}")
    start = _utc(start) if start is not None else first - pd.Timedelta(1, "ns")
    end = _utc(end) if end is not None else last
    if not start < end:
        raise ValueError(f"empty range: since {start} is not before until {end}")
    bounds = window_bounds(start, end, windows.window)
    context = pd.Timedelta(windows.context)
    step_s = settings.step_s
    parts = []
    # One window's memory serves the next: given back between windows, it would be faulted in again
    # (detector.heap). The next window's telemetry is made while this one's jobs are attributed.
    with large_blocks_from_heap(), freed_pages_kept(), \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="next-window") as pool:
        telemetry = _window_telemetry(read_frames(store, bounds[0][0] - context, bounds[0][1]), step_s)
        for done, (window_start, window_end) in enumerate(bounds, start=1):
            scored = None
            allocated = _overlapping(allocations, window_start - context, window_end)
            if telemetry is not None:
                step_s = telemetry.step_s
                scored = _scored(telemetry, topology, allocated, settings)
            telemetry = upcoming = None  # let go of before the next window's frames are read
            if done < len(bounds):
                next_start, next_end = bounds[done]
                # Read before anything runs beside: the store's reads overlap none of the detector's work.
                upcoming = pool.submit(_window_telemetry, read_frames(store, next_start - context, next_end), step_s)
            if scored is not None:
                parts.append(_decided(scored, topology, allocated, window_start, window_end, settings,
                                      windows.min_link_score))
                scored = None
            if upcoming is not None:
                telemetry = upcoming.result()
            if progress:
                progress(done, len(bounds))
    if step_s is None:
        raise TelemetryError("cannot tell the sampling interval: no series has two samples in the range")
    decided = Decided.concat(parts) if parts else empty_decided()
    parts.clear()  # the windows' rows are in ``decided`` now: hold them once while episodes are built
    return finish(decided, topology, step_s, prices, settings, max(start, first), min(end, last))


def _window_telemetry(frames: dict[str, pd.DataFrame], step_s: float | None) -> Telemetry | None:
    """The rates of a window's frames on the grid; None where it has no data or no series two samples."""
    try:
        telemetry = load_telemetry(_HandedOutOnce(frames), step_s)
    except TelemetryError as error:
        if "no series has two samples" not in str(error):
            raise
        return None
    return telemetry if telemetry.start is not None else None


def empty_decided() -> Decided:
    """Nothing decided yet."""
    empty = pd.DataFrame(columns=INTERVAL_COLUMNS)
    return Decided(loss_rows(empty), empty, pd.DataFrame(), pd.DataFrame(), pd.DataFrame())


def _overlapping(allocations: Sequence[Allocation], start: pd.Timestamp, end: pd.Timestamp) -> list[Allocation]:
    """Allocations that hold GPUs at some time in ``[start, end]``."""
    return [a for a in allocations
            if pd.Timestamp(a.start) <= end and (a.end is None or pd.Timestamp(a.end) > start)]


def _store_span(store: TelemetryReader) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    ranges = [r for r in (store.time_range(m) for m in MEASUREMENTS) if r is not None]
    if not ranges:
        return None, None
    return min(r.first for r in ranges), max(r.last for r in ranges)


def _utc(value) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
