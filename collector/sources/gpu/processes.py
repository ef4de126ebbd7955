"""The compute processes of a host's GPUs, shared by the gpu source with the jobs source.

The gpu source sees which process runs on which GPU (NVML lists them per GPU
and MIG instance); the jobs source turns those processes into jobs (Slurm job
ids from ``/proc``). Both run in the same poll, concurrently: the jobs source
waits, briefly, for the gpu source's list of the same poll through a
:class:`ProcessTable`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """One compute process on one GPU (or one MIG GPU instance of it)."""

    index: int
    uuid: str
    pid: int
    used_memory_mib: float | None = None
    gpu_instance_id: int | None = None


class ProcessTable:
    """The latest list of GPU processes and the poll time it belongs to.

    The gpu source calls :meth:`update` once per poll (also when the poll
    failed, so that nobody waits in vain); readers call :meth:`wait_for`. It
    holds no event loop of its own, so sources sharing it may be polled from
    one loop after another (``run_agent_once`` twice).
    """

    def __init__(self) -> None:
        self._time_ns: int | None = None
        self._processes: list[GpuProcess] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    @property
    def processes(self) -> list[GpuProcess]:
        """The processes of the latest update (empty before the first one)."""
        return list(self._processes)

    def update(self, time_ns: int, processes: list[GpuProcess] | None) -> None:
        """Record the processes of the poll stamped ``time_ns``; ``None`` keeps the previous list."""
        self._time_ns = time_ns
        if processes is not None:
            self._processes = list(processes)
        waiting = []
        for target, future in self._waiters:
            if target > time_ns:
                waiting.append((target, future))
            elif not future.done():
                future.set_result(None)
        self._waiters = waiting

    async def wait_for(self, time_ns: int, timeout_s: float) -> list[GpuProcess]:
        """The processes of the poll stamped ``time_ns`` or later, or the latest after ``timeout_s``."""
        if self._time_ns is None or self._time_ns < time_ns:
            waiter = (time_ns, asyncio.get_running_loop().create_future())
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter[1], timeout_s)
            except TimeoutError:
                pass
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return list(self._processes)
