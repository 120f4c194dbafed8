"""Pre-authentication bounds: a peer that claims a huge frame or message gets a protocol
error as soon as the lengths arrive, before anything near that size is buffered.

Issue 9: anything answering on a monitor's address made a client buffer ~200 MB per
connection attempt (control frames' data segments were buffered whole before any check).
Each case feeds a preamble (msgr2) or header (msgr1) claiming far more than the state
allows, plus the first 64 KiB of its "body", and checks the error and, with
tracemalloc, that the core allocated next to nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import tracemalloc

import pytest

from pyceph.encoding import crc32c
from pyceph.errors import ProtocolError
from pyceph.msgr import frames as fr
from pyceph.msgr import protocol as P
from pyceph.msgr import v1
from pyceph.msgr.crypto_onwire import OnWireCrypto
from pyceph.msgr.message import Message
from pyceph.types import ENTITY_TYPE_MON, ENTITY_TYPE_OSD, EntityAddrvec
from tests.unit.test_msgr1 import _opened, _reply
from tests.unit.test_msgr_protocol import _handshake
from tests.unit.test_msgr_secure import SECRET, SERVER, SESSION_KEY, Auth, _server_handshake

MB = 1 << 20
BODY = bytes(64 << 10)  # what a hostile peer sends after its preamble, before we react
ALLOC_LIMIT = 512 << 10  # bytes the core may allocate while refusing


def preamble(tag: int, lens: tuple[int, int, int, int]) -> bytes:
    """A crc-mode preamble claiming segment lengths ``lens`` (valid crc)."""
    nseg = max((i + 1 for i, n in enumerate(lens) if n), default=1)
    raw = struct.pack("<BB" + "IH" * 4 + "2x", tag, nseg, lens[0], 8, lens[1], 8, lens[2], 8, lens[3], 4096)
    return raw + struct.pack("<I", crc32c(raw, 0))


def refused(feed, data: bytes, match: str) -> int:
    """Feed ``data``; expect ProtocolError matching ``match``; return the peak bytes allocated."""
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match=match):
            feed(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# Claims a hostile "monitor" can make before authentication (tag, lens, error).
HOSTILE = [
    pytest.param(fr.TAG_AUTH_DONE, (200 * MB, 0, 0, 0), "during the handshake", id="control-200MB"),
    pytest.param(fr.TAG_AUTH_REPLY_MORE, (1 * MB, 0, 0, 0), "during the handshake", id="control-1MB"),
    pytest.param(fr.TAG_HELLO, (40, 16 * MB, 16 * MB, 64 * MB), "a control frame has one", id="control-with-data"),
    pytest.param(fr.TAG_MESSAGE, (41, 16 * MB, 16 * MB, 64 * MB), "before the session is established",
                 id="message-112MB"),
    pytest.param(fr.TAG_MESSAGE, (41, 0, 0, 0xFFFFFFFF), "before the session is established", id="message-4GB"),
]


def _client_in(state: str) -> P.ClientProtocol:
    if state == "hello":
        client = P.ClientProtocol(SERVER, Auth(), peer_type=ENTITY_TYPE_OSD)
        client.initiate()
        client.receive_data(fr.encode_banner(1, 0))
        return client
    client, *_ = _handshake(upto=state)
    return client


@pytest.mark.parametrize("state,want", [("hello", P.State.HELLO), ("auth", P.State.AUTH),
                                        ("signature", P.State.AUTH_SIGNATURE),
                                        ("ident", P.State.SESSION_CONNECTING)])
@pytest.mark.parametrize("tag,lens,match", HOSTILE)
def test_msgr2_crc_handshake_refuses_huge_claims(state, want, tag, lens, match):
    client = _client_in(state)
    assert client.state is want
    peak = refused(client.receive_data, preamble(tag, lens) + BODY, match)
    assert peak < ALLOC_LIMIT, f"{peak} bytes allocated while refusing"
    assert client.state is P.State.CLOSED


def test_msgr2_banner_in_the_same_read_as_a_huge_claim():
    client = P.ClientProtocol(SERVER, Auth(), peer_type=ENTITY_TYPE_OSD)
    client.initiate()
    peak = refused(client.receive_data, fr.encode_banner(1, 0) + preamble(fr.TAG_HELLO, (200 * MB, 0, 0, 0)) + BODY,
                   "during the handshake")
    assert peak < ALLOC_LIMIT


def test_msgr2_handshake_bytes_are_bounded_in_total():
    """Endless AUTH_REPLY_MORE frames (each under the per-frame bound) end the handshake."""
    client = _client_in("auth")
    more = fr.encode_frame(fr.AuthReplyMore(bytes(60 << 10)).to_frame())
    with pytest.raises(ProtocolError, match="handshake exceeds"):
        for _ in range(fr.MAX_PREAUTH_TOTAL // len(more) + 2):
            client.receive_data(more)
    assert client.state is P.State.CLOSED


def test_msgr2_ready_takes_ceph_sized_messages_and_refuses_bigger():
    """After the handshake Ceph's bounds apply (kernel CEPH_MSG_MAX_*_LEN): a 1 MiB data
    segment is awaited, more than 64 MiB of data or 16 MiB of front is refused."""
    client, *_ = _handshake()
    assert client.state is P.State.READY
    assert client.receive_data(preamble(fr.TAG_MESSAGE, (41, 100, 0, MB))) == []
    assert client.state is P.State.READY and client._reader.buffered > 0
    for lens, match in (((41, 0, 0, 64 * MB + 1), "data segment of"), ((41, 16 * MB + 1, 0, 0), "front segment of"),
                        ((16 * MB + 1, 0, 0, 0), "control segment of"),
                        ((41, 0, 0, 0), None)):
        client, *_ = _handshake()
        if match is None:  # a control frame may not carry segments even when READY
            data = preamble(fr.TAG_ACK, (8, 0, 0, 4096))
            match = "a control frame has one"
        else:
            data = preamble(fr.TAG_MESSAGE, lens)
        assert refused(client.receive_data, data + BODY, match) < ALLOC_LIMIT


def _secure_client(upto: str):
    client = P.ClientProtocol(SERVER, Auth(), peer_type=ENTITY_TYPE_OSD, global_id=9)
    sent, recv, send = _server_handshake(client)
    tx = OnWireCrypto(SECRET, crossed=True)
    done = send(fr.AuthDone(9, P.CON_MODE_SECURE, b"done"))
    client.receive_data(done)
    assert client.state is P.State.AUTH_SIGNATURE and client.con_mode == P.CON_MODE_SECURE
    if upto == "ident":
        sig = hmac.new(SESSION_KEY, bytes(recv), hashlib.sha256).digest()
        client.receive_data(b"".join(fr.encode_frame_secure_parts(fr.AuthSignature(sig).to_frame(), tx)))
        assert client.state is P.State.SESSION_CONNECTING
    if upto == "ready":
        sig = hmac.new(SESSION_KEY, bytes(recv), hashlib.sha256).digest()
        ident = fr.ServerIdent(EntityAddrvec((SERVER,)), 7, 99, (1 << 64) - 1, 0, 1, 0)
        client.receive_data(b"".join(fr.encode_frame_secure_parts(fr.AuthSignature(sig).to_frame(), tx))
                            + b"".join(fr.encode_frame_secure_parts(ident.to_frame(), tx)))
        assert client.state is P.State.READY
    return client, tx


def _sealed_preamble(tx: OnWireCrypto, tag: int, lens) -> bytes:
    return tx.encrypt(preamble(tag, lens) + bytes(fr.PREAMBLE_INLINE_LEN))


@pytest.mark.parametrize("upto", ["signature", "ident"])
@pytest.mark.parametrize("tag,lens,match", HOSTILE)
def test_msgr2_secure_handshake_refuses_huge_claims(upto, tag, lens, match):
    client, tx = _secure_client(upto)
    peak = refused(client.receive_data, _sealed_preamble(tx, tag, lens) + BODY, match)
    assert peak < ALLOC_LIMIT
    assert client.state is P.State.CLOSED


def test_msgr2_secure_ready_bounds():
    client, tx = _secure_client("ready")
    assert client.receive_data(_sealed_preamble(tx, fr.TAG_MESSAGE, (41, 100, 0, MB))) == []
    client, tx = _secure_client("ready")
    assert refused(client.receive_data, _sealed_preamble(tx, fr.TAG_MESSAGE, (41, 0, 0, 0xFFFFFFFF)) + BODY,
                   "data segment of") < ALLOC_LIMIT


# --- msgr1 ---------------------------------------------------------------------------


def _v1_header(front: int, middle: int, data: int) -> bytes:
    """TAG_MSG + a ceph_msg_header (valid crc) claiming these section lengths."""
    m = Message(type=18, front=b"x")  # CEPH_MSG_AUTH_REPLY
    m.seq = 1
    hdr = bytearray(v1.encode_message_parts(m, ENTITY_TYPE_MON, 0)[0][1:])
    struct.pack_into("<III", hdr, 22, front, middle, data)
    struct.pack_into("<I", hdr, v1.HEADER_CRC_OFF, crc32c(bytes(hdr[: v1.HEADER_CRC_OFF]), 0))
    return bytes((v1.TAG_MSG,)) + bytes(hdr)


@pytest.mark.parametrize("front,middle,data,match", [
    (16 * MB, 16 * MB, 64 * MB, "before authentication"),  # within Ceph's bounds: 96 MiB
    (1 * MB, 0, 0, "before authentication"),
    (0, 0, 0xFFFFFFFF, "too long"),
])
def test_msgr1_mon_before_mauth_refuses_big_messages(front, middle, data, match):
    """A msgr1 monitor authenticates us only later, over MAuth: until the mon client says
    so (Connection.set_authenticated), a message may be at most MAX_PREAUTH_LEN bytes."""
    p, _ = _opened(peer_type=ENTITY_TYPE_MON)
    p.receive_data(_reply(v1.TAG_READY, proto=15))
    assert p.state is v1.State.OPEN and not p.authenticated
    peak = refused(p.receive_data, _v1_header(front, middle, data) + BODY, match)
    assert peak < ALLOC_LIMIT
    assert p.state is v1.State.CLOSED


def test_msgr1_mon_after_mauth_takes_ceph_sized_messages():
    p, _ = _opened(peer_type=ENTITY_TYPE_MON)
    p.receive_data(_reply(v1.TAG_READY, proto=15))
    # a small pre-auth message (MAuthReply-sized) passes
    m = Message(type=18, front=bytes(4096))
    m.seq = 1
    (ev,) = p.receive_data(b"".join(v1.encode_message_parts(m, ENTITY_TYPE_MON, 0)))
    assert len(ev.message.front) == 4096
    p.set_authenticated()
    hdr = bytearray(_v1_header(MB, 0, MB))
    struct.pack_into("<Q", hdr, 1, 2)  # seq 2
    struct.pack_into("<I", hdr, 1 + v1.HEADER_CRC_OFF, crc32c(bytes(hdr[1: 1 + v1.HEADER_CRC_OFF]), 0))
    assert p.receive_data(bytes(hdr) + BODY) == []  # awaited, not refused
    assert p.state is v1.State.OPEN


def test_msgr1_osd_is_authenticated_by_its_authorizer_reply():
    p, _ = _opened()
    p.receive_data(_reply(v1.TAG_READY, authorizer=b"good reply"))
    assert p.state is v1.State.OPEN and p.authenticated


def test_msgr1_huge_authorizer_reply_refused_before_buffering():
    p, _ = _opened()
    reply = bytearray(_reply(v1.TAG_READY))
    struct.pack_into("<I", reply, v1.CONNECT_REPLY.size - 5, 200 * MB)  # authorizer_len
    assert refused(p.receive_data, bytes(reply) + BODY, "authorizer reply of") < ALLOC_LIMIT
    assert p.state is v1.State.CLOSED


def test_real_handshakes_fit_the_bound_with_room():
    """The bound's justification, on captured sessions (Pacific crc, secure): the largest
    pre-auth frame a real monitor or OSD sent (AUTH_DONE with its tickets) is under 1 KiB,
    far below MAX_PREAUTH_LEN."""
    from pathlib import Path

    from tests.shared_data import VECTORS

    dirs = [VECTORS / "msgr2-capture" / "streams", Path(__file__).resolve().parents[1] / "data" /
            "msgr2-secure-capture" / "streams"]
    largest, seen = 0, 0
    for d in dirs:
        for p in sorted(d.glob("*.s2c")):
            data = p.read_bytes()
            reader = fr.FrameReader(handshake=True)
            reader.push(data[fr.parse_banner(data)[2]:])
            while (f := reader.next_frame()) is not None:
                largest = max(largest, len(f.segments[0]))
                if f.tag == fr.TAG_AUTH_DONE:
                    seen += 1
                    break
    assert seen >= 10
    assert largest < fr.MAX_PREAUTH_LEN // 16, largest
