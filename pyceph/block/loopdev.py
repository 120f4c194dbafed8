"""Loop devices driven by plain ioctls (no losetup, no kernel module of ours).

A mapping attaches a free ``/dev/loopN`` to the FUSE file that serves an image.
Everything here is synchronous and may block on I/O to the backing file, so the
daemon calls it from a worker thread while its event loop keeps serving FUSE.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import time
from dataclasses import dataclass

from .. import errors

LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_GET_STATUS64 = 0x4C05
LOOP_SET_CAPACITY = 0x4C07
LOOP_SET_DIRECT_IO = 0x4C08
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_ADD = 0x4C80
LOOP_CTL_REMOVE = 0x4C81
LOOP_CTL_GET_FREE = 0x4C82

LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_PARTSCAN = 8
LO_FLAGS_DIRECT_IO = 16

LO_NAME_SIZE = 64
LOOP_MAJOR = 7

# struct loop_info64 (232 bytes) and struct loop_config (304 bytes), linux/loop.h
_INFO64 = struct.Struct("=QQQQQIIII64s64s32sQQ")
_CONFIG_HEAD = struct.Struct("=II")
_CONFIG_TAIL = bytes(8 * 8)
assert _INFO64.size == 232

LOOP_CONTROL = "/dev/loop-control"


@dataclass
class LoopStatus:
    """What LOOP_GET_STATUS64 reports.  ``file_name`` is the 64-byte lo_file_name label."""

    number: int
    flags: int
    file_name: str
    offset: int
    sizelimit: int

    @property
    def read_only(self) -> bool:
        return bool(self.flags & LO_FLAGS_READ_ONLY)

    @property
    def direct_io(self) -> bool:
        return bool(self.flags & LO_FLAGS_DIRECT_IO)

    @property
    def autoclear(self) -> bool:
        return bool(self.flags & LO_FLAGS_AUTOCLEAR)


def _pack_info(flags: int, file_name: str) -> bytes:
    name = file_name.encode("utf-8", "replace")[: LO_NAME_SIZE - 1]
    return _INFO64.pack(0, 0, 0, 0, 0, 0, 0, 0, flags, name, b"", b"", 0, 0)


def device_path(index: int) -> str:
    return f"/dev/loop{index}"


def device_index(path: str) -> int:
    """``/dev/loop7`` -> 7.  Raises :class:`errors.InvalidArgumentError` for other paths."""
    base = os.path.basename(os.path.realpath(path))
    if not base.startswith("loop") or not base[4:].isdigit():
        raise errors.InvalidArgumentError(f"'{path}' is not a loop device")
    return int(base[4:])


def _ensure_node(index: int) -> str:
    # devtmpfs normally creates the node; a private /dev (some containers) may not.
    path = device_path(index)
    if os.path.exists(path):
        return path
    try:
        with open(f"/sys/block/loop{index}/dev") as f:
            major, minor = (int(x) for x in f.read().strip().split(":"))
    except OSError:
        major, minor = LOOP_MAJOR, index
    os.mknod(path, 0o660 | stat.S_IFBLK, os.makedev(major, minor))
    return path


def get_status(fd: int) -> LoopStatus:
    """LOOP_GET_STATUS64 on an open loop device.  Raises OSError(ENXIO) if unattached."""
    raw = fcntl.ioctl(fd, LOOP_GET_STATUS64, bytes(_INFO64.size))
    f = _INFO64.unpack(raw)
    return LoopStatus(
        number=f[5], flags=f[8], file_name=f[9].split(b"\0", 1)[0].decode("utf-8", "replace"),
        offset=f[3], sizelimit=f[4],
    )


def backing_file(index: int) -> str | None:
    """Path of the attached backing file as the kernel reports it, or None if unattached."""
    try:
        with open(f"/sys/block/loop{index}/loop/backing_file") as f:
            return f.read().rstrip("\n")
    except OSError:
        return None


def is_attached(index: int) -> bool:
    return backing_file(index) is not None


def attach(
    backing_fd: int,
    *,
    read_only: bool,
    label: str,
    direct_io: bool = False,
    autoclear: bool = True,
    partscan: bool = False,
    retries: int = 16,
) -> tuple[int, int]:
    """Attach a free loop device to ``backing_fd``.

    Returns ``(index, loop_fd)``; ``loop_fd`` is an open O_RDWR/O_RDONLY fd on the
    device which the caller keeps open (with ``autoclear`` the kernel detaches the
    device once the last opener, e.g. a crashed daemon, goes away).  ``label`` ends up
    in lo_file_name (63 bytes max).  Direct I/O is best effort: check
    :func:`get_status` for what the kernel granted.  Raises OSError from the kernel.
    """
    flags = 0
    if read_only:
        flags |= LO_FLAGS_READ_ONLY
    if autoclear:
        flags |= LO_FLAGS_AUTOCLEAR
    if partscan:
        flags |= LO_FLAGS_PARTSCAN
    ctl = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    try:
        last: OSError | None = None
        for _ in range(retries):
            index = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
            path = _ensure_node(index)
            mode = os.O_RDONLY if read_only else os.O_RDWR
            loop_fd = os.open(path, mode | os.O_CLOEXEC)
            try:
                _configure(loop_fd, backing_fd, flags, label, direct_io)
            except OSError as e:
                os.close(loop_fd)
                if e.errno == errno.EBUSY:  # another process took it first
                    last = e
                    continue
                raise
            return index, loop_fd
        raise last or OSError(errno.EBUSY, "no free loop device")
    finally:
        os.close(ctl)


def _configure(loop_fd: int, backing_fd: int, flags: int, label: str, direct_io: bool) -> None:
    cfg_flags = flags | (LO_FLAGS_DIRECT_IO if direct_io else 0)
    cfg = _CONFIG_HEAD.pack(backing_fd, 0) + _pack_info(cfg_flags, label) + _CONFIG_TAIL
    try:
        fcntl.ioctl(loop_fd, LOOP_CONFIGURE, cfg)
        return
    except OSError as e:
        # EINVAL: the kernel refused direct I/O (alignment); ENOTTY: kernel < 5.8.
        if e.errno == errno.EINVAL and direct_io:
            cfg = _CONFIG_HEAD.pack(backing_fd, 0) + _pack_info(flags, label) + _CONFIG_TAIL
            fcntl.ioctl(loop_fd, LOOP_CONFIGURE, cfg)
            return
        if e.errno not in (errno.ENOTTY, errno.EINVAL):
            raise
    fcntl.ioctl(loop_fd, LOOP_SET_FD, backing_fd)
    try:
        fcntl.ioctl(loop_fd, LOOP_SET_STATUS64, _pack_info(flags & ~LO_FLAGS_READ_ONLY, label))
        if direct_io:
            try:
                fcntl.ioctl(loop_fd, LOOP_SET_DIRECT_IO, 1)
            except OSError:
                pass
    except BaseException:
        fcntl.ioctl(loop_fd, LOOP_CLR_FD, 0)
        raise


def set_capacity(loop_fd: int) -> None:
    """LOOP_SET_CAPACITY: re-read the backing file's size (the device grows or shrinks)."""
    fcntl.ioctl(loop_fd, LOOP_SET_CAPACITY, 0)


