"""``crushtool --test --show-mappings`` in Python (``src/crush/CrushTester.cc``).

:func:`test_mappings` returns the lines ``crushtool -i MAP --test --show-mappings
--rule R --num-rep N --min-x A --max-x B [--weight DEV W ...]`` prints, e.g.
``"CRUSH rule 0 x 7 [3,11,5]"``.
"""

from __future__ import annotations

import struct

from .hash import crush_hash32_2
from .map import CrushMap


def device_weight_16_16(w: float) -> int:
    """``CrushTester::set_device_weight``: ``(int)(float(w) * 0x10000)`` clamped to
    ``[0, 0x10000]``; crushtool parses ``--weight`` into a C ``float``."""
    f = struct.unpack("<f", struct.pack("<f", w))[0]
    v = int(f * 0x10000)
    return max(0, min(0x10000, v))


def tester_weights(crush: CrushMap, weights: dict[int, float] | None = None) -> list[int]:
    """The device weight vector ``CrushTester::test`` builds: the ``--weight`` value if
    given, else 0x10000 for devices some bucket holds, else 0; one per device id below
    ``max_devices``."""
    weights = weights or {}
    present: set[int] = set()
    for b in crush.buckets:
        if b is not None:
            present.update(i for i in b.items if i >= 0)
    out = []
    for o in range(crush.max_devices):
        if o in weights:
            out.append(device_weight_16_16(weights[o]))
        elif o in present:
            out.append(0x10000)
        else:
            out.append(0)
    return out


def format_mapping(v: list[int]) -> str:
    """A ``vector<int>`` as Ceph's ``operator<<`` prints it: ``[a,b,c]``."""
    return "[" + ",".join(str(i) for i in v) + "]"


def test_mappings(
    crush: CrushMap,
    rule: int,
    num_rep: int,
    min_x: int,
    max_x: int,
    weights: dict[int, float] | None = None,
    pool_id: int = -1,
) -> list[str]:
    """Lines of ``crushtool --test --show-mappings`` for one rule and replica count.

    ``weights`` maps device id -> weight in ``[0, 1]`` (``--weight``).  Like crushtool,
    a rule that does not exist or a weight vector summing to zero prints nothing, and
    the mapping uses choose_args index 0 (so the default -1 set if the map has one).
    ``pool_id`` (``--pool-id``) feeds ``crush_hash32_2(x, pool_id)`` to CRUSH instead
    of ``x``; the printed x stays ``x``.
    """
    if not crush.rule_exists(rule):
        return []
    w = tester_weights(crush, weights)
    if sum(w) == 0:
        return []
    lines = []
    for x in range(min_x, max_x + 1):
        real_x = x if pool_id == -1 else crush_hash32_2(x, pool_id)
        out = crush.do_rule(rule, real_x, num_rep, w, 0)
        lines.append(f"CRUSH rule {rule} x {x} {format_mapping(out)}")
    return lines
