"""Runs of lossy intervals of one job and one cause, priced and explained.

An episode is what a person acts on: "job llm-7 lost 1,900 GPU-seconds ($1.58)
to the network from 10:02 to 10:14, on leaf01:swp51 (discards 40x normal,
ECN marks at 6 NICs)". Intervals of one job with the same cause join into one
episode; a gap of up to ``max_gap_intervals`` healthy or unreported intervals
does not split it (a lossy interval of another cause does). Episodes that lost
less than ``min_gpu_seconds`` are dropped as noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

import numpy as np
import pandas as pd

from detector.attribution import NETWORK, SLOW_HOST, UNKNOWN
from detector.congestion import HOST_SIGNALS, SIGNALS, Signal
from detector.jobs import format_time
from detector.pricing import Prices
from detector.rates import nanoseconds, value_runs


@dataclass(frozen=True, slots=True)
class EpisodeSettings:
    max_gap_intervals: int = 1
    min_gpu_seconds: float = 60.0
    evidence_signals: int = 5
    """How many signals an episode's evidence lists, strongest first."""


@dataclass(frozen=True, slots=True)
class Evidence:
    """One signal behind an episode: its peak over the episode and how far above normal."""

    signal: str
    counters: str
    unit: str
    value: float
    normal: float
    score: float
    links: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "signal": self.signal, "counters": self.counters, "unit": self.unit, "value": _round(self.value),
            "normal": _round(self.normal), "score": round(self.score, 2),
            "times_normal": None if not self.normal > 0 else round(self.value / self.normal, 1),
            "links": list(self.links),
        }


@dataclass(frozen=True, slots=True)
class Episode:
    job: str
    cause: str
    start: datetime
    end: datetime
    links: tuple[str, ...]
    gpu_seconds_lost: float
    dollars_lost: float
    confidence: float
    intervals: int
    gpus: int
    busy: float
    baseline: float
    evidence: tuple[Evidence, ...] = ()
    hosts: tuple[str, ...] = ()
    notes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "start": format_time(self.start),
            "end": format_time(self.end),
            "cause": self.cause,
            "links": list(self.links),
            "gpu_seconds_lost": round(self.gpu_seconds_lost, 1),
            "dollars_lost": round(self.dollars_lost, 2),
            "confidence": round(self.confidence, 2),
            "intervals": self.intervals,
            "gpus": self.gpus,
            "busy": round(self.busy, 1),
            "baseline_busy": round(self.baseline, 1),
            "hosts": list(self.hosts),
            "evidence": [item.to_dict() for item in self.evidence],
            **self.notes,
        }


def episode_ids(losses: pd.DataFrame, step_s: float, settings: EpisodeSettings) -> pd.Series:
    """An episode number for each loss row (see :func:`detector.attribution.loss_rows`), before dropping small ones.

    Rows of one job and cause join while at most ``max_gap_intervals`` intervals
    lie between them and no row of another cause of that job falls in the gap.
    """
    ids = pd.Series(-1, index=losses.index, dtype=int)
    if losses.empty:
        return ids
    step_ns = step_s * 1e9
    next_id = 0
    for _, job in losses.groupby("job", sort=True):
        times = nanoseconds(job["time"])
        causes = job["cause"].to_numpy()
        for cause in sorted(set(causes)):
            mine = causes == cause
            own_times = times[mine]
            order = np.argsort(own_times, kind="stable")
            own_times = own_times[order]
            others = np.setdiff1d(np.unique(times[~mine]), own_times)
            gaps = np.diff(own_times) / step_ns
            between = np.searchsorted(others, own_times[1:]) - np.searchsorted(others, own_times[:-1], side="right")
            new = np.concatenate([[True], (gaps > settings.max_gap_intervals + 1) | (between > 0)])
            numbers = np.cumsum(new) - 1 + next_id
            ids.loc[job.index[mine][order]] = numbers
            next_id = int(numbers.max()) + 1
    return ids


