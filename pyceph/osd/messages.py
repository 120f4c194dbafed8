"""Messages between a client and OSDs: MOSDOp, MOSDOpReply, MOSDBackoff, MWatchNotify.

Also the small OSD types they carry: ``spg_t``, ``osd_reqid_t``, ``object_locator_t``,
``hobject_t`` and ``request_redirect_t`` (``src/osd/osd_types.{h,cc}``,
``src/common/hobject.{h,cc}``).

Formats: ``src/messages/MOSDOp.h`` (v8 encoding, as Pacific librados and the kernel's
``encode_request_partial``/``encode_request_finish`` send it), ``MOSDOpReply.h``
(kernel ``decode_MOSDOpReply``), ``MOSDBackoff.h`` and ``MWatchNotify.h``.

Op payloads: each op's ``indata`` is concatenated, in op order, into the request's data
section and each op's ``payload_len`` says how long its slice is; replies do the same
with ``outdata`` (``OSDOp::merge_osd_op_vector_in_data`` / ``split_..._out_data`` in
osd_types.cc).  Every decoder raises :class:`pyceph.errors.DecodeError` on bad input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import lru_cache

from ..encoding import Decoder, Encoder
from ..errors import DecodeError
from ..msgr.message import Message
from ..types import EntityNameT, PgT
from .ops import CEPH_NOSNAP, OSDOp

CEPH_MSG_OSD_MAP = 41
CEPH_MSG_OSD_OP = 42
CEPH_MSG_OSD_OPREPLY = 43
CEPH_MSG_WATCH_NOTIFY = 44
CEPH_MSG_OSD_BACKOFF = 61

#: priority librados gives client ops (``osd_client_op_priority``)
OSD_CLIENT_OP_PRIORITY = 63

#: shard_id_t::NO_SHARD
NO_SHARD = -1

#: blkin_trace_info is three u64s; clients send zeros
_TRACE_LEN = 24

# watch/notify event opcodes (CEPH_WATCH_EVENT_*, rados.h)
CEPH_WATCH_EVENT_NOTIFY = 1
CEPH_WATCH_EVENT_NOTIFY_COMPLETE = 2
CEPH_WATCH_EVENT_DISCONNECT = 3


@lru_cache(maxsize=4096)
def _encoded_cached(obj) -> bytes:
    return obj.encode(Encoder()).bytes()


def _encoded(obj) -> bytes:
    """``obj.encode()`` as bytes, memoized: the (frozen, hashable) spg_t, osd_reqid_t and
    object_locator_t of a client's ops repeat from one op to the next."""
    try:
        return _encoded_cached(obj)
    except TypeError:  # not hashable
        return obj.encode(Encoder()).bytes()


_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_OP_FIXED1 = struct.Struct("<III")  # hash, osdmap_epoch, flags
_OP_FIXED2 = struct.Struct("<QQQIII")  # trace, client_inc, mtime
_OP_SNAPS = struct.Struct("<QQI")  # snapid, snap_seq, len(snaps)
_OP_TAIL = struct.Struct("<iQ")  # retry_attempt, features
# MOSDOpReply v8 after the oid: pg_t (u8 v, u64 pool, u32 seed, s32 preferred),
# u64 flags, s32 result, eversion_t bad_replay_version, u32 epoch, u32 num_ops
_REPLY_HEAD = struct.Struct("<BQIiQiQIII")
# ... after the ops: eversion_t replay_version, u64 user_version, bool redirect
_REPLY_MID = struct.Struct("<QIQB")
_TRACE = struct.Struct("<QQQ")


def _check_version(name: str, msg: Message, compat_supported: int) -> None:
    # compat_version is the oldest decoder the sender thinks can read it
    if msg.compat_version > compat_supported:
        raise DecodeError(f"{name}: compat_version {msg.compat_version} > supported {compat_supported}")


