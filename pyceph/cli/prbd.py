"""``prbd``: the ``rbd`` command line, over pyceph's own client.

Mirrors ``rbd``'s syntax, messages, exit codes and output formats (Pacific's
``src/tools/rbd/action/*.cc``) so that scripts can switch: ``create``, ``ls [-l]``,
``info``, ``rm``, ``import``, ``export``, ``bench``, ``map``/``unmap``/``showmapped``,
``snap create|ls|rm|purge|rollback|protect|unprotect|rename``, ``clone``, ``flatten``,
``children``, ``resize``, ``feature enable|disable``, ``lock ls|add|rm``, ``status``,
``du``, ``diff``, ``object-map check|rebuild``; ``--format json [--pretty-format]``
where ``rbd`` has it (same keys, same compact JSON).

Errors print one line, ``prbd: <what rbd says>: (errno) strerror [PyError: detail]``,
and exit with the errno like ``rbd``; failures to reach or authenticate to the
cluster print ``prbd: ErrorType: message`` and exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import random
import sys
import time
from typing import Any, AsyncIterator, Iterator

from .. import errors
from ..config import parse_ms_mode
from ..auth.crypto import looks_like_secret
from ..rbd import AsyncImage, AsyncRBD
from ..rbd import cls_client as cls
from ..rbd import diff as rbd_diff
from ..rbd.features import FEATURE_NAMES, RBD_FEATURE_FAST_DIFF, RBD_FEATURE_LAYERING, RBD_FEATURE_OBJECT_MAP
from ..rbd.object_map import ObjectMap
from ..rbd.striping import Layout, extent_to_file, layout_to_extents
from .common import (
    CliError,
    CliParser,
    ImageSpec,
    Progress,
    TextTable,
    add_client_options,
    client_parent,
    fmt_addr,
    fmt_legacy_addr,
    fmt_size,
    parse_image_spec,
    parse_size,
    run_main,
    setup_logging,
    with_rados,
)
from .device import add_device_parsers, add_rbdmap_parser
from .device_config import add_device_config_parser

PROG = "prbd"
FEATURES_BY_NAME = {v: k for k, v in FEATURE_NAMES.items()}
CEPH_NOSNAP = (1 << 64) - 2
RBD_LOCK_NAME = "rbd_lock"
LOCK_EXCLUSIVE = 1
SNAP_NAMESPACE_USER = 0

# SNAPSHOT_PRESENCE_* of rbd's utils::get_pool_image_snapshot_names
SNAP_NONE, SNAP_PERMITTED, SNAP_REQUIRED = "none", "permitted", "required"


# -- small helpers --------------------------------------------------------------------

@contextlib.contextmanager
def failing(message: str) -> Iterator[None]:
    """Turn a typed error raised inside into rbd's ``message: (errno) strerror`` line."""
    try:
        yield
    except CliError:
        raise
    except errors.Error as e:
        raise CliError(message, e) from e


def _spec(args, snap: str = SNAP_PERMITTED, default_pool: str = "rbd", spec_attr: str = "image_spec") -> ImageSpec:
    """The image spec from the positional ``[pool/[ns/]]image[@snap]`` or ``--pool/--namespace/--image/--snap``,
    with rbd's checks (``snapshot name was not specified`` ...; EINVAL)."""
    try:
        spec = parse_image_spec(
            getattr(args, spec_attr, None), pool=getattr(args, "pool", None),
            namespace=getattr(args, "namespace", None), image=getattr(args, "image", None),
            snap=getattr(args, "snap", None), default_pool=default_pool,
        )
    except errors.InvalidArgumentError as e:
        raise CliError(e.message or str(e), errno=errno.EINVAL) from None
    if snap == SNAP_REQUIRED and not spec.snap:
        raise CliError("snapshot name was not specified", errno=errno.EINVAL)
    if snap == SNAP_NONE and spec.snap:
        raise CliError("snapshot name specified for a command that doesn't use it", errno=errno.EINVAL)
    return spec


def _features(args) -> int | None:
    """``--image-feature`` (repeatable, comma lists, names or numbers) -> bits; None if not given."""
    items = getattr(args, "image_feature", None)
    if not items:
        return None
    return parse_feature_list(items, "--image-feature")


def parse_feature_list(items: list[str], option: str = "features") -> int:
    """Feature names/numbers, each item possibly a comma list -> bits.  CliError (EINVAL) for unknown names."""
    f = 0
    for item in items:
        for name in item.split(","):
            name = name.strip()
            if not name:
                continue
            if name.isdigit():
                f |= int(name)
            elif name in FEATURES_BY_NAME:
                f |= FEATURES_BY_NAME[name]
            else:
                raise CliError(f"the argument ('{name}') for option '{option}' is invalid", errno=errno.EINVAL)
    return f


# More ops in flight than librados' objecter_inflight_ops (1024) would only queue.
MAX_BENCH_THREADS = 4096


def _size_opt(value: str, option: str, default_unit: str = "M") -> int:
    """A size option as rbd reads it (a uint64 of bytes): text that is no size, negative
    or beyond 64 bits is rbd's ``the argument for option '--size' is invalid`` (exit 1)."""
    try:
        n = parse_size(value, default_unit)
    except errors.InvalidArgumentError:
        n = -1
    if not 0 <= n < 1 << 64:
        raise CliError(f"the argument for option '{option}' is invalid", errno=1)
    return n


def _order(args) -> int | None:
    if getattr(args, "order", None) is not None:
        return args.order
    if getattr(args, "object_size", None):
        size = parse_size(args.object_size, "B")
        if size <= 0 or size & (size - 1):
            raise CliError("object size must be a power of two", errno=errno.EINVAL)
        return size.bit_length() - 1
    return None


def _dump(obj: Any, args) -> None:
    """Ceph's JSONFormatter: compact (no spaces) or ``--pretty-format`` (4-space indent)."""
    if getattr(args, "pretty_format", False):
        print(json.dumps(obj, indent=4))
    else:
        print(json.dumps(obj, separators=(",", ":")))


def _want_json(args) -> bool:
    fmt = getattr(args, "format", None) or "plain"
    if fmt == "xml":
        raise CliError("--format xml is not supported by prbd (use json)", errno=errno.EINVAL)
    return fmt == "json"


def _ctime(ts: tuple[int, int]) -> str:
    """A snapshot's ``(sec, nsec)`` timestamp as rbd prints it (``ctime()`` without the
    newline); "" if unset."""
    sec = int(ts[0])
    return time.ctime(sec) if sec else ""


def _run(args, body) -> Any:
    """Connect, ``await body(rados)``, shut down."""
    return asyncio.run(with_rados(args, body))


async def _ioctx(r, pool: str, namespace: str = ""):
    with failing(f"error opening pool '{pool}'"):
        return await r.open_ioctx(pool, namespace)


async def _open_image(io, name: str, *, read_only: bool, snap: str | None = None, exclusive: bool = False):
    """``AsyncImage.open`` with rbd's messages: ``error opening image X`` /
    ``error setting snapshot context``."""
    kw: dict[str, Any] = {"read_only": read_only, "snapshot": snap}
    if exclusive:
        kw["exclusive"] = True
    try:
        return await AsyncImage.open(io, name, **kw)
    except errors.Error as e:
        if snap and isinstance(e, errors.ObjectNotFound) and "snapshot" in (e.message or str(e)):
            raise CliError("error setting snapshot context", e) from e
        raise CliError(f"error opening image {name}", e) from e


@contextlib.asynccontextmanager
async def _image(r, spec: ImageSpec, *, read_only: bool, snap: str | None | bool = True,
                 exclusive: bool = False) -> AsyncIterator[Any]:
    """Open ``spec`` (at ``spec.snap`` unless ``snap`` names another or is None), close after."""
    io = await _ioctx(r, spec.pool, spec.namespace)
    snapname = spec.snap if snap is True else (snap or None)
    img = await _open_image(io, spec.image, read_only=read_only, snap=snapname, exclusive=exclusive)
    try:
        yield img
    finally:
        await img.close()


def _with_image(args, spec: ImageSpec, read_only: bool, fn) -> Any:
    """Connect, open ``spec`` (its snapshot if any), return ``await fn(image)``; always close."""

    async def go(r):
        async with _image(r, spec, read_only=read_only) as img:
            return await fn(img)

    return _run(args, go)


SNAP_NAMESPACE_NAMES = {0: "user", 1: "group", 2: "trash", 3: "mirror"}


def _ns_name(t: Any) -> str:
    """``utils::get_snap_namespace_name``: a namespace type (int or name) -> its name."""
    if isinstance(t, str):
        return t
    return SNAP_NAMESPACE_NAMES.get(t, "unknown")


async def list_user_snaps(img, all_namespaces: bool = False) -> list[dict]:
    """The image's snapshots, by id: ``id, name, size, protected (bool), timestamp
    (rbd's ctime text, "" if unset), namespace ({"type": name}; trash snapshots add
    original_namespace_type and original_name, as rbd 20 "Tentacle" prints them; rbd 16
    and 18 print only original_name)``; only user snapshots unless ``all_namespaces``.  Reads
    ``img.list_snaps()`` (:func:`pyceph.rbd.snapshot.snap_dict` dicts)."""
    out = []
    for s in await img.list_snaps():
        ns = s.get("namespace", SNAP_NAMESPACE_USER)
        user = ns == SNAP_NAMESPACE_USER
        if not user and not all_namespaces:
            continue
        nsinfo: dict[str, Any] = {"type": "user" if user else _ns_name(s.get("namespace_name") or ns)}
        trash = s.get("trash")
        if nsinfo["type"] == "trash" and isinstance(trash, dict):
            nsinfo["original_namespace_type"] = _ns_name(trash.get("original_namespace_type", 0))
            nsinfo["original_name"] = trash.get("original_name", "")
        out.append({"id": int(s["id"]), "name": s["name"], "size": int(s["size"]),
                    "protected": user and bool(s["protected"]), "timestamp": _ctime(s["timestamp"]),
                    "namespace": nsinfo})
    out.sort(key=lambda d: d["id"])
    return out


