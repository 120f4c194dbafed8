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
- **Linger requests** (watches and in-progress notifies, :class:`LingerRequest`; kernel
  ``ceph_osd_linger_request``, Objecter ``LingerOp``): a watch is registered with
  WATCH_OP_WATCH and then pinged (WATCH_OP_PING with its ``register_gen``) every
  ``osd_keepalive_interval`` s, at most ``timeout/2``; a session serving a watch gets a
  keepalive every tick and is never closed as idle.  It is re-registered with
  WATCH_OP_RECONNECT (``register_gen`` + 1) on a new connection to its OSD, when its
  pg, primary or acting set changes, after a DISCONNECT event and after a failed ping;
  only a failed re-registration (ENOTCONN: the OSD dropped the watch; Blocklisted ...)
  reaches the watch's ``on_error``.  At most one registration is in flight; pings are
  never resent.  A notify is resent (new notify_id) if its session resets or its target
  moves before NOTIFY_COMPLETE arrives.  MWatchNotify events: NOTIFY -> ``on_notify``,
  NOTIFY_COMPLETE -> the waiting :meth:`OSDClient.notify`; unknown cookies are logged
  and ignored.  Every linger event is one log line with ``event=linger_<what>``.
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
    NoSpace,
    TimedOut,
    make_ex,
)
from ..msgr.connection import Connection, choose_addr
from ..msgr.message import Message
from ..osdmap import OSDMap
from ..osdmap.osdmap import CEPH_OSDMAP_FULL, CEPH_OSDMAP_PAUSERD, CEPH_OSDMAP_PAUSEWR
from ..osdmap.pool import FLAG_FULL, FLAG_FULL_QUOTA
from ..types import ENTITY_TYPE_OSD, PgT
from . import ops as O
from ..mon.messages import MOSDMap
from .messages import (
    CEPH_WATCH_EVENT_DISCONNECT,
    CEPH_WATCH_EVENT_NOTIFY,
    CEPH_WATCH_EVENT_NOTIFY_COMPLETE,
    MOSDOp,
    MOSDOpReply,
    MWatchNotify,
    ObjectLocator,
    SpgT,
)

log = logging.getLogger("pyceph.osd")

CEPH_NOSNAP = (1 << 64) - 2
NO_SHARD = -1
CRUSH_ITEM_NONE = 0x7FFFFFFF
_EBLOCKLISTED = 108
_EAGAIN = 11
_ENOENT = 2
_ENOTCONN = 107
_ETIMEDOUT = 110
_TARGET_CACHE_MAX = 1 << 16
_REPLICA_READS = O.CEPH_OSD_FLAG_BALANCE_READS | O.CEPH_OSD_FLAG_LOCALIZE_READS


def parse_crush_location(value: str) -> frozenset[tuple[str, str]]:
    """ceph.conf's ``crush_location`` (``host=a rack=b``, also ``type:name|...`` as krbd's
    map option) -> {(type name, bucket name)}.  Malformed items raise InvalidArgumentError."""
    out = set()
    for item in value.replace("|", " ").replace(",", " ").split():
        t, sep, n = item.partition("=") if "=" in item else item.partition(":")
        if not sep or not t or not n:
            raise InvalidArgumentError(f"bad crush_location item {item!r} (type=name)")
        out.add((t, n))
    return frozenset(out)


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
    #: the linger (watch/notify) this request registers or pings for, if any
    linger: "LingerRequest | None" = None
    #: dropped (ConnectionShutdown) instead of resent after a fault or retarget (pings)
    no_resend: bool = False

    @property
    def is_write(self) -> bool:
        return bool(self.flags & O.CEPH_OSD_FLAG_WRITE)

    @property
    def is_read(self) -> bool:
        return bool(self.flags & O.CEPH_OSD_FLAG_READ)


@dataclass(eq=False)
class LingerRequest:
    """A watch or an in-progress notify (``ceph_osd_linger_request``, Objecter ``LingerOp``).

    ``linger_id`` is also the cookie the OSD knows the watch (or notify) by.  ``t`` holds
    the target (an :class:`OSDRequest` never submitted, used only for ``_calc_target``).
    ``committed``: the first WATCH (or NOTIFY) was acknowledged; later registrations of a
    watch are WATCH_OP_RECONNECT with ``register_gen`` + 1.  ``reg_req``/``ping_req``: the
    registration / ping request in flight.  ``watch_valid_thru``: loop time when the last
    acknowledged ping (or registration) was sent.  ``last_error``: the watch is lost for
    good (``on_error`` was called).  Notify: ``notify_id`` from the NOTIFY reply,
    ``finished`` resolves to ``(return_code, data)`` on NOTIFY_COMPLETE.
    """

    linger_id: int
    is_watch: bool
    t: OSDRequest
    timeout: int = 30
    payload: bytes = b""
    snapc: tuple[int, list[int]] | None = None
    on_notify: Any = None
    on_error: Any = None
    session: "OSDSession | None" = None
    acting: tuple = ()
    committed: bool = False
    register_gen: int = 0
    last_error: Error | None = None
    reg_req: OSDRequest | None = None
    ping_req: OSDRequest | None = None
    ping_sent: float = 0.0
    watch_valid_thru: float = 0.0
    notify_id: int = 0
    registered: asyncio.Future | None = None
    finished: asyncio.Future | None = None
    canceled: bool = False
    ping_timer: asyncio.TimerHandle | None = None
    reconnects: int = 0
    pings: int = 0


