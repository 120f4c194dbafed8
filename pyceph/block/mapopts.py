"""krbd's map options (``rbd map -o ...``, the options field of /sys/bus/rbd/add), parsed and typed.

One declarative table, :data:`OPTIONS`: every option Linux 6.x krbd accepts
(``drivers/block/rbd.c`` ``rbd_parameters``/``rbd_parse_param``, and libceph's
``net/ceph/ceph_common.c`` ``ceph_parameters``/``ceph_parse_param``), the rbd CLI's own
``udev``/``noudev`` (``src/tools/rbd/action/Kernel.cc``), CephFS's ``mon_addr``
(``fs/ceph/super.c``), and pyceph's own mapping-daemon options.  Each entry says what
krbd does with the option and what pyceph does with it: where it is applied, or why it
has no effect in user space.  docs/MAP-OPTIONS.md is generated from the table
(:func:`markdown_table`).

Parsing follows krbd's rules: options are a comma list of ``key`` or ``key=value``; a
flag takes no value (``fs_param_is_flag``), ``fsparam_flag_no`` flags also take a
``no`` prefix (``nocrc``); numbers are unsigned ``u32`` read as kstrtouint(s, 0) reads them (decimal, ``0x`` hex, ``0`` octal) with krbd's ranges; the
last occurrence of an option wins.  An unknown option or a bad value raises
:class:`MapOptionError` (EINVAL) naming the option; the value of ``secret`` and ``key``
is never repeated.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from .. import errors
from ..auth.crypto import looks_like_secret

#: INT_MAX / 1000: krbd's upper bound of option values in seconds (``msecs_to_jiffies(v * 1000)``)
SECONDS_MAX = 0x7FFFFFFF // 1000
U32_MAX = 0xFFFFFFFF
SECTOR_SIZE = 512

#: include/linux/ceph/rados.h: CEPH_OSD_ALLOC_HINT_FLAG_*
CEPH_OSD_ALLOC_HINT_FLAG_COMPRESSIBLE = 256
CEPH_OSD_ALLOC_HINT_FLAG_INCOMPRESSIBLE = 512
COMPRESSION_HINT_FLAGS = {
    "none": 0,
    "compressible": CEPH_OSD_ALLOC_HINT_FLAG_COMPRESSIBLE,
    "incompressible": CEPH_OSD_ALLOC_HINT_FLAG_INCOMPRESSIBLE,
}

#: options whose value is a secret: never echoed, never stored in a mapping's options
SECRET_OPTIONS = frozenset({"secret"})
#: options whose value names a secret: never echoed either (it may be a mistyped secret)
QUIET_OPTIONS = frozenset({"secret", "key"})


class MapOptionError(errors.InvalidArgumentError):
    """A map option krbd does not know, or a bad value (errno EINVAL)."""


def _bad(name: str, why: str) -> MapOptionError:
    return MapOptionError(f"invalid value for map option '{name}': {why}")


# -- value parsers: (option name, text) -> typed value --------------------------------

def _u32(lo: int = 0, hi: int = U32_MAX) -> Callable[[str, str], int]:
    def parse(name: str, v: str) -> int:
        # kstrtouint(s, 0), as fs_parser's fsparam_u32: decimal, 0x hex or 0 octal
        m = re.fullmatch(r"\+?(?:(0[xX][0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*))\n?", v)
        if not m:
            raise _bad(name, "not an unsigned number")
        n = int(m.group(1), 16) if m.group(1) else int(m.group(2), 8) if m.group(2) else int(m.group(3))
        if n > U32_MAX or n < lo or n > hi:
            raise _bad(name, f"out of range ({lo}..{hi})")
        return n
    return parse


def _alloc_size(name: str, v: str) -> int:
    n = _u32(SECTOR_SIZE)(name, v)
    if n & (n - 1):
        raise _bad(name, "must be a power of 2")
    return n


def _enum(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, v: str) -> str:
        if v not in choices:
            raise _bad(name, f"must be one of {'|'.join(choices)}")
        return v
    return parse


def _string(name: str, v: str) -> str:
    if not v:
        raise _bad(name, "empty")
    return v


def _fsid(name: str, v: str) -> str:
    try:
        return str(uuid.UUID(v))
    except ValueError:
        raise _bad(name, "not a UUID") from None


def _entity_name(name: str, v: str) -> str:
    """krbd's ``name`` is the id of a client entity (``admin``); ``client.admin`` is taken too."""
    ident = v[len("client."):] if v.startswith("client.") else v
    if not ident or any(c in ident for c in " \t\n,="):
        raise _bad(name, "not a client entity name (client.ID or ID)")
    return "client." + ident


