"""RBD's exclusive lock: the cls_lock lock ``rbd_lock`` on the image header.

The protocol is the one krbd and librbd share (``drivers/block/rbd.c``: ``rbd_lock``,
``rbd_try_lock``, ``get_lock_owner_info``, ``find_watcher``, ``rbd_acquire_lock``,
``rbd_request_lock``, ``rbd_release_lock``, ``rbd_reacquire_lock``; librbd's
``ManagedLock`` and ``managed_lock/{Acquire,Break,GetLocker}Request.cc``):

- the lock is an exclusive cls_lock named ``rbd_lock`` with tag ``internal``, an empty
  description, no expiry, and cookie ``"auto <watch handle>"`` (``RBD_LOCK_COOKIE_PREFIX``
  and our header watch cookie), so peers can find the owner among the header's watchers;
- ``acquire``: try the lock; if another client holds it, look the owner up among the
  watchers (same address ignoring the address type, watch cookie = the handle in its lock
  cookie).  An owner that is watching is asked to release it (``REQUEST_LOCK``), and we
  wait for its ``RELEASED_LOCK`` (re-asking every 10 s, every 1 s after errors); an owner
  that does not answer the request at all is treated as dead, and an owner with no watch
  is dead: its address is blocklisted (``rados.blocklist_add``), its lock broken
  (``break_lock``), and the lock tried again.  An owner that refuses (``-EROFS``, mapped
  with ``-o exclusive``) makes ``acquire`` fail with :class:`ImageBusy`; a lock with
  another tag, type or cookie format is "locked by an external mechanism"
  (:class:`ImageBusy`);
- after the lock is taken ``on_acquired()`` runs (the image loads its object map), then
  ``ACQUIRED_LOCK`` is sent; ``release`` runs ``on_releasing()`` (the image blocks and
  flushes writes), unlocks and sends ``RELEASED_LOCK``;
- a peer's ``REQUEST_LOCK`` releases the lock in the background (answer 0) unless the
  lock is exclusive (answer ``-EROFS``), like krbd;
- after the header watch is re-registered with a new cookie, the lock is moved to the new
  cookie with cls_lock ``set_cookie`` (or released and taken again if that fails).

The ``set_cookie`` payload (``cls_lock_set_cookie_op``, src/cls/lock/cls_lock_ops.h) is
here: ``ENCODE_START(1, 1)``, name, ``u8 type``, cookie, tag, new_cookie.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from ..encoding import Decoder, Encoder
from ..errors import (
    Error,
    ImageBusy,
    NotConnected,
    ObjectBusy,
    ObjectExists,
    ObjectNotFound,
    TimedOut,
)
from ..types import EntityAddr, EntityNameT
from . import cls_client as cls
from .image_watcher import RBD_NOTIFY_TIMEOUT, RBD_RETRY_DELAY, ImageWatcher
from .watch_notify import ClientId

log = logging.getLogger("pyceph.rbd.lock")

#: ``RBD_LOCK_NAME``: the cls_lock name on the header and on the HEAD map object
RBD_LOCK_NAME = "rbd_lock"
#: tag of the header's exclusive lock (``librbd::util::get_watcher_lock_tag``)
RBD_LOCK_TAG = "internal"
RBD_LOCK_COOKIE_PREFIX = "auto"

LOCK_STATE_UNLOCKED = "unlocked"
LOCK_STATE_LOCKED = "locked"
LOCK_STATE_RELEASING = "releasing"

_COOKIE_RE = re.compile(r"^auto (\d+)$")


def format_lock_cookie(handle: int) -> str:
    """``"auto <handle>"`` (krbd ``format_lock_cookie``, librbd ``ManagedLock::encode_lock_cookie``)."""
    return f"{RBD_LOCK_COOKIE_PREFIX} {handle}"


def parse_lock_cookie(cookie: str) -> int | None:
    """The watch handle in an ``"auto <handle>"`` cookie, None for any other cookie."""
    m = _COOKIE_RE.match(cookie)
    return int(m.group(1)) if m else None


def addr_equal_no_type(a: EntityAddr, b: EntityAddr) -> bool:
    """Same IP, port and nonce, whatever the address type (krbd
    ``ceph_addr_equal_no_type``, librbd's compare of ``get_legacy_str()``)."""
    return a.ip == b.ip and a.port == b.port and a.nonce == b.nonce


# ---------------------------------------------------------------------------
# cls_lock set_cookie


@dataclass
class SetCookieOp:
    """``cls_lock_set_cookie_op``: name, ``u8 type``, cookie, tag, new_cookie
    (ENCODE_START(1, 1); src/cls/lock/cls_lock_ops.h, kernel ``ceph_cls_set_cookie``)."""

    name: str
    type: int
    cookie: str
    tag: str
    new_cookie: str

    def encode(self, e: Encoder) -> Encoder:
        with e.start(1, 1):
            e.string(self.name).u8(self.type).string(self.cookie).string(self.tag).string(self.new_cookie)
        return e

    @classmethod
    def decode(cls_, d: Decoder) -> "SetCookieOp":
        with d.start("cls_lock_set_cookie_op", 1):
            return cls_(d.string(), d.u8(), d.string(), d.string(), d.string())


async def lock_set_cookie(ioctx: Any, oid: str, op: SetCookieOp) -> None:
    """``lock.set_cookie`` (a write).  Raises ObjectBusy/ObjectNotFound/... as the OSD
    answers (``-EOPNOTSUPP`` on OSDs older than Luminous)."""
    await ioctx.execute(oid, "lock", "set_cookie", op.encode(Encoder()).bytes())


# ---------------------------------------------------------------------------


@dataclass
class LockOwner(cls.LockerInfo):
    """A holder of ``rbd_lock``: the ``locker_info_t`` fields plus who holds it.

    ``entity`` (``client.<gid>``), ``cookie``, ``handle`` (the watch handle in an
    ``auto`` cookie, None otherwise), ``tag`` and ``lock_type`` of the lock.
    """

    entity: EntityNameT | None = None
    cookie: str = ""
    handle: int | None = None
    tag: str = ""
    lock_type: int = cls.LOCK_NONE

    def same_locker(self, other: "LockOwner") -> bool:
        """krbd ``locker_equal``: entity, cookie and address (type ignored)."""
        return (self.entity == other.entity and self.cookie == other.cookie
                and addr_equal_no_type(self.addr, other.addr))

    def __str__(self) -> str:
        return f"{self.entity} cookie={self.cookie!r} addr={self.addr.legacy_str()}"


async def get_lock_owner_info(ioctx: Any, header_oid: str) -> LockOwner | None:
    """The holder of ``rbd_lock`` on ``header_oid`` (any kind of holder), None if unlocked."""
    info = await cls.lock_get_info(ioctx, header_oid, RBD_LOCK_NAME)
    if not info.lockers:
        return None
    lid, linfo = next(iter(info.lockers.items()))
    return LockOwner(
        linfo.expiration, linfo.addr, linfo.description, linfo.addr_raw,
        entity=lid.locker, cookie=lid.cookie, handle=parse_lock_cookie(lid.cookie),
        tag=info.tag, lock_type=info.lock_type,
    )


class ExclusiveLock:
    """The exclusive lock of one open image (see the module docstring for the protocol).

    ``ExclusiveLock(ioctx, header_oid, watcher, rados, exclusive=False,
    on_acquired=None, on_releasing=None)``: ``watcher`` is the started
    :class:`ImageWatcher` of the same header (the lock attaches itself to it); ``rados``
    provides ``get_instance_id()`` and ``blocklist_add(addr, expire_s)``.  ``exclusive``
    refuses peers' lock requests (krbd ``-o exclusive``).  ``on_acquired`` and
    ``on_releasing`` are coroutine functions without arguments.

    ``blocklist_on_break`` (librbd ``rbd_blocklist_on_break_lock``, default True) and
    ``blocklist_expire_s`` (librbd ``rbd_blocklist_expire_seconds``; None: the monitor's
    default) control how a dead owner is fenced.
    """

    def __init__(
        self,
        ioctx: Any,
        header_oid: str,
        watcher: ImageWatcher,
        rados: Any,
        *,
        exclusive: bool = False,
        on_acquired: Callable[[], Awaitable[None]] | None = None,
        on_releasing: Callable[[], Awaitable[None]] | None = None,
        blocklist_on_break: bool = True,
        blocklist_expire_s: float | None = None,
        notify_timeout: float = RBD_NOTIFY_TIMEOUT,
        retry_delay: float = RBD_RETRY_DELAY,
    ) -> None:
        self.ioctx = ioctx
        self.header_oid = header_oid
        self.watcher = watcher
        self.rados = rados
        self.exclusive = exclusive
        self.on_acquired = on_acquired
        self.on_releasing = on_releasing
        self.blocklist_on_break = blocklist_on_break
        self.blocklist_expire_s = blocklist_expire_s
        self.notify_timeout = notify_timeout
        self.retry_delay = retry_delay
        self.state = LOCK_STATE_UNLOCKED
        self._cookie: str | None = None
        self._locked_cid: ClientId | None = None
        self._mutex = asyncio.Lock()
        self._peer_event = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._release_task: asyncio.Task | None = None
        #: set when the watch was lost for good (blocklisted): acquire() raises it
        self.error: Error | None = None
        #: owners we fenced: list of (entity, address string)
        self.broken_locks: list[tuple[str, str]] = []
        watcher.lock = self

    # -- state ------------------------------------------------------------------
    def is_owner(self) -> bool:
        """True while we hold the lock and are not releasing it."""
        return self.state == LOCK_STATE_LOCKED

    @property
    def cookie(self) -> str | None:
        """Our lock cookie while we hold the lock (``"auto <handle>"``), else None."""
        return self._cookie if self.state != LOCK_STATE_UNLOCKED else None

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        t.add_done_callback(_log_task_error)
        return t

    async def get_lock_owner(self) -> LockOwner | None:
        """The current holder of ``rbd_lock`` (LockOwner is a ``LockerInfo``), None if unlocked."""
        return await get_lock_owner_info(self.ioctx, self.header_oid)

    # -- acquire ----------------------------------------------------------------
    async def acquire(self, timeout: float | None = None) -> None:
        """Take the lock (krbd ``rbd_acquire_lock``); returns once we own it.

        Raises :class:`ImageBusy` (external lock, or the owner refuses: ``-o exclusive``),
        :class:`TimedOut` after ``timeout`` seconds (None: wait as long as it takes),
        :class:`NotConnected` without a header watch (a re-registration in progress is
        waited for), :class:`Blocklisted` after we were fenced, or the cluster error of a
        failed step.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.error is not None:
                raise self.error
            if self.is_owner():
                return
            started = time.monotonic()
            await self.watcher.wait_registered(None if deadline is None else max(0.0, deadline - started))
            async with self._mutex:
                if self.is_owner():
                    return
                self._peer_event.clear()
                r = await self._try_lock()
                if r == 0:
                    await self._post_acquire()
                    return
            r = await self.watcher.notify_request_lock()
            log.info("lock %s: owner answered lock request with %d", self.header_oid, r)
            if r == -errno.ETIMEDOUT:
                # no owner answered: treat it as dead and try again at once (but do not
                # spin if the notify came back immediately)
                wait = 0.0 if time.monotonic() - started >= 0.1 else 0.1
            elif r == -errno.EROFS:
                raise ImageBusy(f"{self.header_oid}: lock owner will not release the lock", errno=errno.EBUSY)
            elif r < 0:
                wait = self.retry_delay
            else:
                # the owner acked; ask again if we do not see it release the lock
                wait = 2 * self.notify_timeout
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimedOut(f"{self.header_oid}: timed out acquiring the exclusive lock")
                wait = min(wait, left)
            if wait > 0:
                try:
                    await asyncio.wait_for(self._peer_event.wait(), wait)
                except asyncio.TimeoutError:
                    pass

    def _my_cookie(self) -> str:
        handle = self.watcher.cookie
        if handle is None:
            raise NotConnected(f"{self.header_oid}: header watch not registered")
        return format_lock_cookie(handle)

    async def _lock(self) -> bool:
        """cls_lock lock with our cookie; True if we hold it now, False on EBUSY."""
        cookie = self._my_cookie()
        op = cls.LockOp(RBD_LOCK_NAME, cls.LOCK_EXCLUSIVE, cookie, RBD_LOCK_TAG, "", (0, 0), 0)
        try:
            await cls.lock_lock(self.ioctx, self.header_oid, op)
        except ObjectExists:
            pass  # EEXIST: already ours with this cookie
        except ObjectBusy:
            return False
        self.state = LOCK_STATE_LOCKED
        self._cookie = cookie
        self._locked_cid = self.watcher.client_id
        self.watcher.owner_client_id = self._locked_cid
        log.info("lock %s acquired cookie=%r", self.header_oid, cookie)
        return True

    async def _get_owner_checked(self) -> LockOwner | None:
        """krbd ``get_lock_owner_info``: the holder if it is an rbd-managed exclusive lock;
        ImageBusy for anything else."""
        o = await get_lock_owner_info(self.ioctx, self.header_oid)
        if o is None:
            return None
        if o.tag != RBD_LOCK_TAG:
            raise ImageBusy(f"{self.header_oid}: locked by external mechanism, tag {o.tag!r}", errno=errno.EBUSY)
        if o.lock_type != cls.LOCK_EXCLUSIVE:
            raise ImageBusy(f"{self.header_oid}: incompatible lock type {o.lock_type}", errno=errno.EBUSY)
        if o.handle is None:
            raise ImageBusy(f"{self.header_oid}: locked by external mechanism, cookie {o.cookie!r}",
                            errno=errno.EBUSY)
        if o.addr.is_blank():
            raise ImageBusy(f"{self.header_oid}: locker has a blank address", errno=errno.EBUSY)
        return o

    async def _find_watcher(self, owner: LockOwner) -> bool:
        """krbd ``find_watcher``: is the owner's watch (address + handle) on the header?"""
        for w in await self.ioctx.list_watchers(self.header_oid):
            if addr_equal_no_type(w.addr, owner.addr) and w.cookie == owner.handle:
                self.watcher.owner_client_id = ClientId(w.name.num, w.cookie)
                return True
        return False

    def _is_me(self, owner: LockOwner) -> bool:
        ent = owner.entity
        return ent is not None and ent.num == int(self.rados.get_instance_id())

    async def _try_lock(self) -> int:
        """krbd ``rbd_try_lock``: 0 when we hold the lock, 1 when its alive owner must be
        asked.  Fences and breaks a dead owner's lock on the way."""
        while True:
            if await self._lock():
                return 0
            owner = await self._get_owner_checked()
            if owner is None:
                continue
            if await self._find_watcher(owner):
                return 1
            refreshed = await self._get_owner_checked()
            if refreshed is None or not refreshed.same_locker(owner):
                continue
            addr = owner.addr.legacy_str()
            if self._is_me(owner):
                # a stale lock of ours (an older watch of this client): never fence ourselves
                log.warning("lock %s: breaking our own stale lock %s", self.header_oid, owner)
            else:
                log.warning("lock %s: breaking lock owned by %s", self.header_oid, owner)
                if self.blocklist_on_break:
                    await self.rados.blocklist_add(addr, self.blocklist_expire_s)
            try:
                await cls.lock_break(self.ioctx, self.header_oid, RBD_LOCK_NAME, owner.entity, owner.cookie)
            except ObjectNotFound:
                pass
            self.broken_locks.append((str(owner.entity), addr))

    async def _post_acquire(self) -> None:
        if self.on_acquired is not None:
            try:
                await self.on_acquired()
            except BaseException:
                log.warning("lock %s: post-acquire action failed; unlocking", self.header_oid)
                await self._unlock(notify=False)
                raise
        self.watcher.spawn_notification(self.watcher.notify_acquired_lock())

    # -- release ------------------------------------------------------------------
    async def release(self) -> None:
        """Give the lock up: ``on_releasing()``, unlock, ``RELEASED_LOCK``.  No-op if we
        do not hold it.  Unlock errors are logged and the lock treated as released
        (krbd ``rbd_unlock``)."""
        async with self._mutex:
            await self._release_locked()

    async def _release_locked(self) -> None:
        if self.state != LOCK_STATE_LOCKED:
            return
        self.state = LOCK_STATE_RELEASING
        try:
            if self.on_releasing is not None:
                try:
                    await self.on_releasing()
                except Error as e:
                    log.warning("lock %s: pre-release action failed: %s", self.header_oid, e)
        finally:
            await self._unlock()

    async def _unlock(self, notify: bool = True) -> None:
        cookie = self._cookie
        cid = self._locked_cid
        if cookie is not None:
            try:
                await cls.lock_unlock(self.ioctx, self.header_oid, RBD_LOCK_NAME, cookie)
            except ObjectNotFound:
                pass
            except Error as e:
                log.warning("lock %s: unlock failed: %s", self.header_oid, e)
        self.state = LOCK_STATE_UNLOCKED
        self._cookie = None
        self._locked_cid = None
        if self.watcher.owner_client_id == cid:
            self.watcher.owner_client_id = ClientId()
        log.info("lock %s released", self.header_oid)
        if notify and self.watcher.is_registered():
            self.watcher.spawn_notification(self.watcher.notify_released_lock(cid))

    # -- peers ---------------------------------------------------------------------
    def handle_request_lock(self, force: bool = False) -> int:
        """A peer's ``REQUEST_LOCK`` (krbd ``rbd_handle_request_lock``).

        Returns the ``ResponseMessage`` result to send: 0 (we hold the lock and release
        it in the background, or are already releasing it), ``-EROFS`` (exclusive: we
        keep it), or 1 when we are not the owner (plain ack, no response).
        """
        if self.state == LOCK_STATE_RELEASING:
            return 0
        if self.state != LOCK_STATE_LOCKED:
            return 1
        if self.exclusive:
            log.info("lock %s: refusing lock request (exclusive)", self.header_oid)
            return -errno.EROFS
        if self._release_task is None or self._release_task.done():
            log.info("lock %s: releasing on request", self.header_oid)
            self._release_task = self._spawn(self.release())
        return 0

    def handle_peer_acquired(self, client_id: ClientId) -> None:
        """Another client announced it took the lock."""
        self._peer_event.set()

    def handle_peer_released(self, client_id: ClientId) -> None:
        """Another client released the lock: wake a waiting :meth:`acquire`."""
        self._peer_event.set()

    def handle_watch_lost(self, exc: Error) -> None:
        """The header watch could not be re-registered (blocklisted, header removed):
        the lock is lost; later :meth:`acquire` calls raise ``exc``."""
        self.error = exc
        if self.state != LOCK_STATE_UNLOCKED:
            log.error("lock %s lost: %s", self.header_oid, exc)
        self.state = LOCK_STATE_UNLOCKED
        self._cookie = None
        self._locked_cid = None
        self._peer_event.set()

    async def reacquire_after_reconnect(self) -> None:
        """The header watch was re-registered with a new cookie: move the lock to
        ``"auto <new handle>"`` with cls_lock ``set_cookie`` (krbd ``rbd_reacquire_lock``);
        if that fails, release the lock and take it again in the background."""
        async with self._mutex:
            if self.state != LOCK_STATE_LOCKED or self._cookie is None:
                return
            new_cookie = self._my_cookie()
            if new_cookie == self._cookie:
                return
            op = SetCookieOp(RBD_LOCK_NAME, cls.LOCK_EXCLUSIVE, self._cookie, RBD_LOCK_TAG, new_cookie)
            try:
                await lock_set_cookie(self.ioctx, self.header_oid, op)
            except Error as e:
                if e.errno != errno.EOPNOTSUPP:
                    log.warning("lock %s: updating the lock cookie failed: %s", self.header_oid, e)
                if self.exclusive:
                    log.warning("lock %s: temporarily releasing the lock of an exclusive mapping",
                                self.header_oid)
                await self._release_locked()
                self._spawn(self.acquire())
                return
            log.info("lock %s: cookie %r -> %r", self.header_oid, self._cookie, new_cookie)
            self._cookie = new_cookie
            self._locked_cid = self.watcher.client_id
            self.watcher.owner_client_id = self._locked_cid
            self.watcher.spawn_notification(self.watcher.notify_acquired_lock())

    async def close(self) -> None:
        """Release the lock and wait for our background work (release-on-request,
        notifications) to finish."""
        await self.release()
        pending = [t for t in self._tasks if t is not asyncio.current_task()]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def _log_task_error(t: asyncio.Task) -> None:
    if t.cancelled():
        return
    exc = t.exception()
    if exc is not None:
        log.error("exclusive-lock task failed: %r", exc, exc_info=exc)


__all__ = [
    "RBD_LOCK_NAME", "RBD_LOCK_TAG", "RBD_LOCK_COOKIE_PREFIX", "ExclusiveLock", "LockOwner",
    "SetCookieOp", "lock_set_cookie", "get_lock_owner_info", "format_lock_cookie",
    "parse_lock_cookie", "addr_equal_no_type",
]
