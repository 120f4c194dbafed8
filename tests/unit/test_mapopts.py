"""krbd's map options (pyceph.block.mapopts): every option parses as krbd parses it
(drivers/block/rbd.c rbd_parse_param, net/ceph/ceph_common.c ceph_parse_param), unknown
ones and bad values are refused naming the option (never echoing a secret), the docs
table matches, and the options reach the client config, the OSD client and the block
image where they mean something."""

from __future__ import annotations

import argparse
import asyncio
import errno
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from pyceph.block import mapopts as M
from pyceph.cli import prbd
from pyceph.rbd.striping import Layout
from pyceph.cli.common import CliError
from pyceph.errors import NoSpace, TimedOut
from pyceph.osd import ops as O
from pyceph.osdmap.pool import FLAG_FULL

from .test_osdclient import POOL, FakeCon, FakeMap, FakeMonc, aio, make_osdc, settle, start

ROOT = Path(__file__).resolve().parents[2]
SECRET = "AQBXZ1BnAAAAABAAqLU0Lu5m1Ym1X0PVpR3UZQ=="

#: a valid value for every option that takes one
SAMPLES = {
    "crush_location": "host:h1|rack:r1", "fsid": "0f2e7d0a-3a5c-4c83-9d7e-1b2c3d4e5f60", "ip": "10.0.0.1",
    "key": "client.admin", "mount_timeout": "0", "ms_mode": "prefer-secure", "name": "admin",
    "osd_idle_ttl": "30", "osd_request_timeout": "10", "osdkeepalive": "2", "read_from_replica": "balance",
    "secret": SECRET, "_pool_ns": "ns1", "alloc_size": "4096", "compression_hint": "compressible",
    "lock_timeout": "5", "queue_depth": "32", "mon_addr": "127.0.0.1:6789/127.0.0.2", "max_tasks": "8",
    "max_background": "8", "max_write": "131072", "detach_timeout": "1.5", "size_poll": "0",
    "log_level": "debug",
}


def test_every_option_parses():
    for o in M.OPTIONS:
        if o.kind in ("flag", "negflag"):
            assert M.parse_map_options([o.name]) == {o.name: True}
            if o.kind == "negflag":
                assert M.parse_map_options(["no" + o.name]) == {o.name: False}
        elif o.kind == "bool":
            assert M.parse_map_options([o.name]) == {o.name: True}
            assert M.parse_map_options([f"{o.name}=0"]) == {o.name: False}
        else:
            assert o.name in M.parse_map_options([f"{o.name}={SAMPLES[o.name]}"]), o.name


def test_typed_values_and_krbd_spellings():
    got = M.parse_map_options(["ro,nocrc,queue_depth=64", "read_from_replica=localize,"
                               "crush_location=host:a|rack:b", "mon_addr=1.2.3.4:6789/5.6.7.8",
                               "name=client.bob,fsid=0F2E7D0A-3A5C-4C83-9D7E-1B2C3D4E5F60,,"])
    assert got == {"read_only": True, "crc": False, "queue_depth": 64, "read_from_replica": "localize",
                   "crush_location": (("host", "a"), ("rack", "b")), "mon_addr": ("1.2.3.4:6789", "5.6.7.8"),
                   "name": "client.bob", "fsid": "0f2e7d0a-3a5c-4c83-9d7e-1b2c3d4e5f60"}
    assert M.parse_map_options(["name=admin"]) == {"name": "client.admin"}
    # the last occurrence wins, as in krbd; rw/read_write undo ro
    assert M.parse_map_options(["ro,rw"]) == {"read_only": False}
    assert M.parse_map_options(["read_write", "read_only"]) == {"read_only": True}
    assert M.parse_map_options(["queue_depth=1,queue_depth=2"]) == {"queue_depth": 2}
    assert M.parse_map_options(["nocephx_require_signatures,notcp_nodelay,noshare,noudev"]) == {
        "cephx_require_signatures": False, "tcp_nodelay": False, "share": False, "udev": False}
    assert M.parse_map_options(["alloc_size=512"]) == {"alloc_size": 512}
    # kstrtouint(s, 0): hex and octal too
    assert M.parse_map_options(["queue_depth=0x40,osdkeepalive=010"]) == {"queue_depth": 64, "osdkeepalive": 8}
    assert M.parse_map_options(["mount_timeout=2147483"]) == {"mount_timeout": 2147483}


