# normlab: every target that needs the environment depends on the install stamp,
# so `make test` / `make train` / `make ablation` work on a fresh clone with no step before.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch. Skipped when the venv already has a torch (e.g. your CUDA build):
# create $(VENV) with it first, or run `make install TORCH=` to install nothing for torch.
TORCH ?= torch==2.13.0
# the environment alone (the GPU check needs no download), then the environment + Fashion-MNIST
ENV_STAMP := $(VENV)/.normlab-environment
STAMP := $(VENV)/.normlab-installed
ARGS ?=

.PHONY: help install data train ablation reproduce report results bench test test-all lint format clean gpu-check

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(ENV_STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if $(PY) -c 'import torch' 2>/dev/null; then \
		echo "keeping the installed torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif [ -n "$(TORCH)" ]; then $(PY) -m pip install -q "$(TORCH)"; fi
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

$(STAMP): $(ENV_STAMP)
	$(PY) -m normlab.data.fetch fashion_mnist
	@touch $@

install: $(STAMP) ## venv + torch (CPU wheel unless one is installed) + normlab[dev] + data

data: $(STAMP) ## Fashion-MNIST: Debian's package where apt works, else a checksummed download
	$(PY) -m normlab.data.fetch fashion_mnist

train: $(STAMP) ## train the default config (ARGS="norm=none activation=relu ...")
	$(PY) -m normlab.train $(ARGS)

ablation: $(STAMP) ## the main job: bn_sigmoid_vs_relu sweep (2 act x 2 norm x 3 seeds, stacked) + report
	$(PY) -m normlab.train -m experiment=bn_sigmoid_vs_relu $(ARGS)

reproduce: $(STAMP) ## the BatchNorm paper's Figure 1 setup at its full 50k-step budget + report
	$(PY) -m normlab.train -m experiment=bn_paper_fig1 $(ARGS)

report: $(STAMP) ## rebuild a sweep's report: make report SWEEP=outputs/multirun/<name>/<sweep>
	$(PY) -m normlab.report $(SWEEP)

results: $(STAMP) ## docs/results.md and the README's results tables from the latest finished sweeps
	$(PY) -m normlab.results

bench: $(STAMP) ## steps/s vs a raw PyTorch loop + sweep wall time (ARGS="--repeats 3 ...")
	$(PY) -m normlab.bench --json outputs/bench/bench.json $(ARGS)

# a worker per core, each module on one worker (its module fixtures train once); pytest prints
# the 15 slowest tests (pyproject.toml), then the line with the target's wall time
test: $(STAMP) ## lint, then the test suite on every core (fast tests; slow ones: make test-all)
	@start=$$SECONDS; status=0; \
	$(VENV)/bin/ruff check src tests && $(VENV)/bin/ruff format --check src tests \
	&& $(PY) -m pytest -q -n auto --dist loadscope || status=$$?; \
	echo "make test: $$((SECONDS - start)) s wall (lint and tests)"; exit $$status

test-all: $(STAMP) ## every test, including the slow science checks
	$(PY) -m pytest -q -m ''

gpu-check: $(ENV_STAMP) ## the GPU paths on this GPU, each a number vs a reference (< 10 min, no download)
	PY=$(PY) bash scripts/gpu_check.sh $(ARGS)

lint: $(STAMP) ## ruff lint + format check
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format: $(STAMP) ## ruff format + autofix
	$(VENV)/bin/ruff format src tests
	$(VENV)/bin/ruff check --fix src tests

clean: ## caches and the install stamp (outputs/, data/ and .venv are kept)
	rm -rf .pytest_cache .ruff_cache build src/*.egg-info $(STAMP) $(ENV_STAMP)
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
