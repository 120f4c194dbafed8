"""ImageWatcher and ExclusiveLock against an in-memory fake of the OSD side.

The fake keeps, per object, the watches (cookie -> callbacks, client gid and address) and
the cls_lock state, and implements watch/unwatch/notify/notify_ack/list_watchers and the
``lock`` class methods (lock, unlock, break_lock, get_info, set_cookie) with the OSD's
semantics (cls/lock/cls_lock.cc: EBUSY for another holder, EEXIST for the same one,
ENOENT for a missing locker).  Notifications go to every watch of the object (the
notifier's own watch too) and complete when all acked or after the timeout, like the
OSD.  Blocklisting an address makes that client's later ops fail with -EBLOCKLISTED and
errors its watches.  The real OSD path is covered by tests/integration/test_exclusive_lock.py.
"""

from __future__ import annotations

import asyncio
import errno
import itertools

import pytest

from pyceph.encoding import Decoder, Encoder
from pyceph.errors import Blocklisted, Error, ImageBusy, NotConnected, TimedOut, make_ex
from pyceph.osd.ops import WatchItem
from pyceph.rbd import cls_client as cls
from pyceph.rbd import watch_notify as wn
from pyceph.rbd.exclusive_lock import (
    RBD_LOCK_NAME,
    ExclusiveLock,
    SetCookieOp,
    format_lock_cookie,
    parse_lock_cookie,
)
from pyceph.rbd.image_watcher import ImageWatcher
from pyceph.types import ADDR_TYPE_ANY, ADDR_TYPE_MSGR2, ENTITY_TYPE_CLIENT, EntityAddr, EntityNameT

HDR = "rbd_header.abc123"


class FakeWatch:
    def __init__(self, client, cookie, on_notify, on_error):
        self.client = client
        self.cookie = cookie
        self.on_notify = on_notify
        self.on_error = on_error


class FakeNotify:
    def __init__(self, waiting):
        self.waiting = set(waiting)
        self.acks: dict = {}
        self.done = asyncio.Event()
        if not self.waiting:
            self.done.set()


class FakeCluster:
    def __init__(self):
        self.watches: dict[str, dict[int, FakeWatch]] = {}
        self.locks: dict[str, dict] = {}
        self.blocklist: list[str] = []
        self.notifies: dict[int, FakeNotify] = {}
        self.sent: list[tuple[int, wn.NotifyMessage]] = []  # (notifier gid, message)
        self.cookies = itertools.count(0x7F0000001000, 0x100)
        self.notify_ids = itertools.count(1000)
        self.set_cookie_supported = True
        self.lock_calls: list[str] = []

    def lock_state(self, oid=HDR):
        return self.locks.setdefault(oid, {"lockers": {}, "type": cls.LOCK_NONE, "tag": ""})

    def remove_watch(self, oid, cookie):
        self.watches.get(oid, {}).pop(cookie, None)
        for n in self.notifies.values():
            n.waiting.discard(cookie)
            if not n.waiting:
                n.done.set()


class FakeRados:
    def __init__(self, cluster: FakeCluster, gid: int, port: int):
        self.cluster = cluster
        self.gid = gid
        self.addr = EntityAddr(ADDR_TYPE_ANY, 1000 + gid, "127.0.0.1", port)
        self.entity = EntityNameT(ENTITY_TYPE_CLIENT, gid)
        self.responsive = True  # False: our watches receive nothing (hung client)

    def get_instance_id(self):
        return self.gid

    def blocklisted(self):
        return self.addr.legacy_str() in self.cluster.blocklist

    async def blocklist_add(self, addr, expire_s=None):
        self.cluster.blocklist.append(addr)
        for oid, ws in self.cluster.watches.items():
            for w in list(ws.values()):
                if w.client.addr.legacy_str() == addr:
                    self.cluster.remove_watch(oid, w.cookie)
                    w.on_error(w.cookie, make_ex(-108, "watch"))


