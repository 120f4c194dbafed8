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
from ..auth.keyring import check_config_key
from ..config import ClientConfig
from ..rados import strip_addr_type

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
    """Ceph's ``byte_u_t`` (src/include/types.cc ``format_u``): ``256 MiB``, ``0 B``,
    ``1.5 GiB``, ``9.99 KiB`` -- exact multiples print whole, others with the most
    decimals (2, 1, 0) that keep the text within 7 characters."""
    v = max(0, int(n))
    units = [" B", " KiB", " MiB", " GiB", " TiB", " PiB", " EiB"]
    q, i = v, 0
    while q >= 1024 and i < len(units) - 1:
        q //= 1024
        i += 1
    mult = 1 << (10 * i)
    if i == 0 or v % mult == 0:
        return f"{q}{units[i]}"
    for prec in (2, 1, 0):
        text = f"{v / mult:.{prec}f}{units[i]}"
        if len(text) <= 7:
            break
    return text


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
        if len(parts) > 3 or (len(parts) > 1 and not pool) or (len(parts) == 3 and not namespace):
            # rbd's spec regex wants every component it separates non-empty
            raise errors.InvalidArgumentError(f"invalid image spec: {spec!r}")
    if not image:
        raise errors.InvalidArgumentError("image name was not specified")
    return ImageSpec(pool or default_pool, namespace or "", image, snap)


class CliParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` as pyceph's CLIs use it: no abbreviated long options
    (``--key`` must never be taken for ``--keyring``; subcommand parsers made by
    ``add_subparsers().add_parser`` are of this class too) and usage errors in one
    line, ``prog: error: message`` (exit 2), listing unrecognized arguments by their
    option names only (a stray value may be a secret)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("allow_abbrev", False)
        super().__init__(*args, **kw)

    def _long_options(self) -> set[str]:
        """Every ``--option`` this parser and its subcommand parsers know."""
        out: set[str] = set()
        for a in self._actions:
            out.update(o for o in a.option_strings if o.startswith("--"))
            if isinstance(a, argparse._SubParsersAction):
                for sp in {id(v): v for v in a.choices.values()}.values():
                    out |= sp._long_options() if isinstance(sp, CliParser) else {
                        o for b in sp._actions for o in b.option_strings if o.startswith("--")}
        return out

    def parse_args(self, args: Any = None, namespace: Any = None):  # type: ignore[override]
        # An unknown --option is reported as such, before argparse takes its value for
        # a command name and echoes it ("invalid choice: 'AQ...'").
        argv = list(sys.argv[1:] if args is None else args)
        known = self._long_options()
        for tok in argv:
            if tok == "--":
                break
            name = tok.split("=", 1)[0]
            if name.startswith("--") and len(name) > 2 and name not in known:
                self.error(f"unrecognized arguments: {name}")
        return super().parse_args(argv, namespace)

    def error(self, message: str):  # type: ignore[override]
        m = re.match(r"(argument .*: invalid choice: )'(.*?)'( \(choose from .*\))?$", message, re.S)
        if m and not re.fullmatch(r"[a-z][a-z0-9_-]{0,23}", m.group(2)):
            message = f"{m.group(1).removesuffix(': ')} (value not shown){m.group(3) or ''}"
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            words = message[len(prefix):].split()
            names = [w.split("=", 1)[0] for w in words if w.startswith("-") and len(w) > 1]
            rest = len(words) - len(names)
            message = prefix + " ".join(names + ([f"(and {rest} other argument{'s' * (rest != 1)})"] if rest else []))
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog.split()[0]} -h)\n")


KEY_REFUSED = ("--key is not accepted: a secret on the command line is visible to every local user "
               "(ps, /proc/PID/cmdline); use --keyfile FILE, --keyring FILE or -o key=NAME (a key in the "
               "kernel keyring)")


class _RefuseKey(argparse.Action):
    """``--key SECRET`` (Ceph's global option): refused in one line, the value unread."""

    def __init__(self, option_strings, dest, **kw):
        kw["nargs"] = "?"
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.exit(2, f"{parser.prog.split()[0]}: error: {KEY_REFUSED}\n")


def add_client_options(p: argparse.ArgumentParser, suppress: bool = False) -> None:
    """The options ``rbd`` and ``ceph`` take to find and authenticate to a cluster.

    With ``suppress`` (for subcommand parsers) unset options leave the top-level
    values alone, so ``prbd -c X ls`` and ``prbd ls -c X`` both work, as with ``rbd``.
    The secret comes from ``--keyfile`` (a file holding the base64 key), ``--keyring``
    or ceph.conf; ``--key SECRET`` is refused (see :data:`KEY_REFUSED`).
    """
    def d(v):
        return argparse.SUPPRESS if suppress else v

    g = p.add_argument_group("cluster connection")
    g.add_argument("-c", "--conf", default=d(None),
                   help="ceph.conf path (default: $CEPH_CONF, /etc/ceph/ceph.conf, dev cluster)")
    g.add_argument("--id", "--user", dest="client_id", default=d(None), help="client id without 'client.' (default admin)")
    g.add_argument("-n", "--name", default=d(None), help="entity name, e.g. client.admin")
    g.add_argument("-k", "--keyring", default=d(None), help="keyring path")
    g.add_argument("--keyfile", default=d(None), help="file holding the base64 key (as `ceph-authtool -p` prints it)")
    g.add_argument("--key", action=_RefuseKey, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    g.add_argument("-m", "--mon-host", "--mon_host", dest="mon_host", default=d(None), help="monitor address(es)")
    g.add_argument("--cluster", default=d("ceph"), help="cluster name (default ceph)")
    g.add_argument("--connect-timeout", type=float, default=d(None),
                   help="seconds to reach and authenticate to a monitor (default client_mount_timeout)")
    g.add_argument("--debug", action="store_true", default=d(False), help="log protocol details to stderr")


def client_parent() -> argparse.ArgumentParser:
    """A parent parser carrying the client options for subcommands."""
    parent = CliParser(add_help=False)
    add_client_options(parent, suppress=True)
    parent.add_argument("-p", "--pool", default=argparse.SUPPRESS, help="pool name")
    parent.add_argument("--namespace", default=argparse.SUPPRESS, help="namespace")
    return parent


def load_config(args: argparse.Namespace) -> ClientConfig:
    """The client config of ``args`` (``-c``, ``--id``/``-n``, ``--keyfile``, ``-k``,
    ``-m``, ``--cluster``; the secret's sources in :mod:`pyceph.config`'s order).  A key
    that is not a cephx key fails here in one line naming its source (ConfigError)."""
    return check_config_key(ClientConfig.load(
        conffile=args.conf, name=args.name, client_id=args.client_id, keyring=args.keyring,
        mon_host=args.mon_host, cluster=args.cluster, keyfile=getattr(args, "keyfile", None),
    ))


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


class CliError(Exception):
    """A command failed the way ``rbd`` reports it: one stderr line ``prog: MESSAGE``
    and exit status ``errno`` (``rbd`` exits with ``abs(r)`` of the failing call).

    ``CliError("error opening image x", exc)`` formats like ``rbd``'s
    ``"rbd: error opening image x: (2) No such file or directory"`` and appends
    pyceph's typed error in brackets (``[ImageNotFound: image 'x' not found]``);
    ``CliError("must specify --size <M/G/T>", errno=EINVAL)`` is a plain message.
    """

    def __init__(self, message: str, exc: BaseException | None = None, errno: int | None = None):
        code = errno
        if code is None and exc is not None:
            code = getattr(exc, "errno", None)
        self.errno = abs(code) if code else 1
        text = message
        if exc is not None:
            text += f": ({self.errno}) {os.strerror(self.errno)}"
            detail = getattr(exc, "message", None) or str(exc)
            text += f" [{type(exc).__name__}: {detail}]" if detail else f" [{type(exc).__name__}]"
        super().__init__(text)
        self.text = text


def strerror_line(context: str, errno_: int) -> str:
    """``rbd``'s ``context: (N) strerror`` (``cpp_strerror``)."""
    return f"{context}: ({abs(errno_)}) {os.strerror(abs(errno_))}"


class TextTable:
    """Ceph's ``TextTable`` (src/common/TextTable.cc) as ``rbd`` prints it: every cell
    padded to its column's width, columns separated by two spaces, headings and cells
    aligned independently (``"<"`` left, ``">"`` right)."""

    LEFT = "<"
    RIGHT = ">"

    def __init__(self) -> None:
        self.cols: list[tuple[str, str, str]] = []
        self.rows: list[list[str]] = []

    def define_column(self, heading: str, hd_align: str = "<", col_align: str = "<") -> None:
        self.cols.append((heading, hd_align, col_align))

    def add_row(self, *cells: Any) -> None:
        if len(cells) != len(self.cols):
            raise ValueError(f"row has {len(cells)} cells, table has {len(self.cols)} columns")
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        """The table text; "" when it has no rows (TextTable prints nothing then)."""
        if not self.rows:
            return ""
        widths = [len(h) for h, _, _ in self.cols]
        for row in self.rows:
            for i, c in enumerate(row):
                widths[i] = max(widths[i], len(c))
        lines = ["  ".join(f"{h:{a}{widths[i]}}" for i, (h, a, _) in enumerate(self.cols))]
        for row in self.rows:
            lines.append("  ".join(f"{c:{self.cols[i][2]}{widths[i]}}" for i, c in enumerate(row)))
        return "".join(ln + "\n" for ln in lines)


def fmt_addr(addr: Any) -> str:
    """An ``entity_addr_t`` as Ceph's ``operator<<`` prints it (``127.0.0.1:0/123``,
    ``v2:10.0.0.1:6800/7``; type ANY has no prefix, NONE prints ``-``), the form
    ``rbd status`` shows for watchers.  Strings pass through unchanged."""
    if isinstance(addr, str):
        return addr
    t = addr.type
    if t == 0:
        return "-"
    prefix = {1: "v1:", 2: "v2:"}.get(t, "")
    ip = addr.ip
    host = f"[{ip}]" if ":" in ip else ip
    return f"{prefix}{host}:{addr.port}/{addr.nonce}"


def fmt_legacy_addr(addr: Any) -> str:
    """``entity_addr_t::get_legacy_str()`` (no type prefix): ``rbd lock ls``'s Address."""
    if isinstance(addr, str):
        return strip_addr_type(addr)
    return addr.legacy_str()


class Progress:
    """``rbd``'s progress reporting (``utils::ProgressContext``) on stderr.

    On a terminal a ``rich`` bar is drawn while the operation runs; in every case the
    outcome ends as ``rbd``'s final line, ``"<what>: 100% complete...done."`` or
    ``"<what>: N% complete...failed."``.  ``enabled=False`` (``--no-progress``)
    prints nothing.  ``update(done, total)`` is the ``on_progress(done, total)``
    callback the core takes.  Use as a context manager: an exception prints the
    ``failed.`` line and propagates.
    """

    def __init__(self, what: str, enabled: bool = True, stream: Any = None, tty: bool | None = None):
        self.what = what
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            try:
                tty = self.stream.isatty()
            except (AttributeError, ValueError):
                tty = False
        self.tty = tty
        self.last = 0
        self._bar: Any = None
        self._task: Any = None

    def _start_bar(self) -> None:
        if self._bar is not None or not (self.enabled and self.tty):
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress as RichProgress, TaskProgressColumn, TextColumn, \
            TimeRemainingColumn

        self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 TimeRemainingColumn(), console=Console(file=self.stream), transient=True)
        self._task = self._bar.add_task(self.what, total=100)
        self._bar.start()

    def _stop_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def update(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        pct = int(done * 100 // total)
        if pct > self.last:
            self.last = min(pct, 100)
        if self.tty:
            self._start_bar()
            if self._bar is not None:
                self._bar.update(self._task, completed=self.last)

    __call__ = update

    def finish(self) -> None:
        self._stop_bar()
        if self.enabled:
            self.stream.write(f"{self.what}: 100% complete...done.\n")
            self.stream.flush()

    def fail(self) -> None:
        self._stop_bar()
        if self.enabled:
            self.stream.write(f"{self.what}: {self.last}% complete...failed.\n")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        if self.tty:
            self._start_bar()
        return self

    def __exit__(self, et, ev, tb) -> bool:
        if et is None:
            self.finish()
        else:
            self.fail()
        return False

    def run(self, fn, *a):
        """``fn(*a)``, then the final ``done.`` line, or ``failed.`` if it raised."""
        with self:
            return fn(*a)


def run_main(prog: str, fn: Callable[[], int]) -> int:
    """Run a CLI body.  A :class:`CliError` prints ``prog: message`` and exits with its
    errno, as ``rbd`` does; any other typed error (connecting, authenticating,
    configuration) becomes one line ``prog: ErrorType: message`` and exit code 1
    (argparse's usage errors exit 2); Ctrl-C exits 130."""
    try:
        return fn() or 0
    except CliError as e:
        print(f"{prog}: {e.text}", file=sys.stderr)
        return e.errno
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
