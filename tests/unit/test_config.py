"""ceph.conf / keyring / mon host parsing (Ceph's own forms, from src/mon/MonMap.cc docs)."""

import os

import pytest

from pyceph.config import ClientConfig, parse_conf_text, parse_mon_host
from pyceph.errors import ConfigError
from pyceph.types import ADDR_TYPE_LEGACY, ADDR_TYPE_MSGR2


def addrs(mv):
    return [[(a.type, a.ip, a.port) for a in v.addrs] for v in mv]


def test_mon_host_addrvecs():
    m = parse_mon_host("[v2:127.0.0.1:40000,v1:127.0.0.1:40001] [v2:127.0.0.2:3300/0,v1:127.0.0.2:6789/0]")
    assert addrs(m) == [
        [(ADDR_TYPE_MSGR2, "127.0.0.1", 40000), (ADDR_TYPE_LEGACY, "127.0.0.1", 40001)],
        [(ADDR_TYPE_MSGR2, "127.0.0.2", 3300), (ADDR_TYPE_LEGACY, "127.0.0.2", 6789)],
    ]


def test_mon_host_bare_and_ports():
    m = parse_mon_host("10.0.0.1, 10.0.0.2:6789 10.0.0.3:3300;[::1]:3300")
    assert addrs(m) == [
        [(ADDR_TYPE_MSGR2, "10.0.0.1", 3300), (ADDR_TYPE_LEGACY, "10.0.0.1", 6789)],
        [(ADDR_TYPE_LEGACY, "10.0.0.2", 6789)],
        [(ADDR_TYPE_MSGR2, "10.0.0.3", 3300)],
        [(ADDR_TYPE_MSGR2, "::1", 3300)],
    ]


def test_mon_host_ipv6_vector():
    m = parse_mon_host("[v2:[::1]:3300,v1:[::1]:6789]")
    assert addrs(m) == [[(ADDR_TYPE_MSGR2, "::1", 3300), (ADDR_TYPE_LEGACY, "::1", 6789)]]


@pytest.mark.parametrize("bad", ["", "   ", "[v2:1.2.3.4:x]", "v2:999.1.1.1:3300"])
def test_mon_host_bad(bad):
    with pytest.raises(ConfigError):
        parse_mon_host(bad)


def test_conf_sections_and_key_forms():
    s = parse_conf_text(
        "[global]\n  mon host = 1.2.3.4 ; comment\nfsid=abc # c\n[client]\nrbd-default-order = 20\n"
        "log file = \"/x;y\"\n"
    )
    assert s["global"] == {"mon_host": "1.2.3.4", "fsid": "abc"}
    assert s["client"] == {"rbd_default_order": "20", "log_file": "/x;y"}


def test_load_with_keyring(tmp_path, monkeypatch):
    monkeypatch.delenv("CEPH_CONF", raising=False)
    kr = tmp_path / "keyring"
    kr.write_text("[client.foo]\n\tkey = AQBz0Dlh2PNoKRAAW2Bln1i2Bn3vJSkw3pfqpA==\n")
    conf = tmp_path / "ceph.conf"
    conf.write_text(f"[global]\nmon host = [v2:127.0.0.1:4000]\nkeyring = {kr}\n[client.foo]\nclient mount timeout = 7\n")
    c = ClientConfig.load(str(conf), client_id="foo")
    assert str(c.name) == "client.foo"
    assert c.key == "AQBz0Dlh2PNoKRAAW2Bln1i2Bn3vJSkw3pfqpA=="
    assert c.get_float("client_mount_timeout") == 7.0
    assert c.keyring_path == str(kr)
    with pytest.raises(ConfigError, match="no key for client.bar"):
        ClientConfig.load(str(conf), name="client.bar")


def test_missing_conf_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        ClientConfig.load(str(tmp_path / "nope.conf"))


# -- secrets: sources, reprs, errors (issue 9) --------------------------------------------

KEY_A = "AQBz0Dlh2PNoKRAAW2Bln1i2Bn3vJSkw3pfqpA=="
KEY_B = "AQCNcmlnAAAAABAAPzNUk2cTn7sBtD6uNhJ4Vw=="


def _conf(tmp_path, extra=""):
    conf = tmp_path / "ceph.conf"
    conf.write_text(f"[global]\nmon host = [v2:127.0.0.1:4000]\n{extra}")
    return conf


def test_secret_sources_in_order(tmp_path, monkeypatch):
    """secret=/key= (the caller's), --keyfile, --keyring, then ceph.conf key, keyfile, keyring."""
    monkeypatch.delenv("CEPH_CONF", raising=False)
    ring = tmp_path / "ring"
    ring.write_text(f"[client.admin]\n\tkey = {KEY_A}\n")
    kf = tmp_path / "kf"
    kf.write_text(KEY_B + "\n")
    conf = _conf(tmp_path, f"keyring = {ring}\n")
    c = ClientConfig.load(str(conf))
    assert (c.key, c.key_source) == (KEY_A, f"keyring {ring}")
    c = ClientConfig.load(str(conf), keyfile=str(kf))
    assert (c.key, c.key_source) == (KEY_B, f"--keyfile {kf}")
    c = ClientConfig.load(str(conf), keyfile=str(kf), key=KEY_A, key_source="kernel keyring key 'x'")
    assert (c.key, c.key_source) == (KEY_A, "kernel keyring key 'x'")
    # ceph.conf's key option: below an explicit --keyring, above ceph.conf's keyring
    conf2 = _conf(tmp_path, f"keyring = {ring}\nkey = {KEY_B}\n")
    c = ClientConfig.load(str(conf2))
    assert (c.key, c.key_source) == (KEY_B, f"the 'key' option of {conf2}")
    assert "key" not in c.options  # the secret is not an ordinary option
    c = ClientConfig.load(str(conf2), keyring=str(ring))
    assert (c.key, c.key_source) == (KEY_A, f"keyring {ring}")
    conf3 = _conf(tmp_path, f"keyring = {ring}\nkeyfile = {kf}\n")
    c = ClientConfig.load(str(conf3))
    assert (c.key, c.key_source) == (KEY_B, f"keyfile {kf}")
    c2 = c.with_secret(KEY_A, "the map request")
    assert (c2.key, c2.key_source, c.key) == (KEY_A, "the map request", KEY_B)


