"""Downsampled copies of the embedded store (1 minute, 1 hour), each with its own retention.

A weekly report over raw 10 s samples of a few thousand ports reads hundreds
of millions of values; over 1 h rollups it reads a few hundred thousand. Each
resolution is an EmbeddedStore file of its own next to the raw one
(``metrics.db`` -> ``metrics.1m.db``, ``metrics.1h.db``), written and read
through EmbeddedStore's public API only, so every reader of the raw store
reads a rollup the same way and gets the same wide frames.

Per series, field and interval (timestamped with the interval's start):

- counters (every numeric field not listed in ``GAUGES``) keep their *last*
  value, so rates derived from a rollup are the exact average rates over its
  intervals, and wraps and restarts are still visible to the rate logic;
- gauges (``GAUGES``: utilisation, power, temperature, speed, status) get
  their *mean* under the field's own name and their maximum as ``<field>_max``;
- text fields keep their last value.

Each resolution is built from the next finer one (1 h from 1 min), and only
from intervals that are complete. ``update`` recomputes the last
``late_intervals`` intervals again each time, so points that arrive late (a
spool replayed after an outage) still reach the rollups; recomputing is
harmless because writes overwrite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pandas as pd

from collector.schema import COLLECTOR_HEALTH, INTERFACE, NVIDIA_SMI, Point
from collector.store.embedded import EmbeddedStore, TimeLike, _to_ns

__all__ = ["GAUGES", "Resolution", "Rollups", "rollup_frame"]

GAUGES: Mapping[str, frozenset[str]] = {
    NVIDIA_SMI: frozenset({
        "utilization_gpu", "utilization_memory", "memory_used", "memory_free", "memory_total", "power_draw",
        "temperature_gpu", "sm_active", "sm_occupancy", "fan_speed", "clocks_current_sm", "clocks_current_memory",
    }),
    INTERFACE: frozenset({"ifHighSpeed", "ifOperStatus"}),
    COLLECTOR_HEALTH: frozenset({"up", "duration_seconds", "points"}),
}
"""Fields that are levels, not counters; everything else numeric is a raw counter (see docs/schema.md)."""


@dataclass(frozen=True)
class Resolution:
    step: timedelta
    retention: timedelta | None

    @property
    def label(self) -> str:
        seconds = int(self.step.total_seconds())
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds % size == 0:
                return f"{seconds // size}{unit}"
        return f"{seconds}s"


def rollup_frame(measurement: str, frame: pd.DataFrame, tags: Sequence[str], step: timedelta) -> list[Point]:
    """The rollup points at ``step`` of one wide frame (as EmbeddedStore.read returns it) whose tag columns are ``tags``."""
    if frame.empty:
        return []
    tags = list(tags)
    fields = [column for column in frame.columns if column != "time" and column not in tags]
    bucket = frame["time"].dt.floor(pd.Timedelta(step))
    gauges = GAUGES.get(measurement, frozenset())
    grouped = frame.assign(_bucket=bucket).groupby([*tags, "_bucket"], sort=False, dropna=False)
    aggregations: dict[str, pd.DataFrame | pd.Series] = {}
    for field in fields:
        if field in gauges and pd.api.types.is_numeric_dtype(frame[field]):
            aggregations[field] = grouped[field].mean()
            if f"{field}_max" not in frame.columns:  # a finer rollup already has it
                aggregations[f"{field}_max"] = grouped[field].max()
        elif field.endswith("_max") and field[:-4] in gauges:
            aggregations[field] = grouped[field].max()
        else:
            aggregations[field] = grouped[field].last()
    result = pd.DataFrame(aggregations)
    points = []
    for key, row in zip(result.index, result.itertuples(index=False, name=None)):
        *tag_values, start = key
        values = {name: value for name, value in zip(result.columns, row) if not _missing(value)}
        if values:
            points.append(Point(
                measurement,
                {name: value for name, value in zip(tags, tag_values) if value != ""},
                {name: float(value) if not isinstance(value, str) else value for name, value in values.items()},
                start.value,
            ))
    return points


class Rollups:
    """The rollup stores of ``raw``; call ``update()`` periodically (e.g. every minute)."""

    def __init__(self, raw: EmbeddedStore, resolutions: Sequence[Resolution], *, late_intervals: int = 2) -> None:
        if any(b.step <= a.step for a, b in zip(resolutions, resolutions[1:])):
            raise ValueError("rollup resolutions must be listed finest first, each coarser than the one before")
        for finer, coarser in zip(resolutions, resolutions[1:]):
            if coarser.step % finer.step:
                raise ValueError(f"rollup {coarser.label} is not a whole multiple of {finer.label}")
        self.raw = raw
        self.resolutions = list(resolutions)
        self.late_intervals = late_intervals
        self.stores = {
            resolution.label: EmbeddedStore(self.path_of(raw.path, resolution), retention=resolution.retention)
            for resolution in self.resolutions
        }

    @staticmethod
    def path_of(raw_path: Path, resolution: Resolution) -> Path:
        return raw_path.with_name(f"{raw_path.stem}.{resolution.label}{raw_path.suffix}")

    def update(self, now: TimeLike | None = None) -> dict[str, int]:
        """Roll up every complete interval not yet done (plus the late ones); apply retention. Points written per level."""
        now_ns = _to_ns(pd.Timestamp.now(tz="UTC") if now is None else now, "now")
        written = {}
        source = self.raw
        for resolution in self.resolutions:
            store = self.stores[resolution.label]
            step_ns = int(resolution.step.total_seconds() * 1e9)
            end = now_ns - now_ns % step_ns
            count = 0
            for measurement in source.measurements():
                done = store.time_range(measurement)
                if done is None:
                    first = source.time_range(measurement)
                    start = first.first.value - first.first.value % step_ns
                else:
                    start = done.last.value - self.late_intervals * step_ns + step_ns
                if start >= end:
                    continue
                frame = source.read(measurement, start, end)
                points = rollup_frame(measurement, frame, _tag_columns(source, measurement, frame, start, end),
                                      resolution.step)
                if points:
                    store.write(points)
                    count += len(points)
            written[resolution.label] = count
            source = store
        # Only now: a coarser level is built from the finer one before its retention trims it.
        for store in self.stores.values():
            store.apply_retention(now_ns)
        return written

    def store_for(self, start: TimeLike, end: TimeLike, *, raw_interval: timedelta = timedelta(seconds=10),
                  max_rows_per_series: int = 2000) -> EmbeddedStore:
        """The finest store (raw first) giving at most ``max_rows_per_series`` rows per series over [start, end)."""
        span_s = (_to_ns(end, "end") - _to_ns(start, "start")) / 1e9
        candidates = [(raw_interval, self.raw)] + [(r.step, self.stores[r.label]) for r in self.resolutions]
        for step, store in candidates:
            if span_s / step.total_seconds() <= max_rows_per_series:
                return store
        return candidates[-1][1]

    def close(self) -> None:
        for store in self.stores.values():
            store.close()


def _tag_columns(source: EmbeddedStore, measurement: str, frame: pd.DataFrame, start: int, end: int) -> list[str]:
    """The tag columns of ``frame``: its str columns, less the text fields.

    A frame does not say which str columns are tags; reading a str column as
    a field does: a tag read as a field has no samples.
    """
    text = [column for column in frame.columns[1:] if pd.api.types.is_string_dtype(frame[column])]
    return [column for column in text if source.read(measurement, start, end, fields=[column]).empty]


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)
