"""Clones (pyceph.rbd.clone) over the in-memory cls_rbd of test_rbd_snapshot.

Checks the CloneRequest / FlattenRequest / DetachChildRequest steps: which
objects get which links for v1 and v2 clones, the "auto" format choice, the
protected-snapshot rule, cleanup after a failed clone, children listing across
pools, flatten copying up every overlapping object before the parent is cut, and
the removal of a trashed parent snapshot by its last child.
"""

from __future__ import annotations

import errno
import json

import pytest

from pyceph.errors import FunctionNotSupported, ImageExists, ImageNotFound, InvalidArgumentError
from pyceph.rbd import clone as C
from pyceph.rbd import cls_client as cls
from pyceph.rbd import snapshot as S
from pyceph.rbd.features import (
    RBD_FEATURE_DEEP_FLATTEN,
    RBD_FEATURE_EXCLUSIVE_LOCK,
    RBD_FEATURE_FAST_DIFF,
    RBD_FEATURE_LAYERING,
    RBD_FEATURE_OBJECT_MAP,
    RBD_OPERATION_FEATURE_CLONE_CHILD,
    RBD_OPERATION_FEATURE_CLONE_PARENT,
)
from pyceph.rbd.image import AsyncImage, AsyncRBD
from tests.unit.test_rbd_snapshot import MiB, FakeImage, FakeIoctx, FakeRados, run

DEFAULT = RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK | RBD_FEATURE_OBJECT_MAP | RBD_FEATURE_FAST_DIFF \
    | RBD_FEATURE_DEEP_FLATTEN


@pytest.fixture
def w(monkeypatch):
    """A parent image ``par`` (12 MiB) with snapshot ``s`` in pool 1; AsyncRBD.create /
    remove replaced by header bookkeeping in the fake."""
    r = FakeRados()
    created: list[dict] = []
    removed: list[str] = []

    async def fake_create(self, ioctx, name, size, order=None, features=None, stripe_unit=None, stripe_count=None):
        if (ioctx.pool_id, ioctx.namespace, name) in r.ids:
            raise ImageExists(f"image {name!r} already exists", errno=errno.EEXIST)
        created.append(dict(name=name, size=size, order=order, features=features,
                            stripe_unit=stripe_unit, stripe_count=stripe_count))
        r.add_image(ioctx.pool_id, name, f"id{name}", size, order=order or 22, features=features or 1,
                    ns=ioctx.namespace)

    async def fake_remove(self, ioctx, name, on_progress=None):
        removed.append(name)
        iid = r.ids.pop((ioctx.pool_id, ioctx.namespace, name))
        del r.headers[(ioctx.pool_id, ioctx.namespace, iid)]

    monkeypatch.setattr(AsyncRBD, "create", fake_create)
    monkeypatch.setattr(AsyncRBD, "remove", fake_remove)
    io = FakeIoctx(r, 1)
    hp = r.add_image(1, "par", "pid", 12 * MiB, order=20, features=DEFAULT)
    hp.metadata = {"conf_rbd_cache": b"false"}
    par = FakeImage(io, "par")
    sid = run(S.create(par, "s"))
    return r, io, par, sid, created, removed


