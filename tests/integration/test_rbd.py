"""RBD images against a real cluster, with librbd (the ``rbd`` CLI) as the other party.

Images pyceph writes must be what librbd sees (``rbd info``, ``rbd export``),
images librbd writes (``rbd import``, ``rbd bench``) must read back identically
through pyceph, ``prbd`` must print what ``rbd`` prints, and ``prbd rm`` must leave
nothing behind.  Also covers the python-rbd-compatible sync API
(:class:`pyceph.rbd.RBD` / :class:`pyceph.rbd.Image`).
"""

from __future__ import annotations

import json
import os
import random
import zlib

import pytest

from pyceph import errors
from pyceph.rbd import RBD, AsyncImage, Image
from pyceph.rbd.api import IncompleteWriteError

from .helpers import prbd, rbd, rbd_export, rbd_json, uniq

MiB = 1 << 20
KiB = 1 << 10
TIMESTAMPS = ("create_timestamp", "access_timestamp", "modify_timestamp")
PACIFIC_DEFAULT_EXTRA = ("exclusive-lock", "object-map", "fast-diff", "deep-flatten")


# -- helpers ---------------------------------------------------------------------------


def prbd_json(cluster, *args: str):
    return json.loads(prbd(cluster, *args, "--format", "json").stdout)


def read_all(img: Image, chunk: int = 4 * MiB) -> bytes:
    size = img.size()
    return b"".join(img.read(off, min(chunk, size - off)) for off in range(0, size, chunk))


def pool_objects(cluster, pool: str = "rbd", namespace: str | None = None) -> set[str]:
    args = ["-p", pool]
    if namespace:
        args += ["-N", namespace]
    return set(cluster.rados(*args, "ls").split())


def info_without_timestamps(info: dict) -> dict:
    return {k: v for k, v in info.items() if k not in TIMESTAMPS}


def assert_info_equal(ours: dict, theirs: dict) -> None:
    """Every field equal; of the timestamps only the (immutable) create time."""
    assert list(ours) == list(theirs), "different keys or key order"
    assert info_without_timestamps(ours) == info_without_timestamps(theirs)
    assert ours.get("create_timestamp") == theirs.get("create_timestamp")


def sparse_random_file(path, size: int, blocks: list[tuple[int, int]], seed: int) -> bytes:
    """A sparse file of ``size`` bytes with random data at ``(offset, length)``; its content."""
    rnd = random.Random(seed)
    model = bytearray(size)
    with open(path, "wb") as f:
        f.truncate(size)
        for off, n in blocks:
            data = rnd.randbytes(n)
            f.seek(off)
            f.write(data)
            model[off : off + n] = data
    return bytes(model)


# -- fixtures --------------------------------------------------------------------------


def our_info(rados, ioctx, name: str) -> dict:
    async def go():
        img = await AsyncImage.open(ioctx.core, name, read_only=True)
        try:
            return img.info_json()
        finally:
            await img.close()

    return rados.run(go())


# -- images pyceph creates and writes ---------------------------------------------------

LAYOUTS = {
    # id: (size, order, stripe_unit, stripe_count)
    "default-order": (20 * MiB + 12345, None, None, None),
    "order20": (9 * MiB + 4321, 20, None, None),
    "fancy-64K-x4": (36 * MiB + 512, 22, 64 * KiB, 4),
    "fancy-order20-64K-x3": (7 * MiB + 100, 20, 64 * KiB, 3),
}


