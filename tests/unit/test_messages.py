"""Mon and OSD message payloads against a real librados session and Ceph's object corpus.

The capture (``../shared/vectors/msgr2-capture``) is ``rados put capture_obj obj.bin``
then ``rados get`` against a 16.2.15 cluster; expected values are what that session
carried (the README names the object, pool and payload), re-encodings must match the
bytes librados and the OSD sent.
"""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyceph.encoding import Decoder, Encoder
from pyceph.errors import DecodeError
from pyceph.mon import messages as monm
from pyceph.mon.monmap import MonMap
from pyceph.msgr.frames import TAG_MESSAGE, iter_frames, message_from_frame
from pyceph.msgr.message import Message
from pyceph.osd import messages as osdm
from pyceph.osd import ops
from pyceph.types import EntityNameT
from tests.shared_data import CORPUS as CORPUS_DIR, VECTORS as VECTORS_DIR

VEC = (VECTORS_DIR / "msgr2-capture")
CORPUS = CORPUS_DIR
OBJ = (VEC / "obj.bin").read_bytes()
REGISTRY = {**monm.MON_MESSAGES, **osdm.OSD_MESSAGES}


def _messages(stream: str) -> list[Message]:
    return [message_from_frame(f) for f in iter_frames((VEC / "streams" / stream).read_bytes())
            if f.tag == TAG_MESSAGE]


def _one(stream: str, mtype: int) -> Message:
    found = [m for m in _messages(stream) if m.type == mtype]
    assert found, f"no message {mtype} in {stream}"
    return found[0]


MON_C2S = _messages("02-3300.c2s")
MON_S2C = _messages("02-3300.s2c")
WRITE_OP = _one("04-6818.c2s", osdm.CEPH_MSG_OSD_OP)
WRITE_REPLY = _one("04-6818.s2c", osdm.CEPH_MSG_OSD_OPREPLY)
READ_OP = _one("09-6818.c2s", osdm.CEPH_MSG_OSD_OP)
READ_REPLY = _one("09-6818.s2c", osdm.CEPH_MSG_OSD_OPREPLY)
ALL_CAPTURED = [m for m in MON_C2S + MON_S2C + [WRITE_OP, WRITE_REPLY, READ_OP, READ_REPLY]
                if m.type in REGISTRY]


def _reencode_matches(msg: Message, obj) -> None:
    out = obj.to_message(getattr(obj, "features", None) or 0)
    assert out.type == msg.type
    assert out.front == msg.front
    assert out.middle == msg.middle
    assert out.data == msg.data
    assert (out.version, out.compat_version) == (msg.version, msg.compat_version)
    assert out.tid == msg.tid


# -- every captured message we know decodes and re-encodes to the same bytes ---------------
@pytest.mark.parametrize("idx", range(len(ALL_CAPTURED)))
def test_captured_roundtrip(idx):
    msg = ALL_CAPTURED[idx]
    cls = REGISTRY[msg.type]
    assert (msg.version, msg.compat_version) == (cls.HEAD_VERSION, cls.COMPAT_VERSION)
    _reencode_matches(msg, cls.from_message(msg))


def test_captured_registry_covers_mon_session():
    # everything the mon sent except the MgrMap (not ours) is known
    assert {m.type for m in MON_S2C} - set(monm.MON_MESSAGES) == {0x704}
    assert {m.type for m in MON_C2S} <= set(monm.MON_MESSAGES)


# -- mon session -------------------------------------------------------------------------
def test_mmonsubscribe_capture():
    subs = [monm.MMonSubscribe.from_message(m) for m in MON_C2S if m.type == monm.CEPH_MSG_MON_SUBSCRIBE]
    assert [s.what for s in subs] == [
        {"config": (0, 0), "monmap": (0, 0)},
        {"mgrmap": (0, 0)},
        {"osdmap": (0, monm.CEPH_SUBSCRIBE_ONETIME)},
    ]
    assert {s.hostname for s in subs} == {"vm"}


