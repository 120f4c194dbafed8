"""msgr1 ("ceph v027"): the sans-IO core replayed against a real librados session, and
its reply handling, signatures and limits on synthetic peers.

The capture (``tests/data/msgr1-capture``, see its README): Pacific 16.2.15's ``rados``
put and get of an 8 KiB object on a v1-only dev cluster, with the client key.
"""

from __future__ import annotations

import errno
import struct

import pytest

from pyceph.auth.cephx import (
    CEPH_AUTH_CEPHX, CEPHX_GET_AUTH_SESSION_KEY, CephxClient, calc_client_server_challenge,
)
from pyceph.auth.crypto import (
    CEPHX_KEY_USAGE_AUTHORIZE,
    CEPHX_KEY_USAGE_AUTHORIZE_CHALLENGE,
    CEPHX_KEY_USAGE_AUTHORIZE_REPLY,
    CryptoKey,
    decode_decrypt,
    decrypt_enc_bl,
)
from pyceph.auth.structs import (
    CephXAuthenticate, CephXAuthorize, CephXAuthorizeChallenge, CephXAuthorizeReply, CephXRequestHeader,
    CephXTicketBlob,
)
from pyceph.encoding import Decoder
from pyceph.errors import AuthError, FeatureNotSupported, ProtocolError
from pyceph.mon import messages as monm
from pyceph.msgr import features as F
from pyceph.msgr import v1
from pyceph.msgr.connection import Connection, choose_addr
from pyceph.msgr.message import Message
from pyceph.msgr.protocol import ClientProtocol, Closed, Connected, KeepaliveAck, Session, SessionReset, Wait
from pyceph.osd import messages as osdm
from pyceph.types import (
    ADDR_TYPE_ANY, ADDR_TYPE_LEGACY, ADDR_TYPE_MSGR2, ENTITY_TYPE_CLIENT, ENTITY_TYPE_MGR, ENTITY_TYPE_MON,
    ENTITY_TYPE_OSD, EntityAddr, EntityAddrvec, EntityName,
)
from tests import msgr1_capture as cap

ADMIN = EntityName.parse("client.admin")
ALL = ENTITY_TYPE_MON | ENTITY_TYPE_OSD | ENTITY_TYPE_MGR
# The put's connections (the get's are 05..09): three mon connections while hunting
# (librados keeps the first to authenticate), the mgr, the OSD holding the object.
PUT_MON, PUT_MGR, PUT_OSD = "02-15361", "03-15374", "04-15366"
GET_MON, GET_OSD = "07-15361", "09-15366"
OBJ = (cap.CAP / "obj.bin").read_bytes()


def _mon_msgs(name: str, direction: str) -> list[Message]:
    c = cap.split(name)
    data = c.c2s_messages if direction == "c2s" else c.s2c_messages
    return [p.to_message() for tag, p, _ in cap.items(data) if tag == v1.TAG_MSG]


def _replay_cephx(mon: str) -> CephxClient:
    """Our cephx client fed the monitor's MAuthReplies of ``mon`` (the client's own
    requests carried random challenges; checked against ours where they are fixed)."""
    auth = CephxClient(ADMIN, cap.KEY, ALL)
    auth.get_auth_request(None)
    sent = [monm.MAuth.from_message(m) for m in _mon_msgs(mon, "c2s") if m.type == monm.MAuth.MSG_TYPE]
    replies = [monm.MAuthReply.from_message(m) for m in _mon_msgs(mon, "s2c")
               if m.type == monm.MAuthReply.MSG_TYPE]
    # hello: protocol 0, our methods, name, no global_id yet -- byte-exact with librados'
    assert sent[0].protocol == 0
    assert sent[0].auth_payload == monm.encode_auth_hello(ADMIN, 0, (CEPH_AUTH_CEPHX,))
    # challenge -> CephXAuthenticate: librados' key proof matches our key
    assert replies[0].protocol == CEPH_AUTH_CEPHX and replies[0].result == 0
    auth.handle_auth_reply_more(None, replies[0].result_bl)
    d = Decoder(sent[1].auth_payload)
    assert CephXRequestHeader.decode(d).request_type == CEPHX_GET_AUTH_SESSION_KEY
    req = CephXAuthenticate.decode(d)
    assert req.key == calc_client_server_challenge(cap.KEY, auth.server_challenge, req.client_challenge)
    auth.handle_auth_done(None, replies[1].global_id, 1, replies[1].result_bl)
    assert auth.global_id == replies[1].global_id == replies[0].global_id
    for r in replies[2:]:
        auth.handle_service_ticket_reply(r.result_bl, r.result, r.result_msg)
    assert auth.is_authenticated()
    return auth


