"""cephx against a real captured librados session (../shared/vectors/msgr2-capture).

The capture's client key is in ``keyring``, so every step can be replayed offline: we
inject the client's random challenge/nonce (recovered from the capture) and check that
our client produces byte-identical requests and accepts the servers' real replies.
Independent proofs that the recovered session keys are right: the msgr2
AUTH_SIGNATURE frames (HMAC-SHA256 under the session key, computed by Ceph) verify.
"""

from __future__ import annotations
from tests.shared_data import CORPUS as CORPUS_DIR, VECTORS as VECTORS_DIR

import errno
import functools
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyceph.auth import cephx
from pyceph.auth.cephx import (
    CEPH_AUTH_CEPHX,
    CEPH_CON_MODE_CRC,
    CEPH_CON_MODE_SECURE,
    CEPHX_GET_AUTH_SESSION_KEY,
    CEPHX_GET_PRINCIPAL_SESSION_KEY,
    CephxClient,
    calc_client_server_challenge,
)
from pyceph.auth.crypto import (
    CEPHX_KEY_USAGE_AUTHORIZE,
    CEPHX_KEY_USAGE_TICKET_SESSION_KEY,
    CryptoKey,
    decode_decrypt,
    decrypt_enc_bl,
    encode_encrypt,
    encrypt_enc_bl,
    hmac_sha256,
)
from pyceph.auth.structs import (
    CephXAuthenticate,
    CephXAuthorize,
    CephXRequestHeader,
    CephXResponseHeader,
    CephXServiceTicket,
    CephXServiceTicketRequest,
    CephXTicketBlob,
)
from pyceph.encoding import Decoder, Encoder
from pyceph.errors import AuthError, ConfigError, DecodeError
from pyceph.msgr.frames import AuthDone, AuthReplyMore, AuthRequest, AuthRequestMore, iter_frames
from pyceph.types import (
    ENTITY_TYPE_AUTH,
    ENTITY_TYPE_MGR,
    ENTITY_TYPE_MON,
    ENTITY_TYPE_OSD,
    EntityName,
)

CAP = (VECTORS_DIR / "msgr2-capture")
ADMIN = EntityName.parse("client.admin")
KEY_B64 = re.search(r"key = (\S+)", (CAP / "keyring").read_text()).group(1)
KEY = CryptoKey.from_base64(KEY_B64)
ALL = ENTITY_TYPE_MON | ENTITY_TYPE_OSD | ENTITY_TYPE_MGR
T0 = 1_700_000_000.0  # our fake clock (Unix seconds)


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _stream(name: str, direction: str) -> bytes:
    return (CAP / "streams" / f"{name}.{direction}").read_bytes()


@functools.lru_cache(maxsize=None)
def _frames(name: str, direction: str):
    return list(iter_frames(_stream(name, direction)))


class MonSession:
    """The auth frames of one captured mon connection."""

    def __init__(self, name: str):
        self.name = name
        c, s = _frames(name, "c2s"), _frames(name, "s2c")
        self.c, self.s = c, s
        self.request = AuthRequest.decode(c[1].payload)
        self.request_more = AuthRequestMore.decode(c[2].payload).payload
        self.client_sig = c[3].payload
        self.challenge = AuthReplyMore.decode(s[1].payload).payload
        self.done = AuthDone.decode(s[2].payload)
        self.server_sig = s[3].payload
        # client challenge as librados drew it
        self.authenticate = CephXAuthenticate.decode(Decoder(self.request_more, 2))

    def signed_bytes(self, direction: str, upto_frame) -> bytes:
        raw = _stream(self.name, direction)
        return raw[: raw.index(upto_frame.raw) + len(upto_frame.raw)]


def _fixed_random(*values: int):
    vals = list(values)

    def rnd(n: int) -> bytes:
        assert n == 8
        return vals.pop(0).to_bytes(8, "little")

    return rnd


def _authenticated(name: str = "02-3300", want: int = ALL, clock=None):
    ms = MonSession(name)
    cl = CephxClient(ADMIN, KEY, want, random_bytes=_fixed_random(ms.authenticate.client_challenge),
                     clock=clock or Clock())
    assert cl.get_auth_request(None) == (ms.request.method, ms.request.preferred_modes, ms.request.payload)
    assert cl.handle_auth_reply_more(None, ms.challenge) == ms.request_more
    sk, secret = cl.handle_auth_done(None, ms.done.global_id, ms.done.con_mode, ms.done.payload)
    return ms, cl, sk, secret


