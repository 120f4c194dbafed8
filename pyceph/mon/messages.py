"""Messages between a client and the monitors.

MAuth/MAuthReply, MMonMap/MMonGetMap, MMonSubscribe/MMonSubscribeAck, MOSDMap,
MMonCommand/MMonCommandAck, MMonGetVersion/MMonGetVersionReply, MPoolOp/MPoolOpReply
and MConfig.

Formats: ``src/messages/<Name>.h`` in Ceph (``PaxosServiceMessage.h`` for the common
header of MAuth and MMonCommand*) and the kernel's ``net/ceph/mon_client.c``.  Each
class has ``MSG_TYPE``, ``HEAD_VERSION``, ``COMPAT_VERSION``, ``to_message(features)``
and ``from_message(msg)``; decoding raises :class:`pyceph.errors.DecodeError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..encoding import Decoder, Encoder
from ..errors import DecodeError
from ..msgr.message import PRIO_HIGH, Message
from .monmap import MonMap

CEPH_MSG_MON_MAP = 4
CEPH_MSG_MON_GET_MAP = 5
CEPH_MSG_MON_SUBSCRIBE = 15
CEPH_MSG_MON_SUBSCRIBE_ACK = 16
CEPH_MSG_AUTH = 17
CEPH_MSG_AUTH_REPLY = 18
CEPH_MSG_MON_GET_VERSION = 19
CEPH_MSG_MON_GET_VERSION_REPLY = 20
CEPH_MSG_OSD_MAP = 41
CEPH_MSG_POOLOP_REPLY = 48
CEPH_MSG_POOLOP = 49
CEPH_MSG_MON_COMMAND = 50
CEPH_MSG_MON_COMMAND_ACK = 51
MSG_CONFIG = 62

# MPoolOp.op (src/include/rados.h)
POOL_OP_CREATE = 0x01
POOL_OP_DELETE = 0x02
POOL_OP_AUID_CHANGE = 0x03
POOL_OP_CREATE_SNAP = 0x11
POOL_OP_DELETE_SNAP = 0x12
POOL_OP_CREATE_UNMANAGED_SNAP = 0x21
POOL_OP_DELETE_UNMANAGED_SNAP = 0x22

#: MMonSubscribe item flag: send one update, not every new version
CEPH_SUBSCRIBE_ONETIME = 1

_MAX_OSDMAP_EPOCHS = 1 << 20  # sanity bound on maps per MOSDMap


@dataclass
class PaxosHeader:
    """``PaxosServiceMessage`` prefix: ``u64 version, s16 session_mon(-1), u64 session_mon_tid``."""

    version: int = 0
    session_mon: int = -1
    session_mon_tid: int = 0

    @classmethod
    def decode(cls, d: Decoder) -> "PaxosHeader":
        return cls(d.u64(), d.s16(), d.u64())

    def encode(self, e: Encoder) -> Encoder:
        return e.u64(self.version).s16(self.session_mon).u64(self.session_mon_tid)


# -- auth -------------------------------------------------------------------------------
@dataclass
class MAuth:
    """``MAuth`` (type 17): ``paxos header, u32 protocol, bufferlist auth_payload,
    u32 monmap_epoch``.  ``auth_payload`` comes from the cephx helper (e.g. a service
    ticket request); ``protocol`` is CEPH_AUTH_* (2 = cephx)."""

    MSG_TYPE = CEPH_MSG_AUTH
    HEAD_VERSION = 1
    COMPAT_VERSION = 1

    protocol: int
    auth_payload: bytes
    monmap_epoch: int = 0
    paxos: PaxosHeader = field(default_factory=PaxosHeader)

    def to_message(self, features: int) -> Message:
        e = self.paxos.encode(Encoder())
        e.u32(self.protocol).blob(self.auth_payload).u32(self.monmap_epoch)
        return Message(type=self.MSG_TYPE, front=e.bytes(), version=self.HEAD_VERSION,
                       compat_version=self.COMPAT_VERSION)

    @classmethod
    def from_message(cls, msg: Message) -> "MAuth":
        d = Decoder(msg.front)
        paxos = PaxosHeader.decode(d)
        protocol = d.u32()
        payload = d.blob()
        epoch = d.u32() if not d.eof() else 0
        return cls(protocol, payload, epoch, paxos)


def encode_auth_hello(entity_name, global_id: int, supported: tuple[int, ...] = (2,)) -> bytes:
    """The ``auth_payload`` of the first MAuth on a msgr1 mon session (sent with
    ``protocol`` 0): ``u8 struct_v=1, list<u32> supported auth methods, EntityName,
    u64 global_id`` (the old one, for global_id reclaim).  ``entity_name`` is a
    :class:`pyceph.types.EntityName`.  Source: Ceph's ``MonConnection::_init_auth``
    (legacy branch), kernel ``ceph_auth_build_hello`` (``net/ceph/auth.c``)."""
    e = Encoder().u8(1)
    e.list(list(supported), lambda e, m: e.u32(m))
    entity_name.encode(e)
    return e.u64(global_id).bytes()


@dataclass
class MAuthReply:
    """``MAuthReply`` (type 18): ``u32 protocol, s32 result, u64 global_id,
    bufferlist result_bl, string result_msg``.  ``result`` is 0 or a negative errno."""

    MSG_TYPE = CEPH_MSG_AUTH_REPLY
    HEAD_VERSION = 1
    COMPAT_VERSION = 1

    protocol: int
    result: int
    global_id: int
    result_bl: bytes = b""
    result_msg: str = ""

    def to_message(self, features: int) -> Message:
        e = Encoder().u32(self.protocol).s32(self.result).u64(self.global_id)
        e.blob(self.result_bl).string(self.result_msg)
        return Message(type=self.MSG_TYPE, front=e.bytes(), version=self.HEAD_VERSION,
                       compat_version=self.COMPAT_VERSION)

    @classmethod
    def from_message(cls, msg: Message) -> "MAuthReply":
        d = Decoder(msg.front)
        return cls(d.u32(), d.s32(), d.u64(), d.blob(), d.string())


# -- maps -------------------------------------------------------------------------------
@dataclass
class MMonMap:
    """``MMonMap`` (type 4): front is ``bufferlist monmapbl``; :attr:`monmap` is it decoded."""

    MSG_TYPE = CEPH_MSG_MON_MAP
    HEAD_VERSION = 1
    COMPAT_VERSION = 1

    monmap_bl: bytes
    monmap: MonMap | None = None

    def to_message(self, features: int) -> Message:
        return Message(type=self.MSG_TYPE, front=Encoder().blob(self.monmap_bl).bytes(),
                       version=self.HEAD_VERSION, compat_version=self.COMPAT_VERSION,
                       priority=PRIO_HIGH)

    @classmethod
    def from_message(cls, msg: Message) -> "MMonMap":
        """Decodes the wrapped MonMap too, so a bad map raises DecodeError here."""
        bl = Decoder(msg.front).blob()
        return cls(bl, MonMap.decode(bl))


@dataclass
class MMonGetMap:
    """``MMonGetMap`` (type 5): empty; asks the monitor for its current monmap."""

    MSG_TYPE = CEPH_MSG_MON_GET_MAP
    HEAD_VERSION = 1
    COMPAT_VERSION = 1

    def to_message(self, features: int) -> Message:
        return Message(type=self.MSG_TYPE, version=self.HEAD_VERSION, compat_version=self.COMPAT_VERSION)

    @classmethod
    def from_message(cls, msg: Message) -> "MMonGetMap":
        return cls()


@dataclass
class MOSDMap:
    """``MOSDMap`` (type 41): ``uuid fsid, map<u32, bufferlist> incremental_maps,
    map<u32, bufferlist> maps, u32 oldest_map (cluster_osdmap_trim_lower_bound),
    u32 newest_map`` and, from v4, ``map<s64, interval_set> gap_removed_snaps``
    (always empty since Octopus).  Map bodies stay raw bytes: the OSDMap module decodes them.
    """

    MSG_TYPE = CEPH_MSG_OSD_MAP
    HEAD_VERSION = 4
    COMPAT_VERSION = 3

    fsid: bytes
    incremental_maps: dict[int, bytes] = field(default_factory=dict)
    maps: dict[int, bytes] = field(default_factory=dict)
    oldest_map: int = 0
    newest_map: int = 0
    gap_removed_snaps: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    @property
    def first(self) -> int:
        """Lowest epoch carried (full or incremental), 0 if none (``get_first``)."""
        epochs = list(self.maps) + list(self.incremental_maps)
        return min(epochs) if epochs else 0

    @property
    def last(self) -> int:
        """Highest epoch carried, 0 if none (``get_last``)."""
        epochs = list(self.maps) + list(self.incremental_maps)
        return max(epochs) if epochs else 0

    def to_message(self, features: int) -> Message:
        e = Encoder().uuid(self.fsid)
        for maps in (self.incremental_maps, self.maps):
            e.u32(len(maps))
            for ep in sorted(maps):
                e.u32(ep).blob(maps[ep])
        e.u32(self.oldest_map).u32(self.newest_map)
        e.u32(len(self.gap_removed_snaps))
        for pool in sorted(self.gap_removed_snaps):
            ivs = self.gap_removed_snaps[pool]
            e.s64(pool).u32(len(ivs))
            for start, length in ivs:
                e.u64(start).u64(length)
        return Message(type=self.MSG_TYPE, front=e.bytes(), version=self.HEAD_VERSION,
                       compat_version=self.COMPAT_VERSION, priority=PRIO_HIGH)

    @classmethod
    def from_message(cls, msg: Message) -> "MOSDMap":
        d = Decoder(msg.front)
        fsid = d.uuid()
        inc = d.map(Decoder.u32, Decoder.blob, 8)
        full = d.map(Decoder.u32, Decoder.blob, 8)
        if len(inc) + len(full) > _MAX_OSDMAP_EPOCHS:
            raise DecodeError("MOSDMap: too many maps")
        oldest = newest = 0
        if msg.version >= 2:
            oldest = d.u32()
            newest = d.u32()
        gaps: dict[int, list[tuple[int, int]]] = {}
        if msg.version >= 4:
            for _ in range(d.count(12)):
                pool = d.s64()
                n = d.count(16)
                gaps[pool] = [(d.u64(), d.u64()) for _ in range(n)]
        return cls(fsid, inc, full, oldest, newest, gaps)


# -- subscriptions --------------------------------------------------------------------------
@dataclass
class MMonSubscribe:
    """``MMonSubscribe`` (type 15), v3: ``map<string, {u64 start, u8 flags}> what,
    string hostname``.  ``what`` maps a map name ("osdmap", "monmap", "config",
    "mgrmap", ...) to ``(start epoch, flags)``; flags is CEPH_SUBSCRIBE_ONETIME or 0.
    """

    MSG_TYPE = CEPH_MSG_MON_SUBSCRIBE
    HEAD_VERSION = 3
    COMPAT_VERSION = 1

    what: dict[str, tuple[int, int]] = field(default_factory=dict)
    hostname: str = ""

    def to_message(self, features: int) -> Message:
        e = Encoder().u32(len(self.what))
        for name in sorted(self.what, key=lambda s: s.encode("utf-8", "surrogateescape")):
            start, flags = self.what[name]
            e.string(name).u64(start).u8(flags)
        e.string(self.hostname)
        return Message(type=self.MSG_TYPE, front=e.bytes(), version=self.HEAD_VERSION,
                       compat_version=self.COMPAT_VERSION)

    @classmethod
    def from_message(cls, msg: Message) -> "MMonSubscribe":
        if msg.version < 2:
            raise DecodeError(f"MMonSubscribe: pre-v2 encoding (v{msg.version}) unsupported")
        d = Decoder(msg.front)
        what: dict[str, tuple[int, int]] = {}
        for _ in range(d.count(13)):
            name = d.string()
            what[name] = (d.u64(), d.u8())
        hostname = d.string() if msg.version >= 3 else ""
        return cls(what, hostname)


@dataclass
class MMonSubscribeAck:
    """``MMonSubscribeAck`` (type 16): ``u32 interval`` (seconds to renew), ``uuid fsid``.
    Only sent to pre-Luminous-style clients; decoded for completeness."""

    MSG_TYPE = CEPH_MSG_MON_SUBSCRIBE_ACK
    HEAD_VERSION = 1
    COMPAT_VERSION = 1

    interval: int
    fsid: bytes = bytes(16)

    def to_message(self, features: int) -> Message:
        return Message(type=self.MSG_TYPE, front=Encoder().u32(self.interval).uuid(self.fsid).bytes(),
                       version=self.HEAD_VERSION, compat_version=self.COMPAT_VERSION)

    @classmethod
    def from_message(cls, msg: Message) -> "MMonSubscribeAck":
        d = Decoder(msg.front)
        interval = d.u32()
        fsid = d.uuid() if not d.eof() else bytes(16)
        return cls(interval, fsid)


# -- commands and versions ---------------------------------------------------------------------
@dataclass
class MMonCommand:
    """``MMonCommand`` (type 50): ``paxos header, uuid fsid, vector<string> cmd``;
    ``inbl`` travels in the data section.  ``cmd`` holds JSON strings such as
    ``'{"prefix": "osd pool ls", "format": "json"}'``; ``tid`` matches the ack."""

    MSG_TYPE = CEPH_MSG_MON_COMMAND
    HEAD_VERSION = 1
    COMPAT_VERSION = 1

    fsid: bytes
    cmd: list[str]
    inbl: bytes = b""
    tid: int = 0
    paxos: PaxosHeader = field(default_factory=PaxosHeader)

    def to_message(self, features: int) -> Message:
        e = self.paxos.encode(Encoder()).uuid(self.fsid).list(self.cmd, Encoder.string)
        return Message(type=self.MSG_TYPE, front=e.bytes(), data=self.inbl, version=self.HEAD_VERSION,
                       compat_version=self.COMPAT_VERSION, tid=self.tid)

    @classmethod
    def from_message(cls, msg: Message) -> "MMonCommand":
        d = Decoder(msg.front)
        paxos = PaxosHeader.decode(d)
        fsid = d.uuid()
        cmd = d.list(Decoder.string, 4)
        return cls(fsid, cmd, bytes(msg.data), msg.tid, paxos)


@dataclass
class MMonCommandAck:
    """``MMonCommandAck`` (type 51): ``paxos header, s32 r, string rs, vector<string> cmd``;
    ``outbl`` is the data section.  ``r`` is 0 or a negative errno, ``rs`` the status text."""

    MSG_TYPE = CEPH_MSG_MON_COMMAND_ACK
    HEAD_VERSION = 1
    COMPAT_VERSION = 1

    r: int
    rs: str
    cmd: list[str] = field(default_factory=list)
    outbl: bytes = b""
    tid: int = 0
    paxos: PaxosHeader = field(default_factory=PaxosHeader)

    def to_message(self, features: int) -> Message:
        e = self.paxos.encode(Encoder()).s32(self.r).string(self.rs).list(self.cmd, Encoder.string)
        return Message(type=self.MSG_TYPE, front=e.bytes(), data=self.outbl, version=self.HEAD_VERSION,
                       compat_version=self.COMPAT_VERSION, tid=self.tid)

    @classmethod
    def from_message(cls, msg: Message) -> "MMonCommandAck":
        d = Decoder(msg.front)
        paxos = PaxosHeader.decode(d)
        r = d.s32()
        rs = d.string()
        cmd = d.list(Decoder.string, 4)
        return cls(r, rs, cmd, bytes(msg.data), msg.tid, paxos)


@dataclass
class MMonGetVersion:
    """``MMonGetVersion`` (type 19): ``u64 handle, string what`` ("osdmap", "monmap", ...)."""

    MSG_TYPE = CEPH_MSG_MON_GET_VERSION
    HEAD_VERSION = 1
    COMPAT_VERSION = 1

    handle: int
    what: str

    def to_message(self, features: int) -> Message:
        return Message(type=self.MSG_TYPE, front=Encoder().u64(self.handle).string(self.what).bytes(),
                       version=self.HEAD_VERSION, compat_version=self.COMPAT_VERSION, tid=self.handle)

    @classmethod
    def from_message(cls, msg: Message) -> "MMonGetVersion":
        d = Decoder(msg.front)
        return cls(d.u64(), d.string())


@dataclass
class MMonGetVersionReply:
    """``MMonGetVersionReply`` (type 20): ``u64 handle, u64 version, u64 oldest_version`` (v2+)."""

    MSG_TYPE = CEPH_MSG_MON_GET_VERSION_REPLY
    HEAD_VERSION = 2
    COMPAT_VERSION = 1

    handle: int
    version: int
    oldest_version: int = 0

    def to_message(self, features: int) -> Message:
        e = Encoder().u64(self.handle).u64(self.version).u64(self.oldest_version)
        return Message(type=self.MSG_TYPE, front=e.bytes(), version=self.HEAD_VERSION,
                       compat_version=self.COMPAT_VERSION, tid=self.handle)

    @classmethod
    def from_message(cls, msg: Message) -> "MMonGetVersionReply":
        d = Decoder(msg.front)
        handle = d.u64()
        version = d.u64()
        oldest = d.u64() if msg.version >= 2 else 0
        return cls(handle, version, oldest)


@dataclass
class MPoolOp:
    """``MPoolOp`` (type 49, v4, compat 2; ``src/messages/MPoolOp.h``): ``paxos header
    (version = our osdmap epoch), uuid fsid, u32 pool, u32 op, u64 auid(0), u64 snapid,
    string name, u8 pad(0), s16 crush_rule``.  ``op`` is POOL_OP_*; ``tid`` (message
    header) matches the reply."""

    MSG_TYPE = CEPH_MSG_POOLOP
    HEAD_VERSION = 4
    COMPAT_VERSION = 2

    fsid: bytes
    pool: int
    op: int
    snapid: int = 0
    name: str = ""
    tid: int = 0
    auid: int = 0
    crush_rule: int = 0
    paxos: PaxosHeader = field(default_factory=PaxosHeader)

    def to_message(self, features: int) -> Message:
        e = self.paxos.encode(Encoder()).uuid(self.fsid).u32(self.pool).u32(self.op)
        e.u64(self.auid).u64(self.snapid).string(self.name).u8(0).s16(self.crush_rule)
        return Message(type=self.MSG_TYPE, front=e.bytes(), version=self.HEAD_VERSION,
                       compat_version=self.COMPAT_VERSION, tid=self.tid)

    @classmethod
    def from_message(cls, msg: Message) -> "MPoolOp":
        d = Decoder(msg.front)
        paxos = PaxosHeader.decode(d)
        fsid = d.uuid()
        pool = d.u32()
        name = d.string() if msg.version < 2 else ""
        op = d.u32()
        auid = d.u64()
        snapid = d.u64()
        if msg.version >= 2:
            name = d.string()
        crush_rule = -1
        if msg.version >= 3:
            pad = d.u8()
            crush_rule = d.s16() if msg.version >= 4 else pad
        return cls(fsid, pool, op, snapid, name, msg.tid, auid, crush_rule, paxos)


@dataclass
class MPoolOpReply:
    """``MPoolOpReply`` (type 48; ``src/messages/MPoolOpReply.h``): ``paxos header, uuid
    fsid, u32 reply_code (a negative errno as two's complement), u32 epoch (the osdmap
    epoch that holds the change), bool has_data, [bufferlist response_data]``.  For
    POOL_OP_CREATE_UNMANAGED_SNAP ``response_data`` is the new snap id (u64)."""

    MSG_TYPE = CEPH_MSG_POOLOP_REPLY
    HEAD_VERSION = 1
    COMPAT_VERSION = 1

    fsid: bytes
    reply_code: int
    epoch: int
    response_data: bytes = b""
    tid: int = 0
    paxos: PaxosHeader = field(default_factory=PaxosHeader)

    def to_message(self, features: int) -> Message:
        e = self.paxos.encode(Encoder()).uuid(self.fsid).s32(self.reply_code).u32(self.epoch)
        e.bool(bool(self.response_data))
        if self.response_data:
            e.blob(self.response_data)
        return Message(type=self.MSG_TYPE, front=e.bytes(), version=self.HEAD_VERSION,
                       compat_version=self.COMPAT_VERSION, tid=self.tid)

    @classmethod
    def from_message(cls, msg: Message) -> "MPoolOpReply":
        d = Decoder(msg.front)
        paxos = PaxosHeader.decode(d)
        fsid = d.uuid()
        code = d.s32()
        epoch = d.u32()
        data = d.blob() if d.bool() else b""
        return cls(fsid, code, epoch, data, msg.tid, paxos)


@dataclass
class MConfig:
    """``MConfig`` (type 62): ``map<string,string>`` of config options the mon pushes."""

    MSG_TYPE = MSG_CONFIG
    HEAD_VERSION = 1
    COMPAT_VERSION = 1

    config: dict[str, str] = field(default_factory=dict)

    def to_message(self, features: int) -> Message:
        e = Encoder().u32(len(self.config))
        for k in sorted(self.config):
            e.string(k).string(self.config[k])
        return Message(type=self.MSG_TYPE, front=e.bytes(), version=self.HEAD_VERSION,
                       compat_version=self.COMPAT_VERSION)

    @classmethod
    def from_message(cls, msg: Message) -> "MConfig":
        return cls(Decoder(msg.front).map(Decoder.string, Decoder.string, 8))


#: message type -> class, for what is exchanged over a monitor session
MON_MESSAGES: dict[int, type] = {
    c.MSG_TYPE: c
    for c in (MAuth, MAuthReply, MMonMap, MMonGetMap, MOSDMap, MMonSubscribe, MMonSubscribeAck,
              MMonCommand, MMonCommandAck, MMonGetVersion, MMonGetVersionReply, MConfig, MPoolOp,
              MPoolOpReply)
}
