"""Simulated switches that answer real SNMP v2c over UDP on the loopback.

The fabric simulator drives the counters; the switches serve them through the
same IF-MIB objects a real leaf or spine does, so the real SNMP poller (and
net-snmp's tools) read them over real sockets. The simulator and the agent
share one :class:`CounterBoard`, a ``multiprocessing.shared_memory`` block with
numpy views: the simulator adds to the counters in its own process and the
agent, running in a second process (the second core), reads them when a
request arrives.

The agent answers GET, GETNEXT and GETBULK (SET gets notWritable) for one
community, v2c only. Requests and responses are coded by the small BER codec
in :mod:`collector.sources.snmp.ber`: a few microseconds per varbind, so a full
poll of a simulated fabric costs the agent a few milliseconds.

Served objects, per switch and port (``p`` is the port's position in
``SwitchSpec.ports``, ``s`` the switch's position in the board):

- system: sysDescr, sysObjectID, sysUpTime (``uptime_ticks[s]`` modulo 2^32), sysName
- ifNumber; ifTable: ifIndex, ifDescr (the port name), ifType (6), ifSpeed,
  ifAdminStatus (1), ifOperStatus (``oper_status[s, p]``), and the Counter32
  columns ifInOctets, ifInUcastPkts, ifInDiscards, ifInErrors, ifOutOctets,
  ifOutUcastPkts, ifOutDiscards, ifOutErrors (the board's counters modulo 2^32)
- ifXTable: ifName, ifHCInOctets, ifHCInUcastPkts, ifHCOutOctets,
  ifHCOutUcastPkts (Counter64, modulo 2^64), ifHighSpeed, ifAlias
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import multiprocessing
import selectors
import socket
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from collector.sources.snmp import ber, ifmib

log = logging.getLogger(__name__)

COUNTER_COLUMNS = tuple(column for column in ifmib.DYNAMIC_COLUMNS if column != "ifOperStatus")
"""The last axis of ``CounterBoard.counters``."""

OPER_UP = 1
OPER_DOWN = 2

MAX_MESSAGE_SIZE = 65507
"""Largest UDP payload over IPv4: GETBULK answers are cut to fit."""

SYS_OBJECT_ID = (1, 3, 6, 1, 4, 1, 8072, 3, 2, 10)
"""net-snmp's "Linux" agent OID: the simulated switches run no vendor firmware."""


@dataclass(frozen=True, slots=True)
class PortSpec:
    """One switch port as IF-MIB shows it."""

    if_index: int
    if_name: str
    if_alias: str
    speed_mbps: int


@dataclass(frozen=True, slots=True)
class SwitchSpec:
    """A switch: its name (sysName, and the poller's ``agent_host``) and its ports."""

    name: str
    ports: list[PortSpec]


def _validate(switches: list[SwitchSpec]) -> None:
    if not switches:
        raise ValueError("CounterBoard needs at least one switch")
    names = [switch.name for switch in switches]
    if len(set(names)) != len(names):
        raise ValueError(f"CounterBoard switches: duplicate switch names in {names}")
    for switch in switches:
        indexes = [port.if_index for port in switch.ports]
        if len(set(indexes)) != len(indexes):
            raise ValueError(f"switch {switch.name!r}: duplicate if_index values")
        bad = [i for i in indexes if not 0 < i < 2**31]
        if bad:
            raise ValueError(f"switch {switch.name!r}: if_index must be 1..2^31-1, got {bad}")


