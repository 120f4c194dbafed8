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
from ..mon.client import MonClient
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
