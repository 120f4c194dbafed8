"""OSDClient: send ops to the acting primary and match replies (``net/ceph/osd_client.c``).

Each request is targeted from the current OSDMap (object -> raw pg -> pg -> acting set
-> primary); one :class:`OSDSession` (a msgr2 connection with a cephx authorizer) per
OSD carries many requests at once, matched by tid.  On every new OSDMap each in-flight
request's target is recomputed and those whose primary changed are resent (same tid,
``retry_attempt`` + 1) so the OSD can detect a duplicate by reqid; a session fault
resends that session's requests on a new connection.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

from ..auth.hooks import AuthHooksMixin
from ..errors import (
    Blocklisted,
    Error,
    InvalidArgumentError,
    PoolNotFound,
    TimedOut,
    make_ex,
)
from ..msgr.connection import Connection
from ..msgr.message import Message
from ..osdmap import OSDMap
from ..types import ADDR_TYPE_MSGR2, ENTITY_TYPE_OSD, PgT
from . import ops as O
from .messages import MOSDOp, MOSDOpReply, ObjectLocator, SpgT

log = logging.getLogger("pyceph.osd")

CEPH_NOSNAP = (1 << 64) - 2
NO_SHARD = -1
CRUSH_ITEM_NONE = 0x7FFFFFFF
_EBLOCKLISTED = 108
_EAGAIN = 11
_TARGET_CACHE_MAX = 1 << 16


@dataclass
class OSDRequest:
    """One in-flight request (``ceph_osd_request``)."""

    tid: int
    pool: int
    oid: str
    nspace: str
    key: str
    ops: list[O.OSDOp]
    flags: int
    snapid: int = CEPH_NOSNAP
    snap_seq: int = 0
    snaps: list[int] = field(default_factory=list)
    mtime: tuple[int, int] = (0, 0)
    future: asyncio.Future | None = None
    osd: int = -1
    pgid: PgT | None = None
    shard: int = NO_SHARD
    attempts: int = 0
    sent_epoch: int = 0
    paused: bool = False


class OSDSession(AuthHooksMixin):
    """Connection to one OSD; the messenger's ``ops`` for it (``osd_con_ops``); its auth
    hooks are the cephx authorizer's (``self.auth``)."""

    def __init__(self, osdc: "OSDClient", osd: int, addr):
        self.osdc = osdc
        self.osd = osd
        self.addr = addr
        self.requests: dict[int, OSDRequest] = {}
        self.auth = osdc.monc.auth.authorizer_hooks(ENTITY_TYPE_OSD)
        self.con = Connection(
            addr, self, peer_type=ENTITY_TYPE_OSD, global_id=osdc.monc.global_id
        )
        self.ready: asyncio.Task = asyncio.get_running_loop().create_task(self._connect())
        self.closed = False
        self.last_used = time.monotonic()

    async def _connect(self) -> None:
        try:
            await self.con.connect(self.osdc.connect_timeout)
        except Error as e:
            self.osdc._session_failed(self, e)

    def dispatch(self, con: Connection, msg: Message) -> None:
        self.osdc._dispatch(self, msg)

    def fault(self, con: Connection, exc: Exception) -> None:
        self.osdc._session_failed(self, exc)

    async def close(self) -> None:
        self.closed = True
        self.ready.cancel()
        await self.con.close()


