"""OSD operation codes, flags, the ``OSDOp`` value object, op builders and outdata decoders.

Formats: ``struct ceph_osd_op`` and the ``CEPH_OSD_OP_*``/``CEPH_OSD_FLAG_*`` numbers
come from ``src/include/rados.h`` (kernel: ``include/linux/ceph/rados.h``); the
per-op indata/outdata layouts follow ``src/osdc/Objecter.h`` (``ObjectOperation``),
``src/osd/PrimaryLogPG.cc`` (``do_osd_ops``) and the kernel's ``osd_req_op_*``
helpers in ``net/ceph/osd_client.c``.

An op on the wire is a fixed 38-byte ``ceph_osd_op`` in the message front
(``u16 op, u32 flags, 28-byte union, u32 payload_len``) plus ``payload_len`` bytes
of indata in the message's data section (requests) or outdata (replies); see
:mod:`pyceph.osd.messages` for how they are concatenated and sliced.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..encoding import Decoder, Encoder
from ..errors import DecodeError
from ..types import EntityAddr, EntityNameT

# -- op codes (rados.h __CEPH_FORALL_OSD_OPS) -------------------------------------
CEPH_OSD_OP_MODE = 0xF000
CEPH_OSD_OP_MODE_RD = 0x1000
CEPH_OSD_OP_MODE_WR = 0x2000
CEPH_OSD_OP_MODE_RMW = 0x3000
CEPH_OSD_OP_MODE_SUB = 0x4000
CEPH_OSD_OP_MODE_CACHE = 0x8000

CEPH_OSD_OP_TYPE = 0x0F00
CEPH_OSD_OP_TYPE_DATA = 0x0200
CEPH_OSD_OP_TYPE_ATTR = 0x0300
CEPH_OSD_OP_TYPE_EXEC = 0x0400
CEPH_OSD_OP_TYPE_PG = 0x0500


def _op(mode: int, typ: int, nr: int) -> int:
    return mode | typ | nr


_RD, _WR, _RMW = CEPH_OSD_OP_MODE_RD, CEPH_OSD_OP_MODE_WR, CEPH_OSD_OP_MODE_RMW
_CACHE = CEPH_OSD_OP_MODE_CACHE
_DATA, _ATTR = CEPH_OSD_OP_TYPE_DATA, CEPH_OSD_OP_TYPE_ATTR
_EXEC, _PG = CEPH_OSD_OP_TYPE_EXEC, CEPH_OSD_OP_TYPE_PG

# data, read
CEPH_OSD_OP_READ = _op(_RD, _DATA, 1)
CEPH_OSD_OP_STAT = _op(_RD, _DATA, 2)
CEPH_OSD_OP_MAPEXT = _op(_RD, _DATA, 3)
CEPH_OSD_OP_CHECKSUM = _op(_RD, _DATA, 31)
CEPH_OSD_OP_MASKTRUNC = _op(_RD, _DATA, 4)
CEPH_OSD_OP_SPARSE_READ = _op(_RD, _DATA, 5)
CEPH_OSD_OP_NOTIFY = _op(_RD, _DATA, 6)
CEPH_OSD_OP_NOTIFY_ACK = _op(_RD, _DATA, 7)
CEPH_OSD_OP_ASSERT_VER = _op(_RD, _DATA, 8)
CEPH_OSD_OP_LIST_WATCHERS = _op(_RD, _DATA, 9)
CEPH_OSD_OP_LIST_SNAPS = _op(_RD, _DATA, 10)
CEPH_OSD_OP_SYNC_READ = _op(_RD, _DATA, 11)
# data, write
CEPH_OSD_OP_WRITE = _op(_WR, _DATA, 1)
CEPH_OSD_OP_WRITEFULL = _op(_WR, _DATA, 2)
CEPH_OSD_OP_TRUNCATE = _op(_WR, _DATA, 3)
CEPH_OSD_OP_ZERO = _op(_WR, _DATA, 4)
CEPH_OSD_OP_DELETE = _op(_WR, _DATA, 5)
CEPH_OSD_OP_APPEND = _op(_WR, _DATA, 6)
CEPH_OSD_OP_STARTSYNC = _op(_WR, _DATA, 7)
CEPH_OSD_OP_SETTRUNC = _op(_WR, _DATA, 8)
CEPH_OSD_OP_TRIMTRUNC = _op(_WR, _DATA, 9)
CEPH_OSD_OP_TMAPUP = _op(_RMW, _DATA, 10)
CEPH_OSD_OP_TMAPPUT = _op(_WR, _DATA, 11)
CEPH_OSD_OP_TMAPGET = _op(_RD, _DATA, 12)
CEPH_OSD_OP_CREATE = _op(_WR, _DATA, 13)
CEPH_OSD_OP_ROLLBACK = _op(_WR, _DATA, 14)
CEPH_OSD_OP_WATCH = _op(_WR, _DATA, 15)
# omap
CEPH_OSD_OP_OMAPGETKEYS = _op(_RD, _DATA, 17)
CEPH_OSD_OP_OMAPGETVALS = _op(_RD, _DATA, 18)
CEPH_OSD_OP_OMAPGETHEADER = _op(_RD, _DATA, 19)
CEPH_OSD_OP_OMAPGETVALSBYKEYS = _op(_RD, _DATA, 20)
CEPH_OSD_OP_OMAPSETVALS = _op(_WR, _DATA, 21)
CEPH_OSD_OP_OMAPSETHEADER = _op(_WR, _DATA, 22)
CEPH_OSD_OP_OMAPCLEAR = _op(_WR, _DATA, 23)
CEPH_OSD_OP_OMAPRMKEYS = _op(_WR, _DATA, 24)
CEPH_OSD_OP_OMAPRMKEYRANGE = _op(_WR, _DATA, 44)
CEPH_OSD_OP_OMAP_CMP = _op(_RD, _DATA, 25)
# tiering and misc
CEPH_OSD_OP_COPY_FROM = _op(_WR, _DATA, 26)
CEPH_OSD_OP_COPY_FROM2 = _op(_WR, _DATA, 45)
CEPH_OSD_OP_UNDIRTY = _op(_WR, _DATA, 28)
CEPH_OSD_OP_ISDIRTY = _op(_RD, _DATA, 29)
CEPH_OSD_OP_COPY_GET = _op(_RD, _DATA, 30)
CEPH_OSD_OP_CACHE_FLUSH = _op(_CACHE, _DATA, 31)
CEPH_OSD_OP_CACHE_EVICT = _op(_CACHE, _DATA, 32)
CEPH_OSD_OP_CACHE_TRY_FLUSH = _op(_CACHE, _DATA, 33)
CEPH_OSD_OP_TMAP2OMAP = _op(_RMW, _DATA, 34)
CEPH_OSD_OP_SETALLOCHINT = _op(_WR, _DATA, 35)
CEPH_OSD_OP_CACHE_PIN = _op(_WR, _DATA, 36)
CEPH_OSD_OP_CACHE_UNPIN = _op(_WR, _DATA, 37)
CEPH_OSD_OP_WRITESAME = _op(_WR, _DATA, 38)
CEPH_OSD_OP_CMPEXT = _op(_RD, _DATA, 32)
CEPH_OSD_OP_SET_REDIRECT = _op(_WR, _DATA, 39)
CEPH_OSD_OP_SET_CHUNK = _op(_CACHE, _DATA, 40)
CEPH_OSD_OP_TIER_PROMOTE = _op(_WR, _DATA, 41)
CEPH_OSD_OP_UNSET_MANIFEST = _op(_WR, _DATA, 42)
CEPH_OSD_OP_TIER_FLUSH = _op(_CACHE, _DATA, 43)
CEPH_OSD_OP_TIER_EVICT = _op(_CACHE, _DATA, 44)
# attrs
CEPH_OSD_OP_GETXATTR = _op(_RD, _ATTR, 1)
CEPH_OSD_OP_GETXATTRS = _op(_RD, _ATTR, 2)
CEPH_OSD_OP_CMPXATTR = _op(_RD, _ATTR, 3)
CEPH_OSD_OP_SETXATTR = _op(_WR, _ATTR, 1)
CEPH_OSD_OP_SETXATTRS = _op(_WR, _ATTR, 2)
CEPH_OSD_OP_RESETXATTRS = _op(_WR, _ATTR, 3)
CEPH_OSD_OP_RMXATTR = _op(_WR, _ATTR, 4)
# exec (the RD bit is historical; a call may write)
CEPH_OSD_OP_CALL = _op(_RD, _EXEC, 1)
# pg
CEPH_OSD_OP_PGLS = _op(_RD, _PG, 1)
CEPH_OSD_OP_PGLS_FILTER = _op(_RD, _PG, 2)
CEPH_OSD_OP_PG_HITSET_LS = _op(_RD, _PG, 3)
CEPH_OSD_OP_PG_HITSET_GET = _op(_RD, _PG, 4)
CEPH_OSD_OP_PGNLS = _op(_RD, _PG, 5)
CEPH_OSD_OP_PGNLS_FILTER = _op(_RD, _PG, 6)
CEPH_OSD_OP_SCRUBLS = _op(_RD, _PG, 7)

#: op code -> Ceph's name for it ("read", "omap-get-vals", ...)
OP_NAMES: dict[int, str] = {
    v: k[len("CEPH_OSD_OP_"):].lower().replace("_", "-")
    for k, v in list(globals().items())
    if k.startswith("CEPH_OSD_OP_") and not k.startswith(("CEPH_OSD_OP_MODE", "CEPH_OSD_OP_TYPE"))
}
OP_NAMES.update({
    CEPH_OSD_OP_OMAPGETKEYS: "omap-get-keys", CEPH_OSD_OP_OMAPGETVALS: "omap-get-vals",
    CEPH_OSD_OP_OMAPGETHEADER: "omap-get-header", CEPH_OSD_OP_OMAPGETVALSBYKEYS: "omap-get-vals-by-keys",
    CEPH_OSD_OP_OMAPSETVALS: "omap-set-vals", CEPH_OSD_OP_OMAPSETHEADER: "omap-set-header",
    CEPH_OSD_OP_OMAPCLEAR: "omap-clear", CEPH_OSD_OP_OMAPRMKEYS: "omap-rm-keys",
    CEPH_OSD_OP_OMAPRMKEYRANGE: "omap-rm-key-range", CEPH_OSD_OP_SETALLOCHINT: "set-alloc-hint",
    CEPH_OSD_OP_ASSERT_VER: "assert-version", CEPH_OSD_OP_WRITESAME: "write-same",
})


def op_name(op: int) -> str:
    """Ceph's name for an op code, or ``"op-0x...."`` if unknown."""
    return OP_NAMES.get(op, f"op-{op:#06x}")


