"""The device model against a real cluster: ``prbd device map|unmap|list`` (also from a
/sys/bus/rbd/add string on stdin), the per-device attribute directory checked against
``rbd info``/``rbd status``/``rbd snap ls``/``ceph fsid``, ``refresh`` after another
tool's ``rbd resize``, the /dev/pyrbd links, and ``prbd rbdmap map|unmap`` with a
temporary rbdmap file, fstab and hooks.  Needs root, /dev/fuse and loop devices;
the registry ($PYCEPH_RUN_DIR) and the links dir ($PYCEPH_DEV_DIR) are private.
"""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

from pyceph.block import devattrs
from pyceph.rbd.features import FEATURE_NAMES

from .helpers import ceph, prbd, rbd, rbd_json, run, uniq

MiB = 1 << 20
#: ``rbd device list --format json`` for krbd: an array of objects with exactly these
#: string fields, in this order (src/krbd.cc dump_one_image: dump_string "id", "pool",
#: "namespace", "name", "snap", "device"; Device.cc routes `device list` to it).  Without
#: krbd the real rbd cannot list a mapping here, so the source is the reference.
LIST_FIELDS = ["id", "pool", "namespace", "name", "snap", "device"]
FEATURE_BITS = {name: bit for bit, name in FEATURE_NAMES.items()}


@pytest.fixture(scope="module")
def links(tmp_path_factory, run_dir):
    d = tmp_path_factory.mktemp("pyrbd-links")
    old = os.environ.get(devattrs.DEV_DIR_ENV)
    os.environ[devattrs.DEV_DIR_ENV] = str(d)  # inherited by the map daemons
    try:
        yield d
    finally:
        if old is None:
            os.environ.pop(devattrs.DEV_DIR_ENV, None)
        else:
            os.environ[devattrs.DEV_DIR_ENV] = old


def device_list(cluster) -> list[dict]:
    return json.loads(prbd(cluster, "device", "list", "--format", "json").stdout)


def add_string(cluster, pool: str, image: str, snap: str = "-") -> str:
    """The /sys/bus/rbd/add string for ``pool/image@snap`` as krbd's rbd map builds it
    (monitor addresses of the protocol the options ask for, name=admin; the key comes
    from the conf's keyring)."""
    mode = cluster.ms_mode
    if mode in ("secure", "crc"):
        mons = [a[3:] for a in cluster.mon_addrs if a.startswith("v2:")]
        opts = f"name=admin,ms_mode={mode}"
    else:
        mons = [a[3:] for a in cluster.mon_addrs if a.startswith("v1:")]
        opts = "name=admin"
    return f"{','.join(mons)} {opts} {pool} {image} {snap}\n"


def attrs(dev_id: str) -> dict[str, str]:
    return {n: devattrs.read_attr(dev_id, n) for n in devattrs.ATTRIBUTES}


