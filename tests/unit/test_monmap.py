"""MonMap and mon_info_t decoding against Ceph-produced encodings.

Expected values come from Ceph 16.2.15's ``monmaptool --print`` run on the same bytes
(quoted below), never from our own decoder.
"""

from __future__ import annotations

import datetime
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyceph.encoding import Decoder, Encoder
from pyceph.errors import DecodeError
from pyceph.mon.messages import MMonMap
from pyceph.mon.monmap import MonInfo, MonMap
from pyceph.msgr.frames import TAG_MESSAGE, iter_frames, message_from_frame
from tests.shared_data import CORPUS as CORPUS_DIR, VECTORS as VECTORS_DIR

CORPUS = CORPUS_DIR
CAPTURE = (VECTORS_DIR / "msgr2-capture/streams")

# `monmaptool --create --fsid 5b4b3a9e-0d6c-4a8e-9a51-2f1e7c3d9a10 --add zeta 10.0.0.1
#  --add alpha 10.0.0.3:6789 --addv mid '[v2:10.0.0.2:3300,v1:10.0.0.2:6789]'
#  --add beta 10.0.0.3:6790 --addv gamma '[v1:10.0.0.9:6780]' --addv delta '[v2:10.0.0.0:3300]'`
MONMAPTOOL_MAP = bytes.fromhex(
    "0906580200005b4b3a9e0d6c4a8e9a512f1e7c3d9a10000000005955016ba352c4285955016ba352c428010108000000"
    "000000000000000001010800000000000000000000000600000005000000616c70686105013900000005000000616c70"
    "686102010000000101011c00000001000000000000001000000002001a850a0000030000000000000000000000000000"
    "00000400000062657461050138000000040000006265746102010000000101011c000000020000000000000010000000"
    "02001a860a000003000000000000000000000000000000000500000064656c74610501390000000500000064656c7461"
    "02010000000101011c00000002000000000000001000000002000ce40a00000000000000000000000000000000000000"
    "0500000067616d6d610501390000000500000067616d6d6102010000000101011c000000010000000000000010000000"
    "02001a7c0a00000900000000000000000000000000000000030000006d696405015a000000030000006d696402020000"
    "000101011c00000002000000000000001000000002000ce40a00000200000000000000000101011c0000000100000000"
    "0000001000000002001a850a00000200000000000000000000000000000000040000007a657461050138000000040000"
    "007a65746102010000000101011c00000001000000000000001000000002001a850a0000010000000000000000000000"
    "0000000000060000000500000067616d6d61040000007a657461030000006d696405000000616c706861050000006465"
    "6c7461040000006265746100000000000100000000000000000000000000"
)
# its `monmaptool --print`
MONMAPTOOL_PRINT = """\
epoch 0
fsid 5b4b3a9e-0d6c-4a8e-9a51-2f1e7c3d9a10
last_changed 2026-11-21T08:24:57.683954+0000
created 2026-11-21T08:24:57.683954+0000
min_mon_release 0 (unknown)
election_strategy: 1
0: v1:10.0.0.9:6780/0 mon.gamma
1: v1:10.0.0.1:6789/0 mon.zeta
2: [v2:10.0.0.2:3300/0,v1:10.0.0.2:6789/0] mon.mid
3: v1:10.0.0.3:6789/0 mon.alpha
4: v2:10.0.0.0:3300/0 mon.delta
5: v2:10.0.0.3:6790/0 mon.beta
"""

# `monmaptool --print` of the monmap inside the captured MMonMap
CAPTURE_PRINT = """\
epoch 1
fsid 34a5eeac-1fc3-4a24-917b-756804c16b77
last_changed 2026-11-21T08:07:27.421119+0000
created 2026-11-21T08:07:27.421119+0000
min_mon_release 16 (pacific)
election_strategy: 1
0: [v2:10.77.0.1:3300/0,v1:10.77.0.1:6789/0] mon.a
"""

# `monmaptool --print` of the corpus MonMaps (header lines; rank lines checked by name)
CORPUS_PRINT = {
    "880afa2df7ce05836fa34d1328dc45e7": ("epoch 1", "last_changed 123.000000", "created 789.000101",
                                         ["one"]),
    "d0a7a30bff4ef3d5c26e53077c94bbbd": ("epoch 0", "last_changed 0.000000", "created 0.000000", []),
    "f122b95288ce97b8c4a277e112a79d00": ("epoch 1", "last_changed 123.000000", "created 0.000000",
                                         ["empty_addr_zero", "empty_addr_one", "empty_addr_two",
                                          "filled_pub_addr"]),
}


