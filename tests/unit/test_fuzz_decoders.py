"""Hostile bytes against every decoder the client feeds with a peer's bytes.

One harness, one list of targets (:data:`TARGETS`): msgr2 banner, frame reader and stream
splitter, every control-frame payload, ``message_from_frame``, msgr1's entity_addr,
ceph_msg_connect, ceph_msg_header, message stream and client core (seeded from the
captured msgr1 session in ``tests/data/msgr1-capture``), every mon and OSD message's
``from_message``, MonMap, OSDMap (and placement on what it decoded), OSDMap::Incremental
(and applying it), CRUSH maps (and mapping with them), pg_pool_t and the small OSDMap
types, the cephx structures and the cephx client's reply handlers (mon handshake, service
tickets, OSD authorizers) with AES keys and, from real Tentacle sessions, with AES256KRB5
keys and the mixed AES/AES256KRB5 case, AES256KRB5 envelopes and keyring keys, OSD op
outdata decoders, cls_rbd/cls_lock reply decoders and the shared types (entity_addr_t,
entity_addrvec_t, pg_t, ...); msgr2.1 secure mode (the secure frame reader on a librados
session captured in secure mode, mutated plaintext frames resealed with the right keys so
lengths reach the checks, and the client state machine on the sealed server streams).

Inputs are seeded from REAL encodings (Ceph's object corpus, the captured librados
session, the recorded Tentacle cephx sessions in tests/unit/vectors, the golden CRUSH/OSDMap vectors, plus a few built with our encoders for types
those lack).  Deterministic sweeps truncate every seed at every length and overwrite the
u32 at every offset with a huge value (0xffffffff, 2**31, ...: what a length or count
field must survive); big seeds get a fixed sample of offsets unless PYCEPH_FUZZ_SWEEP=1.
Hypothesis then flips, overwrites, inserts, deletes, duplicates and splices bytes.  Maps
mutated past their CRC get it recomputed so the mutation reaches placement.  For every
call we assert:

- only the target's documented errors escape: :class:`ProtocolError` (and its subclass
  :class:`DecodeError`); :class:`AuthError` where cephx crypto can fail;
  :class:`FeatureNotSupported` for the protocol state machine;
- the call returns within :data:`TIME_LIMIT` seconds of CPU time (a SIGVTALRM guard turns
  a hang into a failure after :data:`HANG_LIMIT`);
- the call's peak Python allocation (tracemalloc) stays under :data:`MEM_LIMIT`: a length
  field of 4 GiB must not make us allocate 4 GiB.

``PYCEPH_FUZZ_EXAMPLES=N`` runs N (random, not derandomized) hypothesis examples per
target; the default is a small fixed number that keeps the module well under a minute on
2 cores.  ``PYCEPH_FUZZ_SWEEP=1`` makes the sweeps visit every offset of every seed
(about 20 minutes).
"""

from __future__ import annotations

import os
import random
import re
import signal
import struct
import sys
import threading
import time
import tracemalloc
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyceph.auth import structs as ax
from pyceph.auth.cephx import (
    CEPHX_GET_PRINCIPAL_SESSION_KEY,
    CephxClient,
)
from pyceph.auth.crypto import (
    CEPHX_KEY_USAGE_AUTH_CONNECTION_SECRET,
    CEPHX_KEY_USAGE_AUTHORIZE,
    CEPHX_KEY_USAGE_AUTHORIZE_REPLY,
    CEPHX_KEY_USAGE_TICKET_SESSION_KEY,
    CryptoKey,
    decode_decrypt,
    decrypt_enc_bl,
    encrypt_enc_bl,
)
from pyceph.encoding import Decoder, Encoder
from pyceph.errors import (
    AuthError,
    ConfigError,
    DecodeError,
    FeatureNotSupported,
    FunctionNotSupported,
    InvalidArgumentError,
    ProtocolError,
)
from pyceph.mon import messages as monm
from pyceph.mon.monmap import MonInfo, MonMap
from pyceph.msgr import frames as fr
from pyceph.msgr.crypto_onwire import OnWireCrypto
from pyceph.msgr import v1
from pyceph.msgr.message import Message
from pyceph.msgr.protocol import ClientProtocol, Session
from pyceph.osd import messages as osdm
from pyceph.osd import ops
from pyceph.osdmap import OSDMap
from pyceph.osdmap.crush import CrushMap
from pyceph.osdmap.crush import mapper as crush_mapper
from pyceph.encoding import crc32c
from pyceph.osdmap.osdmap import Incremental, OsdInfo, OsdXinfo
from pyceph.osdmap.pool import PgMergeMeta, PgPool, PoolOpts, PoolSnapInfo
from pyceph.rbd import cls_client as cls
from pyceph.types import (
    ADDR_TYPE_MSGR2,
    ENTITY_TYPE_MGR,
    ENTITY_TYPE_MON,
    ENTITY_TYPE_OSD,
    EntityAddr,
    EntityAddrvec,
    EntityName,
    EntityNameT,
    PgT,
)
from tests import msgr1_capture as cap1
from tests.shared_data import CORPUS, VECTORS
from tests.unit import test_msgr_secure as sec
from tests.unit.vectors import cephx_replay as cephx_vectors

# -- limits ------------------------------------------------------------------------------

TIME_LIMIT = 2.0  # CPU seconds per decoder call (they take micro- to milliseconds)
HANG_LIMIT = 10.0  # CPU seconds (SIGVTALRM): a call still running after this is a hang
MEM_LIMIT = 64 << 20  # peak bytes allocated by one call
EXAMPLES = int(os.environ.get("PYCEPH_FUZZ_EXAMPLES", "0") or 0)
FULL_SWEEP = os.environ.get("PYCEPH_FUZZ_SWEEP", "") not in ("", "0")

PROTO = (ProtocolError,)  # DecodeError is a ProtocolError
CRYPTO = (ProtocolError, AuthError)
HANDSHAKE = (ProtocolError, AuthError, FeatureNotSupported)

CAP = VECTORS / "msgr2-capture"
STREAMS_DIR = CAP / "streams"
KEY = CryptoKey.from_base64(re.search(r"key = (\S+)", (CAP / "keyring").read_text()).group(1))
ADMIN = EntityName.parse("client.admin")
ALL_SERVICES = ENTITY_TYPE_MON | ENTITY_TYPE_OSD | ENTITY_TYPE_MGR
FSID = bytes(range(16))


# -- targets -----------------------------------------------------------------------------


@dataclass
class Target:
    """``fn(data, ctx)`` decodes ``data``; ``seeds`` are ``(valid bytes, ctx)`` pairs."""

    name: str
    fn: Callable[[bytes, Any], Any]
    seeds: list[tuple[bytes, Any]]
    allowed: tuple[type[BaseException], ...] = PROTO
    weight: float = 1.0  # relative share of hypothesis examples (slow targets get fewer)
    sweep: bool = True  # run the deterministic truncation sweep
    sweep_len: bool = True  # run the deterministic huge-length-field sweep
    sweep_budget: int = 600  # offsets per sweep over all seeds (unless PYCEPH_FUZZ_SWEEP)
    trace: bool = True  # measure allocations (tracemalloc makes hash-heavy CRUSH code 10x slower)


TARGETS: list[Target] = []


def target(name, fn, seeds, allowed=PROTO, weight=1.0, sweep=True, ctx_seeds=False, sweep_len=None,
           sweep_budget=600, trace=True):
    seeds = list(seeds) if ctx_seeds else [(bytes(s), None) for s in seeds]
    assert seeds, f"fuzz target {name} has no seeds"
    TARGETS.append(Target(name, fn, seeds, allowed, weight, sweep, sweep if sweep_len is None else sweep_len,
                          sweep_budget, trace))


