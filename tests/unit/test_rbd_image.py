"""Unit tests of the image core (pyceph.rbd.image) with small in-memory fakes.

The fakes stand in for the OSDs (a dict of objects applying compound ops atomically,
with ``rbd.copyup``'s "no-op if the object exists" rule), for the ObjectMap of
:mod:`pyceph.rbd.object_map` (a list of states recording the updates) and for the
ExclusiveLock of :mod:`pyceph.rbd.exclusive_lock`.  The sequences checked are librbd's (io/ObjectRequest.cc, io/CopyupRequest.cc, operation/TrimRequest.cc);
the real cluster checks are in tests/integration/test_rbd_image_features.py and
test_rbd_clone_io.py.
"""

from __future__ import annotations

import asyncio
import random
import struct

import pytest

from pyceph import errors
from pyceph.osd import ops as O
from pyceph.rbd import cls_client as cls
from pyceph.rbd import features as F
from pyceph.rbd.image import (
    OBJECT_EXISTS,
    OBJECT_EXISTS_CLEAN,
    OBJECT_NONEXISTENT,
    OBJECT_PENDING,
    AsyncImage,
    ParentInfo,
    check_feature_policy,
    object_map_name,
    prune_discard_extent,
    prune_parent_extents,
)
from pyceph.rbd.striping import Layout, extent_to_file

KiB = 1024
OBJ = 64 * KiB  # order 16 objects keep the fakes small


def run(coro):
    return asyncio.run(coro)


# -- fakes -------------------------------------------------------------------------------


def _call_parts(op: O.OSDOp) -> tuple[str, str, bytes]:
    clen, mlen, _, _ = op.cls
    d = op.indata
    return d[:clen].decode(), d[clen : clen + mlen].decode(), d[clen + mlen :]


class FakeIoctx:
    """Objects in a dict; ``operate`` applies a compound op atomically (all or nothing)."""

    def __init__(self):
        self.objects: dict[str, bytearray] = {}
        self.log: list[tuple[str, list[str], tuple | None]] = []
        self.calls: list[tuple[str, str, str, bytes]] = []
        self.max_concurrency = 4
        self.pool_id = 1
        self.namespace = ""

    def _name(self, op: O.OSDOp) -> str:
        if op.op == O.CEPH_OSD_OP_CALL:
            c, m, _ = _call_parts(op)
            return f"{c}.{m}"
        return O.op_name(op.op)

    async def operate(self, oid, ops, *, write, snapc=None, snapid=None):
        await asyncio.sleep(0)
        self.log.append((oid, [self._name(op) for op in ops], None if snapc is None else tuple(
            (snapc[0], tuple(snapc[1])))))
        objs = dict(self.objects)
        cur = bytearray(objs[oid]) if oid in objs else None
        for op in ops:
            if op.op == O.CEPH_OSD_OP_STAT:
                if cur is None:
                    raise errors.ObjectNotFound(f"{oid}: stat")
            elif op.op == O.CEPH_OSD_OP_WRITE:
                off = op.extent[0]
                cur = cur if cur is not None else bytearray()
                if len(cur) < off:
                    cur.extend(bytes(off - len(cur)))
                cur[off : off + len(op.indata)] = op.indata
            elif op.op == O.CEPH_OSD_OP_WRITEFULL:
                cur = bytearray(op.indata)
            elif op.op == O.CEPH_OSD_OP_DELETE:
                if cur is None:
                    raise errors.ObjectNotFound(f"{oid}: delete")
                cur = None
            elif op.op == O.CEPH_OSD_OP_CREATE:
                cur = cur if cur is not None else bytearray()
            elif op.op == O.CEPH_OSD_OP_TRUNCATE:
                size = op.extent[0]
                cur = cur if cur is not None else bytearray()
                del cur[size:]
                cur.extend(bytes(size - len(cur)))
            elif op.op == O.CEPH_OSD_OP_ZERO:
                if cur is not None:
                    off, n = op.extent[:2]
                    end = min(off + n, len(cur))
                    if off < end:
                        cur[off:end] = bytes(end - off)
            elif op.op == O.CEPH_OSD_OP_CALL:
                c, m, data = _call_parts(op)
                self.calls.append((oid, c, m, data))
                if (c, m) == ("rbd", "copyup"):
                    if cur is None and data:
                        cur = bytearray(data)
                elif c == "lock":
                    pass
                elif (c, m) == ("rbd", "set_size"):
                    pass
                else:
                    raise AssertionError(f"unexpected cls call {c}.{m}")
            else:
                raise AssertionError(f"unexpected op {O.op_name(op.op)}")
        if cur is None:
            objs.pop(oid, None)
        else:
            objs[oid] = cur
        self.objects = objs
        return ops

    async def read(self, oid, length=8192, offset=0, snapid=None):
        await asyncio.sleep(0)
        if oid not in self.objects:
            raise errors.ObjectNotFound(oid)
        return bytes(self.objects[oid][offset : offset + length])

    async def write(self, oid, data, offset=0, snapc=None):
        await self.operate(oid, [O.write(offset, bytes(data))], write=True, snapc=snapc)

    async def remove(self, oid, snapc=None):
        await self.operate(oid, [O.delete()], write=True, snapc=snapc)

    async def execute(self, oid, c, method, data=b"", read_only=False):
        self.calls.append((oid, c, method, data))
        return b""

    def names(self, oid):
        return [ops for o, ops, _ in self.log if o == oid]


