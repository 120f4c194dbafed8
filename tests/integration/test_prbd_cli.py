"""``prbd`` against librbd's ``rbd`` on a real cluster: the same command on the same image
must print the same thing (plain tables and ``--format json``), exit with the same code,
and leave state that ``rbd`` reads back (snapshots, clones, flatten, resize, features,
object maps, locks, watchers, du, diff).

Images are named ``h7-...``; snapshot/clone/du/ls listings use a private namespace of the
``rbd`` pool so that other users of a shared cluster do not change them mid-test.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from . import release_compat as RC
from .helpers import mapping_registry, rbd, rbd_export, run, tool

MiB = 1 << 20
TIMESTAMPS = ("create_timestamp", "access_timestamp", "modify_timestamp")

_PRBD_BIN = Path(sys.executable).parent / "prbd"
PRBD = [str(_PRBD_BIN)] if _PRBD_BIN.exists() else [sys.executable, "-m", "pyceph.cli.prbd"]


def uniq(prefix: str) -> str:
    return f"h7-{prefix}-{uuid.uuid4().hex[:8]}"


def prbd(cluster, *args, **kw) -> subprocess.CompletedProcess:
    return run([*PRBD, "-c", str(cluster.conf_path), *map(str, args)], **kw)


def both(cluster, *args, check=True):
    """(prbd result, rbd result) for the same arguments."""
    return prbd(cluster, *args, check=check), rbd(cluster, *args, check=check)


def _release_form(cluster, ours: bytes, command: str | None) -> bytes:
    """prbd's stdout (rbd 20's form) as the oracle's release prints it (release_compat)."""
    if command is None:
        return ours
    return RC.to_release_form(ours.decode(), RC.rbd_major(cluster), command).encode()


def assert_same(cluster, *args, release_form: str | None = None):
    """stdout byte-identical and same exit status; returns prbd's stdout.
    ``release_form``: the command whose output differs between releases (``"snap ls"``);
    prbd's output is turned into the oracle release's form first."""
    ours, theirs = both(cluster, *args, check=False)
    assert ours.returncode == theirs.returncode, (args, ours.stderr, theirs.stderr)
    mine = _release_form(cluster, ours.stdout, release_form)
    assert mine == theirs.stdout, (args, mine.decode(), theirs.stdout.decode())
    return ours.stdout.decode()


def assert_same_json(cluster, *args, drop=(), release_form: str | None = None):
    """``--format json`` (compact and pretty) equal; ``drop`` names top-level keys to ignore;
    ``release_form`` as for :func:`assert_same`.  Returns prbd's document."""
    ours, theirs = both(cluster, *args, "--format", "json")
    mine = _release_form(cluster, ours.stdout, release_form)
    a, b = json.loads(mine), json.loads(theirs.stdout)
    if drop:
        a = {k: v for k, v in a.items() if k not in drop}
        b = {k: v for k, v in b.items() if k not in drop}
    assert a == b, (args, a, b)
    if not drop:
        assert mine == theirs.stdout  # same compact encoding, key order and newline
        p, q = both(cluster, *args, "--format", "json", "--pretty-format")
        assert _release_form(cluster, p.stdout, release_form) == q.stdout
    return json.loads(ours.stdout)


def assert_same_error(cluster, *args):
    """Same non-zero exit code; prbd's one error line says what rbd's last line says
    (``rbd: X`` -> ``prbd: X ...``)."""
    ours, theirs = both(cluster, *args, check=False)
    assert theirs.returncode != 0, theirs
    assert ours.returncode == theirs.returncode, (args, ours.stderr, theirs.stderr)
    err = ours.stderr.decode()
    assert "Traceback" not in err, err
    mine = [ln for ln in err.splitlines() if ln.strip()][-1]
    # librbd's own log lines (``2026-...T... 7f.. -1 librbd::...``) can land inside rbd's line
    theirs_err = re.sub(r"\d{4}-\d\d-\d\dT\S+ \S+ +-?\d+ [^\n]*\n+", "", theirs.stderr.decode())
    rbd_last = [ln for ln in theirs_err.splitlines()
                if ln.startswith("rbd: ") or ln.startswith("specified")][-1]
    assert mine.startswith("prbd: " + rbd_last[len("rbd: "):]), (mine, rbd_last)
    return mine


