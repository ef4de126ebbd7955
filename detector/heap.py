"""Tuning glibc's heap for the detector's large arrays (elsewhere these do nothing)."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager

_LIBC = ctypes.CDLL(None)
_MALLOC_TRIM = getattr(_LIBC, "malloc_trim", None)
_MALLOPT = getattr(_LIBC, "mallopt", None)
_M_MMAP_THRESHOLD = -3
_LARGEST_HEAP_BLOCK = 2**31 - 1
"""mallopt takes an int: blocks up to 2 GiB come from the heap."""
_SETTLED_THRESHOLD = 32 * 2**20
"""The most glibc's dynamic threshold rises to on 64-bit systems."""


def release_free_heap() -> None:
    """Give the C heap's free pages back to the system, wherever they lie in it.

    A detector step or batch window allocates hundreds of MB of frames and frees them
    again; glibc keeps much of that in its heap, scattered between live blocks, so
    without this the resident size swings by 200-400 MB from step to step and creeps
    up window after window (measured: deploy/README.md, "Running for months", and
    docs/detector.md, "Scale").
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@contextmanager
def large_blocks_from_heap() -> Iterator[None]:
    """Within the block, serve large blocks (up to 2 GiB) from the heap instead of mapping each anew.

    Under glibc's defaults every block over 32 MiB is a fresh mapping, unmapped when
    freed, so the kernel zeroes every page of every large array: deciding a window
    allocates several times its live memory in such arrays, and zeroing took 40% of
    its CPU time. From the heap, an array freed within the block lends its pages to
    the next one. Afterwards blocks over 32 MiB are mapped again (where glibc's own
    threshold settles), so what lives on, such as a store read's frames, does not
    pin the heap's top; ``release_free_heap`` returns what the block freed.
    Process-wide: the caller runs nothing else meanwhile.
    """
    if _MALLOPT is None:
        yield
        return
    _MALLOPT(_M_MMAP_THRESHOLD, _LARGEST_HEAP_BLOCK)
    try:
        yield
    finally:
        _MALLOPT(_M_MMAP_THRESHOLD, _SETTLED_THRESHOLD)
