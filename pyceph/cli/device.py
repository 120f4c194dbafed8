"""``prbd device map|unmap|list`` (``rbd device``'s syntax: src/tools/rbd/action/Device.cc
and Kernel.cc) and ``prbd rbdmap map|unmap|unmap-all|install-unit`` (Ceph's rbdmap).

``prbd device map`` also takes the one string /sys/bus/rbd/add takes,
``"mon_addrs options pool image [snap]"``; read it from stdin (``--add -``) so
that a ``secret=`` never sits in argv: an add string given in argv that holds a
``secret=`` is refused.

The commands that need the foreground map path of ``prbd map`` (config, keys,
daemon argv) get it from prbd as callables (``add_device_parsers(sub, map_cmd=...,
unmap_cmd=...)``): this module does not import prbd.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import sys
from importlib import resources
from typing import Any, Callable

from ..block import devattrs
from ..block import rbdmap as rbdmap_mod
from .common import CliError

#: the device types ``rbd device -t`` knows; pyceph serves krbd's model only
KNOWN_DEVICE_TYPES = ("krbd", "nbd", "ggate", "ubbd")
#: fields of ``rbd device list --format json`` for krbd (krbd.cc dump_one_image),
#: all strings, in this order, inside a JSON array
LIST_FIELDS = ("id", "pool", "namespace", "name", "snap", "device")
UNIT_NAME = "pyceph-rbdmap.service"
#: bytes read from stdin for ``--add -`` at most (the kernel takes a page)
ADD_STRING_MAX = 4096


def _check_type(args) -> None:
    t = getattr(args, "device_type", None) or "krbd"
    if t != "krbd":
        what = "unknown device type" if t not in KNOWN_DEVICE_TYPES else "device type"
        raise CliError(f"{what} '{t}' is not supported: pyceph maps with krbd's model "
                       "(FUSE + loop); use -t krbd", errno=errno.EOPNOTSUPP)


def read_add_string(args, stdin=None) -> str | None:
    """The add string of ``--add`` (``-`` = stdin, first line) or ``--add-string``;
    None if neither.  Refuses a ``secret=`` in argv (CliError EINVAL, the string
    not echoed)."""
    text = getattr(args, "add_string", None)
    src = getattr(args, "add", None)
    if text is not None and src is not None:
        raise CliError("--add and --add-string are mutually exclusive", errno=errno.EINVAL)
    if src is not None:
        if src != "-":
            raise CliError("--add takes '-' (read the add string from stdin)", errno=errno.EINVAL)
        stream = stdin if stdin is not None else sys.stdin
        text = stream.readline(ADD_STRING_MAX + 1)
        if len(text) > ADD_STRING_MAX:
            raise CliError(f"add string longer than {ADD_STRING_MAX} bytes", errno=errno.EINVAL)
        return text
    if text is not None and any(kv.strip().startswith("secret=") for tok in text.split()
                                for kv in tok.split(",")):
        raise CliError("an add string in argv must not hold secret=: pass it on stdin "
                       "(--add -) or use key=NAME (kernel keyring) / --keyring", errno=errno.EINVAL)
    return text


def apply_add_string(args, text: str) -> None:
    """Turn an add string into the arguments ``prbd map`` takes: image spec, ``-o``
    options (krbd's, checked by the map options parser), ``--mon-host``, and
    ``--name`` from ``name=`` when no entity was given."""
    try:
        add = devattrs.parse_add_string(text)
    except devattrs.AddStringError as e:
        raise CliError(f"bad add string: {e}", errno=errno.EINVAL) from None
    if getattr(args, "image_spec", None) or getattr(args, "image", None):
        raise CliError("an add string names the image: give no image spec with it", errno=errno.EINVAL)
    items = [kv for kv in add["options"].split(",") if kv and not kv.startswith("_pool_ns=")]
    ms_mode = None
    for kv in items:
        k, _, v = kv.partition("=")
        if k == "name" and v and not (args.name or args.client_id):
            args.client_id = v
        elif k == "ms_mode":
            ms_mode = v
    args.options = ([",".join(items)] if items else []) + list(args.options or [])
    args.mon_host = devattrs.mon_host_of(add["mon_addrs"], msgr2=ms_mode not in (None, "legacy"))
    spec = f"{add['pool']}/"
    if add["namespace"]:
        spec += f"{add['namespace']}/"
    spec += add["image"]
    if add["snap"] != devattrs.SNAP_HEAD_NAME:
        spec += f"@{add['snap']}"
    args.image_spec = spec
    # the positional/option spellings are gone: the add string said it all
    args.pool = args.namespace = args.snap = None


def cmd_device_map(args) -> int:
    _check_type(args)
    if getattr(args, "quiesce", False):
        print("prbd: warning: quiesce is not supported", file=sys.stderr)
    if getattr(args, "quiesce_hook", None):
        print("prbd: warning: quiesce-hook is not supported", file=sys.stderr)
    text = read_add_string(args)
    if text is not None:
        apply_add_string(args, text)
    elif not (getattr(args, "image_spec", None) or getattr(args, "image", None)):
        raise CliError("image name was not specified", errno=errno.EINVAL)
    return args.map_cmd(args)


def cmd_device_unmap(args) -> int:
    _check_type(args)
    if not args.target:
        if not getattr(args, "image", None):
            raise CliError("unmap requires either image name or device path", errno=errno.EINVAL)
        t = f"{args.pool or 'rbd'}/"
        if getattr(args, "namespace", None):
            t += f"{args.namespace}/"
        t += args.image
        if getattr(args, "snap", None):
            t += f"@{args.snap}"
        args.target = t
    return args.unmap_cmd(args)


def list_rows() -> list[dict[str, str]]:
    """``rbd device list --format json`` rows: dicts of exactly LIST_FIELDS, strings."""
    from ..block import showmapped

    return [{k: str(r.get(k, "")) for k in LIST_FIELDS} for r in showmapped()]


def cmd_device_list(args) -> int:
    _check_type(args)
    rows = list_rows()
    if args.format == "json":
        if args.pretty_format:
            print(json.dumps(rows, indent=4))
        else:
            print(json.dumps(rows, separators=(",", ":")))
        return 0
    if args.format == "xml":
        raise CliError("xml format is not supported", errno=errno.EOPNOTSUPP)
    if not rows:
        return 0
    # rbd's table: "image" where the JSON says "name"
    cols = [("id", "id"), ("pool", "pool"), ("namespace", "namespace"), ("name", "image"),
            ("snap", "snap"), ("device", "device")]
    widths = {c: max(len(t), *(len(r[c]) for r in rows)) for c, t in cols}
    print("  ".join(f"{t:<{widths[c]}}" for c, t in cols).rstrip())
    for r in rows:
        print("  ".join(f"{r[c]:<{widths[c]}}" for c, _ in cols).rstrip())
    return 0


def add_device_parsers(subparsers, *, map_cmd: Callable[[Any], int], unmap_cmd: Callable[[Any], int],
                       parents: list[argparse.ArgumentParser] | None = None) -> Any:
    """Add ``device`` with ``map``, ``unmap``, ``list`` (alias ``ls``) to ``subparsers``;
    returns the ``device`` group's subparsers, to which more commands (``config``)
    are added with one ``add_parser`` call each (they get ``parents`` too: prbd's
    connection options).  ``map_cmd``/``unmap_cmd`` are prbd's ``cmd_map``/``cmd_unmap``
    (run after the device checks)."""
    sp = subparsers.add_parser("device", help="block devices: map|unmap|list (rbd device)")
    dsub = sp.add_subparsers(dest="device_command", metavar="DEVICE_COMMAND", required=True)
    if parents:
        plain_add = dsub.add_parser

        def add_parser(name, **kw):
            kw.setdefault("parents", parents)
            return plain_add(name, **kw)

        dsub.add_parser = add_parser

    def dtype(s):
        s.add_argument("-t", "--device-type", default="krbd", metavar="TYPE",
                       help="device type: krbd (default; nbd, ggate, ubbd are refused)")

    s = dsub.add_parser("map", help="map an image to a block device (or from a /sys/bus/rbd/add string)")
    dtype(s)
    s.add_argument("image_spec", nargs="?", help="[pool/[namespace/]]image[@snap]")
    s.add_argument("--image", help="image name")
    s.add_argument("--snap", help="snapshot name")
    s.add_argument("-o", "--options", action="append", help="krbd map options (comma list)")
    s.add_argument("--read-only", action="store_true", help="map read-only")
    s.add_argument("--exclusive", action="store_true", help="disable automatic exclusive lock transitions")
    s.add_argument("--quiesce", action="store_true", help="accepted; not supported (as krbd)")
    s.add_argument("--quiesce-hook", help="accepted; not supported (as krbd)")
    s.add_argument("--add", metavar="-", help="read a /sys/bus/rbd/add string from stdin: "
                   "'mon_addrs options pool image [snap]'")
    s.add_argument("--add-string", metavar="STRING", help="the add string in argv (no secret= allowed)")
    s.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the mapping")
    s.set_defaults(func=cmd_device_map, map_cmd=map_cmd)

    s = dsub.add_parser("unmap", help="unmap a mapped device")
    dtype(s)
    s.add_argument("target", nargs="?", help="device path or [pool/[namespace/]]image[@snap]")
    s.add_argument("--image", help="image name")
    s.add_argument("--snap", help="snapshot name")
    s.add_argument("-o", "--options", action="append", help="unmap options: force")
    s.add_argument("--timeout", type=float, default=60.0)
    s.set_defaults(func=cmd_device_unmap, unmap_cmd=unmap_cmd)

    s = dsub.add_parser("list", aliases=["ls"], help="list mapped images")
    dtype(s)
    s.add_argument("--format", choices=("plain", "json", "xml"), default="plain")
    s.add_argument("--pretty-format", action="store_true")
    s.set_defaults(func=cmd_device_list)
    return dsub


# -- rbdmap -----------------------------------------------------------------------------------

def _log(msg: str) -> None:
    print(f"prbd rbdmap: {msg}", file=sys.stderr, flush=True)


def _global_argv(args) -> list[str]:
    """The connection options to hand on to each ``prbd device map`` (no secrets:
    those come from keyrings named here or in the rbdmap file)."""
    out = []
    for opt, attr in (("--conf", "conf"), ("--mon-host", "mon_host"), ("--cluster", "cluster")):
        v = getattr(args, attr, None)
        if v and not (attr == "cluster" and v == "ceph"):
            out += [opt, v]
    return out


def cmd_rbdmap(args) -> int:
    path = rbdmap_mod.rbdmap_file(args.file)
    action = args.rbdmap_action
    if action == "install-unit":
        return install_unit(args.unit_dir)
    if action in ("map", "unmap") and not os.path.isfile(path):
        _log(f"no {path} found")  # rbdmap: a warning, exit 0
        return 0
    base = [sys.executable, "-m", "pyceph.cli.prbd", *_global_argv(args)]

    def map_argv(e: rbdmap_mod.Entry) -> list[str]:
        return [*base, "device", "map", e.dev, *e.args]

    opts = rbdmap_mod.Options(map_argv=map_argv, hooks_dir=args.hooks_dir, fstab=args.fstab,
                              timeout=args.timeout)
    if action == "unmap-all":
        failed = rbdmap_mod.do_unmap_all(opts, _log)
    else:
        entries = rbdmap_mod.read_rbdmap(path)
        fn = rbdmap_mod.do_map if action == "map" else rbdmap_mod.do_unmap
        failed = fn(entries, opts, _log)
    return min(failed, 255)


def unit_text() -> str:
    """The shipped ``pyceph-rbdmap.service`` (pyceph/block/data)."""
    return resources.files("pyceph.block").joinpath("data", UNIT_NAME).read_text()


def install_unit(unit_dir: str) -> int:
    """Write the unit into ``unit_dir`` with ExecStart/ExecStop pointing at this
    prbd (``shutil.which('prbd')``, else ``python -m pyceph.cli.prbd``)."""
    exe = shutil.which("prbd")
    cmd = exe if exe else f"{sys.executable} -m pyceph.cli.prbd"
    text = unit_text().replace("/usr/local/bin/prbd", cmd)
    os.makedirs(unit_dir, exist_ok=True)
    dest = os.path.join(unit_dir, UNIT_NAME)
    with open(dest, "w") as f:
        f.write(text)
    print(dest)
    return 0


def add_rbdmap_parser(subparsers) -> None:
    """``prbd rbdmap map|unmap|unmap-all|install-unit``."""
    sp = subparsers.add_parser("rbdmap", help="map/unmap the images /etc/ceph/rbdmap lists (Ceph's rbdmap)")
    sp.add_argument("rbdmap_action", choices=("map", "unmap", "unmap-all", "install-unit"))
    sp.add_argument("--file", help=f"rbdmap file (default ${rbdmap_mod.RBDMAPFILE_ENV} or "
                    f"{rbdmap_mod.DEFAULT_RBDMAP_FILE})")
    sp.add_argument("--hooks-dir", default=rbdmap_mod.DEFAULT_HOOKS_DIR,
                    help="post-map/pre-unmap hooks, one executable per pool/image")
    sp.add_argument("--fstab", default=rbdmap_mod.DEFAULT_FSTAB, help="fstab to find mounts of new mappings in")
    sp.add_argument("--unit-dir", default="/etc/systemd/system", help="where install-unit writes the unit")
    sp.add_argument("--timeout", type=float, default=60.0, help="seconds per map/unmap")
    sp.set_defaults(func=cmd_rbdmap)
