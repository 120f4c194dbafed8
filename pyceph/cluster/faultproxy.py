"""Fault proxy: a TCP relay between the client and chosen Ceph daemons that pulls their cables.

The client's traffic to a daemon is pointed at the proxy by a *connect map*
(``DIR/connect-map.json``, ``{"127.0.0.1:6800": "127.0.0.1:41234", ...}``: the daemon's
real msgr2 address as the OSDMap/MonMap advertise it -> the address to TCP-connect to).
The relay is transparent (msgr2 bytes untouched; the client still names the real address
as its target in client_ident, which the daemon checks).

One listener ("route") per daemon, on a free 127.0.0.1 port that stays the same for the
proxy's lifetime, even while refusing (a bound, never-listening twin socket holds it) and
when the daemon restarts on another port.  Each route is in one state:

``pass``    relay both ways.
``stall``   cable pulled (blackhole): existing connections forward nothing either way and
            stay open; new connections are accepted (the kernel answers the SYN, which
            userspace cannot suppress) and held without connecting to the daemon.  Data is
            kept (the kernel socket buffers fill, then the sender blocks): leaving
            ``stall`` resumes every connection with its data intact and in order; held new
            connections then connect to the daemon.  Nothing is ever closed by a stall.
``drop``    every existing connection is reset (RST: SO_LINGER 0, to the client and to
            the daemon); new connections are accepted and reset at once.
``refuse``  the listener is closed: new connections get ECONNREFUSED; existing
            connections keep relaying.
``reset``   ``drop`` for existing connections + ``refuse`` for new ones (a crashed
            daemon, seen from the client).
Aliases: ``restore`` = ``pass``, ``pull`` = ``stall``.  A connection whose daemon side
fails (refused, reset) is reset towards the client too; EOF is relayed as a half-close.

In-process API (asyncio, one event loop)::

    proxy = FaultProxy(); await proxy.start()
    listen = proxy.add_route("osd.1", "127.0.0.1:6800")     # -> "127.0.0.1:P"
    proxy.set_state("osd.1", "stall"); proxy.set_state("osd.1", "restore")
    proxy.routes()      # {name: {"state", "real", "listen", "connections", ...}}
    await proxy.stop()

Daemon mode, for a :class:`~pyceph.cluster.DevCluster` directory::

    python -m pyceph.cluster.faultproxy serve --dir DIR      # foreground; or start_proxy(DIR)

routes every mon (msgr2 port from DIR/cluster.json), OSD and mgr (public msgr2 address
from ``ceph osd dump`` / ``ceph mgr dump``), writes ``DIR/connect-map.json`` (atomically
replaced), ``DIR/faultproxy.pid`` and the control socket ``DIR/faultproxy.sock``, logs to
stdout (``start_proxy`` runs it with ``--daemonize`` and sends that to
``DIR/log/faultproxy.log``).  Every second it reads the daemons' pid files; a daemon with a
new pid makes it re-read the dumps (every 2 s, backing off to 15 s) until they show a port
that the new instance listens on; the dumps are also re-read every 30 s and on the
``refresh`` command.  When an address changes, the route keeps its proxy port and state;
the old address stays in the map (pointing at the same proxy port, unless another daemon
now owns it) so a client with an older OSDMap never bypasses the proxy (the daemon then
rejects the stale target address itself).  It exits by itself when DIR/cluster.json goes
away or changes fsid, when no daemon of the cluster has run for ``orphan_timeout`` s,
after ``max_lifetime`` s, or when its socket file is removed; on exit it removes the map,
socket and pid files.

Control protocol: JSON lines over the unix socket, one reply line per request line::

    {"cmd": "ping"}                              -> {"ok": true, "pid": N, "dir": "..."}
    {"cmd": "status"}                            -> {"ok": true, "routes": {...}, "map": {...}, ...}
    {"cmd": "set", "name": "osd.*", "state": "stall"}  -> {"ok": true, "routes": {changed...}}
    {"cmd": "refresh"}                           -> like status, after re-reading the dumps
    {"cmd": "add", "name": "x", "addr": "127.0.0.1:P"} -> {"ok": true, "listen": "127.0.0.1:Q"}
    {"cmd": "stop"}                              -> {"ok": true}, then the daemon exits
    errors: {"ok": false, "error": "message"}

``name`` in ``set`` is a daemon name, a comma-separated list, an fnmatch pattern
(``osd.*``) or ``all``.  Client helpers for other processes: :func:`start_proxy`,
:func:`stop_proxy`, :func:`cable`, :func:`status`, :func:`refresh`, :func:`request`.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from pyceph.cluster.launcher import (
    ClusterError,
    ClusterNotRunning,
    DevCluster,
    _listening_ports,
    _pid_alive,
    _proc_cmdline,
)

log = logging.getLogger("pyceph.faultproxy")

STATES = ("pass", "stall", "drop", "refuse", "reset")
ALIASES = {"restore": "pass", "pull": "stall"}
MAP_FILE = "connect-map.json"
SOCK_FILE = "faultproxy.sock"
PID_FILE = "faultproxy.pid"
LOG_FILE = "log/faultproxy.log"
CHUNK = 256 * 1024
_LINGER0 = struct.pack("ii", 1, 0)


class FaultProxyError(ClusterError):
    """Bad route/state, or the proxy daemon answered with an error."""


class FaultProxyNotRunning(FaultProxyError):
    """No fault proxy daemon answers on DIR/faultproxy.sock."""


def _split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise FaultProxyError(f"bad address {addr!r}; want IP:PORT")
    return host.strip("[]"), int(port)


def _linger0(sock: Any) -> None:
    """Make the next close() of ``sock`` send RST (SO_LINGER on, timeout 0)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
    except (OSError, AttributeError):
        pass


