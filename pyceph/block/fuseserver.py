"""The I/O side of our FUSE server: mount(2), /dev/fuse, asyncio.

:func:`mount` opens ``/dev/fuse`` (non-blocking) and mounts a FUSE file system
whose root is a regular file over ``mountpoint`` with the mount(2) syscall (we run
as root; no fusermount3).  :class:`FuseServer` reads requests from that fd in the
event loop, runs each one as a task of :meth:`FuseSession.handle
<pyceph.block.fuseproto.FuseSession.handle>` (many in flight at once) and writes
each reply with one ``writev``.  :func:`unmount` is umount2(2).

Kernel side: fs/fuse/dev.c (one ``read`` returns exactly one request; a reply is
one ``write``; ENOENT on write = the request was interrupted/aborted, ENODEV on
read = the connection is gone, e.g. after unmount).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import stat

from .fuseproto import FuseDecodeError, FuseSession, Request

log = logging.getLogger(__name__)

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MNT_DETACH = 2

_libc = None


def _lib():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def _mount_data(fd: int, root_mode: int) -> str:
    return (f"fd={fd},rootmode={stat.S_IFMT(root_mode):o},user_id={os.getuid()},group_id={os.getgid()},"
            "default_permissions")


def mount(mountpoint: str, *, fsname: str, subtype: str = "pyceph", read_only: bool = False) -> int:
    """Mount a FUSE file system whose root is a regular file over the regular file
    ``mountpoint``; returns the non-blocking, close-on-exec ``/dev/fuse`` fd serving it.

    ``fsname`` is the mount source (``/proc/mounts`` first column; commas and
    whitespace must not appear), the type is ``fuse.<subtype>``.  Raises OSError
    (e.g. EPERM without CAP_SYS_ADMIN, ENOENT without /dev/fuse).
    """
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        mode = os.stat(mountpoint).st_mode
        flags = MS_NOSUID | MS_NODEV | (MS_RDONLY if read_only else 0)
        data = _mount_data(fd, mode)
        if _lib().mount(fsname.encode(), os.fsencode(mountpoint), f"fuse.{subtype}".encode(), flags,
                        data.encode()) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"mount of FUSE on {mountpoint}: {os.strerror(e)}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def unmount(mountpoint: str) -> None:
    """umount2(mountpoint); lazily (MNT_DETACH) if it is busy.  Not mounted: ignored."""
    libc = _lib()
    path = os.fsencode(mountpoint)
    if libc.umount2(path, 0) == 0:
        return
    e = ctypes.get_errno()
    if e == errno.EBUSY and libc.umount2(path, MNT_DETACH) == 0:
        log.warning("%s busy: unmounted lazily", mountpoint)
        return
    e = ctypes.get_errno()
    if e not in (errno.EINVAL, errno.ENOENT):
        raise OSError(e, f"unmounting {mountpoint}: {os.strerror(e)}")


class FuseServer:
    """Serves ``session`` on the /dev/fuse fd ``fd`` (non-blocking) in the running loop.

    At most ``max_tasks`` requests are handled at once (reading pauses at the cap).
    :meth:`serve` returns when the kernel ends the connection (ENODEV, e.g. the file
    system was unmounted) or after :meth:`stop`; it raises OSError on an unexpected
    read error.  ``stats``: requests, replies, dropped (reply refused by the kernel:
    interrupted or aborted), decode_errors.
    """

    POOL_MAX = 16  # spare read buffers kept (each max_write + 8 KiB)

    def __init__(self, session: FuseSession, fd: int, *, max_tasks: int = 64):
        self.session = session
        self.fd = fd
        self.max_tasks = max(1, max_tasks)
        self.bufsize = session.reader_bufsize
        self._pool: list[bytearray] = []  # read buffers, reused (warm memory, no allocation)
        self.stats = {"requests": 0, "replies": 0, "dropped": 0, "decode_errors": 0, "max_tasks_seen": 0}
        self._tasks: set[asyncio.Task] = set()
        self._reading = False
        self._closing = False
        self._done: asyncio.Future | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._done = self._loop.create_future()
        self._resume()
        try:
            await self._done
        finally:
            self._pause()

    def _resume(self) -> None:
        if not self._reading and not self._closing:
            self._loop.add_reader(self.fd, self._on_readable)
            self._reading = True

    def _pause(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.fd)
            self._reading = False

    def _end(self, exc: BaseException | None) -> None:
        self._pause()
        if self._done is not None and not self._done.done():
            if exc is None:
                self._done.set_result(None)
            else:
                self._done.set_exception(exc)

    def _take(self) -> bytearray:
        return self._pool.pop() if self._pool else bytearray(self.bufsize)

    def _give(self, buf: bytearray) -> None:
        """Return a read buffer to the pool unless a view of it is still alive
        (a WRITE payload the image kept): resizing a bytearray with exports raises."""
        if len(self._pool) >= self.POOL_MAX:
            return
        try:
            del buf[-1]  # O(1): shrinking by one byte does not reallocate
        except BufferError:
            return  # still referenced: the garbage collector will free it
        buf.append(0)
        self._pool.append(buf)

    def _on_readable(self) -> None:
        while len(self._tasks) < self.max_tasks:
            buf = self._take()
            try:
                n = os.readv(self.fd, [buf])
            except (BlockingIOError, InterruptedError):
                self._give(buf)
                return
            except OSError as e:
                self._give(buf)
                if e.errno == errno.ENOENT:  # interrupted before we read it
                    continue
                if e.errno == errno.ENODEV:  # unmounted / aborted
                    log.info("FUSE connection ended")
                    self._end(None)
                else:
                    self._end(e)
                return
            if not n:  # end of file: never from /dev/fuse, but a closed peer in tests
                self._give(buf)
                self._end(None)
                return
            self.stats["requests"] += 1
            view = memoryview(buf)[:n]
            try:
                # zero copy: a WRITE's payload is a view of buf, which stays ours till it is done
                item = self.session.parse(view, share=True)
            except FuseDecodeError as e:
                self.stats["decode_errors"] += 1
                log.error("dropping a malformed FUSE request: %s", e)
                item = None
            view.release()
            if isinstance(item, Request):
                task = self._loop.create_task(self._serve_one(item, buf if item.data else None))
                self._tasks.add(task)
                task.add_done_callback(self._task_done)
                if len(self._tasks) > self.stats["max_tasks_seen"]:
                    self.stats["max_tasks_seen"] = len(self._tasks)
                if not item.data:
                    self._give(buf)
            else:
                self._give(buf)
                if item is not None:
                    self._write(item)
        self._pause()  # at the cap: resume when a task ends

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("FUSE request task failed: %r", task.exception())
        if not self._closing and self._done is not None and not self._done.done():
            self._resume()

    async def _serve_one(self, req: Request, buf: bytearray | None) -> None:
        try:
            out = await self.session.execute(req)
            if out is not None:
                self._write(out)
        finally:
            del req
            if buf is not None:
                self._give(buf)

    def _write(self, out: list[bytes]) -> None:
        try:
            os.writev(self.fd, out)
            self.stats["replies"] += 1
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENODEV, errno.EBADF):
                self.stats["dropped"] += 1  # interrupted or aborted: nobody waits for it
            else:
                log.error("writing a FUSE reply: %s", e)

    def notify(self, out: list[bytes]) -> None:
        """Write an unsolicited notification (e.g. :func:`fuseproto.notify_inval_inode`).
        May run in another thread.  Raises OSError (ENOENT: the kernel does not know
        the inode; ENODEV: the connection is gone)."""
        os.writev(self.fd, out)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop reading new requests, wait up to ``timeout`` s for those in flight
        (then cancel them), and make :meth:`serve` return."""
        self._closing = True
        if self._loop is None:
            return
        self._pause()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for t in pending:
                t.cancel()
            for t in pending:
                with contextlib.suppress(BaseException):
                    await t
        self._end(None)

    @property
    def inflight(self) -> int:
        return len(self._tasks)
