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

Ports come from a block of 128 free ports below the kernel's ephemeral range, so that
several clusters (and Ceph's default ports) never collide.  The ``ceph()``/``rbd()``
helpers shell out to Ceph's own CLI tools; they are meant for tests and the fault
injection harness only - the pyceph client itself never runs them.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import json as _json
import os
import random
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

# Environment variables that would make the CLI tools talk to some other cluster or
# load another interpreter's modules.
_ENV_DROP = ("CEPH_CONF", "CEPH_ARGS", "CEPH_KEYRING", "PYTHONPATH", "PYTHONHOME")


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
    """A new random cephx secret in keyring format (base64 of type, created, len, 16 bytes)."""
    now = time.time()
    raw = struct.pack("<HIIH", 1, int(now), int((now % 1) * 1e9), 16) + os.urandom(16)
    return base64.b64encode(raw).decode()


def _keyring_entry(entity: str, key: str, caps: dict[str, str] | None = None) -> str:
    lines = [f"[{entity}]", f"\tkey = {key}"]
    for svc, cap in (caps or {}).items():
        lines.append(f'\tcaps {svc} = "{cap}"')
    return "\n".join(lines) + "\n"


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
    def mon_addrs(self) -> list[str]:
        """Every monitor address as ``"v2:127.0.0.1:P"`` / ``"v1:127.0.0.1:P"`` strings."""
        out = []
        for m in self.state["mons"]:
            out += [f"v2:127.0.0.1:{m['v2']}", f"v1:127.0.0.1:{m['v1']}"]
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

    def _run(self, argv: list[str], timeout: float, input: str | None = None) -> str:
        try:
            r = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, env=_clean_env(), input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
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
        """Run ``rbd -c DIR/ceph.conf ARGS`` and return stdout.  Raises :class:`CommandFailed`."""
        return self._run(["rbd", "-c", str(self.conf_path), *map(str, args)], timeout)

    def rados(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rados -c DIR/ceph.conf ARGS`` and return stdout.  Raises :class:`CommandFailed`."""
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
    ) -> float:
        """Create and start a fresh cluster; return the seconds it took.

        ``mons`` monitors (1..26), ``osds`` memstore OSDs (>= 1), ``conf`` extra
        ``[global]`` options (``{"debug ms": 20}``).  Wipes leftovers of a stopped cluster
        in DIR.  Returns once all PGs are active+clean (pool ``rbd`` created and
        initialised).  Raises :class:`CephNotInstalled`, :class:`ClusterRunning` (DIR's
        cluster is alive; nothing is touched), :class:`ClusterError` (DIR holds
        unrelated files), :class:`ClusterStartTimeout` or :class:`CommandFailed`; on
        failure every daemon already started is stopped again.
        """
        if not 1 <= mons <= 26 or osds < 1:
            raise errors.InvalidArgumentError(f"need 1..26 mons and >= 1 OSD, got {mons} and {osds}")
        check_binaries()
        t0 = time.monotonic()
        self._prepare_dir()
        ports = _PortBlock(2 * mons + 10 * osds + 16)
        try:
            self._write_config(mons, osds, ports, conf or {})
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
        for d in (self.log_dir, self.run_dir, self.dir / "crash"):
            d.mkdir()

    def _write_state(self, st: dict) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(_json.dumps(st, indent=1) + "\n")
        tmp.replace(self._state_path)

    def _write_config(self, mons: int, osds: int, ports: _PortBlock, extra: dict[str, Any]) -> None:
        fsid = str(uuid.uuid4())
        mon_list = [
            {"id": chr(ord("a") + i), "v2": ports.base + 2 * i, "v1": ports.base + 2 * i + 1} for i in range(mons)
        ]
        bind_min, bind_max = ports.base + 2 * mons, ports.base + ports.size - 1
        mon_host = " ".join(f"[v2:127.0.0.1:{m['v2']},v1:127.0.0.1:{m['v1']}]" for m in mon_list)
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
                "osd_uuids": [str(uuid.uuid4()) for _ in range(osds)],
                "port_block": [ports.base, ports.base + ports.size - 1],
                "ms_bind_port_range": [bind_min, bind_max],
                "conf": {str(k): v for k, v in extra.items()},
            }
        )

    def _bootstrap(self, timeout: float) -> None:
        t0 = time.monotonic()
        st = self.state
        admin = gen_cephx_key()
        self.keyring_path.write_text(
            _keyring_entry("client.admin", admin, {"mds": "allow *", "mon": "allow *", "osd": "allow *", "mgr": "allow *"})
        )
        os.chmod(self.keyring_path, 0o600)
        # Pre-register mgr and OSD keys in the initial mon store: saves one CLI round trip each.
        osd_keys = [gen_cephx_key() for _ in range(st["osds"])]
        mgr_key = gen_cephx_key()
        mon_keyring = self.dir / "mon.keyring"
        mon_keyring.write_text(
            _keyring_entry("mon.", gen_cephx_key(), {"mon": "allow *"})
            + self.keyring_path.read_text()
            + _keyring_entry(f"mgr.{MGR_ID}", mgr_key, {"mon": "allow profile mgr", "osd": "allow *", "mds": "allow *"})
            + "".join(
                _keyring_entry(f"osd.{i}", k, {"mon": "allow profile osd", "mgr": "allow profile osd", "osd": "allow *"})
                for i, k in enumerate(osd_keys)
            )
        )
        monmap = self.dir / "monmap"
        argv = ["monmaptool", "--create", "--fsid", st["fsid"], "--enable-all-features", "--set-min-mon-release", "pacific"]
        for m in st["mons"]:
            argv += ["--addv", m["id"], f"[v2:127.0.0.1:{m['v2']},v1:127.0.0.1:{m['v1']}]"]
        self._run([*argv, str(monmap)], 30)

        conf = str(self.conf_path)

        def mkfs_mon(m: dict) -> None:
            self._run(["ceph-mon", "-c", conf, "--mkfs", "-i", m["id"], "--monmap", str(monmap),
                       "--keyring", str(mon_keyring)], 60)

        with ThreadPoolExecutor(max(st["osds"], len(st["mons"]))) as pool:
            list(pool.map(mkfs_mon, st["mons"]))
            list(pool.map(self.start_daemon, [f"mon.{m['id']}" for m in st["mons"]]))

            # One `ceph` process creates every OSD id (commands read from stdin).  It also
            # waits for quorum: daemons started before it may be refused while mons elect.
            cmds = "".join(f"osd new {u} {i}\n" for i, u in enumerate(st["osd_uuids"]))
            self.ceph(json=False, input=cmds, timeout=60)

            mgr_dir = self.dir / f"mgr.{MGR_ID}"
            mgr_dir.mkdir()
            (mgr_dir / "keyring").write_text(_keyring_entry(f"mgr.{MGR_ID}", mgr_key))
            self.start_daemon(f"mgr.{MGR_ID}")

            def mkfs_and_start_osd(i: int) -> None:
                odir = self.dir / f"osd.{i}"
                odir.mkdir()
                (odir / "keyring").write_text(_keyring_entry(f"osd.{i}", osd_keys[i]))
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
        with open(out, "ab") as f:
            # The parent exits once the forked daemon has initialised (or failed to).
            p = subprocess.Popen(
                [f"ceph-{kind}", "-c", str(self.conf_path), "-i", ident],
                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=_clean_env(),
                start_new_session=True,
            )
        try:
            rc = p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc = -9
        if rc != 0:
            tail = out.read_text(errors="replace").strip().splitlines()[-3:]
            raise ClusterError(
                f"{name} failed to start (exit {rc}): {' | '.join(tail)} (logs: {self.log_dir}/{name}.log)"
            )
        deadline = time.monotonic() + 10
        while (pid := self.pid(name)) is None:
            if time.monotonic() > deadline:
                raise ClusterError(f"{name} started but wrote no pid file {self.pidfile(name)}")
            time.sleep(0.05)
        return pid

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
                   mon_host=st["mon_host"], start_seconds=st.get("start_seconds"))
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
