#!/usr/bin/env python3
"""Capture the TCP byte streams of one client run on the loopback interface (root).

Used to make the session captures under tests/data (a real client's byte streams plus
its key).  A raw AF_PACKET socket on ``lo`` sees every segment once as it leaves;
segments to or from the server ports given are kept and reassembled by sequence
number into one file per direction of each connection::

    scripts/capture-streams.py --ports 30720,30722-30847 --out DIR -- rados -c C put o f

writes ``DIR/NN-PORT.c2s`` and ``DIR/NN-PORT.s2c`` (NN: order in which the client
opened the connections, PORT: the server's port).  Connections of other clients to
the same ports during the run are captured too: run it on a quiet cluster.
"""

from __future__ import annotations

import argparse
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def parse_ports(spec: str) -> set[int]:
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


class Sniffer:
    def __init__(self, ports: set[int]):
        self.ports = ports
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.stop = False
        self.flows: dict[tuple, dict] = {}  # (sport, dport) -> {"isn", "segs", "order"}
        self.conn_order: list[tuple[int, int]] = []  # (client_port, server_port)

    def run(self) -> None:
        while not self.stop:
            try:
                pkt, addr = self.sock.recvfrom(1 << 17)
            except socket.timeout:
                continue
            if addr[2] != PACKET_OUTGOING or len(pkt) < 14 + 20:
                continue
            if struct.unpack_from("!H", pkt, 12)[0] != 0x0800:
                continue
            ip = pkt[14:]
            ihl = (ip[0] & 0xF) * 4
            total = struct.unpack_from("!H", ip, 2)[0]
            if ip[9] != 6:
                continue
            tcp = ip[ihl:total]
            sport, dport, seq = struct.unpack_from("!HHI", tcp, 0)
            if sport not in self.ports and dport not in self.ports:
                continue
            flags = tcp[13]
            doff = (tcp[12] >> 4) * 4
            payload = bytes(tcp[doff:])
            f = self.flows.setdefault((sport, dport), {"isn": None, "segs": {}})
            if flags & 0x02:  # SYN
                f["isn"] = (seq + 1) & 0xFFFFFFFF
                if dport in self.ports and (sport, dport) not in self.conn_order:
                    self.conn_order.append((sport, dport))
            if payload:
                f["segs"].setdefault(seq, payload)

    @staticmethod
    def assemble(f: dict) -> bytes:
        if not f["segs"]:
            return b""
        base = f["isn"] if f["isn"] is not None else min(f["segs"])
        out = bytearray()
        for seq in sorted(f["segs"], key=lambda s: (s - base) & 0xFFFFFFFF):
            off = (seq - base) & 0xFFFFFFFF
            data = f["segs"][seq]
            if off > len(out):
                raise SystemExit(f"gap in stream at offset {len(out)} (segment at {off})")
            out += data[len(out) - off :]
        return bytes(out)


def main() -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ports", required=True, help="server ports: 3300,6800-6900")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    sn = Sniffer(parse_ports(args.ports))
    t = threading.Thread(target=sn.run, daemon=True)
    t.start()
    rc = subprocess.call(cmd)
    import time

    time.sleep(0.5)
    sn.stop = True
    t.join()
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (cport, sport) in enumerate(sn.conn_order):
        for name, key in (("c2s", (cport, sport)), ("s2c", (sport, cport))):
            data = sn.assemble(sn.flows.get(key, {"isn": None, "segs": {}}))
            (args.out / f"{i:02d}-{sport}.{name}").write_bytes(data)
        print(f"{i:02d}-{sport}: {len(sn.assemble(sn.flows[(cport, sport)]))} bytes c2s", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
