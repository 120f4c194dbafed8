"""``prbd map``: an RBD image as a real /dev/loopN, checked against librbd.

Filesystems made on a mapped device must be intact in ``rbd export``; fsync on
the device must mean "on the OSDs" (librbd sees the data before unmap);
read-only maps refuse writes; unsupported features, missing images and busy
devices fail clearly and leave nothing behind.  Needs root, /dev/fuse and loop
devices.  The mapping registry lives in a private run dir ($PYCEPH_RUN_DIR).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
from pathlib import Path

import pytest

from .helpers import pmap, prbd, rbd, rbd_export, read_dev, run, uniq

MiB = 1 << 20
KiB = 1 << 10
PACIFIC_DEFAULT_EXTRA = ("exclusive-lock", "object-map", "fast-diff", "deep-flatten")
SHOWMAPPED_FIELDS = ["id", "pool", "namespace", "name", "snap", "device"]


# -- helpers ---------------------------------------------------------------------------


def showmapped(cluster) -> list[dict]:
    return json.loads(prbd(cluster, "showmapped", "--format", "json").stdout)


def loop_backing_files() -> dict[str, str]:
    """/dev/loopN -> backing file of every attached loop device."""
    out = json.loads(run(["losetup", "-J", "-l"]).stdout or b'{"loopdevices": []}')
    return {d["name"]: d.get("back-file") or "" for d in out.get("loopdevices", [])}


def mount(dev: str, where: Path, *opts: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    args = ["mount"]
    if opts:
        args += ["-o", ",".join(opts)]
    run([*args, dev, str(where)])


def umount(where: Path) -> None:
    run(["umount", str(where)])


@contextlib.contextmanager
def mounted(dev: str, where: Path, *opts: str):
    mount(dev, where, *opts)
    try:
        yield where
    finally:
        run(["umount", str(where)], check=False)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_nothing_left(run_dir: Path) -> None:
    """No registry record, control socket, FUSE mount point or loop device of ours."""
    mappings = run_dir / "mappings"
    assert not (list(mappings.iterdir()) if mappings.exists() else [])
    mnt = run_dir / "mnt"
    assert not (list(mnt.iterdir()) if mnt.exists() else [])
    ours = {dev: f for dev, f in loop_backing_files().items() if str(run_dir) in f}
    assert not ours


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture
def image(cluster, run_dir):
    """Factory: ``image(size, *rbd_create_args)`` creates a layering-only image with
    librbd and returns its name; all are removed after the test."""
    made = []

    def make(size: str, *args: str, tool=rbd) -> str:
        name = uniq("h6-map")
        tool(cluster, "create", "--size", size, *(args or ("--image-feature", "layering")), f"rbd/{name}")
        made.append(name)
        return name

    yield make
    for spec in showmapped(cluster):
        if spec["name"] in made:
            prbd(cluster, "unmap", "-o", "force", spec["device"], check=False)
    for name in made:
        rbd(cluster, "rm", "--no-progress", f"rbd/{name}", check=False)


# -- filesystems -----------------------------------------------------------------------


FS = {
    "ext4": (["mkfs.ext4", "-q", "-F"], "64M"),
    "xfs": (["mkfs.xfs", "-q", "-f"], "320M"),  # mkfs.xfs refuses < 300 MB
}


@pytest.mark.parametrize("fstype", list(FS))
def test_filesystem_survives_in_rbd_export(cluster, run_dir, image, tmp_path, fstype):
    mkfs, size = FS[fstype]
    name = image(size, tool=prbd)  # created by pyceph itself
    rnd = random.Random(fstype)
    files = {
        "big.bin": rnd.randbytes(3 * MiB + 123),
        "hello.txt": b"hello from pyceph\n" * 100,
        "zeros.bin": bytes(MiB),
        **{f"dir/sub/n{i}.bin": rnd.randbytes(rnd.randint(1, 40 * KiB)) for i in range(8)},
    }
    dev = pmap(cluster, f"rbd/{name}")

    # showmapped, plain and JSON, while mapped
    rows = showmapped(cluster)
    assert rows == [{"id": dev.removeprefix("/dev/loop"), "pool": "rbd", "namespace": "", "name": name,
                     "snap": "-", "device": dev}]
    assert list(rows[0]) == SHOWMAPPED_FIELDS
    plain = prbd(cluster, "showmapped").stdout.decode().splitlines()
    assert len(plain) == 2
    assert plain[1].split() == [rows[0]["id"], "rbd", name, "-", dev]  # empty namespace column

    run([*mkfs, dev])
    mnt = tmp_path / "mnt"
    with mounted(dev, mnt):
        for rel, data in files.items():
            (mnt / rel).parent.mkdir(parents=True, exist_ok=True)
            (mnt / rel).write_bytes(data)
        for rel, data in files.items():
            assert (mnt / rel).read_bytes() == data
        run(["sync"])
    with mounted(dev, mnt):  # again: now the reads come from the device
        for rel, data in files.items():
            assert (mnt / rel).read_bytes() == data
    prbd(cluster, "unmap", dev)
    assert showmapped(cluster) == []
    assert prbd(cluster, "showmapped").stdout == b""
    assert_nothing_left(run_dir)

    # the filesystem as librbd sees it
    exported = tmp_path / "export.img"
    rbd(cluster, "export", "--no-progress", f"rbd/{name}", str(exported))
    if fstype == "ext4":
        run(["e2fsck", "-f", "-n", str(exported)])
        out = run(["debugfs", "-R", "cat /big.bin", str(exported)]).stdout
        assert out == files["big.bin"]
    else:
        run(["xfs_repair", "-n", "-f", str(exported)])
    with mounted(str(exported), tmp_path / "ro", "ro", "loop"):
        for rel, data in files.items():
            assert sha((tmp_path / "ro" / rel).read_bytes()) == sha(data), rel


# -- fsync means "on the OSDs" ----------------------------------------------------------


def test_fsync_on_device_reaches_osds(cluster, run_dir, image, tmp_path):
    name = image("16M", "--image-feature", "layering", "--object-size", "1M")
    dev = pmap(cluster, f"rbd/{name}")
    rnd = random.Random(42)
    # (offset, data, dd flags): direct I/O across an object boundary, then buffered
    regions = [
        (MiB - 32 * KiB, rnd.randbytes(MiB + 64 * KiB), ["oflag=direct", "conv=fsync,notrunc"]),
        (5 * MiB - 8 * KiB, rnd.randbytes(300 * KiB), ["conv=fsync,notrunc"]),
        (16 * MiB - 12 * KiB, rnd.randbytes(12 * KiB), ["oflag=direct", "conv=fsync,notrunc"]),  # the end
    ]
    for i, (off, data, flags) in enumerate(regions):
        src = tmp_path / f"chunk{i}"
        src.write_bytes(data)
        run(["dd", f"if={src}", f"of={dev}", "bs=4096", f"seek={off // 4096}", "status=none", *flags])
        # still mapped: librbd reads straight from the OSDs
        theirs = rbd_export(cluster, f"rbd/{name}")
        assert theirs[off : off + len(data)] == data, f"region {i} not on the OSDs after fsync"
    # and a plain write()+fsync() from Python
    fd = os.open(dev, os.O_WRONLY)
    try:
        os.pwrite(fd, b"P" * 4096 * 3, 9 * MiB)
        os.fsync(fd)
    finally:
        os.close(fd)
    theirs = rbd_export(cluster, f"rbd/{name}")
    assert theirs[9 * MiB : 9 * MiB + 3 * 4096] == b"P" * 3 * 4096
    for off, data, _ in regions:
        assert theirs[off : off + len(data)] == data
    prbd(cluster, "unmap", f"rbd/{name}")  # by pool/image spec
    assert_nothing_left(run_dir)


# -- read-only maps ---------------------------------------------------------------------


@pytest.mark.parametrize("ro_args", [["-o", "ro"], ["--read-only"]], ids=["-o ro", "--read-only"])
def test_read_only_map_refuses_writes(cluster, run_dir, image, tmp_path, ro_args):
    content = random.Random(3).randbytes(3 * MiB)
    src = tmp_path / "src"
    src.write_bytes(content)
    name = uniq("h6-mapro")
    rbd(cluster, "import", "--no-progress", "--image-feature", "layering", str(src), f"rbd/{name}")
    try:
        dev = pmap(cluster, f"rbd/{name}", *ro_args)
        assert run(["blockdev", "--getro", dev]).stdout.strip() == b"1"
        assert read_dev(dev) == content
        r = run(["dd", f"if={src}", f"of={dev}", "bs=4096", "count=1", "oflag=direct", "status=none"], check=False)
        assert r.returncode != 0
        with pytest.raises(OSError):
            fd = os.open(dev, os.O_WRONLY)
            try:
                os.write(fd, b"x" * 4096)
                os.fsync(fd)
            finally:
                os.close(fd)
        assert [r["name"] for r in showmapped(cluster)] == [name]
        prbd(cluster, "unmap", name)  # bare image name: pool defaults to rbd
        assert rbd_export(cluster, f"rbd/{name}") == content
        assert_nothing_left(run_dir)
    finally:
        rbd(cluster, "rm", "--no-progress", f"rbd/{name}", check=False)


# -- failures leave nothing behind --------------------------------------------------------


def test_map_pacific_default_features(cluster, run_dir, image):
    """Images with rbd's default features map read-write (issue 4); librbd then
    sees our writes, a consistent object map and no lock left behind."""
    name = image("8M", "--image-format", "2")  # rbd's default feature set
    rbd(cluster, "bench", "--io-type", "write", "--io-size", "64K", "--io-total", "2M",
        "--io-pattern", "rand", f"rbd/{name}")
    info = json.loads(rbd(cluster, "info", "--format", "json", f"rbd/{name}").stdout)
    assert set(PACIFIC_DEFAULT_EXTRA) <= set(info["features"])
    dev = pmap(cluster, f"rbd/{name}")
    assert read_dev(dev) == rbd_export(cluster, f"rbd/{name}")
    data = random.Random(8).randbytes(MiB + 4096)
    fd = os.open(dev, os.O_WRONLY)
    try:
        os.pwrite(fd, data, 3 * MiB - 4096)
        os.fsync(fd)
    finally:
        os.close(fd)
    assert rbd_export(cluster, f"rbd/{name}")[3 * MiB - 4096:4 * MiB] == data
    prbd(cluster, "unmap", dev)
    assert_nothing_left(run_dir)
    rbd(cluster, "object-map", "check", "--no-progress", f"rbd/{name}")
    assert json.loads(rbd(cluster, "lock", "ls", "--format", "json", f"rbd/{name}").stdout or b"[]") in ([], {})


def test_map_refuses_unsupported_features(cluster, run_dir, image):
    name = image("8M", "--image-feature", "layering,exclusive-lock,journaling")
    r = prbd(cluster, "map", f"rbd/{name}", check=False)
    assert r.returncode != 0
    assert "journaling" in r.stderr.decode(), r.stderr
    assert showmapped(cluster) == []
    assert_nothing_left(run_dir)
    dev = pmap(cluster, f"rbd/{name}", "-o", "ro")  # reading is fine
    assert read_dev(dev) == rbd_export(cluster, f"rbd/{name}")
    prbd(cluster, "unmap", dev)
    assert_nothing_left(run_dir)


def test_map_nonexistent_image(cluster, run_dir):
    r = prbd(cluster, "map", f"rbd/{uniq('nosuch')}", check=False)
    assert r.returncode != 0
    assert b"not found" in r.stderr
    assert showmapped(cluster) == []
    assert_nothing_left(run_dir)
    r = prbd(cluster, "unmap", f"rbd/{uniq('nosuch')}", check=False)
    assert r.returncode != 0 and b"not a mapped" in r.stderr


def test_unmap_while_mounted_is_busy(cluster, run_dir, image, tmp_path):
    name = image("32M")
    dev = pmap(cluster, f"rbd/{name}")
    run(["mkfs.ext4", "-q", "-F", dev])
    mnt = tmp_path / "mnt"
    with mounted(dev, mnt):
        for target in (dev, f"rbd/{name}"):
            r = prbd(cluster, "unmap", target, check=False)
            assert r.returncode != 0
            assert b"busy" in r.stderr.lower(), r.stderr
        assert [m["device"] for m in showmapped(cluster)] == [dev]
        # still fully usable
        data = random.Random(9).randbytes(MiB + 5)
        (mnt / "after-ebusy.bin").write_bytes(data)
        run(["sync"])
        assert (mnt / "after-ebusy.bin").read_bytes() == data
    prbd(cluster, "unmap", f"rbd/{name}")
    assert showmapped(cluster) == []
    assert_nothing_left(run_dir)
    exported = tmp_path / "e.img"
    rbd(cluster, "export", "--no-progress", f"rbd/{name}", str(exported))
    assert run(["debugfs", "-R", "cat /after-ebusy.bin", str(exported)]).stdout == data


def test_unmap_after_umount_while_another_image_was_mapped(cluster, run_dir, image, tmp_path):
    """A map daemon started while another mapping's file system is mounted must not
    pin that file system in its private mount namespace (regression: the first
    device then stayed exclusively held after umount and could never be unmapped)."""
    a, b = image("32M"), image("32M")
    dev_a = pmap(cluster, f"rbd/{a}")
    run(["mkfs.ext4", "-q", "-F", dev_a])
    mnt = tmp_path / "mnt"
    with mounted(dev_a, mnt):
        dev_b = pmap(cluster, f"rbd/{b}")  # its daemon unshares while dev_a is mounted
    prbd(cluster, "unmap", dev_a)
    prbd(cluster, "unmap", dev_b)
    assert showmapped(cluster) == []
    assert_nothing_left(run_dir)


def test_showmapped_plain_header_like_rbd(monkeypatch, capsys):
    import pyceph.block
    from pyceph.cli import prbd as prbd_cli

    row = {"id": "3", "pool": "rbd", "namespace": "", "name": "img", "snap": "-", "device": "/dev/loop3"}
    monkeypatch.setattr(pyceph.block, "showmapped", lambda: [row])
    prbd_cli.main(["showmapped"])
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == ["id", "pool", "namespace", "image", "snap", "device"]
