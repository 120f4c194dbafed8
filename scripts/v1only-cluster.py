#!/usr/bin/env python3
"""Make a v1-only (msgr1) dev cluster in DIR: start one with pyceph's launcher, then
rewrite the MonMap to v1 addresses only, set ``ms bind msgr2 = false`` and restart every
daemon (``tests.integration.helpers.make_v1_only``), so monitors, OSDs and the mgr
publish and bind only v1 addresses.

Usage (repo root on PYTHONPATH): scripts/v1only-cluster.py DIR [--mons N] [--debug-ms]
Stop with `pyceph cluster stop --dir DIR`.  Dev tooling for msgr1 proofs and captures.
"""
import argparse
import json
import sys

from pyceph.cluster.launcher import DevCluster
from tests.integration.helpers import make_v1_only


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--mons", type=int, default=1)
    ap.add_argument("--debug-ms", action="store_true")
    a = ap.parse_args()
    c = DevCluster(a.dir)
    c.start(mons=a.mons, conf={"debug ms": 20} if a.debug_ms else {})
    host = make_v1_only(c)
    print(json.dumps({"mon host": host, "monmap": [m["public_addrs"] for m in c.ceph("mon", "dump")["mons"]],
                      "osd.0": c.ceph("osd", "dump")["osds"][0]["public_addrs"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
