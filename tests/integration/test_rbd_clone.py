"""Clones made by pyceph and by librbd on the real cluster (layering, clone v1 and v2).

librbd is the other party: ``rbd export`` of our clone must equal the parent
snapshot plus our later writes, ``rbd children`` must list our clones and our
``list_children`` librbd's, ``rbd snap unprotect`` must be refused while our v1
clone exists, and after our flatten ``rbd info`` must show no parent with the data
intact.  The cluster requires luminous clients, so Pacific's "auto" clone format
is v1 there; v2 is asked for explicitly (``--rbd-default-clone-format 2`` for rbd).
"""

from __future__ import annotations

import json

import pytest

from pyceph import errors
from pyceph.rbd import AsyncRBD
from pyceph.rbd import clone as C
from pyceph.rbd import snapshot as S
from tests.integration.helpers import rbd, rbd_json
from tests.integration.helpers import rbd_export as export
from tests.integration.test_rbd_snapshot import (  # noqa: F401 - fixtures
    MiB,
    PACIFIC_DEFAULT,
    Img,
    images,
    object_map_check,
    pattern,
    uniq,
)

FORMATS = [pytest.param(1, id="v1"), pytest.param(2, id="v2")]


def make_parent(cluster, rados, ioctx, images, features: str = PACIFIC_DEFAULT, size: int = 12 * MiB,
                protect: bool = True) -> tuple[str, bytes]:
    """Image with data and snapshot ``s`` (protected unless told); returns (name, snapshot data)."""
    name = uniq("par")
    images.append(name)
    rbd(cluster, "create", "--size", f"{size // MiB}M", "--object-size", "1M", "--image-feature", features, name)
    img = Img(rados, ioctx, name)
    try:
        img.write(0, pattern(10, 2 * MiB + 4096))
        img.write(7 * MiB, pattern(11, 3 * MiB))
        img.run(S.create(img.img, "s"))
        data = img.read_all()
        if protect:
            img.run(S.protect(img.img, "s"))
        img.write(0, b"after-snapshot" * 100)  # must not show in clones
    finally:
        img.close()
    return name, data


def children(cluster, spec: str) -> list[str]:
    return sorted(f"{c['pool']}/{c['image']}" for c in rbd_json(cluster, "children", spec))


def our_clone(rados, ioctx, parent: str, child: str, fmt: int, **kw) -> None:
    rados.run(C.clone(ioctx.core, parent, "s", ioctx.core, child, clone_format=fmt, **kw))


