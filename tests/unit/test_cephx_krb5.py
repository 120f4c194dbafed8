"""cephx with AES256KRB5 keys (type 2, Tentacle's default) and the mixed AES/AES256KRB5 case.

- RFC 8009 Appendix A's aes256-cts-hmac-sha384-192 vectors (key derivation, encryption of
  empty/partial/one-block/multi-block plaintexts): the cryptosystem Ceph's
  ``CryptoAES256KRB5`` and the kernel's ``ceph_krb5_encrypt`` use.
- Real sessions with Ceph 20.2.4 (Tentacle) recorded by ``vectors/capture_cephx.py``: a
  default cluster (aes256k keys everywhere) and an upgraded-cluster shape (aes client
  key, aes256k service keys), each with a ticket renewal over MAuth.  Our client must
  produce the bytes that cluster accepted and accept every reply it sent.
"""

from __future__ import annotations

import base64
import errno
import os

import pytest

from pyceph.auth.cephx import (
    CEPHX_GET_AUTH_SESSION_KEY,
    CEPHX_GET_PRINCIPAL_SESSION_KEY,
    CephxClient,
    calc_client_server_challenge,
)
from pyceph.auth.crypto import (
    CEPH_CRYPTO_AES,
    CEPH_CRYPTO_AES256KRB5,
    CEPHX_KEY_USAGE_AUTHORIZE,
    CEPHX_KEY_USAGE_TICKET_SESSION_KEY,
    CryptoKey,
    aes_cts_decrypt,
    aes_cts_encrypt,
    decrypt_enc_bl,
    encode_encrypt,
    encrypt_enc_bl,
    krb5_derive,
)
from pyceph.auth.structs import CephXAuthenticate, CephXServerChallenge
from pyceph.encoding import Decoder
from pyceph.errors import AuthError, ConfigError
from pyceph.types import ENTITY_TYPE_AUTH, ENTITY_TYPE_MGR, ENTITY_TYPE_MON, ENTITY_TYPE_OSD
from tests.unit.vectors.cephx_replay import Replay, load

# -- RFC 8009 Appendix A (aes256-cts-hmac-sha384-192) -----------------------------------------

RFC_KEY = CryptoKey(CEPH_CRYPTO_AES256KRB5, secret=bytes.fromhex(
    "6D404D37FAF79F9DF0D33568D320669800EB4836472EA8A026D16B7182460C52"))
RFC_USAGE = 2
# (plaintext length, confounder, ciphertext); plaintext = bytes(range(length))
RFC_ENCRYPTIONS = [
    (0, "F764E9FA15C276478B2C7D0C4E5F58E4",
     "41F53FA5BFE7026D91FAF9BE959195A058707273A96A40F0A01960621AC612748B9BBFBE7EB4CE3C"),
    (6, "B80D3251C1F6471494256FFE712D0B9A",
     "4ED7B37C2BCAC8F74F23C1CF07E62BC7B75FB3F637B9F559C7F664F69EAB7B6092237526EA0D1F61CB20D69D10F2"),
    (16, "53BF8A0D105265D4E276428624CE5E63",
     "BC47FFEC7998EB91E8115CF8D19DAC4BBBE2E163E87DD37F49BECA92027764F68CF51F14D798C2273F35DF574D"
     "1F932E40C4FF255B36A266"),
    (21, "763E65367E864F02F55153C7E3B58AF1",
     "40013E2DF58E8751957D2878BCD2D6FE101CCFD556CB1EAE79DB3C3EE86429F2B2A602AC86FEF6ECB647D6295F"
     "AE077A1FEB517508D2C16B4192E01F62"),
]


def test_rfc8009_key_derivation():
    assert krb5_derive(RFC_KEY.secret, RFC_USAGE, 0x99, 24).hex() == "ef5718be86cc84963d8bbb5031e9f5c4ba41f28faf69e73d"
    assert krb5_derive(RFC_KEY.secret, RFC_USAGE, 0xAA, 32).hex() == (
        "56ab22bee63d82d7bc5227f6773f8ea7a5eb1c825160c38312980c442e5c7e49")
    assert krb5_derive(RFC_KEY.secret, RFC_USAGE, 0x55, 24).hex() == "69b16514e3cd8e56b82010d5c73012b622c4d00ffc23ed1f"


