"""Object-name hashes used to place objects into PGs.

``ceph_str_hash`` (``src/common/ceph_hash.cc``, kernel ``net/ceph/ceph_hash.c``) hashes an
object name (or ``namespace + '\\x1f' + name``) to a 32-bit raw PG seed; the pool's
``object_hash`` field picks the function.  ``crush_hash32_2`` (``src/crush/hash.c``, kernel
``net/ceph/crush/hash.c``) is the rjenkins1 two-input mix used for placement seeds and
primary affinity.  All results are unsigned 32-bit ints.
"""

from __future__ import annotations

CEPH_STR_HASH_LINUX = 0x1
CEPH_STR_HASH_RJENKINS = 0x2

_M = 0xFFFFFFFF


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    # Bob Jenkins' 96-bit mix, kept in 32 bits after every step.
    a = (a - b - c) & _M
    a ^= c >> 13
    b = (b - c - a) & _M
    b ^= (a << 8) & _M
    c = (c - a - b) & _M
    c ^= b >> 13
    a = (a - b - c) & _M
    a ^= c >> 12
    b = (b - c - a) & _M
    b ^= (a << 16) & _M
    c = (c - a - b) & _M
    c ^= b >> 5
    a = (a - b - c) & _M
    a ^= c >> 3
    b = (b - c - a) & _M
    b ^= (a << 10) & _M
    c = (c - a - b) & _M
    c ^= b >> 15
    return a, b, c


def ceph_str_hash_rjenkins(data: bytes) -> int:
    """Jenkins' lookup2 hash of ``data`` (``CEPH_STR_HASH_RJENKINS``), a u32."""
    k = bytes(data)
    length = len(k)
    a = b = 0x9E3779B9
    c = 0
    i = 0
    n = length
    while n >= 12:
        a = (a + int.from_bytes(k[i : i + 4], "little")) & _M
        b = (b + int.from_bytes(k[i + 4 : i + 8], "little")) & _M
        c = (c + int.from_bytes(k[i + 8 : i + 12], "little")) & _M
        a, b, c = _mix(a, b, c)
        i += 12
        n -= 12
    c = (c + length) & _M
    tail = k[i:]
    # bytes 8..10 go to c shifted up one byte: its low byte holds the length
    if n > 8:
        c = (c + (int.from_bytes(tail[8:11], "little") << 8)) & _M
    if n > 4:
        b = (b + int.from_bytes(tail[4:8], "little")) & _M
    if n > 0:
        a = (a + int.from_bytes(tail[0:4], "little")) & _M
    a, b, c = _mix(a, b, c)
    return c


def ceph_str_hash_linux(data: bytes) -> int:
    """The Linux dcache name hash (``CEPH_STR_HASH_LINUX``), truncated to u32."""
    h = 0
    for ch in bytes(data):
        h = ((h + (ch << 4) + (ch >> 4)) * 11) & _M
    return h


def ceph_str_hash(hash_type: int, data: bytes) -> int:
    """Hash ``data`` with the pool's ``object_hash`` type.

    Unknown types return 0xffffffff, as Ceph's ``ceph_str_hash`` returns ``-1``.
    """
    if hash_type == CEPH_STR_HASH_RJENKINS:
        return ceph_str_hash_rjenkins(data)
    if hash_type == CEPH_STR_HASH_LINUX:
        return ceph_str_hash_linux(data)
    return _M


def ceph_str_hash_name(hash_type: int) -> str:
    return {CEPH_STR_HASH_LINUX: "linux", CEPH_STR_HASH_RJENKINS: "rjenkins"}.get(hash_type, "unknown")


CRUSH_HASH_SEED = 1315423911


def crush_hash32_2(a: int, b: int) -> int:
    """``crush_hash32_rjenkins1_2(a, b)``: CRUSH's two-input hash (u32 inputs, u32 result)."""
    a &= _M
    b &= _M
    h = CRUSH_HASH_SEED ^ a ^ b
    x = 231232
    y = 1232
    a, b, h = _mix(a, b, h)
    x, a, h = _mix(x, a, h)
    b, y, h = _mix(b, y, h)
    return h
