#!/usr/bin/env bash
# The whole test suite (`make test`): notebooks are the source, the package must match them,
# notebooks must be clean, every notebook's tests and pytest must pass (pytest includes the wheel built and installed
# into a fresh venv, tests/test_package.py, and the docs preview opened in headless Chromium, tests/test_docs.py).
set -euo pipefail
cd "$(dirname "$0")/.."
# once, around everything below: the peak memory of the whole run is printed at the end (tools/peak_memory.py)
if [ -z "${SALIENCY_R1_MEASURED:-}" ]; then SALIENCY_R1_MEASURED=1 exec python tools/peak_memory.py bash "$0" "$@"; fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg
step() { printf '\n== %s (%ss) ==\n' "$1" "$SECONDS"; }

step "headless Chromium and MathJax for the docs test"
has_browser() { command -v chromium || command -v chromium-browser || command -v google-chrome; } >/dev/null 2>&1
if ! has_browser || [ ! -e /usr/share/javascript/mathjax/MathJax.js ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    pkgs="libjs-mathjax"; has_browser || pkgs="chromium $pkgs"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
  else
    echo "not root: install chromium and libjs-mathjax (Debian packages) for tests/test_docs.py's browser checks"
  fi
fi
has_browser && echo "browser: $(command -v chromium || command -v chromium-browser || command -v google-chrome)"

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
# two notebooks at a time on two cores: one OpenMP thread each (two threads each oversubscribe the cores and ran up to 10x slower)
OMP_NUM_THREADS=1 nbdev_test --n_workers 2

step "pytest (with the wheel test and the docs preview in Chromium)"
python -m pytest -q -rs --durations=8 tests

step "done"
