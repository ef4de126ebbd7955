"""Real SNMP agents for the SNMP tests, each on a free loopback port.

- :class:`Snmpsimd`: Debian's snmpsim serving ``.snmprec`` recordings (the
  community is the file name without ``.snmprec``). As root it drops to
  ``nobody``, so its data and cache folders live in world-readable temporary
  folders (pytest's own tmp_path is private to root).
- :class:`Snmpd`: net-snmp's agent with a minimal config of its own, showing
  this machine's interfaces.
- :class:`GarbageResponder`: answers every datagram with bytes that are not SNMP.
- :class:`RelayProxy`: forwards datagrams to an agent, records each request's
  PDU type and varbind count, and can hold answers back to play a slow agent.

pytest fixtures that use them sit at the end of this module; test modules
import the ones they need.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from collector.sources.snmp import ber
from detector.simulator.snmp_agent import CounterBoard, PortSpec, SimulatedSwitchAgents, SwitchSpec

SHARED_SNMP = Path(__file__).parents[2] / "shared" / "fixtures" / "snmp"
"""Recordings of real switches beside the checkout (read-only, never copied into the repository)."""
FIXTURES = Path(__file__).parent / "fixtures" / "snmp"
GOLDEN = Path(__file__).parent / "golden" / "snmp"
NET_SNMP_ENV = {**os.environ, "MIBS": "", "MIBDIRS": "/nonexistent"}
"""net-snmp without MIB files: numeric OIDs only, and no warnings about missing MIBs."""


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require(tool: str) -> str:
    """Path of an installed tool, or skip the test that needs it."""
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


def net_snmp(
    tool: str, endpoint: tuple[str, int], *oids: str, options: tuple[str, ...] = (), community: str = "public"
) -> str:
    """Run a net-snmp tool (snmpget, snmpbulkwalk...) against an agent with numeric OIDs; its stdout."""
    host, port = endpoint
    done = subprocess.run(
        [require(tool), "-v2c", "-c", community, "-On", "-t", "2", "-r", "1", *options, f"{host}:{port}", *oids],
        capture_output=True,
        text=True,
        env=NET_SNMP_ENV,
        timeout=30,
    )
    if done.returncode != 0:
        raise AssertionError(f"{tool} {oids} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def walk_values(endpoint: tuple[str, int], oid: str, community: str = "public") -> dict[str, str]:
    """snmpbulkwalk ``oid``: {numeric OID without its leading dot: value as net-snmp prints it, unquoted}."""
    out = net_snmp("snmpbulkwalk", endpoint, oid, options=("-Oq", "-Ot", "-Oe"), community=community)
    values = {}
    for line in out.splitlines():
        name, _, value = line.partition(" ")
        values[name.lstrip(".")] = value.strip('"')
    return values


def wait_until_answering(endpoint: tuple[str, int], community: str, timeout: float = 20.0) -> None:
    """Poll sysUpTime.0 until the agent answers; raises if it never does."""
    host, port = endpoint
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run(
            [require("snmpget"), "-v2c", "-c", community, "-t", "0.3", "-r", "0", f"{host}:{port}",
             "1.3.6.1.2.1.1.3.0"],
            capture_output=True,
            env=NET_SNMP_ENV,
        )
        if done.returncode == 0:
            return
    raise AssertionError(f"no SNMP agent answered on {host}:{port} within {timeout} s")


def _public_tempdir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


class Snmpsimd:
    """snmpsimd serving ``data_dir`` on a free loopback port; ``endpoint`` once started."""

    def __init__(self, data_dir: Path, probe_community: str) -> None:
        self.data_dir = data_dir
        self.probe_community = probe_community
        self.endpoint = ("127.0.0.1", free_udp_port())
        self._cache = _public_tempdir("strandwatch-snmpsim-cache-")
        self._cache.chmod(0o777)
        self._log = self._cache / "snmpsimd.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Snmpsimd:
        with open(self._log, "wb") as log:
            self._process = subprocess.Popen(
                [
                    require("snmpsimd"),
                    f"--data-dir={self.data_dir}",
                    f"--cache-dir={self._cache}",
                    f"--agent-udpv4-endpoint={self.endpoint[0]}:{self.endpoint[1]}",
                    "--process-user=nobody",
                    "--process-group=nogroup",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until_answering(self.endpoint, self.probe_community)
        except AssertionError:
            self.__exit__()
            raise AssertionError(f"snmpsimd did not start; its log:\n{self._log.read_text()[-2000:]}") from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        shutil.rmtree(self._cache, ignore_errors=True)


class Snmpd:
    """net-snmp's snmpd in the foreground with its own config: v2c ``public`` and an SNMPv3 user."""

    V3_USER = "strandwatch"
    V3_AUTH_KEY = "auth-passphrase-1"
    V3_PRIV_KEY = "priv-passphrase-1"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.endpoint = ("127.0.0.1", free_udp_port())
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Snmpd:
        config = self.workdir / "snmpd.conf"
        config.write_text(
            f"agentaddress udp:{self.endpoint[0]}:{self.endpoint[1]}\n"
            "rocommunity public 127.0.0.1\n"
            f'createUser {self.V3_USER} SHA-256 "{self.V3_AUTH_KEY}" AES "{self.V3_PRIV_KEY}"\n'
            f"rouser {self.V3_USER} priv\n"
        )
        env = {**NET_SNMP_ENV, "SNMP_PERSISTENT_DIR": str(self.workdir / "persist")}
        self._process = subprocess.Popen(
            [require("snmpd"), "-f", "-Lf", str(self.workdir / "snmpd.log"), "-C", "-c", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until_answering(self.endpoint, "public")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None


class _UdpThread:
    """A UDP socket on a free loopback port; a daemon thread hands each datagram to ``handle``."""

    def __init__(self, handle: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.handle = handle
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.endpoint = self.sock.getsockname()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.handle(data, peer)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


class GarbageResponder(_UdpThread):
    """Answers every datagram at once, with a BER-looking header and nonsense after it."""

    def __init__(self) -> None:
        super().__init__(self._answer)

    def _answer(self, data: bytes, peer: tuple[str, int]) -> None:
        self.sock.sendto(b"\x30\x82\xff\xff\x02\x01\x01garbage" + data[::-1], peer)


class RelayProxy(_UdpThread):
    """Relays requests to ``upstream``, one at a time, optionally ``delay`` seconds late.

    ``requests`` collects (PDU type, varbind count) of every request relayed.
    """

    def __init__(self, upstream: tuple[str, int], delay: float = 0.0) -> None:
        super().__init__(self._relay)
        self.upstream = upstream
        self.delay = delay
        self.requests: list[tuple[int, int]] = []
        self._upstream_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._upstream_sock.settimeout(2)

    def _relay(self, data: bytes, peer: tuple[str, int]) -> None:
        message = ber.decode_message(data)
        self.requests.append((message.pdu_type, len(message.varbinds)))
        self._upstream_sock.sendto(data, self.upstream)
        reply = self._upstream_sock.recv(65535)
        time.sleep(self.delay)
        self.sock.sendto(reply, peer)

    def __exit__(self, *exc_info: object) -> None:
        super().__exit__(*exc_info)
        self._upstream_sock.close()


def leaf_switches(count: int, ports: int) -> list[SwitchSpec]:
    """``count`` leaves named leaf01... with ``ports`` 400G ports swp1... each."""
    return [
        SwitchSpec(
            f"leaf{s + 1:02d}",
            [PortSpec(p + 1, f"swp{p + 1}", f"to node{s * ports + p + 1:03d} mlx5_0", 400_000) for p in range(ports)],
        )
        for s in range(count)
    ]


@pytest.fixture(scope="module")
def switch_board() -> Iterator[tuple[CounterBoard, SimulatedSwitchAgents]]:
    """Two simulated leaves with 4 ports each, agents running; tests set the counters they read."""
    with CounterBoard(leaf_switches(2, 4)) as board, SimulatedSwitchAgents(board) as agents:
        yield board, agents


@pytest.fixture(scope="module")
def shared_snmpsim() -> Iterator[Snmpsimd]:
    """snmpsimd serving the real switch recordings in ../shared/fixtures/snmp."""
    if not SHARED_SNMP.is_dir():
        pytest.skip(f"{SHARED_SNMP} (recordings beside the checkout) is not there")
    with Snmpsimd(SHARED_SNMP, "cumulus_bgp") as server:
        yield server


@pytest.fixture
def snapshot_dir() -> Iterator[Path]:
    """A world-readable folder snmpsimd can serve this repository's recordings from."""
    path = _public_tempdir("strandwatch-snmprec-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def serve_snapshot(data_dir: Path, recording: str, served_as: str) -> None:
    """Put ``tests/fixtures/snmp/<recording>`` in ``data_dir`` as ``<served_as>.snmprec``.

    snmpsimd re-indexes a data file whose mtime (in whole seconds) changed
    since it opened it, and rebuilds its index only when the file is not
    older than the index: the first snapshot is back-dated, every later one
    gets a time after both its predecessor and the index.
    """
    target = data_dir / f"{served_as}.snmprec"
    stamp = int(time.time()) - 3600
    if target.exists():
        stamp = max(int(time.time()), int(target.stat().st_mtime) + 1)
    staged = data_dir / f".{served_as}.staged"
    shutil.copyfile(FIXTURES / recording, staged)
    staged.chmod(0o644)
    os.utime(staged, (stamp, stamp))
    os.replace(staged, target)
