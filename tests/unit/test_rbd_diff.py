"""Unit tests for pyceph.rbd.diff: interval helpers, calc_snap_set_diff, the
list_snaps delta rules, the fast-diff state machine and diff_iterate's output shape.

The clone lists below are the shapes the OSD returned in the integration runs
(tests/integration/test_rbd_diff.py compares the results with ``rbd diff``)."""

from __future__ import annotations

import asyncio
import errno

import pytest

from pyceph.encoding import Decoder, Encoder
from pyceph.errors import InvalidArgumentError, ObjectNotFound, make_ex
from pyceph.rbd import diff as D
from pyceph.rbd.features import RBD_FEATURE_FAST_DIFF, RBD_FLAG_FAST_DIFF_INVALID
from pyceph.rbd.object_map import CEPH_NOSNAP, BitVector2, CloneInfo, SnapSet, object_map_name
from pyceph.rbd.striping import Layout

MiB = 1 << 20
HEAD = CEPH_NOSNAP


def ss(*clones, seq):
    return SnapSet([CloneInfo(cid, list(snaps), list(overlap), size) for cid, snaps, overlap, size in clones], seq)


def test_intervals():
    assert D.iv_norm([(5, 5), (0, 5), (20, 0), (12, 3)]) == [(0, 10), (12, 3)]
    assert D.iv_intersect([(0, 10), (20, 10)], [(5, 20)]) == [(5, 5), (20, 5)]
    assert D.iv_subtract([(0, 30)], [(5, 5), (20, 20)]) == [(0, 5), (10, 10)]
    assert D.iv_union([(0, 5)], [(5, 5)]) == [(0, 10)]


def test_calc_snap_set_diff_head_only():
    r = D.calc_snap_set_diff(ss((HEAD, [], [], 1000), seq=0), 0, HEAD)
    assert (r.diff, r.end_size, r.end_exists, r.clone_end_snap_id) == ([(0, 1000)], 1000, True, HEAD)
    # unchanged since snap 4 -> no diff from 4
    r = D.calc_snap_set_diff(ss((HEAD, [], [], 1000), seq=0), 4, HEAD)
    assert r.diff == [] and r.end_exists


def test_calc_snap_set_diff_overwrite_after_snapshot():
    # clone for snap 4 (size 1000) shares [0,500) with the head (size 1500)
    s = ss((4, [4], [(0, 500)], 1000), (HEAD, [], [], 1500), seq=4)
    r = D.calc_snap_set_diff(s, 4, HEAD)
    assert r.diff == [(500, 1000)] and r.end_exists and r.end_size == 1500
    r = D.calc_snap_set_diff(s, 0, 4)
    assert r.diff == [(0, 1000)] and r.end_exists and r.clone_end_snap_id == 4


def test_calc_snap_set_diff_object_removed_after_snapshot():
    # existed at 4 (1000 bytes), removed since: only what it held at 4 changed
    s = ss((4, [4], [], 1000), seq=4)
    r = D.calc_snap_set_diff(s, 4, HEAD)
    assert r.diff == [(0, 1000)] and not r.end_exists
    # created after 2, existed at 4, removed: nothing changed between 2 and HEAD
    r = D.calc_snap_set_diff(s, 2, HEAD)
    assert r.diff == [] and not r.end_exists
    # from the beginning: nothing
    assert D.calc_snap_set_diff(s, 0, HEAD).diff == []
    # ended before 4
    r = D.calc_snap_set_diff(s, 0, 3)
    assert r.diff == [] and not r.end_exists


def test_calc_snap_set_diff_clone_without_snaps_means_whole_object():
    r = D.calc_snap_set_diff(ss((3, [], [], 10), (HEAD, [], [], 10), seq=3), 0, HEAD)
    assert r.whole_object