def op_is_read(op: int) -> bool:
    """``ceph_osd_op_mode_read`` (rados.h): op reads data; CALL is excluded."""
    return bool(op & CEPH_OSD_OP_MODE_RD) and op != CEPH_OSD_OP_CALL


def op_is_write(op: int) -> bool:
    """``ceph_osd_op_mode_modify`` (rados.h): op modifies the object."""
    return bool(op & CEPH_OSD_OP_MODE_WR)


# -- message-level flags (MOSDOp.flags) ----------------------------------------
CEPH_OSD_FLAG_ACK = 0x0001
CEPH_OSD_FLAG_ONNVRAM = 0x0002
CEPH_OSD_FLAG_ONDISK = 0x0004
CEPH_OSD_FLAG_RETRY = 0x0008
CEPH_OSD_FLAG_READ = 0x0010
CEPH_OSD_FLAG_WRITE = 0x0020
CEPH_OSD_FLAG_ORDERSNAP = 0x0040
CEPH_OSD_FLAG_PEERSTAT_OLD = 0x0080
CEPH_OSD_FLAG_BALANCE_READS = 0x0100
CEPH_OSD_FLAG_PARALLELEXEC = 0x0200
CEPH_OSD_FLAG_PGOP = 0x0400
CEPH_OSD_FLAG_EXEC = 0x0800
CEPH_OSD_FLAG_EXEC_PUBLIC = 0x1000
CEPH_OSD_FLAG_LOCALIZE_READS = 0x2000
CEPH_OSD_FLAG_RWORDERED = 0x4000
CEPH_OSD_FLAG_IGNORE_CACHE = 0x8000
CEPH_OSD_FLAG_SKIPRWLOCKS = 0x10000
CEPH_OSD_FLAG_IGNORE_OVERLAY = 0x20000
CEPH_OSD_FLAG_FLUSH = 0x40000
CEPH_OSD_FLAG_MAP_SNAP_CLONE = 0x80000
CEPH_OSD_FLAG_ENFORCE_SNAPC = 0x100000
CEPH_OSD_FLAG_REDIRECTED = 0x200000
CEPH_OSD_FLAG_KNOWN_REDIR = 0x400000
CEPH_OSD_FLAG_FULL_TRY = 0x800000
CEPH_OSD_FLAG_FULL_FORCE = 0x1000000
CEPH_OSD_FLAG_IGNORE_REDIRECT = 0x2000000
CEPH_OSD_FLAG_RETURNVEC = 0x4000000


