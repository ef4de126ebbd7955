"""What really happened in a simulated scenario, computed from the model (never from the metrics).

Per job and interval: its progress rate relative to healthy, the GPU-seconds the
network cost it (only the slowdown a healthy network would have avoided) with
the cause and the responsible links, and the GPU-seconds lost to anything else
(checkpoint, input stall, slow host, hang) with that cause. Consecutive
intervals with loss from the same event merge into a :class:`TrueEpisode`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from detector.jobs import format_time
from detector.simulator.cluster import Cluster
from detector.simulator.config import CONFOUNDERS, NETWORK_CAUSES, UNALLOCATED, SimConfig
from detector.simulator.model import CONTENTION, StepTruth
from detector.simulator.schedule import Event, Job

LOSS_EPSILON = 1e-9
"""Losses below this share of an interval's GPU-seconds are rounding, not loss."""


@dataclass(frozen=True, slots=True)
class IntervalTruth:
    """One job over one interval [start, end)."""

    job: str
    start: datetime
    end: datetime
    gpus: int
    progress: float
    """Progress rate / healthy progress rate (0 while checkpointing or hung)."""
    network_gpu_seconds_lost: float
    network_cause: str | None
    links: tuple[str, ...]
    other_gpu_seconds_lost: float
    other_cause: str | None


@dataclass(frozen=True, slots=True)
class TrueEpisode:
    """A stretch of loss of one job from one cause (network or confounder)."""

    job: str
    start: datetime
    end: datetime
    cause: str
    links: tuple[str, ...]
    gpu_seconds_lost: float
    event: str = ""
    """The injected event's kind/variant (``congestion/ecmp_collision``)."""
    detail: str = ""

    @property
    def network(self) -> bool:
        return self.cause in NETWORK_CAUSES

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job, "start": format_time(self.start), "end": format_time(self.end), "cause": self.cause,
            "network": self.network, "links": list(self.links), "gpu_seconds_lost": round(self.gpu_seconds_lost, 3),
            "event": self.event, "detail": self.detail,
        }


