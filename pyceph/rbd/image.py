"""Format 2 RBD images over an async ioctx: create, list, remove, open, read, write.

On-disk layout (``src/include/rbd_types.h``, ``drivers/block/rbd_types.h``):

- ``rbd_directory``: omap name <-> id of every image in the pool/namespace;
- ``rbd_id.<name>``: the image id, written by ``rbd.set_id``;
- ``rbd_header.<id>``: image metadata, read and written only through ``cls_rbd``;
- ``rbd_data.<id>.%016x``: data objects, laid out by :mod:`pyceph.rbd.striping`.

- ``rbd_object_map.<id>[.<snapid>]``: the object maps (:mod:`pyceph.rbd.object_map`).

The steps mirror librbd's ``src/librbd/image/CreateRequest.cc``,
``src/librbd/image/RemoveRequest.cc`` and ``src/librbd/image/RefreshRequest.cc``,
the I/O path of ``src/librbd/io/ObjectRequest.cc`` (object-map pre/post updates,
discard actions, assert_exists-guarded writes of clones) and
``src/librbd/io/CopyupRequest.cc`` (copy-up), ``src/librbd/operation/ResizeRequest.cc``
+ ``TrimRequest.cc`` (resize) and ``EnableFeaturesRequest.cc`` /
``DisableFeaturesRequest.cc`` (feature updates), and the kernel's
``drivers/block/rbd.c`` for the feature policy and the lazy exclusive lock
(taken on the first write, released on request unless opened ``exclusive``;
:mod:`pyceph.rbd.exclusive_lock` and :mod:`pyceph.rbd.image_watcher`).  The ioctx is any
object with the AsyncIoctx coroutine methods (``read``, ``write``, ``remove``,
``create``, ``execute`` ...); concurrency uses asyncio (tasks bounded by a semaphore).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import secrets
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable

from ..errors import (
    DecodeError,
    FeatureNotSupported,
    FunctionNotSupported,
    ImageBusy,
    ImageExists,
    ImageHasSnapshots,
    ImageNotFound,
    InvalidArgumentError,
    ObjectExists,
    ObjectNotFound,
    ReadOnlyImage,
    make_ex,
)
from ..osd import ops as O
from . import cls_client as cls
from . import snapshot
from .exclusive_lock import RBD_LOCK_NAME, ExclusiveLock
from .features import (
    PYCEPH_FEATURES_CREATE,
    PYCEPH_FEATURES_DEFAULT,
    PYCEPH_FEATURES_READ,
    PYCEPH_FEATURES_WRITE,
    RBD_FEATURE_DATA_POOL,
    RBD_FEATURE_DEEP_FLATTEN,
    RBD_FEATURE_EXCLUSIVE_LOCK,
    RBD_FEATURE_FAST_DIFF,
    RBD_FEATURE_JOURNALING,
    RBD_FEATURE_LAYERING,
    RBD_FEATURE_MIGRATING,
    RBD_FEATURE_NON_PRIMARY,
    RBD_FEATURE_OBJECT_MAP,
    RBD_FEATURE_OPERATIONS,
    RBD_FEATURE_STRIPINGV2,
    RBD_FEATURES_ALL,
    RBD_FEATURES_DISABLE_ONLY,
    RBD_FEATURES_MUTABLE,
    RBD_FLAG_FAST_DIFF_INVALID,
    RBD_FLAG_OBJECT_MAP_INVALID,
    describe_features,
    feature_names,
    flag_names,
    op_feature_names,
)
from .image_watcher import ImageWatcher
from .object_map import (
    MAX_OBJECT_MAP_OBJECT_COUNT,
    OBJECT_EXISTS,
    OBJECT_EXISTS_CLEAN,
    OBJECT_NONEXISTENT,
    OBJECT_PENDING,
    ObjectMap,
    object_map_name,
)
from .striping import (
    RBD_DATA_PREFIX,
    Layout,
    ObjectExtent,
    data_object_name,
    extent_to_file,
    get_num_objects,
    layout_to_extents,
)
from .watch_notify import NotifyMessage

RBD_DIRECTORY = "rbd_directory"
RBD_ID_PREFIX = "rbd_id."
RBD_HEADER_PREFIX = "rbd_header."
#: librbd.h ``rbd_lock_mode_t``
RBD_LOCK_MODE_EXCLUSIVE = 0
RBD_LOCK_MODE_SHARED = 1

RBD_DEFAULT_ORDER = 22
RBD_MIN_ORDER = 12  # CreateRequest::validate_order
RBD_MAX_ORDER = 25
#: ``RBD_MAX_BLOCK_NAME_SIZE - strlen(RBD_DATA_PREFIX) - 1`` (librbd Utils.cc)
RBD_MAX_IMAGE_ID_LENGTH = 14
#: librbd's rbd_mtime_update_interval / rbd_atime_update_interval defaults (seconds)
TIMESTAMP_UPDATE_INTERVAL = 60.0
DIR_LIST_PAGE = 1024


class ArgumentOutOfRange(InvalidArgumentError):
    """python-rbd's ``ArgumentOutOfRange``: librbd answers ``-EDOM`` (e.g. bad order)."""

    errno = errno.EDOM


def id_obj_name(name: str) -> str:
    """``rbd_id.<name>``."""
    return RBD_ID_PREFIX + name


def header_name(image_id: str) -> str:
    """``rbd_header.<id>``."""
    return RBD_HEADER_PREFIX + image_id


def generate_image_id(instance_id: int) -> str:
    """librbd's ``util::generate_image_id``: hex of the client instance id followed by
    hex of a random u32, keeping the last :data:`RBD_MAX_IMAGE_ID_LENGTH` characters."""
    extra = secrets.randbits(32)
    return f"{instance_id:x}{extra:x}"[-RBD_MAX_IMAGE_ID_LENGTH:]


async def _run_all(funcs: Iterable[Callable[[], Awaitable[Any]]], limiter: asyncio.Semaphore | None = None,
                   cancel_on_error: bool = True) -> None:
    """Run ``funcs`` concurrently; re-raise the first error as itself (not an
    ExceptionGroup) so callers see our typed errors.  With ``cancel_on_error`` the
    others are cancelled at the first error, else all run to completion."""
    funcs = list(funcs)
    if not funcs:
        return

    async def one(fn: Callable[[], Awaitable[Any]]) -> None:
        if limiter is None:
            await fn()
        else:
            async with limiter:
                await fn()

    if len(funcs) == 1:
        await one(funcs[0])
        return
    tasks = [asyncio.ensure_future(one(fn)) for fn in funcs]
    try:
        if cancel_on_error:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        else:
            await asyncio.gather(*tasks, return_exceptions=True)
    except BaseException:
        for t in tasks:
            t.cancel()
        raise
    for t in tasks:
        if not t.cancelled() and t.exception() is not None:
            raise t.exception()


async def _ignore_enoent(coro: Awaitable[Any]) -> None:
    try:
        await coro
    except ObjectNotFound:
        pass


def _limiter_for(ioctx: Any) -> asyncio.Semaphore:
    return asyncio.Semaphore(max(1, int(getattr(ioctx, "max_concurrency", 16) or 1)))


