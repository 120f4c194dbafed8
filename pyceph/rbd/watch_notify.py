"""librbd's header watch/notify payloads: ``NotifyMessage`` and ``ResponseMessage``.

Formats follow ``src/librbd/WatchNotifyTypes.{h,cc}`` and ``src/librbd/watcher/Types.h``
(Pacific) and what krbd sends (``drivers/block/rbd.c``: ``__rbd_notify_op_lock``,
``__rbd_acknowledge_notify``):

- ``NotifyMessage``: ``ENCODE_START(7, 1)``, ``u32 notify_op``, then the op's payload.
  Payload fields depend on the *message* version (``struct_v``): the lock payloads carry
  a ``ClientId`` only from v2 (krbd sends v2), ``RequestLockPayload.force`` from v3,
  ``ResizePayload.allow_shrink`` from v4, the snapshot namespace from v5/v6, and from v7
  (Pacific) every maintenance op carries an ``AsyncRequestId`` (snapshot, rename,
  update-features and metadata payloads append it; ``SnapCreatePayload`` adds ``flags``).  A decoder skips whatever
  follows the fields it knows (the envelope length), so unknown ops decode as
  :class:`UnknownPayload`.
- An empty notification body is a legacy header update (``ImageWatcher::handle_notify``).
- ``ResponseMessage``: ``ENCODE_START(1, 1)``, ``s32 result`` — the notify-ack payload the
  lock owner sends back for ``REQUEST_LOCK`` (and for async requests it refuses).
- ``ClientId``: ``u64 gid`` (the rados instance id), ``u64 handle`` (the watch cookie);
  ``AsyncRequestId``: ``ClientId``, ``u64 request_id``.

All decoders raise :class:`pyceph.errors.DecodeError` on truncated input.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import ClassVar

from ..encoding import Decoder, Encoder
from ..errors import DecodeError
from .cls_client import SnapshotNamespace

NOTIFY_OP_ACQUIRED_LOCK = 0
NOTIFY_OP_RELEASED_LOCK = 1
NOTIFY_OP_REQUEST_LOCK = 2
NOTIFY_OP_HEADER_UPDATE = 3
NOTIFY_OP_ASYNC_PROGRESS = 4
NOTIFY_OP_ASYNC_COMPLETE = 5
NOTIFY_OP_FLATTEN = 6
NOTIFY_OP_RESIZE = 7
NOTIFY_OP_SNAP_CREATE = 8
NOTIFY_OP_SNAP_REMOVE = 9
NOTIFY_OP_REBUILD_OBJECT_MAP = 10
NOTIFY_OP_SNAP_RENAME = 11
NOTIFY_OP_SNAP_PROTECT = 12
NOTIFY_OP_SNAP_UNPROTECT = 13
NOTIFY_OP_RENAME = 14
NOTIFY_OP_UPDATE_FEATURES = 15
NOTIFY_OP_MIGRATE = 16
NOTIFY_OP_SPARSIFY = 17
NOTIFY_OP_QUIESCE = 18
NOTIFY_OP_UNQUIESCE = 19
NOTIFY_OP_METADATA_UPDATE = 20

NOTIFY_OP_NAMES = {
    0: "AcquiredLock", 1: "ReleasedLock", 2: "RequestLock", 3: "HeaderUpdate",
    4: "AsyncProgress", 5: "AsyncComplete", 6: "Flatten", 7: "Resize", 8: "SnapCreate",
    9: "SnapRemove", 10: "RebuildObjectMap", 11: "SnapRename", 12: "SnapProtect",
    13: "SnapUnprotect", 14: "Rename", 15: "UpdateFeatures", 16: "Migrate", 17: "Sparsify",
    18: "Quiesce", 19: "Unquiesce", 20: "MetadataUpdate",
}

#: the NotifyMessage version librbd (Pacific) writes
NOTIFY_MESSAGE_VERSION = 7


def notify_op_name(op: int) -> str:
    return NOTIFY_OP_NAMES.get(op, f"Unknown ({op})")


@dataclass(frozen=True, order=True)
class ClientId:
    """``watcher::ClientId``: who sent a notification / owns the lock.

    ``gid`` is the client's global id (``rados.get_instance_id()``), ``handle`` its watch
    cookie on the header.  ``ClientId()`` (0, 0) means "nobody".
    """

    gid: int = 0
    handle: int = 0

    def is_empty(self) -> bool:
        return self.gid == 0 and self.handle == 0

    @classmethod
    def decode(cls, d: Decoder) -> "ClientId":
        return cls(d.u64(), d.u64())

    def encode(self, e: Encoder) -> Encoder:
        return e.u64(self.gid).u64(self.handle)

    def __str__(self) -> str:
        return f"[{self.gid},{self.handle}]"


@dataclass(frozen=True)
class AsyncRequestId:
    """``AsyncRequestId``: ``ClientId`` then ``u64 request_id``."""

    client_id: ClientId = ClientId()
    request_id: int = 0

    @classmethod
    def decode(cls, d: Decoder) -> "AsyncRequestId":
        return cls(ClientId.decode(d), d.u64())

    def encode(self, e: Encoder) -> Encoder:
        self.client_id.encode(e)
        return e.u64(self.request_id)


# ---------------------------------------------------------------------------
# payloads


class Payload:
    """Base of the payload variants.  ``NOTIFY_OP`` is the op number on the wire;
    ``CHECK_FOR_REFRESH`` mirrors librbd (the receiver refreshes the image first)."""

    NOTIFY_OP: ClassVar[int] = -1
    CHECK_FOR_REFRESH: ClassVar[bool] = False

    @property
    def notify_op(self) -> int:
        return self.NOTIFY_OP

    def encode(self, e: Encoder) -> None:
        raise NotImplementedError

    @classmethod
    def decode(cls, version: int, d: Decoder) -> "Payload":
        raise NotImplementedError


@dataclass
class _LockPayload(Payload):
    client_id: ClientId = ClientId()

    def encode(self, e: Encoder) -> None:
        self.client_id.encode(e)

    @classmethod
    def decode(cls, version: int, d: Decoder) -> "_LockPayload":
        return cls(ClientId.decode(d) if version >= 2 else ClientId())


@dataclass
class AcquiredLockPayload(_LockPayload):
    NOTIFY_OP: ClassVar[int] = NOTIFY_OP_ACQUIRED_LOCK


@dataclass
class ReleasedLockPayload(_LockPayload):
    NOTIFY_OP: ClassVar[int] = NOTIFY_OP_RELEASED_LOCK


@dataclass
class RequestLockPayload(Payload):
    """``client_id`` (v2+), ``bool force`` (v3+)."""

    NOTIFY_OP: ClassVar[int] = NOTIFY_OP_REQUEST_LOCK
    client_id: ClientId = ClientId()
    force: bool = False

    def encode(self, e: Encoder) -> None:
        self.client_id.encode(e)
        e.bool(self.force)

    @classmethod
    def decode(cls, version: int, d: Decoder) -> "RequestLockPayload":
        cid = ClientId.decode(d) if version >= 2 else ClientId()
        force = d.bool() if version >= 3 else False
        return cls(cid, force)


@dataclass
class HeaderUpdatePayload(Payload):
    """No fields."""

    NOTIFY_OP: ClassVar[int] = NOTIFY_OP_HEADER_UPDATE

    def encode(self, e: Encoder) -> None:
        pass

    @classmethod
    def decode(cls, version: int, d: Decoder) -> "HeaderUpdatePayload":
        return cls()


@dataclass
class _AsyncRequestPayload(Payload):
    async_request_id: AsyncRequestId = AsyncRequestId()

    def encode(self, e: Encoder) -> None:
        self.async_request_id.encode(e)

    @classmethod
    def decode(cls, version: int, d: Decoder) -> "_AsyncRequestPayload":
        return cls(AsyncRequestId.decode(d))


@dataclass
class AsyncProgressPayload(_AsyncRequestPayload):
    """async_request_id, ``u64 offset``, ``u64 total``."""

    NOTIFY_OP: ClassVar[int] = NOTIFY_OP_ASYNC_PROGRESS
    offset: int = 0
    total: int = 0

    def encode(self, e: Encoder) -> None:
        self.async_request_id.encode(e)
        e.u64(self.offset).u64(self.total)

    @classmethod
    def decode(cls, version: int, d: Decoder) -> "AsyncProgressPayload":
        return cls(AsyncRequestId.decode(d), d.u64(), d.u64())


@dataclass
class AsyncCompletePayload(_AsyncRequestPayload):
    """async_request_id, ``s32 result``."""

    NOTIFY_OP: ClassVar[int] = NOTIFY_OP_ASYNC_COMPLETE
    result: int = 0

    def encode(self, e: Encoder) -> None:
        self.async_request_id.encode(e)
        e.s32(self.result)

    @classmethod
    def decode(cls, version: int, d: Decoder) -> "AsyncCompletePayload":
        return cls(AsyncRequestId.decode(d), d.s32())


@dataclass
class FlattenPayload(_AsyncRequestPayload):
    NOTIFY_OP: ClassVar[int] = NOTIFY_OP_FLATTEN
    CHECK_FOR_REFRESH: ClassVar[bool] = True


@dataclass
class RebuildObjectMapPayload(_AsyncRequestPayload):
    NOTIFY_OP: ClassVar[int] = NOTIFY_OP_REBUILD_OBJECT_MAP
    CHECK_FOR_REFRESH: ClassVar[bool] = True


@dataclass
class MigratePayload(_AsyncRequestPayload):
    NOTIFY_OP: ClassVar[int] = NOTIFY_OP_MIGRATE
    CHECK_FOR_REFRESH: ClassVar[bool] = True


@dataclass
class QuiescePayload(_AsyncRequestPayload):
    NOTIFY_OP: ClassVar[int] = NOTIFY_OP_QUIESCE


@dataclass
class UnquiescePayload(_AsyncRequestPayload):
    NOTIFY_OP: ClassVar[int] = NOTIFY_OP_UNQUIESCE


@dataclass
class ResizePayload(Payload):
    """``u64 size``, async_request_id, ``bool allow_shrink`` (v4+)."""

    NOTIFY_OP: ClassVar[int] = NOTIFY_OP_RESIZE
    CHECK_FOR_REFRESH: ClassVar[bool] = True
    size: int = 0
    async_request_id: AsyncRequestId = AsyncRequestId()
    allow_shrink: bool = True

    def encode(self, e: Encoder) -> None:
        e.u64(self.size)
        self.async_request_id.encode(e)
        e.bool(self.allow_shrink)

    @classmethod
    def decode(cls, version: int, d: Decoder) -> "ResizePayload":
        size = d.u64()
        rid = AsyncRequestId.decode(d)
        shrink = d.bool() if version >= 4 else True
        return cls(size, rid, shrink)


@dataclass
class _SnapPayload(Payload):
    """``SnapPayloadBase``: snap_name, the ``cls::rbd::SnapshotNamespace`` (v6+), then the
    ``AsyncRequestId`` (v7+, Pacific)."""

    CHECK_FOR_REFRESH: ClassVar[bool] = True
    snap_name: str = ""
    snap_namespace: SnapshotNamespace = field(default_factory=SnapshotNamespace)
    async_request_id: AsyncRequestId = AsyncRequestId()

    def _encode_base(self, e: Encoder) -> None:
        e.string(self.snap_name)
        self.snap_namespace.encode(e)
        self.async_request_id.encode(e)

    def encode(self, e: Encoder) -> None:
        self._encode_base(e)

    @staticmethod
    def _decode_base(version: int, d: Decoder) -> tuple[str, SnapshotNamespace, AsyncRequestId]:
        name = d.string()
        ns = SnapshotNamespace.decode(d) if version >= 6 else SnapshotNamespace()
        rid = AsyncRequestId.decode(d) if version >= 7 else AsyncRequestId()
        return name, ns, rid

    @classmethod
    def decode(cls, version: int, d: Decoder) -> "_SnapPayload":
        return cls(*cls._decode_base(version, d))


@dataclass
class SnapRemovePayload(_SnapPayload):
    NOTIFY_OP: ClassVar[int] = NOTIFY_OP_SNAP_REMOVE


@dataclass
class SnapProtectPayload(_SnapPayload):
    NOTIFY_OP: ClassVar[int] = NOTIFY_OP_SNAP_PROTECT


@dataclass
class SnapUnprotectPayload(_SnapPayload):
    NOTIFY_OP: ClassVar[int] = NOTIFY_OP_SNAP_UNPROTECT


@dataclass
class SnapCreatePayload(_SnapPayload):
    """The snap base, then ``u64 flags`` (v7+); a v5 message carries the namespace
    after the name instead (the v5 layout)."""

    NOTIFY_OP: ClassVar[int] = NOTIFY_OP_SNAP_CREATE
    flags: int = 0

    def encode(self, e: Encoder) -> None:
        self._encode_base(e)
        e.u64(self.flags)

    @classmethod
    def decode(cls, version: int, d: Decoder) -> "SnapCreatePayload":
        name, ns, rid = cls._decode_base(version, d)
        if version == 5:
            ns = SnapshotNamespace.decode(d)
        flags = d.u64() if version >= 7 else 0
        return cls(name, ns, rid, flags)


@dataclass
class SnapRenamePayload(_SnapPayload):
    """``u64 snap_id`` (source), then the snap base with the new name."""

    NOTIFY_OP: ClassVar[int] = NOTIFY_OP_SNAP_RENAME
    snap_id: int = 0

    def encode(self, e: Encoder) -> None:
        e.u64(self.snap_id)
        self._encode_base(e)

    @classmethod
    def decode(cls, version: int, d: Decoder) -> "SnapRenamePayload":
        snap_id = d.u64()
        name, ns, rid = cls._decode_base(version, d)
        return cls(name, ns, rid, snap_id)


@dataclass
class RenamePayload(Payload):
    """image_name, then the ``AsyncRequestId`` (v7+)."""

    NOTIFY_OP: ClassVar[int] = NOTIFY_OP_RENAME
    CHECK_FOR_REFRESH: ClassVar[bool] = True
    image_name: str = ""
    async_request_id: AsyncRequestId = AsyncRequestId()

    def encode(self, e: Encoder) -> None:
        e.string(self.image_name)
        self.async_request_id.encode(e)

    @classmethod
    def decode(cls, version: int, d: Decoder) -> "RenamePayload":
        name = d.string()
        return cls(name, AsyncRequestId.decode(d) if version >= 7 else AsyncRequestId())


@dataclass
class UpdateFeaturesPayload(Payload):
    """``u64 features``, ``bool enabled``, then the ``AsyncRequestId`` (v7+)."""

    NOTIFY_OP: ClassVar[int] = NOTIFY_OP_UPDATE_FEATURES
    CHECK_FOR_REFRESH: ClassVar[bool] = True
    features: int = 0
    enabled: bool = False
    async_request_id: AsyncRequestId = AsyncRequestId()

    def encode(self, e: Encoder) -> None:
        e.u64(self.features).bool(self.enabled)
        self.async_request_id.encode(e)

    @classmethod
    def decode(cls, version: int, d: Decoder) -> "UpdateFeaturesPayload":
        features, enabled = d.u64(), d.bool()
        return cls(features, enabled, AsyncRequestId.decode(d) if version >= 7 else AsyncRequestId())


@dataclass
class MetadataUpdatePayload(Payload):
    """``string key``, ``optional<string> value`` (None: the key was removed), then the
    ``AsyncRequestId`` (v7+)."""

    NOTIFY_OP: ClassVar[int] = NOTIFY_OP_METADATA_UPDATE
    key: str = ""
    value: str | None = None
    async_request_id: AsyncRequestId = AsyncRequestId()

    def encode(self, e: Encoder) -> None:
        e.string(self.key)
        if self.value is None:
            e.u8(0)
        else:
            e.u8(1).string(self.value)
        self.async_request_id.encode(e)

    @classmethod
    def decode(cls, version: int, d: Decoder) -> "MetadataUpdatePayload":
        key = d.string()
        value = d.string() if d.bool() else None
        return cls(key, value, AsyncRequestId.decode(d) if version >= 7 else AsyncRequestId())


@dataclass
class SparsifyPayload(_AsyncRequestPayload):
    """async_request_id, ``u64 sparse_size``."""

    NOTIFY_OP: ClassVar[int] = NOTIFY_OP_SPARSIFY
    CHECK_FOR_REFRESH: ClassVar[bool] = True
    sparse_size: int = 0

    def encode(self, e: Encoder) -> None:
        self.async_request_id.encode(e)
        e.u64(self.sparse_size)

    @classmethod
    def decode(cls, version: int, d: Decoder) -> "SparsifyPayload":
        return cls(AsyncRequestId.decode(d), d.u64())


@dataclass
class UnknownPayload(Payload):
    """An op this client does not know: ``op`` and the undecoded rest of the message.
    (librbd refuses to encode one; we re-emit it verbatim for tests.)"""

    op: int = -1
    raw: bytes = b""

    @property
    def notify_op(self) -> int:
        return self.op

    def encode(self, e: Encoder) -> None:
        e.raw(self.raw)

    @classmethod
    def decode(cls, version: int, d: Decoder) -> "UnknownPayload":
        return cls(-1, d.raw(d.remaining))


PAYLOAD_TYPES: dict[int, type[Payload]] = {
    p.NOTIFY_OP: p
    for p in (
        AcquiredLockPayload, ReleasedLockPayload, RequestLockPayload, HeaderUpdatePayload,
        AsyncProgressPayload, AsyncCompletePayload, FlattenPayload, ResizePayload,
        SnapCreatePayload, SnapRemovePayload, RebuildObjectMapPayload, SnapRenamePayload,
        SnapProtectPayload, SnapUnprotectPayload, RenamePayload, UpdateFeaturesPayload,
        MigratePayload, SparsifyPayload, QuiescePayload, UnquiescePayload, MetadataUpdatePayload,
    )
}


@dataclass
class NotifyMessage:
    """``watch_notify::NotifyMessage``: a payload and the version it was encoded with.

    ``encode()`` always writes version 7 / compat 1 like Pacific librbd;
    ``decode(data)`` accepts any version with compat <= 1 (krbd sends v2) and an empty
    body (legacy header update).  Raises DecodeError on truncation.
    """

    payload: Payload
    struct_v: int = NOTIFY_MESSAGE_VERSION

    @classmethod
    def header_update(cls) -> "NotifyMessage":
        return cls(HeaderUpdatePayload())

    @classmethod
    def acquired_lock(cls, client_id: ClientId) -> "NotifyMessage":
        return cls(AcquiredLockPayload(client_id))

    @classmethod
    def released_lock(cls, client_id: ClientId) -> "NotifyMessage":
        return cls(ReleasedLockPayload(client_id))

    @classmethod
    def request_lock(cls, client_id: ClientId, force: bool = False) -> "NotifyMessage":
        return cls(RequestLockPayload(client_id, force))

    @property
    def notify_op(self) -> int:
        return self.payload.notify_op

    @property
    def check_for_refresh(self) -> bool:
        return self.payload.CHECK_FOR_REFRESH

    def encode(self, e: Encoder | None = None) -> bytes:
        e = e if e is not None else Encoder()
        with e.start(NOTIFY_MESSAGE_VERSION, 1):
            e.u32(self.payload.notify_op & 0xFFFFFFFF)
            self.payload.encode(e)
        return e.bytes()

    @classmethod
    def decode_from(cls, d: Decoder) -> "NotifyMessage":
        with d.start("NotifyMessage", 1) as v:
            op = d.u32()
            ptype = PAYLOAD_TYPES.get(op)
            if ptype is None:
                payload: Payload = UnknownPayload(op, d.raw(d.remaining))
            else:
                payload = ptype.decode(v, d)
        return cls(payload, v)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> "NotifyMessage":
        if len(data) == 0:
            return cls(HeaderUpdatePayload(), 0)
        return cls.decode_from(Decoder(data))

    def __str__(self) -> str:
        return f"NotifyMessage(v{self.struct_v} {notify_op_name(self.notify_op)} {self.payload})"


@dataclass
class ResponseMessage:
    """``watch_notify::ResponseMessage``: ``ENCODE_START(1, 1)``, ``s32 result``
    (0 or a negative errno)."""

    result: int = 0

    def encode(self, e: Encoder | None = None) -> bytes:
        e = e if e is not None else Encoder()
        with e.start(1, 1):
            e.s32(self.result)
        return e.bytes()

    @classmethod
    def decode_from(cls, d: Decoder) -> "ResponseMessage":
        with d.start("ResponseMessage", 1):
            return cls(d.s32())

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> "ResponseMessage":
        return cls.decode_from(Decoder(data))


def lock_owner_response(acks: dict[tuple[int, int], bytes]) -> int:
    """The lock owner's answer among a notify's acks, as librbd's ``NotifyLockOwner``
    and krbd's ``rbd_request_lock`` read it: only the owner acks with a payload.

    Returns the owner's ``ResponseMessage.result``; ``-ETIMEDOUT`` when no ack carries a
    payload (no owner answered); ``-EIO`` if two do (duplicate owners); ``-EINVAL`` if
    the payload does not decode.
    """
    replies = [p for p in acks.values() if p]
    if not replies:
        return -errno.ETIMEDOUT
    if len(replies) > 1:
        return -errno.EIO
    try:
        return ResponseMessage.decode(replies[0]).result
    except DecodeError:
        return -errno.EINVAL


def encode_lock_notify(op: int, client_id: ClientId) -> bytes:
    """An ACQUIRED/RELEASED/REQUEST_LOCK NotifyMessage from ``client_id`` (v7)."""
    ptype = PAYLOAD_TYPES[op]
    return NotifyMessage(ptype(client_id)).encode()  # type: ignore[call-arg]
