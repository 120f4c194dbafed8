"""RADOS: cluster handle and pool I/O contexts, async core and python-rados-shaped sync API.

- :class:`AsyncRados` / :class:`AsyncIoctx`: the asyncio core over :class:`MonClient`
  and :class:`OSDClient`.
- :class:`Rados` / :class:`Ioctx`: the python-rados surface (``Rados(conffile=...)``,
  ``connect()``, ``open_ioctx()``, ``ioctx.read()``...), running the core on a private
  event-loop thread so that synchronous callers need no asyncio.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, Coroutine, TypeVar

from ..config import ClientConfig
from ..errors import (
    Error,
    InvalidArgumentError,
    ObjectNotFound,
    PoolNotFound,
    make_ex,
)
from ..encoding import Decoder
from ..mon.client import MonClient
from ..mon.messages import POOL_OP_CREATE_UNMANAGED_SNAP, POOL_OP_DELETE_UNMANAGED_SNAP
from ..osd import ops as O
from ..osd.client import CEPH_NOSNAP, OSDClient

T = TypeVar("T")

__all__ = ["AsyncRados", "AsyncIoctx", "Rados", "Ioctx"]


def _check(reply, what: str) -> None:
    """Raise the typed error for a failed reply (overall result or the first failed op)."""
    if reply.result < 0:
        raise make_ex(reply.result, what)
    for op in reply.ops:
        if op.rval < 0:
            raise make_ex(op.rval, what)


class AsyncRados:
    """A connection to one cluster (``librados::Rados``), asyncio flavour.

    ``r = AsyncRados(ClientConfig.load(...)); await r.connect()``.
    """

    def __init__(self, config: ClientConfig):
        self.config = config
        self.monc = MonClient(config)
        self.osdc: OSDClient | None = None

    async def connect(self, timeout: float | None = None) -> None:
        """Authenticate and fetch maps.  Raises AuthError, MonitorUnreachable, ConfigError."""
        await self.monc.open_session(timeout)
        self.osdc = OSDClient(self.monc)

    async def shutdown(self) -> None:
        if self.osdc is not None:
            await self.osdc.close()
        await self.monc.close()

    @property
    def osdmap(self):
        return self.monc.osdmap

    def get_fsid(self) -> str:
        u = self.monc.fsid or bytes(16)
        h = u.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def list_pools(self) -> list[str]:
        m = self.osdmap
        return [m.get_pool_name(p) for p in sorted(m.pools)]

    def pool_lookup(self, name: str) -> int:
        """Pool id for ``name``; raises :class:`PoolNotFound`."""
        try:
            return self.osdmap.lookup_pool(name)
        except (KeyError, ObjectNotFound) as e:
            raise PoolNotFound(f"pool '{name}' does not exist") from e

    def pool_exists(self, name: str) -> bool:
        try:
            self.pool_lookup(name)
            return True
        except PoolNotFound:
            return False

    async def open_ioctx(self, pool: str | int, namespace: str = "") -> "AsyncIoctx":
        """An I/O context on ``pool`` (name or id).  Raises :class:`PoolNotFound`."""
        if isinstance(pool, int):
            if pool not in self.osdmap.pools:
                raise PoolNotFound(f"pool id {pool} does not exist")
            pid = pool
        else:
            try:
                pid = self.pool_lookup(pool)
            except PoolNotFound:
                # Our map may be stale: ask for the newest before failing.
                await self.monc.wait_for_osdmap(0)
                pid = self.pool_lookup(pool)
        return AsyncIoctx(self, pid, self.osdmap.get_pool_name(pid), namespace)

    async def mon_command(self, cmd: dict | str, inbuf: bytes = b"", timeout: float = 30.0) -> tuple[int, bytes, str]:
        """``(ret, outbuf, outs)`` like ``rados.Rados.mon_command``."""
        return await self.monc.command(cmd, inbuf, timeout)

    def get_instance_id(self) -> int:
        """Our global_id (``rados_get_instance_id``): the ``N`` of ``client.N`` that OSDs
        report as a watcher's name and notifier gid."""
        return self.monc.global_id

    def get_addrs(self) -> str:
        """Our messenger address as ``"IP:PORT/NONCE"`` (e.g. ``10.0.0.5:0/2793118331``).

        This is the form the OSD reports for our watches (``list_watchers`` ->
        ``WatchItem.addr``, ``rados listwatchers``'s ``watcher=``, rbd's locker address)
        and the form ``osd blocklist add`` takes; the type prefix (``any:``/``v2:``) is
        left out because blocklist entries are always of type ANY (OSDMonitor)."""
        a = self.monc.client_addr
        if a is None:
            raise make_ex(-107, "not connected")
        return a.legacy_str()

    async def blocklist_add(self, addr: str, expire_s: float | None = None, timeout: float = 30.0) -> None:
        """Blocklist a client address (``osd blocklist add ADDR [EXPIRE]``, as librados
        ``blocklist_add``); returns once our OSDMap has the epoch that holds the entry.
        ``addr`` is ``IP:PORT/NONCE`` (a ``v2:``/``v1:``/``any:`` prefix is dropped);
        ``expire_s`` seconds (None = the monitor's default, 1 h).  Raises the command's
        typed error (InvalidArgumentError for a bad address ...)."""
        a = strip_addr_type(addr)
        cmd: dict[str, Any] = {"prefix": "osd blocklist", "blocklistop": "add", "addr": a}
        if expire_s is not None:
            cmd["expire"] = float(expire_s)
        ret, _, outs = await self.monc.command(cmd, b"", timeout)
        if ret < 0:
            raise make_ex(ret, f"osd blocklist add {a}: {outs}")
        await self.monc.wait_for_latest_osdmap(timeout)


