"""msgr1 ("ceph v027") against real daemons: ``ms_mode=legacy`` on the usual cluster,
a v1-only ``mon host``, and a v1-only cluster (v1 MonMap, ``ms bind msgr2 = false``:
monitors and OSDs publish only v1 addresses), with librbd's ``rbd`` as the oracle,
``prbd map`` + mkfs, and faults (mon killed, OSD killed and restarted) under msgr1.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from pyceph.auth.crypto import CryptoKey
from pyceph.cluster import CephNotInstalled, CephRelease, DevCluster
from pyceph.config import ClientConfig
from pyceph.errors import AuthError, ConfigError
from pyceph.rados import AsyncRados, Rados
from pyceph.rbd import RBD, Image

from .helpers import pmap, prbd, rbd, rbd_export, run, uniq, wanted_release


def _protocols(rados: Rados) -> tuple[str, set[str]]:
    core = rados.core
    return core.monc.con.proto, {s.con.proto for s in core.osdc.sessions.values() if s.con is not None}


def _rados_rbd_roundtrip(cluster, conf: dict) -> tuple[str, set[str]]:
    """put/get an object and write/read an RBD image through pyceph with ``conf``;
    librbd's ``rbd export`` must read what pyceph wrote.  Returns the protocols used."""
    name = uniq("m1img")
    payload = os.urandom(3 << 20)
    with Rados(conffile=str(cluster.conf_path), conf=dict(conf)) as r:
        io = r.open_ioctx("rbd")
        oid = uniq("m1obj")
        data = os.urandom(200_000)
        io.write_full(oid, data)
        assert io.read(oid, len(data) + 1) == data
        RBD().create(io, name, 16 << 20)
        with Image(io, name) as img:
            img.write(payload, 5 << 20)
            assert img.read(5 << 20, len(payload)) == payload
        used = _protocols(r)
        io.close()
    exported = rbd_export(cluster, f"rbd/{name}")
    assert exported[5 << 20:(5 << 20) + len(payload)] == payload and exported[: 5 << 20] == bytes(5 << 20)
    rbd(cluster, "rm", f"rbd/{name}")
    return used


def test_ms_mode_legacy_speaks_msgr1_everywhere(cluster):
    mon, osds = _rados_rbd_roundtrip(cluster, {"ms_mode": "legacy"})
    assert mon == "msgr1" and osds == {"msgr1"}


def test_v1_only_mon_host_uses_msgr1_for_the_monitor(cluster):
    v1 = " ".join(f"v1:127.0.0.1:{m['v1']}" for m in cluster.state["mons"])
    mon, osds = _rados_rbd_roundtrip(cluster, {"mon_host": v1})
    assert mon == "msgr1" and osds == {"msgr2"}  # the OSDs publish v2 too: it is preferred


def test_map_with_ms_mode_legacy_mkfs_and_librbd_reads_it(cluster, run_dir, tmp_path):
    """``prbd map -o ms_mode=legacy``: the mapping daemon's sessions are msgr1 (its log
    says so), ext4 made on it mounts again, and librbd exports the same image."""
    name = uniq("m1map")
    rbd(cluster, "create", "--size", "64M", f"rbd/{name}")
    dev = pmap(cluster, f"rbd/{name}", "-o", "ms_mode=legacy,keep_log")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    blob = os.urandom(5 << 20)
    try:
        run(["mkfs.ext4", "-q", dev])
        run(["mount", dev, mnt])
        (mnt / "f").write_bytes(blob)
        run(["umount", mnt])
        run(["mount", dev, mnt])
        assert (mnt / "f").read_bytes() == blob
        run(["umount", mnt])
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        prbd(cluster, "unmap", dev)
    logs = sorted((run_dir / "log").glob(f"rbd.{name}.*.log"))
    text = logs[-1].read_text()
    assert "msgr1 v1:" in text and "msgr2 v2:" not in text
    img = tmp_path / "img"
    img.write_bytes(rbd_export(cluster, f"rbd/{name}"))
    run(["mount", "-o", "loop,ro", img, mnt])
    try:
        assert (mnt / "f").read_bytes() == blob
    finally:
        run(["umount", mnt])
    rbd(cluster, "rm", f"rbd/{name}")


