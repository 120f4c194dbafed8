"""Thrash: prove that a mapped device survives faults as krbd does.

A dev cluster (3 mons, 3 memstore OSDs, pool ``rbd`` size 3 / min_size 2, a short cephx
service-ticket TTL so tickets are renewed during the run) gets an image mapped with
``prbd map``; the client is pointed at the fault proxy (:mod:`pyceph.cluster.faultproxy`)
through its connect map.  While a *verified* writer/reader (:class:`Checker`) runs on the
device, the harness injects faults one at a time on a schedule:

``osd_kill``         kill -9 an OSD, keep it down a few seconds, start it again, wait
                     until every PG is active+clean (memstore: it comes back empty and is
                     backfilled)
``mon_kill``         kill -9 the monitor the client is talking to, start it again, wait
                     for the full quorum
``osd_cable_pull``   stall (blackhole) the client's cable to an OSD it uses, restore
``osd_cable_reset``  RST the client's connections to an OSD and refuse new ones, restore
``osd_cable_drop``   RST existing and every new connection to an OSD, restore
``mon_cable_pull``   stall the cable to the client's monitor (longer than the client's
                     mon keepalive timeout, so it has to hunt), restore
``mon_cable_reset``  RST the client's monitor connection and refuse new ones, restore

The checker writes 4 KiB and 64 KiB blocks (O_DIRECT, random 4 KiB-aligned offsets in a
region).  Every 4 KiB sector carries a header - magic, run id, its own byte offset, the
write's generation, and a CRC32C over header and payload - so each sector can be checked
on its own.  A write counts as *acknowledged* when ``pwrite`` returned the full length
(the mapping acknowledges a write only once the OSDs did); an ``fsync`` thread flushes
periodically.  Readers verify random blocks against the last acknowledged generation;
writes and reads never overlap in flight (ranges are reserved), so the expected content
of every sector is exact.  At the end every sector of the region is read back from the
device and verified, and again from ``rbd export`` (librbd) after unmap.

Every I/O's start/end (``CLOCK_MONOTONIC``) is recorded; an I/O is attributed to every
fault whose window (injection .. recovery confirmed) it overlaps, and the report gives the
longest I/O latency per fault kind, how long after the heal the stuck I/O resumed, counts
of each fault, data verified and errors.  An I/O stuck for ``hang_timeout`` s after the
fault was healed is a client hang: the harness records the evidence (map daemon log tail,
proxy routes, cluster status) and kills the map daemon so the checker is released.

Use::

    python -m pyceph.cluster.thrash --duration 180 [--dir D] [--seed N] [--json]
    pyceph cluster thrash --duration 180 ...

Everything lives in D (default: a new temp dir): ``D/cluster`` (the dev cluster and its
logs, ``log/faultproxy.log``), ``D/run`` (the mapping registry and the map daemon's log),
``D/checker`` (checker status/result and the per-I/O log), ``D/report.json``.  The cluster,
proxy and mapping are stopped at the end (``--keep-cluster`` leaves the cluster running).
Exit code 0 only if the run verified every acknowledged block with no error, every fault
kind was injected and no I/O failed or hung.
"""

from __future__ import annotations

import argparse
import array
import calendar
import contextlib
import json
import mmap
import os
import random
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import google_crc32c

from pyceph.cluster.launcher import MS_MODES, RELEASES


def crc32c(data: Any, seed: int = 0) -> int:
    """Standard CRC-32C (the checker's own sector checksum, not Ceph's ceph_crc32c)."""
    return google_crc32c.extend(seed, data)


SECTOR = 4096
BIG = 16  # sectors in a big block (64 KiB)
MAGIC = b"PYTHRASH"
# magic, run id, byte offset of this sector, write generation, sectors in the write,
# index of this sector in the write, crc32c(header without crc + payload)
_HDR = struct.Struct("<8sQQQIII")
_HDR_NOCRC = _HDR.size - 4
PAYLOAD = SECTOR - _HDR.size
_ZERO = bytes(SECTOR)
MiB = 1 << 20

KIND_WRITE, KIND_READ, KIND_FSYNC = 1, 2, 3
KIND_NAMES = {KIND_WRITE: "write", KIND_READ: "read", KIND_FSYNC: "fsync"}

CLIENT_USER = "thrash"
MON_HUNT_DEADLINE = 45.0  # mon_client_ping_timeout 30 s + one ping interval 10 s + slack

FAULT_KINDS = (
    "osd_kill",
    "mon_kill",
    "osd_cable_pull",
    "osd_cable_reset",
    "osd_cable_drop",
    "mon_cable_pull",
    "mon_cable_reset",
)


# =========================================================================== block format


def fill_block(buf: Any, run_id: int, offset: int, gen: int, nsect: int, rng: random.Random) -> None:
    """Fill ``buf`` (``nsect`` sectors) with self-describing sectors for byte ``offset``."""
    for i in range(nsect):
        base = i * SECTOR
        payload = rng.randbytes(PAYLOAD)
        hdr = struct.pack("<8sQQQII", MAGIC, run_id, offset + base, gen, nsect, i)
        c = crc32c(payload, crc32c(hdr))
        buf[base:base + _HDR.size] = hdr + struct.pack("<I", c)
        buf[base + _HDR.size:base + SECTOR] = payload


def decode_sector(sec: Any, run_id: int, offset: int) -> tuple[int | None, str | None]:
    """``(generation, problem)`` of one sector read from byte ``offset``.

    An all-zero sector is generation 0 (never written).  ``problem`` describes a sector
    that is neither zero nor a valid sector of this run written at this offset.
    """
    magic, rid, off, gen, nsect, idx, c = _HDR.unpack_from(sec, 0)
    if magic != MAGIC:
        if sec == _ZERO:
            return 0, None
        return None, f"garbage (no header, first bytes {bytes(sec[:16]).hex()})"
    if crc32c(sec[_HDR.size:], crc32c(sec[:_HDR_NOCRC])) != c:
        return None, f"checksum mismatch (header says gen {gen} offset {off})"
    if rid != run_id:
        return None, f"sector of another run (run id {rid:#x}, gen {gen})"
    if off != offset:
        return None, f"misplaced sector: written for offset {off}, found at {offset} (gen {gen})"
    if idx >= nsect:
        return None, f"bad header (index {idx} of {nsect})"
    return gen, None


# =========================================================================== checker


@dataclass
class CheckerConfig:
    dev: str
    offset: int = 0
    size: int = 64 * MiB
    writers: int = 2
    readers: int = 1
    fsync_interval: float = 0.5
    big_ratio: float = 0.3  # share of 64 KiB I/Os
    iops: float = 200.0  # cap over writers + readers (0 = as fast as the device goes)
    seed: int = 0
    run_id: int = 0


