"""CRUSH map decoding and placement against Ceph's own outputs.

Oracles: ../shared/vectors/crush (crushtool 16.2.15 --test --show-mappings over
compiled maps), Ceph's object corpus (CrushWrapper samples), and the installed
crushtool run here on extra maps that reach the paths the vectors do not (argonaut
tunables' local retries and permutation fallback, device classes, choose_args,
fractional reweights, --pool-id).

Mapping vectors are subsampled by default (every map, rule and replica count; x < 96
and the first 16 of every 128 beyond); set PYCEPH_CRUSH_FULL=1 to compare every line.
"""

from __future__ import annotations

import functools
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyceph.encoding import Decoder
from pyceph.errors import DecodeError
from pyceph.osdmap.crush import CRUSH_ITEM_NONE, CrushMap
from pyceph.osdmap.crush import map as crush_map_mod
from pyceph.osdmap.crush.map import (
    CRUSH_RULE_SET_CHOOSE_TRIES,
    CRUSH_RULE_SET_CHOOSELEAF_TRIES,
)
from pyceph.osdmap.crush.tool import test_mappings as crush_test_mappings
from pyceph.osdmap.crush.tool import tester_weights as crush_tester_weights
from tests.shared_data import CORPUS as CORPUS_DIR, VECTORS as VECTORS_DIR

VECTORS = (VECTORS_DIR / "crush")
CORPUS = (CORPUS_DIR / "CrushWrapper")
FULL = os.environ.get("PYCEPH_CRUSH_FULL") == "1"
MAP_NAMES = sorted(p.stem for p in VECTORS.glob("*.bin"))
CORPUS_FILES = sorted(CORPUS.iterdir()) if CORPUS.is_dir() else []


@functools.lru_cache(maxsize=None)
def _load(name: str) -> CrushMap:
    """Decoded vector map, shared by tests (placement never mutates it)."""
    return CrushMap.from_bytes((VECTORS / f"{name}.bin").read_bytes())


def _x_of(line: str) -> int:
    return int(line.split()[4])


def _keep(x: int, head: int) -> bool:
    return FULL or x < head or x % 128 < 16


def _runs(xs: list[int]) -> list[tuple[int, int]]:
    """Consecutive x values as (first, last) ranges."""
    runs: list[tuple[int, int]] = []
    for x in xs:
        if runs and runs[-1][1] == x - 1:
            runs[-1] = (runs[-1][0], x)
        else:
            runs.append((x, x))
    return runs


def _mapped(m: CrushMap, rule: int, num_rep: int, xs: list[int], weights=None) -> list[str]:
    out: list[str] = []
    for lo, hi in _runs(xs):
        out += crush_test_mappings(m, rule, num_rep, lo, hi, weights)
    return out


@functools.lru_cache(maxsize=None)
def _groups(path: Path) -> tuple[list[str], dict[tuple[int, int], list[str]]]:
    """Mapping file -> (header lines, {(num_rep, rule): [crushtool lines in x order]})."""
    head: list[str] = []
    out: dict[tuple[int, int], list[str]] = {}
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            head.append(line)
            continue
        _, n, rest = line.split(" ", 2)
        out.setdefault((int(n), int(rest.split()[2])), []).append(rest)
    return head, out


def _vector_cases(suffix: str) -> list[tuple[str, int, int]]:
    cases = []
    for name in MAP_NAMES:
        _, groups = _groups(VECTORS / f"{name}{suffix}")
        cases += [(name, n, r) for (n, r) in sorted(groups)]
    return cases


def test_vectors_present():
    assert len(MAP_NAMES) == 6 and len(CORPUS_FILES) == 10


# -- decoding -----------------------------------------------------------------


