# fedbone centre image: the Flower SuperLink and the study's ServerApp. Same
# install steps as `make install` without a GPU: the CPU build of torch first
# (the server builds the initial model, it never trains), then the project from
# its own pyproject.toml, so nothing is installed when a study is submitted.
# Build from the repository root:  docker build -f docker/centre.Dockerfile -t fedbone-centre .
FROM python:3.11-slim
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 fedbone
WORKDIR /opt/fedbone
COPY pyproject.toml README.md ./
COPY fedbone ./fedbone
COPY sites ./sites
COPY server ./server
RUN python -m pip install --upgrade pip \
 && python -m pip install "torch==${TORCH_VERSION}+cpu" \
      --extra-index-url https://download.pytorch.org/whl/cpu \
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