def test_calc_snap_set_diff_truncation_drops_the_cut_bytes():
    # 3 MiB at snap 4 (1 MiB of it at snap 2), truncated to 1 MiB at HEAD: librados 18+
    # no longer counts [1 MiB, 3 MiB) as changed from the beginning (16.2 did)
    s = ss((4, [2, 4], [(0, MiB)], 3 * MiB), (HEAD, [], [], MiB), seq=4)
    assert D.calc_snap_set_diff(s, 0, HEAD).diff == [(0, MiB)]
    # from snap 4 (3 MiB then): the cut bytes did change
    assert D.calc_snap_set_diff(s, 4, HEAD).diff == [(MiB, 2 * MiB)]
    # grown from 1 MiB at snap 2 to 3 MiB, cut to 2 MiB at HEAD: only [1, 2) MiB is new data
    s = ss((2, [2], [(0, MiB)], MiB), (4, [4], [(0, 2 * MiB)], 3 * MiB), (HEAD, [], [], 2 * MiB), seq=4)
    r = D.calc_snap_set_diff(s, 2, HEAD)
    assert r.diff == [(MiB, MiB)] and r.end_size == 2 * MiB and r.end_exists


def test_object_delta_truncation_reports_zeroed_tail():
    # 3 MiB at snap 4, truncated to 1 MiB at HEAD (shrink of the image)
    s = ss((4, [4], [(0, MiB)], 3 * MiB), (HEAD, [], [], MiB), seq=4)
    data, zeroed, empty = D.object_delta(s, 4, HEAD, [(0, 4 * MiB)], 4 * MiB, False)
    assert data == [] and zeroed == [(MiB, 2 * MiB)] and not empty
    # whole-object: the object holds data at HEAD, so all of it is data (librbd 18+;
    # 16.2 gave data [0, 1 MiB) + [3, 4) MiB and the cut tail as zeroed)
    data, zeroed, _ = D.object_delta(s, 4, HEAD, [(0, 4 * MiB)], 4 * MiB, True)
    assert data == [(0, 4 * MiB)] and zeroed == []