def detach(loop_fd: int) -> None:
    """LOOP_CLR_FD.  If others hold the device open the kernel defers the detach until
    their last close (ENXIO: already detached, ignored)."""
    try:
        fcntl.ioctl(loop_fd, LOOP_CLR_FD, 0)
    except OSError as e:
        if e.errno != errno.ENXIO:
            raise


def detach_index(index: int) -> None:
    """Open ``/dev/loop<index>`` and detach it (used to clean up after a dead daemon)."""
    try:
        fd = os.open(device_path(index), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        detach(fd)
    finally:
        os.close(fd)


def wait_detached(index: int, timeout: float) -> bool:
    """Poll sysfs until ``loop<index>`` has no backing file; True if it happened in time."""
    deadline = time.monotonic() + timeout
    while True:
        if not is_attached(index):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def queue_limit(index: int, name: str) -> int | None:
    """``/sys/block/loop<index>/queue/<name>`` as an int (e.g. discard_max_bytes), or None."""
    try:
        with open(f"/sys/block/loop{index}/queue/{name}") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def discard_capped(index: int) -> bool:
    """True if ``loop<index>`` could discard (discard_max_hw_bytes > 0) but its
    user cap (sysfs queue/discard_max_bytes, written by someone) is 0.  That cap
    belongs to the queue, survives detach/attach, and cannot be raised again once
    discard is off (the kernel then reports granularity 0 and rejects any nonzero
    value), so only re-creating the device clears it (:func:`recreate`)."""
    hw = queue_limit(index, "discard_max_hw_bytes")
    return bool(hw) and queue_limit(index, "discard_max_bytes") == 0


def recreate(index: int) -> None:
    """LOOP_CTL_REMOVE then LOOP_CTL_ADD of ``loop<index>``: a fresh queue with
    default limits.  The device must be detached and closed by everyone.  Raises
    OSError (EBUSY if someone holds it)."""
    ctl = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(ctl, LOOP_CTL_REMOVE, index)
        fcntl.ioctl(ctl, LOOP_CTL_ADD, index)
    finally:
        os.close(ctl)


def _devnums(index: int) -> set[int]:
    """dev_t of the whole loop device and its partitions."""
    out: set[int] = set()
    base = f"/sys/block/loop{index}"
    try:
        names = [base] + [os.path.join(base, n) for n in os.listdir(base) if n.startswith(f"loop{index}p")]
    except OSError:
        return out
    for d in names:
        try:
            with open(os.path.join(d, "dev")) as f:
                ma, mi = f.read().strip().split(":")
            out.add(os.makedev(int(ma), int(mi)))
        except OSError:
            pass
    return out


def busy_reason(index: int, ignore_pids: frozenset[int] = frozenset()) -> str | None:
    """Why ``/dev/loop<index>`` cannot be unmapped now, or None if it is idle.

    Checks sysfs holders (dm, md), mounts of the device or its partitions, an
    exclusive open (mounted file systems and other exclusive holders), and other
    processes holding it open (``/proc/*/fd``; ``ignore_pids`` are skipped, e.g. the
    mapping daemon itself)."""
    base = f"/sys/block/loop{index}"
    try:
        holders = os.listdir(os.path.join(base, "holders"))
    except OSError:
        holders = []
    if holders:
        return "held by " + ",".join(sorted(holders))
    devs = _devnums(index)
    mm = {f"{os.major(d)}:{os.minor(d)}" for d in devs}
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 4 and parts[2] in mm:
                    return f"mounted on {parts[4]}"
    except OSError:
        pass
    path = device_path(index)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.EBUSY:
            return "in use (exclusively opened, e.g. mounted)"
    else:
        os.close(fd)
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) in ignore_pids:
            continue
        fddir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fddir)
        except OSError:
            continue
        for fd_name in fds:
            try:
                st = os.stat(os.path.join(fddir, fd_name))
            except OSError:
                continue
            if stat.S_ISBLK(st.st_mode) and st.st_rdev in devs:
                return f"open by pid {pid}"
    return None
