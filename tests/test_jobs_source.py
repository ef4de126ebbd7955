"""The jobs source: Slurm jobs of GPU processes from /proc (fake trees and real processes), and a jobs file."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from fake_nvml import FakeNvml, h100

from golden_files import assert_golden
from service_fixtures import wait_for
from collector.lineprotocol import encode
from collector.schema import COLLECTOR_HEALTH, JOB_GPU
from collector.sources.base import Source
from collector.sources.gpu import GpuProcess, GpuSource, NvmlBackend, ProcessTable
from collector.sources.jobs import (
    JobsFileError,
    JobsSource,
    StaticJobs,
    job_from_cgroup,
    job_from_environ,
    parse_jobs_csv,
    slurm_job_of,
)

FIXTURES = Path(__file__).parent / "fixtures" / "jobs"
FAKE_PROC = FIXTURES / "proc"
SAMPLE_CONFIG = Path(__file__).parents[1] / "collector" / "sources" / "jobs" / "sample.yaml"
T = 1_767_225_610_000_000_000  # 2026-01-01T00:00:10Z
HOUR_NS = 3600 * 10**9


def table_with(processes: list[GpuProcess], time_ns: int = T) -> ProcessTable:
    table = ProcessTable()
    table.update(time_ns, processes)
    return table


# --- Slurm lookups ---------------------------------------------------------------

@pytest.mark.parametrize(
    "cgroup, job",
    [
        ("4:memory:/slurm/uid_1000/job_81234/step_0/task_0\n", "81234"),
        ("7:devices:/slurm_node17/uid_0/job_5/step_batch/task_0\n", "5"),  # several slurmd on a host
        ("0::/system.slice/slurmstepd.scope/job_81235/step_1/user/task_3\n", "81235"),
        ("0::/system.slice/node17_slurmstepd.scope/job_77/step_extern\n", "77"),
        ("0::/slurm/uid_1000/job_9\n", "9"),
        ("0::/system.slice/slurmd.service\n", None),
        ("0::/user.slice/job_12/x\n", None),  # a job_ directory outside Slurm's tree
        ("0::/system.slice/slurmstepd.scope/job_x1/step_0\n", None),
        ("", None),
    ],
)
def test_job_from_cgroup_reads_v1_and_v2_paths(cgroup, job):
    assert job_from_cgroup(cgroup) == job


def test_job_from_environ_prefers_slurm_job_id():
    assert job_from_environ(b"A=1\0SLURM_JOBID=5\0SLURM_JOB_ID=6\0") == "6"
    assert job_from_environ(b"SLURM_JOBID=5\0") == "5"
    assert job_from_environ(b"SLURM_JOB_ID=\0SLURM_JOB_NAME=job_1\0") is None
    assert job_from_environ(b"") is None


def test_slurm_job_of_a_fake_proc_tree():
    assert slurm_job_of(4242, FAKE_PROC) == "81234"
    assert slurm_job_of(4243, FAKE_PROC) == "81235"
    assert slurm_job_of(4250, FAKE_PROC) == "81236"  # from the environment
    assert slurm_job_of(5001, FAKE_PROC) is None  # no Slurm cgroup, environ unreadable
    assert slurm_job_of(99999, FAKE_PROC) is None  # gone


def test_slurm_job_of_real_processes_through_their_environment():
    env = {"PATH": os.environ.get("PATH", "/usr/bin"), "SLURM_JOB_ID": "424242"}
    with subprocess.Popen(["sleep", "30"], env=env) as process:
        try:
            # Until the child has exec'd, /proc/<pid>/environ is still this process's environment.
            wait_for(lambda: Path(f"/proc/{process.pid}/cmdline").read_bytes().startswith(b"sleep"), 10, "sleep to start")
            assert slurm_job_of(process.pid) == "424242"
        finally:
            process.kill()
    process.wait()
    assert slurm_job_of(process.pid) is None  # reaped
    assert slurm_job_of(os.getpid()) is None


def _cgroup_mount(kind: str) -> Path | None:
    """A writable cgroup mount of this host: the v1 ``pids`` hierarchy or the v2 unified one."""
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            _, where, fstype, options, *_ = line.split()
            if kind == "v1" and fstype == "cgroup" and "pids" in options.split(","):
                return Path(where)
            if kind == "v2" and fstype == "cgroup2":
                return Path(where)
    return None


@pytest.mark.parametrize(
    "kind, layout",
    [
        ("v1", "slurm/uid_0/job_{job}/step_0/task_0"),
        ("v2", "system.slice/slurmstepd.scope/job_{job}/step_0/user/task_0"),
    ],
)
def test_slurm_job_of_a_real_process_in_a_slurm_cgroup(kind, layout):
    """As slurmstepd does: make the job's cgroup, move a task into it, read /proc/<pid>/cgroup."""
    mount = _cgroup_mount(kind)
    if os.geteuid() != 0 or mount is None or not os.access(mount, os.W_OK):
        pytest.fail(f"needs root and a writable cgroup {kind} mount")
    job = str(900_000 + uuid.uuid4().int % 99_999)
    leaf = mount / layout.format(job=job)
    created = [d for d in [leaf, *leaf.parents] if d.is_relative_to(mount) and d != mount and not d.exists()]
    process = subprocess.Popen(["sleep", "30"])
    try:
        try:
            leaf.mkdir(parents=True)
            (leaf / "cgroup.procs").write_text(str(process.pid))
        except OSError as err:
            pytest.fail(f"cannot use cgroup {kind} here: {err}")
        assert slurm_job_of(process.pid) == job
    finally:
        process.kill()
        process.wait()
        for directory in created:  # leaf first; a cgroup can go once its process is reaped
            for _ in range(50):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)
    assert not any(directory.exists() for directory in created)