class FakeObjectMap:
    """The ObjectMap surface the image core uses."""

    def __init__(self, n, state=OBJECT_NONEXISTENT):
        self.states = [state] * n
        self.invalid = False
        self.updates: list[tuple[int, int, int, int | None]] = []
        self.closed = False

    def size(self):
        return len(self.states)

    def state(self, n):
        return self.states[n]

    def may_exist(self, n):
        return self.invalid or n >= len(self.states) or self.states[n] != OBJECT_NONEXISTENT

    def may_not_exist(self, n):
        return self.invalid or n >= len(self.states) or self.states[n] not in (OBJECT_EXISTS, OBJECT_EXISTS_CLEAN)

    async def update(self, start, end, new, cur=None):
        self.updates.append((start, end, new, cur))
        for i in range(start, min(end, len(self.states))):
            s = self.states[i]
            if cur is None or s == cur or (cur == OBJECT_EXISTS and s == OBJECT_EXISTS_CLEAN):
                self.states[i] = new
        return True

    async def pre_write(self, ns):
        for n in ns:
            if self.states[n] != OBJECT_EXISTS:
                await self.update(n, n + 1, OBJECT_EXISTS)

    async def pre_remove(self, ns):
        for n in ns:
            if self.states[n] not in (OBJECT_NONEXISTENT, OBJECT_PENDING):
                await self.update(n, n + 1, OBJECT_PENDING)

    async def post_remove(self, ns):
        for n in ns:
            if self.states[n] == OBJECT_PENDING:
                await self.update(n, n + 1, OBJECT_NONEXISTENT, OBJECT_PENDING)

    async def resize(self, n, default):
        self.updates.append(("resize", n, default))
        self.states = self.states[:n] + [default] * max(0, n - len(self.states))

    async def close(self):
        self.closed = True


class FakeParent:
    """A parent image: ``size()`` and ``read()`` over a buffer."""

    def __init__(self, data: bytes):
        self.data = data
        self.reads: list[tuple[int, int]] = []

    def size(self):
        return len(self.data)

    async def read(self, off, n):
        self.reads.append((off, n))
        return self.data[off : off + n]

    async def close(self):
        pass


class FakeLock:
    """The ExclusiveLock surface: acquire calls on_acquired like the real one."""

    def __init__(self, img):
        self.img = img
        self.owner = False
        self.cookie = None
        self.acquires = 0
        self.released = 0

    def is_owner(self):
        return self.owner

    async def acquire(self):
        self.acquires += 1
        self.owner = True
        self.cookie = "auto 1234"
        await self.img._on_lock_acquired()

    async def release(self):
        if self.owner:
            await self.img._on_lock_releasing()
            self.owner = False
            self.cookie = None
            self.released += 1

    async def close(self):
        await self.release()


