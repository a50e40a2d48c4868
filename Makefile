# synthrel: `make demo` and `make test` work on a fresh machine (they install first when needed).
PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.installed
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TQDM_MININTERVAL ?= 5

.PHONY: help install lock demo gpu-check test test-full test-fast bench lint format clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' Makefile | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

# TORCH_INDEX: where torch==2.13.0+cpu comes from when no local index has it, e.g.
# make install TORCH_INDEX="--extra-index-url https://download.pytorch.org/whl/cpu" (docs/install.md)
TORCH_INDEX ?=
$(STAMP): pyproject.toml requirements.lock
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_INDEX) -r requirements.lock   # the locked set, exactly (CPU torch)
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP) ## build the project-local .venv from requirements.lock

lock: ## rewrite requirements.lock from pyproject.toml's ranges, keeping today's pins (pip-tools; UPGRADE="--upgrade" or "-P numpy" to move)
	python3 -m venv /tmp/synthrel-lock && /tmp/synthrel-lock/bin/pip install -q pip-tools
	/tmp/synthrel-lock/bin/pip-compile -q --extra dev --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links $(UPGRADE) -o requirements.lock pyproject.toml
	rm -rf build synthrel.egg-info

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
