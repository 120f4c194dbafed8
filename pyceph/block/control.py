"""Caller side of mappings: map_image, unmap, showmapped (what `prbd` runs)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

from . import devattrs  # the device model: its stale dirs and links
from .. import errors
from . import ctlproto, loopdev, registry
from .ctlproto import ControlError
from .daemon import LOG_ENV, READY_FD_ENV, SPEC_ENV, SPEC_FD_ENV, spec_file_label, spec_label


class NotMapped(errors.ImageNotFound):
    """unmap target is not a device or image mapped by pyceph (errno ENOENT)."""


_typed_error = ctlproto.typed_error

#: environment variables a map daemon inherits (everything else, e.g. CEPH_ARGS that
#: may hold --key, is dropped); PYCEPH_* except the old spec variable pass too
_DAEMON_ENV = ("PATH", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LANG", "LANGUAGE", "TZ", "HOME",
               "TMPDIR", "CEPH_CONF")
F_SETPIPE_SZ = 1031  # linux/fcntl.h
F_GETPIPE_SZ = 1032


def daemon_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The scrubbed environment of a map daemon: :data:`_DAEMON_ENV`, ``LC_*`` and
    ``PYCEPH_*`` from ``base`` (default os.environ), never a spec or a secret."""
    base = dict(os.environ if base is None else base)
    env = {k: v for k, v in base.items()
           if k in _DAEMON_ENV or k.startswith("LC_") or (k.startswith("PYCEPH_") and k != SPEC_ENV)}
    env.pop(SPEC_FD_ENV, None)
    return env


def _spec_pipe(spec: dict[str, Any]) -> int:
    """A pipe holding the OP_SPEC message, written whole before the daemon starts;
    returns its read end (close-on-exec; passed explicitly).  Only processes of our
    user can open it through /proc."""
    frame = ctlproto.request(ctlproto.OP_SPEC, [ctlproto.field("spec", spec)])
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, F_SETPIPE_SZ, ctlproto.MAX_MESSAGE)
        if len(frame) > fcntl.fcntl(w, F_GETPIPE_SZ):
            raise errors.InvalidArgumentError(f"map spec of {len(frame)} bytes does not fit the spec pipe")
        os.write(w, frame)
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    return r


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
    out = {
        "pool": spec["pool"],
        "namespace": spec.get("namespace") or "",
        "name": spec["name"],
        "snap": spec.get("snap") or "-",
        "read_only": bool(spec.get("read_only")) or (spec.get("snap") or "-") != "-",
        "options": dict(spec.get("options") or {}),
    }
    for k in ("secret", "auth_name"):  # resolved by the CLI; reach the daemon over the spec pipe only
        if spec.get(k):
            out[k] = spec[k]
    return out


def map_image(spec: dict[str, Any], daemon_argv: list[str], timeout: float | None = 60.0) -> str:
    """Start a mapping daemon and return its device path, e.g. ``"/dev/loop0"``.

    ``spec``: pool, namespace ("" default), name, snap ("-"/None = head; a snapshot
    is always mapped read-only), read_only (bool), options (dict, see
    :func:`pyceph.block.run_daemon`; krbd's ``notrim`` turns discard off, and the
    daemon's image opener reads others such as ``exclusive``).  ``daemon_argv`` is the command that runs the
    daemon; it is started detached (new session, stdio to ``<run dir>/log/*.log``)
    with a scrubbed environment (:func:`daemon_environment`) plus
    ``PYCEPH_MAP_SPEC_FD`` (an inherited private pipe holding the spec as one
    OP_SPEC control message: the spec may hold ``secret``, which must never be in
    an environment or argv), ``PYCEPH_MAP_READY_FD`` (an inherited pipe fd to report
    on) and ``PYCEPH_MAP_LOG`` (its log path); it must call
    ``run_daemon(read_spec(), open_image)``.  ``timeout`` in seconds.

    Raises the daemon's typed error (e.g. ImageNotFound, PermissionError) if it
    failed, :class:`errors.TimedOut` if it did not answer in time (it is then
    killed), :class:`errors.IOError` if it died without a word.
    """
    spec = _normalize_spec(spec)
    label = spec_label(spec)
    fd, log_path = tempfile.mkstemp(prefix=f"{spec_file_label(spec)}.{time.strftime('%Y%m%d-%H%M%S')}.", suffix=".log",
                                    dir=registry.subdir("log"))
    os.close(fd)
    spec_fd = _spec_pipe(spec)
    r, w = os.pipe()
    env = daemon_environment()
    env[READY_FD_ENV] = str(w)
    env[SPEC_FD_ENV] = str(spec_fd)
    env[LOG_ENV] = log_path
    env[registry.RUN_DIR_ENV] = registry.run_dir()
    try:
        with open(log_path, "ab") as logf:
            proc = subprocess.Popen(
                daemon_argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                pass_fds=(w, spec_fd), start_new_session=True, env=env, close_fds=True,
            )
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
        os.close(spec_fd)
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