class CounterBoard:
    """Counters, link states and uptimes of simulated switches in shared memory.

    ``counters[s, p, c]`` (uint64) is port ``p`` of switch ``s`` and column
    ``COUNTER_COLUMNS[c]``; the simulator adds to it and lets it run past 2^32
    (the agent serves the Counter32 columns modulo 2^32). ``oper_status[s, p]``
    (uint8) is 1 up or 2 down, initially up. ``uptime_ticks[s]`` (uint64,
    hundredths of a second) is the switch's sysUpTime; setting it back makes
    the switch look rebooted. Ports are indexed by their position in
    ``SwitchSpec.ports``, not by ifIndex.

    The creating process owns the block: ``with CounterBoard(...)`` or
    ``close()`` then ``unlink()``. Another process attaches with
    :meth:`attach` and only closes. Drop your own references to the arrays
    before ``close()``: shared memory cannot close under live views.
    """

    def __init__(self, switches: list[SwitchSpec], *, _attach_to: str | None = None) -> None:
        _validate(switches)
        self.switches = tuple(switches)
        n_switches = len(switches)
        max_ports = max((len(switch.ports) for switch in switches), default=0) or 1
        counters_size = n_switches * max_ports * len(COUNTER_COLUMNS) * 8
        uptime_size = n_switches * 8
        size = counters_size + uptime_size + n_switches * max_ports
        self._owner = _attach_to is None
        if self._owner:
            self._shm = SharedMemory(create=True, size=size)
        else:
            self._shm = SharedMemory(name=_attach_to)
            if self._shm.size < size:
                self._shm.close()
                raise ValueError(
                    f"shared memory {_attach_to!r} holds {self._shm.size} bytes, the switches need {size}"
                )
        buffer = self._shm.buf
        self.counters = np.ndarray(
            (n_switches, max_ports, len(COUNTER_COLUMNS)), dtype=np.uint64, buffer=buffer
        )
        self.uptime_ticks = np.ndarray((n_switches,), dtype=np.uint64, buffer=buffer, offset=counters_size)
        self.oper_status = np.ndarray(
            (n_switches, max_ports), dtype=np.uint8, buffer=buffer, offset=counters_size + uptime_size
        )
        if self._owner:
            self.counters[:] = 0
            self.uptime_ticks[:] = 0
            self.oper_status[:] = OPER_UP

    @classmethod
    def attach(cls, name: str, switches: list[SwitchSpec]) -> CounterBoard:
        """Map an existing board (from another process) by its shared-memory name.

        Attach from processes started by ``multiprocessing``, as the agent is:
        before Python 3.13 an attaching process registers the block with its
        resource tracker, and only a tracker shared with the creator leaves
        the block alone when the attaching process exits.
        """
        return cls(switches, _attach_to=name)

    @property
    def name(self) -> str:
        """The shared-memory block's name, for :meth:`attach`."""
        return self._shm.name

    def switch_index(self, name: str) -> int:
        """Position of a switch (the first axis) by its name."""
        for index, switch in enumerate(self.switches):
            if switch.name == name:
                return index
        raise KeyError(f"no switch named {name!r} on this board")

    def close(self) -> None:
        """Release this process's mapping; the arrays are unusable afterwards."""
        del self.counters, self.uptime_ticks, self.oper_status
        self._shm.close()

    def unlink(self) -> None:
        """Destroy the block (owner only, after every process has closed it)."""
        self._shm.unlink()

    def __enter__(self) -> CounterBoard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
        if self._owner:
            self.unlink()


# Kinds of MIB entries: how the agent finds an entry's value at request time.
_STATIC, _COUNTER64, _COUNTER32, _OPER_STATUS, _UPTIME = range(5)

_SYSTEM = (1, 3, 6, 1, 2, 1, 1)
_IF_NUMBER = (1, 3, 6, 1, 2, 1, 2, 1)
_IF_ENTRY = (1, 3, 6, 1, 2, 1, 2, 2, 1)
_IFX_ENTRY = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)

_COLUMN = {name: index for index, name in enumerate(COUNTER_COLUMNS)}
_IF_TABLE_COUNTERS = {
    10: _COLUMN["ifHCInOctets"],  # ifInOctets
    11: _COLUMN["ifHCInUcastPkts"],  # ifInUcastPkts
    13: _COLUMN["ifInDiscards"],
    14: _COLUMN["ifInErrors"],
    16: _COLUMN["ifHCOutOctets"],  # ifOutOctets
    17: _COLUMN["ifHCOutUcastPkts"],  # ifOutUcastPkts
    19: _COLUMN["ifOutDiscards"],
    20: _COLUMN["ifOutErrors"],
}
_IFX_TABLE_COUNTERS = {
    6: _COLUMN["ifHCInOctets"],
    7: _COLUMN["ifHCInUcastPkts"],
    10: _COLUMN["ifHCOutOctets"],
    11: _COLUMN["ifHCOutUcastPkts"],
}