class AsyncRBD:
    """Pool-level RBD operations (python-rbd's ``RBD`` class, async)."""

    async def create(
        self,
        ioctx: Any,
        name: str,
        size: int,
        order: int | None = None,
        features: int | None = None,
        stripe_unit: int | None = None,
        stripe_count: int | None = None,
    ) -> None:
        """Create format 2 image ``name`` of ``size`` bytes.

        ``order``: log2 of the object size (default 22, 4 MiB; 12..25).
        ``features``: feature bits (default Pacific's 0x3d: layering,
        exclusive-lock, object-map, fast-diff, deep-flatten, reduced to what the
        OSDs support); pyceph creates images with features within those +
        striping, and makes the object map (``rbd_object_map.ID``, every object
        NONEXISTENT) for object-map images.  ``stripe_unit`` (bytes) and
        ``stripe_count`` must be given together; a non-default pair sets
        STRIPINGV2 as librbd does.  Follows ``librbd/image/CreateRequest.cc``:
        ``rbd_directory`` entry, ``rbd_id.NAME`` (create + ``rbd.set_id``),
        ``rbd_header.ID`` (create + ``rbd.create``), ``rbd.set_stripe_unit_count``,
        ``rbd.object_map_resize`` on ``rbd_object_map.ID``; a failed step removes what the earlier steps made.

        Raises ImageExists, ArgumentOutOfRange (bad order, errno EDOM),
        InvalidArgumentError (bad size/name/stripe params or feature combination),
        FeatureNotSupported (features pyceph cannot maintain), or the ioctx's errors.
        """
        if not name:
            raise InvalidArgumentError("image name must not be empty")
        if not 0 <= size < 1 << 64:  # rbd_obj_header_ondisk / cls_rbd: le64 size
            raise InvalidArgumentError(f"invalid image size {size}")
        order = order or RBD_DEFAULT_ORDER
        stripe_unit = stripe_unit or 0
        stripe_count = stripe_count or 0
        negotiate = features is None
        feats = PYCEPH_FEATURES_DEFAULT if features is None else int(features)

        # librbd decides STRIPINGV2 from the stripe parameters alone.
        if (stripe_unit and stripe_unit != 1 << order) or (stripe_count and stripe_count != 1):
            feats |= RBD_FEATURE_STRIPINGV2
        else:
            feats &= ~RBD_FEATURE_STRIPINGV2
        feats &= ~RBD_FEATURE_DATA_POOL  # no data pool option (yet): librbd clears it too
        if feats & RBD_FEATURE_OBJECT_MAP:
            feats |= RBD_FEATURE_FAST_DIFF  # CreateRequest: object-map always brings fast-diff
        _validate_create_features(feats)
        if not RBD_MIN_ORDER <= order <= RBD_MAX_ORDER:
            raise ArgumentOutOfRange(f"order must be in the range [{RBD_MIN_ORDER}, {RBD_MAX_ORDER}], got {order}")
        if stripe_unit < 0 or stripe_count < 0:
            raise InvalidArgumentError("stripe unit and count must be positive")
        if stripe_unit >= 1 << 64 or stripe_count >= 1 << 64:  # cls_rbd set_stripe_unit_count: le64 each
            raise InvalidArgumentError("stripe unit or count out of range")
        if bool(stripe_unit) != bool(stripe_count):
            raise InvalidArgumentError("must specify both (or neither) of stripe-unit and stripe-count")
        if stripe_unit and ((1 << order) % stripe_unit or stripe_unit > (1 << order)):
            raise InvalidArgumentError("stripe unit is not a factor of the object size")
        if feats & RBD_FEATURE_OBJECT_MAP and get_num_objects(
                Layout.from_order(order, stripe_unit, stripe_count), size) > MAX_OBJECT_MAP_OBJECT_COUNT:
            # CreateRequest::validate_layout (ObjectMap::is_compatible), before anything is written
            raise InvalidArgumentError("image size not compatible with object map")

        image_id = generate_image_id(int(getattr(ioctx, "instance_id", 0) or secrets.randbits(32)))
        id_obj = id_obj_name(name)
        header = header_name(image_id)
        undo: list[Callable[[], Awaitable[Any]]] = []

        async def rollback() -> None:
            async def undo_all() -> None:
                for step in reversed(undo):
                    try:
                        await step()
                    except Exception:  # noqa: BLE001 - best-effort cleanup
                        pass

            # Shielded: a cancelled create still cleans up what it made.
            await asyncio.shield(undo_all())

        try:
            try:
                await cls.dir_add_image(ioctx, RBD_DIRECTORY, name, image_id)
            except ObjectExists:
                raise ImageExists(f"image {name!r} already exists", errno=errno.EEXIST) from None
            undo.append(lambda: cls.dir_remove_image(ioctx, RBD_DIRECTORY, name, image_id))

            try:
                await ioctx.create(id_obj, exclusive=True)
            except ObjectExists:
                raise ImageExists(f"id object for {name!r} already exists", errno=errno.EEXIST) from None
            undo.append(lambda: ioctx.remove(id_obj))
            await cls.set_id(ioctx, id_obj, image_id)

            if negotiate:
                try:
                    feats &= await cls.get_all_features(ioctx, RBD_DIRECTORY)
                except (FunctionNotSupported, ObjectNotFound, DecodeError):
                    pass  # librbd keeps the requested set when the OSD cannot say

            try:
                await ioctx.create(header, exclusive=True)
            except ObjectExists:
                # librbd: "image id already in-use" -> -EBADF
                raise make_ex(-errno.EBADF, f"image id {image_id} already in use") from None
            undo.append(lambda: ioctx.remove(header))
            await cls.create_image(ioctx, header, size, order, feats, RBD_DATA_PREFIX + image_id, -1)

            if stripe_unit and not (stripe_count == 1 and stripe_unit == 1 << order):
                await cls.set_stripe_unit_count(ioctx, header, stripe_unit, stripe_count)

            if feats & RBD_FEATURE_OBJECT_MAP:
                # CreateRequest::object_map_resize: every object NONEXISTENT
                layout = Layout.from_order(order, stripe_unit, stripe_count)
                undo.append(lambda: ioctx.remove(object_map_name(image_id)))
                await ObjectMap(ioctx, image_id, cls.CEPH_NOSNAP, lambda: None).create(get_num_objects(layout, size))
        except BaseException:
            await rollback()
            raise

    async def list(self, ioctx: Any) -> list[str]:
        """Names of the format 2 images in ``rbd_directory`` (paged ``rbd.dir_list``),
        sorted.  A pool without a directory has no images."""
        names: list[str] = []
        start = ""
        while True:
            try:
                page = await cls.dir_list(ioctx, RBD_DIRECTORY, start, DIR_LIST_PAGE)
            except ObjectNotFound:
                return names
            names.extend(page)
            if len(page) < DIR_LIST_PAGE:
                return names
            start = names[-1]

    async def remove(self, ioctx: Any, name: str,
                     on_progress: Callable[[int, int], Any] | None = None) -> None:
        """Remove image ``name``: data objects, object maps, parent link, header, id
        object, directory entry.

        Follows ``librbd/image/PreRemoveRequest.cc`` and ``RemoveRequest.cc``
        (Pacific's ``rbd rm`` first moves the image to the trash and then runs the
        same removal; the end state is the same): refuses while another client
        holds the exclusive lock or watches the header ("image still has
        watchers") or while snapshots exist; removes the data objects (librbd's
        TrimRequest), detaches a clone from its parent
        (:func:`pyceph.rbd.clone.detach_from_parent`), then the object maps (head and snapshots),
        header, id object and directory entry.  ``on_progress(done, total)`` counts
        data objects.  Raises ImageNotFound, ImageHasSnapshots (ENOTEMPTY),
        ImageBusy (EBUSY), FeatureNotSupported (journaling, data pool or migration),
        or the ioctx's errors.
        """
        id_obj = id_obj_name(name)
        try:
            image_id = await cls.get_id(ioctx, id_obj)
        except ObjectNotFound:
            try:
                image_id = await cls.dir_get_id(ioctx, RBD_DIRECTORY, name)
            except ObjectNotFound:
                raise ImageNotFound(f"image {name!r} not found", errno=errno.ENOENT) from None
        header = header_name(image_id)
        limiter = _limiter_for(ioctx)

        try:
            snapc = await cls.get_snapcontext(ioctx, header)
        except ObjectNotFound:
            snapc = None  # half-created/half-removed image: just drop the id and entry
        if snapc is not None:
            features, _ = await cls.get_features(ioctx, header, cls.CEPH_NOSNAP, False)
            blocked = features & (RBD_FEATURE_JOURNALING | RBD_FEATURE_DATA_POOL | RBD_FEATURE_MIGRATING)
            if blocked:
                raise FeatureNotSupported(
                    f"cannot remove image {name!r}: it uses features pyceph does not support "
                    f"for removal: {describe_features(blocked)}"
                )
            if features & RBD_FEATURE_EXCLUSIVE_LOCK:
                try:
                    info = await cls.lock_get_info(ioctx, header, RBD_LOCK_NAME)
                except (ObjectNotFound, FunctionNotSupported):
                    info = None
                if info is not None and info.lockers:
                    holders = ", ".join(f"{k.locker} ({k.cookie})" for k in info.lockers)
                    raise ImageBusy(f"image {name!r} is locked by {holders}; not removing", errno=errno.EBUSY)
            if snapc.snaps:
                raise ImageHasSnapshots(
                    f"image {name!r} has {len(snapc.snaps)} snapshot(s); remove them first",
                    errno=errno.ENOTEMPTY,
                )
            try:
                watchers = await ioctx.list_watchers(header)
            except ObjectNotFound:
                watchers = []
            if watchers:
                who = ", ".join(str(w.name) for w in watchers)
                raise ImageBusy(f"image {name!r} still has watchers ({who}); not removing",
                                errno=errno.EBUSY)
            size, order = await cls.get_size(ioctx, header)
            su, sc = 0, 0
            if features & RBD_FEATURE_STRIPINGV2:
                su, sc = await cls.get_stripe_unit_count(ioctx, header)
            prefix = await cls.get_object_prefix(ioctx, header)
            layout = Layout.from_order(order, su, sc)
            snapc_t = snapc.to_tuple()
            count = get_num_objects(layout, size)
            done = 0

            def rm(objectno: int) -> Callable[[], Awaitable[None]]:
                async def run() -> None:
                    nonlocal done
                    await _ignore_enoent(ioctx.remove(data_object_name(prefix, objectno), snapc=snapc_t))
                    done += 1
                    if on_progress is not None:
                        on_progress(done, count)

                return run

            # librbd's TrimRequest: remove every object the size could cover.
            await _run_all((rm(i) for i in range(count)), limiter)
            if features & RBD_FEATURE_LAYERING:
                await _detach_from_parent(ioctx, name, image_id)
            if features & RBD_FEATURE_OBJECT_MAP:
                for sid in snapc.snaps:
                    await _ignore_enoent(ioctx.remove(object_map_name(image_id, sid)))
                await _ignore_enoent(ioctx.remove(object_map_name(image_id)))
            await _ignore_enoent(ioctx.remove(header))
        if on_progress is not None and snapc is None:
            on_progress(1, 1)
        await _ignore_enoent(ioctx.remove(id_obj))
        await _ignore_enoent(cls.dir_remove_image(ioctx, RBD_DIRECTORY, name, image_id))

    async def clone(
        self,
        p_ioctx: Any,
        p_name: str,
        p_snapname: str,
        c_ioctx: Any,
        c_name: str,
        features: int | None = None,
        order: int | None = None,
        stripe_unit: int | None = None,
        stripe_count: int | None = None,
        clone_format: int | None = None,
    ) -> None:
        """Clone ``p_name@p_snapname`` into ``c_name`` (:func:`pyceph.rbd.clone.clone`;
        python-rbd ``RBD.clone``).  Raises ImageNotFound, InvalidArgumentError (snapshot not
        protected for v1 clones), ImageExists, FeatureNotSupported."""
        from . import clone as clone_mod  # lazy: clone imports this module

        await clone_mod.clone(p_ioctx, p_name, p_snapname, c_ioctx, c_name, features=features, order=order,
                              stripe_unit=stripe_unit, stripe_count=stripe_count, clone_format=clone_format)


async def _detach_from_parent(ioctx: Any, name: str, image_id: str) -> None:
    """Unlink a clone being removed from its parent (:func:`pyceph.rbd.clone.detach_from_parent`)."""
    try:
        spec = await cls.parent_get(ioctx, header_name(image_id))
    except FunctionNotSupported:
        spec, _ = await cls.get_parent(ioctx, header_name(image_id), cls.CEPH_NOSNAP)
    except ObjectNotFound:
        return
    if not spec.exists():
        return
    from . import clone as clone_mod  # lazy: clone imports this module

    img = await AsyncImage.open(ioctx, name, read_only=True, image_id=image_id, open_parent=False)
    try:
        await clone_mod.detach_from_parent(ioctx, img)
    finally:
        await img.close()


def _validate_create_features(features: int) -> None:
    """librbd's ``validate_features`` (CreateRequest.cc), then pyceph's own limits."""
    if features & ~RBD_FEATURES_ALL:
        raise FeatureNotSupported(f"unknown features requested: {describe_features(features & ~RBD_FEATURES_ALL)}")
    if features & RBD_FEATURE_OPERATIONS:
        raise InvalidArgumentError("cannot use internally controlled features")
    if features & RBD_FEATURE_FAST_DIFF and not features & RBD_FEATURE_OBJECT_MAP:
        raise InvalidArgumentError("cannot use fast diff without object map")
    if features & RBD_FEATURE_OBJECT_MAP and not features & RBD_FEATURE_EXCLUSIVE_LOCK:
        raise InvalidArgumentError("cannot use object map without exclusive lock")
    if features & RBD_FEATURE_JOURNALING and not features & RBD_FEATURE_EXCLUSIVE_LOCK:
        raise InvalidArgumentError("cannot use journaling without exclusive lock")
    extra = features & ~PYCEPH_FEATURES_CREATE
    if extra:
        raise FeatureNotSupported(f"pyceph cannot create images with features {describe_features(extra)}")


