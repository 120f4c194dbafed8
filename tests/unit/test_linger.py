"""OSDClient linger requests (watch / notify) against the scripted OSDMap and fake
connections of test_osdclient: registration, pings, re-registration after a session
reset, a primary or acting-set change and a DISCONNECT event, notify completion and
timeouts, blocklisting, unwatch.

Expected behaviour: the kernel's linger requests (net/ceph/osd_client.c: linger_submit,
send_linger, send_linger_ping, kick_osd_requests, handle_watch_notify, ceph_osdc_notify)
with one deliberate difference the contract asks for: a failed ping or a DISCONNECT
re-registers (WATCH_OP_RECONNECT) and only a failed re-registration reaches on_error.
"""

from __future__ import annotations

import asyncio

import pytest

from pyceph.errors import Blocklisted, NotConnected, ObjectNotFound, TimedOut
from pyceph.osd import ops as O
from pyceph.osd.messages import (
    CEPH_WATCH_EVENT_DISCONNECT,
    CEPH_WATCH_EVENT_NOTIFY,
    CEPH_WATCH_EVENT_NOTIFY_COMPLETE,
    MOSDOpReply,
    MWatchNotify,
)
from tests.unit.test_osdclient import (  # noqa: F401 - env is a fixture
    ALL_FEATURES,
    POOL,
    FakeCon,
    aio,
    cons_to,
    env,
    make_osdc,
    settle,
)


# --------------------------------------------------------------------------- helpers


async def reply_ops(con, tid, result=0, rval=0, outdata=b""):
    """Answer request ``tid`` on ``con`` with one op carrying ``rval``/``outdata``, and let
    the completion callbacks run."""
    op = next(o for o in reversed(con.sent) if o.tid == tid)
    rop = O.OSDOp(op.ops[0].op, 0, op.ops[0].union, rval=rval, outdata=outdata)
    r = MOSDOpReply(oid=op.oid, pgid=op.pgid.pgid, flags=0, result=result, osdmap_epoch=op.osdmap_epoch,
                    ops=[rop], tid=tid)
    con.last_rx_at = asyncio.get_running_loop().time()
    con.ops.dispatch(con, r.to_message(ALL_FEATURES))
    await settle()


def event(con, opcode, cookie, notify_id=0, payload=b"", rc=0, gid=0, data=b""):
    m = MWatchNotify(opcode, cookie, notify_id, payload, 0, rc, gid, data)
    con.ops.dispatch(con, m.to_message(ALL_FEATURES))


def watch_ops(con):
    """``[(tid, watch op, gen, cookie, timeout)]`` of WATCH ops sent on ``con``."""
    out = []
    for m in con.sent:
        op = m.ops[0]
        if op.op == O.CEPH_OSD_OP_WATCH:
            cookie, _ver, wop, gen, tmo = op.watch
            out.append((m.tid, wop, gen, cookie, tmo))
    return out


def last_watch(con, wop):
    return [w for w in watch_ops(con) if w[1] == wop][-1]


