"""Fault survival against a real cluster, as krbd survives: reconnect, fail over, resend,
lose nothing.

A private 3-mon, 3-OSD DevCluster (module fixture) with the fault proxy in front of every
daemon: clients read its connect map (``pyceph connect map``) so each mon/OSD cable can
be stalled (silent peer), reset or refused, while daemons are also killed for real.
Clients run with short keepalive settings (1 s interval, 3 s timeout) so silent peers
are detected within seconds.  Each test states what must hold; timings measured are
printed (``pytest -s``) for the record.

With ``$PYCEPH_TEST_FAULTS_CLUSTER_DIR`` naming a running 3-mon cluster, that one is used
(and left running) instead of a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyceph.cluster import CephNotInstalled, CephRelease, DevCluster
from pyceph.cluster import faultproxy as fp
from pyceph.config import ClientConfig
from pyceph.errors import Blocklisted, TimedOut
from pyceph.msgr.connection import Connection
from pyceph.msgr.protocol import Session
from pyceph.osdmap.pool import FLAG_FULL_QUOTA
from pyceph.auth.hooks import AuthHooksMixin
from pyceph.rados import AsyncRados
from pyceph.types import ADDR_TYPE_MSGR2, ENTITY_TYPE_MON, ENTITY_TYPE_OSD

from .helpers import tool, uniq, wanted_ms_mode, wanted_release

POOL = "rbd"
FAST = {  # seconds
    "osd_keepalive_interval": "1",
    "osd_keepalive_timeout": "3",
    "mon_client_ping_interval": "1",
    "mon_client_ping_timeout": "3",
    "mon_client_hunt_interval": "1",
}


def note(msg: str) -> None:
    print(f"[faults] {msg}", file=sys.stderr)


# -- fixtures ------------------------------------------------------------------------------


class FC:
    """The fault cluster: DevCluster + fault proxy + its connect map."""

    def __init__(self, cluster: DevCluster):
        self.cluster = cluster
        self.dir = cluster.dir
        self.conf = str(cluster.conf_path)
        self.map = str(Path(cluster.dir) / fp.MAP_FILE)

    def cable(self, name: str, state: str) -> None:
        fp.cable(self.dir, name, state)

    def config(self, **opts) -> ClientConfig:
        o = {**FAST, "pyceph_connect_map": self.map, **{k: str(v) for k, v in opts.items()}}
        return ClientConfig.load(conffile=self.conf, overrides=o)

    async def client(self, **opts) -> AsyncRados:
        r = AsyncRados(self.config(**opts))
        await r.connect(30)
        return r

    def ceph(self, *args, **kw):
        return self.cluster.ceph(*args, **kw)

    def wait_osds_up(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            st = self.ceph("osd", "stat")
            if st["num_up_osds"] == st["num_osds"]:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"OSDs not all up after {timeout}s: {st}")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def fc(tmp_path_factory):
    reuse = os.environ.get("PYCEPH_TEST_FAULTS_CLUSTER_DIR")
    if reuse:
        c = DevCluster(reuse)
        if not c.is_running():
            pytest.fail(f"PYCEPH_TEST_FAULTS_CLUSTER_DIR={reuse}: no running cluster", pytrace=False)
        own = False
    else:
        try:
            CephRelease.resolve(wanted_release())
        except CephNotInstalled as e:
            pytest.fail(str(e), pytrace=False)
        c = DevCluster(tmp_path_factory.mktemp("faults"))
        t0 = time.monotonic()
        c.start(mons=3, osds=3, release=wanted_release(), ms_mode=wanted_ms_mode())
        note(f"3-mon cluster started in {time.monotonic() - t0:.1f}s")
        own = True
    try:
        fp.start_proxy(c.dir)
        f = FC(c)
        f.cable("all", "pass")
        yield f
    finally:
        with contextlib.suppress(Exception):
            fp.cable(c.dir, "all", "pass")
        if own:
            with contextlib.suppress(Exception):
                fp.stop_proxy(c.dir)
            c.stop()


def run(coro, timeout: float = 90.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def primary_of(r: AsyncRados, pool_id: int, oid: str) -> int:
    m = r.osdmap
    pg = m.raw_pg_to_pg(m.object_locator_to_pg(pool_id, oid))
    return m.pg_to_up_acting_osds(pg)[3]


def objects_on(r: AsyncRados, pool_id: int, osd: int, n: int, prefix: str) -> list[str]:
    out, i = [], 0
    while len(out) < n:
        oid = f"{prefix}-{i}"
        if primary_of(r, pool_id, oid) == osd:
            out.append(oid)
        i += 1
    return out


class Writer:
    """Writes (write_full) random objects of a set until stopped; remembers what each
    object must hold and the longest op latency.  Any error is kept and fails the test."""

    def __init__(self, io, names: list[str], size: int = 16 << 10):
        self.io = io
        self.names = names
        self.size = size
        self.want: dict[str, bytes] = {}
        self.errors: list[BaseException] = []
        self.max_latency = 0.0
        self.done = 0
        self.last_ok = time.monotonic()
        self._stop = asyncio.Event()
        self.task: asyncio.Task | None = None

    def start(self) -> "Writer":
        self.task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        while not self._stop.is_set():
            name = random.choice(self.names)
            data = os.urandom(self.size)
            t = time.monotonic()
            try:
                await self.io.write_full(name, data)
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.errors.append(e)
                return
            self.max_latency = max(self.max_latency, time.monotonic() - t)
            self.last_ok = time.monotonic()
            self.want[name] = data
            self.done += 1

    async def progress(self, n: int, timeout: float) -> float:
        """Wait for ``n`` more completed writes; returns the seconds it took."""
        t0 = time.monotonic()
        goal = self.done + n
        while self.done < goal:
            assert not self.errors, self.errors
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"writer stuck: {self.done}/{goal} writes after {timeout}s")
            await asyncio.sleep(0.05)
        return time.monotonic() - t0

    async def stop_and_verify(self) -> None:
        self._stop.set()
        await asyncio.wait_for(self.task, 60)
        assert not self.errors, self.errors
        for name, data in self.want.items():
            got = await self.io.read(name, len(data) + 1)
            assert got == data, f"{name}: content differs after the fault"


# -- the structured transition log --------------------------------------------------------


def test_connection_transitions_are_logged(fc, caplog):
    async def go():
        r = await fc.client()
        io = await r.open_ioctx(POOL)
        await io.write_full(uniq("log"), b"x")
        await r.shutdown()

    with caplog.at_level(logging.DEBUG, logger="pyceph.msgr.connection"):
        run(go())
    recs = [rec for rec in caplog.records if getattr(rec, "event", None) == "con_state"]
    by_peer: dict[str, list[tuple[str, str]]] = {}
    for rec in recs:
        by_peer.setdefault(rec.peer, []).append((rec.old, rec.new))
    assert len(by_peer) >= 2  # a mon and an OSD
    for peer, steps in by_peer.items():
        assert steps == [("banner", "hello"), ("hello", "auth"), ("auth", "auth_signature"),
                         ("auth_signature", "session_connecting"), ("session_connecting", "ready"),
                         ("ready", "closed")], (peer, steps)
    ready = [rec for rec in recs if rec.new == "ready"]
    assert all(rec.levelno == logging.INFO for rec in ready)
    assert any("via 127.0.0.1:" in rec.getMessage() for rec in ready)  # through the proxy


# -- what a Pacific daemon does with SESSION_RECONNECT --------------------------------------


class _Ops(AuthHooksMixin):
    def __init__(self, auth):
        self.auth = auth

    def dispatch(self, con, msg):
        pass

    def fault(self, con, exc):
        pass


@pytest.mark.parametrize("peer", ["osd", "mon"])
def test_pacific_daemons_answer_reconnect_with_session_reset(fc, caplog, peer):
    """Servers treat clients as lossy (Policy::lossy_client / stateless_server): asked for
    a lossless session they still announce a lossy one (no server cookie), and a
    SESSION_RECONNECT naming our cookie gets SESSION_RESET, after which our CLIENT_IDENT
    opens a fresh session.  Exactly-once therefore rests on OSD reqid dedup, not on the
    messenger replaying unacked messages."""

    async def go():
        r = await fc.client()
        try:
            if peer == "osd":
                addr = r.osdmap.get_addrs(0).get(ADDR_TYPE_MSGR2)
                ops, ptype = _Ops(r.monc.auth.authorizer_hooks(ENTITY_TYPE_OSD)), ENTITY_TYPE_OSD
            else:
                addr = [a for a in r.monc.candidate_addrs() if str(a) != r.monc.cur_mon][0]
                ops, ptype = _Ops(r.monc.auth), ENTITY_TYPE_MON  # cephx with the mon
            kw = dict(peer_type=ptype, global_id=r.monc.global_id, my_addr=r.monc.my_addr,
                      connect_addr=r.monc.connect_addr(addr), lossy=False)
            c1 = Connection(addr, ops, **kw)
            ev1 = await c1.connect(10)
            first = (ev1.lossy, c1.session.server_cookie, c1.session.client_cookie)
            # Pretend the server had given us a cookie: we must send SESSION_RECONNECT.
            sess = Session(client_cookie=c1.session.client_cookie, server_cookie=0x5EC0,
                           global_seq=c1.session.global_seq + 1, connect_seq=1)
            c2 = Connection(addr, c1.ops, session=sess, **kw)
            ev2 = await c2.connect(10)
            await c1.close()
            await c2.close()
            return first, ev2.reconnected
        finally:
            await r.shutdown()

    with caplog.at_level(logging.DEBUG, logger="pyceph.msgr.connection"):
        (lossy, server_cookie, client_cookie), reconnected = run(go())
    assert client_cookie != 0  # we asked for a lossless session ...
    assert lossy is True and server_cookie == 0  # ... the daemon said lossy, no cookie
    assert reconnected is False
    assert any("session reset by peer" in rec.getMessage() for rec in caplog.records)
    steps = [(rec.old, rec.new) for rec in caplog.records if getattr(rec, "event", None) == "con_state"]
    assert ("session_reconnecting", "session_connecting") in steps


# -- exactly once ---------------------------------------------------------------------------


def test_append_whose_reply_is_lost_is_applied_once(fc):
    """The connection dies after the OSD applied the append but before we read its reply
    (we drop the reply and abort the connection): the resend (same tid, retry_attempt 1)
    is answered from the OSD's pg log, so the object grows by exactly one append each."""

    async def go():
        r = await fc.client()
        try:
            io = await r.open_ioctx(POOL)
            oid = uniq("once")
            await io.write_full(oid, b"")
            osdc = r.osdc
            orig = osdc._dispatch
            lost: list[int] = []

            def lossy_dispatch(s, msg):
                if msg.tid not in lost:  # first reply of each request: lost with the connection
                    lost.append(msg.tid)
                    s.con.abort(ConnectionError("test: connection lost before the reply was read"))
                    return
                orig(s, msg)

            osdc._dispatch = lossy_dispatch
            chunk = b"0123456789abcdef" * 64
            for _ in range(5):
                await io.append(oid, chunk)
            osdc._dispatch = orig
            size, _ = await io.stat(oid)
            faults = sum(s.faults for s in osdc.sessions.values())
            return size, len(chunk), len(lost), osdc.resends, faults
        finally:
            await r.shutdown()

    size, chunk, lost, resends, faults = run(go())
    assert lost == 5 and resends >= 5 and faults >= 5
    assert size == 5 * chunk


