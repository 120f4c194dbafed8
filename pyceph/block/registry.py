"""Where mappings are recorded: one JSON file per mapped device under the run dir.

Layout (run dir = ``$PYCEPH_RUN_DIR`` or ``/run/pyceph``)::

    mappings/<id>.json   id, pool, namespace, name, snap, device, pid, pid_start,
                         mountpoint, read_only, direct_io, trim, socket, log
    mappings/<id>.sock   the daemon's control socket
    mnt/                 FUSE mount points (regular files)
    log/                 one log file per daemon (its stdout/stderr)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from typing import Any, Iterator

RUN_DIR_ENV = "PYCEPH_RUN_DIR"
DEFAULT_RUN_DIR = "/run/pyceph"

# the fields `rbd showmapped --format json` prints, in its order (all strings)
SHOWMAPPED_FIELDS = ("id", "pool", "namespace", "name", "snap", "device")


def run_dir() -> str:
    return os.environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR


def subdir(name: str) -> str:
    """``<run dir>/<name>``, created (mode 0700) if missing."""
    path = os.path.join(run_dir(), name)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


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
    try:
        with open(path) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and "id" in rec else None


def iter_records() -> Iterator[dict[str, Any]]:
    """Every parseable record, sorted by numeric id."""
    d = os.path.join(run_dir(), "mappings")
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return
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
    """True if the daemon recorded in ``rec`` still runs (pid plus start time match)."""
    pid = rec.get("pid")
    if not isinstance(pid, int):
        return False
    st = process_start_time(pid)
    return st is not None and (rec.get("pid_start") in (None, st))


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
                if len(parts) > 4 and _unescape(parts[4]) == path:
                    return True
    except OSError:
        pass
    return False


def _unescape(s: str) -> str:
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
