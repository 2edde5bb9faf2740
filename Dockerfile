# featureedit image: the `featureedit` command (and, as they land, the API and workers).
#
#   docker build -t featureedit .
#   docker run --rm -v featureedit-home:/data featureedit world build --size small
#
# Installs like .ci/run (`pip install` of this project, torch pinned to 2.13.0 by pyproject.toml),
# without the dev extras. For a CPU-only torch wheel instead of the default build, pass
# `--build-arg TORCH_INDEX_URL=<PyTorch's CPU wheel index>`. featureedit never downloads
# models: mount them and name them in $FEATUREEDIT_HOME/models.toml (see README.md).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv \
    && if [ -n "$TORCH_INDEX_URL" ]; then \
        /opt/venv/bin/pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0; \
    fi
WORKDIR /src
COPY pyproject.toml README.md ./
COPY editing ./editing
COPY service ./service
COPY workers ./workers
RUN /opt/venv/bin/pip install .

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FEATUREEDIT_HOME=/data \
    HF_HUB_OFFLINE=1
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin featureedit \
    && mkdir -p /data \
    && chown featureedit:featureedit /data
COPY --from=build /opt/venv /opt/venv
USER featureedit
WORKDIR /home/featureedit
VOLUME ["/data"]
ENTRYPOINT ["featureedit"]
CMD ["--help"]