@pytest.fixture(scope="module")
def put_auth() -> CephxClient:
    return _replay_cephx(PUT_MON)


# -- the capture ----------------------------------------------------------------------


def test_capture_every_stream_decodes_with_valid_crcs():
    n_msgs = 0
    for name in cap.NAMES:
        c = cap.split(name)
        assert c.client_addr.nonce and c.client_addr.port == 0 and c.client_addr.ip == c.addr_for_me.ip
        assert c.replies[-1].tag in (v1.TAG_READY, v1.TAG_SEQ)
        for cm in c.connects:
            assert cm.host_type == ENTITY_TYPE_CLIENT and cm.features == F.PACIFIC_ALL
            want_proto = {cap.MON_PORT: 15, cap.MGR_PORT: 0}.get(c.port, 24)
            assert cm.protocol_version == want_proto == v1.PROTOCOL_VERSIONS.get(
                {cap.MON_PORT: ENTITY_TYPE_MON, cap.MGR_PORT: ENTITY_TYPE_MGR}.get(c.port, ENTITY_TYPE_OSD), 0)
        for data in (c.c2s_messages, c.s2c_messages):
            n_msgs += sum(1 for tag, _, _ in cap.items(data) if tag == v1.TAG_MSG)
    assert n_msgs == 64


def test_capture_reencodes_byte_exact_and_signatures_verify(put_auth):
    """Every message of the put's mon and OSD sessions re-encodes to librados' bytes
    (header crc, footer crcs, and -- on the OSD session -- the cephx signature computed
    from the OSD ticket's session key); the OSD's replies carry valid signatures."""
    osd_key = put_auth.tickets[ENTITY_TYPE_OSD].session_key
    for name, key in ((PUT_MON, None), (PUT_OSD, osd_key)):
        c = cap.split(name)
        for tag, p, raw in cap.items(c.c2s_messages):
            if tag == v1.TAG_MSG:
                m = p.to_message()
                assert p.footer_flags == (v1.MSG_FOOTER_COMPLETE | (v1.MSG_FOOTER_SIGNED if key else 0))
                assert b"".join(v1.encode_message_parts(m, p.header[9], p.header[10], key)) == raw
        for tag, p, _ in cap.items(c.s2c_messages):
            if tag == v1.TAG_MSG and key is not None:
                assert p.footer_flags & v1.MSG_FOOTER_SIGNED
                assert v1.message_signature(p, key) == p.sig
                assert v1.message_signature(p, key, cephx_v2=False) != p.sig
                assert v1.message_signature(p, CryptoKey(secret=bytes(16))) != p.sig


