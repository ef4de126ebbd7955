"""The ``rdma`` source: one ``infiniband`` point per RDMA port and poll."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

from collector.schema import INFINIBAND, FieldValue, Point, health_point
from collector.sources.rdma.sysfs import INFINIBAND_CLASS, DeviceGone, PortReading, read_device

log = logging.getLogger(__name__)

_OPTIONS = ("sysfs_root",)


def port_point(host: str, reading: PortReading, time_ns: int) -> Point:
    """The ``infiniband`` point of one port reading.

    Tags: host, device, port, and link_layer and netdev where known. Fields: the
    raw counters as integers, then ``state_id``/``state``,
    ``phys_state_id``/``phys_state`` and ``rate_gbps`` where the kernel gave them.
    """
    tags = {"host": host, "device": reading.device, "port": reading.port}
    if reading.link_layer:
        tags["link_layer"] = reading.link_layer
    if reading.netdev:
        tags["netdev"] = reading.netdev
    fields: dict[str, FieldValue] = dict(reading.counters)
    for name, value in (
        ("state_id", reading.state_id),
        ("state", reading.state),
        ("phys_state_id", reading.phys_state_id),
        ("phys_state", reading.phys_state),
        ("rate_gbps", reading.rate_gbps),
    ):
        if value is not None:
            fields[name] = value
    return Point(INFINIBAND, tags, fields, time_ns)


class RdmaSource:
    """Counters and link state of every RDMA port under ``<sysfs_root>/class/infiniband``.

    A host without that directory has no RDMA NICs: that is logged once at
    debug level and only the health point is emitted. A device that disappears
    while being read is left out of that poll.
    """

    name = "rdma"

    def __init__(self, host: str, sysfs_root: Path = Path("/sys")) -> None:
        if not host:
            raise ValueError("rdma source: host must be a non-empty string")
        self.host = host
        self.sysfs_root = Path(sysfs_root)
        self._class_dir = str(self.sysfs_root / INFINIBAND_CLASS)
        self._reported_missing = False

    @classmethod
    def from_config(cls, host: str, options: Mapping[str, Any]) -> RdmaSource:
        """Build from the ``rdma:`` block of a config file (see ``sample.yaml``)."""
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ValueError(f"rdma source: unknown option(s) {unknown}; known: {list(_OPTIONS)}")
        root = options.get("sysfs_root", "/sys")
        if not isinstance(root, str) or not root:
            raise ValueError(f"rdma source: sysfs_root must be a path string, got {root!r}")
        return cls(host, Path(root))

    def read_ports(self) -> list[PortReading]:
        """One blocking pass over all devices and ports."""
        try:
            devices = sorted(os.listdir(self._class_dir))
        except FileNotFoundError:
            if not self._reported_missing:
                log.debug("rdma: %s does not exist; no RDMA devices on this host", self._class_dir)
                self._reported_missing = True
            return []
        self._reported_missing = False
        readings: list[PortReading] = []
        for device in devices:
            try:
                readings.extend(read_device(self._class_dir, device))
            except DeviceGone as gone:
                log.debug("rdma: device %s went away during the poll (%s)", device, gone)
        return readings

    async def collect(self, time_ns: int) -> list[Point]:
        started = time.perf_counter()
        up = 1
        points: list[Point] = []
        try:
            readings = await asyncio.to_thread(self.read_ports)
            points = [port_point(self.host, reading, time_ns) for reading in readings]
        except OSError as err:
            log.warning("rdma: cannot read %s: %s", self._class_dir, err)
            up = 0
        health = health_point(self.name, self.host, time_ns, up=up, duration_s=time.perf_counter() - started,
                              points=len(points))
        return [*points, health]

    async def close(self) -> None:
        """Nothing to release: every read opens and closes its own file."""
