"""The dev-cluster launcher against real Ceph daemons (pyceph.cluster)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pyceph.cluster import (
    CephNotInstalled,
    ClusterRunning,
    ClusterStartTimeout,
    CommandFailed,
    DevCluster,
    check_binaries,
    default_cluster_dir,
)
from pyceph.cluster.launcher import KEY_TYPES, _pid_alive, _proc_cmdline, key_type_of

from .helpers import tool, wanted_release

CEPH_DEFAULT_PORTS = {3300, 6789} | set(range(6800, 7301))
CLI = [sys.executable, "-m", "pyceph.cluster.cli"]


def _procs_mentioning(text: str) -> list[tuple[int, list[str]]]:
    """Live processes (not us) whose command line contains ``text``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            argv = _proc_cmdline(int(entry))
            if any(text in a for a in argv) and _pid_alive(int(entry)):
                out.append((int(entry), argv))
    return out


def _assert_health_ok(c: DevCluster) -> None:
    h = c.ceph("health", "detail")
    assert h["status"] == "HEALTH_OK", h["checks"]


def _daemon_ports(c: DevCluster) -> set[int]:
    return {p for d in c.status()["daemons"] for p in d["ports"]}


def test_health_ok_and_daemons_up(cluster):
    st = cluster.ceph("status")
    assert st["health"]["status"] == "HEALTH_OK", st["health"]
    assert st["fsid"] == cluster.fsid
    assert len(st["quorum_names"]) == len(cluster.state["mons"]) >= 1
    osdmap = st["osdmap"].get("osdmap", st["osdmap"])
    n = cluster.state["osds"]
    assert osdmap["num_osds"] == osdmap["num_up_osds"] == osdmap["num_in_osds"] == n >= 3
    assert st["mgrmap"]["available"]
    states = {s["state_name"]: s["count"] for s in st["pgmap"]["pgs_by_state"]}
    assert states == {"active+clean": st["pgmap"]["num_pgs"]}


def test_config_is_self_contained_and_secure(cluster):
    text = cluster.conf_path.read_text()
    glob = text.split("[global]", 1)[1].split("\n[", 1)[0]
    assert f"fsid = {cluster.fsid}" in glob
    assert f"keyring = {cluster.keyring_path}" in glob and cluster.keyring_path.is_absolute()
    if cluster.ms_mode == "legacy":
        assert "mon host = [v1:127.0.0.1:" in glob and "v2:" not in glob
    else:
        assert "mon host = [v2:127.0.0.1:" in glob and ",v1:127.0.0.1:" in glob
    for opt in ("cluster", "service", "client"):
        assert f"auth {opt} required = cephx" in glob
    # The release's own key type: AES (16-byte secret) up to Reef, AES256KRB5 (32) from Tentacle.
    want_type = KEY_TYPES[cluster.state.get("client_key_type") or cluster.release.default_key_type]
    assert key_type_of(cluster.admin_key) == want_type
    assert len(cluster.admin_key) == (40 if want_type == 1 else 60)
    assert f"key = {cluster.admin_key}" in cluster.keyring_path.read_text()
    # What the running mon really uses, via its admin socket.
    asok = str(cluster.run_dir / f"mon.{cluster.state['mons'][0]['id']}.asok")
    got = cluster.ceph("--admin-daemon", asok, "config", "get", "auth_allow_insecure_global_id_reclaim")
    assert got == {"auth_allow_insecure_global_id_reclaim": "false"}
    got = cluster.ceph("--admin-daemon", asok, "config", "get", "auth_cluster_required")
    assert got == {"auth_cluster_required": "cephx"}


def test_mons_speak_msgr2_and_msgr1_on_non_default_ports(cluster):
    monmap = cluster.ceph("mon", "dump")
    addrs = [a for m in monmap["mons"] for a in m["public_addrs"]["addrvec"]]
    types = ["v1"] if cluster.ms_mode == "legacy" else ["v2", "v1"]
    assert sorted(a["type"] for a in addrs) == sorted(types * len(monmap["mons"]))
    assert sorted(f"{a['type']}:{a['addr']}" for a in addrs) == sorted(cluster.mon_addrs)
    for a in addrs:
        host, port = a["addr"].rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) not in CEPH_DEFAULT_PORTS
        with socket.create_connection((host, int(port)), timeout=5) as s:
            banner = s.recv(9)
        assert banner.startswith(b"ceph v2\n" if a["type"] == "v2" else b"ceph v027")


def test_osd_and_mgr_ports_inside_probed_range(cluster):
    lo, hi = cluster.state["ms_bind_port_range"]
    osds = cluster.ceph("osd", "dump")["osds"]
    for o in osds:
        for vec in ("public_addrs", "cluster_addrs", "heartbeat_back_addrs", "heartbeat_front_addrs"):
            for a in o[vec]["addrvec"]:
                port = int(a["addr"].rsplit(":", 1)[1])
                assert lo <= port <= hi and port not in CEPH_DEFAULT_PORTS, (o["osd"], vec, a)
    for a in cluster.ceph("mgr", "dump")["active_addrs"]["addrvec"]:
        assert lo <= int(a["addr"].rsplit(":", 1)[1]) <= hi