def test_v1_clone_needs_protection_and_links_rbd_children(w):
    r, io, par, sid, created, removed = w
    with pytest.raises(InvalidArgumentError, match="protected"):
        run(C.clone(io, "par", "s", io, "kid", clone_format=1))
    assert created == []
    run(S.protect(par, "s"))
    cid = run(C.clone(io, "par", "s", io, "kid", clone_format=1))
    assert created[0]["size"] == 12 * MiB and created[0]["order"] == 20
    # parent features minus the implicit ones, fast-diff re-added with object-map
    assert created[0]["features"] == DEFAULT
    hc = r.headers[(1, "", cid)]
    assert (hc.parent.pool_id, hc.parent.image_id, hc.parent.snap_id, hc.parent.head_overlap) == (1, "pid", sid, 12 * MiB)
    assert r.children_v1[(1, "")] == {(1, "pid", sid): {cid}}
    assert not hc.op_features & RBD_OPERATION_FEATURE_CLONE_CHILD
    assert hc.metadata == {"conf_rbd_cache": b"false"}
    # unprotect is refused while the child exists
    with pytest.raises(Exception) as ei:
        run(S.unprotect(par, "s"))
    assert ei.value.errno == errno.EBUSY
    assert run(C.list_children(par)) == [("rbd", "kid")]
    kid = FakeImage(io, "kid")
    assert run(C.parent_info(kid)) == ("rbd", "par", "s")
    spec = run(C.get_parent_image_spec(kid))
    assert spec["image_id"] == "pid" and spec["snap_id"] == sid and spec["overlap"] == 12 * MiB
    # removal of the child drops the link
    run(C.detach_from_parent(io, kid))
    assert r.children_v1[(1, "")] == {}
    run(S.unprotect(par, "s"))


def test_v2_clone_attaches_child_in_parent_header(w):
    r, io, par, sid, created, removed = w
    io2 = FakeIoctx(r, 2)
    cid = run(C.clone(io, "par", "s", io2, "kid", features=RBD_FEATURE_LAYERING, clone_format=2))
    hp = r.headers[(1, "", "pid")]
    hc = r.headers[(2, "", cid)]
    assert hp.children[sid] == {(2, "", cid)}
    assert hp.snaps[sid].child_count == 1
    assert hp.op_features & RBD_OPERATION_FEATURE_CLONE_PARENT
    assert hc.op_features & RBD_OPERATION_FEATURE_CLONE_CHILD
    assert created[0]["features"] == RBD_FEATURE_LAYERING
    assert run(C.list_children(par)) == [("other", "kid")]
    assert run(C.list_children2(par))[0] == {"pool": "other", "pool_id": 2, "pool_namespace": "",
                                             "image": "kid", "id": cid, "trash": False}
    # v2 needs no protection; removing the snapshot parks it in the trash
    run(S.remove(par, "s"))
    assert hp.snaps[sid].ns.type == cls.SNAPSHOT_NAMESPACE_TYPE_TRASH
    assert r.released == []


def test_auto_format_follows_require_min_compat_client(w):
    r, io, par, sid, created, removed = w
    assert run(C.default_clone_format(r)) == 1  # luminous
    with pytest.raises(InvalidArgumentError):
        run(C.clone(io, "par", "s", io, "kid"))  # v1: unprotected snapshot refused
    r.osdmap.require_min_compat_client = 13  # mimic
    assert run(C.default_clone_format(r)) == 2
    cid = run(C.clone(io, "par", "s", io, "kid"))
    assert r.headers[(1, "", "pid")].children[sid] == {(1, "", cid)}


def test_auto_format_asks_the_monitor_first():
    class R:
        def __init__(self, dump):
            self.dump = dump
            self.osdmap = type("M", (), {"require_min_compat_client": 255})()  # bogus local value

        async def mon_command(self, cmd, inbuf=b"", timeout=30.0):
            assert cmd == {"prefix": "osd dump", "format": "json"}
            return 0, json.dumps(self.dump).encode(), ""

    assert run(C.default_clone_format(R({"require_min_compat_client": "luminous",
                                         "min_compat_client": "jewel"}))) == 1
    assert run(C.default_clone_format(R({"require_min_compat_client": "luminous",
                                         "min_compat_client": "mimic"}))) == 2
    assert run(C.default_clone_format(R({"require_min_compat_client": "nautilus"}))) == 2
    # no monitor answer: the local map; a value that is no release counts as unknown -> v1
    r = R({})
    r.mon_command = None
    assert run(C.default_clone_format(r)) == 1


