"""Striping math vs the kernel's net/ceph/striper.c, and image I/O splitting.

Worked cases are derived by hand from striper.c: the table in the comment above
``ceph_calc_file_object_mapping`` and the formula of ``ceph_get_num_objects``.
Properties check ``file_to_extents`` against ``extent_to_file`` (the kernel's
independent reverse mapping) and an AsyncImage round trip over an in-memory ioctx.
"""

from __future__ import annotations

import random

import pytest
import asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from pyceph.errors import InvalidArgumentError, ObjectNotFound, ReadOnlyImage
from pyceph.rbd.cls_client import SnapContext
from pyceph.rbd.image import AsyncImage
from pyceph.rbd.striping import (
    Layout,
    ObjectExtent,
    calc_object_mapping,
    data_object_name,
    extent_to_file,
    file_to_extents,
    get_num_objects,
)

K = 1024
M = 1024 * K


def test_kernel_comment_table():
    # striper.c: "Example for stripe_count = 3, stripes_per_object = 4":
    #   blockno | 0 3 6 9 | 1 4 7 10 | 2 5 8 11 | 12 15 18 21 | 13 16 19
    #   objno   |    0    |    1     |    2     |      3      |    4
    # With a 1-byte stripe unit, blockno == file offset and the position of a
    # block inside its object's column is its object offset.
    layout = Layout(object_size=4, stripe_unit=1, stripe_count=3)
    table = {0: [0, 3, 6, 9], 1: [1, 4, 7, 10], 2: [2, 5, 8, 11], 3: [12, 15, 18, 21], 4: [13, 16, 19]}
    for objno, blocks in table.items():
        for objoff, blockno in enumerate(blocks):
            assert calc_object_mapping(layout, blockno, 100) == (objno, objoff, 1)


def test_default_layout_crosses_object_boundary():
    ex = file_to_extents(4 * M - 1, 2, 4 * M, 4 * M, 1)
    assert ex == [ObjectExtent(0, 4 * M - 1, 1, [(0, 1)]), ObjectExtent(1, 0, 1, [(1, 1)])]


def test_striped_megabyte_merges_per_object():
    # su=64K, sc=4, 256K objects: 1 MiB is one object set; object k gets stripe
    # units k, k+4, k+8, k+12, i.e. buffer offsets k*64K + j*256K, contiguous in it.
    ex = file_to_extents(0, M, 256 * K, 64 * K, 4)
    assert [(e.objectno, e.offset, e.length) for e in ex] == [(k, 0, 256 * K) for k in range(4)]
    for e in ex:
        assert e.buffer_extents == [(e.objectno * 64 * K + j * 256 * K, 64 * K) for j in range(4)]


def test_striped_second_object_set():
    # Offset 1 MiB is block 16 -> stripe 4 -> object set 1, stripe pos 0 -> object 4.
    ex = file_to_extents(M + 10, 5, 256 * K, 64 * K, 4)
    assert ex == [ObjectExtent(4, 10, 5, [(0, 5)])]


def test_num_objects_worked_cases():
    d = Layout(4 * M, 4 * M, 1)
    assert [get_num_objects(d, s) for s in (0, 1, 4 * M, 4 * M + 1)] == [0, 1, 1, 2]
    s = Layout(256 * K, 64 * K, 4)
    # one full object set (1 MiB) -> 4; a first partial stripe touches only
    # ceil(rem / su) objects of the next set.
    assert get_num_objects(s, 64 * K) == 1
    assert get_num_objects(s, 130 * K) == 3
    assert get_num_objects(s, M) == 4
    assert get_num_objects(s, M + 1) == 5
    assert get_num_objects(s, M + 300 * K) == 8


def test_object_name_format():
    assert data_object_name("rbd_data.10ab3c", 0x1f) == "rbd_data.10ab3c.000000000000001f"


@pytest.mark.parametrize("su,sc,osz", [(0, 1, 4096), (4096, 0, 4096), (3000, 1, 4096), (8192, 1, 4096)])
def test_bad_layout_rejected(su, sc, osz):
    with pytest.raises(InvalidArgumentError):
        file_to_extents(0, 1, osz, su, sc)


def test_negative_range_rejected():
    with pytest.raises(InvalidArgumentError):
        file_to_extents(-1, 1, 4096, 4096, 1)


layouts = st.builds(
    lambda su_pow, spo, sc: Layout(object_size=(1 << su_pow) * spo, stripe_unit=1 << su_pow, stripe_count=sc),
    st.integers(0, 6),
    st.sampled_from([1, 2, 3, 4]),
    st.integers(1, 5),
)