# --- crypto ---------------------------------------------------------------------------


def test_keyring_key_roundtrip():
    assert KEY.type == 1 and len(KEY.secret) == 16
    assert KEY.to_base64() == KEY_B64
    with pytest.raises(ConfigError):
        CryptoKey.from_base64("AQA/UQFrymfHFxAAR/Xo")  # truncated
    with pytest.raises(ConfigError):
        CryptoKey.from_base64("not base64!")


def test_aes_envelope_roundtrip_and_bounds():
    for n in (0, 1, 6, 7, 15, 16, 100):
        body = bytes(range(n))
        ct = encrypt_enc_bl(KEY, body, usage=0)
        assert len(ct) % 16 == 0 and len(ct) > 9 + n - 16
        assert decrypt_enc_bl(KEY, ct, usage=0) == body
        assert decode_decrypt(KEY, Decoder(encode_encrypt(KEY, body, usage=0)), usage=0) == body
    with pytest.raises(AuthError):  # no AES ciphertext has that length
        decrypt_enc_bl(KEY, b"\0" * 15, usage=0)
    with pytest.raises(AuthError):
        decrypt_enc_bl(KEY, b"", usage=0)
    with pytest.raises(DecodeError):
        decode_decrypt(KEY, Decoder(b"\x20\0\0\0" + b"\0" * 16), usage=0)


def test_wrong_key_is_auth_error():
    other = CryptoKey(1, (0, 0), bytes(16))
    ct = encrypt_enc_bl(KEY, b"hello", usage=0)
    with pytest.raises(AuthError):
        decrypt_enc_bl(other, ct, usage=0)


def test_hmac_sha256_matches_captured_auth_signatures():
    # AUTH_SIGNATURE = HMAC-SHA256(session key, every byte received so far); computed by
    # librados (client) and the mon (server) in the capture.
    ms, cl, sk, _ = _authenticated()
    assert hmac_sha256(sk, ms.signed_bytes("s2c", ms.s[2])) == ms.client_sig
    assert hmac_sha256(sk, ms.signed_bytes("c2s", ms.c[2])) == ms.server_sig
    assert hmac_sha256(sk[::-1], ms.signed_bytes("s2c", ms.s[2])) != ms.client_sig


# --- mon handshake --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["02-3300", "07-3300"])
def test_mon_handshake_replays_capture(name):
    ms, cl, sk, secret = _authenticated(name)
    # crc mode: the mon sends no connection secret
    assert secret == b""
    assert len(sk) == 16
    assert cl.global_id == ms.done.global_id != 0
    assert cl.is_authenticated()
    for svc in (ENTITY_TYPE_AUTH, ENTITY_TYPE_MON, ENTITY_TYPE_OSD, ENTITY_TYPE_MGR):
        th = cl.tickets[svc]
        assert th.have_key_flag and th.ticket.blob and th.secret_id
        assert th.expires > T0 and T0 < th.renew_after < th.expires
    # signatures verify under the key we decrypted
    assert hmac_sha256(sk, ms.signed_bytes("s2c", ms.s[2])) == ms.client_sig


def test_auth_only_session_replays_capture():
    # librados' bootstrap connection wanted only the AUTH ticket (other_keys = AUTH).
    ms, cl, sk, _ = _authenticated("00-3300", want=0)
    assert ms.authenticate.other_keys == ENTITY_TYPE_AUTH
    assert set(cl.tickets) == {ENTITY_TYPE_AUTH}
    assert hmac_sha256(sk, ms.signed_bytes("s2c", ms.s[2])) == ms.client_sig


def test_key_proof_matches_capture():
    ms = MonSession("02-3300")
    server_challenge = Decoder(ms.challenge).raw(9)[1:]
    sc = int.from_bytes(server_challenge, "little")
    assert calc_client_server_challenge(KEY, sc, ms.authenticate.client_challenge) == ms.authenticate.key
    assert calc_client_server_challenge(KEY, sc + 1, ms.authenticate.client_challenge) != ms.authenticate.key


def test_secret_forms():
    for form in (KEY, KEY.to_bytes(), KEY.secret, KEY_B64):
        assert CephxClient(ADMIN, form).secret.secret == KEY.secret


def test_request_offers_crc_only():
    cl = CephxClient(ADMIN, KEY)
    method, modes, payload = cl.get_auth_request(None)
    assert method == CEPH_AUTH_CEPHX and modes == [CEPH_CON_MODE_CRC]
    assert CEPH_CON_MODE_SECURE not in modes


