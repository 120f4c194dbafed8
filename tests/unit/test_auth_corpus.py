"""Decode every cephx/auth sample of Ceph's object corpus (16.2.0) and round-trip it.

The corpus files are Ceph's own encodings (``ceph-dencoder ... encode export``) of each
type's test instances, so decoding them and re-encoding byte-identically checks our
formats against Ceph's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pyceph.auth import structs
from pyceph.auth.crypto import CryptoKey
from pyceph.encoding import Decoder, Encoder
from pyceph.errors import DecodeError
from tests.shared_data import CORPUS as CORPUS_DIR, VECTORS as VECTORS_DIR

CORPUS = CORPUS_DIR

TYPES = {
    "CryptoKey": CryptoKey,
    "CephXTicketBlob": structs.CephXTicketBlob,
    "AuthTicket": structs.AuthTicket,
    "CephXServiceTicket": structs.CephXServiceTicket,
    "CephXServiceTicketInfo": structs.CephXServiceTicketInfo,
    "CephXAuthenticate": structs.CephXAuthenticate,
    "CephXAuthorize": structs.CephXAuthorize,
    "CephXAuthorizeReply": structs.CephXAuthorizeReply,
    "CephXAuthorizeChallenge": structs.CephXAuthorizeChallenge,
    "CephXServerChallenge": structs.CephXServerChallenge,
    "CephXChallengeBlob": structs.CephXChallengeBlob,
    "CephXRequestHeader": structs.CephXRequestHeader,
    "CephXResponseHeader": structs.CephXResponseHeader,
    "CephXServiceTicketRequest": structs.CephXServiceTicketRequest,
    "EntityAuth": structs.EntityAuth,
    "ExpiringCryptoKey": structs.ExpiringCryptoKey,
    "AuthCapsInfo": structs.AuthCapsInfo,
}


def _samples():
    out = []
    for name, cls in TYPES.items():
        files = sorted((CORPUS / name).iterdir())
        assert files, f"no corpus samples for {name}"
        for f in files:
            out.append(pytest.param(cls, f, id=f"{name}/{f.name[:8]}"))
    return out


@pytest.mark.parametrize("cls,path", _samples())
def test_corpus_decode_roundtrip(cls, path):
    data = path.read_bytes()
    d = Decoder(data)
    obj = cls.decode(d)
    assert d.eof(), f"{d.remaining} bytes left undecoded"
    assert obj.encode(Encoder()).bytes() == data


@pytest.mark.parametrize("cls,path", _samples())
def test_corpus_truncated_raises_decode_error(cls, path):
    # Every strict prefix either decodes (a shorter struct_v can end early) or raises
    # DecodeError -- never IndexError/struct.error.
    data = path.read_bytes()
    for cut in range(len(data)):
        try:
            cls.decode(Decoder(data[:cut]))
        except DecodeError:
            pass


def test_corpus_values_make_sense():
    # Spot-check decoded contents against what Ceph's generate_test_instances put there.
    caps = [structs.AuthCapsInfo.from_bytes(p.read_bytes()) for p in sorted((CORPUS / "AuthCapsInfo").iterdir())]
    assert any(b"allow *" in c.caps for c in caps)
    keys = [CryptoKey.from_bytes(p.read_bytes()) for p in sorted((CORPUS / "CryptoKey").iterdir())]
    assert all(k.type == 1 and len(k.secret) == 16 for k in keys)
    auths = [structs.EntityAuth.from_bytes(p.read_bytes()) for p in sorted((CORPUS / "EntityAuth").iterdir())]
    assert any("mon" in a.caps for a in auths)
