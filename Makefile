# Two entry points a new user needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A second venv with the Meta-World extra: metaworld pins mujoco==3.3.0, the main venv keeps MuJoCo 4.0,
# so the batched cheetah is tested under both (make test-metaworld).
VENV_MW := .venv-mw
# The CPU wheel of torch; an unpinned torch pulls several GB of CUDA packages.
TORCH := torch==2.13.0

.PHONY: install demo test test-all test-metaworld clean

$(BIN)/metarl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test,ray]"
	touch $(BIN)/metarl

install: $(BIN)/metarl

# It is layered on the main venv: a .pth file puts .venv's site-packages after its own, so pip finds torch,
# ray and the rest there and installs only what differs (mujoco 3.3.0, metaworld, scipy; about 0.1 GB instead
# of a second 1.5 GB copy, which once filled a CI machine's disk).
$(VENV_MW)/bin/metarl: $(BIN)/metarl
	rm -rf $(VENV_MW)
	$(PYTHON) -m venv $(VENV_MW)
	$(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
		> "$$($(VENV_MW)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/metarl-main-venv.pth"
	$(VENV_MW)/bin/pip install -q --upgrade pip
	$(VENV_MW)/bin/pip install -q -e ".[test,ray,metaworld]"
	$(VENV_MW)/bin/python -c 'import mujoco, metaworld, torch, sys; assert mujoco.__version__ == "3.3.0", mujoco.__file__'
	touch $(VENV_MW)/bin/metarl

demo: install
	$(BIN)/metarl train experiments/sinusoid_maml.yaml --set train.iterations=3000 --run-dir runs/demo --overwrite
	$(BIN)/metarl evaluate runs/demo --steps 10 --tasks 100

test: install
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/python -m pytest -q -m ""

# The Meta-World tests (skipped by `make test`, which has no metaworld) and the cheetah tests under mujoco 3.3.0.
test-metaworld: $(VENV_MW)/bin/metarl
	$(VENV_MW)/bin/python -m pytest -q tests/test_metaworld.py tests/test_metaworld_fast.py tests/test_metaworld_vector.py tests/test_half_cheetah.py

clean:
	rm -rf $(VENV) $(VENV_MW) runs build *.egg-info