class GroundTruth:
    """The truth of a scenario so far; grows as the simulation steps."""

    def __init__(self, config: SimConfig, cluster: Cluster, jobs: list[Job], events: list[Event],
                 steps: list[StepTruth]) -> None:
        self.config = config
        self.cluster = cluster
        self.jobs = jobs
        self.events = events
        self._steps = steps
        self._events = {event.id: event for event in [*events, CONTENTION]}
        self._dt = timedelta(seconds=config.interval_s)

    def _time(self, step: int) -> datetime:
        return self.config.start + step * self._dt

    @property
    def steps_done(self) -> int:
        return len(self._steps)

    def _cause(self, event_id: int) -> str | None:
        return self._events[event_id].kind if event_id in self._events else None

    def iter_intervals(self) -> Iterator[IntervalTruth]:
        """Every interval of every job that was running, in time order."""
        for truth in self._steps:
            start, end = self._time(truth.step), self._time(truth.step + 1)
            for i, job_index in enumerate(truth.jobs.tolist()):
                job = self.jobs[job_index]
                network_event = int(truth.network_event[i])
                lost = float(truth.network_loss[i])
                yield IntervalTruth(
                    job=job.name, start=start, end=end, gpus=job.n_gpus, progress=float(truth.progress[i]),
                    network_gpu_seconds_lost=lost,
                    network_cause=self._cause(network_event) if lost > 0 else None,
                    links=truth.links.get(job_index, ()) if lost > 0 else (),
                    other_gpu_seconds_lost=float(truth.other_loss[i]),
                    other_cause=self._cause(int(truth.other_event[i])),
                )

    @property
    def intervals(self) -> list[IntervalTruth]:
        return list(self.iter_intervals())

    @property
    def episodes(self) -> list[TrueEpisode]:
        """Merged episodes of network and confounder loss, ordered by start then job."""
        open_: dict[tuple[int, int, bool], list[Any]] = {}
        done: list[TrueEpisode] = []

        def close(key: tuple[int, int, bool]) -> None:
            job_index, event_id, _ = key
            first, last, lost, links = open_.pop(key)
            event = self._events[event_id]
            done.append(TrueEpisode(self.jobs[job_index].name, self._time(first), self._time(last + 1), event.kind,
                                    tuple(sorted(links)), lost, event.label, event.detail))

        for truth in self._steps:
            seen = set()
            threshold = LOSS_EPSILON * self.config.interval_s
            for i, job_index in enumerate(truth.jobs.tolist()):
                gpus = self.jobs[job_index].n_gpus
                for network, event_id, lost in (
                    (True, int(truth.network_event[i]), float(truth.network_loss[i])),
                    (False, int(truth.other_event[i]), float(truth.other_loss[i])),
                ):
                    if event_id not in self._events or lost <= threshold * gpus:
                        continue
                    key = (job_index, event_id, network)
                    seen.add(key)
                    links = truth.links.get(job_index, ()) if network else ()
                    if key in open_ and open_[key][1] == truth.step - 1:
                        open_[key][1] = truth.step
                        open_[key][2] += lost
                        open_[key][3].update(links)
                    else:
                        if key in open_:
                            close(key)
                        open_[key] = [truth.step, truth.step, lost, set(links)]
            for key in [key for key in open_ if key not in seen]:
                close(key)
        for key in list(open_):
            close(key)
        return sorted(done, key=lambda e: (e.start, e.job, e.cause))

    def totals(self) -> dict[str, Any]:
        """GPU-seconds allocated, unallocated and lost, by cause, job and link."""
        allocated = network = other = 0.0
        by_cause: dict[str, float] = {cause: 0.0 for cause in NETWORK_CAUSES + CONFOUNDERS}
        by_job: dict[str, float] = {}
        by_link: dict[str, float] = {}
        for item in self.iter_intervals():
            allocated += item.gpus * self.config.interval_s
            network += item.network_gpu_seconds_lost
            other += item.other_gpu_seconds_lost
            if item.network_cause:
                by_cause[item.network_cause] += item.network_gpu_seconds_lost
                by_job[item.job] = by_job.get(item.job, 0.0) + item.network_gpu_seconds_lost
                for link in item.links:
                    by_link[link] = by_link.get(link, 0.0) + item.network_gpu_seconds_lost
            if item.other_cause:
                by_cause[item.other_cause] += item.other_gpu_seconds_lost
        elapsed = self.steps_done * self.config.interval_s
        episodes = self.episodes
        return {
            "gpu_seconds_total": self.cluster.n_gpus * elapsed,
            "gpu_seconds_allocated": allocated,
            f"gpu_seconds_{UNALLOCATED}": self.cluster.n_gpus * elapsed - allocated,
            "network_gpu_seconds_lost": network,
            "other_gpu_seconds_lost": other,
            "network_by_cause": {cause: by_cause[cause] for cause in NETWORK_CAUSES},
            "other_by_cause": {cause: by_cause[cause] for cause in CONFOUNDERS},
            "network_by_job": dict(sorted(by_job.items())),
            "network_by_link": dict(sorted(by_link.items(), key=lambda item: -item[1])),
            "network_episodes": sum(e.network for e in episodes),
            "confounder_episodes": sum(not e.network for e in episodes),
        }

    def event_dicts(self) -> list[dict[str, Any]]:
        """The injected events in JSON form (times, names and link ids resolved)."""
        c = self.cluster
        result = []
        for event in self.events:
            links = [name for link in event.links for name in c.link_ids(link)]
            result.append({
                "id": event.id, "kind": event.kind, "variant": event.variant,
                "network": event.kind in NETWORK_CAUSES,
                "start": format_time(self._time(event.start_step)), "end": format_time(self._time(event.end_step)),
                "job": None if event.job is None else self.jobs[event.job].name,
                "host": None if event.host is None else c.host_names[event.host],
                "switch": None if event.switch is None else c.switch_names[event.switch],
                "links": links, "detail": event.detail,
            })
        return result

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.config.to_dict(),
            "network_causes": list(NETWORK_CAUSES),
            "confounders": list(CONFOUNDERS),
            "totals": _rounded(self.totals()),
            "events": self.event_dicts(),
            "episodes": [episode.to_dict() for episode in self.episodes],
        }

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def write_csv(self, path: str | Path) -> None:
        """One row per job and interval."""
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["job", "start", "end", "gpus", "progress", "network_gpu_seconds_lost", "network_cause",
                             "links", "other_gpu_seconds_lost", "other_cause"])
            for item in self.iter_intervals():
                writer.writerow([
                    item.job, format_time(item.start), format_time(item.end), item.gpus, f"{item.progress:.6f}",
                    f"{item.network_gpu_seconds_lost:.6f}", item.network_cause or "", " ".join(item.links),
                    f"{item.other_gpu_seconds_lost:.6f}", item.other_cause or "",
                ])


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, (float, np.floating)):
        return round(float(value), 3)
    return value
