"""Caller side of mappings: map_image, unmap, showmapped (what `prbd` runs)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

from . import devattrs  # the device model: its stale dirs and links
from .. import errors
from . import loopdev, registry
from .daemon import LOG_ENV, READY_FD_ENV, SPEC_ENV, spec_label


class NotMapped(errors.ImageNotFound):
    """unmap target is not a device or image mapped by pyceph (errno ENOENT)."""


def _typed_error(code: int, cls_name: str, msg: str) -> errors.Error:
    cls = getattr(errors, cls_name, None)
    if isinstance(cls, type) and issubclass(cls, errors.Error):
        with contextlib.suppress(Exception):
            return cls(msg, errno=code)
    ex = errors.make_ex(code, msg)
    ex.message = msg
    return ex


def _parse_error_line(line: str) -> errors.Error:
    # "error <errno> <ErrorClass> <message>"
    parts = line.split(" ", 3)
    try:
        code = int(parts[1])
    except (IndexError, ValueError):
        return errors.IOError(line)
    return _typed_error(code, parts[2] if len(parts) > 2 else "", parts[3] if len(parts) > 3 else "")


def _log_tail(path: str, n: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _normalize_spec(spec: dict[str, Any]) -> dict[str, Any]:
    if not spec.get("pool") or not spec.get("name"):
        raise errors.InvalidArgumentError("spec needs 'pool' and 'name'")
    return {
        "pool": spec["pool"],
        "namespace": spec.get("namespace") or "",
        "name": spec["name"],
        "snap": spec.get("snap") or "-",
        "read_only": bool(spec.get("read_only")) or (spec.get("snap") or "-") != "-",
        "options": dict(spec.get("options") or {}),
    }


def map_image(spec: dict[str, Any], daemon_argv: list[str], timeout: float = 60.0) -> str:
    """Start a mapping daemon and return its device path, e.g. ``"/dev/loop0"``.

    ``spec``: pool, namespace ("" default), name, snap ("-"/None = head; a snapshot
    is always mapped read-only), read_only (bool), options (dict, see
    :func:`pyceph.block.run_daemon`; krbd's ``notrim`` turns discard off, and the
    daemon's image opener reads others such as ``exclusive``).  ``daemon_argv`` is the command that runs the
    daemon; it is started detached (new session, stdio to ``<run dir>/log/*.log``)
    with env ``PYCEPH_MAP_SPEC`` (the spec as JSON), ``PYCEPH_MAP_READY_FD`` (an
    inherited pipe fd to report on) and ``PYCEPH_MAP_LOG`` (its log path); it must
    call ``run_daemon(spec_from_env(), open_image)``.  ``timeout`` in seconds.

    Raises the daemon's typed error (e.g. ImageNotFound, PermissionError) if it
    failed, :class:`errors.TimedOut` if it did not answer in time (it is then
    killed), :class:`errors.IOError` if it died without a word.
    """
    spec = _normalize_spec(spec)
    label = spec_label(spec)
    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", label.replace("/", "."))
    fd, log_path = tempfile.mkstemp(prefix=f"{safe}.{time.strftime('%Y%m%d-%H%M%S')}.", suffix=".log",
                                    dir=registry.subdir("log"))
    os.close(fd)
    r, w = os.pipe()
    env = dict(os.environ)
    env[READY_FD_ENV] = str(w)
    env[SPEC_ENV] = json.dumps(spec)
    env[LOG_ENV] = log_path
    env[registry.RUN_DIR_ENV] = registry.run_dir()
    try:
        with open(log_path, "ab") as logf:
            proc = subprocess.Popen(
                daemon_argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                pass_fds=(w,), start_new_session=True, env=env, close_fds=True,
            )
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    try:
        line = _read_line(r, timeout)
    finally:
        os.close(r)
    if line is not None and line.startswith("ready "):
        return line.split(" ", 1)[1].strip()
    if line is None:  # timed out
        _stop_process(proc, 10.0)
        raise errors.TimedOut(f"{label}: map daemon did not report within {timeout:.0f}s (log: {log_path})")
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10.0)
    if line.startswith("error "):
        raise _parse_error_line(line)
    rc = proc.poll()
    raise errors.IOError(f"{label}: map daemon exited (status {rc}) without reporting: {_log_tail(log_path)}")


def _read_line(fd: int, timeout: float) -> str | None:
    """First line from ``fd``; "" on EOF without a line, None on timeout."""
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.split(b"\n", 1)[0].decode("utf-8", "replace")


def _stop_process(proc: subprocess.Popen, grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    # a killed daemon cannot clean up after itself
    for rec in list(registry.iter_records()):
        if rec.get("pid") == proc.pid:
            _cleanup_stale(rec)


def parse_target(target: str) -> dict[str, str] | str:
    """A device path (returned as its real path) or ``[pool/[namespace/]]image[@snap]``
    (returned as a dict; pool defaults to "rbd" like rbd's)."""
    if target.startswith("/"):
        return os.path.realpath(target)
    snap = "-"
    if "@" in target:
        target, snap = target.split("@", 1)
    parts = target.split("/")
    if len(parts) == 1:
        pool, ns, name = "rbd", "", parts[0]
    elif len(parts) == 2:
        pool, ns, name = parts[0], "", parts[1]
    elif len(parts) == 3:
        pool, ns, name = parts
    else:
        raise errors.InvalidArgumentError(f"cannot parse image spec '{target}'")
    if not name or not pool:
        raise errors.InvalidArgumentError(f"cannot parse image spec '{target}'")
    return {"pool": pool, "namespace": ns, "name": name, "snap": snap or "-"}


def _live_records() -> list[dict[str, Any]]:
    out = []
    for rec in registry.iter_records():
        if registry.daemon_alive(rec):
            out.append(rec)
        else:
            _cleanup_stale(rec)
    return out


def _cleanup_stale(rec: dict[str, Any]) -> None:
    """Undo what a dead daemon left: loop device, mount, mount point file, record."""
    pid = rec.get("pid")
    if isinstance(pid, int):
        registry.reap(pid)
    mp = rec.get("mountpoint") or ""
    try:
        index = int(rec["id"])
    except (KeyError, ValueError):
        index = None
    if index is not None and mp and loopdev.backing_file(index) == mp:
        with contextlib.suppress(OSError):
            loopdev.detach_index(index)  # deferred by the kernel while still open
    if mp:
        if registry.is_mounted(mp):
            with contextlib.suppress(OSError):
                registry.lazy_unmount(mp)
        with contextlib.suppress(OSError):
            os.unlink(mp)
    devattrs.cleanup_stale(rec)  # attribute dir and /dev/pyrbd link
    registry.remove_record(str(rec["id"]), pid if isinstance(pid, int) else None)


def showmapped() -> list[dict[str, str]]:
    """Live mappings as ``rbd showmapped --format json`` lists them: dicts with exactly
    id, pool, namespace, name, snap, device (all strings; snap "-" for the head),
    sorted by id.  Records of dead daemons are cleaned up and left out."""
    return [{k: str(rec.get(k, "")) for k in registry.SHOWMAPPED_FIELDS} for rec in _live_records()]


def find_mappings(target: str) -> list[dict[str, Any]]:
    """Registry records (live or not) matching a device path or image spec."""
    want = parse_target(target)
    out = []
    for rec in registry.iter_records():
        if isinstance(want, str):
            if os.path.realpath(rec.get("device", "")) == want:
                out.append(rec)
        elif all(str(rec.get(k, "")) == v for k, v in want.items()):
            out.append(rec)
    return out


def unmap(target: str, timeout: float = 60.0, force: bool = False) -> None:
    """Unmap ``target`` (``/dev/loopN`` or ``[pool/[namespace/]]image[@snap]``).

    Waits up to ``timeout`` seconds for the daemon to flush, detach and exit.  If
    an image is mapped more than once, the lowest id is unmapped (like rbd).
    Raises :class:`NotMapped` (ImageNotFound, ENOENT) if nothing matches,
    :class:`errors.ImageBusy` (EBUSY) if the device is mounted, held or open
    (unless ``force``: the daemon then exits once the last user closes it or
    after its detach timeout), :class:`errors.TimedOut` if the daemon did not exit
    in time, or the daemon's typed error if its final flush failed.
    """
    recs = find_mappings(target)
    if not recs:
        if target.startswith("/"):
            raise NotMapped(f"'{target}' is not a pyceph-mapped device")
        raise NotMapped(f"{spec_label(parse_target(target))}: not a mapped image or snapshot")
    rec = recs[0]
    dev = rec.get("device", "?")
    index = int(rec["id"])
    pid = rec.get("pid")
    alive = registry.daemon_alive(rec)
    if not force:
        reason = None
        for attempt in range(3):  # udev's blkid may hold it briefly after a close
            reason = loopdev.busy_reason(index, frozenset({pid}) if alive else frozenset())
            if reason is None:
                break
            time.sleep(0.25)
        if reason is not None:
            raise errors.ImageBusy(f"{dev}: device is busy ({reason})")
    if not alive:
        _cleanup_stale(rec)
        return
    deadline = time.monotonic() + timeout
    reply = _ask(rec.get("socket") or registry.socket_path(str(rec["id"])), "unmap", timeout)
    if reply is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    while registry.daemon_alive(rec):
        if time.monotonic() >= deadline:
            raise errors.TimedOut(f"{dev}: map daemon (pid {pid}) did not exit within {timeout:.0f}s")
        registry.reap(pid)
        time.sleep(0.02)
    registry.reap(pid)
    _cleanup_stale(rec)  # normally a no-op: the daemon removed everything
    if reply is not None and reply.startswith("error "):
        raise _parse_error_line(reply)


def _ask(path: str, command: str, timeout: float) -> str | None:
    """Send one command on a daemon's control socket; its reply line, or None if
    the socket is unusable."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(command.encode() + b"\n")
            buf = b""
            while b"\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            return buf.decode("utf-8", "replace").strip()
    except OSError:
        return None


def mapping_stats(target: str, timeout: float = 10.0) -> dict[str, int]:
    """Request counters of a live mapping's FUSE layer (read, write, flush, fsync,
    errors, bytes_read, bytes_written).  Raises NotMapped / errors.IOError."""
    recs = [r for r in find_mappings(target) if registry.daemon_alive(r)]
    if not recs:
        raise NotMapped(f"{target}: not mapped")
    reply = _ask(recs[0].get("socket") or registry.socket_path(str(recs[0]["id"])), "stats", timeout)
    if not reply:
        raise errors.IOError(f"{target}: map daemon did not answer")
    return json.loads(reply)
