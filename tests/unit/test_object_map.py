"""Unit tests for pyceph.rbd.object_map: BitVector<2> against Ceph-written bytes, the
cls payloads, and ObjectMap's librbd rules with a fake ioctx."""

from __future__ import annotations

import asyncio
import base64
import errno
import zlib

import pytest

from pyceph.encoding import Decoder, Encoder
from pyceph.errors import DecodeError, ObjectBusy, make_ex
from pyceph.osd import ops as O
from pyceph.rbd import cls_client as cls
from pyceph.rbd import object_map as OM
from pyceph.rbd.object_map import (
    CEPH_NOSNAP,
    OBJECT_EXISTS,
    OBJECT_EXISTS_CLEAN,
    OBJECT_NONEXISTENT,
    OBJECT_PENDING,
    BitVector2,
    CloneInfo,
    ObjectMap,
    SnapSet,
)

# rbd_object_map.<id> written by a Pacific OSD: 16 objects, `rbd bench` wrote objects
# 1,4,5,6,8,10,12,14 (rados get; 38 bytes)
CEPH_16 = bytes.fromhex(
    "0e000000010108000000100000000000000010544444"
    "0c000000e6b3c16e010000000fc501f7"
)
# 80 MiB image with 4 KiB objects (20480 objects -> 5120 data bytes, two crc blocks);
# rbd bench, rbd snap create, rbd bench: EXISTS and EXISTS_CLEAN objects
CEPH_20480 = zlib.decompress(base64.b64decode(
    "eNrjY2BgYGTkAJIMAQxYAA/DKCAbCAxjvxmMRi/x4MBoEAyTRH5gNH3SFTAPkxAerUdHFGAeNj4BJlxGPNKMI7o2GAWjYBSMVrujYDSZDaF2"
    "+GiuGERNP4dB5n7QoFWfezQPE5AWu112v1lYsQYAycoJYw=="
))


def run(coro):
    return asyncio.run(coro)


# -- BitVector<2> ------------------------------------------------------------------------


def test_decode_ceph_written_map():
    bv = BitVector2.decode(CEPH_16)
    assert bv.size == 16
    assert [i for i, s in enumerate(bv) if s] == [1, 4, 5, 6, 8, 10, 12, 14]
    assert set(bv) == {OBJECT_NONEXISTENT, OBJECT_EXISTS}
    assert bv.encode() == CEPH_16


def test_decode_ceph_written_multi_block_map():
    assert len(CEPH_20480) == 18 + 5120 + 4 + 4 + 4 + 2 * 4
    bv = BitVector2.decode(CEPH_20480)
    assert bv.size == 20480
    assert {OBJECT_EXISTS, OBJECT_EXISTS_CLEAN} <= set(bv)
    assert len(bv.data_crcs()) == 2
    assert bv.encode() == CEPH_20480


def test_crc_seeds_are_zero_and_checked():
    from pyceph.encoding import crc32c

    hdr = CEPH_16[4:18]
    assert Decoder(CEPH_16[26:30]).u32() == crc32c(hdr, 0)
    bad = bytearray(CEPH_16)
    bad[18] ^= 0x40  # object 0 -> EXISTS: data crc mismatch
    with pytest.raises(DecodeError, match="data block CRC"):
        BitVector2.decode(bytes(bad))
    assert BitVector2.decode(bytes(bad), verify_crc=False)[0] == OBJECT_EXISTS
    bad = bytearray(CEPH_16)
    bad[10] = 0x11  # header size changes: header crc mismatch (and data length)
    with pytest.raises(DecodeError):
        BitVector2.decode(bytes(bad))


def test_crcless_form_is_what_object_map_load_returns():
    bv = BitVector2.decode(CEPH_16)
    raw = bv.encode(crc=False)
    assert raw == CEPH_16[:22] + b"\0\0\0\0"
    assert BitVector2.decode(raw) == bv


def test_truncated_input_raises_decode_error():
    for n in (0, 3, 10, 20, 30):
        with pytest.raises(DecodeError):
            BitVector2.decode(CEPH_16[:n])


