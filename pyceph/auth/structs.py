"""cephx wire structures (old-style encodings: ``u8 struct_v`` then fields, no length).

Formats are those of ``src/auth/cephx/CephxProtocol.h`` and ``src/auth/Auth.h`` in Ceph
(kernel: ``net/ceph/auth_x_protocol.h``).  Every ``decode(d)`` takes a
:class:`pyceph.encoding.Decoder` and raises :class:`pyceph.errors.DecodeError` on
truncation; every ``encode(e)`` writes the same bytes back (keeping ``struct_v``), so
decode/encode round-trips Ceph's own encodings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..encoding import Decoder, Encoder
from ..errors import DecodeError
from ..types import EntityName
from .crypto import CryptoKey

CEPH_AUTH_UID_DEFAULT = 0xFFFFFFFFFFFFFFFF  # (uint64_t)-1, the retired auid


def _decode_exact(cls, data: bytes):
    d = Decoder(data)
    obj = cls.decode(d)
    if not d.eof():
        raise DecodeError(f"{cls.__name__}: {d.remaining} trailing bytes")
    return obj


class _Codec:
    """Mixin: ``from_bytes`` (whole buffer, no trailing bytes) and ``to_bytes``."""

    @classmethod
    def from_bytes(cls, data: bytes):
        return _decode_exact(cls, data)

    def to_bytes(self) -> bytes:
        return self.encode(Encoder()).bytes()  # type: ignore[attr-defined]


@dataclass
class CephXServerChallenge(_Codec):
    """``u8 v=1, u64 server_challenge`` — the mon's first AUTH_REPLY_MORE payload."""

    server_challenge: int = 0
    struct_v: int = 1

    @classmethod
    def decode(cls, d: Decoder) -> "CephXServerChallenge":
        v = d.u8()
        return cls(d.u64(), v)

    def encode(self, e: Encoder) -> Encoder:
        return e.u8(self.struct_v).u64(self.server_challenge)


@dataclass
class CephXRequestHeader(_Codec):
    """``u16 request_type`` (CEPHX_GET_*)."""

    request_type: int = 0

    @classmethod
    def decode(cls, d: Decoder) -> "CephXRequestHeader":
        return cls(d.u16())

    def encode(self, e: Encoder) -> Encoder:
        return e.u16(self.request_type)


@dataclass
class CephXResponseHeader(_Codec):
    """``u16 request_type, s32 status`` (status < 0 is a negative errno)."""

    request_type: int = 0
    status: int = 0

    @classmethod
    def decode(cls, d: Decoder) -> "CephXResponseHeader":
        return cls(d.u16(), d.s32())

    def encode(self, e: Encoder) -> Encoder:
        return e.u16(self.request_type).s32(self.status)


@dataclass
class CephXTicketBlob(_Codec):
    """``u8 v=1, u64 secret_id, bufferlist blob`` — a ticket, opaque to clients (a
    credential with its session key: not in ``repr``)."""

    secret_id: int = 0
    blob: bytes = field(default=b"", repr=False)
    struct_v: int = 1

    @classmethod
    def decode(cls, d: Decoder) -> "CephXTicketBlob":
        v = d.u8()
        return cls(d.u64(), d.blob(), v)

    def encode(self, e: Encoder) -> Encoder:
        return e.u8(self.struct_v).u64(self.secret_id).blob(self.blob)


@dataclass
class CephXAuthenticate(_Codec):
    """Client's answer to the server challenge.

    ``u8 v, u64 client_challenge, u64 key, CephXTicketBlob old_ticket,
    [v>=2] u32 other_keys``.  v3 (Pacific 16.2.1+) promises ``old_ticket`` is filled on
    reconnects too (global_id reclaim).
    """

    client_challenge: int = 0
    key: int = 0
    old_ticket: CephXTicketBlob = field(default_factory=CephXTicketBlob)
    other_keys: int = 0
    struct_v: int = 3

    @classmethod
    def decode(cls, d: Decoder) -> "CephXAuthenticate":
        v = d.u8()
        cc = d.u64()
        key = d.u64()
        old = CephXTicketBlob.decode(d)
        other = d.u32() if v >= 2 else 0
        return cls(cc, key, old, other, v)

    def encode(self, e: Encoder) -> Encoder:
        e.u8(self.struct_v).u64(self.client_challenge).u64(self.key)
        self.old_ticket.encode(e)
        if self.struct_v >= 2:
            e.u32(self.other_keys)
        return e


