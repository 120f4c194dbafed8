"""msgr2.1 secure mode's AES-128-GCM stream handlers (sans-IO).

Follows Ceph's ``src/msg/async/crypto_onwire.{h,cc}`` and the kernel's
``net/ceph/messenger_v2.c`` (``setup_crypto``, ``gcm_inc_nonce``):

- the connection secret from cephx (64 bytes from Ceph's daemons; at least 40 needed) is
  ``key[16] | nonce_a[12] | nonce_b[12] | unused``; the connecting side (a client,
  ``crossed=False``) decrypts with ``nonce_a`` and encrypts with ``nonce_b``, the
  accepting side the other way round;
- a nonce is ``le32 fixed, le64 counter`` (``ceph_gcm_nonce``); every GCM message
  (one ``reset_rx_handler``/``reset_tx_handler``) uses the current nonce and then adds
  one to the counter (msgr2.1's "new nonce format"; msgr2.0 added to ``fixed``);
- no associated data; a 16-byte tag follows each ciphertext.

A tag mismatch raises :class:`pyceph.errors.ProtocolError` ("integrity error"), as the
peer's messenger faults the connection on ``MsgAuthError``.
"""

from __future__ import annotations

import struct
from typing import Iterable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ProtocolError

# crypto_onwire.cc AESGCM_* (kernel CEPH_GCM_*)
GCM_KEY_LEN = 16
GCM_IV_LEN = 12
GCM_TAG_LEN = 16
GCM_BLOCK_LEN = 16
# AuthConnectionMeta::get_connection_secret_length() for secure mode
CONNECTION_SECRET_LEN = 64
MIN_CONNECTION_SECRET_LEN = GCM_KEY_LEN + 2 * GCM_IV_LEN

_NONCE = struct.Struct("<IQ")
_U64_MASK = (1 << 64) - 1


class GcmNonce:
    """One direction's 96-bit GCM nonce: ``le32 fixed, le64 counter``."""

    __slots__ = ("fixed", "counter", "_initial", "_wrapped")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != GCM_IV_LEN:
            raise ValueError(f"GCM nonce is {GCM_IV_LEN} bytes, got {len(raw)}")
        self.fixed, self.counter = _NONCE.unpack(raw)
        self._initial = self.counter
        self._wrapped = False

    def next(self) -> bytes:
        """The nonce for the next GCM message; advances the counter.  Raises
        ProtocolError once the 64-bit counter would come back to its first value
        (Ceph's tx handler: "out of nonces")."""
        if self._wrapped:
            raise ProtocolError("secure mode: out of GCM nonces")
        raw = _NONCE.pack(self.fixed, self.counter)
        self.counter = (self.counter + 1) & _U64_MASK
        if self.counter == self._initial:
            self._wrapped = True
        return raw

    def __repr__(self) -> str:  # the nonce is key material: never shown
        return "GcmNonce(...)"


class OnWireCrypto:
    """The rx/tx AES-128-GCM handler pair of one secure connection.

    ``OnWireCrypto(connection_secret, crossed=False)``; raises ProtocolError if the
    secret is shorter than 40 bytes.  :meth:`encrypt` and :meth:`decrypt` each consume
    one nonce of their direction, so calls must follow the wire order.
    """

    __slots__ = ("_key", "_aead", "rx_nonce", "tx_nonce")

    def __init__(self, connection_secret: bytes, crossed: bool = False) -> None:
        s = bytes(connection_secret)
        if len(s) < MIN_CONNECTION_SECRET_LEN:
            raise ProtocolError(
                f"secure mode needs a connection secret of {MIN_CONNECTION_SECRET_LEN}+ bytes, got {len(s)}"
            )
        self._key = s[:GCM_KEY_LEN]
        self._aead = AESGCM(self._key)
        a = GcmNonce(s[GCM_KEY_LEN : GCM_KEY_LEN + GCM_IV_LEN])
        b = GcmNonce(s[GCM_KEY_LEN + GCM_IV_LEN : MIN_CONNECTION_SECRET_LEN])
        self.rx_nonce, self.tx_nonce = (b, a) if crossed else (a, b)

    def __repr__(self) -> str:
        return "OnWireCrypto(...)"

    def encrypt(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        """One GCM message: ciphertext followed by the 16-byte tag."""
        return self._aead.encrypt(self.tx_nonce.next(), plaintext, None)

    def encrypt_parts(self, parts: Iterable[bytes | memoryview]) -> list[bytes]:
        """One GCM message over the concatenation of ``parts`` without joining them:
        returns ciphertext pieces, the tag last (for ``writelines``)."""
        enc = Cipher(algorithms.AES(self._key), modes.GCM(self.tx_nonce.next())).encryptor()
        out = [enc.update(p) for p in parts if len(p)]
        enc.finalize()
        out.append(enc.tag)
        return out

    def decrypt(self, data: bytes | bytearray | memoryview, what: str = "frame") -> bytes:
        """Verify and decrypt one GCM message (ciphertext + tag).  Raises ProtocolError
        on a bad tag (wrong key/nonce, or bytes altered on the way)."""
        try:
            return self._aead.decrypt(self.rx_nonce.next(), data, None)
        except InvalidTag:
            raise ProtocolError(f"secure mode: integrity error (bad GCM tag) in {what}") from None

    def decrypt_split(
        self, data: bytes | bytearray | memoryview, lens: Sequence[int], what: str = "frame"
    ) -> list[bytes]:
        """Verify and decrypt one GCM message (ciphertext + tag), returning the plaintext
        cut into pieces of ``lens`` (which sum to the ciphertext length) without
        copying it again.  Raises ProtocolError on a bad tag."""
        mv = memoryview(data)
        n = len(mv) - GCM_TAG_LEN
        if n < 0 or sum(lens) != n:
            raise ProtocolError(f"secure mode: {what} of {len(mv)} bytes does not fit its lengths")
        dec = Cipher(
            algorithms.AES(self._key), modes.GCM(self.rx_nonce.next(), bytes(mv[n:]))
        ).decryptor()
        out = []
        off = 0
        for ln in lens:
            out.append(dec.update(mv[off : off + ln]) if ln else b"")
            off += ln
        try:
            dec.finalize()
        except InvalidTag:
            raise ProtocolError(f"secure mode: integrity error (bad GCM tag) in {what}") from None
        return out