# --------------------------------------------------------------------------- relay


class _Conn:
    """One relayed connection: the accepted client socket and (once connected) the daemon's."""

    def __init__(self, route: Route, csock: socket.socket):
        self.route = route
        self.csock = csock
        self.cw: asyncio.StreamWriter | None = None  # client side, once wrapped
        self.uw: asyncio.StreamWriter | None = None  # daemon side, once connected
        self.task: asyncio.Task | None = None
        self.pumps: list[asyncio.Task] = []
        self.dead = False

    def reset(self) -> None:
        """RST both ends now (idempotent)."""
        if self.dead:
            return
        self.dead = True
        self.route.resets += 1
        for w in (self.cw, self.uw):
            if w is not None:
                _linger0(w.get_extra_info("socket"))
                w.transport.abort()
        if self.cw is None:
            _linger0(self.csock)
            self.csock.close()
        me = asyncio.current_task()
        for t in (*self.pumps, self.task):
            if t is not None and t is not me:
                t.cancel()


class Route:
    """One proxied daemon: a listener on ``listen`` relaying to ``real``."""

    def __init__(self, name: str, real: str, host: str, port: int):
        self.name = name
        self.real = real
        self.state = "pass"
        self.since = time.time()
        self.gate = asyncio.Event()  # set unless stalled
        self.gate.set()
        self.conns: set[_Conn] = set()
        self.connections = 0  # accepted in total
        self.bytes_to_daemon = 0
        self.bytes_to_client = 0
        self.resets = 0  # connections we reset (drop/reset states, daemon-side failures)
        self.upstream_errors = 0  # connects to the daemon that failed
        self.error: str | None = None  # last listener error (re-listen failed)
        # The twin socket keeps the port ours while the listener is closed (refuse/reset).
        self._reserve = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._reserve.bind((host, port))
        except OSError:
            self._reserve.close()
            raise
        self.host, self.port = self._reserve.getsockname()[:2]
        self.lsock: socket.socket | None = None

    @property
    def listen(self) -> str:
        return f"{self.host}:{self.port}"

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "real": self.real,
            "listen": self.listen,
            "state": self.state,
            "since": round(self.since, 3),
            "listening": self.lsock is not None,
            "connections": self.connections,
            "active": len(self.conns),
            "stalled": len(self.conns) if self.state == "stall" else 0,
            "bytes_to_daemon": self.bytes_to_daemon,
            "bytes_to_client": self.bytes_to_client,
            "resets": self.resets,
            "upstream_errors": self.upstream_errors,
            "error": self.error,
        }


