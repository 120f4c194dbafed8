"""``prbd map -o ...``: krbd's map options against a real cluster.

An unknown option or a bad value fails in one line, before anything starts; ``name=``
and ``secret=`` are the credentials the mapping uses (client.nobody fails to
authenticate instead of mapping as client.admin; a real non-admin user created with
``ceph auth get-or-create`` maps); ``fsid=`` refuses another cluster; ``queue_depth``,
``osd_request_timeout``, ``osdkeepalive`` and ``read_from_replica=balance`` are seen in
the live mapping (``pyceph status --device``, the daemon's FUSE INIT log line, OSD
reads answered by a replica), and the secret is in no record or log file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from pyceph.auth.crypto import CryptoKey

from .helpers import ceph, pmap, prbd, rbd, rbd_export, read_dev, run, uniq

MiB = 1 << 20


def _map_fails(cluster, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "pyceph.cli.prbd", "-c", str(cluster.conf_path), "map", *args],
                       capture_output=True, timeout=120)
    assert r.returncode != 0
    return r


def _one_line(r: subprocess.CompletedProcess) -> str:
    err = r.stderr.decode()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_unknown_option_and_bad_values_fail_in_one_line(cluster, run_dir):
    r = _map_fails(cluster, "-o", "foo=bar", "rbd/none")
    assert r.returncode == 22 and _one_line(r) == "prbd: unknown map option 'foo'"
    r = _map_fails(cluster, "-o", "ro,queue_depth=0", "rbd/none")
    assert r.returncode == 22 and "map option 'queue_depth': out of range" in _one_line(r)
    r = _map_fails(cluster, "-o", "notrim=1", "rbd/none")
    assert "map option 'notrim' takes no value" in _one_line(r)
    secretish = "AQD!!this-is-not-shown!!"
    r = _map_fails(cluster, "-o", f"secret={secretish}", "rbd/none")
    line = _one_line(r)
    assert "map option 'secret'" in line and "not-shown" not in line
    assert not list(run_dir.glob("log/*none*"))  # refused before any daemon started


def test_name_and_secret_are_honoured(cluster, run_dir):
    name = uniq("opts-nobody")
    rbd(cluster, "create", "--size", "8M", "--image-feature", "layering", f"rbd/{name}")
    try:
        # a key of the right shape that client.nobody does not have: cephx refuses it
        bogus = CryptoKey(secret=os.urandom(16)).to_base64()
        r = _map_fails(cluster, "-o", f"name=client.nobody,secret={bogus}", f"rbd/{name}")
        line = _one_line(r)
        assert "client.nobody" in line and "AuthError" in line and bogus not in line, line
        # name= without a secret: looked up in the keyrings, not mapped as client.admin
        r = _map_fails(cluster, "-o", "name=nobody", f"rbd/{name}")
        assert "no key for client.nobody" in _one_line(r)
        # fsid= of another cluster
        r = _map_fails(cluster, "-o", f"fsid={uuid.uuid4()}", f"rbd/{name}")
        assert "is not the fsid=" in _one_line(r) and r.returncode == 22
        rows = json.loads(prbd(cluster, "showmapped", "--format", "json").stdout)
        assert not [x for x in rows if x["name"] == name]
    finally:
        rbd(cluster, "rm", "--no-progress", f"rbd/{name}", check=False)


def test_non_admin_user_maps_with_name_and_secret_and_options_apply(cluster, run_dir):
    user = uniq("opts-user").replace("-", "_")
    ceph(cluster, "auth", "get-or-create", f"client.{user}", "mon", "profile rbd", "osd", "profile rbd pool=rbd")
    key = ceph(cluster, "auth", "print-key", f"client.{user}").stdout.decode().strip()
    name = uniq("opts-img")
    data = os.urandom(8 * MiB)
    src = run_dir / f"{name}.src"
    src.write_bytes(data)
    rbd(cluster, "import", "--no-progress", "--image-feature", "layering", str(src), f"rbd/{name}")
    src.unlink()
    dev = None
    try:
        dev = pmap(cluster, f"rbd/{name}", "-o",
                   f"name={user},secret={key},queue_depth=7,osd_request_timeout=17,osdkeepalive=2",
                   "-o", "read_from_replica=balance,keep_log")
        for _ in range(3):  # reads of every object: balance sends some to the replica
            assert read_dev(dev) == data
        st = json.loads(run([sys.executable, "-m", "pyceph.cli.pyceph_cli", "-c", str(cluster.conf_path),
                             "status", "--device", dev, "--format", "json"]).stdout)
        assert st["entity"] == f"client.{user}"
        osd = st["osd"]
        assert osd["request_timeout"] == 17 and osd["keepalive_interval"] == 2
        # sent to a replica: answered there, or bounced (EAGAIN) while it is not readable there yet
        assert osd["read_flags"] == 0x100 and osd["replica_reads"] + osd["replica_bounces"] > 0, osd
        # writes as the user land where librbd sees them
        fd = os.open(dev, os.O_WRONLY)
        try:
            os.pwrite(fd, b"\x5a" * MiB, 3 * MiB)
            os.fsync(fd)
        finally:
            os.close(fd)
        prbd(cluster, "unmap", dev)
        dev = None
        want = data[:3 * MiB] + b"\x5a" * MiB + data[4 * MiB:]
        assert rbd_export(cluster, f"rbd/{name}") == want
        logs = sorted((run_dir / "log").glob(f"rbd.{name}.*.log"))
        assert logs and "max_background 7" in logs[-1].read_text()
        for p in run_dir.rglob("*"):  # records, logs, sockets: no secret anywhere
            if p.is_file():
                assert key.encode() not in p.read_bytes(), p
    finally:
        if dev:
            prbd(cluster, "unmap", "-o", "force", dev, check=False)
        rbd(cluster, "rm", "--no-progress", f"rbd/{name}", check=False)
        ceph(cluster, "auth", "del", f"client.{user}", check=False)
