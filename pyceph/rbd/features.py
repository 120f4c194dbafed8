"""RBD image feature bits, operation features and header flags.

Values and names from Ceph's ``src/include/rbd/features.h`` (Pacific),
``src/include/rbd_types.h`` (flags) and the ``FEATURE_MAPPING`` table in
``src/tools/rbd/ArgumentTypes.cc`` (the names ``rbd info`` prints).
"""

from __future__ import annotations

RBD_FEATURE_LAYERING = 1 << 0
RBD_FEATURE_STRIPINGV2 = 1 << 1
RBD_FEATURE_EXCLUSIVE_LOCK = 1 << 2
RBD_FEATURE_OBJECT_MAP = 1 << 3
RBD_FEATURE_FAST_DIFF = 1 << 4
RBD_FEATURE_DEEP_FLATTEN = 1 << 5
RBD_FEATURE_JOURNALING = 1 << 6
RBD_FEATURE_DATA_POOL = 1 << 7
RBD_FEATURE_OPERATIONS = 1 << 8
RBD_FEATURE_MIGRATING = 1 << 9
RBD_FEATURE_NON_PRIMARY = 1 << 10
RBD_FEATURE_DIRTY_CACHE = 1 << 11

FEATURE_NAMES: dict[int, str] = {
    RBD_FEATURE_LAYERING: "layering",
    RBD_FEATURE_STRIPINGV2: "striping",
    RBD_FEATURE_EXCLUSIVE_LOCK: "exclusive-lock",
    RBD_FEATURE_OBJECT_MAP: "object-map",
    RBD_FEATURE_FAST_DIFF: "fast-diff",
    RBD_FEATURE_DEEP_FLATTEN: "deep-flatten",
    RBD_FEATURE_JOURNALING: "journaling",
    RBD_FEATURE_DATA_POOL: "data-pool",
    RBD_FEATURE_OPERATIONS: "operations",
    RBD_FEATURE_MIGRATING: "migrating",
    RBD_FEATURE_NON_PRIMARY: "non-primary",
    RBD_FEATURE_DIRTY_CACHE: "dirty-cache",
}

RBD_FEATURES_ALL = 0
for _bit in FEATURE_NAMES:
    RBD_FEATURES_ALL |= _bit
del _bit

#: features that make an image unreadable by clients that do not understand them
RBD_FEATURES_INCOMPATIBLE = (
    RBD_FEATURE_LAYERING | RBD_FEATURE_STRIPINGV2 | RBD_FEATURE_DATA_POOL | RBD_FEATURE_DIRTY_CACHE
)
#: features that make an image unwritable by clients that do not understand them
RBD_FEATURES_RW_INCOMPATIBLE = (
    RBD_FEATURES_INCOMPATIBLE
    | RBD_FEATURE_EXCLUSIVE_LOCK
    | RBD_FEATURE_OBJECT_MAP
    | RBD_FEATURE_FAST_DIFF
    | RBD_FEATURE_DEEP_FLATTEN
    | RBD_FEATURE_JOURNALING
    | RBD_FEATURE_OPERATIONS
    | RBD_FEATURE_MIGRATING
    | RBD_FEATURE_NON_PRIMARY
)

