"""The OSDMap: cluster epoch, pools, OSD states/weights/addresses, and PG placement.

Formats: ``OSDMap::decode`` / ``OSDMap::Incremental::decode`` in Ceph ``src/osd/OSDMap.cc``
(wrapper v7/v8, client-usable data v1..10, OSD-only data v1..12, crc32c), ``osd_info_t`` /
``osd_xinfo_t`` in ``src/osd/OSDMap.{h,cc}``; the kernel's ``net/ceph/osdmap.c`` decodes the
client part.  Placement (``pg_to_up_acting_osds``) follows ``OSDMap::_pg_to_up_acting_osds``
and friends in ``src/osd/OSDMap.cc`` (upmap, pg_temp, primary_temp, primary affinity).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Optional


from ..encoding import Decoder, crc32c
from ..errors import DecodeError, FunctionNotSupported, PoolNotFound
from ..types import EntityAddr, EntityAddrvec, PgT
from .hash import crush_hash32_2
from .pool import CRUSH_ITEM_NONE, PgPool, decode_interval_set, decode_str_map

# osd_state bits (CEPH_OSD_*, include/rados.h)
CEPH_OSD_EXISTS = 1 << 0
CEPH_OSD_UP = 1 << 1
CEPH_OSD_AUTOOUT = 1 << 2
CEPH_OSD_NEW = 1 << 3
CEPH_OSD_FULL = 1 << 4
CEPH_OSD_NEARFULL = 1 << 5
CEPH_OSD_BACKFILLFULL = 1 << 6
CEPH_OSD_DESTROYED = 1 << 7
CEPH_OSD_NOUP = 1 << 8
CEPH_OSD_NODOWN = 1 << 9
CEPH_OSD_NOIN = 1 << 10
CEPH_OSD_NOOUT = 1 << 11
CEPH_OSD_STOP = 1 << 12
OSD_STATE_NAMES = [
    (CEPH_OSD_EXISTS, "exists"),
    (CEPH_OSD_UP, "up"),
    (CEPH_OSD_AUTOOUT, "autoout"),
    (CEPH_OSD_NEW, "new"),
    (CEPH_OSD_FULL, "full"),
    (CEPH_OSD_NEARFULL, "nearfull"),
    (CEPH_OSD_BACKFILLFULL, "backfillfull"),
    (CEPH_OSD_DESTROYED, "destroyed"),
    (CEPH_OSD_NOUP, "noup"),
    (CEPH_OSD_NODOWN, "nodown"),
    (CEPH_OSD_NOIN, "noin"),
    (CEPH_OSD_NOOUT, "noout"),
    (CEPH_OSD_STOP, "stop"),
]

CEPH_OSD_IN = 0x10000
CEPH_OSD_OUT = 0
CEPH_OSD_MAX_PRIMARY_AFFINITY = 0x10000
CEPH_OSD_DEFAULT_PRIMARY_AFFINITY = 0x10000

# OSDMap flags (CEPH_OSDMAP_*)
CEPH_OSDMAP_NEARFULL = 1 << 0
CEPH_OSDMAP_FULL = 1 << 1
CEPH_OSDMAP_PAUSERD = 1 << 2
CEPH_OSDMAP_PAUSEWR = 1 << 3
CEPH_OSDMAP_PAUSEREC = 1 << 4
CEPH_OSDMAP_NOUP = 1 << 5
CEPH_OSDMAP_NODOWN = 1 << 6
CEPH_OSDMAP_NOOUT = 1 << 7
CEPH_OSDMAP_NOIN = 1 << 8
CEPH_OSDMAP_NOBACKFILL = 1 << 9
CEPH_OSDMAP_NORECOVER = 1 << 10
CEPH_OSDMAP_NOSCRUB = 1 << 11
CEPH_OSDMAP_NODEEP_SCRUB = 1 << 12
CEPH_OSDMAP_NOTIERAGENT = 1 << 13
CEPH_OSDMAP_NOREBALANCE = 1 << 14
CEPH_OSDMAP_SORTBITWISE = 1 << 15
CEPH_OSDMAP_REQUIRE_JEWEL = 1 << 16
CEPH_OSDMAP_REQUIRE_KRAKEN = 1 << 17
CEPH_OSDMAP_REQUIRE_LUMINOUS = 1 << 18
CEPH_OSDMAP_RECOVERY_DELETES = 1 << 19
CEPH_OSDMAP_PURGED_SNAPDIRS = 1 << 20
CEPH_OSDMAP_NOSNAPTRIM = 1 << 21
CEPH_OSDMAP_PGLOG_HARDLIMIT = 1 << 22
CEPH_OSDMAP_NOAUTOSCALE = 1 << 23
CEPH_OSDMAP_LEGACY_REQUIRE_FLAGS = (
    CEPH_OSDMAP_REQUIRE_JEWEL | CEPH_OSDMAP_REQUIRE_KRAKEN | CEPH_OSDMAP_REQUIRE_LUMINOUS
)
# OSDMap::get_flag_string order
OSDMAP_FLAG_NAMES = [
    (CEPH_OSDMAP_FULL, "full"),
    (CEPH_OSDMAP_PAUSERD, "pauserd"),
    (CEPH_OSDMAP_PAUSEWR, "pausewr"),
    (CEPH_OSDMAP_PAUSEREC, "pauserec"),
    (CEPH_OSDMAP_NOUP, "noup"),
    (CEPH_OSDMAP_NODOWN, "nodown"),
    (CEPH_OSDMAP_NOOUT, "noout"),
    (CEPH_OSDMAP_NOIN, "noin"),
    (CEPH_OSDMAP_NOBACKFILL, "nobackfill"),
    (CEPH_OSDMAP_NOREBALANCE, "norebalance"),
    (CEPH_OSDMAP_NORECOVER, "norecover"),
    (CEPH_OSDMAP_NOSCRUB, "noscrub"),
    (CEPH_OSDMAP_NODEEP_SCRUB, "nodeep-scrub"),
    (CEPH_OSDMAP_NOTIERAGENT, "notieragent"),
    (CEPH_OSDMAP_NOSNAPTRIM, "nosnaptrim"),
    (CEPH_OSDMAP_SORTBITWISE, "sortbitwise"),
    (CEPH_OSDMAP_REQUIRE_JEWEL, "require_jewel_osds"),
    (CEPH_OSDMAP_REQUIRE_KRAKEN, "require_kraken_osds"),
    (CEPH_OSDMAP_REQUIRE_LUMINOUS, "require_luminous_osds"),
    (CEPH_OSDMAP_RECOVERY_DELETES, "recovery_deletes"),
    (CEPH_OSDMAP_PURGED_SNAPDIRS, "purged_snapdirs"),
    (CEPH_OSDMAP_PGLOG_HARDLIMIT, "pglog_hardlimit"),
    (CEPH_OSDMAP_NOAUTOSCALE, "noautoscale"),
]

# ceph_release_t (src/common/ceph_releases.h)
CEPH_RELEASE_NAMES = [
    "unknown", "argonaut", "bobtail", "cuttlefish", "dumpling", "emperor", "firefly", "giant",
    "hammer", "infernalis", "jewel", "kraken", "luminous", "mimic", "nautilus", "octopus",
    "pacific", "quincy", "reef", "squid", "tentacle",
]
CEPH_RELEASE_LUMINOUS = 12
CEPH_RELEASE_NAUTILUS = 14

_F32 = struct.Struct("<f")
_M32 = 0xFFFFFFFF


def release_name(r: int) -> str:
    return CEPH_RELEASE_NAMES[r] if 0 <= r < len(CEPH_RELEASE_NAMES) else str(r)


def _f32(d: Decoder) -> float:
    return _F32.unpack(d.raw(4))[0]


def _s32_list(d: Decoder) -> list[int]:
    return d.list(Decoder.s32, 4)


def _u32_list(d: Decoder) -> list[int]:
    return d.list(Decoder.u32, 4)


def _pair_list(d: Decoder) -> list[tuple[int, int]]:
    n = d.count(8)
    return [(d.s32(), d.s32()) for _ in range(n)]


def _pg_set(d: Decoder) -> list[PgT]:
    return d.list(PgT.decode, 17)


def _addr_time_map(d: Decoder) -> dict[EntityAddr, tuple[int, int]]:
    return d.map(EntityAddr.decode, Decoder.utime, 9)


def _snap_interval_map(d: Decoder) -> dict[int, list[tuple[int, int]]]:
    return d.map(Decoder.s64, decode_interval_set, 12)


def _ec_profiles(d: Decoder) -> dict[str, dict[str, str]]:
    return d.map(Decoder.string, decode_str_map, 8)


def _decode_crush(data: bytes):
    """Decode an embedded CRUSH map with the crush package; ``None`` if it is empty."""
    if not data:
        return None
    try:
        from .crush import CrushMap  # late: the crush package is a separate module
    except ImportError:
        return None  # crush package unavailable: keep crush_raw, placement refuses

    try:
        return CrushMap.decode(Decoder(data))
    except DecodeError:
        raise
    except (IndexError, KeyError, ValueError, struct.error, OverflowError) as e:
        raise DecodeError(f"crush map: {e}") from e


@dataclass
class OsdInfo:
    """``osd_info_t``: epochs of an OSD's life (all u32 OSDMap epochs)."""

    last_clean_begin: int = 0
    last_clean_end: int = 0
    up_from: int = 0
    up_thru: int = 0
    down_at: int = 0
    lost_at: int = 0

    @classmethod
    def decode(cls, d: Decoder) -> "OsdInfo":
        d.u8()  # struct_v, always 1, no envelope
        return cls(d.u32(), d.u32(), d.u32(), d.u32(), d.u32(), d.u32())


