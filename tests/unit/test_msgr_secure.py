"""msgr2.1 secure mode: AES-128-GCM frames, nonces, the connection secret and the
handshake, replayed against a real librados session captured in secure mode
(tests/data/msgr2-secure-capture, see its README) and against a scripted server."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import struct
from pathlib import Path

import pytest

from pyceph.auth.cephx import (
    CEPH_CON_MODE_CRC, CEPH_CON_MODE_SECURE, CephxClient, con_modes_from_names,
)
from pyceph.auth.crypto import CEPHX_KEY_USAGE_AUTHORIZE, CEPHX_KEY_USAGE_AUTHORIZE_REPLY, CryptoKey, decode_decrypt
from pyceph.auth.structs import (
    CephXAuthenticate, CephXAuthorize, CephXAuthorizeReply, CephXRequestHeader, CephXTicketBlob,
)
from pyceph.config import ClientConfig
from pyceph.encoding import Decoder, crc32c
from pyceph.errors import FeatureNotSupported, ProtocolError
from pyceph.mon.client import MonClient
from pyceph.msgr import frames as fr
from pyceph.msgr import protocol as P
from pyceph.msgr.crypto_onwire import GcmNonce, OnWireCrypto
from pyceph.msgr.message import Message
from pyceph.types import (
    ADDR_TYPE_ANY, ADDR_TYPE_MSGR2, ENTITY_TYPE_MON, ENTITY_TYPE_OSD, EntityAddr, EntityAddrvec, EntityName,
)

CAP = Path(__file__).resolve().parents[1] / "data" / "msgr2-secure-capture"
KEY = CryptoKey.from_base64(re.search(r"key = (\S+)", (CAP / "keyring").read_text()).group(1))
ADMIN = EntityName.parse("client.admin")
OBJ = (CAP / "obj.bin").read_bytes()
NAMES = sorted({p.stem for p in (CAP / "streams").iterdir()})
# The monitor session of each process (its AUTH_DONE brings the service tickets).
MON_OF = {n: ("02-30720" if n < "05" else "07-30720") for n in NAMES}


def _stream(name: str) -> tuple[bytes, bytes]:
    return (CAP / f"streams/{name}.c2s").read_bytes(), (CAP / f"streams/{name}.s2c").read_bytes()


class Captured:
    """One captured connection split at the mode switch: the plaintext frames of both
    sides, and readers holding the encrypted rest."""

    def __init__(self, name: str):
        self.name = name
        self.port = int(name.split("-")[1])
        self.c2s, self.s2c = _stream(name)
        self.s_plain, self.s_rest = self._plain(self.s2c, lambda fs: fs[-1].tag == fr.TAG_AUTH_DONE)
        nmore = sum(f.tag == fr.TAG_AUTH_REPLY_MORE for f in self.s_plain)
        self.c_plain, self.c_rest = self._plain(self.c2s, lambda fs: len(fs) == 2 + nmore)
        self.done = fr.decode_control(self.s_plain[-1])
        self.c_plain_len = 26 + sum(len(f.raw) for f in self.c_plain)

    @staticmethod
    def _plain(stream: bytes, last) -> tuple[list[fr.Frame], fr.FrameReader]:
        r = fr.FrameReader(keep_raw=True)
        r.push(stream[fr.parse_banner(stream)[2]:])
        frames: list[fr.Frame] = []
        while not frames or not last(frames):
            frames.append(r.next_frame())
        return frames, r

    def secure_frames(self, secret: bytes) -> tuple[list[fr.Frame], list[fr.Frame]]:
        """Every encrypted frame of (c2s, s2c), each direction decrypted as its receiver
        does; the whole stream must be consumed."""
        out = []
        for reader, crossed in ((self.c_rest, True), (self.s_rest, False)):
            copy = fr.FrameReader()
            copy._chunks, copy._off, copy._avail = type(reader._chunks)(reader._chunks), reader._off, reader._avail
            sr = fr.SecureFrameReader.take_over(copy, OnWireCrypto(secret, crossed=crossed))
            frames = sr.feed(b"")
            assert sr.buffered == 0
            out.append(frames)
        return out[0], out[1]


def _authenticate_of(cap: Captured) -> CephXAuthenticate:
    d = Decoder(fr.decode_control(cap.c_plain[2]).payload)
    CephXRequestHeader.decode(d)
    return CephXAuthenticate.decode(d)


def _authorizer_nonce(cap: Captured, cephx: CephxClient) -> tuple[int, int]:
    """(service, nonce) of the captured authorizer, decrypted with our service ticket."""
    d = Decoder(fr.decode_control(cap.c_plain[1]).payload)
    d.u8(), d.u64()
    service = d.u32()
    CephXTicketBlob.decode(d)
    au = CephXAuthorize.decode(Decoder(decode_decrypt(cephx.tickets[service].session_key, d, usage=CEPHX_KEY_USAGE_AUTHORIZE)))
    return service, au.nonce


class Randoms:
    """``random_bytes`` for CephxClient handing out librados' captured random values."""

    def __init__(self):
        self.values: list[int] = []

    def __call__(self, n: int) -> bytes:
        assert n == 8
        return self.values.pop(0).to_bytes(8, "little")