def _iso(t: tuple[int, int]) -> str:
    dt = datetime.datetime.fromtimestamp(t[0], datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{t[1] // 1000:06d}+0000"


def _print_like_monmaptool(m: MonMap) -> str:
    lines = [f"epoch {m.epoch}", f"fsid {m.fsid_str}", f"last_changed {_iso(m.last_changed)}",
             f"created {_iso(m.created)}",
             f"min_mon_release {m.min_mon_release} ({ {16: 'pacific'}.get(m.min_mon_release, 'unknown') })",
             f"election_strategy: {m.strategy}"]
    for r, name in enumerate(m.ranks):
        lines.append(f"{r}: {m.get_addrs(r)} mon.{name}")
    return "\n".join(lines) + "\n"


def _captured_monmap_bl() -> bytes:
    for f in iter_frames((CAPTURE / "02-3300.s2c").read_bytes()):
        if f.tag == TAG_MESSAGE:
            msg = message_from_frame(f)
            if msg.type == MMonMap.MSG_TYPE:
                return MMonMap.from_message(msg).monmap_bl
    raise AssertionError("no MMonMap in the capture")


def test_captured_monmap_matches_monmaptool():
    bl = _captured_monmap_bl()
    m = MonMap.decode(bl)
    assert _print_like_monmaptool(m) == CAPTURE_PRINT
    assert m.get_rank("a") == 0 and m.get_rank("b") == -1
    assert m.get_addrs(0).msgr2().hostport == "10.77.0.1:3300"
    # what Pacific encodes, we encode identically
    assert m.encode() == bl


def test_monmaptool_map_ranks_and_addrs():
    m = MonMap.decode(MONMAPTOOL_MAP)
    assert _print_like_monmaptool(m) == MONMAPTOOL_PRINT
    # monmaptool built these ranks with calc_legacy_ranks (entity_addr_t memcmp order)
    assert m.calc_legacy_ranks() == m.ranks
    assert m.encode() == MONMAPTOOL_MAP


@pytest.mark.parametrize("name", sorted(CORPUS_PRINT))
def test_corpus_monmap(name):
    raw = (CORPUS / "MonMap" / name).read_bytes()
    d = Decoder(raw)
    m = MonMap.decode(d)
    assert d.eof()
    epoch, changed, created, ranks = CORPUS_PRINT[name]
    assert f"epoch {m.epoch}" == epoch
    assert f"last_changed {m.last_changed[0]}.{m.last_changed[1] // 1000:06d}" == changed
    assert f"created {m.created[0]}.{m.created[1] // 1000:06d}" == created
    assert m.ranks == ranks
    assert m.fsid_str == "00000000-0000-0000-0000-000000000000"
    again = m.encode()
    assert MonMap.decode(again) == m
    if name != "f122b95288ce97b8c4a277e112a79d00":  # that one holds family-0 addrs with a sockaddr length
        assert again == raw


def test_corpus_filled_addr():
    m = MonMap.decode((CORPUS / "MonMap" / "f122b95288ce97b8c4a277e112a79d00").read_bytes())
    assert str(m.get_addrs(m.get_rank("filled_pub_addr"))) == "v2:127.0.1.2:0/0"
    assert m.mon_info["filled_pub_addr"].priority == 1


@pytest.mark.parametrize("path", sorted((CORPUS / "mon_info_t").iterdir()), ids=lambda p: p.name)
def test_corpus_mon_info(path):
    raw = path.read_bytes()
    d = Decoder(raw)
    info = MonInfo.decode(d)
    assert d.eof()
    assert len(info.public_addrs.addrs) == 2 and info.public_addrs.msgr2() is not None
    assert info.encode(Encoder()).bytes() == raw


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_monmap_garbage_raises_only_decode_error(data):
    base = data.draw(st.sampled_from([MONMAPTOOL_MAP, _CAPTURED_BL]))
    cut = data.draw(st.integers(0, len(base) - 1))
    mutated = bytearray(base[:cut] if data.draw(st.booleans()) else base)
    for _ in range(data.draw(st.integers(0, 4))):
        if mutated:
            i = data.draw(st.integers(0, len(mutated) - 1))
            mutated[i] = data.draw(st.integers(0, 255))
    try:
        MonMap.decode(bytes(mutated))
    except DecodeError:
        pass


def test_truncated_monmap_always_fails():
    for cut in range(len(MONMAPTOOL_MAP)):
        with pytest.raises(DecodeError):
            MonMap.decode(MONMAPTOOL_MAP[:cut])


_CAPTURED_BL = _captured_monmap_bl()
