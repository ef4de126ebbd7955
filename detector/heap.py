"""Giving the C heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere nothing)."""

from __future__ import annotations

import ctypes

_MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)


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
