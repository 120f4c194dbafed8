"""msgr2.1 secure mode against a real cluster that requires it.

A cluster of its own (module scope, ``--ms-mode secure`` of the release under test,
$PYCEPH_TEST_RELEASE): every daemon allows only ``secure`` (``ms cluster mode``, ``ms
service mode``, ``ms client mode`` and their ``ms mon ...`` twins).  pyceph
must do RADOS I/O, RBD and ``prbd map`` + a filesystem there, show the mode in
``pyceph status`` (plain and --device, plain and json), and refuse crc with one clear
line.  The last test lets the daemons allow both modes (ceph.conf, restart) and checks
that krbd's ``ms_mode=prefer-crc`` gets crc and ``prefer-secure`` gets secure.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys

import pytest

from pyceph.cluster import CephRelease, DevCluster
from pyceph.config import ClientConfig
from pyceph.errors import AuthError
from pyceph.rados import AsyncRados

from .helpers import pmap, prbd, rbd, rbd_export, run, uniq, wanted_release

MiB = 1 << 20


@pytest.fixture(scope="module")
def secure_cluster(tmp_path_factory):
    """``pyceph cluster start --ms-mode secure`` of the release under test
    ($PYCEPH_TEST_RELEASE, default the host's)."""
    CephRelease.resolve(wanted_release())
    c = DevCluster(tmp_path_factory.mktemp("secure-cluster"))
    c.start(mons=1, osds=3, release=wanted_release(), ms_mode="secure")
    try:
        yield c
    finally:
        c.stop()


def _pyceph(cluster, *args, conf=None, check=True):
    return run([sys.executable, "-m", "pyceph.cli.pyceph_cli", "-c", conf or cluster.conf_path, *args], check=check)


def _conf_with(cluster, tmp_path, **client_opts) -> str:
    """A copy of the cluster's ceph.conf with extra [client] options (client side only)."""
    p = tmp_path / f"client-{uniq('c')}.conf"
    extra = "".join(f"\t{k.replace('_', ' ')} = {v}\n" for k, v in client_opts.items())
    p.write_text(open(cluster.conf_path).read() + "\n[client]\n" + extra)
    return str(p)


async def _rados_io(config: ClientConfig) -> tuple[str, list[str]]:
    r = AsyncRados(config)
    await r.connect(30)
    try:
        io = await r.open_ioctx("rbd")
        data = os.urandom(5 * MiB + 123)
        oid = uniq("secure-obj")
        await io.write_full(oid, data)
        assert await io.read(oid, len(data)) == data
        await io.write(oid, b"tail", offset=len(data))
        assert await io.read(oid, 4, offset=len(data)) == b"tail"
        await io.remove(oid)
        return r.monc.con.mode_name, [s["con_mode"] for s in r.osdc.status()["sessions"]]
    finally:
        await r.shutdown()


def test_rados_io_in_secure_mode(secure_cluster):
    mon_mode, osd_modes = asyncio.run(_rados_io(ClientConfig.load(secure_cluster.conf_path)))
    assert mon_mode == "secure" and osd_modes and set(osd_modes) == {"secure"}


def test_crc_is_refused_with_one_clear_line(secure_cluster, tmp_path):
    cfg = ClientConfig.load(secure_cluster.conf_path, overrides={"ms_mode": "crc"})
    with pytest.raises(AuthError, match=r"offered \(crc\) not allowed by the server \(it allows secure"):
        asyncio.run(_rados_io(cfg))
    r = _pyceph(secure_cluster, "status", conf=_conf_with(secure_cluster, tmp_path, ms_mode="crc"), check=False)
    err = r.stderr.decode().strip()
    assert r.returncode != 0 and len(err.splitlines()) == 1, err
    assert "AuthError" in err and "crc" in err and "secure" in err and "Traceback" not in err


def test_status_shows_secure(secure_cluster):
    st = json.loads(_pyceph(secure_cluster, "status", "--format", "json").stdout)
    assert st["mon_session"]["con_mode"] == "secure" and st["osd_modes_offered"] == ["secure"]
    plain = _pyceph(secure_cluster, "status").stdout.decode()
    assert "'con_mode': 'secure'" in plain


def test_rbd_in_secure_mode(secure_cluster, tmp_path):
    name = uniq("secure-img")
    src = tmp_path / "src"
    src.write_bytes(os.urandom(9 * MiB + 4096))
    prbd(secure_cluster, "import", src, f"rbd/{name}")
    back = tmp_path / "back"
    prbd(secure_cluster, "export", f"rbd/{name}", back)
    assert back.read_bytes() == src.read_bytes()
    # librbd (secure too: the cluster's ceph.conf says so) reads what we wrote
    assert rbd_export(secure_cluster, f"rbd/{name}") == src.read_bytes()
    rbd(secure_cluster, "rm", "--no-progress", f"rbd/{name}")


def _device_modes(cluster, dev) -> tuple[str, set[str]]:
    v = json.loads(_pyceph(cluster, "status", "--device", dev, "--format", "json").stdout)
    plain = _pyceph(cluster, "status", "--device", dev).stdout.decode()
    mon = v["mon"]["con_mode"]
    osds = {s["con_mode"] for s in v["osd"]["sessions"]}
    assert f"mode {mon}" in plain.splitlines()[2]
    assert all(f"mode {m}" in plain for m in osds)
    return mon, osds


def test_map_mkfs_verify_in_secure_mode(secure_cluster, run_dir, tmp_path):
    name = uniq("secure-map")
    prbd(secure_cluster, "create", "--size", "64M", f"rbd/{name}")
    dev = pmap(secure_cluster, f"rbd/{name}", "-o", "ms_mode=secure")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    payload = os.urandom(6 * MiB)
    try:
        run(["mkfs.ext4", "-q", dev])
        run(["mount", dev, mnt])
        (mnt / "f").write_bytes(payload)
        run(["umount", mnt])
        run(["mount", "-o", "ro", dev, mnt])
        assert (mnt / "f").read_bytes() == payload
        run(["umount", mnt])
        mon, osds = _device_modes(secure_cluster, dev)
        assert mon == "secure" and osds == {"secure"}
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        prbd(secure_cluster, "unmap", dev)
    # the filesystem is intact for librbd's own e2fsck-free check: ext4 magic at 1080
    img = rbd_export(secure_cluster, f"rbd/{name}")
    assert img[1080:1082] == b"\x53\xef"


def test_allowing_both_modes_gives_what_ms_mode_prefers(secure_cluster, run_dir):
    """Daemons allow crc and secure (ceph.conf, restart): the client's preference wins
    (AuthRegistry::pick_mode takes the first of the client's modes it allows)."""
    conf = open(secure_cluster.conf_path).read()
    for k in ("ms service mode", "ms mon service mode", "ms client mode", "ms mon client mode"):
        conf, n = re.subn(rf"^(\s*){k} = secure$", rf"\1{k} = crc secure", conf, flags=re.M)
        assert n == 1, k
    open(secure_cluster.conf_path, "w").write(conf)
    for d in secure_cluster.daemon_names:
        secure_cluster.restart(d)
    secure_cluster.wait_clean()
    name = uniq("both-map")
    prbd(secure_cluster, "create", "--size", "16M", f"rbd/{name}")
    for ms_mode, want in (("prefer-crc", "crc"), ("prefer-secure", "secure"), ("crc", "crc")):
        dev = pmap(secure_cluster, f"rbd/{name}", "-o", f"ms_mode={ms_mode}")
        try:
            with open(dev, "rb") as f:
                f.read(4096)  # an OSD session
            mon, osds = _device_modes(secure_cluster, dev)
            assert (mon, osds) == (want, {want}), ms_mode
        finally:
            prbd(secure_cluster, "unmap", dev)
