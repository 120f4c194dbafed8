"""Integration-test fixtures: a real dev Ceph cluster per test session.

``cluster``      session-scoped :class:`pyceph.cluster.DevCluster` (1 mon, 3 memstore OSDs,
                 pool ``rbd``) started in a fresh temp dir and stopped at session end.
                 $PYCEPH_TEST_RELEASE (pacific|reef|tentacle; default the host's) picks the
                 Ceph release, $PYCEPH_TEST_MS_MODE (secure|crc|legacy) the on-wire mode the
                 cluster requires.  Oracles run that release's own tools (helpers.tool).
                 With $PYCEPH_TEST_CLUSTER_DIR set, the already-running cluster in that dir
                 is used instead and never stopped (developer speed).
``ecpool``       name of an erasure-coded pool (k=2, m=1, failure domain osd,
                 allow_ec_overwrites, 8 PGs), created on first use.
``nonpow2_pool`` name of a replicated pool with pg_num = pgp_num = 12, created on first use.
``rados``        module-scoped connected :class:`pyceph.rados.Rados` on the cluster's conf,
                 shut down after the module (``rados.run(coro)`` runs on its loop).
``ioctx``        module-scoped ioctx on pool ``rbd`` of ``rados``, closed after the module.
``run_dir``      module-scoped private mapping registry ($PYCEPH_RUN_DIR) for ``prbd map``;
                 whatever is left mapped is force-unmapped (needs root and /dev/fuse).

A test module may define its own fixture of the same name (another pool, another scope).
Shared non-fixture helpers (``uniq``, ``rbd``/``prbd`` runners, ``pmap``...) are in helpers.py.

Missing Ceph binaries make these fixtures FAIL with the install hint, never skip.
Everything collected under tests/integration/ gets ``pytest.mark.integration``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from pyceph.cluster import CephNotInstalled, CephRelease, DevCluster
from pyceph.rados import Rados

from .helpers import mapping_registry, wanted_ms_mode, wanted_release

_HERE = Path(__file__).parent.resolve()

EC_POOL = "pyceph-ec21"
NONPOW2_POOL = "pyceph-pg12"


def pytest_collection_modifyitems(config, items):
    # Hooks in this conftest see the whole session's items: mark only ours.
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    want_release, want_mode = wanted_release(), wanted_ms_mode()
    reuse = os.environ.get("PYCEPH_TEST_CLUSTER_DIR")
    if reuse:
        c = DevCluster(reuse)
        if not c.is_running():
            pytest.fail(
                f"PYCEPH_TEST_CLUSTER_DIR={reuse} holds no running cluster; "
                f"start one with `python -m pyceph.cluster.cli start --dir {reuse}` or unset it",
                pytrace=False,
            )
        if want_release and c.release.name != want_release:
            pytest.fail(f"PYCEPH_TEST_CLUSTER_DIR={reuse} runs {c.release.name}, "
                        f"PYCEPH_TEST_RELEASE wants {want_release}", pytrace=False)
        if want_mode and c.ms_mode != want_mode:
            pytest.fail(f"PYCEPH_TEST_CLUSTER_DIR={reuse} has ms mode {c.ms_mode}, "
                        f"PYCEPH_TEST_MS_MODE wants {want_mode}", pytrace=False)
        yield c  # not ours: never stopped
        return
    try:
        CephRelease.resolve(want_release)  # builds a missing release root (once)
    except CephNotInstalled as e:
        pytest.fail(str(e), pytrace=False)
    c = DevCluster(tmp_path_factory.mktemp("cluster"))
    c.start(mons=1, osds=3, release=want_release, ms_mode=want_mode)  # stops whatever it started if it fails
    _SESSION_CLUSTER.append(c)
    try:
        yield c
    finally:
        _SESSION_CLUSTER.clear()
        c.stop()


_SESSION_CLUSTER: list[DevCluster] = []


@pytest.fixture(autouse=True, scope="module")
def _revive_crashed_osds():
    """The session's cluster runs Ceph's test object store (memstore), whose OSDs can
    crash on their own (seen once: Pacific 16.2.15, SIGSEGV in MemStore's omap iterator
    under SnapMapper::get_next_objects_to_trim while trimming snapshots).  Before each
    module, an OSD of the session cluster that died of a signal is started again (it
    backfills from its peers) and the crash is reported as a warning, so one server
    crash is seen, not blamed on the client tests that follow."""
    if not _SESSION_CLUSTER:
        return
    c = _SESSION_CLUSTER[0]
    revived = []
    for name, pid in c.pids().items():
        if not name.startswith("osd.") or pid is not None:
            continue
        try:
            with open(c.dir / "log" / f"{name}.log", "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - (4 << 20)))
                crashed = b"*** Caught signal" in f.read()
        except OSError:
            crashed = False
        if crashed:
            c.restart(name)
            revived.append(name)
    if revived:
        c.wait_clean(timeout=300)
        warnings.warn(f"Ceph server crash: {', '.join(revived)} of the session cluster died of a signal "
                      f"(see {c.dir}/log) and was started again", stacklevel=1)


def _ensure_pool(cluster: DevCluster, name: str, **kw) -> str:
    if name not in cluster.ceph("osd", "pool", "ls"):
        cluster.create_pool(name, **kw)
    return name


@pytest.fixture(scope="session")
def ecpool(cluster):
    """Erasure-coded pool (k=2, m=1) usable as RBD data pool; needs >= 3 OSDs."""
    return _ensure_pool(cluster, EC_POOL, pg_num=8, pool_type="erasure", ec_k=2, ec_m=1)


@pytest.fixture(scope="session")
def nonpow2_pool(cluster):
    """Replicated pool with 12 PGs (exercises stable_mod with a non-power-of-two pg_num)."""
    return _ensure_pool(cluster, NONPOW2_POOL, pg_num=12, pool_type="replicated")


@pytest.fixture(scope="module")
def rados(cluster):
    r = Rados(conffile=str(cluster.conf_path))
    r.connect()
    try:
        yield r
    finally:
        r.shutdown()


@pytest.fixture(scope="module")
def ioctx(rados):
    io = rados.open_ioctx("rbd")
    yield io
    io.close()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    with mapping_registry(tmp_path_factory) as d:
        yield d
