"""Docs pre-processing without Quarto: nbdev's proc_nbs from Python, into _proc/.

The nbdev_proc_nbs / nbdev_docs commands install Quarto and run `pip install -e .[dev]` with the first Python on PATH
when Quarto is missing; this calls proc_nbs itself, which installs nothing, with this Python's folder first on PATH.
"""
import os, sys
from pathlib import Path

import nbdev.doclinks
from nbdev.config import get_config
from nbdev.quarto import refresh_quarto_yml
from nbdev.serve import proc_nbs


def process() -> Path:
    "nbdev's processed notebooks (frontmatter, show_doc, links, hidden cells removed) in _proc/; returns that folder."
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    cfg = get_config()
    refresh_quarto_yml()
    nbdev.doclinks._build_modidx()
    try: proc_nbs(n_workers=0)
    except Exception as e:
        raise SystemExit(f"{e}\n\nnbdev's docs processing runs every cell that imports something (so show_doc can see the names), "
                         "in a fresh shell with only such cells run before it: a test cell that imports and also uses names "
                         "defined elsewhere fails here. Move its imports into the notebook's hidden import cell.") from e
    out = cfg.config_path / "_proc"
    nbs = cfg.nbs_path
    expected = {p.relative_to(nbs) for p in nbs.rglob("*.ipynb") if not any(s.startswith((".", "_")) for s in p.relative_to(nbs).parts)}
    missing = sorted(str(p) for p in expected if not (out / p).exists())
    if missing: raise SystemExit(f"proc_nbs did not process {missing}")
    if not (out / "_quarto.yml").exists(): raise SystemExit("proc_nbs did not copy _quarto.yml")
    print(f"proc_nbs: {len(expected)} notebooks processed into {out}")
    return out


if __name__ == "__main__": process()