def strip_addr_type(addr: str) -> str:
    """``"v2:1.2.3.4:0/5"`` / ``"any:..."`` / ``"[v2:...]"`` -> ``"1.2.3.4:0/5"``."""
    a = addr.strip()
    if a.startswith("[") and a.endswith("]") and "," not in a:
        a = a[1:-1]
    for pre in ("v1:", "v2:", "any:"):
        if a.startswith(pre):
            return a[len(pre):]
    return a


class AsyncIoctx:
    """Object I/O in one pool (and namespace).

    Methods mirror python-rados' Ioctx; offsets and lengths are bytes.  Errors are the
    typed ones of :mod:`pyceph.errors` (``ObjectNotFound`` for a missing object ...).
    """

    def __init__(self, rados: AsyncRados, pool_id: int, pool_name: str, namespace: str = ""):
        self.rados = rados
        self.pool_id = pool_id
        self.pool_name = pool_name
        self.namespace = namespace
        self.locator_key = ""
        self.max_concurrency = 64

    def set_namespace(self, ns: str) -> None:
        self.namespace = ns

    async def _op(self, oid: str, ops: list, *, write: bool, snapc=None, snapid: int | None = None):
        osdc = self.rados.osdc
        assert osdc is not None, "not connected"
        reply = await osdc.submit(
            self.pool_id, oid, ops, write=write, nspace=self.namespace, key=self.locator_key,
            snapc=snapc, snapid=CEPH_NOSNAP if snapid is None else snapid,
        )
        _check(reply, f"{'write' if write else 'read'} {self.pool_name}/{oid}")
        return reply

    async def operate(self, oid: str, ops: list, *, write: bool, snapc=None, snapid=None) -> list:
        """Run a compound op (a list of :class:`pyceph.osd.ops.OSDOp`) atomically; returns the reply ops."""
        return (await self._op(oid, ops, write=write, snapc=snapc, snapid=snapid)).ops

    async def read(self, oid: str, length: int = 8192, offset: int = 0, snapid: int | None = None) -> bytes:
        reply = await self._op(oid, [O.read(offset, length)], write=False, snapid=snapid)
        return reply.ops[0].outdata

    async def write(self, oid: str, data: bytes, offset: int = 0, snapc=None) -> None:
        await self._op(oid, [O.write(offset, data)], write=True, snapc=snapc)

    async def write_full(self, oid: str, data: bytes, snapc=None) -> None:
        await self._op(oid, [O.writefull(data)], write=True, snapc=snapc)

    async def append(self, oid: str, data: bytes, snapc=None) -> None:
        await self._op(oid, [O.append(data)], write=True, snapc=snapc)

    async def stat(self, oid: str) -> tuple[int, float]:
        """``(size bytes, mtime seconds since the epoch)``."""
        reply = await self._op(oid, [O.stat()], write=False)
        return O.decode_stat(reply.ops[0].outdata)

    async def remove(self, oid: str, snapc=None) -> None:
        await self._op(oid, [O.delete()], write=True, snapc=snapc)

    async def create(self, oid: str, exclusive: bool = True) -> None:
        await self._op(oid, [O.create(exclusive)], write=True)

    async def truncate(self, oid: str, size: int, snapc=None) -> None:
        await self._op(oid, [O.truncate(size)], write=True, snapc=snapc)

    async def zero(self, oid: str, offset: int, length: int, snapc=None) -> None:
        await self._op(oid, [O.zero(offset, length)], write=True, snapc=snapc)

    async def execute(self, oid: str, cls: str, method: str, data: bytes = b"", read_only: bool = False) -> bytes:
        """Call object class method ``cls.method`` with ``data``; returns its output bytes."""
        reply = await self._op(oid, [O.call(cls, method, data)], write=not read_only)
        return reply.ops[0].outdata

    async def get_xattr(self, oid: str, name: str) -> bytes:
        reply = await self._op(oid, [O.getxattr(name)], write=False)
        return reply.ops[0].outdata

    async def set_xattr(self, oid: str, name: str, value: bytes) -> None:
        await self._op(oid, [O.setxattr(name, value)], write=True)

    async def rm_xattr(self, oid: str, name: str) -> None:
        await self._op(oid, [O.rmxattr(name)], write=True)

    async def get_omap_vals(
        self, oid: str, start_after: str = "", filter_prefix: str = "", max_return: int = 1024
    ) -> tuple[dict[str, bytes], bool]:
        """``({key: value}, more)`` — ``more`` is True when the listing was cut at ``max_return``."""
        reply = await self._op(oid, [O.omap_get_vals(start_after, filter_prefix, max_return)], write=False)
        return O.decode_omap_get_vals(reply.ops[0].outdata)

    async def get_omap_keys(self, oid: str, start_after: str = "", max_return: int = 1024) -> tuple[list[str], bool]:
        reply = await self._op(oid, [O.omap_get_keys(start_after, max_return)], write=False)
        return O.decode_omap_get_keys(reply.ops[0].outdata)

    async def get_omap_vals_by_keys(self, oid: str, keys) -> dict[str, bytes]:
        reply = await self._op(oid, [O.omap_get_vals_by_keys(keys)], write=False)
        return O.decode_omap_get_vals_by_keys(reply.ops[0].outdata)

    async def set_omap(self, oid: str, kv: dict[str, bytes]) -> None:
        await self._op(oid, [O.omap_set_vals(kv)], write=True)

    async def remove_omap_keys(self, oid: str, keys) -> None:
        await self._op(oid, [O.omap_rm_keys(keys)], write=True)

    # -- watch / notify (librados watch2/notify2) -------------------------------------
    @property
    def _osdc(self) -> OSDClient:
        osdc = self.rados.osdc
        if osdc is None:
            raise make_ex(-107, "not connected")
        return osdc

    async def watch(self, oid: str, on_notify, on_error, timeout: int = 30) -> int:
        """Watch ``oid``; returns the watch cookie (handle).

        ``on_notify(notify_id, cookie, notifier_gid, payload)`` is called on the event loop
        for each notify (answer it with :meth:`notify_ack`); ``on_error(cookie, exc)`` once
        when the watch is lost for good.  Reconnects and primary changes re-register the
        watch inside the OSDClient.  ``timeout`` seconds without a ping before the OSD
        drops the watch.  Raises ObjectNotFound if ``oid`` does not exist, Blocklisted ...
        """
        return await self._osdc.watch(self.pool_id, oid, on_notify, on_error, timeout=timeout,
                                      nspace=self.namespace, key=self.locator_key)

    async def unwatch(self, cookie: int) -> None:
        """Remove the watch ``cookie`` (WATCH_OP_UNWATCH).  Raises NotConnected if unknown."""
        await self._osdc.unwatch(cookie)

    async def watch_check(self, cookie: int) -> float:
        """Seconds since the OSD last confirmed the watch (``rados_watch_check``); raises
        the watch's error if it is lost (NotConnected, Blocklisted ...)."""
        return self._osdc.watch_check(cookie)

    async def notify(self, oid: str, payload: bytes = b"", timeout_ms: int = 5000
                     ) -> tuple[dict[tuple[int, int], bytes], list[tuple[int, int]]]:
        """Notify the watchers of ``oid``; returns ``(acks, timeouts)``:
        ``{(notifier gid, cookie): reply payload}`` and ``[(gid, cookie)]`` that did not
        ack within ``timeout_ms`` (rounded up to whole seconds on the wire).  Watchers
        timing out are not an error.  Raises ObjectNotFound, TimedOut, Blocklisted ..."""
        return await self._osdc.notify(self.pool_id, oid, payload, max(1, timeout_ms) / 1000.0,
                                       nspace=self.namespace, key=self.locator_key)

    async def notify_ack(self, oid: str, notify_id: int, cookie: int, payload: bytes = b"") -> None:
        """Acknowledge notify ``notify_id`` received by watch ``cookie`` with ``payload``."""
        await self._op(oid, [O.notify_ack(notify_id, cookie, payload)], write=False)

    async def list_watchers(self, oid: str) -> list[O.WatchItem]:
        """The watchers of ``oid`` (``WatchItem``: name ``client.N``, cookie,
        timeout_seconds, addr; ``item.addr.legacy_str()`` is the blocklist form)."""
        reply = await self._op(oid, [O.list_watchers()], write=False)
        return O.decode_list_watchers(reply.ops[0].outdata)

    # -- self-managed snapshots ---------------------------------------------------------
    async def selfmanaged_snap_create(self, timeout: float = 30.0) -> int:
        """Allocate a self-managed snap id in this pool (MPoolOp
        POOL_OP_CREATE_UNMANAGED_SNAP); returns once our OSDMap holds the epoch of the
        change, as Objecter.  Raises the monitor's typed error (e.g. InvalidArgumentError
        for a pool in pool-snaps mode)."""
        monc = self.rados.monc
        code, epoch, data = await monc.pool_op(self.pool_id, POOL_OP_CREATE_UNMANAGED_SNAP, timeout=timeout)
        if code < 0:
            raise make_ex(code, f"create self-managed snap in pool {self.pool_name}")
        snap_id = Decoder(data).u64()
        await monc.wait_for_osdmap(epoch, timeout or None)
        return snap_id

    async def selfmanaged_snap_remove(self, snap_id: int, timeout: float = 30.0) -> None:
        """Release self-managed snap ``snap_id`` (POOL_OP_DELETE_UNMANAGED_SNAP; the OSDs
        trim its clones in the background); waits for the epoch like create."""
        monc = self.rados.monc
        code, epoch, _ = await monc.pool_op(self.pool_id, POOL_OP_DELETE_UNMANAGED_SNAP, snapid=snap_id,
                                            timeout=timeout)
        if code < 0:
            raise make_ex(code, f"remove self-managed snap {snap_id} in pool {self.pool_name}")
        await monc.wait_for_osdmap(epoch, timeout or None)

    async def rollback(self, oid: str, snap_id: int, snapc=None) -> None:
        """Roll ``oid`` back to its state at self-managed snap ``snap_id``
        (CEPH_OSD_OP_ROLLBACK, a write carrying ``snapc`` = ``(seq, [snaps newest first])``
        so the current state is cloned first if needed)."""
        await self._op(oid, [O.rollback(snap_id)], write=True, snapc=snapc)

    async def list_snaps(self, oid: str) -> O.SnapSet:
        """CEPH_OSD_OP_LIST_SNAPS read at CEPH_SNAPDIR: the object's clones (cloneid,
        snaps, overlap, size; the head last as CEPH_NOSNAP) and seq.  Raises ObjectNotFound
        when neither the head nor any clone exists."""
        reply = await self._op(oid, [O.list_snaps()], write=False, snapid=O.CEPH_SNAPDIR)
        return O.decode_list_snaps(reply.ops[0].outdata)


