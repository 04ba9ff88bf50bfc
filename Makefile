# Two entry points a new user needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch; an unpinned torch pulls several GB of CUDA packages.
TORCH := torch==2.13.0

.PHONY: install demo test test-all clean

$(BIN)/metarl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test,ray]"
	touch $(BIN)/metarl

install: $(BIN)/metarl

demo: install
	$(BIN)/metarl train experiments/sinusoid_maml.yaml --set train.iterations=3000 --run-dir runs/demo --overwrite
	$(BIN)/metarl evaluate runs/demo --steps 10 --tasks 100

test: install
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/python -m pytest -q -m ""

clean:
	rm -rf $(VENV) runs build *.egg-info
