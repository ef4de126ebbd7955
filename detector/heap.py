"""Tuning glibc's heap for the detector's large arrays (elsewhere these do nothing)."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager

_LIBC = ctypes.CDLL(None)
_MALLOC_TRIM = getattr(_LIBC, "malloc_trim", None)
_MALLOPT = getattr(_LIBC, "mallopt", None)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_NO_TRIM = -1
"""As M_TRIM_THRESHOLD: never give the heap's top back (mallopt(3))."""
_LARGEST_HEAP_BLOCK = 2**31 - 1
"""mallopt takes an int: blocks up to 2 GiB come from the heap."""
_SETTLED_THRESHOLD = 32 * 2**20
"""Where glibc's own threshold settles on 64-bit systems (it starts at 128 KiB and rises to this)."""
_SETTLED_TRIM_THRESHOLD = 2 * _SETTLED_THRESHOLD
"""glibc keeps its trim threshold at twice the mapping threshold: where it settles with it."""
_large_blocks_in_heap = False
"""Whether a large_blocks_from_heap block is running (and no large_blocks_mapped block inside it)."""


def release_free_heap() -> None:
    """Give the C heap's free pages back to the system, wherever they lie in it.

    A daemon step allocates hundreds of MB of frames and frees them again; glibc keeps
    much of that in its heap, scattered between live blocks, so without this the
    resident size swings by 200-400 MB from step to step and creeps up over the hours
    (measured: deploy/README.md, "Running for months"). A batch run gives its pages back
    once, after its last window (:func:`freed_pages_kept`).
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@contextmanager
def large_blocks_from_heap() -> Iterator[None]:
    """Within the block, serve large blocks (up to 2 GiB) from the heap instead of mapping each anew.

    Under glibc's defaults every block over 32 MiB is a fresh mapping, unmapped when
    freed, so the kernel zeroes every page of every large array: a window's rates and
    decisions allocate several times their live memory in such arrays, and zeroing took
    40% of the CPU time. From the heap, an array freed within the block lends its pages
    to the next one; ``release_free_heap`` returns what the block freed. Process-wide:
    the caller runs nothing else meanwhile.
    """
    with _large_blocks(in_heap=True):
        yield


@contextmanager
def freed_pages_kept() -> Iterator[None]:
    """Within the block, memory freed to the heap stays in the process; it goes back when the block ends.

    glibc gives the heap's top back to the system whenever more than its trim threshold
    is free there. Windows of a batch run each need about as much memory as the one
    before, so what one window gives back the next must fault in again, and that is
    not only the kernel zeroing pages: a virtual machine whose host takes back the
    memory its guest frees (virtio-balloon free page reporting) backs each such page
    anew, about 1 s per GiB on the 2-core machines measured (docs/detector.md, "Scale").
    The process keeps the largest window's memory from the first window to the last,
    which it needs at the peak anyway. Process-wide, like :func:`large_blocks_from_heap`.

    Threads started from here on allocate from the same heap (glibc's arena limit is
    set to one, and stays so for the process). A thread's own arena holds no block over
    64 MiB, maps those anew, and gives its memory back as it frees it: the detector's
    worker threads faulted in 0.4-0.7 s of pages again every window.
    """
    if _MALLOPT is not None:
        _MALLOPT(_M_ARENA_MAX, 1)
        _MALLOPT(_M_TRIM_THRESHOLD, _NO_TRIM)
    try:
        yield
    finally:
        if _MALLOPT is not None:
            _MALLOPT(_M_TRIM_THRESHOLD, _SETTLED_TRIM_THRESHOLD)
        release_free_heap()


@contextmanager
def large_blocks_mapped() -> Iterator[None]:
    """Within a :func:`large_blocks_from_heap` block, map blocks over 32 MiB anew again.

    For allocations that may outlive the heap block, such as what a store keeps from a
    read: from the heap they would pin its top and hold freed pages below them.
    Elsewhere glibc maps such blocks anyway and nothing changes.
    """
    if not _large_blocks_in_heap:
        yield
        return
    with _large_blocks(in_heap=False):
        yield


@contextmanager
def _large_blocks(in_heap: bool) -> Iterator[None]:
    previous = _large_blocks_in_heap
    _set_large_blocks(in_heap)
    try:
        yield
    finally:
        _set_large_blocks(previous)


def _set_large_blocks(in_heap: bool) -> None:
    global _large_blocks_in_heap
    _large_blocks_in_heap = in_heap
    if _MALLOPT is not None:
        _MALLOPT(_M_MMAP_THRESHOLD, _LARGEST_HEAP_BLOCK if in_heap else _SETTLED_THRESHOLD)
