"""``rbd diff`` / ``rbd du`` through pyceph.rbd.diff against the real ``rbd`` CLI.

Images are written by librbd (``rbd bench``, ``rbd import``), snapshotted with
``rbd snap create`` and shrunk/grown with ``rbd resize`` (which removes objects), then
the JSON that ``rbd diff --format json`` / ``rbd du --format json`` print must be
byte-for-byte what pyceph computes — through the list_snaps path and the fast-diff
(object map) path.  pyceph follows rbd 18+/20; with an older release's ``rbd`` as the
oracle the known differences are checked explicitly (release_compat).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import uuid

import pytest

from pyceph.rbd import AsyncImage
from pyceph.errors import InvalidArgumentError, ObjectNotFound
from pyceph.rbd import diff as D
from pyceph.rbd import object_map as O

from . import release_compat as RC
from .helpers import dumps

MiB = 1 << 20
KiB = 1 << 10
FAST = "layering,exclusive-lock,object-map,fast-diff"


def uniq(tag: str) -> str:
    return f"h3-{tag}-{uuid.uuid4().hex[:8]}"


def ours_diff(rados, ioctx, spec: str, from_snap: str | None, whole: bool) -> str:
    name, _, snap = spec.partition("@")

    async def go():
        img = await AsyncImage.open(ioctx.core, name, read_only=True, snapshot=snap or None)
        try:
            return await D.diff_list(img, from_snap, whole_object=whole)
        finally:
            await img.close()

    return dumps(rados.run(go()))


def theirs_diff(cluster, spec: str, from_snap: str | None, whole: bool) -> str:
    args = ["diff", f"rbd/{spec}", "--format", "json"]
    if from_snap:
        args += ["--from-snap", from_snap]
    if whole:
        args.append("--whole-object")
    return cluster.rbd(*args).strip()


def ours_du(rados, ioctx, name: str | None, **kw) -> str:
    return dumps(rados.run(D.disk_usage_report(ioctx.core, name, **kw)))


def theirs_du(cluster, spec: str, *extra: str) -> str:
    return cluster.rbd("du", spec, "--format", "json", *extra).strip()


def bench(cluster, name: str, total: str, io_size: str = "4K", pattern: str = "rand") -> None:
    cluster.rbd("bench", "--io-type", "write", "--io-size", io_size, "--io-total", total,
                "--io-pattern", pattern, f"rbd/{name}")


@pytest.fixture(scope="module")
def snapped_image(cluster):
    """A fast-diff image: writes, snap s1, writes, snap s2, shrink+grow (objects
    removed), writes, snap s3, more writes; yields its name."""
    name = uniq("diff")
    cluster.rbd("create", "--size", "64M", "--image-feature", FAST, f"rbd/{name}")
    bench(cluster, name, "48K")
    cluster.rbd("snap", "create", f"rbd/{name}@s1")
    bench(cluster, name, "40K")
    cluster.rbd("snap", "create", f"rbd/{name}@s2")
    cluster.rbd("resize", "--allow-shrink", "--size", "37M", f"rbd/{name}", "--no-progress")
    cluster.rbd("resize", "--size", "64M", f"rbd/{name}", "--no-progress")
    bench(cluster, name, "16K", "64K", "seq")
    cluster.rbd("snap", "create", f"rbd/{name}@s3")
    bench(cluster, name, "24K")
    yield name
    cluster.rbd("snap", "purge", f"rbd/{name}", "--no-progress")
    cluster.rbd("rm", f"rbd/{name}", "--no-progress")


CASES = [
    ("", None), ("", "s1"), ("", "s2"), ("", "s3"),
    ("@s1", None), ("@s2", None), ("@s2", "s1"), ("@s3", "s1"), ("@s3", "s2"),
]


def object_snapsets(rados, ioctx, name: str) -> dict[int, O.SnapSet]:
    """``{objectno: SnapSet}`` of every data object of image ``name``."""

    async def go():
        img = await AsyncImage.open(ioctx.core, name, read_only=True)
        try:
            out = {}
            for objno in range(64 * MiB // img.layout.object_size):
                with contextlib.suppress(ObjectNotFound):
                    out[objno] = await O.list_snaps(ioctx.core, f"{img.object_prefix}.{objno:016x}")
            return out
        finally:
            await img.close()

    return rados.run(go())


@pytest.fixture(scope="module")
def snapped_truncated(rados, ioctx, snapped_image):
    """The objects of snapped_image that the shrink cut under snapshot s2."""
    return RC.truncated_objects(object_snapsets(rados, ioctx, snapped_image))


@pytest.mark.parametrize("whole", [False, True], ids=["extents", "whole-object"])
@pytest.mark.parametrize("at,from_snap", CASES, ids=[f"{a or 'head'}-from-{f}" for a, f in CASES])
def test_diff_matches_rbd(cluster, rados, ioctx, snapped_image, snapped_truncated, at, from_snap, whole):
    spec = snapped_image + at
    theirs = theirs_diff(cluster, spec, from_snap, whole)
    assert theirs != "[]" or (at, from_snap) != ("", None)
    ours = ours_diff(rados, ioctx, spec, from_snap, whole)
    # rbd 16 reports objects cut by the shrink with their pre-shrink extent
    RC.assert_diff_matches(json.loads(ours), json.loads(theirs), RC.rbd_major(cluster), snapped_truncated, 4 * MiB)
    if RC.rbd_major(cluster) >= RC.REEF:
        assert ours == theirs


def test_diff_reports_removed_objects_as_holes(cluster, rados, ioctx, snapped_image, snapped_truncated):
    # the shrink removed objects after s2: a diff from s2 must report exists=false
    out = json.loads(ours_diff(rados, ioctx, snapped_image, "s2", False))
    assert any(e["exists"] == "false" for e in out)
    RC.assert_diff_matches(out, json.loads(theirs_diff(cluster, snapped_image, "s2", False)),
                           RC.rbd_major(cluster), snapped_truncated, 4 * MiB)


@pytest.mark.parametrize("extra", [(), ("--exact",), ("--merge-snapshots",), ("--from-snap", "s1"),
                                   ("--from-snap", "s2", "--exact")], ids=lambda x: "_".join(x) or "plain")
def test_du_matches_rbd(cluster, rados, ioctx, snapped_image, extra):
    kw = {}
    if "--exact" in extra:
        kw["exact"] = True
    if "--merge-snapshots" in extra:
        kw["merge_snapshots"] = True
    if "--from-snap" in extra:
        kw["from_snap"] = extra[extra.index("--from-snap") + 1]
    assert ours_du(rados, ioctx, snapped_image, **kw) == theirs_du(cluster, f"rbd/{snapped_image}", *extra)


def test_du_of_a_snapshot_matches_rbd(cluster, rados, ioctx, snapped_image):
    assert ours_du(rados, ioctx, snapped_image, snap_name="s2") == theirs_du(cluster, f"rbd/{snapped_image}@s2")


def test_fast_diff_states_come_from_the_object_maps(rados, ioctx, snapped_image):
    async def go():
        img = await AsyncImage.open(ioctx.core, snapped_image, read_only=True)
        try:
            di = await D.describe(img)
            return await D.object_map_diff(di, di.snap_id_by_name("s2"), di.snap_id)
        finally:
            await img.close()

    async def never_written():
        # objects with neither a head nor a clone: rbd bench's random offsets decide how many
        img = await AsyncImage.open(ioctx.core, snapped_image, read_only=True)
        try:
            missing = []
            for objno in range(len(states)):
                try:
                    await ioctx.core.list_snaps(f"{img.object_prefix}.{objno:016x}")
                except ObjectNotFound:
                    missing.append(objno)
            return missing
        finally:
            await img.close()

    states = rados.run(go())
    # written after s2 -> new data; removed by the shrink -> new hole; never written -> hole
    assert {D.DIFF_STATE_DATA_UPDATED, D.DIFF_STATE_HOLE_UPDATED} <= set(states)
    assert [i for i, st in enumerate(states) if st == D.DIFF_STATE_HOLE] == rados.run(never_written())


def test_invalid_fast_diff_falls_back_to_list_snaps(cluster, rados, ioctx):
    """With FAST_DIFF_INVALID set (as our ObjectMap.invalidate writes it) librbd and we
    both take the list_snaps path: --whole-object diff and du must still agree."""
    name = uniq("inval")
    cluster.rbd("create", "--size", "24M", "--image-feature", FAST, f"rbd/{name}")
    try:
        bench(cluster, name, "24K")
        cluster.rbd("snap", "create", f"rbd/{name}@a")
        bench(cluster, name, "16K")
        info = json.loads(cluster.rbd("info", f"rbd/{name}", "--format", "json"))

        async def invalidate():
            om = O.ObjectMap(ioctx.core, info["id"])
            await om.invalidate(force=True)
            img = await AsyncImage.open(ioctx.core, name, read_only=True)
            try:
                di = await D.describe(img)
                with pytest.raises(InvalidArgumentError):
                    await D.object_map_diff(di, 0, di.snap_id)
            finally:
                await img.close()

        rados.run(invalidate())
        flags = json.loads(cluster.rbd("info", f"rbd/{name}", "--format", "json"))["flags"]
        assert flags == ["object map invalid", "fast diff invalid"]
        for from_snap in (None, "a"):
            assert ours_diff(rados, ioctx, name, from_snap, True) == theirs_diff(cluster, name, from_snap, True)
        assert ours_du(rados, ioctx, name) == theirs_du(cluster, f"rbd/{name}")
    finally:
        cluster.rbd("snap", "purge", f"rbd/{name}", "--no-progress")
        cluster.rbd("rm", f"rbd/{name}", "--no-progress")


@pytest.fixture(scope="module")
def plain_images(cluster, tmp_path_factory):
    """Images without object maps (list_snaps everywhere), incl. a striped one made by
    ``rbd import`` of a sparse file."""
    d = tmp_path_factory.mktemp("h3diff")
    names = []
    rnd = random.Random(4)
    for stripe in (None, ("64K", "4")):
        name = uniq("plain")
        path = d / name
        with open(path, "wb") as f:
            f.truncate(21 * MiB + 777)
            for _ in range(12):
                f.seek(rnd.randrange(0, 21 * MiB))
                f.write(os.urandom(rnd.randrange(1, 300 * KiB)))
        args = ["import", "--image-feature", "layering", str(path), f"rbd/{name}", "--no-progress"]
        if stripe:
            args[3:3] = ["--stripe-unit", stripe[0], "--stripe-count", stripe[1], "--order", "20"]
            args[2] = "layering,striping"
        cluster.rbd(*args)
        cluster.rbd("snap", "create", f"rbd/{name}@a")
        bench(cluster, name, "32K")
        names.append(name)
    yield names
    for name in names:
        cluster.rbd("snap", "purge", f"rbd/{name}", "--no-progress")
        cluster.rbd("rm", f"rbd/{name}", "--no-progress")


@pytest.mark.parametrize("which", [0, 1], ids=["default-layout", "striped-64K-x4"])
@pytest.mark.parametrize("from_snap,whole", [(None, False), ("a", False), (None, True), ("a", True)])
def test_plain_image_diff_and_du_match_rbd(cluster, rados, ioctx, plain_images, which, from_snap, whole):
    name = plain_images[which]
    assert ours_diff(rados, ioctx, name, from_snap, whole) == theirs_diff(cluster, name, from_snap, whole)
    assert ours_diff(rados, ioctx, name + "@a", None, whole) == theirs_diff(cluster, name + "@a", None, whole)
    assert ours_du(rados, ioctx, name) == theirs_du(cluster, f"rbd/{name}")


@pytest.fixture(scope="module")
def clone_image(cluster):
    """A clone (made by rbd) of a written parent snapshot, written after cloning and
    after its own snapshot c1; yields (parent, clone)."""
    parent, child = uniq("parent"), uniq("clone")
    cluster.rbd("create", "--size", "32M", "--image-feature", FAST + ",deep-flatten", f"rbd/{parent}")
    bench(cluster, parent, "40K")
    cluster.rbd("snap", "create", f"rbd/{parent}@base", "--no-progress")
    cluster.rbd("snap", "protect", f"rbd/{parent}@base")
    cluster.rbd("clone", f"rbd/{parent}@base", f"rbd/{child}")
    bench(cluster, child, "12K")
    cluster.rbd("snap", "create", f"rbd/{child}@c1", "--no-progress")
    bench(cluster, child, "8K")
    yield parent, child
    cluster.rbd("snap", "purge", f"rbd/{child}", "--no-progress")
    cluster.rbd("rm", f"rbd/{child}", "--no-progress")
    cluster.rbd("snap", "unprotect", f"rbd/{parent}@base")
    cluster.rbd("snap", "purge", f"rbd/{parent}", "--no-progress")
    cluster.rbd("rm", f"rbd/{parent}", "--no-progress")


@pytest.mark.parametrize("whole", [False, True], ids=["extents", "whole-object"])
@pytest.mark.parametrize("at,from_snap", [("", None), ("", "c1"), ("@c1", None)])
def test_clone_diff_includes_the_parent_like_rbd(cluster, rados, ioctx, clone_image, at, from_snap, whole):
    _, child = clone_image
    theirs = theirs_diff(cluster, child + at, from_snap, whole)
    assert ours_diff(rados, ioctx, child + at, from_snap, whole) == theirs
    if from_snap is None:
        # more than the child's own objects: the parent's data shows through
        assert len(json.loads(theirs)) > 3


def test_clone_du_matches_rbd(cluster, rados, ioctx, clone_image):
    parent, child = clone_image
    for name in (parent, child):
        assert ours_du(rados, ioctx, name) == theirs_du(cluster, f"rbd/{name}")


def test_pool_wide_du_matches_rbd(cluster, rados):
    """The whole-pool document (with totals) in a namespace of our own, so that the
    other images of the shared pool do not race the comparison."""
    ns = uniq("ns")
    cluster.rbd("namespace", "create", f"rbd/{ns}")
    names = [f"{ns}-a", f"{ns}-b"]
    try:
        cluster.rbd("create", "--size", "12M", "--image-feature", FAST, f"rbd/{ns}/{names[0]}")
        cluster.rbd("create", "--size", "9M", "--image-feature", "layering", f"rbd/{ns}/{names[1]}")
        for n in names:
            cluster.rbd("bench", "--io-type", "write", "--io-size", "4K", "--io-total", "20K",
                        "--io-pattern", "rand", f"rbd/{ns}/{n}")
        cluster.rbd("snap", "create", f"rbd/{ns}/{names[0]}@x", "--no-progress")
        cluster.rbd("bench", "--io-type", "write", "--io-size", "4K", "--io-total", "8K",
                    "--io-pattern", "rand", f"rbd/{ns}/{names[0]}")

        async def ours(**kw):
            io = await rados.core.open_ioctx("rbd", ns)
            return dumps(await D.disk_usage_report(io, None, **kw))

        cases = (((), {}), (("--exact",), {"exact": True}), (("--merge-snapshots",), {"merge_snapshots": True}))
        for extra, kw in cases:
            theirs = cluster.rbd("du", "-p", "rbd", "--namespace", ns, "--format", "json", *extra).strip()
            assert rados.run(ours(**kw)) == theirs, extra
    finally:
        for n in names:
            with contextlib.suppress(Exception):
                cluster.rbd("snap", "purge", f"rbd/{ns}/{n}", "--no-progress")
            with contextlib.suppress(Exception):
                cluster.rbd("rm", f"rbd/{ns}/{n}", "--no-progress")
        cluster.rbd("namespace", "remove", f"rbd/{ns}")
