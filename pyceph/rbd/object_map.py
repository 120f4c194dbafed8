"""RBD object map (``object-map`` / ``fast-diff`` features): a 2-bit state per data object.

On disk the map is the object ``rbd_object_map.<image id>`` (HEAD) or
``rbd_object_map.<image id>.<snap id as %016x>`` (one per snapshot), holding a
``ceph::BitVector<2>`` (``src/common/bit_vector.hpp``, see :class:`BitVector2`).
The ``rbd`` object class reads and edits it (``object_map_load``, ``object_map_save``,
``object_map_resize``, ``object_map_update``, ``object_map_snap_add``,
``object_map_snap_remove`` in ``src/cls/rbd/cls_rbd.cc``).

:class:`ObjectMap` keeps one map in memory and in step with the OSD the way librbd
does (``src/librbd/ObjectMap.cc`` and ``src/librbd/object_map/*Request.cc``):

- while a client owns the exclusive lock it also holds the cls lock ``rbd_lock``
  (exclusive, empty cookie, empty tag) on the HEAD map object
  (``object_map/LockRequest.cc``: a stale holder is broken), and every HEAD update
  carries ``lock.assert_locked`` of that lock in the same compound op;
- a write first moves its objects to EXISTS; a removal moves them to PENDING, removes
  them, then moves PENDING -> NONEXISTENT; updates that would change nothing are not
  sent (``ObjectMap::update_required``);
- when the map cannot be kept (an update fails, the map is unreadable or too small)
  the header gets the flags ``RBD_FLAG_OBJECT_MAP_INVALID`` (+ ``FAST_DIFF_INVALID``
  with fast-diff) through ``rbd.set_flags`` (``object_map/InvalidateRequest.cc``); for
  HEAD that op asserts the header's exclusive lock (``rbd_lock``, our cookie, tag
  ``internal``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from ..encoding import Decoder, Encoder, crc32c
from ..errors import DecodeError, Error, ObjectNotFound, make_ex
from ..osd import ops as O
from ..osd.ops import CloneInfo, SnapSet  # noqa: F401 - re-exported for diff and tests
from . import cls_client as cls
from .exclusive_lock import RBD_LOCK_NAME, RBD_LOCK_TAG
from .features import RBD_FLAG_FAST_DIFF_INVALID, RBD_FLAG_OBJECT_MAP_INVALID

log = logging.getLogger("pyceph.rbd.object_map")

CEPH_NOSNAP = cls.CEPH_NOSNAP

#: object states (``src/include/rbd/object_map_types.h``)
OBJECT_NONEXISTENT = 0
OBJECT_EXISTS = 1
OBJECT_PENDING = 2
OBJECT_EXISTS_CLEAN = 3
STATE_NAMES = {0: "nonexistent", 1: "exists", 2: "pending", 3: "exists_clean"}

#: ``RBD_OBJECT_MAP_PREFIX`` (src/include/rbd_types.h)
RBD_OBJECT_MAP_PREFIX = "rbd_object_map."
#: ``cls::rbd::MAX_OBJECT_MAP_OBJECT_COUNT``
MAX_OBJECT_MAP_OBJECT_COUNT = 256000000
#: ``object_map/UpdateRequest.cc``: updates are cut in batches of this many objects
MAX_OBJECTS_PER_UPDATE = 256 * 1024

OBJECT_MAP_INVALID_FLAGS = RBD_FLAG_OBJECT_MAP_INVALID | RBD_FLAG_FAST_DIFF_INVALID


def object_map_name(image_id: str, snap_id: int = CEPH_NOSNAP) -> str:
    """``rbd_object_map.<id>`` for HEAD, ``rbd_object_map.<id>.<snap_id %016x>`` for a
    snapshot (``ObjectMap::object_map_name``)."""
    oid = RBD_OBJECT_MAP_PREFIX + image_id
    if snap_id != CEPH_NOSNAP:
        oid += f".{snap_id:016x}"
    return oid


# ---------------------------------------------------------------------------
# BitVector<2>

# byte -> byte with every EXISTS (01) pair turned into EXISTS_CLEAN (11)
_SNAP_ADD_TABLE = bytes(
    sum(((3 if (b >> s) & 3 == OBJECT_EXISTS else (b >> s) & 3) << s) for s in (0, 2, 4, 6)) for b in range(256)
)


class BitVector2:
    """``ceph::BitVector<2>``: ``size`` 2-bit elements, four per byte, element 0 in the
    two most significant bits of byte 0.

    Encoding (``BitVector::encode``)::

        header   bufferlist (u32 len=14): ENCODE_START(1,1) u64 size
        data     ceil(size/4) raw bytes (no length prefix)
        footer   bufferlist: u32 header_crc, u32 n, n x u32 data_crc   (empty when crcs are off)

    ``header_crc`` is ``ceph_crc32c(0, header body)`` (the 14 bytes after the length),
    each ``data_crc`` covers one 4096-byte block of data, seed 0.  ``object_map_load``
    replies without crcs (empty footer); the OSD writes the map with them.
    """

    BLOCK_SIZE = 4096
    HEADER_LENGTH = 18

    __slots__ = ("size", "data")

    def __init__(self, size: int = 0, data: bytes | bytearray | None = None):
        self.size = 0
        self.data = bytearray()
        if data is not None:
            self.data = bytearray(data)
            self.size = size
            if len(self.data) != (size + 3) // 4:
                raise ValueError(f"BitVector2 data is {len(self.data)} bytes, {size} elements need {(size + 3) // 4}")
        else:
            self.resize(size)

    # -- elements ----------------------------------------------------------------
    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> int:
        if not 0 <= i < self.size:
            raise IndexError(f"object {i} outside a map of {self.size}")
        return (self.data[i >> 2] >> ((3 - (i & 3)) << 1)) & 3

    def __setitem__(self, i: int, v: int) -> None:
        if not 0 <= i < self.size:
            raise IndexError(f"object {i} outside a map of {self.size}")
        shift = (3 - (i & 3)) << 1
        b = self.data[i >> 2]
        self.data[i >> 2] = (b & ~(3 << shift) & 0xFF) | ((v & 3) << shift)

    def __iter__(self):
        data = self.data
        for i in range(self.size):
            yield (data[i >> 2] >> ((3 - (i & 3)) << 1)) & 3

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BitVector2) and self.size == other.size and self.data == other.data

    def copy(self) -> "BitVector2":
        return BitVector2(self.size, bytes(self.data))

    def to_list(self) -> list[int]:
        return list(self)

    @classmethod
    def from_states(cls, states: Sequence[int]) -> "BitVector2":
        bv = cls(len(states))
        for i, s in enumerate(states):
            if s:
                bv[i] = s
        return bv

    def resize(self, size: int, fill: int = 0) -> None:
        """Grow (new elements = ``fill``) or shrink to ``size`` elements.  Stale bits of
        a partial last byte are cleared so that the encoding is canonical."""
        old = self.size
        nbytes = (size + 3) // 4
        if nbytes > len(self.data):
            self.data.extend(bytes(nbytes - len(self.data)))
        else:
            del self.data[nbytes:]
        self.size = size
        if size < old and size & 3:
            keep = (size & 3) << 1
            self.data[-1] &= (0xFF << (8 - keep)) & 0xFF
        if fill and size > old:
            for i in range(old, size):
                self[i] = fill

    # -- encoding ----------------------------------------------------------------
    def _header(self) -> bytes:
        e = Encoder()
        with e.start(1, 1):
            e.u64(self.size)
        return e.bytes()

    def data_crcs(self) -> list[int]:
        bs = self.BLOCK_SIZE
        d = bytes(self.data)
        return [crc32c(d[i : i + bs], 0) for i in range(0, len(d), bs)]

    def encode(self, crc: bool = True) -> bytes:
        """The BitVector<2> bytes; ``crc=False`` gives the crc-less form librbd sends
        to ``object_map_save``/``object_map_snap_remove``."""
        hdr = self._header()
        e = Encoder().blob(hdr).raw(bytes(self.data))
        footer = Encoder()
        if crc:
            footer.u32(crc32c(hdr, 0))
            crcs = self.data_crcs()
            footer.u32(len(crcs))
            for c in crcs:
                footer.u32(c)
        e.blob(footer.bytes())
        return e.bytes()

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview, verify_crc: bool = True) -> "BitVector2":
        """Parse a BitVector<2>; with crcs present they are checked (DecodeError on a
        mismatch, like ``BitVector::decode`` throwing malformed_input)."""
        d = Decoder(buf)
        hdr = d.blob()
        hd = Decoder(hdr)
        with hd.start("BitVector header", 1):
            size = hd.u64()
        nbytes = (size + 3) // 4
        if nbytes > d.remaining:
            raise DecodeError(f"BitVector of {size} elements needs {nbytes} data bytes, {d.remaining} left")
        data = d.raw(nbytes)
        footer = d.blob()
        bv = cls(size, data)
        if footer:
            fd = Decoder(footer)
            if fd.remaining:
                header_crc = fd.u32()
                if verify_crc and header_crc != crc32c(hdr, 0):
                    raise DecodeError("BitVector: incorrect header CRC")
            n = fd.u32() if fd.remaining else 0
            crcs = [fd.u32() for _ in range(fd.remaining // 4)]
            nblocks = (nbytes + cls.BLOCK_SIZE - 1) // cls.BLOCK_SIZE
            if len(crcs) != nblocks:
                raise DecodeError(f"BitVector: {len(crcs)} data CRCs for {nblocks} blocks (count field {n})")
            if verify_crc and crcs != bv.data_crcs():
                raise DecodeError("BitVector: invalid data block CRC")
        return bv


def update_required(state: int, new_state: int) -> bool:
    """``ObjectMap::update_required``: PENDING is never set on a NONEXISTENT object and
    NONEXISTENT only replaces PENDING."""
    if state == new_state:
        return False
    if new_state == OBJECT_PENDING and state == OBJECT_NONEXISTENT:
        return False
    if new_state == OBJECT_NONEXISTENT and state != OBJECT_PENDING:
        return False
    return True


def _apply_update(bv: BitVector2, start: int, end: int, new_state: int, current_state: int | None) -> None:
    """In-memory side of ``object_map_update`` (cls_rbd.cc / UpdateRequest): a current
    state of EXISTS also matches EXISTS_CLEAN."""
    for i in range(start, min(end, bv.size)):
        s = bv[i]
        if current_state is None or s == current_state or (
            current_state == OBJECT_EXISTS and s == OBJECT_EXISTS_CLEAN
        ):
            bv[i] = new_state


def _runs(objectnos: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, de-duplicated object numbers -> ``[(start, end)]`` runs (end exclusive)."""
    out: list[tuple[int, int]] = []
    for n in sorted(set(objectnos)):
        if out and out[-1][1] == n:
            out[-1] = (out[-1][0], n + 1)
        else:
            out.append((n, n + 1))
    return out