def test_element_order_and_resize():
    bv = BitVector2(5)
    bv[0] = OBJECT_EXISTS
    bv[3] = OBJECT_EXISTS_CLEAN
    bv[4] = OBJECT_PENDING
    assert bytes(bv.data) == bytes([0b01000011, 0b10000000])
    bv.resize(9, OBJECT_EXISTS)
    assert bv.to_list() == [1, 0, 0, 3, 2, 1, 1, 1, 1]
    bv.resize(2)
    assert bv.to_list() == [1, 0] and bytes(bv.data) == bytes([0b01000000])  # stale bits cleared
    with pytest.raises(IndexError):
        bv[2]


# -- cls payloads ------------------------------------------------------------------------


def test_cls_payloads():
    assert cls.encode_object_map_resize(20, OBJECT_NONEXISTENT) == (20).to_bytes(8, "little") + b"\0"
    assert cls.encode_object_map_update(3, 7, OBJECT_PENDING) == (
        (3).to_bytes(8, "little") + (7).to_bytes(8, "little") + b"\x02" + b"\x00")
    assert cls.encode_object_map_update(3, 7, OBJECT_NONEXISTENT, OBJECT_PENDING)[-3:] == b"\x00\x01\x02"
    assert cls.encode_set_flags(3, 3, CEPH_NOSNAP) == (
        (3).to_bytes(8, "little") * 2 + CEPH_NOSNAP.to_bytes(8, "little"))


def test_object_map_name():
    assert OM.object_map_name("10fe66db891c") == "rbd_object_map.10fe66db891c"
    assert OM.object_map_name("abc", 0x1a) == "rbd_object_map.abc.000000000000001a"


# -- librbd rules --------------------------------------------------------------------------


@pytest.mark.parametrize("state,new,required", [
    (OBJECT_NONEXISTENT, OBJECT_EXISTS, True),
    (OBJECT_EXISTS, OBJECT_EXISTS, False),
    (OBJECT_EXISTS_CLEAN, OBJECT_EXISTS, True),
    (OBJECT_NONEXISTENT, OBJECT_PENDING, False),
    (OBJECT_EXISTS, OBJECT_PENDING, True),
    (OBJECT_EXISTS_CLEAN, OBJECT_PENDING, True),
    (OBJECT_PENDING, OBJECT_NONEXISTENT, True),
    (OBJECT_EXISTS, OBJECT_NONEXISTENT, False),
])
def test_update_required(state, new, required):
    assert OM.update_required(state, new) is required


def test_apply_update_exists_matches_exists_clean():
    bv = BitVector2.from_states([1, 3, 2, 0])
    OM._apply_update(bv, 0, 4, OBJECT_PENDING, OBJECT_EXISTS)
    assert bv.to_list() == [2, 2, 2, 0]
    OM._apply_update(bv, 0, 4, OBJECT_NONEXISTENT, OBJECT_PENDING)
    assert bv.to_list() == [0, 0, 0, 0]


def snapset(*clones, seq):
    return SnapSet([CloneInfo(c[0], list(c[1]), [], c[2]) for c in clones], seq)


def test_object_state_from_snapset():
    f = OM.object_state_from_snapset
    assert f(None, CEPH_NOSNAP, [], True) == OBJECT_NONEXISTENT
    head_only = snapset((CEPH_NOSNAP, [], 100), seq=0)
    assert f(head_only, CEPH_NOSNAP, [], True) == OBJECT_EXISTS
    # written before snap 4, untouched since: clean at HEAD with fast-diff
    assert f(head_only, CEPH_NOSNAP, [4], True) == OBJECT_EXISTS_CLEAN
    assert f(head_only, CEPH_NOSNAP, [4], False) == OBJECT_EXISTS
    assert f(head_only, 4, [4], True) == OBJECT_EXISTS
    # written after snap 4 (seq 4): clone for 4, head exists
    ss = snapset((4, [4], 50), (CEPH_NOSNAP, [], 100), seq=4)
    assert f(ss, CEPH_NOSNAP, [4], True) == OBJECT_EXISTS
    assert f(ss, 4, [4], True) == OBJECT_EXISTS
    # removed after snap 4: only the clone
    gone = snapset((4, [4], 50), seq=4)
    assert f(gone, CEPH_NOSNAP, [4], True) == OBJECT_NONEXISTENT
    assert f(gone, 4, [4], True) == OBJECT_EXISTS
    # clone covering snaps 4 and 6, read at 6: clean (exists since 4)
    ss = snapset((6, [4, 6], 50), seq=6)
    assert f(ss, 6, [4, 6], True) == OBJECT_EXISTS_CLEAN


