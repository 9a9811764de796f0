"""Write README.md from nbs/index.ipynb (what nbdev_readme does, without Quarto), or check they agree.

Markdown cells are copied as they are; code cells become ```python blocks; cells flagged `#| hide` are left out.
"""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def render(nb_path=ROOT / "nbs" / "index.ipynb") -> str:
    cells = json.loads(Path(nb_path).read_text())["cells"]
    parts = []
    for c in cells:
        src = "".join(c["source"]).strip()
        if not src or src.startswith("#| hide") or "#| hide" in src.splitlines()[0:3]: continue
        if c["cell_type"] == "markdown": parts.append(src)
        elif c["cell_type"] == "code":
            lines = [l for l in src.splitlines() if not l.startswith("#|")]
            if lines: parts.append("```python\n" + "\n".join(lines) + "\n```")
    return ("<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, then run "
            "`python tools/readme.py`. -->\n\n" + "\n\n".join(parts) + "\n")

if __name__ == "__main__":
    text, readme = render(), ROOT / "README.md"
    if "--check" in sys.argv:
        if readme.read_text() != text: raise SystemExit("README.md differs from nbs/index.ipynb: run `python tools/readme.py`")
        print("README.md agrees with nbs/index.ipynb")
    else:
        readme.write_text(text); print(f"wrote {readme}")
