"""``prbd`` without a cluster: argument parsing, rbd's table/JSON/size formats, error
lines and exit codes, progress lines.  Expected texts are what Pacific's ``rbd``
printed for the same data (captured on the dev cluster), byte for byte."""

from __future__ import annotations

import errno
import io
import json

import pytest

from pyceph import errors
from pyceph.cli import prbd
from pyceph.cli.common import CliError, Progress, TextTable, fmt_addr, fmt_legacy_addr, fmt_size, run_main
from pyceph.types import ADDR_TYPE_ANY, ADDR_TYPE_MSGR2, EntityAddr

CONF = ["-c", "/nonexistent/ceph.conf"]


def parse(*argv):
    return prbd.build_parser().parse_args([*CONF, *argv])


# -- sizes, addresses, tables ------------------------------------------------------------

@pytest.mark.parametrize("n,text", [
    (0, "0 B"), (5, "5 B"), (1023, "1023 B"), (1024, "1 KiB"), (5 << 20, "5 MiB"), (94 << 20, "94 MiB"),
    (1536 << 20, "1.5 GiB"), (10239, "10 KiB"), ((3 << 20) + 1, "3.0 MiB"), (1 << 40, "1 TiB"),
    (536870912, "512 MiB"), ((1 << 20) + (1 << 19), "1.5 MiB"), (123456789, "118 MiB"),
])
def test_fmt_size_is_byte_u_t(n, text):
    assert fmt_size(n) == text


def test_addresses_as_ceph_prints_them():
    a = EntityAddr(ADDR_TYPE_ANY, 1001640428, "127.0.0.1", 0)
    assert fmt_addr(a) == "127.0.0.1:0/1001640428"  # rbd status: type ANY has no prefix
    assert fmt_legacy_addr(a) == "127.0.0.1:0/1001640428"
    b = EntityAddr(ADDR_TYPE_MSGR2, 7, "::1", 6800)
    assert fmt_addr(b) == "v2:[::1]:6800/7"
    assert fmt_legacy_addr(b) == "[::1]:6800/7"  # rbd lock ls: get_legacy_str()
    assert fmt_legacy_addr("v2:10.0.0.1:0/5") == "10.0.0.1:0/5"


def test_text_table_matches_rbd_lock_ls():
    t = TextTable()
    for h in ("Locker", "ID", "Address"):
        t.define_column(h, "<", "<")
    t.add_row("client.4208", "mylock", "127.0.0.1:0/1001640428")
    assert t.render() == ("Locker       ID      Address               \n"
                          "client.4208  mylock  127.0.0.1:0/1001640428\n")


def test_text_table_right_aligned_cells():
    t = TextTable()
    t.define_column("NAME", "<", "<")
    t.define_column("PROVISIONED", "<", ">")
    t.define_column("USED", "<", ">")
    t.add_row("h7-ref@s1", "20 MiB", "0 B")
    t.add_row("h7-ref", "20 MiB", "0 B")
    t.add_row("<TOTAL>", "20 MiB", "0 B")
    assert t.render() == ("NAME       PROVISIONED  USED\n"
                          "h7-ref@s1       20 MiB   0 B\n"
                          "h7-ref          20 MiB   0 B\n"
                          "<TOTAL>         20 MiB   0 B\n")
    with pytest.raises(ValueError):
        t.add_row("too", "few")


# -- errors and exit codes -----------------------------------------------------------------

def test_cli_error_line_like_rbd():
    e = CliError("error opening image x", errors.ImageNotFound("image 'x' not found", errno=errno.ENOENT))
    assert e.errno == 2
    assert e.text == ("error opening image x: (2) No such file or directory "
                      "[ImageNotFound: image 'x' not found]")
    plain = CliError("shrinking an image is only allowed with the --allow-shrink flag", errno=errno.EINVAL)
    assert plain.errno == 22 and plain.text.startswith("shrinking")


