"""The documentation as a reader gets it: `make docs` (a local preview of the Quarto site, built without Quarto) opened
in headless Chromium: every page loads, figures appear where notebooks have image outputs, internal links resolve,
math renders. Also the rules the site relies on: title cells, the sidebar, and `make docs` installing nothing.

Chromium is Debian's `chromium` package (tools/test.sh installs it when missing and it can); without it these tests
skip with that reason, except under CI, where they fail."""
import json, os, re, shutil, subprocess, sys, warnings
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import nbformat, pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
sys.path.insert(0, str(ROOT / "tools"))
import docs_preview, run_nbs  # noqa: E402

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--virtual-time-budget=8000"]
needs_chromium = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                    reason="no chromium: `apt-get install -y chromium` (tools/test.sh does it when run as root)")


def notebooks() -> list[str]:
    return sorted(p.relative_to(NBS).as_posix() for p in NBS.rglob("*.ipynb")
                  if not any(s.startswith((".", "_")) for s in p.relative_to(NBS).parts))


@pytest.mark.parametrize("nb", notebooks())
def test_title_cell(nb):
    "nbdev turns the first markdown cell into the page's title and description and drops the rest of it: '# Title' and one '> ' line only."
    cell = next(c for c in nbformat.read(NBS / nb, as_version=4).cells if c.cell_type == "markdown")
    lines = [l for l in cell.source.splitlines() if l.strip()]
    assert len(lines) == 2 and re.match(r"^# \S", lines[0]) and re.match(r"^> \S", lines[1]), (
        f"{nb}: the title cell must be '# Title' and a one-line '> summary' (nbdev keeps only the first '> ' line as the "
        f"description and drops the rest of the cell); move other text to the next cell. It is:\n{cell.source}")


def test_sidebar_lists_every_notebook_in_reading_order():
    entries = docs_preview.sidebar(NBS / "_quarto.yml", NBS)
    listed = [nb for _, nb, _ in entries]
    assert not (ROOT / "_quarto.yml").exists(), "one Quarto config: nbs/_quarto.yml (where nbdev reads it), none at the top level"
    assert listed[0] == "index.ipynb"
    assert not set(notebooks()) - set(listed), f"not in _quarto.yml's sidebar: {sorted(set(notebooks()) - set(listed))}"
    chapters = [nb for nb in listed if re.match(r"^\d\d_", nb)]
    assert chapters == sorted(chapters), f"chapters out of reading order: {chapters}"
    missing = [nb for _, nb, exists in entries if not exists]
    if missing: pytest.skip(f"listed in _quarto.yml, not written yet (the site and the preview leave them out): {missing}")


@pytest.fixture(scope="module")
def preview(tmp_path_factory):
    "`make docs` into a temporary folder, with a PATH whose first pip/python only record that they were called."
    tmp = tmp_path_factory.mktemp("docs")
    trap = tmp / "trap"; trap.mkdir()
    for exe in ["pip", "pip3", "python", "python3", "quarto"]:
        (trap / exe).write_text(f"#!/bin/sh\necho {exe} \"$@\" >> {tmp / 'trapped.txt'}\nexit 1\n"); (trap / exe).chmod(0o755)
    out = tmp / "preview"
    r = subprocess.run(["make", "-s", "-o", ".venv/.installed", "docs", f"DOCS_OUT={out}"], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PATH=f"{trap}:{os.environ['PATH']}"), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert not (tmp / "trapped.txt").exists(), f"make docs ran a tool outside .venv: {(tmp / 'trapped.txt').read_text()}"
    return out, json.loads((out / "pages.json").read_text())


def test_make_docs_writes_every_page(preview):
    "Without a browser too: one page per existing sidebar entry, each with its title, and the stylesheet."
    out, report = preview
    listed = [nb for _, nb, exists in docs_preview.sidebar(NBS / "_quarto.yml", NBS) if exists]
    assert list(report["pages"]) == listed, "one page per existing sidebar entry, in order"
    for nb, info in report["pages"].items():
        assert f'<h1 class="title">{info["title"]}</h1>' in (out / info["html"]).read_text(), nb
    assert (out / "style.css").stat().st_size > 10_000


def dom(path: Path, tmp: Path) -> str:
    "The page's DOM after loading (scripts run) in headless Chromium with a fresh profile."
    if CHROMIUM is None: pytest.fail("CI needs chromium: apt-get install -y chromium")
    r = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", "--dump-dom", path.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "<body" in r.stdout, f"{path.name} did not load: {r.stderr[-1500:]}"
    return r.stdout


class Page(HTMLParser):
    "Images, links and ids of a page."
    def __init__(self, html):
        super().__init__(); self.imgs, self.links, self.ids, self.classes = [], [], set(), set()
        self.feed(html)
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a: self.ids.add(a["id"].lower())
        self.classes.update((a.get("class") or "").split())
        if tag == "img": self.imgs.append(a.get("src") or "")
        if tag == "a" and a.get("href"): self.links.append(a["href"])


