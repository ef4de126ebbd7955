"""The points every source emits and every store keeps.

Measurements and tags follow Telegraf's names so that the detector also runs on
data an existing Telegraf pipeline already wrote. The full list of fields is in
``docs/schema.md``; this module holds the names the code relies on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Union

FieldValue = Union[float, int, str, bool]

INTERFACE = "interface"
INFINIBAND = "infiniband"
ETHTOOL = "ethtool"
NVIDIA_SMI = "nvidia_smi"
JOB_GPU = "job_gpu"
COLLECTOR_HEALTH = "strandwatch_source"
INGEST_HEALTH = "strandwatch_ingest"

TAG_KEYS: Mapping[str, tuple[str, ...]] = {
    INTERFACE: ("agent_host", "ifName"),
    INFINIBAND: ("host", "device", "port"),
    ETHTOOL: ("host", "interface"),
    NVIDIA_SMI: ("host", "index", "uuid", "name"),
}
"""The tags that identify a series of each measurement; other tags may ride along."""


@dataclass(slots=True)
class Point:
    """One line of line protocol: a measurement, its tags, its fields, a time in ns."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ns: int
    _series: tuple | None = field(default=None, repr=False, compare=False)

    def series_key(self) -> tuple:
        """Measurement plus sorted tags: points with equal keys belong to one series."""
        if self._series is None:
            self._series = (self.measurement, tuple(sorted(self.tags.items())))
        return self._series


def health_point(source: str, target: str, time_ns: int, *, up: bool, duration_s: float, points: int,
                 **extra: FieldValue) -> Point:
    """The ``strandwatch_source`` point every source emits per target and poll (node_exporter style)."""
    fields: dict[str, FieldValue] = {"up": int(up), "duration_seconds": duration_s, "points": points, **extra}
    return Point(COLLECTOR_HEALTH, {"source": source, "target": target}, fields, time_ns)
