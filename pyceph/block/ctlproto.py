"""The map daemon's control protocol: typed tag lists, sans-IO (see docs/CONTROL.md).

Shaped by DRBD's lessons (its genetlink "tag lists", drbd_genl_api.h): a message
is a header plus a list of tags; tag numbers are declared once in :data:`TAGS` and
never reused; each tag is mandatory or optional (bit 15 of the tag number on the
wire, like DRBD's ``DRBD_GENLA_F_MANDATORY``).  A receiver refuses a request that
carries a mandatory tag (or an operation) it does not know with
:data:`E_UNKNOWN_TAG` / :data:`E_UNKNOWN_OP` ("daemon too old for ..."), and ignores
unknown optional tags.

Wire layout (little-endian)::

    header  magic b"\\0PCT" | u8 version | u8 kind (1 request, 2 reply) | u16 op | u32 body length
    body    tag*:  u16 tag (bit 15 = mandatory) | u8 type | u32 length | value

A whole message (header + body) is at most :data:`MAX_MESSAGE` bytes.  The magic
starts with a NUL byte so that a receiver tells it from the text commands of the
first daemons ("unmap\\n", "stats\\n", "sessions\\n"), which it still answers.

Nothing here does I/O or reads a clock: :class:`Receiver` is fed bytes and returns
a parsed message; the asyncio layers (pyceph.block.daemon, pyceph.block.control)
own the sockets and the timeouts.
"""

from __future__ import annotations

import errno as _errno
import json
import struct
from dataclasses import dataclass
from typing import Any, Callable

from .. import errors

MAGIC = b"\x00PCT"
VERSION = 1
#: versions this implementation reads (the header layout is the same in all of them)
SUPPORTED_VERSIONS = frozenset({1})
HEADER = struct.Struct("<4sBBHI")
TLV = struct.Struct("<HBI")
MAX_MESSAGE = 64 * 1024
#: longest text (legacy) command line, newline included
MAX_LEGACY_LINE = 256

KIND_REQUEST = 1
KIND_REPLY = 2

F_MANDATORY = 0x8000
TAG_MASK = 0x7FFF

# --- value types -----------------------------------------------------------------
T_FLAG = 0   # no value (length 0): present = true
T_U32 = 1
T_U64 = 2
T_S64 = 3
T_STR = 4    # UTF-8
T_BYTES = 5
T_JSON = 6   # UTF-8 JSON document

TYPE_NAMES = {T_FLAG: "flag", T_U32: "u32", T_U64: "u64", T_S64: "s64", T_STR: "string",
              T_BYTES: "bytes", T_JSON: "json"}
_FIXED = {T_U32: struct.Struct("<I"), T_U64: struct.Struct("<Q"), T_S64: struct.Struct("<q")}

# --- operations (header op field; never reused) ---------------------------------------
OP_UNMAP = 1
OP_STATS = 2
OP_SESSIONS = 3
OP_CONFIGURE = 4
OP_REFRESH = 5
OP_INFO = 6
OP_SPEC = 7   # map_image -> daemon: the mapping's spec, over an inherited private fd

OP_NAMES = {OP_UNMAP: "unmap", OP_STATS: "stats", OP_SESSIONS: "sessions", OP_CONFIGURE: "configure",
            OP_REFRESH: "refresh", OP_INFO: "info", OP_SPEC: "spec"}
OP_BY_NAME = {v: k for k, v in OP_NAMES.items()}


@dataclass(frozen=True)
class TagDef:
    number: int
    name: str
    type: int
    mandatory: bool
    repeat: bool = False