def dec(decode):
    """``cls.decode(Decoder)`` as a bytes decoder."""
    return lambda data, ctx: decode(Decoder(data))


def corpus(type_name: str) -> list[bytes]:
    d = CORPUS / type_name
    files = sorted(d.iterdir())
    assert files, f"no corpus samples in {d}"
    return [f.read_bytes() for f in files]


def built(*objs) -> list[bytes]:
    return [o.encode(Encoder()).bytes() for o in objs]


# -- the captured session ------------------------------------------------------------------

STREAMS = {p.name: p.read_bytes() for p in sorted(STREAMS_DIR.iterdir())}
FRAMES = {name: list(fr.iter_frames(b)) for name, b in STREAMS.items()}
ALL_FRAMES = [f for fs in FRAMES.values() for f in fs]
MSG_FRAMES = [f for f in ALL_FRAMES if f.tag == fr.TAG_MESSAGE]
CAPTURED_MSGS = [fr.message_from_frame(f) for f in MSG_FRAMES]
MON_SESSIONS = ["00-3300", "01-3300", "02-3300", "05-3300", "06-3300", "07-3300"]


def _auth_frames(name: str):
    c, s = FRAMES[name + ".c2s"], FRAMES[name + ".s2c"]
    return c, s


# -- msgr2: banner, frames, streams, control payloads, MESSAGE header ---------------------

target("msgr2.parse_banner", lambda b, c: fr.parse_banner(b),
       [s[:26] for s in STREAMS.values()] + [fr.encode_banner() + b"x" * 7])


def _iter_frames(data, ctx):
    for _ in fr.iter_frames(data):
        pass


# whole captured streams (banner + every frame); the two 66 KB ones are slower
target("msgr2.iter_frames", _iter_frames, STREAMS.values(), weight=2.0)


def _reader_chunked(data, step):
    r = fr.FrameReader()
    for i in range(0, len(data), step):
        r.feed(data[i : i + step])


target("msgr2.FrameReader.chunked", _reader_chunked,
       [(s[26:], step) for s in list(STREAMS.values())[:6] for step in (1, 7, 4096)], ctx_seeds=True,
       sweep=False)


def _preamble_fixed(data, ctx):
    """A frame whose preamble CRC we recompute after mutation, so that absurd segment
    lengths and counts reach the length checks (a bad CRC would stop them first)."""
    pre = data[:28]
    r = fr.FrameReader()
    r.feed(pre + struct.pack("<I", fr.crc32c(pre, 0)) + data[28:])


_FRAME_SEEDS = []
for _f in ALL_FRAMES:
    if _f.raw is not None and len(_f.raw) < 4096:
        _FRAME_SEEDS.append(_f.raw[:28] + _f.raw[32:])
_FRAME_SEEDS = list(dict.fromkeys(_FRAME_SEEDS))
target("msgr2.frame.preamble_crc_fixed", _preamble_fixed, _FRAME_SEEDS)


def _frame_with_segments(data, ctx):
    """One frame carrying ``data`` split into its segments (valid CRCs), parsed back."""
    tag, cuts = ctx
    segs, at = [], 0
    for n in cuts:
        segs.append(data[at : at + n])
        at += n
    segs.append(data[at:])
    raw = fr.encode_frame(fr.Frame(tag, segs))
    for f in fr.FrameReader().feed(raw):
        if f.tag == fr.TAG_MESSAGE:
            fr.message_from_frame(f)
        else:
            fr.decode_control(f)


target("msgr2.frame.segments", _frame_with_segments,
       [(b"".join(f.segments), (f.tag, [len(s) for s in f.segments[:-1]]))
        for f in ALL_FRAMES if len(b"".join(f.segments)) < 4096], ctx_seeds=True, sweep=False)

_CONTROL_SEEDS: dict[int, list[bytes]] = {}
for _f in ALL_FRAMES:
    if _f.tag != fr.TAG_MESSAGE:
        _CONTROL_SEEDS.setdefault(_f.tag, []).append(_f.payload)
_A4 = EntityAddr(ADDR_TYPE_MSGR2, 7, "10.1.2.3", 3300)
_A6 = EntityAddr(ADDR_TYPE_MSGR2, 8, "fe80::1", 6800)
_AV = EntityAddrvec((_A4, _A6))
_SYNTH_CONTROL = [
    fr.Hello(8, _A6),
    fr.AuthRequest(2, [1, 2], b"\x0a" * 9),
    fr.AuthBadMethod(2, -13, [1, 2], [1, 2]),
    fr.AuthReplyMore(b"challenge"),
    fr.AuthRequestMore(b"answer"),
    fr.AuthDone(4242, 1, b"done"),
    fr.AuthSignature(bytes(range(32))),
    fr.ClientIdent(_AV, _A4, 1, 2, 3, 4, 5, 6),
    fr.ServerIdent(_AV, 1, 2, 3, 4, 5, 6),
    fr.IdentMissingFeatures(1 << 60),
    fr.SessionReconnect(_AV, 1, 2, 3, 4, 5),
    fr.SessionReset(True),
    fr.SessionRetry(3),
    fr.SessionRetryGlobal(4),
    fr.SessionReconnectOk(5),
    fr.Wait(),
    fr.Keepalive2((1700000000, 5)),
    fr.Keepalive2Ack((1700000000, 6)),
    fr.Ack(77),
]
for _p in _SYNTH_CONTROL:
    _CONTROL_SEEDS.setdefault(_p.TAG, []).append(_p.encode())
assert set(_CONTROL_SEEDS) >= set(fr.CONTROL_PAYLOADS)


def _control(tag):
    def fn(data, ctx):
        fr.CONTROL_PAYLOADS[tag].decode(data)
        fr.decode_control(fr.Frame(tag, [data]))

    return fn


for _tag, _cls in sorted(fr.CONTROL_PAYLOADS.items()):
    target(f"msgr2.control.{_cls.__name__}", _control(_tag), dict.fromkeys(_CONTROL_SEEDS[_tag]), weight=0.5)


def _msg_from_frame(data, frame):
    fr.message_from_frame(fr.Frame(fr.TAG_MESSAGE, [data, *frame.segments[1:]]))


target("msgr2.message_from_frame", _msg_from_frame,
       [(f.segments[0], f) for f in MSG_FRAMES[:12]], ctx_seeds=True, weight=0.5)


def _client_challenge(name: str) -> int:
    c, _ = _auth_frames(name)
    more = fr.AuthRequestMore.decode(c[2].payload).payload
    return ax.CephXAuthenticate.decode(Decoder(more, 2)).client_challenge


def _fixed_random(*values):
    vals = list(values)

    def rnd(n):
        return (vals.pop(0) if vals else 0x5A5A).to_bytes(8, "little")[:n].ljust(n, b"\0")

    return rnd


# -- messages -------------------------------------------------------------------------------