# ---------------------------------------------------------------------------
# list_snaps (CEPH_OSD_OP_LIST_SNAPS) — the object's clones, for check/rebuild/diff


async def list_snaps(ioctx: Any, oid: str) -> SnapSet:
    """LIST_SNAPS on ``oid`` read at CEPH_SNAPDIR (``AsyncIoctx.list_snaps``).  Raises
    ObjectNotFound if neither the head nor any clone exists."""
    return await ioctx.list_snaps(oid)


def object_state_from_snapset(
    snapset: SnapSet | None, snap_id: int, snap_ids: Sequence[int], fast_diff: bool
) -> int:
    """The state an object map must hold for an object with this snap set, at
    ``snap_id`` (``C_VerifyObjectCallback::get_object_state`` in
    ``src/librbd/operation/ObjectMapIterate.cc``).  ``snapset`` None = no object;
    ``snap_ids``: the image's existing snapshot ids."""
    if snapset is None:
        return OBJECT_NONEXISTENT
    ordered = sorted(snap_ids)

    def next_valid(s: int) -> int:
        for x in ordered:
            if x >= s:
                return x
        return CEPH_NOSNAP

    for c in snapset.clones:
        if c.cloneid == CEPH_NOSNAP:
            from_id = next_valid(snapset.seq + 1)
            to_id = CEPH_NOSNAP
        else:
            if not c.snaps:
                continue
            from_id = next_valid(c.snaps[0])
            to_id = c.snaps[-1]
        if to_id < snap_id:
            continue
        if snap_id < from_id:
            break
        if fast_diff and from_id != snap_id:
            return OBJECT_EXISTS_CLEAN
        return OBJECT_EXISTS
    return OBJECT_NONEXISTENT