# -- osd_types ---------------------------------------------------------------------
@dataclass(frozen=True)
class SpgT:
    """``spg_t``: a PG plus an erasure-code shard (``-1`` = NO_SHARD for replicated pools)."""

    pgid: PgT
    shard: int = NO_SHARD

    @classmethod
    def decode(cls, d: Decoder) -> "SpgT":
        with d.start("spg_t", 1):
            pgid = PgT.decode(d)
            shard = d.s8()
        return cls(pgid, shard)

    def encode(self, e: Encoder) -> Encoder:
        with e.start(1, 1):
            self.pgid.encode(e)
            e.s8(self.shard)
        return e


@dataclass(frozen=True)
class OsdReqid:
    """``osd_reqid_t``: ``(entity_name_t name, u64 tid, s32 inc)``; clients send all zeros."""

    name: EntityNameT = EntityNameT(0, 0)
    tid: int = 0
    inc: int = 0

    @classmethod
    def decode(cls, d: Decoder) -> "OsdReqid":
        with d.start("osd_reqid_t", 2):
            name = EntityNameT.decode(d)
            tid = d.u64()
            inc = d.s32()
        return cls(name, tid, inc)

    def encode(self, e: Encoder) -> Encoder:
        with e.start(2, 2):
            self.name.encode(e)
            e.u64(self.tid).s32(self.inc)
        return e


@dataclass(frozen=True)
class ObjectLocator:
    """``object_locator_t``: pool id, optional locator key, namespace, and explicit hash (-1 = none)."""

    pool: int
    key: str = ""
    nspace: str = ""
    hash: int = -1

    @classmethod
    def decode(cls, d: Decoder) -> "ObjectLocator":
        lg = d.start_legacy("object_locator_t", 6, 3)
        v = lg.v
        if v < 2:
            pool = d.s32()
            d.s16()  # preferred
        else:
            pool = d.s64()
            d.s32()  # preferred
        key = d.string()
        nspace = d.string() if v >= 5 else ""
        h = d.s64() if v >= 6 else -1
        lg.finish()
        return cls(pool, key, nspace, h)

    def encode(self, e: Encoder) -> Encoder:
        # a set hash needs a v6 decoder to interpret it (ENCODE_FINISH_NEW_COMPAT)
        with e.start(6, 6 if self.hash != -1 else 3):
            e.s64(self.pool).s32(-1).string(self.key).string(self.nspace).s64(self.hash)
        return e


@dataclass(frozen=True)
class HObject:
    """``hobject_t``: object name, key, snap, 32-bit hash, ``max`` flag, namespace and pool."""

    oid: str
    key: str = ""
    snap: int = CEPH_NOSNAP
    hash: int = 0
    max: bool = False
    nspace: str = ""
    pool: int = -1

    @classmethod
    def decode(cls, d: Decoder) -> "HObject":
        lg = d.start_legacy("hobject_t", 4, 3)
        v = lg.v
        key = d.string() if v >= 1 else ""
        oid = d.string()
        snap = d.u64()
        h = d.u32()
        mx = d.bool() if v >= 2 else False
        nspace, pool = "", -1
        if v >= 4:
            nspace = d.string()
            pool = d.s64()
        lg.finish()
        return cls(oid, key, snap, h, mx, nspace, pool)

    def encode(self, e: Encoder) -> Encoder:
        with e.start(4, 3):
            e.string(self.key).string(self.oid).u64(self.snap).u32(self.hash).bool(self.max)
            e.string(self.nspace).s64(self.pool)
        return e


@dataclass(frozen=True)
class RequestRedirect:
    """``request_redirect_t``: where an OSD tells the client to resend an op."""

    redirect_locator: ObjectLocator
    redirect_object: str = ""

    @classmethod
    def decode(cls, d: Decoder) -> "RequestRedirect":
        with d.start("request_redirect_t", 1):
            oloc = ObjectLocator.decode(d)
            obj = d.string()
            d.blob()  # osd_instructions, removed; always empty
        return cls(oloc, obj)

    def encode(self, e: Encoder) -> Encoder:
        with e.start(1, 1):
            self.redirect_locator.encode(e)
            e.string(self.redirect_object).u32(0)
        return e