def _ns_text(ns: dict) -> str:
    """``rbd snap ls --all``'s NAMESPACE cell as rbd 20 prints it: ``user``,
    ``trash (user NAME)`` (rbd 16/18: ``trash (NAME)``)."""
    if ns["type"] == "trash" and "original_name" in ns:
        return f"trash ({ns.get('original_namespace_type', 'user')} {ns['original_name']})"
    return ns["type"]


async def _trash_name(io, image_id: str) -> str | None:
    """The name of image ``image_id`` in the pool's trash (``rbd_trash`` omap
    ``id_<id>`` -> cls::rbd::TrashImageSpec: source u8, name ...), or None."""
    try:
        vals = await io.get_omap_vals_by_keys("rbd_trash", [f"id_{image_id}"])
    except errors.Error:
        return None
    raw = vals.get(f"id_{image_id}")
    if not raw or len(raw) < 11:
        return None
    n = int.from_bytes(raw[7:11], "little")
    return raw[11:11 + n].decode("utf-8", "replace")


async def parent_of(img) -> dict | None:
    """The parent of the open image (at its snapshot) as rbd's info JSON shows it:
    ``{pool, pool_namespace, image, id, snapshot, trash, overlap}``, or None.

    Uses the header (``parent_get``/``parent_overlap_get``, legacy ``get_parent``)
    and resolves names: pool from the OSDMap, image from ``rbd_directory`` (else the
    trash), snapshot with ``get_snapshot_name`` on the parent's header."""
    io, hdr = img.ioctx, img.header_oid
    if not img.features() & RBD_FEATURE_LAYERING:
        return None
    snap_id = img.snap_id
    try:
        spec = await cls.parent_get(io, hdr)
        overlap = await cls.parent_overlap_get(io, hdr, snap_id) if spec.exists() else None
    except errors.FunctionNotSupported:
        spec, overlap = await cls.get_parent(io, hdr, snap_id)
    except errors.ObjectNotFound:
        return None
    if not spec.exists() or overlap is None:
        return None
    r = io.rados
    try:
        pool_name = r.osdmap.get_pool_name(spec.pool_id)
    except Exception:  # noqa: BLE001 - pool deleted
        pool_name = str(spec.pool_id)
    pio = await r.open_ioctx(spec.pool_id, spec.pool_namespace)
    trash = False
    try:
        image_name = await cls.dir_get_name(pio, "rbd_directory", spec.image_id)
    except errors.ObjectNotFound:
        image_name = await _trash_name(pio, spec.image_id) or ""
        trash = True
    try:
        snap_name = await cls.get_snapshot_name(pio, f"rbd_header.{spec.image_id}", spec.snap_id)
    except errors.ObjectNotFound:
        snap_name = ""
    return {"pool": pool_name, "pool_namespace": spec.pool_namespace, "image": image_name,
            "id": spec.image_id, "snapshot": snap_name, "trash": trash, "overlap": overlap}


def parent_text(p: dict) -> str:
    """``pool/[ns/]image@snap`` as ``rbd info``/``ls -l`` print a parent."""
    s = f"{p['pool']}/"
    if p.get("pool_namespace"):
        s += f"{p['pool_namespace']}/"
    return s + f"{p['image']}@{p['snapshot']}"


async def list_lockers(io, header_oid: str) -> tuple[list[dict], bool, str]:
    """``librbd list_lockers``: cls_lock ``get_info`` of ``rbd_lock`` on the header ->
    ``([{id, locker, address}], exclusive, tag)``."""
    try:
        info = await cls.lock_get_info(io, header_oid, RBD_LOCK_NAME)
    except errors.ObjectNotFound:
        return [], False, ""
    lockers = []
    for lid, linfo in info.lockers.items():
        lockers.append({"id": lid.cookie, "locker": str(lid.locker), "address": fmt_legacy_addr(linfo.addr)})
    return lockers, info.lock_type == LOCK_EXCLUSIVE, info.tag


# -- create / ls / info / rm ------------------------------------------------------------

def cmd_create(args) -> int:
    spec = _spec(args, SNAP_NONE)
    if not args.size:
        raise CliError("must specify --size <M/G/T>", errno=errno.EINVAL)
    size = _size_opt(args.size, "--size")
    features = _features(args)
    order = _order(args)
    su = parse_size(args.stripe_unit, "B") if args.stripe_unit else None

    async def go(r):
        io = await _ioctx(r, spec.pool, spec.namespace)
        with failing("create error"):
            await AsyncRBD().create(io, spec.image, size, order=order, features=features,
                                    stripe_unit=su, stripe_count=args.stripe_count)

    _run(args, go)
    return 0


async def _ls_long_entries(io, name: str) -> list[dict]:
    """rbd ls -l's JSON objects for one image and its snapshots (List.cc)."""
    try:
        img = await AsyncImage.open(io, name, read_only=True)
    except errors.ImageNotFound:
        return []
    try:
        parent = await parent_of(img)
        lockers, exclusive, _ = await list_lockers(io, img.header_oid)
        head: dict[str, Any] = {"image": name, "id": img.id(), "size": img.size()}
        if parent:
            head["parent"] = {k: parent[k] for k in ("pool", "pool_namespace", "image", "snapshot")}
        head["format"] = 2
        if lockers:
            head["lock_type"] = "exclusive" if exclusive else "shared"
        out = [head]
        for s in await list_user_snaps(img):
            entry: dict[str, Any] = {"image": name, "id": img.id(), "snapshot": s["name"],
                                     "snapshot_id": s["id"], "size": s["size"]}
            sp = None
            try:
                simg = await AsyncImage.open(io, name, read_only=True, snapshot=s["name"])
            except errors.ImageNotFound:
                simg = None
            if simg is not None:
                try:
                    sp = await parent_of(simg)
                finally:
                    await simg.close()
            if sp:
                entry["parent"] = {k: sp[k] for k in ("pool", "pool_namespace", "image", "snapshot")}
            entry["format"] = 2
            entry["protected"] = "true" if s["protected"] else "false"
            out.append(entry)
        return out
    finally:
        await img.close()


def cmd_ls(args) -> int:
    pool = args.pool_spec or args.pool or "rbd"
    ns = args.namespace or ""
    if "/" in pool:
        pool, ns = pool.split("/", 1)
    as_json = _want_json(args)

    async def go(r):
        io = await _ioctx(r, pool, ns)
        with failing("listing images failed"):
            names = await AsyncRBD().list(io)
            if not args.long:
                return names
            sem = asyncio.Semaphore(8)

            async def one(n):
                async with sem:
                    try:
                        return await _ls_long_entries(io, n)
                    except errors.Error as e:  # rbd warns and goes on with the next image
                        print(f"{PROG}: error opening {n}: ({e.errno or 5}) {os.strerror(e.errno or 5)} "
                              f"[{type(e).__name__}: {e.message or e}]", file=sys.stderr)
                        return []

            rows = await asyncio.gather(*(one(n) for n in names))
            return [e for group in rows for e in group]

    res = _run(args, go)
    if as_json:
        _dump(res, args)
    elif args.long:
        if res:
            t = TextTable()
            t.define_column("NAME", "<", "<")
            t.define_column("SIZE", "<", ">")
            t.define_column("PARENT", "<", "<")
            t.define_column("FMT", "<", ">")
            t.define_column("PROT", "<", "<")
            t.define_column("LOCK", "<", "<")
            for d in res:
                parent = parent_text(d["parent"]) if "parent" in d else ""
                if "snapshot" in d:
                    t.add_row(f"{d['image']}@{d['snapshot']}", fmt_size(d["size"]), parent, d["format"],
                              "yes" if d["protected"] == "true" else "", "")
                else:
                    lock = {"exclusive": "excl", "shared": "shr"}.get(d.get("lock_type", ""), "")
                    t.add_row(d["image"], fmt_size(d["size"]), parent, d["format"], "", lock)
            sys.stdout.write(t.render())
    else:
        for n in res:
            print(n)
    return 0


async def image_info(img, name: str) -> dict:
    """``rbd info --format json`` for an open image: the core's ``info_json`` plus
    ``protected`` (snapshots) and ``parent`` (clones) in Info.cc's order."""
    info = dict(img.info_json(name))
    if img.snap_name is not None and "protected" not in info:
        with contextlib.suppress(Exception):
            info["protected"] = "true" if await img.is_protected_snap(img.snap_name) else "false"
    if "parent" not in info:
        parent = await parent_of(img)
        if parent is not None:
            out: dict[str, Any] = {}
            for k, v in info.items():
                if k in ("stripe_unit", "stripe_count", "journal", "mirroring") and "parent" not in out:
                    out["parent"] = parent
                out[k] = v
            out.setdefault("parent", parent)
            info = out
    return info


