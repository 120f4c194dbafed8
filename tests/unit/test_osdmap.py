"""OSDMap decoding, incremental maps and PG placement, checked against Ceph's own output.

Oracles: ../shared/vectors/osdmap (``ceph osd dump``, ``osdmaptool --dump json`` and
``--test-map-pgs-dump-all``, ``ceph osd map``), Ceph 16.2.0's object corpus, and — where the
Pacific ``osdmaptool`` is installed — its output for maps modified in memory.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyceph.encoding import Decoder
from pyceph.errors import DecodeError, PoolNotFound
from pyceph.osdmap import OSDMap
from pyceph.osdmap.osdmap import CEPH_OSD_IN, CEPH_OSD_UP, Incremental, OsdInfo, OsdXinfo
from pyceph.osdmap.pool import PgPool, PoolOpts, PoolSnapInfo
from pyceph.osdmap.tool import dump_all_pgs, osd_map_json
from pyceph.types import PgT
from tests.shared_data import CORPUS as CORPUS_DIR, VECTORS as VECTORS_DIR

VEC = (VECTORS_DIR / "osdmap")
CORPUS = CORPUS_DIR
OSDMAPTOOL = shutil.which("osdmaptool")


def _load(name: str) -> OSDMap:
    return OSDMap.decode((VEC / name).read_bytes())


@pytest.fixture(scope="module")
def live() -> OSDMap:
    return _load("live.bin")


@pytest.fixture(scope="module")
def balanced() -> OSDMap:
    return _load("balanced.bin")


def _corpus(type_name: str) -> list[Path]:
    files = sorted((CORPUS / type_name).iterdir())
    assert files, type_name
    return files


# -- full map vs ceph osd dump -------------------------------------------------


@pytest.mark.parametrize("binfile,jsonfile", [("live.bin", "live.osd-dump.json"), ("balanced.bin", "balanced.dump.json")])
def test_full_map_matches_osd_dump(binfile, jsonfile):
    m = _load(binfile)
    ref = json.loads((VEC / jsonfile).read_text())
    mine = m.to_dump_dict()
    for key, val in mine.items():
        if key in ("pools", "osds"):
            assert len(val) == len(ref[key]), key
            for ours, theirs in zip(val, ref[key]):
                for k, v in ours.items():
                    assert v == theirs[k], (key, ours.get("pool", ours.get("osd")), k)
        else:
            assert val == ref[key], key


def test_live_map_details(live):
    ref = json.loads((VEC / "live.osd-dump.json").read_text())
    assert live.epoch == ref["epoch"]
    # osd-only section: cluster addresses, uuids, xinfo, ratios
    for o in ref["osds"]:
        i = o["osd"]
        assert str(live.cluster_addrs[i].legacy().hostport) == o["cluster_addr"].split("/")[0]
        assert live.osd_info[i].up_from == o["up_from"] and live.osd_info[i].up_thru == o["up_thru"]
    for x in ref["osd_xinfo"]:
        assert live.osd_xinfo[x["osd"]].features == x["features"]
    assert abs(live.full_ratio - ref["full_ratio"]) < 1e-9
    assert abs(live.nearfull_ratio - ref["nearfull_ratio"]) < 1e-9
    assert abs(live.backfillfull_ratio - ref["backfillfull_ratio"]) < 1e-9
    # client helpers
    for o in ref["osds"]:
        addrs = live.osd_addrs(o["osd"])
        v2 = [a for a in o["public_addrs"]["addrvec"] if a["type"] == "v2"][0]
        assert addrs.msgr2().hostport == v2["addr"] and addrs.msgr2().nonce == v2["nonce"]
        assert live.is_up(o["osd"]) == bool(o["up"])
    for p in ref["pools"]:
        assert live.lookup_pool(p["pool_name"]) == p["pool"]
        assert live.get_pool(p["pool"]).name == p["pool_name"]


def test_pool_lookup_errors(live):
    with pytest.raises(PoolNotFound):
        live.lookup_pool("no-such-pool")
    with pytest.raises(PoolNotFound):
        live.get_pool(max(live.pools) + 1)
    with pytest.raises(PoolNotFound):
        osd_map_json(live, "no-such-pool", "obj")


# -- placement vs osdmaptool / ceph osd map --------------------------------------


@pytest.mark.parametrize("name", ["live", "balanced"])
def test_pgs_dump_all(name):
    m = _load(f"{name}.bin")
    ref = (VEC / f"{name}.pgs-dump-all.txt").read_text().splitlines()
    mine = dump_all_pgs(m)
    assert len(mine) == len(ref)
    for a, b in zip(mine, ref):
        assert a == b


def test_osd_map_json(live):
    lines = [ln for ln in (VEC / "live.osd-map.jsonl").read_text().splitlines() if ln.strip()]
    assert len(lines) >= 10
    for ln in lines:
        ref = json.loads(ln)
        assert osd_map_json(live, ref["pool"], ref["objname"]) == ref


def test_object_locator_to_pg(live):
    for ln in (VEC / "live.osd-map.jsonl").read_text().splitlines():
        if not ln.strip():
            continue
        ref = json.loads(ln)
        raw = live.object_locator_to_pg(ref["pool_id"], ref["objname"].encode())
        assert str(raw) == ref["raw_pgid"]
        assert str(live.raw_pg_to_pg(raw)) == ref["pgid"]
        # the locator key replaces the name for hashing; an explicit hash bypasses it
        assert live.object_locator_to_pg(ref["pool_id"], "other", key=ref["objname"]) == raw
        assert live.object_locator_to_pg(ref["pool_id"], "other", hash=raw.seed) == raw
        # raw and folded pgids map identically
        assert live.pg_to_up_acting_osds(raw) == live.pg_to_up_acting_osds(live.raw_pg_to_pg(raw))


def _run_osdmaptool(tmp_path: Path, src: str, *args: str) -> list[str]:
    f = tmp_path / src
    f.write_bytes((VEC / src).read_bytes())
    out = subprocess.run(
        [OSDMAPTOOL, str(f), "--test-map-pgs-dump-all", *args],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.splitlines()
    # drop the tool's own chatter ("marking ...", "clearing ...")
    return [ln for ln in out if not ln.startswith(("osdmaptool:", "marking", "clearing"))]


def _inc(m: OSDMap, **kw) -> Incremental:
    return Incremental(fsid=m.fsid, epoch=m.epoch + 1, modified=m.modified, **kw)


needs_osdmaptool = pytest.mark.skipif(OSDMAPTOOL is None, reason="osdmaptool (ceph-osd package) not installed")


@needs_osdmaptool
@pytest.mark.parametrize("pool", [1, 3, 4])
def test_pgs_dump_all_one_pool(tmp_path, live, pool):
    assert dump_all_pgs(live, pool) == _run_osdmaptool(tmp_path, "live.bin", "--pool", str(pool))


@needs_osdmaptool
@pytest.mark.parametrize("src,osd", [("live.bin", 1), ("live.bin", 2), ("balanced.bin", 35)])
def test_incremental_mark_out_matches_osdmaptool(tmp_path, src, osd):
    """``--mark-out N`` in osdmaptool == an incremental setting osd N's weight to 0."""
    m = _load(src)
    m.apply_incremental(_inc(m, new_weight={osd: 0}))
    assert m.is_out(osd) and m.is_up(osd)
    assert dump_all_pgs(m) == _run_osdmaptool(tmp_path, src, "--mark-out", str(osd))