def test_repr_never_holds_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv("CEPH_CONF", raising=False)
    conf = _conf(tmp_path, f"key = {KEY_A}\n")
    c = ClientConfig.load(str(conf))
    assert c.key == KEY_A
    for text in (repr(c), str(c), repr(c.options), repr(c.with_secret(KEY_B, "x"))):
        assert KEY_A not in text and KEY_B not in text
        assert KEY_A[:20] not in text
    from pyceph.auth.crypto import CryptoKey
    from pyceph.auth.structs import CephXServiceTicket, EntityAuth

    k = CryptoKey.from_base64(KEY_A)
    for obj in (k, EntityAuth(key=k), CephXServiceTicket(session_key=k)):
        assert k.secret.hex() not in repr(obj) and repr(k.secret)[2:-1] not in repr(obj)
        assert KEY_A not in repr(obj)


@pytest.mark.parametrize("bad", [
    "AQBzqmpnAAAAABAAyyyyyyyyyyyyyyyyyyyy==",  # truncated
    "AQBz0Dlh2PNoKRAAW2Bln1i2Bn3vJSkw3pfqpA",  # bad padding
    "not base64 at all!",
])
def test_malformed_key_names_entity_and_source_not_key(tmp_path, bad):
    from pyceph.auth.keyring import check_config_key

    ring = tmp_path / "ring"
    ring.write_text(f"[client.admin]\n\tkey = {bad}\n")
    cfg = ClientConfig.load(str(_conf(tmp_path)), keyring=str(ring))
    with pytest.raises(ConfigError) as ei:
        check_config_key(cfg)
    msg = str(ei.value)
    assert f"malformed cephx key for client.admin in keyring {ring}" in msg
    assert bad not in msg and bad[:16] not in msg and "\n" not in msg


def _one_line_config_error(fn):
    with pytest.raises(ConfigError) as ei:
        fn()
    msg = str(ei.value)
    assert "\n" not in msg and len(msg) < 300
    assert ei.value.__cause__ is None or not isinstance(ei.value.__cause__, UnicodeError)
    return msg


def test_binary_or_unreadable_files_are_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("CEPH_CONF", raising=False)
    rand = tmp_path / "rand"
    rand.write_bytes(bytes(range(1, 256)) * 8)  # no NUL: not UTF-8
    nul = tmp_path / "nul"
    nul.write_bytes(b"[global]\nmon host = 1.2.3.4\n\0\0\0")
    good = _conf(tmp_path)
    for path, what in (("/bin/ls", "NUL byte"), (rand, "invalid UTF-8"), (nul, "NUL byte")):
        msg = _one_line_config_error(lambda p=path: ClientConfig.load(str(p)))
        assert f"config file {path} is not a text file ({what}" in msg
        msg = _one_line_config_error(lambda p=path: ClientConfig.load(str(good), keyring=str(p)))
        assert f"keyring {path} is not a text file" in msg
        msg = _one_line_config_error(lambda p=path: ClientConfig.load(str(good), keyfile=str(p)))
        assert f"--keyfile {path} is not a text file" in msg
    msg = _one_line_config_error(lambda: ClientConfig.load(str(tmp_path)))
    assert f"cannot read config file {tmp_path}: is a directory" == msg.split("] ", 1)[-1]
    msg = _one_line_config_error(lambda: ClientConfig.load(str(good), keyring=str(tmp_path)))
    assert "is a directory" in msg
    msg = _one_line_config_error(lambda: ClientConfig.load(str(good), keyring=str(tmp_path / "nope")))
    assert f"cannot read keyring {tmp_path / 'nope'}: No such file or directory" in msg
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    msg = _one_line_config_error(lambda: ClientConfig.load(str(good), keyring=str(fifo)))
    assert "not a regular file" in msg
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert "is empty" in _one_line_config_error(lambda: ClientConfig.load(str(good), keyfile=str(empty)))


def test_keyring_parse_errors_never_quote_lines(tmp_path):
    ring = tmp_path / "ring"
    ring.write_text(f"[client.admin]\n\tkey: {KEY_A.rstrip('=')}\n")  # a key without "key ="
    msg = _one_line_config_error(lambda: ClientConfig.load(str(_conf(tmp_path)), keyring=str(ring)))
    assert f"{ring}:2: expected 'key = value'" in msg and KEY_A not in msg and KEY_A[:10] not in msg
    conf = tmp_path / "c2.conf"
    conf.write_text(f"[global]\nmon host = 1.2.3.4\nkey {KEY_A}\n")  # nor in ceph.conf
    msg = _one_line_config_error(lambda: ClientConfig.load(str(conf)))
    assert KEY_A not in msg and KEY_A[:10] not in msg
    conf.write_text("[global]\nmon host 1.2.3.4\n")  # other lines are still quoted
    assert "'mon host 1.2.3.4'" in _one_line_config_error(lambda: ClientConfig.load(str(conf)))
