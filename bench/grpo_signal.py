"""Benchmark: the learning signal of Saliency-R1 GRPO on the tiny model (issue 5).

From the shipped SFT tiny model, N GRPO steps of the tiny CPU recipe (format + accuracy + saliency rewards, LoRA on
q_proj/v_proj) should raise the held-out energy pointing game of the answer maps. Prints before/after energy-PG,
pointing game, valid rate and accuracy on held-out questions, with the seeds. `--control` also trains with the saliency
weight at 0 (same steps, same seed), to show the gain comes from the saliency reward.

    python bench/grpo_signal.py [--steps 40] [--n 200] [--control]
"""
import argparse, json, tempfile, time

import torch

from saliency_r1.data import make_shapes_dataset
from saliency_r1.grpo import SaliencyGRPOConfig, SaliencyGRPOTrainer, evaluate_saliency
from saliency_r1.models import pretrained_tiny
from saliency_r1.sft import make_lora_config

def summary(r): return {k: round(v, 4) for k, v in r.items() if k != "explanations"}

def train(steps, saliency_weight, seed, threads, temperature, lr):
    model, processor = pretrained_tiny()
    cfg = SaliencyGRPOConfig(output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=16, num_generations=8,
                             max_completion_length=48, learning_rate=lr, lr_scheduler_type="constant", beta=0.001,
                             temperature=temperature,
                             logging_steps=5, save_strategy="no", report_to="none", seed=seed, disable_tqdm=False,
                             saliency_weight=saliency_weight)
    trainer = SaliencyGRPOTrainer(model, cfg, train_dataset=make_shapes_dataset(steps * 2, seed=2), processing_class=processor,
                                  peft_config=make_lora_config(model, ["q_proj", "v_proj"], dropout=0.0))
    t = time.time(); trainer.train(); minutes = (time.time() - t) / 60
    curve = [(h["step"], round(h.get("saliency/energy_pg", float("nan")), 3), round(h.get("reward", float("nan")), 3))
             for h in trainer.state.log_history if "loss" in h]
    return trainer.model.eval(), processor, minutes, curve

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40); p.add_argument("--n", type=int, default=200)
    p.add_argument("--seed", type=int, default=0); p.add_argument("--eval-seed", type=int, default=4242)
    p.add_argument("--threads", type=int, default=2); p.add_argument("--control", action="store_true")
    p.add_argument("--temperature", type=float, default=1.0); p.add_argument("--lr", type=float, default=1e-3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    held_out = make_shapes_dataset(a.n, seed=a.eval_seed)
    model, processor = pretrained_tiny()
    before = evaluate_saliency(model, processor, held_out)
    print("before GRPO:", json.dumps(summary(before)), flush=True)
    runs = [("saliency reward", 1.0)] + ([("control: saliency weight 0", 0.0)] if a.control else [])
    for name, w in runs:
        model, processor, minutes, curve = train(a.steps, w, a.seed, a.threads, a.temperature, a.lr)
        after = evaluate_saliency(model, processor, held_out)
        print(f"after {a.steps} GRPO steps ({name}, seed {a.seed}, {minutes:.1f} min):", json.dumps(summary(after)))
        print("  training curve (step, batch energy-PG, mean reward):", curve)
        print(f"  held-out energy-PG {before['energy_pg']:.3f} -> {after['energy_pg']:.3f}, pointing game "
              f"{before['pointing_game']:.3f} -> {after['pointing_game']:.3f}, accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f} "
              f"({a.n} held-out questions, eval seed {a.eval_seed})", flush=True)

if __name__ == "__main__":
    main()
