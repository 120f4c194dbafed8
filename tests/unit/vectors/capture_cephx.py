"""Record a real cephx session as a replayable vector (dev tool, not run by the tests).

    PYTHONPATH=. python tests/unit/vectors/capture_cephx.py CONF NAME KEYRING OUT.json [NOTE [SECONDS]]

Connects to the cluster of CONF as NAME with pyceph's python-rados API, writes and reads
one object (so an OSD authorizer is built, challenged and answered) - and keeps doing so
for SECONDS, long enough for ticket renewals over MAuth when the mon's
``auth_mon_ticket_ttl``/``auth_service_ticket_ttl`` are short - and records in
order every cephx hook call (mon handshake, OSD/MGR authorizers, MAuth service tickets):
its time (seconds since the start), its inputs - the server's bytes, made by the real
Ceph daemons - its outputs, and the random bytes the client drew during it.  ``test_cephx_krb5.py`` replays the file: the
same draws must give byte-identical requests (which that cluster accepted) and every
server reply must decrypt and verify.  The key in the file belongs to a throw-away
cluster that no longer exists.
"""

from __future__ import annotations

import json
import sys
import time

from pyceph.auth import cephx
from pyceph.rados import Rados

EVENTS: list[dict] = []
T0 = time.time()
_draws: list[str] = []


def _hex(v):
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    if isinstance(v, (list, tuple)):
        return [_hex(x) for x in v]
    return v


def _record(cls, name, who):
    orig = getattr(cls, name)

    def wrapper(self, *args):
        _draws.clear()
        out = orig(self, *args)
        ev = {"t": round(time.time() - T0, 3), "who": who(self), "call": name, "args": _hex([a for a in args if isinstance(a, (bytes, bytearray, int, list))]),
              "out": _hex(out), "draws": list(_draws)}
        EVENTS.append(ev)
        return out

    setattr(cls, name, wrapper)


def main() -> None:
    conf, name, keyring, out = sys.argv[1:5]
    note = sys.argv[5] if len(sys.argv) > 5 else ""
    hold = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    orig_init = cephx.CephxClient.__init__

    def init(self, *a, **kw):
        import os

        def rnd(n: int) -> bytes:
            b = os.urandom(n)
            _draws.append(b.hex())
            return b

        kw["random_bytes"] = rnd
        orig_init(self, *a, **kw)

    cephx.CephxClient.__init__ = init
    for m in ("get_auth_request", "handle_auth_reply_more", "handle_auth_done",
              "build_service_ticket_request", "handle_service_ticket_reply"):
        _record(cephx.CephxClient, m, lambda s: "mon")
    for m in ("get_auth_request", "handle_auth_reply_more", "handle_auth_done"):
        _record(cephx.CephxServiceHooks, m, lambda s: s.service_type)
    with Rados(conffile=conf, name=name, conf={"keyring": keyring}) as r:
        io = r.open_ioctx("rbd")
        t0 = time.monotonic()
        while True:
            io.write_full("capture-obj", b"cephx capture")
            assert io.read("capture-obj") == b"cephx capture"
            if time.monotonic() - t0 >= hold:
                break
            time.sleep(0.5)
        auth = r._core.monc.auth
        key = auth.secret.to_base64()
        want = auth.want_keys
    with open(out, "w") as f:
        json.dump({"note": note, "entity": name, "key": key, "want_keys": want, "events": EVENTS}, f, indent=1)
        f.write("\n")
    print(f"{out}: {len(EVENTS)} events")


if __name__ == "__main__":
    main()
