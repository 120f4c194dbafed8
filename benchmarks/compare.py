#!/usr/bin/env python3
"""Compare ``prbd bench`` (pyceph, pure Python) with ``rbd bench`` (librbd, the oracle).

One run: start a dev cluster (or use ``--conf`` of a running one), create ONE image with
``rbd create --image-feature layering`` (``--image-feature`` changes that, e.g. Pacific's
defaults ``layering,exclusive-lock,object-map,fast-diff,deep-flatten``), then for each repeat run both tools on that
same image, in this order of workloads (writes before reads, so reads hit real data):

    4M-seq-write, 4M-seq-read, 4K-rand-write, 4K-rand-read     (16 threads by default)

The tool that goes first alternates between repeats (and between workloads), and the
reported figure per tool is the median over the repeats.  Throughput is taken from each
tool's final ``elapsed: ... ops: ... ops/sec: ... bytes/sec: ...`` line as
``ops/sec x io_size`` (the ``bytes/sec`` field is rounded for display by both tools).

Prints a table with both medians and the ratio prbd/rbd, and the pass/fail of the
target "4 MiB sequential write and read at least 0.5x librbd"; ``--json`` prints the
whole result (every sample, the exact commands) as JSON instead.  ``--mapped``
additionally maps the image with ``prbd map`` and runs fio (O_DIRECT, libaio) on the
block device; there is no krbd here to compare with, so those are absolute figures.

``--extra NAME=CMD`` adds another prbd-like command to the same rounds (e.g. the tree
before a change, for a before/after comparison on the same cluster and image).  The
image (and the cluster, if this script started it) is removed at the end.

Usage (from the repository root, with the project's venv)::

    /work/venv/bin/python benchmarks/compare.py                 # own cluster, 3 repeats
    /work/venv/bin/python benchmarks/compare.py --conf /tmp/c/ceph.conf --repeat 5 --json
    /work/venv/bin/python benchmarks/compare.py --mapped \
        --extra 'before=env PYTHONPATH=/tmp/old /work/venv/bin/python -P -m pyceph.cli.prbd'
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
GiB = 1 << 30
TARGET_RATIO = 0.5

_FINAL = re.compile(
    r"elapsed:\s*(?P<elapsed>[\d.]+)\s+ops:\s*(?P<ops>\d+)\s+ops/sec:\s*(?P<ops_s>[\d.eE+-]+)\s+"
    r"bytes/sec:\s*(?P<bytes_s>.+?)\s*$",
    re.M,
)


@dataclass
class Workload:
    key: str
    io_type: str
    io_size: int
    pattern: str
    total: int

    @property
    def size_arg(self) -> str:
        return f"{self.io_size // MiB}M" if self.io_size >= MiB else f"{self.io_size // 1024}K"


def parse_size(s: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([kKmMgG]?)i?[bB]?", s.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {s!r}")
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": MiB, "g": GiB}[m.group(2).lower()]


def parse_final_line(text: str) -> dict:
    """The last ``elapsed: .. ops: .. ops/sec: .. bytes/sec: ..`` line of a bench run."""
    matches = list(_FINAL.finditer(text))
    if not matches:
        raise ValueError("no 'elapsed: ... ops/sec: ...' line in the output")
    m = matches[-1]
    return {"elapsed": float(m["elapsed"]), "ops": int(m["ops"]), "ops_per_sec": float(m["ops_s"]),
            "bytes_per_sec_text": m["bytes_s"]}


def fmt_rate(b: float) -> str:
    return f"{b / MiB:,.1f} MiB/s"


class Runner:
    def __init__(self, conf: str, tools: dict[str, list[str]], pool: str, image: str, threads: int, verbose: bool):
        self.conf, self.tools = conf, tools
        self.pool, self.image, self.threads, self.verbose = pool, image, threads, verbose

    def log(self, msg: str) -> None:
        if self.verbose:
            print(msg, file=sys.stderr, flush=True)

    def bench_cmd(self, tool: str, w: Workload) -> list[str]:
        return [*self.tools[tool], "-c", self.conf, "bench", "--io-type", w.io_type, "--io-size", w.size_arg,
                "--io-threads", str(self.threads), "--io-total", f"{w.total // MiB}M",
                "--io-pattern", w.pattern, f"{self.pool}/{self.image}"]

    def bench(self, tool: str, w: Workload, timeout: float) -> dict:
        cmd = self.bench_cmd(tool, w)
        t0 = time.monotonic()
        # cwd "/": `python -m pyceph...` must not pick up a pyceph/ in the caller's cwd
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/")
        wall = time.monotonic() - t0
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[-500:]}")
        r = parse_final_line(p.stdout)
        r["bytes_per_sec"] = r["ops_per_sec"] * w.io_size
        r["wall"] = wall
        self.log(f"  {tool:6s} {w.key:14s} {fmt_rate(r['bytes_per_sec']):>14s} {r['ops_per_sec']:10.1f} ops/s"
                 f"  (wall {wall:.1f}s)")
        return r


def run_fio(runner: Runner, dev: str, size: int, timeout: float) -> dict:
    """fio on the mapped device: O_DIRECT, libaio, iodepth 16; absolute figures."""
    jobs = [
        ("4M-seq-write", "write", "4M", size),
        ("4M-seq-read", "read", "4M", size),
        ("4K-rand-write", "randwrite", "4k", min(size, 64 * MiB)),
        ("4K-rand-read", "randread", "4k", min(size, 64 * MiB)),
    ]
    out = {}
    for key, rw, bs, sz in jobs:
        cmd = ["fio", "--name", key, "--filename", dev, "--rw", rw, "--bs", bs, "--direct=1",
               "--ioengine=libaio", "--iodepth=16", f"--size={sz}", "--offset=0", "--output-format=json"]
        if "rand" in rw:
            cmd += ["--randrepeat=0", "--norandommap"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {p.stderr.strip()[-500:]}")
        job = json.loads(p.stdout[p.stdout.index("{"):])["jobs"][0]
        side = job["write"] if "write" in rw else job["read"]
        out[key] = {"bytes_per_sec": side["bw_bytes"], "iops": side["iops"], "cmd": " ".join(cmd)}
        runner.log(f"  fio  {key:14s} {fmt_rate(side['bw_bytes']):>14s} {side['iops']:10.1f} IOPS")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conf", help="ceph.conf of a running cluster (default: start a dev cluster)")
    ap.add_argument("--dir", help="directory for the dev cluster (default: a temporary one)")
    ap.add_argument("--osds", type=int, default=3)
    ap.add_argument("--pool", default="rbd")
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool and workload (median is reported)")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--total-4m", type=parse_size, default=1 * GiB, help="bytes per 4M run (default 1G)")
    ap.add_argument("--total-4k", type=parse_size, default=64 * MiB, help="bytes per 4K run (default 64M)")
    ap.add_argument("--image-size", type=parse_size, default=1 * GiB)
    ap.add_argument("--image-feature", default="layering",
                    help="features of the bench image, as rbd create takes them (default layering)")
    ap.add_argument("--only", help="comma-separated workloads (4M-seq-write,4M-seq-read,4K-rand-write,4K-rand-read)")
    ap.add_argument("--tools", default="rbd,prbd", help="comma-separated tools to run (default rbd,prbd)")
    ap.add_argument("--mapped", action="store_true", help="also prbd map the image and run fio on the device")
    ap.add_argument("--mapped-size", type=parse_size, default=512 * MiB, help="bytes per fio 4M job")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per bench command")
    ap.add_argument("--prbd", help="command to run as prbd (default: the prbd beside this python)")
    ap.add_argument("--rbd", help="command to run as rbd (default: rbd on $PATH); for another release's "
                    "dev cluster: --rbd 'pyceph cluster exec --dir DIR -- rbd'")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=CMD",
                    help="one more prbd-like tool to run in the same rounds, e.g. before/after a change: "
                    "--extra 'old=env PYTHONPATH=/tmp/old /work/venv/bin/python -P -m pyceph.cli.prbd' "
                    "(commands run in / so that the cwd does not shadow PYTHONPATH)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)

    prbd_exe = shutil.which("prbd", path=str(Path(sys.executable).parent)) or shutil.which("prbd")
    prbd = shlex.split(args.prbd) if args.prbd else ([prbd_exe] if prbd_exe else [])
    rbd_cmd = shlex.split(args.rbd) if args.rbd else ([shutil.which("rbd")] if shutil.which("rbd") else [])
    if not prbd or not rbd_cmd:
        ap.error("need both `rbd` (ceph-common) and `prbd` (this project's console script)")
    commands = {"rbd": rbd_cmd, "prbd": prbd}
    for item in args.extra:
        name, sep, cmd = item.partition("=")
        if not sep or not name or name in commands:
            ap.error(f"--extra wants a new NAME=CMD, got {item!r}")
        commands[name] = shlex.split(cmd)
    tools = [t for t in args.tools.split(",") if t] + [x.partition("=")[0] for x in args.extra]
    workloads = [
        Workload("4M-seq-write", "write", 4 * MiB, "seq", args.total_4m),
        Workload("4M-seq-read", "read", 4 * MiB, "seq", args.total_4m),
        Workload("4K-rand-write", "write", 4096, "rand", args.total_4k),
        Workload("4K-rand-read", "read", 4096, "rand", args.total_4k),
    ]
    if args.only:
        keep = set(args.only.split(","))
        workloads = [w for w in workloads if w.key in keep]
    verbose = not args.quiet

    cluster = None
    tmpdir = None
    conf = os.path.abspath(args.conf) if args.conf else None
    t_start = time.monotonic()
    if conf is None:
        from pyceph.cluster import DevCluster

        cdir = args.dir or (tmpdir := tempfile.mkdtemp(prefix="pyceph-bench-"))
        cluster = DevCluster(cdir)
        if verbose:
            print(f"starting a dev cluster ({args.osds} OSDs) in {cdir}", file=sys.stderr, flush=True)
        cluster.start(osds=args.osds)
        conf = str(cluster.conf_path)
    image = f"bench-{secrets.token_hex(4)}"
    runner = Runner(conf, {t: commands[t] for t in tools}, args.pool, image, args.threads, verbose)
    samples: dict[str, dict[str, list[dict]]] = {w.key: {t: [] for t in tools} for w in workloads}
    mapped: dict | None = None
    result: dict = {}
    try:
        subprocess.run([*rbd_cmd, "-c", conf, "create", "--size", f"{args.image_size // MiB}M",
                        "--image-feature", args.image_feature, f"{args.pool}/{image}"], check=True, capture_output=True)
        for r in range(args.repeat):
            runner.log(f"repeat {r + 1}/{args.repeat}")
            for i, w in enumerate(workloads):
                k = (r + i) % len(tools)  # rotate who goes first
                order = tools[k:] + tools[:k]
                for tool in order:
                    samples[w.key][tool].append(runner.bench(tool, w, args.timeout))
        if args.mapped:
            runner.log("mapped device (prbd map + fio)")
            dev = subprocess.run([*prbd, "-c", conf, "map", f"{args.pool}/{image}"], check=True,
                                 capture_output=True, text=True, cwd="/").stdout.strip()
            try:
                mapped = {"device": dev, "jobs": run_fio(runner, dev, min(args.mapped_size, args.image_size),
                                                          args.timeout)}
            finally:
                subprocess.run([*prbd, "-c", conf, "unmap", dev], capture_output=True, cwd="/")
    finally:
        subprocess.run([*rbd_cmd, "-c", conf, "rm", "--no-progress", f"{args.pool}/{image}"], capture_output=True)
        if cluster is not None:
            cluster.stop()
            if tmpdir:
                shutil.rmtree(tmpdir, ignore_errors=True)

    rows = []
    for w in workloads:
        row = {"workload": w.key, "io_size": w.io_size, "pattern": w.pattern, "total": w.total}
        for t in tools:
            vals = [s["bytes_per_sec"] for s in samples[w.key][t]]
            row[t] = {
                "median_bytes_per_sec": statistics.median(vals) if vals else None,
                "median_ops_per_sec": statistics.median(s["ops_per_sec"] for s in samples[w.key][t]) if vals else None,
                "samples_bytes_per_sec": vals,
                "cmd": " ".join(runner.bench_cmd(t, w)),
            }
        if "rbd" in tools and row["rbd"]["median_bytes_per_sec"]:
            for t in tools:
                if t != "rbd":
                    row[t]["ratio"] = row[t]["median_bytes_per_sec"] / row["rbd"]["median_bytes_per_sec"]
            if "prbd" in tools:
                row["ratio"] = row["prbd"]["ratio"]
        rows.append(row)
    target_rows = [r for r in rows if r["workload"] in ("4M-seq-write", "4M-seq-read") and "ratio" in r]
    target = None
    if len(target_rows) == 2:
        target = all(r["ratio"] >= TARGET_RATIO for r in target_rows)
    result = {
        "image": f"{args.pool}/{image}", "image_size": args.image_size, "threads": args.threads,
        "repeat": args.repeat, "osds": args.osds if cluster is not None else None, "conf": args.conf,
        "commands": {t: " ".join(commands[t]) for t in tools},
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "results": rows, "target": {"rule": f"4M seq write and read >= {TARGET_RATIO}x rbd", "pass": target},
        "mapped": mapped, "seconds": round(time.monotonic() - t_start, 1),
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0 if target is not False else 1

    from rich.console import Console
    from rich.table import Table

    tab = Table(title=f"rbd bench vs prbd bench ({args.threads} threads, median of {args.repeat})")
    tab.add_column("workload")
    tab.add_column("total", justify="right")
    ratio_tools = [t for t in tools if t != "rbd"] if "rbd" in tools else []
    for t in tools:
        tab.add_column(f"{t} MiB/s", justify="right")
        tab.add_column(f"{t} ops/s", justify="right")
    for t in ratio_tools:
        tab.add_column(f"{t}/rbd", justify="right")
    for r in rows:
        if args.repeat <= 0:
            break
        cells = [r["workload"], f"{r['total'] // MiB} MiB"]
        for t in tools:
            cells += [f"{r[t]['median_bytes_per_sec'] / MiB:,.1f}", f"{r[t]['median_ops_per_sec']:,.0f}"]
        for t in ratio_tools:
            cells.append(f"{r[t]['ratio']:.2f}x" if "ratio" in r[t] else "-")
        tab.add_row(*cells)
    con = Console(width=None if sys.stdout.isatty() else 160)
    if args.repeat > 0:
        con.print(tab)
    if target is not None:
        con.print(f"target 4M seq write and read >= {TARGET_RATIO}x librbd: "
                  + ("[green]PASS[/green]" if target else "[red]FAIL[/red]"))
    if mapped:
        mt = Table(title=f"prbd map {mapped['device']} + fio (O_DIRECT, libaio, iodepth 16)")
        mt.add_column("job")
        mt.add_column("MiB/s", justify="right")
        mt.add_column("IOPS", justify="right")
        for k, v in mapped["jobs"].items():
            mt.add_row(k, f"{v['bytes_per_sec'] / MiB:,.1f}", f"{v['iops']:,.0f}")
        con.print(mt)
    con.print(f"total time {result['seconds']:.0f}s")
    return 0 if target is not False else 1


if __name__ == "__main__":
    sys.exit(main())
