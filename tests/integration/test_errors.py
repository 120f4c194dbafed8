"""Bad input against a real cluster: a clear, typed error, in time, and nothing lost.

Every test ends by checking that the cluster did not notice (HEALTH_OK, images intact)
where the bad input reached it.
"""

from __future__ import annotations

import asyncio
import errno
import json
import random
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from pyceph.cluster.launcher import gen_cephx_key
from pyceph.config import ClientConfig
from pyceph.errors import (
    AuthError,
    ConfigError,
    ImageExists,
    ImageNotFound,
    MonitorUnreachable,
    ObjectNotFound,
    PoolNotFound,
    TimedOut,
)
from pyceph.rados import AsyncRados, Rados

from .helpers import tool

REPO = Path(__file__).resolve().parents[2]
PRBD = [sys.executable, "-m", "pyceph.cli.prbd"]
PYCEPH = [sys.executable, "-m", "pyceph.cli.pyceph_cli"]


# -- helpers ---------------------------------------------------------------------------------

def cli(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def error_line(r: subprocess.CompletedProcess) -> str:
    """The CLI failed and said so in one last stderr line (progress lines may precede it)."""
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines, "no error message on stderr"
    return lines[-1]


async def try_connect(cfg: ClientConfig, timeout: float) -> tuple[AsyncRados, float]:
    """Connect; returns the handle and the seconds it took (raises what connect raises)."""
    r = AsyncRados(cfg)
    t0 = time.monotonic()
    try:
        await r.connect(timeout)
    finally:
        elapsed = time.monotonic() - t0
    return r, elapsed


def connect_error(cfg: ClientConfig, timeout: float) -> tuple[BaseException, float]:
    """Run a connect that must fail; returns (exception, seconds until it was raised)."""

    async def go():
        r = AsyncRados(cfg)
        t0 = time.monotonic()
        try:
            await r.connect(timeout)
        except Exception as e:  # noqa: BLE001 - the caller asserts the type
            return e, time.monotonic() - t0
        finally:
            await r.shutdown()
        pytest.fail("connect succeeded")

    return asyncio.run(go())


def closed_ports(n: int) -> list[int]:
    """``n`` loopback ports that were just bound and closed (so nothing listens there)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class FakeMon:
    """A TCP server on 127.0.0.1 that accepts and then either never answers (``reply=None``:
    a black hole) or sends ``reply`` and keeps the connection open.  Counts connections."""

    def __init__(self, reply: bytes | None):
        self.reply = reply
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.received = b""
        self.conns: list[socket.socket] = []
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            self.conns.append(c)
            c.settimeout(0.5)
            if self.reply is not None:
                c.sendall(self.reply)
            try:
                self.received += c.recv(4096)
            except OSError:
                pass

    def close(self) -> None:
        self._stop = True
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()


@contextmanager
def fake_mon(reply: bytes | None):
    f = FakeMon(reply)
    try:
        yield f
    finally:
        f.close()


def real_v2(cluster) -> str:
    (v2,) = [a for a in cluster.mon_addrs if a.startswith("v2:")]
    return v2


def assert_healthy(cluster) -> None:
    assert cluster.ceph("health")["status"] == "HEALTH_OK"


@pytest.fixture
def wrong_keyring(tmp_path) -> Path:
    p = tmp_path / "wrong.keyring"
    p.write_text(f"[client.admin]\n\tkey = {gen_cephx_key()}\n")
    return p


# -- authentication ------------------------------------------------------------------------

def test_wrong_key_is_auth_error_at_once(cluster):
    wrong = gen_cephx_key()
    assert wrong != cluster.admin_key
    e, elapsed = connect_error(ClientConfig.load(str(cluster.conf_path), key=wrong), timeout=20)
    assert isinstance(e, AuthError), repr(e)
    assert e.errno == errno.EACCES and "client.admin" in str(e)
    assert elapsed < 5, f"took {elapsed:.1f}s: hunted instead of failing at once"
    # python-rados surface, same answer.
    r = Rados(conffile=str(cluster.conf_path), conf={"key": wrong})
    t0 = time.monotonic()
    with pytest.raises(AuthError, match="client.admin"):
        r.connect(timeout=20)
    assert time.monotonic() - t0 < 5
    r.shutdown()
    assert_healthy(cluster)


def test_wrong_keyring_cli_one_clear_line(cluster, wrong_keyring):
    before = cluster.rbd("ls", "rbd")
    t0 = time.monotonic()
    r = cli([*PRBD, "-c", str(cluster.conf_path), "-k", str(wrong_keyring), "ls"])
    assert time.monotonic() - t0 < 15
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1, r.stderr
    assert "AuthError" in r.stderr and "client.admin" in r.stderr
    assert cluster.rbd("ls", "rbd") == before


def test_unknown_entity_is_auth_error(cluster):
    e, elapsed = connect_error(
        ClientConfig.load(str(cluster.conf_path), name="client.nosuch", key=gen_cephx_key()), timeout=20)
    assert isinstance(e, AuthError), repr(e)
    assert "client.nosuch" in str(e) and elapsed < 5
    # Ceph agrees the entity does not exist (so this was the "unknown entity" case).
    r = subprocess.run([*tool(cluster, "ceph"), "-c", str(cluster.conf_path), "auth", "get", "client.nosuch"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "ENOENT" in r.stderr + r.stdout
    assert_healthy(cluster)


# -- monitors that cannot be used ----------------------------------------------------------

def test_unreachable_monitors_within_timeout_naming_each(cluster):
    p1, p2 = closed_ports(2)
    cfg = ClientConfig.load(str(cluster.conf_path), mon_host=f"[v2:127.0.0.1:{p1}] [v2:127.0.0.1:{p2}]")
    e, elapsed = connect_error(cfg, timeout=3)
    assert isinstance(e, MonitorUnreachable), repr(e)
    assert isinstance(e, TimedOut) and e.errno == errno.ETIMEDOUT
    assert elapsed < 4.0, elapsed
    for p in (p1, p2):
        assert f"127.0.0.1:{p}" in str(e)
    assert sorted(e.addrs) == sorted(f"v2:127.0.0.1:{p}/0" for p in (p1, p2))
    # The CLI: same failure, one line, in time.
    t0 = time.monotonic()
    r = cli([*PRBD, "-c", str(cluster.conf_path), "-m", f"[v2:127.0.0.1:{p1}]", "--connect-timeout", "2", "ls"])
    assert time.monotonic() - t0 < 10
    line = error_line(r)
    assert "MonitorUnreachable" in line and f"127.0.0.1:{p1}" in line


def test_v1_only_mon_host_with_a_secure_only_client_is_config_error(cluster):
    """msgr1 has no encryption: a client that requires secure mode refuses v1-only
    monitors at once, naming them (a v1-only mon host otherwise works: test_msgr1.py)."""
    mon_v1 = [a for a in cluster.mon_addrs if a.startswith("v1:")][0]  # a live msgr1 port
    for value in (f"[{mon_v1}]", mon_v1, "v1:127.0.0.1:6789,v1:127.0.0.2:6789"):
        cfg = ClientConfig.load(str(cluster.conf_path), mon_host=value, overrides={"ms_mode": "secure"})
        t0 = time.monotonic()
        e, _ = connect_error(cfg, timeout=10)
        assert isinstance(e, ConfigError), (value, repr(e))
        assert time.monotonic() - t0 < 2
        assert "ms_mode secure" in str(e) and value.split(",")[0].strip("[]").removesuffix("/0") in str(e)


def test_missing_conf_and_keyring_are_config_errors_naming_paths(cluster, tmp_path):
    missing = tmp_path / "nope" / "ceph.conf"
    with pytest.raises(ConfigError, match=str(missing)):
        ClientConfig.load(str(missing))
    with pytest.raises(ConfigError, match=str(missing)):
        Rados(conffile=str(missing))
    nokr = tmp_path / "nope.keyring"
    with pytest.raises(ConfigError, match=str(nokr)):
        ClientConfig.load(str(cluster.conf_path), keyring=str(nokr))
    # A keyring that exists but has no key for the entity.
    other = tmp_path / "other.keyring"
    other.write_text(f"[client.someoneelse]\n\tkey = {gen_cephx_key()}\n")
    with pytest.raises(ConfigError, match=str(other)):
        ClientConfig.load(str(cluster.conf_path), keyring=str(other))
    for args, path in ((["-c", str(missing)], missing), (["-c", str(cluster.conf_path), "-k", str(nokr)], nokr)):
        r = cli([*PRBD, *args, "ls"])
        line = error_line(r)
        assert str(path) in line and r.stderr.count("\n") == 1, r.stderr


def test_black_hole_monitor_times_out_in_time(cluster):
    with fake_mon(None) as hole:
        cfg = ClientConfig.load(str(cluster.conf_path), mon_host=f"[v2:127.0.0.1:{hole.port}]")
        e, elapsed = connect_error(cfg, timeout=3)
        assert hole.accepted >= 1  # TCP connected: the silence is above TCP
        assert hole.received.startswith(b"ceph v2\n")  # we did send our banner
    assert isinstance(e, (TimedOut, MonitorUnreachable)), repr(e)
    assert 2.5 <= elapsed < 4.0, elapsed  # waited for the monitor, but no longer than asked
    assert f"127.0.0.1:{hole.port}" in str(e)


@pytest.mark.parametrize("reply", [b"HTTP/1.1 400 Bad Request\r\n\r\n", b"ceph v027\x00" + bytes(200),
                                   b"ceph v2\n\xff\xff" + bytes(16)], ids=["http", "msgr1", "bad-v2-len"])
def test_garbage_banner_mon_is_dropped_for_good_one(cluster, monkeypatch, reply):
    monkeypatch.setattr(random, "shuffle", lambda seq, *a, **k: None)  # keep 'mon host' order
    good = real_v2(cluster)
    with fake_mon(reply) as fake:
        cfg = ClientConfig.load(str(cluster.conf_path), mon_host=f"[v2:127.0.0.1:{fake.port}] [{good}]")

        async def go():
            r, elapsed = await try_connect(cfg, 20)
            try:
                io = await r.open_ioctx("rbd")
                await io.stat("rbd_info")  # the session really works
                return r.monc.cur_mon, elapsed
            finally:
                await r.shutdown()

        cur, elapsed = asyncio.run(go())
        assert fake.accepted >= 1, "the fake monitor was never tried"
    assert cur == f"{good}/0" or cur == good, cur
    # Dropped on the bad bytes, not after the 3 s per-monitor hunt timeout.
    assert elapsed < 2.9, elapsed


# -- pools, images, objects ----------------------------------------------------------------

def test_unknown_pool_api_and_cli(cluster):
    pools = cluster.ceph("osd", "pool", "ls")
    assert "nosuchpool" not in pools

    async def go():
        r, _ = await try_connect(ClientConfig.load(str(cluster.conf_path)), 20)
        try:
            with pytest.raises(PoolNotFound, match="nosuchpool") as ei:
                await r.open_ioctx("nosuchpool")
            assert ei.value.errno == errno.ENOENT
            with pytest.raises(PoolNotFound):
                await r.open_ioctx(999_999)
            assert not r.pool_exists("nosuchpool")
        finally:
            await r.shutdown()

    asyncio.run(go())
    for argv in ([*PRBD, "-c", str(cluster.conf_path), "ls", "nosuchpool"],
                 [*PRBD, "-c", str(cluster.conf_path), "info", "nosuchpool/img"],
                 [*PYCEPH, "-c", str(cluster.conf_path), "osd", "map", "nosuchpool", "obj"]):
        r = cli(argv)
        line = error_line(r)
        assert "PoolNotFound" in line and "nosuchpool" in line and r.stdout == "", (argv, r.stderr)
    assert cluster.ceph("osd", "pool", "ls") == pools


@pytest.fixture
def keeper_image(cluster):
    """An image made by Ceph's own ``rbd`` with known content, removed afterwards."""
    name = "pyceph-errors-keeper"
    cluster.rbd("create", "--size", "4M", f"rbd/{name}")
    src = Path(cluster.dir) / "keeper.in"
    src.write_bytes(random.Random(3).randbytes(1 << 20))
    cluster.rbd("import", "--no-progress", str(src), f"rbd/{name}-data")
    try:
        yield name
    finally:
        for n in (name, f"{name}-data"):
            subprocess.run([*tool(cluster, "rbd"), "-c", str(cluster.conf_path), "rm", "--no-progress", f"rbd/{n}"],
                           capture_output=True, timeout=60)
        src.unlink()


def test_unknown_image_cli(cluster, keeper_image, tmp_path):
    before = sorted(cluster.rbd("ls", "rbd").split())
    assert "nosuchimg" not in before
    out = tmp_path / "export.out"
    conf = ["-c", str(cluster.conf_path)]
    for sub in (["info", "nosuchimg"], ["info", "rbd/nosuchimg"], ["rm", "nosuchimg"],
                ["export", "nosuchimg", str(out)], ["map", "nosuchimg"]):
        r = cli([*PRBD, *conf, *sub], timeout=90)
        line = error_line(r)
        assert "ImageNotFound" in line and "nosuchimg" in line, (sub, r.stderr)
    assert not out.exists()  # export created no file for a missing image
    mapped = cli([*PRBD, *conf, "showmapped"])
    assert mapped.returncode == 0 and "nosuchimg" not in mapped.stdout
    assert sorted(cluster.rbd("ls", "rbd").split()) == before


def test_unknown_image_api(cluster):
    from pyceph.rbd import AsyncImage

    async def go():
        r, _ = await try_connect(ClientConfig.load(str(cluster.conf_path)), 20)
        try:
            io = await r.open_ioctx("rbd")
            with pytest.raises(ImageNotFound) as ei:
                await AsyncImage.open(io, "nosuchimg")
            assert ei.value.errno == errno.ENOENT
        finally:
            await r.shutdown()

    asyncio.run(go())


def test_create_existing_image_is_image_exists(cluster, keeper_image):
    before = json.loads(cluster.rbd("info", "--format", "json", f"rbd/{keeper_image}"))
    images = sorted(cluster.rbd("ls", "rbd").split())
    r = cli([*PRBD, "-c", str(cluster.conf_path), "create", "--size", "8M", keeper_image])
    line = error_line(r)
    assert "ImageExists" in line and keeper_image in line, r.stderr

    async def api_create():
        from pyceph.rbd import AsyncRBD

        r, _ = await try_connect(ClientConfig.load(str(cluster.conf_path)), 20)
        try:
            io = await r.open_ioctx("rbd")
            with pytest.raises(ImageExists) as ei:
                await AsyncRBD().create(io, keeper_image, 16 << 20)
            assert ei.value.errno == errno.EEXIST
        finally:
            await r.shutdown()

    asyncio.run(api_create())
    after = json.loads(cluster.rbd("info", "--format", "json", f"rbd/{keeper_image}"))
    assert after == before and after["size"] == 4 << 20
    assert sorted(cluster.rbd("ls", "rbd").split()) == images
    # The data image imported by Ceph's rbd is intact too.
    out = Path(cluster.dir) / "keeper.out"
    cluster.rbd("export", "--no-progress", f"rbd/{keeper_image}-data", str(out))
    try:
        assert out.read_bytes() == (Path(cluster.dir) / "keeper.in").read_bytes()
    finally:
        out.unlink()
    assert_healthy(cluster)


def test_missing_object_is_object_not_found_enoent(cluster):
    async def go():
        r, _ = await try_connect(ClientConfig.load(str(cluster.conf_path)), 20)
        try:
            io = await r.open_ioctx("rbd")
            for op in (lambda: io.read("pyceph-no-such-object"), lambda: io.stat("pyceph-no-such-object"),
                       lambda: io.remove("pyceph-no-such-object"),
                       lambda: io.get_xattr("pyceph-no-such-object", "x")):
                with pytest.raises(ObjectNotFound) as ei:
                    await op()
                assert ei.value.errno == errno.ENOENT
                assert "pyceph-no-such-object" in str(ei.value)
            # The handle still works after the errors.
            await io.write_full("pyceph-errors-probe", b"still fine")
            got = await io.read("pyceph-errors-probe")
            await io.remove("pyceph-errors-probe")
            return got
        finally:
            await r.shutdown()

    assert asyncio.run(go()) == b"still fine"
    # python-rados surface.
    with Rados(conffile=str(cluster.conf_path)) as r:
        with r.open_ioctx("rbd") as io:
            with pytest.raises(ObjectNotFound) as ei:
                io.read("pyceph-no-such-object")
            assert ei.value.errno == errno.ENOENT
    # Ceph's view: nothing was created by the failed reads.
    assert "pyceph-no-such-object" not in cluster.rados("-p", "rbd", "ls").split()
    assert "pyceph-errors-probe" not in cluster.rados("-p", "rbd", "ls").split()


@pytest.fixture(scope="module", autouse=True)
def blocklist_before(cluster):
    """The OSDMap's blocklist before this module's tests (other modules on a shared
    cluster blocklist dead lock owners on purpose)."""
    return dict(cluster.ceph("osd", "dump")["blocklist"])


def test_cluster_unaffected_by_all_of_the_above(cluster, blocklist_before):
    st = cluster.ceph("status")
    assert st["health"]["status"] == "HEALTH_OK", st["health"]
    states = {s["state_name"]: s["count"] for s in st["pgmap"]["pgs_by_state"]}
    # snapshot trimming left by other modules on a shared cluster is still active+clean
    clean = {k: v for k, v in states.items() if k.split("+")[:2] == ["active", "clean"]
             and set(k.split("+")[2:]) <= {"snaptrim", "snaptrim_wait"}}
    assert sum(clean.values()) == st["pgmap"]["num_pgs"], states
    assert cluster.ceph("osd", "dump")["blocklist"] == blocklist_before