@pytest.mark.parametrize("fmt", FORMATS)
def test_our_clone_read_by_librbd(cluster, rados, ioctx, images, fmt):
    parent, pdata = make_parent(cluster, rados, ioctx, images, protect=(fmt == 1))
    child = uniq(f"kid{fmt}")
    images.insert(0, child)  # removed before the parent
    our_clone(rados, ioctx, parent, child, fmt)

    info = rbd_json(cluster, "info", child)
    assert info["parent"]["image"] == parent and info["parent"]["snapshot"] == "s"
    assert info["parent"]["overlap"] == 12 * MiB and info["size"] == 12 * MiB
    assert info["order"] == 20
    assert ("clone-child" in info["op_features"]) == (fmt == 2)
    # everything but names, ids and times is what librbd's own clone of the same format has
    ref = uniq(f"ref{fmt}")
    images.insert(0, ref)
    rbd(cluster, "clone", "--rbd-default-clone-format", str(fmt), f"{parent}@s", ref)
    skip = {"name", "id", "block_name_prefix", "create_timestamp", "access_timestamp", "modify_timestamp"}
    ref_info = rbd_json(cluster, "info", ref)
    assert {k: v for k, v in info.items() if k not in skip} == {k: v for k, v in ref_info.items() if k not in skip}
    assert list(info) == list(ref_info)
    assert children(cluster, f"{parent}@s") == sorted([f"rbd/{child}", f"rbd/{ref}"])
    rbd(cluster, "rm", "--no-progress", ref)
    images.remove(ref)
    assert ("clone-parent" in rbd_json(cluster, "info", parent)["op_features"]) == (fmt == 2)
    assert export(cluster, child) == pdata
    assert children(cluster, f"{parent}@s") == [f"rbd/{child}"]

    # our writes on top: copy-up keeps the rest of each object from the parent
    img = Img(rados, ioctx, child)
    try:
        img.write(MiB + 100, b"child!" * 1000)
        img.write(11 * MiB, b"end" * 100)
    finally:
        img.close()
    want = bytearray(pdata)
    want[MiB + 100:MiB + 100 + 6000] = b"child!" * 1000
    want[11 * MiB:11 * MiB + 300] = b"end" * 100
    assert export(cluster, child) == bytes(want)
    object_map_check(cluster, child)

    if fmt == 1:
        # librbd refuses to unprotect while our v1 clone exists
        r = rbd(cluster, "snap", "unprotect", f"{parent}@s", check=False)
        assert r.returncode != 0 and b"child" in r.stderr.lower()
        assert rbd_json(cluster, "info", f"{parent}@s")["protected"] == "true"

    # removing our clone (pyceph) unlinks it from the parent
    rados.run(AsyncRBD().remove(ioctx.core, child))
    images.remove(child)
    assert rbd_json(cluster, "children", f"{parent}@s") == []
    if fmt == 2:
        assert "clone-parent" not in rbd_json(cluster, "info", parent)["op_features"]
    else:
        rbd(cluster, "snap", "unprotect", f"{parent}@s")


@pytest.mark.parametrize("fmt", FORMATS)
def test_librbd_clones_listed_and_read_by_us(cluster, rados, ioctx, images, fmt):
    parent, pdata = make_parent(cluster, rados, ioctx, images, protect=True)
    child = uniq(f"lkid{fmt}")
    images.insert(0, child)
    rbd(cluster, "clone", "--rbd-default-clone-format", str(fmt), f"{parent}@s", child)
    pimg = Img(rados, ioctx, parent, snapshot="s")
    try:
        assert pimg.run(C.list_children(pimg.img)) == [("rbd", child)]
        kids = pimg.run(C.list_children2(pimg.img))
        assert [(k["pool"], k["image"], k["trash"]) for k in kids] == [("rbd", child, False)]
    finally:
        pimg.close()
    # the head lists the children of every snapshot
    pimg = Img(rados, ioctx, parent, read_only=True)
    try:
        assert pimg.run(C.list_children(pimg.img)) == [("rbd", child)]
        # librbd's v1 clone blocks our unprotect, its v2 clone too
        with pytest.raises(errors.ReadOnlyImage):
            pimg.run(S.unprotect(pimg.img, "s"))
    finally:
        pimg.close()
    pimg = Img(rados, ioctx, parent)
    try:
        if fmt == 1:
            with pytest.raises(errors.ImageBusy, match="child"):
                pimg.run(S.unprotect(pimg.img, "s"))
            assert pimg.run(S.is_protected(pimg.img, "s"))
        else:
            # like `rbd snap unprotect`, a v2 child does not block the unprotect
            pimg.run(S.unprotect(pimg.img, "s"))
            assert rbd_json(cluster, "info", f"{parent}@s")["protected"] == "false"
    finally:
        pimg.close()
    kid = Img(rados, ioctx, child, read_only=True)
    try:
        assert kid.run(C.parent_info(kid.img)) == ("rbd", parent, "s")
        assert kid.read_all() == pdata
    finally:
        kid.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_flatten_then_librbd_sees_no_parent(cluster, rados, ioctx, images, fmt):
    parent, pdata = make_parent(cluster, rados, ioctx, images, protect=(fmt == 1))
    child = uniq(f"flat{fmt}")
    images.insert(0, child)
    our_clone(rados, ioctx, parent, child, fmt)
    img = Img(rados, ioctx, child)
    try:
        img.write(3 * MiB, b"mine" * 1024)
        want = img.read_all()
        progress: list[tuple[int, int]] = []
        img.run(C.flatten(img.img, lambda d, t: progress.append((d, t))))
        assert progress[-1] == (12, 12)
        with pytest.raises(errors.InvalidArgumentError):
            img.run(C.flatten(img.img))
    finally:
        img.close()
    info = rbd_json(cluster, "info", child)
    assert "parent" not in info
    assert "clone-child" not in info["op_features"]
    assert export(cluster, child) == want
    assert rbd_json(cluster, "children", f"{parent}@s") == []
    object_map_check(cluster, child)
    # the parent snapshot is free again
    if fmt == 1:
        rbd(cluster, "snap", "unprotect", f"{parent}@s")
    rbd(cluster, "snap", "rm", "--no-progress", f"{parent}@s")


