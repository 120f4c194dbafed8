"""The device model without a cluster: the /sys/bus/rbd/add string, krbd's attribute
formats (drivers/block/rbd.c ``rbd_*_show``), the attribute directory and its
``refresh`` FIFO, /dev/pyrbd links, rbdmap's file format (src/tools/rbdmap's
``create_cmd_params``), and ``prbd device``'s argument checks."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import stat
import types

import pytest

from pyceph.block import devattrs, rbdmap
from pyceph.cli import device, prbd
from pyceph.cli.common import CliError, run_main

SECRET = "AQBmZXN0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0cw=="
CONF = ["-c", "/nonexistent/ceph.conf"]


# -- the add string ---------------------------------------------------------------------------

def test_add_string_full():
    a = devattrs.parse_add_string("10.0.0.1:6789,10.0.0.2 name=admin,secret=X rbd img snap1\n")
    assert a == {"mon_addrs": ["10.0.0.1:6789", "10.0.0.2"], "options": "name=admin,secret=X",
                 "pool": "rbd", "namespace": "", "image": "img", "snap": "snap1"}


def test_add_string_head_namespace_ipv6_and_slashes():
    a = devattrs.parse_add_string("[::1]:3300/[fe80::2] name=a,_pool_ns=ns1,ms_mode=crc p i")
    assert a["mon_addrs"] == ["[::1]:3300", "[fe80::2]"]
    assert a["snap"] == "-" and a["namespace"] == "ns1" and (a["pool"], a["image"]) == ("p", "i")


@pytest.mark.parametrize("text,msg", [
    ("", "no monitor address"),
    ("1.2.3.4", "no options provided"),
    ("1.2.3.4 name=a", "no pool name"),
    ("1.2.3.4 name=a rbd", "no image name"),
    ("1.2.3.4 name=a rbd img snap extra", r"expected 'mon_addrs options pool image \[snap\]'"),
    ("1.2.3.4:99999 name=a rbd img", "bad monitor address"),
    ("::1 name=a rbd img", "IPv6 goes in brackets"),
    ("[::1 name=a rbd img", "bad monitor address"),
    (",,, name=a rbd img", "no monitor address"),
    ("1.2.3.4 name=a rbd img " + "s" * 251, "snapshot name longer"),
])
def test_add_string_errors(text, msg):
    with pytest.raises(devattrs.AddStringError, match=msg):
        devattrs.parse_add_string(text)


def test_add_string_errors_never_show_the_options():
    with pytest.raises(devattrs.AddStringError) as ei:
        devattrs.parse_add_string(f"1.2.3.4 name=a,secret={SECRET} rbd")
    assert SECRET not in str(ei.value)


def test_mon_host_of():
    assert devattrs.mon_host_of(["1.2.3.4", "5.6.7.8:7000"], msgr2=False) == "[v1:1.2.3.4:6789],[v1:5.6.7.8:7000]"
    assert devattrs.mon_host_of(["[::1]", "1.2.3.4:3301"], msgr2=True) == "[v2:[::1]:3300],[v2:1.2.3.4:3301]"


def _map_args(*argv):
    return prbd.build_parser().parse_args([*CONF, "device", "map", *argv])


def test_add_string_in_argv_with_secret_is_refused():
    args = _map_args("--add-string", f"1.2.3.4 name=a,secret={SECRET} rbd img")
    with pytest.raises(CliError) as ei:
        device.read_add_string(args)
    assert ei.value.errno == errno.EINVAL
    assert "stdin" in ei.value.text and SECRET not in ei.value.text


def test_add_string_from_stdin_and_applied():
    args = _map_args("--add", "-", "-o", "notrim")
    text = device.read_add_string(args, stdin=io.StringIO(f"1.2.3.4:6789 name=bob,secret={SECRET},_pool_ns=n "
                                                          "pool1 img1 s1\nignored\n"))
    device.apply_add_string(args, text)
    assert args.image_spec == "pool1/n/img1@s1"
    assert args.mon_host == "[v1:1.2.3.4:6789]"
    assert args.client_id == "bob"
    # krbd options go to the -o path (checked there), _pool_ns became the namespace
    assert args.options == [f"name=bob,secret={SECRET}", "notrim"]


def test_add_string_stdin_bounded():
    args = _map_args("--add", "-")
    with pytest.raises(CliError, match="longer than"):
        device.read_add_string(args, stdin=io.StringIO("x" * 5000))


def test_add_string_and_image_spec_conflict():
    args = _map_args("--add-string", "1.2.3.4 name=a rbd img", "rbd/other")
    with pytest.raises(CliError, match="give no image spec"):
        device.apply_add_string(args, device.read_add_string(args))


def test_add_string_msgr2_mode():
    args = _map_args("--add-string", "1.2.3.4 name=a,ms_mode=secure rbd img")
    device.apply_add_string(args, device.read_add_string(args))
    assert args.mon_host == "[v2:1.2.3.4:3300]"


# -- prbd device argument checks -------------------------------------------------------------

@pytest.mark.parametrize("argv", [["device", "map", "-t", "nbd", "img"], ["device", "list", "-t", "ggate"],
                                  ["device", "unmap", "-t", "foo", "/dev/loop0"]])
def test_other_device_types_refused(argv, capsys):
    args = prbd.build_parser().parse_args([*CONF, *argv])
    assert run_main("prbd", lambda: args.func(args)) == errno.EOPNOTSUPP
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "use -t krbd" in err


def test_device_map_needs_an_image(capsys):
    args = _map_args()
    assert run_main("prbd", lambda: args.func(args)) == errno.EINVAL
    assert "image name was not specified" in capsys.readouterr().err


def test_device_map_hands_on_to_prbd_map(monkeypatch, capsys):
    seen = {}
    args = _map_args("--quiesce", "--read-only", "-o", "notrim", "rbd/img@s")
    args.map_cmd = lambda a: seen.setdefault("args", a) and 0
    assert args.func(args) == 0
    a = seen["args"]
    assert (a.image_spec, a.read_only, a.options) == ("rbd/img@s", True, ["notrim"])
    assert "quiesce is not supported" in capsys.readouterr().err


def test_device_unmap_from_image_options():
    args = prbd.build_parser().parse_args([*CONF, "device", "unmap", "-p", "p1", "--image", "i", "--snap", "s"])
    got = {}
    args.unmap_cmd = lambda a: got.setdefault("t", a.target) and 0
    args.func(args)
    assert got["t"] == "p1/i@s"


def test_device_group_takes_more_commands():
    """``device config`` (another helper's) is one add_parser call on the returned group."""
    import argparse

    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--conf")
    dsub = device.add_device_parsers(sub, map_cmd=lambda a: 0, unmap_cmd=lambda a: 0, parents=[parent])
    s = dsub.add_parser("config")
    s.add_argument("dev")
    args = p.parse_args(["device", "config", "/dev/loop0", "--conf", "x"])
    assert (args.device_command, args.dev, args.conf) == ("config", "/dev/loop0", "x")


def test_device_list_json_shape(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PYCEPH_RUN_DIR", str(tmp_path))
    args = prbd.build_parser().parse_args([*CONF, "device", "list", "--format", "json"])
    assert args.func(args) == 0
    assert capsys.readouterr().out == "[]\n"
    assert device.LIST_FIELDS == ("id", "pool", "namespace", "name", "snap", "device")


# -- attribute formats -----------------------------------------------------------------------

def test_formats():
    assert devattrs.fmt_features(0x3d) == "0x000000000000003d"
    assert devattrs.fmt_client_id(4123) == "client4123"
    assert devattrs.fmt_parent([]) == "(no parent image)\n"
    chain = [
        {"pool_id": 1, "pool_name": "rbd", "pool_ns": "", "image_id": "abc", "image_name": "base",
         "snap_id": 4, "snap_name": "s1", "overlap": 1048576},
        {"pool_id": 2, "pool_name": None, "pool_ns": "ns", "image_id": "def", "snap_id": 7, "overlap": 0},
    ]
    assert devattrs.fmt_parent(chain) == (
        "pool_id 1\npool_name rbd\npool_ns \nimage_id abc\nimage_name base\nsnap_id 4\nsnap_name s1\n"
        "overlap 1048576\n\n"
        "pool_id 2\npool_name (unknown)\npool_ns ns\nimage_id def\nimage_name (unknown)\nsnap_id 7\n"
        "snap_name (unknown)\noverlap 0\n")


def test_config_info_has_no_secret():
    assert devattrs.strip_secrets(f"name=a,secret={SECRET},notrim") == "name=a,notrim"
    assert devattrs.render_options({"secret": SECRET, "notrim": True, "crc": False, "queue_depth": 64,
                                    "x": None}) == "nocrc,notrim,queue_depth=64"
    assert devattrs.config_info(["1.2.3.4:6789"], f"name=a,secret={SECRET}", "rbd", "img", "-") == \
        "1.2.3.4:6789 name=a rbd img -"


def test_link_names(monkeypatch, tmp_path):
    monkeypatch.setenv("PYCEPH_DEV_DIR", str(tmp_path))
    assert devattrs.link_path("rbd", "", "img", "-") == f"{tmp_path}/rbd/img"
    assert devattrs.link_path("p", "ns", "img", "s1") == f"{tmp_path}/p/ns/img@s1"
    with pytest.raises(ValueError):
        devattrs.link_path("..", "", "img", None)


def test_links_made_and_removed(monkeypatch, tmp_path):
    monkeypatch.setenv("PYCEPH_DEV_DIR", str(tmp_path / "links"))
    dev = str(tmp_path / "loop7")
    open(dev, "w").close()
    path = devattrs.link_path("p", "ns", "img", None)
    devattrs.make_link(path, dev)
    assert os.readlink(path) == "../../../loop7" and os.path.realpath(path) == dev
    assert not devattrs.remove_link(path, str(tmp_path / "loop8"))  # someone else's: kept
    assert devattrs.remove_link(path, dev)
    assert not os.path.exists(tmp_path / "links" / "p")  # empty dirs pruned
    assert os.path.isdir(tmp_path / "links")


def test_links_never_follow_a_planted_symlink_or_use_a_dir_others_can_write(monkeypatch, tmp_path):
    from pyceph.block import registry

    dev = str(tmp_path / "loop7")
    open(dev, "w").close()
    victim = tmp_path / "etc"
    victim.mkdir()
    links = tmp_path / "links"
    links.mkdir(mode=0o755)
    monkeypatch.setenv("PYCEPH_DEV_DIR", str(links))
    (links / "p").symlink_to(victim)  # a planted POOL -> /etc
    with pytest.raises(registry.UntrustedRunDir):
        devattrs.make_link(devattrs.link_path("p", "", "img", None), dev)
    (victim / "img").symlink_to(dev)
    with pytest.raises(registry.UntrustedRunDir):
        devattrs.remove_link(devattrs.link_path("p", "", "img", None), dev)
    assert os.listdir(victim) == ["img"]  # nothing made, replaced or removed there
    (links / "p").unlink()
    os.chmod(links, 0o777)  # a links dir anyone can write: refused
    with pytest.raises(registry.UntrustedRunDir, match="nobody"):
        devattrs.make_link(devattrs.link_path("q", "", "img", None), dev)
    assert not os.path.exists(links / "q")


def test_run_dir_below_a_root_owned_symlink_is_trusted(monkeypatch, tmp_path):
    from pyceph.block import registry

    (tmp_path / "real").mkdir(mode=0o755)
    (tmp_path / "var-run").symlink_to(tmp_path / "real")  # like /var/run -> /run
    monkeypatch.setenv(registry.RUN_DIR_ENV, str(tmp_path / "var-run" / "pyceph"))
    assert registry.subdir("mappings") == str(tmp_path / "var-run" / "pyceph" / "mappings")
    os.chmod(tmp_path / "real", 0o777)  # the link's target writable by others: refused
    with pytest.raises(registry.UntrustedRunDir, match="writable by others"):
        registry.subdir("mappings")


class _FakeImage:
    """The AsyncImage attributes DeviceAttrs reads."""

    def __init__(self):
        self.image_id, self.snap_id, self._features = "1019f54b837e", devattrs.CEPH_NOSNAP, 0x3d
        self.ioctx = types.SimpleNamespace(pool_id=3)
        self.parent = None
        self.refreshed = 0

    def features(self):
        return self._features

    async def refresh(self):
        self.refreshed += 1
        self._features = 0x1


class _FakeRados:
    monc = types.SimpleNamespace(config=types.SimpleNamespace(
        mon_addrs=[], name=types.SimpleNamespace(id="admin")))

    def get_addrs(self):
        return "127.0.0.1:0/123"

    def get_instance_id(self):
        return 4123

    def get_fsid(self):
        return "785cc3be-8cb7-4839-a80e-3a9a4bffa91e"


def test_attribute_dir_and_refresh_fifo(monkeypatch, tmp_path):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("PYCEPH_RUN_DIR", str(run))
    monkeypatch.setenv("PYCEPH_DEV_DIR", str(tmp_path / "links"))
    img = _FakeImage()
    blk = types.SimpleNamespace(size=1 << 26, image=img, rados=_FakeRados())
    spec = {"pool": "rbd", "namespace": "", "name": "img1", "snap": "-",
            "options": {"secret": SECRET, "notrim": True}}

    async def go():
        refreshed = asyncio.Event()
        a = devattrs.DeviceAttrs("7", "/dev/null", spec, blk)

        async def on_refresh():
            await img.refresh()
            refreshed.set()

        a.on_refresh = on_refresh
        await a.create()
        d = run / "devices" / "7"
        vals = {n: devattrs.read_attr("7", n) for n in devattrs.ATTRIBUTES}
        assert vals == {
            "size": str(1 << 26), "features": "0x000000000000003d", "major": "1", "minor": "3",
            "pool": "rbd", "pool_id": "3", "pool_ns": "", "name": "img1", "image_id": "1019f54b837e",
            "current_snap": "-", "snap_id": "18446744073709551614", "client_addr": "127.0.0.1:0/123",
            "client_id": "client4123", "cluster_fsid": "785cc3be-8cb7-4839-a80e-3a9a4bffa91e",
            "config_info": "- name=admin,notrim rbd img1 -", "parent": "(no parent image)"}
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o755
        assert stat.S_IMODE(os.stat(d / "config_info").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(d / "size").st_mode) == 0o644
        st = os.stat(d / "refresh")
        assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o200
        assert not any(SECRET in (d / n).read_text() for n in os.listdir(d) if n != "refresh")
        assert os.path.realpath(tmp_path / "links" / "rbd" / "img1") == "/dev/null"
        # echo 1 > refresh
        fd = os.open(d / "refresh", os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b"1\n")
        os.close(fd)
        await asyncio.wait_for(refreshed.wait(), 10)
        await a._refreshing
        assert img.refreshed == 1 and devattrs.read_attr("7", "features") == "0x0000000000000001"
        blk.size = 1 << 27
        a.sync()
        assert devattrs.read_attr("7", "size") == str(1 << 27)
        a.remove()
        assert not d.exists() and not (tmp_path / "links" / "rbd").exists()

    asyncio.run(go())


def test_stale_cleanup_only_removes_its_own(monkeypatch, tmp_path):
    monkeypatch.setenv("PYCEPH_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("PYCEPH_DEV_DIR", str(tmp_path / "links"))
    d = tmp_path / "devices" / "3"
    d.mkdir(parents=True)
    (d / ".pid").write_text("111\n")
    devattrs.make_link(devattrs.link_path("rbd", "", "i", "-"), "/dev/loop3")
    rec = {"id": "3", "pid": 222, "pool": "rbd", "namespace": "", "name": "i", "snap": "-", "device": "/dev/loop9"}
    devattrs.cleanup_stale(rec)
    assert d.exists() and os.path.islink(tmp_path / "links" / "rbd" / "i")
    devattrs.cleanup_stale(dict(rec, pid=111, device="/dev/loop3"))
    assert not d.exists() and not os.path.lexists(tmp_path / "links" / "rbd" / "i")


# -- rbdmap -----------------------------------------------------------------------------------

@pytest.mark.parametrize("params,argv", [
    ("id=admin,keyring=/etc/ceph/ceph.client.admin.keyring",
     ["--id", "admin", "--keyring", "/etc/ceph/ceph.client.admin.keyring"]),
    ("id=a,options='noshare,queue_depth=64'", ["--id", "a", "--options", "noshare,queue_depth=64"]),
    ("read-only,exclusive", ["--read-only", "--exclusive"]),
    ("id=a # a comment, id=b", ["--id", "a"]),
    ("", []),
])
def test_rbdmap_cmd_params(params, argv):
    assert rbdmap.cmd_params(params) == argv


def test_rbdmap_file():
    text = ("# RbdDevice\t\tParameters\n"
            "#poolname/imagename\tid=client,keyring=/etc/ceph/ceph.client.keyring\n"
            "\n"
            "rbd/vol1\tid=admin,keyring=/k\n"
            "   vol2   id=b\n"
            "p/ns/vol3@s\n")
    got = rbdmap.parse_rbdmap(text)
    assert got == [rbdmap.Entry("rbd/vol1", ("--id", "admin", "--keyring", "/k"), 4),
                   rbdmap.Entry("rbd/vol2", ("--id", "b"), 5),
                   rbdmap.Entry("p/ns/vol3@s", (), 6)]


def test_rbdmap_refuses_a_secret_in_params(monkeypatch, tmp_path):
    monkeypatch.setenv("PYCEPH_RUN_DIR", str(tmp_path))
    logs = []
    entries = rbdmap.parse_rbdmap(f"rbd/v options='secret={SECRET}'\n")
    opts = rbdmap.Options(map_argv=lambda e: pytest.fail("must not run"))
    assert rbdmap.do_map(entries, opts, logs.append) == 1
    assert any("secret= in rbdmap parameters is refused" in m for m in logs)
    assert not any(SECRET in m for m in logs)


def test_rbdmap_fstab(tmp_path):
    fstab = tmp_path / "fstab"
    fstab.write_text("# c\n/dev/pyrbd/rbd/v1 /mnt/v1 ext4 noauto,_netdev 0 0\n")
    assert rbdmap.fstab_has("/dev/pyrbd/rbd/v1", str(fstab))
    assert not rbdmap.fstab_has("/dev/pyrbd/rbd/v2", str(fstab))


def test_rbdmap_missing_file_is_a_warning(tmp_path, capsys):
    args = prbd.build_parser().parse_args([*CONF, "rbdmap", "map", "--file", str(tmp_path / "none")])
    assert args.func(args) == 0
    assert "no " in capsys.readouterr().err


def test_unit_file():
    text = device.unit_text()
    for line in ("Before=remote-fs-pre.target", "After=network-online.target ceph.target",
                 "Wants=network-online.target remote-fs-pre.target", "Type=oneshot", "RemainAfterExit=yes",
                 "ExecStart=/usr/local/bin/prbd rbdmap map", "ExecStop=/usr/local/bin/prbd rbdmap unmap-all",
                 "WantedBy=multi-user.target"):
        assert line in text.splitlines()


def test_rbdmap_counts_failed_lines(monkeypatch, tmp_path):
    monkeypatch.setenv("PYCEPH_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("PYCEPH_DEV_DIR", str(tmp_path / "links"))
    logs = []
    entries = rbdmap.parse_rbdmap("rbd/a id=x\nb\n")
    opts = rbdmap.Options(map_argv=lambda e: ["sh", "-c", "echo 'prbd: map failed: (2) nope' >&2; exit 2"],
                          hooks_dir=str(tmp_path / "hooks"), fstab=str(tmp_path / "fstab"))
    assert rbdmap.do_map(entries, opts, logs.append) == 2
    assert "failed to map 'rbd/a': prbd: map failed: (2) nope" in logs
    # nothing mapped: unmap skips every line
    assert rbdmap.do_unmap(entries, opts, logs.append) == 0
    assert "'rbd/b' not mapped, skipping unmap" in logs


def test_rbdmap_lines_whose_map_command_would_carry_a_secret_are_refused(tmp_path, monkeypatch):
    from pyceph.block import rbdmap

    carries = [rbdmap.cmd_params(line) for line in (
        f"id=admin,secret={SECRET}", f"id=admin,key={SECRET}", f"options='secret={SECRET}'",
        f"options='key={SECRET}'", "secretfile=/etc/ceph/admin.secret")]
    assert all(rbdmap._carries_secret(a) for a in carries), carries
    clean = [rbdmap.cmd_params(line) for line in (
        "id=admin,keyring=/etc/ceph/ceph.client.admin.keyring", "options='key=client.vm1,queue_depth=8'", "")]
    assert not any(rbdmap._carries_secret(a) for a in clean), clean
    # do_map refuses such a line before running anything, and does not repeat the secret
    ran, logged = [], []
    entry = rbdmap.Entry(dev="rbd/img", args=carries[1], lineno=3)
    opts = rbdmap.Options(map_argv=lambda e: ran.append(e) or ["false"])
    (tmp_path / "run").mkdir(mode=0o700)
    monkeypatch.setenv("PYCEPH_RUN_DIR", str(tmp_path / "run"))
    assert rbdmap.do_map([entry], opts, logged.append) == 1
    assert ran == [] and not any(SECRET in x or SECRET.rstrip("=") in x for x in logged), logged
