"""cephx message signatures for msgr1 (``ceph_msg_footer.sig``).

Ceph's ``CephxSessionHandler::_calc_signature`` (``src/auth/cephx/CephxSessionHandler.cc``)
and the kernel's ``calc_signature`` (``net/ceph/auth_x.c``): the session key of the
connection's authorizer encrypts a small block of the message's CRCs, and 64 bits of the
ciphertext are the signature.

- peers with ``CEPH_FEATURE_CEPHX_V2`` (mimic+): the 32-byte block ``le32 header_crc,
  le32 front_crc, le32 front_len, le32 middle_crc, le32 middle_len, le32 data_crc,
  le32 data_len, le32 seq_lower_word``; the signature is the XOR of the first four
  little-endian u64 words of the ciphertext;
- older peers: the block ``u8 1, le64 CEPHX_ENC_MAGIC, le32 16, le32 header_crc,
  le32 front_crc, le32 middle_crc, le32 data_crc``; the signature is the first
  little-endian u64 of the ciphertext.

An AES256KRB5 session key encrypts with a random confounder, so with such a key the
block is HMAC-SHA256'd under the raw secret instead (Ceph 20's CephxSessionHandler, the
kernel's ``calc_signature`` with ``ceph_hmac_sign``); it exists only for CEPHX_V2 peers.

msgr2 does not sign messages (its frames carry CRCs or are encrypted).
"""

from __future__ import annotations

import struct

from ..errors import AuthError
from .crypto import CEPH_CRYPTO_AES, CEPHX_ENC_MAGIC, CryptoKey

_SIG_V2 = struct.Struct("<8I")
_SIG_V1 = struct.Struct("<BQI4I")
_U64X4 = struct.Struct("<4Q")
_U64 = struct.Struct("<Q")


def calc_signature(
    key: CryptoKey,
    *,
    header_crc: int,
    front_crc: int,
    middle_crc: int,
    data_crc: int,
    front_len: int,
    middle_len: int,
    data_len: int,
    seq: int,
    cephx_v2: bool = True,
) -> int:
    """The u64 signature of one message (CRCs and lengths as they are on the wire).

    ``cephx_v2``: the peer has CEPH_FEATURE_CEPHX_V2.  Raises AuthError for an
    AES256KRB5 key with a pre-CEPHX_V2 peer.  The single place where a session key signs.
    """
    if key.type != CEPH_CRYPTO_AES and not cephx_v2:
        raise AuthError(f"msgr1 message signatures with cephx key type {key.type} are not implemented")
    if cephx_v2:
        block = _SIG_V2.pack(
            header_crc, front_crc, front_len, middle_crc, middle_len, data_crc, data_len,
            seq & 0xFFFFFFFF,
        )
        enc = key.encrypt(block) if key.type == CEPH_CRYPTO_AES else key.hmac_sha256(block)
        a, b, c, d = _U64X4.unpack_from(enc)
        return a ^ b ^ c ^ d
    block = _SIG_V1.pack(1, CEPHX_ENC_MAGIC, 16, header_crc, front_crc, middle_crc, data_crc)
    return _U64.unpack_from(key.encrypt(block))[0]
