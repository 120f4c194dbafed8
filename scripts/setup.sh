#!/usr/bin/env bash
# Install what pyceph needs on a fresh Debian machine (bookworm: Ceph 16.2 "Pacific"),
# then create .venv with pyceph and its test dependencies.  Idempotent.
#   - Debian packages: the dev cluster's daemons and tools (ceph-mon, ceph-osd, ceph-mgr,
#     ceph-common: test oracles and dev cluster only, the client never calls them), FUSE 3
#     (the kernel module's tools; pyceph speaks the FUSE protocol itself), mkfs tools.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
PKGS="ceph-mon ceph-osd ceph-mgr ceph-common fuse3 gcc e2fsprogs xfsprogs util-linux"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys, venv, sysconfig, os; assert sys.version_info >= (3, 11); assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' 2>/dev/null; then
    missing="$missing python3 python3-venv python3-dev"
    PY=python3
fi
if [ -n "$missing" ]; then
    echo "==> installing Debian packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    "$PY" -m venv .venv
fi
if ! .venv/bin/python -c 'import pyceph, pytest, hypothesis' 2>/dev/null \
   || [ pyproject.toml -nt .venv/.pyceph-installed ]; then
    echo "==> installing pyceph and its Python dependencies into .venv"
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -e '.[test]'
    touch .venv/.pyceph-installed
fi
# Other Ceph releases the tests were asked for ($PYCEPH_TEST_RELEASE, $PYCEPH_TEST_RELEASES,
# comma or space separated): their root filesystems (debootstrap; minutes once, then cached
# in ${PYCEPH_ROOTS:-/var/cache/pyceph/roots}).  The launcher would build them on first use.
host_release=$(ceph --version | sed -n 's/.*) \([a-z]*\) (.*/\1/p')
for r in $(echo "${PYCEPH_TEST_RELEASE:-} ${PYCEPH_TEST_RELEASES:-}" | tr ',' ' '); do
    [ "$r" = "$host_release" ] || $SUDO ./scripts/release-root.sh "$r" >/dev/null
done
echo "==> ready: $(.venv/bin/python --version), $(ceph --version | cut -d' ' -f1-3)"
