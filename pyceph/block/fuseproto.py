"""The FUSE kernel protocol for a one-file file system, sans I/O.

Why our own FUSE server instead of pyfuse3: the loop driver turns discard and
write-zeroes on ``/dev/loopN`` into ``fallocate(PUNCH_HOLE|KEEP_SIZE)`` /
``fallocate(ZERO_RANGE|KEEP_SIZE)`` on its backing file, which FUSE forwards as
``FUSE_FALLOCATE`` (opcode 43).  pyfuse3 (3.5.0, the latest release) has no
fallocate handler, so libfuse answers ENOSYS, the kernel reports EOPNOTSUPP and
``fstrim``/``blkdiscard`` never reach the image.  The file system we serve is a
single regular file (the mount root), so the protocol subset it needs is small.

Wire format: ``include/uapi/linux/fuse.h`` (Linux; installed as
``/usr/include/linux/fuse.h``).  Every request is ``struct fuse_in_header`` (40
bytes: len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding) followed
by an opcode-specific body; every reply is ``struct fuse_out_header`` (16 bytes:
len, error (negative errno or 0), unique) followed by the reply body.  All
integers are little-endian (host order on every platform we run on).

Handled: INIT (negotiation: protocol 7.23+, ASYNC_READ, BIG_WRITES, ASYNC_DIO,
MAX_PAGES, PARALLEL_DIROPS, max_write, max_background), GETATTR, SETATTR,
ACCESS, OPEN (FOPEN_DIRECT_IO, FOPEN_PARALLEL_DIRECT_WRITES), READ, WRITE,
FLUSH, FSYNC, RELEASE, FALLOCATE, STATFS, LOOKUP (ENOENT: the root is a file),
INTERRUPT, FORGET, BATCH_FORGET (no reply), DESTROY; every other opcode gets
ENOSYS (the kernel then stops sending most of them).

:class:`FuseSession` is the protocol object: :meth:`FuseSession.handle` takes the
bytes of one request (as read from ``/dev/fuse``) and returns the reply buffers
(to write with one ``writev``) or None; it never touches a file descriptor.
The file system semantics live in an *ops* object (:class:`pyceph.block.fusefile.ImageFile`).
"""

from __future__ import annotations

import errno
import logging
import struct
from dataclasses import dataclass, field
from typing import Any

from .. import errors

log = logging.getLogger(__name__)

# --- constants (include/uapi/linux/fuse.h) --------------------------------------------

FUSE_KERNEL_VERSION = 7
FUSE_KERNEL_MINOR_VERSION = 38  # the newest minor whose structs we know
FUSE_MIN_MINOR = 23  # 64-byte fuse_init_out, 88-byte fuse_attr, 40-byte read/write_in
FUSE_ROOT_ID = 1
FUSE_MIN_READ_BUFFER = 8192
FUSE_INT_REQ_BIT = 1  # unique of INTERRUPT requests has bit 0 set

FUSE_LOOKUP = 1
FUSE_FORGET = 2  # no reply
FUSE_GETATTR = 3
FUSE_SETATTR = 4
FUSE_OPEN = 14
FUSE_READ = 15
FUSE_WRITE = 16
FUSE_STATFS = 17
FUSE_RELEASE = 18
FUSE_FSYNC = 20
FUSE_FLUSH = 25
FUSE_INIT = 26
FUSE_ACCESS = 34
FUSE_INTERRUPT = 36  # no reply
FUSE_DESTROY = 38
FUSE_BATCH_FORGET = 42  # no reply
FUSE_FALLOCATE = 43

OP_NAMES = {  # every opcode of enum fuse_opcode, for logs and counters
    1: "LOOKUP", 2: "FORGET", 3: "GETATTR", 4: "SETATTR", 5: "READLINK", 6: "SYMLINK",
    8: "MKNOD", 9: "MKDIR", 10: "UNLINK", 11: "RMDIR", 12: "RENAME", 13: "LINK", 14: "OPEN",
    15: "READ", 16: "WRITE", 17: "STATFS", 18: "RELEASE", 20: "FSYNC", 21: "SETXATTR",
    22: "GETXATTR", 23: "LISTXATTR", 24: "REMOVEXATTR", 25: "FLUSH", 26: "INIT", 27: "OPENDIR",
    28: "READDIR", 29: "RELEASEDIR", 30: "FSYNCDIR", 31: "GETLK", 32: "SETLK", 33: "SETLKW",
    34: "ACCESS", 35: "CREATE", 36: "INTERRUPT", 37: "BMAP", 38: "DESTROY", 39: "IOCTL",
    40: "POLL", 41: "NOTIFY_REPLY", 42: "BATCH_FORGET", 43: "FALLOCATE", 44: "READDIRPLUS",
    45: "RENAME2", 46: "LSEEK", 47: "COPY_FILE_RANGE", 48: "SETUPMAPPING", 49: "REMOVEMAPPING",
    50: "SYNCFS", 51: "TMPFILE",
}

