"""RBD (RADOS Block Device), format 2 images, as librbd writes them.

- :mod:`pyceph.rbd.image`: :class:`AsyncRBD` (create/list/remove/clone) and
  :class:`AsyncImage` (open/read/write/discard/resize/flush/close, features,
  exclusive lock + object map upkeep, clone reads and copy-up, ``rbd info`` JSON);
- :mod:`pyceph.rbd.striping`: image range -> data object extents;
- :mod:`pyceph.rbd.cls_client`: ``cls_rbd``/``cls_lock`` payloads;
- :mod:`pyceph.rbd.features`: feature bits and names.
"""

from .features import (
    RBD_FEATURE_DEEP_FLATTEN,
    RBD_FEATURE_EXCLUSIVE_LOCK,
    RBD_FEATURE_FAST_DIFF,
    RBD_FEATURE_JOURNALING,
    RBD_FEATURE_LAYERING,
    RBD_FEATURE_OBJECT_MAP,
    RBD_FEATURE_STRIPINGV2,
)
from .image import ArgumentOutOfRange, AsyncImage, AsyncRBD, ParentInfo
from .api import RBD, Image
from .striping import ObjectExtent, data_object_name, file_to_extents

__all__ = [
    "ArgumentOutOfRange",
    "AsyncImage",
    "AsyncRBD",
    "ParentInfo",
    "ObjectExtent",
    "data_object_name",
    "file_to_extents",
    "RBD_FEATURE_LAYERING",
    "RBD_FEATURE_STRIPINGV2",
    "RBD_FEATURE_EXCLUSIVE_LOCK",
    "RBD_FEATURE_OBJECT_MAP",
    "RBD_FEATURE_FAST_DIFF",
    "RBD_FEATURE_DEEP_FLATTEN",
    "RBD_FEATURE_JOURNALING",
]
