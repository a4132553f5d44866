# Entry points. Everything runs inside .venv, created and filled from requirements.lock.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
# mkdocs-material's banner about MkDocs 2 off
export NO_MKDOCS_2_WARNING := 1

.PHONY: install repro release test test-fast docs profile clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

repro: install
	dvc repro

# a release: the default run plus what ships or analyses its fused model (off in experiments: params.yaml)
release: install
	dvc exp run -S final.enabled=true -S distill.enabled=true -S explain.enabled=true

test: install docs
	python -m pytest -q -n 2 --dist worksteal --durations=20  # two workers (an idle one takes tests from the other's queue); the 20 slowest listed

# unit tests only (tests/unit: no stage run, no DVC): the loop while editing; under 90 s on 2 cores
test-fast: install
	python -m pytest -q -n 2 --dist worksteal tests/unit

# the mkdocs site; --strict: a broken link or a page left out of nav fails
docs: install
	mkdocs build --strict --site-dir $(CURDIR)/site

# a forced default run, stage by stage as DVC runs them: wall, CPU, start-up, peak RSS per stage
profile: install
	python -m pipeline profile --out profile.json

clean:
	rm -rf data/synthetic data/interim data/features models/eeg models/mel models/topo models/acoustic models/fusion
