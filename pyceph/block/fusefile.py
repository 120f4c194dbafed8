"""The file system semantics of a mapping: one regular file, the image, as the FUSE root.

The daemon mounts it over a regular file (FUSE accepts a file as mount point), so
the loop device's backing file is the mount point itself and no lookups are needed.
:class:`ImageFile` is the *ops* object of :class:`pyceph.block.fuseproto.FuseSession`
(our own FUSE server: pyfuse3 has no fallocate handler, so discard could not reach
the image; see :mod:`pyceph.block.fuseproto`).  Handlers raise :class:`FuseError`
(or the image's typed errors) whose ``errno`` goes to the kernel.

Discard: the loop driver turns REQ_OP_DISCARD into ``fallocate(PUNCH_HOLE|KEEP_SIZE)``
and REQ_OP_WRITE_ZEROES into ``fallocate(ZERO_RANGE|KEEP_SIZE)`` (or PUNCH_HOLE when
the caller allows unmapping) on this file (drivers/block/loop.c ``lo_fallocate``).
PUNCH_HOLE becomes ``image.discard`` (the range reads back as zeros afterwards, as
fallocate(2) requires; RBD discard zeroes what it cannot deallocate), ZERO_RANGE
becomes ``image.write_zeroes``; other modes and images without those methods get
EOPNOTSUPP, and so does everything when the mapping has ``notrim`` (like krbd).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from typing import Any, Awaitable, Callable, Protocol, TypeVar

from .. import errors
from .fuseproto import (
    FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, FATTR_GID, FATTR_MODE,
    FATTR_SIZE, FATTR_UID, FOPEN_DIRECT_IO, FOPEN_PARALLEL_DIRECT_WRITES, FUSE_ROOT_ID, Attr, StatFs,
)

log = logging.getLogger(__name__)

ROOT_INODE = FUSE_ROOT_ID
T = TypeVar("T")


class FuseError(errors.OSError):
    """A FUSE request fails with ``errno`` (positive) - handed to the kernel as is."""

    def __init__(self, errno_: int, message: str = ""):
        super().__init__(message or os.strerror(errno_), errno=errno_)


class BlockImage(Protocol):
    """What the mapping layer needs from an image.  Coroutines run in the daemon's loop.

    ``size`` is in bytes and may change (the daemon then resizes the device).  ``write`` returns the byte count once the cluster
    acknowledged the data; ``flush`` returns once every write started before it is
    acknowledged (``data`` may be a read-only memoryview).  Optional: ``discard(offset, length)`` (the range reads back as
    zeros afterwards) and ``write_zeroes(offset, length)``; without them discard
    requests get EOPNOTSUPP.  Failures raise :class:`pyceph.errors.Error`
    subclasses whose ``errno`` is passed on to the kernel (EIO when absent).
    """

    size: int
    read_only: bool

    async def read(self, offset: int, length: int) -> bytes: ...
    async def write(self, offset: int, data: bytes | memoryview) -> int: ...
    async def flush(self) -> None: ...
    async def close(self) -> None: ...


def errno_of(exc: BaseException) -> int:
    """The errno to give the kernel for an exception from the image (EIO by default)."""
    e = getattr(exc, "errno", None)
    if isinstance(e, int) and e > 0:
        return e
    return errno.EIO


def image_op(image: Any, name: str) -> Callable[..., Awaitable[Any]] | None:
    """``image.<name>`` if the image has that (coroutine) method, else None."""
    fn = getattr(image, name, None)
    return fn if callable(fn) else None


class ImageFile:
    """Request handlers serving ``image`` as the single file at the mount root.

    ``read_only`` makes opens for writing fail with EROFS (the mount is also ``ro``).
    ``direct_io`` sets FOPEN_DIRECT_IO on opens: no kernel page cache for the file,
    so blocks are not cached twice (loop device cache + FUSE file cache).
    ``discard`` (default on; off = krbd's ``notrim``) lets FALLOCATE reach the image.
    Counters (``stats``) are for tests and diagnostics.
    """

    def __init__(self, image: BlockImage, *, read_only: bool, direct_io: bool = True, discard: bool = True):
        self.image = image
        self.read_only = read_only
        self.direct_io = direct_io
        self.trim = discard
        self.discard_enabled = discard and not read_only
        self._discard = image_op(image, "discard")
        self._write_zeroes = image_op(image, "write_zeroes")
        self.stats = {"read": 0, "write": 0, "flush": 0, "fsync": 0, "discard": 0, "write_zeroes": 0,
                      "errors": 0, "bytes_read": 0, "bytes_written": 0, "bytes_discarded": 0,
                      "bytes_zeroed": 0, "max_read_size": 0, "max_write_size": 0, "max_inflight": 0}
        self._inflight = 0
        self._next_fh = 1
        self._open: set[int] = set()
        self._times = time.time_ns()  # a fixed mtime: attributes never change

    # --- helpers --------------------------------------------------------

    async def _call(self, what: str, fn: Callable[..., Awaitable[T]], *args) -> T:
        self._inflight += 1
        if self._inflight > self.stats["max_inflight"]:
            self.stats["max_inflight"] = self._inflight
        try:
            return await fn(*args)
        except FuseError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure must reach the kernel
            self.stats["errors"] += 1
            code = errno_of(exc)
            log.error("%s failed (errno %d): %r", what, code, exc)
            raise FuseError(code, f"{what}: {exc}") from None
        finally:
            self._inflight -= 1

    def _note_size(self, key: str, n: int) -> None:
        if n > self.stats[key]:
            self.stats[key] = n

    def attrs(self) -> Attr:
        size = self.image.size
        return Attr(ino=ROOT_INODE, size=size, blocks=(size + 511) // 512,
                    mode=stat.S_IFREG | (0o400 if self.read_only else 0o600),
                    uid=os.getuid(), gid=os.getgid(), blksize=4096, time_ns=self._times)

    # --- metadata -------------------------------------------------------

    async def getattr(self) -> Attr:
        return self.attrs()

    async def setattr(self, valid: int, size: int = 0, mode: int = 0, uid: int = 0, gid: int = 0) -> Attr:
        if valid & FATTR_SIZE and size != self.image.size:
            raise FuseError(errno.EPERM, "resizing goes through the image API")
        if self.read_only and valid & (FATTR_MODE | FATTR_UID | FATTR_GID):
            raise FuseError(errno.EROFS)
        return self.attrs()

    async def access(self, mask: int) -> None:
        if self.read_only and mask & os.W_OK:
            raise FuseError(errno.EROFS)

    async def statfs(self) -> StatFs:
        """The loop driver advertises discard and write-zeroes on the device only if
        statfs of its backing file succeeds, and takes the discard granularity from
        f_bsize (drivers/block/loop.c ``loop_get_discard_config``).  So with
        ``notrim`` statfs fails (EOPNOTSUPP): the device then has no discard, like
        krbd's notrim (max_discard_sectors 0), and nothing persists on the loop
        device (unlike a 0 written to its sysfs discard_max_bytes).  The mount is
        private to the daemon: nobody else calls statfs on it."""
        if not self.trim:
            raise FuseError(errno.EOPNOTSUPP, "notrim: no discard")
        return StatFs(blocks=(self.image.size + 4095) // 4096, bsize=4096, frsize=4096)

    # --- data -----------------------------------------------------------

    async def open(self, flags: int) -> tuple[int, int]:
        """-> (fh, FOPEN_* flags)."""
        if self.read_only and (flags & os.O_ACCMODE) != os.O_RDONLY:
            raise FuseError(errno.EROFS)
        if flags & os.O_TRUNC:
            raise FuseError(errno.EPERM)
        fh = self._next_fh
        self._next_fh += 1
        self._open.add(fh)
        return fh, (FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES) if self.direct_io else 0

    async def read(self, fh: int, off: int, size: int) -> bytes:
        end = min(off + size, self.image.size)
        if end <= off:
            return b""
        self.stats["read"] += 1
        self._note_size("max_read_size", end - off)
        data = await self._call("read", self.image.read, off, end - off)
        self.stats["bytes_read"] += len(data)
        return data

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        if self.read_only:
            raise FuseError(errno.EROFS)
        n = len(buf)
        if off + n > self.image.size:
            # a block device cannot grow; a short write would be retried forever
            raise FuseError(errno.ENOSPC)
        self.stats["write"] += 1
        self._note_size("max_write_size", n)
        done = await self._call("write", self.image.write, off, buf)
        if done is None:
            done = n
        self.stats["bytes_written"] += done
        return done

    async def flush(self, fh: int) -> None:
        # close(2) of an fd on the file: make what it wrote durable, as fsync would.
        self.stats["flush"] += 1
        if not self.read_only:
            await self._call("flush", self.image.flush)

    async def fsync(self, fh: int, datasync: bool = False) -> None:
        # loop turns REQ_OP_FLUSH (fsync/sync on /dev/loopN) into fsync here.
        self.stats["fsync"] += 1
        if not self.read_only:
            await self._call("fsync", self.image.flush)

    async def release(self, fh: int) -> None:
        self._open.discard(fh)

    async def fallocate(self, fh: int, off: int, length: int, mode: int) -> None:
        """PUNCH_HOLE|KEEP_SIZE -> image.discard; ZERO_RANGE[|KEEP_SIZE] ->
        image.write_zeroes; the range is clipped to the image.  EOPNOTSUPP for other
        modes, with ``notrim`` or when the image cannot; EROFS when read-only."""
        if self.read_only:
            raise FuseError(errno.EROFS)
        if not self.discard_enabled:
            raise FuseError(errno.EOPNOTSUPP, "discard is off (notrim)")
        if mode == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE:
            what, fn = "discard", self._discard
        elif mode & ~FALLOC_FL_KEEP_SIZE == FALLOC_FL_ZERO_RANGE:
            what, fn = "write_zeroes", self._write_zeroes
        else:
            raise FuseError(errno.EOPNOTSUPP, f"fallocate mode {mode:#x}")
        if fn is None:
            raise FuseError(errno.EOPNOTSUPP, f"the image has no {what}")
        end = min(off + length, self.image.size)
        if end <= off:
            return
        self.stats[what] += 1
        log.debug("%s %d+%d", what, off, end - off)
        try:
            await self._call(what, fn, off, end - off)
        except FuseError as e:
            if isinstance(e.__context__, (AttributeError, NotImplementedError)):
                # a wrapper over an image that cannot do it (yet): unsupported, not EIO
                raise FuseError(errno.EOPNOTSUPP, f"{what}: {e.__context__!r}") from None
            raise
        self.stats["bytes_discarded" if what == "discard" else "bytes_zeroed"] += end - off

    @property
    def open_handles(self) -> int:
        return len(self._open)
