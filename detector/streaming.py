"""The detector live: each interval, decide the newest data, open, extend and close episodes.

:class:`StreamingDetector` is what the daemon runs every interval::

    detector = StreamingDetector(store, topology, allocations, state_path="detector-state.json",
                                 sink=store_sink(store), on_alert=publish)
    detector.step()          # decides every interval the store has data for since the last step

Each :meth:`StreamingDetector.step` decides the intervals that arrived since
the last one from the store's data over ``[last decided - context, newest]``,
with :func:`detector.batch.decide_window`, the same function batch mode uses
for its windows; episodes are built from the decided loss rows with the same
rules, so batch and streaming give the same episodes over the same data. That
window's frames stay in memory between steps (:class:`detector.sliding.SlidingFrames`):
a step reads from the store only what is new, so its cost and memory are
bounded by the context, not by how long the detector has run.

- An episode **opens** when its run of lossy intervals reaches the reporting
  floor (``min_gpu_seconds``): an :class:`Alert` ``opened`` goes to
  ``on_alert``. With loss from the first interval on, that is one interval
  after the onset.
- It **extends** while lossy intervals of its job and cause keep coming within
  ``max_gap_intervals``; every step the sink gets the result so far (the
  ``stranded_compute`` rows, the episode with its current end, the newest
  link scores), which overwrites what it wrote before.
- It **closes** when no interval can join it any more: an :class:`Alert`
  ``closed`` with the final figures.

State (the last decided time, the grid interval, the loss rows and evidence of
episodes that may still grow, which episodes were announced) is saved after
every step to a small JSON file, written to a temporary file and renamed, so a
restart goes on where the last completed step ended: nothing is decided twice,
no announced episode is announced again, none is lost. Alerts of a step that
crashed before its state was saved are sent again after the restart (at least
once); each alert has a stable ``id`` (job, cause, start) to deduplicate on.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from detector.batch import (
    DEFAULT_CONTEXT, DEFAULT_MIN_LINK_SCORE, MEASUREMENTS, Decided, decide_window, empty_decided, finish,
)
from detector.detect import DetectionResult, DetectorSettings
from detector.episodes import Episode, episode_ids
from detector.jobs import Allocation, format_time
from detector.pricing import Prices
from detector.sliding import SlidingFrames, TaggedReader
from detector.telemetry import TelemetryError
from detector.topology import Topology

STATE_VERSION = 1
OPENED = "opened"
CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Alert:
    """An episode opened or closed, for a pager or an MQTT topic."""

    event: str
    """``opened`` or ``closed``."""
    episode: Episode
    decided_until: pd.Timestamp
    """The newest interval decided when the alert was raised."""

    @property
    def id(self) -> str:
        return f"{self.episode.job}/{self.episode.cause}/{format_time(self.episode.start)}"

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, "id": self.id, "decided_until": format_time(self.decided_until.to_pydatetime()),
                "episode": self.episode.to_dict()}


ResultSink = Callable[[DetectionResult], None]
AlertSink = Callable[[Alert], None]


def store_sink(store: Any, **options: Any) -> ResultSink:
    """A sink writing results back to a store as ``detector.results`` points (idempotent overwrites)."""
    from detector.results import write_results

    def write(result: DetectionResult) -> None:
        write_results(store, result, **options)
    return write


class StreamingDetector:
    """Decides a store's newest intervals each step; see the module docstring."""

    def __init__(
        self, store: TaggedReader, topology: Topology,
        allocations: Sequence[Allocation] | Callable[[], Sequence[Allocation]],
        state_path: str | Path | None = None, *,
        sink: ResultSink | None = None, on_alert: AlertSink | None = None,
        prices: Prices | None = None, settings: DetectorSettings = DetectorSettings(),
        context: timedelta = DEFAULT_CONTEXT, min_link_score: float = DEFAULT_MIN_LINK_SCORE,
        start: pd.Timestamp | None = None,
    ) -> None:
        self.store = store
        self.window = SlidingFrames(store)
        self.topology = topology
        self._allocations = allocations
        self.state_path = Path(state_path) if state_path is not None else None
        self.sink = sink
        self.on_alert = on_alert
        self.prices = prices or Prices()
        self.settings = settings
        self.context = pd.Timedelta(context)
        self.min_link_score = min_link_score
        self.decided_until: pd.Timestamp | None = None if start is None else pd.Timestamp(start)
        self.step_s: float | None = settings.step_s
        self.pending = empty_decided()
        self.announced: set[str] = set()
        """Episodes opened and not closed yet."""
        self.done: set[str] = set()
        """Closed episodes whose rows are still kept (to split open ones): never announced again."""
        if self.state_path is not None and self.state_path.exists():
            self._load()

    # --- one interval -----------------------------------------------------

    def allocations(self) -> list[Allocation]:
        return list(self._allocations() if callable(self._allocations) else self._allocations)

    def step(self, until: pd.Timestamp | None = None) -> list[Alert]:
        """Decide everything after the last decided interval up to ``until`` (default: the newest data)."""
        newest = until if until is not None else self._newest()
        if newest is None:
            return []
        newest = pd.Timestamp(newest)
        start = self.decided_until
        if start is None:
            # The first step decides the newest interval only: history is batch mode's job.
            first = self._first()
            start = max(first, newest - self.context) if first is not None else newest
        if newest <= start:
            return []
        frames = self.window.read(start - self.context, newest)
        if not frames:
            return []
        try:
            decided, step_s = decide_window(frames, self.topology, self.allocations(), start, newest, self.step_s,
                                            self.settings, self.min_link_score)
        except TelemetryError as error:
            if "no series has two samples" in str(error):
                return []
            raise
        self.step_s = step_s
        self.decided_until = newest
        alerts = self._advance(decided, newest)
        self._save()
        return alerts

    def _advance(self, decided: Decided, newest: pd.Timestamp) -> list[Alert]:
        self.pending = Decided.concat([self.pending, decided])
        result = finish(self.pending, self.topology, self.step_s, self.prices, self.settings, None, newest)
        result.congestion = decided.congestion
        result.intervals = decided.intervals
        # A run whose last row is before the horizon can no longer be joined: the next row comes after newest.
        horizon = newest - pd.Timedelta(seconds=self.step_s * self.settings.episodes.max_gap_intervals)
        last_row = result.losses.groupby("episode")["time"].max()
        alerts = []
        for index, episode in enumerate(result.episodes):
            key = _key(episode)
            if key in self.done:
                continue
            if key not in self.announced:
                self.announced.add(key)
                alerts.append(Alert(OPENED, episode, newest))
            if last_row[index] < horizon:
                self.announced.discard(key)
                self.done.add(key)
                alerts.append(Alert(CLOSED, episode, newest))
        if self.sink is not None:
            self.sink(result)
        self._prune(horizon)
        for alert in alerts:
            if self.on_alert is not None:
                self.on_alert(alert)
        return alerts

    def _prune(self, horizon: pd.Timestamp) -> None:
        """Forget the loss rows no future interval can join, and all that hangs on them.

        Rows are kept from the first row of the oldest run still open minus one
        gap: a finished run inside that stretch still splits an open run of
        another cause (episodes do not bridge a gap holding another cause's
        loss); ``done`` keeps such runs from being announced again.
        """
        losses = self.pending.losses
        if losses.empty:
            self.done = set()
            return
        ids = episode_ids(losses, self.step_s, self.settings.episodes)
        open_rows = losses.groupby(ids)["time"].transform("max") >= horizon
        gap = pd.Timedelta(seconds=self.step_s * (self.settings.episodes.max_gap_intervals + 1))
        keep_from = losses.loc[open_rows, "time"].min() - gap if open_rows.any() else horizon
        kept = losses[losses["time"] >= keep_from].reset_index(drop=True)
        step = pd.Timedelta(seconds=self.step_s)
        kept_keys = {f"{job}/{cause}/{format_time((first - step).to_pydatetime())}" for (job, cause), first in
                     kept.groupby(episode_ids(kept, self.step_s, self.settings.episodes))
                     .agg(job=("job", "first"), cause=("cause", "first"), first=("time", "min"))
                     .set_index(["job", "cause"])["first"].items()}
        self.done &= kept_keys
        evidence, pauses = self.pending.evidence, self.pending.host_pause
        self.pending = Decided(
            kept, self.pending.intervals.iloc[:0], self.pending.congestion.iloc[:0],
            evidence[evidence["time"] >= keep_from].reset_index(drop=True) if "time" in evidence else evidence,
            pauses[pauses["time"] >= keep_from].reset_index(drop=True) if "time" in pauses else pauses,
        )

    # --- the store ----------------------------------------------------------

    def _newest(self) -> pd.Timestamp | None:
        ranges = [r for r in (self.store.time_range(m) for m in MEASUREMENTS) if r is not None]
        # The newest time every source has reached: a source a poll behind must not be read as silent.
        return min(r.last for r in ranges) if ranges else None

    def _first(self) -> pd.Timestamp | None:
        ranges = [r for r in (self.store.time_range(m) for m in MEASUREMENTS) if r is not None]
        return min(r.first for r in ranges) if ranges else None

    # --- state --------------------------------------------------------------

    def _save(self) -> None:
        if self.state_path is None:
            return
        state = {
            "version": STATE_VERSION,
            "decided_until": None if self.decided_until is None else int(self.decided_until.value),
            "step_s": self.step_s,
            "announced": sorted(self.announced),
            "done": sorted(self.done),
            "losses": _frame_to_json(self.pending.losses),
            "evidence": _frame_to_json(self.pending.evidence),
            "host_pause": _frame_to_json(self.pending.host_pause),
        }
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.state_path.with_name(self.state_path.name + ".tmp")
        temporary.write_text(json.dumps(state))
        os.replace(temporary, self.state_path)

    def _load(self) -> None:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"{self.state_path}: not a detector state file: {error}") from None
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{self.state_path}: state version {state.get('version')!r}, expected {STATE_VERSION}")
        if state["decided_until"] is not None:
            self.decided_until = pd.Timestamp(state["decided_until"], unit="ns", tz="UTC")
        self.step_s = state["step_s"]
        self.announced = set(state["announced"])
        self.done = set(state["done"])
        self.pending = Decided(
            _frame_from_json(state["losses"], tuple_columns=("links",)), pd.DataFrame(), pd.DataFrame(),
            _frame_from_json(state["evidence"]), _frame_from_json(state["host_pause"]), [],
        )


def _key(episode: Episode) -> str:
    return f"{episode.job}/{episode.cause}/{format_time(episode.start)}"


def _frame_to_json(frame: pd.DataFrame) -> dict[str, Any]:
    columns = {}
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_datetime64_any_dtype(column):
            columns[name] = {"time": pd.DatetimeIndex(column).as_unit("ns").asi8.tolist()}
        else:
            values = [list(v) if isinstance(v, tuple) else v for v in column.tolist()]
            columns[name] = {"values": [None if isinstance(v, float) and v != v else v for v in values]}
    return columns


def _frame_from_json(data: dict[str, Any], tuple_columns: Iterable[str] = ()) -> pd.DataFrame:
    tuples = set(tuple_columns)
    columns = {}
    for name, column in data.items():
        if "time" in column:
            columns[name] = pd.to_datetime(np.asarray(column["time"], dtype=np.int64), utc=True)
        elif name in tuples:
            columns[name] = [tuple(v) if isinstance(v, list) else () for v in column["values"]]
        else:
            columns[name] = [np.nan if v is None else v for v in column["values"]]
    return pd.DataFrame(columns)