def request_flags(op_list, extra: int = 0) -> int:
    """MOSDOp flags for ``op_list``: READ if any op reads (or is a CALL), WRITE if any
    op writes, plus ONDISK and KNOWN_REDIR, which librados and the kernel
    (``__submit_request``/``account_request``) always set; ``extra`` is OR-ed in."""
    flags = CEPH_OSD_FLAG_ONDISK | CEPH_OSD_FLAG_KNOWN_REDIR | extra
    for o in op_list:
        if op_is_read(o.op) or o.op == CEPH_OSD_OP_CALL:
            flags |= CEPH_OSD_FLAG_READ
        if op_is_write(o.op):
            flags |= CEPH_OSD_FLAG_WRITE
    return flags


# -- per-op flags (ceph_osd_op.flags) -------------------------------------------
CEPH_OSD_OP_FLAG_EXCL = 0x1
CEPH_OSD_OP_FLAG_FAILOK = 0x2
CEPH_OSD_OP_FLAG_FADVISE_RANDOM = 0x4
CEPH_OSD_OP_FLAG_FADVISE_SEQUENTIAL = 0x8
CEPH_OSD_OP_FLAG_FADVISE_WILLNEED = 0x10
CEPH_OSD_OP_FLAG_FADVISE_DONTNEED = 0x20
CEPH_OSD_OP_FLAG_FADVISE_NOCACHE = 0x40
CEPH_OSD_OP_FLAG_WITH_REFERENCE = 0x80
CEPH_OSD_OP_FLAG_BYPASS_CLEAN_CACHE = 0x100