# -- OSD faults ----------------------------------------------------------------------------


def test_osd_killed_and_restarted_under_a_writer(fc):
    """SIGKILL the primary of part of the objects under a running writer, restart it: no
    error reaches the writer, every object reads back what was last written."""

    async def go():
        r = await fc.client()
        try:
            io = await r.open_ioctx(POOL)
            pid = r.pool_lookup(POOL)
            names = objects_on(r, pid, 1, 8, uniq("kill")) + [uniq("kill-any") for _ in range(8)]
            w = Writer(io, names).start()
            await w.progress(20, 30)
            t0 = time.monotonic()
            await asyncio.to_thread(fc.cluster.kill, "osd.1")
            await w.progress(20, 60)  # writes go on without osd.1 (primary moves)
            moved = time.monotonic() - t0
            await asyncio.to_thread(fc.cluster.start_daemon, "osd.1")
            await asyncio.to_thread(fc.wait_osds_up, 60)
            await w.progress(20, 60)
            await w.stop_and_verify()
            return moved, w.max_latency, w.done
        finally:
            await r.shutdown()

    moved, worst, done = run(go(), 180)
    note(f"osd.1 SIGKILL: writes resumed after {moved:.1f}s; worst write latency {worst:.1f}s; {done} writes")


@pytest.mark.parametrize("fault", ["stall", "reset"])
def test_osd_cable_fault_stalls_then_resumes(fc, fault, caplog):
    """Pull (stall: silent peer, only the keepalive timeout notices) or reset the cable of
    one OSD for 6 s under appends to objects it is primary for: the I/O stalls, then
    resumes by itself once the cable is back; each object holds exactly the appends that
    completed (a resent append is not applied twice)."""

    async def go():
        # An earlier test's OSD restart may still move primaries (pg_temp while peering):
        # pick the objects on a settled map, or some appends go to an OSD with its cable in.
        await asyncio.to_thread(fc.cluster.wait_clean, 120)
        r = await fc.client()
        try:
            io = await r.open_ioctx(POOL)
            pid = r.pool_lookup(POOL)
            osd = 2
            names = objects_on(r, pid, osd, 4, uniq(f"cable-{fault}"))
            counts = {n: 0 for n in names}
            stop = asyncio.Event()
            chunk = os.urandom(4096)
            worst = [0.0]

            async def appender(name):
                while not stop.is_set():
                    t = time.monotonic()
                    await io.append(name, chunk)
                    worst[0] = max(worst[0], time.monotonic() - t)
                    counts[name] += 1

            tasks = [asyncio.ensure_future(appender(n)) for n in names]
            await asyncio.sleep(1)
            before = sum(counts.values())
            assert before > 0
            await asyncio.to_thread(fc.cable, f"osd.{osd}", fault)
            t_pull = time.monotonic()
            pulled_at.append(time.time())
            await asyncio.sleep(0.5)  # replies already on their way may still land
            before = sum(counts.values())
            await asyncio.sleep(5.5)
            during = sum(counts.values()) - before
            await asyncio.to_thread(fc.cable, f"osd.{osd}", "pass")
            t_back = time.monotonic()
            n0 = sum(counts.values())
            while sum(counts.values()) < n0 + 8:
                assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
                assert time.monotonic() - t_back < 30, "I/O did not resume within 30 s of restoring the cable"
                await asyncio.sleep(0.02)
            resumed = time.monotonic() - t_back
            stop.set()
            await asyncio.gather(*tasks)
            sess = r.osdc.sessions[osd]
            for n in names:
                size, _ = await io.stat(n)
                assert size == counts[n] * len(chunk), f"{n}: {size} bytes for {counts[n]} appends"
            return during, resumed, worst[0], sess.faults, sess.last_fault, time.monotonic() - t_pull
        finally:
            await r.shutdown()

    pulled_at: list[float] = []
    with caplog.at_level(logging.INFO, logger="pyceph.osd"):
        during, resumed, worst, faults, last_fault, _ = run(go(), 120)
    first = [rec for rec in caplog.records if "fault #1" in rec.getMessage() and "osd.2" in rec.getMessage()]
    assert first, "no session fault logged"
    detected = first[0].created - pulled_at[0]
    note(f"osd cable {fault} 6s: fault detected after {detected:.1f}s ({first[0].getMessage()[:90]}...), "
         f"{during} appends during the fault, resumed {resumed:.2f}s after restore, worst latency {worst:.1f}s, "
         f"session faults {faults}")
    assert during == 0  # nothing got through the pulled cable
    assert faults >= 1
    if fault == "stall":  # only the keepalive can notice a silent peer: 1 s laggy + 3 s timeout
        assert "no keepalive ack or reply" in first[0].getMessage()
        assert 3 <= detected <= 1 + 3 + 1.5
    else:
        assert detected < 1


