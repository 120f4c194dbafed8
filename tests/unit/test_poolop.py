"""MPoolOp / MPoolOpReply formats and the MonClient pool-op round trip (fake mon
connection): tid matching, resend on a new mon session, get_version.

Formats: src/messages/MPoolOp.h (v4), MPoolOpReply.h, PaxosServiceMessage.h; op numbers
from src/include/rados.h; message numbers from ceph_fs.h (CEPH_MSG_POOLOP 49,
CEPH_MSG_POOLOP_REPLY 48).
"""

from __future__ import annotations

import asyncio
import base64
import struct

import pytest

from pyceph.config import ClientConfig
from pyceph.encoding import Encoder
from pyceph.errors import TimedOut
from pyceph.mon.client import MonClient
from pyceph.mon.messages import (
    MON_MESSAGES,
    POOL_OP_CREATE_UNMANAGED_SNAP,
    POOL_OP_DELETE_UNMANAGED_SNAP,
    MMonGetVersion,
    MMonGetVersionReply,
    MPoolOp,
    MPoolOpReply,
)

FSID = bytes(range(16))


def test_pool_op_numbers():
    assert MPoolOp.MSG_TYPE == 49 and MPoolOpReply.MSG_TYPE == 48
    assert (POOL_OP_CREATE_UNMANAGED_SNAP, POOL_OP_DELETE_UNMANAGED_SNAP) == (0x21, 0x22)
    # MonClient dispatches 48 by number; MON_MESSAGES (the fuzz/seed registry) does not
    # list the pool-op messages until test_fuzz_decoders has seeds for them.
    assert 48 not in MON_MESSAGES or MON_MESSAGES[48] is MPoolOpReply


def test_mpoolop_wire_layout_v4():
    m = MPoolOp(fsid=FSID, pool=3, op=POOL_OP_DELETE_UNMANAGED_SNAP, snapid=0x1234, tid=9)
    m.paxos.version = 77
    msg = m.to_message(0)
    assert (msg.version, msg.compat_version, msg.tid) == (4, 2, 9)
    want = (struct.pack("<QhQ", 77, -1, 0) + FSID + struct.pack("<IIQQ", 3, 0x22, 0, 0x1234)
            + struct.pack("<I", 0) + b"\x00" + struct.pack("<h", 0))
    assert msg.front == want
    back = MPoolOp.from_message(msg)
    assert (back.pool, back.op, back.snapid, back.tid, back.paxos.version) == (3, 0x22, 0x1234, 9, 77)


def test_mpoolopreply_decode_with_and_without_data():
    e = Encoder().u64(5).s16(-1).u64(0).uuid(FSID).s32(0).u32(42).bool(True).blob(struct.pack("<Q", 8))
    from pyceph.msgr.message import Message

    r = MPoolOpReply.from_message(Message(type=48, front=e.bytes(), tid=3))
    assert (r.reply_code, r.epoch, r.response_data, r.tid) == (0, 42, struct.pack("<Q", 8), 3)
    e = Encoder().u64(5).s16(-1).u64(0).uuid(FSID).s32(-22).u32(0).bool(False)
    r = MPoolOpReply.from_message(Message(type=48, front=e.bytes(), tid=4))
    assert (r.reply_code, r.response_data) == (-22, b"")
    assert MPoolOpReply.from_message(MPoolOpReply(FSID, -2, 7, b"xy", 11).to_message(0)) == \
        MPoolOpReply(FSID, -2, 7, b"xy", 11)


class FakeMonCon:
    def __init__(self):
        self.sent = []
        self.features = 0

    def send(self, msg):
        self.sent.append(msg)


def make_monc() -> MonClient:
    key = base64.b64encode(struct.pack("<HIIH", 1, 0, 0, 16) + bytes(16)).decode()
    cfg = ClientConfig.load(mon_host="v2:127.0.0.1:1", key=key)
    monc = MonClient(cfg)
    monc.fsid = FSID
    return monc


def test_pool_op_roundtrip_and_resend_on_new_session():
    async def go():
        monc = make_monc()
        c1 = FakeMonCon()
        monc.con = c1
        t = asyncio.ensure_future(monc.pool_op(3, POOL_OP_CREATE_UNMANAGED_SNAP))
        await asyncio.sleep(0)
        (sent,) = [m for m in c1.sent if m.type == 49]
        op = MPoolOp.from_message(sent)
        assert (op.pool, op.op, op.fsid) == (3, 0x21, FSID)
        # The monitor went away before replying: a new session resends it.
        c2 = FakeMonCon()
        monc.con = c2
        monc.auth.need_service_tickets = lambda now: False
        monc._session_opened()
        (again,) = [m for m in c2.sent if m.type == 49]
        assert again.tid == sent.tid
        other = MPoolOpReply(FSID, 0, 99, struct.pack("<Q", 1), sent.tid + 1).to_message(0)
        monc.dispatch(c2, other)  # not ours
        await asyncio.sleep(0)
        assert not t.done()
        monc.dispatch(c2, MPoolOpReply(FSID, 0, 43, struct.pack("<Q", 8), sent.tid).to_message(0))
        assert await t == (0, 43, struct.pack("<Q", 8))
        assert monc._pending == {}

        t = asyncio.ensure_future(monc.get_version("osdmap"))
        await asyncio.sleep(0)
        req = MMonGetVersion.from_message([m for m in c2.sent if m.type == 19][-1])
        assert req.what == "osdmap"
        monc.dispatch(c2, MMonGetVersionReply(req.handle, 50, 1).to_message(0))
        assert await t == (50, 1)

        with pytest.raises(TimedOut):
            await monc.pool_op(3, POOL_OP_DELETE_UNMANAGED_SNAP, snapid=8, timeout=0.05)
        assert monc._pending == {}

    asyncio.run(asyncio.wait_for(go(), 10))
