"""Small Ceph types shared by every layer: entity names and addresses, pg_t.

Formats: ``src/msg/msg_types.h`` (entity_name_t, entity_addr_t, entity_addrvec_t),
``src/common/entity_name.h`` (EntityName), ``src/osd/osd_types.h`` (pg_t), and the
kernel's ``net/ceph/decode.c``.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass, field

from .encoding import Decoder, Encoder
from .errors import DecodeError

# CEPH_ENTITY_TYPE_* (include/linux/ceph/msgr.h)
ENTITY_TYPE_MON = 0x01
ENTITY_TYPE_MDS = 0x02
ENTITY_TYPE_OSD = 0x04
ENTITY_TYPE_CLIENT = 0x08
ENTITY_TYPE_MGR = 0x10
ENTITY_TYPE_AUTH = 0x20
ENTITY_TYPE_ANY = 0xFF

ENTITY_TYPE_NAMES = {
    ENTITY_TYPE_MON: "mon",
    ENTITY_TYPE_MDS: "mds",
    ENTITY_TYPE_OSD: "osd",
    ENTITY_TYPE_CLIENT: "client",
    ENTITY_TYPE_MGR: "mgr",
    ENTITY_TYPE_AUTH: "auth",
}
ENTITY_TYPES_BY_NAME = {v: k for k, v in ENTITY_TYPE_NAMES.items()}

# entity_addr_t::type
ADDR_TYPE_NONE = 0
ADDR_TYPE_LEGACY = 1
ADDR_TYPE_MSGR2 = 2
ADDR_TYPE_ANY = 3

AF_INET_LINUX = 2
AF_INET6_LINUX = 10


@dataclass(frozen=True)
class EntityNameT:
    """``entity_name_t``: ``u8 type, s64 num`` (e.g. client.4123, osd.2)."""

    type: int
    num: int

    @classmethod
    def decode(cls, d: Decoder) -> "EntityNameT":
        return cls(d.u8(), d.s64())

    def encode(self, e: Encoder) -> Encoder:
        return e.u8(self.type).s64(self.num)

    def __str__(self) -> str:
        return f"{ENTITY_TYPE_NAMES.get(self.type, self.type)}.{self.num}"


@dataclass(frozen=True)
class EntityName:
    """``EntityName`` as used by auth: ``u32 type, string id`` (``client.admin``)."""

    type: int
    id: str

    @classmethod
    def parse(cls, s: str) -> "EntityName":
        """``"client.admin"`` -> EntityName(CLIENT, "admin").  Raises ValueError."""
        t, sep, ident = s.partition(".")
        if not sep or t not in ENTITY_TYPES_BY_NAME:
            raise ValueError(f"bad entity name {s!r}: expected TYPE.ID like client.admin")
        return cls(ENTITY_TYPES_BY_NAME[t], ident)

    @classmethod
    def decode(cls, d: Decoder) -> "EntityName":
        return cls(d.u32(), d.string())

    def encode(self, e: Encoder) -> Encoder:
        return e.u32(self.type).string(self.id)

    def __str__(self) -> str:
        return f"{ENTITY_TYPE_NAMES.get(self.type, self.type)}.{self.id}"


@dataclass(frozen=True)
class EntityAddr:
    """``entity_addr_t``: address type (legacy/msgr2), nonce, and an IP:port.

    ``ip`` is a string ("127.0.0.1", "::1") or "" for a blank address.
    """

    type: int = ADDR_TYPE_NONE
    nonce: int = 0
    ip: str = ""
    port: int = 0

    @property
    def family(self) -> int:
        if not self.ip:
            return 0
        return AF_INET6_LINUX if ":" in self.ip else AF_INET_LINUX

    def is_blank(self) -> bool:
        return not self.ip and self.port == 0

    # -- sockaddr ------------------------------------------------------------
    @staticmethod
    def _parse_sockaddr(raw: bytes, family: int) -> tuple[str, int]:
        if family == AF_INET_LINUX:
            if len(raw) < 8:
                raise DecodeError("short sockaddr_in")
            port = struct.unpack(">H", raw[2:4])[0]
            return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
        if family == AF_INET6_LINUX:
            if len(raw) < 24:
                raise DecodeError("short sockaddr_in6")
            port = struct.unpack(">H", raw[2:4])[0]
            return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
        return "", 0

    def _sockaddr_body(self) -> bytes:
        """sockaddr without the family (port in network order, then address)."""
        fam = self.family
        if fam == AF_INET_LINUX:
            return struct.pack(">H", self.port) + socket.inet_pton(socket.AF_INET, self.ip) + bytes(8)
        if fam == AF_INET6_LINUX:
            return (
                struct.pack(">H", self.port)
                + bytes(4)
                + socket.inet_pton(socket.AF_INET6, self.ip)
                + bytes(4)
            )
        return b""

    # -- codec ---------------------------------------------------------------
    @classmethod
    def decode(cls, d: Decoder) -> "EntityAddr":
        marker = d.u8()
        if marker == 0:
            return cls._decode_legacy_after_marker(d)
        if marker != 1:
            raise DecodeError(f"bad entity_addr_t marker {marker}")
        with d.start("entity_addr_t", 1):
            atype = d.u32()
            nonce = d.u32()
            elen = d.u32()
            if elen > 128:
                raise DecodeError(f"entity_addr_t: sockaddr length {elen}")
            ip, port = "", 0
            if elen:
                raw = d.raw(elen)
                if elen < 2:
                    raise DecodeError("entity_addr_t: short sockaddr")
                family = struct.unpack("<H", raw[:2])[0]
                ip, port = cls._parse_sockaddr(raw, family)
        return cls(atype, nonce, ip, port)

    @classmethod
    def _decode_legacy_after_marker(cls, d: Decoder) -> "EntityAddr":
        d.skip(3)
        nonce = d.u32()
        raw = d.raw(128)  # sockaddr_storage, family big-endian
        family = struct.unpack(">H", raw[:2])[0]
        ip, port = cls._parse_sockaddr(raw, family)
        return cls(ADDR_TYPE_LEGACY, nonce, ip, port)

    def encode(self, e: Encoder) -> Encoder:
        """Encode with MSG_ADDR2 (every peer we talk to has it)."""
        body = self._sockaddr_body()
        e.u8(1)
        with e.start(1, 1):
            e.u32(self.type).u32(self.nonce)
            if body:
                e.u32(len(body) + 2).u16(self.family).raw(body)
            else:
                e.u32(0)
        return e

    def encode_legacy(self, e: Encoder) -> Encoder:
        """The pre-ADDR2 form (``u32 type(0)``, nonce, 128-byte sockaddr_storage)."""
        e.u32(0).u32(self.nonce)
        ss = bytearray(128)
        if self.family:
            ss[0:2] = struct.pack(">H", self.family)
            body = self._sockaddr_body()
            ss[2 : 2 + len(body)] = body
        return e.raw(bytes(ss))

    def __str__(self) -> str:
        t = {ADDR_TYPE_LEGACY: "v1", ADDR_TYPE_MSGR2: "v2", ADDR_TYPE_ANY: "any"}.get(self.type, "-")
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{t}:{host}:{self.port}/{self.nonce}"

    @property
    def hostport(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}"

    def legacy_str(self) -> str:
        """``entity_addr_t::get_legacy_str()``: ``ip:port/nonce`` (``[v6]:port/nonce``),
        no type prefix -- the form of ``rados listwatchers``, ``osd blocklist`` and
        ``rbd lock ls``."""
        return f"{self.hostport}/{self.nonce}"


@dataclass(frozen=True)
class EntityAddrvec:
    """``entity_addrvec_t``: the list of addresses one daemon listens on."""

    addrs: tuple[EntityAddr, ...] = field(default_factory=tuple)

    @classmethod
    def decode(cls, d: Decoder) -> "EntityAddrvec":
        marker = d.u8()
        if marker == 0:
            return cls((EntityAddr._decode_legacy_after_marker(d),))
        if marker == 1:
            d.pos -= 1
            return cls((EntityAddr.decode(d),))
        if marker != 2:
            raise DecodeError(f"bad entity_addrvec_t marker {marker}")
        n = d.count(9)
        return cls(tuple(EntityAddr.decode(d) for _ in range(n)))

    def encode(self, e: Encoder) -> Encoder:
        e.u8(2).u32(len(self.addrs))
        for a in self.addrs:
            a.encode(e)
        return e

    def get(self, addr_type: int) -> EntityAddr | None:
        for a in self.addrs:
            if a.type == addr_type:
                return a
        return None

    def msgr2(self) -> EntityAddr | None:
        return self.get(ADDR_TYPE_MSGR2)

    def legacy(self) -> EntityAddr | None:
        return self.get(ADDR_TYPE_LEGACY)

    def __str__(self) -> str:
        if len(self.addrs) == 1:
            return str(self.addrs[0])
        return "[" + ",".join(str(a) for a in self.addrs) + "]"


@dataclass(frozen=True, order=True)
class PgT:
    """``pg_t``: ``(pool, seed)``; encodes as ``u8 v=1, u64 pool, u32 seed, s32 preferred(-1)``."""

    pool: int
    seed: int

    @classmethod
    def decode(cls, d: Decoder) -> "PgT":
        v = d.u8()
        if v != 1:
            raise DecodeError(f"pg_t version {v}")
        pool = d.u64()
        seed = d.u32()
        d.s32()  # preferred, always -1
        return cls(pool, seed)

    def encode(self, e: Encoder) -> Encoder:
        return e.u8(1).u64(self.pool).u32(self.seed).s32(-1)

    def __str__(self) -> str:
        return f"{self.pool}.{self.seed:x}"


def parse_ip_port(s: str, default_port: int) -> tuple[str, int]:
    """``"1.2.3.4:6789"``, ``"[::1]:3300"``, ``"1.2.3.4"`` -> ``(ip, port)``.  Raises ValueError."""
    s = s.strip()
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
    elif s.count(":") == 1:
        host, _, p = s.partition(":")
        port = int(p)
    else:
        host, port = s, default_port
    ipaddress.ip_address(host)  # validates; hostnames are resolved by config
    return host, port
