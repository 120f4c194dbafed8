"""The device model of ``/sys/bus/rbd``: a per-device attribute directory and
stable ``/dev/rbd/POOL/IMAGE``-style links, kept by the map daemon.

Layout (run dir = ``$PYCEPH_RUN_DIR`` or ``/run/pyceph``; the run dir is 0700)::

    devices/<id>/          0755, one directory per mapping (id = the loop index,
                           as ``rbd device list`` prints it)
        size               bytes of the mapped image (or snapshot)       "%llu\\n"
        features           image feature bits                            "0x%016llx\\n"
        major, minor       the block device's numbers                    "%d\\n"
        pool, pool_id      pool name, pool id                            "%s\\n", "%llu\\n"
        pool_ns            RADOS namespace ("" for the default)          "%s\\n"
        name, image_id     image name and id                             "%s\\n"
        current_snap       snapshot name, "-" for the head               "%s\\n"
        snap_id            snapshot id (CEPH_NOSNAP for the head)        "%llu\\n"
        client_addr        our messenger address                         "IP:PORT/NONCE\\n"
        client_id          our global id                                 "client%lld\\n"
        cluster_fsid       the cluster's fsid                            "%pU\\n"
        config_info        "mon_addrs options pool image snap" WITHOUT any
                           secret (mode 0600: krbd shows it to root only)
        parent             the parent chain, one block per ancestor separated by
                           an empty line, or "(no parent image)"
        refresh            a FIFO (mode 0200): writing anything to it makes the
                           daemon re-read the image header, like
                           ``echo 1 > /sys/bus/rbd/devices/N/refresh``
        .pid               the daemon's pid (so stale cleanup removes only its own)

Formats are drivers/block/rbd.c's ``rbd_*_show`` (Linux 6.x) and
Documentation/ABI/testing/sysfs-bus-rbd.  Files are replaced atomically (write +
rename), so a reader never sees half a value.

Links: ``$PYCEPH_DEV_DIR`` (default ``/dev/pyrbd``) ``/POOL/[NAMESPACE/]IMAGE[@SNAP]``
-> the loop device (relative), the names Ceph's udev rule 50-rbd.rules gives
through ceph-rbdnamer (``/dev/rbd/pool/[ns/]image[@snap]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
import tempfile
from typing import Any, Callable

from ..rbd import cls_client as cls
from .. import errors
from . import registry

log = logging.getLogger("pyceph.block.devattrs")

DEV_DIR_ENV = "PYCEPH_DEV_DIR"
DEFAULT_DEV_DIR = "/dev/pyrbd"
#: RBD_SNAP_HEAD_NAME (drivers/block/rbd.c)
SNAP_HEAD_NAME = "-"
CEPH_NOSNAP = cls.CEPH_NOSNAP
NO_PARENT = "(no parent image)"

#: attribute files in the order ``ls`` would not care about; all readable ones
ATTRIBUTES = ("size", "features", "major", "minor", "pool", "pool_id", "pool_ns", "name", "image_id",
              "current_snap", "snap_id", "client_addr", "client_id", "cluster_fsid", "config_info",
              "parent")
#: root-only attributes (rbd.c checks CAP_SYS_ADMIN for config_info)
PRIVATE_ATTRIBUTES = frozenset({"config_info"})
#: option names whose value is a secret: never written anywhere
SECRET_OPTIONS = frozenset({"secret"})


# -- formats -----------------------------------------------------------------------------

def fmt_features(features: int) -> str:
    """``rbd_features_show``: ``0x%016llx`` (e.g. ``0x000000000000003d``)."""
    return f"0x{features & 0xFFFFFFFFFFFFFFFF:016x}"


def fmt_client_id(global_id: int) -> str:
    """``rbd_client_id_show``: ``client%lld``."""
    return f"client{global_id}"


def fmt_parent(chain: list[dict[str, Any]]) -> str:
    """``rbd_parent_show``: for each ancestor (nearest first) a block of
    ``pool_id``, ``pool_name``, ``pool_ns``, ``image_id``, ``image_name``,
    ``snap_id``, ``snap_name``, ``overlap`` lines, blocks separated by an empty
    line; ``(no parent image)`` without a parent.  Missing names print
    ``(unknown)`` as rbd.c does for the image name."""
    if not chain:
        return NO_PARENT + "\n"
    blocks = []
    for p in chain:
        blocks.append(
            f"pool_id {p['pool_id']}\npool_name {p.get('pool_name') or '(unknown)'}\n"
            f"pool_ns {p.get('pool_ns') or ''}\n"
            f"image_id {p['image_id']}\nimage_name {p.get('image_name') or '(unknown)'}\n"
            f"snap_id {p['snap_id']}\nsnap_name {p.get('snap_name') or '(unknown)'}\n"
            f"overlap {p['overlap']}\n")
    return "\n".join(blocks)


def render_options(options: dict[str, Any]) -> str:
    """A krbd option string from typed options (``True`` -> ``name``, ``False`` ->
    ``noname`` as krbd's negatable flags are spelled, else ``name=value``), with
    every secret option left out.  Sorted, so equal options render equally."""
    out = []
    for k in sorted(options):
        v = options[k]
        if k in SECRET_OPTIONS or k.startswith("_"):
            continue
        if v is True:
            out.append(k)
        elif v is False:
            out.append(f"no{k}")
        elif v is None:
            continue
        else:
            out.append(f"{k}={v}")
    return ",".join(out)


def strip_secrets(option_string: str) -> str:
    """Drop ``secret=...`` items from a comma-separated krbd option string."""
    return ",".join(kv for kv in option_string.split(",")
                    if kv and kv.partition("=")[0].strip() not in SECRET_OPTIONS)


def config_info(mon_addrs: list[str], options: str, pool: str, image: str, snap: str) -> str:
    """krbd's ``config_info`` (the string written to /sys/bus/rbd/add), without
    secrets: ``"mon1,mon2 options pool image snap"``."""
    return " ".join((",".join(mon_addrs) or "-", strip_secrets(options) or "-", pool, image,
                     snap or SNAP_HEAD_NAME))


def link_name(pool: str, namespace: str, image: str, snap: str | None) -> str:
    """``POOL/[NAMESPACE/]IMAGE[@SNAP]`` (ceph-rbdnamer's name, below the links dir)."""
    s = f"{pool}/"
    if namespace:
        s += f"{namespace}/"
    s += image
    if snap and snap != SNAP_HEAD_NAME:
        s += f"@{snap}"
    return s


def dev_dir() -> str:
    return os.environ.get(DEV_DIR_ENV) or DEFAULT_DEV_DIR


def link_path(pool: str, namespace: str, image: str, snap: str | None) -> str:
    """The stable link of a mapping, e.g. ``/dev/pyrbd/rbd/img@s1``.  Names that would
    leave the links dir ("." / ".." parts) raise ValueError."""
    name = link_name(pool, namespace, image, snap)
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise ValueError(f"image spec {name!r} cannot be a link name")
    return os.path.join(dev_dir(), name)


def devices_dir() -> str:
    return os.path.join(registry.run_dir(), "devices")


def device_dir(dev_id: str) -> str:
    return os.path.join(devices_dir(), str(dev_id))


def read_attr(dev_id: str, name: str) -> str:
    """One attribute's value without its trailing newline (for tests and tools).
    Raises OSError (FileNotFoundError if not mapped)."""
    with open(os.path.join(device_dir(dev_id), name)) as f:
        return f.read().rstrip("\n")


# -- links ----------------------------------------------------------------------------------

def make_link(path: str, device: str) -> None:
    """Point ``path`` at ``device`` (relative target, like udev's), replacing a link
    already there (the newest mapping wins, as with udev).  The links dir must be one
    that only root or we can write (:func:`registry.shared_dir`), and no directory
    below it may be a symlink: raises :class:`registry.UntrustedRunDir` otherwise."""
    d = _link_parent(path)
    target = os.path.relpath(device, d)
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, path)


def _link_parent(path: str) -> str:
    """Make the directories between the links dir and ``path`` (0755), refusing any
    that is not a real directory of root's or ours: a planted ``POOL -> /etc`` must
    not make us write elsewhere."""
    root = registry.shared_dir(dev_dir())
    rel = os.path.relpath(os.path.dirname(os.path.abspath(path)), root)
    if rel.startswith(".."):
        raise ValueError(f"{path} is not below the links dir {root}")
    d = root
    for part in [] if rel == "." else rel.split(os.sep):
        d = os.path.join(d, part)
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, 0o755)
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
            raise registry.UntrustedRunDir(f"{d} is not a directory that only root or we can write; "
                                           "refusing to make a link there")
    return d