@dataclass
class OsdXinfo:
    """``osd_xinfo_t``: extended OSD info (``laggy_probability`` in [0, 1], ``features`` bits)."""

    down_stamp: tuple[int, int] = (0, 0)
    laggy_probability: float = 0.0
    laggy_interval: int = 0
    features: int = 0
    old_weight: int = 0
    last_purged_snaps_scrub: tuple[int, int] = (0, 0)
    dead_epoch: int = 0

    @classmethod
    def decode(cls, d: Decoder) -> "OsdXinfo":
        x = cls()
        with d.start("osd_xinfo_t", 4) as v:
            x.down_stamp = d.utime()
            x.laggy_probability = d.u32() / float(0xFFFFFFFF)
            x.laggy_interval = d.u32()
            if v >= 2:
                x.features = d.u64()
            if v >= 3:
                x.old_weight = d.u32()
            if v >= 4:
                x.last_purged_snaps_scrub = d.utime()
                x.dead_epoch = d.u32()
        return x


def _begin_wrapper(d: Decoder, what: str) -> tuple[int, int, int]:
    """The v7+ OSDMap wrapper: returns ``(struct_v, body_start, body_end)``."""
    v = d.u8()
    if v < 7:
        raise DecodeError(f"{what}: classic (pre-v7, pre-2014) encoding v{v} is not supported")
    compat = d.u8()
    length = d.u32()
    if compat > 8:
        raise DecodeError(f"{what}: wrapper struct_compat {compat} > 8")
    d.need(length, f"{what} body")
    return v, d.pos, d.pos + length


