"""Reading RDMA ports from ``/sys/class/infiniband``.

One :class:`PortReading` per port: the raw counters of ``counters/`` and
``hw_counters/``, the link state and rate, and the port's network device. The
reads are plain ``os.open``/``os.read`` calls without per-file logging, because a
host with eight NICs has several hundred of these files and is read every poll.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

INFINIBAND_CLASS = Path("class") / "infiniband"

_GONE_ERRNOS = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO})
"""Errors that mean the device itself went away (unbind, hot-unplug, reset)."""

_WIDE_SUFFIX = "_64"


class DeviceGone(Exception):
    """A device or port vanished while it was being read."""


@dataclass(slots=True)
class PortReading:
    """Everything read from one ``<dev>/ports/<n>/`` directory in one pass.

    ``counters`` holds ``counters/`` and ``hw_counters/`` merged under their file
    names, raw: ``port_xmit_data`` and ``port_rcv_data`` count 4-byte words.
    ``state_id``/``state`` split ``4: ACTIVE``; ``phys_state_id``/``phys_state``
    split ``5: LinkUp``; ``rate_gbps`` is the number in ``200 Gb/sec (4X HDR)``.
    Fields the kernel did not give are ``None``.
    """

    device: str
    port: str
    link_layer: str | None
    netdev: str | None
    state_id: int | None
    state: str | None
    phys_state_id: int | None
    phys_state: str | None
    rate_gbps: float | None
    counters: dict[str, int]


def _read_text(path: str) -> str | None:
    """The stripped content of a sysfs file, ``None`` if the kernel refuses it.

    Raises :class:`DeviceGone` when the file (and so its device) no longer exists.
    Other errors (``EINVAL`` from a port that is down, ``EIO`` from firmware) only
    make this one value unknown.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            data = os.read(fd, 256)
        finally:
            os.close(fd)
    except OSError as err:
        if err.errno in _GONE_ERRNOS:
            raise DeviceGone(path) from err
        return None
    return data.decode("ascii", "replace").strip()


def _list_dir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError as err:
        if err.errno in _GONE_ERRNOS:
            raise DeviceGone(path) from err
        raise


def _read_counter_dir(path: str) -> dict[str, int]:
    """Every integer file of a counter directory, by file name.

    A ``<name>_64`` file wins over ``<name>`` and is stored as ``<name>``: the
    plain file of the same counter may be a 32-bit one that saturates. Values
    that are not integers (``N/A (no PMA)``) are left out.
    """
    counters: dict[str, int] = {}
    wide: dict[str, int] = {}
    for name in _list_dir(path):
        text = _read_text(f"{path}/{name}")
        if text is None:
            continue
        try:
            value = int(text)
        except ValueError:
            continue
        if name.endswith(_WIDE_SUFFIX):
            wide[name[: -len(_WIDE_SUFFIX)]] = value
        else:
            counters[name] = value
    counters.update(wide)
    return dict(sorted(counters.items()))


def _split_numbered(text: str | None) -> tuple[int | None, str | None]:
    """``"4: ACTIVE"`` -> ``(4, "ACTIVE")``; anything else keeps its text."""
    if text is None:
        return None, None
    number, sep, label = text.partition(":")
    if sep:
        try:
            return int(number), label.strip()
        except ValueError:
            pass
    return None, text


def _parse_rate(text: str | None) -> float | None:
    """``"200 Gb/sec (4X HDR)"`` -> ``200.0``; ``None`` when unreadable."""
    if not text:
        return None
    try:
        return float(text.split()[0])
    except ValueError:
        return None


def _port_sort_key(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (1 << 30, name)


def device_netdevs(device_dir: str) -> dict[str, int | None]:
    """The network devices of one RDMA device: name -> ``dev_port`` (or ``None``).

    They live under ``<dev>/device/net/``; a device without any (InfiniBand with
    IPoIB not loaded) gives an empty mapping.
    """
    try:
        names = os.listdir(f"{device_dir}/device/net")
    except OSError:
        return {}
    netdevs: dict[str, int | None] = {}
    for name in names:
        try:
            text = _read_text(f"{device_dir}/device/net/{name}/dev_port")
        except DeviceGone:
            text = None
        try:
            netdevs[name] = int(text) if text is not None else None
        except ValueError:
            netdevs[name] = None
    return netdevs


def port_netdev(netdevs: dict[str, int | None], port: str) -> str | None:
    """The network device of port ``port`` (1-based) among its device's netdevs.

    ``dev_port`` is 0-based: port 1 is the netdev with ``dev_port`` 0. A device
    with a single netdev (mlx5: one port per PCI function) maps it to every port.
    Where several match (IPoIB child interfaces share ``dev_port``), the first
    name in sorted order wins so that the tag stays stable between polls.
    """
    if not port.isdigit():
        return None
    matching = sorted(name for name, dev_port in netdevs.items() if dev_port == int(port) - 1)
    if matching:
        return matching[0]
    if len(netdevs) == 1:
        return next(iter(netdevs))
    return None


def read_device(class_dir: str, device: str) -> list[PortReading]:
    """Read every port of one device; :class:`DeviceGone` if it vanishes meanwhile."""
    device_dir = f"{class_dir}/{device}"
    netdevs = device_netdevs(device_dir)
    readings = []
    for port in sorted(_list_dir(f"{device_dir}/ports"), key=_port_sort_key):
        port_dir = f"{device_dir}/ports/{port}"
        entries = set(_list_dir(port_dir))

        def attribute(name: str) -> str | None:
            return _read_text(f"{port_dir}/{name}") if name in entries else None

        counters = _read_counter_dir(f"{port_dir}/counters") if "counters" in entries else {}
        if "hw_counters" in entries:
            # On a name clash the standardised PMA counter of counters/ wins.
            for name, value in _read_counter_dir(f"{port_dir}/hw_counters").items():
                counters.setdefault(name, value)
        state_id, state = _split_numbered(attribute("state"))
        phys_state_id, phys_state = _split_numbered(attribute("phys_state"))
        readings.append(
            PortReading(
                device=device,
                port=port,
                link_layer=attribute("link_layer"),
                netdev=port_netdev(netdevs, port),
                state_id=state_id,
                state=state,
                phys_state_id=phys_state_id,
                phys_state=phys_state,
                rate_gbps=_parse_rate(attribute("rate")),
                counters=counters,
            )
        )
    return readings


def rdma_netdevs(sysfs_root: Path) -> list[str]:
    """Names of all network devices that belong to an RDMA device, sorted.

    The ethtool source polls these by default: they are the RoCE (or IPoIB)
    interfaces whose PFC and ECN counters matter to the fabric.
    """
    class_dir = sysfs_root / INFINIBAND_CLASS
    try:
        devices = os.listdir(class_dir)
    except OSError:
        return []
    names: set[str] = set()
    for device in devices:
        names.update(device_netdevs(f"{class_dir}/{device}"))
    return sorted(names)