def cmd_info(args) -> int:
    spec = _spec(args, SNAP_PERMITTED)
    as_json = _want_json(args)

    async def go(img):
        with failing("info"):
            return await image_info(img, spec.image)

    info = _with_image(args, spec, True, go)
    if as_json:
        _dump(info, args)
        return 0
    print(f"rbd image '{info['name']}':")
    print(f"\tsize {fmt_size(info['size'])} in {info['objects']} objects")
    print(f"\torder {info['order']} ({fmt_size(info['object_size'])} objects)")
    print(f"\tsnapshot_count: {info['snapshot_count']}")
    print(f"\tid: {info['id']}")
    print(f"\tblock_name_prefix: {info['block_name_prefix']}")
    print(f"\tformat: {info['format']}")
    print(f"\tfeatures: {', '.join(info['features'])}")
    print(f"\top_features: {', '.join(info['op_features'])}")
    print(f"\tflags: {', '.join(info['flags'])}")
    for k in ("create_timestamp", "access_timestamp", "modify_timestamp"):
        if k in info:
            print(f"\t{k}: {info[k]}")
    if "protected" in info:
        print(f"\tprotected: {'True' if info['protected'] == 'true' else 'False'}")
    if "snapshot_limit" in info:
        print(f"\tsnapshot_limit: {info['snapshot_limit']}")
    if "parent" in info:
        p = info["parent"]
        line = f"\tparent: {parent_text(p)}"
        if p.get("trash"):
            line += f" (trash {p['id']})"
        print(line)
        print(f"\toverlap: {fmt_size(p['overlap'])}")
    if "stripe_unit" in info:
        print(f"\tstripe unit: {fmt_size(info['stripe_unit'])}")
        print(f"\tstripe count: {info['stripe_count']}")
    return 0


def cmd_rm(args) -> int:
    spec = _spec(args, SNAP_NONE)
    prog = Progress("Removing image", not args.no_progress)

    async def go(r):
        io = await _ioctx(r, spec.pool, spec.namespace)
        with failing("delete error"), prog:
            await AsyncRBD().remove(io, spec.image, on_progress=prog.update)

    try:
        _run(args, go)
    except CliError as e:
        hint = _rm_hint(e)
        if hint:
            detail = e.__cause__
            raise CliError(hint + (f" [{type(detail).__name__}: {getattr(detail, 'message', '') or detail}]"
                                   if detail is not None else ""), errno=e.errno) from detail
        raise
    return 0


def _rm_hint(e: CliError) -> str | None:
    """What rbd's Remove.cc says instead of ``delete error`` for these errnos."""
    if e.errno == errno.ENOTEMPTY:
        return (f"image has snapshots - these must be deleted with '{PROG} snap purge' before the "
                "image can be removed.")
    if e.errno == errno.EBUSY:
        return ("error: image still has watchers - the image is still open or the client using it "
                "crashed. Try again after closing/unmapping it or waiting 30s for the crashed client "
                "to timeout.")
    return None


def cmd_resize(args) -> int:
    spec = _spec(args, SNAP_NONE)
    if not args.size:
        raise CliError("must specify --size <M/G/T>", errno=errno.EINVAL)
    size = _size_opt(args.size, "--size")
    prog = Progress("Resizing image", not args.no_progress)

    async def go(img):
        if size < img.size() and not args.allow_shrink:
            raise CliError("shrinking an image is only allowed with the --allow-shrink flag", errno=errno.EINVAL)
        with failing("resize error"), prog:
            await img.resize(size, allow_shrink=args.allow_shrink, on_progress=prog.update)

    _with_image(args, spec, False, go)
    return 0


# -- snapshots ---------------------------------------------------------------------------

def cmd_snap_ls(args) -> int:
    spec = _spec(args, SNAP_NONE)
    as_json = _want_json(args)

    async def go(img):
        with failing("failed to list snapshots"):
            return await list_user_snaps(img, all_namespaces=args.all)

    snaps = _with_image(args, spec, True, go)
    if as_json:
        out = []
        for s in snaps:
            d = {"id": s["id"], "name": s["name"], "size": s["size"],
                 "protected": "true" if s["protected"] else "false", "timestamp": s["timestamp"]}
            if args.all:
                d["namespace"] = s["namespace"]
            out.append(d)
        _dump(out, args)
        return 0
    if snaps:
        t = TextTable()
        t.define_column("SNAPID", "<", ">")
        t.define_column("NAME", "<", "<")
        t.define_column("SIZE", "<", ">")
        t.define_column("PROTECTED", "<", "<")
        t.define_column("TIMESTAMP", "<", ">")
        if args.all:
            t.define_column("NAMESPACE", "<", "<")
        for s in snaps:
            row = [s["id"], s["name"], fmt_size(s["size"]), "yes" if s["protected"] else "", s["timestamp"]]
            if args.all:
                row.append(_ns_text(s["namespace"]))
            t.add_row(*row)
        sys.stdout.write(t.render())
    return 0


def cmd_snap_create(args) -> int:
    spec = _spec(args, SNAP_REQUIRED)
    prog = Progress("Creating snap", not args.no_progress)

    async def go(img):
        with failing("failed to create snapshot"), prog:
            await img.create_snap(spec.snap)

    _run(args, _head(spec, go))
    return 0


def _head(spec: ImageSpec, fn, read_only: bool = False, exclusive: bool = False):
    """A body for :func:`_run` that opens the image head (not ``spec.snap``) and runs ``fn(img)``."""

    async def go(r):
        async with _image(r, spec, read_only=read_only, snap=None, exclusive=exclusive) as img:
            return await fn(img)

    return go


def cmd_snap_rm(args) -> int:
    spec = _spec(args, SNAP_REQUIRED)
    prog = Progress("Removing snap", not args.no_progress)

    async def go(img):
        try:
            with failing("failed to remove snapshot"), prog:
                if args.force:
                    await _force_unprotect(img, spec.snap)
                await img.remove_snap(spec.snap)
        except CliError as e:
            if e.errno == errno.EBUSY:
                raise CliError(f"snapshot '{spec.snap}' is protected from removal.", errno=errno.EBUSY) from e
            raise

    _run(args, _head(spec, go))
    return 0


async def _force_unprotect(img, snap: str) -> None:
    """``snap rm --force``: flatten the snapshot's children, then unprotect it."""
    if not await img.is_protected_snap(snap):
        return
    r = img.ioctx.rados
    simg = await AsyncImage.open(img.ioctx, img.name, read_only=True, snapshot=snap)
    try:
        children = await children_of(simg)
    finally:
        await simg.close()
    for c in children:
        if c.get("trash"):
            continue
        cio = await r.open_ioctx(c["pool"], c["pool_namespace"])
        child = await AsyncImage.open(cio, c["image"])
        try:
            await child.flatten()
        finally:
            await child.close()
    await img.unprotect_snap(snap)


def cmd_snap_purge(args) -> int:
    spec = _spec(args, SNAP_NONE)
    prog = Progress("Removing all snapshots", not args.no_progress)

    async def go(img):
        with failing("removing snaps failed"):
            snaps = await list_user_snaps(img)
            if not snaps:
                return
            protected = [s["name"] for s in snaps if s["protected"]]
            todo = [s for s in snaps if not s["protected"]]
            if protected:
                names = ",".join(protected)
                print(f"rbd: error removing snapshot(s) '{names}', which "
                      f"{'is' if len(protected) == 1 else 'are'} protected - these must be unprotected "
                      "with `rbd snap unprotect`.")
            try:
                for i, s in enumerate(todo):
                    await img.remove_snap(s["name"])
                    prog.update(i + 1, len(snaps))
            except BaseException:
                prog.fail()
                raise
            if protected:
                prog.fail()
                raise CliError("some snapshots are protected", errno=errno.EBUSY)
            prog.finish()

    _run(args, _head(spec, go))
    return 0


def cmd_snap_rollback(args) -> int:
    spec = _spec(args, SNAP_REQUIRED)
    prog = Progress("Rolling back to snapshot", not args.no_progress)

    async def go(img):
        with failing("rollback failed"), prog:
            await img.rollback_to_snap(spec.snap, on_progress=prog.update)

    _run(args, _head(spec, go))
    return 0


def cmd_snap_protect(args) -> int:
    spec = _spec(args, SNAP_REQUIRED)

    async def go(img):
        with failing("protecting snap failed"):
            if await img.is_protected_snap(spec.snap):
                raise CliError("snap is already protected", errno=errno.EBUSY)
            await img.protect_snap(spec.snap)

    _run(args, _head(spec, go))
    return 0


def cmd_snap_unprotect(args) -> int:
    spec = _spec(args, SNAP_REQUIRED)

    async def go(img):
        with failing("unprotecting snap failed"):
            if not await img.is_protected_snap(spec.snap):
                raise CliError("snap is already unprotected", errno=errno.EINVAL)
            await img.unprotect_snap(spec.snap)

    _run(args, _head(spec, go))
    return 0


def cmd_snap_rename(args) -> int:
    src = _spec(args, SNAP_REQUIRED)
    try:
        dst = parse_image_spec(args.dest_spec, pool=getattr(args, "dest_pool", None) or src.pool,
                               namespace=getattr(args, "dest_namespace", None) or src.namespace,
                               image=getattr(args, "dest", None), snap=getattr(args, "dest_snap", None))
    except errors.InvalidArgumentError as e:
        raise CliError("destination " + (e.message or str(e)), errno=errno.EINVAL) from None
    if not dst.snap:
        raise CliError("destination snapshot name was not specified", errno=errno.EINVAL)
    if dst.pool != src.pool:
        raise CliError("source and destination pool must be the same", errno=errno.EINVAL)
    if dst.namespace != src.namespace:
        raise CliError("source and destination namespace must be the same", errno=errno.EINVAL)
    if dst.image != src.image:
        raise CliError("source and destination image name must be the same", errno=errno.EINVAL)

    async def go(img):
        with failing("renaming snap failed"):
            await img.rename_snap(src.snap, dst.snap)

    _run(args, _head(src, go))
    return 0


