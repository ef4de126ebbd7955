"""How the C heap treats the detector's large, short-lived arrays (glibc's knobs; elsewhere nothing).

The detector allocates and frees arrays of tens to hundreds of megabytes. What is
best depends on the process:

- the daemon runs for months and should give memory back after each step
  (:func:`release_free_heap`);
- a batch run over a store does the same work window after window and should keep
  what it freed for the next window (:func:`keep_freed_heap`).
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
KEPT_TOP = 2**31 - 1
"""Free memory at the top of the heap glibc keeps before trimming (mallopt takes an int)."""
TOP_PAD = 256 * 2**20
"""Extra memory glibc asks for each time the heap grows, so growth takes fewer system calls."""

_LIBC = ctypes.CDLL(None)
_MALLOPT = getattr(_LIBC, "mallopt", None)
_MALLOC_TRIM = getattr(_LIBC, "malloc_trim", None)


def release_free_heap() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``).

    A streaming step allocates a few hundred MB of frames and frees them again; glibc
    keeps most of that in its heap, scattered between live blocks, so without this the
    resident size swings by 200-400 MB from step to step (measured: deploy/README.md,
    "Running for months").
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def keep_freed_heap() -> None:
    """Serve every allocation from the heap and keep freed memory there, for the rest of the process.

    glibc gives each allocation over 32 MB its own mapping and unmaps it on free, so a
    batch window's arrays are mapped, faulted in and zeroed by the kernel again in every
    window: at 1,024 GPUs a third of a window's time was kernel time. Kept in the heap,
    the next window reuses the same pages. The peak resident size stays what the largest
    window needs (measured: docs/detector.md, "Scale").
    """
    if _MALLOPT is not None:
        _MALLOPT(M_MMAP_MAX, 0)
        _MALLOPT(M_TRIM_THRESHOLD, KEPT_TOP)
        _MALLOPT(M_TOP_PAD, TOP_PAD)
