# keyledger: `make demo` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help deps test test-unit lint fmt crds demo demo-down bench clean

help:
	@echo "make demo       start a local control plane + operator, apply examples/"
	@echo "make demo-down  stop everything make demo started"
	@echo "make test       install every test dependency and run the whole suite"
	@echo "make lint       ruff + mypy --strict"
	@echo "make crds       regenerate crds/ from hack/gen_crds.py"
	@echo "make bench      benchmarks"

deps:
	bash hack/install-deps.sh all

test: deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: deps
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint:
	bash hack/install-deps.sh python
	$(VENV)/bin/ruff check operator tests hack migrations benchmarks
	$(VENV)/bin/ruff format --check operator tests hack migrations benchmarks
	$(VENV)/bin/mypy

fmt:
	$(VENV)/bin/ruff format operator tests hack migrations benchmarks
	$(VENV)/bin/ruff check --fix operator tests hack migrations benchmarks

crds:
	PYTHONPATH=operator $(PY) hack/gen_crds.py

demo: deps
	bash hack/demo.sh up

demo-down:
	bash hack/demo.sh down

bench: deps
	@set -e; for bench in benchmarks/bench_*.py; do \
		echo "== $$bench"; $(PY) $$bench; \
	done

clean: demo-down
	rm -rf .demo