def test_flatten_librbd_clone_with_snapshot(cluster, rados, ioctx, images):
    """deep-flatten: the clone's own snapshot stops depending on the parent too."""
    parent, pdata = make_parent(cluster, rados, ioctx, images, protect=True)
    child = uniq("lflat")
    images.insert(0, child)
    rbd(cluster, "clone", f"{parent}@s", child)
    rbd(cluster, "snap", "create", f"{child}@ks")
    img = Img(rados, ioctx, child)
    try:
        img.run(C.flatten(img.img))
    finally:
        img.close()
    assert "parent" not in rbd_json(cluster, "info", child)
    assert "parent" not in rbd_json(cluster, "info", f"{child}@ks")
    assert export(cluster, child) == pdata
    assert export(cluster, f"{child}@ks") == pdata
    assert rbd_json(cluster, "children", f"{parent}@s") == []
    rbd(cluster, "snap", "unprotect", f"{parent}@s")
    object_map_check(cluster, child)
    object_map_check(cluster, f"{child}@ks")


def test_v2_parent_snapshot_goes_to_trash_until_last_child_leaves(cluster, rados, ioctx, images):
    parent, pdata = make_parent(cluster, rados, ioctx, images, protect=False)
    child = uniq("trkid")
    images.insert(0, child)
    our_clone(rados, ioctx, parent, child, 2)
    img = Img(rados, ioctx, parent)
    try:
        img.run(S.remove(img.img, "s"))  # v2 child: moved to the trash namespace
        snaps = img.run(S.list(img.img))
    finally:
        img.close()
    assert [s["namespace_name"] for s in snaps] == ["trash"]
    assert snaps[0]["trash"]["original_name"] == "s"
    listed = rbd_json(cluster, "snap", "ls", "--all", parent)
    assert [s["namespace"]["type"] for s in listed] == ["trash"]
    assert rbd_json(cluster, "snap", "ls", parent) == []
    assert "snap-trash" in rbd_json(cluster, "info", parent)["op_features"]
    assert export(cluster, child) == pdata  # the clone still reads through
    # librbd removing the last child removes the trashed snapshot
    rbd(cluster, "rm", "--no-progress", child)
    images.remove(child)
    assert rbd_json(cluster, "snap", "ls", "--all", parent) == []

    # and the same when our removal of the child is the last one
    img = Img(rados, ioctx, parent)
    try:
        img.run(S.create(img.img, "s2"))
    finally:
        img.close()
    child2 = uniq("trkid2")
    images.insert(0, child2)
    rados.run(C.clone(ioctx.core, parent, "s2", ioctx.core, child2, clone_format=2))
    rbd(cluster, "snap", "rm", "--no-progress", f"{parent}@s2")
    assert [s["namespace"]["type"] for s in rbd_json(cluster, "snap", "ls", "--all", parent)] == ["trash"]
    rados.run(AsyncRBD().remove(ioctx.core, child2))
    images.remove(child2)
    assert rbd_json(cluster, "snap", "ls", "--all", parent) == []
    info = rbd_json(cluster, "info", parent)
    assert "snap-trash" not in info["op_features"] and "clone-parent" not in info["op_features"]


