"""Which job holds which GPU of this host (``job_gpu`` measurement).

Public API: :class:`JobsSource` (the source: Slurm through the GPUs'
processes, and/or a static jobs file) and :func:`job_point`; the Slurm lookups
:func:`slurm_job_of`, :func:`job_from_cgroup`, :func:`job_from_environ`; the
jobs file :class:`StaticJobs`, :func:`parse_jobs_csv`, :class:`JobRow`,
:class:`JobsFileError`. Kubernetes pods come from the ``dcgm`` source, which
reads them off the exporter's pod labels.
"""

from __future__ import annotations

from collector.sources.jobs.slurm import job_from_cgroup, job_from_environ, slurm_job_of
from collector.sources.jobs.source import JobsSource, job_point
from collector.sources.jobs.static import JobRow, JobsFileError, StaticJobs, parse_jobs_csv

__all__ = [
    "JobRow",
    "JobsFileError",
    "JobsSource",
    "StaticJobs",
    "job_from_cgroup",
    "job_from_environ",
    "job_point",
    "parse_jobs_csv",
    "slurm_job_of",
]
