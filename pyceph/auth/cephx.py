"""cephx client, sans-IO: the mon handshake, service tickets and OSD/MGR authorizers.

Formats and flow follow the kernel (``net/ceph/auth.c``, ``net/ceph/auth_x.c``,
``net/ceph/auth_x_protocol.h``) and Ceph (``src/auth/cephx/CephxClientHandler.cc``,
``src/auth/cephx/CephxProtocol.cc``, ``src/mon/MonClient.cc``).

msgr2 mon connection (the messenger calls the hooks; ``con`` is opaque and unused):

1. ``get_auth_request`` -> AUTH_REQUEST ``(2, [CRC], payload)``; payload is
   ``u8 AUTH_MODE_MON=10, EntityName, u64 global_id`` (our old global_id when we already
   hold a ticket: global_id reclaim).
2. AUTH_REPLY_MORE carries ``CephXServerChallenge``; ``handle_auth_reply_more`` returns
   the AUTH_REQUEST_MORE payload ``CephXRequestHeader(0x100) + CephXAuthenticate``
   (v3, with the old AUTH ticket and ``other_keys`` = the services we need).
3. AUTH_DONE carries ``CephXResponseHeader`` + ticket reply (our key) + ``bufferlist``
   connection secret (encrypted with the AUTH session key) + ``bufferlist`` extra
   service tickets (AUTH session key); ``handle_auth_done`` returns
   ``(session_key, connection_secret)`` as raw bytes.

Keys: the client's key, and each session key a ticket carries, may be AES or AES256KRB5
(Tentacle's default); each is used with its own type and the key usage Ceph assigns to
the step (``CEPHX_KEY_USAGE_*`` in :mod:`pyceph.auth.crypto`).

Service tickets later travel in MAuth (type 17) / MAuthReply (type 18):
``build_service_ticket_request()`` returns the bytes of MAuth's ``auth_payload``
bufferlist (protocol 2); ``handle_service_ticket_reply()`` takes MAuthReply's
``result_bl``.

All payload bytes given to or returned by the hooks exclude the frame's own
``bufferlist`` length prefix.  Every malformed input raises DecodeError/ProtocolError;
wrong keys and refusals raise AuthError naming the entity.
"""

from __future__ import annotations

import errno as _errno
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from ..encoding import Decoder, Encoder
from ..errors import AuthError, DecodeError, ProtocolError
from ..types import (
    ENTITY_TYPE_AUTH,
    ENTITY_TYPE_MGR,
    ENTITY_TYPE_MON,
    ENTITY_TYPE_NAMES,
    ENTITY_TYPE_OSD,
    EntityName,
)
from .crypto import (
    AES256KRB5_CONFOUNDER_LEN,
    AES256KRB5_KEY_LEN,
    CEPH_CRYPTO_AES,
    CEPH_CRYPTO_AES256KRB5,
    CEPHX_KEY_USAGE_AUTH_CONNECTION_SECRET,
    CEPHX_KEY_USAGE_AUTHORIZE,
    CEPHX_KEY_USAGE_AUTHORIZE_CHALLENGE,
    CEPHX_KEY_USAGE_AUTHORIZE_REPLY,
    CEPHX_KEY_USAGE_TICKET_BLOB,
    CEPHX_KEY_USAGE_TICKET_SESSION_KEY,
    CryptoKey,
    decode_decrypt,
    decrypt_enc_bl,
    encode_encrypt,
    fold_u64,
)
from .structs import (
    CephXAuthenticate,
    CephXAuthorize,
    CephXAuthorizeChallenge,
    CephXAuthorizeReply,
    CephXChallengeBlob,
    CephXRequestHeader,
    CephXResponseHeader,
    CephXServerChallenge,
    CephXServiceTicket,
    CephXServiceTicketRequest,
    CephXTicketBlob,
)

# CEPH_AUTH_* (include/linux/ceph/ceph_fs.h)
CEPH_AUTH_UNKNOWN = 0
CEPH_AUTH_NONE = 1
CEPH_AUTH_CEPHX = 2