# Objects of images that ``rbd`` (Pacific) wrote, snapshotted, shrank under a snapshot
# (cutting the object), grew and wrote again, on a 16.2.15 cluster: the object's
# LIST_SNAPS answer, and for every (end snapshot, from snapshot, whole-object) what
# ``rbd diff --format json`` of Tentacle 20.2.4 reported inside that object (object
# offsets; Reef 18.2.7 reported the same).  Image sizes in MiB at each snapshot/HEAD.
TENTACLE_VECTORS = [
    # img1 object 9: LIST_SNAPS answer; snapshot ids; image size (MiB) at each
    ('img1', 9, ss(
        (5, [4, 5], [(0, 1048576)], 1302528),
        (HEAD, [], [], 1048576),
        seq=5),
     {'s1': 4, 's2': 5, 's3': 6}, {4: 64, 5: 64, 6: 64, HEAD: 64}, {
        (None, None, False): [(0, 1048576, True)],
        (None, None, True): [(0, 4194304, True)],
        (None, 's1', False): [(1048576, 253952, False)],
        (None, 's1', True): [(0, 4194304, True)],
        (None, 's2', False): [(1048576, 253952, False)],
        (None, 's2', True): [(0, 4194304, True)],
        (None, 's3', False): [],
        (None, 's3', True): [],
        ('s1', None, False): [(0, 1302528, True)],
        ('s1', None, True): [(0, 4194304, True)],
        ('s2', None, False): [(0, 1302528, True)],
        ('s2', None, True): [(0, 4194304, True)],
        ('s2', 's1', False): [],
        ('s2', 's1', True): [],
        ('s3', None, False): [(0, 1048576, True)],
        ('s3', None, True): [(0, 4194304, True)],
        ('s3', 's1', False): [(1048576, 253952, False)],
        ('s3', 's1', True): [(0, 4194304, True)],
        ('s3', 's2', False): [(1048576, 253952, False)],
        ('s3', 's2', True): [(0, 4194304, True)],
    }),
    # img1 object 13: LIST_SNAPS answer; snapshot ids; image size (MiB) at each
    ('img1', 13, ss(
        (5, [5], [], 1953792),
        (HEAD, [], [], 483328),
        seq=6),
     {'s1': 4, 's2': 5, 's3': 6}, {4: 64, 5: 64, 6: 64, HEAD: 64}, {
        (None, None, False): [(0, 483328, True)],
        (None, None, True): [(0, 4194304, True)],
        (None, 's1', False): [(0, 483328, True)],
        (None, 's1', True): [(0, 4194304, True)],
        (None, 's2', False): [(0, 483328, True), (483328, 1470464, False)],
        (None, 's2', True): [(0, 4194304, True)],
        (None, 's3', False): [(0, 483328, True)],
        (None, 's3', True): [(0, 4194304, True)],
        ('s1', None, False): [],
        ('s1', None, True): [],
        ('s2', None, False): [(0, 1953792, True)],
        ('s2', None, True): [(0, 4194304, True)],
        ('s2', 's1', False): [(0, 1953792, True)],
        ('s2', 's1', True): [(0, 4194304, True)],
        ('s3', None, False): [],
        ('s3', None, True): [],
        ('s3', 's1', False): [],
        ('s3', 's1', True): [],
        ('s3', 's2', False): [(0, 1953792, False)],
        ('s3', 's2', True): [(0, 4194304, False)],
    }),
    # nofd object 9: LIST_SNAPS answer; snapshot ids; image size (MiB) at each
    ('nofd', 9, ss(
        (7, [7], [(0, 1363968)], 1363968),
        (8, [8], [(0, 1048576)], 2879488),
        (HEAD, [], [], 1048576),
        seq=8),
     {'s1': 7, 's2': 8, 's3': 9}, {7: 64, 8: 64, 9: 64, HEAD: 64}, {
        (None, None, False): [(0, 1048576, True)],
        (None, None, True): [(0, 4194304, True)],
        (None, 's1', False): [(1048576, 315392, False)],
        (None, 's1', True): [(0, 4194304, True)],
        (None, 's2', False): [(1048576, 1830912, False)],
        (None, 's2', True): [(0, 4194304, True)],
        (None, 's3', False): [],
        (None, 's3', True): [],
        ('s1', None, False): [(0, 1363968, True)],
        ('s1', None, True): [(0, 4194304, True)],
        ('s2', None, False): [(0, 2879488, True)],
        ('s2', None, True): [(0, 4194304, True)],
        ('s2', 's1', False): [(1363968, 1515520, True)],
        ('s2', 's1', True): [(0, 4194304, True)],
        ('s3', None, False): [(0, 1048576, True)],
        ('s3', None, True): [(0, 4194304, True)],
        ('s3', 's1', False): [(1048576, 315392, False)],
        ('s3', 's1', True): [(0, 4194304, True)],
        ('s3', 's2', False): [(1048576, 1830912, False)],
        ('s3', 's2', True): [(0, 4194304, True)],
    }),
    # rewr object 1: LIST_SNAPS answer; snapshot ids; image size (MiB) at each
    ('rewr', 1, ss(
        (26, [26], [(0, 1048576)], 4194304),
        (27, [27], [(0, 1048576)], 1048576),
        (28, [28], [(0, 2097152)], 3670016),
        (HEAD, [], [], 2097152),
        seq=28),
     {'s1': 26, 's2': 27, 's3': 28}, {26: 16, 27: 16, 28: 16, HEAD: 6}, {
        (None, None, False): [(0, 2097152, True)],
        (None, None, True): [(0, 2097152, True)],
        (None, 's1', False): [(1048576, 1048576, True)],
        (None, 's1', True): [(0, 2097152, True)],
        (None, 's2', False): [(1048576, 1048576, True)],
        (None, 's2', True): [(0, 2097152, True)],
        (None, 's3', False): [],
        (None, 's3', True): [(0, 2097152, True)],
        ('s1', None, False): [(0, 4194304, True)],
        ('s1', None, True): [(0, 4194304, True)],
        ('s2', None, False): [(0, 1048576, True)],
        ('s2', None, True): [(0, 4194304, True)],
        ('s2', 's1', False): [(1048576, 3145728, False)],
        ('s2', 's1', True): [(0, 4194304, True)],
        ('s3', None, False): [(0, 3670016, True)],
        ('s3', None, True): [(0, 4194304, True)],
        ('s3', 's1', False): [(1048576, 2621440, True), (3670016, 524288, False)],
        ('s3', 's1', True): [(0, 4194304, True)],
        ('s3', 's2', False): [(1048576, 2621440, True)],
        ('s3', 's2', True): [(0, 4194304, True)],
    }),
    # multinofd object 1: LIST_SNAPS answer; snapshot ids; image size (MiB) at each
    ('multinofd', 1, ss(
        (22, [22], [(0, 2097152)], 4194304),
        (23, [23], [(0, 1437696)], 2097152),
        (24, [24], [(0, 1437696)], 1437696),
        (25, [25], [], 2621440),
        seq=25),
     {'s1': 22, 's2': 23, 's3': 24, 's4': 25}, {22: 64, 23: 6, 24: 64, 25: 64, HEAD: 16}, {
        (None, None, False): [],
        (None, None, True): [],
        (None, 's1', False): [(0, 4194304, False)],
        (None, 's1', True): [(0, 4194304, False)],
        (None, 's2', False): [(0, 2097152, False)],
        (None, 's2', True): [(0, 4194304, False)],
        (None, 's3', False): [(0, 1437696, False)],
        (None, 's3', True): [(0, 4194304, False)],
        (None, 's4', False): [(0, 2621440, False)],
        (None, 's4', True): [(0, 4194304, False)],
        ('s1', None, False): [(0, 4194304, True)],
        ('s1', None, True): [(0, 4194304, True)],
        ('s2', None, False): [(0, 2097152, True)],
        ('s2', None, True): [(0, 2097152, True)],
        ('s2', 's1', False): [],
        ('s2', 's1', True): [(0, 2097152, True)],
        ('s3', None, False): [(0, 1437696, True)],
        ('s3', None, True): [(0, 4194304, True)],
        ('s3', 's1', False): [(1437696, 2756608, False)],
        ('s3', 's1', True): [(0, 4194304, True)],
        ('s3', 's2', False): [(1437696, 659456, False)],
        ('s3', 's2', True): [(0, 4194304, True)],
        ('s4', None, False): [(0, 2621440, True)],
        ('s4', None, True): [(0, 4194304, True)],
        ('s4', 's1', False): [(1437696, 1183744, True), (2621440, 1572864, False)],
        ('s4', 's1', True): [(0, 4194304, True)],
        ('s4', 's2', False): [(1437696, 1183744, True)],
        ('s4', 's2', True): [(0, 4194304, True)],
        ('s4', 's3', False): [(1437696, 1183744, True)],
        ('s4', 's3', True): [(0, 4194304, True)],
    }),
]


