"""librbd watch/notify payloads (src/librbd/WatchNotifyTypes.{h,cc}, Pacific) byte for byte.

Expected bytes are built by hand from the Ceph source (ENCODE_START = u8 v, u8 compat,
u32 len) and from what krbd sends (drivers/block/rbd.c ``__rbd_notify_op_lock``: a v2
message; ``__rbd_acknowledge_notify``: ResponseMessage v1).  Every ceph-object-corpus
sample of NotifyMessage / ResponseMessage must decode and re-encode exactly.
"""

from __future__ import annotations

import errno
import struct

import pytest

from pyceph.encoding import Decoder
from pyceph.errors import DecodeError
from pyceph.rbd import watch_notify as wn
from pyceph.rbd.cls_client import SnapshotNamespace
from tests.shared_data import CORPUS


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def s32(v):
    return struct.pack("<i", v)


def env(v, compat, body):
    return bytes([v, compat]) + u32(len(body)) + body


def string(s):
    b = s.encode()
    return u32(len(b)) + b


CID = wn.ClientId(4123, 94000000001)
CID_BYTES = u64(4123) + u64(94000000001)
RID = wn.AsyncRequestId(wn.ClientId(7, 8), 9)
RID_BYTES = u64(7) + u64(8) + u64(9)
USER_NS = env(1, 1, u32(0))


@pytest.mark.parametrize(
    "payload, body",
    [
        (wn.AcquiredLockPayload(CID), u32(0) + CID_BYTES),
        (wn.ReleasedLockPayload(CID), u32(1) + CID_BYTES),
        (wn.RequestLockPayload(CID, False), u32(2) + CID_BYTES + b"\x00"),
        (wn.RequestLockPayload(CID, True), u32(2) + CID_BYTES + b"\x01"),
        (wn.HeaderUpdatePayload(), u32(3)),
        (wn.AsyncProgressPayload(RID, 10, 20), u32(4) + RID_BYTES + u64(10) + u64(20)),
        (wn.AsyncCompletePayload(RID, -5), u32(5) + RID_BYTES + s32(-5)),
        (wn.FlattenPayload(RID), u32(6) + RID_BYTES),
        (wn.ResizePayload(1 << 30, RID, False), u32(7) + u64(1 << 30) + RID_BYTES + b"\x00"),
        (wn.SnapCreatePayload("s1", SnapshotNamespace(), RID, 3),
         u32(8) + string("s1") + USER_NS + RID_BYTES + u64(3)),
        (wn.SnapRemovePayload("s1", SnapshotNamespace(), RID), u32(9) + string("s1") + USER_NS + RID_BYTES),
        (wn.RebuildObjectMapPayload(RID), u32(10) + RID_BYTES),
        (wn.SnapRenamePayload("new", SnapshotNamespace(), RID, 12),
         u32(11) + u64(12) + string("new") + USER_NS + RID_BYTES),
        (wn.SnapProtectPayload("s1", SnapshotNamespace(), RID), u32(12) + string("s1") + USER_NS + RID_BYTES),
        (wn.SnapUnprotectPayload("s1", SnapshotNamespace(), RID), u32(13) + string("s1") + USER_NS + RID_BYTES),
        (wn.RenamePayload("img2", RID), u32(14) + string("img2") + RID_BYTES),
        (wn.UpdateFeaturesPayload(0x8, True, RID), u32(15) + u64(8) + b"\x01" + RID_BYTES),
        (wn.MigratePayload(RID), u32(16) + RID_BYTES),
        (wn.SparsifyPayload(RID, 4096), u32(17) + RID_BYTES + u64(4096)),
        (wn.QuiescePayload(RID), u32(18) + RID_BYTES),
        (wn.UnquiescePayload(RID), u32(19) + RID_BYTES),
        (wn.MetadataUpdatePayload("conf_x", "1", RID), u32(20) + string("conf_x") + b"\x01" + string("1") + RID_BYTES),
        (wn.MetadataUpdatePayload("conf_x", None, RID), u32(20) + string("conf_x") + b"\x00" + RID_BYTES),
    ],
)
def test_notify_message_v7_bytes(payload, body):
    want = env(7, 1, body)
    assert wn.NotifyMessage(payload).encode() == want
    m = wn.NotifyMessage.decode(want)
    assert m.struct_v == 7
    assert type(m.payload) is type(payload)
    assert m.payload == payload
    assert m.notify_op == payload.NOTIFY_OP