REGISTRY = {**monm.MON_MESSAGES, **osdm.OSD_MESSAGES}
_OLOC = osdm.ObjectLocator(1, "key", "ns", -1)
_HOB = osdm.HObject("rbd_data.1234.0000000000000001", "", ops.CEPH_NOSNAP, 0x1234abcd, False, "", 1)
_SPG = osdm.SpgT(PgT(1, 7))
_REDIRECT = osdm.RequestRedirect(osdm.ObjectLocator(2, "", "nsx", -1), "other-object")
_SYNTH_MSGS = [
    monm.MAuth(2, b"\x01\x00payload", 3),
    monm.MAuthReply(2, 0, 4242, b"result-bl", "ok"),
    monm.MMonGetMap(),
    monm.MOSDMap(FSID, {5: b"inc"}, {6: b"full"}, 1, 6, {1: [(2, 3)]}),
    monm.MMonSubscribe({"osdmap": (3, 0), "monmap": (0, 1)}, "host"),
    monm.MMonSubscribeAck(300, FSID),
    monm.MMonCommand(FSID, ['{"prefix": "status"}', "x"], b"inbl", tid=9),
    monm.MMonCommandAck(-2, "no such thing", ["a", "b"], b"outbl", tid=9),
    monm.MMonGetVersion(11, "osdmap"),
    monm.MMonGetVersionReply(11, 40, 2),
    monm.MConfig({"a": "1", "bb": "22"}),
    monm.MPoolOp(FSID, 1, 0x21, snapid=7, tid=3),
    monm.MPoolOpReply(FSID, 0, 40, b"\x08" + bytes(7), tid=3),
    osdm.MOSDOp(_SPG, 0x1234abcd, 40, 0x20, "obj", _OLOC,
                [ops.write(0, b"abc"), ops.call("rbd", "get_size", b"\x01" * 8), ops.stat()],
                tid=5, snaps=[4, 3], features=1 << 40),
    osdm.MOSDOpReply("obj", PgT(1, 7), 0x25, 0, 40, [ops.OSDOp(ops.CEPH_OSD_OP_READ, outdata=b"data!", rval=0),
                                                   ops.OSDOp(ops.CEPH_OSD_OP_STAT, outdata=b"s" * 16, rval=0)],
                     tid=5, user_version=9),
    osdm.MOSDOpReply("obj", PgT(1, 7), 0x25, -2, 40, [ops.OSDOp(ops.CEPH_OSD_OP_READ)], tid=6,
                     redirect=_REDIRECT),
    osdm.MOSDBackoff(_SPG, 40, ops.CEPH_OSD_BACKOFF_OP_BLOCK, 77, _HOB, _HOB),
    osdm.MWatchNotify(osdm.CEPH_WATCH_EVENT_NOTIFY, 1, 2, b"notify-payload", 3, 0, 4141),
]
MSG_SEEDS = [m for m in CAPTURED_MSGS if m.type in REGISTRY] + [m.to_message(0xFFFFFFFFFFFFFFFF)
                                                                for m in _SYNTH_MSGS]
assert {m.type for m in MSG_SEEDS} >= set(REGISTRY)


def _from_message(part):
    def fn(data, ctx):
        msg, version = ctx
        kw = dict(type=msg.type, front=msg.front, middle=msg.middle, data=msg.data, version=version,
                  compat_version=msg.compat_version, tid=msg.tid)
        kw[part] = data
        REGISTRY[msg.type].from_message(Message(**kw))

    return fn


for _t, _c in sorted(REGISTRY.items()):
    _seeds = []
    for _m in MSG_SEEDS:
        if _m.type == _t and len(_m.front) < 40000:
            for _v in sorted({_m.version, *range(0, _c.HEAD_VERSION + 2)}):
                _seeds.append((_m.front, (_m, _v)))
    target(f"message.{_c.__name__}.front", _from_message("front"), _seeds, ctx_seeds=True,
           weight=0.7, sweep=True)
for _c in (osdm.MOSDOp, osdm.MOSDOpReply, monm.MMonCommand, monm.MMonCommandAck):
    _seeds = [(m.data, (m, m.version)) for m in MSG_SEEDS if m.type == _c.MSG_TYPE and 0 < len(m.data) <= 4096]
    target(f"message.{_c.__name__}.data", _from_message("data"), _seeds, ctx_seeds=True, weight=0.3,
           sweep=False)

# -- MonMap --------------------------------------------------------------------------------

_MMONMAP = [m for m in CAPTURED_MSGS if m.type == monm.CEPH_MSG_MON_MAP]
_MONMAP_SEEDS = corpus("MonMap") + [Decoder(m.front).blob() for m in _MMONMAP]


def _legacy_monmap(v: int) -> bytes:
    """Hand-built pre-Nautilus MonMaps (v2: a u16 version; v4: a legacy name -> addr map,
    ranks computed by address).  Mon names are bytes to Ceph: one is not UTF-8."""
    addrs = {b"a": EntityAddr(1, 0, "10.0.0.1", 6789), b"b\xff": EntityAddr(1, 0, "10.0.0.2", 6789)}
    e = Encoder()
    if v == 2:
        e.u16(2).uuid(FSID).u32(3).u32(len(addrs))
        for k, a in addrs.items():
            a.encode_legacy(e.string(k))
        return e.utime((1, 2)).utime((3, 4)).bytes()
    with e.start(4, 3):
        e.uuid(FSID).u32(3).u32(len(addrs))
        for k, a in addrs.items():
            a.encode(e.string(k))
        e.utime((1, 2)).utime((3, 4))
        for f in (1, 3):
            with e.start(1, 1):
                e.u64(f)
    return e.bytes()


_MONMAP_SEEDS += [_legacy_monmap(2), _legacy_monmap(4)]
target("MonMap.decode", lambda b, c: MonMap.decode(b), _MONMAP_SEEDS)
target("mon_info_t", dec(MonInfo.decode), corpus("mon_info_t"))

# -- OSDMap, Incremental, CRUSH, pools -----------------------------------------------------

_CAPTURED_MOSDMAPS = [monm.MOSDMap.from_message(m) for m in CAPTURED_MSGS if m.type == monm.CEPH_MSG_OSD_MAP]
OSDMAP_SEEDS = (corpus("OSDMap") + [(VECTORS / "osdmap" / n).read_bytes() for n in ("live.bin", "balanced.bin")]
                + [b for m in _CAPTURED_MOSDMAPS for b in m.maps.values()])
INC_SEEDS = corpus("OSDMap::Incremental") + [b for m in _CAPTURED_MOSDMAPS for b in m.incremental_maps.values()]
CRUSH_SEEDS = corpus("CrushWrapper") + [p.read_bytes() for p in sorted((VECTORS / "crush").glob("*.bin"))]

target("OSDMap.decode", lambda b, c: OSDMap.decode(b), OSDMAP_SEEDS, weight=2.0)
target("OSDMap.Incremental.decode", lambda b, c: Incremental.decode(b), INC_SEEDS, weight=1.5)


def _refresh_crc(data: bytes, incremental: bool) -> bytes:
    """Recompute the crc32c a mutated (wrapper v8) map carries at the end of its body, so
    that mutations get past the CRC check into the rest of decoding and into use."""
    if len(data) < 6 or data[0] < 8:
        return data
    (n,) = struct.unpack_from("<I", data, 2)
    end = 6 + n
    tail = 8 if incremental else 4
    if end > len(data) or n < tail:
        return data
    b = bytearray(data)
    crc_at = end - tail
    crc = crc32c(b[:crc_at], 0xFFFFFFFF)
    if incremental:
        crc = crc32c(b[crc_at + 4 : end], crc)
    struct.pack_into("<I", b, crc_at, crc)
    return bytes(b)


FUZZ_CRUSH_WORK = 30_000  # mapper.MAX_WORK while fuzzing: a hostile map fails fast


