"""GETBULK requests to SNMP agents: a fast path of our own, and pysnmp where it is still needed.

Profiling the pysnmp-only poller showed ~90% of its CPU in pyasn1 decoding
(about 60 µs per varbind). So requests and answers are coded by
:mod:`collector.sources.snmp.ber` (about 1 µs per varbind) and travel over one
asyncio UDP socket per address family, shared by all targets, with answers
matched to requests by request-id (SNMPv3: msgID): :class:`V2cSession` for
SNMPv2c, :class:`V3Session` for SNMPv3 with the protocols :mod:`usm` covers
(HMAC-MD5/SHA/SHA-2 authentication, AES privacy). SNMPv3 with DES, 3DES or
AES keys that need extension goes through pysnmp's ``SnmpEngine``
(:class:`PysnmpSession`). All sessions return the same plain varbinds, so
everything above this module is the same for all.

:class:`SnmpClient` hands out sessions per target and owns the sockets and the
engine; ``use_pysnmp_for_v2c`` / ``use_pysnmp_for_v3`` send those through
pysnmp instead, to compare the paths (or to step around a problem).
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import random
import socket
from typing import Callable, Protocol

from pysnmp.hlapi.v3arch.asyncio import (
    USM_AUTH_HMAC96_MD5,
    USM_AUTH_HMAC96_SHA,
    USM_AUTH_HMAC128_SHA224,
    USM_AUTH_HMAC192_SHA256,
    USM_AUTH_HMAC256_SHA384,
    USM_AUTH_HMAC384_SHA512,
    USM_AUTH_NONE,
    USM_PRIV_CBC56_DES,
    USM_PRIV_CBC168_3DES,
    USM_PRIV_CFB128_AES,
    USM_PRIV_CFB192_AES,
    USM_PRIV_CFB256_AES,
    USM_PRIV_NONE,
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    UsmUserData,
    bulk_cmd,
)
from pyasn1.type import univ

from collector.sources.snmp import ber, usm
from collector.sources.snmp.config import SnmpConfigError, SnmpTarget
from collector.sources.snmp.usm import UsmError, UsmPeer, report_name

Oid = tuple[int, ...]
Varbind = tuple[Oid, int, ber.Value]
"""(oid, BER tag of the value, decoded value): see :data:`ber.Value`."""

RECEIVE_BUFFER = 4 << 20
"""Bytes of socket receive buffer: room for answers from many agents arriving at once."""


class SnmpRequestError(Exception):
    """An agent did not answer, answered with an error, or answered nonsense."""


class Session(Protocol):
    """GETBULK to one agent; counts requests and varbinds so a poll can report its work."""

    requests: int
    varbinds: int

    async def bulk(self, non_repeaters: int, max_repetitions: int, oids: list[Oid]) -> list[Varbind]:
        """One GETBULK; the varbinds in wire order."""
        ...


class _Endpoint(asyncio.DatagramProtocol):
    """One UDP socket; hands each datagram to the request waiting for its id (request-id, or SNMPv3 msgID).

    The waiting request's ``open`` function checks and decodes the datagram in
    place; anything it rejects (garbage, another community, a forged or stale
    answer) is dropped, and the request keeps waiting until its timeout.
    """

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[int, tuple[asyncio.Future, Callable[[bytes], object]]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        waiter = self.waiting.get(ber.message_id(data))  # type: ignore[arg-type]
        if waiter is None or waiter[0].done():
            return  # garbage, or a late answer to a request already answered or given up
        future, open_answer = waiter
        try:
            future.set_result(open_answer(data))
        except (ber.BerError, UsmError, _Rejected):
            return

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like arrive here without saying which request they
        # belong to; the request they concern times out.
        pass

    async def exchange(
        self, request_id: int, message: bytes, address: tuple, open_answer: Callable[[bytes], object],
        timeout: float, retries: int,
    ) -> object:
        """Send ``message`` (again after each ``timeout``, ``retries`` times) until ``open_answer`` accepts an answer."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.waiting[request_id] = (future, open_answer)
        try:
            for _ in range(retries + 1):
                assert self.transport is not None
                self.transport.sendto(message, address)
                try:
                    return await asyncio.wait_for(asyncio.shield(future), timeout)
                except TimeoutError:
                    continue
            raise SnmpRequestError(f"no answer after {retries + 1} tries of {timeout:g} s")
        finally:
            del self.waiting[request_id]
            future.cancel()


