"""OSDClient state logic (retarget, resend, pause/full, faults, keepalive, timeouts)
against a scripted OSDMap and fake connections: no network, driven step by step.

The fakes stand in for what the OSDClient uses of the MonClient, the OSDMap and the
messenger's Connection; the expected behaviour is krbd's (net/ceph/osd_client.c:
calc_target, scan_requests, kick_requests, osd_fault, handle_timeout,
handle_osds_timeout) and the OSD's (a full pool drops writes; an op from before an
interval change is dropped; a resent write keeps its tid so the OSD can dedup it).
"""

from __future__ import annotations

import asyncio
import functools

import pytest

from pyceph.config import ConnectMap, ClientConfig, connect_map_path
from pyceph.errors import (
    AuthError, Blocklisted, ConfigError, ConnectionShutdown, FeatureNotSupported, NotConnected, PoolNotFound,
    TimedOut,
)
from pyceph.msgr.protocol import State
from pyceph.osd import ops as O
from pyceph.osd.client import OSDClient
from pyceph.osd.messages import MOSDOp, MOSDOpReply
from pyceph.osdmap.osdmap import CEPH_OSDMAP_FULL, CEPH_OSDMAP_PAUSERD, CEPH_OSDMAP_PAUSEWR
from pyceph.osdmap.pool import FLAG_FULL, FLAG_FULL_QUOTA, FLAG_HASHPSPOOL, PgPool
from pyceph.types import (
    ADDR_TYPE_ANY,
    ADDR_TYPE_MSGR2,
    ENTITY_TYPE_OSD,
    EntityAddr,
    EntityAddrvec,
    EntityName,
    PgT,
)

ALL_FEATURES = (1 << 64) - 1
POOL = 1


def aio(fn):
    """Run an async test body in a fresh event loop (no pytest-asyncio here)."""

    @functools.wraps(fn)
    def wrapper(*args, **kw):
        return asyncio.run(asyncio.wait_for(fn(*args, **kw), 10))

    return wrapper


# --------------------------------------------------------------------------- fakes


class FakeConfig:
    def __init__(self, **opts):
        self.opts = {
            "osd_keepalive_interval": 1000.0,  # no background ticks unless a test drives them
            "osd_keepalive_timeout": 2.0,
            "osd_idle_ttl": 4000.0,
            "osd_reconnect_backoff_min": 0.01,
            "osd_reconnect_backoff_max": 0.04,
            **opts,
        }

    def get(self, key, default=None):
        v = self.opts.get(key, default)
        return None if v is None else str(v)

    def get_float(self, key, default=0.0):
        return float(self.opts.get(key, default))

    def msgr_modes(self, for_mon):
        return ("crc",)


class FakeMap:
    """Placement by table: object -> raw seed; pg seed -> (acting, primary)."""

    def __init__(self, n_osds=3, pg_num=8):
        self.epoch = 10
        self.flags = 0
        self.pools = {POOL: PgPool(id=POOL, name="rbd", size=3, min_size=2, pg_num=pg_num, pgp_num=pg_num,
                                   flags=FLAG_HASHPSPOOL)}
        self.seeds: dict[str, int] = {}
        self.placement: dict[int, tuple[list[int], int]] = {}
        self.up = set(range(n_osds))
        self.ports = {o: 6800 + o for o in range(n_osds)}
        self.blocklist: dict = {}

    # what OSDClient calls
    def object_locator_to_pg(self, pool, oid, key="", nspace=""):
        return PgT(pool, self.seeds.get(oid, 0))

    def raw_pg_to_pg(self, raw):
        return PgT(raw.pool, raw.seed % self.pools[raw.pool].pg_num)

    def pg_to_up_acting_osds(self, pg):
        acting, primary = self.placement.get(pg.seed, ([0, 1, 2], 0))
        return list(acting), primary, list(acting), primary

    def is_up(self, osd):
        return osd in self.up

    def get_addrs(self, osd):
        return EntityAddrvec((EntityAddr(ADDR_TYPE_MSGR2, 1000 + osd, "127.0.0.1", self.ports[osd]),))

    def test_flag(self, f):
        return bool(self.flags & f)

    @property
    def flag_string(self):
        return hex(self.flags)

    # test helpers
    def place(self, oid, seed, primary, acting=None):
        self.seeds[oid] = seed
        self.placement[seed % self.pools[POOL].pg_num] = (acting or [primary], primary)


