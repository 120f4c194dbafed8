"""Snapshot operations (pyceph.rbd.snapshot) over an in-memory cls_rbd.

The fake below keeps each RBD header as Python state and implements the cls_rbd
methods pyceph calls by *decoding our request payloads* with the layouts of
src/cls/rbd/cls_rbd.cc (so an encoder bug shows up as a decode failure), with the
OSD-side rules librbd relies on: -ESTALE for an old snap id, -EEXIST for a taken
name, -EBUSY when removing a protected snapshot or one with clone-v2 children,
the trash namespace, child counts, parent detach keeping the spec for snapshots.
It also serves the clone tests (tests/unit/test_rbd_clone.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import struct
from dataclasses import dataclass, field

import pytest

from pyceph.encoding import Decoder, Encoder
from pyceph.errors import (
    FunctionNotSupported,
    ImageBusy,
    ImageExists,
    ImageNotFound,
    InvalidArgumentError,
    ReadOnlyImage,
    make_ex,
)
from pyceph.osd import ops as O
from pyceph.rbd import cls_client as cls
from pyceph.rbd import snapshot as S
from pyceph.rbd.features import (
    RBD_FEATURE_DEEP_FLATTEN,
    RBD_FEATURE_EXCLUSIVE_LOCK,
    RBD_FEATURE_LAYERING,
    RBD_FEATURE_OBJECT_MAP,
    RBD_OPERATION_FEATURE_CLONE_CHILD,
    RBD_OPERATION_FEATURE_CLONE_PARENT,
    RBD_OPERATION_FEATURE_SNAP_TRASH,
)
from pyceph.rbd.striping import Layout, data_object_name, get_num_objects

NOSNAP = cls.CEPH_NOSNAP
MiB = 1 << 20


def fail(err: int, what: str = "fake osd"):
    return make_ex(-err, what)


# ---------------------------------------------------------------------------
# in-memory cluster


@dataclass
class Snap:
    id: int
    name: str
    ns: cls.SnapshotNamespace
    size: int
    protection: int = cls.RBD_PROTECTION_STATUS_UNPROTECTED
    child_count: int = 0
    timestamp: tuple[int, int] = (1700000000, 0)
    parent_overlap: int | None = None


@dataclass
class Header:
    size: int
    order: int
    features: int
    prefix: str
    op_features: int = 0
    snap_seq: int = 0
    snaps: dict[int, Snap] = field(default_factory=dict)
    parent: cls.ClsRbdParent | None = None
    children: dict[int, set[tuple[int, str, str]]] = field(default_factory=dict)
    metadata: dict[str, bytes] = field(default_factory=dict)
    lock_cookie: str | None = None
    stripe: tuple[int, int] = (0, 0)


class FakeOSDMap:
    def __init__(self) -> None:
        self.pools = {1: "rbd", 2: "other"}
        self.require_min_compat_client = 12  # luminous

    def get_pool_name(self, pool_id: int) -> str:
        return self.pools[pool_id]


class FakeRados:
    def __init__(self) -> None:
        self.osdmap = FakeOSDMap()
        self.headers: dict[tuple[int, str, str], Header] = {}  # (pool, ns, image id)
        self.ids: dict[tuple[int, str, str], str] = {}  # (pool, ns, name) -> id
        self.children_v1: dict[tuple[int, str], dict[tuple[int, str, int], set[str]]] = {}
        self.objects: dict[tuple[int, str, str], bytes] = {}
        self.removed: list[tuple[int, str]] = []
        self.pool_snap_seq = 0
        self.released: list[int] = []
        self.rollbacks: list[tuple[str, int, tuple]] = []
        self.calls: list[tuple[str, str]] = []
        self.stale_next = 0  # snapshot_add answers -ESTALE this many times

    async def open_ioctx(self, pool: int | str, namespace: str = "") -> "FakeIoctx":
        pid = pool if isinstance(pool, int) else {v: k for k, v in self.osdmap.pools.items()}[pool]
        return FakeIoctx(self, pid, namespace)

    def add_image(self, pool: int, name: str, image_id: str, size: int, order: int = 22,
                  features: int = RBD_FEATURE_LAYERING, ns: str = "") -> Header:
        h = Header(size, order, features, "rbd_data." + image_id)
        self.headers[(pool, ns, image_id)] = h
        self.ids[(pool, ns, name)] = image_id
        return h


class FakeIoctx:
    max_concurrency = 4

    def __init__(self, rados: FakeRados, pool_id: int, namespace: str = "") -> None:
        self.rados = rados
        self.pool_id = pool_id
        self.pool_name = rados.osdmap.pools[pool_id]
        self.namespace = namespace

    def set_namespace(self, ns: str) -> None:
        self.namespace = ns

    # -- pool snaps / data ops -------------------------------------------------
    async def selfmanaged_snap_create(self) -> int:
        self.rados.pool_snap_seq += 1
        return self.rados.pool_snap_seq

    async def selfmanaged_snap_remove(self, snap_id: int) -> None:
        self.rados.released.append(snap_id)

    async def rollback(self, oid: str, snap_id: int, snapc) -> None:
        self.rados.rollbacks.append((oid, snap_id, snapc))

    async def remove(self, oid: str, snapc=None) -> None:
        self.rados.removed.append((self.pool_id, oid))

    # -- cls -------------------------------------------------------------------
    async def execute(self, oid: str, cls_name: str, method: str, data: bytes = b"", read_only: bool = False) -> bytes:
        self.rados.calls.append((oid, method))
        fn = getattr(self, f"_{cls_name}_{method}", None)
        if fn is None:
            raise fail(errno.EOPNOTSUPP, f"{cls_name}.{method}")
        d = Decoder(data)
        out = fn(oid, d)
        if d.remaining:
            raise AssertionError(f"{method}: {d.remaining} input bytes left over")
        return out or b""

    async def operate(self, oid: str, ops: list, *, write: bool, snapc=None, snapid=None) -> list:
        for op in ops:
            assert op.op == O.CEPH_OSD_OP_CALL
            clen, mlen, _, _ = op.cls
            name = op.indata[:clen].decode()
            method = op.indata[clen:clen + mlen].decode()
            op.outdata = await self.execute(oid, name, method, op.indata[clen + mlen:], not write)
        return ops

    # -- helpers -----------------------------------------------------------------
    def _hdr(self, oid: str) -> Header:
        assert oid.startswith("rbd_header.")
        h = self.rados.headers.get((self.pool_id, self.namespace, oid[len("rbd_header."):]))
        if h is None:
            raise fail(errno.ENOENT, oid)
        return h

    def _snap(self, h: Header, snap_id: int) -> Snap:
        if snap_id not in h.snaps:
            raise fail(errno.ENOENT, f"snap {snap_id}")
        return h.snaps[snap_id]

    # rbd_id / rbd_directory
    def _rbd_get_id(self, oid: str, d: Decoder) -> bytes:
        key = (self.pool_id, self.namespace, oid[len("rbd_id."):])
        if key not in self.rados.ids:
            raise fail(errno.ENOENT, oid)
        return Encoder().string(self.rados.ids[key]).bytes()

    def _rbd_dir_get_name(self, oid: str, d: Decoder) -> bytes:
        want = d.string()
        for (pool, ns, name), iid in self.rados.ids.items():
            if (pool, ns) == (self.pool_id, self.namespace) and iid == want:
                return Encoder().string(name).bytes()
        raise fail(errno.ENOENT, "dir_get_name")

    def _rbd_trash_get(self, oid: str, d: Decoder) -> bytes:
        d.string()
        raise fail(errno.ENOENT, "trash_get")

    # header reads
    def _rbd_get_snapcontext(self, oid: str, d: Decoder) -> bytes:
        h = self._hdr(oid)
        snaps = sorted(h.snaps, reverse=True)
        return Encoder().u64(h.snap_seq).list(snaps, Encoder.u64).bytes()

    def _rbd_snapshot_get(self, oid: str, d: Decoder) -> bytes:
        s = self._snap(self._hdr(oid), d.u64())
        info = cls.SnapshotInfo(s.id, s.ns, s.name, s.size, s.timestamp, s.child_count)
        return info.encode(Encoder()).bytes()

    def _rbd_get_protection_status(self, oid: str, d: Decoder) -> bytes:
        return Encoder().u8(self._snap(self._hdr(oid), d.u64()).protection).bytes()

    def _rbd_get_size(self, oid: str, d: Decoder) -> bytes:
        h = self._hdr(oid)
        sid = d.u64()
        size = h.size if sid == NOSNAP else self._snap(h, sid).size
        return Encoder().u8(h.order).u64(size).bytes()

    def _rbd_get_features(self, oid: str, d: Decoder) -> bytes:
        d.u64()
        d.bool()
        return Encoder().u64(self._hdr(oid).features).u64(0).bytes()

    def _rbd_get_stripe_unit_count(self, oid: str, d: Decoder) -> bytes:
        h = self._hdr(oid)
        su, sc = h.stripe
        return Encoder().u64(su or 1 << h.order).u64(sc or 1).bytes()

    def _rbd_op_features_get(self, oid: str, d: Decoder) -> bytes:
        return Encoder().u64(self._hdr(oid).op_features).bytes()

    def _rbd_parent_get(self, oid: str, d: Decoder) -> bytes:
        p = self._hdr(oid).parent or cls.ClsRbdParent()
        return cls.ParentImageSpec(p.pool_id, p.pool_namespace, p.image_id, p.snap_id).encode(Encoder()).bytes()

    def _rbd_parent_overlap_get(self, oid: str, d: Decoder) -> bytes:
        h = self._hdr(oid)
        sid = d.u64()
        e = Encoder()
        ov = (h.parent.head_overlap if h.parent else None) if sid == NOSNAP else self._snap(h, sid).parent_overlap
        return (e.u8(0) if ov is None else e.u8(1).u64(ov)).bytes()

    def _rbd_metadata_list(self, oid: str, d: Decoder) -> bytes:
        start, maxr = d.string(), d.u64()
        items = {k: v for k, v in sorted(self._hdr(oid).metadata.items()) if k > start}
        items = dict(list(items.items())[: maxr or 1024])
        return Encoder().map(items, Encoder.string, Encoder.blob).bytes()

    def _rbd_children_list(self, oid: str, d: Decoder) -> bytes:
        h = self._hdr(oid)
        sid = d.u64()
        self._snap(h, sid)
        kids = sorted(h.children.get(sid, set()))
        return Encoder().list([cls.ChildImageSpec(p, ns, i) for p, ns, i in kids],
                              lambda e, c: c.encode(e)).bytes()

    # header writes
    def _rbd_snapshot_add(self, oid: str, d: Decoder) -> None:
        h = self._hdr(oid)
        name, sid = d.string(), d.u64()
        ns = cls.SnapshotNamespace.decode(d)
        if self.rados.stale_next:
            self.rados.stale_next -= 1
            raise fail(errno.ESTALE, "snapshot_add")
        if sid < h.snap_seq:
            raise fail(errno.ESTALE, "snapshot_add")
        for s in h.snaps.values():
            if (s.name == name and s.ns.type == ns.type) or s.id == sid:
                raise fail(errno.EEXIST, "snapshot_add")
        h.snap_seq = sid
        overlap = h.parent.head_overlap if h.parent else None
        h.snaps[sid] = Snap(sid, name, ns, h.size, parent_overlap=overlap)

    def _rbd_snapshot_remove(self, oid: str, d: Decoder) -> None:
        h = self._hdr(oid)
        s = self._snap(h, d.u64())
        if s.protection != cls.RBD_PROTECTION_STATUS_UNPROTECTED or s.child_count:
            raise fail(errno.EBUSY, "snapshot_remove")
        del h.snaps[s.id]
        if not any(x.ns.type == cls.SNAPSHOT_NAMESPACE_TYPE_TRASH for x in h.snaps.values()):
            h.op_features &= ~RBD_OPERATION_FEATURE_SNAP_TRASH

    def _rbd_snapshot_rename(self, oid: str, d: Decoder) -> None:
        h = self._hdr(oid)
        sid, dst = d.u64(), d.string()
        if any(s.name == dst and s.ns.type == 0 for s in h.snaps.values()):
            raise fail(errno.EEXIST, "snapshot_rename")
        self._snap(h, sid).name = dst

    def _rbd_snapshot_trash_add(self, oid: str, d: Decoder) -> None:
        h = self._hdr(oid)
        s = self._snap(h, d.u64())
        if s.ns.type == cls.SNAPSHOT_NAMESPACE_TYPE_TRASH:
            raise fail(errno.EEXIST, "snapshot_trash_add")
        s.ns = cls.SnapshotNamespace(cls.SNAPSHOT_NAMESPACE_TYPE_TRASH,
                                     {"original_name": s.name, "original_snapshot_namespace_type": s.ns.type})
        s.name = f"trash-uuid-{s.id}"
        h.op_features |= RBD_OPERATION_FEATURE_SNAP_TRASH

    def _rbd_set_protection_status(self, oid: str, d: Decoder) -> None:
        h = self._hdr(oid)
        sid, status = d.u64(), d.u8()
        if not h.features & RBD_FEATURE_LAYERING:
            raise fail(errno.ENOEXEC, "set_protection_status")
        self._snap(h, sid).protection = status

    def _rbd_op_features_set(self, oid: str, d: Decoder) -> None:
        h = self._hdr(oid)
        v, mask = d.u64(), d.u64()
        h.op_features = (h.op_features & ~mask) | (v & mask)

    def _rbd_parent_attach(self, oid: str, d: Decoder) -> None:
        h = self._hdr(oid)
        spec = cls.ParentImageSpec.decode(d)
        overlap, reattach = d.u64(), d.bool()
        if h.parent is not None and not reattach:
            raise fail(errno.EEXIST, "parent_attach")
        h.parent = cls.ClsRbdParent(spec.pool_id, spec.pool_namespace, spec.image_id, spec.snap_id,
                                    min(overlap, h.size))

    def _rbd_parent_detach(self, oid: str, d: Decoder) -> None:
        h = self._hdr(oid)
        if h.parent is None or h.parent.head_overlap is None:
            raise fail(errno.ENOENT, "parent_detach")
        snap_refs = [s for s in h.snaps.values() if s.parent_overlap is not None]
        if snap_refs and h.features & RBD_FEATURE_DEEP_FLATTEN:
            for s in snap_refs:
                s.parent_overlap = None
            snap_refs = []
        if snap_refs:
            h.parent.head_overlap = None
        else:
            h.parent = None
            h.op_features &= ~RBD_OPERATION_FEATURE_CLONE_CHILD

    def _rbd_metadata_set(self, oid: str, d: Decoder) -> None:
        self._hdr(oid).metadata.update(d.map(Decoder.string, Decoder.blob))

    def _rbd_child_attach(self, oid: str, d: Decoder) -> None:
        h = self._hdr(oid)
        sid = d.u64()
        c = cls.ChildImageSpec.decode(d)
        s = self._snap(h, sid)
        kids = h.children.setdefault(sid, set())
        key = (c.pool_id, c.pool_namespace, c.image_id)
        if key in kids:
            raise fail(errno.EEXIST, "child_attach")
        kids.add(key)
        s.child_count += 1
        h.op_features |= RBD_OPERATION_FEATURE_CLONE_PARENT

    def _rbd_child_detach(self, oid: str, d: Decoder) -> None:
        h = self._hdr(oid)
        sid = d.u64()
        c = cls.ChildImageSpec.decode(d)
        s = self._snap(h, sid)
        key = (c.pool_id, c.pool_namespace, c.image_id)
        if key not in h.children.get(sid, set()):
            raise fail(errno.ENOENT, "child_detach")
        h.children[sid].discard(key)
        s.child_count -= 1
        if not any(h.children.values()):
            h.op_features &= ~RBD_OPERATION_FEATURE_CLONE_PARENT

    # rbd_children (v1)
    def _v1(self) -> dict:
        return self.rados.children_v1.setdefault((self.pool_id, self.namespace), {})

    def _rbd_add_child(self, oid: str, d: Decoder) -> None:
        assert oid == "rbd_children"
        key, child = (d.s64(), d.string(), d.u64()), d.string()
        kids = self._v1().setdefault(key, set())
        if child in kids:
            raise fail(errno.EEXIST, "add_child")
        kids.add(child)

    def _rbd_remove_child(self, oid: str, d: Decoder) -> None:
        key, child = (d.s64(), d.string(), d.u64()), d.string()
        kids = self._v1().get(key, set())
        if child not in kids:
            raise fail(errno.ENOENT, "remove_child")
        kids.discard(child)
        if not kids:
            del self._v1()[key]

    def _rbd_get_children(self, oid: str, d: Decoder) -> bytes:
        key = (d.s64(), d.string(), d.u64())
        kids = self._v1().get(key)
        if not kids:
            raise fail(errno.ENOENT, "get_children")
        return Encoder().list(sorted(kids), Encoder.string).bytes()

    # cls_lock
    def _lock_assert_locked(self, oid: str, d: Decoder) -> None:
        op = cls.AssertOp.decode(d)
        h = self._hdr(oid)
        if op.name != "rbd_lock" or op.tag != "internal" or op.cookie != h.lock_cookie:
            raise fail(errno.EBUSY, "assert_locked")


class FakeObjectMap:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    async def snapshot_add(self, snap_id: int) -> None:
        self.calls.append(("snapshot_add", snap_id))

    async def snapshot_remove(self, snap_id: int, next_snap_id: int) -> None:
        self.calls.append(("snapshot_remove", snap_id, next_snap_id))

    async def rollback(self, snap_id: int) -> None:
        self.calls.append(("rollback", snap_id))

    async def load(self, num_objects: int) -> None:
        self.calls.append(("load", num_objects))


class FakeImage:
    """The AsyncImage surface the snapshot/clone modules use."""

    def __init__(self, ioctx: FakeIoctx, name: str, read_only: bool = False, snap_id: int = NOSNAP,
                 lock: bool = False) -> None:
        self.ioctx = ioctx
        self.name = name
        self.image_id = ioctx.rados.ids[(ioctx.pool_id, ioctx.namespace, name)]
        self.header_oid = "rbd_header." + self.image_id
        self.read_only = read_only
        self.snap_id = snap_id
        self.hdr = ioctx.rados.headers[(ioctx.pool_id, ioctx.namespace, self.image_id)]
        self.layout = Layout.from_order(self.hdr.order)
        self.object_prefix = self.hdr.prefix
        self.snapc = cls.SnapContext(self.hdr.snap_seq, sorted(self.hdr.snaps, reverse=True))
        self.object_map = FakeObjectMap() if self.hdr.features & RBD_FEATURE_OBJECT_MAP else None
        self.events: list[str] = []
        self.lock_feature = lock
        self.copied: list[tuple[int, bool]] = []
        self.cookie: str | None = None

    def size(self) -> int:
        return self.hdr.size

    def features(self) -> int:
        return self.hdr.features

    async def acquire_lock(self) -> None:
        self.events.append("acquire_lock")
        if self.lock_feature:
            self.cookie = self.hdr.lock_cookie = "auto 42"

    def lock_cookie(self) -> str | None:
        return self.cookie

    @contextlib.asynccontextmanager
    async def maintenance_op(self):
        await self.acquire_lock()
        self.events.append("maint_enter")
        yield
        self.events.append("maint_exit")

    @contextlib.asynccontextmanager
    async def write_barrier(self):
        self.events.append("barrier_enter")
        yield
        self.events.append("barrier_exit")

    async def refresh(self) -> None:
        self.events.append("refresh")
        self.snapc = cls.SnapContext(self.hdr.snap_seq, sorted(self.hdr.snaps, reverse=True))

    async def notify_header_update(self) -> None:
        self.events.append("notify")

    async def resize(self, size: int, allow_shrink: bool = True, on_progress=None) -> None:
        self.events.append(f"resize {size}")
        self.hdr.size = size

    async def copyup_object(self, objectno: int, deep: bool) -> None:
        self.copied.append((objectno, deep))

    async def close(self) -> None:
        self.events.append("close")


def run(coro):
    return asyncio.run(coro)


def world(features: int = RBD_FEATURE_LAYERING, size: int = 10 * MiB, lock: bool = False):
    r = FakeRados()
    io = FakeIoctx(r, 1)
    r.add_image(1, "img", "abc123", size, features=features)
    return r, io, FakeImage(io, "img", lock=lock)


# ---------------------------------------------------------------------------
# tests


def test_create_list_and_snapc():
    r, io, img = world()
    sid = run(S.create(img, "s1"))
    assert sid == 1
    assert img.snapc.seq == 1 and img.snapc.snaps == [1]
    # lock held and writes blocked around snapshot_add + refresh, notified after
    assert img.events == ["acquire_lock", "maint_enter", "refresh", "maint_exit", "notify"]
    sid2 = run(S.create(img, "s2"))
    assert img.snapc.snaps == [sid2, sid]
    snaps = run(S.list(img))
    assert [(s["id"], s["name"], s["size"], s["protected"], s["namespace_name"]) for s in snaps] == [
        (1, "s1", 10 * MiB, False, "user"), (2, "s2", 10 * MiB, False, "user")]
    assert snaps[0]["timestamp"] == (1700000000, 0)


def test_create_duplicate_name_and_readonly():
    r, io, img = world()
    run(S.create(img, "s1"))
    with pytest.raises(ImageExists):
        run(S.create(img, "s1"))
    with pytest.raises(InvalidArgumentError):
        run(S.create(img, ""))
    ro = FakeImage(io, "img", read_only=True)
    with pytest.raises(ReadOnlyImage):
        run(S.create(ro, "s2"))
    at_snap = FakeImage(io, "img", snap_id=1)
    with pytest.raises(ReadOnlyImage):
        run(S.remove(at_snap, "s1"))


def test_create_retries_on_estale_and_releases_on_error():
    r, io, img = world()
    r.stale_next = 2
    sid = run(S.create(img, "s1"))
    assert sid == 3  # two ids lost to -ESTALE, like librbd they are not released
    assert r.released == []
    # a name collision detected by the OSD releases the allocated id
    r.headers[(1, "", "abc123")].snaps[2] = Snap(2, "late", cls.SnapshotNamespace(), 0)
    orig = S.snapshot_infos

    async def stale_view(ioctx, hdr):  # the early check misses the racing snapshot
        return [i for i in await orig(ioctx, hdr) if i.name != "late"]

    S.snapshot_infos = stale_view
    try:
        with pytest.raises(ImageExists):
            run(S.create(img, "late"))
    finally:
        S.snapshot_infos = orig
    assert r.released == [4]


def test_create_asserts_lock_in_same_op_when_owner():
    r, io, img = world(features=RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK, lock=True)
    run(S.create(img, "s1"))
    assert ("rbd_header.abc123", "assert_locked") in r.calls
    i = r.calls.index(("rbd_header.abc123", "assert_locked"))
    assert r.calls[i + 1] == ("rbd_header.abc123", "snapshot_add")
    # someone else's lock: the compound op fails before snapshot_add runs
    r.headers[(1, "", "abc123")].lock_cookie = "auto 7"
    img.acquire_lock = lambda: asyncio.sleep(0)
    with pytest.raises(Exception) as ei:
        run(S.create(img, "s2"))
    assert ei.value.errno == errno.EBUSY
    assert [s.name for s in r.headers[(1, "", "abc123")].snaps.values()] == ["s1"]


def test_object_map_snapshot_hooks():
    r, io, img = world(features=RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK | RBD_FEATURE_OBJECT_MAP)
    a = run(S.create(img, "a"))
    b = run(S.create(img, "b"))
    run(S.remove(img, "a"))
    run(S.remove(img, "b"))
    assert img.object_map.calls == [("snapshot_add", a), ("snapshot_add", b),
                                    ("snapshot_remove", a, b), ("snapshot_remove", b, NOSNAP)]


def test_remove_rules():
    r, io, img = world()
    sid = run(S.create(img, "s1"))
    with pytest.raises(ImageNotFound):
        run(S.remove(img, "nope"))
    run(S.protect(img, "s1"))
    with pytest.raises(ImageBusy, match="protected"):
        run(S.remove(img, "s1"))
    run(S.unprotect(img, "s1"))
    run(S.remove(img, "s1"))
    h = r.headers[(1, "", "abc123")]
    assert h.snaps == {}
    assert r.released == [sid]
    # librbd order: trash first, then release the pool snap id, then the record
    methods = [m for _, m in r.calls]
    assert methods.index("snapshot_trash_add") < methods.index("snapshot_remove")
    assert img.snapc.snaps == []
    assert not h.op_features & RBD_OPERATION_FEATURE_SNAP_TRASH


def test_remove_with_v2_children_goes_to_trash():
    r, io, img = world()
    sid = run(S.create(img, "s1"))
    h = r.headers[(1, "", "abc123")]
    h.children[sid] = {(1, "", "kid")}
    h.snaps[sid].child_count = 1
    run(S.remove(img, "s1"))  # succeeds: moved to the trash
    s = h.snaps[sid]
    assert s.ns.type == cls.SNAPSHOT_NAMESPACE_TYPE_TRASH
    assert s.ns.fields["original_name"] == "s1"
    assert r.released == []
    assert h.op_features & RBD_OPERATION_FEATURE_SNAP_TRASH
    assert [d["namespace_name"] for d in run(S.list(img))] == ["trash"]
    assert run(S.list(img, all_namespaces=False)) == []
    # the name is free again
    run(S.create(img, "s1"))


def test_rename():
    r, io, img = world()
    run(S.create(img, "a"))
    run(S.create(img, "b"))
    with pytest.raises(ImageExists):
        run(S.rename(img, "a", "b"))
    with pytest.raises(ImageNotFound):
        run(S.rename(img, "zz", "c"))
    run(S.rename(img, "a", "c"))
    assert [s["name"] for s in run(S.list(img))] == ["c", "b"]


def test_protect_unprotect():
    r, io, img = world()
    run(S.create(img, "s"))
    assert not run(S.is_protected(img, "s"))
    with pytest.raises(InvalidArgumentError, match="already unprotected"):
        run(S.unprotect(img, "s"))
    run(S.protect(img, "s"))
    assert run(S.is_protected(img, "s"))
    with pytest.raises(ImageBusy, match="already protected"):
        run(S.protect(img, "s"))
    assert run(S.list(img))[0]["protected"] is True


def test_unprotect_refused_with_children_restores_protection():
    r, io, img = world()
    sid = run(S.create(img, "s"))
    run(S.protect(img, "s"))
    # a v1 child in another pool's rbd_children
    r.children_v1[(2, "")] = {(1, "abc123", sid): {"kid1"}}
    with pytest.raises(ImageBusy, match="other/kid1"):
        run(S.unprotect(img, "s"))
    assert r.headers[(1, "", "abc123")].snaps[sid].protection == cls.RBD_PROTECTION_STATUS_PROTECTED
    del r.children_v1[(2, "")]
    # a v2 child in the header blocks only when asked to (librbd ignores v2 children)
    h = r.headers[(1, "", "abc123")]
    h.children[sid] = {(1, "", "kid2")}
    h.snaps[sid].child_count = 1
    with pytest.raises(ImageBusy, match="rbd/kid2"):
        run(S.unprotect(img, "s", check_v2_children=True))
    assert h.snaps[sid].protection == cls.RBD_PROTECTION_STATUS_PROTECTED
    run(S.unprotect(img, "s"))
    assert h.snaps[sid].protection == cls.RBD_PROTECTION_STATUS_UNPROTECTED


def test_protect_needs_layering():
    r, io, img = world(features=0)
    run(S.create(img, "s"))
    with pytest.raises(FunctionNotSupported) as ei:
        run(S.protect(img, "s"))
    assert ei.value.errno == errno.ENOSYS


def test_rollback_resizes_and_rolls_every_object():
    r, io, img = world(features=RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK | RBD_FEATURE_OBJECT_MAP,
                       size=10 * MiB)
    sid = run(S.create(img, "s"))
    r.headers[(1, "", "abc123")].size = 20 * MiB  # grown after the snapshot
    progress: list[tuple[int, int]] = []
    run(S.rollback(img, "s", lambda d, t: progress.append((d, t))))
    n = get_num_objects(img.layout, 10 * MiB)
    assert n == 3
    assert "resize 10485760" in img.events
    assert sorted(o for o, _, _ in r.rollbacks) == [data_object_name("rbd_data.abc123", i) for i in range(n)]
    assert all(s == sid for _, s, _ in r.rollbacks)
    assert all(snapc == (sid, [sid]) for _, _, snapc in r.rollbacks)
    assert progress[-1] == (n, n) and len(progress) == n
    assert img.object_map.calls[-2:] == [("rollback", sid), ("load", n)]
    with pytest.raises(ImageNotFound):
        run(S.rollback(img, "missing"))


def test_snapshot_add_payload_layout():
    # cls_rbd.cc snapshot_add decodes: name, snap id, SnapshotNamespace
    data = cls.encode_snapshot_add(5, "nm")
    assert data == struct.pack("<I", 2) + b"nm" + struct.pack("<Q", 5) + bytes([1, 1]) + struct.pack("<II", 4, 0)
    assert cls.encode_set_protection_status(7, 2) == struct.pack("<QB", 7, 2)
    assert cls.encode_snapshot_rename(3, "x") == struct.pack("<QI", 3, 1) + b"x"
    assert cls.encode_parent_child(1, "p", 4, "c") == struct.pack("<qI", 1, 1) + b"p" + struct.pack("<QI", 4, 1) + b"c"
