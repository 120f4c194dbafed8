"""msgr2.1 crc-mode frames against a real librados <-> Ceph 16.2.15 capture."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyceph.errors import DecodeError, ProtocolError
from pyceph.msgr import frames as fr
from pyceph.msgr.message import Message
from pyceph.types import ADDR_TYPE_ANY, ADDR_TYPE_MSGR2, ENTITY_TYPE_CLIENT
from tests.shared_data import CORPUS as CORPUS_DIR, VECTORS as VECTORS_DIR

CAPTURE = (VECTORS_DIR / "msgr2-capture")
STREAMS = sorted((CAPTURE / "streams").glob("*.c2s")) + sorted((CAPTURE / "streams").glob("*.s2c"))
STREAM_IDS = [p.name for p in STREAMS]


def _frames(path: Path) -> list[fr.Frame]:
    return list(fr.iter_frames(path.read_bytes(), peer_is_server=path.suffix == ".s2c"))


def test_capture_present():
    assert len(STREAMS) == 20


@pytest.mark.parametrize("path", STREAMS, ids=STREAM_IDS)
def test_stream_parses_and_reencodes_exactly(path: Path):
    data = path.read_bytes()
    supported, required, used = fr.parse_banner(data)
    assert used == 26
    assert supported == fr.MSGR2_FEATURE_REVISION_1 and required == 0
    frames = _frames(path)
    # Every byte is accounted for, and re-encoding each frame gives the captured bytes.
    assert data[:used] + b"".join(f.raw for f in frames) == data
    for f in frames:
        assert fr.encode_frame(f) == f.raw
        assert fr.encode_frame(fr.Frame(f.tag, f.segments)) == f.raw  # default alignments
        if f.tag == fr.TAG_MESSAGE:
            again = fr.frame_from_message(fr.message_from_frame(f))
        else:
            again = fr.decode_control(f).to_frame()
        assert fr.encode_frame(again) == f.raw, f


@pytest.mark.parametrize("path", STREAMS, ids=STREAM_IDS)
def test_handshake_tag_sequence(path: Path):
    tags = [f.tag for f in _frames(path)]
    if path.suffix == ".c2s":
        head = [fr.HELLO, fr.AUTH_REQUEST, fr.AUTH_REQUEST_MORE, fr.AUTH_SIGNATURE, fr.CLIENT_IDENT]
    else:
        head = [fr.HELLO, fr.AUTH_REPLY_MORE, fr.AUTH_DONE, fr.AUTH_SIGNATURE, fr.SERVER_IDENT]
    assert tags[:5] == head
    assert all(t in (fr.MESSAGE, fr.ACK, fr.KEEPALIVE2, fr.KEEPALIVE2_ACK) for t in tags[5:])


def test_control_payloads_decode():
    c2s = _frames(CAPTURE / "streams/04-6818.c2s")
    s2c = _frames(CAPTURE / "streams/04-6818.s2c")
    hello = fr.decode_control(c2s[0])
    assert hello.entity_type == ENTITY_TYPE_CLIENT
    assert (hello.peer_addr.type, hello.peer_addr.ip, hello.peer_addr.port) == (ADDR_TYPE_MSGR2, "10.77.0.1", 6818)
    req = fr.decode_control(c2s[1])
    assert req.method == 2 and req.preferred_modes == [1]  # cephx, crc
    ident = fr.decode_control(c2s[4])
    assert ident.target_addr == hello.peer_addr
    assert ident.addrs.addrs[0].type == ADDR_TYPE_ANY and ident.addrs.addrs[0].port == 0
    done = fr.decode_control(s2c[2])
    assert done.con_mode == 1 and done.global_id == ident.gid
    sig = fr.decode_control(s2c[3])
    assert len(sig.signature) == 32
    sident = fr.decode_control(s2c[4])
    assert sident.addrs.msgr2() == hello.peer_addr  # the OSD we meant, nonce included
    assert fr.decode_control(s2c[0]).peer_addr.ip == ident.addrs.addrs[0].ip  # learned address


def _messages(name: str) -> list[Message]:
    return [fr.message_from_frame(f) for f in _frames(CAPTURE / "streams" / name) if f.tag == fr.TAG_MESSAGE]


def test_message_types_seen():
    mon_in = {m.type for n in ("00-3300.s2c", "02-3300.s2c") for m in _messages(n)}
    mon_out = {m.type for n in ("00-3300.c2s", "02-3300.c2s") for m in _messages(n)}
    # msgr2 authenticates in frames, so no MAuth here: MMonMap, MConfig, MMgrMap, MOSDMap
    assert mon_in == {4, 62, 0x704, 41}
    assert mon_out == {5, 15}  # MMonGetMap, MMonSubscribe
    for name in STREAM_IDS:
        seqs = [m.seq for m in _messages(name)]
        assert seqs == list(range(1, len(seqs) + 1)), name  # in-order, from 1


def test_obj_bin_travels_as_data_segment():
    obj = (CAPTURE / "obj.bin").read_bytes()
    assert len(obj) == 65536
    put = [m for m in _messages("04-6818.c2s") if m.type == 42]
    assert len(put) == 1 and put[0].data == obj and put[0].front
    get = [m for m in _messages("09-6818.s2c") if m.type == 43]
    assert len(get) == 1 and get[0].data == obj
    # The reply travels back on the same OSD the write went to.
    osd = fr.decode_control(_frames(CAPTURE / "streams/09-6818.c2s")[0]).peer_addr
    assert osd == fr.decode_control(_frames(CAPTURE / "streams/04-6818.c2s")[0]).peer_addr


def test_message_header2_fields():
    m = _messages("04-6818.c2s")[0]
    assert (m.type, m.seq, m.tid, m.version, m.compat_version) == (42, 1, 1, 8, 3)
    frame = fr.frame_from_message(m)
    assert len(frame.segments[0]) == fr.HEADER2_LEN == 41


# --- malformed input -------------------------------------------------------------------

def _one_frame(tag=fr.TAG_ACK, segments=(b"\x01" * 8,)) -> bytes:
    return fr.encode_frame(fr.Frame(tag, list(segments)))


def test_reader_streams_byte_by_byte():
    data = (CAPTURE / "streams/04-6818.c2s").read_bytes()[26:]
    r = fr.FrameReader()
    got = []
    for i in range(0, len(data), 997):
        got += r.feed(data[i : i + 997])
    assert [f.tag for f in got] == [f.tag for f in _frames(CAPTURE / "streams/04-6818.c2s")]
    assert r.buffered == 0
    one = _one_frame()
    r = fr.FrameReader()
    assert all(r.feed(one[i : i + 1]) == [] for i in range(len(one) - 1))
    assert [f.segments for f in r.feed(one[-1:])] == [[b"\x01" * 8]]


@pytest.mark.parametrize("offset", [0, 5, 29, 32, 35, 40])
def test_corrupted_byte_raises(offset):
    data = bytearray(_one_frame())
    data[offset] ^= 0x40
    with pytest.raises(ProtocolError, match="crc"):
        fr.FrameReader().feed(bytes(data))


def test_corrupted_data_segment_crc():
    msg = Message(type=42, front=b"front", data=b"d" * 5000)
    data = bytearray(fr.encode_frame(fr.frame_from_message(msg)))
    data[-20] ^= 1  # inside the data segment
    with pytest.raises(ProtocolError, match="segment 3"):
        fr.FrameReader().feed(bytes(data))
    data[-20] ^= 1
    data[-13] = fr.FRAME_LATE_STATUS_ABORTED  # late_status
    with pytest.raises(ProtocolError, match="aborted"):
        fr.FrameReader().feed(bytes(data))


def _preamble(tag, nseg, lens, aligns=(8, 0, 0, 0)) -> bytes:
    body = struct.pack("<BB" + "IH" * 4 + "2x", tag, nseg, *[x for p in zip(lens, aligns) for x in p])
    return body + struct.pack("<I", fr.crc32c(body, 0))


@pytest.mark.parametrize(
    "nseg,lens",
    [
        (1, (0, 1 << 30, 0, 0)),  # length beyond the declared segment count
        (4, (41, 0, 0, 1 << 30)),  # data segment over the bound
        (1, (1 << 30, 0, 0, 0)),  # control segment over the bound
        (0, (0, 0, 0, 0)),
        (5, (1, 1, 1, 1)),
        (3, (41, 5, 0, 0)),  # last counted segment empty
    ],
)
def test_bad_preamble_rejected_before_allocation(nseg, lens):
    r = fr.FrameReader()
    with pytest.raises(ProtocolError):
        r.feed(_preamble(fr.TAG_MESSAGE, nseg, lens))
    with pytest.raises(ProtocolError):  # stays failed
        r.feed(b"")


def test_iter_frames_truncated():
    data = (CAPTURE / "streams/03-6808.s2c").read_bytes()
    with pytest.raises(ProtocolError, match="inside a frame"):
        list(fr.iter_frames(data[:-1]))
    with pytest.raises(ProtocolError, match="banner"):
        list(fr.iter_frames(data[:20]))


def test_banner_errors():
    assert fr.parse_banner(b"ceph v2\n\x10") is None
    assert fr.parse_banner(fr.encode_banner()) == (1, 1, 26)
    with pytest.raises(ProtocolError, match="msgr1"):
        fr.parse_banner(b"ceph v027" + bytes(20))
    with pytest.raises(ProtocolError):
        fr.parse_banner(b"HTTP/1.1 400")
    with pytest.raises(ProtocolError):
        fr.parse_banner(b"ceph v2\n\x08\x00" + bytes(8))


def test_truncated_payloads_raise_decode_error():
    for f in _frames(CAPTURE / "streams/04-6818.s2c")[:5]:
        for cut in (0, len(f.payload) // 2, len(f.payload) - 1):
            with pytest.raises(DecodeError):
                fr.decode_control(fr.Frame(f.tag, [f.payload[:cut]]))
    with pytest.raises(DecodeError):
        fr.message_from_frame(fr.Frame(fr.TAG_MESSAGE, [bytes(40)]))
    with pytest.raises(ProtocolError):
        fr.decode_control(fr.Frame(fr.TAG_MESSAGE, [bytes(41)]))


_CAPTURED = (CAPTURE / "streams/00-3300.s2c").read_bytes()[26:600]


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(lambda n, junk: _CAPTURED[:n] + junk, st.integers(0, len(_CAPTURED)), st.binary(max_size=64)),
        st.builds(
            lambda n, i, b: bytes(_CAPTURED[:i]) + bytes([b]) + _CAPTURED[i + 1 : n],
            st.integers(0, len(_CAPTURED)), st.integers(0, len(_CAPTURED) - 1), st.integers(0, 255),
        ),
    ),
    st.integers(1, 64),
)
def test_reader_fuzz_only_protocol_error(data, chunk):
    r = fr.FrameReader(max_segment_len=1 << 20, max_control_len=1 << 16)
    try:
        for i in range(0, len(data), chunk):
            for f in r.feed(data[i : i + chunk]):
                if f.tag == fr.TAG_MESSAGE:
                    fr.message_from_frame(f)
                elif f.tag in fr.CONTROL_PAYLOADS:
                    fr.decode_control(f)
    except ProtocolError:
        pass