class FakeAuth:
    entity_name = EntityName.parse("client.admin")

    def __init__(self):
        self.invalidated: list[int] = []

    def authorizer_hooks(self, service):
        return object()

    def invalidate_ticket(self, service):
        self.invalidated.append(service)


class FakeMonc:
    def __init__(self, osdmap, **opts):
        self.config = FakeConfig(**opts)
        self.auth = FakeAuth()
        self.osdmap = osdmap
        self.global_id = 4242
        self.my_addr = EntityAddr(ADDR_TYPE_ANY, 77)
        self.client_addr = EntityAddr(ADDR_TYPE_ANY, 77, "127.0.0.1", 0)
        self.map_requests = 0
        self.renewals = 0
        self.listeners = []
        self.ticket_listeners = []

    def connect_addr(self, addr):
        return None

    def request_osdmap(self, onetime=False):
        self.map_requests += 1

    def add_osdmap_listener(self, fn):
        self.listeners.append(fn)

    def add_tickets_listener(self, fn):
        self.ticket_listeners.append(fn)

    def renew_tickets(self):
        self.renewals += 1
        return True

    def _features(self):
        return ALL_FEATURES

    def new_map(self, epoch_step=1):
        self.osdmap.epoch += epoch_step
        for fn in self.listeners:
            fn(self.osdmap)


class FakeCon:
    """The Connection surface the OSDClient uses.  ``connect()`` obeys the class-level
    script ``FakeCon.connect_results`` (an exception to raise, or None = succeed)."""

    made: list["FakeCon"] = []
    connect_results: list = []
    gate: asyncio.Event | None = None  # when set, connect() waits for it (a slow handshake)

    def __init__(self, peer_addr, ops, *, peer_type, global_id, my_addr, connect_addr):
        assert peer_type == ENTITY_TYPE_OSD
        self.peer_addr = peer_addr
        self.ops = ops
        self.global_id = global_id
        self.connect_addr = connect_addr
        self.state = State.BANNER
        self.proto = "msgr2"
        self.features = 0
        self.sent: list[MOSDOp] = []
        self.keepalives = 0
        self.connected_at = None
        self.last_rx_at = None
        self.last_keepalive_ack_at = None
        FakeCon.made.append(self)

    @property
    def ready(self):
        return self.state is State.READY

    @property
    def closed(self):
        return self.state is State.CLOSED

    @property
    def osd(self):
        return self.peer_addr.port - 6800

    async def connect(self, timeout):
        await asyncio.sleep(0)
        if FakeCon.gate is not None:
            await FakeCon.gate.wait()
        if FakeCon.connect_results:
            exc = FakeCon.connect_results.pop(0)
            if exc is not None:
                self.state = State.CLOSED
                raise exc
        self.state = State.READY
        self.connected_at = asyncio.get_running_loop().time()

    def send(self, msg):
        if self.state is State.CLOSED:
            raise ConnectionShutdown("closed")
        self.sent.append(MOSDOp.from_message(msg))

    def send_keepalive(self):
        self.keepalives += 1

    def abort(self, exc):
        self.state = State.CLOSED
        self.ops.fault(self, exc)

    async def close(self):
        self.state = State.CLOSED

    def drop(self, exc=None):
        """The peer went away (EOF/RST)."""
        self.abort(exc or ConnectionShutdown("connection closed by peer"))

    def reply(self, tid, result=0):
        op = next(o for o in reversed(self.sent) if o.tid == tid)
        r = MOSDOpReply(oid=op.oid, pgid=op.pgid.pgid, flags=0, result=result, osdmap_epoch=op.osdmap_epoch,
                        ops=[], tid=tid)
        self.last_rx_at = asyncio.get_running_loop().time()
        self.ops.dispatch(self, r.to_message(ALL_FEATURES))


