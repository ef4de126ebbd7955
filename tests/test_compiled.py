"""detector.compiled: numba kernels compiled on first use, cached where the process can write."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from detector.compiled import jit

REPO = Path(__file__).resolve().parent.parent

# Linux's PR_SET_MDWE (6.3+): what systemd's MemoryDenyWriteExecute=yes sets on a service.
DENY_WRITE_EXECUTE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    raise SystemExit("prctl(PR_SET_MDWE) failed (Linux 6.3+ has it): " + os.strerror(ctypes.get_errno()))
"""


def run_denying_write_execute(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DENY_WRITE_EXECUTE + textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_a_kernel_compiles_where_no_cache_directory_can_be_written(monkeypatch):
    import numba.core.caching

    monkeypatch.setattr(numba.core.caching.CacheImpl, "_locator_classes", [])

    def total(values):
        sum_ = 0.0
        for value in values:
            sum_ += value
        return sum_

    assert jit(total)(np.arange(5.0)) == 10.0


def test_services_that_never_run_the_detector_start_where_memory_cannot_turn_executable():
    """The agent, collect and ingest units keep MemoryDenyWriteExecute=yes: building the CLI must not load numba,
    and a kernel called there fails with an error that says why."""
    result = run_denying_write_execute("""
        import sys
        import numpy as np
        from detector.cli import build_parser
        build_parser()
        assert "numba" not in sys.modules, "building the CLI imported numba"
        from detector.rates import grid_codes
        try:
            grid_codes(np.arange(3, dtype=np.int64), 1)
        except RuntimeError as error:
            print(error)
    """)
    assert result.returncode == 0, result.stderr
    assert "compiled kernels cannot run here" in result.stdout and "MemoryDenyWriteExecute" in result.stdout
