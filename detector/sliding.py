"""The streaming detector's frames over a sliding window, read from the store only where they are new.

Each step of :class:`detector.streaming.StreamingDetector` needs the
detector's measurements over ``[last decided - context, newest]``: two hours
of context for a few seconds of new data. Reading that whole window again
every step made each step's cost grow with the context: with 100 switch
ports and 8 NICs polled every second, a full two-hour read took 13 s of CPU
and 2.5 GB at its peak (a Python tuple per sample), for a step due every
10 s. :class:`SlidingFrames` keeps the window's frames in memory (about
100 MB for that cluster: the frames' own size, bounded by the window) and
reads only what is new since its last read.

- **The same frames as one read.** :meth:`SlidingFrames.read` returns exactly
  what :func:`detector.batch.read_frames` gives for the same window (the
  collector.frames shape: rows by tags, then time; a tag column only where a
  series in the window has that tag, a field column only where a row in the
  window has that field); ``tests/test_sliding.py`` compares them step by step.
- **Late data.** Each read reads again the last ``reread`` (one minute by
  default) before the previous read's end, so a sample stored up to that
  long after the newest one was read still joins the context. Later than
  that, it is seen only by a window that starts afresh (a restart, or a
  window that does not follow on from the previous one).
- **Bounded reads.** A read that starts afresh is made in ``chunk`` slices
  (10 minutes by default), so its peak is a slice's samples as Python
  objects, not the whole window's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

import pandas as pd

from collector.schema import TAG_KEYS
from detector.batch import MEASUREMENTS, TelemetryReader, read_frames

__all__ = ["SlidingFrames", "TaggedReader"]

TIME = "time"


class TaggedReader(TelemetryReader, Protocol):
    """A store that also lists the tag keys of a measurement (``collector.store.EmbeddedStore`` does)."""

    def tag_keys(self, measurement: str) -> list[str]: ...


class SlidingFrames:
    """The detector's measurements over a window that moves forward; see the module docstring."""

    def __init__(self, store: TaggedReader, reread: timedelta = timedelta(minutes=1),
                 chunk: timedelta = timedelta(minutes=10)) -> None:
        if not callable(getattr(store, "tag_keys", None)):
            raise TypeError(f"the streaming detector needs a store that lists its tag keys (tag_keys(); "
                            f"EmbeddedStore does), not {type(store).__name__}")
        if reread < timedelta(0) or chunk <= timedelta(0):
            raise ValueError(f"need reread >= 0 and chunk > 0, got reread {reread} and chunk {chunk}")
        self.store = store
        self.reread = pd.Timedelta(reread)
        self.chunk = pd.Timedelta(chunk)
        self.frames: dict[str, pd.DataFrame] = {}
        """The rows of ``[start, end]`` of every measurement that has some."""
        self.start: pd.Timestamp | None = None
        self.end: pd.Timestamp | None = None

    def read(self, start: pd.Timestamp, end: pd.Timestamp) -> dict[str, pd.DataFrame]:
        """The frames of ``[start, end]`` (both ends included), as ``read_frames(store, start, end)``."""
        start, end = pd.Timestamp(start), pd.Timestamp(end)
        if end < start:
            raise ValueError(f"window end {end} is before its start {start}")
        if self.start is None or self.end is None or start < self.start or end < self.end:
            kept: dict[str, pd.DataFrame] = {}
            read_from = start  # afresh: what is kept does not cover this window
        else:
            read_from = max(start, self.end - self.reread)
            kept = {measurement: _rows_between(frame, start, read_from) for measurement, frame in self.frames.items()}
        pieces: dict[str, list[pd.DataFrame]] = {measurement: [frame] for measurement, frame in kept.items()}
        for piece in self._read_slices(read_from, end):
            for measurement, frame in piece.items():
                pieces.setdefault(measurement, []).append(frame)
        frames = {}
        for measurement in MEASUREMENTS:
            parts = [frame for frame in pieces.get(measurement, ()) if not frame.empty]
            if parts:
                frames[measurement] = _combine(measurement, parts, self.store.tag_keys(measurement))
        self.frames, self.start, self.end = frames, start, end
        return dict(frames)

    def _read_slices(self, start: pd.Timestamp, end: pd.Timestamp) -> list[dict[str, pd.DataFrame]]:
        """``read_frames`` of ``[start, end]`` in slices of at most ``chunk``."""
        slices = []
        while True:
            stop = start + self.chunk
            if stop > end:
                slices.append(read_frames(self.store, start, end))
                return slices
            slices.append(read_frames(self.store, start, stop - pd.Timedelta(1, "ns")))
            start = stop


def _rows_between(frame: pd.DataFrame, start: pd.Timestamp, stop: pd.Timestamp) -> pd.DataFrame:
    """The rows of ``frame`` in ``[start, stop)``."""
    times = frame[TIME]
    return frame[(times >= start) & (times < stop)]


def _combine(measurement: str, parts: list[pd.DataFrame], tag_keys: list[str]) -> pd.DataFrame:
    """Frames of one measurement over disjoint time ranges as one frame in the collector.frames shape."""
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    keys = set(tag_keys)
    tags = [column for column in frame.columns if column != TIME and _tag_name(column) in keys]
    fields = sorted(column for column in frame.columns if column != TIME and column not in tags)
    columns: dict[str, object] = {TIME: frame[TIME]}
    for tag in tags:
        values = frame[tag].fillna("") if len(parts) > 1 else frame[tag]
        if (values != "").any():  # a tag no series in the window has is no column
            columns[tag] = values
    for name in fields:
        values = frame[name]
        if values.dtype == object:  # numbers in one part, text in another: text, as one read makes it
            values = pd.Series(pd.array([v if isinstance(v, str) or v != v else str(float(v)) for v in values],
                                        dtype="str"), index=values.index)
        if values.notna().any():  # a field no row in the window has is no column
            columns[name] = values
    known = [key for key in TAG_KEYS.get(measurement, ()) if key in columns]
    rest = sorted((column for column in columns if column in tags and column not in known), key=_tag_name)
    present = [*known, *rest]
    combined = pd.DataFrame({name: columns[name] for name in [TIME, *present, *(f for f in fields if f in columns)]},
                            copy=False)
    if len(parts) > 1:
        combined = combined.sort_values([*present, TIME], kind="stable", ignore_index=True)
    elif not isinstance(combined.index, pd.RangeIndex) or combined.index.start != 0:
        combined = combined.reset_index(drop=True)
    return combined


def _tag_name(column: str) -> str:
    """The tag behind a column (collector.frames names a tag called ``time`` ``time_tag``)."""
    return "time" if column == "time_tag" else column

