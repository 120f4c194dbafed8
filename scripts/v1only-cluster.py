#!/usr/bin/env python3
"""Make a v1-only (msgr1) dev cluster in DIR: start one with pyceph's launcher, then
rewrite the MonMap to v1 addresses only, set ``ms bind msgr2 = false`` and restart every
daemon, so monitors, OSDs and the mgr publish and bind only v1 addresses.

Usage: scripts/v1only-cluster.py DIR [--debug-ms]   (stop with `pyceph cluster stop --dir DIR`)
Dev tooling for the msgr1 proof, not part of the client.
"""
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from pyceph.cluster.launcher import DevCluster


def main() -> int:
    d = Path(sys.argv[1])
    extra = {"debug ms": 20} if "--debug-ms" in sys.argv else {}
    c = DevCluster(d)
    c.start(conf=extra)
    st = c.state
    conf = c.conf_path.read_text()
    names = sorted(c.pids())
    c.stop()
    mons = re.findall(r"\[v2:([\d.]+):(\d+),v1:([\d.]+):(\d+)\]", conf.split("mon host =", 1)[1].splitlines()[0])
    for i, (_, _, ip, port) in enumerate(mons):
        mid = chr(ord("a") + i)
        mm = d / f"monmap.{mid}"
        subprocess.run(["ceph-mon", "-c", str(c.conf_path), "-i", mid, "--extract-monmap", str(mm)], check=True,
                       capture_output=True)
        for j, (_, _, ip2, port2) in enumerate(mons):
            mj = chr(ord("a") + j)
            subprocess.run(["monmaptool", str(mm), "--rm", mj], check=True, capture_output=True)
            subprocess.run(["monmaptool", str(mm), "--addv", mj, f"[v1:{ip2}:{port2}]"], check=True,
                           capture_output=True)
        subprocess.run(["ceph-mon", "-c", str(c.conf_path), "-i", mid, "--inject-monmap", str(mm)], check=True,
                       capture_output=True)
    host = " ".join(f"v1:{ip}:{port}" for _, _, ip, port in mons)
    conf = re.sub(r"mon host = .*", f"mon host = {host}", conf, count=1)
    conf = conf.replace("[global]\n", "[global]\n\tms bind msgr2 = false\n", 1)
    c.conf_path.write_text(conf)
    for n in [n for n in names if n.startswith("mon.")] + [n for n in names if not n.startswith("mon.")]:
        c.start_daemon(n)
    c.wait_clean(120)
    print(json.dumps({"mon host": host, "monmap": c.ceph("mon", "dump")["mons"][0]["public_addrs"],
                      "osd.0": c.ceph("osd", "dump")["osds"][0]["public_addrs"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
