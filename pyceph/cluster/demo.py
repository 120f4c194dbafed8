"""The end-to-end demo: a real cluster, an image mapped by pyceph, a filesystem on it.

``pyceph demo`` (after ``./scripts/setup.sh``) runs, and prints, every step:

1. start a throw-away dev cluster (1 mon, 3 memstore OSDs) in a temp dir;
2. ``prbd create`` a 256 MiB image (our client);
3. ``prbd map`` it -> ``/dev/loopN`` (our client behind a FUSE file);
4. ``mkfs.ext4``, mount, write files with random data, ``sync``, read them back;
5. unmount, ``prbd unmap``;
6. ``rbd export`` the image with librbd (Ceph's own tool, the oracle), open the exported
   filesystem image read-only and check every file's SHA-256 again;
7. stop the cluster and remove everything.

Exit code 0 only if every check passed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

from .launcher import DevCluster


def _say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def _run(argv: list[str], **kw) -> str:
    print("    $ " + " ".join(argv), flush=True)
    r = subprocess.run(argv, check=True, text=True, capture_output=True, **kw)
    return r.stdout.strip()


def _sha(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    keep = "--keep" in (argv or [])
    work = tempfile.mkdtemp(prefix="pyceph-demo-")
    cdir = os.path.join(work, "cluster")
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt)
    env = dict(os.environ, PYCEPH_RUN_DIR=os.path.join(work, "run"))
    prbd = [sys.executable, "-m", "pyceph.cli.prbd", "-c", os.path.join(cdir, "ceph.conf")]
    cluster = DevCluster(cdir)
    dev = None
    mounted = False
    t0 = time.monotonic()
    try:
        _say(f"starting a dev cluster (1 mon, 3 memstore OSDs) in {cdir}")
        secs = cluster.start(mons=1, osds=3)
        print(f"    cluster up and active+clean in {secs:.1f}s; mon host {cluster.mon_host}", flush=True)

        _say("creating image rbd/demo (256 MiB) with prbd")
        _run(prbd + ["create", "--size", "256M", "rbd/demo"], env=env)
        print("    " + _run(prbd + ["info", "rbd/demo"], env=env).replace("\n", "\n    "), flush=True)

        _say("mapping it with prbd (pure-Python client behind a FUSE file + loop device)")
        dev = _run(prbd + ["map", "rbd/demo"], env=env)
        print(f"    mapped at {dev}", flush=True)
        print("    " + _run(prbd + ["showmapped"], env=env).replace("\n", "\n    "), flush=True)

        _say(f"making an ext4 filesystem on {dev} and writing files")
        _run(["mkfs.ext4", "-q", "-F", dev])
        _run(["mount", dev, mnt])
        mounted = True
        want: dict[str, str] = {}
        for i, size in enumerate([1 << 20, 7 << 20, 123457, 32 << 20]):
            name = f"file{i}.bin"
            with open(os.path.join(mnt, name), "wb") as f:
                f.write(os.urandom(size))
            want[name] = _sha(os.path.join(mnt, name))
        with open(os.path.join(mnt, "hello.txt"), "w") as f:
            f.write("written through pyceph\n")
        want["hello.txt"] = _sha(os.path.join(mnt, "hello.txt"))
        _run(["sync"])
        total = sum(os.path.getsize(os.path.join(mnt, n)) for n in want)
        print(f"    wrote {len(want)} files, {total} bytes", flush=True)
        # Read back through the device after dropping the page cache, so it comes from the cluster.
        _run(["umount", mnt])
        mounted = False
        subprocess.run(["blockdev", "--flushbufs", dev], check=False)
        _run(["mount", "-o", "ro", dev, mnt])
        mounted = True
        for n, h in want.items():
            if _sha(os.path.join(mnt, n)) != h:
                raise SystemExit(f"FAILED: {n} read back through {dev} differs")
        print("    every file read back through the mapped device matches", flush=True)
        _run(["umount", mnt])
        mounted = False

        _say("unmapping")
        _run(prbd + ["unmap", dev], env=env)
        dev = None

        _say("reading the image back with librbd (`rbd export`, Ceph's own tool) and checking the files")
        exported = os.path.join(work, "demo.img")
        _run(cluster.tool_argv("rbd", "-c", str(cluster.conf_path), "export", "--no-progress", "rbd/demo", exported))
        _run(["mount", "-o", "ro,loop", exported, mnt])
        mounted = True
        for n, h in want.items():
            got = _sha(os.path.join(mnt, n))
            ok = got == h
            print(f"    {n:12s} {h[:16]}... {'OK' if ok else 'MISMATCH'}", flush=True)
            if not ok:
                raise SystemExit(f"FAILED: {n} in librbd's export differs from what was written")
        _run(["umount", mnt])
        mounted = False

        _say("removing the image with prbd")
        _run(prbd + ["rm", "--no-progress", "rbd/demo"], env=env)
        print(f"\nDEMO PASSED in {time.monotonic() - t0:.0f}s: pyceph mapped a real RBD image, "
              f"ext4 on it round-tripped {total} bytes, and librbd read the same data back.", flush=True)
        return 0
    except subprocess.CalledProcessError as e:
        print(f"FAILED: {' '.join(e.cmd)} exited {e.returncode}: {(e.stderr or '').strip()}", file=sys.stderr)
        return 1
    finally:
        if mounted:
            subprocess.run(["umount", "-l", mnt], check=False)
        if dev:
            subprocess.run(prbd + ["unmap", "-o", "force", dev], env=env, check=False, capture_output=True)
        if not keep:
            _say("stopping the cluster and cleaning up")
            try:
                cluster.stop()
            finally:
                shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"    kept: cluster in {cdir}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
