"""Replay a cephx session recorded by ``capture_cephx.py`` against our sans-IO client.

Each event is one hook call of the live session: the same random draws must make our
client produce the same bytes (which the real cluster accepted) and every server reply
(bytes made by the real Ceph daemons) must be accepted.
"""

from __future__ import annotations

import json
from pathlib import Path

from pyceph.auth.cephx import CEPH_CON_MODE_CRC, CephxClient

HERE = Path(__file__).resolve().parent
T0 = 1_700_000_000.0  # fake clock origin (Unix seconds); events carry offsets from it
# hooks whose first argument is the (opaque, unused) connection
_WITH_CON = {"get_auth_request", "handle_auth_reply_more", "handle_auth_done"}


def load(name: str) -> dict:
    return json.loads((HERE / name).read_text())


def as_json(v):
    """An output as the capture stored it (bytes -> hex, tuples -> lists)."""
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    if isinstance(v, (list, tuple)):
        return [as_json(x) for x in v]
    return v


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Replay:
    """``Replay(vector, key=None)``; ``step(event, args=None)`` calls the event's hook
    (with ``args`` instead of the recorded server bytes when given) and returns its result."""

    def __init__(self, vec: dict, key=None):
        self.vec = vec
        self.clock = Clock()
        self.draws: list[bytes] = []
        self.client = CephxClient(vec["entity"], key if key is not None else vec["key"], vec["want_keys"],
                                  con_modes=(CEPH_CON_MODE_CRC,), random_bytes=self._random, clock=self.clock)
        self.hooks: dict[int, object] = {}

    def _random(self, n: int) -> bytes:
        assert self.draws, "the client drew more random bytes than the live session did"
        b = self.draws.pop(0)
        assert len(b) == n, f"drew {n} bytes where the live session drew {len(b)}"
        return b

    @property
    def events(self) -> list[dict]:
        return self.vec["events"]

    def step(self, ev: dict, args: list | None = None):
        self.clock.t = T0 + ev["t"]
        self.draws = [bytes.fromhex(x) for x in ev["draws"]]
        if ev["who"] == "mon":
            target = self.client
        else:
            if ev["call"] == "get_auth_request":
                self.hooks[ev["who"]] = self.client.authorizer_hooks(ev["who"])
            target = self.hooks[ev["who"]]
        if args is None:
            args = [bytes.fromhex(a) if isinstance(a, str) else a for a in ev["args"]]
        if ev["call"] in _WITH_CON:
            args = [None, *args]
        out = getattr(target, ev["call"])(*args)
        assert not self.draws, "the client drew fewer random bytes than the live session did"
        return out

    def run(self, upto: int | None = None) -> None:
        """Replay events ``[0, upto)`` asserting every output equals the recorded one."""
        for i, ev in enumerate(self.events[:upto]):
            out = self.step(ev)
            assert as_json(out) == ev["out"], f"event {i} ({ev['who']} {ev['call']}) differs from the capture"
