"""OSDClient: send ops to the acting primary and match replies (``net/ceph/osd_client.c``).

Each request is targeted from the current OSDMap (object -> raw pg -> pg -> acting set
-> primary); one :class:`OSDSession` (a msgr2 connection with a cephx authorizer) per
OSD carries many requests at once, matched by tid.  What survives which fault, as in
krbd:

- **New OSDMap** (every epoch, see ``MonClient.add_osdmap_listener``): each in-flight
  request is retargeted (``calc_target``) and resent when its pg or primary changed,
  its pool's pg_num changed (split/merge), the pool's ``last_force_op_resend`` moved,
  it was paused and no longer is, epochs were skipped (a full map), or -- for writes --
  the cluster or its pool stopped being full (a full OSD drops writes without a reply).
  Sessions to OSDs that went down or changed address are closed.  An OSD drops an op
  sent before an interval change it went through, so this is what keeps ops moving.
- **Pauses**: writes wait while the osdmap has PAUSEWR or FULL or the pool is full
  (FLAG_FULL / FLAG_FULL_QUOTA), reads while PAUSERD; they are sent when a map clears it.
  A request with no primary waits the same way (and asks the monitor for newer maps).
- **Session fault** (EOF, reset, protocol error, keepalive timeout, refused connect):
  the session reconnects after an exponential backoff with jitter (0.25 s doubling to
  15 s, ``osd_reconnect_backoff_min/max``; reset by a successful connect) and resends
  its requests in tid order on the new connection.  An idle session is closed instead.
  An AuthError on connect invalidates the OSD ticket once and asks the monitor for a
  new one (reconnecting as soon as it arrives); a FeatureNotSupported just backs off.
- **Silent OSD**: every ``osd_keepalive_interval`` s (5) a KEEPALIVE2 goes to each
  session holding a request sent longer ago than that; a session that then receives
  nothing for ``osd_keepalive_timeout`` s (30) is faulted (see above).  A connect (TCP
  + handshake) gets ``min(client_mount_timeout, osd_keepalive_timeout)`` s.
- **Idle sessions** (no request for ``osd_idle_ttl`` s, 60) are closed.
- **Exactly once**: a resend keeps the tid (``retry_attempt`` + 1, RETRY flag); the OSD
  names the request ``client.<global_id>:<tid>`` (the global_id we announce in
  CLIENT_IDENT, kept across mon reconnects by global_id reclaim) and answers a write it
  already applied from its pg log instead of applying it again.
- **Timeout**: ``osd_request_timeout`` (or ``rados_osd_op_timeout``) > 0 seconds fails a
  request with :class:`TimedOut`; 0 waits forever, as krbd.
- **Blocklisted**: a reply of -108 (EBLOCKLISTED) or our address (IP + nonce, or the
  whole IP) in the osdmap blocklist fails every request with :class:`Blocklisted` and
  latches: later submits fail at once (a blocklisted krbd client must be remapped).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from ..auth.hooks import AuthHooksMixin
from ..errors import (
    AuthError,
    Blocklisted,
    ConnectionShutdown,
    Error,
    InvalidArgumentError,
    PoolNotFound,
    TimedOut,
    make_ex,
)
from ..msgr.connection import Connection
from ..msgr.message import Message
from ..msgr.protocol import State
from ..osdmap import OSDMap
from ..osdmap.osdmap import CEPH_OSDMAP_FULL, CEPH_OSDMAP_PAUSERD, CEPH_OSDMAP_PAUSEWR
from ..osdmap.pool import FLAG_FULL, FLAG_FULL_QUOTA
from ..types import ADDR_TYPE_MSGR2, ENTITY_TYPE_OSD, PgT
from . import ops as O
from ..mon.messages import MOSDMap
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
    """One in-flight request (``ceph_osd_request``).

    Times (``start``, ``stamp``) are event-loop seconds.  ``session`` is the OSD session
    it is linked to (None: "homeless" -- no primary, or paused); ``sent_con`` the
    connection it was last sent on (None: must be sent when the session connects).
    """

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
    raw_hash: int = 0
    pg_num: int = 0
    last_force_resend: int = 0
    paused: bool = False
    attempts: int = 0
    sent_epoch: int = 0
    start: float = 0.0
    stamp: float = 0.0
    session: "OSDSession | None" = None
    sent_con: Any = None

    @property
    def is_write(self) -> bool:
        return bool(self.flags & O.CEPH_OSD_FLAG_WRITE)

    @property
    def is_read(self) -> bool:
        return bool(self.flags & O.CEPH_OSD_FLAG_READ)


def _pool_full(pool) -> bool:
    return bool(pool.flags & (FLAG_FULL | FLAG_FULL_QUOTA))


class OSDSession(AuthHooksMixin):
    """The client's session with one OSD (``struct ceph_osd``); the messenger's ``ops``
    for its connection (``osd_con_ops``); auth hooks from the cephx authorizer.

    It outlives its connections: a fault drops ``con`` and, after a backoff, opens a new
    one on which the linked requests are resent.  ``state``: ``connecting``, ``open``,
    ``backoff`` (waiting to reconnect) or ``closed``.
    """

    def __init__(self, osdc: "OSDClient", osd: int, addr):
        self.osdc = osdc
        self.osd = osd
        self.addr = addr
        self.requests: dict[int, OSDRequest] = {}
        self.auth = osdc.monc.auth.authorizer_hooks(ENTITY_TYPE_OSD)
        self.con: Any = None
        self.state = "new"
        self.closed = False
        self.loop = asyncio.get_running_loop()
        self.last_used = self.loop.time()
        self.faults = 0
        self.resends = 0
        self.connects = 0  # connections that reached READY
        self.last_fault: str | None = None
        self.last_fault_at: float | None = None  # loop time
        self.backoff = 0.0  # current reconnect delay (s); 0 after a successful connect
        self.auth_failed = False  # last fault was an AuthError
        self.ticket_renewed = False  # we already invalidated the OSD ticket for this streak
        self.ka_pending_since: float | None = None  # loop time we started waiting for a sign of life
        self._task: asyncio.Task | None = None
        self._retry: asyncio.TimerHandle | None = None

    def open(self) -> None:
        """Start a new connection now (requests are sent as soon as it is up)."""
        if self.closed:
            return
        self._retry = None
        osdc = self.osdc
        try:
            con = osdc.connection_factory(
                self.addr, self, peer_type=ENTITY_TYPE_OSD, global_id=osdc.monc.global_id,
                my_addr=osdc.monc.my_addr, connect_addr=osdc.monc.connect_addr(self.addr),
            )
        except Error as e:  # e.g. a malformed connect map
            self.state = "connecting"
            self.con = None
            osdc._session_failed(self, None, e)
            return
        self.con = con
        self.state = "connecting"
        self.ka_pending_since = None
        self._task = self.loop.create_task(self._connect(con), name=f"osd.{self.osd} connect")
        # Queue every waiting request on the new connection now, in tid order, so that
        # requests submitted from here on go out after them (ops on one object must
        # reach the OSD in tid order: kernel kick_osd_requests at reopen).
        osdc._kick(self)

    async def _connect(self, con) -> None:
        try:
            await con.connect(self.osdc.session_connect_timeout)
        except Error as e:
            self.osdc._session_failed(self, con, e)
            return
        except Exception as e:  # a bug in a hook must not leave the session stuck
            log.exception("osd.%d: connect failed", self.osd)
            self.osdc._session_failed(self, con, e)
            return
        self.osdc._session_opened(self, con)

    # -- ceph_connection_operations --------------------------------------------------
    def dispatch(self, con, msg: Message) -> None:
        if con is self.con:
            self.osdc._dispatch(self, msg)

    def fault(self, con, exc: Exception) -> None:
        self.osdc._session_failed(self, con, exc)

    async def close(self) -> None:
        self.closed = True
        self.state = "closed"
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        con, self.con = self.con, None
        if con is not None:
            await con.close()

    def status(self, now: float) -> dict[str, Any]:
        con = self.con

        def age(t):
            return round(now - t, 3) if t is not None else None

        return {
            "osd": self.osd,
            "addr": str(self.addr),
            "connect_addr": (f"{con.connect_addr[0]}:{con.connect_addr[1]}"
                             if con is not None and con.connect_addr else None),
            "state": self.state,
            "connection_state": con.state.value if con is not None else None,
            "requests": len(self.requests),
            "oldest_request_age": age(min((r.stamp for r in self.requests.values()), default=None)),
            "last_keepalive_ack_age": age(con.last_keepalive_ack_at) if con is not None else None,
            "last_rx_age": age(con.last_rx_at) if con is not None else None,
            "connects": self.connects,
            "faults": self.faults,
            "resends": self.resends,
            "last_fault": self.last_fault,
            "last_fault_age": age(self.last_fault_at),
            "backoff": round(self.backoff, 3),
            "idle_for": age(self.last_used) if not self.requests else 0.0,
        }


class OSDClient:
    """Submits OSD ops and returns their replies.

    ``await osdc.submit(pool_id, oid, ops, ...)`` -> :class:`MOSDOpReply`; raises the
    typed error for a negative result (``ObjectNotFound`` for ENOENT ...),
    :class:`PoolNotFound`, :class:`TimedOut` (``osd_request_timeout`` > 0 seconds
    passed; 0 waits forever, as in krbd), :class:`Blocklisted`.  Fault handling: see
    the module docstring.  ``status()`` is the debug view of every session.
    """

    def __init__(self, monc, *, connection_factory=Connection):
        self.monc = monc
        self.connection_factory = connection_factory
        self.sessions: dict[int, OSDSession] = {}
        self.requests: dict[int, OSDRequest] = {}
        self._tid = 0
        cfg = monc.config
        self.connect_timeout = cfg.get_float("client_mount_timeout", 30.0)
        self.request_timeout = cfg.get_float("osd_request_timeout", 0.0) or cfg.get_float(
            "rados_osd_op_timeout", 0.0
        )
        self.keepalive_interval = max(0.05, cfg.get_float("osd_keepalive_interval", 5.0))
        self.keepalive_timeout = max(0.1, cfg.get_float("osd_keepalive_timeout", 30.0))
        self.idle_ttl = max(0.1, cfg.get_float("osd_idle_ttl", 60.0))
        self.backoff_min = max(0.0, cfg.get_float("osd_reconnect_backoff_min", 0.25))
        self.backoff_max = max(self.backoff_min, cfg.get_float("osd_reconnect_backoff_max", 15.0))
        # A stalled peer must not hold a reconnect for client_mount_timeout.
        self.session_connect_timeout = min(self.connect_timeout, max(1.0, self.keepalive_timeout))
        self.tick_interval = max(0.05, min(self.keepalive_interval, self.idle_ttl / 4))
        self.blocklisted: Blocklisted | None = None
        self.resends = 0
        self._closing = False
        self._ticker: asyncio.Task | None = None
        self._last_epoch = 0
        self._full_pools: set[int] = set()
        self._was_full = False
        # (pool, oid, key, nspace) -> (raw pg, pg, acting, primary) for one osdmap epoch
        self._targets: dict[tuple, tuple] = {}
        self._targets_map: tuple[int, int] | None = None
        m = monc.osdmap
        if m is not None:
            self._last_epoch = m.epoch
            self._full_pools = {pid for pid, p in m.pools.items() if _pool_full(p)}
            self._was_full = m.test_flag(CEPH_OSDMAP_FULL)
            self._check_blocklist(m)
        monc.add_osdmap_listener(self._handle_map)
        if hasattr(monc, "add_tickets_listener"):
            monc.add_tickets_listener(self._tickets_renewed)

    @property
    def osdmap(self) -> OSDMap:
        return self.monc.osdmap

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    # -- targeting ---------------------------------------------------------------------
    def _should_pause(self, req: OSDRequest, pool) -> bool:
        """``target_should_be_paused``: reads on PAUSERD; writes on PAUSEWR, a full
        cluster or a full pool (quota included)."""
        m = self.osdmap
        if req.is_read and m.test_flag(CEPH_OSDMAP_PAUSERD):
            return True
        return req.is_write and (
            m.test_flag(CEPH_OSDMAP_PAUSEWR) or m.test_flag(CEPH_OSDMAP_FULL) or _pool_full(pool)
        )

    def _calc_target(self, req: OSDRequest) -> bool:
        """Recompute ``req``'s pg, shard, primary and pause state (``calc_target``).

        True if it must be (re)sent: first targeting, pg/primary/shard changed, the
        pool's pg_num changed (split or merge), ``last_force_op_resend`` moved past what
        we sent with, or it was paused and is not any more.  Raises PoolNotFound.
        """
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
        first = req.pgid is None
        paused = self._should_pause(req, pool)
        unpaused = req.paused and not paused
        req.paused = paused
        force = pool.last_force_op_resend > req.last_force_resend
        split = bool(req.pg_num) and pool.pg_num != req.pg_num
        changed = first or pg != req.pgid or primary != req.osd or shard != req.shard
        req.pgid, req.osd, req.shard = pg, primary, shard
        req.raw_hash = raw.seed
        req.pg_num = pool.pg_num
        req.last_force_resend = max(req.last_force_resend, pool.last_force_op_resend)
        return changed or split or (force and not first) or unpaused

    def _get_session(self, osd: int) -> OSDSession:
        s = self.sessions.get(osd)
        if s is None or s.closed:
            addrs = self.osdmap.get_addrs(osd)
            addr = addrs.get(ADDR_TYPE_MSGR2)
            if addr is None:
                raise InvalidArgumentError(f"osd.{osd} has no msgr2 address ({addrs})")
            s = OSDSession(self, osd, addr)
            self.sessions[osd] = s
            s.open()
            self._ensure_ticker()
        return s

    def _link(self, req: OSDRequest, s: OSDSession | None) -> None:
        old = req.session
        if old is s:
            return
        if old is not None:
            old.requests.pop(req.tid, None)
            old.last_used = old.loop.time()
        req.session = s
        req.sent_con = None
        if s is not None:
            s.requests[req.tid] = req
            s.last_used = s.loop.time()

    def _send(self, req: OSDRequest) -> None:
        """Send ``req`` to its current target, or park it (no primary, paused)."""
        if req.osd < 0 or req.paused:
            self._link(req, None)
            if req.osd < 0:
                log.info("tid %d %s: no primary for pg %s in epoch %d; waiting for a new map",
                         req.tid, req.oid, req.pgid, self.osdmap.epoch)
            # Ask for newer maps: the one that clears it (kernel maybe_request_map).
            self._want_map(onetime=False)
            return
        s = self._get_session(req.osd)
        self._link(req, s)
        if s.con is not None:
            self._transmit(s, req)
        # else: reconnecting after a fault; _session_opened sends it.

    def _transmit(self, s: OSDSession, req: OSDRequest) -> None:
        flags = req.flags
        if req.attempts:
            flags |= O.CEPH_OSD_FLAG_RETRY
            s.resends += 1
            self.resends += 1
        epoch = self.osdmap.epoch
        msg = MOSDOp(
            pgid=SpgT(req.pgid, req.shard),
            hash=req.raw_hash,
            osdmap_epoch=epoch,
            flags=flags,
            oid=req.oid,
            oloc=ObjectLocator(req.pool, req.key, req.nspace),
            ops=req.ops,
            tid=req.tid,
            mtime=req.mtime,
            snapid=req.snapid,
            snap_seq=req.snap_seq,
            snaps=req.snaps,
            retry_attempt=req.attempts,
        ).to_message(s.con.features or self.monc._features())
        try:
            s.con.send(msg)
        except ConnectionShutdown:
            return  # the connection just died: resent when the session reconnects
        req.attempts += 1
        req.sent_epoch = epoch
        req.sent_con = s.con
        req.stamp = s.loop.time()
        s.last_used = req.stamp

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
        ``timeout`` seconds (default ``osd_request_timeout``; 0 = forever).
        """
        if self._closing:
            raise make_ex(-108, "client is shut down")
        if self.blocklisted is not None:
            raise Blocklisted(str(self.blocklisted))
        self._tid += 1
        flags = O.CEPH_OSD_FLAG_KNOWN_REDIR
        if write:
            flags |= O.CEPH_OSD_FLAG_WRITE | O.CEPH_OSD_FLAG_ONDISK
        else:
            flags |= O.CEPH_OSD_FLAG_READ
        now = time.time()
        loop = asyncio.get_running_loop()
        req = OSDRequest(
            tid=self._tid, pool=pool, oid=oid, nspace=nspace, key=key, ops=ops, flags=flags,
            snapid=snapid,
            snap_seq=snapc[0] if snapc else 0,
            snaps=list(snapc[1]) if snapc else [],
            mtime=(int(now), int((now % 1) * 1e9)) if write else (0, 0),
            start=loop.time(),
        )
        req.future = loop.create_future()
        self._calc_target(req)
        self.requests[req.tid] = req
        self._ensure_ticker()
        try:
            self._send(req)
            t = timeout if timeout is not None else self.request_timeout
            if t and t > 0:
                try:
                    reply = await asyncio.wait_for(asyncio.shield(req.future), t)
                except asyncio.TimeoutError:
                    where = f"osd.{req.osd}" if req.osd >= 0 else "no primary"
                    why = " (paused)" if req.paused else ""
                    raise TimedOut(
                        f"osd op on {oid} (tid {req.tid}, {where}{why}, {req.attempts} sends) "
                        f"timed out after {t:g}s"
                    ) from None
            else:
                reply = await req.future
        finally:
            self._forget(req)
        return reply

    def _forget(self, req: OSDRequest) -> None:
        self.requests.pop(req.tid, None)
        self._link(req, None)

    async def close(self) -> None:
        self._closing = True
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for req in list(self.requests.values()):
            if req.future is not None and not req.future.done():
                req.future.set_exception(make_ex(-108, "client shut down"))
        for s in list(self.sessions.values()):
            await s.close()
        self.sessions.clear()

    def status(self) -> dict[str, Any]:
        """Debug view (JSON-able): osdmap epoch, request counts, blocklist state and
        every OSD session (see :meth:`OSDSession.status`); ages in seconds."""
        now = self._now()
        m = self.osdmap
        reqs = list(self.requests.values())
        return {
            "osdmap_epoch": m.epoch if m is not None else None,
            "osdmap_flags": m.flag_string if m is not None else None,
            "requests": len(reqs),
            "homeless": sum(1 for r in reqs if r.session is None and not r.paused),
            "paused": sum(1 for r in reqs if r.paused),
            "resends": self.resends,
            "blocklisted": str(self.blocklisted) if self.blocklisted is not None else None,
            "sessions": [s.status(now) for _, s in sorted(self.sessions.items())],
        }

    # -- events ------------------------------------------------------------------------
    def _dispatch(self, s: OSDSession, msg: Message) -> None:
        if msg.type == MOSDMap.MSG_TYPE:
            # OSDs push newer maps to a client that sent an old epoch; apply them at once
            # (as the kernel's osd dispatch does) instead of waiting for the monitor.
            self.monc.handle_osdmap_message(MOSDMap.from_message(msg), source=f"osd.{s.osd}")
            return
        if msg.type != MOSDOpReply.MSG_TYPE:
            log.debug("osd.%d: ignoring message type %d", s.osd, msg.type)
            return
        reply = MOSDOpReply.from_message(msg)
        req = self.requests.get(msg.tid)
        if req is None or req.future is None or req.future.done():
            return  # a reply to a request we gave up on
        if req.session is not s:
            return  # stale: the request moved to another OSD
        s.ka_pending_since = None
        if reply.redirect is not None and getattr(reply.redirect, "oloc", None):
            req.future.set_exception(
                InvalidArgumentError(f"osd.{s.osd} redirected {req.oid}: cache tiering is not supported")
            )
            return
        r = reply.result
        if r == -_EAGAIN and req.is_read:
            # Replica/balanced reads bounced: resend to the primary.
            self._send(req)
            return
        if r == -_EBLOCKLISTED:
            self._set_blocklisted(Blocklisted(
                f"osd.{s.osd} refused {self.monc.auth.entity_name} (global_id {self.monc.global_id}, "
                f"addr {self.monc.client_addr}): this client is blocklisted"
            ))
            return
        req.future.set_result(reply)

    def _set_blocklisted(self, exc: Blocklisted) -> None:
        if self.blocklisted is None:
            log.error("%s", exc)
            self.blocklisted = exc
        for req in list(self.requests.values()):
            if req.future is not None and not req.future.done():
                req.future.set_exception(Blocklisted(str(exc)))

    def _check_blocklist(self, m: OSDMap) -> None:
        """Our address (this nonce, or the whole IP) in the osdmap blocklist.  CIDR range
        entries are not checked here: the OSD's -108 reply covers them."""
        me = getattr(self.monc, "client_addr", None)
        bl = getattr(m, "blocklist", None)
        if me is None or not bl or not me.ip:
            return
        for a in bl:
            if a.ip == me.ip and ((a.nonce == me.nonce and a.port == me.port) or (a.nonce == 0 and a.port == 0)):
                self._set_blocklisted(Blocklisted(
                    f"osdmap epoch {m.epoch} blocklists {a} ({self.monc.auth.entity_name} at {me})"
                ))
                return

    def _handle_map(self, m: OSDMap) -> None:
        """Retarget every in-flight request for epoch ``m.epoch``; resend those that need
        it (``scan_requests`` + ``kick_requests``); close sessions to OSDs that are down
        or moved."""
        if self._closing:
            return
        prev, self._last_epoch = self._last_epoch, m.epoch
        skipped = bool(prev) and m.epoch > prev + 1
        full_now = {pid for pid, p in m.pools.items() if _pool_full(p)}
        cleared_pools = self._full_pools - full_now
        global_full = m.test_flag(CEPH_OSDMAP_FULL)
        cleared_full = self._was_full and not global_full
        self._full_pools, self._was_full = full_now, global_full
        self._targets.clear()
        self._check_blocklist(m)
        need: dict[int, OSDRequest] = {}
        for req in list(self.requests.values()):
            if req.future is None or req.future.done():
                continue
            try:
                changed = self._calc_target(req)
            except PoolNotFound as e:
                req.future.set_exception(e)
                self._link(req, None)
                continue
            if skipped:
                changed = True  # an OSD may have dropped it in an epoch we never saw
            elif req.is_write and (cleared_full or req.pool in cleared_pools):
                changed = True  # a full OSD drops writes without a reply
            if changed:
                need[req.tid] = req
        for osd, s in list(self.sessions.items()):
            if not m.is_up(osd) or m.get_addrs(osd).get(ADDR_TYPE_MSGR2) != s.addr:
                log.info("osd.%d %s: %s in osdmap epoch %d; closing its session", osd, s.addr,
                         "down" if not m.is_up(osd) else "moved", m.epoch)
                for req in list(s.requests.values()):
                    need[req.tid] = req
                    self._link(req, None)
                self._close_session(s)
        for tid in sorted(need):
            req = need[tid]
            if req.future is None or req.future.done():
                continue
            try:
                self._send(req)
            except Error as e:
                req.future.set_exception(e)
                self._link(req, None)
        if skipped and need:
            log.info("osdmap %d -> %d skipped epochs: resent %d requests", prev, m.epoch, len(need))

    def _close_session(self, s: OSDSession) -> None:
        if self.sessions.get(s.osd) is s:
            del self.sessions[s.osd]
        s.closed = True
        s.state = "closed"
        asyncio.get_running_loop().create_task(s.close())

    def _kick(self, s: OSDSession) -> None:
        """Send (in tid order) every request of ``s`` its current connection has not
        carried yet."""
        if s.con is None:
            return
        for tid in sorted(s.requests):
            req = s.requests.get(tid)
            if req is None or req.sent_con is s.con or req.future is None or req.future.done():
                continue
            self._transmit(s, req)

    def _session_opened(self, s: OSDSession, con) -> None:
        """The session's new connection is READY (what was queued on it is on its way)."""
        if s.closed or con is not s.con:
            return
        s.state = "open"
        s.connects += 1
        s.backoff = 0.0
        s.auth_failed = False
        s.ticket_renewed = False
        if s.connects > 1:
            log.info("osd.%d %s: reconnected (connection %d, %d requests resent)",
                     s.osd, s.addr, s.connects, len(s.requests))
        self._kick(s)  # anything a racing fault kept from being queued

    def _session_failed(self, s: OSDSession, con, exc: Exception) -> None:
        """``osd_fault``: drop the connection; reconnect after a backoff if requests wait
        on it (they are resent on the new one), else close the session."""
        if self._closing or s.closed or con is not s.con:
            return
        s.con = None
        s._task = None
        s.faults += 1
        s.last_fault = f"{type(exc).__name__}: {exc}"
        s.last_fault_at = s.loop.time()
        s.ka_pending_since = None
        for req in s.requests.values():
            req.sent_con = None
        if con is not None and con.state is not State.CLOSED:
            s.loop.create_task(con.close())
        s.auth_failed = isinstance(exc, AuthError)
        if s.auth_failed and not s.ticket_renewed:
            # The OSD may not accept our ticket (rotated service keys): get a new one once.
            s.ticket_renewed = True
            self.monc.auth.invalidate_ticket(ENTITY_TYPE_OSD)
            self.monc.renew_tickets()
        if not s.requests:
            log.info("osd.%d %s: fault with no requests (%s); closing session", s.osd, s.addr, exc)
            self._close_session(s)
            return
        s.backoff = self.backoff_min if s.backoff == 0 else min(2 * s.backoff, self.backoff_max)
        delay = s.backoff * random.uniform(0.5, 1.5)
        s.state = "backoff"
        log.warning("osd.%d %s: fault #%d (%s); %d requests wait, reconnecting in %.2fs",
                    s.osd, s.addr, s.faults, s.last_fault, len(s.requests), delay)
        s._retry = s.loop.call_later(delay, self._reopen, s)
        # The OSD may be down or have moved: a newer map tells us where to go.
        self._want_map()

    def _reopen(self, s: OSDSession) -> None:
        s._retry = None
        if s.closed or self._closing or s.con is not None:
            return
        if not s.requests:
            self._close_session(s)
            return
        s.open()

    def _tickets_renewed(self) -> None:
        """New service tickets: reconnect sessions that failed authentication now."""
        for s in list(self.sessions.values()):
            if s.state == "backoff" and s.auth_failed and s._retry is not None:
                s._retry.cancel()
                self._reopen(s)

    # -- periodic work (handle_timeout + handle_osds_timeout) ----------------------------
    def _ensure_ticker(self) -> None:
        if self._ticker is None and not self._closing:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_loop(), name="osdc tick")

    async def _tick_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.tick_interval)
            try:
                self._tick()
            except Exception:
                log.exception("osdc tick")

    def _tick(self, now: float | None = None) -> None:
        """Keepalives to sessions with laggy requests, fault silent ones, close idle
        sessions, ask for a map while requests wait for one."""
        now = self._now() if now is None else now
        laggy_cut = now - self.keepalive_interval
        want_map = False
        for s in list(self.sessions.values()):
            con = s.con
            if s.requests:
                s.last_used = now
                if con is None or con.state is not State.READY:
                    continue
                if not any(r.sent_con is con and r.stamp <= laggy_cut for r in s.requests.values()):
                    s.ka_pending_since = None
                    continue
                want_map = True
                seen = max(t for t in (con.last_rx_at, con.connected_at, 0.0) if t is not None)
                if s.ka_pending_since is None or seen >= s.ka_pending_since:
                    s.ka_pending_since = now  # a new round: it was alive since the last one
                elif now - s.ka_pending_since >= self.keepalive_timeout:
                    con.abort(TimedOut(
                        f"osd.{s.osd} {s.addr}: no keepalive ack or reply for {now - s.ka_pending_since:.1f}s "
                        f"(osd_keepalive_timeout {self.keepalive_timeout:g}s)"
                    ))
                    continue
                con.send_keepalive()
            elif now - s.last_used >= self.idle_ttl:
                log.info("osd.%d %s: idle for %.0fs (osd_idle_ttl); closing session",
                         s.osd, s.addr, now - s.last_used)
                self._close_session(s)
        if want_map or any(r.session is None for r in self.requests.values()):
            self._want_map()

    def _want_map(self, onetime: bool = True) -> None:
        """Subscribe to newer OSDMaps; a mon session being re-established resubscribes
        by itself, so failing here is not an error."""
        try:
            self.monc.request_osdmap(onetime=onetime)
        except Error as e:
            log.debug("osdmap request: %s", e)
