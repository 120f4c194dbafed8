"""Format 2 RBD images over an async ioctx: create, list, remove, open, read, write.

On-disk layout (``src/include/rbd_types.h``, ``drivers/block/rbd_types.h``):

- ``rbd_directory``: omap name <-> id of every image in the pool/namespace;
- ``rbd_id.<name>``: the image id, written by ``rbd.set_id``;
- ``rbd_header.<id>``: image metadata, read and written only through ``cls_rbd``;
- ``rbd_data.<id>.%016x``: data objects, laid out by :mod:`pyceph.rbd.striping`.

The steps mirror librbd's ``src/librbd/image/CreateRequest.cc``,
``src/librbd/image/RemoveRequest.cc`` and ``src/librbd/image/RefreshRequest.cc``,
and the kernel's ``drivers/block/rbd.c`` for the feature policy.  The ioctx is any
object with the AsyncIoctx coroutine methods (``read``, ``write``, ``remove``,
``create``, ``execute`` ...); concurrency uses asyncio (tasks bounded by a semaphore).
"""

from __future__ import annotations

import errno
import secrets
import time
from typing import Any, Awaitable, Callable, Iterable

import asyncio

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
from . import cls_client as cls
from .features import (
    PYCEPH_FEATURES_CREATE,
    PYCEPH_FEATURES_DEFAULT,
    PYCEPH_FEATURES_READ,
    PYCEPH_FEATURES_WRITE,
    RBD_FEATURE_DATA_POOL,
    RBD_FEATURE_EXCLUSIVE_LOCK,
    RBD_FEATURE_FAST_DIFF,
    RBD_FEATURE_JOURNALING,
    RBD_FEATURE_LAYERING,
    RBD_FEATURE_MIGRATING,
    RBD_FEATURE_OBJECT_MAP,
    RBD_FEATURE_OPERATIONS,
    RBD_FEATURE_STRIPINGV2,
    RBD_FEATURES_ALL,
    describe_features,
    feature_names,
    flag_names,
    op_feature_names,
)
from .striping import Layout, ObjectExtent, data_object_name, get_num_objects, layout_to_extents

RBD_DIRECTORY = "rbd_directory"
RBD_ID_PREFIX = "rbd_id."
RBD_HEADER_PREFIX = "rbd_header."
RBD_DATA_PREFIX = "rbd_data."
RBD_OBJECT_MAP_PREFIX = "rbd_object_map."
RBD_LOCK_NAME = "rbd_lock"

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
        ``features``: feature bits (default layering only); pyceph creates images
        with features within layering + striping.  ``stripe_unit`` (bytes) and
        ``stripe_count`` must be given together; a non-default pair sets
        STRIPINGV2 as librbd does.  Follows ``librbd/image/CreateRequest.cc``:
        ``rbd_directory`` entry, ``rbd_id.NAME`` (create + ``rbd.set_id``),
        ``rbd_header.ID`` (create + ``rbd.create``), ``rbd.set_stripe_unit_count``;
        a failed step removes what the earlier steps made.

        Raises ImageExists, ArgumentOutOfRange (bad order, errno EDOM),
        InvalidArgumentError (bad size/name/stripe params or feature combination),
        FeatureNotSupported (features pyceph cannot maintain), or the ioctx's errors.
        """
        if not name:
            raise InvalidArgumentError("image name must not be empty")
        if size < 0:
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
        _validate_create_features(feats)
        if not RBD_MIN_ORDER <= order <= RBD_MAX_ORDER:
            raise ArgumentOutOfRange(f"order must be in the range [{RBD_MIN_ORDER}, {RBD_MAX_ORDER}], got {order}")
        if stripe_unit < 0 or stripe_count < 0:
            raise InvalidArgumentError("stripe unit and count must be positive")
        if bool(stripe_unit) != bool(stripe_count):
            raise InvalidArgumentError("must specify both (or neither) of stripe-unit and stripe-count")
        if stripe_unit and ((1 << order) % stripe_unit or stripe_unit > (1 << order)):
            raise InvalidArgumentError("stripe unit is not a factor of the object size")

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

    async def remove(self, ioctx: Any, name: str) -> None:
        """Remove image ``name``: data objects, header, id object, directory entry.

        Follows ``librbd/image/RemoveRequest.cc`` (Pacific's ``rbd rm`` first moves
        the image to the trash and then runs the same removal; the end state is the
        same).  Raises ImageNotFound, ImageHasSnapshots (ENOTEMPTY), ImageBusy
        (another client holds the exclusive lock), FeatureNotSupported (journaling,
        data pool or migration need support pyceph lacks), or the ioctx's errors.
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
            if snapc.snaps:
                raise ImageHasSnapshots(
                    f"image {name!r} has {len(snapc.snaps)} snapshot(s); remove them first",
                    errno=errno.ENOTEMPTY,
                )
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
                    raise ImageBusy(f"image {name!r} is locked by {holders}", errno=errno.EBUSY)
            # TODO(later issue): refuse with ImageBusy while the header has watchers
            # (librbd's "image still has watchers"); needs list_watchers on the ioctx.
            size, order = await cls.get_size(ioctx, header)
            su, sc = 0, 0
            if features & RBD_FEATURE_STRIPINGV2:
                su, sc = await cls.get_stripe_unit_count(ioctx, header)
            prefix = await cls.get_object_prefix(ioctx, header)
            layout = Layout.from_order(order, su, sc)
            snapc_t = snapc.to_tuple()
            count = get_num_objects(layout, size)

            def rm(objectno: int) -> Callable[[], Awaitable[None]]:
                return lambda: _ignore_enoent(ioctx.remove(data_object_name(prefix, objectno), snapc=snapc_t))

            # librbd's TrimRequest: remove every object the size could cover.
            await _run_all((rm(i) for i in range(count)), limiter)
            if features & RBD_FEATURE_OBJECT_MAP:
                await _ignore_enoent(ioctx.remove(RBD_OBJECT_MAP_PREFIX + image_id))
            await _ignore_enoent(ioctx.remove(header))
        await _ignore_enoent(ioctx.remove(id_obj))
        await _ignore_enoent(cls.dir_remove_image(ioctx, RBD_DIRECTORY, name, image_id))


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