def build_episodes(
    losses: pd.DataFrame, evidence: pd.DataFrame, host_pause: pd.DataFrame, step_s: float, prices: Prices,
    settings: EpisodeSettings = EpisodeSettings(), signals: Mapping[str, Signal] | None = None,
) -> tuple[list[Episode], pd.Series]:
    """Episodes, biggest dollar loss first, and for each loss row the index of its episode in that list (-1: none)."""
    ids = episode_ids(losses, step_s, settings)
    episodes: list[tuple[int, Episode]] = []
    step = pd.Timedelta(seconds=step_s)
    evidence_at, host_pause_at = _RowsByTime(evidence), _RowsByTime(host_pause)
    # Each episode's rows, in the losses' order, as a slice of the rows sorted by episode (a groupby's
    # groups, without building a frame per group).
    numbers = ids.to_numpy()
    by_episode = np.flatnonzero(numbers >= 0)
    by_episode = by_episode[np.argsort(numbers[by_episode], kind="stable")]
    grouped = _Arrays(losses.iloc[by_episode])
    starts, heads = value_runs(numbers[by_episode])
    for first, stop, number in zip(starts, [*starts[1:], len(by_episode)], heads):
        rows = _EpisodeRows(grouped, first, stop)
        lost = _sum(rows["gpu_seconds_lost"])
        if lost < settings.min_gpu_seconds:
            continue
        episodes.append((int(number), _episode(rows, lost, evidence_at, host_pause_at, step, prices, settings,
                                               {**SIGNALS, **(signals or {})})))
    episodes.sort(key=lambda item: (-item[1].dollars_lost, item[1].start, item[1].job))
    position = {number: index for index, (number, _) in enumerate(episodes)}
    return [episode for _, episode in episodes], ids.map(lambda number: position.get(number, -1))


class _Arrays:
    """A frame's columns as arrays, each made once when first asked for (``time`` as nanoseconds).

    A week has thousands of episodes, each reading a few of its rows: pandas' per-call
    overhead on each would cost more than the numbers themselves.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self._columns: dict[str, np.ndarray] = {}
        self._codes: dict[str, tuple[np.ndarray, pd.Index]] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._columns:
            self._columns[name] = nanoseconds(self.frame[name]) if name == "time" else self.frame[name].to_numpy()
        return self._columns[name]

    def codes(self, name: str) -> tuple[np.ndarray, pd.Index]:
        """A column's values as codes in name order (-1 for NaN), and the names, made once."""
        if name not in self._codes:
            codes, names = pd.factorize(self[name], sort=True)
            self._codes[name] = codes, pd.Index(names)
        return self._codes[name]


class _EpisodeRows:
    """One episode's loss rows: each column's slice of the rows sorted by episode."""

    def __init__(self, columns: _Arrays, first: int, stop: int) -> None:
        self.columns, self.first, self.stop = columns, first, stop

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name][self.first:self.stop]

    def __len__(self) -> int:
        return self.stop - self.first


class _RowsByTime:
    """A frame's rows at some times, in the frame's order, found from a sort by time made once.

    A week's evidence has millions of rows and a thousand episodes quote it: scanning it
    once per episode cost more than deciding the week.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.columns = _Arrays(frame)
        stamps = self.columns["time"] if "time" in frame.columns else np.empty(0, dtype=np.int64)
        self.order = np.argsort(stamps, kind="stable")
        self.sorted = stamps[self.order]

    def at(self, stamps: np.ndarray) -> np.ndarray:
        """The positions of the rows at these times (nanoseconds), in the frame's order."""
        wanted = np.unique(stamps)
        first, last = np.searchsorted(self.sorted, wanted, "left"), np.searchsorted(self.sorted, wanted, "right")
        return np.sort(np.concatenate([self.order[a:b] for a, b in zip(first, last)] or [np.empty(0, dtype=np.intp)]))


