"Docs pre-processing without Quarto: nbdev's proc_nbs from Python (the nbdev_proc_nbs command would pip-install when Quarto is missing)."
from pathlib import Path
import nbdev.doclinks
from nbdev.config import get_config
from nbdev.quarto import refresh_quarto_yml
from nbdev.serve import proc_nbs

if __name__ == "__main__":
    cfg = get_config()
    refresh_quarto_yml()
    nbdev.doclinks._build_modidx()
    proc_nbs(n_workers=0)
    out = cfg.config_path / "_proc"
    nbs = sorted(p.name for p in out.glob("*.ipynb"))
    expected = sorted(p.name for p in cfg.nbs_path.glob("*.ipynb"))
    missing = set(expected) - set(nbs)
    if missing: raise SystemExit(f"proc_nbs did not process {sorted(missing)}")
    if not (out / "_quarto.yml").exists(): raise SystemExit("proc_nbs did not copy _quarto.yml")
    print(f"proc_nbs: {len(nbs)} notebooks processed into {out}")