def test_run_main_exit_codes(capsys):
    def fail():
        raise CliError("rollback failed", errors.ObjectNotFound("snapshot 'x' not found"))

    assert run_main("prbd", fail) == errno.ENOENT
    err = capsys.readouterr().err
    assert err == "prbd: rollback failed: (2) No such file or directory [ObjectNotFound: snapshot 'x' not found]\n"

    def auth():
        raise errors.AuthError("client.admin: bad key")

    # connection/auth failures keep prbd's one-line form and exit 1
    assert run_main("prbd", auth) == 1
    assert capsys.readouterr().err == "prbd: AuthError: client.admin: bad key\n"


def test_failing_wraps_typed_errors_only():
    with pytest.raises(CliError) as ei:
        with prbd.failing("flatten error"):
            raise errors.InvalidArgumentError("image has no parent")
    assert ei.value.errno == 22 and ei.value.text.startswith("flatten error: (22) Invalid argument")
    with pytest.raises(KeyError):
        with prbd.failing("x"):
            raise KeyError("not a pyceph error")


# -- image specs and options ------------------------------------------------------------------

def test_spec_snapshot_presence_rules():
    a = parse("snap", "create", "rbd/ns/img@s1")
    s = prbd._spec(a, prbd.SNAP_REQUIRED)
    assert (s.pool, s.namespace, s.image, s.snap) == ("rbd", "ns", "img", "s1")
    with pytest.raises(CliError, match="snapshot name was not specified") as ei:
        prbd._spec(parse("snap", "create", "img"), prbd.SNAP_REQUIRED)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(CliError, match="snapshot name specified for a command that doesn't use it"):
        prbd._spec(parse("snap", "ls", "img@s"), prbd.SNAP_NONE)
    with pytest.raises(CliError, match="image name was not specified"):
        prbd._spec(parse("snap", "ls"), prbd.SNAP_NONE)
    # --pool/--image/--snap options instead of a spec
    s = prbd._spec(parse("snap", "rollback", "--pool", "p2", "--image", "i", "--snap", "s"), prbd.SNAP_REQUIRED)
    assert (s.pool, s.image, s.snap) == ("p2", "i", "s")


def test_feature_lists():
    a = parse("create", "-s", "1G", "--image-feature", "layering,exclusive-lock", "--image-feature", "object-map",
              "img")
    assert prbd._features(a) == 1 | 4 | 8
    assert prbd._features(parse("create", "-s", "1G", "img")) is None  # core default (Pacific's 0x3d)
    assert prbd.parse_feature_list(["fast-diff", "deep-flatten", "1"]) == 0x10 | 0x20 | 1
    with pytest.raises(CliError, match="'nosuch'") as ei:
        prbd.parse_feature_list(["nosuch"])
    assert ei.value.errno == errno.EINVAL


@pytest.mark.parametrize("argv,func", [
    (["snap", "create", "i@s"], "cmd_snap_create"), (["snap", "add", "i@s"], "cmd_snap_create"),
    (["snap", "ls", "i"], "cmd_snap_ls"), (["snap", "list", "i"], "cmd_snap_ls"),
    (["snap", "rm", "i@s"], "cmd_snap_rm"), (["snap", "remove", "--force", "i@s"], "cmd_snap_rm"),
    (["snap", "purge", "i"], "cmd_snap_purge"), (["snap", "rollback", "i@s"], "cmd_snap_rollback"),
    (["snap", "revert", "i@s"], "cmd_snap_rollback"), (["snap", "protect", "i@s"], "cmd_snap_protect"),
    (["snap", "unprotect", "i@s"], "cmd_snap_unprotect"), (["snap", "rename", "i@a", "i@b"], "cmd_snap_rename"),
    (["clone", "p@s", "c"], "cmd_clone"), (["flatten", "c"], "cmd_flatten"),
    (["children", "--all", "--descendants", "p@s"], "cmd_children"),
    (["resize", "--size", "1G", "--allow-shrink", "i"], "cmd_resize"),
    (["feature", "enable", "i", "object-map", "fast-diff"], "cmd_feature"),
    (["feature", "disable", "i", "exclusive-lock"], "cmd_feature"),
    (["lock", "ls", "i"], "cmd_lock_ls"), (["lock", "list", "i"], "cmd_lock_ls"),
    (["lock", "add", "i", "id1"], "cmd_lock_add"), (["lock", "rm", "i", "id1", "client.1"], "cmd_lock_rm"),
    (["status", "i"], "cmd_status"), (["du"], "cmd_du"), (["disk-usage", "i@s"], "cmd_du"),
    (["diff", "--from-snap", "s", "--whole-object", "i"], "cmd_diff"),
    (["object-map", "check", "i"], "cmd_object_map"), (["object-map", "rebuild", "i"], "cmd_object_map"),
    (["map", "-o", "exclusive,notrim", "i"], "cmd_map"), (["rm", "--no-progress", "i"], "cmd_rm"),
])
def test_subcommands_parse(argv, func):
    a = parse(*argv)
    assert a.func.__name__ == func