# -- monitor faults ---------------------------------------------------------------------------


def _mon_name(fc: FC, cur_mon: str) -> str:
    port = int(cur_mon.rsplit(":", 1)[1].split("/")[0])
    for m in fc.cluster.state["mons"]:
        if m["v2"] == port:
            return f"mon.{m['id']}"
    raise AssertionError(f"no mon at {cur_mon}")


def test_mon_killed_client_hunts_and_command_completes(fc):
    """Kill the monitor the client talks to: it hunts to another, keeps its global_id
    (reclaimed with the old ticket: the cluster refuses insecure reclaim), and a mon
    command issued during the outage completes; OSD I/O is unaffected."""
    assert "auth allow insecure global id reclaim = false" in Path(fc.conf).read_text()

    async def go():
        r = await fc.client()
        try:
            monc = r.monc
            gid, opened, mon = monc.global_id, monc.sessions_opened, monc.cur_mon
            name = _mon_name(fc, mon)
            # Freeze it first so the command is surely sent to it and left unanswered,
            # then kill it: the command must be resent on the next session.
            os.kill(fc.cluster.pid(name), signal.SIGSTOP)
            cmd = asyncio.ensure_future(r.mon_command({"prefix": "osd pool ls", "format": "json"}, timeout=60))
            await asyncio.sleep(1)
            assert not cmd.done() and monc.cur_mon == mon
            t0 = time.monotonic()
            await asyncio.to_thread(fc.cluster.kill, name)
            ret, out, _ = await cmd
            took = time.monotonic() - t0
            io = await r.open_ioctx(POOL)
            await io.write_full(uniq("monkill"), b"after failover")
            st = monc.status()
            return ret, json.loads(out), took, (gid, opened, mon, name), st
        finally:
            await r.shutdown()

    try:
        ret, pools, took, (gid, opened, mon, name), st = run(go(), 120)
    finally:
        for m in fc.cluster.state["mons"]:  # later tests want all three again
            if fc.cluster.pid(f"mon.{m['id']}") is None:
                fc.cluster.start_daemon(f"mon.{m['id']}")
    note(f"mon {mon} frozen, then killed: the pending command completed {took:.1f}s after the kill on {st['mon']}")
    assert ret == 0 and POOL in pools
    assert st["mon"] != mon and st["state"] == "open"
    # (more than one new session when the survivors hold an election and drop clients meanwhile)
    assert st["global_id"] == gid and st["sessions_opened"] > opened and st["faults"] >= 1