class _Rejected(Exception):
    """A datagram with the right id that is not the answer (another community, not a Response)."""


class V2cSession:
    """GETBULK over SNMPv2c through our own BER codec; one per target."""

    def __init__(
        self, client: SnmpClient, address: tuple, family: int, community: bytes, timeout: float, retries: int
    ) -> None:
        self._client = client
        self._address = address
        self._family = family
        self._community = community
        self._timeout = timeout
        self._retries = retries
        self.requests = 0
        self.varbinds = 0

    def _open(self, data: bytes) -> ber.Pdu:
        response = ber.decode_response(data)
        if (
            response.version != ber.VERSION_2C
            or response.community != self._community
            or response.pdu.pdu_type != ber.RESPONSE
        ):
            raise _Rejected
        return response.pdu

    async def bulk(self, non_repeaters: int, max_repetitions: int, oids: list[Oid]) -> list[Varbind]:
        endpoint = await self._client._endpoint(self._family)
        request_id = self._client._next_request_id()
        message = ber.encode_request(
            ber.GET_BULK_REQUEST,
            ber.VERSION_2C,
            self._community,
            request_id,
            non_repeaters,
            max_repetitions,
            [ber.encode_oid(oid) for oid in oids],
        )
        try:
            pdu = await endpoint.exchange(request_id, message, self._address, self._open, self._timeout, self._retries)
        except SnmpRequestError as exc:
            raise SnmpRequestError(f"{exc} (down, filtered, wrong community, or not SNMPv2c)") from None
        return self._count(pdu)  # type: ignore[arg-type]

    def _count(self, pdu: ber.Pdu) -> list[Varbind]:
        self.requests += 1
        if pdu.error_status:
            raise SnmpRequestError(f"agent answered {_error_name(pdu.error_status)} at varbind {pdu.error_index}")
        self.varbinds += len(pdu.varbinds)
        return pdu.varbinds


class V3Session(V2cSession):
    """GETBULK over SNMPv3 with the built-in USM (:mod:`usm`) and BER codec; one per target.

    ``peer`` holds the USM state: the agent's engine id, boots and time. An
    agent that reports notInTimeWindow (its clock or boots moved) is answered
    with the time from that report; one that reports unknownEngineID (a new
    engine id: reinstalled or replaced) is discovered again; either way the
    request goes out once more.
    """

    def __init__(
        self, client: SnmpClient, address: tuple, family: int, peer: UsmPeer, timeout: float, retries: int
    ) -> None:
        super().__init__(client, address, family, b"", timeout, retries)
        self.peer = peer

    def _opener(self, request_id: int) -> Callable[[bytes], ber.Pdu]:
        def open_answer(data: bytes) -> ber.Pdu:
            pdu = self.peer.open(data)
            if pdu.pdu_type not in (ber.RESPONSE, ber.REPORT) or (
                pdu.pdu_type == ber.RESPONSE and pdu.request_id != request_id
            ):
                raise _Rejected
            return pdu

        return open_answer

    async def _discover(self, endpoint: _Endpoint) -> None:
        request_id = self._client._next_request_id()

        def learn(data: bytes) -> bytes:
            self.peer.learn_engine(data)
            return data

        probe = self.peer.discovery_request(request_id)
        await endpoint.exchange(request_id, probe, self._address, learn, self._timeout, self._retries)

    async def bulk(self, non_repeaters: int, max_repetitions: int, oids: list[Oid]) -> list[Varbind]:
        endpoint = await self._client._endpoint(self._family)
        oid_tlvs = [ber.encode_oid(oid) for oid in oids]
        report = ""
        for attempt in range(2):
            if self.peer.engine is None:
                await self._discover(endpoint)
            request_id = self._client._next_request_id()
            message = self.peer.request(request_id, ber.GET_BULK_REQUEST, non_repeaters, max_repetitions, oid_tlvs)
            pdu: ber.Pdu = await endpoint.exchange(  # type: ignore[assignment]
                request_id, message, self._address, self._opener(request_id), self._timeout, self._retries
            )
            if pdu.pdu_type == ber.RESPONSE:
                return self._count(pdu)
            report = report_name(pdu)
            if report == "unknownEngineID":
                self.peer.engine = None
            elif report != "notInTimeWindow":
                break
        raise SnmpRequestError(f"agent reported {report}")


