"""RBD image snapshots: create, list, remove, rename, rollback, protect, unprotect.

Every function takes an open :class:`pyceph.rbd.image.AsyncImage` (read-write, at
the head) and follows librbd (Pacific):

- create: ``src/librbd/operation/SnapshotCreateRequest.cc`` -- block writes, get a
  self-managed snap id from the monitor (``ioctx.selfmanaged_snap_create``), add the
  record with ``rbd.snapshot_add`` (preceded in the same compound op by
  ``lock.assert_locked`` when we own the exclusive lock; -ESTALE means another
  client took a newer id: allocate again), snapshot the object map, switch the
  image's write snap context, unblock writes, notify HEADER_UPDATE;
- remove: ``SnapshotRemoveRequest.cc`` -- a protected snapshot is refused (EBUSY);
  the snapshot is first moved to the trash namespace (``snapshot_trash_add``) and
  stays there while clone-v2 children still use it; otherwise the object map
  snapshot is dropped, the pool snap id released and the record removed;
- rename: ``SnapshotRenameRequest.cc`` (``snapshot_rename``);
- rollback: ``SnapshotRollbackRequest.cc`` -- resize to the snapshot's size, roll
  the object map back, then CEPH_OSD_OP_ROLLBACK on every data object;
- protect / unprotect: ``SnapshotProtectRequest.cc`` / ``SnapshotUnprotectRequest.cc``
  (unprotect goes through UNPROTECTING while it scans ``rbd_children`` of every pool
  for v1 clones; EBUSY and back to PROTECTED if any -- v2 clones do not block it,
  as with Pacific's librbd);
- list: ``src/librbd/api/Snapshot.cc`` (``snapshot_get`` and
  ``get_protection_status`` per snap id of the header's snap context).

Snapshot records are read fresh from the header (``rbd.get_snapcontext`` +
``rbd.snapshot_get``), never only from the image's cache, because other clients
may have changed them.  Errors: ImageNotFound (no such snapshot), ImageExists
(name taken), ImageBusy (protected / has children), InvalidArgumentError,
ReadOnlyImage, FunctionNotSupported (errno ENOSYS: layering missing), or the
ioctx's typed errors.
"""

from __future__ import annotations

import asyncio
import builtins
import errno
import logging
from typing import Any, Awaitable, Callable

from ..errors import (
    Error,
    FunctionNotSupported,
    ImageBusy,
    ImageExists,
    ImageNotFound,
    InvalidArgumentError,
    ObjectNotFound,
    ReadOnlyImage,
)
from ..osd import ops as O
from . import cls_client as cls
from .exclusive_lock import RBD_LOCK_NAME, RBD_LOCK_TAG
from .features import RBD_FEATURE_LAYERING, RBD_FEATURE_OBJECT_MAP
from .object_map import object_map_name
from .striping import data_object_name, get_num_objects

log = logging.getLogger("pyceph.rbd.snapshot")

ProgressFn = Callable[[int, int], Any]


# ---------------------------------------------------------------------------
# small helpers over the image


def _errno_of(ex: BaseException) -> int | None:
    return getattr(ex, "errno", None)


def check_writable(img: Any, what: str = "modify snapshots") -> None:
    """librbd's ``-EROFS`` for read-only opens and snapshot opens."""
    if getattr(img, "read_only", False) or getattr(img, "snap_id", cls.CEPH_NOSNAP) != cls.CEPH_NOSNAP:
        raise ReadOnlyImage(f"cannot {what}: image {img.name!r} is open read-only", errno=errno.EROFS)


async def notify_header_update(img: Any) -> None:
    """Tell other clients of the image to refresh (HEADER_UPDATE); best effort."""
    try:
        await img.notify_header_update()
    except Error as ex:  # librbd ignores notify failures too
        log.warning("header update notify for %s failed: %s", img.header_oid, ex)


def features_of(img: Any) -> int:
    return img.features()


def _limit(img: Any) -> int:
    return max(1, int(getattr(img.ioctx, "max_concurrency", 16) or 1))


# ---------------------------------------------------------------------------
# reading snapshot records


async def snapshot_infos(ioctx: Any, header_oid: str) -> list[cls.SnapshotInfo]:
    """Every snapshot of the header (all namespaces), ordered by id (oldest first)."""
    snapc = await cls.get_snapcontext(ioctx, header_oid)
    infos: dict[int, cls.SnapshotInfo] = {}

    async def one(snap_id: int) -> None:
        try:
            infos[snap_id] = await cls.snapshot_get(ioctx, header_oid, snap_id)
        except ObjectNotFound:
            pass  # removed meanwhile

    await asyncio.gather(*(one(s) for s in snapc.snaps))
    return [infos[s] for s in sorted(infos)]