def _mon_cephx(mon: Captured, rnd: Randoms | None = None) -> tuple[CephxClient, bytes]:
    """Our cephx client run through the captured monitor handshake; returns it (holding
    the tickets) and the connection secret it decrypted."""
    rnd = rnd or Randoms()
    rnd.values.append(_authenticate_of(mon).client_challenge)
    cx = CephxClient(ADMIN, KEY, con_modes=(CEPH_CON_MODE_SECURE,), random_bytes=rnd)
    cx.get_auth_request(None)
    cx.handle_auth_reply_more(None, fr.decode_control(mon.s_plain[1]).payload)
    _, secret = cx.handle_auth_done(None, mon.done.global_id, mon.done.con_mode, mon.done.payload)
    return cx, secret


def _secret_of(cap: Captured) -> bytes:
    cx, secret = _mon_cephx(Captured(MON_OF[cap.name]))
    if cap.port == 30720:
        return _mon_cephx(cap)[1]
    service, nonce = _authorizer_nonce(cap, cx)
    th = cx.tickets[service]
    reply = CephXAuthorizeReply.decode(Decoder(decode_decrypt(th.session_key, Decoder(cap.done.payload), usage=CEPHX_KEY_USAGE_AUTHORIZE_REPLY)))
    assert reply.nonce_plus_one == nonce + 1
    return reply.connection_secret


# --- the capture: decrypt everything, re-encode byte-exact ----------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_capture_decrypts_and_reencodes_byte_exact(name):
    cap = Captured(name)
    assert cap.done.con_mode == P.CON_MODE_SECURE
    assert fr.decode_control(cap.c_plain[1]).preferred_modes == [P.CON_MODE_SECURE]
    secret = _secret_of(cap)
    assert len(secret) == 64
    c_frames, s_frames = cap.secure_frames(secret)
    assert [f.tag for f in c_frames[:2]] == [fr.TAG_AUTH_SIGNATURE, fr.TAG_CLIENT_IDENT]
    assert [f.tag for f in s_frames[:2]] == [fr.TAG_AUTH_SIGNATURE, fr.TAG_SERVER_IDENT]
    # Each side's signature is the HMAC (session key) of the other side's plaintext bytes.
    # Our encoder, fed the decrypted frames and the same nonces, gives the captured bytes:
    # layout, padding, nonce counters and tags all as Ceph makes them.
    for frames, stream, start, crossed in (
        (c_frames, cap.c2s, cap.c_plain_len, False),
        (s_frames, cap.s2c, 26 + sum(len(f.raw) for f in cap.s_plain), True),
    ):
        tx = OnWireCrypto(secret, crossed=crossed)
        wire = b"".join(b"".join(fr.encode_frame_secure_parts(f, tx)) for f in frames)
        assert wire == stream[start:]
        assert sum(fr.secure_wire_len([len(s) for s in f.segments]) for f in frames) == len(wire)


def test_capture_carries_the_object_both_ways():
    put, get = Captured("04-30738"), Captured("09-30738")
    c_frames, _ = put.secure_frames(_secret_of(put))
    ops = [fr.message_from_frame(f) for f in c_frames if f.tag == fr.TAG_MESSAGE]
    assert [m.data for m in ops] == [OBJ]
    _, s_frames = get.secure_frames(_secret_of(get))
    replies = [fr.message_from_frame(f) for f in s_frames if f.tag == fr.TAG_MESSAGE]
    assert [m.data for m in replies] == [OBJ]


# --- the capture replayed through ClientProtocol + our cephx ---------------------------------


