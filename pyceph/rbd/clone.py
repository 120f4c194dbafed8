"""RBD clones (layering): clone, flatten, children listing, parent links.

Follows librbd (Pacific):

- clone: ``src/librbd/image/CloneRequest.cc`` + ``AttachParentRequest.cc`` --
  create the child with the parent snapshot's size (order / striping of the parent
  unless given; features of the parent without the implicit ones unless given),
  ``parent_attach`` (legacy ``set_parent`` on old OSDs), then
  v1: ``add_child`` in ``rbd_children`` of the child's pool (the snapshot must be
  protected, checked again afterwards), or
  v2: ``op_features_set(CLONE_CHILD)`` on the child and ``child_attach`` on the
  parent header (the OSD sets CLONE_PARENT there);
  finally the parent's image metadata (``metadata_list``) is copied.
  ``clone_format=None`` is Pacific's ``rbd_default_clone_format = auto``: v2 only
  when the OSDMap's ``require_min_compat_client`` is at least mimic;
- flatten: ``operation/FlattenRequest.cc`` -- copy up every object within the
  parent overlap (``AsyncImage.copyup_object``), then ``DetachChildRequest``
  (``child_detach`` / ``remove_child``; a trashed parent snapshot left without
  children is removed) and ``DetachParentRequest`` (``parent_detach``, legacy
  ``remove_parent``);
- children: ``api/Image.cc`` list_children -- clone-v2 children from the parent
  header's ``children_list``, v1 children from ``rbd_children`` of every pool.

Sizes and overlaps are bytes.  Errors are pyceph's typed errors (ImageNotFound,
ImageExists, InvalidArgumentError, FunctionNotSupported, ...).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from typing import Any, Callable

from ..errors import (
    Error,
    FunctionNotSupported,
    ImageNotFound,
    InvalidArgumentError,
    ObjectNotFound,
    PoolNotFound,
    make_ex,
)
from . import cls_client as cls
from . import snapshot as snap_mod
from .features import (
    RBD_FEATURE_DEEP_FLATTEN,
    RBD_FEATURE_FAST_DIFF,
    RBD_FEATURE_LAYERING,
    RBD_FEATURE_OBJECT_MAP,
    RBD_FEATURE_STRIPINGV2,
    RBD_FEATURES_ALL,
    RBD_OPERATION_FEATURE_CLONE_CHILD,
)
from ..osdmap.osdmap import CEPH_RELEASE_NAMES
from .image import RBD_DIRECTORY, RBD_ID_PREFIX, AsyncImage, AsyncRBD, header_name
from .striping import Layout, get_num_objects

log = logging.getLogger("pyceph.rbd.clone")

#: ``RBD_FEATURES_IMPLICIT_ENABLE`` (include/rbd/features.h, Pacific): never copied
#: from the parent -- striping, data-pool, fast-diff, operations, migrating,
#: non-primary, dirty-cache
RBD_FEATURES_IMPLICIT_ENABLE = (1 << 1) | (1 << 7) | (1 << 4) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11)
#: ceph_release_t of mimic (src/common/ceph_releases.h)
CEPH_RELEASE_MIMIC = 13
METADATA_PAGE = 64

ProgressFn = Callable[[int, int], Any]


def _errno_of(ex: BaseException) -> int | None:
    return getattr(ex, "errno", None)


async def _pool_ioctx(rados: Any, pool_id: int, namespace: str = "") -> Any:
    io = await rados.open_ioctx(pool_id)
    if namespace:
        io.set_namespace(namespace)
    return io


def _rados_of(ioctx: Any) -> Any:
    return ioctx.rados


def _pool_name(rados: Any, pool_id: int) -> str:
    try:
        return rados.osdmap.get_pool_name(pool_id)
    except Exception:  # noqa: BLE001 - pool deleted meanwhile
        return str(pool_id)


async def _find_snap(ioctx: Any, header: str, snap_name: str | None, snap_id: int | None) -> cls.SnapshotInfo:
    for info in await snap_mod.snapshot_infos(ioctx, header):
        if snap_id is not None and info.id == snap_id:
            return info
        if (snap_id is None and info.name == snap_name
                and info.snapshot_namespace.type == cls.SNAPSHOT_NAMESPACE_TYPE_USER):
            return info
    raise ImageNotFound(f"parent snapshot {snap_name if snap_id is None else snap_id!r} not found",
                        errno=errno.ENOENT)


def _release(value: Any) -> int:
    """A ceph_release_t as a number (names like "luminous" too); 0 when unknown."""
    if isinstance(value, str):
        return CEPH_RELEASE_NAMES.index(value) if value in CEPH_RELEASE_NAMES else 0
    try:
        v = int(value or 0)
    except (TypeError, ValueError):
        return 0
    return v if 0 < v < len(CEPH_RELEASE_NAMES) else 0


async def default_clone_format(rados: Any) -> int:
    """Pacific's ``rbd_default_clone_format = auto``: 2 when
    ``max(min_compat_client, require_min_compat_client)`` is at least mimic, else 1
    (librbd asks ``get_min_compatible_client``).  Both come from the monitor's
    ``osd dump``; without an answer, the local OSDMap's ``require_min_compat_client``
    (values that are no release count as unknown)."""
    releases: list[int] = []
    mon_command = getattr(rados, "mon_command", None)
    if mon_command is not None:
        try:
            ret, out, _ = await mon_command({"prefix": "osd dump", "format": "json"})
            if ret == 0:
                dump = json.loads(out)
                releases = [_release(dump.get("require_min_compat_client")),
                            _release(dump.get("min_compat_client"))]
        except (Error, ValueError, OSError, asyncio.TimeoutError) as ex:
            log.info("osd dump for the clone format failed: %s", ex)
    if not releases:
        osdmap = getattr(rados, "osdmap", None)
        releases = [_release(getattr(osdmap, "require_min_compat_client", 0))]
    return 2 if max(releases) >= CEPH_RELEASE_MIMIC else 1


# ---------------------------------------------------------------------------
# clone


async def clone(
    p_ioctx: Any,
    p_name: str,
    p_snapname: str | None,
    c_ioctx: Any,
    c_name: str,
    features: int | None = None,
    order: int | None = None,
    stripe_unit: int | None = None,
    stripe_count: int | None = None,
    clone_format: int | None = None,
    *,
    p_snap_id: int | None = None,
) -> str:
    """Clone ``p_name@p_snapname`` (pool of ``p_ioctx``) to ``c_name`` in ``c_ioctx``;
    returns the child's image id.

    ``clone_format``: 1, 2 or None (auto, see :func:`default_clone_format`).
    Raises ImageNotFound (parent / snapshot), ImageExists (child name),
    InvalidArgumentError ("parent snapshot must be protected" for v1, bad format),
    FunctionNotSupported (errno ENOSYS: no layering), OSError(EXDEV) for a v1 clone
    across namespaces, or the errors of ``AsyncRBD.create``.
    """
    if features is not None and features & ~RBD_FEATURES_ALL:
        raise FunctionNotSupported("librbd does not support requested features", errno=errno.ENOSYS)
    fmt = await default_clone_format(_rados_of(c_ioctx)) if clone_format is None else int(clone_format)
    if fmt not in (1, 2):
        raise InvalidArgumentError(f"invalid clone format {clone_format!r}")
    p_ns = getattr(p_ioctx, "namespace", "")
    c_ns = getattr(c_ioctx, "namespace", "")
    if fmt == 1 and p_ns != c_ns:
        raise make_ex(-errno.EXDEV, "clone v2 required for cross-namespace clones")

    # -- the parent, read through its header (CloneRequest::open_parent/validate_parent)
    try:
        p_id = await cls.get_id(p_ioctx, RBD_ID_PREFIX + p_name)
    except ObjectNotFound:
        raise ImageNotFound(f"parent image {p_name!r} not found", errno=errno.ENOENT) from None
    p_hdr = header_name(p_id)
    if p_snapname is None and p_snap_id is None:
        raise InvalidArgumentError("image to be cloned must be a snapshot")
    info = await _find_snap(p_ioctx, p_hdr, p_snapname, p_snap_id)
    p_features, _ = await cls.get_features(p_ioctx, p_hdr, cls.CEPH_NOSNAP, True)
    if not p_features & RBD_FEATURE_LAYERING:
        raise FunctionNotSupported("parent image must support layering", errno=errno.ENOSYS)
    if features is None:
        features = p_features & ~RBD_FEATURES_IMPLICIT_ENABLE
    if not features & RBD_FEATURE_LAYERING:
        raise FunctionNotSupported("cloning image must support layering", errno=errno.ENOSYS)
    if features & RBD_FEATURE_OBJECT_MAP:
        features |= RBD_FEATURE_FAST_DIFF  # CreateRequest enables fast-diff with object-map
    protection = await cls.get_protection_status(p_ioctx, p_hdr, info.id)
    if fmt == 1 and protection != cls.RBD_PROTECTION_STATUS_PROTECTED:
        raise InvalidArgumentError("parent snapshot must be protected", errno=errno.EINVAL)
    _, p_order = await cls.get_size(p_ioctx, p_hdr, info.id)
    if order is None:
        order = p_order
    if stripe_unit is None and stripe_count is None and p_features & RBD_FEATURE_STRIPINGV2:
        stripe_unit, stripe_count = await cls.get_stripe_unit_count(p_ioctx, p_hdr)
    size = info.image_size
    pspec = cls.ParentImageSpec(p_ioctx.pool_id, p_ns, p_id, info.id)

    # -- the child
    await AsyncRBD().create(c_ioctx, c_name, size, order=order, features=features,
                            stripe_unit=stripe_unit, stripe_count=stripe_count)
    c_id = await cls.get_id(c_ioctx, RBD_ID_PREFIX + c_name)
    c_hdr = header_name(c_id)
    undo: list[Callable[[], Any]] = []
    try:
        await attach_parent(c_ioctx, c_hdr, pspec, size)
        undo.append(lambda: _detach_parent(c_ioctx, c_hdr))
        if fmt == 2:
            await cls.op_features_set(c_ioctx, c_hdr, RBD_OPERATION_FEATURE_CLONE_CHILD,
                                      RBD_OPERATION_FEATURE_CLONE_CHILD)
            child = cls.ChildImageSpec(c_ioctx.pool_id, c_ns, c_id)
            await cls.child_attach(p_ioctx, p_hdr, info.id, child)
            undo.append(lambda: cls.child_detach(p_ioctx, p_hdr, info.id, child))
        else:
            await cls.add_child(c_ioctx, pspec, c_id)
            undo.append(lambda: cls.remove_child(c_ioctx, pspec, c_id))
            # v1_refresh: the snapshot may have been unprotected meanwhile
            if await cls.get_protection_status(p_ioctx, p_hdr, info.id) != cls.RBD_PROTECTION_STATUS_PROTECTED:
                raise InvalidArgumentError("parent snapshot must be protected", errno=errno.EINVAL)
        await _copy_metadata(p_ioctx, p_hdr, c_ioctx, c_hdr)
    except BaseException:
        async def cleanup() -> None:
            for step in reversed(undo):
                try:
                    await step()
                except Exception as ex:  # noqa: BLE001 - best effort
                    log.warning("clone cleanup step failed: %s", ex)
            try:
                await AsyncRBD().remove(c_ioctx, c_name)
            except Exception as ex:  # noqa: BLE001
                log.warning("failed to remove half-made clone %s: %s", c_name, ex)

        await asyncio.shield(cleanup())
        raise
    log.info("cloned %s@%s (pool %d) to %s (id %s, format %d)", p_name, info.name, p_ioctx.pool_id,
             c_name, c_id, fmt)
    return c_id


async def attach_parent(ioctx: Any, header: str, spec: cls.ParentImageSpec, overlap: int,
                        reattach: bool = False) -> None:
    """AttachParentRequest: ``parent_attach``; ``set_parent`` when the OSD lacks it."""
    try:
        await cls.parent_attach(ioctx, header, spec, overlap, reattach)
    except Error as ex:
        if _errno_of(ex) != errno.EOPNOTSUPP or spec.pool_namespace or reattach:
            raise
        await cls.set_parent(ioctx, header, spec, overlap)


async def _detach_parent(ioctx: Any, header: str) -> None:
    """DetachParentRequest: ``parent_detach``; legacy ``remove_parent``."""
    try:
        await cls.parent_detach(ioctx, header)
    except Error as ex:
        if _errno_of(ex) != errno.EOPNOTSUPP:
            raise
        await cls.remove_parent(ioctx, header)


async def _copy_metadata(p_ioctx: Any, p_hdr: str, c_ioctx: Any, c_hdr: str) -> None:
    pairs: dict[str, bytes] = {}
    start = ""
    while True:
        try:
            page = await cls.metadata_list(p_ioctx, p_hdr, start, METADATA_PAGE)
        except Error as ex:
            if _errno_of(ex) in (errno.EOPNOTSUPP, errno.EIO):
                return  # "config metadata not supported by OSD"
            raise
        pairs.update(page)
        if len(page) < METADATA_PAGE:
            break
        start = max(page)
    if pairs:
        await cls.metadata_set(c_ioctx, c_hdr, pairs)


# ---------------------------------------------------------------------------
# parent links of an image


async def parent_link(ioctx: Any, header: str, snap_id: int = cls.CEPH_NOSNAP) -> tuple[cls.ParentImageSpec, int | None]:
    """``(spec, overlap bytes or None)`` of the image at ``snap_id``; the spec has
    ``pool_id == -1`` when there is no parent."""
    try:
        spec = await cls.parent_get(ioctx, header)
    except Error as ex:
        if _errno_of(ex) != errno.EOPNOTSUPP:
            raise
        spec, overlap = await cls.get_parent(ioctx, header, snap_id)
        return spec, (overlap if spec.exists() else None)
    if not spec.exists():
        return spec, None
    try:
        return spec, await cls.parent_overlap_get(ioctx, header, snap_id)
    except ObjectNotFound:
        return spec, None


async def parent_info(img: Any) -> tuple[str, str, str]:
    """python-rbd ``parent_info()``: ``(pool name, image name, snapshot name)``.
    Raises ImageNotFound when the image has no parent."""
    spec = await get_parent_image_spec(img)
    return spec["pool_name"], spec["image_name"], spec["snap_name"]


async def get_parent_image_spec(img: Any) -> dict[str, Any]:
    """python-rbd ``get_parent_image_spec()``: pool_name, pool_namespace, image_name,
    image_id, snap_namespace_type, snap_name, snap_id (of the open snapshot or head).
    Raises ImageNotFound when there is no parent."""
    spec, overlap = await parent_link(img.ioctx, img.header_oid, getattr(img, "snap_id", cls.CEPH_NOSNAP))
    if not spec.exists() or overlap is None:
        raise ImageNotFound(f"image {img.name!r} has no parent", errno=errno.ENOENT)
    rados = _rados_of(img.ioctx)
    p_io = await _pool_ioctx(rados, spec.pool_id, spec.pool_namespace)
    try:
        p_name = await cls.dir_get_name(p_io, RBD_DIRECTORY, spec.image_id)
    except ObjectNotFound:
        try:
            p_name = (await cls.trash_get(p_io, spec.image_id)).name
        except ObjectNotFound:
            p_name = ""
    hdr = header_name(spec.image_id)
    try:
        info = await cls.snapshot_get(p_io, hdr, spec.snap_id)
        snap_name, ns_type = info.name, info.snapshot_namespace.type
    except ObjectNotFound:
        snap_name, ns_type = "", cls.SNAPSHOT_NAMESPACE_TYPE_USER
    return {
        "pool_name": _pool_name(rados, spec.pool_id),
        "pool_namespace": spec.pool_namespace,
        "image_name": p_name,
        "image_id": spec.image_id,
        "snap_namespace_type": ns_type,
        "snap_name": snap_name,
        "snap_id": spec.snap_id,
        "overlap": overlap,
    }


# ---------------------------------------------------------------------------
# children


async def child_refs(img: Any, snap_id: int, include_v2: bool = True) -> list[tuple[str, str]]:
    """Clones of ``img@snap_id`` as ``(pool name, child image id)``: v1 links in
    ``rbd_children`` of every pool (SnapshotUnprotectRequest's scan) and, with
    ``include_v2``, the clone-v2 links in the header."""
    out: list[tuple[str, str]] = []
    if include_v2:
        for ch in await _v2_children(img.ioctx, img.header_oid, snap_id):
            out.append((_pool_name(_rados_of(img.ioctx), ch.pool_id), ch.image_id))
    for (pool_id, _ns), ids in (await _v1_children(img, snap_id)).items():
        out.extend((_pool_name(_rados_of(img.ioctx), pool_id), cid) for cid in ids)
    return out


async def _v2_children(ioctx: Any, header: str, snap_id: int) -> list[cls.ChildImageSpec]:
    try:
        return await cls.children_list(ioctx, header, snap_id)
    except Error as ex:
        if _errno_of(ex) in (errno.ENOENT, errno.EOPNOTSUPP):
            return []
        raise


async def _v1_children(img: Any, snap_id: int) -> dict[tuple[int, str], list[str]]:
    """``{(pool id, namespace): [child ids]}`` from each pool's ``rbd_children``
    (default namespace and the image's namespace)."""
    rados = _rados_of(img.ioctx)
    pspec = cls.ParentImageSpec(img.ioctx.pool_id, "", img.image_id, snap_id)
    out: dict[tuple[int, str], list[str]] = {}
    pools = sorted(getattr(rados.osdmap, "pools", {}) or {})
    namespaces = [""] + ([img.ioctx.namespace] if getattr(img.ioctx, "namespace", "") else [])

    async def scan(pool_id: int, ns: str) -> None:
        try:
            io = await _pool_ioctx(rados, pool_id, ns)
            ids = await cls.get_children(io, pspec)
        except (ObjectNotFound, PoolNotFound):
            return
        except Error as ex:
            if _errno_of(ex) in (errno.EOPNOTSUPP, errno.ENOENT):
                return  # e.g. an EC pool: no omap, no rbd_children
            raise
        if ids:
            out.setdefault((pool_id, ns), []).extend(ids)

    await asyncio.gather(*(scan(p, ns) for p in pools for ns in namespaces))
    return out


async def _child_name(rados: Any, pool_id: int, ns: str, image_id: str) -> tuple[str, bool]:
    """``(name, in_trash)`` of image ``image_id``."""
    io = await _pool_ioctx(rados, pool_id, ns)
    try:
        return await cls.dir_get_name(io, RBD_DIRECTORY, image_id), False
    except ObjectNotFound:
        pass
    try:
        return (await cls.trash_get(io, image_id)).name, True
    except ObjectNotFound:
        return "", False


async def list_children2(img: Any) -> list[dict[str, Any]]:
    """Clones of the open snapshot (or of every snapshot at the head), as python-rbd
    ``list_children2`` dicts: pool, pool_id, pool_namespace, image, id, trash; sorted."""
    snap_ids = [img.snap_id] if getattr(img, "snap_id", cls.CEPH_NOSNAP) != cls.CEPH_NOSNAP else \
        [i.id for i in await snap_mod.snapshot_infos(img.ioctx, img.header_oid)]
    rados = _rados_of(img.ioctx)
    found: set[tuple[int, str, str]] = set()
    for sid in snap_ids:
        for ch in await _v2_children(img.ioctx, img.header_oid, sid):
            found.add((ch.pool_id, ch.pool_namespace, ch.image_id))
        for (pool_id, ns), ids in (await _v1_children(img, sid)).items():
            found.update((pool_id, ns, cid) for cid in ids)
    out = []
    for pool_id, ns, cid in found:
        name, trash = await _child_name(rados, pool_id, ns, cid)
        out.append({"pool": _pool_name(rados, pool_id), "pool_id": pool_id, "pool_namespace": ns,
                    "image": name, "id": cid, "trash": trash})
    out.sort(key=lambda d: (d["pool"], d["pool_namespace"], d["image"], d["id"]))
    return out


async def list_children(img: Any) -> list[tuple[str, str]]:
    """python-rbd ``list_children()``: ``[(pool name, image name)]`` of the clones not in the trash."""
    return [(d["pool"], d["image"]) for d in await list_children2(img) if not d["trash"]]


# ---------------------------------------------------------------------------
# detaching


async def detach_child(ioctx: Any, image_id: str, spec: cls.ParentImageSpec, op_features: int) -> None:
    """DetachChildRequest for child ``image_id`` (in ``ioctx``'s pool/namespace):
    v2 ``child_detach`` on the parent header -- then, if the parent snapshot is in
    the trash with no children left, remove it -- or v1 ``remove_child``.  Missing
    links (ENOENT) are fine."""
    if not spec.exists():
        return
    if op_features & RBD_OPERATION_FEATURE_CLONE_CHILD:
        rados = _rados_of(ioctx)
        p_io = await _pool_ioctx(rados, spec.pool_id, spec.pool_namespace)
        p_hdr = header_name(spec.image_id)
        child = cls.ChildImageSpec(ioctx.pool_id, getattr(ioctx, "namespace", ""), image_id)
        try:
            await cls.child_detach(p_io, p_hdr, spec.snap_id, child)
        except ObjectNotFound:
            pass
        await _remove_trashed_parent_snap(p_io, spec)
    else:
        try:
            await cls.remove_child(ioctx, spec, image_id)
        except ObjectNotFound:
            pass


async def _remove_trashed_parent_snap(p_io: Any, spec: cls.ParentImageSpec) -> None:
    p_hdr = header_name(spec.image_id)
    try:
        info = await cls.snapshot_get(p_io, p_hdr, spec.snap_id)
    except ObjectNotFound:
        return
    if info.snapshot_namespace.type != cls.SNAPSHOT_NAMESPACE_TYPE_TRASH or info.child_count:
        return
    try:
        name = await cls.dir_get_name(p_io, RBD_DIRECTORY, spec.image_id)
    except ObjectNotFound:
        log.info("parent %s of trashed snapshot %d is not in the directory; leaving it",
                 spec.image_id, spec.snap_id)
        return
    try:
        parent = await AsyncImage.open(p_io, name)
    except Error as ex:
        log.warning("cannot open parent %s to remove trashed snapshot %d: %s", name, spec.snap_id, ex)
        return
    try:
        async with parent.maintenance_op():
            await snap_mod.remove_by_id(parent, info)
        await snap_mod.notify_header_update(parent)
    except Error as ex:
        log.warning("failed to remove trashed snapshot %d of %s: %s", spec.snap_id, name, ex)
    finally:
        await parent.close()


async def detach_from_parent(ioctx: Any, img: Any) -> None:
    """Unlink image ``img`` (about to be removed) from its parent: the child link
    (v1 ``rbd_children`` / v2 parent header) of the oldest snapshot or the head, as
    librbd's RemoveRequest does through DetachChildRequest.  No-op without a parent."""
    header = img.header_oid
    spec, _ = await parent_link(ioctx, header)
    if not spec.exists():
        return
    try:
        op_features = await cls.op_features_get(ioctx, header)
    except (ObjectNotFound, FunctionNotSupported):
        op_features = 0
    await detach_child(ioctx, img.image_id, spec, op_features)


# ---------------------------------------------------------------------------
# flatten


async def flatten(img: Any, on_progress: ProgressFn | None = None) -> None:
    """Copy every parent-backed object into the clone, then cut the parent link.

    ``on_progress(done, total)`` after each object.
    Raises InvalidArgumentError ("image has no parent"), ReadOnlyImage, or the
    ioctx's errors.
    """
    snap_mod.check_writable(img, "flatten")
    io, hdr = img.ioctx, img.header_oid
    spec, overlap = await parent_link(io, hdr)
    if not spec.exists() or overlap is None:
        raise InvalidArgumentError(f"image {img.name!r} has no parent", errno=errno.EINVAL)
    await img.acquire_lock()
    features = snap_mod.features_of(img)
    layout: Layout = img.layout
    total = get_num_objects(layout, min(overlap, img.size()))
    deep = bool(features & RBD_FEATURE_DEEP_FLATTEN)
    sem = asyncio.Semaphore(max(1, int(getattr(io, "max_concurrency", 16) or 1)))
    done = 0

    async def one(objectno: int) -> None:
        nonlocal done
        async with sem:
            await img.copyup_object(objectno, deep)
        done += 1
        if on_progress is not None:
            on_progress(done, total)

    await snap_mod._gather_all([lambda n=n: one(n) for n in range(total)])
    if total == 0 and on_progress is not None:
        on_progress(0, 0)

    snapc = await cls.get_snapcontext(io, hdr)
    if deep or not snapc.snaps:
        # no snapshot keeps using the parent: drop the child link too
        op_features = await cls.op_features_get(io, hdr)
        await detach_child(io, img.image_id, spec, op_features)
    try:
        await _detach_parent(io, hdr)
    except ObjectNotFound:
        pass  # another flatten finished first
    log.info("flattened %s (%d objects)", img.name, total)
    await img.refresh()
    await snap_mod.notify_header_update(img)
