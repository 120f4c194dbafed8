"""``crush_do_rule``: CRUSH placement, step for step as ``net/ceph/crush/mapper.c``.

The same algorithm lives in Ceph's ``src/crush/mapper.c``; both must agree bit for bit,
and so must we.  Differences from the C code are only where C would read out of bounds
or dereference NULL on a malformed map (an item naming a missing bucket, a tree bucket
whose nodes point past its items): we treat those items as "bad" the way C treats an
item >= ``max_devices``, so a hostile map gives short results rather than exceptions.

:class:`Mapper` precomputes one choose function per bucket (closures over plain lists
and ints: placement runs the hash tens of times per input, so attribute look-ups count).
``CrushMap.do_rule`` builds one on first use; treat the map as immutable afterwards.
"""

from __future__ import annotations

from typing import Callable, Sequence

from ...errors import DecodeError
from .hash import CRUSH_HASH_RJENKINS1, crush_hash32_2, crush_hash32_3, crush_hash32_4
from .ln import straw2_ln_table
from .map import (
    CRUSH_BUCKET_LIST,
    CRUSH_BUCKET_STRAW,
    CRUSH_BUCKET_STRAW2,
    CRUSH_BUCKET_TREE,
    CRUSH_BUCKET_UNIFORM,
    CRUSH_ITEM_NONE,
    CRUSH_ITEM_UNDEF,
    CRUSH_RULE_CHOOSE_FIRSTN,
    CRUSH_RULE_CHOOSE_INDEP,
    CRUSH_RULE_CHOOSELEAF_FIRSTN,
    CRUSH_RULE_CHOOSELEAF_INDEP,
    CRUSH_RULE_EMIT,
    CRUSH_RULE_SET_CHOOSE_LOCAL_FALLBACK_TRIES,
    CRUSH_RULE_SET_CHOOSE_LOCAL_TRIES,
    CRUSH_RULE_SET_CHOOSE_TRIES,
    CRUSH_RULE_SET_CHOOSELEAF_STABLE,
    CRUSH_RULE_SET_CHOOSELEAF_TRIES,
    CRUSH_RULE_SET_CHOOSELEAF_VARY_R,
    CRUSH_RULE_TAKE,
    ChooseArg,
    CrushBucket,
    CrushMap,
    _check_acyclic,
)

S64_MIN = -(1 << 63)

#: Bound on the work of one ``do_rule`` call, counted in bucket items looked at (a choice
#: in a bucket of n items costs n, a retry in an empty bucket 1; each is about one hash,
#: up to 10 us here, so the bound is ~10 s of CPU).  A healthy map needs a few hundred;
#: the golden and corpus maps with every device out need up to ~50,000.  A malformed map
#: (a rule step asking for 2**31 replicas, choose_total_tries 2**32-1 ...) makes the C
#: code loop for minutes and this one for hours: past the bound ``do_rule`` raises
#: :class:`DecodeError` instead.
MAX_WORK = 1_000_000
_WORK = "work-left"  # key of the remaining budget in do_rule's per-call ``work`` dict


def _over_budget() -> DecodeError:
    return DecodeError(
        f"CRUSH placement examined more than {MAX_WORK} bucket items: malformed map "
        "(absurd replica count or retry tunables?)"
    )


# what a bucket choose returns when C would have read garbage: >= any max_devices
_BAD_ITEM = CRUSH_ITEM_NONE

# choose(x, r, arg, position, work) -> item; arg is (weights per position | None, ids | None)
ChooseFn = Callable[[int, int, "tuple | None", int, dict], int]


def _zero_hash3(a: int, b: int, c: int) -> int:
    return 0


def _zero_hash4(a: int, b: int, c: int, d: int) -> int:
    return 0