def test_wrong_key_names_entity():
    ms = MonSession("02-3300")
    wrong = CryptoKey(KEY.type, KEY.created, bytes(b ^ 0x5A for b in KEY.secret))
    cl = CephxClient(ADMIN, wrong, ALL, random_bytes=_fixed_random(1))
    cl.get_auth_request(None)
    cl.handle_auth_reply_more(None, ms.challenge)
    with pytest.raises(AuthError) as ei:
        cl.handle_auth_done(None, ms.done.global_id, ms.done.con_mode, ms.done.payload)
    assert "client.admin" in str(ei.value) and "wrong key" in str(ei.value)
    assert ei.value.errno == errno.EACCES
    assert not cl.is_authenticated()


def test_mon_refusal_and_bad_method():
    cl = CephxClient(ADMIN, KEY, random_bytes=_fixed_random(1))
    cl.get_auth_request(None)
    cl.handle_auth_reply_more(None, MonSession("02-3300").challenge)
    refusal = CephXResponseHeader(CEPHX_GET_AUTH_SESSION_KEY, -errno.EPERM).to_bytes()
    with pytest.raises(AuthError) as ei:
        cl.handle_auth_done(None, 0, 1, refusal)
    assert ei.value.errno == errno.EPERM and "client.admin" in str(ei.value)
    with pytest.raises(AuthError, match="modes"):
        cl.handle_auth_bad_method(None, 2, -errno.EOPNOTSUPP, [2], [CEPH_CON_MODE_SECURE])
    with pytest.raises(AuthError, match="method"):
        cl.handle_auth_bad_method(None, 2, -errno.EOPNOTSUPP, [1], [CEPH_CON_MODE_CRC])


def test_global_id_reclaim_on_reconnect():
    ms, cl, _, _ = _authenticated()
    auth_ticket = cl.tickets[ENTITY_TYPE_AUTH].ticket
    cl._random_bytes = _fixed_random(7)
    _, _, payload = cl.get_auth_request(None)
    d = Decoder(payload)
    assert d.u8() == cephx.CEPH_AUTH_MODE_MON
    assert EntityName.decode(d) == ADMIN
    assert d.u64() == ms.done.global_id
    req = cl.handle_auth_reply_more(None, ms.challenge)
    d = Decoder(req)
    assert CephXRequestHeader.decode(d).request_type == CEPHX_GET_AUTH_SESSION_KEY
    auth = CephXAuthenticate.decode(d)
    assert auth.struct_v == 3 and auth.old_ticket == auth_ticket


# --- service connections (authorizers) -----------------------------------------------


@pytest.mark.parametrize(
    "mon,svc_stream,svc",
    [
        ("02-3300", "04-6818", ENTITY_TYPE_OSD),
        ("02-3300", "03-6808", ENTITY_TYPE_MGR),
        ("07-3300", "09-6818", ENTITY_TYPE_OSD),
        ("07-3300", "08-6808", ENTITY_TYPE_MGR),
    ],
)
def test_authorizer_replays_capture(mon, svc_stream, svc):
    _, cl, _, _ = _authenticated(mon)
    c, s = _frames(svc_stream, "c2s"), _frames(svc_stream, "s2c")
    req = AuthRequest.decode(c[1].payload)
    more = AuthRequestMore.decode(c[2].payload).payload
    challenge = AuthReplyMore.decode(s[1].payload).payload
    done = AuthDone.decode(s[2].payload)

    # librados' authorizer: our ticket, and it decrypts with our service session key
    d = Decoder(req.payload)
    assert (d.u8(), d.u64(), d.u32()) == (1, cl.global_id, svc)
    assert CephXTicketBlob.decode(d) == cl.tickets[svc].ticket
    authorize = CephXAuthorize.from_bytes(decode_decrypt(cl.tickets[svc].session_key, d, usage=CEPHX_KEY_USAGE_AUTHORIZE))
    assert d.eof() and not authorize.have_challenge

    hooks = cl.authorizer_hooks(svc)
    cl._random_bytes = _fixed_random(authorize.nonce)
    assert hooks.get_auth_request(None) == (req.method, req.preferred_modes, req.payload)
    assert hooks.handle_auth_reply_more(None, challenge) == more
    sk, secret = hooks.handle_auth_done(None, done.global_id, done.con_mode, done.payload)
    assert sk == cl.tickets[svc].session_key.secret and secret == b""
    raw = _stream(svc_stream, "s2c")
    signed = raw[: raw.index(s[2].raw) + len(s[2].raw)]
    assert hmac_sha256(sk, signed) == c[3].payload


