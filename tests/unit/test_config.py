"""ceph.conf / keyring / mon host parsing (Ceph's own forms, from src/mon/MonMap.cc docs)."""

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
