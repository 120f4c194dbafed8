"""The mapping daemon: one process per mapped image, like rbd-nbd's.

It opens the image, serves it as one FUSE file mounted at a private mount point
(our own FUSE server, :mod:`pyceph.block.fuseproto`: pyfuse3 has no fallocate
handler, which discard needs), attaches a loop device to that file, records the
mapping, and reports
``ready <device>`` (or ``error <errno> <ErrorClass> <message>``) on the pipe fd its
parent gave it.  On SIGTERM/SIGINT or an ``unmap`` request on its control socket it
detaches the loop device, flushes and closes the image, unmounts, and exits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import resource
import signal
import sys
import time
import uuid
from typing import Any, Awaitable, Callable

from .. import errors
from . import ctlproto, ctlserver, fuseserver, loopdev, mapopts, registry
from . import fuseproto
from .fuseproto import FuseSession
from .fusefile import BlockImage, ImageFile, errno_of
from . import devattrs  # the device model of /sys/bus/rbd

#: linux/fs.h _IOR(0x12, 114, size_t): a block device's size in bytes
BLKGETSIZE64 = 0x80081272

log = logging.getLogger("pyceph.block.daemon")

READY_FD_ENV = "PYCEPH_MAP_READY_FD"
SPEC_ENV = "PYCEPH_MAP_SPEC"  # the first daemons' spec channel; refused if it holds a secret
SPEC_FD_ENV = "PYCEPH_MAP_SPEC_FD"  # fd of a private pipe carrying an OP_SPEC control message
LOG_ENV = "PYCEPH_MAP_LOG"
#: /proc/<pid>/comm of a map daemon (prctl PR_SET_NAME; registry checks it before a signal)
DAEMON_COMM = registry.DAEMON_COMM
PR_SET_NAME = 15  # linux/prctl.h

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 2
LOOP_MAJOR = 7  # block major of /dev/loopN (Documentation/admin-guide/devices.txt)

_TRUE = {"1", "true", "yes", "on", ""}


def opt_bool(options: dict[str, Any], key: str, default: bool) -> bool:
    """Read a boolean option; CLI strings ("0", "false", "no", "off") are accepted."""
    v = options.get(key, default)
    if isinstance(v, str):
        return v.strip().lower() in _TRUE
    return bool(v)


def spec_label(spec: dict[str, Any]) -> str:
    """``pool/[namespace/]name[@snap]`` as rbd prints it."""
    s = f"{spec['pool']}/"
    if spec.get("namespace"):
        s += f"{spec['namespace']}/"
    s += spec["name"]
    snap = spec.get("snap") or "-"
    if snap != "-":
        s += f"@{snap}"
    return s


def spec_file_label(spec: dict[str, Any]) -> str:
    """:func:`spec_label` as a file-name stem (log file, mountpoint): ``/`` -> ``.``, other
    odd characters -> ``_``; over 100 characters it is cut and ends in ``~`` and 16 hex
    digits of its SHA-256, since an image name may be longer than a file name can be
    (NAME_MAX 255; callers append a time stamp or pid)."""
    label = spec_label(spec)
    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", label.replace("/", "."))
    if len(safe) > 100:
        digest = hashlib.sha256(label.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        safe = f"{safe[:83]}~{digest}"
    return safe


def spec_from_env() -> dict[str, Any]:
    """The spec from env ``PYCEPH_MAP_SPEC`` (JSON): the first daemons' channel, kept
    for callers that still use it.  Refused if the spec holds a secret (an
    environment is readable in /proc): those go through :func:`read_spec`'s fd."""
    raw = os.environ.get(SPEC_ENV)
    if not raw:
        raise errors.InvalidArgumentError(f"{SPEC_ENV} is not set: not started by map_image")
    spec = json.loads(raw)
    if not isinstance(spec, dict):
        raise errors.InvalidArgumentError(f"{SPEC_ENV} is not a JSON object")
    if spec.get("secret") or (spec.get("options") or {}).get("secret"):
        raise errors.InvalidArgumentError(f"{SPEC_ENV} must not carry a secret; use {SPEC_FD_ENV}")
    return spec


