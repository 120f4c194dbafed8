"""Snapshots made by pyceph and by librbd on the real cluster, each side checking the other.

librbd (the ``rbd`` CLI) is the oracle: pyceph's snapshots must be listed by
``rbd snap ls --format json`` exactly as librbd's own are, ``rbd export IMG@SNAP``
must give the data of the moment the snapshot was taken, librbd's snapshots must read
back identically through pyceph, a pyceph rollback must make ``rbd export`` equal the
snapshot, and protection changes must show in ``rbd info IMG@SNAP``.  Images with
Pacific's default features get ``rbd object-map check`` after each operation.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest

from pyceph import errors
from pyceph.rbd import AsyncImage
from pyceph.rbd import snapshot as S

from .helpers import rbd, rbd_json, tool
from .helpers import rbd_export as export

MiB = 1 << 20
PACIFIC_DEFAULT = "layering,exclusive-lock,object-map,fast-diff,deep-flatten"
FEATURE_SETS = [pytest.param("layering", id="layering"), pytest.param(PACIFIC_DEFAULT, id="default")]


def uniq(prefix: str) -> str:
    return f"h5-{prefix}-{uuid.uuid4().hex[:8]}"


def object_map_check(cluster, spec: str) -> None:
    """``rbd object-map check`` exits 0 even when it finds (and then invalidates) a
    wrong map: its stderr must be clean, and the flags must stay empty."""
    r = rbd(cluster, "object-map", "check", "--no-progress", spec, check=False)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 0, f"object-map check {spec}: {err}"
    assert "error" not in err.lower() and "invalid" not in err.lower(), f"object-map check {spec}:\n{err}"
    assert rbd_json(cluster, "info", spec)["flags"] == [], f"{spec} flags after object-map check"


def pattern(seed: int, n: int) -> bytes:
    return (os.urandom(16) + seed.to_bytes(4, "little")) * (n // 20) + bytes(n % 20)


@pytest.fixture
def images(cluster):
    """Names to clean up at the end, in list order (clones go first), snapshots
    unprotected and purged first."""
    names: list[str] = []
    yield names
    for name in names:
        for snap in json.loads(rbd(cluster, "snap", "ls", "--format", "json", name, check=False).stdout or b"[]"):
            if snap.get("protected") == "true":
                rbd(cluster, "snap", "unprotect", f"{name}@{snap['name']}", check=False)
        rbd(cluster, "snap", "purge", "--no-progress", name, check=False)
        rbd(cluster, "rm", "--no-progress", name, check=False)


class Img:
    """A pyceph image opened on the module's Rados loop, with sync wrappers."""

    def __init__(self, rados, ioctx, name: str, **kw):
        self.rados = rados
        self.img = rados.run(AsyncImage.open(ioctx.core, name, **kw))

    def __getattr__(self, attr):
        return getattr(self.img, attr)

    def run(self, coro):
        return self.rados.run(coro)

    def write(self, off: int, data: bytes) -> None:
        assert self.run(self.img.write(off, data)) == len(data)

    def read_all(self) -> bytes:
        return self.run(self.img.read(0, self.img.size()))

    def close(self) -> None:
        self.run(self.img.close())