# xattr comparison (cmpxattr)
CEPH_OSD_CMPXATTR_OP_NOP = 0
CEPH_OSD_CMPXATTR_OP_EQ = 1
CEPH_OSD_CMPXATTR_OP_NE = 2
CEPH_OSD_CMPXATTR_OP_GT = 3
CEPH_OSD_CMPXATTR_OP_GTE = 4
CEPH_OSD_CMPXATTR_OP_LT = 5
CEPH_OSD_CMPXATTR_OP_LTE = 6
CEPH_OSD_CMPXATTR_MODE_STRING = 1
CEPH_OSD_CMPXATTR_MODE_U64 = 2

# watch ops (ceph_osd_op.watch.op)
CEPH_OSD_WATCH_OP_UNWATCH = 0
CEPH_OSD_WATCH_OP_LEGACY_WATCH = 1
CEPH_OSD_WATCH_OP_WATCH = 3
CEPH_OSD_WATCH_OP_RECONNECT = 5
CEPH_OSD_WATCH_OP_PING = 7

# backoff ops (MOSDBackoff.op)
CEPH_OSD_BACKOFF_OP_BLOCK = 1
CEPH_OSD_BACKOFF_OP_ACK_BLOCK = 2
CEPH_OSD_BACKOFF_OP_UNBLOCK = 3

# snap ids (src/include/rados.h)
CEPH_NOSNAP = 0xFFFFFFFFFFFFFFFE
CEPH_SNAPDIR = 0xFFFFFFFFFFFFFFFF

#: size of ``struct ceph_osd_op`` on the wire and of its union, bytes
OSD_OP_LEN = 38
OSD_OP_UNION_LEN = 28

_OP_HEAD = struct.Struct("<HI")
_EXTENT = struct.Struct("<QQQI")  # offset, length, truncate_size, truncate_seq
_XATTR = struct.Struct("<IIBB")  # name_len, value_len, cmp_op, cmp_mode
_CLS = struct.Struct("<BBBI")  # class_len, method_len, argc, indata_len
_WATCH = struct.Struct("<QQBII")  # cookie, ver, op, gen, timeout
_ALLOC_HINT = struct.Struct("<QQI")  # expected_object_size, expected_write_size, flags
_U64 = struct.Struct("<Q")


def _union(st: struct.Struct, *vals) -> bytes:
    b = st.pack(*vals)
    return b + bytes(OSD_OP_UNION_LEN - len(b))


@dataclass
class OSDOp:
    """One OSD op (``OSDOp`` in ``src/osd/osd_types.h``, ``ceph_osd_op`` in rados.h).

    - ``op``: CEPH_OSD_OP_* code; ``flags``: CEPH_OSD_OP_FLAG_* bits.
    - ``union``: the raw 28-byte op-specific union (extent, xattr, cls, watch, ...);
      read it through :attr:`extent`, :attr:`xattr`, :attr:`cls`, :attr:`watch`.
    - ``indata``: request payload bytes (goes to the MOSDOp data section).
    - ``rval``/``outdata``: filled in from an MOSDOpReply (per-op return code, a
      negative errno or >= 0, and the op's output bytes).
    """

    op: int
    flags: int = 0
    union: bytes = bytes(OSD_OP_UNION_LEN)
    indata: bytes = b""
    rval: int = 0
    outdata: bytes = b""
    #: payload_len as seen on the wire when decoded (len(indata) or len(outdata))
    payload_len: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if len(self.union) != OSD_OP_UNION_LEN:
            raise ValueError(f"ceph_osd_op union must be {OSD_OP_UNION_LEN} bytes")

    @property
    def name(self) -> str:
        return op_name(self.op)

    # -- union views ---------------------------------------------------------------
    @property
    def extent(self) -> tuple[int, int, int, int]:
        """``(offset, length, truncate_size, truncate_seq)``, bytes."""
        return _EXTENT.unpack_from(self.union)

    @property
    def xattr(self) -> tuple[int, int, int, int]:
        """``(name_len, value_len, cmp_op, cmp_mode)``."""
        return _XATTR.unpack_from(self.union)

    @property
    def cls(self) -> tuple[int, int, int, int]:
        """``(class_len, method_len, argc, indata_len)``."""
        return _CLS.unpack_from(self.union)

    @property
    def watch(self) -> tuple[int, int, int, int, int]:
        """``(cookie, ver, op, gen, timeout seconds)``."""
        return _WATCH.unpack_from(self.union)

    # -- wire ----------------------------------------------------------------------
    def encode(self, e: Encoder, payload_len: int | None = None) -> Encoder:
        """Write the 38-byte ``ceph_osd_op``; ``payload_len`` defaults to ``len(indata)``."""
        e.raw(_OP_HEAD.pack(self.op, self.flags))
        e.raw(self.union)
        return e.u32(len(self.indata) if payload_len is None else payload_len)

    @classmethod
    def decode(cls, d: Decoder) -> "OSDOp":
        """Read one ``ceph_osd_op`` (38 bytes); payload bytes are attached by the caller."""
        d.need(OSD_OP_LEN, "ceph_osd_op")
        op, flags = _OP_HEAD.unpack(d.raw(_OP_HEAD.size))
        union = d.raw(OSD_OP_UNION_LEN)
        plen = d.u32()
        return cls(op=op, flags=flags, union=union, payload_len=plen)