def test_authorizer_rejects_bad_nonce_reply():
    _, cl, _, _ = _authenticated()
    c, s = _frames("04-6818", "c2s"), _frames("04-6818", "s2c")
    done = AuthDone.decode(s[2].payload)
    hooks = cl.authorizer_hooks(ENTITY_TYPE_OSD)
    cl._random_bytes = _fixed_random(12345)  # not the nonce the OSD answered
    hooks.get_auth_request(None)
    with pytest.raises(AuthError, match="osd"):
        hooks.handle_auth_done(None, done.global_id, done.con_mode, done.payload)
    with pytest.raises(AuthError):
        hooks.handle_auth_bad_method(None, 2, -errno.EACCES, [2], [1])
    assert not cl.tickets[ENTITY_TYPE_OSD].have_key_flag  # invalidated for a refetch
    with pytest.raises(AuthError, match="no valid osd ticket"):
        hooks.get_auth_request(None)


# --- service tickets over MAuth, renewal ----------------------------------------------


def _split_auth_done(payload: bytes) -> tuple[bytes, bytes]:
    """Real AUTH_DONE payload -> (header + AUTH ticket reply only, extra tickets blob)."""
    d = Decoder(payload)
    d.skip(6)
    d.u8()
    for _ in range(d.u32()):
        d.skip(5)
        d.blob()
        d.u8()
        d.blob()
    head = payload[: d.pos]
    d.blob()  # connection secret
    return head, d.blob()


def test_service_ticket_reply():
    # The capture has no MAuthReply (librados got its tickets in AUTH_DONE), so we feed
    # the mon's real extra-tickets reply as a GET_PRINCIPAL_SESSION_KEY reply: same bytes.
    ms = MonSession("02-3300")
    head, extra = _split_auth_done(ms.done.payload)
    clock = Clock()
    cl = CephxClient(ADMIN, KEY, ALL, random_bytes=_fixed_random(ms.authenticate.client_challenge, 99),
                     clock=clock)
    cl.get_auth_request(None)
    cl.handle_auth_reply_more(None, ms.challenge)
    cl.handle_auth_done(None, ms.done.global_id, ms.done.con_mode, head)
    assert set(cl.tickets) == {ENTITY_TYPE_AUTH}
    assert cl.need_service_tickets()

    req = cl.build_service_ticket_request()
    d = Decoder(req)
    assert CephXRequestHeader.decode(d).request_type == CEPHX_GET_PRINCIPAL_SESSION_KEY
    assert (d.u8(), d.u64(), d.u32()) == (1, ms.done.global_id, ENTITY_TYPE_AUTH)
    assert CephXTicketBlob.decode(d) == cl.tickets[ENTITY_TYPE_AUTH].ticket
    az = CephXAuthorize.from_bytes(decode_decrypt(cl.session_key(), d, usage=CEPHX_KEY_USAGE_AUTHORIZE))
    assert az.nonce == 99
    assert CephXServiceTicketRequest.decode(d).keys == ALL
    assert d.eof()

    reply = CephXResponseHeader(CEPHX_GET_PRINCIPAL_SESSION_KEY, 0).to_bytes() + extra
    cl.handle_service_ticket_reply(reply)
    assert not cl.need_service_tickets() and cl.is_authenticated()
    _, full, _, _ = _authenticated()
    for svc in (ENTITY_TYPE_MON, ENTITY_TYPE_OSD, ENTITY_TYPE_MGR):
        assert cl.tickets[svc].ticket == full.tickets[svc].ticket
        assert cl.tickets[svc].session_key == full.tickets[svc].session_key

    with pytest.raises(AuthError):
        cl.handle_service_ticket_reply(b"", result=-errno.EACCES, result_msg="denied")
    with pytest.raises(AuthError):
        cl.handle_service_ticket_reply(CephXResponseHeader(CEPHX_GET_PRINCIPAL_SESSION_KEY, -13).to_bytes())


