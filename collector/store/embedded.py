"""The default store: one SQLite file in WAL mode, with InfluxDB's overwrite semantics.

Why SQLite (see docs/storage.md): the standard library has it, a committed
transaction survives kill -9 and power loss, and in WAL mode other processes
(the CLI, a notebook) read while the daemon writes.

Layout: ``series`` gives each measurement + tag set an id, ``fields`` each field
name, and ``samples`` holds one row per (series, time, field) in a WITHOUT
ROWID table whose primary key is that triple. A time-range read of a
measurement is therefore one index range per series, and writing the same
series, field and timestamp again replaces the value, so redelivered batches
are idempotent. SQLite keeps integers, floats and strings as they are;
booleans are stored as 0/1 and unsigned values above 2^63-1 as floats.

One process writes (the daemon; writes are serialized by a lock, so any
number of its threads may call ``write``); any number of threads and
processes read. Every thread gets its own read connection, so a long read
never holds up a write.
"""

from __future__ import annotations

import asyncio
import gc
import json
import numbers
import sqlite3
import sys
import threading
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from collector.frames import frame_from_samples
from collector.schema import FieldValue, Point

__all__ = ["AsyncEmbeddedStore", "EmbeddedStore", "TimeRange"]

SCHEMA_VERSION = 1
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

_SCHEMA = """
CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    measurement TEXT NOT NULL,
    tags TEXT NOT NULL,              -- JSON object, keys sorted, empty values dropped
    UNIQUE (measurement, tags)
);
CREATE TABLE fields (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE samples (
    series_id INTEGER NOT NULL,
    time_ns INTEGER NOT NULL,
    field_id INTEGER NOT NULL,
    value,                           -- no declared type: integers, floats and text stay as written
    PRIMARY KEY (series_id, time_ns, field_id)
) WITHOUT ROWID;
"""

_UPSERT = (
    "INSERT INTO samples (series_id, time_ns, field_id, value) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (series_id, time_ns, field_id) DO UPDATE SET value = excluded.value"
)

TimeLike = int | datetime | pd.Timestamp
"""A time: nanoseconds since the epoch, or a timezone-aware datetime/Timestamp."""


class TimeRange(NamedTuple):
    """First and last sample time of a measurement."""

    first: pd.Timestamp
    last: pd.Timestamp


