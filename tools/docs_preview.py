"""`make docs`: a local HTML preview of the documentation site, built without Quarto.

    python tools/docs_preview.py [--out _docs/preview]

nbdev's processed notebooks (tools/proc_docs.py: frontmatter, show_doc, doc links, hidden cells removed) are converted
by nbconvert, one page per notebook listed in _quarto.yml's sidebar, in its order and sections. Each page has that
sidebar, the page title and its description (the title cell's `> ` line), figures embedded as data URIs, Quarto's cell
options applied (`echo`, `output`, `include`), links between chapters and to the docs site made local, and MathJax
for the math (Debian's libjs-mathjax when installed, else MathJax from a CDN). The real site is built by Quarto
(`nbdev_docs`, the deploy workflow); this preview is for reading and testing the same pages here.
"""
import argparse, json, os, re, shutil, sys
from pathlib import Path

import nbformat, yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
MATHJAX_LOCAL = Path("/usr/share/javascript/mathjax/MathJax.js")
MATHJAX_CDN = "https://cdn.jsdelivr.net/npm/mathjax@2.7.9/MathJax.js"
_directive = re.compile(r"^#\|\s*([\w-]+)\s*:\s*(.*?)\s*$")
_math = re.compile(r"\$[^$\n]*[\\^_][^$\n]*\$")  # inline or display TeX: $...$ with a command, ^ or _


def sidebar(quarto_yml: Path, nbs: Path) -> list[tuple[str | None, str, bool]]:
    "(section, notebook path relative to nbs, exists) for every sidebar entry of `quarto_yml`, in order; globs expanded."
    cfg = yaml.safe_load(Path(quarto_yml).read_text())
    out = []
    def add(items, section):
        for it in [items] if isinstance(items, str) else items:
            if isinstance(it, dict) and "section" in it: add(it.get("contents", []), it["section"])
            elif isinstance(it, dict): add([it.get("href") or it.get("file")], section)
            elif "*" in it: out.extend((section, p.relative_to(nbs).as_posix(), True) for p in sorted(nbs.glob(it)))
            else: out.append((section, it, (nbs / it).exists()))
    add(cfg["website"]["sidebar"]["contents"], None)
    return out


def read_page(proc_nb: Path) -> tuple[dict, nbformat.NotebookNode]:
    "The frontmatter (title, description, output-file) and the cells of a processed notebook."
    nb = nbformat.read(proc_nb, as_version=4)
    fm = {}
    if nb.cells and nb.cells[0].cell_type == "raw" and nb.cells[0].source.lstrip().startswith("---"):
        fm = yaml.safe_load(nb.cells[0].source.strip().strip("-")) or {}
        nb.cells = nb.cells[1:]
    return fm, nb


def apply_cell_options(nb):
    "Quarto's `#| echo/output/include: false` as nbconvert removal tags; option lines leave the shown code."
    pandoc_attrs = re.compile(r"(\]\([^)\s]*\))\{[^}\n]*\}")  # [source](url){target="_blank" ...}
    for cell in nb.cells:
        if cell.cell_type == "markdown": cell.source = pandoc_attrs.sub(r"\1", cell.source)
        if cell.cell_type != "code": continue
        lines = cell.source.splitlines()
        opts = dict(m.groups() for m in map(_directive.match, lines) if m)
        cell.source = "\n".join(l for l in lines if not _directive.match(l)).strip("\n")
        tags = cell.metadata.setdefault("tags", [])
        if opts.get("include") == "false": tags.append("remove_cell")
        if opts.get("echo") == "false" or not cell.source: tags.append("remove_input")
        if opts.get("output") == "false": tags.append("remove_output")
        for out in cell.get("outputs", []):
            md = out.get("data", {}).get("text/markdown")
            if md: out["data"]["text/markdown"] = pandoc_attrs.sub(r"\1", md if isinstance(md, str) else "".join(md))
    return nb


def expected_figures(nb) -> int:
    "Image outputs a page of `nb` (processed, options applied) should show."
    skip = {"remove_cell", "remove_output"}
    return sum(1 for c in nb.cells if c.cell_type == "code" and not skip & set(c.metadata.get("tags", []))
               for o in c.get("outputs", []) if any(k.startswith("image/") for k in o.get("data", {})))


