#!/usr/bin/env bash
# Build (once) a root filesystem holding another Ceph release's daemons and tools, from
# Debian's archive with debootstrap:  reef -> trixie (18.2.x), tentacle -> sid (20.2.x).
#   scripts/release-root.sh reef|tentacle [ROOT]
# ROOT defaults to ${PYCEPH_ROOTS:-/var/cache/pyceph/roots}/RELEASE.  Idempotent: a root
# with ROOT/.pyceph-root-ready is left alone, so the second call takes no time.
# Needs root (debootstrap, chroot).  The pyceph client never runs anything from these
# roots: they hold the dev cluster's daemons and the test oracles (rbd, ceph, rados).
set -euo pipefail
release=${1:?usage: release-root.sh reef|tentacle [ROOT]}
case "$release" in
    reef) suite=trixie ;;
    tentacle) suite=sid ;;
    *) echo "release-root.sh: unknown release '$release' (reef, tentacle)" >&2; exit 2 ;;
esac
root=${2:-${PYCEPH_ROOTS:-/var/cache/pyceph/roots}/$release}
[ -e "$root/.pyceph-root-ready" ] && { echo "$root"; exit 0; }
mirror=${PYCEPH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
command -v debootstrap >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
log=$(mktemp /tmp/pyceph-root-$release.XXXXXX.log)
echo "==> building the $release root in $root ($suite from $mirror; log $log)" >&2
mkdir -p "$(dirname "$root")"
tmp="$root.partial"
rm -rf "$tmp"
# sid's Release file may be past its Valid-Until; debootstrap checks signatures only.
if ! debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
        "$suite" "$tmp" "$mirror" >"$log" 2>&1; then
    # A keyring too old for the suite: try without it (the archive key may be newer).
    debootstrap --variant=minbase --no-check-gpg "$suite" "$tmp" "$mirror" >>"$log" 2>&1 \
        || { echo "release-root.sh: debootstrap $suite failed, see $log" >&2; tail -5 "$log" >&2; exit 1; }
fi
# No daemon may start while packages install.
printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
chmod 755 "$tmp/usr/sbin/policy-rc.d"
cat >"$tmp/etc/apt/apt.conf.d/99pyceph" <<'EOF'
Acquire::Check-Valid-Until "false";
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF
mount -t proc proc "$tmp/proc"
trap 'umount "$tmp/proc" 2>/dev/null || true' EXIT
chroot "$tmp" apt-get update -qq >>"$log" 2>&1
DEBIAN_FRONTEND=noninteractive chroot "$tmp" apt-get install -y -qq \
    ceph-mon ceph-osd ceph-mgr ceph-common ceph-base python3-rados python3-rbd >>"$log" 2>&1 \
    || { echo "release-root.sh: installing ceph into the $release root failed, see $log" >&2; tail -5 "$log" >&2; exit 1; }
chroot "$tmp" apt-get clean >>"$log" 2>&1
umount "$tmp/proc"
trap - EXIT
chroot "$tmp" ceph --version >"$tmp/.pyceph-ceph-version"
touch "$tmp/.pyceph-root-ready"
mv "$tmp" "$root"
echo "==> $release root ready: $(cat "$root/.pyceph-ceph-version")" >&2
echo "$root"