def check_feature_policy(features: int, incompatible: int, read_only: bool) -> None:
    """Refuse images whose features pyceph cannot honour for this access.

    Read-write: every feature must be within layering + striping (like krbd's
    ``RBD_FEATURES_SUPPORTED`` check in ``rbd_dev_v2_features``, which prints
    "image uses unsupported features: 0x38").  Read-only: only the
    *incompatible* set the OSD reports (``rbd.get_features`` with read_only)
    matters, plus the data pool, which pyceph cannot reach yet.
    Raises FeatureNotSupported naming the features.
    """
    if read_only:
        bad = (incompatible & ~PYCEPH_FEATURES_READ) | (features & RBD_FEATURE_DATA_POOL)
    else:
        bad = (features | incompatible) & ~PYCEPH_FEATURES_WRITE
    if bad:
        mode = "read-only" if read_only else "read-write"
        raise FeatureNotSupported(f"image uses unsupported features ({mode}): {describe_features(bad)}")


async def _optional(coro: Awaitable[Any], default: Any) -> Any:
    """Header fields older OSDs or images may lack."""
    try:
        return await coro
    except (ObjectNotFound, FunctionNotSupported):
        return default
    except Exception as ex:  # noqa: BLE001
        if getattr(ex, "errno", None) in (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOENT):
            return default
        raise


class ParentInfo:
    """A clone's parent link at the open snapshot: ``spec`` (cls ParentImageSpec:
    pool id, namespace, image id, snap id) and ``overlap`` (bytes of the child, from
    offset 0, that still read through to the parent)."""

    __slots__ = ("spec", "overlap")

    def __init__(self, spec: cls.ParentImageSpec, overlap: int) -> None:
        self.spec = spec
        self.overlap = overlap

    def __repr__(self) -> str:
        return f"ParentInfo(spec={self.spec!r}, overlap={self.overlap})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParentInfo) and (self.spec, self.overlap) == (other.spec, other.overlap)


def prune_parent_extents(extents: list[tuple[int, int]], overlap: int) -> list[tuple[int, int]]:
    """librbd's ``ImageCtx::prune_parent_extents``: keep the image extents (sorted
    ascending, as ``extent_to_file`` gives them) below ``overlap``, clipping the last."""
    out: list[tuple[int, int]] = []
    for off, n in extents:
        if off >= overlap:
            break
        out.append((off, min(n, overlap - off)))
    return out