class Checker:
    """Verified writers/readers on a block device region (see the module doc).

    Threads: ``writers`` writers, ``readers`` readers, one fsync thread.  :meth:`stop`
    stops them; :meth:`final_verify` reads the whole region back.  All times are
    ``time.monotonic()``.
    """

    def __init__(self, cfg: CheckerConfig):
        if cfg.size % (BIG * SECTOR) or cfg.offset % SECTOR:
            raise ValueError("region must be 64 KiB-sized and 4 KiB-aligned")
        self.cfg = cfg
        self.run_id = cfg.run_id or random.getrandbits(63) | 1
        self.nsect = cfg.size // SECTOR
        self.acked = array.array("q", bytes(8 * self.nsect))  # last acknowledged gen, 0 = never
        self.maybe: dict[int, set[int]] = {}  # sector -> possible gens after a failed write
        self.busy = bytearray(self.nsect)
        self.lock = threading.Lock()
        self._gen = 0
        self._stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.inflight: dict[int, tuple[int, float]] = {}  # thread slot -> (kind, t0)
        # per-I/O log
        self.r_kind = array.array("b")
        self.r_ok = array.array("b")
        self.r_size = array.array("i")
        self.r_t0 = array.array("d")
        self.r_t1 = array.array("d")
        self.counts = {"write": 0, "read": 0, "fsync": 0, "bytes_written": 0, "bytes_read": 0,
                       "io_errors": 0, "verify_errors": 0, "sectors_read_verified": 0}
        self.errors: list[dict[str, Any]] = []
        self.last_done = 0.0
        self.started = 0.0
        self.fd = -1

    # -- bookkeeping -----------------------------------------------------------------

    def _record(self, kind: int, t0: float, t1: float, ok: bool, size: int) -> None:
        self.r_kind.append(kind)
        self.r_ok.append(1 if ok else 0)
        self.r_size.append(size)
        self.r_t0.append(t0)
        self.r_t1.append(t1)
        if t1 > self.last_done:
            self.last_done = t1

    def _error(self, **kw: Any) -> None:
        kw.setdefault("t", time.monotonic())
        if len(self.errors) < 200:
            self.errors.append(kw)

    def _reserve(self, rng: random.Random, nsect: int) -> int | None:
        s = rng.randrange(0, self.nsect - nsect + 1)
        with self.lock:
            if self.busy.find(1, s, s + nsect) != -1:
                return None
            self.busy[s:s + nsect] = b"\x01" * nsect
        return s

    def expected(self, s: int) -> set[int]:
        """Generations sector ``s`` may hold (one, unless a write to it failed)."""
        m = self.maybe.get(s)
        return set(m) if m else {self.acked[s]}

    def verify_buffer(self, buf: Any, first: int, count: int, where: str,
                      expect: Callable[[int], set[int]] | None = None) -> tuple[int, int]:
        """Verify ``count`` sectors in ``buf`` starting at region sector ``first``.

        Returns ``(written sectors verified, errors)``."""
        expect = expect or self.expected
        ok_written = errs = 0
        for i in range(count):
            s = first + i
            off = self.cfg.offset + s * SECTOR
            sec = bytes(buf[i * SECTOR:(i + 1) * SECTOR])
            gen, problem = decode_sector(sec, self.run_id, off)
            want = expect(s)
            if problem is None and gen not in want:
                problem = (f"stale data: generation {gen} found, acknowledged generation "
                           f"{'/'.join(map(str, sorted(want)))} expected")
            if problem:
                errs += 1
                self._error(what="verify", where=where, sector=s, offset=off, problem=problem)
            elif gen:
                ok_written += 1
        return ok_written, errs

    # -- threads ---------------------------------------------------------------------

    def start(self) -> None:
        self.fd = os.open(self.cfg.dev, os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC)
        end = os.lseek(self.fd, 0, os.SEEK_END)
        if self.cfg.offset + self.cfg.size > end:
            raise ValueError(f"region [{self.cfg.offset}, +{self.cfg.size}) beyond {self.cfg.dev} ({end} bytes)")
        self.started = self.last_done = time.monotonic()
        slot = 0
        for kind, n, fn in ((KIND_WRITE, self.cfg.writers, self._writer), (KIND_READ, self.cfg.readers, self._reader),
                            (KIND_FSYNC, 1 if self.cfg.fsync_interval > 0 else 0, self._fsyncer)):
            for _ in range(n):
                t = threading.Thread(target=self._guard, args=(fn, slot), name=f"{KIND_NAMES[kind]}-{slot}",
                                     daemon=True)
                self.threads.append(t)
                slot += 1
        for t in self.threads:
            t.start()

    def _pace(self, next_t: float) -> float:
        """Sleep until ``next_t`` (per-thread share of the IOPS cap); returns the next slot."""
        if self.cfg.iops <= 0:
            return 0.0
        now = time.monotonic()
        if next_t > now:
            self._stop.wait(next_t - now)
        else:
            next_t = now  # behind (the device stalled): no burst afterwards
        return next_t + (self.cfg.writers + self.cfg.readers) / self.cfg.iops

    def _guard(self, fn: Callable[[int], None], slot: int) -> None:
        try:
            fn(slot)
        except Exception as e:  # noqa: BLE001 - a checker bug, not a device error: reported
            with self.lock:
                self.counts["checker_errors"] = self.counts.get("checker_errors", 0) + 1
                self._error(what="checker thread died", thread=threading.current_thread().name,
                            error=f"{type(e).__name__}: {e}")
            self.inflight.pop(slot, None)

    def _next_range(self, rng: random.Random, slot_t: float) -> tuple[float, int, int | None]:
        """Pace this thread, pick a block size (sectors) and reserve a free range of it;
        ``(slot_t, n, first sector)``, the sector None once the checker is stopping."""
        slot_t = self._pace(slot_t)
        n = BIG if rng.random() < self.cfg.big_ratio else 1
        s = self._reserve(rng, n)
        while s is None and not self._stop.is_set():
            s = self._reserve(rng, n)
        return slot_t, n, s

    def _writer(self, slot: int) -> None:
        rng = random.Random(self.cfg.seed * 1000 + slot)
        m = mmap.mmap(-1, BIG * SECTOR)
        mv = memoryview(m)
        slot_t = 0.0
        while not self._stop.is_set():
            slot_t, n, s = self._next_range(rng, slot_t)
            if s is None:
                continue
            with self.lock:
                self._gen += 1
                gen = self._gen
            off = self.cfg.offset + s * SECTOR
            fill_block(m, self.run_id, off, gen, n, rng)
            t0 = time.monotonic()
            self.inflight[slot] = (KIND_WRITE, t0)
            err = None
            try:
                done = os.pwrite(self.fd, mv[:n * SECTOR], off)
                if done != n * SECTOR:
                    err = f"short write: {done} of {n * SECTOR} bytes"
            except OSError as e:
                err = f"{type(e).__name__}: {e}"
            t1 = time.monotonic()
            with self.lock:
                self.inflight.pop(slot, None)
                self._record(KIND_WRITE, t0, t1, err is None, n * SECTOR)
                self.counts["write"] += 1
                if err is None:
                    self.counts["bytes_written"] += n * SECTOR
                    for i in range(s, s + n):
                        self.acked[i] = gen
                        self.maybe.pop(i, None)
                else:
                    self.counts["io_errors"] += 1
                    self._error(what="write", offset=off, length=n * SECTOR, gen=gen, error=err, t0=t0)
                    for i in range(s, s + n):
                        self.maybe.setdefault(i, {self.acked[i]}).add(gen)
                self.busy[s:s + n] = bytes(n)
            if err is not None:
                time.sleep(0.1)  # do not spin on a failing device

    def _reader(self, slot: int) -> None:
        rng = random.Random(self.cfg.seed * 1000 + 500 + slot)
        m = mmap.mmap(-1, BIG * SECTOR)
        mv = memoryview(m)
        slot_t = 0.0
        while not self._stop.is_set():
            slot_t, n, s = self._next_range(rng, slot_t)
            if s is None:
                continue
            off = self.cfg.offset + s * SECTOR
            t0 = time.monotonic()
            self.inflight[slot] = (KIND_READ, t0)
            err = None
            try:
                got = os.preadv(self.fd, [mv[:n * SECTOR]], off)
                if got != n * SECTOR:
                    err = f"short read: {got} of {n * SECTOR} bytes"
            except OSError as e:
                err = f"{type(e).__name__}: {e}"
            t1 = time.monotonic()
            verified = verrs = 0
            if err is None:  # the range is reserved: its expected content cannot change
                verified, verrs = self.verify_buffer(mv, s, n, "read")
            with self.lock:
                self.inflight.pop(slot, None)
                self._record(KIND_READ, t0, t1, err is None, n * SECTOR)
                self.counts["read"] += 1
                if err is None:
                    self.counts["bytes_read"] += n * SECTOR
                    self.counts["sectors_read_verified"] += verified
                    self.counts["verify_errors"] += verrs
                else:
                    self.counts["io_errors"] += 1
                    self._error(what="read", offset=off, length=n * SECTOR, error=err, t0=t0)
                self.busy[s:s + n] = bytes(n)
            if err is not None:
                time.sleep(0.1)

    def _fsyncer(self, slot: int) -> None:
        while not self._stop.wait(self.cfg.fsync_interval):
            t0 = time.monotonic()
            self.inflight[slot] = (KIND_FSYNC, t0)
            err = None
            try:
                os.fsync(self.fd)
            except OSError as e:
                err = f"{type(e).__name__}: {e}"
            t1 = time.monotonic()
            with self.lock:
                self.inflight.pop(slot, None)
                self._record(KIND_FSYNC, t0, t1, err is None, 0)
                self.counts["fsync"] += 1
                if err is not None:
                    self.counts["io_errors"] += 1
                    self._error(what="fsync", error=err, t0=t0)

    # -- control -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        with self.lock:
            infl = list(self.inflight.values())
            st = dict(self.counts)
            st["ios"] = len(self.r_t1)
        oldest = min((t0 for _k, t0 in infl), default=None)
        st.update(t=now, last_done=self.last_done, inflight=len(infl), oldest_inflight=oldest,
                  oldest_inflight_kind=KIND_NAMES[min(infl, key=lambda x: x[1])[0]] if infl else None,
                  errors=st["io_errors"] + st["verify_errors"])
        return st

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop the threads; False if some are still stuck in I/O after ``timeout`` s."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def final_verify(self) -> dict[str, Any]:
        """fsync, then read every sector of the region from the device and verify it."""
        t0 = time.monotonic()
        out: dict[str, Any] = {"source": "device", "blocks": 0, "bytes": 0, "zero_blocks": 0, "errors": 0}
        try:
            os.fsync(self.fd)
        except OSError as e:
            out["errors"] += 1
            self._error(what="final fsync", error=str(e))
        chunk = 256  # sectors per read (1 MiB)
        m = mmap.mmap(-1, chunk * SECTOR)
        mv = memoryview(m)
        for first in range(0, self.nsect, chunk):
            n = min(chunk, self.nsect - first)
            try:
                got = os.preadv(self.fd, [mv[:n * SECTOR]], self.cfg.offset + first * SECTOR)
                if got != n * SECTOR:
                    raise OSError(0, f"short read {got}")
            except OSError as e:
                out["errors"] += n
                self._error(what="final read", offset=self.cfg.offset + first * SECTOR, error=str(e))
                continue
            ok, errs = self.verify_buffer(mv, first, n, "final device read-back")
            out["blocks"] += ok
            out["errors"] += errs
        out["zero_blocks"] = self.nsect - self.written_sectors()
        out["bytes"] = out["blocks"] * SECTOR
        out["seconds"] = round(time.monotonic() - t0, 2)
        return out

    def written_sectors(self) -> int:
        """Sectors that hold (or may hold) data of this run."""
        return sum(1 for s in range(self.nsect) if self.acked[s] or s in self.maybe)

    def state(self) -> dict[str, Any]:
        """What a later verification (e.g. of ``rbd export``) needs."""
        return {"run_id": self.run_id, "offset": self.cfg.offset, "size": self.cfg.size,
                "acked": list(self.acked), "maybe": {str(k): sorted(v) for k, v in self.maybe.items()},
                "last_gen": self._gen}

    def io_log(self) -> dict[str, list]:
        return {"kind": list(self.r_kind), "ok": list(self.r_ok), "size": list(self.r_size),
                "t0": [round(x, 6) for x in self.r_t0], "t1": [round(x, 6) for x in self.r_t1]}

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def verify_image_file(path: str | os.PathLike[str], state: dict[str, Any]) -> dict[str, Any]:
    """Verify a raw image file (e.g. ``rbd export``) against a :meth:`Checker.state`."""
    run_id, offset, size = state["run_id"], state["offset"], state["size"]
    acked = state["acked"]
    maybe = {int(k): set(v) for k, v in state.get("maybe", {}).items()}
    out: dict[str, Any] = {"source": str(path), "blocks": 0, "bytes": 0, "zero_blocks": 0, "errors": 0,
                           "problems": []}
    with open(path, "rb") as f:
        f.seek(offset)
        for s in range(size // SECTOR):
            sec = f.read(SECTOR)
            if len(sec) < SECTOR:
                sec = sec + bytes(SECTOR - len(sec))  # sparse tail of an export
            off = offset + s * SECTOR
            gen, problem = decode_sector(sec, run_id, off)
            want = maybe.get(s) or {acked[s]}
            if problem is None and gen not in want:
                problem = f"stale data: generation {gen} found, {'/'.join(map(str, sorted(want)))} expected"
            if problem:
                out["errors"] += 1
                if len(out["problems"]) < 50:
                    out["problems"].append({"sector": s, "offset": off, "problem": problem})
            elif gen:
                out["blocks"] += 1
            else:
                out["zero_blocks"] += 1
    out["bytes"] = out["blocks"] * SECTOR
    return out


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)


