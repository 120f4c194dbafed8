"""``prbd``: the ``rbd`` command line, over pyceph's own client.

Mirrors ``rbd``'s syntax (``src/tools/rbd/action/*.cc``) so that scripts can switch:
``create --size``, ``ls [-l]``, ``info``, ``rm``, ``import``, ``export``, ``bench``,
``map``, ``unmap``, ``showmapped``; ``--format json`` where ``rbd`` has it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from typing import Any

from .. import errors
from ..rbd import AsyncImage, AsyncRBD
from ..rbd.features import FEATURE_NAMES
from .common import (
    ImageSpec,
    add_client_options,
    client_parent,
    fmt_size,
    load_config,
    parse_image_spec,
    parse_size,
    run_main,
    setup_logging,
    with_rados,
)

PROG = "prbd"
FEATURES_BY_NAME = {v: k for k, v in FEATURE_NAMES.items()}


class Progress:
    """``rbd``'s progress lines on stderr: ``\\rImporting image: 42% complete...``."""

    def __init__(self, what: str, enabled: bool):
        self.what = what
        self.enabled = enabled
        self.last = -1

    def update(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        pct = int(done * 100 / total)
        if pct != self.last:
            self.last = pct
            sys.stderr.write(f"\r{self.what}: {pct}% complete...")
            sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            sys.stderr.write(f"\r{self.what}: 100% complete...done.\n")
            sys.stderr.flush()

    def fail(self) -> None:
        if self.enabled:
            sys.stderr.write(f"\r{self.what}: {max(self.last, 0)}% complete...failed.\n")

    def run(self, fn, *a):
        """``fn(*a)``, then the final ``done.`` line, or ``failed.`` if it raised."""
        try:
            r = fn(*a)
        except BaseException:
            self.fail()
            raise
        self.finish()
        return r


def _spec(args, default_pool="rbd") -> ImageSpec:
    return parse_image_spec(
        getattr(args, "image_spec", None), pool=getattr(args, "pool", None),
        namespace=getattr(args, "namespace", None), image=getattr(args, "image", None),
        snap=getattr(args, "snap", None), default_pool=default_pool,
    )


def _features(args) -> int | None:
    if not args.image_feature:
        return None
    f = 0
    for item in args.image_feature:
        for name in item.split(","):
            name = name.strip()
            if not name:
                continue
            if name.isdigit():
                f |= int(name)
            elif name in FEATURES_BY_NAME:
                f |= FEATURES_BY_NAME[name]
            else:
                raise errors.InvalidArgumentError(f"unknown image feature {name!r}")
    return f


def _order(args) -> int | None:
    if getattr(args, "order", None) is not None:
        return args.order
    if getattr(args, "object_size", None):
        size = parse_size(args.object_size, "B")
        if size & (size - 1):
            raise errors.InvalidArgumentError("object size must be a power of two")
        return size.bit_length() - 1
    return None


def _with_image(args, spec: ImageSpec, read_only: bool, fn) -> Any:
    """Connect, open ``spec`` (its snapshot if any), return ``await fn(image)``; always close."""

    async def go(r):
        io = await r.open_ioctx(spec.pool, spec.namespace)
        img = await AsyncImage.open(io, spec.image, read_only=read_only, snapshot=spec.snap)
        try:
            return await fn(img)
        finally:
            await img.close()

    return asyncio.run(with_rados(args, go))


def _dump(obj: Any, args) -> None:
    if getattr(args, "pretty_format", False):
        print(json.dumps(obj, indent=4))
    else:
        print(json.dumps(obj))


# -- create / ls / info / rm ------------------------------------------------------------

def cmd_create(args) -> int:
    spec = _spec(args)
    size = parse_size(args.size)

    async def go(r):
        io = await r.open_ioctx(spec.pool, spec.namespace)
        su = parse_size(args.stripe_unit, "B") if args.stripe_unit else None
        await AsyncRBD().create(io, spec.image, size, order=_order(args), features=_features(args),
                                stripe_unit=su, stripe_count=args.stripe_count)

    asyncio.run(with_rados(args, go))
    return 0


def cmd_ls(args) -> int:
    pool = args.pool_spec or args.pool or "rbd"
    ns = args.namespace or ""
    if "/" in pool:
        pool, ns = pool.split("/", 1)

    async def go(r):
        io = await r.open_ioctx(pool, ns)
        names = await AsyncRBD().list(io)
        if not args.long:
            return [{"image": n} for n in names] if args.format == "json" else names
        out = []
        for n in names:
            try:
                img = await AsyncImage.open(io, n, read_only=True)
            except errors.ImageNotFound:
                continue
            try:
                out.append({"image": n, "id": img.id(), "size": img.size(), "format": 2})
            finally:
                await img.close()
        return out

    res = asyncio.run(with_rados(args, go))
    if args.format == "json":
        if not args.long:
            res = [d["image"] for d in res]
        _dump(res, args)
    elif args.long:
        if res:
            w = max(4, max(len(d["image"]) for d in res))
            print(f"{'NAME':<{w}}  {'SIZE':<7}  PARENT  FMT  PROT  LOCK")
            for d in res:
                print(f"{d['image']:<{w}}  {fmt_size(d['size']):<7}          {d['format']}            ")
    else:
        for n in res:
            print(n)
    return 0


def cmd_info(args) -> int:
    spec = _spec(args)

    async def go(img):
        return img.info_json(spec.image)

    info = _with_image(args, spec, True, go)
    if args.format == "json":
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
    for k in ("stripe_unit", "stripe_count"):
        if k in info:
            v = info[k]
            print(f"\t{k.replace('_', ' ')}: {fmt_size(v) if k == 'stripe_unit' else v}")
    return 0


def cmd_rm(args) -> int:
    spec = _spec(args)
    prog = Progress("Removing image", not args.no_progress)

    async def go(r):
        io = await r.open_ioctx(spec.pool, spec.namespace)
        await AsyncRBD().remove(io, spec.image)

    prog.run(lambda: asyncio.run(with_rados(args, go)))
    return 0


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
    spec = _spec(args)
    path = args.path_name
    prog = Progress("Exporting image", not args.no_progress and path != "-")

    async def go(img):
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
            raise errors.ObjectExists(f"{path}: file exists; pass --force to overwrite it")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, size)

            async def worker(off, n):
                _pwrite_sparse(fd, await img.read(off, n), off)

            await _pipelined(size, chunk, worker, 8, prog)
            os.fsync(fd)
        finally:
            os.close(fd)

    prog.run(lambda: _with_image(args, spec, True, go))
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
    spec = parse_image_spec(dest, pool=args.dest_pool or args.pool, default_pool="rbd")
    prog = Progress("Importing image", not args.no_progress)

    async def go(r):
        io = await r.open_ioctx(spec.pool, spec.namespace)
        if path == "-":
            data = sys.stdin.buffer.read()
            size = len(data)
            src = None
        else:
            src = os.open(path, os.O_RDONLY)
            size = os.fstat(src).st_size
        order = _order(args)
        await AsyncRBD().create(io, spec.image, size, order=order, features=_features(args))
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

    prog.run(lambda: asyncio.run(with_rados(args, go)))
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
                print(f"{sec:5d}  {completed:8d}  {rate:8.2f}  {fmt_size(rate * io_size)}/s", file=out)
                last_print, last_ops = now, completed

    await asyncio.gather(*(worker() for _ in range(threads)))
    await img.flush()
    elapsed = time.monotonic() - start
    ops_s = completed / elapsed if elapsed else 0.0
    print(f"elapsed: {int(elapsed)}   ops: {completed}   ops/sec: {ops_s:.6g}   "
          f"bytes/sec: {fmt_size(ops_s * io_size)}/s", file=out)
    return {"elapsed": elapsed, "ops": completed, "ops_per_sec": ops_s, "bytes_per_sec": ops_s * io_size}