def random_file(path: Path, size: int, seed: int) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


@pytest.fixture
def ns(cluster):
    """A private namespace of pool rbd; every image in it is removed afterwards."""
    name = uniq("ns")
    rbd(cluster, "namespace", "create", f"rbd/{name}")
    try:
        yield f"rbd/{name}"
    finally:
        _wipe_namespace(cluster, f"rbd/{name}")
        rbd(cluster, "namespace", "rm", f"rbd/{name}", check=False)


def _wipe_namespace(cluster, spec: str) -> None:
    r = rbd(cluster, "ls", "--format", "json", spec, check=False)
    names = json.loads(r.stdout or b"[]")
    # children first: clones before their parents
    for _ in range(3):
        for n in list(names):
            img = f"{spec}/{n}"
            for s in json.loads(rbd(cluster, "snap", "ls", "--format", "json", img, check=False).stdout or b"[]"):
                rbd(cluster, "snap", "unprotect", f"{img}@{s['name']}", check=False)
            rbd(cluster, "snap", "purge", "--no-progress", img, check=False)
            if rbd(cluster, "rm", "--no-progress", img, check=False).returncode == 0:
                names.remove(n)
    trash = json.loads(rbd(cluster, "trash", "ls", "--format", "json", spec, check=False).stdout or b"[]")
    for t in trash:
        rbd(cluster, "trash", "rm", "--no-progress", f"{spec}/{t['id']}", check=False)


@pytest.fixture
def data_image(cluster, ns, tmp_path):
    """An image made by ``rbd import`` (Pacific default features) with 10 MiB of random
    data; returns (spec, content)."""
    spec = f"{ns}/{uniq('data')}"
    content = random_file(tmp_path / "src", 10 * MiB, 7)
    rbd(cluster, "import", "--no-progress", tmp_path / "src", spec)
    return spec, content


# -- snapshots ---------------------------------------------------------------------------


def test_snapshot_lifecycle_matches_rbd(cluster, data_image):
    spec, content = data_image
    r = prbd(cluster, "snap", "create", f"{spec}@one")
    assert r.stderr.decode() == "Creating snap: 100% complete...done.\n"
    prbd(cluster, "snap", "create", "--no-progress", f"{spec}@two")
    snaps = assert_same_json(cluster, "snap", "ls", spec)
    assert [s["name"] for s in snaps] == ["one", "two"] and all(s["size"] == 10 * MiB for s in snaps)
    assert_same(cluster, "snap", "ls", spec)

    # protect, then the snapshot's info and listing say so, exactly as rbd does
    prbd(cluster, "snap", "protect", f"{spec}@one")
    assert [s["protected"] for s in json.loads(rbd(cluster, "snap", "ls", "--format", "json", spec).stdout)] \
        == ["true", "false"]
    assert_same(cluster, "snap", "ls", spec)
    info = assert_same_json(cluster, "info", f"{spec}@one")
    assert info["protected"] == "true" and info["snapshot_count"] == 2
    assert_same(cluster, "info", f"{spec}@one")
    assert_same_error(cluster, "snap", "protect", f"{spec}@one")      # already protected: 16
    assert_same_error(cluster, "snap", "rm", "--no-progress", f"{spec}@one")  # protected: 16
    prbd(cluster, "snap", "unprotect", f"{spec}@one")
    assert_same_error(cluster, "snap", "unprotect", f"{spec}@one")    # already unprotected: 22

    # rename (and its refusals), then what rbd sees
    prbd(cluster, "snap", "rename", f"{spec}@two", f"{spec}@deux")
    assert_same_error(cluster, "snap", "rename", f"{spec}@one", f"{spec}@deux")  # exists: 17
    assert_same_error(cluster, "snap", "rename", f"{spec}@one", f"{spec}x@y")
    assert [s["name"] for s in json.loads(rbd(cluster, "snap", "ls", "--format", "json", spec).stdout)] \
        == ["one", "deux"]
    assert rbd_export(cluster, f"{spec}@deux") == content

    # argument errors are rbd's
    name = spec.rsplit("/", 1)[1]
    assert_same_error(cluster, "snap", "create", spec)                # no snapshot name: 22
    assert_same_error(cluster, "snap", "ls", f"{spec}@one")           # snapshot not wanted: 22
    assert_same_error(cluster, "snap", "rollback", "--no-progress", f"{spec}@nosuch")  # 2
    assert_same_error(cluster, "snap", "ls", spec.replace(name, "h7-nosuch-img"))      # 2

    # rm one, purge the rest
    r = prbd(cluster, "snap", "rm", f"{spec}@one")
    assert r.stderr.decode() == "Removing snap: 100% complete...done.\n"
    prbd(cluster, "snap", "create", "--no-progress", f"{spec}@three")
    r = prbd(cluster, "snap", "purge", spec)
    assert r.stderr.decode() == "Removing all snapshots: 100% complete...done.\n"
    assert rbd(cluster, "snap", "ls", spec).stdout == b""
    assert rbd_export(cluster, spec) == content
    rbd(cluster, "object-map", "check", "--no-progress", spec)