def test_every_op_has_a_payload_type():
    assert sorted(wn.PAYLOAD_TYPES) == list(range(21))
    assert {wn.notify_op_name(op) for op in range(21)} == set(wn.NOTIFY_OP_NAMES.values())


def test_krbd_v2_lock_messages():
    # krbd: ceph_start_encoding(2, 1); op; gid; handle  (no force byte)
    for op, cls_ in ((0, wn.AcquiredLockPayload), (1, wn.ReleasedLockPayload), (2, wn.RequestLockPayload)):
        m = wn.NotifyMessage.decode(env(2, 1, u32(op) + CID_BYTES))
        assert m.struct_v == 2 and type(m.payload) is cls_
        assert m.payload.client_id == CID
    m = wn.NotifyMessage.decode(env(2, 1, u32(2) + CID_BYTES))
    assert m.payload.force is False


def test_v1_lock_messages_have_no_client_id():
    m = wn.NotifyMessage.decode(env(1, 1, u32(0)))
    assert m.payload == wn.AcquiredLockPayload(wn.ClientId())
    assert m.payload.client_id.is_empty()


def test_old_versions_of_versioned_payloads():
    # v3 resize: no allow_shrink (defaults True); v5 snap create: namespace after name,
    # no async id; v6 snap remove: namespace, no async id
    m = wn.NotifyMessage.decode(env(3, 1, u32(7) + u64(5) + RID_BYTES))
    assert m.payload == wn.ResizePayload(5, RID, True)
    ns = SnapshotNamespace(2, {"original_name": "x", "original_snapshot_namespace_type": 0})
    ns_bytes = env(1, 1, u32(2) + string("x") + u32(0))
    m = wn.NotifyMessage.decode(env(5, 1, u32(8) + string("s") + ns_bytes))
    assert m.payload == wn.SnapCreatePayload("s", ns, wn.AsyncRequestId(), 0)
    m = wn.NotifyMessage.decode(env(6, 1, u32(9) + string("s") + ns_bytes))
    assert m.payload == wn.SnapRemovePayload("s", ns, wn.AsyncRequestId())
    m = wn.NotifyMessage.decode(env(6, 1, u32(14) + string("n")))
    assert m.payload == wn.RenamePayload("n", wn.AsyncRequestId())


def test_empty_notification_is_a_legacy_header_update():
    m = wn.NotifyMessage.decode(b"")
    assert isinstance(m.payload, wn.HeaderUpdatePayload) and m.notify_op == wn.NOTIFY_OP_HEADER_UPDATE


def test_unknown_op_is_skipped_by_length():
    body = u32(77) + b"future payload bytes"
    data = env(9, 1, body) + b"TRAILER"
    d = Decoder(data)
    m = wn.NotifyMessage.decode_from(d)
    assert isinstance(m.payload, wn.UnknownPayload)
    assert m.notify_op == 77 and m.payload.raw == b"future payload bytes"
    assert d.raw(d.remaining) == b"TRAILER"


def test_newer_version_extra_fields_are_skipped():
    # a v9 AcquiredLock with fields we do not know after the client id
    data = env(9, 1, u32(0) + CID_BYTES + b"\xaa" * 11)
    m = wn.NotifyMessage.decode(data)
    assert m.payload == wn.AcquiredLockPayload(CID) and m.struct_v == 9


def test_incompatible_compat_version_rejected():
    with pytest.raises(DecodeError):
        wn.NotifyMessage.decode(env(9, 2, u32(0) + CID_BYTES))


@pytest.mark.parametrize("cut", range(1, 24))
def test_truncated_messages_raise_decode_error(cut):
    data = env(7, 1, u32(2) + CID_BYTES + b"\x01")
    with pytest.raises(DecodeError):
        wn.NotifyMessage.decode(data[:-cut] if cut < len(data) else data[:1])


def test_payload_shorter_than_its_fields_raises():
    # envelope says 8 bytes; a RequestLock needs 4 + 16 + 1
    with pytest.raises(DecodeError):
        wn.NotifyMessage.decode(env(7, 1, u32(2) + u32(0)))