@settings(max_examples=300, deadline=None)
@given(layout=layouts, off=st.integers(0, 5000), length=st.integers(0, 3000))
def test_extents_cover_range_once_in_order(layout, off, length):
    ex = file_to_extents(off, length, layout.object_size, layout.stripe_unit, layout.stripe_count)
    # sorted by object, then offset; no overlaps or adjacency left unmerged
    keys = [(e.objectno, e.offset) for e in ex]
    assert keys == sorted(keys)
    for a, b in zip(ex, ex[1:]):
        if a.objectno == b.objectno:
            assert a.offset + a.length < b.offset
    pieces = sorted(p for e in ex for p in e.buffer_extents)
    pos = 0
    for boff, blen in pieces:
        assert boff == pos and blen > 0
        pos += blen
    assert pos == length
    for e in ex:
        assert sum(n for _, n in e.buffer_extents) == e.length
        assert e.offset + e.length <= layout.object_size
        # the kernel's reverse map must land exactly on our buffer pieces
        back = extent_to_file(layout, e.objectno, e.offset, e.length)
        merged = []
        for foff, n in back:
            if merged and merged[-1][0] + merged[-1][1] == foff:
                merged[-1] = (merged[-1][0], merged[-1][1] + n)
            else:
                merged.append((foff, n))
        assert merged == [(off + b, n) for b, n in e.buffer_extents]


@settings(max_examples=200, deadline=None)
@given(layout=layouts, size=st.integers(0, 20000))
def test_num_objects_matches_highest_touched_object(layout, size):
    touched = {e.objectno for e in file_to_extents(0, size, layout.object_size, layout.stripe_unit, layout.stripe_count)}
    assert get_num_objects(layout, size) == len(touched)
    assert touched == set(range(len(touched)))


# -- image I/O over an in-memory ioctx ------------------------------------------


class MemIoctx:
    """Objects as bytearrays, with the AsyncIoctx read/write semantics."""

    pool_id = 1
    pool_name = "rbd"
    namespace = ""
    max_concurrency = 4

    def __init__(self):
        self.objects: dict[str, bytearray] = {}
        self.snapcs: list = []
        self.active = 0
        self.peak = 0

    async def read(self, oid, length, offset=0, snapid=None):
        await asyncio.sleep(0)
        if oid not in self.objects:
            raise ObjectNotFound(oid)
        return bytes(self.objects[oid][offset : offset + length])

    async def write(self, oid, data, offset=0, snapc=None):
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(0)
        self.active -= 1
        self.snapcs.append(snapc)
        obj = self.objects.setdefault(oid, bytearray())
        if len(obj) < offset:
            obj.extend(bytes(offset - len(obj)))
        obj[offset : offset + len(data)] = data

    async def execute(self, oid, cls, method, data=b"", read_only=False):
        assert (cls, method) in {("rbd", "set_access_timestamp"), ("rbd", "set_modify_timestamp")}
        return b""


def _image(io, size, order, su=0, sc=0, read_only=False):
    img = AsyncImage(io, "img", "abc123", read_only)
    img.object_prefix = "rbd_data.abc123"
    img.order = order
    img._size = size
    img.layout = Layout.from_order(order, su, sc)
    img.snapc = SnapContext(7, [7, 3])
    return img


@pytest.mark.parametrize("su,sc", [(0, 0), (1024, 3), (512, 8)])
def test_image_write_read_roundtrip(su, sc):
    rng = random.Random(su * 31 + sc)
    size = 100_000
    io = MemIoctx()
    img = _image(io, size, 12, su, sc)
    model = bytearray(size)

    async def main():
        for _ in range(40):
            off = rng.randrange(size)
            n = rng.randrange(1, 20_000)
            data = rng.randbytes(n)
            wrote = await img.write(off, data)
            assert wrote == min(n, size - off)
            model[off : off + wrote] = data[:wrote]
        for _ in range(40):
            off = rng.randrange(size)
            n = rng.randrange(0, 30_000)
            assert await img.read(off, n) == bytes(model[off : off + n])
        await img.flush()
        await img.close()

    asyncio.run(main())
    # every data object holds exactly the image bytes the layout assigns to it
    for oid, obj in io.objects.items():
        objno = int(oid.rsplit(".", 1)[1], 16)
        pos = 0
        for foff, n in extent_to_file(img.layout, objno, 0, len(obj)):
            assert bytes(obj[pos : pos + n]) == bytes(model[foff : foff + n])
            pos += n
    assert all(s == (7, [7, 3]) for s in io.snapcs)
    assert 1 < io.peak <= io.max_concurrency


def test_image_read_holes_and_clipping():
    io = MemIoctx()
    img = _image(io, 3 * 4096 + 100, 12)

    async def main():
        assert await img.read(0, 3 * 4096 + 100) == bytes(3 * 4096 + 100)  # no objects at all
        await img.write(4096 + 10, b"xyz")
        out = await img.read(4000, 200)
        assert out == bytes(106) + b"xyz" + bytes(91)
        assert await img.read(3 * 4096, 10_000) == bytes(100)  # clipped at the end
        assert await img.read(5, 0) == b""
        with pytest.raises(InvalidArgumentError):
            await img.read(3 * 4096 + 100, 1)
        with pytest.raises(InvalidArgumentError):
            await img.write(3 * 4096 + 100, b"a")
        assert await img.write(3 * 4096 + 99, b"ab") == 1

    asyncio.run(main())


def test_image_read_only_refuses_write():
    io = MemIoctx()
    img = _image(io, 8192, 12, read_only=True)

    async def main():
        with pytest.raises(ReadOnlyImage):
            await img.write(0, b"a")

    asyncio.run(main())