def test_rollback_restores_snapshot_data(cluster, data_image, tmp_path):
    spec, content = data_image
    prbd(cluster, "snap", "create", "--no-progress", f"{spec}@before")
    other = random_file(tmp_path / "other", 6 * MiB, 99)
    rbd(cluster, "bench", "--io-type", "write", "--io-size", "64K", "--io-total", "6M", "--io-pattern", "rand",
        spec)
    assert rbd_export(cluster, spec) != content
    # the snapshot still holds what was there when it was taken, for both tools
    assert prbd(cluster, "export", f"{spec}@before", "-").stdout == content
    r = prbd(cluster, "export", "--snap", "before", spec, tmp_path / "snap.out")
    assert r.stderr.decode() == "Exporting image: 100% complete...done.\n"
    assert (tmp_path / "snap.out").read_bytes() == content
    r = prbd(cluster, "snap", "rollback", f"{spec}@before")
    assert r.stderr.decode() == "Rolling back to snapshot: 100% complete...done.\n"
    assert rbd_export(cluster, spec) == content
    rbd(cluster, "object-map", "check", "--no-progress", spec)
    assert other  # the random file only fed the overwrite


# -- clones --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["1", "2"])
def test_clone_children_flatten_match_rbd(cluster, data_image, fmt):
    spec, content = data_image
    nsp = spec.rsplit("/", 1)[0]
    prbd(cluster, "snap", "create", "--no-progress", f"{spec}@base")
    if fmt == "1":
        r = prbd(cluster, "clone", "--rbd-default-clone-format", "1", f"{spec}@base", f"{nsp}/h7-refused",
                 check=False)
        assert r.returncode == 22 and b"clone error" in r.stderr  # v1 needs a protected snapshot
        prbd(cluster, "snap", "protect", f"{spec}@base")
    child = f"{nsp}/{uniq('child')}"
    prbd(cluster, "clone", "--rbd-default-clone-format", fmt, f"{spec}@base", child)

    info = assert_same_json(cluster, "info", child)
    assert info["parent"]["snapshot"] == "base" and info["parent"]["overlap"] == 10 * MiB
    assert ("clone-child" in info["op_features"]) == (fmt == "2")
    assert_same(cluster, "info", child)
    kids = assert_same_json(cluster, "children", f"{spec}@base")
    assert [k["image"] for k in kids] == [child.rsplit("/", 1)[1]]
    assert_same(cluster, "children", f"{spec}@base")
    assert_same(cluster, "children", spec)
    assert_same_json(cluster, "children", "--all", f"{spec}@base")
    assert_same_json(cluster, "ls", "-l", nsp)
    assert_same(cluster, "ls", "-l", nsp)
    assert_same_json(cluster, "du", child)
    assert_same_json(cluster, "diff", child)
    assert rbd_export(cluster, child) == content

    if fmt == "1":  # a protected parent snapshot with a child cannot be unprotected
        assert_same_error(cluster, "snap", "unprotect", f"{spec}@base")

    r = prbd(cluster, "flatten", child)
    assert r.stderr.decode() == "Image flatten: 100% complete...done.\n"
    info = json.loads(rbd(cluster, "info", "--format", "json", child).stdout)
    assert "parent" not in info
    assert rbd_export(cluster, child) == content
    assert rbd(cluster, "children", f"{spec}@base").stdout == b""
    rbd(cluster, "object-map", "check", "--no-progress", child)
    assert_same_error(cluster, "flatten", "--no-progress", child)   # no parent: 22