class FaultProxy:
    """Asyncio TCP relay with one listener per route and per-route fault states.

    All methods must be called from the event loop's thread; :meth:`add_route` and
    :meth:`set_state` are synchronous and take effect before they return (a ``drop``
    has reset every connection, a ``refuse`` has closed the listener).
    """

    def __init__(self, host: str = "127.0.0.1", *, connect_timeout: float = 5.0):
        self.host = host
        self.connect_timeout = connect_timeout
        self._routes: dict[str, Route] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start listening on every route added so far (later routes listen at once)."""
        self._loop = asyncio.get_running_loop()
        for r in self._routes.values():
            if r.state not in ("refuse", "reset"):
                self._listen(r)

    async def stop(self) -> None:
        """Close every listener and reset every connection; the routes are gone."""
        tasks = []
        for r in self._routes.values():
            self._unlisten(r)
            for c in list(r.conns):
                if c.task is not None:
                    tasks.append(c.task)
                c.reset()
            r._reserve.close()
        self._routes.clear()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        self._loop = None

    # -- routes ----------------------------------------------------------------

    def add_route(self, name: str, real_addr: str, listen_port: int = 0) -> str:
        """Route ``name`` to ``real_addr`` ("ip:port"); return the proxy's "ip:port" for it.

        Re-adding an existing name just changes its daemon address (see :meth:`update_route`).
        """
        _split_addr(real_addr)
        if name in self._routes:
            self.update_route(name, real_addr)
            return self._routes[name].listen
        r = Route(name, real_addr, self.host, listen_port)
        self._routes[name] = r
        if self._loop is not None:
            try:
                self._listen(r)
            except OSError:
                r._reserve.close()
                del self._routes[name]
                raise
        log.info("route %s: %s -> %s", name, r.listen, real_addr)
        return r.listen

    def update_route(self, name: str, real_addr: str) -> None:
        """Point route ``name`` at a new daemon address; existing connections are untouched."""
        _split_addr(real_addr)
        r = self._route(name)
        if r.real != real_addr:
            log.info("route %s: %s -> %s (was %s)", name, r.listen, real_addr, r.real)
            r.real = real_addr

    def remove_route(self, name: str) -> None:
        """Close route ``name``'s listener, reset its connections and free its port."""
        r = self._routes.pop(name)
        self._unlisten(r)
        for c in list(r.conns):
            c.reset()
        r._reserve.close()

    def routes(self) -> dict[str, dict[str, Any]]:
        """``{name: stats}``: state, real/listen addresses, connections (total), active,
        stalled, bytes_to_daemon, bytes_to_client, resets, upstream_errors, since."""
        return {n: r.info() for n, r in self._routes.items()}

    def connect_map(self) -> dict[str, str]:
        """``{real addr: proxy addr}`` for every route."""
        return {r.real: r.listen for r in self._routes.values()}

    def _route(self, name: str) -> Route:
        try:
            return self._routes[name]
        except KeyError:
            raise FaultProxyError(f"no route {name!r} (have: {', '.join(self._routes) or 'none'})") from None

    def match(self, pattern: str) -> list[str]:
        """Route names matching ``pattern``: a name, "a,b", an fnmatch pattern or "all"."""
        out: list[str] = []
        for p in (x.strip() for x in pattern.split(",")):
            hits = list(self._routes) if p in ("all", "*") else fnmatch.filter(self._routes, p)
            if not hits:
                raise FaultProxyError(f"no route matches {p!r} (have: {', '.join(self._routes) or 'none'})")
            out += [h for h in hits if h not in out]
        return out

    # -- states ------------------------------------------------------------------

    def set_state(self, name: str, state: str) -> str:
        """Put route ``name`` into ``state`` (see the module doc); returns the canonical state."""
        state = ALIASES.get(state, state)
        if state not in STATES:
            raise FaultProxyError(f"bad state {state!r}; want one of {', '.join(STATES + tuple(ALIASES))}")
        r = self._route(name)
        if state == r.state:
            return state
        log.info("route %s: %s -> %s", name, r.state, state)
        r.state, r.since = state, time.time()
        if state in ("drop", "reset"):
            for c in list(r.conns):
                c.reset()
        if state == "stall":
            r.gate.clear()
        else:
            r.gate.set()
        if state in ("refuse", "reset"):
            self._unlisten(r)
        elif r.lsock is None and self._loop is not None:
            self._listen(r)
        return state

    # -- listener ----------------------------------------------------------------

    def _listen(self, r: Route) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((r.host, r.port))
            s.listen(128)
            s.setblocking(False)
        except OSError as e:
            s.close()
            r.error = f"cannot listen on {r.listen}: {e}"
            raise FaultProxyError(r.error) from e
        r.lsock, r.error = s, None
        assert self._loop is not None
        self._loop.add_reader(s.fileno(), self._on_acceptable, r)

    def _unlisten(self, r: Route) -> None:
        if r.lsock is not None:
            if self._loop is not None:
                self._loop.remove_reader(r.lsock.fileno())
            r.lsock.close()  # connections still in the backlog get RST
            r.lsock = None

    def _on_acceptable(self, r: Route) -> None:
        for _ in range(64):
            if r.lsock is None:
                return
            try:
                csock, _peer = r.lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and friends: leave it in the backlog
                log.warning("route %s: accept: %s", r.name, e)
                return
            r.connections += 1
            csock.setblocking(False)
            if r.state == "drop":
                r.resets += 1
                _linger0(csock)
                csock.close()
                continue
            csock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(r, csock)
            r.conns.add(conn)
            assert self._loop is not None
            conn.task = self._loop.create_task(self._serve(conn))

    async def _serve(self, conn: _Conn) -> None:
        r = conn.route
        try:
            await r.gate.wait()  # a connection made during a stall waits here, unseen by the daemon
            host, port = _split_addr(r.real)
            try:
                ur, uw = await asyncio.wait_for(asyncio.open_connection(host, port, limit=CHUNK), self.connect_timeout)
            except (OSError, asyncio.TimeoutError) as e:
                r.upstream_errors += 1
                log.info("route %s: connect %s: %s", r.name, r.real, e or type(e).__name__)
                conn.reset()
                return
            conn.uw = uw
            if conn.dead:
                _linger0(uw.get_extra_info("socket"))
                uw.transport.abort()
                return
            uw.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            cr, cw = await asyncio.open_connection(sock=conn.csock, limit=CHUNK)
            conn.cw = cw
            if conn.dead:  # reset while we were wrapping the socket
                _linger0(cw.get_extra_info("socket"))
                cw.transport.abort()
                return
            conn.pumps = [
                asyncio.create_task(self._pump(conn, cr, uw, "bytes_to_daemon")),
                asyncio.create_task(self._pump(conn, ur, cw, "bytes_to_client")),
            ]
            await asyncio.gather(*conn.pumps, return_exceptions=True)
        except asyncio.CancelledError:
            pass
        finally:
            r.conns.discard(conn)
            if not conn.dead:
                conn.dead = True
                for w in (conn.cw, conn.uw):
                    if w is not None:
                        w.close()
                if conn.cw is None:
                    conn.csock.close()

    async def _pump(self, conn: _Conn, src: asyncio.StreamReader, dst: asyncio.StreamWriter, counter: str) -> None:
        r = conn.route
        try:
            while True:
                await r.gate.wait()  # stalled: stop reading, the kernel buffers back up
                data = await src.read(CHUNK)
                if conn.dead:
                    return
                if not data:
                    if dst.can_write_eof() and not dst.is_closing():
                        dst.write_eof()  # relay a half-close
                    return
                await r.gate.wait()  # stalled while holding a chunk: keep it
                if conn.dead:
                    return
                dst.write(data)
                setattr(r, counter, getattr(r, counter) + len(data))
                await dst.drain()
        except (ConnectionError, OSError):
            conn.reset()  # one side reset (or failed): reset the other too


