"""python-rbd-compatible synchronous API: :class:`RBD` and :class:`Image`.

Code written against Ceph's ``rbd`` Python module::

    import rados, rbd
    with rados.Rados(conffile=...) as cluster:
        with cluster.open_ioctx("rbd") as ioctx:
            rbd.RBD().create(ioctx, "img", 4 << 20)
            with rbd.Image(ioctx, "img") as image:
                image.write(b"foo", 0)

runs unchanged with ``pyceph.rados`` / ``pyceph.rbd``.  Both classes take a
:class:`pyceph.rados.Ioctx` and run the async core (:class:`AsyncRBD`,
:class:`AsyncImage`) on that handle's private event loop
(``ioctx.rados.run(coro)``, ``ioctx.core`` the :class:`AsyncIoctx`).

Errors are the typed ones of :mod:`pyceph.errors` with python-rbd's names
(``ImageNotFound``, ``ImageExists``, ``ReadOnlyImage``, ``FeatureNotSupported``,
...); python-rbd's ``InvalidArgument`` is :class:`pyceph.errors.InvalidArgumentError`.
"""

from __future__ import annotations

import errno
from typing import Any, Callable, Iterator

from ..errors import FeatureNotSupported, FunctionNotSupported, InvalidArgumentError, IOError as _IOError
from .image import AsyncImage, AsyncRBD

__all__ = ["RBD", "Image", "IncompleteWriteError"]


class IncompleteWriteError(_IOError):
    """python-rbd's ``IncompleteWriteError``: a write was clipped at the image end."""


def _runner(ioctx: Any) -> tuple[Callable[[Any], Any], Any]:
    """``(run, async ioctx)`` for a :class:`pyceph.rados.Ioctx`."""
    core = getattr(ioctx, "core", None)
    rados = getattr(ioctx, "rados", None)
    if core is None or rados is None or not hasattr(rados, "run"):
        raise TypeError(f"ioctx must be a pyceph.rados.Ioctx, not {type(ioctx).__name__}")
    return rados.run, core


def _check_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string")
    return value


