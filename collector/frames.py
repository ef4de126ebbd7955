"""Points as wide pandas frames: one frame per measurement, one row per series and time.

The detector works on tables such as "every NIC port's counters over the last
3 hours". Both the points a source produces and what the embedded store reads
back are shaped here, by one function, so they cannot drift apart:

- ``time``: datetime64[ns, UTC];
- one column per tag, ``str``; a series without that tag has ``""``, so
  ``groupby`` over tags keeps every series;
- one column per field: float64 when every value is a number or boolean,
  ``str`` otherwise; NaN where a row lacks the field;
- rows sorted by the tags (identifying tags of the measurement first, see
  ``collector.schema.TAG_KEYS``) and then by time.

Lines of one series at one timestamp merge into one row (Telegraf's
infiniband input writes counters and hw_counters as two lines); when both
carry a field, the later line wins. A field named like a tag (or ``time``)
gets the column ``<name>_field``; a tag named ``time`` gets ``time_tag``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from collector.schema import TAG_KEYS, FieldValue, Point

__all__ = ["points_to_frames", "frame_from_samples"]


def frame_from_samples(
    measurement: str,
    series_tags: Sequence[Mapping[str, str]],
    series: np.ndarray,
    times_ns: np.ndarray,
    field_names: Sequence[str],
    fields: np.ndarray,
    values: Sequence[FieldValue],
) -> pd.DataFrame:
    """The wide frame of one measurement from its samples in long form.

    Sample ``i`` says: series ``series[i]`` (an index into ``series_tags``) had
    field ``field_names[fields[i]]`` = ``values[i]`` at ``times_ns[i]``. When a
    series, time and field occur more than once, the last sample wins.
    """
    count = len(values)
    series = np.asarray(series, dtype=np.int64)
    # Tags of series without samples here would be columns no row uses.
    tag_columns = _tag_columns(measurement, [series_tags[index] for index in np.unique(series)])
    times_ns = np.asarray(times_ns, dtype=np.int64)
    fields = np.asarray(fields, dtype=np.int64)
    value_array = np.empty(count, dtype=object)
    value_array[:] = values

    # Rank the series by their tag values so rows come out sorted by tags.
    series_keys = [tuple(tags.get(key, "") for key in tag_columns) for tags in series_tags]
    series_order = sorted(range(len(series_keys)), key=series_keys.__getitem__)
    series_rank = np.empty(len(series_keys), dtype=np.int64)
    series_rank[series_order] = np.arange(len(series_keys))
    rank = series_rank[series] if count else series

    # Sort by (rank, time, field, arrival) and keep the last arrival of each
    # (rank, time, field): that is the later line winning a field conflict.
    order = np.lexsort((np.arange(count), fields, times_ns, rank))
    rank, times_ns, fields, value_array = rank[order], times_ns[order], fields[order], value_array[order]
    if count:
        last = np.ones(count, dtype=bool)
        last[:-1] = (rank[1:] != rank[:-1]) | (times_ns[1:] != times_ns[:-1]) | (fields[1:] != fields[:-1])
        rank, times_ns, fields, value_array = rank[last], times_ns[last], fields[last], value_array[last]
        count = len(rank)

    new_row = np.ones(count, dtype=bool)
    new_row[1:] = (rank[1:] != rank[:-1]) | (times_ns[1:] != times_ns[:-1])
    row_of_sample = np.cumsum(new_row) - 1
    row_rank = rank[new_row]
    row_count = len(row_rank)

    columns: dict[str, object] = {
        "time": pd.DatetimeIndex(times_ns[new_row].view("datetime64[ns]")).tz_localize("UTC")
    }
    sorted_keys = [series_keys[index] for index in series_order]
    for position, tag in enumerate(tag_columns):
        by_rank = np.array([key[position] for key in sorted_keys], dtype=object)
        columns[_column_name(tag, reserved=("time",), suffix="_tag")] = pd.array(
            by_rank[row_rank] if row_count else by_rank[:0], dtype="str"
        )

    by_field = np.argsort(fields, kind="stable")
    boundaries = np.flatnonzero(np.diff(fields[by_field])) + 1
    reserved = ("time", *tag_columns)
    for group in np.split(by_field, boundaries) if count else []:
        name = field_names[fields[group[0]]]
        group_values = value_array[group]
        rows = row_of_sample[group]
        if str in set(map(type, group_values)):
            column = np.full(row_count, np.nan, dtype=object)
            column[rows] = [value if isinstance(value, str) else str(float(value)) for value in group_values]
            column = pd.array(column, dtype="str")
        else:
            column = np.full(row_count, np.nan)
            column[rows] = group_values.astype(np.float64)
        columns[_column_name(name, reserved=reserved, suffix="_field")] = column
    names = list(columns)
    field_start = 1 + len(tag_columns)
    ordered = names[:field_start] + sorted(names[field_start:])
    return pd.DataFrame({name: columns[name] for name in ordered}, copy=False)


def points_to_frames(points: Iterable[Point]) -> dict[str, pd.DataFrame]:
    """One wide frame per measurement, in the shape described in this module's docstring."""
    by_measurement: dict[str, _Samples] = {}
    for point in points:
        samples = by_measurement.get(point.measurement)
        if samples is None:
            samples = by_measurement[point.measurement] = _Samples()
        samples.add(point)
    return {
        measurement: samples.frame(measurement)
        for measurement, samples in sorted(by_measurement.items())
    }


class _Samples:
    """Long-form samples of one measurement, collected point by point."""

    def __init__(self) -> None:
        self.series_index: dict[tuple, int] = {}
        self.series_tags: list[dict[str, str]] = []
        self.field_index: dict[str, int] = {}
        self.series: list[int] = []
        self.times: list[int] = []
        self.fields: list[int] = []
        self.values: list[FieldValue] = []

    def add(self, point: Point) -> None:
        tags = point.tags
        if "" in tags.values():
            # An empty tag is no tag, as in line protocol.
            tags = {key: value for key, value in tags.items() if value != ""}
            key: tuple = (point.measurement, tuple(sorted(tags.items())))
        else:
            key = point.series_key()
        series = self.series_index.get(key)
        if series is None:
            series = self.series_index[key] = len(self.series_tags)
            self.series_tags.append(dict(tags))
        field_index = self.field_index
        for name, value in point.fields.items():
            if isinstance(value, float) and value - value != 0.0:
                continue  # NaN and infinities are no value, as in InfluxDB
            field = field_index.get(name)
            if field is None:
                field = field_index[name] = len(field_index)
            self.series.append(series)
            self.times.append(point.time_ns)
            self.fields.append(field)
            self.values.append(value)

    def frame(self, measurement: str) -> pd.DataFrame:
        return frame_from_samples(
            measurement,
            self.series_tags,
            np.array(self.series, dtype=np.int64),
            np.array(self.times, dtype=np.int64),
            list(self.field_index),
            np.array(self.fields, dtype=np.int64),
            self.values,
        )


def _tag_columns(measurement: str, series_tags: Sequence[Mapping[str, str]]) -> list[str]:
    """The measurement's identifying tags first (those present), then the rest sorted."""
    present = set()
    for tags in series_tags:
        present.update(tags)
    known = [key for key in TAG_KEYS.get(measurement, ()) if key in present]
    return known + sorted(present.difference(known))


def _column_name(name: str, *, reserved: Sequence[str], suffix: str) -> str:
    return name + suffix if name in reserved else name
