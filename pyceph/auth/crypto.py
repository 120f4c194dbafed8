"""cephx cryptography: ``CryptoKey``, Ceph's AES-128-CBC and the encrypt envelopes.

Formats:

- ``CryptoKey`` (``src/auth/Crypto.h``, kernel ``net/ceph/crypto.c``
  ``ceph_crypto_key_decode``): ``u16 type, utime created, u16 len, len bytes secret``.
  The keyring's ``key = AQ...==`` is that encoding in base64.
- AES (``CEPH_CRYPTO_AES``): AES-128 in CBC mode with the fixed IV ``CEPH_AES_IV``
  (``"cephsageyudagreg"``, ``include/linux/ceph/ceph_fs.h``) and PKCS#7 padding (always
  1..16 bytes); ``CEPH_CRYPTO_NONE`` keys encrypt to the plaintext.
- ``encode_encrypt`` (``src/auth/cephx/CephxProtocol.h``; kernel ``ceph_x_encrypt``):
  ``u32 len`` then the ciphertext of ``u8 struct_v=1, u64 magic 0xff009cad8826aa55,
  body``.  ``encode_encrypt_enc_bl`` is the same ciphertext without the length.

Wrong keys are detected by the padding or the magic and raise
:class:`pyceph.errors.AuthError`; truncated envelopes raise
:class:`pyceph.errors.DecodeError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..encoding import Decoder, Encoder
from ..errors import AuthError, ConfigError, DecodeError

CEPH_CRYPTO_NONE = 0
CEPH_CRYPTO_AES = 1

CEPH_AES_IV = b"cephsageyudagreg"
AES_KEY_LEN = 16
AES_BLOCK_LEN = 16
CEPHX_ENC_MAGIC = 0xFF009CAD8826AA55
# Ceph keys are 16 bytes; bound what a peer can make us hold (kernel: CEPH_MAX_KEY_LEN).
MAX_SECRET_LEN = 64

_ENC_HEADER = struct.Struct("<BQ")


@dataclass(frozen=True)
class CryptoKey:
    """``CryptoKey``: ``type`` (CEPH_CRYPTO_*), ``created`` ``(sec, nsec)``, ``secret`` bytes."""

    type: int = CEPH_CRYPTO_AES
    created: tuple[int, int] = (0, 0)
    secret: bytes = field(default=b"", repr=False)

    @classmethod
    def decode(cls, d: Decoder) -> "CryptoKey":
        """Read one ``CryptoKey``; raises DecodeError if truncated or oversized."""
        ktype = d.u16()
        created = d.utime()
        n = d.u16()
        if n > MAX_SECRET_LEN:
            raise DecodeError(f"CryptoKey secret of {n} bytes exceeds {MAX_SECRET_LEN}")
        return cls(ktype, created, d.raw(n))

    def encode(self, e: Encoder) -> Encoder:
        return e.u16(self.type).utime(self.created).u16(len(self.secret)).raw(self.secret)

    def to_bytes(self) -> bytes:
        return self.encode(Encoder()).bytes()

    @classmethod
    def from_bytes(cls, b: bytes) -> "CryptoKey":
        return cls.decode(Decoder(b))

    @classmethod
    def from_base64(cls, text: str) -> "CryptoKey":
        """Parse the keyring form (``AQA/UQFr...==``).  Raises ConfigError if malformed."""
        try:
            raw = base64.b64decode(text.strip(), validate=True)
            d = Decoder(raw)
            key = cls.decode(d)
        except (binascii.Error, ValueError, DecodeError) as ex:
            raise ConfigError(f"malformed cephx key {text!r}: {ex}") from None
        if not d.eof():
            raise ConfigError(f"malformed cephx key {text!r}: {d.remaining} trailing bytes")
        if key.type == CEPH_CRYPTO_AES and len(key.secret) < AES_KEY_LEN:
            raise ConfigError(f"cephx key {text!r} is too short for AES ({len(key.secret)} bytes)")
        return key

    def to_base64(self) -> str:
        return base64.b64encode(self.to_bytes()).decode("ascii")

    # -- AES-CBC -------------------------------------------------------------
    def _aes(self) -> Cipher:
        if len(self.secret) < AES_KEY_LEN:
            raise AuthError(f"AES key of {len(self.secret)} bytes is too short")
        # Ceph's AES is AES-128: only the first 16 bytes of the secret are used.
        return Cipher(algorithms.AES(self.secret[:AES_KEY_LEN]), modes.CBC(CEPH_AES_IV))

    def encrypt(self, plaintext: bytes) -> bytes:
        """Raw ``CryptoKey::encrypt``: padded AES-128-CBC (no envelope)."""
        if self.type == CEPH_CRYPTO_NONE:
            return bytes(plaintext)
        if self.type != CEPH_CRYPTO_AES:
            raise AuthError(f"unsupported cephx key type {self.type}")
        pad = AES_BLOCK_LEN - len(plaintext) % AES_BLOCK_LEN
        enc = self._aes().encryptor()
        return enc.update(bytes(plaintext) + bytes([pad]) * pad) + enc.finalize()

    def decrypt(self, ciphertext: bytes) -> bytes:
        """Raw ``CryptoKey::decrypt``.

        Raises DecodeError if the length is not a positive multiple of 16 and AuthError
        if the padding is invalid (the usual sign of a wrong key).
        """
        if self.type == CEPH_CRYPTO_NONE:
            return bytes(ciphertext)
        if self.type != CEPH_CRYPTO_AES:
            raise AuthError(f"unsupported cephx key type {self.type}")
        n = len(ciphertext)
        if n == 0 or n % AES_BLOCK_LEN:
            raise DecodeError(f"AES ciphertext of {n} bytes is not a whole number of blocks")
        dec = self._aes().decryptor()
        out = dec.update(bytes(ciphertext)) + dec.finalize()
        pad = out[-1]
        # Like the kernel (ceph_aes_crypt) and Ceph, only the last byte is checked.
        if not 1 <= pad <= AES_BLOCK_LEN:
            raise AuthError("decryption failed: bad padding (wrong key?)")
        return out[:-pad]


def encrypt_enc_bl(key: CryptoKey, body: bytes) -> bytes:
    """``encode_encrypt_enc_bl``: ciphertext of ``u8 1, u64 magic, body`` (no length)."""
    return key.encrypt(_ENC_HEADER.pack(1, CEPHX_ENC_MAGIC) + bytes(body))


def encode_encrypt(key: CryptoKey, body: bytes) -> bytes:
    """``encode_encrypt``: ``u32 len`` + :func:`encrypt_enc_bl`."""
    ct = encrypt_enc_bl(key, body)
    return struct.pack("<I", len(ct)) + ct


def decrypt_enc_bl(key: CryptoKey, ciphertext: bytes) -> bytes:
    """Inverse of :func:`encrypt_enc_bl`: returns the body after the magic header.

    Raises AuthError on bad padding or magic (wrong key), DecodeError on bad lengths.
    """
    pt = key.decrypt(ciphertext)
    if len(pt) < _ENC_HEADER.size:
        raise AuthError("decryption failed: plaintext shorter than the cephx header (wrong key?)")
    _v, magic = _ENC_HEADER.unpack_from(pt)
    if magic != CEPHX_ENC_MAGIC:
        raise AuthError("decryption failed: bad magic (wrong key?)")
    return pt[_ENC_HEADER.size :]


def decode_decrypt(key: CryptoKey, d: Decoder) -> bytes:
    """``decode_decrypt``: read ``u32 len`` + ciphertext from ``d`` and decrypt it.

    Returns the plaintext body; raises DecodeError/AuthError as :func:`decrypt_enc_bl`.
    """
    return decrypt_enc_bl(key, d.blob())


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 (32 bytes), as msgr2's AUTH_SIGNATURE uses with the session key."""
    return hmac.new(bytes(key), bytes(data), hashlib.sha256).digest()