def test_rbd_pool_initialised(cluster):
    pools = {p["pool_name"]: p for p in cluster.ceph("osd", "pool", "ls", "detail")}
    rbd = pools["rbd"]
    assert "rbd" in rbd["application_metadata"]
    assert rbd["size"] == min(cluster.state["osds"], 3)
    assert rbd["pg_num"] == 8 and rbd["pg_autoscale_mode"] == "off"
    # `rbd pool init` wrote the rbd_info object.
    assert "rbd_info" in cluster.rados("-p", "rbd", "ls").split()


def test_rbd_cli_create_ls_rm(cluster):
    cluster.rbd("create", "--size", "8M", "rbd/launcher-test")
    try:
        assert "launcher-test" in cluster.rbd("ls", "rbd").split()
        info = json.loads(cluster.rbd("info", "--format", "json", "rbd/launcher-test"))
        assert info["size"] == 8 << 20
    finally:
        cluster.rbd("rm", "--no-progress", "rbd/launcher-test")
    assert "launcher-test" not in cluster.rbd("ls", "rbd").split()


def test_ceph_tools_work_with_only_conf(cluster, tmp_path):
    # The release's own CLI with nothing but -c DIR/ceph.conf, from an unrelated cwd.
    r = subprocess.run(tool(cluster, "ceph", "-c", cluster.conf_path, "health"), cwd=tmp_path,
                       capture_output=True, text=True, timeout=60, env={"PATH": os.environ["PATH"]})
    assert r.returncode == 0 and r.stdout.strip() == "HEALTH_OK", r.stderr


