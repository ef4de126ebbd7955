"""Which Slurm job a process belongs to, read from ``/proc``.

slurmstepd puts every task of a job step into a cgroup whose path names the
job: ``/slurm/uid_1000/job_4242/step_0/task_0`` under cgroup v1 (``/slurm_<node>/``
where several slurmd share a host) and
``/system.slice/slurmstepd.scope/job_4242/step_0/user/task_0`` under cgroup v2.
``/proc/<pid>/cgroup`` is readable by everyone, so that is asked first; the
job's environment (``SLURM_JOB_ID``), readable only by the job's owner and
root, is the fallback for a task outside the job's cgroup (a site without the
cgroup plugins).
"""

from __future__ import annotations

import re
from pathlib import Path

_JOB_IN_CGROUP = re.compile(r"/[^/\n]*slurm[^/\n]*/(?:[^/\n]+/)*?job_(\d+)(?:/|$)")
_ENVIRONMENT_KEYS = (b"SLURM_JOB_ID=", b"SLURM_JOBID=")


def job_from_cgroup(text: str) -> str | None:
    """The Slurm job id in the text of ``/proc/<pid>/cgroup``, ``None`` if it names none."""
    for line in text.splitlines():
        _, _, path = line.partition(":")
        _, _, path = path.partition(":")
        match = _JOB_IN_CGROUP.search(path)
        if match:
            return match.group(1)
    return None


def job_from_environ(data: bytes) -> str | None:
    """``SLURM_JOB_ID`` (or the older ``SLURM_JOBID``) in the bytes of ``/proc/<pid>/environ``."""
    variables = data.split(b"\0")
    for key in _ENVIRONMENT_KEYS:
        for variable in variables:
            if variable.startswith(key):
                value = variable[len(key):].decode("ascii", "replace").strip()
                if value:
                    return value
    return None


def slurm_job_of(pid: int, proc_root: Path = Path("/proc")) -> str | None:
    """The Slurm job of process ``pid``, or ``None``: not a Slurm task, gone, or hidden from us."""
    directory = proc_root / str(pid)
    try:
        job = job_from_cgroup((directory / "cgroup").read_text(errors="replace"))
    except OSError:
        return None  # the process ended, or lives in another PID namespace
    if job is not None:
        return job
    try:
        return job_from_environ((directory / "environ").read_bytes())
    except OSError:
        return None  # another user's process and we are not root