class OSDMap:
    """A decoded OSDMap (full map), with incremental updates and PG placement.

    Build with :meth:`decode`; advance with :meth:`apply_incremental`.  OSD ids index the
    per-OSD lists (``osd_state``, ``osd_weight`` 16.16 fixed point, ``client_addrs`` ...), all
    ``max_osd`` long.  ``crush`` is the decoded :class:`pyceph.osdmap.crush.CrushMap` (or
    ``None`` if the map carries none).
    """

    def __init__(self) -> None:
        self.fsid: bytes = bytes(16)
        self.epoch: int = 0
        self.created: tuple[int, int] = (0, 0)
        self.modified: tuple[int, int] = (0, 0)
        self.pools: dict[int, PgPool] = {}
        self.pool_name: dict[int, str] = {}
        self.name_pool: dict[str, int] = {}
        self.pool_max: int = -1
        self.flags: int = 0
        self.max_osd: int = 0
        self.osd_state: list[int] = []
        self.osd_weight: list[int] = []
        self.client_addrs: list[EntityAddrvec] = []
        self.pg_temp: dict[PgT, list[int]] = {}
        self.primary_temp: dict[PgT, int] = {}
        self.osd_primary_affinity: Optional[list[int]] = None
        self.crush_raw: bytes = b""
        self.crush: Any = None
        self.erasure_code_profiles: dict[str, dict[str, str]] = {}
        self.pg_upmap: dict[PgT, list[int]] = {}
        self.pg_upmap_items: dict[PgT, list[tuple[int, int]]] = {}
        self.pg_upmap_primaries: dict[PgT, int] = {}
        self.crush_version: int = 1
        self.new_removed_snaps: dict[int, list[tuple[int, int]]] = {}
        self.new_purged_snaps: dict[int, list[tuple[int, int]]] = {}
        self.last_up_change: tuple[int, int] = (0, 0)
        self.last_in_change: tuple[int, int] = (0, 0)
        # OSD-only section
        self.hb_back_addrs: list[EntityAddrvec] = []
        self.osd_info: list[OsdInfo] = []
        self.blocklist: dict[EntityAddr, tuple[int, int]] = {}
        self.cluster_addrs: list[EntityAddrvec] = []
        self.cluster_snapshot_epoch: int = 0
        self.cluster_snapshot: str = ""
        self.osd_uuid: list[bytes] = []
        self.osd_xinfo: list[OsdXinfo] = []
        self.hb_front_addrs: list[EntityAddrvec] = []
        self.nearfull_ratio: float = 0.0
        self.full_ratio: float = 0.0
        self.backfillfull_ratio: float = 0.0
        self.require_min_compat_client: int = 0
        self.require_osd_release: int = 0
        self.removed_snaps_queue: dict[int, list[tuple[int, int]]] = {}
        self.crush_node_flags: dict[int, int] = {}
        self.device_class_flags: dict[int, int] = {}
        self.stretch_mode_enabled: bool = False
        self.stretch_bucket_count: int = 0
        self.degraded_stretch_mode: int = 0
        self.recovering_stretch_mode: int = 0
        self.stretch_mode_bucket: int = 0
        self.range_blocklist: dict[EntityAddr, tuple[int, int]] = {}
        self.allow_crimson: bool = False
        self.crc: Optional[int] = None

    Incremental: type["Incremental"]  # set below

    # -- decoding -------------------------------------------------------------
    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview | Decoder) -> "OSDMap":
        """Decode a full OSDMap (``MOSDMap`` map payload or ``ceph osd getmap`` file).

        Checks the embedded crc32c.  Raises :class:`DecodeError` on truncated, malformed
        or corrupt input (and for the pre-2014 classic encoding).
        """
        d = data if isinstance(data, Decoder) else Decoder(data)
        m = cls()
        m._decode(d)
        return m

    def _decode(self, d: Decoder) -> None:
        start = d.pos
        v, _, wend = _begin_wrapper(d, "OSDMap")
        saved_end = d.end
        d.end = wend
        try:
            self._decode_client(d)
            self._decode_osd_only(d)
            if v >= 8:
                crc_at = d.pos
                self.crc = d.u32()
                actual = crc32c(d.buf[start:crc_at], _M32)
                if d.pos < wend:
                    actual = crc32c(d.buf[d.pos : wend], actual)
                if actual != self.crc:
                    raise DecodeError(f"OSDMap: bad crc, actual {actual:#x} != expected {self.crc:#x}")
        finally:
            d.end = saved_end
        d.pos = wend
        self._post_decode()

    def _decode_client(self, d: Decoder) -> None:
        with d.start("OSDMap client data", 10) as v:
            self.fsid = d.uuid()
            self.epoch = d.u32()
            self.created = d.utime()
            self.modified = d.utime()
            self.pools = {}
            n = d.count(8)
            for _ in range(n):
                pid = d.s64()
                self.pools[pid] = PgPool.decode(d, pid)
            self.pool_name = d.map(Decoder.s64, Decoder.string, 12)
            self.pool_max = d.s32()
            self.flags = d.u32()
            self.max_osd = d.s32()
            if self.max_osd < 0:
                raise DecodeError(f"OSDMap: negative max_osd {self.max_osd}")
            self.osd_state = _u32_list(d) if v >= 5 else d.list(Decoder.u8, 1)
            self.osd_weight = _u32_list(d)
            self.client_addrs = d.list(EntityAddrvec.decode, 1)
            self.pg_temp = d.map(PgT.decode, _s32_list, 21)
            self.primary_temp = d.map(PgT.decode, Decoder.s32, 21)
            aff = _u32_list(d) if v >= 2 else []
            self.osd_primary_affinity = aff or None
            self.crush_raw = d.blob()
            self.erasure_code_profiles = _ec_profiles(d) if v >= 3 else {}
            if v >= 4:
                self.pg_upmap = d.map(PgT.decode, _s32_list, 21)
                self.pg_upmap_items = d.map(PgT.decode, _pair_list, 21)
            if v >= 6:
                self.crush_version = d.s32()
            if v >= 7:
                self.new_removed_snaps = _snap_interval_map(d)
                self.new_purged_snaps = _snap_interval_map(d)
            if v >= 9:
                self.last_up_change = d.utime()
                self.last_in_change = d.utime()
            if v >= 10:
                self.pg_upmap_primaries = d.map(PgT.decode, Decoder.s32, 21)
        if len(self.osd_state) != self.max_osd or len(self.osd_weight) != self.max_osd:
            raise DecodeError("OSDMap: osd_state/osd_weight length differs from max_osd")
        if len(self.client_addrs) != self.max_osd:
            raise DecodeError("OSDMap: client address count differs from max_osd")
        if self.osd_primary_affinity is not None and len(self.osd_primary_affinity) != self.max_osd:
            raise DecodeError("OSDMap: primary affinity count differs from max_osd")
        self.crush = _decode_crush(self.crush_raw)

    def _decode_osd_only(self, d: Decoder) -> None:
        with d.start("OSDMap osd-only data", 12) as v:
            self.hb_back_addrs = d.list(EntityAddrvec.decode, 1)
            self.osd_info = d.list(OsdInfo.decode, 25)
            self.blocklist = _addr_time_map(d)
            self.cluster_addrs = d.list(EntityAddrvec.decode, 1)
            self.cluster_snapshot_epoch = d.u32()
            self.cluster_snapshot = d.string()
            self.osd_uuid = d.list(Decoder.uuid, 16)
            self.osd_xinfo = d.list(OsdXinfo.decode, 6)
            self.hb_front_addrs = d.list(EntityAddrvec.decode, 1)
            if v >= 2:
                self.nearfull_ratio = _f32(d)
                self.full_ratio = _f32(d)
            if v >= 3:
                self.backfillfull_ratio = _f32(d)
            if v == 4:
                name = d.string()
                if name in CEPH_RELEASE_NAMES:
                    self.require_min_compat_client = CEPH_RELEASE_NAMES.index(name)
            if v >= 5:
                self.require_min_compat_client = d.u8()
                self.require_osd_release = d.u8()
                if self.require_osd_release >= CEPH_RELEASE_NAUTILUS:
                    self.flags |= CEPH_OSDMAP_PGLOG_HARDLIMIT
                if self.require_osd_release >= CEPH_RELEASE_LUMINOUS:
                    self.flags &= ~CEPH_OSDMAP_LEGACY_REQUIRE_FLAGS
                    self.flags |= CEPH_OSDMAP_RECOVERY_DELETES
            else:
                if self.flags & CEPH_OSDMAP_REQUIRE_LUMINOUS:
                    self.require_osd_release = CEPH_RELEASE_LUMINOUS
                    self.flags &= ~CEPH_OSDMAP_LEGACY_REQUIRE_FLAGS
                    self.flags |= CEPH_OSDMAP_RECOVERY_DELETES
                elif self.flags & CEPH_OSDMAP_REQUIRE_KRAKEN:
                    self.require_osd_release = 11
                elif self.flags & CEPH_OSDMAP_REQUIRE_JEWEL:
                    self.require_osd_release = 10
            if v >= 6:
                self.removed_snaps_queue = _snap_interval_map(d)
            if v >= 8:
                self.crush_node_flags = d.map(Decoder.s32, Decoder.u32, 8)
            if v >= 9:
                self.device_class_flags = d.map(Decoder.s32, Decoder.u32, 8)
            if v >= 10:
                self.stretch_mode_enabled = d.bool()
                self.stretch_bucket_count = d.u32()
                self.degraded_stretch_mode = d.u32()
                self.recovering_stretch_mode = d.u32()
                self.stretch_mode_bucket = d.s32()
            if v >= 11:
                self.range_blocklist = _addr_time_map(d)
            if v >= 12:
                self.allow_crimson = d.bool()
        self._fit_osd_only()

    def _fit_osd_only(self) -> None:
        # Ceph sizes these with max_osd; pad/truncate so indexing by OSD id is safe.
        n = self.max_osd
        for attr, make in (
            ("hb_back_addrs", EntityAddrvec),
            ("cluster_addrs", EntityAddrvec),
            ("hb_front_addrs", EntityAddrvec),
            ("osd_info", OsdInfo),
            ("osd_xinfo", OsdXinfo),
            ("osd_uuid", lambda: bytes(16)),
        ):
            lst = getattr(self, attr)
            if len(lst) < n:
                lst.extend(make() for _ in range(n - len(lst)))
            elif len(lst) > n:
                del lst[n:]

    def _post_decode(self) -> None:
        for pid, p in self.pools.items():
            p.name = self.pool_name.get(pid, "")
        self.name_pool = {name: pid for pid, name in self.pool_name.items()}

    # -- OSD queries ----------------------------------------------------------
    def exists(self, osd: int) -> bool:
        return 0 <= osd < self.max_osd and bool(self.osd_state[osd] & CEPH_OSD_EXISTS)

    def is_up(self, osd: int) -> bool:
        """True if ``osd`` exists and is marked up."""
        return self.exists(osd) and bool(self.osd_state[osd] & CEPH_OSD_UP)

    def is_down(self, osd: int) -> bool:
        return not self.is_up(osd)

    def is_in(self, osd: int) -> bool:
        """True if ``osd`` exists and its weight is non-zero."""
        return self.exists(osd) and self.osd_weight[osd] != CEPH_OSD_OUT

    def is_out(self, osd: int) -> bool:
        return not self.is_in(osd)

    def get_weightf(self, osd: int) -> float:
        """Reweight in [0, 1] (``osd_weight / 0x10000``)."""
        return self.osd_weight[osd] / float(CEPH_OSD_IN)

    def get_primary_affinity(self, osd: int) -> int:
        """Primary affinity, 16.16 fixed point (0x10000 = 1.0, the default)."""
        if self.osd_primary_affinity is None or not 0 <= osd < len(self.osd_primary_affinity):
            return CEPH_OSD_DEFAULT_PRIMARY_AFFINITY
        return self.osd_primary_affinity[osd]

    def get_primary_affinityf(self, osd: int) -> float:
        return self.get_primary_affinity(osd) / float(CEPH_OSD_MAX_PRIMARY_AFFINITY)

    def osd_addrs(self, osd: int) -> EntityAddrvec:
        """The public (client-facing) address vector of ``osd``; empty if unknown."""
        if 0 <= osd < len(self.client_addrs):
            return self.client_addrs[osd]
        return EntityAddrvec()

    def get_addrs(self, osd: int) -> EntityAddrvec:
        return self.osd_addrs(osd)

    def osd_state_names(self, osd: int) -> list[str]:
        """``OSDMap::get_state`` names for ``osd``, sorted as Ceph's std::set<string>."""
        s = self.osd_state[osd] if 0 <= osd < self.max_osd else 0
        return sorted(name for bit, name in OSD_STATE_NAMES if s & bit)

    def get_up_osds(self) -> list[int]:
        return [o for o in range(self.max_osd) if self.is_up(o)]

    # -- pool queries ---------------------------------------------------------
    def get_pool(self, pool_id: int) -> PgPool:
        """The pool with id ``pool_id``.  Raises :class:`PoolNotFound`."""
        p = self.pools.get(pool_id)
        if p is None:
            raise PoolNotFound(f"pool {pool_id} does not exist in osdmap epoch {self.epoch}")
        return p

    def have_pool(self, pool_id: int) -> bool:
        return pool_id in self.pools

    def lookup_pool(self, name: str) -> int:
        """Pool id for ``name``.  Raises :class:`PoolNotFound`."""
        pid = self.name_pool.get(name)
        if pid is None or pid not in self.pools:
            raise PoolNotFound(f"pool {name!r} does not exist in osdmap epoch {self.epoch}")
        return pid

    def get_pool_name(self, pool_id: int) -> str:
        return self.pool_name.get(pool_id, "")

    @property
    def flag_string(self) -> str:
        return ",".join(name for bit, name in OSDMAP_FLAG_NAMES if self.flags & bit)

    def test_flag(self, f: int) -> bool:
        return bool(self.flags & f)

    # -- incremental ----------------------------------------------------------
    def set_max_osd(self, m: int) -> None:
        """Resize every per-OSD array to ``m`` (new OSDs: no state, weight out)."""
        self.max_osd = m

        def fit(lst: list, make: Callable[[], Any]) -> None:
            if len(lst) < m:
                lst.extend(make() for _ in range(m - len(lst)))
            else:
                del lst[m:]

        fit(self.osd_state, int)
        fit(self.osd_weight, lambda: CEPH_OSD_OUT)
        fit(self.client_addrs, EntityAddrvec)
        fit(self.hb_back_addrs, EntityAddrvec)
        fit(self.hb_front_addrs, EntityAddrvec)
        fit(self.cluster_addrs, EntityAddrvec)
        fit(self.osd_info, OsdInfo)
        fit(self.osd_xinfo, OsdXinfo)
        fit(self.osd_uuid, lambda: bytes(16))
        if self.osd_primary_affinity is not None:
            fit(self.osd_primary_affinity, lambda: CEPH_OSD_DEFAULT_PRIMARY_AFFINITY)

    def set_primary_affinity(self, osd: int, aff: int) -> None:
        if self.osd_primary_affinity is None:
            self.osd_primary_affinity = [CEPH_OSD_DEFAULT_PRIMARY_AFFINITY] * self.max_osd
        self.osd_primary_affinity[osd] = aff

    def _check_osd(self, osd: int, what: str) -> None:
        if not 0 <= osd < self.max_osd:
            raise DecodeError(f"incremental {what}: osd.{osd} outside max_osd {self.max_osd}")

    def apply_incremental(self, inc: "Incremental") -> None:
        """Apply ``inc`` (epoch must be ``self.epoch + 1``), as ``OSDMap::apply_incremental``.

        A full map inside the incremental replaces this map's contents.  Raises
        :class:`pyceph.errors.InvalidArgumentError` for a wrong epoch or fsid and
        :class:`DecodeError` if the incremental names OSDs beyond ``max_osd``.
        """
        from ..errors import InvalidArgumentError

        if inc.epoch == 1:
            self.fsid = inc.fsid
        elif inc.fsid != self.fsid:
            raise InvalidArgumentError("incremental osdmap for a different cluster fsid")
        if inc.fullmap:
            full = OSDMap.decode(inc.fullmap)
            self.__dict__.update(full.__dict__)
            return
        if inc.epoch != self.epoch + 1:
            raise InvalidArgumentError(f"incremental epoch {inc.epoch} does not follow {self.epoch}")
        self.epoch += 1
        self.modified = inc.modified

        if inc.new_pool_max != -1:
            self.pool_max = inc.new_pool_max
        if inc.new_flags >= 0:
            self.flags = inc.new_flags
        if inc.new_max_osd >= 0:
            self.set_max_osd(inc.new_max_osd)
        if inc.new_full_ratio >= 0:
            self.full_ratio = inc.new_full_ratio
        if inc.new_nearfull_ratio >= 0:
            self.nearfull_ratio = inc.new_nearfull_ratio
        if inc.new_backfillfull_ratio >= 0:
            self.backfillfull_ratio = inc.new_backfillfull_ratio
        if inc.new_last_up_change != (0, 0):
            self.last_up_change = inc.new_last_up_change
        if inc.new_last_in_change != (0, 0):
            self.last_in_change = inc.new_last_in_change

        for pid, pool in inc.new_pools.items():
            pool.last_change = self.epoch
            self.pools[pid] = pool
        self.new_removed_snaps = dict(inc.new_removed_snaps)
        self.new_purged_snaps = dict(inc.new_purged_snaps)
        for pid, name in inc.new_pool_names.items():
            old = self.pool_name.get(pid)
            if old is not None:
                self.name_pool.pop(old, None)
            self.pool_name[pid] = name
            self.name_pool[name] = pid
        for pid in inc.old_pools:
            self.pools.pop(pid, None)
            name = self.pool_name.pop(pid, None)
            if name is not None:
                self.name_pool.pop(name, None)

        for osd, w in inc.new_weight.items():
            self._check_osd(osd, "new_weight")
            self.osd_weight[osd] = w
            if w:  # marking in clears AUTOOUT and NEW
                self.osd_state[osd] &= ~(CEPH_OSD_AUTOOUT | CEPH_OSD_NEW)
                self.osd_xinfo[osd].old_weight = 0
        for osd, aff in inc.new_primary_affinity.items():
            self._check_osd(osd, "new_primary_affinity")
            self.set_primary_affinity(osd, aff)

        for name in inc.old_erasure_code_profiles:
            self.erasure_code_profiles.pop(name, None)
        for name, prof in inc.new_erasure_code_profiles.items():
            self.erasure_code_profiles[name] = dict(prof)

        for osd, s in inc.new_state.items():
            self._check_osd(osd, "new_state")
            s = s or CEPH_OSD_UP  # 0 means "toggle up" in old encodings
            if self.osd_state[osd] & CEPH_OSD_UP and s & CEPH_OSD_UP:
                self.osd_info[osd].down_at = self.epoch
                self.osd_xinfo[osd].down_stamp = self.modified
            if self.osd_state[osd] & CEPH_OSD_EXISTS and s & CEPH_OSD_EXISTS:
                # the OSD was destroyed: forget everything about it
                self.osd_uuid[osd] = bytes(16)
                self.osd_info[osd] = OsdInfo()
                self.osd_xinfo[osd] = OsdXinfo()
                self.set_primary_affinity(osd, CEPH_OSD_DEFAULT_PRIMARY_AFFINITY)
                self.client_addrs[osd] = EntityAddrvec()
                self.cluster_addrs[osd] = EntityAddrvec()
                self.hb_front_addrs[osd] = EntityAddrvec()
                self.hb_back_addrs[osd] = EntityAddrvec()
                self.osd_state[osd] = 0
            else:
                self.osd_state[osd] ^= s

        for osd, addrs in inc.new_up_client.items():
            self._check_osd(osd, "new_up_client")
            self.osd_state[osd] |= CEPH_OSD_EXISTS | CEPH_OSD_UP
            self.osd_state[osd] &= ~CEPH_OSD_STOP
            self.client_addrs[osd] = addrs
            self.hb_back_addrs[osd] = inc.new_hb_back_up.get(osd, EntityAddrvec())
            self.hb_front_addrs[osd] = inc.new_hb_front_up.get(osd, EntityAddrvec())
            self.osd_info[osd].up_from = self.epoch
        for osd, addrs in inc.new_up_cluster.items():
            self._check_osd(osd, "new_up_cluster")
            self.cluster_addrs[osd] = addrs
        for osd, e in inc.new_up_thru.items():
            self._check_osd(osd, "new_up_thru")
            self.osd_info[osd].up_thru = e
        for osd, (b, e) in inc.new_last_clean_interval.items():
            self._check_osd(osd, "new_last_clean_interval")
            self.osd_info[osd].last_clean_begin = b
            self.osd_info[osd].last_clean_end = e
        for osd, e in inc.new_lost.items():
            self._check_osd(osd, "new_lost")
            self.osd_info[osd].lost_at = e
        for osd, x in inc.new_xinfo.items():
            self._check_osd(osd, "new_xinfo")
            self.osd_xinfo[osd] = x
        for osd, u in inc.new_uuid.items():
            self._check_osd(osd, "new_uuid")
            self.osd_uuid[osd] = u

        for pg, osds in inc.new_pg_temp.items():
            if osds:
                self.pg_temp[pg] = list(osds)
            else:
                self.pg_temp.pop(pg, None)
        for pg, osd in inc.new_primary_temp.items():
            if osd == -1:
                self.primary_temp.pop(pg, None)
            else:
                self.primary_temp[pg] = osd
        for pg, osds in inc.new_pg_upmap.items():
            self.pg_upmap[pg] = list(osds)
        for pg in inc.old_pg_upmap:
            self.pg_upmap.pop(pg, None)
        for pg, items in inc.new_pg_upmap_items.items():
            self.pg_upmap_items[pg] = list(items)
        for pg in inc.old_pg_upmap_items:
            self.pg_upmap_items.pop(pg, None)
        for pg, osd in inc.new_pg_upmap_primary.items():
            self.pg_upmap_primaries[pg] = osd
        for pg in inc.old_pg_upmap_primary:
            self.pg_upmap_primaries.pop(pg, None)

        for addr, t in inc.new_blocklist.items():
            self.blocklist[addr] = t
        for addr in inc.old_blocklist:
            self.blocklist.pop(addr, None)
        for addr, t in inc.new_range_blocklist.items():
            self.range_blocklist[addr] = t
        for addr in inc.old_range_blocklist:
            self.range_blocklist.pop(addr, None)
        if inc.cluster_snapshot:
            self.cluster_snapshot = inc.cluster_snapshot
            self.cluster_snapshot_epoch = self.epoch
        else:
            self.cluster_snapshot = ""
            self.cluster_snapshot_epoch = 0

        # 0 (unknown) and 0xff (the int8 -1 of older encoders) both mean "unchanged".
        if 0 < inc.new_require_min_compat_client < 0xFF:
            self.require_min_compat_client = inc.new_require_min_compat_client
        if 0 < inc.new_require_osd_release < 0xFF:
            self.require_osd_release = inc.new_require_osd_release
            if self.require_osd_release >= CEPH_RELEASE_LUMINOUS:
                self.flags &= ~CEPH_OSDMAP_LEGACY_REQUIRE_FLAGS
                self.flags |= CEPH_OSDMAP_RECOVERY_DELETES
            if self.require_osd_release >= CEPH_RELEASE_NAUTILUS:
                self.flags |= CEPH_OSDMAP_PGLOG_HARDLIMIT
        for k, f in inc.new_crush_node_flags.items():
            if f:
                self.crush_node_flags[k] = f
            else:
                self.crush_node_flags.pop(k, None)
        for k, f in inc.new_device_class_flags.items():
            if f:
                self.device_class_flags[k] = f
            else:
                self.device_class_flags.pop(k, None)
        if inc.change_stretch_mode:
            self.stretch_mode_enabled = inc.stretch_mode_enabled
            self.stretch_bucket_count = inc.new_stretch_bucket_count
            self.degraded_stretch_mode = inc.new_degraded_stretch_mode
            self.recovering_stretch_mode = inc.new_recovering_stretch_mode
            self.stretch_mode_bucket = inc.new_stretch_mode_bucket

        # the new crush map goes last, after the up/down changes (as Ceph does)
        if inc.crush:
            self.crush_raw = inc.crush
            self.crush = _decode_crush(inc.crush)
            if self.require_osd_release >= CEPH_RELEASE_LUMINOUS:
                self.crush_version += 1
        self._post_decode()

    # -- placement ------------------------------------------------------------
    def object_locator_to_pg(
        self,
        pool_id: int,
        oid: str | bytes,
        key: str | bytes = "",
        namespace: str | bytes = "",
        hash: int = -1,
    ) -> PgT:
        """Raw PG (full 32-bit seed) of an object, as ``OSDMap::object_locator_to_pg``.

        ``key`` (the locator key) replaces ``oid`` for hashing when set; a namespace is
        hashed as ``namespace + '\\x1f' + name``; ``hash >= 0`` bypasses hashing.  Raises
        :class:`PoolNotFound`.
        """
        pool = self.get_pool(pool_id)
        if hash >= 0:
            return PgT(pool_id, hash & _M32)
        name = _b(key) if key else _b(oid)
        return PgT(pool_id, pool.hash_key(name, _b(namespace)))

    def raw_pg_to_pg(self, pg: PgT) -> PgT:
        """Fold a raw PG's seed into its pool's ``pg_num`` (stable mod).  Raises PoolNotFound."""
        return self.get_pool(pg.pool).raw_pg_to_pg(pg)

    def _crush_rule_for(self, pool: PgPool) -> int:
        crush = self.crush
        find_rule = getattr(crush, "find_rule", None)
        if find_rule is not None:
            return find_rule(pool.crush_rule, pool.type, pool.size)
        return pool.crush_rule

    def _pg_to_raw_osds(self, pool: PgPool, pg: PgT) -> tuple[list[int], int]:
        pps = pool.raw_pg_to_pps(pg)
        osds: list[int] = []
        if self.crush is None and self.crush_raw:
            raise FunctionNotSupported("CRUSH placement needs pyceph.osdmap.crush.CrushMap")
        if self.crush is not None:
            ruleno = self._crush_rule_for(pool)
            if ruleno >= 0:
                osds = list(self.crush.do_rule(ruleno, pps, pool.size, self.osd_weight, pg.pool))
        # remove nonexistent OSDs: shift for replicated, hole for EC
        if pool.can_shift_osds():
            osds = [o for o in osds if self.exists(o)]
        else:
            osds = [o if self.exists(o) else CRUSH_ITEM_NONE for o in osds]
        return osds, pps

    def _apply_upmap(self, pool: PgPool, raw_pg: PgT, raw: list[int]) -> list[int]:
        pg = pool.raw_pg_to_pg(raw_pg)
        um = self.pg_upmap.get(pg)
        if um is not None:
            for osd in um:
                if osd != CRUSH_ITEM_NONE and 0 <= osd < self.max_osd and self.osd_weight[osd] == 0:
                    return raw  # a target is out: ignore the explicit mapping entirely
            raw = list(um)
        items = self.pg_upmap_items.get(pg)
        if items:
            raw = list(raw)
            for frm, to in items:
                if to in raw:
                    continue
                to_out = to != CRUSH_ITEM_NONE and 0 <= to < self.max_osd and self.osd_weight[to] == 0
                if to_out:
                    continue
                for i, osd in enumerate(raw):
                    if osd == frm:
                        raw[i] = to
                        break
        return raw

    def _raw_to_up_osds(self, pool: PgPool, raw: list[int]) -> list[int]:
        if pool.can_shift_osds():
            return [o for o in raw if self.is_up(o)]
        return [o if self.is_up(o) else CRUSH_ITEM_NONE for o in raw]

    @staticmethod
    def _pick_primary(osds: list[int]) -> int:
        for o in osds:
            if o != CRUSH_ITEM_NONE:
                return o
        return -1

    def _apply_primary_affinity(self, pps: int, pool: PgPool, osds: list[int], primary: int) -> tuple[list[int], int]:
        aff = self.osd_primary_affinity
        if aff is None:
            return osds, primary
        if not any(
            o != CRUSH_ITEM_NONE and 0 <= o < len(aff) and aff[o] != CEPH_OSD_DEFAULT_PRIMARY_AFFINITY for o in osds
        ):
            return osds, primary
        pos = -1
        for i, o in enumerate(osds):
            if o == CRUSH_ITEM_NONE:
                continue
            a = aff[o] if 0 <= o < len(aff) else CEPH_OSD_DEFAULT_PRIMARY_AFFINITY
            if a < CEPH_OSD_MAX_PRIMARY_AFFINITY and (crush_hash32_2(pps, o) >> 16) >= a:
                # rejected as primary; remember it as a fallback and keep looking
                if pos < 0:
                    pos = i
            else:
                pos = i
                break
        if pos < 0:
            return osds, primary
        primary = osds[pos]
        if pool.can_shift_osds() and pos > 0:
            osds = [primary] + osds[:pos] + osds[pos + 1 :]
        return osds, primary

    def _get_temp_osds(self, pool: PgPool, raw_pg: PgT) -> tuple[list[int], int]:
        pg = pool.raw_pg_to_pg(raw_pg)
        temp: list[int] = []
        for o in self.pg_temp.get(pg, ()):
            if not self.is_up(o):
                if not pool.can_shift_osds():
                    temp.append(CRUSH_ITEM_NONE)
            else:
                temp.append(o)
        pt = self.primary_temp.get(pg)
        if pt is not None:
            return temp, pt
        return temp, self._pick_primary(temp)

    def pg_to_raw_osds(self, pg: PgT) -> tuple[list[int], int]:
        """CRUSH output for ``pg`` minus nonexistent OSDs, and its first OSD: ``(raw, primary)``.

        No upmap, up/down or temp mappings are applied (``OSDMap::pg_to_raw_osds``).
        """
        pool = self.pools.get(pg.pool)
        if pool is None:
            return [], -1
        raw, _ = self._pg_to_raw_osds(pool, pg)
        return raw, self._pick_primary(raw)

    def pg_to_up_acting_osds(self, pgid: PgT) -> tuple[list[int], int, list[int], int]:
        """Map a (raw or folded) PG to ``(up, up_primary, acting, acting_primary)``.

        OSD ids are ints; EC pools keep positions, with 2147483647 (CRUSH_ITEM_NONE) in
        holes; a primary of -1 means none.  A PG of an unknown pool maps to ``([], -1, [],
        -1)``, as in Ceph.  Requires the crush package for CRUSH placement.
        """
        return self.pg_mapping(pgid)[2:]

    def pg_mapping(self, pgid: PgT) -> tuple[list[int], int, list[int], int, list[int], int]:
        """``(raw, raw_primary, up, up_primary, acting, acting_primary)`` in one CRUSH run.

        ``raw``/``raw_primary`` are :meth:`pg_to_raw_osds`; the rest
        :meth:`pg_to_up_acting_osds`.
        """
        pool = self.pools.get(pgid.pool)
        if pool is None:
            return [], -1, [], -1, [], -1
        acting, acting_primary = self._get_temp_osds(pool, pgid)
        crush_out, pps = self._pg_to_raw_osds(pool, pgid)
        raw = self._apply_upmap(pool, pgid, crush_out)
        up = self._raw_to_up_osds(pool, raw)
        up_primary = self._pick_primary(up)
        up, up_primary = self._apply_primary_affinity(pps, pool, up, up_primary)
        if not acting:
            acting = list(up)
            if acting_primary == -1:
                acting_primary = up_primary
        return crush_out, self._pick_primary(crush_out), up, up_primary, acting, acting_primary

    def pg_to_acting_osds(self, pgid: PgT) -> tuple[list[int], int]:
        _, _, acting, primary = self.pg_to_up_acting_osds(pgid)
        return acting, primary

    def object_to_osds(
        self, pool_id: int, oid: str | bytes, key: str | bytes = "", namespace: str | bytes = ""
    ) -> tuple[PgT, list[int], int]:
        """Convenience: ``(pgid, acting, acting_primary)`` for an object.  Raises PoolNotFound."""
        raw = self.object_locator_to_pg(pool_id, oid, key, namespace)
        pg = self.raw_pg_to_pg(raw)
        _, _, acting, primary = self.pg_to_up_acting_osds(pg)
        return pg, acting, primary

    # -- dumps ----------------------------------------------------------------
    def to_dump_dict(self) -> dict:
        """A subset of ``ceph osd dump -f json`` (same key names and value formats).

        Top level: epoch, fsid, flags, flags_num, crush_version, pool_max, max_osd,
        require_osd_release, pools, osds, pg_upmap, pg_upmap_items, pg_temp, primary_temp,
        erasure_code_profiles.
        """
        return {
            "epoch": self.epoch,
            "fsid": _uuid_str(self.fsid),
            "flags": self.flag_string,
            "flags_num": self.flags,
            "crush_version": self.crush_version,
            "pool_max": self.pool_max,
            "max_osd": self.max_osd,
            "require_min_compat_client": release_name(self.require_min_compat_client),
            "require_osd_release": release_name(self.require_osd_release),
            "pools": [self._pool_dump(pid, p) for pid, p in sorted(self.pools.items())],
            "osds": [self._osd_dump(o) for o in range(self.max_osd) if self.exists(o)],
            "pg_upmap": [
                {"pgid": str(pg), "osds": list(osds)} for pg, osds in sorted(self.pg_upmap.items())
            ],
            "pg_upmap_items": [
                {"pgid": str(pg), "mappings": [{"from": f, "to": t} for f, t in items]}
                for pg, items in sorted(self.pg_upmap_items.items())
            ],
            "pg_temp": [{"pgid": str(pg), "osds": list(osds)} for pg, osds in sorted(self.pg_temp.items())],
            # Ceph dumps primary_temp as a flat array of alternating pgid strings and osds
            "primary_temp": [x for pg, osd in sorted(self.primary_temp.items()) for x in (str(pg), osd)],
            "erasure_code_profiles": {k: dict(sorted(v.items())) for k, v in sorted(self.erasure_code_profiles.items())},
        }

    def _pool_dump(self, pid: int, p: PgPool) -> dict:
        return {
            "pool": pid,
            "pool_name": self.pool_name.get(pid, "<unknown>"),
            "flags": p.flags,
            "flags_names": p.flags_names,
            "type": p.type,
            "size": p.size,
            "min_size": p.min_size,
            "crush_rule": p.crush_rule,
            "object_hash": p.object_hash,
            "pg_autoscale_mode": {0: "off", 1: "warn", 2: "on"}.get(p.pg_autoscale_mode, "???"),
            "pg_num": p.pg_num,
            "pg_placement_num": p.pgp_num,
            "pg_placement_num_target": p.pgp_num_target,
            "pg_num_target": p.pg_num_target,
            "pg_num_pending": p.pg_num_pending,
            "last_change": str(p.last_change),
            "last_force_op_resend": str(p.last_force_op_resend),
            "auid": p.auid,
            "snap_mode": p.snap_mode,
            "snap_seq": p.snap_seq,
            "snap_epoch": p.snap_epoch,
            "quota_max_bytes": p.quota_max_bytes,
            "quota_max_objects": p.quota_max_objects,
            "tier_of": p.tier_of,
            "read_tier": p.read_tier,
            "write_tier": p.write_tier,
            "erasure_code_profile": p.erasure_code_profile,
            "stripe_width": p.stripe_width,
            "expected_num_objects": p.expected_num_objects,
            "fast_read": p.fast_read,
            "options": dict(p.opts.opts),
            "application_metadata": {k: dict(v) for k, v in p.application_metadata.items()},
        }

    def _osd_dump(self, o: int) -> dict:
        info = self.osd_info[o] if o < len(self.osd_info) else OsdInfo()
        return {
            "osd": o,
            "uuid": _uuid_str(self.osd_uuid[o]) if o < len(self.osd_uuid) else _uuid_str(bytes(16)),
            "up": int(self.is_up(o)),
            "in": int(self.is_in(o)),
            "weight": self.get_weightf(o),
            "primary_affinity": self.get_primary_affinityf(o),
            "last_clean_begin": info.last_clean_begin,
            "last_clean_end": info.last_clean_end,
            "up_from": info.up_from,
            "up_thru": info.up_thru,
            "down_at": info.down_at,
            "lost_at": info.lost_at,
            "public_addrs": _addrvec_dump(self.client_addrs[o]),
            "cluster_addrs": _addrvec_dump(self.cluster_addrs[o]),
            "state": self.osd_state_names(o),
        }

    def __repr__(self) -> str:
        return f"<OSDMap e{self.epoch} pools={sorted(self.pools)} max_osd={self.max_osd}>"