class FakeIoctx:
    def __init__(self, rados: FakeRados):
        self.rados = rados
        self.c = rados.cluster

    def _check(self):
        if self.rados.blocklisted():
            raise make_ex(-108, "blocklisted")

    async def watch(self, oid, on_notify, on_error, timeout=30):
        self._check()
        cookie = next(self.c.cookies)
        self.c.watches.setdefault(oid, {})[cookie] = FakeWatch(self.rados, cookie, on_notify, on_error)
        return cookie

    async def unwatch(self, cookie):
        for oid in self.c.watches:
            if cookie in self.c.watches[oid]:
                self.c.remove_watch(oid, cookie)
                return
        raise make_ex(-errno.ENOENT, "unwatch")

    async def list_watchers(self, oid):
        self._check()
        return [WatchItem(w.client.entity, w.cookie, 30, w.client.addr)
                for w in self.c.watches.get(oid, {}).values()]

    async def notify(self, oid, payload=b"", timeout_ms=5000):
        self._check()
        try:
            self.c.sent.append((self.rados.gid, wn.NotifyMessage.decode(payload)))
        except Error:
            pass  # garbage sent on purpose
        nid = next(self.c.notify_ids)
        ws = list(self.c.watches.get(oid, {}).values())
        n = FakeNotify(w.cookie for w in ws)
        self.c.notifies[nid] = n
        loop = asyncio.get_running_loop()
        for w in ws:
            if w.client.responsive:
                loop.call_soon(w.on_notify, nid, w.cookie, self.rados.gid, payload)
        try:
            await asyncio.wait_for(n.done.wait(), timeout_ms / 1000)
        except asyncio.TimeoutError:
            pass
        del self.c.notifies[nid]
        timeouts = [(w.client.gid, w.cookie) for w in ws if w.cookie in n.waiting]
        return n.acks, timeouts

    async def notify_ack(self, oid, notify_id, cookie, payload=b""):
        self._check()
        n = self.c.notifies.get(notify_id)
        if n is None or cookie not in n.waiting:
            return
        n.waiting.discard(cookie)
        n.acks[(self.rados.gid, cookie)] = bytes(payload)
        if not n.waiting:
            n.done.set()

    async def execute(self, oid, cls_name, method, data=b"", read_only=False):
        self._check()
        assert cls_name == "lock"
        self.c.lock_calls.append(method)
        st = self.c.lock_state(oid)
        d = Decoder(data)
        me = self.rados.entity
        if method == "lock":
            op = cls.LockOp.decode(d)
            assert op.name == RBD_LOCK_NAME
            key = cls.LockerId(me, op.cookie)
            if st["lockers"]:
                if key in st["lockers"]:
                    raise make_ex(-errno.EEXIST, "lock")
                raise make_ex(-errno.EBUSY, "lock")
            st["lockers"][key] = cls.LockerInfo(op.duration, self.rados.addr, op.description)
            st["type"], st["tag"] = op.type, op.tag
            return b""
        if method == "unlock":
            op = cls.UnlockOp.decode(d)
            if st["lockers"].pop(cls.LockerId(me, op.cookie), None) is None:
                raise make_ex(-errno.ENOENT, "unlock")
            return b""
        if method == "break_lock":
            op = cls.BreakOp.decode(d)
            if st["lockers"].pop(cls.LockerId(op.locker, op.cookie), None) is None:
                raise make_ex(-errno.ENOENT, "break_lock")
            return b""
        if method == "get_info":
            info = cls.LockInfo(dict(st["lockers"]), st["type"] if st["lockers"] else cls.LOCK_NONE,
                                st["tag"] if st["lockers"] else "")
            return info.encode(Encoder()).bytes()
        if method == "set_cookie":
            if not self.c.set_cookie_supported:
                raise make_ex(-errno.EOPNOTSUPP, "set_cookie")
            op = SetCookieOp.decode(d)
            old = cls.LockerId(me, op.cookie)
            if old not in st["lockers"] or op.tag != st["tag"] or op.type != st["type"]:
                raise make_ex(-errno.ENOENT, "set_cookie")
            new = cls.LockerId(me, op.new_cookie)
            if new in st["lockers"]:
                raise make_ex(-errno.EBUSY, "set_cookie")
            st["lockers"][new] = st["lockers"].pop(old)
            return b""
        raise AssertionError(method)