@contextmanager
def _crush_work(limit: int = FUZZ_CRUSH_WORK):
    old = crush_mapper.MAX_WORK
    crush_mapper.MAX_WORK = limit
    try:
        yield
    finally:
        crush_mapper.MAX_WORK = old


def _place_some(m: OSDMap) -> None:
    for pid in sorted(m.pools)[:3]:
        pool = m.pools[pid]
        for ps in range(min(pool.pg_num, 3)):
            m.pg_to_up_acting_osds(PgT(pid, ps))
        m.pg_to_up_acting_osds(m.raw_pg_to_pg(m.object_locator_to_pg(pid, b"some-object", namespace=b"ns")))


def _osdmap_and_place(data, ctx):
    m = OSDMap.decode(_refresh_crc(data, False))
    with _crush_work():
        _place_some(m)


def _incremental_apply(data, ctx):
    inc = Incremental.decode(_refresh_crc(data, True))
    base = OSDMap()
    base.fsid = inc.fsid
    base.epoch = inc.epoch - 1
    base.set_max_osd(16)
    base.apply_incremental(inc)
    with _crush_work():
        _place_some(base)


# placement without a CRUSH map is refused (FunctionNotSupported); apply_incremental refuses
# an epoch that does not follow (InvalidArgumentError): both documented, typed refusals
# (placement is CRUSH hashing: not traced, its memory is bounded by result_max; the
# decoding it starts with is traced by the targets above)
target("OSDMap.decode+placement", _osdmap_and_place, OSDMAP_SEEDS, allowed=PROTO + (FunctionNotSupported,),
       weight=2.0, sweep=False, sweep_len=True, trace=False)
target("OSDMap.Incremental.decode+apply", _incremental_apply, INC_SEEDS,
       allowed=PROTO + (FunctionNotSupported, InvalidArgumentError), weight=1.5, sweep=False, trace=False)


def _crush(data, ctx):
    return CrushMap.decode(Decoder(data))


def _crush_and_map(data, ctx):
    m = CrushMap.from_bytes(data)
    weights = [0x10000] * min(m.max_devices, 64)
    with _crush_work():
        for ruleno, rule in enumerate(m.rules[:4]):
            if rule is not None:
                for x in range(3):
                    m.do_rule(ruleno, x, 3, weights)
                    m.do_rule(ruleno, x, 3, weights, choose_args_index=-1)


target("CrushMap.decode", _crush, CRUSH_SEEDS)
target("CrushMap.from_bytes+do_rule", _crush_and_map, CRUSH_SEEDS, sweep=False, sweep_len=True, trace=False)
target("pg_pool_t", dec(PgPool.decode), corpus("pg_pool_t"))
target("pool_opts_t", dec(PoolOpts.decode), corpus("pool_opts_t"))
target("pool_snap_info_t", dec(PoolSnapInfo.decode), corpus("pool_snap_info_t"))
target("pg_merge_meta_t", dec(PgMergeMeta.decode), corpus("pg_merge_meta_t"))
target("osd_info_t", dec(OsdInfo.decode), corpus("osd_info_t"))
target("osd_xinfo_t", dec(OsdXinfo.decode), corpus("osd_xinfo_t"))

# -- shared types ----------------------------------------------------------------------------

target("entity_addr_t", dec(EntityAddr.decode),
       corpus("entity_addr_t") + built(_A4, _A6) + [_A4.encode_legacy(Encoder()).bytes()])
target("entity_addrvec_t", dec(EntityAddrvec.decode), corpus("entity_addrvec_t") + built(_AV))
target("entity_name_t", dec(EntityNameT.decode), corpus("entity_name_t"))
target("EntityName", dec(EntityName.decode), corpus("EntityName"))
target("pg_t", dec(PgT.decode), corpus("pg_t"))
target("spg_t", dec(osdm.SpgT.decode), corpus("spg_t"))
target("osd_reqid_t", dec(osdm.OsdReqid.decode), corpus("osd_reqid_t"))
target("object_locator_t", dec(osdm.ObjectLocator.decode), corpus("object_locator_t"))
target("hobject_t", dec(osdm.HObject.decode), corpus("hobject_t"))
target("request_redirect_t", dec(osdm.RequestRedirect.decode), built(_REDIRECT))
target("watch_item_t", dec(ops.WatchItem.decode), corpus("watch_item_t"))

# -- cephx -------------------------------------------------------------------------------------

for _name, _cls in [
    ("CryptoKey", CryptoKey), ("CephXTicketBlob", ax.CephXTicketBlob), ("AuthTicket", ax.AuthTicket),
    ("CephXServiceTicket", ax.CephXServiceTicket), ("CephXServiceTicketInfo", ax.CephXServiceTicketInfo),
    ("CephXAuthenticate", ax.CephXAuthenticate), ("CephXAuthorize", ax.CephXAuthorize),
    ("CephXAuthorizeReply", ax.CephXAuthorizeReply), ("CephXAuthorizeChallenge", ax.CephXAuthorizeChallenge),
    ("CephXServerChallenge", ax.CephXServerChallenge), ("CephXChallengeBlob", ax.CephXChallengeBlob),
    ("CephXRequestHeader", ax.CephXRequestHeader), ("CephXResponseHeader", ax.CephXResponseHeader),
    ("CephXServiceTicketRequest", ax.CephXServiceTicketRequest), ("EntityAuth", ax.EntityAuth),
    ("ExpiringCryptoKey", ax.ExpiringCryptoKey), ("AuthCapsInfo", ax.AuthCapsInfo),
]:
    target(f"cephx.{_name}", (lambda c: lambda b, ctx: c.from_bytes(b))(_cls), corpus(_name), weight=0.5)


def _challenged(name: str) -> CephxClient:
    c, s = _auth_frames(name)
    cl = CephxClient(ADMIN, KEY, ALL_SERVICES, random_bytes=_fixed_random(_client_challenge(name), 1, 2, 3))
    cl.get_auth_request(None)
    cl.handle_auth_reply_more(None, fr.AuthReplyMore.decode(s[1].payload).payload)
    return cl


@lru_cache(maxsize=None)
def _auth_done(name: str) -> fr.AuthDone:
    return fr.AuthDone.decode(_auth_frames(name)[1][2].payload)


def _authenticated(name: str = "02-3300") -> CephxClient:
    cl = _challenged(name)
    d = _auth_done(name)
    cl.handle_auth_done(None, d.global_id, d.con_mode, d.payload)
    return cl


def _mon_challenge(data, ctx):
    cl = CephxClient(ADMIN, KEY, ALL_SERVICES, random_bytes=_fixed_random(1))
    cl.get_auth_request(None)
    cl.handle_auth_reply_more(None, data)


def _mon_auth_done(data, name):
    _challenged(name).handle_auth_done(None, 4242, 1, data)


def _mon_reply_more_again(data, name):
    # a second AUTH_REPLY_MORE carries a cephx response like AUTH_DONE's
    _challenged(name).handle_auth_reply_more(None, data)


target("cephx.mon.challenge", _mon_challenge,
       [fr.AuthReplyMore.decode(_auth_frames(n)[1][1].payload).payload for n in MON_SESSIONS])
target("cephx.mon.auth_done", _mon_auth_done, [(_auth_done(n).payload, n) for n in MON_SESSIONS],
       allowed=CRYPTO, ctx_seeds=True, weight=1.5)
target("cephx.mon.reply_more_response", _mon_reply_more_again, [(_auth_done(n).payload, n) for n in MON_SESSIONS[2:4]],
       allowed=CRYPTO, ctx_seeds=True, sweep=False)