@dataclass
class CephXChallengeBlob(_Codec):
    """``u64 server_challenge, u64 client_challenge`` — encrypted to prove the key."""

    server_challenge: int = 0
    client_challenge: int = 0

    @classmethod
    def decode(cls, d: Decoder) -> "CephXChallengeBlob":
        return cls(d.u64(), d.u64())

    def encode(self, e: Encoder) -> Encoder:
        return e.u64(self.server_challenge).u64(self.client_challenge)


@dataclass
class CephXServiceTicketRequest(_Codec):
    """``u8 v=1, u32 keys`` (bitmask of CEPH_ENTITY_TYPE_*)."""

    keys: int = 0
    struct_v: int = 1

    @classmethod
    def decode(cls, d: Decoder) -> "CephXServiceTicketRequest":
        v = d.u8()
        return cls(d.u32(), v)

    def encode(self, e: Encoder) -> Encoder:
        return e.u8(self.struct_v).u32(self.keys)


@dataclass
class CephXAuthorizeReply(_Codec):
    """``u8 v, u64 nonce_plus_one, [v>=2] string connection_secret``."""

    nonce_plus_one: int = 0
    connection_secret: bytes = field(default=b"", repr=False)
    struct_v: int = 1

    @classmethod
    def decode(cls, d: Decoder) -> "CephXAuthorizeReply":
        v = d.u8()
        n = d.u64()
        secret = d.blob() if v >= 2 else b""
        return cls(n, secret, v)

    def encode(self, e: Encoder) -> Encoder:
        e.u8(self.struct_v).u64(self.nonce_plus_one)
        if self.struct_v >= 2:
            e.blob(self.connection_secret)
        return e


@dataclass
class CephXAuthorizeChallenge(_Codec):
    """``u8 v=1, u64 server_challenge`` — a service's challenge to an authorizer."""

    server_challenge: int = 0
    struct_v: int = 1

    @classmethod
    def decode(cls, d: Decoder) -> "CephXAuthorizeChallenge":
        v = d.u8()
        return cls(d.u64(), v)

    def encode(self, e: Encoder) -> Encoder:
        return e.u8(self.struct_v).u64(self.server_challenge)


@dataclass
class CephXAuthorize(_Codec):
    """The encrypted half of an authorizer.

    ``u8 v, u64 nonce, [v>=2] bool have_challenge, u64 server_challenge_plus_one``.
    """

    nonce: int = 0
    have_challenge: bool = False
    server_challenge_plus_one: int = 0
    struct_v: int = 2

    @classmethod
    def decode(cls, d: Decoder) -> "CephXAuthorize":
        v = d.u8()
        nonce = d.u64()
        if v >= 2:
            return cls(nonce, d.bool(), d.u64(), v)
        return cls(nonce, False, 0, v)

    def encode(self, e: Encoder) -> Encoder:
        e.u8(self.struct_v).u64(self.nonce)
        if self.struct_v >= 2:
            e.bool(self.have_challenge).u64(self.server_challenge_plus_one)
        return e


@dataclass
class AuthCapsInfo(_Codec):
    """``u8 v=1, u8 allow_all, bufferlist caps`` (caps: encoded per-service cap strings)."""

    allow_all: bool = False
    caps: bytes = b""
    struct_v: int = 1

    @classmethod
    def decode(cls, d: Decoder) -> "AuthCapsInfo":
        v = d.u8()
        return cls(d.u8() != 0, d.blob(), v)

    def encode(self, e: Encoder) -> Encoder:
        return e.u8(self.struct_v).u8(1 if self.allow_all else 0).blob(self.caps)


