"""Authentication: cephx (``pyceph.auth.cephx``), its crypto and wire structures."""

from .cephx import (
    CEPH_AUTH_CEPHX,
    CEPH_AUTH_NONE,
    CEPH_CON_MODE_CRC,
    CEPH_CON_MODE_SECURE,
    CephxAuthorizer,
    CephxClient,
    CephxServiceHooks,
    TicketHandler,
)
from .crypto import CryptoKey, hmac_sha256

__all__ = [
    "CEPH_AUTH_CEPHX",
    "CEPH_AUTH_NONE",
    "CEPH_CON_MODE_CRC",
    "CEPH_CON_MODE_SECURE",
    "CephxAuthorizer",
    "CephxClient",
    "CephxServiceHooks",
    "CryptoKey",
    "TicketHandler",
    "hmac_sha256",
]
