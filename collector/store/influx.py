"""InfluxDB as the store: v1 ``/write`` (1.x), v2 writes through influxdb-client (2.x, 3.x), InfluxQL reads.

Writers (``InfluxV1Writer``, ``InfluxV2Writer``) send line protocol in
batches of ``batch_points``, gzipped, synchronously: ``write`` returns when
every point was accepted by the database or is on disk in the spool, never
while points sit in a memory buffer. That is why the v2 writer calls
influxdb-client's write API in SYNCHRONOUS mode per batch instead of its
background batching WriteApi, which reports errors only to callbacks, does
nothing on ``flush()`` and loses its buffer without ``close()``.

Failures:

- 429 and 503 are retried after the server's ``Retry-After`` (seconds or an
  HTTP date), other 5xx and connection errors with exponential backoff and
  jitter, up to ``max_retries`` times;
- after that the database counts as unreachable: the batch goes to the spool
  (``collector.transport.spool``), and so does everything written while the
  spool is not empty, so order is kept; each later ``write`` (and ``flush``)
  first tries to replay the spool. ``close`` flushes; what still cannot be
  sent stays on disk for the next writer on the same spool directory;
- 400 (malformed line protocol, a field type conflict), 401/403 and 404 are
  not retried: ``InfluxWriteError`` (a ValueError) names the status and the
  server's message.

Redelivered points are harmless: the same measurement, tag set and timestamp
overwrite in InfluxDB.

``InfluxQLReader`` reads through ``/query`` (1.x, 2.x with a DBRP mapping,
3.x) and returns the same wide frames as ``collector.frames``, so the
detector runs on either store.
"""

from __future__ import annotations

import asyncio
import gzip as gzip_module
import http.client
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import numpy as np
import pandas as pd

from collector.frames import frame_from_samples
from collector.lineprotocol import encode
from collector.schema import FieldValue, Point
from collector.transport.spool import Spool

__all__ = [
    "AsyncInfluxWriter",
    "InfluxQLReader",
    "InfluxUnavailableError",
    "InfluxV1Writer",
    "InfluxV2Writer",
    "InfluxWriteError",
]

log = logging.getLogger(__name__)


class InfluxWriteError(ValueError):
    """The database refused the points themselves (or our credentials): retrying cannot help."""


