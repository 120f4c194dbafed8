"""``pyceph cluster start|stop|status|kill|restart|exec``: manage a dev cluster from the shell.

``pyceph cluster start --release reef`` runs another Ceph release (from a root filesystem,
built once); ``pyceph cluster exec --dir DIR -- rbd ls`` runs the cluster's release's own
``rbd``/``ceph``/``rados``/``ceph-authtool`` with CEPH_CONF = DIR/ceph.conf.

Fault injection (see :mod:`pyceph.cluster.faultproxy`): ``pyceph cluster proxy
start|stop|status`` runs the fault proxy daemon for the cluster, ``pyceph cluster cable
pull|stall|reset|drop|refuse|restore NAME`` changes the state of a daemon's route.

``register(subparsers)`` adds the ``cluster`` group to the ``pyceph`` command; every
leaf parser sets ``func(args) -> int`` (exit code; errors are printed as one line on
stderr).  ``python -m pyceph.cluster.cli start --dir X`` works standalone.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any, Sequence

from pyceph import errors
from pyceph.cluster import DevCluster, default_cluster_dir
from pyceph.cluster.launcher import KEY_TYPES, MS_MODES, RELEASES

EXIT_NOT_RUNNING = 3  # `status` of a stopped cluster, like `systemctl status`


def _parse_conf(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise errors.ConfigError(f"--conf wants KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _cmd_start(args: argparse.Namespace) -> int:
    c = DevCluster(args.dir)
    secs = c.start(mons=args.mons, osds=args.osds, conf=_parse_conf(args.conf), timeout=args.timeout,
                   release=args.release, ms_mode=args.ms_mode, client_key_type=args.client_key_type)
    rel = c.release
    mode = f", ms mode {c.ms_mode}" if c.ms_mode else ""
    print(f"cluster started in {secs:.1f}s: {c.dir} ({rel.name}{mode})")
    if rel.root is None:
        print(f"  ceph -c {c.conf_path} -s")
    print(f"  pyceph cluster exec --dir {c.dir} -- ceph -s")
    print(f"  mon host = {c.mon_host}")
    return 0


def _cmd_exec(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise errors.InvalidArgumentError("exec wants a command: pyceph cluster exec --dir DIR -- rbd ls")
    c = DevCluster(args.dir)
    c.state  # noqa: B018 - raises ClusterNotRunning without a cluster
    full = c.tool_argv(*argv)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(full[0], full, c.tool_env())
    except OSError as e:
        raise errors.ObjectNotFound(f"cannot run {full[0]}: {e.strerror}") from e


def _cmd_stop(args: argparse.Namespace) -> int:
    c = DevCluster(args.dir)
    was_running = c.is_running()
    c.stop(timeout=args.timeout)
    print(f"cluster stopped: {c.dir}" if was_running else f"cluster not running: {c.dir}")
    return 0


def _format_status(st: dict[str, Any]) -> str:
    if "fsid" not in st:
        return f"no cluster in {st['dir']}"
    state = "running" if st["running"] else "stopped"
    health = f" ({st['health']})" if st.get("health") else ""
    rel = f"  release {st.get('release') or '?'}" + (f" (root {st['root']})" if st.get("root") else "")
    if st.get("ms_mode"):
        rel += f"  ms mode {st['ms_mode']}"
    lines = [
        f"cluster {st['dir']}: {state}{health}",
        rel,
        f"  fsid {st['fsid']}",
        f"  conf {st['conf']}  keyring {st['keyring']}",
        f"  mon host = {st['mon_host']}",
    ]
    for check, msg in st.get("health_checks", {}).items():
        lines.append(f"  {check}: {msg}")
    if st.get("pgs_by_state"):
        lines.append("  pgs: " + ", ".join(f"{n} {s}" for s, n in st["pgs_by_state"].items()))
    if st.get("health_error"):
        lines.append(f"  health unknown: {st['health_error']}")
    lines.append(f"  {'DAEMON':<8} {'PID':>8}  PORTS")
    for d in st["daemons"]:
        pid = str(d["pid"]) if d["pid"] else "-"
        lines.append(f"  {d['name']:<8} {pid:>8}  {','.join(map(str, d['ports'])) or '-'}")
    return "\n".join(lines)


def _cmd_status(args: argparse.Namespace) -> int:
    st = DevCluster(args.dir).status()
    print(json.dumps(st, indent=1) if args.format == "json" else _format_status(st))
    return 0 if st["running"] else EXIT_NOT_RUNNING


def _cmd_kill(args: argparse.Namespace) -> int:
    sig = signal.Signals[args.signal if args.signal.startswith("SIG") else "SIG" + args.signal]
    DevCluster(args.dir).kill(args.name, sig)
    print(f"{args.name} killed ({sig.name})")
    return 0


def _cmd_restart(args: argparse.Namespace) -> int:
    pid = DevCluster(args.dir).restart(args.name)
    print(f"{args.name} running, pid {pid}")
    return 0


def add_commands(parser: argparse.ArgumentParser) -> None:
    """Add start/stop/status/kill/restart subcommands to ``parser``."""
    sub = parser.add_subparsers(dest="cluster_command", metavar="COMMAND", required=True)

    def leaf(name: str, help: str, func) -> argparse.ArgumentParser:  # noqa: A002
        p = sub.add_parser(name, help=help, description=help, allow_abbrev=False)
        p.add_argument("--dir", default=str(default_cluster_dir()),
                       help="cluster directory (default: $PYCEPH_CLUSTER_DIR or ~/.pyceph/cluster)")
        p.set_defaults(func=lambda a: _run(func, a))
        return p

    p = leaf("start", "create and start a fresh dev cluster on 127.0.0.1", _cmd_start)
    p.add_argument("--mons", type=int, default=1, help="number of monitors (default 1)")
    p.add_argument("--osds", type=int, default=3, help="number of memstore OSDs (default 3)")
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="extra [global] ceph.conf option, repeatable (e.g. 'debug ms=20')")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to reach active+clean (default 180)")
    p.add_argument("--release", choices=list(RELEASES), default=None,
                   help="Ceph release of the daemons and tools (default: the host's); another release runs "
                        "chrooted from $PYCEPH_ROOTS/RELEASE (default /var/cache/pyceph/roots), built on first use")
    p.add_argument("--ms-mode", choices=list(MS_MODES), default=None,
                   help="require this on-wire mode everywhere: secure or crc (msgr2), legacy (msgr1 only, "
                        "v1 addresses only); default: Ceph's defaults")
    p.add_argument("--client-key-type", choices=list(KEY_TYPES), default=None,
                   help="key type of client.admin (default: the release's, aes256k from tentacle on); another "
                        "type than the service keys' makes an 'upgraded' cluster allowing both ciphers")
    p = leaf("exec", "run the cluster release's own rbd/ceph/rados/ceph-authtool with CEPH_CONF=DIR/ceph.conf",
             _cmd_exec)
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG...]",
                   help="the command; file arguments must be under /tmp or DIR (or use -)")
    p = leaf("stop", "stop every daemon of the cluster (SIGTERM, then SIGKILL)", _cmd_stop)
    p.add_argument("--timeout", type=float, default=15.0, help="seconds before SIGKILL (default 15)")
    p = leaf("status", "show whether the cluster runs, its daemons, ports and health", _cmd_status)
    p.add_argument("--format", choices=("plain", "json"), default="plain")
    p = leaf("kill", "send a signal (default SIGKILL) to one daemon", _cmd_kill)
    p.add_argument("name", help="daemon name: osd.N, mon.X or mgr.x")
    p.add_argument("--signal", default="KILL", help="signal name (default KILL)")
    p = leaf("restart", "restart one daemon (graceful stop, then start)", _cmd_restart)
    p.add_argument("name", help="daemon name: osd.N, mon.X or mgr.x")
    _add_fault_commands(sub, leaf)
    from pyceph.cluster import thrash  # `thrash`: faults under verified I/O on a mapped device

    thrash.register(sub)


# -- fault proxy: `proxy start|stop|status`, `cable ACTION NAME` -----------------------

CABLE_ACTIONS = {
    "pull": "stall: existing connections hang, new ones are accepted and hang (cable pulled)",
    "stall": "same as pull",
    "reset": "RST every existing connection, refuse new ones (daemon crashed, as seen by the client)",
    "drop": "RST every existing connection and every new one right after accept",
    "refuse": "refuse new connections, keep existing ones relaying",
    "restore": "back to pass: relay; stalled connections resume with their data intact",
}


def _cmd_proxy_start(args: argparse.Namespace) -> int:
    from pyceph.cluster import faultproxy as fp

    DevCluster(args.dir).state  # noqa: B018 - raises ClusterNotRunning without a cluster
    pid = fp.start_proxy(args.dir, orphan_timeout=args.orphan_timeout, max_lifetime=args.max_lifetime)
    st = fp.status(args.dir)
    print(f"fault proxy running, pid {pid}: {len(st['routes'])} routes")
    print(f"  connect map {st['map_path']}  (PYCEPH_CONNECT_MAP or 'pyceph connect map' in ceph.conf)")
    return 0


def _cmd_proxy_stop(args: argparse.Namespace) -> int:
    from pyceph.cluster import faultproxy as fp

    print("fault proxy stopped" if fp.stop_proxy(args.dir) else "fault proxy not running")
    return 0


def _format_routes(routes: dict[str, Any]) -> list[str]:
    lines = [f"  {'ROUTE':<8} {'STATE':<7} {'LISTEN':<16} {'REAL':<16} {'CONNS':>5} {'ACTIVE':>6} "
             f"{'TO DAEMON':>10} {'TO CLIENT':>10} {'RESETS':>6}"]
    for r in routes.values():
        lines.append(f"  {r['name']:<8} {r['state']:<7} {r['listen']:<16} {r['real']:<16} {r['connections']:>5} "
                     f"{r['active']:>6} {r['bytes_to_daemon']:>10} {r['bytes_to_client']:>10} {r['resets']:>6}")
    return lines


def _cmd_proxy_status(args: argparse.Namespace) -> int:
    from pyceph.cluster import faultproxy as fp

    try:
        st = fp.status(args.dir)
    except fp.FaultProxyNotRunning as e:
        print(json.dumps({"running": False}) if args.format == "json" else str(e))
        return EXIT_NOT_RUNNING
    if args.format == "json":
        print(json.dumps(st, indent=1))
        return 0
    print(f"fault proxy pid {st['pid']} for {st['dir']}, map {st['map_path']}")
    if st.get("refresh_error"):
        print(f"  last refresh failed: {st['refresh_error']}")
    print("\n".join(_format_routes(st["routes"])))
    return 0


def _cmd_proxy_refresh(args: argparse.Namespace) -> int:
    from pyceph.cluster import faultproxy as fp

    print("\n".join(_format_routes(fp.refresh(args.dir)["routes"])))
    return 0


def _cmd_cable(args: argparse.Namespace) -> int:
    from pyceph.cluster import faultproxy as fp

    routes = fp.cable(args.dir, args.name, args.action)
    for r in routes.values():
        print(f"{r['name']}: {r['state']} ({r['listen']} -> {r['real']}, {r['active']} active)")
    return 0


def _add_fault_commands(sub: argparse._SubParsersAction, leaf) -> None:
    dir_help = "cluster directory (default: $PYCEPH_CLUSTER_DIR or ~/.pyceph/cluster)"
    p = sub.add_parser("proxy", allow_abbrev=False, help="run the fault proxy (cable pull) for the cluster's daemons",
                       description="Fault proxy: a TCP relay in front of every daemon; see `cable`.")
    psub = p.add_subparsers(dest="proxy_command", metavar="COMMAND", required=True)
    for name, help, func in (
        ("start", "start the fault proxy daemon; writes DIR/connect-map.json", _cmd_proxy_start),
        ("stop", "stop the fault proxy daemon", _cmd_proxy_stop),
        ("status", "show the routes, their states and counters", _cmd_proxy_status),
        ("refresh", "re-read the daemons' addresses now (osd/mgr dump)", _cmd_proxy_refresh),
    ):
        q = psub.add_parser(name, help=help, description=help, allow_abbrev=False)
        q.add_argument("--dir", default=str(default_cluster_dir()), help=dir_help)
        q.set_defaults(func=lambda a, f=func: _run(f, a))
        if name == "start":
            q.add_argument("--orphan-timeout", type=float, default=None,
                           help="exit after this many seconds without any cluster daemon (default 60)")
            q.add_argument("--max-lifetime", type=float, default=None, help="exit after this many seconds (default 4h)")
        if name == "status":
            q.add_argument("--format", choices=("plain", "json"), default="plain")
    p = leaf("cable", "pull/reset/restore the cable of one daemon (needs `proxy start`)", _cmd_cable)
    p.add_argument("action", choices=list(CABLE_ACTIONS),
                   help="; ".join(f"{k}: {v}" for k, v in CABLE_ACTIONS.items()))
    p.add_argument("name", help="route: osd.N, mon.X, mgr.x, a comma list, a pattern like 'osd.*', or all")


def _run(func, args: argparse.Namespace) -> int:
    try:
        return func(args)
    except errors.Error as e:
        msg = str(e).splitlines()
        print(f"pyceph cluster: error: {msg[0] if msg else type(e).__name__}", file=sys.stderr)
        for line in msg[1:]:  # e.g. the last `ceph -s` of a start timeout
            print(line, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``cluster`` command group to ``subparsers``; leaves set ``func(args) -> int``."""
    p = subparsers.add_parser("cluster", allow_abbrev=False, help="start/stop/inspect a dev Ceph cluster",
                              description="Manage a throw-away Ceph cluster on 127.0.0.1.")
    add_commands(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m pyceph.cluster.cli start --dir X``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="pyceph cluster", allow_abbrev=False, description="Manage a throw-away Ceph cluster on 127.0.0.1.")
    add_commands(parser)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