# -- builders (Objecter.h ObjectOperation) ------------------------------------------
def _extent_op(op: int, offset: int, length: int, data: bytes = b"", flags: int = 0,
               truncate_size: int = 0, truncate_seq: int = 0) -> OSDOp:
    return OSDOp(op, flags, _union(_EXTENT, offset, length, truncate_size, truncate_seq), bytes(data))


def read(offset: int, length: int, flags: int = 0, truncate_size: int = 0, truncate_seq: int = 0) -> OSDOp:
    """READ ``length`` bytes at ``offset``; outdata is the bytes read (may be short)."""
    return _extent_op(CEPH_OSD_OP_READ, offset, length, b"", flags, truncate_size, truncate_seq)


def sparse_read(offset: int, length: int, flags: int = 0, truncate_size: int = 0,
                truncate_seq: int = 0) -> OSDOp:
    """SPARSE_READ; decode the outdata with :func:`decode_sparse_read`."""
    return _extent_op(CEPH_OSD_OP_SPARSE_READ, offset, length, b"", flags, truncate_size, truncate_seq)


def write(offset: int, data: bytes, flags: int = 0, truncate_size: int = 0, truncate_seq: int = 0) -> OSDOp:
    """WRITE ``data`` at ``offset`` (bytes)."""
    return _extent_op(CEPH_OSD_OP_WRITE, offset, len(data), data, flags, truncate_size, truncate_seq)


def writefull(data: bytes, flags: int = 0) -> OSDOp:
    """WRITEFULL: replace the object's contents with ``data``."""
    return _extent_op(CEPH_OSD_OP_WRITEFULL, 0, len(data), data, flags)


def append(data: bytes, flags: int = 0) -> OSDOp:
    """APPEND ``data`` to the object."""
    return _extent_op(CEPH_OSD_OP_APPEND, 0, len(data), data, flags)


def truncate(size: int) -> OSDOp:
    """TRUNCATE the object to ``size`` bytes."""
    return _extent_op(CEPH_OSD_OP_TRUNCATE, size, 0)


def zero(offset: int, length: int) -> OSDOp:
    """ZERO ``length`` bytes at ``offset`` (punches a hole)."""
    return _extent_op(CEPH_OSD_OP_ZERO, offset, length)


def stat() -> OSDOp:
    """STAT; decode the outdata with :func:`decode_stat`."""
    return OSDOp(CEPH_OSD_OP_STAT)


def assert_exists() -> OSDOp:
    """librados' assert_exists is a STAT whose result is ignored (fails with ENOENT)."""
    return OSDOp(CEPH_OSD_OP_STAT)


def delete() -> OSDOp:
    """DELETE the object."""
    return _extent_op(CEPH_OSD_OP_DELETE, 0, 0)


def create(exclusive: bool = False) -> OSDOp:
    """CREATE; with ``exclusive`` the op fails with EEXIST if the object exists."""
    return OSDOp(CEPH_OSD_OP_CREATE, CEPH_OSD_OP_FLAG_EXCL if exclusive else 0)


def _name_bytes(name: str | bytes) -> bytes:
    return name.encode("utf-8") if isinstance(name, str) else bytes(name)


def _xattr_op(op: int, name: str | bytes, value: bytes = b"", cmp_op: int = 0, cmp_mode: int = 0) -> OSDOp:
    n = _name_bytes(name)
    return OSDOp(op, 0, _union(_XATTR, len(n), len(value), cmp_op, cmp_mode), n + bytes(value))


