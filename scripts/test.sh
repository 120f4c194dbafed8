#!/usr/bin/env bash
# The tests: install what is needed, then
#   1. everything on the host's Ceph (Pacific): unit tests (sans-IO cores against Ceph's own
#      vectors and captured sessions) and integration tests on real clusters started by
#      pyceph's launcher, including the launcher itself on every release (test_releases.py);
#   2. the interop subset on each other release (Reef, Tentacle: daemons and oracles from
#      debootstrap roots), where that release's own rbd/ceph are the oracles, including a
#      secure-mode-only and a v1-only (msgr1) cluster of that release.
# Extra arguments go to every pytest run (.ci/run passes -ra).  Needs root (FUSE, loop
# devices, chroot).  $PYCEPH_TEST_RELEASES (default "reef,tentacle") picks the releases of
# step 2; "none" skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
others=${PYCEPH_TEST_RELEASES:-reef,tentacle}
[ "$others" = none ] && others=""
PYCEPH_TEST_RELEASES="$others" ./scripts/setup.sh   # also builds the release roots (cached)

INTEROP=(
    tests/integration/test_rbd.py            # cross-read/write with that release's rbd
    tests/integration/test_placement.py      # placement vs its `ceph osd map`, osdmaptool
    tests/integration/test_map.py            # map + filesystem + `rbd export`
    tests/integration/test_rbd_interop.py    # snapshots/clones both ways, lock with `rbd bench`
    tests/integration/test_exclusive_lock.py
    tests/integration/test_rbd_diff.py       # diff/du: what that release's librbd says
    tests/integration/test_prbd_cli.py
    tests/integration/test_errors.py         # wrong key of the release's key type, ...
    tests/integration/test_secure_mode.py    # a secure-only cluster of that release
    tests/integration/test_msgr1.py          # a v1-only cluster of that release
    tests/integration/test_map_options.py    # krbd map options against that release's OSDs
    tests/integration/test_secrets.py        # keyring/keyfile/secret=, nothing leaks
    tests/integration/test_device.py         # device model vs that release's rbd/ceph
    tests/integration/test_hardening.py      # private files and one-line errors, as user nobody
)
results=$(mktemp -d /tmp/pyceph-test.XXXXXX)
PYTEST=(.venv/bin/python -m pytest -q -p no:cacheprovider --timeout=900)
rc=0
start=$(date +%s)
echo "==> pacific (host): the whole suite"
PYCEPH_TEST_RELEASES="pacific${others:+,$others}" \
    "${PYTEST[@]}" --junitxml="$results/pacific.xml" "$@" tests || rc=1
for rel in ${others//,/ }; do
    echo "==> $rel: the interop subset, $rel's own tools as oracles"
    PYCEPH_TEST_RELEASE=$rel "${PYTEST[@]}" --junitxml="$results/$rel.xml" "$@" "${INTEROP[@]}" || rc=1
done
.venv/bin/python - "$results" "$(( $(date +%s) - start ))" <<'EOF'
import sys, pathlib, xml.etree.ElementTree as ET
tot = {"passed": 0, "failed": 0, "skipped": 0}
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.xml")):
    s = ET.parse(f).getroot()
    s = s if s.tag == "testsuite" else s.find("testsuite")
    n, fail, err, skip = (int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    print(f"{f.stem}: {n - fail - err - skip} passed, {fail + err} failed, {skip} skipped")
    tot["passed"] += n - fail - err - skip
    tot["failed"] += fail + err
    tot["skipped"] += skip
print(f"all releases in {sys.argv[2]} s:")
print(f"total: {tot['passed']} passed, {tot['failed']} failed, {tot['skipped']} skipped")
EOF
exit $rc