# -- clones ------------------------------------------------------------------------------

def cmd_clone(args) -> int:
    src = _spec(args, SNAP_REQUIRED)
    try:
        dst = parse_image_spec(args.dest_spec, pool=args.dest_pool or None,
                               namespace=args.dest_namespace or None, image=args.dest,
                               default_pool=src.pool if not (args.dest_pool or (args.dest_spec or "").count("/"))
                               else "rbd")
    except errors.InvalidArgumentError as e:
        raise CliError("destination " + (e.message or str(e)), errno=errno.EINVAL) from None
    if dst.snap:
        raise CliError("destination snapshot name specified for a command that doesn't use it",
                       errno=errno.EINVAL)
    fmt = args.clone_format
    clone_format = None if fmt in (None, "auto") else int(fmt)
    features = _features(args)
    order = _order(args)
    su = parse_size(args.stripe_unit, "B") if args.stripe_unit else None

    async def go(r):
        pio = await _ioctx(r, src.pool, src.namespace)
        cio = await _ioctx(r, dst.pool, dst.namespace)
        with failing("clone error"):
            await AsyncRBD().clone(pio, src.image, src.snap, cio, dst.image, features=features, order=order,
                                  stripe_unit=su, stripe_count=args.stripe_count, clone_format=clone_format)

    _run(args, go)
    return 0


def cmd_flatten(args) -> int:
    spec = _spec(args, SNAP_NONE)
    prog = Progress("Image flatten", not args.no_progress)

    async def go(img):
        with failing("flatten error"), prog:
            await img.flatten(on_progress=prog.update)

    _with_image(args, spec, False, go)
    return 0


async def children_of(img) -> list[dict]:
    """Children of the open snapshot ``img`` as python-rbd's ``list_children2``
    dicts: ``pool, pool_namespace, image, id, trash``."""
    return [{"pool": c["pool"], "pool_namespace": c["pool_namespace"], "image": c["image"], "id": c["id"],
             "trash": bool(c["trash"])} for c in await img.list_children2()]


async def _children_tree(r, spec: ImageSpec, descendants: bool) -> list[dict]:
    """Children of ``spec`` (one snapshot, or every snapshot when none is named);
    with ``descendants`` their children too, depth first, like ``rbd children --descendants``."""
    io = await _ioctx(r, spec.pool, spec.namespace)
    head = await _open_image(io, spec.image, read_only=True)
    try:
        # no snapshot named: every snapshot, trash ones included (librbd walks snap_info)
        snaps = [(spec.snap, None)] if spec.snap else [
            (None, s["id"]) for s in await list_user_snaps(head, all_namespaces=True)]
    finally:
        await head.close()
    result: list[dict] = []
    seen: set[tuple] = set()
    for sname, sid in snaps:
        if sid is None:
            simg = await _open_image(io, spec.image, read_only=True, snap=sname)
        else:
            with failing(f"error opening image {spec.image}"):
                simg = await AsyncImage.open(io, spec.image, read_only=True, snap_id=sid)
        try:
            kids = await children_of(simg)
        finally:
            await simg.close()
        kids.sort(key=lambda c: (c["pool"], c["pool_namespace"], c["image"]))
        for c in kids:
            key = (c["pool"], c["pool_namespace"], c["id"] or c["image"])
            if key in seen:
                continue
            seen.add(key)
            result.append(c)
            if descendants and not c["trash"]:
                sub = ImageSpec(c["pool"], c["pool_namespace"], c["image"], None)
                result.extend(await _children_tree(r, sub, True))
    return result


def cmd_children(args) -> int:
    spec = _spec(args, SNAP_PERMITTED)
    as_json = _want_json(args)

    async def go(r):
        with failing("listing children failed"):
            kids = await _children_tree(r, spec, args.descendants)
            # librbd's list_descendants sorts by pool, namespace, image name, id
            return sorted(kids, key=lambda c: (c["pool"], c["pool_namespace"], c["image"], c["id"]))

    kids = _run(args, go)
    if as_json:
        out = []
        for c in kids:
            if args.all:
                out.append({"pool": c["pool"], "pool_namespace": c["pool_namespace"], "image": c["image"],
                            "id": c["id"], "trash": c["trash"]})
            elif not c["trash"]:
                out.append({"pool": c["pool"], "pool_namespace": c["pool_namespace"], "image": c["image"]})
        _dump(out, args)
        return 0
    for c in kids:
        if c["trash"] and not args.all:
            continue
        name = f"{c['pool']}/" + (f"{c['pool_namespace']}/" if c["pool_namespace"] else "") + c["image"]
        if c["trash"]:
            name += f" (trash {c['id']})"
        print(name)
    return 0


# -- features, locks, status -------------------------------------------------------------

def cmd_feature(args) -> int:
    spec = _spec(args, SNAP_NONE)
    if not args.features:
        raise CliError("at least one feature name must be specified", errno=errno.EINVAL)
    bits = parse_feature_list(args.features, "features")
    enabled = args.feature_action == "enable"

    async def go(img):
        with failing("failed to update image features"):
            await img.update_features(bits, enabled)

    _with_image(args, spec, False, go)
    return 0


def cmd_lock_ls(args) -> int:
    spec = _spec(args, SNAP_NONE)
    as_json = _want_json(args)

    async def go(img):
        with failing("listing locks failed"):
            return await list_lockers(img.ioctx, img.header_oid)

    lockers, exclusive, tag = _with_image(args, spec, True, go)
    if as_json:
        _dump(lockers, args)
        return 0
    if lockers:
        one = len(lockers) == 1
        print(f"There {'is' if one else 'are'} {len(lockers)} {'exclusive' if exclusive else 'shared'} "
              f"lock{'' if one else 's'} on this image.")
        if not exclusive:
            print(f"Lock tag: {tag}")
        t = TextTable()
        for h in ("Locker", "ID", "Address"):
            t.define_column(h, "<", "<")
        for lk in lockers:
            t.add_row(lk["locker"], lk["id"], lk["address"])
        sys.stdout.write(t.render())
    return 0


def cmd_lock_add(args) -> int:
    spec = _spec(args, SNAP_NONE)

    async def go(img):
        op = cls.LockOp(RBD_LOCK_NAME, 2 if args.shared else LOCK_EXCLUSIVE, args.lock_id,
                        tag=args.shared or "")
        try:
            await cls.lock_lock(img.ioctx, img.header_oid, op)
        except (errors.ObjectBusy, errors.ObjectExists) as e:
            msg = "lock is already held by someone else" + (" with a different tag" if args.shared else "")
            raise CliError(msg, errno=e.errno) from e
        except errors.Error as e:
            raise CliError("taking lock failed", e) from e

    _with_image(args, spec, False, go)
    return 0


def cmd_lock_rm(args) -> int:
    spec = _spec(args, SNAP_NONE)
    from ..types import ENTITY_TYPES_BY_NAME, EntityNameT

    t, _, num = args.locker.partition(".")
    if t not in ENTITY_TYPES_BY_NAME or not num.isdigit():
        raise CliError(f"releasing lock failed: invalid locker {args.locker!r}", errno=errno.EINVAL)
    locker = EntityNameT(ENTITY_TYPES_BY_NAME[t], int(num))

    async def go(img):
        with failing("releasing lock failed"):
            await cls.lock_break(img.ioctx, img.header_oid, RBD_LOCK_NAME, locker, args.lock_id)

    _with_image(args, spec, False, go)
    return 0


def cmd_status(args) -> int:
    spec = _spec(args, SNAP_NONE)
    as_json = _want_json(args)

    async def go(img):
        with failing("show status failed"):
            return await img.ioctx.list_watchers(img.header_oid)

    watchers = _with_image(args, spec, True, go)
    rows = [{"address": fmt_addr(w.addr), "client": int(w.name.num), "cookie": int(w.cookie)} for w in watchers]
    if as_json:
        _dump({"watchers": rows}, args)
        return 0
    if rows:
        print("Watchers:")
        for w in rows:
            print(f"\twatcher={w['address']} client.{w['client']} cookie={w['cookie']}")
    else:
        print("Watchers: none")
    return 0


# -- diff / du / object-map --------------------------------------------------------------

def cmd_diff(args) -> int:
    spec = _spec(args, SNAP_PERMITTED)
    as_json = _want_json(args)

    async def go(img):
        try:
            with failing("diff error"):
                return await rbd_diff.diff_list(img, args.from_snap, whole_object=args.whole_object)
        except CliError:
            # rbd opened its formatter's array before diff_iterate failed: `[]` on
            # stdout, then the error (16.2 through 20.2)
            if as_json:
                _dump([], args)
            raise

    extents = _with_image(args, spec, True, go)
    if as_json:
        _dump(extents, args)
        return 0
    t = TextTable()
    for h in ("Offset", "Length", "Type"):
        t.define_column(h, "<", "<")
    for e in extents:
        t.add_row(e["offset"], e["length"], "data" if e["exists"] == "true" else "zero")
    sys.stdout.write(t.render())
    return 0