async def lookup(img: Any, name: str, namespace_type: int = cls.SNAPSHOT_NAMESPACE_TYPE_USER) -> cls.SnapshotInfo:
    """The snapshot called ``name`` in ``namespace_type``; ImageNotFound if none."""
    for info in await snapshot_infos(img.ioctx, img.header_oid):
        if info.name == name and info.snapshot_namespace.type == namespace_type:
            return info
    raise ImageNotFound(f"snapshot {name!r} of image {img.name!r} not found", errno=errno.ENOENT)


def snap_dict(info: cls.SnapshotInfo, protection: int) -> dict[str, Any]:
    """python-rbd's snapshot dict plus what ``rbd snap ls`` prints.

    Keys: ``id``, ``size`` (bytes), ``name``, ``namespace`` (SNAPSHOT_NAMESPACE_TYPE_*),
    ``namespace_name`` ("user", "trash", ...), ``protected`` (bool),
    ``protection_status`` (RBD_PROTECTION_STATUS_*), ``timestamp`` ((sec, nsec) UTC),
    ``child_count`` (clone-v2 children); trash snapshots add ``trash``
    ({``original_name``, ``original_namespace_type``}), group ones ``group``.
    """
    ns = info.snapshot_namespace
    d: dict[str, Any] = {
        "id": info.id,
        "size": info.image_size,
        "name": info.name,
        "namespace": ns.type,
        "namespace_name": ns.type_name,
        "protected": protection == cls.RBD_PROTECTION_STATUS_PROTECTED,
        "protection_status": protection,
        "timestamp": tuple(info.timestamp),
        "child_count": info.child_count,
    }
    if ns.type == cls.SNAPSHOT_NAMESPACE_TYPE_TRASH:
        d["trash"] = {
            "original_name": ns.fields.get("original_name", ""),
            "original_namespace_type": ns.fields.get("original_snapshot_namespace_type", 0),
        }
    elif ns.type == cls.SNAPSHOT_NAMESPACE_TYPE_GROUP:
        d["group"] = dict(ns.fields)
    return d


async def list_snaps(img: Any, all_namespaces: bool = True) -> list[dict[str, Any]]:
    """Snapshots of the image, oldest first, as :func:`snap_dict` dicts.

    ``all_namespaces=False`` keeps only user snapshots (what ``rbd snap ls`` shows
    without ``--all``).
    """
    infos = await snapshot_infos(img.ioctx, img.header_oid)
    if not all_namespaces:
        infos = [i for i in infos if i.snapshot_namespace.type == cls.SNAPSHOT_NAMESPACE_TYPE_USER]
    prot: dict[int, int] = {}

    async def one(snap_id: int) -> None:
        try:
            prot[snap_id] = await cls.get_protection_status(img.ioctx, img.header_oid, snap_id)
        except ObjectNotFound:
            prot[snap_id] = -1

    await asyncio.gather(*(one(i.id) for i in infos))
    return [snap_dict(i, prot[i.id]) for i in infos if prot[i.id] >= 0]


async def is_protected(img: Any, name: str) -> bool:
    """True when snapshot ``name`` is PROTECTED (UNPROTECTING counts as not)."""
    info = await lookup(img, name)
    status = await cls.get_protection_status(img.ioctx, img.header_oid, info.id)
    return status == cls.RBD_PROTECTION_STATUS_PROTECTED


async def get_timestamp(img: Any, name: str) -> tuple[int, int]:
    """Creation time ``(sec, nsec)`` of snapshot ``name`` (stamped by the OSD)."""
    return tuple((await lookup(img, name)).timestamp)  # type: ignore[return-value]


# ---------------------------------------------------------------------------
# create


def _assert_locked_op(cookie: str) -> Any:
    op = cls.AssertOp(RBD_LOCK_NAME, cls.LOCK_EXCLUSIVE, cookie, RBD_LOCK_TAG)
    return O.call("lock", "assert_locked", op.encode(cls.Encoder()).bytes())