def test_subcommand_options():
    a = parse("feature", "disable", "rbd/i", "object-map", "fast-diff")
    assert a.feature_action == "disable" and a.features == ["object-map", "fast-diff"]
    a = parse("clone", "--rbd-default-clone-format", "2", "--image-feature", "layering", "p@s", "p2/c")
    assert a.clone_format == "2" and a.dest_spec == "p2/c" and a.image_spec == "p@s"
    a = parse("object-map", "check", "--no-progress", "i@s")
    assert a.om_action == "check" and a.no_progress
    a = parse("resize", "-s", "10G", "i")
    assert a.size == "10G" and not a.allow_shrink
    a = parse("children", "-a", "p@s", "--format", "json", "--pretty-format")
    assert a.all and a.format == "json" and a.pretty_format
    # client options also after the subcommand, as rbd takes them
    a = prbd.build_parser().parse_args(["snap", "ls", "i", "-c", "/x.conf", "--id", "foo"])
    assert a.conf == "/x.conf" and a.client_id == "foo"


def test_map_request_options():
    spec = prbd._spec(parse("map", "rbd/img"), prbd.SNAP_PERMITTED)
    r = prbd.map_request(spec, ["exclusive,notrim", "queue_depth=128"])
    assert r["options"] == {"exclusive": True, "notrim": True, "queue_depth": 128}
    assert not r["read_only"] and r["snap"] == "-"
    snap = prbd._spec(parse("map", "rbd/img@s1"), prbd.SNAP_PERMITTED)
    r = prbd.map_request(snap, [])
    assert r["read_only"] and r["snap"] == "s1"  # snapshots map read-only
    assert prbd.map_request(spec, ["ro"])["read_only"]
    with pytest.raises(CliError, match="mutually exclusive"):
        prbd.map_request(spec, ["ro,exclusive"])


# -- progress --------------------------------------------------------------------------------

def test_progress_not_a_tty_prints_final_line_only():
    buf = io.StringIO()
    with Progress("Rolling back to snapshot", True, stream=buf, tty=False) as p:
        for i in range(1, 6):
            p.update(i, 5)
    assert buf.getvalue() == "Rolling back to snapshot: 100% complete...done.\n"


def test_progress_failure_and_no_progress():
    buf = io.StringIO()
    with pytest.raises(RuntimeError):
        with Progress("Image flatten", True, stream=buf, tty=False) as p:
            p.update(1, 2)
            raise RuntimeError("boom")
    assert buf.getvalue() == "Image flatten: 50% complete...failed.\n"
    buf = io.StringIO()
    with Progress("Removing image", False, stream=buf, tty=False) as p:
        p.update(1, 1)
    assert buf.getvalue() == ""


def test_progress_tty_uses_rich_then_rbd_line():
    buf = io.StringIO()
    p = Progress("Resizing image", True, stream=buf, tty=True)
    with p:
        p.update(3, 4)
        assert p._bar is not None  # a rich bar is live while running
    assert p._bar is None
    assert buf.getvalue().endswith("Resizing image: 100% complete...done.\n")