def _secret(name: str, v: str) -> str:
    # Only the key's shape is checked here; cephx checks its type and length at use
    # (pyceph.auth.crypto.CryptoKey.from_base64).  Never echo it.
    try:
        raw = base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(name, "not base64 (the value is not shown)") from None
    if len(raw) < 16:
        raise _bad(name, "too short for a cephx key (the value is not shown)")
    return v


def _key_desc(name: str, v: str) -> str:
    if not v:
        raise _bad(name, "empty key description")
    return v


def _ip(name: str, v: str) -> str:
    from ..config import parse_mon_host
    try:
        parse_mon_host(v)
    except errors.InvalidArgumentError:
        raise _bad(name, "not an IP address[:port]") from None
    return v


def _mon_addr(name: str, v: str) -> tuple[str, ...]:
    """CephFS's ``mon_addr=ip1[:port1][/ip2[:port2]...]`` (a '/' list: ',' separates options)."""
    from ..config import parse_mon_host
    parts = tuple(p for p in v.split("/") if p)
    if not parts:
        raise _bad(name, "empty")
    for p in parts:
        try:
            parse_mon_host(p)
        except errors.InvalidArgumentError:
            raise _bad(name, f"bad monitor address {p!r}") from None
    return parts


def _crush_location(name: str, v: str) -> tuple[tuple[str, str], ...]:
    """``type1:name1|type2:name2`` (libceph ``ceph_parse_crush_location``)."""
    out = []
    for item in v.split("|"):
        t, sep, n = item.partition(":")
        if not sep or not t or not n or ":" in n:
            raise _bad(name, "expected type:name[|type:name...]")
        out.append((t, n))
    return tuple(out)


def _bool_value(name: str, v: str) -> bool:
    low = v.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise _bad(name, "expected 0|1|true|false|yes|no|on|off")


def _positive_float(name: str, v: str) -> float:
    try:
        x = float(v)
    except ValueError:
        raise _bad(name, "not a number") from None
    if not x >= 0 or x == float("inf"):
        raise _bad(name, "must be >= 0")
    return x


@dataclass(frozen=True)
class MapOption:
    """One map option.

    - ``name``: the canonical key in :func:`parse_map_options`' result;
    - ``kind``: ``flag`` (no value), ``negflag`` (no value, also ``no<name>``),
      ``value`` (``name=value`` through ``parse``), ``bool`` (pyceph's: bare or ``=0|1``);
    - ``aliases``: other spellings and the value they stand for (``ro`` -> read_only=True);
    - ``source``: where krbd defines it (``libceph``, ``rbd``, ``rbd CLI``, ``ceph fs``) or ``pyceph``;
    - ``krbd``/``pyceph``: what it does there and here; ``applied``: False when it is
      accepted for compatibility and has no effect in user space (``pyceph`` says why);
    - ``runtime``: a live mapping can change it (``prbd device config --set``).
    """

    name: str
    kind: str
    default: Any
    source: str
    krbd: str
    pyceph: str
    applied: bool = True
    parse: Callable[[str, str], Any] | None = None
    aliases: tuple[tuple[str, Any], ...] = ()
    runtime: bool = False
    value_doc: str = ""


def _o(name, kind, default, source, krbd, pyceph, applied=True, parse=None, aliases=(), runtime=False,
       value_doc=""):
    return MapOption(name, kind, default, source, krbd, pyceph, applied, parse, tuple(aliases), runtime, value_doc)


