"""detector.heap: where glibc (the project's supported C library) serves the detector's large arrays from."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
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


def _from_a_thread_in_heap(size: int) -> bool:
    with ThreadPoolExecutor(max_workers=1) as pool:
        return _in_heap(pool.submit(np.empty, size).result())


def check_threads_allocate_from_the_heap_once_pages_are_kept() -> None:
    with large_blocks_from_heap(), freed_pages_kept():
        assert _from_a_thread_in_heap(64 * 2**20 // 8)


def check_threads_map_large_blocks_otherwise() -> None:
    with large_blocks_from_heap():
        assert not _from_a_thread_in_heap(64 * 2**20 // 8)  # a thread's own arena holds no block this large


def _in_fresh_process(check: str) -> None:
    """Run a check in a fresh process: glibc serves a large block from any free heap chunk big enough, earlier
    tests in this process (batch windows from the heap) leave such chunks behind, and a thread reuses the
    arena of one that ended."""
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_heap; test_heap.{check}()"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_large_arrays_come_from_the_heap_only_inside_the_block():
    _in_fresh_process("check_large_arrays_come_from_the_heap_only_inside_the_block")


def test_threads_allocate_from_the_heap_while_pages_are_kept():
    _in_fresh_process("check_threads_allocate_from_the_heap_once_pages_are_kept")
    _in_fresh_process("check_threads_map_large_blocks_otherwise")


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def check_freed_heap_pages_stay_in_the_process_until_the_block_ends() -> None:
    # Two blocks freed at the heap's top: more than mallopt's largest trim threshold (2 GiB), so trimming
    # must be off, not only raised.
    size = 1200 * 2**20
    with large_blocks_from_heap(), freed_pages_kept():
        blocks = [np.ones(size // 8), np.ones(size // 8)]
        assert all(_in_heap(block) for block in blocks)
        held = _resident_bytes()
        del blocks
        assert _resident_bytes() > held - size // 2
    assert _resident_bytes() < held - size


def test_freed_heap_pages_stay_in_the_process_until_the_block_ends():
    _in_fresh_process("check_freed_heap_pages_stay_in_the_process_until_the_block_ends")