def make_image(size=8 * OBJ, *, features=F.RBD_FEATURE_LAYERING, om=None, parent: bytes | None = None,
               overlap=None, snaps=(), layout=None, read_only=False) -> tuple[AsyncImage, FakeIoctx]:
    io = FakeIoctx()
    img = AsyncImage(io, "img", "abc", read_only)
    img.object_prefix = "rbd_data.abc"
    img.order = 16
    img.layout = layout or Layout.from_order(16)
    img._size = size
    img._features = features
    img.snapc = cls.SnapContext(max(snaps) if snaps else 0, sorted(snaps, reverse=True))
    img.object_map = om
    if parent is not None:
        img.parent = ParentInfo(cls.ParentImageSpec(1, "", "par", 4), len(parent) if overlap is None else overlap)
        img.parent_image = FakeParent(parent)
    return img, io


def oid(n):
    return f"rbd_data.abc.{n:016x}"


# -- pure helpers ------------------------------------------------------------------------


def test_prune_parent_extents_clips_at_overlap():
    assert prune_parent_extents([(0, 100), (100, 50), (300, 10)], 120) == [(0, 100), (100, 20)]
    assert prune_parent_extents([(0, 100)], 0) == []
    assert prune_parent_extents([(50, 10)], 1000) == [(50, 10)]


def test_prune_discard_extent_like_librbd():
    g = 64 * KiB
    osz = 4 << 20
    assert prune_discard_extent(0, osz, osz, g) == (0, osz)
    assert prune_discard_extent(1, 2 * g, osz, g) == (g, g)
    assert prune_discard_extent(100, 1000, osz, g)[1] == 0  # too small: nothing freed
    assert prune_discard_extent(5, 17, osz, 0) == (5, 17)  # write_zeroes: exact
    # granularity == object size: a tail up to the object end is kept as is
    assert prune_discard_extent(100, OBJ - 100, OBJ, OBJ) == (100, OBJ - 100)
    assert prune_discard_extent(100, 200, OBJ, OBJ)[1] == 0


def test_extent_to_file_reverses_striping():
    lay = Layout(OBJ, 16 * KiB, 3)
    # object 4 = object set 1, position 1: its first stripe unit is file block 13
    assert extent_to_file(lay, 4, 0, 20 * KiB) == [(13 * 16 * KiB, 16 * KiB), (16 * 16 * KiB, 4 * KiB)]


def test_feature_policy_pacific_defaults_writable_journaling_refused():
    assert F.PYCEPH_FEATURES_DEFAULT == 0x3D
    check_feature_policy(0x3D, 0x3D, read_only=False)
    with pytest.raises(errors.FeatureNotSupported, match="journaling"):
        check_feature_policy(0x3D | F.RBD_FEATURE_JOURNALING, 0x7D, read_only=False)


def test_object_map_names():
    assert object_map_name("abc") == "rbd_object_map.abc"
    assert object_map_name("abc", 0x1F) == "rbd_object_map.abc.000000000000001f"


# -- plain images with an object map ---------------------------------------------------------


def test_write_marks_object_map_before_writing():
    om = FakeObjectMap(8)
    img, io = make_image(om=om)
    run(img.write(OBJ - 10, b"x" * 20))
    assert om.states[:3] == [OBJECT_EXISTS, OBJECT_EXISTS, OBJECT_NONEXISTENT]
    assert io.objects[oid(0)][-10:] == b"x" * 10 and io.objects[oid(1)] == b"x" * 10
    # an EXISTS object is not updated again
    n = len(om.updates)
    run(img.write(0, b"y"))
    assert len(om.updates) == n


