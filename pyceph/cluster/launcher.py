"""Start, stop and inspect a throw-away Ceph cluster on 127.0.0.1 (pyceph's "vstart").

The cluster runs the real Ceph daemons from the distribution packages (``ceph-mon``,
``ceph-osd``, ``ceph-mgr``) with memstore OSDs, cephx everywhere, and msgr2+msgr1 on the
monitors.  Everything lives in one directory::

    DIR/ceph.conf      client- and daemon config (fsid, mon host, keyring = DIR/keyring)
    DIR/keyring        client.admin key
    DIR/cluster.json   what was started (fsid, ports, daemon names) - marks DIR as ours
    DIR/mon.a/ DIR/mgr.x/ DIR/osd.N/   daemon data (mon store on disk, memstore dumps)
    DIR/log/           daemon logs (NAME.log) and their early stdout/stderr (NAME.out)
    DIR/run/           pid files (NAME.pid) and admin sockets (NAME.asok)

Only ceph.conf, cluster.json and monmap are readable by other users: every key file is
created 0600 (``os.open(..., O_EXCL, 0o600)``, never written and then chmod'ed), every
directory 0700, and every Ceph process (``ceph-mon --mkfs`` writing the mon store, the
daemons writing logs, admin sockets and OSD data, ``ceph ... -o FILE``) runs under
umask 077 (:data:`DAEMON_UMASK`), so nothing it creates is ever readable by others.

Ports come from a block of 128 free ports below the kernel's ephemeral range, so that
several clusters (and Ceph's default ports) never collide.  The ``ceph()``/``rbd()``
helpers shell out to Ceph's own CLI tools; they are meant for tests and the fault
injection harness only - the pyceph client itself never runs them.

Releases: ``start(release="reef")`` runs another Ceph release than the host's.  Its
daemons and tools come from a root filesystem (Debian's packages, built once by
scripts/release-root.sh into $PYCEPH_ROOTS/RELEASE, default /var/cache/pyceph/roots) and
run with ``chroot``, each inside a private mount namespace (``unshare --mount``) in which
the host's /tmp and DIR are bind-mounted at their own paths.  So DIR/ceph.conf, the
keyring, pid files and admin sockets have the same paths inside and outside, and no
mount is ever left behind: it vanishes with the last process of its namespace.
``tool_argv()`` / ``pyceph cluster exec`` run that release's ``rbd``/``ceph``/``rados``.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import json as _json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pyceph import errors

INSTALL_HINT = "apt-get install ceph-mon ceph-osd ceph-mgr ceph-common"
REQUIRED_BINARIES = ("ceph-mon", "ceph-osd", "ceph-mgr", "ceph", "ceph-authtool", "monmaptool", "rbd")

STATE_FILE = "cluster.json"
MGR_ID = "x"
PG_NUM = 8  # fixed and small: stable PG counts, fast peering on 2 cores
PORT_BLOCK = 128
# Ceph's own defaults (mon 3300/6789, daemons 6800-7300) are avoided by starting above them.
PORT_SEARCH_MIN = 10000

ROOTS_DIR = "/var/cache/pyceph/roots"  # $PYCEPH_ROOTS overrides
ROOT_READY = ".pyceph-root-ready"
# Releases the launcher can start, with their major version (src/ceph_release).
RELEASES = {"pacific": 16, "reef": 18, "tentacle": 20}
# cephx key types by their ceph-authtool/monmap name (src/auth/Crypto.h CEPH_CRYPTO_*).
KEY_TYPES = {"aes": 1, "aes256k": 2}
# Tentacle made AES256KRB5 the default key type for every new key.
_FIRST_AES256K_RELEASE = 20
MS_MODES = ("secure", "crc", "legacy")
# Options Debian's Reef/Tentacle packages ship as paths relative to the install prefix;
# a daemon does not run from there, so the launcher makes them absolute.
_PATH_OPTIONS = ("osd_class_dir", "erasure_code_dir", "plugin_dir", "mgr_module_path")

# Environment variables that would make the CLI tools talk to some other cluster or
# load another interpreter's modules.
_ENV_DROP = ("CEPH_CONF", "CEPH_ARGS", "CEPH_KEYRING", "PYTHONPATH", "PYTHONHOME")
# Every Ceph process the launcher runs creates its files (keyrings, mon store, logs,
# sockets) private to root from the start.
DAEMON_UMASK = 0o077


class ClusterError(errors.OSError):
    """The dev cluster could not be started, stopped or queried."""

    errno = errno.EIO


class CephNotInstalled(ClusterError):
    """A required Ceph binary is not on $PATH.  The message carries the install hint."""

    errno = errno.ENOENT


class ClusterRunning(ClusterError):
    """``start()`` was called on a directory whose cluster is still running."""

    errno = errno.EEXIST


class ClusterNotRunning(ClusterError):
    """The operation needs a running cluster (or daemon) and there is none."""

    errno = errno.ENOTCONN


class ClusterStartTimeout(ClusterError, errors.TimedOut):
    """The cluster did not reach the wanted state in time; ``last_status`` is ``ceph -s``."""

    errno = errno.ETIMEDOUT

    def __init__(self, message: str = "", last_status: str = ""):
        super().__init__(message)
        self.last_status = last_status


class CommandFailed(ClusterError):
    """A Ceph CLI command exited non-zero.  ``returncode``, ``stdout``, ``stderr``, ``argv``."""

    def __init__(self, argv: list[str], returncode: int, stdout: str, stderr: str):
        tail = (stderr.strip() or stdout.strip()).splitlines()[-3:]
        # The ceph tools exit with the errno of the failure (22 = EINVAL ...).
        super().__init__(f"`{' '.join(argv)}` exited {returncode}: {' | '.join(tail)}",
                         errno=returncode if 0 < returncode < 134 else None)
        self.argv, self.returncode, self.stdout, self.stderr = argv, returncode, stdout, stderr


# --------------------------------------------------------------------------- helpers


def check_binaries() -> None:
    """Raise :class:`CephNotInstalled` (with the apt-get hint) if a Ceph tool is missing."""
    missing = [b for b in REQUIRED_BINARIES if shutil.which(b) is None]
    if missing:
        raise CephNotInstalled(
            f"Ceph binaries not found: {', '.join(missing)}; install them with: {INSTALL_HINT}"
        )


def gen_cephx_key() -> str:
    """A new random AES (type 1) cephx secret in keyring format (base64 of type, created, len, 16 bytes).

    The launcher itself makes keys with the release's own ``ceph-authtool`` (see
    :meth:`CephRelease.gen_keys`); this is for tests that need a key without a cluster.
    """
    now = time.time()
    raw = struct.pack("<HIIH", 1, int(now), int((now % 1) * 1e9), 16) + os.urandom(16)
    return base64.b64encode(raw).decode()


def key_type_of(key: str) -> int:
    """The cephx key type (1 AES, 2 AES256KRB5) of a keyring-format secret (CryptoKey::decode)."""
    return struct.unpack_from("<H", base64.b64decode(key))[0]


def roots_dir() -> Path:
    """Where release roots live: $PYCEPH_ROOTS, else /var/cache/pyceph/roots."""
    return Path(os.environ.get("PYCEPH_ROOTS") or ROOTS_DIR)


def _release_of_version(text: str) -> str | None:
    # "ceph version 16.2.15 (618f...) pacific (stable)"
    m = re.search(r"ceph version (\d+)\.\S* \(\w+\) (\w+)", text)
    return m.group(2) if m else None


def host_release() -> str | None:
    """The codename of the host's installed Ceph ("pacific"), or None without Ceph."""
    if shutil.which("ceph-osd") is None or shutil.which("ceph") is None:
        return None
    try:
        r = subprocess.run(["ceph", "--version"], capture_output=True, text=True, timeout=30,
                           env=_clean_env(), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return _release_of_version(r.stdout)


def release_root_script() -> Path:
    """scripts/release-root.sh of the source tree this package runs from."""
    return Path(__file__).resolve().parents[2] / "scripts" / "release-root.sh"


def ensure_release_root(release: str, *, root: Path | None = None) -> Path:
    """The root filesystem of ``release``, built with scripts/release-root.sh if missing.

    A ready root (ROOT/.pyceph-root-ready) is returned at once.  A build (minutes; needs
    root and Debian's archive) prints its progress on stderr.  Raises
    :class:`CephNotInstalled` if the script is absent or fails.
    """
    root = root or roots_dir() / release
    if (root / ROOT_READY).exists():
        return root
    script = release_root_script()
    if not script.exists():
        raise CephNotInstalled(
            f"no {release} root in {root} and no {script} to build it; run scripts/release-root.sh {release} "
            "from a pyceph source tree")
    r = subprocess.run(["bash", str(script), release, str(root)], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, text=True, env=_clean_env())
    if r.returncode != 0 or not (root / ROOT_READY).exists():
        raise CephNotInstalled(f"building the {release} root in {root} failed (exit {r.returncode}); "
                               f"see the messages of {script.name} above")
    return root


# Runs "$@" chrooted into $1 in a private mount namespace holding the host's /tmp and the
# cluster dir $2 at their own paths, from working directory $3.
_CHROOT_SH = r"""
root=$1 dir=$2 cwd=$3; shift 3
mount --bind /tmp "$root/tmp" || exit 125
case "$dir" in ""|/tmp/*) ;; *) { mkdir -p "$root$dir" && mount --bind "$dir" "$root$dir"; } || exit 125 ;; esac
mount -t proc proc "$root/proc" || exit 125
# The host's Python settings are not the root's; PYCEPH_ROOT_PYTHONPATH is meant for it.
unset PYTHONHOME PYTHONPATH
[ -z "${PYCEPH_ROOT_PYTHONPATH-}" ] || export PYTHONPATH="$PYCEPH_ROOT_PYTHONPATH"
exec chroot "$root" /usr/bin/env -C "$cwd" "$@"
"""


class CephRelease:
    """Where one Ceph release's daemons and tools run: the host (``root`` None) or a chroot.

    ``name`` is the codename ("pacific", "reef", "tentacle"); ``major`` its version (16...).
    Build one with :meth:`resolve`.
    """

    def __init__(self, name: str, root: Path | None):
        self.name, self.root, self.major = name, root, RELEASES[name]
        self._config: dict[str, str] | None = None

    def __repr__(self) -> str:
        return f"CephRelease({self.name!r}, root={str(self.root) if self.root else None!r})"

    @classmethod
    def resolve(cls, name: str | None = None, *, build: bool = True) -> "CephRelease":
        """The release ``name`` (default: the host's); builds its root if needed and ``build``.

        Raises :class:`errors.InvalidArgumentError` for an unknown name,
        :class:`CephNotInstalled` if neither the host nor a root has it.
        """
        host = host_release()
        if name is None:
            if host is None:
                raise CephNotInstalled(f"Ceph binaries not found; install them with: {INSTALL_HINT} "
                                       f"(or pick a release root: --release {'|'.join(RELEASES)})")
            name = host
        if name not in RELEASES:
            raise errors.InvalidArgumentError(f"unknown Ceph release {name!r}; supported: {', '.join(RELEASES)}")
        if name == host:
            check_binaries()
            return cls(name, None)
        root = roots_dir() / name
        if not (root / ROOT_READY).exists():
            if not build:
                raise CephNotInstalled(f"no {name} root in {root}; build it with scripts/release-root.sh {name}")
            root = ensure_release_root(name, root=root)
        return cls(name, root)

    def argv(self, argv: list[str], *, dir: Path | None = None, cwd: str | None = None) -> list[str]:  # noqa: A002
        """``argv`` as run for this release: unchanged on the host, else chrooted (see module doc).

        ``dir`` (the cluster dir) is made visible inside the root; ``cwd`` (default: ours)
        is kept if it is visible there (under /tmp or ``dir``), else ``/``.
        """
        if self.root is None:
            return list(argv)
        cwd = cwd or os.getcwd()
        d = str(dir) if dir else ""
        if not (cwd == "/tmp" or cwd.startswith("/tmp/") or (d and (cwd == d or cwd.startswith(d + "/")))):
            cwd = "/"
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _CHROOT_SH, "sh",
                str(self.root), d, cwd, *argv]

    def run(self, argv: list[str], timeout: float = 60.0) -> str:
        """Run a tool of this release (no cluster involved); stdout.  Raises :class:`CommandFailed`."""
        r = subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=timeout, env=_clean_env(),
                           stdin=subprocess.DEVNULL, umask=DAEMON_UMASK)
        if r.returncode != 0:
            raise CommandFailed(argv, r.returncode, r.stdout, r.stderr)
        return r.stdout

    def config_defaults(self) -> dict[str, str]:
        """Every option's compiled-in/packaged default (``ceph-conf --show-config``), cached."""
        if self._config is None:
            out = self.run(["ceph-conf", "-c", "/dev/null", "--show-config"])
            self._config = {}
            for line in out.splitlines():
                k, sep, v = line.partition(" = ")
                if sep:
                    self._config[k.strip()] = v.strip()
        return self._config

    def absolute_paths(self) -> dict[str, str]:
        """``{option: absolute path}`` for the path options this release ships relative.

        Debian's Reef/Tentacle set ``osd class dir = lib/x86_64-linux-gnu/rados-classes``
        (relative to the prefix /usr): an OSD not started from /usr never finds cls_rbd.
        Raises :class:`ClusterError` if the class dir holds no cls_rbd.
        """
        conf = self.config_defaults()
        base = self.root or Path("/")
        out = {}
        for opt in _PATH_OPTIONS:
            v = conf.get(opt, "")
            if v and not v.startswith("/"):
                cands = ["/usr/" + v, "/" + v]
                out[opt] = next((c for c in cands if (base / c.lstrip("/")).is_dir()), cands[0])
        cls_dir = out.get("osd_class_dir", conf.get("osd_class_dir", ""))
        if not cls_dir or not any((base / cls_dir.lstrip("/")).glob("libcls_rbd.so*")):
            raise ClusterError(f"{self.name}: no cls_rbd in osd class dir {cls_dir!r}; RBD would not work")
        return out

    @property
    def default_key_type(self) -> str:
        """The key type this release's ``ceph-authtool --gen-key`` makes ("aes" or "aes256k")."""
        return "aes256k" if self.major >= _FIRST_AES256K_RELEASE else "aes"

    def gen_keys(self, n: int, key_type: str | None = None) -> list[str]:
        """``n`` new cephx secrets made by this release's ``ceph-authtool`` (one process).

        ``key_type`` ("aes", "aes256k"; None: the release's default).  Raises
        :class:`errors.InvalidArgumentError` for a type the release does not know.
        """
        kt = key_type or self.default_key_type
        if kt not in KEY_TYPES:
            raise errors.InvalidArgumentError(f"unknown key type {kt!r}; want one of {', '.join(KEY_TYPES)}")
        if kt == "aes256k" and self.major < _FIRST_AES256K_RELEASE:
            raise errors.InvalidArgumentError(f"{self.name} has no {kt} keys (first in tentacle)")
        opt = f" --key-type {kt}" if key_type and self.major >= _FIRST_AES256K_RELEASE else ""
        out = self.run(["sh", "-c", f'i=0; while [ $i -lt {int(n)} ]; do ceph-authtool --gen-print-key{opt} || exit; '
                        "i=$((i+1)); done"], 60)
        keys = out.split()
        if len(keys) != n or any(key_type_of(k) != KEY_TYPES[kt] for k in keys):
            raise ClusterError(f"{self.name} ceph-authtool made {keys and key_type_of(keys[0])} keys, wanted {kt}")
        return keys


