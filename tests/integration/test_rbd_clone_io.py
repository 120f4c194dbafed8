"""Clones made by ``rbd clone`` read and written by pyceph (layering), librbd as oracle.

Reads fall through to the parent within the overlap; the first write of an object
copies it up (``rbd.copyup`` + the write in one op); with snapshots of the clone the
copy-up goes first with an empty snap context so the snapshots keep the parent data
(``rbd export clone@snap`` unchanged); discard of a parent-backed object hides the
parent; the parent is never touched; ``rbd object-map check`` passes on the clone.
"""

from __future__ import annotations

import random

import pytest

from pyceph import errors
from pyceph.rbd import Image

from .helpers import rbd, rbd_export, rbd_json
from .test_rbd_image_features import (
    MiB,
    object_map_check,
    read_all,
    rm,
    uniq,
)


def make_parent(cluster, name: str, size: int, seed: int, *create_args) -> bytes:
    """A parent image with random data everywhere but a hole, snapshot ``s`` protected."""
    rnd = random.Random(seed)
    content = bytearray(rnd.randbytes(size))
    content[size // 2 : size // 2 + MiB] = bytes(MiB)  # a hole in the parent too
    # written by librbd (rbd import), Pacific default features
    rbd(cluster, "import", "--no-progress", *create_args, "-", f"rbd/{name}", input=bytes(content))
    rbd(cluster, "snap", "create", f"rbd/{name}@s")
    rbd(cluster, "snap", "protect", f"rbd/{name}@s")
    return bytes(content)


def drop_parent(cluster, name: str) -> None:
    rbd(cluster, "snap", "unprotect", f"rbd/{name}@s", check=False)
    rbd(cluster, "snap", "purge", "--no-progress", f"rbd/{name}", check=False)
    rm(cluster, name)


@pytest.fixture(params=["default", "striped"])
def parent(request, cluster):
    name = uniq(f"par-{request.param}")
    args = [] if request.param == "default" else ["--stripe-unit", "64K", "--stripe-count", "3"]
    size = 14 * MiB + 4096
    content = make_parent(cluster, name, size, 17, *args)
    yield name, content
    drop_parent(cluster, name)


def test_clone_reads_and_writes(cluster, ioctx, parent):
    pname, pdata = parent
    child = uniq("clone")
    rbd(cluster, "clone", f"rbd/{pname}@s", f"rbd/{child}")
    try:
        info = rbd_json(cluster, "info", f"rbd/{child}")
        assert info["parent"]["image"] == pname
        with Image(ioctx, child) as img:
            assert img.parent_info() == ("rbd", pname, "s")
            assert img.overlap() == len(pdata)
            assert read_all(img) == pdata  # everything through the parent
            model = bytearray(pdata)
            rnd = random.Random(3)
            writes = [(100, 10), (4 * MiB - 5, 10), (8 * MiB, 4 * MiB), (len(pdata) - 3, 3),
                      (len(pdata) // 2 + 10, 20)]  # last one inside the parent's hole
            for off, n in writes:
                data = rnd.randbytes(n)
                img.write(data, off)
                model[off : off + n] = data
            assert read_all(img) == model
        assert rbd_export(cluster, f"rbd/{child}") == model
        assert rbd_export(cluster, f"rbd/{pname}@s") == pdata
        assert rbd_export(cluster, f"rbd/{pname}") == pdata
        object_map_check(cluster, f"rbd/{child}")
        # and librbd's later writes over our copied-up objects read back through pyceph
        rbd(cluster, "bench", "--io-type", "write", "--io-size", "4K", "--io-total", "64K",
            "--io-pattern", "rand", f"rbd/{child}")
        theirs = rbd_export(cluster, f"rbd/{child}")
        with Image(ioctx, child, read_only=True) as img:
            assert read_all(img) == theirs
    finally:
        rm(cluster, child)


def test_clone_snapshot_keeps_parent_data_after_copyup(cluster, ioctx, parent):
    pname, pdata = parent
    child = uniq("clsnap")
    rbd(cluster, "clone", f"rbd/{pname}@s", f"rbd/{child}")
    try:
        rbd(cluster, "snap", "create", f"rbd/{child}@before")
        model = bytearray(pdata)
        with Image(ioctx, child) as img:
            img.write(b"A" * 5000, 2 * MiB)  # partial object: deep copy-up
            img.write(b"B" * (4 * MiB), 4 * MiB)  # whole object(s), snapshots present
            img.discard(8 * MiB, 4 * MiB)  # whole object: copy-up then truncate
            model[2 * MiB : 2 * MiB + 5000] = b"A" * 5000
            model[4 * MiB : 8 * MiB] = b"B" * (4 * MiB)
            model[8 * MiB : 12 * MiB] = bytes(4 * MiB)
            assert read_all(img) == model
        assert rbd_export(cluster, f"rbd/{child}") == model
        assert rbd_export(cluster, f"rbd/{child}@before") == pdata
        object_map_check(cluster, f"rbd/{child}")
        object_map_check(cluster, f"rbd/{child}@before")
        with Image(ioctx, child, snapshot="before") as img:
            assert read_all(img) == pdata
    finally:
        rbd(cluster, "snap", "purge", "--no-progress", f"rbd/{child}", check=False)
        rm(cluster, child)


def test_clone_discard_hides_parent_and_copyup_object(cluster, ioctx):
    pname = uniq("par-d")
    pdata = make_parent(cluster, pname, 12 * MiB, 23)
    child = uniq("cldisc")
    rbd(cluster, "clone", "--image-feature", "layering", f"rbd/{pname}@s", f"rbd/{child}")
    try:
        with Image(ioctx, child) as img:
            assert img.features() == 1  # no object map: ENOENT decides
            img.discard(0, 4 * MiB)  # whole object
            img.write_zeroes(5 * MiB, 100)  # partial: copy-up then zero
            assert img._run(img._image.copyup_object(2, True)) is True  # what flatten does per object
        model = bytearray(pdata)
        model[0 : 4 * MiB] = bytes(4 * MiB)
        model[5 * MiB : 5 * MiB + 100] = bytes(100)
        assert rbd_export(cluster, f"rbd/{child}") == model
        info = rbd_json(cluster, "info", f"rbd/{child}")
        objs = {o for o in cluster.rados("-p", "rbd", "ls").split() if o.startswith(info["block_name_prefix"])}
        assert len(objs) == 3  # object 0 (hides the parent), 1 (copied up, zeroed), 2 (copyup)
        with pytest.raises(errors.ReadOnlyImage):
            with Image(ioctx, child, read_only=True) as img:
                img.write(b"x", 0)
    finally:
        rm(cluster, child)
        drop_parent(cluster, pname)


XPOOL = "h4-xpool"


@pytest.fixture(scope="module")
def xpool(cluster):
    """An RBD pool of our own for cross-pool clones (removed at the end)."""
    if XPOOL not in cluster.ceph("osd", "pool", "ls"):
        cluster.create_pool(XPOOL, pg_num=8, pool_type="replicated")
        rbd(cluster, "pool", "init", XPOOL)
    yield XPOOL
    cluster.ceph("osd", "pool", "rm", XPOOL, XPOOL, "--yes-i-really-really-mean-it", json=False)


def test_clone_in_another_pool_reads_parent_pool(cluster, rados, xpool):
    pname = uniq("xpar")
    pdata = make_parent(cluster, pname, 9 * MiB, 31)
    child = uniq("xchild")
    rbd(cluster, "clone", f"rbd/{pname}@s", f"{xpool}/{child}")
    io = rados.open_ioctx(xpool)
    try:
        with Image(io, child) as img:
            assert img.parent_info() == ("rbd", pname, "s")
            assert read_all(img) == pdata
            img.write(b"cross", 5 * MiB)
        model = bytearray(pdata)
        model[5 * MiB : 5 * MiB + 5] = b"cross"
        assert rbd_export(cluster, f"{xpool}/{child}") == model
        assert rbd_export(cluster, f"rbd/{pname}") == pdata
        object_map_check(cluster, f"{xpool}/{child}")
    finally:
        io.close()
        rbd(cluster, "rm", "--no-progress", f"{xpool}/{child}", check=False)
        drop_parent(cluster, pname)


@pytest.mark.parametrize("clone_format", ["1", "2"])
def test_remove_clone_detaches_from_parent(cluster, ioctx, clone_format):
    from pyceph.rbd import RBD

    pname = uniq(f"rmpar{clone_format}")
    pdata = make_parent(cluster, pname, 6 * MiB, 37)
    child = uniq(f"rmchild{clone_format}")
    rbd(cluster, "clone", "--rbd-default-clone-format", clone_format, f"rbd/{pname}@s", f"rbd/{child}")
    try:
        with Image(ioctx, child) as img:
            assert read_all(img) == pdata
            img.write(b"c", 0)
        assert [c["image"] for c in rbd_json(cluster, "children", f"rbd/{pname}@s")] == [child]
        RBD().remove(ioctx, child)
        assert rbd_json(cluster, "children", f"rbd/{pname}@s") == []
        assert child not in rbd(cluster, "ls").stdout.decode().split()
        rbd(cluster, "snap", "unprotect", f"rbd/{pname}@s")  # no children left
    finally:
        rm(cluster, child)
        drop_parent(cluster, pname)