def _error_name(status: int) -> str:
    names = ber.ERROR_STATUS_NAMES
    return names[status] if 0 <= status < len(names) else f"error-status {status}"


_AUTH = {
    "none": USM_AUTH_NONE,
    "md5": USM_AUTH_HMAC96_MD5,
    "sha": USM_AUTH_HMAC96_SHA,
    "sha224": USM_AUTH_HMAC128_SHA224,
    "sha256": USM_AUTH_HMAC192_SHA256,
    "sha384": USM_AUTH_HMAC256_SHA384,
    "sha512": USM_AUTH_HMAC384_SHA512,
}
_PRIV = {
    "none": USM_PRIV_NONE,
    "des": USM_PRIV_CBC56_DES,
    "3des": USM_PRIV_CBC168_3DES,
    "aes": USM_PRIV_CFB128_AES,
    "aes128": USM_PRIV_CFB128_AES,
    "aes192": USM_PRIV_CFB192_AES,
    "aes256": USM_PRIV_CFB256_AES,
}


def pysnmp_auth(target: SnmpTarget) -> CommunityData | UsmUserData:
    """pysnmp credentials for a target; refuses SNMPv3 privacy without ``cryptography``."""
    if target.version == "2c":
        return CommunityData(target.community, mpModel=1)
    if target.priv_protocol != "none" and importlib.util.find_spec("cryptography") is None:
        raise SnmpConfigError(
            f"target {target.name!r}: priv_protocol: {target.priv_protocol} needs the Python package"
            " 'cryptography' (>= 43), which is not installed"
        )
    return UsmUserData(
        target.user,
        authKey=target.auth_key,
        privKey=target.priv_key,
        authProtocol=_AUTH[target.auth_protocol],
        privProtocol=_PRIV[target.priv_protocol],
    )


def _plain(value: object) -> tuple[int, ber.Value]:
    """A pysnmp value as (BER tag, plain value), as :func:`ber.decode_response` gives it."""
    tag = value.tagSet[-1]  # type: ignore[attr-defined]
    tag_byte = tag.tagClass | tag.tagFormat | tag.tagId
    if tag_byte in ber.EXCEPTION_TAGS or tag_byte == ber.NULL:
        return tag_byte, None
    if isinstance(value, univ.ObjectIdentifier):
        return tag_byte, tuple(value)
    if isinstance(value, univ.OctetString):  # IpAddress and Opaque too
        return tag_byte, value.asOctets()
    return tag_byte, int(value)  # type: ignore[call-overload]