OPTIONS: tuple[MapOption, ...] = (
    # -- libceph (net/ceph/ceph_common.c ceph_parameters) ---------------------------------
    _o("abort_on_full", "flag", False, "libceph",
       "fail writes with ENOSPC while the pool or cluster is full instead of blocking them",
       "applied: the OSD client fails paused writes to a full pool/cluster with ENOSPC "
       "(NoSpace) when a full map arrives and at submission"),
    _o("cephx_require_signatures", "negflag", True, "libceph",
       "deprecated: ignored with a warning (use nocephx_sign_messages)",
       "as in krbd 6.x: parsed and ignored", applied=False),
    _o("cephx_sign_messages", "negflag", True, "libceph",
       "sign msgr1 messages with the session key (nocephx_sign_messages: do not)",
       "pyceph's msgr1 signs every message of an authorized session and checks the "
       "peer's; msgr2 has its own integrity (crc/secure modes); signing is kept",
       applied=False),
    _o("crc", "negflag", True, "libceph",
       "msgr1 data CRCs (nocrc: do not compute/check data CRCs)",
       "pyceph always computes and checks msgr1 data CRCs (the safe direction); "
       "nocrc is a kernel CPU saving", applied=False),
    _o("crush_location", "value", None, "libceph",
       "this client's CRUSH location for read_from_replica=localize",
       "applied with read_from_replica=localize: reads go to the acting OSD sharing the "
       "closest listed CRUSH bucket",
       parse=_crush_location, value_doc="type:name[|type:name...]"),
    _o("fsid", "value", None, "libceph",
       "the cluster fsid to expect; a monitor of another cluster is refused",
       "applied: the map daemon refuses (EINVAL) a cluster whose MonMap has another fsid",
       parse=_fsid, value_doc="UUID"),
    _o("ip", "value", None, "libceph",
       "this client's own address (bind address)",
       "pyceph lets the kernel choose the source address of its TCP connections",
       applied=False, parse=_ip, value_doc="ip[:port]"),
    _o("key", "value", None, "libceph",
       "take the secret from the kernel keyring (request_key, a 'ceph' key of this description)",
       "applied: the CLI resolves it in the foreground (pyceph.auth.keyring.keyctl_lookup) and "
       "hands the secret to the map daemon on its private channel",
       parse=_key_desc, value_doc="key description"),
    _o("mount_timeout", "value", 30, "libceph",
       "seconds to wait for the monitor and OSD maps at map time (0: forever; krbd's default 60)",
       "applied: the map daemon's connect timeout and client_mount_timeout (0: no timeout)",
       parse=_u32(0, SECONDS_MAX), value_doc="seconds"),
    _o("ms_mode", "value", "legacy", "libceph",
       "messenger: legacy (msgr1), crc, secure, prefer-crc, prefer-secure (msgr2)",
       "applied: the connection modes offered to monitors and OSDs (ClientConfig.msgr_modes); "
       "without it, ceph.conf's ms_client_mode (default crc)",
       parse=_enum("legacy", "crc", "secure", "prefer-crc", "prefer-secure"),
       value_doc="legacy|crc|secure|prefer-crc|prefer-secure"),
    _o("name", "value", "client.admin", "libceph",
       "the cephx entity id (name=admin is client.admin; krbd's default is 'guest')",
       "applied: the entity the map daemon authenticates as (client.ID; ID or client.ID accepted); "
       "default the CLI's --id/--name",
       parse=_entity_name, value_doc="ID or client.ID"),
    _o("osd_idle_ttl", "value", 60, "libceph",
       "seconds before an idle OSD session is closed",
       "applied: OSD client osd_idle_ttl", parse=_u32(1, SECONDS_MAX), value_doc="seconds (>= 1)"),
    _o("osd_request_timeout", "value", 0, "libceph",
       "seconds after which an OSD request fails with ETIMEDOUT (0: never)",
       "applied: OSD client request timeout (TimedOut, ETIMEDOUT on the device)",
       parse=_u32(0, SECONDS_MAX), runtime=True, value_doc="seconds"),
    _o("osdkeepalive", "value", 5, "libceph",
       "seconds between keepalives to OSDs (the osd tick)",
       "applied: OSD client osd_keepalive_interval", parse=_u32(1, SECONDS_MAX), runtime=True,
       value_doc="seconds (>= 1)"),
    _o("read_from_replica", "value", "no", "libceph",
       "no: read from the primary; balance: a random OSD of the acting set; localize: the "
       "closest one by crush_location (BALANCE_READS/LOCALIZE_READS op flags)",
       "applied: read targets and op flags as the kernel's osd_client chooses them; an OSD "
       "bouncing a replica read (EAGAIN) is answered by a resend to the primary",
       parse=_enum("no", "balance", "localize"), value_doc="no|balance|localize"),
    _o("rxbounce", "flag", False, "libceph",
       "receive data into a bounce buffer (guards CRCs against pages changing under DMA)",
       "pyceph receives into its own buffers already", applied=False),
    _o("secret", "value", None, "libceph",
       "the base64 cephx secret",
       "applied: the key the map daemon authenticates with; it reaches the daemon only on "
       "its private spec channel and never appears in options, records or messages",
       parse=_secret, value_doc="base64 key"),
    _o("share", "negflag", True, "libceph",
       "share one libceph client between mappings of the same cluster (noshare: do not)",
       "every pyceph mapping is its own daemon with its own client (always noshare)",
       applied=False),
    _o("tcp_nodelay", "negflag", True, "libceph",
       "TCP_NODELAY on the messenger's sockets (notcp_nodelay: Nagle on)",
       "pyceph's connections always set TCP_NODELAY (latency first)", applied=False),
    # -- rbd (drivers/block/rbd.c rbd_parameters) ------------------------------------------
    _o("_pool_ns", "value", None, "rbd",
       "the image's RADOS namespace (the rbd CLI sets it from pool/ns/image)",
       "applied: the namespace of the image, as pool/ns/image gives it",
       parse=_string, value_doc="namespace"),
    _o("alloc_size", "value", 65536, "rbd",
       "discard granularity: discards are aligned to it, smaller ones are dropped",
       "applied when given: each object extent of a discard is aligned inward to alloc_size "
       "(capped at the object size) and those left empty are dropped, as krbd does; not given, "
       "discards reach the image exactly as librbd's do",
       parse=_alloc_size, value_doc="bytes, power of 2, >= 512"),
    _o("compression_hint", "value", "none", "rbd",
       "CEPH_OSD_ALLOC_HINT_FLAG_(IN)COMPRESSIBLE on every data write (SETALLOCHINT)",
       "not applied yet: pyceph's image writes send no SETALLOCHINT op",
       applied=False, parse=_enum("none", "compressible", "incompressible"),
       value_doc="none|compressible|incompressible"),
    _o("exclusive", "flag", False, "rbd",
       "take the exclusive lock at map time and refuse to release it on request",
       "applied: the image is opened exclusive (lock taken at map, requests refused)"),
    _o("lock_on_read", "flag", False, "rbd",
       "take the exclusive lock for reads too, not only writes",
       "applied: the map daemon acquires the exclusive lock before reads as well",
       runtime=True),
    _o("lock_timeout", "value", 0, "rbd",
       "seconds to wait for the exclusive lock before failing I/O with ETIMEDOUT (0: forever)",
       "applied: the map daemon's lock acquisition before I/O gives up after it (ETIMEDOUT)",
       parse=_u32(0, SECONDS_MAX), runtime=True, value_doc="seconds"),
    _o("notrim", "flag", False, "rbd",
       "no discard/write-zeroes support on the device",
       "applied: the loop device advertises no discard; FALLOCATE gets EOPNOTSUPP"),
    _o("queue_depth", "value", 64, "rbd",
       "blk-mq queue depth (requests in flight; krbd's default 128)",
       "applied: FUSE max_background (the kernel's cap on requests in flight) and the daemon's "
       "concurrent FUSE tasks", parse=_u32(1), runtime=True, value_doc="requests (>= 1)"),
    _o("read_only", "flag", False, "rbd",
       "map read-only (ro and read_only; rw and read_write undo it)",
       "applied: the image is opened read-only and the loop device is read-only",
       aliases=(("ro", True), ("rw", False), ("read_write", False))),
    # -- the rbd CLI (src/tools/rbd/action/Kernel.cc) and CephFS ----------------------------
    _o("udev", "negflag", True, "rbd CLI",
       "wait for udev to create /dev/rbdN before returning (noudev: do not)",
       "pyceph's map returns once the loop device is attached; no udev event is awaited",
       applied=False),
    _o("mon_addr", "value", None, "ceph fs",
       "monitor addresses, '/'-separated (ip1[:port1][/ip2[:port2]...])",
       "applied: the monitors to contact, instead of ceph.conf's mon host",
       parse=_mon_addr, value_doc="ip[:port][/ip[:port]...]"),
    # -- pyceph's mapping daemon (pyceph/block/daemon.py) -----------------------------------
    _o("direct_io", "bool", True, "pyceph", "-",
       "loop device direct I/O (keeps many requests in flight)", parse=_bool_value),
    _o("fuse_direct_io", "bool", True, "pyceph", "-",
       "FOPEN_DIRECT_IO on the FUSE file (no page cache besides the loop device's)", parse=_bool_value),
    _o("partscan", "bool", False, "pyceph", "-", "scan partitions on the device", parse=_bool_value),
    _o("max_tasks", "value", 64, "pyceph", "-",
       "FUSE requests served concurrently (queue_depth sets it too)", parse=_u32(1)),
    _o("max_background", "value", 64, "pyceph", "-",
       "the kernel's cap on async FUSE requests (queue_depth sets it too)", parse=_u32(1, 0xFFFF)),
    _o("max_write", "value", 1 << 20, "pyceph", "-",
       "largest FUSE read/write request in bytes", parse=_u32(4096)),
    _o("detach_timeout", "value", 30.0, "pyceph", "-",
       "seconds to wait for other openers at unmap", parse=_positive_float),
    _o("keep_log", "bool", False, "pyceph", "-", "keep the daemon's log after a clean exit",
       parse=_bool_value),
    _o("size_poll", "value", 0.5, "pyceph", "-",
       "seconds between image size checks; a change resizes the device (0: never)",
       parse=_positive_float),
    _o("log_level", "value", "info", "pyceph", "-", "the daemon's log level",
       parse=_enum("debug", "info", "warning", "error")),
)