def check_page(out: Path, html_path: str, info: dict, tmp: Path, ids: dict, anchors: list | None = None) -> list[str]:
    """What is wrong with one rendered page (empty when nothing). Links to a section that does not exist (a backticked
    name with no `show_doc` on its page, as Quarto's site has them too) go to `anchors`, a warning, not a failure."""
    anchors = [] if anchors is None else anchors
    page_file = out / html_path
    p = Page(dom(page_file, tmp))
    problems = []
    if '<h1 class="title">' not in page_file.read_text(): problems.append("no title")
    local = [s for s in p.imgs if not urlparse(s).scheme in ("http", "https")]  # badges and the like load from the web
    shown = [s for s in local if s.startswith("data:image/") or (s and (page_file.parent / unquote(urlparse(s).path)).is_file())]
    if len(shown) != len(local): problems.append(f"images that do not load: {[s[:80] for s in local if s not in shown]}")
    if len(shown) < info["figures"]: problems.append(f"{len(shown)} images shown, the notebook has {info['figures']} image outputs")
    for href in p.links:
        u = urlparse(href)
        if u.scheme: continue
        target = (page_file.parent / unquote(u.path)).resolve() if u.path else page_file
        if not target.is_file(): problems.append(f"broken link {href}")
        elif u.fragment and target.suffix == ".html":
            if target not in ids: ids[target] = Page(target.read_text()).ids
            if u.fragment.lower() not in ids[target]: anchors.append(f"{html_path}: {href}")
    if info["math"] and docs_preview.MATHJAX_LOCAL.exists() and "MathJax_CHTML" not in p.classes:
        problems.append("math not rendered by MathJax")
    return problems


@needs_chromium
def test_preview_pages_load_with_figures_and_links(preview, tmp_path):
    out, report = preview
    listed = [nb for _, nb, exists in docs_preview.sidebar(NBS / "_quarto.yml", NBS) if exists]
    nav = Page(re.search(r'<nav id="sidebar">.*?</nav>', (out / "index.html").read_text(), flags=re.S).group(0)).links[1:]
    assert nav == [report["pages"][nb]["html"] for nb in listed], "the sidebar links every page in _quarto.yml order"
    ids, problems, anchors = {}, {}, []
    for nb, info in report["pages"].items():
        bad = check_page(out, info["html"], info, tmp_path, ids, anchors)
        if bad: problems[nb] = bad
    if anchors: warnings.warn("links to sections that no page has (add a show_doc, or drop the backticks): " + "; ".join(anchors))
    assert not problems, json.dumps(problems, indent=1)


@needs_chromium
def test_figures_of_an_executed_chapter(preview, tmp_path):
    "The figures check bites: a chapter executed into a temporary copy shows every image output on its page."
    import nbdev.serve_drv
    from nbdev.processors import FilterDefaults
    out, _ = preview
    executed, proc = tmp_path / "exec" / "02_metrics.ipynb", tmp_path / "proc" / "02_metrics.ipynb"
    run_nbs.execute(NBS / "02_metrics.ipynb", executed)
    proc.parent.mkdir()
    nbdev.serve_drv.exec_nb(executed, proc, FilterDefaults)
    report = docs_preview.build(tmp_path / "site", proc=ROOT / "_proc", replace={"02_metrics.ipynb": proc}, only={"02_metrics.ipynb"}, process=False)
    info = report["pages"]["02_metrics.ipynb"]
    assert info["figures"] >= 1, info
    bad = [p for p in check_page(tmp_path / "site", info["html"], info, tmp_path, {}) if not p.startswith("broken link")]
    assert not bad, bad


def test_release_files():
    "The license settings.ini names, in full; a CITATION.cff of the paper and of the library; the paper linked from the README."
    import yaml
    assert "Apache License\n                           Version 2.0" in (ROOT / "LICENSE").read_text()
    assert (ROOT / "LICENSE").read_text().count("\n") > 150, "the full Apache-2.0 text, not a notice"
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "Apache-2.0" and cff["type"] == "software"
    paper = cff["preferred-citation"]
    assert paper["title"].startswith("Saliency-R1: Enforcing Interpretable and Faithful") and paper["year"] == 2026
    assert [a["family-names"] for a in paper["authors"]] == ["Gong", "Hu", "Zhang", "Ma", "Dou"]
    assert paper["url"] == "https://arxiv.org/abs/2604.04500"
    assert "https://arxiv.org/abs/2604.04500" in (ROOT / "README.md").read_text()


def test_no_magics_that_the_site_drops():
    "nbdev's clean_magics removes `%` lines from the pages, leaving the code around them broken (an install cell with"
    " nothing under `except ImportError:`); use `subprocess` with `sys.executable -m pip`, or a `!` shell line."
    bad = [f"{nb} cell {i}: {l.strip()}" for nb in notebooks() for i, c in enumerate(nbformat.read(NBS / nb, as_version=4).cells)
           if c.cell_type == "code" for l in c.source.splitlines() if l.lstrip().startswith("%")]
    assert not bad, "\n".join(bad)


