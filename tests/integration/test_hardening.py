"""Issue 9, hardening: a dev cluster's keys and daemon data are private to root.

The cluster is started by the launcher in a directory every user can reach (a temp dir
under /tmp made 0755, unlike pytest's 0700 tmp dirs which would hide everything anyway),
and a real unprivileged user (nobody, through ``setpriv``) then tries what the issue
reported working: reading the keyrings, listing and reading the mon store, and
``ceph -k DIR/mon.keyring -n client.admin auth ls``.  A walk of DIR as that user finds
nothing readable but ceph.conf and cluster.json; a walk as root finds every other file
0600 and every directory 0700.  $PYCEPH_TEST_RELEASE picks the release (reef/tentacle
daemons run chrooted but write into DIR on the host's filesystem).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pyceph.cluster import CephNotInstalled, CephRelease, DevCluster

from .helpers import wanted_release

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
# Files other users may read: no secret in them (fsid, ports, mon addresses).
PUBLIC = {"ceph.conf", "cluster.json"}


@pytest.fixture(scope="module")
def open_cluster():
    want = wanted_release()
    try:
        CephRelease.resolve(want)
    except CephNotInstalled as e:
        pytest.fail(str(e), pytrace=False)
    d = Path(tempfile.mkdtemp(prefix="pyceph-hardening-", dir="/tmp"))
    d.chmod(0o755)  # reachable by everyone: only the launcher's modes protect what is inside
    c = DevCluster(d)
    c.start(mons=1, osds=1, release=want, conf={"debug auth": 20})
    try:
        yield c
    finally:
        c.stop()
        shutil.rmtree(d, ignore_errors=True)


def as_nobody(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*NOBODY, *map(str, argv)], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"}, **kw)


def test_nobody_reaches_the_dir_but_reads_no_secret(open_cluster):
    d = open_cluster.dir
    # Positive control: the directory is reachable, ceph.conf is readable.
    r = as_nobody(["cat", d / "ceph.conf"])
    assert r.returncode == 0 and "mon host" in r.stdout, r.stderr
    for f in ("keyring", "mon.keyring", "osd.0/keyring", "mgr.x/keyring", "mon.a/keyring", "log/mon.a.log"):
        r = as_nobody(["cat", d / f])
        assert r.returncode != 0 and "Permission denied" in r.stderr, (f, r.stdout[:80], r.stderr)
        assert "key" not in r.stdout
    for sub in ("mon.a", "mon.a/store.db", "osd.0", "mgr.x", "log", "run", "crash"):
        r = as_nobody(["ls", d / sub])
        assert r.returncode != 0 and "Permission denied" in r.stderr, (sub, r.stdout, r.stderr)


_WALK = r"""
import os, sys, json
top = sys.argv[1]
readable = []
for dirpath, dirnames, filenames in os.walk(top):
    for n in filenames:
        p = os.path.join(dirpath, n)
        try:
            with open(p, "rb") as f:
                f.read(1)
            readable.append(os.path.relpath(p, top))
        except OSError:
            pass
