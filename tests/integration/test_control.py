"""The map daemon's control plane on a real mapping (docs/CONTROL.md): the secret
reaches the daemon over a private pipe, never its environment, argv or log; settings
change in one transaction on a live RADOS client; bad input gets error replies."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket

import pytest

from pyceph.block import control, ctlproto
from pyceph.cli import device_config

from .helpers import pmap, prbd, uniq

MiB = 1 << 20


def _admin_key(cluster) -> str:
    text = open(cluster.conf_path.parent / "client.admin.keyring").read() \
        if (cluster.conf_path.parent / "client.admin.keyring").exists() else ""
    if not text:
        for name in os.listdir(cluster.conf_path.parent):
            if name.endswith("keyring"):
                t = open(cluster.conf_path.parent / name).read()
                if "[client.admin]" in t:
                    text = t[t.index("[client.admin]"):]
                    break
    m = re.search(r"key\s*=\s*(\S+)", text)
    assert m, "no client.admin key in the dev cluster's keyrings"
    return m.group(1)


@pytest.fixture
def image(cluster, run_dir):
    name = uniq("ctl")
    prbd(cluster, "create", "--size", "16M", f"rbd/{name}")
    made = []
    yield name, made
    for dev in made:
        with contextlib.suppress(Exception):
            prbd(cluster, "unmap", dev, check=False)
    prbd(cluster, "rm", f"rbd/{name}", check=False)


def test_secret_is_not_in_the_daemon_environment_argv_or_log(cluster, image):
    name, made = image
    key = _admin_key(cluster)
    dev = pmap(cluster, f"rbd/{name}", "-o", f"secret={key},keep_log")
    made.append(dev)
    rec = control.find_mappings(dev)[0]
    pid = rec["pid"]
    for what in ("environ", "cmdline"):
        with open(f"/proc/{pid}/{what}", "rb") as f:
            data = f.read()
        assert key.encode() not in data, what
        assert b"PYCEPH_MAP_SPEC=" not in data
    with open(f"/proc/{pid}/comm") as f:
        assert f.read().strip() == "pyceph-map"
    info = control.info(dev)
    assert key not in repr(info) and info["name"] == name and info["pool"] == "rbd"
    assert info["size"] == 16 * MiB and info["image_id"] and info["client_id"].startswith("client")
    prbd(cluster, "unmap", dev)
    made.remove(dev)
    log = rec.get("log")
    if log and os.path.exists(log):
        assert key not in open(log, errors="replace").read()


def test_configure_two_settings_atomically_on_a_live_rados_client(cluster, image):
    name, made = image
    dev = pmap(cluster, f"rbd/{name}")
    made.append(dev)
    before = control.info(dev)["settings"]
    assert before == {"osd_request_timeout": 0.0, "queue_depth": 64}
    assert control.configure(dev, {"queue_depth": "32", "osd_request_timeout": "30"}) == {
        "queue_depth": 32, "osd_request_timeout": 30.0}
    assert control.info(dev)["settings"] == {"osd_request_timeout": 30.0, "queue_depth": 32}
    # one bad value: neither changes
    with pytest.raises(ctlproto.ControlError) as ei:
        control.configure(dev, {"queue_depth": "8", "osd_request_timeout": "-1"})
    assert ei.value.status == ctlproto.E_BAD_VALUE and "osd_request_timeout" in ei.value.message
    with pytest.raises(ctlproto.ControlError) as ei:
        control.configure(dev, {"osd_request_timeout": "5", "exclusive": "1"})
    assert ei.value.status == ctlproto.E_UNKNOWN_SETTING
    assert control.info(dev)["settings"] == {"osd_request_timeout": 30.0, "queue_depth": 32}
    # through the CLI function `prbd device config` dispatches to
    p = argparse.ArgumentParser()
    device_config.add_device_config_parser(p.add_subparsers())
    args = p.parse_args(["config", dev, "--set", "queue_depth=16", "--set", "osd_request_timeout=0"])
    assert args.func(args) == 0
    assert control.info(dev)["settings"] == {"osd_request_timeout": 0.0, "queue_depth": 16}
    # data still flows with the new settings
    fd = os.open(dev, os.O_RDWR)
    try:
        os.pwrite(fd, b"x" * 4096, 0)
        os.fsync(fd)
        assert os.pread(fd, 4096, 0) == b"x" * 4096
    finally:
        os.close(fd)


def test_garbage_on_the_socket_gets_an_error_reply(cluster, image):
    name, made = image
    dev = pmap(cluster, f"rbd/{name}")
    made.append(dev)
    path = control.find_mappings(dev)[0]["socket"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(path)
        s.sendall(b"\0PCT" + bytes(8) + b"\n")
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    assert ctlproto.decode(out).get("status") == ctlproto.E_VERSION
    assert control.mapping_stats(dev)["errors"] == 0


# --- registry trust, as a real unprivileged user ------------------------------------------

_NAMED = ("import ctypes, time; ctypes.CDLL(None).prctl(15, b'pyceph-map', 0, 0, 0); "
          "print('ok', flush=True); time.sleep(120)")


def test_records_planted_by_another_user_are_refused(cluster, tmp_path):
    """User nobody plants a mapping record naming a root process (named like a map
    daemon, right start time) and a root-owned file; root's `prbd showmapped` and
    `prbd unmap` with PYCEPH_RUN_DIR pointing there refuse with one line, delete
    nothing and signal nothing."""
    import json
    import subprocess
    import sys
    import tempfile

    from pyceph.block import registry

    from .helpers import run

    planted = tempfile.mkdtemp(prefix="pyceph-planted-")
    os.chmod(planted, 0o777)
    victim_file = tmp_path / "victim"
    victim_file.write_text("root's file")
    victim = subprocess.Popen([sys.executable, "-c", _NAMED], stdout=subprocess.PIPE)
    try:
        assert victim.stdout.readline() == b"ok\n"
        rec = {"id": "5", "pool": "rbd", "namespace": "", "name": "x", "snap": "-", "device": "/dev/loop5",
               "pid": victim.pid, "pid_start": registry.process_start_time(victim.pid),
               "mountpoint": str(victim_file), "socket": f"{planted}/mappings/5.sock"}
        script = (f"mkdir -p {planted}/mappings {planted}/mnt && printf '%s' '{json.dumps(rec)}' "
                  f"> {planted}/mappings/5.json && chmod -R a+rwx {planted}/mappings {planted}/mnt")
        run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", "sh", "-c", script])
        assert os.stat(f"{planted}/mappings/5.json").st_uid == 65534
        env = dict(os.environ, PYCEPH_RUN_DIR=planted)
        for args in (["showmapped"], ["unmap", "/dev/loop5"], ["unmap", "rbd/x"], ["unmap", "-o", "force", "rbd/x"]):
            p = prbd(cluster, *args, env=env, check=False)
            err = p.stderr.decode()
            assert p.returncode != 0, (args, err)
            lines = err.strip().splitlines()
            assert len(lines) == 1 and "refusing to use it" in lines[0] and "Traceback" not in err, err
        # a directory of nobody's own (mode 0700) is refused too
        mine = tempfile.mkdtemp(prefix="pyceph-nobody-")
        os.chown(mine, 65534, 65534)
        p = prbd(cluster, "showmapped", env=dict(os.environ, PYCEPH_RUN_DIR=mine), check=False)
        assert p.returncode != 0 and "must be owned by uid 0" in p.stderr.decode()
        os.rmdir(mine)
        assert victim_file.read_text() == "root's file"
        assert victim.poll() is None  # not signalled
        # the same record inside a trusted run dir is still not acted on: its mount point is outside it
        good = tmp_path / "run"
        (good / "mappings").mkdir(mode=0o700, parents=True)
        good.chmod(0o700)
        (good / "mappings" / "5.json").write_text(json.dumps(dict(rec, socket=str(good / "mappings/5.sock"))))
        env = dict(os.environ, PYCEPH_RUN_DIR=str(good))
        p = prbd(cluster, "showmapped", "--format", "json", env=env)
        assert json.loads(p.stdout or b"[]") == []
        p = prbd(cluster, "unmap", "/dev/loop5", env=env, check=False)
        assert p.returncode != 0 and "not a pyceph-mapped device" in p.stderr.decode()
        assert victim_file.read_text() == "root's file" and victim.poll() is None
    finally:
        victim.kill()
        victim.wait()
        import shutil
        shutil.rmtree(planted, ignore_errors=True)
