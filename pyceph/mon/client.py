"""MonClient: the session with the monitors (the kernel's ``net/ceph/mon_client.c``).

It hunts for a monitor (every monitor of the MonMap, not only those in ceph.conf, in
random order), authenticates with cephx inside the msgr2 handshake -- or, on a msgr1
session (``ms_mode=legacy`` or a monitor with only a v1 address), with MAuth messages
once the connection is open, as the kernel's ``__open_session``/``handle_auth_reply`` --
fetches service tickets with MAuth, subscribes to the MonMap and OSDMaps, keeps the current OSDMap
(full and incremental maps), and runs mon commands.

It plugs into the generic messenger as its ``ops`` (``dispatch``, ``fault`` and the
auth hooks), like ``mon_con_ops`` in the kernel.

One messenger address for the whole client (``my_addr``: type ANY, a random nonce, the
IP each server reports): the mon and every OSD see the same ``client.<global_id>`` at the
same address, so an OSD blocklist entry for it covers all our sessions, as for librados.
The global_id is reclaimed on every new mon session (cephx presents the old ticket, which
``auth allow insecure global id reclaim = false`` requires), so the OSDs' request ids
(``client.<global_id>`` + tid) stay the same across mon failovers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import time
from typing import Any, Callable

from ..auth.cephx import CephxClient, con_modes_from_names
from ..auth.crypto import CryptoKey
from ..auth.hooks import AuthHooksMixin
from ..config import ClientConfig, connect_map_for
from ..errors import (
    NotConnected,
    AuthError,
    ConfigError,
    Error,
    MonitorUnreachable,
    ProtocolError,
    TimedOut,
    make_ex,
)
from ..msgr.connection import Connection, choose_addr
from ..msgr.message import Message
from ..msgr.protocol import CON_MODE_CRC
from ..osdmap import OSDMap
from ..types import (
    ADDR_TYPE_ANY,
    ENTITY_TYPE_MGR,
    ENTITY_TYPE_MON,
    ENTITY_TYPE_NAMES,
    ENTITY_TYPE_OSD,
    EntityAddr,
)
from .messages import (
    MAuth,
    MAuthReply,
    MMonCommand,
    MMonCommandAck,
    MMonGetVersion,
    MMonGetVersionReply,
    MMonMap,
    MPoolOp,
    MPoolOpReply,
    MMonSubscribe,
    MOSDMap,
    encode_auth_hello,
)
from .monmap import MonMap

log = logging.getLogger("pyceph.mon")

CEPH_AUTH_CEPHX = 2
_SUB_ONETIME = 1


class MonClient(AuthHooksMixin):
    """Session with the monitor cluster.

    ``MonClient(config)``; ``await monc.open_session(timeout)`` authenticates and waits
    for the first MonMap and OSDMap.  ``monc.osdmap`` is the current :class:`OSDMap`;
    ``monc.add_osdmap_listener(fn)`` calls ``fn(osdmap)`` after each new epoch.

    Errors: :class:`AuthError` (wrong key/entity, raised at once, not retried on other
    monitors), :class:`MonitorUnreachable` (no monitor answered within ``timeout``; its
    ``addrs`` names every address tried).
    """

    def __init__(self, config: ClientConfig):
        self.config = config
        if config.key is None:
            raise ConfigError(f"no key for {config.name}; pyceph needs cephx")
        try:
            secret = CryptoKey.from_base64(config.key)
        except Error as e:
            raise ConfigError(f"bad key for {config.name} in {config.key_source or 'the configuration'}: "
                              f"{e.message}") from None
        # msgr2 modes offered: ms_mon_client_mode to monitors, ms_client_mode to
        # OSDs/MGRs, krbd's ms_mode overriding both (ClientConfig.msgr_modes).
        self.auth = CephxClient(
            config.name, secret, ENTITY_TYPE_MON | ENTITY_TYPE_OSD | ENTITY_TYPE_MGR,
            con_modes=con_modes_from_names(config.msgr_modes(True)),
            service_con_modes=con_modes_from_names(config.msgr_modes(False)),
        )
        self.monmap: MonMap | None = None
        self.osdmap: OSDMap | None = None
        self.con: Connection | None = None
        self.cur_mon: str | None = None
        self.last_mon: str | None = None
        self.fsid: bytes | None = None
        self._closing = False
        self._tid = 0
        self._tickets_event: asyncio.Event | None = None
        self._map_event: asyncio.Event | None = None
        self._osdmap_listeners: list[Callable[[OSDMap], Any]] = []
        self._osdmap_waiters: list[tuple[int, asyncio.Future]] = []
        self._reopen_task: asyncio.Task | None = None
        self._renew_task: asyncio.Task | None = None
        self._keepalive_task: asyncio.Task | None = None
        # tid -> (MMonCommand / MPoolOp / MMonGetVersion message, future): resent on every
        # new session, like the kernel's generic requests, so they survive a mon failover.
        self._pending: dict[int, tuple[Any, asyncio.Future]] = {}
        self.state = "closed"
        self.hostname = socket.gethostname()
        self.sessions_opened = 0
        self.faults = 0
        self.last_fault: str | None = None
        self.last_fault_at: float | None = None  # Unix time
        # Our messenger address (IP filled in by each server's HELLO): one nonce for all
        # of this client's connections, like a librados messenger.
        self.my_addr = EntityAddr(ADDR_TYPE_ANY, int.from_bytes(os.urandom(4), "little") or 1)
        self.client_addr: EntityAddr | None = None  # as the current mon sees us
        self.connect_map = connect_map_for(config)
        self._on_tickets: list[Callable[[], Any]] = []
        # A msgr1 mon session being authenticated with MAuth: (connection, future).
        self._v1_auth: tuple[Connection, asyncio.Future] | None = None

    def _set_state(self, new: str, why: str = "") -> None:
        """Every transition is one structured log line (``event=monc_state``)."""
        old, self.state = self.state, new
        if old != new:
            log.info("monc state %s -> %s%s", old, new, f" ({why})" if why else "",
                     extra={"event": "monc_state", "old": old, "new": new, "mon": self.cur_mon, "why": why})

    # -- public API ---------------------------------------------------------------------
    @property
    def global_id(self) -> int:
        return self.auth.global_id

    def add_osdmap_listener(self, fn: Callable[[OSDMap], Any]) -> None:
        """Call ``fn(osdmap)`` after every new epoch: once per incremental applied (so
        no intermediate epoch is missed), once for a full map (which may skip epochs)."""
        self._osdmap_listeners.append(fn)

    def add_tickets_listener(self, fn: Callable[[], Any]) -> None:
        """Call ``fn()`` after each MAuthReply that updated our service tickets."""
        self._on_tickets.append(fn)

    def connect_addr(self, addr: EntityAddr) -> tuple[str, int] | None:
        """Where to TCP-connect for the daemon at ``addr``: the connect map's entry
        (re-read if the file changed), or None to connect directly.  Raises ConfigError
        for a malformed map."""
        if self.connect_map is None:
            return None
        return self.connect_map.lookup(addr.ip, addr.port)

    def renew_tickets(self) -> bool:
        """Ask the monitor for the service tickets we lack or should renew now (the
        renewal loop also does, every 5 s).  False if there is no mon session."""
        if self.con is None:
            return False
        try:
            if self.auth.need_service_tickets(time.time()):
                self._request_tickets()
        except Error as e:
            log.warning("ticket renewal: %s", e)
            return False
        return True

    def status(self) -> dict[str, Any]:
        """The client's view of its mon session (JSON-able): state, monitor, protocol
        (msgr1/msgr2), global_id, session and fault counters, last fault, our address,
        map epochs, pending commands, keepalive ack age (s), and per-service ticket
        validity (s from now)."""
        con = self.con
        now = time.time()
        try:
            lt = asyncio.get_running_loop().time()
        except RuntimeError:
            lt = None
        ka_age = None
        if con is not None and lt is not None and con.last_keepalive_ack_at is not None:
            ka_age = round(lt - con.last_keepalive_ack_at, 3)
        tickets = {}
        for svc, th in sorted(self.auth.tickets.items()):
            tickets[ENTITY_TYPE_NAMES.get(svc, hex(svc))] = {
                "valid": bool(th.have_key_flag and (not th.expires or now < th.expires)),
                "expires_in": round(th.expires - now, 1) if th.expires else None,
                "renew_in": round(th.renew_after - now, 1) if th.expires else None,
                "secret_id": th.secret_id,
            }
        return {
            "state": self.state,
            "mon": self.cur_mon,
            "connection_state": con.state.value if con is not None else None,
            "con_mode": getattr(con, "mode_name", None) if con is not None else None,
            "protocol": con.proto if con is not None else None,  # msgr1 / msgr2
            "global_id": self.global_id,
            "addr": str(self.client_addr) if self.client_addr is not None else None,
            "sessions_opened": self.sessions_opened,
            "faults": self.faults,
            "last_fault": self.last_fault,
            "last_fault_age": round(now - self.last_fault_at, 1) if self.last_fault_at else None,
            "last_keepalive_ack_age": ka_age,
            "pending_commands": len(self._pending),
            "monmap_epoch": self.monmap.epoch if self.monmap is not None else None,
            "osdmap_epoch": self.osdmap.epoch if self.osdmap is not None else None,
            "tickets": tickets,
        }

    def candidate_addrs(self) -> list[EntityAddr]:
        """One address per known monitor (MonMap first, else ceph.conf), as
        :func:`pyceph.msgr.connection.choose_addr` picks it for ``ms_mode`` /
        ``ms_mon_client_mode``: v2, or v1 for ``legacy`` and for v1-only monitors."""
        out: list[EntityAddr] = []
        vecs = []
        if self.monmap is not None:
            vecs = [self.monmap.get_addrs(r) for r in range(len(self.monmap.ranks))]
        if not vecs:
            vecs = self.config.mon_addrs
        modes = self.config.msgr_modes(for_mon=True)
        for v in vecs:
            a = choose_addr(v, modes)
            if a is not None:
                out.append(a)
        return out

    async def open_session(self, timeout: float | None = None) -> None:
        """Hunt for a monitor, authenticate, get tickets, the MonMap and an OSDMap.

        ``timeout`` in seconds (default ``client_mount_timeout``).  Raises
        :class:`AuthError`, :class:`MonitorUnreachable`, :class:`ConfigError`.
        """
        if timeout is None:
            timeout = self.config.get_float("client_mount_timeout", 30.0)
        self._closing = False
        self.last_mon = None
        self._tickets_event = asyncio.Event()
        self._map_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not self.candidate_addrs():
            got = [str(a) for v in self.config.mon_addrs for a in v.addrs]
            modes = self.config.msgr_modes(for_mon=True)
            raise ConfigError(
                f"no monitor address in 'mon host' usable with ms_mode {'/'.join(modes)}; got: " + ", ".join(got)
            )
        await self._hunt(deadline)
        remaining = max(0.1, deadline - loop.time())
        try:
            await asyncio.wait_for(self._tickets_event.wait(), remaining)
            await asyncio.wait_for(self._map_event.wait(), max(0.1, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise TimedOut(f"monitor {self.cur_mon} did not send tickets and maps within {timeout:g}s") from None
        self._renew_task = asyncio.create_task(self._renew_loop(), name="monc renew")
        self._keepalive_task = asyncio.create_task(self._keepalive_loop(), name="monc keepalive")

    async def close(self) -> None:
        self._closing = True
        for t in (self._reopen_task, self._renew_task, self._keepalive_task):
            if t is not None:
                t.cancel()
        if self.con is not None:
            await self.con.close()
            self.con = None
        for _, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(make_ex(-108, "monitor session closed"))
        self._pending.clear()
        self._set_state("closed", "client shutdown")

    async def command(self, cmd: dict | str, inbuf: bytes = b"", timeout: float = 30.0) -> tuple[int, bytes, str]:
        """Run a mon command (JSON).  Returns ``(ret, outbuf, outs)``; ``ret`` is 0 or -errno.

        The command is resent to the next monitor if the session faults before the reply
        (as the kernel does with its generic requests).  ``timeout`` seconds; 0 waits
        forever.  Raises :class:`TimedOut`.
        """
        if isinstance(cmd, dict):
            cmd = json.dumps(cmd)
        self._tid += 1
        tid = self._tid
        fut = asyncio.get_running_loop().create_future()
        msg = MMonCommand(fsid=self.fsid or bytes(16), cmd=[cmd], inbl=inbuf, tid=tid)
        self._pending[tid] = (msg, fut)
        if self.con is not None:
            self.con.send(msg.to_message(self._features()))
        try:
            ack: MMonCommandAck = await (asyncio.wait_for(fut, timeout) if timeout else fut)
        except asyncio.TimeoutError:
            raise TimedOut(f"mon command {cmd} timed out after {timeout:g}s") from None
        finally:
            self._pending.pop(tid, None)
        return ack.r, ack.outbl, ack.rs

    async def _generic_request(self, msg, tid: int, what: str, timeout: float):
        fut = asyncio.get_running_loop().create_future()
        self._pending[tid] = (msg, fut)
        if self.con is not None:
            self.con.send(msg.to_message(self._features()))
        try:
            return await (asyncio.wait_for(fut, timeout) if timeout else fut)
        except asyncio.TimeoutError:
            raise TimedOut(f"{what} timed out after {timeout:g}s") from None
        finally:
            self._pending.pop(tid, None)

    async def pool_op(self, pool: int, op: int, *, snapid: int = 0, name: str = "",
                      timeout: float = 30.0) -> tuple[int, int, bytes]:
        """Send an MPoolOp (``op`` = POOL_OP_*, see :mod:`pyceph.mon.messages`) and return
        ``(reply_code, epoch, response_data)`` from the MPoolOpReply: ``reply_code`` 0 or
        -errno, ``epoch`` the osdmap epoch holding the change.  Resent to the next monitor
        after a fault, as Objecter's pool ops.  ``timeout`` seconds (0 = forever); raises
        :class:`TimedOut`.  Callers wait for ``epoch`` themselves (:meth:`wait_for_osdmap`).
        """
        self._tid += 1
        tid = self._tid
        msg = MPoolOp(fsid=self.fsid or bytes(16), pool=pool, op=op, snapid=snapid, name=name, tid=tid)
        msg.paxos.version = self.osdmap.epoch if self.osdmap is not None else 0
        reply: MPoolOpReply = await self._generic_request(msg, tid, f"pool op {op:#x} on pool {pool}", timeout)
        log.info("pool op %#x pool %d snapid %d -> %d (epoch %d)", op, pool, snapid, reply.reply_code,
                 reply.epoch, extra={"event": "pool_op", "op": op, "pool": pool, "result": reply.reply_code,
                                     "epoch": reply.epoch})
        return reply.reply_code, reply.epoch, reply.response_data

    async def get_version(self, what: str = "osdmap", timeout: float = 30.0) -> tuple[int, int]:
        """``(newest, oldest)`` version of map ``what`` the monitors hold (MMonGetVersion,
        kernel ``ceph_monc_get_version``).  Raises :class:`TimedOut`."""
        self._tid += 1
        tid = self._tid
        reply: MMonGetVersionReply = await self._generic_request(
            MMonGetVersion(handle=tid, what=what), tid, f"get_version {what}", timeout)
        return reply.version, reply.oldest_version

    async def wait_for_latest_osdmap(self, timeout: float = 30.0) -> OSDMap:
        """Wait until we hold the newest OSDMap the monitors have (librados
        ``wait_for_latest_osdmap``): after a mon command that changed it."""
        newest, _ = await self.get_version("osdmap", timeout)
        return await self.wait_for_osdmap(newest, timeout or None)

    async def wait_for_osdmap(self, min_epoch: int, timeout: float | None = None) -> OSDMap:
        """Wait until ``osdmap.epoch >= min_epoch`` (asking the monitor for newer maps)."""
        if self.osdmap is not None and self.osdmap.epoch >= min_epoch:
            return self.osdmap
        fut = asyncio.get_running_loop().create_future()
        self._osdmap_waiters.append((min_epoch, fut))
        self.request_osdmap(onetime=True)
        if timeout:
            return await asyncio.wait_for(fut, timeout)
        return await fut

    def request_osdmap(self, onetime: bool = False) -> None:
        """(Re)subscribe to OSDMaps newer than the one we hold."""
        start = (self.osdmap.epoch + 1) if self.osdmap is not None else 0
        what = {"osdmap": (start, _SUB_ONETIME if onetime else 0)}
        if self.con is not None:
            self._send(MMonSubscribe(what=what, hostname=self.hostname).to_message(self._features()))

    # -- hunting ------------------------------------------------------------------------
    async def _hunt(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        tried: list[str] = []
        errors: list[str] = []
        hunt_interval = self.config.get_float("mon_client_hunt_interval", 3.0)
        attempt = 0
        while True:
            addrs = self.candidate_addrs()
            random.shuffle(addrs)
            if self.last_mon is not None and len(addrs) > 1:
                # The kernel picks a random monitor other than the one that failed.
                addrs.sort(key=lambda a: str(a) == self.last_mon)
            for addr in addrs:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise MonitorUnreachable(
                        f"no monitor reachable; tried {', '.join(dict.fromkeys(tried))}"
                        + (f" ({'; '.join(dict.fromkeys(errors))})" if errors else ""),
                        addrs=list(dict.fromkeys(tried)),
                    )
                per_try = min(remaining, max(hunt_interval, 1.0) * (1 + attempt))
                tried.append(str(addr))
                self._set_state("hunting", f"trying {addr}")
                con = None
                try:
                    con = Connection(
                        addr,
                        self,
                        peer_type=ENTITY_TYPE_MON,
                        global_id=self.auth.global_id or None,
                        my_addr=self.my_addr,
                        connect_addr=self.connect_addr(addr),
                    )
                    t_try = loop.time()
                    await con.connect(per_try)
                    if con.proto == "msgr1":
                        # MAuth is msgr1's handshake: same budget (a mon out of quorum never answers)
                        await self._authenticate_v1(con, max(0.1, per_try - (loop.time() - t_try)))
                except AuthError:
                    if con is not None:
                        await con.close()
                    raise  # a wrong key is wrong on every monitor: say so at once
                except (TimedOut, ProtocolError, Error, OSError) as e:
                    if con is not None:
                        await con.close()
                    errors.append(str(e))
                    log.info("mon %s: %s", addr, e)
                    continue
                self.con = con
                self.cur_mon = str(addr)
                self.client_addr = con.my_addr
                self.sessions_opened += 1
                self._set_state("open", f"global_id {self.auth.global_id}")
                self._session_opened()
                return
            attempt += 1
            # Back off with jitter before walking the list again.
            await asyncio.sleep(min(max(0.0, deadline - loop.time()), random.uniform(0.1, 0.5) * attempt))

    async def _authenticate_v1(self, con: Connection, timeout: float) -> None:
        """cephx over MAuth on an open msgr1 mon connection (msgr1 has no auth frames).

        MAuth(protocol 0, hello: our methods, name and old global_id) -> MAuthReply
        with the server challenge and our global_id -> MAuth(cephx, CephXAuthenticate)
        -> MAuthReply with the tickets.  Kernel ``net/ceph/mon_client.c``
        (``__open_session``, ``handle_auth_reply``), Ceph ``MonConnection::_init_auth``.
        Raises AuthError (refused, wrong key), TimedOut.
        """
        fut = asyncio.get_running_loop().create_future()
        self._v1_auth = (con, fut)
        self.auth.get_auth_request(con)  # restarts the cephx exchange (challenge first)
        hello = encode_auth_hello(self.auth.entity_name, self.auth.global_id, (CEPH_AUTH_CEPHX,))
        con.send(MAuth(protocol=0, auth_payload=hello,
                       monmap_epoch=self.monmap.epoch if self.monmap else 0).to_message(con.features))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            raise TimedOut(f"mon {con.peer_addr}: no MAuth reply within {timeout:g}s") from None
        finally:
            self._v1_auth = None
        con.set_global_id(self.auth.global_id)

    def _handle_v1_auth_reply(self, con: Connection, fut: asyncio.Future, r: MAuthReply) -> None:
        """One MAuthReply of :meth:`_authenticate_v1`: answer the challenge, or take the
        tickets and finish."""
        try:
            if r.result < 0:
                # the wording of msgr2's AUTH_BAD_METHOD refusal
                raise AuthError(f"cephx: monitor refused {self.auth.entity_name}: authentication failed with "
                                f"result {r.result}" + (f" ({r.result_msg})" if r.result_msg else ""),
                                errno=-r.result)
            if r.protocol != CEPH_AUTH_CEPHX:
                raise AuthError(f"monitor offers auth protocol {r.protocol}; pyceph needs cephx")
            if r.global_id:
                con.set_global_id(r.global_id)
            if self.auth.starting:
                payload = self.auth.handle_auth_reply_more(con, r.result_bl)
                con.send(MAuth(protocol=CEPH_AUTH_CEPHX, auth_payload=payload,
                               monmap_epoch=self.monmap.epoch if self.monmap else 0).to_message(con.features))
                return
            self.auth.handle_auth_done(con, r.global_id, CON_MODE_CRC, r.result_bl)
            con.set_authenticated()  # lifts msgr1's pre-authentication message bound
        except Exception as e:
            if not fut.done():
                fut.set_exception(e)
            return
        if not fut.done():
            fut.set_result(None)

    def _session_opened(self) -> None:
        what = {"monmap": ((self.monmap.epoch + 1) if self.monmap else 0, 0)}
        what["osdmap"] = ((self.osdmap.epoch + 1) if self.osdmap else 0, 0)
        self._send(MMonSubscribe(what=what, hostname=self.hostname).to_message(self._features()))
        # msgr2 auth normally brings the service tickets along with the auth ticket.
        if self.auth.need_service_tickets(time.time()):
            self._request_tickets()
        elif self._tickets_event is not None:
            self._tickets_event.set()
        # Commands sent to a dead monitor are resent to the new one (kernel: __resend_generic_request).
        for msg, fut in list(self._pending.values()):
            if not fut.done():
                self.con.send(msg.to_message(self._features()))

    def _request_tickets(self) -> None:
        if self.con is None:
            return
        payload = self.auth.build_service_ticket_request()
        msg = MAuth(protocol=CEPH_AUTH_CEPHX, auth_payload=payload,
                    monmap_epoch=self.monmap.epoch if self.monmap else 0)
        self._send(msg.to_message(self._features()))

    async def _renew_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(5.0)
            try:
                if self.auth.need_service_tickets(time.time()):
                    self._request_tickets()
            except Error as e:
                log.warning("ticket renewal: %s", e)

    async def _keepalive_loop(self) -> None:
        """KEEPALIVE2 every ``mon_client_ping_interval`` s; a session that hears nothing
        (no KEEPALIVE2_ACK, no message) for ``mon_client_ping_timeout`` s faults (silent
        peer: kernel ``ceph_con_keepalive_expired``) and the hunt starts."""
        interval = self.config.get_float("mon_client_ping_interval", 10.0)
        timeout = self.config.get_float("mon_client_ping_timeout", 30.0)
        loop = asyncio.get_running_loop()
        while not self._closing:
            await asyncio.sleep(min(interval, timeout / 3))
            con = self.con
            if con is None or not con.ready:
                continue
            seen = max(t for t in (con.connected_at, con.last_rx_at, con.last_keepalive_ack_at, 0.0)
                       if t is not None)
            if loop.time() - seen > timeout:
                con.abort(TimedOut(f"mon {self.cur_mon}: silent for {loop.time() - seen:.1f}s "
                                   f"(mon_client_ping_timeout {timeout:g}s)"))
                continue
            con.send_keepalive()

    def _features(self) -> int:
        return self.con.features if self.con is not None and self.con.features else 0xFFFFFFFFFFFFFFFF

    def _send(self, msg: Message) -> None:
        if self.con is None:
            raise make_ex(-107, "no monitor session")
        self.con.send(msg)

    # -- connection ops (ceph_connection_operations; auth hooks from AuthHooksMixin) ------
    def dispatch(self, con: Connection, msg: Message) -> None:
        v1 = self._v1_auth
        if v1 is not None and con is v1[0]:
            if msg.type == MAuthReply.MSG_TYPE:
                self._handle_v1_auth_reply(con, v1[1], MAuthReply.from_message(msg))
            else:
                log.debug("mon: message type %d before authentication; ignored", msg.type)
            return
        if con is not self.con:
            return
        t = msg.type
        if t == MOSDMap.MSG_TYPE:
            self._handle_osdmap(MOSDMap.from_message(msg))
        elif t == MMonMap.MSG_TYPE:
            m = MMonMap.from_message(msg)
            self.monmap = m.monmap if m.monmap is not None else MonMap.decode(m.monmap_bl)
            self.fsid = self.monmap.fsid
        elif t == MAuthReply.MSG_TYPE:
            r = MAuthReply.from_message(msg)
            try:
                self.auth.handle_service_ticket_reply(r.result_bl, r.result, r.result_msg)
            except AuthError as e:
                log.error("service tickets: %s", e)
                return
            if self._tickets_event is not None:
                self._tickets_event.set()
            for fn in list(self._on_tickets):
                try:
                    fn()
                except Exception:
                    log.exception("tickets listener failed")
        elif t in (MMonCommandAck.MSG_TYPE, MPoolOpReply.MSG_TYPE, MMonGetVersionReply.MSG_TYPE):
            if t == MMonCommandAck.MSG_TYPE:
                reply, tid = MMonCommandAck.from_message(msg), msg.tid
            elif t == MPoolOpReply.MSG_TYPE:
                reply, tid = MPoolOpReply.from_message(msg), msg.tid
            else:
                reply = MMonGetVersionReply.from_message(msg)
                tid = reply.handle
            ent = self._pending.get(tid)
            if ent is not None and not ent[1].done():
                ent[1].set_result(reply)
        else:
            log.debug("mon: ignoring message type %d", t)

    def fault(self, con: Connection, exc: Exception) -> None:
        v1 = self._v1_auth
        if v1 is not None and con is v1[0] and not v1[1].done():
            v1[1].set_exception(exc)  # the msgr1 MAuth exchange lost its connection
        if con is not self.con or self._closing:
            return
        self.faults += 1
        self.last_fault = str(exc)
        self.last_fault_at = time.time()
        self.last_mon = self.cur_mon
        self.con = None
        self._set_state("hunting", f"fault on {self.cur_mon}: {exc}")
        if self._reopen_task is None or self._reopen_task.done():
            self._reopen_task = asyncio.get_running_loop().create_task(self._reopen(), name="monc reopen")

    async def _reopen(self) -> None:
        """Hunt until a monitor answers or we close: exponential backoff with jitter
        between rounds (0.1 s doubling to 10 s), every MonMap monitor tried each round."""
        backoff = 0.1
        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                await self._hunt(loop.time() + max(5.0, 2 * self.config.get_float("mon_client_hunt_interval", 3.0)))
                return
            except AuthError as e:
                log.error("mon re-auth failed: %s", e)
            except Error as e:
                log.warning("mon hunt: %s", e)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 10.0)

    # -- OSDMaps ---------------------------------------------------------------------------
    def handle_osdmap_message(self, m: MOSDMap, source: str = "mon") -> None:
        """Apply an MOSDMap from any peer (OSDs push maps to clients behind the times).

        Maps of another cluster are ignored; a gap is filled by asking the monitor,
        if we have a session with one (otherwise the next session catches up)."""
        if self.fsid is not None and m.fsid not in (self.fsid, bytes(16)):
            log.warning("osdmap from %s has another fsid; ignored", source)
            return
        try:
            self._handle_osdmap(m)
        except NotConnected:
            pass

    def _handle_osdmap(self, m: MOSDMap) -> None:
        """Apply what an MOSDMap brings, as ``ceph_osdc_handle_map`` does.

        Incrementals are applied in order from our epoch + 1, and the listeners run after
        each one (the OSD client must see every epoch: an OSD drops ops sent before an
        interval change it went through); a full map is used when the incremental chain
        does not reach (or we have no map yet).  A gap makes us resubscribe from our epoch.
        """
        cur = self.osdmap
        if cur is not None:
            e = cur.epoch + 1
            while e in m.incremental_maps or e in m.maps:
                if e in m.incremental_maps:
                    cur.apply_incremental(OSDMap.Incremental.decode(m.incremental_maps[e]))
                else:
                    cur = OSDMap.decode(m.maps[e])
                self._new_osdmap(cur)
                e += 1
        if m.maps:
            last = max(m.maps)
            if cur is None or last > cur.epoch:
                cur = OSDMap.decode(m.maps[last])
                self._new_osdmap(cur)
        if cur is None:
            # Only incrementals we cannot apply: ask for a full map.
            self._send(MMonSubscribe(what={"osdmap": (0, 0)}, hostname=self.hostname).to_message(self._features()))
            return
        if m.last > cur.epoch:
            log.info("osdmap gap: hold %d, peer has %d; resubscribing", cur.epoch, m.last)
            self._send(MMonSubscribe(what={"osdmap": (cur.epoch + 1, 0)}, hostname=self.hostname).to_message(self._features()))

    def _new_osdmap(self, cur: OSDMap) -> None:
        self.osdmap = cur
        log.debug("osdmap epoch %d", cur.epoch)
        if self._map_event is not None:
            self._map_event.set()
        for fn in list(self._osdmap_listeners):
            try:
                fn(cur)
            except Exception:
                log.exception("osdmap listener failed")
        still = []
        for epoch, fut in self._osdmap_waiters:
            if cur.epoch >= epoch:
                if not fut.done():
                    fut.set_result(cur)
            else:
                still.append((epoch, fut))
        self._osdmap_waiters = still