async def _snapshot_add(img: Any, snap_id: int, name: str, namespace: cls.SnapshotNamespace) -> None:
    data = cls.encode_snapshot_add(snap_id, name, namespace)
    cookie = img.lock_cookie()
    if cookie:
        # librbd: exclusive_lock->assert_header_locked(&op) before snapshot_add
        await img.ioctx.operate(img.header_oid, [_assert_locked_op(cookie), O.call("rbd", "snapshot_add", data)],
                                write=True)
    else:
        await cls.snapshot_add(img.ioctx, img.header_oid, snap_id, name, namespace)


def _validate_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError("snapshot name must be a non-empty string")


async def create(img: Any, name: str, namespace: cls.SnapshotNamespace | None = None,
                 skip_object_map: bool = False) -> int:
    """Create snapshot ``name`` of the image head; returns its snap id.

    Raises ReadOnlyImage, ImageExists (name in use), InvalidArgumentError,
    NoSpace (EDQUOT: snapshot limit reached) or the ioctx's errors.
    """
    check_writable(img, "create a snapshot")
    _validate_name(name)
    namespace = namespace or cls.SnapshotNamespace()
    for info in await snapshot_infos(img.ioctx, img.header_oid):
        if info.name == name and info.snapshot_namespace.type == namespace.type:
            raise ImageExists(f"snapshot {name!r} already exists", errno=errno.EEXIST)
    async with img.maintenance_op():
        while True:
            snap_id = await img.ioctx.selfmanaged_snap_create()
            try:
                await _snapshot_add(img, snap_id, name, namespace)
            except Error as ex:
                if _errno_of(ex) == errno.ESTALE:
                    log.info("snapshot_add of %s id %d raced a newer snapshot; retrying", name, snap_id)
                    continue  # librbd allocates a new id, keeping the stale one
                await _release_snap_id(img, snap_id)
                if _errno_of(ex) == errno.EEXIST:
                    raise ImageExists(f"snapshot {name!r} already exists", errno=errno.EEXIST) from None
                raise
            break
        # writes from now on must carry the new snap context (update_snap_context)
        old = img.snapc
        img.snapc = cls.SnapContext(max(snap_id, old.seq), [snap_id] + [s for s in old.snaps if s != snap_id])
        om = img.object_map
        if om is not None and not skip_object_map:
            await om.snapshot_add(snap_id)
        await img.refresh()
    log.info("created snapshot %s@%s id %d", img.name, name, snap_id)
    await notify_header_update(img)
    return snap_id


async def _release_snap_id(img: Any, snap_id: int) -> None:
    try:
        await img.ioctx.selfmanaged_snap_remove(snap_id)
    except Error as ex:
        if _errno_of(ex) != errno.ENOENT:
            log.warning("failed to release snap id %d: %s", snap_id, ex)


# ---------------------------------------------------------------------------
# remove


async def remove(img: Any, name: str, namespace_type: int = cls.SNAPSHOT_NAMESPACE_TYPE_USER) -> None:
    """Remove snapshot ``name`` (librbd ``snap_remove``).

    A snapshot still used by clone-v2 children is moved to the trash namespace and
    removed later by the last child's detach.  Raises ImageNotFound, ImageBusy
    ("snapshot is protected"), ReadOnlyImage or the ioctx's errors.
    """
    check_writable(img, "remove a snapshot")
    info = await lookup(img, name, namespace_type)
    status = await cls.get_protection_status(img.ioctx, img.header_oid, info.id)
    if status != cls.RBD_PROTECTION_STATUS_UNPROTECTED:
        raise ImageBusy(f"snapshot {name!r} is protected", errno=errno.EBUSY)
    async with img.maintenance_op():
        await remove_by_id(img, info)
    await notify_header_update(img)