def test_status_api_and_cli(cluster):
    st = cluster.status()
    assert st["running"] and st["health"] == "HEALTH_OK"
    names = {d["name"] for d in st["daemons"]}
    assert names == {"mon.a", "mgr.x", "osd.0", "osd.1", "osd.2"}
    for d in st["daemons"]:
        assert d["running"] and d["pid"] == cluster.pid(d["name"]) and d["ports"], d
    assert cluster.is_running()
    r = subprocess.run([*CLI, "status", "--dir", str(cluster.dir), "--format", "json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    cli = json.loads(r.stdout)
    assert cli["running"] and cli["fsid"] == cluster.fsid
    assert {d["name"]: d["pid"] for d in cli["daemons"]} == {d["name"]: d["pid"] for d in st["daemons"]}


def test_start_refuses_running_cluster(cluster):
    pids = cluster.pids()
    with pytest.raises(ClusterRunning):
        DevCluster(cluster.dir).start(mons=1, osds=1)
    r = subprocess.run([*CLI, "start", "--dir", str(cluster.dir)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert r.stderr.count("\n") == 1 and "already running" in r.stderr
    assert cluster.pids() == pids and cluster.ceph("health")["status"] == "HEALTH_OK"


def test_ecpool_fixture(cluster, ecpool, tmp_path):
    pool = {p["pool_name"]: p for p in cluster.ceph("osd", "pool", "ls", "detail")}[ecpool]
    assert pool["type"] == 3  # erasure
    assert "ec_overwrites" in pool["flags_names"]
    prof = cluster.ceph("osd", "erasure-code-profile", "get", pool["erasure_code_profile"])
    assert (prof["k"], prof["m"], prof["crush-failure-domain"]) == ("2", "1", "osd")
    data = os.urandom(100_000)
    (tmp_path / "in").write_bytes(data)
    cluster.rados("-p", ecpool, "put", "ec-obj", str(tmp_path / "in"))
    cluster.rados("-p", ecpool, "get", "ec-obj", str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == data
    # RBD image with its data on the EC pool.
    cluster.rbd("create", "--size", "4M", "--data-pool", ecpool, "rbd/ec-backed")
    cluster.rbd("rm", "--no-progress", "rbd/ec-backed")


def test_nonpow2_pool_fixture(cluster, nonpow2_pool):
    pool = {p["pool_name"]: p for p in cluster.ceph("osd", "pool", "ls", "detail")}[nonpow2_pool]
    assert pool["type"] == 1 and pool["pg_num"] == pool["pg_placement_num"] == 12
    pgs = cluster.ceph("pg", "ls-by-pool", nonpow2_pool)
    pgs = pgs["pg_stats"] if isinstance(pgs, dict) else pgs
    assert len(pgs) == 12 and all(p["state"] == "active+clean" for p in pgs)


@pytest.mark.timeout(400)
def test_kill_and_restart_osd_recovers(cluster, tmp_path):
    # On a cluster of its own: a SIGKILLed memstore OSD comes back with the store of its
    # last clean stop, whose byte accounting can later underflow (seen once on the shared
    # cluster: osd.2 reporting 16 EiB used, so every pool full for the tests after).
    c = DevCluster(tmp_path / "own")
    c.start(mons=1, osds=3, release=cluster.release.name, ms_mode=cluster.ms_mode)
    try:
        (tmp_path / "in").write_bytes(b"survives an OSD crash")
        c.rados("-p", "rbd", "put", "crash-obj", str(tmp_path / "in"))
        old = c.pid("osd.2")
        c.kill("osd.2")  # SIGKILL: memstore loses its in-memory state
        assert c.pid("osd.2") is None and not _pid_alive(old)
        new = c.restart("osd.2")
        assert new != old and c.pid("osd.2") == new
        c.wait_clean(180)
        c.rados("-p", "rbd", "get", "crash-obj", str(tmp_path / "out"))
        assert (tmp_path / "out").read_bytes() == b"survives an OSD crash"
    finally:
        c.stop()


@pytest.mark.timeout(300)
def test_second_cluster_does_not_collide_and_stops_clean(cluster, tmp_path):
    first_ports = _daemon_ports(cluster)
    d = tmp_path / "second"
    c2 = DevCluster(d)
    try:
        c2.start(mons=1, osds=1, release=cluster.release.name)
        assert c2.fsid != cluster.fsid
        _assert_health_ok(c2)
        _assert_health_ok(cluster)
        second_ports = _daemon_ports(c2)
        assert second_ports and not (first_ports & second_ports)
        lo, hi = c2.state["port_block"]
        flo, fhi = cluster.state["port_block"]
        assert hi < flo or lo > fhi  # disjoint port blocks
        assert c2.state["mons"][0]["v2"] not in CEPH_DEFAULT_PORTS

        # A mon survives SIGKILL (its store is on disk) and comes back.
        c2.kill("mon.a")
        c2.restart("mon.a")
        assert c2.ceph("health", timeout=60)["status"] in ("HEALTH_OK", "HEALTH_WARN")
        old_fsid = c2.fsid
    finally:
        c2.stop()
    assert not c2.is_running()
    assert _procs_mentioning(str(d)) == []
    assert all(p is None for p in c2.pids().values())

    # Leftovers of a stopped cluster are wiped: a new start makes a new cluster.
    try:
        c2.start(mons=1, osds=1, release=cluster.release.name)
        assert c2.release.name == cluster.release.name
        assert c2.fsid != old_fsid
    finally:
        c2.stop()
    assert _procs_mentioning(str(d)) == []
    _assert_health_ok(cluster)


def test_cli_stop_of_stopped_dir_and_status_exit_code(tmp_path):
    r = subprocess.run([*CLI, "status", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and "no cluster" in r.stdout
    r = subprocess.run([*CLI, "stop", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "not running" in r.stdout


def test_start_refuses_to_wipe_foreign_dir(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    r = subprocess.run([*CLI, "start", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "refusing" in r.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_default_cluster_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("PYCEPH_CLUSTER_DIR", str(tmp_path / "x"))
    assert default_cluster_dir() == tmp_path / "x"
    monkeypatch.delenv("PYCEPH_CLUSTER_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cluster_dir() == tmp_path / ".pyceph" / "cluster"


def test_missing_binaries_give_install_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # empty dir: no ceph tools
    with pytest.raises(CephNotInstalled, match="apt-get install ceph-mon ceph-osd ceph-mgr ceph-common"):
        check_binaries()
    r = subprocess.run([*CLI, "start", "--dir", str(tmp_path / "c")], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "PATH": str(tmp_path)})
    assert r.returncode == 1 and "apt-get install ceph-mon" in r.stderr and r.stderr.count("\n") == 1


def test_fixture_fails_not_skips_without_binaries(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYCEPH_TEST_CLUSTER_DIR", "PYCEPH_TEST_RELEASE")}
    env["PATH"] = str(tmp_path)
    here = Path(__file__).resolve()
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'bt'}",
         f"{here}::test_health_ok_and_daemons_up"],
        capture_output=True, text=True, timeout=120, env=env, cwd=here.parents[2],
    )
    assert r.returncode == 1, r.stdout
    assert "apt-get install ceph-mon ceph-osd ceph-mgr ceph-common" in r.stdout
    assert "1 error" in r.stdout and "skipped" not in r.stdout


def test_failed_start_leaves_no_process(tmp_path):
    c = DevCluster(tmp_path / "broken")
    # mon and mgr come up, then OSD mkfs cannot create its data dir.
    with pytest.raises(CommandFailed, match="ceph-osd"):
        c.start(mons=1, osds=1, conf={"osd data": "/proc/pyceph-no-such-dir/$name"}, release=wanted_release())
    assert not c.is_running()
    assert _procs_mentioning(str(c.dir)) == []


def test_wait_clean_timeout_reports_last_status(cluster):
    with pytest.raises(ClusterStartTimeout) as ei:
        cluster.wait_clean(timeout=1, osds=99)  # never satisfied
    assert "not active+clean" in str(ei.value)
    assert "cluster:" in ei.value.last_status and cluster.fsid in ei.value.last_status