@pytest.mark.parametrize("n,confounder,ciphertext", RFC_ENCRYPTIONS)
def test_rfc8009_encryption(n, confounder, ciphertext):
    pt, ct = bytes(range(n)), bytes.fromhex(ciphertext)
    assert RFC_KEY.encrypt(pt, RFC_USAGE, confounder=bytes.fromhex(confounder)) == ct
    assert RFC_KEY.decrypt(ct, RFC_USAGE) == pt
    with pytest.raises(AuthError, match="integrity"):
        RFC_KEY.decrypt(ct, RFC_USAGE + 1)  # another usage derives other keys
    for pos in (0, 15, 16, len(ct) - 25, len(ct) - 1):
        bad = bytearray(ct)
        bad[pos] ^= 0x01
        with pytest.raises(AuthError):
            RFC_KEY.decrypt(bytes(bad), RFC_USAGE)


def test_cts_round_trip_every_length():
    key = bytes(range(32))
    for n in range(16, 100):
        data = os.urandom(n)
        ct = aes_cts_encrypt(key, data)
        assert len(ct) == n and aes_cts_decrypt(key, ct) == data
    with pytest.raises(ValueError):
        aes_cts_encrypt(key, bytes(15))


def test_aes256krb5_lengths_confounder_and_bounds():
    for n in (0, 1, 9, 15, 16, 17, 100):
        a, b = RFC_KEY.encrypt(bytes(n), 4), RFC_KEY.encrypt(bytes(n), 4)
        assert len(a) == n + 40 and a != b  # a fresh random confounder each time
        assert RFC_KEY.decrypt(a, 4) == RFC_KEY.decrypt(b, 4) == bytes(n)
    for n in (0, 1, 39):  # shorter than confounder + HMAC: not made by this key
        with pytest.raises(AuthError, match="too short"):
            RFC_KEY.decrypt(bytes(n), 4)
    with pytest.raises(AuthError):
        RFC_KEY.decrypt(bytes(40), 4)
    with pytest.raises(ValueError):
        RFC_KEY.encrypt(b"x", 4, confounder=bytes(8))


def test_envelopes_with_aes256krb5():
    body = b"ticket body"
    ct = encrypt_enc_bl(RFC_KEY, body, usage=CEPHX_KEY_USAGE_TICKET_SESSION_KEY)
    assert len(ct) == 9 + len(body) + 40
    assert decrypt_enc_bl(RFC_KEY, ct, usage=CEPHX_KEY_USAGE_TICKET_SESSION_KEY) == body
    with pytest.raises(AuthError):
        decrypt_enc_bl(RFC_KEY, ct, usage=CEPHX_KEY_USAGE_AUTHORIZE)
    enc = encode_encrypt(RFC_KEY, body, usage=7)
    assert int.from_bytes(enc[:4], "little") == len(enc) - 4
    # a well-formed ciphertext whose plaintext lacks the cephx magic
    with pytest.raises(AuthError, match="magic"):
        decrypt_enc_bl(RFC_KEY, RFC_KEY.encrypt(bytes(20), 7), usage=7)


# -- keys ----------------------------------------------------------------------------------------

TENTACLE = load("tentacle-aes256k.json")
MIXED = load("tentacle-mixed.json")


def test_keyring_keys_of_both_types():
    k2 = CryptoKey.from_base64(TENTACLE["key"])  # made by Tentacle's ceph-authtool
    assert k2.type == CEPH_CRYPTO_AES256KRB5 and len(k2.secret) == 32
    assert k2.to_base64() == TENTACLE["key"] and TENTACLE["key"].startswith("Ag")
    k1 = CryptoKey.from_base64(MIXED["key"])
    assert k1.type == CEPH_CRYPTO_AES and len(k1.secret) == 16
    for k in (k1, k2):
        assert k.secret.hex() not in repr(k) and str(list(k.secret)) not in repr(k)


