"""asyncio transport for one msgr2 client connection (the kernel's ``ceph_connection``).

A thin layer over the sans-IO :class:`pyceph.msgr.protocol.ClientProtocol`: a TCP
stream (TCP_NODELAY), a reader task feeding the protocol, and coalesced writes of the
protocol's output (``writelines`` of the frame buffers; data segments are not copied).

``ops`` is the kernel-style ``ceph_connection_operations``: the four auth hooks of
:class:`pyceph.msgr.protocol.AuthHandler` plus

- ``dispatch(con, msg: Message)``: each incoming message, in order (may return an
  awaitable, which the reader awaits before reading on);
- ``fault(con, exc: Exception)``: called once when the connection dies after a
  successful ``connect()`` (EOF, socket error, protocol error); the connection is then
  CLOSED and a new ``Connection`` must be made (optionally with ``session=`` of this one
  to resume a lossless session).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
from typing import Any

from ..errors import ConnectionShutdown, Error, NotConnected, TimedOut
from ..types import ENTITY_TYPE_CLIENT, EntityAddr
from . import features as F
from .message import Message
from .protocol import (
    ClientProtocol, Closed, Connected, KeepaliveAck, MessageReceived, Session, SessionReset, State, Wait,
)

log = logging.getLogger(__name__)

_READ_SIZE = 1 << 18


class Connection:
    """One client connection to a Ceph daemon at ``peer_addr`` (msgr2.1, crc mode).

    ``Connection(addr, ops, entity_type=ENTITY_TYPE_CLIENT, features=...)``; keyword
    arguments ``peer_type``, ``my_addr``, ``global_id``, ``required_features``,
    ``lossy``, ``session`` are passed to :class:`ClientProtocol`.
    """

    def __init__(
        self,
        peer_addr: EntityAddr,
        ops: Any,
        *,
        entity_type: int = ENTITY_TYPE_CLIENT,
        features: int = F.SUPPORTED_DEFAULT,
        **protocol_kw: Any,
    ) -> None:
        self.peer_addr = peer_addr
        self.ops = ops
        self.protocol = ClientProtocol(
            peer_addr, ops, entity_type=entity_type, features=features, con=self, **protocol_kw
        )
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None
        self._ready: asyncio.Future | None = None
        self._closing = False
        self._faulted = False
        self.connected_info: Connected | None = None
        self.last_keepalive_ack: tuple[int, int] | None = None

    # -- properties ------------------------------------------------------------------
    @property
    def state(self) -> State:
        return self.protocol.state

    @property
    def peer_global_id(self) -> int:
        return self.protocol.peer_global_id

    @property
    def features(self) -> int:
        """Negotiated feature bits (ours & the peer's); 0 before the session is up."""
        return self.protocol.negotiated_features

    @property
    def session(self) -> Session:
        return self.protocol.session

    @property
    def my_addr(self) -> EntityAddr:
        return self.protocol.my_addr

    def __repr__(self) -> str:
        return f"<Connection {self.peer_addr} {self.state.value}>"

    # -- lifecycle -------------------------------------------------------------------
    async def connect(self, timeout: float = 30.0) -> Connected:
        """Open TCP, run the handshake; returns the :class:`Connected` event.

        Raises :class:`NotConnected` (refused/unreachable), :class:`TimedOut` (TCP or
        handshake over ``timeout`` seconds), :class:`ProtocolError`,
        :class:`AuthError`, :class:`FeatureNotSupported`.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        host = self.peer_addr.ip
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(host, self.peer_addr.port, limit=_READ_SIZE), timeout
            )
        except asyncio.TimeoutError:
            raise TimedOut(f"connecting to {self.peer_addr.hostport}: no answer in {timeout:g}s") from None
        except OSError as e:
            raise NotConnected(f"connecting to {self.peer_addr.hostport}: {e.strerror or e}") from e
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._ready = loop.create_future()
        self._writer.write(self.protocol.initiate())
        self._task = asyncio.create_task(self._read_loop(), name=f"msgr2 {self.peer_addr}")
        try:
            return await asyncio.wait_for(asyncio.shield(self._ready), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            await self._shutdown()
            raise TimedOut(f"{self.peer_addr}: msgr2 handshake not done in {timeout:g}s") from None
        except BaseException:
            await self._shutdown()
            raise

    def send(self, msg: Message) -> None:
        """Queue ``msg`` (sent now if the session is up, else once it is).  Non-blocking.

        Raises :class:`ConnectionShutdown` if the connection is closed.
        """
        if self.state is State.CLOSED or self._closing:
            raise ConnectionShutdown(f"{self.peer_addr}: connection closed")
        self.protocol.queue_message(msg)
        self._flush()

    def send_keepalive(self) -> None:
        """Send a KEEPALIVE2 (its ACK updates ``last_keepalive_ack``)."""
        if self.state is State.READY:
            self.protocol.send_keepalive()
            self._flush()

    async def drain(self) -> None:
        """Wait until the socket's write buffer is below its high-water mark."""
        if self._writer is not None and not self._writer.is_closing():
            try:
                await self._writer.drain()
            except (ConnectionError, OSError) as e:
                raise ConnectionShutdown(f"{self.peer_addr}: {e}") from e

    async def close(self) -> None:
        """Close the connection (no ``fault`` callback)."""
        self._closing = True
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self.protocol.state is not State.CLOSED:
            self.protocol.close()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        w, self._writer = self._writer, None
        if w is not None:
            w.close()
            try:
                await w.wait_closed()
            except (ConnectionError, OSError):
                pass

    # -- internals -------------------------------------------------------------------
    def _flush(self) -> None:
        parts = self.protocol.data_to_send_parts()
        if parts and self._writer is not None and not self._writer.is_closing():
            self._writer.writelines(parts)

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while True:
                data = await self._reader.read(_READ_SIZE)
                if not data:
                    raise ConnectionShutdown(f"{self.peer_addr}: connection closed by peer")
                events = self.protocol.receive_data(data)
                self._flush()
                for ev in events:
                    await self._handle_event(ev)
        except asyncio.CancelledError:
            raise
        except (ConnectionError, OSError, Error) as e:
            if not isinstance(e, Error):
                e = ConnectionShutdown(f"{self.peer_addr}: {e}")
            self._fault(e)
        except Exception as e:  # an ops callback failed: still fault exactly once
            log.exception("msgr2 %s: error in reader", self.peer_addr)
            self._fault(e)

    async def _handle_event(self, ev) -> None:
        if isinstance(ev, MessageReceived):
            r = self.ops.dispatch(self, ev.message)
            if inspect.isawaitable(r):
                await r
        elif isinstance(ev, Connected):
            self.connected_info = ev
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(ev)
        elif isinstance(ev, KeepaliveAck):
            self.last_keepalive_ack = ev.timestamp
        elif isinstance(ev, Wait):
            raise ConnectionShutdown(f"{self.peer_addr}: server asked us to WAIT (connection race)")
        elif isinstance(ev, SessionReset):
            log.info("msgr2 %s: session reset by peer", self.peer_addr)
        elif isinstance(ev, Closed):
            raise ConnectionShutdown(f"{self.peer_addr}: {ev.reason}")

    def _fault(self, exc: Exception) -> None:
        if self._faulted:
            return
        self._faulted = True
        self.protocol.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._ready is not None and not self._ready.done():
            # Still in connect(): it raises instead of faulting.
            self._ready.set_exception(exc)
            return
        if self._closing:
            return
        log.debug("msgr2 %s: fault: %s", self.peer_addr, exc)
        try:
            self.ops.fault(self, exc)
        except Exception:
            log.exception("msgr2 %s: ops.fault raised", self.peer_addr)
