"""Secrets as krbd and kAFS keep them (issue 9, item 2) on a real cluster.

- ``prbd map -o name=X,key=client.X`` takes client.X's secret from the kernel keyring (a
  ``user`` key in this test's own session keyring; the keyring files hold no key for X)
  and maps as client.X;
- the secret is in no process's argv or environment (the map daemon's
  ``/proc/PID/environ`` and ``cmdline``), no output of ``pyceph status``, no file of the
  run directory (logs, records), and the run directory is private (0700);
- a wrong key, a malformed key, ``--key SECRET``, and binary, unreadable or directory
  ceph.conf/keyring/keyfile give one line and a non-zero exit, never echoing a key;
  an unprivileged user gets one line for a keyring it may not read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pyceph.auth import keyring as kr
from pyceph.auth.crypto import CryptoKey

from .helpers import ceph, prbd, read_dev, run, uniq

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


@pytest.fixture(scope="module")
def session_keyring():
    """This test process (and the CLIs it starts) in a new anonymous session keyring."""
    return kr.keyctl_join_session()


@pytest.fixture(scope="module")
def rbd_user(cluster):
    """A cephx user with rbd caps whose key exists only in memory (never in a keyring file
    the client could find): ``(entity, base64 key)``."""
    name = f"client.{uniq('sec')}"
    out = ceph(cluster, "auth", "get-or-create", name, "mon", "profile rbd", "osd", "profile rbd pool=rbd",
               "--format", "json").stdout
    key = json.loads(out)[0]["key"]
    yield name, key
    ceph(cluster, "auth", "del", name, check=False)


def cli(argv, **kw) -> subprocess.CompletedProcess:
    return run(argv, check=False, **kw)


def one_line(r: subprocess.CompletedProcess) -> str:
    err = r.stderr.decode(errors="replace")
    assert r.returncode != 0 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def admin_key(cluster) -> str:
    return re.search(r"key = (\S+)", Path(cluster.keyring_path).read_text()).group(1)


def test_map_with_kernel_keyring_key(cluster, run_dir, session_keyring, rbd_user, tmp_path):
    entity, key = rbd_user
    img = uniq("sec-img")
    prbd(cluster, "create", "--size", "8M", img)
    data = os.urandom(4096)
    src = tmp_path / "data"
    src.write_bytes(data + bytes(8 * 1024 * 1024 - len(data)))
    prbd(cluster, "import", "--no-progress", str(src), f"{img}-data")
    # Without the key in the kernel keyring: one line naming the description.
    r = cli([sys.executable, "-m", "pyceph.cli.prbd", "-c", cluster.conf_path, "map", f"{img}-data",
             "-o", f"name={entity.removeprefix('client.')},key={entity}"])
    assert f"{entity!r} not found in the kernel keyring" in one_line(r)
    serial = kr.keyctl_add_user(entity, key, "@s")
    assert kr.keyctl_describe(serial)[0] == "user"
    dev = prbd(cluster, "map", f"{img}-data", "-o", f"name={entity.removeprefix('client.')},key={entity}",
               ).stdout.decode().strip()
    assert dev.startswith("/dev/loop")
    try:
        assert read_dev(dev, 0, len(data)) == data
        st = json.loads(cli([sys.executable, "-m", "pyceph.cli.pyceph_cli", "status", "--device", dev,
                             "--format", "json"]).stdout)
        assert st["entity"] == entity  # it authenticated as the keyring's entity, not client.admin
        rec = next(json.loads(p.read_text()) for p in (run_dir / "mappings").glob("*.json")
                   if json.loads(p.read_text())["device"] == dev)
        pid = rec["pid"]
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert key.encode() not in cmdline, "the map daemon's argv holds the secret"
        assert key.encode() not in environ, "the map daemon's environment holds the secret"
    finally:
        prbd(cluster, "unmap", dev)
        kr.keyctl_unlink(serial, "@s")


def test_secret_in_no_output_or_file(cluster, run_dir, session_keyring):
    key = admin_key(cluster)
    img = uniq("sec-img")
    prbd(cluster, "create", "--size", "8M", img)
    kr.keyctl_add_user("client.admin", key, "@s")
    dev = prbd(cluster, "map", img, "-o", "key=client.admin").stdout.decode().strip()
    try:
        for argv in (["status"], ["status", "--format", "json"], ["status", "--device", dev],
                     ["status", "--device", dev, "--format", "json"]):
            r = cli([sys.executable, "-m", "pyceph.cli.pyceph_cli", "-c", cluster.conf_path, *argv])
            assert r.returncode == 0, r.stderr
            assert key.encode() not in r.stdout + r.stderr
            assert CryptoKey.from_base64(key).secret not in r.stdout + r.stderr
        r = prbd(cluster, "showmapped", "--format", "json")
        assert key.encode() not in r.stdout
        # Nothing there is reachable by another user: the run dir is 0700, and so is every
        # directory of ours but the device attribute directories, which keep sysfs's modes
        # inside it (docs/DEVICE.md); every other file with content (logs, records; empty
        # files are FUSE mount points) and config_info is 0600; no file holds the secret.
        assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
        for p in [run_dir, *run_dir.rglob("*")]:
            st = p.lstat()
            in_devattrs = p.relative_to(run_dir).parts[:1] == ("devices",)
            if stat.S_ISDIR(st.st_mode):
                assert stat.S_IMODE(st.st_mode) & (0o022 if in_devattrs else 0o077) == 0, \
                    f"{p} is mode {oct(st.st_mode)}"
            elif stat.S_ISREG(st.st_mode):
                if st.st_size and (not in_devattrs or p.name == "config_info"):
                    assert stat.S_IMODE(st.st_mode) & 0o077 == 0, f"{p} is mode {oct(st.st_mode)}"
                assert stat.S_IMODE(st.st_mode) & 0o022 == 0, f"{p} is mode {oct(st.st_mode)}"
                assert key.encode() not in p.read_bytes(), f"{p} holds the secret"
    finally:
        prbd(cluster, "unmap", dev)


def test_wrong_or_malformed_key_one_line(cluster, run_dir, session_keyring, tmp_path):
    key = admin_key(cluster)
    wrong = CryptoKey(1, (1700000000, 0), os.urandom(16)).to_base64()
    img = uniq("sec-img")
    prbd(cluster, "create", "--size", "8M", img)
    kr.keyctl_add_user("client.admin", wrong, "@s")
    r = cli([sys.executable, "-m", "pyceph.cli.prbd", "-c", cluster.conf_path, "map", img, "-o", "key=client.admin"])
    err = one_line(r)
    assert "client.admin" in err and wrong not in err and key not in err
    kr.keyctl_add_user("client.admin", "AQBzqmpnAAAAABAAyyyyyyyyyyyyyyyyyyyy==", "@s")
    r = cli([sys.executable, "-m", "pyceph.cli.prbd", "-c", cluster.conf_path, "map", img, "-o", "key=client.admin"])
    err = one_line(r)
    assert "client.admin" in err and "not a cephx secret" in err and "AQBzqmpn" not in err
    bad = tmp_path / "bad.keyring"
    bad.write_text("[client.admin]\n\tkey = AQBzqmpnAAAAABAAyyyyyyyyyyyyyyyyyyyy==\n")
    r = cli([sys.executable, "-m", "pyceph.cli.prbd", "-c", cluster.conf_path, "-k", str(bad), "ls"])
    err = one_line(r)
    assert f"malformed cephx key for client.admin in keyring {bad}" in err and "AQBzqmpn" not in err
    r = cli([sys.executable, "-m", "pyceph.cli.prbd", "-c", cluster.conf_path, "--key", key, "ls"])
    err = one_line(r)
    assert "--key is not accepted" in err and key not in err and r.returncode == 2
    r = cli([sys.executable, "-m", "pyceph.cli.prbd", "-c", cluster.conf_path, "--keyr", str(bad), "ls"])
    assert "unrecognized arguments: --keyr" in one_line(r)


def test_binary_and_unreadable_files_one_line(cluster, tmp_path):
    rnd = tmp_path / "random"
    rnd.write_bytes(os.urandom(65536))
    conf = cluster.conf_path
    cases = [
        (["-c", "/bin/ls"], "config file /bin/ls is not a text file"),
        (["-c", str(rnd)], f"config file {rnd} is not a text file"),
        (["-c", str(tmp_path)], f"cannot read config file {tmp_path}: is a directory"),
        (["-c", conf, "-k", "/bin/ls"], "keyring /bin/ls is not a text file"),
        (["-c", conf, "-k", str(rnd)], f"keyring {rnd} is not a text file"),
        (["-c", conf, "-k", str(tmp_path)], f"cannot read keyring {tmp_path}: is a directory"),
        (["-c", conf, "--keyfile", str(rnd)], f"--keyfile {rnd} is not a text file"),
    ]
    for args, want in cases:
        for tool in ("pyceph.cli.prbd", "pyceph.cli.pyceph_cli"):
            sub = ["ls"] if tool.endswith("prbd") else ["status"]
            r = cli([sys.executable, "-m", tool, *args, *sub])
            assert want in one_line(r), (args, r.stderr)


def test_unprivileged_user_gets_one_line(cluster, tmp_path):
    """As user nobody: a root-only keyring (0600) is one line, the key is not shown."""
    pub = Path(tempfile.mkdtemp(dir="/tmp"))
    os.chmod(pub, 0o755)
    conf = pub / "ceph.conf"
    conf.write_text(Path(cluster.conf_path).read_text())
    os.chmod(conf, 0o644)
    ring = pub / "admin.keyring"
    ring.write_text(f"[client.admin]\n\tkey = {admin_key(cluster)}\n")
    os.chmod(ring, 0o600)
    env = dict(os.environ, HOME=str(pub))
    try:
        r = cli([*NOBODY, sys.executable, "-m", "pyceph.cli.prbd", "-c", str(conf), "-k", str(ring), "ls"], env=env)
    finally:
        shutil.rmtree(pub)
    err = one_line(r)
    assert f"cannot read keyring {ring}: Permission denied" in err and admin_key(cluster) not in err


def test_map_with_keyfile(cluster, run_dir, rbd_user, tmp_path):
    """``--keyfile`` (a file holding the base64 key, here a keyring-less entity's) maps as
    that entity; the daemon gets the key over its private channel, not by reading the file."""
    entity, key = rbd_user
    kf = tmp_path / "user.key"
    fd = os.open(kf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, (key + "\n").encode())
    os.close(fd)
    img = uniq("sec-img")
    prbd(cluster, "create", "--size", "8M", img)
    dev = prbd(cluster, "--keyfile", str(kf), "map", img, "-o", f"name={entity}").stdout.decode().strip()
    try:
        kf.unlink()  # the mapping does not depend on the file
        assert read_dev(dev, 0, 4096) == bytes(4096)
        st = json.loads(cli([sys.executable, "-m", "pyceph.cli.pyceph_cli", "status", "--device", dev,
                             "--format", "json"]).stdout)
        assert st["entity"] == entity
    finally:
        prbd(cluster, "unmap", dev)