@needs_osdmaptool
def test_incremental_clear_temp_and_mark_in_matches_osdmaptool(tmp_path, live):
    m = _load("live.bin")
    inc = _inc(
        m,
        new_pg_temp={pg: [] for pg in live.pg_temp},
        new_primary_temp={pg: -1 for pg in live.primary_temp},
        new_weight={o: CEPH_OSD_IN for o in range(m.max_osd)},
    )
    m.apply_incremental(inc)
    assert not m.pg_temp and not m.primary_temp and m.epoch == live.epoch + 1
    assert dump_all_pgs(m) == _run_osdmaptool(tmp_path, "live.bin", "--clear-temp", "--mark-up-in")


# -- incrementals ------------------------------------------------------------------


def test_incremental_with_full_map_replaces_map(live):
    full = (VEC / "balanced.bin").read_bytes()
    m = _load("live.bin")
    m.apply_incremental(_inc(live, fullmap=full))
    ref = json.loads((VEC / "balanced.dump.json").read_text())
    assert m.epoch == ref["epoch"]
    assert dump_all_pgs(m) == (VEC / "balanced.pgs-dump-all.txt").read_text().splitlines()


def test_incremental_pools_upmaps_and_profiles(live, balanced):
    """Moving pools, upmaps, temps and profiles over by incremental reproduces their placement."""
    m = _load("balanced.bin")
    inc = _inc(
        m,
        new_pool_max=live.pool_max,
        new_max_osd=max(m.max_osd, live.max_osd),
        new_pools={pid: p for pid, p in _load("live.bin").pools.items() if pid != 1},
        new_pool_names={pid: n for pid, n in live.pool_name.items() if pid != 1},
        new_erasure_code_profiles=live.erasure_code_profiles,
        new_pg_upmap_items={pg: v for pg, v in live.pg_upmap_items.items() if pg.pool != 1},
        old_pg_upmap_items=[pg for pg in balanced.pg_upmap_items][:5],
    )
    m.apply_incremental(inc)
    assert m.lookup_pool("vec_ec") == live.lookup_pool("vec_ec")
    assert m.erasure_code_profiles["vk2m1"] == live.erasure_code_profiles["vk2m1"]
    assert all(pg not in m.pg_upmap_items for pg in inc.old_pg_upmap_items)
    assert all(m.pools[pid].last_change == m.epoch for pid in inc.new_pools)
    # balanced's pool 1 keeps its placement minus the dropped upmap items
    for pg in inc.old_pg_upmap_items:
        raw, _ = balanced.pg_to_raw_osds(pg)
        assert m.pg_to_up_acting_osds(pg)[0] == raw
    # removing a pool drops it and its name
    m.apply_incremental(_inc(m, old_pools=[3]))
    assert 3 not in m.pools
    with pytest.raises(PoolNotFound):
        m.lookup_pool("vec_rep")


