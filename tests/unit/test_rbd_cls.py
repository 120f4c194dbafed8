"""cls_rbd / cls_lock payloads against Ceph's own encoded samples (ceph-object-corpus
16.2.0), plus the feature policy.

Every corpus sample of a type we implement must decode, consume exactly its bytes,
and re-encode to the identical bytes; every truncation must raise DecodeError.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyceph.encoding import Decoder, Encoder
from pyceph.errors import DecodeError, FeatureNotSupported
from pyceph.rbd import cls_client as c
from pyceph.rbd import features as F
from pyceph.rbd.image import check_feature_policy
from tests.shared_data import CORPUS as CORPUS_DIR, VECTORS as VECTORS_DIR

CORPUS = CORPUS_DIR

TYPES = {
    "cls_rbd_parent": c.ClsRbdParent,
    "cls_rbd_snap": c.ClsRbdSnap,
    "cls::rbd::SnapshotInfo": c.SnapshotInfo,
    "cls::rbd::SnapshotNamespace": c.SnapshotNamespace,
    "cls::rbd::ParentImageSpec": c.ParentImageSpec,
    "cls::rbd::ChildImageSpec": c.ChildImageSpec,
    "cls_lock_lock_op": c.LockOp,
    "cls_lock_unlock_op": c.UnlockOp,
    "cls_lock_break_op": c.BreakOp,
    "cls_lock_assert_op": c.AssertOp,
    "cls_lock_get_info_reply": c.LockInfo,
    "rados::cls::lock::lock_info_t": c.LockInfo,
    "rados::cls::lock::locker_id_t": c.LockerId,
    "rados::cls::lock::locker_info_t": c.LockerInfo,
}


def _samples():
    out = []
    for tname, klass in TYPES.items():
        d = CORPUS / tname
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            out.append(pytest.param(klass, f, id=f"{tname}/{f.name[:8]}"))
    return out


SAMPLES = _samples()


def test_corpus_present():
    # Guards against the parametrized tests silently collecting nothing.
    assert CORPUS.is_dir(), f"corpus missing at {CORPUS}"
    assert len(SAMPLES) >= 80
    assert {p.values[0] for p in SAMPLES} == set(TYPES.values())


@pytest.mark.parametrize("klass,path", SAMPLES)
def test_corpus_decode_roundtrip(klass, path):
    raw = path.read_bytes()
    d = Decoder(raw)
    obj = klass.decode(d)
    assert d.pos == len(raw)
    assert obj.encode(Encoder()).bytes() == raw


@pytest.mark.parametrize("klass,path", SAMPLES)
def test_corpus_truncation_raises_decode_error(klass, path):
    raw = path.read_bytes()
    for n in range(len(raw)):
        with pytest.raises(DecodeError):
            klass.decode(Decoder(raw[:n]))


def _corpus(tname):
    return [f.read_bytes() for f in sorted((CORPUS / tname).iterdir())]


def test_corpus_values_lock_ops():
    # librbd's exclusive lock: name "rbd_lock", tag "internal", cookie "auto <n>".
    ops = [c.LockOp.decode(Decoder(b)) for b in _corpus("cls_lock_lock_op")]
    rbd = [o for o in ops if o.cookie.startswith("auto ")]
    assert rbd and all(o.name == "rbd_lock" and o.tag == "internal" and o.type == c.LOCK_EXCLUSIVE for o in rbd)
    infos = [c.LockInfo.decode(Decoder(b)) for b in _corpus("cls_lock_get_info_reply")]
    owners = [k for i in infos for k in i.lockers]
    assert any(str(k.locker).startswith("client.") for k in owners)
    addrs = [v.addr for i in infos for v in i.lockers.values()]
    assert any(a.ip and a.port for a in addrs)


def test_corpus_values_snapshots():
    snaps = [c.ClsRbdSnap.decode(Decoder(b)) for b in _corpus("cls_rbd_snap")]
    kinds = {s.snapshot_namespace.type_name for s in snaps}
    assert "user" in kinds and "mirror" in kinds
    mirror = [s for s in snaps if s.snapshot_namespace.type == c.SNAPSHOT_NAMESPACE_TYPE_MIRROR]
    assert all(s.name.startswith(".mirror.") or s.name == "non_primary" for s in mirror)
    infos = [c.SnapshotInfo.decode(Decoder(b)) for b in _corpus("cls::rbd::SnapshotInfo")]
    assert {i.snapshot_namespace.type_name for i in infos} == {"user", "group", "trash", "mirror"}


def test_cls_rbd_parent_v1_decodes_overlap():
    # v1 (pre-Nautilus) form: pool, image_id, snap_id, overlap u64, no namespace.
    p = c.ClsRbdParent(3, "", "abc", 7, 4096)
    raw = p.encode(Encoder(), version=1).bytes()
    assert raw[:2] == b"\x01\x01"
    assert c.ClsRbdParent.decode(Decoder(raw)) == p


# -- method payloads (cls_rbd_client.cc) -------------------------------------


def test_create_payload_layout():
    raw = c.encode_create(1 << 30, 22, 1, "rbd_data.abc", -1)
    d = Decoder(raw)
    assert (d.u64(), d.u8(), d.u64(), d.string(), d.s64()) == (1 << 30, 22, 1, "rbd_data.abc", -1)
    assert d.eof()


def test_get_size_reply_is_order_then_size():
    raw = Encoder().u8(22).u64(10 << 20).bytes()
    assert c.decode_get_size(raw) == (10 << 20, 22)
    with pytest.raises(DecodeError):
        c.decode_get_size(raw[:-1])


def test_snapcontext_validation():
    good = Encoder().u64(9).list([9, 5, 2], Encoder.u64).bytes()
    assert c.decode_get_snapcontext(good).to_tuple() == (9, [9, 5, 2])
    for seq, snaps in ((4, [9]), (9, [2, 5])):
        with pytest.raises(DecodeError):
            c.decode_get_snapcontext(Encoder().u64(seq).list(snaps, Encoder.u64).bytes())
    # a count larger than the bytes left must not allocate or IndexError
    with pytest.raises(DecodeError):
        c.decode_get_snapcontext(Encoder().u64(1).u32(1 << 30).bytes())


def test_dir_list_roundtrip():
    raw = Encoder().map({"a": "1", "b": "2"}, Encoder.string, Encoder.string).bytes()
    assert c.decode_dir_list(raw) == {"a": "1", "b": "2"}
    d = Decoder(c.encode_dir_list("a", 1024))
    assert (d.string(), d.u64()) == ("a", 1024)


def test_get_features_request():
    d = Decoder(c.encode_get_features(c.CEPH_NOSNAP, True))
    assert (d.u64(), d.u8()) == (0xFFFFFFFFFFFFFFFE, 1)


# -- feature policy -------------------------------------------------------------

# librbd's default feature set for new images (rbd_default_features = 61)
LIBRBD_DEFAULT = (
    F.RBD_FEATURE_LAYERING
    | F.RBD_FEATURE_EXCLUSIVE_LOCK
    | F.RBD_FEATURE_OBJECT_MAP
    | F.RBD_FEATURE_FAST_DIFF
    | F.RBD_FEATURE_DEEP_FLATTEN
)


def _incompat(features, read_only):
    # what cls_rbd get_features answers for that access mode
    return features & (F.RBD_FEATURES_INCOMPATIBLE if read_only else F.RBD_FEATURES_RW_INCOMPATIBLE)


def test_policy_allows_rw_default_image():
    # issue 4: pyceph keeps exclusive-lock/object-map/fast-diff/deep-flatten images
    assert LIBRBD_DEFAULT == 61 == F.PYCEPH_FEATURES_DEFAULT
    check_feature_policy(LIBRBD_DEFAULT, _incompat(LIBRBD_DEFAULT, False), read_only=False)
    f = LIBRBD_DEFAULT | F.RBD_FEATURE_STRIPINGV2 | F.RBD_FEATURE_OPERATIONS  # v2 clone child
    check_feature_policy(f, _incompat(f, False), read_only=False)


def test_policy_refuses_rw_journaling_naming_it():
    f = LIBRBD_DEFAULT | F.RBD_FEATURE_JOURNALING
    with pytest.raises(FeatureNotSupported) as ei:
        check_feature_policy(f, _incompat(f, False), read_only=False)
    msg = str(ei.value)
    assert "0x40" in msg and "journaling" in msg
    assert "layering" not in msg and "object-map" not in msg
    check_feature_policy(f, _incompat(f, True), read_only=True)  # readable
    for bad in (F.RBD_FEATURE_MIGRATING, F.RBD_FEATURE_NON_PRIMARY, F.RBD_FEATURE_DIRTY_CACHE):
        with pytest.raises(FeatureNotSupported):
            check_feature_policy(LIBRBD_DEFAULT | bad, _incompat(LIBRBD_DEFAULT | bad, False), read_only=False)


def test_policy_allows_read_only_default_image():
    check_feature_policy(LIBRBD_DEFAULT, _incompat(LIBRBD_DEFAULT, True), read_only=True)


def test_policy_allows_layering_striping_rw():
    f = F.RBD_FEATURE_LAYERING | F.RBD_FEATURE_STRIPINGV2
    check_feature_policy(f, _incompat(f, False), read_only=False)


def test_policy_unknown_incompatible_refused_read_only():
    unknown = 1 << 40
    with pytest.raises(FeatureNotSupported) as ei:
        check_feature_policy(F.RBD_FEATURE_LAYERING | unknown, unknown, read_only=True)
    assert "bit 40" in str(ei.value)
    with pytest.raises(FeatureNotSupported):
        check_feature_policy(F.RBD_FEATURE_LAYERING | unknown, 0, read_only=False)


def test_policy_data_pool_refused_even_read_only():
    f = F.RBD_FEATURE_LAYERING | F.RBD_FEATURE_DATA_POOL
    with pytest.raises(FeatureNotSupported, match="data-pool"):
        check_feature_policy(f, _incompat(f, True), read_only=True)


def test_feature_names_in_bit_order():
    assert F.feature_names(LIBRBD_DEFAULT | F.RBD_FEATURE_STRIPINGV2) == [
        "layering",
        "striping",
        "exclusive-lock",
        "object-map",
        "fast-diff",
        "deep-flatten",
    ]
    assert F.features_from_names("layering,striping") == 3
    with pytest.raises(ValueError):
        F.features_from_names("bogus")