class InfluxUnavailableError(ConnectionError):
    """The database did not take a batch after every retry."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(parsedate_to_datetime(value).tzinfo)).total_seconds())
    except (TypeError, ValueError):
        return None


class _SpoolingWriter:
    """Batching, retries and the disk spool shared by the v1 and v2 writers; subclasses send one body."""

    def __init__(self, *, what: str, batch_points: int, max_retries: int, retry_min_s: float, retry_max_s: float,
                 spool_dir: str | Path | None, spool_max_bytes: int) -> None:
        self.what = what
        self.batch_points = batch_points
        self.max_retries = max_retries
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.spool = Spool(spool_dir, spool_max_bytes) if spool_dir is not None else None
        self.written = 0
        """Points the database accepted (spooled ones count when replayed)."""
        self.spooled = 0
        self._lock = threading.Lock()

    def _send(self, body: bytes) -> None:
        """POST one batch of line protocol; raise InfluxWriteError or InfluxUnavailableError (one attempt)."""
        raise NotImplementedError

    def write(self, points: Iterable[Point]) -> int:
        """Write ``points``; returns how many, once all are in the database or spooled on disk."""
        points = list(points)
        with self._lock:
            self._replay()
            for start in range(0, len(points), self.batch_points):
                chunk = points[start : start + self.batch_points]
                text = encode(chunk).encode()
                if not text:
                    continue
                if self.spool is not None and len(self.spool):
                    self._spool(text, len(chunk))
                    continue
                try:
                    self._send_with_retries(text)
                    self.written += len(chunk)
                except InfluxUnavailableError as error:
                    if self.spool is None:
                        raise
                    log.warning("%s unreachable (%s); spooling to %s", self.what, error, self.spool.directory)
                    self._spool(text, len(chunk))
        return len(points)

    def write_line_protocol(self, text: bytes, count: int) -> int:
        """Write ``count`` points already encoded (validated) as line protocol, in one request; like ``write``."""
        with self._lock:
            self._replay()
            if not text:
                return 0
            if self.spool is not None and len(self.spool):
                self._spool(text, count)
                return count
            try:
                self._send_with_retries(text)
                self.written += count
            except InfluxUnavailableError as error:
                if self.spool is None:
                    raise
                log.warning("%s unreachable (%s); spooling to %s", self.what, error, self.spool.directory)
                self._spool(text, count)
        return count

    def flush(self) -> bool:
        """Try to send everything spooled; True when the spool is empty."""
        with self._lock:
            self._replay()
            return self.spool is None or not len(self.spool)

    def close(self) -> None:
        """Flush; anything that still cannot be sent stays in the spool on disk."""
        if not self.flush():
            log.warning("%s: %d batches stay spooled in %s for the next start",
                        self.what, len(self.spool), self.spool.directory)

    def _spool(self, text: bytes, count: int) -> None:
        self.spool.put(str(count), text)
        self.spooled += count

    def _replay(self) -> None:
        if self.spool is None:
            return
        replayed = 0
        while entries := self.spool.peek(1):
            entry = entries[0]
            try:
                self._send_with_retries(entry.payload, retries=0)
            except InfluxUnavailableError:
                break
            except InfluxWriteError as error:
                log.error("%s refused a spooled batch; dropped: %s", self.what, error)
            else:
                self.written += int(entry.key)
                replayed += 1
            self.spool.remove(entry)
        if replayed:
            log.info("%s: replayed %d spooled batches (%d left)", self.what, replayed, len(self.spool))

    def _send_with_retries(self, body: bytes, retries: int | None = None) -> None:
        retries = self.max_retries if retries is None else retries
        delay = self.retry_min_s
        for attempt in range(retries + 1):
            try:
                self._send(body)
                return
            except InfluxUnavailableError as error:
                if attempt == retries:
                    raise
                wait = error.retry_after if error.retry_after is not None else delay * random.uniform(0.5, 1.0)
                log.debug("%s: %s; retry %d in %.2f s", self.what, error, attempt + 1, wait)
                time.sleep(min(wait, self.retry_max_s))
                delay = min(delay * 2, self.retry_max_s)


class InfluxV1Writer(_SpoolingWriter):
    """Writes to InfluxDB 1.x ``/write?db=...&precision=ns`` (also accepted by 2.x, 3.x and VictoriaMetrics)."""

    def __init__(self, url: str, database: str, *, username: str | None = None, password: str | None = None,
                 retention_policy: str | None = None, gzip: bool = True, batch_points: int = 5000,
                 timeout_s: float = 10.0, max_retries: int = 5, retry_min_s: float = 0.2, retry_max_s: float = 30.0,
                 spool_dir: str | Path | None = None, spool_max_bytes: int = 1 << 30) -> None:
        super().__init__(what=f"InfluxDB {url} database {database}", batch_points=batch_points,
                         max_retries=max_retries, retry_min_s=retry_min_s, retry_max_s=retry_max_s,
                         spool_dir=spool_dir, spool_max_bytes=spool_max_bytes)
        parameters = {"db": database, "precision": "ns"}
        if retention_policy:
            parameters["rp"] = retention_policy
        self.url = f"{url.rstrip('/')}/write?{urllib.parse.urlencode(parameters)}"
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        if username:
            import base64

            credentials = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {credentials}"
        self.gzip = gzip
        self.timeout_s = timeout_s

    def _send(self, body: bytes) -> None:
        headers = dict(self.headers)
        if self.gzip:
            body = gzip_module.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as error:
            message = error.read().decode("utf-8", "replace").strip()
            if error.code in (429, 503) or error.code >= 500:
                raise InfluxUnavailableError(f"HTTP {error.code}: {message}", _retry_after(error.headers.get("Retry-After"))) from None
            raise InfluxWriteError(f"{self.what} refused the write: HTTP {error.code}: {message}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            raise InfluxUnavailableError(str(getattr(error, "reason", error))) from None


class InfluxV2Writer(_SpoolingWriter):
    """Writes through influxdb-client's v2 API (InfluxDB 2.x, 3.x, 1.8+, VictoriaMetrics), one synchronous call per batch."""

    def __init__(self, url: str, *, org: str, bucket: str, token: str, gzip: bool = True, batch_points: int = 5000,
                 timeout_s: float = 10.0, max_retries: int = 5, retry_min_s: float = 0.2, retry_max_s: float = 30.0,
                 spool_dir: str | Path | None = None, spool_max_bytes: int = 1 << 30) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        super().__init__(what=f"InfluxDB {url} bucket {bucket}", batch_points=batch_points,
                         max_retries=max_retries, retry_min_s=retry_min_s, retry_max_s=retry_max_s,
                         spool_dir=spool_dir, spool_max_bytes=spool_max_bytes)
        # retries=False: the library's urllib3 retries would hide Retry-After from us and double our own.
        self._client = InfluxDBClient(url=url, token=token, org=org, timeout=int(timeout_s * 1000),
                                      enable_gzip=gzip, retries=False)
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self.org = org
        self.bucket = bucket

    def _send(self, body: bytes) -> None:
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        try:
            self._write_api.write(bucket=self.bucket, org=self.org, record=body, write_precision="ns")
        except ApiException as error:
            status = error.status or 0
            if status in (429, 503) or status >= 500:
                retry_after = _retry_after(error.headers.get("Retry-After") if error.headers else None)
                raise InfluxUnavailableError(f"HTTP {status}: {error.body}", retry_after) from None
            raise InfluxWriteError(f"{self.what} refused the write: HTTP {status}: {error.body}") from None
        except (Urllib3Error, OSError) as error:
            raise InfluxUnavailableError(str(error)) from None

    def close(self) -> None:
        super().close()
        self._client.close()