def test_discard_removes_truncates_zeroes_and_skips_missing():
    om = FakeObjectMap(8)
    img, io = make_image(om=om)
    data = random.Random(1).randbytes(4 * OBJ)
    run(img.write(0, data))
    io.log.clear()
    # object 0: middle (zero); object 1: whole (remove); object 2: tail (truncate);
    # object 5 does not exist (object map): skipped without an op
    run(img.discard(16 * KiB, 16 * KiB, granularity=4 * KiB))
    run(img.discard(OBJ, OBJ))
    run(img.discard(2 * OBJ + 32 * KiB, OBJ - 32 * KiB, granularity=4 * KiB))
    run(img.discard(5 * OBJ, OBJ))
    assert io.names(oid(0)) == [["zero"]]
    assert io.names(oid(1)) == [["delete"]]
    assert io.names(oid(2)) == [["truncate"]]
    assert io.names(oid(5)) == []
    assert om.states[:4] == [OBJECT_EXISTS, OBJECT_NONEXISTENT, OBJECT_EXISTS, OBJECT_EXISTS]
    assert (1, 2, OBJECT_PENDING, None) in om.updates and (1, 2, OBJECT_NONEXISTENT, OBJECT_PENDING) in om.updates
    expect = bytearray(data)
    expect[16 * KiB : 32 * KiB] = bytes(16 * KiB)
    expect[OBJ : 2 * OBJ] = bytes(OBJ)
    expect[2 * OBJ + 32 * KiB : 3 * OBJ] = bytes(OBJ - 32 * KiB)
    assert run(img.read(0, 4 * OBJ)) == bytes(expect)


def test_discard_granularity_and_write_zeroes():
    img, io = make_image()
    run(img.write(0, b"\xff" * OBJ))
    io.log.clear()
    run(img.discard(100, 1000))  # smaller than 64K after alignment: nothing
    assert io.log == []
    run(img.write_zeroes(100, 1000))  # exact
    assert io.names(oid(0)) == [["zero"]]
    assert run(img.read(0, 2000)) == b"\xff" * 100 + bytes(1000) + b"\xff" * 900


def test_writes_carry_the_snap_context():
    img, io = make_image(snaps=[3, 7])
    run(img.write(0, b"abc"))
    run(img.discard(OBJ, OBJ))
    assert all(sc == (7, (7, 3)) for _, _, sc in io.log)


# -- clones ------------------------------------------------------------------------------------


def test_clone_read_falls_through_within_overlap_only():
    parent = random.Random(2).randbytes(3 * OBJ)
    img, io = make_image(parent=parent, overlap=2 * OBJ + 100)
    assert run(img.read(0, OBJ)) == parent[:OBJ]
    got = run(img.read(2 * OBJ, OBJ))
    assert got == parent[2 * OBJ : 2 * OBJ + 100] + bytes(OBJ - 100)
    io.objects[oid(0)] = bytearray(b"child")  # an existing child object hides the parent
    assert run(img.read(0, 10)) == b"child" + bytes(5)


def test_clone_read_through_striping_maps_back_to_image_offsets():
    lay = Layout(OBJ, 16 * KiB, 2)
    parent = random.Random(3).randbytes(4 * OBJ)
    img, io = make_image(parent=parent, layout=lay, size=4 * OBJ)
    assert run(img.read(0, 4 * OBJ)) == parent


def test_clone_write_copies_up_in_one_op():
    parent = random.Random(4).randbytes(2 * OBJ)
    img, io = make_image(parent=parent)
    run(img.write(100, b"new"))
    # guarded write -> ENOENT -> [copyup, write] with the image snapc
    assert io.names(oid(0)) == [["stat", "write"], ["rbd.copyup", "write"]]
    assert bytes(io.objects[oid(0)]) == parent[:100] + b"new" + parent[103:OBJ]
    assert run(img.read(0, 2 * OBJ)) == parent[:100] + b"new" + parent[103:]
    # second write: plain guarded write
    run(img.write(200, b"z"))
    assert io.names(oid(0))[-1] == ["stat", "write"]


def test_clone_full_object_write_without_snapshots_skips_copyup():
    parent = random.Random(5).randbytes(2 * OBJ)
    img, io = make_image(parent=parent)
    run(img.write(OBJ, b"q" * OBJ))
    assert io.names(oid(1)) == [["writefull"]]


def test_clone_copyup_with_snapshots_is_deep_and_updates_snapshot_maps():
    parent = random.Random(6).randbytes(2 * OBJ)
    om = FakeObjectMap(2)
    img, io = make_image(parent=parent, om=om, snaps=[5, 9], features=0x3D)
    run(img.write(10, b"w"))
    logs = [(ops, sc) for o, ops, sc in io.log if o == oid(0)]
    # object map says missing: straight to copy-up; empty snapc copy-up, then the write
    assert logs == [(["rbd.copyup"], (0, ())), (["write"], (9, (9, 5)))]
    snap_updates = [(o, m) for o, c, m, _ in io.calls if m == "object_map_update"]
    assert snap_updates == [(object_map_name("abc", 5), "object_map_update"),
                            (object_map_name("abc", 9), "object_map_update")]
    # oldest snapshot EXISTS, later ones EXISTS_CLEAN (fast-diff)
    states = [data[16] for o, c, m, data in io.calls if m == "object_map_update"]
    assert states == [OBJECT_EXISTS, OBJECT_EXISTS_CLEAN]
    assert om.states[0] == OBJECT_EXISTS


