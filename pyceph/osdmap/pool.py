"""Pool descriptions from the OSDMap: ``pg_pool_t`` and the types inside it.

Formats: ``src/osd/osd_types.{h,cc}`` in Ceph (``pg_pool_t::decode``, ``pool_opts_t``,
``pool_snap_info_t``, ``pg_merge_meta_t``), ``src/osd/HitSet.cc`` (``HitSet::Params``) and the
kernel's ``net/ceph/osdmap.c`` (``decode_pool``).  PG arithmetic (``ceph_stable_mod``,
masks, placement seeds) follows ``include/linux/ceph/rados.h`` and ``pg_pool_t::raw_pg_to_pps``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Union

from ..encoding import Decoder
from ..errors import DecodeError
from ..types import PgT
from .hash import ceph_str_hash, ceph_str_hash_name, crush_hash32_2

TYPE_REPLICATED = 1
TYPE_ERASURE = 3

# pg_pool_t::FLAG_*
FLAG_HASHPSPOOL = 1 << 0
FLAG_FULL = 1 << 1
FLAG_EC_OVERWRITES = 1 << 2
FLAG_INCOMPLETE_CLONES = 1 << 3
FLAG_NODELETE = 1 << 4
FLAG_NOPGCHANGE = 1 << 5
FLAG_NOSIZECHANGE = 1 << 6
FLAG_WRITE_FADVISE_DONTNEED = 1 << 7
FLAG_NOSCRUB = 1 << 8
FLAG_NODEEP_SCRUB = 1 << 9
FLAG_FULL_QUOTA = 1 << 10
FLAG_NEARFULL = 1 << 11
FLAG_BACKFILLFULL = 1 << 12
FLAG_SELFMANAGED_SNAPS = 1 << 13
FLAG_POOL_SNAPS = 1 << 14
FLAG_CREATING = 1 << 15

FLAG_NAMES = {
    FLAG_HASHPSPOOL: "hashpspool",
    FLAG_FULL: "full",
    FLAG_EC_OVERWRITES: "ec_overwrites",
    FLAG_INCOMPLETE_CLONES: "incomplete_clones",
    FLAG_NODELETE: "nodelete",
    FLAG_NOPGCHANGE: "nopgchange",
    FLAG_NOSIZECHANGE: "nosizechange",
    FLAG_WRITE_FADVISE_DONTNEED: "write_fadvise_dontneed",
    FLAG_NOSCRUB: "noscrub",
    FLAG_NODEEP_SCRUB: "nodeep-scrub",
    FLAG_FULL_QUOTA: "full_quota",
    FLAG_NEARFULL: "nearfull",
    FLAG_BACKFILLFULL: "backfillfull",
    FLAG_SELFMANAGED_SNAPS: "selfmanaged_snaps",
    FLAG_POOL_SNAPS: "pool_snaps",
    FLAG_CREATING: "creating",
}

CACHE_MODE_NAMES = ["none", "writeback", "forward", "readonly", "readforward", "readproxy", "proxy"]
AUTOSCALE_MODE_NAMES = {0: "off", 1: "warn", 2: "on"}

# pool_opts_t::key_t, in enum order (Pacific 16.2.x)
POOL_OPT_NAMES = [
    "scrub_min_interval",
    "scrub_max_interval",
    "deep_scrub_interval",
    "recovery_priority",
    "recovery_op_priority",
    "scrub_priority",
    "compression_mode",
    "compression_algorithm",
    "compression_required_ratio",
    "compression_max_blob_size",
    "compression_min_blob_size",
    "csum_type",
    "csum_max_block",
    "csum_min_block",
    "fingerprint_algorithm",
    "pg_num_min",
    "target_size_bytes",
    "target_size_ratio",
    "pg_autoscale_bias",
    "read_lease_interval",
    "dedup_tier",
    "dedup_chunk_algorithm",
    "dedup_cdc_chunk_size",
    "pg_num_max",
]
POOL_OPT_STR, POOL_OPT_INT, POOL_OPT_DOUBLE = 0, 1, 2

CRUSH_ITEM_NONE = 0x7FFFFFFF

PoolOptValue = Union[str, int, float]


def calc_bits_of(t: int) -> int:
    """Number of significant bits in ``t`` (``cbits``)."""
    return t.bit_length()


def ceph_stable_mod(x: int, b: int, bmask: int) -> int:
    """``ceph_stable_mod`` (rados.h): fold ``x`` into ``[0, b)`` so PGs split stably."""
    if (x & bmask) < b:
        return x & bmask
    return x & (bmask >> 1)


def decode_interval_set(d: Decoder) -> list[tuple[int, int]]:
    """``interval_set<snapid_t>``: ``u32 n`` then ``n`` x ``(u64 start, u64 len)``."""
    n = d.count(16)
    return [(d.u64(), d.u64()) for _ in range(n)]


def decode_str_map(d: Decoder) -> dict[str, str]:
    return d.map(Decoder.string, Decoder.string, 8)


@dataclass
class PoolSnapInfo:
    """``pool_snap_info_t``: one pool snapshot (``snapid`` u64, ``stamp`` (sec, nsec), ``name``)."""

    snapid: int = 0
    stamp: tuple[int, int] = (0, 0)
    name: str = ""

    @classmethod
    def decode(cls, d: Decoder) -> "PoolSnapInfo":
        """Raises :class:`DecodeError`.  Accepts the legacy v1 (headerless) form too."""
        lg = d.start_legacy("pool_snap_info_t", 2, 2)
        s = cls(d.u64(), d.utime(), d.string())
        lg.finish()
        return s


@dataclass
class PoolOpts:
    """``pool_opts_t``: per-pool options, ``{name: str | int | float}``.

    Unknown keys are kept under their number as ``"opt_<n>"``.
    """

    opts: dict[str, PoolOptValue] = field(default_factory=dict)

    @classmethod
    def decode(cls, d: Decoder) -> "PoolOpts":
        out: dict[str, PoolOptValue] = {}
        with d.start("pool_opts_t", 2) as v:
            n = d.count(8)
            for _ in range(n):
                k = d.s32()
                t = d.s32()
                if t == POOL_OPT_STR:
                    val: PoolOptValue = d.string()
                elif t == POOL_OPT_INT:
                    val = d.s64() if v >= 2 else d.s32()
                elif t == POOL_OPT_DOUBLE:
                    val = d.f64()
                else:
                    raise DecodeError(f"pool_opts_t: bad value type {t}")
                name = POOL_OPT_NAMES[k] if 0 <= k < len(POOL_OPT_NAMES) else f"opt_{k}"
                out[name] = val
        return cls(out)

    def get(self, name: str, default=None):
        return self.opts.get(name, default)


@dataclass
class PgMergeMeta:
    """``pg_merge_meta_t``: the most recent PG merge of a pool."""

    source_pgid: PgT = PgT(0, 0)
    ready_epoch: int = 0
    last_epoch_started: int = 0
    last_epoch_clean: int = 0
    source_version: tuple[int, int] = (0, 0)  # eversion_t (epoch, version)
    target_version: tuple[int, int] = (0, 0)

    @classmethod
    def decode(cls, d: Decoder) -> "PgMergeMeta":
        with d.start("pg_merge_meta_t", 1):
            m = cls(PgT.decode(d), d.u32(), d.u32(), d.u32())
            m.source_version = _eversion(d)
            m.target_version = _eversion(d)
        return m


def _eversion(d: Decoder) -> tuple[int, int]:
    # eversion_t encodes version (u64) before epoch (u32)
    version = d.u64()
    epoch = d.u32()
    return epoch, version


@dataclass
class PgPool:
    """``pg_pool_t``: one pool's placement and policy parameters.

    ``id`` and ``name`` come from the OSDMap (not the pool encoding).  Sizes are replica
    (or k+m chunk) counts; ``stripe_width`` is bytes; epochs are OSDMap epochs; ``flags``
    is the ``FLAG_*`` bit set.  Decode with :meth:`decode`; placement helpers mirror
    ``pg_pool_t`` methods in ``src/osd/osd_types.cc``.
    """

    id: int = -1
    name: str = ""
    struct_v: int = 0
    type: int = TYPE_REPLICATED
    size: int = 0
    min_size: int = 0
    crush_rule: int = 0
    object_hash: int = 0
    pg_num: int = 0
    pgp_num: int = 0
    last_change: int = 0
    snap_seq: int = 0
    snap_epoch: int = 0
    snaps: dict[int, PoolSnapInfo] = field(default_factory=dict)
    removed_snaps: list[tuple[int, int]] = field(default_factory=list)
    auid: int = 0
    flags: int = 0
    quota_max_bytes: int = 0
    quota_max_objects: int = 0
    tiers: list[int] = field(default_factory=list)
    tier_of: int = -1
    cache_mode: int = 0
    read_tier: int = -1
    write_tier: int = -1
    properties: dict[str, str] = field(default_factory=dict)
    hit_set_type: int = 0
    hit_set_params: bytes = b""  # the encoded HitSet::Params body, kept opaque
    hit_set_period: int = 0
    hit_set_count: int = 0
    stripe_width: int = 0
    target_max_bytes: int = 0
    target_max_objects: int = 0
    cache_target_dirty_ratio_micro: int = 0
    cache_target_dirty_high_ratio_micro: int = 0
    cache_target_full_ratio_micro: int = 0
    cache_min_flush_age: int = 0
    cache_min_evict_age: int = 0
    erasure_code_profile: str = ""
    last_force_op_resend_preluminous: int = 0
    last_force_op_resend_prenautilus: int = 0
    last_force_op_resend: int = 0
    min_read_recency_for_promote: int = 0
    min_write_recency_for_promote: int = 0
    expected_num_objects: int = 0
    use_gmt_hitset: bool = True
    fast_read: bool = False
    hit_set_grade_decay_rate: int = 0
    hit_set_search_last_n: int = 0
    opts: PoolOpts = field(default_factory=PoolOpts)
    application_metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    create_time: tuple[int, int] = (0, 0)
    pg_num_target: int = 0
    pgp_num_target: int = 0
    pg_num_pending: int = 0
    pg_autoscale_mode: int = 255
    last_pg_merge_meta: PgMergeMeta = field(default_factory=PgMergeMeta)
    peering_crush_bucket_count: int = 0
    peering_crush_bucket_target: int = 0
    peering_crush_bucket_barrier: int = 0
    peering_crush_mandatory_member: int = CRUSH_ITEM_NONE

    # -- decode --------------------------------------------------------------
    @classmethod
    def decode(cls, d: Decoder, pool_id: int = -1, name: str = "") -> "PgPool":
        """Decode a ``pg_pool_t`` (struct_v 1..32; later fields are skipped).  Raises :class:`DecodeError`."""
        p = cls(id=pool_id, name=name)
        lg = d.start_legacy("pg_pool_t", 32, 5)
        v = p.struct_v = lg.v
        p.type = d.u8()
        p.size = d.u8()
        p.crush_rule = d.u8()
        p.object_hash = d.u8()
        p.pg_num = d.u32()
        p.pgp_num = d.u32()
        d.u32()  # lpg_num, localized pgs (gone)
        d.u32()  # lpgp_num
        p.last_change = d.u32()
        p.snap_seq = d.u64()
        p.snap_epoch = d.u32()
        if v >= 3:
            p.snaps = d.map(Decoder.u64, PoolSnapInfo.decode, 9)
            p.removed_snaps = decode_interval_set(d)
            p.auid = d.u64()
        else:
            n = d.count(9)
            m = d.count(16)
            p.auid = d.u64()
            for _ in range(n):
                k = d.u64()
                p.snaps[k] = PoolSnapInfo.decode(d)
            p.removed_snaps = [(d.u64(), d.u64()) for _ in range(m)]
        if v >= 4:
            p.flags = d.u64()
            d.u32()  # crash_replay_interval
        if p.snap_seq > 0 and not p.flags & (FLAG_SELFMANAGED_SNAPS | FLAG_POOL_SNAPS):
            # upgrade path in pg_pool_t::decode
            p.flags |= FLAG_SELFMANAGED_SNAPS if p.removed_snaps else FLAG_POOL_SNAPS
        p.min_size = d.u8() if v >= 7 else p.size - p.size // 2
        if v >= 8:
            p.quota_max_bytes = d.u64()
            p.quota_max_objects = d.u64()
        if v >= 9:
            p.tiers = d.list(Decoder.u64, 8)
            p.tier_of = d.s64()
            p.cache_mode = d.u8()
            p.read_tier = d.s64()
            p.write_tier = d.s64()
        if v >= 10:
            p.properties = decode_str_map(d)
        if v >= 11:
            with d.start("HitSet::Params", 1):
                p.hit_set_type = d.u8()
                p.hit_set_params = d.raw(d.remaining)
            p.hit_set_period = d.u32()
            p.hit_set_count = d.u32()
        if v >= 12:
            p.stripe_width = d.u32()
        if v >= 13:
            p.target_max_bytes = d.u64()
            p.target_max_objects = d.u64()
            p.cache_target_dirty_ratio_micro = d.u32()
            p.cache_target_full_ratio_micro = d.u32()
            p.cache_min_flush_age = d.u32()
            p.cache_min_evict_age = d.u32()
        if v >= 14:
            p.erasure_code_profile = d.string()
        if v >= 15:
            p.last_force_op_resend_preluminous = d.u32()
        p.min_read_recency_for_promote = d.u32() if v >= 16 else 1
        if v >= 17:
            p.expected_num_objects = d.u64()
        if v >= 19:
            p.cache_target_dirty_high_ratio_micro = d.u32()
        else:
            p.cache_target_dirty_high_ratio_micro = p.cache_target_dirty_ratio_micro
        p.min_write_recency_for_promote = d.u32() if v >= 20 else 1
        p.use_gmt_hitset = d.bool() if v >= 21 else False
        p.fast_read = d.bool() if v >= 22 else False
        if v >= 23:
            p.hit_set_grade_decay_rate = d.u32()
            p.hit_set_search_last_n = d.u32()
        else:
            p.hit_set_search_last_n = 1
        if v >= 24:
            p.opts = PoolOpts.decode(d)
        p.last_force_op_resend_prenautilus = d.u32() if v >= 25 else p.last_force_op_resend_preluminous
        if v >= 26:
            p.application_metadata = d.map(Decoder.string, decode_str_map, 8)
        if v >= 27:
            p.create_time = d.utime()
        if v >= 28:
            p.pg_num_target = d.u32()
            p.pgp_num_target = d.u32()
            p.pg_num_pending = d.u32()
            les = d.u32()  # pg_num_dec_last_epoch_started (14.1.x)
            lec = d.u32()  # pg_num_dec_last_epoch_clean
            p.last_force_op_resend = d.u32()
            p.pg_autoscale_mode = d.u8()
            if v >= 29:
                p.last_pg_merge_meta = PgMergeMeta.decode(d)
            else:
                p.last_pg_merge_meta.last_epoch_started = les
                p.last_pg_merge_meta.last_epoch_clean = lec
        else:
            p.pg_num_target = p.pg_num
            p.pgp_num_target = p.pgp_num
            p.pg_num_pending = p.pg_num
            p.last_force_op_resend = p.last_force_op_resend_prenautilus
            p.pg_autoscale_mode = 1  # warn, as Ceph defaults on upgrade
        # v30 (stretch pools) has four u32s; v31+ wraps them in a std::optional
        if v == 30 or (v >= 31 and d.bool()):
            p.peering_crush_bucket_count = d.u32()
            p.peering_crush_bucket_target = d.u32()
            p.peering_crush_bucket_barrier = d.u32()
            p.peering_crush_mandatory_member = d.u32()
        lg.finish()
        return p

    # -- derived values -------------------------------------------------------
    @property
    def pg_num_mask(self) -> int:
        # pg_num - 1 is unsigned in Ceph: 0 wraps to an all-ones mask
        return (1 << calc_bits_of((self.pg_num - 1) & 0xFFFFFFFF)) - 1

    @property
    def pgp_num_mask(self) -> int:
        return (1 << calc_bits_of((self.pgp_num - 1) & 0xFFFFFFFF)) - 1

    def is_replicated(self) -> bool:
        return self.type == TYPE_REPLICATED

    def is_erasure(self) -> bool:
        return self.type == TYPE_ERASURE

    def can_shift_osds(self) -> bool:
        """Replicated pools compact holes out of OSD sets; EC pools keep positions."""
        return self.type == TYPE_REPLICATED

    def has_flag(self, f: int) -> bool:
        return bool(self.flags & f)

    def is_full(self) -> bool:
        return self.has_flag(FLAG_FULL)

    @property
    def type_name(self) -> str:
        return {TYPE_REPLICATED: "replicated", TYPE_ERASURE: "erasure"}.get(self.type, "???")

    @property
    def object_hash_name(self) -> str:
        return ceph_str_hash_name(self.object_hash)

    @property
    def flags_names(self) -> str:
        """``pg_pool_t::get_flags_string``: comma-separated flag names."""
        return ",".join(FLAG_NAMES.get(1 << n, "???") for n in range(64) if self.flags & (1 << n))

    @property
    def snap_mode(self) -> str:
        """As ``pg_pool_t::dump``: "pool" with pool snaps, otherwise "selfmanaged"."""
        return "pool" if self.flags & FLAG_POOL_SNAPS else "selfmanaged"

    # -- placement arithmetic -------------------------------------------------
    def hash_key(self, key: bytes, nspace: bytes = b"") -> int:
        """``pg_pool_t::hash_key``: raw PG seed of ``key`` in namespace ``nspace``."""
        if nspace:
            key = nspace + b"\x1f" + key
        return ceph_str_hash(self.object_hash, key)

    def raw_pg_to_pg(self, pg: PgT) -> PgT:
        """Fold a raw (full 32-bit) seed into this pool's ``pg_num``."""
        return PgT(pg.pool, ceph_stable_mod(pg.seed, self.pg_num, self.pg_num_mask))

    def raw_pg_to_pps(self, pg: PgT) -> int:
        """Placement seed fed to CRUSH (``pg_pool_t::raw_pg_to_pps``)."""
        ps = ceph_stable_mod(pg.seed, self.pgp_num, self.pgp_num_mask)
        if self.flags & FLAG_HASHPSPOOL:
            return crush_hash32_2(ps, pg.pool & 0xFFFFFFFF)
        return (ps + pg.pool) & 0xFFFFFFFF

    def is_removed_snap(self, snapid: int) -> bool:
        return any(start <= snapid < start + n for start, n in self.removed_snaps)


def unpack_f32(b: bytes) -> float:
    return struct.unpack("<f", b)[0]
