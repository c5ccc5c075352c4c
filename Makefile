# Development entry points. `make test` needs nothing but Python 3, Go and the module proxy.
PYTHON ?= python3
VENV   := .venv
DEV    ?= .dev

.PHONY: venv lock image krew tools up down status demo lint test unit e2e node bench bench-deps

venv: $(VENV)/.installed
# The locked versions first (the image's, see requirements.lock), then the project and its
# test tools; pip keeps the locked versions where they satisfy the project.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --require-hashes -r requirements.lock
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

# requirements.lock: every runtime dependency, pinned, with the hashes of all its files on
# PyPI. Pins already there are kept; `make lock UPGRADE=1` moves them to the newest versions.
# The second compile resolves the lock itself for arm64: it fails if a pin has no wheel there.
UV_VERSION := 0.13.9
UV_COMPILE  = $(VENV)/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--only-binary :all: --custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade)
lock: venv
	$(VENV)/bin/pip install -q 'uv==$(UV_VERSION)'
	$(UV_COMPILE) --python-platform x86_64-manylinux_2_28 -o requirements.lock pyproject.toml
	$(UV_COMPILE) --python-platform aarch64-manylinux_2_28 -o /dev/null requirements.lock

# The product image, built without a Docker daemon (hack/image.py): IMAGE=REPO[:TAG] pushes it.
image: venv
	hack/tools.sh crane
	$(VENV)/bin/python hack/image.py build $(if $(IMAGE),--push $(IMAGE))

# The kubectl plugin for krew (hack/krew.py): dist/kubectl-imagestream.tar.gz and its krew
# manifest dist/imagestream.yaml, whose uri is KREW_URL_BASE/kubectl-imagestream.tar.gz.
krew: venv
	$(VENV)/bin/python hack/krew.py $(if $(KREW_URL_BASE),--url-base $(KREW_URL_BASE))

tools:             ## Go tools (control plane, node, helm, crane, registry, CoreDNS) and Debian packages
	hack/packages.sh
	hack/tools.sh

up: venv tools     ## a one-node cluster with the chart installed (state in $(DEV))
	$(VENV)/bin/python hack/localcluster.py up --dir $(DEV)

down:
	$(VENV)/bin/python hack/localcluster.py down --dir $(DEV)

status:
	$(VENV)/bin/python hack/localcluster.py status --dir $(DEV)

demo: up
	DEV=$(DEV) hack/demo.sh

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: venv tools lint
	$(VENV)/bin/pytest -q tests

unit: venv
	$(VENV)/bin/pytest -q tests/unit

e2e: venv tools
	$(VENV)/bin/pytest -q tests/e2e

node: venv tools   ## the node tier alone: the chart's pods and workloads on a real kubelet
	$(VENV)/bin/pytest -q tests/node

bench: venv tools bench-deps   ## prints every figure, writes bench/results.json
	$(VENV)/bin/python -m bench

# wrk, the HTTP load generator of the benchmarks, comes from Debian's packages.
bench-deps:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
