"""The CLIs and secrets (issue 9): no abbreviated long options anywhere, ``--key SECRET``
refused in one line without its value, ``--keyfile``, usage errors that never echo a
stray value, and ``prbd map`` resolving ``key=NAME`` / ``secret=`` / ``--keyfile`` in
the foreground into the spec (never into the daemon's argv or options)."""

from __future__ import annotations

import argparse
import errno
import os
import uuid

import pytest

from pyceph.auth import keyring as kr
from pyceph.auth.crypto import CryptoKey
from pyceph.cli import prbd, pyceph_cli
from pyceph.cli.common import KEY_REFUSED

SECRET = "AQBz0Dlh2PNoKRAAW2Bln1i2Bn3vJSkw3pfqpA=="


def all_parsers(p: argparse.ArgumentParser, path=()):
    yield path, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                yield from all_parsers(sp, (*path, name))


@pytest.mark.parametrize("build", [prbd.build_parser, pyceph_cli.build_parser], ids=["prbd", "pyceph"])
def test_no_parser_allows_abbreviations(build):
    parsers = list(all_parsers(build()))
    assert len(parsers) > 5
    assert [path for path, p in parsers if p.allow_abbrev] == []


def run(main, argv, capsys):
    with pytest.raises(SystemExit) as ei:
        main(argv)
    out = capsys.readouterr()
    return ei.value.code, out.out + out.err


@pytest.mark.parametrize("main,argv", [
    (prbd.main, ["--key", SECRET, "ls"]),
    (prbd.main, [f"--key={SECRET}", "ls"]),
    (prbd.main, ["ls", "--key", SECRET]),
    (prbd.main, ["snap", "ls", "--key", SECRET, "img"]),
    (prbd.main, ["map", "img", "--key", SECRET]),
    (pyceph_cli.main, ["status", "--key", SECRET]),
    (pyceph_cli.main, ["--key", SECRET, "status"]),
])
def test_key_option_refused_in_one_line(main, argv, capsys):
    code, text = run(main, ["-c", "/nonexistent/ceph.conf", *argv], capsys)
    assert code == 2
    assert text.count("\n") == 1 and KEY_REFUSED in text
    assert SECRET not in text and SECRET[:12] not in text


@pytest.mark.parametrize("main,argv,bad", [
    (prbd.main, ["--keyr", "/tmp/x", "ls"], "--keyr"),
    (prbd.main, ["--keyri=/tmp/x", "ls"], "--keyri"),
    (prbd.main, ["ls", "--keyr", "/tmp/x"], "--keyr"),
    (prbd.main, ["ls", "--for", "json"], "--for"),
    (prbd.main, ["--secret", SECRET, "ls"], "--secret"),
    (prbd.main, ["map", "img", "--read"], "--read"),
    (pyceph_cli.main, ["status", "--form", "json"], "--form"),
    (pyceph_cli.main, ["cluster", "start", "--di", "/tmp/x"], "--di"),
])
def test_abbreviations_refused(main, argv, bad, capsys):
    code, text = run(main, argv, capsys)
    assert code == 2 and text.count("\n") == 1
    assert f"unrecognized arguments: {bad}" in text
    assert SECRET not in text and "/tmp/x" not in text


def test_stray_values_are_not_echoed(capsys):
    code, text = run(prbd.main, ["-c", "/x", SECRET, "ls"], capsys)
    assert code == 2 and "invalid choice (value not shown)" in text and SECRET not in text
    code, text = run(prbd.main, ["-c", "/x", "lss"], capsys)
    assert code == 2 and "invalid choice: 'lss'" in text  # a command-like word is still shown
    code, text = run(prbd.main, ["-c", "/x", "ls", "rbd", SECRET], capsys)
    assert code == 2 and "unrecognized arguments: (and 1 other argument)" in text and SECRET not in text


def test_keyfile_option_parses():
    a = prbd.build_parser().parse_args(["--keyfile", "/k", "ls"])
    assert a.keyfile == "/k"
    a = prbd.build_parser().parse_args(["ls", "--keyfile", "/k2"])
    assert a.keyfile == "/k2"


# -- prbd map: the secret resolved in the foreground ---------------------------------------

