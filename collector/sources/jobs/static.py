"""A static jobs file: which job holds which GPUs of which host, when.

The same CSV the detector reads (``job,host,gpus,start,end``; ``gpus`` a
space-separated list of GPU indices, times RFC 3339, an empty ``end`` for a job
still running; one row per job and host), parsed here with the ``csv`` module
because the collector does not import the detector.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)

HEADER = ("job", "host", "gpus", "start", "end")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class JobsFileError(ValueError):
    """The jobs file cannot be read or is malformed; the message names the file, row and column."""


@dataclass(frozen=True, slots=True)
class JobRow:
    """One row: ``job`` held ``gpus`` on ``host`` from ``start_ns`` until ``end_ns`` (``None``: still)."""

    job: str
    host: str
    gpus: tuple[int, ...]
    start_ns: int
    end_ns: int | None

    def active(self, time_ns: int) -> bool:
        return self.start_ns <= time_ns and (self.end_ns is None or time_ns < self.end_ns)


def _time_ns(text: str, where: str) -> int:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise JobsFileError(f"{where}: not an RFC 3339 time: {text!r}") from None
    if value.tzinfo is None:
        raise JobsFileError(f"{where}: time {text!r} has no UTC offset")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def parse_jobs_csv(text: str, source: str = "<jobs>") -> list[JobRow]:
    """The rows of a jobs file; :class:`JobsFileError` names the first problem."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [column for column in HEADER if column not in (reader.fieldnames or [])]
    if missing:
        raise JobsFileError(f"{source}: header must be {','.join(HEADER)}; missing {', '.join(missing)}")
    rows = []
    for line_number, row in enumerate(reader, start=2):
        where = f"{source}:{line_number}"
        job, host = (row["job"] or "").strip(), (row["host"] or "").strip()
        if not job or not host:
            raise JobsFileError(f"{where}: 'job' and 'host' must not be empty")
        try:
            gpus = tuple(int(gpu) for gpu in (row["gpus"] or "").split())
        except ValueError:
            raise JobsFileError(f"{where}: column 'gpus' must be space-separated integers: {row['gpus']!r}") from None
        start = _time_ns(row["start"] or "", f"{where} column 'start'")
        end = _time_ns(row["end"], f"{where} column 'end'") if (row["end"] or "").strip() else None
        if end is not None and end <= start:
            raise JobsFileError(f"{where}: 'end' {row['end']} is not after 'start' {row['start']}")
        rows.append(JobRow(job, host, gpus, start, end))
    return rows


class StaticJobs:
    """A jobs file, read at start and again whenever it changes on disk.

    A file that is missing or malformed at start raises :class:`JobsFileError`;
    one that turns bad later is reported once and the last good version is kept,
    so that a half-written file never empties the job map.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp = self._stat()
        self.rows = self._load()
        self._failing = False

    def _stat(self) -> tuple[int, int]:
        try:
            status = os.stat(self.path)
        except OSError as err:
            raise JobsFileError(f"{self.path}: cannot read jobs file: {err.strerror}") from None
        return status.st_mtime_ns, status.st_size

    def _load(self) -> list[JobRow]:
        try:
            text = self.path.read_text()
        except OSError as err:
            raise JobsFileError(f"{self.path}: cannot read jobs file: {err.strerror}") from None
        return parse_jobs_csv(text, source=str(self.path))

    def refresh(self) -> None:
        """Re-read the file if it changed since the last read."""
        try:
            stamp = self._stat()
            if stamp == self._stamp:
                return
            rows = self._load()
        except JobsFileError as err:
            if not self._failing:
                log.warning("jobs: %s; keeping the last good version", err)
                self._failing = True
            return
        self._stamp, self.rows, self._failing = stamp, rows, False

    def allocations(self, host: str, time_ns: int) -> list[tuple[str, int]]:
        """``(job, gpu index)`` of every row of ``host`` active at ``time_ns``."""
        return [(row.job, gpu) for row in self.rows if row.host == host and row.active(time_ns) for gpu in row.gpus]