def test_check_needs_invalidate():
    assert not OM.check_needs_invalidate(OBJECT_EXISTS, OBJECT_NONEXISTENT)
    assert not OM.check_needs_invalidate(OBJECT_EXISTS_CLEAN, OBJECT_NONEXISTENT)
    assert OM.check_needs_invalidate(OBJECT_NONEXISTENT, OBJECT_EXISTS)
    assert OM.check_needs_invalidate(OBJECT_EXISTS, OBJECT_EXISTS_CLEAN)
    assert OM.check_needs_invalidate(OBJECT_PENDING, OBJECT_EXISTS)


# -- ObjectMap with a fake ioctx -----------------------------------------------------------


def _calls(ops):
    out = []
    for o in ops:
        if o.op == O.CEPH_OSD_OP_CALL:
            cl, ml, _, _ = o.cls
            out.append((o.indata[:cl].decode(), o.indata[cl:cl + ml].decode(), o.indata[cl + ml:]))
        else:
            out.append((o.name, "", o.indata))
    return out


class FakeIoctx:
    """Object store of map objects; applies object_map_update/resize/snap_add like cls_rbd
    and lock.assert_locked against a flag."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.sent: list[tuple[str, list]] = []
        self.map_locked = True
        self.header_flags: dict[int, int] = {}
        self.fail_update = None

    async def execute(self, oid, cls_name, method, data=b"", read_only=False):
        r = await self.operate(oid, [O.call(cls_name, method, data)], write=not read_only)
        return r[0].outdata

    async def operate(self, oid, ops, write=False, snapc=None, snapid=None):
        calls = _calls(ops)
        self.sent.append((oid, calls))
        outs = []
        for (c, m, data), op in zip(calls, ops):
            out = b""
            if (c, m) == ("lock", "assert_locked"):
                a = cls.AssertOp.decode(Decoder(data))
                if a.tag == "" and not self.map_locked:
                    raise make_ex(-errno.EBUSY, "assert_locked")
            elif (c, m) in (("lock", "lock"), ("lock", "break_lock")):
                pass
            elif (c, m) == ("rbd", "object_map_update"):
                if self.fail_update:
                    raise make_ex(-self.fail_update, "update")
                d = Decoder(data)
                s, e, new = d.u64(), d.u64(), d.u8()
                cur = d.u8() if d.u8() else None
                bv = BitVector2.decode(self.objects[oid])
                OM._apply_update(bv, s, e, new, cur)
                self.objects[oid] = bv.encode()
            elif (c, m) == ("rbd", "object_map_resize"):
                d = Decoder(data)
                n, default = d.u64(), d.u8()
                bv = BitVector2.decode(self.objects[oid]) if self.objects.get(oid) else BitVector2()
                bv.resize(n, default)
                self.objects[oid] = bv.encode()
            elif c == "truncate":
                self.objects[oid] = b""
            elif (c, m) == ("rbd", "object_map_load"):
                if oid not in self.objects:
                    raise make_ex(-errno.ENOENT, oid)
                out = BitVector2.decode(self.objects[oid]).encode(crc=False)
            elif (c, m) == ("rbd", "object_map_snap_add"):
                bv = BitVector2.decode(self.objects[oid])
                self.objects[oid] = BitVector2.from_states([3 if x == 1 else x for x in bv]).encode()
            elif (c, m) == ("rbd", "set_flags"):
                d = Decoder(data)
                flags, mask, snap = d.u64(), d.u64(), d.u64()
                self.header_flags[snap] = (self.header_flags.get(snap, 0) & ~mask) | (flags & mask)
            elif (c, m) == ("rbd", "get_flags"):
                out = Encoder().u64(self.header_flags.get(Decoder(data).u64(), 0)).bytes()
            elif c == "read":
                out = self.objects[oid]
            elif c == "writefull":
                self.objects[oid] = op.indata
            else:
                raise AssertionError((c, m))
            outs.append(O.OSDOp(op.op, outdata=out))
        return outs

    async def write_full(self, oid, data):
        self.objects[oid] = bytes(data)

    async def remove(self, oid):
        self.objects.pop(oid, None)


def make_map(states, **kw):
    io = FakeIoctx()
    io.objects[OM.object_map_name("img")] = BitVector2.from_states(states).encode()
    om = ObjectMap(io, "img", lock_cookie_fn=lambda: "auto 1", **kw)
    run(om.load(len(states)))
    io.sent.clear()
    return io, om


def test_load_takes_the_map_lock_and_reads_the_map():
    io = FakeIoctx()
    io.objects[OM.object_map_name("img")] = CEPH_16
    om = ObjectMap(io, "img")
    run(om.load(16))
    assert [c[:2] for _, calls in io.sent for c in calls] == [("lock", "lock"), ("rbd", "object_map_load")]
    lock = cls.LockOp.decode(Decoder(io.sent[0][1][0][2]))
    assert (lock.name, lock.type, lock.cookie, lock.tag) == ("rbd_lock", cls.LOCK_EXCLUSIVE, "", "")
    assert om.locked and om.map == BitVector2.decode(CEPH_16)


def test_load_of_a_short_map_invalidates_and_resizes():
    io, om = make_map([1, 0])
    run(om.load(5))
    assert om.invalid and om.map.to_list() == [1] * 5
    assert io.header_flags[CEPH_NOSNAP] == OM.OBJECT_MAP_INVALID_FLAGS
    names = [c[:2] for _, calls in io.sent for c in calls]
    assert ("rbd", "object_map_resize") in names
    # the header write asserted our exclusive lock with tag "internal"
    hdr_ops = [calls for oid, calls in io.sent if oid == "rbd_header.img"]
    a = cls.AssertOp.decode(Decoder(hdr_ops[0][0][2]))
    assert (a.name, a.cookie, a.tag) == ("rbd_lock", "auto 1", "internal")


def test_updates_skip_when_nothing_changes():
    io, om = make_map([1, 3, 2, 0])
    run(om.pre_write([0]))  # already EXISTS
    run(om.pre_remove([3]))  # NONEXISTENT: never PENDING
    run(om.post_remove([0, 1]))  # not PENDING
    assert io.sent == []
    run(om.pre_write([1]))  # EXISTS_CLEAN -> EXISTS needs an update
    assert len(io.sent) == 1
    oid, calls = io.sent[0]
    assert [c[:2] for c in calls] == [("lock", "assert_locked"), ("rbd", "object_map_update")]
    a = cls.AssertOp.decode(Decoder(calls[0][2]))
    assert (a.name, a.type, a.cookie, a.tag) == ("rbd_lock", cls.LOCK_EXCLUSIVE, "", "")
    assert om.map.to_list() == [1, 1, 2, 0]
    assert BitVector2.decode(io.objects[oid]).to_list() == [1, 1, 2, 0]


def test_runs_are_batched_and_updates_clipped():
    io, om = make_map([0] * 10)
    run(om.pre_write([2, 3, 4, 7, 12]))  # 12 is past the map: ignored
    ranges = sorted(Decoder(calls[1][2]).u64() for _, calls in io.sent)
    assert ranges == [2, 7] and om.map.to_list() == [0, 0, 1, 1, 1, 0, 0, 1, 0, 0]
    io.sent.clear()
    run(om.pre_remove([3, 4, 5]))
    run(om.post_remove([3, 4, 5]))
    assert om.map.to_list() == [0, 0, 1, 0, 0, 0, 0, 1, 0, 0]
    assert len(io.sent) == 2
    assert run(om.update(20, 30, OBJECT_EXISTS)) is False


def test_large_updates_are_cut_in_batches(monkeypatch):
    monkeypatch.setattr(OM, "MAX_OBJECTS_PER_UPDATE", 4)
    io, om = make_map([0] * 10)
    run(om.update(0, 10, OBJECT_EXISTS))
    spans = [(Decoder(c[1][2]).u64(), Decoder(c[1][2][8:]).u64()) for _, c in io.sent]
    assert spans == [(0, 4), (4, 8), (8, 10)]


def test_failed_update_invalidates_without_raising():
    io, om = make_map([0, 0], fast_diff=False)
    io.map_locked = False
    run(om.pre_write([1]))
    assert om.map.to_list() == [0, 1]  # in memory regardless, like librbd
    assert om.invalid and io.header_flags[CEPH_NOSNAP] == OM.RBD_FLAG_OBJECT_MAP_INVALID
    assert om.may_exist(0)  # an invalid map proves nothing


def test_invalidate_skips_disk_without_the_header_lock():
    io = FakeIoctx()
    om = ObjectMap(io, "img", lock_cookie_fn=lambda: None)
    run(om.invalidate())
    assert om.invalid and io.sent == []
    run(om.invalidate(5, force=True))
    assert io.header_flags == {5: OM.OBJECT_MAP_INVALID_FLAGS}


def test_overlapping_updates_are_serialised():
    io, om = make_map([0] * 4)
    order = []
    real = io.operate

    async def slow(oid, ops, **kw):
        order.append("start")
        await asyncio.sleep(0.01)
        r = await real(oid, ops, **kw)
        order.append("end")
        return r

    io.operate = slow

    async def go():
        await asyncio.gather(om.update(0, 3, OBJECT_EXISTS), om.update(2, 4, OBJECT_EXISTS_CLEAN))

    run(go())
    assert order == ["start", "end", "start", "end"]
    assert om.map.to_list() == [1, 1, 3, 3]


def test_snapshot_add_copies_head_and_cleans_exists():
    io, om = make_map([1, 3, 0, 2, 1])
    head = io.objects[om.oid]
    run(om.snapshot_add(7))
    assert io.objects[OM.object_map_name("img", 7)] == head
    assert om.map.to_list() == [3, 3, 0, 2, 3]
    assert BitVector2.decode(io.objects[om.oid]).to_list() == [3, 3, 0, 2, 3]


def test_snapshot_remove_folds_exists_back():
    io, om = make_map([3, 3, 3, 0])
    io.objects[OM.object_map_name("img", 7)] = BitVector2.from_states([1, 3]).encode()

    async def snap_remove_cls(oid, ops, **kw):
        calls = _calls(ops)
        if ("rbd", "object_map_snap_remove") in [c[:2] for c in calls]:
            src = BitVector2.decode(calls[-1][2])
            dst = BitVector2.decode(io.objects[oid])
            for i in range(dst.size):
                if dst[i] == 3 and (i >= src.size or src[i] == 1):
                    dst[i] = 1
            io.objects[oid] = dst.encode()
            io.sent.append((oid, calls))
            return [O.OSDOp(o.op) for o in ops]
        return await FakeIoctx.operate(io, oid, ops, **kw)

    io.operate = snap_remove_cls
    run(om.snapshot_remove(7, CEPH_NOSNAP))
    assert om.map.to_list() == [1, 3, 1, 0]  # object 2 is past the snapshot's map
    assert BitVector2.decode(io.objects[om.oid]).to_list() == [1, 3, 1, 0]
    assert OM.object_map_name("img", 7) not in io.objects


def test_snapshot_remove_of_invalid_snapshot_invalidates_next():
    io, om = make_map([3, 3])
    io.objects[OM.object_map_name("img", 7)] = BitVector2.from_states([1, 1]).encode()
    run(om.snapshot_remove(7, 9, snap_flags=OM.RBD_FLAG_OBJECT_MAP_INVALID))
    assert io.header_flags[9] == OM.OBJECT_MAP_INVALID_FLAGS
    assert om.map.to_list() == [3, 3]


def test_rollback_writes_snapshot_map_to_head_under_the_map_lock():
    io, om = make_map([1, 1, 1])
    snap = BitVector2.from_states([1, 0, 3]).encode()
    io.objects[OM.object_map_name("img", 4)] = snap
    run(om.rollback(4))
    assert io.objects[om.oid] == snap and om.map.to_list() == [1, 0, 3]
    writes = [calls for oid, calls in io.sent if oid == om.oid]
    assert [c[:2] for c in writes[-1]] == [("lock", "assert_locked"), ("writefull", "")]


def test_may_exist():
    io, om = make_map([0, 1, 2, 3])
    assert [om.may_exist(i) for i in range(5)] == [False, True, True, True, True]
    assert [om.may_not_exist(i) for i in range(4)] == [True, False, True, False]


def test_unlock_ignores_enoent_and_busy_map_is_reported(monkeypatch):
    io = FakeIoctx()
    om = ObjectMap(io, "img")

    async def gone(*a, **k):
        raise make_ex(-errno.ENOENT, "unlock")

    monkeypatch.setattr(cls, "lock_unlock", gone)
    run(om.unlock())
    assert isinstance(make_ex(-errno.EBUSY, "x"), ObjectBusy)


def test_lock_breaks_a_stale_map_lock_once(monkeypatch):
    from pyceph.types import EntityNameT

    io = FakeIoctx()
    attempts = []

    async def lock(ioctx, oid, op):
        attempts.append(oid)
        if len(attempts) == 1:
            raise make_ex(-errno.EBUSY, "locked")

    stale = cls.LockerId(EntityNameT(8, 4242), "")

    async def get_info(ioctx, oid, name):
        return cls.LockInfo({stale: None}, cls.LOCK_EXCLUSIVE, "")

    monkeypatch.setattr(cls, "lock_lock", lock)
    monkeypatch.setattr(cls, "lock_get_info", get_info)
    om = ObjectMap(io, "img")
    run(om.lock())
    assert om.locked and attempts == [om.oid, om.oid]
    (oid, calls), = io.sent
    assert oid == om.oid and [c[:2] for c in calls] == [("lock", "break_lock")]
    brk = cls.BreakOp.decode(Decoder(calls[0][2]))
    assert (brk.name, brk.locker, brk.cookie) == ("rbd_lock", stale.locker, "")


def test_lock_gives_up_after_one_break(monkeypatch):
    io = FakeIoctx()

    async def busy(ioctx, oid, op):
        raise make_ex(-errno.EBUSY, "locked")

    async def get_info(ioctx, oid, name):
        return cls.LockInfo({}, cls.LOCK_EXCLUSIVE, "")

    monkeypatch.setattr(cls, "lock_lock", busy)
    monkeypatch.setattr(cls, "lock_get_info", get_info)
    om = ObjectMap(io, "img")
    run(om.lock())  # logged, not raised (LockRequest completes with 0)
    assert not om.locked


def test_load_of_a_corrupt_map_truncates_and_resizes():
    io = FakeIoctx()
    io.objects[OM.object_map_name("img")] = b"garbage"
    real = io.operate

    async def op(oid, ops, **kw):
        if [c[:2] for c in _calls(ops)] == [("rbd", "object_map_load")]:
            raise make_ex(-errno.EINVAL, "failed to decode object map")  # what cls_rbd answers
        return await real(oid, ops, **kw)

    io.operate = op
    om = ObjectMap(io, "img", lock_cookie_fn=lambda: "auto 9")
    run(om.load(6))
    assert om.invalid and om.map.to_list() == [OBJECT_EXISTS] * 6
    resize = [calls for oid, calls in io.sent if oid == om.oid][-1]
    assert [c[:2] for c in resize] == [("lock", "assert_locked"), ("truncate", ""), ("rbd", "object_map_resize")]
    assert BitVector2.decode(io.objects[om.oid]).to_list() == [OBJECT_NONEXISTENT] * 6
