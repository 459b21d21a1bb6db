# The README's two commands. Each creates .venv/ at the repo root when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-toy test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch first, so nothing below pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[eval,plots]"
	$(BIN)/python -m pip install -q --group test
	touch $(STAMP)

# The real demo: SmolLM2-135M-Instruct (fetched and converted once) with the shipped AHN.
demo: $(STAMP)
	$(BIN)/ahn demo --output runs/demo

# The toy demo: trains an AHN from scratch on the shipped 0.55M-parameter base in minutes.
demo-toy: $(STAMP)
	$(BIN)/ahn demo-toy --output runs/demo-toy

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check src tests benchmarks

# One torch thread: two threads were several times slower on the shared 2-core machines.
bench: $(STAMP)
	$(BIN)/python benchmarks/ops.py --threads 1
	$(BIN)/python benchmarks/inference.py --threads 1
	$(BIN)/python benchmarks/train.py --threads 1 --seq-lens 1024 4096

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