# --------------------------------------------------------------------------- daemon


def _v2_addr(addrvec: Any) -> str | None:
    """The "ip:port" of the v2 entry of a Ceph addrvec (dict with "addrvec", or a list);
    of the v1 entry if there is no v2 one (a msgr1-only cluster)."""
    if isinstance(addrvec, dict):
        addrvec = addrvec.get("addrvec", [])
    for want in ("v2", "v1"):
        for a in addrvec or []:
            if a.get("type") == want and a.get("addr"):
                _host, port = _split_addr(a["addr"])
                if port:
                    return a["addr"]
    return None


def routes_from_dumps(osd_dump: dict | None, mgr_dump: dict | None) -> dict[str, str]:
    """``{"osd.N": "ip:port", "mgr.X": ...}``: public msgr2 addresses in ``ceph osd dump``
    and ``ceph mgr dump`` JSON (OSDs without a v2 address, e.g. never booted, are left out)."""
    out: dict[str, str] = {}
    for o in (osd_dump or {}).get("osds", []):
        addr = _v2_addr(o.get("public_addrs"))
        if addr:
            out[f"osd.{o['osd']}"] = addr
    if mgr_dump and mgr_dump.get("active_name"):
        addr = _v2_addr(mgr_dump.get("active_addrs"))
        if addr:
            out[f"mgr.{mgr_dump['active_name']}"] = addr
    return out