class Recorder:
    """Forwards the auth hooks, remembering the connection secret."""

    def __init__(self, hooks):
        self.hooks = hooks
        self.secret = b""

    def get_auth_request(self, con):
        return self.hooks.get_auth_request(con)

    def handle_auth_reply_more(self, con, payload):
        return self.hooks.handle_auth_reply_more(con, payload)

    def handle_auth_done(self, con, global_id, con_mode, payload):
        key, self.secret = self.hooks.handle_auth_done(con, global_id, con_mode, payload)
        return key, self.secret

    def handle_auth_bad_method(self, con, *a):
        return self.hooks.handle_auth_bad_method(con, *a)


def _replay(cap: Captured, hooks, peer_type: int):
    hello = fr.decode_control(cap.c_plain[0])
    secret = _secret_of(cap)
    c_frames, s_frames = cap.secure_frames(secret)
    ident = fr.decode_control(c_frames[1])
    me = ident.addrs.addrs[0]
    rec = Recorder(hooks)
    proto = P.ClientProtocol(
        hello.peer_addr, rec, peer_type=peer_type, my_addr=EntityAddr(ADDR_TYPE_ANY, me.nonce, "", 0),
        features=ident.supported_features, required_features=ident.required_features,
        lossy=bool(ident.flags & P.MSG_CONNECT_LOSSY),
        session=P.Session(client_cookie=ident.cookie, global_seq=ident.global_seq),
        msgr2_required=fr.parse_banner(cap.c2s)[1],
    )
    out = proto.initiate()
    events = []
    for i in range(0, len(cap.s2c), 97):  # chunks that cut frames and GCM blocks
        events += proto.receive_data(cap.s2c[i : i + 97])
        out += proto.data_to_send()
    assert proto.state is P.State.READY and proto.con_mode == P.CON_MODE_SECURE
    assert rec.secret == secret
    # Byte-identical to librados through its encrypted AUTH_SIGNATURE (our cephx given
    # librados' random challenge/nonce; same HMAC, same key and nonce, same ciphertext).
    sig_end = cap.c_plain_len + fr.PREAMBLE_SECURE_LEN
    assert out[:sig_end] == cap.c2s[:sig_end]
    ours = fr.SecureFrameReader(OnWireCrypto(secret, crossed=True)).feed(out[cap.c_plain_len:])
    assert ours[0] == c_frames[0]
    # CLIENT_IDENT differs only in gid: we send the global_id AUTH_DONE gave us.
    assert fr.decode_control(ours[1]) == fr.ClientIdent(**{**vars(ident), "gid": cap.done.global_id})
    assert all(f.tag == fr.TAG_ACK for f in ours[2:])
    assert isinstance(events[0], P.Connected) and events[0].con_mode == P.CON_MODE_SECURE
    got = [e.message for e in events[1:]]
    want = [fr.message_from_frame(f) for f in s_frames if f.tag == fr.TAG_MESSAGE]
    assert [(m.type, m.seq, m.front, m.data) for m in got] == [(m.type, m.seq, m.front, m.data) for m in want]
    return proto, got


@pytest.mark.parametrize("name", ["02-30720", "07-30720"])
def test_replay_mon_session_secure(name):
    cap = Captured(name)
    rnd = Randoms()
    rnd.values.append(_authenticate_of(cap).client_challenge)
    cx = CephxClient(ADMIN, KEY, con_modes=(CEPH_CON_MODE_SECURE,), random_bytes=rnd)
    _, msgs = _replay(cap, cx, ENTITY_TYPE_MON)
    assert msgs and cx.is_authenticated()


@pytest.mark.parametrize("name", ["04-30738", "09-30738", "03-30746"])
def test_replay_service_session_secure(name):
    cap = Captured(name)
    rnd = Randoms()
    cx, _ = _mon_cephx(Captured(MON_OF[name]), rnd)
    cx.service_con_modes = (CEPH_CON_MODE_SECURE,)
    service, nonce = _authorizer_nonce(cap, cx)
    rnd.values.append(nonce)
    _, msgs = _replay(cap, cx.authorizer_hooks(service), service)
    if name == "09-30738":
        assert [m.data for m in msgs] == [OBJ]  # the MOSDOpReply of the read


def test_replay_detects_tampered_frames():
    cap = Captured("02-30720")
    sig_at = 26 + sum(len(f.raw) for f in cap.s_plain)
    for pos in (sig_at, sig_at + 40, sig_at + fr.PREAMBLE_SECURE_LEN - 1, len(cap.s2c) - 1):
        rnd = Randoms()
        rnd.values.append(_authenticate_of(cap).client_challenge)
        cx = CephxClient(ADMIN, KEY, con_modes=(CEPH_CON_MODE_SECURE,), random_bytes=rnd)
        proto = P.ClientProtocol(fr.decode_control(cap.c_plain[0]).peer_addr, cx, msgr2_required=0)
        proto.initiate()
        bad = bytearray(cap.s2c)
        bad[pos] ^= 0x20
        with pytest.raises(ProtocolError, match="integrity error"):
            proto.receive_data(bytes(bad))
        assert proto.state is P.State.CLOSED


# --- crypto_onwire ---------------------------------------------------------------------------------


SECRET = bytes(range(64))


def test_nonces_from_the_connection_secret():
    client, server = OnWireCrypto(SECRET), OnWireCrypto(SECRET, crossed=True)
    # key | nonce the client receives with | nonce the client sends with
    assert client.rx_nonce.next() == SECRET[16:28] and client.tx_nonce.next() == SECRET[28:40]
    assert server.tx_nonce.next() == SECRET[16:28] and server.rx_nonce.next() == SECRET[28:40]
    # msgr2.1: the le64 after the le32 "fixed" part counts GCM messages
    n = GcmNonce(struct.pack("<IQ", 7, (1 << 64) - 1))
    assert n.next() == struct.pack("<IQ", 7, (1 << 64) - 1)
    assert n.next() == struct.pack("<IQ", 7, 0)
    assert n.next() == struct.pack("<IQ", 7, 1)
    with pytest.raises(ProtocolError, match="40"):
        OnWireCrypto(SECRET[:39])
    assert "00" not in repr(client) and "00" not in repr(client.tx_nonce)


def test_counter_wrap_refused():
    n = GcmNonce(struct.pack("<IQ", 1, 5))
    n.counter = 4  # the one before the first: the next use would repeat nonce 5
    n.next()
    with pytest.raises(ProtocolError, match="out of GCM nonces"):
        n.next()


SHAPES = [
    (fr.TAG_AUTH_SIGNATURE, [bytes(32)]),
    (fr.TAG_WAIT, [b""]),
    (fr.TAG_HELLO, [os.urandom(48)]),
    (fr.TAG_HELLO, [os.urandom(49)]),
    (fr.TAG_CLIENT_IDENT, [os.urandom(200)]),
    (fr.TAG_MESSAGE, [os.urandom(41), os.urandom(100)]),
    (fr.TAG_MESSAGE, [os.urandom(41), os.urandom(17), os.urandom(3), os.urandom(4096)]),
    (fr.TAG_MESSAGE, [os.urandom(41), b"", b"", os.urandom(70000)]),  # streamed tail
    (fr.TAG_MESSAGE, [os.urandom(41), os.urandom(100), os.urandom(1)]),
]


def _wire_len(segs):
    return fr.secure_wire_len([len(s) for s in segs])


@pytest.mark.parametrize("tag,segs", SHAPES)
def test_secure_frame_round_trip_and_layout(tag, segs):
    tx, rx = OnWireCrypto(SECRET, crossed=True), OnWireCrypto(SECRET)
    frames = [fr.Frame(tag, list(segs)), fr.Frame(fr.TAG_ACK, [bytes(8)])]
    wire = b"".join(b"".join(fr.encode_frame_secure_parts(f, tx)) for f in frames)
    assert len(wire) == _wire_len(segs) + _wire_len([bytes(8)])
    # the first 96 bytes are the sealed preamble + inline segment 0; decrypt by hand
    first = OnWireCrypto(SECRET).decrypt(wire[:96])
    assert first[0] == tag and crc32c(first[:28], 0) == struct.unpack_from("<I", first, 28)[0]
    assert first[32 : 32 + min(48, len(segs[0]))] == segs[0][:48]
    for step in (1, 13, 96, len(wire)):
        r = fr.SecureFrameReader(OnWireCrypto(SECRET))
        got = []
        for i in range(0, len(wire), step):
            got += r.feed(wire[i : i + step])
        nseg = fr._segment_count([len(s) for s in segs])
        assert [g.segments for g in got] == [list(segs[:nseg]), [bytes(8)]]
        assert r.buffered == 0