@pytest.fixture
def env():
    FakeCon.made = []
    FakeCon.connect_results = []
    FakeCon.gate = None
    m = FakeMap()
    for i in range(8):
        m.place(f"obj{i}", i, i % 3, [i % 3, (i + 1) % 3, (i + 2) % 3])
    monc = FakeMonc(m)
    return m, monc


def make_osdc(monc, **opts) -> OSDClient:
    monc.config.opts.update(opts)
    return OSDClient(monc, connection_factory=FakeCon)


async def settle(n=5):
    for _ in range(n):
        await asyncio.sleep(0)


def cons_to(osd):
    return [c for c in FakeCon.made if c.osd == osd]


def start(osdc, oid, write=True, data=b"x", **kw):
    ops = [O.write(0, data)] if write else [O.read(0, 10)]
    return asyncio.ensure_future(osdc.submit(POOL, oid, ops, write=write, **kw))


# --------------------------------------------------------------------------- targeting


@aio
async def test_submit_goes_to_primary_and_completes(env):
    m, monc = env
    osdc = make_osdc(monc)
    t = start(osdc, "obj1")
    await settle()
    (con,) = FakeCon.made
    assert con.osd == 1 and con.global_id == 4242
    (op,) = con.sent
    assert op.retry_attempt == 0 and not op.flags & O.CEPH_OSD_FLAG_RETRY
    con.reply(op.tid)
    assert (await t).result == 0
    assert osdc.requests == {} and osdc.sessions[1].requests == {}
    await osdc.close()


@aio
async def test_primary_change_resends_same_tid_and_ignores_old_reply(env):
    m, monc = env
    osdc = make_osdc(monc)
    t = start(osdc, "obj1")
    await settle()
    old = cons_to(1)[0]
    tid = old.sent[0].tid
    m.place("obj1", 1, 2, [2, 0])
    monc.new_map()
    await settle()
    new = cons_to(2)[0]
    (op,) = new.sent
    assert op.tid == tid and op.retry_attempt == 1 and op.flags & O.CEPH_OSD_FLAG_RETRY
    old.reply(tid, result=-5)  # the old primary's late answer is not the request's
    assert not t.done()
    new.reply(tid)
    assert (await t).result == 0
    await osdc.close()


@aio
async def test_unchanged_target_is_not_resent(env):
    m, monc = env
    osdc = make_osdc(monc)
    t = start(osdc, "obj1")
    await settle()
    monc.new_map()
    await settle()
    assert len(cons_to(1)[0].sent) == 1
    t.cancel()
    await osdc.close()


@pytest.mark.parametrize("what", ["split", "force_resend", "skipped_epochs"])
@aio
async def test_interval_changes_the_osd_would_drop_are_resent(env, what):
    m, monc = env
    osdc = make_osdc(monc)
    t = start(osdc, "obj1")
    await settle()
    con = cons_to(1)[0]
    step = 1
    if what == "split":
        m.pools[POOL].pg_num = 16
        m.place("obj1", 1, 1)
    elif what == "force_resend":
        m.pools[POOL].last_force_op_resend = m.epoch + 1
    else:
        step = 3  # a full map: intermediate epochs unseen
    monc.new_map(step)
    await settle()
    assert [o.retry_attempt for o in con.sent] == [0, 1]
    t.cancel()
    await osdc.close()


@aio
async def test_no_primary_waits_for_a_map_then_sends(env):
    m, monc = env
    osdc = make_osdc(monc)
    m.placement[1] = ([], -1)
    t = start(osdc, "obj1")
    await settle()
    assert FakeCon.made == [] and monc.map_requests >= 1
    assert osdc.status()["homeless"] == 1
    monc.new_map()  # still no primary: nothing to send
    await settle()
    assert FakeCon.made == []
    m.place("obj1", 1, 0)
    monc.new_map()
    await settle()
    (con,) = FakeCon.made
    con.reply(con.sent[0].tid)
    assert (await t).result == 0
    await osdc.close()


