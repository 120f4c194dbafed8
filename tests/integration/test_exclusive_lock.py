"""Exclusive lock and header watch/notify against a real cluster, librbd as the peer.

pyceph's :class:`ImageWatcher` + :class:`ExclusiveLock` on images ``rbd create`` made:

- ``rbd lock ls`` / ``rbd status`` show pyceph as locker (``auto <watch cookie>``) and
  watcher while it holds the lock;
- ``rbd bench`` (librbd) writing the same image requests the lock, pyceph releases it,
  librbd writes, pyceph takes it back (several rounds while the bench runs); the bench
  completes, ``rbd object-map check`` passes and ``rbd diff`` shows every byte it wrote;
- with ``exclusive=True`` pyceph refuses (librbd's writes fail with EROFS, as against a
  krbd ``-o exclusive`` mapping);
- librbd maintenance ops (resize, snap create, image-meta set) sent to pyceph as lock
  owner get -EOPNOTSUPP, librbd then takes the lock and does them itself; every
  notification librbd sent decodes and re-encodes byte for byte;
- a ``rbd bench`` killed with SIGKILL while holding the lock: pyceph keeps asking until
  the dead client's watch times out, then blocklists its address and breaks its lock
  (``ceph osd blocklist ls`` shows the address).

Images are named ``h2-...``; they are removed afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid

import pytest

from pyceph.config import ClientConfig
from pyceph.rados import AsyncRados
from pyceph.rbd import cls_client as cls
from pyceph.rbd import watch_notify as wn
from pyceph.rbd.exclusive_lock import ExclusiveLock
from pyceph.rbd.image_watcher import ImageWatcher

from .helpers import tool

MiB = 1 << 20


def uniq(prefix: str) -> str:
    return f"h2-{prefix}-{uuid.uuid4().hex[:8]}"


def rbd(cluster, *args, check=True, timeout=180) -> subprocess.CompletedProcess:
    r = subprocess.run(tool(cluster, "rbd", "-c", cluster.conf_path, *args),
                       capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"rbd {' '.join(map(str, args))} failed ({r.returncode}): {r.stderr}")
    return r


def rbd_json(cluster, *args):
    return json.loads(rbd(cluster, *args, "--format", "json").stdout)


@pytest.fixture
def image(cluster):
    """Factory: ``image(features=None) -> name``; every image made is removed at the end."""
    made: list[str] = []

    def make(features: str | None = None, size: str = "64M") -> str:
        name = uniq("lock")
        args = ["create", "--size", size, f"rbd/{name}"]
        if features:
            args += ["--image-feature", features]
        rbd(cluster, *args)
        made.append(name)
        return name

    yield make
    for name in made:
        rbd(cluster, "snap", "purge", "--no-progress", f"rbd/{name}", check=False)
        rbd(cluster, "rm", "--no-progress", f"rbd/{name}", check=False)


class Session:
    """A pyceph client with a watcher and a lock on one image's header."""

    def __init__(self, cluster, name: str, exclusive: bool = False):
        self.cluster = cluster
        self.name = name
        self.exclusive = exclusive
        self.refreshes = 0
        self.events: list[str] = []

    async def __aenter__(self) -> "Session":
        self.rados = AsyncRados(ClientConfig.load(conffile=str(self.cluster.conf_path)))
        await self.rados.connect(30)
        self.ioctx = await self.rados.open_ioctx("rbd")
        image_id = await cls.get_id(self.ioctx, f"rbd_id.{self.name}")
        self.header = f"rbd_header.{image_id}"
        self.watcher = ImageWatcher(self.ioctx, self.header, self._refresh)
        await self.watcher.start()
        self.lock = ExclusiveLock(self.ioctx, self.header, self.watcher, self.rados,
                                  exclusive=self.exclusive, on_acquired=self._acquired,
                                  on_releasing=self._releasing)
        return self

    async def _refresh(self) -> None:
        self.refreshes += 1

    async def _acquired(self) -> None:
        self.events.append("acquired")

    async def _releasing(self) -> None:
        self.events.append("releasing")

    async def __aexit__(self, *exc) -> None:
        try:
            await self.lock.close()
            await self.watcher.stop()
        finally:
            await self.rados.shutdown()


def run(coro, timeout=240):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def rbd_async(cluster, *args, timeout=180) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(rbd, cluster, *args, check=False, timeout=timeout)