print(json.dumps(readable))
"""


def test_walk_as_nobody_finds_only_public_files(open_cluster):
    d = open_cluster.dir
    r = as_nobody([sys.executable, "-I", "-c", _WALK, d])
    assert r.returncode == 0, r.stderr
    readable = set(json.loads(r.stdout))
    assert readable == PUBLIC, readable


def test_modes_from_creation(open_cluster):
    """Every file but the public ones 0600 (or stricter), every directory but DIR 0700:
    key files are created with that mode and daemons run under umask 077."""
    d = open_cluster.dir
    loose = []
    for dirpath, dirnames, filenames in os.walk(d):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode) or (p.parent == d and n in PUBLIC):
                continue
            if st.st_mode & 0o077:
                loose.append(f"{oct(st.st_mode & 0o777)} {p.relative_to(d)}")
    assert not loose, loose
    for f in ("keyring", "mon.keyring", "osd.0/keyring", "mgr.x/keyring"):
        assert (d / f).stat().st_mode & 0o777 == 0o600, f
        assert (d / f).stat().st_uid == 0
    for sub in ("mon.a", "osd.0", "mgr.x", "log", "run"):
        assert (d / sub).stat().st_mode & 0o777 == 0o700, sub


def test_nobody_cannot_use_the_admin_key(open_cluster):
    """The issue's reproducer: `ceph -k DIR/mon.keyring -n client.admin auth ls` as an
    unprivileged user (the release's own ceph; chrooted releases drop to nobody inside)."""
    c = open_cluster
    ceph = ["ceph", "-c", c.conf_path, "-k", c.dir / "mon.keyring", "-n", "client.admin",
            "--connect-timeout", "15", "auth", "ls"]
    if c.release.root is None:
        r = as_nobody(ceph)
    else:
        r = subprocess.run(c.release.argv([*NOBODY, *map(str, ceph)], dir=c.dir, cwd="/tmp"), capture_output=True,
                           text=True, timeout=120, stdin=subprocess.DEVNULL,
                           env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert r.returncode != 0, r.stdout
    assert "Permission denied" in r.stderr or "keyring" in r.stderr, r.stderr
    assert open_cluster.admin_key not in r.stdout + r.stderr
    assert "client.admin" not in r.stdout
    # the same command as root works: the check above is not vacuous
    ok = subprocess.run(c.tool_argv(*map(str, ceph)), capture_output=True, text=True, timeout=120,
                        stdin=subprocess.DEVNULL, env=c.tool_env())
    assert ok.returncode == 0 and "client.admin" in ok.stdout, ok.stderr


def test_write_private_has_no_window(tmp_path):
    """Key files are created 0600 by open(2) itself, whatever the umask; never replaced."""
    from pyceph.cluster import launcher

    old = os.umask(0)
    try:
        launcher._write_private(tmp_path / "k", "[client.x]\n\tkey = A\n")
    finally:
        os.umask(old)
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        launcher._write_private(tmp_path / "k", "other")


# -- each case of the issue: one line and a non-zero exit, against rbd on the same cluster --

PRBD = [sys.executable, "-m", "pyceph.cli.prbd"]


def _cli(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, timeout=300, stdin=subprocess.DEVNULL, **kw)


def prbd_run(c, *args, **kw) -> subprocess.CompletedProcess:
    return _cli([*PRBD, "-c", c.conf_path, *args], **kw)


def rbd_run(c, *args) -> subprocess.CompletedProcess:
    return _cli(c.tool_argv("rbd", "-c", str(c.conf_path), *map(str, args)), env=c.tool_env())


def one_line(r: subprocess.CompletedProcess) -> str:
    lines = [x for x in r.stderr.decode(errors="replace").splitlines() if x.strip()]
    assert b"Traceback" not in r.stderr and len(lines) == 1, lines
    return lines[0]


def rbd_error_line(r: subprocess.CompletedProcess) -> str:
    """rbd's last stderr line (librbd may log lines of its own before it)."""
    return [x for x in r.stderr.decode(errors="replace").splitlines() if x.startswith("rbd: ")][-1]


@pytest.fixture(scope="module")
def small_image(open_cluster):
    name = "hard-img"
    assert prbd_run(open_cluster, "create", "--size", "64M", name).returncode == 0
    return name


@pytest.mark.parametrize("argv", [
    ["create", "--size", "99999999999T", "hard-huge"],
    ["bench", "--io-type", "write", "--io-size", "0", "hard-img"],
    ["bench", "--io-type", "write", "--io-threads", "0", "hard-img"],
    ["bench", "--io-type", "write", "--io-size", "-1", "hard-img"],
    ["create", "--size", "-1", "hard-neg"],
    ["export", "--no-progress", "hard-img", "/nonexistent/dir/file"],
    ["import", "--no-progress", "/nonexistent/file", "hard-imported"],
])
def test_cli_errors_match_rbd(open_cluster, small_image, argv):
    ours = prbd_run(open_cluster, *argv)
    theirs = rbd_run(open_cluster, *argv)
    line = one_line(ours)
    assert ours.returncode == theirs.returncode != 0, (line, rbd_error_line(theirs))
    assert line.split(":", 1)[1].split(" [")[0] == rbd_error_line(theirs).split(":", 1)[1] or \
        argv[0] == "import", (line, rbd_error_line(theirs))  # rbd's import prints two lines


def test_cli_errors_without_a_traceback(open_cluster, small_image):
    c = open_cluster
    for argv, rc in (
        (["resize", "--no-progress", "--size", "8E", small_image], 22),  # object map cannot hold 2^41 objects
        (["create", "--size", "1M", "--stripe-unit", "4K", "--stripe-count", "99999999999999999999", "hard-s"], 22),
        (["create", "--size", "1M", "/hard-nopool"], 22),
        (["bench", "--io-type", "write", "--io-threads", "99999999999999999999", small_image], 22),
    ):
        r = prbd_run(c, *argv)
        one_line(r)
        assert r.returncode == rc, (argv, r.stderr)
    info = json.loads(rbd_run(c, "info", "--format", "json", small_image).stdout)
    assert info["size"] == 64 << 20  # the refused resize changed nothing


def test_map_of_a_300_character_image_name(open_cluster, tmp_path):
    """A legitimate image name longer than a file name may be: mapped, written, read back
    by librbd, unmapped."""
    if not os.path.exists("/dev/fuse"):
        pytest.fail("prbd map needs /dev/fuse", pytrace=False)
    c = open_cluster
    name = "n" * 300
    assert prbd_run(c, "create", "--size", "8M", name).returncode == 0
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    env = {**os.environ, "PYCEPH_RUN_DIR": str(run_dir)}
    r = prbd_run(c, "map", name, env=env)
    assert r.returncode == 0, r.stderr
    dev = r.stdout.decode().strip()
    try:
        data = os.urandom(1 << 20)
        fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
        try:
            import mmap

            buf = mmap.mmap(-1, len(data))
            buf.write(data)
            os.pwrite(fd, buf, 0)
        finally:
            os.close(fd)
        shown = prbd_run(c, "showmapped", "--format", "json", env=env)
        assert name in shown.stdout.decode()
    finally:
        u = prbd_run(c, "unmap", dev, env=env)
        assert u.returncode == 0, u.stderr
    exported = tmp_path / "exp"
    assert rbd_run(c, "export", "--no-progress", name, str(exported)).returncode == 0
    assert exported.read_bytes()[: 1 << 20] == data