def test_capture_authorizer_challenge_and_reply(put_auth):
    """The OSD authorizer: built on our OSD ticket, answers the OSD's challenge
    (server_challenge + 1) and the OSD proves the session key (nonce + 1)."""
    th = put_auth.tickets[ENTITY_TYPE_OSD]
    c = cap.split(PUT_OSD)
    assert [r.tag for r in c.replies] == [v1.TAG_CHALLENGE_AUTHORIZER, v1.TAG_SEQ]
    first, second = (cm.authorizer for cm in c.connects)
    d = Decoder(first)
    assert (d.u8(), d.u64(), d.u32()) == (1, put_auth.global_id, ENTITY_TYPE_OSD)
    assert CephXTicketBlob.decode(d).secret_id == th.ticket.secret_id
    a1 = CephXAuthorize.decode(Decoder(decode_decrypt(th.session_key, d, usage=CEPHX_KEY_USAGE_AUTHORIZE)))
    assert not a1.have_challenge
    ch = CephXAuthorizeChallenge.decode(Decoder(decrypt_enc_bl(th.session_key, c.replies[0].authorizer, usage=CEPHX_KEY_USAGE_AUTHORIZE_CHALLENGE)))
    d = Decoder(second)
    d.u8(), d.u64(), d.u32(), CephXTicketBlob.decode(d)
    a2 = CephXAuthorize.decode(Decoder(decode_decrypt(th.session_key, d, usage=CEPHX_KEY_USAGE_AUTHORIZE)))
    assert a2.have_challenge and a2.server_challenge_plus_one == ch.server_challenge + 1
    reply = CephXAuthorizeReply.decode(Decoder(decode_decrypt(th.session_key, Decoder(c.replies[1].authorizer), usage=CEPHX_KEY_USAGE_AUTHORIZE_REPLY)))
    assert reply.nonce_plus_one == a2.nonce + 1


class _CapturedHooks:
    """Auth hooks handing out librados' captured authorizers (their nonces are random)."""

    def __init__(self, c: cap.Conn, key: CryptoKey):
        self.c, self.key, self.calls = c, key, []

    def get_auth_request(self, con):
        self.calls.append("request")
        return CEPH_AUTH_CEPHX, [1], self.c.connects[0].authorizer

    def handle_auth_reply_more(self, con, payload):
        self.calls.append("challenge")
        assert payload == self.c.replies[0].authorizer
        return self.c.connects[1].authorizer

    def handle_auth_done(self, con, global_id, con_mode, payload):
        self.calls.append("done")
        assert payload == self.c.replies[-1].authorizer
        return self.key.secret, b""

    def message_signing_key(self, con):
        return self.key


def _core_for(c: cap.Conn, hooks, peer_type, global_id):
    return v1.ClientProtocolV1(
        c.server_addr, hooks, peer_type=peer_type, global_id=global_id,
        my_addr=EntityAddr(ADDR_TYPE_ANY, c.client_addr.nonce), features=c.connects[0].features,
        lossy=bool(c.connects[0].flags & 1), session=Session(global_seq=c.connects[0].global_seq),
    )


@pytest.mark.parametrize("osd_stream", [PUT_OSD, GET_OSD])
def test_replay_osd_session_through_the_core(osd_stream):
    """Our core, given librados' authorizers, sends librados' handshake bytes exactly
    (banner, address, connect, connect after the challenge, the SEQ answer), its signed
    MOSDOp byte for byte, and takes the OSD's signed reply with the object."""
    auth = _replay_cephx(PUT_MON if osd_stream == PUT_OSD else GET_MON)
    key = auth.tickets[ENTITY_TYPE_OSD].session_key
    c = cap.split(osd_stream)
    hooks = _CapturedHooks(c, key)
    p = _core_for(c, hooks, ENTITY_TYPE_OSD, auth.global_id)
    sent = p.initiate()
    assert p.state is v1.State.CONNECTING
    events = []
    for i in range(0, c.s2c_handshake_len, 7):  # dribbled in small pieces
        events += p.receive_data(c.s2c[i:min(i + 7, c.s2c_handshake_len)])
        sent += p.data_to_send()
    assert sent == c.c2s[:c.c2s_handshake_len]
    assert hooks.calls == ["request", "challenge", "done"]
    assert p.state is v1.State.OPEN and p.signing
    (ev,) = events
    assert isinstance(ev, Connected) and ev.peer_features == F.PACIFIC_ALL and ev.lossy
    assert p.my_addr == EntityAddr(ADDR_TYPE_ANY, c.client_addr.nonce, "127.0.0.1", 0)
    (tag, op, raw), = cap.items(c.c2s_messages)
    assert p.send_message(op.to_message()) == raw
    events = p.receive_data(c.s2c_messages)
    (ev,) = events
    reply = osdm.MOSDOpReply.from_message(ev.message)
    assert ev.message.src_type == ENTITY_TYPE_OSD and reply.tid == op.header[1] and reply.result == 0
    if osd_stream == GET_OSD:
        assert ev.message.data == OBJ
    else:
        assert osdm.MOSDOp.from_message(op.to_message()).ops[-1].indata == OBJ
    assert p.data_to_send() == bytes((v1.TAG_ACK,)) + struct.pack("<Q", 1)


