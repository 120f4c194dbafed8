"""Client configuration: ceph.conf, keyrings, entity name, monitor addresses.

Follows Ceph's lookup rules (``src/common/config.cc``, ``src/common/ConfUtils.cc``,
``src/mon/MonMap.cc: build_initial``) and the kernel's single option string idea
(``net/ceph/ceph_common.c``): everything the client needs ends up in one
:class:`ClientConfig`.

Lookup order for the conf file: explicit path (``-c``), ``$CEPH_CONF``,
``/etc/ceph/$cluster.conf``, ``~/.ceph/$cluster.conf``, ``./$cluster.conf``; if none
exists, the pyceph dev cluster's ``ceph.conf`` (so the demo needs no configuration).
The secret, first found wins (krbd/rbd's sources, the command line before ceph.conf):
an explicit secret (``key=``: krbd's ``secret=`` map option or a ``key=NAME`` kernel
keyring lookup, resolved by the caller in :mod:`pyceph.auth.keyring`), ``--keyfile``
(a file holding the base64 key), ``--keyring``/``-k``, then ceph.conf's ``key``,
``keyfile`` and ``keyring`` options (Ceph's ``KeyRing::from_ceph_context`` order), then
``/etc/ceph/$cluster.$name.keyring``, ``/etc/ceph/$cluster.keyring``, ``/etc/ceph/keyring``.

The secret never shows in a ``repr()``, an error message or a log line: errors name
where a key came from (``key_source``), never the key.
"""

from __future__ import annotations

import os
import re
import socket
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import ConfigError
from .types import (
    ADDR_TYPE_LEGACY,
    ADDR_TYPE_MSGR2,
    EntityAddr,
    EntityAddrvec,
    EntityName,
)

MSGR2_PORT = 3300
LEGACY_PORT = 6789

# Defaults for the options the client reads (seconds unless named otherwise).
DEFAULTS: dict[str, str] = {
    "client_mount_timeout": "30",
    "rados_mon_op_timeout": "0",
    "rados_osd_op_timeout": "0",
    "osd_request_timeout": "0",
    "mon_client_hunt_interval": "3",
    "mon_client_ping_interval": "10",
    "mon_client_ping_timeout": "30",
    # OSD sessions (krbd: osdkeepalive=5, osd_idle_ttl=60; include/linux/ceph/libceph.h):
    # a KEEPALIVE2 goes to every OSD with a request older than the interval; a session
    # that then hears nothing from its OSD for the timeout faults and reconnects.
    "osd_keepalive_interval": "5",
    "osd_keepalive_timeout": "30",
    # Reconnect backoff after a session fault (messenger.h BASE/MAX_DELAY_INTERVAL).
    "osd_reconnect_backoff_min": "0.25",
    "osd_reconnect_backoff_max": "15",
    "ms_connection_idle_timeout": "900",
    "osd_idle_ttl": "60",
    # Ceph's defaults (src/common/options/global.yaml.in): preference order, first wins
    # when the server allows several.  krbd's single ``ms_mode`` option overrides both.
    "ms_mon_client_mode": "secure crc",
    "ms_client_mode": "crc secure",
    "rbd_default_order": "22",
    "rbd_default_features": "1",
}


def normalize_key(k: str) -> str:
    """Ceph treats ``mon host``, ``mon_host`` and ``mon-host`` as one option."""
    return re.sub(r"[\s\-]+", "_", k.strip().lower())


