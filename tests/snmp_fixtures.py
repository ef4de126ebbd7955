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
- :class:`NetnsSnmpd`: snmpd in a network namespace of its own with veth
  interfaces whose far ends sit in a second namespace, so tests can send real
  traffic through them and poll from inside (see :func:`run_in_namespace`).

pytest fixtures that use them sit at the end of this module; test modules
import the ones they need.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
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
        pytest.fail(f"{tool} is not installed")
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
    """net-snmp's snmpd in the foreground with its own config: v2c ``public`` and SNMPv3 users.

    ``V3_USER`` uses SHA-256 and AES-128; ``V3_USERS`` adds SHA-512 with AES-256 and SHA-1 with DES
    (which strandwatch leaves to pysnmp). Leaving and entering again restarts snmpd on the same port
    with the same persistent state, so its engine boots count goes up: a restarted agent.
    """

    V3_USER = "strandwatch"
    V3_AUTH_KEY = "auth-passphrase-1"
    V3_PRIV_KEY = "priv-passphrase-1"
    V3_USERS = {
        V3_USER: ("sha256", V3_AUTH_KEY, "aes", V3_PRIV_KEY),
        "sha512user": ("sha512", "auth-passphrase-2", "aes256", "priv-passphrase-2"),
        "desuser": ("sha", "auth-passphrase-3", "des", "priv-passphrase-3"),
    }
    _NET_SNMP = {"sha256": "SHA-256", "sha512": "SHA-512", "sha": "SHA", "aes": "AES", "aes256": "AES-256",
                 "des": "DES"}

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.endpoint = ("127.0.0.1", free_udp_port())
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Snmpd:
        config = self.workdir / "snmpd.conf"
        users = "".join(
            f'createUser {user} {self._NET_SNMP[auth]} "{auth_key}" {self._NET_SNMP[priv]} "{priv_key}"\n'
            f"rouser {user} priv\n"
            for user, (auth, auth_key, priv, priv_key) in self.V3_USERS.items()
        )
        config.write_text(
            f"agentaddress udp:{self.endpoint[0]}:{self.endpoint[1]}\nrocommunity public 127.0.0.1\n{users}"
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

    def __init__(self, handle: Callable[[bytes, tuple[str, int]], None], port: int = 0) -> None:
        self.handle = handle
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
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

    def __init__(self, upstream: tuple[str, int], delay: float = 0.0, port: int = 0) -> None:
        super().__init__(self._relay, port)
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
        pytest.fail(f"{SHARED_SNMP} (recordings beside the checkout) is not there")
    with Snmpsimd(SHARED_SNMP, "cumulus_bgp") as server:
        yield server


@pytest.fixture(scope="module")
def own_snmpsim() -> Iterator[Snmpsimd]:
    """snmpsimd serving every recording of tests/fixtures/snmp, each under its file name as community."""
    data_dir = _public_tempdir("strandwatch-snmprec-all-")
    for recording in FIXTURES.glob("*.snmprec"):
        shutil.copyfile(recording, data_dir / recording.name)
        (data_dir / recording.name).chmod(0o644)
    try:
        with Snmpsimd(data_dir, "onyx-leaf") as server:
            yield server
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


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


REPOSITORY = Path(__file__).parents[1]


class NetnsSnmpd:
    """snmpd inside namespace ``agent`` showing ``ports`` veth interfaces va1...; their peers vb1... sit in ``peer``.

    Only namespaces this object creates are touched, and it deletes them on
    exit (which also removes the veths). snmpd listens on 127.0.0.1:1161 of
    the agent namespace with v2c community ``public`` and two SNMPv3 users:
    ``sha256`` (SHA-256 + AES-128) and ``sha512`` (SHA-512 + AES-256). IPv6
    is off in both namespaces so the interfaces carry only the test's traffic.
    """

    PORT = 1161
    USERS = {
        "sha256": ("sha256", "auth-passphrase-256", "aes", "priv-passphrase-128"),
        "sha512": ("sha512", "auth-passphrase-512", "aes256", "priv-passphrase-256"),
    }

    def __init__(self, workdir: Path, ports: int) -> None:
        tag = f"{os.getpid()}-{time.monotonic_ns() % 100000}"
        self.agent = f"sw-agent-{tag}"
        self.peer = f"sw-peer-{tag}"
        self.workdir = workdir
        self.ports = ports
        self._process: subprocess.Popen[bytes] | None = None
        self._created: list[str] = []

    def __enter__(self) -> NetnsSnmpd:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            pytest.fail("network namespaces need root and iproute2")
        snmpd = require("snmpd")
        try:
            for namespace in (self.agent, self.peer):
                _ip("netns", "add", namespace)
                self._created.append(namespace)
                _netns(namespace, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                       "net.ipv6.conf.default.disable_ipv6=1")
                _ip("-n", namespace, "link", "set", "lo", "up")
            for i in range(1, self.ports + 1):
                _ip("link", "add", f"va{i}", "netns", self.agent, "type", "veth", "peer", "name", f"vb{i}",
                    "netns", self.peer)
                _ip("-n", self.agent, "addr", "add", f"10.{i // 250}.{i % 250}.1/24", "dev", f"va{i}")
                _ip("-n", self.peer, "addr", "add", f"10.{i // 250}.{i % 250}.2/24", "dev", f"vb{i}")
                _ip("-n", self.agent, "link", "set", f"va{i}", "up")
                _ip("-n", self.peer, "link", "set", f"vb{i}", "up")
                # Traffic goes to .3, which nobody owns: frames reach va<i> (and count there) and are
                # dropped without an answer, so the only bytes on the wire are the ones the test sends.
                mac = _netns(self.agent, "cat", f"/sys/class/net/va{i}/address").strip()
                _ip("-n", self.peer, "neigh", "replace", f"10.{i // 250}.{i % 250}.3", "lladdr", mac,
                    "dev", f"vb{i}", "nud", "permanent")
            config = self.workdir / "snmpd.conf"
            users = "".join(
                f'createUser {user} {_NET_SNMP_AUTH[auth]} "{auth_key}" {_NET_SNMP_PRIV[priv]} "{priv_key}"\n'
                f"rouser {user} priv\n"
                for user, (auth, auth_key, priv, priv_key) in self.USERS.items()
            )
            config.write_text(f"agentaddress udp:127.0.0.1:{self.PORT}\nrocommunity public 127.0.0.1\n{users}")
            env = {**NET_SNMP_ENV, "SNMP_PERSISTENT_DIR": str(self.workdir / "persist")}
            self._process = subprocess.Popen(
                ["ip", "netns", "exec", self.agent, snmpd, "-f", "-Lf", str(self.workdir / "snmpd.log"), "-C",
                 "-c", str(config)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 20
            while subprocess.run(
                ["ip", "netns", "exec", self.agent, require("snmpget"), "-v2c", "-c", "public", "-t", "0.3", "-r",
                 "0", f"127.0.0.1:{self.PORT}", "1.3.6.1.2.1.1.3.0"], capture_output=True, env=NET_SNMP_ENV,
            ).returncode:
                if time.monotonic() > deadline:
                    raise AssertionError("snmpd in the network namespace did not answer within 20 s")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            self._process.terminate()  # terminates ip netns exec, which exec'd snmpd: the same process
            self._process.wait(10)
            self._process = None
        for namespace in reversed(self._created):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        self._created.clear()

    def rx_bytes(self, port: int) -> int:
        """The kernel's receive byte counter of va<port>."""
        return int(_netns(self.agent, "cat", f"/sys/class/net/va{port}/statistics/rx_bytes"))

    def blast(self, port: int, packets: int, payload: int) -> int:
        """Send ``packets`` UDP datagrams of ``payload`` bytes into va<port>; the bytes that cross the wire."""
        address = f"10.{port // 250}.{port % 250}.3"
        code = (
            "import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for _ in range({packets}): s.sendto(bytes({payload}), ('{address}', 9))\n"
        )
        _netns(self.peer, sys.executable, "-c", code)
        return packets * (14 + 20 + 8 + payload)  # Ethernet, IPv4 and UDP headers on a veth (no FCS)


_NET_SNMP_AUTH = {"sha256": "SHA-256", "sha512": "SHA-512"}
_NET_SNMP_PRIV = {"aes": "AES", "aes256": "AES-256"}


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode:
        raise AssertionError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


def _netns(namespace: str, *command: str) -> str:
    done = subprocess.run(["ip", "netns", "exec", namespace, *command], capture_output=True, text=True, timeout=60)
    if done.returncode:
        raise AssertionError(f"{command[0]} in {namespace} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def run_in_namespace(namespace: str, config: Path) -> str:
    """``strandwatch collect snmp --config CONFIG --once`` run inside ``namespace``: its line protocol."""
    code = (
        "import argparse, sys\n"
        "from collector.sources.snmp import cli\n"
        "parser = argparse.ArgumentParser()\n"
        "cli.add_collect_snmp_arguments(parser)\n"
        f"sys.exit(cli.run_collect_snmp(parser.parse_args(['--config', {str(config)!r}, '--once'])))\n"
    )
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", code],
        capture_output=True, text=True, cwd=REPOSITORY, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
    )
    if done.returncode:
        raise AssertionError(f"polling inside {namespace} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout
