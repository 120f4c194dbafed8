"""ClientProtocol: replayed against captured Ceph sessions, and against a scripted server."""

from __future__ import annotations
from tests.shared_data import CORPUS as CORPUS_DIR, VECTORS as VECTORS_DIR

import asyncio
import hashlib
import hmac
import socket
from pathlib import Path

import pytest

from pyceph.auth.cephx import CephxClient
from pyceph.auth.crypto import CryptoKey
from pyceph.errors import (
    AuthError, ConnectionShutdown, FeatureNotSupported, NotConnected, ProtocolError, TimedOut,
)
from pyceph.msgr import frames as fr
from pyceph.msgr import protocol as P
from pyceph.msgr.connection import Connection
from pyceph.msgr.message import Message
from pyceph.types import (
    ADDR_TYPE_ANY, ADDR_TYPE_MSGR2, ENTITY_TYPE_CLIENT, ENTITY_TYPE_MON, ENTITY_TYPE_OSD,
    EntityAddr, EntityAddrvec, EntityName,
)

CAPTURE = (VECTORS_DIR / "msgr2-capture")
KEY = "AQA/UQFrymfHFxAAR/XoYeaDsI46zapztTufdA=="  # from CAPTURE/keyring
MON_STREAMS = ["00-3300", "01-3300", "02-3300", "05-3300", "06-3300", "07-3300"]


# --- replay of the real capture ---------------------------------------------------------


class ReplayAuth:
    """Sends librados' captured cephx payloads (so our bytes match the capture and the
    monitor's AUTH_SIGNATURE verifies); real cephx decrypts AUTH_DONE for the session key."""

    def __init__(self, c2s: list[fr.Frame]):
        self.req = fr.decode_control(c2s[1])
        self.more = fr.decode_control(c2s[2])
        self.cephx = CephxClient(EntityName.parse("client.admin"), CryptoKey.from_base64(KEY))

    def get_auth_request(self, con):
        self.cephx.get_auth_request(con)
        return self.req.method, self.req.preferred_modes, self.req.payload

    def handle_auth_reply_more(self, con, payload):
        self.cephx.handle_auth_reply_more(con, payload)
        return self.more.payload

    def handle_auth_done(self, con, global_id, con_mode, payload):
        return self.cephx.handle_auth_done(con, global_id, con_mode, payload)

    def handle_auth_bad_method(self, con, *a):
        raise AuthError("unexpected")


@pytest.mark.parametrize("name", MON_STREAMS)
def test_replay_mon_session(name):
    c2s_bytes = (CAPTURE / f"streams/{name}.c2s").read_bytes()
    s2c_bytes = (CAPTURE / f"streams/{name}.s2c").read_bytes()
    c2s = list(fr.iter_frames(c2s_bytes))
    s2c = list(fr.iter_frames(s2c_bytes))
    hello = fr.decode_control(c2s[0])
    ident = fr.decode_control(c2s[4])
    me = ident.addrs.addrs[0]
    lossy = bool(ident.flags & P.MSG_CONNECT_LOSSY)
    transitions = []
    proto = P.ClientProtocol(
        hello.peer_addr, ReplayAuth(c2s), peer_type=ENTITY_TYPE_MON,
        my_addr=EntityAddr(ADDR_TYPE_ANY, me.nonce, "", 0),
        features=ident.supported_features, required_features=ident.required_features,
        lossy=lossy, session=P.Session(client_cookie=ident.cookie),
        msgr2_required=fr.parse_banner(c2s_bytes)[1],  # librados requires nothing
        on_transition=lambda a, b: transitions.append(b),
    )
    out = proto.initiate()
    events = []
    for i in range(0, len(s2c_bytes), 61):  # odd chunking on purpose
        events += proto.receive_data(s2c_bytes[i : i + 61])
        out += proto.data_to_send()
    # Byte-identical to librados up to and including AUTH_SIGNATURE: the monitor's
    # signature over those bytes verified, and ours matches the one librados sent.
    sig_end = 26 + sum(len(f.raw) for f in c2s[:4])
    assert out[:sig_end] == c2s_bytes[:sig_end]
    # CLIENT_IDENT differs only in gid: like the kernel we send the global_id AUTH_DONE
    # gave us, where librados still sends -1.
    handshake_len = 26 + sum(len(f.raw) for f in c2s[:5])
    (our_ident,) = fr.FrameReader().feed(out[sig_end:handshake_len])
    global_id = fr.decode_control(s2c[2]).global_id
    assert fr.decode_control(our_ident) == fr.ClientIdent(**{**vars(ident), "gid": global_id})
    assert transitions == [
        P.State.HELLO, P.State.AUTH, P.State.AUTH_SIGNATURE, P.State.SESSION_CONNECTING, P.State.READY
    ]
    assert proto.state is P.State.READY
    assert proto.my_addr == me and proto.learned_addr == fr.decode_control(s2c[0]).peer_addr
    server = fr.decode_control(s2c[4])
    assert isinstance(events[0], P.Connected)
    assert events[0].peer_addrs == server.addrs
    assert events[0].features == ident.supported_features & server.supported_features
    got = [e.message for e in events[1:]]
    want = [fr.message_from_frame(f) for f in s2c[5:]]
    assert [(m.type, m.seq, m.front) for m in got] == [(m.type, m.seq, m.front) for m in want]
    assert all(m.src_type == ENTITY_TYPE_MON for m in got)
    # After each read that delivered messages we ACK the last seq (one ACK per read).
    acks = [fr.decode_control(f).seq for f in fr.FrameReader().feed(out[handshake_len:])]
    assert acks == sorted(set(acks)) and acks[-1] == len(want)


def test_replay_detects_tampered_server_signature():
    c2s = list(fr.iter_frames((CAPTURE / "streams/00-3300.c2s").read_bytes()))
    s2c = list(fr.iter_frames((CAPTURE / "streams/00-3300.s2c").read_bytes()))
    proto = P.ClientProtocol(fr.decode_control(c2s[0]).peer_addr, ReplayAuth(c2s), lossy=False, msgr2_required=0)
    proto.initiate()
    proto.receive_data(fr.encode_banner(1, 0) + b"".join(f.raw for f in s2c[:3]))
    assert proto.state is P.State.AUTH_SIGNATURE
    bad = bytearray(fr.decode_control(s2c[3]).signature)
    bad[0] ^= 1
    with pytest.raises(ProtocolError, match="AUTH_SIGNATURE"):
        proto.receive_data(fr.encode_frame(fr.AuthSignature(bytes(bad)).to_frame()))
    assert proto.state is P.State.CLOSED


# --- scripted in-memory server ------------------------------------------------------------

SESSION_KEY = bytes(range(16))
SERVER_ADDR = EntityAddr(ADDR_TYPE_MSGR2, 4636, "10.0.0.1", 6800)
CLIENT_SEEN = EntityAddr(ADDR_TYPE_MSGR2, 0, "10.0.0.9", 40000)


class FakeAuth:
    def __init__(self, key=SESSION_KEY, retry_ok=False):
        self.key = key
        self.calls = []
        self.retry_ok = retry_ok

    def get_auth_request(self, con):
        self.calls.append("request")
        return 2, [1], b"req"

    def handle_auth_reply_more(self, con, payload):
        self.calls.append(("more", payload))
        return b"answer"

    def handle_auth_done(self, con, global_id, con_mode, payload):
        self.calls.append(("done", global_id, con_mode, payload))
        return self.key, b""

    def handle_auth_bad_method(self, con, method, result, allowed_methods, allowed_modes):
        self.calls.append(("bad", method, result, allowed_methods, allowed_modes))
        if not self.retry_ok:
            raise AuthError("no usable method")


class FakeServer:
    """Speaks the server half of msgr2.1 crc mode, one step at a time."""

    def __init__(self, key=SESSION_KEY, peer_type=ENTITY_TYPE_OSD):
        self.key = key
        self.peer_type = peer_type
        self.sent = bytearray()  # everything we sent (for the client's signature)
        self.recv = bytearray()  # everything the client sent
        self.reader = fr.FrameReader(keep_raw=True)
        self.banner_seen = False

    def send(self, *payloads) -> bytes:
        out = b""
        for p in payloads:
            out += p if isinstance(p, bytes) else fr.encode_frame(p if isinstance(p, fr.Frame) else p.to_frame())
        self.sent += out
        return out

    def take(self, data: bytes) -> list[fr.Frame]:
        if not self.banner_seen:
            assert fr.parse_banner(data)[:2] == (1, 1)
            self.recv += data[:26]
            data = data[26:]
            self.banner_seen = True
        frames = self.reader.feed(data)
        for f in frames:
            self.recv += f.raw
        return frames

    def sig(self, data) -> bytes:
        return hmac.new(self.key, bytes(data), hashlib.sha256).digest()

    def ident(self, nonce=SERVER_ADDR.nonce, features=(1 << 64) - 1, flags=1) -> fr.ServerIdent:
        addr = EntityAddr(ADDR_TYPE_MSGR2, nonce, SERVER_ADDR.ip, SERVER_ADDR.port)
        return fr.ServerIdent(EntityAddrvec((addr,)), 7, 99, features, 0, flags, 0)


def _handshake(client=None, server=None, auth=None, upto="ready", check_sig=True):
    """Run the handshake; returns (client, server, events, frames the server got)."""
    auth = auth or FakeAuth()
    transitions = []
    client = client or P.ClientProtocol(
        SERVER_ADDR, auth, peer_type=ENTITY_TYPE_OSD, global_id=4391,
        on_transition=lambda a, b: transitions.append(b),
    )
    client.transitions = transitions
    server = server or FakeServer()
    got = server.take(client.initiate())
    assert got == []
    ev = client.receive_data(server.send(fr.encode_banner(1, 0)))
    got += server.take(client.data_to_send())
    ev += client.receive_data(server.send(fr.Hello(server.peer_type, CLIENT_SEEN), fr.AuthReplyMore(b"challenge")))
    got += server.take(client.data_to_send())
    if upto == "auth":
        return client, server, ev, got
    # The client's signature covers everything the server sent up to AUTH_DONE.
    ev += client.receive_data(server.send(fr.AuthDone(4391, P.CON_MODE_CRC, b"done")))
    expect_client_sig = server.sig(server.sent)
    got += server.take(client.data_to_send())
    assert (fr.decode_control(got[-1]) == fr.AuthSignature(expect_client_sig)) is check_sig
    if upto == "signature":
        return client, server, ev, got
    # The server's signature covers everything the client sent before its AUTH_SIGNATURE.
    ev += client.receive_data(server.send(fr.AuthSignature(server.sig(server.recv[: -len(got[-1].raw)]))))
    got += server.take(client.data_to_send())
    if upto == "ident":
        return client, server, ev, got
    ev += client.receive_data(server.send(server.ident()))
    got += server.take(client.data_to_send())
    return client, server, ev, got


def test_handshake_with_scripted_server():
    auth = FakeAuth()
    client, server, ev, got = _handshake(auth=auth)
    assert [f.tag for f in got] == [
        fr.HELLO, fr.AUTH_REQUEST, fr.AUTH_REQUEST_MORE, fr.AUTH_SIGNATURE, fr.CLIENT_IDENT
    ]
    assert fr.decode_control(got[0]) == fr.Hello(ENTITY_TYPE_CLIENT, SERVER_ADDR)
    assert fr.decode_control(got[1]) == fr.AuthRequest(2, [1], b"req")
    assert fr.decode_control(got[2]) == fr.AuthRequestMore(b"answer")
    ident = fr.decode_control(got[4])
    assert ident.target_addr == SERVER_ADDR and ident.gid == 4391
    assert ident.addrs.addrs[0] == EntityAddr(ADDR_TYPE_ANY, client.my_addr.nonce, CLIENT_SEEN.ip, 0)
    assert ident.flags == P.MSG_CONNECT_LOSSY and ident.cookie == 0
    assert auth.calls == ["request", ("more", b"challenge"), ("done", 4391, 1, b"done")]
    assert client.transitions == [
        P.State.HELLO, P.State.AUTH, P.State.AUTH_SIGNATURE, P.State.SESSION_CONNECTING, P.State.READY
    ]
    (conn,) = ev
    assert isinstance(conn, P.Connected) and conn.global_id == 7 and conn.lossy
    assert client.learned_addr == CLIENT_SEEN and client.peer_global_id == 7


def test_messages_acks_and_keepalives():
    client = P.ClientProtocol(SERVER_ADDR, FakeAuth(), peer_type=ENTITY_TYPE_OSD)
    early = Message(type=42, front=b"op1", data=b"x" * 70000, tid=1)
    client.queue_message(early)  # before READY: held, then sent with seq 1
    client, server, ev, got = _handshake(client=client)
    (m1,) = [fr.message_from_frame(f) for f in got if f.tag == fr.MESSAGE]
    assert (m1.seq, m1.type, m1.front, m1.data, m1.tid) == (1, 42, b"op1", b"x" * 70000, 1)
    # Two messages from the server in one read: delivered in order, one ACK for both.
    replies = [Message(type=43, front=b"r%d" % i, tid=i, seq=i, ack_seq=0) for i in (1, 2)]
    ev = client.receive_data(server.send(*[fr.frame_from_message(m) for m in replies]))
    assert [(e.message.seq, e.message.front, e.message.src_num) for e in ev] == [(1, b"r1", 7), (2, b"r2", 7)]
    assert [fr.decode_control(f) for f in server.take(client.data_to_send())] == [fr.Ack(2)]
    assert [m.seq for m in client.session.sent] == [1]
    # A duplicate is skipped; a gap is an error later.
    assert client.receive_data(server.send(fr.frame_from_message(replies[1]))) == []
    assert client.data_to_send() == b""
    # Our next message piggybacks ack_seq; the server's ACK discards what it has.
    out = client.send_message(Message(type=42, front=b"op2", tid=2))
    (m2,) = [fr.message_from_frame(f) for f in server.take(out)]
    assert (m2.seq, m2.ack_seq) == (2, 2)
    client.receive_data(server.send(fr.Ack(1)))
    assert [m.seq for m in client.session.sent] == [2]
    client.receive_data(server.send(fr.frame_from_message(Message(type=43, seq=3, ack_seq=2))))
    assert list(client.session.sent) == []
    server.take(client.data_to_send())
    # Keepalives both ways.
    (ka,) = server.take(client.send_keepalive((1700000000, 5)))
    assert fr.decode_control(ka) == fr.Keepalive2((1700000000, 5))
    assert client.receive_data(server.send(fr.Keepalive2Ack((1700000000, 5)))) == [P.KeepaliveAck((1700000000, 5))]
    client.receive_data(server.send(fr.Keepalive2((3, 4))))
    assert [fr.decode_control(f) for f in server.take(client.data_to_send())] == [fr.Keepalive2Ack((3, 4))]
    with pytest.raises(ProtocolError, match="seq"):
        client.receive_data(server.send(fr.frame_from_message(Message(type=43, seq=9))))
    assert client.state is P.State.CLOSED


def test_wrong_server_signature():
    client, server, _, got = _handshake(upto="signature")
    with pytest.raises(ProtocolError, match="AUTH_SIGNATURE"):
        client.receive_data(server.send(fr.AuthSignature(server.sig(b"something else"))))
    assert client.state is P.State.CLOSED
    assert client.receive_data(b"more") == []


def test_session_key_mismatch_detected():
    # Client and server disagree on the session key: the server's signature fails.
    client = P.ClientProtocol(SERVER_ADDR, FakeAuth(key=b"k" * 16))
    with pytest.raises(ProtocolError, match="AUTH_SIGNATURE"):
        _handshake(client=client, upto="ident", check_sig=False)


def test_auth_bad_method():
    client, server, ev, got = _handshake(auth=FakeAuth(retry_ok=True), upto="auth")
    client.receive_data(server.send(fr.AuthBadMethod(2, -13, [2], [1])))
    retry = server.take(client.data_to_send())
    assert [fr.decode_control(f) for f in retry] == [fr.AuthRequest(2, [1], b"req")]
    client, server, ev, got = _handshake(auth=FakeAuth(), upto="auth")
    with pytest.raises(AuthError):
        client.receive_data(server.send(fr.AuthBadMethod(2, -13, [1], [1])))
    assert client.state is P.State.CLOSED


@pytest.mark.parametrize(
    "frame,err",
    [
        (fr.ServerIdent(EntityAddrvec((SERVER_ADDR,)), 7, 1, 0, 0, 1, 0), FeatureNotSupported),
        (fr.IdentMissingFeatures(1 << 40), FeatureNotSupported),
        (fr.frame_from_message(Message(type=1, seq=1)), ProtocolError),
        (fr.Ack(1), ProtocolError),
    ],
)
def test_session_connect_errors(frame, err):
    client, server, _, _ = _handshake(upto="ident")
    assert client.state is P.State.SESSION_CONNECTING
    with pytest.raises(err):
        client.receive_data(server.send(frame))
    assert client.state is P.State.CLOSED


def test_wrong_peer_nonce_and_type():
    client, server, _, _ = _handshake(upto="ident")
    with pytest.raises(ProtocolError, match="wrong peer"):
        client.receive_data(server.send(server.ident(nonce=1)))
    with pytest.raises(ProtocolError, match="peer type"):
        _handshake(server=FakeServer(peer_type=ENTITY_TYPE_MON))


def test_secure_mode_refused():
    client, server, _, _ = _handshake(upto="auth")
    with pytest.raises(FeatureNotSupported):
        client.receive_data(server.send(fr.AuthDone(1, P.CON_MODE_SECURE, b"")))


def test_wait_closes():
    client, server, _, _ = _handshake(upto="ident")
    ev = client.receive_data(server.send(fr.Wait()))
    assert ev == [P.Wait(), P.Closed("server asked us to wait")]
    assert client.state is P.State.CLOSED


def test_msgr1_server_rejected():
    client = P.ClientProtocol(SERVER_ADDR, FakeAuth())
    client.initiate()
    with pytest.raises(ProtocolError, match="msgr1"):
        client.receive_data(b"ceph v027" + bytes(100))


def test_lossless_reconnect_resends_unacked():
    client = P.ClientProtocol(SERVER_ADDR, FakeAuth(), lossy=False)
    client, server, _, _ = _handshake(client=client, upto="ident")
    ev = client.receive_data(
        server.send(fr.ServerIdent(EntityAddrvec((SERVER_ADDR,)), 7, 99, (1 << 64) - 1, 0, 0, 0xC00C1E))
    )
    assert ev[0].lossy is False and client.session.server_cookie == 0xC00C1E
    client.queue_message(Message(type=42, front=b"a"))
    client.queue_message(Message(type=42, front=b"b"))
    client.receive_data(server.send(fr.frame_from_message(Message(type=43, seq=1))))
    server.take(client.data_to_send())
    client.receive_data(server.send(fr.Ack(1)))
    # Connection drops; a new protocol instance carries the session over.
    again = P.ClientProtocol(SERVER_ADDR, FakeAuth(), lossy=False, session=client.session, my_addr=client.my_addr)
    again, server2, _, got = _handshake(client=again, upto="ident")
    rec = fr.decode_control(got[-1])
    assert isinstance(rec, fr.SessionReconnect)
    assert (rec.server_cookie, rec.msg_seq) == (0xC00C1E, 1)
    assert again.state is P.State.SESSION_RECONNECTING
    ev = again.receive_data(server2.send(fr.SessionReconnectOk(0)))
    assert ev[0].reconnected
    resent = [fr.message_from_frame(f) for f in server2.take(again.data_to_send())]
    assert [(m.seq, m.front) for m in resent] == [(2, b"b")]


# --- asyncio Connection over loopback TCP --------------------------------------------------



class Ops(FakeAuth):
    def __init__(self):
        super().__init__()
        self.messages = []
        self.faults = []

    def dispatch(self, con, msg):
        self.messages.append(msg)

    def fault(self, con, exc):
        self.faults.append(exc)


async def _serve_one(reader, writer, script_done: asyncio.Event):
    """Scripted OSD: handshake, echo each MESSAGE back as type 43, then hang up."""
    server = FakeServer()
    server.reader.keep_raw = True
    writer.write(server.send(fr.encode_banner(1, 0)))
    await reader.readexactly(26)
    server.recv += fr.encode_banner()
    server.banner_seen = True
    frames: list[fr.Frame] = []

    async def next_frame():
        while not frames:
            frames.extend(server.take(await reader.read(65536)))
        return frames.pop(0)

    assert (await next_frame()).tag == fr.HELLO
    writer.write(server.send(fr.Hello(ENTITY_TYPE_OSD, CLIENT_SEEN)))
    assert (await next_frame()).tag == fr.AUTH_REQUEST
    writer.write(server.send(fr.AuthDone(4391, P.CON_MODE_CRC, b"")))
    sig = await next_frame()
    assert fr.decode_control(sig).signature == server.sig(server.sent)
    writer.write(server.send(fr.AuthSignature(server.sig(server.recv[: -len(sig.raw)]))))
    assert (await next_frame()).tag == fr.CLIENT_IDENT
    writer.write(server.send(server.ident()))
    seq = 0
    while True:
        f = await next_frame()
        if f.tag == fr.MESSAGE:
            m = fr.message_from_frame(f)
            seq += 1
            reply = Message(type=43, front=m.front, data=m.data, tid=m.tid, seq=seq)
            writer.write(fr.encode_frame(fr.frame_from_message(reply)))
            if m.front == b"bye":
                break
    await writer.drain()
    # Half-close and read until the client hangs up, so no RST discards our replies.
    writer.write_eof()
    while await reader.read(65536):
        pass
    writer.close()
    script_done.set()


def test_connection_end_to_end_loopback():
    async def main():
        done = asyncio.Event()
        srv = await asyncio.start_server(lambda r, w: _serve_one(r, w, done), "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        ops = Ops()
        addr = EntityAddr(ADDR_TYPE_MSGR2, SERVER_ADDR.nonce, "127.0.0.1", port)
        con = Connection(addr, ops, peer_type=ENTITY_TYPE_OSD, global_id=4391)
        # The scripted server advertises itself at SERVER_ADDR's nonce/ip; accept its nonce.
        con.protocol.peer_addr = EntityAddr(ADDR_TYPE_MSGR2, SERVER_ADDR.nonce, SERVER_ADDR.ip, SERVER_ADDR.port)
        info = await con.connect(timeout=5)
        assert info.global_id == 7 and con.state is P.State.READY and con.peer_global_id == 7
        big = bytes(range(256)) * 1024
        for i in range(20):
            con.send(Message(type=42, front=b"op%d" % i, data=big if i == 3 else b"", tid=i))
        con.send(Message(type=42, front=b"bye", tid=99))
        await asyncio.wait_for(done.wait(), 5)
        for _ in range(100):
            if ops.faults:
                break
            await asyncio.sleep(0.01)
        assert [m.tid for m in ops.messages] == list(range(20)) + [99], ops.faults
        assert ops.messages[3].data == big
        (fault,) = ops.faults  # server hung up: exactly one fault
        assert isinstance(fault, ConnectionShutdown)
        assert con.state is P.State.CLOSED
        with pytest.raises(ConnectionShutdown):
            con.send(Message(type=42))
        await con.close()
        srv.close()
        await srv.wait_closed()

    asyncio.run(main())


def test_connection_refused_names_address():
    async def main():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        con = Connection(EntityAddr(ADDR_TYPE_MSGR2, 0, "127.0.0.1", port), Ops())
        with pytest.raises(NotConnected, match=f"127.0.0.1:{port}"):
            await con.connect(timeout=5)

    asyncio.run(main())


def test_connection_handshake_timeout():
    async def main():
        async def silent(r, w):
            await asyncio.sleep(10)

        srv = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        con = Connection(EntityAddr(ADDR_TYPE_MSGR2, 0, "127.0.0.1", port), Ops())
        with pytest.raises(TimedOut):
            await con.connect(timeout=0.3)
        assert con.state is P.State.CLOSED
        srv.close()

    asyncio.run(main())