def _split_auth_done(payload: bytes) -> tuple[bytes, bytes]:
    """Real AUTH_DONE payload -> (header + AUTH ticket only, extra service tickets blob)."""
    d = Decoder(payload)
    d.skip(6)
    d.u8()
    for _ in range(d.u32()):
        d.skip(5)
        d.blob()
        d.u8()
        d.blob()
    head = payload[: d.pos]
    d.blob()
    return head, d.blob()


@lru_cache(maxsize=None)
def _ticket_reply_seed(name: str) -> bytes:
    _, extra = _split_auth_done(_auth_done(name).payload)
    return ax.CephXResponseHeader(CEPHX_GET_PRINCIPAL_SESSION_KEY, 0).to_bytes() + extra


def _service_ticket_reply(data, name):
    head, _ = _split_auth_done(_auth_done(name).payload)
    cl = _challenged(name)
    d = _auth_done(name)
    cl.handle_auth_done(None, d.global_id, d.con_mode, head)
    cl.handle_service_ticket_reply(data)


target("cephx.mon.service_ticket_reply", _service_ticket_reply,
       [(_ticket_reply_seed(n), n) for n in ("02-3300", "07-3300")], allowed=CRYPTO, ctx_seeds=True)

_SVC = [("02-3300", "04-6818", ENTITY_TYPE_OSD), ("02-3300", "03-6808", ENTITY_TYPE_MGR),
        ("07-3300", "09-6818", ENTITY_TYPE_OSD)]


@lru_cache(maxsize=None)
def _svc_nonce(mon: str, svc_stream: str, svc: int) -> int:
    cl = _authenticated(mon)
    c, _ = _auth_frames(svc_stream)
    d = Decoder(fr.AuthRequest.decode(c[1].payload).payload)
    d.u8(), d.u64(), d.u32()
    ax.CephXTicketBlob.decode(d)
    return ax.CephXAuthorize.from_bytes(decode_decrypt(cl.tickets[svc].session_key, d, usage=CEPHX_KEY_USAGE_AUTHORIZE)).nonce


def _hooks(ctx, request: bool = True):
    mon, svc_stream, svc = ctx
    cl = _authenticated(mon)
    cl._random_bytes = _fixed_random(_svc_nonce(mon, svc_stream, svc))
    h = cl.authorizer_hooks(svc)
    if request:
        h.get_auth_request(None)
    return h


def _authorizer_more(data, ctx):
    _hooks(ctx).handle_auth_reply_more(None, data)


def _authorizer_done(data, ctx):
    _hooks(ctx).handle_auth_done(None, 4242, 1, data)


target("cephx.authorizer.challenge", _authorizer_more,
       [(fr.AuthReplyMore.decode(_auth_frames(s)[1][1].payload).payload, (m, s, v)) for m, s, v in _SVC],
       allowed=CRYPTO, ctx_seeds=True)
target("cephx.authorizer.done", _authorizer_done,
       [(fr.AuthDone.decode(_auth_frames(s)[1][2].payload).payload, (m, s, v)) for m, s, v in _SVC],
       allowed=CRYPTO, ctx_seeds=True)

# -- cephx with AES256KRB5 keys: real Tentacle sessions (tests/unit/vectors) ----------------------

_TENTACLE = {"aes256k": cephx_vectors.load("tentacle-aes256k.json"), "mixed": cephx_vectors.load("tentacle-mixed.json")}
_KEY2 = CryptoKey.from_base64(_TENTACLE["aes256k"]["key"])


def _krb5_decrypt(data, usage):
    decrypt_enc_bl(_KEY2, data, usage=usage)


# raw envelopes under each usage the client decrypts with (seeded from the key's own output)
target("crypto.aes256krb5.decrypt_enc_bl", _krb5_decrypt,
       [(encrypt_enc_bl(_KEY2, body, usage=u, confounder=bytes(range(16))), u)
        for u, body in ((CEPHX_KEY_USAGE_TICKET_SESSION_KEY, bytes(40)), (CEPHX_KEY_USAGE_AUTHORIZE_REPLY, bytes(9)),
                        (CEPHX_KEY_USAGE_AUTH_CONNECTION_SECRET, b""))],
       allowed=CRYPTO, ctx_seeds=True)
target("crypto.CryptoKey.from_base64", lambda b, ctx: CryptoKey.from_base64(b.decode("latin-1")),
       [v["key"].encode() for v in _TENTACLE.values()], allowed=(ConfigError,))


def _tentacle_step(data, ctx):
    """Replay a real Tentacle session up to event ``i`` and feed ``data`` as that event's
    server bytes (AUTH_DONE, the OSD's challenge or reply, MAuthReply)."""
    vec, i = ctx
    r = cephx_vectors.Replay(_TENTACLE[vec])
    r.run(i)
    ev = r.events[i]
    args = [bytes.fromhex(a) if isinstance(a, str) else a for a in ev["args"]]
    pos = max(j for j, a in enumerate(args) if isinstance(a, bytes))  # the server's bytes
    args[pos] = data
    r.step(ev, args)


for _vec in _TENTACLE:
    _ev = _TENTACLE[_vec]["events"]
    for _what, _call in (("mon.auth_done", "handle_auth_done"), ("authorizer.challenge", "handle_auth_reply_more"),
                         ("authorizer.done", "handle_auth_done"), ("mon.service_ticket_reply", "handle_service_ticket_reply")):
        _seeds = [([bytes.fromhex(a) for a in e["args"] if isinstance(a, str)][-1], (_vec, i))
                  for i, e in enumerate(_ev) if e["call"] == _call and (e["who"] == "mon") == _what.startswith("mon")]
        target(f"cephx.{_vec}.{_what}", _tentacle_step, _seeds, allowed=CRYPTO, ctx_seeds=True)

# -- the whole client state machine on captured server streams --------------------------------


def _replay(data: bytes, peer_addr: EntityAddr, peer_type: int, auth) -> None:
    """The client state machine on a (mutated) server stream, each message decoded as the
    mon/OSD session would.  With the capture's key, client challenge and nonces our
    handshake bytes equal librados', so the unmutated stream reaches READY (our banner then
    has required=0, as librados', for the AUTH_SIGNATURE HMAC to match)."""
    p = ClientProtocol(peer_addr, auth, peer_type=peer_type, msgr2_required=0)
    p.initiate()
    for i in range(0, len(data), 1500):
        for ev in p.receive_data(data[i : i + 1500]):
            msg = getattr(ev, "message", None)
            if msg is not None and msg.type in REGISTRY:
                REGISTRY[msg.type].from_message(msg)


def _mon_session(data, name):
    # librados' first connections wanted the AUTH ticket only, the main one every service
    want = ALL_SERVICES if name in ("02-3300", "07-3300") else 0
    auth = CephxClient(ADMIN, KEY, want, random_bytes=_fixed_random(_client_challenge(name), 1, 2, 3))
    _replay(data, EntityAddr(ADDR_TYPE_MSGR2, 0, "10.77.0.1", 3300), ENTITY_TYPE_MON, auth)


def _osd_session(data, ctx):
    peer = fr.Hello.decode(_auth_frames(ctx[1])[0][0].payload).peer_addr
    _replay(data, peer, ctx[2], _hooks(ctx, request=False))


target("msgr2.ClientProtocol.mon_session", _mon_session,
       [(STREAMS[n + ".s2c"], n) for n in ("00-3300", "02-3300")], allowed=HANDSHAKE, ctx_seeds=True,
       weight=1.5, sweep=False)
