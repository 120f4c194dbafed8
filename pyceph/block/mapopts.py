"""krbd's map options (``rbd map -o ...``), parsed and typed.

STUB (issue 9 in progress): the table of every option krbd accepts
(drivers/block/rbd.c ``rbd_parse_param``, net/ceph/ceph_common.c
``ceph_parse_param``) is being filled in.  The interface below is stable.
"""

from __future__ import annotations

from typing import Any

from .. import errors


class MapOptionError(errors.InvalidArgumentError):
    """A map option krbd does not know, or a bad value (errno EINVAL)."""


#: options that a live mapping can change (``prbd device config DEV --set k=v``)
RUNTIME_OPTIONS: frozenset[str] = frozenset({"queue_depth", "osd_request_timeout"})


def parse_option(name: str, value: str | None) -> Any:
    """The typed value of one option (``value`` None for a flag such as ``notrim``).
    Raises :class:`MapOptionError` naming the option."""
    if name in ("queue_depth", "osd_request_timeout"):
        try:
            return int(value or "")
        except ValueError:
            raise MapOptionError(f"bad value for map option '{name}'") from None
    return True if value is None else value


def parse_map_options(items: list[str]) -> dict[str, Any]:
    """``["a=1,b", "c"]`` (each ``-o`` argument a comma list) -> {canonical name: typed value}."""
    out: dict[str, Any] = {}
    for item in items:
        for kv in item.split(","):
            if not kv:
                continue
            k, sep, v = kv.partition("=")
            out[k.strip()] = parse_option(k.strip(), v.strip() if sep else None)
    return out


# --- ctl: live-mapping settings (issue 9 item 4; the lead reconciles with opts' table) ---


def validate_settings(settings: dict[str, str]) -> dict[str, Any]:
    """Check ALL of ``settings`` (name -> string value, as ``prbd device config
    --set`` gives them) for a live mapping and return them typed; nothing is applied.
    Raises :class:`MapOptionError` naming the first option that is not in
    :data:`RUNTIME_OPTIONS` or has a bad value (krbd's ranges: queue_depth >= 1,
    osd_request_timeout >= 0 seconds)."""
    out: dict[str, Any] = {}
    for name, value in settings.items():
        if name not in RUNTIME_OPTIONS:
            raise MapOptionError(f"map option '{name}' cannot be changed on a live mapping")
        v = parse_option(name, value)
        if name == "queue_depth" and not (isinstance(v, int) and v >= 1):
            raise MapOptionError(f"bad value for map option '{name}'")
        if name == "osd_request_timeout" and not (isinstance(v, (int, float)) and v >= 0):
            raise MapOptionError(f"bad value for map option '{name}'")
        out[name] = v
    return out