def test_children_descendants_match_rbd(cluster, data_image):
    spec, content = data_image
    nsp = spec.rsplit("/", 1)[0]
    prbd(cluster, "snap", "create", "--no-progress", f"{spec}@p")
    child = f"{nsp}/{uniq('kid')}"
    prbd(cluster, "clone", "--rbd-default-clone-format", "2", f"{spec}@p", child)
    prbd(cluster, "snap", "create", "--no-progress", f"{child}@c")
    grandchild = f"{nsp}/{uniq('grandkid')}"
    prbd(cluster, "clone", "--rbd-default-clone-format", "2", f"{child}@c", grandchild)
    for args in (["children", f"{spec}@p"], ["children", "--descendants", f"{spec}@p"],
                 ["children", "--descendants", spec], ["children", "--all", "--descendants", spec]):
        assert_same(cluster, *args)
        assert_same_json(cluster, *args)
    out = prbd(cluster, "children", "--descendants", spec).stdout.decode().split()
    assert sorted(o.rsplit("/", 1)[1] for o in out) == sorted([child.rsplit("/", 1)[1],
                                                               grandchild.rsplit("/", 1)[1]])
    assert rbd_export(cluster, grandchild) == content
    # a v2 parent snapshot removed while it has children goes to the trash namespace
    prbd(cluster, "snap", "rm", "--no-progress", f"{spec}@p")
    assert_same(cluster, "snap", "ls", spec)
    # rbd 20 prints `trash (user p)` and original_namespace_type; 16 and 18 `trash (p)`
    out = assert_same(cluster, "snap", "ls", "--all", spec, release_form="snap ls")
    assert out.split("\n")[1].rstrip().endswith("  trash (user p)"), out
    snaps = assert_same_json(cluster, "snap", "ls", "--all", spec, release_form="snap ls")
    assert [s["namespace"] for s in snaps] == [RC.trash_namespace("p", RC.NEWEST)]
    # the clone of the trashed snapshot is still the image's child (librbd walks every snapshot)
    assert assert_same(cluster, "children", spec).split() == [child]
    assert_same_json(cluster, "children", "--all", spec)
    assert rbd_export(cluster, child) == content


def test_whole_object_diff_of_clone_matches_rbd(cluster, data_image):
    spec, _ = data_image
    nsp = spec.rsplit("/", 1)[0]
    prbd(cluster, "snap", "create", "--no-progress", f"{spec}@base")
    child = f"{nsp}/{uniq('wchild')}"
    prbd(cluster, "clone", "--rbd-default-clone-format", "2", f"{spec}@base", child)
    assert_same_json(cluster, "diff", "--whole-object", child)


# -- resize, features, object map ------------------------------------------------------------


def test_resize_features_object_map(cluster, data_image):
    spec, content = data_image
    r = prbd(cluster, "resize", "--size", "4M", spec, check=False)
    assert r.returncode == 22
    assert r.stderr.decode() == "prbd: shrinking an image is only allowed with the --allow-shrink flag\n"
    r = prbd(cluster, "resize", "--size", "16M", spec)
    assert r.stderr.decode() == "Resizing image: 100% complete...done.\n"
    assert json.loads(rbd(cluster, "info", "--format", "json", spec).stdout)["size"] == 16 * MiB
    prbd(cluster, "resize", "--no-progress", "--size", "6M", "--allow-shrink", spec)
    assert rbd_export(cluster, spec) == content[: 6 * MiB]
    rbd(cluster, "object-map", "check", "--no-progress", spec)
    assert_same_json(cluster, "info", spec)

    prbd(cluster, "feature", "disable", spec, "fast-diff", "object-map")
    feats = json.loads(rbd(cluster, "info", "--format", "json", spec).stdout)["features"]
    assert "object-map" not in feats and "fast-diff" not in feats
    prbd(cluster, "feature", "enable", spec, "object-map", "fast-diff")
    info = json.loads(rbd(cluster, "info", "--format", "json", spec).stdout)
    assert {"object-map", "fast-diff"} <= set(info["features"])
    assert_same_json(cluster, "info", spec)  # flags as librbd leaves them after enabling object-map
    assert_same_error(cluster, "feature", "disable", spec, "layering")  # immutable: 22
    assert_same_error(cluster, "feature", "enable", spec)               # nothing named: 22

    r = prbd(cluster, "object-map", "rebuild", spec)
    assert r.stderr.decode() == "Object Map Rebuild: 100% complete...done.\n"
    r = prbd(cluster, "object-map", "check", spec)
    assert r.stderr.decode() == "Object Map Check: 100% complete...done.\n"
    rbd(cluster, "object-map", "check", "--no-progress", spec)
    assert json.loads(rbd(cluster, "info", "--format", "json", spec).stdout)["flags"] == []