def _episode(
    rows: _EpisodeRows, lost: float, evidence: _RowsByTime, host_pause: _RowsByTime, step: pd.Timedelta,
    prices: Prices, settings: EpisodeSettings, signals: Mapping[str, Signal],
) -> Episode:
    job, cause, model = (str(rows[column][0]) for column in ("job", "cause", "model"))
    dollars = prices.dollars(lost, model, _sum(rows["energy_joules"]))
    weights = rows["gpu_seconds_lost"].astype(float)
    links: tuple[str, ...] = ()
    items: tuple[Evidence, ...] = ()
    hosts: tuple[str, ...] = ()
    notes: dict[str, Any] = {}
    stamps = rows["time"]
    if cause == NETWORK:
        links = _ranked_links(rows)
        items = _link_evidence(evidence, stamps, links, settings.evidence_signals, signals)
    if cause == SLOW_HOST:
        hosts = tuple(sorted({str(host) for host in rows["suspect_host"] if not pd.isna(host)}))
        items = _host_evidence(host_pause, stamps, hosts, settings.evidence_signals)
    tx, rx = _mean(rows["tx_bytes"]), _mean(rows["rx_bytes"])
    if not (math.isnan(tx) or math.isnan(rx)):
        notes["traffic_gbps"] = {"tx": round(tx * 8 / 1e9, 2), "rx": round(rx * 8 / 1e9, 2)}
    busy = rows["busy"].astype(float)
    return Episode(
        job=job, cause=cause,
        start=(_utc(stamps.min()) - step).to_pydatetime(), end=_utc(stamps.max()).to_pydatetime(),
        links=links, gpu_seconds_lost=lost, dollars_lost=dollars,
        confidence=_confidence(rows, cause, items),
        intervals=len(rows), gpus=int(np.nanmax(rows["n_gpus"])),
        busy=float(np.average(np.where(np.isnan(busy), 0.0, busy), weights=weights) if weights.sum() > 0
                   else _mean(busy)),
        baseline=float(rows["baseline"][0]), evidence=items, hosts=hosts, notes=notes,
    )


def _sum(values: np.ndarray) -> float:
    """``Series.sum()`` as pandas computes it (NaN as 0), without pandas' per-call overhead."""
    values = values.astype(float, copy=False)
    return float(np.where(np.isnan(values), 0.0, values).sum())


def _median(values: np.ndarray) -> float:
    """``Series.median()`` as pandas computes it: the median of the values that are not NaN (NaN if none)."""
    values = values.astype(float, copy=False)
    present = values[~np.isnan(values)]
    return float(np.median(present)) if len(present) else math.nan


def _mean(values: np.ndarray) -> float:
    """``Series.mean()`` as pandas computes it (NaN skipped: the sum with NaN as 0, over the count), without
    pandas' per-call overhead."""
    count = len(values) - int(np.isnan(values.astype(float, copy=False)).sum())
    return _sum(values) / count if count else math.nan


def _utc(ns: int) -> pd.Timestamp:
    return pd.Timestamp(int(ns), unit="ns", tz="UTC")


def _ranked_links(rows: _EpisodeRows) -> tuple[str, ...]:
    """Links blamed in the episode's intervals, ranked by how often and how early they came first."""
    points: dict[str, float] = {}
    for links, lost in zip(rows["links"], rows["gpu_seconds_lost"]):
        for rank, link in enumerate(links):
            points[link] = points.get(link, 0.0) + float(lost) / (rank + 1)
    return tuple(sorted(points, key=lambda link: (-points[link], link)))


