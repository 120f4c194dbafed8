"""cephx secrets from the kernel keyring, found the way krbd and kAFS find them.

krbd's ``key=NAME`` map option (net/ceph/ceph_common.c ``get_secret``) asks the kernel
for ``request_key(&key_type_ceph, NAME, NULL)``: a key of type ``ceph`` searched for in
the caller's thread, process and session keyrings.  The ``ceph`` key type
(net/ceph/crypto.c ``key_type_ceph``) exists only while libceph is loaded, holds the
``ceph_crypto_key`` encoding (``u16 type, ceph_timespec created, u16 len, len bytes
secret``; ``ceph_crypto_key_decode``) and has no ``read`` operation: user space can add
one but never read it back.  So, like kAFS's tools that pick their tokens out of the
session keyring by name, pyceph looks for:

1. a ``ceph`` key called NAME (read if the kernel allows it; today's kernels return
   EOPNOTSUPP, and then the lookup goes on), then
2. a ``user`` key called NAME (security/keys/user_defined.c) holding the base64 secret
   as a keyring file has it (``keyctl padd user client.admin @u < KEYFILE``), with or
   without a trailing newline, or the raw bytes of the secret: the ``ceph_crypto_key``
   encoding, or a bare 16-byte AES / 32-byte AES256KRB5 secret.

Each type is searched as ``request_key(2)`` searches (thread, process, session keyrings;
the user-session keyring when there is no session keyring; no upcall: ``callout_info``
is NULL), then in the user keyring ``@u`` (``KEYCTL_SEARCH``), where ``keyctl padd ...
@u`` puts keys and which a fresh session keyring does not link (a key found there is only
readable with its default permissions once ``@u`` is linked into the session keyring,
as pam_keyinit does at login).

The system calls are made with ``syscall(2)`` and the numbers of the kernel headers
(arch/x86/entry/syscalls/syscall_64.tbl, include/uapi/asm-generic/unistd.h), not with
libkeyutils or the ``keyctl`` binary.  Errors are :class:`KeyringError` (a ConfigError)
naming the key's description, never its payload; no payload is ever logged.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import errno
import os
import platform
import re

from ..config import ClientConfig
from ..errors import ConfigError, DecodeError
from .crypto import (AES256KRB5_KEY_LEN, AES_KEY_LEN, CEPH_CRYPTO_AES, CEPH_CRYPTO_AES256KRB5, CryptoKey,
                     looks_like_secret)

# (add_key, request_key, keyctl) per machine (uname -m).
_SYSCALLS: dict[str, tuple[int, int, int]] = {
    "x86_64": (248, 249, 250),  # arch/x86/entry/syscalls/syscall_64.tbl
    "aarch64": (217, 218, 219),  # include/uapi/asm-generic/unistd.h
    "arm64": (217, 218, 219),
    "riscv64": (217, 218, 219),
}

# include/uapi/linux/keyctl.h
KEY_SPEC_THREAD_KEYRING = -1
KEY_SPEC_PROCESS_KEYRING = -2
KEY_SPEC_SESSION_KEYRING = -3
KEY_SPEC_USER_KEYRING = -4
KEY_SPEC_USER_SESSION_KEYRING = -5

KEYCTL_GET_KEYRING_ID = 0
KEYCTL_JOIN_SESSION_KEYRING = 1
KEYCTL_REVOKE = 3
KEYCTL_DESCRIBE = 6
KEYCTL_LINK = 8
KEYCTL_UNLINK = 9
KEYCTL_SEARCH = 10
KEYCTL_READ = 11
KEYCTL_INVALIDATE = 21

#: ``keyctl`` names of the special keyrings (keyutils' ``@t @p @s @u @us``)
KEYRING_NAMES: dict[str, int] = {
    "@t": KEY_SPEC_THREAD_KEYRING,
    "@p": KEY_SPEC_PROCESS_KEYRING,
    "@s": KEY_SPEC_SESSION_KEYRING,
    "@u": KEY_SPEC_USER_KEYRING,
    "@us": KEY_SPEC_USER_SESSION_KEYRING,
}

#: the kernel's user key payloads are at most 32767 bytes (user_defined.c); a cephx key
#: is far smaller: anything over this is not one of ours
MAX_PAYLOAD = 4096

_SECRET_LENS = {AES_KEY_LEN: CEPH_CRYPTO_AES, AES256KRB5_KEY_LEN: CEPH_CRYPTO_AES256KRB5}


class KeyringError(ConfigError):
    """A key=NAME lookup failed: not found (errno ENOKEY), unreadable, or not a cephx
    secret.  The message names the key's description, never its payload."""