def test_response_message_bytes():
    assert wn.ResponseMessage(0).encode() == env(1, 1, s32(0))
    assert wn.ResponseMessage(-errno.EROFS).encode() == b"\x01\x01\x04\x00\x00\x00" + s32(-30)
    assert wn.ResponseMessage.decode(env(1, 1, s32(-95))).result == -95
    with pytest.raises(DecodeError):
        wn.ResponseMessage.decode(b"\x01\x01\x04\x00\x00\x00\x00")


def test_lock_owner_response():
    r0 = wn.ResponseMessage(0).encode()
    rofs = wn.ResponseMessage(-errno.EROFS).encode()
    assert wn.lock_owner_response({}) == -errno.ETIMEDOUT
    assert wn.lock_owner_response({(1, 2): b"", (3, 4): b""}) == -errno.ETIMEDOUT
    assert wn.lock_owner_response({(1, 2): b"", (3, 4): r0}) == 0
    assert wn.lock_owner_response({(3, 4): rofs}) == -errno.EROFS
    assert wn.lock_owner_response({(1, 2): r0, (3, 4): r0}) == -errno.EIO
    assert wn.lock_owner_response({(1, 2): b"\x01\x01"}) == -errno.EINVAL


def test_encode_lock_notify():
    assert wn.encode_lock_notify(wn.NOTIFY_OP_RELEASED_LOCK, CID) == env(7, 1, u32(1) + CID_BYTES)
    assert wn.encode_lock_notify(wn.NOTIFY_OP_REQUEST_LOCK, CID) == env(7, 1, u32(2) + CID_BYTES + b"\x00")


# --- ceph-object-corpus (16.2.0) -------------------------------------------------------


def _samples(tname):
    d = CORPUS / tname
    assert d.is_dir(), f"corpus type {tname} missing at {d}"
    files = sorted(d.iterdir())
    assert files
    return files


def test_corpus_notify_messages_roundtrip():
    seen = set()
    for f in _samples("librbd::watch_notify::NotifyMessage"):
        data = f.read_bytes()
        d = Decoder(data)
        m = wn.NotifyMessage.decode_from(d)
        assert d.eof(), f.name
        assert not isinstance(m.payload, wn.UnknownPayload), f.name
        assert m.encode() == data, f.name
        seen.add(m.notify_op)
    # the samples cover lock, header, async and snapshot/rename/features payloads
    assert {0, 1, 3, 4, 8, 9, 14, 15} <= seen


def test_corpus_values():
    msgs = {wn.NotifyMessage.decode(f.read_bytes()).notify_op: wn.NotifyMessage.decode(f.read_bytes())
            for f in _samples("librbd::watch_notify::NotifyMessage")}
    # generate_test_instances(): ClientId(1, 2); AsyncRequestId(ClientId(0, 1), 2)
    assert msgs[0].payload == wn.AcquiredLockPayload(wn.ClientId(1, 2))
    rid = wn.AsyncRequestId(wn.ClientId(0, 1), 2)
    assert msgs[4].payload == wn.AsyncProgressPayload(rid, 3, 4)
    assert msgs[8].payload == wn.SnapCreatePayload("foo", SnapshotNamespace(), rid, 1)
    assert msgs[15].payload == wn.UpdateFeaturesPayload(1, True, rid)


def test_corpus_response_messages_roundtrip():
    for f in _samples("librbd::watch_notify::ResponseMessage"):
        data = f.read_bytes()
        m = wn.ResponseMessage.decode(data)
        assert m.encode() == data
        assert m.result == 1


def test_corpus_truncations_raise():
    for f in _samples("librbd::watch_notify::NotifyMessage"):
        data = f.read_bytes()
        for cut in range(1, len(data)):
            with pytest.raises(DecodeError):
                wn.NotifyMessage.decode(data[:cut])


def test_message_constructors():
    assert wn.NotifyMessage.header_update().encode() == env(7, 1, u32(3))
    assert wn.NotifyMessage.acquired_lock(CID).encode() == env(7, 1, u32(0) + CID_BYTES)
    assert wn.NotifyMessage.released_lock(CID).encode() == env(7, 1, u32(1) + CID_BYTES)
    assert wn.NotifyMessage.request_lock(CID, True).encode() == env(7, 1, u32(2) + CID_BYTES + b"\x01")
