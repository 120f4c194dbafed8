"""asyncio transport for one client connection (the kernel's ``ceph_connection``).

A thin layer over a sans-IO protocol core -- msgr2.1's
:class:`pyceph.msgr.protocol.ClientProtocol`, or msgr1's
:class:`pyceph.msgr.v1.ClientProtocolV1` when the peer address is a v1 (legacy) one: a
non-blocking TCP socket (TCP_NODELAY) driven by the event loop's reader/writer
callbacks, a reader task feeding the protocol, and coalesced writes of the protocol's
output: messages queued in one event-loop iteration leave in one gather write
(``sendmsg`` of the frame buffers; data segments are never joined or copied), and
received chunks reach the frame parser without passing through a stream buffer.

``ops`` is the kernel-style ``ceph_connection_operations``: the four auth hooks of
:class:`pyceph.msgr.protocol.AuthHandler` plus

- ``dispatch(con, msg: Message)``: each incoming message, in order (may return an
  awaitable, which the reader awaits before reading on);
- ``fault(con, exc: Exception)``: called once when the connection dies after a
  successful ``connect()`` (EOF, socket error, protocol error); the connection is then
  CLOSED and a new ``Connection`` must be made (optionally with ``session=`` of this one
  to resume a lossless session).

Every state change of the protocol (banner, hello, auth, ..., ready, closed) is one
structured log record on logger ``pyceph.msgr.connection`` with ``extra={"event":
"con_state", "proto": "msgr2", "peer": "v2:IP:PORT/NONCE", "old": "auth", "new":
"auth_signature"}`` (INFO for ``ready``/``open``/``closed``, DEBUG for the handshake steps
in between); the message starts with ``msgr1`` or ``msgr2``.

:func:`choose_addr` picks which of a daemon's addresses to use for the configured modes.

``connect_addr=(ip, port)`` makes the TCP connection go elsewhere (the fault proxy's
connect map, :class:`pyceph.config.ConnectMap`) while HELLO and CLIENT_IDENT still name
``peer_addr``: a msgr2 daemon refuses a client that targets an address not its own.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import socket
from collections import deque
from typing import Any, Iterable

from ..errors import ConnectionShutdown, Error, NotConnected, TimedOut
from ..types import ADDR_TYPE_LEGACY, ADDR_TYPE_MSGR2, ENTITY_TYPE_CLIENT, EntityAddr, EntityAddrvec
from . import features as F
from .message import Message
from .protocol import (
    CON_MODE_NAMES, ClientProtocol, Closed, Connected, KeepaliveAck, MessageReceived, Session, SessionReset, State, Wait,
)
from .v1 import ClientProtocolV1
from .v1 import State as StateV1

_READY_STATES = (State.READY, StateV1.OPEN)
_CLOSED_STATES = (State.CLOSED, StateV1.CLOSED)


def choose_addr(addrs: EntityAddrvec, modes: tuple[str, ...]) -> EntityAddr | None:
    """The address of ``addrs`` to connect to for ``modes`` (``ClientConfig.msgr_modes``):
    the v1 address for ``("legacy",)`` (krbd ``ms_mode=legacy``), else the v2 address,
    else -- a daemon that publishes only v1 (a v1-only ``mon host`` entry or OSD) -- its
    v1 address when the modes allow crc (msgr1 is never offered to a secure-only client,
    it has no encryption).  None when no address fits."""
    if modes == ("legacy",):
        return addrs.get(ADDR_TYPE_LEGACY)
    a = addrs.get(ADDR_TYPE_MSGR2)
    if a is None and "crc" in modes:
        a = addrs.get(ADDR_TYPE_LEGACY)
    return a

log = logging.getLogger(__name__)

_READ_SIZE = 1 << 20  # bytes per recv()
_READ_HIGH = 8 << 20  # stop reading while this much is received but not yet parsed
_WRITE_HIGH = 64 << 10  # drain() waits while more than this is unsent ...
_WRITE_LOW = 16 << 10  # ... until it is down to this (asyncio's transport defaults)
_IOV_MAX = 1024


class _SocketIO:
    """Event-loop plumbing for one connected non-blocking socket.

    Reading: a persistent reader callback ``recv()``s chunks into a list that
    :meth:`read` hands over whole (no stream buffer, no copy); reading pauses while
    more than ``_READ_HIGH`` bytes wait.  Writing: :meth:`write` queues buffers and
    sends them with ``sendmsg`` (gather I/O, partial sends continue from a memoryview)
    so large payloads are never joined or copied into a transport buffer.
    :meth:`close` sends what is queued first, like a transport's ``close()``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._rx: list[bytes] = []
        self._rx_bytes = 0
        self._rx_waiter: asyncio.Future | None = None
        self._eof = False
        self._exc: BaseException | None = None
        self._reading = False
        self._tx: deque = deque()
        self._tx_bytes = 0
        self._writing = False
        self._drain_waiters: list[asyncio.Future] = []
        self.closing = False
        self._closed = loop.create_future()
        self._resume_reading()

    def get_extra_info(self, name: str) -> Any:
        return self._sock if name == "socket" else None

    # -- reading -----------------------------------------------------------------
    def _resume_reading(self) -> None:
        if not self._reading and not (self._eof or self.closing or self._exc is not None):
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True

    def _pause_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._error(e)
            return
        if data:
            self._rx.append(data)
            self._rx_bytes += len(data)
            if self._rx_bytes >= _READ_HIGH:
                self._pause_reading()
        else:
            self._eof = True
            self._pause_reading()
        self._wake_reader()

    def _wake_reader(self) -> None:
        w = self._rx_waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def read(self) -> list[bytes]:
        """Wait for data and return every chunk received so far; ``[]`` at EOF (or once
        closed).  Raises the socket's error (an OSError) once the data before it is read."""
        while not self._rx:
            if self._exc is not None:
                raise self._exc
            if self._eof or self.closing:
                return []
            self._rx_waiter = self._loop.create_future()
            try:
                await self._rx_waiter
            finally:
                self._rx_waiter = None
        chunks, self._rx = self._rx, []
        self._rx_bytes = 0
        self._resume_reading()
        return chunks

    # -- writing -----------------------------------------------------------------
    def write(self, parts: Iterable[bytes | memoryview]) -> None:
        """Queue ``parts`` and send what the socket takes now; the rest goes out when
        it is writable.  Ignored once closing or failed."""
        if self.closing or self._exc is not None:
            return
        tx = self._tx
        for p in parts:
            n = len(p)
            if n:
                tx.append(p)
                self._tx_bytes += n
        if tx and not self._writing:
            self._send()
            if tx and self._exc is None:
                self._loop.add_writer(self._fd, self._on_writable)
                self._writing = True

    def _send(self) -> None:
        tx = self._tx
        while tx:
            bufs = tx if len(tx) <= _IOV_MAX else list(itertools.islice(tx, _IOV_MAX))
            want = sum(map(len, bufs))
            try:
                n = self._sock.sendmsg(bufs)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._error(e)
                return
            self._tx_bytes -= n
            if n == want:
                if bufs is tx:
                    tx.clear()
                else:
                    for _ in range(len(bufs)):
                        tx.popleft()
                continue
            while n:
                b = tx[0]
                if len(b) <= n:
                    n -= len(b)
                    tx.popleft()
                else:
                    tx[0] = memoryview(b)[n:]
                    n = 0
            return  # the socket buffer is full

    def _on_writable(self) -> None:
        self._send()
        if self._tx and self._exc is None:
            return
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        if self._tx_bytes <= _WRITE_LOW:
            self._wake_drainers(None)
        if self.closing:
            self._finish_close()

    def _wake_drainers(self, exc: BaseException | None) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for w in waiters:
            if not w.done():
                if exc is None:
                    w.set_result(None)
                else:
                    w.set_exception(exc)

    async def drain(self) -> None:
        """Wait until unsent output is down to the low-water mark.  Raises
        ConnectionResetError (or the socket's error) if the connection is lost."""
        if self._exc is not None:
            raise self._exc
        if self.closing:
            await asyncio.sleep(0)
            return
        if self._tx_bytes <= _WRITE_HIGH:
            return
        w = self._loop.create_future()
        self._drain_waiters.append(w)
        await w

    # -- errors and closing --------------------------------------------------------
    def _error(self, exc: BaseException) -> None:
        if self._exc is None:
            self._exc = exc
        self._pause_reading()
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        self._tx.clear()
        self._tx_bytes = 0
        self._wake_reader()
        self._wake_drainers(ConnectionResetError(f"Connection lost: {exc}"))
        if self.closing:
            self._finish_close()

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        """Close the socket now, dropping unsent output (a stalled peer never drains it)."""
        self.closing = True
        self._tx.clear()
        self._tx_bytes = 0
        self._wake_reader()
        self._finish_close()

    def close(self) -> None:
        """Stop reading; close the socket once queued output is sent (or failed)."""
        if self.closing:
            return
        self.closing = True
        self._pause_reading()
        self._wake_reader()
        if not self._tx or self._exc is not None:
            self._finish_close()

    def _finish_close(self) -> None:
        if self._closed.done():
            return
        self._pause_reading()
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        self._sock.close()
        self._wake_drainers(ConnectionResetError("Connection lost"))
        self._closed.set_result(None)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)


