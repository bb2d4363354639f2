# Set-up is part of every target: a fresh clone needs nothing installed beforehand.
#   make simulate   - the main job: Azure 2023 conversation trace on distserve-opt13b-a100
#   make test       - the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Public data is read from a local mirror when one is beside the clone (../shared/data),
# else downloaded (sha256-checked) on first use.
DYNASIM_DATA_DIR ?= $(if $(wildcard ../shared/data/README.md),$(abspath ../shared/data),)
export DYNASIM_DATA_DIR

.PHONY: simulate test validate benchmark clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

simulate: $(BIN)/.installed
	$(BIN)/dynasim simulate --trace azure-conv-2023 --profile distserve-opt13b-a100 --output-dir out/azure-conv-2023

test: $(BIN)/.installed
	@$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

validate: $(BIN)/.installed
	$(BIN)/dynasim validate

benchmark: $(BIN)/.installed
	$(BIN)/python -m dynasim.benchmark --repeat 3

clean:
	rm -rf $(VENV) out