def _decode_eversion(d: Decoder) -> tuple[int, int]:
    """``eversion_t``: ``(u64 version, u32 epoch)``."""
    return d.u64(), d.u32()


def _decode_trace(d: Decoder) -> tuple[int, int, int]:
    return d.u64(), d.u64(), d.u64()


def _encode_trace(e: Encoder, t: tuple[int, int, int]) -> None:
    e.u64(t[0]).u64(t[1]).u64(t[2])


def _split_payloads(ops: list[OSDOp], data: bytes, attr: str, what: str) -> None:
    pos = 0
    for op in ops:
        n = op.payload_len
        if n > len(data) - pos:
            raise DecodeError(f"{what}: op payload_len {n} overruns the {len(data)}-byte data section")
        setattr(op, attr, bytes(data[pos : pos + n]))
        pos += n


# -- MOSDOp -----------------------------------------------------------------------
@dataclass
class MOSDOp:
    """``MOSDOp`` (type 42), v8 as Pacific librados sends it.

    Front: ``spg_t pgid, u32 hash, u32 osdmap_epoch, u32 flags, osd_reqid_t reqid,
    blkin trace (24 bytes), u32 client_inc, utime_t mtime, object_locator_t oloc,
    string oid, u16 num_ops, ceph_osd_op ops[], u64 snapid, u64 snap_seq, vector<u64>
    snaps, s32 retry_attempt, u64 features``.  Data: the ops' indata back to back.

    ``features`` ``None`` means "the connection's features", taken from
    :meth:`to_message`'s argument as the kernel does.  ``mtime`` is ``(sec, nsec)``.
    """

    MSG_TYPE = CEPH_MSG_OSD_OP
    HEAD_VERSION = 8
    COMPAT_VERSION = 3

    pgid: SpgT
    hash: int
    osdmap_epoch: int
    flags: int
    oid: str
    oloc: ObjectLocator
    ops: list[OSDOp] = field(default_factory=list)
    tid: int = 0
    reqid: OsdReqid = OsdReqid()
    trace: tuple[int, int, int] = (0, 0, 0)
    client_inc: int = 0
    mtime: tuple[int, int] = (0, 0)
    snapid: int = CEPH_NOSNAP
    snap_seq: int = 0
    snaps: list[int] = field(default_factory=list)
    retry_attempt: int = 0
    features: int | None = None
    priority: int = OSD_CLIENT_OP_PRIORITY
    data_off: int = 0

    def encode_front(self, features: int) -> bytes:
        # Same bytes as encoding field by field with an Encoder, in fewer calls: this
        # runs once per OSD op.
        oid = self.oid.encode("utf-8", "surrogateescape") if isinstance(self.oid, str) else self.oid
        t, m = self.trace, self.mtime
        if len(self.ops) > 0xFFFF:
            raise ValueError("too many ops in one MOSDOp")
        e = Encoder()
        for op in self.ops:
            op.encode(e)
        snaps = list(self.snaps)
        return b"".join((
            _encoded(self.pgid),
            _OP_FIXED1.pack(self.hash, self.osdmap_epoch, self.flags),
            _encoded(self.reqid),
            _OP_FIXED2.pack(t[0], t[1], t[2], self.client_inc, m[0], m[1]),
            _encoded(self.oloc),
            _U32.pack(len(oid)), oid,
            _U16.pack(len(self.ops)), e.buf,
            _OP_SNAPS.pack(self.snapid, self.snap_seq, len(snaps)),
            *(_U64.pack(sn) for sn in snaps),
            _OP_TAIL.pack(self.retry_attempt, features if self.features is None else self.features),
        ))

    def to_message(self, features: int) -> Message:
        """Encode; ``features`` are the OSD connection's features (bits)."""
        return Message(
            type=self.MSG_TYPE,
            front=self.encode_front(features),
            data=b"".join(op.indata for op in self.ops),
            version=self.HEAD_VERSION,
            compat_version=self.COMPAT_VERSION,
            priority=self.priority,
            tid=self.tid,
            data_off=self.data_off,
        )

    @classmethod
    def from_message(cls, msg: Message) -> "MOSDOp":
        """Decode a v8 MOSDOp; older encodings raise DecodeError (we never receive them)."""
        if msg.version != cls.HEAD_VERSION:
            raise DecodeError(f"MOSDOp: unsupported encoding v{msg.version}")
        d = Decoder(msg.front)
        pgid = SpgT.decode(d)
        h = d.u32()
        epoch = d.u32()
        flags = d.u32()
        reqid = OsdReqid.decode(d)
        trace = _decode_trace(d)
        client_inc = d.u32()
        mtime = d.utime()
        oloc = ObjectLocator.decode(d)
        oid = d.string()
        nops = d.u16()
        d.need(nops * 38, "MOSDOp ops")
        ops = [OSDOp.decode(d) for _ in range(nops)]
        snapid = d.u64()
        snap_seq = d.u64()
        snaps = d.list(Decoder.u64, 8)
        retry = d.s32()
        feats = d.u64()
        _split_payloads(ops, msg.data, "indata", "MOSDOp")
        return cls(pgid=pgid, hash=h, osdmap_epoch=epoch, flags=flags, oid=oid, oloc=oloc, ops=ops,
                   tid=msg.tid, reqid=reqid, trace=trace, client_inc=client_inc, mtime=mtime,
                   snapid=snapid, snap_seq=snap_seq, snaps=snaps, retry_attempt=retry,
                   features=feats, priority=msg.priority, data_off=msg.data_off)


