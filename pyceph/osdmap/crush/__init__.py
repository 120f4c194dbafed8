"""CRUSH: map decoding (``map.py``), placement (``mapper.py``), crushtool-style tests (``tool.py``).

``CrushMap.decode(d)`` / ``CrushMap.from_bytes(b)`` read a binary CRUSH map;
``CrushMap.do_rule(ruleno, x, result_max, weights, choose_args_index)`` computes a
placement exactly as the kernel's ``crush_do_rule`` does.
"""

from .hash import crush_hash32_2, crush_hash32_3, crush_hash32_4
from .map import (
    CRUSH_ITEM_NONE,
    DEFAULT_CHOOSE_ARGS,
    ChooseArg,
    CrushBucket,
    CrushMap,
    CrushRule,
    CrushRuleStep,
)

__all__ = [
    "CRUSH_ITEM_NONE",
    "DEFAULT_CHOOSE_ARGS",
    "ChooseArg",
    "CrushBucket",
    "CrushMap",
    "CrushRule",
    "CrushRuleStep",
    "crush_hash32_2",
    "crush_hash32_3",
    "crush_hash32_4",
]