class _SwitchMib:
    """One switch's objects in lexicographic order, with pre-encoded OIDs and static values."""

    def __init__(self, switch: SwitchSpec) -> None:
        entries: list[tuple[tuple[int, ...], int, int, int, bytes]] = []

        def static(oid: tuple[int, ...], value_tlv: bytes) -> None:
            entries.append((oid, _STATIC, 0, 0, value_tlv))

        def dynamic(oid: tuple[int, ...], kind: int, port: int = 0, column: int = 0) -> None:
            entries.append((oid, kind, port, column, b""))

        static(_SYSTEM + (1, 0), ber.encode_octets(f"strandwatch simulated switch {switch.name}".encode()))
        static(_SYSTEM + (2, 0), ber.encode_oid(SYS_OBJECT_ID))
        dynamic(_SYSTEM + (3, 0), _UPTIME)
        static(_SYSTEM + (5, 0), ber.encode_octets(switch.name.encode()))
        static(_IF_NUMBER + (0,), ber.encode_integer(len(switch.ports)))
        for position, port in enumerate(switch.ports):
            index = port.if_index
            speed_bps = min(port.speed_mbps * 1_000_000, 2**32 - 1)
            static(_IF_ENTRY + (1, index), ber.encode_integer(index))
            static(_IF_ENTRY + (2, index), ber.encode_octets(port.if_name.encode()))
            static(_IF_ENTRY + (3, index), ber.encode_integer(6))  # ethernetCsmacd
            static(_IF_ENTRY + (5, index), ber.encode_unsigned(ber.GAUGE32, speed_bps))
            static(_IF_ENTRY + (7, index), ber.encode_integer(OPER_UP))
            dynamic(_IF_ENTRY + (8, index), _OPER_STATUS, position)
            for sub_id, column in _IF_TABLE_COUNTERS.items():
                dynamic(_IF_ENTRY + (sub_id, index), _COUNTER32, position, column)
            static(_IFX_ENTRY + (1, index), ber.encode_octets(port.if_name.encode()))
            for sub_id, column in _IFX_TABLE_COUNTERS.items():
                dynamic(_IFX_ENTRY + (sub_id, index), _COUNTER64, position, column)
            static(_IFX_ENTRY + (15, index), ber.encode_unsigned(ber.GAUGE32, port.speed_mbps))
            static(_IFX_ENTRY + (18, index), ber.encode_octets(port.if_alias.encode()))
        entries.sort()
        self.oids = [entry[0] for entry in entries]
        self.oid_tlvs = [ber.encode_oid(entry[0]) for entry in entries]
        self.kinds = [entry[1] for entry in entries]
        self.ports = [entry[2] for entry in entries]
        self.columns = [entry[3] for entry in entries]
        self.static_values = [entry[4] for entry in entries]
        # An OID under one of these but not in the MIB is a missing instance, else a missing object.
        self.objects = {oid[:-1] for oid in self.oids}


@dataclass(slots=True)
class _Snapshot:
    """One switch's dynamic values, read once per request so a response is consistent."""

    counters: list[list[int]]
    oper_status: list[int]
    uptime: int


