"""Object placement and OSDMap decoding checked against Ceph's own tools on a live cluster.

Oracles (all expected values come from Ceph, never from pyceph):

- ``ceph osd map POOL OBJ [NSPACE] -f json``: one ``ceph`` process fed the commands on
  stdin (its non-tty interactive mode: one JSON object per output line), ~100x faster
  than one process per object.
- ``osdmaptool MAP --test-map-object NAME --pool ID``: for names outside Unicode's BMP.
  ``ceph osd map`` cannot be the oracle there: the monitor's JSON parser turns the
  ``\\ud83d\\ude42`` escapes the CLI sends into CESU-8 bytes, so it hashes a name no
  librados client would ever use.
- ``osdmaptool MAP --test-map-pgs-dump-all`` and ``ceph osd dump -f json``.
- ``rados -p POOL get/put`` for data written/read by pyceph in the EC pool.
"""

from __future__ import annotations

import asyncio
import json
import random
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyceph.config import ClientConfig
from pyceph.osdmap import OSDMap
from pyceph.osdmap.tool import osd_map_json
from pyceph.rados import AsyncRados

from .helpers import tool

REPO = Path(__file__).resolve().parents[2]
OSD_MAP_KEYS = ["epoch", "pool", "pool_id", "objname", "raw_pgid", "pgid", "up", "up_primary", "acting",
                "acting_primary"]


# -- object names ------------------------------------------------------------------------

ODD_NAMES = [
    "", " ", "a b", "  lead", "trail ", "with\ttab", "a/b", "/", "../x", "quote'\"", "$HOME", "*", "?",
    "x=y", "back\\slash", "-dash", "%s%n", "null", "{}", "[1,2]", "ctl\x01\x7f", "x" * 500, "y" * 2048,
    "ü", "é" * 3, "日本語オブジェクト", "Ωμέγα", "nb\u00a0sp", "zero\u200bwidth", "ﬁligature", "\ufeffbom",
    "rbd_header.1234abcd", "rbd_id.img", "rbd_directory", "rbd_info", "rbd_object_map.1234abcd",
    "rbd_data.1234abcd.0000000000000000", "rbd_data.1234abcd.ffffffffffffffff", "journal_data.1.2.3",
    "new\nline", "cr\r\nlf",
]
# Outside the BMP (4-byte UTF-8): also checked with osdmaptool, see the module doc.
ASTRAL_NAMES = ["🙂", "obj-🙂-emoji", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "mixed é 中 🚀 end", "\U0010fffd"]


def make_names(n: int = 300) -> list[str]:
    rng = random.Random(20240516)
    names = ODD_NAMES + ASTRAL_NAMES
    prefix = "%012x" % rng.getrandbits(48)
    i = 0
    while len(names) < n:
        kind = i % 4
        if kind == 0:
            names.append(f"rbd_data.{prefix}.{i * 37:016x}")
        elif kind == 1:
            names.append(f"obj-{i}")
        elif kind == 2:
            alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+~:@ "
            names.append("r" + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))))
        else:
            names.append("u-" + "".join(chr(rng.choice([rng.randint(0xA0, 0x2FF), rng.randint(0x4E00, 0x4FFF)]))
                                        for _ in range(rng.randint(1, 12))))
        i += 1
    assert len(set(names)) == len(names) == n
    return names


NAMES = make_names(300)
# Namespace case: a third of the names, spread over a few namespaces (one is unicode).
NS_CASES = [(NAMES[i], ("ns1", "tenant-b", "名前空間", "a b", "🙂")[i % 5]) for i in range(0, 300, 3)]


# -- oracles -------------------------------------------------------------------------------

# Runs under the interpreter of Ceph's own ``ceph`` script, whose ``rados`` module
# (librados) sends the very mon command ``ceph osd map`` sends, without the CLI's
# per-command argument validation (~0.1-0.2 s of CPU each).  The command JSON carries
# names as raw UTF-8: the CLI's \uXXXX escapes would reach the monitor as CESU-8 for
# names outside the BMP (see the module doc).
_ORACLE = r"""
import json, sys, rados
c = rados.Rados(conffile=sys.argv[1])
c.connect(timeout=30)
out = []
for pool, obj, ns in json.load(sys.stdin):
    cmd = {"prefix": "osd map", "pool": pool, "object": obj, "format": "json"}
    if ns:
        cmd["nspace"] = ns
    ret, buf, outs = c.mon_command(json.dumps(cmd, ensure_ascii=False), b"")
    out.append([ret, buf.decode("utf-8"), outs])
c.shutdown()
json.dump(out, sys.stdout)
"""


