"""cephx cryptography: ``CryptoKey`` of every type Ceph uses, and the encrypt envelopes.

Formats:

- ``CryptoKey`` (``src/auth/Crypto.h``, kernel ``net/ceph/crypto.c``
  ``ceph_crypto_key_decode``): ``u16 type, utime created, u16 len, len bytes secret``.
  The keyring's ``key = AQ...==`` (AES) or ``key = Ag...==`` (AES256KRB5) is that
  encoding in base64.
- ``CEPH_CRYPTO_AES`` (type 1, ``CryptoAES`` in ``src/auth/Crypto.cc``; kernel
  ``ceph_aes_crypt``): AES-128 in CBC mode with the fixed IV ``CEPH_AES_IV``
  (``"cephsageyudagreg"``, ``include/linux/ceph/ceph_fs.h``) and PKCS#7 padding (always
  1..16 bytes).  The key usage is ignored.
- ``CEPH_CRYPTO_AES256KRB5`` (type 2, "aes256k", Tentacle's default;
  ``CryptoAES256KRB5`` in ``src/auth/Crypto.cc``; kernel ``ceph_krb5_encrypt``):
  RFC 8009 ``aes256-cts-hmac-sha384-192``.  Per key usage ``u`` (``CEPHX_KEY_USAGE_*``)
  the base secret gives ``Ke = KDF(secret, u|0xAA, 256 bits)`` and
  ``Ki = KDF(secret, u|0x55, 192 bits)`` with ``KDF(K, label, k) =
  HMAC-SHA384(K, be32 1 | label | 0x00 | be32 k)[:k/8]``.  A ciphertext is
  ``AES-256-CTS(Ke, IV=0, confounder(16 random bytes) | plaintext)`` followed by
  ``HMAC-SHA384(Ki, IV | that)[:24]``: always 40 bytes longer than the plaintext.
  CTS is the Kerberos variant (OpenSSL's "CS3": the last two blocks always swapped).
- ``CEPH_CRYPTO_NONE`` keys encrypt to the plaintext.
- ``encode_encrypt`` (``src/auth/cephx/CephxProtocol.h``; kernel ``ceph_x_encrypt``):
  ``u32 len`` then the ciphertext of ``u8 struct_v=1, u64 magic 0xff009cad8826aa55,
  body``.  ``encode_encrypt_enc_bl`` is the same ciphertext without the length.

Wrong keys (of either type) are detected by the ciphertext's length, the padding or the
magic (AES) or the HMAC (AES256KRB5) and raise :class:`pyceph.errors.AuthError`;
truncated envelopes raise :class:`pyceph.errors.DecodeError`.  No error message, repr or
log line carries a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..encoding import Decoder, Encoder
from ..errors import AuthError, ConfigError, DecodeError

# CEPH_CRYPTO_* (include/ceph_fs.h; kernel include/linux/ceph/ceph_fs.h)
CEPH_CRYPTO_NONE = 0
CEPH_CRYPTO_AES = 1
CEPH_CRYPTO_AES256KRB5 = 2
# Names as ``ceph auth get-or-create --key-type`` and ``auth_allowed_ciphers`` spell them
# (CryptoManager::get_key_type_name).
CRYPTO_TYPE_NAMES = {CEPH_CRYPTO_NONE: "none", CEPH_CRYPTO_AES: "aes", CEPH_CRYPTO_AES256KRB5: "aes256k"}

# cephx key usages (Ceph src/auth/cephx/CephxProtocol.h; kernel net/ceph/auth_x_protocol.h).
# Only AES256KRB5 derives a key per usage; Ceph's plain encrypt()/decrypt() is usage 0.
CEPHX_KEY_USAGE_AUTH_CONNECTION_SECRET = 0x03  # mon's connection secret (AUTH session key)
CEPHX_KEY_USAGE_TICKET_SESSION_KEY = 0x04  # CephXServiceTicket: client key / AUTH session key
CEPHX_KEY_USAGE_TICKET_BLOB = 0x05  # renewed AUTH ticket blob (old AUTH session key)
CEPHX_KEY_USAGE_AUTHORIZE = 0x10  # CephXAuthorize (ticket session key)
CEPHX_KEY_USAGE_AUTHORIZE_CHALLENGE = 0x11  # CephXAuthorizeChallenge (ticket session key)
CEPHX_KEY_USAGE_AUTHORIZE_REPLY = 0x12  # CephXAuthorizeReply (ticket session key)
CEPHX_KEY_USAGE_ROTATING_SECRET = 0x20  # daemons' rotating secrets (daemon key)
CEPHX_KEY_USAGE_TICKET_INFO = 0x30  # CephXServiceTicketInfo (rotating service key)

CEPH_AES_IV = b"cephsageyudagreg"
AES_KEY_LEN = 16
AES_BLOCK_LEN = 16
AES256KRB5_KEY_LEN = 32
AES256KRB5_CONFOUNDER_LEN = 16
AES256KRB5_HMAC_LEN = 24  # HMAC-SHA384 truncated to 192 bits
_KRB5_KE = 0xAA  # RFC 3961 key-derivation label suffixes
_KRB5_KI = 0x55
_ZERO_IV = bytes(AES_BLOCK_LEN)
CEPHX_ENC_MAGIC = 0xFF009CAD8826AA55
# Ceph keys are 16 or 32 bytes; bound what a peer can make us hold (kernel: CEPH_MAX_KEY_LEN).
MAX_SECRET_LEN = 64
# Shortest secret each type accepts (CryptoHandler::validate_secret).
_MIN_SECRET_LEN = {CEPH_CRYPTO_NONE: 0, CEPH_CRYPTO_AES: AES_KEY_LEN, CEPH_CRYPTO_AES256KRB5: AES256KRB5_KEY_LEN}

_ENC_HEADER = struct.Struct("<BQ")


def looks_like_secret(text: str) -> bool:
    """True if ``text`` decodes as base64 (padding optional) to 16 bytes or more: a key
    pasted where a name was expected (``-o key=AQ...``), which messages must not repeat."""
    try:
        return len(base64.b64decode(text + "=" * (-len(text) % 4), validate=True)) >= 16
    except (binascii.Error, ValueError):
        return False


def crypto_type_name(ktype: int) -> str:
    """``"aes"``, ``"aes256k"``, ``"none"`` or ``"type N"`` for a CEPH_CRYPTO_* value."""
    return CRYPTO_TYPE_NAMES.get(ktype, f"type {ktype}")


def krb5_derive(secret: bytes, usage: int, label: int, nbytes: int) -> bytes:
    """RFC 8009 KDF-HMAC-SHA2 for aes256-cts-hmac-sha384-192 (``calc_kx`` in Ceph).

    ``label`` is ``0xAA`` (Ke), ``0x55`` (Ki) or ``0x99`` (Kc); ``nbytes`` the key
    length (32 for Ke, 24 for Ki/Kc).
    """
    msg = struct.pack(">IIBBI", 1, usage, label, 0, nbytes * 8)
    return hmac.new(bytes(secret), msg, hashlib.sha384).digest()[:nbytes]


def _aes_cbc(key: bytes, iv: bytes) -> Cipher:
    return Cipher(algorithms.AES(key), modes.CBC(iv))


def aes_cts_encrypt(key: bytes, data: bytes) -> bytes:
    """AES-CBC-CS3 (RFC 3962 ciphertext stealing) with a zero IV; ``len(data) >= 16``.

    CBC over the zero-padded data, then the last two blocks swapped and the (new) last
    one cut to the length of the final partial block.  One block is plain CBC.
    """
    n = len(data)
    if n < AES_BLOCK_LEN:
        raise ValueError(f"CTS needs at least one block, got {n} bytes")
    pad = -n % AES_BLOCK_LEN
    enc = _aes_cbc(key, _ZERO_IV).encryptor()
    c = enc.update(bytes(data) + bytes(pad)) + enc.finalize()
    if n == AES_BLOCK_LEN:
        return c
    last = AES_BLOCK_LEN - pad  # bytes in the final block, 1..16
    return c[:-32] + c[-16:] + c[-32:-16][:last]


def aes_cts_decrypt(key: bytes, data: bytes) -> bytes:
    """Inverse of :func:`aes_cts_encrypt`; ``len(data) >= 16``."""
    n = len(data)
    if n < AES_BLOCK_LEN:
        raise ValueError(f"CTS needs at least one block, got {n} bytes")
    if n == AES_BLOCK_LEN:
        dec = _aes_cbc(key, _ZERO_IV).decryptor()
        return dec.update(bytes(data)) + dec.finalize()
    last = n % AES_BLOCK_LEN or AES_BLOCK_LEN
    head = bytes(data[: n - AES_BLOCK_LEN - last])
    full = bytes(data[n - AES_BLOCK_LEN - last : n - last])  # was the final CBC block
    tail = bytes(data[n - last :])  # the stolen head of the next-to-last CBC block
    ecb = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    x = ecb.update(full) + ecb.finalize()  # = C[n-1] xor (P[n] | zeros)
    prev = tail + x[last:]
    p_last = bytes(a ^ b for a, b in zip(x[:last], tail))
    dec = _aes_cbc(key, _ZERO_IV).decryptor()
    return dec.update(head + prev) + dec.finalize() + p_last


@dataclass(frozen=True)
class CryptoKey:
    """``CryptoKey``: ``type`` (CEPH_CRYPTO_*), ``created`` ``(sec, nsec)``, ``secret`` bytes.

    ``encrypt``/``decrypt`` take the cephx key usage (``CEPHX_KEY_USAGE_*``); only
    AES256KRB5 keys use it.  The secret never shows in ``repr``.
    """

    type: int = CEPH_CRYPTO_AES
    created: tuple[int, int] = (0, 0)
    secret: bytes = field(default=b"", repr=False)
    # usage -> (Ke, Ki) derived lazily for AES256KRB5 (like the kernel's per-usage tfms)
    _derived: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    @classmethod
    def decode(cls, d: Decoder) -> "CryptoKey":
        """Read one ``CryptoKey``; raises DecodeError if truncated or oversized.

        Any type decodes (a key of an unsupported type fails where it is used, with
        AuthError, or in :meth:`check`)."""
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

    def problem(self) -> str | None:
        """Why this key cannot be used (unsupported type, secret too short), or None.

        Mirrors ``CryptoKey::_set_secret`` / ``CryptoHandler::validate_secret``."""
        need = _MIN_SECRET_LEN.get(self.type)
        if need is None:
            return f"unsupported cephx key type {self.type} (supported: aes=1, aes256k=2)"
        if len(self.secret) < need:
            return (f"{crypto_type_name(self.type)} key of {len(self.secret)} bytes is too short "
                    f"(needs {need})")
        return None

    def check(self) -> "CryptoKey":
        """Returns self; raises AuthError when :meth:`problem` finds one."""
        why = self.problem()
        if why:
            raise AuthError(f"cephx: {why}")
        return self

    @classmethod
    def from_base64(cls, text: str) -> "CryptoKey":
        """Parse the keyring form (``AQA/UQFr...==`` or ``AgA/UQFr...==``).

        Raises ConfigError if malformed, of an unsupported type or too short for its
        type; the message never repeats the key.
        """
        try:
            raw = base64.b64decode(text.strip(), validate=True)
            d = Decoder(raw)
            key = cls.decode(d)
        except (binascii.Error, ValueError, DecodeError) as ex:
            raise ConfigError(f"malformed cephx key: {ex}") from None
        if not d.eof():
            raise ConfigError(f"malformed cephx key: {d.remaining} trailing bytes")
        why = key.problem()
        if why or key.type == CEPH_CRYPTO_NONE:
            raise ConfigError(f"cephx key: {why or 'key type none cannot authenticate'}")
        return key

    def to_base64(self) -> str:
        return base64.b64encode(self.to_bytes()).decode("ascii")

    # -- encrypt / decrypt ---------------------------------------------------------------
    def _usable(self) -> None:
        why = self.problem()
        if why:
            raise AuthError(why)

    def _krb5_keys(self, usage: int) -> tuple[bytes, bytes]:
        keys = self._derived.get(usage)
        if keys is None:
            keys = self._derived[usage] = (
                krb5_derive(self.secret, usage, _KRB5_KE, 32),
                krb5_derive(self.secret, usage, _KRB5_KI, AES256KRB5_HMAC_LEN),
            )
        return keys

    def _aes(self) -> Cipher:
        # Ceph's AES is AES-128: only the first 16 bytes of the secret are used.
        return _aes_cbc(self.secret[:AES_KEY_LEN], CEPH_AES_IV)

    def encrypt(self, plaintext: bytes, usage: int = 0, *, confounder: bytes | None = None) -> bytes:
        """Raw ``CryptoKey::encrypt`` under cephx key ``usage`` (no envelope).

        AES: padded AES-128-CBC.  AES256KRB5: RFC 8009 with ``confounder`` (16 bytes;
        random when None).  Raises AuthError for an unusable key.
        """
        self._usable()
        if self.type == CEPH_CRYPTO_NONE:
            return bytes(plaintext)
        if self.type == CEPH_CRYPTO_AES:
            pad = AES_BLOCK_LEN - len(plaintext) % AES_BLOCK_LEN
            enc = self._aes().encryptor()
            return enc.update(bytes(plaintext) + bytes([pad]) * pad) + enc.finalize()
        if confounder is None:
            confounder = os.urandom(AES256KRB5_CONFOUNDER_LEN)
        elif len(confounder) != AES256KRB5_CONFOUNDER_LEN:
            raise ValueError(f"AES256KRB5 confounder must be {AES256KRB5_CONFOUNDER_LEN} bytes")
        ke, ki = self._krb5_keys(usage)
        c = aes_cts_encrypt(ke, bytes(confounder) + bytes(plaintext))
        return c + hmac.new(ki, _ZERO_IV + c, hashlib.sha384).digest()[:AES256KRB5_HMAC_LEN]

    def decrypt(self, ciphertext: bytes, usage: int = 0) -> bytes:
        """Raw ``CryptoKey::decrypt`` under cephx key ``usage``.

        Raises AuthError if the ciphertext cannot be this key's: a length impossible for
        the key type (AES: not a positive multiple of 16; AES256KRB5: under 40 bytes; what
        a key of the other type produces), a bad padding (AES) or HMAC (AES256KRB5): the
        usual sign of a wrong key.
        """
        self._usable()
        if self.type == CEPH_CRYPTO_NONE:
            return bytes(ciphertext)
        n = len(ciphertext)
        if self.type == CEPH_CRYPTO_AES:
            if n == 0 or n % AES_BLOCK_LEN:
                raise AuthError(f"decryption failed: {n} bytes are not AES blocks (wrong key or key type?)")
            dec = self._aes().decryptor()
            out = dec.update(bytes(ciphertext)) + dec.finalize()
            pad = out[-1]
            # Like the kernel (ceph_aes_crypt) and Ceph, only the last byte is checked.
            if not 1 <= pad <= AES_BLOCK_LEN:
                raise AuthError("decryption failed: bad padding (wrong key?)")
            return out[:-pad]
        if n < AES256KRB5_CONFOUNDER_LEN + AES256KRB5_HMAC_LEN:
            raise AuthError(f"decryption failed: {n} bytes are too short for AES256KRB5 (wrong key or key type?)")
        ke, ki = self._krb5_keys(usage)
        c, tag = bytes(ciphertext[:-AES256KRB5_HMAC_LEN]), bytes(ciphertext[-AES256KRB5_HMAC_LEN:])
        want = hmac.new(ki, _ZERO_IV + c, hashlib.sha384).digest()[:AES256KRB5_HMAC_LEN]
        if not hmac.compare_digest(want, tag):
            raise AuthError("decryption failed: integrity check failed (wrong key?)")
        return aes_cts_decrypt(ke, c)[AES256KRB5_CONFOUNDER_LEN:]

    def hmac_sha256(self, data: bytes) -> bytes:
        """HMAC-SHA256 keyed with the raw secret (``CryptoKeyHandler::hmac_sha256``).

        msgr2's AUTH_SIGNATURE uses it with the session key of any type; AES256KRB5
        keys also use it for the key proof and msgr1 signatures."""
        return hmac_sha256(self.secret, data)


def encrypt_enc_bl(key: CryptoKey, body: bytes, *, usage: int, confounder: bytes | None = None) -> bytes:
    """``encode_encrypt_enc_bl``: ciphertext of ``u8 1, u64 magic, body`` (no length)."""
    return key.encrypt(_ENC_HEADER.pack(1, CEPHX_ENC_MAGIC) + bytes(body), usage, confounder=confounder)


def encode_encrypt(key: CryptoKey, body: bytes, *, usage: int, confounder: bytes | None = None) -> bytes:
    """``encode_encrypt``: ``u32 len`` + :func:`encrypt_enc_bl`."""
    ct = encrypt_enc_bl(key, body, usage=usage, confounder=confounder)
    return struct.pack("<I", len(ct)) + ct


def decrypt_enc_bl(key: CryptoKey, ciphertext: bytes, *, usage: int) -> bytes:
    """Inverse of :func:`encrypt_enc_bl`: returns the body after the magic header.

    Raises AuthError when ``key`` cannot have made it (wrong key or key type).
    """
    pt = key.decrypt(ciphertext, usage)
    if len(pt) < _ENC_HEADER.size:
        raise AuthError("decryption failed: plaintext shorter than the cephx header (wrong key?)")
    _v, magic = _ENC_HEADER.unpack_from(pt)
    if magic != CEPHX_ENC_MAGIC:
        raise AuthError("decryption failed: bad magic (wrong key?)")
    return pt[_ENC_HEADER.size :]


def decode_decrypt(key: CryptoKey, d: Decoder, *, usage: int) -> bytes:
    """``decode_decrypt``: read ``u32 len`` + ciphertext from ``d`` and decrypt it.

    Returns the plaintext body; raises DecodeError/AuthError as :func:`decrypt_enc_bl`.
    """
    return decrypt_enc_bl(key, d.blob(), usage=usage)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 (32 bytes), as msgr2's AUTH_SIGNATURE uses with the session key."""
    return hmac.new(bytes(key), bytes(data), hashlib.sha256).digest()


def fold_u64(b: bytes) -> int:
    """XOR of the complete little-endian u64 words of ``b`` (a trailing partial word is ignored)."""
    k = 0
    for pos in range(0, len(b) - 7, 8):
        k ^= int.from_bytes(b[pos : pos + 8], "little")
    return k