# fuse_init_in/out flags
FUSE_ASYNC_READ = 1 << 0
FUSE_BIG_WRITES = 1 << 5
FUSE_DONT_MASK = 1 << 6
FUSE_ASYNC_DIO = 1 << 15
FUSE_WRITEBACK_CACHE = 1 << 16
FUSE_PARALLEL_DIROPS = 1 << 18
FUSE_MAX_PAGES = 1 << 22
FUSE_INIT_EXT = 1 << 30

# fuse_open_out.open_flags
FOPEN_DIRECT_IO = 1 << 0
FOPEN_KEEP_CACHE = 1 << 1
FOPEN_PARALLEL_DIRECT_WRITES = 1 << 6  # protocol 7.37

# fuse_setattr_in.valid
FATTR_MODE = 1 << 0
FATTR_UID = 1 << 1
FATTR_GID = 1 << 2
FATTR_SIZE = 1 << 3

FUSE_FSYNC_FDATASYNC = 1 << 0

# enum fuse_notify_code: unsolicited messages to the kernel (out header with unique 0)
FUSE_NOTIFY_INVAL_INODE = 2

# fallocate(2) modes (include/uapi/linux/falloc.h)
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

# --- structs ------------------------------------------------------------------------

IN_HEADER = struct.Struct("<IIQQIIIHH")  # fuse_in_header
OUT_HEADER = struct.Struct("<IiQ")  # fuse_out_header
INIT_IN = struct.Struct("<IIII")  # major, minor, max_readahead, flags (+ flags2, unused[11] from 7.36)
INIT_IN_FLAGS2 = struct.Struct("<I")
INIT_OUT = struct.Struct("<IIIIHHIIHHI28x")  # fuse_init_out, 64 bytes
GETATTR_IN = struct.Struct("<IIQ")  # getattr_flags, dummy, fh
SETATTR_IN = struct.Struct("<IIQQQQQQIIIIIIII")  # fuse_setattr_in, 88 bytes
ACCESS_IN = struct.Struct("<II")  # mask, padding
OPEN_IN = struct.Struct("<II")  # flags, open_flags
OPEN_OUT = struct.Struct("<QII")  # fh, open_flags, padding
READ_IN = struct.Struct("<QQIIQII")  # fh, offset, size, read_flags, lock_owner, flags, padding
WRITE_IN = struct.Struct("<QQIIQII")  # fh, offset, size, write_flags, lock_owner, flags, padding
WRITE_OUT = struct.Struct("<II")  # size, padding
FLUSH_IN = struct.Struct("<QIIQ")  # fh, unused, padding, lock_owner
RELEASE_IN = struct.Struct("<QIIQ")  # fh, flags, release_flags, lock_owner
FSYNC_IN = struct.Struct("<QII")  # fh, fsync_flags, padding
FALLOCATE_IN = struct.Struct("<QQQII")  # fh, offset, length, mode, padding
INTERRUPT_IN = struct.Struct("<Q")  # unique
FORGET_IN = struct.Struct("<Q")  # nlookup
BATCH_FORGET_IN = struct.Struct("<II")  # count, dummy
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")  # fuse_attr, 88 bytes
ATTR_OUT_HEAD = struct.Struct("<QII")  # attr_valid, attr_valid_nsec, dummy
KSTATFS = struct.Struct("<QQQQQIIII24x")  # fuse_kstatfs, 80 bytes
NOTIFY_INVAL_INODE_OUT = struct.Struct("<Qqq")  # ino, off, len

assert IN_HEADER.size == 40 and OUT_HEADER.size == 16 and INIT_OUT.size == 64
assert ATTR.size == 88 and SETATTR_IN.size == 88 and READ_IN.size == 40 and KSTATFS.size == 80


class FuseDecodeError(errors.DecodeError):
    """A request from /dev/fuse is truncated or malformed (errno EBADMSG)."""


# --- requests -----------------------------------------------------------------------


