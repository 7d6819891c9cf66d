# fedbone site image (CUDA variant). Same install steps as `make install` on a GPU
# machine: the CUDA build of torch (PyPI wheel, bundles the CUDA runtime) first,
# then the project from its own pyproject.toml. The host needs the NVIDIA driver
# and the NVIDIA container toolkit (docker run --gpus all).
# Build from the repository root:  docker build -f docker/site-cuda.Dockerfile -t fedbone-site-cuda .
# BASE: any Debian-like image with Python 3.11 as `python` (make images builds
# one from Debian's packages with debootstrap where no registry is reachable).
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN useradd --create-home --uid 10001 fedbone
WORKDIR /opt/fedbone
COPY pyproject.toml README.md ./
COPY fedbone ./fedbone
COPY sites ./sites
COPY server ./server
RUN python -m pip install --upgrade pip \
 && python -m pip install "torch==${TORCH_VERSION}" \
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