@aio
async def test_pool_deleted_fails_request(env):
    m, monc = env
    osdc = make_osdc(monc)
    t = start(osdc, "obj1")
    await settle()
    del m.pools[POOL]
    monc.new_map()
    with pytest.raises(PoolNotFound):
        await t
    await osdc.close()


# --------------------------------------------------------------------------- pause / full


@pytest.mark.parametrize("flag,pool_flag", [
    (CEPH_OSDMAP_PAUSEWR, 0), (CEPH_OSDMAP_FULL, 0), (0, FLAG_FULL), (0, FLAG_FULL | FLAG_FULL_QUOTA),
])
@aio
async def test_writes_wait_while_paused_or_full_and_go_when_cleared(env, flag, pool_flag):
    m, monc = env
    osdc = make_osdc(monc)
    m.flags |= flag
    m.pools[POOL].flags |= pool_flag
    monc.new_map()
    w = start(osdc, "obj1")
    r = start(osdc, "obj1", write=False)
    await settle()
    (con,) = FakeCon.made
    assert [o.flags & O.CEPH_OSD_FLAG_READ for o in con.sent] == [O.CEPH_OSD_FLAG_READ]  # only the read
    assert osdc.status()["paused"] == 1
    monc.new_map()  # nothing changes: still held
    await settle()
    assert len(con.sent) == 1
    m.flags &= ~flag
    m.pools[POOL].flags &= ~pool_flag
    monc.new_map()  # same target, but no longer paused: must go now
    await settle()
    assert len(con.sent) == 2 and con.sent[1].flags & O.CEPH_OSD_FLAG_WRITE
    for op in con.sent:
        con.reply(op.tid)
    await asyncio.gather(w, r)
    await osdc.close()


@aio
async def test_pauserd_holds_reads_only(env):
    m, monc = env
    osdc = make_osdc(monc)
    m.flags |= CEPH_OSDMAP_PAUSERD
    monc.new_map()
    r = start(osdc, "obj2", write=False)
    w = start(osdc, "obj2")
    await settle()
    (con,) = FakeCon.made
    assert [bool(o.flags & O.CEPH_OSD_FLAG_WRITE) for o in con.sent] == [True]
    m.flags = 0
    monc.new_map()
    await settle()
    assert len(con.sent) == 2
    for op in con.sent:
        con.reply(op.tid)
    await asyncio.gather(w, r)
    await osdc.close()


@aio
async def test_writes_in_flight_when_pool_fills_are_resent_when_it_clears(env):
    # A full OSD drops a write without replying; once the flag clears the client resends.
    m, monc = env
    osdc = make_osdc(monc)
    w = start(osdc, "obj1")
    r = start(osdc, "obj1", write=False)
    await settle()
    (con,) = FakeCon.made
    m.pools[POOL].flags |= FLAG_FULL
    monc.new_map()
    await settle()
    assert len(con.sent) == 2
    m.pools[POOL].flags &= ~FLAG_FULL
    monc.new_map()
    await settle()
    resent = con.sent[2:]
    assert [(o.retry_attempt, bool(o.flags & O.CEPH_OSD_FLAG_WRITE)) for o in resent] == [(1, True)]
    for op in con.sent:
        con.reply(op.tid)
    await asyncio.gather(w, r)
    await osdc.close()


# --------------------------------------------------------------------------- faults


