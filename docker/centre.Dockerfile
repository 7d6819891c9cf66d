# fedbone centre image: the Flower SuperLink and the study's ServerApp. Same
# install steps as `make install` without a GPU: the CPU build of torch first
# (the server builds the initial model, it never trains), then the project from
# its own pyproject.toml, so nothing is installed when a study is submitted.
# Build from the repository root:  docker build -f docker/centre.Dockerfile -t fedbone-centre .
# BASE: any Debian-like image with Python 3.11 as `python` (make images builds
# one from Debian's packages with debootstrap where no registry is reachable).
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 fedbone
WORKDIR /opt/fedbone
COPY pyproject.toml README.md ./
COPY fedbone ./fedbone
COPY sites ./sites
COPY server ./server
# A local torch wheel in docker/wheels/ (make images puts one there when the
# machine has it) is used first; otherwise the CPU index, as with make's
# TORCH_CPU_INDEX.
ARG TORCH_CPU_INDEX="--extra-index-url https://download.pytorch.org/whl/cpu"
COPY docker/wheels /wheels
RUN python -m pip install --upgrade pip \
 && python -m pip install "torch==${TORCH_VERSION}+cpu" \
      --find-links /wheels ${TORCH_CPU_INDEX} \
 && python -m pip install .
# Writable by any uid (sticky, like /tmp): compose may run the container as the
# host user who owns the study's PKI, not as uid 10001.
RUN install -d -m 1777 /state
ENV FLWR_HOME=/state/.flwr MPLCONFIGDIR=/tmp/matplotlib HOME=/state
# Relative outputs (runs/<run-id>/...) land in the persistent volume.
WORKDIR /state
USER fedbone
# 9092: Flower 1.42 serves the Fleet API (sites), the Control API (flwr) and
# the runtime API on this one HTTPS port.
EXPOSE 9092
# /state holds the SuperLink database (resume after a restart) and the results.
VOLUME ["/state"]
ENTRYPOINT ["fedbone"]
CMD ["--help"]
