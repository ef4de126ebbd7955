"""The detector end to end: wide frames in, priced and explained episodes out.

``detect(frames, topology, allocations, prices)`` runs the pipeline::

    frames --telemetry--> rates on one grid --congestion--> link scores
           --attribution--> loss and cause per job and interval --episodes--> episodes, totals

It is a pure function of its inputs: the offline ``strandwatch detect`` feeds it
frames parsed from a line-protocol file, a live deployment the frames of a
store read over a window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import pandas as pd

from detector.attribution import (CAUSES, NETWORK, Attribution, AttributionSettings, IdleLossModel, attribute,
                                  loss_rows)
from detector.congestion import SIGNALS, UTILIZATION, Signal, link_congestion
from detector.episodes import Episode, EpisodeSettings, build_episodes
from detector.jobs import Allocation, format_time
from detector.pricing import Prices
from detector.telemetry import Telemetry, load_telemetry
from detector.topology import Topology


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    step_s: float | None = None
    """The grid's interval; None: the telemetry's typical sampling interval."""
    signals: Mapping[str, Signal] = field(default_factory=lambda: dict(SIGNALS))
    attribution: AttributionSettings = AttributionSettings()
    episodes: EpisodeSettings = EpisodeSettings()


@dataclass(slots=True)
class DetectionResult:
    episodes: list[Episode]
    """Every episode, network and not, biggest dollar loss first."""
    intervals: pd.DataFrame
    """Per job and interval: loss, its network and other shares, evidence (attribution's frame)."""
    losses: pd.DataFrame
    """Per job, interval and cause that lost GPU time: gpu_seconds_lost, ... and ``episode``
    (index into ``episodes``, -1 where the run was too small to report)."""
    congestion: pd.DataFrame
    """Per link and interval: score, local_score, path_score, top_signal."""
    evidence: pd.DataFrame
    """Per link, signal and interval: value, normal, score."""
    step_s: float
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    idle_models: dict[str, IdleLossModel]
    prices: Prices
    switch_of_link: dict[str, str]
    warnings: list[str] = field(default_factory=list)

    @property
    def network_episodes(self) -> list[Episode]:
        return [episode for episode in self.episodes if episode.cause == NETWORK]

    def totals(self) -> dict[str, float]:
        """Network loss only: what the fabric cost."""
        network = self.network_episodes
        return {
            "gpu_seconds_lost": round(sum(e.gpu_seconds_lost for e in network), 1),
            "dollars_lost": round(sum(e.dollars_lost for e in network), 2),
        }

    def by_cause(self) -> dict[str, dict[str, float]]:
        """Every cause's loss, network included, for context."""
        result = {}
        for cause in CAUSES:
            mine = [e for e in self.episodes if e.cause == cause]
            if mine:
                result[cause] = {
                    "episodes": len(mine),
                    "gpu_seconds_lost": round(sum(e.gpu_seconds_lost for e in mine), 1),
                    "dollars_lost": round(sum(e.dollars_lost for e in mine), 2),
                }
        return result

    def network_breakdown(self, topology: Topology | None = None) -> dict[str, dict[str, dict[str, float]]]:
        """Network loss per job, per link (the first blamed in each interval), per switch and per UTC day.

        Links map to switches by the topology ``detect`` was given, or by ``topology``.
        """
        switch_of_link = self.switch_of_link if topology is None else topology.switch_of_link()
        rows = self.losses[(self.losses["episode"] >= 0) & (self.losses["cause"] == NETWORK)].copy()
        if rows.empty:
            return {"job": {}, "link": {}, "switch": {}, "day": {}}
        rows["dollars"] = [self.prices.dollars(lost, model, energy) for lost, model, energy
                           in zip(rows["gpu_seconds_lost"], rows["model"], rows["energy_joules"])]
        rows["link"] = [links[0] if links else "(unplaced)" for links in rows["links"]]
        rows["switch"] = rows["link"].map(switch_of_link).fillna("(unplaced)")
        rows["day"] = rows["time"].dt.strftime("%Y-%m-%d")
        result = {}
        for key in ("job", "link", "switch", "day"):
            grouped = rows.groupby(key)[["gpu_seconds_lost", "dollars"]].sum().sort_values("dollars", ascending=False)
            result[key] = {
                str(name): {"gpu_seconds_lost": round(float(row.gpu_seconds_lost), 1),
                            "dollars_lost": round(float(row.dollars), 2)}
                for name, row in grouped.iterrows()
            }
        return result

    def to_dict(self) -> dict[str, Any]:
        """The offline contract's JSON object (plus context keys)."""
        return {
            "episodes": [episode.to_dict() for episode in self.episodes],
            "totals": self.totals(),
            "network_by": self.network_breakdown(),
            "by_cause": self.by_cause(),
            "window": {
                "start": None if self.start is None else format_time(self.start.to_pydatetime()),
                "end": None if self.end is None else format_time(self.end.to_pydatetime()),
                "interval_s": self.step_s,
            },
            "warnings": self.warnings,
        }


def detect(
    frames: Mapping[str, pd.DataFrame],
    topology: Topology,
    allocations: Iterable[Allocation],
    prices: Prices | None = None,
    settings: DetectorSettings = DetectorSettings(),
) -> DetectionResult:
    """Find, explain and price the GPU time lost in the frames' window."""
    prices = prices or Prices()
    allocations = list(allocations)
    telemetry = load_telemetry(frames, settings.step_s)
    congestion = link_congestion(telemetry, topology, dict(settings.signals))
    attribution = attribute(telemetry, congestion, topology, allocations, settings.attribution)
    losses = loss_rows(attribution.intervals)
    evidence = congestion.signals
    episodes, positions = build_episodes(
        losses, evidence, congestion.host_pause, telemetry.step_s, prices, settings.episodes,
        {**settings.signals, UTILIZATION.name: UTILIZATION},
    )
    losses["episode"] = positions
    warnings = missing_data_warnings(telemetry) + _warnings(congestion, topology, allocations, attribution)
    return DetectionResult(
        episodes=episodes, intervals=attribution.intervals, losses=losses, congestion=congestion.scores,
        evidence=evidence, step_s=telemetry.step_s, start=telemetry.start, end=telemetry.end,
        idle_models=attribution.idle_models, prices=prices, switch_of_link=topology.switch_of_link(),
        warnings=warnings,
    )


def missing_data_warnings(telemetry: Telemetry) -> list[str]:
    """What the telemetry lacks to measure loss or to find congestion."""
    warnings = []
    if telemetry.gpus.empty:
        warnings.append("no nvidia_smi data: no GPU time can be measured, so no loss is reported")
    if telemetry.ports.empty and telemetry.nics.empty and telemetry.pauses.empty:
        warnings.append("no interface, infiniband or ethtool data: no link can be found congested")
    return warnings


def _warnings(congestion, topology, allocations, attribution: Attribution) -> list[str]:
    """What the topology and jobs do not cover (after :func:`missing_data_warnings`)."""
    warnings = []
    intervals = attribution.intervals
    for measurement, series in sorted(congestion.unmapped.items()):
        shown = ", ".join(sorted(series)[:5]) + (" ..." if len(series) > 5 else "")
        warnings.append(f"{measurement}: {len(series)} series not in the topology, ignored: {shown}")
    outside = sorted({allocation.host for allocation in allocations} - set(topology.hosts))
    if outside:
        shown = ", ".join(outside[:5]) + (" ..." if len(outside) > 5 else "")
        warnings.append(f"{len(outside)} job host(s) not in the topology, their links unknown: {shown}")
    jobs = {allocation.job for allocation in allocations}
    seen = set(intervals["job"]) if not intervals.empty else set()
    missing = sorted(jobs - seen)
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        warnings.append(f"{len(missing)} job(s) have no GPU samples in the window: {shown}")
    warnings.extend(never_clean_warnings(attribution.never_clean, intervals))
    return warnings


NAMED_NEVER_CLEAN_JOBS = 10
"""Jobs named with their links in :func:`never_clean_warnings`; the rest are counted (an oversubscribed fabric of
thousands of GPUs has hundreds of such jobs)."""


def never_clean_warnings(jobs: list[str], intervals: pd.DataFrame) -> list[str]:
    """One line per job whose path was congested whenever its GPUs worked (``Attribution.never_clean``), naming
    the links blamed most often in its intervals.

    The operator is told that such a job's steady loss is not in the figures instead of seeing nothing.
    """
    lines = []
    for job in jobs[:NAMED_NEVER_CLEAN_JOBS]:
        blamed = intervals.loc[intervals["job"] == job, "links"]
        first = blamed[blamed.map(len) > 0].map(lambda links: links[0])
        named = ", ".join(first.value_counts(sort=True).index[:3]) if len(first) else "none named"
        lines.append(f"job {job}: its path was congested whenever its GPUs worked (most often blamed: {named}); "
                     "with no clean-path baseline its loss is measured against its own best intervals, so what "
                     "this congestion costs it all along is not counted")
    if len(jobs) > NAMED_NEVER_CLEAN_JOBS:
        lines.append(f"{len(jobs) - NAMED_NEVER_CLEAN_JOBS} more job(s) with a path congested whenever their GPUs "
                     f"worked: {', '.join(jobs[NAMED_NEVER_CLEAN_JOBS:NAMED_NEVER_CLEAN_JOBS + 5])}"
                     + (" ..." if len(jobs) > NAMED_NEVER_CLEAN_JOBS + 5 else ""))
    return lines