async def remove_by_id(img: Any, info: cls.SnapshotInfo) -> None:
    """SnapshotRemoveRequest for an already looked-up snapshot (also used for
    trashed snapshots once their last clone-v2 child is gone).  The caller holds
    :func:`maintenance` and notifies afterwards."""
    io, hdr, snap_id = img.ioctx, img.header_oid, info.id
    trashed = False
    child_count = 0
    if info.snapshot_namespace.type != cls.SNAPSHOT_NAMESPACE_TYPE_TRASH:
        try:
            await cls.snapshot_trash_add(io, hdr, snap_id)
            trashed = True
        except Error as ex:
            if _errno_of(ex) == errno.EEXIST:
                trashed = True
            elif _errno_of(ex) not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise
    if trashed or info.snapshot_namespace.type == cls.SNAPSHOT_NAMESPACE_TYPE_TRASH:
        child_count = (await cls.snapshot_get(io, hdr, snap_id)).child_count

    await _detach_child_if_last(img, snap_id)

    if child_count > 0:
        if trashed:
            log.info("snapshot id %d of %s moved to the trash: %d clone(s) still use it",
                     snap_id, img.name, child_count)
            await img.refresh()
            return
        raise ImageBusy(f"snapshot id {snap_id} has {child_count} clone(s)", errno=errno.EBUSY)

    om = img.object_map
    if om is not None:
        await om.snapshot_remove(snap_id, await _next_snap_id(io, hdr, snap_id))
    elif features_of(img) & RBD_FEATURE_OBJECT_MAP:
        # no loaded map to merge into: at least drop the snapshot's map object
        try:
            await io.remove(object_map_name(img.image_id, snap_id))
        except ObjectNotFound:
            pass
    await _release_snap_id(img, snap_id)
    await cls.snapshot_remove(io, hdr, snap_id)
    img.snapc = cls.SnapContext(img.snapc.seq, [s for s in img.snapc.snaps if s != snap_id])
    log.info("removed snapshot id %d of %s", snap_id, img.name)
    await img.refresh()


async def _next_snap_id(io: Any, hdr: str, snap_id: int) -> int:
    snapc = await cls.get_snapcontext(io, hdr)
    newer = [s for s in snapc.snaps if s > snap_id]
    return min(newer) if newer else cls.CEPH_NOSNAP


async def _detach_child_if_last(img: Any, snap_id: int) -> None:
    """SnapshotRemoveRequest::detach_child: a clone whose head no longer uses the
    parent (flattened) drops its child link when its last snapshot referencing the
    parent goes away."""
    io, hdr = img.ioctx, img.header_oid
    try:
        spec = await cls.parent_get(io, hdr)
    except Error as ex:
        if _errno_of(ex) in (errno.EOPNOTSUPP, errno.ENOENT, errno.ENOEXEC):
            return
        raise
    if not spec.exists():
        return
    if await _overlap(io, hdr, cls.CEPH_NOSNAP) is not None:
        return  # the head still uses the parent
    if await _overlap(io, hdr, snap_id) is None:
        return  # this snapshot does not reference the parent
    snapc = await cls.get_snapcontext(io, hdr)
    for other in snapc.snaps:
        if other != snap_id and await _overlap(io, hdr, other) is not None:
            return
    from . import clone  # late: clone imports this module

    op_features = await cls.op_features_get(io, hdr)
    await clone.detach_child(io, img.image_id, spec, op_features)


async def _overlap(io: Any, hdr: str, snap_id: int) -> int | None:
    try:
        return await cls.parent_overlap_get(io, hdr, snap_id)
    except ObjectNotFound:
        return None


# ---------------------------------------------------------------------------
# rename


async def rename(img: Any, src: str, dst: str) -> None:
    """Rename user snapshot ``src`` to ``dst``.  Raises ImageNotFound, ImageExists."""
    check_writable(img, "rename a snapshot")
    _validate_name(dst)
    info = await lookup(img, src)
    for other in await snapshot_infos(img.ioctx, img.header_oid):
        if other.name == dst and other.snapshot_namespace.type == cls.SNAPSHOT_NAMESPACE_TYPE_USER:
            raise ImageExists(f"snapshot {dst!r} already exists", errno=errno.EEXIST)
    async with img.maintenance_op():
        try:
            await cls.snapshot_rename(img.ioctx, img.header_oid, info.id, dst)
        except Error as ex:
            if _errno_of(ex) == errno.EEXIST:
                raise ImageExists(f"snapshot {dst!r} already exists", errno=errno.EEXIST) from None
            raise
        await img.refresh()
    await notify_header_update(img)


# ---------------------------------------------------------------------------
# rollback