@pytest.mark.parametrize("features", FEATURE_SETS)
def test_our_snapshot_is_librbds_snapshot(cluster, rados, ioctx, images, features):
    name = uniq("snap")
    images.append(name)
    rbd(cluster, "create", "--size", "20M", "--image-feature", features, name)
    img = Img(rados, ioctx, name)
    try:
        a = pattern(1, 3 * MiB)
        img.write(0, a)
        img.write(13 * MiB, b"tail" * 1024)
        before = img.read_all()
        sid = img.run(S.create(img.img, "ours"))
        assert img.snapc.seq == sid and img.snapc.snaps[0] == sid
        # writes after the snapshot must not reach it (the new snap context is in use)
        img.write(0, pattern(2, 5 * MiB))
        img.write(19 * MiB, b"x" * 4096)
        after = img.read_all()
    finally:
        img.close()
    rbd(cluster, "snap", "create", f"{name}@theirs")

    listed = rbd_json(cluster, "snap", "ls", name)
    assert [s["name"] for s in listed] == ["ours", "theirs"]
    ours, theirs = listed
    assert list(ours) == list(theirs)  # same keys, same order
    assert ours["id"] == sid and ours["size"] == theirs["size"] == 20 * MiB
    assert ours["protected"] == theirs["protected"] == "false"
    assert export(cluster, f"{name}@ours") == before
    assert export(cluster, f"{name}@theirs") == after
    assert export(cluster, name) == after
    if "object-map" in features:
        object_map_check(cluster, name)
        object_map_check(cluster, f"{name}@ours")
        object_map_check(cluster, f"{name}@theirs")

    # and our listing matches librbd's
    img = Img(rados, ioctx, name, read_only=True)
    try:
        mine = img.run(S.list(img.img))
    finally:
        img.close()
    assert [(s["id"], s["name"], s["size"], s["protected"]) for s in mine] == [
        (s["id"], s["name"], s["size"], s["protected"] == "true") for s in listed]
    for m, t in zip(mine, listed):
        assert time.ctime(m["timestamp"][0]) == t["timestamp"]


def test_librbd_snapshots_read_by_us(cluster, rados, ioctx, images, tmp_path):
    name = uniq("theirs")
    images.append(name)
    size = 9 * MiB
    v1 = pattern(3, size)
    src = tmp_path / "v1"
    src.write_bytes(v1)
    rbd(cluster, "import", "--no-progress", str(src), name)
    rbd(cluster, "snap", "create", f"{name}@one")
    rbd(cluster, "bench", "--io-type", "write", "--io-size", "64K", "--io-total", "2M", "--io-pattern", "rand",
        name)
    rbd(cluster, "snap", "create", f"{name}@two")
    head = export(cluster, name)
    assert head != v1
    for snap, want in (("one", v1), ("two", head)):
        img = Img(rados, ioctx, name, snapshot=snap)
        try:
            assert img.read_only
            assert img.read_all() == want
            with pytest.raises(errors.ReadOnlyImage):
                img.write(0, b"no")
        finally:
            img.close()
    img = Img(rados, ioctx, name, read_only=True)
    try:
        listed = img.run(S.list(img.img))
    finally:
        img.close()
    assert [s["name"] for s in listed] == ["one", "two"]
    assert [s["id"] for s in listed] == [s["id"] for s in rbd_json(cluster, "snap", "ls", name)]


@pytest.mark.parametrize("features", FEATURE_SETS)
def test_rollback_then_export_equals_snapshot(cluster, rados, ioctx, images, features):
    name = uniq("rb")
    images.append(name)
    rbd(cluster, "create", "--size", "16M", "--image-feature", features, name)
    img = Img(rados, ioctx, name)
    try:
        img.write(MiB, pattern(4, 6 * MiB))
        img.run(S.create(img.img, "base"))
        snap_data = img.read_all()
        # change, grow, and add data past the old end
        img.write(0, pattern(5, 9 * MiB))
        img.run(img.img.resize(24 * MiB))
        img.write(20 * MiB, b"grown" * 1000)
        progress: list[tuple[int, int]] = []
        img.run(S.rollback(img.img, "base", lambda d, t: progress.append((d, t))))
        assert img.size() == 16 * MiB
        assert progress and progress[-1] == (4, 4)
        assert img.read_all() == snap_data
    finally:
        img.close()
    assert rbd_json(cluster, "info", name)["size"] == 16 * MiB
    assert export(cluster, name) == snap_data
    if "object-map" in features:
        object_map_check(cluster, name)
        object_map_check(cluster, f"{name}@base")


def test_rollback_to_librbd_snapshot_while_unmapped(cluster, rados, ioctx, images):
    name = uniq("rb2")
    images.append(name)
    rbd(cluster, "create", "--size", "8M", "--image-feature", PACIFIC_DEFAULT, name)
    rbd(cluster, "bench", "--io-type", "write", "--io-size", "1M", "--io-total", "8M", name)
    rbd(cluster, "snap", "create", f"{name}@s")
    want = export(cluster, f"{name}@s")
    rbd(cluster, "bench", "--io-type", "write", "--io-size", "4K", "--io-total", "1M", "--io-pattern", "rand", name)
    assert export(cluster, name) != want
    img = Img(rados, ioctx, name)
    try:
        img.run(S.rollback(img.img, "s"))
    finally:
        img.close()
    assert export(cluster, name) == want
    object_map_check(cluster, name)


