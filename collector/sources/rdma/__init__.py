"""RDMA NIC counters from sysfs (``infiniband`` measurement).

Public API: :class:`RdmaSource` (the source), :class:`PortReading` and
:func:`read_device` (one pass over a device), :func:`rdma_netdevs` and
:func:`port_netdev` (the RDMA device -> network device mapping that the ethtool
source shares).
"""

from __future__ import annotations

from collector.sources.rdma.source import RdmaSource, port_point
from collector.sources.rdma.sysfs import (
    INFINIBAND_CLASS,
    DeviceGone,
    PortReading,
    device_netdevs,
    port_netdev,
    rdma_netdevs,
    read_device,
)

__all__ = [
    "INFINIBAND_CLASS",
    "DeviceGone",
    "PortReading",
    "RdmaSource",
    "device_netdevs",
    "port_netdev",
    "port_point",
    "rdma_netdevs",
    "read_device",
]
