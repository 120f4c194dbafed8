#!/usr/bin/env bash
# Build (once) a root filesystem holding another Ceph release's daemons and tools, from
# Debian's archive with debootstrap:  pacific -> bookworm (16.2.x, for hosts without it),
# reef -> trixie (18.2.x), tentacle -> sid (20.2.x).
#   scripts/release-root.sh pacific|reef|tentacle [ROOT]
# ROOT defaults to ${PYCEPH_ROOTS:-/var/cache/pyceph/roots}/RELEASE.  Idempotent: a root
# with ROOT/.pyceph-root-ready is left alone, so the second call takes no time.
# Needs root (debootstrap, chroot).  The pyceph client never runs anything from these
# roots: they hold the dev cluster's daemons and the test oracles (rbd, ceph, rados).
set -euo pipefail
release=${1:?usage: release-root.sh pacific|reef|tentacle [ROOT]}
case "$release" in
    pacific) suite=bookworm ;;
    reef) suite=trixie ;;
    tentacle) suite=sid ;;
    *) echo "release-root.sh: unknown release '$release' (pacific, reef, tentacle)" >&2; exit 2 ;;
esac
root=${2:-${PYCEPH_ROOTS:-/var/cache/pyceph/roots}/$release}
[ -e "$root/.pyceph-root-ready" ] && { echo "$root"; exit 0; }
[ "$(id -u)" = 0 ] || { echo "release-root.sh: building the $release root needs root (debootstrap, chroot)" >&2; exit 1; }
mkdir -p "$(dirname "$root")"
# One builder per root: a second caller waits, then finds the root ready.
exec 9>"$root.lock"
if ! flock -n 9; then
    echo "==> waiting for another build of the $release root in $root" >&2
    flock 9
fi
[ -e "$root/.pyceph-root-ready" ] && { echo "$root"; exit 0; }
[ -e "$root" ] && { echo "release-root.sh: $root exists but is no finished root (no .pyceph-root-ready); remove it" >&2; exit 1; }
mirror=${PYCEPH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
command -v debootstrap >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
log=$(mktemp /tmp/pyceph-root-$release.XXXXXX.log)
echo "==> building the $release root in $root ($suite from $mirror; log $log); this takes a few minutes, once" >&2
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
# chroot with /proc mounted in a private mount namespace: the mount dies with the
# command, so an interrupted build leaves no mount behind.
in_root() {
    unshare --mount --propagation private -- sh -c 'mount -t proc proc "$1/proc" && exec chroot "$@"' sh "$tmp" "$@"
}
in_root apt-get update -qq >>"$log" 2>&1
DEBIAN_FRONTEND=noninteractive in_root apt-get install -y -qq \
    ceph-mon ceph-osd ceph-mgr ceph-common ceph-base python3-rados python3-rbd >>"$log" 2>&1 \
    || { echo "release-root.sh: installing ceph into the $release root failed, see $log" >&2; tail -5 "$log" >&2; exit 1; }
in_root apt-get clean >>"$log" 2>&1
chroot "$tmp" ceph --version >"$tmp/.pyceph-ceph-version"
touch "$tmp/.pyceph-root-ready"
mv "$tmp" "$root"
echo "==> $release root ready: $(cat "$root/.pyceph-ceph-version")" >&2
echo "$root"