# -- output of commands (core calls replaced by canned results) ------------------------------

def run_cmd(monkeypatch, capsys, argv, result, runner="_run"):
    monkeypatch.setattr(prbd, runner, lambda *a, **k: result)
    a = parse(*argv)
    rc = a.func(a)
    out = capsys.readouterr()
    return rc, out.out, out.err


SNAPS = [{"id": 4, "name": "s1", "size": 20 << 20, "protected": True, "timestamp": "Sat Nov 21 11:10:19 2026"}]


def test_snap_ls_output(monkeypatch, capsys):
    rc, out, _ = run_cmd(monkeypatch, capsys, ["snap", "ls", "h7-ref"], SNAPS, "_with_image")
    assert rc == 0
    assert out == ("SNAPID  NAME  SIZE    PROTECTED  TIMESTAMP               \n"
                   "     4  s1    20 MiB  yes        Sat Nov 21 11:10:19 2026\n")
    _, out, _ = run_cmd(monkeypatch, capsys, ["snap", "ls", "h7-ref", "--format", "json"], SNAPS, "_with_image")
    assert out == ('[{"id":4,"name":"s1","size":20971520,"protected":"true",'
                   '"timestamp":"Sat Nov 21 11:10:19 2026"}]\n')
    _, out, _ = run_cmd(monkeypatch, capsys, ["snap", "ls", "h7-ref"], [], "_with_image")
    assert out == ""


def test_list_user_snaps_filters_namespaces_and_formats_time():
    class FakeImg:
        async def list_snaps(self):
            return [
                {"id": 7, "name": "b", "size": 1, "namespace": 0, "protected": False, "timestamp": (0, 0)},
                {"id": 5, "name": "a", "size": 2, "namespace": 0, "protected": True, "timestamp": (1700000000, 5)},
                {"id": 9, "name": "x", "size": 3, "namespace": 1, "protected": False, "timestamp": (1, 0)},
            ]

    import asyncio
    import time

    snaps = asyncio.run(prbd.list_user_snaps(FakeImg()))
    assert [s["id"] for s in snaps] == [5, 7]  # by id, no trash/group snapshots
    assert snaps[0]["timestamp"] == time.ctime(1700000000) and snaps[1]["timestamp"] == ""
    assert snaps[0]["protected"] is True


def test_snap_ls_all_namespaces(monkeypatch, capsys):
    snaps = [dict(SNAPS[0], namespace={"type": "user"}),
             {"id": 6, "name": "2742a78e", "size": 8 << 20, "protected": False, "timestamp": "Sat Nov 21 11:41:04 2026",
              "namespace": {"type": "trash", "original_namespace_type": "user", "original_name": "s"}}]
    _, out, _ = run_cmd(monkeypatch, capsys, ["snap", "ls", "--all", "img"], snaps, "_with_image")
    assert out.splitlines()[0].rstrip().endswith("TIMESTAMP                 NAMESPACE")
    assert out.splitlines()[2].endswith("Sat Nov 21 11:41:04 2026  trash (user s)")  # rbd 20's form
    _, out, _ = run_cmd(monkeypatch, capsys, ["snap", "ls", "-a", "img", "--format", "json"], snaps, "_with_image")
    assert json.loads(out)[1]["namespace"] == {"type": "trash", "original_namespace_type": "user", "original_name": "s"}


def test_children_output(monkeypatch, capsys):
    kids = [{"pool": "rbd", "pool_namespace": "", "image": "c1", "id": "10aa", "trash": False},
            {"pool": "rbd", "pool_namespace": "ns", "image": "c2", "id": "10bb", "trash": True}]
    _, out, _ = run_cmd(monkeypatch, capsys, ["children", "p@s"], kids)
    assert out == "rbd/c1\n"
    _, out, _ = run_cmd(monkeypatch, capsys, ["children", "--all", "p@s"], kids)
    assert out == "rbd/c1\nrbd/ns/c2 (trash 10bb)\n"
    _, out, _ = run_cmd(monkeypatch, capsys, ["children", "p@s", "--format", "json"], kids)
    assert json.loads(out) == [{"pool": "rbd", "pool_namespace": "", "image": "c1"}]
    _, out, _ = run_cmd(monkeypatch, capsys, ["children", "-a", "p@s", "--format", "json"], kids)
    assert out.startswith('[{"pool":"rbd","pool_namespace":"","image":"c1","id":"10aa","trash":false}')