@pytest.mark.parametrize("fault", ["stall", "reset"])
def test_mon_cable_fault_client_hunts(fc, fault):
    """Pull the cable of the client's monitor (stall: a silent peer, nothing closes; only
    the keepalive timeout -- 3 s here -- notices) or reset it (RST, refused): the client
    hunts elsewhere and a command issued during the fault completes."""

    async def go():
        r = await fc.client()
        name = _mon_name(fc, r.monc.cur_mon)
        try:
            monc = r.monc
            gid, mon = monc.global_id, monc.cur_mon
            await asyncio.to_thread(fc.cable, name, fault)
            t0 = time.monotonic()
            ret, _, _ = await r.mon_command({"prefix": "status", "format": "json"}, timeout=60)
            took = time.monotonic() - t0
            return ret, took, gid, mon, monc.status()
        finally:
            await asyncio.to_thread(fc.cable, name, "pass")
            await r.shutdown()

    ret, took, gid, mon, st = run(go(), 90)
    note(f"mon cable {fault}: command completed {took:.1f}s after the pull via {st['mon']} ({st['last_fault']})")
    assert ret == 0 and st["mon"] != mon and st["global_id"] == gid
    if fault == "stall":
        assert "silent" in st["last_fault"]
        assert took < 3 + 1 + 10  # ping timeout + interval + hunting, not client_mount_timeout
    else:
        assert took < 5


# -- flags, full pools, timeouts ------------------------------------------------------------


def test_pause_holds_io_until_unset_and_request_timeout(fc):
    """``ceph osd set pause`` (PAUSERD|PAUSEWR; Pacific's CLI has no pausewr alone, the
    unit tests cover each flag): I/O waits, a client with osd_request_timeout = 2 gets
    TimedOut, and the waiting ops complete by themselves after ``unset``."""

    async def go():
        r = await fc.client()
        rt = await fc.client(osd_request_timeout=2)
        try:
            io, io_t = await r.open_ioctx(POOL), await rt.open_ioctx(POOL)
            oid = uniq("pause")
            await io.write_full(oid, b"before")
            epoch = r.osdmap.epoch
            await asyncio.to_thread(fc.ceph, "osd", "set", "pause", json=False)
            await r.monc.wait_for_osdmap(epoch + 1, 30)
            await rt.monc.wait_for_osdmap(epoch + 1, 30)
            w = asyncio.ensure_future(io.write_full(oid, b"after"))
            rd = asyncio.ensure_future(io.read(oid))
            t0 = time.monotonic()
            with pytest.raises(TimedOut):
                await io_t.write_full(uniq("pause-t"), b"x")
            timed_out = time.monotonic() - t0
            assert not w.done() and not rd.done()
            assert r.osdc.status()["paused"] == 2
            await asyncio.to_thread(fc.ceph, "osd", "unset", "pause", json=False)
            t1 = time.monotonic()
            await asyncio.wait_for(asyncio.gather(w, rd), 30)
            resumed = time.monotonic() - t1
            assert await io.read(oid) == b"after"
            return timed_out, resumed
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(fc.ceph, "osd", "unset", "pause", json=False)
            await rt.shutdown()
            await r.shutdown()

    timed_out, resumed = run(go(), 90)
    note(f"pause: TimedOut after {timed_out:.1f}s; held ops completed {resumed:.1f}s after unset")
    assert 1.9 <= timed_out < 6


