# The hacluster image: the project and its runtime dependencies in a venv,
# /opt/hacluster, installed from a wheelhouse built on the host beforehand
# (tools/build-image.sh), so the build itself needs no network.
#
#   tools/build-image.sh                       # wheelhouse, base image, this build
#   DOCKER_BUILDKIT=0 docker build -t hacluster:latest .                  # registry access
#   DOCKER_BUILDKIT=0 docker build --build-arg BASE=hacluster-base:bookworm -t hacluster:latest .
#
# BASE must have Python 3.11 (the wheelhouse's version) with venv: the official
# python:3.11-slim, or the local hacluster-base:bookworm from
# tools/build-base-image.sh when no image can be pulled.
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG SOURCE=unknown
COPY wheelhouse/ /tmp/wheelhouse/
RUN python3 -m venv /opt/hacluster \
    && /opt/hacluster/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \
        --find-links /tmp/wheelhouse hacluster \
    && rm -rf /tmp/wheelhouse
ENV PATH=/opt/hacluster/bin:$PATH
# tools/build-image.sh skips the build when this matches the source tree
LABEL org.hacluster.source=$SOURCE
# the node daemon running in the container, asked on its /health (needs http_port in
# its node.toml; labs set it): healthy means HA armed and NORMAL
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=3 \
    CMD ["hacluster", "health"]
CMD ["hacluster", "--help"]