async def _open_socket(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket (TCP_NODELAY) to ``host:port``; raises OSError."""
    loop = asyncio.get_running_loop()
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError | None = None
    for family, type_, proto, _, addr in infos:
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, addr)
            return sock
        except OSError as e:
            sock.close()
            last = e
        except BaseException:
            sock.close()
            raise
    raise last if last is not None else OSError(f"cannot resolve {host}")


class Connection:
    """One client connection to a Ceph daemon at ``peer_addr``: msgr1 if ``peer_addr``
    is a v1 (``ADDR_TYPE_LEGACY``) address, else msgr2.1.

    ``Connection(addr, ops, entity_type=ENTITY_TYPE_CLIENT, features=...)``; keyword
    arguments ``peer_type``, ``my_addr``, ``global_id``, ``required_features``,
    ``lossy``, ``session`` are passed to :class:`ClientProtocol` /
    :class:`ClientProtocolV1`.  ``proto`` is ``"msgr1"`` or ``"msgr2"``.
    """

    def __init__(
        self,
        peer_addr: EntityAddr,
        ops: Any,
        *,
        entity_type: int = ENTITY_TYPE_CLIENT,
        features: int = F.SUPPORTED_DEFAULT,
        connect_addr: tuple[str, int] | None = None,
        **protocol_kw: Any,
    ) -> None:
        self.peer_addr = peer_addr
        self.ops = ops
        self.connect_addr = connect_addr
        self._user_transition = protocol_kw.pop("on_transition", None)
        core = ClientProtocolV1 if peer_addr.type == ADDR_TYPE_LEGACY else ClientProtocol
        self.proto = "msgr1" if core is ClientProtocolV1 else "msgr2"
        self.protocol = core(
            peer_addr, ops, entity_type=entity_type, features=features, con=self,
            on_transition=self._on_transition, **protocol_kw
        )
        self._io: _SocketIO | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_scheduled = False
        self._task: asyncio.Task | None = None
        self._ready: asyncio.Future | None = None
        self._closing = False
        self._faulted = False
        self.connected_info: Connected | None = None
        self.last_keepalive_ack: tuple[int, int] | None = None
        # Event-loop times (seconds, loop.time()) for liveness checks and status views.
        self.connected_at: float | None = None
        self.last_rx_at: float | None = None
        self.last_keepalive_ack_at: float | None = None
        self.last_keepalive_sent_at: float | None = None

    # -- properties ------------------------------------------------------------------
    @property
    def state(self) -> State | StateV1:
        """The core's state (msgr2 :class:`State` or msgr1 ``v1.State``); see ``ready``."""
        return self.protocol.state

    @property
    def ready(self) -> bool:
        """The session is up (msgr2 READY, msgr1 OPEN)."""
        return self.protocol.state in _READY_STATES

    @property
    def closed(self) -> bool:
        return self.protocol.state in _CLOSED_STATES

    def set_global_id(self, global_id: int) -> None:
        """Our global_id once the monitor assigned it (msgr1 message headers carry it)."""
        self.protocol.global_id = global_id

    def set_authenticated(self) -> None:
        """The monitor authenticated us over MAuth (msgr1): until this call a message
        from it may be at most ``frames.MAX_PREAUTH_LEN`` bytes.  No-op for msgr2."""
        self.protocol.set_authenticated()

    @property
    def peer_global_id(self) -> int:
        return self.protocol.peer_global_id

    @property
    def features(self) -> int:
        """Negotiated feature bits (ours & the peer's); 0 before the session is up."""
        return self.protocol.negotiated_features

    @property
    def con_mode(self) -> int:
        """The msgr2 connection mode in use (CEPH_CON_MODE_CRC/SECURE; 0 before AUTH_DONE)."""
        return self.protocol.con_mode

    @property
    def mode_name(self) -> str:
        """The mode as krbd's ``ms_mode`` names it: ``"legacy"`` (msgr1), ``"crc"`` or
        ``"secure"`` (msgr2.1), ``"unknown"`` before AUTH_DONE."""
        if self.proto == "msgr1":
            return "legacy"
        return CON_MODE_NAMES.get(self.protocol.con_mode, str(self.protocol.con_mode))

    @property
    def session(self) -> Session:
        return self.protocol.session

    @property
    def my_addr(self) -> EntityAddr:
        return self.protocol.my_addr

    def __repr__(self) -> str:
        return f"<Connection {self.peer_addr} {self.state.value}>"

    def _on_transition(self, old: State, new: State) -> None:
        """One structured log record per protocol state change (``event=con_state``)."""
        level = logging.INFO if new in _READY_STATES or new in _CLOSED_STATES else logging.DEBUG
        if log.isEnabledFor(level):
            via = f" via {self.connect_addr[0]}:{self.connect_addr[1]}" if self.connect_addr else ""
            log.log(level, "%s %s%s: %s -> %s", self.proto, self.peer_addr, via, old.value, new.value,
                    extra={"event": "con_state", "proto": self.proto, "peer": str(self.peer_addr),
                           "old": old.value, "new": new.value})
        if self._user_transition is not None:
            self._user_transition(old, new)

    # -- lifecycle -------------------------------------------------------------------
    async def connect(self, timeout: float = 30.0) -> Connected:
        """Open TCP, run the handshake; returns the :class:`Connected` event.

        Raises :class:`NotConnected` (refused/unreachable), :class:`TimedOut` (TCP or
        handshake over ``timeout`` seconds), :class:`ProtocolError`,
        :class:`AuthError`, :class:`FeatureNotSupported`.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        host, port = self.connect_addr or (self.peer_addr.ip, self.peer_addr.port)
        where = self.peer_addr.hostport + (f" (via {host}:{port})" if self.connect_addr else "")
        try:
            sock = await asyncio.wait_for(_open_socket(host, port), timeout)
        except asyncio.TimeoutError:
            raise TimedOut(f"connecting to {where}: no answer in {timeout:g}s") from None
        except OSError as e:
            raise NotConnected(f"connecting to {where}: {e.strerror or e}") from e
        self._loop = loop
        self._io = _SocketIO(loop, sock)
        self._ready = loop.create_future()
        self._io.write([self.protocol.initiate()])
        self._task = asyncio.create_task(self._read_loop(), name=f"{self.proto} {self.peer_addr}")
        try:
            return await asyncio.wait_for(asyncio.shield(self._ready), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            await self._shutdown()
            raise TimedOut(f"{self.peer_addr}: {self.proto} handshake not done in {timeout:g}s") from None
        except BaseException:
            await self._shutdown()
            raise

    def send(self, msg: Message) -> None:
        """Queue ``msg`` (sent now if the session is up, else once it is).  Non-blocking.

        Raises :class:`ConnectionShutdown` if the connection is closed.
        """
        if self.closed or self._closing:
            raise ConnectionShutdown(f"{self.peer_addr}: connection closed")
        self.protocol.queue_message(msg)
        self._schedule_flush()

    def send_keepalive(self) -> None:
        """Send a KEEPALIVE2 (its ACK updates ``last_keepalive_ack``)."""
        if self.ready:
            # The protocol hands back everything pending, the KEEPALIVE2 included:
            # it must go to the socket here (a later _flush finds the queue empty).
            data = self.protocol.send_keepalive()
            if data and self._io is not None and not self._io.is_closing():
                self._io.write([data])
            if self._loop is not None:
                self.last_keepalive_sent_at = self._loop.time()

    async def drain(self) -> None:
        """Wait until the socket's write buffer is below its high-water mark."""
        self._flush()
        if self._io is not None and not self._io.is_closing():
            try:
                await self._io.drain()
            except (ConnectionError, OSError) as e:
                raise ConnectionShutdown(f"{self.peer_addr}: {e}") from e

    def abort(self, exc: Exception) -> None:
        """Fault the connection now (e.g. its peer stopped answering keepalives): the
        socket is closed without sending what is queued, and ``ops.fault(con, exc)`` is
        called once, as for any other fault.  No-op once closed or faulted."""
        if self._faulted or self._closing:
            return
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        io = self._io
        if io is not None:
            io.abort()
        self._fault(exc)

    async def close(self) -> None:
        """Close the connection (no ``fault`` callback)."""
        self._closing = True
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._flush()  # what send() queued goes out before the socket closes
        if not self.closed:
            self.protocol.close()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        io, self._io = self._io, None
        if io is not None:
            io.close()
            try:
                await io.wait_closed()
            except (ConnectionError, OSError):
                pass

    # -- internals -------------------------------------------------------------------
    def _schedule_flush(self) -> None:
        """Send queued output at the end of this event-loop iteration, so that the
        messages queued by every task that runs in it leave in one write."""
        if self._loop is None:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _flush(self) -> None:
        if not self.protocol.has_data_to_send():
            return
        parts = self.protocol.data_to_send_parts()
        if self._io is not None and not self._io.is_closing():
            self._io.write(parts)

    async def _read_loop(self) -> None:
        io = self._io
        assert io is not None
        try:
            while True:
                chunks = await io.read()
                if not chunks:
                    raise ConnectionShutdown(f"{self.peer_addr}: connection closed by peer")
                self.last_rx_at = self._loop.time()
                events = self.protocol.receive_chunks(chunks)
                for ev in events:
                    await self._handle_event(ev)
                # After dispatching: the ACK (and handshake output) then leaves in one
                # write with the requests of the tasks those replies wake up.
                self._schedule_flush()
        except asyncio.CancelledError:
            raise
        except (ConnectionError, OSError, Error) as e:
            if not isinstance(e, Error):
                e = ConnectionShutdown(f"{self.peer_addr}: {e}")
            self._fault(e)
        except Exception as e:  # an ops callback failed: still fault exactly once
            log.exception("%s %s: error in reader", self.proto, self.peer_addr)
            self._fault(e)

    async def _handle_event(self, ev) -> None:
        if isinstance(ev, MessageReceived):
            r = self.ops.dispatch(self, ev.message)
            if inspect.isawaitable(r):
                await r
        elif isinstance(ev, Connected):
            self.connected_info = ev
            self.connected_at = self._loop.time() if self._loop is not None else None
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(ev)
        elif isinstance(ev, KeepaliveAck):
            self.last_keepalive_ack = ev.timestamp
            if self._loop is not None:
                self.last_keepalive_ack_at = self._loop.time()
        elif isinstance(ev, Wait):
            raise ConnectionShutdown(f"{self.peer_addr}: server asked us to WAIT (connection race)")
        elif isinstance(ev, SessionReset):
            log.info("%s %s: session reset by peer", self.proto, self.peer_addr)
        elif isinstance(ev, Closed):
            raise ConnectionShutdown(f"{self.peer_addr}: {ev.reason}")

    def _fault(self, exc: Exception) -> None:
        if self._faulted:
            return
        self._faulted = True
        self.protocol.close()
        if self._io is not None:
            self._io.close()
            self._io = None
        if self._ready is not None and not self._ready.done():
            # Still in connect(): it raises instead of faulting.
            self._ready.set_exception(exc)
            return
        if self._closing:
            return
        log.debug("%s %s: fault: %s", self.proto, self.peer_addr, exc)
        try:
            self.ops.fault(self, exc)
        except Exception:
            log.exception("%s %s: ops.fault raised", self.proto, self.peer_addr)