class _Responder:
    """Answers decoded requests for one switch from a snapshot of the board."""

    def __init__(self, mib: _SwitchMib, board: CounterBoard, switch_index: int) -> None:
        self.mib = mib
        self.board = board
        self.switch_index = switch_index

    def snapshot(self) -> _Snapshot:
        s = self.switch_index
        return _Snapshot(
            self.board.counters[s].tolist(),
            self.board.oper_status[s].tolist(),
            int(self.board.uptime_ticks[s]),
        )

    def varbind(self, i: int, snap: _Snapshot) -> bytes:
        mib = self.mib
        kind = mib.kinds[i]
        if kind == _STATIC:
            value = mib.static_values[i]
        elif kind == _COUNTER64:
            value = ber.encode_unsigned(ber.COUNTER64, snap.counters[mib.ports[i]][mib.columns[i]])
        elif kind == _COUNTER32:
            value = ber.encode_unsigned(ber.COUNTER32, snap.counters[mib.ports[i]][mib.columns[i]] & 0xFFFFFFFF)
        elif kind == _OPER_STATUS:
            value = ber.encode_integer(snap.oper_status[mib.ports[i]])
        else:
            value = ber.encode_unsigned(ber.TIMETICKS, snap.uptime & 0xFFFFFFFF)
        return ber.encode_varbind(mib.oid_tlvs[i], value)

    def get(self, oid: tuple[int, ...], snap: _Snapshot) -> bytes:
        i = bisect.bisect_left(self.mib.oids, oid)
        if i < len(self.mib.oids) and self.mib.oids[i] == oid:
            return self.varbind(i, snap)
        missing = ber.NO_SUCH_INSTANCE if oid[:-1] in self.mib.objects else ber.NO_SUCH_OBJECT
        return ber.encode_varbind(ber.encode_oid(oid), ber.encode_tlv(missing, b""))

    def next_index(self, oid: tuple[int, ...]) -> int:
        return bisect.bisect_right(self.mib.oids, oid)

    def end_of_mib(self, oid: tuple[int, ...]) -> bytes:
        return ber.encode_varbind(ber.encode_oid(oid), ber.encode_tlv(ber.END_OF_MIB_VIEW, b""))

    def answer(self, request: ber.Message) -> tuple[int, int, list[bytes]]:
        """Error status, error index and varbinds of the response to ``request``."""
        snap = self.snapshot()
        oids = [varbind[0] for varbind in request.varbinds]
        size = len(self.mib.oids)
        if request.pdu_type == ber.GET_REQUEST:
            return 0, 0, [self.get(oid, snap) for oid in oids]
        if request.pdu_type == ber.GET_NEXT_REQUEST:
            out = []
            for oid in oids:
                i = self.next_index(oid)
                out.append(self.varbind(i, snap) if i < size else self.end_of_mib(oid))
            return 0, 0, out
        if request.pdu_type == ber.SET_REQUEST:
            return ber.NOT_WRITABLE, 1 if oids else 0, [
                ber.encode_varbind(ber.encode_oid(oid), ber.encode_tlv(tag, content))
                for oid, tag, content in request.varbinds
            ]
        return 0, 0, self.bulk(oids, request.field2, request.field3, snap, len(request.community))

    def bulk(
        self, oids: list[tuple[int, ...]], non_repeaters: int, max_repetitions: int, snap: _Snapshot, overhead: int
    ) -> list[bytes]:
        """GETBULK per RFC 3416 4.2.3, cut short to fit one UDP datagram."""
        size = len(self.mib.oids)
        budget = MAX_MESSAGE_SIZE - 64 - overhead
        non_repeaters = min(max(non_repeaters, 0), len(oids))
        out: list[bytes] = []
        for oid in oids[:non_repeaters]:
            i = self.next_index(oid)
            out.append(self.varbind(i, snap) if i < size else self.end_of_mib(oid))
            budget -= len(out[-1])
        repeaters = oids[non_repeaters:]
        positions = [self.next_index(oid) for oid in repeaters]
        last = list(repeaters)
        for _ in range(max(max_repetitions, 0) if repeaters else 0):
            for j, i in enumerate(positions):
                if i < size:
                    varbind = self.varbind(i, snap)
                    last[j] = self.mib.oids[i]
                    positions[j] = i + 1
                else:
                    varbind = self.end_of_mib(last[j])
                budget -= len(varbind)
                if budget < 0:
                    return out
                out.append(varbind)
            if all(i >= size for i in positions):
                break
        return out


