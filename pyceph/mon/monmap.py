"""The monitor map: which monitors exist, their addresses and ranks.

Format: ``MonMap::encode/decode`` and ``mon_info_t`` in ``src/mon/MonMap.{h,cc}``
(Pacific encodes MonMap v9 and mon_info_t v5); the kernel reads the same blob in
``ceph_monmap_decode`` (``net/ceph/mon_client.c``).  Decoding raises
:class:`pyceph.errors.DecodeError` on truncated or malformed input.
"""

from __future__ import annotations

import struct
import uuid as _uuid
from dataclasses import dataclass, field

from ..encoding import Decoder, Encoder
from ..errors import DecodeError
from ..types import ADDR_TYPE_LEGACY, EntityAddr, EntityAddrvec

# ceph_release_t (src/common/ceph_releases.h)
CEPH_RELEASE_UNKNOWN = 0
CEPH_RELEASE_NAMES = {
    11: "kraken", 12: "luminous", 13: "mimic", 14: "nautilus", 15: "octopus",
    16: "pacific", 17: "quincy", 18: "reef", 19: "squid",
}

# ceph::features::mon (src/mon/mon_types.h), persistent feature bits
MON_FEATURE_KRAKEN = 1 << 0
MON_FEATURE_LUMINOUS = 1 << 1
MON_FEATURE_MIMIC = 1 << 2
MON_FEATURE_OSDMAP_PRUNE = 1 << 3
MON_FEATURE_NAUTILUS = 1 << 4
MON_FEATURE_OCTOPUS = 1 << 5
MON_FEATURE_PACIFIC = 1 << 6
MON_FEATURE_PINGING = 1 << 7

# MonMap::election_strategy
ELECTION_CLASSIC = 1
ELECTION_DISALLOW = 2
ELECTION_CONNECTIVITY = 3

#: upper bound on monitors we accept in one map (the kernel's CEPH_MAX_MON is 31)
MAX_MONS = 256


def infer_release_from_mon_features(features: int) -> int:
    """``infer_ceph_release_from_mon_features``: newest release whose bit is set, else 0."""
    for bit, rel in ((MON_FEATURE_PACIFIC, 16), (MON_FEATURE_OCTOPUS, 15), (MON_FEATURE_NAUTILUS, 14),
                     (MON_FEATURE_MIMIC, 13), (MON_FEATURE_LUMINOUS, 12), (MON_FEATURE_KRAKEN, 11)):
        if features & bit:
            return rel
    return CEPH_RELEASE_UNKNOWN


def _decode_mon_feature(d: Decoder) -> int:
    with d.start("mon_feature_t", 1):
        return d.u64()


def _encode_mon_feature(e: Encoder, f: int) -> None:
    with e.start(1, 1):
        e.u64(f)


@dataclass(frozen=True)
class MonInfo:
    """``mon_info_t``: one monitor's name, public addresses, priority, weight and CRUSH location."""

    name: str
    public_addrs: EntityAddrvec
    priority: int = 0
    weight: int = 0
    crush_loc: dict[str, str] = field(default_factory=dict)

    @classmethod
    def decode(cls, d: Decoder) -> "MonInfo":
        with d.start("mon_info_t", 5) as v:
            name = d.string()
            addrs = EntityAddrvec.decode(d)
            prio = d.u16() if v >= 2 else 0
            weight = d.u16() if v >= 4 else 0
            loc = d.map(Decoder.string, Decoder.string, 8) if v >= 5 else {}
        return cls(name, addrs, prio, weight, loc)

    def encode(self, e: Encoder) -> Encoder:
        with e.start(5, 1):
            e.string(self.name)
            self.public_addrs.encode(e)
            e.u16(self.priority).u16(self.weight)
            e.u32(len(self.crush_loc))
            for k in sorted(self.crush_loc):
                e.string(k).string(self.crush_loc[k])
        return e


def _addr_sort_key(a: EntityAddr | None) -> bytes:
    # entity_addr_t operator< is a memcmp of the in-memory struct: LE type, LE nonce,
    # then the sockaddr (LE family, BE port, address bytes)
    if a is None:
        return bytes(8 + 28)
    raw = struct.pack("<IIH", a.type, a.nonce, a.family)
    if a.family:
        raw += a._sockaddr_body()
    return raw + bytes(8 + 28 - len(raw))


def _legacy_or_front(av: EntityAddrvec) -> EntityAddr | None:
    leg = av.get(ADDR_TYPE_LEGACY)
    if leg is not None:
        return leg
    return av.addrs[0] if av.addrs else None


