# Two commands for a fresh clone: `make demo` (the main job) and `make test` (the whole suite).
# Both create or reuse the project virtual environment .venv and install what they need.
# CPU machines get the CPU torch build; GPU users override it, e.g. `make test TORCH="torch==2.13.0 --index-url <cuda index>"`
# or `make demo TORCH=torch` to take the registry's default (CUDA) build.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test docs clean
install: $(STAMP)

$(STAMP): settings.ini setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=23"
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/saliency-r1 demo

test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash tools/test.sh

docs: $(STAMP)
	$(BIN)/python tools/proc_docs.py

clean:
	rm -rf $(VENV) _proc _docs outputs .pytest_cache