class PysnmpSession:
    """GETBULK through pysnmp's shared :class:`SnmpEngine` (SNMPv3, or v2c for comparison)."""

    def __init__(self, engine: SnmpEngine, auth: CommunityData | UsmUserData, transport: UdpTransportTarget) -> None:
        self.engine = engine
        self.auth = auth
        self.transport = transport
        self.context = ContextData()
        self.requests = 0
        self.varbinds = 0

    async def bulk(self, non_repeaters: int, max_repetitions: int, oids: list[Oid]) -> list[Varbind]:
        error_indication, error_status, error_index, varbinds = await bulk_cmd(
            self.engine,
            self.auth,
            self.transport,
            self.context,
            non_repeaters,
            max_repetitions,
            *(ObjectType(ObjectIdentity(oid)) for oid in oids),
            lookupMib=False,
        )
        self.requests += 1
        if error_indication:
            raise SnmpRequestError(str(error_indication))
        if error_status:
            raise SnmpRequestError(f"agent answered {error_status.prettyPrint()} at varbind {int(error_index)}")
        self.varbinds += len(varbinds)
        return [(name.asTuple(), *_plain(value)) for name, value in varbinds]


class SnmpClient:
    """Sessions for targets: v2c through :class:`V2cSession`, SNMPv3 through pysnmp.

    One client serves any number of targets concurrently with one UDP socket
    per address family (plus pysnmp's own for SNMPv3). ``close()`` releases
    them; the client can be used again afterwards.
    """

    def __init__(self, *, use_pysnmp_for_v2c: bool = False, use_pysnmp_for_v3: bool = False) -> None:
        self.use_pysnmp_for_v2c = use_pysnmp_for_v2c
        self.use_pysnmp_for_v3 = use_pysnmp_for_v3
        self._endpoints: dict[int, _Endpoint] = {}
        self._opening: dict[int, asyncio.Future[_Endpoint]] = {}
        self._engine: SnmpEngine | None = None
        self._auth: dict[str, CommunityData | UsmUserData] = {}
        self._request_ids = itertools.count(random.randrange(1, 1 << 30))

    def _next_request_id(self) -> int:
        return next(self._request_ids) & 0x7FFFFFFF or 1

    async def session(self, target: SnmpTarget) -> Session:
        """A session for ``target``; resolves its host name (an error if it cannot)."""
        if target.version == "2c" and not self.use_pysnmp_for_v2c:
            family, address = await _resolve(target.host, target.port)
            return V2cSession(self, address, family, target.community.encode(), target.timeout, target.retries)
        if target.version == "3" and usm.supported(target) and not self.use_pysnmp_for_v3:
            family, address = await _resolve(target.host, target.port)
            return V3Session(self, address, family, UsmPeer(target), target.timeout, target.retries)
        if self._engine is None:
            self._engine = SnmpEngine()
        auth = self._auth.get(target.name)
        if auth is None:
            auth = self._auth[target.name] = pysnmp_auth(target)
        try:
            transport = await UdpTransportTarget.create(
                (target.host, target.port), timeout=target.timeout, retries=target.retries
            )
        except Exception as exc:  # pysnmp wraps resolver errors in its own types
            raise SnmpRequestError(f"cannot resolve {target.host!r}: {exc}") from None
        return PysnmpSession(self._engine, auth, transport)

    async def _endpoint(self, family: int) -> _Endpoint:
        endpoint = self._endpoints.get(family)
        if endpoint is not None:
            return endpoint
        opening = self._opening.get(family)
        if opening is not None:
            return await opening
        future: asyncio.Future[_Endpoint] = asyncio.get_running_loop().create_future()
        self._opening[family] = future
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.bind(("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0))
            _, endpoint = await asyncio.get_running_loop().create_datagram_endpoint(_Endpoint, sock=sock)
            self._endpoints[family] = endpoint
            future.set_result(endpoint)
            return endpoint
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: later callers see it through their own await
            raise
        finally:
            del self._opening[family]

    async def close(self) -> None:
        """Close the sockets and pysnmp's engine; later sessions open fresh ones."""
        for endpoint in self._endpoints.values():
            if endpoint.transport is not None:
                endpoint.transport.close()
        self._endpoints.clear()
        if self._engine is not None:
            self._engine.close_dispatcher()
            self._engine = None


async def _resolve(host: str, port: int) -> tuple[int, tuple]:
    """Address family and socket address of ``host`` (a name or an address)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise SnmpRequestError(f"cannot resolve {host!r}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    return family, address
