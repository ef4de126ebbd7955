"""The C heap settings: a batch run reuses the memory it freed instead of faulting it in again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

FAULTS = """
import resource, sys
import numpy as np
from detector.heap import keep_freed_heap, release_free_heap
if sys.argv[1] == "keep":
    keep_freed_heap()
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    window = np.ones(200 * 2**20 // 8)  # one large array per "window", freed before the next
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del window
release_free_heap()
print(*faults)
"""


def page_faults(mode: str) -> list[int]:
    # A process of its own: the settings last for the rest of the process.
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], cwd=REPO, capture_output=True, text=True, check=True)
    return [int(count) for count in out.stdout.split()]


def test_kept_heap_serves_the_next_window_from_memory_already_faulted_in():
    default, kept = page_faults("default"), page_faults("keep")
    assert min(default[1:]) > 100, default  # each 200 MB array is mapped and faulted in anew
    assert max(kept[1:]) < min(default[1:]) / 10, (kept, default)