def test_incremental_state_xor_marks_down_and_up(live):
    m = _load("live.bin")
    addrs = m.osd_addrs(2)
    m.apply_incremental(_inc(m, new_state={2: CEPH_OSD_UP}))
    assert not m.is_up(2) and m.exists(2) and m.osd_info[2].down_at == m.epoch
    for pid, pool in m.pools.items():
        for ps in range(pool.pg_num):
            up, upp, acting, actp = m.pg_to_up_acting_osds(PgT(pid, ps))
            raw, _ = live.pg_to_raw_osds(PgT(pid, ps))
            assert 2 not in up and 2 not in acting
            if pool.can_shift_osds() and PgT(pid, ps) not in live.pg_upmap_items:
                assert up == [o for o in raw if o != 2]
            elif not pool.can_shift_osds():
                assert len(up) == len(raw)  # EC keeps positions, holes become NONE
    m.apply_incremental(_inc(m, new_up_client={2: addrs}))
    assert m.is_up(2) and m.osd_info[2].up_from == m.epoch
    assert dump_all_pgs(m) == dump_all_pgs(live)


def test_incremental_epoch_must_follow(live):
    from pyceph.errors import InvalidArgumentError

    m = _load("live.bin")
    with pytest.raises(InvalidArgumentError):
        m.apply_incremental(Incremental(fsid=m.fsid, epoch=m.epoch + 2))


# -- Ceph's corpus ----------------------------------------------------------------


@pytest.mark.parametrize("path", _corpus("OSDMap"), ids=lambda p: p.name[:8])
def test_corpus_osdmap(path):
    m = OSDMap.decode(path.read_bytes())
    assert m.crc is not None
    assert len(m.osd_state) == len(m.osd_weight) == len(m.client_addrs) == m.max_osd
    for pid, pool in m.pools.items():
        assert pool.name == m.pool_name.get(pid, "")
    for pid, pool in m.pools.items():
        for ps in range(min(pool.pg_num, 8)):
            up, upp, acting, actp = m.pg_to_up_acting_osds(PgT(pid, ps))
            assert all(m.is_up(o) for o in up if o != 0x7FFFFFFF)


@pytest.mark.parametrize("path", _corpus("OSDMap::Incremental"), ids=lambda p: p.name[:8])
def test_corpus_incremental(path):
    inc = Incremental.decode(path.read_bytes())
    assert inc.inc_crc is not None
    for pid, pool in inc.new_pools.items():
        assert pool.id == pid and pool.size >= 1


def _decode_exactly(cls, path: Path):
    b = path.read_bytes()
    d = Decoder(b)
    v = cls.decode(d)
    assert d.pos == len(b), path
    return v


@pytest.mark.parametrize(
    "type_name,cls",
    [
        ("pg_pool_t", PgPool),
        ("pool_opts_t", PoolOpts),
        ("pool_snap_info_t", PoolSnapInfo),
        ("osd_info_t", OsdInfo),
        ("osd_xinfo_t", OsdXinfo),
        ("pg_t", PgT),
    ],
)
def test_corpus_small_types(type_name, cls):
    for path in _corpus(type_name):
        _decode_exactly(cls, path)