@pytest.mark.parametrize("img,objno,snapset,names,sizes,expect", TENTACLE_VECTORS,
                         ids=[f"{v[0]}-obj{v[1]}" for v in TENTACLE_VECTORS])
def test_object_delta_matches_tentacle_rbd_diff(img, objno, snapset, names, sizes, expect):
    osize = 4 * MiB
    for (at, frm, whole), want in expect.items():
        end = names[at] if at else HEAD
        start = names[frm] if frm else 0
        extent = [(0, min(osize, sizes[end] * MiB - objno * osize))]
        data, zeroed, _ = D.object_delta(snapset, start, end, extent, osize, whole)
        got = D._merge_states([(o, n, True) for o, n in data] + [(o, n, False) for o, n in zeroed])
        assert got == want, (img, objno, at, frm, whole)


def test_object_delta_removed_object():
    s = ss((4, [4], [], 3 * MiB), seq=4)
    data, zeroed, _ = D.object_delta(s, 4, HEAD, [(0, 4 * MiB)], 4 * MiB, False)
    assert (data, zeroed) == ([], [(0, 3 * MiB)])
    data, zeroed, _ = D.object_delta(s, 4, HEAD, [(0, 4 * MiB)], 4 * MiB, True)
    assert (data, zeroed) == ([], [(0, 4 * MiB)])
    # gone before the start snapshot: nothing at all
    s6 = ss((4, [4], [], 3 * MiB), seq=4)
    assert D.object_delta(s6, 6, HEAD, [(0, 4 * MiB)], 4 * MiB, False)[:2] == ([], [])
    assert D.object_delta(None, 0, HEAD, [(0, 4 * MiB)], 4 * MiB, False) == ([], [], True)


