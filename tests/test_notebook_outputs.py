"""Notebooks keep their outputs (written by `python tools/run_nbs.py`), so a chapter teaches on GitHub, on the docs
site and in Colab without being run; and re-executing a cheap chapter prints the same numbers.

A cell must have an output when `run_nbs` runs it (not flagged slow/gpu/network, not `eval: false`, not hidden or
exported) and it is
- a figure cell: its top-level code (function and class bodies aside) plots (`plt.`, `.plot(`, `plot_…(`, `show_…(`,
  `.show(`, `imshow(`, `display(`) and does not close its figures (`close(`), or
- a result cell: it prints at top level, or its last statement is an expression not ending in `;`, other than a call
  that returns nothing (`test_…`, `…close`, `…savefig`, `…seed`, `…set_…`).
"""
import ast, math, os, re, sys
from pathlib import Path

import nbformat, pytest
from nbdev.process import extract_directives

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
sys.path.insert(0, str(ROOT / "tools"))
import run_nbs  # noqa: E402

FIGURE = re.compile(r"\bplt\.|\.plot\(|\bplot_\w*\(|\bshow_\w*\(|\.show\(|\bimshow\(|\bdisplay\(")
NO_RESULT = re.compile(r"^(test_\w*|assert\w*|.*close|.*savefig|.*seed|.*set_\w+|.*\.append|.*\.update|.*\.extend)$")
CHEAP = "02_metrics.ipynb"  # re-executed by test_reexecution_prints_the_same_numbers (a few seconds)


def chapters() -> list[Path]:
    return run_nbs.notebooks([])


def _code(cell) -> str:
    "The cell's code without directives, magics and shell escapes."
    return "\n".join(l for l in cell.source.splitlines() if not l.lstrip().startswith(("#|", "%", "!")))


def _called(node) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def expects_output(cell, flags: set[str]) -> str | None:
    "'figure' or 'result' when `cell` must have an output after run_nbs (see the module docstring), else None."
    if run_nbs.skipped(cell, flags): return None
    direc = extract_directives(cell, remove=False)
    if {"hide", "export", "exports", "exporti", "exec_doc"} & set(direc): return None
    src = _code(cell)
    try: tree = ast.parse(src)
    except SyntaxError: return None
    top = [s for s in tree.body if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    top_src = "\n".join(ast.unparse(s) for s in top)
    if FIGURE.search(top_src) and "close(" not in top_src: return "figure"
    if any(isinstance(n, ast.Call) and _called(n) == "print" for s in top for n in ast.walk(s)): return "result"
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr) and not src.rstrip().endswith(";"):
        if isinstance(last.value, ast.Call) and NO_RESULT.match(_called(last.value) or "_"): return None
        if isinstance(last.value, ast.Constant) and isinstance(last.value.value, str): return None  # a bare string
        return "result"
    return None


def missing_outputs(nb_path: Path) -> list[str]:
    "'cell N (figure|result): first line' for each cell that should have an output and has none."
    flags = run_nbs.skip_flags()
    nb = nbformat.read(nb_path, as_version=4)
    return [f"cell {i} ({kind}): {_code(c).strip().splitlines()[0][:70]}"
            for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for kind in [expects_output(c, flags)] if kind and not c.get("outputs")]


@pytest.mark.parametrize("nb", [p.relative_to(NBS).as_posix() for p in chapters()])
def test_result_and_figure_cells_have_outputs(nb):
    missing = missing_outputs(NBS / nb)
    assert not missing, (f"{nb}: {len(missing)} figure/result cells have no saved output: run `python tools/run_nbs.py nbs/{nb}` "
                         "(or `make outputs`) and commit.\n" + "\n".join(missing))


def test_the_rule_on_hand_made_cells():
    flags = {"slow", "gpu", "network"}
    code = lambda s: nbformat.v4.new_code_cell(s)
    assert expects_output(code("fig, ax = plt.subplots()\nax.plot([1, 2])"), flags) == "figure"
    assert expects_output(code("x = 1\nx + 1"), flags) == "result"
    assert expects_output(code("print(accuracy)"), flags) == "result"
    assert expects_output(code("#| slow\nplot_examples(ds)"), flags) is None
    assert expects_output(code("#| hide\nx"), flags) is None
    assert expects_output(code("#| export\ndef f(): plt.plot([1])"), flags) is None
    assert expects_output(code("def f(ax): ax.plot([1])"), flags) is None
    assert expects_output(code("test_eq(f(2), 4)"), flags) is None
    assert expects_output(code("fig = plot_examples(ds); plt.close(fig)"), flags) is None
    assert expects_output(code("x;"), flags) is None


def test_clean_keeps_outputs(tmp_path):
    "run_nbs cleans with nbdev_clean and settings.ini's clear_all = False: metadata and execution counts go, outputs stay."
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}, "widgets": {"x": 1}})
    cell = nbformat.v4.new_code_cell("1 + 1", execution_count=3, metadata={"scrolled": True})
    cell.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=3)]
    nb.cells = [cell]
    nbformat.write(nb, tmp_path / "x.ipynb")
    run_nbs.clean(tmp_path / "x.ipynb")
    c = nbformat.read(tmp_path / "x.ipynb", as_version=4).cells[0]
    assert c.outputs[0]["data"]["text/plain"] == "2" and c.execution_count is None and not c.metadata