def _refused(text: str) -> str:
    with pytest.raises(M.MapOptionError) as ei:
        M.parse_map_options([text])
    assert ei.value.errno == errno.EINVAL
    return ei.value.message


def test_unknown_options_refused_naming_them():
    assert _refused("foo=bar") == "unknown map option 'foo'"
    assert _refused("ro,osdtimeout=3") == "unknown map option 'osdtimeout'"  # gone in 6.x
    assert _refused("nonotrim") == "unknown map option 'nonotrim'"
    assert _refused("noexclusive") == "unknown map option 'noexclusive'"  # a plain fsparam_flag
    assert _refused("=3") == "map option with an empty name"


@pytest.mark.parametrize("text, why", [
    ("queue_depth=0", "'queue_depth': out of range"),
    ("queue_depth=-1", "'queue_depth': not an unsigned number"),
    ("queue_depth=08", "'queue_depth': not an unsigned number"),  # 0-prefixed is octal, as kstrtouint
    ("queue_depth=4294967296", "'queue_depth': out of range"),
    ("osdkeepalive=0", "'osdkeepalive': out of range"),
    ("osd_idle_ttl=0", "'osd_idle_ttl': out of range"),
    ("mount_timeout=2147484", "'mount_timeout': out of range"),
    ("osd_request_timeout=2147484", "'osd_request_timeout': out of range"),
    ("lock_timeout=x", "'lock_timeout': not an unsigned"),
    ("alloc_size=256", "'alloc_size': out of range"),
    ("alloc_size=6144", "'alloc_size': must be a power of 2"),
    ("read_from_replica=nearest", "'read_from_replica': must be one of no|balance|localize"),
    ("compression_hint=zstd", "'compression_hint': must be one of"),
    ("ms_mode=fast", "'ms_mode': must be one of"),
    ("crush_location=host", "'crush_location': expected type:name"),
    ("fsid=not-a-uuid", "'fsid': not a UUID"),
    ("mon_addr=/", "'mon_addr': empty"),
    ("name=", "map option 'name' requires a value"),
    ("queue_depth", "map option 'queue_depth' requires a value"),
    ("notrim=1", "map option 'notrim' takes no value"),
    ("ro=0", "map option 'ro' takes no value"),
    ("nocrc=1", "map option 'nocrc' takes no value"),
    ("direct_io=maybe", "'direct_io': expected 0|1"),
])
def test_bad_values_refused_naming_option_and_why(text, why):
    assert why in _refused(text)


def test_secret_never_in_error_text():
    for bad in ("AQD!!secretish!!", "AQDsecretsecret", "QUJD"):  # not base64 / not a multiple of 4 / too short
        msg = _refused(f"secret={bad}")
        assert "'secret'" in msg and bad not in msg and "not shown" in msg
    with pytest.raises(M.MapOptionError) as ei:
        M.parse_option("key", "")
    assert "'key'" in ei.value.message
    # a key pasted without "secret=" is not repeated either
    assert _refused(SECRET) == "unknown map option (it looks like a key: not shown)"
    # the whole parse of a later bad option does not repeat an earlier good secret either
    msg = _refused(f"secret={SECRET},queue_depth=0")
    assert SECRET not in msg


def test_unmap_options():
    assert M.parse_unmap_options(["force"]) == {"force": True} and M.parse_unmap_options([]) == {}
    with pytest.raises(M.MapOptionError, match="unknown unmap option 'ro'"):
        M.parse_unmap_options(["force,ro"])
    with pytest.raises(M.MapOptionError, match="takes no value"):
        M.parse_unmap_options(["force=1"])