#: every tag ever defined: number -> definition.  Append only; a retired number stays here.
TAGS: dict[int, TagDef] = {t.number: t for t in (
    TagDef(1, "force", T_FLAG, True),               # unmap: even if the device is open
    TagDef(2, "setting", T_STR, True, repeat=True),  # configure: "name=value"
    TagDef(3, "status", T_U32, True),               # reply: a code of STATUS below
    TagDef(4, "errno", T_U32, False),               # reply: errno of the failure
    TagDef(5, "error_class", T_STR, False),         # reply: pyceph.errors class name
    TagDef(6, "message", T_STR, False),             # reply: one line for humans
    TagDef(7, "stats", T_JSON, False),              # stats reply: {counter: int}
    TagDef(8, "sessions", T_JSON, False),           # sessions reply
    TagDef(9, "info", T_JSON, False),               # info reply: {attribute: value}
    TagDef(10, "spec", T_JSON, True),               # spec: the mapping spec (may hold the secret)
    TagDef(11, "size", T_U64, False),               # refresh reply: device size in bytes
    TagDef(12, "applied", T_JSON, False),           # configure reply: {name: value} now in force
    TagDef(13, "bad_tag", T_U32, False),            # E_UNKNOWN_TAG/E_BAD_TAG reply: the tag number
    TagDef(14, "sender", T_STR, False),             # who sent it, e.g. "pyceph 0.1" (informational)
    TagDef(15, "dry_run", T_FLAG, True),            # configure: validate only, apply nothing
)}
TAG_BY_NAME = {t.name: t.number for t in TAGS.values()}

#: op -> (tags it takes, tags it requires)
REQUESTS: dict[int, tuple[frozenset[int], frozenset[int]]] = {
    OP_UNMAP: (frozenset({1, 14}), frozenset()),
    OP_STATS: (frozenset({14}), frozenset()),
    OP_SESSIONS: (frozenset({14}), frozenset()),
    OP_CONFIGURE: (frozenset({2, 14, 15}), frozenset({2})),
    OP_REFRESH: (frozenset({14}), frozenset()),
    OP_INFO: (frozenset({14}), frozenset()),
    OP_SPEC: (frozenset({10, 14}), frozenset({10})),
}

# --- reply status codes (never reused) ---------------------------------------------
OK = 0
E_MALFORMED = 1
E_VERSION = 2
E_TOO_BIG = 3
E_UNKNOWN_OP = 4
E_UNKNOWN_TAG = 5
E_BAD_TAG = 6
E_MISSING_TAG = 7
E_UNKNOWN_SETTING = 8
E_BAD_VALUE = 9
E_BUSY = 10
E_IDLE_TIMEOUT = 11
E_SHUTTING_DOWN = 12
E_NOT_SUPPORTED = 13
E_FAILED = 14
E_APPLY_FAILED = 15
E_PERMISSION = 16

#: code -> (name, errno, meaning)
STATUS: dict[int, tuple[str, int, str]] = {
    OK: ("OK", 0, "done"),
    E_MALFORMED: ("E_MALFORMED", _errno.EBADMSG, "the message does not parse"),
    E_VERSION: ("E_VERSION", _errno.EPROTONOSUPPORT, "protocol version not supported"),
    E_TOO_BIG: ("E_TOO_BIG", _errno.EMSGSIZE, "message longer than MAX_MESSAGE"),
    E_UNKNOWN_OP: ("E_UNKNOWN_OP", _errno.EOPNOTSUPP, "daemon too old for this operation"),
    E_UNKNOWN_TAG: ("E_UNKNOWN_TAG", _errno.EOPNOTSUPP, "daemon too old for a mandatory tag"),
    E_BAD_TAG: ("E_BAD_TAG", _errno.EINVAL, "a known tag has the wrong type or value"),
    E_MISSING_TAG: ("E_MISSING_TAG", _errno.EINVAL, "a required tag is missing"),
    E_UNKNOWN_SETTING: ("E_UNKNOWN_SETTING", _errno.EINVAL, "not a setting a live mapping can change"),
    E_BAD_VALUE: ("E_BAD_VALUE", _errno.EINVAL, "bad value for a setting"),
    E_BUSY: ("E_BUSY", _errno.EBUSY, "too many control connections; retry"),
    E_IDLE_TIMEOUT: ("E_IDLE_TIMEOUT", _errno.ETIMEDOUT, "message not completed within the idle timeout"),
    E_SHUTTING_DOWN: ("E_SHUTTING_DOWN", _errno.ESHUTDOWN, "the mapping is being unmapped"),
    E_NOT_SUPPORTED: ("E_NOT_SUPPORTED", _errno.EOPNOTSUPP, "this mapping cannot do that"),
    E_FAILED: ("E_FAILED", _errno.EIO, "the operation failed (errno and error_class tell why)"),
    E_APPLY_FAILED: ("E_APPLY_FAILED", _errno.EIO, "applying failed; every setting was rolled back"),
    E_PERMISSION: ("E_PERMISSION", _errno.EACCES, "the peer is neither root nor the daemon's user"),
}