@aio
async def test_fault_reconnects_with_backoff_and_resends_in_tid_order(env):
    m, monc = env
    osdc = make_osdc(monc)
    tasks = [start(osdc, "obj1", data=bytes([i])) for i in range(3)]
    await settle()
    (c1,) = FakeCon.made
    tids = [o.tid for o in c1.sent]
    FakeCon.connect_results = [NotConnected("refused")] * 3
    loop = asyncio.get_running_loop()
    waits = []  # (backoff, seconds actually waited) at each reconnect
    reopen = osdc._reopen

    def spy(sess):
        waits.append((sess.backoff, loop.time() - sess.last_fault_at))
        reopen(sess)

    osdc._reopen = spy
    c1.drop()
    s = osdc.sessions[1]
    assert s.state == "backoff"
    while len(cons_to(1)) < 5:
        await asyncio.sleep(0.005)
    await settle()
    assert s.faults == 4
    assert [b for b, _ in waits] == pytest.approx([0.01, 0.02, 0.04, 0.04])  # doubling, capped
    for b, waited in waits:  # jitter: 0.5x .. 1.5x (+ timer slack)
        assert 0.5 * b - 0.002 <= waited <= 1.5 * b + 0.05
    c4 = cons_to(1)[-1]
    # Queued on each new connection as it opened: attempts 1..3 died with theirs.
    assert [(o.tid, o.retry_attempt) for o in c4.sent] == [(t, 4) for t in tids]
    assert all(o.flags & O.CEPH_OSD_FLAG_RETRY for o in c4.sent)
    assert s.backoff == 0 and s.resends == 12 and s.state == "open"
    for tid in tids:
        c4.reply(tid)
    await asyncio.gather(*tasks)
    await osdc.close()


@aio
async def test_new_request_during_reconnect_goes_after_resends(env):
    # Writes to one object must reach the OSD in tid order, also across a reconnect.
    m, monc = env
    osdc = make_osdc(monc, osd_reconnect_backoff_min=0.05, osd_reconnect_backoff_max=0.05)
    first = [start(osdc, "obj1", data=bytes([i])) for i in range(2)]
    await settle()
    (c1,) = FakeCon.made
    FakeCon.gate = asyncio.Event()
    c1.drop()
    late = start(osdc, "obj1", data=b"late")  # while the session backs off
    while len(cons_to(1)) < 2:
        await asyncio.sleep(0.005)
    later = start(osdc, "obj1", data=b"later")  # while the new connection handshakes
    await settle()
    assert osdc.sessions[1].state == "connecting"
    FakeCon.gate.set()
    await settle()
    c2 = cons_to(1)[1]
    assert [o.tid for o in c2.sent] == sorted(o.tid for o in c2.sent) and len(c2.sent) == 4
    assert [o.retry_attempt for o in c2.sent] == [1, 1, 0, 0]
    for o in c2.sent:
        c2.reply(o.tid)
    await asyncio.gather(*first, late, later)
    await osdc.close()


@aio
async def test_fault_without_requests_closes_session(env):
    m, monc = env
    osdc = make_osdc(monc)
    t = start(osdc, "obj1")
    await settle()
    (con,) = FakeCon.made
    con.reply(con.sent[0].tid)
    await t
    con.drop()
    await settle()
    assert 1 not in osdc.sessions and len(FakeCon.made) == 1
    await osdc.close()


@aio
async def test_osd_down_moves_requests_and_closes_session(env):
    m, monc = env
    osdc = make_osdc(monc)
    t = start(osdc, "obj1")
    await settle()
    old = cons_to(1)[0]
    m.up.discard(1)
    m.place("obj1", 1, 2)
    monc.new_map()
    await settle()
    assert 1 not in osdc.sessions and old.state is State.CLOSED
    new = cons_to(2)[0]
    new.reply(new.sent[0].tid)
    await t
    await osdc.close()


@aio
async def test_auth_failure_renews_ticket_once_and_reconnects_when_it_arrives(env):
    m, monc = env
    osdc = make_osdc(monc, osd_reconnect_backoff_min=30.0, osd_reconnect_backoff_max=60.0)
    FakeCon.connect_results = [AuthError("bad authorizer"), AuthError("bad authorizer")]
    t = start(osdc, "obj1")
    await settle()
    s = osdc.sessions[1]
    assert s.state == "backoff" and monc.auth.invalidated == [ENTITY_TYPE_OSD] and monc.renewals == 1
    for fn in monc.ticket_listeners:  # MAuthReply with new tickets: retry at once, not in 30 s
        fn()
    await settle()
    assert len(FakeCon.made) == 2 and s.state == "backoff"
    assert monc.auth.invalidated == [ENTITY_TYPE_OSD]  # not again for the same failure streak
    for fn in monc.ticket_listeners:
        fn()
    await settle()
    con = FakeCon.made[-1]
    assert s.state == "open"
    con.reply(con.sent[0].tid)
    await t
    await osdc.close()


