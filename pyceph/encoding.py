"""Ceph's little-endian wire encoding: primitives and versioned struct envelopes.

Formats follow ``src/include/encoding.h`` and ``src/include/denc.h`` in Ceph and
``include/linux/ceph/decode.h`` in the kernel:

- integers are little-endian, fixed width;
- ``string``/``bufferlist`` are a ``u32`` length then the bytes;
- ``list``/``vector``/``set`` are a ``u32`` count then the items; ``map`` is a ``u32``
  count then key, value pairs;
- ``ENCODE_START(v, compat)`` writes ``u8 struct_v, u8 struct_compat, u32 struct_len``
  and the struct body; decoders skip whatever follows the fields they know.

Every decoding failure raises :class:`pyceph.errors.DecodeError`, never ``struct.error``
or ``IndexError``; lengths are checked against the bytes that remain before anything is
allocated, so hostile input cannot make us allocate more than it sent.
"""

from __future__ import annotations

import struct
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import google_crc32c

from .errors import DecodeError

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

def crc32c(data: bytes | bytearray | memoryview, seed: int = 0xFFFFFFFF) -> int:
    """Ceph's ``ceph_crc32c(seed, data)`` (``src/include/crc32c.h``): a CRC-32C register
    update with no pre/post inversion.  msgr2 segments and encoded maps use
    ``seed=0xFFFFFFFF`` (-1); the msgr2 preamble uses ``seed=0``.
    """
    # google_crc32c.extend() inverts on entry and exit; undo both.  Its C code takes
    # only bytes, so views are copied (callers pass bytes on the hot paths).
    if not isinstance(data, bytes):
        data = bytes(data)
    return google_crc32c.extend(seed ^ 0xFFFFFFFF, data) ^ 0xFFFFFFFF


_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_S8 = struct.Struct("<b")
_S16 = struct.Struct("<h")
_S32 = struct.Struct("<i")
_S64 = struct.Struct("<q")
_F64 = struct.Struct("<d")


class Decoder:
    """Reads Ceph-encoded values from ``buf[pos:end]``.

    ``Decoder(b).u32()`` returns an int; methods advance ``pos``.  Raises
    :class:`DecodeError` on truncation or on a malformed envelope.
    """

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int = 0, end: int | None = None):
        self.buf = memoryview(buf) if not isinstance(buf, memoryview) else buf
        self.pos = pos
        self.end = len(self.buf) if end is None else end
        if self.end > len(self.buf) or pos > self.end:
            raise DecodeError("decoder bounds outside the buffer")

    # -- bookkeeping -------------------------------------------------------
    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def eof(self) -> bool:
        return self.pos >= self.end

    def need(self, n: int, what: str = "value") -> None:
        if n < 0 or self.pos + n > self.end:
            raise DecodeError(
                f"truncated {what}: need {n} bytes at offset {self.pos}, {self.end - self.pos} left"
            )

    def skip(self, n: int) -> None:
        self.need(n, "skip")
        self.pos += n

    def _unpack(self, st: struct.Struct, what: str):
        self.need(st.size, what)
        (v,) = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return v

    # -- primitives --------------------------------------------------------
    def u8(self) -> int:
        return self._unpack(_U8, "u8")

    def u16(self) -> int:
        return self._unpack(_U16, "u16")

    def u32(self) -> int:
        return self._unpack(_U32, "u32")

    def u64(self) -> int:
        return self._unpack(_U64, "u64")

    def s8(self) -> int:
        return self._unpack(_S8, "s8")

    def s16(self) -> int:
        return self._unpack(_S16, "s16")

    def s32(self) -> int:
        return self._unpack(_S32, "s32")

    def s64(self) -> int:
        return self._unpack(_S64, "s64")

    def f64(self) -> float:
        return self._unpack(_F64, "f64")

    def bool(self) -> bool:
        return self.u8() != 0

    def raw(self, n: int) -> bytes:
        """``n`` raw bytes."""
        self.need(n, "raw bytes")
        b = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return b

    def blob(self) -> bytes:
        """A ``bufferlist``: ``u32`` length then bytes."""
        n = self.u32()
        return self.raw(n)

    def string(self) -> str:
        """A ``std::string``: ``u32`` length then bytes (decoded as UTF-8, lossless surrogates)."""
        return self.blob().decode("utf-8", "surrogateescape")

    def utime(self) -> tuple[int, int]:
        """``utime_t``/``ceph_timespec``: ``(u32 sec, u32 nsec)``."""
        return self.u32(), self.u32()

    def uuid(self) -> bytes:
        """``uuid_d``: 16 raw bytes."""
        return self.raw(16)

    # -- containers --------------------------------------------------------
    def count(self, min_item_size: int = 1) -> int:
        """A ``u32`` element count, checked against the bytes left (``min_item_size`` each)."""
        n = self.u32()
        if min_item_size and n * min_item_size > self.remaining:
            raise DecodeError(f"count {n} exceeds the {self.remaining} bytes left")
        return n

    def list(self, item: Callable[["Decoder"], T], min_item_size: int = 1) -> list[T]:
        n = self.count(min_item_size)
        return [item(self) for _ in range(n)]

    def map(
        self, key: Callable[["Decoder"], K], value: Callable[["Decoder"], V], min_item_size: int = 1
    ) -> dict[K, V]:
        n = self.count(min_item_size)
        out: dict[K, V] = {}
        for _ in range(n):
            k = key(self)
            out[k] = value(self)
        return out

    def sub(self, n: int) -> "Decoder":
        """A decoder over the next ``n`` bytes; this decoder skips past them."""
        self.need(n, "sub-structure")
        d = Decoder(self.buf, self.pos, self.pos + n)
        self.pos += n
        return d

    # -- versioned envelopes ------------------------------------------------
    @contextmanager
    def start(self, name: str, supported_v: int = 255) -> Iterator[int]:
        """``DECODE_START``: yields ``struct_v``; on exit skips to the struct's end.

        Raises :class:`DecodeError` if the struct's compat version exceeds
        ``supported_v`` (we would misread it) or its length overruns the buffer.
        """
        v = self.u8()
        compat = self.u8()
        length = self.u32()
        if compat > supported_v:
            raise DecodeError(f"{name}: struct_compat {compat} > supported {supported_v}")
        self.need(length, f"{name} body")
        end = self.pos + length
        saved_end = self.end
        self.end = end
        try:
            yield v
        finally:
            self.end = saved_end
        if self.pos > end:
            raise DecodeError(f"{name}: decoded past struct end")
        self.pos = end

    def start_legacy(self, name: str, supported_v: int, compat_v_below: int) -> "_Legacy":
        """``DECODE_START_LEGACY_COMPAT_LEN``: old encodings without compat/len bytes.

        Returns an object with ``v`` and ``end()``; used by a few old structs (pg_pool_t,
        OSDMap v<7).  If ``struct_v < compat_v_below`` there is no compat/len header.
        """
        return _Legacy(self, name, supported_v, compat_v_below)


