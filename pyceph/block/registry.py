"""Where mappings are recorded: one JSON file per mapped device under the run dir.

Layout (run dir = ``$PYCEPH_RUN_DIR`` or ``/run/pyceph``)::

    mappings/<id>.json   id, pool, namespace, name, snap, device, pid, pid_start,
                         mountpoint, read_only, direct_io, trim, socket, log
    mappings/<id>.sock   the daemon's control socket
    mnt/                 FUSE mount points (regular files)
    log/                 one log file per daemon (its stdout/stderr)

Trust: the run dir and its subdirectories are used only if owned by us (euid) with
mode 0700 (one of ours writable by nobody else is made 0700) and no symlink, and every ancestor is owned by root or us and not
writable by others (unless sticky, like /tmp); otherwise :class:`UntrustedRunDir`.
A record is used only if it is a regular file owned by us, its id is a number
matching its file name, and its paths lie inside the run dir; a recorded pid is
signalled only if that process still has the recorded start time, is ours and is
named ``pyceph-map`` (:func:`daemon_alive`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import stat
import tempfile
from typing import Any, Iterator

from .. import errors

log = logging.getLogger("pyceph.block.registry")

RUN_DIR_ENV = "PYCEPH_RUN_DIR"
DEFAULT_RUN_DIR = "/run/pyceph"

#: /proc/<pid>/comm of a map daemon (set by pyceph.block.daemon with prctl(PR_SET_NAME))
DAEMON_COMM = "pyceph-map"
_ID_RE = re.compile(r"^[0-9]{1,9}$")


class UntrustedRunDir(errors.PermissionDeniedError):
    """The run dir (or a part of its path) could be written by another user (EACCES)."""


# the fields `rbd showmapped --format json` prints, in its order (all strings)
SHOWMAPPED_FIELDS = ("id", "pool", "namespace", "name", "snap", "device")


def run_dir() -> str:
    """The run dir's absolute path (not checked: see :func:`trusted_dir`)."""
    return os.path.abspath(os.environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR)


def _check_dir(path: str, st: os.stat_result, own: bool) -> None:
    euid = os.geteuid()
    if not stat.S_ISDIR(st.st_mode):
        raise UntrustedRunDir(f"run dir {path} is not a directory (or is a symlink); refusing to use it")
    if own:
        if st.st_uid == euid and st.st_mode & 0o077 and not st.st_mode & 0o022:
            # ours and writable by nobody else (an older pyceph made run dirs 0755):
            # nothing in it can have been planted by others, so make it private
            os.chmod(path, 0o700)
            st = os.lstat(path)
        if st.st_uid != euid or st.st_mode & 0o077:
            raise UntrustedRunDir(f"run dir {path} must be owned by uid {euid} with mode 0700 "
                                  f"(it is uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it")
    elif st.st_uid not in (0, euid) or (st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX):
        raise UntrustedRunDir(f"{path} (a parent of the run dir) is writable by others; refusing to use it")


def check_ancestors(path: str) -> None:
    """Every directory above ``path`` must be owned by root or us and not writable by
    others unless sticky (like /tmp).  A symlink among them (``/var/run -> /run``) must be
    owned by root or us, and its target's own ancestors pass the same check.  Raises
    :class:`UntrustedRunDir`; stops at the first component that does not exist."""
    euid = os.geteuid()
    parts = os.path.abspath(path).split(os.sep)
    for i in range(1, len(parts)):
        anc = os.sep.join(parts[:i]) or os.sep
        try:
            st = os.lstat(anc)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid not in (0, euid):
                raise UntrustedRunDir(f"{anc} (a parent of the run dir) is a symlink owned by uid "
                                      f"{st.st_uid}; refusing to use it")
            real = os.path.realpath(anc)
            check_ancestors(os.path.join(real, "_"))  # the target and everything above it
            continue
        _check_dir(anc, st, own=False)