def _read_line(fd: int, timeout: float | None) -> str | None:
    """First line from ``fd``; "" on EOF without a line, None on timeout (``timeout``
    None: no deadline)."""
    buf = b""
    deadline = None if timeout is None else time.monotonic() + timeout
    while b"\n" not in buf:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
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
    if mp and not registry.inside(mp, "mnt"):
        mp = ""  # never touch a path outside the run dir, whatever a record says
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
    reply = _ask(_socket_of(rec), "unmap", timeout, force=force)
    if reply is None and registry.daemon_alive(rec):  # pid, start time, owner and name checked
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


def _socket_of(rec: dict[str, Any]) -> str:
    sock = rec.get("socket") or registry.socket_path(str(rec["id"]))
    if not registry.inside(sock, "mappings"):
        raise registry.UntrustedRunDir(f"mapping {rec.get('id')}: control socket outside the run dir")
    return sock


class _TextDaemon(Exception):
    """The daemon answered a binary request like the first daemons (text only)."""


def _exchange(path: str, frame: bytes, deadline: float) -> ctlproto.Message:
    """One request on a fresh connection; the reply message.  Raises _TextDaemon,
    ControlError, OSError (socket.timeout included)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        s.connect(path)
        try:
            s.sendall(frame)
            s.shutdown(socket.SHUT_WR)  # a text-only daemon reads "a line" up to EOF
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused at once (E_BUSY, E_PERMISSION): its reply is still there to read
        rx = ctlproto.Receiver(ctlproto.KIND_REPLY)
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                if not rx.pending:
                    raise _TextDaemon("closed without a reply")
                rx.eof()
            try:
                msg = rx.feed(chunk)
            except ControlError:
                if rx.legacy:
                    raise _TextDaemon("text reply") from None
                raise
            if isinstance(msg, ctlproto.LegacyLine):
                raise _TextDaemon(msg.command)
            if msg is not None:
                return msg


def request(path: str, op: int, fields: list[ctlproto.Field] | None = None,
            timeout: float = 10.0) -> dict[str, Any]:
    """Send one control request (:mod:`.ctlproto`) to the daemon listening on
    ``path`` and return its reply's tags as {name: value}.  An E_BUSY reply (the
    daemon's connection cap) is retried until ``timeout`` seconds.  Raises
    ControlError (its status code: e.g. E_UNKNOWN_OP "daemon too old for ..."),
    the daemon's typed error for E_FAILED, errors.TimedOut, errors.IOError if the
    socket is unusable, and :class:`_TextDaemon` if the daemon speaks only text."""
    frame = ctlproto.request(op, fields)
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            msg = _exchange(path, frame, deadline)
            return ctlproto.check_reply(msg, op)
        except ControlError as e:
            if e.status != ctlproto.E_BUSY or time.monotonic() + delay >= deadline:
                raise
        except socket.timeout:
            raise errors.TimedOut(f"map daemon at {path} did not answer within {timeout:g}s") from None
        except _TextDaemon:
            raise
        except OSError as e:
            raise errors.IOError(f"map daemon at {path}: {e.strerror or e}", errno=errno_or(e)) from None
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def errno_or(e: OSError, default: int = 5) -> int:
    return e.errno if isinstance(e.errno, int) and e.errno > 0 else default


def _ask_text(path: str, command: str, timeout: float) -> str | None:
    """The first daemons' protocol: one text line out, one back; None if the
    socket is unusable."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(command.encode() + b"\n")
            buf = b""
            while b"\n" not in buf and len(buf) < ctlproto.MAX_MESSAGE:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            return buf.decode("utf-8", "replace").strip()
    except OSError:
        return None


_LEGACY_OPS = {"unmap": ctlproto.OP_UNMAP, "stats": ctlproto.OP_STATS, "sessions": ctlproto.OP_SESSIONS}