def test_runtime_options_and_validate_settings():
    assert M.RUNTIME_OPTIONS >= {"queue_depth", "osd_request_timeout"}
    assert M.RUNTIME_OPTIONS <= set(M.BY_NAME)
    assert M.validate_settings({"queue_depth": "64", "osd_request_timeout": "30"}) == {
        "queue_depth": 64, "osd_request_timeout": 30}
    assert M.validate_settings({"lock_on_read": ""}) == {"lock_on_read": True}
    assert M.validate_settings({"lock_on_read": "0"}) == {"lock_on_read": False}
    with pytest.raises(M.MapOptionError, match="'exclusive' cannot be changed on a mapped device"):
        M.validate_settings({"queue_depth": "64", "exclusive": ""})
    with pytest.raises(M.MapOptionError, match="'queue_depth': out of range"):
        M.validate_settings({"osd_request_timeout": "30", "queue_depth": "0"})
    with pytest.raises(M.MapOptionError, match="unknown map option 'bogus'"):
        M.validate_settings({"bogus": "1"})
    with pytest.raises(M.MapOptionError, match="'secret' cannot be changed") as ei:
        M.validate_settings({"secret": SECRET})
    assert SECRET not in str(ei.value)


def test_every_krbd_option_is_in_the_table():
    # ceph_parameters and rbd_parameters of Linux 6.1, and the rbd CLI's udev
    krbd = {"abort_on_full", "cephx_require_signatures", "cephx_sign_messages", "crc", "crush_location",
            "fsid", "ip", "key", "mount_timeout", "name", "osd_idle_ttl", "osd_request_timeout",
            "osdkeepalive", "read_from_replica", "rxbounce", "ms_mode", "secret", "share", "tcp_nodelay",
            "alloc_size", "compression_hint", "exclusive", "lock_on_read", "lock_timeout", "notrim",
            "_pool_ns", "queue_depth", "read_only", "read_write", "ro", "rw", "udev", "mon_addr"}
    for name in krbd:
        M.canonical_name(name)
    for o in M.OPTIONS:
        assert o.krbd and o.pyceph and o.source


def test_doc_matches_table():
    text = (ROOT / "docs" / "MAP-OPTIONS.md").read_text()
    assert M.render_doc(text) == text, "regenerate: python -m pyceph.block.mapopts docs/MAP-OPTIONS.md"
    for o in M.OPTIONS:
        assert f"`{o.name}" in text


# -- prbd map: the request and the client config ------------------------------------------

def _map_args(*argv: str) -> argparse.Namespace:
    return prbd.build_parser().parse_args(["map", *argv])


def test_map_request_moves_credentials_out_of_options():
    spec = prbd._spec(_map_args("rbd/img"), prbd.SNAP_PERMITTED)
    r = prbd.map_request(spec, [f"name=nobody,secret={SECRET},queue_depth=8,_pool_ns=ns2"])
    assert r["auth_name"] == "client.nobody" and r["secret"] == SECRET
    assert r["options"] == {"queue_depth": 8} and r["namespace"] == "ns2"
    assert SECRET not in repr(r["options"])
    with pytest.raises(CliError) as ei:
        prbd.map_request(spec, ["foo=bar"])
    assert ei.value.errno == errno.EINVAL and str(ei.value) == "unknown map option 'foo'"
    with pytest.raises(CliError) as ei:
        prbd.map_request(spec, ["secret=AQD!!secretish!!"])
    assert "secretish" not in str(ei.value)


def test_map_config_applies_client_options(tmp_path):
    conf = tmp_path / "ceph.conf"
    conf.write_text("[global]\nmon host = 127.0.0.9:6789\n")
    args = _map_args("rbd/img", "-c", str(conf))
    opts = M.parse_map_options(["ms_mode=secure,osd_request_timeout=7,osdkeepalive=3,osd_idle_ttl=9",
                                "mount_timeout=0,read_from_replica=localize,crush_location=host:h|rack:r",
                                "abort_on_full,mon_addr=127.0.0.1:6790/127.0.0.2:6790"])
    cfg = prbd._map_config(args, opts, "client.bob", SECRET)
    assert str(cfg.name) == "client.bob" and cfg.key == SECRET
    assert cfg.msgr_modes(False) == ("secure",)
    assert cfg.get_float("osd_request_timeout") == 7 and cfg.get_float("osd_keepalive_interval") == 3
    assert cfg.get_float("osd_idle_ttl") == 9 and cfg.get_float("client_mount_timeout") >= 10 ** 9
    assert cfg.get("rbd_read_from_replica_policy") == "localize"
    assert cfg.get("crush_location") == "host=h rack=r" and cfg.get("abort_on_full") == "true"
    assert [str(a) for a in cfg.mon_addrs] and len(cfg.mon_addrs) == 2
    assert "6790" in str(cfg.mon_addrs[0]) and "6789" not in " ".join(map(str, cfg.mon_addrs))
    assert SECRET not in repr(opts.get("name"))