class AsyncInfluxWriter:
    """A v1 or v2 writer for asyncio code (the ingest service): calls run in a worker thread."""

    def __init__(self, writer: _SpoolingWriter) -> None:
        self.writer = writer

    async def write(self, points: Iterable[Point]) -> int:
        return await asyncio.to_thread(self.writer.write, list(points))

    async def write_line_protocol(self, text: bytes, count: int) -> int:
        return await asyncio.to_thread(self.writer.write_line_protocol, text, count)

    async def flush(self) -> bool:
        return await asyncio.to_thread(self.writer.flush)

    async def close(self) -> None:
        await asyncio.to_thread(self.writer.close)


class InfluxQLReader:
    """Reads InfluxDB over ``/query`` (InfluxQL) into the wide frames of ``collector.frames``."""

    def __init__(self, url: str, database: str, *, username: str | None = None, password: str | None = None,
                 token: str | None = None, timeout_s: float = 60.0, chunk_size: int = 20_000) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.timeout_s = timeout_s
        self.chunk_size = chunk_size
        self.headers: dict[str, str] = {}
        if token:
            self.headers["Authorization"] = f"Token {token}"
        elif username:
            import base64

            self.headers["Authorization"] = "Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode()

    def query(self, statement: str) -> list[dict]:
        """The ``series`` of every result of ``statement`` (chunked responses joined)."""
        data = urllib.parse.urlencode({
            "q": statement, "db": self.database, "epoch": "ns", "chunked": "true", "chunk_size": self.chunk_size,
        }).encode()
        request = urllib.request.Request(f"{self.url}/query", data=data, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            raise InfluxWriteError(f"InfluxDB {self.url} refused {statement!r}: HTTP {error.code}: "
                                   f"{error.read().decode('utf-8', 'replace').strip()}") from None
        except (urllib.error.URLError, OSError) as error:
            raise InfluxUnavailableError(f"InfluxDB {self.url}: {getattr(error, 'reason', error)}") from None
        series: list[dict] = []
        decoder = json.JSONDecoder()
        text = body.decode()
        position = 0
        while position < len(text):
            while position < len(text) and text[position].isspace():
                position += 1
            if position == len(text):
                break
            document, position = decoder.raw_decode(text, position)
            for result in document.get("results", []):
                if "error" in result:
                    raise InfluxWriteError(f"InfluxDB {self.url}: {statement!r}: {result['error']}")
                series.extend(result.get("series", []))
            if "error" in document:
                raise InfluxWriteError(f"InfluxDB {self.url}: {statement!r}: {document['error']}")
        return series

    def measurements(self) -> list[str]:
        return sorted(values[0] for series in self.query("SHOW MEASUREMENTS") for values in series.get("values", []))

    def read(
        self,
        measurement: str,
        start: int | datetime | pd.Timestamp | None = None,
        end: int | datetime | pd.Timestamp | None = None,
        fields: Collection[str] | None = None,
        tags: Mapping[str, str | Collection[str]] | None = None,
    ) -> pd.DataFrame:
        """The wide frame of ``measurement`` from ``start`` until before ``end``; same arguments as EmbeddedStore.read."""
        if isinstance(fields, str):
            raise TypeError("fields must be a collection of field names, not a string")
        selected = "*" if fields is None else ", ".join(_identifier(name) for name in fields)
        conditions = []
        if start is not None:
            conditions.append(f"time >= {_ns(start, 'start')}")
        if end is not None:
            conditions.append(f"time < {_ns(end, 'end')}")
        for key, accepted in (tags or {}).items():
            values = [accepted] if isinstance(accepted, str) else list(accepted)
            if not values:
                conditions.append("false")
                continue
            conditions.append("(" + " OR ".join(f"{_identifier(key)} = {_string(value)}" for value in values) + ")")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        statement = f"SELECT {selected} FROM {_identifier(measurement)}{where} GROUP BY *"
        series_tags: list[dict[str, str]] = []
        series_index: dict[tuple, int] = {}
        field_index: dict[str, int] = {}
        sample_series: list[int] = []
        times: list[int] = []
        sample_fields: list[int] = []
        values: list[FieldValue] = []
        for series in self.query(statement):
            tag_values = {key: value for key, value in (series.get("tags") or {}).items() if value}
            key = tuple(sorted(tag_values.items()))
            index = series_index.get(key)
            if index is None:
                index = series_index[key] = len(series_tags)
                series_tags.append(tag_values)
            columns = series["columns"]
            positions = [(position, field_index.setdefault(name, len(field_index)))
                         for position, name in enumerate(columns) if name != "time"]
            for row in series.get("values", []):
                time_ns = row[0]
                for position, field in positions:
                    value = row[position]
                    if value is None:
                        continue
                    sample_series.append(index)
                    times.append(time_ns)
                    sample_fields.append(field)
                    values.append(value)
        return frame_from_samples(
            measurement, series_tags, np.array(sample_series, dtype=np.int64), np.array(times, dtype=np.int64),
            list(field_index), np.array(sample_fields, dtype=np.int64), values,
        )


def _identifier(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ns(value: int | datetime | pd.Timestamp, name: str) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name} {value!r} has no timezone; use a UTC time")
        return pd.Timestamp(value).as_unit("ns").value
    raise TypeError(f"{name} must be nanoseconds or a timezone-aware datetime, not {type(value).__name__}")