class ControlError(errors.OSError):
    """A control request refused or failed.  ``status`` is a code of :data:`STATUS`,
    ``errno`` its errno; ``tag`` the offending tag number, if any."""

    def __init__(self, status: int, message: str, *, tag: int | None = None, errno: int | None = None):
        super().__init__(message, errno=errno or STATUS.get(status, ("", _errno.EIO, ""))[1])
        self.status = status
        self.tag = tag

    @property
    def status_name(self) -> str:
        return STATUS.get(self.status, (f"status {self.status}",))[0]


@dataclass(frozen=True)
class Field:
    tag: int          # without the mandatory bit
    type: int
    mandatory: bool
    value: Any


@dataclass
class Message:
    kind: int
    op: int
    fields: list[Field]
    version: int = VERSION

    def get(self, name: str, default: Any = None) -> Any:
        n = TAG_BY_NAME[name]
        for f in self.fields:
            if f.tag == n:
                return f.value
        return default

    def all(self, name: str) -> list[Any]:
        n = TAG_BY_NAME[name]
        return [f.value for f in self.fields if f.tag == n]

    def has(self, name: str) -> bool:
        return any(f.tag == TAG_BY_NAME[name] for f in self.fields)


@dataclass(frozen=True)
class LegacyLine:
    """A text command of the first daemons' protocol ("unmap", "stats", "sessions")."""
    command: str


def op_name(op: int) -> str:
    return OP_NAMES.get(op, f"operation {op}")


def tag_name(tag: int) -> str:
    t = TAGS.get(tag)
    return t.name if t else f"tag {tag}"


# --- encoding ----------------------------------------------------------------


def field(name: str, value: Any = True) -> Field:
    """A tag of :data:`TAGS` by name, with its declared type and mandatory bit."""
    t = TAGS[TAG_BY_NAME[name]]
    return Field(t.number, t.type, t.mandatory, value)


def _encode_value(typ: int, value: Any) -> bytes:
    if typ == T_FLAG:
        return b""
    if typ in _FIXED:
        return _FIXED[typ].pack(value)
    if typ == T_STR:
        return value.encode("utf-8")
    if typ == T_BYTES or (typ not in TYPE_NAMES and isinstance(value, bytes)):  # raw: a newer type
        return bytes(value)
    if typ == T_JSON:
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")
    raise ValueError(f"unknown tag type {typ}")


def encode(kind: int, op: int, fields: list[Field], version: int = VERSION) -> bytes:
    """One message as bytes.  Raises :class:`ControlError` (E_TOO_BIG) past MAX_MESSAGE."""
    body = bytearray()
    for f in fields:
        v = _encode_value(f.type, f.value)
        body += TLV.pack((f.tag & TAG_MASK) | (F_MANDATORY if f.mandatory else 0), f.type, len(v)) + v
    if HEADER.size + len(body) > MAX_MESSAGE:
        raise ControlError(E_TOO_BIG, f"{op_name(op)}: message of {HEADER.size + len(body)} bytes "
                                      f"exceeds {MAX_MESSAGE}")
    return HEADER.pack(MAGIC, version, kind, op, len(body)) + bytes(body)