def test_mmonmap_and_mosdmap_capture():
    mm = monm.MMonMap.from_message(_first(MON_S2C, monm.CEPH_MSG_MON_MAP))
    assert isinstance(mm.monmap, MonMap) and mm.monmap.ranks == ["a"]
    osdmap = monm.MOSDMap.from_message(_first(MON_S2C, monm.CEPH_MSG_OSD_MAP))
    assert osdmap.fsid == mm.monmap.fsid
    assert osdmap.incremental_maps == {}
    assert list(osdmap.maps) == [38] and (osdmap.first, osdmap.last) == (38, 38)
    assert (osdmap.oldest_map, osdmap.newest_map) == (1, 38)
    # the key is the epoch inside the full map: OSDMap v8 wrapper, client-data section, fsid, epoch
    d = Decoder(osdmap.maps[38])
    with d.start("OSDMap", 8):
        with d.start("OSDMap client data", 10):
            assert d.uuid() == mm.monmap.fsid
            assert d.u32() == 38
    # the OSDs' MOSDOp carried the same epoch
    assert osdm.MOSDOp.from_message(WRITE_OP).osdmap_epoch == 38


def test_mconfig_capture():
    assert monm.MConfig.from_message(_first(MON_S2C, monm.MSG_CONFIG)).config == {}


def _first(msgs, mtype):
    return next(m for m in msgs if m.type == mtype)


# -- OSD ops ------------------------------------------------------------------------------
def test_mosdop_write_capture():
    op = osdm.MOSDOp.from_message(WRITE_OP)
    assert op.tid == 1
    assert op.pgid == osdm.SpgT(op.pgid.pgid, osdm.NO_SHARD) and op.pgid.pgid.pool == 1
    assert op.oloc == osdm.ObjectLocator(pool=1)
    assert op.oid == "capture_obj"
    assert op.flags == ops.CEPH_OSD_FLAG_WRITE | ops.CEPH_OSD_FLAG_ONDISK | ops.CEPH_OSD_FLAG_KNOWN_REDIR
    assert op.snapid == ops.CEPH_NOSNAP and op.snaps == [] and op.retry_attempt == 0
    assert op.reqid == osdm.OsdReqid(EntityNameT(0, 0), 0, 0)
    assert len(op.ops) == 1
    (w,) = op.ops
    assert w.op == ops.CEPH_OSD_OP_WRITEFULL
    assert w.extent == (0, len(OBJ), 0, 0)
    assert w.indata == OBJ
    assert op.priority == osdm.OSD_CLIENT_OP_PRIORITY == WRITE_OP.priority


def test_mosdop_built_from_builders_matches_librados():
    """Rebuild both captured requests from scratch with our op builders."""
    for msg, op_list in ((WRITE_OP, [ops.writefull(OBJ)]), (READ_OP, [ops.read(0, 4 << 20)])):
        seen = osdm.MOSDOp.from_message(msg)
        ours = osdm.MOSDOp(pgid=seen.pgid, hash=seen.hash, osdmap_epoch=38, flags=ops.request_flags(op_list),
                           oid="capture_obj", oloc=osdm.ObjectLocator(1), ops=op_list, tid=1,
                           mtime=seen.mtime)
        out = ours.to_message(seen.features)
        assert out.front == msg.front
        assert out.data == msg.data
        assert (out.version, out.compat_version) == (msg.version, msg.compat_version)
        assert out.priority == msg.priority


def test_mosdop_read_capture():
    op = osdm.MOSDOp.from_message(READ_OP)
    assert op.flags & ops.CEPH_OSD_FLAG_READ and not op.flags & ops.CEPH_OSD_FLAG_WRITE
    assert [o.op for o in op.ops] == [ops.CEPH_OSD_OP_READ]
    assert op.mtime == (0, 0) and READ_OP.data == b""


def test_mosdopreply_read_capture():
    rep = osdm.MOSDOpReply.from_message(READ_REPLY)
    assert rep.tid == 1 and rep.result == 0 and rep.oid == "capture_obj"
    assert rep.pgid == osdm.MOSDOp.from_message(READ_OP).pgid.pgid
    assert rep.osdmap_epoch == 38 and rep.redirect is None
    (r,) = rep.ops
    assert r.op == ops.CEPH_OSD_OP_READ and r.rval == 0
    assert r.outdata == OBJ
    assert r.extent[1] == len(OBJ)  # the OSD trims the extent to what it read


def test_mosdopreply_write_capture():
    rep = osdm.MOSDOpReply.from_message(WRITE_REPLY)
    assert rep.result == 0 and rep.flags & ops.CEPH_OSD_FLAG_ONDISK
    assert rep.ops[0].outdata == b"" and rep.ops[0].rval == 0
    assert rep.replay_version[1] == 38 and rep.user_version == rep.replay_version[0]
    # the later read reports the version the write created
    assert osdm.MOSDOpReply.from_message(READ_REPLY).user_version == rep.user_version