def test_object_delta_clips_to_requested_extent():
    s = ss((HEAD, [], [], 3 * MiB), seq=0)
    data, _, _ = D.object_delta(s, 0, HEAD, [(MiB, MiB)], 4 * MiB, False)
    assert data == [(MiB, MiB)]


def test_merge_states():
    assert D._merge_states([(10, 5, True), (0, 10, True), (15, 5, False), (20, 1, False)]) == [
        (0, 15, True), (15, 6, False)]


# -- fast diff -------------------------------------------------------------------------------


class FakeMeta:
    def __init__(self, maps: dict[int, list[int]], flags: dict[int, int] | None = None):
        self.maps = {object_map_name("img", s): BitVector2.from_states(v).encode(crc=False) for s, v in maps.items()}
        self.flags = flags or {}

    async def execute(self, oid, cls_name, method, data=b"", read_only=False):
        if method == "get_flags":
            return Encoder().u64(self.flags.get(Decoder(data).u64(), 0)).bytes()
        if method == "object_map_load":
            if oid not in self.maps:
                raise make_ex(-errno.ENOENT, oid)
            return self.maps[oid]
        raise AssertionError(method)


def image(maps, sizes, snap_id=HEAD, features=RBD_FEATURE_FAST_DIFF, flags=None, data=None):
    osz = 4 * MiB
    snaps = {s: D.SnapInfo(s, f"s{s}", sizes[s]) for s in sizes if s != HEAD}
    meta = FakeMeta(maps, flags)
    return D.DiffImage(
        ioctx=meta, data_ioctx=data or meta, name="img", image_id="img", header_oid="rbd_header.img",
        object_prefix="rbd_data.img", layout=Layout(osz, osz, 1), features=features, snap_id=snap_id,
        head_size=sizes[HEAD], snaps=snaps)


H, DA, HU, DU = D.DIFF_STATE_HOLE, D.DIFF_STATE_DATA, D.DIFF_STATE_HOLE_UPDATED, D.DIFF_STATE_DATA_UPDATED


def test_fast_diff_from_the_beginning_uses_only_the_end_map():
    img = image({4: [1, 1, 1, 0], HEAD: [3, 0, 1, 0]}, {4: 16 * MiB, HEAD: 16 * MiB})
    # object 1 existed at snap 4 and is gone: no hole reported from the beginning
    assert asyncio.run(D.object_map_diff(img, 0, HEAD)) == [DU, H, DU, H]


def test_fast_diff_from_a_snapshot():
    # snap 4 -> snap 6 -> HEAD
    maps = {4: [1, 1, 0, 0, 1], 6: [3, 0, 1, 0, 3], HEAD: [3, 0, 0, 1, 1]}
    img = image(maps, {4: 20 * MiB, 6: 20 * MiB, HEAD: 20 * MiB})
    st = asyncio.run(D.object_map_diff(img, 4, HEAD))
    # 0 untouched; 1 removed; 2 created after 4 and removed again (still a hole);
    # 3 new at HEAD; 4 rewritten at HEAD
    assert st == [DA, HU, H, DU, DU]
    # the snapshot as end
    img6 = image(maps, {4: 20 * MiB, 6: 20 * MiB, HEAD: 20 * MiB}, snap_id=6)
    assert asyncio.run(D.object_map_diff(img6, 4, 6)) == [DA, HU, DU, H, DA]