def _normalize_watch_error(r: int) -> int:
    """ENOENT (object deleted) -> ENOTCONN, as the kernel's ``normalize_watch_error``."""
    return -_ENOTCONN if r == -_ENOENT else r


def _reply_result(reply) -> int:
    if reply.result < 0:
        return reply.result
    for op in reply.ops:
        if op.rval < 0:
            return op.rval
    return reply.result


def _consume(fut: asyncio.Future) -> None:
    """Mark a linger future's exception retrieved: its waiter may have given up (timeout)."""
    if not fut.cancelled():
        fut.exception()


def _errno_name(r: int) -> str:
    import errno as _e
    return _e.errorcode.get(-r, str(r))


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
        self.lingers: dict[int, LingerRequest] = {}
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
        # Watches served by this OSD re-register on the new connection (RECONNECT).
        osdc._kick_lingers(self)

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
            "con_mode": getattr(con, "mode_name", None) if con is not None else None,
            "protocol": con.proto if con is not None else None,  # msgr1 / msgr2
            "requests": len(self.requests),
            "lingers": len(self.lingers),
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
        self.lingers: dict[int, LingerRequest] = {}
        self._tid = 0
        self._linger_id = 0
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
        # Watch pings: every osd_keepalive_interval (the kernel pings on each 5 s
        # osd_keepalive tick, librados on each 5 s objecter tick), at most timeout/2.
        self._ping_follows_keepalive = cfg.get("osd_watch_ping_interval") is None
        self.ping_interval = max(0.01, cfg.get_float("osd_watch_ping_interval", self.keepalive_interval))
        self.blocklisted: Blocklisted | None = None
        self.resends = 0
        self._closing = False
        self._ticker: asyncio.Task | None = None
        self._last_epoch = 0
        self._full_pools: set[int] = set()
        self._was_full = False
        # krbd's abort_on_full / read_from_replica / crush_location map options
        self.abort_on_full = (cfg.get("abort_on_full") or "").lower() in ("1", "true", "yes", "on")
        policy = cfg.get("rbd_read_from_replica_policy") or "default"
        self.read_flags = {"balance": O.CEPH_OSD_FLAG_BALANCE_READS,
                           "localize": O.CEPH_OSD_FLAG_LOCALIZE_READS}.get(policy, 0)
        self.crush_location = parse_crush_location(cfg.get("crush_location") or "")
        self.replica_reads = 0  # replica reads answered by a replica
        self.replica_bounces = 0  # ... and bounced to the primary (EAGAIN: not readable there yet)
        self._crush_parents: tuple[int, dict[int, Any]] = (0, {})
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

    def set_keepalive_interval(self, seconds: float) -> None:
        """krbd's ``osdkeepalive`` on a live client: the keepalive period (seconds), the
        tick that sends them, and the watch ping period when it follows it."""
        self.keepalive_interval = max(0.05, float(seconds))
        self.tick_interval = max(0.05, min(self.keepalive_interval, self.idle_ttl / 4))
        if self._ping_follows_keepalive:
            self.ping_interval = max(0.01, self.keepalive_interval)

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
        target = primary
        if (req.flags & _REPLICA_READS and not req.is_write and not pool.is_erasure()
                and len(acting) > 1 and primary >= 0):
            if not first and pg == req.pgid and req.osd in acting:
                target = req.osd  # same acting set: stay where it was sent
            elif req.flags & O.CEPH_OSD_FLAG_BALANCE_READS:
                target = random.choice(acting)  # osd_client.c pick_random_replica
            else:
                target = self._closest_replica(acting)
        changed = first or pg != req.pgid or target != req.osd or shard != req.shard
        req.pgid, req.osd, req.shard = pg, target, shard
        req.raw_hash = raw.seed
        req.pg_num = pool.pg_num
        req.last_force_resend = max(req.last_force_resend, pool.last_force_op_resend)
        return changed or split or (force and not first) or unpaused

    def _closest_replica(self, acting: list[int]) -> int:
        """The acting OSD closest to :attr:`crush_location` (``pick_closest_replica``):
        the lowest CRUSH type id of an ancestor bucket named in the location; the
        primary (first) when none is local."""
        best, best_loc = acting[0], -1
        for osd in acting:
            loc = self._crush_locality(osd)
            if loc >= 0 and (best_loc < 0 or loc < best_loc):
                best, best_loc = osd, loc
        return best

    def _crush_locality(self, item: int) -> int:
        """``ceph_get_crush_locality``: the type id of ``item``'s nearest ancestor whose
        (type name, bucket name) is in the crush location, or -1."""
        crush = self.osdmap.crush
        if crush is None or not self.crush_location:
            return -1
        key, parents = self._crush_parents
        if key != id(crush):
            parents = {}
            for b in crush.buckets:
                name = crush.names.get(b.id, "") if b is not None else ""
                if b is None or not name or "~" in name:
                    continue  # per-class shadow hierarchy
                for child in b.items:
                    parents.setdefault(child, b)
            self._crush_parents = (id(crush), parents)
        seen = 0
        while item in parents and seen < 64:
            b = parents[item]
            if (crush.type_names.get(b.type, ""), crush.names.get(b.id, "")) in self.crush_location:
                return b.type
            item, seen = b.id, seen + 1
        return -1

    def _msgr_modes(self) -> tuple[str, ...]:
        return self.monc.config.msgr_modes(for_mon=False)

    def choose_addr(self, addrs):
        """The address of an OSD to use: v2, or v1 for ``ms_mode=legacy`` and for OSDs
        that publish only v1 (:func:`pyceph.msgr.connection.choose_addr`)."""
        return choose_addr(addrs, self._msgr_modes())

    def _get_session(self, osd: int) -> OSDSession:
        s = self.sessions.get(osd)
        if s is None or s.closed:
            addrs = self.osdmap.get_addrs(osd)
            addr = self.choose_addr(addrs)
            if addr is None:
                raise InvalidArgumentError(
                    f"osd.{osd} has no address usable with ms_mode {'/'.join(self._msgr_modes())} ({addrs})")
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
    def _start_request(
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
        linger: LingerRequest | None = None,
        no_resend: bool = False,
    ) -> OSDRequest:
        """Create, target and send (or park) a request; its ``future`` gets the reply.
        Raises Blocklisted, PoolNotFound, or -108 after close."""
        if self._closing:
            raise make_ex(-108, "client is shut down")
        if self.blocklisted is not None:
            raise Blocklisted(str(self.blocklisted))
        self._tid += 1
        flags = O.CEPH_OSD_FLAG_KNOWN_REDIR
        if write:
            flags |= O.CEPH_OSD_FLAG_WRITE | O.CEPH_OSD_FLAG_ONDISK
        else:
            flags |= O.CEPH_OSD_FLAG_READ | (0 if linger is not None else self.read_flags)
        now = time.time()
        loop = asyncio.get_running_loop()
        req = OSDRequest(
            tid=self._tid, pool=pool, oid=oid, nspace=nspace, key=key, ops=ops, flags=flags,
            snapid=snapid,
            snap_seq=snapc[0] if snapc else 0,
            snaps=list(snapc[1]) if snapc else [],
            mtime=(int(now), int((now % 1) * 1e9)) if write else (0, 0),
            start=loop.time(),
            linger=linger,
            no_resend=no_resend,
        )
        req.future = loop.create_future()
        self._calc_target(req)
        if write and req.paused and self.abort_on_full and self._is_full(req.pool):
            raise NoSpace(f"pool {req.pool} is full or the cluster is (abort_on_full)")
        self.requests[req.tid] = req
        self._ensure_ticker()
        try:
            self._send(req)
        except BaseException:
            self._forget(req)
            raise
        return req

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
        req = self._start_request(pool, oid, ops, write=write, nspace=nspace, key=key,
                                  snapid=snapid, snapc=snapc)
        try:
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

    # -- linger requests: watch / notify (kernel linger_submit, send_linger, ...) ---------
    def _new_linger(self, pool: int, oid: str, *, is_watch: bool, nspace: str, key: str,
                    timeout: int, **kw) -> LingerRequest:
        if self._closing:
            raise make_ex(-108, "client is shut down")
        if self.blocklisted is not None:
            raise Blocklisted(str(self.blocklisted))
        self._linger_id += 1
        flags = O.CEPH_OSD_FLAG_WRITE if is_watch else O.CEPH_OSD_FLAG_READ
        t = OSDRequest(tid=0, pool=pool, oid=oid, nspace=nspace, key=key, ops=[], flags=flags)
        lreq = LingerRequest(linger_id=self._linger_id, is_watch=is_watch, t=t, timeout=timeout, **kw)
        lreq.registered = asyncio.get_running_loop().create_future()
        lreq.registered.add_done_callback(_consume)
        return lreq

    def _linger_event(self, lreq: LingerRequest, event: str, level: int = logging.INFO,
                      detail: str = "") -> None:
        """One structured log line per linger event (``event=linger_<what>``)."""
        t = lreq.t
        log.log(level, "%s %d on %s/%s: %s%s", "watch" if lreq.is_watch else "notify",
                lreq.linger_id, t.pool, t.oid, event, f" ({detail})" if detail else "",
                extra={"event": f"linger_{event}", "linger_id": lreq.linger_id, "oid": t.oid,
                       "pool": t.pool, "osd": t.osd, "gen": lreq.register_gen, "detail": detail})

    def _linger_submit(self, lreq: LingerRequest) -> None:
        """Target, link to the primary's session and send the first registration."""
        self.lingers[lreq.linger_id] = lreq
        try:
            self._linger_calc_target(lreq)
            self._linger_link_target(lreq)
        except Error as e:
            self.lingers.pop(lreq.linger_id, None)
            self._linger_link(lreq, None)
            raise e
        self._send_linger(lreq)

    def _linger_calc_target(self, lreq: LingerRequest) -> bool:
        """``_calc_target`` for the linger; also True when the acting set changed (a new
        interval: the primary drops its in-memory watches and wants a RECONNECT)."""
        t = lreq.t
        changed = self._calc_target(t)
        hit = self._targets.get((t.pool, t.oid, t.key, t.nspace))
        acting = tuple(hit[2]) if hit is not None else ()
        if lreq.acting and acting != lreq.acting:
            changed = True
        lreq.acting = acting
        return changed

    def _linger_link(self, lreq: LingerRequest, s: OSDSession | None) -> None:
        old = lreq.session
        if old is s:
            return
        if old is not None:
            old.lingers.pop(lreq.linger_id, None)
            old.last_used = old.loop.time()
        lreq.session = s
        if s is not None:
            s.lingers[lreq.linger_id] = lreq
            s.last_used = s.loop.time()

    def _linger_link_target(self, lreq: LingerRequest) -> OSDSession | None:
        t = lreq.t
        if t.osd < 0 or t.paused:
            self._linger_link(lreq, None)
            self._want_map(onetime=False)
            return None
        s = self._get_session(t.osd)
        self._linger_link(lreq, s)
        return s

    def _linger_busy(self, lreq: LingerRequest) -> bool:
        r = lreq.reg_req
        return r is not None and r.future is not None and not r.future.done()

    def _linger_retarget(self, lreq: LingerRequest, why: str) -> None:
        """The linger's pg/primary/interval changed (or its session went away): follow it
        and re-register there, unless a registration in flight is being resent anyway."""
        try:
            s = self._linger_link_target(lreq)
        except Error as e:
            self._linger_error(lreq, e)
            return
        self._linger_event(lreq, "retarget", detail=f"{why}; osd.{lreq.t.osd}")
        if self._linger_busy(lreq) or not lreq.committed or s is None:
            return
        if not lreq.is_watch and lreq.finished is not None and lreq.finished.done():
            return
        self._send_linger(lreq)

    def _kick_lingers(self, s: OSDSession) -> None:
        """New connection for ``s``: re-register each linger it serves (kernel
        ``kick_osd_requests``); a registration in flight was just resent by ``_kick``."""
        for lid in sorted(s.lingers):
            lreq = s.lingers.get(lid)
            if lreq is None or lreq.canceled or lreq.last_error is not None:
                continue
            if self._linger_busy(lreq) or not lreq.committed:
                continue
            if not lreq.is_watch and lreq.finished is not None and lreq.finished.done():
                continue
            self._linger_event(lreq, "session_reset", detail=f"osd.{s.osd} reconnecting")
            self._send_linger(lreq)

    def _send_linger(self, lreq: LingerRequest) -> None:
        """Send the registration: WATCH (first), RECONNECT with ``register_gen`` + 1 (a
        committed watch), or NOTIFY (a notify; a resend makes a new notify_id)."""
        if lreq.canceled or lreq.last_error is not None or self._closing:
            return
        old = lreq.reg_req
        if old is not None:
            self._cancel_request(old)
        lreq.reg_req = None
        t = lreq.t
        if lreq.is_watch and lreq.committed:
            lreq.register_gen += 1
            lreq.reconnects += 1
            ops = [O.watch(lreq.linger_id, O.CEPH_OSD_WATCH_OP_RECONNECT, lreq.register_gen, lreq.timeout)]
            what = "reconnect"
        elif lreq.is_watch:
            ops = [O.watch(lreq.linger_id, O.CEPH_OSD_WATCH_OP_WATCH, 0, lreq.timeout)]
            what = "register"
        else:
            lreq.notify_id = 0
            ops = [O.notify(lreq.linger_id, lreq.payload, lreq.timeout)]
            what = "notify"
        try:
            req = self._start_request(t.pool, t.oid, ops, write=lreq.is_watch, nspace=t.nspace, key=t.key,
                                      snapc=lreq.snapc if lreq.is_watch else None, linger=lreq)
        except Error as e:
            self._linger_error(lreq, e)
            return
        lreq.reg_req = req
        self._linger_event(lreq, what, logging.DEBUG if what != "reconnect" else logging.INFO,
                           detail=f"tid {req.tid}")
        req.future.add_done_callback(lambda f, lreq=lreq, req=req: self._linger_reg_done(lreq, req, f))

    def _linger_reg_done(self, lreq: LingerRequest, req: OSDRequest, fut: asyncio.Future) -> None:
        if fut.cancelled() or lreq.canceled or req is not lreq.reg_req:
            return
        lreq.reg_req = None
        self._forget(req)
        exc = fut.exception()
        if exc is not None:
            self._linger_error(lreq, exc if isinstance(exc, Error) else make_ex(-5, str(exc)))
            return
        reply = fut.result()
        r = _reply_result(reply)
        reconnect = lreq.is_watch and req.ops[0].watch[2] == O.CEPH_OSD_WATCH_OP_RECONNECT
        if r < 0:
            r = _normalize_watch_error(r) if reconnect else r
            what = "reconnect" if reconnect else ("watch" if lreq.is_watch else "notify")
            self._linger_error(lreq, make_ex(r, f"{what} {lreq.linger_id} on {req.oid} (osd.{req.osd})"))
            return
        lreq.watch_valid_thru = req.stamp or req.start
        if not lreq.committed:
            lreq.committed = True
        if not lreq.is_watch:
            out = reply.ops[0].outdata if reply.ops else b""
            if len(out) >= 8:
                lreq.notify_id = int.from_bytes(out[:8], "little")
        if lreq.registered is not None and not lreq.registered.done():
            lreq.registered.set_result(None)
        self._linger_event(lreq, "reconnected" if reconnect else "committed",
                           logging.INFO if reconnect else logging.DEBUG,
                           detail=f"osd.{req.osd}" + ("" if lreq.is_watch else f" notify_id {lreq.notify_id}"))
        if lreq.is_watch and lreq.ping_timer is None:
            self._schedule_ping(lreq)

    # pings
    def _schedule_ping(self, lreq: LingerRequest) -> None:
        if lreq.ping_timer is not None:
            lreq.ping_timer.cancel()
        # timeout 0: the OSD's osd_client_watch_timeout (30 s by default)
        interval = min(self.ping_interval, max(0.01, (lreq.timeout or 30) / 2))
        lreq.ping_timer = asyncio.get_running_loop().call_later(interval, self._ping_due, lreq)

    def _ping_due(self, lreq: LingerRequest) -> None:
        lreq.ping_timer = None
        if lreq.canceled or self._closing or lreq.last_error is not None:
            return
        self._schedule_ping(lreq)
        s = lreq.session
        if not lreq.committed or s is None or s.con is None or s.state != "open" or self._linger_busy(lreq):
            return
        if self.osdmap.test_flag(CEPH_OSDMAP_PAUSERD):
            return
        self._send_ping(lreq)

    def _send_ping(self, lreq: LingerRequest) -> None:
        """WATCH_OP_PING with the current ``register_gen`` (kernel ``send_linger_ping``);
        a ping is never resent: a fault or retarget drops it (the watch re-registers)."""
        old = lreq.ping_req
        if old is not None:
            self._cancel_request(old)
        t = lreq.t
        try:
            req = self._start_request(
                t.pool, t.oid, [O.watch(lreq.linger_id, O.CEPH_OSD_WATCH_OP_PING, lreq.register_gen)],
                write=True, nspace=t.nspace, key=t.key, snapc=lreq.snapc, linger=lreq, no_resend=True)
        except Error as e:
            if isinstance(e, Blocklisted):
                self._linger_error(lreq, e)
            return
        lreq.ping_sent = req.start
        lreq.ping_req = req
        lreq.pings += 1
        req.future.add_done_callback(lambda f, lreq=lreq, req=req: self._linger_ping_done(lreq, req, f))

    def _linger_ping_done(self, lreq: LingerRequest, req: OSDRequest, fut: asyncio.Future) -> None:
        if fut.cancelled() or lreq.canceled or req is not lreq.ping_req:
            return
        lreq.ping_req = None
        self._forget(req)
        exc = fut.exception()
        if exc is not None:
            if isinstance(exc, Blocklisted):
                self._linger_error(lreq, exc)
            return  # dropped by a fault/retarget: the re-registration takes over
        if req.ops[0].watch[3] != lreq.register_gen:
            return  # pong for an older registration
        r = _reply_result(fut.result())
        if r == 0:
            lreq.watch_valid_thru = req.start
            return
        # ETIMEDOUT: the OSD's watch lost its connection; ENOTCONN: the watch is gone.
        # Either way try a RECONNECT; if that fails, on_error.
        self._linger_event(lreq, "ping_failed", logging.WARNING,
                           detail=f"osd.{req.osd}: {_errno_name(r)}; re-registering")
        if not self._linger_busy(lreq):
            self._send_linger(lreq)

    def _handle_watch_notify(self, s: OSDSession, m: MWatchNotify) -> None:
        """MWatchNotify (kernel ``handle_watch_notify``): NOTIFY -> ``on_notify``;
        DISCONNECT -> re-register; NOTIFY_COMPLETE -> finish that notify."""
        lreq = self.lingers.get(m.cookie)
        if lreq is None or lreq.canceled:
            log.info("osd.%d: watch-notify opcode %d for unknown cookie %d (notify_id %d); ignored",
                     s.osd, m.opcode, m.cookie, m.notify_id,
                     extra={"event": "linger_unknown_cookie", "cookie": m.cookie, "opcode": m.opcode})
            return
        if m.opcode == CEPH_WATCH_EVENT_DISCONNECT:
            self._linger_event(lreq, "disconnect", logging.WARNING, detail=f"from osd.{s.osd}")
            if lreq.is_watch and lreq.committed and lreq.last_error is None and not self._linger_busy(lreq):
                self._send_linger(lreq)
        elif not lreq.is_watch:
            if m.opcode != CEPH_WATCH_EVENT_NOTIFY_COMPLETE:
                return
            if lreq.notify_id and lreq.notify_id != m.notify_id:
                log.debug("notify %d: completion of notify_id %d != %d; ignored",
                          lreq.linger_id, m.notify_id, lreq.notify_id)
            elif lreq.finished is not None and not lreq.finished.done():
                self._linger_event(lreq, "notify_complete", logging.DEBUG,
                                   detail=f"notify_id {m.notify_id} rc {m.return_code}")
                lreq.finished.set_result((m.return_code, m.data))
        elif m.opcode == CEPH_WATCH_EVENT_NOTIFY:
            self._linger_event(lreq, "notify", logging.DEBUG,
                               detail=f"notify_id {m.notify_id} from client.{m.notifier_gid}, "
                                      f"{len(m.payload)} bytes")
            if lreq.on_notify is None:
                return
            try:
                lreq.on_notify(m.notify_id, m.cookie, m.notifier_gid, m.payload)
            except Exception:
                log.exception("watch %d: on_notify callback failed", lreq.linger_id)

    def _linger_error(self, lreq: LingerRequest, exc: Error) -> None:
        """The linger failed for good: ``on_error`` for a committed watch, else the
        waiting watch()/notify() call raises ``exc``."""
        if lreq.canceled or lreq.last_error is not None:
            return
        lreq.last_error = exc
        if lreq.ping_timer is not None:
            lreq.ping_timer.cancel()
            lreq.ping_timer = None
        for r in (lreq.reg_req, lreq.ping_req):
            if r is not None:
                self._cancel_request(r)
        lreq.reg_req = lreq.ping_req = None
        self._linger_event(lreq, "error", logging.ERROR if lreq.committed else logging.INFO, detail=str(exc))
        if lreq.is_watch and lreq.committed:
            if lreq.on_error is not None:
                try:
                    lreq.on_error(lreq.linger_id, exc)
                except Exception:
                    log.exception("watch %d: on_error callback failed", lreq.linger_id)
            return
        for fut in (lreq.registered, lreq.finished):
            if fut is not None and not fut.done():
                fut.set_exception(exc)
                break

    def _linger_cancel(self, lreq: LingerRequest, exc: Error | None = None) -> None:
        """Forget the linger (kernel ``linger_cancel``): no more pings or re-registration."""
        if lreq.canceled:
            return
        lreq.canceled = True
        if self.lingers.get(lreq.linger_id) is lreq:
            del self.lingers[lreq.linger_id]
        self._linger_link(lreq, None)
        if lreq.ping_timer is not None:
            lreq.ping_timer.cancel()
            lreq.ping_timer = None
        for r in (lreq.reg_req, lreq.ping_req):
            if r is not None:
                self._cancel_request(r)
        lreq.reg_req = lreq.ping_req = None
        for fut in (lreq.registered, lreq.finished):
            if fut is not None and not fut.done():
                if exc is not None:
                    fut.set_exception(exc)
                    exc = None  # the caller waits on the first pending one only
                else:
                    fut.cancel()

    def _cancel_request(self, req: OSDRequest) -> None:
        self._forget(req)
        if req.future is not None and not req.future.done():
            req.future.cancel()

    def _drop_request(self, req: OSDRequest, why: str) -> None:
        self._forget(req)
        if req.future is not None and not req.future.done():
            req.future.set_exception(ConnectionShutdown(f"tid {req.tid} dropped: {why}"))

    async def _wait_registered(self, lreq: LingerRequest, what: str) -> None:
        t = self.request_timeout
        try:
            if t and t > 0:
                await asyncio.wait_for(asyncio.shield(lreq.registered), t)
            else:
                await lreq.registered
        except asyncio.TimeoutError:
            raise TimedOut(f"{what} {lreq.linger_id} on {lreq.t.oid}: no reply within {t:g}s") from None

    async def watch(self, pool: int, oid: str, on_notify, on_error, *, timeout: float = 30,
                    nspace: str = "", key: str = "", snapc: tuple[int, list[int]] | None = None) -> int:
        """Register a watch on ``oid`` (CEPH_OSD_OP_WATCH, WATCH_OP_WATCH) and return its
        cookie once the OSD committed it.  ``timeout`` seconds: the OSD drops the watch
        when it hears no ping for that long (0 = the OSD's osd_client_watch_timeout).

        ``on_notify(notify_id, cookie, notifier_gid, payload)`` runs on the event loop for
        each notify; ``on_error(cookie, exc)`` once, when the watch is lost for good (a
        re-registration failed: ENOTCONN, Blocklisted ...).  Session resets, primary or
        interval changes and DISCONNECT events re-register with WATCH_OP_RECONNECT.
        Raises the registration's error (ObjectNotFound, Blocklisted, TimedOut ...).
        """
        tmo = max(0, int(-(-timeout // 1))) if timeout else 0
        lreq = self._new_linger(pool, oid, is_watch=True, nspace=nspace, key=key, timeout=tmo,
                                snapc=snapc, on_notify=on_notify, on_error=on_error)
        self._linger_submit(lreq)
        try:
            await self._wait_registered(lreq, "watch")
        except BaseException:
            self._linger_cancel(lreq)
            raise
        self._linger_event(lreq, "watch_registered", detail=f"osd.{lreq.t.osd}")
        return lreq.linger_id

    def _get_linger(self, cookie: int) -> LingerRequest:
        lreq = self.lingers.get(cookie)
        if lreq is None or not lreq.is_watch:
            raise make_ex(-_ENOTCONN, f"no watch with cookie {cookie}")
        return lreq

    async def unwatch(self, cookie: int) -> None:
        """Stop pinging/re-registering and remove the watch (WATCH_OP_UNWATCH, as
        ``ceph_osdc_unwatch``).  A watch already gone on the OSD (ENOENT/ENOTCONN) is not
        an error.  Raises NotConnected for an unknown cookie, Blocklisted ..."""
        lreq = self._get_linger(cookie)
        self._linger_cancel(lreq)
        self._linger_event(lreq, "unwatch")
        t = lreq.t
        reply = await self.submit(t.pool, t.oid, [O.watch(cookie, O.CEPH_OSD_WATCH_OP_UNWATCH)],
                                  write=True, nspace=t.nspace, key=t.key, snapc=lreq.snapc)
        r = _reply_result(reply)
        if r < 0 and r not in (-_ENOENT, -_ENOTCONN):
            raise make_ex(r, f"unwatch {cookie} on {t.oid}")

    def watch_check(self, cookie: int) -> float:
        """Seconds since the last ping (or registration) the OSD acknowledged
        (``rados_watch_check``).  Raises the watch's error if it is lost, NotConnected
        for an unknown cookie."""
        lreq = self._get_linger(cookie)
        if lreq.last_error is not None:
            raise lreq.last_error
        return max(0.0, self._now() - lreq.watch_valid_thru)

    async def notify(self, pool: int, oid: str, payload: bytes = b"", timeout: float = 5.0, *,
                     nspace: str = "", key: str = "") -> tuple[dict[tuple[int, int], bytes], list[tuple[int, int]]]:
        """Notify every watcher of ``oid`` and wait for NOTIFY_COMPLETE (``ceph_osdc_notify``).

        ``timeout`` seconds (rounded up; the OSD gives up on silent watchers after it).
        Returns ``(acks, timeouts)``: ``{(notifier gid, cookie): reply payload}`` and
        ``[(gid, cookie)]`` of watchers that did not ack (the OSD's -ETIMEDOUT is not
        raised: the timeouts list says it).  Raises ObjectNotFound, Blocklisted,
        TimedOut (no completion within 2 x timeout, as the kernel) ...
        """
        tmo = max(1, int(-(-timeout // 1)))
        lreq = self._new_linger(pool, oid, is_watch=False, nspace=nspace, key=key, timeout=tmo,
                                payload=bytes(payload))
        lreq.finished = asyncio.get_running_loop().create_future()
        lreq.finished.add_done_callback(_consume)
        self._linger_submit(lreq)
        try:
            await self._wait_registered(lreq, "notify")
            try:
                rc, data = await asyncio.wait_for(asyncio.shield(lreq.finished), 2 * tmo)
            except asyncio.TimeoutError:
                raise TimedOut(f"notify on {oid}: no completion within {2 * tmo}s") from None
        finally:
            self._linger_cancel(lreq)
        if rc < 0 and rc != -_ETIMEDOUT:
            raise make_ex(rc, f"notify on {oid}")
        return O.decode_notify_response(data)

    def _forget(self, req: OSDRequest) -> None:
        self.requests.pop(req.tid, None)
        self._link(req, None)

    async def close(self) -> None:
        self._closing = True
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for lreq in list(self.lingers.values()):
            self._linger_cancel(lreq, make_ex(-108, "client shut down"))
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
            "lingers": len(self.lingers),
            "homeless": sum(1 for r in reqs if r.session is None and not r.paused),
            "paused": sum(1 for r in reqs if r.paused),
            "resends": self.resends,
            "request_timeout": self.request_timeout,
            "keepalive_interval": self.keepalive_interval,
            "read_flags": self.read_flags,
            "replica_reads": self.replica_reads,
            "replica_bounces": self.replica_bounces,
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
        if msg.type == MWatchNotify.MSG_TYPE:
            self._handle_watch_notify(s, MWatchNotify.from_message(msg))
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
            if req.flags & _REPLICA_READS:
                self.replica_bounces += 1
                req.flags &= ~_REPLICA_READS
                req.pgid = None
                self._calc_target(req)
            self._send(req)
            return
        if req.is_read and req.flags & _REPLICA_READS and s.osd != self._primary_of(req):
            self.replica_reads += 1
        if r == -_EBLOCKLISTED:
            self._set_blocklisted(Blocklisted(
                f"osd.{s.osd} refused {self.monc.auth.entity_name} (global_id {self.monc.global_id}, "
                f"addr {self.monc.client_addr}): this client is blocklisted"
            ))
            return
        req.future.set_result(reply)

    def _is_full(self, pool: int) -> bool:
        return self._was_full or pool in self._full_pools

    def _abort_full_writes(self) -> None:
        """``ceph_osdc_abort_on_full``: fail writes to a full pool or cluster with ENOSPC."""
        for req in list(self.requests.values()):
            if req.is_write and req.linger is None and req.future is not None and not req.future.done() \
                    and self._is_full(req.pool):
                req.future.set_exception(NoSpace(f"pool {req.pool} is full or the cluster is (abort_on_full)"))
                self._link(req, None)

    def _primary_of(self, req: OSDRequest) -> int:
        hit = self._targets.get((req.pool, req.oid, req.key, req.nspace))
        return hit[3] if hit is not None else req.osd

    def _set_blocklisted(self, exc: Blocklisted) -> None:
        if self.blocklisted is None:
            log.error("%s", exc)
            self.blocklisted = exc
        for req in list(self.requests.values()):
            if req.future is not None and not req.future.done():
                req.future.set_exception(Blocklisted(str(exc)))
        for lreq in list(self.lingers.values()):
            self._linger_error(lreq, Blocklisted(str(exc)))

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
        if self.abort_on_full and (global_full or full_now):
            self._abort_full_writes()
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
        relink: dict[int, LingerRequest] = {}
        for lreq in list(self.lingers.values()):
            if lreq.canceled:
                continue
            try:
                changed = self._linger_calc_target(lreq)
            except PoolNotFound as e:
                self._linger_error(lreq, e)
                continue
            if changed or skipped:
                relink[lreq.linger_id] = lreq
        for osd, s in list(self.sessions.items()):
            if not m.is_up(osd) or self.choose_addr(m.get_addrs(osd)) != s.addr:
                log.info("osd.%d %s: %s in osdmap epoch %d; closing its session", osd, s.addr,
                         "down" if not m.is_up(osd) else "moved", m.epoch)
                for req in list(s.requests.values()):
                    need[req.tid] = req
                    self._link(req, None)
                for lreq in list(s.lingers.values()):
                    relink[lreq.linger_id] = lreq
                    self._linger_link(lreq, None)
                self._close_session(s)
        for tid in sorted(need):
            req = need[tid]
            if req.future is None or req.future.done():
                continue
            if req.no_resend and req.attempts:
                self._drop_request(req, f"retargeted in osdmap epoch {m.epoch}")
                continue
            try:
                self._send(req)
            except Error as e:
                req.future.set_exception(e)
                self._link(req, None)
        if skipped and need:
            log.info("osdmap %d -> %d skipped epochs: resent %d requests", prev, m.epoch, len(need))
        for lid in sorted(relink):
            lreq = relink[lid]
            if lreq.canceled or lreq.last_error is not None:
                continue
            self._linger_retarget(lreq, f"osdmap epoch {m.epoch}")

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
            if req.no_resend and req.attempts:
                self._drop_request(req, "session reconnected")
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
        if con is not None and not con.closed:
            s.loop.create_task(con.close())
        s.auth_failed = isinstance(exc, AuthError)
        if s.auth_failed and not s.ticket_renewed:
            # The OSD may not accept our ticket (rotated service keys): get a new one once.
            s.ticket_renewed = True
            self.monc.auth.invalidate_ticket(ENTITY_TYPE_OSD)
            self.monc.renew_tickets()
        for req in [r for r in s.requests.values() if r.no_resend]:
            self._drop_request(req, f"osd.{s.osd} session fault")
        if not s.requests and not s.lingers:
            log.info("osd.%d %s: fault with no requests (%s); closing session", s.osd, s.addr, exc)
            self._close_session(s)
            return
        s.backoff = self.backoff_min if s.backoff == 0 else min(2 * s.backoff, self.backoff_max)
        delay = s.backoff * random.uniform(0.5, 1.5)
        s.state = "backoff"
        log.warning("osd.%d %s: fault #%d (%s); %d requests and %d watches wait, reconnecting in %.2fs",
                    s.osd, s.addr, s.faults, s.last_fault, len(s.requests), len(s.lingers), delay)
        s._retry = s.loop.call_later(delay, self._reopen, s)
        # The OSD may be down or have moved: a newer map tells us where to go.
        self._want_map()

    def _reopen(self, s: OSDSession) -> None:
        s._retry = None
        if s.closed or self._closing or s.con is not None:
            return
        if not s.requests and not s.lingers:
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
            if s.requests or s.lingers:
                s.last_used = now
                if con is None or not con.ready:
                    continue
                # A session serving a watch is probed on every tick (kernel handle_timeout).
                laggy = any(r.sent_con is con and r.stamp <= laggy_cut for r in s.requests.values())
                if not laggy and not s.lingers:
                    s.ka_pending_since = None
                    continue
                want_map = want_map or laggy
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
        if want_map or any(r.session is None for r in self.requests.values()) or any(
                lr.session is None and not lr.canceled and lr.last_error is None for lr in self.lingers.values()):
            self._want_map()

    def _want_map(self, onetime: bool = True) -> None:
        """Subscribe to newer OSDMaps; a mon session being re-established resubscribes
        by itself, so failing here is not an error."""
        try:
            self.monc.request_osdmap(onetime=onetime)
        except Error as e:
            log.debug("osdmap request: %s", e)
