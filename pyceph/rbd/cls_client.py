"""Payloads of the ``rbd`` and ``lock`` object-class methods, and async call helpers.

Each cls method has an ``encode_*``/``*_request`` function building its input and a
``decode_*`` function parsing its output, following ``src/cls/rbd/cls_rbd_client.cc``
and ``src/cls/lock/cls_lock_client.cc``; structured types follow
``src/cls/rbd/cls_rbd.h``, ``src/cls/rbd/cls_rbd_types.{h,cc}``,
``src/cls/lock/cls_lock_types.h`` and ``src/cls/lock/cls_lock_ops.h`` (Pacific).

The ``async`` helpers call ``ioctx.execute(oid, cls, method, data)`` on any object
with the AsyncIoctx interface; cluster errors arrive as the typed errors that
``pyceph.errors.make_ex`` builds.  Every decoder raises
:class:`pyceph.errors.DecodeError` on truncated or malformed input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..encoding import Decoder, Encoder
from ..errors import DecodeError
from ..osd import ops as O
from ..types import EntityAddr, EntityNameT

#: ``CEPH_NOSNAP``: the image head (not a snapshot)
CEPH_NOSNAP = 0xFFFFFFFFFFFFFFFE
U64_MAX = 0xFFFFFFFFFFFFFFFF

RBD_PROTECTION_STATUS_UNPROTECTED = 0
RBD_PROTECTION_STATUS_UNPROTECTING = 1
RBD_PROTECTION_STATUS_PROTECTED = 2


class ClsIoctx(Protocol):
    async def execute(
        self, oid: str, cls: str, method: str, data: bytes = b"", read_only: bool = False
    ) -> bytes: ...


def _dec(data: bytes | bytearray | memoryview) -> Decoder:
    return Decoder(data)


# ---------------------------------------------------------------------------
# small helpers


def _enc_optional_u64(e: Encoder, v: int | None) -> None:
    if v is None:
        e.u8(0)
    else:
        e.u8(1).u64(v)


def _dec_optional_u64(d: Decoder) -> int | None:
    return d.u64() if d.bool() else None


def _dec_string_set(d: Decoder) -> list[str]:
    return d.list(Decoder.string, 4)


# ---------------------------------------------------------------------------
# cls_rbd types


@dataclass
class ParentImageSpec:
    """``cls::rbd::ParentImageSpec``: where a clone's parent lives.

    ``pool_id == -1`` means no parent.  Encoded with ENCODE_START(1, 1).
    """

    pool_id: int = -1
    pool_namespace: str = ""
    image_id: str = ""
    snap_id: int = CEPH_NOSNAP

    def exists(self) -> bool:
        return self.pool_id >= 0 and bool(self.image_id) and self.snap_id != CEPH_NOSNAP

    @classmethod
    def decode(cls, d: Decoder) -> "ParentImageSpec":
        with d.start("ParentImageSpec", 1):
            return cls(d.s64(), d.string(), d.string(), d.u64())

    def encode(self, e: Encoder) -> Encoder:
        with e.start(1, 1):
            e.s64(self.pool_id).string(self.pool_namespace).string(self.image_id).u64(self.snap_id)
        return e


@dataclass
class ChildImageSpec:
    """``cls::rbd::ChildImageSpec``: ENCODE_START(2, 1): pool_id, image_id, pool_namespace (v2)."""

    pool_id: int = -1
    pool_namespace: str = ""
    image_id: str = ""

    @classmethod
    def decode(cls, d: Decoder) -> "ChildImageSpec":
        with d.start("ChildImageSpec", 2) as v:
            pool_id = d.s64()
            image_id = d.string()
            ns = d.string() if v >= 2 else ""
        return cls(pool_id, ns, image_id)

    def encode(self, e: Encoder) -> Encoder:
        with e.start(2, 1):
            e.s64(self.pool_id).string(self.image_id).string(self.pool_namespace)
        return e


@dataclass
class ClsRbdParent:
    """``cls_rbd_parent`` (cls_rbd.h): a header's parent link.

    v1 always carries an overlap and no namespace; v2 (Nautilus+ OSDs) adds
    ``pool_namespace`` and makes the head overlap optional.
    """

    pool_id: int = -1
    pool_namespace: str = ""
    image_id: str = ""
    snap_id: int = CEPH_NOSNAP
    head_overlap: int | None = None

    def exists(self) -> bool:
        return self.pool_id >= 0 and bool(self.image_id) and self.snap_id != CEPH_NOSNAP

    @classmethod
    def decode(cls, d: Decoder) -> "ClsRbdParent":
        with d.start("cls_rbd_parent", 2) as v:
            pool_id = d.s64()
            ns = d.string() if v >= 2 else ""
            image_id = d.string()
            snap_id = d.u64()
            overlap = d.u64() if v == 1 else _dec_optional_u64(d)
        return cls(pool_id, ns, image_id, snap_id, overlap)

    def encode(self, e: Encoder, version: int = 2) -> Encoder:
        with e.start(version, version):
            e.s64(self.pool_id)
            if version >= 2:
                e.string(self.pool_namespace)
            e.string(self.image_id).u64(self.snap_id)
            if version == 1:
                e.u64(self.head_overlap or 0)
            else:
                _enc_optional_u64(e, self.head_overlap)
        return e


SNAPSHOT_NAMESPACE_TYPE_USER = 0
SNAPSHOT_NAMESPACE_TYPE_GROUP = 1
SNAPSHOT_NAMESPACE_TYPE_TRASH = 2
SNAPSHOT_NAMESPACE_TYPE_MIRROR = 3

SNAPSHOT_NAMESPACE_NAMES = {0: "user", 1: "group", 2: "trash", 3: "mirror"}

MIRROR_SNAPSHOT_STATE_PRIMARY = 0
MIRROR_SNAPSHOT_STATE_PRIMARY_DEMOTED = 1
MIRROR_SNAPSHOT_STATE_NON_PRIMARY = 2
MIRROR_SNAPSHOT_STATE_NON_PRIMARY_DEMOTED = 3


@dataclass
class SnapshotNamespace:
    """``cls::rbd::SnapshotNamespace``: ENCODE_START(1, 1), ``u32 type``, then the
    fields of that type (cls_rbd_types.cc).  ``fields`` holds, per type:

    - user: nothing;
    - group: ``group_pool`` (s64), ``group_id``, ``group_snapshot_id``;
    - trash: ``original_name``, ``original_snapshot_namespace_type`` (u32);
    - mirror: ``state`` (u8), ``complete`` (bool), ``mirror_peer_uuids`` (set of str),
      ``primary_mirror_uuid``, ``primary_snap_id`` (u64),
      ``last_copied_object_number`` (u64), ``snap_seqs`` (map u64 -> u64);
    - any other type: ``raw`` (the undecoded body bytes).
    """

    type: int = SNAPSHOT_NAMESPACE_TYPE_USER
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def type_name(self) -> str:
        return SNAPSHOT_NAMESPACE_NAMES.get(self.type, "unknown")

    @classmethod
    def decode(cls, d: Decoder) -> "SnapshotNamespace":
        with d.start("SnapshotNamespace", 1):
            t = d.u32()
            f: dict[str, Any] = {}
            if t == SNAPSHOT_NAMESPACE_TYPE_USER:
                pass
            elif t == SNAPSHOT_NAMESPACE_TYPE_GROUP:
                f = {"group_pool": d.s64(), "group_id": d.string(), "group_snapshot_id": d.string()}
            elif t == SNAPSHOT_NAMESPACE_TYPE_TRASH:
                f = {"original_name": d.string(), "original_snapshot_namespace_type": d.u32()}
            elif t == SNAPSHOT_NAMESPACE_TYPE_MIRROR:
                f = {
                    "state": d.u8(),
                    "complete": d.bool(),
                    "mirror_peer_uuids": _dec_string_set(d),
                    "primary_mirror_uuid": d.string(),
                    "primary_snap_id": d.u64(),
                    "last_copied_object_number": d.u64(),
                    "snap_seqs": d.map(Decoder.u64, Decoder.u64, 16),
                }
            else:
                f = {"raw": d.raw(d.remaining)}
        return cls(t, f)

    def encode(self, e: Encoder) -> Encoder:
        f = self.fields
        with e.start(1, 1):
            e.u32(self.type)
            if self.type == SNAPSHOT_NAMESPACE_TYPE_USER:
                pass
            elif self.type == SNAPSHOT_NAMESPACE_TYPE_GROUP:
                e.s64(f["group_pool"]).string(f["group_id"]).string(f["group_snapshot_id"])
            elif self.type == SNAPSHOT_NAMESPACE_TYPE_TRASH:
                e.string(f["original_name"]).u32(f["original_snapshot_namespace_type"])
            elif self.type == SNAPSHOT_NAMESPACE_TYPE_MIRROR:
                e.u8(f["state"]).bool(f["complete"])
                e.list(f["mirror_peer_uuids"], Encoder.string)
                e.string(f["primary_mirror_uuid"]).u64(f["primary_snap_id"])
                e.u64(f["last_copied_object_number"])
                e.map(f["snap_seqs"], Encoder.u64, Encoder.u64)
            else:
                e.raw(f.get("raw", b""))
        return e


@dataclass
class SnapshotInfo:
    """``cls::rbd::SnapshotInfo`` (reply of ``snapshot_get``): ENCODE_START(1, 1).

    ``timestamp`` is ``(sec, nsec)``; ``image_size`` in bytes.
    """

    id: int
    snapshot_namespace: SnapshotNamespace
    name: str
    image_size: int
    timestamp: tuple[int, int]
    child_count: int

    @classmethod
    def decode(cls, d: Decoder) -> "SnapshotInfo":
        with d.start("SnapshotInfo", 1):
            return cls(d.u64(), SnapshotNamespace.decode(d), d.string(), d.u64(), d.utime(), d.u32())

    def encode(self, e: Encoder) -> Encoder:
        with e.start(1, 1):
            e.u64(self.id)
            self.snapshot_namespace.encode(e)
            e.string(self.name).u64(self.image_size).utime(self.timestamp).u32(self.child_count)
        return e


@dataclass
class ClsRbdSnap:
    """``cls_rbd_snap`` (cls_rbd.h): a snapshot record in the header's omap.

    Nautilus+ OSDs write v8 with compat 8 (no ``features``/``parent`` fields);
    older records (compat < 8) carry an unused ``features`` u64 and a
    ``cls_rbd_parent``.  Decoding handles v1..v8; encoding writes v8/compat 8.
    """

    id: int = CEPH_NOSNAP
    name: str = ""
    image_size: int = 0
    protection_status: int = RBD_PROTECTION_STATUS_UNPROTECTED
    parent: ClsRbdParent = field(default_factory=ClsRbdParent)
    flags: int = 0
    timestamp: tuple[int, int] = (0, 0)
    snapshot_namespace: SnapshotNamespace = field(default_factory=SnapshotNamespace)
    child_count: int = 0
    parent_overlap: int | None = None

    @classmethod
    def decode(cls, d: Decoder) -> "ClsRbdSnap":
        s = cls()
        # DECODE_START(8): need the compat byte too, so peek it.
        d.need(2, "cls_rbd_snap header")
        compat = d.buf[d.pos + 1]
        with d.start("cls_rbd_snap", 8) as v:
            s.id = d.u64()
            s.name = d.string()
            s.image_size = d.u64()
            if compat < 8:
                d.u64()  # unused features field
            if v >= 2 and compat < 8:
                s.parent = ClsRbdParent.decode(d)
            if v >= 3:
                s.protection_status = d.u8()
            if v >= 4:
                s.flags = d.u64()
            if v >= 5:
                s.snapshot_namespace = SnapshotNamespace.decode(d)
            if v >= 6:
                s.timestamp = d.utime()
            if v >= 7:
                s.child_count = d.u32()
            if v >= 8:
                s.parent_overlap = _dec_optional_u64(d)
        return s

    def encode(self, e: Encoder) -> Encoder:
        with e.start(8, 8):
            e.u64(self.id).string(self.name).u64(self.image_size)
            e.u8(self.protection_status).u64(self.flags)
            self.snapshot_namespace.encode(e)
            e.utime(self.timestamp).u32(self.child_count)
            _enc_optional_u64(e, self.parent_overlap)
        return e


@dataclass
class SnapContext:
    """``SnapContext``: ``u64 seq``, ``vector<u64> snaps`` (newest first).

    ``to_tuple()`` gives the ``(seq, [snap ids])`` the ioctx write calls take.
    """

    seq: int = 0
    snaps: list[int] = field(default_factory=list)

    def is_valid(self) -> bool:
        """``SnapContext::is_valid()``: seq >= every snap, snaps strictly descending."""
        if self.snaps and self.snaps[0] > self.seq:
            return False
        return all(a > b for a, b in zip(self.snaps, self.snaps[1:]))

    def to_tuple(self) -> tuple[int, list[int]]:
        return self.seq, list(self.snaps)


# ---------------------------------------------------------------------------
# cls_rbd method payloads (rbd_header.<id>)


def encode_create(size: int, order: int, features: int, object_prefix: str, data_pool_id: int = -1) -> bytes:
    """``rbd.create``: size u64, order u8, features u64, object_prefix, data_pool_id s64."""
    return Encoder().u64(size).u8(order).u64(features).string(object_prefix).s64(data_pool_id).bytes()


def encode_snap_id(snap_id: int = CEPH_NOSNAP) -> bytes:
    """Input of get_size/get_flags/get_snapshot_name/snapshot_get/...: ``u64 snap_id``."""
    return Encoder().u64(snap_id).bytes()


def encode_get_features(snap_id: int = CEPH_NOSNAP, read_only: bool = False) -> bytes:
    """``rbd.get_features``: snap_id u64, read_only bool (the OSD picks the
    incompatible set for that access mode)."""
    return Encoder().u64(snap_id).bool(read_only).bytes()


def decode_get_features(data: bytes) -> tuple[int, int]:
    """-> ``(features, incompatible_features)``."""
    d = _dec(data)
    return d.u64(), d.u64()


def decode_get_size(data: bytes) -> tuple[int, int]:
    """``rbd.get_size`` reply: ``u8 order, u64 size`` -> ``(size bytes, order)``."""
    d = _dec(data)
    order = d.u8()
    return d.u64(), order


def decode_u64(data: bytes) -> int:
    """Replies that are one ``u64`` (get_flags, op_features_get, snapshot_get_limit,
    get_all_features)."""
    return _dec(data).u64()


def decode_s64(data: bytes) -> int:
    """Replies that are one ``s64`` (get_data_pool)."""
    return _dec(data).s64()


def decode_string(data: bytes) -> str:
    """Replies that are one string (get_id, get_object_prefix, dir_get_id,
    dir_get_name, get_snapshot_name)."""
    return _dec(data).string()


def decode_utime(data: bytes) -> tuple[int, int]:
    """``utime_t`` replies (get_create/access/modify_timestamp) -> ``(sec, nsec)``."""
    return _dec(data).utime()


def decode_get_snapcontext(data: bytes) -> SnapContext:
    """``rbd.get_snapcontext`` reply; DecodeError if the context is not valid."""
    d = _dec(data)
    snapc = SnapContext(d.u64(), d.list(Decoder.u64, 8))
    if not snapc.is_valid():
        raise DecodeError(f"invalid snap context seq={snapc.seq} snaps={snapc.snaps}")
    return snapc


def encode_set_stripe_unit_count(stripe_unit: int, stripe_count: int) -> bytes:
    return Encoder().u64(stripe_unit).u64(stripe_count).bytes()


def decode_get_stripe_unit_count(data: bytes) -> tuple[int, int]:
    """-> ``(stripe_unit bytes, stripe_count)``."""
    d = _dec(data)
    return d.u64(), d.u64()


def decode_get_protection_status(data: bytes) -> int:
    return _dec(data).u8()


def decode_snapshot_get(data: bytes) -> SnapshotInfo:
    return SnapshotInfo.decode(_dec(data))


def decode_parent_get(data: bytes) -> ParentImageSpec:
    return ParentImageSpec.decode(_dec(data))


def decode_parent_overlap_get(data: bytes) -> int | None:
    """``std::optional<u64>`` overlap in bytes (None: no overlap at this snapshot)."""
    return _dec_optional_u64(_dec(data))


def decode_get_parent(data: bytes) -> tuple[ParentImageSpec, int]:
    """Legacy ``rbd.get_parent``: pool s64, image_id, snap_id u64, overlap u64."""
    d = _dec(data)
    spec = ParentImageSpec(d.s64(), "", d.string(), d.u64())
    return spec, d.u64()


# rbd_id.<name>


def encode_set_id(image_id: str) -> bytes:
    return Encoder().string(image_id).bytes()


# rbd_directory


def encode_dir_add_image(name: str, image_id: str) -> bytes:
    """Input of ``dir_add_image`` and ``dir_remove_image``: name, id."""
    return Encoder().string(name).string(image_id).bytes()


encode_dir_remove_image = encode_dir_add_image


def encode_dir_list(start_after: str, max_return: int) -> bytes:
    return Encoder().string(start_after).u64(max_return).bytes()


def decode_dir_list(data: bytes) -> dict[str, str]:
    """``map<name, id>`` in name order."""
    return _dec(data).map(Decoder.string, Decoder.string, 8)


def encode_string(s: str) -> bytes:
    """Input that is one string (dir_get_id, dir_get_name)."""
    return Encoder().string(s).bytes()


# ---------------------------------------------------------------------------
# cls_lock types (src/cls/lock/cls_lock_types.h, cls_lock_ops.h)

LOCK_NONE = 0
LOCK_EXCLUSIVE = 1
LOCK_SHARED = 2
LOCK_EXCLUSIVE_EPHEMERAL = 3
LOCK_FLAG_MAY_RENEW = 0x1
LOCK_FLAG_MUST_RENEW = 0x2


@dataclass(frozen=True)
class LockerId:
    """``rados::cls::lock::locker_id_t``: who holds a lock (entity + cookie)."""

    locker: EntityNameT
    cookie: str

    @classmethod
    def decode(cls, d: Decoder) -> "LockerId":
        with d.start("locker_id_t", 1):
            return cls(EntityNameT.decode(d), d.string())

    def encode(self, e: Encoder) -> Encoder:
        with e.start(1, 1):
            self.locker.encode(e)
            e.string(self.cookie)
        return e


@dataclass
class LockerInfo:
    """``rados::cls::lock::locker_info_t``: expiration ``(sec, nsec)``, address, description.

    ``addr_raw`` keeps the address bytes as sent so re-encoding is exact.
    """

    expiration: tuple[int, int]
    addr: EntityAddr
    description: str
    addr_raw: bytes = b""

    @classmethod
    def decode(cls, d: Decoder) -> "LockerInfo":
        with d.start("locker_info_t", 1):
            exp = d.utime()
            at = d.pos
            addr = EntityAddr.decode(d)
            raw = bytes(d.buf[at : d.pos])
            return cls(exp, addr, d.string(), raw)

    def encode(self, e: Encoder) -> Encoder:
        with e.start(1, 1):
            e.utime(self.expiration)
            if self.addr_raw:
                e.raw(self.addr_raw)
            else:
                self.addr.encode(e)
            e.string(self.description)
        return e


def _dec_lockers(d: Decoder) -> dict[LockerId, LockerInfo]:
    return d.map(LockerId.decode, LockerInfo.decode, 12)


def _enc_lockers(e: Encoder, lockers: dict[LockerId, LockerInfo]) -> None:
    e.u32(len(lockers))
    for k, v in lockers.items():
        k.encode(e)
        v.encode(e)


@dataclass
class LockInfo:
    """``rados::cls::lock::lock_info_t`` and ``cls_lock_get_info_reply`` (same layout):
    lockers, ``u8 lock_type``, tag."""

    lockers: dict[LockerId, LockerInfo] = field(default_factory=dict)
    lock_type: int = LOCK_NONE
    tag: str = ""

    @classmethod
    def decode(cls, d: Decoder) -> "LockInfo":
        with d.start("lock_info_t", 1):
            return cls(_dec_lockers(d), d.u8(), d.string())

    def encode(self, e: Encoder) -> Encoder:
        with e.start(1, 1):
            _enc_lockers(e, self.lockers)
            e.u8(self.lock_type).string(self.tag)
        return e


@dataclass
class LockOp:
    """``cls_lock_lock_op`` (input of ``lock.lock``); ``duration`` is ``(sec, nsec)``,
    ``(0, 0)`` meaning no expiry."""

    name: str
    type: int
    cookie: str
    tag: str = ""
    description: str = ""
    duration: tuple[int, int] = (0, 0)
    flags: int = 0

    @classmethod
    def decode(cls, d: Decoder) -> "LockOp":
        with d.start("cls_lock_lock_op", 1):
            return cls(d.string(), d.u8(), d.string(), d.string(), d.string(), d.utime(), d.u8())

    def encode(self, e: Encoder) -> Encoder:
        with e.start(1, 1):
            e.string(self.name).u8(self.type).string(self.cookie).string(self.tag)
            e.string(self.description).utime(self.duration).u8(self.flags)
        return e


@dataclass
class UnlockOp:
    """``cls_lock_unlock_op``: name, cookie."""

    name: str
    cookie: str

    @classmethod
    def decode(cls, d: Decoder) -> "UnlockOp":
        with d.start("cls_lock_unlock_op", 1):
            return cls(d.string(), d.string())

    def encode(self, e: Encoder) -> Encoder:
        with e.start(1, 1):
            e.string(self.name).string(self.cookie)
        return e


@dataclass
class BreakOp:
    """``cls_lock_break_op``: name, locker (entity_name_t), cookie."""

    name: str
    locker: EntityNameT
    cookie: str

    @classmethod
    def decode(cls, d: Decoder) -> "BreakOp":
        with d.start("cls_lock_break_op", 1):
            return cls(d.string(), EntityNameT.decode(d), d.string())

    def encode(self, e: Encoder) -> Encoder:
        with e.start(1, 1):
            e.string(self.name)
            self.locker.encode(e)
            e.string(self.cookie)
        return e


@dataclass
class AssertOp:
    """``cls_lock_assert_op``: name, u8 type, cookie, tag."""

    name: str
    type: int
    cookie: str
    tag: str = ""

    @classmethod
    def decode(cls, d: Decoder) -> "AssertOp":
        with d.start("cls_lock_assert_op", 1):
            return cls(d.string(), d.u8(), d.string(), d.string())

    def encode(self, e: Encoder) -> Encoder:
        with e.start(1, 1):
            e.string(self.name).u8(self.type).string(self.cookie).string(self.tag)
        return e


def encode_get_info(name: str) -> bytes:
    """``cls_lock_get_info_op``: name."""
    e = Encoder()
    with e.start(1, 1):
        e.string(name)
    return e.bytes()


def decode_get_info(data: bytes) -> LockInfo:
    """``cls_lock_get_info_reply``."""
    return LockInfo.decode(_dec(data))


def decode_list_locks(data: bytes) -> list[str]:
    """``cls_lock_list_locks_reply``: list of lock names."""
    d = _dec(data)
    with d.start("cls_lock_list_locks_reply", 1):
        return d.list(Decoder.string, 4)


# ---------------------------------------------------------------------------
# async call helpers


async def _exec(ioctx: ClsIoctx, oid: str, method: str, data: bytes = b"", read_only: bool = True) -> bytes:
    return await ioctx.execute(oid, "rbd", method, data, read_only=read_only)


async def create_image(
    ioctx: ClsIoctx, oid: str, size: int, order: int, features: int, object_prefix: str, data_pool_id: int = -1
) -> None:
    await _exec(ioctx, oid, "create", encode_create(size, order, features, object_prefix, data_pool_id), False)


async def get_id(ioctx: ClsIoctx, oid: str) -> str:
    return decode_string(await _exec(ioctx, oid, "get_id"))


async def set_id(ioctx: ClsIoctx, oid: str, image_id: str) -> None:
    await _exec(ioctx, oid, "set_id", encode_set_id(image_id), False)


async def get_size(ioctx: ClsIoctx, oid: str, snap_id: int = CEPH_NOSNAP) -> tuple[int, int]:
    """-> ``(size bytes, order)``."""
    return decode_get_size(await _exec(ioctx, oid, "get_size", encode_snap_id(snap_id)))


async def get_features(
    ioctx: ClsIoctx, oid: str, snap_id: int = CEPH_NOSNAP, read_only: bool = False
) -> tuple[int, int]:
    """-> ``(features, incompatible)``."""
    return decode_get_features(await _exec(ioctx, oid, "get_features", encode_get_features(snap_id, read_only)))


async def get_object_prefix(ioctx: ClsIoctx, oid: str) -> str:
    return decode_string(await _exec(ioctx, oid, "get_object_prefix"))


async def get_data_pool(ioctx: ClsIoctx, oid: str) -> int:
    return decode_s64(await _exec(ioctx, oid, "get_data_pool"))


async def get_snapcontext(ioctx: ClsIoctx, oid: str) -> SnapContext:
    return decode_get_snapcontext(await _exec(ioctx, oid, "get_snapcontext"))


async def get_stripe_unit_count(ioctx: ClsIoctx, oid: str) -> tuple[int, int]:
    return decode_get_stripe_unit_count(await _exec(ioctx, oid, "get_stripe_unit_count"))


async def set_stripe_unit_count(ioctx: ClsIoctx, oid: str, stripe_unit: int, stripe_count: int) -> None:
    await _exec(ioctx, oid, "set_stripe_unit_count", encode_set_stripe_unit_count(stripe_unit, stripe_count), False)


async def get_flags(ioctx: ClsIoctx, oid: str, snap_id: int = CEPH_NOSNAP) -> int:
    return decode_u64(await _exec(ioctx, oid, "get_flags", encode_snap_id(snap_id)))


async def op_features_get(ioctx: ClsIoctx, oid: str) -> int:
    return decode_u64(await _exec(ioctx, oid, "op_features_get"))


async def snapshot_get_limit(ioctx: ClsIoctx, oid: str) -> int:
    return decode_u64(await _exec(ioctx, oid, "snapshot_get_limit"))


async def get_timestamp(ioctx: ClsIoctx, oid: str, which: str) -> tuple[int, int]:
    """``which`` is ``create``, ``access`` or ``modify``."""
    return decode_utime(await _exec(ioctx, oid, f"get_{which}_timestamp"))


async def set_timestamp(ioctx: ClsIoctx, oid: str, which: str) -> None:
    """``which`` is ``access`` or ``modify``; the OSD stamps its own clock."""
    await _exec(ioctx, oid, f"set_{which}_timestamp", b"", False)


async def get_snapshot_name(ioctx: ClsIoctx, oid: str, snap_id: int) -> str:
    return decode_string(await _exec(ioctx, oid, "get_snapshot_name", encode_snap_id(snap_id)))


async def snapshot_get(ioctx: ClsIoctx, oid: str, snap_id: int) -> SnapshotInfo:
    return decode_snapshot_get(await _exec(ioctx, oid, "snapshot_get", encode_snap_id(snap_id)))


async def get_protection_status(ioctx: ClsIoctx, oid: str, snap_id: int) -> int:
    return decode_get_protection_status(await _exec(ioctx, oid, "get_protection_status", encode_snap_id(snap_id)))


async def parent_get(ioctx: ClsIoctx, oid: str) -> ParentImageSpec:
    return decode_parent_get(await _exec(ioctx, oid, "parent_get"))


async def parent_overlap_get(ioctx: ClsIoctx, oid: str, snap_id: int = CEPH_NOSNAP) -> int | None:
    return decode_parent_overlap_get(await _exec(ioctx, oid, "parent_overlap_get", encode_snap_id(snap_id)))


async def get_parent(ioctx: ClsIoctx, oid: str, snap_id: int = CEPH_NOSNAP) -> tuple[ParentImageSpec, int]:
    return decode_get_parent(await _exec(ioctx, oid, "get_parent", encode_snap_id(snap_id)))


async def get_all_features(ioctx: ClsIoctx, oid: str) -> int:
    return decode_u64(await _exec(ioctx, oid, "get_all_features"))


async def dir_add_image(ioctx: ClsIoctx, oid: str, name: str, image_id: str) -> None:
    await _exec(ioctx, oid, "dir_add_image", encode_dir_add_image(name, image_id), False)


async def dir_remove_image(ioctx: ClsIoctx, oid: str, name: str, image_id: str) -> None:
    await _exec(ioctx, oid, "dir_remove_image", encode_dir_remove_image(name, image_id), False)


async def dir_list(ioctx: ClsIoctx, oid: str, start_after: str = "", max_return: int = 1024) -> dict[str, str]:
    return decode_dir_list(await _exec(ioctx, oid, "dir_list", encode_dir_list(start_after, max_return)))


async def dir_get_id(ioctx: ClsIoctx, oid: str, name: str) -> str:
    return decode_string(await _exec(ioctx, oid, "dir_get_id", encode_string(name)))


async def dir_get_name(ioctx: ClsIoctx, oid: str, image_id: str) -> str:
    return decode_string(await _exec(ioctx, oid, "dir_get_name", encode_string(image_id)))


async def lock_get_info(ioctx: ClsIoctx, oid: str, name: str) -> LockInfo:
    """``lock.get_info``."""
    return decode_get_info(await ioctx.execute(oid, "lock", "get_info", encode_get_info(name), read_only=True))


async def lock_list_locks(ioctx: ClsIoctx, oid: str) -> list[str]:
    return decode_list_locks(await ioctx.execute(oid, "lock", "list_locks", b"", read_only=True))


async def lock_lock(ioctx: ClsIoctx, oid: str, op: LockOp) -> None:
    await ioctx.execute(oid, "lock", "lock", op.encode(Encoder()).bytes())


async def lock_unlock(ioctx: ClsIoctx, oid: str, name: str, cookie: str) -> None:
    await ioctx.execute(oid, "lock", "unlock", UnlockOp(name, cookie).encode(Encoder()).bytes())


async def lock_break(ioctx: ClsIoctx, oid: str, name: str, locker: EntityNameT, cookie: str) -> None:
    await ioctx.execute(oid, "lock", "break_lock", BreakOp(name, locker, cookie).encode(Encoder()).bytes())


async def lock_assert_locked(ioctx: ClsIoctx, oid: str, op: AssertOp) -> None:
    await ioctx.execute(oid, "lock", "assert_locked", op.encode(Encoder()).bytes(), read_only=True)


# ---------------------------------------------------------------------------
# object map (cls_rbd object_map_*, set_flags)
# Object-map methods of cls_rbd (rbd_object_map.<id>[.<snap>]) and set_flags on the
# header: payloads as src/cls/rbd/cls_rbd_client.cc builds them.  The BitVector<2>
# codec itself lives in pyceph.rbd.object_map.


def encode_object_map_resize(object_count: int, default_state: int) -> bytes:
    """``rbd.object_map_resize``: ``u64 object_count, u8 default_state``."""
    return Encoder().u64(object_count).u8(default_state).bytes()


def encode_object_map_update(start: int, end: int, new_state: int, current_state: int | None = None) -> bytes:
    """``rbd.object_map_update``: ``u64 start, u64 end (exclusive), u8 new_state,
    optional<u8> current_state`` (boost::optional: ``u8 present`` then the value)."""
    e = Encoder().u64(start).u64(end).u8(new_state)
    if current_state is None:
        e.u8(0)
    else:
        e.u8(1).u8(current_state)
    return e.bytes()


def encode_set_flags(flags: int, mask: int, snap_id: int = CEPH_NOSNAP) -> bytes:
    """``rbd.set_flags``: ``u64 flags, u64 mask, u64 snap_id`` (bits in ``mask`` take
    their value from ``flags``)."""
    return Encoder().u64(flags).u64(mask).u64(snap_id).bytes()


async def set_flags(ioctx: ClsIoctx, oid: str, flags: int, mask: int, snap_id: int = CEPH_NOSNAP) -> None:
    await _exec(ioctx, oid, "set_flags", encode_set_flags(flags, mask, snap_id), False)


async def object_map_load(ioctx: ClsIoctx, oid: str) -> bytes:
    """``rbd.object_map_load``: the encoded BitVector<2> (footer without crcs)."""
    return await _exec(ioctx, oid, "object_map_load")


async def object_map_update(ioctx: ClsIoctx, oid: str, start: int, end: int, new_state: int,
                            current_state: int | None = None) -> None:
    """Update a (snapshot) object map object directly, without lock assertion
    (librbd's ``ObjectMap::aio_update`` with a snap id)."""
    await _exec(ioctx, oid, "object_map_update",
                encode_object_map_update(start, end, new_state, current_state), False)


async def object_map_resize(ioctx: ClsIoctx, oid: str, object_count: int, default_state: int) -> None:
    """Create (if missing) and resize an object map object (object_map/CreateRequest.cc)."""
    await _exec(ioctx, oid, "object_map_resize", encode_object_map_resize(object_count, default_state), False)


# ---------------------------------------------------------------------------
# header updates (set_size, set_features) and copy-up
# Payloads as src/cls/rbd/cls_rbd_client.cc (Pacific) builds them.  The ``*_op``
# builders return OSD ops so callers can put them in one compound op (e.g. after
# cls_lock ``assert_locked``, as librbd's ResizeRequest does).


def encode_set_size(size: int) -> bytes:
    """``rbd.set_size``: u64 size (bytes).  The OSD also clips the parent overlap."""
    return Encoder().u64(size).bytes()


def encode_set_features(features: int, mask: int) -> bytes:
    """``rbd.set_features``: u64 features, u64 mask (only masked bits change)."""
    return Encoder().u64(features).u64(mask).bytes()


def assert_locked_op(cookie: str, name: str = "rbd_lock", tag: str = "internal") -> Any:
    """The ``lock.assert_locked`` OSD op librbd puts before header/object-map updates
    made as the exclusive-lock owner (``ExclusiveLock::assert_header_locked``)."""
    return O.call("lock", "assert_locked", AssertOp(name, LOCK_EXCLUSIVE, cookie, tag).encode(Encoder()).bytes())


def set_size_op(size: int) -> Any:
    return O.call("rbd", "set_size", encode_set_size(size))


def copyup_op(data: bytes) -> Any:
    """``rbd.copyup``: write ``data`` at offset 0 unless the object exists (then a no-op);
    empty data creates nothing (cls_rbd.cc ``copyup``)."""
    return O.call("rbd", "copyup", bytes(data))


async def set_size(ioctx: ClsIoctx, oid: str, size: int) -> None:
    await _exec(ioctx, oid, "set_size", encode_set_size(size), False)


async def set_features(ioctx: ClsIoctx, oid: str, features: int, mask: int) -> None:
    await _exec(ioctx, oid, "set_features", encode_set_features(features, mask), False)


# ---------------------------------------------------------------------------
# snapshots, parents and children
# Snapshot, parent/child and metadata payloads (src/cls/rbd/cls_rbd_client.cc,
# Pacific).  ``rbd_children`` (v1 clones) lives in each pool; the v2 child list
# lives in the parent's header, per snapshot.

RBD_CHILDREN = "rbd_children"
RBD_TRASH = "rbd_trash"


def encode_snapshot_add(snap_id: int, name: str, namespace: "SnapshotNamespace | None" = None) -> bytes:
    """``rbd.snapshot_add``: name, u64 snap_id, SnapshotNamespace (user by default)."""
    e = Encoder().string(name).u64(snap_id)
    (namespace or SnapshotNamespace()).encode(e)
    return e.bytes()


def encode_snapshot_rename(snap_id: int, dst_name: str) -> bytes:
    """``rbd.snapshot_rename``: u64 src snap_id, new name."""
    return Encoder().u64(snap_id).string(dst_name).bytes()


def encode_set_protection_status(snap_id: int, status: int) -> bytes:
    """``rbd.set_protection_status``: u64 snap_id, u8 RBD_PROTECTION_STATUS_*."""
    return Encoder().u64(snap_id).u8(status).bytes()


def encode_parent_child(pool_id: int, image_id: str, snap_id: int, child_id: str | None = None) -> bytes:
    """``add_child``/``remove_child`` (with ``child_id``) and ``get_children`` (without) on
    ``rbd_children``: s64 parent pool, parent image id, u64 parent snap id[, child image id].
    v1 clones carry no namespace."""
    e = Encoder().s64(pool_id).string(image_id).u64(snap_id)
    if child_id is not None:
        e.string(child_id)
    return e.bytes()


def decode_string_set(data: bytes) -> list[str]:
    """``std::set<std::string>`` (get_children reply), in stored order."""
    return _dec_string_set(_dec(data))


def encode_child_attach(snap_id: int, child: ChildImageSpec) -> bytes:
    """``child_attach``/``child_detach`` on the parent header: u64 snap_id, ChildImageSpec."""
    e = Encoder().u64(snap_id)
    child.encode(e)
    return e.bytes()


def decode_children_list(data: bytes) -> list[ChildImageSpec]:
    """``children_list`` reply: ``std::set<ChildImageSpec>``."""
    return _dec(data).list(ChildImageSpec.decode, 4)


def encode_parent_attach(spec: ParentImageSpec, overlap: int, reattach: bool = False) -> bytes:
    """``parent_attach``: ParentImageSpec, u64 overlap (bytes), bool reattach."""
    e = Encoder()
    spec.encode(e)
    return e.u64(overlap).bool(reattach).bytes()


def encode_set_parent(spec: ParentImageSpec, overlap: int) -> bytes:
    """Legacy ``set_parent``: s64 pool, image id, u64 snap id, u64 overlap (no namespace)."""
    return Encoder().s64(spec.pool_id).string(spec.image_id).u64(spec.snap_id).u64(overlap).bytes()


def encode_op_features_set(op_features: int, mask: int) -> bytes:
    """``op_features_set``: u64 op_features, u64 mask."""
    return Encoder().u64(op_features).u64(mask).bytes()


def encode_metadata_list(start: str = "", max_return: int = 0) -> bytes:
    """``metadata_list``: start-after key, u64 max_return (0: the OSD's limit)."""
    return Encoder().string(start).u64(max_return).bytes()


def decode_metadata_list(data: bytes) -> dict[str, bytes]:
    """``map<string, bufferlist>``."""
    return _dec(data).map(Decoder.string, Decoder.blob, 8)


def encode_metadata_set(pairs: dict[str, bytes]) -> bytes:
    """``metadata_set``: ``map<string, bufferlist>``."""
    return Encoder().map(dict(sorted(pairs.items())), Encoder.string, Encoder.blob).bytes()


@dataclass
class TrashImageSpec:
    """``cls::rbd::TrashImageSpec`` (reply of ``trash_get``): ENCODE_START(2, 1):
    u8 source, name, deletion_time, deferment_end_time (utime ``(sec, nsec)``), u8 state (v2)."""

    source: int = 0
    name: str = ""
    deletion_time: tuple[int, int] = (0, 0)
    deferment_end_time: tuple[int, int] = (0, 0)
    state: int = 0

    @classmethod
    def decode(cls, d: Decoder) -> "TrashImageSpec":
        with d.start("TrashImageSpec", 2) as v:
            t = cls(d.u8(), d.string(), d.utime(), d.utime())
            if v >= 2:
                t.state = d.u8()
        return t


async def snapshot_add(ioctx: ClsIoctx, oid: str, snap_id: int, name: str,
                       namespace: "SnapshotNamespace | None" = None) -> None:
    await _exec(ioctx, oid, "snapshot_add", encode_snapshot_add(snap_id, name, namespace), False)


async def snapshot_remove(ioctx: ClsIoctx, oid: str, snap_id: int) -> None:
    await _exec(ioctx, oid, "snapshot_remove", encode_snap_id(snap_id), False)


async def snapshot_rename(ioctx: ClsIoctx, oid: str, snap_id: int, dst_name: str) -> None:
    await _exec(ioctx, oid, "snapshot_rename", encode_snapshot_rename(snap_id, dst_name), False)


async def snapshot_trash_add(ioctx: ClsIoctx, oid: str, snap_id: int) -> None:
    await _exec(ioctx, oid, "snapshot_trash_add", encode_snap_id(snap_id), False)


async def set_protection_status(ioctx: ClsIoctx, oid: str, snap_id: int, status: int) -> None:
    await _exec(ioctx, oid, "set_protection_status", encode_set_protection_status(snap_id, status), False)


async def get_snapshot_timestamp(ioctx: ClsIoctx, oid: str, snap_id: int) -> tuple[int, int]:
    return decode_utime(await _exec(ioctx, oid, "get_snapshot_timestamp", encode_snap_id(snap_id)))


async def add_child(ioctx: ClsIoctx, spec: ParentImageSpec, child_id: str) -> None:
    """v1 clone link in this pool's ``rbd_children``."""
    data = encode_parent_child(spec.pool_id, spec.image_id, spec.snap_id, child_id)
    await _exec(ioctx, RBD_CHILDREN, "add_child", data, False)


async def remove_child(ioctx: ClsIoctx, spec: ParentImageSpec, child_id: str) -> None:
    data = encode_parent_child(spec.pool_id, spec.image_id, spec.snap_id, child_id)
    await _exec(ioctx, RBD_CHILDREN, "remove_child", data, False)


async def get_children(ioctx: ClsIoctx, spec: ParentImageSpec) -> list[str]:
    """Child image ids in this pool's ``rbd_children`` (ObjectNotFound: none)."""
    data = encode_parent_child(spec.pool_id, spec.image_id, spec.snap_id)
    return decode_string_set(await _exec(ioctx, RBD_CHILDREN, "get_children", data))


async def child_attach(ioctx: ClsIoctx, parent_oid: str, snap_id: int, child: ChildImageSpec) -> None:
    await _exec(ioctx, parent_oid, "child_attach", encode_child_attach(snap_id, child), False)


async def child_detach(ioctx: ClsIoctx, parent_oid: str, snap_id: int, child: ChildImageSpec) -> None:
    await _exec(ioctx, parent_oid, "child_detach", encode_child_attach(snap_id, child), False)


async def children_list(ioctx: ClsIoctx, parent_oid: str, snap_id: int) -> list[ChildImageSpec]:
    return decode_children_list(await _exec(ioctx, parent_oid, "children_list", encode_snap_id(snap_id)))


async def parent_attach(ioctx: ClsIoctx, oid: str, spec: ParentImageSpec, overlap: int,
                        reattach: bool = False) -> None:
    await _exec(ioctx, oid, "parent_attach", encode_parent_attach(spec, overlap, reattach), False)


async def parent_detach(ioctx: ClsIoctx, oid: str) -> None:
    await _exec(ioctx, oid, "parent_detach", b"", False)


async def set_parent(ioctx: ClsIoctx, oid: str, spec: ParentImageSpec, overlap: int) -> None:
    await _exec(ioctx, oid, "set_parent", encode_set_parent(spec, overlap), False)


async def remove_parent(ioctx: ClsIoctx, oid: str) -> None:
    await _exec(ioctx, oid, "remove_parent", b"", False)


async def op_features_set(ioctx: ClsIoctx, oid: str, op_features: int, mask: int) -> None:
    await _exec(ioctx, oid, "op_features_set", encode_op_features_set(op_features, mask), False)


async def metadata_list(ioctx: ClsIoctx, oid: str, start: str = "", max_return: int = 0) -> dict[str, bytes]:
    return decode_metadata_list(await _exec(ioctx, oid, "metadata_list", encode_metadata_list(start, max_return)))


async def metadata_set(ioctx: ClsIoctx, oid: str, pairs: dict[str, bytes]) -> None:
    await _exec(ioctx, oid, "metadata_set", encode_metadata_set(pairs), False)


async def trash_get(ioctx: ClsIoctx, image_id: str) -> TrashImageSpec:
    """``trash_get`` on ``rbd_trash``: the trash entry of ``image_id``."""
    return TrashImageSpec.decode(_dec(await _exec(ioctx, RBD_TRASH, "trash_get", encode_string(image_id))))