class EmbeddedStore:
    """Points in one SQLite file; see the module docstring for the layout and guarantees."""

    def __init__(
        self,
        path: str | Path,
        retention: timedelta | None = timedelta(days=30),
        *,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        self.retention = retention
        self.read_only = read_only
        self._lock = threading.Lock()  # guards the write connection, the id caches and _readers
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._series_ids: dict[tuple, int] = {}
        self._field_ids: dict[str, int] = {}
        self._closed = False
        self._writer: sqlite3.Connection | None = None
        if read_only:
            if not self.path.exists():
                raise FileNotFoundError(f"no strandwatch store at {self.path}")
            self._check_schema(self._reader())
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = self._open_writer()

    # --- connections -----------------------------------------------------

    def _connect(self, *, read_only: bool) -> sqlite3.Connection:
        target = f"file:{self.path}?mode=ro" if read_only else str(self.path)
        try:
            connection = sqlite3.connect(
                target, uri=read_only, timeout=30.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.OperationalError as error:
            raise OSError(f"cannot open strandwatch store {self.path}: {error}") from None
        try:
            connection.execute("PRAGMA cache_size = -65536")  # 64 MiB
            connection.execute("PRAGMA mmap_size = 268435456")
        except sqlite3.DatabaseError as error:
            connection.close()
            raise OSError(f"{self.path} is not a strandwatch store: {error}") from None
        return connection

    def _open_writer(self) -> sqlite3.Connection:
        connection = self._connect(read_only=False)
        try:
            # Look before changing anything: another application's database stays untouched.
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version == 0 and connection.execute("SELECT 1 FROM sqlite_master").fetchone():
                raise OSError(f"{self.path} is an SQLite database, but not a strandwatch store")
            if version not in (0, SCHEMA_VERSION):
                raise OSError(self._version_message(version))
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise OSError(f"cannot put {self.path} in WAL mode (it stays in {mode!r})")
            # FULL: a committed write is on disk even after a power loss, not just a crash.
            connection.execute("PRAGMA synchronous = FULL")
            if version == 0:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    if connection.execute("PRAGMA user_version").fetchone()[0] == 0:  # nobody beat us to it
                        for statement in _SCHEMA.split(";"):
                            if statement.strip():
                                connection.execute(statement)
                        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    connection.execute("COMMIT")
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
        except sqlite3.DatabaseError as error:
            connection.close()
            raise OSError(f"{self.path} is not a strandwatch store: {error}") from None
        except BaseException:
            connection.close()
            raise
        return connection

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection."""
        if self._closed:
            raise RuntimeError(f"store {self.path} is closed")
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect(read_only=self.read_only)
            connection.execute("PRAGMA query_only = ON")
            with self._lock:
                self._readers.append(connection)
            self._local.connection = connection
        return connection

    def _check_schema(self, connection: sqlite3.Connection) -> None:
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as error:
            raise OSError(f"{self.path} is not a strandwatch store: {error}") from None
        if version != SCHEMA_VERSION:
            raise OSError(self._version_message(version))

    def _version_message(self, version: int) -> str:
        return f"{self.path} has store schema version {version}; this strandwatch knows version {SCHEMA_VERSION}"

    def close(self) -> None:
        """Close every connection; later calls raise."""
        with self._lock:
            self._closed = True
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            for connection in self._readers:
                connection.close()
            self._readers.clear()

    def __enter__(self) -> EmbeddedStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- writing ---------------------------------------------------------

    def write(self, points: Iterable[Point]) -> int:
        """Store ``points`` in one transaction; returns the number of field values written.

        When this returns, the write is committed: it survives the process
        being killed and the machine losing power. The same measurement, tags,
        field and timestamp overwrite what was there. NaN and infinite floats
        are skipped (InfluxDB cannot store them either); an empty tag value is
        the same as no tag.
        """
        with self._lock:
            connection = self._writable()
            connection.execute("BEGIN IMMEDIATE")
            try:
                new_series: dict[tuple, int] = {}
                new_fields: dict[str, int] = {}
                rows = self._rows(connection, points, new_series, new_fields)
                rows.sort(key=_ROW_KEY)  # B-tree order: each page is visited once
                connection.executemany(_UPSERT, rows)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            # Ids made inside the transaction are only real once it committed.
            self._series_ids.update(new_series)
            self._field_ids.update(new_fields)
            return len(rows)

    def _writable(self) -> sqlite3.Connection:
        if self._writer is None:
            raise RuntimeError(f"store {self.path} is {'read-only' if self.read_only else 'closed'}")
        return self._writer

    def _rows(
        self,
        connection: sqlite3.Connection,
        points: Iterable[Point],
        new_series: dict[tuple, int],
        new_fields: dict[str, int],
    ) -> list[tuple[int, int, int, FieldValue]]:
        series_ids = self._series_ids
        field_ids = self._field_ids
        rows: list[tuple[int, int, int, FieldValue]] = []
        append = rows.append
        for point in points:
            tags = point.tags
            if "" in tags.values():
                tags = {key: value for key, value in tags.items() if value != ""}
                key: tuple = (point.measurement, tuple(sorted(tags.items())))
            else:
                key = point.series_key()
            series = None  # looked up at the first value worth storing
            time_ns = point.time_ns
            for name, value in point.fields.items():
                kind = type(value)
                if kind is float:
                    if value - value != 0.0:
                        continue
                elif kind is int:
                    if not _INT64_MIN <= value <= _INT64_MAX:
                        value = float(value)  # SQLite integers are 64-bit signed
                elif kind is not str and kind is not bool:
                    value = _storable(value, point, name)
                    if value is None:
                        continue
                field = field_ids.get(name) or new_fields.get(name)
                if field is None:
                    field = new_fields[name] = _field_id(connection, name)
                if series is None:
                    series = series_ids.get(key) or new_series.get(key)
                    if series is None:
                        series = new_series[key] = _series_id(connection, point.measurement, key[1])
                append((series, time_ns, field, value))
        return rows

    def apply_retention(self, now: TimeLike | None = None) -> int:
        """Delete samples older than ``now - retention``; returns how many were deleted."""
        if self.retention is None:
            return 0
        cutoff = _to_ns(pd.Timestamp.now(tz="UTC") if now is None else now, "now") - _timedelta_ns(self.retention)
        with self._lock:
            connection = self._writable()
            connection.execute("BEGIN IMMEDIATE")
            try:
                series = connection.execute("SELECT id FROM series").fetchall()
                deleted = connection.executemany(
                    "DELETE FROM samples WHERE series_id = ? AND time_ns < ?",
                    [(series_id, cutoff) for (series_id,) in series],
                ).rowcount
                connection.execute(
                    "DELETE FROM series WHERE NOT EXISTS (SELECT 1 FROM samples WHERE series_id = series.id)"
                )
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            self._series_ids.clear()  # some series may be gone
            return deleted

    # --- reading ---------------------------------------------------------

    def measurements(self) -> list[str]:
        """The measurements that have data, sorted."""
        rows = self._reader().execute("SELECT DISTINCT measurement FROM series ORDER BY measurement")
        return [measurement for (measurement,) in rows]

    def field_names(self) -> list[str]:
        """Every field name the store holds (of any measurement), sorted.

        A reader that wants fields by pattern (``rx_prio3_pause``, vendor counters) resolves the
        pattern against these names and reads only those (``read(..., fields=...)``).
        """
        return [name for (name,) in self._reader().execute("SELECT name FROM fields ORDER BY name")]

    def tag_keys(self, measurement: str) -> list[str]:
        """The tag keys of ``measurement``'s series (any series, any time), sorted.

        A reader that merges frames read at different times (the streaming
        detector's sliding window) tells a frame's tag columns from its field columns by these.
        """
        keys: set[str] = set()
        for (tags_json,) in self._reader().execute("SELECT tags FROM series WHERE measurement = ?", (measurement,)):
            keys.update(json.loads(tags_json))
        return sorted(keys)

    def time_range(self, measurement: str) -> TimeRange | None:
        """First and last sample time of ``measurement``; None when it has no data."""
        first, last = self._reader().execute(
            "SELECT min((SELECT min(time_ns) FROM samples WHERE series_id = series.id)),"
            " max((SELECT max(time_ns) FROM samples WHERE series_id = series.id))"
            " FROM series WHERE measurement = ?",
            (measurement,),
        ).fetchone()
        if first is None:
            return None
        return TimeRange(pd.Timestamp(first, unit="ns", tz="UTC"), pd.Timestamp(last, unit="ns", tz="UTC"))

    def read(
        self,
        measurement: str,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        fields: Collection[str] | None = None,
        tags: Mapping[str, str | Collection[str]] | None = None,
    ) -> pd.DataFrame:
        """The wide frame (see collector.frames) of ``measurement`` from ``start`` until before ``end``.

        ``fields`` limits the field columns; ``tags`` keeps only series whose
        tags match (a value or a collection of accepted values per tag). The
        frame has exactly the shape ``points_to_frames`` gives the same points.
        """
        if isinstance(fields, str):
            raise TypeError("fields must be a collection of field names, not a string")
        conditions = ["series_id IN (SELECT value FROM json_each(?))"]
        parameters: list[object] = []
        if start is not None:
            conditions.append("time_ns >= ?")
            parameters.append(_to_ns(start, "start"))
        if end is not None:
            conditions.append("time_ns < ?")
            parameters.append(_to_ns(end, "end"))

        # A read makes a tuple per sample; the cyclic GC walking them over and
        # over would double the read time, and they hold no cycles.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._read(measurement, conditions, parameters, fields, tags)
        finally:
            if gc_was_enabled:
                gc.enable()

    def _read(
        self,
        measurement: str,
        conditions: list[str],
        parameters: list[object],
        fields: Collection[str] | None,
        tags: Mapping[str, str | Collection[str]] | None,
    ) -> pd.DataFrame:
        connection = self._reader()
        connection.execute("BEGIN")  # one snapshot for the series and their samples
        try:
            series_rows = connection.execute(
                "SELECT id, tags FROM series WHERE measurement = ? ORDER BY id", (measurement,)
            ).fetchall()
            series_ids: list[int] = []
            series_tags: list[dict[str, str]] = []
            for series_id, tags_json in series_rows:
                # Interned: frames kept from many reads (the streaming detector's window) then share
                # one copy of each tag value instead of holding a new one per read.
                series_tag_values = {key: sys.intern(value) for key, value in json.loads(tags_json).items()}
                if tags is None or _tags_match(series_tag_values, tags):
                    series_ids.append(series_id)
                    series_tags.append(series_tag_values)
            field_names = dict(connection.execute("SELECT id, name FROM fields"))
            if fields is not None:
                wanted = set(fields)
                conditions.append("field_id IN (SELECT value FROM json_each(?))")
                parameters.append(json.dumps([id_ for id_, name in field_names.items() if name in wanted]))
            rows = connection.execute(
                f"SELECT series_id, time_ns, field_id, value FROM samples WHERE {' AND '.join(conditions)}",
                [json.dumps(series_ids), *parameters],
            ).fetchall()
        finally:
            connection.execute("COMMIT")

        if rows:
            sample_series, times, sample_fields, values = zip(*rows)
        else:
            sample_series = times = sample_fields = values = ()
        # Map database ids to positions in series_tags and in the field name list.
        series_position = np.searchsorted(np.array(series_ids, dtype=np.int64), np.array(sample_series, dtype=np.int64))
        field_list = sorted(field_names)
        field_position = np.searchsorted(np.array(field_list, dtype=np.int64), np.array(sample_fields, dtype=np.int64))
        return frame_from_samples(
            measurement,
            series_tags,
            series_position,
            np.array(times, dtype=np.int64),
            [field_names[id_] for id_ in field_list],
            field_position,
            values,
        )


class AsyncEmbeddedStore:
    """EmbeddedStore for asyncio code: every call runs in a worker thread."""

    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store

    async def write(self, points: Iterable[Point]) -> int:
        return await asyncio.to_thread(self.store.write, list(points))

    async def read(
        self,
        measurement: str,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        fields: Collection[str] | None = None,
        tags: Mapping[str, str | Collection[str]] | None = None,
    ) -> pd.DataFrame:
        return await asyncio.to_thread(self.store.read, measurement, start, end, fields, tags)

    async def measurements(self) -> list[str]:
        return await asyncio.to_thread(self.store.measurements)

    async def time_range(self, measurement: str) -> TimeRange | None:
        return await asyncio.to_thread(self.store.time_range, measurement)

    async def apply_retention(self, now: TimeLike | None = None) -> int:
        return await asyncio.to_thread(self.store.apply_retention, now)

    async def close(self) -> None:
        await asyncio.to_thread(self.store.close)


_ROW_KEY = itemgetter(0, 1, 2)


def _series_id(connection: sqlite3.Connection, measurement: str, tag_items: tuple) -> int:
    tags_json = json.dumps(dict(tag_items), separators=(",", ":"), ensure_ascii=False)
    row = connection.execute(
        "SELECT id FROM series WHERE measurement = ? AND tags = ?", (measurement, tags_json)
    ).fetchone()
    if row:
        return row[0]
    return connection.execute(
        "INSERT INTO series (measurement, tags) VALUES (?, ?)", (measurement, tags_json)
    ).lastrowid


def _field_id(connection: sqlite3.Connection, name: str) -> int:
    row = connection.execute("SELECT id FROM fields WHERE name = ?", (name,)).fetchone()
    if row:
        return row[0]
    return connection.execute("INSERT INTO fields (name) VALUES (?)", (name,)).lastrowid


def _storable(value: object, point: Point, name: str) -> FieldValue | None:
    """A value of an unusual type (numpy scalars, subclasses) as one SQLite keeps; None to skip."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, numbers.Integral):
        value = int(value)
        return value if _INT64_MIN <= value <= _INT64_MAX else float(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if value - value == 0.0 else None
    if isinstance(value, str):
        return str(value)
    raise TypeError(f"field {name!r} of {point!r} has a value of type {type(value).__name__}")


def _tags_match(series_tags: Mapping[str, str], wanted: Mapping[str, str | Collection[str]]) -> bool:
    for key, accepted in wanted.items():
        value = series_tags.get(key, "")
        if isinstance(accepted, str):
            if value != accepted:
                return False
        elif value not in accepted:
            return False
    return True


def _to_ns(value: TimeLike, name: str) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name} {value!r} has no timezone; use a UTC time such as pd.Timestamp.now(tz='UTC')")
        return pd.Timestamp(value).as_unit("ns").value
    raise TypeError(f"{name} must be nanoseconds or a timezone-aware datetime, not {type(value).__name__}")


def _timedelta_ns(value: timedelta) -> int:
    return pd.Timedelta(value).as_unit("ns").value