# -- MOSDOpReply -------------------------------------------------------------------
@dataclass
class MOSDOpReply:
    """``MOSDOpReply`` (type 43); Pacific OSDs send v8.

    ``result`` is the op's return (``0`` or a negative errno); each op carries its own
    ``rval`` and ``outdata`` (sliced from the data section by ``payload_len``).
    ``bad_replay_version``/``replay_version`` are ``(version, epoch)``; ``redirect``
    is a :class:`RequestRedirect` or ``None``.
    """

    MSG_TYPE = CEPH_MSG_OSD_OPREPLY
    HEAD_VERSION = 8
    COMPAT_VERSION = 2

    oid: str
    pgid: PgT
    flags: int
    result: int
    osdmap_epoch: int
    ops: list[OSDOp] = field(default_factory=list)
    tid: int = 0
    bad_replay_version: tuple[int, int] = (0, 0)
    retry_attempt: int = -1
    replay_version: tuple[int, int] = (0, 0)
    user_version: int = 0
    redirect: RequestRedirect | None = None
    trace: tuple[int, int, int] = (0, 0, 0)

    def to_message(self, features: int) -> Message:
        e = Encoder()
        e.string(self.oid)
        self.pgid.encode(e)
        e.u64(self.flags).s32(self.result)
        e.u64(self.bad_replay_version[0]).u32(self.bad_replay_version[1])
        e.u32(self.osdmap_epoch).u32(len(self.ops))
        for op in self.ops:
            op.encode(e, len(op.outdata))
        e.s32(self.retry_attempt)
        for op in self.ops:
            e.s32(op.rval)
        e.u64(self.replay_version[0]).u32(self.replay_version[1]).u64(self.user_version)
        e.bool(self.redirect is not None)
        if self.redirect is not None:
            self.redirect.encode(e)
        _encode_trace(e, self.trace)
        return Message(
            type=self.MSG_TYPE,
            front=e.bytes(),
            data=b"".join(op.outdata for op in self.ops),
            version=self.HEAD_VERSION,
            compat_version=self.COMPAT_VERSION,
            tid=self.tid,
        )

    @classmethod
    def from_message(cls, msg: Message) -> "MOSDOpReply":
        """Decode v2..v10 (fields added after v8 are skipped).  Raises DecodeError."""
        if msg.version == 8 and type(msg.front) is bytes:
            reply = cls._from_v8(msg)
            if reply is not None:
                return reply
        return cls._decode(msg)

    @classmethod
    def _from_v8(cls, msg: Message) -> "MOSDOpReply | None":
        """Fast path for what Pacific OSDs send (v8, no redirect); ``None`` means "use
        the general decoder" (which also reports any error in the input)."""
        f = msg.front
        try:
            (n,) = _U32.unpack_from(f, 0)
            pos = 4 + n
            if pos > len(f):
                return None
            oid = f[4:pos].decode("utf-8", "surrogateescape")
            pgv, pool, seed, _pref, flags, result, bad_v, bad_e, epoch, nops = _REPLY_HEAD.unpack_from(f, pos)
            pos += _REPLY_HEAD.size
            if pgv != 1 or nops * 38 > len(f) - pos:
                return None
            d = Decoder(f, pos)
            ops = [OSDOp.decode(d) for _ in range(nops)]
            pos = d.pos
            rv = struct.unpack_from(f"<i{nops}i", f, pos)
            pos += 4 * (nops + 1)
            rep_v, rep_e, uv, has_redirect = _REPLY_MID.unpack_from(f, pos)
            if has_redirect:
                return None
            trace = _TRACE.unpack_from(f, pos + _REPLY_MID.size)
        except (struct.error, DecodeError, UnicodeError):
            return None
        for op, r in zip(ops, rv[1:]):
            op.rval = r
        _split_payloads(ops, msg.data, "outdata", "MOSDOpReply")
        return cls(oid=oid, pgid=PgT(pool, seed), flags=flags, result=result, osdmap_epoch=epoch, ops=ops,
                   tid=msg.tid, bad_replay_version=(bad_v, bad_e), retry_attempt=rv[0],
                   replay_version=(rep_v, rep_e), user_version=uv, redirect=None, trace=trace)

    @classmethod
    def _decode(cls, msg: Message) -> "MOSDOpReply":
        v = msg.version
        if v < 2:
            raise DecodeError(f"MOSDOpReply: unsupported encoding v{v}")
        d = Decoder(msg.front)
        oid = d.string()
        pgid = PgT.decode(d)
        flags = d.u64()
        result = d.s32()
        bad = _decode_eversion(d)
        epoch = d.u32()
        nops = d.count(38)
        ops = [OSDOp.decode(d) for _ in range(nops)]
        retry = d.s32() if v >= 3 else -1
        if v >= 4:
            for op in ops:
                op.rval = d.s32()
            _split_payloads(ops, msg.data, "outdata", "MOSDOpReply")
        if v >= 5:
            replay = _decode_eversion(d)
            uv = d.u64()
        else:
            replay, uv = bad, bad[0]
        redirect = None
        if v == 6:
            redirect = RequestRedirect.decode(d)
            if redirect.redirect_locator.pool == -1 and not redirect.redirect_object:
                redirect = None
        elif v >= 7 and d.bool():
            redirect = RequestRedirect.decode(d)
        trace = _decode_trace(d) if v == 8 else (0, 0, 0)
        return cls(oid=oid, pgid=pgid, flags=flags, result=result, osdmap_epoch=epoch, ops=ops,
                   tid=msg.tid, bad_replay_version=bad, retry_attempt=retry, replay_version=replay,
                   user_version=uv, redirect=redirect, trace=trace)