def test_full_pool_quota_holds_writes(fc):
    """A pool over its object quota (FLAG_FULL_QUOTA): new writes wait instead of
    failing or spinning, and complete once the quota is lifted."""
    pool = uniq("fq")
    fc.cluster.create_pool(pool, pg_num=8)
    try:
        async def go():
            r = await fc.client()
            try:
                io = await r.open_ioctx(pool)
                pid = r.pool_lookup(pool)
                await io.write_full("a", b"1")
                await asyncio.to_thread(fc.ceph, "osd", "pool", "set-quota", pool, "max_objects", "1", json=False)
                deadline = time.monotonic() + 60
                while not r.osdmap.pools[pid].flags & FLAG_FULL_QUOTA:
                    assert time.monotonic() < deadline, "pool never became full"
                    await asyncio.sleep(0.5)
                w = asyncio.ensure_future(io.write_full("b", b"2"))
                await asyncio.sleep(2)
                assert not w.done() and r.osdc.status()["paused"] == 1
                await asyncio.to_thread(fc.ceph, "osd", "pool", "set-quota", pool, "max_objects", "0", json=False)
                t0 = time.monotonic()
                await asyncio.wait_for(w, 60)
                return time.monotonic() - t0, await io.read("b")
            finally:
                await r.shutdown()

        took, data = run(go(), 150)
        note(f"pool quota full: held write completed {took:.1f}s after the quota was lifted")
        assert data == b"2"
    finally:
        fc.cluster.delete_pool(pool)


# -- sessions: idle, tickets, blocklist -------------------------------------------------------


def test_idle_osd_session_closed_after_ttl(fc, caplog):
    async def go():
        r = await fc.client(osd_idle_ttl=2)
        try:
            io = await r.open_ioctx(POOL)
            await io.write_full(uniq("idle"), b"x")
            assert r.osdc.sessions
            await asyncio.sleep(3.5)
            left = dict(r.osdc.sessions)
            await io.write_full(uniq("idle"), b"y")  # a new session opens on demand
            return left
        finally:
            await r.shutdown()

    with caplog.at_level(logging.INFO, logger="pyceph.osd"):
        left = run(go())
    assert left == {}
    assert any("osd_idle_ttl" in rec.getMessage() for rec in caplog.records)


def test_renewed_ticket_used_for_new_osd_connections(fc):
    """The OSD ticket is invalidated: the renewal loop fetches a new one (existing OSD
    sessions keep working meanwhile), and the next OSD connection authenticates with it."""

    async def go():
        r = await fc.client()
        try:
            io = await r.open_ioctx(POOL)
            oid = uniq("tkt")
            await io.write_full(oid, b"1")
            th = r.monc.auth.tickets[ENTITY_TYPE_OSD]
            old_key = th.session_key.secret
            r.monc.auth.invalidate_ticket(ENTITY_TYPE_OSD)
            await io.write_full(oid, b"2")  # the established session is not affected
            deadline = time.monotonic() + 15
            while not th.have_key_flag:  # the 5 s renewal loop asks the mon
                assert time.monotonic() < deadline, "OSD ticket not renewed"
                await asyncio.sleep(0.2)
            assert th.session_key.secret != old_key
            osd = primary_of(r, r.pool_lookup(POOL), oid)
            s = r.osdc.sessions[osd]
            s.con.abort(ConnectionError("test: drop the OSD connection"))
            assert s.state == "closed"  # an idle session is closed on a fault, not reopened
            await io.write_full(oid, b"3")
            s2 = r.osdc.sessions[osd]
            return s2 is not s and s2.connects == 1, s.last_fault, await io.read(oid)
        finally:
            await r.shutdown()

    reconnected, last_fault, data = run(go())
    assert reconnected and data == b"3" and "test: drop" in last_fault


def test_blocklisted_client_gets_blocklisted_error(fc):
    async def go():
        r = await fc.client()
        addr = None
        try:
            io = await r.open_ioctx(POOL)
            await io.write_full(uniq("bl"), b"x")
            me = r.monc.client_addr
            addr = f"{me.ip}:0/{me.nonce}"
            await asyncio.to_thread(fc.ceph, "osd", "blocklist", "add", addr, json=False)
            t0 = time.monotonic()
            with pytest.raises(Blocklisted):
                for _ in range(200):
                    await io.write_full(uniq("bl"), b"y")
                    await asyncio.sleep(0.05)
            took = time.monotonic() - t0
            with pytest.raises(Blocklisted):  # latched: no loop, no retry
                await io.read(uniq("bl"))
            return took
        finally:
            if addr:
                await asyncio.to_thread(fc.ceph, "osd", "blocklist", "rm", addr, json=False)
            await r.shutdown()

    took = run(go())
    note(f"blocklist: Blocklisted {took:.1f}s after `osd blocklist add`")
    assert took < 10


# -- the map daemon's session view --------------------------------------------------------------