@aio
async def test_feature_mismatch_backs_off_instead_of_spinning(env):
    m, monc = env
    osdc = make_osdc(monc, osd_reconnect_backoff_min=0.02, osd_reconnect_backoff_max=0.16)
    FakeCon.connect_results = [FeatureNotSupported("server requires features 0x1")] * 1000
    t = start(osdc, "obj1")
    await asyncio.sleep(0.5)
    # 0.02, 0.04, 0.08, 0.16, 0.16 ... (x0.5..1.5): a handful of tries in 0.5 s, not hundreds
    assert 3 <= len(FakeCon.made) <= 10
    assert monc.auth.invalidated == []  # not an auth problem: tickets left alone
    assert "FeatureNotSupported" in osdc.status()["sessions"][0]["last_fault"]
    t.cancel()
    await osdc.close()


@aio
async def test_blocklisted_reply_fails_everything_and_latches(env):
    m, monc = env
    osdc = make_osdc(monc)
    a, b = start(osdc, "obj1"), start(osdc, "obj2")
    await settle()
    con = cons_to(1)[0]
    con.reply(con.sent[0].tid, result=-108)
    for t in (a, b):
        with pytest.raises(Blocklisted):
            await t
    with pytest.raises(Blocklisted):
        await osdc.submit(POOL, "obj3", [O.read(0, 1)], write=False)
    await osdc.close()


@aio
async def test_blocklist_entry_in_osdmap_fails_requests(env):
    m, monc = env
    osdc = make_osdc(monc)
    t = start(osdc, "obj1")
    await settle()
    m.blocklist[EntityAddr(ADDR_TYPE_ANY, 99, "127.0.0.1", 0)] = (0, 0)  # someone else
    monc.new_map()
    await settle()
    assert not t.done()
    m.blocklist[EntityAddr(ADDR_TYPE_ANY, 77, "127.0.0.1", 0)] = (0, 0)  # us
    monc.new_map()
    with pytest.raises(Blocklisted):
        await t
    await osdc.close()


@aio
async def test_request_timeout(env):
    m, monc = env
    osdc = make_osdc(monc, osd_request_timeout=0.05)
    m.flags |= CEPH_OSDMAP_PAUSEWR
    monc.new_map()
    with pytest.raises(TimedOut, match="paused"):
        await osdc.submit(POOL, "obj1", [O.write(0, b"x")], write=True)
    t = start(osdc, "obj1", write=False)
    with pytest.raises(TimedOut):
        await t
    assert osdc.requests == {} and all(not s.requests for s in osdc.sessions.values())
    await osdc.close()


@aio
async def test_zero_timeout_waits(env):
    m, monc = env
    osdc = make_osdc(monc, osd_request_timeout=0)
    t = start(osdc, "obj1", write=False)
    await asyncio.sleep(0.1)
    assert not t.done()
    con = FakeCon.made[0]
    con.reply(con.sent[0].tid)
    await t
    await osdc.close()


# --------------------------------------------------------------------------- ticks


@aio
async def test_keepalive_then_fault_on_silent_osd(env):
    m, monc = env
    osdc = make_osdc(monc, osd_keepalive_interval=1000.0, osd_keepalive_timeout=2.0)
    osdc.keepalive_interval = 1.0  # the ticker stays idle (tick_interval from 1000 s); we drive _tick
    t = start(osdc, "obj1")
    await settle()
    con = cons_to(1)[0]
    now = asyncio.get_running_loop().time()
    osdc._tick(now + 0.5)
    assert con.keepalives == 0  # not laggy yet
    osdc._tick(now + 1.5)
    assert con.keepalives == 1
    con.last_rx_at = now + 1.6  # the ack came: alive
    osdc._tick(now + 2.5)
    osdc._tick(now + 4.0)
    assert con.keepalives == 3 and con.state is State.READY
    osdc._tick(now + 4.6)  # nothing heard since the round began at 2.5: 2.1 s > 2 s
    assert con.state is State.CLOSED and osdc.sessions[1].state == "backoff"
    assert "keepalive" in osdc.sessions[1].last_fault
    while len(cons_to(1)) < 2:
        await asyncio.sleep(0.005)
    await settle()
    new = cons_to(1)[1]
    assert new.sent[0].retry_attempt == 1
    new.reply(new.sent[0].tid)
    await t
    await osdc.close()


