#!/usr/bin/env bash
# Build the hacluster image (hacluster:latest) with no network inside the
# build: the project and its runtime dependencies are built into wheels on
# the host (wheelhouse/, gitignored), the Dockerfile installs them with
# `pip install --no-index`.
#
#   tools/build-image.sh [TAG]          default TAG: hacluster:latest
#
# Environment:
#   BASE     base image (Python 3.11 with venv). Default: python:3.11-slim if
#            this engine already has it, else hacluster-base:bookworm, which
#            tools/build-base-image.sh builds (root, debootstrap) if missing.
#   PYTHON   the Python 3.11 that builds the wheels; default .venv/bin/python
#            if it exists, else python3.
#   FORCE=1  rebuild even if TAG was built from this very source and base.
#
# Idempotent: the image carries a digest of the source tree (hacluster/,
# pyproject.toml, Dockerfile) and of the base image; when TAG's digest
# matches, nothing is rebuilt. Uses the classic builder (no buildx needed).
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-hacluster:latest}
say() { echo "build-image: $*"; }

if ! docker info >/dev/null 2>&1; then
    echo "build-image: the Docker engine does not answer (docker info failed); start dockerd" >&2
    exit 2
fi

if [ -z "${BASE:-}" ]; then
    if docker image inspect python:3.11-slim >/dev/null 2>&1; then
        BASE=python:3.11-slim
    else
        BASE=hacluster-base:bookworm
    fi
fi
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    if [ "$BASE" = hacluster-base:bookworm ]; then
        say "base image $BASE is missing: building it (tools/build-base-image.sh)"
        tools/build-base-image.sh "$BASE"
    else
        say "base image $BASE is not here: pulling it"
        docker pull "$BASE"
    fi
fi
base_id=$(docker image inspect -f '{{.Id}}' "$BASE")

source=$( {
    echo "$base_id"
    find hacluster pyproject.toml Dockerfile -type f -not -path '*/__pycache__/*' \
        -not -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
} | sha256sum | cut -c1-32)
built=$(docker image inspect -f '{{index .Config.Labels "org.hacluster.source"}}' "$tag" \
    2>/dev/null || true)
if [ "${FORCE:-0}" != 1 ] && [ "$built" = "$source" ]; then
    say "$tag is up to date (source $source, base $BASE); FORCE=1 rebuilds it"
    exit 0
fi

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$version" != 3.11 ]; then
    echo "build-image: $PYTHON is Python $version; the image runs 3.11: set PYTHON" >&2
    exit 2
fi
mkdir -p wheelhouse
rm -f wheelhouse/hacluster-*.whl
say "building wheels of hacluster and its runtime dependencies into wheelhouse/ ($PYTHON)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$PYTHON" -m pip wheel -q --disable-pip-version-check --find-links wheelhouse \
    --wheel-dir wheelhouse . >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
say "building $tag from $BASE (classic builder, no network)"
previous=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$BASE" --build-arg "SOURCE=$source" \
    -t "$tag" . >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
current=$(docker image inspect -f '{{.Id}}' "$tag")
say "built $tag (source $source): ${current:7:12}"
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
    # the image it replaces, unless a container still uses it
    docker image rm "$previous" >/dev/null 2>&1 && say "removed the previous ${previous:7:12}" || true
fi