def test_ticket_renewal_and_expiry():
    clock = Clock()
    ms, cl, _, _ = _authenticated(clock=clock)
    osd = cl.tickets[ENTITY_TYPE_OSD]
    auth = cl.tickets[ENTITY_TYPE_AUTH]
    # Ceph's rule (CephXTicketHandler::verify_service_ticket_reply): expires = now +
    # validity, renew_after = expires - validity / 4; validity as the mon sent it.
    _, extra = _split_auth_done(ms.done.payload)
    d = Decoder(extra)
    d.u8()
    validity = {}
    for _ in range(d.u32()):
        svc = d.u32()
        d.u8()
        validity[svc] = CephXServiceTicket.from_bytes(decode_decrypt(auth.session_key, d, usage=CEPHX_KEY_USAGE_TICKET_SESSION_KEY)).validity[0]
        d.u8()
        d.blob()
    assert d.eof()
    v = validity[ENTITY_TYPE_OSD]
    assert (osd.expires, osd.renew_after) == (T0 + v, T0 + v - v / 4)
    assert not cl.need_service_tickets()
    assert cl.next_renewal() == osd.renew_after
    # the mon granted 1 h service tickets: renew after 3/4 of that
    clock.t = osd.renew_after
    assert cl.need_service_tickets()
    cl._random_bytes = _fixed_random(5, 8)
    d = Decoder(cl.build_service_ticket_request())
    assert CephXRequestHeader.decode(d).request_type == CEPHX_GET_PRINCIPAL_SESSION_KEY
    cl.build_authorizer(ENTITY_TYPE_OSD)  # still valid until it expires
    clock.t = osd.expires
    assert not cl.is_authenticated()
    with pytest.raises(AuthError):
        cl.build_authorizer(ENTITY_TYPE_OSD)
    # the AUTH ticket due for renewal: re-authenticate over MAuth presenting the old one
    clock.t = auth.renew_after
    cl._random_bytes = _fixed_random(6)
    d = Decoder(cl.build_service_ticket_request())
    assert CephXRequestHeader.decode(d).request_type == CEPHX_GET_AUTH_SESSION_KEY
    req = CephXAuthenticate.decode(d)
    assert req.old_ticket == auth.ticket and req.other_keys & ALL == ALL


# --- fuzz -----------------------------------------------------------------------------

_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _challenged_client() -> CephxClient:
    cl = CephxClient(ADMIN, KEY, ALL, random_bytes=_fixed_random(1, 2, 3, 4))
    cl.get_auth_request(None)
    cl.handle_auth_reply_more(None, MonSession("02-3300").challenge)
    return cl


_REAL_DONE = MonSession("02-3300").done.payload


@_FUZZ
@given(st.binary(max_size=300))
def test_fuzz_challenge(data):
    cl = CephxClient(ADMIN, KEY, random_bytes=_fixed_random(1))
    cl.get_auth_request(None)
    try:
        cl.handle_auth_reply_more(None, data)
    except DecodeError:
        pass


@_FUZZ
@given(st.binary(max_size=400))
def test_fuzz_auth_done_random(data):
    try:
        _challenged_client().handle_auth_done(None, 1, 1, data)
    except (DecodeError, AuthError):
        pass


@_FUZZ
@given(st.integers(0, len(_REAL_DONE) - 1), st.integers(0, 255), st.booleans())
def test_fuzz_auth_done_mutated(pos, byte, truncate):
    data = _REAL_DONE[:pos] if truncate else _REAL_DONE[:pos] + bytes([byte]) + _REAL_DONE[pos + 1 :]
    try:
        _challenged_client().handle_auth_done(None, 1, 1, data)
    except (DecodeError, AuthError):
        pass


@_FUZZ
@given(st.binary(max_size=300))
def test_fuzz_service_reply_and_authorizer(data):
    _, cl, _, _ = _authenticated()
    for op in (CEPHX_GET_PRINCIPAL_SESSION_KEY, CEPHX_GET_AUTH_SESSION_KEY):
        try:
            cl.handle_service_ticket_reply(Encoder().u16(op).s32(0).raw(data).bytes())
        except (DecodeError, AuthError):
            pass
    hooks = cl.authorizer_hooks(ENTITY_TYPE_OSD)
    if not cl.tickets[ENTITY_TYPE_OSD].have_key(cl._clock()):
        return
    cl._random_bytes = _fixed_random(1)
    hooks.get_auth_request(None)
    for fn in (lambda: hooks.handle_auth_reply_more(None, data), lambda: hooks.handle_auth_done(None, 1, 1, data)):
        try:
            fn()
        except (DecodeError, AuthError):
            pass