BY_NAME: dict[str, MapOption] = {o.name: o for o in OPTIONS}

#: every spelling -> (option, the value a bare flag spelling stands for or None)
_SPELLINGS: dict[str, tuple[MapOption, Any]] = {}
for _opt in OPTIONS:
    _SPELLINGS[_opt.name] = (_opt, None)
    if _opt.kind == "negflag":
        _SPELLINGS["no" + _opt.name] = (_opt, False)
    for _alias, _val in _opt.aliases:
        _SPELLINGS[_alias] = (_opt, _val)
del _opt

#: options that a live mapping can change (``prbd device config DEV --set k=v``)
RUNTIME_OPTIONS: frozenset[str] = frozenset(o.name for o in OPTIONS if o.runtime)

def defaults() -> dict[str, Any]:
    """{canonical name: default} of every option (krbd's defaults; pyceph's for its own)."""
    return {o.name: o.default for o in OPTIONS}


def _unknown(name: str) -> MapOptionError:
    # "AQ...==" splits at its padding into the name "AQ..." and a value
    if looks_like_secret(name):  # a secret pasted without "secret=": do not repeat it
        return MapOptionError("unknown map option (it looks like a key: not shown)")
    return MapOptionError(f"unknown map option '{name}'")


def parse_option(name: str, value: str | None) -> Any:
    """The typed value of one option as written (``value`` None for a bare ``notrim``).

    Returns the value under the option's canonical name (:func:`canonical_name`):
    ``ro`` -> True (``read_only``), ``nocrc`` -> False (``crc``), ``queue_depth=64`` -> 64.
    Raises :class:`MapOptionError` naming the option: unknown, a flag given a value, a
    value missing, or a bad value (never repeating a ``secret``/``key`` value)."""
    spelled = _SPELLINGS.get(name)
    if spelled is None:
        raise _unknown(name)
    opt, flag_value = spelled
    if opt.kind in ("flag", "negflag") or flag_value is not None:
        if value is not None:
            raise MapOptionError(f"map option '{name}' takes no value")
        return True if flag_value is None else flag_value
    if opt.kind == "bool" and value is None:
        return True
    if value is None or (value == "" and opt.kind != "bool"):
        raise MapOptionError(f"map option '{name}' requires a value")
    assert opt.parse is not None
    try:
        return opt.parse(opt.name, value)
    except MapOptionError as e:
        if opt.name in QUIET_OPTIONS:
            raise
        shown = value if len(value) <= 64 else value[:61] + "..."
        raise MapOptionError(f"{e.message} (got {shown!r})") from None