# -- MOSDBackoff ---------------------------------------------------------------------
@dataclass
class MOSDBackoff:
    """``MOSDBackoff`` (type 61): an OSD asks the client to stop (BLOCK) or resume
    (UNBLOCK) sending ops for objects in ``[begin, end)``; the client answers a BLOCK
    with ACK_BLOCK carrying the same id and range.  ``op`` is CEPH_OSD_BACKOFF_OP_*."""

    MSG_TYPE = CEPH_MSG_OSD_BACKOFF
    HEAD_VERSION = 1
    COMPAT_VERSION = 1

    pgid: SpgT
    map_epoch: int
    op: int
    id: int
    begin: HObject
    end: HObject

    def to_message(self, features: int) -> Message:
        e = Encoder()
        self.pgid.encode(e)
        e.u32(self.map_epoch).u8(self.op).u64(self.id)
        self.begin.encode(e)
        self.end.encode(e)
        return Message(type=self.MSG_TYPE, front=e.bytes(), version=self.HEAD_VERSION,
                       compat_version=self.COMPAT_VERSION)

    @classmethod
    def from_message(cls, msg: Message) -> "MOSDBackoff":
        _check_version("MOSDBackoff", msg, cls.HEAD_VERSION)
        d = Decoder(msg.front)
        pgid = SpgT.decode(d)
        epoch = d.u32()
        op = d.u8()
        ident = d.u64()
        begin = HObject.decode(d)
        end = HObject.decode(d)
        return cls(pgid, epoch, op, ident, begin, end)