# ---------------------------------------------------------------------------------------
# Synchronous, python-rados-compatible surface
# ---------------------------------------------------------------------------------------


class _LoopThread:
    """A private asyncio loop on a daemon thread; ``run(coro)`` blocks for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="pyceph-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


class Rados:
    """python-rados' ``rados.Rados``: ``Rados(conffile=None, rados_id=None, name=None, conf=None)``.

    ``conf`` is a dict of option overrides (``{"keyring": "/path"}``, ``{"mon_host": ...}``).
    """

    def __init__(self, rados_id: str | None = None, name: str | None = None, clustername: str | None = None,
                 conffile: str | None = None, conf: dict | None = None, keyring: str | None = None):
        conf = dict(conf or {})
        self.config = ClientConfig.load(
            conffile=conffile or None, name=name, client_id=rados_id,
            keyring=keyring or conf.pop("keyring", None), mon_host=conf.pop("mon_host", None),
            key=conf.pop("key", None), overrides=conf, cluster=clustername or "ceph",
        )
        self._lt: _LoopThread | None = None
        self._core: AsyncRados | None = None
        self.state = "configuring"

    def _run(self, coro):
        if self._lt is None:
            raise InvalidArgumentError("Rados is not connected")
        return self._lt.run(coro)

    def connect(self, timeout: float = 0) -> None:
        self._lt = _LoopThread()

        async def go():
            self._core = AsyncRados(self.config)
            await self._core.connect(timeout or None)

        try:
            self._lt.run(go())
        except BaseException:
            self._lt.stop()
            self._lt = None
            raise
        self.state = "connected"

    def shutdown(self) -> None:
        if self._lt is not None:
            if self._core is not None:
                try:
                    self._lt.run(self._core.shutdown())
                except Error:
                    pass
            self._lt.stop()
            self._lt = None
        self.state = "shutdown"

    def __enter__(self) -> "Rados":
        self.connect()
        return self

    def __exit__(self, *a) -> None:
        self.shutdown()

    @property
    def core(self) -> AsyncRados:
        assert self._core is not None
        return self._core

    def run(self, coro):
        """Run a coroutine of the async core on this handle's loop (for tools and wrappers)."""
        return self._run(coro)

    def get_fsid(self) -> str:
        return self.core.get_fsid()

    def list_pools(self) -> list[str]:
        return self.core.list_pools()

    def pool_exists(self, name: str) -> bool:
        return self.core.pool_exists(name)

    def pool_lookup(self, name: str) -> int:
        return self.core.pool_lookup(name)

    def open_ioctx(self, pool_name: str) -> "Ioctx":
        return Ioctx(self, self._run(self.core.open_ioctx(pool_name)))

    def open_ioctx2(self, pool_id: int) -> "Ioctx":
        return Ioctx(self, self._run(self.core.open_ioctx(pool_id)))

    def mon_command(self, cmd: str, inbuf: bytes = b"", timeout: int = 0, target=None) -> tuple[int, bytes, str]:
        ret, out, outs = self._run(self.core.mon_command(cmd, inbuf, float(timeout or 30)))
        return ret, out, outs

    def get_instance_id(self) -> int:
        return self.core.get_instance_id()

    def get_addrs(self) -> str:
        return self.core.get_addrs()

    def blocklist_add(self, client_address: str, expire_seconds: float = 0) -> None:
        """python-rados ``blocklist_add`` (0 = the monitor's default expiry)."""
        self._run(self.core.blocklist_add(client_address, expire_seconds or None))

    def get_cluster_stats(self) -> dict:
        ret, out, outs = self.mon_command(json.dumps({"prefix": "df", "format": "json"}))
        if ret < 0:
            raise make_ex(ret, outs)
        st = json.loads(out)["stats"]
        return {"kb": st["total_bytes"] // 1024, "kb_used": st["total_used_bytes"] // 1024,
                "kb_avail": st["total_avail_bytes"] // 1024, "num_objects": 0}


class Ioctx:
    """python-rados' ``rados.Ioctx`` over :class:`AsyncIoctx`."""

    def __init__(self, rados: Rados, core: AsyncIoctx):
        self.rados = rados
        self.core = core

    def _run(self, coro):
        return self.rados._run(coro)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self) -> None:
        pass

    def get_pool_id(self) -> int:
        return self.core.pool_id

    def get_pool_name(self) -> str:
        return self.core.pool_name

    def set_namespace(self, ns: str) -> None:
        self.core.set_namespace(ns)

    def get_namespace(self) -> str:
        return self.core.namespace

    def read(self, key: str, length: int = 8192, offset: int = 0) -> bytes:
        return self._run(self.core.read(key, length, offset))

    def write(self, key: str, data: bytes, offset: int = 0) -> None:
        self._run(self.core.write(key, data, offset))

    def write_full(self, key: str, data: bytes) -> None:
        self._run(self.core.write_full(key, data))

    def append(self, key: str, data: bytes) -> None:
        self._run(self.core.append(key, data))

    def stat(self, key: str):
        import time as _t

        size, mtime = self._run(self.core.stat(key))
        return size, _t.localtime(mtime)

    def remove_object(self, key: str) -> bool:
        self._run(self.core.remove(key))
        return True

    def trunc(self, key: str, size: int) -> None:
        self._run(self.core.truncate(key, size))

    def create(self, key: str, exclusive: bool = True) -> None:
        self._run(self.core.create(key, exclusive))

    def execute(self, key: str, cls: str, method: str, data: bytes) -> tuple[int, bytes]:
        out = self._run(self.core.execute(key, cls, method, data))
        return len(out), out

    def get_xattr(self, key: str, xattr_name: str) -> bytes:
        return self._run(self.core.get_xattr(key, xattr_name))

    def set_xattr(self, key: str, xattr_name: str, xattr_value: bytes) -> bool:
        self._run(self.core.set_xattr(key, xattr_name, xattr_value))
        return True

    def rm_xattr(self, key: str, xattr_name: str) -> bool:
        self._run(self.core.rm_xattr(key, xattr_name))
        return True

    def get_omap_vals(self, oid: str, start_after: str = "", filter_prefix: str = "", max_return: int = 1024):
        vals, more = self._run(self.core.get_omap_vals(oid, start_after, filter_prefix, max_return))
        return vals, more

    def set_omap(self, oid: str, keys, values) -> None:
        self._run(self.core.set_omap(oid, dict(zip(keys, values))))

    # -- watch/notify and self-managed snapshots (python-rados names where it has them) --
    def watch(self, oid: str, callback, error_callback=None, timeout: int = 30) -> int:
        """Watch ``oid``; ``callback(notify_id, cookie, notifier_gid, payload)`` and
        ``error_callback(cookie, exc)`` run on the client's loop thread.  Returns the cookie."""
        return self._run(self.core.watch(oid, callback, error_callback, timeout))

    def unwatch(self, cookie: int) -> None:
        self._run(self.core.unwatch(cookie))

    def watch_check(self, cookie: int) -> float:
        return self._run(self.core.watch_check(cookie))

    def notify(self, oid: str, msg: bytes | str = b"", timeout_ms: int = 5000):
        """Notify the watchers of ``oid``; returns ``(acks, timeouts)`` (see AsyncIoctx.notify)."""
        if isinstance(msg, str):
            msg = msg.encode()
        return self._run(self.core.notify(oid, msg, timeout_ms))

    def notify_ack(self, oid: str, notify_id: int, cookie: int, payload: bytes = b"") -> None:
        self._run(self.core.notify_ack(oid, notify_id, cookie, payload))

    def list_watchers(self, oid: str):
        return self._run(self.core.list_watchers(oid))

    def selfmanaged_snap_create(self) -> int:
        return self._run(self.core.selfmanaged_snap_create())

    def selfmanaged_snap_remove(self, snap_id: int) -> None:
        self._run(self.core.selfmanaged_snap_remove(snap_id))

    # python-rados spellings
    create_self_managed_snap = selfmanaged_snap_create
    remove_self_managed_snap = selfmanaged_snap_remove

    def rollback(self, oid: str, snap_id: int, snapc=None) -> None:
        self._run(self.core.rollback(oid, snap_id, snapc))

    def rollback_self_managed_snap(self, key: str, snap_id: int, snapc=None) -> None:
        self._run(self.core.rollback(key, snap_id, snapc))

    def list_snaps(self, oid: str):
        return self._run(self.core.list_snaps(oid))
