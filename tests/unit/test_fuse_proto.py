"""Our FUSE server's protocol core (pyceph.block.fuseproto) and its asyncio layer.

Requests are built the way the kernel writes them (include/uapi/linux/fuse.h);
replies are decoded field by field.  No kernel, no /dev/fuse: the asyncio layer
is driven through a SOCK_SEQPACKET socketpair, which keeps message boundaries
like /dev/fuse does (one read = one request).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyceph import errors
from pyceph.block import fuseproto as fp
from pyceph.block.fusefile import FuseError, ImageFile
from pyceph.block.fuseserver import FuseServer

MiB = 1 << 20
ALL_KERNEL_FLAGS = (fp.FUSE_ASYNC_READ | fp.FUSE_BIG_WRITES | fp.FUSE_ASYNC_DIO | fp.FUSE_MAX_PAGES
                    | fp.FUSE_PARALLEL_DIROPS | fp.FUSE_WRITEBACK_CACHE | fp.FUSE_DONT_MASK)


class MemImage:
    """BlockImage in memory; records discard/write_zeroes calls."""

    def __init__(self, size: int = 1 * MiB, read_only: bool = False, discard: bool = True):
        self.buf = bytearray(os.urandom(size))
        self.size = size
        self.read_only = read_only
        self.calls: list[tuple] = []
        self.delay = 0.0
        if not discard:
            self.discard = self.write_zeroes = None

    async def read(self, offset, length):
        self.calls.append(("read", offset, length))
        if self.delay:
            await asyncio.sleep(self.delay)
        return bytes(self.buf[offset:offset + length])

    async def write(self, offset, data):
        self.calls.append(("write", offset, len(data)))
        if self.delay:
            await asyncio.sleep(self.delay)
        self.buf[offset:offset + len(data)] = data
        return len(data)

    async def flush(self):
        self.calls.append(("flush",))

    async def discard(self, offset, length):
        self.calls.append(("discard", offset, length))
        self.buf[offset:offset + length] = bytes(length)

    async def write_zeroes(self, offset, length):
        self.calls.append(("write_zeroes", offset, length))
        self.buf[offset:offset + length] = bytes(length)

    async def close(self):
        pass


def run(coro):
    return asyncio.run(coro)


def decode_reply(out: list[bytes] | None) -> tuple[int, int, bytes]:
    """-> (error (positive errno or 0), unique, body); checks the length field."""
    assert out is not None
    raw = b"".join(out)
    ln, err, unique = fp.OUT_HEADER.unpack_from(raw)
    assert ln == len(raw)
    assert err <= 0
    return -err, unique, raw[fp.OUT_HEADER.size:]


def session(image=None, *, minor=fp.FUSE_KERNEL_MINOR_VERSION, flags=ALL_KERNEL_FLAGS, init=True, **kw):
    image = image or MemImage()
    ops = ImageFile(image, read_only=kw.pop("read_only", image.read_only), direct_io=kw.pop("direct_io", True),
                    discard=kw.pop("discard", True))
    s = fp.FuseSession(ops, **kw)
    s.image = image
    if init:
        err, _, _ = decode_reply(run(s.handle(fp.encode_request(fp.FUSE_INIT, 1, fp.encode_init_in(minor=minor,
                                                                                                      flags=flags)))))
        assert err == 0
    return s


def call(s, opcode, body=b"", unique=10, **kw):
    return decode_reply(run(s.handle(fp.encode_request(opcode, unique, body, **kw))))


def init_out(body: bytes) -> dict:
    names = ("major minor max_readahead flags max_background congestion_threshold max_write time_gran "
             "max_pages map_alignment flags2").split()
    return dict(zip(names, fp.INIT_OUT.unpack(body)))


# --- INIT -----------------------------------------------------------------------------


def test_init_negotiates_flags_and_sizes():
    s = session(init=False, max_background=64)
    err, unique, body = call(s, fp.FUSE_INIT, fp.encode_init_in(minor=45, max_readahead=131072, flags=ALL_KERNEL_FLAGS),
                             unique=2)
    assert (err, unique, len(body)) == (0, 2, 64)
    o = init_out(body)
    assert (o["major"], o["minor"]) == (7, fp.FUSE_KERNEL_MINOR_VERSION)  # never above what we know
    want = fp.FUSE_ASYNC_READ | fp.FUSE_BIG_WRITES | fp.FUSE_ASYNC_DIO | fp.FUSE_MAX_PAGES | fp.FUSE_PARALLEL_DIROPS
    assert o["flags"] == want  # no writeback cache: a write is acked only once the image has it
    assert (o["max_write"], o["max_pages"]) == (MiB, 256)
    assert (o["max_background"], o["congestion_threshold"]) == (64, 48)
    assert o["max_readahead"] == 131072
    assert s.init.max_write == MiB and s.reader_bufsize >= MiB + 80


def test_init_ext_flags2_is_read_and_old_kernels_get_small_writes():
    s = session(init=False)
    err, _, body = call(s, fp.FUSE_INIT, fp.encode_init_in(minor=38, flags=fp.FUSE_ASYNC_READ, flags2=1 << 3))
    assert err == 0 and init_out(body)["flags"] == fp.FUSE_ASYNC_READ
    assert init_out(body)["max_write"] == 128 * 1024 and init_out(body)["max_pages"] == 0  # no FUSE_MAX_PAGES
    # a 16-byte fuse_init_in (kernels before 7.36) decodes too
    s = session(init=False)
    err, _, body = call(s, fp.FUSE_INIT, fp.INIT_IN.pack(7, 31, 65536, ALL_KERNEL_FLAGS))
    assert err == 0 and init_out(body)["minor"] == 31 and init_out(body)["max_write"] == MiB


def test_init_major_mismatch_and_old_minor():
    s = session(init=False)
    err, _, body = call(s, fp.FUSE_INIT, fp.encode_init_in(major=8, minor=0))
    assert err == 0 and init_out(body)["major"] == 7 and s.init is None  # kernel retries with 7
    err, _, _ = call(s, fp.FUSE_INIT, fp.encode_init_in(minor=22))
    assert err == errno.EPROTO and s.init is None
    err, _, _ = call(s, fp.FUSE_INIT, fp.encode_init_in(minor=23))
    assert err == 0 and s.init.minor == 23
    err, _, _ = call(s, fp.FUSE_INIT, fp.encode_init_in())
    assert err == errno.EPROTO  # only one INIT per connection


def test_requests_before_init_fail():
    s = session(init=False)
    assert call(s, fp.FUSE_GETATTR, fp.GETATTR_IN.pack(0, 0, 0))[0] == errno.EIO


def test_max_write_must_be_page_multiple():
    with pytest.raises(errors.InvalidArgumentError):
        fp.FuseSession(object(), max_write=1000)


# --- metadata -------------------------------------------------------------------------


def attr_of(body: bytes) -> dict:
    valid, _, _ = fp.ATTR_OUT_HEAD.unpack_from(body)
    names = "ino size blocks atime mtime ctime atimensec mtimensec ctimensec mode nlink uid gid rdev blksize flags"
    return dict(zip(names.split(), fp.ATTR.unpack_from(body, fp.ATTR_OUT_HEAD.size)), valid=valid)


def test_getattr_setattr_access_statfs():
    s = session(MemImage(3 * MiB + 512))
    err, unique, body = call(s, fp.FUSE_GETATTR, fp.GETATTR_IN.pack(0, 0, 0), unique=44)
    a = attr_of(body)
    assert (err, unique, len(body)) == (0, 44, 104)
    assert a["ino"] == 1 and a["size"] == 3 * MiB + 512 and a["blocks"] == (3 * MiB + 512) // 512
    assert stat.S_ISREG(a["mode"]) and a["mode"] & 0o777 == 0o600 and a["nlink"] == 1 and a["valid"] > 0
    assert call(s, fp.FUSE_GETATTR, fp.GETATTR_IN.pack(0, 0, 0), nodeid=7)[0] == errno.ENOENT

    def setattr(valid, size=0, mode=0):
        return fp.SETATTR_IN.pack(valid, 0, 0, size, 0, 0, 0, 0, 0, 0, 0, mode, 0, 0, 0, 0)

    assert call(s, fp.FUSE_SETATTR, setattr(fp.FATTR_SIZE, size=MiB))[0] == errno.EPERM  # no resize
    err, _, body = call(s, fp.FUSE_SETATTR, setattr(fp.FATTR_SIZE, size=3 * MiB + 512))
    assert err == 0 and attr_of(body)["size"] == 3 * MiB + 512
    assert call(s, fp.FUSE_ACCESS, fp.ACCESS_IN.pack(os.W_OK, 0))[0] == 0

    err, _, body = call(s, fp.FUSE_STATFS)
    blocks, bfree, bavail, files, ffree, bsize, namelen, frsize, _ = fp.KSTATFS.unpack(body)
    assert err == 0 and len(body) == 80
    assert (bsize, frsize, blocks, files, namelen) == (4096, 4096, (3 * MiB + 512 + 4095) // 4096, 1, 255)


def test_read_only_refuses_writes_and_write_opens():
    s = session(MemImage(read_only=True))
    a = attr_of(call(s, fp.FUSE_GETATTR, fp.GETATTR_IN.pack(0, 0, 0))[2])
    assert a["mode"] & 0o777 == 0o400
    assert call(s, fp.FUSE_OPEN, fp.OPEN_IN.pack(os.O_RDWR, 0))[0] == errno.EROFS
    assert call(s, fp.FUSE_ACCESS, fp.ACCESS_IN.pack(os.W_OK, 0))[0] == errno.EROFS
    assert call(s, fp.FUSE_OPEN, fp.OPEN_IN.pack(os.O_RDONLY, 0))[0] == 0
    body = fp.WRITE_IN.pack(1, 0, 3, 0, 0, 0, 0) + b"abc"
    assert call(s, fp.FUSE_WRITE, body)[0] == errno.EROFS
    assert call(s, fp.FUSE_FALLOCATE, fp.FALLOCATE_IN.pack(1, 0, 4096, 3, 0))[0] == errno.EROFS
    assert call(s, fp.FUSE_FSYNC, fp.FSYNC_IN.pack(1, 0, 0))[0] == 0
    assert s.image.calls == []  # nothing reached the image


# --- data -----------------------------------------------------------------------------


def test_open_flags_follow_protocol_minor_and_direct_io():
    err, _, body = call(session(), fp.FUSE_OPEN, fp.OPEN_IN.pack(os.O_RDWR, 0))
    fh, flags, _ = fp.OPEN_OUT.unpack(body)
    assert err == 0 and fh >= 1 and flags == fp.FOPEN_DIRECT_IO | fp.FOPEN_PARALLEL_DIRECT_WRITES
    _, _, body = call(session(minor=36), fp.FUSE_OPEN, fp.OPEN_IN.pack(os.O_RDWR, 0))
    assert fp.OPEN_OUT.unpack(body)[1] == fp.FOPEN_DIRECT_IO  # 7.37 introduced parallel direct writes
    _, _, body = call(session(direct_io=False), fp.FUSE_OPEN, fp.OPEN_IN.pack(os.O_RDWR, 0))
    assert fp.OPEN_OUT.unpack(body)[1] == 0
    assert call(session(), fp.FUSE_OPEN, fp.OPEN_IN.pack(os.O_RDWR | os.O_TRUNC, 0))[0] == errno.EPERM


def test_read_write_roundtrip_and_limits():
    s = session(MemImage(2 * MiB))
    data = os.urandom(MiB)
    err, unique, body = call(s, fp.FUSE_WRITE, fp.WRITE_IN.pack(1, 4096, len(data), 0, 0, 0, 0) + data, unique=8)
    assert (err, unique, fp.WRITE_OUT.unpack(body)[0]) == (0, 8, MiB)
    assert bytes(s.image.buf[4096:4096 + MiB]) == data
    err, _, body = call(s, fp.FUSE_READ, fp.READ_IN.pack(1, 4096, MiB, 0, 0, 0, 0))
    assert err == 0 and body == data
    err, _, body = call(s, fp.FUSE_READ, fp.READ_IN.pack(1, 2 * MiB - 10, 4096, 0, 0, 0, 0))
    assert err == 0 and len(body) == 10  # clipped at the end
    assert call(s, fp.FUSE_READ, fp.READ_IN.pack(1, 2 * MiB, 4096, 0, 0, 0, 0))[2] == b""
    # a block device cannot grow
    assert call(s, fp.FUSE_WRITE, fp.WRITE_IN.pack(1, 2 * MiB - 1, 2, 0, 0, 0, 0) + b"xy")[0] == errno.ENOSPC
    # payload size disagreeing with the size field: EIO, nothing written
    before = list(s.image.calls)
    assert call(s, fp.FUSE_WRITE, fp.WRITE_IN.pack(1, 0, 5, 0, 0, 0, 0) + b"abc")[0] == errno.EIO
    assert s.image.calls == before


def test_write_payload_is_zero_copy_from_bytes():
    req = fp.decode_request(fp.encode_request(fp.FUSE_WRITE, 4, fp.WRITE_IN.pack(1, 0, 3, 0, 0, 0, 0) + b"abc"))
    assert isinstance(req.data, memoryview) and req.data.readonly and bytes(req.data) == b"abc"
    ba = bytearray(fp.encode_request(fp.FUSE_WRITE, 4, fp.WRITE_IN.pack(1, 0, 3, 0, 0, 0, 0) + b"abc"))
    req = fp.decode_request(memoryview(ba))
    ba[-3:] = b"zzz"  # the caller reuses its buffer: the request kept a copy
    assert req.data == b"abc"


def test_flush_fsync_release():
    s = session()
    assert call(s, fp.FUSE_FLUSH, fp.FLUSH_IN.pack(1, 0, 0, 0))[0] == 0
    assert call(s, fp.FUSE_FSYNC, fp.FSYNC_IN.pack(1, fp.FUSE_FSYNC_FDATASYNC, 0))[0] == 0
    assert s.image.calls == [("flush",), ("flush",)]
    _, _, body = call(s, fp.FUSE_OPEN, fp.OPEN_IN.pack(os.O_RDWR, 0))
    fh = fp.OPEN_OUT.unpack(body)[0]
    assert s.ops.open_handles == 1
    err, _, body = call(s, fp.FUSE_RELEASE, fp.RELEASE_IN.pack(fh, 0, 0, 0))
    assert (err, body, s.ops.open_handles) == (0, b"", 0)


PUNCH = fp.FALLOC_FL_PUNCH_HOLE | fp.FALLOC_FL_KEEP_SIZE


def test_fallocate_maps_to_discard_and_write_zeroes():
    s = session(MemImage(MiB))
    falloc = lambda off, n, mode: call(s, fp.FUSE_FALLOCATE, fp.FALLOCATE_IN.pack(1, off, n, mode, 0))[0]  # noqa: E731
    assert falloc(4096, 8192, PUNCH) == 0
    assert falloc(65536, 4096, fp.FALLOC_FL_ZERO_RANGE | fp.FALLOC_FL_KEEP_SIZE) == 0
    assert falloc(131072, 4096, fp.FALLOC_FL_ZERO_RANGE) == 0
    assert falloc(MiB - 4096, 65536, PUNCH) == 0  # clipped to the image
    assert falloc(MiB, 4096, PUNCH) == 0  # past the end: nothing to do
    assert s.image.calls == [("discard", 4096, 8192), ("write_zeroes", 65536, 4096),
                             ("write_zeroes", 131072, 4096), ("discard", MiB - 4096, 4096)]
    assert bytes(s.image.buf[4096:12288]) == bytes(8192)
    # plain preallocation, punch without KEEP_SIZE, collapse/insert range: not for a block device
    for mode in (0, fp.FALLOC_FL_KEEP_SIZE, fp.FALLOC_FL_PUNCH_HOLE, 0x08, 0x20):
        assert falloc(0, 4096, mode) == errno.EOPNOTSUPP, mode
    assert s.ops.stats["discard"] == 2 and s.ops.stats["bytes_discarded"] == 8192 + 4096


def test_notrim_and_images_without_discard_refuse_fallocate():
    s = session(discard=False)
    assert call(s, fp.FUSE_FALLOCATE, fp.FALLOCATE_IN.pack(1, 0, 4096, PUNCH, 0))[0] == errno.EOPNOTSUPP
    # statfs fails so that the loop driver advertises no discard at all
    assert call(s, fp.FUSE_STATFS)[0] == errno.EOPNOTSUPP
    assert s.image.calls == []
    s = session(MemImage(discard=False))
    for mode in (PUNCH, fp.FALLOC_FL_ZERO_RANGE):
        assert call(s, fp.FUSE_FALLOCATE, fp.FALLOCATE_IN.pack(1, 0, 4096, mode, 0))[0] == errno.EOPNOTSUPP
    assert call(s, fp.FUSE_STATFS)[0] == 0


def test_fallocate_on_a_wrapper_whose_image_lacks_discard_is_eopnotsupp():
    class Wrapper(MemImage):
        async def discard(self, offset, length):
            return await self.image.discard(offset, length)  # no .image: AttributeError

    s = session(Wrapper())
    assert call(s, fp.FUSE_FALLOCATE, fp.FALLOCATE_IN.pack(1, 0, 4096, PUNCH, 0))[0] == errno.EOPNOTSUPP


@pytest.mark.parametrize("exc, code", [
    (errors.TimedOut("slow"), errno.ETIMEDOUT),
    (errors.Blocklisted("bl"), 108),
    (errors.NoSpace("full"), errno.ENOSPC),
    (RuntimeError("bug"), errno.EIO),
    (FuseError(errno.EAGAIN), errno.EAGAIN),
])
def test_image_errors_become_error_replies(exc, code):
    s = session()

    async def boom(*a):
        raise exc

    s.image.read = s.image.write = s.image.flush = boom
    s.ops.image = s.image
    assert call(s, fp.FUSE_READ, fp.READ_IN.pack(1, 0, 4096, 0, 0, 0, 0))[0] == code
    assert call(s, fp.FUSE_WRITE, fp.WRITE_IN.pack(1, 0, 1, 0, 0, 0, 0) + b"x")[0] == code
    assert call(s, fp.FUSE_FSYNC, fp.FSYNC_IN.pack(1, 0, 0))[0] == code


# --- requests without replies, unknown opcodes, malformed input ------------------------


def test_forget_interrupt_destroy_lookup():
    s = session()
    assert run(s.handle(fp.encode_request(fp.FUSE_FORGET, 5, fp.FORGET_IN.pack(1)))) is None
    assert run(s.handle(fp.encode_request(fp.FUSE_BATCH_FORGET, 6, fp.BATCH_FORGET_IN.pack(2, 0) + bytes(32)))) is None
    assert run(s.handle(fp.encode_request(fp.FUSE_INTERRUPT, 7 | fp.FUSE_INT_REQ_BIT,
                                          fp.INTERRUPT_IN.pack(12)))) is None
    assert 12 in s.interrupts
    assert call(s, fp.FUSE_LOOKUP, b"name\0")[0] == errno.ENOENT
    err, _, body = call(s, fp.FUSE_DESTROY)
    assert (err, body, s.destroyed) == (0, b"", True)


@pytest.mark.parametrize("opcode", sorted(set(range(1, 52)) - {1, 2, 3, 4, 14, 15, 16, 17, 18, 20, 25, 26, 34, 36,
                                                              38, 42, 43}) + [4096, 99999, 2 ** 32 - 1])
def test_unknown_or_unhandled_opcodes_get_enosys(opcode):
    err, unique, body = call(session(), opcode, b"\x00" * 64, unique=77)
    assert (err, unique, body) == (errno.ENOSYS, 77, b"")


def test_truncated_headers_raise_decode_error():
    s = session()
    good = fp.encode_request(fp.FUSE_GETATTR, 3, fp.GETATTR_IN.pack(0, 0, 0))
    for bad in (b"", good[:39], good[:-1], good + b"\0"):
        with pytest.raises(fp.FuseDecodeError):
            run(s.handle(bad))
    assert isinstance(fp.FuseDecodeError("x"), errors.DecodeError)


@pytest.mark.parametrize("opcode, need", [
    (fp.FUSE_INIT, 16), (fp.FUSE_GETATTR, 16), (fp.FUSE_SETATTR, 88), (fp.FUSE_ACCESS, 8),
    (fp.FUSE_OPEN, 8), (fp.FUSE_READ, 40), (fp.FUSE_WRITE, 40), (fp.FUSE_FLUSH, 24),
    (fp.FUSE_RELEASE, 24), (fp.FUSE_FSYNC, 16), (fp.FUSE_FALLOCATE, 32),
])
def test_short_bodies_get_eio_with_the_right_unique(opcode, need):
    s = session()
    err, unique, _ = call(s, opcode, b"\x00" * (need - 1), unique=1234)
    assert (err, unique) == (errno.EIO, 1234)
    with pytest.raises(fp.FuseDecodeError, match=fp.OP_NAMES[opcode]):
        fp.decode_request(fp.encode_request(opcode, 1, b"\x00" * (need - 1)))


def test_short_bodies_of_requests_without_reply_are_dropped():
    s = session()
    for opcode in (fp.FUSE_FORGET, fp.FUSE_INTERRUPT, fp.FUSE_BATCH_FORGET):
        assert run(s.handle(fp.encode_request(opcode, 9, b"\x01"))) is None
    # a batch claiming more entries than it carries
    assert run(s.handle(fp.encode_request(fp.FUSE_BATCH_FORGET, 9, fp.BATCH_FORGET_IN.pack(1000, 0)))) is None
    assert call(s, fp.FUSE_LOOKUP, b"no-nul")[0] == errno.EIO


VALID = [
    fp.encode_request(fp.FUSE_GETATTR, 2, fp.GETATTR_IN.pack(0, 0, 0)),
    fp.encode_request(fp.FUSE_READ, 4, fp.READ_IN.pack(1, 4096, 8192, 0, 0, 0, 0)),
    fp.encode_request(fp.FUSE_WRITE, 6, fp.WRITE_IN.pack(1, 512, 4, 0, 0, 0, 0) + b"data"),
    fp.encode_request(fp.FUSE_FALLOCATE, 8, fp.FALLOCATE_IN.pack(1, 0, 4096, PUNCH, 0)),
    fp.encode_request(fp.FUSE_SETATTR, 10, bytes(88)),
    fp.encode_request(fp.FUSE_INIT, 12, fp.encode_init_in()),
    fp.encode_request(fp.FUSE_STATFS, 14),
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
       st.integers(-8, 8))
def test_fuzz_mutated_requests_never_crash(req, flips, cut):
    buf = bytearray(req)
    for pos, val in flips:
        if pos < len(buf):
            buf[pos] = val
    if cut < 0:
        buf = buf[:cut]
    elif cut > 0:
        buf += bytes(cut)
    s = session(MemImage(64 * 1024))
    try:
        out = run(s.handle(bytes(buf)))
    except fp.FuseDecodeError:
        return
    if out is not None:
        err, unique, _ = decode_reply(out)
        assert unique == fp.IN_HEADER.unpack_from(buf)[2]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_never_crash(data):
    s = session(MemImage(64 * 1024))
    try:
        out = run(s.handle(data))
    except fp.FuseDecodeError:
        return
    if out is not None:
        decode_reply(out)


# --- the asyncio layer over a message-preserving socket ---------------------------------


async def _serve_over_socketpair(s: fp.FuseSession, requests: list[bytes], max_tasks: int = 64):
    kernel, daemon = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # /dev/fuse never refuses a reply; a socket may when full: make room
    for sk in (daemon, kernel):
        sk.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MiB)
        sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MiB)
    kernel.setblocking(False)
    daemon.setblocking(False)
    server = FuseServer(s, daemon.fileno(), max_tasks=max_tasks)
    serving = asyncio.ensure_future(server.serve())
    loop = asyncio.get_running_loop()
    for r in requests:
        await loop.sock_sendall(kernel, r)
    replies = {}
    want = sum(1 for r in requests if len(r) >= 40 and fp.IN_HEADER.unpack_from(r)[0] == len(r)
               and fp.IN_HEADER.unpack_from(r)[1] not in (2, 36, 42))
    while len(replies) < want:
        raw = await asyncio.wait_for(loop.sock_recv(kernel, 4 * MiB), 10)
        err, unique, body = decode_reply([raw])
        replies[unique] = (err, body)
    kernel.close()  # EOF ends serve()
    await asyncio.wait_for(serving, 10)
    daemon.close()
    return server, replies


def test_server_runs_requests_concurrently_and_caps_them():
    img = MemImage(4 * MiB)
    img.delay = 0.2
    s = session(img)
    reqs = [fp.encode_request(fp.FUSE_READ, 100 + 2 * i, fp.READ_IN.pack(1, i * 16384, 16384, 0, 0, 0, 0))
            for i in range(16)]
    reqs.append(b"\x01\x02")  # malformed: dropped, the server keeps going
    reqs.append(fp.encode_request(fp.FUSE_FORGET, 999, fp.FORGET_IN.pack(1)))

    async def go():
        t0 = asyncio.get_running_loop().time()
        server, replies = await _serve_over_socketpair(s, reqs, max_tasks=8)
        return server, replies, asyncio.get_running_loop().time() - t0

    server, replies, took = run(go())
    assert sorted(replies) == [100 + 2 * i for i in range(16)]
    for i in range(16):
        assert replies[100 + 2 * i] == (0, bytes(img.buf[i * 16384:(i + 1) * 16384]))
    assert server.stats["max_tasks_seen"] == 8  # capped
    assert 0.35 < took < 1.5  # two waves of 8 x 0.2 s, not 16 x 0.2 s
    assert server.stats["decode_errors"] == 1 and server.stats["replies"] == 16


def test_server_answers_init_and_errors_inline():
    s = session(init=False)
    reqs = [fp.encode_request(fp.FUSE_INIT, 2, fp.encode_init_in(flags=ALL_KERNEL_FLAGS)),
            fp.encode_request(fp.FUSE_GETATTR, 4, fp.GETATTR_IN.pack(0, 0, 0)),
            fp.encode_request(fp.FUSE_READ, 6, b"short")]
    _, replies = run(_serve_over_socketpair(s, reqs))
    assert replies[2][0] == 0 and init_out(replies[2][1])["max_write"] == MiB
    assert replies[4][0] == 0 and attr_of(replies[4][1])["size"] == MiB
    assert replies[6] == (errno.EIO, b"")


def test_reply_struct_sizes_match_fuse_h():
    assert struct.calcsize("<IIQQIIIHH") == 40
    assert (fp.OUT_HEADER.size, fp.INIT_OUT.size, fp.ATTR.size, fp.KSTATFS.size) == (16, 64, 88, 80)
    assert (fp.READ_IN.size, fp.WRITE_IN.size, fp.FALLOCATE_IN.size, fp.SETATTR_IN.size) == (40, 40, 32, 88)
    assert (fp.OPEN_OUT.size, fp.WRITE_OUT.size, fp.FLUSH_IN.size, fp.RELEASE_IN.size) == (16, 8, 24, 24)
    assert len(fp.encode_init_in()) == 64


def test_server_never_reuses_a_read_buffer_the_image_still_holds():
    """WRITE payloads are zero-copy views of pooled read buffers: a buffer goes back to
    the pool only when no view of it is alive, so data an image keeps stays intact."""
    kept = []

    class Keeper(MemImage):
        async def write(self, offset, data):
            if offset == 0:
                kept.append(data)  # e.g. a write the image retries later
            return await super().write(offset, data)

    s = session(Keeper(MiB))
    first = os.urandom(8192)
    reqs = [fp.encode_request(fp.FUSE_WRITE, 2, fp.WRITE_IN.pack(1, 0, len(first), 0, 0, 0, 0) + first)]
    reqs += [fp.encode_request(fp.FUSE_WRITE, 4 + 2 * i, fp.WRITE_IN.pack(1, 32768 * (i + 1), 8192, 0, 0, 0, 0)
                               + bytes([i]) * 8192) for i in range(20)]
    reqs += [fp.encode_request(fp.FUSE_READ, 100 + 2 * i, fp.READ_IN.pack(1, 0, 4096, 0, 0, 0, 0))
             for i in range(20)]
    server, replies = run(_serve_over_socketpair(s, reqs, max_tasks=1))  # one at a time: max reuse
    assert all(err == 0 for err, _ in replies.values()) and len(replies) == 41
    assert kept[0].readonly and bytes(kept[0]) == first
    assert 1 <= len(server._pool) <= server.POOL_MAX


def test_notify_inval_inode_encoding():
    raw = b"".join(fp.notify_inval_inode())
    ln, code, unique = fp.OUT_HEADER.unpack_from(raw)
    assert (ln, code, unique) == (40, fp.FUSE_NOTIFY_INVAL_INODE, 0)  # unique 0 = notification
    assert fp.NOTIFY_INVAL_INODE_OUT.unpack_from(raw, 16) == (1, -1, 0)  # root, attributes only
