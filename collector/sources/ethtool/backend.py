"""The seam between the ethtool source and whatever reads NIC statistics.

:class:`~collector.sources.ethtool.kernel.KernelEthtoolBackend` asks the kernel;
the fabric simulator implements :class:`EthtoolBackend` for simulated NICs.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class EthtoolBackend(Protocol):
    """Reads the driver statistics (``ethtool -S``) of a host's interfaces.

    ``interfaces()`` names the interfaces to poll this time. ``driver(ifname)``
    is the driver name (``mlx5_core``), ``""`` if unknown. ``stats(ifname)`` maps
    every statistic name, exactly as ``ethtool -S`` prints it, to its raw value;
    the source picks the counters it keeps. ``driver`` and ``stats`` raise
    ``OSError`` for an interface that is gone; the source skips it for that
    poll. All of them block (the source runs them in a worker thread).
    ``close()`` releases what the backend holds; nothing is called after it.
    """

    def interfaces(self) -> list[str]: ...

    def driver(self, ifname: str) -> str: ...

    def stats(self, ifname: str) -> dict[str, int]: ...

    def close(self) -> None: ...