@dataclass
class Request:
    """One decoded request.  ``args`` holds the opcode's fields by their fuse.h
    names (e.g. ``fh``, ``offset``, ``size``); ``data`` is a WRITE's payload
    (a read-only memoryview into the request when it was ``bytes``, else a copy)."""

    opcode: int
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int
    args: dict[str, Any] = field(default_factory=dict)
    data: bytes | memoryview = b""

    @property
    def name(self) -> str:
        return OP_NAMES.get(self.opcode, f"OP{self.opcode}")


def _fields(st: struct.Struct, names: str, body: memoryview, op: str) -> dict[str, Any]:
    if len(body) < st.size:
        raise FuseDecodeError(f"FUSE {op}: body of {len(body)} bytes, need {st.size}")
    return dict(zip(names.split(), st.unpack_from(body)))


def decode_header(buf: bytes | memoryview) -> tuple[int, int, int, int, int, int, int]:
    """``(len, opcode, unique, nodeid, uid, gid, pid)`` of a request.  Raises
    :class:`FuseDecodeError` if ``buf`` is shorter than the header or its ``len``
    field disagrees with the number of bytes read (one read returns one request)."""
    if len(buf) < IN_HEADER.size:
        raise FuseDecodeError(f"FUSE request of {len(buf)} bytes is shorter than the 40-byte header")
    ln, opcode, unique, nodeid, uid, gid, pid, _ext, _pad = IN_HEADER.unpack_from(buf)
    if ln != len(buf):
        raise FuseDecodeError(f"FUSE request header says {ln} bytes, read {len(buf)}")
    return ln, opcode, unique, nodeid, uid, gid, pid


def decode_request(buf: bytes | memoryview, *, share: bool = False) -> Request:
    """Decode one request (exactly the bytes of one ``read`` from /dev/fuse).

    Bodies of opcodes we do not handle are not parsed (``args`` empty).  Raises
    :class:`FuseDecodeError` on a short/overlong buffer or a body too short for
    its opcode (e.g. a WRITE whose ``size`` disagrees with its payload).  A WRITE's
    payload is a read-only view into ``buf`` when ``buf`` is ``bytes`` or ``share``
    is set (the caller then leaves the buffer alone while the view lives), else a copy."""
    ln, opcode, unique, nodeid, uid, gid, pid = decode_header(buf)
    body = memoryview(buf)[IN_HEADER.size:]
    req = Request(opcode, unique, nodeid, uid, gid, pid)
    name = req.name
    if opcode == FUSE_INIT:
        req.args = _fields(INIT_IN, "major minor max_readahead flags", body, name)
        if len(body) >= INIT_IN.size + 4:
            req.args["flags2"] = INIT_IN_FLAGS2.unpack_from(body, INIT_IN.size)[0]
        else:
            req.args["flags2"] = 0
    elif opcode == FUSE_GETATTR:
        req.args = _fields(GETATTR_IN, "getattr_flags dummy fh", body, name)
    elif opcode == FUSE_SETATTR:
        req.args = _fields(SETATTR_IN, "valid padding fh size lock_owner atime mtime ctime atimensec "
                           "mtimensec ctimensec mode unused4 uid gid unused5", body, name)
    elif opcode == FUSE_ACCESS:
        req.args = _fields(ACCESS_IN, "mask padding", body, name)
    elif opcode == FUSE_OPEN:
        req.args = _fields(OPEN_IN, "flags open_flags", body, name)
    elif opcode == FUSE_READ:
        req.args = _fields(READ_IN, "fh offset size read_flags lock_owner flags padding", body, name)
    elif opcode == FUSE_WRITE:
        req.args = _fields(WRITE_IN, "fh offset size write_flags lock_owner flags padding", body, name)
        payload = body[WRITE_IN.size:]
        if len(payload) != req.args["size"]:
            raise FuseDecodeError(f"FUSE WRITE: size field {req.args['size']}, payload {len(payload)} bytes")
        req.data = payload.toreadonly() if share or isinstance(buf, bytes) else bytes(payload)
    elif opcode == FUSE_FLUSH:
        req.args = _fields(FLUSH_IN, "fh unused padding lock_owner", body, name)
    elif opcode == FUSE_RELEASE:
        req.args = _fields(RELEASE_IN, "fh flags release_flags lock_owner", body, name)
    elif opcode == FUSE_FSYNC:
        req.args = _fields(FSYNC_IN, "fh fsync_flags padding", body, name)
    elif opcode == FUSE_FALLOCATE:
        req.args = _fields(FALLOCATE_IN, "fh offset length mode padding", body, name)
    elif opcode == FUSE_INTERRUPT:
        req.args = _fields(INTERRUPT_IN, "unique", body, name)
    elif opcode == FUSE_FORGET:
        req.args = _fields(FORGET_IN, "nlookup", body, name)
    elif opcode == FUSE_BATCH_FORGET:
        req.args = _fields(BATCH_FORGET_IN, "count dummy", body, name)
        if len(body) < BATCH_FORGET_IN.size + 16 * req.args["count"]:
            raise FuseDecodeError(f"FUSE BATCH_FORGET: {req.args['count']} entries do not fit in {len(body)} bytes")
    elif opcode == FUSE_LOOKUP:
        if not len(body) or body[-1] != 0:
            raise FuseDecodeError("FUSE LOOKUP: name is not NUL-terminated")
        req.args = {"name": bytes(body[:-1])}
    return req


