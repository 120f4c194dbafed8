"""rbdmap: the images ``/etc/ceph/rbdmap`` lists, mapped at boot and unmapped at
shutdown (Ceph's ``src/tools/rbdmap`` script and ``systemd/rbdmap.service``).

File format (one image per line; rbdmap's own)::

    # RbdDevice        Parameters
    rbd/vol1           id=admin,keyring=/etc/ceph/ceph.client.admin.keyring
    vol2               id=backup,options='noshare,queue_depth=64'    # pool "rbd"

- a line is ``DEV PARAMS``: DEV is ``pool/image`` (``pool/namespace/image`` and
  ``@snap`` work too); a DEV without ``/`` is in pool ``rbd``; blank lines and lines
  whose DEV starts with ``#`` are skipped;
- PARAMS become ``rbd device map`` options as rbdmap's ``create_cmd_params`` makes
  them: ``key=value`` -> ``--key value``, a bare ``key`` -> ``--key``, items are
  separated by ``,``; inside single quotes ``,`` and ``=`` are literal (the quotes
  are dropped); a ``#`` ends the parameters.  So ``id=``, ``name=``, ``keyring=``,
  ``options=`` (``-o``), ``read-only``, ``exclusive`` ... are whatever
  ``prbd device map`` takes.

Actions, as rbdmap's: ``map`` maps every listed image not mapped yet, then for
each new mapping mounts it if /etc/fstab has an entry for its link (fstab's
``noauto`` keeps the boot from mounting it too early; rbdmap mounts it) and runs
the post-map hook ``/etc/ceph/rbd.d/DEV map LINK`` if executable; ``unmap``
unmaps every listed image that is mapped (pre-unmap hook ``DEV unmap LINK``,
then unmount its file systems, then unmap; a mount that stays busy keeps that
image mapped); ``unmap-all`` does that for every pyceph mapping.  The exit status
counts failures (0 = all done).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
from typing import Any, Callable, Iterator

from .. import errors
from ..auth.crypto import looks_like_secret
from . import control, devattrs, registry

DEFAULT_RBDMAP_FILE = "/etc/ceph/rbdmap"
#: rbdmap's environment variable naming the file (rbdmap.service sets it)
RBDMAPFILE_ENV = "RBDMAPFILE"
DEFAULT_HOOKS_DIR = "/etc/ceph/rbd.d"
DEFAULT_FSTAB = "/etc/fstab"


class RbdmapError(errors.InvalidArgumentError):
    """A line of the rbdmap file that cannot be used (errno EINVAL)."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One rbdmap line: ``dev`` (``pool/image``, pool ``rbd`` filled in), ``args``
    (``prbd device map`` options made from PARAMS) and its line number."""

    dev: str
    args: tuple[str, ...]
    lineno: int


def cmd_params(params: str) -> list[str]:
    """rbdmap's ``create_cmd_params``: ``"id=admin,options='rw,noshare'"`` ->
    ``["--id", "admin", "--options", "rw,noshare"]`` (then split on white space
    as the shell splits the unquoted result)."""
    out = ""
    state = "START"
    for ch in params:
        if ch == "#":
            break
        if ch == "'":
            state = "NORMAL" if state == "INQUOTE" else "INQUOTE"
        elif ch == "=":
            out += ch if state == "INQUOTE" else " "
        elif ch == ",":
            if state == "INQUOTE":
                out += ch
            else:
                state = "NORMAL"
                out += " --"
        elif state == "START":
            state = "NORMAL"
            out += "--" + ch
        else:
            out += ch
    return out.split()


def parse_rbdmap(text: str) -> list[Entry]:
    """Every usable line of an rbdmap file (see the module doc)."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.strip().split(None, 1)
        if not parts or parts[0].startswith("#"):
            continue
        dev = parts[0]
        if "/" not in dev:
            dev = f"rbd/{dev}"
        out.append(Entry(dev, tuple(cmd_params(parts[1] if len(parts) > 1 else "")), n))
    return out


