"""Block mapping layer: loop device over a FUSE file served by a mapping daemon.

The daemon under test runs this very file as a script (see ``__main__`` below)
with a file-backed image, so these tests need no cluster, only root, /dev/fuse
and loop devices.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sys

from pyceph import errors


# --- a file-backed BlockImage ---------------------------------------------------


class FileImage:
    """BlockImage over a local file.  Test knobs: ``flush_delay`` (seconds each flush
    takes), ``fail`` = (start, end, errno) to make I/O touching [start, end) fail,
    ``stats_path`` to publish counters after every flush and on close."""

    def __init__(self, path: str, *, read_only: bool = False, stats_path: str | None = None,
                 flush_delay: float = 0.0, fail: tuple[int, int, int] | None = None,
                 latency: float = 0.0, discard: bool = True):
        self.path = path
        self.read_only = read_only
        self.fd = os.open(path, os.O_RDONLY if read_only else os.O_RDWR)
        self.stats_path = stats_path
        self.flush_delay = flush_delay
        self.fail = fail
        self.latency = latency
        self.counts = {"reads": 0, "writes": 0, "flushes": 0, "closed": 0, "bytes_written": 0,
                       "discards": 0, "zeroes": 0, "bytes_discarded": 0}
        if not discard:  # an image without discard/write_zeroes
            self.discard = self.write_zeroes = None

    @property
    def size(self) -> int:  # follows truncate(1) of the backing file, like an image resize
        return os.fstat(self.fd).st_size

    def _check(self, off: int, n: int) -> None:
        if self.fail and off < self.fail[1] and off + n > self.fail[0]:
            raise errors.make_ex(-self.fail[2], f"injected failure at {off}+{n}")

    async def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        self.counts["reads"] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        return os.pread(self.fd, length, offset)

    async def write(self, offset: int, data: bytes) -> int:
        if self.read_only:
            raise errors.ReadOnlyImage("read-only")
        self._check(offset, len(data))
        self.counts["writes"] += 1
        self.counts["bytes_written"] += len(data)
        if self.latency:
            await asyncio.sleep(self.latency)
        return os.pwrite(self.fd, data, offset)

    async def discard(self, offset: int, length: int) -> None:
        self._check(offset, length)
        self.counts["discards"] += 1
        self.counts["bytes_discarded"] += length
        os.pwrite(self.fd, bytes(length), offset)
        self._publish()

    async def write_zeroes(self, offset: int, length: int) -> None:
        self._check(offset, length)
        self.counts["zeroes"] += 1
        os.pwrite(self.fd, bytes(length), offset)
        self._publish()

    async def flush(self) -> None:
        if self.flush_delay:
            await asyncio.sleep(self.flush_delay)
        self.counts["flushes"] += 1
        self._publish()

    async def close(self) -> None:
        self.counts["closed"] += 1
        self._publish()
        os.close(self.fd)

    def _publish(self) -> None:
        if self.stats_path:
            tmp = self.stats_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.counts, f)
            os.replace(tmp, self.stats_path)


def _daemon_main() -> int:
    from pyceph.block import read_spec, run_daemon

    spec = read_spec()
    o = spec["options"]

    async def open_image():
        if o.get("test_open_hang"):
            await asyncio.sleep(3600)
        if o.get("test_open_error"):
            code, cls = o["test_open_error"]
            raise getattr(errors, cls)(f"cannot open {spec['name']}", errno=code)
        fail = tuple(o["test_fail"]) if o.get("test_fail") else None
        return FileImage(o["test_backing"], read_only=bool(o.get("test_image_ro")),
                         stats_path=o.get("test_stats"), flush_delay=float(o.get("test_flush_delay", 0)),
                         fail=fail, latency=float(o.get("test_latency", 0)),
                         discard=not o.get("test_no_discard"))

    return run_daemon(spec, open_image)


if __name__ == "__main__":
    sys.exit(_daemon_main())


# --- tests ------------------------------------------------------------------------

import contextlib  # noqa: E402
import hashlib  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from pyceph import block  # noqa: E402
from pyceph.block import control, fusefile, loopdev, registry  # noqa: E402

MiB = 1 << 20
DAEMON_ARGV = [sys.executable, os.path.abspath(__file__)]

pytestmark = pytest.mark.timeout(180)


def run(coro):
    return asyncio.run(coro)


# ImageFile request handlers, called directly (no kernel involved)


@pytest.fixture
def small_image(tmp_path):
    p = tmp_path / "img"
    p.write_bytes(bytes(range(256)) * 16)  # 4096 bytes
    img = FileImage(str(p))
    yield img
    with contextlib.suppress(OSError):
        os.close(img.fd)


def test_imagefile_read_clips_at_end_and_getattr_reports_size(small_image):
    ops = fusefile.ImageFile(small_image, read_only=False)
    attrs = run(ops.getattr())
    assert attrs.size == 4096 and attrs.mode & 0o777 == 0o600 and attrs.ino == fusefile.ROOT_INODE
    assert run(ops.read(1, 4090, 100)) == (bytes(range(256)) * 16)[4090:]
    assert run(ops.read(1, 4096, 100)) == b""


def test_imagefile_write_passes_through_and_refuses_growth(small_image):
    ops = fusefile.ImageFile(small_image, read_only=False)
    assert run(ops.write(1, 100, b"abc")) == 3
    assert os.pread(small_image.fd, 3, 100) == b"abc"
    with pytest.raises(fusefile.FuseError) as ei:
        run(ops.write(1, 4095, b"xy"))
    assert ei.value.errno == errno.ENOSPC
    assert ops.stats["write"] == 1 and ops.stats["bytes_written"] == 3


@pytest.mark.parametrize("exc, code", [
    (errors.NoSpace("full"), errno.ENOSPC),
    (errors.TimedOut("slow"), errno.ETIMEDOUT),
    (errors.ImageNotFound("gone"), errno.ENOENT),
    (errors.Blocklisted("bl"), 108),
    (RuntimeError("bug"), errno.EIO),
    (errors.Error("no errno"), errno.EIO),
])
def test_imagefile_maps_image_errors_to_errno(small_image, exc, code):
    async def boom(*a):
        raise exc

    small_image.read = boom
    small_image.write = boom
    small_image.flush = boom
    small_image.discard = boom
    ops = fusefile.ImageFile(small_image, read_only=False)
    for call in (ops.read(1, 0, 10), ops.write(1, 0, b"x"), ops.fsync(1, False), ops.flush(1),
                 ops.fallocate(1, 0, 10, 3)):
        with pytest.raises(fusefile.FuseError) as ei:
            run(call)
        assert ei.value.errno == code
    assert ops.stats["errors"] == 5


def test_imagefile_fsync_and_flush_call_image_flush(small_image):
    ops = fusefile.ImageFile(small_image, read_only=False)
    run(ops.fsync(1, True))
    run(ops.flush(1))
    assert small_image.counts["flushes"] == 2


def test_imagefile_read_only_refuses_writes(small_image):
    ops = fusefile.ImageFile(small_image, read_only=True)
    assert run(ops.getattr()).mode & 0o777 == 0o400
    for flags in (os.O_WRONLY, os.O_RDWR):
        with pytest.raises(fusefile.FuseError) as ei:
            run(ops.open(flags))
        assert ei.value.errno == errno.EROFS
    fh, _ = run(ops.open(os.O_RDONLY))
    assert fh >= 1
    for call in (ops.write(fh, 0, b"x"), ops.fallocate(fh, 0, 4096, 3), ops.access(os.W_OK)):
        with pytest.raises(fusefile.FuseError) as ei:
            run(call)
        assert ei.value.errno == errno.EROFS
    run(ops.fsync(fh, False))
    assert small_image.counts["flushes"] == 0  # nothing to flush on a read-only mapping


# pure helpers


def test_parse_target():
    assert control.parse_target("img") == {"pool": "rbd", "namespace": "", "name": "img", "snap": "-"}
    assert control.parse_target("p/img@s1") == {"pool": "p", "namespace": "", "name": "img", "snap": "s1"}
    assert control.parse_target("p/ns/img") == {"pool": "p", "namespace": "ns", "name": "img", "snap": "-"}
    assert control.parse_target("/dev/loop3") == "/dev/loop3"
    for bad in ("a/b/c/d", "p/", "/img"[1:] + "/"):
        with pytest.raises(errors.InvalidArgumentError):
            control.parse_target(bad)


def test_error_lines_become_typed_errors():
    e = control._parse_error_line("error 2 ImageNotFound rbd/x: no such image")
    assert type(e) is errors.ImageNotFound and e.errno == errno.ENOENT and "no such image" in str(e)
    e = control._parse_error_line("error 13 SomethingForeign denied")
    assert isinstance(e, errors.PermissionDeniedError) and e.errno == errno.EACCES
    e = control._parse_error_line("error 5 OSError boom")
    assert isinstance(e, errors.OSError) and e.errno == errno.EIO


def test_loop_structs_match_linux_abi():
    assert loopdev._INFO64.size == 232
    cfg = loopdev._CONFIG_HEAD.pack(3, 0) + loopdev._pack_info(5, "pyceph:" + "x" * 100) + loopdev._CONFIG_TAIL
    assert len(cfg) == 304
    info = loopdev._INFO64.unpack(loopdev._pack_info(5, "pyceph:p/i"))
    assert info[8] == 5 and info[9].rstrip(b"\0") == b"pyceph:p/i"
    assert len(loopdev._pack_info(0, "y" * 200)) == 232  # long labels are cut, not overflowed
    assert loopdev.device_index("/dev/loop12") == 12
    with pytest.raises(errors.InvalidArgumentError):
        loopdev.device_index("/dev/sda")


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    d = tmp_path / "run"
    monkeypatch.setenv(registry.RUN_DIR_ENV, str(d))
    return d


_NAMED = ("import ctypes, time; ctypes.CDLL(None).prctl(15, b'pyceph-map', 0, 0, 0); "
          "print('ok', flush=True); time.sleep(60)")


def test_registry_roundtrip_and_stale_records_are_dropped(run_dir):
    daemon = subprocess.Popen([sys.executable, "-c", _NAMED], stdout=subprocess.PIPE)  # named like a map daemon
    me = os.getpid()
    try:
        assert daemon.stdout.readline() == b"ok\n"
        live = {"id": "10", "pool": "p", "namespace": "", "name": "a", "snap": "-", "device": "/dev/loop10",
                "pid": daemon.pid, "pid_start": registry.process_start_time(daemon.pid), "mountpoint": ""}
        dead_proc = subprocess.Popen(["true"])
        dead_proc.wait()
        dead = dict(live, id="2", name="b", device="/dev/loop2", pid=dead_proc.pid)
        reused = dict(live, id="3", name="c", device="/dev/loop3", pid_start=1)  # pid reused
        not_ours = dict(live, id="4", name="d", device="/dev/loop4", pid=me,  # not a map daemon
                        pid_start=registry.process_start_time(me))
        for r in (live, dead, reused, not_ours):
            registry.write_record(r)
        assert [r["id"] for r in registry.iter_records()] == ["2", "3", "4", "10"]
        shown = block.showmapped()
        assert shown == [{"id": "10", "pool": "p", "namespace": "", "name": "a", "snap": "-",
                          "device": "/dev/loop10"}]
        assert sorted(_ls(run_dir / "mappings")) == ["10.json"]
    finally:
        daemon.kill()
        daemon.wait()


def test_zombie_counts_as_dead():
    p = subprocess.Popen(["true"])
    time.sleep(0.3)  # exited but not yet reaped
    assert registry.process_start_time(p.pid) is None
    p.wait()


# the real thing: daemon process, FUSE, loop device


def _ls(path) -> list[str]:
    return os.listdir(path) if os.path.isdir(path) else []


def _used_loops() -> dict[int, str]:
    out = {}
    for n in os.listdir("/sys/block"):
        if n.startswith("loop") and n[4:].isdigit():
            bf = loopdev.backing_file(int(n[4:]))
            if bf is not None:
                out[int(n[4:])] = bf
    return out


@pytest.fixture
def mapper(run_dir, tmp_path):
    """map(size, **options) -> (device, backing path, stats path); unmaps everything after."""
    made: list[str] = []
    mounts: list[str] = []

    def do_map(size=64 * MiB, name="img", read_only=False, backing=None, **opts):
        if backing is None:
            backing = f"/dev/shm/pyceph-test-{os.getpid()}-{name}-{len(made)}"
            with open(backing, "wb") as f:
                f.truncate(size)
        stats = f"{backing}.{len(made)}.stats"
        made.append(backing)
        opts = dict({"test_backing": backing, "test_stats": stats}, **opts)
        dev = block.map_image({"pool": "rbd", "name": name, "read_only": read_only, "options": opts},
                              DAEMON_ARGV, timeout=30)
        return dev, backing, stats

    do_map.mounts = mounts
    yield do_map
    for m in mounts:
        subprocess.run(["umount", m], capture_output=True)
    for rec in list(registry.iter_records()):
        with contextlib.suppress(errors.Error):
            block.unmap(rec["device"], timeout=30, force=True)
    for i, b in enumerate(made):
        for p in (b, f"{b}.{i}.stats"):
            with contextlib.suppress(OSError):
                os.unlink(p)


def sh(*cmd, check=True):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} failed ({p.returncode}): {p.stdout}{p.stderr}")
    return p


def read_stats(path):
    with open(path) as f:
        return json.load(f)


def test_map_ext4_mount_write_unmap_and_verify_backing_file(mapper, tmp_path, run_dir):
    before = set(_used_loops())
    dev, backing, stats = mapper(96 * MiB, name="ext")
    idx = loopdev.device_index(dev)
    assert idx not in before and os.path.exists(dev)
    assert int(sh("blockdev", "--getsize64", dev).stdout) == 96 * MiB
    with open(dev, "rb") as f:
        st = loopdev.get_status(f.fileno())
    assert st.file_name == "pyceph:rbd/ext" and st.autoclear and not st.read_only

    shown = block.showmapped()
    assert shown == [{"id": str(idx), "pool": "rbd", "namespace": "", "name": "ext", "snap": "-", "device": dev}]
    rec = json.loads((run_dir / "mappings" / f"{idx}.json").read_text())
    assert set(rec) >= {"id", "pool", "namespace", "name", "snap", "device", "pid", "mountpoint"}
    # the FUSE mount is private to the daemon: not visible in our namespace
    assert not registry.is_mounted(rec["mountpoint"])

    sh("mkfs.ext4", "-q", "-F", dev)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    sh("mount", dev, str(mnt))
    mapper.mounts.append(str(mnt))
    payload = os.urandom(3 * MiB + 123)
    (mnt / "hello.txt").write_text("hello pyceph\n")
    (mnt / "blob.bin").write_bytes(payload)

    with pytest.raises(errors.ImageBusy) as ei:
        block.unmap(dev, timeout=30)
    assert ei.value.errno == errno.EBUSY and "mounted" in str(ei.value)
    assert block.showmapped() == shown  # still mapped after the refused unmap

    sh("umount", str(mnt))
    mapper.mounts.clear()
    block.unmap("rbd/ext", timeout=30)
    assert block.showmapped() == []
    assert idx not in _used_loops()
    assert _ls(run_dir / "mappings") == []
    assert _ls(run_dir / "mnt") == []
    counts = read_stats(stats)
    assert counts["closed"] == 1 and counts["flushes"] >= 1

    # the backing file alone holds the file system: read it with debugfs (no kernel)
    out = sh("debugfs", "-R", "cat /hello.txt", backing).stdout
    assert out == "hello pyceph\n"
    dump = tmp_path / "blob.out"
    sh("debugfs", "-R", f"dump /blob.bin {dump}", backing)
    assert hashlib.sha256(dump.read_bytes()).digest() == hashlib.sha256(payload).digest()
    sh("e2fsck", "-fn", backing)


def test_fsync_on_device_waits_for_image_flush(mapper):
    dev, backing, stats = mapper(32 * MiB, test_flush_delay=0.5)
    data = os.urandom(MiB)
    fd = os.open(dev, os.O_WRONLY)
    try:
        os.pwrite(fd, data, 5 * MiB)  # buffered: sits in the device's page cache
        flushes = read_stats(stats)["flushes"] if os.path.exists(stats) else 0
        t0 = time.monotonic()
        os.fsync(fd)
        took = time.monotonic() - t0
    finally:
        os.close(fd)
    assert took >= 0.45, f"fsync returned after {took:.3f}s, before the image's 0.5s flush"
    assert read_stats(stats)["flushes"] > flushes
    with open(backing, "rb") as f:
        f.seek(5 * MiB)
        assert f.read(MiB) == data  # acknowledged by the image before fsync returned
    s = block.mapping_stats(dev)
    assert s["fsync"] >= 1 and s["errors"] == 0


def test_direct_io_data_path_roundtrip(mapper):
    dev, backing, _ = mapper(64 * MiB)
    blob = os.urandom(8 * MiB)
    p = subprocess.run(["dd", f"of={dev}", "bs=4M", "oflag=direct", "seek=2", "iflag=fullblock"],
                       input=blob, capture_output=True)
    assert p.returncode == 0, p.stderr
    with open(backing, "rb") as f:
        f.seek(8 * MiB)
        assert f.read(8 * MiB) == blob
    p = subprocess.run(["dd", f"if={dev}", "bs=4M", "iflag=direct", "skip=2", "count=2"], capture_output=True)
    assert p.returncode == 0 and p.stdout == blob
    s = block.mapping_stats(dev)
    assert s["max_write_size"] > 128 * 1024  # large requests, not page-sized ones
    assert s["bytes_written"] >= 8 * MiB


def _queue(dev: str, name: str) -> int:
    with open(f"/sys/block/{os.path.basename(dev)}/queue/{name}") as f:
        return int(f.read())


def test_discard_and_write_zeroes_reach_the_image(mapper):
    dev, backing, stats = mapper(16 * MiB)
    assert _queue(dev, "discard_max_bytes") > 0 and _queue(dev, "discard_granularity") == 4096
    with open(backing, "r+b") as f:
        f.write(b"\xab" * 16 * MiB)
    sh("blkdiscard", "-o", str(4 * MiB), "-l", str(MiB), dev)  # REQ_OP_DISCARD -> PUNCH_HOLE
    counts = read_stats(stats)
    assert counts["discards"] >= 1 and counts["bytes_discarded"] == MiB
    sh("blkdiscard", "-z", "-o", str(MiB), "-l", str(MiB), dev)  # BLKZEROOUT -> WRITE_ZEROES
    sh("fallocate", "-z", "-o", str(8 * MiB), "-l", str(MiB), dev)  # REQ_NOUNMAP -> ZERO_RANGE
    counts = read_stats(stats)
    # WRITE_ZEROES becomes ZERO_RANGE with REQ_NOUNMAP, else PUNCH_HOLE (loop.c); either zeroes
    assert counts["zeroes"] >= 1 and counts["discards"] + counts["zeroes"] == 3
    with open(backing, "rb") as f:
        data = f.read()
    for off in (MiB, 4 * MiB, 8 * MiB):
        assert data[off:off + MiB] == bytes(MiB), off
    untouched = b"\xab" * MiB
    for off in (0, 2 * MiB, 3 * MiB, 5 * MiB, 7 * MiB, 9 * MiB, 15 * MiB):
        assert data[off:off + MiB] == untouched, off
    s = block.mapping_stats(dev)
    assert s["discard"] + s["write_zeroes"] == 3 and s["errors"] == 0


def test_notrim_advertises_no_discard_and_zeroout_falls_back_to_writes(mapper):
    dev, backing, stats = mapper(16 * MiB, notrim=True)
    assert _queue(dev, "discard_max_bytes") == 0 and _queue(dev, "write_zeroes_max_bytes") == 0
    with open(backing, "r+b") as f:
        f.write(b"\xab" * 16 * MiB)
    p = sh("blkdiscard", "-o", str(4 * MiB), "-l", str(MiB), dev, check=False)
    assert p.returncode != 0 and "Operation not supported" in p.stderr
    sh("blkdiscard", "-z", "-o", str(MiB), "-l", str(MiB), dev)  # the kernel writes zero pages instead
    with open(backing, "rb") as f:
        data = f.read()
    assert data[MiB:2 * MiB] == bytes(MiB) and data[4 * MiB:5 * MiB] == b"\xab" * MiB
    s = block.mapping_stats(dev)
    assert s["discard"] == s["write_zeroes"] == 0 and s["bytes_written"] >= MiB
    assert block.find_mappings(dev)[0]["trim"] is False


def test_image_without_discard_keeps_its_data(mapper):
    dev, backing, stats = mapper(16 * MiB, test_no_discard=True)
    with open(backing, "r+b") as f:
        f.write(b"\xab" * 16 * MiB)
    sh("blkdiscard", "-o", str(4 * MiB), "-l", str(MiB), dev, check=False)  # EOPNOTSUPP, maybe swallowed
    sh("blkdiscard", "-z", "-o", str(MiB), "-l", str(MiB), dev)  # falls back to writing zeroes
    with open(backing, "rb") as f:
        data = f.read()
    assert data[MiB:2 * MiB] == bytes(MiB) and data[4 * MiB:5 * MiB] == b"\xab" * MiB
    assert block.mapping_stats(dev)["errors"] == 0


def test_device_follows_image_resize(mapper):
    dev, backing, _ = mapper(16 * MiB)

    def wait_size(want):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            size = int(sh("blockdev", "--getsize64", dev).stdout)
            if size == want:
                return
            time.sleep(0.1)
        raise AssertionError(f"{dev} is {size} bytes, not {want}")

    os.truncate(backing, 40 * MiB)  # the image grows
    wait_size(40 * MiB)
    blob = os.urandom(MiB)
    p = subprocess.run(["dd", f"of={dev}", "bs=1M", "seek=38", "oflag=direct"], input=blob, capture_output=True)
    assert p.returncode == 0, p.stderr
    with open(backing, "rb") as f:
        f.seek(38 * MiB)
        assert f.read(MiB) == blob
    os.truncate(backing, 8 * MiB)  # and shrinks
    wait_size(8 * MiB)


def test_image_errors_reach_the_reader_as_eio(mapper):
    dev, _, _ = mapper(16 * MiB, test_fail=[4 * MiB, 5 * MiB, errno.ETIMEDOUT])
    fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
    try:
        import mmap
        buf = mmap.mmap(-1, 65536)
        assert os.preadv(fd, [buf], 0) == 65536  # outside the failing range
        with pytest.raises(OSError) as ei:
            os.preadv(fd, [buf], 4 * MiB + 65536)
        assert ei.value.errno in (errno.EIO, errno.ETIMEDOUT)
    finally:
        os.close(fd)
    assert block.mapping_stats(dev)["errors"] >= 1


def test_xfs_then_read_only_map_refuses_writes(mapper, tmp_path):
    dev, backing, _ = mapper(320 * MiB, name="x")
    sh("mkfs.xfs", "-q", "-f", dev)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    sh("mount", dev, str(mnt))
    mapper.mounts.append(str(mnt))
    payload = os.urandom(5 * MiB)
    (mnt / "data.bin").write_bytes(payload)
    sh("umount", str(mnt))
    mapper.mounts.clear()
    block.unmap(dev, timeout=30)

    dev2, _, stats = mapper(name="x", read_only=True, backing=backing)
    with open(dev2, "rb") as f:
        assert loopdev.get_status(f.fileno()).read_only
    assert sh("blockdev", "--getro", dev2).stdout.strip() == "1"
    with pytest.raises(OSError) as ei:
        fd = os.open(dev2, os.O_WRONLY)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
    assert ei.value.errno in (errno.EROFS, errno.EPERM, errno.EACCES)
    sh("mount", "-o", "ro", dev2, str(mnt))
    mapper.mounts.append(str(mnt))
    assert (mnt / "data.bin").read_bytes() == payload
    sh("umount", str(mnt))
    mapper.mounts.clear()
    block.unmap(dev2, timeout=30)
    assert read_stats(stats)["writes"] == 0


def test_image_read_only_flag_makes_a_read_only_mapping(mapper):
    dev, _, _ = mapper(16 * MiB, test_image_ro=True)
    with open(dev, "rb") as f:
        assert loopdev.get_status(f.fileno()).read_only
    rec = block.find_mappings(dev)[0]
    assert rec["read_only"] is True


def test_failing_image_factory_is_reported_and_leaves_nothing(mapper, run_dir):
    before = _used_loops()
    with pytest.raises(errors.ImageNotFound) as ei:
        mapper(16 * MiB, name="nope", test_open_error=[errno.ENOENT, "ImageNotFound"])
    assert "cannot open nope" in str(ei.value) and ei.value.errno == errno.ENOENT
    with pytest.raises(errors.PermissionDeniedError):
        mapper(16 * MiB, name="nope", test_open_error=[errno.EACCES, "PermissionDeniedError"])
    assert _used_loops() == before
    assert _ls(run_dir / "mappings") == []
    assert _ls(run_dir / "mnt") == []
    with open("/proc/self/mountinfo") as f:
        assert str(run_dir) not in f.read()
    assert block.showmapped() == []


def test_daemon_dying_silently_is_an_error(run_dir):
    with pytest.raises(errors.IOError) as ei:
        block.map_image({"pool": "rbd", "name": "x"}, [sys.executable, "-c", "import sys; sys.exit(3)"], timeout=10)
    assert "status 3" in str(ei.value)


def test_map_timeout_kills_the_daemon(run_dir):
    t0 = time.monotonic()
    with pytest.raises(errors.TimedOut):
        block.map_image({"pool": "rbd", "name": "x"}, [sys.executable, "-c", "import time; time.sleep(60)"],
                        timeout=1)
    assert time.monotonic() - t0 < 15


def test_unmap_of_unmapped_targets(run_dir):
    with pytest.raises(block.NotMapped) as ei:
        block.unmap("/dev/loop7")
    assert isinstance(ei.value, errors.ImageNotFound) and "not a pyceph-mapped device" in str(ei.value)
    with pytest.raises(errors.ImageNotFound, match="rbd/ns/img@s: not a mapped image or snapshot"):
        block.unmap("rbd/ns/img@s")


def test_unmap_refuses_device_open_by_another_process(mapper):
    dev, _, _ = mapper(16 * MiB)
    holder = subprocess.Popen(["sh", "-c", f"exec sleep 60 < {dev}"])
    try:
        time.sleep(0.3)
        with pytest.raises(errors.ImageBusy, match=f"open by pid {holder.pid}"):
            block.unmap(dev, timeout=10)
    finally:
        holder.kill()
        holder.wait()
    block.unmap(dev, timeout=30)
    assert block.showmapped() == []


def test_killed_daemon_is_cleaned_up(mapper, run_dir):
    dev, _, _ = mapper(16 * MiB)
    idx = loopdev.device_index(dev)
    rec = block.find_mappings(dev)[0]
    os.kill(rec["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while registry.process_start_time(rec["pid"]) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert block.showmapped() == []  # stale record dropped
    deadline = time.monotonic() + 10
    while idx in _used_loops() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert idx not in _used_loops()  # autoclear/cleanup released the loop device
    assert _ls(run_dir / "mappings") == [] and _ls(run_dir / "mnt") == []


def test_sigterm_is_an_orderly_unmap(mapper, run_dir):
    dev, _, stats = mapper(16 * MiB)
    rec = block.find_mappings(dev)[0]
    os.kill(rec["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 20
    while registry.daemon_alive(rec) and time.monotonic() < deadline:
        registry.reap(rec["pid"])
        time.sleep(0.05)
    assert not registry.daemon_alive(rec)
    assert read_stats(stats)["closed"] == 1
    assert _ls(run_dir / "mappings") == []
    assert loopdev.device_index(dev) not in _used_loops()


def test_same_image_twice_and_unmap_by_spec(mapper):
    dev1, backing, _ = mapper(16 * MiB, name="twice")
    dev2, _, _ = mapper(name="twice", backing=backing)
    assert dev1 != dev2
    assert [m["device"] for m in block.showmapped()] == sorted([dev1, dev2], key=loopdev.device_index)
    block.unmap("rbd/twice")
    assert len(block.showmapped()) == 1
    block.unmap("twice")
    assert block.showmapped() == []


def test_requests_are_served_concurrently(mapper):
    # every image I/O takes 50 ms: only concurrency makes 8 MiB fast
    dev, _, _ = mapper(32 * MiB, test_latency=0.05)
    t0 = time.monotonic()
    sh("dd", "if=/dev/zero", f"of={dev}", "bs=4M", "count=2", "oflag=direct")
    took = time.monotonic() - t0
    s = block.mapping_stats(dev)
    serial = s["write"] * 0.05
    assert s["max_inflight"] >= 4, s
    assert took < serial / 2, (took, serial)


def _dd_rate(args) -> float:
    p = sh("dd", *args)
    line = p.stderr.strip().splitlines()[-1]  # "... bytes ... copied, 0.5 s, 1.2 GB/s"
    nbytes, secs = int(line.split()[0]), float(line.split(", ")[-2].split()[0])
    return nbytes / secs / 1e6


def test_sequential_throughput_ceiling(mapper, capsys):
    """512 MiB with 4 MiB direct I/O through the loop device onto a tmpfs file: the
    FUSE layer's ceiling.  Figures are printed; the floor only catches collapses."""
    figures = {}
    for loop_dio in (True, False):
        dev, _, _ = mapper(512 * MiB, name=f"bench{int(loop_dio)}", direct_io=loop_dio)
        w = _dd_rate(["if=/dev/zero", f"of={dev}", "bs=4M", "count=128", "oflag=direct"])
        r = _dd_rate([f"if={dev}", "of=/dev/null", "bs=4M", "count=128", "iflag=direct"])
        figures["loop-dio" if loop_dio else "loop-buffered"] = (w, r)
        block.unmap(dev, timeout=60)
    with capsys.disabled():
        for k, (w, r) in figures.items():
            print(f"\n  {k}: write {w:.0f} MB/s, read {r:.0f} MB/s", end="")
    assert min(figures["loop-dio"]) > 50


