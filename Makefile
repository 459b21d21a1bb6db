# The README's two commands. Each creates .venv/ at the repo root when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# What `make demo` needs (the library and its plots), and what `make test` adds (the official
# scorers' libraries, lm-eval, pytest, ruff): the demo's environment stays lean.
RUNTIME := $(VENV)/.installed
TESTING := $(VENV)/.installed-test

.PHONY: demo demo-toy test lint bench kvpress clean

$(RUNTIME): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch first, so nothing below pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[plots]"
	touch $(RUNTIME)

$(TESTING): $(RUNTIME)
	$(BIN)/python -m pip install -q -e ".[eval,plots]"
	$(BIN)/python -m pip install -q --group test
	touch $(TESTING)

# The real demo: SmolLM2-135M-Instruct (fetched and converted once) with the shipped AHN.
demo: $(RUNTIME)
	$(BIN)/ahn demo --output runs/demo

# The toy demo: trains an AHN from scratch on the shipped 0.55M-parameter base in minutes.
demo-toy: $(RUNTIME)
	$(BIN)/ahn demo-toy --output runs/demo-toy

test: $(TESTING)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(TESTING)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check src tests benchmarks

# One torch thread: two threads were several times slower on the shared 2-core machines.
bench: $(RUNTIME)
	$(BIN)/python benchmarks/ops.py --threads 1
	$(BIN)/python benchmarks/inference.py --threads 1
	$(BIN)/python benchmarks/train.py --threads 1 --seq-lens 1024 4096

# kvpress's presses on the evaluation's passkey prompts, beside the AHN (docs/benchmarks.md).
# kvpress 0.5.5 needs transformers < 5.3, so it gets an environment of its own; the prompts
# pass between the two as token ids.
KVPRESS := .venv-kvpress
KVPRESS_OUT := runs/kvpress

$(KVPRESS)/.installed:
	test -x $(KVPRESS)/bin/python || $(PY) -m venv $(KVPRESS)
	$(KVPRESS)/bin/python -m pip install -q --upgrade pip
	$(KVPRESS)/bin/python -m pip install -q "torch==2.13.0"
	$(KVPRESS)/bin/python -m pip install -q "kvpress==0.5.5"
	touch $@

kvpress: $(RUNTIME) $(KVPRESS)/.installed
	mkdir -p $(KVPRESS_OUT)
	$(BIN)/python benchmarks/kvpress_prompts.py --lengths 4k,8k --output $(KVPRESS_OUT)/prompts.jsonl
	$(KVPRESS)/bin/python benchmarks/kvpress_run.py --prompts $(KVPRESS_OUT)/prompts.jsonl \
		--base "$$($(BIN)/ahn fetch-base smollm2-135m-instruct | tail -1)" --keep 576,728 \
		--output $(KVPRESS_OUT)/results.jsonl

clean:
	rm -rf $(VENV) $(KVPRESS) runs build *.egg-info src/*.egg-info
