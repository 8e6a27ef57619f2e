#!/usr/bin/env bash
# Build a local Debian base image for hacluster's containers when no image
# can be pulled (air-gapped labs, CI): debootstrap a minimal Debian with
# Python 3.11 and venv, then `docker import` it.
#
#   tools/build-base-image.sh [TAG]        default TAG: hacluster-base:bookworm
#
# Environment:
#   MIRROR  Debian mirror to debootstrap from; default: the first Debian
#           mirror this machine's apt sources name.
#   SUITE   Debian suite, default bookworm (its python3 is 3.11, the version
#           the wheelhouse is built for).
#   INCLUDE more Debian packages, comma-separated (tools/build-systemd-image.sh
#           adds systemd for a base whose init is systemd).
#   FORCE=1 rebuild even if TAG already exists.
#
# Needs root, debootstrap and a running Docker engine.
set -euo pipefail

tag=${1:-hacluster-base:bookworm}
suite=${SUITE:-bookworm}

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$tag" >/dev/null 2>&1; then
    echo "base image $tag already exists (FORCE=1 rebuilds it)"
    exit 0
fi

apt_mirror() {
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v security | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hs '^deb ' /etc/apt/sources.list 2>/dev/null \
            | awk '{print $2}' | grep -v security | head -n1 || true)
    fi
    echo "$uri"
}
mirror=${MIRROR:-$(apt_mirror)}
if [ -z "$mirror" ]; then
    echo "no Debian mirror found in the apt sources; set MIRROR" >&2
    exit 2
fi
command -v debootstrap >/dev/null || {
    echo "debootstrap is missing: apt-get install debootstrap" >&2
    exit 2
}

root=$(mktemp -d /var/tmp/hacluster-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "debootstrap $suite from $mirror into $root"
debootstrap --variant=minbase \
    --include=python3,python3-venv,iproute2,procps,ca-certificates${INCLUDE:+,$INCLUDE} \
    "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -n 30 "$root.log" >&2
    exit 1
}
rm -f "$root.log"
# Keep the image small: no package lists, caches or docs.
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
tar -C "$root" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    - "$tag"
echo "built base image $tag"