def cmd_du(args) -> int:
    pool, ns, image, snap = args.pool or "rbd", args.namespace or "", None, None
    if args.image_spec or args.image:
        spec = _spec(args, SNAP_PERMITTED)
        pool, ns, image, snap = spec.pool, spec.namespace, spec.image, spec.snap
    as_json = _want_json(args)

    async def go(r):
        io = await _ioctx(r, pool, ns)
        totals: dict[str, int] = {}
        with failing("du failed"):
            doc = await rbd_diff.disk_usage_report(
                io, image, snap_name=snap, from_snap=args.from_snap, exact=args.exact,
                merge_snapshots=args.merge_snapshots, totals=totals, warn=lambda msg: print(msg, file=sys.stderr))
        return doc, totals

    doc, totals = _run(args, go)
    if as_json:
        _dump(doc, args)
        return 0
    t = TextTable()
    t.define_column("NAME", "<", "<")
    t.define_column("PROVISIONED", "<", ">")
    t.define_column("USED", "<", ">")
    for d in doc["images"]:
        name = d["name"] + (f"@{d['snapshot']}" if "snapshot" in d else "")
        t.add_row(name, fmt_size(d["provisioned_size"]), fmt_size(d["used_size"]))
    if totals["count"] > 1:
        t.add_row("<TOTAL>", fmt_size(totals["provisioned"]), fmt_size(totals["used"]))
    if doc["images"] or image is None:
        sys.stdout.write(t.render())
    return 0


def cmd_object_map(args) -> int:
    spec = _spec(args, SNAP_PERMITTED)
    check = args.om_action == "check"
    prog = Progress("Object Map Check" if check else "Object Map Rebuild", not args.no_progress)

    async def go(img):
        if not img.features() & RBD_FEATURE_OBJECT_MAP:
            raise CliError("checking object map failed" if check else "rebuilding object map failed",
                           errors.InvalidArgumentError("image does not have object-map feature enabled"))
        with failing("checking object map failed" if check else "rebuilding object map failed"), prog:
            return await object_map_op(img, check, prog.update)

    _with_image(args, spec, check and bool(spec.snap), go)
    return 0


async def object_map_op(img, check: bool, on_progress) -> list:
    """``object-map check|rebuild`` of the open image (or snapshot) through
    :class:`ObjectMap`: HEAD under our exclusive lock (the map the image loaded when it
    took the lock), a snapshot's map loaded on its own.  Returns the mismatches
    (``check``) after printing librbd's ``object map error`` lines for them."""
    snap_id = img.snap_id
    if snap_id == CEPH_NOSNAP:
        await img.acquire_lock()
        om = img.object_map
        if om is None:
            raise errors.ImageBusy("the image's object map is not loaded (exclusive lock not held)")
    else:
        om = ObjectMap(img.ioctx, img.image_id, snap_id, header_oid=img.header_oid,
                       fast_diff=bool(img.features() & RBD_FEATURE_FAST_DIFF))
        await om.load(img.num_objects())
    snap_ids = list(img.snapc.snaps)
    args = (img.num_objects(), img.object_prefix, snap_ids)
    if not check:
        await om.rebuild(*args, on_progress=on_progress)
        return []
    mismatches = await om.check(*args, on_progress=on_progress)
    for m in mismatches:
        print(f"object map error: object {img.object_prefix}.{m.objectno:016x} marked as {m.map_state}, "
              f"but should be {m.actual_state}", file=sys.stderr)
    return mismatches


# -- import / export ---------------------------------------------------------------------

async def _pipelined(total: int, chunk: int, worker, window: int, prog: Progress) -> None:
    """Run ``worker(offset, length)`` over ``[0, total)`` with ``window`` in flight, in order of start."""
    sem = asyncio.Semaphore(window)
    done = 0
    tasks = []
    err: list[BaseException] = []

    async def one(off, n):
        nonlocal done
        try:
            await worker(off, n)
        except BaseException as e:  # noqa: BLE001
            err.append(e)
        finally:
            done += n
            prog.update(done, total)
            sem.release()

    off = 0
    while off < total and not err:
        await sem.acquire()
        n = min(chunk, total - off)
        tasks.append(asyncio.ensure_future(one(off, n)))
        off += n
    await asyncio.gather(*tasks)
    if err:
        raise err[0]


def cmd_export(args) -> int:
    spec = _spec(args, SNAP_PERMITTED)
    path = args.path_name
    prog = Progress("Exporting image", not args.no_progress and path != "-")

    async def go(img):
        with failing("export error"), prog:
            await _export(img)

    async def _export(img):
        size = img.size()
        chunk = img.stat()["obj_size"]
        if path == "-":
            out = sys.stdout.buffer
            # stdout needs bytes in order: read a window ahead, write in sequence.
            offs = list(range(0, size, chunk))
            window = 8
            pending: dict[int, asyncio.Task] = {}
            for i, off in enumerate(offs):
                pending[off] = asyncio.ensure_future(img.read(off, min(chunk, size - off)))
                if i >= window:
                    o = offs[i - window]
                    out.write(await pending.pop(o))
            for o in offs:
                if o in pending:
                    out.write(await pending.pop(o))
            out.flush()
            return
        if os.path.exists(path) and not args.force:
            raise CliError("export error", errors.ObjectExists(f"{path}: file exists; pass --force to overwrite it"))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as e:
            raise CliError("export error", e) from None
        try:
            os.ftruncate(fd, size)

            async def worker(off, n):
                _pwrite_sparse(fd, await img.read(off, n), off)

            await _pipelined(size, chunk, worker, 8, prog)
            os.fsync(fd)
        finally:
            os.close(fd)

    _with_image(args, spec, True, go)
    return 0


SPARSE_SIZE = 4096  # rbd export's default --sparse-size


def _pwrite_sparse(fd: int, data: bytes, off: int) -> None:
    """Write ``data`` at ``off`` leaving holes for all-zero 4 KiB blocks, like ``rbd export``."""
    view = memoryview(data)
    zero = bytes(SPARSE_SIZE)
    start = None
    for pos in range(0, len(view), SPARSE_SIZE):
        blk = view[pos : pos + SPARSE_SIZE]
        if blk == zero[: len(blk)]:
            if start is not None:
                os.pwrite(fd, view[start:pos], off + start)
                start = None
        elif start is None:
            start = pos
    if start is not None:
        os.pwrite(fd, view[start:], off + start)


def cmd_import(args) -> int:
    path = args.path
    dest = args.dest_spec or (os.path.basename(path) if path != "-" else None)
    if dest is None:
        raise errors.InvalidArgumentError("destination image name was not specified")
    try:
        spec = parse_image_spec(dest, pool=args.dest_pool or args.pool, default_pool="rbd")
    except errors.InvalidArgumentError as e:
        raise CliError(e.message or str(e), errno=errno.EINVAL) from None
    prog = Progress("Importing image", not args.no_progress)
    features = _features(args)

    async def go(r):
        io = await _ioctx(r, spec.pool, spec.namespace)
        with failing("import failed"), prog:
            await _import(io)

    async def _import(io):
        if path == "-":
            data = sys.stdin.buffer.read()
            size = len(data)
            src = None
        else:
            try:
                src = os.open(path, os.O_RDONLY)
            except OSError as e:
                raise CliError(f"error opening {path}", e) from None
            size = os.fstat(src).st_size
        order = _order(args)
        await AsyncRBD().create(io, spec.image, size, order=order, features=features)
        img = await AsyncImage.open(io, spec.image)
        try:
            chunk = img.stat()["obj_size"]

            async def worker(off, n):
                buf = data[off: off + n] if src is None else os.pread(src, n, off)
                if buf.count(0) != len(buf):  # sparse import, as rbd import does
                    await img.write(off, buf)

            await _pipelined(size, chunk, worker, 8, prog)
            await img.flush()
        finally:
            await img.close()
            if src is not None:
                os.close(src)

    _run(args, go)
    return 0


# -- bench -----------------------------------------------------------------------------

def _fmt_rate(x: float) -> str:
    return f"{x:g}" if x < 1e6 else f"{x:.6g}"


async def run_bench(img: AsyncImage, io_type: str, io_size: int, threads: int, total: int, pattern: str,
                    out=sys.stdout) -> dict:
    """``rbd bench`` semantics: ``threads`` ops in flight, ``io_size`` bytes each, until
    ``total`` bytes; ``seq`` walks the image, ``rand`` picks io_size-aligned offsets.
    Returns ``{elapsed, ops, ops_per_sec, bytes_per_sec}`` (seconds, bytes)."""
    size = img.size()
    if io_size > size:
        raise errors.InvalidArgumentError("io size is larger than the image")
    nblocks = size // io_size
    ops_total = total // io_size
    buf = os.urandom(io_size)
    print(f"bench  type {io_type} io_size {io_size} io_threads {threads} bytes {total} "
          f"pattern {'sequential' if pattern == 'seq' else 'random'}", file=out)
    print("  SEC       OPS   OPS/SEC   BYTES/SEC", file=out)
    issued = 0
    completed = 0
    rng = random.Random(0)
    start = time.monotonic()
    last_print = start
    last_ops = 0
    seq_pos = 0

    def next_off() -> int:
        nonlocal seq_pos
        if pattern == "rand":
            return rng.randrange(nblocks) * io_size
        off = seq_pos
        seq_pos = (seq_pos + io_size) % (nblocks * io_size)
        return off

    async def worker():
        nonlocal issued, completed, last_print, last_ops
        while issued < ops_total:
            issued += 1
            off = next_off()
            if io_type == "write" or (io_type == "readwrite" and rng.random() < 0.3):
                await img.write(off, buf)
            else:
                await img.read(off, io_size)
            completed += 1
            now = time.monotonic()
            if now - last_print >= 1.0:
                sec = int(now - start)
                rate = (completed - last_ops) / (now - last_print)
                print(f"{sec:5d}  {completed:8d}  {rate:8.2f}  {fmt_size(int(rate * io_size))}/s", file=out)
                last_print, last_ops = now, completed

    await asyncio.gather(*(worker() for _ in range(threads)))
    await img.flush()
    elapsed = time.monotonic() - start
    ops_s = completed / elapsed if elapsed else 0.0
    print(f"elapsed: {int(elapsed)}   ops: {completed}   ops/sec: {ops_s:.6g}   "
          f"bytes/sec: {fmt_size(int(ops_s * io_size))}/s", file=out)
    return {"elapsed": elapsed, "ops": completed, "ops_per_sec": ops_s, "bytes_per_sec": ops_s * io_size}


