"""The watch on an image's header object and the librbd notification protocol.

:class:`ImageWatcher` registers a watch on ``rbd_header.<id>`` (``ioctx.watch``), answers
the notifications librbd and krbd clients send there and sends its own.  Behaviour
follows krbd (``drivers/block/rbd.c``: ``rbd_watch_cb``, ``rbd_handle_*_lock``,
``rbd_watch_errcb``, ``rbd_reregister_watch``) and librbd (``src/librbd/ImageWatcher.cc``,
``image_watcher/NotifyLockOwner.cc``):

- every notification is acknowledged (``notify_ack``); ``REQUEST_LOCK`` is answered with a
  ``ResponseMessage`` payload only by the lock owner (0: releasing, ``-EROFS``: refuses),
  other ops the owner cannot serve (resize, snap create, ... on behalf of a peer) get
  ``ResponseMessage(-EOPNOTSUPP)`` from the owner, as krbd answers;
- ``HEADER_UPDATE`` (and ops librbd marks ``check_for_refresh``) run the image's refresh
  callback before the ack;
- ``ACQUIRED_LOCK``/``RELEASED_LOCK`` record the current owner and wake a waiting
  :meth:`ExclusiveLock.acquire`;
- when the OSD client reports the watch lost for good (``on_error``), the watch is
  registered again with a new cookie (retry every second, give up on blocklisting or a
  deleted header), then the lock moves to the new cookie
  (:meth:`ExclusiveLock.reacquire_after_reconnect`) and the image refreshes.

Notifications are sent with a 5 s timeout (``RBD_NOTIFY_TIMEOUT``).
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ..errors import Blocklisted, DecodeError, Error, NotConnected, ObjectNotFound, TimedOut
from .watch_notify import (
    NOTIFY_OP_ACQUIRED_LOCK,
    NOTIFY_OP_ASYNC_COMPLETE,
    NOTIFY_OP_ASYNC_PROGRESS,
    NOTIFY_OP_HEADER_UPDATE,
    NOTIFY_OP_RELEASED_LOCK,
    NOTIFY_OP_REQUEST_LOCK,
    AcquiredLockPayload,
    ClientId,
    HeaderUpdatePayload,
    NotifyMessage,
    ReleasedLockPayload,
    RequestLockPayload,
    ResponseMessage,
    lock_owner_response,
    notify_op_name,
)

if TYPE_CHECKING:
    from .exclusive_lock import ExclusiveLock

log = logging.getLogger("pyceph.rbd.watcher")

#: seconds a notification waits for the watchers' acks (krbd RBD_NOTIFY_TIMEOUT)
RBD_NOTIFY_TIMEOUT = 5.0
#: seconds between re-registration attempts (krbd RBD_RETRY_DELAY)
RBD_RETRY_DELAY = 1.0
#: the watch timeout we ask the OSD for (librados osd_client_watch_timeout)
WATCH_TIMEOUT = 30

WATCH_UNREGISTERED = "unregistered"
WATCH_REGISTERED = "registered"
WATCH_ERROR = "error"
WATCH_STOPPED = "stopped"

HeaderUpdateCallback = Callable[[], Any]  # may return an awaitable


class ImageWatcher:
    """The header watch of one open image.

    ``ImageWatcher(ioctx, "rbd_header.<id>", on_header_update)``; ``await start()``
    registers the watch, ``await stop()`` removes it.  ``on_header_update()`` is a plain
    callable or a coroutine function (awaited before the notification is acked); it
    should re-read the header (``AsyncImage.refresh``).  :class:`ExclusiveLock`
    attaches itself as :attr:`lock`.

    ``ioctx`` needs ``watch``, ``unwatch``, ``notify``, ``notify_ack`` and, for the lock,
    ``list_watchers`` (:class:`pyceph.rados.AsyncIoctx`); ``ioctx.rados.get_instance_id()``
    gives our gid.
    """

    def __init__(
        self,
        ioctx: Any,
        header_oid: str,
        on_header_update: HeaderUpdateCallback | None = None,
        *,
        watch_timeout: int = WATCH_TIMEOUT,
        notify_timeout: float = RBD_NOTIFY_TIMEOUT,
        retry_delay: float = RBD_RETRY_DELAY,
    ) -> None:
        self.ioctx = ioctx
        self.header_oid = header_oid
        self.on_header_update = on_header_update
        self.watch_timeout = watch_timeout
        self.notify_timeout = notify_timeout
        self.retry_delay = retry_delay
        self.lock: ExclusiveLock | None = None
        #: the lock owner we last heard of (ACQUIRED_LOCK / find_watcher); empty if none
        self.owner_client_id = ClientId()
        self.state = WATCH_UNREGISTERED
        #: the error that made re-registration give up (blocklisted, header deleted)
        self.error: Error | None = None
        self._cookie: int | None = None
        self._tasks: set[asyncio.Task] = set()
        self._notifies: set[asyncio.Task] = set()
        self._rewatch_task: asyncio.Task | None = None
        #: notifications handled, by op name (for logs and tests)
        self.stats: dict[str, int] = {}

    # -- identity -------------------------------------------------------------
    @property
    def cookie(self) -> int | None:
        """The current watch cookie (handle), None while not registered."""
        return self._cookie if self.state == WATCH_REGISTERED else None

    def _gid(self) -> int:
        return int(self.ioctx.rados.get_instance_id())

    @property
    def client_id(self) -> ClientId:
        """``ClientId(gid=rados instance id, handle=watch cookie)`` (handle 0 if unwatched)."""
        return ClientId(self._gid(), self.cookie or 0)

    def is_registered(self) -> bool:
        return self.state == WATCH_REGISTERED

    async def wait_registered(self, timeout: float | None = None) -> None:
        """Return once the watch is registered, waiting out a re-registration in
        progress.  Raises the error that ended re-registration (Blocklisted ...),
        NotConnected if the watch is not started/stopped, TimedOut after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self.state == WATCH_ERROR:
            if deadline is not None and loop.time() >= deadline:
                raise TimedOut(f"{self.header_oid}: header watch still re-registering")
            await asyncio.sleep(min(self.retry_delay, 0.1))
        if self.state == WATCH_REGISTERED:
            return
        if self.error is not None:
            raise self.error
        raise NotConnected(f"{self.header_oid}: header watch not registered")

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        """Register the watch.  Raises the ioctx's errors (ObjectNotFound: no header)."""
        if self.state == WATCH_REGISTERED:
            return
        self._cookie = await self.ioctx.watch(
            self.header_oid, self._on_notify, self._on_error, timeout=self.watch_timeout
        )
        self.state = WATCH_REGISTERED
        self.error = None
        log.info("watch %s registered cookie=%d", self.header_oid, self._cookie)

    async def stop(self) -> None:
        """Flush our outstanding notifications, unwatch, and drop pending handlers."""
        old = self.state
        self.state = WATCH_STOPPED
        if self._rewatch_task is not None:
            self._rewatch_task.cancel()
            await asyncio.gather(self._rewatch_task, return_exceptions=True)
            self._rewatch_task = None
        if self._notifies:
            # each one ends by its own notify timeout
            await asyncio.gather(*list(self._notifies), return_exceptions=True)
        if old == WATCH_REGISTERED and self._cookie is not None:
            try:
                await self.ioctx.unwatch(self._cookie)
            except Error as e:
                log.warning("unwatch %s cookie=%d: %s", self.header_oid, self._cookie, e)
        self._cookie = None
        for t in list(self._tasks):
            if t is not asyncio.current_task():
                t.cancel()
        await asyncio.gather(*[t for t in self._tasks if t is not asyncio.current_task()],
                             return_exceptions=True)
        log.info("watch %s stopped", self.header_oid)

    def _spawn(self, coro: Awaitable[Any], bucket: set[asyncio.Task] | None = None) -> asyncio.Task:
        bucket = self._tasks if bucket is None else bucket
        t = asyncio.ensure_future(coro)
        bucket.add(t)
        t.add_done_callback(bucket.discard)
        t.add_done_callback(_log_task_error)
        return t

    # -- incoming notifications ---------------------------------------------------
    def _on_notify(self, notify_id: int, cookie: int, notifier_gid: int, payload: bytes) -> None:
        if self.state == WATCH_STOPPED:
            # stopping (flushing our own notifications): ack, nothing else
            self._spawn(self._ack(notify_id, cookie))
            return
        self._spawn(self._handle_notify(notify_id, cookie, notifier_gid, bytes(payload)))

    async def _ack(self, notify_id: int, cookie: int, reply: bytes = b"") -> None:
        try:
            await self.ioctx.notify_ack(self.header_oid, notify_id, cookie, reply)
        except Error as e:
            log.warning("notify_ack %s id=%d: %s", self.header_oid, notify_id, e)

    async def _refresh(self) -> None:
        if self.on_header_update is None:
            return
        try:
            r = self.on_header_update()
            if inspect.isawaitable(r):
                await r
        except Error as e:
            log.warning("refresh after header notification failed: %s", e)

    async def _handle_notify(self, notify_id: int, cookie: int, notifier_gid: int, payload: bytes) -> None:
        try:
            msg = NotifyMessage.decode(payload)
        except DecodeError as e:
            log.warning("undecodable notification on %s from gid %d: %s", self.header_oid, notifier_gid, e)
            await self._ack(notify_id, cookie)
            return
        op = msg.notify_op
        name = notify_op_name(op)
        self.stats[name] = self.stats.get(name, 0) + 1
        log.debug("notify %s id=%d from gid %d: %s", self.header_oid, notify_id, notifier_gid, msg)
        p = msg.payload
        reply = b""
        lock = self.lock
        if op == NOTIFY_OP_ACQUIRED_LOCK:
            cid = p.client_id  # type: ignore[attr-defined]
            if not cid.is_empty():
                self.owner_client_id = cid
            if lock is not None:
                lock.handle_peer_acquired(cid)
        elif op == NOTIFY_OP_RELEASED_LOCK:
            cid = p.client_id  # type: ignore[attr-defined]
            if not cid.is_empty() and cid == self.owner_client_id:
                self.owner_client_id = ClientId()
            if lock is not None:
                lock.handle_peer_released(cid)
        elif op == NOTIFY_OP_REQUEST_LOCK:
            cid = p.client_id  # type: ignore[attr-defined]
            if cid != self.client_id and lock is not None:
                r = lock.handle_request_lock(force=p.force)  # type: ignore[attr-defined]
                if r <= 0:
                    reply = ResponseMessage(r).encode()
        elif op == NOTIFY_OP_HEADER_UPDATE:
            await self._refresh()
        else:
            if msg.check_for_refresh:
                await self._refresh()
            if (op not in (NOTIFY_OP_ASYNC_PROGRESS, NOTIFY_OP_ASYNC_COMPLETE)
                    and lock is not None and lock.is_owner()):
                # we cannot run maintenance ops for peers (krbd answers the same)
                reply = ResponseMessage(-errno.EOPNOTSUPP).encode()
        await self._ack(notify_id, cookie, reply)

    # -- watch errors and re-registration -------------------------------------------
    def _on_error(self, cookie: int, exc: Error) -> None:
        log.warning("watch %s cookie=%d error: %s", self.header_oid, cookie, exc)
        self.owner_client_id = ClientId()
        if self.state != WATCH_REGISTERED or cookie != self._cookie:
            return
        self.state = WATCH_ERROR
        if self._rewatch_task is None or self._rewatch_task.done():
            self._rewatch_task = self._spawn(self._rewatch(cookie))

    async def _rewatch(self, old_cookie: int) -> None:
        try:
            await self.ioctx.unwatch(old_cookie)
        except Error:
            pass  # already gone on the OSD side
        while self.state == WATCH_ERROR:
            try:
                new = await self.ioctx.watch(
                    self.header_oid, self._on_notify, self._on_error, timeout=self.watch_timeout
                )
            except (Blocklisted, ObjectNotFound) as e:
                log.error("re-registering watch on %s failed for good: %s", self.header_oid, e)
                self.error = e
                self.state = WATCH_UNREGISTERED
                if self.lock is not None:
                    self.lock.handle_watch_lost(e)
                return
            except Error as e:
                log.warning("re-registering watch on %s: %s; retrying", self.header_oid, e)
                await asyncio.sleep(self.retry_delay)
                continue
            if self.state != WATCH_ERROR:  # stopped meanwhile
                try:
                    await self.ioctx.unwatch(new)
                except Error:
                    pass
                return
            self._cookie = new
            self.state = WATCH_REGISTERED
            log.info("watch %s re-registered cookie %d -> %d", self.header_oid, old_cookie, new)
            if self.lock is not None:
                try:
                    await self.lock.reacquire_after_reconnect()
                except Error as e:
                    log.warning("reacquire after re-watch failed: %s", e)
            await self._refresh()
            return

    # -- outgoing notifications ----------------------------------------------------
    async def _notify(self, msg: NotifyMessage) -> tuple[dict[tuple[int, int], bytes], list[tuple[int, int]]]:
        """Send ``msg``; returns ``(acks, timeouts)``.  A notify that timed out still
        reports the acks that arrived when the ioctx attaches them to the error."""
        try:
            acks, timeouts = await self.ioctx.notify(
                self.header_oid, msg.encode(), timeout_ms=int(self.notify_timeout * 1000)
            )
        except TimedOut as e:
            acks = getattr(e, "acks", None) or {}
            timeouts = getattr(e, "timeouts", None) or []
        if timeouts:
            log.info("notify %s on %s: no ack from %s", notify_op_name(msg.notify_op), self.header_oid,
                     ", ".join(f"client.{g} cookie {c}" for g, c in timeouts))
        return acks, timeouts

    def spawn_notification(self, coro: Awaitable[Any]) -> asyncio.Task:
        """Run a ``notify_*`` coroutine in the background; :meth:`stop` waits for it
        before unwatching (krbd flushes its notifies the same way)."""
        return self._spawn(coro, self._notifies)

    async def _notify_tracked(self, msg: NotifyMessage) -> tuple[dict, list]:
        t = self._spawn(self._notify(msg), self._notifies)
        return await asyncio.shield(t)

    async def notify_header_update(self) -> None:
        """Tell every watcher to refresh (after we changed the header).  Errors other than
        a lost connection are logged, not raised (librbd ignores them too)."""
        try:
            await self._notify_tracked(NotifyMessage(HeaderUpdatePayload()))
        except NotConnected:
            raise
        except Error as e:
            log.warning("header update notification on %s: %s", self.header_oid, e)

    async def notify_acquired_lock(self) -> None:
        """``ACQUIRED_LOCK`` with our client id; errors logged."""
        try:
            await self._notify_tracked(NotifyMessage(AcquiredLockPayload(self.client_id)))
        except Error as e:
            log.warning("acquired-lock notification on %s: %s", self.header_oid, e)

    async def notify_released_lock(self, client_id: ClientId | None = None) -> None:
        """``RELEASED_LOCK`` with our client id (or ``client_id``, the id the lock was taken
        with); errors logged."""
        try:
            cid = client_id if client_id is not None else self.client_id
            await self._notify_tracked(NotifyMessage(ReleasedLockPayload(cid)))
        except Error as e:
            log.warning("released-lock notification on %s: %s", self.header_oid, e)

    async def notify_request_lock(self, force: bool = False) -> int:
        """Ask the lock owner to release the lock (``REQUEST_LOCK``).

        Returns the owner's ``ResponseMessage.result`` (0: it will release; ``-EROFS``:
        it refuses), ``-ETIMEDOUT`` when no watcher answered as owner, ``-EIO`` for two
        owners, or the negative errno of a failed notify.
        """
        try:
            acks, _ = await self._notify_tracked(NotifyMessage(RequestLockPayload(self.client_id, force)))
        except Error as e:
            log.warning("lock request on %s: %s", self.header_oid, e)
            return -(e.errno or errno.EIO)
        return lock_owner_response(acks)


def _log_task_error(t: asyncio.Task) -> None:
    if t.cancelled():
        return
    exc = t.exception()
    if exc is not None:
        log.error("watcher task failed: %r", exc, exc_info=exc)
