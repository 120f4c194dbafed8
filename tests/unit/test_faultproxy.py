"""Fault proxy (cable pull) tests: local echo servers on 127.0.0.1, no Ceph needed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest

from pyceph.cluster import cli
from pyceph.cluster import faultproxy as fp
from pyceph.cluster.faultproxy import FaultProxy, FaultProxyError


class Echo:
    """An echo server counting what it received and the connections it accepted."""

    def __init__(self) -> None:
        self.accepted = 0
        self.received = 0
        self.closed_by_reset = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return "127.0.0.1:%d" % self.server.sockets[0].getsockname()[1]

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(w)
        try:
            while data := await r.read(65536):
                self.received += len(data)
                w.write(data)
                await w.drain()
        except ConnectionResetError:
            self.closed_by_reset += 1
        finally:
            w.close()

    async def stop(self) -> None:
        self.server.close()
        for w in self.writers:
            w.close()


def run(coro, timeout: float = 20.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def connect(addr: str):
    host, port = addr.rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def roundtrip(addr: str, payload: bytes) -> bytes:
    r, w = await connect(addr)
    w.write(payload)
    await w.drain()
    got = await r.readexactly(len(payload))
    w.close()
    return got


async def proxied(state_fn):
    """Run ``state_fn(proxy, echo, listen)`` with one route "osd.0" -> an echo server."""
    echo = Echo()
    real = await echo.start()
    proxy = FaultProxy()
    await proxy.start()
    listen = proxy.add_route("osd.0", real)
    try:
        return await state_fn(proxy, echo, listen)
    finally:
        await proxy.stop()
        await echo.stop()


async def until(cond, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- relay


def test_relay_large_data_both_ways_and_half_close():
    async def body(proxy, echo, listen):
        assert listen.startswith("127.0.0.1:") and listen != proxy.routes()["osd.0"]["real"]
        payload = os.urandom(8 << 20)
        r, w = await connect(listen)

        async def send():
            for i in range(0, len(payload), 1 << 20):
                w.write(payload[i:i + (1 << 20)])
                await w.drain()
            w.write_eof()  # half-close travels through; the echo server then closes

        sender = asyncio.create_task(send())
        got = await r.read(-1)  # until EOF
        await sender
        w.close()
        assert got == payload
        st = proxy.routes()["osd.0"]
        assert st["bytes_to_daemon"] == st["bytes_to_client"] == len(payload)
        assert st["connections"] == 1 and st["state"] == "pass"
        await until(lambda: proxy.routes()["osd.0"]["active"] == 0)

    run(proxied(body))


def test_many_concurrent_connections():
    async def body(proxy, echo, listen):
        payloads = [os.urandom(128 << 10) for _ in range(64)]
        got = await asyncio.gather(*(roundtrip(listen, p) for p in payloads))
        assert got == payloads
        st = proxy.routes()["osd.0"]
        assert st["connections"] == 64 and echo.accepted == 64
        assert st["bytes_to_daemon"] == st["bytes_to_client"] == 64 * (128 << 10)
        await until(lambda: proxy.routes()["osd.0"]["active"] == 0)

    run(proxied(body))


def test_daemon_down_resets_client():
    async def body():
        proxy = FaultProxy()
        await proxy.start()
        # a port nobody listens on: the proxy accepts, fails to connect, resets the client
        listen = proxy.add_route("osd.9", "127.0.0.1:1")
        r, w = await connect(listen)
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(r.read(10), 2)
        w.close()
        assert proxy.routes()["osd.9"]["upstream_errors"] == 1
        await proxy.stop()

    run(body())


# --------------------------------------------------------------------------- fault states


def test_drop_resets_existing_and_new_connections():
    async def body(proxy, echo, listen):
        r, w = await connect(listen)
        w.write(b"hello")
        assert await r.readexactly(5) == b"hello"
        t0 = time.monotonic()
        assert proxy.set_state("osd.0", "drop") == "drop"
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(r.read(10), 2)
        assert time.monotonic() - t0 < 0.5
        w.close()
        await until(lambda: echo.closed_by_reset == 1)  # the daemon's side was reset too
        with pytest.raises(ConnectionResetError):  # accepted by the kernel, then reset:
            r2, w2 = await connect(listen)  # the client sees it at connect or first read
            try:
                await asyncio.wait_for(r2.read(10), 2)
            finally:
                w2.close()
        assert echo.accepted == 1
        proxy.set_state("osd.0", "restore")
        assert await roundtrip(listen, b"back") == b"back"
        st = proxy.routes()["osd.0"]
        assert st["resets"] == 2 and st["connections"] == 3 and st["state"] == "pass"

    run(proxied(body))


def test_reset_and_refuse_keep_the_port():
    async def body(proxy, echo, listen):
        r, w = await connect(listen)
        w.write(b"x")
        assert await r.readexactly(1) == b"x"
        proxy.set_state("osd.0", "reset")  # RST existing + refuse new
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(r.read(10), 2)
        w.close()
        with pytest.raises(ConnectionRefusedError):
            await connect(listen)
        assert proxy.routes()["osd.0"]["listening"] is False
        proxy.set_state("osd.0", "pass")
        assert proxy.routes()["osd.0"]["listen"] == listen
        r, w = await connect(listen)
        w.write(b"y")
        assert await r.readexactly(1) == b"y"

        proxy.set_state("osd.0", "refuse")  # existing connections keep relaying
        with pytest.raises(ConnectionRefusedError):
            await connect(listen)
        w.write(b"still")
        assert await asyncio.wait_for(r.readexactly(5), 2) == b"still"
        proxy.set_state("osd.0", "restore")
        assert await roundtrip(listen, b"again") == b"again"
        w.close()

    run(proxied(body))


def test_stall_holds_everything_then_resumes_in_order():
    async def body(proxy, echo, listen):
        r, w = await connect(listen)
        w.write(b"ping")
        assert await r.readexactly(4) == b"ping"
        received, accepted = echo.received, echo.accepted
        assert proxy.set_state("osd.0", "pull") == "stall"

        big = os.urandom(300 << 10)
        w.write(big)  # more than the kernel buffers: the writer side backs up
        r2, w2 = await connect(listen)  # a reconnect during the stall: accepted, held
        small = os.urandom(10 << 10)
        w2.write(small)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(r.read(1), 1.2)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(r2.read(1), 0.1)
        assert echo.received == received and echo.accepted == accepted  # nothing reached the daemon
        assert not w.is_closing() and not w2.is_closing() and not r.at_eof()
        st = proxy.routes()["osd.0"]
        assert st["state"] == "stall" and st["stalled"] == 2 and st["connections"] == 2

        proxy.set_state("osd.0", "restore")
        got, got2 = await asyncio.wait_for(asyncio.gather(r.readexactly(len(big)), r2.readexactly(len(small))), 5)
        assert got == big and got2 == small
        assert echo.accepted == accepted + 1
        w.close()
        w2.close()

    run(proxied(body))


def test_drop_while_stalled_resets_held_connections():
    async def body(proxy, echo, listen):
        r, w = await connect(listen)
        w.write(b"a")
        assert await r.readexactly(1) == b"a"
        proxy.set_state("osd.0", "stall")
        r2, w2 = await connect(listen)
        await until(lambda: proxy.routes()["osd.0"]["active"] == 2)
        proxy.set_state("osd.0", "drop")
        for rr in (r, r2):
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(rr.read(10), 2)
        w.close()
        w2.close()
        assert echo.accepted == 1
        await until(lambda: proxy.routes()["osd.0"]["active"] == 0)

    run(proxied(body))


def test_errors_and_matching():
    async def body(proxy, echo, listen):
        with pytest.raises(FaultProxyError):
            proxy.set_state("osd.0", "unplug")
        with pytest.raises(FaultProxyError):
            proxy.set_state("osd.7", "stall")
        with pytest.raises(FaultProxyError):
            proxy.add_route("bad", "no-port")
        l2 = proxy.add_route("mon.a", "127.0.0.1:1")
        assert proxy.match("osd.*") == ["osd.0"]
        assert proxy.match("all") == ["osd.0", "mon.a"]
        assert proxy.match("mon.a,osd.0") == ["mon.a", "osd.0"]
        assert proxy.connect_map() == {proxy.routes()["osd.0"]["real"]: listen, "127.0.0.1:1": l2}
        proxy.update_route("mon.a", "127.0.0.1:2")
        assert proxy.add_route("mon.a", "127.0.0.1:3") == l2  # same proxy port for the daemon
        proxy.remove_route("mon.a")
        assert list(proxy.routes()) == ["osd.0"]

    run(proxied(body))


def test_routes_from_dumps():
    def av(port):
        return {"addrvec": [{"type": "v2", "addr": f"127.0.0.1:{port}", "nonce": 1},
                            {"type": "v1", "addr": f"127.0.0.1:{port + 1}", "nonce": 1}]}

    osd = {"osds": [{"osd": 0, "up": 1, "public_addrs": av(6800), "cluster_addrs": av(6802)},
                    {"osd": 1, "up": 0, "public_addrs": {"addrvec": []}}]}
    mgr = {"active_name": "x", "active_addrs": av(6810), "available": True}
    assert fp.routes_from_dumps(osd, mgr) == {"osd.0": "127.0.0.1:6800", "mgr.x": "127.0.0.1:6810"}
    assert fp.routes_from_dumps(None, {"active_name": ""}) == {}
    text = json.dumps(osd) + "\n" + json.dumps(mgr) + "\n"
    assert fp._decode_json_stream(text) == [osd, mgr]


# --------------------------------------------------------------------------- daemon mode


@pytest.fixture
def fake_cluster(tmp_path):
    """A DevCluster directory whose one "mon" is a threaded echo server; no daemons run."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    stop = threading.Event()

    def echo_conn(c):
        with c:
            while data := c.recv(65536):
                c.sendall(data)

    def serve():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            c.settimeout(10)
            threading.Thread(target=echo_conn, args=(c,), daemon=True).start()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    (tmp_path / "cluster.json").write_text(json.dumps(
        {"fsid": "00000000-0000-0000-0000-000000000000", "mons": [{"id": "a", "v2": port, "v1": port + 1}],
         "mon_host": f"[v2:127.0.0.1:{port}]", "osds": 0}))
    yield tmp_path, f"127.0.0.1:{port}"
    stop.set()
    t.join(2)
    srv.close()
    pid = fp._read_pid(tmp_path / fp.PID_FILE)
    if pid and fp.proxy_pid(tmp_path):
        os.kill(pid, signal.SIGKILL)


