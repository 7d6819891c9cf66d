# fedbone — the two commands: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fedbone-installed
TORCH_VERSION ?= 2.13.0
# Where no GPU is present the CPU build of torch is pinned (torch==X+cpu), so a
# CUDA build is never pulled by accident. If your pip cannot already see a CPU
# wheel, point it at one, e.g.
#   make test TORCH_CPU_INDEX='--extra-index-url https://download.pytorch.org/whl/cpu'
TORCH_CPU_INDEX ?=
DEMO_CONFIG ?= configs/simulation.yaml

.PHONY: install browser demo test test-fast lint bench images clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "GPU found: installing the CUDA build of torch $(TORCH_VERSION)"; \
	  $(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"; \
	else \
	  echo "no GPU: installing the CPU build of torch $(TORCH_VERSION)"; \
	  $(PY) -m pip install --quiet "torch==$(TORCH_VERSION)+cpu" $(TORCH_CPU_INDEX) \
	  || $(PY) -m pip install --quiet "torch==$(TORCH_VERSION)" $(TORCH_CPU_INDEX); \
	fi
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The reader-study page is tested in a real headless browser: Debian's
# chromium and chromium-driver, installed here when missing and apt-get can
# (root); elsewhere that one test is skipped and says why.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium and chromium-driver (reader-study browser test)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
	    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } \
	    || echo "could not install chromium: the browser test will be skipped"; \
	  else \
	    echo "no chromium: the reader-study browser test will be skipped (apt-get install chromium chromium-driver)"; \
	  fi; \
	fi

demo: install
	$(VENV)/bin/fedbone simulate $(DEMO_CONFIG)

test: install browser
	$(PY) -m pytest -q

# The loop while you work: everything but the tests marked slow (whole studies
# over real Flower processes); CI runs `make test`.
test-fast: install browser
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check fedbone sites server tests bench
	$(VENV)/bin/ruff format --check fedbone sites server tests bench
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/bench_data.py
	$(PY) bench/bench_local_epoch.py
	$(PY) bench/bench_federation.py

# The site (CPU) and centre images, built without a Docker daemon (buildah);
# sizes go to bench/results/images.md. See docker/README.md.
images:
	docker/build_images.sh

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