@pytest.fixture(scope="module", params=list(LAYOUTS), ids=list(LAYOUTS))
def written_image(request, cluster, rados, ioctx):
    """An image pyceph created and wrote (random data at random offsets, across
    object and stripe boundaries, the last byte, overwrites); yields (name, model)."""
    size, order, su, sc = LAYOUTS[request.param]
    name = uniq(f"w-{request.param}")
    RBD().create(ioctx, name, size, order=order, stripe_unit=su, stripe_count=sc)
    obj = 1 << (order or 22)
    rnd = random.Random(zlib.crc32(request.param.encode()))
    writes = [
        (0, 4096),
        (obj - 1000, 5000),  # across the first object boundary
        (2 * obj - 3, max(3 * MiB, obj + obj // 2) + 7),  # several objects in one write
        (size - 777, 777),  # up to the last byte (partial last object)
    ]
    if su:
        writes.append((su - 10, 3 * su + 20))  # across stripe units of one object set
    for _ in range(14):
        off = rnd.randrange(size)
        writes.append((off, min(rnd.randint(1, 300 * KiB), size - off)))
    writes.append((obj - 500, 1500))  # overwrite part of an earlier write
    model = bytearray(size)
    with Image(ioctx, name) as img:
        for off, n in writes:
            data = rnd.randbytes(n)
            assert img.write(data, off) == n
            model[off : off + n] = data
        img.flush()
        assert read_all(img) == model  # our own view first
    yield name, bytes(model)
    RBD().remove(ioctx, name)


def test_rbd_export_of_our_writes_is_identical(cluster, written_image):
    name, model = written_image
    assert rbd_export(cluster, f"rbd/{name}") == model


def test_rbd_info_matches_our_info_json(cluster, rados, ioctx, written_image):
    name, _ = written_image
    theirs = rbd_json(cluster, "info", f"rbd/{name}")
    assert_info_equal(our_info(rados, ioctx, name), theirs)
    assert_info_equal(prbd_json(cluster, "info", f"rbd/{name}"), theirs)
    # pyceph creates images with Pacific's defaults (issue 4)
    default = ["exclusive-lock", "object-map", "fast-diff", "deep-flatten"]
    assert theirs["features"] == (["layering", "striping"] if "stripe_unit" in theirs else ["layering"]) + default


@pytest.mark.parametrize(
    "create_args",
    [
        [],  # Pacific defaults: layering, exclusive-lock, object-map, fast-diff, deep-flatten
        ["--image-feature", "layering", "--object-size", "1M"],
        ["--stripe-unit", "64K", "--stripe-count", "8"],
    ],
    ids=["pacific-default", "layering-1M", "striped"],
)
def test_prbd_info_of_librbd_images(cluster, rados, ioctx, create_args):
    name = uniq("ri")
    rbd(cluster, "create", "--size", "24M", *create_args, f"rbd/{name}")
    try:
        theirs = rbd_json(cluster, "info", f"rbd/{name}")
        assert_info_equal(prbd_json(cluster, "info", f"rbd/{name}"), theirs)
        assert_info_equal(our_info(rados, ioctx, name), theirs)
    finally:
        rbd(cluster, "rm", "--no-progress", f"rbd/{name}")


# -- images librbd writes -----------------------------------------------------------------


@pytest.mark.parametrize(
    "import_args",
    [
        [],  # Pacific default features
        ["--image-feature", "layering", "--order", "20"],
        ["--image-feature", "layering,striping", "--stripe-unit", "64K", "--stripe-count", "3"],
    ],
    ids=["pacific-default", "layering-order20", "striped-64K-x3"],
)
def test_rbd_import_reads_back_identically(cluster, ioctx, tmp_path, import_args):
    size = 10 * MiB + 3000
    blocks = [(0, 70000), (4 * MiB - 4000, 9000), (5 * MiB + 17, 2 * MiB), (size - 5000, 5000)]
    content = sparse_random_file(tmp_path / "src", size, blocks, seed=len(import_args))
    name = uniq("imp")
    rbd(cluster, "import", "--no-progress", *import_args, str(tmp_path / "src"), f"rbd/{name}")
    try:
        with Image(ioctx, name, read_only=True) as img:
            assert img.size() == size
            ours = read_all(img, chunk=3 * MiB + 11)  # chunks not aligned to objects
            # a few unaligned small reads too
            for off, n in [(4 * MiB - 4001, 9002), (size - 1, 1), (5 * MiB, 100)]:
                assert img.read(off, n) == content[off : off + n]
        assert ours == content
        assert rbd_export(cluster, f"rbd/{name}") == content
    finally:
        rbd(cluster, "rm", "--no-progress", f"rbd/{name}")


def test_rbd_bench_written_image_reads_back(cluster, ioctx):
    name = uniq("bench")
    rbd(cluster, "create", "--size", "16M", "--image-feature", "layering", "--object-size", "1M",
        "--stripe-unit", "64K", "--stripe-count", "4", f"rbd/{name}")
    try:
        rbd(cluster, "bench", "--io-type", "write", "--io-size", "16K", "--io-threads", "4",
            "--io-total", "6M", "--io-pattern", "rand", f"rbd/{name}")
        expected = rbd_export(cluster, f"rbd/{name}")
        assert expected.count(0) < len(expected)  # bench did write something
        with Image(ioctx, name, read_only=True) as img:
            assert read_all(img, chunk=5 * MiB) == expected
        with Image(ioctx, name) as img:  # layering+striping: read-write allowed
            assert read_all(img) == expected
    finally:
        rbd(cluster, "rm", "--no-progress", f"rbd/{name}")


def test_pacific_default_features_read_write(cluster, rados, ioctx):
    """Issue 4: images with librbd's default features are writable (pyceph keeps the
    exclusive lock and the object map); journaling is still refused read-write."""
    name = uniq("deflt")
    rbd(cluster, "create", "--size", "12M", f"rbd/{name}")
    try:
        rbd(cluster, "bench", "--io-type", "write", "--io-size", "64K", "--io-threads", "2",
            "--io-total", "4M", "--io-pattern", "rand", f"rbd/{name}")
        rnd = random.Random(7)
        blob = rnd.randbytes(MiB + 333)
        # and some truly random bytes through librbd, across an object boundary
        rbd(cluster, "import", "--no-progress", "-", f"rbd/{name}-src", input=blob)
        expected = bytearray(rbd_export(cluster, f"rbd/{name}"))
        with Image(ioctx, name) as img:
            assert img.features() & 0x3C == 0x3C
            assert read_all(img) == expected
            img.write(blob, 4 * MiB - 100)
            expected[4 * MiB - 100 : 4 * MiB - 100 + len(blob)] = blob
        assert rbd_export(cluster, f"rbd/{name}") == expected
        with Image(ioctx, name, read_only=True) as img:
            assert read_all(img) == expected
            with pytest.raises(errors.ReadOnlyImage):
                img.write(b"x", 0)
        with Image(ioctx, f"{name}-src", read_only=True) as img:
            assert read_all(img) == blob
        rbd(cluster, "create", "--size", "4M", "--image-feature", "layering,exclusive-lock,journaling",
            f"rbd/{name}-j")
        with pytest.raises(errors.FeatureNotSupported) as ei:
            Image(ioctx, f"{name}-j")
        assert "journaling" in str(ei.value) and ei.value.errno is not None

        async def open_rw():
            await AsyncImage.open(ioctx.core, f"{name}-j")

        with pytest.raises(errors.FeatureNotSupported):
            rados.run(open_rw())
        with Image(ioctx, f"{name}-j", read_only=True) as img:
            assert img.read(0, 10) == bytes(10)
    finally:
        rbd(cluster, "rm", "--no-progress", f"rbd/{name}")
        rbd(cluster, "rm", "--no-progress", f"rbd/{name}-src", check=False)
        rbd(cluster, "rm", "--no-progress", f"rbd/{name}-j", check=False)


# -- prbd vs rbd: ls, rm, import/export -----------------------------------------------------


def test_ls_matches_rbd(cluster, rados):
    ns = uniq("ns")
    rbd(cluster, "namespace", "create", f"rbd/{ns}")
    nsio = rados.open_ioctx("rbd")
    nsio.set_namespace(ns)
    names = []
    try:
        for i, maker in enumerate(["rbd", "pyceph", "rbd", "prbd"]):
            name = f"img{i}-{maker}"
            names.append(name)
            if maker == "pyceph":
                RBD().create(nsio, name, 4 * MiB * (i + 1))
                continue
            tool = rbd if maker == "rbd" else prbd
            tool(cluster, "create", "--size", f"{4 * (i + 1)}M", "--image-feature", "layering", f"rbd/{ns}/{name}")
        assert RBD().list(nsio) == sorted(names)
        plain = prbd(cluster, "ls", f"rbd/{ns}").stdout
        assert plain == rbd(cluster, "ls", f"rbd/{ns}").stdout
        assert plain.decode().split() == sorted(names)
        assert prbd_json(cluster, "ls", f"rbd/{ns}") == rbd_json(cluster, "ls", f"rbd/{ns}")
        long_ = prbd_json(cluster, "ls", "-l", f"rbd/{ns}")
        assert long_ == rbd_json(cluster, "ls", "-l", f"rbd/{ns}")
        assert [d["size"] for d in long_] == [4 * MiB * (i + 1) for i in range(4)]
        # the default namespace of the pool too (retry: other tests may create meanwhile)
        for _ in range(3):
            if prbd_json(cluster, "ls", "-l", "rbd") == rbd_json(cluster, "ls", "-l", "rbd"):
                break
        else:
            pytest.fail("prbd ls -l rbd differs from rbd ls -l rbd")
        assert prbd(cluster, "ls").stdout == rbd(cluster, "ls").stdout
    finally:
        for name in names:
            rbd(cluster, "rm", "--no-progress", f"rbd/{ns}/{name}", check=False)
        rbd(cluster, "namespace", "rm", f"rbd/{ns}", check=False)


@pytest.mark.parametrize("maker", ["prbd", "rbd"])
def test_prbd_rm_leaves_nothing(cluster, tmp_path, maker):
    name = uniq(f"rm-{maker}")
    content = sparse_random_file(tmp_path / "f", 9 * MiB, [(0, 5000), (4 * MiB - 10, 20), (8 * MiB, MiB)], 3)
    tool = prbd if maker == "prbd" else rbd
    tool(cluster, "import", "--no-progress", "--image-feature", "layering", str(tmp_path / "f"), f"rbd/{name}")
    info = rbd_json(cluster, "info", f"rbd/{name}")
    prefix, image_id = info["block_name_prefix"], info["id"]
    objs = pool_objects(cluster)
    assert {f"rbd_id.{name}", f"rbd_header.{image_id}"} <= objs
    assert len([o for o in objs if o.startswith(prefix + ".")]) == 3
    assert rbd_export(cluster, f"rbd/{name}") == content

    prbd(cluster, "rm", "--no-progress", f"rbd/{name}")
    objs = pool_objects(cluster)
    assert not [o for o in objs if o.startswith(prefix) or o == f"rbd_header.{image_id}" or o == f"rbd_id.{name}"]
    assert name not in rbd(cluster, "ls").stdout.decode().split()
    keys = cluster.rados("-p", "rbd", "listomapkeys", "rbd_directory").split()
    assert f"name_{name}" not in keys and f"id_{image_id}" not in keys
    r = prbd(cluster, "rm", "--no-progress", f"rbd/{name}", check=False)
    assert r.returncode != 0 and b"not found" in r.stderr


def test_prbd_import_export_sparse_roundtrip(cluster, tmp_path):
    size = 24 * MiB + 5
    blocks = [(0, 512), (5 * MiB - 100, 300), (13 * MiB, 3 * MiB + 1), (size - 5, 5)]
    content = sparse_random_file(tmp_path / "src", size, blocks, seed=11)
    name = uniq("pie")
    prbd(cluster, "import", "--no-progress", str(tmp_path / "src"), f"rbd/{name}")
    try:
        info = rbd_json(cluster, "info", f"rbd/{name}")
        assert info["size"] == size
        assert info["features"] == ["layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten"]
        # sparse import: only objects holding data exist (4 MiB objects 0, 1, 3, 4, 6)
        data_objs = {o for o in pool_objects(cluster) if o.startswith(info["block_name_prefix"] + ".")}
        assert sorted(int(o.rsplit(".", 1)[1], 16) for o in data_objs) == [0, 1, 3, 4, 6]
        assert rbd_export(cluster, f"rbd/{name}") == content

        out = tmp_path / "out"
        prbd(cluster, "export", "--no-progress", f"rbd/{name}", str(out))
        assert out.read_bytes() == content
        # objects without data stay holes (prbd's sparseness is per object, rbd's per 4K)
        assert os.stat(out).st_blocks * 512 <= 16 * MiB + 64 * KiB
        assert prbd(cluster, "export", f"rbd/{name}", "-").stdout == content
        r = prbd(cluster, "export", "--no-progress", f"rbd/{name}", str(out), check=False)
        assert r.returncode != 0  # refuses to overwrite, as rbd does

        # and rbd import of our export file gives the same bytes back through librbd
        rbd(cluster, "import", "--no-progress", str(out), f"rbd/{name}-back")
        assert rbd_export(cluster, f"rbd/{name}-back") == content
    finally:
        prbd(cluster, "rm", "--no-progress", f"rbd/{name}")
        rbd(cluster, "rm", "--no-progress", f"rbd/{name}-back", check=False)


# -- the python-rbd-compatible sync API ----------------------------------------------------


def test_sync_api_round_trip(cluster, ioctx):
    r = RBD()
    name = uniq("sync")
    size = 6 * MiB + 1
    r.create(ioctx, name, size, order=20)
    try:
        assert name in r.list(ioctx)
        with pytest.raises(errors.ImageExists):
            r.create(ioctx, name, MiB)
        with pytest.raises(TypeError):
            r.create(ioctx, 123, MiB)
        with pytest.raises(errors.FunctionNotSupported):
            r.create(ioctx, name + "-v1", MiB, old_format=True)
        with pytest.raises(errors.InvalidArgumentError):
            r.create(ioctx, name + "-v1", MiB, old_format=True, features=1)
        with pytest.raises(errors.ImageNotFound):
            Image(ioctx, name + "-missing")

        data = random.Random(5).randbytes(2 * MiB + 17)
        with Image(ioctx, name) as img:
            assert img.size() == size
            assert img.features() == 0x3D  # Pacific's default features
            st = img.stat()
            assert st["size"] == size and st["order"] == 20 and st["obj_size"] == MiB
            assert st["num_objs"] == 7 and st["block_name_prefix"] == img.block_name_prefix()
            assert img.block_name_prefix() == f"rbd_data.{img.id()}"
            assert img.write(data, MiB - 9) == len(data)
            assert img.write(bytearray(b"end"), size - 3) == 3
            img.flush()
            assert img.read(MiB - 9, len(data)) == data
            assert img.read(size - 3, 100) == b"end"  # clipped at the end
            assert img.read(0, 16) == bytes(16)
            with pytest.raises(IncompleteWriteError):
                img.write(b"xyz12", size - 2)
            with pytest.raises(errors.InvalidArgumentError):
                img.read(size, 1)
            with pytest.raises(TypeError):
                img.write("text", 0)
        assert img.closed
        img.close()  # idempotent
        with pytest.raises(errors.InvalidArgumentError):
            img.read(0, 1)

        info = rbd_json(cluster, "info", f"rbd/{name}")
        assert info["id"] == st["block_name_prefix"].split(".", 1)[1]
        exported = rbd_export(cluster, f"rbd/{name}")
        assert exported[MiB - 9 : MiB - 9 + len(data)] == data and exported[-3:] == b"exy"

        ro = Image(ioctx, name, read_only=True)
        try:
            assert ro.read(MiB - 9, 10) == data[:10]
            with pytest.raises(errors.ReadOnlyImage):
                ro.write(b"no", 0)
        finally:
            ro.close()
    finally:
        r.remove(ioctx, name)
    assert name not in r.list(ioctx)
    with pytest.raises(errors.ImageNotFound):
        r.remove(ioctx, name)
    assert name not in rbd(cluster, "ls").stdout.decode().split()
