# Entry points. Everything runs inside .venv, created and filled from requirements.lock.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: install repro test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

repro: install
	dvc repro

test: install
	python -m pytest -q -n 2 --dist worksteal  # two workers; an idle one takes tests from the other's queue

clean:
	rm -rf data/synthetic data/interim data/features models/eeg models/mel models/topo models/acoustic models/fusion
