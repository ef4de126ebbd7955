"""The detector's compiled kernels: ``@jit`` on a function of numpy arrays and numbers.

A kernel does in one pass over millions of rows what took several numpy passes, each
with its temporaries (docs/detector.md, "Scale"). numba compiles a kernel on its first
call and keeps the machine code on disk for the next process: beside the sources, in
the user's cache directory, or in ``NUMBA_CACHE_DIR`` (the deploy files set it). Where
none of them can be written, the kernels are compiled once per process instead.

numba is imported on the first call, not with the detector: numba makes its code
executable after writing it, which systemd's ``MemoryDenyWriteExecute=yes`` forbids,
and the services that never run the detector (agent, collect, ingest) keep that on.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Callable, TypeVar

Function = TypeVar("Function", bound=Callable)

log = logging.getLogger(__name__)
_compiling = threading.Lock()


def jit(function: Function) -> Function:
    """The function compiled by ``numba.njit`` on its first call, releasing the GIL (kernels also run on
    the host-sums thread), cached on disk where it can be."""
    compiled: Callable | None = None

    @functools.wraps(function)
    def kernel(*args, **kwargs):
        nonlocal compiled
        if compiled is None:
            with _compiling:
                if compiled is None:
                    compiled = _compile(function)
        return compiled(*args, **kwargs)

    return kernel  # type: ignore[return-value]


def _compile(function: Callable) -> Callable:
    try:
        import numba
    except OSError as error:
        raise RuntimeError(
            f"the detector's compiled kernels cannot run here: {error} "
            "(systemd's MemoryDenyWriteExecute=yes, or SELinux, forbids code made executable after it is written)"
        ) from error
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError as error:  # numba found no cache directory it can write
        log.debug("compiling %s in each process: %s", function.__qualname__, error)
        return numba.njit(nogil=True)(function)