class _Legacy:
    def __init__(self, d: Decoder, name: str, supported_v: int, compat_below: int):
        self.d = d
        self.name = name
        self.v = d.u8()
        self.struct_end: int | None = None
        if self.v >= compat_below:
            compat = d.u8()
            length = d.u32()
            if compat > supported_v:
                raise DecodeError(f"{name}: struct_compat {compat} > supported {supported_v}")
            d.need(length, f"{name} body")
            self.struct_end = d.pos + length

    def finish(self) -> None:
        if self.struct_end is not None:
            if self.d.pos > self.struct_end:
                raise DecodeError(f"{self.name}: decoded past struct end")
            self.d.pos = self.struct_end


class Encoder:
    """Builds Ceph-encoded bytes; methods return ``self`` for chaining.

    ``Encoder().u32(1).string("x").bytes()`` -> ``b'\\x01\\0\\0\\0\\x01\\0\\0\\0x'``.
    """

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def bytes(self) -> bytes:
        return bytes(self.buf)

    def __len__(self) -> int:
        return len(self.buf)

    def u8(self, v: int) -> "Encoder":
        self.buf += _U8.pack(v)
        return self

    def u16(self, v: int) -> "Encoder":
        self.buf += _U16.pack(v)
        return self

    def u32(self, v: int) -> "Encoder":
        self.buf += _U32.pack(v)
        return self

    def u64(self, v: int) -> "Encoder":
        self.buf += _U64.pack(v)
        return self

    def s8(self, v: int) -> "Encoder":
        self.buf += _S8.pack(v)
        return self

    def s16(self, v: int) -> "Encoder":
        self.buf += _S16.pack(v)
        return self

    def s32(self, v: int) -> "Encoder":
        self.buf += _S32.pack(v)
        return self

    def s64(self, v: int) -> "Encoder":
        self.buf += _S64.pack(v)
        return self

    def f64(self, v: float) -> "Encoder":
        self.buf += _F64.pack(v)
        return self

    def bool(self, v: bool) -> "Encoder":
        return self.u8(1 if v else 0)

    def raw(self, b: bytes | bytearray | memoryview) -> "Encoder":
        self.buf += b
        return self

    def blob(self, b: bytes | bytearray | memoryview) -> "Encoder":
        self.u32(len(b))
        self.buf += b
        return self

    def string(self, s: str | bytes) -> "Encoder":
        if isinstance(s, str):
            s = s.encode("utf-8", "surrogateescape")
        return self.blob(s)

    def utime(self, t: tuple[int, int]) -> "Encoder":
        return self.u32(t[0]).u32(t[1])

    def uuid(self, u: bytes) -> "Encoder":
        if len(u) != 16:
            raise ValueError("uuid must be 16 bytes")
        return self.raw(u)

    def list(self, items, item: Callable[["Encoder", T], object]) -> "Encoder":
        items = list(items)
        self.u32(len(items))
        for it in items:
            item(self, it)
        return self

    def map(self, d: dict, key: Callable[["Encoder", K], object], value: Callable[["Encoder", V], object]) -> "Encoder":
        self.u32(len(d))
        for k, v in d.items():
            key(self, k)
            value(self, v)
        return self

    @contextmanager
    def start(self, v: int, compat: int) -> Iterator["Encoder"]:
        """``ENCODE_START(v, compat)``: the body written inside gets its length back-patched."""
        self.u8(v).u8(compat)
        at = len(self.buf)
        self.u32(0)
        yield self
        _U32.pack_into(self.buf, at, len(self.buf) - at - 4)