def test_replay_mon_session_through_the_core():
    """The mon session: no authorizer in connect, librados' keepalive and MAuth /
    MMonSubscribe messages re-sent byte for byte (src client.-1 until authenticated),
    and every monitor message (MAuthReply, MMonMap, MOSDMap, ...) decoded."""
    c = cap.split(PUT_MON)
    hooks = _CapturedHooks(c, cap.KEY)
    p = _core_for(c, hooks, ENTITY_TYPE_MON, None)
    sent = p.initiate()
    events = p.receive_data(c.s2c[:c.s2c_handshake_len])
    sent += p.data_to_send()
    assert sent == c.c2s[:c.c2s_handshake_len] and not hooks.calls and not p.signing
    assert isinstance(events[0], Connected)
    out = b""
    for tag, item, raw in cap.items(c.c2s_messages):
        if tag == v1.TAG_KEEPALIVE2:
            out += p.send_keepalive(item)
        else:
            if item.header[10] != (1 << 64) - 1:
                p.set_global_id(item.header[10])
            out += p.send_message(item.to_message())
    assert out == c.c2s_messages
    events = p.receive_data(c.s2c_messages)
    assert isinstance(events[0], KeepaliveAck)
    types = []
    for ev in events[1:]:
        m = ev.message
        assert m.src_type == ENTITY_TYPE_MON
        types.append(m.type)
        cls = {18: monm.MAuthReply, 4: monm.MMonMap, 41: monm.MOSDMap}.get(m.type)
        if cls is not None:
            cls.from_message(m)
    assert types == [18, 18, 4, 18, 62, 4, 1796, 41]


def test_capture_corruption_is_caught():
    c = cap.split(PUT_OSD)
    data = bytearray(c.s2c_messages)
    data[60] ^= 1  # inside the MOSDOpReply front
    sd = v1.StreamDecoder()
    sd.push(bytes(data))
    with pytest.raises(ProtocolError, match="front crc"):
        sd.next()
    data = bytearray(c.s2c_messages)
    data[5] ^= 1  # the header
    sd = v1.StreamDecoder()
    sd.push(bytes(data))
    with pytest.raises(ProtocolError, match="header crc"):
        sd.next()


def test_bad_signature_faults_the_connection(put_auth):
    """A message whose CRCs are right but whose signature is not (a forger without the
    session key) is refused."""
    key = put_auth.tickets[ENTITY_TYPE_OSD].session_key
    c = cap.split(PUT_OSD)
    p = _core_for(c, _CapturedHooks(c, key), ENTITY_TYPE_OSD, put_auth.global_id)
    p.initiate()
    p.receive_data(c.s2c[:c.s2c_handshake_len])
    (_, reply, _), = cap.items(c.s2c_messages)
    forged = b"".join(v1.encode_message_parts(reply.to_message(), ENTITY_TYPE_OSD, 1, CryptoKey(secret=bytes(16))))
    with pytest.raises(ProtocolError, match="bad message signature"):
        p.receive_data(forged)
    assert p.state is v1.State.CLOSED


# -- synthetic peers --------------------------------------------------------------------

PEER = EntityAddr(ADDR_TYPE_LEGACY, 77, "10.0.0.1", 6800)
ME = EntityAddr(ADDR_TYPE_LEGACY, 0, "10.0.0.9", 40000)
KEY = CryptoKey(secret=bytes(range(16)))