class Client:
    """One fake client with a watcher and a lock on the header."""

    def __init__(self, cluster, gid, *, exclusive=False, timeout=0.3):
        self.rados = FakeRados(cluster, gid, 50000 + gid)
        self.ioctx = FakeIoctx(self.rados)
        self.events: list[str] = []
        self.refreshes = 0
        self.watcher = ImageWatcher(self.ioctx, HDR, self.refresh, notify_timeout=timeout, retry_delay=0.02)
        self.lock = ExclusiveLock(self.ioctx, HDR, self.watcher, self.rados, exclusive=exclusive,
                                  on_acquired=self.acquired, on_releasing=self.releasing,
                                  notify_timeout=timeout, retry_delay=0.05)

    async def refresh(self):
        self.refreshes += 1

    async def acquired(self):
        self.events.append("acquired")

    async def releasing(self):
        # the image's quiesce: the lock must still be ours while it runs
        st = self.rados.cluster.lock_state()
        assert any(k.locker == self.rados.entity for k in st["lockers"])
        self.events.append("releasing")


def lockers(cluster):
    return {(str(k.locker), k.cookie): v for k, v in cluster.lock_state()["lockers"].items()}


def sent_ops(cluster, gid=None):
    return [(g, m.notify_op) for g, m in cluster.sent if gid is None or g == gid]


async def settle(n=20):
    for _ in range(n):
        await asyncio.sleep(0.01)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


# --- cookie / op encodings --------------------------------------------------------------


def test_cookie_format():
    assert format_lock_cookie(139990458672528) == "auto 139990458672528"
    assert parse_lock_cookie("auto 18") == 18
    for bad in ("auto", "auto x", "manual 3", "auto 3 4", " auto 3"):
        assert parse_lock_cookie(bad) is None


def test_set_cookie_op_bytes():
    # kernel ceph_cls_set_cookie: start_encoding(1,1); name; u8 type; old; tag; new
    op = SetCookieOp("rbd_lock", cls.LOCK_EXCLUSIVE, "auto 1", "internal", "auto 2")
    body = (b"\x08\x00\x00\x00rbd_lock" + b"\x01" + b"\x06\x00\x00\x00auto 1"
            + b"\x08\x00\x00\x00internal" + b"\x06\x00\x00\x00auto 2")
    want = b"\x01\x01" + len(body).to_bytes(4, "little") + body
    assert op.encode(Encoder()).bytes() == want
    assert SetCookieOp.decode(Decoder(want)) == op


def test_legacy_addr_str():
    assert EntityAddr(ADDR_TYPE_MSGR2, 77, "10.0.0.1", 0).legacy_str() == "10.0.0.1:0/77"
    assert EntityAddr(ADDR_TYPE_ANY, 5, "::1", 6800).legacy_str() == "[::1]:6800/5"


# --- watcher ------------------------------------------------------------------------------


def test_every_notification_is_acked_and_header_update_refreshes():
    async def go():
        c = FakeCluster()
        a, b = Client(c, 11), Client(c, 12)
        await a.watcher.start()
        await b.watcher.start()
        await b.watcher.notify_header_update()
        assert a.refreshes == 1 and b.refreshes == 1  # the notifier's own watch too
        # legacy empty notification, an async op and garbage: all acked (no timeouts)
        for payload in (b"", wn.NotifyMessage(wn.FlattenPayload()).encode(), b"\x07\x01\xff"):
            acks, timeouts = await b.ioctx.notify(HDR, payload, 300)
            assert timeouts == [] and len(acks) == 2
            assert all(v == b"" for v in acks.values())  # nobody owns the lock
        assert a.refreshes == 3  # legacy header update + flatten (check_for_refresh)
        await a.watcher.stop()
        await b.watcher.stop()
        assert c.watches[HDR] == {}

    run(go())


def test_client_id_is_gid_and_watch_cookie():
    async def go():
        c = FakeCluster()
        a = Client(c, 21)
        assert a.watcher.client_id == wn.ClientId(21, 0)
        await a.watcher.start()
        assert a.watcher.client_id == wn.ClientId(21, a.watcher.cookie)
        assert a.watcher.cookie in c.watches[HDR]

    run(go())