def _exporter():
    from nbconvert import HTMLExporter
    from traitlets.config import Config
    c = Config()
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_cell_tags = {"remove_cell"}
    c.TagRemovePreprocessor.remove_input_tags = {"remove_input"}
    c.TagRemovePreprocessor.remove_all_outputs_tags = {"remove_output"}
    return HTMLExporter(config=c, template_name="lab", exclude_input_prompt=True, exclude_output_prompt=True, embed_images=True)


def _local_links(html: str, page: str, pages: dict[str, str], src_dir: str, doc_url: str) -> str:
    "Links to the docs site and to notebooks as relative links between preview pages (`page`: this page's html path)."
    here = os.path.dirname(page)
    def fix(m):
        attr, url = m.group(1), m.group(2)
        path, _, anchor = url.partition("#")
        if url.startswith(doc_url + "/"): target = path[len(doc_url) + 1:]
        elif path.endswith(".ipynb") and not re.match(r"^[a-z]+:", path):
            nb = os.path.normpath(os.path.join(src_dir, path))
            if nb not in pages: return m.group(0)
            target = pages[nb]
        else: return m.group(0)
        rel = os.path.relpath(target, here or ".") if target else ""
        return f'{attr}="{rel}{"#" + anchor if anchor else ""}"'
    return re.sub(r'(href)="([^"]+)"', fix, html)


def _nav(entries, pages: dict[str, str], titles: dict[str, str], current: str) -> str:
    here = os.path.dirname(current)
    items, section = [], object()
    for sec, nb, _ in entries:
        if nb not in pages: continue
        if sec != section:
            if sec: items.append(f'<li class="section">{sec}</li>')
            section = sec
        cls = ' class="active"' if pages[nb] == current else ""
        items.append(f'<li><a{cls} href="{os.path.relpath(pages[nb], here or ".")}">{titles[nb]}</a></li>')
    return "<ul>" + "".join(items) + "</ul>"


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} – {site}</title><meta name="description" content="{description_text}">
<link rel="stylesheet" href="{root}style.css">
<script type="text/x-mathjax-config">MathJax.Hub.Config({{tex2jax: {{inlineMath: [['$','$'], ['\\\\(','\\\\)']], processEscapes: true}}, messageStyle: "none"}});</script>
<script src="{mathjax}?config=TeX-AMS_CHTML"></script>
</head>
<body class="jp-Notebook" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
<nav id="sidebar"><a class="site-title" href="{root}index.html">{site}</a>{nav}</nav>
<div id="page"><header id="title-block"><h1 class="title">{title}</h1><div class="description">{description}</div></header>
{body}
</div></body></html>
"""

LAYOUT_CSS = """
body.jp-Notebook { margin: 0; padding: 0; display: flex; font-family: system-ui, sans-serif; }
#sidebar { width: 250px; flex: none; height: 100vh; position: sticky; top: 0; overflow-y: auto; padding: 1rem; box-sizing: border-box;
           background: #f7f7f9; border-right: 1px solid #ddd; font-size: 0.92rem; }