# -- du / diff --------------------------------------------------------------------------------


def test_du_and_diff_match_rbd(cluster, data_image):
    spec, _ = data_image
    nsp = spec.rsplit("/", 1)[0]
    prbd(cluster, "snap", "create", "--no-progress", f"{spec}@s1")
    rbd(cluster, "bench", "--io-type", "write", "--io-size", "4K", "--io-total", "8K", "--io-pattern", "seq", spec)
    prbd(cluster, "snap", "create", "--no-progress", f"{spec}@s2")
    empty = f"{nsp}/{uniq('empty')}"
    prbd(cluster, "create", "--size", "8M", empty)

    pool_ns = ["--pool", "rbd", "--namespace", nsp.split("/", 1)[1]]
    for args in (["du", spec], ["du", f"{spec}@s1"], ["du", "--from-snap", "s1", spec], ["du", *pool_ns],
                 ["du", "--exact", spec], ["du", "--merge-snapshots", spec]):
        assert_same_json(cluster, *args)
        assert_same(cluster, *args)
    usage = json.loads(prbd(cluster, "du", "--format", "json", *pool_ns).stdout)
    assert usage["total_provisioned_size"] == 10 * MiB + 8 * MiB  # pool totals count HEADs only

    for args in (["diff", spec], ["diff", "--from-snap", "s1", spec], ["diff", "--from-snap", "s1", f"{spec}@s2"],
                 ["diff", "--whole-object", spec], ["diff", "--whole-object", "--from-snap", "s2", spec],
                 ["diff", empty]):
        assert_same_json(cluster, *args)
        assert_same(cluster, *args)
    changed = json.loads(prbd(cluster, "diff", "--from-snap", "s1", "--format", "json", spec).stdout)
    assert sum(e["length"] for e in changed) == 8192 and all(e["exists"] == "true" for e in changed)
    assert_same_error(cluster, "diff", "--from-snap", "nosuch", spec)
    # rbd (16.2 to 20.2) prints the empty JSON list before a diff error
    for args in (["diff", "--from-snap", "nosuch", spec], ["diff", "--from-snap", "s2", f"{spec}@s1"]):
        assert assert_same(cluster, *args, "--format", "json") == "[]\n"
        assert assert_same(cluster, *args, "--format", "json", "--pretty-format") == "[]\n"
        assert_same_error(cluster, *args, "--format", "json")


# -- locks and watchers -------------------------------------------------------------------------


