"End-to-end tests of the `saliency-r1` console script, run as a user would (a separate process)."
import json, subprocess, sys
from pathlib import Path

import pytest


def run(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "saliency_r1.cli", *args], capture_output=True, text=True, timeout=timeout)

@pytest.mark.parametrize("cmd", [[], ["data"], ["sft"], ["demo"], ["train"]])
def test_help(cmd):
    r = run(*cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert "usage" in r.stdout.lower()

def test_bad_arguments_are_one_line(tmp_path):
    r = run("data", "--out", str(tmp_path / "d"), "--image-size", "huge")
    assert r.returncode == 2 and "200x150" in r.stderr and "Traceback" not in r.stderr
    r = run("sft", "--out", str(tmp_path / "m"), "--model", str(tmp_path / "missing.ckpt"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run("train", "--output_dir", str(tmp_path / "g"), "--dataset", str(tmp_path / "none.jsonl"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1

def test_data_round_trip(tmp_path):
    from saliency_r1.data import load_grounded_dataset
    r = run("data", "--out", str(tmp_path / "d.jsonl"), "--n", "5", "--image-size", "200x150", "--templates", "count,relation")
    assert r.returncode == 0, r.stderr
    ds = load_grounded_dataset(tmp_path / "d.jsonl")
    assert len(ds) == 5 and set(ds["template"]) <= {"count", "relation"} and ds[0]["image"].size == (200, 150)

def test_demo_small(tmp_path):
    r = run("demo", "--out", str(tmp_path / "demo"), "--n", "24", "--examples", "4")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert m["n"] == 24 and m["accuracy"] > 0.6 and m["format_rate"] > 0.9 and m["energy_pg"] >= 0 and (tmp_path / "demo" / "examples.png").stat().st_size > 10_000