def test_rbd_lock_ls_and_status_show_pyceph(cluster, image):
    name = image("layering,exclusive-lock")

    async def go():
        async with Session(cluster, name) as s:
            gid, addr, cookie = s.rados.get_instance_id(), s.rados.get_addrs(), s.watcher.cookie
            status = await asyncio.to_thread(rbd_json, cluster, "status", f"rbd/{name}")
            assert status["watchers"] == [{"address": addr, "client": gid, "cookie": cookie}]
            assert await asyncio.to_thread(rbd_json, cluster, "lock", "ls", f"rbd/{name}") == []
            await s.lock.acquire(timeout=30)
            locks = await asyncio.to_thread(rbd_json, cluster, "lock", "ls", f"rbd/{name}")
            assert locks == [{"id": f"auto {cookie}", "locker": f"client.{gid}", "address": addr}]
            owner = await s.lock.get_lock_owner()
            assert owner.handle == cookie and owner.tag == "internal" and owner.description == ""
            await s.lock.release()
            assert await asyncio.to_thread(rbd_json, cluster, "lock", "ls", f"rbd/{name}") == []
            await s.lock.acquire(timeout=30)
        # closed: lock released, watch gone
        assert rbd_json(cluster, "lock", "ls", f"rbd/{name}") == []
        assert rbd_json(cluster, "status", f"rbd/{name}")["watchers"] == []

    run(go())