def test_request_lock_answers():
    async def go():
        c = FakeCluster()
        owner, peer = Client(c, 31), Client(c, 32)
        await owner.watcher.start()
        await peer.watcher.start()
        # nobody owns it: no response payload at all
        assert await peer.watcher.notify_request_lock() == -errno.ETIMEDOUT
        await owner.lock.acquire()
        # the owner answers 0 and releases in the background
        assert await peer.watcher.notify_request_lock() == 0
        await settle()
        assert not owner.lock.is_owner() and lockers(c) == {}
        assert owner.events == ["acquired", "releasing"]
        assert (31, wn.NOTIFY_OP_RELEASED_LOCK) in sent_ops(c)
        # a request carrying our own client id is ignored (plain ack)
        await owner.lock.acquire()
        acks, _ = await owner.ioctx.notify(HDR, wn.NotifyMessage(
            wn.RequestLockPayload(owner.watcher.client_id)).encode(), 300)
        assert all(v == b"" for v in acks.values()) and owner.lock.is_owner()

    run(go())


def test_owner_refuses_maintenance_ops_with_eopnotsupp():
    async def go():
        c = FakeCluster()
        owner, peer = Client(c, 41), Client(c, 42)
        await owner.watcher.start()
        await peer.watcher.start()
        await owner.lock.acquire()
        msg = wn.NotifyMessage(wn.ResizePayload(1 << 20, wn.AsyncRequestId(peer.watcher.client_id, 1)))
        acks, timeouts = await peer.ioctx.notify(HDR, msg.encode(), 300)
        assert timeouts == []
        assert wn.ResponseMessage.decode(acks[(41, owner.watcher.cookie)]).result == -errno.EOPNOTSUPP
        assert acks[(42, peer.watcher.cookie)] == b""
        assert owner.refreshes == 1  # resize asks for a refresh first
        assert owner.lock.is_owner()

    run(go())


# --- exclusive lock ------------------------------------------------------------------------


def test_acquire_uncontended_sets_rbd_lock_and_notifies():
    async def go():
        c = FakeCluster()
        a, b = Client(c, 51), Client(c, 52)
        await a.watcher.start()
        await b.watcher.start()
        await a.lock.acquire()
        assert a.lock.is_owner()
        cookie = f"auto {a.watcher.cookie}"
        assert a.lock.cookie == cookie
        st = c.lock_state()
        assert (st["type"], st["tag"]) == (cls.LOCK_EXCLUSIVE, "internal")
        info = st["lockers"][cls.LockerId(a.rados.entity, cookie)]
        assert info.description == "" and info.expiration == (0, 0)
        await settle()
        assert sent_ops(c) == [(51, wn.NOTIFY_OP_ACQUIRED_LOCK)]
        assert b.watcher.owner_client_id == a.watcher.client_id
        owner = await b.lock.get_lock_owner()
        assert isinstance(owner, cls.LockerInfo)
        assert str(owner.entity) == "client.51" and owner.handle == a.watcher.cookie
        await a.lock.acquire()  # idempotent
        await a.lock.release()
        await settle()
        assert lockers(c) == {} and a.lock.cookie is None
        assert sent_ops(c)[-1] == (51, wn.NOTIFY_OP_RELEASED_LOCK)
        assert b.watcher.owner_client_id == wn.ClientId()
        assert await b.lock.get_lock_owner() is None

    run(go())


def test_acquire_from_alive_owner_requests_release():
    async def go():
        c = FakeCluster()
        a, b = Client(c, 61), Client(c, 62)
        await a.watcher.start()
        await b.watcher.start()
        await a.lock.acquire()
        await b.lock.acquire(timeout=5)
        assert b.lock.is_owner() and not a.lock.is_owner()
        assert list(lockers(c)) == [("client.62", f"auto {b.watcher.cookie}")]
        assert a.events == ["acquired", "releasing"]
        assert c.blocklist == []
        ops = sent_ops(c)
        assert ops.index((62, wn.NOTIFY_OP_REQUEST_LOCK)) < ops.index((61, wn.NOTIFY_OP_RELEASED_LOCK))
        # and back: ping-pong with nothing lost
        await a.lock.acquire(timeout=5)
        assert a.lock.is_owner() and not b.lock.is_owner()
        assert c.blocklist == []

    run(go())