def canonical_name(name: str) -> str:
    """The canonical key of a spelling (``ro`` -> ``read_only``, ``nocrc`` -> ``crc``).
    Raises :class:`MapOptionError` for an unknown one."""
    spelled = _SPELLINGS.get(name)
    if spelled is None:
        raise _unknown(name)
    return spelled[0].name


def split_options(text: str) -> list[tuple[str, str | None]]:
    """``"a=1,b"`` -> ``[("a", "1"), ("b", None)]`` (krbd: ``strsep(",")``, empty items skipped)."""
    out: list[tuple[str, str | None]] = []
    for kv in text.split(","):
        kv = kv.strip()
        if not kv:
            continue
        k, sep, v = kv.partition("=")
        if not k:
            raise MapOptionError("map option with an empty name")
        out.append((k.strip(), v.strip() if sep else None))
    return out


def parse_map_options(items: list[str]) -> dict[str, Any]:
    """``["a=1,b", "c"]`` (each ``-o`` argument a comma list) -> {canonical name: typed value}.

    Only options given appear (see :func:`defaults`); the last occurrence wins, as in
    krbd.  Raises :class:`MapOptionError` at the first unknown option or bad value."""
    out: dict[str, Any] = {}
    for item in items:
        for k, v in split_options(item):
            out[canonical_name(k)] = parse_option(k, v)
    return out