def parse_conf_text(text: str, origin: str = "<string>", quote: bool = True) -> dict[str, dict[str, str]]:
    """Parse ceph.conf text into ``{section: {normalized_key: value}}``.

    Handles ``;``/``#`` comments, line continuations with ``\\``, quoted values and
    ``key = value`` pairs.  Raises :class:`ConfigError` on a line it cannot read, quoting
    it only with ``quote`` (not for keyrings: a bad line may be a secret) and never a
    line that mentions a key.
    """
    sections: dict[str, dict[str, str]] = {}
    cur: dict[str, str] | None = None
    pending = ""
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = pending + raw
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        s = _strip_comment(line).strip()
        if not s:
            continue
        if s.startswith("["):
            if not s.endswith("]"):
                raise ConfigError(f"{origin}:{lineno}: bad section header{_quoted(s, quote)}")
            name = s[1:-1].strip()
            cur = sections.setdefault(name, {})
            continue
        if "=" not in s:
            raise ConfigError(f"{origin}:{lineno}: expected 'key = value'" + (
                f", got{_quoted(s, quote)}" if quote and not _secretish(s) else ""))
        k, _, v = s.partition("=")
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
            v = v[1:-1]
        if cur is None:
            cur = sections.setdefault("global", {})
        cur[normalize_key(k)] = v
    return sections


def _secretish(s: str) -> bool:
    return "key" in s.lower() or "secret" in s.lower()


def _quoted(s: str, quote: bool) -> str:
    """`` 'line'`` (at most 60 characters) for an error message, or "" when the line
    may hold a secret."""
    if not quote or _secretish(s):
        return ""
    return " " + repr(s if len(s) <= 60 else s[:57] + "...")


def read_text_file(path: str | os.PathLike[str], what: str) -> str:
    """The text of a ceph.conf, keyring or keyfile; :class:`ConfigError` in one line
    (naming ``what`` and the path, never the contents) for a directory, an unreadable
    file, binary data (a NUL byte or bytes that are not UTF-8) or one over 4 MiB."""
    p = Path(path)
    try:
        # O_NONBLOCK: a FIFO must not hang us before the regular-file check.
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfigError(f"cannot read {what} {p}: not a regular file")
            data = f.read(_MAX_CONF_BYTES + 1)
    except IsADirectoryError:
        raise ConfigError(f"cannot read {what} {p}: is a directory") from None
    except ConfigError:
        raise
    except OSError as e:
        raise ConfigError(f"cannot read {what} {p}: {e.strerror or e}") from None
    if len(data) > _MAX_CONF_BYTES:
        raise ConfigError(f"{what} {p} is larger than {_MAX_CONF_BYTES >> 20} MiB: not a {what}")
    nul = data.find(b"\0")
    if nul >= 0:
        raise ConfigError(f"{what} {p} is not a text file (NUL byte at offset {nul})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {p} is not a text file (invalid UTF-8 at offset {e.start})") from None


_MAX_CONF_BYTES = 4 << 20


def _strip_comment(line: str) -> str:
    out = []
    quote = None
    for ch in line:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in ";#":
            break
        out.append(ch)
    return "".join(out)


def parse_keyring_text(text: str, origin: str = "<keyring>") -> dict[str, str]:
    """Keyring file -> ``{entity name: base64 key}``.  Errors never quote a line."""
    out = {}
    for section, kv in parse_conf_text(text, origin, quote=False).items():
        if "key" in kv:
            out[section] = kv["key"]
    return out


def _resolve(host: str) -> list[str]:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return [host]
    except OSError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        raise ConfigError(f"cannot resolve monitor host {host!r}: {e}") from e
    seen = []
    for info in infos:
        ip = info[4][0]
        if ip not in seen:
            seen.append(ip)
    return seen