def _b64(ktype: int, secret: bytes) -> str:
    return CryptoKey(ktype, (1, 2), secret).to_base64()


@pytest.mark.parametrize("text,why", [
    (_b64(3, bytes(32)), "unsupported cephx key type 3"),
    (_b64(0xFFFF, bytes(16)), "unsupported cephx key type 65535"),
    (_b64(CEPH_CRYPTO_AES256KRB5, bytes(16)), "too short"),
    (_b64(CEPH_CRYPTO_AES, bytes(15)), "too short"),
    (_b64(0, b""), "none"),
    (_b64(CEPH_CRYPTO_AES256KRB5, bytes(32))[:-4], "malformed"),
    (base64.b64encode(CryptoKey(CEPH_CRYPTO_AES256KRB5, (1, 2), bytes(32)).to_bytes() + b"\0").decode(), "trailing"),
])
def test_bad_keyring_keys_are_config_errors_without_the_key(text, why):
    with pytest.raises(ConfigError, match=why) as ei:
        CryptoKey.from_base64(text)
    assert text not in str(ei.value) and text[:12] not in str(ei.value)


def test_unusable_keys_are_auth_errors():
    for k in (CryptoKey(5, secret=bytes(32)), CryptoKey(CEPH_CRYPTO_AES256KRB5, secret=bytes(31))):
        with pytest.raises(AuthError):
            k.check()
        with pytest.raises(AuthError):
            k.encrypt(b"x", 4)
        with pytest.raises(AuthError):
            k.decrypt(bytes(48), 4)
        with pytest.raises(AuthError):
            CephxClient("client.admin", k)
        with pytest.raises(AuthError):
            calc_client_server_challenge(k, 1, 2)


def test_secret_forms_aes256krb5():
    k = CryptoKey.from_base64(TENTACLE["key"])
    for form in (k, k.to_bytes(), k.secret, TENTACLE["key"]):
        cl = CephxClient("client.admin", form)
        assert cl.secret.type == CEPH_CRYPTO_AES256KRB5 and cl.secret.secret == k.secret


# -- real Tentacle sessions ---------------------------------------------------------------------


@pytest.mark.parametrize("vec", [TENTACLE, MIXED], ids=["aes256k", "mixed"])
def test_tentacle_session_replays(vec):
    r = Replay(vec)
    r.run()
    cl = r.client
    assert cl.is_authenticated()
    want_type = CryptoKey.from_base64(vec["key"]).type
    # Tentacle hands out session keys of the client key's type
    for svc in (ENTITY_TYPE_AUTH, ENTITY_TYPE_MON, ENTITY_TYPE_OSD, ENTITY_TYPE_MGR):
        assert cl.tickets[svc].session_key.type == want_type
    calls = [(e["who"], e["call"]) for e in vec["events"]]
    assert (ENTITY_TYPE_OSD, "handle_auth_reply_more") in calls  # the OSD challenged us
    assert _renewals(vec, CEPHX_GET_AUTH_SESSION_KEY)  # and the AUTH ticket was renewed over MAuth


@pytest.mark.parametrize("vec", [TENTACLE, MIXED], ids=["aes256k", "mixed"])
def test_key_proof_matches_what_tentacle_accepted(vec):
    ev = vec["events"]
    sc = CephXServerChallenge.from_bytes(bytes.fromhex(ev[1]["args"][0])).server_challenge
    req = bytes.fromhex(ev[1]["out"])
    auth = CephXAuthenticate.decode(Decoder(req, 2))
    key = CryptoKey.from_base64(vec["key"])
    assert calc_client_server_challenge(key, sc, auth.client_challenge) == auth.key
    assert calc_client_server_challenge(key, sc, auth.client_challenge + 1) != auth.key


def _renewals(vec: dict, op: int) -> list[int]:
    return [i for i, e in enumerate(vec["events"])
            if e["call"] == "build_service_ticket_request"
            and int.from_bytes(bytes.fromhex(e["out"][:4]), "little") == op]