def wait_for(pred, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def mapped(cluster, run_dir, links):
    """One image mapped with an add string read from stdin; unmapped at the end."""
    name = uniq("dev")
    rbd(cluster, "create", "--size", "32M", f"rbd/{name}")
    r = prbd(cluster, "device", "map", "--add", "-", input=add_string(cluster, "rbd", name).encode())
    dev = r.stdout.decode().strip()
    assert dev.startswith("/dev/loop") and os.path.exists(dev), r
    try:
        yield name, dev
    finally:
        prbd(cluster, "device", "unmap", dev, check=False)
        rbd(cluster, "rm", "--no-progress", f"rbd/{name}", check=False)


def test_device_list_json_shape(cluster, mapped):
    name, dev = mapped
    rows = device_list(cluster)
    mine = [r for r in rows if r["device"] == dev]
    assert mine == [{"id": dev[len("/dev/loop"):], "pool": "rbd", "namespace": "", "name": name,
                     "snap": "-", "device": dev}]
    for r in rows:
        assert list(r) == LIST_FIELDS and all(isinstance(v, str) for v in r.values())
    # the same rows as showmapped (rbd's alias of device list), and the pretty form parses
    assert rows == json.loads(prbd(cluster, "showmapped", "--format", "json").stdout)
    assert json.loads(prbd(cluster, "device", "ls", "--format", "json", "--pretty-format").stdout) == rows
    table = prbd(cluster, "device", "list").stdout.decode().splitlines()
    assert table[0].split() == ["id", "pool", "namespace", "image", "snap", "device"]


def test_attributes_match_librbd(cluster, mapped):
    name, dev = mapped
    dev_id = dev[len("/dev/loop"):]
    a = attrs(dev_id)
    info = rbd_json(cluster, "info", f"rbd/{name}")
    assert int(a["size"]) == info["size"] == _dev_size(dev)
    bits = sum(FEATURE_BITS[f] for f in info["features"])
    assert a["features"] == f"0x{bits:016x}"
    assert a["image_id"] == info["id"]
    assert (a["pool"], a["pool_ns"], a["name"], a["current_snap"]) == ("rbd", "", name, "-")
    assert a["snap_id"] == str(devattrs.CEPH_NOSNAP)
    pools = {p["pool_name"]: p["pool"] for p in json.loads(ceph(cluster, "osd", "dump", "--format", "json").stdout)
             ["pools"]}
    assert a["pool_id"] == str(pools["rbd"])
    st = os.stat(dev)
    assert (a["major"], a["minor"]) == (str(os.major(st.st_rdev)), str(os.minor(st.st_rdev)))
    assert a["cluster_fsid"] == ceph(cluster, "fsid").stdout.decode().strip()
    # our client is the image's watcher: its address and global id
    watchers = rbd_json(cluster, "status", f"rbd/{name}")["watchers"]
    assert [(w["address"], f"client{w['client']}") for w in watchers] == [(a["client_addr"], a["client_id"])]
    assert a["parent"] == "(no parent image)"
    # config_info: the add string we wrote, root-only
    assert a["config_info"] == add_string(cluster, "rbd", name).strip()
    d = devattrs.device_dir(dev_id)
    assert stat.S_IMODE(os.stat(os.path.join(d, "config_info")).st_mode) == 0o600
    assert stat.S_ISFIFO(os.stat(os.path.join(d, "refresh")).st_mode)


def test_link_points_at_the_device(cluster, mapped, links):
    name, dev = mapped
    link = links / "rbd" / name
    assert os.path.islink(link) and os.path.realpath(link) == dev
    assert os.readlink(link).startswith("../")  # relative, as udev makes them


def test_refresh_after_resize_by_rbd(cluster, mapped):
    name, dev = mapped
    dev_id = dev[len("/dev/loop"):]
    rbd(cluster, "resize", "--no-progress", "--size", "48M", f"rbd/{name}")
    fd = os.open(os.path.join(devattrs.device_dir(dev_id), "refresh"), os.O_WRONLY)
    try:
        os.write(fd, b"1\n")
    finally:
        os.close(fd)
    wait_for(lambda: devattrs.read_attr(dev_id, "size") == str(48 * MiB), what="size attribute")
    wait_for(lambda: _dev_size(dev) == 48 * MiB, what="device size")


def _dev_size(dev: str) -> int:
    fd = os.open(dev, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def test_snapshot_map_attributes_and_unmap_by_spec(cluster, mapped, links):
    name, _ = mapped
    rbd(cluster, "snap", "create", f"rbd/{name}@s1")
    dev = prbd(cluster, "device", "map", f"rbd/{name}@s1").stdout.decode().strip()
    try:
        dev_id = dev[len("/dev/loop"):]
        snaps = rbd_json(cluster, "snap", "ls", f"rbd/{name}")
        assert devattrs.read_attr(dev_id, "snap_id") == str(snaps[0]["id"])
        assert devattrs.read_attr(dev_id, "current_snap") == "s1"
        assert int(devattrs.read_attr(dev_id, "size")) == snaps[0]["size"]
        assert os.path.realpath(links / "rbd" / f"{name}@s1") == dev
    finally:
        prbd(cluster, "device", "unmap", f"rbd/{name}@s1")
    assert not os.path.lexists(links / "rbd" / f"{name}@s1")
    assert not os.path.exists(devattrs.device_dir(dev_id))
    assert dev not in [r["device"] for r in device_list(cluster)]


def test_unmap_removes_dir_and_link(cluster, run_dir, links):
    name = uniq("dev")
    rbd(cluster, "create", "--size", "8M", f"rbd/{name}")
    try:
        dev = prbd(cluster, "device", "map", f"rbd/{name}").stdout.decode().strip()
        dev_id = dev[len("/dev/loop"):]
        assert os.path.isdir(devattrs.device_dir(dev_id)) and os.path.islink(links / "rbd" / name)
        prbd(cluster, "device", "unmap", "-t", "krbd", dev)
        assert not os.path.exists(devattrs.device_dir(dev_id))
        assert not os.path.lexists(links / "rbd" / name)
    finally:
        rbd(cluster, "rm", "--no-progress", f"rbd/{name}", check=False)


def test_add_string_with_secret_in_argv_is_refused(cluster, run_dir):
    key = cluster.admin_key
    before = device_list(cluster)
    r = prbd(cluster, "device", "map", "--add-string",
             f"127.0.0.1 name=admin,secret={key} rbd nosuch", check=False)
    assert r.returncode == 22
    err = r.stderr.decode()
    assert "stdin" in err and key not in err and err.count("\n") == 1
    assert device_list(cluster) == before


def test_other_device_types_are_refused(cluster, run_dir):
    r = prbd(cluster, "device", "map", "-t", "nbd", "rbd/x", check=False)
    assert r.returncode == 95 and "use -t krbd" in r.stderr.decode()


def test_rbdmap_map_and_unmap(cluster, run_dir, links, tmp_path):
    a, b = uniq("rbdmap"), uniq("rbdmap")
    for n in (a, b):
        rbd(cluster, "create", "--size", "32M", f"rbd/{n}")
    try:
        # a file system on a, to be mounted through fstab by rbdmap map
        dev = prbd(cluster, "device", "map", f"rbd/{a}").stdout.decode().strip()
        run(["mkfs.ext4", "-q", dev])
        prbd(cluster, "device", "unmap", dev)
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        fstab = tmp_path / "fstab"
        fstab.write_text(f"{links}/rbd/{a} {mnt} ext4 noauto,_netdev 0 0\n")
        hooks = tmp_path / "rbd.d"
        (hooks / "rbd").mkdir(parents=True)
        log = tmp_path / "hook.log"
        hook = hooks / "rbd" / b
        hook.write_text(f"#!/bin/sh\necho \"$1 $2\" >> {log}\n")
        hook.chmod(0o755)
        conf = tmp_path / "rbdmap"
        conf.write_text("# RbdDevice\t\tParameters\n"
                        f"rbd/{a}\tid=admin,keyring={cluster.keyring_path}\n"
                        f"{b}\tid=admin,options='notrim'   # pool rbd by default\n")
        common = ["--file", conf, "--hooks-dir", hooks, "--fstab", fstab]
        prbd(cluster, "rbdmap", "map", *common)
        rows = {r["name"]: r for r in device_list(cluster)}
        assert {a, b} <= set(rows)
        assert os.path.ismount(mnt)
        assert log.read_text() == f"map {links}/rbd/{b}\n"
        # mapping again maps nothing new
        r = prbd(cluster, "rbdmap", "map", *common)
        assert "already mapped" in r.stderr.decode()
        assert sorted(r2["name"] for r2 in device_list(cluster) if r2["name"] in (a, b)) == sorted([a, b])
        prbd(cluster, "rbdmap", "unmap", *common)
        assert not os.path.ismount(mnt)
        assert not {a, b} & {r["name"] for r in device_list(cluster)}
        assert log.read_text() == f"map {links}/rbd/{b}\nunmap {links}/rbd/{b}\n"
        assert not os.path.lexists(links / "rbd" / a)
    finally:
        for n in (a, b):
            prbd(cluster, "device", "unmap", f"rbd/{n}", check=False)
            rbd(cluster, "rm", "--no-progress", f"rbd/{n}", check=False)


def test_stale_cleanup_removes_dir_and_link(cluster, run_dir, links):
    """A map daemon killed without a word (SIGKILL): the next `device list` removes its
    attribute directory and link with the rest of its mapping."""
    import signal

    from pyceph.block import registry

    name = uniq("dev")
    rbd(cluster, "create", "--size", "8M", f"rbd/{name}")
    try:
        dev = prbd(cluster, "device", "map", f"rbd/{name}").stdout.decode().strip()
        dev_id = dev[len("/dev/loop"):]
        rec = registry.read_record(registry.record_path(dev_id))
        assert rec is not None and os.path.isdir(devattrs.device_dir(dev_id))
        os.kill(rec["pid"], signal.SIGKILL)  # our own map daemon
        wait_for(lambda: not registry.daemon_alive(rec), what="daemon exit")
        assert dev not in [r["device"] for r in device_list(cluster)]
        assert not os.path.exists(devattrs.device_dir(dev_id))
        assert not os.path.lexists(links / "rbd" / name)
    finally:
        prbd(cluster, "device", "unmap", "-o", "force", f"rbd/{name}", check=False)
        rbd(cluster, "rm", "--no-progress", f"rbd/{name}", check=False)


def test_add_string_with_secret_on_stdin(cluster, run_dir, links):
    """The primary form: the whole add string, secret included, on stdin.  The key then
    shows in no process's argv or environment and in no attribute file."""
    from pyceph.block import registry

    key = cluster.admin_key
    name = uniq("dev")
    rbd(cluster, "create", "--size", "8M", f"rbd/{name}")
    try:
        text = add_string(cluster, "rbd", name).replace("name=admin", f"name=admin,secret={key}")
        r = prbd(cluster, "-k", "/nonexistent/keyring", "device", "map", "--add", "-", input=text.encode())
        dev = r.stdout.decode().strip()
        dev_id = dev[len("/dev/loop"):]
        rec = registry.read_record(registry.record_path(dev_id))
        pid = rec["pid"]
        for what in ("cmdline", "environ"):
            with open(f"/proc/{pid}/{what}", "rb") as f:
                assert key.encode() not in f.read(), what
        d = devattrs.device_dir(dev_id)
        for n in os.listdir(d):
            if n != "refresh":
                with open(os.path.join(d, n)) as f:
                    assert key not in f.read(), n
        assert "secret" not in devattrs.read_attr(dev_id, "config_info")
        prbd(cluster, "device", "unmap", dev)
    finally:
        prbd(cluster, "device", "unmap", f"rbd/{name}", check=False)
        rbd(cluster, "rm", "--no-progress", f"rbd/{name}", check=False)