def _serve(board_name: str, switches: list[SwitchSpec], host: str, community: bytes, control: Connection) -> None:
    """The agent process: one UDP socket per switch, answered until the control pipe speaks or closes."""
    board = CounterBoard.attach(board_name, switches)
    responders: dict[int, _Responder] = {}
    sockets: list[socket.socket] = []
    with selectors.DefaultSelector() as selector:
        try:
            for index, switch in enumerate(switches):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                sock.bind((host, 0))
                sock.setblocking(False)
                sockets.append(sock)
                responders[sock.fileno()] = _Responder(_SwitchMib(switch), board, index)
                selector.register(sock, selectors.EVENT_READ)
            selector.register(control, selectors.EVENT_READ)
            control.send([sock.getsockname()[1] for sock in sockets])
            while True:
                for key, _ in selector.select():
                    if key.fileobj is control:
                        return
                    _drain(key.fileobj, responders[key.fd], community)
        finally:
            for sock in sockets:
                sock.close()
            board.close()


def _drain(sock: socket.socket, responder: _Responder, community: bytes) -> None:
    """Answer every datagram waiting on ``sock``; drop what is not a v2c request for our community."""
    while True:
        try:
            data, peer = sock.recvfrom(65535)
        except BlockingIOError:
            return
        try:
            request = ber.decode_message(data)
        except ber.BerError:
            continue
        if (
            request.version != ber.VERSION_2C
            or request.community != community
            or request.pdu_type
            not in (ber.GET_REQUEST, ber.GET_NEXT_REQUEST, ber.GET_BULK_REQUEST, ber.SET_REQUEST)
        ):
            continue
        try:
            status, index, varbinds = responder.answer(request)
        except ber.BerError:
            continue
        reply = ber.encode_response(request.version, community, request.request_id, status, index, varbinds)
        try:
            sock.sendto(reply, peer)
        except OSError as exc:
            log.warning("simulated switch could not answer %s: %s", peer, exc)


class SimulatedSwitchAgents:
    """Runs the SNMP agent of every switch on a board in a separate process.

    Each switch gets its own UDP port on ``host`` (a free one, picked by the
    kernel); :attr:`endpoints` maps switch names to ``(host, port)`` once
    started. Use as ``with`` or ``async with``, or call start() and stop().
    The agent process is spawned, not forked, so the program that starts it
    must guard its entry point with ``if __name__ == "__main__":`` (console
    scripts and pytest do).
    """

    def __init__(
        self, board: CounterBoard, *, community: str = "public", host: str = "127.0.0.1", start_timeout: float = 30.0
    ) -> None:
        self.board = board
        self.community = community
        self.host = host
        self.start_timeout = start_timeout
        self.endpoints: dict[str, tuple[str, int]] = {}
        self._process: multiprocessing.process.BaseProcess | None = None
        self._control: Connection | None = None

    def start(self) -> None:
        """Start the agent process and wait until every switch's port is bound."""
        if self._process is not None:
            raise RuntimeError("simulated switch agents already started")
        context = multiprocessing.get_context("spawn")
        control, child_end = context.Pipe()
        process = context.Process(
            target=_serve,
            args=(self.board.name, list(self.board.switches), self.host, self.community.encode(), child_end),
            name="strandwatch-snmp-agent",
            daemon=True,
        )
        process.start()
        child_end.close()
        self._process, self._control = process, control
        try:
            if not control.poll(self.start_timeout):
                raise RuntimeError(f"simulated switch agents did not start within {self.start_timeout} s")
            ports = control.recv()
        except (EOFError, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(f"simulated switch agents failed to start (exit code {process.exitcode})") from exc
        self.endpoints = {
            switch.name: (self.host, port) for switch, port in zip(self.board.switches, ports, strict=True)
        }

    @property
    def pid(self) -> int | None:
        """The agent process's id while it runs (to read its CPU time), else None."""
        return None if self._process is None else self._process.pid

    def stop(self) -> None:
        """Ask the agent process to exit, and terminate it if it does not."""
        process, control = self._process, self._control
        self._process = self._control = None
        self.endpoints = {}
        if process is None or control is None:
            return
        try:
            control.send("stop")
        except (BrokenPipeError, OSError):
            pass
        control.close()
        process.join(5)
        if process.is_alive():
            process.terminate()
            process.join(5)

    def __enter__(self) -> SimulatedSwitchAgents:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> SimulatedSwitchAgents:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)