def test_fast_diff_grown_and_shrunk_images():
    maps = {4: [1, 1], HEAD: [3, 0, 1, 1]}
    img = image(maps, {4: 8 * MiB, HEAD: 16 * MiB})
    assert asyncio.run(D.object_map_diff(img, 4, HEAD)) == [DA, HU, DU, DU]
    maps = {4: [1, 1, 1], HEAD: [3]}
    img = image(maps, {4: 12 * MiB, HEAD: 4 * MiB})
    assert asyncio.run(D.object_map_diff(img, 4, HEAD)) == [DA, HU, HU]


def test_fast_diff_refuses_invalid_or_small_maps():
    img = image({HEAD: [1]}, {HEAD: 4 * MiB}, flags={HEAD: RBD_FLAG_FAST_DIFF_INVALID})
    with pytest.raises(InvalidArgumentError):
        asyncio.run(D.object_map_diff(img, 0, HEAD))
    img = image({HEAD: [1]}, {HEAD: 8 * MiB})
    with pytest.raises(InvalidArgumentError):
        asyncio.run(D.object_map_diff(img, 0, HEAD))
    img = image({HEAD: [1]}, {HEAD: 4 * MiB}, features=0)
    with pytest.raises(InvalidArgumentError):
        asyncio.run(D.object_map_diff(img, 0, HEAD))


# -- diff_iterate -------------------------------------------------------------------------------


class FakeData:
    def __init__(self, objects: dict[int, SnapSet]):
        self.objects = objects
        self.listed = []

    async def list_snaps(self, oid):
        n = int(oid.rsplit(".", 1)[1], 16)
        self.listed.append(n)
        if n not in self.objects:
            raise make_ex(-errno.ENOENT, oid)
        return self.objects[n]


def collect(img, from_snap, off, length, whole):
    out = []

    async def go():
        await D.diff_iterate(img, from_snap, off, length, False, whole, lambda o, n, e: out.append((o, n, e)))

    asyncio.run(go())
    return out


def test_diff_iterate_list_snaps_path():
    data = FakeData({
        0: ss((HEAD, [], [], 8192), seq=0),
        2: ss((4, [4], [], MiB), seq=4),  # removed after snap 4
        3: ss((4, [4], [(0, 4096)], 8192), (HEAD, [], [], 8192), seq=4),  # overwritten after 4
    })
    img = image({}, {4: 16 * MiB, HEAD: 16 * MiB}, features=0, data=data)
    assert collect(img, None, 0, 16 * MiB, False) == [(0, 8192, True), (12 * MiB, 8192, True)]
    assert collect(img, "s4", 0, 16 * MiB, False) == [(8 * MiB, MiB, False), (12 * MiB + 4096, 4096, True)]
    assert collect(img, "s4", 0, 16 * MiB, True) == [(8 * MiB, 4 * MiB, False), (12 * MiB, 4 * MiB, True)]
    # a range inside one object, clipped
    assert collect(img, None, 4096, 2048, False) == [(4096, 2048, True)]
    # async callbacks are awaited
    seen = []

    async def cb(o, n, e):
        await asyncio.sleep(0)
        seen.append(o)

    asyncio.run(D.diff_iterate(img, None, 0, 16 * MiB, False, False, cb))
    assert seen == [0, 12 * MiB]


def test_diff_iterate_fast_path_reports_whole_objects():
    data = FakeData({})
    img = image({4: [1, 1, 0, 0], HEAD: [3, 0, 0, 1]}, {4: 16 * MiB, HEAD: 14 * MiB}, data=data)
    assert collect(img, "s4", 0, 14 * MiB, True) == [(4 * MiB, 4 * MiB, False), (12 * MiB, 2 * MiB, True)]
    assert data.listed == []  # no LIST_SNAPS on the fast path