def du_result(rows, prov, used, count, pool_wide=False):
    """What cmd_du's body returns: rbd_diff.disk_usage_report's document and totals."""
    doc = {"images": rows}
    if pool_wide:
        doc.update(total_provisioned_size=prov, total_used_size=used)
    return doc, {"provisioned": prov, "used": used, "count": count}


def test_du_output(monkeypatch, capsys):
    rows = [{"name": "h7-ref2", "id": "10366bdfc3a3", "snapshot": "s1", "snapshot_id": 5,
             "provisioned_size": 5 << 20, "used_size": 5 << 20},
            {"name": "h7-ref2", "id": "10366bdfc3a3", "provisioned_size": 5 << 20, "used_size": 0}]
    rc, out, _ = run_cmd(monkeypatch, capsys, ["du", "h7-ref2"], du_result(rows, 5 << 20, 5 << 20, 2))
    assert rc == 0 and out == ("NAME        PROVISIONED  USED \n"
                               "h7-ref2@s1        5 MiB  5 MiB\n"
                               "h7-ref2           5 MiB    0 B\n"
                               "<TOTAL>           5 MiB  5 MiB\n")
    _, out, _ = run_cmd(monkeypatch, capsys, ["du", "h7-ref2", "--format", "json"],
                        du_result(rows, 5 << 20, 5 << 20, 2))
    assert json.loads(out) == {"images": rows}  # no totals for one image, as rbd
    _, out, _ = run_cmd(monkeypatch, capsys, ["du", "--format", "json"], du_result(rows, 5 << 20, 5 << 20, 2, True))
    assert list(json.loads(out)) == ["images", "total_provisioned_size", "total_used_size"]
    # --merge-snapshots: one row, but rbd still totals when it measured several
    merged = [dict(rows[1], used_size=5 << 20)]
    _, out, _ = run_cmd(monkeypatch, capsys, ["du", "--merge-snapshots", "h7-ref2"],
                        du_result(merged, 5 << 20, 5 << 20, 2))
    assert out.endswith("<TOTAL>        5 MiB  5 MiB\n")
    _, out, _ = run_cmd(monkeypatch, capsys, ["du", "h7-ref2@s1"], du_result(rows[:1], 5 << 20, 5 << 20, 1))
    assert "<TOTAL>" not in out
    _, out, _ = run_cmd(monkeypatch, capsys, ["du", "h7-ref2@s1"], du_result([], 0, 0, 0))
    assert out == ""  # --from-snap equal to the snapshot: rbd prints nothing


def test_diff_output(monkeypatch, capsys):
    ext = [{"offset": 0, "length": 4194304, "exists": "true"},
           {"offset": 4194304, "length": 1048576, "exists": "false"}]  # rbd_diff.diff_list's entries
    _, out, _ = run_cmd(monkeypatch, capsys, ["diff", "h7-ref2"], ext, "_with_image")
    assert out == "Offset   Length   Type\n0        4194304  data\n4194304  1048576  zero\n"
    _, out, _ = run_cmd(monkeypatch, capsys, ["diff", "h7-ref2", "--format", "json", "--pretty-format"], ext,
                        "_with_image")
    assert json.loads(out)[1] == {"offset": 4194304, "length": 1048576, "exists": "false"}
    assert out.startswith('[\n    {\n        "offset": 0,')
    _, out, _ = run_cmd(monkeypatch, capsys, ["diff", "h7-ref2"], [], "_with_image")
    assert out == ""  # rbd prints no header for an empty diff