def ceph_python(cluster) -> str:
    """The Python interpreter the release's ``ceph`` CLI runs under (it has that release's ``rados`` module)."""
    root = cluster.release.root
    ceph = str(root / "usr/bin/ceph") if root else shutil.which("ceph")
    assert ceph, "ceph CLI not installed"
    first = Path(ceph).read_text(errors="replace").splitlines()[0]
    assert first.startswith("#!"), first
    return first[2:].strip().split()[0]


def check_rows(rows: list[dict], queries) -> None:
    for row, (pool, obj, ns) in zip(rows, queries):
        # The oracle answered the question we asked (quoting/encoding survived).
        assert row["pool"] == pool and row["objname"] == (f"{ns}/{obj}" if ns else obj), (row, obj)
        assert list(row) == OSD_MAP_KEYS, row


def ceph_osd_map_batch(cluster, queries: list[tuple[str, str, str]]) -> list[dict]:
    """``ceph osd map POOL OBJ [NS] -f json`` for every ``(pool, obj, ns)``, in one process."""
    r = subprocess.run(tool(cluster, ceph_python(cluster), "-c", _ORACLE, cluster.conf_path), input=json.dumps(queries),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert len(res) == len(queries)
    bad = [(q, ret, outs) for q, (ret, _, outs) in zip(queries, res) if ret != 0]
    assert not bad, bad[:5]
    out = [json.loads(buf) for _, buf, _ in res]
    check_rows(out, queries)
    return out


def ceph_cli_osd_map_batch(cluster, queries: list[tuple[str, str, str]]) -> list[dict]:
    """The same through the ``ceph`` CLI itself: one process reading commands on stdin."""
    lines = []
    for pool, obj, ns in queries:
        words = ["osd", "map", pool, obj] + ([ns] if ns else [])
        lines.append(" ".join(shlex.quote(w) for w in words) + "\n")
    r = subprocess.run([*tool(cluster, "ceph"), "-c", str(cluster.conf_path), "-f", "json"], input="".join(lines),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr[-2000:]
    out = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert len(out) == len(queries), (len(out), len(queries))
    check_rows(out, queries)
    return out


def osdmaptool_map_object(cluster, mapfile: Path, pool_id: int, name: str) -> tuple[str, list[int]]:
    r = subprocess.run(tool(cluster, "osdmaptool", mapfile, "--test-map-object", name, "--pool", pool_id),
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    line = r.stdout.decode("utf-8").strip()
    prefix = f"object '{name}' -> "
    assert line.startswith(prefix), line
    pgid, _, acting = line[len(prefix):].partition(" -> ")
    return pgid, json.loads(acting)


def getmap(cluster, path: Path) -> int:
    cluster.ceph("osd", "getmap", "-o", str(path), json=False)
    return OSDMap.decode(path.read_bytes()).epoch


# -- our client ----------------------------------------------------------------------------

async def connected(cluster) -> AsyncRados:
    r = AsyncRados(ClientConfig.load(str(cluster.conf_path)))
    await r.connect(30)
    return r


def ours(r: AsyncRados, queries: list[tuple[str, str, str]]) -> list[dict]:
    m = r.osdmap
    return [osd_map_json(m, pool, obj, ns) for pool, obj, ns in queries]


async def compare_at_same_epoch(cluster, r: AsyncRados, queries, attempts: int = 5) -> int:
    """Ask Ceph, bring our client to Ceph's epoch, compare every field.  Returns the epoch.

    Retries only when the map moved between Ceph's answer and our look (then the epochs
    differ and the comparison would be meaningless); never on a mismatch at one epoch.
    """
    for _ in range(attempts):
        want = await asyncio.to_thread(ceph_osd_map_batch, cluster, queries)
        epochs = {w["epoch"] for w in want}
        if len(epochs) != 1:
            continue
        (epoch,) = epochs
        await r.monc.wait_for_osdmap(epoch, timeout=30)
        if r.osdmap.epoch != epoch:
            continue
        got = ours(r, queries)
        bad = [(q, w, g) for q, w, g in zip(queries, want, got) if w != g]
        assert not bad, f"{len(bad)}/{len(queries)} placements differ at e{epoch}; first: {bad[:3]}"
        return epoch
    pytest.fail(f"osdmap kept changing during {attempts} attempts")


def run(coro_fn, cluster, *a):
    async def go():
        r = await connected(cluster)
        try:
            return await coro_fn(r, *a)
        finally:
            await r.shutdown()

    return asyncio.run(go())


# -- tests -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pools(cluster, ecpool, nonpow2_pool):
    return ["rbd", nonpow2_pool, ecpool]


def test_oracle_routes_agree_and_names_spread(cluster, pools):
    """The librados oracle answers 300 queries fast and agrees with the ``ceph`` CLI itself."""
    queries = [(pools[1], n, "") for n in NAMES]
    t0 = time.monotonic()
    rows = ceph_osd_map_batch(cluster, queries)
    assert time.monotonic() - t0 < 30
    # The CLI cannot carry newlines or (correctly) non-BMP names; the rest must agree.
    sample = [q for q in queries[:80] if "\n" not in q[1] and "\r" not in q[1] and q[1].isprintable()
              and all(ord(ch) < 0x10000 for ch in q[1])] + [("rbd", n, "ns1") for n in NAMES[100:110]]
    assert len(sample) > 60
    for _ in range(5):
        cli = ceph_cli_osd_map_batch(cluster, sample)
        lib = ceph_osd_map_batch(cluster, sample)
        if {r["epoch"] for r in cli} == {r["epoch"] for r in lib}:
            break
    assert cli == lib
    # pg_num 12: 300 names reach every PG, raw hashes almost all distinct.
    assert {r["pgid"] for r in rows} == {f"{rows[0]['pool_id']}.{i:x}" for i in range(12)}
    assert len({r["raw_pgid"] for r in rows}) > 290


@pytest.mark.parametrize("which", ["rbd", "nonpow2", "ec"])
def test_osd_map_matches_ceph_api(cluster, pools, which):
    pool = pools[["rbd", "nonpow2", "ec"].index(which)]
    queries = [(pool, n, "") for n in NAMES]
    if which == "rbd":
        queries += [(pool, n, ns) for n, ns in NS_CASES]

    async def go(r):
        return await compare_at_same_epoch(cluster, r, queries)

    run(go, cluster)


def test_pool_kinds_as_ceph_reports(cluster, pools):
    """The three pools really are what the placement tests claim (per Ceph)."""
    detail = {p["pool_name"]: p for p in cluster.ceph("osd", "pool", "ls", "detail")}
    assert detail[pools[0]]["type"] == 1
    assert detail[pools[1]]["type"] == 1 and detail[pools[1]]["pg_num"] == 12
    assert detail[pools[2]]["type"] == 3


def test_astral_unicode_names_match_osdmaptool(cluster, pools, tmp_path):
    mapfile = tmp_path / "osdmap"

    async def go(r):
        for _ in range(5):
            epoch = getmap(cluster, mapfile)
            await r.monc.wait_for_osdmap(epoch, timeout=30)
            if r.osdmap.epoch == epoch:
                break
        else:
            pytest.fail("osdmap kept changing")
        m = r.osdmap
        for pool in pools:
            pid = m.lookup_pool(pool)
            for name in ASTRAL_NAMES:
                want = osdmaptool_map_object(cluster, mapfile, pid, name)
                got = osd_map_json(m, pool, name)
                assert (got["pgid"], got["acting"]) == want, (pool, name)

    run(go, cluster)


def test_osd_map_cli_matches_ceph(cluster, pools):
    """``pyceph osd map POOL OBJ... --format json`` (one JSON object a line) == ``ceph osd map``."""
    for pool, extra, cases in (
        (pools[1], [], [(n, "") for n in NAMES]),
        (pools[2], [], [(n, "") for n in NAMES[:100]]),
        ("rbd", ["--namespace", "ns1"], [(n, "ns1") for n in NAMES[100:200]]),
    ):
        for _ in range(5):
            want = ceph_osd_map_batch(cluster, [(pool, n, ns) for n, ns in cases])
            r = subprocess.run(
                [sys.executable, "-m", "pyceph.cli.pyceph_cli", "-c", str(cluster.conf_path), "osd", "map",
                 "--format", "json", *extra, pool, "--", *[n for n, _ in cases]],
                capture_output=True, text=True, timeout=120, cwd=REPO,
            )
            assert r.returncode == 0, r.stderr
            got = [json.loads(line) for line in r.stdout.splitlines()]
            assert len(got) == len(cases)
            if {w["epoch"] for w in want} == {g["epoch"] for g in got}:
                break
        else:
            pytest.fail("osdmap kept changing")
        bad = [(w, g) for w, g in zip(want, got) if w != g]
        assert not bad, f"{pool}: {len(bad)} differ; first {bad[:3]}"


def test_decoded_osdmap_matches_ceph_osd_dump(cluster, pools):
    async def go(r):
        for _ in range(5):
            dump = await asyncio.to_thread(cluster.ceph, "osd", "dump")
            await r.monc.wait_for_osdmap(dump["epoch"], timeout=30)
            if r.osdmap.epoch == dump["epoch"]:
                return dump, r.osdmap.to_dump_dict()
        pytest.fail("osdmap kept changing")

    dump, mine = run(go, cluster)
    assert {p["pool_name"] for p in dump["pools"]} >= set(pools)
    # The fields the brief names, spelled as Ceph spells them ...
    pick = ("pool", "pool_name", "size", "min_size", "pg_num", "pg_placement_num", "crush_rule", "type")
    assert [{k: p[k] for k in pick} for p in mine["pools"]] == [{k: p[k] for k in pick} for p in dump["pools"]]
    assert [(o["osd"], o["up"], o["in"], o["weight"]) for o in mine["osds"]] == \
        [(o["osd"], o["up"], o["in"], o["weight"]) for o in dump["osds"]]
    # ... and every other key we emit must carry Ceph's value too.
    for mp, cp in zip(mine["pools"], dump["pools"]):
        assert {k: v for k, v in mp.items()} == {k: cp[k] for k in mp}, mp["pool_name"]
    for mo, co in zip(mine["osds"], dump["osds"]):
        assert mo == {k: co[k] for k in mo}
    top = {k: v for k, v in mine.items() if k not in ("pools", "osds")}
    assert top == {k: dump[k] for k in top}


def test_osdmaptool_dump_all_matches_cli_on_live_map(cluster, pools, tmp_path):
    mapfile = tmp_path / "osdmap"
    epoch = getmap(cluster, mapfile)
    assert epoch > 1
    pool_ids = [p["pool_id"] for p in cluster.ceph("osd", "pool", "ls", "detail")]
    for pool_args in [[]] + [["--pool", str(p)] for p in pool_ids]:
        want = subprocess.run(tool(cluster, "osdmaptool", mapfile, "--test-map-pgs-dump-all", *pool_args),
                              capture_output=True, text=True, timeout=60)
        assert want.returncode == 0, want.stderr
        got = subprocess.run([sys.executable, "-m", "pyceph.cli.pyceph_cli", "osdmap", str(mapfile),
                              "--test-map-pgs-dump-all", *pool_args],
                             capture_output=True, text=True, timeout=60, cwd=REPO)
        assert got.returncode == 0, got.stderr
        assert f"osdmaptool: osdmap file '{mapfile}'" in want.stderr  # it read the file we meant
        lines = want.stdout.splitlines()
        assert got.stdout.splitlines() == lines, pool_args
    assert sum(1 for line in lines if " raw (" in line) >= 8


@pytest.mark.timeout(300)
def test_placement_follows_map_changes(cluster, pools, monkeypatch):
    """One subscribed client follows reweight, primary-affinity and pg-upmap (incrementals)."""
    applied: list[int] = []
    orig_apply = OSDMap.apply_incremental

    def counting_apply(self, inc):
        applied.append(inc.epoch)
        return orig_apply(self, inc)

    monkeypatch.setattr(OSDMap, "apply_incremental", counting_apply)
    pool = pools[1]
    queries = [(pool, n, "") for n in NAMES[:150]] + [("rbd", n, "") for n in NAMES[150:]]
    rbd_id = {p["pool_name"]: p["pool_id"] for p in cluster.ceph("osd", "pool", "ls", "detail")}["rbd"]
    upmap_pg = f"{rbd_id}.3"

    async def go(r):
        seen = [await compare_at_same_epoch(cluster, r, queries)]
        before = ours(r, queries)
        updates = []
        r.monc.add_osdmap_listener(lambda m: updates.append(m.epoch))
        changes = [
            ("osd", "reweight", "1", "0.5"),
            ("osd", "primary-affinity", "osd.0", "0"),
            ("osd", "pg-upmap", upmap_pg, "2", "0", "1"),
        ]
        restore = [
            ("osd", "rm-pg-upmap", upmap_pg),
            ("osd", "primary-affinity", "osd.0", "1"),
            ("osd", "reweight", "1", "1"),
        ]
        try:
            for cmd in changes:
                await asyncio.to_thread(cluster.ceph, *cmd, json=False)
                seen.append(await compare_at_same_epoch(cluster, r, queries))
            changed = ours(r, queries)
        finally:
            for cmd in restore:
                await asyncio.to_thread(cluster.ceph, *cmd, json=False)
        seen.append(await compare_at_same_epoch(cluster, r, queries))
        return seen, before, changed, updates

    seen, before, changed, updates = run(go, cluster)
    assert seen == sorted(seen) and len(set(seen)) == len(seen), seen
    assert updates and updates[-1] == seen[-1]
    # Each change reached us as an incremental applied to the map we held.
    assert set(seen[1:]) <= set(applied), (seen, applied)
    # The changes really moved primaries (so the comparison above was not trivial).
    assert sum(b["up_primary"] != c["up_primary"] for b, c in zip(before, changed)) > 50
    assert not any(c["up_primary"] == 0 for c in changed)
    upmapped = [c for c in changed if c["pgid"] == upmap_pg]
    assert upmapped and all(c["up"] == [2, 0, 1] for c in upmapped)
    cluster.wait_clean(180)


def test_ec_pool_data_cross_checked_with_rados(cluster, pools, tmp_path):
    ec = pools[2]
    rng = random.Random(7)
    blobs = {
        "pyceph-ec-big": rng.randbytes(1_000_003),
        "pyceph-ec-small": b"hello erasure code",
        "pyceph-ec-ünï 🙂": rng.randbytes(8192),
    }

    async def write(r):
        io = await r.open_ioctx(ec)
        for name, data in blobs.items():
            await io.write_full(name, data)

    run(write, cluster)
    try:
        for i, (name, data) in enumerate(blobs.items()):
            out = tmp_path / f"out{i}"
            cluster.rados("-p", ec, "get", name, str(out))
            assert out.read_bytes() == data, name
        listed = set(cluster.rados("-p", ec, "ls").splitlines())
        assert set(blobs) <= listed

        # The other way: rados writes, pyceph reads and stats.
        src = tmp_path / "src"
        other = rng.randbytes(300_001)
        src.write_bytes(other)
        cluster.rados("-p", ec, "put", "pyceph-ec-from-rados", str(src))
        blobs["pyceph-ec-from-rados"] = other

        async def read(r):
            io = await r.open_ioctx(ec)
            return {n: (await io.read(n, len(d) + 100), (await io.stat(n))[0]) for n, d in blobs.items()}

        got = run(read, cluster)
        for name, data in blobs.items():
            assert got[name] == (data, len(data)), name
    finally:
        for name in blobs:
            subprocess.run(tool(cluster, "rados", "-c", cluster.conf_path, "-p", ec, "rm", name), capture_output=True)
    assert not set(blobs) & set(cluster.rados("-p", ec, "ls").splitlines())