def test_lock_ls_and_status_match_rbd_while_librbd_holds_the_lock(cluster, data_image):
    spec, _ = data_image
    assert_same(cluster, "status", spec)
    assert_same_json(cluster, "status", spec)
    assert_same(cluster, "lock", "ls", spec)
    assert_same_json(cluster, "lock", "ls", spec)
    bench = subprocess.Popen([*tool(cluster, "rbd"), "-c", str(cluster.conf_path), "bench", "--io-type", "write", "--io-size",
                              "4K", "--io-threads", "1", "--io-total", "1G", spec],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not json.loads(rbd(cluster, "lock", "ls", "--format", "json", spec).stdout):
            assert time.monotonic() < deadline, "rbd bench never took the lock"
            time.sleep(0.3)
        out = assert_same(cluster, "status", spec)
        assert out.startswith("Watchers:\n\twatcher=")
        assert_same_json(cluster, "status", spec)
        out = assert_same(cluster, "lock", "ls", spec)
        assert out.startswith("There is 1 exclusive lock on this image.\n")
        locks = assert_same_json(cluster, "lock", "ls", spec)
        assert locks[0]["id"].startswith("auto ")
    finally:
        bench.send_signal(signal.SIGINT)
        try:
            bench.wait(30)
        except subprocess.TimeoutExpired:
            bench.kill()
            bench.wait()


def test_lock_add_rm_roundtrip(cluster, ns):
    spec = f"{ns}/{uniq('lk')}"
    rbd(cluster, "create", "--size", "4M", "--image-feature", "layering", spec)
    prbd(cluster, "lock", "add", spec, "mine")
    locks = json.loads(rbd(cluster, "lock", "ls", "--format", "json", spec).stdout)
    assert [lk["id"] for lk in locks] == ["mine"]
    assert_same(cluster, "lock", "ls", spec)
    assert_same_error(cluster, "lock", "add", spec, "mine")          # busy: 16
    prbd(cluster, "lock", "rm", spec, "mine", locks[0]["locker"])
    assert json.loads(rbd(cluster, "lock", "ls", "--format", "json", spec).stdout) == []


# -- create defaults and errors ---------------------------------------------------------------


def test_create_defaults_and_feature_lists(cluster, ns):
    a, b = f"{ns}/{uniq('defaults')}", f"{ns}/{uniq('defaults')}"
    prbd(cluster, "create", "--size", "8M", a)
    rbd(cluster, "create", "--size", "8M", b)
    ia = json.loads(rbd(cluster, "info", "--format", "json", a).stdout)
    ib = json.loads(rbd(cluster, "info", "--format", "json", b).stdout)
    assert ia["features"] == ib["features"] == ["layering", "exclusive-lock", "object-map", "fast-diff",
                                                "deep-flatten"]
    c, d = f"{ns}/{uniq('feat')}", f"{ns}/{uniq('feat')}"
    prbd(cluster, "create", "--size", "8M", "--image-feature", "layering,exclusive-lock",
         "--image-feature", "object-map", c)
    rbd(cluster, "create", "--size", "8M", "--image-feature", "layering,exclusive-lock",
        "--image-feature", "object-map", d)
    fc = json.loads(rbd(cluster, "info", "--format", "json", c).stdout)["features"]
    assert fc == json.loads(rbd(cluster, "info", "--format", "json", d).stdout)["features"]
    assert fc[:3] == ["layering", "exclusive-lock", "object-map"]
    rbd(cluster, "object-map", "check", "--no-progress", c)


def test_errors_match_rbd(cluster, ns):
    missing = f"{ns}/h7-nosuch-{uuid.uuid4().hex[:6]}"
    for args in (["info", missing], ["snap", "ls", missing], ["lock", "ls", missing], ["status", missing],
                 ["resize", "--size", "1M", missing], ["flatten", missing], ["diff", missing],
                 ["info", "h7-nosuchpool/x"], ["snap", "create", missing], ["children", missing]):
        line = assert_same_error(cluster, *args)
        assert line.count("\n") == 0
    r = prbd(cluster, "rm", "--no-progress", missing, check=False)
    assert r.returncode == 2 and b"delete error: (2) No such file or directory" in r.stderr


# -- map options -----------------------------------------------------------------------------------


@pytest.fixture
def run_dir(tmp_path_factory):
    with mapping_registry(tmp_path_factory) as d:
        yield d


def test_map_exclusive_notrim_and_snapshot(cluster, data_image, run_dir):
    spec, content = data_image
    prbd(cluster, "snap", "create", "--no-progress", f"{spec}@s")
    dev = prbd(cluster, "map", "-o", "exclusive,notrim", spec).stdout.decode().strip()
    try:
        # pyceph holds the lock and watches the header; rbd and prbd show the same
        locks = assert_same_json(cluster, "lock", "ls", spec)
        assert len(locks) == 1
        assert assert_same(cluster, "status", spec).startswith("Watchers:\n\twatcher=")
        # -o exclusive: librbd's request for the lock is refused (EROFS like krbd)
        r = rbd(cluster, "bench", "--io-type", "write", "--io-size", "4K", "--io-total", "4K", spec,
                check=False, timeout=120)
        assert b"Read-only file system" in r.stdout + r.stderr, r
        # -o notrim: discard is not supported on the device
        r = run(["blkdiscard", dev], check=False)
        assert r.returncode != 0 and b"not supported" in r.stderr
        snapdev = prbd(cluster, "map", f"{spec}@s").stdout.decode().strip()
        try:
            with open(snapdev, "rb") as f:
                assert f.read(len(content)) == content
            mapped = json.loads(prbd(cluster, "showmapped", "--format", "json").stdout)
            assert {(m["snap"], m["device"]) for m in mapped} >= {("s", snapdev), ("-", dev)}
        finally:
            prbd(cluster, "unmap", snapdev)
    finally:
        prbd(cluster, "unmap", dev)
    assert json.loads(rbd(cluster, "lock", "ls", "--format", "json", spec).stdout) == []
    assert rbd_export(cluster, spec) == content

    # without notrim, blkdiscard reaches the image: librbd reads zeros, object map stays valid
    dev = prbd(cluster, "map", spec).stdout.decode().strip()
    try:
        run(["blkdiscard", "-o", "0", "-l", str(4 * MiB), dev])
    finally:
        prbd(cluster, "unmap", dev)
    assert rbd_export(cluster, spec) == bytes(4 * MiB) + content[4 * MiB:]
    rbd(cluster, "object-map", "check", "--no-progress", spec)
    assert json.loads(rbd(cluster, "info", "--format", "json", spec).stdout)["flags"] == []


# snap ls --all of a trash snapshot as Pacific 16.2.15 / Reef 18.2.7 and Tentacle 20.2.4 printed it
_SNAP_LS_20 = (
    "SNAPID  NAME                                  SIZE   PROTECTED  TIMESTAMP                 NAMESPACE     \n"
    "    29  4a4f16aa-d386-43f4-96f3-5ff33aafc682  8 MiB             Mon Dec  7 20:29:09 2026  trash (user p)\n"
    "    30  zz                                    8 MiB             Mon Dec  7 20:29:11 2026  user          \n")
_SNAP_LS_16 = (
    "SNAPID  NAME                                  SIZE   PROTECTED  TIMESTAMP                 NAMESPACE\n"
    "    29  4a4f16aa-d386-43f4-96f3-5ff33aafc682  8 MiB             Mon Dec  7 20:29:09 2026  trash (p)\n"
    "    30  zz                                    8 MiB             Mon Dec  7 20:29:11 2026  user     \n")
_SNAP_JSON_20 = ('[{"id":29,"name":"4a4f16aa-d386-43f4-96f3-5ff33aafc682","size":8388608,"protected":"false",'
                 '"timestamp":"Mon Dec  7 20:29:09 2026","namespace":{"type":"trash","original_namespace_type":"user",'
                 '"original_name":"p"}},{"id":30,"name":"zz","size":8388608,"protected":"false",'
                 '"timestamp":"Mon Dec  7 20:29:11 2026","namespace":{"type":"user"}}]\n')
_SNAP_JSON_16 = _SNAP_JSON_20.replace('"original_namespace_type":"user",', "")


def test_release_forms_of_snap_ls_all():
    for major in (RC.PACIFIC, RC.REEF):
        assert RC.to_release_form(_SNAP_LS_20, major) == _SNAP_LS_16
        assert RC.to_release_form(_SNAP_JSON_20, major) == _SNAP_JSON_16
        pretty = json.dumps(json.loads(_SNAP_JSON_20), indent=4) + "\n"
        assert RC.to_release_form(pretty, major) == json.dumps(json.loads(_SNAP_JSON_16), indent=4) + "\n"
    assert RC.to_release_form(_SNAP_LS_20, RC.TENTACLE) == _SNAP_LS_20
    assert RC.to_release_form(_SNAP_JSON_20, RC.TENTACLE) == _SNAP_JSON_20
    assert [RC.parse_major(v) for v in ("reef", "18.2.7", 20, "ceph version 16.2.15 (x) pacific (stable)")] == [
        18, 18, 20, 16]
