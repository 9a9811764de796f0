# Two commands for a fresh clone: `make demo` (the main job) and `make test` (the whole suite).
# Both create or reuse the project virtual environment .venv and install what they need.
# CPU machines get the CPU torch build; GPU users override it, e.g. `make test TORCH="torch==2.13.0 --index-url <cuda index>"`
# or `make demo TORCH=torch` to take the registry's default (CUDA) build.
# Also: `make docs` (a local HTML preview of the docs site in _docs/preview/), `make notebooks` (JupyterLab on
# 127.0.0.1, notebooks in nbs/), `make outputs` (execute the notebooks and save their outputs), `make dist` (sdist + wheel),
# `make results` (rerun the stale benchmarks behind the README's tables, below).
# Every target runs the tools of .venv, with .venv/bin first on PATH: nothing installs into another Python.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
export TORCH  # tests/test_package.py installs the same torch into its fresh venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NB_STAMP := $(VENV)/.installed-notebooks
DOCS_OUT ?= _docs/preview
RUN := PATH="$(abspath $(BIN)):$$PATH" $(abspath $(BIN))/python

.PHONY: install demo test docs notebooks outputs dist clean
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
	$(RUN) tools/docs_preview.py --out $(DOCS_OUT)

$(NB_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[dev,notebooks]"
	touch $(NB_STAMP)

notebooks: $(NB_STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/jupyter lab --ip=127.0.0.1 --no-browser --notebook-dir=nbs $(if $(filter 0,$(shell id -u)),--allow-root)

outputs: $(STAMP)
	$(RUN) tools/run_nbs.py

dist: $(STAMP)
	$(RUN) -m build --no-isolation --outdir dist .

clean:
	rm -rf $(VENV) _proc _docs outputs .pytest_cache build dist

# `make fuzz`: the property tests with fresh random examples and many more of them (FUZZ_EXAMPLES per test, default 2000);
# `make test` runs them derandomized (tests/conftest.py). Turn what it finds into an @example beside its test.
.PHONY: fuzz
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz OMP_NUM_THREADS=1 $(RUN) -m pytest -q -x tests/test_inputs_props.py tests/test_metrics_props.py \
		tests/test_conventions.py::test_answer_forms_match_each_other

# `make results`: rerun the benchmarks behind the README's tables whose measured code changed since their results file in
# bench/results was made, then regenerate README.md from them (tools/readme.py). `python tools/results.py` lists every
# results file, its command and what changed since; `python tools/results.py --run NAME` reruns one of them if stale.
# The slowest is the placebo study (bench/reproduce.py, 17 GRPO runs: about 68 CPU minutes per core on 2 cores); the 3B shape takes 4-18 minutes.
.PHONY: results
results: $(STAMP)
	OMP_NUM_THREADS=1 $(RUN) tools/results.py --run