def _keyring_entry(entity: str, key: str, caps: dict[str, str] | None = None) -> str:
    lines = [f"[{entity}]", f"\tkey = {key}"]
    for svc, cap in (caps or {}).items():
        lines.append(f'\tcaps {svc} = "{cap}"')
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` (must not exist) mode 0600 and write ``text``: no moment readable by others."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    return env


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_search_range() -> tuple[int, int]:
    """[lo, hi) for port blocks: below the ephemeral range, so outgoing connects can't steal them."""
    try:
        lo_eph, hi_eph = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        lo_eph, hi_eph = 32768, 60999
    if lo_eph - PORT_SEARCH_MIN >= 16 * PORT_BLOCK:
        return PORT_SEARCH_MIN, lo_eph
    return max(hi_eph + 1, PORT_SEARCH_MIN), 65536


class _PortBlock:
    """A block of consecutive free ports, locked (flock) against concurrent launchers.

    The lock only matters while daemons are starting; afterwards the bound mon ports at the
    start of the block make other launchers' probes reject it.
    """

    def __init__(self, needed: int):
        size = PORT_BLOCK * ((needed + PORT_BLOCK - 1) // PORT_BLOCK)
        lo, hi = _port_search_range()
        lockdir = Path(tempfile.gettempdir()) / "pyceph-port-locks"
        lockdir.mkdir(exist_ok=True)
        bases = list(range(lo - lo % PORT_BLOCK + PORT_BLOCK, hi - size, PORT_BLOCK))
        random.shuffle(bases)
        for base in bases:
            fd = os.open(lockdir / f"{base}.lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            if all(_port_free(p) for p in range(base, base + size)):
                self.base, self.size, self._fd = base, size, fd
                return
            os.close(fd)
        raise ClusterError(f"no block of {size} free ports on 127.0.0.1 in [{lo}, {hi})")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (zombies may linger if nobody reaps them)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _reap(pid: int) -> None:
    # Only our own children can be reaped here; daemons fork away and are init's to reap.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _listening_ports(pid: int) -> list[int]:
    """TCP ports the process ``pid`` listens on (from /proc, no cluster query)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return []
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == "0A" and f[9] in inodes:  # 0A = LISTEN
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


def _mon_addrvec(m: dict) -> str:
    """A mon's addrvec for ceph.conf and monmaptool: ``[v2:..,v1:..]``, ``[v1:..]`` if it has no v2 port."""
    v2 = f"v2:127.0.0.1:{m['v2']}," if m.get("v2") else ""
    return f"[{v2}v1:127.0.0.1:{m['v1']}]"


# A Ceph log line: "2026-12-07T20:07:51.879+0000 7f3c2a1fe6c0 -1 mon.a@-1(???) e0 ..."
_LOG_PREFIX = re.compile(r"^\S+T\S+ +[0-9a-f]+ +(-?\d+) +")
_ERROR_WORDS = re.compile(r"error|fail|unable|refus|abort|denied|invalid|cannot|can't|no such|not found|"
                          r"permission|exception|usage", re.I)


def _daemon_words(out_text: str, log_text: str, n: int = 3) -> str:
    """The last meaningful lines a daemon wrote while starting: its stderr's error lines,
    else its log's derr (level -1) lines, else its last lines; joined with " | "."""
    picked: list[str] = []
    out_lines = [_LOG_PREFIX.sub("", x.strip()) for x in out_text.splitlines() if x.strip()]
    log_lines = [x.strip() for x in log_text.splitlines() if x.strip()]
    derr = []
    for x in log_lines:
        m = _LOG_PREFIX.match(x)
        if m and int(m.group(1)) < 0:
            derr.append(x[m.end():])
    for cand in ([x for x in out_lines if _ERROR_WORDS.search(x)], derr, out_lines,
                 [_LOG_PREFIX.sub("", x) for x in log_lines]):
        for x in cand:
            if x not in picked:
                picked.append(x)
        if picked:
            break
    return " | ".join(x[:300] for x in picked[-n:]) or "(it wrote nothing)"


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(1 << 20).decode(errors="replace")
    except OSError:
        return ""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _daemon_type(name: str) -> str:
    kind, _, ident = name.partition(".")
    if kind not in ("mon", "osd", "mgr") or not ident:
        raise errors.InvalidArgumentError(f"bad daemon name {name!r}; want mon.X, mgr.X or osd.N")
    return kind


# --------------------------------------------------------------------------- DevCluster


class DevCluster:
    """A dev cluster living in directory ``dir`` (created if needed).

    Construction is cheap and never touches processes; call :meth:`start` to create a
    fresh cluster, or just use the accessors on an already-running one (e.g. one started
    by ``pyceph cluster start`` in another process).
    """

    def __init__(self, dir: str | os.PathLike[str]):  # noqa: A002 - the brief's name
        self.dir = Path(dir).expanduser().resolve()
        self.conf_path = self.dir / "ceph.conf"
        self.keyring_path = self.dir / "keyring"
        self.log_dir = self.dir / "log"
        self.run_dir = self.dir / "run"
        self._state_path = self.dir / STATE_FILE
        self._release: CephRelease | None = None

    # -- persisted state -----------------------------------------------------

    @property
    def state(self) -> dict[str, Any]:
        """The contents of DIR/cluster.json; raises :class:`ClusterNotRunning` if absent."""
        try:
            return _json.loads(self._state_path.read_text())
        except FileNotFoundError:
            raise ClusterNotRunning(f"no cluster in {self.dir} (no {STATE_FILE})") from None

    @property
    def fsid(self) -> str:
        """The cluster fsid (UUID string)."""
        return self.state["fsid"]

    @property
    def release(self) -> CephRelease:
        """The Ceph release whose daemons and tools this cluster runs (cluster.json; else the host's)."""
        if self._release is None:
            try:
                st = self.state
            except ClusterNotRunning:
                st = {}
            if st.get("release"):
                self._release = CephRelease(st["release"], Path(st["root"]) if st.get("root") else None)
            else:
                self._release = CephRelease.resolve(None)
        return self._release

    @property
    def ms_mode(self) -> str | None:
        """The on-wire mode the cluster requires ("secure", "crc", "legacy") or None (Ceph's defaults)."""
        return self.state.get("ms_mode")

    @property
    def mon_addrs(self) -> list[str]:
        """Every monitor address as ``"v2:127.0.0.1:P"`` / ``"v1:127.0.0.1:P"`` strings (v1 only if legacy)."""
        out = []
        for m in self.state["mons"]:
            if m.get("v2"):
                out.append(f"v2:127.0.0.1:{m['v2']}")
            out.append(f"v1:127.0.0.1:{m['v1']}")
        return out

    @property
    def mon_host(self) -> str:
        """The ``mon host`` value of ceph.conf (``[v2:..,v1:..] [v2:..,v1:..]``)."""
        return self.state["mon_host"]

    @property
    def admin_key(self) -> str:
        """client.admin's cephx secret, base64 as in a keyring file."""
        for line in self.keyring_path.read_text().splitlines():
            k, _, v = line.strip().partition("=")
            if k.strip() == "key":
                return v.strip()
        raise ClusterError(f"no key in {self.keyring_path}")

    @property
    def daemon_names(self) -> list[str]:
        """``["mon.a", ..., "mgr.x", "osd.0", ...]`` as configured at start."""
        st = self.state
        return [f"mon.{m['id']}" for m in st["mons"]] + [f"mgr.{MGR_ID}"] + [
            f"osd.{i}" for i in range(st["osds"])
        ]

    def pidfile(self, name: str) -> Path:
        """DIR/run/NAME.pid (written by the daemon itself)."""
        return self.run_dir / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        """Pid of daemon ``name`` ("osd.0") if it runs (checked against its command line)."""
        try:
            pid = int(self.pidfile(name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if _pid_alive(pid) and str(self.conf_path) in _proc_cmdline(pid):
            return pid
        return None

    def pids(self) -> dict[str, int | None]:
        """``{daemon name: pid or None}`` for every configured daemon."""
        try:
            names = self.daemon_names
        except ClusterNotRunning:
            return {}
        return {n: self.pid(n) for n in names}

    def is_running(self) -> bool:
        """True if any daemon of this cluster is alive."""
        return any(p is not None for p in self.pids().values()) or bool(self._stray_pids())

    def _stray_pids(self) -> list[int]:
        """Any Ceph process (daemon or CLI tool) whose command line names our ceph.conf."""
        conf, me, out = str(self.conf_path), os.getpid(), []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            argv = _proc_cmdline(int(entry))
            if conf in argv and any(
                os.path.basename(a).startswith(("ceph", "rbd", "rados", "monmaptool")) for a in argv[:2]
            ) and _pid_alive(int(entry)):
                out.append(int(entry))
        return out

    # -- CLI helpers -----------------------------------------------------------

    def tool_argv(self, *argv: str, cwd: str | None = None) -> list[str]:
        """``argv`` (a Ceph tool and its arguments) as run for this cluster's release.

        The host's tool for the host's release; otherwise chrooted into the release root
        with DIR and /tmp visible (file arguments must live there, or use ``-``).
        Run it with :meth:`tool_env` so the tool finds DIR/ceph.conf by itself.
        """
        return self.release.argv([str(a) for a in argv], dir=self.dir, cwd=cwd)

    def tool_env(self) -> dict[str, str]:
        """Our environment without foreign Ceph settings, with CEPH_CONF = DIR/ceph.conf."""
        return {**_clean_env(), "CEPH_CONF": str(self.conf_path)}

    def _run(self, argv: list[str], timeout: float, input: str | None = None) -> str:
        try:
            r = subprocess.run(
                self.tool_argv(*argv), capture_output=True, text=True, timeout=timeout, env=_clean_env(), input=input,
                stdin=None if input is not None else subprocess.DEVNULL, umask=DAEMON_UMASK,
            )
        except subprocess.TimeoutExpired as e:
            raise ClusterStartTimeout(f"{' '.join(argv[:6])}... timed out after {timeout}s") from e
        except FileNotFoundError as e:
            raise CephNotInstalled(f"{argv[0]} not found; install with: {INSTALL_HINT}") from e
        if r.returncode != 0:
            raise CommandFailed(argv, r.returncode, r.stdout, r.stderr)
        return r.stdout

    def ceph(self, *args: str, json: bool = True, timeout: float = 60.0, input: str | None = None) -> Any:
        """Run ``ceph -c DIR/ceph.conf ARGS`` and return parsed JSON (or stdout if json=False).

        Raises :class:`CommandFailed` on non-zero exit, :class:`ClusterStartTimeout` after
        ``timeout`` seconds.  For tests and the fault-injection harness only.
        """
        argv = ["ceph", "-c", str(self.conf_path), "--connect-timeout", str(int(max(1, timeout)))]
        argv += [str(a) for a in args]
        if json:
            argv += ["-f", "json"]
        out = self._run(argv, timeout, input)
        if json:
            return _json.loads(out) if out.strip() else None
        return out

    def rbd(self, *args: str, timeout: float = 60.0) -> str:
        """Run the release's ``rbd -c DIR/ceph.conf ARGS`` and return stdout.  Raises :class:`CommandFailed`."""
        return self._run(["rbd", "-c", str(self.conf_path), *map(str, args)], timeout)

    def rados(self, *args: str, timeout: float = 60.0) -> str:
        """Run the release's ``rados -c DIR/ceph.conf ARGS`` and return stdout.  Raises :class:`CommandFailed`."""
        return self._run(["rados", "-c", str(self.conf_path), *map(str, args)], timeout)

    # -- pools -----------------------------------------------------------------

    def create_pool(
        self,
        name: str,
        pg_num: int = PG_NUM,
        pool_type: str = "replicated",
        *,
        size: int | None = None,
        ec_k: int = 2,
        ec_m: int = 1,
        application: str | None = "rbd",
        allow_ec_overwrites: bool = True,
        wait_clean: bool = True,
        timeout: float = 120.0,
    ) -> None:
        """Create pool ``name`` with ``pg_num`` PGs (autoscale off) and enable ``application``.

        ``pool_type`` is ``"replicated"`` (``size`` replicas, default: the cluster default)
        or ``"erasure"`` (profile ``pyceph-k{ec_k}m{ec_m}``, failure domain osd, with
        ``allow_ec_overwrites`` so it can hold RBD data).  Waits until all PGs are
        active+clean unless ``wait_clean`` is false.  Raises :class:`CommandFailed`
        (e.g. errno EEXIST if the pool exists with another type) or
        :class:`ClusterStartTimeout`.
        """
        if pool_type == "replicated":
            self.ceph("osd", "pool", "create", name, str(pg_num), str(pg_num), "replicated", json=False)
            if size is not None:
                self.ceph("osd", "pool", "set", name, "size", str(size), json=False)
        elif pool_type == "erasure":
            profile = f"pyceph-k{ec_k}m{ec_m}"
            self.ceph(
                "osd", "erasure-code-profile", "set", profile, f"k={ec_k}", f"m={ec_m}",
                "crush-failure-domain=osd", json=False,
            )
            self.ceph("osd", "pool", "create", name, str(pg_num), str(pg_num), "erasure", profile, json=False)
            if allow_ec_overwrites:
                self.ceph("osd", "pool", "set", name, "allow_ec_overwrites", "true", json=False)
        else:
            raise errors.InvalidArgumentError(f"pool_type must be 'replicated' or 'erasure', not {pool_type!r}")
        self.ceph("osd", "pool", "set", name, "pg_autoscale_mode", "off", json=False)
        if application:
            self.ceph("osd", "pool", "application", "enable", name, application, "--yes-i-really-mean-it", json=False)
        if wait_clean:
            self.wait_clean(timeout)

    def delete_pool(self, name: str) -> None:
        """Delete pool ``name`` (the cluster allows pool deletion).  Raises :class:`CommandFailed`."""
        self.ceph("osd", "pool", "delete", name, name, "--yes-i-really-really-mean-it", json=False)

    # -- waiting -----------------------------------------------------------------

    def wait_clean(self, timeout: float = 120.0, *, osds: int | None = None) -> dict:
        """Poll ``ceph status`` until every PG is active+clean and all OSDs are up and in.

        Returns the final status dict.  Raises :class:`ClusterStartTimeout` (carrying the
        last ``ceph -s`` text) after ``timeout`` seconds.
        """
        want_osds = self.state["osds"] if osds is None else osds
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                st = self.ceph("status", timeout=15)
                last = st
                # The mgr may not have seen a just-created pool's PGs yet: compare with the osdmap.
                if self._is_clean(st, want_osds) and st["pgmap"]["num_pgs"] == sum(
                    p["pg_num"] for p in self.ceph("osd", "pool", "ls", "detail", timeout=15)
                ):
                    return st
            except ClusterError as e:
                last = str(e)
            if time.monotonic() > deadline:
                raise ClusterStartTimeout(
                    f"cluster in {self.dir} not active+clean after {timeout:.0f}s; last ceph -s:\n"
                    + self._status_text(last),
                    last_status=self._status_text(last),
                )
            time.sleep(0.5)

    @staticmethod
    def _is_clean(st: dict, want_osds: int) -> bool:
        om = st.get("osdmap", {})
        om = om.get("osdmap", om)  # older releases nest it
        pgmap = st.get("pgmap", {})
        num_pgs = pgmap.get("num_pgs", 0)
        clean = sum(s["count"] for s in pgmap.get("pgs_by_state", []) if s["state_name"] == "active+clean")
        return (
            om.get("num_up_osds") == want_osds
            and om.get("num_in_osds") == want_osds
            and num_pgs > 0
            and clean == num_pgs
            and st.get("mgrmap", {}).get("available", True)
        )

    def _status_text(self, last: Any) -> str:
        if isinstance(last, dict):
            try:
                return self.ceph("-s", json=False, timeout=15)
            except ClusterError:
                return _json.dumps(last, indent=1)
        return str(last)

    # -- start / stop --------------------------------------------------------------

    def start(
        self,
        mons: int = 1,
        osds: int = 3,
        conf: dict[str, Any] | None = None,
        *,
        timeout: float = 180.0,
        release: str | None = None,
        ms_mode: str | None = None,
        client_key_type: str | None = None,
    ) -> float:
        """Create and start a fresh cluster; return the seconds it took.

        ``mons`` monitors (1..26), ``osds`` memstore OSDs (>= 1), ``conf`` extra
        ``[global]`` options (``{"debug ms": 20}``).  ``release`` ("pacific", "reef",
        "tentacle"; default the host's) picks the daemons and tools (a missing release
        root is built first, see :func:`ensure_release_root`).  ``ms_mode`` "secure" /
        "crc" requires that msgr2 mode of every connection, "legacy" makes a msgr1-only
        cluster (v1 addresses only).  Keys are made by the release's ``ceph-authtool``
        in its default type; ``client_key_type`` ("aes", "aes256k") gives client.admin
        another type, as in a cluster upgraded to Tentacle (both ciphers allowed, service
        keys stay in the default type).  Wipes leftovers of a stopped cluster
        in DIR.  Returns once all PGs are active+clean (pool ``rbd`` created and
        initialised).  Raises :class:`CephNotInstalled`, :class:`ClusterRunning` (DIR's
        cluster is alive; nothing is touched), :class:`ClusterError` (DIR holds
        unrelated files), :class:`ClusterStartTimeout` or :class:`CommandFailed`; on
        failure every daemon already started is stopped again.
        """
        if not 1 <= mons <= 26 or osds < 1:
            raise errors.InvalidArgumentError(f"need 1..26 mons and >= 1 OSD, got {mons} and {osds}")
        if ms_mode not in (None, *MS_MODES):
            raise errors.InvalidArgumentError(f"ms_mode must be one of {', '.join(MS_MODES)}, not {ms_mode!r}")
        if client_key_type not in (None, *KEY_TYPES):
            raise errors.InvalidArgumentError(
                f"client key type must be one of {', '.join(KEY_TYPES)}, not {client_key_type!r}")
        t0 = time.monotonic()
        rel = CephRelease.resolve(release)
        if client_key_type == "aes256k" and rel.major < _FIRST_AES256K_RELEASE:
            raise errors.InvalidArgumentError(f"{rel.name} has no aes256k keys (first in tentacle)")
        self._prepare_dir()
        self._release = rel
        ports = _PortBlock(2 * mons + 10 * osds + 16)
        try:
            self._write_config(mons, osds, ports, conf or {}, ms_mode=ms_mode, client_key_type=client_key_type)
            self._bootstrap(timeout=timeout - (time.monotonic() - t0))
        except BaseException:
            try:
                self.stop()
            except ClusterError:
                pass
            raise
        finally:
            ports.release()
        elapsed = time.monotonic() - t0
        st = self.state
        st["start_seconds"] = round(elapsed, 1)
        self._write_state(st)
        return elapsed

    def _prepare_dir(self) -> None:
        if self.dir.exists():
            if self.is_running():
                raise ClusterRunning(
                    f"a cluster is already running in {self.dir}; stop it first (pyceph cluster stop --dir {self.dir})"
                )
            if any(self.dir.iterdir()) and not self._state_path.exists() and not self.conf_path.exists():
                raise ClusterError(f"{self.dir} is not empty and holds no pyceph cluster; refusing to wipe it")
            for child in self.dir.iterdir():  # stopped cluster's leftovers
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        self.dir.mkdir(parents=True, exist_ok=True)
        # Logs may hold secrets (debug auth), run/ holds admin sockets: private from creation.
        for d in (self.log_dir, self.run_dir, self.dir / "crash"):
            d.mkdir(mode=0o700)

    def _write_state(self, st: dict) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(_json.dumps(st, indent=1) + "\n")
        tmp.replace(self._state_path)

    def _write_config(self, mons: int, osds: int, ports: _PortBlock, extra: dict[str, Any], *,
                      ms_mode: str | None = None, client_key_type: str | None = None) -> None:
        fsid = str(uuid.uuid4())
        legacy = ms_mode == "legacy"
        mon_list = [
            {"id": chr(ord("a") + i), "v2": None if legacy else ports.base + 2 * i, "v1": ports.base + 2 * i + 1}
            for i in range(mons)
        ]
        bind_min, bind_max = ports.base + 2 * mons, ports.base + ports.size - 1
        mon_host = " ".join(_mon_addrvec(m) for m in mon_list)
        rel = self.release
        d = self.dir
        size = min(osds, 3)
        glob: dict[str, Any] = {
            "fsid": fsid,
            "mon host": mon_host,
            "keyring": str(self.keyring_path),
            "auth cluster required": "cephx",
            "auth service required": "cephx",
            "auth client required": "cephx",
            "auth allow insecure global id reclaim": "false",
            "osd pool default size": size,
            "osd pool default min size": size - size // 2,
            "osd pool default pg num": PG_NUM,
            "osd pool default pgp num": PG_NUM,
            "osd pool default pg autoscale mode": "off",
            "osd crush chooseleaf type": 0,  # all OSDs share one host
            "mon allow pool delete": "true",
        }
        # Paths the release ships relative (osd class dir ...): absolute, or no cls_rbd.
        glob.update({k.replace("_", " "): v for k, v in rel.absolute_paths().items()})
        if ms_mode == "legacy":
            glob["ms bind msgr2"] = "false"
        elif ms_mode:
            for who in ("cluster", "service", "client"):
                glob[f"ms {who} mode"] = ms_mode
                glob[f"ms mon {who} mode"] = ms_mode
        for k, v in extra.items():
            glob[str(k).replace("_", " ")] = v
        daemon = {  # shared by mon, mgr and osd; clients ignore these sections
            "log file": f"{d}/log/$name.log",
            "admin socket": f"{d}/run/$name.asok",
            "pid file": f"{d}/run/$name.pid",
            "run dir": f"{d}/run",
            "crash dir": f"{d}/crash",
            "keyring": f"{d}/$name/keyring",
            "public addr": "127.0.0.1",
            "cluster addr": "127.0.0.1",
            "ms bind port min": bind_min,
            "ms bind port max": bind_max,
            # A daemon failing at start-up (no mon data, bad option...) logs through an async
            # thread that exit() may beat: flush at exit, and send errors to DIR/log/NAME.out too.
            "err to stderr": "true",
            "log flush on exit": "true",
        }
        sections = {
            "global": glob,
            "mon": {
                **daemon,
                "mon data": f"{d}/$name",
                "mon cluster log file": f"{d}/log/cluster.log",
                "mon data avail warn": 2,
                "mon data avail crit": 1,
                "mon warn on pool no redundancy": "false",
                "mon warn on pool pg num not power of two": "false",  # tests use pg_num 12
                "mon osd reporter subtree level": "osd",  # one host: OSDs report each other down
                "mon pg warn min per osd": 0,
                # memstore OSDs: let EC pools take overwrites (RBD data on EC), as vstart does
                "mon debug no require bluestore for ec overwrites": "true",
                "mgr initial modules": "iostat",  # no restful/nfs/dashboard: faster mgr start
            },
            "mgr": {**daemon, "mgr data": f"{d}/$name", "mgr stats period": 1},
            "osd": {
                **daemon,
                "osd data": f"{d}/$name",
                "osd objectstore": "memstore",
                # RAM-backed and allocated as written: room for benchmarks on a 24 GiB host.
                "memstore device bytes": int(os.environ.get("PYCEPH_MEMSTORE_BYTES", 3 << 30)),
                "osd memory target": 939524096,  # the minimum Ceph accepts
                "osd mon report interval": 1,
                "osd check max object name len on startup": "false",
                # Graceful stop unmounts memstore, which saves its data to disk for a restart.
                "osd fast shutdown": "false",
            },
        }
        for opts in list(sections.values())[1:]:  # caller's options win over our section defaults
            for k in {str(x).replace("_", " ") for x in extra} & opts.keys():
                del opts[k]
        text = "; written by pyceph.cluster - regenerated by every `pyceph cluster start`\n"
        for sec, opts in sections.items():
            text += f"[{sec}]\n" + "".join(
                f"\t{k} = {str(v).lower() if isinstance(v, bool) else v}\n" for k, v in opts.items()
            ) + "\n"
        self.conf_path.write_text(text)

        self._write_state(
            {
                "fsid": fsid,
                "mons": mon_list,
                "mon_host": mon_host,
                "osds": osds,
                "release": rel.name,
                "root": str(rel.root) if rel.root else None,
                "ms_mode": ms_mode,
                "client_key_type": client_key_type,
                "osd_uuids": [str(uuid.uuid4()) for _ in range(osds)],
                "port_block": [ports.base, ports.base + ports.size - 1],
                "ms_bind_port_range": [bind_min, bind_max],
                "conf": {str(k): v for k, v in extra.items()},
            }
        )

    def _bootstrap(self, timeout: float) -> None:
        t0 = time.monotonic()
        st = self.state
        rel = self.release
        # Keys come from the release's own ceph-authtool, in its default type (Tentacle:
        # AES256KRB5); client.admin may get another type (an upgraded cluster).
        service_type = rel.default_key_type
        client_type = st.get("client_key_type") or service_type
        keys = rel.gen_keys(st["osds"] + 3)
        admin = keys[0] if client_type == service_type else rel.gen_keys(1, client_type)[0]
        mon_key, mgr_key, osd_keys = keys[1], keys[2], keys[3:]
        admin_entry = _keyring_entry(
            "client.admin", admin, {"mds": "allow *", "mon": "allow *", "osd": "allow *", "mgr": "allow *"})
        _write_private(self.keyring_path, admin_entry)
        # Pre-register mgr and OSD keys in the initial mon store: saves one CLI round trip each.
        mon_keyring = self.dir / "mon.keyring"
        _write_private(
            mon_keyring,
            _keyring_entry("mon.", mon_key, {"mon": "allow *"})
            + admin_entry
            + _keyring_entry(f"mgr.{MGR_ID}", mgr_key, {"mon": "allow profile mgr", "osd": "allow *", "mds": "allow *"})
            + "".join(
                _keyring_entry(f"osd.{i}", k, {"mon": "allow profile osd", "mgr": "allow profile osd", "osd": "allow *"})
                for i, k in enumerate(osd_keys)
            )
        )
        monmap = self.dir / "monmap"
        # The release's monmaptool sets min_mon_release to its own release (a Tentacle mon
        # refuses a map "more than two releases older than installed").
        argv = ["monmaptool", "--create", "--fsid", st["fsid"], "--enable-all-features"]
        if client_type != service_type:  # monmap's auth_allowed_ciphers (Tentacle): allow both
            argv += ["--auth-allowed-ciphers", f"{service_type},{client_type}",
                     "--auth-service-cipher", service_type, "--auth-preferred-cipher", service_type]
        for m in st["mons"]:
            argv += ["--addv", m["id"], _mon_addrvec(m)]
        self._run([*argv, str(monmap)], 30)

        conf = str(self.conf_path)

        def mkfs_mon(m: dict) -> None:
            self._run(["ceph-mon", "-c", conf, "--mkfs", "-i", m["id"], "--monmap", str(monmap),
                       "--keyring", str(mon_keyring)], 60)
            # RocksDB makes store.db 0755 whatever the umask; its parent DIR/mon.ID was
            # created 0700 under our umask, so this only tidies, it closes no window.
            for sub in (self.dir / f"mon.{m['id']}").rglob("*"):
                if sub.is_dir() and not sub.is_symlink() and sub.stat().st_mode & 0o077:
                    sub.chmod(0o700)

        with ThreadPoolExecutor(max(st["osds"], len(st["mons"]))) as pool:
            list(pool.map(mkfs_mon, st["mons"]))
            list(pool.map(self.start_daemon, [f"mon.{m['id']}" for m in st["mons"]]))

            # One `ceph` process creates every OSD id (commands read from stdin).  It also
            # waits for quorum: daemons started before it may be refused while mons elect.
            cmds = "".join(f"osd new {u} {i}\n" for i, u in enumerate(st["osd_uuids"]))
            self.ceph(json=False, input=cmds, timeout=60)

            mgr_dir = self.dir / f"mgr.{MGR_ID}"
            mgr_dir.mkdir(mode=0o700)
            _write_private(mgr_dir / "keyring", _keyring_entry(f"mgr.{MGR_ID}", mgr_key))
            self.start_daemon(f"mgr.{MGR_ID}")

            def mkfs_and_start_osd(i: int) -> None:
                odir = self.dir / f"osd.{i}"
                odir.mkdir(mode=0o700)
                _write_private(odir / "keyring", _keyring_entry(f"osd.{i}", osd_keys[i]))
                self._run(["ceph-osd", "-c", conf, "--mkfs", "-i", str(i), "--osd-uuid", st["osd_uuids"][i]], 120)
                self.start_daemon(f"osd.{i}")

            list(pool.map(mkfs_and_start_osd, range(st["osds"])))

        self.ceph("osd", "pool", "create", "rbd", str(PG_NUM), str(PG_NUM), "replicated", json=False)
        self.rbd("pool", "init", "rbd", timeout=max(30.0, timeout - (time.monotonic() - t0)))
        self.wait_clean(max(10.0, timeout - (time.monotonic() - t0)))

    # -- daemons -------------------------------------------------------------------

    def start_daemon(self, name: str) -> int:
        """Start daemon ``name`` ("osd.1", "mon.a", "mgr.x") of an existing cluster; return its pid.

        The daemon forks into the background itself; this returns when it finished
        initialising.  Raises :class:`ClusterRunning` if it already runs,
        :class:`ClusterError` if it exits with an error (message points at its log).
        """
        kind = _daemon_type(name)
        ident = name.split(".", 1)[1]
        if self.pid(name) is not None:
            raise ClusterRunning(f"{name} is already running (pid {self.pid(name)})")
        self.pidfile(name).unlink(missing_ok=True)
        out = self.log_dir / f"{name}.out"
        log = self.log_dir / f"{name}.log"
        out_at, log_at = _size(out), _size(log)
        argv = [f"ceph-{kind}", "-c", str(self.conf_path), "-i", ident]
        env = _clean_env()
        if kind == "mgr" and (shim := self._mgr_bcrypt_shim()):
            env["PYCEPH_ROOT_PYTHONPATH"] = str(shim)
        with open(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600), "ab") as f:
            # The parent exits once the forked daemon has initialised (or failed to).
            p = subprocess.Popen(
                self.tool_argv(*argv), stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, umask=DAEMON_UMASK,
            )
        try:
            rc = p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc = -9

        def words() -> str:
            return _daemon_words(_read_from(out, out_at), _read_from(log, log_at))

        if rc != 0:
            raise ClusterError(f"{name} ({self.release.name}) failed to start (exit {rc}): {words()} "
                               f"(log: {log})")
        deadline = time.monotonic() + 10
        while (pid := self.pid(name)) is None:
            if time.monotonic() > deadline:
                raise ClusterError(f"{name} ({self.release.name}) started but wrote no pid file "
                                   f"{self.pidfile(name)} within 10s: {words()} (log: {log})")
            time.sleep(0.05)
        return pid

    def _mgr_bcrypt_shim(self) -> Path | None:
        """A directory with a stand-in ``bcrypt`` module for a mgr that cannot import the real one.

        Reef's mgr_util imports bcrypt at module level, and Debian trixie's bcrypt is a PyO3
        module, which refuses to load in the mgr's Python subinterpreters: every mgr module
        fails ("PyO3 modules do not yet support subinterpreters").  Only the dashboard
        hashes passwords with it, so the stand-in raises ImportError on first use instead.
        None where the release's mgr_util does not import bcrypt at load time.
        """
        root = self.release.root
        if root is None:
            return None
        try:
            util = (root / "usr/share/ceph/mgr/mgr_util.py").read_text()
        except OSError:
            return None
        if not re.search(r"^import bcrypt$", util, re.M):
            return None
        shim = self.dir / "mgr-pyshim"
        shim.mkdir(mode=0o700, exist_ok=True)
        if (shim / "bcrypt.py").exists():  # a restarted mgr
            return shim
        _write_private(
            shim / "bcrypt.py",
            '"""pyceph dev cluster: stand-in for bcrypt, a PyO3 module the mgr\'s subinterpreters cannot load."""\n\n\n'
            "def __getattr__(name):\n"
            '    raise ImportError(f"bcrypt.{name}: bcrypt cannot load in ceph-mgr subinterpreters (PyO3)")\n'
        )
        return shim

    def kill(self, name: str, sig: int = signal.SIGKILL, *, wait: float = 10.0) -> None:
        """Send ``sig`` (default SIGKILL) to daemon ``name`` and wait until it is gone.

        With SIGKILL a memstore OSD loses everything written since its last clean stop.
        Raises :class:`ClusterNotRunning` if the daemon is not running,
        :class:`ClusterError` if it survives ``wait`` seconds.
        """
        _daemon_type(name)
        pid = self.pid(name)
        if pid is None:
            raise ClusterNotRunning(f"{name} is not running")
        os.kill(pid, sig)
        if not self._wait_gone([pid], wait):
            raise ClusterError(f"{name} (pid {pid}) still alive {wait}s after signal {sig}")
        self.pidfile(name).unlink(missing_ok=True)

    def restart(self, name: str, *, timeout: float = 30.0) -> int:
        """Stop daemon ``name`` (SIGTERM, then SIGKILL) if it runs, start it again; return its pid."""
        pid = self.pid(name)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            if not self._wait_gone([pid], timeout):
                os.kill(pid, signal.SIGKILL)
                self._wait_gone([pid], 10)
        return self.start_daemon(name)

    @staticmethod
    def _wait_gone(pids: list[int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            for p in pids:
                _reap(p)
            if not any(_pid_alive(p) for p in pids):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every daemon: SIGTERM, SIGKILL after ``timeout`` s, then verify none is left.

        Also kills stray Ceph CLI tools still using DIR/ceph.conf.  Idempotent; data stays
        on disk until the next :meth:`start`.  Raises :class:`ClusterError` if a process
        survives SIGKILL.
        """
        # OSDs first, while the mons can still take their "I am going down" message.
        daemons = self.pids()
        groups = [[p for n, p in daemons.items() if n.startswith(k) and p] for k in ("osd.", "mgr.", "mon.")]
        groups.append(self._stray_pids())
        pids: set[int] = set()
        for group in groups:
            pids |= set(group)
            for p in group:
                try:
                    os.kill(p, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            if not self._wait_gone(group, timeout):
                for p in group:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self._wait_gone(group, 10)
        left = [p for p in set(self._stray_pids()) | pids if _pid_alive(p)]
        if left:
            raise ClusterError(f"processes of {self.dir} survived SIGKILL: {left}")
        for f in self.run_dir.glob("*.pid") if self.run_dir.exists() else ():
            f.unlink(missing_ok=True)

    # -- status --------------------------------------------------------------------

    def status(self, *, health_timeout: float = 10.0) -> dict[str, Any]:
        """Describe the cluster as a JSON-able dict.

        Keys: ``dir``, ``running`` (bool), ``fsid``, ``conf``, ``keyring``, ``mon_host``,
        ``release`` (codename), ``root`` (its root filesystem or None), ``ms_mode``,
        ``daemons`` (``[{"name", "pid" (int|None), "running", "ports": [int]}]``),
        ``health`` (``HEALTH_OK``/``HEALTH_WARN``/... or None if not running or the
        monitors did not answer within ``health_timeout`` s), ``health_checks``
        (check name -> summary), ``num_pgs``, ``pgs_by_state``.  Never raises for a
        stopped or absent cluster.
        """
        out: dict[str, Any] = {"dir": str(self.dir), "running": False, "daemons": [], "health": None}
        try:
            st = self.state
        except ClusterNotRunning:
            return out
        out.update(fsid=st["fsid"], conf=str(self.conf_path), keyring=str(self.keyring_path),
                   mon_host=st["mon_host"], start_seconds=st.get("start_seconds"), release=st.get("release"),
                   root=st.get("root"), ms_mode=st.get("ms_mode"))
        for name, pid in self.pids().items():
            out["daemons"].append(
                {"name": name, "pid": pid, "running": pid is not None, "ports": _listening_ports(pid) if pid else []}
            )
        out["running"] = any(d["running"] for d in out["daemons"])
        if out["running"]:
            try:
                s = self.ceph("status", timeout=health_timeout)
                out["health"] = s["health"]["status"]
                out["health_checks"] = {k: v["summary"]["message"] for k, v in s["health"].get("checks", {}).items()}
                out["num_pgs"] = s.get("pgmap", {}).get("num_pgs")
                out["pgs_by_state"] = {x["state_name"]: x["count"] for x in s.get("pgmap", {}).get("pgs_by_state", [])}
            except ClusterError as e:
                out["health_error"] = str(e)
        return out
