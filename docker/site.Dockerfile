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
USER fedbone
# The hospital mounts its archive read-only at /data and a writable /cache.
VOLUME ["/data", "/cache"]
ENTRYPOINT ["fedbone"]
CMD ["--help"]