def test_secure_reader_refuses_huge_lengths_before_reading_them():
    """A peer with the key but hostile intent: lengths are checked as soon as the
    96-byte block is verified, long before that many bytes could arrive."""
    tx = OnWireCrypto(SECRET, crossed=True)
    for lens, what in (([17 << 20, 0, 0, 0], "control segment"), ([41, 0, 0, 0xFFFFFFFF], "segment of")):
        pre = struct.pack("<BB" + "IH" * 4 + "2x", fr.TAG_MESSAGE, 4 if lens[3] else 1,
                          lens[0], 8, lens[1], 8, lens[2], 8, lens[3], 4096)
        pre += struct.pack("<I", crc32c(pre, 0))
        block = tx.encrypt(pre + bytes(48))
        r = fr.SecureFrameReader(OnWireCrypto(SECRET), max_segment_len=64 << 20)
        with pytest.raises(ProtocolError, match=what):
            r.feed(block)
        tx = OnWireCrypto(SECRET, crossed=True)


def test_secure_reader_checks_preamble_crc_and_late_status():
    tx = OnWireCrypto(SECRET, crossed=True)
    pre = bytearray(fr._encode_preamble(fr.Frame(fr.TAG_ACK, [bytes(8)]))[0])
    pre[28] ^= 1
    with pytest.raises(ProtocolError, match="preamble crc"):
        fr.SecureFrameReader(OnWireCrypto(SECRET)).feed(tx.encrypt(bytes(pre) + bytes(48)))
    tx = OnWireCrypto(SECRET, crossed=True)
    aborted = fr.Frame(fr.TAG_MESSAGE, [bytes(41), b"x"], late_status=fr.FRAME_LATE_STATUS_ABORTED)
    with pytest.raises(ProtocolError, match="aborted"):
        fr.SecureFrameReader(OnWireCrypto(SECRET)).feed(b"".join(fr.encode_frame_secure_parts(aborted, tx)))


def test_crc_frame_with_empty_segment_0_has_no_crc():
    # asm_crc_rev1 / kernel head_onwire_len(): an empty control segment has no crc
    raw = fr.encode_frame(fr.Wait().to_frame())
    assert len(raw) == fr.PREAMBLE_LEN
    assert fr.FrameReader().feed(raw + fr.encode_frame(fr.Ack(3).to_frame()))[1].payload == struct.pack("<Q", 3)


# --- handshake with a scripted secure server ------------------------------------------------------

SESSION_KEY = bytes(range(16))
SERVER = EntityAddr(ADDR_TYPE_MSGR2, 4636, "10.0.0.1", 6800)


class Auth:
    def __init__(self, modes=(P.CON_MODE_SECURE, P.CON_MODE_CRC), secret=SECRET):
        self.modes, self.secret = modes, secret

    def get_auth_request(self, con):
        return 2, list(self.modes), b"req"

    def handle_auth_reply_more(self, con, payload):
        return b"answer"

    def handle_auth_done(self, con, global_id, con_mode, payload):
        return SESSION_KEY, self.secret

    def handle_auth_bad_method(self, con, *a):
        raise AssertionError("unexpected")


def _server_handshake(client, con_mode=P.CON_MODE_SECURE):
    """Plaintext up to AUTH_DONE; returns (server tx crypto, server rx reader, client
    bytes seen, server bytes sent)."""
    sent = bytearray()
    recv = bytearray(client.initiate())

    def send(*frames):
        out = b"".join(fr.encode_frame(f.to_frame()) for f in frames)
        sent.extend(out)
        return out

    sent += fr.encode_banner(1, 0)
    client.receive_data(fr.encode_banner(1, 0))
    recv += client.data_to_send()
    client.receive_data(send(fr.Hello(ENTITY_TYPE_OSD, EntityAddr(ADDR_TYPE_MSGR2, 0, "10.0.0.9", 4000))))
    recv += client.data_to_send()
    return sent, recv, send