@dataclass
class AuthTicket(_Codec):
    """``u8 v, EntityName name, u64 global_id, [v>=2] u64 auid, utime created,
    utime expires, AuthCapsInfo caps, u32 flags``."""

    name: EntityName = field(default_factory=lambda: EntityName(0, ""))
    global_id: int = 0
    created: tuple[int, int] = (0, 0)
    expires: tuple[int, int] = (0, 0)
    caps: AuthCapsInfo = field(default_factory=AuthCapsInfo)
    flags: int = 0
    auid: int = CEPH_AUTH_UID_DEFAULT
    struct_v: int = 2

    @classmethod
    def decode(cls, d: Decoder) -> "AuthTicket":
        v = d.u8()
        name = EntityName.decode(d)
        gid = d.u64()
        auid = d.u64() if v >= 2 else CEPH_AUTH_UID_DEFAULT
        created = d.utime()
        expires = d.utime()
        caps = AuthCapsInfo.decode(d)
        flags = d.u32()
        return cls(name, gid, created, expires, caps, flags, auid, v)

    def encode(self, e: Encoder) -> Encoder:
        e.u8(self.struct_v)
        self.name.encode(e)
        e.u64(self.global_id)
        if self.struct_v >= 2:
            e.u64(self.auid)
        e.utime(self.created).utime(self.expires)
        self.caps.encode(e)
        return e.u32(self.flags)


@dataclass
class CephXServiceTicket(_Codec):
    """The part of a ticket reply for us: ``u8 v=1, CryptoKey session_key, utime validity``.

    ``validity`` is a duration ``(sec, nsec)``, not a date.
    """

    session_key: CryptoKey = field(default_factory=CryptoKey)
    validity: tuple[int, int] = (0, 0)
    struct_v: int = 1

    @classmethod
    def decode(cls, d: Decoder) -> "CephXServiceTicket":
        v = d.u8()
        return cls(CryptoKey.decode(d), d.utime(), v)

    def encode(self, e: Encoder) -> Encoder:
        e.u8(self.struct_v)
        self.session_key.encode(e)
        return e.utime(self.validity)


@dataclass
class CephXServiceTicketInfo(_Codec):
    """What a ticket blob holds (encrypted with the service's secret, which clients lack):
    ``u8 v=1, AuthTicket ticket, CryptoKey session_key``."""

    ticket: AuthTicket = field(default_factory=AuthTicket)
    session_key: CryptoKey = field(default_factory=CryptoKey)
    struct_v: int = 1

    @classmethod
    def decode(cls, d: Decoder) -> "CephXServiceTicketInfo":
        v = d.u8()
        return cls(AuthTicket.decode(d), CryptoKey.decode(d), v)

    def encode(self, e: Encoder) -> Encoder:
        e.u8(self.struct_v)
        self.ticket.encode(e)
        return self.session_key.encode(e)


@dataclass
class ExpiringCryptoKey(_Codec):
    """``u8 v=1, CryptoKey key, utime expiration`` (rotating service secrets)."""

    key: CryptoKey = field(default_factory=CryptoKey)
    expiration: tuple[int, int] = (0, 0)
    struct_v: int = 1

    @classmethod
    def decode(cls, d: Decoder) -> "ExpiringCryptoKey":
        v = d.u8()
        return cls(CryptoKey.decode(d), d.utime(), v)

    def encode(self, e: Encoder) -> Encoder:
        e.u8(self.struct_v)
        self.key.encode(e)
        return e.utime(self.expiration)


@dataclass
class EntityAuth(_Codec):
    """A keyring/auth-database entry: ``u8 v, [v>=2] u64 auid, CryptoKey key,
    map<string, bufferlist> caps, [v>=3] CryptoKey pending_key``."""

    key: CryptoKey = field(default_factory=CryptoKey)
    caps: dict[str, bytes] = field(default_factory=dict)
    pending_key: CryptoKey | None = None
    auid: int = CEPH_AUTH_UID_DEFAULT
    struct_v: int = 2

    @classmethod
    def decode(cls, d: Decoder) -> "EntityAuth":
        v = d.u8()
        auid = d.u64() if v >= 2 else CEPH_AUTH_UID_DEFAULT
        key = CryptoKey.decode(d)
        caps = d.map(lambda x: x.string(), lambda x: x.blob(), min_item_size=8)
        pending = CryptoKey.decode(d) if v >= 3 else None
        return cls(key, caps, pending, auid, v)

    def encode(self, e: Encoder) -> Encoder:
        e.u8(self.struct_v)
        if self.struct_v >= 2:
            e.u64(self.auid)
        self.key.encode(e)
        e.map(self.caps, lambda x, k: x.string(k), lambda x, b: x.blob(b))
        if self.struct_v >= 3:
            (self.pending_key or CryptoKey(0, (0, 0), b"")).encode(e)
        return e
