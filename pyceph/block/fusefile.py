"""A FUSE file system whose root *is* one regular file: the image.

The daemon mounts it over a regular file (FUSE accepts a file as mount point), so
the loop device's backing file is the mount point itself and no lookups are needed.
Every request handler turns image errors into an errno for the kernel; pyfuse3
only accepts ``FUSEError`` from handlers (anything else would kill its worker task
and leave the request unanswered).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from typing import Awaitable, Callable, Protocol, TypeVar

import pyfuse3


log = logging.getLogger(__name__)

ROOT_INODE = pyfuse3.ROOT_INODE
T = TypeVar("T")


class BlockImage(Protocol):
    """What the mapping layer needs from an image.  Coroutines run in the daemon's loop.

    ``size`` is in bytes.  ``write`` returns the byte count once the cluster
    acknowledged the data; ``flush`` returns once every write started before it is
    acknowledged.  Failures raise :class:`pyceph.errors.Error` subclasses whose
    ``errno`` is passed on to the kernel (EIO when absent).
    """

    size: int
    read_only: bool

    async def read(self, offset: int, length: int) -> bytes: ...
    async def write(self, offset: int, data: bytes) -> int: ...
    async def flush(self) -> None: ...
    async def close(self) -> None: ...


def errno_of(exc: BaseException) -> int:
    """The errno to give the kernel for an exception from the image (EIO by default)."""
    if isinstance(exc, pyfuse3.FUSEError):
        return exc.errno
    e = getattr(exc, "errno", None)
    if isinstance(e, int) and e > 0:
        return e
    return errno.EIO


class ImageFile(pyfuse3.Operations):
    """pyfuse3 operations serving ``image`` as the single file at the mount root.

    ``read_only`` makes opens for writing fail with EROFS (the mount is also ``ro``).
    ``direct_io`` sets FOPEN_DIRECT_IO on opens: no kernel page cache for the file,
    so blocks are not cached twice (loop device cache + FUSE file cache).  Counters (``stats``) are for tests and diagnostics.
    """

    enable_writeback_cache = False  # a write is acknowledged only once the image has it
    supports_dot_lookup = False

    def __init__(self, image: BlockImage, *, read_only: bool, direct_io: bool = True):
        super().__init__()
        self.image = image
        self.read_only = read_only
        self.direct_io = direct_io
        self.stats = {"read": 0, "write": 0, "flush": 0, "fsync": 0, "errors": 0,
                      "bytes_read": 0, "bytes_written": 0,
                      "max_read_size": 0, "max_write_size": 0, "max_inflight": 0}
        self._inflight = 0
        self._next_fh = 1
        self._open: set[int] = set()
        self._times = time.time_ns()  # a fixed mtime: attributes never change

    # --- helpers --------------------------------------------------------

    async def _call(self, what: str, fn: Callable[..., Awaitable[T]], *args) -> T:
        try:
            return await fn(*args)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure must reach the kernel
            self.stats["errors"] += 1
            code = errno_of(exc)
            log.error("%s failed (errno %d): %r", what, code, exc)
            raise pyfuse3.FUSEError(code) from None

    def _note_size(self, key: str, n: int) -> None:
        if n > self.stats[key]:
            self.stats[key] = n
        if self._inflight + 1 > self.stats["max_inflight"]:
            self.stats["max_inflight"] = self._inflight + 1

    def _attrs(self) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ROOT_INODE
        a.generation = 0
        a.entry_timeout = 3600
        a.attr_timeout = 3600
        a.st_mode = stat.S_IFREG | (0o400 if self.read_only else 0o600)
        a.st_nlink = 1
        a.st_uid = os.getuid()
        a.st_gid = os.getgid()
        a.st_rdev = 0
        a.st_size = self.image.size
        a.st_blksize = 4096
        a.st_blocks = (self.image.size + 511) // 512
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self._times
        return a

    # --- metadata -------------------------------------------------------

    async def getattr(self, inode, ctx=None):
        if inode != ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attrs()

    async def lookup(self, parent_inode, name, ctx=None):
        raise pyfuse3.FUSEError(errno.ENOENT)

    async def setattr(self, inode, attr, fields, fh, ctx):
        if inode != ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if fields.update_size and attr.st_size != self.image.size:
            raise pyfuse3.FUSEError(errno.EPERM)  # resizing goes through the image API
        if self.read_only and (fields.update_mode or fields.update_uid or fields.update_gid):
            raise pyfuse3.FUSEError(errno.EROFS)
        return self._attrs()

    async def access(self, inode, mode, ctx):
        return not (self.read_only and mode & os.W_OK)

    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = (self.image.size + 4095) // 4096
        s.f_files = 1
        s.f_namemax = 255
        return s

    # --- data -----------------------------------------------------------

    async def open(self, inode, flags, ctx):
        if inode != ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if self.read_only and (flags & os.O_ACCMODE) != os.O_RDONLY:
            raise pyfuse3.FUSEError(errno.EROFS)
        if flags & os.O_TRUNC:
            raise pyfuse3.FUSEError(errno.EPERM)
        fh = self._next_fh
        self._next_fh += 1
        self._open.add(fh)
        return pyfuse3.FileInfo(fh=fh, direct_io=self.direct_io, keep_cache=False)

    async def read(self, fh, off, size):
        end = min(off + size, self.image.size)
        if end <= off:
            return b""
        self.stats["read"] += 1
        self._note_size("max_read_size", end - off)
        data = await self._call("read", self.image.read, off, end - off)
        self.stats["bytes_read"] += len(data)
        return data

    async def write(self, fh, off, buf):
        if self.read_only:
            raise pyfuse3.FUSEError(errno.EROFS)
        n = len(buf)
        if off + n > self.image.size:
            # a block device cannot grow; a short write would be retried forever
            raise pyfuse3.FUSEError(errno.ENOSPC)
        self.stats["write"] += 1
        self._note_size("max_write_size", n)
        self._inflight += 1
        try:
            done = await self._call("write", self.image.write, off, buf)
        finally:
            self._inflight -= 1
        if done is None:
            done = n
        self.stats["bytes_written"] += done
        return done

    async def flush(self, fh):
        # close(2) of an fd on the file: make what it wrote durable, as fsync would.
        self.stats["flush"] += 1
        if not self.read_only:
            await self._call("flush", self.image.flush)

    async def fsync(self, fh, datasync):
        # loop turns REQ_OP_FLUSH (fsync/sync on /dev/loopN) into fsync here.
        self.stats["fsync"] += 1
        if not self.read_only:
            await self._call("fsync", self.image.flush)

    async def release(self, fh):
        self._open.discard(fh)

    @property
    def open_handles(self) -> int:
        return len(self._open)