def read_rbdmap(path: str) -> list[Entry]:
    """Parse the file at ``path``; raises :class:`errors.ObjectNotFound` if missing."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_rbdmap(f.read())
    except FileNotFoundError:
        raise errors.ObjectNotFound(f"{path}: no such rbdmap file") from None


def rbdmap_file(path: str | None) -> str:
    return path or os.environ.get(RBDMAPFILE_ENV) or DEFAULT_RBDMAP_FILE


def entry_link(dev: str) -> str:
    """The stable link of ``dev`` (``pool/[ns/]image[@snap]``)."""
    t = control.parse_target(dev)
    assert isinstance(t, dict)
    return devattrs.link_path(t["pool"], t["namespace"], t["name"], t["snap"])


def mapped_device(dev: str) -> str | None:
    """The device a live pyceph mapping of ``dev`` has, or None."""
    t = control.parse_target(dev)
    for rec in control.showmapped():
        if all(str(rec.get(k, "")) == v for k, v in t.items()):
            return rec["device"]
    return None


# -- fstab, mounts, hooks ------------------------------------------------------------------

def fstab_has(source: str, fstab: str = DEFAULT_FSTAB) -> bool:
    """Whether ``fstab`` has an entry whose source is ``source`` (what rbdmap asks
    ``mount --fake`` before mounting a new mapping)."""
    try:
        with open(fstab) as f:
            for line in f:
                parts = line.split()
                if parts and not parts[0].startswith("#") and registry.unescape_mount_field(parts[0]) == source:
                    return True
    except OSError:
        pass
    return False


def mounts_of(device: str) -> list[str]:
    """Mount points (this mount namespace) of the file systems on ``device``,
    deepest last-mounted first, found by device number in /proc/self/mountinfo."""
    try:
        rdev = os.stat(device).st_rdev
    except OSError:
        return []
    want = f"{os.major(rdev)}:{os.minor(rdev)}"
    out = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 4 and parts[2] == want:
                out.append(registry.unescape_mount_field(parts[4]))
    return list(reversed(out))


def run_hook(hooks_dir: str, dev: str, action: str, link: str, log: Callable[[str], None]) -> None:
    """Run ``hooks_dir/DEV action LINK`` if it is an executable file (rbdmap's
    post-map / pre-unmap hooks); its failure is logged, never fatal, as rbdmap's."""
    hook = os.path.join(hooks_dir, dev)
    if not (os.path.isfile(hook) and os.access(hook, os.X_OK)):
        return
    log(f"running {'post-map' if action == 'map' else 'pre-unmap'} hook '{hook}'")
    try:
        r = subprocess.run([hook, action, link], stdin=subprocess.DEVNULL, timeout=300)
        if r.returncode:
            log(f"hook '{hook}' exited with status {r.returncode}")
    except (OSError, subprocess.TimeoutExpired) as e:
        log(f"hook '{hook}' failed: {e}")