def remove_link(path: str, device: str) -> bool:
    """Remove ``path`` if it is a link to ``device``; prune the then-empty parent
    directories up to the links dir.  True if removed.  Nothing is touched below a
    directory that is a symlink or writable by others (raises UntrustedRunDir)."""
    _check_link_parents(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISLNK(st.st_mode):
        return False
    target = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
    if target != os.path.normpath(device):
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    root = os.path.normpath(dev_dir())
    d = os.path.dirname(path)
    while os.path.normpath(d).startswith(root + os.sep):
        try:
            os.rmdir(d)
        except OSError:
            break
        d = os.path.dirname(d)
    return True


def _check_link_parents(path: str) -> None:
    root = os.path.abspath(dev_dir())
    registry.check_ancestors(os.path.join(root, "_"))
    d = os.path.dirname(os.path.abspath(path))
    while True:
        try:
            st = os.lstat(d)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
            raise registry.UntrustedRunDir(f"{d} is not a directory that only root or we can write; "
                                           "refusing to remove a link there")
        if os.path.normpath(d) == root or not d.startswith(root + os.sep):
            return
        d = os.path.dirname(d)


# -- attribute directory --------------------------------------------------------------------

def _write_file(path: str, text: str, mode: int) -> None:
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_device_dir(dev_id: str, pid: int | None = None) -> bool:
    """Remove ``devices/<id>``; with ``pid``, only if that daemon made it."""
    d = device_dir(dev_id)
    if pid is not None:
        try:
            with open(os.path.join(d, ".pid")) as f:
                if f.read().strip() != str(pid):
                    return False
        except OSError:
            pass
    if not os.path.isdir(d) or os.path.islink(d):
        return False
    shutil.rmtree(d, ignore_errors=True)
    return True


def cleanup_stale(rec: dict[str, Any]) -> None:
    """What a dead daemon (registry record ``rec``) left of the device model: its
    attribute directory (if its own) and its link (if it points at its device)."""
    pid = rec.get("pid")
    with contextlib.suppress(OSError):
        remove_device_dir(str(rec["id"]), pid if isinstance(pid, int) else None)
    with contextlib.suppress(OSError, ValueError, KeyError, errors.Error):
        remove_link(link_path(rec["pool"], rec.get("namespace") or "", rec["name"], rec.get("snap")),
                    rec.get("device") or "")


class DeviceAttrs:
    """The attribute directory and link of one mapping, owned by its map daemon.

    ``dev_id``: the device id ("0" for /dev/loop0); ``device``: its path; ``spec``:
    the map spec (pool, namespace, name, snap, options); ``blk``: the daemon's image
    (the block layer's interface; ``blk.size``, and for RBD images ``blk.image``,
    an :class:`pyceph.rbd.AsyncImage`, and ``blk.rados``, an AsyncRados).

    :meth:`create` writes everything, :meth:`sync` rewrites what changed (call it
    after a refresh or a resize; cheap when nothing did), :meth:`remove` undoes it.
    ``on_refresh`` (async callable) is run when someone writes to ``refresh``.
    """

    def __init__(self, dev_id: str, device: str, spec: dict[str, Any], blk: Any,
                 on_refresh: Callable[[], Any] | None = None):
        self.dev_id = str(dev_id)
        self.device = device
        self.spec = spec
        self.blk = blk
        self.on_refresh = on_refresh
        self.dir = device_dir(self.dev_id)
        self.values: dict[str, str] = {}
        self.link: str | None = None
        self.fifo_fd: int | None = None
        self._parent_key: Any = None
        self._tasks: set[asyncio.Task] = set()
        self._refreshing: asyncio.Task | None = None

    # -- values ----------------------------------------------------------------------------
    @property
    def image(self) -> Any:
        return getattr(self.blk, "image", None)

    @property
    def rados(self) -> Any:
        return getattr(self.blk, "rados", None)

    def _config_info(self) -> str:
        spec, r = self.spec, self.rados
        opts = dict(spec.get("options") or {})
        mode = str(opts.get("ms_mode") or "legacy")
        addrs = []
        config = getattr(getattr(r, "monc", None), "config", None)
        for vec in getattr(config, "mon_addrs", None) or []:
            a = (vec.legacy() if mode == "legacy" else vec.msgr2()) or (vec.addrs[0] if vec.addrs else None)
            if a is not None:
                addrs.append(a.hostport)
        name = getattr(config, "name", None)
        head = f"name={getattr(name, 'id', name)}" if name is not None else ""
        body = render_options({k: v for k, v in opts.items() if k != "name"})
        if spec.get("namespace"):
            body = ",".join(x for x in (body, f"_pool_ns={spec['namespace']}") if x)
        options = ",".join(x for x in (head, body) if x)
        return config_info(addrs, options, spec["pool"], spec["name"], spec.get("snap") or SNAP_HEAD_NAME)

    def collect(self) -> dict[str, str]:
        """Every attribute's text (with its newline) from the live objects, except
        ``parent`` (needs RADOS reads: :meth:`_collect_parent`)."""
        spec, img, r = self.spec, self.image, self.rados
        vals: dict[str, str] = {}
        st = os.stat(self.device)
        vals["major"] = f"{os.major(st.st_rdev)}\n"
        vals["minor"] = f"{os.minor(st.st_rdev)}\n"
        vals["size"] = f"{int(self.blk.size)}\n"
        vals["pool"] = f"{spec['pool']}\n"
        vals["pool_ns"] = f"{spec.get('namespace') or ''}\n"
        vals["name"] = f"{spec['name']}\n"
        snap = spec.get("snap") or SNAP_HEAD_NAME
        vals["current_snap"] = f"{snap}\n"
        if img is not None:
            vals["features"] = fmt_features(img.features()) + "\n"
            vals["image_id"] = f"{img.image_id}\n"
            vals["snap_id"] = f"{img.snap_id}\n"
            vals["pool_id"] = f"{img.ioctx.pool_id}\n"
        if r is not None:
            with contextlib.suppress(Exception):
                vals["client_addr"] = r.get_addrs() + "\n"
            with contextlib.suppress(Exception):
                vals["client_id"] = fmt_client_id(r.get_instance_id()) + "\n"
            with contextlib.suppress(Exception):
                vals["cluster_fsid"] = r.get_fsid() + "\n"
        vals["config_info"] = self._config_info() + "\n"
        return vals

    def _parent_chain_key(self) -> tuple:
        out = []
        img = self.image
        while img is not None and getattr(img, "parent", None) is not None:
            p = img.parent
            out.append((p.spec.pool_id, p.spec.pool_namespace, p.spec.image_id, p.spec.snap_id, p.overlap))
            img = getattr(img, "parent_image", None)
        return tuple(out)

    async def _collect_parent(self) -> str:
        """``parent``'s text: walk the open parent images, resolving names with
        ``dir_get_name`` and ``get_snapshot_name`` on each parent's pool."""
        chain = []
        img = self.image
        while img is not None and getattr(img, "parent", None) is not None:
            p = img.parent
            pimg = getattr(img, "parent_image", None)
            entry: dict[str, Any] = {"pool_id": p.spec.pool_id, "pool_ns": p.spec.pool_namespace,
                                     "image_id": p.spec.image_id, "snap_id": p.spec.snap_id,
                                     "overlap": p.overlap}
            with contextlib.suppress(Exception):
                entry["pool_name"] = self.rados.osdmap.get_pool_name(p.spec.pool_id)
            pio = getattr(pimg, "ioctx", None)
            if pio is not None:
                with contextlib.suppress(Exception):
                    entry["image_name"] = await cls.dir_get_name(pio, "rbd_directory", p.spec.image_id)
                with contextlib.suppress(Exception):
                    entry["snap_name"] = await cls.get_snapshot_name(pio, f"rbd_header.{p.spec.image_id}",
                                                                     p.spec.snap_id)
            chain.append(entry)
            img = pimg
        return fmt_parent(chain)

    # -- files -----------------------------------------------------------------------------
    def _write(self, vals: dict[str, str]) -> None:
        for k, v in vals.items():
            if self.values.get(k) == v:
                continue
            _write_file(os.path.join(self.dir, k), v, 0o600 if k in PRIVATE_ATTRIBUTES else 0o644)
            self.values[k] = v

    async def create(self) -> None:
        """Make ``devices/<id>/`` (replacing a stale one), all attributes, the
        ``refresh`` FIFO, and the link; start reading the FIFO."""
        base = registry.subdir("devices")
        if os.path.lexists(self.dir):
            if os.path.isdir(self.dir) and not os.path.islink(self.dir):
                shutil.rmtree(self.dir, ignore_errors=True)
            else:
                os.unlink(self.dir)
        tmpdir = tempfile.mkdtemp(prefix=f".{self.dev_id}.", dir=base)
        self.dir, real = tmpdir, self.dir
        try:
            os.chmod(tmpdir, 0o755)
            _write_file(os.path.join(tmpdir, ".pid"), f"{os.getpid()}\n", 0o644)
            fifo = os.path.join(tmpdir, "refresh")
            os.mkfifo(fifo, 0o200)
            os.chmod(fifo, 0o200)  # the umask may have cut it
            # O_RDWR: we are a writer too, so the FIFO never reads EOF between writers
            self.fifo_fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            self._write(self.collect())
            self._parent_key = self._parent_chain_key()
            self._write({"parent": await self._collect_parent()})
            os.rename(tmpdir, real)  # appears whole
        except BaseException:
            if self.fifo_fd is not None:
                os.close(self.fifo_fd)
                self.fifo_fd = None
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        finally:
            self.dir = real
        asyncio.get_running_loop().add_reader(self.fifo_fd, self._on_fifo)
        try:
            path = link_path(self.spec["pool"], self.spec.get("namespace") or "", self.spec["name"],
                             self.spec.get("snap"))
            make_link(path, self.device)
            self.link = path
        except (OSError, ValueError, errors.Error) as e:
            log.warning("cannot make the device link: %s", e)

    def sync(self) -> None:
        """Rewrite the attributes whose value changed (size after a resize, features,
        client_addr after a reconnect ...); a changed parent link is re-resolved in
        the background."""
        if self.fifo_fd is None:
            return
        try:
            self._write(self.collect())
        except OSError as e:
            log.warning("updating device attributes: %s", e)
        key = self._parent_chain_key()
        if key != self._parent_key:
            self._parent_key = key
            self._spawn(self._update_parent())

    async def _update_parent(self) -> None:
        text = await self._collect_parent()
        if self.fifo_fd is not None:
            self._write({"parent": text})

    def _spawn(self, coro) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _on_fifo(self) -> None:
        try:
            while os.read(self.fifo_fd, 4096):
                pass
        except BlockingIOError:
            pass
        except OSError as e:
            log.warning("reading refresh: %s", e)
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh())

    async def _refresh(self) -> None:
        """rbd_image_refresh: re-read the header, then the attributes."""
        try:
            if self.on_refresh is not None:
                await self.on_refresh()
            elif self.image is not None:
                await self.image.refresh()
        except Exception as e:  # noqa: BLE001 - a failed refresh must not end the mapping
            log.error("refresh: %r", e)
        log.info("refreshed on request")
        self.sync()

    def remove(self) -> None:
        """Stop reading ``refresh``, remove the directory and the link (only if it
        still points at our device)."""
        if self.fifo_fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.fifo_fd)
            with contextlib.suppress(OSError):
                os.close(self.fifo_fd)
            self.fifo_fd = None
        for t in list(self._tasks) + ([self._refreshing] if self._refreshing else []):
            t.cancel()
        with contextlib.suppress(OSError):
            remove_device_dir(self.dev_id, os.getpid())
        if self.link is not None:
            with contextlib.suppress(OSError, errors.Error):
                remove_link(self.link, self.device)
            self.link = None