def test_sigterm_while_opening_the_image_aborts_the_map(run_dir, tmp_path):
    # the factory never returns: map_image times out, the daemon is told to stop
    # and must report nothing, leave nothing behind, and exit
    backing = tmp_path / "img"
    backing.write_bytes(bytes(MiB))
    spec = {"pool": "rbd", "name": "slow", "options": {"test_backing": str(backing), "test_open_hang": True}}
    with pytest.raises(errors.TimedOut):
        block.map_image(spec, DAEMON_ARGV, timeout=2)
    assert _ls(run_dir / "mappings") == [] and _ls(run_dir / "mnt") == []
    logs = [(run_dir / "log" / n).read_text() for n in _ls(run_dir / "log")]
    assert any("interrupted by a signal" in text for text in logs), logs


# --- the control socket of a real daemon (pyceph.block.ctlproto; docs/CONTROL.md) -----------

from pyceph.block import ctlproto  # noqa: E402


def _sock(dev):
    return block.find_mappings(dev)[0]["socket"]


def test_configure_two_settings_in_one_transaction(mapper):
    dev, _, _ = mapper(16 * MiB)
    assert block.info(dev)["settings"]["queue_depth"] == 64
    assert block.configure(dev, {"queue_depth": "8"}) == {"queue_depth": 8}
    # the kernel's cap follows (fusectl, in the daemon's own mount namespace)
    pid = block.info(dev)["pid"]
    mnt = block.find_mappings(dev)[0]["mountpoint"]
    with open(f"/proc/{pid}/mountinfo") as f:
        (minor,) = [ln.split()[2].split(":")[1] for ln in f if ln.split()[4] == mnt]
    conn = f"/proc/{pid}/root/sys/fs/fuse/connections/{minor}"
    with open(f"{conn}/max_background") as f1, open(f"{conn}/congestion_threshold") as f2:
        assert (f1.read().strip(), f2.read().strip()) == ("8", "6")
    # this file-backed image has no OSD client: the second setting cannot apply, so neither does
    with pytest.raises(ctlproto.ControlError) as ei:
        block.configure(dev, {"queue_depth": "32", "osd_request_timeout": "30"})
    assert ei.value.status == ctlproto.E_NOT_SUPPORTED
    with pytest.raises(ctlproto.ControlError) as ei:
        block.configure(dev, {"queue_depth": "16", "no_such_option": "1"})
    assert ei.value.status == ctlproto.E_UNKNOWN_SETTING and "no_such_option" in ei.value.message
    with pytest.raises(ctlproto.ControlError) as ei:
        block.configure(dev, {"queue_depth": "0"})
    assert ei.value.status == ctlproto.E_BAD_VALUE and ei.value.errno == errno.EINVAL
    assert block.configure(dev, {"queue_depth": "12"}, dry_run=True) == {"queue_depth": 8}
    i = block.info(dev)
    assert i["settings"]["queue_depth"] == 8 and i["device"] == dev and i["name"] == "img"
    assert block.refresh(dev) == 16 * MiB