async def until(cond, limit=2.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


async def registered_watch(osdc, oid="obj1", timeout=30, **kw):
    """Start a watch on ``oid``, answer its WATCH; returns (cookie, con, notifies, errors)."""
    notifies, errors = [], []
    t = asyncio.ensure_future(osdc.watch(POOL, oid, lambda *a: notifies.append(a),
                                         lambda c, e: errors.append((c, e)), timeout=timeout, **kw))
    await settle()
    con = FakeCon.made[-1]
    tid, wop, gen, cookie, tmo = watch_ops(con)[-1]
    assert wop == O.CEPH_OSD_WATCH_OP_WATCH and gen == 0 and tmo == timeout
    await reply_ops(con, tid)
    assert await t == cookie
    return cookie, con, notifies, errors


# --------------------------------------------------------------------------- register


@aio
async def test_watch_registers_with_watch_op_on_primary_as_write(env):
    m, monc = env
    osdc = make_osdc(monc)
    cookie, con, _, _ = await registered_watch(osdc, "obj2", timeout=17)
    assert con.osd == 2
    (msg,) = con.sent
    assert msg.flags & O.CEPH_OSD_FLAG_WRITE and msg.oid == "obj2"
    assert osdc.sessions[2].lingers[cookie].committed
    assert osdc.requests == {}  # the registration request is done
    assert osdc.watch_check(cookie) < 1.0
    await osdc.close()


@aio
async def test_watch_on_missing_object_raises_and_forgets_the_linger(env):
    m, monc = env
    osdc = make_osdc(monc)
    t = asyncio.ensure_future(osdc.watch(POOL, "obj1", print, print))
    await settle()
    con = FakeCon.made[0]
    await reply_ops(con, con.sent[0].tid, result=-2, rval=-2)
    with pytest.raises(ObjectNotFound):
        await t
    assert osdc.lingers == {} and not osdc.sessions[1].lingers
    await osdc.close()


@aio
async def test_watch_registration_times_out_with_request_timeout(env):
    m, monc = env
    osdc = make_osdc(monc, osd_request_timeout=0.05)
    with pytest.raises(TimedOut):
        await osdc.watch(POOL, "obj1", print, print)
    assert osdc.lingers == {} and osdc.requests == {}
    await osdc.close()


# --------------------------------------------------------------------------- pings


@aio
async def test_pings_every_interval_with_register_gen_and_update_watch_check(env):
    m, monc = env
    osdc = make_osdc(monc, osd_watch_ping_interval=0.05)
    cookie, con, _, _ = await registered_watch(osdc)
    await until(lambda: len(watch_ops(con)) >= 2)
    tid, wop, gen, c, _ = watch_ops(con)[1]
    assert (wop, gen, c) == (O.CEPH_OSD_WATCH_OP_PING, 0, cookie)
    await asyncio.sleep(0.06)
    before = osdc.watch_check(cookie)
    assert before >= 0.05
    await reply_ops(con, tid)  # a newer ping replaced this one: its pong is ignored
    assert osdc.watch_check(cookie) >= before
    tid, wop, gen, c, _ = watch_ops(con)[-1]
    assert wop == O.CEPH_OSD_WATCH_OP_PING
    await reply_ops(con, tid)
    assert osdc.watch_check(cookie) < before  # valid through the time that ping was sent
    await osdc.close()


@aio
async def test_ping_interval_is_at_most_half_the_watch_timeout(env):
    m, monc = env
    osdc = make_osdc(monc, osd_watch_ping_interval=1000)
    lreq_timeout = 1  # s -> a ping every 0.5 s
    cookie, con, _, _ = await registered_watch(osdc, timeout=lreq_timeout)
    await asyncio.sleep(0.3)
    assert len(watch_ops(con)) == 1
    await until(lambda: len(watch_ops(con)) == 2, 1.0)
    await osdc.close()


@aio
async def test_zero_timeout_means_osd_default_and_pings_at_most_every_15s(env):
    m, monc = env
    osdc = make_osdc(monc, osd_watch_ping_interval=1000)
    cookie, con, _, _ = await registered_watch(osdc, timeout=0)  # wire timeout 0
    await asyncio.sleep(0.2)
    assert len(watch_ops(con)) == 1
    lreq = osdc.lingers[cookie]
    assert lreq.ping_timer is not None
    assert 14 < lreq.ping_timer.when() - asyncio.get_running_loop().time() <= 15
    await osdc.close()


@aio
async def test_failed_ping_reregisters_and_failed_reconnect_calls_on_error(env):
    m, monc = env
    osdc = make_osdc(monc, osd_watch_ping_interval=0.03)
    cookie, con, _, errors = await registered_watch(osdc)
    await until(lambda: len(watch_ops(con)) >= 2)
    ping_tid = watch_ops(con)[1][0]
    await reply_ops(con, ping_tid, result=-110, rval=-110)  # the OSD's watch lost its connection
    tid, wop, gen, _, _ = watch_ops(con)[-1]
    assert (wop, gen) == (O.CEPH_OSD_WATCH_OP_RECONNECT, 1)
    await reply_ops(con, tid)  # reconnected: no error
    assert errors == [] and osdc.watch_check(cookie) < 1
    await until(lambda: watch_ops(con)[-1][1] == O.CEPH_OSD_WATCH_OP_PING)
    ping_tid, _, gen, _, _ = watch_ops(con)[-1]
    assert gen == 1
    await reply_ops(con, ping_tid, result=-107, rval=-107)  # the watch is gone on the OSD
    tid, wop, gen, _, _ = watch_ops(con)[-1]
    assert (wop, gen) == (O.CEPH_OSD_WATCH_OP_RECONNECT, 2)
    await reply_ops(con, tid, result=-107, rval=-107)
    assert len(errors) == 1 and errors[0][0] == cookie and isinstance(errors[0][1], NotConnected)
    with pytest.raises(NotConnected):
        osdc.watch_check(cookie)
    n = len(con.sent)
    await asyncio.sleep(0.1)
    assert len(con.sent) == n  # no more pings for a lost watch
    await osdc.close()


@aio
async def test_stale_pong_of_an_older_registration_is_ignored(env):
    m, monc = env
    osdc = make_osdc(monc, osd_watch_ping_interval=0.03)
    cookie, con, _, errors = await registered_watch(osdc)
    await until(lambda: len(watch_ops(con)) >= 2)
    ping_tid = watch_ops(con)[1][0]
    lreq = osdc.lingers[cookie]
    lreq.register_gen = 5  # a re-registration happened meanwhile
    await reply_ops(con, ping_tid, result=-107, rval=-107)
    assert errors == [] and watch_ops(con)[-1][1] == O.CEPH_OSD_WATCH_OP_PING
    await osdc.close()


# --------------------------------------------------------------------------- re-registration


@aio
async def test_session_reset_reconnects_watch_on_the_new_connection(env):
    m, monc = env
    osdc = make_osdc(monc, osd_watch_ping_interval=0.03)
    cookie, c1, notifies, errors = await registered_watch(osdc)
    await until(lambda: len(watch_ops(c1)) >= 2)  # a ping in flight
    c1.drop()
    s = osdc.sessions[1]
    assert s.lingers  # a session serving a watch is not closed on a fault
    await until(lambda: len(cons_to(1)) == 2 and cons_to(1)[1].sent)
    c2 = cons_to(1)[1]
    ws = watch_ops(c2)
    assert [(w[1], w[2], w[3]) for w in ws] == [(O.CEPH_OSD_WATCH_OP_RECONNECT, 1, cookie)]  # ping not resent
    await reply_ops(c2, ws[0][0])
    assert errors == []
    event(c2, CEPH_WATCH_EVENT_NOTIFY, cookie, notify_id=9, payload=b"hi", gid=5)
    assert notifies == [(9, cookie, 5, b"hi")]
    assert osdc.lingers[cookie].reconnects == 1
    await osdc.close()


@aio
async def test_reset_during_first_registration_resends_watch_not_reconnect(env):
    m, monc = env
    osdc = make_osdc(monc)
    t = asyncio.ensure_future(osdc.watch(POOL, "obj1", print, print))
    await settle()
    c1 = FakeCon.made[0]
    c1.drop()
    await until(lambda: len(cons_to(1)) == 2 and cons_to(1)[1].sent)
    c2 = cons_to(1)[1]
    (w,) = watch_ops(c2)
    assert w[1] == O.CEPH_OSD_WATCH_OP_WATCH and w[0] == watch_ops(c1)[0][0]  # same tid, resent
    await reply_ops(c2, w[0])
    assert await t == w[3]
    await osdc.close()


@aio
async def test_primary_change_moves_watch_and_reconnects_there(env):
    m, monc = env
    osdc = make_osdc(monc)
    cookie, c1, _, errors = await registered_watch(osdc)
    m.place("obj1", 1, 2, [2, 0])
    monc.new_map()
    await settle()
    assert cookie not in osdc.sessions[1].lingers if 1 in osdc.sessions else True
    assert cookie in osdc.sessions[2].lingers
    c2 = cons_to(2)[0]
    (w,) = watch_ops(c2)
    assert (w[1], w[2]) == (O.CEPH_OSD_WATCH_OP_RECONNECT, 1)
    await reply_ops(c2, w[0])
    assert errors == []
    # the old primary's session has nothing left
    assert 1 not in osdc.sessions or not osdc.sessions[1].lingers
    await osdc.close()


@aio
async def test_acting_set_change_with_same_primary_reconnects(env):
    m, monc = env
    osdc = make_osdc(monc)
    cookie, c1, _, _ = await registered_watch(osdc)
    monc.new_map()  # nothing changed
    await settle()
    assert len(watch_ops(c1)) == 1
    m.place("obj1", 1, 1, [1, 0])  # a replica left: new interval, same primary
    monc.new_map()
    await settle()
    w = watch_ops(c1)[-1]
    assert (w[1], w[2]) == (O.CEPH_OSD_WATCH_OP_RECONNECT, 1)
    await osdc.close()


@aio
async def test_no_primary_parks_watch_until_a_map_gives_one(env):
    m, monc = env
    osdc = make_osdc(monc)
    cookie, c1, _, _ = await registered_watch(osdc)
    m.place("obj1", 1, -1, [])
    monc.new_map()
    await settle()
    assert osdc.lingers[cookie].session is None
    m.place("obj1", 1, 0, [0, 2])
    monc.new_map()
    await settle()
    w = watch_ops(cons_to(0)[0])[-1]
    assert (w[1], w[2]) == (O.CEPH_OSD_WATCH_OP_RECONNECT, 1)
    await osdc.close()


@aio
async def test_osd_down_closes_session_and_watch_follows_new_map(env):
    m, monc = env
    osdc = make_osdc(monc)
    cookie, c1, _, _ = await registered_watch(osdc)
    m.up.discard(1)
    m.place("obj1", 1, 0, [0, 2])
    monc.new_map()
    await settle()
    assert 1 not in osdc.sessions
    w = watch_ops(cons_to(0)[0])[-1]
    assert (w[1], w[2]) == (O.CEPH_OSD_WATCH_OP_RECONNECT, 1)
    await osdc.close()


@aio
async def test_disconnect_event_reregisters(env):
    m, monc = env
    osdc = make_osdc(monc)
    cookie, con, _, errors = await registered_watch(osdc)
    event(con, CEPH_WATCH_EVENT_DISCONNECT, cookie)
    w = watch_ops(con)[-1]
    assert (w[1], w[2]) == (O.CEPH_OSD_WATCH_OP_RECONNECT, 1)
    await reply_ops(con, w[0], result=-2, rval=-2)  # object deleted: ENOENT -> ENOTCONN
    assert len(errors) == 1 and isinstance(errors[0][1], NotConnected)
    await osdc.close()


@aio
async def test_only_one_registration_in_flight(env):
    m, monc = env
    osdc = make_osdc(monc)
    cookie, con, _, _ = await registered_watch(osdc)
    event(con, CEPH_WATCH_EVENT_DISCONNECT, cookie)
    event(con, CEPH_WATCH_EVENT_DISCONNECT, cookie)
    assert [w[1] for w in watch_ops(con)].count(O.CEPH_OSD_WATCH_OP_RECONNECT) == 1
    await osdc.close()


# --------------------------------------------------------------------------- events


@aio
async def test_notify_event_calls_on_notify_and_unknown_cookie_is_ignored(env):
    m, monc = env
    osdc = make_osdc(monc)
    cookie, con, notifies, _ = await registered_watch(osdc)
    event(con, CEPH_WATCH_EVENT_NOTIFY, cookie + 100, notify_id=1, payload=b"x", gid=3)
    assert notifies == []
    event(con, CEPH_WATCH_EVENT_NOTIFY, cookie, notify_id=2, payload=b"y", gid=3)
    assert notifies == [(2, cookie, 3, b"y")]
    await osdc.close()


@aio
async def test_on_notify_exception_does_not_break_dispatch(env):
    m, monc = env
    osdc = make_osdc(monc)

    def boom(*a):
        raise RuntimeError("callback bug")

    t = asyncio.ensure_future(osdc.watch(POOL, "obj1", boom, print))
    await settle()
    con = FakeCon.made[0]
    await reply_ops(con, con.sent[0].tid)
    cookie = await t
    event(con, CEPH_WATCH_EVENT_NOTIFY, cookie, notify_id=2)
    assert osdc.lingers[cookie].last_error is None
    await osdc.close()


# --------------------------------------------------------------------------- notify


def _notify_op(con):
    msg = [m for m in con.sent if m.ops[0].op == O.CEPH_OSD_OP_NOTIFY][-1]
    op = msg.ops[0]
    cookie = int.from_bytes(op.union[:8], "little")
    from pyceph.encoding import Decoder

    d = Decoder(op.indata)
    return msg.tid, cookie, (d.u32(), d.u32(), d.blob()), msg


@aio
async def test_notify_sends_op_and_returns_decoded_acks_and_timeouts(env):
    m, monc = env
    osdc = make_osdc(monc)
    t = asyncio.ensure_future(osdc.notify(POOL, "obj1", b"payload", 3))
    await settle()
    con = FakeCon.made[0]
    tid, cookie, (prot, tmo, payload), msg = _notify_op(con)
    assert (prot, tmo, payload) == (1, 3, b"payload") and msg.flags & O.CEPH_OSD_FLAG_READ
    await reply_ops(con, tid, outdata=(777).to_bytes(8, "little"))
    await settle()
    assert not t.done()
    event(con, CEPH_WATCH_EVENT_NOTIFY_COMPLETE, cookie, notify_id=776, rc=0)  # another notify's
    await settle()
    assert not t.done()
    data = O.encode_notify_response({(10, 1): b"r1", (11, 2): b""}, [(12, 3)])
    event(con, CEPH_WATCH_EVENT_NOTIFY_COMPLETE, cookie, notify_id=777, rc=-110, data=data)
    acks, timeouts = await t
    assert acks == {(10, 1): b"r1", (11, 2): b""} and timeouts == [(12, 3)]
    assert osdc.lingers == {}
    await osdc.close()


@aio
async def test_notify_complete_before_op_reply(env):
    m, monc = env
    osdc = make_osdc(monc)
    t = asyncio.ensure_future(osdc.notify(POOL, "obj1", b"", 1))
    await settle()
    con = FakeCon.made[0]
    tid, cookie, _, _ = _notify_op(con)
    event(con, CEPH_WATCH_EVENT_NOTIFY_COMPLETE, cookie, notify_id=5, data=O.encode_notify_response({}, []))
    await reply_ops(con, tid, outdata=(5).to_bytes(8, "little"))
    assert await t == ({}, [])
    await osdc.close()


@aio
async def test_notify_on_missing_object_raises(env):
    m, monc = env
    osdc = make_osdc(monc)
    t = asyncio.ensure_future(osdc.notify(POOL, "obj1", b"", 1))
    await settle()
    con = FakeCon.made[0]
    await reply_ops(con, con.sent[0].tid, result=-2, rval=-2)
    with pytest.raises(ObjectNotFound):
        await t
    assert osdc.lingers == {}
    await osdc.close()


@aio
async def test_notify_without_completion_times_out_after_twice_the_timeout(env):
    m, monc = env
    osdc = make_osdc(monc)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    t = asyncio.ensure_future(osdc.notify(POOL, "obj1", b"", 1))
    await settle()
    con = FakeCon.made[0]
    await reply_ops(con, con.sent[0].tid, outdata=(5).to_bytes(8, "little"))
    with pytest.raises(TimedOut):
        await t
    assert 1.9 <= loop.time() - t0 < 3
    await osdc.close()


@aio
async def test_notify_is_resent_after_session_reset_with_a_new_notify_id(env):
    m, monc = env
    osdc = make_osdc(monc)
    t = asyncio.ensure_future(osdc.notify(POOL, "obj1", b"p", 2))
    await settle()
    c1 = FakeCon.made[0]
    tid1, cookie, _, _ = _notify_op(c1)
    await reply_ops(c1, tid1, outdata=(5).to_bytes(8, "little"))
    c1.drop()  # the completion would have come on this connection
    await until(lambda: len(cons_to(1)) == 2 and cons_to(1)[1].sent)
    c2 = cons_to(1)[1]
    tid2, cookie2, (_, _, payload), _ = _notify_op(c2)
    assert cookie2 == cookie and tid2 != tid1 and payload == b"p"
    await reply_ops(c2, tid2, outdata=(6).to_bytes(8, "little"))
    event(c2, CEPH_WATCH_EVENT_NOTIFY_COMPLETE, cookie, notify_id=5, data=O.encode_notify_response({(1, 1): b"old"}, []))
    await settle()
    assert not t.done()
    event(c2, CEPH_WATCH_EVENT_NOTIFY_COMPLETE, cookie, notify_id=6, data=O.encode_notify_response({(1, 1): b"new"}, []))
    assert (await t)[0] == {(1, 1): b"new"}
    await osdc.close()


# --------------------------------------------------------------------------- errors, unwatch


@aio
async def test_blocklisted_calls_on_error_for_every_watch(env):
    m, monc = env
    osdc = make_osdc(monc)
    cookie, con, _, errors = await registered_watch(osdc)
    other = asyncio.ensure_future(osdc.submit(POOL, "obj1", [O.read(0, 1)], write=False))
    await settle()
    await reply_ops(con, con.sent[-1].tid, result=-108)
    with pytest.raises(Blocklisted):
        await other
    assert len(errors) == 1 and isinstance(errors[0][1], Blocklisted)
    with pytest.raises(Blocklisted):
        osdc.watch_check(cookie)
    with pytest.raises(Blocklisted):
        await osdc.watch(POOL, "obj2", print, print)
    await osdc.close()


@aio
async def test_unwatch_sends_unwatch_and_stops_everything(env):
    m, monc = env
    osdc = make_osdc(monc, osd_watch_ping_interval=0.03)
    cookie, con, notifies, errors = await registered_watch(osdc)
    t = asyncio.ensure_future(osdc.unwatch(cookie))
    await settle()
    tid, wop, _, c, _ = watch_ops(con)[-1]
    assert (wop, c) == (O.CEPH_OSD_WATCH_OP_UNWATCH, cookie)
    await reply_ops(con, tid, result=-107, rval=-107)  # already gone: fine
    await t
    assert osdc.lingers == {} and not osdc.sessions[1].lingers
    n = len(con.sent)
    await asyncio.sleep(0.1)
    event(con, CEPH_WATCH_EVENT_NOTIFY, cookie, notify_id=1)
    assert len(con.sent) == n and notifies == [] and errors == []
    with pytest.raises(NotConnected):
        await osdc.unwatch(cookie)
    await osdc.close()


@aio
async def test_linger_session_survives_idle_ttl_and_gets_keepalives(env):
    m, monc = env
    osdc = make_osdc(monc, osd_idle_ttl=0.01)
    cookie, con, _, _ = await registered_watch(osdc)
    now = asyncio.get_running_loop().time()
    osdc._tick(now + 1)
    assert 1 in osdc.sessions and con.keepalives == 1
    await osdc.close()


@aio
async def test_close_fails_pending_watch_and_notify(env):
    m, monc = env
    osdc = make_osdc(monc)
    w = asyncio.ensure_future(osdc.watch(POOL, "obj1", print, print))
    n = asyncio.ensure_future(osdc.notify(POOL, "obj2", b"", 1))
    await settle()
    await osdc.close()
    for t in (w, n):
        with pytest.raises(Exception) as ei:
            await t
        assert getattr(ei.value, "errno", None) == 108


# --------------------------------------------------------------------------- formats


def test_notify_response_roundtrip_and_empty():
    data = O.encode_notify_response({(4480, 1): b"ack", (4481, 7): b""}, [(4482, 3)])
    assert O.decode_notify_response(data) == ({(4480, 1): b"ack", (4481, 7): b""}, [(4482, 3)])
    assert O.decode_notify_response(b"") == ({}, [])
    # acks only (no timeout vector) still decodes
    assert O.decode_notify_response(O.encode_notify_response({}, [])[:4]) == ({}, [])


def test_notify_op_layout():
    op = O.notify(0x1122, b"abc", 7)
    assert op.op == 0x1206 and op.union[:8] == (0x1122).to_bytes(8, "little") and op.union[8:] == bytes(20)
    assert op.indata == b"\x01\x00\x00\x00\x07\x00\x00\x00\x03\x00\x00\x00abc"


def test_watch_notify_message_carries_data_section():
    m = MWatchNotify(CEPH_WATCH_EVENT_NOTIFY_COMPLETE, 3, 4, b"p", 9, -110, 77, b"DATA")
    back = MWatchNotify.from_message(m.to_message(ALL_FEATURES))
    assert back == m


def test_rollback_and_list_snaps_ops_and_decode():
    r = O.rollback(0x33)
    assert r.op == O.CEPH_OSD_OP_ROLLBACK and r.union[:8] == (0x33).to_bytes(8, "little")
    assert O.list_snaps().op == O.CEPH_OSD_OP_LIST_SNAPS
    ss = O.SnapSet((O.CloneInfo(8, (7, 8), ((0, 4096), (8192, 100)), 16384),
                    O.CloneInfo(O.CEPH_NOSNAP, (), (), 32768)), 8)
    from pyceph.encoding import Encoder

    assert O.decode_list_snaps(ss.encode(Encoder()).bytes()) == ss
    # v1 (no seq): seq = CEPH_NOSNAP
    e = Encoder()
    with e.start(1, 1):
        e.u32(0)
    assert O.decode_list_snaps(e.bytes()) == O.SnapSet((), O.CEPH_NOSNAP)