def test_clone_zero_parent_data_copyup_is_empty():
    img, io = make_image(parent=bytes(2 * OBJ))
    run(img.write(5, b"a"))
    cu = [d for o, c, m, d in io.calls if m == "copyup"]
    assert cu == [b""]
    assert bytes(io.objects[oid(0)]) == bytes(5) + b"a"


def test_clone_discard_hides_parent():
    parent = random.Random(7).randbytes(2 * OBJ)
    img, io = make_image(parent=parent)
    run(img.discard(0, OBJ))  # whole object in the overlap, no snapshots: create+truncate
    assert io.names(oid(0)) == [["create", "truncate"]]
    assert run(img.read(0, OBJ)) == bytes(OBJ)
    run(img.discard(OBJ + 64 * KiB - 64 * KiB, 64 * KiB))  # == whole object 1 (OBJ = 64K)
    assert run(img.read(OBJ, OBJ)) == bytes(OBJ)


def test_copyup_object_for_flatten():
    parent = bytearray(random.Random(8).randbytes(3 * OBJ))
    parent[2 * OBJ :] = bytes(OBJ)  # object 2 reads as zeros from the parent
    img, io = make_image(parent=bytes(parent), overlap=2 * OBJ + 10)
    # librbd's trigger_copyup: an empty write that copies up
    assert run(img.copyup_object(1, True)) is True
    assert io.names(oid(1)) == [["stat", "write"], ["rbd.copyup", "write"]]
    assert bytes(io.objects[oid(1)]) == parent[OBJ : 2 * OBJ]
    assert run(img.copyup_object(5, True)) is False  # beyond the overlap
    run(img.copyup_object(2, True))  # all zeros in the parent: nothing to copy
    assert oid(2) not in io.objects
    run(img.copyup_object(1, True))  # already there: the guarded empty write succeeds
    assert io.names(oid(1))[-1] == ["stat", "write"]


def test_copyup_object_with_snapshots_and_object_map():
    parent = random.Random(9).randbytes(2 * OBJ)
    om = FakeObjectMap(2)
    img, io = make_image(parent=parent, om=om, snaps=[4], features=0x3D)
    assert run(img.copyup_object(0, True)) is True
    # deep copy-up: empty snapc first, then the (empty) write with the snap context
    assert [(ops, sc) for o, ops, sc in io.log if o == oid(0)] == [
        (["rbd.copyup"], (0, ())), (["write"], (4, (4,)))]
    assert om.states[0] == OBJECT_EXISTS  # head written after the snapshot
    assert [(o, d[16]) for o, c, m, d in io.calls if m == "object_map_update"] == [
        (object_map_name("abc", 4), OBJECT_EXISTS)]
    assert run(img.copyup_object(0, True)) is False  # the object map says it exists


# -- resize ------------------------------------------------------------------------------------


def test_shrink_trims_like_librbd():
    om = FakeObjectMap(8)
    img, io = make_image(om=om)
    img.exclusive_lock = FakeLock(img)
    img._lock_ready = True
    img.exclusive_lock.owner, img.exclusive_lock.cookie = True, "auto 1"

    async def no_refresh():
        return None

    img.refresh = no_refresh
    run(img.write(0, b"\x01" * 8 * OBJ))
    io.log.clear()
    progress = []
    run(img.resize(3 * OBJ + 10, on_progress=lambda d, t: progress.append((d, t))))
    assert sorted(o for o in io.objects) == [oid(0), oid(1), oid(2), oid(3)]
    assert len(io.objects[oid(3)]) == 10
    assert (4, 8, OBJECT_PENDING, OBJECT_EXISTS) in om.updates
    assert (4, 8, OBJECT_NONEXISTENT, OBJECT_PENDING) in om.updates
    assert ("resize", 4, OBJECT_NONEXISTENT) in om.updates
    hdr = [ops for o, ops, _ in io.log if o == img.header_oid]
    assert hdr == [["lock.assert_locked", "rbd.set_size"]]
    assert progress[-1] == (4, 4)
    assert img.size() == 3 * OBJ + 10
    with pytest.raises(errors.InvalidArgumentError):
        run(img.resize(OBJ, allow_shrink=False))