def cmd_bench(args) -> int:
    spec = _spec(args, SNAP_NONE)
    io_size = _size_opt(args.io_size, "--io-size", "B")
    total = _size_opt(args.io_total, "--io-total", "B")
    if io_size == 0:  # rbd's Bench.cc checks, same words and EINVAL
        raise CliError("--io-size should be greater than zero.", errno=errno.EINVAL)
    if args.io_threads <= 0:
        raise CliError("--io-threads should be greater than zero.", errno=errno.EINVAL)
    if args.io_threads > MAX_BENCH_THREADS:  # one task each: an absurd count would exhaust memory
        raise CliError(f"--io-threads should be at most {MAX_BENCH_THREADS}.", errno=errno.EINVAL)

    async def go(img):
        return await run_bench(img, args.io_type, io_size, args.io_threads, total, args.io_pattern)

    res = _with_image(args, spec, args.io_type == "read", go)
    if args.format == "json":
        _dump(res, args)
    return 0


# -- map / unmap / showmapped ------------------------------------------------------------

def _map_options(opts: list[str]) -> dict[str, Any]:
    """``-o`` arguments -> {canonical krbd option: typed value} (:mod:`pyceph.block.mapopts`).
    Raises CliError (EINVAL) naming an unknown option or a bad value, as ``rbd map`` does."""
    from ..block.mapopts import MapOptionError, parse_map_options

    try:
        return parse_map_options(opts)
    except MapOptionError as e:
        raise CliError(e.message or str(e), errno=errno.EINVAL) from None


def map_request(spec: ImageSpec, opts: list[str], read_only_flag: bool = False, exclusive_flag: bool = False
                ) -> dict[str, Any]:
    """The ``map_image`` spec for ``prbd map``: every krbd map option parsed and typed
    (docs/MAP-OPTIONS.md).  ``ro``/``read_only`` (also implied by a snapshot) set
    ``read_only``; ``_pool_ns`` the namespace; ``name`` becomes ``auth_name`` and ``secret``
    ``secret`` (never in ``options``); ``key`` stays for :func:`_resolve_key_option`.
    Raises CliError (EINVAL) for an unknown option, a bad value, or exclusive with read-only."""
    options = _map_options(opts)
    ro = options.pop("read_only", False)
    read_only = bool(read_only_flag or ro or spec.snap)
    namespace = options.pop("_pool_ns", None) or spec.namespace
    if exclusive_flag:
        options["exclusive"] = True
    if options.get("exclusive") and read_only:
        raise CliError("map failed: exclusive and read-only options are mutually exclusive", errno=errno.EINVAL)
    req: dict[str, Any] = {"pool": spec.pool, "namespace": namespace, "name": spec.image, "snap": spec.snap or "-",
                           "read_only": read_only}
    if "name" in options:
        req["auth_name"] = options.pop("name")
    if "secret" in options:
        req["secret"] = options.pop("secret")
    req["options"] = options
    return req


def _resolve_key_option(req: dict[str, Any]) -> None:
    """krbd's ``key=DESCRIPTION``: the secret from the caller's kernel keyrings
    (:func:`pyceph.auth.keyring.keyctl_lookup`), into ``req["secret"]``, in the foreground.
    Raises CliError naming the description (never the secret)."""
    desc = req["options"].pop("key", None)
    if desc is None:
        return
    try:
        from ..auth import keyring
    except ImportError:
        raise CliError("map failed: key=: the kernel keyring is not supported by this pyceph",
                       errno=errno.EOPNOTSUPP) from None
    try:
        raw = keyring.keyctl_lookup(desc)
    except errors.Error as e:
        raise CliError("map failed: the key= map option", e) from None
    req["secret"] = _armor_secret(raw)


def _armor_secret(raw: bytes) -> str:
    """A keyctl secret in the keyring's base64 form: a bare 16-byte (AES) or 32-byte
    (AES256KRB5) secret gets CryptoKey's header; an encoded CryptoKey passes as is."""
    import base64

    from ..auth.crypto import CEPH_CRYPTO_AES, CEPH_CRYPTO_AES256KRB5, CryptoKey

    if len(raw) in (16, 32):
        return CryptoKey(CEPH_CRYPTO_AES if len(raw) == 16 else CEPH_CRYPTO_AES256KRB5, (0, 0), raw).to_base64()
    return base64.b64encode(raw).decode()


def cmd_map(args) -> int:
    from ..block import map_image

    spec = _spec(args, SNAP_PERMITTED)
    req = map_request(spec, args.options or [], args.read_only, args.exclusive)
    desc = req["options"].get("key")
    source = "the secret= map option"
    if desc is not None:
        source = "kernel keyring key " + ("(not shown: it looks like a key)" if looks_like_secret(desc) else repr(desc))
    _resolve_key_option(req)
    # fail here, in the foreground, on a bad conf, key or ms_mode
    cfg = _map_config(args, req["options"], req.get("auth_name"), req.get("secret"), source)
    req["auth_name"] = str(cfg.name)
    if cfg.key:
        req["secret"] = cfg.key  # to the daemon on its private spec channel, never argv/env
    daemon_argv = [sys.executable, "-m", "pyceph.cli.prbd", "_map-daemon"]
    if cfg.conf_path:
        daemon_argv += ["--conf", cfg.conf_path]
    daemon_argv += ["--name", str(cfg.name)]
    if args.mon_host:
        daemon_argv += ["--mon-host", args.mon_host]
    if args.debug:
        daemon_argv += ["--debug"]
    timeout: float | None = args.timeout
    mt = req["options"].get("mount_timeout")
    if mt == 0:
        timeout = None  # krbd's mount_timeout=0: wait for the cluster as long as it takes
    elif mt:
        timeout = max(args.timeout, mt + 10.0)
    with failing("map failed"):
        dev = map_image(req, daemon_argv, timeout=timeout)
    print(dev)
    return 0


