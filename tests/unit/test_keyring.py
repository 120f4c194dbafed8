"""cephx secrets from the kernel keyring (pyceph.auth.keyring) on this machine's kernel.

The tests run in a fresh anonymous session keyring (``keyctl session``) so that their keys
are this process's own: keys they put in the user keyring ``@u`` (shared by every process
of the uid) have unique names and are unlinked afterwards."""

from __future__ import annotations

import base64
import ctypes
import errno
import os
import uuid

import pytest

from pyceph.auth import keyring as kr
from pyceph.auth.crypto import CEPH_CRYPTO_AES, CEPH_CRYPTO_AES256KRB5, CryptoKey
from pyceph.errors import ConfigError


@pytest.fixture(scope="module", autouse=True)
def session_keyring():
    """This process in a new anonymous session keyring, as ``keyctl session`` does."""
    return kr.keyctl_join_session()


@pytest.fixture
def name():
    return f"client.pyceph-test-{uuid.uuid4().hex[:8]}"


def aes_key() -> CryptoKey:
    return CryptoKey(CEPH_CRYPTO_AES, (1700000000, 5), os.urandom(16))


def krb5_key() -> CryptoKey:
    return CryptoKey(CEPH_CRYPTO_AES256KRB5, (1700000000, 5), os.urandom(32))


@pytest.mark.parametrize("form", ["base64", "base64+newline", "encoded", "bare"])
@pytest.mark.parametrize("make", [aes_key, krb5_key], ids=["aes", "aes256k"])
def test_user_key_in_session_keyring(name, form, make):
    key = make()
    payload = {"base64": key.to_base64().encode(), "base64+newline": key.to_base64().encode() + b"\n",
               "encoded": key.to_bytes(), "bare": key.secret}[form]
    kr.keyctl_add_user(name, payload, "@s")
    got = kr.keyctl_lookup(name)
    if form == "bare":  # a bare secret has no creation time
        assert CryptoKey.from_bytes(got) == CryptoKey(key.type, (0, 0), key.secret)
    else:
        assert got == key.to_bytes()
    ktype, uid, _gid, _perm, desc = kr.keyctl_describe(kr._search("user", name))
    assert (ktype, uid, desc) == ("user", os.getuid(), name)


def test_user_keyring_needs_possession(name):
    """A key in @u is found (KEYCTL_SEARCH on @u) but, with add_key's default permissions
    (possessor all, owner view only), only readable once @u is linked into the session,
    as pam_keyinit links it at login."""
    key = aes_key()
    serial = kr.keyctl_add_user(name, key.to_base64(), "@u")
    try:
        with pytest.raises(kr.KeyringError) as ei:
            kr.keyctl_lookup(name)
        assert ei.value.errno == errno.EACCES
        assert name in str(ei.value) and "keyctl link @u @s" in str(ei.value)
        assert key.to_base64() not in str(ei.value)
        kr.keyctl_link("@u", "@s")
        assert kr.keyctl_lookup(name) == key.to_bytes()
    finally:
        kr.keyctl_unlink(serial, "@u")


def test_missing_key_names_the_description(name):
    with pytest.raises(kr.KeyringError) as ei:
        kr.keyctl_lookup(name)
    e = ei.value
    assert e.errno == errno.ENOKEY and isinstance(e, ConfigError)
    assert repr(name) in str(e) and "keyctl padd user" in str(e)


@pytest.mark.parametrize("payload", [
    b"NOT-A-CEPHX-KEY-but-secret-looking-0123456789",
    b"AQBz0Dlh2PNoKRAAW2Bln1i2Bn3vJSkw3pfq==",  # base64 of a truncated key
    bytes(range(20)),  # binary, neither 16/32 bytes nor an encoded key
    base64.b64encode(CryptoKey(CEPH_CRYPTO_AES, (0, 0), b"short").to_bytes()),  # too short a secret
    base64.b64encode(CryptoKey(9, (0, 0), os.urandom(16)).to_bytes()),  # unknown type
])
def test_wrong_payload_is_refused_without_echo(name, payload):
    kr.keyctl_add_user(name, payload, "@s")
    with pytest.raises(kr.KeyringError) as ei:
        kr.keyctl_lookup(name)
    msg = str(ei.value)
    assert repr(name) in msg and "not a cephx secret" in msg and ei.value.errno == errno.EINVAL
    assert payload.decode("latin-1") not in msg and payload.decode("latin-1").strip("=") not in msg


def test_ceph_type_key(name):
    """krbd's own key type.  The kernel lets user space add one but never read it back
    (net/ceph/crypto.c key_type_ceph has no .read): a user key of the same name is used
    beside it, and a ceph key alone gets an error saying so."""
    key = aes_key()
    try:
        serial = kr.keyctl_add("ceph", name, key.to_bytes(), "@s")
    except OSError as e:
        if e.errno == errno.ENODEV:
            pytest.skip("this kernel has no 'ceph' key type (add_key returned ENODEV: libceph is not "
                        "built or loaded), so a ceph-type key cannot exist here")
        raise
    assert kr.keyctl_describe(serial)[0] == "ceph"
    with pytest.raises(kr.KeyringError) as ei:
        kr.keyctl_lookup(name)
    assert "'ceph' key" in str(ei.value) and key.to_base64() not in str(ei.value)
    kr.keyctl_add_user(name, key.to_base64(), "@s")
    assert kr.keyctl_lookup(name) == key.to_bytes()


def test_bad_descriptions():
    for bad in ("", "a\0b", "x" * 5000):
        with pytest.raises(kr.KeyringError):
            kr.keyctl_lookup(bad)


def test_decode_payload_forms():
    key = aes_key()
    assert kr.decode_payload(b"  " + key.to_base64().encode() + b"\n") == key
    assert kr.decode_payload(key.to_bytes()) == key
    assert kr.decode_payload(key.secret) == CryptoKey(CEPH_CRYPTO_AES, (0, 0), key.secret)
    assert kr.decode_payload(b"") is None
    assert kr.decode_payload(key.to_bytes() + b"x") is None
    assert kr.decode_payload(b"hello") is None


def test_malformed_secret_never_echoed():
    bad = "AQBzqmpnAAAAABAAyyyyyyyyyyyyyyyyyyyy=="
    with pytest.raises(ConfigError) as ei:
        kr.parse_secret(bad, "the secret= map option", "client.admin")
    assert "malformed cephx key for client.admin in the secret= map option" in str(ei.value)
    assert bad not in str(ei.value) and bad.strip("=") not in str(ei.value)


def test_revoked_key_says_so(name):
    """krbd's "Failed due to revoked key" (an expired key reads alike: EKEYEXPIRED; not
    tested, as that needs waiting for a timeout)."""
    key = aes_key()
    other = kr.keyctl_add_user(name + "-r", key.to_base64(), "@s")
    kr._kernel().keyctl(kr.KEYCTL_REVOKE, ctypes.c_long(other))
    with pytest.raises(kr.KeyringError) as ei:
        kr.keyctl_lookup(name + "-r")
    assert ei.value.errno == errno.EKEYREVOKED and repr(name + "-r") in str(ei.value)
    assert "revoked" in str(ei.value) and key.to_base64() not in str(ei.value)
