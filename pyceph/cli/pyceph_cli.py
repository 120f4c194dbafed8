"""``pyceph``: cluster, placement and debugging tools.

- ``pyceph cluster start|stop|status|kill|restart``: the dev cluster (:mod:`pyceph.cluster`).
- ``pyceph osd map POOL OBJECT... [--format json]``: like ``ceph osd map``, computed by
  our own OSDMap/CRUSH code from the map the monitor sent us.
- ``pyceph crush test --crushmap FILE ...``: like ``crushtool --test --show-mappings``.
- ``pyceph osdmap FILE --test-map-pgs-dump-all [--pool ID]``: like ``osdmaptool``.
- ``pyceph status``: connect and show the client's view (mon session, global_id, maps).
- ``pyceph status --device /dev/loopN``: ask that mapping's daemon for its client's view
  (mon session, osdmap epoch, every OSD session with its state, requests, keepalive ack
  age, faults and resends; ticket expiries) without connecting a client of our own.
- ``pyceph demo``: the end-to-end demo (:mod:`pyceph.cluster.demo`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from .. import errors
from .common import CliParser, add_client_options, client_parent, run_main, setup_logging, with_rados

PROG = "pyceph"


def cmd_osd_map(args) -> int:
    from ..osdmap.tool import osd_map_json

    async def go(r):
        m = r.osdmap
        r.pool_lookup(args.pool)  # PoolNotFound with a clear message
        return [osd_map_json(m, args.pool, o, getattr(args, "namespace", None) or "") for o in args.objects]

    rows = asyncio.run(with_rados(args, go))
    for row in rows:
        if args.format == "json":
            print(json.dumps(row))
        else:
            up = ",".join(str(o) for o in row["up"])
            acting = ",".join(str(o) for o in row["acting"])
            print(f"osdmap e{row['epoch']} pool '{row['pool']}' ({row['pool_id']}) object '{row['objname']}' -> "
                  f"pg {row['raw_pgid']} ({row['pgid']}) -> up ([{up}], p{row['up_primary']}) "
                  f"acting ([{acting}], p{row['acting_primary']})")
    return 0


def cmd_crush_test(args) -> int:
    from ..osdmap.crush import CrushMap
    from ..osdmap.crush.tool import test_mappings

    try:
        data = open(args.crushmap, "rb").read()
    except OSError as e:
        raise errors.ObjectNotFound(f"{args.crushmap}: {e.strerror}") from e
    crush = CrushMap.from_bytes(data)
    weights = {int(osd): float(w) for osd, w in (args.weight or [])}
    rule = args.rule if args.rule is not None else 0
    for line in test_mappings(crush, rule, args.num_rep, args.min_x, args.max_x, weights or None):
        print(line)
    return 0


def cmd_osdmap(args) -> int:
    from ..osdmap import OSDMap
    from ..osdmap.tool import dump_all_pgs

    try:
        data = open(args.file, "rb").read()
    except OSError as e:
        raise errors.ObjectNotFound(f"{args.file}: {e.strerror}") from e
    m = OSDMap.decode(data)
    if args.test_map_pgs_dump_all:
        for line in dump_all_pgs(m, args.pool):
            print(line)
    elif args.dump_json:
        print(json.dumps(m.to_dump_dict(), indent=2))
    else:
        print(f"osdmap e{m.epoch}: {len(m.pools)} pools, max_osd {m.max_osd}")
    return 0


def device_sessions(device: str, timeout: float = 10.0) -> dict:
    """The "sessions" view of the map daemon serving ``device`` (``/dev/loopN`` or an
    image spec), through its control socket.  Raises NotMapped, errors.IOError."""
    from ..block import control, registry

    recs = [r for r in control.find_mappings(device) if registry.daemon_alive(r)]
    if not recs:
        raise control.NotMapped(f"{device}: not mapped by pyceph")
    rec = recs[0]
    reply = control._ask(rec.get("socket") or registry.socket_path(str(rec["id"])), "sessions", timeout)
    if not reply:
        raise errors.IOError(f"{device}: map daemon (pid {rec.get('pid')}) did not answer")
    if reply.startswith("error "):
        raise errors.IOError(f"{device}: map daemon: {reply}")
    view = json.loads(reply)
    view["device"] = rec.get("device")
    view["image"] = f"{rec.get('pool')}/{rec.get('name')}"
    view["pid"] = rec.get("pid")
    return view


def _age(v) -> str:
    return "-" if v is None else f"{v:.1f}s"


def format_sessions(v: dict) -> list[str]:
    """``pyceph status --device`` in plain text, one line per session."""
    mon = v.get("mon") or {}
    out = [
        f"device {v.get('device')} image {v.get('image')} daemon pid {v.get('pid')}",
        f"entity {v.get('entity')} global_id {v.get('global_id')} addr {mon.get('addr')}",
        f"mon: {mon.get('state')} {mon.get('mon')} connection {mon.get('connection_state')} "
        f"mode {mon.get('con_mode')} "
        f"sessions {mon.get('sessions_opened')} faults {mon.get('faults')} "
        f"keepalive ack {_age(mon.get('last_keepalive_ack_age'))} ago"
        + (f" last fault {_age(mon.get('last_fault_age'))} ago: {mon.get('last_fault')}" if mon.get("last_fault") else ""),
    ]
    osd = v.get("osd") or {}
    out.append(f"osdmap epoch {v.get('osdmap_epoch')} flags {osd.get('osdmap_flags')} requests {osd.get('requests')} "
               f"(paused {osd.get('paused')}, no primary {osd.get('homeless')}) resends {osd.get('resends')}"
               + (f" BLOCKLISTED: {osd['blocklisted']}" if osd.get("blocklisted") else ""))
    for s in osd.get("sessions") or []:
        via = f" via {s['connect_addr']}" if s.get("connect_addr") else ""
        line = (f"osd.{s['osd']} {s['addr']}{via}: {s['state']}/{s.get('connection_state')} "
                f"mode {s.get('con_mode')} "
                f"requests {s['requests']} keepalive ack {_age(s.get('last_keepalive_ack_age'))} ago "
                f"rx {_age(s.get('last_rx_age'))} ago connects {s['connects']} faults {s['faults']} "
                f"resends {s['resends']}")
        if s.get("last_fault"):
            line += f" last fault {_age(s.get('last_fault_age'))} ago: {s['last_fault']}"
        out.append(line)
    for svc, t in sorted((v.get("tickets") or {}).items()):
        out.append(f"ticket {svc}: {'valid' if t.get('valid') else 'INVALID'} expires in "
                   f"{_age(t.get('expires_in'))} renew in {_age(t.get('renew_in'))}")
    return out


def cmd_status(args) -> int:
    if getattr(args, "device", None):
        view = device_sessions(args.device)
        if args.format == "json":
            print(json.dumps(view))
        else:
            print("\n".join(format_sessions(view)))
        return 0

    async def go(r):
        monc = r.monc
        m = r.osdmap
        return {
            "fsid": r.get_fsid(),
            "entity": str(monc.config.name),
            "global_id": monc.global_id,
            "mon_session": {"state": monc.state, "mon": monc.cur_mon,
                            "connection_state": monc.con.state.value if monc.con else None,
                            "con_mode": monc.con.mode_name if monc.con else None,
                            "protocol": monc.con.proto if monc.con else None},
            # What OSD/MGR sessions offer, in preference order (ms_mode / ms_client_mode).
            "osd_modes_offered": list(monc.config.msgr_modes(False)),
            "monmap_epoch": monc.monmap.epoch if monc.monmap else None,
            "mons": list(monc.monmap.ranks) if monc.monmap else [],
            "osdmap_epoch": m.epoch,
            "osds_up": sum(1 for o in range(m.max_osd) if m.is_up(o)),
            "osds_in": sum(1 for o in range(m.max_osd) if m.exists(o) and m.is_in(o)),
            "pools": r.list_pools(),
        }

    st = asyncio.run(with_rados(args, go))
    if args.format == "json":
        print(json.dumps(st))
    else:
        for k, v in st.items():
            print(f"{k}: {v}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ..cluster.cli import register

    p = CliParser(prog=PROG, description="pyceph: cluster, placement and debugging tools.")
    add_client_options(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register(sub)
    parent = client_parent()

    osd = sub.add_parser("osd", help="OSD placement tools")
    osub = osd.add_subparsers(dest="osd_command", metavar="COMMAND", required=True)
    sp = osub.add_parser("map", parents=[parent], help="placement of objects (like `ceph osd map`)")
    sp.add_argument("pool")
    sp.add_argument("objects", nargs="+")
    sp.add_argument("--format", choices=("plain", "json"), default="plain")
    sp.set_defaults(func=cmd_osd_map)

    crush = sub.add_parser("crush", help="CRUSH tools")
    csub = crush.add_subparsers(dest="crush_command", metavar="COMMAND", required=True)
    sp = csub.add_parser("test", help="mappings of a compiled CRUSH map (like `crushtool --test --show-mappings`)")
    sp.add_argument("--crushmap", "-i", required=True, help="compiled CRUSH map file")
    sp.add_argument("--rule", type=int)
    sp.add_argument("--num-rep", type=int, required=True)
    sp.add_argument("--min-x", type=int, default=0)
    sp.add_argument("--max-x", type=int, default=1023)
    sp.add_argument("--weight", nargs=2, action="append", metavar=("OSD", "WEIGHT"))
    sp.add_argument("--show-mappings", action="store_true", help="accepted for crushtool compatibility")
    sp.set_defaults(func=cmd_crush_test)

    sp = sub.add_parser("osdmap", help="inspect an OSDMap file (like osdmaptool)")
    sp.add_argument("file")
    sp.add_argument("--test-map-pgs-dump-all", action="store_true")
    sp.add_argument("--pool", type=int)
    sp.add_argument("--dump-json", action="store_true", help="decoded pools and OSDs as JSON")
    sp.set_defaults(func=cmd_osdmap)

    sp = sub.add_parser("demo", help="end-to-end demo: cluster, map, mkfs, write, verify with librbd, clean up")
    sp.add_argument("--keep", action="store_true", help="leave the cluster running")
    sp.set_defaults(func=lambda a: __import__("pyceph.cluster.demo", fromlist=["main"]).main(["--keep"] if a.keep else []))

    sp = sub.add_parser("status", parents=[parent], help="connect and show the client's view of the cluster")
    sp.add_argument("--format", choices=("plain", "json"), default="plain")
    sp.add_argument("--device", metavar="DEV",
                    help="show the sessions of the map daemon serving DEV (/dev/loopN) instead")
    sp.set_defaults(func=cmd_status)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args)
    if args.command in ("cluster", "demo"):
        return args.func(args)
    return run_main(PROG, lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