def read_spec() -> dict[str, Any]:
    """How the map daemon gets its spec from ``map_image``: one OP_SPEC control
    message (:mod:`.ctlproto`, tag ``spec``) read to EOF from the private pipe whose fd
    is in env ``PYCEPH_MAP_SPEC_FD``; the fd is closed and the variable dropped.
    Falls back to :func:`spec_from_env` when no fd was given.  Raises
    InvalidArgumentError (one line, never the spec's content) on a bad message."""
    raw_fd = os.environ.pop(SPEC_FD_ENV, None)
    if not raw_fd:
        return spec_from_env()
    try:
        fd = int(raw_fd)
    except ValueError:
        raise errors.InvalidArgumentError(f"{SPEC_FD_ENV} is not an fd number") from None
    rx = ctlproto.Receiver(ctlproto.KIND_REQUEST)
    msg = None
    try:
        while msg is None:
            chunk = os.read(fd, 65536)
            if not chunk:
                rx.eof()
                raise errors.InvalidArgumentError("spec pipe closed without a spec")
            msg = rx.feed(chunk)
        if isinstance(msg, ctlproto.LegacyLine) or msg.op != ctlproto.OP_SPEC:
            raise errors.InvalidArgumentError("spec pipe: expected a spec message")
        ctlproto.check_request(msg)
    except ctlproto.ControlError as e:
        raise errors.InvalidArgumentError(f"spec pipe: {e.message}") from None
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    spec = msg.get("spec")
    if not isinstance(spec, dict):
        raise errors.InvalidArgumentError("spec pipe: the spec is not an object")
    return spec


def ready_fd_from_env() -> int | None:
    """The fd number to report readiness on (env ``PYCEPH_MAP_READY_FD``), or None."""
    raw = os.environ.get(READY_FD_ENV)
    return int(raw) if raw else None


