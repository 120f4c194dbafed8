"""Resize (grow, shrink), discard and write-zeroes by pyceph, checked with librbd:
``rbd info`` (size), ``rbd export`` (content, snapshots unchanged), ``rbd diff``
(which objects exist), ``rbd object-map check`` (the map pyceph kept), and the data
objects left in the pool.
"""

from __future__ import annotations

import random

import pytest

from pyceph import errors
from pyceph.rbd import Image

from .helpers import rbd, rbd_export, rbd_json
from .test_rbd_image_features import (
    KiB,
    MiB,
    data_objects,
    object_map_check,
    rbd_diff,
    read_all,
    rm,
    uniq,
)

OBJ = 4 * MiB


def filled_image(cluster, ioctx, name: str, size: int, seed: int, *create_args) -> bytearray:
    rbd(cluster, "create", "--size", f"{size}B", *create_args, f"rbd/{name}")
    data = bytearray(random.Random(seed).randbytes(size))
    with Image(ioctx, name) as img:
        img.write(bytes(data), 0)
    return data


@pytest.mark.parametrize("create_args", [[], ["--stripe-unit", "64K", "--stripe-count", "4"]],
                         ids=["default", "striped"])
def test_resize_grow_and_shrink(cluster, ioctx, create_args):
    name = uniq("resize")
    size = 18 * MiB + 700
    model = filled_image(cluster, ioctx, name, size, 1, *create_args)
    try:
        info = rbd_json(cluster, "info", f"rbd/{name}")
        prefix = info["block_name_prefix"]
        with Image(ioctx, name) as img:
            img.resize(30 * MiB)
            assert img.size() == 30 * MiB
            model += bytes(30 * MiB - size)
            img.write(b"tail", 30 * MiB - 4)
            model[-4:] = b"tail"
        assert rbd_json(cluster, "info", f"rbd/{name}")["size"] == 30 * MiB
        assert rbd_export(cluster, f"rbd/{name}") == model
        object_map_check(cluster, f"rbd/{name}")

        new = 9 * MiB + 12345
        progress = []
        with Image(ioctx, name) as img:
            with pytest.raises(errors.InvalidArgumentError):
                img.resize(new, allow_shrink=False)
            img._run(img._image.resize(new, on_progress=lambda d, t: progress.append((d, t))))
            assert img.size() == new
            assert read_all(img) == model[:new]
        assert progress and progress[-1][0] == progress[-1][1]
        info = rbd_json(cluster, "info", f"rbd/{name}")
        assert info["size"] == new and info["objects"] == -(-new // OBJ) or "stripe_unit" in info
        assert rbd_export(cluster, f"rbd/{name}") == model[:new]
        object_map_check(cluster, f"rbd/{name}")
        if not create_args:
            assert data_objects(cluster, prefix) == {0, 1, 2}
        # grow again: the trimmed range reads zeros
        with Image(ioctx, name) as img:
            img.resize(20 * MiB)
        assert rbd_export(cluster, f"rbd/{name}") == model[:new] + bytes(20 * MiB - new)
        object_map_check(cluster, f"rbd/{name}")
    finally:
        rm(cluster, name)


def test_shrink_keeps_snapshot(cluster, ioctx):
    name = uniq("shrinksnap")
    size = 16 * MiB
    model = filled_image(cluster, ioctx, name, size, 2)
    try:
        rbd(cluster, "snap", "create", f"rbd/{name}@s1")
        with Image(ioctx, name) as img:
            img.resize(5 * MiB)
        assert rbd_export(cluster, f"rbd/{name}") == model[: 5 * MiB]
        assert rbd_export(cluster, f"rbd/{name}@s1") == model
        object_map_check(cluster, f"rbd/{name}")
        object_map_check(cluster, f"rbd/{name}@s1")
    finally:
        rbd(cluster, "snap", "purge", "--no-progress", f"rbd/{name}", check=False)
        rm(cluster, name)


def test_clone_shrink_with_snapshot_copies_up(cluster, ioctx):
    pname, child = uniq("rpar"), uniq("rchild")
    pdata = random.Random(4).randbytes(12 * MiB)
    rbd(cluster, "import", "--no-progress", "-", f"rbd/{pname}", input=pdata)
    rbd(cluster, "snap", "create", f"rbd/{pname}@s")
    rbd(cluster, "snap", "protect", f"rbd/{pname}@s")
    rbd(cluster, "clone", f"rbd/{pname}@s", f"rbd/{child}")
    try:
        rbd(cluster, "snap", "create", f"rbd/{child}@c1")
        with Image(ioctx, child) as img:
            img.resize(2 * MiB + 5)  # objects 1, 2 copied up then removed; object 0 truncated
            assert img.overlap() == 2 * MiB + 5
            img.resize(6 * MiB)
            assert read_all(img) == pdata[: 2 * MiB + 5] + bytes(6 * MiB - 2 * MiB - 5)
        assert rbd_export(cluster, f"rbd/{child}") == pdata[: 2 * MiB + 5] + bytes(6 * MiB - 2 * MiB - 5)
        assert rbd_export(cluster, f"rbd/{child}@c1") == pdata
        assert rbd_export(cluster, f"rbd/{pname}") == pdata
        object_map_check(cluster, f"rbd/{child}")
        object_map_check(cluster, f"rbd/{child}@c1")
    finally:
        rbd(cluster, "snap", "purge", "--no-progress", f"rbd/{child}", check=False)
        rm(cluster, child)
        rbd(cluster, "snap", "unprotect", f"rbd/{pname}@s", check=False)
        rbd(cluster, "snap", "purge", "--no-progress", f"rbd/{pname}", check=False)
        rm(cluster, pname)


@pytest.mark.parametrize("features", ["default", "layering"])
def test_discard_and_write_zeroes(cluster, ioctx, features):
    name = uniq(f"disc-{features}")
    size = 20 * MiB
    args = [] if features == "default" else ["--image-feature", "layering"]
    model = filled_image(cluster, ioctx, name, size, 3, *args)
    try:
        prefix = rbd_json(cluster, "info", f"rbd/{name}")["block_name_prefix"]
        with Image(ioctx, name) as img:
            img.discard(4 * MiB, 8 * MiB)  # objects 1 and 2: removed
            img.discard(12 * MiB + 100 * KiB, 4 * MiB - 100 * KiB)  # tail of object 3: truncated
            img.discard(16 * MiB + 10, 128 * KiB)  # middle of object 4: 64K-aligned part zeroed
            img.write_zeroes(100, 50)  # exact
            img.discard(4 * MiB, 4 * MiB)  # already gone: no-op
        model[4 * MiB : 12 * MiB] = bytes(8 * MiB)
        model[12 * MiB + 128 * KiB : 16 * MiB] = bytes(4 * MiB - 128 * KiB)  # start aligned up to 64K
        model[16 * MiB + 64 * KiB : 16 * MiB + 128 * KiB] = bytes(64 * KiB)
        model[100:150] = bytes(50)
        assert rbd_export(cluster, f"rbd/{name}") == model
        assert data_objects(cluster, prefix) == {0, 3, 4}
        exists = {off // OBJ for off, _, e in rbd_diff(cluster, f"rbd/{name}", "--whole-object") if e}
        assert exists == {0, 3, 4}
        if features == "default":
            object_map_check(cluster, f"rbd/{name}")
            # the truncated tail is a hole for rbd diff (not whole-object)
            diff = rbd_diff(cluster, f"rbd/{name}")
            assert not [(o, n) for o, n, _ in diff if o < 16 * MiB and o + n > 12 * MiB + 128 * KiB]
    finally:
        rm(cluster, name)
