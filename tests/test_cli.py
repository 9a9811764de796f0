"End-to-end tests of the `saliency-r1` console script, run as a user would (a separate process)."
import json, os, subprocess, sys, time
from pathlib import Path

import pytest


# one thread: on 2 cores shared with other test processes, two threads whose parallel regions wait on each other
# made evaluation ten times slower
ENV = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", MPLBACKEND="Agg")

def run(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "saliency_r1.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV)

@pytest.mark.parametrize("cmd", [[], ["data"], ["sft"], ["explain"], ["eval"], ["demo"], ["train"]])
def test_help(cmd):
    r = run(*cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert "usage" in r.stdout.lower()
    if cmd and cmd != ["train"]:  # a description under the usage, and the defaults
        assert r.stdout.split("\n\n")[1].strip()[:1].isupper(), r.stdout[:400]
        assert "(default: " in r.stdout and "_" not in "".join(l.split()[0] for l in r.stdout.splitlines() if l.strip().startswith("--"))

def test_one_spelling_documented_both_accepted(tmp_path):
    "Options are documented with dashes (train too, --model for its checkpoint); underscores are accepted as well."
    h = run("train", "--help").stdout
    assert "--max-steps" in h and "--model " in h and "--max_steps" not in h and "--model_name_or_path" not in h
    r = run("data", "--out", tmp_path / "d", "--n", "2", "--image_size", "64")
    assert r.returncode == 0, r.stderr
    assert "qwen2_5_vl_3b" in run("train", "--list-recipes").stdout and not any(
        l.endswith(":") for l in run("train", "--list-recipes").stdout.splitlines())

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
    "demo: every method against the uniform map, the table printed and saved, chain maps in the figure."
    r = run("demo", "--out", tmp_path / "demo", "--n", "24", "--examples", "4")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert m["n"] == 24 and m["accuracy"] > 0.6 and m["format_rate"] > 0.9 and list(m["energy_pg"])[:2] == ["chain", "top_token"]
    assert m["energy_pg"]["chain"] > m["energy_pg"]["uniform"] and "| uniform |" in r.stdout and "By question template" in r.stdout
    rep = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert len(rep["methods"]) == 7 and len(rep["records"]) == 24
    for f in ("report.md", "report.png", "examples.png"): assert (tmp_path / "demo" / f).stat().st_size > 1000, f

def test_explain_on_a_png_from_data(tmp_path):
    "explain: prints the completion, the answer and the energy in the box; writes the overlay and the reasoning flow."
    assert run("data", "--out", tmp_path / "d" / "d.jsonl", "--n", "3").returncode == 0
    row = json.loads((tmp_path / "d" / "d.jsonl").read_text().splitlines()[1])
    t = time.time()
    r = run("explain", "--image", tmp_path / "d" / row["image"], "--question", row["problem"], "--bbox", json.dumps(row["bbox"][0]),
            "--out", tmp_path / "x")
    seconds = time.time() - t
    assert r.returncode == 0, r.stderr
    assert "completion: <think>" in r.stdout and "answer: " in r.stdout and "energy inside the box(es)" in r.stdout
    for f in ("overlay.png", "reasoning_flow.png"): assert (tmp_path / "x" / f).stat().st_size > 10_000, f
    info = json.loads((tmp_path / "x" / "explanation.json").read_text())
    assert info["valid"] and info["method"] == "chain" and 0 <= info["energy_in_boxes"] <= 1 and len(info["answer_map"]) == 4
    assert seconds < 60, f"explain took {seconds:.0f} s (target: under a minute on 2 cores)"

def test_explain_with_a_checkpoint_folder(tmp_path):
    "explain --model FOLDER: any saved checkpoint; an answer without <think>…</think> structure is said, not a crash."
    from saliency_r1.models import tiny_vlm
    model, processor = tiny_vlm(seed=3)
    model.save_pretrained(tmp_path / "m"); processor.save_pretrained(tmp_path / "m")
    assert run("data", "--out", tmp_path / "d.jsonl", "--n", "1").returncode == 0
    r = run("explain", "--model", tmp_path / "m", "--image", tmp_path / "images" / "000000.png", "--question", "What colour is it?",
            "--bbox", "[0, 0, 0.5, 0.5]", "--max-new-tokens", "8", "--out", tmp_path / "x")
    assert r.returncode == 0, r.stderr
    assert "no <think>…</think>answer structure" in r.stdout and (tmp_path / "x" / "overlay.png").exists()
    assert not (tmp_path / "x" / "reasoning_flow.png").exists()

def test_eval_synthetic_200(tmp_path):
    "eval --dataset synthetic --n 200: report.json, report.md and report.png, under a minute."
    t = time.time()
    r = run("eval", "--dataset", "synthetic", "--n", "200", "--out", tmp_path / "e")
    seconds = time.time() - t
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "e" / "report.json").read_text())
    assert rep["summary"]["n"] == 200 and rep["methods"] == ["chain"] and rep["summary"]["accuracy"] > 0.85
    assert set(rep["by_template"]) == {"colour", "shape", "relation", "count", "exists"}
    assert (tmp_path / "e" / "report.md").read_text().startswith("**200 questions**") and (tmp_path / "e" / "report.png").stat().st_size > 10_000
    assert seconds < 60, f"eval took {seconds:.0f} s (target: under a minute on 2 cores)"

def test_eval_and_explain_bad_input_is_one_line(tmp_path):
    assert run("data", "--out", tmp_path / "d.jsonl", "--n", "1").returncode == 0
    (tmp_path / "empty.jsonl").write_text("")
    image = tmp_path / "images" / "000000.png"
    for args, says in [(["explain", "--image", tmp_path / "none.png", "--question", "?"], "no such file"),
                       (["explain", "--image", image, "--question", "?", "--bbox", "[0.1, oops]"], "--bbox"),
                       (["explain", "--image", image, "--question", "?", "--method", "magic"], "choose from"),
                       (["eval", "--dataset", "synthetic", "--n", "0"], "--n"),
                       (["eval", "--dataset", "synthetic", "--methods", "magic"], "choose from"),
                       (["eval", "--dataset", tmp_path / "empty.jsonl"], "empty")]:
        r = run(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1 and says in r.stderr, (args, r.stderr)

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

def test_one_pixel_budget_api_and_cli(tmp_path):
    "The same large image gets the same grid from `explain` in Python and from `saliency-r1 explain`: the processor's budget sizes it."
    from PIL import Image
    from saliency_r1.data import make_shapes_dataset
    from saliency_r1.models import pretrained_tiny
    from saliency_r1.saliency import explain
    row = make_shapes_dataset(1, seed=5, image_size=(200, 150))[0]
    big = row["image"].resize((1600, 1200), Image.NEAREST); big.save(tmp_path / "big.png")
    model, processor = pretrained_tiny()
    grid = explain(model, processor, Image.open(tmp_path / "big.png"), row["problem"], max_new_tokens=48).grid
    r = run("explain", "--image", tmp_path / "big.png", "--question", row["problem"], "--max-new-tokens", "48", "--out", tmp_path / "x")
    assert r.returncode == 0, r.stderr
    assert tuple(json.loads((tmp_path / "x" / "explanation.json").read_text())["grid"]) == tuple(grid)
