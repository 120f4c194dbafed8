"""CRUSH's rjenkins1 hash (``CRUSH_HASH_RJENKINS1``).

Robert Jenkins' 96-bit mix applied to 2..4 unsigned 32-bit inputs (the arities the
mapper and ``OSDMap`` use), exactly as
``net/ceph/crush/hash.c`` (kernel) and ``src/crush/hash.c`` (Ceph) compute it.
Inputs may be negative Python ints (bucket ids); they are taken modulo 2**32 like
the C ``__u32`` casts.  Results are ints in ``[0, 2**32)``.

``crush_hash32_3`` (straw, straw2, uniform: the hot path) has the mix written out
inline; a helper call per mix roughly doubles its cost.
"""

from __future__ import annotations

CRUSH_HASH_RJENKINS1 = 0
CRUSH_HASH_DEFAULT = CRUSH_HASH_RJENKINS1

_M = 0xFFFFFFFF
_SEED = 1315423911
_X = 231232
_Y = 1232


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    """``crush_hashmix(a, b, c)`` on u32 values; returns the new ``(a, b, c)``."""
    a = ((a - b - c) & _M) ^ (c >> 13)
    b = ((b - c - a) ^ (a << 8)) & _M
    c = ((c - a - b) & _M) ^ (b >> 13)
    a = ((a - b - c) & _M) ^ (c >> 12)
    b = ((b - c - a) ^ (a << 16)) & _M
    c = ((c - a - b) & _M) ^ (b >> 5)
    a = ((a - b - c) & _M) ^ (c >> 3)
    b = ((b - c - a) ^ (a << 10)) & _M
    c = ((c - a - b) & _M) ^ (b >> 15)
    return a, b, c


def crush_hash32_2(a: int, b: int) -> int:
    """``crush_hash32_rjenkins1_2(a, b)``: used by ``is_out`` and pool-seeded inputs."""
    a &= _M
    b &= _M
    h = _SEED ^ a ^ b
    x = _X
    y = _Y
    a, b, h = _mix(a, b, h)
    x, a, h = _mix(x, a, h)
    b, y, h = _mix(b, y, h)
    return h


def crush_hash32_3(a: int, b: int, c: int) -> int:
    """``crush_hash32_rjenkins1_3(a, b, c)``: straw, straw2 and uniform buckets."""
    M = _M
    a &= M
    b &= M
    c &= M
    h = _SEED ^ a ^ b ^ c
    x = _X
    y = _Y
    # mix(a, b, h)
    a = ((a - b - h) & M) ^ (h >> 13)
    b = ((b - h - a) ^ (a << 8)) & M
    h = ((h - a - b) & M) ^ (b >> 13)
    a = ((a - b - h) & M) ^ (h >> 12)
    b = ((b - h - a) ^ (a << 16)) & M
    h = ((h - a - b) & M) ^ (b >> 5)
    a = ((a - b - h) & M) ^ (h >> 3)
    b = ((b - h - a) ^ (a << 10)) & M
    h = ((h - a - b) & M) ^ (b >> 15)
    # mix(c, x, h)
    c = ((c - x - h) & M) ^ (h >> 13)
    x = ((x - h - c) ^ (c << 8)) & M
    h = ((h - c - x) & M) ^ (x >> 13)
    c = ((c - x - h) & M) ^ (h >> 12)
    x = ((x - h - c) ^ (c << 16)) & M
    h = ((h - c - x) & M) ^ (x >> 5)
    c = ((c - x - h) & M) ^ (h >> 3)
    x = ((x - h - c) ^ (c << 10)) & M
    h = ((h - c - x) & M) ^ (x >> 15)
    # mix(y, a, h)
    y = ((y - a - h) & M) ^ (h >> 13)
    a = ((a - h - y) ^ (y << 8)) & M
    h = ((h - y - a) & M) ^ (a >> 13)
    y = ((y - a - h) & M) ^ (h >> 12)
    a = ((a - h - y) ^ (y << 16)) & M
    h = ((h - y - a) & M) ^ (a >> 5)
    y = ((y - a - h) & M) ^ (h >> 3)
    a = ((a - h - y) ^ (y << 10)) & M
    h = ((h - y - a) & M) ^ (a >> 15)
    # mix(b, x, h)
    b = ((b - x - h) & M) ^ (h >> 13)
    x = ((x - h - b) ^ (b << 8)) & M
    h = ((h - b - x) & M) ^ (x >> 13)
    b = ((b - x - h) & M) ^ (h >> 12)
    x = ((x - h - b) ^ (b << 16)) & M
    h = ((h - b - x) & M) ^ (x >> 5)
    b = ((b - x - h) & M) ^ (h >> 3)
    x = ((x - h - b) ^ (b << 10)) & M
    h = ((h - b - x) & M) ^ (x >> 15)
    # mix(y, c, h)
    y = ((y - c - h) & M) ^ (h >> 13)
    c = ((c - h - y) ^ (y << 8)) & M
    h = ((h - y - c) & M) ^ (c >> 13)
    y = ((y - c - h) & M) ^ (h >> 12)
    c = ((c - h - y) ^ (y << 16)) & M
    h = ((h - y - c) & M) ^ (c >> 5)
    y = ((y - c - h) & M) ^ (h >> 3)
    c = ((c - h - y) ^ (y << 10)) & M
    h = ((h - y - c) & M) ^ (c >> 15)
    return h


def crush_hash32_4(a: int, b: int, c: int, d: int) -> int:
    """``crush_hash32_rjenkins1_4(a, b, c, d)``: list and tree buckets."""
    a &= _M
    b &= _M
    c &= _M
    d &= _M
    h = _SEED ^ a ^ b ^ c ^ d
    x = _X
    y = _Y
    a, b, h = _mix(a, b, h)
    c, d, h = _mix(c, d, h)
    a, x, h = _mix(a, x, h)
    y, b, h = _mix(y, b, h)
    c, x, h = _mix(c, x, h)
    y, d, h = _mix(y, d, h)
    return h


def crush_hash_name(hash_type: int) -> str:
    """``crush_hash_name``: ``"rjenkins1"`` for type 0, else ``"unknown"``."""
    return "rjenkins1" if hash_type == CRUSH_HASH_RJENKINS1 else "unknown"