# --- request encoders (the kernel's side; for tests and fuzzing) --------------------


def encode_request(opcode: int, unique: int, body: bytes = b"", *, nodeid: int = FUSE_ROOT_ID,
                   uid: int = 0, gid: int = 0, pid: int = 0) -> bytes:
    """A request as the kernel would write it (tests, fuzzing)."""
    return IN_HEADER.pack(IN_HEADER.size + len(body), opcode, unique, nodeid, uid, gid, pid, 0, 0) + body


def encode_init_in(major: int = FUSE_KERNEL_VERSION, minor: int = FUSE_KERNEL_MINOR_VERSION,
                   max_readahead: int = 128 << 10, flags: int = 0, flags2: int = 0) -> bytes:
    return INIT_IN.pack(major, minor, max_readahead, flags | (FUSE_INIT_EXT if flags2 else 0)) + \
        struct.pack("<I44x", flags2)


# --- reply encoders -----------------------------------------------------------------


def reply(unique: int, *payload: bytes, error: int = 0) -> list[bytes]:
    """Reply buffers: out header (``error`` is a positive errno, sent negated) + payload."""
    n = OUT_HEADER.size + sum(len(p) for p in payload)
    return [OUT_HEADER.pack(n, -error, unique), *payload]


def reply_error(unique: int, err: int) -> list[bytes]:
    return reply(unique, error=err)


def notify_inval_inode(ino: int = FUSE_ROOT_ID, off: int = -1, length: int = 0) -> list[bytes]:
    """FUSE_NOTIFY_INVAL_INODE: the kernel drops its cached attributes of ``ino`` (and,
    with ``off`` >= 0, cached pages from ``off``; ``length`` <= 0 = to the end), so the
    next stat asks us again (fs/fuse/inode.c ``fuse_reverse_inval_inode``)."""
    body = NOTIFY_INVAL_INODE_OUT.pack(ino, off, length)
    return [OUT_HEADER.pack(OUT_HEADER.size + len(body), FUSE_NOTIFY_INVAL_INODE, 0), body]


@dataclass
class Attr:
    """``struct fuse_attr`` fields; times in nanoseconds since the epoch."""

    ino: int
    size: int
    blocks: int
    mode: int
    nlink: int = 1
    uid: int = 0
    gid: int = 0
    rdev: int = 0
    blksize: int = 4096
    time_ns: int = 0


def encode_attr_out(a: Attr, valid_s: int = 3600) -> bytes:
    s, ns = divmod(a.time_ns, 1_000_000_000)
    return ATTR_OUT_HEAD.pack(valid_s, 0, 0) + ATTR.pack(
        a.ino, a.size, a.blocks, s, s, s, ns, ns, ns, a.mode, a.nlink, a.uid, a.gid, a.rdev, a.blksize, 0)


@dataclass
class StatFs:
    """``struct fuse_kstatfs`` fields (block counts in ``bsize`` units)."""

    blocks: int
    bfree: int = 0
    bavail: int = 0
    files: int = 1
    ffree: int = 0
    bsize: int = 4096
    namelen: int = 255
    frsize: int = 4096


def encode_statfs_out(s: StatFs) -> bytes:
    return KSTATFS.pack(s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize, 0)


# --- the session --------------------------------------------------------------------


@dataclass
class InitParams:
    """What INIT negotiated (``flags`` = flags granted to the kernel)."""

    major: int = 0
    minor: int = 0
    max_readahead: int = 0
    flags: int = 0
    max_write: int = 0
    max_pages: int = 0
    max_background: int = 0