def test_malformed_input_gets_an_error_reply_and_idle_half_messages_are_closed(mapper):
    dev, _, _ = mapper(16 * MiB, ctl_idle_timeout=0.3)
    path = _sock(dev)

    def raw(data, shut=True):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(path)
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out

    assert raw(b"hello there\n") == b"error 22 InvalidArgumentError unknown command\n"
    assert raw(b"\xff" * 300).startswith(b"error 74 ProtocolError")
    assert ctlproto.decode(raw(b"\0PCT\x09" + bytes(7))).get("status") == ctlproto.E_VERSION
    assert ctlproto.decode(raw(ctlproto.request(42))).get("message") == "daemon too old for operation 42"
    t0 = time.monotonic()
    half = ctlproto.decode(raw(ctlproto.request(ctlproto.OP_STATS)[:5], shut=False))
    assert half.get("status") == ctlproto.E_IDLE_TIMEOUT and time.monotonic() - t0 < 5
    assert json.loads(raw(b"stats\n"))["errors"] == 0  # an older CLI's text command still works


def test_leaked_connections_beyond_the_cap_do_not_block_unmap(mapper, run_dir):
    dev, _, _ = mapper(16 * MiB, ctl_idle_timeout=0.5, ctl_max_conns=4, keep_log=True)
    path = _sock(dev)
    leaked = []
    try:
        for _ in range(40):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(path)
            leaked.append(s)
        t0 = time.monotonic()
        block.unmap(dev, timeout=20)
        assert time.monotonic() - t0 < 15
    finally:
        for s in leaked:
            s.close()
    assert block.showmapped() == []
    log_lines = [ln for f in _ls(run_dir / "log") for ln in open(run_dir / "log" / f)]
    refusals = [ln for ln in log_lines if "refusing another" in ln]
    assert 1 <= len(refusals) <= 10  # rate-limited: at most 10 warnings a minute


