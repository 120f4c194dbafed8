"""Images with Pacific's default features (exclusive-lock, object-map, fast-diff,
deep-flatten) written by pyceph, with librbd (the ``rbd`` CLI) as the other party.

- an image ``rbd create`` made is opened read-write, written across objects, and
  ``rbd export`` / ``rbd object-map check`` / ``rbd diff`` / ``rbd du`` agree;
  ``rbd lock ls`` and ``rbd status`` show pyceph as locker/watcher while it is open
  and nothing after close;
- images pyceph creates get Pacific's default features and an object map librbd
  accepts;
- the lock goes back and forth between pyceph and a librbd writer with nothing lost;
- ``rbd feature enable|disable`` as pyceph does it is what librbd then sees;
- removal refuses while pyceph has the image open.

Image names start with ``h4-`` (shared dev cluster).
"""

from __future__ import annotations

import random
import subprocess
import time
import uuid

import pytest

from pyceph import errors
from pyceph.rbd import RBD, Image
from pyceph.rbd import features as F

from .helpers import rbd, rbd_export, rbd_json, tool

MiB = 1 << 20
KiB = 1 << 10
DEFAULT_NAMES = ["layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten"]


# -- helpers (also used by test_rbd_clone_io.py and test_rbd_resize_discard.py) ------------


def uniq(prefix: str) -> str:
    return f"h4-{prefix}-{uuid.uuid4().hex[:8]}"


def object_map_check(cluster, spec: str) -> None:
    """``rbd object-map check`` must pass and leave the map valid."""
    r = rbd(cluster, "object-map", "check", "--no-progress", spec, check=False)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    info = rbd_json(cluster, "info", spec)
    assert info["flags"] == [], f"{spec}: flags {info['flags']} after object-map check"


def rbd_diff(cluster, spec: str, *extra) -> list[tuple[int, int, bool]]:
    out = rbd_json(cluster, "diff", spec, *extra)
    return [(int(e["offset"]), int(e["length"]), e["exists"] in (True, "true")) for e in out]


def data_objects(cluster, prefix: str) -> set[int]:
    names = rbd_objects(cluster)
    return {int(o.rsplit(".", 1)[1], 16) for o in names if o.startswith(prefix + ".")}


def rbd_objects(cluster) -> set[str]:
    return set(cluster.rados("-p", "rbd", "ls").split())


def rm(cluster, name: str) -> None:
    rbd(cluster, "rm", "--no-progress", f"rbd/{name}", check=False)


def read_all(img: Image, chunk: int = 4 * MiB) -> bytes:
    size = img.size()
    return b"".join(img.read(off, min(chunk, size - off)) for off in range(0, size, chunk))


# -- librbd-made default-feature images written by pyceph ----------------------------------