def unmount_unmap(device: str, log: Callable[[str], None], timeout: float = 60.0) -> bool:
    """rbdmap's ``unmount_unmap``: unmount every file system on ``device``, then
    unmap it.  False (and logged) if a mount or the unmap failed."""
    for mnt in mounts_of(device):
        log(f"unmounting '{mnt}'")
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(["umount", mnt], stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
        if registry.is_mounted(mnt):
            log(f"failed to unmount '{mnt}'")
            return False
    try:
        control.unmap(device, timeout=timeout)
    except errors.Error as e:
        log(f"failed to unmap '{device}': {e.message or e}")
        return False
    log(f"unmapped '{device}'")
    return True


def _carries_secret(args: list[str]) -> bool:
    """True if the map command made from an rbdmap line would carry a secret in its argv:
    ``secret`` in any form (``secret=``, ``--secret X``), ``--key X``, or a ``key=`` map
    option whose value looks like a key rather than a keyring entry's name."""
    for a in args:
        if "secret" in a.lower() or a == "--key" or a.startswith("--key="):
            return True
        if any(part.startswith("key=") and looks_like_secret(part[4:]) for part in a.split(",")):
            return True
    return False


@dataclasses.dataclass
class Options:
    """Where rbdmap looks: hook scripts, fstab; ``map_argv(entry)`` is the command
    that maps one entry (``prbd [global options] device map DEV ARGS``)."""

    map_argv: Callable[[Entry], list[str]]
    hooks_dir: str = DEFAULT_HOOKS_DIR
    fstab: str = DEFAULT_FSTAB
    timeout: float = 60.0


def do_map(entries: list[Entry], opts: Options, log: Callable[[str], None]) -> int:
    """Map every entry not mapped yet; returns the number of failures."""
    failed = 0
    for e in entries:
        log(f"mapping '{e.dev}'")
        try:
            link = entry_link(e.dev)
            dev = mapped_device(e.dev)
        except (errors.Error, ValueError) as ex:
            log(f"line {e.lineno}: {getattr(ex, 'message', None) or ex}")
            failed += 1
            continue
        if dev is not None:
            log(f"'{e.dev}' is already mapped at '{dev}'")
            continue
        if _carries_secret(e.args):
            # it would reach the map command's argv: refused, never echoed
            log(f"line {e.lineno}: '{e.dev}': a secret= in rbdmap parameters is refused "
                "(use keyring=, or options='key=NAME' for the kernel keyring)")
            failed += 1
            continue
        try:
            r = subprocess.run(opts.map_argv(e), stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=opts.timeout + 30)
        except (OSError, subprocess.TimeoutExpired) as ex:
            log(f"failed to map '{e.dev}': {ex}")
            failed += 1
            continue
        if r.returncode != 0:
            msg = r.stderr.decode("utf-8", "replace").strip().splitlines()
            log(f"failed to map '{e.dev}': {msg[-1] if msg else 'status %d' % r.returncode}")
            failed += 1
            continue
        dev = r.stdout.decode().strip()
        log(f"mapped '{e.dev}' to '{dev}'")
        if fstab_has(link, opts.fstab):
            argv = ["mount", "-v"] + (["-T", opts.fstab] if opts.fstab != DEFAULT_FSTAB else []) + [link]
            try:
                m = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
                text = (m.stdout or m.stderr).decode("utf-8", "replace").strip()
                ok = m.returncode == 0
            except (OSError, subprocess.TimeoutExpired) as ex:
                text, ok = str(ex), False
            log(f"mounted '{dev}': {text}" if ok else f"mounting '{link}' failed: {text}")
        run_hook(opts.hooks_dir, e.dev, "map", link, log)
    return failed


def do_unmap(entries: list[Entry], opts: Options, log: Callable[[str], None]) -> int:
    """Unmap every listed entry that is mapped; returns the number of failures."""
    failed = 0
    for e in entries:
        try:
            link = entry_link(e.dev)
            dev = mapped_device(e.dev)
        except (errors.Error, ValueError) as ex:
            log(f"line {e.lineno}: {getattr(ex, 'message', None) or ex}")
            failed += 1
            continue
        if dev is None:
            log(f"'{e.dev}' not mapped, skipping unmap")
            continue
        run_hook(opts.hooks_dir, e.dev, "unmap", link, log)
        if not unmount_unmap(dev, log, opts.timeout):
            failed += 1
    return failed


def _link_names() -> Iterator[tuple[str, str]]:
    """(name below the links dir, resolved target) of every stable link."""
    root = devattrs.dev_dir()
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            if os.path.islink(p):
                yield os.path.relpath(p, root), os.path.realpath(p)


def do_unmap_all(opts: Options, log: Callable[[str], None]) -> int:
    """Unmap every pyceph mapping (rbdmap's ``unmap-all``); failures counted."""
    failed = 0
    links = list(_link_names())
    for rec in control.showmapped():
        dev = rec["device"]
        for name, target in links:
            if target == os.path.realpath(dev):
                run_hook(opts.hooks_dir, name, "unmap", os.path.join(devattrs.dev_dir(), name), log)
                break
        if not unmount_unmap(dev, log, opts.timeout):
            failed += 1
    return failed


def summary(entries: list[Entry]) -> list[dict[str, Any]]:
    """The entries as JSON-able dicts (for ``--format json`` / tests)."""
    return [{"dev": e.dev, "args": list(e.args), "line": e.lineno} for e in entries]