def _sync_roundtrip(addr: str, data: bytes, timeout: float = 3.0) -> bytes:
    import socket

    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        buf = b""
        while len(buf) < len(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return buf


def test_daemon_mode_socket_map_cli_and_cleanup(fake_cluster, capsys):
    import socket

    d, mon_real = fake_cluster
    pid = fp.start_proxy(d, check_interval=0.2, orphan_timeout=120)
    assert fp.proxy_pid(d) == pid
    assert fp.start_proxy(d) == pid  # idempotent
    cmap = json.loads((d / fp.MAP_FILE).read_text())
    assert list(cmap) == [mon_real]
    listen = cmap[mon_real]
    assert (d / fp.SOCK_FILE).exists() and fp._read_pid(d / fp.PID_FILE) == pid
    st = fp.status(d)
    assert st["routes"]["mon.a"]["listen"] == listen and st["map"] == cmap
    assert _sync_roundtrip(listen, b"through the proxy") == b"through the proxy"

    # pull the cable: an open connection and a new one both hang; restore resumes them
    s = socket.create_connection(tuple((listen.split(":")[0], int(listen.split(":")[1]))), timeout=3)
    assert fp.cable(d, "mon.a", "pull")["mon.a"]["state"] == "stall"
    s.sendall(b"held")
    s.settimeout(0.5)
    with pytest.raises(socket.timeout):
        s.recv(10)
    assert fp.cable(d, "all", "restore")["mon.a"]["state"] == "pass"
    s.settimeout(3)
    assert s.recv(10) == b"held"
    s.close()

    # the CLI: cable reset -> refused; restore; proxy status
    assert cli.main(["cable", "reset", "mon.a", "--dir", str(d)]) == 0
    with pytest.raises(ConnectionRefusedError):
        _sync_roundtrip(listen, b"x")
    assert cli.main(["cable", "restore", "mon.*", "--dir", str(d)]) == 0
    assert _sync_roundtrip(listen, b"ok") == b"ok"
    assert cli.main(["cable", "pull", "osd.5", "--dir", str(d)]) == 1  # no such route
    assert cli.main(["proxy", "status", "--dir", str(d), "--format", "json"]) == 0
    out = capsys.readouterr()
    assert "osd.5" in out.err
    assert json.loads(out.out[out.out.index("{"):])["routes"]["mon.a"]["connections"] == 3

    # control protocol extras: add a route, bad requests
    add = fp.request(d, {"cmd": "add", "name": "osd.0", "addr": mon_real.replace(mon_real.split(":")[1], "1")})
    assert json.loads((d / fp.MAP_FILE).read_text())["127.0.0.1:1"] == add["listen"]
    with pytest.raises(FaultProxyError, match="unknown command"):
        fp.request(d, {"cmd": "explode"})
    with pytest.raises(FaultProxyError, match="bad state"):
        fp.cable(d, "mon.a", "melt")

    assert cli.main(["proxy", "stop", "--dir", str(d)]) == 0
    assert not fp._pid_alive(pid)
    assert not any((d / f).exists() for f in (fp.SOCK_FILE, fp.MAP_FILE, fp.PID_FILE))
    assert fp.stop_proxy(d) is False
    with pytest.raises(fp.FaultProxyNotRunning):
        fp.status(d)
    assert cli.main(["proxy", "status", "--dir", str(d)]) == cli.EXIT_NOT_RUNNING


def test_daemon_stops_by_itself(fake_cluster):
    d, _ = fake_cluster
    pid = fp.start_proxy(d, check_interval=0.1, orphan_timeout=0.5)  # no cluster daemon runs
    deadline = time.monotonic() + 5
    while fp._pid_alive(pid):
        fp._reap(pid)
        assert time.monotonic() < deadline, "proxy daemon did not exit by itself"
        time.sleep(0.05)
    assert not (d / fp.SOCK_FILE).exists() and not (d / fp.MAP_FILE).exists()

    pid = fp.start_proxy(d, check_interval=0.1, orphan_timeout=120)
    (d / "cluster.json").unlink()  # cluster removed
    deadline = time.monotonic() + 5
    while fp._pid_alive(pid):
        fp._reap(pid)
        assert time.monotonic() < deadline, "proxy daemon did not exit after its cluster went away"
        time.sleep(0.05)
    assert not (d / fp.PID_FILE).exists()