class _Hooks:
    def __init__(self):
        self.requests = 0
        self.bad = 0

    def get_auth_request(self, con):
        self.requests += 1
        return CEPH_AUTH_CEPHX, [1], b"authorizer%d" % self.requests

    def handle_auth_reply_more(self, con, payload):
        return b"answered:" + payload

    def handle_auth_done(self, con, global_id, con_mode, payload):
        if payload != b"good reply":
            raise AuthError("bad authorizer reply")
        return KEY.secret, b""

    def handle_auth_bad_method(self, con, method, result, allowed_methods, allowed_modes):
        self.bad += 1
        raise AuthError(f"cephx: osd for client.admin: authentication failed with result {result}")

    def message_signing_key(self, con):
        return KEY


def _server_banner(peer=PEER) -> bytes:
    return v1.BANNER + v1.encode_entity_addr(peer) + v1.encode_entity_addr(ME)


def _reply(tag, authorizer=b"", features=F.SUPPORTED_DEFAULT, gseq=0, cseq=0, flags=1, proto=24) -> bytes:
    return v1.ConnectReply(tag, features, gseq, cseq, proto, flags, authorizer).encode()


def _connects(out: bytes) -> list[v1.ConnectMsg]:
    """The connect messages in a client's output after the banner and address."""
    res = []
    pos = 0
    while pos < len(out):
        alen = v1.CONNECT.unpack_from(out, pos)[6]
        res.append(v1.ConnectMsg.decode(out[pos:pos + v1.CONNECT.size + alen]))
        pos += v1.CONNECT.size + alen
    return res


def _opened(peer_type=ENTITY_TYPE_OSD, hooks=None, **kw):
    p = v1.ClientProtocolV1(PEER, hooks or _Hooks(), peer_type=peer_type, global_id=4242, **kw)
    assert p.initiate() == v1.BANNER
    p.receive_data(_server_banner())
    out = p.data_to_send()
    assert v1.decode_entity_addr(out[:v1.ENTITY_ADDR_LEN]).ip == "10.0.0.9"
    return p, out[v1.ENTITY_ADDR_LEN:]


def test_osd_connect_carries_the_authorizer_and_opens_signed():
    p, out = _opened()
    (cm,) = _connects(out)
    assert (cm.host_type, cm.protocol_version, cm.authorizer_protocol, cm.authorizer, cm.flags) == (
        ENTITY_TYPE_CLIENT, 24, CEPH_AUTH_CEPHX, b"authorizer1", 1)
    ev = p.receive_data(_reply(v1.TAG_READY, b"good reply", gseq=9, cseq=1))
    assert isinstance(ev[0], Connected) and p.state is v1.State.OPEN and p.signing
    assert (p.session.peer_global_seq, p.session.connect_seq) == (9, 1)
    parts = p.send_message(Message(type=42, front=b"op", tid=7))
    rm = v1.StreamDecoder()
    rm.push(parts)
    tag, raw = rm.next()
    assert raw.header[0] == 1 and raw.header[10] == 4242 and raw.footer_flags == 5
    assert v1.message_signature(raw, KEY) == raw.sig


def test_challenge_resends_connect_with_the_answer():
    p, _ = _opened()
    p.receive_data(_reply(v1.TAG_CHALLENGE_AUTHORIZER, b"chal"))
    (cm,) = _connects(p.data_to_send())
    assert cm.authorizer == b"answered:chal"
    p.receive_data(_reply(v1.TAG_READY, b"good reply"))
    assert p.state is v1.State.OPEN


def test_bad_authorizer_reply_is_an_auth_error():
    p, _ = _opened()
    with pytest.raises(AuthError):
        p.receive_data(_reply(v1.TAG_READY, b"forged"))
    assert p.state is v1.State.CLOSED
    p, _ = _opened()
    with pytest.raises(AuthError, match="no authorizer reply"):
        p.receive_data(_reply(v1.TAG_READY))