def request(op: int, fields: list[Field] | None = None) -> bytes:
    return encode(KIND_REQUEST, op, list(fields or []))


def reply(op: int, status: int = OK, fields: list[Field] | None = None, message: str = "") -> bytes:
    out = [field("status", status)]
    if message:
        out.append(field("message", message))
    return encode(KIND_REPLY, op, out + list(fields or []))


def error_reply(op: int, exc: BaseException) -> bytes:
    """The reply for a failed request: ControlError keeps its code; any other error
    becomes E_FAILED with its errno and class name (``str(exc)`` must not hold a secret)."""
    if isinstance(exc, ControlError):
        fields = [field("errno", exc.errno or _errno.EIO)]
        if exc.tag is not None:
            fields.append(field("bad_tag", exc.tag))
        return reply(op, exc.status, fields, exc.message or str(exc))
    code = getattr(exc, "errno", None)
    code = code if isinstance(code, int) and 0 < code < 4096 else _errno.EIO
    msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return reply(op, E_FAILED, [field("errno", code), field("error_class", type(exc).__name__)], msg[:1024])


# --- decoding ----------------------------------------------------------------


def decode_header(data: bytes) -> tuple[int, int, int, int]:
    """``(version, kind, op, body length)``; raises ControlError (E_MALFORMED,
    E_VERSION, E_TOO_BIG)."""
    if len(data) < HEADER.size:
        raise ControlError(E_MALFORMED, "short header")
    magic, version, kind, op, length = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ControlError(E_MALFORMED, "bad magic")
    if version not in SUPPORTED_VERSIONS:
        raise ControlError(E_VERSION, f"protocol version {version} not supported "
                                      f"(this side speaks {sorted(SUPPORTED_VERSIONS)})")
    if kind not in (KIND_REQUEST, KIND_REPLY):
        raise ControlError(E_MALFORMED, f"bad message kind {kind}")
    if HEADER.size + length > MAX_MESSAGE:
        raise ControlError(E_TOO_BIG, f"message of {HEADER.size + length} bytes exceeds {MAX_MESSAGE}")
    return version, kind, op, length


def _decode_value(tag: int, typ: int, raw: bytes) -> Any:
    if typ == T_FLAG:
        if raw:
            raise ControlError(E_MALFORMED, f"{tag_name(tag)}: flag with a value", tag=tag)
        return True
    if typ in _FIXED:
        if len(raw) != _FIXED[typ].size:
            raise ControlError(E_MALFORMED, f"{tag_name(tag)}: {TYPE_NAMES[typ]} of {len(raw)} bytes", tag=tag)
        return _FIXED[typ].unpack(raw)[0]
    if typ == T_BYTES:
        return raw
    if typ in (T_STR, T_JSON):
        try:
            s = raw.decode("utf-8")
            return json.loads(s) if typ == T_JSON else s
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ControlError(E_MALFORMED, f"{tag_name(tag)}: bad {TYPE_NAMES[typ]}", tag=tag) from None
    raise ControlError(E_MALFORMED, f"{tag_name(tag)}: unknown value type {typ}", tag=tag)


def decode_body(data: bytes) -> list[Field]:
    """The tags of a body; raises ControlError(E_MALFORMED)."""
    out = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < TLV.size:
            raise ControlError(E_MALFORMED, "truncated tag header")
        raw_tag, typ, length = TLV.unpack_from(data, pos)
        pos += TLV.size
        if length > len(data) - pos:
            raise ControlError(E_MALFORMED, f"{tag_name(raw_tag & TAG_MASK)}: length {length} past the end")
        tag = raw_tag & TAG_MASK
        known = TAGS.get(tag)
        value_raw = bytes(data[pos:pos + length])
        pos += length
        if known is None and typ not in TYPE_NAMES:
            value = value_raw  # an unknown tag of an unknown type: kept raw, judged by check_*
        else:
            value = _decode_value(tag, typ, value_raw)
        out.append(Field(tag, typ, bool(raw_tag & F_MANDATORY), value))
    return out


