#!/usr/bin/env bash
# Build the hacluster image on a Debian base whose init is systemd, to run
# contrib/systemd/hacluster-node.service under a real systemd
# (tests/lab/test_systemd_unit.py):
#
#   tools/build-systemd-image.sh [TAG]     default TAG: hacluster-systemd:latest
#
# The base, hacluster-systemd-base:bookworm, is debootstrapped by
# tools/build-base-image.sh with systemd added (it needs only the Debian
# mirror); the project goes in from the wheelhouse by tools/build-image.sh.
# Each step is skipped while its image is up to date (FORCE=1 rebuilds).
# Run the image with systemd as its init, e.g.:
#
#   docker run -d --privileged -e container=docker --tmpfs /run --tmpfs /run/lock \
#       -v /sys/fs/cgroup:/sys/fs/cgroup hacluster-systemd:latest /lib/systemd/systemd
#
# Needs root, debootstrap and a running Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-hacluster-systemd:latest}
base=${SYSTEMD_BASE:-hacluster-systemd-base:bookworm}
INCLUDE=systemd,systemd-sysv tools/build-base-image.sh "$base"
BASE=$base tools/build-image.sh "$tag"
