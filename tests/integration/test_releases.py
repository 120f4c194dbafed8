"""The launcher on every supported Ceph release (pyceph.cluster, `pyceph cluster --release`).

Each release (pacific, reef, tentacle; $PYCEPH_TEST_RELEASES narrows the list, e.g.
"reef,tentacle") gets a cluster started through the CLI with ``--release``; the checks use
that release's own tools through ``pyceph cluster exec`` / ``DevCluster.tool_argv``:

- the daemons and tools are that release (``ceph versions``, ``exec -- ceph --version``);
- ``exec`` passes arguments, files under /tmp, stdin/stdout and the exit status through;
- RBD works through the release's ``rbd`` (cls_rbd loads: ``osd class dir`` is absolute);
- keys have the release's own type (AES up to Reef, AES256KRB5 from Tentacle), and
  ``--client-key-type aes`` makes Tentacle's "upgraded cluster" (both ciphers allowed);
- a daemon that cannot start is reported with its own words;
- kill/restart of an OSD and a mon, and a cable pull under pyceph I/O;
- ``--ms-mode secure|crc|legacy`` clusters refuse clients of another mode.

A release root that is not built yet is built first (minutes, once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from pyceph.cluster import ClusterError, DevCluster
from pyceph.cluster import faultproxy as fp
from pyceph.cluster.launcher import KEY_TYPES, RELEASES, key_type_of

from .helpers import uniq

CLI = [sys.executable, "-m", "pyceph.cluster.cli"]
PRBD = [sys.executable, "-m", "pyceph.cli.prbd"]


def _releases() -> list[str]:
    want = [r.strip() for r in os.environ.get("PYCEPH_TEST_RELEASES", "").split(",") if r.strip()]
    bad = [r for r in want if r not in RELEASES]
    assert not bad, f"PYCEPH_TEST_RELEASES: unknown release(s) {bad}; known {list(RELEASES)}"
    return want or list(RELEASES)


RELEASE_LIST = _releases()


def cli(*args, timeout: float = 300, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise AssertionError(f"pyceph cluster {' '.join(map(str, args))} exited {r.returncode}: {r.stderr}")
    return r


def cexec(c: DevCluster, *argv, check: bool = True, timeout: float = 120,
          input: str | None = None) -> subprocess.CompletedProcess:
    """``pyceph cluster exec --dir DIR -- ARGV``: the release's own tool."""
    return cli("exec", "--dir", c.dir, "--", *argv, check=check, timeout=timeout, input=input)


def start(d, release: str, *extra) -> DevCluster:
    r = cli("start", "--dir", d, "--release", release, *extra)
    assert f"({release}" in r.stdout.splitlines()[0], r.stdout
    return DevCluster(d)


@pytest.fixture(scope="module", params=RELEASE_LIST)
def rc(request, tmp_path_factory):
    """A 1-mon, 3-OSD cluster of the release, started through `pyceph cluster start --release`."""
    c = start(tmp_path_factory.mktemp(f"rel-{request.param}"), request.param)
    try:
        yield c
    finally:
        with_proxy = fp.proxy_pid(c.dir) is not None
        if with_proxy:
            fp.stop_proxy(c.dir)
        c.stop()


def test_daemons_and_tools_are_the_release(rc):
    rel = rc.release
    assert rc.state["release"] == rel.name and json.loads((rc.dir / "cluster.json").read_text())["release"] == rel.name
    out = cexec(rc, "ceph", "--version").stdout
    assert f") {rel.name} (" in out and out.startswith(f"ceph version {rel.major}."), out
    versions = json.loads(cexec(rc, "ceph", "versions", "-f", "json").stdout)
    assert {k for k, v in versions.items() if v} == {"mon", "mgr", "osd", "overall"}
    assert all(f") {rel.name} (" in v for v in versions["overall"]), versions
    assert sum(versions["overall"].values()) == 5
    st = rc.status()
    assert st["release"] == rel.name and st["running"] and st["health"] == "HEALTH_OK", st
    plain = cli("status", "--dir", rc.dir).stdout
    assert f"release {rel.name}" in plain