def test_spec_and_secret_are_not_in_the_daemon_environment_or_argv(mapper, run_dir):
    secret = "AQBzZWNyZXRzZWNyZXRzZWNyZXRzZWNyZXQ9PT09PQ=="
    backing = f"/dev/shm/pyceph-test-{os.getpid()}-sec"
    with open(backing, "wb") as f:
        f.truncate(16 * MiB)
    try:
        dev = block.map_image({"pool": "rbd", "name": "sec", "secret": secret,
                               "options": {"test_backing": backing, "keep_log": True}}, DAEMON_ARGV, timeout=30)
        pid = block.find_mappings(dev)[0]["pid"]
        for what in ("environ", "cmdline"):
            with open(f"/proc/{pid}/{what}", "rb") as f:
                data = f.read()
            assert secret.encode() not in data and b"PYCEPH_MAP_SPEC=" not in data, what
        with open(f"/proc/{pid}/comm") as f:
            assert f.read().strip() == "pyceph-map"
        with open(f"/proc/{pid}/limits") as f:
            nofile = [ln.split()[3:5] for ln in f if ln.startswith("Max open files")][0]
        assert nofile[0] == nofile[1]  # soft open-file limit raised to the hard one
        assert secret not in json.dumps(block.info(dev))
        block.unmap(dev, timeout=30)
        for f in _ls(run_dir / "log"):
            assert secret not in (run_dir / "log" / f).read_text()
    finally:
        os.unlink(backing)


# --- registry trust --------------------------------------------------------------------


def test_run_dir_modes(tmp_path, monkeypatch):
    d = tmp_path / "r"
    monkeypatch.setenv(registry.RUN_DIR_ENV, str(d))
    assert registry.subdir("mappings") == str(d / "mappings")
    assert os.stat(d).st_mode & 0o777 == 0o700
    os.chmod(d, 0o755)  # ours, writable by nobody else (an older pyceph's): made private
    registry.subdir("mappings")
    assert os.stat(d).st_mode & 0o777 == 0o700
    os.chmod(d, 0o775)  # writable by the group: others may have planted files
    with pytest.raises(registry.UntrustedRunDir, match="mode 0700"):
        registry.subdir("mappings")
    os.chmod(d, 0o700)
    link = tmp_path / "link"
    link.symlink_to(d)
    monkeypatch.setenv(registry.RUN_DIR_ENV, str(link))
    with pytest.raises(registry.UntrustedRunDir, match="symlink"):
        list(registry.iter_records())