@pytest.mark.parametrize("name", MAP_NAMES)
def test_decode_vector_matches_text(name):
    """Names, rules and tunables agree with crushtool's decompiled text; re-encoding
    gives back the exact bytes."""
    raw = (VECTORS / f"{name}.bin").read_bytes()
    m = CrushMap.from_bytes(raw)
    text = (VECTORS / f"{name}.txt").read_text().splitlines()
    tun = {ln.split()[1]: int(ln.split()[2]) for ln in text if ln.startswith("tunable ")}
    for k, v in tun.items():
        assert getattr(m, k) == v, k
    devices = {int(ln.split()[1]): ln.split()[2] for ln in text if ln.startswith("device ")}
    types = {int(ln.split()[1]): ln.split()[2] for ln in text if ln.startswith("type ")}
    assert types == m.type_names
    assert {i: n for i, n in m.names.items() if i >= 0} == devices
    assert m.max_devices == max(devices) + 1
    # buckets: "TYPE NAME {" ... "id N" ... "alg A" ... "item X weight W"
    buckets = {}
    cur = None
    for ln in text:
        parts = ln.split()
        if ln.endswith("{") and parts[0] in types.values():
            cur = {"name": parts[1], "type": parts[0], "items": []}
        elif cur is not None and parts and parts[0] == "id":
            cur["id"] = int(parts[1])
        elif cur is not None and parts and parts[0] == "alg":
            cur["alg"] = parts[1]
        elif cur is not None and parts and parts[0] == "item":
            cur["items"].append((parts[1], round(float(parts[3]) * 0x10000)))
        elif cur is not None and ln == "}":
            buckets[cur["id"]] = cur
            cur = None
    assert len(buckets) == sum(b is not None for b in m.buckets)
    alg_names = {1: "uniform", 2: "list", 3: "tree", 4: "straw", 5: "straw2"}
    for bid, tb in buckets.items():
        b = m.get_bucket(bid)
        assert b is not None and b.id == bid
        assert m.names[bid] == tb["name"] and m.type_names[b.type] == tb["type"]
        assert alg_names[b.alg] == tb["alg"]
        assert [m.names[i] for i in b.items] == [n for n, _ in tb["items"]]
        assert [b.item_weight_at(i) for i in range(b.size)] == [w for _, w in tb["items"]]
    rules = {}
    for i, ln in enumerate(text):
        if ln.startswith("rule "):
            rid = int(text[i + 1].split()[1])
            rules[rid] = ln.split()[1]
    assert m.rule_names == rules
    assert {i for i, r in enumerate(m.rules) if r is not None} == set(rules)
    assert m.to_bytes() == raw


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_decode_corpus(path):
    raw = path.read_bytes()
    d = Decoder(raw)
    m = CrushMap.decode(d)
    assert d.eof()
    assert m.to_bytes() == raw
    # every bucket's item names resolve, and shadow (class) buckets are named name~class
    for b in m.buckets:
        if b is not None:
            assert b.id in m.names
    for bid, per_class in m.class_bucket.items():
        for cls, shadow in per_class.items():
            assert m.names[shadow] == f"{m.names[bid]}~{m.class_names[cls]}"


def test_decode_rejects_bad_magic_and_trailing_bytes():
    raw = (VECTORS / "mixed-algs.bin").read_bytes()
    with pytest.raises(DecodeError):
        CrushMap.from_bytes(b"\x01" + raw[1:])
    with pytest.raises(DecodeError):
        CrushMap.from_bytes(raw + b"\0")


def test_decode_rejects_cycles():
    m = CrushMap.from_bytes((VECTORS / "straw2-host-rack.bin").read_bytes())
    root = next(b for b in m.buckets if b is not None and b.id not in
                {i for bb in m.buckets if bb is not None for i in bb.items})
    leaf_host = next(b for b in m.buckets if b is not None and all(i >= 0 for i in b.items))
    leaf_host.items.append(root.id)
    leaf_host.item_weights.append(0x10000)
    with pytest.raises(DecodeError):
        CrushMap.from_bytes(m.to_bytes())