def test_bad_ms_mode_is_one_clear_line(cluster):
    r = subprocess.run([sys.executable, "-m", "pyceph.cli.prbd", "-c", str(cluster.conf_path), "map",
                        "-o", "ms_mode=fast", "rbd/none"], capture_output=True, timeout=60)
    err = r.stderr.decode()
    assert r.returncode != 0 and "map option 'ms_mode'" in err and "'fast'" in err and "Traceback" not in err


def test_wrong_key_over_msgr1_is_one_auth_error(cluster):
    bad = CryptoKey(secret=os.urandom(16)).to_base64()
    with pytest.raises(AuthError, match="client.admin: authentication failed with result -13"):
        Rados(conffile=str(cluster.conf_path), conf={"ms_mode": "legacy", "key": bad}).connect()


def test_msgr1_lost_reply_append_applied_once(cluster):
    """Lossy msgr1 session: the connection dies after the OSD applied each append but
    before we read the reply; the resend on a new connection carries the same reqid
    (``client.<global_id>`` in the msgr1 header + tid), so each append applies once."""

    async def go():
        r = AsyncRados(ClientConfig.load(conffile=str(cluster.conf_path), overrides={"ms_mode": "legacy"}))
        await r.connect(30)
        try:
            io = await r.open_ioctx("rbd")
            oid = uniq("m1once")
            await io.write_full(oid, b"")
            osdc = r.osdc
            orig = osdc._dispatch
            lost: list[int] = []

            def lossy_dispatch(s, msg):
                if msg.tid not in lost:
                    lost.append(msg.tid)
                    s.con.abort(ConnectionError("test: connection lost before the reply was read"))
                    return
                orig(s, msg)

            osdc._dispatch = lossy_dispatch
            chunk = os.urandom(1000)
            for _ in range(4):
                await io.append(oid, chunk)
            osdc._dispatch = orig
            size, _ = await io.stat(oid)
            protos = {s.con.proto for s in osdc.sessions.values() if s.con is not None}
            return size, len(lost), osdc.resends, protos
        finally:
            await r.shutdown()

    size, lost, resends, protos = asyncio.run(asyncio.wait_for(go(), 120))
    assert protos == {"msgr1"} and lost == 4 and resends >= 4
    assert size == 4 * 1000


# -- a v1-only cluster ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def v1c(tmp_path_factory):
    """``pyceph cluster start --ms-mode legacy`` (v1 MonMap, ``ms bind msgr2 = false``) of
    the release under test ($PYCEPH_TEST_RELEASE, default the host's), 3 monitors."""
    try:
        CephRelease.resolve(wanted_release())
    except CephNotInstalled as e:
        pytest.fail(str(e), pytrace=False)
    c = DevCluster(tmp_path_factory.mktemp("v1only"))
    c.start(mons=3, osds=3, release=wanted_release(), ms_mode="legacy")
    try:
        yield c
    finally:
        c.stop()


def test_v1_only_cluster_publishes_v1_only(v1c):
    mons = v1c.ceph("mon", "dump")["mons"]
    osds = v1c.ceph("osd", "dump")["osds"]
    assert all([a["type"] for a in m["public_addrs"]["addrvec"]] == ["v1"] for m in mons)
    assert all([a["type"] for a in o["public_addrs"]["addrvec"]] == ["v1"] for o in osds)


def test_v1_only_cluster_default_client(v1c):
    """No option at all: ceph.conf's v1 ``mon host`` and v1-only OSDs mean msgr1."""
    mon, osds = _rados_rbd_roundtrip(v1c, {})
    assert mon == "msgr1" and osds == {"msgr1"}


def test_v1_only_cluster_refuses_a_secure_only_client(v1c):
    cfg = ClientConfig.load(conffile=str(v1c.conf_path), overrides={"ms_mode": "secure"})

    async def go():
        r = AsyncRados(cfg)
        try:
            await r.connect(10)
        finally:
            await r.shutdown()

    with pytest.raises(ConfigError, match="ms_mode secure"):
        asyncio.run(go())