# -- MWatchNotify --------------------------------------------------------------------
@dataclass
class MWatchNotify:
    """``MWatchNotify`` (type 44): a notify, disconnect or notify-complete event for the
    watch (or notify) ``cookie``.

    Front: ``u8 proto_ver(1), u8 opcode, u64 cookie, u64 ver, u64 notify_id,
    bufferlist payload, s32 return_code (v2+), u64 notifier_gid (v3+)``.  ``opcode`` is
    CEPH_WATCH_EVENT_*.  ``data`` is the message's data section: for NOTIFY_COMPLETE the
    OSD puts the encoded acks and timeouts there (``Notify::maybe_complete_notify`` in
    ``src/osd/Watch.cc``; decode with :func:`pyceph.osd.ops.decode_notify_response`),
    and ``return_code`` is -ETIMEDOUT when some watcher did not ack in time.
    """

    MSG_TYPE = CEPH_MSG_WATCH_NOTIFY
    HEAD_VERSION = 3
    COMPAT_VERSION = 1

    opcode: int
    cookie: int
    notify_id: int
    payload: bytes = b""
    ver: int = 0
    return_code: int = 0
    notifier_gid: int = 0
    data: bytes = b""

    def to_message(self, features: int) -> Message:
        e = Encoder().u8(1).u8(self.opcode).u64(self.cookie).u64(self.ver).u64(self.notify_id)
        e.blob(self.payload).s32(self.return_code).u64(self.notifier_gid)
        return Message(type=self.MSG_TYPE, front=e.bytes(), data=self.data, version=self.HEAD_VERSION,
                       compat_version=self.COMPAT_VERSION)

    @classmethod
    def from_message(cls, msg: Message) -> "MWatchNotify":
        """Decode v1..v3 (kernel ``handle_watch_notify``).  Raises DecodeError."""
        d = Decoder(msg.front)
        proto = d.u8()
        opcode = d.u8()
        cookie = d.u64()
        ver = d.u64()
        notify_id = d.u64()
        payload = d.blob() if proto >= 1 else b""
        rc = d.s32() if msg.version >= 2 else 0
        gid = d.u64() if msg.version >= 3 else 0
        return cls(opcode, cookie, notify_id, payload, ver, rc, gid, bytes(msg.data))


def _osd_messages() -> dict[int, type]:
    from ..mon.messages import MOSDMap  # OSDs push maps on OSD sessions too

    return {
        CEPH_MSG_OSD_OP: MOSDOp,
        CEPH_MSG_OSD_OPREPLY: MOSDOpReply,
        CEPH_MSG_OSD_BACKOFF: MOSDBackoff,
        CEPH_MSG_WATCH_NOTIFY: MWatchNotify,
        CEPH_MSG_OSD_MAP: MOSDMap,
    }


#: message type -> class, for what arrives on (or is sent over) an OSD session
OSD_MESSAGES: dict[int, type] = _osd_messages()