@aio
async def test_idle_session_closed_after_ttl(env):
    m, monc = env
    osdc = make_osdc(monc, osd_idle_ttl=10.0)
    t = start(osdc, "obj1")
    await settle()
    con = cons_to(1)[0]
    con.reply(con.sent[0].tid)
    await t
    now = asyncio.get_running_loop().time()
    osdc._tick(now + 5)
    assert 1 in osdc.sessions
    osdc._tick(now + 10.5)
    await settle()
    assert 1 not in osdc.sessions and con.state is State.CLOSED
    await osdc.close()


@aio
async def test_status_view(env):
    m, monc = env
    osdc = make_osdc(monc)
    t = start(osdc, "obj1")
    await settle()
    st = osdc.status()
    assert st["osdmap_epoch"] == m.epoch and st["requests"] == 1
    (sess,) = st["sessions"]
    assert sess["osd"] == 1 and sess["state"] == "open" and sess["connection_state"] == "ready"
    assert sess["requests"] == 1 and sess["faults"] == 0
    t.cancel()
    await osdc.close()


# --------------------------------------------------------------------------- connect map


def test_connect_map_follows_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "connect-map.json"
    cmap = ConnectMap(path)
    assert cmap.lookup("127.0.0.1", 6800) is None  # no file: connect directly
    path.write_text('{"127.0.0.1:6800": "127.0.0.1:41000"}')
    assert cmap.lookup("127.0.0.1", 6800) == ("127.0.0.1", 41000)
    assert cmap.lookup("127.0.0.1", 6801) is None
    tmp = tmp_path / "new.json"  # the proxy replaces the file atomically
    tmp.write_text('{"127.0.0.1:6800": "127.0.0.1:42000", "127.0.0.1:6801": "127.0.0.1:42001"}')
    tmp.replace(path)
    assert cmap.lookup("127.0.0.1", 6800) == ("127.0.0.1", 42000)
    assert cmap.lookup("127.0.0.1", 6801) == ("127.0.0.1", 42001)
    path.unlink()  # proxy gone
    assert cmap.lookup("127.0.0.1", 6800) is None
    path.write_text('["not", "a", "map"]')
    with pytest.raises(ConfigError, match="connect map"):
        cmap.lookup("127.0.0.1", 6800)
    path.write_text('{"127.0.0.1:6800": "nowhere"}')
    with pytest.raises(ConfigError, match="IP:PORT"):
        cmap.lookup("127.0.0.1", 6800)


def test_connect_map_option_and_env(tmp_path, monkeypatch):
    conf = tmp_path / "ceph.conf"
    conf.write_text("[global]\nmon host = 127.0.0.1:3300\nkey = AQBbTxtoAAAAABAAnrXb3AeSoWZ6p7MyHrcuEA==\n"
                    "pyceph connect map = /x/map.json\n")
    monkeypatch.delenv("PYCEPH_CONNECT_MAP", raising=False)
    cfg = ClientConfig.load(conffile=str(conf))
    assert connect_map_path(cfg) == "/x/map.json"
    monkeypatch.setenv("PYCEPH_CONNECT_MAP", "/y/map.json")
    assert connect_map_path(cfg) == "/y/map.json"  # the process's environment wins
    monkeypatch.delenv("PYCEPH_CONNECT_MAP")
    conf.write_text("[global]\nmon host = 127.0.0.1:3300\nkey = AQBbTxtoAAAAABAAnrXb3AeSoWZ6p7MyHrcuEA==\n")
    assert connect_map_path(ClientConfig.load(conffile=str(conf))) is None