class _Sys:
    """The three key management system calls through libc's ``syscall(2)``."""

    def __init__(self) -> None:
        machine = platform.machine()
        nrs = _SYSCALLS.get(machine)
        if nrs is None:
            raise KeyringError(f"kernel keyring: no system call numbers known for {machine}",
                               errno=errno.ENOSYS)
        self.nr_add_key, self.nr_request_key, self.nr_keyctl = nrs
        libc = ctypes.CDLL(None, use_errno=True)
        self.syscall = libc.syscall
        self.syscall.restype = ctypes.c_long

    def _check(self, r: int) -> int:
        if r < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return r

    def add_key(self, ktype: bytes, desc: bytes, payload: bytes, keyring: int) -> int:
        buf = ctypes.create_string_buffer(payload, len(payload))
        try:
            return self._check(self.syscall(ctypes.c_long(self.nr_add_key), ctypes.c_char_p(ktype),
                                            ctypes.c_char_p(desc), buf, ctypes.c_size_t(len(payload)),
                                            ctypes.c_int(keyring)))
        finally:
            ctypes.memset(buf, 0, len(payload))

    def request_key(self, ktype: bytes, desc: bytes) -> int:
        return self._check(self.syscall(ctypes.c_long(self.nr_request_key), ctypes.c_char_p(ktype),
                                        ctypes.c_char_p(desc), ctypes.c_char_p(None), ctypes.c_int(0)))

    def keyctl(self, op: int, *args) -> int:
        return self._check(self.syscall(ctypes.c_long(self.nr_keyctl), ctypes.c_int(op), *args))


_sys: _Sys | None = None



def _shown(description: str, bare: bool = False) -> str:
    """The key's description as messages show it; not shown if it looks like a secret
    (``key=`` given a key instead of a name)."""
    if looks_like_secret(description):
        return "NAME" if bare else "(a name that looks like a key: not shown)"
    return description if bare else repr(description)

def _kernel() -> _Sys:
    global _sys
    if _sys is None:
        _sys = _Sys()
    return _sys


def _desc_bytes(description: str) -> bytes:
    if not description or "\0" in description or len(description) > 4095:
        raise KeyringError(f"bad key description {description[:64]!r}: want 1..4095 characters, no NUL")
    return description.encode()


def _search(ktype: str, description: str) -> int | None:
    """Serial of the ``ktype`` key ``description`` (request_key's search, then ``@u``), or
    None if there is none.  An expired, revoked or inaccessible key found by both
    searches raises OSError with that errno (EKEYEXPIRED, EKEYREVOKED, EACCES)."""
    k = _kernel()
    t, d = ktype.encode(), _desc_bytes(description)
    found: OSError | None = None
    try:
        return k.request_key(t, d)
    except OSError as e:
        if e.errno == errno.ENODEV:  # the kernel has no such key type
            return None
        if e.errno not in (errno.ENOKEY, errno.EKEYEXPIRED, errno.EKEYREVOKED, errno.EACCES):
            raise
        if e.errno != errno.ENOKEY:
            found = e
    try:
        return k.keyctl(KEYCTL_SEARCH, ctypes.c_long(KEY_SPEC_USER_KEYRING), ctypes.c_char_p(t),
                        ctypes.c_char_p(d), ctypes.c_long(0))
    except OSError as e:
        if e.errno not in (errno.ENOKEY, errno.ENODEV, errno.EKEYEXPIRED, errno.EKEYREVOKED, errno.EACCES):
            raise
        if found is None and e.errno not in (errno.ENOKEY, errno.ENODEV):
            found = e
    if found is not None:
        raise found
    return None