def test_pool_opts_names_match_ceph(live):
    # live pool 2 has pg_num_min/pg_num_max options in ceph osd dump
    ref = json.loads((VEC / "live.osd-dump.json").read_text())
    for p in ref["pools"]:
        assert live.pools[p["pool"]].opts.opts == p["options"]


# -- robustness ----------------------------------------------------------------------

_LIVE = (VEC / "live.bin").read_bytes()
_INC = max((p.read_bytes() for p in _corpus("OSDMap::Incremental")), key=len)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(min_value=0, max_value=len(_LIVE) - 1))
def test_truncated_map_raises_decode_error(cut):
    with pytest.raises(DecodeError):
        OSDMap.decode(_LIVE[:cut])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.sampled_from(["map", "inc"]),
    edits=st.lists(st.tuples(st.integers(min_value=0, max_value=10**6), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_garbled_map_raises_only_decode_error(which, edits):
    data = bytearray(_LIVE if which == "map" else _INC)
    for pos, val in edits:
        data[pos % len(data)] = val
    try:
        if which == "map":
            OSDMap.decode(bytes(data))
        else:
            Incremental.decode(bytes(data))
    except DecodeError:
        pass


@settings(max_examples=100, deadline=None)
@given(cut=st.integers(min_value=0, max_value=len(_INC) - 1))
def test_truncated_incremental_raises_decode_error(cut):
    with pytest.raises(DecodeError):
        Incremental.decode(_INC[:cut])


# -- maps edited byte-wise, with osdmaptool as the oracle ----------------------------
#
# No Pacific tool sets primary affinity or marks an OSD down in a map file, so these tests
# splice new values into live.bin's client section (fixing lengths and the crc) and let
# osdmaptool map the result.


def _client_fields(data: bytes) -> dict[str, tuple[int, int]]:
    """Byte ranges of some client-section fields of a v8 OSDMap encoding."""
    from pyceph.encoding import Decoder as D

    d = D(data)
    d.skip(6 + 6)  # wrapper and client-data headers
    d.skip(16 + 4 + 8 + 8)  # fsid, epoch, created, modified
    for _ in range(d.u32()):
        d.s64()
        PgPool.decode(d)
    d.map(D.s64, D.string)
    d.skip(4 + 4 + 4)  # pool_max, flags, max_osd
    spans = {}
    for name, item in (("osd_state", D.u32), ("osd_weight", D.u32)):
        at = d.pos
        d.list(item)
        spans[name] = (at, d.pos)
    from pyceph.types import EntityAddrvec

    d.list(EntityAddrvec.decode)
    d.map(PgT.decode, lambda x: x.list(D.s32))
    d.map(PgT.decode, D.s32)
    at = d.pos
    d.list(D.u32)
    spans["osd_primary_affinity"] = (at, d.pos)
    d.blob()
    d.map(D.string, lambda x: x.map(D.string, D.string))
    at = d.pos
    d.map(PgT.decode, lambda x: x.list(D.s32))
    spans["pg_upmap"] = (at, d.pos)
    return spans


def _splice(data: bytes, field: str, new: bytes) -> bytes:
    import struct

    from pyceph.encoding import crc32c

    start, end = _client_fields(data)[field]
    out = bytearray(data[:start] + new + data[end:])
    grow = len(new) - (end - start)
    for len_at in (2, 8):  # wrapper and client-data struct_len
        struct.pack_into("<I", out, len_at, struct.unpack_from("<I", out, len_at)[0] + grow)
    struct.pack_into("<I", out, len(out) - 4, crc32c(out[: len(out) - 4], 0xFFFFFFFF))
    return bytes(out)


def _u32s(vals) -> bytes:
    import struct

    return struct.pack(f"<I{len(vals)}I", len(vals), *vals)


def _osdmaptool_on(tmp_path: Path, data: bytes, *args: str) -> list[str]:
    f = tmp_path / "edited.bin"
    f.write_bytes(data)
    out = subprocess.run(
        [OSDMAPTOOL, str(f), "--test-map-pgs-dump-all", *args],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.splitlines()
    return [ln for ln in out if not ln.startswith(("osdmaptool:", "marking", "clearing"))]


@needs_osdmaptool
@pytest.mark.parametrize("aff", [(0x8000, 0, 0x10000), (0, 0x2000, 0x4000)])
def test_primary_affinity_matches_osdmaptool(tmp_path, live, aff):
    edited = _splice(_LIVE, "osd_primary_affinity", _u32s(aff))
    m = OSDMap.decode(edited)
    assert m.osd_primary_affinity == list(aff)
    ref = _osdmaptool_on(tmp_path, edited)
    assert dump_all_pgs(m) == ref
    # the same change made by an incremental
    m2 = _load("live.bin")
    m2.apply_incremental(_inc(m2, new_primary_affinity=dict(enumerate(aff))))
    assert dump_all_pgs(m2) == ref


@needs_osdmaptool
@pytest.mark.parametrize("down", [1, 2])
def test_down_osd_matches_osdmaptool(tmp_path, live, down):
    state = list(live.osd_state)
    state[down] &= ~CEPH_OSD_UP
    edited = _splice(_LIVE, "osd_state", _u32s(state))
    ref = _osdmaptool_on(tmp_path, edited)
    assert dump_all_pgs(OSDMap.decode(edited)) == ref
    m = _load("live.bin")
    m.apply_incremental(_inc(m, new_state={down: CEPH_OSD_UP}))  # xor: marks it down
    assert dump_all_pgs(m) == ref


@needs_osdmaptool
def test_pg_upmap_matches_osdmaptool(tmp_path, live):
    from pyceph.encoding import Encoder

    upmap = {PgT(3, 0): [2, 1, 0], PgT(3, 1): [1, 2], PgT(4, 0): [2, 0x7FFFFFFF, 1], PgT(1, 5): [0, 1, 2]}
    e = Encoder().u32(len(upmap))
    for pg, osds in upmap.items():
        pg.encode(e)
        e.raw(_u32s([o & 0xFFFFFFFF for o in osds]))
    edited = _splice(_LIVE, "pg_upmap", e.bytes())
    m = OSDMap.decode(edited)
    assert m.pg_upmap == upmap
    ref = _osdmaptool_on(tmp_path, edited)
    assert dump_all_pgs(m) == ref
    # the same via incremental, then removed again
    m2 = _load("live.bin")
    m2.apply_incremental(_inc(m2, new_pg_upmap=upmap))
    assert dump_all_pgs(m2) == ref
    m2.apply_incremental(_inc(m2, old_pg_upmap=list(upmap)))
    assert dump_all_pgs(m2) == dump_all_pgs(live)


def _with_object_hash(data: bytes, pool_id: int, object_hash: int) -> bytes:
    """live.bin with one pool's ``object_hash`` byte replaced (crc fixed)."""
    import struct

    from pyceph.encoding import crc32c

    d = Decoder(data)
    d.skip(6 + 6 + 16 + 4 + 8 + 8)
    out = bytearray(data)
    for _ in range(d.u32()):
        pid = d.s64()
        at = d.pos
        PgPool.decode(d)
        if pid == pool_id:
            out[at + 6 + 3] = object_hash  # after struct header, type, size, crush_rule
    struct.pack_into("<I", out, len(out) - 4, crc32c(out[: len(out) - 4], 0xFFFFFFFF))
    return bytes(out)


_NAMES = ["x" * n for n in range(1, 14)] + ["rbd_data.1234.0000000000000001", "\u00e9t\u00e9"]


@needs_osdmaptool
@pytest.mark.parametrize("object_hash", [1, 2], ids=["linux", "rjenkins"])
def test_object_hash_matches_osdmaptool(tmp_path, object_hash):
    edited = _with_object_hash(_LIVE, 3, object_hash)
    m = OSDMap.decode(edited)
    assert m.pools[3].object_hash == object_hash
    f = tmp_path / "edited.bin"
    f.write_bytes(edited)
    for name in _NAMES:
        out = subprocess.run(
            [OSDMAPTOOL, str(f), "--test-map-object", name, "--pool", "3"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout.splitlines()[-1]
        pg, acting, _ = m.object_to_osds(3, name)
        assert out == f" object '{name}' -> {pg} -> [{','.join(map(str, acting))}]"


@pytest.mark.parametrize("unchanged", [0, 0xFF])
def test_incremental_release_sentinels_leave_requirements_alone(unchanged):
    """Monitors encode "no change" of require_min_compat_client/require_osd_release as
    0 or 0xff (an int8 -1 in older encoders); neither may overwrite the map's values."""
    m = _load("live.bin")
    before = (m.require_min_compat_client, m.require_osd_release, m.flags)
    m.apply_incremental(_inc(m, new_require_min_compat_client=unchanged, new_require_osd_release=unchanged))
    assert (m.require_min_compat_client, m.require_osd_release, m.flags) == before
    m.apply_incremental(_inc(m, new_require_min_compat_client=13, new_require_osd_release=16))
    assert (m.require_min_compat_client, m.require_osd_release) == (13, 16)