@pytest.fixture
def conf(tmp_path, monkeypatch):
    monkeypatch.delenv("CEPH_CONF", raising=False)
    ring = tmp_path / "ring"
    ring.write_text(f"[client.admin]\n\tkey = {SECRET}\n")
    c = tmp_path / "ceph.conf"
    c.write_text(f"[global]\nmon host = [v2:127.0.0.1:4000]\nkeyring = {ring}\n")
    return c


@pytest.fixture
def captured_map(monkeypatch):
    import pyceph.block

    got = {}

    def fake_map_image(spec, daemon_argv, timeout=60.0):
        got.update(spec=spec, argv=daemon_argv)
        return "/dev/loop99"

    monkeypatch.setattr(pyceph.block, "map_image", fake_map_image)
    return got


def test_map_key_name_from_kernel_keyring(conf, captured_map, capsys):
    kr.keyctl_join_session()
    key = CryptoKey.from_base64("AQCNcmlnAAAAABAAPzNUk2cTn7sBtD6uNhJ4Vw==")
    name = f"client.pyceph-test-{uuid.uuid4().hex[:8]}"
    kr.keyctl_add_user(name, key.to_base64(), "@s")
    assert prbd.main(["-c", str(conf), "map", "rbd/img", "-o", f"key={name},ro"]) == 0
    spec, argv = captured_map["spec"], captured_map["argv"]
    assert spec["secret"] == key.to_base64() and spec["auth_name"] == "client.admin"
    assert "key" not in spec["options"] and "secret" not in spec["options"] and spec["read_only"]
    assert key.to_base64() not in " ".join(argv) and name not in " ".join(argv)
    assert capsys.readouterr().out == "/dev/loop99\n"


def test_map_secret_option_and_keyfile(conf, captured_map, tmp_path, capsys):
    other = "AQCNcmlnAAAAABAAPzNUk2cTn7sBtD6uNhJ4Vw=="
    assert prbd.main(["-c", str(conf), "map", "img", "-o", f"secret={other},name=foo"]) == 0
    assert other not in capsys.readouterr().err
    spec = captured_map["spec"]
    assert (spec["secret"], spec["auth_name"]) == (other, "client.foo") and spec["options"].get("secret") is None
    assert other not in " ".join(captured_map["argv"])
    kf = tmp_path / "kf"
    kf.write_text(other + "\n")
    os.chmod(kf, 0o600)
    assert prbd.main(["-c", str(conf), "--keyfile", str(kf), "map", "img"]) == 0
    assert captured_map["spec"]["secret"] == other
    assert prbd.main(["-c", str(conf), "map", "img"]) == 0  # the keyring of ceph.conf
    assert captured_map["spec"]["secret"] == SECRET
    assert SECRET not in " ".join(captured_map["argv"])


def test_map_bad_secret_or_missing_key_is_one_line(conf, captured_map, capsys):
    bad = "AQBzqmpnAAAAABAAyyyyyyyyyyyyyyyyyyyy=="
    assert prbd.main(["-c", str(conf), "map", "img", "-o", f"secret={bad}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "malformed cephx key for client.admin in the secret= map option" in err
    assert bad not in err and bad[:12] not in err
    kr.keyctl_join_session()
    assert prbd.main(["-c", str(conf), "map", "img", "-o", "key=client.pyceph-nosuch"]) == errno.ENOKEY
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'client.pyceph-nosuch' not found in the kernel keyring" in err
    # key= given a secret instead of a key's name: not repeated anywhere in the line
    assert prbd.main(["-c", str(conf), "map", "img", "-o", f"key={bad}"]) == errno.ENOKEY
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found in the kernel keyring" in err
    assert bad not in err and bad[:12] not in err and bad.rstrip("=") not in err
    assert "spec" not in captured_map


def test_standalone_dev_tool_parsers_refuse_abbreviations(capsys):
    from pyceph.cluster import cli as cluster_cli

    with pytest.raises(SystemExit) as ei:
        cluster_cli.main(["start", "--di", "/tmp/x"])
    assert ei.value.code == 2 and "unrecognized arguments: --di" in capsys.readouterr().err