def test_secure_handshake_and_messages_with_scripted_server():
    client = P.ClientProtocol(SERVER, Auth(), peer_type=ENTITY_TYPE_OSD, global_id=9)
    sent, recv, send = _server_handshake(client)
    plain_from_client = bytes(recv)
    tx = OnWireCrypto(SECRET, crossed=True)
    rx = fr.SecureFrameReader(OnWireCrypto(SECRET, crossed=True))
    # AUTH_DONE is the last plaintext frame; the signature frame behind it in the same
    # read is already sealed.
    done = send(fr.AuthDone(9, P.CON_MODE_SECURE, b"done"))
    client_sig_want = hmac.new(SESSION_KEY, bytes(sent), hashlib.sha256).digest()
    server_sig = hmac.new(SESSION_KEY, plain_from_client, hashlib.sha256).digest()
    sealed = b"".join(fr.encode_frame_secure_parts(fr.AuthSignature(server_sig).to_frame(), tx))
    client.receive_data(done + sealed)
    got = rx.feed(client.data_to_send())
    assert [fr.decode_control(f) for f in got] == [fr.AuthSignature(client_sig_want), fr.ClientIdent(
        EntityAddrvec((client.my_addr,)), SERVER, 9, 1, client.features, client.required_features, 1, 0)]
    assert client.state is P.State.SESSION_CONNECTING and client.con_mode == P.CON_MODE_SECURE
    ident = fr.ServerIdent(EntityAddrvec((SERVER,)), 7, 99, (1 << 64) - 1, 0, 1, 0)
    ev = client.receive_data(b"".join(fr.encode_frame_secure_parts(ident.to_frame(), tx)))
    assert isinstance(ev[0], P.Connected) and ev[0].con_mode == P.CON_MODE_SECURE
    data = os.urandom(1 << 20)
    client.queue_message(Message(type=42, front=b"front", data=data))
    (f,) = rx.feed(client.data_to_send())
    assert fr.message_from_frame(f).data == data
    reply = Message(type=43, front=b"reply", data=data[:4097], seq=1)
    ev = client.receive_data(b"".join(fr.encode_frame_secure_parts(fr.frame_from_message(reply), tx)))
    assert ev[0].message.data == data[:4097]
    assert [g.tag for g in rx.feed(client.data_to_send())] == [fr.TAG_ACK]


def test_server_choosing_a_mode_we_did_not_offer():
    client = P.ClientProtocol(SERVER, Auth(modes=(P.CON_MODE_CRC,)), peer_type=ENTITY_TYPE_OSD)
    _, _, send = _server_handshake(client)
    with pytest.raises(FeatureNotSupported, match="server chose secure mode, we offered crc"):
        client.receive_data(send(fr.AuthDone(9, P.CON_MODE_SECURE, b"")))
    assert client.state is P.State.CLOSED


def test_secure_without_connection_secret_fails_cleanly():
    client = P.ClientProtocol(SERVER, Auth(secret=b""), peer_type=ENTITY_TYPE_OSD)
    _, _, send = _server_handshake(client)
    with pytest.raises(ProtocolError, match="connection secret"):
        client.receive_data(send(fr.AuthDone(9, P.CON_MODE_SECURE, b"")))


def test_crc_mode_unchanged_when_offered_both():
    client = P.ClientProtocol(SERVER, Auth(), peer_type=ENTITY_TYPE_OSD)
    sent, recv, send = _server_handshake(client)
    client.receive_data(send(fr.AuthDone(9, P.CON_MODE_CRC, b"")))
    (sig,) = fr.FrameReader().feed(client.data_to_send())
    assert fr.decode_control(sig) == fr.AuthSignature(hmac.new(SESSION_KEY, bytes(sent), hashlib.sha256).digest())


# --- mode negotiation inputs -----------------------------------------------------------------------


def test_con_modes_from_config(tmp_path):
    assert con_modes_from_names(("secure", "crc")) == (CEPH_CON_MODE_SECURE, CEPH_CON_MODE_CRC)
    assert con_modes_from_names(("legacy",)) == (CEPH_CON_MODE_CRC,)
    conf = tmp_path / "ceph.conf"
    conf.write_text("[global]\nmon host = 127.0.0.1:3300\nkey = AQA1EhdrlNd+EBAAvE5G8ttOJhJYmfGK5WiCqw==\n"
                    "ms client mode = secure\nms mon client mode = crc secure\n")
    monc = MonClient(ClientConfig.load(str(conf)))
    assert monc.auth.con_modes == (CEPH_CON_MODE_CRC, CEPH_CON_MODE_SECURE)
    assert monc.auth.service_con_modes == (CEPH_CON_MODE_SECURE,)
    for mode, want in (("prefer-crc", (1, 2)), ("prefer-secure", (2, 1)), ("secure", (2,)), ("crc", (1,))):
        monc = MonClient(ClientConfig.load(str(conf), overrides={"ms_mode": mode}))
        assert monc.auth.con_modes == want and monc.auth.service_con_modes == want
        assert monc.auth.authorizer_hooks(ENTITY_TYPE_OSD).client.service_con_modes == want


def test_bad_method_names_the_modes():
    cx = CephxClient(ADMIN, KEY, con_modes=(CEPH_CON_MODE_CRC,))
    with pytest.raises(Exception, match=r"offered \(crc\) not allowed by the server \(it allows secure"):
        cx.handle_auth_bad_method(None, 2, -95, [2], [CEPH_CON_MODE_SECURE])
