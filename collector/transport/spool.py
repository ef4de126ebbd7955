"""A bounded first-in-first-out queue of messages on disk, for when the next hop is away.

The MQTT publisher spools while the broker is unreachable, the InfluxDB
writers while the database is; both replay in order once it is back. Each
entry is one file named by a sequence number, written to a temporary name,
fsynced and renamed, so a crash leaves whole entries or none, and a restarted
process picks up where the last one stopped.

The spool is bounded in bytes: when a new entry would not fit, the oldest
entries are deleted and counted in ``dropped`` (and logged): losing the
oldest data beats losing the newest, which says what the fabric does now.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Spool", "SpoolEntry"]

log = logging.getLogger(__name__)

_SUFFIX = ".msg"
_DIGITS = 16


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One spooled message: ``key`` is what the payload is for (an MQTT topic, a database)."""

    number: int
    key: str
    payload: bytes


class Spool:
    """Messages kept in ``directory`` until removed, at most ``max_bytes`` of them.

    Not thread-safe: one owner (an asyncio task, or a writer under its lock).
    """

    def __init__(self, directory: str | Path, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"spool max_bytes must be positive, not {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.dropped = 0
        """Entries deleted unsent because the spool was full, since this object was made."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob("*.tmp"):
            leftover.unlink()  # a write interrupted by a crash
        self._sizes: dict[int, int] = {}
        for path in self.directory.glob(f"*{_SUFFIX}"):
            try:
                self._sizes[int(path.stem)] = path.stat().st_size
            except ValueError:
                raise ValueError(f"{path} is not a spool entry; {self.directory} must hold only the spool") from None
        self._numbers = deque(sorted(self._sizes))
        self._next = self._numbers[-1] + 1 if self._numbers else 0
        self.bytes = sum(self._sizes.values())

    def __len__(self) -> int:
        return len(self._numbers)

    def put(self, key: str, payload: bytes) -> None:
        """Append one message, durably; drops the oldest entries while the spool would be too big."""
        encoded_key = key.encode()
        record = len(encoded_key).to_bytes(4, "big") + encoded_key + payload
        if len(record) > self.max_bytes:
            self.dropped += 1
            log.error("spool %s: a %d-byte message exceeds the whole spool (%d bytes); dropped",
                      self.directory, len(record), self.max_bytes)
            return
        while self._numbers and self.bytes + len(record) > self.max_bytes:
            self._delete_oldest()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("spool %s is full (%d bytes): dropped the oldest message, %d dropped so far",
                            self.directory, self.max_bytes, self.dropped)
        number = self._next
        self._next += 1
        path = self._path(number)
        temporary = path.with_suffix(".tmp")
        with open(temporary, "wb") as file:
            file.write(record)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        self._numbers.append(number)
        self._sizes[number] = len(record)
        self.bytes += len(record)

    def peek(self, limit: int = 1) -> list[SpoolEntry]:
        """Up to ``limit`` oldest entries, oldest first, without removing them."""
        entries = []
        for number in list(itertools.islice(self._numbers, limit)):
            record = self._path(number).read_bytes()
            key_length = int.from_bytes(record[:4], "big")
            entries.append(SpoolEntry(number, record[4 : 4 + key_length].decode(), record[4 + key_length :]))
        return entries

    def remove(self, entry: SpoolEntry) -> None:
        """Delete ``entry`` once it reached its destination (it must be the oldest)."""
        if not self._numbers or self._numbers[0] != entry.number:
            if entry.number not in self._sizes:
                return  # dropped meanwhile because the spool was full
            raise ValueError(f"spool {self.directory}: entries must be removed oldest first")
        self._delete_oldest()

    def _delete_oldest(self) -> None:
        number = self._numbers.popleft()
        self._path(number).unlink(missing_ok=True)
        self.bytes -= self._sizes.pop(number)

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:0{_DIGITS}d}{_SUFFIX}"
