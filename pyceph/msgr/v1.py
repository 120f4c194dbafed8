"""Sans-IO msgr1 ("ceph v027") client connection state machine.

The legacy protocol of Ceph's ``src/msg/async/ProtocolV1.cc`` and the kernel's
``net/ceph/messenger_v1.c``; wire structs of ``include/linux/ceph/msgr.h`` /
``src/include/msgr.h``, message CRCs of ``src/msg/Message.cc``.  Same interface and
events as msgr2's :class:`pyceph.msgr.protocol.ClientProtocol`: feed received bytes to
:meth:`ClientProtocolV1.receive_data`, send what :meth:`data_to_send` returns.

Handshake (client side; states as the kernel draws them)::

    PREOPEN       constructed; initiate() sends the banner "ceph v027"
    CONNECTING    wait for the server's banner, its entity_addr and ours as it sees us
                  (learn our IP); send our entity_addr, then ceph_msg_connect (+ the
                  cephx authorizer for OSDs/MGRs; none for monitors)
    NEGOTIATING   ceph_msg_connect_reply (+ authorizer reply):
                    READY / SEQ            -> verify the authorizer reply, OPEN
                    CHALLENGE_AUTHORIZER   -> add the challenge, resend connect
                    BADAUTHORIZER          -> one retry with a fresh authorizer
                    RETRY_GLOBAL / RETRY_SESSION / RESETSESSION -> resend connect
                    WAIT                   -> Wait + Closed (retry later)
                    FEATURES / BADPROTOVER -> error
    OPEN          tags MSG, ACK, KEEPALIVE2[_ACK], KEEPALIVE, CLOSE
    STANDBY       (lossless peers only: idle after a fault; a lossy client never gets there)
    CLOSED        after an error, WAIT, CLOSE or close()

Monitors take no authorizer in msgr1: the client authenticates afterwards with MAuth
messages (``pyceph.mon.client``).  With an authorizer, every message is signed and every
received one checked (``ceph_msg_footer.sig``, :func:`pyceph.auth.signature.calc_signature`)
with the authorizer's session key, when the peer has CEPH_FEATURE_MSG_AUTH.

Clients are lossy (``CEPH_MSG_CONNECT_LOSSY``): a fault ends the session and the upper
layer opens a new connection and resends (the OSD's reqid dedup makes a resent write
apply once).  Auth hooks are msgr2's :class:`~pyceph.msgr.protocol.AuthHandler`:
``get_auth_request`` gives ``(CEPH_AUTH_CEPHX, modes, authorizer)``,
``handle_auth_reply_more`` answers the challenge, ``handle_auth_done`` verifies the
reply, plus ``message_signing_key(con) -> CryptoKey | None`` for signatures.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ..auth.signature import calc_signature
from ..encoding import Decoder, Encoder, crc32c
from ..errors import AuthError, DecodeError, FeatureNotSupported, ProtocolError
from ..types import (
    ADDR_TYPE_ANY,
    ADDR_TYPE_LEGACY,
    ENTITY_TYPE_CLIENT,
    ENTITY_TYPE_MDS,
    ENTITY_TYPE_MON,
    ENTITY_TYPE_OSD,
    EntityAddr,
    EntityAddrvec,
)
from . import features as F
from .frames import BANNER_V1_PREFIX as BANNER
from .frames import MAX_PREAUTH_LEN, MSG_MAX_DATA_LEN, MSG_MAX_FRONT_LEN, MSG_MAX_MIDDLE_LEN
from .message import Message
from .protocol import (
    CON_MODE_CRC, MSG_CONNECT_LOSSY, ClientCore, Closed, Connected, Event, KeepaliveAck,
    MessageReceived, Session, SessionReset, Wait, now_timespec,
)

log = logging.getLogger(__name__)

# CEPH_MSGR_TAG_* (include/linux/ceph/msgr.h)
TAG_READY = 1
TAG_RESETSESSION = 2
TAG_WAIT = 3
TAG_RETRY_SESSION = 4
TAG_RETRY_GLOBAL = 5
TAG_CLOSE = 6
TAG_MSG = 7
TAG_ACK = 8
TAG_KEEPALIVE = 9
TAG_BADPROTOVER = 10
TAG_BADAUTHORIZER = 11
TAG_FEATURES = 12
TAG_SEQ = 13
TAG_KEEPALIVE2 = 14
TAG_KEEPALIVE2_ACK = 15
TAG_CHALLENGE_AUTHORIZER = 16

TAG_NAMES = {v: k[4:] for k, v in list(globals().items()) if k.startswith("TAG_") and isinstance(v, int)}

# Protocol versions by peer type (CEPH_OSDC_PROTOCOL, CEPH_MDSC_PROTOCOL,
# CEPH_MONC_PROTOCOL in include/linux/ceph/rados.h, ceph_fs.h; 0 for others, as
# AsyncMessenger::get_proto_version).
PROTOCOL_VERSIONS = {ENTITY_TYPE_OSD: 24, ENTITY_TYPE_MDS: 32, ENTITY_TYPE_MON: 15}

# ceph_msg_footer.flags
MSG_FOOTER_COMPLETE = 1
MSG_FOOTER_NOCRC = 2
MSG_FOOTER_SIGNED = 4

# Bounds on what a peer can make us buffer (kernel CEPH_MSG_MAX_*_LEN; declared in frames).
MAX_FRONT_LEN = MSG_MAX_FRONT_LEN
MAX_MIDDLE_LEN = MSG_MAX_MIDDLE_LEN
MAX_DATA_LEN = MSG_MAX_DATA_LEN
# An authorizer reply comes from a peer not yet authenticated (the kernel's buffer for it
# is 128 bytes, CEPHX_AU_ENC_BUF_LEN).
MAX_AUTHORIZER_LEN = MAX_PREAUTH_LEN

# --- wire structs (packed, little-endian) ----------------------------------------------

# ceph_entity_addr, legacy: le32 type(0), le32 nonce, sockaddr_storage (family big-endian)
ENTITY_ADDR_LEN = 136
# ceph_msg_connect: le64 features, le32 host_type, le32 global_seq, le32 connect_seq,
# le32 protocol_version, le32 authorizer_protocol, le32 authorizer_len, u8 flags
CONNECT = struct.Struct("<QIIIIIIB")
# ceph_msg_connect_reply: u8 tag, le64 features, le32 global_seq, le32 connect_seq,
# le32 protocol_version, le32 authorizer_len, u8 flags
CONNECT_REPLY = struct.Struct("<BQIIIIB")
# ceph_msg_header: le64 seq, le64 tid, le16 type, le16 priority, le16 version,
# le32 front_len, le32 middle_len, le32 data_len, le16 data_off,
# ceph_entity_name src (u8 type, le64 num), le16 compat_version, le16 reserved, le32 crc
HEADER = struct.Struct("<QQHHHIIIHBQHHI")
HEADER_CRC_OFF = HEADER.size - 4  # the crc covers everything before it
# ceph_msg_footer: le32 front_crc, middle_crc, data_crc, le64 sig, u8 flags
FOOTER = struct.Struct("<IIIQB")
# ceph_msg_footer_old (peers without CEPH_FEATURE_MSG_AUTH): no sig
FOOTER_OLD = struct.Struct("<IIIB")
_U64 = struct.Struct("<Q")
_TIMESPEC = struct.Struct("<II")  # ceph_timespec: le32 sec, le32 nsec


def _crc(data) -> int:
    # msgr1 CRCs: ceph_crc32c(0, ...) (Message::calc_*_crc, kernel crc32c(0, ...))
    return crc32c(data, 0) if len(data) else 0


def encode_entity_addr(addr: EntityAddr) -> bytes:
    """The 136-byte legacy ``ceph_entity_addr`` of the banner exchange."""
    return addr.encode_legacy(Encoder()).bytes()


def decode_entity_addr(raw: bytes) -> EntityAddr:
    """A 136-byte legacy ``ceph_entity_addr`` (type LEGACY).  Raises DecodeError."""
    if len(raw) != ENTITY_ADDR_LEN:
        raise DecodeError(f"ceph_entity_addr of {len(raw)} bytes, need {ENTITY_ADDR_LEN}")
    d = Decoder(raw)
    if d.u8() != 0:
        raise DecodeError("legacy ceph_entity_addr with a non-zero type")
    return EntityAddr._decode_legacy_after_marker(d)


@dataclass
class ConnectMsg:
    """``ceph_msg_connect`` and its authorizer bytes."""

    features: int
    host_type: int
    global_seq: int
    connect_seq: int
    protocol_version: int
    authorizer_protocol: int
    flags: int
    authorizer: bytes = b""

    def encode(self) -> bytes:
        return CONNECT.pack(
            self.features, self.host_type, self.global_seq, self.connect_seq,
            self.protocol_version, self.authorizer_protocol, len(self.authorizer), self.flags,
        ) + self.authorizer

    @classmethod
    def decode(cls, raw: bytes) -> "ConnectMsg":
        if len(raw) < CONNECT.size:
            raise DecodeError(f"ceph_msg_connect of {len(raw)} bytes")
        f, ht, gs, cs, pv, ap, alen, flags = CONNECT.unpack_from(raw)
        if len(raw) != CONNECT.size + alen:
            raise DecodeError(f"ceph_msg_connect authorizer_len {alen}, {len(raw) - CONNECT.size} bytes follow")
        return cls(f, ht, gs, cs, pv, ap, flags, bytes(raw[CONNECT.size:]))


@dataclass
class ConnectReply:
    """``ceph_msg_connect_reply`` and its authorizer reply bytes."""

    tag: int
    features: int
    global_seq: int
    connect_seq: int
    protocol_version: int
    flags: int
    authorizer: bytes = b""

    def encode(self) -> bytes:
        return CONNECT_REPLY.pack(
            self.tag, self.features, self.global_seq, self.connect_seq, self.protocol_version,
            len(self.authorizer), self.flags,
        ) + self.authorizer

    @property
    def name(self) -> str:
        return TAG_NAMES.get(self.tag, str(self.tag))


def encode_message_parts(
    msg: Message, src_type: int, src_num: int, sign_key=None, cephx_v2: bool = True,
    msg_auth: bool = True,
) -> list[bytes]:
    """TAG_MSG, ``ceph_msg_header``, front, middle, data and footer of ``msg`` (its
    ``seq`` already assigned), CRCs filled in and, given ``sign_key`` (a CryptoKey),
    signed.  ``msg_auth``: the peer has CEPH_FEATURE_MSG_AUTH (else the old footer)."""
    front, middle, data = msg.front, msg.middle, msg.data
    hdr = HEADER.pack(
        msg.seq, msg.tid, msg.type, msg.priority, msg.version, len(front), len(middle), len(data),
        msg.data_off, src_type, src_num & 0xFFFFFFFFFFFFFFFF, msg.compat_version, 0, 0,
    )
    hcrc = crc32c(hdr[:HEADER_CRC_OFF], 0)
    hdr = hdr[:HEADER_CRC_OFF] + struct.pack("<I", hcrc)
    fcrc, mcrc, dcrc = _crc(front), _crc(middle), _crc(data)
    if msg_auth:
        sig, flags = 0, MSG_FOOTER_COMPLETE
        if sign_key is not None:
            sig = calc_signature(
                sign_key, header_crc=hcrc, front_crc=fcrc, middle_crc=mcrc, data_crc=dcrc,
                front_len=len(front), middle_len=len(middle), data_len=len(data), seq=msg.seq,
                cephx_v2=cephx_v2,
            )
            flags |= MSG_FOOTER_SIGNED
        footer = FOOTER.pack(fcrc, mcrc, dcrc, sig, flags)
    else:
        footer = FOOTER_OLD.pack(fcrc, mcrc, dcrc, MSG_FOOTER_COMPLETE)
    parts = [bytes((TAG_MSG,)) + hdr]
    parts += [p for p in (front, middle, data) if len(p)]
    parts.append(footer)
    return parts


@dataclass
class RawMessage:
    """A received message as on the wire: header fields, sections and footer."""

    header: tuple
    front: bytes
    middle: bytes
    data: bytes
    front_crc: int
    middle_crc: int
    data_crc: int
    sig: int
    footer_flags: int

    @property
    def header_crc(self) -> int:
        return self.header[13]

    def to_message(self) -> Message:
        (seq, tid, mtype, prio, ver, _fl, _ml, _dl, data_off, src_type, src_num, compat, _r, _c) = self.header
        return Message(
            type=mtype, front=self.front, middle=self.middle, data=self.data, version=ver,
            compat_version=compat, priority=prio, tid=tid, seq=seq, src_type=src_type,
            src_num=src_num, data_off=data_off,
        )


def decode_header(raw: bytes) -> tuple:
    """Unpack and CRC-check a 53-byte ``ceph_msg_header``; bounds-check its lengths.
    Raises ProtocolError (DecodeError for a wrong size)."""
    if len(raw) != HEADER.size:
        raise DecodeError(f"ceph_msg_header of {len(raw)} bytes, need {HEADER.size}")
    h = HEADER.unpack(raw)
    want = crc32c(raw[:HEADER_CRC_OFF], 0)
    if h[13] != want:
        raise ProtocolError(f"bad msgr1 header crc: computed {want:#010x}, header says {h[13]:#010x}")
    if h[5] > MAX_FRONT_LEN or h[6] > MAX_MIDDLE_LEN or h[7] > MAX_DATA_LEN:
        raise ProtocolError(f"msgr1 message too long: front {h[5]}, middle {h[6]}, data {h[7]}")
    return h


def check_message(rm: RawMessage) -> None:
    """Verify a received message's section CRCs (unless the sender set NOCRC, which
    covers the data crc only).  Raises ProtocolError."""
    if _crc(rm.front) != rm.front_crc:
        raise ProtocolError("bad msgr1 front crc")
    if _crc(rm.middle) != rm.middle_crc:
        raise ProtocolError("bad msgr1 middle crc")
    if not rm.footer_flags & MSG_FOOTER_NOCRC and _crc(rm.data) != rm.data_crc:
        raise ProtocolError("bad msgr1 data crc")


def message_signature(rm: RawMessage, key, cephx_v2: bool = True) -> int:
    """The signature ``rm`` should carry under session key ``key``."""
    return calc_signature(
        key, header_crc=rm.header_crc, front_crc=rm.front_crc, middle_crc=rm.middle_crc,
        data_crc=rm.data_crc, front_len=len(rm.front), middle_len=len(rm.middle),
        data_len=len(rm.data), seq=rm.header[0], cephx_v2=cephx_v2,
    )


class _ByteQueue:
    """Received chunks, consumed by exact lengths (one copy per consumed item)."""

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._off = 0
        self.avail = 0

    def push(self, data) -> None:
        if len(data):
            self._chunks.append(data if type(data) is bytes else bytes(data))
            self.avail += len(data)

    def take(self, n: int) -> bytes:
        if n > self.avail:
            raise ValueError("short buffer")
        if not n:
            return b""
        self.avail -= n
        c = self._chunks[0]
        off = self._off
        if len(c) - off > n:
            self._off = off + n
            return c[off:off + n]
        if len(c) - off == n:
            self._chunks.popleft()
            self._off = 0
            return c[off:] if off else c
        parts = []
        while n:
            c = self._chunks[0]
            left = len(c) - off
            if left <= n:
                parts.append(memoryview(c)[off:])
                self._chunks.popleft()
                n -= left
                off = 0
            else:
                parts.append(memoryview(c)[off:off + n])
                off += n
                n = 0
        self._off = off
        return b"".join(parts)

    def peek(self, n: int) -> bytes:
        """The next ``n`` bytes without consuming them (``n <= avail``)."""
        out = bytearray()
        off = self._off
        for c in self._chunks:
            out += c[off:off + n - len(out)]
            off = 0
            if len(out) >= n:
                break
        return bytes(out)


class StreamDecoder:
    """Decode one direction of a msgr1 stream after the handshake: a sequence of
    ``(tag, payload)`` where payload is a :class:`RawMessage` (MSG), an int (ACK seq),
    a ``(sec, nsec)`` (KEEPALIVE2[_ACK]) or None.

    ``msg_auth``: the footer has the ``sig`` field (CEPH_FEATURE_MSG_AUTH).
    ``max_msg_len``: bound on front + middle + data of one message (None: only Ceph's
    per-section bounds), checked on the header before the body is awaited; the protocol
    sets :data:`MAX_PREAUTH_LEN` while the peer is not authenticated.  Used by the
    protocol for its OPEN state and by tests on captured streams.  Raises ProtocolError
    for unknown tags, bad CRCs or over-long sections.
    """

    def __init__(self, msg_auth: bool = True, max_msg_len: int | None = None) -> None:
        self.q = _ByteQueue()
        self.msg_auth = msg_auth
        self.max_msg_len = max_msg_len
        self._hdr: tuple | None = None
        self._hdr_raw = b""

    def push(self, data) -> None:
        self.q.push(data)

    def next(self) -> tuple[int, Any] | None:
        q = self.q
        if self._hdr is not None:
            return self._msg_body()
        if q.avail < 1:
            return None
        tag = q.peek(1)[0]
        if tag == TAG_MSG:
            if q.avail < 1 + HEADER.size:
                return None
            q.take(1)
            self._hdr_raw = q.take(HEADER.size)
            h = decode_header(self._hdr_raw)
            if self.max_msg_len is not None and h[5] + h[6] + h[7] > self.max_msg_len:
                raise ProtocolError(f"msgr1 message of {h[5] + h[6] + h[7]} bytes (type {h[2]}) before "
                                    f"authentication (limit {self.max_msg_len})")
            self._hdr = h
            return self._msg_body()
        if tag == TAG_ACK:
            if q.avail < 9:
                return None
            return tag, _U64.unpack(q.take(9)[1:])[0]
        if tag in (TAG_KEEPALIVE2, TAG_KEEPALIVE2_ACK):
            if q.avail < 1 + _TIMESPEC.size:
                return None
            return tag, _TIMESPEC.unpack(q.take(9)[1:])
        if tag in (TAG_KEEPALIVE, TAG_CLOSE):
            q.take(1)
            return tag, None
        raise ProtocolError(f"unexpected msgr1 tag {TAG_NAMES.get(tag, tag)}")

    def _msg_body(self) -> tuple[int, Any] | None:
        h = self._hdr
        ftr = FOOTER if self.msg_auth else FOOTER_OLD
        need = h[5] + h[6] + h[7] + ftr.size
        if self.q.avail < need:
            return None
        take = self.q.take
        front, middle, data = take(h[5]), take(h[6]), take(h[7])
        f = ftr.unpack(take(ftr.size))
        sig, flags = (f[3], f[4]) if self.msg_auth else (0, f[3])
        self._hdr = None
        rm = RawMessage(h, front, middle, data, f[0], f[1], f[2], sig, flags)
        check_message(rm)
        return TAG_MSG, rm


class State(enum.Enum):
    CLOSED = "closed"
    PREOPEN = "preopen"
    CONNECTING = "connecting"
    NEGOTIATING = "negotiating"
    OPEN = "open"
    STANDBY = "standby"


class ClientProtocolV1(ClientCore):
    """One client-side msgr1 connection, sans-IO.  Constructor arguments as msgr2's
    :class:`~pyceph.msgr.protocol.ClientProtocol` (``peer_addr`` is the daemon's v1
    address).  ``global_id`` (None: -1) is the ``src`` num of our message headers;
    :meth:`set_global_id` changes it once the monitor assigned one.  msgr2-only keyword
    arguments of the Connection (segment limits, banner bits) are accepted and ignored.

    Errors: :class:`ProtocolError` (malformed input, bad CRC or signature, wrong peer,
    BADPROTOVER), :class:`FeatureNotSupported` (FEATURES, missing required features),
    :class:`AuthError` (authorizer refused twice, or the hooks').  After any error
    ``state`` is CLOSED.
    """

    READY_STATE = State.OPEN
    name = "msgr1"

    PROTO = "msgr1"
    OPEN_STATE = State.OPEN
    CLOSED_STATE = State.CLOSED

    def __init__(
        self,
        peer_addr: EntityAddr,
        auth: Any,
        *,
        entity_type: int = ENTITY_TYPE_CLIENT,
        peer_type: int | None = None,
        my_addr: EntityAddr | None = None,
        global_id: int | None = None,
        features: int = F.SUPPORTED_DEFAULT,
        required_features: int = 0,
        lossy: bool = True,
        session: Session | None = None,
        con: Any = None,
        on_transition: Callable[[State, State], None] | None = None,
        **_unused: Any,
    ) -> None:
        self.peer_addr = peer_addr
        self.auth = auth
        self.entity_type = entity_type
        self.peer_type = peer_type
        if my_addr is None:
            my_addr = EntityAddr(ADDR_TYPE_ANY, int.from_bytes(os.urandom(4), "little") or 1)
        self.my_addr = my_addr
        self.global_id = global_id
        self.features = features
        # MSG_ADDR2 is a msgr2 framing need (the msgr2 default); msgr1 requires nothing.
        self.required_features = required_features & ~F.MSG_ADDR2
        self.lossy = lossy
        self.session = session if session is not None else Session()
        self.con = con if con is not None else self
        self.on_transition = on_transition

        self.state = State.PREOPEN
        self._q = _ByteQueue()
        self._stream: StreamDecoder | None = None
        self._out: list[bytes] = []
        self._pending: deque[Message] = deque()
        self._authorizer: bytes | None = None
        self._authorizer_protocol = 0
        self._auth_retried = False
        self._sign_key = None
        self._reply: ConnectReply | None = None  # connect reply waiting for its authorizer
        # The peer proved its identity: authorizer reply verified (OSD, MGR), or the
        # upper layer's MAuth exchange done (monitors; set_authenticated()).  Until then a
        # message may be at most MAX_PREAUTH_LEN bytes.
        self.authenticated = False

        self.learned_addr: EntityAddr | None = None
        self.peer_addrs: EntityAddrvec | None = None
        self.peer_global_id = 0
        self.peer_features = 0
        self.peer_required_features = 0
        self.peer_lossy = False
        self.last_keepalive_ack: tuple[int, int] | None = None
        self.con_mode = CON_MODE_CRC

    @property
    def signing(self) -> bool:
        """True when messages are signed and checked (cephx authorizer, MSG_AUTH peer)."""
        return self._sign_key is not None

    def set_global_id(self, global_id: int) -> None:
        """Our ``client.<global_id>`` as the ``src`` of later message headers."""
        self.global_id = global_id

    def set_authenticated(self) -> None:
        """The monitor authenticated us over MAuth: lift the pre-authentication bound
        (:data:`MAX_PREAUTH_LEN` per message) to Ceph's message bounds."""
        self.authenticated = True
        if self._stream is not None:
            self._stream.max_msg_len = None

    # -- output ------------------------------------------------------------------------
    def initiate(self) -> bytes:
        """Start the handshake: returns our banner."""
        if self.state is not State.PREOPEN:
            raise ProtocolError("initiate() called twice")
        self._out.append(BANNER)
        self._set_state(State.CONNECTING)
        return self.data_to_send()

    def send_keepalive(self, timestamp: tuple[int, int] | None = None) -> bytes:
        """Queue a KEEPALIVE2 (``(sec, nsec)``, default now; a plain KEEPALIVE to a peer
        without CEPH_FEATURE_MSGR_KEEPALIVE2); returns pending output."""
        if self.state is not State.OPEN:
            raise ProtocolError(f"keepalive in state {self.state.value}")
        if not self.peer_features & F.MSGR_KEEPALIVE2:
            self._out.append(bytes((TAG_KEEPALIVE,)))  # a pre-firefly peer: no timestamp, no ack
            return self.data_to_send()
        if timestamp is None:
            timestamp = now_timespec()
        self._out.append(bytes((TAG_KEEPALIVE2,)) + _TIMESPEC.pack(*timestamp))
        return self.data_to_send()

    def _src_num(self) -> int:
        return self.global_id if self.global_id else -1

    def _write_message(self, msg: Message) -> None:
        s = self.session
        s.out_seq += 1
        msg.seq = s.out_seq
        msg.ack_seq = s.in_seq
        s.sent.append(msg)
        self._out.extend(self._encode(msg))

    def _encode(self, msg: Message) -> list[bytes]:
        pf = self.peer_features
        return encode_message_parts(
            msg, self.entity_type, self._src_num(), self._sign_key,
            cephx_v2=bool(pf & F.CEPHX_V2), msg_auth=bool(pf & F.MSG_AUTH),
        )

    # -- input -------------------------------------------------------------------------
    def receive_chunks(self, chunks: Iterable) -> list[Event]:
        """Consume received bytes; returns events (output queued for data_to_send).
        Raises on protocol errors (state -> CLOSED)."""
        if self.state is State.CLOSED:
            return []
        events: list[Event] = []
        try:
            if self.state is State.OPEN:
                for c in chunks:
                    self._stream.push(c)
            else:
                for c in chunks:
                    self._q.push(c)
            self._process(events)
            s = self.session
            if self.state is State.OPEN and s.in_seq > s.in_seq_acked:
                s.in_seq_acked = s.in_seq
                self._out.append(bytes((TAG_ACK,)) + _U64.pack(s.in_seq))
        except Exception:
            self._set_state(State.CLOSED)
            raise
        return events

    def _process(self, events: list[Event]) -> None:
        while True:
            st = self.state
            if st is State.CONNECTING:
                if not self._on_banner():
                    return
            elif st is State.NEGOTIATING:
                if not self._on_connect_reply(events):
                    return
            elif st is State.OPEN:
                item = self._stream.next()
                if item is None:
                    return
                self._on_open_item(item, events)
            else:
                return

    # -- handshake ---------------------------------------------------------------------
    def _on_banner(self) -> bool:
        q = self._q
        n = len(BANNER) + 2 * ENTITY_ADDR_LEN
        if q.avail < len(BANNER):
            return False
        head = q.peek(len(BANNER))
        if head != BANNER:
            if head.startswith(b"ceph v2"):
                raise ProtocolError(f"{self.peer_addr}: peer speaks msgr2 (banner 'ceph v2'), this is a msgr1 connection")
            raise ProtocolError(f"{self.peer_addr}: bad msgr1 banner {head!r}")
        if q.avail < n:
            return False
        q.take(len(BANNER))
        peer = decode_entity_addr(q.take(ENTITY_ADDR_LEN))
        me = decode_entity_addr(q.take(ENTITY_ADDR_LEN))
        want = self.peer_addr
        if (peer.ip, peer.port, peer.nonce) != (want.ip, want.port, want.nonce) and not (
            peer.is_blank() or not peer.ip
        ):
            raise ProtocolError(f"wrong peer at address: wanted {want}, server is {peer}")
        self.peer_addrs = EntityAddrvec((EntityAddr(ADDR_TYPE_LEGACY, peer.nonce, want.ip, want.port),))
        self.learned_addr = me
        if not self.my_addr.ip:
            # Our address is what the peer sees, port 0 (ProtocolV1 learned_addr()).
            self.my_addr = EntityAddr(self.my_addr.type, self.my_addr.nonce, me.ip, 0)
        self._out.append(encode_entity_addr(self.my_addr))
        self._get_authorizer()
        self._send_connect()
        self._set_state(State.NEGOTIATING)
        return True

    def _get_authorizer(self) -> None:
        # Monitors take no authorizer in msgr1 (MonClient::ms_get_authorizer): MAuth follows.
        if self.peer_type == ENTITY_TYPE_MON or self.peer_type is None:
            self._authorizer, self._authorizer_protocol = None, 0
            return
        method, _modes, bl = self.auth.get_auth_request(self.con)
        self._authorizer, self._authorizer_protocol = bytes(bl), method

    def _send_connect(self) -> None:
        s = self.session
        c = ConnectMsg(
            self.features, self.entity_type, s.global_seq & 0xFFFFFFFF, s.connect_seq & 0xFFFFFFFF,
            PROTOCOL_VERSIONS.get(self.peer_type or 0, 0), self._authorizer_protocol,
            MSG_CONNECT_LOSSY if self.lossy else 0, self._authorizer or b"",
        )
        self._out.append(c.encode())

    def _on_connect_reply(self, events: list[Event]) -> bool:
        q = self._q
        if self._reply is None:
            if q.avail < CONNECT_REPLY.size:
                return False
            tag, feat, gseq, cseq, pver, alen, flags = CONNECT_REPLY.unpack(q.take(CONNECT_REPLY.size))
            if alen > MAX_AUTHORIZER_LEN:
                raise ProtocolError(f"{self.peer_addr}: authorizer reply of {alen} bytes")
            self._reply = ConnectReply(tag, feat, gseq, cseq, pver, flags, b"\0" * alen)
        r = self._reply
        alen = len(r.authorizer)
        extra = _U64.size if r.tag == TAG_SEQ else 0
        if q.avail < alen + extra:
            return False
        r.authorizer = q.take(alen)
        acked = _U64.unpack(q.take(extra))[0] if extra else None
        self._reply = None
        self._handle_reply(r, acked, events)
        return True

    def _handle_reply(self, r: ConnectReply, acked: int | None, events: list[Event]) -> None:
        s = self.session
        tag = r.tag
        if tag in (TAG_READY, TAG_SEQ):
            self._ready(r, acked, events)
        elif tag == TAG_CHALLENGE_AUTHORIZER:
            if self._authorizer is None:
                raise ProtocolError(f"{self.peer_addr}: authorizer challenge without an authorizer")
            self._authorizer = bytes(self.auth.handle_auth_reply_more(self.con, r.authorizer))
            self._send_connect()
        elif tag == TAG_BADAUTHORIZER:
            if self._authorizer is None:
                raise ProtocolError(f"{self.peer_addr}: BADAUTHORIZER without an authorizer")
            if self._auth_retried:
                # The hook invalidates the tickets (the next mon round trip renews them) and raises.
                self.auth.handle_auth_bad_method(
                    self.con, self._authorizer_protocol, -errno.EACCES, [self._authorizer_protocol], [CON_MODE_CRC]
                )
                raise AuthError(f"{self.peer_addr}: authorizer refused (BADAUTHORIZER)", errno=errno.EACCES)
            self._auth_retried = True
            self._get_authorizer()
            self._send_connect()
        elif tag == TAG_RESETSESSION:
            # The peer lost our session: start afresh (ProtocolV1 was_session_reset()).
            self.session = Session(global_seq=s.global_seq)
            events.append(SessionReset())
            self._send_connect()
        elif tag == TAG_RETRY_GLOBAL:
            s.global_seq = max(s.global_seq, r.global_seq) + 1
            self._send_connect()
        elif tag == TAG_RETRY_SESSION:
            s.connect_seq = r.connect_seq
            self._send_connect()
        elif tag == TAG_WAIT:
            events.append(Wait())
            self._set_state(State.CLOSED)
            events.append(Closed("server asked us to wait"))
        elif tag == TAG_FEATURES:
            raise FeatureNotSupported(
                f"{self.peer_addr}: server requires features {r.features & ~self.features:#x} we lack"
            )
        elif tag == TAG_BADPROTOVER:
            raise ProtocolError(
                f"{self.peer_addr}: protocol version mismatch, server has {r.protocol_version}, we sent "
                f"{PROTOCOL_VERSIONS.get(self.peer_type or 0, 0)}"
            )
        else:
            raise ProtocolError(f"{self.peer_addr}: unexpected connect reply tag {r.name}")

    def _ready(self, r: ConnectReply, acked: int | None, events: list[Event]) -> None:
        missing = self.required_features & ~r.features
        if missing:
            raise FeatureNotSupported(f"{self.peer_addr}: server lacks required features {missing:#x}")
        if self._authorizer is not None:
            if not r.authorizer:
                raise AuthError(f"{self.peer_addr}: no authorizer reply")
            self.auth.handle_auth_done(self.con, self.global_id or 0, CON_MODE_CRC, r.authorizer)
            if r.features & F.MSG_AUTH:
                self._sign_key = self.auth.message_signing_key(self.con)
            self.authenticated = True
        s = self.session
        self.peer_features = r.features
        self.peer_lossy = bool(r.flags & MSG_CONNECT_LOSSY)
        s.peer_global_seq = r.global_seq
        s.connect_seq = r.connect_seq  # ours + 1 (ProtocolV1 client_ready(), kernel process_connect())
        if acked is not None:
            # TAG_SEQ: the peer had our messages up to ``acked``; we tell it our in_seq.
            s.discard_sent(acked)
            self._out.append(_U64.pack(s.in_seq))
        self._stream = StreamDecoder(msg_auth=bool(r.features & F.MSG_AUTH),
                                     max_msg_len=None if self.authenticated else MAX_PREAUTH_LEN)
        rest = self._q.take(self._q.avail)
        self._stream.push(rest)
        self._set_state(State.OPEN)
        events.append(
            Connected(
                self.peer_global_id, self.negotiated_features, self.peer_features, 0,
                self.peer_addrs or EntityAddrvec(), self.my_addr, self.peer_lossy, acked is not None,
            )
        )
        for m in list(s.sent):
            self._out.extend(self._encode(m))
        while self._pending:
            self._write_message(self._pending.popleft())

    # -- OPEN --------------------------------------------------------------------------
    def _on_open_item(self, item: tuple[int, Any], events: list[Event]) -> None:
        tag, p = item
        s = self.session
        if tag == TAG_MSG:
            rm: RawMessage = p
            if self._sign_key is not None:
                want = message_signature(rm, self._sign_key, bool(self.peer_features & F.CEPHX_V2))
                if want != rm.sig:
                    raise ProtocolError(
                        f"{self.peer_addr}: bad message signature (seq {rm.header[0]}, type {rm.header[2]})"
                    )
            seq = rm.header[0]
            if seq <= s.in_seq:
                log.info("msgr1 %s: skipping old message seq %d (have %d)", self.peer_addr, seq, s.in_seq)
                return
            if seq != s.in_seq + 1:
                raise ProtocolError(f"{self.peer_addr}: bad message seq {seq}, expected {s.in_seq + 1}")
            s.in_seq = seq
            msg = rm.to_message()
            if self.peer_type is not None and msg.src_type != self.peer_type:
                raise ProtocolError(
                    f"{self.peer_addr}: message from entity type {msg.src_type}, expected {self.peer_type}"
                )
            self.peer_global_id = msg.src_num
            events.append(MessageReceived(msg))
        elif tag == TAG_ACK:
            s.discard_sent(p)
        elif tag == TAG_KEEPALIVE2:
            self._out.append(bytes((TAG_KEEPALIVE2_ACK,)) + _TIMESPEC.pack(*p))
        elif tag == TAG_KEEPALIVE2_ACK:
            self.last_keepalive_ack = p
            events.append(KeepaliveAck(p))
        elif tag == TAG_KEEPALIVE:
            pass
        elif tag == TAG_CLOSE:
            self._set_state(State.CLOSED)
            events.append(Closed("peer closed the connection (TAG_CLOSE)"))


__all__ = [
    "ClientProtocolV1", "ConnectMsg", "ConnectReply", "RawMessage", "State", "StreamDecoder",
    "check_message", "decode_entity_addr", "decode_header", "encode_entity_addr",
    "encode_message_parts", "message_signature",
]