def _read(serial: int) -> bytes:
    """The payload of key ``serial`` (KEYCTL_READ); OSError EOPNOTSUPP for a type that
    cannot be read (``ceph``).  The buffer is wiped after the copy."""
    k = _kernel()
    n = k.keyctl(KEYCTL_READ, ctypes.c_long(serial), ctypes.c_char_p(None), ctypes.c_size_t(0))
    if n > MAX_PAYLOAD:
        raise OSError(errno.EMSGSIZE, f"payload of {n} bytes is larger than any cephx key")
    buf = ctypes.create_string_buffer(max(n, 1))
    try:
        got = k.keyctl(KEYCTL_READ, ctypes.c_long(serial), buf, ctypes.c_size_t(n))
        return buf.raw[:min(got, n)]
    finally:
        ctypes.memset(buf, 0, max(n, 1))


def decode_payload(payload: bytes) -> CryptoKey | None:
    """A key payload as a usable :class:`CryptoKey`, or None if it is none of: the
    base64 keyring form (surrounding whitespace allowed), the ``ceph_crypto_key``
    encoding, a bare 16-byte (AES) or 32-byte (AES256KRB5) secret."""
    text = payload.strip()
    for raw in _b64(text), payload:
        if raw is None:
            continue
        try:
            key = CryptoKey.from_bytes(raw)
        except DecodeError:
            continue
        if len(key.to_bytes()) == len(raw) and key.problem() is None:
            return key
    if len(payload) in _SECRET_LENS:
        return CryptoKey(_SECRET_LENS[len(payload)], secret=bytes(payload))
    return None


def _b64(text: bytes) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True) if text else None
    except (binascii.Error, ValueError):
        return None


def keyctl_lookup_key(description: str) -> CryptoKey:
    """The cephx key ``description`` (e.g. ``client.admin``) from the caller's keyrings
    (see the module doc: ``ceph`` type first, then ``user``).

    Raises :class:`KeyringError` (errno ENOKEY) if no readable key of that name exists,
    (EINVAL) if its payload is not a cephx secret, (EACCES etc.) if the kernel refuses;
    every message names ``description`` and never the payload.
    """
    unreadable = None
    for ktype in ("ceph", "user"):
        try:
            serial = _search(ktype, description)
            if serial is None:
                continue
            payload = _read(serial)
        except OSError as e:
            if ktype == "ceph":
                unreadable = e  # the kernel keeps ceph keys from user space: try a user key
                continue
            hint = ""
            if e.errno == errno.EACCES:
                # Found (e.g. in @u) but not possessed: the key's owner may only view it.
                hint = ("; it is not reachable from this process's session keyring and its permissions "
                        "give no read right without that (link the user keyring into the session: "
                        "keyctl link @u @s)")
            raise KeyringError(f"key {_shown(description)} in the kernel keyring: {e.strerror or e}{hint}",
                               errno=e.errno) from None
        key = decode_payload(payload)
        payload = b""
        if key is None:
            raise KeyringError(
                f"key {_shown(description)} ({ktype} key) in the kernel keyring is not a cephx secret: want the "
                "base64 key of a keyring file or its raw bytes")
        return key
    if unreadable is not None:
        raise KeyringError(
            f"key {_shown(description)} in the kernel keyring is a 'ceph' key, which user space cannot read "
            f"({unreadable.strerror}); add it as a user key too: "
            f"keyctl padd user {_shown(description, bare=True)} @u < KEYFILE", errno=errno.ENOKEY)
    raise KeyringError(
        f"key {_shown(description)} not found in the kernel keyring (searched the thread, process, session "
        f"and user keyrings for a ceph or user key; add one with: keyctl padd user {_shown(description, bare=True)} @u "
        "< KEYFILE)", errno=errno.ENOKEY)


def keyctl_lookup(description: str) -> bytes:
    """The secret ``description`` from the caller's keyrings as bytes: the
    ``ceph_crypto_key`` encoding (``CryptoKey.to_bytes()``, what a keyring file's base64
    decodes to), whatever form the key held.  Errors as :func:`keyctl_lookup_key`."""
    return keyctl_lookup_key(description).to_bytes()


def keyctl_add_user(description: str, payload: bytes | str, keyring: int | str = "@u") -> int:
    """Add (or update) a ``user`` key ``description`` with ``payload`` to ``keyring``
    (a ``KEY_SPEC_*`` number, a serial or one of ``@t @p @s @u @us``); returns its serial.
    The equivalent of ``keyctl add user DESC PAYLOAD KEYRING`` (for tests and tools).
    Raises :class:`KeyringError` naming the description."""
    ring = KEYRING_NAMES[keyring] if isinstance(keyring, str) else int(keyring)
    data = payload.encode() if isinstance(payload, str) else bytes(payload)
    try:
        return _kernel().add_key(b"user", _desc_bytes(description), data, ring)
    except OSError as e:
        raise KeyringError(f"cannot add user key {_shown(description)}: {e.strerror or e}", errno=e.errno) from None