def _all_samples() -> list[bytes]:
    return [(VECTORS / f"{n}.bin").read_bytes() for n in MAP_NAMES] + [
        p.read_bytes() for p in CORPUS_FILES
    ]


def _fixed_len(raw: bytes) -> int:
    """Bytes before the optional tunables tail (header, buckets, rules, name maps)."""
    d = Decoder(raw)
    d.u32()
    nb, nr = d.s32(), d.u32()
    d.s32()
    for _ in range(nb):
        crush_map_mod._decode_bucket(d)
    for _ in range(nr):
        crush_map_mod._decode_rule(d)
    for _ in range(3):
        crush_map_mod._decode_name_map(d)
    return d.pos


@pytest.mark.parametrize("idx", range(16))
def test_truncations_raise_decode_error(idx):
    """Cutting into the fixed part raises DecodeError; the optional tail may stop at
    a group boundary (old encoders) but never raises anything else."""
    raw = _all_samples()[idx]
    fixed = _fixed_len(raw)
    assert 16 <= fixed < len(raw)
    decoded_tails = 0
    for cut in sorted(set(range(0, len(raw), max(1, len(raw) // 200))) | set(range(fixed, len(raw)))):
        if cut < fixed:
            with pytest.raises(DecodeError):
                CrushMap.from_bytes(raw[:cut])
        else:
            try:
                CrushMap.from_bytes(raw[:cut])
                decoded_tails += 1
            except DecodeError:
                pass
    assert decoded_tails >= 5  # fixed part alone, +3 tries, +descend_once, +vary_r, ...


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, 15),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.integers(0, 10**6),
    x=st.integers(0, 2**32 - 1),
)
def test_garbled_maps_raise_only_decode_error(which, edits, cut, x):
    """Garbled maps either decode or raise DecodeError; those that decode map without
    raising (tries are clamped first: C would spin for a garbled 2**31 too)."""
    raw = bytearray(_all_samples()[which])
    for pos, val in edits:
        raw[pos % len(raw)] = val
    raw = bytes(raw[: len(raw) - cut % 64])
    try:
        m = CrushMap.from_bytes(raw)
    except DecodeError:
        return
    m.choose_total_tries = min(m.choose_total_tries, 50)
    m.choose_local_tries = min(m.choose_local_tries, 5)
    m.choose_local_fallback_tries = min(m.choose_local_fallback_tries, 5)
    for r in m.rules:
        if r is None:
            continue
        for s in r.steps:
            if s.op in (CRUSH_RULE_SET_CHOOSE_TRIES, CRUSH_RULE_SET_CHOOSELEAF_TRIES):
                s.arg1 = min(s.arg1, 50)
            s.arg1 = max(min(s.arg1, 8), -8) if s.op in (2, 3, 6, 7) else s.arg1
    m.max_devices = min(m.max_devices, 1 << 16)
    weights = [0x10000] * min(m.max_devices, 256)
    for ruleno in range(min(len(m.rules), 8)):
        out = m.do_rule(ruleno, x, 5, weights, -1)
        assert len(out) <= 5
        assert all(isinstance(i, int) for i in out)


# -- placement vs crushtool vectors ----------------------------------------------


@pytest.mark.parametrize("name,num_rep,rule", _vector_cases(".mappings"))
def test_vector_mappings(name, num_rep, rule):
    _, groups = _groups(VECTORS / f"{name}.mappings")
    expected = groups[(num_rep, rule)]
    m = _load(name)
    lo, hi = _x_of(expected[0]), _x_of(expected[-1])
    assert hi - lo + 1 == len(expected)
    keep = [ln for ln in expected if _keep(_x_of(ln), 96)]
    assert _mapped(m, rule, num_rep, [_x_of(ln) for ln in keep]) == keep


@pytest.mark.parametrize("name,num_rep,rule", _vector_cases(".weighted.mappings"))
def test_vector_weighted_mappings(name, num_rep, rule):
    head, groups = _groups(VECTORS / f"{name}.weighted.mappings")
    args = head[0].split(":", 1)[1].split()
    weights = {int(args[i + 1]): float(args[i + 2]) for i in range(0, len(args), 3)}
    assert all(args[i] == "--weight" for i in range(0, len(args), 3)) and weights
    expected = groups[(num_rep, rule)]
    m = _load(name)
    keep = [ln for ln in expected if _keep(_x_of(ln), 96)]
    got = _mapped(m, rule, num_rep, [_x_of(ln) for ln in keep], weights)
    assert got == keep
    # the weighted-out devices never appear
    assert not any(f"{d}" in ln.split()[-1].strip("[]").split(",") for ln in got for d in weights)


def test_whole_range_call_matches_vector():
    """One uncut test_mappings call reproduces a full crushtool run line for line."""
    _, groups = _groups(VECTORS / "mixed-algs.mappings")
    m = _load("mixed-algs")
    assert crush_test_mappings(m, 9, 5, 0, 1023) == groups[(5, 9)]


def test_find_rule_and_missing_rule():
    m = _load("mixed-algs")
    for rid, rule in enumerate(m.rules):
        if rule is None:
            assert crush_test_mappings(m, rid, 3, 0, 3) == []
            assert m.do_rule(rid, 1, 3, crush_tester_weights(m)) == []
            continue
        assert m.find_rule(rule.ruleset, rule.type, rule.min_size) == rid
        assert m.find_rule(rule.ruleset, rule.type, rule.max_size) == rid
        assert m.find_rule(rule.ruleset, rule.type, rule.max_size + 1) == -1
        assert m.find_rule(rule.ruleset, rule.type ^ 2, rule.min_size) == -1
    assert m.do_rule(len(m.rules), 1, 3, crush_tester_weights(m)) == []
    assert m.do_rule(-1, 1, 3, crush_tester_weights(m)) == []


# -- extra oracle maps compiled and tested by the installed crushtool ------------

CRUSHTOOL = shutil.which("crushtool")
needs_crushtool = pytest.mark.skipif(CRUSHTOOL is None, reason="crushtool (Ceph) not installed")

_RULES = """
rule rep_host {
	id 0
	type replicated
	min_size 1
	max_size 10
	step take default%(cls_a)s
	step chooseleaf firstn 0 type host
	step emit
}
rule rep_rack_then_host {
	id 1
	type replicated
	min_size 1
	max_size 10
	step take default
	step choose firstn 2 type rack
	step chooseleaf firstn 2 type host
	step emit
}
rule ec_rack_host {
	id 2
	type erasure
	min_size 1
	max_size 20
	step set_chooseleaf_tries 5
	step set_choose_tries 100
	step take default
	step choose indep 3 type rack
	step chooseleaf indep 2 type host
	step emit
}
rule flat_stable {
	id 4
	type replicated
	min_size 1
	max_size 10
	step set_chooseleaf_vary_r 1
	step set_chooseleaf_stable 1
	step take flat
	step chooseleaf firstn 0 type osd
	step emit
}
rule two_takes {
	id 5
	type replicated
	min_size 1
	max_size 10
	step set_choose_local_tries 3
	step set_choose_local_fallback_tries 0
	step take rack0
	step chooseleaf firstn 1 type host
	step emit
	step take flat
	step chooseleaf firstn -1 type host
	step emit
}
rule indep_osd {
	id 6
	type erasure
	min_size 1
	max_size 20
	step take default%(cls_b)s
	step choose indep 0 type osd
	step emit
}
rule rep_osd_firstn {
	id 7
	type replicated
	min_size 1
	max_size 10
	step take flat
	step choose firstn 0 type osd
	step emit
}
"""


def _extra_map_text(kind: str) -> str:
    """A compilable text map.  kind: "argonaut" (legacy local retries, every alg),
    "classes" (device classes with shadow ids; no tree/uniform, whose shadow clones
    Ceph builds badly), "args" (straw2 everywhere plus choose_args sets -1 and 3),
    "args_b" (the same with set 3 as the default, to check pool-specific lookup)."""
    rnd = random.Random(1234)
    tun = {
        "argonaut": (2, 5, 19, 0, 0, 0),
        "classes": (0, 0, 50, 1, 2, 0),
        "args": (0, 0, 50, 1, 1, 1),
        "args_b": (0, 0, 50, 1, 1, 1),
    }[kind]
    names = ("choose_local_tries", "choose_local_fallback_tries", "choose_total_tries",
             "chooseleaf_descend_once", "chooseleaf_vary_r", "chooseleaf_stable")
    out = [f"tunable {n} {v}" for n, v in zip(names, tun)]
    out += ["tunable straw_calc_version 1", "tunable allowed_bucket_algs 62"]
    for i in range(40):
        cls = (" class ssd" if i % 3 == 0 else " class hdd") if kind == "classes" else ""
        out.append(f"device {i} osd.{i}{cls}")
    out.append("type 0 osd\ntype 1 host\ntype 2 rack\ntype 3 root")
    if kind == "argonaut":
        host_algs = ["straw2", "list", "tree", "straw", "uniform", "straw2", "tree", "list"]
        rack_algs = ["straw2", "tree", "uniform"]
    elif kind == "classes":
        host_algs = ["straw2", "list", "straw", "straw2", "list", "straw2", "straw", "list"]
        rack_algs = ["straw2", "list", "straw"]
    else:
        host_algs = ["straw2"] * 8
        rack_algs = ["straw2"] * 3
    shadow = [-100]

    def ids(bid: int) -> str:
        s = f"\tid {bid}"
        if kind == "classes":
            s += f"\n\tid {shadow[0]} class ssd\n\tid {shadow[0] - 1} class hdd"
            shadow[0] -= 2
        return s

    hosts = []
    dev = 0
    for h, alg in enumerate(host_algs):
        items = []
        for _ in range(5):
            w = 1.0 if alg == "uniform" else rnd.choice([0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0])
            items.append((f"osd.{dev}", w))
            dev += 1
        body = "\n".join(f"\titem {n} weight {w:.3f}" for n, w in items)
        out.append(f"host host{h} {{\n{ids(-1 - h)}\n\talg {alg}\n\thash 0\n{body}\n}}")
        hosts.append((f"host{h}", sum(w for _, w in items)))
    racks = []
    members = [hosts[0:3], hosts[3:6], hosts[6:8]]
    for r, alg in enumerate(rack_algs):
        hs = members[r]
        if alg == "uniform":
            hs = [(n, 4.0) for n, _ in hs]
        body = "\n".join(f"\titem {n} weight {w:.3f}" for n, w in hs)
        out.append(f"rack rack{r} {{\n{ids(-9 - r)}\n\talg {alg}\n\thash 0\n{body}\n}}")
        racks.append((f"rack{r}", sum(w for _, w in hs)))
    body = "\n".join(f"\titem {n} weight {w:.3f}" for n, w in racks)
    out.append(f"root default {{\n{ids(-12)}\n\talg straw2\n\thash 0\n{body}\n}}")
    body = "\n".join(f"\titem {n} weight {w:.3f}" for n, w in hosts)
    out.append(f"root flat {{\n{ids(-13)}\n\talg straw2\n\thash 0\n{body}\n}}")
    cls = kind == "classes"
    out.append(_RULES % {"cls_a": " class ssd" if cls else "", "cls_b": " class hdd" if cls else ""})
    if kind in ("args", "args_b"):
        def ws(n: int) -> str:
            return "[ " + " ".join(f"{rnd.choice([0.0, 0.5, 1.0, 1.25, 2.0]):.3f}" for _ in range(n)) + " ]"

        default, pool3 = ("18446744073709551615", "3") if kind == "args" else ("99", "18446744073709551615")
        out.append(
            f"choose_args {default} {{\n  {{\n    bucket_id -13\n    weight_set [\n      {ws(8)}\n      {ws(8)}\n    ]\n  }}\n"
            f"  {{\n    bucket_id -1\n    weight_set [\n      {ws(5)}\n    ]\n    ids [ 100 101 102 103 104 ]\n  }}\n}}"
        )
        out.append(
            f"choose_args {pool3} {{\n  {{\n    bucket_id -13\n    ids [ -100 -101 -102 -103 -104 -105 -106 -107 ]\n  }}\n"
            f"  {{\n    bucket_id -12\n    weight_set [\n      {ws(3)}\n    ]\n  }}\n}}"
        )
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def extra_maps(tmp_path_factory) -> dict[str, Path]:
    if CRUSHTOOL is None:
        pytest.skip("crushtool (Ceph) not installed")
    d = tmp_path_factory.mktemp("crush")
    out = {}
    for kind in ("argonaut", "classes", "args", "args_b"):
        (d / f"{kind}.txt").write_text(_extra_map_text(kind))
        subprocess.run([CRUSHTOOL, "-c", str(d / f"{kind}.txt"), "-o", str(d / f"{kind}.bin")],
                       check=True, capture_output=True)
        out[kind] = d / f"{kind}.bin"
    return out


def _crushtool(path: Path, rule: int, num_rep: int, lo: int, hi: int,
               weights: dict[int, float], pool_id: int = -1) -> list[str]:
    cmd = [CRUSHTOOL, "-i", str(path), "--test", "--show-mappings", "--rule", str(rule),
           "--num-rep", str(num_rep), "--min-x", str(lo), "--max-x", str(hi)]
    for dev, w in weights.items():
        cmd += ["--weight", str(dev), str(w)]
    if pool_id != -1:
        cmd += ["--pool-id", str(pool_id)]
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return [ln for ln in (p.stdout + p.stderr).splitlines() if ln.startswith("CRUSH")]


_REWEIGHT = {3: 0.5, 7: 0.3, 11: 0.0, 12: 0.9, 27: 0.6, 30: 0.05, 31: 0.0, 36: 0.75}


@needs_crushtool
@pytest.mark.parametrize("kind", ["argonaut", "classes", "args"])
def test_extra_maps_vs_crushtool(extra_maps, kind):
    """Every rule at two replica counts, then reweighted (fractional weights exercise
    is_out's hash draw) at another, including inputs near 2**31."""
    path = extra_maps[kind]
    m = CrushMap.from_bytes(path.read_bytes())
    assert m.to_bytes() == path.read_bytes()
    if kind == "classes":
        assert m.class_bucket and m.class_names
    if kind == "args":
        assert set(m.choose_args) == {-1, 3}
    for rule, r in enumerate(m.rules):
        if r is None:
            continue
        for num_rep, lo, hi, weights in (
            (2, 0, 39, {}),
            (5, 0, 39, {}),
            (4, 0, 39, _REWEIGHT),
            (4, 2147483000, 2147483007, _REWEIGHT),
        ):
            want = _crushtool(path, rule, num_rep, lo, hi, weights)
            assert want, (rule, num_rep)
            got = crush_test_mappings(m, rule, num_rep, lo, hi, weights)
            assert got == want, (rule, num_rep, lo, weights)


@needs_crushtool
def test_extra_indep_holes(extra_maps):
    """With most devices out, indep rules leave CRUSH_ITEM_NONE holes where Ceph does."""
    path = extra_maps["argonaut"]
    m = CrushMap.from_bytes(path.read_bytes())
    weights = {d: 0.0 for d in range(40) if d % 9 != 0}
    holes = 0
    for rule in (2, 6):
        want = _crushtool(path, rule, 6, 0, 31, weights)
        holes += sum(str(CRUSH_ITEM_NONE) in ln for ln in want)
        assert crush_test_mappings(m, rule, 6, 0, 31, weights) == want
    assert holes


@needs_crushtool
def test_pool_specific_choose_args(extra_maps):
    """do_rule(..., choose_args_index=3) uses set 3 exactly as crushtool uses the same
    set when it is the map's default; an unknown pool falls back to the default set."""
    m = CrushMap.from_bytes(extra_maps["args"].read_bytes())
    mb = CrushMap.from_bytes(extra_maps["args_b"].read_bytes())
    w = crush_tester_weights(m)
    for rule in (0, 4, 5, 7):
        want = _crushtool(extra_maps["args_b"], rule, 3, 0, 99, {})
        got = [f"CRUSH rule {rule} x {x} [{','.join(map(str, m.do_rule(rule, x, 3, w, 3)))}]"
               for x in range(100)]
        assert got == want
        dflt = _crushtool(extra_maps["args"], rule, 3, 0, 99, {})
        got = [f"CRUSH rule {rule} x {x} [{','.join(map(str, m.do_rule(rule, x, 3, w, 12345)))}]"
               for x in range(100)]
        assert got == dflt
    # choose_args_index=None ignores every set: same as the map stripped of them
    plain = CrushMap.from_bytes(extra_maps["args"].read_bytes())
    plain.choose_args = {}
    for x in range(50):
        assert m.do_rule(4, x, 3, w) == plain.do_rule(4, x, 3, w, -1)
    assert any(m.do_rule(4, x, 3, w) != m.do_rule(4, x, 3, w, -1) for x in range(50))
    assert mb.choose_args


@needs_crushtool
def test_pool_id_hashing(extra_maps):
    """--pool-id feeds crush_hash32_2(x, pool) to CRUSH."""
    path = extra_maps["args"]
    m = CrushMap.from_bytes(path.read_bytes())
    assert crush_test_mappings(m, 0, 3, 0, 127, None, pool_id=7) == _crushtool(path, 0, 3, 0, 127, {}, 7)


def test_choose_args_must_match_buckets():
    """choose_args naming a bucket past max_buckets, or with ids/weights that disagree
    with the bucket's size, are refused (the kernel's decode_choose_args rejects the
    first two; the mapper would index past the bucket on the last)."""
    from pyceph.osdmap.crush import ChooseArg

    base = CrushMap.from_bytes((VECTORS / "straw2-host-rack.bin").read_bytes())
    size = base.buckets[0].size
    good = {0: ChooseArg([[0x10000] * size], list(range(100, 100 + size)))}
    for args in (
        {len(base.buckets): ChooseArg([[0x10000]], [])},
        {0: ChooseArg([], [5])},
        {0: ChooseArg([[0x10000] * (size + 1)], [])},
    ):
        m = CrushMap.from_bytes((VECTORS / "straw2-host-rack.bin").read_bytes())
        m.choose_args = {-1: args}
        with pytest.raises(DecodeError):
            CrushMap.from_bytes(m.to_bytes())
    m = CrushMap.from_bytes((VECTORS / "straw2-host-rack.bin").read_bytes())
    m.choose_args = {-1: good}
    assert CrushMap.from_bytes(m.to_bytes()).choose_args == {-1: good}


@needs_crushtool
def test_named_device_past_max_devices(tmp_path):
    """CrushWrapper::finalize raises max_devices to cover named devices; crushtool then
    places on them (checked by renumbering osd.35 to id 100)."""
    m = CrushMap.from_bytes((VECTORS / "straw2-host-rack.bin").read_bytes())
    for b in m.buckets:
        if b is not None and 35 in b.items:
            b.items[b.items.index(35)] = 100
    m.names[100] = m.names.pop(35)
    path = tmp_path / "bump.bin"
    path.write_bytes(m.to_bytes())
    m2 = CrushMap.from_bytes(path.read_bytes())
    assert m2.max_devices == 101
    want = _crushtool(path, 8, 5, 0, 199, {})
    assert any("100" in ln.split()[-1].strip("[]").split(",") for ln in want)
    assert crush_test_mappings(m2, 8, 5, 0, 199) == want
