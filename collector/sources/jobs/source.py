"""The ``jobs`` source: which job holds which GPU of this host, one ``job_gpu`` point each poll."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

from collector.schema import JOB_GPU, FieldValue, Point, health_point
from collector.sources.gpu import GpuProcess, ProcessTable
from collector.sources.jobs.slurm import slurm_job_of
from collector.sources.jobs.static import StaticJobs

log = logging.getLogger(__name__)

_OPTIONS = ("slurm", "proc_root", "file")

DEFAULT_WAIT_S = 2.0
"""How long a poll waits for the gpu source's process list of the same poll."""


def job_point(
    host: str, index: int | str, job: str, source: str, time_ns: int,
    gpu_instance_id: int | str | None = None, processes: int | None = None,
) -> Point:
    """One ``job_gpu`` point: tags host, index, job (and gpu_instance_id under MIG);
    fields ``allocated`` (1), ``source`` (``slurm``, ``file``, ``kubernetes``) and,
    for Slurm, the number of the job's ``processes`` on the GPU."""
    tags = {"host": host, "index": str(index), "job": job}
    if gpu_instance_id is not None:
        tags["gpu_instance_id"] = str(gpu_instance_id)
    fields: dict[str, FieldValue] = {"allocated": 1, "source": source}
    if processes is not None:
        fields["processes"] = processes
    return Point(JOB_GPU, tags, fields, time_ns)


class JobsSource:
    """Job awareness on the host, from Slurm (through the GPUs' processes) and/or a jobs file.

    ``process_table``: where the gpu source puts each poll's GPU processes;
    Slurm mapping needs it. ``proc_root``: the ``/proc`` to read (the host's
    PID namespace: NVML reports host pids). ``jobs_file``: a static
    ``job,host,gpus,start,end`` file, for sites whose scheduler the agent does
    not know. Where both name the same job on the same GPU, Slurm's (observed)
    point is kept.
    """

    name = "jobs"

    def __init__(
        self,
        host: str,
        process_table: ProcessTable | None = None,
        slurm: bool = True,
        proc_root: Path = Path("/proc"),
        jobs_file: Path | None = None,
        wait_s: float = DEFAULT_WAIT_S,
    ) -> None:
        if not host:
            raise ValueError("jobs source: host must be a non-empty string")
        if slurm and process_table is None:
            raise ValueError("jobs source: Slurm job mapping needs the GPU processes of the gpu source")
        if not slurm and jobs_file is None:
            raise ValueError("jobs source: nothing to read; turn on slurm or name a jobs file")
        self.host = host
        self.process_table = process_table if slurm else None
        self.proc_root = Path(proc_root)
        self.static = StaticJobs(jobs_file) if jobs_file is not None else None
        self.wait_s = wait_s

    @classmethod
    def from_config(
        cls, host: str, options: Mapping[str, Any], process_table: ProcessTable | None, wait_s: float = DEFAULT_WAIT_S
    ) -> JobsSource:
        """Build from the ``jobs:`` block of a config file (see ``sample.yaml``)."""
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ValueError(f"jobs source: unknown option(s) {unknown}; known: {list(_OPTIONS)}")
        slurm = options.get("slurm", True)
        if not isinstance(slurm, bool):
            raise ValueError(f"jobs source: slurm must be true or false, got {slurm!r}")
        for option in ("proc_root", "file"):
            value = options.get(option)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"jobs source: {option} must be a path string, got {value!r}")
        jobs_file = options.get("file")
        return cls(
            host, process_table, slurm, Path(options.get("proc_root") or "/proc"),
            Path(jobs_file) if jobs_file else None, wait_s,
        )

    def _slurm_points(self, processes: list[GpuProcess], time_ns: int) -> list[Point]:
        per_gpu_job: Counter[tuple[int, int | None, str]] = Counter()
        for process in processes:
            job = slurm_job_of(process.pid, self.proc_root)
            if job is not None:
                per_gpu_job[(process.index, process.gpu_instance_id, job)] += 1
        ordered = sorted(per_gpu_job.items(), key=lambda item: (item[0][0], item[0][1] is not None, item[0][1] or 0))
        return [
            job_point(self.host, index, job, "slurm", time_ns, instance, count)
            for (index, instance, job), count in ordered
        ]

    def read(self, processes: list[GpuProcess], time_ns: int) -> list[Point]:
        """One blocking pass: Slurm jobs of the processes, then the file's active rows."""
        points = self._slurm_points(processes, time_ns) if self.process_table is not None else []
        if self.static is not None:
            self.static.refresh()
            seen = {(p.tags["index"], p.tags["job"]) for p in points}
            for job, index in self.static.allocations(self.host, time_ns):
                if (str(index), job) not in seen:
                    seen.add((str(index), job))
                    points.append(job_point(self.host, index, job, "file", time_ns))
        return points

    async def collect(self, time_ns: int) -> list[Point]:
        started = time.perf_counter()
        processes: list[GpuProcess] = []
        if self.process_table is not None:
            processes = await self.process_table.wait_for(time_ns, self.wait_s)
        points = await asyncio.to_thread(self.read, processes, time_ns)
        health = health_point(self.name, self.host, time_ns, up=1, duration_s=time.perf_counter() - started,
                              points=len(points))
        return [*points, health]

    async def close(self) -> None:
        """Nothing to release: every read opens and closes its own file."""