def test_diff_iterate_argument_errors():
    img = image({}, {4: 4 * MiB, HEAD: 4 * MiB}, features=0, data=FakeData({}), snap_id=4)
    with pytest.raises(InvalidArgumentError):
        collect(img, None, 5 * MiB, 10, False)
    assert collect(img, "s4", 0, 4 * MiB, False) == []  # same snapshot: nothing
    with pytest.raises(Exception):
        collect(img, "nope", 0, 4 * MiB, False)


def test_disk_usage_entries():
    data = FakeData({0: ss((4, [4], [(0, 100)], 100), (HEAD, [], [], 300), seq=4), 1: ss((HEAD, [], [], 10), seq=0)})
    img = image({4: [1, 1, 0], HEAD: [1, 3, 0]}, {4: 12 * MiB, HEAD: 12 * MiB}, data=data)
    entries = asyncio.run(D.disk_usage(img))
    assert entries == [
        {"name": "img", "id": "img", "snapshot": "s4", "snapshot_id": 4, "provisioned_size": 12 * MiB,
         "used_size": 8 * MiB},
        {"name": "img", "id": "img", "provisioned_size": 12 * MiB, "used_size": 4 * MiB},
    ]
    exact = asyncio.run(D.disk_usage(img, exact=True))
    # exact: extents from list_snaps (object 0 grew from 100 to 300 bytes after s4)
    assert [e["used_size"] for e in exact] == [100 + 10, 200]
    merged = asyncio.run(D.disk_usage(img, merge_snapshots=True))
    assert merged == [{"name": "img", "id": "img", "provisioned_size": 12 * MiB, "used_size": 12 * MiB}]


def test_disk_usage_counts_warns_and_refuses_bad_snapshots():
    data = FakeData({0: ss((HEAD, [], [], 10), seq=0)})
    img = image({}, {4: 4 * MiB, 6: 4 * MiB, HEAD: 4 * MiB}, features=0, data=data)
    warnings: list[str] = []
    totals: dict[str, int] = {}
    entries = asyncio.run(D.disk_usage(img, merge_snapshots=True, totals=totals, warn=warnings.append))
    assert len(entries) == 1 and totals == {"provisioned": 4 * MiB, "used": 4 * MiB, "count": 3}
    assert warnings == ["warning: fast-diff map is not enabled for img. operation may be slow."]
    # a fast-diff map flagged invalid at a measured snapshot / HEAD
    img = image({4: [1], HEAD: [1]}, {4: 4 * MiB, HEAD: 4 * MiB}, data=data,
                flags={4: RBD_FLAG_FAST_DIFF_INVALID, HEAD: RBD_FLAG_FAST_DIFF_INVALID})
    warnings.clear()
    asyncio.run(D.disk_usage(img, warn=warnings.append))
    assert warnings == ["warning: fast-diff map is invalid for img@s4. operation may be slow.",
                        "warning: fast-diff map is invalid for img. operation may be slow."]
    # rbd's error cases
    img = image({}, {4: 4 * MiB, 6: 4 * MiB, HEAD: 4 * MiB}, features=0, data=data)
    for kw in ({"snap_name": "nope"}, {"from_snap": "nope"}):
        with pytest.raises(ObjectNotFound, match="specified snapshot is not found."):
            asyncio.run(D.disk_usage(img, **kw))
    with pytest.raises(InvalidArgumentError, match="from snapshot is newer than the snapshot"):
        asyncio.run(D.disk_usage(img, snap_name="s4", from_snap="s6"))
    totals = {}
    assert asyncio.run(D.disk_usage(img, snap_name="s4", from_snap="s4", totals=totals)) == []
    assert totals == {"provisioned": 0, "used": 0, "count": 0}
    totals = {}
    entries = asyncio.run(D.disk_usage(img, snap_name="s6", totals=totals))
    assert [e["snapshot"] for e in entries] == ["s4", "s6"] and totals["count"] == 2