def test_mosdop_payload_overrun_is_decode_error():
    bad = Message(type=WRITE_OP.type, front=WRITE_OP.front, data=WRITE_OP.data[:-1],
                  version=WRITE_OP.version, compat_version=WRITE_OP.compat_version)
    with pytest.raises(DecodeError):
        osdm.MOSDOp.from_message(bad)


def test_mosdop_multi_op_data_layout():
    """indata of several ops is concatenated in op order and split back by payload_len."""
    op_list = [ops.setxattr("user.k", b"v1"), ops.write(4096, b"abc"),
               ops.omap_set_vals({"b": b"2", "a": b"1"}), ops.call("rbd", "get_size", b"\x01" * 9),
               ops.stat()]
    m = osdm.MOSDOp(osdm.SpgT(osdm.PgT(3, 5)), 0x1234, 7, ops.CEPH_OSD_FLAG_WRITE, "o",
                    osdm.ObjectLocator(3, nspace="ns"), op_list, tid=9, snap_seq=4, snaps=[4, 2])
    msg = m.to_message(0xFFFF)
    assert msg.data == b"".join(o.indata for o in op_list)
    back = osdm.MOSDOp.from_message(msg)
    assert back.ops == op_list and back.features == 0xFFFF and back.oloc.nspace == "ns"
    assert back.snaps == [4, 2] and back.tid == 9


# -- corpus: OSD types --------------------------------------------------------------------
@pytest.mark.parametrize("tname,cls", [("osd_reqid_t", osdm.OsdReqid),
                                       ("object_locator_t", osdm.ObjectLocator),
                                       ("hobject_t", osdm.HObject), ("spg_t", osdm.SpgT)])
def test_corpus_osd_types(tname, cls):
    files = sorted((CORPUS / tname).iterdir())
    assert files
    for f in files:
        raw = f.read_bytes()
        d = Decoder(raw)
        obj = cls.decode(d)
        assert d.eof(), f.name
        assert obj.encode(Encoder()).bytes() == raw, f.name


def test_corpus_object_locator_fields():
    raw = (CORPUS / "object_locator_t" / "fb32e9391f247b1b580b47c8f2b6b7ad").read_bytes()
    loc = osdm.ObjectLocator.decode(Decoder(raw))
    assert loc.pool == 0x74 and loc.nspace == "test-rados-api-o01-222261-12" and loc.hash == -1


def test_corpus_watchers():
    for f in sorted((CORPUS / "obj_list_watch_response_t").iterdir()):
        ws = ops.decode_list_watchers(f.read_bytes())
        assert all(w.name.type == 8 for w in ws)  # watchers are clients
    for f in sorted((CORPUS / "watch_item_t").iterdir()):
        d = Decoder(f.read_bytes())
        w = ops.WatchItem.decode(d)
        assert d.eof() and w.name.type == 8 and w.timeout_seconds > 0


def test_mosdbackoff_with_corpus_hobjects():
    files = sorted((CORPUS / "hobject_t").iterdir())[:2]
    hobjs = [osdm.HObject.decode(Decoder(f.read_bytes())) for f in files]
    spg = osdm.SpgT.decode(Decoder(next((CORPUS / "spg_t").iterdir()).read_bytes()))
    b = osdm.MOSDBackoff(spg, 12, ops.CEPH_OSD_BACKOFF_OP_BLOCK, 77, hobjs[0], hobjs[1])
    assert osdm.MOSDBackoff.from_message(b.to_message(0)) == b


# -- round trips of what has no capture ---------------------------------------------------
ROUNDTRIP = [
    monm.MAuth(2, b"\x01cephx-ticket-request", 1),
    monm.MAuthReply(2, -13, 4123, b"blob", "denied"),
    monm.MMonCommand(bytes(range(16)), ['{"prefix": "osd pool ls", "format": "json"}'], b"in", tid=5),
    monm.MMonCommandAck(-2, "no such pool", ['{"prefix": "x"}'], b"out", tid=5),
    monm.MMonGetVersion(3, "osdmap"),
    monm.MMonGetVersionReply(3, 41, 1),
    monm.MMonSubscribeAck(300, bytes(range(16))),
    monm.MOSDMap(bytes(16), {5: b"inc"}, {4: b"full"}, 1, 5, {2: [(1, 3)]}),
    osdm.MWatchNotify(osdm.CEPH_WATCH_EVENT_NOTIFY, 99, 1234, b"payload", 1, -110, 4567),
]


