"""Watch/notify, self-managed snapshots, rollback, list_snaps and blocklisting against a
real cluster, with the ``rados`` CLI (librados) as the other party and oracle.

- our watch receives what ``rados notify`` sends and our ack reaches it;
- ``rados listwatchers`` shows our watch at the address ``get_addrs()`` returns;
- our notify reaches a ``rados watch`` process and returns its ack; a watcher that does
  not ack shows up in the timeouts;
- selfmanaged snap create/remove (MPoolOp) and ROLLBACK / LIST_SNAPS on objects;
- ``blocklist_add(get_addrs() of another client)`` makes that client's watch fail with
  Blocklisted and ``ceph osd blocklist ls`` list the address.

A fault test (primary OSD restarted while we watch) runs on a private DevCluster:
the re-registered watch still receives notifies from ``rados notify``.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid

import pytest

from pyceph.cluster import DevCluster
from pyceph.config import ClientConfig
from pyceph.errors import Blocklisted, ObjectNotFound
from pyceph.osd import ops as O
from pyceph.rados import AsyncRados, Rados

from .helpers import tool, wanted_ms_mode, wanted_release

POOL = "rbd"


def uniq(prefix: str = "h1-wn") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def rados_argv(cluster, *args) -> list[str]:
    return tool(cluster, "rados", "-c", cluster.conf_path, "-p", POOL, *args)


async def arun(argv: list[str], timeout: float = 60) -> tuple[int, str, str]:
    p = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), timeout)
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def client(cluster, **opts) -> AsyncRados:
    r = AsyncRados(ClientConfig.load(conffile=str(cluster.conf_path),
                                     overrides={k: str(v) for k, v in opts.items()}))
    await r.connect(30)
    return r


def run(coro, limit: float = 120):
    return asyncio.run(asyncio.wait_for(coro, limit))


async def until(cond, limit: float = 20.0, step: float = 0.1):
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while True:
        v = cond()
        if asyncio.iscoroutine(v):
            v = await v
        if v:
            return v
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)


class Watcher:
    """Records notifies; acks them with ``b"ack:" + payload`` unless ``ack`` is False."""

    def __init__(self, io, oid: str, ack: bool = True):
        self.io, self.oid, self.ack = io, oid, ack
        self.notifies: list[tuple[int, int, int, bytes]] = []
        self.errors: list[tuple[int, Exception]] = []
        self.tasks: list[asyncio.Task] = []

    def on_notify(self, notify_id, cookie, gid, payload):
        self.notifies.append((notify_id, cookie, gid, payload))
        if self.ack:
            self.tasks.append(asyncio.get_running_loop().create_task(
                self.io.notify_ack(self.oid, notify_id, cookie, b"ack:" + payload)))

    def on_error(self, cookie, exc):
        self.errors.append((cookie, exc))

    async def start(self, timeout: int = 30) -> int:
        return await self.io.watch(self.oid, self.on_notify, self.on_error, timeout)


# --------------------------------------------------------------------------- watch / notify


def test_rados_notify_reaches_our_watch_and_gets_our_ack(cluster):
    async def go():
        r = await client(cluster)
        io = await r.open_ioctx(POOL)
        oid = uniq()
        await io.write_full(oid, b"x")
        w = Watcher(io, oid)
        cookie = await w.start()
        rc, out, err = await arun(rados_argv(cluster, "notify", oid, "hello-from-rados"))
        assert rc == 0, err
        # librados' CLI prints each reply: "reply client.<gid> cookie <cookie> : <n> bytes" + hexdump
        assert f"reply client.{r.get_instance_id()} cookie {cookie} :" in out, out
        assert "24 bytes" in out and "|ack:....hello-fr|" in out  # b"ack:" + the 4+16-byte payload
        (nid, c, gid, payload) = w.notifies[0]
        assert c == cookie and gid != r.get_instance_id() and payload.endswith(b"hello-from-rados")
        assert w.errors == []
        assert 0 <= await io.watch_check(cookie) < 30
        await io.unwatch(cookie)
        await io.remove(oid)
        await r.shutdown()

    run(go())


def test_listwatchers_shows_our_watch_at_get_addrs(cluster):
    async def go():
        r = await client(cluster)
        io = await r.open_ioctx(POOL)
        oid = uniq()
        await io.write_full(oid, b"x")
        cookie = await Watcher(io, oid).start(timeout=17)
        rc, out, err = await arun(rados_argv(cluster, "listwatchers", oid))
        assert rc == 0, err
        want = f"watcher={r.get_addrs()} client.{r.get_instance_id()} cookie={cookie}"
        assert out.strip() == want, (out, want)
        (item,) = await io.list_watchers(oid)
        assert (str(item.name), item.cookie, item.timeout_seconds) == (
            f"client.{r.get_instance_id()}", cookie, 17)
        assert item.addr.legacy_str() == r.get_addrs()
        await io.unwatch(cookie)
        rc, out, _ = await arun(rados_argv(cluster, "listwatchers", oid))
        assert out.strip() == "" and await io.list_watchers(oid) == []
        await io.remove(oid)
        await r.shutdown()

    run(go())


def test_our_notify_reaches_rados_watch_and_a_silent_watcher_times_out(cluster):
    async def go():
        r = await client(cluster)
        io = await r.open_ioctx(POOL)
        oid = uniq()
        await io.write_full(oid, b"x")
        p = await asyncio.create_subprocess_exec(*rados_argv(cluster, "watch", oid), stdin=subprocess.PIPE,
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            watchers = await until(lambda: io.list_watchers(oid))
            (rw,) = watchers
            acks, timeouts = await io.notify(oid, b"from-pyceph", 5000)
            # `rados watch` acks with the payload it received
            assert acks == {(rw.name.num, rw.cookie): b"from-pyceph"} and timeouts == []

            silent = Watcher(io, oid, ack=False)
            scookie = await silent.start()
            t0 = time.monotonic()
            acks, timeouts = await io.notify(oid, b"again", 1500)
            assert time.monotonic() - t0 >= 1.0
            assert acks == {(rw.name.num, rw.cookie): b"again"}
            assert timeouts == [(r.get_instance_id(), scookie)]
            assert silent.notifies and silent.notifies[0][3] == b"again"
            await io.unwatch(scookie)
        finally:
            p.stdin.close()
            out, _ = await asyncio.wait_for(p.communicate(), 20)
        assert b"NOTIFY cookie" in out and b"from-pyceph" in out
        await io.remove(oid)
        await r.shutdown()

    run(go())


def test_notify_and_watch_errors(cluster):
    async def go():
        r = await client(cluster)
        io = await r.open_ioctx(POOL)
        oid = uniq()
        with pytest.raises(ObjectNotFound):
            await io.watch(oid, print, print)
        with pytest.raises(ObjectNotFound):
            await io.notify(oid, b"x", 1000)
        assert r.osdc.lingers == {}
        await io.write_full(oid, b"x")
        assert await io.notify(oid, b"nobody", 1000) == ({}, [])
        await io.remove(oid)
        await r.shutdown()

    run(go())


def test_watch_on_deleted_object_reports_error(cluster):
    async def go():
        r = await client(cluster)
        io = await r.open_ioctx(POOL)
        oid = uniq()
        await io.write_full(oid, b"x")
        w = Watcher(io, oid)
        cookie = await w.start()
        rc, _, err = await arun(rados_argv(cluster, "rm", oid))
        assert rc == 0, err
        await until(lambda: w.errors)
        assert w.errors[0][0] == cookie and getattr(w.errors[0][1], "errno", None) == 107
        await r.shutdown()

    run(go())


# --------------------------------------------------------------------------- snapshots


def test_selfmanaged_snap_rollback_and_list_snaps(cluster):
    async def go():
        r = await client(cluster)
        io = await r.open_ioctx(POOL)
        oid = uniq()
        await io.write_full(oid, b"version-1")
        s1 = await io.selfmanaged_snap_create()
        pool = r.osdmap.pools[io.pool_id]
        assert pool.snap_seq >= s1  # our map already holds the epoch with the new snap
        await io.write_full(oid, b"version-2!!", snapc=(s1, [s1]))
        s2 = await io.selfmanaged_snap_create()
        assert s2 > s1
        await io.write(oid, b"3", 0, snapc=(s2, [s2, s1]))
        ss = await io.list_snaps(oid)
        assert ss.seq == s2
        assert [(c.cloneid, c.snaps, c.size) for c in ss.clones] == [
            (s1, (s1,), 9), (s2, (s2,), 11), (O.CEPH_NOSNAP, (), 11)]
        assert ss.clones[1].overlap == ((1, 10),)  # s2's clone shares all but byte 0 with head
        assert await io.read(oid, snapid=s1) == b"version-1"
        assert await io.read(oid, snapid=s2) == b"version-2!!"
        assert await io.read(oid) == b"3ersion-2!!"
        # the rados CLI sees the same clones
        rc, out, err = await arun(rados_argv(cluster, "listsnaps", oid))
        assert rc == 0, err
        assert out.count("\n") >= 4 and "head" in out
        await io.rollback(oid, s1, (s2, [s2, s1]))
        assert await io.read(oid) == b"version-1"
        await io.selfmanaged_snap_remove(s2)
        await io.selfmanaged_snap_remove(s1)

        async def gone(snap):
            try:
                await io.read(oid, snapid=snap)
            except ObjectNotFound:
                return True
            return False

        assert await until(lambda: gone(s1), 30) and await until(lambda: gone(s2), 30)
        await io.remove(oid, snapc=(s2, []))
        with pytest.raises(ObjectNotFound):
            await io.read(oid)
        await r.shutdown()

    run(go())


def test_sync_api_selfmanaged_snaps_and_notify(cluster):
    oid = uniq()
    with Rados(conffile=str(cluster.conf_path)) as r:
        with r.open_ioctx(POOL) as io:
            io.write_full(oid, b"a")
            s = io.create_self_managed_snap()
            r.run(io.core.write_full(oid, b"b", snapc=(s, [s])))
            io.rollback_self_managed_snap(oid, s, (s, [s]))
            assert io.read(oid) == b"a"
            assert io.notify(oid, "hi", 1000) == ({}, [])
            assert io.list_watchers(oid) == []
            io.remove_self_managed_snap(s)
            r.run(io.core.remove(oid, snapc=(s, [])))
            assert isinstance(r.get_instance_id(), int) and r.get_addrs().count("/") == 1


# --------------------------------------------------------------------------- blocklist


def test_blocklist_add_other_client_fails_its_watch(cluster):
    async def go():
        a = await client(cluster)
        b = await client(cluster)
        ioa = await a.open_ioctx(POOL)
        iob = await b.open_ioctx(POOL)
        oid = uniq()
        await ioa.write_full(oid, b"x")
        w = Watcher(iob, oid)
        cookie = await w.start()
        (item,) = await ioa.list_watchers(oid)
        victim = item.addr.legacy_str()
        assert victim == b.get_addrs()
        await a.blocklist_add("v2:" + victim, expire_s=120)
        try:
            bl = cluster.ceph("osd", "blocklist", "ls", json=False)
            assert victim in bl, bl
            # our OSDMap already holds the entry
            assert any(x.legacy_str() == victim for x in a.osdmap.blocklist)
            await until(lambda: w.errors, 30)
            assert w.errors[0][0] == cookie and isinstance(w.errors[0][1], Blocklisted)
            with pytest.raises(Blocklisted):
                await iob.watch_check(cookie)
            with pytest.raises(Blocklisted):
                await iob.read(oid)
            # the blocklisted client's watch is gone once the OSD times it out or drops it:
            # a notify from a finds no acking watcher
            acks, _ = await ioa.notify(oid, b"x", 1000)
            assert acks == {}
        finally:
            cluster.ceph("osd", "blocklist", "rm", victim, json=False)
        await ioa.remove(oid)
        await a.shutdown()
        try:
            await b.shutdown()
        except Exception:
            pass

    run(go(), 180)


# --------------------------------------------------------------------------- faults (own cluster)


@pytest.fixture(scope="module")
def fault_cluster(tmp_path_factory):
    c = DevCluster(tmp_path_factory.mktemp("h1-wn-cluster"))
    c.start(mons=1, osds=3, release=wanted_release(), ms_mode=wanted_ms_mode())
    try:
        yield c
    finally:
        c.stop()


def _primary(cluster, oid: str) -> int:
    m = cluster.ceph("osd", "map", POOL, oid)
    return int(m["acting_primary"])


def test_watch_survives_primary_osd_restart(fault_cluster):
    c = fault_cluster
    fast = {"osd_keepalive_interval": 1, "osd_keepalive_timeout": 3, "mon_client_ping_interval": 1,
            "mon_client_ping_timeout": 3, "mon_client_hunt_interval": 1}

    async def go():
        r = await client(c, **fast)
        io = await r.open_ioctx(POOL)
        oid = uniq()
        await io.write_full(oid, b"x")
        w = Watcher(io, oid)
        cookie = await w.start()
        lreq = r.osdc.lingers[cookie]
        primary = _primary(c, oid)
        assert lreq.t.osd == primary
        await asyncio.get_running_loop().run_in_executor(None, lambda: c.kill(f"osd.{primary}"))
        # The monitor marks it down (or our session faults first); either way the watch
        # must be re-registered (RECONNECT) and keep receiving notifies.
        await until(lambda: lreq.reconnects >= 1, 60)
        rc, out, err = await arun(rados_argv(c, "notify", oid, "after-kill"), 90)
        assert rc == 0, err
        assert f"reply client.{r.get_instance_id()} cookie {cookie} :" in out, out
        await asyncio.get_running_loop().run_in_executor(None, lambda: c.start_daemon(f"osd.{primary}"))
        await asyncio.get_running_loop().run_in_executor(None, lambda: c.wait_clean(180))
        rc, out, err = await arun(rados_argv(c, "notify", oid, "after-restart"), 90)
        assert rc == 0, err
        assert f"reply client.{r.get_instance_id()} cookie {cookie} :" in out, out
        assert w.errors == []
        assert [p[3][-len(b"after-restart"):] for p in w.notifies][-1] == b"after-restart"
        assert any(p[3].endswith(b"after-kill") for p in w.notifies)
        print(f"[h1] watch on osd.{primary} -> osd.{lreq.t.osd}: {lreq.reconnects} reconnects, "
              f"{lreq.pings} pings, events {len(w.notifies)}")
        await io.unwatch(cookie)
        await r.shutdown()

    run(go(), 400)