def test_v1_only_cluster_map_mkfs(v1c, run_dir, tmp_path):
    name = uniq("v1map")
    rbd(v1c, "create", "--size", "64M", f"rbd/{name}")
    dev = pmap(v1c, f"rbd/{name}")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    blob = os.urandom(3 << 20)
    try:
        run(["mkfs.ext4", "-q", dev])
        run(["mount", dev, mnt])
        (mnt / "f").write_bytes(blob)
        run(["umount", mnt])
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        prbd(v1c, "unmap", dev)
    img = tmp_path / "img"
    img.write_bytes(rbd_export(v1c, f"rbd/{name}"))
    run(["mount", "-o", "loop,ro", img, mnt])
    try:
        assert (mnt / "f").read_bytes() == blob
    finally:
        run(["umount", mnt])


FAST = {"osd_keepalive_interval": "1", "osd_keepalive_timeout": "3", "mon_client_ping_interval": "1",
        "mon_client_ping_timeout": "3", "mon_client_hunt_interval": "1"}


def test_v1_only_cluster_faults_mon_killed_and_osd_restarted(v1c):
    """Under a writer over msgr1: kill the monitor we talk to (we hunt to another, keep
    our global_id, a mon command completes) and SIGKILL then restart the primary OSD of
    some objects (lossy reset: reconnect and resend).  No write fails, every object reads
    back what was last written."""

    async def go():
        r = AsyncRados(ClientConfig.load(conffile=str(v1c.conf_path), overrides=FAST))
        await r.connect(30)
        try:
            io = await r.open_ioctx("rbd")
            names = [uniq("v1w") for _ in range(16)]
            want: dict[str, bytes] = {}
            errors: list[BaseException] = []
            stop = asyncio.Event()

            async def writer():
                i = 0
                while not stop.is_set():
                    n = names[i % len(names)]
                    d = os.urandom(8192)
                    try:
                        await io.write_full(n, d)
                    except Exception as e:  # noqa: BLE001 - the test fails on it
                        errors.append(e)
                        return
                    want[n] = d
                    i += 1

            w = asyncio.ensure_future(writer())
            while len(want) < 8:
                await asyncio.sleep(0.05)
            victim = min(r.osdc.sessions)  # an OSD we have a session with
            old = r.osdc.sessions[victim]
            monc = r.monc
            gid, mon = monc.global_id, monc.cur_mon
            port = int(mon.rsplit(":", 1)[1].split("/")[0])
            name = next(f"mon.{m['id']}" for m in v1c.state["mons"] if m["v1"] == port)
            t0 = time.monotonic()
            await asyncio.to_thread(v1c.kill, name)
            ret, out, _ = await r.mon_command({"prefix": "osd pool ls", "format": "json"}, timeout=60)
            hunted = time.monotonic() - t0
            assert ret == 0 and "rbd" in json.loads(out)
            st = monc.status()
            assert st["mon"] != mon and st["protocol"] == "msgr1" and st["global_id"] == gid
            await asyncio.to_thread(v1c.kill, f"osd.{victim}")
            await asyncio.sleep(3)
            await asyncio.to_thread(v1c.start_daemon, f"osd.{victim}")
            await asyncio.sleep(5)
            stop.set()
            await asyncio.wait_for(w, 60)
            assert not errors, errors
            for n, d in want.items():
                assert await io.read(n, len(d) + 1) == d
            protos = {s.con.proto for s in r.osdc.sessions.values() if s.con is not None}
            # its session faulted (reconnect attempts) or was closed when the map marked it down
            return hunted, len(want), protos, (old.faults, old.closed, r.osdc.resends)
        finally:
            await r.shutdown()

    try:
        hunted, n, protos, faults = asyncio.run(asyncio.wait_for(go(), 180))
    finally:
        for m in v1c.state["mons"]:
            if v1c.pid(f"mon.{m['id']}") is None:
                v1c.start_daemon(f"mon.{m['id']}")
    print(f"[msgr1] mon killed: command done {hunted:.1f}s later; {n} objects verified; "
          f"killed OSD's session: faults {faults[0]}, closed {faults[1]}; resends {faults[2]}")
    assert protos == {"msgr1"} and (faults[0] >= 1 or faults[1])