@pytest.mark.parametrize("obj", ROUNDTRIP, ids=lambda o: type(o).__name__)
def test_roundtrip(obj):
    msg = obj.to_message(0)
    assert msg.type == obj.MSG_TYPE and msg.version == obj.HEAD_VERSION
    assert type(obj).from_message(msg) == obj


def test_mauth_layout_matches_kernel_header():
    # kernel auth.c: ceph_mon_request_header (u64 0, s16 -1, u64 0) then u32 protocol
    front = monm.MAuth(2, b"xy").to_message(0).front
    assert front[:18] == b"\0" * 8 + b"\xff\xff" + b"\0" * 8
    assert front[18:22] == b"\x02\0\0\0"


# -- op outdata decoders --------------------------------------------------------------------
def test_outdata_decoders():
    assert ops.decode_stat(Encoder().u64(65536).u32(10).u32(500_000_000).bytes()) == (65536, 10.5)
    e = Encoder().list(["a", "b"], Encoder.string).bool(True)
    assert ops.decode_omap_get_keys(e.bytes()) == (["a", "b"], True)
    e = Encoder().u32(1).string("k").blob(b"v").bool(False)
    assert ops.decode_omap_get_vals(e.bytes()) == ({"k": b"v"}, False)
    assert ops.decode_omap_get_vals_by_keys(Encoder().u32(1).string("k").blob(b"v").bytes()) == {"k": b"v"}
    e = Encoder().u32(2).u64(0).u64(2).u64(10).u64(1).blob(b"abc")
    assert ops.decode_sparse_read(e.bytes()) == ([(0, 2), (10, 1)], b"abc")
    with pytest.raises(DecodeError):
        ops.decode_stat(b"\0" * 15)
    with pytest.raises(DecodeError):
        ops.decode_sparse_read(Encoder().u32(1).u64(0).u64(5).blob(b"abc").bytes())


def test_builders_follow_objecter_layout():
    # Objecter.h: omap keys ride as extent.length = len(indata); xattr name then value
    op = ops.omap_get_vals("after", "pre", 7)
    assert op.extent == (0, len(op.indata), 0, 0)
    assert op.indata == Encoder().string("after").u64(7).string("pre").bytes()
    op = ops.setxattr("user.a", b"val")
    assert op.xattr == (6, 3, 0, 0) and op.indata == b"user.aval"
    op = ops.call("lock", "lock", b"in")
    assert op.cls == (4, 4, 0, 2) and op.indata == b"locklockin"
    assert ops.create(exclusive=True).flags == ops.CEPH_OSD_OP_FLAG_EXCL
    assert ops.omap_rm_keys(["b", "a"]).indata == Encoder().list(["a", "b"], Encoder.string).bytes()


# -- hostile input ------------------------------------------------------------------------
@settings(max_examples=250, deadline=None)
@given(data=st.data())
def test_garbled_fronts_raise_only_decode_error(data):
    msg = data.draw(st.sampled_from(ALL_CAPTURED))
    front = bytearray(msg.front)
    if data.draw(st.booleans()):
        front = front[: data.draw(st.integers(0, max(len(front) - 1, 0)))]
    for _ in range(data.draw(st.integers(0, 6))):
        if front:
            front[data.draw(st.integers(0, len(front) - 1))] = data.draw(st.integers(0, 255))
    bad = Message(type=msg.type, front=bytes(front), data=msg.data, version=msg.version,
                  compat_version=msg.compat_version, tid=msg.tid)
    try:
        REGISTRY[msg.type].from_message(bad)
    except DecodeError:
        pass


TRUNCATABLE = [m for m in ALL_CAPTURED if m.front]


@pytest.mark.parametrize("idx", range(len(TRUNCATABLE)))
def test_every_truncation_fails(idx):
    msg = TRUNCATABLE[idx]
    cls = REGISTRY[msg.type]
    step = max(1, len(msg.front) // 64)
    for cut in range(0, len(msg.front), step):
        bad = Message(type=msg.type, front=msg.front[:cut], data=msg.data, version=msg.version,
                      compat_version=msg.compat_version)
        with pytest.raises(DecodeError):
            cls.from_message(bad)