class OSDClient:
    """Submits OSD ops and returns their replies.

    ``await osdc.submit(pool_id, oid, ops, ...)`` -> :class:`MOSDOpReply`; raises the
    typed error for a negative result (``ObjectNotFound`` for ENOENT ...),
    :class:`PoolNotFound`, :class:`TimedOut` (``osd_request_timeout`` > 0 seconds
    passed; 0 waits forever, as in krbd), :class:`Blocklisted`.
    """

    def __init__(self, monc):
        self.monc = monc
        self.sessions: dict[int, OSDSession] = {}
        self.requests: dict[int, OSDRequest] = {}
        self._tid = 0
        self.connect_timeout = monc.config.get_float("client_mount_timeout", 30.0)
        self.request_timeout = monc.config.get_float("osd_request_timeout", 0.0) or monc.config.get_float(
            "rados_osd_op_timeout", 0.0
        )
        self._closing = False
        # (pool, oid, key, nspace) -> (raw pg, pg, acting, primary) for one osdmap epoch
        self._targets: dict[tuple, tuple] = {}
        self._targets_map: tuple[int, int] | None = None
        monc.add_osdmap_listener(self._handle_map)

    @property
    def osdmap(self) -> OSDMap:
        return self.monc.osdmap

    # -- targeting ---------------------------------------------------------------------
    def _calc_target(self, req: OSDRequest) -> bool:
        """Recompute ``req``'s pg, shard and primary; True if the target changed."""
        m = self.osdmap
        pool = m.pools.get(req.pool)
        if pool is None:
            raise PoolNotFound(f"pool {req.pool} does not exist (osdmap epoch {m.epoch})")
        # CRUSH is costly in Python: remember each object's mapping for this map epoch.
        cache = self._targets
        if self._targets_map != (id(m), m.epoch):
            cache.clear()
            self._targets_map = (id(m), m.epoch)
        ckey = (req.pool, req.oid, req.key, req.nspace)
        hit = cache.get(ckey)
        if hit is None:
            raw = m.object_locator_to_pg(req.pool, req.oid, req.key, req.nspace)
            pg = m.raw_pg_to_pg(raw)
            _, _, acting, primary = m.pg_to_up_acting_osds(pg)
            if len(cache) >= _TARGET_CACHE_MAX:
                cache.clear()
            cache[ckey] = (raw, pg, acting, primary)
        else:
            raw, pg, acting, primary = hit
        shard = NO_SHARD
        if pool.is_erasure() and primary >= 0:
            shard = acting.index(primary)
        full = pool.is_full() if hasattr(pool, "is_full") else False
        # Writes to a full pool wait for space (as krbd does), reads go on.
        req.paused = bool(full and req.flags & O.CEPH_OSD_FLAG_WRITE)
        changed = (primary != req.osd) or (pg != req.pgid) or (shard != req.shard)
        req.pgid, req.osd, req.shard = pg, primary, shard
        req.raw_hash = raw.seed
        return changed

    def _get_session(self, osd: int) -> OSDSession:
        s = self.sessions.get(osd)
        if s is None or s.closed:
            addrs = self.osdmap.get_addrs(osd)
            addr = addrs.get(ADDR_TYPE_MSGR2)
            if addr is None:
                raise InvalidArgumentError(f"osd.{osd} has no msgr2 address ({addrs})")
            s = OSDSession(self, osd, addr)
            self.sessions[osd] = s
        return s

    def _send(self, req: OSDRequest) -> None:
        """Send (or park) ``req`` according to its current target."""
        if req.osd < 0 or req.paused:
            # No primary (or a full pool): wait for a newer map.
            self.monc.request_osdmap(onetime=False)
            return
        s = self._get_session(req.osd)
        s.requests[req.tid] = req
        flags = req.flags
        if req.attempts:
            flags |= O.CEPH_OSD_FLAG_RETRY
        req.attempts += 1
        req.sent_epoch = self.osdmap.epoch
        msg = MOSDOp(
            pgid=SpgT(req.pgid, req.shard),
            hash=req.raw_hash,
            osdmap_epoch=self.osdmap.epoch,
            flags=flags,
            oid=req.oid,
            oloc=ObjectLocator(req.pool, req.key, req.nspace),
            ops=req.ops,
            tid=req.tid,
            mtime=req.mtime,
            snapid=req.snapid,
            snap_seq=req.snap_seq,
            snaps=req.snaps,
            retry_attempt=req.attempts - 1,
        ).to_message(s.con.features or self.monc._features())
        s.con.send(msg)
        s.last_used = time.monotonic()

    # -- public ------------------------------------------------------------------------
    async def submit(
        self,
        pool: int,
        oid: str,
        ops: list[O.OSDOp],
        *,
        write: bool,
        nspace: str = "",
        key: str = "",
        snapid: int = CEPH_NOSNAP,
        snapc: tuple[int, list[int]] | None = None,
        timeout: float | None = None,
    ) -> MOSDOpReply:
        """Send ``ops`` on object ``oid`` and wait for the OSD's reply.

        ``write`` selects WRITE|ONDISK flags (the reply means the data is durable on
        every replica) vs READ.  ``snapc`` is ``(seq, [snap ids newest first])``.
        """
        if self._closing:
            raise make_ex(-108, "client is shut down")
        self._tid += 1
        flags = O.CEPH_OSD_FLAG_KNOWN_REDIR
        if write:
            flags |= O.CEPH_OSD_FLAG_WRITE | O.CEPH_OSD_FLAG_ONDISK
        else:
            flags |= O.CEPH_OSD_FLAG_READ
        now = time.time()
        req = OSDRequest(
            tid=self._tid, pool=pool, oid=oid, nspace=nspace, key=key, ops=ops, flags=flags,
            snapid=snapid,
            snap_seq=snapc[0] if snapc else 0,
            snaps=list(snapc[1]) if snapc else [],
            mtime=(int(now), int((now % 1) * 1e9)) if write else (0, 0),
        )
        req.future = asyncio.get_running_loop().create_future()
        self._calc_target(req)
        self.requests[req.tid] = req
        try:
            self._send(req)
            t = timeout if timeout is not None else self.request_timeout
            if t and t > 0:
                try:
                    reply = await asyncio.wait_for(asyncio.shield(req.future), t)
                except asyncio.TimeoutError:
                    raise TimedOut(f"osd op on {oid} (tid {req.tid}) timed out after {t:g}s") from None
            else:
                reply = await req.future
        finally:
            self._forget(req)
        return reply

    def _forget(self, req: OSDRequest) -> None:
        self.requests.pop(req.tid, None)
        s = self.sessions.get(req.osd)
        if s is not None:
            s.requests.pop(req.tid, None)

    async def close(self) -> None:
        self._closing = True
        for req in list(self.requests.values()):
            if req.future is not None and not req.future.done():
                req.future.set_exception(make_ex(-108, "client shut down"))
        for s in list(self.sessions.values()):
            await s.close()
        self.sessions.clear()

    # -- events ------------------------------------------------------------------------
    def _dispatch(self, s: OSDSession, msg: Message) -> None:
        if msg.type != MOSDOpReply.MSG_TYPE:
            log.debug("osd.%d: ignoring message type %d", s.osd, msg.type)
            return
        reply = MOSDOpReply.from_message(msg)
        req = self.requests.get(msg.tid)
        if req is None or req.future is None or req.future.done():
            return  # a reply to a request we resent elsewhere, or gave up on
        if s.requests.get(req.tid) is not req:
            return  # stale: the request moved to another OSD
        if reply.redirect is not None and getattr(reply.redirect, "oloc", None):
            req.future.set_exception(
                InvalidArgumentError(f"osd.{s.osd} redirected {req.oid}: cache tiering is not supported")
            )
            return
        r = reply.result
        if r == -_EAGAIN and req.flags & O.CEPH_OSD_FLAG_READ:
            # Replica/balanced reads bounced: resend to the primary.
            self._send(req)
            return
        if r == -_EBLOCKLISTED:
            req.future.set_exception(Blocklisted(f"osd.{s.osd}: this client is blocklisted"))
            return
        req.future.set_result(reply)

    def _handle_map(self, m: OSDMap) -> None:
        """Retarget every in-flight request; resend those whose target changed."""
        self._targets.clear()
        for req in list(self.requests.values()):
            if req.future is None or req.future.done():
                continue
            old_osd = req.osd
            try:
                changed = self._calc_target(req)
            except PoolNotFound as e:
                req.future.set_exception(e)
                continue
            if changed or (old_osd >= 0 and not m.is_up(old_osd)) or (req.osd >= 0 and req.tid not in self.sessions.get(req.osd, _NOSESSION).requests):
                old = self.sessions.get(old_osd)
                if old is not None:
                    old.requests.pop(req.tid, None)
                self._send(req)
        # Close sessions to OSDs that went down or changed address.
        for osd, s in list(self.sessions.items()):
            if not m.is_up(osd) or m.get_addrs(osd).get(ADDR_TYPE_MSGR2) != s.addr:
                self.sessions.pop(osd, None)
                asyncio.get_running_loop().create_task(s.close())

    def _session_failed(self, s: OSDSession, exc: Exception) -> None:
        if self._closing or s.closed:
            return
        log.info("osd.%d %s: fault: %s", s.osd, s.addr, exc)
        s.closed = True
        if self.sessions.get(s.osd) is s:
            del self.sessions[s.osd]
        pending = list(s.requests.values())
        s.requests.clear()
        if not pending:
            return
        delay = random.uniform(0.05, 0.3)

        def resend():
            for req in pending:
                if req.future is None or req.future.done():
                    continue
                try:
                    self._calc_target(req)
                    self._send(req)
                except Error as e:
                    req.future.set_exception(e)

        asyncio.get_running_loop().call_later(delay, resend)
        # The OSD may be down: a newer map tells us where to go.
        self.monc.request_osdmap(onetime=True)


class _NoSession:
    requests: dict = {}


_NOSESSION = _NoSession()
