"""Survive faults as krbd does: a short thrash run (:mod:`pyceph.cluster.thrash`).

One run of the harness in its own 3-mon/3-OSD cluster (not the session's 1-mon cluster):
a verified writer/reader on a ``prbd map``-ed device while OSDs and the client's monitor
are killed and restarted and the client's cables to OSDs and to its monitor are pulled,
reset and dropped through the fault proxy, with a 60 s cephx service-ticket TTL.

The run must end with every acknowledged block read back intact (from the device and
from librbd), every fault kind injected at least once, no I/O error returned to the
checker, no hang, and at least one ticket renewal.  The report (longest stall per fault
kind ...) is written to the run directory and printed on failure.

``PYCEPH_THRASH_DURATION`` (seconds of faults, default 120: one full round of every kind,
about 3 minutes with cluster start and teardown on a 2-core machine) and
``PYCEPH_THRASH_SEED`` tune the run.  Needs root, /dev/fuse and loop devices.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyceph.cluster import DevCluster
from pyceph.cluster.thrash import FAULT_KINDS, format_report

from .helpers import wanted_ms_mode, wanted_release

DURATION = float(os.environ.get("PYCEPH_THRASH_DURATION", "120"))
SEED = os.environ.get("PYCEPH_THRASH_SEED")

# the module fixture (the whole run) executes inside whichever test comes first
pytestmark = pytest.mark.timeout(DURATION + 480)


def _cleanup(run_dir: Path) -> None:
    """Whatever a crashed harness left behind: mapping, proxy, cluster."""
    env = dict(os.environ, PYCEPH_RUN_DIR=str(run_dir / "run"))
    mappings = run_dir / "run" / "mappings"
    for rec in mappings.glob("*.json") if mappings.exists() else ():
        dev = json.loads(rec.read_text()).get("device")
        if dev:
            subprocess.run([sys.executable, "-m", "pyceph.cli.prbd", "unmap", dev, "-o", "force"], env=env,
                           capture_output=True, timeout=120)
    from pyceph.cluster import faultproxy

    cdir = run_dir / "cluster"
    if cdir.exists():
        faultproxy.stop_proxy(cdir)
        c = DevCluster(cdir)
        if c.is_running():
            c.stop()


@pytest.fixture(scope="module")
def thrash_report(tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("thrash")
    argv = [sys.executable, "-m", "pyceph.cluster.thrash", "--duration", str(DURATION), "--dir", str(run_dir),
            "--json"]
    if SEED:
        argv += ["--seed", SEED]
    if wanted_release():
        argv += ["--release", wanted_release()]
    if wanted_ms_mode():
        argv += ["--ms-mode", wanted_ms_mode()]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=DURATION + 420)
    finally:
        _cleanup(run_dir)
    path = run_dir / "report.json"
    if not path.exists():
        pytest.fail(f"thrash wrote no report (exit {r.returncode}): {r.stderr[-3000:]}", pytrace=False)
    report = json.loads(path.read_text())
    print(format_report(report))  # shown with the failure, and with -s
    return report


def _why(report: dict) -> str:
    return "\n" + format_report(report) + "\nclient problems: " + json.dumps(report["client_problems"])[:4000]


def test_every_fault_kind_injected(thrash_report):
    assert thrash_report["missing_fault_kinds"] == [], _why(thrash_report)
    for kind in FAULT_KINDS:
        assert thrash_report["faults"][kind]["count"] >= 1, _why(thrash_report)
    # cable faults only mean something if the client's traffic goes through the proxy
    assert thrash_report["client_routed_via_proxy"]["ok"], _why(thrash_report)
    for ev in thrash_report["events"]:
        if "_cable_" in ev["kind"]:
            assert ev["client_connections_hit"] >= 1, (ev, _why(thrash_report))


def test_no_io_error_and_no_hang(thrash_report):
    assert thrash_report["io"].get("io_errors") == 0, _why(thrash_report)
    assert thrash_report["client_problems"] == [], _why(thrash_report)
    assert thrash_report["harness_errors"] == [], _why(thrash_report)


def test_every_acknowledged_block_verified(thrash_report):
    v = thrash_report["verify"]
    assert v["errors"] == 0, _why(thrash_report)
    assert thrash_report["io"].get("verify_errors") == 0, _why(thrash_report)
    assert v["acknowledged_blocks"] > 1000, _why(thrash_report)
    assert v["device"]["blocks"] == v["acknowledged_blocks"], _why(thrash_report)
    assert v["librbd"] is not None and v["librbd"]["blocks"] == v["acknowledged_blocks"], _why(thrash_report)
    assert (thrash_report["io"].get("sectors_read_verified") or 0) > 0, _why(thrash_report)


def test_tickets_renewed_during_the_run(thrash_report):
    assert thrash_report["tickets"]["service_ticket_renewals"] >= 1, _why(thrash_report)


def test_report_passes(thrash_report):
    assert thrash_report["ok"], _why(thrash_report)