class AsyncImage:
    """An open format 2 image (python-rbd's ``Image``, async).

    Open with ``await AsyncImage.open(ioctx, name, read_only=False, snapshot=None)``.
    Sizes and offsets are bytes.  ``write`` returns only after every object write
    it issued was acknowledged by the OSDs (there is no client-side cache), so
    ``flush`` only waits for writes still running in other tasks.
    """

    def __init__(self, ioctx: Any, name: str, image_id: str, read_only: bool) -> None:
        self.ioctx = ioctx
        self.name = name
        self.image_id = image_id
        self.header_oid = header_name(image_id)
        self.read_only = read_only
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
        self._limiter = _limiter_for(ioctx)
        self._closed = False
        self._write_seq = 0
        self._inflight: dict[int, asyncio.Event] = {}
        self._last_mtime_update = float("-inf")
        self._last_atime_update = float("-inf")

    # -- opening -------------------------------------------------------------
    @classmethod
    async def open(cls_, ioctx: Any, name: str, read_only: bool = False, snapshot: str | None = None) -> "AsyncImage":
        """Open image ``name``; a ``snapshot`` name implies read-only.

        Reads the id (``rbd.get_id`` on ``rbd_id.NAME``) and the header through cls
        calls, then applies :func:`check_feature_policy`.  Raises ImageNotFound (no
        image, or no such snapshot), FeatureNotSupported, DecodeError, or the
        ioctx's errors.
        """
        read_only = read_only or snapshot is not None
        try:
            image_id = await cls.get_id(ioctx, id_obj_name(name))
        except ObjectNotFound:
            raise ImageNotFound(f"image {name!r} not found", errno=errno.ENOENT) from None
        img = cls_(ioctx, name, image_id, read_only)
        try:
            await img._load(snapshot)
        except ObjectNotFound as ex:
            if isinstance(ex, ImageNotFound):
                raise
            raise ImageNotFound(f"image {name!r} header not found: {ex}", errno=errno.ENOENT) from None
        return img

    async def _load(self, snapshot: str | None) -> None:
        io, hdr = self.ioctx, self.header_oid
        out: dict[str, Any] = {}

        def put(key: str, coro_fn: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                out[key] = await coro_fn()

            return run

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
        if snapshot is None:
            phase1.append(put("size", lambda: cls.get_size(io, hdr, cls.CEPH_NOSNAP)))
            phase1.append(put("flags", lambda: cls.get_flags(io, hdr, cls.CEPH_NOSNAP)))
        await _run_all(phase1)
        self._features, self._incompatible = out["features"]
        check_feature_policy(self._features, self._incompatible, self.read_only)
        self.object_prefix = out["prefix"]
        self.snapc = out["snapc"]
        self.create_timestamp, self.access_timestamp = out["ctime"], out["atime"]
        self.modify_timestamp = out["mtime"]
        self._snap_limit = out["snap_limit"]

        if snapshot is not None:
            self.snap_id = await self._find_snapshot(snapshot)
            self.snap_name = snapshot

        snap = self.snap_id
        phase2: list[Callable[[], Awaitable[None]]] = []
        if snapshot is not None:
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
        if parent is not None:
            spec, overlap = parent
            if spec.exists() and overlap:
                # Unwritten objects of a clone must be read from the parent; returning
                # zeros there would be silent corruption.
                raise FeatureNotSupported(
                    f"image {self.name!r} is a clone (parent pool {spec.pool_id} image {spec.image_id} "
                    f"snap {spec.snap_id}); reading through a parent is not supported yet"
                )

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

    def stat(self) -> dict[str, Any]:
        """python-rbd's ``Image.stat()``: size, obj_size (bytes), num_objs, order,
        block_name_prefix, parent_pool (-1: none), parent_name ("")."""
        return {
            "size": self._size,
            "obj_size": self.layout.object_size,
            "num_objs": self.num_objects(),
            "order": self.order,
            "block_name_prefix": self.object_prefix,
            "parent_pool": -1,
            "parent_name": "",
        }

    def info_json(self, name: str | None = None) -> dict[str, Any]:
        """The object ``rbd info --format json`` prints (src/tools/rbd/action/Info.cc,
        Pacific), same keys, order and value formats; timestamps use ``ctime()`` in
        local time and are omitted when zero."""
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
        if self._features & RBD_FEATURE_STRIPINGV2:
            info["stripe_unit"] = self.layout.stripe_unit
            info["stripe_count"] = self.layout.stripe_count
        return info

    # -- I/O -------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgumentError(f"image {self.name!r} is closed")

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

    async def read(self, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset``; missing objects and holes read as
        zeros; a range past the end is clipped.  Raises InvalidArgumentError (offset
        past the end), or the ioctx's errors."""
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
        oid = data_object_name(self.object_prefix, ex.objectno)
        try:
            return await self.ioctx.read(oid, ex.length, ex.offset, snapid=snapid)
        except ObjectNotFound:
            return b""

    async def write(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """Write ``data`` at ``offset``; returns the bytes written (clipped at the
        image end like librbd, where python-rbd then raises IncompleteWriteError).

        Splits the range by object/stripe and sends the per-object writes
        concurrently (at most ``ioctx.max_concurrency`` at once), each carrying the
        image's snap context; buffers are passed as memoryview slices (copied only
        where striping makes one object's piece non-contiguous).  Returns after all
        are acknowledged.  Raises ReadOnlyImage, InvalidArgumentError, or the
        ioctx's errors.
        """
        self._check_open()
        if self.read_only:
            raise ReadOnlyImage(f"image {self.name!r} is open read-only", errno=errno.EROFS)
        view = data if isinstance(data, memoryview) else memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        length = self._clip(offset, len(view))
        if length == 0:
            return 0
        extents = layout_to_extents(self.layout, offset, length)
        snapc = self.snapc.to_tuple()

        funcs: list[Callable[[], Awaitable[None]]] = [self._writer(ex, view, snapc) for ex in extents]
        now = time.monotonic()
        if now - self._last_mtime_update >= TIMESTAMP_UPDATE_INTERVAL:
            self._last_mtime_update = now
            funcs.append(lambda: self._touch("modify"))

        seq = self._write_seq
        self._write_seq += 1
        done = asyncio.Event()
        self._inflight[seq] = done
        try:
            # Let every started write finish even if one fails: flush() semantics.
            await _run_all(funcs, self._limiter, cancel_on_error=False)
        finally:
            del self._inflight[seq]
            done.set()
        return length

    def _writer(
        self, ex: ObjectExtent, view: memoryview, snapc: tuple[int, list[int]]
    ) -> Callable[[], Awaitable[None]]:
        oid = data_object_name(self.object_prefix, ex.objectno)
        if len(ex.buffer_extents) == 1:
            boff, blen = ex.buffer_extents[0]
            base = view.obj
            if boff == 0 and type(base) is bytes and blen == len(base) == len(view):
                payload: bytes | memoryview = base  # all of an immutable buffer: no copy at all
            else:
                payload = view[boff : boff + blen]
        else:
            payload = b"".join(view[b : b + n] for b, n in ex.buffer_extents)
        return lambda: self.ioctx.write(oid, payload, ex.offset, snapc=snapc)

    async def flush(self) -> None:
        """Return once every write started before this call has been acknowledged.

        ``write`` itself waits for the OSD acks, so this only matters for writes
        running concurrently in other tasks.
        """
        pending = list(self._inflight.values())
        for ev in pending:
            await ev.wait()

    async def close(self) -> None:
        """Wait for in-flight writes, then mark the image closed (idempotent)."""
        if self._closed:
            return
        await self.flush()
        self._closed = True

    async def __aenter__(self) -> "AsyncImage":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
