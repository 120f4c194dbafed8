"""Reproductions of Ceph tool output over a decoded OSDMap, for tests and the CLI.

- :func:`dump_all_pgs`: ``osdmaptool FILE --test-map-pgs-dump-all [--pool ID]``
  (``src/tools/osdmaptool.cc``), line for line.
- :func:`osd_map_json`: ``ceph osd map POOL OBJECT [NAMESPACE] -f json``
  (``OSDMonitor::preprocess_command``, "osd map", in ``src/mon/OSDMonitor.cc``).
"""

from __future__ import annotations

import math
import struct
from typing import Optional

from ..types import PgT
from .osdmap import CEPH_OSD_IN, OSDMap
from .pool import CRUSH_ITEM_NONE

_F32 = struct.Struct("<f")


def _as_f32(x: float) -> float:
    # Ceph computes these weights in C++ float
    return _F32.unpack(_F32.pack(x))[0]


def _fmt(x: float) -> str:
    """A double as C++ ``ostream <<`` prints it by default (``%g``, 6 digits)."""
    if math.isnan(x):
        return "-nan" if math.copysign(1.0, x) < 0 else "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return "%g" % x


def _div(a: float, b: float) -> float:
    """IEEE division as C++ does it (x/0 is inf, 0/0 is the x86 default -nan)."""
    if b != 0:
        return a / b
    if a == 0 or math.isnan(a):
        return math.copysign(math.nan, -1.0)
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _vec(osds: list[int]) -> str:
    return "[" + ",".join(str(o) for o in osds) + "]"


def crush_item_weight(osdmap: OSDMap, item: int) -> int:
    """``CrushWrapper::get_item_weight``: 16.16 weight of ``item`` in the first bucket holding
    it (or of the bucket itself), or ``-ENOENT`` (-2) if the CRUSH map has no such item."""
    crush = osdmap.crush
    if crush is None:
        return -2
    for b in crush.buckets:
        if b is None:
            continue
        if b.id == item:
            return b.weight
        for i, it in enumerate(b.items):
            if it == item:
                return b.item_weight_at(i)
    return -2


def dump_all_pgs(osdmap: OSDMap, pool: Optional[int] = None) -> list[str]:
    """The lines ``osdmaptool --test-map-pgs-dump-all [--pool ID]`` prints (no newlines).

    Per pool: ``pool N pg_num M`` then one ``PGID raw ([..], pP) up ([..], pP) acting ([..],
    pP)`` line per PG; then the per-OSD table and statistics footer.  Raises
    :class:`pyceph.errors.PoolNotFound` if ``pool`` is given and absent.
    """
    if pool is not None:
        osdmap.get_pool(pool)
    n = osdmap.max_osd
    count = [0] * n
    first_count = [0] * n
    primary_count = [0] * n
    size: dict[int, int] = {}
    max_size = 0
    out: list[str] = []
    for pid in sorted(osdmap.pools):
        if pool is not None and pid != pool:
            continue
        p = osdmap.pools[pid]
        out.append(f"pool {pid} pg_num {p.pg_num}")
        for ps in range(p.pg_num):
            pgid = PgT(pid, ps)
            raw, raw_primary, up, up_primary, acting, acting_primary = osdmap.pg_mapping(pgid)
            osds, primary = acting, acting_primary
            size[len(osds)] = size.get(len(osds), 0) + 1
            max_size = max(max_size, len(osds))
            out.append(
                f"{pgid} raw ({_vec(raw)}, p{raw_primary}) up ({_vec(up)}, p{up_primary})"
                f" acting ({_vec(acting)}, p{acting_primary})"
            )
            for o in osds:
                if o != CRUSH_ITEM_NONE and 0 <= o < n:
                    count[o] += 1
            if osds and osds[0] != CRUSH_ITEM_NONE and 0 <= osds[0] < n:
                first_count[osds[0]] += 1
            if 0 <= primary < n:
                primary_count[primary] += 1

    out.append("#osd\tcount\tfirst\tprimary\tc wt\twt")
    total = 0
    n_in = 0
    min_osd = max_osd = -1
    counted: list[int] = []
    for i in range(n):
        if not osdmap.is_in(i):
            continue
        cw = crush_item_weight(osdmap, i)
        if cw <= 0:
            continue
        n_in += 1
        counted.append(i)
        out.append(
            f"osd.{i}\t{count[i]}\t{first_count[i]}\t{primary_count[i]}"
            f"\t{_fmt(_as_f32(_as_f32(cw) / 0x10000))}"
            f"\t{_fmt(_as_f32(_as_f32(osdmap.osd_weight[i]) / CEPH_OSD_IN))}"
        )
        total += count[i]
        if count[i] and (min_osd < 0 or count[i] < count[min_osd]):
            min_osd = i
        if count[i] and (max_osd < 0 or count[i] > count[max_osd]):
            max_osd = i
    avg = total // n_in if n_in else 0
    dev = 0.0
    for i in counted:
        dev += float((avg - count[i]) ** 2)
    dev = _div(dev, n_in)
    dev = math.sqrt(dev) if not math.isnan(dev) else dev
    q = _div(float(total), float(n_in))
    edev_sq = q * (1.0 - _div(1.0, float(n_in))) if not math.isnan(q) else q
    edev = math.sqrt(edev_sq) if not math.isnan(edev_sq) and edev_sq >= 0 else math.copysign(math.nan, -1.0)
    out.append(f" in {n_in}")
    out.append(
        f" avg {avg} stddev {_fmt(dev)} ({_fmt(_div(dev, avg))}x)"
        f" (expected {_fmt(edev)} {_fmt(_div(edev, avg))}x))"
    )
    if min_osd >= 0:
        out.append(f" min osd.{min_osd} {count[min_osd]}")
    if max_osd >= 0:
        out.append(f" max osd.{max_osd} {count[max_osd]}")
    for i in range(max_size + 1):
        if size.get(i):
            out.append(f"size {i}\t{size[i]}")
    return out


def osd_map_json(osdmap: OSDMap, pool_name: str, objname: str, namespace: str = "") -> dict:
    """The object ``ceph osd map POOL OBJECT [NAMESPACE] -f json`` prints, as a dict.

    Keys: epoch, pool, pool_id, objname (``ns/name`` with a namespace), raw_pgid, pgid,
    up, up_primary, acting, acting_primary.  Raises :class:`pyceph.errors.PoolNotFound`.
    """
    pool_id = osdmap.lookup_pool(pool_name)
    raw = osdmap.object_locator_to_pg(pool_id, objname, namespace=namespace)
    pgid = osdmap.raw_pg_to_pg(raw)
    up, up_primary, acting, acting_primary = osdmap.pg_to_up_acting_osds(pgid)
    return {
        "epoch": osdmap.epoch,
        "pool": pool_name,
        "pool_id": pool_id,
        "objname": f"{namespace}/{objname}" if namespace else objname,
        "raw_pgid": str(raw),
        "pgid": str(pgid),
        "up": up,
        "up_primary": up_primary,
        "acting": acting,
        "acting_primary": acting_primary,
    }