def test_rbd_created_default_image_written_by_pyceph(cluster, ioctx):
    name = uniq("deflt")
    size = 28 * MiB + 4321
    rbd(cluster, "create", "--size", f"{size}B", f"rbd/{name}")
    try:
        info = rbd_json(cluster, "info", f"rbd/{name}")
        assert info["features"] == DEFAULT_NAMES
        rnd = random.Random(41)
        model = bytearray(size)
        writes = [(0, 4096), (4 * MiB - 100, 300), (9 * MiB, 5 * MiB + 7), (size - 10, 10)]
        writes += [(o, rnd.randint(1, 200 * KiB)) for o in (rnd.randrange(size - 300 * KiB) for _ in range(8))]
        with Image(ioctx, name) as img:
            assert img.features() == 0x3D
            for off, n in writes:
                data = rnd.randbytes(n)
                img.write(data, off)
                model[off : off + n] = data
            # pyceph holds the lock and watches the header while open
            locks = rbd_json(cluster, "lock", "ls", f"rbd/{name}")
            assert len(locks) == 1 and locks[0]["id"].startswith("auto ")
            status = rbd_json(cluster, "status", f"rbd/{name}")
            assert len(status["watchers"]) == 1
            assert read_all(img) == model
        assert rbd_json(cluster, "lock", "ls", f"rbd/{name}") == []
        assert rbd_json(cluster, "status", f"rbd/{name}")["watchers"] == []
        assert rbd_export(cluster, f"rbd/{name}") == model
        object_map_check(cluster, f"rbd/{name}")
        # the object map (fast-diff) says exactly which objects we wrote
        written = {off // (4 * MiB) for off, n in writes} | {(off + n - 1) // (4 * MiB) for off, n in writes}
        full = set()
        for off, n in writes:
            full.update(range(off // (4 * MiB), (off + n - 1) // (4 * MiB) + 1))
        diff = rbd_diff(cluster, f"rbd/{name}", "--whole-object")
        assert {off // (4 * MiB) for off, _, exists in diff if exists} == full >= written
        assert data_objects(cluster, info["block_name_prefix"]) == full
        du = rbd_json(cluster, "du", f"rbd/{name}")
        # du counts whole objects, the last one only up to the image end
        assert du["images"][0]["used_size"] == sum(min(4 * MiB, size - n * 4 * MiB) for n in full)
    finally:
        rm(cluster, name)


def test_pyceph_create_uses_pacific_defaults_and_object_map(cluster, ioctx):
    name = uniq("create")
    size = 10 * MiB + 1
    RBD().create(ioctx, name, size)
    try:
        info = rbd_json(cluster, "info", f"rbd/{name}")
        assert info["features"] == DEFAULT_NAMES and info["flags"] == []
        assert f"rbd_object_map.{info['id']}" in rbd_objects(cluster)
        object_map_check(cluster, f"rbd/{name}")
        assert rbd_diff(cluster, f"rbd/{name}") == []
        data = random.Random(3).randbytes(5 * MiB)
        with Image(ioctx, name) as img:
            img.write(data, 3 * MiB)
        assert rbd_export(cluster, f"rbd/{name}")[3 * MiB : 8 * MiB] == data
        object_map_check(cluster, f"rbd/{name}")
        # object-map brings fast-diff, as librbd's CreateRequest does
        RBD().create(ioctx, name + "-o", MiB, features=F.RBD_FEATURE_LAYERING | F.RBD_FEATURE_EXCLUSIVE_LOCK
                     | F.RBD_FEATURE_OBJECT_MAP)
        assert rbd_json(cluster, "info", f"rbd/{name}-o")["features"] == DEFAULT_NAMES[:4]
        # layering-only still possible, and striping
        RBD().create(ioctx, name + "-l", MiB, features=F.RBD_FEATURE_LAYERING)
        assert rbd_json(cluster, "info", f"rbd/{name}-l")["features"] == ["layering"]
        RBD().create(ioctx, name + "-s", 8 * MiB, stripe_unit=64 * KiB, stripe_count=4)
        info_s = rbd_json(cluster, "info", f"rbd/{name}-s")
        assert info_s["features"] == ["layering", "striping", *DEFAULT_NAMES[1:]]
        with Image(ioctx, name + "-s") as img:
            img.write(data[: 3 * MiB], 100)
        assert rbd_export(cluster, f"rbd/{name}-s")[100 : 100 + 3 * MiB] == data[: 3 * MiB]
        object_map_check(cluster, f"rbd/{name}-s")
    finally:
        for n in (name, name + "-o", name + "-l", name + "-s"):
            RBD().remove(ioctx, n) if n in RBD().list(ioctx) else None


def test_lock_taken_in_turns_with_a_librbd_writer(cluster, ioctx):
    name = uniq("turns")
    rbd(cluster, "create", "--size", "16M", f"rbd/{name}")
    try:
        a = random.Random(5).randbytes(MiB)
        b = random.Random(6).randbytes(MiB)
        with Image(ioctx, name) as img:
            img.write(a, 0)
            # librbd asks for the lock (REQUEST_LOCK); pyceph releases it, librbd writes
            rbd(cluster, "bench", "--io-type", "write", "--io-size", "64K", "--io-total", "2M",
                "--io-pattern", "seq", f"rbd/{name}")
            assert rbd_json(cluster, "lock", "ls", f"rbd/{name}") == []
            # and pyceph takes it back for its next write
            img.write(b, 8 * MiB)
            locks = rbd_json(cluster, "lock", "ls", f"rbd/{name}")
            assert len(locks) == 1
            assert list(img.lock_get_owners()) == [{"mode": 0, "owner": locks[0]["locker"]}]
            img.lock_release()
            assert rbd_json(cluster, "lock", "ls", f"rbd/{name}") == []
            img.lock_acquire(0)
            assert len(rbd_json(cluster, "lock", "ls", f"rbd/{name}")) == 1
        out = rbd_export(cluster, f"rbd/{name}")
        assert out[8 * MiB : 9 * MiB] == b
        assert out[:MiB] != a  # bench (librbd, holding the lock in between) overwrote the start
        object_map_check(cluster, f"rbd/{name}")
    finally:
        rm(cluster, name)


def test_exclusive_open_refuses_lock_requests(cluster, ioctx):
    name = uniq("excl")
    rbd(cluster, "create", "--size", "8M", f"rbd/{name}")
    try:
        with Image(ioctx, name, exclusive=True) as img:
            assert len(rbd_json(cluster, "lock", "ls", f"rbd/{name}")) == 1
            r = subprocess.run([*tool(cluster, "rbd"), "-c", str(cluster.conf_path), "bench", "--io-type", "write",
                                "--io-total", "64K", f"rbd/{name}"], capture_output=True, timeout=120)
            assert r.returncode != 0  # librbd could not get the lock
            img.write(b"still mine", 0)
        assert rbd_export(cluster, f"rbd/{name}")[:10] == b"still mine"
    finally:
        rm(cluster, name)


def test_update_features_as_librbd_sees_them(cluster, ioctx):
    name = uniq("feat")
    rbd(cluster, "create", "--size", "12M", f"rbd/{name}")
    try:
        data = random.Random(9).randbytes(5 * MiB)
        with Image(ioctx, name) as img:
            img.write(data, MiB)
            with pytest.raises(errors.InvalidArgumentError):
                img.update_features(F.RBD_FEATURE_EXCLUSIVE_LOCK, False)  # object-map still on
            with pytest.raises(errors.InvalidArgumentError):
                img.update_features(F.RBD_FEATURE_DEEP_FLATTEN, True)
            img.update_features(F.RBD_FEATURE_OBJECT_MAP, False)  # takes fast-diff with it
            assert img.features() == F.RBD_FEATURE_LAYERING | F.RBD_FEATURE_EXCLUSIVE_LOCK | \
                F.RBD_FEATURE_DEEP_FLATTEN
        info = rbd_json(cluster, "info", f"rbd/{name}")
        assert info["features"] == ["layering", "exclusive-lock", "deep-flatten"] and info["flags"] == []
        assert f"rbd_object_map.{info['id']}" not in rbd_objects(cluster)
        with Image(ioctx, name) as img:
            img.update_features(F.RBD_FEATURE_EXCLUSIVE_LOCK, False)
            img.update_features(F.RBD_FEATURE_DEEP_FLATTEN, False)
            img.write(b"x", 0)
        assert rbd_json(cluster, "info", f"rbd/{name}")["features"] == ["layering"]
        with Image(ioctx, name) as img:
            img.update_features(F.RBD_FEATURE_EXCLUSIVE_LOCK, True)
            img.update_features(F.RBD_FEATURE_OBJECT_MAP, True)  # brings fast-diff, map invalid
        info = rbd_json(cluster, "info", f"rbd/{name}")
        assert info["features"] == ["layering", "exclusive-lock", "object-map", "fast-diff"]
        assert info["flags"] == ["object map invalid", "fast diff invalid"]  # as librbd leaves it
        rbd(cluster, "object-map", "rebuild", "--no-progress", f"rbd/{name}")
        object_map_check(cluster, f"rbd/{name}")
        expect = bytearray(12 * MiB)
        expect[MiB : 6 * MiB] = data
        expect[0:1] = b"x"
        assert rbd_export(cluster, f"rbd/{name}") == expect
        # and our writes keep the rebuilt map right
        with Image(ioctx, name) as img:
            img.write(b"y" * 100, 11 * MiB)
        object_map_check(cluster, f"rbd/{name}")
    finally:
        rm(cluster, name)


def test_remove_refused_while_open_and_clean_after(cluster, ioctx):
    name = uniq("rmbusy")
    RBD().create(ioctx, name, 9 * MiB)
    info = rbd_json(cluster, "info", f"rbd/{name}")
    img = Image(ioctx, name)
    try:
        img.write(b"z" * MiB, 3 * MiB)
        with pytest.raises(errors.ImageBusy):
            RBD().remove(ioctx, name)
    finally:
        img.close()
    progress = []
    RBD().remove(ioctx, name, on_progress=lambda d, t: progress.append((d, t)))
    assert progress and progress[-1][0] == progress[-1][1]
    left = {o for o in rbd_objects(cluster) if info["id"] in o or o == f"rbd_id.{name}"}
    assert left == set()


def test_librbd_snapshot_and_resize_while_pyceph_has_image_open(cluster, ioctx):
    """librbd takes the lock from pyceph for ``snap create`` / ``resize``; pyceph's next
    write re-acquires it with a refreshed header, so the snapshot keeps the old data
    (the write carries the new snap context) and the new size is seen (HEADER_UPDATE)."""
    name = uniq("peer-ops")
    rbd(cluster, "create", "--size", "8M", f"rbd/{name}")
    try:
        a, b = b"A" * (MiB + 5), b"B" * (MiB + 5)
        with Image(ioctx, name) as img:
            img.write(a, 3 * MiB)
            rbd(cluster, "snap", "create", f"rbd/{name}@s1")
            img.write(b, 3 * MiB)
            rbd(cluster, "resize", "--no-progress", "--size", "12M", f"rbd/{name}")
            for _ in range(50):  # the refresh runs on the HEADER_UPDATE notification
                if img.size() == 12 * MiB:
                    break
                time.sleep(0.1)
            assert img.size() == 12 * MiB
            img.write(b"end", 12 * MiB - 3)
        assert rbd_export(cluster, f"rbd/{name}@s1")[3 * MiB : 4 * MiB + 5] == a
        head = rbd_export(cluster, f"rbd/{name}")
        assert head[3 * MiB : 4 * MiB + 5] == b and head[-3:] == b"end" and len(head) == 12 * MiB
        object_map_check(cluster, f"rbd/{name}")
        object_map_check(cluster, f"rbd/{name}@s1")
    finally:
        rbd(cluster, "snap", "purge", "--no-progress", f"rbd/{name}", check=False)
        rm(cluster, name)