def test_exclusive_owner_refuses():
    async def go():
        c = FakeCluster()
        a, b = Client(c, 71, exclusive=True), Client(c, 72)
        await a.watcher.start()
        await b.watcher.start()
        await a.lock.acquire()
        with pytest.raises(ImageBusy):
            await b.lock.acquire(timeout=5)
        assert a.lock.is_owner() and list(lockers(c)) == [("client.71", f"auto {a.watcher.cookie}")]
        acks, _ = await b.ioctx.notify(HDR, wn.NotifyMessage(
            wn.RequestLockPayload(b.watcher.client_id)).encode(), 300)
        assert wn.lock_owner_response(acks) == -errno.EROFS

    run(go())


def test_dead_owner_is_blocklisted_and_broken():
    async def go():
        c = FakeCluster()
        a, b = Client(c, 81), Client(c, 82)
        await a.watcher.start()
        await b.watcher.start()
        await a.lock.acquire()
        # a dies: its watch times out on the OSD, its lock stays
        c.remove_watch(HDR, a.watcher.cookie)
        a.rados.responsive = False
        await b.lock.acquire(timeout=5)
        assert b.lock.is_owner()
        assert c.blocklist == [a.rados.addr.legacy_str()] == ["127.0.0.1:50081/1081"]
        assert b.lock.broken_locks == [("client.81", "127.0.0.1:50081/1081")]
        assert list(lockers(c)) == [("client.82", f"auto {b.watcher.cookie}")]
        assert "break_lock" in c.lock_calls
        # no lock request was sent: the owner had no watch
        assert (82, wn.NOTIFY_OP_REQUEST_LOCK) not in sent_ops(c)

    run(go())


def test_hung_owner_times_out_then_is_fenced_when_its_watch_expires():
    async def go():
        c = FakeCluster()
        a, b = Client(c, 91), Client(c, 92)
        await a.watcher.start()
        await b.watcher.start()
        await a.lock.acquire()
        a.rados.responsive = False  # still watching, answers nothing
        task = asyncio.ensure_future(b.lock.acquire(timeout=10))
        await asyncio.sleep(1.0)  # > 2 request rounds of 0.3 s
        assert not task.done()
        assert sent_ops(c, 92).count((92, wn.NOTIFY_OP_REQUEST_LOCK)) >= 2
        assert c.blocklist == []
        c.remove_watch(HDR, a.watcher.cookie)  # the OSD expires the watch
        await task
        assert b.lock.is_owner() and c.blocklist == ["127.0.0.1:50091/1091"]

    run(go())


def test_acquire_timeout():
    async def go():
        c = FakeCluster()
        a, b = Client(c, 101), Client(c, 102)
        await a.watcher.start()
        await b.watcher.start()
        await a.lock.acquire()
        a.rados.responsive = False
        with pytest.raises(TimedOut):
            await b.lock.acquire(timeout=0.8)
        assert not b.lock.is_owner() and c.blocklist == []

    run(go())


def test_external_locks_are_not_touched():
    async def go():
        for tag, cookie, typ in (("other", "auto 5", cls.LOCK_EXCLUSIVE), ("internal", "mine", cls.LOCK_EXCLUSIVE),
                                 ("internal", "auto 5", cls.LOCK_SHARED)):
            c = FakeCluster()
            ext = Client(c, 111)
            b = Client(c, 112)
            await b.watcher.start()
            await ext.ioctx.execute(HDR, "lock", "lock", cls.LockOp(
                RBD_LOCK_NAME, typ, cookie, tag, "", (0, 0), 0).encode(Encoder()).bytes())
            with pytest.raises(ImageBusy):
                await b.lock.acquire(timeout=2)
            assert c.blocklist == [] and len(lockers(c)) == 1

    run(go())


def test_our_own_stale_lock_is_broken_without_self_blocklist():
    async def go():
        c = FakeCluster()
        a = Client(c, 121)
        await a.watcher.start()
        await a.ioctx.execute(HDR, "lock", "lock", cls.LockOp(
            RBD_LOCK_NAME, cls.LOCK_EXCLUSIVE, "auto 1", "internal", "", (0, 0), 0).encode(Encoder()).bytes())
        await a.lock.acquire(timeout=2)
        assert a.lock.is_owner() and c.blocklist == []
        assert list(lockers(c)) == [("client.121", f"auto {a.watcher.cookie}")]

    run(go())


