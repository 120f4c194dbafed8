"""msgr2.1 wire format, crc and secure modes: banner, frames, control payloads (sans-IO).

Formats follow Ceph's ``doc/dev/msgr2.rst`` and ``src/msg/async/frames_v2.h`` and the
kernel's ``net/ceph/messenger_v2.c`` / ``include/linux/ceph/msgr.h``:

- banner: ``"ceph v2\\n"``, ``le16`` payload length, then ``le64`` supported and
  ``le64`` required msgr2 feature bits (payload may be longer; extra bytes ignored);
- frame (rev1, crc mode)::

      preamble (32 bytes): u8 tag, u8 num_segments, 4 x (le32 len, le16 align),
                           2 reserved bytes, le32 crc32c(seed 0) of the first 28 bytes
      segment 0, le32 crc32c(seed -1) of segment 0     (both absent if segment 0 is empty)
      segments 1..num_segments-1                      (only if num_segments > 1)
      epilogue (13 bytes): u8 late_status, 3 x le32 crc of segments 1..3
                                                      (only if num_segments > 1)

  CRCs are Ceph's ``ceph_crc32c(seed, ...)``: a raw CRC-32C register with no final xor.
- frame (rev1, secure mode; ``FrameAssembler::asm_secure_rev1`` in frames_v2.cc, the
  kernel's ``prepare_head_secure_small``/``prepare_message_secure``); each GCM message
  is ciphertext + 16-byte tag under the next nonce (:mod:`pyceph.msgr.crypto_onwire`),
  every segment is zero-padded to 16 bytes::

      GCM(preamble (32 bytes, crc included) + first 48 bytes of segment 0,
          zero-padded to 48)                                          96 bytes
      GCM(rest of padded segment 0)            (only if padded segment 0 > 48 bytes)
      GCM(padded segments 1..num_segments-1 + epilogue (16 bytes: u8 late_status,
          15 zero bytes))                                   (only if num_segments > 1)

Every malformed input raises :class:`pyceph.errors.ProtocolError` (or its subclass
:class:`~pyceph.errors.DecodeError`); incomplete input makes readers wait for more bytes.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from typing import ClassVar, Iterator, Sequence


from ..encoding import Decoder, Encoder, crc32c
from ..errors import DecodeError, ProtocolError
from ..types import EntityAddr, EntityAddrvec
from .crypto_onwire import OnWireCrypto
from .message import Message

# --- banner ------------------------------------------------------------------

BANNER_PREFIX = b"ceph v2\n"
BANNER_V1_PREFIX = b"ceph v027"
# msgr2 (banner) feature bits, CEPH_MSGR2_FEATURE_*
MSGR2_FEATURE_REVISION_1 = 1 << 0
MSGR2_FEATURE_COMPRESSION = 1 << 1
MSGR2_SUPPORTED_FEATURES = MSGR2_FEATURE_REVISION_1
MSGR2_REQUIRED_FEATURES = MSGR2_FEATURE_REVISION_1
_BANNER_FIXED_LEN = len(BANNER_PREFIX) + 2
_MAX_BANNER_PAYLOAD = 4096

# --- frame tags (Tag in src/msg/async/frames_v2.h) ------------------------------

TAG_HELLO = 1
TAG_AUTH_REQUEST = 2
TAG_AUTH_BAD_METHOD = 3
TAG_AUTH_REPLY_MORE = 4
TAG_AUTH_REQUEST_MORE = 5
TAG_AUTH_DONE = 6
TAG_AUTH_SIGNATURE = 7
TAG_CLIENT_IDENT = 8
TAG_SERVER_IDENT = 9
TAG_IDENT_MISSING_FEATURES = 10
TAG_SESSION_RECONNECT = 11
TAG_SESSION_RESET = 12
TAG_SESSION_RETRY = 13
TAG_SESSION_RETRY_GLOBAL = 14
TAG_SESSION_RECONNECT_OK = 15
TAG_WAIT = 16
TAG_MESSAGE = 17
TAG_KEEPALIVE2 = 18
TAG_KEEPALIVE2_ACK = 19
TAG_ACK = 20
TAG_COMPRESSION_REQUEST = 21
TAG_COMPRESSION_DONE = 22

# Short aliases named as the brief / msgr2.rst spell them.
HELLO, AUTH_REQUEST, AUTH_BAD_METHOD, AUTH_REPLY_MORE = 1, 2, 3, 4
AUTH_REQUEST_MORE, AUTH_DONE, AUTH_SIGNATURE, CLIENT_IDENT = 5, 6, 7, 8
SERVER_IDENT, IDENT_MISSING_FEATURES, SESSION_RECONNECT, SESSION_RESET = 9, 10, 11, 12
SESSION_RETRY, SESSION_RETRY_GLOBAL, SESSION_RECONNECT_OK, WAIT = 13, 14, 15, 16
MESSAGE, KEEPALIVE2, KEEPALIVE2_ACK, ACK = 17, 18, 19, 20
COMPRESSION_REQUEST, COMPRESSION_DONE = 21, 22

TAG_NAMES = {
    v: k[4:]
    for k, v in list(globals().items())
    if k.startswith("TAG_") and isinstance(v, int)
}

# --- frame layout ------------------------------------------------------------------

PREAMBLE_LEN = 32
CRC_LEN = 4
EPILOGUE_PLAIN_LEN = 13  # late_status + 3 crcs (msgr2.1)
MAX_NUM_SEGMENTS = 4
FRAME_LATE_STATUS_ABORTED = 0x1
FRAME_LATE_STATUS_COMPLETE = 0xE
FRAME_LATE_STATUS_ABORTED_MASK = 0xF
# segment_t::DEFAULT_ALIGNMENT (sizeof(void*)) and PAGE_SIZE_ALIGNMENT
ALIGN_DEFAULT = 8
ALIGN_PAGE = 4096
CONTROL_ALIGNS = (ALIGN_DEFAULT, 0, 0, 0)
MESSAGE_ALIGNS = (ALIGN_DEFAULT, ALIGN_DEFAULT, ALIGN_DEFAULT, ALIGN_PAGE)

# Ceph's bounds on one message's parts, in bytes (include/linux/ceph/libceph.h
# CEPH_MSG_MAX_*_LEN; the kernel's decode_preamble() and msgr1 read_partial_message()).
MSG_MAX_CONTROL_LEN = 16 << 20
MSG_MAX_FRONT_LEN = 16 << 20
MSG_MAX_MIDDLE_LEN = 16 << 20
MSG_MAX_DATA_LEN = 64 << 20
DEFAULT_MAX_SEGMENT_LEN = MSG_MAX_DATA_LEN
DEFAULT_MAX_CONTROL_LEN = MSG_MAX_CONTROL_LEN
# Bound on one frame (msgr2) or message (msgr1) from a peer that has not authenticated,
# in bytes.  The largest the handshake needs is the cephx reply carrying the tickets
# (AUTH_DONE / MAuthReply): the kernel receives it into a 4 KiB buffer
# (net/ceph/mon_client.c m_auth_reply); 64 KiB leaves room for every service ticket
# with AES256KRB5 keys, and an unauthenticated peer cannot make us buffer more.
MAX_PREAUTH_LEN = 64 << 10
# Bound on everything received before AUTH_DONE (kept for the AUTH_SIGNATURE HMAC): a
# handshake is banner, HELLO, a few AUTH_BAD_METHOD/AUTH_REPLY_MORE round trips, AUTH_DONE.
MAX_PREAUTH_TOTAL = 4 * MAX_PREAUTH_LEN

# secure mode (frames_v2.h FRAME_PREAMBLE_INLINE_SIZE; kernel CEPH_PREAMBLE_SECURE_LEN,
# CEPH_EPILOGUE_SECURE_LEN)
PREAMBLE_INLINE_LEN = 48
SECURE_PAD = 16  # segments are padded to the cipher's block size
GCM_TAG_LEN = 16
PREAMBLE_SECURE_LEN = PREAMBLE_LEN + PREAMBLE_INLINE_LEN + GCM_TAG_LEN  # 96
EPILOGUE_SECURE_LEN = SECURE_PAD  # + its GCM tag
_ZEROS = bytes(PREAMBLE_INLINE_LEN)
# Tails up to this size are joined and sealed in one call (faster than streaming).
_SECURE_JOIN_MAX = 64 << 10

_SEGMENT_NAMES = ("front", "middle", "data")
_SEGMENT_LIMITS = (MSG_MAX_FRONT_LEN, MSG_MAX_MIDDLE_LEN, MSG_MAX_DATA_LEN)
_PREAMBLE = struct.Struct("<BB" + "IH" * 4 + "2x")  # 28 bytes, crc follows
_U32 = struct.Struct("<I")
_EPILOGUE = struct.Struct("<BIII")


def _crc(data) -> int:
    return crc32c(data, 0xFFFFFFFF)


# --- banner ------------------------------------------------------------------------


def encode_banner(
    supported: int = MSGR2_SUPPORTED_FEATURES, required: int = MSGR2_REQUIRED_FEATURES
) -> bytes:
    """The 26-byte msgr2 banner: prefix, le16 16, le64 supported, le64 required."""
    return BANNER_PREFIX + struct.pack("<HQQ", 16, supported, required)


def parse_banner(buf: bytes | bytearray | memoryview) -> tuple[int, int, int] | None:
    """Parse a banner at the start of ``buf``.

    Returns ``(supported, required, consumed_bytes)``, or ``None`` if ``buf`` is too short
    yet.  Raises :class:`ProtocolError` for a wrong prefix (e.g. a msgr1 peer) or a payload
    length below 16 or absurdly large.
    """
    n = min(len(buf), len(BANNER_PREFIX))
    if bytes(buf[:n]) != BANNER_PREFIX[:n]:
        if bytes(buf[: len(BANNER_V1_PREFIX)]) == BANNER_V1_PREFIX:
            raise ProtocolError("peer speaks msgr1 (banner 'ceph v027'), need msgr2")
        raise ProtocolError(f"bad msgr2 banner {bytes(buf[:n])!r}")
    if len(buf) < _BANNER_FIXED_LEN:
        return None
    (plen,) = struct.unpack_from("<H", buf, len(BANNER_PREFIX))
    if plen < 16 or plen > _MAX_BANNER_PAYLOAD:
        raise ProtocolError(f"bad msgr2 banner payload length {plen}")
    if len(buf) < _BANNER_FIXED_LEN + plen:
        return None
    supported, required = struct.unpack_from("<QQ", buf, _BANNER_FIXED_LEN)
    return supported, required, _BANNER_FIXED_LEN + plen


# --- frames -------------------------------------------------------------------------


@dataclass
class Frame:
    """One msgr2 frame: ``tag`` (TAG_*), ``segments`` (1..4 payloads, bytes).

    ``aligns`` are the four preamble alignment fields (``None``: Ceph's defaults for the
    tag).  ``raw`` holds the frame's exact wire bytes when the reader was asked to keep
    them (needed for the AUTH_SIGNATURE HMAC).
    """

    tag: int
    segments: list[bytes] = field(default_factory=lambda: [b""])
    aligns: tuple[int, int, int, int] | None = None
    late_status: int = FRAME_LATE_STATUS_COMPLETE
    raw: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def payload(self) -> bytes:
        """Segment 0 (the control payload, or ceph_msg_header2 for MESSAGE)."""
        return self.segments[0]

    @property
    def name(self) -> str:
        return TAG_NAMES.get(self.tag, str(self.tag))

    def __repr__(self) -> str:
        lens = "+".join(str(len(s)) for s in self.segments)
        return f"Frame({self.name}, {lens})"


def _segment_count(lens: Sequence[int]) -> int:
    # Trailing empty segments are not sent; a frame always has segment 0.
    for i in range(len(lens) - 1, -1, -1):
        if lens[i]:
            return i + 1
    return 1


def _default_aligns(tag_is_message: bool, nseg: int) -> tuple[int, int, int, int]:
    # Ceph fills alignments only for the segments it sends.
    base = MESSAGE_ALIGNS if tag_is_message else CONTROL_ALIGNS
    return tuple(a if i < nseg else 0 for i, a in enumerate(base))  # type: ignore[return-value]


_DEFAULT_ALIGNS = {(m, n): _default_aligns(m, n) for m in (False, True) for n in range(1, MAX_NUM_SEGMENTS + 1)}
_EMPTY_CRC = crc32c(b"")


def _encode_preamble(frame: Frame) -> tuple[bytes, int]:
    """The 32-byte preamble (crc included) of ``frame`` and its segment count."""
    segs = frame.segments
    if not 1 <= len(segs) <= MAX_NUM_SEGMENTS:
        raise ValueError(f"frame needs 1..{MAX_NUM_SEGMENTS} segments, got {len(segs)}")
    lens = [len(s) for s in segs]
    if len(lens) < MAX_NUM_SEGMENTS:
        lens += [0] * (MAX_NUM_SEGMENTS - len(lens))
    nseg = _segment_count(lens)
    aligns = frame.aligns
    if aligns is None:
        aligns = _DEFAULT_ALIGNS[(frame.tag == TAG_MESSAGE, nseg)]
    pre = _PREAMBLE.pack(
        frame.tag, nseg,
        lens[0], aligns[0], lens[1], aligns[1], lens[2], aligns[2], lens[3], aligns[3],
    )
    return pre + _U32.pack(crc32c(pre, 0)), nseg


def encode_frame_parts(frame: Frame) -> list[bytes | memoryview]:
    """Encode ``frame`` (crc mode) as a list of buffers for ``writelines`` (no data copy).

    Raises ValueError for more than 4 segments.
    """
    pre, nseg = _encode_preamble(frame)
    segs = frame.segments
    s0 = segs[0]
    # An empty segment 0 has no crc (asm_crc_rev1; kernel head_onwire_len()).
    parts: list[bytes | memoryview] = [pre, s0, _U32.pack(_crc(s0))] if len(s0) else [pre]
    if nseg > 1:
        crcs = [0, 0, 0]
        for i in range(1, nseg):
            if len(segs[i]):
                parts.append(segs[i])
                crcs[i - 1] = _crc(segs[i])
            else:
                crcs[i - 1] = _EMPTY_CRC
        parts.append(_EPILOGUE.pack(frame.late_status, *crcs))
    return parts


def _padded(n: int) -> int:
    return (n + SECURE_PAD - 1) & ~(SECURE_PAD - 1)


def encode_frame_secure_parts(frame: Frame, crypto: "OnWireCrypto") -> list[bytes | memoryview]:
    """Encode ``frame`` in secure mode (layout in the module docstring) as buffers for
    ``writelines``; consumes one to three tx nonces of ``crypto``, so frames must be
    encoded in wire order.  Raises ValueError for more than 4 segments."""
    pre, nseg = _encode_preamble(frame)
    segs = frame.segments
    s0 = segs[0]
    n0 = len(s0)
    if n0 <= PREAMBLE_INLINE_LEN:
        parts: list[bytes | memoryview] = [crypto.encrypt(b"".join((pre, s0, _ZEROS[n0:])))]
    else:
        parts = [crypto.encrypt(b"".join((pre, memoryview(s0)[:PREAMBLE_INLINE_LEN])))]
        pad = _padded(n0) - n0
        parts.append(crypto.encrypt(b"".join((memoryview(s0)[PREAMBLE_INLINE_LEN:], _ZEROS[:pad]))))
    if nseg > 1:
        pieces: list[bytes | memoryview] = []
        total = EPILOGUE_SECURE_LEN
        for i in range(1, nseg):
            n = len(segs[i])
            if n:
                pieces.append(segs[i])
                pad = _padded(n) - n
                if pad:
                    pieces.append(_ZEROS[:pad])
                total += n + pad
        pieces.append(bytes((frame.late_status,)) + _ZEROS[: EPILOGUE_SECURE_LEN - 1])
        if total <= _SECURE_JOIN_MAX:
            parts.append(crypto.encrypt(b"".join(pieces)))
        else:
            parts.extend(crypto.encrypt_parts(pieces))
    return parts


def secure_wire_len(lens: Sequence[int]) -> int:
    """Bytes on the wire of a secure-mode frame whose segments have ``lens``."""
    lens = list(lens) + [0] * (MAX_NUM_SEGMENTS - len(lens))
    nseg = _segment_count(lens)
    n = PREAMBLE_SECURE_LEN
    p0 = _padded(lens[0])
    if p0 > PREAMBLE_INLINE_LEN:
        n += p0 - PREAMBLE_INLINE_LEN + GCM_TAG_LEN
    if nseg > 1:
        n += sum(_padded(x) for x in lens[1:nseg]) + EPILOGUE_SECURE_LEN + GCM_TAG_LEN
    return n


def encode_frame(frame: Frame) -> bytes:
    """``frame`` as wire bytes (crc mode).  See :func:`encode_frame_parts`."""
    return b"".join(encode_frame_parts(frame))


@dataclass
class _Desc:
    tag: int
    nseg: int
    lens: tuple[int, int, int, int]
    aligns: tuple[int, int, int, int]

    def wire_len(self) -> int:
        return PREAMBLE_LEN + self.body_len

    @property
    def body_len(self) -> int:
        """Bytes after the preamble: segments, their CRCs and the epilogue."""
        n = self.lens[0] + CRC_LEN if self.lens[0] else 0
        if self.nseg > 1:
            n += sum(self.lens[1:]) + EPILOGUE_PLAIN_LEN
        return n


class FrameReader:
    """Streaming msgr2.1 crc-mode frame parser (no banner; see :func:`parse_banner`).

    ``feed(data) -> list[Frame]`` returns every complete frame; incomplete input waits.
    For per-frame control (the protocol switches modes between frames) use ``push(data)``
    then ``next_frame()`` until it returns ``None``.

    Received chunks are queued as they come (``bytes`` are kept without a copy) and each
    segment is assembled with one copy when its frame is complete, so a 4 MiB data
    segment costs one join however many reads it arrived in.

    Bounds, checked on the preamble before any byte of the body is awaited: segment 0 at
    most ``max_control_len`` bytes, segments 1..3 at most Ceph's front/middle/data
    limits (``MSG_MAX_*_LEN``) and ``max_segment_len``; a control frame (any tag but
    MESSAGE) has exactly one segment (Ceph's ControlFrame, the kernel reads no other).
    While ``handshake`` is true (the session is not established; the protocol clears it
    when READY) MESSAGE frames are refused and a control segment may be at most
    :data:`MAX_PREAUTH_LEN` bytes.  So the reader never holds more than one bounded
    frame beyond what was pushed.  Raises :class:`ProtocolError` on a bad preamble CRC,
    segment CRC, segment count, over-long segment or aborted frame; the reader is
    unusable afterwards.
    """

    def __init__(
        self,
        max_segment_len: int = DEFAULT_MAX_SEGMENT_LEN,
        max_control_len: int = DEFAULT_MAX_CONTROL_LEN,
        keep_raw: bool = False,
        *,
        handshake: bool = False,
    ) -> None:
        self.max_segment_len = max_segment_len
        self.max_control_len = max_control_len
        self.keep_raw = keep_raw
        self.handshake = handshake
        self._chunks: deque[bytes] = deque()
        self._off = 0  # consumed bytes of _chunks[0]
        self._avail = 0  # unconsumed bytes in _chunks
        self._pre = b""  # the current frame's preamble, once decoded
        self._desc: _Desc | None = None
        self._failed: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed as frames."""
        return self._avail + (PREAMBLE_LEN if self._desc is not None else 0)

    def push(self, data: bytes | bytearray | memoryview) -> None:
        if not len(data):
            return
        if type(data) is not bytes:
            data = bytes(data)  # the caller may reuse a mutable buffer
        self._chunks.append(data)
        self._avail += len(data)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        self.push(data)
        out = []
        while (f := self.next_frame()) is not None:
            out.append(f)
        return out

    def next_frame(self) -> Frame | None:
        if self._failed is not None:
            raise self._failed
        try:
            return self._next()
        except ProtocolError as e:
            self._failed = e
            raise

    def _take(self, n: int) -> bytes:
        """Consume the next ``n`` buffered bytes (``n <= self._avail``) as one bytes."""
        if not n:
            return b""
        chunks = self._chunks
        c = chunks[0]
        off = self._off
        left = len(c) - off
        self._avail -= n
        if left > n:
            self._off = off + n
            return c[off : off + n]
        if left == n:
            chunks.popleft()
            self._off = 0
            return c[off:] if off else c
        parts = []
        while n:
            c = chunks[0]
            left = len(c) - off
            if left <= n:
                parts.append(memoryview(c)[off:] if off else c)
                chunks.popleft()
                n -= left
                off = 0
            else:
                parts.append(memoryview(c)[off : off + n])
                off += n
                n = 0
        self._off = off
        return b"".join(parts)

    def _next(self) -> Frame | None:
        if self._desc is None:
            if self._avail < PREAMBLE_LEN:
                return None
            pre = self._take(PREAMBLE_LEN)
            self._desc = self._decode_preamble(pre)
            self._pre = pre
        desc = self._desc
        if self._avail < desc.body_len:
            return None
        frame = self._decode_body(desc)
        self._desc = None
        self._pre = b""
        return frame

    def _decode_preamble(self, p: bytes) -> _Desc:
        (want,) = _U32.unpack_from(p, 28)
        got = crc32c(p[:28], 0)
        if got != want:
            raise ProtocolError(f"bad preamble crc: computed {got:#010x}, frame says {want:#010x}")
        f = _PREAMBLE.unpack_from(p, 0)
        tag, nseg = f[0], f[1]
        lens = (f[2], f[4], f[6], f[8])
        aligns = (f[3], f[5], f[7], f[9])
        if not 1 <= nseg <= MAX_NUM_SEGMENTS:
            raise ProtocolError(f"bad frame segment count {nseg}")
        if any(lens[nseg:]):
            raise ProtocolError(f"frame has {nseg} segments but lengths {lens}")
        if nseg > 1 and not lens[nseg - 1]:
            raise ProtocolError(f"last of {nseg} segments is empty")
        if tag == 0:
            raise ProtocolError("frame tag 0")
        name = TAG_NAMES.get(tag, str(tag))
        if tag != TAG_MESSAGE and nseg != 1:
            raise ProtocolError(f"{name} frame with {nseg} segments (a control frame has one)")
        if self.handshake:
            if tag == TAG_MESSAGE:
                raise ProtocolError("MESSAGE frame before the session is established")
            if lens[0] > MAX_PREAUTH_LEN:
                raise ProtocolError(f"{name} frame of {lens[0]} bytes during the handshake "
                                    f"(limit {MAX_PREAUTH_LEN} before authentication)")
        if lens[0] > self.max_control_len:
            raise ProtocolError(f"control segment of {lens[0]} bytes exceeds {self.max_control_len}")
        for what, n, limit in zip(_SEGMENT_NAMES, lens[1:], _SEGMENT_LIMITS):
            limit = min(limit, self.max_segment_len)
            if n > limit:
                raise ProtocolError(f"{what} segment of {n} bytes exceeds {limit}")
        return _Desc(tag, nseg, lens, aligns)

    def _decode_body(self, desc: _Desc) -> Frame:
        lens = desc.lens
        take = self._take
        seg0 = take(lens[0])
        crc0 = take(CRC_LEN) if lens[0] else b""
        if lens[0] and _crc(seg0) != _U32.unpack(crc0)[0]:
            raise ProtocolError(f"bad crc of segment 0 ({TAG_NAMES.get(desc.tag, desc.tag)} frame)")
        segs = [seg0]
        late = FRAME_LATE_STATUS_COMPLETE
        epi = b""
        if desc.nseg > 1:
            views = [take(lens[i]) for i in range(1, desc.nseg)]
            epi = take(EPILOGUE_PLAIN_LEN)
            late, *crcs = _EPILOGUE.unpack(epi)
            if (late & FRAME_LATE_STATUS_ABORTED_MASK) != FRAME_LATE_STATUS_COMPLETE:
                raise ProtocolError(f"frame aborted by sender (late_status {late:#x})")
            for i, v in enumerate(views):
                if _crc(v) != crcs[i]:
                    raise ProtocolError(f"bad crc of segment {i + 1} ({TAG_NAMES.get(desc.tag, desc.tag)} frame)")
                segs.append(v)
        raw = b"".join([self._pre, seg0, crc0, *segs[1:], epi]) if self.keep_raw else None
        return Frame(desc.tag, segs, desc.aligns, late, raw)


class SecureFrameReader(FrameReader):
    """Streaming msgr2.1 secure-mode frame parser: :class:`FrameReader`'s interface, with
    each frame decrypted and verified by ``crypto`` (:class:`OnWireCrypto`).

    The 96-byte preamble block is decrypted first to learn the segment lengths, which are
    checked against the bounds before any body bytes are awaited; each GCM message is
    verified before its plaintext is used.  Raises :class:`ProtocolError` on a bad GCM
    tag (integrity error), bad preamble crc, bad lengths or an aborted frame.
    ``keep_raw`` is ignored: secure frames never feed a signature.
    """

    def __init__(
        self,
        crypto: OnWireCrypto,
        max_segment_len: int = DEFAULT_MAX_SEGMENT_LEN,
        max_control_len: int = DEFAULT_MAX_CONTROL_LEN,
        *,
        handshake: bool = False,
    ) -> None:
        super().__init__(max_segment_len, max_control_len, handshake=handshake)
        self.crypto = crypto
        self._inline = b""

    @classmethod
    def take_over(cls, reader: FrameReader, crypto: OnWireCrypto) -> "SecureFrameReader":
        """A secure reader continuing ``reader``'s stream (its buffered, unparsed bytes)
        after the frame that switched modes.  ``reader`` must be between frames."""
        if reader._desc is not None or reader._failed is not None:
            raise ProtocolError("mode switch in the middle of a frame")
        new = cls(crypto, reader.max_segment_len, reader.max_control_len, handshake=reader.handshake)
        new._chunks, new._off, new._avail = reader._chunks, reader._off, reader._avail
        reader._chunks, reader._off, reader._avail = deque(), 0, 0
        return new

    @property
    def buffered(self) -> int:
        return self._avail + (PREAMBLE_SECURE_LEN if self._desc is not None else 0)

    @staticmethod
    def _secure_body_len(desc: _Desc) -> int:
        p0 = _padded(desc.lens[0])
        n = p0 - PREAMBLE_INLINE_LEN + GCM_TAG_LEN if p0 > PREAMBLE_INLINE_LEN else 0
        if desc.nseg > 1:
            n += sum(_padded(x) for x in desc.lens[1 : desc.nseg]) + EPILOGUE_SECURE_LEN + GCM_TAG_LEN
        return n

    def _next(self) -> Frame | None:
        if self._desc is None:
            if self._avail < PREAMBLE_SECURE_LEN:
                return None
            block = self.crypto.decrypt(self._take(PREAMBLE_SECURE_LEN), "frame preamble")
            self._desc = self._decode_preamble(block[:PREAMBLE_LEN])
            self._inline = block[PREAMBLE_LEN:]
        desc = self._desc
        if self._avail < self._secure_body_len(desc):
            return None
        frame = self._decode_secure_body(desc)
        self._desc = None
        self._inline = b""
        return frame

    def _decode_secure_body(self, desc: _Desc) -> Frame:
        lens = desc.lens
        name = TAG_NAMES.get(desc.tag, desc.tag)
        p0 = _padded(lens[0])
        if p0 > PREAMBLE_INLINE_LEN:
            rest = self.crypto.decrypt(self._take(p0 - PREAMBLE_INLINE_LEN + GCM_TAG_LEN), f"{name} segment 0")
            seg0 = (self._inline + rest)[: lens[0]]
        else:
            seg0 = self._inline[: lens[0]]
        segs = [seg0]
        late = FRAME_LATE_STATUS_COMPLETE
        if desc.nseg > 1:
            plens = [_padded(x) for x in lens[1 : desc.nseg]] + [EPILOGUE_SECURE_LEN]
            buf = self._take(sum(plens) + GCM_TAG_LEN)
            pieces = self.crypto.decrypt_split(buf, plens, f"{name} segments")
            late = pieces[-1][0]
            if (late & FRAME_LATE_STATUS_ABORTED_MASK) != FRAME_LATE_STATUS_COMPLETE:
                raise ProtocolError(f"frame aborted by sender (late_status {late:#x})")
            for i in range(1, desc.nseg):
                p = pieces[i - 1]
                segs.append(p if len(p) == lens[i] else p[: lens[i]])
        return Frame(desc.tag, segs, desc.aligns, late, None)


def iter_frames(
    stream: bytes | bytearray | memoryview, peer_is_server: bool | None = None, keep_raw: bool = True
) -> Iterator[Frame]:
    """Parse one direction of a captured msgr2 crc-mode TCP stream into frames.

    ``stream`` starts with the banner.  ``peer_is_server`` is accepted for symmetry (both
    directions frame alike in crc mode).  Frames carry ``raw`` wire bytes unless
    ``keep_raw`` is false.  Raises :class:`ProtocolError` on bad input, including a stream
    that ends mid-banner or mid-frame.
    """
    del peer_is_server
    banner = parse_banner(stream)
    if banner is None:
        raise ProtocolError("stream ends inside the banner")
    reader = FrameReader(keep_raw=keep_raw)
    reader.push(memoryview(stream)[banner[2] :])
    while (f := reader.next_frame()) is not None:
        yield f
    if reader.buffered:
        raise ProtocolError(f"stream ends inside a frame ({reader.buffered} bytes left over)")


# --- control payloads -----------------------------------------------------------------


def _u32_list(d: Decoder) -> list[int]:
    return d.list(lambda d: d.u32(), 4)


class ControlPayload:
    """Base of control-frame payload codecs: ``encode() -> bytes``, ``decode(bytes)``,
    ``to_frame() -> Frame``.  Decoding raises :class:`DecodeError`."""

    TAG: ClassVar[int] = 0

    def encode(self) -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def decode(cls, payload: bytes):  # pragma: no cover - overridden
        raise NotImplementedError

    def to_frame(self) -> Frame:
        return Frame(self.TAG, [self.encode()])


@dataclass
class Hello(ControlPayload):
    """HELLO: ``u8 entity_type, entity_addr_t peer_addr`` (the address the sender sees
    its peer at)."""

    TAG: ClassVar[int] = TAG_HELLO
    entity_type: int
    peer_addr: EntityAddr

    def encode(self) -> bytes:
        return self.peer_addr.encode(Encoder().u8(self.entity_type)).bytes()

    @classmethod
    def decode(cls, payload: bytes) -> "Hello":
        d = Decoder(payload)
        return cls(d.u8(), EntityAddr.decode(d))


@dataclass
class AuthRequest(ControlPayload):
    """AUTH_REQUEST: ``le32 method, list<le32> preferred_modes, bufferlist payload``."""

    TAG: ClassVar[int] = TAG_AUTH_REQUEST
    method: int
    preferred_modes: list[int]
    payload: bytes

    def encode(self) -> bytes:
        e = Encoder().u32(self.method)
        e.list(self.preferred_modes, lambda e, m: e.u32(m))
        return e.blob(self.payload).bytes()

    @classmethod
    def decode(cls, payload: bytes) -> "AuthRequest":
        d = Decoder(payload)
        return cls(d.u32(), _u32_list(d), d.blob())


@dataclass
class AuthBadMethod(ControlPayload):
    """AUTH_BAD_METHOD: ``le32 method, s32 result, list<le32> allowed_methods,
    list<le32> allowed_modes``."""

    TAG: ClassVar[int] = TAG_AUTH_BAD_METHOD
    method: int
    result: int
    allowed_methods: list[int]
    allowed_modes: list[int]

    def encode(self) -> bytes:
        e = Encoder().u32(self.method).s32(self.result)
        e.list(self.allowed_methods, lambda e, m: e.u32(m))
        e.list(self.allowed_modes, lambda e, m: e.u32(m))
        return e.bytes()

    @classmethod
    def decode(cls, payload: bytes) -> "AuthBadMethod":
        d = Decoder(payload)
        return cls(d.u32(), d.s32(), _u32_list(d), _u32_list(d))


@dataclass
class AuthReplyMore(ControlPayload):
    """AUTH_REPLY_MORE: ``bufferlist payload`` (server -> client)."""

    TAG: ClassVar[int] = TAG_AUTH_REPLY_MORE
    payload: bytes

    def encode(self) -> bytes:
        return Encoder().blob(self.payload).bytes()

    @classmethod
    def decode(cls, payload: bytes):
        return cls(Decoder(payload).blob())


@dataclass
class AuthRequestMore(AuthReplyMore):
    """AUTH_REQUEST_MORE: ``bufferlist payload`` (client -> server)."""

    TAG: ClassVar[int] = TAG_AUTH_REQUEST_MORE


@dataclass
class AuthDone(ControlPayload):
    """AUTH_DONE: ``le64 global_id, le32 con_mode, bufferlist payload``."""

    TAG: ClassVar[int] = TAG_AUTH_DONE
    global_id: int
    con_mode: int
    payload: bytes

    def encode(self) -> bytes:
        return Encoder().u64(self.global_id).u32(self.con_mode).blob(self.payload).bytes()

    @classmethod
    def decode(cls, payload: bytes) -> "AuthDone":
        d = Decoder(payload)
        return cls(d.u64(), d.u32(), d.blob())


@dataclass
class AuthSignature(ControlPayload):
    """AUTH_SIGNATURE: 32 raw bytes, HMAC-SHA256 (``sha256_digest_t``)."""

    TAG: ClassVar[int] = TAG_AUTH_SIGNATURE
    signature: bytes

    def encode(self) -> bytes:
        if len(self.signature) != 32:
            raise ValueError("AUTH_SIGNATURE is 32 bytes")
        return bytes(self.signature)

    @classmethod
    def decode(cls, payload: bytes) -> "AuthSignature":
        return cls(Decoder(payload).raw(32))


@dataclass
class ClientIdent(ControlPayload):
    """CLIENT_IDENT: ``entity_addrvec_t addrs, entity_addr_t target_addr, le64 gid,
    le64 global_seq, le64 supported_features, le64 required_features, le64 flags,
    le64 client_cookie``."""

    TAG: ClassVar[int] = TAG_CLIENT_IDENT
    addrs: EntityAddrvec
    target_addr: EntityAddr
    gid: int
    global_seq: int
    supported_features: int
    required_features: int
    flags: int
    cookie: int

    def encode(self) -> bytes:
        e = self.addrs.encode(Encoder())
        self.target_addr.encode(e)
        e.u64(self.gid).u64(self.global_seq).u64(self.supported_features)
        return e.u64(self.required_features).u64(self.flags).u64(self.cookie).bytes()

    @classmethod
    def decode(cls, payload: bytes) -> "ClientIdent":
        d = Decoder(payload)
        return cls(EntityAddrvec.decode(d), EntityAddr.decode(d), d.u64(), d.u64(), d.u64(), d.u64(), d.u64(), d.u64())


@dataclass
class ServerIdent(ControlPayload):
    """SERVER_IDENT: ``entity_addrvec_t addrs, le64 gid, le64 global_seq,
    le64 supported_features, le64 required_features, le64 flags, le64 server_cookie``."""

    TAG: ClassVar[int] = TAG_SERVER_IDENT
    addrs: EntityAddrvec
    gid: int
    global_seq: int
    supported_features: int
    required_features: int
    flags: int
    cookie: int

    def encode(self) -> bytes:
        e = self.addrs.encode(Encoder())
        e.u64(self.gid).u64(self.global_seq).u64(self.supported_features)
        return e.u64(self.required_features).u64(self.flags).u64(self.cookie).bytes()

    @classmethod
    def decode(cls, payload: bytes) -> "ServerIdent":
        d = Decoder(payload)
        return cls(EntityAddrvec.decode(d), d.u64(), d.u64(), d.u64(), d.u64(), d.u64(), d.u64())


@dataclass
class SessionReconnect(ControlPayload):
    """SESSION_RECONNECT: ``entity_addrvec_t addrs, le64 client_cookie,
    le64 server_cookie, le64 global_seq, le64 connect_seq, le64 msg_seq``."""

    TAG: ClassVar[int] = TAG_SESSION_RECONNECT
    addrs: EntityAddrvec
    client_cookie: int
    server_cookie: int
    global_seq: int
    connect_seq: int
    msg_seq: int

    def encode(self) -> bytes:
        e = self.addrs.encode(Encoder())
        e.u64(self.client_cookie).u64(self.server_cookie).u64(self.global_seq)
        return e.u64(self.connect_seq).u64(self.msg_seq).bytes()

    @classmethod
    def decode(cls, payload: bytes) -> "SessionReconnect":
        d = Decoder(payload)
        return cls(EntityAddrvec.decode(d), d.u64(), d.u64(), d.u64(), d.u64(), d.u64())


def _u64_payload(name: str, tag: int, fieldname: str):
    def encode(self) -> bytes:
        return Encoder().u64(getattr(self, fieldname)).bytes()

    def decode(cls, payload: bytes):
        return cls(Decoder(payload).u64())

    ns = {
        "__annotations__": {fieldname: int, "TAG": ClassVar[int]},
        "TAG": tag,
        "encode": encode,
        "decode": classmethod(decode),
        "__doc__": f"{TAG_NAMES[tag]}: ``le64 {fieldname}``.",
    }
    return dataclass(type(name, (ControlPayload,), ns))


IdentMissingFeatures = _u64_payload("IdentMissingFeatures", TAG_IDENT_MISSING_FEATURES, "features")
SessionRetry = _u64_payload("SessionRetry", TAG_SESSION_RETRY, "connect_seq")
SessionRetryGlobal = _u64_payload("SessionRetryGlobal", TAG_SESSION_RETRY_GLOBAL, "global_seq")
SessionReconnectOk = _u64_payload("SessionReconnectOk", TAG_SESSION_RECONNECT_OK, "msg_seq")
Ack = _u64_payload("Ack", TAG_ACK, "seq")


@dataclass
class SessionReset(ControlPayload):
    """SESSION_RESET: ``bool full``."""

    TAG: ClassVar[int] = TAG_SESSION_RESET
    full: bool = True

    def encode(self) -> bytes:
        return Encoder().bool(self.full).bytes()

    @classmethod
    def decode(cls, payload: bytes) -> "SessionReset":
        return cls(Decoder(payload).bool())


@dataclass
class Wait(ControlPayload):
    """WAIT: no payload (one empty segment)."""

    TAG: ClassVar[int] = TAG_WAIT

    def encode(self) -> bytes:
        return b""

    @classmethod
    def decode(cls, payload: bytes) -> "Wait":
        return cls()


@dataclass
class Keepalive2(ControlPayload):
    """KEEPALIVE2: ``utime_t timestamp`` as ``(le32 sec, le32 nsec)``."""

    TAG: ClassVar[int] = TAG_KEEPALIVE2
    timestamp: tuple[int, int]

    def encode(self) -> bytes:
        return Encoder().utime(self.timestamp).bytes()

    @classmethod
    def decode(cls, payload: bytes):
        return cls(Decoder(payload).utime())


@dataclass
class Keepalive2Ack(Keepalive2):
    """KEEPALIVE2_ACK: ``utime_t timestamp`` echoed from the KEEPALIVE2."""

    TAG: ClassVar[int] = TAG_KEEPALIVE2_ACK


CONTROL_PAYLOADS: dict[int, type[ControlPayload]] = {
    c.TAG: c
    for c in (
        Hello, AuthRequest, AuthBadMethod, AuthReplyMore, AuthRequestMore, AuthDone,
        AuthSignature, ClientIdent, ServerIdent, IdentMissingFeatures, SessionReconnect,
        SessionReset, SessionRetry, SessionRetryGlobal, SessionReconnectOk, Wait,
        Keepalive2, Keepalive2Ack, Ack,
    )
}


def decode_control(frame: Frame) -> ControlPayload:
    """Decode a control frame's payload into its dataclass (``Hello``, ``AuthDone``, ...).

    Raises :class:`ProtocolError` for MESSAGE/unknown tags or extra segments, and
    :class:`DecodeError` for a truncated payload.
    """
    cls = CONTROL_PAYLOADS.get(frame.tag)
    if cls is None:
        raise ProtocolError(f"no control payload for frame tag {frame.name}")
    if len(frame.segments) != 1:
        raise ProtocolError(f"{frame.name} frame has {len(frame.segments)} segments, expected 1")
    return cls.decode(frame.segments[0])


# --- MESSAGE frames -------------------------------------------------------------------

# ceph_msg_header2 (include/linux/ceph/msgr.h): seq, tid, type, priority, version,
# data_pre_padding_len, data_off, ack_seq, flags, compat_version, reserved
_HEADER2 = struct.Struct("<QQHHHIHQBHH")
HEADER2_LEN = _HEADER2.size  # 41


def encode_header2(msg: Message) -> bytes:
    """``ceph_msg_header2`` for ``msg`` (41 bytes)."""
    return _HEADER2.pack(
        msg.seq, msg.tid, msg.type, msg.priority, msg.version, 0, msg.data_off,
        msg.ack_seq, msg.flags, msg.compat_version, 0,
    )


def frame_from_message(msg: Message) -> Frame:
    """MESSAGE frame: header2 then front, middle, data segments (not copied)."""
    return Frame(TAG_MESSAGE, [encode_header2(msg), msg.front, msg.middle, msg.data])


def message_from_frame(frame: Frame) -> Message:
    """Decode a MESSAGE frame into a :class:`Message` (``src_type``/``src_num`` are left 0:
    msgr2 takes them from the connection's peer).  Raises :class:`ProtocolError`."""
    if frame.tag != TAG_MESSAGE:
        raise ProtocolError(f"expected a MESSAGE frame, got {frame.name}")
    if len(frame.segments[0]) < HEADER2_LEN:
        raise DecodeError(f"ceph_msg_header2 of {len(frame.segments[0])} bytes, need {HEADER2_LEN}")
    (seq, tid, mtype, prio, ver, pre_pad, data_off, ack_seq, flags, compat, _res) = _HEADER2.unpack_from(
        frame.segments[0]
    )
    if pre_pad:
        raise ProtocolError(f"data_pre_padding_len {pre_pad} unsupported")
    segs = list(frame.segments) + [b""] * (4 - len(frame.segments))
    return Message(
        type=mtype, front=segs[1], middle=segs[2], data=segs[3], version=ver,
        compat_version=compat, priority=prio, tid=tid, seq=seq, ack_seq=ack_seq,
        data_off=data_off, flags=flags,
    )
