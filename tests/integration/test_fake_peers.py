"""Fake daemons that misbehave on the wire: the client drops them cleanly and goes on.

Monitors: a fake monitor on 127.0.0.1 is listed FIRST in ``mon host`` before the dev
cluster's real one (hunting order pinned by disabling ``random.shuffle``).  It sends a
banner with impossible msgr2 feature bits, a frame with a bad preamble CRC, half a frame
then silence, or a preamble announcing an absurd segment length.  The client must log a
typed error naming the fake, leave no task or socket behind, and open its session with
the real monitor in bounded time.  (A garbage/HTTP banner, a msgr1 banner, a bad banner
length and a black-hole monitor are covered by ``test_errors.py``.)

OSDs: their addresses come from the OSDMap, so the OSD-facing
:class:`pyceph.msgr.connection.Connection` is driven directly against a fake server, with
a dummy ``ops`` (auth none, as the kernel's ``ceph_connection_operations``): every bad
behaviour before the session is up must make ``connect()`` raise a typed
:class:`pyceph.errors.Error` within its timeout (and never call ``fault``), and every bad
behaviour after it must produce exactly one ``fault()`` with a typed error.  These need no
cluster.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import pytest

from pyceph.config import ClientConfig
from pyceph.errors import (
    ConnectionShutdown,
    DecodeError,
    Error,
    FeatureNotSupported,
    ProtocolError,
    TimedOut,
)
from pyceph.mon.client import MonClient
from pyceph.msgr import frames as fr
from pyceph.msgr.connection import Connection
from pyceph.msgr.message import Message
from pyceph.msgr.protocol import MSG_CONNECT_LOSSY
from pyceph.osd import messages as osdm
from pyceph.types import ADDR_TYPE_MSGR2, ENTITY_TYPE_MON, ENTITY_TYPE_OSD, EntityAddr, EntityAddrvec, PgT

# -- bytes a misbehaving peer sends ---------------------------------------------------------------

GOOD_BANNER = fr.encode_banner()
#: msgr2 banner whose "required" bits include ones no client has (and no revision 1 support)
IMPOSSIBLE_FEATURES_BANNER = fr.encode_banner(supported=1 << 62, required=(1 << 63) | (1 << 5))
#: a server that requires only compression (which we do not support)
REQUIRES_COMPRESSION_BANNER = fr.encode_banner(supported=3, required=3)


def hello_frame(entity_type: int = ENTITY_TYPE_MON) -> bytes:
    return fr.encode_frame(fr.Hello(entity_type, EntityAddr(ADDR_TYPE_MSGR2, 0, "127.0.0.1", 40000)).to_frame())


def bad_preamble_crc_frame() -> bytes:
    raw = bytearray(hello_frame())
    raw[28] ^= 0xFF  # the preamble's crc32c
    return bytes(raw)


def absurd_segment_preamble(seg0: int = 0xFFFFFFF0, seg3: int = 0) -> bytes:
    """A well-formed preamble (valid CRC) announcing a 4 GiB control segment or data segment."""
    nseg = 4 if seg3 else 1
    pre = struct.pack("<BB" + "IH" * 4 + "2x", fr.TAG_MESSAGE if seg3 else fr.TAG_HELLO, nseg,
                      seg0, 8, 1 if seg3 else 0, 0, 1 if seg3 else 0, 0, seg3, 0)
    return pre + struct.pack("<I", fr.crc32c(pre, 0))


def half_frame() -> bytes:
    raw = hello_frame()
    return raw[: len(raw) // 2]


# -- a fake server -------------------------------------------------------------------------------


@dataclass
class FakePeer:
    """An asyncio server on 127.0.0.1 running ``behave(reader, writer, peer)`` per connection;
    if it returns True the fake hangs up, else it keeps reading until the client does.

    Records, per connection, when it was accepted and when the client hung up (EOF), and
    what the client sent."""

    behave: Callable[[asyncio.StreamReader, asyncio.StreamWriter, "FakePeer"], Awaitable[bool | None]]
    port: int = 0
    accepted: list[float] = field(default_factory=list)
    closed_by_client: list[float] = field(default_factory=list)
    received: bytearray = field(default_factory=bytearray)
    server: asyncio.base_events.Server | None = None
    handlers: set = field(default_factory=set)
    writers: list = field(default_factory=list)
    stopping: bool = False

    async def start(self) -> "FakePeer":
        self.server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _on_client(self, reader, writer):
        self.handlers.add(asyncio.current_task())
        self.writers.append(writer)
        self.accepted.append(time.monotonic())
        try:
            if await self.behave(reader, writer, self):
                return  # the fake hangs up
            # keep the connection open, reading (and recording) until the client leaves
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                self.received += data
            if not self.stopping:
                self.closed_by_client.append(time.monotonic())
        except (ConnectionError, asyncio.IncompleteReadError):
            self.closed_by_client.append(time.monotonic())
        finally:
            writer.close()

    async def stop(self) -> None:
        # Hang up on every client (their handlers then see EOF and end: cancelling them
        # would make asyncio log the cancellation as an error).
        if self.server is not None:
            self.stopping = True
            self.server.close()
            for w in self.writers:
                w.transport.abort()
            await asyncio.wait_for(asyncio.gather(*self.handlers, return_exceptions=True), 5)
            await self.server.wait_closed()

    @property
    def addr(self) -> str:
        return f"v2:127.0.0.1:{self.port}"


def sends(*chunks: bytes, wait_banner: bool = False):
    """A behaviour: (optionally read the client's banner, then) send ``chunks``, then go silent."""

    async def behave(reader, writer, peer):
        if wait_banner:
            peer.received += await reader.readexactly(len(GOOD_BANNER))
        for c in chunks:
            writer.write(c)
            await writer.drain()

    return behave


def msgr2_tasks(port: int) -> list[asyncio.Task]:
    """Live tasks of pyceph connections to 127.0.0.1:``port``."""
    return [t for t in asyncio.all_tasks() if not t.done() and f"127.0.0.1:{port}" in t.get_name()]


# -- fake monitors first in 'mon host' -------------------------------------------------------------

MON_CASES = {
    # (bytes the fake sends, text expected in the logged error, stalls until the hunt gives up)
    "bad-preamble-crc": ((GOOD_BANNER, bad_preamble_crc_frame()), "preamble crc", False),
    "absurd-segment-length": ((GOOD_BANNER, absurd_segment_preamble()), "during the handshake", False),
    "half-frame-then-silence": ((GOOD_BANNER, half_frame()), "not done in", True),
    "banner-then-silence": ((GOOD_BANNER,), "not done in", True),
    "impossible-feature-bits": ((IMPOSSIBLE_FEATURES_BANNER,), "requires msgr2 features", False),
    "requires-compression": ((REQUIRES_COMPRESSION_BANNER,), "requires msgr2 features", False),
}
HUNT_INTERVAL = 1.0  # s: how long the client waits for a silent monitor (its minimum)

def _real_v2(cluster) -> str:
    (v2,) = [a for a in cluster.mon_addrs if a.startswith("v2:")]
    return v2


@pytest.mark.parametrize(
    "case",
    list(MON_CASES),
)
def test_bad_monitor_is_dropped_for_the_real_one(cluster, monkeypatch, caplog, case):
    chunks, expect_text, stalls = MON_CASES[case]
    monkeypatch.setattr(random, "shuffle", lambda seq, *a, **k: None)  # keep 'mon host' order
    real = _real_v2(cluster)

    async def go():
        fake = await FakePeer(sends(*chunks)).start()
        cfg = ClientConfig.load(str(cluster.conf_path), mon_host=f"[{fake.addr}] [{real}]",
                                overrides={"mon_client_hunt_interval": str(HUNT_INTERVAL)})
        monc = MonClient(cfg)
        t0 = time.monotonic()
        try:
            await monc.open_session(timeout=30)
            elapsed = time.monotonic() - t0
            leaked = msgr2_tasks(fake.port)
            cur = monc.cur_mon
            epoch = monc.osdmap.epoch if monc.osdmap else None
            await asyncio.sleep(0.2)  # let the fake see the hang-up
        finally:
            await monc.close()
            await fake.stop()
        return fake, elapsed, leaked, cur, epoch

    with caplog.at_level(logging.INFO, logger="pyceph.mon"):
        fake, elapsed, leaked, cur, epoch = asyncio.run(go())

    assert fake.accepted, "the fake monitor was never tried"
    assert fake.received.startswith(GOOD_BANNER[:8]), "the client did not even send its banner"
    assert cur in (real, f"{real}/0"), cur
    assert epoch and epoch > 0
    assert not leaked, f"tasks left on the fake's connection: {leaked}"
    # The client hung up on the fake (no socket left open), and did so at once unless the
    # fake stalled, in which case it waited one hunt interval, not the whole session timeout.
    assert fake.closed_by_client, "the client never closed its connection to the fake"
    dropped_after = fake.closed_by_client[0] - fake.accepted[0]
    if stalls:
        assert HUNT_INTERVAL * 0.8 <= dropped_after < HUNT_INTERVAL + 2.0, dropped_after
    else:
        assert dropped_after < HUNT_INTERVAL, dropped_after  # on the bytes, not on a timeout
    assert elapsed < HUNT_INTERVAL + 10.0, elapsed
    # the typed error, logged naming the fake monitor (the text tells which check fired)
    lines = [r.getMessage() for r in caplog.records if f"127.0.0.1:{fake.port}" in r.getMessage()
             and expect_text in r.getMessage()]
    assert lines, [r.getMessage() for r in caplog.records]
    # ... and nothing logged as an unexpected exception (a traceback) along the way
    assert not [r for r in caplog.records if r.exc_info and r.name.startswith("pyceph")], caplog.text


# -- the OSD-facing Connection against fake OSDs ----------------------------------------------------


class DummyOps:
    """``ceph_connection_operations`` with auth none, recording dispatches and faults."""

    def __init__(self, decode_replies: bool = False):
        self.faults: list[Exception] = []
        self.dispatched: list[Message] = []
        self.decode_replies = decode_replies

    def get_auth_request(self, con):
        return 1, [1], b""  # CEPH_AUTH_NONE, crc mode

    def handle_auth_reply_more(self, con, payload):
        raise ProtocolError("auth none has no AUTH_REPLY_MORE")

    def handle_auth_done(self, con, global_id, con_mode, payload):
        return b"", b""  # no session key: AUTH_SIGNATUREs are all zeros

    def handle_auth_bad_method(self, con, method, result, allowed_methods, allowed_modes):
        raise ProtocolError("bad method")

    def dispatch(self, con, msg):
        self.dispatched.append(msg)
        if self.decode_replies:
            osdm.OSD_MESSAGES[msg.type].from_message(msg)  # as an OSD session does

    def fault(self, con, exc):
        self.faults.append(exc)


OSD_NONCE = 4711


class FakeOSD:
    """Server side of the msgr2.1 crc-mode handshake with auth none, enough to bring a
    client session to READY; ``bad[step]`` replaces what is sent at ``step`` (banner,
    hello, auth_done, auth_signature, server_ident) and ends the script there."""

    def __init__(self, bad: dict[str, bytes | None] | None = None, after: tuple[bytes, ...] = (),
                 then_close: bool = False):
        # bad: step -> bytes sent instead (None: nothing), then the script stops there;
        # after: sent once READY; then_close: hang up after bad/after
        self.bad = bad or {}
        self.after = after
        self.then_close = then_close
        self.peer = FakePeer(self._behave)

    async def start(self) -> "FakeOSD":
        await self.peer.start()
        return self

    async def stop(self) -> None:
        await self.peer.stop()

    @property
    def addr(self) -> EntityAddr:
        return EntityAddr(ADDR_TYPE_MSGR2, OSD_NONCE, "127.0.0.1", self.peer.port)

    async def _send(self, writer, step: str, good: bytes) -> bool:
        """Send ``good`` unless ``step`` is replaced; False if the replacement ends the script."""
        if step in self.bad:
            bad = self.bad[step]
            if bad:
                writer.write(bad)
                await writer.drain()
            return False
        writer.write(good)
        await writer.drain()
        return True

    async def _behave(self, reader, writer, peer) -> bool:
        try:
            await self._script(reader, writer, peer)
        except ConnectionResetError:
            return True
        return self.then_close

    async def _script(self, reader, writer, peer) -> None:
        if not await self._send(writer, "banner", GOOD_BANNER):
            return
        peer.received += await reader.readexactly(len(GOOD_BANNER))
        rd = fr.FrameReader()

        async def recv() -> fr.Frame:
            while True:
                f = rd.next_frame()
                if f is not None:
                    return f
                data = await reader.read(65536)
                if not data:
                    raise ConnectionResetError("client left")
                peer.received += data
                rd.push(data)

        client_hello = fr.decode_control(await recv())
        assert isinstance(client_hello, fr.Hello)
        if not await self._send(writer, "hello", hello_frame(ENTITY_TYPE_OSD)):
            return
        assert (await recv()).tag == fr.TAG_AUTH_REQUEST
        if not await self._send(writer, "auth_done", fr.encode_frame(fr.AuthDone(4242, 1, b"").to_frame())):
            return
        assert (await recv()).tag == fr.TAG_AUTH_SIGNATURE
        if not await self._send(writer, "auth_signature", fr.encode_frame(fr.AuthSignature(bytes(32)).to_frame())):
            return
        ident = fr.decode_control(await recv())
        assert isinstance(ident, fr.ClientIdent)
        server_ident = fr.ServerIdent(EntityAddrvec((self.addr,)), 7, 1, ident.supported_features, 0,
                                      MSG_CONNECT_LOSSY, 0)
        if not await self._send(writer, "server_ident", fr.encode_frame(server_ident.to_frame())):
            return
        await asyncio.sleep(0.05)  # READY: connect() returns; now the post-handshake script
        for chunk in self.after:
            writer.write(chunk)
            await writer.drain()


def message_frame(msg: Message, corrupt_crc: bool = False) -> bytes:
    raw = bytearray(fr.encode_frame(fr.frame_from_message(msg)))
    if corrupt_crc:
        raw[fr.PREAMBLE_LEN + fr.HEADER2_LEN + fr.CRC_LEN] ^= 0xFF  # first byte of the front segment
    return bytes(raw)


def reply_msg(front: bytes, seq: int = 1) -> Message:
    m = Message(type=osdm.CEPH_MSG_OSD_OPREPLY, front=front, version=8, compat_version=2, seq=seq)
    return m


_VALID_REPLY_FRONT = osdm.MOSDOpReply("obj", PgT(1, 2), 0, 0, 5).to_message(0).front

PRE_READY = {
    # name: (replaced step -> what is sent instead, expected typed error)
    "garbage-banner": ({"banner": b"\x00\xffNOT A CEPH BANNER" * 4}, ProtocolError),
    "msgr1-banner": ({"banner": b"ceph v027" + bytes(200)}, ProtocolError),
    "impossible-feature-bits": ({"banner": IMPOSSIBLE_FEATURES_BANNER}, FeatureNotSupported),
    "bad-preamble-crc": ({"hello": bad_preamble_crc_frame()}, ProtocolError),
    "absurd-control-segment": ({"hello": absurd_segment_preamble()}, ProtocolError),
    "absurd-data-segment": ({"hello": absurd_segment_preamble(seg0=41, seg3=0xFFFFFFFF)}, ProtocolError),
    "half-frame-then-silence": ({"hello": half_frame()}, TimedOut),
    "silence-after-banner": ({"hello": None}, TimedOut),
    "garbage-hello-payload": ({"hello": fr.encode_frame(fr.Frame(fr.TAG_HELLO, [b"\x04\x07garbage"]))},
                              DecodeError),
    "hello-from-a-monitor": ({"hello": hello_frame(ENTITY_TYPE_MON)}, ProtocolError),
    "frame-out-of-order": ({"hello": fr.encode_frame(fr.Ack(5).to_frame())}, ProtocolError),
    "secure-mode-auth-done": ({"auth_done": fr.encode_frame(fr.AuthDone(1, 2, b"").to_frame())},
                              FeatureNotSupported),
    "bad-auth-signature": ({"auth_signature": fr.encode_frame(fr.AuthSignature(b"\x01" * 32).to_frame())},
                           ProtocolError),
    "wrong-server-ident-addr": (
        {"server_ident": fr.encode_frame(fr.ServerIdent(
            EntityAddrvec((EntityAddr(ADDR_TYPE_MSGR2, 1, "127.0.0.9", 1),)), 7, 1, 0, 0, 1, 0).to_frame())},
        ProtocolError),
    "half-frame-then-close": ({"auth_signature": half_frame()}, ConnectionShutdown),  # the fake hangs up
}
CONNECT_TIMEOUT = 2.0


async def _run_pre_ready(bad, then_close):
    osd = await FakeOSD(bad=bad, then_close=then_close).start()
    ops = DummyOps()
    con = Connection(osd.addr, ops, peer_type=ENTITY_TYPE_OSD)
    t0 = time.monotonic()
    err = None
    try:
        await con.connect(CONNECT_TIMEOUT)
    except Exception as e:  # noqa: BLE001 - asserted below
        err = e
    elapsed = time.monotonic() - t0
    await asyncio.sleep(0.1)
    leaked = msgr2_tasks(osd.peer.port)
    closed = list(osd.peer.closed_by_client)
    await con.close()
    await osd.stop()
    return err, elapsed, ops, leaked, closed


@pytest.mark.parametrize("case", list(PRE_READY))
def test_fake_osd_misbehaving_before_ready_fails_connect(case):
    bad, expected = PRE_READY[case]
    then_close = case.endswith("then-close")
    err, elapsed, ops, leaked, closed = asyncio.run(_run_pre_ready(bad, then_close))
    assert isinstance(err, expected), repr(err)
    assert isinstance(err, Error)  # typed: a pyceph error, not a raw OSError/struct.error
    assert elapsed < CONNECT_TIMEOUT + 1.0, elapsed
    if expected is not TimedOut:
        assert elapsed < CONNECT_TIMEOUT, elapsed  # refused on the bytes, not after the timeout
    assert ops.faults == [], "connect() errors must not also call fault()"
    assert not leaked, leaked
    if not then_close:
        assert closed, "the client left its socket to the fake open"


POST_READY = {
    # name: (bytes the fake sends once the session is READY, close after?, expected fault type)
    "bad-segment-crc": ((message_frame(reply_msg(_VALID_REPLY_FRONT), corrupt_crc=True),), False, ProtocolError),
    "absurd-segment-length": ((absurd_segment_preamble(seg0=41, seg3=0xFFFFFFFF),), False, ProtocolError),
    "garbage": ((b"\xde\xad\xbe\xef" * 64,), False, ProtocolError),
    "message-seq-gap": ((message_frame(reply_msg(_VALID_REPLY_FRONT, seq=7)),), False, ProtocolError),
    "undecodable-reply": ((message_frame(reply_msg(b"\xff\xff\xff\x7f garbage")),), False, DecodeError),
    "handshake-frame-when-ready": ((fr.encode_frame(fr.AuthDone(1, 1, b"").to_frame()),), False, ProtocolError),
    "half-frame-then-close": ((half_frame(),), True, ConnectionShutdown),
    "close": ((), True, ConnectionShutdown),
}


@pytest.mark.parametrize("case", list(POST_READY))
def test_fake_osd_misbehaving_when_ready_faults_once(case):
    after, then_close, expected = POST_READY[case]

    async def go():
        osd = await FakeOSD(after=after, then_close=then_close).start()
        ops = DummyOps(decode_replies=True)
        con = Connection(osd.addr, ops, peer_type=ENTITY_TYPE_OSD)
        await con.connect(CONNECT_TIMEOUT)
        t0 = time.monotonic()
        while not ops.faults and time.monotonic() - t0 < 3.0:
            await asyncio.sleep(0.02)
        fault_after = time.monotonic() - t0
        await asyncio.sleep(0.2)  # a second fault would show up here
        leaked = msgr2_tasks(osd.peer.port)
        closed = list(osd.peer.closed_by_client)
        with pytest.raises(Error):
            con.send(reply_msg(b"x"))  # the connection is CLOSED: typed refusal
        await con.close()
        await osd.stop()
        return ops, fault_after, leaked, closed

    ops, fault_after, leaked, closed = asyncio.run(go())
    assert len(ops.faults) == 1, ops.faults
    assert isinstance(ops.faults[0], expected), repr(ops.faults[0])
    assert fault_after < 2.0, fault_after
    assert not leaked, leaked
    if not then_close:
        assert closed, "the client kept its socket to the misbehaving OSD open"


def test_fake_osd_stalling_mid_frame_when_ready_hangs_nothing():
    """Half a frame then silence on a READY session: no fault (the peer may be slow), and
    close() completes at once, cancelling the reader."""

    async def go():
        osd = await FakeOSD(after=(half_frame(),)).start()
        ops = DummyOps()
        con = Connection(osd.addr, ops, peer_type=ENTITY_TYPE_OSD)
        await con.connect(CONNECT_TIMEOUT)
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        await asyncio.wait_for(con.close(), 2.0)
        closing = time.monotonic() - t0
        await asyncio.sleep(0.1)
        leaked = msgr2_tasks(osd.peer.port)
        closed = list(osd.peer.closed_by_client)
        await osd.stop()
        return ops, closing, leaked, closed

    ops, closing, leaked, closed = asyncio.run(go())
    assert ops.faults == []
    assert closing < 0.5 and not leaked and closed


def test_fake_osd_handshake_reaches_ready():
    """The fake itself is faithful: a well-behaved fake OSD gives a READY session that
    delivers a valid reply (so the failures above are the misbehaviour's, not the fake's)."""

    async def go():
        osd = await FakeOSD(after=(message_frame(reply_msg(_VALID_REPLY_FRONT)),)).start()
        ops = DummyOps(decode_replies=True)
        con = Connection(osd.addr, ops, peer_type=ENTITY_TYPE_OSD)
        info = await con.connect(CONNECT_TIMEOUT)
        for _ in range(100):
            if ops.dispatched:
                break
            await asyncio.sleep(0.02)
        await con.close()
        await osd.stop()
        return info, ops

    info, ops = asyncio.run(go())
    assert info.global_id == 7 and info.lossy
    assert [m.type for m in ops.dispatched] == [osdm.CEPH_MSG_OSD_OPREPLY] and ops.faults == []


# -- a hostile monitor claiming huge frames before authentication ----------------------------------
#
# Issue 9: anything answering on a monitor's address made the client buffer ~200 MB per
# connection attempt.  The fake below announces, on every connection, a HELLO frame of
# 16 MiB + 3 x 64 MiB (what Ceph's per-segment limits alone would let through) and then
# streams zeros as long as the client reads.  The client (a real `pyceph status` process)
# must give up with one line and a non-zero exit, its peak RSS (VmHWM) close to that of
# the same run against a fake sending a 32-byte bad frame.

_HWM_WRAPPER = """
import runpy, sys
sys.argv = ["pyceph", *sys.argv[1:]]
try:
    runpy.run_module("pyceph.cli.pyceph_cli", run_name="__main__")
finally:
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
    sys.stderr.write(f"\\nVMHWM_KB {hwm}\\n")
"""


def huge_claim_preamble() -> bytes:
    mb = 1 << 20
    pre = struct.pack("<BB" + "IH" * 4 + "2x", fr.TAG_HELLO, 4, 16 * mb, 8, 64 * mb, 8, 64 * mb, 8, 64 * mb, 4096)
    return pre + struct.pack("<I", fr.crc32c(pre, 0))


def streams_zeros_after(first: bytes):
    async def behave(reader, writer, peer):
        writer.write(GOOD_BANNER + first)
        zeros = bytes(1 << 20)
        for _ in range(256):  # up to 256 MiB, as fast as the client reads
            writer.write(zeros)
            await writer.drain()
    return behave


def _status_against(port: int, tmp_path) -> tuple[int, list[str], int]:
    """Run `pyceph status` against the fake mon; (exit code, stderr lines, VmHWM in KiB)."""
    import os
    import subprocess
    import sys

    conf = tmp_path / "ceph.conf"
    conf.write_text(f"[global]\n\tmon host = v2:127.0.0.1:{port}\n\tmon client hunt interval = 1\n")
    keyring = tmp_path / "keyring"
    keyring.write_text("[client.admin]\n\tkey = AQBzn1VpAAAAABAAw4HQsIm1qExn5nJ8nE6Vzg==\n")
    os.chmod(keyring, 0o600)
    r = subprocess.run([sys.executable, "-c", _HWM_WRAPPER, "-c", str(conf), "-k", str(keyring),
                        "--connect-timeout", "5", "status"],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    (hwm,) = [int(x.split()[1]) for x in lines if x.startswith("VMHWM_KB ")]
    return r.returncode, [x for x in lines if not x.startswith("VMHWM_KB ")], hwm


def test_hostile_monitor_claiming_huge_frames_costs_no_memory(tmp_path):
    async def run(behave, sub):
        fake = await FakePeer(behave).start()
        try:
            d = tmp_path / sub
            d.mkdir()
            return await asyncio.to_thread(_status_against, fake.port, d), len(fake.accepted)
        finally:
            await fake.stop()

    (rc0, err0, hwm0), _ = asyncio.run(run(sends(GOOD_BANNER, bad_preamble_crc_frame()), "baseline"))
    (rc, err, hwm), attempts = asyncio.run(run(streams_zeros_after(huge_claim_preamble()), "hostile"))
    assert rc0 != 0 and rc != 0
    assert attempts >= 2, "the client tried the hostile monitor only once"
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith("pyceph:") or "127.0.0.1" in err[0] or "monitor" in err[0], err
    # 200+ MiB claimed per attempt; allow 32 MiB above the baseline run for noise.
    assert hwm < hwm0 + (32 << 10), f"peak RSS {hwm} KiB vs {hwm0} KiB against a harmless fake"
