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

def test_sft_lora_on_a_named_checkpoint(tmp_path):
    "saliency-r1 sft --model FOLDER --data DATASET: LoRA-tunes a saved checkpoint on a grounded dataset with a thinking column."
    from saliency_r1.models import tiny_vlm
    model, processor = tiny_vlm(seed=3)
    model.save_pretrained(tmp_path / "base"); processor.save_pretrained(tmp_path / "base")
    assert run("data", "--out", str(tmp_path / "d.jsonl"), "--n", "8").returncode == 0
    r = run("sft", "--model", str(tmp_path / "base"), "--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "lora"),
            "--steps", "3", "--batch-size", "4", "--warmup", "1", "--logging-steps", "1", "--lora", "q_proj", "v_proj")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "lora" / "adapter_model.safetensors").exists()
    info = json.loads((tmp_path / "lora" / "training_info.json").read_text())
    assert info["steps"] == 3 and info["final_loss"] > 0
    r = run("sft", "--model", str(tmp_path / "base"), "--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "bad"),
            "--steps", "1", "--lora", "q_proj", "qproj")
    assert r.returncode == 2 and "qproj" in r.stderr and "Traceback" not in r.stderr
