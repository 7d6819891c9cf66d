# fedbone site image (CPU variant). Same install steps as `make install`:
# the CPU build of torch first, then the project from its own pyproject.toml.
# Build from the repository root:  docker build -f docker/site.Dockerfile -t fedbone-site .
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
# host user who owns the site's key and archive, not as uid 10001.
RUN install -d -m 1777 /cache /work
# Flower keeps its installed apps under FLWR_HOME; matplotlib its font cache.
ENV FLWR_HOME=/work/.flwr MPLCONFIGDIR=/tmp/matplotlib HOME=/work
# Relative outputs land in the writable volume, never in the image.
WORKDIR /work
USER fedbone
# The hospital mounts its archive read-only at /data, its config at /config,
# its CA certificate and private key at /pki, and writable /cache and /work.
VOLUME ["/cache", "/work"]
ENTRYPOINT ["fedbone"]
CMD ["--help"]