def test_daemon_queue_depth_sets_fuse_limits():
    from pyceph.block.daemon import _Daemon

    opts = M.parse_map_options(["queue_depth=7,notrim"])
    d = _Daemon({"pool": "rbd", "name": "i", "options": opts}, None, None, False)
    try:
        assert (d.max_background, d.max_tasks, d.trim) == (7, 7, False)
    finally:
        d.pool.shutdown()
    d = _Daemon({"pool": "rbd", "name": "i", "options": M.parse_map_options(["queue_depth=99999,max_tasks=3"])},
                None, None, False)
    try:
        assert (d.max_background, d.max_tasks) == (0xFFFF, 3)  # FUSE's u16 cap; explicit max_tasks wins
    finally:
        d.pool.shutdown()


# -- the block image: lock_on_read, lock_timeout, alloc_size ------------------------------

class FakeLock:
    def __init__(self):
        self.owner = False

    def is_owner(self):
        return self.owner


class FakeImage:
    read_only = False
    layout = Layout.from_order(22)

    def __init__(self, acquire_waits: bool = False):
        self.exclusive_lock = FakeLock()
        self.calls: list = []
        self.acquire_waits = acquire_waits

    async def acquire_lock(self):
        self.calls.append("lock")
        if self.acquire_waits:
            await asyncio.Event().wait()  # another owner never lets go
        self.exclusive_lock.owner = True

    async def read(self, off, n):
        self.calls.append(("read", off, n))
        return b""

    async def write(self, off, data):
        self.calls.append(("write", off, len(data)))
        return len(data)

    async def discard(self, off, n):
        self.calls.append(("discard", off, n))

    async def write_zeroes(self, off, n):
        self.calls.append(("zero", off, n))


@aio
async def test_lock_on_read_and_alloc_size():
    img = FakeImage()
    b = prbd.RbdBlockImage(None, img, {"lock_on_read": True, "alloc_size": 65536})
    await b.read(0, 4096)
    assert img.calls == ["lock", ("read", 0, 4096)]
    img.calls.clear()
    await b.discard(1000, 200000)  # aligned inward to 64 KiB: [65536, 196608)
    await b.discard(70000, 4096)  # smaller than alloc_size: dropped (krbd punts)
    await b.write_zeroes(1000, 4096)  # write-zeroes is exact
    assert img.calls == [("discard", 65536, 131072), ("zero", 1000, 4096)]
    # without the options: no lock taken by the block layer, discards exact
    img2 = FakeImage()
    b2 = prbd.RbdBlockImage(None, img2, {})
    await b2.read(0, 10)
    await b2.discard(1000, 10)
    assert img2.calls == [("read", 0, 10), ("discard", 1000, 10)]


def test_alloc_size_aligns_each_object_extent_as_krbd():
    MiB = 1 << 20
    four = Layout.from_order(22)
    # capped at the object size (8M on 4M objects acts as 4M), and with alloc_size == object
    # size an extent reaching its object's end is not aligned (rbd_obj_is_tail)
    assert prbd.alloc_aligned_discard(four, 8 * MiB, MiB, 4 * MiB) == [(MiB, 3 * MiB)]
    assert prbd.alloc_aligned_discard(four, 4 * MiB, 4 * MiB + 4096, 8192) == []
    # smaller alloc_size: inward per object; object boundaries are aligned, so pieces merge
    assert prbd.alloc_aligned_discard(four, 65536, 1000, 9 * MiB) == [(65536, 9 * MiB - 65536)]
    # a striped image (stripe unit 64K over 4 objects): aligned in object space
    striped = Layout(4 * MiB, 65536, 4)
    got = prbd.alloc_aligned_discard(striped, 131072, 0, 4 * 65536)
    assert got == []  # each object got one 64K piece: smaller than 128K, all dropped
    got = prbd.alloc_aligned_discard(striped, 65536, 0, 4 * 65536 + 100)
    assert got == [(0, 4 * 65536)]


