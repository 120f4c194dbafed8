"""``prbd device config DEV --set NAME=VALUE [--set ...]``: change settings of a live
mapping in one transaction (all or none), through the map daemon's control
protocol (docs/CONTROL.md).  The ``prbd device`` parser group calls
:func:`add_device_config_parser` and dispatches to :func:`cmd_device_config`.
"""

from __future__ import annotations

import json

from .. import errors
from ..block.mapopts import RUNTIME_OPTIONS
from .common import CliError


def add_device_config_parser(subparsers):
    """Add ``config`` to a ``prbd device`` subparsers object; returns the parser."""
    sp = subparsers.add_parser(
        "config", help="change settings of a mapped device (one transaction)",
        description="Change map options of a live mapping; every --set is validated first, "
                    f"then all are applied or none (settings: {', '.join(sorted(RUNTIME_OPTIONS))}).")
    sp.add_argument("device", metavar="DEV", help="/dev/loopN or [pool/[namespace/]]image[@snap]")
    sp.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                    help="a setting to change (repeatable)")
    sp.add_argument("--dry-run", action="store_true", help="validate only, change nothing")
    sp.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the daemon (default 10)")
    sp.add_argument("--format", choices=("plain", "json"), default="plain")
    sp.set_defaults(func=cmd_device_config)
    return sp


def parse_sets(items: list[str]) -> dict[str, str]:
    """``["a=1", "b=2"]`` -> {"a": "1", "b": "2"}; raises InvalidArgumentError naming
    a malformed or repeated item."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise errors.InvalidArgumentError("--set: expected NAME=VALUE")  # the item is not echoed: it may be a key
        if name in out:
            raise errors.InvalidArgumentError(f"--set {name}: given twice")
        out[name] = value.strip()
    return out


def cmd_device_config(args) -> int:
    """Prints the settings now in force (``NAME=VALUE`` lines or JSON); a refusal is
    a :class:`CliError` (one line ``prbd: device config failed: (errno) ... [ControlError:
    E_... message]``, exit status errno)."""
    from ..block import control

    try:
        settings = parse_sets(args.settings or [])
        if not settings:
            raise errors.InvalidArgumentError("nothing to change: give --set NAME=VALUE")
        applied = control.configure(args.device, settings, timeout=args.timeout, dry_run=args.dry_run)
    except errors.Error as e:
        status = getattr(e, "status_name", None)
        raise CliError(f"device config failed{' (' + status + ')' if status else ''}", e) from e
    if getattr(args, "format", "plain") == "json":
        print(json.dumps(applied, sort_keys=True))
    else:
        for k in sorted(applied):
            print(f"{k}={applied[k]}")
    return 0