def test_execute_drops_outputs_a_cell_no_longer_prints(tmp_path):
    "A cell that printed before and prints nothing now keeps no stale output (execnb alone would keep it)."
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    cell = nbformat.v4.new_code_cell("x = 1")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="an old warning\n")]
    nb.cells = [cell, nbformat.v4.new_code_cell("x + 1")]
    nbformat.write(nb, tmp_path / "x.ipynb")
    run_nbs.execute(tmp_path / "x.ipynb")
    a, b = nbformat.read(tmp_path / "x.ipynb", as_version=4).cells
    assert a.outputs == [] and b.outputs[0]["data"]["text/plain"] == "2"


def numbers(cell) -> list[float]:
    "Numbers printed by a cell (stdout and results; memory addresses and warnings aside)."
    text = []
    for o in cell.get("outputs", []):
        if o.output_type == "stream" and o.name == "stdout": text.append(o.text)
        elif o.output_type in ("execute_result", "display_data") and "image/png" not in o.get("data", {}):
            text.append(o.get("data", {}).get("text/plain", ""))
    text = re.sub(r"0x[0-9a-f]+", "", "\n".join(text))
    return [float(x) for x in re.findall(r"[-+]?\d+\.?\d*(?:[eE][-+]?\d+)?", text)]


def test_reexecution_prints_the_same_numbers(tmp_path):
    "The cheap chapter, executed again into a temporary copy, prints the numbers its saved outputs show."
    saved = nbformat.read(NBS / CHEAP, as_version=4)
    assert not missing_outputs(NBS / CHEAP), f"{CHEAP} has no saved outputs yet: run `python tools/run_nbs.py nbs/{CHEAP}`"
    run_nbs.execute(NBS / CHEAP, tmp_path / CHEAP)
    fresh = nbformat.read(tmp_path / CHEAP, as_version=4)
    assert [c.source for c in saved.cells] == [c.source for c in fresh.cells]
    changed = []
    for i, (a, b) in enumerate(zip(saved.cells, fresh.cells)):
        if a.cell_type != "code" or "time" in a.source: continue
        x, y = numbers(a), numbers(b)
        if len(x) != len(y) or not all(math.isclose(u, v, rel_tol=1e-4, abs_tol=1e-6) for u, v in zip(x, y)):
            changed.append(f"cell {i}: saved {x[:8]} now {y[:8]}")
    assert not changed, f"{CHEAP} prints different numbers than its saved outputs:\n" + "\n".join(changed)


def test_quiet_outputs_drop_progress_bars_and_trainer_logs():
    "Progress bars, a Trainer's printed log dicts and empty displays leave the saved outputs; what a chapter prints itself stays."
    cell = nbformat.v4.new_code_cell("train()")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="\rLoading weights:   0%|          | 0/69 [00:00<?, ?it/s]"
                                           "\rLoading weights: 100%|██████████| 69/69 [00:00<00:00, 4618.39it/s]\n"
                                           "Map: 100%|██████████| 8/8 [00:00<00:00, 1014.78 examples/s]\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="{'loss': 0.0123, 'grad_norm': 0.5, 'epoch': 0.25}\n"
                                           "accuracy 0.903\n{'a': 1}\n"),
                    nbformat.v4.new_output("execute_result", data={})]  # a widget whose view no front end rendered
    nb = nbformat.v4.new_notebook(); nb.cells = [cell]
    assert run_nbs.quiet_outputs(nb) == 3  # one progress line (redrawn after \r), one Map: bar, one log dict
    assert [o.name for o in cell.outputs] == ["stdout"] and cell.outputs[0].text == "accuracy 0.903\n{'a': 1}\n"


def test_execute_is_quiet_and_restores_the_environment(tmp_path, monkeypatch):
    "Progress bars are off while a notebook runs (QUIET_ENV), and the caller's environment is as it was afterwards."
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_code_cell("import os; print(os.environ['HF_DATASETS_DISABLE_PROGRESS_BARS'], os.environ['TQDM_DISABLE'])")]
    nbformat.write(nb, tmp_path / "x.ipynb")
    run_nbs.execute(tmp_path / "x.ipynb")
    assert nbformat.read(tmp_path / "x.ipynb", as_version=4).cells[0].outputs[0].text == "1 1\n"
    assert "TQDM_DISABLE" not in os.environ


@pytest.mark.parametrize("nb", [p.relative_to(NBS).as_posix() for p in chapters()])
def test_saved_outputs_have_no_progress_bars_or_trainer_logs(nb):
    "The pages show what teaches: no `Loading weights`/`Map:` bars, no raw trainer log dicts (re-run tools/run_nbs.py)."
    noisy = [f"cell {i}: {line.strip()[:80]!r}" for i, c in enumerate(nbformat.read(NBS / nb, as_version=4).cells)
             for o in c.get("outputs", []) if o.get("output_type") == "stream"
             for line in (o.text if isinstance(o.text, str) else "".join(o.text)).split("\n") if run_nbs.noise(line)]
    assert not noisy, f"{nb}: {len(noisy)} lines of progress bars or trainer logs in the saved outputs: run `python tools/run_nbs.py nbs/{nb}`\n" + "\n".join(noisy[:10])


@pytest.mark.parametrize("nb", [p.relative_to(NBS).as_posix() for p in chapters()])
def test_markdown_tables_are_displayed_not_printed(nb):
    "A printed markdown table shows as pipes and dashes on the page: display it (`Markdown(report.to_markdown())`, or the"
    " report itself as a cell's last expression) and it renders as a table."
    printed = [f"cell {i}: {c.source.strip().splitlines()[-1][:80]}" for i, c in enumerate(nbformat.read(NBS / nb, as_version=4).cells)
               for o in c.get("outputs", []) if o.get("output_type") == "stream" and "|---" in (o.text if isinstance(o.text, str) else "".join(o.text))]
    assert not printed, f"{nb}: markdown tables printed as text:\n" + "\n".join(printed)
