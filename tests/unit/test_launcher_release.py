"""Launcher pieces that need no cluster: release names, key types, the chroot argv, the
daemon's words in start errors, v1-only routes (pyceph.cluster.launcher, faultproxy)."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import pytest

from pyceph import errors
from pyceph.cluster import faultproxy as fp
from pyceph.cluster.launcher import (
    CephRelease,
    _daemon_words,
    _mon_addrvec,
    _release_of_version,
    gen_cephx_key,
    key_type_of,
)


def test_release_of_version():
    assert _release_of_version("ceph version 16.2.15 (618f440892089921c3e944a991122ddc44e60516) pacific (stable)\n") == "pacific"
    assert _release_of_version(
        "ceph version 20.2.4 (7f793731f1b39eb4f465e960113d2363c311b964) tentacle (stable - RelWithDebInfo)") == "tentacle"
    assert _release_of_version("command not found") is None


def test_key_type_of():
    assert key_type_of(gen_cephx_key()) == 1
    raw = struct.pack("<HIIH", 2, 1, 2, 32) + bytes(32)  # AES256KRB5: 32-byte secret
    assert key_type_of(base64.b64encode(raw).decode()) == 2


def test_mon_addrvec_legacy_has_only_v1():
    assert _mon_addrvec({"id": "a", "v2": 3300, "v1": 6789}) == "[v2:127.0.0.1:3300,v1:127.0.0.1:6789]"
    assert _mon_addrvec({"id": "a", "v2": None, "v1": 6789}) == "[v1:127.0.0.1:6789]"


def test_host_release_argv_unchanged_and_root_argv_chroots(tmp_path):
    assert CephRelease("pacific", None).argv(["rbd", "ls"]) == ["rbd", "ls"]
    root = tmp_path / "roots" / "reef"
    rel = CephRelease("reef", root)
    argv = rel.argv(["rbd", "-c", "/tmp/c/ceph.conf", "ls"], dir=Path("/srv/c"), cwd="/tmp/x")
    assert argv[:5] == ["unshare", "--mount", "--propagation", "private", "--"]
    # script args: root, cluster dir, working dir, then the command untouched
    assert argv[argv.index(str(root)):] == [str(root), "/srv/c", "/tmp/x", "rbd", "-c", "/tmp/c/ceph.conf", "ls"]
    # a working dir the root cannot see becomes /
    argv = rel.argv(["ceph", "-s"], dir=Path("/srv/c"), cwd="/home/u")
    assert argv[argv.index(str(root)) + 2] == "/"
    argv = rel.argv(["ceph", "-s"], dir=Path("/srv/c"), cwd="/srv/c/log")
    assert argv[argv.index(str(root)) + 2] == "/srv/c/log"


def test_key_types_per_release():
    assert CephRelease("pacific", None).default_key_type == "aes"
    assert CephRelease("reef", Path("/x")).default_key_type == "aes"
    assert CephRelease("tentacle", Path("/x")).default_key_type == "aes256k"
    with pytest.raises(errors.InvalidArgumentError, match="aes256k"):
        CephRelease("reef", Path("/x")).gen_keys(1, "aes256k")
    with pytest.raises(errors.InvalidArgumentError, match="unknown key type"):
        CephRelease("tentacle", Path("/x")).gen_keys(1, "des")
    with pytest.raises(KeyError):
        CephRelease("squid", None)


def test_daemon_words_prefer_errors_and_strip_log_prefixes():
    log = ("2026-12-07T20:17:29.776+0000 7f67714b9cc0  0 ceph version 20.2.4 (x) tentacle (stable)\n"
           "2026-12-07T20:17:29.777+0000 7f67714b9cc0 -1 monitor data directory at '/c/mon.a' does not exist: "
           "have you run 'mkfs'?\n")
    assert _daemon_words("", log) == "monitor data directory at '/c/mon.a' does not exist: have you run 'mkfs'?"
    out = ("2026-12-07T20:16:22.688+0000 7fe50aabe880 -1 monclient: Key loading failed with: unable to find a keyring\n"
           "failed to fetch mon config (--no-mon-config to skip)\n")
    assert _daemon_words(out, log) == ("monclient: Key loading failed with: unable to find a keyring | "
                                       "failed to fetch mon config (--no-mon-config to skip)")
    # no error line anywhere: the last lines it wrote
    assert _daemon_words("starting osd.0 at - osd_data /c/osd.0\n", "") == "starting osd.0 at - osd_data /c/osd.0"
    assert _daemon_words("", "") == "(it wrote nothing)"
    many = "".join(f"error {i}\n" for i in range(10))
    assert _daemon_words(many, "") == "error 7 | error 8 | error 9"


def test_routes_fall_back_to_v1_addresses():
    osd = {"osds": [{"osd": 0, "public_addrs": {"addrvec": [{"type": "v1", "addr": "127.0.0.1:6801", "nonce": 1}]}}]}
    mgr = {"active_name": "x", "active_addrs": {"addrvec": [{"type": "v2", "addr": "127.0.0.1:6810"},
                                                            {"type": "v1", "addr": "127.0.0.1:6811"}]}}
    assert fp.routes_from_dumps(osd, mgr) == {"osd.0": "127.0.0.1:6801", "mgr.x": "127.0.0.1:6810"}
