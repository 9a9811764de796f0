"GRPO with saliency rewards on the shipped tiny model: forward mode, resume, and two processes (gloo)."
import json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch

from saliency_r1.data import make_shapes_dataset
from saliency_r1.models import pretrained_tiny
from saliency_r1.grpo import forward_explanations
from saliency_r1.rewards import group_advantages, weighted_sum
from saliency_r1.saliency import explain

WORKER = Path(__file__).parent / "grpo_worker.py"
ENV = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")

def test_forward_mode_matches_generate_mode():
    "Maps recorded while generating equal the maps of one teacher-forced forward over the same completion ids."
    model, processor = pretrained_tiny()
    rows = make_shapes_dataset(6, seed=11)
    gen = explain(model, processor, rows["image"], rows["problem"], max_new_tokens=48)
    from saliency_r1.data import make_conversation
    prompts = [make_conversation(r) for r in rows]
    fwd = forward_explanations(model, processor, prompts, rows["image"], [list(e.completion_ids) for e in gen])
    assert sum(e.valid for e in gen) >= 4
    for g, f in zip(gen, fwd):
        assert g.valid == f.valid and g.grid == f.grid
        np.testing.assert_allclose(g.answer_map, f.answer_map, rtol=1e-4, atol=1e-6)

def _worker(out, *args, launcher=()):
    r = subprocess.run([*launcher, str(WORKER), str(out), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(p.read_text()) for p in sorted(Path(out).glob("rank*.json"))]

@pytest.mark.parametrize("mode", ["lora", "full"])
def test_resume_reproduces_metrics(tmp_path, mode):
    "Train 4 steps with a checkpoint at 2; resuming from it reproduces steps 3-4 (loss, rewards, maps to 1e-6) and the final weights, LoRA and full model."
    full = _worker(tmp_path / "full", 4, 2, "-", mode, launcher=(sys.executable,))[0]
    ckpt = tmp_path / "full" / "checkpoint-2"
    assert (ckpt / ("adapter_model.safetensors" if mode == "lora" else "model.safetensors")).exists()
    resumed = _worker(tmp_path / "full", 4, 2, ckpt, mode, launcher=(sys.executable,))[0]
    a = {h["step"]: h for h in full["logs"]}
    b = {h["step"]: h for h in resumed["logs"]}
    assert [s["step"] for s in resumed["steps"]] == [3, 4]   # it resumed: only steps 3 and 4 ran
    for step in (3, 4):
        for k in ("loss", "kl", "reward", "rewards/format_reward/mean", "rewards/saliency_reward/mean", "saliency/energy_pg"):
            if k in a[step]: assert a[step][k] == pytest.approx(b[step][k], rel=0, abs=1e-6), (step, k)
    w, w_resumed = torch.load(tmp_path / "full" / "weights.pt"), torch.load(tmp_path / "full" / "weights-resumed.pt")
    assert w.keys() == w_resumed.keys() and all(torch.equal(w[n], w_resumed[n]) for n in w)

def test_two_processes_agree_on_advantages(tmp_path):
    """Two CPU processes under accelerate launch (gloo): both ranks see the same gathered rewards, and their advantage
    slices form the group advantages. accelerate 1.15's `--cpu` starts one process, so this uses the shipped
    `configs/cpu_2proc.yaml` (the multi-process launcher; with no GPU, torch.distributed uses gloo)."""
    from saliency_r1.models import CHECKPOINTS
    config = CHECKPOINTS.parent / "configs" / "cpu_2proc.yaml"
    launcher = (sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--main_process_port", "29531")
    ranks = _worker(tmp_path, 2, launcher=launcher)
    assert [r["rank"] for r in ranks] == [0, 1] and ranks[0]["world"] == 2
    for s0, s1 in zip(ranks[0]["steps"], ranks[1]["steps"]):
        np.testing.assert_allclose(s0["rewards_per_func"], s1["rewards_per_func"])
        per_func = np.array(s0["rewards_per_func"]).T
        total = weighted_sum(list(per_func), ranks[0]["weights"])
        expected = group_advantages(total, group_size=4)
        # TRL works in float32: a group whose rewards differ by ~1e-4 divides by a std of the same size, so allow 1e-3
        np.testing.assert_allclose(s0["advantages"] + s1["advantages"], expected, rtol=1e-3, atol=1e-3)