def getxattr(name: str | bytes) -> OSDOp:
    """GETXATTR ``name``; outdata is the value (:func:`decode_getxattr`)."""
    return _xattr_op(CEPH_OSD_OP_GETXATTR, name)


def setxattr(name: str | bytes, value: bytes) -> OSDOp:
    """SETXATTR ``name`` = ``value``."""
    return _xattr_op(CEPH_OSD_OP_SETXATTR, name, value)


def rmxattr(name: str | bytes) -> OSDOp:
    """RMXATTR ``name``."""
    return _xattr_op(CEPH_OSD_OP_RMXATTR, name)


def cmpxattr(name: str | bytes, cmp_op: int, cmp_mode: int, value: bytes) -> OSDOp:
    """CMPXATTR (assert an xattr compares as ``cmp_op``; fails with ECANCELED otherwise)."""
    return _xattr_op(CEPH_OSD_OP_CMPXATTR, name, value, cmp_op, cmp_mode)


def _sorted_keys(keys) -> list[bytes]:
    # std::set/std::map encode in byte order; match what librados sends
    return sorted({_name_bytes(k) for k in keys})


def _omap_op(op: int, indata: bytes) -> OSDOp:
    return _extent_op(op, 0, len(indata), indata)


def omap_get_keys(start_after: str | bytes = "", max_return: int = 512) -> OSDOp:
    """OMAPGETKEYS: up to ``max_return`` keys after ``start_after`` (:func:`decode_omap_get_keys`)."""
    e = Encoder().string(_name_bytes(start_after)).u64(max_return)
    return _omap_op(CEPH_OSD_OP_OMAPGETKEYS, e.bytes())


def omap_get_vals(start_after: str | bytes = "", filter_prefix: str | bytes = "",
                  max_return: int = 512) -> OSDOp:
    """OMAPGETVALS: key/values after ``start_after`` with ``filter_prefix`` (:func:`decode_omap_get_vals`)."""
    e = Encoder().string(_name_bytes(start_after)).u64(max_return).string(_name_bytes(filter_prefix))
    return _omap_op(CEPH_OSD_OP_OMAPGETVALS, e.bytes())


def omap_get_vals_by_keys(keys) -> OSDOp:
    """OMAPGETVALSBYKEYS for an iterable of keys (:func:`decode_omap_get_vals_by_keys`)."""
    e = Encoder().list(_sorted_keys(keys), Encoder.string)
    return _omap_op(CEPH_OSD_OP_OMAPGETVALSBYKEYS, e.bytes())


def omap_get_header() -> OSDOp:
    """OMAPGETHEADER; outdata is the header bytes."""
    return OSDOp(CEPH_OSD_OP_OMAPGETHEADER)


def omap_set_vals(kv: dict) -> OSDOp:
    """OMAPSETVALS: ``{key: bytes}``."""
    items = {}
    for k, v in kv.items():
        items[_name_bytes(k)] = bytes(v)
    e = Encoder().u32(len(items))
    for k in sorted(items):
        e.string(k).blob(items[k])
    return _omap_op(CEPH_OSD_OP_OMAPSETVALS, e.bytes())


def omap_set_header(header: bytes) -> OSDOp:
    """OMAPSETHEADER."""
    return _omap_op(CEPH_OSD_OP_OMAPSETHEADER, bytes(header))


def omap_rm_keys(keys) -> OSDOp:
    """OMAPRMKEYS for an iterable of keys."""
    e = Encoder().list(_sorted_keys(keys), Encoder.string)
    return _omap_op(CEPH_OSD_OP_OMAPRMKEYS, e.bytes())


def omap_clear() -> OSDOp:
    """OMAPCLEAR: remove every omap key (and the header)."""
    return OSDOp(CEPH_OSD_OP_OMAPCLEAR)


def call(cls: str, method: str, indata: bytes = b"") -> OSDOp:
    """CALL ``cls.method(indata)``; outdata is the method's output.  Raises ValueError on long names."""
    c, m = _name_bytes(cls), _name_bytes(method)
    if len(c) > 255 or len(m) > 255:
        raise ValueError("class and method names are at most 255 bytes")
    return OSDOp(CEPH_OSD_OP_CALL, 0, _union(_CLS, len(c), len(m), 0, len(indata)), c + m + bytes(indata))


def list_watchers() -> OSDOp:
    """LIST_WATCHERS; decode the outdata with :func:`decode_list_watchers`."""
    return OSDOp(CEPH_OSD_OP_LIST_WATCHERS)


def watch(cookie: int, watch_op: int, gen: int = 0, timeout: int = 0) -> OSDOp:
    """WATCH (``watch_op`` = CEPH_OSD_WATCH_OP_*); ``timeout`` in seconds, 0 = OSD default."""
    return OSDOp(CEPH_OSD_OP_WATCH, 0, _union(_WATCH, cookie, 0, watch_op, gen, timeout))


