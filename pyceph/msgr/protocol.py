"""Sans-IO msgr2.1 client connection state machine (crc and secure modes).

The kernel's ``net/ceph/messenger_v2.c`` client states made explicit; frame formats in
:mod:`pyceph.msgr.frames`, handshake in Ceph's ``doc/dev/msgr2.rst``.  Feed received
bytes to :meth:`ClientProtocol.receive_data`, which returns events; everything to send
accumulates in an outgoing queue drained by :meth:`ClientProtocol.data_to_send` (or
``data_to_send_parts`` for zero-copy ``writelines``).  No sockets, no clocks (except the
default KEEPALIVE2 timestamp).

Handshake (client side)::

    BANNER            send banner; wait for the server's banner, then send HELLO
    HELLO             wait for server HELLO (learn our address), send AUTH_REQUEST
    AUTH              AUTH_REPLY_MORE -> AUTH_REQUEST_MORE ..., AUTH_BAD_METHOD -> retry,
                      AUTH_DONE -> (secure mode: from here on every frame both ways
                      is AES-128-GCM sealed with keys from the connection secret)
                      send AUTH_SIGNATURE = HMAC-SHA256(session_key, every byte
                      received so far, AUTH_DONE included)
    AUTH_SIGNATURE    verify the server's HMAC over every byte we sent (banner, HELLO,
                      AUTH_REQUEST[_MORE]); send CLIENT_IDENT (or SESSION_RECONNECT)
    SESSION_CONNECTING / SESSION_RECONNECTING
                      SERVER_IDENT / SESSION_RECONNECT_OK -> READY
    READY             MESSAGE, ACK, KEEPALIVE2[_ACK]
    CLOSED            after an error, WAIT, or close()

Reconnect: with ``lossy=False`` a session carries a client cookie, and a later connection
given the old :class:`Session` sends SESSION_RECONNECT and, on SESSION_RECONNECT_OK,
resends in order what the peer had not acknowledged (messages it acked are dropped, so
each is delivered once).  Ceph's daemons do not offer this to clients: their policy for
client peers is lossy (``stateless_server``), so a Pacific OSD or monitor answers
CLIENT_IDENT with the LOSSY flag and no server cookie even when asked for a lossless
session, and answers a SESSION_RECONNECT with SESSION_RESET, after which we send
CLIENT_IDENT and start afresh (checked against real daemons in
``tests/integration/test_faults.py``).  Clients therefore run lossy sessions, as
librados and the kernel do, and resend at the OSD-client level, where the OSD's request
id dedup makes a resent write apply once.

Connection modes (``doc/dev/msgr2.rst``): the auth hook's AUTH_REQUEST offers modes in
preference order and the server picks the first it allows (``AuthRegistry::pick_mode``).
In secure mode the server's AUTH_DONE is the last plaintext frame: the auth hook returns
the cephx connection secret, :class:`~pyceph.msgr.crypto_onwire.OnWireCrypto` derives
the key and the rx/tx nonces from it, and the frame reader is swapped for a
:class:`~pyceph.msgr.frames.SecureFrameReader` between AUTH_DONE and the next frame.
The AUTH_SIGNATURE HMACs still cover the plaintext pre-auth bytes (banner to AUTH_DONE),
as in crc mode; the AUTH_SIGNATURE frames themselves travel encrypted.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from ..auth.cephx import CEPH_CON_MODE_CRC, CEPH_CON_MODE_SECURE, CEPH_CON_MODE_UNKNOWN, CON_MODE_NAMES
from ..errors import FeatureNotSupported, ProtocolError
from ..types import ADDR_TYPE_ANY, ENTITY_TYPE_CLIENT, EntityAddr, EntityAddrvec
from . import features as F
from . import frames as fr
from .crypto_onwire import OnWireCrypto
from .message import Message

log = logging.getLogger(__name__)

# CEPH_CON_MODE_* (include/linux/ceph/auth.h, src/auth/Auth.h), declared in auth.cephx
CON_MODE_UNKNOWN = CEPH_CON_MODE_UNKNOWN
CON_MODE_CRC = CEPH_CON_MODE_CRC
CON_MODE_SECURE = CEPH_CON_MODE_SECURE
# CEPH_MSG_CONNECT_LOSSY: the CLIENT_IDENT / SERVER_IDENT flags bit
MSG_CONNECT_LOSSY = 1


class State(enum.Enum):
    BANNER = "banner"
    HELLO = "hello"
    AUTH = "auth"
    AUTH_SIGNATURE = "auth_signature"
    SESSION_CONNECTING = "session_connecting"
    SESSION_RECONNECTING = "session_reconnecting"
    READY = "ready"
    CLOSED = "closed"


class AuthHandler(Protocol):
    """The v2 auth hooks of the kernel's ``ceph_connection_operations``.

    ``con`` is whatever the protocol was constructed with as ``con`` (the Connection).
    """

    def get_auth_request(self, con: Any) -> tuple[int, list[int], bytes]: ...

    def handle_auth_reply_more(self, con: Any, payload: bytes) -> bytes: ...

    def handle_auth_done(
        self, con: Any, global_id: int, con_mode: int, payload: bytes
    ) -> tuple[bytes, bytes]: ...

    def handle_auth_bad_method(
        self, con: Any, method: int, result: int, allowed_methods: list[int], allowed_modes: list[int]
    ) -> None: ...


# --- events -------------------------------------------------------------------------


@dataclass
class Connected:
    """SERVER_IDENT (or SESSION_RECONNECT_OK) accepted; the session is READY.

    ``features`` is the negotiated set (ours & the peer's).  ``my_addr`` is our address
    as we announced it (IP learned from the server's HELLO, port 0).
    """

    global_id: int
    features: int
    peer_features: int
    peer_required_features: int
    peer_addrs: EntityAddrvec
    my_addr: EntityAddr
    lossy: bool
    reconnected: bool = False
    con_mode: int = CON_MODE_CRC


@dataclass
class MessageReceived:
    message: Message


@dataclass
class KeepaliveAck:
    """KEEPALIVE2_ACK: ``timestamp`` is the ``(sec, nsec)`` we sent."""

    timestamp: tuple[int, int]


@dataclass
class Wait:
    """The server told us to WAIT (it is connecting to us); the connection is closed and
    should be retried after a backoff."""


@dataclass
class SessionReset:
    """The server reset our session (lost state): unacked messages are dropped, and
    upper layers must resend what they need (``peer_reset`` in the kernel)."""


@dataclass
class Closed:
    reason: str


Event = Connected | MessageReceived | KeepaliveAck | Wait | SessionReset | Closed


@dataclass
class Session:
    """State that survives a reconnect (``ceph_connection`` v2 session fields)."""

    client_cookie: int = 0
    server_cookie: int = 0
    global_seq: int = 1
    connect_seq: int = 0
    peer_global_seq: int = 0
    in_seq: int = 0  # last message seq received and delivered
    in_seq_acked: int = 0  # last seq we told the peer about
    out_seq: int = 0  # last seq assigned to an outgoing message
    sent: deque = field(default_factory=deque)  # sent, not yet acked (Message)

    def discard_sent(self, ack: int) -> None:
        """Drop sent messages with ``seq <= ack`` (the peer has them)."""
        while self.sent and self.sent[0].seq <= ack:
            self.sent.popleft()


def now_timespec() -> tuple[int, int]:
    """The wall clock as a KEEPALIVE2 ``ceph_timespec``: ``(sec mod 2**32, nsec)``."""
    ns = time.time_ns()
    return (ns // 1_000_000_000 & 0xFFFFFFFF, ns % 1_000_000_000)


class ClientCore:
    """What the msgr1 and msgr2 client cores share: the output queue, queuing messages
    until the session is up, state changes, close.

    A subclass sets ``PROTO`` ("msgr1"/"msgr2"), ``OPEN_STATE`` (its state in which
    messages flow) and ``CLOSED_STATE``, and provides ``state``, ``peer_addr``,
    ``on_transition``, ``features``, ``peer_features``, ``_out`` (a list of buffers),
    ``_pending`` (a deque of messages), ``_write_message(msg)`` and ``receive_chunks``.
    """

    PROTO: str
    OPEN_STATE: Any
    CLOSED_STATE: Any
    state: Any
    peer_addr: Any
    on_transition: Callable[[Any, Any], None] | None
    features: int
    peer_features: int
    _out: list[Any]
    _pending: deque[Message]

    def _write_message(self, msg: Message) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def receive_chunks(self, chunks: Iterable[bytes | bytearray | memoryview]) -> list[Event]:  # pragma: no cover
        raise NotImplementedError

    # -- state -------------------------------------------------------------------------
    def _set_state(self, new: Any) -> None:
        old = self.state
        if old is new:
            return
        self.state = new
        if self.on_transition is not None:
            self.on_transition(old, new)  # the Connection logs it (event=con_state)
        else:
            log.debug("%s %s: %s -> %s", self.PROTO, self.peer_addr, old.value, new.value)

    @property
    def negotiated_features(self) -> int:
        return self.features & self.peer_features

    def set_authenticated(self) -> None:
        """The upper layer authenticated the peer outside the messenger (msgr1 monitors:
        MAuth), lifting the pre-authentication bounds.  msgr2 authenticates in its own
        handshake: nothing to do."""

    # -- output ------------------------------------------------------------------------
    def data_to_send_parts(self) -> list[Any]:
        """Pending output as a list of buffers (for ``writelines``); clears the queue."""
        out, self._out = self._out, []
        return out

    def data_to_send(self) -> bytes:
        """Pending output as one bytes object; clears the queue."""
        return b"".join(self.data_to_send_parts())

    def has_data_to_send(self) -> bool:
        return bool(self._out)

    # -- messages ----------------------------------------------------------------------
    def queue_message(self, msg: Message) -> None:
        """Queue ``msg`` for sending; it goes out now if the session is up, else once it
        is.  The messenger assigns ``msg.seq`` and ``msg.ack_seq``."""
        if self.state is self.CLOSED_STATE:
            raise ProtocolError("connection closed")
        if self.state is self.OPEN_STATE:
            self._write_message(msg)
        else:
            self._pending.append(msg)

    def send_message(self, msg: Message) -> bytes:
        """:meth:`queue_message`, then return all pending output bytes."""
        self.queue_message(msg)
        return self.data_to_send()

    def close(self, reason: str = "closed") -> Closed:
        self._set_state(self.CLOSED_STATE)
        return Closed(reason)

    # -- input -------------------------------------------------------------------------
    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Consume received bytes; returns events.  Output (ACKs, handshake frames) is
        queued for :meth:`data_to_send`.  Raises on protocol errors (state -> CLOSED)."""
        return self.receive_chunks((data,))


class ClientProtocol(ClientCore):

    """One client-side msgr2.1 connection (crc or secure mode), sans-IO.

    - ``peer_addr``: the address we connect to (msgr2 ``EntityAddr``; nonce from the
      monmap/osdmap).  ``peer_type``: expected ``ENTITY_TYPE_*`` of the peer (checked
      against its HELLO) or None.
    - ``auth``: an :class:`AuthHandler`; ``con`` is passed to its hooks (default self).
    - ``my_addr``: our messenger address (type ANY, messenger nonce); its IP may be blank
      and is then learned from the server's HELLO.
    - ``global_id``: our global id once known (None: sent as -1 like librados).
    - ``features`` / ``required_features``: Ceph feature bits (``pyceph.msgr.features``).
    - ``lossy``: ask for a lossy session (librados/kernel clients do; no reconnect).
    - ``session``: carry over a previous connection's :class:`Session` to reconnect.
    - ``on_transition(old, new)``: called on every state change.
    - ``msgr2_required``: banner "required" bits (kernel: REVISION_1; librados: 0).  We
      need revision 1 either way and check the server supports it.

    Errors: :class:`ProtocolError` for malformed/unexpected frames, a bad signature or
    a bad GCM tag (secure mode), :class:`FeatureNotSupported` for feature mismatches or a
    connection mode we did not offer, and whatever the
    auth hooks raise (:class:`AuthError`).  After any error ``state`` is CLOSED.
    """

    PROTO = "msgr2"
    OPEN_STATE = State.READY
    CLOSED_STATE = State.CLOSED

    def __init__(
        self,
        peer_addr: EntityAddr,
        auth: AuthHandler,
        *,
        entity_type: int = ENTITY_TYPE_CLIENT,
        peer_type: int | None = None,
        my_addr: EntityAddr | None = None,
        global_id: int | None = None,
        features: int = F.SUPPORTED_DEFAULT,
        required_features: int = F.REQUIRED_DEFAULT,
        lossy: bool = True,
        session: Session | None = None,
        con: Any = None,
        on_transition: Callable[[State, State], None] | None = None,
        max_segment_len: int = fr.DEFAULT_MAX_SEGMENT_LEN,
        msgr2_required: int = fr.MSGR2_REQUIRED_FEATURES,
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
        self.required_features = required_features
        self.lossy = lossy
        self.session = session if session is not None else Session()
        self.con = con if con is not None else self
        self.on_transition = on_transition
        self.msgr2_required = msgr2_required

        self.state = State.BANNER
        # Handshake bounds until READY (fr.MAX_PREAUTH_LEN per frame, no MESSAGE frames).
        self._reader = fr.FrameReader(max_segment_len=max_segment_len, keep_raw=True, handshake=True)
        self._banner_buf = bytearray()
        self._banner_done = False
        self._out: list[bytes | memoryview] = []
        self._pending: deque[Message] = deque()  # queued before READY, no seq yet
        self._sent_sign: list[bytes] = []  # bytes we sent before AUTH_DONE
        self._recv_sign: list[bytes] = []  # bytes we received before AUTH_DONE
        self._recv_sign_len = 0  # their total, bounded by fr.MAX_PREAUTH_TOTAL
        self._session_key = b""
        self._auth_method = 0
        self._offered_modes: list[int] = []
        self.con_mode = CON_MODE_UNKNOWN
        self._crypto: OnWireCrypto | None = None  # set once AUTH_DONE picks secure mode

        # Learned about the peer / ourselves.
        self.peer_msgr2_features = 0
        self.learned_addr: EntityAddr | None = None  # our address as the server sees it
        self.peer_addrs: EntityAddrvec | None = None
        self.peer_global_id = 0
        self.peer_features = 0
        self.peer_required_features = 0
        self.peer_lossy = False
        self.last_keepalive_ack: tuple[int, int] | None = None

    # -- output ------------------------------------------------------------------------
    def _send_raw(self, data: bytes, signed: bool = False) -> None:
        self._out.append(data)
        if signed:
            self._sent_sign.append(data)

    def _send_frame(self, frame: fr.Frame, signed: bool = False) -> None:
        if self._crypto is not None:
            self._out.extend(fr.encode_frame_secure_parts(frame, self._crypto))
            return
        parts = fr.encode_frame_parts(frame)
        if signed:
            self._sent_sign.append(b"".join(parts))
        self._out.extend(parts)

    # -- commands ----------------------------------------------------------------------
    def initiate(self) -> bytes:
        """Start the handshake: returns the bytes to send first (our banner)."""
        if self.state is not State.BANNER or self._sent_sign:
            raise ProtocolError("initiate() called twice")
        self._send_raw(fr.encode_banner(fr.MSGR2_SUPPORTED_FEATURES, self.msgr2_required), signed=True)
        return self.data_to_send()

    def send_keepalive(self, timestamp: tuple[int, int] | None = None) -> bytes:
        """Queue a KEEPALIVE2 (``timestamp`` ``(sec, nsec)``, default now); returns all
        pending output.  Only valid when READY."""
        if self.state is not State.READY:
            raise ProtocolError(f"keepalive in state {self.state.value}")
        if timestamp is None:
            timestamp = now_timespec()
        self._send_frame(fr.Keepalive2(timestamp).to_frame())
        return self.data_to_send()

    def _write_message(self, msg: Message) -> None:
        s = self.session
        s.out_seq += 1
        msg.seq = s.out_seq
        msg.ack_seq = s.in_seq
        s.in_seq_acked = s.in_seq
        s.sent.append(msg)
        self._send_frame(fr.frame_from_message(msg))

    # -- input -------------------------------------------------------------------------
    def receive_chunks(self, chunks: Iterable[bytes | bytearray | memoryview]) -> list[Event]:
        """:meth:`receive_data` for several received buffers in a row (one ACK for all)."""
        if self.state is State.CLOSED:
            return []
        events: list[Event] = []
        try:
            for data in chunks:
                if not self._banner_done:
                    self._banner_buf += data
                    if not self._handle_banner():
                        continue
                    data = bytes(self._banner_buf)
                    self._banner_buf = bytearray()
                self._reader.push(data)
            if not self._banner_done:
                return events
            while self.state is not State.CLOSED:
                # Keep wire bytes only while they feed the AUTH_SIGNATURE HMAC.
                self._reader.keep_raw = self.state in (State.HELLO, State.AUTH)
                frame = self._reader.next_frame()
                if frame is None:
                    break
                self._handle_frame(frame, events)
            s = self.session
            if self.state is State.READY and s.in_seq > s.in_seq_acked:
                s.in_seq_acked = s.in_seq
                self._send_frame(fr.Ack(s.in_seq).to_frame())
        except Exception:
            self._set_state(State.CLOSED)
            raise
        return events

    def _handle_banner(self) -> bool:
        parsed = fr.parse_banner(self._banner_buf)
        if parsed is None:
            return False
        supported, required, used = parsed
        self._recv_sign.append(bytes(self._banner_buf[:used]))
        del self._banner_buf[:used]
        self._banner_done = True
        if required & ~fr.MSGR2_SUPPORTED_FEATURES:
            raise FeatureNotSupported(
                f"{self.peer_addr}: server requires msgr2 features {required:#x}, "
                f"we support {fr.MSGR2_SUPPORTED_FEATURES:#x}"
            )
        if fr.MSGR2_REQUIRED_FEATURES & ~supported:
            raise FeatureNotSupported(f"{self.peer_addr}: server lacks msgr2 revision 1 ({supported:#x})")
        self.peer_msgr2_features = supported
        hello = fr.Hello(self.entity_type, self.peer_addr)
        self._send_frame(hello.to_frame(), signed=True)
        self._set_state(State.HELLO)
        return True

    def _handle_frame(self, frame: fr.Frame, events: list[Event]) -> None:
        st = self.state
        tag = frame.tag
        if st in (State.HELLO, State.AUTH):
            self._recv_sign.append(frame.raw or b"")
            self._recv_sign_len += len(frame.raw or b"")
            if self._recv_sign_len > fr.MAX_PREAUTH_TOTAL:
                raise ProtocolError(f"{self.peer_addr}: handshake exceeds {fr.MAX_PREAUTH_TOTAL} bytes "
                                    "before authentication")
        if tag == fr.TAG_MESSAGE:
            if st is not State.READY:
                raise ProtocolError(f"MESSAGE frame in state {st.value}")
            self._handle_message(frame, events)
            return
        payload = fr.decode_control(frame)
        handler = _HANDLERS.get((st, tag))
        if handler is None:
            raise ProtocolError(f"unexpected {frame.name} frame in state {st.value}")
        handler(self, payload, events)

    # -- handshake handlers -------------------------------------------------------------
    def _on_hello(self, p: fr.Hello, events) -> None:
        if self.peer_type is not None and p.entity_type != self.peer_type:
            raise ProtocolError(
                f"{self.peer_addr}: wrong peer type {p.entity_type}, expected {self.peer_type}"
            )
        self.peer_type = p.entity_type
        self.learned_addr = p.peer_addr
        if not self.my_addr.ip:
            # Our address is what the peer sees, port 0 (kernel process_hello()).
            self.my_addr = EntityAddr(self.my_addr.type, self.my_addr.nonce, p.peer_addr.ip, 0)
        self._send_auth_request()
        self._set_state(State.AUTH)

    def _send_auth_request(self) -> None:
        method, modes, payload = self.auth.get_auth_request(self.con)
        self._auth_method = method
        self._offered_modes = list(modes)
        self._send_frame(fr.AuthRequest(method, list(modes), payload).to_frame(), signed=True)

    def _on_auth_reply_more(self, p: fr.AuthReplyMore, events) -> None:
        reply = self.auth.handle_auth_reply_more(self.con, p.payload)
        self._send_frame(fr.AuthRequestMore(reply).to_frame(), signed=True)

    def _on_auth_bad_method(self, p: fr.AuthBadMethod, events) -> None:
        # The hook raises AuthError if it cannot try another method.
        self.auth.handle_auth_bad_method(self.con, p.method, p.result, p.allowed_methods, p.allowed_modes)
        self._send_auth_request()

    def _on_auth_done(self, p: fr.AuthDone, events) -> None:
        if p.con_mode not in (CON_MODE_CRC, CON_MODE_SECURE):
            raise ProtocolError(f"{self.peer_addr}: bad con_mode {p.con_mode}")
        if self._offered_modes and p.con_mode not in self._offered_modes:
            offered = ", ".join(CON_MODE_NAMES.get(m, str(m)) for m in self._offered_modes)
            raise FeatureNotSupported(
                f"{self.peer_addr}: server chose {CON_MODE_NAMES[p.con_mode]} mode, we offered {offered}"
            )
        session_key, secret = self.auth.handle_auth_done(self.con, p.global_id, p.con_mode, p.payload)
        self.con_mode = p.con_mode
        self.global_id = p.global_id
        self._session_key = bytes(session_key)
        if p.con_mode == CON_MODE_SECURE:
            # Everything after AUTH_DONE is sealed, our AUTH_SIGNATURE included
            # (ProtocolV2::handle_auth_done, kernel setup_crypto()).
            self._crypto = OnWireCrypto(secret)
            self._reader = fr.SecureFrameReader.take_over(self._reader, self._crypto)
        sig = self._hmac(self._recv_sign)
        self._recv_sign = []
        self._send_frame(fr.AuthSignature(sig).to_frame())
        self._set_state(State.AUTH_SIGNATURE)

    def _hmac(self, chunks: list[bytes]) -> bytes:
        if not self._session_key:
            return bytes(32)  # auth none: all-zero signature (kernel hmac_sha256())
        h = hmac.new(self._session_key, digestmod=hashlib.sha256)
        for c in chunks:
            h.update(c)
        return h.digest()

    def _on_auth_signature(self, p: fr.AuthSignature, events) -> None:
        want = self._hmac(self._sent_sign)
        self._sent_sign = []
        if not hmac.compare_digest(want, p.signature):
            raise ProtocolError(f"{self.peer_addr}: bad AUTH_SIGNATURE from server (integrity error)")
        s = self.session
        if s.server_cookie:
            self._send_frame(
                fr.SessionReconnect(
                    EntityAddrvec((self.my_addr,)), s.client_cookie, s.server_cookie,
                    s.global_seq, s.connect_seq, s.in_seq,
                ).to_frame()
            )
            self._set_state(State.SESSION_RECONNECTING)
        else:
            self._send_client_ident()
            self._set_state(State.SESSION_CONNECTING)

    def _send_client_ident(self) -> None:
        s = self.session
        # librados sends cookie 0 on lossy sessions (nothing to reconnect to).
        if not s.client_cookie and not self.lossy:
            s.client_cookie = int.from_bytes(os.urandom(8), "little") or 1
        gid = self.global_id if self.global_id is not None else (1 << 64) - 1
        ident = fr.ClientIdent(
            EntityAddrvec((self.my_addr,)), self.peer_addr, gid, s.global_seq,
            self.features, self.required_features, MSG_CONNECT_LOSSY if self.lossy else 0,
            s.client_cookie,
        )
        self._send_frame(ident.to_frame())

    def _on_server_ident(self, p: fr.ServerIdent, events) -> None:
        if not any(
            a.ip == self.peer_addr.ip and a.port == self.peer_addr.port and a.nonce == self.peer_addr.nonce
            for a in p.addrs.addrs
        ):
            raise ProtocolError(f"wrong peer at address: wanted {self.peer_addr}, server is {p.addrs}")
        if self.required_features & ~p.supported_features:
            raise FeatureNotSupported(
                f"{self.peer_addr}: server lacks required features "
                f"{self.required_features & ~p.supported_features:#x}"
            )
        if p.required_features & ~self.features:
            raise FeatureNotSupported(
                f"{self.peer_addr}: server requires features {p.required_features & ~self.features:#x}"
            )
        s = self.session
        self.peer_addrs = p.addrs
        self.peer_global_id = p.gid
        self.peer_features = p.supported_features
        self.peer_required_features = p.required_features
        self.peer_lossy = bool(p.flags & MSG_CONNECT_LOSSY)
        s.peer_global_seq = p.global_seq
        s.server_cookie = 0 if self.peer_lossy else p.cookie
        self._become_ready(events, reconnected=False)

    def _become_ready(self, events, reconnected: bool) -> None:
        self._set_state(State.READY)
        self._reader.handshake = False  # from the next frame on: Ceph's message bounds
        events.append(
            Connected(
                self.peer_global_id, self.negotiated_features, self.peer_features,
                self.peer_required_features, self.peer_addrs or EntityAddrvec(), self.my_addr,
                self.peer_lossy, reconnected, self.con_mode,
            )
        )
        # Resend what the peer never acked (reconnect), then what was queued meanwhile.
        s = self.session
        for m in list(s.sent):
            self._send_frame(fr.frame_from_message(m))
        while self._pending:
            self._write_message(self._pending.popleft())

    def _on_ident_missing_features(self, p, events) -> None:
        raise FeatureNotSupported(f"{self.peer_addr}: server says we lack features {p.features:#x}")

    def _on_wait(self, p, events) -> None:
        events.append(Wait())
        self._set_state(State.CLOSED)
        events.append(Closed("server asked us to wait"))

    def _on_reconnect_ok(self, p, events) -> None:
        self.session.discard_sent(p.msg_seq)
        self._become_ready(events, reconnected=True)

    def _on_session_retry(self, p, events) -> None:
        self.session.connect_seq = p.connect_seq + 1
        self._resend_reconnect()

    def _on_session_retry_global(self, p, events) -> None:
        self.session.global_seq = max(self.session.global_seq, p.global_seq) + 1
        self._resend_reconnect()

    def _resend_reconnect(self) -> None:
        s = self.session
        self._send_frame(
            fr.SessionReconnect(
                EntityAddrvec((self.my_addr,)), s.client_cookie, s.server_cookie,
                s.global_seq, s.connect_seq, s.in_seq,
            ).to_frame()
        )

    def _on_session_reset(self, p, events) -> None:
        # Peer lost our session: start a new one (kernel ceph_con_reset_session()).
        old = self.session
        self.session = Session(global_seq=old.global_seq)
        events.append(SessionReset())
        self._send_client_ident()
        self._set_state(State.SESSION_CONNECTING)

    # -- READY handlers ----------------------------------------------------------------
    def _handle_message(self, frame: fr.Frame, events) -> None:
        msg = fr.message_from_frame(frame)
        s = self.session
        if msg.seq <= s.in_seq:
            log.info("msgr2 %s: skipping old message seq %d (have %d)", self.peer_addr, msg.seq, s.in_seq)
            return
        if msg.seq != s.in_seq + 1:
            raise ProtocolError(f"{self.peer_addr}: bad message seq {msg.seq}, expected {s.in_seq + 1}")
        s.discard_sent(msg.ack_seq)
        s.in_seq = msg.seq
        msg.src_type = self.peer_type or 0
        msg.src_num = self.peer_global_id
        events.append(MessageReceived(msg))

    def _on_ack(self, p, events) -> None:
        self.session.discard_sent(p.seq)

    def _on_keepalive2(self, p, events) -> None:
        self._send_frame(fr.Keepalive2Ack(p.timestamp).to_frame())

    def _on_keepalive2_ack(self, p, events) -> None:
        self.last_keepalive_ack = p.timestamp
        events.append(KeepaliveAck(p.timestamp))


_HANDLERS: dict[tuple[State, int], Callable] = {
    (State.HELLO, fr.TAG_HELLO): ClientProtocol._on_hello,
    (State.AUTH, fr.TAG_AUTH_REPLY_MORE): ClientProtocol._on_auth_reply_more,
    (State.AUTH, fr.TAG_AUTH_BAD_METHOD): ClientProtocol._on_auth_bad_method,
    (State.AUTH, fr.TAG_AUTH_DONE): ClientProtocol._on_auth_done,
    (State.AUTH_SIGNATURE, fr.TAG_AUTH_SIGNATURE): ClientProtocol._on_auth_signature,
    (State.SESSION_CONNECTING, fr.TAG_SERVER_IDENT): ClientProtocol._on_server_ident,
    (State.SESSION_CONNECTING, fr.TAG_IDENT_MISSING_FEATURES): ClientProtocol._on_ident_missing_features,
    (State.SESSION_CONNECTING, fr.TAG_WAIT): ClientProtocol._on_wait,
    (State.SESSION_RECONNECTING, fr.TAG_SESSION_RECONNECT_OK): ClientProtocol._on_reconnect_ok,
    (State.SESSION_RECONNECTING, fr.TAG_SESSION_RETRY): ClientProtocol._on_session_retry,
    (State.SESSION_RECONNECTING, fr.TAG_SESSION_RETRY_GLOBAL): ClientProtocol._on_session_retry_global,
    (State.SESSION_RECONNECTING, fr.TAG_SESSION_RESET): ClientProtocol._on_session_reset,
    (State.SESSION_RECONNECTING, fr.TAG_WAIT): ClientProtocol._on_wait,
    (State.READY, fr.TAG_ACK): ClientProtocol._on_ack,
    (State.READY, fr.TAG_KEEPALIVE2): ClientProtocol._on_keepalive2,
    (State.READY, fr.TAG_KEEPALIVE2_ACK): ClientProtocol._on_keepalive2_ack,
}

__all__ = [
    "AuthHandler", "ClientProtocol", "Closed", "Connected", "Event", "KeepaliveAck",
    "MessageReceived", "Session", "SessionReset", "State", "Wait",
    "CON_MODE_CRC", "CON_MODE_NAMES", "CON_MODE_SECURE", "MSG_CONNECT_LOSSY",
]