def test_readme_tables_come_from_results_files():
    "Every results block of the landing page and the chapters is what tools/readme.py renders from bench/results now; the"
    " files they link exist; no results file stores a path of the machine it ran on."
    import readme
    assert readme.refresh_all(write=False) == {}, "run `python tools/readme.py`: results blocks differ from bench/results"
    text = (ROOT / "README.md").read_text()
    shown = {b for nb in readme.notebooks() for b in re.findall(r"<!-- results: ([\w-]+) -->", nb.read_text())}
    assert set(readme.RENDERERS) <= shown, f"renderers whose block no notebook shows: {set(readme.RENDERERS) - shown}"
    links = re.findall(r"\]\(https://github.com/saliency-r1/saliency_r1/blob/main/(bench/results/[^)]+)\)", text)
    assert len(links) >= 2 and all((ROOT / link).is_file() for link in links), links
    for f in (ROOT / "bench" / "results").glob("*.json"):
        assert not re.search(r'"/(work|root|home|tmp)/', f.read_text()), f"{f.name} stores an absolute path: store it relative to the repository"


def test_readme_grpo_snippet_is_the_tiny_cpu_recipe():
    "The README's Python GRPO example sets what the tiny_cpu recipe sets (bookkeeping aside: outputs, logging, saving)."
    import ast, yaml
    code = next(b for b in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S) if "SaliencyGRPOConfig(" in b)
    calls = {(n.func.id if isinstance(n.func, ast.Name) else n.func.attr): n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call)}
    kw = lambda name: {k.arg: ast.literal_eval(k.value) for k in calls[name].keywords if k.arg}
    given = kw("SaliencyGRPOConfig") | {"lora_" + k: v for k, v in kw("make_lora_config").items()} | kw("pretrained_tiny")
    given |= {"tiny_variant": given.pop("variant", None), "n_train": ast.literal_eval(calls["make_shapes_dataset"].args[0]),
              "dataset_seed": kw("make_shapes_dataset")["seed"], "lora_target_modules": ast.literal_eval(calls["make_lora_config"].args[1])}
    recipe = yaml.safe_load((ROOT / "saliency_r1" / "recipes" / "tiny_cpu.yaml").read_text())
    bookkeeping = {"output_dir", "logging_steps", "save_steps", "log_saliency_examples", "report_to", "dataset", "use_lora",
                   "format_weight", "accuracy_weight", "saliency_weight"}  # the last three: the config's defaults, 1.0
    assert all(recipe[k] == 1.0 for k in ("format_weight", "accuracy_weight", "saliency_weight"))
    differ = {k: (v, given.get(k, "missing")) for k, v in recipe.items() if k not in bookkeeping and given.get(k, "missing") != v}
    assert not differ, f"README snippet vs tiny_cpu recipe (recipe, snippet): {differ}"


def test_no_links_to_private_names():
    "nbdev links every backticked name its index knows, private ones too, but pages document only public names: a"
    " backticked private name is a link to nowhere. Write it with spaces inside the backticks (` _Row `), which renders"
    " the same code span and is not linked."
    import ast
    modidx = ast.literal_eval((ROOT / "saliency_r1" / "_modidx.py").read_text().split("d = ", 1)[1])
    private = {k.split(".")[-1] for m in modidx["syms"].values() for k in m if k.split(".")[-1].startswith("_")
               and not k.split(".")[-1].startswith("__")}
    bad = [f"{nb}: `{m.group(1)}`" for nb in notebooks() for c in nbformat.read(NBS / nb, as_version=4).cells
           if c.cell_type == "markdown" for m in re.finditer(r"`([^`\s]+?)(?:\(\))?`", c.source)
           if m.group(1).split(".")[-1] in private]
    assert not bad, "backticked private names (links to nowhere on the site):\n" + "\n".join(bad)


def test_signature_comments_have_no_backticks():
    "show_doc prints a signature's docments comments as code, where nbdev's doc links stay raw markdown"
    " ([`name`](https://…)): name other functions in those comments without backticks."
    import ast
    modidx = ast.literal_eval((ROOT / "saliency_r1" / "_modidx.py").read_text().split("d = ", 1)[1])
    linked = {k.split(".")[-1] for m in modidx["syms"].values() for k in m}  # what nbdev turns into a link
    bad = []
    for py in sorted((ROOT / "saliency_r1").glob("*.py")):
        lines = py.read_text().splitlines()
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
                for i in range(node.lineno - 1, node.body[0].lineno - 1):
                    comment = lines[i].partition("#")[2] if "#" in lines[i] and not lines[i].lstrip().startswith(("#", '"')) else ""
                    if any(n.split(".")[-1] in linked for n in re.findall(r"`(\w[\w.]*)`", comment)):
                        bad.append(f"{py.name}:{i + 1}: {lines[i].strip()}")
    assert not bad, "backticks in signature comments (raw links on the docs pages):\n" + "\n".join(bad)
