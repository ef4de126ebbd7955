"""Which job held which GPUs when: the detector prices loss per job.

The file is CSV with the header ``job,host,gpus,start,end``; ``gpus`` is a
space-separated list of indices, times are RFC 3339, an empty ``end`` means the
job is still running. A job spanning several hosts has one row per host.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

HEADER = ("job", "host", "gpus", "start", "end")


class JobsError(ValueError):
    """The jobs file is malformed; the message names the file, row and column."""


@dataclass(frozen=True, slots=True)
class Allocation:
    """One job's GPUs on one host for a span of time."""

    job: str
    host: str
    gpus: tuple[int, ...]
    start: datetime
    end: datetime | None


def parse_time(text: str, where: str) -> datetime:
    """RFC 3339 (``Z`` or an offset) to an aware UTC datetime."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as error:
        raise JobsError(f"{where}: not an RFC 3339 time: {text!r}") from error
    if value.tzinfo is None:
        raise JobsError(f"{where}: time {text!r} has no UTC offset")
    return value.astimezone(timezone.utc)


def format_time(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_jobs(path: str | Path) -> list[Allocation]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise JobsError(f"{path}: cannot read jobs file: {error}") from error
    return parse_jobs(text, source=str(path))


def parse_jobs(text: str, *, source: str = "<jobs>") -> list[Allocation]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [column for column in HEADER if column not in (reader.fieldnames or [])]
    if missing:
        raise JobsError(f"{source}: header must be {','.join(HEADER)}; missing {', '.join(missing)}")
    allocations = []
    for line_number, row in enumerate(reader, start=2):
        where = f"{source}:{line_number}"
        job, host = (row["job"] or "").strip(), (row["host"] or "").strip()
        if not job or not host:
            raise JobsError(f"{where}: 'job' and 'host' must not be empty")
        try:
            gpus = tuple(int(gpu) for gpu in (row["gpus"] or "").split())
        except ValueError as error:
            raise JobsError(f"{where}: column 'gpus' must be space-separated integers: {row['gpus']!r}") from error
        start = parse_time(row["start"] or "", f"{where} column 'start'")
        end = parse_time(row["end"], f"{where} column 'end'") if (row["end"] or "").strip() else None
        if end is not None and end <= start:
            raise JobsError(f"{where}: 'end' {row['end']} is not after 'start' {row['start']}")
        allocations.append(Allocation(job, host, gpus, start, end))
    return allocations


def dump_jobs(allocations: Iterable[Allocation], path: str | Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for item in allocations:
            writer.writerow([
                item.job, item.host, " ".join(str(gpu) for gpu in item.gpus),
                format_time(item.start), "" if item.end is None else format_time(item.end),
            ])