# CEPH_CON_MODE_* and CEPH_AUTH_MODE_*
CEPH_CON_MODE_UNKNOWN = 0
CEPH_CON_MODE_CRC = 1
CEPH_CON_MODE_SECURE = 2
CEPH_AUTH_MODE_AUTHORIZER = 1
CEPH_AUTH_MODE_MON = 10
CON_MODE_BY_NAME = {"crc": CEPH_CON_MODE_CRC, "secure": CEPH_CON_MODE_SECURE}
CON_MODE_NAMES = {CEPH_CON_MODE_UNKNOWN: "unknown", CEPH_CON_MODE_CRC: "crc", CEPH_CON_MODE_SECURE: "secure"}


def con_modes_from_names(names) -> tuple[int, ...]:
    """msgr2 connection modes (CEPH_CON_MODE_*) for names in preference order, as
    :meth:`pyceph.config.ClientConfig.msgr_modes` returns them (``("secure", "crc")``).
    ``"legacy"`` (msgr1, which has no modes) is skipped; nothing left gives ``(CRC,)``."""
    modes = tuple(CON_MODE_BY_NAME[n] for n in names if n in CON_MODE_BY_NAME)
    return modes or (CEPH_CON_MODE_CRC,)


def _mode_names(modes) -> str:
    return ", ".join(CON_MODE_NAMES.get(m, str(m)) for m in modes) or "none"

# cephx request types (auth_x_protocol.h)
CEPHX_GET_AUTH_SESSION_KEY = 0x0100
CEPHX_GET_PRINCIPAL_SESSION_KEY = 0x0200
CEPHX_GET_ROTATING_KEY = 0x0400

# Bound on tickets in one reply (Ceph sends at most one per service type).
_MAX_TICKETS = 32


def _svc(service: int) -> str:
    return ENTITY_TYPE_NAMES.get(service, f"service 0x{service:x}")


def _confounder(key: CryptoKey, random_bytes: Callable[[int], bytes]) -> bytes | None:
    """The 16 random bytes an AES256KRB5 encryption starts with (None for AES: none drawn)."""
    return random_bytes(AES256KRB5_CONFOUNDER_LEN) if key.type == CEPH_CRYPTO_AES256KRB5 else None


@dataclass
class TicketHandler:
    """One service's ticket (``CephXTicketHandler``; kernel ``ceph_x_ticket_handler``).

    ``renew_after``/``expires`` are Unix times in seconds (0 = no expiry, as when the
    mon grants a zero validity).  ``ticket`` is kept after expiry: it is still presented
    as the ``old_ticket`` for global_id reclaim.
    """

    service_id: int
    session_key: CryptoKey | None = None
    ticket: CephXTicketBlob = field(default_factory=CephXTicketBlob)
    renew_after: float = 0.0
    expires: float = 0.0
    have_key_flag: bool = False

    @property
    def secret_id(self) -> int:
        return self.ticket.secret_id

    def have_key(self, now: float) -> bool:
        """True while the ticket is usable (clears the flag once expired, like Ceph)."""
        if self.have_key_flag and self.expires and now >= self.expires:
            self.have_key_flag = False
        return self.have_key_flag

    def need_key(self, now: float) -> bool:
        """True if we lack the ticket or it is past ``renew_after`` (3/4 of validity)."""
        if self.have_key_flag:
            return bool(self.expires) and now >= self.renew_after
        return True

    def invalidate(self) -> None:
        self.have_key_flag = False


