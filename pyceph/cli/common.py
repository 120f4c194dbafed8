"""Pieces shared by ``prbd`` and ``pyceph``: global options, size and image-spec parsing,
error reporting (one clear line, non-zero exit), and running the async core."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from .. import errors
from ..config import ClientConfig

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50, "E": 1 << 60}


def parse_size(s: str, default_unit: str = "M") -> int:
    """``rbd``-style sizes: ``1024`` (MiB by default), ``10G``, ``4K``, ``512B``, ``1.5G``.  Bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGTPE]?)(i?B)?\s*", s, re.IGNORECASE)
    if not m:
        raise errors.InvalidArgumentError(f"invalid size: {s!r}")
    num, unit, b = m.groups()
    unit = unit.upper()
    if not unit and not b:
        unit = default_unit
    return int(float(num) * _UNITS[unit])


def fmt_size(n: float) -> str:
    """Like Ceph's ``byte_u_t``: ``256 MiB``, ``1.5 GiB``, ``4 KiB``, ``0 B``."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    i = 0
    x = float(n)
    while x >= 1024 and i < len(units) - 1 and (x / 1024) >= 1:
        x /= 1024
        i += 1
    if i == 0:
        return f"{int(n)} B"
    if x == int(x):
        return f"{int(x)} {units[i]}"
    return f"{x:.3g} {units[i]}"


@dataclass
class ImageSpec:
    pool: str
    namespace: str
    image: str
    snap: str | None

    def __str__(self) -> str:
        s = f"{self.pool}/"
        if self.namespace:
            s += f"{self.namespace}/"
        s += self.image
        if self.snap:
            s += f"@{self.snap}"
        return s


def parse_image_spec(spec: str | None, pool: str | None = None, namespace: str | None = None,
                     image: str | None = None, snap: str | None = None, default_pool: str = "rbd") -> ImageSpec:
    """``[pool/[namespace/]]image[@snap]`` (or ``--pool/--image/--snap``), as ``rbd`` parses it."""
    if spec is None and image is None:
        raise errors.InvalidArgumentError("image name was not specified")
    if spec is not None:
        if "@" in spec:
            spec, _, snap2 = spec.partition("@")
            snap = snap2 or snap
        parts = spec.split("/")
        if len(parts) == 1:
            image = parts[0]
        elif len(parts) == 2:
            pool, image = parts
        elif len(parts) == 3:
            pool, namespace, image = parts
        else:
            raise errors.InvalidArgumentError(f"invalid image spec: {spec!r}")
    if not image:
        raise errors.InvalidArgumentError("image name was not specified")
    return ImageSpec(pool or default_pool, namespace or "", image, snap)


def add_client_options(p: argparse.ArgumentParser, suppress: bool = False) -> None:
    """The options ``rbd`` and ``ceph`` take to find and authenticate to a cluster.

    With ``suppress`` (for subcommand parsers) unset options leave the top-level
    values alone, so ``prbd -c X ls`` and ``prbd ls -c X`` both work, as with ``rbd``.
    """
    def d(v):
        return argparse.SUPPRESS if suppress else v

    g = p.add_argument_group("cluster connection")
    g.add_argument("-c", "--conf", default=d(None),
                   help="ceph.conf path (default: $CEPH_CONF, /etc/ceph/ceph.conf, dev cluster)")
    g.add_argument("--id", "--user", dest="client_id", default=d(None), help="client id without 'client.' (default admin)")
    g.add_argument("-n", "--name", default=d(None), help="entity name, e.g. client.admin")
    g.add_argument("-k", "--keyring", default=d(None), help="keyring path")
    g.add_argument("-m", "--mon-host", "--mon_host", dest="mon_host", default=d(None), help="monitor address(es)")
    g.add_argument("--cluster", default=d("ceph"), help="cluster name (default ceph)")
    g.add_argument("--connect-timeout", type=float, default=d(None),
                   help="seconds to reach and authenticate to a monitor (default client_mount_timeout)")
    g.add_argument("--debug", action="store_true", default=d(False), help="log protocol details to stderr")


def client_parent() -> argparse.ArgumentParser:
    """A parent parser carrying the client options for subcommands."""
    parent = argparse.ArgumentParser(add_help=False)
    add_client_options(parent, suppress=True)
    parent.add_argument("-p", "--pool", default=argparse.SUPPRESS, help="pool name")
    parent.add_argument("--namespace", default=argparse.SUPPRESS, help="namespace")
    return parent


def load_config(args: argparse.Namespace) -> ClientConfig:
    return ClientConfig.load(
        conffile=args.conf, name=args.name, client_id=args.client_id, keyring=args.keyring,
        mon_host=args.mon_host, cluster=args.cluster,
    )


def setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if getattr(args, "debug", False) else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")


async def with_rados(args: argparse.Namespace, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    """Connect (``AsyncRados``), run ``fn(rados)``, always shut down."""
    from ..rados import AsyncRados

    r = AsyncRados(load_config(args))
    await r.connect(args.connect_timeout)
    try:
        return await fn(r)
    finally:
        await r.shutdown()


def run_main(prog: str, fn: Callable[[], int]) -> int:
    """Run a CLI body: a typed error becomes one line ``prog: ErrorType: message`` on
    stderr and exit code 1 (argparse's usage errors exit 2); Ctrl-C exits 130."""
    try:
        return fn() or 0
    except errors.Error as e:
        print(f"{prog}: {type(e).__name__}: {e.message or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def arun(coro) -> Any:
    return asyncio.run(coro)
