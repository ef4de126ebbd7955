"""Golden-file comparison shared by the source tests (node_exporter style)."""

from __future__ import annotations

import os
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"


def assert_golden(name: str, text: str, folder: str = "node") -> None:
    """Compare with tests/golden/<folder>/<name>; STRANDWATCH_UPDATE_GOLDEN=1 rewrites it."""
    path = GOLDEN / folder / name
    if os.environ.get("STRANDWATCH_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} is missing; run with STRANDWATCH_UPDATE_GOLDEN=1 to write it"
    assert text == path.read_text()
