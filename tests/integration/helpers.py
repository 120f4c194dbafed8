"""Small helpers shared by the integration tests (fixtures live in conftest.py).

``uniq(prefix)``          ``prefix-<8 hex>``: names unique per run, so a reused cluster never collides.
``run(argv, ...)``        run a command (bytes out); non-zero exit raises AssertionError with its stderr.
``tool(cluster, "rbd")``  argv prefix running the cluster's release's own tool (host or chroot):
                          every oracle (rbd, ceph, rados, ceph-authtool, osdmaptool) goes through it.
``wanted_release()``      $PYCEPH_TEST_RELEASE (None: the host's); ``wanted_ms_mode()`` $PYCEPH_TEST_MS_MODE.
``release(cluster)``      the cluster's Ceph release codename; ``major(cluster)`` its version (16, 18, 20).
``rbd(cluster, ...)``     librbd's ``rbd`` CLI against ``cluster``'s conf (bytes out; ``run``'s keywords).
``ceph(cluster, ...)``    the release's ``ceph`` CLI, same keywords; ``rados(cluster, ...)`` likewise.
``prbd(cluster, ...)``    pyceph's ``prbd`` CLI (``python -m pyceph.cli.prbd``), same keywords.
``rbd_json``              ``rbd ... --format json``, decoded.
``rbd_export``            the whole image (or snapshot) as librbd reads it.
``pmap(cluster, spec)``   ``prbd map``; returns the /dev/loopN device.
``read_dev(dev, ...)``    read a (mapped) block device.
``dumps(obj)``            compact JSON like ``rbd --format json``.

Where librbd's behaviour changed between releases, prbd follows the newest release;
``release_compat.py`` knows which release prints what.
``mapping_registry``      a private ``$PYCEPH_RUN_DIR`` for ``prbd map``; leftovers force-unmapped.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest


def uniq(prefix: str) -> str:
    """Image names unique per run, so a reused cluster never collides."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run(argv, *, check: bool = True, input: bytes | None = None, timeout: float = 300,
        env: dict | None = None) -> subprocess.CompletedProcess:
    argv = [str(a) for a in argv]
    r = subprocess.run(argv, capture_output=True, input=input, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
    return r


def wanted_release() -> str | None:
    """$PYCEPH_TEST_RELEASE (pacific|reef|tentacle), or None for the host's release."""
    return os.environ.get("PYCEPH_TEST_RELEASE") or None


def wanted_ms_mode() -> str | None:
    """$PYCEPH_TEST_MS_MODE (secure|crc|legacy), or None for Ceph's defaults."""
    return os.environ.get("PYCEPH_TEST_MS_MODE") or None


def tool(cluster, name: str, *args) -> list[str]:
    """argv running the cluster's release's own Ceph tool ``name`` with ``args`` (no ``-c`` added).

    File arguments must be under /tmp or the cluster dir (a chrooted release sees only those)."""
    return cluster.tool_argv(name, *map(str, args))


def release(cluster) -> str:
    """The cluster's Ceph release codename ("pacific", "reef", "tentacle")."""
    return cluster.release.name


def major(cluster) -> int:
    """The cluster's Ceph major version (16 pacific, 18 reef, 20 tentacle)."""
    return cluster.release.major


def rbd(cluster, *args, **kw) -> subprocess.CompletedProcess:
    """librbd's ``rbd`` CLI of the cluster's release (bytes out)."""
    return run(tool(cluster, "rbd", "-c", cluster.conf_path, *args), **kw)


def ceph(cluster, *args, **kw) -> subprocess.CompletedProcess:
    """The ``ceph`` CLI of the cluster's release (bytes out)."""
    return run(tool(cluster, "ceph", "-c", cluster.conf_path, *args), **kw)


def rados(cluster, *args, **kw) -> subprocess.CompletedProcess:
    """The ``rados`` CLI of the cluster's release (bytes out)."""
    return run(tool(cluster, "rados", "-c", cluster.conf_path, *args), **kw)


def prbd(cluster, *args, **kw) -> subprocess.CompletedProcess:
    """pyceph's ``prbd`` CLI (bytes out)."""
    return run([sys.executable, "-m", "pyceph.cli.prbd", "-c", cluster.conf_path, *args], **kw)


def rbd_json(cluster, *args):
    return json.loads(rbd(cluster, *args, "--format", "json").stdout)


def rbd_export(cluster, spec: str) -> bytes:
    """The whole image as librbd reads it."""
    return rbd(cluster, "export", "--no-progress", spec, "-").stdout


def pmap(cluster, spec: str, *opts: str) -> str:
    """``prbd map spec opts...``; the device it printed (a loop device that exists)."""
    dev = prbd(cluster, "map", spec, *opts).stdout.decode().strip()
    assert dev.startswith("/dev/loop") and os.path.exists(dev), dev
    return dev


def read_dev(dev: str, offset: int = 0, length: int | None = None) -> bytes:
    """``length`` bytes (default: to the end) of device ``dev`` from ``offset``."""
    fd = os.open(dev, os.O_RDONLY)
    try:
        if length is None:
            length = os.lseek(fd, 0, os.SEEK_END) - offset
        out = bytearray()
        while len(out) < length:
            chunk = os.pread(fd, min(4 << 20, length - len(out)), offset + len(out))
            if not chunk:
                break
            out += chunk
        return bytes(out)
    finally:
        os.close(fd)


@contextlib.contextmanager
def mapping_registry(tmp_path_factory) -> Iterator[Path]:
    """A private mapping registry ($PYCEPH_RUN_DIR) while inside; whatever is left
    mapped at the end is force-unmapped.  Fails (never skips) without root and /dev/fuse."""
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.fail("prbd map needs root and /dev/fuse", pytrace=False)
    d = tmp_path_factory.mktemp("pyceph-run")
    old = os.environ.get("PYCEPH_RUN_DIR")
    os.environ["PYCEPH_RUN_DIR"] = str(d)
    try:
        yield d
    finally:
        from pyceph.block import showmapped, unmap

        for rec in showmapped():
            with contextlib.suppress(Exception):
                unmap(rec["device"], timeout=30, force=True)
        if old is None:
            os.environ.pop("PYCEPH_RUN_DIR", None)
        else:
            os.environ["PYCEPH_RUN_DIR"] = old


def dumps(obj) -> str:
    """Compact JSON, the way ``rbd --format json`` prints it."""
    return json.dumps(obj, separators=(",", ":"))


