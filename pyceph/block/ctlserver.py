"""The map daemon's control socket: the asyncio layer over :mod:`.ctlproto`.

One request per connection.  Every input is bounded: a message is at most
``ctlproto.MAX_MESSAGE`` bytes, the whole request must arrive within
``idle_timeout`` seconds of the connect, at most ``max_conns`` connections are
served at once (one more gets an E_BUSY reply and is closed), a peer that is neither
root nor the daemon's user (SO_PEERCRED) gets E_PERMISSION, and a reply not taken
within ``idle_timeout`` is dropped.  Every bad input gets an error reply (binary,
or the first daemons' text ``error <errno> <Class> <message>`` line for a text
command).  Warnings are rate-limited (:class:`RateLimitedLog`) so that no client
can fill the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import struct
import time
from typing import Any, Awaitable, Callable

from . import ctlproto
from .ctlproto import ControlError, Field, LegacyLine, Message

log = logging.getLogger("pyceph.block.ctl")

Handler = Callable[[Message], Awaitable[list[Field]]]
LegacyHandler = Callable[[], Awaitable[str]]


class RateLimitedLog:
    """At most ``burst`` warnings per ``window`` seconds; the rest are counted and
    summarized in one line when the next window opens."""

    def __init__(self, logger: logging.Logger, burst: int = 10, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.burst = burst
        self.window = window
        self.clock = clock
        self.start = clock()
        self.count = 0
        self.suppressed = 0

    def warning(self, fmt: str, *args: Any) -> bool:
        """Log unless over the budget; returns whether it was logged."""
        now = self.clock()
        if now - self.start >= self.window:
            if self.suppressed:
                self.logger.warning("%d similar warnings suppressed in the last %.0fs", self.suppressed,
                                    now - self.start)
            self.start, self.count, self.suppressed = now, 0, 0
        if self.count >= self.burst:
            self.suppressed += 1
            return False
        self.count += 1
        self.logger.warning(fmt, *args)
        return True


_PROTOCOL_STATUS = (ctlproto.E_MALFORMED, ctlproto.E_VERSION, ctlproto.E_TOO_BIG)


def peer_uid(writer: asyncio.StreamWriter) -> int | None:
    """The connecting process's uid (SO_PEERCRED: struct ucred pid, uid, gid), or None."""
    sock = writer.get_extra_info("socket")
    try:
        _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    except (OSError, AttributeError):
        return None
    return uid


def _legacy_error(exc: BaseException) -> bytes:
    code = getattr(exc, "errno", None) or errno.EIO
    if isinstance(exc, ControlError):
        name = "ProtocolError" if exc.status in _PROTOCOL_STATUS else "InvalidArgumentError"
    else:
        name = type(exc).__name__
    msg = getattr(exc, "message", None) or str(exc)
    return f"error {code} {name} {msg}".replace("\n", " ").encode() + b"\n"


class ControlServer:
    """Serves ``handlers`` (op -> coroutine(Message) -> reply fields) and the text
    commands in ``legacy`` (command -> coroutine() -> reply line)."""

    def __init__(self, handlers: dict[int, Handler], legacy: dict[str, LegacyHandler], *,
                 idle_timeout: float = 10.0, max_conns: int = 16, warn: RateLimitedLog | None = None):
        self.handlers = handlers
        self.legacy = legacy
        self.idle_timeout = idle_timeout
        self.max_conns = max(1, max_conns)
        self.warn = warn or RateLimitedLog(log)
        self.active = 0
        self.stats = {"connections": 0, "refused_busy": 0, "idle_timeouts": 0, "bad_requests": 0}
        self.server: asyncio.AbstractServer | None = None

    async def start(self, path: str) -> asyncio.AbstractServer:
        # backlog bounded too: a flood waits in the kernel, not in our memory
        self.server = await asyncio.start_unix_server(self.serve, path=path, backlog=self.max_conns,
                                                      limit=ctlproto.MAX_MESSAGE)
        return self.server

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats["connections"] += 1
        uid = peer_uid(writer)
        if uid is None or uid not in (0, os.geteuid()):
            self.warn.warning("control: refusing a connection from uid %s", uid)
            with contextlib.suppress(Exception):
                writer.write(ctlproto.error_reply(0, ControlError(
                    ctlproto.E_PERMISSION, f"uid {uid} may not control this mapping")))
                await asyncio.wait_for(writer.drain(), 1.0)
            writer.close()
            return
        if self.active >= self.max_conns:
            self.stats["refused_busy"] += 1
            self.warn.warning("control: %d connections open, refusing another", self.active)
            with contextlib.suppress(Exception):
                writer.write(ctlproto.error_reply(0, ControlError(
                    ctlproto.E_BUSY, f"too many control connections ({self.active}); retry")))
                await asyncio.wait_for(writer.drain(), 1.0)
            writer.close()
            return
        self.active += 1
        try:
            out = await self._one(reader)
            if out:
                writer.write(out)
                await asyncio.wait_for(writer.drain(), self.idle_timeout)
        except Exception as e:  # noqa: BLE001 - a bad client must not stop the daemon
            self.warn.warning("control connection: %r", e)
        finally:
            self.active -= 1
            writer.close()

    async def _one(self, reader: asyncio.StreamReader) -> bytes:
        rx = ctlproto.Receiver(ctlproto.KIND_REQUEST)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.idle_timeout
        op = 0
        try:
            msg: Message | LegacyLine | None = None
            while msg is None:
                left = deadline - loop.time()
                try:
                    if left <= 0:
                        raise asyncio.TimeoutError
                    data = await asyncio.wait_for(reader.read(4096), left)
                except asyncio.TimeoutError:
                    self.stats["idle_timeouts"] += 1
                    raise ControlError(ctlproto.E_IDLE_TIMEOUT,
                                       f"request not complete within {self.idle_timeout:g}s "
                                       f"({rx.pending} bytes received)") from None
                if not data:
                    rx.eof()
                    return b""  # connected and closed without a word: nothing to answer
                msg = rx.feed(data)
            if isinstance(msg, LegacyLine):
                return await self._legacy(msg.command)
            op = msg.op
            ctlproto.check_request(msg)
            handler = self.handlers.get(msg.op)
            if handler is None:
                raise ControlError(ctlproto.E_UNKNOWN_OP, f"daemon too old for {ctlproto.op_name(msg.op)}")
            fields = await handler(msg)
            return ctlproto.reply(msg.op, ctlproto.OK, fields)
        except ControlError as e:
            self.stats["bad_requests"] += 1
            self.warn.warning("control: %s: %s", e.status_name, e.message)
            if rx.legacy:
                return _legacy_error(e)
            return ctlproto.error_reply(op, e)
        except Exception as e:  # noqa: BLE001 - the operation failed: E_FAILED with its errno
            if rx.legacy:
                return _legacy_error(e)
            return ctlproto.error_reply(op, e)

    async def _legacy(self, command: str) -> bytes:
        handler = self.legacy.get(command)
        if handler is None:
            raise ControlError(ctlproto.E_UNKNOWN_OP, "unknown command", errno=errno.EINVAL)
        return (await handler()).replace("\n", " ").encode() + b"\n"