@dataclass
class MonMap:
    """A decoded monmap.

    - ``fsid``: 16 raw bytes (:attr:`fsid_str` gives the UUID text); ``epoch``: int.
    - ``last_changed``/``created``: ``(sec, nsec)``.
    - ``mon_info``: name -> :class:`MonInfo`; ``ranks``: mon names in rank order (rank
      ``i`` is ``ranks[i]``), decoded for v6+ or computed as Ceph's ``calc_legacy_ranks``.
    - ``persistent_features``/``optional_features``: mon feature bits.
    - ``min_mon_release``: ceph_release_t number (16 = pacific).
    """

    fsid: bytes = bytes(16)
    epoch: int = 0
    last_changed: tuple[int, int] = (0, 0)
    created: tuple[int, int] = (0, 0)
    persistent_features: int = 0
    optional_features: int = 0
    mon_info: dict[str, MonInfo] = field(default_factory=dict)
    ranks: list[str] = field(default_factory=list)
    min_mon_release: int = 0
    removed_ranks: list[int] = field(default_factory=list)
    strategy: int = ELECTION_CLASSIC
    disallowed_leaders: list[str] = field(default_factory=list)
    stretch_mode_enabled: bool = False
    tiebreaker_mon: str = ""
    stretch_marked_down_mons: list[str] = field(default_factory=list)

    # -- queries -------------------------------------------------------------------
    @property
    def fsid_str(self) -> str:
        return str(_uuid.UUID(bytes=self.fsid))

    def __len__(self) -> int:
        return len(self.mon_info)

    def get_name(self, rank: int) -> str:
        """Mon name at ``rank``.  Raises IndexError for a bad rank."""
        return self.ranks[rank]

    def get_rank(self, name: str) -> int:
        """Rank of mon ``name``, or -1."""
        try:
            return self.ranks.index(name)
        except ValueError:
            return -1

    def get_addrs(self, rank: int) -> EntityAddrvec:
        """Public addresses of the mon at ``rank``."""
        return self.mon_info[self.ranks[rank]].public_addrs

    def calc_legacy_ranks(self) -> list[str]:
        """Rank order for maps without explicit ranks: by legacy-or-front address, then name."""
        infos = sorted(self.mon_info.values(),
                       key=lambda m: (_addr_sort_key(_legacy_or_front(m.public_addrs)),
                                      m.name.encode("utf-8", "surrogateescape")))
        return [m.name for m in infos]

    # -- codec ---------------------------------------------------------------------
    @classmethod
    def decode(cls, buf: bytes | Decoder) -> "MonMap":
        """Decode an encoded MonMap (v1..v9; the bytes inside MMonMap's bufferlist)."""
        d = buf if isinstance(buf, Decoder) else Decoder(buf)
        m = cls()
        # DECODE_START_LEGACY_COMPAT_LEN_16: v1/v2 begin with a u16 version
        first = d.u8()
        if first < 3:
            d.skip(1)
            return cls._decode_v1_v2(d, m, first)
        d.pos -= 1
        lg = d.start_legacy("MonMap", 9, 3)
        v = lg.v
        m.fsid = d.uuid()
        m.epoch = d.u32()
        legacy_addrs: dict[str, EntityAddr] = {}
        if v < 6:
            legacy_addrs = d.map(Decoder.string, EntityAddr.decode, 9)
        m.last_changed = d.utime()
        m.created = d.utime()
        if v >= 4:
            m.persistent_features = _decode_mon_feature(d)
            m.optional_features = _decode_mon_feature(d)
        if v < 5:
            m.mon_info = {n: MonInfo(n, EntityAddrvec((a,))) for n, a in sorted(legacy_addrs.items())}
        else:
            n = d.count(10)
            if n > MAX_MONS:
                raise DecodeError(f"MonMap: {n} monitors")
            for _ in range(n):
                name = d.string()
                m.mon_info[name] = MonInfo.decode(d)
        if v < 6:
            m.ranks = m.calc_legacy_ranks()
        else:
            m.ranks = d.list(Decoder.string, 4)
        if v >= 7:
            m.min_mon_release = d.u8()
        else:
            m.min_mon_release = infer_release_from_mon_features(m.persistent_features)
        if v >= 8:
            m.removed_ranks = d.list(Decoder.u32, 4)
            m.strategy = d.u8()
            m.disallowed_leaders = d.list(Decoder.string, 4)
        if v >= 9:
            m.stretch_mode_enabled = d.bool()
            m.tiebreaker_mon = d.string()
            m.stretch_marked_down_mons = d.list(Decoder.string, 4)
        lg.finish()
        m._validate()
        return m

    @classmethod
    def _decode_v1_v2(cls, d: Decoder, m: "MonMap", v: int) -> "MonMap":
        m.fsid = d.uuid()
        m.epoch = d.u32()
        addrs: dict[str, EntityAddr] = {}
        if v == 1:
            n = d.count(9)
            for i in range(n):
                d.u8()  # entity_name_t type
                d.s64()  # entity_name_t num
                addrs[str(i)] = EntityAddr.decode(d)
        else:
            addrs = d.map(Decoder.string, EntityAddr.decode, 9)
        m.last_changed = d.utime()
        m.created = d.utime()
        m.mon_info = {n: MonInfo(n, EntityAddrvec((a,))) for n, a in sorted(addrs.items())}
        m.ranks = m.calc_legacy_ranks()
        m._validate()
        return m

    def _validate(self) -> None:
        for name in self.ranks:
            if name not in self.mon_info:
                raise DecodeError(f"MonMap: rank names unknown mon {name!r}")

    def encode(self) -> bytes:
        """Encode as Pacific does for a Nautilus+ peer (v9, compat 6)."""
        e = Encoder()
        with e.start(9, 6):
            e.uuid(self.fsid).u32(self.epoch).utime(self.last_changed).utime(self.created)
            _encode_mon_feature(e, self.persistent_features)
            _encode_mon_feature(e, self.optional_features)
            e.u32(len(self.mon_info))
            for name in sorted(self.mon_info, key=lambda s: s.encode("utf-8", "surrogateescape")):
                e.string(name)
                self.mon_info[name].encode(e)
            e.list(self.ranks, Encoder.string)
            e.u8(self.min_mon_release)
            e.list(self.removed_ranks, Encoder.u32)
            e.u8(self.strategy)
            e.list(sorted(self.disallowed_leaders), Encoder.string)
            e.bool(self.stretch_mode_enabled).string(self.tiebreaker_mon)
            e.list(sorted(self.stretch_marked_down_mons), Encoder.string)
        return e.bytes()