async def rollback(img: Any, name: str, on_progress: ProgressFn | None = None) -> None:
    """Roll the image head back to snapshot ``name``.

    Resizes to the snapshot's size (``img.resize``), rolls the object map back,
    then sends CEPH_OSD_OP_ROLLBACK to every data object the snapshot's size
    covers, ``on_progress(done, total)`` after each.  Raises ImageNotFound,
    ReadOnlyImage.
    """
    check_writable(img, "roll back")
    info = await lookup(img, name)
    await img.acquire_lock()
    if img.size() != info.image_size:
        await img.resize(info.image_size, allow_shrink=True)
    snap_id = info.id
    total = get_num_objects(img.layout, info.image_size)
    async with img.maintenance_op():
        om = img.object_map
        if om is not None:
            await om.rollback(snap_id)
        snapc = img.snapc.to_tuple()
        sem = asyncio.Semaphore(_limit(img))
        done = 0

        async def one(objectno: int) -> None:
            nonlocal done
            oid = data_object_name(img.object_prefix, objectno)
            async with sem:
                try:
                    await img.ioctx.rollback(oid, snap_id, snapc)
                except ObjectNotFound:
                    pass
            done += 1
            if on_progress is not None:
                on_progress(done, total)

        await _gather_all([lambda n=n: one(n) for n in range(total)])
        if om is not None:
            await om.load(get_num_objects(img.layout, info.image_size))
        await img.refresh()
    if on_progress is not None and total == 0:
        on_progress(0, 0)
    log.info("rolled %s back to snapshot %s (%d objects)", img.name, name, total)
    await notify_header_update(img)


async def _gather_all(funcs: builtins.list[Callable[[], Awaitable[None]]]) -> None:
    """Run all; cancel the rest and re-raise the first error."""
    tasks = [asyncio.ensure_future(f()) for f in funcs]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


# ---------------------------------------------------------------------------
# protect / unprotect


def _require_layering(img: Any) -> None:
    if not features_of(img) & RBD_FEATURE_LAYERING:
        raise FunctionNotSupported("image must support layering", errno=errno.ENOSYS)


async def protect(img: Any, name: str) -> None:
    """Protect snapshot ``name`` (needed before v1 clones).  Raises ImageBusy
    ("snapshot is already protected"), ImageNotFound, FunctionNotSupported (ENOSYS,
    no layering), InvalidArgumentError (not a user snapshot)."""
    check_writable(img, "protect a snapshot")
    _require_layering(img)
    info = await lookup(img, name)
    async with img.maintenance_op():
        status = await cls.get_protection_status(img.ioctx, img.header_oid, info.id)
        if status == cls.RBD_PROTECTION_STATUS_PROTECTED:
            raise ImageBusy(f"snapshot {name!r} is already protected", errno=errno.EBUSY)
        await cls.set_protection_status(img.ioctx, img.header_oid, info.id, cls.RBD_PROTECTION_STATUS_PROTECTED)
        await img.refresh()
    await notify_header_update(img)


async def unprotect(img: Any, name: str, check_v2_children: bool = False) -> None:
    """Unprotect snapshot ``name``: UNPROTECTING, scan every pool's ``rbd_children``
    (v1 clones), then UNPROTECTED -- or back to PROTECTED and ImageBusy when a child
    exists.  Clone-v2 children do not need the protection and do not block it
    (Pacific's ``rbd snap unprotect`` succeeds with v2 children; the snapshot stays
    alive through its child count); ``check_v2_children=True`` refuses them too.
    Raises InvalidArgumentError ("snapshot is already unprotected"), ImageNotFound,
    FunctionNotSupported (ENOSYS)."""
    check_writable(img, "unprotect a snapshot")
    _require_layering(img)
    info = await lookup(img, name)
    io, hdr = img.ioctx, img.header_oid
    async with img.maintenance_op():
        status = await cls.get_protection_status(io, hdr, info.id)
        if status == cls.RBD_PROTECTION_STATUS_UNPROTECTED:
            raise InvalidArgumentError(f"snapshot {name!r} is already unprotected", errno=errno.EINVAL)
        await cls.set_protection_status(io, hdr, info.id, cls.RBD_PROTECTION_STATUS_UNPROTECTING)
        try:
            from . import clone  # late: clone imports this module

            children = await clone.child_refs(img, info.id, include_v2=check_v2_children)
            if children:
                shown = ", ".join(f"{pool}/{cid}" for pool, cid in children[:8])
                raise ImageBusy(f"cannot unprotect: snapshot {name!r} has {len(children)} child(ren) [{shown}]",
                                errno=errno.EBUSY)
            await cls.set_protection_status(io, hdr, info.id, cls.RBD_PROTECTION_STATUS_UNPROTECTED)
        except BaseException:
            try:
                await asyncio.shield(
                    cls.set_protection_status(io, hdr, info.id, cls.RBD_PROTECTION_STATUS_PROTECTED))
            except Error as ex:
                log.warning("failed to restore protection of %s@%s: %s", img.name, name, ex)
            raise
        await img.refresh()
    await notify_header_update(img)


# python-rbd-ish name; ``list`` shadows the builtin only for callers of this module
list = list_snaps  # noqa: A001