def test_configure_applies_runtime_options():
    from tests.unit.test_osdclient import FakeMonc, make_osdc
    from pyceph.osdmap.osdmap import OSDMap

    osdc = make_osdc(FakeMonc(OSDMap()), osd_keepalive_interval=5.0, osd_idle_ttl=60.0)
    assert (osdc.keepalive_interval, osdc.tick_interval, osdc.ping_interval) == (5.0, 5.0, 5.0)
    b = prbd.RbdBlockImage(SimpleNamespace(osdc=osdc), FakeImage(), {})
    b.configure(M.validate_settings({"osd_request_timeout": "30", "osdkeepalive": "2", "lock_on_read": ""}))
    assert osdc.request_timeout == 30 and b.options["lock_on_read"]
    # the keepalive tick and watch pings follow a live osdkeepalive change
    assert (osdc.keepalive_interval, osdc.tick_interval, osdc.ping_interval) == (2.0, 2.0, 2.0)


def test_key_option_resolved_through_the_keyring(monkeypatch):
    import sys

    import pyceph.auth
    from pyceph.auth.crypto import CryptoKey
    from pyceph.errors import InvalidArgumentError

    raw = bytes(range(16))
    asked = []

    def lookup(desc):
        asked.append(desc)
        if desc == "missing":
            raise InvalidArgumentError(f"key {desc!r} not found in the caller's keyrings")
        return raw

    fake = SimpleNamespace(keyctl_lookup=lookup)
    monkeypatch.setitem(sys.modules, "pyceph.auth.keyring", fake)
    monkeypatch.setattr(pyceph.auth, "keyring", fake, raising=False)
    spec = prbd._spec(_map_args("rbd/img"), prbd.SNAP_PERMITTED)
    req = prbd.map_request(spec, ["key=client.bob,name=bob"])
    prbd._resolve_key_option(req)
    assert asked == ["client.bob"] and "key" not in req["options"]
    assert CryptoKey.from_base64(req["secret"]).secret == raw
    req = prbd.map_request(spec, ["key=missing"])
    with pytest.raises(CliError) as ei:
        prbd._resolve_key_option(req)
    assert "'missing'" in str(ei.value) and "key= map option" in str(ei.value) and ei.value.errno == errno.EINVAL


def test_lock_timeout_fails_io_with_etimedout():
    async def body():
        b = prbd.RbdBlockImage(None, FakeImage(acquire_waits=True), {"lock_timeout": 5})
        return await b.write(0, b"x")

    # virtual time: the loop's clock jumps to the next timer instead of sleeping
    loop = asyncio.new_event_loop()
    now = [0.0]
    loop.time = lambda: now[0]

    orig = loop._run_once

    def run_once():
        if not loop._ready and loop._scheduled:
            now[0] = max(now[0], loop._scheduled[0].when())
        orig()

    loop._run_once = run_once
    try:
        with pytest.raises(TimedOut, match="lock_timeout=5s"):
            loop.run_until_complete(body())
        assert now[0] == 5.0
    finally:
        loop.close()


# -- the OSD client: read_from_replica, crush_location, abort_on_full ----------------------

def _read(osdc, oid):
    return start(osdc, oid, write=False)


@aio
async def test_balance_reads_go_to_a_replica_with_the_flag(env):
    m, monc = env
    random.seed(3)
    osdc = make_osdc(monc, rbd_read_from_replica_policy="balance")
    reads = [_read(osdc, "obj1") for _ in range(12)]
    w = start(osdc, "obj1")
    await settle()
    sent = [(c.osd, op) for c in FakeCon.made for op in c.sent]
    read_osds = {osd for osd, op in sent if op.flags & O.CEPH_OSD_FLAG_READ}
    assert len(read_osds) > 1 and read_osds <= {1, 2, 0}  # acting [1, 2, 0]
    assert all(op.flags & O.CEPH_OSD_FLAG_BALANCE_READS for _, op in sent if op.flags & O.CEPH_OSD_FLAG_READ)
    ((wosd, wop),) = [(osd, op) for osd, op in sent if op.flags & O.CEPH_OSD_FLAG_WRITE]
    assert wosd == 1 and not wop.flags & O.CEPH_OSD_FLAG_BALANCE_READS  # writes: the primary
    for c in FakeCon.made:
        for op in c.sent:
            c.reply(op.tid)
    await asyncio.gather(*reads, w)
    n_replica = sum(1 for osd, op in sent if osd != 1 and op.flags & O.CEPH_OSD_FLAG_READ)
    assert n_replica and osdc.status()["replica_reads"] == n_replica
    assert osdc.status()["read_flags"] == O.CEPH_OSD_FLAG_BALANCE_READS
    await osdc.close()