def keyctl_add(ktype: str, description: str, payload: bytes, keyring: int | str = "@u") -> int:
    """``add_key(ktype, description, payload, keyring)``; OSError as the kernel returns it
    (ENODEV: no such key type, EINVAL: the type rejected the payload)."""
    ring = KEYRING_NAMES[keyring] if isinstance(keyring, str) else int(keyring)
    return _kernel().add_key(ktype.encode(), _desc_bytes(description), bytes(payload), ring)


def keyctl_link(serial: int | str, keyring: int | str = "@s") -> None:
    """Link key (or keyring) ``serial`` into ``keyring`` (``keyctl link``), e.g.
    ``keyctl_link("@u", "@s")`` as pam_keyinit links the user keyring into a session."""
    key = KEYRING_NAMES[serial] if isinstance(serial, str) else int(serial)
    ring = KEYRING_NAMES[keyring] if isinstance(keyring, str) else int(keyring)
    try:
        _kernel().keyctl(KEYCTL_LINK, ctypes.c_long(key), ctypes.c_long(ring))
    except OSError as e:
        raise KeyringError(f"cannot link key {serial} into {keyring}: {e.strerror or e}", errno=e.errno) from None


def keyctl_unlink(serial: int, keyring: int | str = "@u") -> None:
    """Unlink key ``serial`` from ``keyring`` (``keyctl unlink``); missing is fine."""
    ring = KEYRING_NAMES[keyring] if isinstance(keyring, str) else int(keyring)
    try:
        _kernel().keyctl(KEYCTL_UNLINK, ctypes.c_long(serial), ctypes.c_long(ring))
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ENOKEY, errno.EKEYREVOKED):
            raise


def keyctl_join_session(name: str | None = None) -> int:
    """Join a new anonymous session keyring (``name`` None) or the named one
    (``keyctl session``); returns its serial.  Children inherit it."""
    k = _kernel()
    arg = ctypes.c_char_p(name.encode() if name else None)
    try:
        return k.keyctl(KEYCTL_JOIN_SESSION_KEYRING, arg)
    except OSError as e:
        raise KeyringError(f"cannot join a session keyring: {e.strerror or e}", errno=e.errno) from None


def keyctl_describe(serial: int) -> tuple[str, int, int, int, str]:
    """``(type, uid, gid, perm, description)`` of key ``serial`` (KEYCTL_DESCRIBE)."""
    k = _kernel()
    n = k.keyctl(KEYCTL_DESCRIBE, ctypes.c_long(serial), ctypes.c_char_p(None), ctypes.c_size_t(0))
    buf = ctypes.create_string_buffer(n)
    k.keyctl(KEYCTL_DESCRIBE, ctypes.c_long(serial), buf, ctypes.c_size_t(n))
    ktype, uid, gid, perm, desc = buf.value.decode().split(";", 4)
    return ktype, int(uid), int(gid), int(perm, 16), desc


# -- checking a client's secret ---------------------------------------------------------------

def parse_secret(b64: str, source: str, entity: object | None = None) -> CryptoKey:
    """The :class:`CryptoKey` of base64 ``b64``; ConfigError ``malformed cephx key for
    ENTITY in SOURCE: why`` (never the key) if it is not a usable cephx key."""
    try:
        return CryptoKey.from_base64(b64)
    except ConfigError as e:
        who = f" for {entity}" if entity is not None else ""
        why = re.sub(r"\[errno \d+\] ", "", e.message.removeprefix("malformed cephx key: ").removeprefix("cephx key: "))
        raise ConfigError(f"malformed cephx key{who} in {source}: {why}") from None


def check_config_key(cfg: ClientConfig) -> ClientConfig:
    """Fail early, in one line naming the entity and the key's source, if ``cfg`` holds a
    key that is not a usable cephx key (MonClient would otherwise say so at connect
    time without the source).  Returns ``cfg``."""
    if cfg.key is not None:
        parse_secret(cfg.key, cfg.key_source or "the configuration", cfg.name)
    return cfg
