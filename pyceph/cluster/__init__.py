"""Dev-cluster launcher: a real Ceph cluster on 127.0.0.1 for tests and development.

See :mod:`pyceph.cluster.launcher` for :class:`DevCluster` and
:mod:`pyceph.cluster.cli` for the ``pyceph cluster start|stop|status`` commands.
"""

from __future__ import annotations

import os
from pathlib import Path

from pyceph.cluster.launcher import (
    INSTALL_HINT,
    RELEASES,
    CephNotInstalled,
    CephRelease,
    ClusterError,
    ClusterNotRunning,
    ClusterRunning,
    ClusterStartTimeout,
    CommandFailed,
    DevCluster,
    check_binaries,
    ensure_release_root,
    host_release,
)


def default_cluster_dir() -> Path:
    """The cluster directory used when none is given: $PYCEPH_CLUSTER_DIR, else ~/.pyceph/cluster."""
    env = os.environ.get("PYCEPH_CLUSTER_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".pyceph" / "cluster"


__all__ = [
    "INSTALL_HINT",
    "RELEASES",
    "CephNotInstalled",
    "CephRelease",
    "ClusterError",
    "ClusterNotRunning",
    "ClusterRunning",
    "ClusterStartTimeout",
    "CommandFailed",
    "DevCluster",
    "check_binaries",
    "default_cluster_dir",
    "ensure_release_root",
    "host_release",
]