#sidebar ul { list-style: none; padding: 0; margin: 0; }
#sidebar li { margin: 0.15rem 0; }
#sidebar li.section { margin-top: 0.9rem; font-weight: 600; color: #555; text-transform: uppercase; font-size: 0.78rem; }
#sidebar a { color: #2c3e50; text-decoration: none; }
#sidebar a.active { font-weight: 700; color: #2780e3; }
#sidebar .site-title { display: block; font-size: 1.15rem; font-weight: 700; margin-bottom: 0.8rem; }
#page { flex: 1; min-width: 0; max-width: 1000px; padding: 1rem 2rem 4rem; }
#title-block .description { color: #555; font-size: 1.05rem; margin-bottom: 1.5rem; }
.jp-RenderedMarkdown pre { background: #f5f5f7; padding: 0.5rem 0.75rem; border-radius: 4px; overflow-x: auto; margin-bottom: 1em; }
.jp-RenderedMarkdown pre, .jp-RenderedMarkdown pre code { white-space: pre; }  /* scroll like the site's code blocks: wrapping breaks indentation */
.jp-RenderedHTMLCommon a code { color: var(--jp-content-link-color, #2780e3); }  /* a linked name looks like a link */
"""


def build(out: Path = ROOT / "_docs" / "preview", proc: Path | None = None, replace: dict[str, Path] | None = None,
          only: set[str] | None = None, process: bool = True) -> dict:
    """Write the preview into `out`; `replace` maps a notebook (relative to nbs) to another processed copy to show instead;
    `only` limits the pages written (the sidebar still lists them all)."""
    from nbdev.config import get_config
    from nbconvert.filters.markdown import markdown2html
    cfg = get_config()
    if process:
        from proc_docs import process as proc_nbs
        proc = proc_nbs()
    proc = Path(proc or cfg.config_path / "_proc")
    doc_url = (cfg.doc_host.rstrip("/") + "/" + cfg.doc_baseurl.strip("/")).rstrip("/")
    entries = sidebar(cfg.nbs_path / "_quarto.yml", cfg.nbs_path)
    sources = {nb: (replace or {}).get(nb, proc / nb) for _, nb, exists in entries if exists}
    pages, titles, read = {}, {}, {}
    for nb, src in sources.items():
        fm, book = read_page(src)
        read[nb] = fm, book
        pages[nb] = (Path(nb).parent / fm.get("output-file", Path(nb).with_suffix(".html").name)).as_posix()
        titles[nb] = "Home" if nb == "index.ipynb" else fm.get("title", Path(nb).stem)
    if out.exists(): shutil.rmtree(out)
    out.mkdir(parents=True)
    exporter = _exporter()
    mathjax = MATHJAX_LOCAL.as_uri() if MATHJAX_LOCAL.exists() else MATHJAX_CDN
    report = dict(out=str(out), pages={}, missing=[nb for _, nb, exists in entries if not exists])
    for nb, (fm, book) in read.items():
        if only and nb not in only: continue
        book = apply_cell_options(book)
        html, _ = exporter.from_notebook_node(book, resources={"metadata": {"path": str(cfg.nbs_path / Path(nb).parent)}})
        body = html[html.index("<main>") + len("<main>"):html.rindex("</main>")]
        body = _local_links(body, pages[nb], pages, str(Path(nb).parent), doc_url)
        desc = fm.get("description", "")
        root = os.path.relpath(".", os.path.dirname(pages[nb]) or ".") + "/"
        page = PAGE.format(title=fm.get("title", titles[nb]), site=cfg.title, root="" if root == "./" else root,
                           description_text=re.sub(r"[`\"<>]", "", desc), description=markdown2html(desc) if desc else "",
                           mathjax=mathjax, nav=_nav(entries, pages, titles, pages[nb]), body=body)
        dest = out / pages[nb]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(page)
        math = any(_math.search(c.source) for c in book.cells if c.cell_type == "markdown")
        report["pages"][nb] = dict(html=pages[nb], title=fm.get("title", titles[nb]), figures=expected_figures(book), math=math)
    lab = _exporter().from_notebook_node(nbformat.v4.new_notebook())[0]
    (out / "style.css").write_text("\n".join(re.findall(r"<style[^>]*>(.*?)</style>", lab, flags=re.S)) + LAYOUT_CSS)
    (out / "pages.json").write_text(json.dumps(report, indent=1))
    return report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "_docs" / "preview"), help="output folder")
    a = p.parse_args(argv)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    r = build(Path(a.out).resolve())
    if r["missing"]: print(f"listed in _quarto.yml but not written yet: {', '.join(r['missing'])}")
    if not MATHJAX_LOCAL.exists(): print("math loads MathJax from a CDN (needs the network): `apt-get install libjs-mathjax` to render it offline")
    print(f"{len(r['pages'])} pages in {r['out']}; open {Path(r['out']) / 'index.html'}")


if __name__ == "__main__": main()