def test_exec_passes_files_stdin_stdout_and_exit_status(rc, tmp_path):
    data = os.urandom(3000)
    (tmp_path / "in").write_bytes(data)
    cexec(rc, "rados", "-p", "rbd", "put", "exec-obj", tmp_path / "in")
    # stdout of the chrooted tool is ours; a file under /tmp written inside is visible outside
    got = subprocess.run([*CLI, "exec", "--dir", rc.dir, "--", "rados", "-p", "rbd", "get", "exec-obj", "-"],
                         capture_output=True, timeout=60)
    assert got.returncode == 0 and got.stdout == data
    cexec(rc, "rados", "-p", "rbd", "get", "exec-obj", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
    # stdin reaches the tool (one `ceph` reading commands)
    out = cexec(rc, "ceph", "-f", "json", input="osd pool ls\n").stdout
    assert "rbd" in json.loads(out)
    # the tool's exit status is the command's (`ceph` exits with the errno: ENOENT)
    r = cexec(rc, "ceph", "osd", "pool", "get", "no-such-pool", "size", check=False)
    assert r.returncode == 2 and "no-such-pool" in r.stderr, (r.returncode, r.stderr)
    cexec(rc, "rados", "-p", "rbd", "rm", "exec-obj")
    r = cli("exec", "--dir", rc.dir, check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "wants a command" in r.stderr


def test_rbd_works_class_dir_is_absolute(rc):
    # Debian's Reef/Tentacle ship `osd class dir` relative: without the fix every RBD op
    # that needs cls_rbd fails with EOPNOTSUPP.
    asok = rc.run_dir / "osd.0.asok"
    got = json.loads(cexec(rc, "ceph", "--admin-daemon", asok, "config", "get", "osd_class_dir").stdout)
    d = got["osd_class_dir"]
    assert d.startswith("/"), d
    base = rc.release.root or "/"
    assert any(n.startswith("libcls_rbd.so") for n in os.listdir(os.path.join(str(base), d.lstrip("/"))))
    name = uniq("rel")
    cexec(rc, "rbd", "create", "--size", "32M", f"rbd/{name}")
    cexec(rc, "rbd", "snap", "create", f"rbd/{name}@s1")
    r = cexec(rc, "rbd", "bench", "--io-type", "write", "--io-size", "4K", "--io-total", "4M", f"rbd/{name}")
    assert "elapsed:" in r.stdout
    info = json.loads(cexec(rc, "rbd", "info", "--format", "json", f"rbd/{name}").stdout)
    assert info["size"] == 32 << 20 and "exclusive-lock" in info["features"]
    assert [s["name"] for s in json.loads(cexec(rc, "rbd", "snap", "ls", "--format", "json", f"rbd/{name}").stdout)] == ["s1"]
    cexec(rc, "rbd", "snap", "purge", f"rbd/{name}")
    cexec(rc, "rbd", "rm", "--no-progress", f"rbd/{name}")


def test_keys_have_the_release_type(rc):
    want = KEY_TYPES[rc.release.default_key_type]
    assert want == (2 if rc.release.major >= 20 else 1)
    assert key_type_of(rc.admin_key) == want
    for entity in ("osd.0", "mgr.x", "client.admin"):
        out = json.loads(cexec(rc, "ceph", "auth", "get", entity, "-f", "json").stdout)
        assert key_type_of(out[0]["key"]) == want, (entity, out[0]["key"][:4])
    if rc.release.major >= 20:
        mm = cexec(rc, "ceph", "mon", "dump").stdout
        assert "auth_allowed_ciphers aes256k\n" in mm and "min_mon_release 20 (tentacle)" in mm
    else:
        mm = json.loads(cexec(rc, "ceph", "mon", "dump", "-f", "json").stdout)
        assert mm["min_mon_release_name"] == rc.release.name


def test_daemon_failure_reports_the_daemons_words(rc):
    mon = rc.dir / "mon.a"
    rc.kill("mon.a")
    os.rename(mon, rc.dir / "mon.a.moved")
    try:
        with pytest.raises(ClusterError) as ei:
            rc.start_daemon("mon.a")
        msg = str(ei.value)
        assert "mon.a" in msg and rc.release.name in msg
        assert f"monitor data directory at '{mon}' does not exist" in msg, msg
        assert "\n" not in msg
        r = cli("restart", "--dir", rc.dir, "mon.a", check=False)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr, r.stderr
    finally:
        os.rename(rc.dir / "mon.a.moved", mon)
    rc.start_daemon("mon.a")
    assert rc.ceph("health", timeout=60)["status"] == "HEALTH_OK"


@pytest.mark.timeout(300)
def test_kill_restart_osd_and_mon(rc):
    name = uniq("rel-kr")
    cexec(rc, "rbd", "create", "--size", "16M", f"rbd/{name}")
    for daemon in ("osd.1", "mon.a"):
        old = rc.pid(daemon)
        cli("kill", "--dir", rc.dir, daemon)
        assert rc.pid(daemon) is None
        r = cli("restart", "--dir", rc.dir, daemon)
        new = rc.pid(daemon)
        assert new and new != old and f"pid {new}" in r.stdout
        # the restarted daemon is the release's, inside its root
        exe = os.readlink(f"/proc/{new}/root")
        assert exe == str(rc.release.root or "/"), exe
    rc.wait_clean(180)
    r = cexec(rc, "rbd", "bench", "--io-type", "write", "--io-size", "4K", "--io-total", "2M", f"rbd/{name}")
    assert "elapsed:" in r.stdout
    cexec(rc, "rbd", "rm", "--no-progress", f"rbd/{name}")


@pytest.mark.timeout(300)
def test_cable_pull_stalls_pyceph_io_until_restored(rc, tmp_path):
    """The fault proxy routes the pyceph client; its I/O waits out a pulled OSD cable.

    Needs a pyceph client that speaks the release's key type (AES256KRB5 on Tentacle)."""
    name = uniq("rel-cable")
    cexec(rc, "rbd", "create", "--size", "16M", "--image-feature", "layering", f"rbd/{name}")
    cli("proxy", "start", "--dir", rc.dir)
    env = {**os.environ, "PYCEPH_CONNECT_MAP": str(rc.dir / "connect-map.json")}
    cli("cable", "pull", "--dir", rc.dir, "osd.*")
    try:
        t0 = time.monotonic()
        bench = subprocess.Popen([*PRBD, "-c", rc.conf_path, "bench", "--io-type", "write", "--io-size", "4K",
                                  "--io-total", "1M", f"rbd/{name}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=env)
        time.sleep(6)
        assert bench.poll() is None, bench.communicate()  # stalled behind the pulled cables
        st = fp.status(rc.dir)
        assert {r["state"] for n, r in st["routes"].items() if n.startswith("osd.")} == {"stall"}
        assert sum(r["connections"] for n, r in st["routes"].items() if n.startswith("osd.")) >= 1
    finally:
        cli("cable", "restore", "--dir", rc.dir, "osd.*")
    out, err = bench.communicate(timeout=120)
    assert bench.returncode == 0, err
    assert time.monotonic() - t0 >= 6 and "elapsed:" in out
    # what pyceph wrote is what the release's librbd reads
    got = subprocess.run(rc.tool_argv("rbd", "-c", rc.conf_path, "export", "--no-progress", f"rbd/{name}", "-"),
                         capture_output=True, timeout=120)
    assert got.returncode == 0 and len(got.stdout) == 16 << 20 and got.stdout[: 1 << 20] != bytes(1 << 20)
    cli("proxy", "stop", "--dir", rc.dir)
    cexec(rc, "rbd", "rm", "--no-progress", f"rbd/{name}")


# -- clusters that require one on-wire mode ------------------------------------------


def _refused(c: DevCluster, *overrides: str) -> subprocess.CompletedProcess:
    """`ceph -s` of the release with client overrides; the cluster must refuse it."""
    return cexec(c, "ceph", *overrides, "--connect-timeout", "8", "-s", check=False, timeout=60)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("release", RELEASE_LIST)
@pytest.mark.parametrize("mode", ["secure", "crc", "legacy"])
def test_ms_mode_cluster_refuses_other_modes(release, mode, tmp_path):
    c = start(tmp_path / "c", release, "--ms-mode", mode, "--osds", "1")
    try:
        assert c.ms_mode == mode and c.state["release"] == release
        assert "HEALTH_OK" in cexec(c, "ceph", "health").stdout
        name = uniq("mode")
        cexec(c, "rbd", "create", "--size", "8M", f"rbd/{name}")
        assert "elapsed:" in cexec(c, "rbd", "bench", "--io-type", "write", "--io-total", "1M", f"rbd/{name}").stdout
        mons = json.loads(cexec(c, "ceph", "mon", "dump", "-f", "json").stdout)["mons"]
        osds = json.loads(cexec(c, "ceph", "osd", "dump", "-f", "json").stdout)["osds"]
        mon_types = {a["type"] for m in mons for a in m["public_addrs"]["addrvec"]}
        osd_types = {a["type"] for o in osds for a in o["public_addrs"]["addrvec"]}
        if mode == "legacy":
            assert mon_types == osd_types == {"v1"}
            assert "v2:" not in c.mon_host
            v1 = c.state["mons"][0]["v1"]
            # a msgr2-only client finds nobody speaking msgr2
            r = _refused(c, "-m", f"v2:127.0.0.1:{v1}")
        else:
            assert mon_types == osd_types == {"v1", "v2"}
            for who in ("osd.0", "mon.a"):  # what the running daemons use
                assert cexec(c, "ceph", "config", "show", who, "ms_service_mode").stdout.strip() == mode
            other = "crc" if mode == "secure" else "secure"
            r = _refused(c, f"--ms_mon_client_mode={other}", f"--ms_client_mode={other}")
            log = (c.log_dir / "mon.a.log").read_text(errors="replace")
            assert "failed to pick con mode" in log
        assert r.returncode != 0, r.stdout
    finally:
        c.stop()


# -- key types -----------------------------------------------------------------------


@pytest.mark.parametrize("release", RELEASE_LIST)
def test_client_key_type_option(release, tmp_path):
    if RELEASES[release] < 20:
        # Only Tentacle knows AES256KRB5: one clear line, nothing started.
        r = cli("start", "--dir", tmp_path / "c", "--release", release, "--client-key-type", "aes256k", check=False)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "aes256k" in r.stderr, r.stderr
        assert not (tmp_path / "c" / "cluster.json").exists()
        return
    # Tentacle "upgraded": client.admin keeps an AES key, service keys are AES256KRB5.
    c = start(tmp_path / "c", release, "--client-key-type", "aes", "--osds", "1")
    try:
        assert key_type_of(c.admin_key) == 1
        osd = json.loads(cexec(c, "ceph", "auth", "get", "osd.0", "-f", "json").stdout)[0]["key"]
        assert key_type_of(osd) == 2
        mm = cexec(c, "ceph", "mon", "dump").stdout
        assert "auth_allowed_ciphers aes, aes256k" in mm and "auth_service_cipher aes256k" in mm
        health = cexec(c, "ceph", "health", "detail").stdout
        assert "AUTH_INSECURE_CLIENT_KEY_TYPE" in health  # what Tentacle says of such a cluster
        name = uniq("mixed")
        cexec(c, "rbd", "create", "--size", "8M", f"rbd/{name}")
        assert "elapsed:" in cexec(c, "rbd", "bench", "--io-type", "write", "--io-total", "1M", f"rbd/{name}").stdout
    finally:
        c.stop()