target("msgr2.ClientProtocol.osd_session", _osd_session,
       [(STREAMS[s + ".s2c"], (m, s, v)) for m, s, v in _SVC if len(STREAMS[s + ".s2c"]) < 4096],
       allowed=HANDSHAKE, ctx_seeds=True, weight=1.5, sweep=False)


# -- msgr2.1 secure mode (the librados session captured in secure mode) ------------------------


SEC_CAPS = {n: sec.Captured(n) for n in sec.NAMES}
SEC_SECRETS = {n: sec._secret_of(c) for n, c in SEC_CAPS.items()}


def _sec_rest(cap, side: str) -> bytes:
    if side == "c2s":
        return cap.c2s[cap.c_plain_len:]
    return cap.s2c[26 + sum(len(f.raw) for f in cap.s_plain):]


def _decode_frames(frames) -> None:
    for f in frames:
        if f.tag == fr.TAG_MESSAGE:
            msg = fr.message_from_frame(f)
            if msg.type in REGISTRY:
                REGISTRY[msg.type].from_message(msg)
        else:
            fr.decode_control(f)


def _secure_stream(data, ctx):
    """Sealed frames as the receiver of that direction decrypts them."""
    secret, crossed, step = ctx
    r = fr.SecureFrameReader(OnWireCrypto(secret, crossed=crossed))
    for i in range(0, len(data), step):
        _decode_frames(r.feed(data[i : i + step]))


target("msgr2.SecureFrameReader.streams", _secure_stream,
       [(_sec_rest(c, side), (SEC_SECRETS[n], side == "c2s", step))
        for n, c in SEC_CAPS.items() for side in ("c2s", "s2c") for step in (1 << 20, 61)],
       ctx_seeds=True, sweep_budget=300)


def _secure_plain_frames():
    out = []
    for n, c in SEC_CAPS.items():
        for f in [*c.secure_frames(SEC_SECRETS[n])[0], *c.secure_frames(SEC_SECRETS[n])[1]]:
            out.append(f)
    return out


def _plaintext(f: fr.Frame) -> bytes:
    """A secure frame's plaintext as sealed: preamble, padded segment 0 (inline part
    first), padded segments 1.., epilogue."""
    pre, nseg = fr._encode_preamble(f)
    pad = lambda b, n=16: b + bytes(-len(b) % n)  # noqa: E731
    s0 = f.segments[0]
    out = pre + (s0 + bytes(48 - len(s0)) if len(s0) <= 48 else pad(s0))
    if nseg > 1:
        out += b"".join(pad(x) for x in f.segments[1:nseg]) + bytes((f.late_status,)) + bytes(15)
    return out


def _secure_resealed(data, ctx):
    """A (mutated) plaintext frame sealed with the right keys and nonces, its preamble
    CRC recomputed: absurd lengths and counts reach the reader's checks with valid tags."""
    pre = data[:28].ljust(28, b"\0")
    pre += struct.pack("<I", crc32c(pre, 0))
    body = data[32:]
    tx = OnWireCrypto(SEC_SECRETS["02-30720"], crossed=True)
    wire = tx.encrypt(pre + body[:48].ljust(48, b"\0"))
    rest = body[48:]
    p0 = (struct.unpack_from("<I", pre, 2)[0] + 15) & ~15
    cut = max(0, min(len(rest), p0 - 48))
    if cut:
        wire += tx.encrypt(rest[:cut])
        rest = rest[cut:]
    if rest:
        wire += tx.encrypt(rest)
    r = fr.SecureFrameReader(OnWireCrypto(SEC_SECRETS["02-30720"]))
    _decode_frames(r.feed(wire))


_SEC_PLAIN = list(dict.fromkeys(_plaintext(f) for f in _secure_plain_frames() if len(b"".join(f.segments)) < 4096))
target("msgr2.secure.resealed", _secure_resealed, _SEC_PLAIN)


def _secure_segments(data, ctx):
    """One frame carrying ``data`` split into segments, sealed and read back."""
    tag, cuts = ctx
    segs, at = [], 0
    for n in cuts:
        segs.append(data[at : at + n])
        at += n
    segs.append(data[at:])
    secret = SEC_SECRETS["04-30738"]
    wire = b"".join(fr.encode_frame_secure_parts(fr.Frame(tag, segs), OnWireCrypto(secret, crossed=True)))
    _decode_frames(fr.SecureFrameReader(OnWireCrypto(secret)).feed(wire))


target("msgr2.secure.segments", _secure_segments,
       [(b"".join(f.segments), (f.tag, [len(x) for x in f.segments[:-1]]))
        for f in _secure_plain_frames() if len(b"".join(f.segments)) < 4096], ctx_seeds=True, sweep=False)


def _secure_mon_session(data, name):
    cap = SEC_CAPS[name]
    rnd = sec.Randoms()
    rnd.values += [sec._authenticate_of(cap).client_challenge, 1, 2, 3]
    auth = CephxClient(ADMIN, sec.KEY, ALL_SERVICES, con_modes=(2,), random_bytes=rnd)
    _replay(data, fr.decode_control(cap.c_plain[0]).peer_addr, ENTITY_TYPE_MON, auth)


def _secure_osd_session(data, name):
    cap = SEC_CAPS[name]
    rnd = sec.Randoms()
    cx, _ = sec._mon_cephx(SEC_CAPS[sec.MON_OF[name]], rnd)
    cx.service_con_modes = (2,)
    service, nonce = sec._authorizer_nonce(cap, cx)
    rnd.values += [nonce, 1, 2, 3]
    _replay(data, fr.decode_control(cap.c_plain[0]).peer_addr, service, cx.authorizer_hooks(service))


target("msgr2.ClientProtocol.secure_mon_session", _secure_mon_session,
       [(SEC_CAPS[n].s2c, n) for n in ("00-30720", "02-30720")], allowed=HANDSHAKE, ctx_seeds=True,
       weight=1.5, sweep=False)
target("msgr2.ClientProtocol.secure_osd_session", _secure_osd_session,
       [(SEC_CAPS[n].s2c, n) for n in ("04-30738", "09-30738")], allowed=HANDSHAKE, ctx_seeds=True,
       weight=1.5, sweep=False)


# -- msgr1: addresses, connect/reply, the message stream, the client core ------------------

_V1 = {n: cap1.split(n) for n in cap1.NAMES}


def _v1_stream(data, ctx):
    sd = v1.StreamDecoder(msg_auth=ctx)
    for i in range(0, len(data), 977):
        sd.push(data[i : i + 977])
        while (it := sd.next()) is not None:
            if it[0] == v1.TAG_MSG:
                m = it[1].to_message()
                if m.type in REGISTRY:
                    REGISTRY[m.type].from_message(m)


target("msgr1.decode_entity_addr", lambda b, c: v1.decode_entity_addr(b),
       [v1.encode_entity_addr(a) for c in _V1.values() for a in (c.server_addr, c.addr_for_me, c.client_addr)])
target("msgr1.ConnectMsg.decode", lambda b, c: v1.ConnectMsg.decode(b),
       [cm.encode() for c in _V1.values() for cm in c.connects])
target("msgr1.decode_header", lambda b, c: v1.decode_header(b),
       [raw[1 : 1 + v1.HEADER.size] for c in _V1.values()
        for tag, _, raw in cap1.items(c.s2c_messages) if tag == v1.TAG_MSG])