def test_post_acquire_failure_unlocks():
    async def go():
        c = FakeCluster()
        a = Client(c, 131)

        async def boom():
            raise make_ex(-errno.EIO, "object map load")

        a.lock.on_acquired = boom
        await a.watcher.start()
        with pytest.raises(Error):
            await a.lock.acquire()
        assert not a.lock.is_owner() and lockers(c) == {}

    run(go())


def test_rewatch_moves_lock_to_new_cookie():
    async def go():
        c = FakeCluster()
        a, b = Client(c, 141), Client(c, 142)
        await a.watcher.start()
        await b.watcher.start()
        await a.lock.acquire()
        old = a.watcher.cookie
        w = c.watches[HDR][old]
        w.on_error(old, make_ex(-errno.ENOTCONN, "watch timed out"))
        await settle()
        new = a.watcher.cookie
        assert new is not None and new != old
        assert old not in c.watches[HDR] and new in c.watches[HDR]
        assert a.lock.is_owner() and a.lock.cookie == f"auto {new}"
        assert list(lockers(c)) == [("client.141", f"auto {new}")]
        assert "set_cookie" in c.lock_calls and a.events == ["acquired"]
        assert a.refreshes == 1
        await settle()
        assert b.watcher.owner_client_id == wn.ClientId(141, new)
        # a peer still finds the owner through the new cookie
        await b.lock.acquire(timeout=5)
        assert b.lock.is_owner() and c.blocklist == []

    run(go())


def test_rewatch_without_set_cookie_releases_and_reacquires():
    async def go():
        c = FakeCluster()
        c.set_cookie_supported = False
        a = Client(c, 151)
        await a.watcher.start()
        await a.lock.acquire()
        old = a.watcher.cookie
        c.watches[HDR][old].on_error(old, make_ex(-errno.ENOTCONN, "watch timed out"))
        await settle(40)
        new = a.watcher.cookie
        assert a.lock.is_owner() and list(lockers(c)) == [("client.151", f"auto {new}")]
        assert a.events == ["acquired", "releasing", "acquired"]

    run(go())


def test_blocklisted_client_loses_the_lock_for_good():
    async def go():
        c = FakeCluster()
        a, b = Client(c, 161), Client(c, 162)
        await a.watcher.start()
        await b.watcher.start()
        await a.lock.acquire()
        await b.rados.blocklist_add(a.rados.addr.legacy_str())
        await settle()
        assert not a.lock.is_owner()
        assert isinstance(a.lock.error, Blocklisted) and isinstance(a.watcher.error, Blocklisted)
        with pytest.raises(Blocklisted):
            await a.lock.acquire()

    run(go())


def test_stop_unwatches_and_close_releases():
    async def go():
        c = FakeCluster()
        a = Client(c, 171, timeout=3.0)
        await a.watcher.start()
        await a.lock.acquire()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await a.lock.close()
        await a.watcher.stop()
        # stop() flushes our RELEASED_LOCK and still acks it itself: no 3 s notify timeout
        assert loop.time() - t0 < 1.0
        assert lockers(c) == {} and c.watches[HDR] == {}
        assert [op for _, op in sent_ops(c)] == [wn.NOTIFY_OP_ACQUIRED_LOCK, wn.NOTIFY_OP_RELEASED_LOCK]

    run(go())


def test_acquire_waits_for_a_rewatch_in_progress():
    async def go():
        c = FakeCluster()
        a = Client(c, 181)
        await a.watcher.start()
        real_watch = a.ioctx.watch
        fails = [2]

        async def flaky_watch(*args, **kw):
            if fails[0]:
                fails[0] -= 1
                raise make_ex(-errno.ETIMEDOUT, "watch")
            return await real_watch(*args, **kw)

        a.ioctx.watch = flaky_watch
        old = a.watcher.cookie
        c.watches[HDR][old].on_error(old, make_ex(-errno.ENOTCONN, "watch timed out"))
        assert a.watcher.cookie is None
        await a.lock.acquire(timeout=5)  # waits out two failed re-registrations
        assert a.lock.cookie == f"auto {a.watcher.cookie}" and a.watcher.cookie != old
        await a.lock.release()
        await a.watcher.stop()
        with pytest.raises(NotConnected):  # no watch, no lock
            await a.lock.acquire(timeout=1)
        assert lockers(c) == {}

    run(go())