def _ask(path: str, command: str, timeout: float, force: bool = False) -> str | None:
    """``unmap``, ``stats`` or ``sessions`` on a daemon's control socket, answered in
    the first daemons' text form: "ok", a JSON line, or "error <errno> <Class>
    <message>"; None if the socket is unusable.  Speaks the tag protocol and falls
    back to the text line for a daemon that knows only that."""
    op = _LEGACY_OPS[command]
    fields = [ctlproto.field("force")] if force and op == ctlproto.OP_UNMAP else []
    try:
        out = request(path, op, fields, timeout)
    except _TextDaemon:
        return _ask_text(path, command, timeout)
    except (errors.TimedOut, errors.IOError):
        return None
    except errors.Error as e:
        return f"error {e.errno or 5} {type(e).__name__} {e.message}"
    if op == ctlproto.OP_UNMAP:
        return "ok"
    return json.dumps(out.get("stats" if op == ctlproto.OP_STATS else "sessions"))


def _live_mapping(target: str) -> dict[str, Any]:
    recs = [r for r in find_mappings(target) if registry.daemon_alive(r)]
    if not recs:
        raise NotMapped(f"{target}: not mapped")
    return recs[0]


def _too_old(op: int, path: str) -> ControlError:
    return ControlError(ctlproto.E_UNKNOWN_OP, f"daemon too old for {ctlproto.op_name(op)} "
                                               f"(it speaks only text commands): {path}")


def configure(target: str, settings: dict[str, str], timeout: float = 10.0, dry_run: bool = False
              ) -> dict[str, Any]:
    """Change settings of a live mapping in ONE transaction (krbd map option names of
    ``mapopts.RUNTIME_OPTIONS``, e.g. {"queue_depth": "64", "osd_request_timeout":
    "30"}): the daemon validates all, then applies all or none.  Returns
    {name: value now in force}.  Raises NotMapped, ControlError (E_UNKNOWN_SETTING,
    E_BAD_VALUE, E_NOT_SUPPORTED, E_APPLY_FAILED, E_UNKNOWN_OP/E_UNKNOWN_TAG for a
    daemon too old), errors.TimedOut / errors.IOError."""
    rec = _live_mapping(target)
    path = _socket_of(rec)
    fields = [ctlproto.field("setting", f"{k}={v}") for k, v in settings.items()]
    if dry_run:
        fields.append(ctlproto.field("dry_run"))
    try:
        return request(path, ctlproto.OP_CONFIGURE, fields, timeout).get("applied") or {}
    except _TextDaemon:
        raise _too_old(ctlproto.OP_CONFIGURE, path) from None


def refresh(target: str, timeout: float = 30.0) -> int:
    """Re-read the image header and resize the device to it (krbd's ``refresh``
    attribute); returns the device size in bytes.  Raises as :func:`configure`."""
    path = _socket_of(_live_mapping(target))
    try:
        return int(request(path, ctlproto.OP_REFRESH, [], timeout).get("size") or 0)
    except _TextDaemon:
        raise _too_old(ctlproto.OP_REFRESH, path) from None


def info(target: str, timeout: float = 10.0) -> dict[str, Any]:
    """The attributes of a live mapping, as /sys/bus/rbd/devices/N shows them (size,
    features, pool, pool_id, name, image_id, snap, snap_id, current_snap, parent,
    client_id, client_addr, cluster_fsid, config_info without the secret) plus
    device, read_only, settings, pid.  Raises as :func:`configure`."""
    path = _socket_of(_live_mapping(target))
    try:
        return request(path, ctlproto.OP_INFO, [], timeout).get("info") or {}
    except _TextDaemon:
        raise _too_old(ctlproto.OP_INFO, path) from None


def query(target: str, what: str, timeout: float = 10.0) -> Any:
    """``what`` = "stats", "sessions" or "info" of a live mapping."""
    if what == "info":
        return info(target, timeout)
    if what not in ("stats", "sessions"):
        raise errors.InvalidArgumentError(f"cannot query {what!r}")
    reply = _ask(_socket_of(_live_mapping(target)), what, timeout)
    if not reply:
        raise errors.IOError(f"{target}: map daemon did not answer")
    if reply.startswith("error "):
        raise _parse_error_line(reply)
    return json.loads(reply)


def mapping_stats(target: str, timeout: float = 10.0) -> dict[str, int]:
    """Request counters of a live mapping's FUSE layer (read, write, flush, fsync,
    errors, bytes_read, bytes_written).  Raises NotMapped / errors.IOError."""
    return query(target, "stats", timeout)