def _private_mount_ns() -> bool:
    """Move this thread (call before any thread exists) into a private mount
    namespace so the FUSE mount is invisible to others and vanishes with us."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        log.warning("unshare(CLONE_NEWNS) failed: %s; mounting in the host namespace",
                    os.strerror(ctypes.get_errno()))
        return False
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        log.warning("making / private failed: %s", os.strerror(ctypes.get_errno()))
    _detach_copied_loop_mounts(libc)
    return True


def _detach_copied_loop_mounts(libc) -> None:
    """Lazily unmount, in our new namespace only, the copies of file systems that live
    on loop devices (other mappings).  Our copy would keep such a file system alive,
    and its loop device exclusively held, after the user unmounts it in the host
    namespace: that mapping could then never be unmapped."""
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return
    targets = []
    for line in lines:
        parts = line.split()
        if len(parts) > 4 and parts[2].split(":")[0] == str(LOOP_MAJOR):
            targets.append(parts[4].encode().decode("unicode_escape").encode("latin-1"))
    for target in reversed(targets):  # deepest first
        if libc.umount2(target, MNT_DETACH) != 0:
            log.warning("detaching copied mount %s failed: %s", target, os.strerror(ctypes.get_errno()))


class _Reporter:
    """Writes the one status line for the parent, then closes the pipe."""

    def __init__(self, fd: int | None):
        self.fd = fd
        self.sent = False

    def send(self, line: str) -> None:
        if self.sent:
            return
        self.sent = True
        if self.fd is None:
            print(line, flush=True)
            return
        try:
            os.write(self.fd, (line.replace("\n", " ") + "\n").encode())
        except OSError as e:
            log.warning("cannot report to parent: %s", e)
        finally:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    def error(self, exc: BaseException) -> None:
        self.send(f"error {errno_of(exc)} {type(exc).__name__} {exc}")


class _Daemon:
    def __init__(self, spec: dict[str, Any], open_image, reporter: _Reporter, private_ns: bool):
        self.spec = spec
        self.open_image = open_image
        self.reporter = reporter
        self.private_ns = private_ns
        opts = spec.get("options") or {}
        self.loop_dio = opt_bool(opts, "direct_io", True)
        # no FUSE page cache: the loop device's cache is the only one
        self.fuse_dio = opt_bool(opts, "fuse_direct_io", True)
        self.partscan = opt_bool(opts, "partscan", False)
        # krbd's queue_depth: requests in flight (FUSE max_background, concurrent tasks)
        qd = opts.get("queue_depth")
        self.max_tasks = int(opts.get("max_tasks", qd or 64))
        self.detach_timeout = float(opts.get("detach_timeout", 30.0))
        self.max_background = min(int(opts.get("max_background", qd or 64)), 0xFFFF)
        self.max_write = int(opts.get("max_write", 1 << 20))
        self.size_poll = float(opts.get("size_poll", 0.5))
        self.size_task: asyncio.Task | None = None
        self.attrs: devattrs.DeviceAttrs | None = None
        # krbd's "notrim": no discard/write-zeroes reach the image
        self.trim = not opt_bool(opts, "notrim", False) and opt_bool(opts, "trim", True)
        self.image: BlockImage | None = None
        self.ops: ImageFile | None = None
        self.fuse: fuseserver.FuseServer | None = None
        self.fuse_fd: int | None = None
        self.mountpoint: str | None = None
        self.mounted = False
        self.fuse_task: asyncio.Task | None = None
        self.index: int | None = None
        self.loop_fd: int | None = None
        self.dev_id: str | None = None
        self.stop = asyncio.Event()
        self.server: asyncio.AbstractServer | None = None
        # control socket bounds (docs/CONTROL.md); options for tests
        self.ctl = ctlserver.ControlServer(
            {ctlproto.OP_UNMAP: self._op_unmap, ctlproto.OP_STATS: self._op_stats,
             ctlproto.OP_SESSIONS: self._op_sessions, ctlproto.OP_CONFIGURE: self._op_configure,
             ctlproto.OP_REFRESH: self._op_refresh, ctlproto.OP_INFO: self._op_info},
            {"unmap": self._legacy_unmap, "stats": self._legacy_stats, "sessions": self._legacy_sessions},
            idle_timeout=float(opts.get("ctl_idle_timeout", 10.0)),
            max_conns=int(opts.get("ctl_max_conns", 16)))
        self.done: asyncio.Future | None = None
        self.exit_error: BaseException | None = None
        self.pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="pyceph-loop")

    async def _blocking(self, fn, *args):
        # threads made now inherit our private mount namespace
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        # asyncio logs every failed accept (EMFILE ...) once a second: rate-limit it
        loop.set_exception_handler(
            lambda lp, ctx: self.ctl.warn.warning("event loop: %s %r", ctx.get("message"), ctx.get("exception")))
        ready = False
        try:
            await self._start()
            ready = True
            self.reporter.send(f"ready {loopdev.device_path(self.index)}")
            log.info("mapped %s at %s", spec_label(self.spec), loopdev.device_path(self.index))
            stop_wait = asyncio.ensure_future(self.stop.wait())
            await asyncio.wait({stop_wait, self.fuse_task}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if self.fuse_task.done():
                exc = self.fuse_task.exception() if not self.fuse_task.cancelled() else None
                self.exit_error = exc or errors.IOError("FUSE session ended unexpectedly")
                log.error("FUSE main loop ended: %r", self.exit_error)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, then cleaned up
            log.exception("map failed")
            self.exit_error = exc
            if not ready:
                self.reporter.error(exc)
        finally:
            cleanup_err = await self._shutdown()
            if self.exit_error is None:
                self.exit_error = cleanup_err
            if not self.done.done():
                self.done.set_result(self.exit_error)
            await asyncio.sleep(0.05)  # let a waiting unmap request get its reply
            self.ctl.close()
            self.pool.shutdown(wait=False)
        if self.exit_error is None:
            log.info("unmapped cleanly")
            log_path = os.environ.get(LOG_ENV)
            if log_path and not opt_bool(self.spec.get("options") or {}, "keep_log", False):
                with contextlib.suppress(OSError):
                    os.unlink(log_path)  # /run is RAM: keep only logs of failures
            return 0
        return 1

    async def _start(self) -> None:
        self.image = await self._unless_stopped(self.open_image())
        ro = bool(self.spec.get("read_only") or self.image.read_only)
        self.read_only = ro
        label = spec_label(self.spec)
        self.mountpoint = os.path.join(registry.subdir("mnt"), f"{spec_file_label(self.spec)}.{os.getpid()}")
        with open(self.mountpoint, "w"):
            pass
        self.ops = ImageFile(self.image, read_only=ro, direct_io=self.fuse_dio, discard=self.trim)
        session = FuseSession(self.ops, max_write=self.max_write, max_background=self.max_background)
        fsname = "pyceph:" + re.sub(r"[,\s\\]", "_", label)
        self.fuse_fd = fuseserver.mount(self.mountpoint, fsname=fsname, read_only=ro)
        self.mounted = True
        self.fuse = fuseserver.FuseServer(session, self.fuse_fd, max_tasks=self.max_tasks)
        self.fuse_task = asyncio.ensure_future(self.fuse.serve())
        self.index, self.loop_fd = await self._blocking(self._attach, ro, "pyceph:" + label)
        if self.stop.is_set():
            raise errors.InterruptedOrTimeoutError("map interrupted by a signal")
        self.dev_id = str(self.index)
        st = loopdev.get_status(self.loop_fd)
        log.info("loop%d attached: read_only=%s direct_io=%s autoclear=%s discard_max_bytes=%s",
                 self.index, st.read_only, st.direct_io, st.autoclear,
                 loopdev.queue_limit(self.index, "discard_max_bytes"))
        registry.write_record({
            "id": self.dev_id,
            "pool": self.spec["pool"],
            "namespace": self.spec.get("namespace") or "",
            "name": self.spec["name"],
            "snap": self.spec.get("snap") or "-",
            "device": loopdev.device_path(self.index),
            "pid": os.getpid(),
            "pid_start": registry.process_start_time(os.getpid()),
            "mountpoint": self.mountpoint,
            "read_only": ro,
            "direct_io": st.direct_io,
            "trim": self.trim and not ro,
            "socket": registry.socket_path(self.dev_id),
            "log": os.environ.get(LOG_ENV, ""),
        })
        with contextlib.suppress(FileNotFoundError):
            os.unlink(registry.socket_path(self.dev_id))
        self.server = await self.ctl.start(registry.socket_path(self.dev_id))
        if self.size_poll > 0:
            self.size_task = asyncio.ensure_future(self._follow_size())
        # /sys/bus/rbd/devices/N and /dev/rbd/POOL/IMAGE (pyceph.block.devattrs)
        self.attrs = devattrs.DeviceAttrs(self.dev_id, loopdev.device_path(self.index), self.spec, self.image,
                                          on_refresh=self.refresh)
        await self.attrs.create()

    async def _follow_size(self) -> None:
        """Resize the device when the image's size changes (``rbd resize`` elsewhere:
        the image refreshes on the header-update notification), like krbd does.

        Compares the image size with the loop device's own size (not with a remembered
        value), so a change that lands before this task first runs is not missed and a
        resize the kernel did not take yet is retried at the next poll."""
        while True:
            await asyncio.sleep(self.size_poll)
            if self.attrs is not None:
                self.attrs.sync()  # size, features ... after a refresh
            size = self.image.size
            if size & ~511 == self._device_size():  # loop sizes are whole 512-byte sectors
                continue
            try:
                await self._blocking(self._set_capacity)
            except Exception as e:  # noqa: BLE001 - retried at the next poll
                log.error("resizing loop%d to %d: %r", self.index, size, e)
                continue
            log.info("image size %d: loop%d now %d bytes", size, self.index, self._device_size())
            if self.attrs is not None:
                self.attrs.sync()

    def _device_size(self) -> int:
        """Size of the loop device in bytes (BLKGETSIZE64)."""
        buf = bytearray(8)
        fcntl.ioctl(self.loop_fd, BLKGETSIZE64, buf)
        return int.from_bytes(buf, "little")

    def _set_capacity(self) -> None:
        # the kernel caches the FUSE file's size: drop it, let stat fetch the new one
        # (GETATTR, answered by our loop), then make loop re-read it (LOOP_SET_CAPACITY)
        self.fuse.notify(fuseproto.notify_inval_inode())
        os.stat(self.mountpoint)
        loopdev.set_capacity(self.loop_fd)

    async def _unless_stopped(self, coro):
        """Await ``coro`` unless SIGTERM/SIGINT comes first (then it is cancelled)."""
        task = asyncio.ensure_future(coro)
        stop_wait = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise errors.InterruptedOrTimeoutError("map interrupted by a signal")
        return task.result()

    def _attach(self, ro: bool, label: str) -> tuple[int, int]:
        # opening the FUSE file sends requests to our own loop: must not run on it
        fd = os.open(self.mountpoint, (os.O_RDONLY if ro else os.O_RDWR) | os.O_CLOEXEC)
        try:
            index, loop_fd = loopdev.attach(fd, read_only=ro, label=label, direct_io=self.loop_dio,
                                            autoclear=True, partscan=self.partscan)
            if self.trim and not ro and loopdev.discard_capped(index):
                # someone capped this device's discard at 0 in sysfs: take a fresh one
                log.warning("loop%d has discard capped at 0 in sysfs; re-creating it", index)
                loopdev.detach(loop_fd)
                os.close(loop_fd)
                try:
                    if not loopdev.wait_detached(index, 5.0):
                        raise OSError(errno.EBUSY, "still attached")
                    for attempt in range(20):  # udev may still hold it for a moment
                        try:
                            loopdev.recreate(index)
                            break
                        except OSError as e:
                            if e.errno != errno.EBUSY or attempt == 19:
                                raise
                            time.sleep(0.1)
                except OSError as e:
                    log.warning("cannot re-create loop%d (%s): mapping without discard", index, e)
                index, loop_fd = loopdev.attach(fd, read_only=ro, label=label, direct_io=self.loop_dio,
                                                autoclear=True, partscan=self.partscan)
            return index, loop_fd
        finally:
            os.close(fd)  # the loop device holds its own reference

    # --- control requests (pyceph.block.ctlproto; text commands of the first CLIs too) ---

    async def _op_unmap(self, msg: ctlproto.Message) -> list[ctlproto.Field]:
        self.stop.set()
        err = await asyncio.shield(self.done)
        if err is not None:
            raise err
        return []

    async def _op_stats(self, msg: ctlproto.Message) -> list[ctlproto.Field]:
        return [ctlproto.field("stats", self._stats())]

    async def _op_sessions(self, msg: ctlproto.Message) -> list[ctlproto.Field]:
        return [ctlproto.field("sessions", self._sessions())]

    async def _legacy_unmap(self) -> str:
        self.stop.set()
        err = await asyncio.shield(self.done)
        return "ok" if err is None else f"error {errno_of(err)} {type(err).__name__} {err}"

    async def _legacy_stats(self) -> str:
        return json.dumps(self._stats())

    async def _legacy_sessions(self) -> str:
        return json.dumps(self._sessions())

    def _osdc(self):
        return getattr(getattr(self.image, "rados", None), "osdc", None)

    def _setting(self, name: str) -> Any:
        if name == "queue_depth":
            return self.fuse.max_tasks if self.fuse is not None else self.max_tasks
        if name == "osd_request_timeout":
            osdc = self._osdc()
            return getattr(osdc, "request_timeout", None)
        if name == "osdkeepalive":
            return getattr(self._osdc(), "keepalive_interval", None)
        options = getattr(self.image, "options", None)
        if name in mapopts.RUNTIME_OPTIONS and isinstance(options, dict):
            return options.get(name, mapopts.BY_NAME[name].default)
        raise ctlproto.ControlError(ctlproto.E_UNKNOWN_SETTING, f"no setting {name!r}")

    def _set_kernel_max_background(self, n: int) -> None:
        """The kernel's cap on this FUSE connection's requests in flight is fixed at INIT;
        a live change goes through fusectl (``/sys/fs/fuse/connections/<minor>/``,
        fs/fuse/control.c), mounted in our private namespace if nobody has.  Best effort:
        without it only the daemon's own concurrency changes (logged)."""
        ctl = "/sys/fs/fuse/connections"
        try:
            conn = os.path.join(ctl, str(os.minor(os.stat(self.mountpoint).st_dev)))
            if not os.path.isdir(conn) and self.private_ns:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                libc.mount(b"fusectl", ctl.encode(), b"fusectl", 0, None)
            for name, v in (("max_background", n), ("congestion_threshold", max(1, n * 3 // 4))):
                with open(os.path.join(conn, name), "w") as f:
                    f.write(f"{v}\n")
        except (OSError, TypeError) as e:
            log.warning("queue_depth %d: the kernel's FUSE max_background stays as at INIT (%s)", n, e)

    def _settings(self) -> dict[str, Any]:
        """The runtime options this mapping has (a block image without a RADOS client has
        only queue_depth), with their current values."""
        out = {}
        for k in sorted(mapopts.RUNTIME_OPTIONS):
            with contextlib.suppress(ctlproto.ControlError):
                out[k] = self._setting(k)
        return out

    def _set_setting(self, name: str, value: Any) -> None:
        if name == "queue_depth":
            # krbd's queue_depth: requests served at once, and the kernel's async cap
            self.max_tasks = int(value)
            if self.fuse is not None:
                self.fuse.max_tasks = max(1, int(value))
                self.fuse.session.max_background = max(1, min(int(value), 0xFFFF))
                self._set_kernel_max_background(self.fuse.session.max_background)
            return
        configure = getattr(self.image, "configure", None)
        if configure is not None and name in mapopts.RUNTIME_OPTIONS:
            configure({name: value})  # the block image applies it to its image / OSD client
        elif name == "osd_request_timeout":
            self._osdc().request_timeout = float(value)
        else:
            raise ctlproto.ControlError(ctlproto.E_UNKNOWN_SETTING, f"no setting {name!r}")

    async def _op_configure(self, msg: ctlproto.Message) -> list[ctlproto.Field]:
        """Validate every setting, then apply all of them or none (ctlproto.transact)."""
        if self.stop.is_set():
            raise ctlproto.ControlError(ctlproto.E_SHUTTING_DOWN, "mapping is being unmapped")
        raw = ctlproto.parse_settings(msg)
        for name in raw:
            if name not in mapopts.RUNTIME_OPTIONS:
                raise ctlproto.ControlError(ctlproto.E_UNKNOWN_SETTING,
                                            f"'{name}' cannot be changed on a live mapping")
        try:
            typed = mapopts.validate_settings(raw)
        except errors.Error as e:
            raise ctlproto.ControlError(ctlproto.E_BAD_VALUE, e.message or str(e)) from None
        if {"osd_request_timeout", "osdkeepalive"} & typed.keys() and self._osdc() is None:
            raise ctlproto.ControlError(ctlproto.E_NOT_SUPPORTED, "this mapping has no OSD client")
        if not msg.has("dry_run"):
            ctlproto.transact(typed, self._setting, self._set_setting)
            log.info("configured %s", ", ".join(f"{k}={v}" for k, v in typed.items()))
        return [ctlproto.field("applied", {k: self._setting(k) for k in typed})]

    async def refresh(self) -> int:
        """Re-read the image header (if the image can) and resize the device to it, as
        krbd's ``refresh`` attribute does; returns the device size in bytes."""
        refresh = getattr(getattr(self.image, "image", None), "refresh", None)
        if refresh is not None:
            await refresh()
        if self.loop_fd is not None and self.image.size & ~511 != self._device_size():
            await self._blocking(self._set_capacity)
        return self._device_size() if self.loop_fd is not None else self.image.size

    async def _op_refresh(self, msg: ctlproto.Message) -> list[ctlproto.Field]:
        return [ctlproto.field("size", await self.refresh())]

    async def _op_info(self, msg: ctlproto.Message) -> list[ctlproto.Field]:
        return [ctlproto.field("info", self._info())]

    def _info(self) -> dict[str, Any]:
        """What a krbd device's /sys/bus/rbd/devices/N directory shows, as far as this
        mapping knows it (None where unknown); never the secret."""
        img = getattr(self.image, "image", None)
        rados = getattr(self.image, "rados", None)
        monc = getattr(rados, "monc", None)
        ioctx = getattr(img, "ioctx", None)
        parent = getattr(img, "parent", None)
        fsid = getattr(monc, "fsid", None)
        # krbd's config_info without the secret (key= names a keyring entry: kept)
        opts = {k: v for k, v in (self.spec.get("options") or {}).items()
                if k != "secret" and not k.startswith("test_")}
        snap = self.spec.get("snap") or "-"
        return {
            "id": self.dev_id,
            "device": loopdev.device_path(self.index) if self.index is not None else None,
            "size": self.image.size if self.image is not None else None,
            "features": getattr(img, "_features", None),
            "pool": self.spec["pool"],
            "pool_id": getattr(ioctx, "pool_id", None),
            "namespace": self.spec.get("namespace") or "",
            "name": self.spec["name"],
            "image_id": getattr(img, "image_id", None),
            "snap": snap,
            "snap_id": getattr(img, "snap_id", None),
            "current_snap": snap,
            "parent": repr(parent) if parent is not None else None,
            "client_id": f"client{monc.global_id}" if monc is not None else None,
            "client_addr": _str_or_none(getattr(monc, "client_addr", None)),
            "cluster_fsid": str(uuid.UUID(bytes=bytes(fsid))) if isinstance(fsid, (bytes, bytearray))
            and len(fsid) == 16 else _str_or_none(fsid),
            "config_info": opts,
            "read_only": bool(getattr(self, "read_only", self.spec.get("read_only"))),
            "settings": self._settings(),
            "pid": os.getpid(),
        }

    def _stats(self) -> dict[str, int]:
        """The "stats" control command: ImageFile counters plus the FUSE server's
        (prefixed ``fuse_``: requests, replies, dropped, decode_errors, max_tasks_seen)
        and requests per opcode (``op_<NAME>``, e.g. op_WRITE)."""
        out = dict(self.ops.stats) if self.ops else {}
        if self.fuse is not None:
            out.update({f"fuse_{k}": v for k, v in self.fuse.stats.items()})
            out.update({f"op_{k}": v for k, v in self.fuse.session.counts.items()})
        return out

    def _sessions(self) -> dict[str, Any]:
        """The "sessions" control command: the RADOS client's view of its sessions
        (``MonClient.status()`` and ``OSDClient.status()``; ages in seconds)."""
        rados = getattr(self.image, "rados", None)
        monc = getattr(rados, "monc", None)
        if monc is None:
            return {"error": "this image has no RADOS client"}
        mon = monc.status()
        tickets = mon.pop("tickets", {})
        osdc = getattr(rados, "osdc", None)
        return {
            "entity": str(monc.config.name),
            "global_id": mon.get("global_id"),
            "mon": mon,
            "osdmap_epoch": mon.get("osdmap_epoch"),
            "osd": osdc.status() if osdc is not None else None,
            "tickets": tickets,
        }

    async def _shutdown(self) -> BaseException | None:
        """Tear down in the reverse order; never raises, returns the first error."""
        first: BaseException | None = None

        def note(e: BaseException, what: str) -> None:
            nonlocal first
            log.error("%s: %r", what, e)
            if first is None:
                first = e

        if self.size_task is not None:
            self.size_task.cancel()
        if self.attrs is not None:
            self.attrs.remove()
        if self.dev_id is not None:
            registry.remove_record(self.dev_id, os.getpid())
        if self.loop_fd is not None:
            try:
                await self._blocking(self._detach)
            except Exception as e:  # noqa: BLE001
                note(e, "detaching the loop device")
        if self.image is not None and not getattr(self, "read_only", True):
            try:
                await self.image.flush()
            except Exception as e:  # noqa: BLE001
                note(e, "final flush")
        if self.fuse is not None:
            try:
                await self.fuse.stop(10.0)
            except Exception as e:  # noqa: BLE001
                note(e, "stopping the FUSE server")
        if self.fuse_task is not None:
            if not self.fuse_task.done():
                self.fuse_task.cancel()
            with contextlib.suppress(BaseException):
                await self.fuse_task  # its error, if any, is already the exit error
        if self.mounted:
            try:
                fuseserver.unmount(self.mountpoint)
            except Exception as e:  # noqa: BLE001
                note(e, "unmounting")
            self.mounted = False
        if self.fuse_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fuse_fd)  # aborts whatever the kernel still has queued
            self.fuse_fd = None
        if self.mountpoint is not None:
            if not self.private_ns and registry.is_mounted(self.mountpoint):
                with contextlib.suppress(OSError):
                    registry.lazy_unmount(self.mountpoint)
            with contextlib.suppress(OSError):
                os.unlink(self.mountpoint)
        if self.image is not None:
            try:
                await self.image.close()
            except Exception as e:  # noqa: BLE001
                note(e, "closing the image")
        return first

    def _detach(self) -> None:
        fd, index = self.loop_fd, self.index
        try:
            if not self.read_only:
                try:
                    os.fsync(fd)  # block-device cache + REQ_OP_FLUSH -> image.flush()
                except OSError as e:
                    log.error("fsync of loop%d: %s", index, e)
            loopdev.detach(fd)
        finally:
            os.close(fd)
            self.loop_fd = None
        # with other openers the kernel detaches at their last close; keep serving till then
        if not loopdev.wait_detached(index, self.detach_timeout):
            log.error("loop%d still attached after %.0fs (held open); unmounting anyway",
                      index, self.detach_timeout)


def _str_or_none(v: Any) -> str | None:
    return None if v is None else str(v)


def _harden_process() -> None:
    """Name the process ``pyceph-map`` (what the registry checks before signalling a
    recorded pid) and raise the open-file limit's soft value to the hard one."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_NAME, DAEMON_COMM.encode(), 0, 0, 0)
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_daemon(
    spec: dict[str, Any],
    open_image: Callable[[], Awaitable[BlockImage]],
    ready_fd: int | None = None,
) -> int:
    """Body of the mapping daemon process; returns its exit code (0 = clean unmap).

    ``spec`` holds pool, namespace, name, snap ("-" or None for the head),
    read_only, and options (dict; values may be CLI strings):

    - direct_io: loop device direct I/O (default on; keeps many requests in flight)
    - fuse_direct_io: FOPEN_DIRECT_IO on the FUSE file (default on)
    - max_tasks: FUSE requests served concurrently (default 64)
    - max_background: kernel cap on async FUSE requests (default 64; kernel's is 12)
    - max_write: largest FUSE read/write request in bytes (default 1 MiB = 256 pages)
    - notrim: discard and write-zeroes do not reach the image (krbd's ``notrim``:
      the loop device advertises no discard, FALLOCATE gets EOPNOTSUPP)
    - partscan: scan partitions on the device (default off)
    - detach_timeout: seconds to wait for other openers at unmap (default 30)
    - keep_log: keep the log file after a clean exit (default off)
    - size_poll: seconds between checks of the image size; a change resizes the
      device, as krbd follows ``rbd resize`` (default 0.5; 0 = never)
    - log_level: debug, info (default), warning or error (debug logs every discard)
    - ctl_idle_timeout: seconds a control request may take to arrive (default 10)
    - ctl_max_conns: control connections served at once (default 16; docs/CONTROL.md)

    The process names itself ``pyceph-map`` and raises its open-file limit.
    ``open_image`` is awaited inside the daemon's event loop.  ``ready_fd``
    (default: env ``PYCEPH_MAP_READY_FD``; None prints to stdout) receives one line,
    ``ready <device>`` or ``error <errno> <ErrorClass> <message>``.  Call it from
    the main thread before starting other threads: it unshares the mount namespace
    so the FUSE mount is private to the daemon and vanishes with it.
    """
    if ready_fd is None:
        ready_fd = ready_fd_from_env()
    _harden_process()
    if not logging.getLogger().handlers:
        logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                            format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    level = str((spec.get("options") or {}).get("log_level", "")).upper()
    if level in ("DEBUG", "INFO", "WARNING", "ERROR"):
        logging.getLogger().setLevel(level)
    reporter = _Reporter(ready_fd)
    try:
        private = _private_mount_ns()
        return asyncio.run(_Daemon(spec, open_image, reporter, private).run())
    except BaseException as exc:  # noqa: BLE001
        log.exception("map daemon failed")
        reporter.error(exc)
        return 1
