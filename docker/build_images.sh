#!/usr/bin/env bash
# Build the site (CPU) and centre images without a Docker daemon (buildah), the
# way `make images` does, and record their sizes in bench/results/images.md.
#
# - The base: python:3.11-slim when a registry answers; otherwise (no registry,
#   as on machines that reach only PyPI and Debian) one made here from Debian's
#   packages with debootstrap: bookworm's Python 3.11 in a venv that is first on
#   PATH, so the Dockerfiles' `python -m pip install` steps run unchanged.
# - torch: the Makefile's TORCH_VERSION, CPU build; a local wheel of it (pip's
#   wheel folders, e.g. /opt/wheels) is copied into docker/wheels/ and used
#   first, else the CPU index.
# Needs root (or a rootless buildah set-up), buildah, and debootstrap for the
# Debian base. Storage: vfs (works without overlay support; slower, bigger).
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=$(sed -n 's/^TORCH_VERSION ?= //p' Makefile)
export STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}
BASE=${BASE:-}
DEBIAN_BASE=localhost/fedbone-base:bookworm
RESULTS=bench/results/images.md

command -v buildah >/dev/null || {
  echo "buildah is not installed: apt-get install buildah (Debian's daemonless image builder)" >&2
  exit 2
}

if [ -z "$BASE" ]; then
  if timeout 60 buildah pull -q docker.io/library/python:3.11-slim >/dev/null 2>&1; then
    BASE=docker.io/library/python:3.11-slim
  elif buildah inspect --type image "$DEBIAN_BASE" >/dev/null 2>&1; then
    BASE=$DEBIAN_BASE
  else
    command -v debootstrap >/dev/null || {
      echo "no registry answered and debootstrap is missing: apt-get install debootstrap" >&2
      exit 2
    }
    echo "no registry answered: building $DEBIAN_BASE from Debian's packages (debootstrap)"
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
    chroot "$rootfs" python3 -m venv /opt/venv
    ctr=$(buildah from scratch)
    mnt=$(buildah mount "$ctr")
    cp -a "$rootfs"/. "$mnt"/
    buildah umount "$ctr" >/dev/null
    buildah config \
      --env PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --env LANG=C.UTF-8 "$ctr"
    buildah commit -q "$ctr" "$DEBIAN_BASE" >/dev/null
    buildah rm "$ctr" >/dev/null
    BASE=$DEBIAN_BASE
  fi
fi

rm -f docker/wheels/*.whl
for wheel in /opt/wheels/torch-"${TORCH_VERSION}"+cpu-cp311-*.whl; do
  [ -f "$wheel" ] && cp "$wheel" docker/wheels/
done
TORCH_CPU_INDEX="--extra-index-url https://download.pytorch.org/whl/cpu"
if ls docker/wheels/*.whl >/dev/null 2>&1 \
   && ! timeout 10 python3 -c "import urllib.request; urllib.request.urlopen('https://download.pytorch.org/whl/cpu/', timeout=8)" 2>/dev/null; then
  TORCH_CPU_INDEX=""   # the local wheel; the index does not answer here
fi

# A hospital or build machine behind an intercepting proxy: the build's RUN
# steps see the host's CA bundle and pip settings (mounted, never copied into
# the image).
mounts=()
for file in /etc/ssl/certs/ca-certificates.crt /etc/pip.conf; do
  [ -f "$file" ] && mounts+=(--volume "$file:$file:ro")
done

declare -A seconds=([site]=- [centre]=-)
for image in site centre; do
  [ "${SKIP_BUILD:-0}" = 1 ] && continue
  started=$(date +%s)
  buildah bud --quiet --layers=false "${mounts[@]}" \
    --build-arg BASE="$BASE" --build-arg TORCH_CPU_INDEX="$TORCH_CPU_INDEX" \
    -f "docker/$image.Dockerfile" -t "localhost/fedbone-$image:latest" . >/dev/null
  seconds[$image]=$(( $(date +%s) - started ))
  echo "built localhost/fedbone-$image:latest in ${seconds[$image]} s"
done
rm -f docker/wheels/*.whl

{
  echo "# Container images built on this machine (\`make images\`)"
  echo
  echo "$(date +%F) on $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1) ($(nproc) cores),"
  echo "buildah $(buildah --version | awk '{print $3}'), storage $STORAGE_DRIVER, base \`$BASE\`."
  echo
  echo "| image | size | build s |"
  echo "|---|---|---|"
  for image in site centre; do
    size=$(buildah images --format '{{.Size}}' "localhost/fedbone-$image:latest" | head -1)
    echo "| fedbone-$image | $size | ${seconds[$image]} |"
  done
} > "$RESULTS"

# A centre and a site from the images on loopback: the SuperLink (centre
# image) must register and activate the SuperNode (site image). Plain HTTP
# here; TLS and SuperNode authentication are the deployment tests' (processes).
centre=$(buildah from "localhost/fedbone-centre:latest")
site=$(buildah from "localhost/fedbone-site:latest")
logs=$(mktemp -d)
timeout 90 buildah run --network host "$centre" -- \
  flower-superlink --insecure --host 127.0.0.1 --port 19092 >"$logs/centre.log" 2>&1 &
sleep 15
timeout 70 buildah run --network host "$site" -- \
  flower-supernode --insecure --superlink 127.0.0.1:19092 --host 127.0.0.1 --port 19094 \
  >"$logs/site.log" 2>&1 &
activated=""
for _ in $(seq 60); do
  activated=$(grep -o "Activated node_id=[0-9]*" "$logs/centre.log" | head -1 || true)
  [ -n "$activated" ] && break
  sleep 1
done
{
  echo
  echo "Loopback: \`flower-superlink\` from fedbone-centre and \`flower-supernode\` from"
  echo "fedbone-site, plain HTTP on 127.0.0.1:19092, both under \`buildah run --network host\`:"
  if [ -n "$activated" ]; then
    echo "the SuperLink registered and activated the site (\`$activated\`)."
  else
    echo "the site was NOT activated within 60 s; the logs follow."
    tail -5 "$logs/centre.log" "$logs/site.log" | sed 's/^/    /'
  fi
  echo "No study was submitted from the images (the TLS study runs over processes:"
  echo "tests/integration/test_deployment.py)."
} >> "$RESULTS"
pkill -f "flower-supernode --insecure --superlink 127.0.0.1:19092" || true
pkill -f "flower-superlink --insecure --host 127.0.0.1 --port 19092" || true
sleep 2
buildah rm "$centre" "$site" >/dev/null || true
cat "$RESULTS"