def test_clone_errors(w):
    r, io, par, sid, created, removed = w
    with pytest.raises(ImageNotFound):
        run(C.clone(io, "nope", "s", io, "kid", clone_format=2))
    with pytest.raises(ImageNotFound):
        run(C.clone(io, "par", "nosnap", io, "kid", clone_format=2))
    with pytest.raises(InvalidArgumentError):
        run(C.clone(io, "par", None, io, "kid", clone_format=2))
    run(C.clone(io, "par", "s", io, "kid", clone_format=2))
    with pytest.raises(ImageExists):
        run(C.clone(io, "par", "s", io, "kid", clone_format=2))
    with pytest.raises(FunctionNotSupported):
        run(C.clone(io, "par", "s", io, "kid2", features=RBD_FEATURE_EXCLUSIVE_LOCK, clone_format=2))
    ns_io = FakeIoctx(r, 1, "ns1")
    with pytest.raises(Exception) as ei:
        run(C.clone(io, "par", "s", ns_io, "kid3", clone_format=1))
    assert ei.value.errno == errno.EXDEV


def test_failed_clone_is_cleaned_up(w, monkeypatch):
    r, io, par, sid, created, removed = w

    async def broken(*a, **k):
        raise InvalidArgumentError("metadata boom")

    monkeypatch.setattr(C, "_copy_metadata", broken)
    with pytest.raises(InvalidArgumentError, match="boom"):
        run(C.clone(io, "par", "s", io, "kid", clone_format=2))
    hp = r.headers[(1, "", "pid")]
    assert hp.children.get(sid, set()) == set() and hp.snaps[sid].child_count == 0
    assert removed == ["kid"]
    assert (1, "", "kid") not in r.ids


def test_flatten_copies_up_overlap_then_detaches(w):
    r, io, par, sid, created, removed = w
    cid = run(C.clone(io, "par", "s", io, "kid", clone_format=2))
    kid = FakeImage(io, "kid")
    prog: list[tuple[int, int]] = []
    run(C.flatten(kid, lambda d, t: prog.append((d, t))))
    assert sorted(kid.copied) == [(i, True) for i in range(12)]  # 12 x 1 MiB objects, deep-flatten
    assert prog[-1] == (12, 12)
    hc, hp = r.headers[(1, "", cid)], r.headers[(1, "", "pid")]
    assert hc.parent is None and not hc.op_features & RBD_OPERATION_FEATURE_CLONE_CHILD
    assert hp.children[sid] == set() and hp.snaps[sid].child_count == 0
    assert kid.events[-2:] == ["refresh", "notify"]
    with pytest.raises(InvalidArgumentError, match="no parent"):
        run(C.flatten(kid))


def test_flatten_without_deep_flatten_keeps_link_for_snapshots(w):
    r, io, par, sid, created, removed = w
    run(S.protect(par, "s"))
    cid = run(C.clone(io, "par", "s", io, "kid", features=RBD_FEATURE_LAYERING, clone_format=1))
    kid = FakeImage(io, "kid")
    run(S.create(kid, "ks"))
    run(C.flatten(kid))
    assert all(deep is False for _, deep in kid.copied)
    hc = r.headers[(1, "", cid)]
    # the head no longer uses the parent, the snapshot still does
    assert hc.parent is not None and hc.parent.head_overlap is None
    assert r.children_v1[(1, "")] == {(1, "pid", sid): {cid}}
    # removing the last snapshot drops the child link (SnapshotRemoveRequest::detach_child)
    run(S.remove(kid, "ks"))
    assert r.children_v1[(1, "")] == {}


def test_last_child_detach_removes_trashed_parent_snapshot(w, monkeypatch):
    r, io, par, sid, created, removed = w
    run(C.clone(io, "par", "s", io, "kid", clone_format=2))
    run(S.remove(par, "s"))  # -> trash
    hp = r.headers[(1, "", "pid")]
    assert hp.snaps[sid].ns.type == cls.SNAPSHOT_NAMESPACE_TYPE_TRASH

    async def fake_open(ioctx, name, *a, **k):
        return FakeImage(ioctx, name)

    monkeypatch.setattr(AsyncImage, "open", staticmethod(fake_open))
    kid = FakeImage(io, "kid")
    run(C.detach_from_parent(io, kid))
    assert sid not in hp.snaps
    assert r.released == [sid]