def test_lock_ls_and_status_output(monkeypatch, capsys):
    lk = ([{"id": "auto 140381073182800", "locker": "client.4522", "address": "127.0.0.1:0/4201019828"}], True, "")
    _, out, _ = run_cmd(monkeypatch, capsys, ["lock", "ls", "i"], lk, "_with_image")
    assert out == ("There is 1 exclusive lock on this image.\n"
                   "Locker       ID                    Address               \n"
                   "client.4522  auto 140381073182800  127.0.0.1:0/4201019828\n")
    _, out, _ = run_cmd(monkeypatch, capsys, ["lock", "ls", "i"], ([], False, ""), "_with_image")
    assert out == ""
    _, out, _ = run_cmd(monkeypatch, capsys, ["lock", "ls", "i", "--format", "json"], ([], False, ""),
                        "_with_image")
    assert out == "[]\n"

    class W:
        from pyceph.types import EntityNameT
        name = EntityNameT(8, 4522)
        cookie = 140381073182800
        addr = EntityAddr(ADDR_TYPE_ANY, 4201019828, "127.0.0.1", 0)

    _, out, _ = run_cmd(monkeypatch, capsys, ["status", "i"], [W()], "_with_image")
    assert out == "Watchers:\n\twatcher=127.0.0.1:0/4201019828 client.4522 cookie=140381073182800\n"
    _, out, _ = run_cmd(monkeypatch, capsys, ["status", "i", "--format", "json"], [W()], "_with_image")
    assert out == '{"watchers":[{"address":"127.0.0.1:0/4201019828","client":4522,"cookie":140381073182800}]}\n'
    _, out, _ = run_cmd(monkeypatch, capsys, ["status", "i"], [], "_with_image")
    assert out == "Watchers: none\n"


def test_info_output_with_parent(monkeypatch, capsys):
    info = {"name": "c", "id": "1042dbd82ca1", "size": 5 << 20, "objects": 2, "order": 22,
            "object_size": 4 << 20, "snapshot_count": 0, "block_name_prefix": "rbd_data.1042dbd82ca1",
            "format": 2, "features": ["layering", "exclusive-lock"], "op_features": [], "flags": [],
            "create_timestamp": "Sat Nov 21 11:10:20 2026",
            "parent": {"pool": "rbd", "pool_namespace": "", "image": "p", "id": "10366bdfc3a3",
                       "snapshot": "s1", "trash": False, "overlap": 5 << 20}}
    _, out, _ = run_cmd(monkeypatch, capsys, ["info", "c"], info, "_with_image")
    assert out.endswith("\tcreate_timestamp: Sat Nov 21 11:10:20 2026\n\tparent: rbd/p@s1\n\toverlap: 5 MiB\n")
    assert "\top_features: \n" in out
    snapinfo = dict(info, protected="true")
    del snapinfo["parent"]
    _, out, _ = run_cmd(monkeypatch, capsys, ["info", "p@s1"], snapinfo, "_with_image")
    assert out.endswith("\tprotected: True\n")


def test_resize_refuses_shrink_without_flag(monkeypatch):
    class Img:
        def size(self):
            return 20 << 20

        async def resize(self, *a, **k):  # pragma: no cover - must not be reached
            raise AssertionError("resized")

    import asyncio

    def fake_with_image(args, spec, ro, fn):
        return asyncio.run(fn(Img()))

    monkeypatch.setattr(prbd, "_with_image", fake_with_image)
    a = parse("resize", "--size", "8M", "--no-progress", "h7-x")
    with pytest.raises(CliError, match="only allowed with the --allow-shrink flag") as ei:
        a.func(a)
    assert ei.value.errno == errno.EINVAL
    a = parse("resize", "--no-progress", "h7-x")
    with pytest.raises(CliError, match="must specify --size"):
        a.func(a)


def test_json_is_compact_or_pretty(capsys):
    class A:
        pretty_format = False

    prbd._dump({"a": [1, 2]}, A())
    A.pretty_format = True
    prbd._dump({"a": []}, A())
    assert capsys.readouterr().out == '{"a":[1,2]}\n{\n    "a": []\n}\n'