def trusted_dir(path: str, create: bool = True) -> bool:
    """Check (and with ``create`` make, mode 0700) the directory ``path`` of the
    registry: ancestors as :func:`check_ancestors` wants them; ``path`` itself ours,
    0700, no symlink.  Returns False if it does not exist and ``create`` is false.
    Raises :class:`UntrustedRunDir` (one line)."""
    path = os.path.abspath(path)
    check_ancestors(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            return False
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        check_ancestors(path)  # parents made just now: made by us, or by someone faster
        st = os.lstat(path)
    _check_dir(path, st, own=True)
    return True


def shared_dir(path: str) -> str:
    """A directory others may read but only root or we may write (the links dir,
    ``/dev/pyrbd``): ancestors as :func:`check_ancestors` wants them; ``path`` made
    (0755) if missing, a real directory (no symlink) owned by root or us, writable by
    nobody else.  Returns ``path``; raises :class:`UntrustedRunDir`."""
    path = os.path.abspath(path)
    check_ancestors(path)
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
    except FileExistsError:  # a symlink to nowhere or a file: refused below
        pass
    check_ancestors(path)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
        raise UntrustedRunDir(f"{path} must be a directory owned by root or uid {os.geteuid()} that nobody "
                              f"else can write (it is mode {stat.S_IMODE(st.st_mode):04o}, uid {st.st_uid}"
                              f"{', a symlink' if stat.S_ISLNK(st.st_mode) else ''}); refusing to use it")
    return path


def subdir(name: str) -> str:
    """``<run dir>/<name>``, created (mode 0700) if missing; the run dir and it must
    be trusted (raises :class:`UntrustedRunDir`)."""
    root = run_dir()
    trusted_dir(root)
    path = os.path.join(root, name)
    trusted_dir(path)
    return path


def inside(path: str, name: str) -> bool:
    """Whether ``path`` (no symlinks followed for the last part) lies directly in
    ``<run dir>/<name>``."""
    if not isinstance(path, str) or not path:
        return False
    return os.path.dirname(os.path.abspath(path)) == os.path.join(run_dir(), name) and \
        os.path.basename(path) not in ("", ".", "..")


def mappings_dir() -> str:
    return subdir("mappings")


def record_path(dev_id: str) -> str:
    return os.path.join(mappings_dir(), f"{dev_id}.json")


def socket_path(dev_id: str) -> str:
    return os.path.join(mappings_dir(), f"{dev_id}.sock")


def write_record(rec: dict[str, Any]) -> str:
    """Atomically write ``rec`` (must hold ``id``); returns the file path."""
    path = record_path(str(rec["id"]))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(rec, f, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def remove_record(dev_id: str, pid: int | None = None) -> None:
    """Delete the record (and control socket) of ``dev_id``; with ``pid``, only if
    the record still belongs to that daemon (the id may have been reused)."""
    path = record_path(dev_id)
    if pid is not None:
        rec = read_record(path)
        if rec is not None and rec.get("pid") != pid:
            return
    for p in (path, socket_path(dev_id)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


def read_record(path: str) -> dict[str, Any] | None:
    """The record at ``path`` if it is one we can trust (a regular file of ours not
    writable by others, a numeric id matching the file name, paths inside the run
    dir), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022 \
                or st.st_size > 65536:
            log.warning("ignoring untrusted mapping record %s", path)
            return None
        with os.fdopen(fd, closefd=False) as f:
            rec = json.load(f)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    finally:
        os.close(fd)
    if not isinstance(rec, dict) or not _ID_RE.match(str(rec.get("id", ""))) \
            or os.path.basename(path) != f"{rec['id']}.json":
        return None
    for key, where in (("mountpoint", "mnt"), ("socket", "mappings")):
        if rec.get(key) and not inside(rec[key], where):
            log.warning("ignoring mapping record %s: its %s is outside the run dir", path, key)
            return None
    return rec


def iter_records() -> Iterator[dict[str, Any]]:
    """Every parseable record, sorted by numeric id."""
    d = os.path.join(run_dir(), "mappings")
    if not trusted_dir(run_dir(), create=False) or not trusted_dir(d, create=False):
        return
    names = os.listdir(d)
    recs = []
    for n in names:
        if n.endswith(".json") and not n.startswith("."):
            rec = read_record(os.path.join(d, n))
            if rec is not None:
                recs.append(rec)
    recs.sort(key=lambda r: (int(r["id"]) if str(r["id"]).isdigit() else 1 << 30, str(r["id"])))
    yield from recs


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), None if no such
    live process.  Zombies count as dead."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    rest = data.rsplit(")", 1)[1].split()
    if rest[0] in ("Z", "X"):
        return None
    return int(rest[19])


def daemon_alive(rec: dict[str, Any]) -> bool:
    """True if the daemon recorded in ``rec`` still runs: the pid has the recorded
    start time, belongs to us (euid) and is named ``pyceph-map``.  Only then may it
    be signalled.  (A daemon of an older pyceph, not yet named, is recognized by its
    ``python -m pyceph.cli.prbd _map-daemon`` command line.)"""
    pid = rec.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return False
    st = process_start_time(pid)
    if st is None or rec.get("pid_start") != st:
        return False
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.geteuid():
            return False
        with open(f"/proc/{pid}/comm") as f:
            if f.read().strip() == DAEMON_COMM:
                return True
        # a daemon started before processes were named: prbd's own daemon command line
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        return b"pyceph.cli.prbd" in argv and b"_map-daemon" in argv
    except OSError:
        return False


def reap(pid: int) -> None:
    """Collect ``pid`` if it is our exited child (map_image's caller is its parent)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_mounted(path: str) -> bool:
    """Whether ``path`` is a mount point in this process's mount namespace."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 4 and unescape_mount_field(parts[4]) == path:
                    return True
    except OSError:
        pass
    return False


def unescape_mount_field(s: str) -> str:
    """A field of /proc/self/mountinfo or fstab with its octal escapes (space, tab,
    newline, backslash; getmntent(3)) undone."""
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def lazy_unmount(path: str) -> None:
    """umount2(path, MNT_DETACH); missing or not mounted paths are ignored."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.umount2(os.fsencode(path), 2) != 0:
        e = ctypes.get_errno()
        if e not in (errno.EINVAL, errno.ENOENT):
            raise OSError(e, os.strerror(e), path)