def test_status_device_shows_sessions(fc, tmp_path):
    """``pyceph status --device`` asks the map daemon for its client's sessions; with the
    daemon's OSD cable reset, the view shows the fault."""
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.fail("prbd map needs root and /dev/fuse", pytrace=False)
    env = dict(os.environ, PYCEPH_RUN_DIR=str(tmp_path / "run"), PYCEPH_CONNECT_MAP=fc.map)
    name = uniq("st")

    def sh(*argv, check=True):
        p = subprocess.run(argv, capture_output=True, env=env, timeout=120)
        if check and p.returncode:
            raise AssertionError(f"{argv}: {p.stderr.decode()}")
        return p

    prbd = [sys.executable, "-m", "pyceph.cli.prbd", "-c", fc.conf]
    cli = [sys.executable, "-m", "pyceph.cli.pyceph_cli", "-c", fc.conf]
    sh(*prbd, "create", "--size", "16M", f"rbd/{name}")
    dev = sh(*prbd, "map", f"rbd/{name}").stdout.decode().strip()
    try:
        fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
        try:
            import mmap

            buf = mmap.mmap(-1, 4096)
            buf.write(os.urandom(4096))
            os.pwrite(fd, buf, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        view = json.loads(sh(*cli, "status", "--device", dev, "--format", "json").stdout)
        assert view["device"] == dev and view["mon"]["state"] == "open"
        assert view["global_id"] > 0 and view["osdmap_epoch"] > 0
        assert view["tickets"]["osd"]["valid"] is True and view["tickets"]["osd"]["expires_in"] > 0
        sessions = view["osd"]["sessions"]
        assert sessions and all(s["connection_state"] == "ready" for s in sessions)
        assert all(s["connect_addr"] for s in sessions)  # the daemon follows the connect map
        plain = sh(*cli, "status", "--device", dev).stdout.decode()
        assert "mon: open" in plain and "osd." in plain
        # Cables of every OSD reset and refusing: a write waits, its session backs off.
        fc.cable("osd.*", "reset")
        blocked = subprocess.Popen([sys.executable, "-c", (
            "import os, mmap, sys; b = mmap.mmap(-1, 4096); b.write(os.urandom(4096)); "
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_DIRECT); os.pwrite(fd, b, 8192); os.fsync(fd)"), dev])
        try:
            deadline = time.monotonic() + 20
            while True:
                view = json.loads(sh(*cli, "status", "--device", dev, "--format", "json").stdout)
                waiting = [s for s in view["osd"]["sessions"] if s["requests"] and s["faults"]]
                if waiting:
                    break
                assert time.monotonic() < deadline, view
                time.sleep(0.3)
            assert waiting[0]["state"] in ("backoff", "connecting") and waiting[0]["last_fault"]
            assert blocked.poll() is None  # the write is held, not failed
        finally:
            fc.cable("osd.*", "pass")
        assert blocked.wait(60) == 0
        after = json.loads(sh(*cli, "status", "--device", dev, "--format", "json").stdout)
        s = next(x for x in after["osd"]["sessions"] if x["osd"] == waiting[0]["osd"])
        assert s["state"] == "open" and s["faults"] >= 1 and s["requests"] == 0
    finally:
        fc.cable("osd.*", "pass")
        sh(*prbd, "unmap", "-o", "force", dev, check=False)
        sh(*prbd, "rm", f"rbd/{name}", check=False)


# -- RBD exclusive lock and header watch across faults ----------------------------------------
#
# Issue 4: the exclusive lock is re-acquired after a reconnect, and the header watch (linger
# op) has the fault behaviour above.  After each fault the lock must still be ours (same
# cookie, or moved to the new watch cookie with set_cookie), a librbd writer must get it from
# us through REQUEST_LOCK -- proof that our re-registered watch still receives notifies --
# well before librbd's dead-owner path (the owner's 30 s watch timeout, then blocklist and
# break), and our next write must take it back.

MiB = 1 << 20
LOCK_FAULTS = ["osd_kill_restart", "osd_kill_failover", "osd_cable_reset", "osd_cable_stall", "osd_watch_timeout",
               "mon_cable_reset"]
# cable faults: (proxy state, seconds); 40 s of stall outlast the OSD's 30 s watch timeout
_LOCK_CABLE = {"osd_cable_reset": ("reset", 6), "osd_cable_stall": ("stall", 6), "osd_watch_timeout": ("stall", 40)}


def _rbd_json(fc: FC, *args: str):
    return json.loads(fc.cluster.rbd(*args, "--format", "json"))


def _osd_info(fc: FC, osd: int) -> dict:
    return next(o for o in fc.ceph("osd", "dump")["osds"] if o["osd"] == osd)


def _wait_for(what: str, pred, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        ok, last = pred()
        if ok:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:.0f}s; last seen: {last!r}")
        time.sleep(interval)


async def _lock_fault(fc: FC, r: AsyncRados, fault: str, osd: int, timings: dict) -> bool:
    """Inject ``fault`` against ``osd`` (the header's primary) or the client's monitor and
    bring the cluster back; returns True if the header watch must have been re-registered."""
    t0 = time.monotonic()
    if fault.startswith("osd_kill"):
        name = f"osd.{osd}"
        up_from = _osd_info(fc, osd)["up_from"]
        await asyncio.to_thread(fc.cluster.kill, name)
        if fault == "osd_kill_failover":
            # let the cluster notice (heartbeats) and the watch move to the new primary
            await asyncio.to_thread(
                _wait_for, f"{name} marked down", lambda: ((i := _osd_info(fc, osd))["up"] == 0, i), 90)
            timings["marked_down"] = time.monotonic() - t0
            pid = r.pool_lookup(POOL)
            lreq_moved = time.monotonic() + 60
            while True:  # pyceph follows the header to its new primary
                lr = [lr for lr in r.osdc.lingers.values() if lr.is_watch and lr.t.oid.startswith("rbd_header.")]
                if (lr and lr[0].session is not None and lr[0].session.osd != osd and lr[0].reg_req is None
                        and lr[0].session.osd == primary_of(r, pid, lr[0].t.oid) and lr[0].last_error is None):
                    break
                assert time.monotonic() < lreq_moved, (
                    f"header watch not re-registered on the new primary 60 s after {name} was marked down: "
                    f"{[(x.session and x.session.osd, x.reg_req, x.last_error) for x in lr]}")
                await asyncio.sleep(0.2)
            timings["watch_on_new_primary"] = time.monotonic() - t0
        await asyncio.to_thread(fc.cluster.start_daemon, name)
        await asyncio.to_thread(
            _wait_for, f"{name} up again", lambda: ((i := _osd_info(fc, osd))["up"] == 1 and i["up_from"] > up_from, i),
            90)
        await asyncio.to_thread(fc.cluster.wait_clean, 180)
        timings["cluster_clean"] = time.monotonic() - t0
        return True
    if fault in _LOCK_CABLE:
        state, secs = _LOCK_CABLE[fault]
        await asyncio.to_thread(fc.cable, f"osd.{osd}", state)
        try:
            await asyncio.sleep(secs)  # > keepalive timeout (3 s): a stalled session faults too
        finally:
            await asyncio.to_thread(fc.cable, f"osd.{osd}", "pass")
        return True
    assert fault == "mon_cable_reset"
    mon = r.monc.cur_mon
    name = _mon_name(fc, mon)
    await asyncio.to_thread(fc.cable, name, "reset")
    try:
        while r.monc.cur_mon == mon or r.monc.status()["state"] != "open":
            assert time.monotonic() - t0 < 30, f"no hunt away from {name} in 30 s: {r.monc.status()}"
            await asyncio.sleep(0.2)
        timings["hunted"] = time.monotonic() - t0
    finally:
        await asyncio.to_thread(fc.cable, name, "pass")
    return False


@pytest.mark.parametrize("fault", LOCK_FAULTS)
def test_exclusive_lock_survives_fault_and_librbd_gets_it(fc, tmp_path, fault):
    """pyceph writes an image with Pacific's default features (takes the exclusive lock);
    then a fault: the header's primary OSD SIGKILLed and restarted at once (the watch
    reconnects to the new instance), SIGKILLed and left down until the cluster marks it down
    (the watch follows the header to the new primary) and then restarted, its cable reset
    or stalled for 6 s, stalled for 40 s (the OSD times the watch out: RECONNECT gets
    ENOTCONN, a new watch is registered and the lock must move to its cookie with
    set_cookie), or the client's monitor cable reset.  Afterwards:
    (a) pyceph still owns the lock: ``rbd lock ls`` shows ``auto <cookie of our current
        watch>`` (the old cookie, or the new one moved there with set_cookie) and
        ``rbd status`` shows our watch;
    (b) ``rbd bench`` (librbd) asks for the lock with REQUEST_LOCK, pyceph -- still
        receiving notifies -- releases it, the bench completes in < 20 s (not librbd's
        dead-owner path: 30 s watch timeout, then blocklisting pyceph);
    (c) pyceph's next write takes the lock back; ``rbd export`` has every byte and
        ``rbd object-map check`` passes."""
    from pyceph.rbd import (RBD_FEATURE_EXCLUSIVE_LOCK, RBD_FEATURE_FAST_DIFF, RBD_FEATURE_OBJECT_MAP,
                            AsyncImage)

    name = uniq("xlock-fault")
    spec = f"{POOL}/{name}"
    fc.cluster.rbd("create", "--size", "64M", spec)
    timings: dict[str, float] = {}
    before, after = os.urandom(64 << 10), os.urandom(64 << 10)

    async def go():
        r = await fc.client()
        img = None
        try:
            io = await r.open_ioctx(POOL)
            img = await AsyncImage.open(io, name)
            want = RBD_FEATURE_EXCLUSIVE_LOCK | RBD_FEATURE_OBJECT_MAP | RBD_FEATURE_FAST_DIFF
            assert img.features() & want == want, hex(img.features())
            await img.write(8 * MiB, before)
            lock, w = img.exclusive_lock, img.watcher
            assert lock.is_owner() and img.object_map is not None
            gid, addr = r.get_instance_id(), r.get_addrs()
            cookie0 = w.cookie
            lreq = r.osdc.lingers[cookie0]
            recon0 = lreq.reconnects
            pid = r.pool_lookup(POOL)
            osd = primary_of(r, pid, img.header_oid)
            locks = await asyncio.to_thread(_rbd_json, fc, "lock", "ls", spec)
            assert locks == [{"id": f"auto {cookie0}", "locker": f"client.{gid}", "address": addr}], locks

            t_fault = time.monotonic()
            rewatch = await _lock_fault(fc, r, fault, osd, timings)

            # The watch is registered again (RECONNECT of the same cookie, or a new watch)
            # on the header's current primary, and the lock follows our current cookie.
            deadline = time.monotonic() + 60
            while True:
                c = w.cookie
                lr = r.osdc.lingers.get(c) if c is not None else None
                cur = primary_of(r, pid, img.header_oid)
                if (lr is not None and lr.committed and lr.reg_req is None and lr.last_error is None
                        and lr.session is not None and lr.session.osd == cur and lr.session.state == "open"
                        and (not rewatch or c != cookie0 or lr.reconnects > recon0)
                        and lock.is_owner() and lock.cookie == f"auto {c}"):
                    break
                assert lock.error is None, f"exclusive lock lost after {fault}: {lock.error!r}"
                assert time.monotonic() < deadline, (
                    f"after {fault}: header watch/lock not re-established in 60 s: watch state {w.state}, "
                    f"cookie {cookie0} -> {c}, lock state {lock.state} cookie {lock.cookie!r}, linger "
                    f"{lr and (lr.committed, lr.reg_req, lr.last_error, lr.reconnects, lr.session and lr.session.osd)}"
                    f", primary osd.{cur}")
                await asyncio.sleep(0.2)
            timings["rewatched"] = time.monotonic() - t_fault
            cookie1 = w.cookie
            if fault == "osd_watch_timeout":
                assert cookie1 != cookie0, (
                    f"the OSD should have timed our watch out (40 s stall > 30 s): cookie still {cookie0}")

            # (a) the cluster's view: our lock, our (single) watch
            want_lock = [{"id": f"auto {cookie1}", "locker": f"client.{gid}", "address": addr}]
            want_watch = [{"address": addr, "client": gid, "cookie": cookie1}]

            def cluster_view():
                lk, st = _rbd_json(fc, "lock", "ls", spec), _rbd_json(fc, "status", spec)["watchers"]
                return (lk == want_lock and st == want_watch), {"lock ls": lk, "watchers": st}

            await asyncio.to_thread(_wait_for, f"after {fault}: rbd lock ls / rbd status show pyceph",
                                    cluster_view, 20)

            # (b) librbd asks us for the lock and gets it promptly
            requests0 = w.stats.get("RequestLock", 0)
            t0 = time.monotonic()
            try:
                p = await asyncio.to_thread(
                    subprocess.run, [*tool(fc.cluster, "rbd"), "-c", fc.conf, "bench", "--io-type", "write", "--io-size", "4K",
                                     "--io-threads", "1", "--io-total", "1M", "--io-pattern", "seq", spec],
                    capture_output=True, text=True, timeout=90)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"after {fault}: rbd bench did not finish in 90 s (lock never handed over); "
                                     f"pyceph lock state {lock.state}, RequestLock notifies seen "
                                     f"{w.stats.get('RequestLock', 0) - requests0}") from None
            timings["bench"] = time.monotonic() - t0
            assert p.returncode == 0, f"after {fault}: rbd bench failed: {p.stderr}"
            got_requests = w.stats.get("RequestLock", 0) - requests0
            assert got_requests >= 1, (
                f"after {fault}: pyceph received no REQUEST_LOCK notify from librbd (watch deaf after the "
                f"fault); bench took {timings['bench']:.1f}s; stats {w.stats}")
            blocked = await asyncio.to_thread(fc.ceph, "osd", "blocklist", "ls", json=False)  # (JSON: "[][]")
            assert addr not in blocked, f"after {fault}: librbd blocklisted pyceph ({addr}) to break its lock"
            assert lock.error is None and not lock.is_owner(), (lock.error, lock.state)
            assert timings["bench"] < 20, (
                f"after {fault}: librbd needed {timings['bench']:.1f}s to get the lock (dead-owner path?)")

            # (c) our next write takes the lock back
            await asyncio.wait_for(img.write(12 * MiB, after), 30)
            assert lock.is_owner() and w.cookie is not None
            locks = await asyncio.to_thread(_rbd_json, fc, "lock", "ls", spec)
            assert locks == [{"id": f"auto {w.cookie}", "locker": f"client.{gid}", "address": addr}], locks
            assert await img.read(8 * MiB, len(before)) == before
            assert await img.read(12 * MiB, len(after)) == after
            await asyncio.wait_for(img.close(), 30)
            img = None
            return cookie0, cookie1
        finally:
            if img is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(img.close(), 30)
            await r.shutdown()

    try:
        cookie0, cookie1 = run(go(), 420)
        out = tmp_path / "export"
        fc.cluster.rbd("export", "--no-progress", spec, str(out), timeout=120)
        data = out.read_bytes()
        assert len(data) == 64 * MiB
        assert data[8 * MiB:8 * MiB + len(before)] == before, "pyceph's write before the fault lost"
        assert data[12 * MiB:12 * MiB + len(after)] == after, "pyceph's write after the fault lost"
        extents = _rbd_json(fc, "diff", spec)  # list-snaps based: exact extents
        bench = sum(max(0, min(e["offset"] + e["length"], MiB) - e["offset"]) for e in extents)
        assert bench == MiB, f"librbd's bench data missing: {extents}"
        assert not any(data[MiB:8 * MiB]) and not any(data[8 * MiB + len(before):12 * MiB])
        assert not any(data[12 * MiB + len(after):])
        fc.cluster.rbd("object-map", "check", "--no-progress", spec, timeout=120)
        assert _rbd_json(fc, "lock", "ls", spec) == [] and _rbd_json(fc, "status", spec)["watchers"] == []
        note(f"exclusive lock, {fault}: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
             + f"; watch cookie {cookie0} -> {cookie1}")
    finally:
        for o in range(fc.cluster.state["osds"]):  # later tests want every OSD
            if fc.cluster.pid(f"osd.{o}") is None:
                with contextlib.suppress(Exception):
                    fc.cluster.start_daemon(f"osd.{o}")
        with contextlib.suppress(Exception):
            fc.cable("all", "pass")
        with contextlib.suppress(Exception):
            fc.cluster.rbd("rm", "--no-progress", spec, timeout=120)
