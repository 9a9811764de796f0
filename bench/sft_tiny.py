"""Benchmark: the cold-start SFT target of the tiny Qwen2.5-VL (issue 2).

Target: trained from scratch on 2 CPU cores in <= 60 minutes by `saliency-r1 sft`, the model answers >= 90% of
500 held-out synthetic questions correctly with a valid <think>...</think>answer format, and falls to chance
when the image is blanked.

    python bench/sft_tiny.py                      # evaluate the shipped checkpoint
    python bench/sft_tiny.py --checkpoint DIR     # evaluate another one
    python bench/sft_tiny.py --train DIR               # train first (the shipped two-stage recipe, ~60 min), then evaluate

Prints accuracy, format rate, per-template accuracy, chance level, the blank-image control and the
training record (command, seed, steps, minutes) stored beside the checkpoint.
"""
import argparse, json, subprocess, sys, time
from pathlib import Path

import torch

from saliency_r1.data import make_shapes_dataset
from saliency_r1.models import CHECKPOINTS, load_vlm
from saliency_r1.rewards import format_reward
from saliency_r1.evaluate import evaluate

def stage_commands(work: Path, minutes: float, seed: int = 0, arch: str = "qwen2_5_vl") -> list[list[str]]:
    "The shipped two-stage recipe: stage 1 from scratch for `minutes` (cosine, lr 2e-3), stage 2 at lr 3e-4 for 4.5 minutes (--init)."
    stage1, stage2 = str(work / "stage1"), str(work / "stage2")
    return [["saliency-r1", "sft", "--arch", arch, "--out", stage1, "--steps", "20000", "--minutes", str(minutes), "--seed", str(seed),
             "--logging-steps", "200"],
            ["saliency-r1", "sft", "--init", stage1, "--out", stage2, "--steps", "20000", "--minutes", "4.5", "--lr", "3e-4",
             "--warmup", "20", "--curriculum-steps", "0", "--seed", str(seed + 1), "--logging-steps", "200"]]

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(CHECKPOINTS / "tiny-qwen2_5_vl"))
    p.add_argument("--train", default=None, help="train into this folder first with `saliency-r1 sft`")
    p.add_argument("--minutes", type=float, default=55, help="stage 1 budget (stage 2 adds 4.5 minutes)")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--eval-seed", type=int, default=1000)
    a = p.parse_args()
    torch.set_num_threads(2)
    ckpt = a.checkpoint
    if a.train:
        for cmd in stage_commands(Path(a.train), a.minutes, a.seed):
            print("training:", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
        ckpt = f"{a.train}/stage2"
    model, processor = load_vlm(ckpt)
    held_out = make_shapes_dataset(a.n, seed=a.eval_seed)
    t = time.time()
    report = evaluate(model, processor, held_out, methods=())  # accuracy and the blank-image control, no maps
    res = report.summary()
    info_path = Path(ckpt) / "training_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    print(f"checkpoint      {ckpt}")
    print(f"training        {info}")
    print(f"held-out        {res['n']} questions (seed {a.eval_seed}); evaluation took {time.time() - t:.1f} s (with the blank-image run)")
    print(f"accuracy        {res['accuracy']:.1%}  (valid format and correct answer; target >= 90%)")
    print(f"format rate     {res['format_rate']:.1%}")
    blank_format = sum(format_reward([r["blank_completion"] for r in report.records])) / res["n"]
    print(f"blank image     {res['blank_accuracy']:.1%}  (chance level {res['chance']:.1%}; format rate {blank_format:.1%})")
    by = {t: report.summary(t) for t in report.templates}
    print("per template    " + ", ".join(f"{t}: {s['accuracy']:.1%} (blank {s['blank_accuracy']:.1%})" for t, s in by.items()))
    print(f"params          {sum(p.numel() for p in model.parameters()):,}")

if __name__ == "__main__":
    main()
