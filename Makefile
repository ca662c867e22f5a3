# keyledger: `make demo` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help deps test test-unit soak lint fmt crds demo demo-down bench clean kind-up deploy

help:
	@echo "make demo       start a local control plane + operator, apply examples/"
	@echo "make demo-down  stop everything make demo started"
	@echo "make test       install every test dependency and run the whole suite"
	@echo "make soak       the fault-injection tests, longer and harder (not part of make test)"
	@echo "make lint       ruff + mypy --strict + hadolint on the Dockerfile"
	@echo "make crds       regenerate crds/ from hack/gen_crds.py"
	@echo "make bench      benchmarks"
	@echo "make kind-up    (Docker + kind) a kind cluster with the operator image loaded"
	@echo "make deploy     (Docker + kind) install the dev overlay into it"

deps:
	bash hack/install-deps.sh all

test: deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: deps
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# The KMS fault and API-server restart tests with more keys, rounds and faults;
# override any of these on the command line, e.g. make soak SOAK_FAULT_SHARE=0.5.
SOAK_FAULT_SHARE ?= 0.15
SOAK_FAULT_KEYS ?= 6
SOAK_FAULT_ROTATIONS ?= 4
SOAK_FAULT_SEED ?= $(shell date +%s)
SOAK_RESTART_KEYS ?= 12
SOAK_RESTART_OUTAGES ?= 4
SOAK_RESTART_OUTAGE_S ?= 20
SOAK_TIMEOUT_S ?= 1800
soak: deps
	KEYLEDGER_FAULT_SHARE=$(SOAK_FAULT_SHARE) KEYLEDGER_FAULT_KEYS=$(SOAK_FAULT_KEYS) \
	KEYLEDGER_FAULT_ROTATIONS=$(SOAK_FAULT_ROTATIONS) KEYLEDGER_FAULT_SEED=$(SOAK_FAULT_SEED) \
	KEYLEDGER_RESTART_KEYS=$(SOAK_RESTART_KEYS) KEYLEDGER_RESTART_OUTAGES=$(SOAK_RESTART_OUTAGES) \
	KEYLEDGER_RESTART_OUTAGE_S=$(SOAK_RESTART_OUTAGE_S) KEYLEDGER_SOAK_TIMEOUT_S=$(SOAK_TIMEOUT_S) \
	$(PY) -m pytest -o timeout=3600 \
		tests/e2e/test_kms_faults.py tests/e2e/test_apiserver_restart.py \
		tests/e2e/test_crash_safety.py tests/e2e/test_ledger_outage.py $(PYTEST_ARGS)

lint:
	bash hack/install-deps.sh python
	$(VENV)/bin/ruff check operator tests hack migrations benchmarks
	$(VENV)/bin/ruff format --check operator tests hack migrations benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile

fmt:
	$(VENV)/bin/ruff format operator tests hack migrations benchmarks
	$(VENV)/bin/ruff check --fix operator tests hack migrations benchmarks

crds:
	PYTHONPATH=operator $(PY) hack/gen_crds.py
	$(PY) hack/gen_crd_reference.py

# The kind path, for machines with Docker and kind (not this repository's CI).
KIND_CLUSTER ?= keyledger
IMAGE ?= keyledger:dev

kind-up:
	kind get clusters | grep -qx $(KIND_CLUSTER) || kind create cluster --name $(KIND_CLUSTER)
	docker build -t $(IMAGE) .
	kind load docker-image $(IMAGE) --name $(KIND_CLUSTER)

# The first apply creates the CRDs; objects of those kinds need a second one.
deploy:
	-kubectl --context kind-$(KIND_CLUSTER) apply --server-side -k manifests/overlays/dev
	kubectl --context kind-$(KIND_CLUSTER) wait --for=condition=Established --timeout=60s crd --all
	kubectl --context kind-$(KIND_CLUSTER) apply --server-side -k manifests/overlays/dev
	kubectl --context kind-$(KIND_CLUSTER) -n keyledger-system rollout status deploy/keyledger-operator --timeout=180s

demo: deps
	bash hack/demo.sh up

demo-down:
	bash hack/demo.sh down

bench: deps
	$(VENV)/bin/pip install -q -e '.[dev,bench]'
	@missed=""; for bench in benchmarks/bench_*.py; do \
		echo "== $$bench"; \
		$(PY) -m benchmarks.$$(basename $$bench .py) || missed="$$missed $$bench"; \
	done; \
	if [ -n "$$missed" ]; then echo "targets missed or failed in:$$missed"; exit 1; fi

clean: demo-down
	rm -rf .demo
