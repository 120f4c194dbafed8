"""The CRUSH map: data model and binary decoding.

The binary form is what ``crushtool -c`` writes and what an OSDMap embeds (as a
bufferlist): ``CrushWrapper::encode``/``decode`` in Ceph's ``src/crush/CrushWrapper.cc``
(structs in ``src/crush/crush.h``), read by the kernel's ``crush_decode`` in
``net/ceph/osdmap.c``.  There is no ENCODE_START envelope; the layout is::

    u32 magic (0x00010000), s32 max_buckets, u32 max_rules, s32 max_devices
    max_buckets x bucket   (u32 alg, 0 = hole; then s32 id, u16 type, u8 alg, u8 hash,
                            u32 weight, u32 size, size x s32 items, per-alg weights)
    max_rules x rule       (u32 present; u32 len, u8 ruleset, u8 type, u8 min_size,
                            u8 max_size, len x (u32 op, s32 arg1, s32 arg2))
    type_map, name_map, rule_name_map   (map<s32, string>; see _decode_name_map)
    -- each later group is optional: Ceph stops at the end of the buffer --
    u32 choose_local_tries, u32 choose_local_fallback_tries, u32 choose_total_tries
    u32 chooseleaf_descend_once
    u8 chooseleaf_vary_r
    u8 straw_calc_version
    u32 allowed_bucket_algs
    u8 chooseleaf_stable
    class_map map<s32,s32>, class_name map<s32,string>, class_bucket map<s32,map<s32,s32>>
    choose_args map<s64, (u32 n, n x (u32 bucket_index, u32 npos, npos x (u32 n, n x u32),
                                      u32 n, n x s32 ids))>

Because the optional groups are detected by end-of-buffer, :meth:`CrushMap.decode`
must be given a decoder that ends where the map ends (``d.sub(len)`` on an embedded map).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from ...encoding import Decoder, Encoder
from ...errors import DecodeError

CRUSH_MAGIC = 0x00010000

# bucket algorithms (crush.h)
CRUSH_BUCKET_UNIFORM = 1
CRUSH_BUCKET_LIST = 2
CRUSH_BUCKET_TREE = 3
CRUSH_BUCKET_STRAW = 4
CRUSH_BUCKET_STRAW2 = 5
BUCKET_ALG_NAMES = {
    CRUSH_BUCKET_UNIFORM: "uniform",
    CRUSH_BUCKET_LIST: "list",
    CRUSH_BUCKET_TREE: "tree",
    CRUSH_BUCKET_STRAW: "straw",
    CRUSH_BUCKET_STRAW2: "straw2",
}
CRUSH_LEGACY_ALLOWED_BUCKET_ALGS = (
    (1 << CRUSH_BUCKET_UNIFORM) | (1 << CRUSH_BUCKET_LIST) | (1 << CRUSH_BUCKET_STRAW)
)

# rule step ops (crush.h)
CRUSH_RULE_NOOP = 0
CRUSH_RULE_TAKE = 1
CRUSH_RULE_CHOOSE_FIRSTN = 2
CRUSH_RULE_CHOOSE_INDEP = 3
CRUSH_RULE_EMIT = 4
CRUSH_RULE_CHOOSELEAF_FIRSTN = 6
CRUSH_RULE_CHOOSELEAF_INDEP = 7
CRUSH_RULE_SET_CHOOSE_TRIES = 8
CRUSH_RULE_SET_CHOOSELEAF_TRIES = 9
CRUSH_RULE_SET_CHOOSE_LOCAL_TRIES = 10
CRUSH_RULE_SET_CHOOSE_LOCAL_FALLBACK_TRIES = 11
CRUSH_RULE_SET_CHOOSELEAF_VARY_R = 12
CRUSH_RULE_SET_CHOOSELEAF_STABLE = 13

CRUSH_ITEM_UNDEF = 0x7FFFFFFE
CRUSH_ITEM_NONE = 0x7FFFFFFF

# choose_args index used when a pool has none of its own (CrushWrapper.h)
DEFAULT_CHOOSE_ARGS = -1

# rule types as pg_pool_t uses them (osd_types.h)
RULE_TYPE_REPLICATED = 1
RULE_TYPE_ERASURE = 3


@dataclass
class CrushBucket:
    """One bucket (``struct crush_bucket`` and its per-alg tail, ``crush.h``).

    ``id`` is negative (bucket index ``-1 - id``); ``type`` a type id (``type_names``);
    ``weight`` and all weights are 16.16 fixed point.  Per-alg fields: ``item_weight``
    (uniform), ``item_weights`` (list, straw, straw2), ``sum_weights`` (list),
    ``straws`` (straw), ``num_nodes``/``node_weights`` (tree).
    """

    id: int
    type: int
    alg: int
    hash: int
    weight: int
    items: list[int]
    item_weight: int = 0
    item_weights: list[int] = field(default_factory=list)
    sum_weights: list[int] = field(default_factory=list)
    straws: list[int] = field(default_factory=list)
    num_nodes: int = 0
    node_weights: list[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.items)

    def item_weight_at(self, pos: int) -> int:
        """``crush_get_bucket_item_weight``: 16.16 weight of ``items[pos]`` (0 if out of range)."""
        if not 0 <= pos < len(self.items):
            return 0
        if self.alg == CRUSH_BUCKET_UNIFORM:
            return self.item_weight
        if self.alg == CRUSH_BUCKET_TREE:
            n = (pos << 1) + 1  # crush_calc_tree_node
            return self.node_weights[n] if n < len(self.node_weights) else 0
        return self.item_weights[pos] if pos < len(self.item_weights) else 0


@dataclass
class CrushRuleStep:
    """``struct crush_rule_step``: ``op`` (CRUSH_RULE_*), ``arg1``, ``arg2`` (s32)."""

    op: int
    arg1: int
    arg2: int


@dataclass
class CrushRule:
    """``struct crush_rule`` with its mask (``ruleset``, ``type``, ``min_size``, ``max_size``)."""

    ruleset: int
    type: int
    min_size: int
    max_size: int
    steps: list[CrushRuleStep]


@dataclass
class ChooseArg:
    """``struct crush_choose_arg`` for one bucket: per-position 16.16 ``weight_set``
    (list of weight lists, each as long as the bucket) and replacement hash ``ids``
    (empty, or as long as the bucket).  Only straw2 buckets use them."""

    weight_set: list[list[int]] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)


@dataclass
class CrushMap:
    """A decoded CRUSH map (``CrushWrapper``).

    ``buckets[i]`` is the bucket with id ``-1 - i`` or ``None``; ``rules[i]`` is rule id
    ``i`` or ``None``.  ``type_names``, ``names`` (item id -> name, devices and buckets)
    and ``rule_names`` are the name maps; ``class_map`` (device id -> class id),
    ``class_names`` (class id -> name) and ``class_bucket`` (bucket id -> {class id ->
    shadow bucket id}) the device classes; ``choose_args`` maps a choose_args index
    (pool id, or -1 for the default set) to ``{bucket index: ChooseArg}``.
    """

    max_devices: int = 0
    buckets: list[CrushBucket | None] = field(default_factory=list)
    rules: list[CrushRule | None] = field(default_factory=list)
    type_names: dict[int, str] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    rule_names: dict[int, str] = field(default_factory=dict)
    # tunables; defaults are set_tunables_legacy(), used when a map predates them
    choose_local_tries: int = 2
    choose_local_fallback_tries: int = 5
    choose_total_tries: int = 19
    chooseleaf_descend_once: int = 0
    chooseleaf_vary_r: int = 0
    chooseleaf_stable: int = 0
    straw_calc_version: int = 0
    allowed_bucket_algs: int = CRUSH_LEGACY_ALLOWED_BUCKET_ALGS
    class_map: dict[int, int] = field(default_factory=dict)
    class_names: dict[int, str] = field(default_factory=dict)
    class_bucket: dict[int, dict[int, int]] = field(default_factory=dict)
    choose_args: dict[int, dict[int, ChooseArg]] = field(default_factory=dict)
    _mapper: object = field(default=None, repr=False, compare=False)

    # -- decoding -----------------------------------------------------------
    @classmethod
    def from_bytes(cls, b: bytes | bytearray | memoryview) -> "CrushMap":
        """Decode a whole buffer (e.g. a ``crushtool -c`` output file).

        Raises :class:`DecodeError` if it is malformed or has bytes left over.
        """
        d = Decoder(b)
        m = cls.decode(d)
        if not d.eof():
            raise DecodeError(f"crush map: {d.remaining} bytes left over")
        return m

    @classmethod
    def decode(cls, d: Decoder) -> "CrushMap":
        """Decode a CRUSH map from ``d`` (format in the module docstring).

        ``d`` must end where the map ends: the trailing optional sections are detected
        by end-of-buffer as in ``CrushWrapper::decode``.  Raises :class:`DecodeError` on
        bad magic, truncation, an unknown bucket alg, choose_args naming a bucket index
        past ``max_buckets`` or with sizes that disagree with their bucket, or any
        count larger than the bytes that remain.
        """
        m = cls()
        magic = d.u32()
        if magic != CRUSH_MAGIC:
            raise DecodeError(f"crush map: bad magic {magic:#x}")
        max_buckets = d.s32()
        max_rules = d.u32()
        m.max_devices = d.s32()
        if max_buckets < 0 or m.max_devices < 0:
            raise DecodeError("crush map: negative max_buckets/max_devices")
        # each bucket slot and rule slot takes at least a u32
        if (max_buckets + max_rules) * 4 > d.remaining:
            raise DecodeError("crush map: bucket/rule counts exceed the buffer")

        m.buckets = [_decode_bucket(d) for _ in range(max_buckets)]
        m.rules = [_decode_rule(d) for _ in range(max_rules)]

        m.type_names = _decode_name_map(d)
        m.names = _decode_name_map(d)
        m.rule_names = _decode_name_map(d)

        if not d.eof():
            m.choose_local_tries = d.u32()
            m.choose_local_fallback_tries = d.u32()
            m.choose_total_tries = d.u32()
        if not d.eof():
            m.chooseleaf_descend_once = d.u32()
        if not d.eof():
            m.chooseleaf_vary_r = d.u8()
        if not d.eof():
            m.straw_calc_version = d.u8()
        if not d.eof():
            m.allowed_bucket_algs = d.u32()
        if not d.eof():
            m.chooseleaf_stable = d.u8()
        if not d.eof():
            m.class_map = d.map(Decoder.s32, Decoder.s32, 8)
            m.class_names = d.map(Decoder.s32, Decoder.string, 8)
            m.class_bucket = d.map(
                Decoder.s32, lambda dd: dd.map(Decoder.s32, Decoder.s32, 8), 8
            )
        if not d.eof():
            n = d.count(12)
            for _ in range(n):
                index = d.s64()
                m.choose_args[index] = _decode_choose_arg_map(d, m.buckets)

        # CrushWrapper::finalize(): named devices past max_devices extend it
        devs = [i for i in m.names if i >= 0]
        if devs and max(devs) >= m.max_devices:
            m.max_devices = max(devs) + 1
        _check_acyclic(m.buckets)
        return m

    def encode(self, e: Encoder) -> Encoder:
        """``CrushWrapper::encode`` with every Luminous+ section (the inverse of :meth:`decode`).

        Maps are written in key order, as ``std::map`` iterates.  Returns ``e``.
        """
        e.u32(CRUSH_MAGIC).s32(len(self.buckets)).u32(len(self.rules)).s32(self.max_devices)
        for b in self.buckets:
            if b is None:
                e.u32(0)
                continue
            e.u32(b.alg).s32(b.id).u16(b.type).u8(b.alg).u8(b.hash).u32(b.weight)
            e.u32(len(b.items))
            for it in b.items:
                e.s32(it)
            if b.alg == CRUSH_BUCKET_UNIFORM:
                e.u32(b.item_weight)
            elif b.alg == CRUSH_BUCKET_LIST:
                for w, s in zip(b.item_weights, b.sum_weights):
                    e.u32(w).u32(s)
            elif b.alg == CRUSH_BUCKET_TREE:
                e.u8(len(b.node_weights))
                for w in b.node_weights:
                    e.u32(w)
            elif b.alg == CRUSH_BUCKET_STRAW:
                for w, s in zip(b.item_weights, b.straws):
                    e.u32(w).u32(s)
            else:
                for w in b.item_weights:
                    e.u32(w)
        for r in self.rules:
            if r is None:
                e.u32(0)
                continue
            e.u32(1).u32(len(r.steps)).u8(r.ruleset).u8(r.type).u8(r.min_size).u8(r.max_size)
            for s in r.steps:
                e.u32(s.op).s32(s.arg1).s32(s.arg2)
        for names in (self.type_names, self.names, self.rule_names):
            e.u32(len(names))
            for k in sorted(names):
                e.s32(k).string(names[k])
        e.u32(self.choose_local_tries).u32(self.choose_local_fallback_tries)
        e.u32(self.choose_total_tries).u32(self.chooseleaf_descend_once)
        e.u8(self.chooseleaf_vary_r).u8(self.straw_calc_version).u32(self.allowed_bucket_algs)
        e.u8(self.chooseleaf_stable)
        e.u32(len(self.class_map))
        for k in sorted(self.class_map):
            e.s32(k).s32(self.class_map[k])
        e.u32(len(self.class_names))
        for k in sorted(self.class_names):
            e.s32(k).string(self.class_names[k])
        e.u32(len(self.class_bucket))
        for k in sorted(self.class_bucket):
            inner = self.class_bucket[k]
            e.s32(k).u32(len(inner))
            for c in sorted(inner):
                e.s32(c).s32(inner[c])
        e.u32(len(self.choose_args))
        for idx in sorted(self.choose_args):
            args = self.choose_args[idx]
            live = [(bi, a) for bi, a in sorted(args.items()) if a.weight_set or a.ids]
            e.s64(idx).u32(len(live))
            for bi, a in live:
                e.u32(bi).u32(len(a.weight_set))
                for ws in a.weight_set:
                    e.u32(len(ws))
                    for w in ws:
                        e.u32(w)
                e.u32(len(a.ids))
                for i in a.ids:
                    e.s32(i)
        return e

    def to_bytes(self) -> bytes:
        """:meth:`encode` into a fresh buffer."""
        return self.encode(Encoder()).bytes()

    # -- lookups ------------------------------------------------------------
    @property
    def max_buckets(self) -> int:
        return len(self.buckets)

    @property
    def max_rules(self) -> int:
        return len(self.rules)

    def get_bucket(self, bucket_id: int) -> CrushBucket | None:
        """The bucket with (negative) id ``bucket_id``, or ``None``."""
        i = -1 - bucket_id
        if 0 <= i < len(self.buckets):
            return self.buckets[i]
        return None

    def rule_exists(self, ruleno: int) -> bool:
        return 0 <= ruleno < len(self.rules) and self.rules[ruleno] is not None

    def get_rule_id(self, name: str) -> int:
        """Rule id for ``name``; raises :class:`KeyError` if there is none."""
        for i, n in self.rule_names.items():
            if n == name:
                return i
        raise KeyError(name)

    def get_item_id(self, name: str) -> int:
        """Item (device or bucket) id for ``name``; raises :class:`KeyError`."""
        for i, n in self.names.items():
            if n == name:
                return i
        raise KeyError(name)

    def get_item_name(self, item: int) -> str | None:
        return self.names.get(item)

    def get_type_name(self, type_id: int) -> str | None:
        return self.type_names.get(type_id)

    def get_item_class(self, item: int) -> str | None:
        """Device class name of ``item`` (``CrushWrapper::get_item_class``), or ``None``."""
        c = self.class_map.get(item)
        return None if c is None else self.class_names.get(c)

    def check_item_present(self, item: int) -> bool:
        """``CrushWrapper::check_item_present``: does any bucket hold ``item``?"""
        return any(b is not None and item in b.items for b in self.buckets)

    def find_rule(self, ruleset: int, type: int, size: int) -> int:  # noqa: A002
        """Rule id for a pool's ``crush_rule``, ``type`` and ``size``, or -1.

        ``crush_find_rule`` (``mapper.c``) as ``CrushWrapper::find_rule`` calls it from
        ``OSDMap::_pg_to_raw_osds`` in Pacific: the first rule whose mask has this
        ruleset and type and whose ``[min_size, max_size]`` holds ``size``.  Pacific
        monitors only accept maps whose rulesets equal their rule ids, so this is the
        rule at index ``ruleset`` when its type and sizes fit.
        """
        for i, r in enumerate(self.rules):
            if (
                r is not None
                and r.ruleset == ruleset
                and r.type == type
                and r.min_size <= size <= r.max_size
            ):
                return i
        return -1

    def choose_args_get_with_fallback(self, index: int) -> dict[int, ChooseArg] | None:
        """``CrushWrapper::choose_args_get_with_fallback``: the set for ``index`` (a pool
        id), else the default set (-1), else ``None`` (canonical weights)."""
        ca = self.choose_args.get(index)
        if ca is None:
            ca = self.choose_args.get(DEFAULT_CHOOSE_ARGS)
        return ca

    # -- mapping ------------------------------------------------------------
    def do_rule(
        self,
        ruleno: int,
        x: int,
        result_max: int,
        weights: Sequence[int],
        choose_args_index: int | None = None,
    ) -> list[int]:
        """``crush_do_rule``: up to ``result_max`` items for input ``x`` under rule ``ruleno``.

        ``weights[i]`` is device ``i``'s 16.16 weight (0x10000 = fully in, 0 = out;
        devices past the end are out).  ``choose_args_index`` selects a choose_args set
        as ``CrushWrapper::do_rule`` does (the pool id; falls back to the default -1
        set, then to none); ``None`` uses the canonical bucket weights.  Indep rules
        leave ``CRUSH_ITEM_NONE`` (0x7fffffff) in positions they could not fill.
        A rule id that does not exist yields ``[]``.  A malformed map whose rule would
        loop (near) forever raises :class:`DecodeError` (``mapper.MAX_WORK``).  See ``mapper.py``.
        """
        from .mapper import Mapper

        mp = self._mapper
        if mp is None:
            mp = self._mapper = Mapper(self)
        args = None
        if choose_args_index is not None:
            args = self.choose_args_get_with_fallback(choose_args_index)
        return mp.do_rule(ruleno, x, result_max, weights, args)


# -- helpers --------------------------------------------------------------------


def _check_acyclic(buckets: list[CrushBucket | None]) -> None:
    """Raise :class:`DecodeError` if a bucket (transitively) contains itself.

    Ceph never builds such a map, and its mapper would descend forever; we refuse the
    map rather than hang.  Items naming missing buckets are left to the mapper.
    """
    n = len(buckets)
    state = [0] * n  # 0 unseen, 1 on the DFS stack, 2 done
    for root in range(n):
        if state[root] or buckets[root] is None:
            continue
        stack = [(root, iter(buckets[root].items))]
        state[root] = 1
        while stack:
            bi, it = stack[-1]
            for item in it:
                ci = -1 - item
                if item >= 0 or ci >= n or buckets[ci] is None:
                    continue
                if state[ci] == 1:
                    raise DecodeError(f"crush map: bucket {-1 - ci} contains itself")
                if state[ci] == 0:
                    state[ci] = 1
                    stack.append((ci, iter(buckets[ci].items)))
                    break
            else:
                state[bi] = 2
                stack.pop()


def _decode_bucket(d: Decoder) -> CrushBucket | None:
    """``CrushWrapper::decode_crush_bucket``."""
    alg = d.u32()
    if alg == 0:
        return None
    if alg not in BUCKET_ALG_NAMES:
        raise DecodeError(f"crush map: unsupported bucket algorithm {alg}")
    bid = d.s32()
    btype = d.u16()
    balg = d.u8()
    bhash = d.u8()
    weight = d.u32()
    size = d.count(4)
    if balg != alg:
        raise DecodeError(f"crush bucket {bid}: alg {balg} differs from header alg {alg}")
    items = [d.s32() for _ in range(size)]
    b = CrushBucket(id=bid, type=btype, alg=alg, hash=bhash, weight=weight, items=items)
    if alg == CRUSH_BUCKET_UNIFORM:
        b.item_weight = d.u32()
    elif alg == CRUSH_BUCKET_LIST:
        d.need(8 * size, "list bucket weights")
        iw = b.item_weights
        sw = b.sum_weights
        for _ in range(size):
            iw.append(d.u32())
            sw.append(d.u32())
    elif alg == CRUSH_BUCKET_TREE:
        b.num_nodes = d.u8()
        d.need(4 * b.num_nodes, "tree bucket node weights")
        b.node_weights = [d.u32() for _ in range(b.num_nodes)]
    elif alg == CRUSH_BUCKET_STRAW:
        d.need(8 * size, "straw bucket weights")
        iw = b.item_weights
        st = b.straws
        for _ in range(size):
            iw.append(d.u32())
            st.append(d.u32())
    else:  # straw2
        d.need(4 * size, "straw2 bucket weights")
        b.item_weights = [d.u32() for _ in range(size)]
    return b


def _decode_rule(d: Decoder) -> CrushRule | None:
    if d.u32() == 0:
        return None
    n = d.u32()
    ruleset = d.u8()
    rtype = d.u8()
    min_size = d.u8()
    max_size = d.u8()
    d.need(12 * n, "rule steps")
    steps = [CrushRuleStep(d.u32(), d.s32(), d.s32()) for _ in range(n)]
    return CrushRule(ruleset, rtype, min_size, max_size, steps)


def _decode_name_map(d: Decoder) -> dict[int, str]:
    """``decode_32_or_64_string_map``: old encoders wrote 64-bit keys, so a zero string
    length means "that was the key's high half; the real length follows" (names are
    never empty)."""
    n = d.count(8)
    out: dict[int, str] = {}
    for _ in range(n):
        key = d.s32()
        ln = d.u32()
        if ln == 0:
            ln = d.u32()
        out[key] = d.raw(ln).decode("utf-8", "surrogateescape")
    return out


def _decode_choose_arg_map(
    d: Decoder, buckets: list[CrushBucket | None]
) -> dict[int, ChooseArg]:
    n = d.count(12)
    out: dict[int, ChooseArg] = {}
    for _ in range(n):
        bucket_index = d.u32()
        if bucket_index >= len(buckets):
            raise DecodeError(f"choose_args: bucket index {bucket_index} >= max_buckets")
        npos = d.count(4)
        weight_set = []
        for _ in range(npos):
            k = d.count(4)
            weight_set.append([d.u32() for _ in range(k)])
        k = d.count(4)
        ids = [d.s32() for _ in range(k)]
        b = buckets[bucket_index]
        # the mapper indexes these by bucket position; Ceph keeps them in step
        size = b.size if b is not None else None
        if ids and len(ids) != size:
            raise DecodeError(f"choose_args: {len(ids)} ids for bucket index {bucket_index}")
        if b is not None and b.alg == CRUSH_BUCKET_STRAW2:
            for ws in weight_set:
                if len(ws) != size:
                    raise DecodeError(
                        f"choose_args: weight set of {len(ws)} for bucket of {size}"
                    )
        out[bucket_index] = ChooseArg(weight_set, ids)
    return out