def notify_ack(notify_id: int, cookie: int, payload: bytes = b"") -> OSDOp:
    """NOTIFY_ACK: indata is ``u64 notify_id, u64 cookie, bufferlist reply``."""
    indata = Encoder().u64(notify_id).u64(cookie).blob(payload).bytes()
    return OSDOp(CEPH_OSD_OP_NOTIFY_ACK, 0, bytes(OSD_OP_UNION_LEN), indata)


def set_alloc_hint(expected_object_size: int, expected_write_size: int, flags: int = 0) -> OSDOp:
    """SETALLOCHINT (sizes in bytes)."""
    return OSDOp(CEPH_OSD_OP_SETALLOCHINT, 0,
                 _union(_ALLOC_HINT, expected_object_size, expected_write_size, flags))


# -- outdata decoders ------------------------------------------------------------------
def decode_stat(outdata: bytes) -> tuple[int, float]:
    """STAT outdata -> ``(size bytes, mtime seconds since the epoch)``.

    Layout: ``u64 size, utime_t mtime`` (PrimaryLogPG.cc).  Raises DecodeError.
    """
    d = Decoder(outdata)
    size = d.u64()
    sec, nsec = d.utime()
    return size, sec + nsec / 1e9


def decode_getxattr(outdata: bytes) -> bytes:
    """GETXATTR outdata is the raw value."""
    return bytes(outdata)


def decode_omap_get_keys(outdata: bytes) -> tuple[list[str], bool]:
    """OMAPGETKEYS outdata -> ``(keys, more)``: ``set<string>`` then ``bool truncated``."""
    d = Decoder(outdata)
    keys = d.list(Decoder.string, 4)
    more = d.bool() if not d.eof() else False
    return keys, more


def decode_omap_get_vals(outdata: bytes) -> tuple[dict[str, bytes], bool]:
    """OMAPGETVALS outdata -> ``({key: value}, more)``: ``map<string,bufferlist>``, ``bool``."""
    d = Decoder(outdata)
    vals = d.map(Decoder.string, Decoder.blob, 8)
    more = d.bool() if not d.eof() else False
    return vals, more


def decode_omap_get_vals_by_keys(outdata: bytes) -> dict[str, bytes]:
    """OMAPGETVALSBYKEYS outdata -> ``{key: value}`` (missing keys are absent)."""
    return Decoder(outdata).map(Decoder.string, Decoder.blob, 8)


def decode_sparse_read(outdata: bytes) -> tuple[list[tuple[int, int]], bytes]:
    """SPARSE_READ outdata -> ``([(offset, length), ...], data)``; data holds the extents back to back."""
    d = Decoder(outdata)
    n = d.count(16)
    extents = [(d.u64(), d.u64()) for _ in range(n)]
    data = d.blob()
    if sum(ln for _, ln in extents) != len(data):
        raise DecodeError("sparse_read: extent lengths do not match the data length")
    return extents, data


@dataclass(frozen=True)
class WatchItem:
    """``watch_item_t`` (osd_types.h): a watcher of an object."""

    name: EntityNameT
    cookie: int
    timeout_seconds: int
    addr: EntityAddr

    @classmethod
    def decode(cls, d: Decoder) -> "WatchItem":
        with d.start("watch_item_t", 2) as v:
            name = EntityNameT.decode(d)
            cookie = d.u64()
            timeout = d.u32()
            addr = EntityAddr.decode(d) if v >= 2 else EntityAddr()
        return cls(name, cookie, timeout, addr)


def decode_list_watchers(outdata: bytes) -> list[WatchItem]:
    """LIST_WATCHERS outdata (``obj_list_watch_response_t``) -> watchers."""
    d = Decoder(outdata)
    with d.start("obj_list_watch_response_t", 1):
        return d.list(WatchItem.decode, 6)


# -- watch/notify, snapshots ------------------------------------------------------------
_U64_UNION = struct.Struct("<Q")

#: NOTIFY protocol version librados and the kernel send
NOTIFY_PROT_VER = 1


def notify(cookie: int, payload: bytes = b"", timeout: int = 0, prot_ver: int = NOTIFY_PROT_VER) -> OSDOp:
    """NOTIFY: the union carries ``u64 cookie`` (the notifier's linger id, echoed in the
    NOTIFY_COMPLETE event); indata is ``u32 prot_ver, u32 timeout (s, 0 = OSD default),
    bufferlist payload`` (Objecter.h ``ObjectOperation::notify``, kernel
    ``osd_req_op_notify_init``).  The reply's outdata is ``u64 notify_id``."""
    indata = Encoder().u32(prot_ver).u32(timeout).blob(payload).bytes()
    return OSDOp(CEPH_OSD_OP_NOTIFY, 0, _union(_U64_UNION, cookie), indata)