def test_librbd_bench_and_pyceph_take_the_lock_in_turns(cluster, image):
    name = image()  # Pacific defaults: layering, exclusive-lock, object-map, fast-diff, deep-flatten
    assert set(rbd_json(cluster, "info", f"rbd/{name}")["features"]) >= {"exclusive-lock", "object-map"}

    async def go():
        async with Session(cluster, name) as s:
            await s.lock.acquire(timeout=30)
            for round_ in range(2):
                assert s.lock.is_owner()
                requests_before = s.watcher.stats.get("RequestLock", 0)
                releases_before = s.events.count("releasing")
                bench = await asyncio.create_subprocess_exec(
                    *tool(cluster, "rbd"), "-c", str(cluster.conf_path), "bench", "--io-type", "write", "--io-size", "4K",
                    "--io-threads", "1", "--io-total", "16M", "--io-pattern", "seq", f"rbd/{name}",
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                waiter = asyncio.ensure_future(bench.communicate())
                while not waiter.done():
                    # take it back while librbd is writing; it asks again, we release again
                    if not s.lock.is_owner():
                        try:
                            await s.lock.acquire(timeout=30)
                        except Exception:
                            if not waiter.done():
                                raise
                    await asyncio.sleep(0.2)
                out, err = waiter.result()
                assert bench.returncode == 0, err.decode()
                # librbd asked us for the lock and we gave it up
                assert s.watcher.stats.get("RequestLock", 0) > requests_before
                assert s.events.count("releasing") > releases_before
                # and we take it back (at once if librbd closed the image meanwhile)
                await s.lock.acquire(timeout=30)
            assert s.events.count("acquired") >= 3
            assert s.watcher.stats.get("AcquiredLock", 0) >= 4  # ours and librbd's
            assert s.watcher.stats.get("ReleasedLock", 0) >= 4
            gid = s.rados.get_instance_id()
            locks = await asyncio.to_thread(rbd_json, cluster, "lock", "ls", f"rbd/{name}")
            assert [(lk["locker"], lk["id"]) for lk in locks] == [(f"client.{gid}", f"auto {s.watcher.cookie}")]
        # nothing librbd wrote was lost and its object map is intact
        rbd(cluster, "object-map", "check", "--no-progress", f"rbd/{name}")
        extents = rbd_json(cluster, "diff", f"rbd/{name}")
        assert sum(e["length"] for e in extents) == 16 * MiB
        assert all(e["exists"] == "true" for e in extents)

    run(go())


def test_exclusive_pyceph_refuses_librbd(cluster, image):
    name = image("layering,exclusive-lock")

    async def go():
        async with Session(cluster, name, exclusive=True) as s:
            await s.lock.acquire(timeout=30)
            r = await rbd_async(cluster, "bench", "--io-type", "write", "--io-total", "64K", "--io-size", "64K",
                                f"rbd/{name}")
            assert r.returncode != 0
            assert "Read-only file system" in r.stderr
            assert s.lock.is_owner()
            assert s.watcher.stats.get("RequestLock", 0) >= 1
            gid = s.rados.get_instance_id()
            locks = await asyncio.to_thread(rbd_json, cluster, "lock", "ls", f"rbd/{name}")
            assert [lk["locker"] for lk in locks] == [f"client.{gid}"]

    run(go())


def test_librbd_maintenance_ops_while_pyceph_owns_the_lock(cluster, image):
    name = image()

    async def go():
        async with Session(cluster, name) as s:
            raw: list[bytes] = []

            def spy(notify_id, cookie, gid, payload):
                raw.append(bytes(payload))
                asyncio.ensure_future(s.ioctx.notify_ack(s.header, notify_id, cookie, b""))

            spy_cookie = await s.ioctx.watch(s.header, spy, lambda c, e: None)
            try:
                for args in (("resize", "--no-progress", "--size", "128M", f"rbd/{name}"),
                             ("snap", "create", "--no-progress", f"rbd/{name}@h2snap"),
                             ("image-meta", "set", f"rbd/{name}", "conf_rbd_cache", "false"),
                             ("image-meta", "remove", f"rbd/{name}", "conf_rbd_cache")):
                    await s.lock.acquire(timeout=30)
                    r = await rbd_async(cluster, *args)
                    assert r.returncode == 0, (args, r.stderr)
            finally:
                await s.ioctx.unwatch(spy_cookie)
            assert rbd_json(cluster, "info", f"rbd/{name}")["size"] == 128 * MiB
            assert [x["name"] for x in rbd_json(cluster, "snap", "ls", f"rbd/{name}")] == ["h2snap"]
            # every op reached the owner first, then librbd asked for the lock
            for op in ("Resize", "SnapCreate", "MetadataUpdate", "RequestLock", "HeaderUpdate"):
                assert s.watcher.stats.get(op, 0) >= 1, (op, s.watcher.stats)
            assert s.refreshes >= 2
            msgs = [wn.NotifyMessage.decode(p) for p in raw]
            for p, m in zip(raw, msgs):
                assert not isinstance(m.payload, wn.UnknownPayload)
                assert m.encode() == p, (m, p.hex())  # librbd's own bytes, re-encoded exactly
            by_op = {type(m.payload).__name__: m.payload for m in msgs}
            assert by_op["ResizePayload"].size == 128 * MiB
            assert by_op["SnapCreatePayload"].snap_name == "h2snap"
            meta = [m.payload for m in msgs if isinstance(m.payload, wn.MetadataUpdatePayload)]
            assert ("conf_rbd_cache", "false") in [(p.key, p.value) for p in meta]
            assert ("conf_rbd_cache", None) in [(p.key, p.value) for p in meta]

    run(go())


def test_killed_librbd_owner_is_blocklisted_and_its_lock_broken(cluster, image):
    name = image("layering,exclusive-lock")
    bench = subprocess.Popen(
        tool(cluster, "rbd", "-c", cluster.conf_path, "bench", "--io-type", "write", "--io-size", "4K",
             "--io-total", "10G", f"rbd/{name}"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        locks = []
        while not locks and time.monotonic() < deadline:
            locks = rbd_json(cluster, "lock", "ls", f"rbd/{name}")
            time.sleep(0.2)
        assert locks, "rbd bench never took the lock"
    finally:
        os.kill(bench.pid, signal.SIGKILL)
        bench.wait()
    dead_addr = locks[0]["address"]
    assert locks[0]["id"].startswith("auto ")

    async def go():
        async with Session(cluster, name) as s:
            t0 = time.monotonic()
            await s.lock.acquire(timeout=120)
            took = time.monotonic() - t0
            gid = s.rados.get_instance_id()
            assert s.lock.broken_locks == [(locks[0]["locker"], dead_addr)]
            locks_now = await asyncio.to_thread(rbd_json, cluster, "lock", "ls", f"rbd/{name}")
            assert [(lk["locker"], lk["id"]) for lk in locks_now] == [(f"client.{gid}", f"auto {s.watcher.cookie}")]
            # the dead client's watch lived on until the OSD timed it out: we asked first
            assert s.watcher.stats.get("RequestLock", 0) >= 1
            return took

    try:
        took = run(go())
        assert took < 100
        bl = cluster.ceph("osd", "blocklist", "ls", json=False)
        assert dead_addr in bl
    finally:
        cluster.ceph("osd", "blocklist", "rm", dead_addr, json=False)


def test_rewatch_moves_the_lock_to_the_new_cookie(cluster, image):
    """The OSD client reports the watch lost for good (what it does when re-registration
    fails, e.g. after the OSD timed the watch out): the watcher registers a new watch and
    the lock follows it with cls_lock ``set_cookie`` on the real OSD.  librbd then still
    finds the owner through the new cookie (it asks instead of blocklisting us)."""
    from pyceph.errors import NotConnected

    name = image("layering,exclusive-lock")

    async def go():
        async with Session(cluster, name) as s:
            await s.lock.acquire(timeout=30)
            old = s.watcher.cookie
            s.watcher._on_error(old, NotConnected("watch timed out (injected)"))
            for _ in range(100):
                if s.watcher.cookie not in (None, old) and s.lock.cookie == f"auto {s.watcher.cookie}":
                    break
                await asyncio.sleep(0.1)
            new = s.watcher.cookie
            assert new not in (None, old) and s.lock.is_owner()
            assert s.events == ["acquired"]  # moved, not released and re-taken
            gid, addr = s.rados.get_instance_id(), s.rados.get_addrs()
            locks = await asyncio.to_thread(rbd_json, cluster, "lock", "ls", f"rbd/{name}")
            assert locks == [{"id": f"auto {new}", "locker": f"client.{gid}", "address": addr}]
            status = await asyncio.to_thread(rbd_json, cluster, "status", f"rbd/{name}")
            assert status["watchers"] == [{"address": addr, "client": gid, "cookie": new}]
            r = await rbd_async(cluster, "bench", "--io-type", "write", "--io-total", "64K", "--io-size", "64K",
                                f"rbd/{name}")
            assert r.returncode == 0, r.stderr
            assert s.watcher.stats.get("RequestLock", 0) >= 1 and s.lock.broken_locks == []
            bl = await asyncio.to_thread(cluster.ceph, "osd", "blocklist", "ls", json=False)
            assert addr not in bl

    run(go())
