#!/usr/bin/env bash
# The tests: install what is needed, then run the unit tests (sans-IO cores against Ceph's
# own vectors) and the integration tests (a real cluster started by pyceph's launcher).
# Needs root (the mapping tests use FUSE and loop devices).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider --timeout=900 "$@" tests
