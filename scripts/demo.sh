#!/usr/bin/env bash
# The demo: install what is needed, start a local Ceph cluster, create an RBD image, map it
# with pyceph, make a filesystem, write and verify files, unmap, read the image back with
# librbd and verify again, then clean up.  Needs root (mount, loop devices, FUSE).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/pyceph demo "$@"