def _b(s: str | bytes) -> bytes:
    return s.encode("utf-8", "surrogateescape") if isinstance(s, str) else bytes(s)


def _uuid_str(u: bytes) -> str:
    h = bytes(u).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _addrvec_dump(av: EntityAddrvec) -> dict:
    types = {1: "v1", 2: "v2", 3: "any", 0: "none"}
    return {
        "addrvec": [{"type": types.get(a.type, "???"), "addr": a.hostport, "nonce": a.nonce} for a in av.addrs]
    }


@dataclass
class Incremental:
    """``OSDMap::Incremental``: the changes from epoch ``epoch - 1`` to ``epoch``.

    Fields use Ceph's names; -1 (or a negative ratio) means "unchanged".  Maps are keyed
    by OSD id, pool id or :class:`PgT`.  ``fullmap``/``crush`` are encoded bytes (empty if
    absent).
    """

    fsid: bytes = bytes(16)
    epoch: int = 0
    modified: tuple[int, int] = (0, 0)
    new_pool_max: int = -1
    new_flags: int = -1
    fullmap: bytes = b""
    crush: bytes = b""
    new_max_osd: int = -1
    new_pools: dict[int, PgPool] = field(default_factory=dict)
    new_pool_names: dict[int, str] = field(default_factory=dict)
    old_pools: list[int] = field(default_factory=list)
    new_up_client: dict[int, EntityAddrvec] = field(default_factory=dict)
    new_state: dict[int, int] = field(default_factory=dict)
    new_weight: dict[int, int] = field(default_factory=dict)
    new_pg_temp: dict[PgT, list[int]] = field(default_factory=dict)
    new_primary_temp: dict[PgT, int] = field(default_factory=dict)
    new_primary_affinity: dict[int, int] = field(default_factory=dict)
    new_erasure_code_profiles: dict[str, dict[str, str]] = field(default_factory=dict)
    old_erasure_code_profiles: list[str] = field(default_factory=list)
    new_pg_upmap: dict[PgT, list[int]] = field(default_factory=dict)
    old_pg_upmap: list[PgT] = field(default_factory=list)
    new_pg_upmap_items: dict[PgT, list[tuple[int, int]]] = field(default_factory=dict)
    old_pg_upmap_items: list[PgT] = field(default_factory=list)
    new_removed_snaps: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    new_purged_snaps: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    new_last_up_change: tuple[int, int] = (0, 0)
    new_last_in_change: tuple[int, int] = (0, 0)
    new_pg_upmap_primary: dict[PgT, int] = field(default_factory=dict)
    old_pg_upmap_primary: list[PgT] = field(default_factory=list)
    # OSD-only section
    new_hb_back_up: dict[int, EntityAddrvec] = field(default_factory=dict)
    new_up_thru: dict[int, int] = field(default_factory=dict)
    new_last_clean_interval: dict[int, tuple[int, int]] = field(default_factory=dict)
    new_lost: dict[int, int] = field(default_factory=dict)
    new_blocklist: dict[EntityAddr, tuple[int, int]] = field(default_factory=dict)
    old_blocklist: list[EntityAddr] = field(default_factory=list)
    new_up_cluster: dict[int, EntityAddrvec] = field(default_factory=dict)
    cluster_snapshot: str = ""
    new_uuid: dict[int, bytes] = field(default_factory=dict)
    new_xinfo: dict[int, OsdXinfo] = field(default_factory=dict)
    new_hb_front_up: dict[int, EntityAddrvec] = field(default_factory=dict)
    encode_features: int = 0
    new_nearfull_ratio: float = -1.0
    new_full_ratio: float = -1.0
    new_backfillfull_ratio: float = -1.0
    new_require_min_compat_client: int = 0
    new_require_osd_release: int = 0
    new_crush_node_flags: dict[int, int] = field(default_factory=dict)
    new_device_class_flags: dict[int, int] = field(default_factory=dict)
    change_stretch_mode: bool = False
    new_stretch_bucket_count: int = 0
    new_degraded_stretch_mode: int = 0
    new_recovering_stretch_mode: int = 0
    new_stretch_mode_bucket: int = 0
    stretch_mode_enabled: bool = False
    new_range_blocklist: dict[EntityAddr, tuple[int, int]] = field(default_factory=dict)
    old_range_blocklist: list[EntityAddr] = field(default_factory=list)
    mutate_allow_crimson: int = 0
    inc_crc: Optional[int] = None
    full_crc: Optional[int] = None

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview | Decoder) -> "Incremental":
        """Decode an incremental map.  Checks its crc32c.  Raises :class:`DecodeError`."""
        d = data if isinstance(data, Decoder) else Decoder(data)
        inc = cls()
        start = d.pos
        v, _, wend = _begin_wrapper(d, "OSDMap::Incremental")
        saved_end = d.end
        d.end = wend
        try:
            inc._decode_client(d)
            inc._decode_osd_only(d)
            if v >= 8:
                crc_at = d.pos
                inc.inc_crc = d.u32()
                tail = d.pos
                inc.full_crc = d.u32()
                actual = crc32c(d.buf[start:crc_at], _M32)
                actual = crc32c(d.buf[tail:wend], actual)
                if actual != inc.inc_crc:
                    raise DecodeError(
                        f"OSDMap::Incremental: bad crc, actual {actual:#x} != expected {inc.inc_crc:#x}"
                    )
        finally:
            d.end = saved_end
        d.pos = wend
        return inc

    def _decode_client(self, d: Decoder) -> None:
        with d.start("OSDMap::Incremental client data", 9) as v:
            self.fsid = d.uuid()
            self.epoch = d.u32()
            self.modified = d.utime()
            self.new_pool_max = d.s64()
            self.new_flags = d.s32()
            self.fullmap = d.blob()
            self.crush = d.blob()
            self.new_max_osd = d.s32()
            n = d.count(8)
            for _ in range(n):
                pid = d.s64()
                self.new_pools[pid] = PgPool.decode(d, pid)
            self.new_pool_names = d.map(Decoder.s64, Decoder.string, 12)
            self.old_pools = d.list(Decoder.s64, 8)
            self.new_up_client = d.map(Decoder.s32, EntityAddrvec.decode, 5)
            if v >= 5:
                self.new_state = d.map(Decoder.s32, Decoder.u32, 8)
            else:
                self.new_state = d.map(Decoder.s32, Decoder.u8, 5)
            self.new_weight = d.map(Decoder.s32, Decoder.u32, 8)
            self.new_pg_temp = d.map(PgT.decode, _s32_list, 21)
            self.new_primary_temp = d.map(PgT.decode, Decoder.s32, 21)
            if v >= 2:
                self.new_primary_affinity = d.map(Decoder.s32, Decoder.u32, 8)
            if v >= 3:
                self.new_erasure_code_profiles = _ec_profiles(d)
                self.old_erasure_code_profiles = d.list(Decoder.string, 4)
            if v >= 4:
                self.new_pg_upmap = d.map(PgT.decode, _s32_list, 21)
                self.old_pg_upmap = _pg_set(d)
                self.new_pg_upmap_items = d.map(PgT.decode, _pair_list, 21)
                self.old_pg_upmap_items = _pg_set(d)
            if v >= 6:
                self.new_removed_snaps = _snap_interval_map(d)
                self.new_purged_snaps = _snap_interval_map(d)
            if v >= 8:
                self.new_last_up_change = d.utime()
                self.new_last_in_change = d.utime()
            if v >= 9:
                self.new_pg_upmap_primary = d.map(PgT.decode, Decoder.s32, 21)
                self.old_pg_upmap_primary = _pg_set(d)

    def _decode_osd_only(self, d: Decoder) -> None:
        with d.start("OSDMap::Incremental osd-only data", 12) as v:
            self.new_hb_back_up = d.map(Decoder.s32, EntityAddrvec.decode, 5)
            self.new_up_thru = d.map(Decoder.s32, Decoder.u32, 8)
            n = d.count(12)
            self.new_last_clean_interval = {d.s32(): (d.u32(), d.u32()) for _ in range(n)}
            self.new_lost = d.map(Decoder.s32, Decoder.u32, 8)
            self.new_blocklist = _addr_time_map(d)
            self.old_blocklist = d.list(EntityAddr.decode, 1)
            self.new_up_cluster = d.map(Decoder.s32, EntityAddrvec.decode, 5)
            self.cluster_snapshot = d.string()
            self.new_uuid = d.map(Decoder.s32, Decoder.uuid, 20)
            self.new_xinfo = d.map(Decoder.s32, OsdXinfo.decode, 10)
            self.new_hb_front_up = d.map(Decoder.s32, EntityAddrvec.decode, 5)
            if v >= 2:
                self.encode_features = d.u64()
            if v >= 3:
                self.new_nearfull_ratio = _f32(d)
                self.new_full_ratio = _f32(d)
            if v >= 4:
                self.new_backfillfull_ratio = _f32(d)
            if v == 5:
                name = d.string()
                if name in CEPH_RELEASE_NAMES:
                    self.new_require_min_compat_client = CEPH_RELEASE_NAMES.index(name)
            if v >= 6:
                self.new_require_min_compat_client = d.u8()
                self.new_require_osd_release = d.u8()
            if v >= 8:
                self.new_crush_node_flags = d.map(Decoder.s32, Decoder.u32, 8)
            if v >= 9:
                self.new_device_class_flags = d.map(Decoder.s32, Decoder.u32, 8)
            if v >= 10:
                self.change_stretch_mode = d.bool()
                self.new_stretch_bucket_count = d.u32()
                self.new_degraded_stretch_mode = d.u32()
                self.new_recovering_stretch_mode = d.u32()
                self.new_stretch_mode_bucket = d.s32()
                self.stretch_mode_enabled = d.bool()
            if v >= 11:
                self.new_range_blocklist = _addr_time_map(d)
                self.old_range_blocklist = d.list(EntityAddr.decode, 1)
            if v >= 12:
                self.mutate_allow_crimson = d.u8()


OSDMap.Incremental = Incremental
