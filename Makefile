# synthrel: `make demo` and `make test` work on a fresh machine (they install first when needed).
PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.installed
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TQDM_MININTERVAL ?= 5

.PHONY: help install demo gpu-check test test-full test-fast bench lint format clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' Makefile | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0   # pinned: the CPU wheel on disk, never an unpinned CUDA build
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## build the project-local .venv

demo: $(STAMP) ## run the whole pipeline on the tiny profile (demo data, tiny models) and print the report path
	$(PY) -m synthrel.run +experiment=demo

gpu-check: $(STAMP) ## on a GPU: every stage through the CLI at real size (profile=smoke; SD1.5, then SDXL), stage table in the run folder; fails without CUDA
	$(PY) -m synthrel.run +experiment=gpu_check profile=smoke
	$(PY) -m synthrel.run +experiment=gpu_check profile=smoke backbone=sdxl

test: $(STAMP) ## run the whole test suite, as CI does (fails when no test is collected)
	$(PY) -m pytest -q -n 2

test-full: $(STAMP) ## everything, plus every README command and experiments/ recipe as written on the tiny profile (tens of minutes)
	$(PY) -m pytest -q -n 2 --dist loadfile --full

test-fast: $(STAMP) ## skip the slow tests (kill/resume in subprocesses, DDP, compile, tmpfs): a few minutes less
	$(PY) -m pytest -q -m "not slow" -n 2

BENCH ?= all
bench: $(STAMP) ## GPU benchmarks side by side with their baselines (BENCH="gen --model sd15", "eval", or "gen --tiny --quick" on CPU)
	$(PY) -m benchmarks.run $(BENCH)

lint: $(STAMP) ## ruff
	.venv/bin/ruff check synthrel tests benchmarks tools

format: $(STAMP)
	.venv/bin/ruff format synthrel tests benchmarks tools

clean: ## remove outputs (not the venv)
	rm -rf outputs multirun .pytest_cache