def test_badauthorizer_retries_once_with_a_fresh_authorizer():
    hooks = _Hooks()
    p, _ = _opened(hooks=hooks)
    p.receive_data(_reply(v1.TAG_BADAUTHORIZER))
    (cm,) = _connects(p.data_to_send())
    assert cm.authorizer == b"authorizer2"
    with pytest.raises(AuthError, match=f"result {-errno.EACCES}"):
        p.receive_data(_reply(v1.TAG_BADAUTHORIZER))
    assert hooks.bad == 1 and p.state is v1.State.CLOSED


def test_retry_global_retry_session_and_reset():
    p, out = _opened(session=Session(global_seq=5))
    assert _connects(out)[0].global_seq == 5
    p.receive_data(_reply(v1.TAG_RETRY_GLOBAL, gseq=40))
    assert _connects(p.data_to_send())[0].global_seq == 41
    p.receive_data(_reply(v1.TAG_RETRY_SESSION, cseq=3))
    assert _connects(p.data_to_send())[0].connect_seq == 3
    p.queue_message(Message(type=42))
    ev = p.receive_data(_reply(v1.TAG_RESETSESSION))
    assert isinstance(ev[0], SessionReset)
    cm = _connects(p.data_to_send())[0]
    assert (cm.global_seq, cm.connect_seq) == (41, 0)
    ev = p.receive_data(_reply(v1.TAG_SEQ, b"good reply", cseq=0) + struct.pack("<Q", 0))
    assert isinstance(ev[0], Connected) and ev[0].reconnected
    out = p.data_to_send()
    assert out[:8] == struct.pack("<Q", 0) and out[8] == v1.TAG_MSG  # our in_seq, then the queued message


def test_wait_features_badprotover_and_wrong_peer():
    p, _ = _opened()
    ev = p.receive_data(_reply(v1.TAG_WAIT))
    assert isinstance(ev[0], Wait) and isinstance(ev[1], Closed) and p.state is v1.State.CLOSED
    p, _ = _opened()
    with pytest.raises(FeatureNotSupported):
        p.receive_data(_reply(v1.TAG_FEATURES, features=F.SUPPORTED_DEFAULT | (1 << 63)))
    p, _ = _opened()
    with pytest.raises(ProtocolError, match="protocol version"):
        p.receive_data(_reply(v1.TAG_BADPROTOVER))
    p = v1.ClientProtocolV1(PEER, _Hooks(), peer_type=ENTITY_TYPE_OSD)
    p.initiate()
    with pytest.raises(ProtocolError, match="wrong peer"):
        p.receive_data(_server_banner(EntityAddr(ADDR_TYPE_LEGACY, 78, "10.0.0.1", 6800)))
    p = v1.ClientProtocolV1(PEER, _Hooks(), peer_type=ENTITY_TYPE_OSD)
    p.initiate()
    with pytest.raises(ProtocolError, match="msgr2"):
        p.receive_data(b"ceph v2\n" + bytes(40))
    p, _ = _opened()
    with pytest.raises(FeatureNotSupported):
        p.required_features = 1 << 62
        p.receive_data(_reply(v1.TAG_READY, b"good reply"))


def test_mon_connect_has_no_authorizer_and_keepalives():
    hooks = _Hooks()
    p, out = _opened(peer_type=ENTITY_TYPE_MON, hooks=hooks)
    (cm,) = _connects(out)
    assert (cm.protocol_version, cm.authorizer_protocol, cm.authorizer) == (15, 0, b"")
    p.receive_data(_reply(v1.TAG_READY, proto=15))
    assert hooks.requests == 0 and not p.signing
    assert p.send_keepalive((5, 6)) == bytes((v1.TAG_KEEPALIVE2,)) + struct.pack("<II", 5, 6)
    ev = p.receive_data(bytes((v1.TAG_KEEPALIVE2_ACK,)) + struct.pack("<II", 5, 6)
                        + bytes((v1.TAG_KEEPALIVE2,)) + struct.pack("<II", 8, 9))
    assert ev == [KeepaliveAck((5, 6))]
    assert p.data_to_send() == bytes((v1.TAG_KEEPALIVE2_ACK,)) + struct.pack("<II", 8, 9)
    # ACK from the peer drops our sent messages; CLOSE ends the connection
    p.queue_message(Message(type=15))
    assert len(p.session.sent) == 1
    p.receive_data(bytes((v1.TAG_ACK,)) + struct.pack("<Q", 1))
    assert not p.session.sent
    ev = p.receive_data(bytes((v1.TAG_CLOSE,)))
    assert isinstance(ev[0], Closed) and p.state is v1.State.CLOSED
    p, _ = _opened(peer_type=ENTITY_TYPE_MON)
    p.receive_data(_reply(v1.TAG_READY, proto=15, features=F.SUPPORTED_DEFAULT & ~F.MSGR_KEEPALIVE2))
    assert p.send_keepalive() == bytes((v1.TAG_KEEPALIVE,))


