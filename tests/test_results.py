"Every file in bench/results says how it is regenerated, stores no absolute path, and tools/results.py tells when it is stale."
import json, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import readme, results  # noqa: E402

FILES = sorted((ROOT / "bench" / "results").glob("*.json"))


def _strings(x):
    if isinstance(x, str): yield x
    elif isinstance(x, dict): yield from (s for k, v in x.items() for s in (k, *_strings(v)))
    elif isinstance(x, list): yield from (s for v in x for s in _strings(v))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_results_file_has_a_command_and_relative_paths(path):
    d = json.loads(path.read_text())
    r = results.status(path.stem, d)
    assert "error" not in r, r
    assert r["command"].startswith("python bench/"), r["command"]
    absolute = [s for s in _strings(d) if s.startswith("/") or any(f" {d}/" in f" {s}" for d in ("/work", "/root", "/tmp", "/home"))]
    assert not absolute, f"{path.name} stores absolute paths {absolute[:3]}: store them relative to the repository"


def test_readme_tables_come_from_results_files_that_store_their_command():
    "Each results block of the README reads one file of bench/results, and that file names the command that wrote it."
    assert set(readme.FILES) == set(readme.RENDERERS)
    for name in set(readme.FILES.values()):
        assert json.loads((ROOT / "bench" / "results" / f"{name}.json").read_text()).get("command"), name


def test_readme_benches_store_their_provenance():
    "The bench scripts behind the README's tables store `provenance()` (command, versions, commit, uncommitted hashes) in their files."
    for name in set(readme.FILES.values()):
        script = results.status(name)["command"].split()[1]
        assert "provenance()" in (ROOT / script).read_text(), f"{script} (writes {name}.json) does not store provenance()"


def test_results_blocks_end_at_their_own_marker():
    "An empty block next to another is filled on its own, not swallowed with its neighbour."
    blocks = "<!-- results: a -->\n<!-- /results -->\n\ntext\n<!-- results: b -->\nold\nlines\n<!-- /results -->\n"
    assert [(m.group(2), m.group(3)) for m in readme._BLOCK.finditer(blocks)] == [("a", ""), ("b", "old\nlines\n")]


def test_measured_follows_imports():
    "The code a bench script measures: itself, the library modules it imports and theirs, the shipped checkpoints."
    m = results.measured("bench/grpo_signal.py")
    assert {"bench/grpo_signal.py", "saliency_r1/grpo.py", "saliency_r1/evaluate.py", "saliency_r1/attribution.py"} <= set(m)
    assert any(p.startswith("saliency_r1/checkpoints/") for p in m) and "saliency_r1/cli.py" not in m
    assert results.measured("bench/memory_table.py") == ["bench/memory_table.py"]


def test_status_compares_with_the_commit_and_hashes_made_at():
    "Made at HEAD with every measured file's current hash recorded: fresh; a recorded hash that differs: stale."
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    paths = results.measured("bench/map_quality.py")
    now = {p: results._hash(p) for p in paths}
    d = dict(command="python bench/map_quality.py", git_commit=head, uncommitted=now)
    assert results.status("map_quality", d)["changed"] == []
    d["uncommitted"] = now | {"saliency_r1/metrics.py": "0" * 12}
    assert results.status("map_quality", d)["changed"] == ["saliency_r1/metrics.py"]


def test_listing_runs_in_seconds():
    out = subprocess.run([sys.executable, "tools/results.py"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert all(p.stem in out.stdout for p in FILES) and "ERROR" not in out.stdout, out.stdout


REPRODUCE_FILES = [p for p in FILES if json.loads(p.read_text()).get("command", "").startswith("python bench/reproduce.py")]


@pytest.mark.parametrize("path", REPRODUCE_FILES, ids=lambda p: p.name)
def test_reproduce_command_still_means_what_was_run(path, monkeypatch):
    """The command a reproduce results file stores, parsed by today's bench/reproduce.py, gives the arms and settings the
    file measured: `tools/results.py --run` reruns that command, so a default changed since (arms S and R were added, and
    hints became right with probability `--cue-reliability`, 0.8 by default) must not turn it into another experiment."""
    import argparse, importlib.util, shlex
    class Parsed(Exception): pass
    parse = argparse.ArgumentParser.parse_args
    def stop(self, args=None, namespace=None): raise Parsed(parse(self, args, namespace))
    spec = importlib.util.spec_from_file_location("reproduce_bench", ROOT / "bench" / "reproduce.py")
    bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop)
    d = json.loads(path.read_text())
    with pytest.raises(Parsed) as e: bench.main(shlex.split(d["command"])[2:])
    a = vars(e.value.args[0])
    assert sorted(a["arms"]) == sorted(d["arms"]), f"{path.name}: its command now runs arms {a['arms']}, it measured {sorted(d['arms'])}"
    stored = {"cue_reliability": 1.0, **d["settings"]}  # files made before hints could be wrong had them always right
    changed = {k: (a[k], v) for k, v in stored.items() if a[k] != v}
    assert not changed, f"{path.name}: its command now gives (today's value, what it measured) {changed}"
