"""The detector's findings as points, written back beside the telemetry they came from.

Dashboards, alert rules and the weekly report read what the detector found
from the same store as the raw counters, so they need no second database and
no access to the detector process. Three measurements (docs/schema.md,
"Detector results"):

- ``stranded_compute``: per job, interval and cause, the GPU time lost in
  reported episodes, priced. Network loss carries the link blamed first in
  that interval and its switch (the same rule as
  ``DetectionResult.network_breakdown``), so summing the measurement by job,
  link or switch gives the detector's own totals.
- ``link_congestion``: per link and interval, the congestion score and the
  signal values behind it. Only intervals with a score of at least
  ``min_link_score`` are written: a quiet fabric writes almost nothing, and
  a missing point means "quiet".
- ``stranded_episode``: one point per episode at its start, with its end,
  price, links and evidence in words, for timelines and the report.

Writing the same window again overwrites the same points (same tags and
timestamps), so re-running the detector over an overlapping window is safe.
"""

from __future__ import annotations

from typing import Iterable, Protocol

import pandas as pd

from collector.schema import Point
from detector.detect import DetectionResult
from detector.episodes import Episode
from detector.jobs import format_time
from detector.rates import nanoseconds

STRANDED_COMPUTE = "stranded_compute"
LINK_CONGESTION = "link_congestion"
STRANDED_EPISODE = "stranded_episode"
RESULT_MEASUREMENTS = (STRANDED_COMPUTE, LINK_CONGESTION, STRANDED_EPISODE)

DEFAULT_MIN_LINK_SCORE = 0.1
"""Scores are 1 at "congested"; 0.1 keeps busy links (utilization scores up to 0.9) and drops idle ones."""

__all__ = [
    "DEFAULT_MIN_LINK_SCORE", "LINK_CONGESTION", "RESULT_MEASUREMENTS", "STRANDED_COMPUTE", "STRANDED_EPISODE",
    "PointWriter", "episode_evidence_text", "result_points", "write_results",
]


class PointWriter(Protocol):
    """Anything with the stores' ``write(points) -> int`` (EmbeddedStore, the InfluxDB store)."""

    def write(self, points: Iterable[Point]) -> int: ...


def result_points(
    result: DetectionResult,
    *,
    extra_tags: dict[str, str] | None = None,
    min_link_score: float = DEFAULT_MIN_LINK_SCORE,
) -> list[Point]:
    """Every result point of ``result``; ``extra_tags`` (e.g. ``{"site": "ams1"}``) go on each one."""
    extra = dict(extra_tags or {})
    return [
        *_stranded_compute(result, extra),
        *_link_congestion(result, extra, min_link_score),
        *_stranded_episodes(result, extra),
    ]


def write_results(
    store: PointWriter,
    result: DetectionResult,
    *,
    extra_tags: dict[str, str] | None = None,
    min_link_score: float = DEFAULT_MIN_LINK_SCORE,
) -> int:
    """Write ``result``'s points to ``store``; returns what the store's ``write`` returns."""
    return store.write(result_points(result, extra_tags=extra_tags, min_link_score=min_link_score))


def _stranded_compute(result: DetectionResult, extra: dict[str, str]) -> list[Point]:
    rows = result.losses[result.losses["episode"] >= 0]
    if rows.empty:
        return []
    confidence = [result.episodes[int(index)].confidence for index in rows["episode"]]
    points = []
    for time_ns, job, cause, links, lost, model, energy, gpus, path_score, trust in zip(
        nanoseconds(rows["time"]), rows["job"], rows["cause"], rows["links"], rows["gpu_seconds_lost"],
        rows["model"], rows["energy_joules"], rows["n_gpus"], rows["path_score"], confidence,
    ):
        tags = {**extra, "job": str(job), "cause": str(cause)}
        if links:
            tags["link"] = links[0]
            tags["switch"] = result.switch_of_link.get(links[0], "(unplaced)")
        points.append(Point(STRANDED_COMPUTE, tags, {
            "gpu_seconds_lost": float(lost),
            "dollars_lost": float(result.prices.dollars(float(lost), str(model), float(energy))),
            "congestion_score": float(path_score) if path_score == path_score else 0.0,
            "confidence": float(trust),
            "gpus": int(gpus),
        }, int(time_ns)))
    return points


def _link_congestion(result: DetectionResult, extra: dict[str, str], min_score: float) -> list[Point]:
    scores = result.congestion[result.congestion["score"] >= min_score]
    if scores.empty:
        return []
    kept = scores[["time", "link"]]
    evidence = result.evidence.merge(kept, on=["time", "link"], how="inner")
    values = evidence.pivot_table(index=["time", "link"], columns="signal", values="value", aggfunc="max")
    values = values.reindex(pd.MultiIndex.from_frame(kept))
    signal_names = list(values.columns)
    signal_values = values.to_numpy(dtype=float)
    points = []
    for row, (time_ns, link, score, local, path, top) in enumerate(zip(
        nanoseconds(scores["time"]), scores["link"], scores["score"], scores["local_score"], scores["path_score"],
        scores["top_signal"],
    )):
        agent_host, _, if_name = str(link).rpartition(":")
        tags = {**extra, "agent_host": agent_host, "ifName": if_name,
                "switch": result.switch_of_link.get(link, agent_host)}
        fields: dict[str, float | str] = {
            "score": float(score), "local_score": float(local), "path_score": float(path),
        }
        if isinstance(top, str) and top:
            fields["top_signal"] = top
        for name, value in zip(signal_names, signal_values[row]):
            if value == value:
                fields[name] = float(value)
        points.append(Point(LINK_CONGESTION, tags, fields, int(time_ns)))
    return points


def episode_evidence_text(episode: Episode, limit: int = 3) -> str:
    """The evidence in words: ``"ecn_marked 520,472 packets/s (normal 0) on leaf02:swp23, ..."``."""
    parts = []
    for item in episode.evidence[:limit]:
        links = ", ".join(item.links[:2]) + (" ..." if len(item.links) > 2 else "")
        normal = f"{item.normal:,.3g}" if item.normal < 1000 else f"{item.normal:,.0f}"
        value = f"{item.value:,.3g}" if item.value < 1000 else f"{item.value:,.0f}"
        unit = f" {item.unit}" if item.unit else ""
        parts.append(f"{item.signal} {value}{unit} (normal {normal}) on {links}")
    return "; ".join(parts)


def _stranded_episodes(result: DetectionResult, extra: dict[str, str]) -> list[Point]:
    points = []
    for episode in result.episodes:
        start = pd.Timestamp(episode.start)
        end = pd.Timestamp(episode.end)
        tags = {**extra, "job": episode.job, "cause": episode.cause}
        if episode.links:
            tags["link"] = episode.links[0]
            tags["switch"] = result.switch_of_link.get(episode.links[0], "(unplaced)")
        points.append(Point(STRANDED_EPISODE, tags, {
            "end": format_time(episode.end),
            "duration_seconds": float((end - start).total_seconds()),
            "gpu_seconds_lost": float(episode.gpu_seconds_lost),
            "dollars_lost": float(episode.dollars_lost),
            "confidence": float(episode.confidence),
            "gpus": int(episode.gpus),
            "links": ",".join(episode.links),
            "hosts": ",".join(episode.hosts),
            "evidence": episode_evidence_text(episode),
        }, int(start.as_unit("ns").value)))
    return points