#: what pyceph itself implements, for reading and for writing: layering (clones read
#: through their parent, copy-up on write), striping, exclusive-lock (cls_lock on the
#: header + watch/notify), object-map and fast-diff (kept in step like librbd),
#: deep-flatten (copy-up with snapshots).  Journaling, data pools and live migration
#: are still refused.
PYCEPH_FEATURES_READ = (
    RBD_FEATURE_LAYERING
    | RBD_FEATURE_STRIPINGV2
    | RBD_FEATURE_EXCLUSIVE_LOCK
    | RBD_FEATURE_OBJECT_MAP
    | RBD_FEATURE_FAST_DIFF
    | RBD_FEATURE_DEEP_FLATTEN
)
#: what AsyncRBD.create() accepts (STRIPINGV2 is implied by non-default stripe params)
PYCEPH_FEATURES_CREATE = PYCEPH_FEATURES_READ
# "operations" only says the header has op_features (clone v2 parent/child, snap trash)
PYCEPH_FEATURES_READ |= RBD_FEATURE_OPERATIONS
PYCEPH_FEATURES_WRITE = PYCEPH_FEATURES_READ
#: default for create(): Pacific's ``rbd_default_features`` (0x3d: layering,
#: exclusive-lock, object-map, fast-diff, deep-flatten)
PYCEPH_FEATURES_DEFAULT = (
    RBD_FEATURE_LAYERING
    | RBD_FEATURE_EXCLUSIVE_LOCK
    | RBD_FEATURE_OBJECT_MAP
    | RBD_FEATURE_FAST_DIFF
    | RBD_FEATURE_DEEP_FLATTEN
)
#: ``RBD_FEATURES_MUTABLE`` (features.h): what ``rbd feature enable`` may turn on
RBD_FEATURES_MUTABLE = (
    RBD_FEATURE_EXCLUSIVE_LOCK
    | RBD_FEATURE_OBJECT_MAP
    | RBD_FEATURE_FAST_DIFF
    | RBD_FEATURE_JOURNALING
    | RBD_FEATURE_NON_PRIMARY
)
#: ``RBD_FEATURES_DISABLE_ONLY``: may be turned off but never on again
RBD_FEATURES_DISABLE_ONLY = RBD_FEATURE_DEEP_FLATTEN

RBD_OPERATION_FEATURE_CLONE_PARENT = 1 << 0
RBD_OPERATION_FEATURE_CLONE_CHILD = 1 << 1
RBD_OPERATION_FEATURE_GROUP = 1 << 2
RBD_OPERATION_FEATURE_SNAP_TRASH = 1 << 3

OP_FEATURE_NAMES: dict[int, str] = {
    RBD_OPERATION_FEATURE_CLONE_PARENT: "clone-parent",
    RBD_OPERATION_FEATURE_CLONE_CHILD: "clone-child",
    RBD_OPERATION_FEATURE_GROUP: "group",
    RBD_OPERATION_FEATURE_SNAP_TRASH: "snap-trash",
}

RBD_FLAG_OBJECT_MAP_INVALID = 1 << 0
RBD_FLAG_FAST_DIFF_INVALID = 1 << 1

FLAG_NAMES: dict[int, str] = {
    RBD_FLAG_OBJECT_MAP_INVALID: "object map invalid",
    RBD_FLAG_FAST_DIFF_INVALID: "fast diff invalid",
}


def _names(mapping: dict[int, str], bits: int) -> list[str]:
    return [name for bit, name in sorted(mapping.items()) if bits & bit]


def feature_names(features: int) -> list[str]:
    """Known feature names set in ``features``, in bit order (``rbd info`` order)."""
    return _names(FEATURE_NAMES, features)


def op_feature_names(op_features: int) -> list[str]:
    return _names(OP_FEATURE_NAMES, op_features)


def flag_names(flags: int) -> list[str]:
    return _names(FLAG_NAMES, flags)


def describe_features(features: int) -> str:
    """``0x38 (object-map, fast-diff, deep-flatten)``; unknown bits shown as ``bit N``."""
    parts = feature_names(features)
    unknown = features & ~RBD_FEATURES_ALL
    parts += [f"bit {i}" for i in range(64) if unknown >> i & 1]
    return f"{features:#x} ({', '.join(parts)})" if parts else f"{features:#x}"


def features_from_names(names: str | list[str]) -> int:
    """``"layering,striping"`` or a list of names -> feature bits.  Raises ValueError."""
    if isinstance(names, str):
        names = [n for n in names.replace(" ", ",").split(",") if n]
    by_name = {v: k for k, v in FEATURE_NAMES.items()}
    bits = 0
    for n in names:
        if n not in by_name:
            raise ValueError(f"unknown RBD feature {n!r}")
        bits |= by_name[n]
    return bits