target("msgr1.StreamDecoder", _v1_stream,
       [(d, auth) for c in _V1.values() for d in (c.c2s_messages, c.s2c_messages) if 0 < len(d) < 8192
        for auth in (True,)]
       + [(b"".join(v1.encode_message_parts(Message(type=9999, front=b"abc", data=b"d", seq=1), 1, 0, msg_auth=False)),
           False)], ctx_seeds=True, weight=1.5)


class _V1Hooks:
    """Captured authorizers; a reply that is not the captured one is an AuthError."""

    def __init__(self, c):
        self.c = c
        self.key = CryptoKey(secret=bytes(16))

    def get_auth_request(self, con):
        return 2, [1], self.c.connects[0].authorizer

    def handle_auth_reply_more(self, con, payload):
        return self.c.connects[-1].authorizer

    def handle_auth_done(self, con, global_id, con_mode, payload):
        if payload != self.c.replies[-1].authorizer:
            raise AuthError("authorizer reply differs")
        return self.key.secret, b""

    def handle_auth_bad_method(self, con, *a):
        raise AuthError("refused")

    def message_signing_key(self, con):
        return None  # the session key is not known here: decode the stream, skip signatures


def _v1_session(data, name):
    c = _V1[name]
    peer_type = ENTITY_TYPE_MON if c.port == cap1.MON_PORT else ENTITY_TYPE_OSD
    p = v1.ClientProtocolV1(
        c.server_addr, _V1Hooks(c), peer_type=peer_type, my_addr=EntityAddr(3, c.client_addr.nonce),
        features=c.connects[0].features, session=Session(global_seq=c.connects[0].global_seq),
    )
    p.initiate()
    for i in range(0, len(data), 1500):
        for ev in p.receive_data(data[i : i + 1500]):
            msg = getattr(ev, "message", None)
            if msg is not None and msg.type in REGISTRY:
                REGISTRY[msg.type].from_message(msg)


target("msgr1.ClientProtocolV1.session", _v1_session,
       [(_V1[n].s2c, n) for n in ("00-15361", "04-15366", "09-15366")], allowed=HANDSHAKE, ctx_seeds=True,
       weight=1.5, sweep=False)


# -- OSD op outdata -----------------------------------------------------------------------------

target("ops.decode_stat", lambda b, c: ops.decode_stat(b), [Encoder().u64(4096).utime((1700000000, 5)).bytes()])
target("ops.decode_omap_get_keys", lambda b, c: ops.decode_omap_get_keys(b),
       [Encoder().list(["a", "key2", "k\xe9y"], Encoder.string).bool(True).bytes()])
_VALS = Encoder().map({"a": b"1", "key2": b"value" * 3}, Encoder.string, Encoder.blob)
target("ops.decode_omap_get_vals", lambda b, c: ops.decode_omap_get_vals(b), [Encoder().raw(_VALS.bytes()).bool(False).bytes()])
target("ops.decode_omap_get_vals_by_keys", lambda b, c: ops.decode_omap_get_vals_by_keys(b), [_VALS.bytes()])
target("ops.decode_sparse_read", lambda b, c: ops.decode_sparse_read(b),
       [Encoder().u32(2).u64(0).u64(3).u64(4096).u64(2).blob(b"abcde").bytes()])
target("ops.decode_list_watchers", lambda b, c: ops.decode_list_watchers(b), corpus("obj_list_watch_response_t"))
target("ops.decode_getxattr", lambda b, c: ops.decode_getxattr(b), [b"value"], weight=0.1, sweep=False)

# -- cls_rbd / cls_lock replies -------------------------------------------------------------------

_U64 = Encoder().u64(0x1234).bytes()


def _list_locks_reply(names) -> bytes:
    e = Encoder()
    with e.start(1, 1):
        e.list(names, Encoder.string)
    return e.bytes()


for _fn, _seeds in [
    (cls.decode_get_features, [Encoder().u64(61).u64(0).bytes()]),
    (cls.decode_get_size, [Encoder().u8(22).u64(1 << 30).bytes()]),
    (cls.decode_u64, [_U64]),
    (cls.decode_s64, [Encoder().s64(-1).bytes()]),
    (cls.decode_string, [Encoder().string("rbd_data.1234").bytes()]),
    (cls.decode_utime, [Encoder().utime((1, 2)).bytes()]),
    (cls.decode_get_snapcontext, corpus("SnapContext") + [Encoder().u64(9).list([9, 4, 1], Encoder.u64).bytes()]),
    (cls.decode_get_stripe_unit_count, [Encoder().u64(1 << 22).u64(1).bytes()]),
    (cls.decode_get_protection_status, [b"\x02"]),
    (cls.decode_snapshot_get, corpus("cls::rbd::SnapshotInfo")),
    (cls.decode_parent_get, corpus("cls::rbd::ParentImageSpec")),
    (cls.decode_parent_overlap_get, [b"\x01" + _U64, b"\x00"]),
    (cls.decode_get_parent, [Encoder().s64(1).string("abc").u64(4).u64(1 << 20).bytes()]),
    (cls.decode_dir_list, [Encoder().map({"img": "id1", "img2": "id2"}, Encoder.string, Encoder.string).bytes()]),
    (cls.decode_get_info, corpus("cls_lock_get_info_reply")),
    (cls.decode_list_locks, [_list_locks_reply(["lock", "rbd_lock"])]),
]:
    target(f"cls.{_fn.__name__}", (lambda f: lambda b, c: f(b))(_fn), _seeds, weight=0.4)

for _name, _cls in [
    ("cls::rbd::ChildImageSpec", cls.ChildImageSpec), ("cls::rbd::ParentImageSpec", cls.ParentImageSpec),
    ("cls::rbd::SnapshotNamespace", cls.SnapshotNamespace), ("cls::rbd::SnapshotInfo", cls.SnapshotInfo),
    ("cls_rbd_parent", cls.ClsRbdParent), ("cls_rbd_snap", cls.ClsRbdSnap),
    ("rados::cls::lock::locker_id_t", cls.LockerId), ("rados::cls::lock::locker_info_t", cls.LockerInfo),
    ("rados::cls::lock::lock_info_t", cls.LockInfo), ("cls_lock_lock_op", cls.LockOp),
    ("cls_lock_unlock_op", cls.UnlockOp), ("cls_lock_break_op", cls.BreakOp),
    ("cls_lock_assert_op", cls.AssertOp),
]:
    target(f"cls.{_name}", dec(_cls.decode), corpus(_name), weight=0.4)

TARGET_IDS = [t.name for t in TARGETS]
assert len(set(TARGET_IDS)) == len(TARGET_IDS)
BY_NAME = {t.name: t for t in TARGETS}


# -- the check ----------------------------------------------------------------------------------


class _Hang(BaseException):
    """Raised by the SIGALRM guard inside a decoder that runs too long (a BaseException so
    that no ``except Exception`` in the code under test can swallow it)."""