class FuseSession:
    """Serves a FUSE connection whose root inode is the regular file ``ops`` describes.

    ``ops`` provides coroutines (see :class:`pyceph.block.fusefile.ImageFile`):
    ``getattr() -> Attr``, ``setattr(valid, size, mode, uid, gid) -> Attr``,
    ``access(mask)``, ``statfs() -> StatFs``, ``open(flags) -> (fh, open_flags)``,
    ``read(fh, offset, size) -> bytes``, ``write(fh, offset, data) -> int``,
    ``flush(fh)``, ``fsync(fh, datasync)``, ``release(fh)``,
    ``fallocate(fh, offset, length, mode)``; failures raise exceptions with a
    positive ``errno`` (EIO when absent).

    ``max_write`` (bytes, a multiple of 4096, <= 256 pages unless the kernel allows
    more) caps READ/WRITE sizes; ``max_background`` caps the kernel's async requests
    in flight (its default is 12; loop's direct I/O is async).  ``reader_bufsize`` is
    what the I/O layer must pass to ``read(2)``.
    """

    def __init__(self, ops: Any, *, max_write: int = 1 << 20, max_background: int = 64,
                 page_size: int = 4096):
        if max_write < 4096 or max_write % page_size:
            raise errors.InvalidArgumentError(f"max_write {max_write} is not a multiple of {page_size}")
        self.ops = ops
        self.page_size = page_size
        self.want_max_write = max_write
        self.max_background = max(1, min(max_background, 0xFFFF))
        self.init: InitParams | None = None
        self.destroyed = False
        self.interrupts: set[int] = set()  # uniques the kernel asked to interrupt (advisory)
        self.counts: dict[str, int] = {}

    @property
    def reader_bufsize(self) -> int:
        """Read buffer for /dev/fuse: header + WRITE header + max_write, >= 8 KiB."""
        return max(FUSE_MIN_READ_BUFFER, IN_HEADER.size + WRITE_IN.size + self.want_max_write + self.page_size)

    async def handle(self, buf: bytes | memoryview) -> list[bytes] | None:
        """Answer one request: the reply buffers, or None for requests without a
        reply (FORGET, BATCH_FORGET, INTERRUPT).  ``parse`` then ``execute``."""
        item = self.parse(buf)
        if isinstance(item, Request):
            return await self.execute(item)
        return item

    def parse(self, buf: bytes | memoryview, *, share: bool = False) -> Request | list[bytes] | None:
        """Decode one request.  Returns the :class:`Request` to :meth:`execute`, or,
        for a body that does not decode, the EIO reply (None if the opcode takes no
        reply); the error is logged.  Only a header that cannot be parsed raises
        :class:`FuseDecodeError` (there is no ``unique`` to answer).  ``share``: see
        :func:`decode_request` (without it nothing of a mutable ``buf`` is kept)."""
        _, opcode, unique, *_ = decode_header(buf)
        name = OP_NAMES.get(opcode, f"OP{opcode}")
        self.counts[name] = self.counts.get(name, 0) + 1
        try:
            return decode_request(buf, share=share)
        except FuseDecodeError as e:
            log.error("%s", e)
            return None if opcode in (FUSE_FORGET, FUSE_BATCH_FORGET, FUSE_INTERRUPT) else reply_error(unique, errno.EIO)

    async def execute(self, req: Request) -> list[bytes] | None:
        """Run a decoded request against ``ops``; its reply buffers (None: no reply).
        Failures become error replies carrying the exception's errno (EIO if none)."""
        try:
            return await self._dispatch(req)
        except Exception as exc:  # noqa: BLE001 - every failure must reach the kernel
            code = getattr(exc, "errno", None)
            if not isinstance(code, int) or code <= 0:
                log.error("FUSE %s failed: %r", req.name, exc)
                code = errno.EIO
            return reply_error(req.unique, code)

    async def _dispatch(self, req: Request) -> list[bytes] | None:
        op, u, a = req.opcode, req.unique, req.args
        if op in (FUSE_FORGET, FUSE_BATCH_FORGET):
            return None  # our only inode is the root, which is never forgotten
        if op == FUSE_INTERRUPT:
            # requests are short-lived cluster I/O; they complete normally (the kernel
            # accepts that: an interrupt is a hint, see fuse.txt "Interrupting")
            self.interrupts.add(a["unique"])
            if len(self.interrupts) > 1024:
                self.interrupts.clear()
            return None
        if op == FUSE_INIT:
            return self._init(req)
        if self.init is None:
            log.error("FUSE %s before INIT", req.name)
            return reply_error(u, errno.EIO)
        if op == FUSE_DESTROY:
            self.destroyed = True
            return reply(u)
        if op == FUSE_LOOKUP:
            return reply_error(u, errno.ENOENT)  # the root is a file: nothing below it
        if op not in (FUSE_GETATTR, FUSE_SETATTR, FUSE_ACCESS, FUSE_OPEN, FUSE_READ, FUSE_WRITE,
                      FUSE_FLUSH, FUSE_FSYNC, FUSE_RELEASE, FUSE_FALLOCATE, FUSE_STATFS):
            return reply_error(u, errno.ENOSYS)
        if req.nodeid != FUSE_ROOT_ID:
            return reply_error(u, errno.ENOENT)
        if op == FUSE_GETATTR:
            return reply(u, encode_attr_out(await self.ops.getattr()))
        if op == FUSE_SETATTR:
            attr = await self.ops.setattr(a["valid"], a["size"], a["mode"], a["uid"], a["gid"])
            return reply(u, encode_attr_out(attr))
        if op == FUSE_ACCESS:
            await self.ops.access(a["mask"])
            return reply(u)
        if op == FUSE_STATFS:
            return reply(u, encode_statfs_out(await self.ops.statfs()))
        if op == FUSE_OPEN:
            fh, flags = await self.ops.open(a["flags"])
            if self.init.minor < 37:
                flags &= ~FOPEN_PARALLEL_DIRECT_WRITES
            return reply(u, OPEN_OUT.pack(fh, flags, 0))
        if op == FUSE_READ:
            data = await self.ops.read(a["fh"], a["offset"], min(a["size"], self.init.max_write))
            return reply(u, data)
        if op == FUSE_WRITE:
            n = await self.ops.write(a["fh"], a["offset"], req.data)
            return reply(u, WRITE_OUT.pack(n, 0))
        if op == FUSE_FLUSH:
            await self.ops.flush(a["fh"])
            return reply(u)
        if op == FUSE_FSYNC:
            await self.ops.fsync(a["fh"], bool(a["fsync_flags"] & FUSE_FSYNC_FDATASYNC))
            return reply(u)
        if op == FUSE_RELEASE:
            await self.ops.release(a["fh"])
            return reply(u)
        assert op == FUSE_FALLOCATE
        await self.ops.fallocate(a["fh"], a["offset"], a["length"], a["mode"])
        return reply(u)

    def _init(self, req: Request) -> list[bytes]:
        a = req.args
        if a["major"] > FUSE_KERNEL_VERSION:
            # the kernel retries INIT with our major (fuse.h: "reply with its major")
            return reply(req.unique, INIT_OUT.pack(FUSE_KERNEL_VERSION, FUSE_KERNEL_MINOR_VERSION,
                                                   0, 0, 0, 0, 0, 0, 0, 0, 0))
        if a["major"] < FUSE_KERNEL_VERSION or a["minor"] < FUSE_MIN_MINOR:
            log.error("FUSE protocol %d.%d is too old (need %d.%d)", a["major"], a["minor"],
                      FUSE_KERNEL_VERSION, FUSE_MIN_MINOR)
            return reply_error(req.unique, errno.EPROTO)
        if self.init is not None:
            return reply_error(req.unique, errno.EPROTO)
        minor = min(a["minor"], FUSE_KERNEL_MINOR_VERSION)
        kflags = a["flags"] | (a["flags2"] << 32 if a["flags"] & FUSE_INIT_EXT else 0)
        want = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_ASYNC_DIO | FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES
        granted = want & kflags
        max_write = self.want_max_write
        max_pages = 0
        if granted & FUSE_MAX_PAGES:
            max_pages = min(max_write // self.page_size, 0xFFFF)
        else:
            max_write = min(max_write, 32 * self.page_size)  # FUSE_DEFAULT_MAX_PAGES_PER_REQ
        self.init = InitParams(FUSE_KERNEL_VERSION, minor, a["max_readahead"], granted, max_write,
                               max_pages, self.max_background)
        log.info("FUSE INIT: kernel %d.%d flags %#x, granted %#x, max_write %d, max_background %d",
                 a["major"], a["minor"], kflags, granted, max_write, self.max_background)
        out = INIT_OUT.pack(FUSE_KERNEL_VERSION, minor, a["max_readahead"], granted & 0xFFFFFFFF,
                            self.max_background, max(1, self.max_background * 3 // 4), max_write,
                            1, max_pages, 0, granted >> 32)
        return reply(req.unique, out)