def prune_discard_extent(offset: int, length: int, object_size: int, granularity: int) -> tuple[int, int]:
    """``ImageDiscardRequest::prune_object_extents`` for one object extent: align
    the start up and the end down to ``granularity`` (capped at the object size),
    except a tail reaching the object end when the granularity is the object size.
    Returns the new ``(offset, length)``; length 0 means nothing to discard."""
    if granularity <= 0:
        return offset, length
    g = min(granularity, object_size)
    end = offset + length
    if g < object_size or end < object_size:
        start = -(-offset // g) * g
        end = end // g * g
        if start >= end:
            return start, 0
        return start, end - start
    return offset, length


#: librbd's ``rbd_discard_granularity_bytes`` default (Pacific)
RBD_DISCARD_GRANULARITY_BYTES = 64 * 1024

# ObjectDiscardRequest actions (librbd io/ObjectRequest.h)
_WRITE, _REMOVE, _CREATE_TRUNCATE, _TRUNCATE, _ZERO = "write", "remove", "create+truncate", "truncate", "zero"


class AsyncImage:
    """An open format 2 image (python-rbd's ``Image``, async).

    Open with ``await AsyncImage.open(ioctx, name, read_only=False, snapshot=None)``.
    Sizes and offsets are bytes.  ``write`` returns only after every object write
    it issued was acknowledged by the OSDs (there is no client-side cache), so
    ``flush`` only waits for writes still running in other tasks.

    Read-write opens of images with exclusive-lock watch the header
    (:attr:`watcher`, an ImageWatcher) and take the lock (:attr:`exclusive_lock`)
    lazily on the first write/discard/resize, as krbd does; while the lock is held
    the object map (:attr:`object_map`, an ObjectMap) is loaded and kept in step
    with every write.  Clones read through :attr:`parent_image` within the parent
    overlap and copy up on the first write of an object.
    """

    def __init__(self, ioctx: Any, name: str, image_id: str, read_only: bool) -> None:
        self.ioctx = ioctx
        self.rados = getattr(ioctx, "rados", None)
        self.name = name
        self.image_id = image_id
        self.header_oid = header_name(image_id)
        self.read_only = read_only
        self._open_read_only = read_only
        self.snap_name: str | None = None
        self.snap_id = cls.CEPH_NOSNAP
        self.object_prefix = ""
        self.order = RBD_DEFAULT_ORDER
        self._size = 0
        self._features = 0
        self._incompatible = 0
        self._flags = 0
        self._op_features = 0
        self._snap_limit = cls.U64_MAX
        self._protection = cls.RBD_PROTECTION_STATUS_UNPROTECTED
        self.data_pool_id = -1
        self.snapc = cls.SnapContext()
        self.layout = Layout.from_order(RBD_DEFAULT_ORDER)
        self.create_timestamp = (0, 0)
        self.access_timestamp = (0, 0)
        self.modify_timestamp = (0, 0)
        self.parent: ParentInfo | None = None
        self.parent_image: AsyncImage | None = None
        self.watcher: Any = None
        self.exclusive_lock: Any = None
        self.object_map: Any = None
        self._exclusive = False
        self._skip_parent = False
        self._lock_ready = False
        self._acquire_mutex = asyncio.Lock()
        self._refresh_mutex = asyncio.Lock()
        self._refresh_task: asyncio.Task | None = None
        self._limiter = _limiter_for(ioctx)
        self._closed = False
        self._write_seq = 0
        self._inflight: dict[int, asyncio.Event] = {}
        self._block_count = 0
        self._unblocked = asyncio.Event()
        self._unblocked.set()
        self._last_mtime_update = float("-inf")
        self._last_atime_update = float("-inf")

    # -- opening -------------------------------------------------------------
    @classmethod
    async def open(
        cls_,
        ioctx: Any,
        name: str | None,
        read_only: bool = False,
        snapshot: str | None = None,
        *,
        snap_id: int | None = None,
        exclusive: bool = False,
        image_id: str | None = None,
        open_parent: bool = True,
    ) -> "AsyncImage":
        """Open image ``name`` (or, with ``name=None``, the image with ``image_id``).

        ``snapshot`` (name) or ``snap_id`` opens a snapshot, which implies
        read-only.  ``exclusive``: take the exclusive lock now and never give it
        up on request (krbd's ``-o exclusive``).  Reads the id (``rbd.get_id`` on
        ``rbd_id.NAME``) and the header through cls calls, applies
        :func:`check_feature_policy`, opens the parent of a clone (read-only, at
        the parent snapshot, possibly in another pool; ``open_parent=False`` skips
        that, for removal) and, for read-write opens
        registers the header watch (HEADER_UPDATE -> :meth:`refresh`) and, for
        exclusive-lock images, sets up the lock.

        Raises ImageNotFound (no image, or no such snapshot), FeatureNotSupported,
        ImageBusy (``exclusive`` and another client refuses to release the lock),
        DecodeError, or the ioctx's errors.
        """
        read_only = read_only or snapshot is not None or snap_id is not None
        if image_id is None:
            if not name:
                raise InvalidArgumentError("an image name or id is required")
            try:
                image_id = await cls.get_id(ioctx, id_obj_name(name))
            except ObjectNotFound:
                raise ImageNotFound(f"image {name!r} not found", errno=errno.ENOENT) from None
        elif name is None:
            try:
                name = await cls.dir_get_name(ioctx, RBD_DIRECTORY, image_id)
            except Exception:  # noqa: BLE001 - trashed parents have no directory entry
                name = ""
        img = cls_(ioctx, name or "", image_id, read_only)
        img._exclusive = exclusive
        img._skip_parent = not open_parent
        try:
            await img._load(snapshot, snap_id)
            await img._open_parent()
            if not img.read_only:
                # Every read-write open of the head watches the header (as krbd
                # does) so resizes and snapshots made elsewhere are seen.
                await img._start_watch()
                if img._features & RBD_FEATURE_EXCLUSIVE_LOCK:
                    await img._start_exclusive_lock()
                    if exclusive:
                        await img.acquire_lock()
        except BaseException as ex:
            await asyncio.shield(img._teardown())
            if isinstance(ex, ObjectNotFound) and not isinstance(ex, ImageNotFound):
                raise ImageNotFound(f"image {name!r} header not found: {ex}", errno=errno.ENOENT) from None
            raise
        return img

    async def _load(self, snapshot: str | None, snap_id: int | None = None, *, refresh: bool = False) -> None:
        io, hdr = self.ioctx, self.header_oid
        out: dict[str, Any] = {}

        def put(key: str, coro_fn: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                out[key] = await coro_fn()

            return run

        at_snap = snapshot is not None or (snap_id is not None and snap_id != cls.CEPH_NOSNAP)
        # One round of independent reads (librbd batches these in one compound op).
        phase1 = [
            put("features", lambda: cls.get_features(io, hdr, cls.CEPH_NOSNAP, self.read_only)),
            put("prefix", lambda: cls.get_object_prefix(io, hdr)),
            put("snapc", lambda: cls.get_snapcontext(io, hdr)),
            put("ctime", lambda: _optional(cls.get_timestamp(io, hdr, "create"), (0, 0))),
            put("atime", lambda: _optional(cls.get_timestamp(io, hdr, "access"), (0, 0))),
            put("mtime", lambda: _optional(cls.get_timestamp(io, hdr, "modify"), (0, 0))),
            put("snap_limit", lambda: _optional(cls.snapshot_get_limit(io, hdr), cls.U64_MAX)),
        ]
        if not at_snap:
            phase1.append(put("size", lambda: cls.get_size(io, hdr, cls.CEPH_NOSNAP)))
            phase1.append(put("flags", lambda: cls.get_flags(io, hdr, cls.CEPH_NOSNAP)))
        await _run_all(phase1)
        features, incompatible = out["features"]
        if not refresh:
            check_feature_policy(features, incompatible, self.read_only)
        self._features, self._incompatible = features, incompatible
        self.object_prefix = out["prefix"]
        self.snapc = out["snapc"]
        self.create_timestamp, self.access_timestamp = out["ctime"], out["atime"]
        self.modify_timestamp = out["mtime"]
        self._snap_limit = out["snap_limit"]

        if snapshot is not None:
            self.snap_id = await self._find_snapshot(snapshot)
            self.snap_name = snapshot
        elif snap_id is not None and snap_id != cls.CEPH_NOSNAP:
            if snap_id not in self.snapc.snaps:
                raise ImageNotFound(f"snapshot id {snap_id} of image {self.name!r} not found", errno=errno.ENOENT)
            self.snap_id = snap_id
            if self.snap_name is None:
                try:
                    self.snap_name = await cls.get_snapshot_name(io, hdr, snap_id)
                except Exception:  # noqa: BLE001 - name only informative
                    self.snap_name = None
        elif not refresh:
            self.snap_id = cls.CEPH_NOSNAP

        snap = self.snap_id
        phase2: list[Callable[[], Awaitable[None]]] = []
        if snap != cls.CEPH_NOSNAP:
            if snap not in self.snapc.snaps:
                raise ImageNotFound(f"snapshot {self.snap_name!r} of image {self.name!r} was removed",
                                    errno=errno.ENOENT)
            phase2.append(put("size", lambda: cls.get_size(io, hdr, snap)))
            phase2.append(put("flags", lambda: cls.get_flags(io, hdr, snap)))
            phase2.append(put("protection", lambda: cls.get_protection_status(io, hdr, snap)))
        if self._features & RBD_FEATURE_STRIPINGV2:
            phase2.append(put("stripe", lambda: cls.get_stripe_unit_count(io, hdr)))
        if self._features & RBD_FEATURE_OPERATIONS:
            phase2.append(put("op_features", lambda: _optional(cls.op_features_get(io, hdr), 0)))
        if self._features & RBD_FEATURE_DATA_POOL:
            phase2.append(put("data_pool", lambda: cls.get_data_pool(io, hdr)))
        if self._features & RBD_FEATURE_LAYERING:
            phase2.append(put("parent", self._get_parent))
        await _run_all(phase2)

        self._size, self.order = out["size"]
        self._flags = out["flags"]
        self._protection = out.get("protection", cls.RBD_PROTECTION_STATUS_UNPROTECTED)
        self._op_features = out.get("op_features", 0)
        self.data_pool_id = out.get("data_pool", -1)
        su, sc = out.get("stripe", (0, 0))
        self.layout = Layout.from_order(self.order, su, sc)
        parent = out.get("parent")
        self.parent = None
        if parent is not None:
            spec, overlap = parent
            if spec.exists() and overlap:
                self.parent = ParentInfo(spec, overlap)

    async def _get_parent(self) -> tuple[cls.ParentImageSpec, int | None]:
        """Parent spec and overlap at the open snapshot (``parent_get`` +
        ``parent_overlap_get``, or the legacy ``get_parent`` on old OSDs)."""
        io, hdr = self.ioctx, self.header_oid
        try:
            spec = await cls.parent_get(io, hdr)
        except FunctionNotSupported:
            return await cls.get_parent(io, hdr, self.snap_id)
        if not spec.exists():
            return spec, None
        return spec, await cls.parent_overlap_get(io, hdr, self.snap_id)

    async def _open_parent(self) -> None:
        """Open (or re-open after a change) the parent image of a clone, read-only at
        the parent snapshot, in the parent's pool and namespace (librbd's
        ``image::RefreshParentRequest``); close it once the link is gone."""
        want = None if self._skip_parent else self.parent
        cur = self.parent_image
        if cur is not None:
            spec = want.spec if want is not None else None
            same = (
                spec is not None
                and cur.image_id == spec.image_id
                and cur.snap_id == spec.snap_id
                and getattr(cur.ioctx, "pool_id", spec.pool_id) == spec.pool_id
                and getattr(cur.ioctx, "namespace", spec.pool_namespace) == spec.pool_namespace
            )
            if same:
                return
            self.parent_image = None
            await cur.close()
        if want is None:
            return
        spec = want.spec
        pio = await self._parent_ioctx(spec)
        self.parent_image = await AsyncImage.open(pio, None, read_only=True, snap_id=spec.snap_id,
                                                  image_id=spec.image_id)

    def _parent_ioctx_for(self, spec: cls.ParentImageSpec) -> Any:
        if getattr(self.ioctx, "pool_id", None) == spec.pool_id and \
                getattr(self.ioctx, "namespace", "") == spec.pool_namespace:
            return self.ioctx
        return None

    async def _parent_ioctx(self, spec: cls.ParentImageSpec) -> Any:
        same = self._parent_ioctx_for(spec)
        if same is not None:
            return same
        if self.rados is None:
            raise FeatureNotSupported(f"cannot open the parent pool {spec.pool_id} without a rados handle")
        return await self.rados.open_ioctx(spec.pool_id, spec.pool_namespace)

    async def _find_snapshot(self, snap_name: str) -> int:
        names: dict[int, str] = {}

        def one(snap_id: int) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                try:
                    names[snap_id] = await cls.get_snapshot_name(self.ioctx, self.header_oid, snap_id)
                except ObjectNotFound:
                    pass  # removed while we looked

            return run

        if self.snapc.snaps:
            await _run_all((one(s) for s in self.snapc.snaps), self._limiter)
        for snap_id in self.snapc.snaps:
            if names.get(snap_id) == snap_name:
                return snap_id
        raise ImageNotFound(f"snapshot {snap_name!r} of image {self.name!r} not found", errno=errno.ENOENT)

    async def refresh(self) -> None:
        """Re-read the header (size, snap context, features, flags, parent and
        overlap, op features, protection) like librbd's RefreshRequest, and re-open
        or close the parent when the link changed.  Raises ImageNotFound when the
        image (or the open snapshot) is gone."""
        async with self._refresh_mutex:
            await self._load(None, self.snap_id, refresh=True)
            await self._open_parent()
            if self.object_map is not None and not self._features & RBD_FEATURE_OBJECT_MAP:
                self.object_map = None
            if (not self.read_only and not self._closed and self.exclusive_lock is None
                    and self._features & RBD_FEATURE_EXCLUSIVE_LOCK):
                await self._start_exclusive_lock()  # another client enabled the feature

    def _on_header_update(self, *args: Any) -> None:
        """HEADER_UPDATE notification (plain callable from the watcher): refresh soon."""
        if self._closed:
            return
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.ensure_future(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except Exception:  # noqa: BLE001 - the next I/O or notification retries
            pass

    # -- exclusive lock ------------------------------------------------------------
    def _lock_required(self) -> bool:
        return self.exclusive_lock is not None

    async def _start_watch(self) -> None:
        self.watcher = ImageWatcher(self.ioctx, self.header_oid, self._on_header_update)
        await self.watcher.start()

    async def _start_exclusive_lock(self) -> None:
        if self.watcher is None:
            await self._start_watch()
        self.exclusive_lock = ExclusiveLock(
            self.ioctx, self.header_oid, self.watcher, self.rados,
            exclusive=self._exclusive,
            on_acquired=self._on_lock_acquired,
            on_releasing=self._on_lock_releasing,
        )

    async def acquire_lock(self) -> None:
        """Take the exclusive lock if the image has the feature and we do not hold it
        yet (no-op otherwise); afterwards the header is fresh and the object map
        loaded.  Raises ImageBusy / ReadOnlyImage when the owner refuses, or the
        errors of the lock and object map calls."""
        if self.exclusive_lock is None:
            if self._features & RBD_FEATURE_EXCLUSIVE_LOCK and not self.read_only and not self._closed:
                raise ReadOnlyImage(f"image {self.name!r} has no exclusive-lock handler", errno=errno.EROFS)
            return
        async with self._acquire_mutex:
            lock = self.exclusive_lock
            if self._lock_ready and lock.is_owner():
                return
            if self._lock_ready:
                await self._drop_object_map()  # the lock was lost (watch error)
                self._lock_ready = False
            await lock.acquire()
            if not self._lock_ready and lock.is_owner():
                await self._on_lock_acquired()
            if not self._lock_ready:
                raise ImageBusy(f"could not acquire the exclusive lock of image {self.name!r}", errno=errno.EBUSY)

    async def _on_lock_acquired(self) -> None:
        """librbd's PostAcquireRequest: refresh the header, then open the object map."""
        if self._lock_ready:
            return
        await self.refresh()
        if self._features & RBD_FEATURE_OBJECT_MAP and self.snap_id == cls.CEPH_NOSNAP:
            await self._drop_object_map()
            om = ObjectMap(self.ioctx, self.image_id, cls.CEPH_NOSNAP, self.lock_cookie,
                           fast_diff=bool(self._features & RBD_FEATURE_FAST_DIFF), flags=self._flags,
                           header_oid=self.header_oid)
            await om.load(self.num_objects())
            self.object_map = om
        self._lock_ready = True

    async def _drop_object_map(self) -> None:
        om, self.object_map = self.object_map, None
        if om is not None:
            try:
                await om.close()
            except Exception:  # noqa: BLE001 - the next owner breaks the map lock
                pass

    async def _on_lock_releasing(self) -> None:
        """librbd's PreReleaseRequest: block and flush writes, close the object map."""
        async with self.write_barrier():
            self._lock_ready = False
            await self._drop_object_map()

    def lock_cookie(self) -> str | None:
        """The exclusive-lock cookie while we own the lock, else None."""
        lock = self.exclusive_lock
        return None if lock is None else lock.cookie

    async def notify_header_update(self) -> None:
        """Tell the other watchers to refresh (HEADER_UPDATE), as librbd does after
        every header change.  Without a watcher, a plain notify with the same payload."""
        if self.watcher is not None:
            await self.watcher.notify_header_update()
            return
        payload = NotifyMessage.header_update().encode()
        try:
            await self.ioctx.notify(self.header_oid, payload)
        except Exception:  # noqa: BLE001 - a missed notify only delays peers' refresh
            pass

    # -- I/O gating (librbd's ImageDispatcher block_writes) ----------------------------
    async def _start_write(self) -> int:
        """Wait while writes are blocked, take the lock if needed, then register an
        in-flight write; returns its sequence number."""
        while True:
            while self._block_count:
                await self._unblocked.wait()
            if self._lock_required() and not (self._lock_ready and self.exclusive_lock.is_owner()):
                await self.acquire_lock()
                continue
            seq = self._write_seq
            self._write_seq += 1
            self._inflight[seq] = asyncio.Event()
            return seq

    def _end_write(self, seq: int) -> None:
        ev = self._inflight.pop(seq, None)
        if ev is not None:
            ev.set()

    @contextlib.asynccontextmanager
    async def _write_op(self) -> AsyncIterator[None]:
        seq = await self._start_write()
        try:
            yield
        finally:
            self._end_write(seq)

    @contextlib.asynccontextmanager
    async def write_barrier(self) -> AsyncIterator[None]:
        """Block new writes and wait for the ones in flight (librbd's block_writes);
        writes resume when the block exits.  Nests."""
        self._block_count += 1
        self._unblocked.clear()
        try:
            await self.flush()
            yield
        finally:
            self._block_count -= 1
            if not self._block_count:
                self._unblocked.set()

    @contextlib.asynccontextmanager
    async def maintenance_op(self) -> AsyncIterator[None]:
        """Run a header-changing operation (resize, feature update, snapshot ...):
        hold the exclusive lock (acquired if needed) for its whole duration (a lock
        release request waits for it), with other writes blocked and drained."""
        self._check_writable()
        seq = await self._start_write()
        self._block_count += 1
        self._unblocked.clear()
        try:
            for s, ev in list(self._inflight.items()):
                if s != seq:
                    await ev.wait()
            yield
        finally:
            self._block_count -= 1
            if not self._block_count:
                self._unblocked.set()
            self._end_write(seq)

    # -- metadata (cached at open) -------------------------------------------
    def size(self) -> int:
        """Image size in bytes (at the open snapshot)."""
        return self._size

    def features(self) -> int:
        return self._features

    def incompatible_features(self) -> int:
        return self._incompatible

    def flags(self) -> int:
        return self._flags

    def op_features(self) -> int:
        return self._op_features

    def stripe_unit(self) -> int:
        return self.layout.stripe_unit

    def stripe_count(self) -> int:
        return self.layout.stripe_count

    def get_block_name_prefix(self) -> str:
        return self.object_prefix

    def id(self) -> str:
        return self.image_id

    def old_format(self) -> bool:
        return False

    def get_snap_limit(self) -> int:
        return self._snap_limit

    def num_objects(self) -> int:
        """``Striper::get_num_objects`` for the current size and layout."""
        return get_num_objects(self.layout, self._size)

    def protected(self) -> bool:
        """Whether the open snapshot is protected (False at the head)."""
        return self._protection == cls.RBD_PROTECTION_STATUS_PROTECTED

    def stat(self) -> dict[str, Any]:
        """python-rbd's ``Image.stat()``: size, obj_size (bytes), num_objs, order,
        block_name_prefix, parent_pool (-1: none), parent_name ("")."""
        parent_pool, parent_name = -1, ""
        if self.parent is not None:
            parent_pool = self.parent.spec.pool_id
            if self.parent_image is not None:
                parent_name = self.parent_image.name
        return {
            "size": self._size,
            "obj_size": self.layout.object_size,
            "num_objs": self.num_objects(),
            "order": self.order,
            "block_name_prefix": self.object_prefix,
            "parent_pool": parent_pool,
            "parent_name": parent_name,
        }

    def info_json(self, name: str | None = None) -> dict[str, Any]:
        """The object ``rbd info --format json`` prints (src/tools/rbd/action/Info.cc,
        Pacific), same keys, order and value formats; timestamps use ``ctime()`` in
        local time and are omitted when zero.  Clones get the ``parent`` object
        (pool, pool_namespace, image, id, snapshot, trash, overlap)."""
        info: dict[str, Any] = {
            "name": self.name if name is None else name,
            "id": self.image_id,
            "size": self._size,
            "objects": self.num_objects(),
            "order": self.order,
            "object_size": self.layout.object_size,
            "snapshot_count": len(self.snapc.snaps),
            "block_name_prefix": self.object_prefix,
            "format": 2,
            "features": feature_names(self._features),
            "op_features": op_feature_names(self._op_features),
            "flags": flag_names(self._flags),
        }
        for key, ts in (
            ("create_timestamp", self.create_timestamp),
            ("access_timestamp", self.access_timestamp),
            ("modify_timestamp", self.modify_timestamp),
        ):
            if ts[0]:
                info[key] = time.ctime(ts[0])
        if self.snap_name is not None:
            info["protected"] = "true" if self._protection == cls.RBD_PROTECTION_STATUS_PROTECTED else "false"
        if self._snap_limit < cls.U64_MAX:
            info["snapshot_limit"] = self._snap_limit
        if self.parent is not None:
            p = self.parent_image
            info["parent"] = {
                "pool": getattr(p.ioctx, "pool_name", "") if p is not None else "",
                "pool_namespace": self.parent.spec.pool_namespace,
                "image": p.name if p is not None else "",
                "id": self.parent.spec.image_id,
                "snapshot": (p.snap_name or "") if p is not None else "",
                "trash": False,
                "overlap": self.parent.overlap,
            }
        if self._features & RBD_FEATURE_STRIPINGV2:
            info["stripe_unit"] = self.layout.stripe_unit
            info["stripe_count"] = self.layout.stripe_count
        return info

    # -- I/O -------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgumentError(f"image {self.name!r} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise ReadOnlyImage(f"image {self.name!r} is open read-only", errno=errno.EROFS)

    def _clip(self, offset: int, length: int) -> int:
        """librbd's ``clip_io``: start past the end is EINVAL, the tail is clipped."""
        if offset < 0 or length < 0:
            raise InvalidArgumentError(f"invalid extent {offset}~{length}")
        if length == 0:
            return 0
        if offset >= self._size:
            raise InvalidArgumentError(f"offset {offset} is past the end of the image ({self._size} bytes)")
        return min(length, self._size - offset)

    async def _touch(self, which: str) -> None:
        """librbd refreshes access/modify timestamps at most once per interval."""
        try:
            await cls.set_timestamp(self.ioctx, self.header_oid, which)
        except Exception:  # noqa: BLE001 - a stale timestamp must not fail I/O
            return
        # The OSD stamps its own clock; ours is the best guess for info_json().
        setattr(self, f"{which}_timestamp", (int(time.time()), 0))

    def _maybe_touch_modify(self) -> list[Callable[[], Awaitable[None]]]:
        now = time.monotonic()
        if now - self._last_mtime_update >= TIMESTAMP_UPDATE_INTERVAL:
            self._last_mtime_update = now
            return [lambda: self._touch("modify")]
        return []

    async def read(self, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset``; missing objects and holes read as
        zeros (or, in a clone within the parent overlap, as the parent's data); a
        range past the end is clipped.  Raises InvalidArgumentError (offset past
        the end), or the ioctx's errors."""
        self._check_open()
        length = self._clip(offset, length)
        if length == 0:
            return b""
        extents = layout_to_extents(self.layout, offset, length)
        snapid = None if self.snap_id == cls.CEPH_NOSNAP else self.snap_id
        extra: list[Callable[[], Awaitable[None]]] = []
        now = time.monotonic()
        if not self.read_only and now - self._last_atime_update >= TIMESTAMP_UPDATE_INTERVAL:
            self._last_atime_update = now
            extra.append(lambda: self._touch("access"))

        if len(extents) == 1 and not extra:
            ex = extents[0]
            data = await self._read_object(ex, snapid)
            if len(data) == length:
                return data
            return bytes(data) + bytes(length - len(data))

        buf = bytearray(length)
        view = memoryview(buf)

        def one(ex: ObjectExtent) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                data = memoryview(await self._read_object(ex, snapid))
                pos = 0
                for boff, blen in ex.buffer_extents:
                    chunk = data[pos : pos + blen]
                    if not len(chunk):
                        break  # short read: the rest stays zero
                    view[boff : boff + len(chunk)] = chunk
                    pos += blen

            return run

        await _run_all([one(ex) for ex in extents] + extra, self._limiter)
        return bytes(buf)

    async def _read_object(self, ex: ObjectExtent, snapid: int | None) -> bytes:
        """One object extent (``ObjectReadRequest``): the child object, else (ENOENT
        or object map NONEXISTENT) the parent's data within the overlap, else empty."""
        om = self.object_map
        if om is None or snapid is not None or om.may_exist(ex.objectno):
            oid = data_object_name(self.object_prefix, ex.objectno)
            try:
                return await self.ioctx.read(oid, ex.length, ex.offset, snapid=snapid)
            except ObjectNotFound:
                pass
        if self.parent is None:
            return b""
        return await self._read_parent_object_extent(ex.objectno, ex.offset, ex.length)

    def _parent_extents(self, objectno: int, offset: int, length: int, overlap: int | None) -> list[tuple[int, int]]:
        """Image extents of an object range that still read through to the parent
        (``extent_to_file`` then ``prune_parent_extents``)."""
        if not overlap:
            return []
        return prune_parent_extents(extent_to_file(self.layout, objectno, offset, length), overlap)

    def _head_overlap(self) -> int:
        return self.parent.overlap if self.parent is not None and self.snap_id == cls.CEPH_NOSNAP else 0

    async def _read_parent_object_extent(self, objectno: int, offset: int, length: int) -> bytes:
        overlap = self.parent.overlap if self.parent is not None else 0
        extents = self._parent_extents(objectno, offset, length, overlap)
        if not extents:
            return b""
        return await self.read_from_parent(extents)

    async def read_from_parent(self, image_extents: list[tuple[int, int]]) -> bytes:
        """The parent's bytes for the given child image extents ``[(offset, length)]``,
        concatenated in order, each clipped to the parent overlap and the parent
        size (the clipped part reads as zeros); all zeros without a parent."""
        total = sum(n for _, n in image_extents)
        parent = self.parent_image
        if parent is None or self.parent is None or not total:
            return bytes(total)
        limit = min(self.parent.overlap, parent.size())
        buf = bytearray(total)
        funcs: list[Callable[[], Awaitable[None]]] = []
        pos = 0
        for off, n in image_extents:
            m = max(0, min(n, limit - off))
            if m:
                def one(off: int = off, m: int = m, pos: int = pos) -> Callable[[], Awaitable[None]]:
                    async def run() -> None:
                        data = await parent.read(off, m)
                        buf[pos : pos + len(data)] = data

                    return run

                funcs.append(one())
            pos += n
        if funcs:
            # not self._limiter: callers already hold a slot (nested use would deadlock);
            # the parent image bounds its own reads
            await _run_all(funcs)
        return bytes(buf)

    async def write(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """Write ``data`` at ``offset``; returns the bytes written (clipped at the
        image end like librbd, where python-rbd then raises IncompleteWriteError).

        Takes the exclusive lock first if the image has one.  Splits the range by
        object/stripe and sends the per-object writes concurrently (at most
        ``ioctx.max_concurrency`` at once), each carrying the image's snap context,
        after marking the object EXISTS in the object map; objects of a clone that
        still read through to the parent are copied up first (``rbd.copyup`` and
        the write in one compound op).  Returns after all are acknowledged.
        Raises ReadOnlyImage, InvalidArgumentError, ImageBusy, or the ioctx's errors.
        """
        self._check_writable()
        view = data if isinstance(data, memoryview) else memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        length = self._clip(offset, len(view))
        if length == 0:
            return 0
        extents = layout_to_extents(self.layout, offset, length)
        async with self._write_op():
            snapc = self.snapc.to_tuple()
            funcs: list[Callable[[], Awaitable[None]]] = [self._writer(ex, view, snapc) for ex in extents]
            funcs += self._maybe_touch_modify()
            # Let every started write finish even if one fails: flush() semantics.
            await _run_all(funcs, self._limiter, cancel_on_error=False)
        return length

    def _writer(
        self, ex: ObjectExtent, view: memoryview, snapc: tuple[int, list[int]]
    ) -> Callable[[], Awaitable[None]]:
        if len(ex.buffer_extents) == 1:
            boff, blen = ex.buffer_extents[0]
            base = view.obj
            if boff == 0 and type(base) is bytes and blen == len(base) == len(view):
                payload: bytes | memoryview = base  # all of an immutable buffer: no copy at all
            else:
                payload = view[boff : boff + blen]
        else:
            payload = b"".join(view[b : b + n] for b, n in ex.buffer_extents)
        if self.object_map is None and self.parent is None:
            oid = data_object_name(self.object_prefix, ex.objectno)
            return lambda: self.ioctx.write(oid, payload, ex.offset, snapc=snapc)
        return lambda: self._object_request(ex.objectno, ex.offset, ex.length, _WRITE, snapc, payload)

    async def _object_request(
        self,
        objectno: int,
        offset: int,
        length: int,
        action: str,
        snapc: tuple[int, list[int]],
        payload: bytes | memoryview | None = None,
        *,
        disable_clone_remove: bool = True,
        update_object_map: bool = True,
    ) -> None:
        """One object write/discard as librbd's ``AbstractObjectWriteRequest`` does it:
        object-map pre-update (EXISTS, or PENDING for a removal), the op (guarded by
        assert_exists when a copy-up may be needed), copy-up on ENOENT, post-update
        (NONEXISTENT after a removal).  ``action`` is ``_WRITE`` or a discard
        (``_REMOVE``/``_TRUNCATE``/``_ZERO``: chosen here from the extent for
        discards, see :meth:`_discard_object`)."""
        osz = self.layout.object_size
        full = offset == 0 and length == osz
        parent_extents = self._parent_extents(objectno, 0, osz, self._head_overlap())
        has_parent = bool(parent_extents)
        copyup_enabled = has_parent and not (full and not snapc[1])
        if action != _WRITE:
            if full:
                if disable_clone_remove and has_parent:
                    action = _TRUNCATE if copyup_enabled else _CREATE_TRUNCATE
                else:
                    action = _REMOVE
            elif offset + length == osz:
                action = _TRUNCATE
            else:
                action = _ZERO
        om = self.object_map
        may_exist = om.may_exist(objectno) if om is not None else True
        if not may_exist and action != _WRITE and not has_parent:
            return  # discard of an object that is not there
        ops = self._object_ops(action, offset, length, payload, full)
        oid = data_object_name(self.object_prefix, objectno)
        head_state = OBJECT_PENDING if action == _REMOVE else OBJECT_EXISTS
        om_update = om is not None and update_object_map
        empty_write = action == _WRITE and not length
        if om_update and not may_exist and copyup_enabled:
            await self._copyup(objectno, parent_extents, ops, snapc, head_state, empty_write=empty_write)
        else:
            if om_update:
                if action == _REMOVE:
                    await om.pre_remove([objectno])
                else:
                    await om.pre_write([objectno])
            guarded = ([O.assert_exists()] + ops) if copyup_enabled else ops
            try:
                await self.ioctx.operate(oid, guarded, write=True, snapc=snapc)
            except ObjectNotFound:
                if copyup_enabled:
                    await self._copyup(objectno, parent_extents, ops, snapc, head_state, empty_write=empty_write)
                # else: removing/truncating what is not there is success
        if om_update and action == _REMOVE:
            await om.post_remove([objectno])

    @staticmethod
    def _object_ops(action: str, offset: int, length: int, payload: Any, full: bool) -> list[Any]:
        if action == _WRITE:
            return [O.writefull(payload) if full else O.write(offset, payload)]
        if action == _REMOVE:
            return [O.delete()]
        if action == _CREATE_TRUNCATE:
            return [O.create(False), O.truncate(offset)]
        if action == _TRUNCATE:
            return [O.truncate(offset)]
        return [O.zero(offset, length)]

    async def _copyup(
        self,
        objectno: int,
        parent_extents: list[tuple[int, int]],
        write_ops: list[Any] | None,
        snapc: tuple[int, list[int]],
        head_state: int | None = None,
        *,
        empty_write: bool = False,
    ) -> None:
        """librbd's ``CopyupRequest``: read the parent's data for the object (within
        the overlap), update the object maps (head; with data, every snapshot's map
        as well: the first EXISTS, later ones EXISTS_CLEAN with fast-diff), then
        ``rbd.copyup`` + ``write_ops`` in one op with the image snap context -- or,
        when snapshots exist and the data is not all zeros (deep copy-up), the
        copy-up alone with an empty snap context first so that every snapshot sees
        the parent data.  ``write_ops=None``: copy-on-read (copy-up only).
        ``empty_write``: the pending write is empty (flatten's trigger_copyup): with
        all-zero parent data nothing is needed (``is_copyup_required``)."""
        data = await self.read_from_parent(parent_extents) if parent_extents else b""
        is_zero = data.count(0) == len(data)
        copy_on_read = write_ops is None
        if not copy_on_read and is_zero and empty_write:
            return
        om = self.object_map
        # librbd's CopyupRequest updates the maps even for requests that skip their
        # own object-map update (TrimRequest's copy-up discards)
        if om is not None:
            snap_ids = [] if is_zero else list(reversed(snapc[1]))  # oldest first
            fast_diff = bool(self._features & RBD_FEATURE_FAST_DIFF)
            if copy_on_read or head_state is None:
                head_state = OBJECT_EXISTS_CLEAN if (snap_ids and fast_diff) else OBJECT_EXISTS
            if objectno < om.size() and om.state(objectno) != head_state:
                await om.update(objectno, objectno + 1, head_state)
            for idx, sid in enumerate(snap_ids):
                st = OBJECT_EXISTS_CLEAN if (fast_diff and idx > 0) else OBJECT_EXISTS
                try:
                    await cls.object_map_update(self.ioctx, object_map_name(self.image_id, sid),
                                                objectno, objectno + 1, st)
                except ObjectNotFound:
                    pass
        cu_data = b"" if is_zero else data
        deep = bool(snapc[1]) and not is_zero
        oid = data_object_name(self.object_prefix, objectno)
        if copy_on_read or deep:
            await _ignore_enoent(self.ioctx.operate(oid, [cls.copyup_op(cu_data)], write=True, snapc=(0, [])))
        if not copy_on_read:
            ops = ([] if deep else [cls.copyup_op(cu_data)]) + list(write_ops or [])
            if ops:
                await _ignore_enoent(self.ioctx.operate(oid, ops, write=True, snapc=snapc))

    async def copyup_object(self, objectno: int, deep: bool = True) -> bool:
        """Copy object ``objectno`` up from the parent unless the child has it (used
        by flatten: librbd's ``C_FlattenObject`` + ``io::util::trigger_copyup``, an
        empty write that copies up: objects whose parent data is all zeros are left
        out, the object maps follow the write rules).  ``deep`` is accepted for the
        flatten API (snapshots are handled from the snap context, as librbd does).
        Returns False when nothing was to be done (no parent data for the object,
        or the object map says the child object exists).  Takes the exclusive lock
        if needed.  Raises ReadOnlyImage or the ioctx's errors."""
        self._check_writable()
        if self._lock_required() and not (self._lock_ready and self.exclusive_lock.is_owner()):
            await self.acquire_lock()
        if not self._parent_extents(objectno, 0, self.layout.object_size, self._head_overlap()):
            return False
        om = self.object_map
        if om is not None and not om.may_not_exist(objectno):
            return False  # C_FlattenObject: the child object is already there
        await self._object_request(objectno, 0, 0, _WRITE, self.snapc.to_tuple(), b"")
        return True

    async def discard(self, offset: int, length: int, granularity: int | None = None) -> int:
        """librbd's discard: whole objects are removed (in a clone: truncated to
        zero so the parent stays hidden), object tails truncated, middles zeroed,
        each after aligning to ``granularity`` bytes (default librbd's 64 KiB;
        0: exact, as write_zeroes); object map PENDING -> NONEXISTENT for removals;
        objects the object map says do not exist are skipped.  Returns the bytes
        covered (clipped at the end).  Raises ReadOnlyImage, InvalidArgumentError."""
        self._check_writable()
        length = self._clip(offset, length)
        if length == 0:
            return 0
        g = RBD_DISCARD_GRANULARITY_BYTES if granularity is None else granularity
        async with self._write_op():
            snapc = self.snapc.to_tuple()
            funcs: list[Callable[[], Awaitable[None]]] = []
            osz = self.layout.object_size
            for ex in layout_to_extents(self.layout, offset, length):
                off, n = prune_discard_extent(ex.offset, ex.length, osz, g)
                if n:
                    funcs.append(self._discard_func(ex.objectno, off, n, snapc))
            if funcs:
                funcs += self._maybe_touch_modify()
                await _run_all(funcs, self._limiter, cancel_on_error=False)
        return length

    def _discard_func(self, objectno: int, off: int, n: int, snapc: tuple[int, list[int]],
                      **kw: Any) -> Callable[[], Awaitable[None]]:
        return lambda: self._object_request(objectno, off, n, _ZERO, snapc, **kw)

    async def write_zeroes(self, offset: int, length: int) -> int:
        """Make ``[offset, offset+length)`` read as zeros: a discard with no
        granularity alignment (whole objects removed, partial ones truncated or
        zeroed), as librbd's write_zeroes without thick provisioning."""
        return await self.discard(offset, length, granularity=0)

    async def flush(self) -> None:
        """Return once every write started before this call has been acknowledged.

        ``write`` itself waits for the OSD acks, so this only matters for writes
        running concurrently in other tasks.
        """
        pending = list(self._inflight.values())
        for ev in pending:
            await ev.wait()

    # -- resize --------------------------------------------------------------------
    async def _set_size(self, size: int) -> None:
        """``rbd.set_size`` on the header, after ``lock.assert_locked`` when we own
        the exclusive lock (librbd ResizeRequest::send_update_header)."""
        cookie = self.lock_cookie()
        ops = ([cls.assert_locked_op(cookie)] if cookie is not None else []) + [cls.set_size_op(size)]
        await self.ioctx.operate(self.header_oid, ops, write=True)

    async def resize(self, size: int, allow_shrink: bool = True,
                     on_progress: Callable[[int, int], Any] | None = None) -> None:
        """Change the image size to ``size`` bytes (librbd operation/ResizeRequest.cc).

        Grow: object map resized (new entries NONEXISTENT), then ``set_size``.
        Shrink (``allow_shrink``): TrimRequest -- objects wholly past the end are
        removed (object map PENDING -> NONEXISTENT; in a clone with snapshots the
        ones within the parent overlap are copied up first), the boundary object
        truncated/zeroed, then ``set_size`` (the OSD clips the parent overlap) and
        the object map shrunk.  Then HEADER_UPDATE to the other watchers.
        ``on_progress(done, total)`` counts objects.  Raises ReadOnlyImage,
        InvalidArgumentError (negative size, or shrinking without allow_shrink),
        ImageBusy, or the ioctx's errors."""
        if not 0 <= size < 1 << 64:
            raise InvalidArgumentError(f"invalid image size {size}")
        if self._features & RBD_FEATURE_OBJECT_MAP and \
                get_num_objects(self.layout, size) > MAX_OBJECT_MAP_OBJECT_COUNT:
            # librbd Operations::resize (ObjectMap::is_compatible): refused before any allocation
            raise InvalidArgumentError("new size not compatible with object map")
        async with self.maintenance_op():
            old = self._size
            if size < old and not allow_shrink:
                raise InvalidArgumentError(
                    f"shrinking image {self.name!r} from {old} to {size} bytes is not allowed")
            om = self.object_map
            new_count = get_num_objects(self.layout, size)
            if size < old:
                await self._trim(old, size, on_progress)
                await self._set_size(size)
                if om is not None:
                    await om.resize(new_count, OBJECT_NONEXISTENT)
            elif size > old:
                if om is not None:
                    await om.resize(new_count, OBJECT_NONEXISTENT)
                await self._set_size(size)
            if on_progress is not None and size >= old:
                on_progress(1, 1)
            self._size = size
            await self.refresh()
        if size != old:
            await self.notify_header_update()

    async def _trim(self, old: int, new: int, on_progress: Callable[[int, int], Any] | None) -> None:
        """librbd's TrimRequest from ``old`` down to ``new`` bytes."""
        layout = self.layout
        period = layout.stripe_count * layout.object_size
        new_periods = -(-new // period)
        delete_off = min(new_periods * period, old)
        delete_start = delete_start_min = new_periods * layout.stripe_count
        num_objects = get_num_objects(layout, old)
        snapc = self.snapc.to_tuple()
        om = self.object_map
        total = max(0, num_objects - delete_start)
        done = 0

        def tick() -> None:
            nonlocal done
            done += 1
            if on_progress is not None:
                on_progress(done, total)

        if delete_start < num_objects:
            if om is not None:
                await om.update(delete_start_min, num_objects, OBJECT_PENDING, OBJECT_EXISTS)
            overlap = self._head_overlap()
            copyup_end = get_num_objects(layout, overlap) if overlap else 0
            if snapc[1] and copyup_end > delete_start:
                # copy-up (then remove) what the snapshots still need from the parent
                def cu(n: int) -> Callable[[], Awaitable[None]]:
                    async def run() -> None:
                        await self._object_request(n, 0, layout.object_size, _ZERO, snapc,
                                                   disable_clone_remove=False, update_object_map=False)
                        tick()

                    return run

                await _run_all([cu(n) for n in range(delete_start, copyup_end)], self._limiter)
                delete_start = copyup_end

            def rm(n: int) -> Callable[[], Awaitable[None]]:
                async def run() -> None:
                    if om is None or om.may_exist(n):
                        await _ignore_enoent(self.ioctx.remove(data_object_name(self.object_prefix, n), snapc=snapc))
                    tick()

                return run

            await _run_all([rm(n) for n in range(delete_start, num_objects)], self._limiter)
            if om is not None:
                await om.update(delete_start_min, num_objects, OBJECT_NONEXISTENT, OBJECT_PENDING)
        if delete_off > new:
            funcs = []
            for ex in layout_to_extents(layout, new, delete_off - new):
                off, n = ex.offset, ex.length
                if off == 0:
                    n = layout.object_size  # a full object delete on the boundary
                funcs.append(self._discard_func(ex.objectno, off, n, snapc, disable_clone_remove=False))
            await _run_all(funcs, self._limiter)

    # -- features ------------------------------------------------------------------
    async def update_features(self, features: int, enabled: bool) -> None:
        """``rbd feature enable|disable`` (librbd internal ``update_features`` +
        operation/EnableFeaturesRequest.cc / DisableFeaturesRequest.cc).

        Mutable: exclusive-lock, object-map, fast-diff (object-map and fast-diff go
        together); deep-flatten can only be disabled.  Enabling object-map creates
        the head's and every snapshot's map (all NONEXISTENT) and flags them
        invalid (``rbd object-map rebuild`` / :meth:`rebuild_object_map` fixes them);
        disabling removes the maps and clears the flags; exclusive-lock cannot be
        disabled while object-map is on, nor object-map enabled without it.
        Raises InvalidArgumentError (immutable / already set / dependency),
        FeatureNotSupported (journaling), ReadOnlyImage."""
        features = int(features)
        self._check_writable()
        if self.snap_id != cls.CEPH_NOSNAP:
            raise ReadOnlyImage("cannot update features of a snapshot", errno=errno.EROFS)
        mutable = RBD_FEATURES_MUTABLE | (0 if enabled else RBD_FEATURES_DISABLE_ONLY)
        if features & ~mutable or not features:
            raise InvalidArgumentError(
                "cannot update immutable features" if features else "update requires at least one feature")
        if features & (RBD_FEATURE_JOURNALING | RBD_FEATURE_NON_PRIMARY):
            raise FeatureNotSupported(
                f"pyceph cannot {'enable' if enabled else 'disable'} {describe_features(features & (RBD_FEATURE_JOURNALING | RBD_FEATURE_NON_PRIMARY))}")
        cur = self._features
        has_om, has_fd = bool(cur & RBD_FEATURE_OBJECT_MAP), bool(cur & RBD_FEATURE_FAST_DIFF)
        set_om, set_fd = bool(features & RBD_FEATURE_OBJECT_MAP), bool(features & RBD_FEATURE_FAST_DIFF)
        if (enabled and ((set_om and not has_fd) or (set_fd and not has_om))) or \
                (not enabled and set_om and has_fd):
            features |= RBD_FEATURE_OBJECT_MAP | RBD_FEATURE_FAST_DIFF
        if enabled and features & cur:
            raise InvalidArgumentError("one or more requested features are already enabled")
        if not enabled and features & ~cur:
            raise InvalidArgumentError("one or more requested features are already disabled")
        if enabled:
            await self._enable_features(features)
        else:
            await self._disable_features(features)

    async def _all_snap_ids_and_sizes(self) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for sid in self.snapc.snaps:
            try:
                size, _ = await cls.get_size(self.ioctx, self.header_oid, sid)
            except ObjectNotFound:
                continue
            out.append((sid, size))
        return out

    async def _enable_features(self, features: int) -> None:
        cur = self._features
        new = cur | features
        mask = features
        flags = 0
        if features & RBD_FEATURE_OBJECT_MAP:
            if not new & RBD_FEATURE_EXCLUSIVE_LOCK:
                raise InvalidArgumentError(
                    "cannot enable object-map. exclusive-lock must be enabled before enabling object-map.")
            flags |= RBD_FLAG_OBJECT_MAP_INVALID
            mask |= RBD_FEATURE_EXCLUSIVE_LOCK | RBD_FEATURE_FAST_DIFF
        if features & RBD_FEATURE_FAST_DIFF:
            flags |= RBD_FLAG_FAST_DIFF_INVALID
            mask |= RBD_FEATURE_EXCLUSIVE_LOCK | RBD_FEATURE_OBJECT_MAP
        io, hdr = self.ioctx, self.header_oid
        lock_ctx = self.maintenance_op() if self.exclusive_lock is not None else self.write_barrier()
        async with lock_ctx:
            if flags:
                snaps = await self._all_snap_ids_and_sizes()
                for sid, _ in snaps:
                    await cls.set_flags(io, hdr, flags, flags, sid)
                await cls.set_flags(io, hdr, flags, flags, cls.CEPH_NOSNAP)
            await cls.set_features(io, hdr, new, mask)
            if features & RBD_FEATURE_OBJECT_MAP and not cur & RBD_FEATURE_OBJECT_MAP:
                for sid, size in await self._all_snap_ids_and_sizes():
                    await cls.object_map_resize(io, object_map_name(self.image_id, sid),
                                                get_num_objects(self.layout, size), OBJECT_NONEXISTENT)
                await cls.object_map_resize(io, object_map_name(self.image_id), self.num_objects(),
                                            OBJECT_NONEXISTENT)
            await self.refresh()
        await self.notify_header_update()
        if features & RBD_FEATURE_EXCLUSIVE_LOCK and self.exclusive_lock is None and not self.read_only:
            await self._start_exclusive_lock()
        elif features & RBD_FEATURE_OBJECT_MAP and self._lock_ready:
            await self._drop_object_map()
            om = ObjectMap(self.ioctx, self.image_id, cls.CEPH_NOSNAP, self.lock_cookie,
                           fast_diff=bool(self._features & RBD_FEATURE_FAST_DIFF), flags=self._flags,
                           header_oid=self.header_oid)
            await om.load(self.num_objects())
            self.object_map = om

    async def _disable_features(self, features: int) -> None:
        cur = self._features
        new = cur & ~features
        mask = features
        flags = 0
        if features & RBD_FEATURE_EXCLUSIVE_LOCK:
            if new & (RBD_FEATURE_OBJECT_MAP | RBD_FEATURE_JOURNALING):
                raise InvalidArgumentError(
                    "cannot disable exclusive-lock. object-map or journaling must be disabled before "
                    "disabling exclusive-lock.")
            mask |= RBD_FEATURE_OBJECT_MAP | RBD_FEATURE_JOURNALING
        if features & RBD_FEATURE_FAST_DIFF:
            flags |= RBD_FLAG_FAST_DIFF_INVALID
        if features & RBD_FEATURE_OBJECT_MAP:
            if new & RBD_FEATURE_FAST_DIFF:
                raise InvalidArgumentError(
                    "cannot disable object-map. fast-diff must be disabled before disabling object-map.")
            flags |= RBD_FLAG_OBJECT_MAP_INVALID
        io, hdr = self.ioctx, self.header_oid
        lock_ctx = self.maintenance_op() if self.exclusive_lock is not None else self.write_barrier()
        async with lock_ctx:
            if features & RBD_FEATURE_OBJECT_MAP:
                for sid in list(self.snapc.snaps):
                    await _ignore_enoent(io.remove(object_map_name(self.image_id, sid)))
                await self._drop_object_map()
                await _ignore_enoent(io.remove(object_map_name(self.image_id)))
            await cls.set_features(io, hdr, new, mask)
            if flags:
                for sid in list(self.snapc.snaps):
                    await _ignore_enoent(cls.set_flags(io, hdr, 0, flags, sid))
                await cls.set_flags(io, hdr, 0, flags, cls.CEPH_NOSNAP)
            await self.refresh()
        await self.notify_header_update()
        if features & RBD_FEATURE_EXCLUSIVE_LOCK and self.exclusive_lock is not None:
            await self._stop_exclusive_lock()

    async def rebuild_object_map(self, on_progress: Callable[[int, int], Any] | None = None) -> None:
        """``rbd object-map rebuild`` of the open image/snapshot (:meth:`ObjectMap.rebuild`)."""
        if not self._features & RBD_FEATURE_OBJECT_MAP:
            raise InvalidArgumentError(f"image {self.name!r} does not have object-map enabled")
        if self.snap_id == cls.CEPH_NOSNAP:
            await self.acquire_lock()
        om = self.object_map
        if om is None or self.snap_id != cls.CEPH_NOSNAP:
            om = ObjectMap(self.ioctx, self.image_id, self.snap_id, self.lock_cookie,
                           fast_diff=bool(self._features & RBD_FEATURE_FAST_DIFF), flags=self._flags,
                           header_oid=self.header_oid)
            await om.load(self.num_objects())
        snap_ids = [s for s in self.snapc.snaps if self.snap_id == cls.CEPH_NOSNAP or s <= self.snap_id]
        await om.rebuild(self.num_objects(), self.object_prefix, snap_ids, on_progress=on_progress)
        await self.refresh()

    # -- snapshots / clones (pyceph.rbd.snapshot, pyceph.rbd.clone) -----------------
    async def create_snap(self, name: str) -> None:
        await snapshot.create(self, name)

    async def remove_snap(self, name: str) -> None:
        await snapshot.remove(self, name)

    async def rename_snap(self, src: str, dst: str) -> None:
        await snapshot.rename(self, src, dst)

    async def rollback_to_snap(self, name: str, on_progress: Callable[[int, int], Any] | None = None) -> None:
        await snapshot.rollback(self, name, on_progress=on_progress)

    async def protect_snap(self, name: str) -> None:
        await snapshot.protect(self, name)

    async def unprotect_snap(self, name: str) -> None:
        await snapshot.unprotect(self, name)

    async def is_protected_snap(self, name: str) -> bool:
        return bool(await snapshot.is_protected(self, name))

    async def list_snaps(self) -> list[dict[str, Any]]:
        return list(await snapshot.list_snaps(self))

    async def set_snap(self, name: str | None) -> None:
        """Switch the open image to snapshot ``name`` (read-only from then on) or back
        to the head with None (python-rbd ``Image.set_snap``).  Raises ImageNotFound."""
        self._check_open()
        await self.flush()
        if name is None:
            self.snap_id, self.snap_name = cls.CEPH_NOSNAP, None
            self.read_only = self._open_read_only
            await self._load(None, cls.CEPH_NOSNAP, refresh=True)
        else:
            snap_id = await self._find_snapshot(name)
            self.snap_id, self.snap_name = snap_id, name
            self.read_only = True
            await self._load(None, snap_id, refresh=True)
        await self._open_parent()

    async def set_snap_by_id(self, snap_id: int | None) -> None:
        if snap_id is None or snap_id == cls.CEPH_NOSNAP:
            await self.set_snap(None)
            return
        self._check_open()
        self.snap_id, self.snap_name = snap_id, None
        self.read_only = True
        await self._load(None, snap_id, refresh=True)
        await self._open_parent()

    async def flatten(self, on_progress: Callable[[int, int], Any] | None = None) -> None:
        from . import clone  # lazy: clone imports this module

        await clone.flatten(self, on_progress=on_progress)

    async def list_children(self) -> list[tuple[str, str]]:
        from . import clone  # lazy: clone imports this module

        return list(await clone.list_children(self))

    async def list_children2(self) -> list[dict[str, Any]]:
        from . import clone  # lazy: clone imports this module

        return list(await clone.list_children2(self))

    def get_parent_image_spec(self) -> dict[str, Any]:
        """python-rbd ``get_parent_image_spec``: pool_name, pool_namespace, image_name,
        image_id, snap_namespace_type, snap_name, snap_id.  Raises ImageNotFound
        when the image has no parent."""
        if self.parent is None:
            raise ImageNotFound(f"image {self.name!r} has no parent", errno=errno.ENOENT)
        p = self.parent_image
        return {
            "pool_name": getattr(p.ioctx, "pool_name", "") if p is not None else "",
            "pool_namespace": self.parent.spec.pool_namespace,
            "image_name": p.name if p is not None else "",
            "image_id": self.parent.spec.image_id,
            "snap_namespace_type": 0,
            "snap_name": (p.snap_name or "") if p is not None else "",
            "snap_id": self.parent.spec.snap_id,
        }

    def parent_info(self) -> tuple[str, str, str]:
        """python-rbd ``parent_info()``: ``(pool name, image name, snapshot name)``."""
        spec = self.get_parent_image_spec()
        return spec["pool_name"], spec["image_name"], spec["snap_name"]

    def parent_id(self) -> str:
        return self.get_parent_image_spec()["image_id"]

    def overlap(self) -> int:
        """Parent overlap in bytes (0 without a parent)."""
        return self.parent.overlap if self.parent is not None else 0

    # -- managed lock (python-rbd lock_acquire/lock_release/lock_get_owners) ---------
    async def lock_acquire(self, lock_mode: int = 0) -> None:
        """python-rbd ``lock_acquire(RBD_LOCK_MODE_EXCLUSIVE)`` (mode 0): take the
        exclusive lock now.  Raises InvalidArgumentError without the feature,
        FunctionNotSupported for the shared mode (as librbd)."""
        if lock_mode != RBD_LOCK_MODE_EXCLUSIVE:
            raise FunctionNotSupported("shared lock mode is not supported", errno=errno.EOPNOTSUPP)
        if self.exclusive_lock is None:
            raise InvalidArgumentError(f"image {self.name!r} has no exclusive-lock feature")
        await self.acquire_lock()

    async def lock_release(self) -> None:
        """python-rbd ``lock_release``: give the exclusive lock up (taken again by the
        next write).  Raises InvalidArgumentError without the feature."""
        if self.exclusive_lock is None:
            raise InvalidArgumentError(f"image {self.name!r} has no exclusive-lock feature")
        await self.exclusive_lock.release()

    async def lock_get_owners(self) -> list[dict[str, Any]]:
        """python-rbd ``lock_get_owners``: ``[{"mode": 0 (exclusive), "owner": "client.N"}]``."""
        try:
            info = await cls.lock_get_info(self.ioctx, self.header_oid, RBD_LOCK_NAME)
        except ObjectNotFound:
            return []
        return [{"mode": RBD_LOCK_MODE_EXCLUSIVE, "owner": str(k.locker)} for k in info.lockers]

    # -- closing -------------------------------------------------------------------
    async def _stop_exclusive_lock(self) -> None:
        lock, watcher = self.exclusive_lock, self.watcher
        if lock is not None:
            try:
                await lock.close()
            except Exception:  # noqa: BLE001 - lost watch/blocklisted: nothing left to release
                pass
            finally:
                self.exclusive_lock = None
                self._lock_ready = False
                await self._drop_object_map()
        if watcher is not None:
            self.watcher = None
            try:
                await watcher.stop()
            except Exception:  # noqa: BLE001 - the OSD times the watch out anyway
                pass

    async def _teardown(self) -> None:
        try:
            await self._stop_exclusive_lock()
        except Exception:  # noqa: BLE001
            pass
        parent, self.parent_image = self.parent_image, None
        if parent is not None:
            try:
                await parent.close()
            except Exception:  # noqa: BLE001
                pass

    async def close(self) -> None:
        """Wait for in-flight writes, release the exclusive lock, stop the header
        watch, close the parent, then mark the image closed (idempotent)."""
        if self._closed:
            return
        await self.flush()
        task = self._refresh_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            await self._stop_exclusive_lock()
        finally:
            self._closed = True
            parent, self.parent_image = self.parent_image, None
            if parent is not None:
                await parent.close()

    async def __aenter__(self) -> "AsyncImage":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