def _link_evidence(
    evidence: _RowsByTime, stamps: np.ndarray, links: tuple[str, ...], limit: int, signals: Mapping[str, Signal],
) -> tuple[Evidence, ...]:
    if not links or evidence.frame.empty:
        return ()
    near = evidence.at(stamps)
    link_codes, link_names = evidence.columns.codes("link")
    blamed = link_names.get_indexer(list(links))
    on_links = np.isin(link_codes[near], blamed[blamed >= 0])
    near_score = evidence.columns["score"][near]
    seen = near[on_links & (near_score >= 1.0)]
    if not len(seen):
        seen = near[on_links & (near_score > 0)]
    items = []
    names, value, normal, score = (evidence.columns[column][seen] for column in ("signal", "value", "normal", "score"))
    seen_links = link_codes[seen]
    for signal in sorted(set(names)):
        rows = np.flatnonzero(names == signal)
        peak = rows[np.nanargmax(value[rows])]
        # Per link its highest score, links in name order, then the highest first (as a groupby's max sorted).
        links_here, link = np.unique(seen_links[rows], return_inverse=True)
        highest = np.full(len(links_here), -np.inf)
        np.maximum.at(highest, link, score[rows])
        ranked = links_here[_descending(highest)[:8]]
        kind = signals.get(str(signal))
        items.append(Evidence(str(signal), kind.counters if kind else str(signal), kind.unit if kind else "",
                              float(value[peak]), float(normal[peak]), float(np.max(score[rows])),
                              tuple(link_names[ranked])))
    # What the first blamed link itself shows explains the blame best: it goes first.
    items.sort(key=lambda item: (links[0] not in item.links, -item.score))
    return tuple(items[:limit])


def _descending(values: np.ndarray) -> np.ndarray:
    """The order ``pd.Series(values).sort_values(ascending=False)`` gives (pandas' ``nargsort``: ties as it
    leaves them, NaN last), without building a Series."""
    missing = np.isnan(values)
    positions = np.arange(len(values))
    present = positions[~missing][::-1]
    return np.concatenate([present[values[present].argsort(kind="quicksort")][::-1], positions[missing]])


def _host_evidence(
    host_pause: _RowsByTime, stamps: np.ndarray, hosts: tuple[str, ...], limit: int,
) -> tuple[Evidence, ...]:
    near = host_pause.frame.iloc[host_pause.at(stamps)]
    if near.empty:
        return ()
    seen = near[near["host"].isin(hosts) & (near["score"] > 0)]
    items = []
    for signal, rows in seen.groupby("signal"):
        peak = rows.loc[rows["value"].idxmax()]
        kind = HOST_SIGNALS[str(signal)]
        items.append(Evidence(str(signal), kind.counters, kind.unit, float(peak["value"]), float(peak["normal"]),
                              float(rows["score"].max()), ()))
    items.sort(key=lambda item: -item.score)
    return tuple(items[:limit])


def _confidence(rows: _EpisodeRows, cause: str, evidence: tuple[Evidence, ...]) -> float:
    """0..1: how strongly the data back the cause (a heuristic, for sorting and alerting).

    Longer episodes, deeper loss and, for the network, a path score far above 1
    seen by several independent signals, or for a slow host strong pauses, count.
    """
    length = min(1.0, len(rows) / 4)
    depth = min(1.0, _mean(rows["fraction"]) / 0.2)
    if cause == NETWORK:
        strength = min(1.0, _median(rows["path_score"]) / 3)
        corroboration = min(1.0, len(evidence) / 3)
        return float(np.clip(0.3 * strength + 0.3 * corroboration + 0.2 * length + 0.2 * depth, 0, 1))
    if cause == SLOW_HOST:
        strength = min(1.0, _median(rows["pause_score"]) / 3)
        return float(np.clip(0.4 + 0.3 * strength + 0.15 * length + 0.15 * depth, 0, 1))
    if cause == UNKNOWN:
        return float(np.clip(0.2 + 0.15 * length + 0.15 * depth, 0, 1))
    return float(np.clip(0.4 + 0.3 * depth + 0.3 * length, 0, 1))


def _round(value: float) -> float:
    if not math.isfinite(value):
        return value
    if abs(value) >= 100:
        return round(value, 1)
    return float(f"{value:.4g}")
