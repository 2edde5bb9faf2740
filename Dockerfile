# featureedit image: one image, two roles (and every other `featureedit` command).
#
#   docker build -t featureedit .                                   # CPU (python:3.11-slim)
#   docker build -t featureedit:gpu \
#       --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 .   # GPU workers
#   docker run -e REDIS_URL=redis://redis:6379/0 -p 8000:8000 featureedit api
#   docker run -e REDIS_URL=redis://redis:6379/0 --gpus all featureedit:gpu worker --device cuda:0
#   docker run --rm -v featureedit-home:/data featureedit world build --size small
#
# Installs like .ci/run: `pip install` of this project, which pins torch (==2.13.0) in
# pyproject.toml; without the dev extras. PyPI's Linux torch wheel brings its own CUDA libraries,
# so the GPU image needs only the host's NVIDIA driver (nvidia-container-toolkit); the CUDA base
# image adds the CUDA runtime for other libraries. For a small CPU-only image pass
# `--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu` (the same torch version from
# PyTorch's CPU wheel index). featureedit never downloads models: mount them and name them in
# $FEATUREEDIT_HOME/models.toml (see README.md). deploy/README.md: compose, Kubernetes, settings.

ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- base: a Python >= 3.11
FROM ${BASE_IMAGE} AS base
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive
# python:*-slim has Python; a CUDA (Ubuntu) base gets the distribution's python3 (3.12 on 24.04).
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -c 'import sys; assert sys.version_info >= (3, 11), sys.version'

# ---------------------------------------------------------------- build: the venv
FROM base AS build
ARG TORCH_INDEX_URL=""
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY editing ./editing
COPY service ./service
COPY workers ./workers
COPY ops ./ops
# The torch pin is read from pyproject.toml, so an alternative index gets the very same version.
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        torch_pin="$(grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')" \
        && /opt/venv/bin/pip install --index-url "$TORCH_INDEX_URL" "$torch_pin"; \
    fi \
    && /opt/venv/bin/pip install . \
    && /opt/venv/bin/featureedit --help >/dev/null

# ---------------------------------------------------------------- runtime
FROM base AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FEATUREEDIT_HOME=/data \
    HF_HUB_OFFLINE=1 \
    PORT=8000
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin featureedit \
    && mkdir -p /data \
    && chown featureedit:featureedit /data
COPY --from=build /opt/venv /opt/venv
COPY --chmod=0755 deploy/docker-entrypoint.sh /usr/local/bin/featureedit-entrypoint
USER 10001:10001
WORKDIR /home/featureedit
VOLUME ["/data"]
EXPOSE 8000
# api: GET /healthz; worker: a heartbeat of this host's worker in Redis (workers/healthcheck.py).
# start-period: a worker loads its model(s) before it first registers.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-m", "workers.healthcheck", "auto"]
ENTRYPOINT ["featureedit-entrypoint"]
CMD ["api"]
