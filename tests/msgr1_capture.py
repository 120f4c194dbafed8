"""The captured msgr1 session in ``tests/data/msgr1-capture`` split into its parts.

Each TCP connection's streams (``NN-PORT.c2s`` / ``.s2c``) are: banner, the server's
entity_addr and ours as it saw us (s2c) or our entity_addr (c2s), then connect messages
and their replies (until READY/SEQ, with the SEQ exchange's u64s), then the message
stream.  Used by ``tests/unit/test_msgr1.py`` and the fuzz suite.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from pyceph.auth.crypto import CryptoKey
from pyceph.msgr import v1
from pyceph.types import EntityAddr

CAP = Path(__file__).resolve().parent / "data" / "msgr1-capture"
KEY = CryptoKey.from_base64(re.search(r"key = (\S+)", (CAP / "keyring").read_text()).group(1))
STREAMS = {p.name: p.read_bytes() for p in sorted((CAP / "streams").iterdir())}
NAMES = sorted({n.rsplit(".", 1)[0] for n in STREAMS})
MON_PORT = 15361
MGR_PORT = 15374


@dataclass
class Conn:
    name: str
    c2s: bytes
    s2c: bytes
    server_addr: EntityAddr = None
    addr_for_me: EntityAddr = None
    client_addr: EntityAddr = None
    connects: list = field(default_factory=list)
    replies: list = field(default_factory=list)
    acked: int | None = None  # SEQ: the server's acked seq
    in_seq: int | None = None  # SEQ: the client's answer
    c2s_handshake_len: int = 0
    s2c_handshake_len: int = 0

    @property
    def port(self) -> int:
        return int(self.name.split("-")[1])

    @property
    def c2s_messages(self) -> bytes:
        return self.c2s[self.c2s_handshake_len:]

    @property
    def s2c_messages(self) -> bytes:
        return self.s2c[self.s2c_handshake_len:]


def split(name: str) -> Conn:
    c = Conn(name, STREAMS[name + ".c2s"], STREAMS[name + ".s2c"])
    s2c, c2s = c.s2c, c.c2s
    assert s2c.startswith(v1.BANNER) and c2s.startswith(v1.BANNER)
    p = len(v1.BANNER)
    c.server_addr = v1.decode_entity_addr(s2c[p:p + v1.ENTITY_ADDR_LEN])
    c.addr_for_me = v1.decode_entity_addr(s2c[p + v1.ENTITY_ADDR_LEN:p + 2 * v1.ENTITY_ADDR_LEN])
    p += 2 * v1.ENTITY_ADDR_LEN
    while True:
        tag, feat, gseq, cseq, pver, alen, flags = v1.CONNECT_REPLY.unpack_from(s2c, p)
        p += v1.CONNECT_REPLY.size
        c.replies.append(v1.ConnectReply(tag, feat, gseq, cseq, pver, flags, s2c[p:p + alen]))
        p += alen
        if tag == v1.TAG_SEQ:
            c.acked = struct.unpack_from("<Q", s2c, p)[0]
            p += 8
        if tag in (v1.TAG_READY, v1.TAG_SEQ):
            break
    c.s2c_handshake_len = p
    q = len(v1.BANNER)
    c.client_addr = v1.decode_entity_addr(c2s[q:q + v1.ENTITY_ADDR_LEN])
    q += v1.ENTITY_ADDR_LEN
    for _ in c.replies:
        alen = v1.CONNECT.unpack_from(c2s, q)[6]
        c.connects.append(v1.ConnectMsg.decode(c2s[q:q + v1.CONNECT.size + alen]))
        q += v1.CONNECT.size + alen
    if c.acked is not None:
        c.in_seq = struct.unpack_from("<Q", c2s, q)[0]
        q += 8
    c.c2s_handshake_len = q
    return c


def items(data: bytes) -> list[tuple[int, object, bytes]]:
    """Every ``(tag, payload, wire bytes)`` of a message stream (CRCs checked)."""
    sd = v1.StreamDecoder()
    sd.push(data)
    out = []
    pos = 0
    while (it := sd.next()) is not None:
        end = len(data) - sd.q.avail
        out.append((it[0], it[1], data[pos:end]))
        pos = end
    assert sd.q.avail == 0
    return out