def decode(data: bytes) -> Message:
    """One whole message (exactly header + body)."""
    version, kind, op, length = decode_header(data)
    if len(data) != HEADER.size + length:
        raise ControlError(E_MALFORMED, "message length does not match its header")
    return Message(kind, op, decode_body(data[HEADER.size:]), version)


def check_request(msg: Message) -> None:
    """Refuse what this side does not understand, as DRBD's genl handlers do: an
    unknown operation (E_UNKNOWN_OP), a mandatory tag unknown or not taken by the
    operation (E_UNKNOWN_TAG), a known tag of the wrong type (E_BAD_TAG), a missing
    required tag (E_MISSING_TAG).  Unknown optional tags are ignored."""
    name = op_name(msg.op)
    if msg.kind != KIND_REQUEST:
        raise ControlError(E_MALFORMED, "expected a request")
    if msg.op not in REQUESTS:
        raise ControlError(E_UNKNOWN_OP, f"daemon too old for {name}")
    takes, needs = REQUESTS[msg.op]
    seen = set()
    for f in msg.fields:
        t = TAGS.get(f.tag)
        if t is None or f.tag not in takes:
            if f.mandatory:
                what = f"tag {f.tag}" if t is None else f"tag {f.tag} ({t.name})"
                raise ControlError(E_UNKNOWN_TAG, f"daemon too old for {name} with {what}", tag=f.tag)
            continue
        if f.type != t.type:
            raise ControlError(E_BAD_TAG, f"{name}: tag {f.tag} ({t.name}) must be {TYPE_NAMES[t.type]}",
                               tag=f.tag)
        if f.tag in seen and not t.repeat:
            raise ControlError(E_BAD_TAG, f"{name}: tag {f.tag} ({t.name}) given twice", tag=f.tag)
        seen.add(f.tag)
    for n in needs - seen:
        raise ControlError(E_MISSING_TAG, f"{name}: missing tag {n} ({TAGS[n].name})", tag=n)


def check_reply(msg: Message, op: int) -> dict[str, Any]:
    """The payload of a reply to ``op`` as {tag name: value} (repeated tags: last),
    or raise: :class:`ControlError` for a status other than OK (E_FAILED becomes the
    typed pyceph error named by error_class/errno); unknown mandatory tags in a reply
    mean this side is too old (E_UNKNOWN_TAG)."""
    if msg.kind != KIND_REPLY or msg.op not in (op, 0):  # 0: refused before the op was read
        raise ControlError(E_MALFORMED, f"expected a reply to {op_name(op)}")
    out: dict[str, Any] = {}
    for f in msg.fields:
        t = TAGS.get(f.tag)
        if t is None:
            if f.mandatory:
                raise ControlError(E_UNKNOWN_TAG, f"client too old for the {op_name(op)} reply's tag {f.tag}",
                                   tag=f.tag)
            continue
        if f.type != t.type:
            raise ControlError(E_BAD_TAG, f"reply tag {f.tag} ({t.name}) must be {TYPE_NAMES[t.type]}", tag=f.tag)
        out[t.name] = f.value
    status = out.get("status")
    if status is None:
        raise ControlError(E_MALFORMED, f"{op_name(op)} reply without a status")
    if status != OK:
        msg_text = str(out.get("message") or STATUS.get(status, ("", 0, f"status {status}"))[2])
        code = out.get("errno")
        if status == E_FAILED:
            raise typed_error(int(code or _errno.EIO), str(out.get("error_class") or ""), msg_text)
        raise ControlError(status, msg_text, tag=out.get("bad_tag"), errno=code if isinstance(code, int) else None)
    return out