def test_clone_rules(cluster, rados, ioctx, images):
    parent, _ = make_parent(cluster, rados, ioctx, images, features="layering", protect=False)
    no = [uniq("no") for _ in range(3)]
    images[:0] = no  # cleaned up should any of them wrongly appear
    with pytest.raises(errors.InvalidArgumentError, match="protected"):
        rados.run(C.clone(ioctx.core, parent, "s", ioctx.core, no[0], clone_format=1))
    # auto = v1 on this cluster (require_min_compat_client luminous): also refused --
    # also after our own snapshots moved the OSDMap on through incrementals
    assert rados.run(C.default_clone_format(ioctx.core.rados)) == 1
    with pytest.raises(errors.InvalidArgumentError, match="protected"):
        rados.run(C.clone(ioctx.core, parent, "s", ioctx.core, no[1]))
    with pytest.raises(errors.ImageNotFound):
        rados.run(C.clone(ioctx.core, parent, "nosuch", ioctx.core, no[2], clone_format=2))
    listed = json.loads(rbd(cluster, "ls", "--format", "json").stdout)
    assert not set(no) & set(listed)
    child = uniq("exists")
    images.insert(0, child)
    rbd(cluster, "image-meta", "set", parent, "conf_rbd_cache", "false")
    rbd(cluster, "image-meta", "set", parent, "user.note", "from the parent")
    rados.run(C.clone(ioctx.core, parent, "s", ioctx.core, child, clone_format=2, order=21))
    # the parent's image metadata is copied (CloneRequest::metadata_list/metadata_set)
    assert rbd_json(cluster, "image-meta", "list", child) == rbd_json(cluster, "image-meta", "list", parent)
    info = rbd_json(cluster, "info", child)
    # v2 clone: the OSD adds the internal "operations" feature with the op feature
    assert info["features"] == ["layering", "operations"] and info["order"] == 21
    with pytest.raises(errors.ImageExists):
        rados.run(C.clone(ioctx.core, parent, "s", ioctx.core, child, clone_format=2))
    # a failed clone leaves nothing behind
    assert sorted(json.loads(rbd(cluster, "ls", "--format", "json").stdout)).count(child) == 1
    assert children(cluster, f"{parent}@s") == [f"rbd/{child}"]


def test_cross_pool_v1_clone_found_by_every_pool_scan(cluster, rados, ioctx, images, nonpow2_pool):
    """A v1 child in another pool is linked in *that* pool's rbd_children: librbd and
    our unprotect must both find it there."""
    parent, pdata = make_parent(cluster, rados, ioctx, images, protect=True)
    other = rados.open_ioctx(nonpow2_pool)
    child = uniq("xpool")
    images.insert(0, f"{nonpow2_pool}/{child}")
    rados.run(C.clone(ioctx.core, parent, "s", other.core, child, clone_format=1))
    assert children(cluster, f"{parent}@s") == [f"{nonpow2_pool}/{child}"]
    assert export(cluster, f"{nonpow2_pool}/{child}") == pdata
    pimg = Img(rados, ioctx, parent)
    try:
        assert pimg.run(C.list_children(pimg.img)) == [(nonpow2_pool, child)]
        with pytest.raises(errors.ImageBusy, match=nonpow2_pool):
            pimg.run(S.unprotect(pimg.img, "s"))
    finally:
        pimg.close()
    assert rbd(cluster, "snap", "unprotect", f"{parent}@s", check=False).returncode != 0
    rados.run(AsyncRBD().remove(other.core, child))
    images.remove(f"{nonpow2_pool}/{child}")
    assert rbd_json(cluster, "children", f"{parent}@s") == []
    rbd(cluster, "snap", "unprotect", f"{parent}@s")


