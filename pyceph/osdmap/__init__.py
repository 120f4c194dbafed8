"""OSDMap decoding and object placement (``src/osd/OSDMap.cc``, kernel ``net/ceph/osdmap.c``).

``OSDMap.decode(bytes)`` reads a full map; ``OSDMap.Incremental.decode(bytes)`` and
``OSDMap.apply_incremental(inc)`` advance it; ``object_locator_to_pg``, ``raw_pg_to_pg`` and
``pg_to_up_acting_osds`` place objects exactly as Ceph does.  ``tool`` reproduces
``osdmaptool --test-map-pgs-dump-all`` and ``ceph osd map`` output.  CRUSH lives in
:mod:`pyceph.osdmap.crush`.
"""

from .hash import ceph_str_hash, ceph_str_hash_linux, ceph_str_hash_rjenkins
from .osdmap import Incremental, OSDMap, OsdInfo, OsdXinfo
from .pool import CRUSH_ITEM_NONE, PgPool, PoolOpts, PoolSnapInfo, ceph_stable_mod

__all__ = [
    "CRUSH_ITEM_NONE",
    "Incremental",
    "OSDMap",
    "OsdInfo",
    "OsdXinfo",
    "PgPool",
    "PoolOpts",
    "PoolSnapInfo",
    "ceph_stable_mod",
    "ceph_str_hash",
    "ceph_str_hash_linux",
    "ceph_str_hash_rjenkins",
]
