"""detector.heap: where glibc (the project's supported C library) serves the detector's large arrays from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from detector.heap import freed_pages_kept, large_blocks_from_heap, large_blocks_mapped, release_free_heap


def _in_heap(array: np.ndarray) -> bool:
    """Whether the array's data lies in the process's brk heap ("[heap]" in /proc/self/maps)."""
    address = array.ctypes.data
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *rest = line.split()
        low, high = (int(part, 16) for part in span.split("-"))
        if low <= address < high:
            return rest[-1] == "[heap]"
    raise AssertionError(f"address {address:#x} is in no mapping")


def check_large_arrays_come_from_the_heap_only_inside_the_block() -> None:
    size = 64 * 2**20 // 8
    with large_blocks_from_heap():
        inside = np.empty(size)
        assert _in_heap(inside)
        with large_blocks_mapped():
            kept = np.empty(size)
            assert not _in_heap(kept)
        assert _in_heap(np.empty(size))
    del inside, kept
    release_free_heap()
    after = np.empty(size)
    assert not _in_heap(after)


def test_large_arrays_come_from_the_heap_only_inside_the_block():
    """Run in a fresh process: glibc serves a large block from any free heap chunk big enough, and earlier
    tests in this process (batch windows from the heap) leave such chunks behind."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_heap; "
            "test_heap.check_large_arrays_come_from_the_heap_only_inside_the_block()")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_freed_heap_pages_stay_in_the_process_until_the_block_ends():
    size = 256 * 2**20
    with large_blocks_from_heap(), freed_pages_kept():
        block = np.ones(size // 8)
        held = _resident_bytes()
        del block
        assert _resident_bytes() > held - size // 2
    assert _resident_bytes() < held - size // 2