def _check_int(value: Any, what: str, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer")
    return value


class RBD:
    """python-rbd's ``rbd.RBD``: image management in a pool (format 2 images)."""

    def version(self) -> tuple[int, int, int]:
        """librbd's version triple for the Ceph release pyceph speaks (Pacific)."""
        return (1, 16, 0)

    def create(
        self,
        ioctx: Any,
        name: str,
        size: int,
        order: int | None = None,
        old_format: bool = False,
        features: int | None = None,
        stripe_unit: int | None = None,
        stripe_count: int | None = None,
        data_pool: str | None = None,
    ) -> None:
        """Create image ``name`` of ``size`` bytes.

        ``order``: log2 object size (default 22); ``features``: bit mask (default:
        Pacific's 0x3d, layering + exclusive-lock + object-map + fast-diff +
        deep-flatten);
        ``stripe_unit`` (bytes) / ``stripe_count``: fancy striping.
        ``old_format=True`` (format 1) and ``data_pool`` are not supported.

        Raises ImageExists, ArgumentOutOfRange (bad order), InvalidArgumentError,
        FeatureNotSupported, FunctionNotSupported (format 1), TypeError.
        """
        run, io = _runner(ioctx)
        _check_str(name, "name")
        _check_int(size, "size")
        _check_int(order, "order", optional=True)
        _check_int(features, "features", optional=True)
        _check_int(stripe_unit, "stripe_unit", optional=True)
        _check_int(stripe_count, "stripe_count", optional=True)
        if old_format:
            if features or stripe_unit or stripe_count or data_pool:
                raise InvalidArgumentError(
                    "format 1 images do not support feature masks, non-default striping, nor data pool"
                )
            raise FunctionNotSupported("pyceph cannot create format 1 images", errno=errno.EOPNOTSUPP)
        if data_pool is not None:
            raise FeatureNotSupported(f"pyceph cannot create images with a data pool ({data_pool!r})")
        run(AsyncRBD().create(io, name, size, order=order, features=features,
                              stripe_unit=stripe_unit, stripe_count=stripe_count))

    def list(self, ioctx: Any) -> list[str]:
        """Names of the images in the pool (``rbd_directory``)."""
        run, io = _runner(ioctx)
        return list(run(AsyncRBD().list(io)))

    def remove(self, ioctx: Any, name: str, on_progress: Callable[[int, int], Any] | None = None) -> None:
        """Delete image ``name`` and all its data.  ``on_progress(done, total)`` is
        called as data objects are removed.

        Raises ImageNotFound, ImageHasSnapshots, ImageBusy (locked, or still
        watched by an open image), FeatureNotSupported.
        """
        run, io = _runner(ioctx)
        _check_str(name, "name")
        run(AsyncRBD().remove(io, name, on_progress=on_progress))

    def clone(self, p_ioctx: Any, p_name: str, p_snapname: str, c_ioctx: Any, c_name: str,
              features: int | None = None, order: int | None = None, stripe_unit: int | None = None,
              stripe_count: int | None = None, data_pool: str | None = None,
              clone_format: int | None = None) -> None:
        """Clone snapshot ``p_name@p_snapname`` into ``c_name`` (python-rbd ``RBD.clone``).

        ``clone_format``: 1 (protected snapshot + ``rbd_children``) or 2; None
        picks like Pacific's ``auto``.  Raises ImageNotFound, ImageExists,
        InvalidArgumentError (e.g. unprotected snapshot for v1), FeatureNotSupported.
        """
        run, p_io = _runner(p_ioctx)
        _, c_io = _runner(c_ioctx)
        _check_str(p_name, "parent name")
        _check_str(p_snapname, "parent snapshot name")
        _check_str(c_name, "clone name")
        if data_pool is not None:
            raise FeatureNotSupported(f"pyceph cannot create images with a data pool ({data_pool!r})")
        run(AsyncRBD().clone(p_io, p_name, p_snapname, c_io, c_name, features=features, order=order,
                             stripe_unit=stripe_unit, stripe_count=stripe_count, clone_format=clone_format))


class Image:
    """python-rbd's ``rbd.Image``: an open image.

    ``Image(ioctx, name, snapshot=None, read_only=False)``; a snapshot implies
    read-only.  Use as a context manager or call :meth:`close`.  Methods on a
    closed image raise InvalidArgumentError ("image is closed").

    ``exclusive=True`` takes the exclusive lock at open and keeps it against
    requests (krbd ``-o exclusive``); ``image_id`` opens by id instead of name.
    Raises ImageNotFound (no image / snapshot), FeatureNotSupported (features
    pyceph cannot honour for this kind of access, e.g. journaling for
    read-write), ImageBusy, TypeError.
    """

    def __init__(self, ioctx: Any, name: str | None = None, snapshot: str | None = None,
                 read_only: bool = False, image_id: str | None = None, exclusive: bool = False):
        self.closed = True
        self._run, io = _runner(ioctx)
        if image_id is None:
            _check_str(name, "name")
        else:
            _check_str(image_id, "image_id")
            if name is not None:
                raise InvalidArgumentError("pass either an image name or an image id, not both")
        if snapshot is not None:
            _check_str(snapshot, "snapshot")
        self.ioctx = ioctx
        self._image: AsyncImage = self._run(
            AsyncImage.open(io, name, read_only=bool(read_only), snapshot=snapshot, image_id=image_id,
                            exclusive=bool(exclusive)))
        self.name = self._image.name
        self.closed = False

    # -- lifecycle ---------------------------------------------------------------
    def _img(self) -> AsyncImage:
        if self.closed:
            raise InvalidArgumentError("image is closed")
        return self._image

    def close(self) -> None:
        """Wait for in-flight writes and close (idempotent)."""
        if not self.closed:
            self.closed = True
            self._run(self._image.close())

    def __enter__(self) -> "Image":
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.close()
        return False

    def __repr__(self) -> str:
        return f"rbd.Image(ioctx, {self.name!r})"

    # -- I/O -----------------------------------------------------------------------
    def read(self, offset: int, length: int, fadvise_flags: int = 0) -> bytes:
        """``length`` bytes at ``offset`` (holes read as zeros; clipped at the end).
        Raises InvalidArgumentError for an offset at or past the end."""
        _check_int(offset, "offset")
        _check_int(length, "length")
        return self._run(self._img().read(offset, length))

    def write(self, data: bytes, offset: int, fadvise_flags: int = 0) -> int:
        """Write ``data`` at ``offset``; returns ``len(data)`` once the OSDs acked it.
        Raises ReadOnlyImage, InvalidArgumentError (offset past the end),
        IncompleteWriteError (the write was clipped at the image end), TypeError."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data must be a bytes-like object")
        _check_int(offset, "offset")
        length = memoryview(data).nbytes
        ret = self._run(self._img().write(offset, data))
        if ret < length:
            raise IncompleteWriteError(f"Wrote only {ret} out of {length} bytes")
        return ret

    def flush(self) -> None:
        """Wait until every write issued so far is on the OSDs."""
        self._run(self._img().flush())

    # -- metadata --------------------------------------------------------------------
    def size(self) -> int:
        return self._img().size()

    def stat(self) -> dict[str, Any]:
        """size, obj_size, num_objs, order, block_name_prefix, parent_pool, parent_name."""
        return self._img().stat()

    def features(self) -> int:
        return self._img().features()

    def flags(self) -> int:
        return self._img().flags()

    def op_features(self) -> int:
        return self._img().op_features()

    def id(self) -> str:
        return self._img().id()

    def block_name_prefix(self) -> str:
        return self._img().get_block_name_prefix()

    def get_name(self) -> str:
        return self.name

    def old_format(self) -> bool:
        return self._img().old_format()

    def stripe_unit(self) -> int:
        return self._img().stripe_unit()

    def stripe_count(self) -> int:
        return self._img().stripe_count()

    def get_snap_limit(self) -> int:
        return self._img().get_snap_limit()

    def is_read_only(self) -> bool:
        return bool(self._img().read_only)

    def parent_info(self) -> tuple[str, str, str]:
        """``(pool name, image name, snapshot name)`` of a clone's parent.
        Raises ImageNotFound when the image has no parent."""
        return self._img().parent_info()

    def parent_id(self) -> str:
        return self._img().parent_id()

    def get_parent_image_spec(self) -> dict[str, Any]:
        return self._img().get_parent_image_spec()

    def overlap(self) -> int:
        """Parent overlap in bytes (0 without a parent)."""
        return self._img().overlap()

    # -- discard / resize / features -------------------------------------------------
    def discard(self, offset: int, length: int) -> None:
        """librbd discard of ``[offset, offset+length)`` (64 KiB granularity):
        whole objects removed, tails truncated, middles zeroed."""
        _check_int(offset, "offset")
        _check_int(length, "length")
        self._run(self._img().discard(offset, length))

    def write_zeroes(self, offset: int, length: int, zero_flags: int = 0) -> None:
        """Make the range read as zeros (discard without granularity alignment)."""
        _check_int(offset, "offset")
        _check_int(length, "length")
        self._run(self._img().write_zeroes(offset, length))

    def resize(self, size: int, allow_shrink: bool = True) -> None:
        """Grow or shrink the image to ``size`` bytes.  Raises InvalidArgumentError
        when shrinking with ``allow_shrink=False``, ReadOnlyImage."""
        _check_int(size, "size")
        self._run(self._img().resize(size, allow_shrink=allow_shrink))

    def update_features(self, features: int, enabled: bool) -> None:
        """``rbd feature enable|disable``.  Raises InvalidArgumentError,
        FeatureNotSupported, ReadOnlyImage."""
        _check_int(features, "features")
        self._run(self._img().update_features(features, bool(enabled)))

    def rebuild_object_map(self, on_progress: Callable[[int, int], Any] | None = None) -> None:
        self._run(self._img().rebuild_object_map(on_progress=on_progress))

    # -- snapshots -------------------------------------------------------------------
    def create_snap(self, name: str, flags: int = 0) -> None:
        _check_str(name, "name")
        self._run(self._img().create_snap(name))

    def remove_snap(self, name: str) -> None:
        _check_str(name, "name")
        self._run(self._img().remove_snap(name))

    def remove_snap2(self, name: str, flags: int = 0) -> None:
        self.remove_snap(name)

    def rename_snap(self, srcname: str, dstname: str) -> None:
        _check_str(srcname, "srcname")
        _check_str(dstname, "dstname")
        self._run(self._img().rename_snap(srcname, dstname))

    def rollback_to_snap(self, name: str, on_progress: Callable[[int, int], Any] | None = None) -> None:
        _check_str(name, "name")
        self._run(self._img().rollback_to_snap(name, on_progress=on_progress))

    def protect_snap(self, name: str) -> None:
        _check_str(name, "name")
        self._run(self._img().protect_snap(name))

    def unprotect_snap(self, name: str) -> None:
        _check_str(name, "name")
        self._run(self._img().unprotect_snap(name))

    def is_protected_snap(self, name: str) -> bool:
        _check_str(name, "name")
        return bool(self._run(self._img().is_protected_snap(name)))

    def list_snaps(self) -> Iterator[dict[str, Any]]:
        """Iterator of python-rbd snapshot dicts (id, size, name, namespace, ...)."""
        return iter(self._run(self._img().list_snaps()))

    def set_snap(self, name: str | None) -> None:
        """Read from snapshot ``name`` from now on (read-only), or the head with None."""
        if name is not None:
            _check_str(name, "name")
        self._run(self._img().set_snap(name))

    def set_snap_by_id(self, snap_id: int | None) -> None:
        self._run(self._img().set_snap_by_id(snap_id))

    # -- clones ----------------------------------------------------------------------
    def flatten(self, on_progress: Callable[[int, int], Any] | None = None) -> None:
        """Copy every parent-backed object into the clone and detach it."""
        self._run(self._img().flatten(on_progress=on_progress))

    def list_children(self) -> list[tuple[str, str]]:
        """``[(pool name, image name)]`` of the clones of the open snapshot."""
        return list(self._run(self._img().list_children()))

    def list_children2(self) -> Iterator[dict[str, Any]]:
        return iter(self._run(self._img().list_children2()))

    # -- managed lock ----------------------------------------------------------------
    def lock_acquire(self, lock_mode: int = 0) -> None:
        """Take the exclusive lock now (``RBD_LOCK_MODE_EXCLUSIVE`` = 0)."""
        self._run(self._img().lock_acquire(lock_mode))

    def lock_release(self) -> None:
        self._run(self._img().lock_release())

    def lock_get_owners(self) -> Iterator[dict[str, Any]]:
        return iter(self._run(self._img().lock_get_owners()))