def _mon_msg(seq, front=b"x", src=(ENTITY_TYPE_MON, 0)) -> bytes:
    m = Message(type=4, front=front)
    m.seq = seq
    return b"".join(v1.encode_message_parts(m, *src))


def test_message_sequence_rules():
    p, _ = _opened(peer_type=ENTITY_TYPE_MON)
    p.receive_data(_reply(v1.TAG_READY, proto=15))
    ev = p.receive_data(_mon_msg(1) + _mon_msg(1) + _mon_msg(2))
    assert [e.message.seq for e in ev] == [1, 2]  # the duplicate is skipped
    assert p.data_to_send() == bytes((v1.TAG_ACK,)) + struct.pack("<Q", 2)
    with pytest.raises(ProtocolError, match="bad message seq"):
        p.receive_data(_mon_msg(4))
    p, _ = _opened(peer_type=ENTITY_TYPE_MON)
    p.receive_data(_reply(v1.TAG_READY, proto=15))
    with pytest.raises(ProtocolError, match="entity type"):
        p.receive_data(_mon_msg(1, src=(ENTITY_TYPE_OSD, 1)))


def test_oversized_lengths_are_refused_before_buffering():
    m = Message(type=4, front=b"x")
    m.seq = 1
    hdr = bytearray(v1.encode_message_parts(m, 1, 0)[0][1:])
    struct.pack_into("<I", hdr, 30, 1 << 30)  # data_len
    struct.pack_into("<I", hdr, v1.HEADER_CRC_OFF, v1.crc32c(bytes(hdr[:v1.HEADER_CRC_OFF]), 0))
    sd = v1.StreamDecoder()
    sd.push(bytes((v1.TAG_MSG,)) + bytes(hdr))
    with pytest.raises(ProtocolError, match="too long"):
        sd.next()


def test_choose_addr_rules():
    v2 = EntityAddr(ADDR_TYPE_MSGR2, 1, "10.0.0.1", 3300)
    legacy = EntityAddr(ADDR_TYPE_LEGACY, 1, "10.0.0.1", 6789)
    both, only1, only2 = EntityAddrvec((v2, legacy)), EntityAddrvec((legacy,)), EntityAddrvec((v2,))
    assert choose_addr(both, ("legacy",)) == legacy
    assert choose_addr(both, ("crc",)) == v2
    assert choose_addr(only1, ("crc",)) == legacy
    assert choose_addr(only1, ("crc", "secure")) == legacy
    assert choose_addr(only1, ("secure",)) is None  # msgr1 has no encryption
    assert choose_addr(only2, ("legacy",)) is None


def test_connection_picks_the_core_by_address_type():
    c1 = Connection(PEER, _Hooks(), peer_type=ENTITY_TYPE_OSD)
    c2 = Connection(EntityAddr(ADDR_TYPE_MSGR2, 77, "10.0.0.1", 6801), _Hooks(), peer_type=ENTITY_TYPE_OSD)
    assert (c1.proto, type(c1.protocol)) == ("msgr1", v1.ClientProtocolV1)
    assert (c2.proto, type(c2.protocol)) == ("msgr2", ClientProtocol)
    assert not c1.ready and not c1.closed and not c2.ready
