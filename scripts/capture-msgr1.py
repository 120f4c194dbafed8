#!/usr/bin/env python3
"""Capture a real client's msgr1 session with a dev cluster (test-data tooling).

Sniffs the loopback interface with an AF_PACKET socket (root) while COMMAND runs,
reassembles every TCP connection whose server port lies in PORT_MIN..PORT_MAX, keeps
those of a client (the ``ceph_msg_connect`` it sends names host_type CLIENT) and writes
each connection's two byte streams as ``OUT/streams/NN-PORT.c2s`` / ``.s2c`` in the order
they were opened.

Usage: scripts/capture-msgr1.py OUT PORT_MIN PORT_MAX -- COMMAND...
Not part of the client; made ``tests/data/msgr1-capture``.
"""

import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

ETH_P_ALL = 0x0003
PACKET_HOST = 0
BANNER = b"ceph v027"
CONNECT_OFF = len(BANNER) + 136  # the client's banner, then its entity_addr


def sniff(sock: socket.socket, stop: threading.Event, packets: list) -> None:
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            data, addr = sock.recvfrom(1 << 18)
        except socket.timeout:
            continue
        if addr[0] != "lo" or addr[2] != PACKET_HOST:
            continue  # loopback shows every packet twice: keep the received copy
        packets.append(data)


def parse(pkt: bytes):
    if len(pkt) < 14 + 20 or struct.unpack("!H", pkt[12:14])[0] != 0x0800:
        return None
    ip = pkt[14:]
    ihl = (ip[0] & 15) * 4
    if ip[9] != 6:
        return None
    total = struct.unpack("!H", ip[2:4])[0]
    src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
    tcp = ip[ihl:total]
    sport, dport, seq = struct.unpack("!HHI", tcp[:8])
    off = (tcp[12] >> 4) * 4
    flags = tcp[13]
    return (src, sport, dst, dport), seq, flags, tcp[off:]


def reassemble(segs: list[tuple[int, bytes]], isn: int) -> bytes:
    out = bytearray()
    base = (isn + 1) & 0xFFFFFFFF
    for seq, payload in sorted(((s - base) & 0xFFFFFFFF, p) for s, p in segs):
        if seq > len(out):
            raise SystemExit(f"capture lost bytes at offset {len(out)} (next segment at {seq})")
        out += payload[len(out) - seq:]
    return bytes(out)


def main() -> int:
    out = Path(sys.argv[1])
    pmin, pmax = int(sys.argv[2]), int(sys.argv[3])
    cmd = sys.argv[sys.argv.index("--") + 1:]
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    sock.bind(("lo", 0))
    packets: list[bytes] = []
    stop = threading.Event()
    t = threading.Thread(target=sniff, args=(sock, stop, packets))
    t.start()
    try:
        rc = subprocess.run(cmd).returncode
    finally:
        time.sleep(0.5)  # the last packets
        stop.set()
        t.join()
    conns: dict = {}  # (client ip, port, server ip, port) -> {"isn": {dir: isn}, "segs": {dir: [...]}}
    order = []
    for pkt in packets:
        p = parse(pkt)
        if p is None:
            continue
        (src, sport, dst, dport), seq, flags, payload = p
        if pmin <= dport <= pmax and not pmin <= sport <= pmax:
            key, d = (src, sport, dst, dport), "c2s"
        elif pmin <= sport <= pmax and not pmin <= dport <= pmax:
            key, d = (dst, dport, src, sport), "s2c"
        else:
            continue
        c = conns.get(key)
        if c is None:
            c = conns[key] = {"isn": {}, "segs": {"c2s": [], "s2c": []}}
            order.append(key)
        if flags & 0x02:  # SYN
            c["isn"][d] = seq
        if payload:
            c["segs"][d].append((seq, payload))
    n = 0
    (out / "streams").mkdir(parents=True, exist_ok=True)
    for key in order:
        c = conns[key]
        if set(c["isn"]) != {"c2s", "s2c"}:
            continue  # opened before the capture
        c2s = reassemble(c["segs"]["c2s"], c["isn"]["c2s"])
        s2c = reassemble(c["segs"]["s2c"], c["isn"]["s2c"])
        if not c2s.startswith(BANNER) or len(c2s) < CONNECT_OFF + 12:
            continue
        host_type = struct.unpack_from("<I", c2s, CONNECT_OFF + 8)[0]
        if host_type != 8:
            continue  # a daemon's connection
        base = out / "streams" / f"{n:02d}-{key[3]}"
        base.with_suffix(".c2s").write_bytes(c2s)
        base.with_suffix(".s2c").write_bytes(s2c)
        print(f"{base.name}: {len(c2s)} bytes c2s, {len(s2c)} bytes s2c")
        n += 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