def checker_main(argv: Sequence[str]) -> int:
    """``python -m pyceph.cluster.thrash _checker --dev DEV --out DIR ...``

    Runs until stdin says ``stop`` (or EOF), writing ``DIR/status.json`` every 0.5 s;
    then stops the threads, verifies the whole region and writes ``DIR/result.json``
    (counts, errors, final verification, state) and ``DIR/io.json`` (the per-I/O log).
    """
    p = argparse.ArgumentParser(prog="thrash _checker", allow_abbrev=False)
    p.add_argument("--dev", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--size", type=int, default=64 * MiB)
    p.add_argument("--writers", type=int, default=2)
    p.add_argument("--readers", type=int, default=1)
    p.add_argument("--fsync-interval", type=float, default=0.5)
    p.add_argument("--big-ratio", type=float, default=0.3)
    p.add_argument("--iops", type=float, default=200.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop-timeout", type=float, default=300.0)
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ck = Checker(CheckerConfig(dev=a.dev, offset=a.offset, size=a.size, writers=a.writers, readers=a.readers,
                               fsync_interval=a.fsync_interval, big_ratio=a.big_ratio, iops=a.iops,
                               seed=a.seed))
    ck.start()
    done = threading.Event()

    def status_loop() -> None:
        while not done.wait(0.5):
            _write_json(out / "status.json", ck.status())

    threading.Thread(target=status_loop, daemon=True).start()
    _write_json(out / "status.json", ck.status())
    signal.signal(signal.SIGTERM, lambda *_: os.close(0))  # treated like EOF on stdin
    try:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
    except (OSError, ValueError):
        pass
    t_stop = time.monotonic()
    stopped = ck.stop(a.stop_timeout)
    result: dict[str, Any] = {"t_stop": t_stop, "stopped_cleanly": stopped, "run_id": ck.run_id,
                              "region": {"dev": a.dev, "offset": a.offset, "size": a.size}}
    if stopped:
        result["final_verify"] = ck.final_verify()
    done.set()
    _write_json(out / "status.json", ck.status())
    result.update(counts=ck.counts, ios=len(ck.r_t1), errors=ck.errors, written_sectors=ck.written_sectors(),
                  state=ck.state(), started=ck.started)
    _write_json(out / "io.json", ck.io_log())
    _write_json(out / "result.json", result)
    ck.close()
    return 0 if stopped else 2


# =========================================================================== harness


@dataclass
class ThrashOptions:
    duration: float = 180.0  # seconds of fault injection (at least min_rounds full rounds)
    dir: str | None = None
    seed: int | None = None
    mons: int = 3
    osds: int = 3
    release: str | None = None  # Ceph release of the cluster (default: the host's)
    ms_mode: str | None = None  # on-wire mode the cluster requires (secure|crc|legacy)
    kinds: tuple[str, ...] = FAULT_KINDS
    min_rounds: int = 1
    image_size: int = 256 * MiB
    region: int = 64 * MiB
    ticket_ttl: float = 60.0  # auth service ticket ttl on the cluster
    mon_ticket_ttl: float = 120.0  # auth mon ticket ttl
    osd_down_time: float = 5.0
    mon_down_time: float = 5.0
    osd_pull_time: float = 10.0
    osd_reset_time: float = 5.0
    osd_drop_time: float = 5.0
    mon_pull_time: float = 45.0  # > the client's mon keepalive timeout + interval: forces a hunt
    mon_reset_time: float = 5.0
    settle: float = 3.0  # pause between faults
    baseline: float = 5.0  # fault-free I/O before the first fault
    hang_timeout: float = 120.0  # an I/O stuck this long after the heal is a hang
    recovery_timeout: float = 180.0
    writers: int = 2
    readers: int = 1
    iops: float = 200.0
    keep_cluster: bool = False
    client_debug: bool = False  # map daemon logs at DEBUG level
    reference: bool = False  # also run fio's librbd engine as a reference for kill faults
    connect_map_via: str = "both"  # env | conf | both
    command: str = ""


class ClientHang(Exception):
    """An I/O did not complete ``hang_timeout`` s after the fault was healed."""


class _Interrupted(Exception):
    pass


def _now() -> float:
    return time.monotonic()


class Thrasher:
    """One thrash run (see the module doc).  ``run()`` returns the report dict."""

    def __init__(self, opts: ThrashOptions, log: Callable[[str], None] | None = None):
        self.o = opts
        self.seed = opts.seed if opts.seed is not None else random.randrange(1 << 31)
        self.rng = random.Random(self.seed)
        self.dir = Path(opts.dir or tempfile.mkdtemp(prefix="pyceph-thrash-")).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cdir = self.dir / "cluster"
        self.rundir = self.dir / "run"
        self.ckdir = self.dir / "checker"
        self._log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.t0 = _now()
        self.t0_wall = time.time()
        self.cluster = None
        self.proxy_started = False
        self.dev: str | None = None
        self.mapping: dict[str, Any] | None = None
        self.image = f"thrash-{self.seed:x}"
        self.checker: subprocess.Popen | None = None
        self.events: list[dict[str, Any]] = []
        self.harness_errors: list[str] = []
        self.client_problems: list[dict[str, Any]] = []
        self.routed: dict[str, Any] = {}
        self._mon_rr = 0
        self.env = dict(os.environ)
        self.env["PYCEPH_RUN_DIR"] = str(self.rundir)
        self.env.pop("CEPH_CONF", None)
        pkg_root = str(Path(__file__).resolve().parents[2])
        self.env["PYTHONPATH"] = pkg_root + (os.pathsep + self.env["PYTHONPATH"] if self.env.get("PYTHONPATH") else "")
        self.stop_requested = False

    def log(self, msg: str) -> None:
        self._log(f"[thrash {_now() - self.t0:7.1f}s] {msg}")

    # -- setup ------------------------------------------------------------------------

    def _start_cluster(self) -> None:
        from pyceph.cluster.launcher import DevCluster

        self.cluster = DevCluster(self.cdir)
        conf = {"auth service ticket ttl": self.o.ticket_ttl, "auth mon ticket ttl": self.o.mon_ticket_ttl}
        self.log(f"starting cluster: {self.o.mons} mons, {self.o.osds} OSDs, ticket ttl {self.o.ticket_ttl:g}s in {self.cdir}")
        secs = self.cluster.start(mons=self.o.mons, osds=self.o.osds, conf=conf, release=self.o.release,
                                  ms_mode=self.o.ms_mode)
        self.log(f"{self.cluster.release.name} cluster active+clean in {secs:.1f}s")
        # The client gets its own cephx user (as a krbd host would), so the monitors' auth
        # log (debug_auth 10, mons only) shows exactly its ticket renewals.
        self.keyring = self.dir / f"{CLIENT_USER}.keyring"
        self.cluster.ceph("auth", "get-or-create", f"client.{CLIENT_USER}", "mon", "profile rbd",
                          "osd", "profile rbd pool=rbd", "mgr", "profile rbd pool=rbd",
                          "-o", str(self.keyring), json=False)
        self.cluster.ceph("config", "set", "mon", "debug_auth", "10/10", json=False)

    def _start_proxy(self) -> None:
        from pyceph.cluster import faultproxy as fp

        fp.start_proxy(self.cdir, orphan_timeout=120, max_lifetime=self.o.duration * 4 + 3600)
        self.proxy_started = True
        self.map_path = self.cdir / fp.MAP_FILE
        self.log(f"fault proxy up, connect map {self.map_path}")

    def _client_conf(self) -> Path:
        """A client-only copy of ceph.conf naming the connect map (the daemons never read it)."""
        text = (self.cdir / "ceph.conf").read_text()
        if self.o.connect_map_via in ("conf", "both"):
            text = text.replace("[global]\n", f"[global]\n\tpyceph connect map = {self.map_path}\n", 1)
        p = self.dir / "client.conf"
        p.write_text(text)
        return p

    def _prbd(self, *args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "pyceph.cli.prbd", "-c", str(self.client_conf), "--id", CLIENT_USER,
                "-k", str(self.keyring), *args]
        env = dict(self.env)
        if self.o.connect_map_via in ("env", "both"):
            env["PYCEPH_CONNECT_MAP"] = str(self.map_path)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RuntimeError(f"prbd {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
        return r

    def _map(self) -> None:
        assert self.cluster is not None
        self.cluster.rbd("create", "--size", f"{self.o.image_size // MiB}M", "--image-feature", "layering",
                         f"rbd/{self.image}")
        self.client_conf = self._client_conf()
        self.t_map_wall = time.time()
        extra = ["--debug"] if self.o.client_debug else []
        self.dev = self._prbd(*extra, "map", f"rbd/{self.image}", "-o", "keep_log").stdout.strip()
        recs = list((self.rundir / "mappings").glob("*.json"))
        self.mapping = json.loads(recs[0].read_text()) if recs else {}
        self.log(f"mapped rbd/{self.image} at {self.dev} (map daemon pid {self.mapping.get('pid')}, "
                 f"log {self.mapping.get('log')})")

    # -- librbd reference (optional) ----------------------------------------------------

    def _start_reference(self) -> None:
        """fio's rbd engine (librbd) on a second image, as a reference for the kill faults.

        librbd does not know the connect map, so it never goes through the proxy: cable
        faults do not touch it; OSD and mon kills do.  Its per-I/O latencies are attributed
        to the same fault windows as the checker's."""
        assert self.cluster is not None
        import shutil

        if shutil.which("fio") is None:
            self.harness_errors.append("--reference librbd needs fio (apt-get install fio)")
            return
        self.cluster.rbd("create", "--size", f"{self.o.image_size // MiB}M", "--image-feature", "layering",
                         f"rbd/{self.image}-ref")
        refdir = self.dir / "reference"
        refdir.mkdir(exist_ok=True)
        env = dict(self.env, CEPH_CONF=str(self.cdir / "ceph.conf"))
        # the checker's load: same region size, 4 KiB/64 KiB mix, 2/3 writes, same rate and depth
        r_iops, w_iops = max(1, round(self.o.iops / 3)), max(1, round(2 * self.o.iops / 3))
        argv = ["fio", "--name=librbd-ref", "--ioengine=rbd", "--clientname=admin", "--pool=rbd",
                f"--rbdname={self.image}-ref", "--rw=randrw", "--rwmixwrite=67", "--bssplit=4k/70:64k/30",
                f"--size={self.o.region // MiB}M", f"--iodepth={self.o.writers + self.o.readers}",
                f"--rate_iops={r_iops},{w_iops}", "--time_based", f"--runtime={int(self.o.duration * 4 + 3600)}",
                f"--write_lat_log={refdir / 'fio'}", "--log_avg_msec=0", "--log_unix_epoch=1",
                f"--output={refdir / 'fio.out'}"]
        self.fio = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=open(refdir / "fio.err", "ab"), env=env, start_new_session=True)
        self.log(f"librbd reference: fio rbd engine on rbd/{self.image}-ref at {r_iops + w_iops} IOPS")

    fio: subprocess.Popen | None = None

    def _stop_reference(self) -> dict[str, Any] | None:
        if self.fio is None:
            return None
        self.fio.send_signal(signal.SIGINT)  # fio ends the job and writes its logs
        try:
            self.fio.wait(90)
        except subprocess.TimeoutExpired:
            self.fio.kill()
            self.fio.wait(30)
            self.harness_errors.append("fio (librbd reference) did not stop on SIGINT")
            return None
        logf = self.dir / "reference" / "fio_lat.1.log"
        io: dict[str, list] = {"kind": [], "ok": [], "t0": [], "t1": []}
        off = self.t0 - self.t0_wall  # wall -> monotonic
        try:
            for line in logf.read_text().splitlines():
                f = [x.strip() for x in line.split(",")]
                if len(f) < 3:
                    continue
                t1 = int(f[0]) / 1000.0 + off
                io["t1"].append(t1)
                io["t0"].append(t1 - int(f[1]) / 1e9)
                io["kind"].append(KIND_READ if f[2] == "0" else KIND_WRITE)
                io["ok"].append(1)
        except OSError as e:
            self.harness_errors.append(f"librbd reference: {e}")
            return None
        per_kind, base, _ = analyze(self.events, io, self.o.kinds)
        return {"tool": "fio --ioengine=rbd (librbd), not routed through the fault proxy", "ios": len(io["t1"]),
                "faults": {k: {x: v[x] for x in ("count", "ios", "max_io_latency_s", "max_completion_gap_s")}
                           for k, v in per_kind.items()},
                "baseline": base}

    def _start_checker(self) -> None:
        self.ckdir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "pyceph.cluster.thrash", "_checker", "--dev", str(self.dev),
                "--out", str(self.ckdir), "--size", str(self.o.region), "--seed", str(self.seed),
                "--writers", str(self.o.writers), "--readers", str(self.o.readers), "--iops", str(self.o.iops)]
        self.checker_log = open(self.ckdir / "checker.log", "ab")
        self.checker = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=self.checker_log,
                                        stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        deadline = _now() + 30
        while not (self.ckdir / "status.json").exists():
            if self.checker.poll() is not None or _now() > deadline:
                raise RuntimeError(f"checker failed to start: {(self.ckdir / 'checker.log').read_text()[-1000:]}")
            time.sleep(0.1)
        self.log(f"checker running on {self.dev}: region {self.o.region // MiB} MiB, "
                 f"{self.o.writers} writers, {self.o.readers} readers, fsync every 0.5s")

    def ck_status(self) -> dict[str, Any]:
        try:
            return json.loads((self.ckdir / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    # -- observation ------------------------------------------------------------------

    def proxy_routes(self) -> dict[str, dict[str, Any]]:
        from pyceph.cluster import faultproxy as fp

        try:
            return fp.status(self.cdir)["routes"]
        except Exception as e:  # noqa: BLE001
            self.harness_errors.append(f"proxy status: {e}")
            return {}

    def map_daemon_sessions(self) -> dict[str, Any] | None:
        """The map daemon's ``sessions`` answer (its control socket), if it has one."""
        sock = (self.mapping or {}).get("socket")
        if not sock:
            return None
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(sock)
            s.sendall(b"sessions\n")
            buf = b""
            while not buf.endswith(b"\n"):
                c = s.recv(65536)
                if not c:
                    break
                buf += c
        except OSError:
            return None
        finally:
            s.close()
        try:
            v = json.loads(buf)
        except ValueError:
            return None
        return v if isinstance(v, dict) else None

    def _mon_name_of(self, v: Any) -> str | None:
        """A mon name from a session description: "a", "mon.a", an address or rank."""
        assert self.cluster is not None
        mons = self.cluster.state["mons"]
        routes = self.proxy_routes_cache
        if isinstance(v, str):
            if v.startswith("mon."):
                v = v[4:]
            for m in mons:
                if v == m["id"]:
                    return f"mon.{m['id']}"
            for m in mons:
                ports = {str(m["v2"]), str(m["v1"])}
                r = routes.get(f"mon.{m['id']}")
                if r:
                    ports.add(r["listen"].rsplit(":", 1)[1])
                for p in ports:
                    if f":{p}/" in v or v.endswith(f":{p}") or f":{p}," in v or f":{p}]" in v:
                        return f"mon.{m['id']}"
        return None

    def current_mon(self) -> tuple[str, str]:
        """``(mon name, how)``: the client's monitor, from the map daemon, the proxy, or a guess."""
        assert self.cluster is not None
        self.proxy_routes_cache = self.proxy_routes()
        sess = self.map_daemon_sessions()
        if sess:
            cands = []

            def walk(x: Any, key: str = "") -> None:
                if isinstance(x, dict):
                    for k, v in x.items():
                        walk(v, k)
                elif isinstance(x, list):
                    for v in x:
                        walk(v, key)
                elif key in ("mon", "cur_mon", "mon_name", "mon_addr") and isinstance(x, (str, int)):
                    cands.append(str(x))

            walk(sess.get("mon", sess.get("mon_session", sess)), "mon")
            for c in cands:
                name = self._mon_name_of(c)
                if name:
                    return name, "map daemon sessions"
        active = [n for n, r in self.proxy_routes_cache.items() if n.startswith("mon.") and r["active"] > 0]
        if len(active) == 1:
            return active[0], "proxy (only mon route with a client connection)"
        if active:
            return self.rng.choice(active), f"proxy (ambiguous: {','.join(active)})"
        mons = [f"mon.{m['id']}" for m in self.cluster.state["mons"]]
        self._mon_rr += 1
        return mons[self._mon_rr % len(mons)], "round robin (client mon unknown)"

    def client_osds(self) -> list[str]:
        """OSDs the client has a connection to through the proxy."""
        return [n for n, r in self.proxy_routes().items() if n.startswith("osd.") and r["active"] > 0]

    def check_routed(self) -> None:
        routes = self.proxy_routes()
        mon_c = sum(r["connections"] for n, r in routes.items() if n.startswith("mon."))
        osd_c = sum(r["connections"] for n, r in routes.items() if n.startswith("osd."))
        self.routed = {"mon_connections": mon_c, "osd_connections": osd_c, "ok": mon_c > 0 and osd_c > 0}
        if not self.routed["ok"]:
            self.log("WARNING: the client does not route through the fault proxy "
                     f"(mon connections {mon_c}, osd connections {osd_c}): cable faults cannot reach it")

    # -- waiting ------------------------------------------------------------------------

    def sleep(self, secs: float) -> None:
        """Sleep, watching the checker: raises ClientHang / _Interrupted."""
        end = _now() + secs
        while True:
            if self.stop_requested:
                raise _Interrupted()
            if self.checker is not None and self.checker.poll() is not None:
                raise RuntimeError(f"checker exited early ({self.checker.returncode}); see {self.ckdir}/checker.log")
            left = end - _now()
            if left <= 0:
                return
            time.sleep(min(0.25, left))

    def wait_resumed(self, since: float, what: str) -> float:
        """Wait until no I/O started before ``since`` is still in flight and one I/O completed
        after it; returns that time.  Raises :class:`ClientHang` after ``hang_timeout``."""
        deadline = since + self.o.hang_timeout
        while True:
            st = self.ck_status()
            oldest = st.get("oldest_inflight")
            if (oldest is None or oldest >= since) and st.get("last_done", 0) > since:
                return max(since, st.get("last_done", since)) if oldest is None else max(since, oldest)
            if _now() > deadline:
                raise ClientHang(f"I/O stuck {self.o.hang_timeout:.0f}s after {what} was healed "
                                 f"(oldest in-flight {st.get('oldest_inflight_kind')} started "
                                 f"{_now() - (oldest or _now()):.1f}s ago)")
            self.sleep(0.2)

    def wait_clean(self) -> None:
        assert self.cluster is not None
        self.cluster.wait_clean(self.o.recovery_timeout)

    def wait_quorum(self) -> None:
        assert self.cluster is not None
        want = len(self.cluster.state["mons"])
        deadline = _now() + self.o.recovery_timeout
        while True:
            try:
                q = self.cluster.ceph("quorum_status", timeout=15)
                if len(q.get("quorum_names", [])) == want:
                    return
            except Exception:  # noqa: BLE001
                pass
            if _now() > deadline:
                raise RuntimeError(f"monitors not back in quorum after {self.o.recovery_timeout:.0f}s")
            self.sleep(0.5)

    # -- faults ---------------------------------------------------------------------------

    def _cable(self, name: str, state: str) -> dict[str, Any]:
        from pyceph.cluster import faultproxy as fp

        return fp.cable(self.cdir, name, state)

    def fault(self, kind: str) -> dict[str, Any]:
        assert self.cluster is not None
        ev: dict[str, Any] = {"kind": kind, "t_inject": None, "t_heal": None, "t_resumed": None, "t_end": None}
        self.events.append(ev)
        ev["io_before"] = self.ck_status().get("ios", 0)
        if kind == "osd_kill":
            target = self.rng.choice([n for n in self.cluster.daemon_names if n.startswith("osd.")])
            ev["target"] = target
            ev["t_inject"] = _now()
            self.cluster.kill(target)
            self.log(f"{kind}: killed {target} (SIGKILL); down for {self.o.osd_down_time:g}s")
            self.sleep(self.o.osd_down_time)
            self.cluster.start_daemon(target)
            ev["t_heal"] = _now()
            self.log(f"{kind}: {target} restarted; waiting for I/O and active+clean")
            ev["t_resumed"] = self.wait_resumed(ev["t_heal"], f"{kind} {target}")
            self.wait_clean()
        elif kind == "mon_kill":
            target, how = self.current_mon()
            ev.update(target=target, target_from=how)
            ev["t_inject"] = _now()
            self.cluster.kill(target)
            self.log(f"{kind}: killed {target} (client's mon per {how}); down for {self.o.mon_down_time:g}s")
            self.sleep(self.o.mon_down_time)
            self.cluster.start_daemon(target)
            ev["t_heal"] = _now()
            self.log(f"{kind}: {target} restarted; waiting for I/O and quorum")
            ev["t_resumed"] = self.wait_resumed(ev["t_heal"], f"{kind} {target}")
            self.wait_quorum()
            ev["client_mon_after"] = self.current_mon()[0]
        elif kind.startswith(("osd_cable_", "mon_cable_")):
            state = kind.rsplit("_", 1)[1]  # pull | reset | drop
            hold = getattr(self.o, f"{kind.split('_')[0]}_{state}_time")
            if kind.startswith("osd"):
                cands = self.client_osds()
                ev["target_from"] = "proxy (client connections)" if cands else "random (no client connection seen)"
                target = self.rng.choice(cands or [n for n in self.cluster.daemon_names if n.startswith("osd.")])
            else:
                target, ev["target_from"] = self.current_mon()
            ev["target"] = target
            ev["t_inject"] = _now()
            r = self._cable(target, state)[target]
            ev["client_connections_hit"] = r["active"]
            self.log(f"{kind}: cable {state} {target} ({r['active']} client connection(s)) for {hold:g}s")
            self.sleep(hold)
            if kind == "mon_cable_pull":
                # krbd's monc declares a silent mon dead after 30 s (keepalive every 10 s)
                # and hunts for another one: by now the client should have moved.
                during, how = self.current_mon()
                ev["client_mon_before_restore"] = during
                ev["hunted"] = during != target
                if not ev["hunted"] and hold >= MON_HUNT_DEADLINE:
                    self.client_problems.append({
                        "problem": "no mon hunt", "fault": kind, "target": target,
                        "message": f"client still on {target} ({how}) after its cable was pulled for {hold:g}s "
                                   f"(krbd hunts after 30-40 s)",
                        "map_daemon_sessions": self.map_daemon_sessions(),
                        "map_daemon_log_tail": self._tail((self.mapping or {}).get("log"), 30)})
            after = self._cable(target, "restore")[target]
            ev["t_heal"] = _now()
            ev["route_after"] = {k: after[k] for k in ("connections", "active", "resets", "upstream_errors")}
            self.log(f"{kind}: {target} restored; waiting for I/O")
            ev["t_resumed"] = self.wait_resumed(ev["t_heal"], f"{kind} {target}")
            if kind.startswith("mon"):
                self.sleep(1.0)
                ev["client_mon_after"] = self.current_mon()[0]
        else:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
        ev["t_end"] = _now()
        ev["io_after"] = self.ck_status().get("ios", 0)
        self.log(f"{kind}: done in {ev['t_end'] - ev['t_inject']:.1f}s "
                 f"(I/O seen flowing {ev['t_resumed'] - ev['t_heal']:.2f}s after the heal)")
        return ev

    def heal_all(self) -> None:
        """Every cable back to pass, every daemon running."""
        with contextlib.suppress(Exception):
            if self.proxy_started:
                self._cable("all", "restore")
        if self.cluster is not None:
            for name, pid in self.cluster.pids().items():
                if pid is None:
                    try:
                        self.cluster.start_daemon(name)
                        self.log(f"heal: restarted {name}")
                    except Exception as e:  # noqa: BLE001
                        self.harness_errors.append(f"heal {name}: {e}")

    # -- hang handling ------------------------------------------------------------------

    def _tail(self, path: str | os.PathLike[str] | None, n: int = 80) -> list[str]:
        if not path:
            return []
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                return f.read().decode(errors="replace").splitlines()[-n:]
        except OSError:
            return []

    def record_hang(self, exc: ClientHang, ev: dict[str, Any] | None) -> None:
        evidence: dict[str, Any] = {
            "problem": "hang", "message": str(exc), "fault": ev.get("kind") if ev else None,
            "target": ev.get("target") if ev else None,
            "t_inject": ev.get("t_inject") if ev else None, "t_heal": ev.get("t_heal") if ev else None,
            "checker": self.ck_status(), "proxy_routes": self.proxy_routes(),
            "map_daemon_sessions": self.map_daemon_sessions(),
            "map_daemon_log_tail": self._tail((self.mapping or {}).get("log")),
            "map_daemon_log": (self.mapping or {}).get("log"),
        }
        with contextlib.suppress(Exception):
            assert self.cluster is not None
            evidence["ceph_status"] = self.cluster.ceph("-s", json=False, timeout=20)
        self.client_problems.append(evidence)
        self.log(f"CLIENT HANG: {exc}")
        pid = (self.mapping or {}).get("pid")
        if pid:
            with contextlib.suppress(OSError):
                # py-spy-like evidence is not available; the log tail is in the report.
                os.kill(pid, signal.SIGKILL)  # releases the checker's stuck I/O (FUSE aborts)
            self.log(f"killed map daemon pid {pid} to release the stuck I/O")
            self.mapping_killed = True

    mapping_killed = False
    reference: dict[str, Any] | None = None
    final_sessions: dict[str, Any] | None = None
    t_map_wall: float | None = None

    def ticket_activity(self) -> dict[str, Any]:
        """cephx requests of the client's user in the monitors' logs (debug_auth 10):
        ``get_principal_session_key`` = service tickets renewed on an open session,
        ``get_auth_session_key`` = a new (re)authentication (new mon session)."""
        renew, auth = [], []
        for log in sorted((self.cdir / "log").glob("mon.*.log")):
            try:
                text = log.read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                if f"cephx server client.{CLIENT_USER}: handle_request" not in line:
                    continue
                try:
                    ts = calendar.timegm(time.strptime(line[:19], "%Y-%m-%dT%H:%M:%S")) + float(line[19:23])
                except (ValueError, OverflowError):
                    continue
                rel = round(ts - self.t0_wall, 1)
                (renew if "get_principal_session_key" in line else auth).append((rel, log.stem))
        return {"user": f"client.{CLIENT_USER}", "auth_service_ticket_ttl": self.o.ticket_ttl,
                "service_ticket_renewals": len(renew), "authentications": len(auth),
                "renewal_times_s": [t for t, _ in sorted(renew)],
                "authentication_times_s": [t for t, _ in sorted(auth)]}

    # -- the run --------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started_wall = time.time()
        ev = None
        rounds = 0
        result: dict[str, Any] | None = None
        verify_rbd: dict[str, Any] | None = None
        try:
            self._start_cluster()
            self._start_proxy()
            self._map()
            self._start_checker()
            if self.o.reference:
                self._start_reference()
            self.sleep(self.o.baseline)
            self.check_routed()
            self.t_faults = _now()
            schedule = list(self.o.kinds)
            i = 0
            while True:
                if i % len(schedule) == 0 and i:
                    rounds += 1
                if rounds >= self.o.min_rounds and _now() - self.t_faults >= self.o.duration:
                    break
                kind = schedule[i % len(schedule)]
                i += 1
                ev = None
                try:
                    ev = self.fault(kind)
                except ClientHang as e:
                    self.record_hang(e, self.events[-1] if self.events else None)
                    break
                ev = None
                self.sleep(self.o.settle)
            self.t_faults_end = _now()
            self.reference = self._stop_reference()
        except _Interrupted:
            self.harness_errors.append("interrupted")
        except ClientHang as e:
            self.record_hang(e, None)
        except Exception as e:  # noqa: BLE001 - reported, then cleaned up
            self.harness_errors.append(f"{type(e).__name__}: {e}")
            self.log(f"harness error: {type(e).__name__}: {e}")
        finally:
            self.heal_all()
            if self.fio is not None and self.fio.poll() is None and self.reference is None:
                self.reference = self._stop_reference()
            with contextlib.suppress(Exception):
                self.final_sessions = self.map_daemon_sessions()
            result = self._stop_checker()
            self._unmap()
            if result and result.get("stopped_cleanly") and self.cluster is not None and not self.mapping_killed:
                verify_rbd = self._verify_librbd(result)
            self._cleanup()
            report = self._report(result, verify_rbd, rounds, started_wall)
        return report

    def _stop_checker(self) -> dict[str, Any] | None:
        if self.checker is None:
            return None
        self.log("stopping checker; final read-back of the whole region from the device")
        with contextlib.suppress(OSError, ValueError):
            self.checker.stdin.write(b"stop\n")  # type: ignore[union-attr]
            self.checker.stdin.close()  # type: ignore[union-attr]
        try:
            self.checker.wait(self.o.hang_timeout + 120)
        except subprocess.TimeoutExpired:
            self.client_problems.append({"problem": "hang", "message": "checker did not finish (I/O stuck at stop)",
                                         "checker": self.ck_status(),
                                         "map_daemon_log_tail": self._tail((self.mapping or {}).get("log"))})
            pid = (self.mapping or {}).get("pid")
            if pid:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                self.mapping_killed = True
            try:
                self.checker.wait(60)
            except subprocess.TimeoutExpired:
                self.checker.kill()
                self.checker.wait(30)
        with contextlib.suppress(Exception):
            self.checker_log.close()
        try:
            return json.loads((self.ckdir / "result.json").read_text())
        except (OSError, ValueError):
            self.harness_errors.append("checker wrote no result")
            return None

    def _unmap(self) -> None:
        if not self.dev:
            return
        if not self.mapping_killed:
            r = self._prbd("unmap", self.dev, timeout=180, check=False)
            if r.returncode == 0:
                self.log(f"unmapped {self.dev}")
                return
            self.client_problems.append({"problem": "unmap failed", "message": r.stderr.strip()[-500:],
                                         "map_daemon_log_tail": self._tail((self.mapping or {}).get("log"))})
        pid = (self.mapping or {}).get("pid")
        if pid:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self._prbd("unmap", self.dev, "-o", "force", timeout=60, check=False)

    def _verify_librbd(self, result: dict[str, Any]) -> dict[str, Any] | None:
        assert self.cluster is not None
        path = self.cluster.dir / "export.img"  # visible to a chrooted release's rbd too
        try:
            self.log("verifying the region again from librbd (rbd export)")
            self.cluster.rbd("export", "--no-progress", f"rbd/{self.image}", str(path), timeout=300)
            out = verify_image_file(path, result["state"])
            out["source"] = "rbd export (librbd)"
            return out
        except Exception as e:  # noqa: BLE001
            self.harness_errors.append(f"librbd verification: {e}")
            return None
        finally:
            path.unlink(missing_ok=True)

    def _cleanup(self) -> None:
        from pyceph.cluster import faultproxy as fp

        if self.proxy_started:
            with contextlib.suppress(Exception):
                fp.stop_proxy(self.cdir)
        if self.cluster is not None and not self.o.keep_cluster:
            try:
                self.cluster.stop()
                self.log("cluster stopped")
            except Exception as e:  # noqa: BLE001
                self.harness_errors.append(f"cluster stop: {e}")
                return
            # the daemons' stores (memstore dumps: ~70 MB per OSD) are of no use any more;
            # logs, ceph.conf and cluster.json stay as evidence
            import shutil

            for d in self.cdir.iterdir():
                if d.is_dir() and d.name.split(".", 1)[0] in ("osd", "mon", "mgr"):
                    shutil.rmtree(d, ignore_errors=True)

    # -- report ---------------------------------------------------------------------------

    def _report(self, result: dict[str, Any] | None, vrbd: dict[str, Any] | None, rounds: int,
                started_wall: float) -> dict[str, Any]:
        io = {}
        with contextlib.suppress(OSError, ValueError):
            io = json.loads((self.ckdir / "io.json").read_text())
        per_kind, base, per_event = analyze(self.events, io, self.o.kinds)
        counts = (result or {}).get("counts", {})
        fv = (result or {}).get("final_verify") or {}
        written = (result or {}).get("written_sectors", 0)
        verify_errors = counts.get("verify_errors", 0) + fv.get("errors", 0) + (vrbd or {}).get("errors", 0)
        missing_kinds = [k for k in self.o.kinds if per_kind[k]["count"] == 0]
        all_verified = bool(fv) and fv.get("blocks") == written and (vrbd is None or vrbd.get("blocks") == written)
        ok = (result is not None and result.get("stopped_cleanly") and verify_errors == 0
              and counts.get("io_errors", 1) == 0 and not missing_kinds and not self.client_problems
              and not self.harness_errors and all_verified and vrbd is not None and self.routed.get("ok", False))
        tickets = self.ticket_activity()
        if tickets.get("service_ticket_renewals", 0) == 0 and self.t_map_wall and \
                time.time() - self.t_map_wall > 2 * self.o.ticket_ttl:
            self.client_problems.append({
                "problem": "no ticket renewal",
                "message": f"the monitors issued no service-ticket renewal to client.{CLIENT_USER} in "
                           f"{time.time() - self.t_map_wall:.0f}s with auth service ticket ttl {self.o.ticket_ttl:g}s"})
            ok = False
        return {
            "ok": bool(ok),
            "command": self.o.command,
            "seed": self.seed,
            "dir": str(self.dir),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started_wall)),
            "wall_seconds": round(_now() - self.t0, 1),
            "fault_seconds": round(getattr(self, "t_faults_end", _now()) - getattr(self, "t_faults", _now()), 1),
            "rounds_completed": rounds,
            "cluster": {"mons": self.o.mons, "osds": self.o.osds, "pool": "rbd size 3 min_size 2",
                        "release": self.cluster.release.name if self.cluster else self.o.release,
                        "ms_mode": self.o.ms_mode,
                        "auth_service_ticket_ttl": self.o.ticket_ttl, "auth_mon_ticket_ttl": self.o.mon_ticket_ttl},
            "image": f"rbd/{self.image}", "device": self.dev,
            "client_routed_via_proxy": self.routed,
            "faults": per_kind,
            "missing_fault_kinds": missing_kinds,
            "baseline": base,
            "io": {**counts, "ios": (result or {}).get("ios", 0)},
            "verify": {
                "acknowledged_blocks": written,
                "device": fv,
                "librbd": {k: v for k, v in (vrbd or {}).items() if k != "problems"} if vrbd else None,
                "errors": verify_errors,
            },
            "errors": (result or {}).get("errors", [])[:50] + ((vrbd or {}).get("problems") or [])[:20],
            "client_problems": self.client_problems,
            "harness_errors": self.harness_errors,
            "tickets": tickets,
            "reference_librbd": self.reference,
            "final_sessions": self.final_sessions,
            "time_base": {"monotonic": round(self.t0, 3), "wall": round(self.t0_wall, 3),
                          "note": "event times t_* are seconds after the harness started (monotonic - time_base)"},
            "events": [{**{k: (round(v - self.t0, 2) if k.startswith("t_") and isinstance(v, float) else v)
                           for k, v in e.items()}, **st} for e, st in zip(self.events, per_event)],
            "logs": {"map_daemon": (self.mapping or {}).get("log"), "proxy": str(self.cdir / "log/faultproxy.log"),
                     "cluster": str(self.cdir / "log"), "checker": str(self.ckdir)},
        }


# =========================================================================== analysis


def _new_kind() -> dict[str, Any]:
    return {"count": 0, "ios": 0, "max_io_latency_s": 0.0, "max_latency_io": None,
            "max_stuck_after_heal_s": 0.0, "max_completion_gap_s": 0.0, "targets": []}


def analyze(events: list[dict[str, Any]], io: dict[str, list], kinds: Sequence[str] = FAULT_KINDS
            ) -> tuple[dict[str, dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """Attribute every I/O of the checker's log to the fault windows it overlaps.

    A fault's window runs from its injection to the end of its recovery (``t_end``: I/O
    resumed, and for kills the cluster is clean / in quorum again).  Per event:
    ``ios`` overlapping it, ``max_io_latency_s``, ``stuck_after_heal_s`` (how long after the
    heal the last I/O that was in flight at the heal completed) and
    ``max_completion_gap_s`` (longest time inside the window with no I/O completing).
    Returns ``(per kind, baseline (I/Os outside every window), per event)``.
    """
    kind_of, ok_of = io.get("kind", []), io.get("ok", [])
    t0s, t1s = io.get("t0", []), io.get("t1", [])
    per_kind = {k: _new_kind() for k in kinds}
    per_event: list[dict[str, Any]] = []
    wins = []
    for e in events:
        st = {"ios": 0, "max_io_latency_s": 0.0, "max_latency_io": None, "stuck_after_heal_s": 0.0,
              "max_completion_gap_s": 0.0}
        per_event.append(st)
        if e.get("t_inject") is None:
            continue
        end = e.get("t_end") or e.get("t_heal") or (max(t1s) if t1s else e["t_inject"])
        wins.append((e["t_inject"], end, e, st))
    wins.sort(key=lambda w: w[0])
    base = {"ios": 0, "max_io_latency_s": 0.0}
    done_times: list[float] = sorted(t1s)
    for j in range(len(t0s)):
        a, b = t0s[j], t1s[j]
        lat = b - a
        hit = False
        for ws, we, e, st in wins:
            if ws > b:
                break
            if we < a:
                continue
            hit = True
            st["ios"] += 1
            if lat > st["max_io_latency_s"]:
                st["max_io_latency_s"] = round(lat, 3)
                st["max_latency_io"] = {"op": KIND_NAMES.get(kind_of[j]), "ok": bool(ok_of[j]),
                                        "start_after_inject_s": round(a - ws, 3),
                                        "end_after_inject_s": round(b - ws, 3)}
            h = e.get("t_heal")
            if h is not None and a <= h < b:
                st["stuck_after_heal_s"] = round(max(st["stuck_after_heal_s"], b - h), 3)
        if not hit:
            base["ios"] += 1
            base["max_io_latency_s"] = round(max(base["max_io_latency_s"], lat), 3)
    import bisect

    for ws, we, _e, st in wins:
        i = bisect.bisect_left(done_times, ws)
        prev, gap = ws, 0.0
        while i < len(done_times) and done_times[i] <= we:
            gap = max(gap, done_times[i] - prev)
            prev = done_times[i]
            i += 1
        gap = max(gap, we - prev)
        st["max_completion_gap_s"] = round(gap, 3)
    for _ws, _we, e, st in wins:
        pk = per_kind.setdefault(e["kind"], _new_kind())
        pk["count"] += 1
        pk["targets"].append(e.get("target"))
        pk["ios"] += st["ios"]
        if st["max_io_latency_s"] >= pk["max_io_latency_s"]:
            pk["max_io_latency_s"] = st["max_io_latency_s"]
            pk["max_latency_io"] = st["max_latency_io"]
        pk["max_stuck_after_heal_s"] = max(pk["max_stuck_after_heal_s"], st["stuck_after_heal_s"])
        pk["max_completion_gap_s"] = max(pk["max_completion_gap_s"], st["max_completion_gap_s"])
    return per_kind, base, per_event


# =========================================================================== output / CLI


def format_report(r: dict[str, Any]) -> str:
    lines = [f"thrash {'PASSED' if r['ok'] else 'FAILED'}: {r['fault_seconds']}s of faults, "
             f"{r['rounds_completed']} full round(s), seed {r['seed']}, wall {r['wall_seconds']}s",
             f"  cluster: {r['cluster']['mons']} mons, {r['cluster']['osds']} OSDs, {r['cluster']['pool']}, "
             f"service ticket ttl {r['cluster']['auth_service_ticket_ttl']:g}s",
             f"  client via fault proxy: {r['client_routed_via_proxy']}",
             f"  {'FAULT':<17} {'COUNT':>5} {'IOS':>7} {'MAX I/O LATENCY':>16} {'STUCK AFTER HEAL':>17} "
             f"{'NO-COMPLETION GAP':>18}"]
    for k, v in r["faults"].items():
        lines.append(f"  {k:<17} {v['count']:>5} {v['ios']:>7} {v['max_io_latency_s']:>15.3f}s "
                     f"{v['max_stuck_after_heal_s']:>16.3f}s {v['max_completion_gap_s']:>17.3f}s")
    b = r["baseline"]
    lines.append(f"  {'(no fault)':<17} {'':>5} {b['ios']:>7} {b['max_io_latency_s']:>15.3f}s")
    io = r["io"]
    lines.append(f"  I/O: {io.get('write', 0)} writes ({io.get('bytes_written', 0) // MiB} MiB), {io.get('read', 0)} reads "
                 f"({io.get('bytes_read', 0) // MiB} MiB), {io.get('fsync', 0)} fsyncs; I/O errors {io.get('io_errors')}, "
                 f"verify errors during run {io.get('verify_errors')}")
    v = r["verify"]
    d = v.get("device") or {}
    lines.append(f"  verified: {v['acknowledged_blocks']} acknowledged 4 KiB blocks; device read-back "
                 f"{d.get('blocks')} blocks ({(d.get('bytes') or 0) / MiB:.1f} MiB), errors {d.get('errors')}; "
                 f"librbd {(v.get('librbd') or {}).get('blocks')} blocks, errors {(v.get('librbd') or {}).get('errors')}")
    lines.append(f"  total verification errors: {v['errors']}")
    for p in r["client_problems"]:
        lines.append(f"  CLIENT PROBLEM: {p.get('problem')}: {p.get('message')} (fault {p.get('fault')} "
                     f"{p.get('target')})")
    for e in r["harness_errors"]:
        lines.append(f"  harness error: {e}")
    for e in r["errors"][:10]:
        lines.append(f"  error: {e}")
    if r["missing_fault_kinds"]:
        lines.append(f"  fault kinds never injected: {', '.join(r['missing_fault_kinds'])}")
    lines.append(f"  logs: {r['logs']}")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = ThrashOptions()
    p.add_argument("--duration", type=float, default=d.duration,
                   help=f"seconds of fault injection; at least --min-rounds full rounds (default {d.duration:g})")
    p.add_argument("--dir", default=None, help="run directory (default: a new temp dir); must not hold a running cluster")
    p.add_argument("--seed", type=int, default=None, help="random seed (targets, offsets); printed in the report")
    p.add_argument("--release", choices=list(RELEASES), default=None,
                   help="Ceph release of the cluster (default: the host's; see `pyceph cluster start --release`)")
    p.add_argument("--ms-mode", choices=list(MS_MODES), default=None, help="on-wire mode the cluster requires")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--kinds", default=",".join(FAULT_KINDS), help="comma list of fault kinds (default: all)")
    p.add_argument("--min-rounds", type=int, default=d.min_rounds, help="full rounds of all kinds (default 1)")
    p.add_argument("--region", type=int, default=d.region // MiB, help="MiB of the device the checker uses (default 64)")
    p.add_argument("--ticket-ttl", type=float, default=d.ticket_ttl, help="auth service ticket ttl, s (default 60)")
    p.add_argument("--mon-pull-time", type=float, default=d.mon_pull_time,
                   help="seconds the mon cable stays pulled (default 45: the client must hunt for another mon "
                        "within it, as krbd does after its 30 s mon ping timeout)")
    p.add_argument("--osd-pull-time", type=float, default=d.osd_pull_time, help="seconds an OSD cable stays pulled")
    p.add_argument("--hang-timeout", type=float, default=d.hang_timeout,
                   help="an I/O stuck this long after a heal is a client hang (default 120)")
    p.add_argument("--iops", type=float, default=d.iops, help="checker I/O rate cap (default 200; 0 = unlimited)")
    p.add_argument("--keep-cluster", action="store_true", help="leave the cluster running at the end")
    p.add_argument("--client-debug", action="store_true", help="pass --debug to prbd map (the map daemon's log level)")
    p.add_argument("--reference", action="store_true",
                   help="also run fio's rbd engine (librbd, not behind the proxy) and report its stalls "
                        "per fault kind as a reference")


def run_from_args(a: argparse.Namespace, command: str) -> int:
    kinds = tuple(k.strip() for k in a.kinds.split(",") if k.strip())
    bad = [k for k in kinds if k not in FAULT_KINDS]
    if bad:
        print(f"thrash: unknown fault kind(s) {', '.join(bad)}; known: {', '.join(FAULT_KINDS)}", file=sys.stderr)
        return 2
    opts = ThrashOptions(duration=a.duration, dir=a.dir, seed=a.seed, kinds=kinds, min_rounds=a.min_rounds,
                         region=a.region * MiB, ticket_ttl=a.ticket_ttl, mon_pull_time=a.mon_pull_time,
                         osd_pull_time=a.osd_pull_time, hang_timeout=a.hang_timeout, keep_cluster=a.keep_cluster, iops=a.iops,
                         reference=a.reference, client_debug=a.client_debug, release=a.release, ms_mode=a.ms_mode,
                         command=command)
    t = Thrasher(opts)

    def on_signal(signum: int, _frame: Any) -> None:
        t.stop_requested = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        report = t.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    _write_json(t.dir / "report.json", report)
    print(json.dumps(report, indent=1) if a.json else format_report(report))
    return 0 if report["ok"] else 1


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``thrash`` to a subparsers group (``pyceph cluster thrash``)."""
    p = sub.add_parser("thrash", allow_abbrev=False, help="fault-inject a mapped device under verified I/O and report stalls",
                       description="Start a 3-mon/3-OSD dev cluster, map an image through the fault proxy, run "
                                   "a verified writer/reader on it while killing daemons and pulling cables; "
                                   "report the longest I/O stall per fault kind and verify every acknowledged block.")
    add_arguments(p)
    p.set_defaults(func=lambda a: run_from_args(a, "pyceph cluster thrash " + " ".join(
        map(shlex.quote, sys.argv[sys.argv.index("thrash") + 1:] if "thrash" in sys.argv else []))))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_checker"]:
        return checker_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m pyceph.cluster.thrash", allow_abbrev=False, description=__doc__.split("\n\n")[0])
    add_arguments(p)
    a = p.parse_args(argv)
    return run_from_args(a, "python -m pyceph.cluster.thrash " + " ".join(map(shlex.quote, argv)))


if __name__ == "__main__":
    sys.exit(main())