def parse_unmap_options(items: list[str]) -> dict[str, Any]:
    """``rbd unmap -o`` options: krbd's remove takes only ``force`` (drivers/block/rbd.c
    ``do_rbd_remove``: "force" or nothing).  Raises :class:`MapOptionError` naming another."""
    out: dict[str, Any] = {}
    for item in items:
        for k, v in split_options(item):
            if k != "force":
                raise MapOptionError(f"unknown unmap option '{k}'")
            if v is not None:
                raise MapOptionError("unmap option 'force' takes no value")
            out["force"] = True
    return out


def public_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` without the secret: what may be stored in a mapping's spec, records and
    ``config_info`` (krbd prints ``secret=<hidden>``)."""
    return {k: v for k, v in options.items() if k not in SECRET_OPTIONS}


def validate_settings(settings: dict[str, str]) -> dict[str, Any]:
    """Validate the settings of one live-mapping transaction, all or nothing.

    ``settings`` maps option spellings to their text (``{"queue_depth": "64"}``, ``""``
    or None for a flag).  Returns {canonical name: typed value}.  Raises
    :class:`MapOptionError` naming the first unknown option, bad value, or option that
    a live mapping cannot change (only :data:`RUNTIME_OPTIONS` can)."""
    out: dict[str, Any] = {}
    for k, v in settings.items():
        name = canonical_name(k)
        if name not in RUNTIME_OPTIONS:
            raise MapOptionError(f"map option '{name}' cannot be changed on a mapped device "
                                 f"(runtime options: {', '.join(sorted(RUNTIME_OPTIONS))})")
        opt = BY_NAME[name]
        if opt.kind in ("flag", "negflag") and v in ("", None):
            out[name] = parse_option(k, None)
        elif opt.kind in ("flag", "negflag"):
            out[name] = _bool_value(name, str(v))
        else:
            out[name] = parse_option(k, None if v is None else str(v))
    return out


# -- documentation ------------------------------------------------------------------------

def _spellings_doc(o: MapOption) -> str:
    if o.kind == "negflag":
        s = f"`{o.name}`, `no{o.name}`"
    elif o.kind == "flag":
        s = f"`{o.name}`"
    elif o.kind == "bool":
        s = f"`{o.name}[=0|1]`"
    else:
        s = f"`{o.name}={o.value_doc or 'value'}`"
    for a, _v in o.aliases:
        s += f", `{a}`"
    return s


def _default_doc(o: MapOption) -> str:
    d = o.default
    if d is None:
        return "-"
    if isinstance(d, bool):
        return "on" if d else "off"
    return str(d)


def markdown_table() -> str:
    """The options table of docs/MAP-OPTIONS.md, generated from :data:`OPTIONS`."""
    rows = ["| option | from | default | krbd | pyceph | runtime |",
            "|---|---|---|---|---|---|"]
    for o in OPTIONS:
        effect = o.pyceph if o.applied else f"**no effect**: {o.pyceph}"
        cells = [_spellings_doc(o), o.source, _default_doc(o), o.krbd, effect, "yes" if o.runtime else ""]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


DOC_BEGIN = "<!-- BEGIN generated by pyceph.block.mapopts.markdown_table -->"
DOC_END = "<!-- END generated -->"


def render_doc(text: str) -> str:
    """``text`` (docs/MAP-OPTIONS.md) with the part between :data:`DOC_BEGIN` and
    :data:`DOC_END` replaced by :func:`markdown_table`.  ``python -m
    pyceph.block.mapopts docs/MAP-OPTIONS.md`` rewrites the file."""
    head, sep, rest = text.partition(DOC_BEGIN)
    _, sep2, tail = rest.partition(DOC_END)
    if not sep or not sep2:
        raise ValueError("the document has no generated-table markers")
    return f"{head}{DOC_BEGIN}\n{markdown_table()}{DOC_END}{tail}"


if __name__ == "__main__":  # pragma: no cover - documentation maintenance
    import sys

    path = sys.argv[1]
    with open(path) as f:
        doc = f.read()
    with open(path, "w") as f:
        f.write(render_doc(doc))