@dataclass
class CephxAuthorizer:
    """An authorizer for one service connection (``CephXAuthorizer``).

    ``bl`` is the AUTH_REQUEST payload: ``u8 1, u64 global_id, u32 service_id,
    CephXTicketBlob`` (``base``) followed by ``encode_encrypt(CephXAuthorize)`` under
    the service ticket's session key (key usage CEPHX_KEY_USAGE_AUTHORIZE; the
    service's challenge and reply use ..._AUTHORIZE_CHALLENGE and ..._AUTHORIZE_REPLY).
    ``random_bytes(n)`` draws AES256KRB5 confounders.
    """

    service_id: int
    global_id: int
    session_key: CryptoKey
    ticket: CephXTicketBlob
    nonce: int
    base: bytes = field(default=b"", repr=False)  # ticket and sealed proof: credentials
    bl: bytes = field(default=b"", repr=False)
    random_bytes: Callable[[int], bytes] = field(default=os.urandom, repr=False)

    @classmethod
    def build(
        cls, service_id: int, global_id: int, th: TicketHandler, nonce: int,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> "CephxAuthorizer":
        if th.session_key is None:
            raise AuthError(f"cephx: no {_svc(service_id)} ticket to build an authorizer")
        e = Encoder().u8(1).u64(global_id).u32(service_id)
        th.ticket.encode(e)
        au = cls(service_id, global_id, th.session_key, th.ticket, nonce, e.bytes(), random_bytes=random_bytes)
        au._seal(None)
        return au

    def _seal(self, server_challenge: int | None) -> None:
        msg = CephXAuthorize(self.nonce, server_challenge is not None, 0)
        if server_challenge is not None:
            msg.server_challenge_plus_one = (server_challenge + 1) & 0xFFFFFFFFFFFFFFFF
        self.bl = self.base + encode_encrypt(
            self.session_key, msg.to_bytes(), usage=CEPHX_KEY_USAGE_AUTHORIZE,
            confounder=_confounder(self.session_key, self.random_bytes),
        )

    def add_challenge(self, payload: bytes) -> bytes:
        """AUTH_REPLY_MORE from the service: ``encrypt_enc_bl(CephXAuthorizeChallenge)``
        (no length prefix).  Returns the rebuilt authorizer (AUTH_REQUEST_MORE payload).

        Raises AuthError if it does not decrypt with the ticket's session key.
        """
        try:
            body = decrypt_enc_bl(self.session_key, payload, usage=CEPHX_KEY_USAGE_AUTHORIZE_CHALLENGE)
        except AuthError as ex:
            raise AuthError(
                f"cephx: cannot decrypt the {_svc(self.service_id)}'s authorizer challenge: {ex}"
            ) from None
        ch = CephXAuthorizeChallenge.decode(Decoder(body))
        self._seal(ch.server_challenge)
        return self.bl

    def verify_reply(self, payload: bytes) -> bytes:
        """AUTH_DONE payload from the service: ``encode_encrypt(CephXAuthorizeReply)``.

        Checks ``nonce_plus_one == nonce + 1`` (the service knew the session key) and
        returns the connection secret (b"" if none).  Raises AuthError otherwise.
        """
        d = Decoder(payload)
        try:
            body = decode_decrypt(self.session_key, d, usage=CEPHX_KEY_USAGE_AUTHORIZE_REPLY)
        except AuthError as ex:
            raise AuthError(
                f"cephx: cannot decrypt the {_svc(self.service_id)}'s authorizer reply: {ex}"
            ) from None
        reply = CephXAuthorizeReply.decode(Decoder(body))
        if reply.nonce_plus_one != (self.nonce + 1) & 0xFFFFFFFFFFFFFFFF:
            raise AuthError(
                f"cephx: {_svc(self.service_id)} failed to authenticate itself (bad nonce reply)"
            )
        return reply.connection_secret


def calc_client_server_challenge(secret: CryptoKey, server_challenge: int, client_challenge: int) -> int:
    """``cephx_calc_client_server_challenge``: the u64 key proof in CephXAuthenticate.

    AES: XOR of the little-endian u64 words of ``encode_encrypt(CephXChallengeBlob)`` (the
    ``u32`` length prefix included, a trailing partial word ignored).  Other types
    (AES256KRB5, whose random confounder would make the two sides' ciphertexts differ):
    XOR of the u64 words of ``HMAC-SHA256(secret, CephXChallengeBlob)`` (kernel
    ``ceph_x_build_request``; libceph "adapt ceph_x_challenge_blob hashing").
    Raises AuthError for an unusable key.
    """
    blob = CephXChallengeBlob(server_challenge, client_challenge).to_bytes()
    if secret.type == CEPH_CRYPTO_AES:
        return fold_u64(encode_encrypt(secret, blob, usage=0))
    return fold_u64(secret.check().hmac_sha256(blob))


def _raise_result(who: str, result: int, msg: str = "") -> None:
    name = _errno.errorcode.get(-result, str(result))
    extra = f": {msg}" if msg else ""
    ex = AuthError(f"cephx: {who} refused (result {result} {name}){extra}")
    if result < 0:
        ex.errno = -result
    raise ex


class CephxServiceHooks:
    """The four msgr2 auth hooks for one OSD/MGR connection (see :meth:`CephxClient.authorizer_hooks`)."""

    def __init__(self, client: "CephxClient", service_type: int):
        self.client = client
        self.service_type = service_type
        self.authorizer: CephxAuthorizer | None = None

    def get_auth_request(self, con=None) -> tuple[int, list[int], bytes]:
        """Returns ``(CEPH_AUTH_CEPHX, preferred_modes, authorizer bytes)``; a fresh
        authorizer (new nonce) each call.  Raises AuthError without a valid ticket."""
        self.authorizer = self.client.build_authorizer(self.service_type)
        return CEPH_AUTH_CEPHX, list(self.client.service_con_modes), self.authorizer.bl

    def handle_auth_reply_more(self, con, payload: bytes) -> bytes:
        if self.authorizer is None:
            raise ProtocolError("AUTH_REPLY_MORE before AUTH_REQUEST")
        return self.authorizer.add_challenge(payload)

    def handle_auth_done(self, con, global_id: int, con_mode: int, payload: bytes) -> tuple[bytes, bytes]:
        """Returns ``(session_key, connection_secret)``: the service ticket's session key
        and the ``CephXAuthorizeReply`` v2 connection secret (64 bytes in secure mode, for
        the on-wire AES-GCM keys; kernel ``ceph_x_verify_authorizer_reply``).  Raises
        AuthError on a bad reply."""
        if self.authorizer is None:
            raise ProtocolError("AUTH_DONE before AUTH_REQUEST")
        secret = self.authorizer.verify_reply(payload)
        return self.authorizer.session_key.secret, secret

    def message_signing_key(self, con=None) -> CryptoKey | None:
        """The session key of the last authorizer: signs msgr1 messages (None before one)."""
        return self.authorizer.session_key if self.authorizer is not None else None

    def handle_auth_bad_method(self, con, method: int, result: int, allowed_methods, allowed_modes):
        """Always raises AuthError; invalidates the service and AUTH tickets first so the
        next mon round trip fetches fresh ones (kernel ``ceph_x_invalidate_authorizer``)."""
        self.client.invalidate_ticket(self.service_type)
        self.client.invalidate_ticket(ENTITY_TYPE_AUTH)
        _bad_method(
            f"{_svc(self.service_type)} for {self.client.entity_name}",
            method, result, allowed_methods, allowed_modes, self.client.service_con_modes,
        )


def _bad_method(who, method, result, allowed_methods, allowed_modes, con_modes) -> None:
    allowed_methods = list(allowed_methods)
    allowed_modes = list(allowed_modes)
    if CEPH_AUTH_CEPHX not in allowed_methods:
        why = f"auth method cephx not allowed (allowed methods {allowed_methods})"
    elif not any(m in allowed_modes for m in con_modes):
        why = (
            f"connection modes offered ({_mode_names(con_modes)}) not allowed by the server "
            f"(it allows {_mode_names(allowed_modes)}; see ms_mode / ms_client_mode / ms_mon_client_mode)"
        )
    else:
        why = f"authentication failed with result {result}"
    ex = AuthError(f"cephx: {who}: {why}")
    if result < 0:
        ex.errno = -result
    raise ex


class CephxClient:
    """cephx state of one client: global_id, the AUTH ticket and per-service tickets.

    ``CephxClient(EntityName.parse("client.admin"), key, ENTITY_TYPE_MON | ENTITY_TYPE_OSD
    | ENTITY_TYPE_MGR)``; ``secret`` is a :class:`CryptoKey` (AES or AES256KRB5), its
    encoded bytes, a bare secret (16 bytes: AES, 32 bytes: AES256KRB5), or the keyring's
    base64 string.  A key of an unsupported type raises AuthError (ConfigError for a
    base64 string).  Every session key and ticket the mon hands out is used with its own
    type, so an AES client key works with AES256KRB5 service keys and vice versa.
    ``con_modes`` are the msgr2 modes (CEPH_CON_MODE_*) offered to monitors in preference
    order (CRC only by default), ``service_con_modes`` those offered to OSDs/MGRs
    (default: ``con_modes``); see :func:`con_modes_from_names`.
    ``random_bytes(n)`` and ``clock()`` (Unix seconds) are injectable for tests.
    """

    def __init__(
        self,
        entity_name: EntityName | str,
        secret: CryptoKey | bytes | str,
        want_services: int = ENTITY_TYPE_MON | ENTITY_TYPE_OSD | ENTITY_TYPE_MGR,
        *,
        con_modes: tuple[int, ...] = (CEPH_CON_MODE_CRC,),
        service_con_modes: tuple[int, ...] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        clock: Callable[[], float] = time.time,
    ):
        if isinstance(entity_name, str):
            entity_name = EntityName.parse(entity_name)
        if isinstance(secret, str):
            secret = CryptoKey.from_base64(secret)
        elif isinstance(secret, (bytes, bytearray, memoryview)):
            secret = bytes(secret)
            # 16/32 bytes: a bare AES/AES256KRB5 secret; otherwise an encoded CryptoKey
            if len(secret) == 16:
                secret = CryptoKey(secret=secret)
            elif len(secret) == AES256KRB5_KEY_LEN:
                secret = CryptoKey(CEPH_CRYPTO_AES256KRB5, secret=secret)
            else:
                secret = CryptoKey.from_bytes(secret)
        secret.check()
        self.entity_name = entity_name
        self.secret: CryptoKey = secret
        self.want_keys = (want_services | ENTITY_TYPE_AUTH) & 0xFFFFFFFF
        self.con_modes = tuple(con_modes)
        self.service_con_modes = tuple(service_con_modes) if service_con_modes is not None else self.con_modes
        self.global_id = 0
        self.tickets: dict[int, TicketHandler] = {}
        self.starting = True
        self.server_challenge = 0
        self._random_bytes = random_bytes
        self._clock = clock

    # -- bookkeeping -----------------------------------------------------------------
    def _rand64(self) -> int:
        return int.from_bytes(self._random_bytes(8), "little")

    def get_handler(self, service: int) -> TicketHandler:
        th = self.tickets.get(service)
        if th is None:
            th = self.tickets[service] = TicketHandler(service)
        return th

    def validate_tickets(self, now: float | None = None) -> tuple[int, int]:
        """``(have, need)`` bitmasks over ``want_keys`` at ``now`` (Unix seconds)."""
        now = self._clock() if now is None else now
        have = need = 0
        bit = 1
        while bit <= self.want_keys:
            if self.want_keys & bit:
                th = self.tickets.get(bit)
                if th is None:
                    need |= bit
                else:
                    if th.need_key(now):
                        need |= bit
                    if th.have_key(now):
                        have |= bit
            bit <<= 1
        return have, need

    def is_authenticated(self, now: float | None = None) -> bool:
        """True when every wanted ticket (AUTH included) is valid."""
        have, _ = self.validate_tickets(now)
        return have == self.want_keys

    def next_renewal(self) -> float | None:
        """Earliest ``renew_after`` (Unix seconds) over the wanted tickets we hold, or None."""
        times = [
            th.renew_after for s, th in self.tickets.items()
            if self.want_keys & s and th.have_key_flag and th.expires
        ]
        return min(times) if times else None

    def invalidate_ticket(self, service: int) -> None:
        th = self.tickets.get(service)
        if th is not None:
            th.invalidate()

    def session_key(self, service: int = ENTITY_TYPE_AUTH) -> CryptoKey | None:
        th = self.tickets.get(service)
        return th.session_key if th else None

    # -- requests ---------------------------------------------------------------------
    def _build_authenticate(self, need: int) -> bytes:
        cc = self._rand64()
        key = calc_client_server_challenge(self.secret, self.server_challenge, cc)
        old = self.get_handler(ENTITY_TYPE_AUTH).ticket
        req = CephXAuthenticate(cc, key, old, need, 3)
        e = CephXRequestHeader(CEPHX_GET_AUTH_SESSION_KEY).encode(Encoder())
        return req.encode(e).bytes()

    def build_authorizer(self, service: int) -> CephxAuthorizer:
        """An authorizer for ``service`` (CEPH_ENTITY_TYPE_*); AuthError if we hold no
        valid ticket for it."""
        th = self.tickets.get(service)
        if th is None or not th.have_key(self._clock()):
            raise AuthError(
                f"cephx: {self.entity_name} has no valid {_svc(service)} ticket"
            )
        return CephxAuthorizer.build(service, self.global_id, th, self._rand64(), self._random_bytes)

    def authorizer_hooks(self, service_type: int) -> CephxServiceHooks:
        """msgr2 auth hooks for a connection to an OSD/MGR/MDS (``service_type``)."""
        return CephxServiceHooks(self, service_type)

    # -- replies ----------------------------------------------------------------------
    def _decrypt_err(self, what: str, ex: AuthError) -> AuthError:
        return AuthError(f"cephx: cannot decrypt {what} for {self.entity_name}: {ex}")

    def _process_ticket_reply(self, key: CryptoKey, d: Decoder, key_name: str, now: float) -> None:
        """``CephXTicketManager::verify_service_ticket_reply``: ``u8 v, u32 n`` then ``n``
        tickets ``u32 service, u8 v, encode_encrypt(CephXServiceTicket), u8 is_enc,
        (encode_encrypt|bufferlist)(CephXTicketBlob)``.  Key usages:
        CEPHX_KEY_USAGE_TICKET_SESSION_KEY under ``key``, CEPHX_KEY_USAGE_TICKET_BLOB under
        the previous session key for a renewed (encrypted) blob."""
        d.u8()  # reply struct_v
        n = d.u32()
        if n > _MAX_TICKETS or n * 6 > d.remaining:
            raise DecodeError(f"cephx ticket reply claims {n} tickets in {d.remaining} bytes")
        updates = []
        for _ in range(n):
            service = d.u32()
            d.u8()  # service_ticket_v
            try:
                body = decode_decrypt(key, d, usage=CEPHX_KEY_USAGE_TICKET_SESSION_KEY)
            except AuthError as ex:
                raise self._decrypt_err(f"the {_svc(service)} ticket with {key_name}", ex) from None
            st = CephXServiceTicket.decode(Decoder(body))
            why = st.session_key.problem()
            if why:
                raise AuthError(f"cephx: the {_svc(service)} ticket for {self.entity_name} carries "
                                f"an unusable session key: {why}")
            th = self.get_handler(service)
            if d.u8():
                # Renewal with an old ticket: the new blob is sealed with the old session key.
                if th.session_key is None:
                    raise AuthError(f"cephx: encrypted {_svc(service)} ticket but no previous session key")
                try:
                    tbl = decode_decrypt(th.session_key, d, usage=CEPHX_KEY_USAGE_TICKET_BLOB)
                except AuthError as ex:
                    raise self._decrypt_err(f"the renewed {_svc(service)} ticket", ex) from None
                tb = _ticket_blob_from_bl(Decoder(tbl))
            else:
                tb = _ticket_blob_from_bl(d)
            updates.append((th, st, tb))
        for th, st, tb in updates:
            th.session_key = st.session_key
            th.ticket = tb
            vsec = st.validity[0] + st.validity[1] / 1e9
            if vsec:
                th.expires = now + vsec
                th.renew_after = th.expires - st.validity[0] / 4
            else:
                th.expires = th.renew_after = 0.0
            th.have_key_flag = True

    def _fresh_auth_key(self) -> CryptoKey:
        th = self.tickets.get(ENTITY_TYPE_AUTH)
        if th is None or th.session_key is None or not th.have_key_flag:
            raise AuthError(f"cephx: the monitor's reply for {self.entity_name} carried no AUTH ticket")
        return th.session_key

    def _handle_auth_session_key(self, d: Decoder, now: float) -> bytes:
        """Rest of a GET_AUTH_SESSION_KEY reply; returns the connection secret (or b"")."""
        self._process_ticket_reply(self.secret, d, f"the key of {self.entity_name} (wrong key?)", now)
        if d.eof():
            return b""  # pre-nautilus shape: no connection secret, no extra tickets
        cbl = d.blob()
        extra = d.blob()
        auth_key = self._fresh_auth_key()
        con_secret = b""
        if cbl:
            try:
                body = decode_decrypt(auth_key, Decoder(cbl), usage=CEPHX_KEY_USAGE_AUTH_CONNECTION_SECRET)
            except AuthError as ex:
                raise self._decrypt_err("the connection secret", ex) from None
            con_secret = Decoder(body).blob()
        if extra:
            self._process_ticket_reply(auth_key, Decoder(extra), "the AUTH session key", now)
        return con_secret

    def _handle_response(self, payload: bytes, who: str) -> tuple[int, bytes]:
        now = self._clock()
        d = Decoder(payload)
        hdr = CephXResponseHeader.decode(d)
        if hdr.status < 0:
            _raise_result(f"{who} for {self.entity_name}", hdr.status)
        if hdr.request_type == CEPHX_GET_AUTH_SESSION_KEY:
            return hdr.request_type, self._handle_auth_session_key(d, now)
        if hdr.request_type == CEPHX_GET_PRINCIPAL_SESSION_KEY:
            auth_key = self.session_key(ENTITY_TYPE_AUTH)
            if auth_key is None:
                raise AuthError("cephx: service tickets arrived before the AUTH ticket")
            self._process_ticket_reply(auth_key, d, "the AUTH session key", now)
            return hdr.request_type, b""
        if hdr.request_type == CEPHX_GET_ROTATING_KEY:
            return hdr.request_type, b""  # only daemons ask for rotating keys
        raise DecodeError(f"cephx: unknown reply type 0x{hdr.request_type:x}")

    # -- msgr2 mon hooks ----------------------------------------------------------------
    def get_auth_request(self, con=None) -> tuple[int, list[int], bytes]:
        """AUTH_REQUEST for a mon: ``(CEPH_AUTH_CEPHX, con_modes, payload)``.

        payload = ``u8 CEPH_AUTH_MODE_MON, EntityName, u64 global_id`` (kernel
        ``ceph_auth_get_request``).  Restarts the challenge exchange.
        """
        self.starting = True
        self.server_challenge = 0
        e = Encoder().u8(CEPH_AUTH_MODE_MON)
        self.entity_name.encode(e)
        return CEPH_AUTH_CEPHX, list(self.con_modes), e.u64(self.global_id).bytes()

    def handle_auth_reply_more(self, con, payload: bytes) -> bytes:
        """AUTH_REPLY_MORE -> AUTH_REQUEST_MORE payload.

        The first one is ``CephXServerChallenge``; the answer is
        ``CephXRequestHeader(GET_AUTH_SESSION_KEY) + CephXAuthenticate``.
        Raises DecodeError on a malformed challenge.
        """
        if self.starting:
            d = Decoder(payload)
            ch = CephXServerChallenge.decode(d)
            if not d.eof():
                raise DecodeError(f"CephXServerChallenge: {d.remaining} trailing bytes")
            self.server_challenge = ch.server_challenge
            self.starting = False
            self.invalidate_ticket(ENTITY_TYPE_AUTH)
        else:
            self._handle_response(payload, "monitor")
        _, need = self.validate_tickets()
        if not need & ENTITY_TYPE_AUTH:
            raise ProtocolError("cephx: monitor asked for more, but we need nothing")
        return self._build_authenticate(need)

    def handle_auth_done(self, con, global_id: int, con_mode: int, payload: bytes) -> tuple[bytes, bytes]:
        """AUTH_DONE: decrypt our tickets.  Returns ``(session_key, connection_secret)``
        (the AUTH ticket's raw session-key secret, 16 bytes for AES and 32 for
        AES256KRB5, the HMAC-SHA256 key of msgr2's AUTH_SIGNATURE; the connection secret
        from the cephx v2 reply's encrypted ``cbl``, 64 bytes when the mon chose secure
        mode, else b""; CephxClientHandler::handle_response, kernel ``handle_auth_session_key``).

        Raises AuthError if our key does not decrypt the reply (naming the entity) or the
        mon refused us; DecodeError/ProtocolError if it is malformed.
        """
        if self.starting:
            raise ProtocolError("cephx: AUTH_DONE before the server challenge")
        op, con_secret = self._handle_response(payload, "monitor")
        if op != CEPHX_GET_AUTH_SESSION_KEY:
            raise DecodeError(f"cephx: AUTH_DONE carries reply type 0x{op:x}")
        key = self._fresh_auth_key()
        if global_id:
            self.global_id = global_id
        return key.secret, con_secret

    def handle_auth_bad_method(self, con, method: int, result: int, allowed_methods, allowed_modes):
        """AUTH_BAD_METHOD from the mon: always raises AuthError explaining why."""
        _bad_method(
            f"monitor refused {self.entity_name}", method, result, allowed_methods,
            allowed_modes, self.con_modes,
        )

    # -- service tickets over MAuth ------------------------------------------------------
    def need_service_tickets(self, now: float | None = None) -> bool:
        """True if a wanted ticket is missing or due for renewal (librados
        ``_need_tickets``: a lone MGR need does not count, to avoid request loops)."""
        _, need = self.validate_tickets(now)
        return bool(need) and need != ENTITY_TYPE_MGR

    def build_service_ticket_request(self) -> bytes:
        """MAuth ``auth_payload`` (send with protocol CEPH_AUTH_CEPHX).

        If the AUTH ticket itself needs renewal: ``CephXRequestHeader(0x100) +
        CephXAuthenticate`` (answering the connection's server challenge, presenting the
        old ticket); otherwise ``CephXRequestHeader(0x200) + authorizer(AUTH ticket) +
        CephXServiceTicketRequest(need)``.  Raises AuthError without an AUTH ticket.
        """
        _, need = self.validate_tickets()
        if need & ENTITY_TYPE_AUTH:
            if self.starting:
                raise AuthError("cephx: not authenticated with a monitor yet")
            return self._build_authenticate(need)
        th = self.tickets.get(ENTITY_TYPE_AUTH)
        if th is None or th.session_key is None:
            raise AuthError(f"cephx: {self.entity_name} holds no AUTH ticket")
        au = CephxAuthorizer.build(ENTITY_TYPE_AUTH, self.global_id, th, self._rand64(), self._random_bytes)
        e = CephXRequestHeader(CEPHX_GET_PRINCIPAL_SESSION_KEY).encode(Encoder())
        e.raw(au.bl)
        return CephXServiceTicketRequest(need).encode(e).bytes()

    def handle_service_ticket_reply(self, payload: bytes, result: int = 0, result_msg: str = "") -> None:
        """MAuthReply ``result_bl`` (and optionally its ``result``/``result_msg``).

        Updates the tickets.  Raises AuthError if the mon refused (``result`` or the
        cephx status < 0) or the reply does not decrypt; DecodeError if malformed.
        """
        if result < 0:
            _raise_result(f"monitor (service tickets) for {self.entity_name}", result, result_msg)
        self._handle_response(payload, "monitor (service tickets)")


def _ticket_blob_from_bl(d: Decoder) -> CephXTicketBlob:
    """``bufferlist`` holding an encoded ``CephXTicketBlob``."""
    inner = d.sub(d.u32())
    return CephXTicketBlob.decode(inner)