def _perm_choose(bidx: int, bid: int, items: list[int], hash3, x: int, r: int, work: dict) -> int:
    """``bucket_perm_choose``: item ``r % size`` of a per-x pseudo-random permutation.

    ``work[bidx]`` is ``[perm_n, perm]`` (the kernel's ``crush_work_bucket``), fresh for
    every ``do_rule`` call, so ``perm_x`` is always the current x.
    """
    size = len(items)
    pr = r % size
    st = work.get(bidx)
    if st is None or st[0] == 0:
        if pr == 0:
            # the common r=0 case skips building the permutation (perm_n 0xffff marks it)
            s = hash3(x, bid, 0) % size
            work[bidx] = [0xFFFF, [s]]
            return items[s]
        st = work[bidx] = [0, list(range(size))]
    elif st[0] == 0xFFFF:
        s0 = st[1][0]
        perm = list(range(size))
        perm[0] = s0
        perm[s0] = 0
        st[1] = perm
        st[0] = 1
    perm = st[1]
    pn = st[0]
    while pn <= pr:
        if pn < size - 1:
            i = hash3(x, bid, pn) % (size - pn)
            if i:
                perm[pn + i], perm[pn] = perm[pn], perm[pn + i]
        pn += 1
    st[0] = pn
    return items[perm[pr]]


