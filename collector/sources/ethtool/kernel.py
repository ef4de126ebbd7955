"""Driver statistics straight from the kernel's ethtool ioctl (``SIOCETHTOOL``).

The same calls ``ethtool -S`` makes, without a process per poll: per interface
and poll one ``ETHTOOL_GSSET_INFO`` (how many statistics there are now) and one
``ETHTOOL_GSTATS`` (their values). The names (``ETHTOOL_GSTRINGS``) are fetched
once and again only when the count changes, as it does on mlx5 when the number
of channels changes.
"""

from __future__ import annotations

import array
import errno
import fcntl
import socket
import struct
from pathlib import Path

from collector.sources.rdma import rdma_netdevs

SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO = 0x03
ETHTOOL_GSTRINGS = 0x1B
ETHTOOL_GSTATS = 0x1D
ETHTOOL_GSSET_INFO = 0x37
ETH_SS_STATS = 1
ETH_GSTRING_LEN = 32
IFNAMSIZ = 16

# struct ifreq: the name, then a union whose first member we use (ifr_data, a
# pointer); the union is padded to its largest member (struct ifmap, 24 bytes).
_IFREQ = struct.Struct(f"{IFNAMSIZ}sP16x")
# struct ethtool_drvinfo: cmd, driver, version, fw_version, bus_info,
# erom_version, reserved2, then five u32 counts.
_DRVINFO = struct.Struct("=I32s32s32s32s32s12s5I")
# struct ethtool_sset_info with room for one u32 of data.
_SSET_INFO = struct.Struct("=IIQI")
# struct ethtool_gstrings / ethtool_stats headers.
_GSTRINGS_HEADER = struct.Struct("=III")
_GSTATS_HEADER = struct.Struct("=II")

_SLACK = 64
"""Extra entries in every reply buffer. The kernel writes as many entries as the
driver has at that instant, whatever the caller asked for; the slack covers a
count that grows between the size query and the read."""


def _cstring(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


class KernelEthtoolBackend:
    """:class:`EthtoolBackend` over ``SIOCETHTOOL`` on one datagram socket.

    ``interfaces``: the interfaces to poll; ``None`` (the default) polls the
    network devices of the RDMA devices under ``sysfs_root``, looked up again
    every poll so that a NIC that comes or goes is followed. The socket's network
    namespace decides which interfaces it can see.
    """

    def __init__(self, interfaces: list[str] | None = None, sysfs_root: Path = Path("/sys")) -> None:
        for name in interfaces or ():
            if not name or len(name.encode()) >= IFNAMSIZ:
                raise ValueError(f"ethtool: interface name {name!r} must have 1 to {IFNAMSIZ - 1} bytes")
        self._configured = list(interfaces) if interfaces is not None else None
        self.sysfs_root = Path(sysfs_root)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._strings: dict[str, list[str]] = {}
        self._drivers: dict[str, str] = {}

    def interfaces(self) -> list[str]:
        if self._configured is not None:
            return list(self._configured)
        return rdma_netdevs(self.sysfs_root)

    def _ioctl(self, ifname: str, request: array.array) -> None:
        """Run one ethtool command whose struct is in ``request`` (filled in place)."""
        address, _ = request.buffer_info()
        ifreq = _IFREQ.pack(ifname.encode(), address)
        try:
            fcntl.ioctl(self._socket.fileno(), SIOCETHTOOL, ifreq)
        except OSError:
            self._strings.pop(ifname, None)
            self._drivers.pop(ifname, None)
            raise

    def driver(self, ifname: str) -> str:
        if ifname not in self._drivers:
            request = array.array("B", bytes(_DRVINFO.size))
            _DRVINFO.pack_into(request, 0, ETHTOOL_GDRVINFO, *([b""] * 6), *([0] * 5))
            try:
                self._ioctl(ifname, request)
            except OSError as err:
                if err.errno != errno.EOPNOTSUPP:
                    raise
                return ""
            self._drivers[ifname] = _cstring(_DRVINFO.unpack_from(request)[1])
        return self._drivers[ifname]

    def _stat_count(self, ifname: str) -> int:
        request = array.array("B", bytes(_SSET_INFO.size))
        _SSET_INFO.pack_into(request, 0, ETHTOOL_GSSET_INFO, 0, 1 << ETH_SS_STATS, 0)
        try:
            self._ioctl(ifname, request)
        except OSError as err:
            if err.errno == errno.EOPNOTSUPP:
                return 0
            raise
        _, _, supported, count = _SSET_INFO.unpack_from(request)
        return count if supported & (1 << ETH_SS_STATS) else 0

    def _stat_names(self, ifname: str, count: int) -> list[str]:
        request = array.array("B", bytes(_GSTRINGS_HEADER.size + (count + _SLACK) * ETH_GSTRING_LEN))
        _GSTRINGS_HEADER.pack_into(request, 0, ETHTOOL_GSTRINGS, ETH_SS_STATS, count)
        self._ioctl(ifname, request)
        length = min(_GSTRINGS_HEADER.unpack_from(request)[2], count + _SLACK)
        raw = request.tobytes()
        start = _GSTRINGS_HEADER.size
        return [
            _cstring(raw[start + i * ETH_GSTRING_LEN : start + (i + 1) * ETH_GSTRING_LEN]) for i in range(length)
        ]

    def _stat_values(self, ifname: str, count: int) -> array.array:
        request = array.array("B", bytes(_GSTATS_HEADER.size + (count + _SLACK) * 8))
        _GSTATS_HEADER.pack_into(request, 0, ETHTOOL_GSTATS, count)
        self._ioctl(ifname, request)
        length = min(_GSTATS_HEADER.unpack_from(request)[1], count + _SLACK)
        values = array.array("Q")
        values.frombytes(request[_GSTATS_HEADER.size : _GSTATS_HEADER.size + length * 8].tobytes())
        return values

    def stats(self, ifname: str) -> dict[str, int]:
        # Two tries: the first may meet a string table that is out of date.
        for _ in range(2):
            count = self._stat_count(ifname)
            if count == 0:
                return {}
            names = self._strings.get(ifname)
            if names is None or len(names) != count:
                names = self._strings[ifname] = self._stat_names(ifname, count)
            values = self._stat_values(ifname, count)
            if len(values) == len(names):
                return dict(zip(names, values))
            self._strings.pop(ifname, None)
        raise OSError(errno.EAGAIN, f"ethtool: the statistics of {ifname} keep changing size")

    def close(self) -> None:
        self._socket.close()