@pytest.mark.parametrize("vec", [TENTACLE, MIXED], ids=["aes256k", "mixed"])
def test_auth_ticket_renewal_opens_the_encrypted_blob(vec):
    """An AUTH renewal over MAuth re-authenticates (GET_AUTH_SESSION_KEY, the old ticket
    presented); the mon's reply seals the new AUTH ticket blob with the old session key
    (usage TICKET_BLOB), which the replay must open."""
    i = _renewals(vec, CEPHX_GET_AUTH_SESSION_KEY)[0]
    r = Replay(vec)
    r.run(i)
    old = r.client.tickets[ENTITY_TYPE_AUTH].ticket
    out = r.step(vec["events"][i])
    assert CephXAuthenticate.decode(Decoder(out, 2)).old_ticket == old
    r.step(vec["events"][i + 1])
    assert r.client.tickets[ENTITY_TYPE_AUTH].ticket != old
    assert r.client.is_authenticated()


def test_service_ticket_renewal_with_an_aes256k_authorizer():
    """A service-ticket renewal (GET_PRINCIPAL_SESSION_KEY) carries an authorizer sealed
    with the AES256KRB5 AUTH session key (usage AUTHORIZE) that Tentacle accepted; its
    reply's tickets are sealed with the AUTH session key (usage TICKET_SESSION_KEY)."""
    i = _renewals(TENTACLE, CEPHX_GET_PRINCIPAL_SESSION_KEY)[0]
    r = Replay(TENTACLE)
    r.run(i)
    before = {s: th.session_key for s, th in r.client.tickets.items()}
    r.step(TENTACLE["events"][i])
    r.step(TENTACLE["events"][i + 1])
    after = {s: th.session_key for s, th in r.client.tickets.items()}
    assert after[ENTITY_TYPE_AUTH] == before[ENTITY_TYPE_AUTH]
    for svc in (ENTITY_TYPE_MON, ENTITY_TYPE_OSD, ENTITY_TYPE_MGR):
        assert after[svc] != before[svc] and after[svc].type == CEPH_CRYPTO_AES256KRB5


@pytest.mark.parametrize("vec", [TENTACLE, MIXED], ids=["aes256k", "mixed"])
def test_wrong_key_of_either_type_names_the_entity(vec):
    """A wrong key (same or other type) cannot open the mon's reply: one AuthError naming
    the entity, EACCES, and the key appears nowhere in it."""
    done = vec["events"][2]
    for wrong in (CryptoKey(CEPH_CRYPTO_AES256KRB5, secret=os.urandom(32)),
                  CryptoKey(CEPH_CRYPTO_AES, secret=os.urandom(16))):
        cl = CephxClient(vec["entity"], wrong, vec["want_keys"])
        cl.get_auth_request(None)
        cl.handle_auth_reply_more(None, bytes.fromhex(vec["events"][1]["args"][0]))
        with pytest.raises(AuthError) as ei:
            cl.handle_auth_done(None, *[bytes.fromhex(a) if isinstance(a, str) else a for a in done["args"]])
        msg = str(ei.value)
        assert vec["entity"] in msg and "wrong key" in msg and ei.value.errno == errno.EACCES
        assert wrong.secret.hex() not in msg and wrong.to_base64() not in msg
        assert not cl.is_authenticated()


def test_tampered_osd_replies_are_refused():
    for i in (4, 5):  # the OSD's challenge and its final reply
        r = Replay(TENTACLE)
        r.run(i)
        ev = TENTACLE["events"][i]
        args = [bytes.fromhex(a) if isinstance(a, str) else a for a in ev["args"]]
        bad = bytearray(args[-1])
        bad[-1] ^= 1
        with pytest.raises(AuthError, match="osd"):
            r.step(ev, [*args[:-1], bytes(bad)])


def test_msgr2_auth_signature_key_is_the_raw_session_key():
    r = Replay(TENTACLE)
    r.run(3)
    sk, secret = (bytes.fromhex(x) for x in TENTACLE["events"][2]["out"])
    assert len(sk) == 32 and sk == r.client.session_key(ENTITY_TYPE_AUTH).secret
    assert secret == b""  # crc mode: no connection secret