@contextmanager
def _hang_guard(seconds: float):
    """Interrupt the block after ``seconds`` of CPU time (ITIMER_VIRTUAL: a busy loop burns
    CPU; other processes on a loaded machine do not count)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise _Hang()

    old = signal.signal(signal.SIGVTALRM, on_alarm)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, old)


def check(t: Target, data: bytes, ctx: Any) -> None:
    """Run ``t`` on ``data``: only allowed errors, in time, within the memory bound.

    Allocations are traced only around the call (tracing hypothesis itself would triple
    the run time)."""
    tracing = tracemalloc.is_tracing()
    if tracing:  # someone else traces (e.g. python -X tracemalloc): measure within it
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
    elif t.trace:
        base = 0
        tracemalloc.start()
    t0 = time.thread_time()  # CPU time: other processes on a busy machine do not count
    try:
        with _hang_guard(HANG_LIMIT):
            t.fn(data, ctx)
    except _Hang:
        pytest.fail(f"{t.name}: hang (> {HANG_LIMIT:g} s) on {len(data)} bytes {data[:64].hex()}...")
    except t.allowed:
        pass
    finally:
        elapsed = time.thread_time() - t0
        peak = 0
        if tracing or t.trace:
            peak = tracemalloc.get_traced_memory()[1] - base
        if t.trace and not tracing:
            tracemalloc.stop()
    assert elapsed < TIME_LIMIT, f"{t.name}: {elapsed:.2f} s of CPU on {len(data)} bytes"
    assert peak < MEM_LIMIT, f"{t.name}: allocated {peak / 2**20:.0f} MiB on {len(data)} bytes"


# -- 1. every seed is valid input (so mutations start from real encodings) ---------------------


@pytest.mark.parametrize("name", TARGET_IDS)
def test_seeds_decode(name):
    t = BY_NAME[name]
    for data, ctx in t.seeds:
        if t.name.startswith(("msgr2.ClientProtocol", "cephx.mon.reply_more_response")):
            check(t, data, ctx)  # their seeds end in an expected, typed refusal
            continue
        if name.startswith("message.") and ctx[1] != ctx[0].version:
            check(t, data, ctx)  # the same front under another version: may be refused
            continue
        t.fn(data, ctx)


# -- 2. deterministic sweeps: truncation at every length, huge length fields everywhere --------

BIG = (0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 0x10000000)


def _offsets(n: int, salt: str, nseeds: int, budget: int) -> list[int]:
    """Offsets ``0..n-1`` of one of ``nseeds`` seeds to visit: all of them for small seeds
    (or with PYCEPH_FUZZ_SWEEP=1), else a fixed pseudo-random sample sharing the budget."""
    points = max(16, budget // nseeds)
    if FULL_SWEEP or n <= points:
        return list(range(n))
    rnd = random.Random(f"{salt}:{n}")
    return sorted(rnd.sample(range(n), points))


@pytest.mark.parametrize("name", [t.name for t in TARGETS if t.sweep])
def test_truncated_everywhere(name):
    t = BY_NAME[name]
    for data, ctx in t.seeds:
        for cut in _offsets(len(data), name, len(t.seeds), t.sweep_budget):
            check(t, data[:cut], ctx)


@pytest.mark.parametrize("name", [t.name for t in TARGETS if t.sweep_len])
def test_huge_length_fields_everywhere(name):
    """Every offset read as a u32 length/count set to 4 GiB-1, 2 GiB, ...: must be refused
    (or read as a plain number) without allocating or looping that much."""
    t = BY_NAME[name]
    for data, ctx in t.seeds:
        if len(data) < 4:
            continue
        for i, at in enumerate(_offsets(len(data) - 3, name + "/len", len(t.seeds), t.sweep_budget)):
            b = bytearray(data)
            struct.pack_into("<I", b, at, BIG[i % len(BIG)])
            check(t, bytes(b), ctx)


# -- 3. hypothesis: mutations of real encodings ---------------------------------------------------

INTERESTING = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
               0xFFFFFFFE, 0xFFFFFFFF, 1 << 32, 1 << 63, (1 << 64) - 1]


@st.composite
def mutated(draw, t: Target):
    data, ctx = draw(st.sampled_from(t.seeds))
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["trunc", "byte", "flip", "int", "insert", "delete", "dup", "splice"]))
        pos = draw(st.integers(0, len(b)))
        if kind == "trunc":
            del b[pos:]
        elif kind == "byte" and pos < len(b):
            b[pos] = draw(st.integers(0, 255))
        elif kind == "flip" and pos < len(b):
            b[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "int":
            width = draw(st.sampled_from([1, 2, 4, 8]))
            v = draw(st.sampled_from(INTERESTING + [len(b), len(b) + 1, len(b) - pos]))
            b[pos : pos + width] = (v % (1 << (8 * width))).to_bytes(width, "little")
        elif kind == "insert":
            b[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del b[pos : pos + draw(st.integers(1, 16))]
        elif kind == "dup":
            n = draw(st.integers(1, 64))
            b[pos:pos] = b[pos : pos + n]
        elif kind == "splice":
            other, _ = draw(st.sampled_from(t.seeds))
            at = draw(st.integers(0, len(other)))
            b[pos:] = other[at:]
    return bytes(b), ctx


def _examples(t: Target) -> int:
    if EXAMPLES:
        return EXAMPLES
    return max(5, int(40 * t.weight))


@pytest.mark.parametrize("name", TARGET_IDS)
def test_mutated_real_encodings(name):
    t = BY_NAME[name]

    @settings(max_examples=_examples(t), deadline=None, derandomize=not EXAMPLES, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])
    @given(mutated(t))
    def run(case):
        check(t, *case)

    run()


@pytest.mark.parametrize("name", [t.name for t in TARGETS if t.weight >= 0.4])
def test_random_bytes(name):
    """Pure garbage (no seed) of up to 512 bytes."""
    t = BY_NAME[name]
    ctxs = [ctx for _, ctx in t.seeds]

    @settings(max_examples=max(5, _examples(t) // 4), deadline=None, derandomize=not EXAMPLES, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=512), st.sampled_from(ctxs))
    def run(data, ctx):
        check(t, data, ctx)

    run()


# -- 4. the harness itself catches what it is meant to catch ---------------------------------------


def test_harness_flags_wrong_exception_hang_and_allocation(monkeypatch):
    with pytest.raises(IndexError):
        check(Target("bad", lambda b, c: [][1], [(b"", None)]), b"", None)

    def spin(b, c):
        while True:
            pass

    monkeypatch.setattr(sys.modules[__name__], "HANG_LIMIT", 0.3)
    with pytest.raises(pytest.fail.Exception, match="hang"):
        check(Target("spin", spin, [(b"", None)]), b"", None)
    with pytest.raises(AssertionError, match="MiB"):
        check(Target("alloc", lambda b, c: bytearray(MEM_LIMIT + (1 << 20)), [(b"", None)]), b"", None)


def test_hostile_crush_rule_is_refused_in_bounded_time():
    """A rule asking for 2**31-1 replicas with every device out (or 2**32-1 retries) loops
    for minutes in C and hours in Python; the mapper's work bound stops it with a
    DecodeError.  Real maps with every device out stay well under the default bound."""
    raw = (VECTORS / "crush" / "straw2-host-rack.bin").read_bytes()
    m = CrushMap.from_bytes(raw)
    out = [0] * m.max_devices
    legit = [r for r, rule in enumerate(m.rules) if rule is not None]
    for r in legit:
        for n in (3, 10):
            assert len(m.do_rule(r, 1, n, out)) <= n  # every device out: no error
    r = next(i for i in legit if any(s.op in (2, 6) for s in m.rules[i].steps))
    next(s for s in m.rules[r].steps if s.op in (2, 6)).arg1 = 0x7FFFFFFF  # CHOOSE(LEAF)_FIRSTN
    m2 = CrushMap.from_bytes(raw)
    m2.choose_total_tries = 0xFFFFFFFF
    for hostile in (m, m2):
        t0 = time.process_time()
        with _crush_work(100_000), pytest.raises(DecodeError, match="malformed map"):
            hostile.do_rule(r, 1, 3, out)
        assert time.process_time() - t0 < 5.0