def test_clone_keeps_parent_striping_and_clone_of_clone(cluster, rados, ioctx, images):
    name = uniq("spar")
    images.append(name)
    rbd(cluster, "create", "--size", "8M", "--stripe-unit", "64K", "--stripe-count", "4", name)
    img = Img(rados, ioctx, name)
    try:
        img.write(0, pattern(20, 5 * MiB + 123))
        img.run(S.create(img.img, "s"))
        pdata = img.read_all()
    finally:
        img.close()
    kid = uniq("skid")
    images.insert(0, kid)
    our_clone(rados, ioctx, name, kid, 2)
    info = rbd_json(cluster, "info", kid)
    assert (info["stripe_unit"], info["stripe_count"], info["order"]) == (64 * 1024, 4, 22)
    assert export(cluster, kid) == pdata
    # a clone of the clone reads through two parents; our write lands in the middle one
    img = Img(rados, ioctx, kid)
    try:
        img.write(MiB, b"mid" * 1000)
        img.run(S.create(img.img, "ks"))
    finally:
        img.close()
    grand = uniq("gkid")
    images.insert(0, grand)
    rados.run(C.clone(ioctx.core, kid, "ks", ioctx.core, grand, clone_format=2))
    want = bytearray(pdata)
    want[MiB:MiB + 3000] = b"mid" * 1000
    assert export(cluster, grand) == bytes(want)
    assert rbd_json(cluster, "info", grand)["parent"]["image"] == kid


def test_flatten_creates_the_objects_librbd_creates(cluster, rados, ioctx, images):
    """librbd's flatten copies up with an empty write (io::util::trigger_copyup): an
    object whose parent range holds no data is not created.  Ours must leave the same
    set of data objects (else ``rbd du`` counts space librbd would not use)."""
    parent, _ = make_parent(cluster, rados, ioctx, images, protect=True)
    ours, theirs = uniq("fo"), uniq("ft")
    images[:0] = [ours, theirs]
    our_clone(rados, ioctx, parent, ours, 1)
    rbd(cluster, "clone", f"{parent}@s", theirs)
    img = Img(rados, ioctx, ours)
    try:
        img.run(C.flatten(img.img))
    finally:
        img.close()
    rbd(cluster, "flatten", "--no-progress", theirs)

    def objects(name: str) -> list[str]:
        prefix = rbd_json(cluster, "info", name)["block_name_prefix"] + "."
        return sorted(o[len(prefix):] for o in cluster.rados("-p", "rbd", "ls").split() if o.startswith(prefix))

    assert objects(ours) == objects(theirs)
    assert export(cluster, ours) == export(cluster, theirs)
    object_map_check(cluster, ours)


def test_shallow_flatten_keeps_snapshot_link_until_last_snapshot_goes(cluster, rados, ioctx, images):
    """Without deep-flatten, flatten cuts only the head: the clone's snapshot still
    reads through the parent and keeps the v1 link; removing that last snapshot
    (ours) drops the link (SnapshotRemoveRequest::detach_child)."""
    parent, pdata = make_parent(cluster, rados, ioctx, images, protect=True)
    child = uniq("shallow")
    images.insert(0, child)
    our_clone(rados, ioctx, parent, child, 1, features=1)  # layering only
    img = Img(rados, ioctx, child)
    try:
        img.run(S.create(img.img, "ks"))
        img.write(0, b"head" * 256)
        img.run(C.flatten(img.img))
    finally:
        img.close()
    assert "parent" not in rbd_json(cluster, "info", child)
    assert rbd_json(cluster, "info", f"{child}@ks")["parent"]["image"] == parent
    assert export(cluster, f"{child}@ks") == pdata
    assert children(cluster, f"{parent}@s") == [f"rbd/{child}"]
    assert rbd(cluster, "snap", "unprotect", f"{parent}@s", check=False).returncode != 0
    img = Img(rados, ioctx, child)
    try:
        img.run(S.remove(img.img, "ks"))
    finally:
        img.close()
    assert rbd_json(cluster, "children", f"{parent}@s") == []
    want = bytearray(pdata)
    want[:1024] = b"head" * 256
    assert export(cluster, child) == bytes(want)
    rbd(cluster, "snap", "unprotect", f"{parent}@s")
