#!/usr/bin/env bash
# The whole test suite (`make test`): notebooks are the source, the package must match them,
# notebooks must be clean, every notebook's tests and pytest must pass, and the docs must pre-process.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg
step() { printf '\n== %s ==\n' "$1"; }

step "nbdev_export: the package must match the notebooks"
nbdev_export
if [ -n "$(git status --porcelain -- saliency_r1)" ]; then
  git status --porcelain -- saliency_r1; echo "FAIL: saliency_r1/ differs from what nbs/ exports: run nbdev_export and commit"; exit 1
fi

step "nbdev_clean: notebooks must be committed clean"
nbdev_clean
if [ -n "$(git status --porcelain -- nbs)" ]; then
  git status --porcelain -- nbs; echo "FAIL: nbdev_clean changed notebooks: run nbdev_clean and commit"; exit 1
fi

step "README.md agrees with nbs/index.ipynb"
python tools/readme.py --check

step "nbdev_test"
nbdev_test --n_workers 2

step "pytest"
python -m pytest -q tests

step "docs pre-processing (nbdev proc_nbs)"
python tools/proc_docs.py
