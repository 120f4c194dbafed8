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

import errno
import json
import mmap
import os
import subprocess
import sys
import time
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


def test_every_krbd_option_at_once_maps_and_io_is_right(cluster, run_dir):
    """All the options krbd takes (those without a user-space effect too) in one map."""
    name = uniq("opts-all")
    rbd(cluster, "create", "--size", "8M", "--image-feature", "layering,exclusive-lock", f"rbd/{name}")
    mon = cluster.state["mons"][0]
    opts = ("crc,share,tcp_nodelay,cephx_sign_messages,nocephx_require_signatures,udev,rxbounce,abort_on_full,"
            "lock_on_read,lock_timeout=10,alloc_size=65536,compression_hint=compressible,mount_timeout=30,"
            "osd_idle_ttl=30,osdkeepalive=3,osd_request_timeout=60,ip=127.0.0.1,read_from_replica=localize,"
            f"crush_location=host:nowhere|root:default,mon_addr=127.0.0.1:{mon['v2']},ms_mode=prefer-crc,"
            "queue_depth=16,name=admin,rw")
    dev = pmap(cluster, f"rbd/{name}", "-o", opts)
    try:
        blob = os.urandom(2 * MiB)
        fd = os.open(dev, os.O_RDWR)
        try:
            os.pwrite(fd, blob, MiB)
            os.fsync(fd)
        finally:
            os.close(fd)
        assert read_dev(dev, MiB, 2 * MiB) == blob
        st = json.loads(run([sys.executable, "-m", "pyceph.cli.pyceph_cli", "-c", str(cluster.conf_path),
                             "status", "--device", dev, "--format", "json"]).stdout)
        assert st["osd"]["read_flags"] == 0x2000 and st["osd"]["keepalive_interval"] == 3
        prbd(cluster, "unmap", dev)
        dev = None
        assert rbd_export(cluster, f"rbd/{name}")[MiB:3 * MiB] == blob
    finally:
        if dev:
            prbd(cluster, "unmap", "-o", "force", dev, check=False)
        rbd(cluster, "rm", "--no-progress", f"rbd/{name}", check=False)


def test_abort_on_full_fails_writes_with_enospc(cluster, run_dir):
    """``-o abort_on_full``: once the pool is full (here: over its byte quota) a write
    fails with ENOSPC instead of waiting for space (krbd's behaviour)."""
    pool = uniq("opts-full")
    cluster.create_pool(pool, pg_num=8)
    name = uniq("opts-full-img")
    rbd(cluster, "create", "--size", "16M", "--image-feature", "layering", f"{pool}/{name}")
    dev = pmap(cluster, f"{pool}/{name}", "-o", "abort_on_full")
    try:
        fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
        buf = mmap.mmap(-1, MiB)
        buf.write(os.urandom(MiB))
        try:
            os.pwrite(fd, buf, 0)  # room yet
            ceph(cluster, "osd", "pool", "set-quota", pool, "max_bytes", "1")
            deadline = time.monotonic() + 120
            while "full_quota" not in ceph(cluster, "osd", "pool", "ls", "detail").stdout.decode().split(
                    f"'{pool}'", 1)[1].split("\n", 1)[0]:
                assert time.monotonic() < deadline, "the pool never became full"
                time.sleep(1)
            t0 = time.monotonic()
            for _ in range(60):  # until our client has the full map; each try fails or succeeds quickly
                try:
                    os.pwrite(fd, buf, 4 * MiB)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break
                time.sleep(0.5)
            else:
                raise AssertionError("writes to the full pool never failed")
            assert time.monotonic() - t0 < 60
        finally:
            os.close(fd)
        ceph(cluster, "osd", "pool", "set-quota", pool, "max_bytes", "0")
        prbd(cluster, "unmap", dev)
        dev = None
    finally:
        if dev:
            prbd(cluster, "unmap", "-o", "force", dev, check=False)
        ceph(cluster, "osd", "pool", "set-quota", pool, "max_bytes", "0", check=False)
        ceph(cluster, "osd", "pool", "rm", pool, pool, "--yes-i-really-really-mean-it", check=False)
