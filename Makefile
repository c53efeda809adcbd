# Set-up is part of every target: a clean clone needs only `make test` or `make demo`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SOURCES := $(shell find sqc passes formats targets -name '*.py' -o -name '*.md') pyproject.toml

.PHONY: test demo bench fuzz lint install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, from the CPU wheel pinned here: a plain requirement would pull a multi-GB CUDA build.
$(VENV)/.torch: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	touch $@

# The project is installed (not editable) so tests run against what users get.
$(STAMP): $(VENV)/.torch $(SOURCES)
	$(BIN)/pip install -q ".[test,plot]"
	$(BIN)/pip install -q --force-reinstall --no-deps .
	$(BIN)/pip install -q --force-reinstall --no-deps ./tests/plugin_example
	touch $@

install: $(STAMP)

# The suite lints the product code; `make lint` also covers the benchmark scripts and formatting.
test: $(STAMP)
	$(BIN)/ruff check sqc passes formats targets tests examples
	$(BIN)/pytest -q

demo: $(STAMP)
	$(BIN)/python examples/demo.py

bench: $(STAMP)
	$(BIN)/pip install -q ".[bench]"
	$(BIN)/pip install -q --force-reinstall --no-deps .
	$(BIN)/python benchmarks/run_all.py

fuzz: $(STAMP)
	$(BIN)/pip install -q atheris
	$(BIN)/python benchmarks/fuzz_container.py --time 600

lint: $(STAMP)
	$(BIN)/ruff check sqc passes formats targets tests benchmarks examples
	$(BIN)/ruff format --check sqc passes formats targets tests benchmarks examples

clean:
	rm -rf $(VENV) build *.egg-info
