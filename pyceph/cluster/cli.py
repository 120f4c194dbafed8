"""``pyceph cluster start|stop|status|kill|restart``: manage a dev cluster from the shell.

``register(subparsers)`` adds the ``cluster`` group to the ``pyceph`` command; every
leaf parser sets ``func(args) -> int`` (exit code; errors are printed as one line on
stderr).  ``python -m pyceph.cluster.cli start --dir X`` works standalone.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any, Sequence

from pyceph import errors
from pyceph.cluster import DevCluster, default_cluster_dir

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
    secs = c.start(mons=args.mons, osds=args.osds, conf=_parse_conf(args.conf), timeout=args.timeout)
    print(f"cluster started in {secs:.1f}s: {c.dir}")
    print(f"  ceph -c {c.conf_path} -s")
    print(f"  mon host = {c.mon_host}")
    return 0


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
    lines = [
        f"cluster {st['dir']}: {state}{health}",
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
        p = sub.add_parser(name, help=help, description=help)
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
    p = leaf("stop", "stop every daemon of the cluster (SIGTERM, then SIGKILL)", _cmd_stop)
    p.add_argument("--timeout", type=float, default=15.0, help="seconds before SIGKILL (default 15)")
    p = leaf("status", "show whether the cluster runs, its daemons, ports and health", _cmd_status)
    p.add_argument("--format", choices=("plain", "json"), default="plain")
    p = leaf("kill", "send a signal (default SIGKILL) to one daemon", _cmd_kill)
    p.add_argument("name", help="daemon name: osd.N, mon.X or mgr.x")
    p.add_argument("--signal", default="KILL", help="signal name (default KILL)")
    p = leaf("restart", "restart one daemon (graceful stop, then start)", _cmd_restart)
    p.add_argument("name", help="daemon name: osd.N, mon.X or mgr.x")


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
    p = subparsers.add_parser("cluster", help="start/stop/inspect a dev Ceph cluster",
                              description="Manage a throw-away Ceph cluster on 127.0.0.1.")
    add_commands(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m pyceph.cluster.cli start --dir X``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="pyceph cluster", description="Manage a throw-away Ceph cluster on 127.0.0.1.")
    add_commands(parser)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
