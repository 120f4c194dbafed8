"""The map daemon's control protocol (pyceph.block.ctlproto, .ctlserver): codec,
compatibility rules, bounds, transactions.  The server is driven over a real
socketpair-less unix socket in the event loop (no daemon, no sleeps: timeouts are
a few tens of ms)."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import socket
import struct
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyceph import errors
from pyceph.block import control, ctlproto, ctlserver
from pyceph.block.ctlproto import ControlError, Field

# --- codec -------------------------------------------------------------------------


def test_round_trip_every_type():
    fields = [ctlproto.field("force"), ctlproto.field("setting", "queue_depth=64"),
              ctlproto.field("setting", "osd_request_timeout=30"), ctlproto.field("size", 1 << 40),
              ctlproto.field("stats", {"read": 3, "x": [1, "é"]}), Field(999, ctlproto.T_S64, False, -5),
              Field(998, ctlproto.T_BYTES, False, b"\0\xff")]
    data = ctlproto.request(ctlproto.OP_CONFIGURE, fields)
    assert data[:4] == b"\0PCT" and data[4] == ctlproto.VERSION
    msg = ctlproto.decode(data)
    assert msg.op == ctlproto.OP_CONFIGURE and msg.kind == ctlproto.KIND_REQUEST
    assert msg.fields == fields
    assert msg.all("setting") == ["queue_depth=64", "osd_request_timeout=30"]
    # the mandatory bit travels in the tag number, as DRBD's genl flag does
    tag = struct.unpack_from("<H", data, ctlproto.HEADER.size)[0]
    assert tag == 1 | ctlproto.F_MANDATORY


def test_tag_numbers_and_status_codes_are_declared_once():
    assert len({t.name for t in ctlproto.TAGS.values()}) == len(ctlproto.TAGS)
    assert all(0 < n <= ctlproto.TAG_MASK and t.number == n for n, t in ctlproto.TAGS.items())
    assert len({v[0] for v in ctlproto.STATUS.values()}) == len(ctlproto.STATUS)
    for op, (takes, needs) in ctlproto.REQUESTS.items():
        assert needs <= takes <= set(ctlproto.TAGS) and op in ctlproto.OP_NAMES


def test_receiver_takes_bytes_one_at_a_time_and_is_bounded():
    data = ctlproto.request(ctlproto.OP_STATS, [ctlproto.field("sender", "t")])
    rx = ctlproto.Receiver(ctlproto.KIND_REQUEST)
    for b in data[:-1]:
        assert rx.feed(bytes([b])) is None
    assert rx.feed(data[-1:]).op == ctlproto.OP_STATS
    big = ctlproto.HEADER.pack(ctlproto.MAGIC, 1, 1, 2, ctlproto.MAX_MESSAGE)
    with pytest.raises(ControlError) as ei:
        ctlproto.Receiver().feed(big)
    assert ei.value.status == ctlproto.E_TOO_BIG and ei.value.errno == errno.EMSGSIZE
    with pytest.raises(ControlError) as ei:
        ctlproto.request(ctlproto.OP_CONFIGURE, [ctlproto.field("setting", "x" * ctlproto.MAX_MESSAGE)])
    assert ei.value.status == ctlproto.E_TOO_BIG
    with pytest.raises(ControlError) as ei:
        ctlproto.Receiver().feed(b"x" * ctlproto.MAX_LEGACY_LINE)
    assert ei.value.status == ctlproto.E_MALFORMED
    assert ctlproto.Receiver().feed(b"stats\n") == ctlproto.LegacyLine("stats")


def test_version_skew_in_the_header_is_refused_with_e_version():
    data = bytearray(ctlproto.request(ctlproto.OP_STATS))
    data[4] = 2  # a newer framing
    with pytest.raises(ControlError) as ei:
        ctlproto.decode(bytes(data))
    assert ei.value.status == ctlproto.E_VERSION and "version 2" in ei.value.message


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_receiver_raises_only_control_error(data):
    rx = ctlproto.Receiver()
    try:
        msg = rx.feed(data)
        if isinstance(msg, ctlproto.Message):
            ctlproto.check_request(msg)
    except ControlError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bodies_behind_a_valid_header(body):
    data = ctlproto.HEADER.pack(ctlproto.MAGIC, 1, 1, ctlproto.OP_CONFIGURE, len(body)) + body
    try:
        msg = ctlproto.decode(data)
        ctlproto.check_request(msg)
        ctlproto.parse_settings(msg)
    except ControlError:
        pass


# --- compatibility rules (DRBD's) ------------------------------------------------------


def test_unknown_mandatory_tag_is_refused_as_too_old_and_optional_ignored():
    newer = ctlproto.decode(ctlproto.request(ctlproto.OP_STATS, [Field(4000, ctlproto.T_U32, True, 1)]))
    with pytest.raises(ControlError) as ei:
        ctlproto.check_request(newer)
    assert ei.value.status == ctlproto.E_UNKNOWN_TAG and ei.value.tag == 4000
    assert ei.value.message == "daemon too old for stats with tag 4000" and ei.value.errno == errno.EOPNOTSUPP
    optional = ctlproto.decode(ctlproto.request(ctlproto.OP_STATS, [Field(4000, 77, False, b"anything")]))
    ctlproto.check_request(optional)  # ignored
    # a known mandatory tag the operation does not take is refused too (force on stats)
    with pytest.raises(ControlError, match="stats with tag 1 .force."):
        ctlproto.check_request(ctlproto.decode(ctlproto.request(ctlproto.OP_STATS, [ctlproto.field("force")])))
    with pytest.raises(ControlError) as ei:
        ctlproto.check_request(ctlproto.decode(ctlproto.request(77)))
    assert ei.value.status == ctlproto.E_UNKNOWN_OP and ei.value.message == "daemon too old for operation 77"
    with pytest.raises(ControlError) as ei:
        ctlproto.check_request(ctlproto.decode(ctlproto.request(ctlproto.OP_CONFIGURE)))
    assert ei.value.status == ctlproto.E_MISSING_TAG
    bad_type = ctlproto.decode(ctlproto.request(ctlproto.OP_CONFIGURE, [Field(2, ctlproto.T_U32, True, 5)]))
    with pytest.raises(ControlError) as ei:
        ctlproto.check_request(bad_type)
    assert ei.value.status == ctlproto.E_BAD_TAG


def test_replies_round_trip_into_values_or_typed_errors():
    ok = ctlproto.decode(ctlproto.reply(ctlproto.OP_INFO, fields=[ctlproto.field("info", {"size": 1}),
                                                                  Field(3000, ctlproto.T_STR, False, "new")]))
    assert ctlproto.check_reply(ok, ctlproto.OP_INFO)["info"] == {"size": 1}
    failed = ctlproto.decode(ctlproto.error_reply(ctlproto.OP_UNMAP, errors.NoSpace("final flush: full")))
    with pytest.raises(errors.NoSpace) as ei:
        ctlproto.check_reply(failed, ctlproto.OP_UNMAP)
    assert ei.value.errno == errno.ENOSPC and ei.value.message == "final flush: full"
    newer = ctlproto.decode(ctlproto.reply(ctlproto.OP_INFO, fields=[Field(3000, ctlproto.T_STR, True, "x")]))
    with pytest.raises(ControlError, match="client too old"):
        ctlproto.check_reply(newer, ctlproto.OP_INFO)


# --- configure: one transaction ------------------------------------------------------


def test_transact_applies_all_or_rolls_back():
    state = {"a": 1, "b": 2, "c": 3}

    def set_(k, v):
        if v == "boom":
            raise ValueError("cannot")
        state[k] = v

    before = ctlproto.transact({"a": 10, "b": 20}, state.get, set_)
    assert before == {"a": 1, "b": 2} and state == {"a": 10, "b": 20, "c": 3}
    with pytest.raises(ControlError) as ei:
        ctlproto.transact({"a": 100, "b": 200, "c": "boom"}, state.get, set_)
    assert ei.value.status == ctlproto.E_APPLY_FAILED
    assert state == {"a": 10, "b": 20, "c": 3}


def test_parse_settings_refuses_duplicates_and_garbage():
    def msg(*s):
        return ctlproto.decode(ctlproto.request(ctlproto.OP_CONFIGURE, [ctlproto.field("setting", x) for x in s]))

    assert ctlproto.parse_settings(msg("queue_depth= 8", "osd_request_timeout=3")) == {
        "queue_depth": "8", "osd_request_timeout": "3"}
    for bad in (("queue_depth=1", "queue_depth=2"), ("novalue",), ("=3",)):
        with pytest.raises(ControlError) as ei:
            ctlproto.parse_settings(msg(*bad))
        assert ei.value.status == ctlproto.E_BAD_VALUE


# --- the server over a real unix socket, and version skew both ways ---------------------


class _Loop:
    """An event loop in a thread serving a ControlServer (or an old text daemon)."""

    def __init__(self, path: str, server_factory):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(server_factory(path), self.loop).result(5)

    def close(self):
        async def stop():
            self.server.close()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / "ctl.sock")


def _new_server(calls, idle=0.2, cap=4, warn=None):
    async def stats(msg):
        calls.append("stats")
        return [ctlproto.field("stats", {"read": 7})]

    async def unmap(msg):
        calls.append(("unmap", msg.has("force")))
        return []

    async def legacy_unmap():
        calls.append("legacy-unmap")
        return "ok"

    async def legacy_stats():
        return json.dumps({"read": 7})

    srv = ctlserver.ControlServer({ctlproto.OP_STATS: stats, ctlproto.OP_UNMAP: unmap},
                                  {"unmap": legacy_unmap, "stats": legacy_stats},
                                  idle_timeout=idle, max_conns=cap, warn=warn)

    async def start(path):
        await srv.start(path)
        return srv

    return srv, start


def _raw(path, data, shut=True):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        try:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except BrokenPipeError:
            pass  # refused before reading (E_BUSY): the reply is still there
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_server_answers_new_and_old_clients_and_every_bad_input(sock_path):
    calls = []
    srv, start = _new_server(calls)
    lp = _Loop(sock_path, start)
    try:
        assert control.request(sock_path, ctlproto.OP_STATS, [], 5) == {"status": 0, "stats": {"read": 7}}
        # an older CLI (text lines) against this daemon
        assert _raw(sock_path, b"stats\n") == b'{"read": 7}\n'
        assert _raw(sock_path, b"unmap\n") == b"ok\n" and calls[-1] == "legacy-unmap"
        assert _raw(sock_path, b"frobnicate\n") == b"error 22 InvalidArgumentError unknown command\n"
        # malformed frames, bad versions, unknown ops: each an error reply
        for data, status in ((b"\0PCTgarbage-and-more", ctlproto.E_VERSION),
                             (b"\0XYZ" + bytes(8), ctlproto.E_MALFORMED),
                             (ctlproto.request(99), ctlproto.E_UNKNOWN_OP),
                             (ctlproto.request(ctlproto.OP_CONFIGURE, [ctlproto.field("setting", "a=1")]),
                              ctlproto.E_UNKNOWN_OP),  # this server has no configure handler
                             (ctlproto.request(ctlproto.OP_STATS)[:-1] + b"", None)):
            out = _raw(sock_path, data)
            if status is None:
                continue
            msg = ctlproto.decode(out)
            assert msg.get("status") == status, (data, msg)
            assert msg.get("message")
        with pytest.raises(ControlError) as ei:
            control.request(sock_path, 99, [], 5)
        assert ei.value.status == ctlproto.E_UNKNOWN_OP
        out = _raw(sock_path, ctlproto.request(ctlproto.OP_UNMAP, [ctlproto.field("force")]))
        assert ctlproto.decode(out).get("status") == 0 and calls[-1] == ("unmap", True)
    finally:
        lp.close()


def test_half_sent_message_is_closed_after_the_idle_timeout(sock_path):
    srv, start = _new_server([], idle=0.1)
    lp = _Loop(sock_path, start)
    try:
        out = _raw(sock_path, ctlproto.request(ctlproto.OP_STATS)[:7], shut=False)
        msg = ctlproto.decode(out)
        assert msg.get("status") == ctlproto.E_IDLE_TIMEOUT and "7 bytes received" in msg.get("message")
        assert srv.stats["idle_timeouts"] == 1
    finally:
        lp.close()


def test_connections_beyond_the_cap_get_e_busy_and_requests_retry(sock_path):
    srv, start = _new_server([], idle=1.0, cap=2)
    lp = _Loop(sock_path, start)
    leaked = []
    try:
        for _ in range(2):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sock_path)
            leaked.append(s)
        # raw: refused at once
        msg = ctlproto.decode(_raw(sock_path, ctlproto.request(ctlproto.OP_STATS)))
        assert msg.get("status") == ctlproto.E_BUSY
        # the client retries until the leaked ones time out
        assert control.request(sock_path, ctlproto.OP_STATS, [], 5)["stats"] == {"read": 7}
        assert srv.stats["refused_busy"] >= 1 and srv.stats["idle_timeouts"] >= 2
    finally:
        for s in leaked:
            s.close()
        lp.close()


def test_warnings_are_rate_limited():
    now = [0.0]
    records = []

    class H(logging.Handler):
        def emit(self, r):
            records.append(r.getMessage())

    lg = logging.getLogger("test.ctl.rl")
    lg.addHandler(H())
    lg.propagate = False
    rl = ctlserver.RateLimitedLog(lg, burst=3, window=60.0, clock=lambda: now[0])
    for i in range(1000):
        rl.warning("bad %d", i)
    assert records == ["bad 0", "bad 1", "bad 2"]
    now[0] = 61.0
    rl.warning("later")
    assert records[3:] == ["997 similar warnings suppressed in the last 61s", "later"]


def test_newer_cli_against_an_old_text_only_daemon(sock_path):
    """A daemon of the first protocol: reads a line (to EOF), answers a text line."""
    seen = []

    async def old_daemon(reader, writer):
        try:
            line = (await reader.readline()).decode().strip()
            seen.append(line)
            if line == "unmap":
                writer.write(b"ok\n")
            elif line == "stats":
                writer.write(b'{"read": 1}\n')
            elif line == "sessions":
                writer.write(b'{"entity": "client.admin"}\n')
            else:
                writer.write(b"error 22 InvalidArgumentError unknown command\n")
            await writer.drain()
        except Exception:  # noqa: BLE001 - as the old daemon did: no reply
            pass
        finally:
            writer.close()

    async def start(path):
        return await asyncio.start_unix_server(old_daemon, path=path)

    lp = _Loop(sock_path, start)
    try:
        assert control._ask(sock_path, "stats", 5) == '{"read": 1}'
        assert control._ask(sock_path, "sessions", 5) == '{"entity": "client.admin"}'
        assert control._ask(sock_path, "unmap", 5, force=True) == "ok"
        assert seen[-1] == "unmap"
        with pytest.raises(control._TextDaemon):
            control.request(sock_path, ctlproto.OP_CONFIGURE, [ctlproto.field("setting", "queue_depth=1")], 5)
        assert control._too_old(ctlproto.OP_CONFIGURE, sock_path).message.startswith("daemon too old for configure")
    finally:
        lp.close()


def test_daemon_environment_is_scrubbed():
    env = control.daemon_environment({"PATH": "/bin", "CEPH_ARGS": "--key AQBxxx", "PYCEPH_MAP_SPEC": "{}",
                                      "PYCEPH_RUN_DIR": "/run/x", "LC_ALL": "C", "SECRET_KEY": "x",
                                      "PYTHONPATH": "/w"})
    assert env == {"PATH": "/bin", "PYCEPH_RUN_DIR": "/run/x", "LC_ALL": "C", "PYTHONPATH": "/w"}


def test_spec_travels_over_a_private_pipe_not_the_environment(monkeypatch):
    from pyceph.block import daemon

    spec = {"pool": "rbd", "name": "x", "secret": "AQBsecretsecretsecretsecretsecretsecr=="}
    fd = control._spec_pipe(spec)
    monkeypatch.setenv(daemon.SPEC_FD_ENV, str(fd))
    monkeypatch.delenv(daemon.SPEC_ENV, raising=False)
    assert daemon.read_spec() == spec
    assert daemon.SPEC_FD_ENV not in os.environ
    with pytest.raises(OSError):
        os.fstat(fd)  # closed after reading
    monkeypatch.setenv(daemon.SPEC_ENV, json.dumps(spec))
    with pytest.raises(errors.InvalidArgumentError) as ei:
        daemon.read_spec()
    assert "secret" in str(ei.value) and "AQB" not in str(ei.value)
    r, w = os.pipe()
    os.write(w, b"not a message")
    os.close(w)
    monkeypatch.setenv(daemon.SPEC_FD_ENV, str(r))
    with pytest.raises(errors.InvalidArgumentError, match="spec pipe"):
        daemon.read_spec()


def test_a_peer_of_another_user_gets_e_permission(tmp_path):
    import subprocess
    import sys
    import tempfile

    d = tempfile.mkdtemp(prefix="pyceph-ctl-peer-")
    os.chmod(d, 0o755)
    path = os.path.join(d, "ctl.sock")
    calls = []
    srv, start = _new_server(calls, idle=2.0)
    lp = _Loop(path, start)
    try:
        os.chmod(path, 0o777)
        client = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); b=b''\n"
                  "try: s.sendall(bytes.fromhex(sys.argv[2])); s.shutdown(socket.SHUT_WR)\n"
                  "except BrokenPipeError: pass\n"
                  "while (c := s.recv(65536)): b += c\n"
                  "sys.stdout.write(b.hex())")
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                            sys.executable, "-c", client, path, ctlproto.request(ctlproto.OP_STATS).hex()],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        msg = ctlproto.decode(bytes.fromhex(p.stdout))
        assert msg.get("status") == ctlproto.E_PERMISSION and msg.get("message") == "uid 65534 may not control this mapping"
        assert calls == []
        assert control.request(path, ctlproto.OP_STATS, [], 5)["stats"] == {"read": 7}  # root may
    finally:
        lp.close()
        import shutil
        shutil.rmtree(d, ignore_errors=True)
