"""What every collector source looks like to the scheduler that runs it."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from collector.schema import Point


@runtime_checkable
class Source(Protocol):
    """A source produces one batch of points per poll.

    ``name`` identifies the source in logs and health points (``snmp``, ``rdma``,
    ``gpu``). ``collect`` is given the timestamp the batch is stamped with, so a
    simulated clock can drive real sources. A source raises only for problems
    of its own configuration; a device that fails is logged and skipped.
    """

    name: str

    async def collect(self, time_ns: int) -> list[Point]: ...

    async def close(self) -> None: ...