def decode_notify_id(outdata: bytes) -> int:
    """NOTIFY outdata -> ``notify_id`` (u64).  Raises DecodeError."""
    return Decoder(outdata).u64()


def _decode_gid_cookie(d: Decoder) -> tuple[int, int]:
    return d.u64(), d.u64()


def decode_notify_response(data: bytes) -> tuple[dict[tuple[int, int], bytes], list[tuple[int, int]]]:
    """NOTIFY_COMPLETE data -> ``(acks, timeouts)``.

    ``map<pair<u64 gid, u64 cookie>, bufferlist> acks`` then ``vector<pair<u64 gid, u64
    cookie>> missed`` (``Notify::maybe_complete_notify``, src/osd/Watch.cc; librados
    ``decode_notify_response``).  An empty buffer is "no watchers".  Raises DecodeError.
    """
    if not data:
        return {}, []
    d = Decoder(data)
    n = d.count(20)
    acks: dict[tuple[int, int], bytes] = {}
    for _ in range(n):
        k = _decode_gid_cookie(d)
        acks[k] = d.blob()
    timeouts = d.list(_decode_gid_cookie, 16) if not d.eof() else []
    return acks, timeouts


def encode_notify_response(acks: dict[tuple[int, int], bytes], timeouts: list[tuple[int, int]]) -> bytes:
    """The OSD's NOTIFY_COMPLETE data for ``acks``/``timeouts`` (for tests and fakes)."""
    e = Encoder().u32(len(acks))
    for (gid, cookie) in sorted(acks):
        e.u64(gid).u64(cookie).blob(acks[(gid, cookie)])
    e.u32(len(timeouts))
    for gid, cookie in timeouts:
        e.u64(gid).u64(cookie)
    return e.bytes()


def rollback(snapid: int) -> OSDOp:
    """ROLLBACK the object to its state at ``snapid`` (union ``u64 snapid``; a write:
    send it with the current snap context).  ``ObjectOperation::rollback``."""
    return OSDOp(CEPH_OSD_OP_ROLLBACK, 0, _union(_U64_UNION, snapid))


def list_snaps() -> OSDOp:
    """LIST_SNAPS (read it with snapid CEPH_SNAPDIR); decode with :func:`decode_list_snaps`."""
    return OSDOp(CEPH_OSD_OP_LIST_SNAPS)


@dataclass(frozen=True)
class CloneInfo:
    """``clone_info`` (osd_types.h): one clone of an object (``cloneid`` CEPH_NOSNAP is
    the head).  ``snaps`` ascending; ``overlap`` = ``[(offset, length)]`` bytes the clone
    shares with the next newer clone/head; ``size`` bytes."""

    cloneid: int
    snaps: tuple[int, ...]
    overlap: tuple[tuple[int, int], ...]
    size: int

    @classmethod
    def decode(cls, d: Decoder) -> "CloneInfo":
        with d.start("clone_info", 1):
            cloneid = d.u64()
            snaps = tuple(d.list(Decoder.u64, 8))
            overlap = tuple(d.list(lambda x: (x.u64(), x.u64()), 16))
            size = d.u64()
        return cls(cloneid, snaps, overlap, size)

    def encode(self, e: Encoder) -> Encoder:
        with e.start(1, 1):
            e.u64(self.cloneid).list(self.snaps, Encoder.u64)
            e.u32(len(self.overlap))
            for off, ln in self.overlap:
                e.u64(off).u64(ln)
            e.u64(self.size)
        return e


@dataclass(frozen=True)
class SnapSet:
    """``obj_list_snap_response_t`` (osd_types.h; librados ``snap_set_t``): the clones
    ascending (the head, if it exists, last with cloneid CEPH_NOSNAP) and ``seq``, the
    newest snap id the object has seen."""

    clones: tuple[CloneInfo, ...]
    seq: int

    @classmethod
    def decode(cls, d: Decoder) -> "SnapSet":
        with d.start("obj_list_snap_response_t", 2) as v:
            clones = tuple(d.list(CloneInfo.decode, 6))
            seq = d.u64() if v >= 2 else CEPH_NOSNAP
        return cls(clones, seq)

    def encode(self, e: Encoder) -> Encoder:
        with e.start(2, 1):
            e.list(self.clones, lambda enc, c: c.encode(enc))
            e.u64(self.seq)
        return e


def decode_list_snaps(outdata: bytes) -> SnapSet:
    """LIST_SNAPS outdata -> :class:`SnapSet`.  Raises DecodeError."""
    return SnapSet.decode(Decoder(outdata))