# -- the /sys/bus/rbd/add string ------------------------------------------------------------

#: RBD_MAX_SNAP_NAME_LEN (rbd.c: NAME_MAX minus the "snap_" prefix)
RBD_MAX_SNAP_NAME_LEN = 255 - len("snap_")


class AddStringError(ValueError):
    """A malformed add string; the message never holds the options token (it may
    carry a secret)."""


def parse_add_string(text: str) -> dict[str, Any]:
    """Split the string /sys/bus/rbd/add takes (rbd.c ``rbd_add_parse_args``):
    ``"<mon_addrs> <options> <pool> <image> [<snap>]"``, white-space separated.

    ``mon_addrs``: ``ip[:port][,ip[:port]...]`` (IPv6 in brackets; ``/`` separators
    are accepted too, as in the ``mon_addr=`` option); ``options``: a comma list of
    krbd options (``name=admin,secret=...,_pool_ns=ns``; required, as rbd.c: "no
    options provided"); ``snap`` defaults to ``-`` (the head).  Returns
    ``{"mon_addrs": [...], "options": str, "pool", "namespace", "image", "snap"}``
    (``namespace`` from ``_pool_ns=``).  Raises :class:`AddStringError`."""
    tokens = text.split()
    if not tokens:
        raise AddStringError("no monitor address(es) provided")
    if len(tokens) < 2:
        raise AddStringError("no options provided")
    if len(tokens) < 3:
        raise AddStringError("no pool name provided")
    if len(tokens) < 4:
        raise AddStringError("no image name provided")
    if len(tokens) > 5:
        raise AddStringError(f"{len(tokens)} fields: expected 'mon_addrs options pool image [snap]'")
    mons = []
    for a in tokens[0].replace("/", ",").split(","):
        if not a:
            continue
        host, port = a, ""
        if a.startswith("["):
            end = a.find("]")
            if end < 0:
                raise AddStringError(f"bad monitor address '{a}'")
            host, rest = a[: end + 1], a[end + 1:]
            if rest and not rest.startswith(":"):
                raise AddStringError(f"bad monitor address '{a}'")
            port = rest[1:]
        elif a.count(":") == 1:
            host, port = a.split(":")
        elif ":" in a:
            raise AddStringError(f"bad monitor address '{a}' (IPv6 goes in brackets)")
        if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
            raise AddStringError(f"bad monitor address '{a}'")
        mons.append(a)
    if not mons:
        raise AddStringError("no monitor address(es) provided")
    snap = tokens[4] if len(tokens) > 4 else SNAP_HEAD_NAME
    if len(snap) > RBD_MAX_SNAP_NAME_LEN:
        raise AddStringError(f"snapshot name longer than {RBD_MAX_SNAP_NAME_LEN} characters")
    namespace = ""
    for kv in tokens[1].split(","):
        k, _, v = kv.partition("=")
        if k == "_pool_ns":
            namespace = v
    return {"mon_addrs": mons, "options": tokens[1], "pool": tokens[2], "namespace": namespace,
            "image": tokens[3], "snap": snap}


def mon_host_of(mon_addrs: list[str], msgr2: bool) -> str:
    """krbd's ``ip[:port]`` monitor list as a ``mon host`` value: each address typed
    (``v1`` for the legacy protocol, default port 6789; ``v2`` with an ``ms_mode``
    other than legacy, default port 3300), as the kernel reads them."""
    out = []
    for a in mon_addrs:
        host, port = a, ""
        if a.startswith("["):
            end = a.index("]")
            host, port = a[: end + 1], a[end + 2:]
        elif ":" in a:
            host, port = a.split(":")
        port = port or ("3300" if msgr2 else "6789")
        out.append(f"[{'v2' if msgr2 else 'v1'}:{host}:{port}]")
    return ",".join(out)