def _parse_one_addr(tok: str) -> list[EntityAddr]:
    """``v2:1.2.3.4:3300/0``, ``v1:...``, ``1.2.3.4:6789``, ``1.2.3.4``, ``host``."""
    tok = tok.strip()
    atype = None
    if tok.startswith("v2:"):
        atype, tok = ADDR_TYPE_MSGR2, tok[3:]
    elif tok.startswith("v1:"):
        atype, tok = ADDR_TYPE_LEGACY, tok[3:]
    elif tok.startswith("any:"):
        tok = tok[4:]
    nonce = 0
    if "/" in tok:
        tok, _, n = tok.rpartition("/")
        nonce = int(n)
    port = None
    if tok.startswith("["):
        host, _, rest = tok[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif tok.count(":") == 1:
        host, _, p = tok.partition(":")
        port = int(p)
    else:
        host = tok
    out = []
    for ip in _resolve(host):
        if atype is not None:
            out.append(EntityAddr(atype, nonce, ip, port or (MSGR2_PORT if atype == ADDR_TYPE_MSGR2 else LEGACY_PORT)))
        elif port is None:
            # Ceph: a bare address means "both protocols on their default ports".
            out.append(EntityAddr(ADDR_TYPE_MSGR2, nonce, ip, MSGR2_PORT))
            out.append(EntityAddr(ADDR_TYPE_LEGACY, nonce, ip, LEGACY_PORT))
        elif port == LEGACY_PORT:
            out.append(EntityAddr(ADDR_TYPE_LEGACY, nonce, ip, port))
        else:
            out.append(EntityAddr(ADDR_TYPE_MSGR2, nonce, ip, port))
    return out


def parse_mon_host(value: str) -> list[EntityAddrvec]:
    """Parse a ``mon host`` value into one addrvec per monitor.

    Accepts every form Ceph does: ``[v2:a:3300,v1:a:6789] [v2:b:3300,v1:b:6789]``,
    ``a:6789,b:6789``, ``a b c`` (bare names/IPs: both v2:3300 and v1:6789), hostnames.
    Raises :class:`ConfigError` when the value is empty or malformed.
    """
    s = value.strip()
    if not s:
        raise ConfigError("mon host is empty")
    mons: list[EntityAddrvec] = []
    i = 0
    try:
        while i < len(s):
            ch = s[i]
            if ch in " ,;\t":
                i += 1
                continue
            if ch == "[" and (s.startswith("[v", i) or s.startswith("[any", i)):
                # An IPv6 literal inside a vector ends with ']' too: find the vector's own end.
                depth = 0
                for j in range(i, len(s)):
                    if s[j] == "[":
                        depth += 1
                    elif s[j] == "]":
                        depth -= 1
                        if depth == 0:
                            break
                inner = s[i + 1 : j]
                addrs: list[EntityAddr] = []
                for tok in _split_top(inner):
                    addrs.extend(_parse_one_addr(tok))
                mons.append(EntityAddrvec(tuple(addrs)))
                i = j + 1
                continue
            j = i
            depth = 0
            while j < len(s) and (depth or s[j] not in " ,;\t"):
                if s[j] == "[":
                    depth += 1
                elif s[j] == "]":
                    depth -= 1
                j += 1
            addrs = _parse_one_addr(s[i:j])
            # Bare hosts may resolve to several IPs: one monitor each, per address family pair.
            by_ip: dict[str, list[EntityAddr]] = {}
            for a in addrs:
                by_ip.setdefault(a.ip, []).append(a)
            for group in by_ip.values():
                mons.append(EntityAddrvec(tuple(group)))
            i = j
    except (ValueError, IndexError) as e:
        raise ConfigError(f"cannot parse mon host {value!r}: {e}") from e
    if not mons:
        raise ConfigError(f"mon host {value!r} names no monitor")
    return mons


def _split_top(s: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return out


def default_dev_conf() -> Path:
    from .cluster import default_cluster_dir

    return Path(default_cluster_dir()) / "ceph.conf"


def find_conf(explicit: str | None, cluster: str = "ceph") -> Path | None:
    """Return the ceph.conf path to use (see the module doc), or None if none exists."""
    if explicit:
        p = Path(explicit).expanduser()
        if not p.exists():
            raise ConfigError(f"config file {explicit} not found")
        return p
    env = os.environ.get("CEPH_CONF")
    if env:
        p = Path(env).expanduser()
        if not p.exists():
            raise ConfigError(f"CEPH_CONF={env} not found")
        return p
    for cand in (
        Path(f"/etc/ceph/{cluster}.conf"),
        Path.home() / ".ceph" / f"{cluster}.conf",
        Path(f"{cluster}.conf"),
    ):
        if cand.exists():
            return cand
    dev = default_dev_conf()
    if dev.exists():
        return dev
    return None


@dataclass
class ClientConfig:
    """Everything needed to reach and authenticate to a cluster.

    - ``name``: the entity (``client.admin``);
    - ``key``: the base64 secret (``None`` when auth is none); never in ``repr()``;
    - ``key_source``: where the key came from, for messages (``keyring /etc/ceph/...``);
    - ``mon_addrs``: one :class:`EntityAddrvec` per monitor from ``mon host``;
    - ``options``: every other option, keys normalized (``client_mount_timeout``).
    """

    name: EntityName
    key: str | None = field(repr=False)
    mon_addrs: list[EntityAddrvec]
    options: dict[str, str] = field(default_factory=dict)
    conf_path: str | None = None
    keyring_path: str | None = None
    cluster: str = "ceph"
    fsid: str | None = None
    key_source: str | None = None

    def with_secret(self, key: str, source: str) -> "ClientConfig":
        """A copy authenticating with the base64 secret ``key``; ``source`` says where it
        came from (``kernel keyring key 'client.admin'``) for error messages."""
        return replace(self, key=key, key_source=source, keyring_path=None)

    def get(self, key: str, default: str | None = None) -> str | None:
        k = normalize_key(key)
        return self.options.get(k, DEFAULTS.get(k, default))

    def get_float(self, key: str, default: float = 0.0) -> float:
        v = self.get(key)
        if v is None:
            return default
        try:
            return float(v)
        except ValueError as e:
            raise ConfigError(f"option {key} = {v!r} is not a number") from e

    def get_int(self, key: str, default: int = 0) -> int:
        return int(self.get_float(key, default))

    def msgr_modes(self, for_mon: bool) -> tuple[str, ...]:
        """Connection modes to offer, in preference order: ``("legacy",)`` means msgr1,
        otherwise a non-empty tuple of ``"crc"``/``"secure"`` (msgr2.1 con modes).

        krbd's ``ms_mode`` option (map option or ceph.conf) wins; else ceph.conf's
        ``ms_mon_client_mode`` (``for_mon``) or ``ms_client_mode``.  Raises
        :class:`ConfigError` for an unknown value.
        """
        explicit = self.options.get("ms_mode")
        if explicit:
            return parse_ms_mode(explicit, "ms_mode")
        key = "ms_mon_client_mode" if for_mon else "ms_client_mode"
        return parse_ms_mode(self.get(key) or "crc", key)

    @property
    def auth_required(self) -> bool:
        mode = self.get("auth_client_required") or self.get("auth_supported") or "cephx"
        return "cephx" in mode

    @classmethod
    def load(
        cls,
        conffile: str | None = None,
        name: str | None = None,
        client_id: str | None = None,
        keyring: str | None = None,
        mon_host: str | None = None,
        key: str | None = None,
        overrides: dict[str, str] | None = None,
        cluster: str = "ceph",
        keyfile: str | None = None,
        key_source: str | None = None,
    ) -> "ClientConfig":
        """Build a config with Ceph's lookup rules.

        ``name`` (``client.foo``) wins over ``client_id`` (``foo``); default ``client.admin``.
        The secret: ``key`` (base64, found by the caller; ``key_source`` says where), else
        the file ``keyfile``, else the keyring ``keyring``, else ceph.conf (see the module
        doc).  ceph.conf's ``key`` option is taken out of ``options``.  Raises
        :class:`ConfigError` when no monitor address or no key can be found, naming what
        was searched, or when a file is unreadable or not text (never quoting a key).
        """
        if name:
            try:
                ename = EntityName.parse(name)
            except ValueError as e:
                raise ConfigError(str(e)) from e
        else:
            ename = EntityName.parse(f"client.{client_id or 'admin'}")
        path = find_conf(conffile, cluster)
        sections: dict[str, dict[str, str]] = {}
        if path is not None:
            sections = parse_conf_text(read_text_file(path, "config file"), str(path))
        opts: dict[str, str] = {}
        # Most specific section wins: [global] < [client] < [client.admin].
        for sec in ("global", ENTITY_SECTION[ename.type] if ename.type in ENTITY_SECTION else "client", str(ename)):
            opts.update(sections.get(sec, {}))
        for k, v in (overrides or {}).items():
            opts[normalize_key(k)] = v
        meta = {"$cluster": cluster, "$name": str(ename), "$id": ename.id, "$type": "client"}

        def expand(v: str) -> str:
            for m, r in meta.items():
                v = v.replace(m, r).replace("${" + m[1:] + "}", r)
            return v

        mon_value = mon_host or opts.get("mon_host")
        if not mon_value:
            # Old-style [mon.X] sections with "mon addr".
            addrs = [kv["mon_addr"] for s, kv in sections.items() if s.startswith("mon.") and "mon_addr" in kv]
            mon_value = " ".join(addrs)
        if not mon_value:
            where = str(path) if path else "no ceph.conf found (searched -c, $CEPH_CONF, /etc/ceph/ceph.conf, ~/.ceph/ceph.conf, ./ceph.conf, the pyceph dev cluster)"
            raise ConfigError(f"no monitor address: 'mon host' is not set ({where})")
        mons = parse_mon_host(mon_value)

        conf_key = opts.pop("key", None)
        secret, source, keyring_used = key, key_source or ("the given key" if key else None), None
        if not secret and keyfile:
            secret, source = _read_keyfile(Path(expand(keyfile)).expanduser(), "--keyfile")
            keyring_used = source
        explicit_ring = keyring
        if not secret and not explicit_ring and conf_key:
            secret, source = conf_key, f"the 'key' option of {path or 'the configuration'}"
        if not secret and not explicit_ring and opts.get("keyfile"):
            secret, source = _read_keyfile(Path(expand(opts["keyfile"])).expanduser(), "keyfile")
            keyring_used = source
        if not secret:
            candidates: list[str] = []
            if keyring:
                candidates = [keyring]
            elif opts.get("keyring"):
                candidates = [p.strip() for p in re.split(r"[,;]", opts["keyring"]) if p.strip()]
            else:
                candidates = [
                    f"/etc/ceph/{cluster}.{ename}.keyring",
                    f"/etc/ceph/{cluster}.keyring",
                    "/etc/ceph/keyring",
                ]
            tried = []
            for c in candidates:
                p = Path(expand(c)).expanduser()
                if not p.is_absolute() and path is not None and not p.exists():
                    p = path.parent / p
                tried.append(str(p))
                if p.exists() or keyring:
                    keys = parse_keyring_text(read_text_file(p, "keyring"), str(p))
                    if str(ename) in keys:
                        secret = keys[str(ename)]
                        keyring_used = str(p)
                        source = f"keyring {p}"
                        break
                    if keyring:
                        raise ConfigError(f"keyring {p} has no key for {ename}")
            cfg_auth = opts.get("auth_client_required", "cephx")
            if not secret and "cephx" in cfg_auth:
                raise ConfigError(
                    f"no key for {ename}: searched keyring(s) {', '.join(tried) or '(none)'}"
                )
        return cls(
            name=ename,
            key=secret,
            mon_addrs=mons,
            options=opts,
            conf_path=str(path) if path else None,
            keyring_path=keyring_used,
            cluster=cluster,
            fsid=opts.get("fsid"),
            key_source=source if secret else None,
        )


def _read_keyfile(p: Path, what: str) -> tuple[str, str]:
    """``(base64 key, source)`` from a keyfile (Ceph's ``keyfile`` option: the bare base64
    key, as ``ceph-authtool -p`` prints it).  ConfigError naming the file if it is
    unreadable, not text or empty; never its contents."""
    text = read_text_file(p, what).strip()
    if not text:
        raise ConfigError(f"{what} {p} is empty")
    return text, f"{what} {p}"


# krbd's ms_mode values (net/ceph/ceph_common.c ceph_param_ms_mode) and what each offers,
# in preference order: "legacy" is msgr1, the others msgr2 connection modes.
MS_MODE_CHOICES: dict[str, tuple[str, ...]] = {
    "legacy": ("legacy",),
    "crc": ("crc",),
    "secure": ("secure",),
    "prefer-crc": ("crc", "secure"),
    "prefer-secure": ("secure", "crc"),
}


def parse_ms_mode(value: str, origin: str = "ms_mode") -> tuple[str, ...]:
    """Parse a krbd ``ms_mode`` value (``legacy|crc|secure|prefer-crc|prefer-secure``) or a
    ceph.conf ``ms_client_mode``/``ms_mon_client_mode`` list (``"crc secure"``, in
    preference order) into a tuple of ``"legacy"``, ``"crc"``, ``"secure"``.

    Raises :class:`ConfigError` naming ``origin`` for anything else.
    """
    v = value.strip().lower()
    if v in MS_MODE_CHOICES:
        return MS_MODE_CHOICES[v]
    modes = tuple(m for m in re.split(r"[\s,;]+", v) if m)
    if modes and all(m in ("crc", "secure") for m in modes) and len(set(modes)) == len(modes):
        return modes
    raise ConfigError(
        f"{origin} = {value!r}: expected one of {', '.join(MS_MODE_CHOICES)} or a list of crc/secure"
    )


ENTITY_SECTION = {0x08: "client", 0x04: "osd", 0x01: "mon", 0x10: "mgr", 0x02: "mds"}


# --- connect map (fault-injection proxy) ------------------------------------------------

CONNECT_MAP_ENV = "PYCEPH_CONNECT_MAP"


def connect_map_path(config: "ClientConfig | None" = None) -> str | None:
    """Path of the optional connect map: ``$PYCEPH_CONNECT_MAP`` if set (a per-process
    override, e.g. for a map daemon started by a test), else ceph.conf's
    ``pyceph connect map``; None when neither is set."""
    env = os.environ.get(CONNECT_MAP_ENV)
    if env:
        return env
    if config is not None:
        v = config.get("pyceph_connect_map")
        if v:
            return v
    return None


class ConnectMap:
    """``{"real ip:port": "connect ip:port"}`` from a JSON file (the fault proxy's
    ``connect-map.json``, :mod:`pyceph.cluster.faultproxy`).

    :meth:`lookup` re-reads the file when its mtime/size/inode changed, so every new TCP
    connection follows the current map.  A missing file is an empty map (the proxy
    removes it when it exits).  A file that is not a JSON object of ``"ip:port"`` strings
    raises :class:`ConfigError` naming the path.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = str(path)
        self._stamp: tuple[int, int, int] | None = None
        self._map: dict[str, tuple[str, int]] = {}

    def _load(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._map = None, {}
            return
        except OSError as e:
            raise ConfigError(f"connect map {self.path}: {e.strerror or e}") from e
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return
        import json

        try:
            with open(self.path, encoding="utf-8") as f:
                raw = json.load(f)
        except FileNotFoundError:
            self._stamp, self._map = None, {}
            return
        except (OSError, ValueError) as e:
            raise ConfigError(f"connect map {self.path}: {e}") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"connect map {self.path}: want a JSON object, got {type(raw).__name__}")
        out: dict[str, tuple[str, int]] = {}
        for real, via in raw.items():
            out[str(real)] = _split_hostport(via, self.path)
        self._stamp, self._map = stamp, out

    def lookup(self, ip: str, port: int) -> tuple[str, int] | None:
        """Where to TCP-connect for the daemon at ``ip:port``; None = connect directly."""
        self._load()
        key = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        return self._map.get(key) or self._map.get(f"{ip}:{port}")


def _split_hostport(v: object, origin: str) -> tuple[str, int]:
    if not isinstance(v, str):
        raise ConfigError(f"connect map {origin}: bad address {v!r}")
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"connect map {origin}: bad address {v!r}; want IP:PORT")
    return host.strip("[]"), int(port)


_CONNECT_MAPS: dict[str, ConnectMap] = {}


def connect_map_for(config: "ClientConfig | None" = None) -> ConnectMap | None:
    """The (shared, cached) :class:`ConnectMap` for ``config``, or None if none is set."""
    path = connect_map_path(config)
    if not path:
        return None
    m = _CONNECT_MAPS.get(path)
    if m is None:
        m = _CONNECT_MAPS[path] = ConnectMap(path)
    return m