def _make_choose(bidx: int, b: CrushBucket) -> ChooseFn:
    """The bucket's ``crush_bucket_choose`` specialised to its algorithm."""
    bid = b.id
    items = list(b.items)
    size = len(items)
    rj = b.hash == CRUSH_HASH_RJENKINS1
    hash3 = crush_hash32_3 if rj else _zero_hash3  # crush_hash32_* return 0 for unknown types
    hash4 = crush_hash32_4 if rj else _zero_hash4
    alg = b.alg

    if alg == CRUSH_BUCKET_UNIFORM:

        def choose(x, r, arg, position, work):
            return _perm_choose(bidx, bid, items, hash3, x, r, work)

    elif alg == CRUSH_BUCKET_LIST:
        iw = list(b.item_weights)
        sw = list(b.sum_weights)

        def choose(x, r, arg, position, work):
            for i in range(size - 1, -1, -1):
                w = ((hash4(x, items[i], r, bid) & 0xFFFF) * sw[i]) >> 16
                if w < iw[i]:
                    return items[i]
            return items[0]

    elif alg == CRUSH_BUCKET_TREE:
        nw = list(b.node_weights)
        nn = len(nw)

        def choose(x, r, arg, position, work):
            n = nn >> 1
            while not n & 1:
                if n == 0 or n >= nn:
                    return _BAD_ITEM
                t = (hash4(x, n, r, bid) * nw[n]) >> 32
                half = (n & -n) >> 1  # 1 << (height(n) - 1)
                left = n - half
                if left < nn and t < nw[left]:
                    n = left
                else:
                    n += half
            i = n >> 1
            return items[i] if i < size else _BAD_ITEM

    elif alg == CRUSH_BUCKET_STRAW:
        straws = list(b.straws)

        def choose(x, r, arg, position, work):
            high = 0
            high_draw = -1
            for i in range(size):
                draw = (hash3(x, items[i], r) & 0xFFFF) * straws[i]
                if draw > high_draw:
                    high = i
                    high_draw = draw
            return items[high]

    elif alg == CRUSH_BUCKET_STRAW2:
        iw = list(b.item_weights)
        ln_tbl = straw2_ln_table()

        def choose(x, r, arg, position, work):
            weights = iw
            ids = items
            if arg is not None:
                ws, aids = arg
                if ws:
                    weights = ws[position] if position < len(ws) else ws[-1]
                if aids:
                    ids = aids
            high = 0
            high_draw = 0
            for i in range(size):
                w = weights[i]
                if w:
                    # ln <= 0; C's div64_s64 truncates toward zero
                    draw = -(-ln_tbl[hash3(x, ids[i], r) & 0xFFFF] // w)
                else:
                    draw = S64_MIN
                if i == 0 or draw > high_draw:
                    high = i
                    high_draw = draw
            return items[high]

    else:  # pragma: no cover - decode rejects other algs

        def choose(x, r, arg, position, work):
            return items[0]

    return choose


class Mapper:
    """Placement engine for one :class:`CrushMap` (see module docstring)."""

    def __init__(self, cmap: CrushMap):
        # decode checks this too; a map edited in memory could still loop forever
        _check_acyclic(cmap.buckets)
        self.max_devices = cmap.max_devices
        self.max_buckets = len(cmap.buckets)
        # per bucket index: type (None for a hole), size, alg, choose fn, items, id
        self.btype: list[int | None] = []
        self.bsize: list[int] = []
        self.balg: list[int] = []
        self.bchoose: list[ChooseFn | None] = []
        self.bitems: list[list[int]] = []
        self.bid: list[int] = []
        self.bhash: list[int] = []
        for i, b in enumerate(cmap.buckets):
            self.bhash.append(b.hash if b is not None else 0)
            if b is None:
                self.btype.append(None)
                self.bsize.append(0)
                self.balg.append(0)
                self.bchoose.append(None)
                self.bitems.append([])
                self.bid.append(-1 - i)
            else:
                self.btype.append(b.type)
                self.bsize.append(len(b.items))
                self.balg.append(b.alg)
                self.bchoose.append(_make_choose(i, b) if b.items else None)
                self.bitems.append(list(b.items))
                self.bid.append(b.id)
        self.rules = cmap.rules
        self.choose_local_tries = cmap.choose_local_tries
        self.choose_local_fallback_tries = cmap.choose_local_fallback_tries
        self.choose_total_tries = cmap.choose_total_tries
        self.chooseleaf_descend_once = cmap.chooseleaf_descend_once
        self.chooseleaf_vary_r = cmap.chooseleaf_vary_r
        self.chooseleaf_stable = cmap.chooseleaf_stable
        self._args_cache: dict[int, tuple[object, list]] = {}

    # -- choose_args ----------------------------------------------------------
    def _args_list(self, ca: dict[int, ChooseArg]) -> list:
        """Per bucket index ``(weight_set or None, ids or None)`` or ``None``, cached."""
        key = id(ca)
        hit = self._args_cache.get(key)
        if hit is not None and hit[0] is ca:
            return hit[1]
        lst: list = [None] * self.max_buckets
        for bidx, a in ca.items():
            if a.weight_set or a.ids:
                lst[bidx] = (a.weight_set or None, a.ids or None)
        self._args_cache[key] = (ca, lst)
        return lst

    # -- helpers ----------------------------------------------------------------
    def _item_type(self, item: int) -> int | None:
        """Type of ``item``: 0 for a device, the bucket's type, ``None`` if no such bucket."""
        if item >= 0:
            return 0
        bi = -1 - item
        if bi < self.max_buckets:
            return self.btype[bi]
        return None

    @staticmethod
    def _is_out(weight: Sequence[int], weight_max: int, item: int, x: int) -> bool:
        """``is_out``: a device is out if past the weight vector, at weight 0, or loses a
        hash draw against a fractional weight."""
        if item >= weight_max:
            return True
        w = weight[item]
        if w >= 0x10000:
            return False
        if w == 0:
            return True
        return (crush_hash32_2(x, item) & 0xFFFF) >= w

    # -- firstn -----------------------------------------------------------------
    def _choose_firstn(
        self,
        work: dict,
        bidx: int,
        weight: Sequence[int],
        weight_max: int,
        x: int,
        numrep: int,
        type_: int,
        out: list[int],
        obase: int,
        outpos: int,
        out_size: int,
        tries: int,
        recurse_tries: int,
        local_retries: int,
        local_fallback_retries: int,
        recurse_to_leaf: bool,
        vary_r: int,
        stable: int,
        out2: list[int] | None,
        o2base: int,
        parent_r: int,
        args: list | None,
    ) -> int:
        """``crush_choose_firstn``: fill ``out[obase+outpos:]`` with up to ``numrep``
        distinct items of ``type_``; returns the new ``outpos``."""
        btype = self.btype
        bsize = self.bsize
        bchoose = self.bchoose
        max_devices = self.max_devices
        count = out_size
        rep = 0 if stable else outpos
        item = 0
        while rep < numrep and count > 0:
            ftotal = 0
            skip_rep = False
            while True:  # retry_descent
                retry_descent = False
                inb = bidx
                flocal = 0
                while True:  # retry_bucket
                    collide = False
                    retry_bucket = False
                    r = rep + parent_r + ftotal
                    insize = bsize[inb]
                    budget = work[_WORK] - (insize or 1)
                    if budget < 0:
                        raise _over_budget()
                    work[_WORK] = budget
                    if insize == 0:
                        reject = True
                    else:
                        if (
                            local_fallback_retries > 0
                            and flocal >= (insize >> 1)
                            and flocal > local_fallback_retries
                        ):
                            item = _perm_choose(
                                inb, self.bid[inb], self.bitems[inb], self._hash3_of(inb), x, r, work
                            )
                        else:
                            item = bchoose[inb](
                                x, r, args[inb] if args is not None else None, outpos, work
                            )
                        if item >= max_devices:
                            skip_rep = True
                            break
                        if item < 0:
                            bi = -1 - item
                            itemtype = btype[bi] if bi < self.max_buckets else None
                            if itemtype is None:
                                skip_rep = True  # C would read a missing bucket
                                break
                        else:
                            itemtype = 0
                        if itemtype != type_:
                            if item >= 0:
                                skip_rep = True
                                break
                            inb = -1 - item
                            retry_bucket = True
                            continue
                        for i in range(obase, obase + outpos):
                            if out[i] == item:
                                collide = True
                                break
                        reject = False
                        if not collide and recurse_to_leaf:
                            if item < 0:
                                sub_r = (r >> (vary_r - 1)) if vary_r else 0
                                if (
                                    self._choose_firstn(
                                        work, -1 - item, weight, weight_max, x,
                                        1 if stable else outpos + 1, 0,
                                        out2, o2base, outpos, count,
                                        recurse_tries, 0, local_retries,
                                        local_fallback_retries, False, vary_r, stable,
                                        None, 0, sub_r, args,
                                    )
                                    <= outpos
                                ):
                                    reject = True  # no leaf under it
                            else:
                                out2[o2base + outpos] = item  # already a leaf
                        if not reject and not collide and itemtype == 0:
                            reject = self._is_out(weight, weight_max, item, x)
                    if reject or collide:
                        ftotal += 1
                        flocal += 1
                        if collide and flocal <= local_retries:
                            retry_bucket = True
                        elif (
                            local_fallback_retries > 0
                            and flocal <= insize + local_fallback_retries
                        ):
                            retry_bucket = True
                        elif ftotal < tries:
                            retry_descent = True
                        else:
                            skip_rep = True
                    if not retry_bucket:
                        break
                if not retry_descent:
                    break
            rep += 1
            if skip_rep:
                continue
            out[obase + outpos] = item
            outpos += 1
            count -= 1
        return outpos

    def _hash3_of(self, bidx: int):
        # only the local-fallback path needs this outside the per-bucket closures
        return crush_hash32_3 if self.bhash[bidx] == CRUSH_HASH_RJENKINS1 else _zero_hash3

    # -- indep ------------------------------------------------------------------
    def _choose_indep(
        self,
        work: dict,
        bidx: int,
        weight: Sequence[int],
        weight_max: int,
        x: int,
        left: int,
        numrep: int,
        type_: int,
        out: list[int],
        obase: int,
        outpos: int,
        tries: int,
        recurse_tries: int,
        recurse_to_leaf: bool,
        out2: list[int] | None,
        o2base: int,
        parent_r: int,
        args: list | None,
    ) -> None:
        """``crush_choose_indep``: positionally stable choice into
        ``out[obase+outpos : obase+outpos+left]``; unfilled slots become CRUSH_ITEM_NONE."""
        btype = self.btype
        bsize = self.bsize
        balg = self.balg
        bchoose = self.bchoose
        max_devices = self.max_devices
        endpos = outpos + left
        for rep in range(outpos, endpos):
            out[obase + rep] = CRUSH_ITEM_UNDEF
            if out2 is not None:
                out2[o2base + rep] = CRUSH_ITEM_UNDEF
        ftotal = 0
        while left > 0 and ftotal < tries:
            for rep in range(outpos, endpos):
                if out[obase + rep] != CRUSH_ITEM_UNDEF:
                    continue
                inb = bidx
                while True:
                    # the choice keys on the position, even in the nested call
                    r = rep + parent_r
                    insize = bsize[inb]
                    if balg[inb] == CRUSH_BUCKET_UNIFORM and insize % numrep == 0:
                        r += (numrep + 1) * ftotal
                    else:
                        r += numrep * ftotal
                    budget = work[_WORK] - (insize or 1)
                    if budget < 0:
                        raise _over_budget()
                    work[_WORK] = budget
                    if insize == 0:
                        break
                    item = bchoose[inb](x, r, args[inb] if args is not None else None, outpos, work)
                    if item >= max_devices:
                        out[obase + rep] = CRUSH_ITEM_NONE
                        if out2 is not None:
                            out2[o2base + rep] = CRUSH_ITEM_NONE
                        left -= 1
                        break
                    if item < 0:
                        bi = -1 - item
                        itemtype = btype[bi] if bi < self.max_buckets else None
                    else:
                        itemtype = 0
                    if itemtype != type_:
                        if item >= 0 or itemtype is None:
                            out[obase + rep] = CRUSH_ITEM_NONE
                            if out2 is not None:
                                out2[o2base + rep] = CRUSH_ITEM_NONE
                            left -= 1
                            break
                        inb = -1 - item
                        continue
                    collide = False
                    for i in range(obase + outpos, obase + endpos):
                        if out[i] == item:
                            collide = True
                            break
                    if collide:
                        break
                    if recurse_to_leaf:
                        if item < 0:
                            self._choose_indep(
                                work, -1 - item, weight, weight_max, x, 1, numrep, 0,
                                out2, o2base, rep, recurse_tries, 0, False, None, 0, r, args,
                            )
                            if out2[o2base + rep] == CRUSH_ITEM_NONE:
                                break  # placed nothing; no leaf
                        else:
                            out2[o2base + rep] = item
                    if itemtype == 0 and self._is_out(weight, weight_max, item, x):
                        break
                    out[obase + rep] = item
                    left -= 1
                    break
            ftotal += 1
        for rep in range(outpos, endpos):
            if out[obase + rep] == CRUSH_ITEM_UNDEF:
                out[obase + rep] = CRUSH_ITEM_NONE
            if out2 is not None and out2[o2base + rep] == CRUSH_ITEM_UNDEF:
                out2[o2base + rep] = CRUSH_ITEM_NONE

    # -- rule interpreter ---------------------------------------------------------
    def do_rule(
        self,
        ruleno: int,
        x: int,
        result_max: int,
        weight: Sequence[int],
        choose_args: dict[int, ChooseArg] | None = None,
    ) -> list[int]:
        """``crush_do_rule`` with an explicit choose_args set (``None`` = canonical weights).

        Raises :class:`DecodeError` if the map makes it do more than :data:`MAX_WORK`."""
        if ruleno < 0 or ruleno >= len(self.rules) or result_max <= 0:
            return []
        rule = self.rules[ruleno]
        if rule is None:
            return []
        args = self._args_list(choose_args) if choose_args else None
        x &= 0xFFFFFFFF
        weight_max = len(weight)
        work: dict = {_WORK: MAX_WORK}
        result: list[int] = []
        w = [0] * result_max
        o = [0] * result_max
        c = [0] * result_max
        wsize = 0
        # choose_total_tries counted retries, not tries: add one
        choose_tries = self.choose_total_tries + 1
        choose_leaf_tries = 0
        local_retries = self.choose_local_tries
        local_fallback_retries = self.choose_local_fallback_tries
        vary_r = self.chooseleaf_vary_r
        stable = self.chooseleaf_stable
        max_buckets = self.max_buckets

        for step in rule.steps:
            op = step.op
            arg1 = step.arg1
            if op == CRUSH_RULE_TAKE:
                if (0 <= arg1 < self.max_devices) or (
                    0 <= -1 - arg1 < max_buckets and self.btype[-1 - arg1] is not None
                ):
                    w[0] = arg1
                    wsize = 1
            elif op == CRUSH_RULE_SET_CHOOSE_TRIES:
                if arg1 > 0:
                    choose_tries = arg1
            elif op == CRUSH_RULE_SET_CHOOSELEAF_TRIES:
                if arg1 > 0:
                    choose_leaf_tries = arg1
            elif op == CRUSH_RULE_SET_CHOOSE_LOCAL_TRIES:
                if arg1 >= 0:
                    local_retries = arg1
            elif op == CRUSH_RULE_SET_CHOOSE_LOCAL_FALLBACK_TRIES:
                if arg1 >= 0:
                    local_fallback_retries = arg1
            elif op == CRUSH_RULE_SET_CHOOSELEAF_VARY_R:
                if arg1 >= 0:
                    vary_r = arg1
            elif op == CRUSH_RULE_SET_CHOOSELEAF_STABLE:
                if arg1 >= 0:
                    stable = arg1
            elif op in (
                CRUSH_RULE_CHOOSE_FIRSTN,
                CRUSH_RULE_CHOOSELEAF_FIRSTN,
                CRUSH_RULE_CHOOSE_INDEP,
                CRUSH_RULE_CHOOSELEAF_INDEP,
            ):
                if wsize == 0:
                    continue
                firstn = op in (CRUSH_RULE_CHOOSE_FIRSTN, CRUSH_RULE_CHOOSELEAF_FIRSTN)
                recurse_to_leaf = op in (CRUSH_RULE_CHOOSELEAF_FIRSTN, CRUSH_RULE_CHOOSELEAF_INDEP)
                osize = 0
                for i in range(wsize):
                    numrep = arg1
                    if numrep <= 0:
                        numrep += result_max
                        if numrep <= 0:
                            continue
                    bno = -1 - w[i]
                    if bno < 0 or bno >= max_buckets or self.btype[bno] is None:
                        continue  # probably CRUSH_ITEM_NONE
                    if firstn:
                        if choose_leaf_tries:
                            recurse_tries = choose_leaf_tries
                        elif self.chooseleaf_descend_once:
                            recurse_tries = 1
                        else:
                            recurse_tries = choose_tries
                        osize += self._choose_firstn(
                            work, bno, weight, weight_max, x, numrep, step.arg2,
                            o, osize, 0, result_max - osize,
                            choose_tries, recurse_tries, local_retries,
                            local_fallback_retries, recurse_to_leaf, vary_r, stable,
                            c, osize, 0, args,
                        )
                    else:
                        out_size = min(numrep, result_max - osize)
                        self._choose_indep(
                            work, bno, weight, weight_max, x, out_size, numrep, step.arg2,
                            o, osize, 0, choose_tries,
                            choose_leaf_tries if choose_leaf_tries else 1,
                            recurse_to_leaf, c, osize, 0, args,
                        )
                        osize += out_size
                if recurse_to_leaf:
                    o[:osize] = c[:osize]
                o, w = w, o
                wsize = osize
            elif op == CRUSH_RULE_EMIT:
                for i in range(wsize):
                    if len(result) >= result_max:
                        break
                    result.append(w[i])
                wsize = 0
            # unknown ops are skipped, as in C
        return result
