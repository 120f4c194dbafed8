"""Small helpers shared by the integration tests (fixtures live in conftest.py).

``uniq(prefix)``          ``prefix-<8 hex>``: names unique per run, so a reused cluster never collides.
``run(argv, ...)``        run a command (bytes out); non-zero exit raises AssertionError with its stderr.
``rbd(cluster, ...)``     librbd's ``rbd`` CLI against ``cluster``'s conf (bytes out; ``run``'s keywords).
``prbd(cluster, ...)``    pyceph's ``prbd`` CLI (``python -m pyceph.cli.prbd``), same keywords.
``rbd_json``              ``rbd ... --format json``, decoded.
``rbd_export``            the whole image (or snapshot) as librbd reads it.
``pmap(cluster, spec)``   ``prbd map``; returns the /dev/loopN device.
``read_dev(dev, ...)``    read a (mapped) block device.
``dumps(obj)``            compact JSON like ``rbd --format json``.
``mapping_registry``      a private ``$PYCEPH_RUN_DIR`` for ``prbd map``; leftovers force-unmapped.
``make_v1_only(cluster)`` turn a freshly started DevCluster into a v1-only (msgr1) one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
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


def rbd(cluster, *args, **kw) -> subprocess.CompletedProcess:
    """librbd's ``rbd`` CLI (bytes out)."""
    return run(["rbd", "-c", cluster.conf_path, *args], **kw)


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


def make_v1_only(cluster) -> str:
    """Make ``cluster`` (a started :class:`pyceph.cluster.DevCluster`) v1-only: stop it,
    rewrite every monitor's MonMap to v1 addresses only (``monmaptool --addv``), set
    ``ms bind msgr2 = false`` and ``mon host`` to the v1 addresses in its ceph.conf and
    start every daemon again, so monitors, OSDs and the mgr bind and publish v1 only
    (what ``ceph mon dump`` / ``ceph osd dump`` then show).  Returns the new ``mon host``.
    OSDs are memstore: a clean stop keeps their data.  Raises AssertionError on failure.
    """
    conf = cluster.conf_path.read_text()
    names = sorted(cluster.pids())
    cluster.stop()
    line = conf.split("mon host =", 1)[1].splitlines()[0]
    mons = re.findall(r"v1:([\d.]+):(\d+)", line)
    assert mons, line
    cfg = str(cluster.conf_path)
    for i in range(len(mons)):
        mid = chr(ord("a") + i)
        mm = str(cluster.dir / f"monmap.{mid}")
        run(["ceph-mon", "-c", cfg, "-i", mid, "--extract-monmap", mm])
        for j, (ip, port) in enumerate(mons):
            mj = chr(ord("a") + j)
            run(["monmaptool", mm, "--rm", mj])
            run(["monmaptool", mm, "--addv", mj, f"[v1:{ip}:{port}]"])
        run(["ceph-mon", "-c", cfg, "-i", mid, "--inject-monmap", mm])
    host = " ".join(f"v1:{ip}:{port}" for ip, port in mons)
    conf = re.sub(r"mon host = .*", f"mon host = {host}", conf, count=1)
    conf = conf.replace("[global]\n", "[global]\n\tms bind msgr2 = false\n", 1)
    cluster.conf_path.write_text(conf)
    for n in [n for n in names if n.startswith("mon.")] + [n for n in names if not n.startswith("mon.")]:
        cluster.start_daemon(n)
    cluster.wait_clean(120)
    return host