def test_grow_resizes_object_map_first():
    om = FakeObjectMap(2)
    img, io = make_image(size=2 * OBJ, om=om)

    async def no_refresh():
        return None

    img.refresh = no_refresh
    run(img.resize(5 * OBJ))
    assert om.updates == [("resize", 5, OBJECT_NONEXISTENT)]
    assert [ops for o, ops, _ in io.log if o == img.header_oid] == [["rbd.set_size"]]
    assert struct.unpack("<Q", [d for o, c, m, d in io.calls if m == "set_size"][0])[0] == 5 * OBJ


# -- exclusive lock / gating -----------------------------------------------------------------


def test_lock_taken_lazily_on_first_write_and_released_with_barrier():
    img, io = make_image(features=F.RBD_FEATURE_LAYERING | F.RBD_FEATURE_EXCLUSIVE_LOCK)
    lock = img.exclusive_lock = FakeLock(img)
    refreshed = []

    async def refresh():
        refreshed.append(1)

    img.refresh = refresh

    async def go():
        assert lock.acquires == 0
        assert await img.read(0, 4) == bytes(4)  # reads need no lock
        assert lock.acquires == 0
        await img.write(0, b"abcd")
        assert lock.acquires == 1 and refreshed == [1]
        await img.write(4, b"efgh")
        assert lock.acquires == 1
        # a peer's request: on_releasing waits for writes in flight
        w = asyncio.ensure_future(img.write(8, b"x" * (3 * OBJ)))
        await asyncio.sleep(0)
        await lock.release()
        assert w.done() and lock.released == 1
        await img.write(0, b"z")  # re-acquired
        assert lock.acquires == 2
        await img.close()
        assert lock.released == 2

    run(go())


def test_write_barrier_blocks_new_writes():
    img, io = make_image()
    order = []

    async def go():
        async with img.write_barrier():
            t = asyncio.ensure_future(img.write(0, b"a"))
            await asyncio.sleep(0.01)
            assert not t.done()
            order.append("barrier")
        await t
        order.append("write")

    run(go())
    assert order == ["barrier", "write"]


def test_read_only_and_update_features_validation():
    img, io = make_image(read_only=True)
    with pytest.raises(errors.ReadOnlyImage):
        run(img.write(0, b"a"))
    with pytest.raises(errors.ReadOnlyImage):
        run(img.discard(0, 10))
    img, io = make_image(features=0x3D)
    with pytest.raises(errors.InvalidArgumentError, match="already enabled"):
        run(img.update_features(F.RBD_FEATURE_OBJECT_MAP, True))
    with pytest.raises(errors.InvalidArgumentError, match="immutable"):
        run(img.update_features(F.RBD_FEATURE_LAYERING, False))
    with pytest.raises(errors.InvalidArgumentError, match="immutable"):
        run(img.update_features(F.RBD_FEATURE_DEEP_FLATTEN, True))
    with pytest.raises(errors.InvalidArgumentError, match="cannot disable exclusive-lock"):
        run(img.update_features(F.RBD_FEATURE_EXCLUSIVE_LOCK, False))
    with pytest.raises(errors.FeatureNotSupported):
        run(img.update_features(F.RBD_FEATURE_JOURNALING, True))
    img, io = make_image(features=F.RBD_FEATURE_LAYERING)
    with pytest.raises(errors.InvalidArgumentError, match="exclusive-lock must be enabled"):
        run(img.update_features(F.RBD_FEATURE_OBJECT_MAP, True))
    with pytest.raises(errors.InvalidArgumentError, match="already disabled"):
        run(img.update_features(F.RBD_FEATURE_FAST_DIFF, False))