def alloc_aligned_discard(layout: Layout, alloc_size: int, offset: int, length: int) -> list[tuple[int, int]]:
    """krbd's ``alloc_size`` discard rule (drivers/block/rbd.c ``rbd_obj_init_discard``):
    each object extent of ``[offset, offset+length)`` is aligned inward to ``alloc_size``
    (capped at the object size, as rbd_add_parse_args caps it), except an extent that
    ends at its object's end when ``alloc_size`` is the object size; extents left empty
    are dropped.  Returns the image byte ranges to discard, ascending and merged."""
    alloc = min(alloc_size, layout.object_size)
    pieces: list[tuple[int, int]] = []
    for ex in layout_to_extents(layout, offset, length):
        start, end = ex.offset, ex.offset + ex.length
        if alloc != layout.object_size or end != layout.object_size:
            start, end = -(-start // alloc) * alloc, end // alloc * alloc
        if end > start:
            pieces += extent_to_file(layout, ex.objectno, start, end - start)
    merged: list[tuple[int, int]] = []
    for off, n in sorted(pieces):
        if merged and merged[-1][0] + merged[-1][1] == off:
            merged[-1] = (merged[-1][0], merged[-1][1] + n)
        else:
            merged.append((off, n))
    return merged


class RbdBlockImage:
    """The block layer's image interface over an RBD :class:`AsyncImage` (daemon side).

    krbd's map options applied here (``options``, typed by :mod:`pyceph.block.mapopts`):
    ``lock_timeout`` (seconds to wait for the exclusive lock before I/O fails with
    ETIMEDOUT; 0 waits), ``lock_on_read`` (reads take the lock too), ``alloc_size``
    (discards aligned inward to it, smaller ones dropped, as krbd's ``rbd_obj_init_discard``)."""

    def __init__(self, rados, image: AsyncImage, options: dict[str, Any] | None = None):
        self.rados = rados
        self.image = image
        self.read_only = image.read_only
        self.options = dict(options or {})

    def configure(self, settings: dict[str, Any]) -> None:
        """Apply runtime map options (typed by ``mapopts.validate_settings``) to the live
        mapping's image and OSD client: ``lock_timeout``, ``lock_on_read`` here,
        ``osd_request_timeout`` (0: none) and ``osdkeepalive`` on the OSD client.
        ``queue_depth`` is the daemon's (its FUSE server and connection)."""
        self.options.update(settings)
        osdc = getattr(self.rados, "osdc", None)
        if osdc is not None and "osd_request_timeout" in settings:
            osdc.request_timeout = float(settings["osd_request_timeout"])
        if osdc is not None and "osdkeepalive" in settings:
            osdc.set_keepalive_interval(float(settings["osdkeepalive"]))

    @property
    def size(self) -> int:
        """Current image size in bytes: the daemon follows resizes (header updates)."""
        return self.image.size()

    async def _lock(self) -> None:
        """Take the exclusive lock before I/O (``rbd_img_exclusive_lock``), waiting at
        most ``lock_timeout`` seconds (0: as long as it takes).  Called for writes when
        ``lock_timeout`` is set (else the image takes the lock itself) and for reads
        with ``lock_on_read``.  Raises TimedOut (ETIMEDOUT)."""
        lock = getattr(self.image, "exclusive_lock", None)
        if lock is None or lock.is_owner() or self.read_only:
            return
        timeout = self.options.get("lock_timeout") or None
        try:
            await asyncio.wait_for(self.image.acquire_lock(), timeout)
        except asyncio.TimeoutError:
            raise errors.TimedOut(f"exclusive lock not acquired within lock_timeout={timeout}s") from None

    async def read(self, offset: int, length: int) -> bytes:
        if self.options.get("lock_on_read"):
            await self._lock()
        return await self.image.read(offset, length)

    async def write(self, offset: int, data) -> int:
        if self.options.get("lock_timeout"):
            await self._lock()
        return await self.image.write(offset, data)

    async def flush(self) -> None:
        await self.image.flush()

    async def discard(self, offset: int, length: int) -> None:
        """librbd discard (whole objects removed, partial ones truncated/zeroed)."""
        ranges = [(offset, length)]
        if self.options.get("alloc_size"):
            ranges = alloc_aligned_discard(self.image.layout, int(self.options["alloc_size"]), offset, length)
            if not ranges:
                return  # too small to free anything (krbd punts it too)
        if self.options.get("lock_timeout"):
            await self._lock()
        for off, n in ranges:
            await self.image.discard(off, n)

    async def write_zeroes(self, offset: int, length: int) -> None:
        if self.options.get("lock_timeout"):
            await self._lock()
        await self.image.write_zeroes(offset, length)

    async def close(self) -> None:
        try:
            await self.image.close()
        finally:
            await self.rados.shutdown()


def cmd_map_daemon(args) -> int:
    from ..block.daemon import read_spec, run_daemon
    from ..rados import AsyncRados

    spec = read_spec()
    options = spec.get("options") or {}

    async def open_image():
        cfg = _map_config(args, options, spec.get("auth_name"), spec.get("secret"), "the map request")
        r = AsyncRados(cfg)
        mt = options.get("mount_timeout")
        await r.connect(args.connect_timeout if mt is None else (float(mt) or None))
        try:
            want = options.get("fsid")
            if want and r.get_fsid() != want:
                # libceph's fsid option: refuse a monitor of another cluster
                raise errors.InvalidArgumentError(
                    f"cluster fsid {r.get_fsid()} is not the fsid={want} map option")
            io = await r.open_ioctx(spec["pool"], spec.get("namespace") or "")
            snap = spec.get("snap")
            kw: dict[str, Any] = {}
            if _opt_true(options.get("exclusive")):
                kw["exclusive"] = True
            img = await AsyncImage.open(io, spec["name"], read_only=bool(spec.get("read_only")),
                                        snapshot=None if snap in (None, "-") else snap, **kw)
        except BaseException:
            await r.shutdown()
            raise
        return RbdBlockImage(r, img, options)

    return run_daemon(spec, open_image)


#: krbd map option -> the ClientConfig option it sets (pyceph.osd.client, pyceph.mon.client)
_CONFIG_OF_MAP_OPTION = {
    "ms_mode": "ms_mode",
    "osd_request_timeout": "osd_request_timeout",
    "osdkeepalive": "osd_keepalive_interval",
    "osd_idle_ttl": "osd_idle_ttl",
    "mount_timeout": "client_mount_timeout",
    "read_from_replica": "rbd_read_from_replica_policy",
    "crush_location": "crush_location",
    "abort_on_full": "abort_on_full",
}


def _map_config(args, options: dict[str, Any], auth_name: str | None = None, secret: str | None = None,
                secret_source: str | None = None):
    """The client config of a mapping: the CLI's conf/--keyfile/--keyring/--id, then the
    map options (docs/MAP-OPTIONS.md): ``name``/``secret`` (``auth_name``, ``secret``;
    ``secret_source`` says where it came from, for errors), ``mon_addr`` and the client
    settings of :data:`_CONFIG_OF_MAP_OPTION`.  Raises ConfigError for a bad conf, key
    (naming its source, never the key) or ``ms_mode``."""
    from ..auth.keyring import check_config_key
    from ..config import ClientConfig

    mon_addr = options.get("mon_addr")
    cfg = check_config_key(ClientConfig.load(
        conffile=args.conf, name=auth_name or args.name, client_id=args.client_id,
        keyring=None if secret else args.keyring, keyfile=None if secret else getattr(args, "keyfile", None),
        mon_host=",".join(mon_addr) if mon_addr else args.mon_host, key=secret, cluster=args.cluster,
        key_source=secret_source if secret else None,
    ))
    for opt, key in _CONFIG_OF_MAP_OPTION.items():
        v = options.get(opt)
        if v is None or v is False:
            continue
        if opt == "read_from_replica":
            v = "default" if v == "no" else v
        elif opt == "crush_location":
            v = " ".join(f"{t}={n}" for t, n in v)
        elif opt == "mount_timeout" and not v:
            v = 10 ** 9  # 0: wait forever
        elif v is True:
            v = "true"
        cfg.options[key] = str(v)
    mode = cfg.options.get("ms_mode")
    if mode is not None:
        parse_ms_mode(mode, "ms_mode")
    return cfg


def _opt_true(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("", "1", "true", "yes", "on")
    return bool(v)


def cmd_unmap(args) -> int:
    from ..block import unmap

    from ..block.mapopts import MapOptionError, parse_unmap_options

    try:
        force = "force" in parse_unmap_options(args.options or [])
    except MapOptionError as e:
        raise CliError(e.message or str(e), errno=errno.EINVAL) from None
    with failing("unmap failed"):
        unmap(args.target, timeout=args.timeout, force=force)
    return 0


def cmd_showmapped(args) -> int:
    from ..block import showmapped

    rows = showmapped()
    if args.format == "json":
        _dump(rows, args)
        return 0
    if not rows:
        return 0
    # (JSON key, column title): rbd's table says "image" where its JSON says "name".
    cols = [("id", "id"), ("pool", "pool"), ("namespace", "namespace"), ("name", "image"),
            ("snap", "snap"), ("device", "device")]
    widths = {c: max(len(t), *(len(str(r[c])) for r in rows)) for c, t in cols}
    print("  ".join(f"{t:<{widths[c]}}" for c, t in cols).rstrip())
    for r in rows:
        print("  ".join(f"{str(r[c]):<{widths[c]}}" for c, _ in cols).rstrip())
    return 0


# -- parser ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog=PROG, description="RBD images over pyceph's pure-Python Ceph client "
                                "(the rbd command line).")
    add_client_options(p)
    p.add_argument("-p", "--pool", help="pool name (default rbd)")
    p.add_argument("--namespace", help="namespace")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parent = client_parent()

    def group(subparsers):
        """Make every parser of ``subparsers`` take the connection options too."""
        _add = subparsers.add_parser

        def add_parser(name, **kw):
            return _add(name, parents=[parent], **kw)

        subparsers.add_parser = add_parser
        return subparsers

    group(sub)

    def fmt(sp):
        sp.add_argument("--format", choices=("plain", "json", "xml"), default="plain")
        sp.add_argument("--pretty-format", action="store_true")

    def img(sp, nargs=None, help="[pool/[namespace/]]image[@snap]"):
        sp.add_argument("image_spec", nargs=nargs or "?", help=help)
        sp.add_argument("--image", help="image name")
        sp.add_argument("--snap", help="snapshot name")

    def noprog(sp):
        sp.add_argument("--no-progress", action="store_true", help="disable progress output")

    def create_opts(sp, what="image"):
        sp.add_argument("--order", type=int, help="object order (12..25)")
        sp.add_argument("--object-size", help="object size (power of two, e.g. 4M)")
        sp.add_argument("--image-feature", action="append",
                        help="image features (layering, striping, exclusive-lock, object-map, fast-diff, "
                             "deep-flatten); repeat or comma-separate")
        sp.add_argument("--image-format", type=int, default=2, choices=(2,))
        sp.add_argument("--stripe-unit", help="stripe unit")
        sp.add_argument("--stripe-count", type=int, help="stripe count")

    sp = sub.add_parser("create", help="create an empty image")
    img(sp, help="[pool/[namespace/]]image")
    sp.add_argument("-s", "--size", help="size (MiB default; K/M/G/T suffixes)")
    create_opts(sp)
    sp.set_defaults(func=cmd_create)

    sp = sub.add_parser("ls", aliases=["list"], help="list images in a pool")
    sp.add_argument("pool_spec", nargs="?", help="pool[/namespace]")
    sp.add_argument("-l", "--long", action="store_true")
    fmt(sp)
    sp.set_defaults(func=cmd_ls)

    sp = sub.add_parser("info", help="show image information")
    img(sp)
    fmt(sp)
    sp.set_defaults(func=cmd_info)

    sp = sub.add_parser("rm", aliases=["remove"], help="delete an image")
    img(sp, help="[pool/[namespace/]]image")
    noprog(sp)
    sp.set_defaults(func=cmd_rm)

    sp = sub.add_parser("resize", help="resize (expand or shrink) an image")
    img(sp, help="[pool/[namespace/]]image")
    sp.add_argument("-s", "--size", help="new size (MiB default; K/M/G/T suffixes)")
    sp.add_argument("--allow-shrink", action="store_true", help="permit shrinking")
    noprog(sp)
    sp.set_defaults(func=cmd_resize)

    sp = sub.add_parser("export", help="export an image (or snapshot) to a file ('-' for stdout)")
    img(sp)
    sp.add_argument("path_name", help="destination file or -")
    noprog(sp)
    sp.add_argument("--force", action="store_true", help="overwrite an existing file")
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("import", help="import a file ('-' for stdin) as a new image")
    sp.add_argument("path", help="source file or -")
    sp.add_argument("dest_spec", nargs="?", help="[pool/[namespace/]]image")
    sp.add_argument("--dest-pool")
    create_opts(sp)
    noprog(sp)
    sp.set_defaults(func=cmd_import)

    sp = sub.add_parser("bench", help="simple benchmark (rbd bench)")
    img(sp, help="[pool/[namespace/]]image")
    sp.add_argument("--io-type", required=True, choices=("read", "write", "readwrite", "rw"))
    sp.add_argument("--io-size", default="4K")
    sp.add_argument("--io-threads", type=int, default=16)
    sp.add_argument("--io-total", default="1G")
    sp.add_argument("--io-pattern", choices=("seq", "rand"), default="seq")
    fmt(sp)
    sp.set_defaults(func=cmd_bench)

    # snapshots
    sp = sub.add_parser("snap", help="snapshot commands: create|ls|rm|purge|rollback|protect|unprotect|rename")
    ssub = group(sp.add_subparsers(dest="snap_command", metavar="SNAP_COMMAND", required=True))
    s = ssub.add_parser("create", aliases=["add"], help="create a snapshot")
    img(s, help="[pool/[namespace/]]image@snap")
    noprog(s)
    s.set_defaults(func=cmd_snap_create)
    s = ssub.add_parser("ls", aliases=["list"], help="list snapshots of an image")
    img(s, help="[pool/[namespace/]]image")
    s.add_argument("-a", "--all", action="store_true", help="list snapshots from all namespaces")
    fmt(s)
    s.set_defaults(func=cmd_snap_ls)
    s = ssub.add_parser("rm", aliases=["remove"], help="delete a snapshot")
    img(s, help="[pool/[namespace/]]image@snap")
    noprog(s)
    s.add_argument("--force", action="store_true", help="flatten children and unprotect snapshot if needed")
    s.set_defaults(func=cmd_snap_rm)
    s = ssub.add_parser("purge", help="delete all unprotected snapshots")
    img(s, help="[pool/[namespace/]]image")
    noprog(s)
    s.set_defaults(func=cmd_snap_purge)
    s = ssub.add_parser("rollback", aliases=["revert"], help="roll the image back to a snapshot")
    img(s, help="[pool/[namespace/]]image@snap")
    noprog(s)
    s.set_defaults(func=cmd_snap_rollback)
    s = ssub.add_parser("protect", help="prevent a snapshot from being deleted")
    img(s, help="[pool/[namespace/]]image@snap")
    s.set_defaults(func=cmd_snap_protect)
    s = ssub.add_parser("unprotect", help="allow a snapshot to be deleted")
    img(s, help="[pool/[namespace/]]image@snap")
    s.set_defaults(func=cmd_snap_unprotect)
    s = ssub.add_parser("rename", help="rename a snapshot")
    img(s, help="source [pool/[namespace/]]image@snap")
    s.add_argument("dest_spec", nargs="?", help="destination [pool/[namespace/]]image@snap")
    s.add_argument("--dest-pool")
    s.add_argument("--dest-namespace")
    s.add_argument("--dest", help="destination image name")
    s.add_argument("--dest-snap", help="destination snapshot name")
    s.set_defaults(func=cmd_snap_rename)

    # clones
    sp = sub.add_parser("clone", help="clone a snapshot into a copy-on-write child image")
    img(sp, help="parent [pool/[namespace/]]image@snap")
    sp.add_argument("dest_spec", nargs="?", help="child [pool/[namespace/]]image")
    sp.add_argument("--dest-pool")
    sp.add_argument("--dest-namespace")
    sp.add_argument("--dest", help="child image name")
    create_opts(sp)
    sp.add_argument("--rbd-default-clone-format", "--rbd_default_clone_format", dest="clone_format",
                    choices=("auto", "1", "2"), default=None,
                    help="clone format: 1 (protected parent snapshot), 2 (no protection needed), "
                         "auto (rbd's default)")
    sp.set_defaults(func=cmd_clone)

    sp = sub.add_parser("flatten", help="fill a clone with its parent's data, making it independent")
    img(sp, help="[pool/[namespace/]]image")
    noprog(sp)
    sp.set_defaults(func=cmd_flatten)

    sp = sub.add_parser("children", help="list the children of a snapshot (or of every snapshot)")
    img(sp)
    sp.add_argument("-a", "--all", action="store_true", help="list all children (include trash)")
    sp.add_argument("--descendants", action="store_true", help="include all descendants")
    fmt(sp)
    sp.set_defaults(func=cmd_children)

    # features
    sp = sub.add_parser("feature", help="enable or disable image features")
    fsub = group(sp.add_subparsers(dest="feature_action", metavar="enable|disable", required=True))
    for action in ("enable", "disable"):
        s = fsub.add_parser(action, help=f"{action} image features")
        img(s, help="[pool/[namespace/]]image")
        s.add_argument("features", nargs="*", help="feature names (exclusive-lock, object-map, fast-diff, ...)")
        s.set_defaults(func=cmd_feature, feature_action=action)

    # locks
    sp = sub.add_parser("lock", help="advisory locks: ls|add|rm")
    lsub = group(sp.add_subparsers(dest="lock_command", metavar="ls|add|rm", required=True))
    s = lsub.add_parser("ls", aliases=["list"], help="show locks held on an image")
    img(s, help="[pool/[namespace/]]image")
    fmt(s)
    s.set_defaults(func=cmd_lock_ls)
    s = lsub.add_parser("add", help="take a lock on an image")
    img(s, help="[pool/[namespace/]]image")
    s.add_argument("lock_id", help="unique lock id")
    s.add_argument("--shared", metavar="TAG", help="shared lock tag")
    s.set_defaults(func=cmd_lock_add)
    s = lsub.add_parser("rm", aliases=["remove"], help="release (break) a lock on an image")
    img(s, help="[pool/[namespace/]]image")
    s.add_argument("lock_id", help="lock id")
    s.add_argument("locker", help="locker client, e.g. client.4123")
    s.set_defaults(func=cmd_lock_rm)

    sp = sub.add_parser("status", help="show the watchers of an image")
    img(sp, help="[pool/[namespace/]]image")
    fmt(sp)
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("diff", help="print extents that differ since a snapshot (or since creation)")
    img(sp)
    sp.add_argument("--from-snap", help="snapshot starting point")
    sp.add_argument("--whole-object", action="store_true", help="compare whole objects")
    fmt(sp)
    sp.set_defaults(func=cmd_diff)

    sp = sub.add_parser("du", aliases=["disk-usage"], help="show disk usage of a pool, image or snapshot")
    img(sp)
    sp.add_argument("--from-snap", help="snapshot starting point")
    sp.add_argument("--exact", action="store_true", help="compute exact disk usage (slow)")
    sp.add_argument("--merge-snapshots", action="store_true", help="merge snapshot sizes with its image")
    fmt(sp)
    sp.set_defaults(func=cmd_du)

    sp = sub.add_parser("object-map", help="object map: check|rebuild")
    osub = group(sp.add_subparsers(dest="om_action", metavar="check|rebuild", required=True))
    for action in ("check", "rebuild"):
        s = osub.add_parser(action, help=f"{action} the object map of an image (or snapshot)")
        img(s)
        noprog(s)
        s.set_defaults(func=cmd_object_map, om_action=action)

    # block devices
    sp = sub.add_parser("map", aliases=["device-map"], help="map an image to a block device (/dev/loopN)")
    img(sp)
    sp.add_argument("-o", "--options", action="append",
                    help="krbd map options, comma-separated (docs/MAP-OPTIONS.md): ro, exclusive, notrim, "
                    "queue_depth=N, name=ID, secret=KEY, key=DESC, ms_mode=MODE, read_from_replica=balance, ...")
    sp.add_argument("--read-only", action="store_true")
    sp.add_argument("--exclusive", action="store_true", help="keep the exclusive lock (like -o exclusive)")
    sp.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the mapping")
    sp.set_defaults(func=cmd_map)

    sp = sub.add_parser("unmap", aliases=["device-unmap"], help="unmap a mapped device")
    sp.add_argument("target", help="device path or [pool/]image[@snap]")
    sp.add_argument("-o", "--options", action="append", help="unmap options: force")
    sp.add_argument("--timeout", type=float, default=60.0)
    sp.set_defaults(func=cmd_unmap)

    sp = sub.add_parser("showmapped", aliases=["device-list"], help="show mapped images")
    fmt(sp)
    sp.set_defaults(func=cmd_showmapped)

    # rbd device map|unmap|list and rbdmap (pyceph/cli/device.py)
    dsub = add_device_parsers(sub, map_cmd=cmd_map, unmap_cmd=cmd_unmap, parents=[parent])
    add_device_config_parser(dsub)  # prbd device config DEV --set k=v ... (one transaction)
    add_rbdmap_parser(sub)

    sp = sub.add_parser("_map-daemon", help=argparse.SUPPRESS)
    sp.set_defaults(func=cmd_map_daemon)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "io_type", None) == "rw":
        args.io_type = "readwrite"
    if args.command != "_map-daemon":
        setup_logging(args)
    return run_main(PROG, lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