def typed_error(code: int, cls_name: str, msg: str) -> errors.Error:
    """The pyceph error class named ``cls_name`` (if it is one) carrying ``code``,
    else the class for that errno."""
    cls = getattr(errors, cls_name, None)
    if isinstance(cls, type) and issubclass(cls, errors.Error):
        try:
            return cls(msg, errno=code)
        except Exception:  # noqa: BLE001 - a class with another signature
            pass
    ex = errors.make_ex(code, msg)
    ex.message = msg
    return ex


class Receiver:
    """Sans-IO reader of ONE message on a connection: feed bytes, get a
    :class:`Message`, a :class:`LegacyLine` (text command of the first daemons),
    or None (need more).  Raises :class:`ControlError` on bad input; bounded:
    never holds more than MAX_MESSAGE bytes (legacy lines: MAX_LEGACY_LINE)."""

    def __init__(self, expect_kind: int | None = None):
        self.buf = bytearray()
        self.expect_kind = expect_kind
        self.length: int | None = None
        self.legacy: bool | None = None

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held."""
        return len(self.buf)

    def feed(self, data: bytes) -> Message | LegacyLine | None:
        self.buf += data
        if self.legacy is None and self.buf:
            self.legacy = self.buf[0] != MAGIC[0]
        if self.legacy:
            nl = self.buf.find(b"\n")
            if nl < 0:
                if len(self.buf) >= MAX_LEGACY_LINE:
                    raise ControlError(E_MALFORMED, "text command line too long")
                return None
            try:
                line = self.buf[:nl].decode("ascii").strip()
            except UnicodeDecodeError:
                raise ControlError(E_MALFORMED, "text command is not ASCII") from None
            return LegacyLine(line)
        if self.length is None:
            if len(self.buf) < HEADER.size:
                if not MAGIC.startswith(bytes(self.buf[:len(MAGIC)])):
                    raise ControlError(E_MALFORMED, "bad magic")
                return None
            _, kind, _, body = decode_header(self.buf)
            if self.expect_kind is not None and kind != self.expect_kind:
                raise ControlError(E_MALFORMED, f"unexpected message kind {kind}")
            self.length = HEADER.size + body
        if len(self.buf) < self.length:
            return None
        return decode(bytes(self.buf[:self.length]))

    def eof(self) -> None:
        """The peer closed its side: raise if a message was started but not finished."""
        if self.buf:
            raise ControlError(E_MALFORMED, f"connection closed in the middle of a message ({len(self.buf)} bytes)")


# --- configure: one transaction ------------------------------------------------


def parse_settings(msg: Message) -> dict[str, str]:
    """configure's ``setting`` tags ("name=value") as a dict; a name twice or a
    setting without "=" is E_BAD_VALUE."""
    out: dict[str, str] = {}
    for s in msg.all("setting"):
        name, sep, value = s.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ControlError(E_BAD_VALUE, f"setting {s[:64]!r} is not name=value")
        if name in out:
            raise ControlError(E_BAD_VALUE, f"setting {name!r} given twice")
        out[name] = value.strip()
    return out


def transact(changes: dict[str, Any], get: Callable[[str], Any], set_: Callable[[str, Any], None]) -> dict[str, Any]:
    """Apply already validated ``changes`` in one transaction: set each; if one
    setter raises, restore the ones already set (in reverse) and raise
    E_APPLY_FAILED.  Returns the previous values."""
    before = {k: get(k) for k in changes}
    done: list[str] = []
    try:
        for k, v in changes.items():
            set_(k, v)
            done.append(k)
    except Exception as e:  # noqa: BLE001 - rolled back, then reported
        stuck = []
        for k2 in reversed(done):
            try:
                set_(k2, before[k2])
            except Exception:  # noqa: BLE001 - named in the reply
                stuck.append(k2)
        outcome = (f"{', '.join(sorted(stuck))} could not be restored and may keep the new value"
                   if stuck else "nothing changed")
        raise ControlError(E_APPLY_FAILED, f"applying {k} failed ({e}); {outcome}") from None
    return before
