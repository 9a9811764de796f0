"""Which files of bench/results are stale (the code they measured changed since they were made), and rerun them.

    python tools/results.py                # list every results file: its command, the commit it was made at, what changed since
    python tools/results.py --run          # rerun the stale files the README's tables show, then `python tools/readme.py`
    python tools/results.py --run NAME...  # rerun these (e.g. grpo_signal) if stale; `make results` is the first form of --run

A results file is made by the command it stores (`command`; `COMMANDS` for files written before they stored one). The code
it measured is that command's bench script, the bench scripts it imports and, followed import by import, the modules of
saliency_r1 it reaches (with the shipped checkpoints when it reaches `saliency_r1.models`). It was made at the commit it
stores (`git_commit`, or `versions.git_commit`), else at the last commit that changed the file; files it stores as
uncommitted at that time (`uncommitted`, or `versions.saliency_r1_uncommitted`: path -> sha256[:12]) are compared by hash;
an untracked measured file counts as changed.
A results file with uncommitted changes and no stored commit counts as just made. `provenance()` is what a bench script
stores so that all of this is exact.
"""
import argparse, ast, hashlib, json, os, platform, shlex, subprocess, sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
COMMANDS = {"memory_table": "python bench/memory_table.py"}  # results files that do not store their command
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "numpy", "saliency_r1")


def _git(*args) -> subprocess.CompletedProcess: return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
def _hash(path: str) -> str: return hashlib.sha256((ROOT / path).read_bytes()).hexdigest()[:12]


def provenance(argv: list = sys.argv) -> dict:
    "What a bench script stores beside its results: the command (repository-relative), Python and package versions, the commit and hashes of uncommitted library and bench files."
    script = os.path.relpath(Path(argv[0]).resolve(), ROOT)
    dirty = [l[3:] for l in _git("status", "--porcelain", "--", "saliency_r1", "bench").stdout.splitlines()]
    return dict(command=shlex.join(["python", script, *argv[1:]]), python=platform.python_version(),
                versions={p: version(p) for p in PACKAGES}, git_commit=_git("rev-parse", "HEAD").stdout.strip(),
                uncommitted={p: _hash(p) for p in dirty if (ROOT / p).is_file() and not p.startswith("bench/results/")})


def _imports(path: Path) -> set:
    "Modules a Python file imports: absolute names, and a package's relative ones resolved as saliency_r1.NAME."
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import): out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = f"saliency_r1.{node.module or ''}".rstrip(".") if node.level else node.module
            out |= {base} | {f"{base}.{a.name}" for a in node.names}
    return out


def measured(script: str) -> list:
    "Repository-relative paths of the code `script` (a bench script) measures: it, bench scripts it imports, the saliency_r1 modules it reaches."
    todo, seen = [ROOT / script], set()
    while todo:
        p = todo.pop()
        if p in seen: continue
        seen.add(p)
        for name in _imports(p):
            parts = name.split(".")
            if parts[0] == "saliency_r1" and len(parts) == 2: cand = ROOT / "saliency_r1" / f"{parts[1]}.py"
            elif len(parts) == 1 and p.parent == ROOT / "bench": cand = ROOT / "bench" / f"{name}.py"
            else: continue
            if cand.is_file(): todo.append(cand)
    paths = {os.path.relpath(p, ROOT) for p in seen}
    if "saliency_r1/models.py" in paths: paths |= {os.path.relpath(p, ROOT) for p in (ROOT / "saliency_r1" / "checkpoints").rglob("*") if p.is_file()}
    return sorted(paths)


def status(name: str, d: dict = None) -> dict:
    "For results file `name` (its data `d`, read when not given): command, made_at, and `changed` (measured files changed since), or `error`."
    rel = f"bench/results/{name}.json"
    d = json.loads((ROOT / rel).read_text()) if d is None else d
    command = d.get("command") or COMMANDS.get(name)
    out = dict(name=name, command=command, made_at=None, changed=[])
    script = next((w for w in shlex.split(command or "") if w.startswith("bench/") and w.endswith(".py")), None)
    if script is None or not (ROOT / script).is_file(): return out | dict(error=f"no bench script in its command {command!r}: store `command` in it or add it to COMMANDS")
    v = d.get("versions") or {}
    commit, hashes = d.get("git_commit") or v.get("git_commit"), d.get("uncommitted") or v.get("saliency_r1_uncommitted") or {}
    if commit is None:
        if _git("status", "--porcelain", "--", rel).stdout.strip(): return out | dict(made_at="uncommitted")
        commit = _git("log", "-1", "--format=%H", "--", rel).stdout.strip()
    paths = measured(script)
    diff = _git("diff", "--name-only", commit, "--", *[p for p in paths if p not in hashes] or ["bench/results"])  # never the whole tree
    if not commit or diff.returncode: return out | dict(error=f"commit {commit[:7] or '?'} is not in this clone ({diff.stderr.strip()[:80]})")
    untracked = set(paths) - set(hashes) - set(_git("ls-files", "--", *paths).stdout.split())
    changed = [p for p in diff.stdout.split() if p in paths] + sorted(untracked) + [p for p, h in hashes.items() if p in paths and (not (ROOT / p).is_file() or _hash(p) != h)]
    return out | dict(made_at=commit[:7], changed=sorted(changed))


def readme_files() -> list:
    "The results files the README's tables show (tools/readme.py's results blocks)."
    sys.path.insert(0, str(ROOT / "tools")); import readme
    return sorted(set(readme.FILES.values()))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="store_true", help="rerun the stale ones (of NAMES, else of the README's), then tools/readme.py")
    p.add_argument("names", nargs="*", help="results files by name (bench/results/NAME.json); all when listing")
    a = p.parse_args(argv)
    names = a.names or (readme_files() if a.run else sorted(f.stem for f in RESULTS.glob("*.json")))
    rows = [status(n) for n in names]
    for r in rows:
        state = ("ERROR: " + r["error"]) if "error" in r else (
            f"stale: {len(r['changed'])} measured files changed since {r['made_at']} ({', '.join(r['changed'][:4])}{', …' if len(r['changed']) > 4 else ''})"
            if r["changed"] else f"fresh (made at {r['made_at']})")
        print(f"{r['name']:<34} {state}\n{'':<34} {r['command']}")
    if not a.run: return
    for r in rows:
        if "error" in r or not r["changed"]: continue
        print(f"\n== {r['name']}: {r['command']} ==", flush=True)
        cmd = shlex.split(r["command"]); cmd[0] = sys.executable
        subprocess.run(cmd, cwd=ROOT, check=True, env=os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    subprocess.run([sys.executable, "tools/readme.py"], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