def cmd_bench(args) -> int:
    spec = _spec(args)
    io_size = parse_size(args.io_size, "B")
    total = parse_size(args.io_total, "B")

    async def go(img):
        return await run_bench(img, args.io_type, io_size, args.io_threads, total, args.io_pattern)

    res = _with_image(args, spec, args.io_type == "read", go)
    if args.format == "json":
        _dump(res, args)
    return 0


# -- map / unmap / showmapped ------------------------------------------------------------

def _map_options(opts: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in opts:
        for kv in item.split(","):
            if not kv:
                continue
            k, _, v = kv.partition("=")
            out[k.strip()] = v.strip() if v else True
    return out


def cmd_map(args) -> int:
    from ..block import map_image

    spec = _spec(args)
    options = _map_options(args.options or [])
    read_only = bool(args.read_only or options.pop("ro", False) or options.pop("read_only", False)
                     or spec.snap)
    options.pop("rw", None)
    cfg = load_config(args)  # fail here, in the foreground, on a bad conf or key
    daemon_argv = [sys.executable, "-m", "pyceph.cli.prbd", "_map-daemon"]
    if cfg.conf_path:
        daemon_argv += ["--conf", cfg.conf_path]
    daemon_argv += ["--name", str(cfg.name)]
    if args.keyring:
        daemon_argv += ["--keyring", args.keyring]
    if args.mon_host:
        daemon_argv += ["--mon-host", args.mon_host]
    if args.debug:
        daemon_argv += ["--debug"]
    dev = map_image(
        {"pool": spec.pool, "namespace": spec.namespace, "name": spec.image, "snap": spec.snap or "-",
         "read_only": read_only, "options": options},
        daemon_argv, timeout=args.timeout,
    )
    print(dev)
    return 0


class RbdBlockImage:
    """The block layer's image interface over an RBD :class:`AsyncImage` (daemon side)."""

    def __init__(self, rados, image: AsyncImage):
        self.rados = rados
        self.image = image
        self.size = image.size()
        self.read_only = image.read_only

    async def read(self, offset: int, length: int) -> bytes:
        return await self.image.read(offset, length)

    async def write(self, offset: int, data) -> int:
        return await self.image.write(offset, data)

    async def flush(self) -> None:
        await self.image.flush()

    async def close(self) -> None:
        try:
            await self.image.close()
        finally:
            await self.rados.shutdown()


def cmd_map_daemon(args) -> int:
    from ..block import run_daemon, spec_from_env
    from ..rados import AsyncRados

    spec = spec_from_env()

    async def open_image():
        r = AsyncRados(load_config(args))
        await r.connect(args.connect_timeout)
        try:
            io = await r.open_ioctx(spec["pool"], spec.get("namespace") or "")
            snap = spec.get("snap")
            img = await AsyncImage.open(io, spec["name"], read_only=bool(spec.get("read_only")),
                                        snapshot=None if snap in (None, "-") else snap)
        except BaseException:
            await r.shutdown()
            raise
        return RbdBlockImage(r, img)

    return run_daemon(spec, open_image)


def cmd_unmap(args) -> int:
    from ..block import unmap

    unmap(args.target, timeout=args.timeout, force="force" in _map_options(args.options or []))
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
    p = argparse.ArgumentParser(prog=PROG, description="RBD images over pyceph's pure-Python Ceph client "
                                "(the rbd command line).")
    add_client_options(p)
    p.add_argument("-p", "--pool", help="pool name (default rbd)")
    p.add_argument("--namespace", help="namespace")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parent = client_parent()
    _add = sub.add_parser

    def add_parser(name, **kw):
        return _add(name, parents=[parent], **kw)

    sub.add_parser = add_parser  # every subcommand takes the connection options too

    def fmt(sp):
        sp.add_argument("--format", choices=("plain", "json", "xml"), default="plain")
        sp.add_argument("--pretty-format", action="store_true")

    def img(sp, nargs=None):
        sp.add_argument("image_spec", nargs=nargs or "?", help="[pool/[namespace/]]image[@snap]")
        sp.add_argument("--image", help="image name")
        sp.add_argument("--snap", help="snapshot name")

    sp = sub.add_parser("create", help="create an empty image")
    img(sp)
    sp.add_argument("-s", "--size", required=True, help="size (MiB default; K/M/G/T suffixes)")
    sp.add_argument("--order", type=int, help="object order (12..25)")
    sp.add_argument("--object-size", help="object size (power of two, e.g. 4M)")
    sp.add_argument("--image-feature", action="append", help="image features (layering, striping)")
    sp.add_argument("--image-format", type=int, default=2, choices=(2,))
    sp.add_argument("--stripe-unit", help="stripe unit")
    sp.add_argument("--stripe-count", type=int, help="stripe count")
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
    img(sp)
    sp.add_argument("--no-progress", action="store_true")
    sp.set_defaults(func=cmd_rm)

    sp = sub.add_parser("export", help="export an image to a file ('-' for stdout)")
    img(sp)
    sp.add_argument("path_name", help="destination file or -")
    sp.add_argument("--no-progress", action="store_true")
    sp.add_argument("--force", action="store_true", help="overwrite an existing file")
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("import", help="import a file ('-' for stdin) as a new image")
    sp.add_argument("path", help="source file or -")
    sp.add_argument("dest_spec", nargs="?", help="[pool/[namespace/]]image")
    sp.add_argument("--dest-pool")
    sp.add_argument("--order", type=int)
    sp.add_argument("--object-size")
    sp.add_argument("--image-feature", action="append")
    sp.add_argument("--image-format", type=int, default=2, choices=(2,))
    sp.add_argument("--no-progress", action="store_true")
    sp.set_defaults(func=cmd_import)

    sp = sub.add_parser("bench", help="simple benchmark (rbd bench)")
    img(sp)
    sp.add_argument("--io-type", required=True, choices=("read", "write", "readwrite", "rw"))
    sp.add_argument("--io-size", default="4K")
    sp.add_argument("--io-threads", type=int, default=16)
    sp.add_argument("--io-total", default="1G")
    sp.add_argument("--io-pattern", choices=("seq", "rand"), default="seq")
    fmt(sp)
    sp.set_defaults(func=cmd_bench)

    sp = sub.add_parser("map", aliases=["device-map"], help="map an image to a block device (/dev/loopN)")
    img(sp)
    sp.add_argument("-o", "--options", action="append", help="map options: ro, direct_io=0, ...")
    sp.add_argument("--read-only", action="store_true")
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

    sp = sub.add_parser("_map-daemon", help=argparse.SUPPRESS)
    sp.set_defaults(func=cmd_map_daemon)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "rw":
        args.io_type = "readwrite"
    if getattr(args, "io_type", None) == "rw":
        args.io_type = "readwrite"
    if args.command != "_map-daemon":
        setup_logging(args)
    return run_main(PROG, lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