def _decode_json_stream(text: str) -> list[Any]:
    dec, i, out = json.JSONDecoder(), 0, []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        obj, i = dec.raw_decode(text, i)
        out.append(obj)


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


class ProxyDaemon:
    """The ``serve`` loop: a :class:`FaultProxy` for every daemon of a DevCluster + control socket."""

    def __init__(
        self,
        dir: str | os.PathLike[str],  # noqa: A002
        *,
        check_interval: float = 1.0,
        orphan_timeout: float = 60.0,
        max_lifetime: float = 4 * 3600.0,
        extra_routes: dict[str, str] | None = None,
        ready_fd: int | None = None,
    ):
        self.cluster = DevCluster(dir)
        self.ready_fd = ready_fd  # gets "ok\n" once serving, then is closed
        self.dir = self.cluster.dir
        self.map_path = self.dir / MAP_FILE
        self.sock_path = self.dir / SOCK_FILE
        self.pid_path = self.dir / PID_FILE
        self.check_interval = check_interval
        self.orphan_timeout = orphan_timeout
        self.max_lifetime = max_lifetime
        self.extra_routes = dict(extra_routes or {})
        self.proxy = FaultProxy()
        self._stale: dict[str, str] = {}  # old real addr -> route name
        self._map: dict[str, str] = {}
        self._pids: dict[str, int | None] = {}
        self._last_dump = 0.0
        self._gap = 2.0
        self._last_unsettled: list[str] = []
        self._dump_lock = asyncio.Lock()
        self.last_refresh: float | None = None
        self.refresh_error: str | None = None
        self._stop = asyncio.Event()
        self._fsid: str | None = None

    # -- routes from the cluster ------------------------------------------------------

    def _mon_routes(self) -> dict[str, str]:
        return {f"mon.{m['id']}": f"127.0.0.1:{m.get('v2') or m['v1']}" for m in self.cluster.state["mons"]}

    def _dumps(self) -> dict[str, str]:
        """Run ``ceph osd dump; ceph mgr dump`` in one CLI process (blocking: use a thread)."""
        text = self.cluster._run(
            ["ceph", "-c", str(self.cluster.conf_path), "--connect-timeout", "10", "-f", "json"], 15,  # the release's
            input="osd dump\nmgr dump\n",
        )
        objs = _decode_json_stream(text)
        osd = next((o for o in objs if isinstance(o, dict) and "osds" in o), None)
        mgr = next((o for o in objs if isinstance(o, dict) and "active_addrs" in o), None)
        return routes_from_dumps(osd, mgr)

    async def refresh(self, *, min_gap: float = 0.0) -> None:
        """Re-read the dumps (unless they were read less than ``min_gap`` s ago), update routes."""
        async with self._dump_lock:
            if time.monotonic() - self._last_dump < min_gap:
                return
            self._last_dump = time.monotonic()
            try:
                found = await asyncio.to_thread(self._dumps)
            except (ClusterError, ValueError, OSError) as e:
                self.refresh_error = str(e).splitlines()[0] if str(e) else type(e).__name__
                log.warning("refresh failed: %s", self.refresh_error)
                return
            self.refresh_error = None
            self.last_refresh = time.time()
            self._apply(found)

    def _apply(self, found: dict[str, str]) -> None:
        routes = self.proxy.routes()
        for name, addr in found.items():
            old = routes.get(name, {}).get("real")
            if old is not None and old != addr:
                self._stale[old] = name
            self.proxy.add_route(name, addr)
        self._write_map()

    def _write_map(self) -> None:
        routes = self.proxy.routes()
        m = {a: routes[n]["listen"] for a, n in self._stale.items() if n in routes}
        m.update(self.proxy.connect_map())  # current owners win over stale entries
        if m != self._map or not self.map_path.exists():
            _write_json_atomic(self.map_path, m)
            self._map = m

    def _unsettled(self, pids: dict[str, int | None]) -> list[str]:
        """OSD/mgr daemons that run but are not known to be reached by their route (new pid)."""
        routes = self.proxy.routes()
        return [n for n, pid in pids.items()
                if not n.startswith("mon.") and pid is not None and (pid != self._pids.get(n) or n not in routes)]

    def _settle(self, names: list[str]) -> None:
        """Mark daemons whose routed port their current instance listens on as reached."""
        pids, routes = self.cluster.pids(), self.proxy.routes()
        for name in names:
            pid = pids.get(name)
            if pid and name in routes and _split_addr(routes[name]["real"])[1] in _listening_ports(pid):
                self._pids[name] = pid

    async def _check(self, pids: dict[str, int | None]) -> None:
        """One periodic pass: follow restarted daemons, decide whether to exit."""
        try:
            st = self.cluster.state
        except ClusterNotRunning:
            st = None
        if st is None or (self._fsid is not None and st.get("fsid") != self._fsid):
            log.info("cluster in %s is gone or was re-created: exiting", self.dir)
            self._stop.set()
            return
        if not self._sock_is_ours():
            log.info("control socket %s removed or replaced: exiting", self.sock_path)
            self._stop.set()
            return
        # A restarted daemon (new pid) may listen on another port: re-read the dumps (at
        # most every 2 s) until they show a port the new instance listens on.
        # The gap grows (up to 15 s) while a daemon stays unsettled (e.g. does not boot).
        unsettled = self._unsettled(pids)
        if unsettled != self._last_unsettled:
            self._gap = 2.0
        self._last_unsettled = unsettled
        if unsettled or time.monotonic() - self._last_dump > 30.0:
            before = self._last_dump
            await self.refresh(min_gap=self._gap)
            if not self.refresh_error:
                self._settle(unsettled)
            if self._last_dump != before and self._unsettled(pids):
                self._gap = min(self._gap * 1.5, 15.0)

    def _sock_is_ours(self) -> bool:
        try:
            return os.stat(self.sock_path).st_ino == self._sock_ino
        except OSError:
            return False

    # -- control socket ------------------------------------------------------------------

    def _status(self) -> dict[str, Any]:
        return {
            "ok": True,
            "pid": os.getpid(),
            "dir": str(self.dir),
            "map_path": str(self.map_path),
            "map": self._map,
            "routes": self.proxy.routes(),
            "last_refresh": self.last_refresh,
            "refresh_error": self.refresh_error,
        }

    async def _command(self, req: Any) -> dict[str, Any]:
        if not isinstance(req, dict):
            raise FaultProxyError("request must be a JSON object")
        cmd = req.get("cmd")
        if cmd == "ping":
            return {"ok": True, "pid": os.getpid(), "dir": str(self.dir)}
        if cmd == "status":
            return self._status()
        if cmd == "set":
            names = self.proxy.match(str(req.get("name", "")))
            state = str(req.get("state", ""))
            for n in names:
                self.proxy.set_state(n, state)
            routes = self.proxy.routes()
            return {"ok": True, "routes": {n: routes[n] for n in names}}
        if cmd == "refresh":
            await self.refresh()
            if self.refresh_error:
                raise FaultProxyError(f"refresh failed: {self.refresh_error}")
            return self._status()
        if cmd == "add":
            listen = self.proxy.add_route(str(req["name"]), str(req["addr"]))
            self._write_map()
            return {"ok": True, "listen": listen}
        if cmd == "stop":
            self._stop.set()
            return {"ok": True}
        raise FaultProxyError(f"unknown command {cmd!r}")

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    reply = await self._command(json.loads(line))
                except (FaultProxyError, ValueError, KeyError, TypeError) as e:
                    reply = {"ok": False, "error": str(e)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    # -- main ----------------------------------------------------------------------------

    async def run(self) -> int:
        t0 = time.monotonic()
        if self.sock_path.exists():
            try:
                request(self.dir, {"cmd": "ping"}, timeout=2)
                log.error("a fault proxy already serves %s", self.dir)
                return 1
            except FaultProxyNotRunning:
                self.sock_path.unlink(missing_ok=True)
        try:
            st = self.cluster.state
            self._fsid = st.get("fsid")
        except ClusterNotRunning:
            if not self.extra_routes:
                log.error("no cluster in %s", self.dir)
                return 1
            st = None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        await self.proxy.start()
        server = None
        try:
            for name, addr in {**(self._mon_routes() if st else {}), **self.extra_routes}.items():
                self.proxy.add_route(name, addr)
            if st is not None and self._unsettled(self.cluster.pids()):
                await self.refresh()
                self._settle(self._unsettled(self.cluster.pids()))
            self._write_map()
            self.pid_path.write_text(f"{os.getpid()}\n")
            server = await asyncio.start_unix_server(self._client, str(self.sock_path), limit=1 << 20)
            self._sock_ino = os.stat(self.sock_path).st_ino
            log.info("serving %s: %d routes, map %s, control %s", self.dir, len(self.proxy.routes()),
                     self.map_path, self.sock_path)
            if self.ready_fd is not None:
                os.write(self.ready_fd, b"ok\n")
                os.close(self.ready_fd)
                self.ready_fd = None
            orphan_since: float | None = None
            while not self._stop.is_set():
                try:
                    await asyncio.wait_for(self._stop.wait(), self.check_interval)
                    break
                except asyncio.TimeoutError:
                    pass
                if time.monotonic() - t0 > self.max_lifetime:
                    log.info("max lifetime %.0fs reached: exiting", self.max_lifetime)
                    break
                if st is None:
                    if not self._sock_is_ours():
                        break
                    continue
                pids = self.cluster.pids()
                await self._check(pids)
                if any(p is not None for p in pids.values()):
                    orphan_since = None
                elif orphan_since is None:
                    orphan_since = time.monotonic()
                elif time.monotonic() - orphan_since > self.orphan_timeout:
                    log.info("no daemon of %s has run for %.0fs: exiting", self.dir, self.orphan_timeout)
                    break
        finally:
            if server is not None:
                server.close()
            await self.proxy.stop()
            if server is not None and self._sock_is_ours():
                self.sock_path.unlink(missing_ok=True)
                self.map_path.unlink(missing_ok=True)
            if _read_pid(self.pid_path) == os.getpid():
                self.pid_path.unlink(missing_ok=True)
            log.info("stopped")
        return 0

    _sock_ino: int = -1


# --------------------------------------------------------------------------- client side


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def proxy_pid(dir: str | os.PathLike[str]) -> int | None:  # noqa: A002
    """Pid of the fault proxy daemon serving ``dir`` if it runs."""
    d = Path(dir).expanduser().resolve()
    pid = _read_pid(d / PID_FILE)
    if pid and _pid_alive(pid):
        argv = _proc_cmdline(pid)
        if "pyceph.cluster.faultproxy" in argv and str(d) in argv:
            return pid
    return None


def request(dir: str | os.PathLike[str], req: dict[str, Any], *, timeout: float = 30.0) -> dict[str, Any]:  # noqa: A002
    """Send one control request to the daemon serving ``dir``; return its reply.

    Raises :class:`FaultProxyNotRunning` if nothing answers, :class:`FaultProxyError` if
    the reply is ``{"ok": false}``.
    """
    path = Path(dir).expanduser().resolve() / SOCK_FILE
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise FaultProxyNotRunning(f"no fault proxy serves {path.parent} ({e.strerror})") from None
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            if not chunk:
                raise FaultProxyNotRunning(f"fault proxy of {path.parent} closed the connection")
            buf += chunk
    except socket.timeout:
        raise FaultProxyError(f"fault proxy of {path.parent} did not answer in {timeout}s") from None
    finally:
        s.close()
    reply = json.loads(buf)
    if not reply.get("ok"):
        raise FaultProxyError(reply.get("error") or "fault proxy error")
    return reply


def cable(dir: str | os.PathLike[str], name: str, state: str) -> dict[str, dict[str, Any]]:  # noqa: A002
    """Set the state of route(s) ``name`` ("osd.1", "osd.*", "all"); return their stats."""
    return request(dir, {"cmd": "set", "name": name, "state": state})["routes"]


def status(dir: str | os.PathLike[str]) -> dict[str, Any]:  # noqa: A002
    """The daemon's status: ``routes`` (name -> stats), ``map``, ``pid``, ``refresh_error``..."""
    return request(dir, {"cmd": "status"})


def refresh(dir: str | os.PathLike[str]) -> dict[str, Any]:  # noqa: A002
    """Make the daemon re-read ``ceph osd dump``/``mgr dump`` now; return its status."""
    return request(dir, {"cmd": "refresh"})


def start_proxy(
    dir: str | os.PathLike[str],  # noqa: A002
    *,
    timeout: float = 60.0,
    orphan_timeout: float | None = None,
    max_lifetime: float | None = None,
    check_interval: float | None = None,
    routes: dict[str, str] | None = None,
) -> int:
    """Start the daemon for ``dir`` in the background (own session); return its pid.

    Returns when the map file and control socket exist.  If one already runs, returns
    its pid.  Raises :class:`FaultProxyError` (with its log's tail) if it fails.
    """
    d = Path(dir).expanduser().resolve()
    try:
        return request(d, {"cmd": "ping"}, timeout=5)["pid"]
    except FaultProxyNotRunning:
        pass
    argv = [sys.executable, "-m", "pyceph.cluster.faultproxy", "serve", "--dir", str(d)]
    for opt, val in (("--orphan-timeout", orphan_timeout), ("--max-lifetime", max_lifetime),
                     ("--check-interval", check_interval)):
        if val is not None:
            argv += [opt, str(val)]
    for name, addr in (routes or {}).items():
        argv += ["--route", f"{name}={addr}"]
    argv.append("--daemonize")
    logf = d / LOG_FILE
    logf.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(logf, "ab") as f:
        # The child forks the daemon (reparented to init) and exits once it serves.
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True, env=env, cwd=str(d))
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        rc = None
    if rc == 0:
        try:
            return request(d, {"cmd": "ping"}, timeout=5)["pid"]
        except FaultProxyNotRunning:
            pass
    pid = proxy_pid(d)
    if pid is not None:  # started but not answering: do not leave it behind
        os.kill(pid, signal.SIGKILL)
    tail = logf.read_text(errors="replace").strip().splitlines()[-3:]
    raise FaultProxyError(f"fault proxy for {d} failed to start (exit {rc}): {' | '.join(tail)} (log: {logf})")