def check_needs_invalidate(map_state: int, actual_state: int) -> bool:
    """``needs_invalidate`` of ``Operations::check_object_map``: a map that says an
    object (may) exist when it does not is tolerated; every other mismatch is an
    error that invalidates the map."""
    if map_state == actual_state:
        return False
    if map_state in (OBJECT_EXISTS, OBJECT_EXISTS_CLEAN) and actual_state in (OBJECT_NONEXISTENT, OBJECT_PENDING):
        return False
    return True


@dataclass
class Mismatch:
    """One object whose map state differs from what the OSD holds."""

    objectno: int
    map_state: int
    actual_state: int
    needs_invalidate: bool


# ---------------------------------------------------------------------------
# ObjectMap


class ObjectMap:
    """One image's object map (HEAD or a snapshot), in memory and on the OSD.

    ``ioctx``: the image's metadata pool ioctx (AsyncIoctx: ``execute``, ``operate``,
    ``read``, ``write_full``, ``remove``); ``lock_cookie_fn()`` returns the cookie of
    the header's exclusive lock while we own it (None otherwise) — used to assert the
    header lock when flags are written.  ``fast_diff``: the image has the fast-diff
    feature (snapshots mark objects EXISTS_CLEAN, invalidation also sets
    FAST_DIFF_INVALID).  ``flags``: the header flags for this snap id, when known.

    Errors from the OSD while keeping the map are not raised to I/O callers (librbd
    does not fail I/O for them): the map is invalidated instead.  Explicit operations
    (``load``, ``create``, ``rebuild``...) raise the typed errors of pyceph.errors.
    """

    def __init__(
        self,
        ioctx: Any,
        image_id: str,
        snap_id: int = CEPH_NOSNAP,
        lock_cookie_fn: Callable[[], str | None] | None = None,
        *,
        fast_diff: bool = True,
        flags: int = 0,
        header_oid: str | None = None,
    ):
        self.ioctx = ioctx
        self.image_id = image_id
        self.snap_id = snap_id
        self.lock_cookie_fn = lock_cookie_fn or (lambda: None)
        self.fast_diff = fast_diff
        self.flags = flags
        self.header_oid = header_oid or f"rbd_header.{image_id}"
        self.oid = object_map_name(image_id, snap_id)
        self.map = BitVector2()
        self.locked = False
        self._inflight: list[tuple[int, int, asyncio.Event]] = []

    # -- queries -------------------------------------------------------------------
    @property
    def invalid(self) -> bool:
        return bool(self.flags & RBD_FLAG_OBJECT_MAP_INVALID)

    def size(self) -> int:
        return self.map.size

    def state(self, objectno: int) -> int:
        """State of ``objectno``; IndexError beyond the map."""
        return self.map[objectno]

    def may_exist(self, objectno: int) -> bool:
        """``object_may_exist``: False only when a valid map says NONEXISTENT."""
        if self.invalid or objectno >= self.map.size:
            return True
        return self.map[objectno] != OBJECT_NONEXISTENT

    def may_not_exist(self, objectno: int) -> bool:
        """``object_may_not_exist``: True unless a valid map says EXISTS/EXISTS_CLEAN."""
        if self.invalid or objectno >= self.map.size:
            return True
        return self.map[objectno] not in (OBJECT_EXISTS, OBJECT_EXISTS_CLEAN)

    # -- helpers ---------------------------------------------------------------------
    def _assert_map_locked(self) -> O.OSDOp:
        op = cls.AssertOp(RBD_LOCK_NAME, cls.LOCK_EXCLUSIVE, "", "")
        return O.call("lock", "assert_locked", op.encode(Encoder()).bytes())

    def _map_ops(self, snap_id: int, *ops: O.OSDOp) -> list[O.OSDOp]:
        pre = [self._assert_map_locked()] if snap_id == CEPH_NOSNAP else []
        return pre + list(ops)

    async def _read_whole(self, oid: str) -> bytes:
        # READ 0~0 reads the whole object (librbd's read(oid, bl, 0, 0))
        reply = await self.ioctx.operate(oid, [O.read(0, 0)], write=False)
        return bytes(reply[0].outdata)

    async def _write_map(self, snap_id: int, *ops: O.OSDOp) -> None:
        await self.ioctx.operate(object_map_name(self.image_id, snap_id), self._map_ops(snap_id, *ops), write=True)

    # -- the HEAD map's cls lock (object_map/LockRequest.cc, UnlockRequest.cc) ----------
    async def lock(self) -> None:
        """Take ``rbd_lock`` (exclusive, empty cookie/tag) on the HEAD map object,
        breaking any other holder once.  Failures are logged, not raised (LockRequest
        completes with 0 whatever happens)."""
        if self.snap_id != CEPH_NOSNAP:
            return
        broke = False
        while True:
            try:
                await cls.lock_lock(self.ioctx, self.oid, cls.LockOp(RBD_LOCK_NAME, cls.LOCK_EXCLUSIVE, "", "", ""))
                self.locked = True
                return
            except Error as ex:
                if ex.errno == errno.EEXIST:
                    self.locked = True  # already ours
                    return
                if broke or ex.errno != errno.EBUSY:
                    log.error("failed to lock object map %s: %s", self.oid, ex)
                    return
            try:
                info = await cls.lock_get_info(self.ioctx, self.oid, RBD_LOCK_NAME)
            except ObjectNotFound:
                continue
            except Error as ex:
                log.error("failed to list object map locks %s: %s", self.oid, ex)
                return
            ops = [
                O.call("lock", "break_lock",
                       cls.BreakOp(RBD_LOCK_NAME, lid.locker, lid.cookie).encode(Encoder()).bytes())
                for lid in info.lockers
            ]
            broke = True
            if ops:
                log.info("breaking object map lock on %s held by %s", self.oid,
                         [f"{lid.locker}/{lid.cookie!r}" for lid in info.lockers])
                try:
                    await self.ioctx.operate(self.oid, ops, write=True)
                except ObjectNotFound:
                    pass
                except Error as ex:
                    log.error("failed to break object map lock %s: %s", self.oid, ex)
                    return

    async def unlock(self) -> None:
        """Release ``rbd_lock`` on the HEAD map object (ENOENT ignored, others logged)."""
        if self.snap_id != CEPH_NOSNAP:
            return
        self.locked = False
        try:
            await cls.lock_unlock(self.ioctx, self.oid, RBD_LOCK_NAME, "")
        except Error as ex:
            if ex.errno != errno.ENOENT:
                log.warning("failed to release object map lock %s: %s", self.oid, ex)

    async def close(self) -> None:
        """Drop the map (after in-flight updates finish) and its HEAD lock."""
        while self._inflight:
            await self._inflight[0][2].wait()
        await self.unlock()

    # -- load / create / remove -------------------------------------------------------
    async def load(self, num_objects: int) -> None:
        """Open the map for an image of ``num_objects`` objects (object_map/RefreshRequest):
        lock (HEAD), ``object_map_load``; an unreadable map is invalidated and, if
        corrupt or too small, re-sized on the OSD (NONEXISTENT) while the in-memory
        map assumes every object EXISTS.  Raises OSError(EFBIG) for a map over
        MAX_OBJECT_MAP_OBJECT_COUNT (after invalidating)."""
        if num_objects > MAX_OBJECT_MAP_OBJECT_COUNT:
            await self.invalidate()
            self.map = BitVector2()
            raise make_ex(-errno.EFBIG, f"object map too large: {num_objects}")
        await self.lock()
        truncate = False
        try:
            bv = BitVector2.decode(await cls.object_map_load(self.ioctx, self.oid))
        except DecodeError as ex:
            log.error("object map %s corrupt: %s", self.oid, ex)
            bv, truncate = None, True
        except Error as ex:
            if ex.errno == errno.EINVAL:  # the OSD could not decode it
                log.error("object map %s corrupt on-disk: %s", self.oid, ex)
                bv, truncate = None, True
            else:
                log.error("failed to load object map %s: %s", self.oid, ex)
                await self.invalidate()
                self.map = BitVector2(num_objects)
                self.map.resize(num_objects, OBJECT_EXISTS)
                return
        if bv is not None and bv.size >= num_objects:
            if bv.size > num_objects:
                log.info("object map %s larger than the object count: %d > %d", self.oid, bv.size, num_objects)
            self.map = bv
            return
        if bv is not None:
            log.error("object map %s smaller than the object count: %d < %d", self.oid, bv.size, num_objects)
        # send_resize_invalidate: invalidate, then size the on-disk map correctly
        await self.invalidate()
        self.map = BitVector2()
        self.map.resize(num_objects, OBJECT_EXISTS)
        ops = [O.truncate(0)] if truncate else []
        ops.append(O.call("rbd", "object_map_resize", cls.encode_object_map_resize(num_objects, OBJECT_NONEXISTENT)))
        try:
            await self._write_map(self.snap_id, *ops)
        except Error as ex:
            log.error("failed to adjust object map size %s: %s", self.oid, ex)

    async def create(self, num_objects: int) -> None:
        """Create the map of a new image (or of each snapshot when the feature is
        enabled): ``object_map_resize(num_objects, NONEXISTENT)`` on this map's object
        (image/CreateRequest.cc, object_map/CreateRequest.cc).  Raises on failure."""
        await self.ioctx.execute(
            self.oid, "rbd", "object_map_resize", cls.encode_object_map_resize(num_objects, OBJECT_NONEXISTENT)
        )
        self.map = BitVector2(num_objects)

    async def remove(self, snap_ids: Iterable[int] = ()) -> None:
        """Remove this map object and the maps of ``snap_ids`` (object_map/RemoveRequest.cc);
        missing objects are fine."""
        oids = [self.oid] + [object_map_name(self.image_id, s) for s in snap_ids if s != self.snap_id]
        for oid in oids:
            try:
                await self.ioctx.remove(oid)
            except ObjectNotFound:
                pass
        self.locked = False
        self.map = BitVector2()

    async def save(self) -> None:
        """Write the whole in-memory map (``object_map_save``, ObjectMap::aio_save)."""
        await self._write_map(
            self.snap_id, O.call("rbd", "object_map_save", self.map.encode(crc=False))
        )

    # -- invalidation ---------------------------------------------------------------------
    async def invalidate(self, snap_id: int | None = None, *, force: bool = False, flags: int | None = None) -> None:
        """Flag the map invalid (object_map/InvalidateRequest.cc): in memory, then
        ``rbd.set_flags`` on the header.  For HEAD without ``force`` the op asserts our
        header lock and is skipped if we do not own it.  Errors are logged."""
        snap_id = self.snap_id if snap_id is None else snap_id
        if flags is None:
            flags = RBD_FLAG_OBJECT_MAP_INVALID | (RBD_FLAG_FAST_DIFF_INVALID if self.fast_diff else 0)
        if snap_id == self.snap_id:
            if self.flags & RBD_FLAG_OBJECT_MAP_INVALID:
                return
            self.flags |= flags
        ops: list[O.OSDOp] = []
        if snap_id == CEPH_NOSNAP and not force:
            cookie = self.lock_cookie_fn()
            if cookie is None:
                log.warning("object map %s invalid in memory only: not the lock owner", self.oid)
                return
            ops.append(O.call("lock", "assert_locked",
                              cls.AssertOp(RBD_LOCK_NAME, cls.LOCK_EXCLUSIVE, cookie, RBD_LOCK_TAG)
                              .encode(Encoder()).bytes()))
        ops.append(O.call("rbd", "set_flags", cls.encode_set_flags(flags, flags, snap_id)))
        log.error("invalidating object map %s (snap %#x)", self.oid, snap_id)
        try:
            await self.ioctx.operate(self.header_oid, ops, write=True)
        except Error as ex:
            log.error("failed to invalidate object map %s on disk: %s", self.oid, ex)

    async def clear_invalid(self) -> None:
        """Clear OBJECT_MAP_INVALID|FAST_DIFF_INVALID on the header (end of a rebuild;
        asserts the header lock for HEAD when we hold it)."""
        ops: list[O.OSDOp] = []
        cookie = self.lock_cookie_fn()
        if self.snap_id == CEPH_NOSNAP and cookie is not None:
            ops.append(O.call("lock", "assert_locked",
                              cls.AssertOp(RBD_LOCK_NAME, cls.LOCK_EXCLUSIVE, cookie, RBD_LOCK_TAG)
                              .encode(Encoder()).bytes()))
        ops.append(O.call("rbd", "set_flags", cls.encode_set_flags(0, OBJECT_MAP_INVALID_FLAGS, self.snap_id)))
        await self.ioctx.operate(self.header_oid, ops, write=True)
        self.flags &= ~OBJECT_MAP_INVALID_FLAGS

    # -- updates ----------------------------------------------------------------------------
    async def _guard(self, start: int, end: int) -> asyncio.Event:
        """Serialise updates of overlapping ranges (librbd's BlockGuard on the map)."""
        while True:
            busy = [ev for (s, e, ev) in self._inflight if s < end and start < e]
            if not busy:
                break
            for ev in busy:
                await ev.wait()
        ev = asyncio.Event()
        self._inflight.append((start, end, ev))
        return ev

    def _release(self, ev: asyncio.Event) -> None:
        self._inflight = [x for x in self._inflight if x[2] is not ev]
        ev.set()

    async def update(self, start: int, end: int, new_state: int, current_state: int | None = None) -> bool:
        """Set objects ``[start, end)`` to ``new_state`` (only those in
        ``current_state``, EXISTS matching EXISTS_CLEAN, when given).

        HEAD: the range is clipped to the map and nothing is sent unless some object
        needs the change (:func:`update_required`); otherwise one compound op per
        MAX_OBJECTS_PER_UPDATE objects: ``lock.assert_locked(rbd_lock)`` +
        ``rbd.object_map_update``, then the in-memory map.  A failed op invalidates the
        map (the caller's I/O goes on).  Returns True if an update was sent."""
        if start >= end:
            raise ValueError(f"empty object map update [{start}, {end})")
        if self.snap_id == CEPH_NOSNAP:
            end = min(end, self.map.size)
            if start >= end:
                return False
            if not any(update_required(self.map[i], new_state) for i in range(start, end)):
                return False
        ev = await self._guard(start, end)
        try:
            pos = start
            while pos < end:
                stop = min(end, pos + MAX_OBJECTS_PER_UPDATE)
                try:
                    await self._write_map(
                        self.snap_id,
                        O.call("rbd", "object_map_update",
                               cls.encode_object_map_update(pos, stop, new_state, current_state)),
                    )
                    ok = True
                except Error as ex:
                    log.error("failed to update object map %s [%d,%d) -> %d: %s", self.oid, pos, stop, new_state, ex)
                    ok = False
                _apply_update(self.map, pos, stop, new_state, current_state)
                if not ok:
                    await self.invalidate()
                pos = stop
            return True
        finally:
            self._release(ev)

    async def _update_each(self, objectnos: Iterable[int], new_state: int, current_state: int | None) -> None:
        size = self.map.size
        need = [n for n in set(objectnos) if n < size and update_required(self.map[n], new_state)]
        runs = _runs(need)
        if runs:
            await asyncio.gather(*(self.update(s, e, new_state, current_state) for s, e in runs))

    async def pre_write(self, objectnos: Iterable[int]) -> None:
        """Before writing objects: mark them EXISTS (skipped where already EXISTS)."""
        await self._update_each(objectnos, OBJECT_EXISTS, None)

    async def pre_remove(self, objectnos: Iterable[int]) -> None:
        """Before removing objects: mark those that may exist PENDING."""
        await self._update_each(objectnos, OBJECT_PENDING, None)

    async def post_remove(self, objectnos: Iterable[int]) -> None:
        """After removing objects: PENDING -> NONEXISTENT."""
        await self._update_each(objectnos, OBJECT_NONEXISTENT, OBJECT_PENDING)

    async def resize(self, num_objects: int, default_state: int = OBJECT_NONEXISTENT) -> None:
        """``object_map_resize`` (object_map/ResizeRequest.cc), then the in-memory map
        (new objects get ``default_state``).  Shrinking over objects not in
        ``default_state`` fails on the OSD (ESTALE) -> the map is invalidated."""
        try:
            resize = cls.encode_object_map_resize(num_objects, default_state)
            await self._write_map(self.snap_id, O.call("rbd", "object_map_resize", resize))
        except Error as ex:
            log.error("failed to resize object map %s to %d: %s", self.oid, num_objects, ex)
            await self.invalidate()
        self.map.resize(num_objects, default_state)

    # -- snapshots --------------------------------------------------------------------------
    async def snapshot_add(self, snap_id: int) -> None:
        """Snapshot the HEAD map (object_map/SnapshotCreateRequest.cc): copy the HEAD map
        object to the snapshot's, then with fast-diff ``object_map_snap_add`` on HEAD
        (EXISTS -> EXISTS_CLEAN, also in memory).  I/O must be blocked meanwhile."""
        head = object_map_name(self.image_id, CEPH_NOSNAP)
        try:
            raw = await self._read_whole(head)
            await self.ioctx.write_full(object_map_name(self.image_id, snap_id), raw)
        except Error as ex:
            log.error("failed to snapshot object map %s to snap %#x: %s", head, snap_id, ex)
            await self.invalidate(snap_id, force=True)
            return
        if not self.fast_diff:
            return
        try:
            await self._write_map(CEPH_NOSNAP, O.call("rbd", "object_map_snap_add"))
        except Error as ex:
            log.error("object_map_snap_add on %s failed: %s", head, ex)
            await self.invalidate(CEPH_NOSNAP)
            return
        if self.snap_id == CEPH_NOSNAP:
            self.map.data = bytearray(bytes(self.map.data).translate(_SNAP_ADD_TABLE))

    async def snapshot_remove(
        self, snap_id: int, next_snap_id: int = CEPH_NOSNAP, snap_flags: int | None = None
    ) -> None:
        """Drop snapshot ``snap_id``'s map (object_map/SnapshotRemoveRequest.cc).  With
        fast-diff its EXISTS objects are folded into the next map (``next_snap_id``:
        the next newer snapshot, or HEAD) by ``object_map_snap_remove`` (EXISTS_CLEAN ->
        EXISTS); if the snapshot's map is invalid/unreadable the next map is
        invalidated instead.  Then the snapshot map object is removed."""
        snap_oid = object_map_name(self.image_id, snap_id)
        if self.fast_diff:
            if snap_flags is None:
                try:
                    snap_flags = await cls.get_flags(self.ioctx, self.header_oid, snap_id)
                except Error:
                    snap_flags = 0
            snap_map: BitVector2 | None = None
            skip = False
            try:
                snap_map = BitVector2.decode(await cls.object_map_load(self.ioctx, snap_oid))
            except ObjectNotFound:
                skip = True  # already handled
            except (Error, DecodeError) as ex:
                log.error("failed to load object map %s: %s", snap_oid, ex)
            if skip:
                return
            if snap_map is None or snap_flags & RBD_FLAG_OBJECT_MAP_INVALID:
                await self.invalidate(next_snap_id, force=True)
            else:
                try:
                    await self._write_map(next_snap_id,
                                          O.call("rbd", "object_map_snap_remove", snap_map.encode(crc=False)))
                except Error as ex:
                    if ex.errno != errno.ENOENT:
                        log.error("object_map_snap_remove on %#x failed: %s", next_snap_id, ex)
                        await self.invalidate(next_snap_id, force=True)
                else:
                    if next_snap_id == CEPH_NOSNAP and self.snap_id == CEPH_NOSNAP:
                        m = self.map
                        for i in range(m.size):
                            if m[i] == OBJECT_EXISTS_CLEAN and (i >= snap_map.size or snap_map[i] == OBJECT_EXISTS):
                                m[i] = OBJECT_EXISTS
        try:
            await self.ioctx.remove(snap_oid)
        except ObjectNotFound:
            pass

    async def rollback(self, snap_id: int) -> None:
        """Copy snapshot ``snap_id``'s map over HEAD's (object_map/SnapshotRollbackRequest.cc,
        with the map lock asserted) and reload HEAD in memory from it."""
        snap_oid = object_map_name(self.image_id, snap_id)
        try:
            raw = await self._read_whole(snap_oid)
        except Error as ex:
            log.error("failed to read snapshot object map %s: %s", snap_oid, ex)
            await self.invalidate(snap_id, force=True)
            await self.invalidate(CEPH_NOSNAP)
            return
        try:
            await self._write_map(CEPH_NOSNAP, O.writefull(raw))
        except Error as ex:
            log.error("failed to roll back object map %s: %s", self.oid, ex)
            await self.invalidate(CEPH_NOSNAP)
            return
        if self.snap_id == CEPH_NOSNAP:
            try:
                self.map = BitVector2.decode(raw)
            except DecodeError as ex:
                log.error("rolled-back object map %s does not decode: %s", self.oid, ex)
                await self.invalidate()

    # -- check / rebuild (operation/ObjectMapIterate.cc, RebuildObjectMapRequest.cc) --------
    async def _actual_states(
        self, num_objects: int, object_prefix: str, snap_ids: Sequence[int], data_ioctx: Any,
        on_progress: Callable[[int, int], None] | None, concurrency: int,
    ) -> list[int]:
        states = [OBJECT_NONEXISTENT] * num_objects
        sem = asyncio.Semaphore(max(1, concurrency))
        done = 0

        async def one(n: int) -> None:
            nonlocal done
            async with sem:
                try:
                    ss = await list_snaps(data_ioctx, f"{object_prefix}.{n:016x}")
                except ObjectNotFound:
                    ss = None
                states[n] = object_state_from_snapset(ss, self.snap_id, snap_ids, self.fast_diff)
                done += 1
                if on_progress is not None:
                    on_progress(done, num_objects)

        await asyncio.gather(*(one(n) for n in range(num_objects)))
        return states

    async def check(
        self, num_objects: int, object_prefix: str, snap_ids: Sequence[int] = (), *,
        data_ioctx: Any = None, on_progress: Callable[[int, int], None] | None = None,
        invalidate: bool = True, concurrency: int = 16,
    ) -> list[Mismatch]:
        """``rbd object-map check``: compare every object ``[0, num_objects)`` with its
        list_snaps state.  Returns all mismatches; if one needs invalidation (see
        :func:`check_needs_invalidate`) and ``invalidate`` the map is flagged invalid
        like librbd does.  ``snap_ids``: the image's snapshot ids."""
        actual = await self._actual_states(num_objects, object_prefix, snap_ids, data_ioctx or self.ioctx,
                                           on_progress, concurrency)
        out: list[Mismatch] = []
        for n, a in enumerate(actual):
            m = self.map[n] if n < self.map.size else OBJECT_NONEXISTENT
            if m != a:
                out.append(Mismatch(n, m, a, check_needs_invalidate(m, a)))
        if invalidate and any(x.needs_invalidate for x in out):
            await self.invalidate()
        return out

    async def rebuild(
        self, num_objects: int, object_prefix: str, snap_ids: Sequence[int] = (), *,
        data_ioctx: Any = None, on_progress: Callable[[int, int], None] | None = None, concurrency: int = 16,
    ) -> None:
        """``rbd object-map rebuild``: recompute every state from list_snaps (an EXISTS
        HEAD object found missing stays EXISTS, as librbd keeps it), save the whole map
        and clear the invalid flags.  Needs the map lock (HEAD) — raises ObjectBusy if
        not held."""
        actual = await self._actual_states(num_objects, object_prefix, snap_ids, data_ioctx or self.ioctx,
                                           on_progress, concurrency)
        new = BitVector2(num_objects)
        for n, a in enumerate(actual):
            cur = self.map[n] if n < self.map.size else OBJECT_NONEXISTENT
            if cur == OBJECT_EXISTS and a == OBJECT_NONEXISTENT and self.snap_id == CEPH_NOSNAP:
                a = cur
            if a:
                new[n] = a
        self.map = new
        await self.save()
        await self.clear_invalid()