@aio
async def test_replica_eagain_resends_to_the_primary_without_the_flag(env):
    m, monc = env
    osdc = make_osdc(monc, rbd_read_from_replica_policy="balance")
    m.place("objx", 5, 2, [2, 0, 1])
    for _ in range(30):
        r = _read(osdc, "objx")
        await settle()
        replica = [c for c in FakeCon.made if c.osd != 2 and c.sent]
        if replica:
            break
        (c2,) = [c for c in FakeCon.made if c.osd == 2]
        c2.reply(c2.sent[-1].tid)
        await r
    (rc,) = replica
    rc.reply(rc.sent[-1].tid, result=-11)  # EAGAIN: not readable on the replica
    await settle()
    (pc,) = [c for c in FakeCon.made if c.osd == 2]
    op = pc.sent[-1]
    assert not op.flags & (O.CEPH_OSD_FLAG_BALANCE_READS | O.CEPH_OSD_FLAG_LOCALIZE_READS)
    pc.reply(op.tid)
    assert (await r).result == 0
    assert osdc.status()["replica_bounces"] == 1 and osdc.status()["replica_reads"] == 0
    await osdc.close()


def _fake_crush():
    # root default (type 10) -> rack r1 (3) -> host h0 (1) -> osd.0; rack r2 -> host h1 -> osd.1, host h2 -> osd.2
    B = SimpleNamespace
    buckets = [B(id=-1, type=10, items=[-2, -3]), B(id=-2, type=3, items=[-4]), B(id=-3, type=3, items=[-5, -6]),
               B(id=-4, type=1, items=[0]), B(id=-5, type=1, items=[1]), B(id=-6, type=1, items=[2]),
               B(id=-7, type=1, items=[0])]  # a per-class shadow bucket: ignored
    names = {-1: "default", -2: "r1", -3: "r2", -4: "h0", -5: "h1", -6: "h2", -7: "h0~ssd"}
    return SimpleNamespace(buckets=buckets, names=names, type_names={1: "host", 3: "rack", 10: "root"})


@aio
async def test_localize_reads_pick_the_closest_replica(env):
    m, monc = env
    m.crush = _fake_crush()
    m.place("objl", 6, 1, [1, 0, 2])
    osdc = make_osdc(monc, rbd_read_from_replica_policy="localize", crush_location="rack=r1")
    r = _read(osdc, "objl")
    await settle()
    (c,) = FakeCon.made
    assert c.osd == 0 and c.sent[0].flags & O.CEPH_OSD_FLAG_LOCALIZE_READS  # osd.0 is in rack r1
    c.reply(c.sent[0].tid)
    await r
    # host h2 beats rack r2 (lower type id); nothing local -> the primary
    osdc.crush_location = frozenset({("rack", "r2"), ("host", "h2")})
    assert osdc._closest_replica([1, 0, 2]) == 2
    osdc.crush_location = frozenset({("host", "nowhere")})
    assert osdc._closest_replica([1, 0, 2]) == 1
    await osdc.close()


@aio
async def test_abort_on_full_fails_writes_with_enospc(env):
    m, monc = env
    osdc = make_osdc(monc, abort_on_full="true")
    w = start(osdc, "obj1")
    await settle()
    m.pools[POOL].flags |= FLAG_FULL
    monc.new_map()
    with pytest.raises(NoSpace):
        await w  # in flight when the pool filled
    with pytest.raises(NoSpace):
        await start(osdc, "obj1")  # submitted while full
    r = _read(osdc, "obj1")  # reads still go
    await settle()
    c = FakeCon.made[0]
    c.reply(c.sent[-1].tid)
    assert (await r).result == 0
    await osdc.close()


@pytest.fixture
def env():
    FakeCon.made = []
    FakeCon.connect_results = []
    FakeCon.gate = None
    m = FakeMap()
    m.crush = None
    for i in range(8):
        m.place(f"obj{i}", i, i % 3, [i % 3, (i + 1) % 3, (i + 2) % 3])
    return m, FakeMonc(m)