def test_protect_unprotect_rename_remove(cluster, rados, ioctx, images):
    name = uniq("prot")
    images.append(name)
    rbd(cluster, "create", "--size", "4M", "--image-feature", PACIFIC_DEFAULT, name)
    img = Img(rados, ioctx, name)
    try:
        img.run(S.create(img.img, "p"))
        assert rbd_json(cluster, "info", f"{name}@p")["protected"] == "false"
        img.run(S.protect(img.img, "p"))
        assert rbd_json(cluster, "info", f"{name}@p")["protected"] == "true"
        assert img.run(S.is_protected(img.img, "p"))
        with pytest.raises(errors.ImageBusy):
            img.run(S.protect(img.img, "p"))
        with pytest.raises(errors.ImageBusy, match="protected"):
            img.run(S.remove(img.img, "p"))
        # librbd refuses to remove it too
        r = rbd(cluster, "snap", "rm", "--no-progress", f"{name}@p", check=False)
        assert r.returncode != 0
        img.run(S.unprotect(img.img, "p"))
        assert rbd_json(cluster, "info", f"{name}@p")["protected"] == "false"
        with pytest.raises(errors.InvalidArgumentError):
            img.run(S.unprotect(img.img, "p"))
        img.run(S.rename(img.img, "p", "q"))
        assert [s["name"] for s in rbd_json(cluster, "snap", "ls", name)] == ["q"]
        with pytest.raises(errors.ImageNotFound):
            img.run(S.remove(img.img, "p"))
        img.run(S.create(img.img, "r"))
        with pytest.raises(errors.ImageExists):
            img.run(S.rename(img.img, "q", "r"))
        with pytest.raises(errors.ImageExists):
            img.run(S.create(img.img, "r"))
        img.run(S.remove(img.img, "q"))
        img.run(S.remove(img.img, "r"))
        assert img.snapc.snaps == []
    finally:
        img.close()
    assert rbd_json(cluster, "snap", "ls", "--all", name) == []
    info = rbd_json(cluster, "info", name)
    assert info["snapshot_count"] == 0 and info["op_features"] == []
    object_map_check(cluster, name)
    # librbd sees its own protection on a snapshot it made, and we read it
    rbd(cluster, "snap", "create", f"{name}@lib")
    rbd(cluster, "snap", "protect", f"{name}@lib")
    img = Img(rados, ioctx, name, read_only=True)
    try:
        assert img.run(S.is_protected(img.img, "lib"))
        with pytest.raises(errors.ReadOnlyImage):
            img.run(S.unprotect(img.img, "lib"))
    finally:
        img.close()
    rbd(cluster, "snap", "unprotect", f"{name}@lib")


def test_snapshot_of_locked_image_waits_for_librbd_to_release(cluster, rados, ioctx, images):
    """With a librbd writer holding the exclusive lock, our snapshot asks for the lock
    (librbd releases on request), is written under it, and the data stays consistent."""
    name = uniq("lock")
    images.append(name)
    rbd(cluster, "create", "--size", "8M", "--image-feature", PACIFIC_DEFAULT, name)
    bench = subprocess.Popen([*tool(cluster, "rbd"), "-c", str(cluster.conf_path), "bench", "--io-type", "write",
                              "--io-size", "4K", "--io-threads", "1", "--io-total", "48M", "--io-pattern", "rand",
                              name], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)
        assert bench.poll() is None, "rbd bench finished too early to overlap"
        img = Img(rados, ioctx, name)
        try:
            img.run(S.create(img.img, "during"))
        finally:
            img.close()
        assert bench.poll() is None, "rbd bench finished before our snapshot was done"
    finally:
        rc = bench.wait(timeout=300)
    assert rc == 0, bench.stderr.read().decode()  # librbd took the lock back and went on
    assert [s["name"] for s in rbd_json(cluster, "snap", "ls", name)] == ["during"]
    assert export(cluster, f"{name}@during") != export(cluster, name)
    object_map_check(cluster, name)
    object_map_check(cluster, f"{name}@during")