# --- the jobs file ---------------------------------------------------------------

def test_jobs_file_rows_active_at_a_time():
    jobs = StaticJobs(FIXTURES / "jobs.csv")
    assert jobs.allocations("gpu-node-07", T) == [("eval-nightly", 6), ("eval-nightly", 7), ("81234", 0)]
    assert jobs.allocations("gpu-node-07", T + 7 * HOUR_NS) == [("81234", 0)]
    assert jobs.allocations("gpu-node-07", T - 3 * HOUR_NS) == [("finished-run", 5)]
    assert jobs.allocations("gpu-node-09", T) == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("job,host,gpus,start\n", "header must be job,host,gpus,start,end; missing end"),
        ("job,host,gpus,start,end\n,h,0,2026-01-01T00:00:00Z,\n", ":2: 'job' and 'host' must not be empty"),
        ("job,host,gpus,start,end\nj,h,0 x,2026-01-01T00:00:00Z,\n", ":2: column 'gpus' must be space-separated"),
        ("job,host,gpus,start,end\nj,h,0,yesterday,\n", ":2 column 'start': not an RFC 3339 time"),
        ("job,host,gpus,start,end\nj,h,0,2026-01-01T00:00:00,\n", "has no UTC offset"),
        ("job,host,gpus,start,end\nj,h,0,2026-01-01T01:00:00Z,2026-01-01T00:00:00+00:00\n", "is not after 'start'"),
    ],
)
def test_a_malformed_jobs_file_is_named_with_row_and_column(text, message):
    with pytest.raises(JobsFileError, match=message.replace("(", r"\(")) as caught:
        parse_jobs_csv(text, source="jobs.csv")
    assert str(caught.value).startswith("jobs.csv")


def test_jobs_file_is_reread_when_it_changes_and_a_bad_version_is_ignored(tmp_path, caplog):
    path = tmp_path / "jobs.csv"
    path.write_text("job,host,gpus,start,end\na,n1,0,2026-01-01T00:00:00Z,\n")
    jobs = StaticJobs(path)
    path.write_text("job,host,gpus,start,end\nb,n1,1,2026-01-01T00:00:00Z,\n")
    jobs.refresh()
    assert jobs.allocations("n1", T) == [("b", 1)]
    with caplog.at_level(logging.WARNING, logger="collector.sources.jobs"):
        path.write_text("job,host,gpus\nhalf-written")
        for _ in range(3):
            jobs.refresh()
        path.unlink()
        jobs.refresh()
    assert jobs.allocations("n1", T) == [("b", 1)]  # the last good version
    assert len(caplog.records) == 1 and "missing start, end" in caplog.records[0].getMessage()
    with pytest.raises(JobsFileError, match="cannot read jobs file"):
        StaticJobs(tmp_path / "missing.csv")


