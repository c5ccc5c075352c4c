# Development entry points. `make test` needs nothing but Python 3, Go and the module proxy.
PYTHON ?= python3
VENV   := .venv
DEV    ?= .dev

.PHONY: venv tools up down status demo lint test unit e2e bench bench-deps

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

tools:             ## etcd, kube-apiserver, kube-controller-manager, kubectl, helm, crane, registry
	hack/tools.sh

up: venv tools     ## local control plane + registry + webhook on 127.0.0.1 (state in $(DEV))
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

bench: venv tools bench-deps   ## prints every figure, writes bench/results.json
	$(VENV)/bin/python -m bench

# wrk, the HTTP load generator of the benchmarks, comes from Debian's packages.
bench-deps:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