def stop_proxy(dir: str | os.PathLike[str], *, timeout: float = 10.0) -> bool:  # noqa: A002
    """Stop the daemon serving ``dir``; False if none ran.  SIGKILL after ``timeout`` s."""
    d = Path(dir).expanduser().resolve()
    pid = proxy_pid(d)
    try:
        request(d, {"cmd": "stop"}, timeout=5)
    except FaultProxyNotRunning:
        if pid is None:
            return False
    except FaultProxyError:
        pass
    if pid is None:
        pid = _read_pid(d / PID_FILE)
    if pid and not _wait_gone(pid, timeout):
        os.kill(pid, signal.SIGKILL)
        if not _wait_gone(pid, 5):
            raise FaultProxyError(f"fault proxy pid {pid} survived SIGKILL")
    try:  # leftovers of a killed daemon (unless another one serves the directory now)
        request(d, {"cmd": "ping"}, timeout=2)
    except FaultProxyNotRunning:
        for f in (SOCK_FILE, MAP_FILE, PID_FILE):
            (d / f).unlink(missing_ok=True)
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        _reap(pid)
        if not _pid_alive(pid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyceph.cluster.faultproxy", allow_abbrev=False,
                                     description="Fault proxy (cable pull) for a dev cluster.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", allow_abbrev=False, help="run the proxy daemon for a cluster directory (foreground)")
    p.add_argument("--dir", required=True, help="DevCluster directory")
    p.add_argument("--check-interval", type=float, default=1.0, help="seconds between daemon checks (default 1)")
    p.add_argument("--orphan-timeout", type=float, default=60.0,
                   help="exit after this many seconds without any cluster daemon (default 60)")
    p.add_argument("--max-lifetime", type=float, default=4 * 3600.0, help="exit after this many seconds (default 4h)")
    p.add_argument("--route", action="append", default=[], metavar="NAME=IP:PORT",
                   help="extra static route, repeatable (works without a cluster)")
    p.add_argument("--daemonize", action="store_true",
                   help="fork into the background; exit 0 once the proxy serves, 1 if it failed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s faultproxy[%(process)d] %(message)s")
    extra = {}
    for item in args.route:
        name, sep, addr = item.partition("=")
        if not sep:
            parser.error(f"--route wants NAME=IP:PORT, got {item!r}")
        extra[name] = addr
    ready_fd = None
    if args.daemonize:  # before any thread or event loop exists
        rfd, ready_fd = os.pipe()
        if os.fork() > 0:
            os.close(ready_fd)
            with os.fdopen(rfd, "rb") as r:
                return 0 if r.read(3) == b"ok\n" else 1  # EOF: the daemon died before serving
        os.close(rfd)
        os.setsid()
    daemon = ProxyDaemon(args.dir, check_interval=args.check_interval, orphan_timeout=args.orphan_timeout,
                         max_lifetime=args.max_lifetime, extra_routes=extra, ready_fd=ready_fd)
    return asyncio.run(daemon.run())


if __name__ == "__main__":
    sys.exit(main())