# --- the source ------------------------------------------------------------------

async def test_slurm_processes_and_the_jobs_file_give_job_gpu_points():
    processes = [
        GpuProcess(0, "GPU-0", 4242, 59_000.0),
        GpuProcess(1, "GPU-1", 4243, 1_200.0),
        GpuProcess(1, "GPU-1", 4250, None),
        GpuProcess(2, "GPU-2", 5001, 10.0),  # not a Slurm task
        GpuProcess(3, "GPU-3", 4243, 9.0, gpu_instance_id=9),  # a MIG instance of the same job
    ]
    table = table_with(processes)
    source = JobsSource("gpu-node-07", table, proc_root=FAKE_PROC, jobs_file=FIXTURES / "jobs.csv")
    assert isinstance(source, Source)
    points = await source.collect(T)
    jobs, health = points[:-1], points[-1]
    assert [(p.tags["index"], p.tags.get("gpu_instance_id"), p.tags["job"], p.fields["source"]) for p in jobs] == [
        ("0", None, "81234", "slurm"),
        ("1", None, "81235", "slurm"),
        ("1", None, "81236", "slurm"),
        ("3", "9", "81235", "slurm"),
        ("6", None, "eval-nightly", "file"),
        ("7", None, "eval-nightly", "file"),
        # 81234 on GPU 0 is in the file too: Slurm's point is kept, once.
    ]
    assert jobs[0].measurement == JOB_GPU
    assert jobs[0].tags == {"host": "gpu-node-07", "index": "0", "job": "81234"}
    assert jobs[0].fields == {"allocated": 1, "source": "slurm", "processes": 1}
    assert health.measurement == COLLECTOR_HEALTH and health.fields["points"] == 6
    assert_golden("jobs.lp", encode(jobs))


async def test_the_source_waits_for_the_gpu_source_of_the_same_poll(monkeypatch):
    fake = FakeNvml([h100(0, processes=[(4243, 1 << 30)])])
    fake.install(monkeypatch.setattr)
    table = ProcessTable()
    gpu = GpuSource("gpu-node-07", NvmlBackend(gpm=False), table)
    jobs = JobsSource("gpu-node-07", table, proc_root=FAKE_PROC, wait_s=5)
    # The jobs source starts first and waits; the gpu source's poll lets it go.
    job_points, _ = await asyncio.gather(jobs.collect(T), gpu.collect(T))
    assert [p.tags["job"] for p in job_points[:-1]] == ["81235"]
    await gpu.close()


async def test_a_gpu_without_processes_or_slurm_gives_no_job_points():
    source = JobsSource("n1", table_with([GpuProcess(0, "GPU-0", 5001)]), proc_root=FAKE_PROC)
    points = await source.collect(T)
    assert [p.measurement for p in points] == [COLLECTOR_HEALTH]


def test_sample_config_builds_a_source_and_bad_options_are_named(tmp_path):
    options = yaml.safe_load(SAMPLE_CONFIG.read_text())["jobs"]
    source = JobsSource.from_config("node1", options, ProcessTable())
    assert source.proc_root == Path("/proc") and source.static is None
    with pytest.raises(ValueError, match="unknown option.*scheduler"):
        JobsSource.from_config("node1", {"scheduler": "slurm"}, ProcessTable())
    with pytest.raises(ValueError, match="needs the GPU processes"):
        JobsSource.from_config("node1", {}, None)
    with pytest.raises(ValueError, match="nothing to read"):
        JobsSource.from_config("node1", {"slurm": False}, None)
    with pytest.raises(ValueError, match="file must be a path string"):
        JobsSource.from_config("node1", {"file": 3}, ProcessTable())
    with pytest.raises(JobsFileError, match="missing.csv: cannot read"):
        JobsSource.from_config("node1", {"slurm": False, "file": str(tmp_path / "missing.csv")}, None)
