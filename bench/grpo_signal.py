"""Benchmark: the learning signal of Saliency-R1 GRPO on the tiny model (issues 5 and 9).

From a shipped tiny model, N GRPO steps of the tiny CPU recipe (format + accuracy + saliency rewards, LoRA on
q_proj/v_proj) should raise the held-out energy pointing game of the greedy answer maps. The default start is
`pretrained_tiny(variant="wander")`: the SFT model tuned further on a 50/50 mix of direct thoughts and thoughts that
first describe the distractors ("There is a red square at the top right. ..."). Both styles answer equally well;
the wandering one routes the answer through regions outside the evidence, so only the saliency reward can tell them
apart. `--control` trains the same steps with the saliency weight at 0 (same seed), to show the gain comes from the
saliency reward and not from GRPO alone.

The reward's map is `--method` (default: the library's "chain"); the held-out maps are measured with that method
and with "top_token" (the direct map of the one thinking token the answer draws on most), which no run is rewarded
on, so the metric is not just the objective.

Prints, before and after: held-out energy-PG and pointing game of both maps, accuracy, valid rate, the share of
greedy thoughts that wander, and energy-PG per thinking style; the training curve; the seeds and minutes. Writes them
to `--out` (the README's GRPO table, tools/readme.py) with the command and what it ran on (tools/results.py's
`provenance`, which `make results` reads to tell when the file is stale). One torch thread by default, as
bench/map_quality.py explains.

    python bench/grpo_signal.py [--steps 300] [--n 200] [--control] [--seeds 0 1 2] [--prompts 4] [--lr 5e-4] [--variant wander] [--method chain] [--out bench/results/grpo_signal.json]
    python bench/grpo_signal.py --steps 2 --n 8 --seeds 0 --prompts 1 --control --out /tmp/grpo_signal.json  # a smoke run, about a minute
"""
import argparse, json, os, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch

from saliency_r1.data import make_shapes_dataset
from saliency_r1.evaluate import evaluate
from saliency_r1.grpo import SaliencyGRPOConfig, SaliencyGRPOTrainer
from saliency_r1.models import pretrained_tiny
from saliency_r1.sft import make_lora_config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from results import provenance  # the command, versions, commit and uncommitted files a results file stores

def wanders(text: str) -> bool: return "There is" in text.split("</think>")[0]

def summary(r) -> dict:
    "Headline figures of an `EvalReport`: energy-PG and PG of each method (the first is the reward's), the wandering share, energy-PG per thinking style."
    s, method = r.summary(), r.methods[0]
    epg = np.array([x["maps"][method]["energy_pg"] for x in r.records], dtype=float)  # NaN where the completion is invalid
    wander = np.array([wanders(x["completion"]) for x in r.records])
    style = lambda m: round(float(np.nanmean(epg[m])), 4) if (m & ~np.isnan(epg)).any() else None
    out = dict(valid_rate=s["valid_rate"], uniform_energy_pg=s["maps"]["uniform"]["energy_pg"].mean, accuracy=s["accuracy"])
    for m in r.methods: out |= {f"{m}_energy_pg": s["maps"][m]["energy_pg"].mean, f"{m}_pointing_game": s["maps"][m]["pointing_game"].mean}
    return {k: round(v, 4) for k, v in out.items()} | dict(wander_share=round(float(wander.mean()), 3), energy_pg_direct_thoughts=style(~wander),
                                                          energy_pg_wandering_thoughts=style(wander))

def train(variant, steps, saliency_weight, seed, temperature, lr, prompts, method):
    model, processor = pretrained_tiny(variant=variant)
    cfg = SaliencyGRPOConfig(output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=8 * prompts, num_generations=8,
                             max_completion_length=64, learning_rate=lr, lr_scheduler_type="constant", beta=0.001,
                             temperature=temperature, logging_steps=5, save_strategy="no", report_to="none", seed=seed,
                             disable_tqdm=False, saliency_weight=saliency_weight, saliency_method=method)
    trainer = SaliencyGRPOTrainer(model, cfg, train_dataset=make_shapes_dataset(steps * prompts, seed=2), processing_class=processor,
                                  peft_config=make_lora_config(model, ["q_proj", "v_proj"], dropout=0.0))
    t = time.time(); trainer.train(); minutes = (time.time() - t) / 60
    r3 = lambda v: None if v is None else round(v, 3)
    curve = [(h["step"], r3(h.get("saliency/energy_pg")), r3(h.get("reward"))) for h in trainer.state.log_history if "loss" in h]
    return trainer.model.eval(), processor, minutes, curve

def result_file(a, before: dict, runs: dict, columns: list) -> dict:
    "The results file: settings, `columns` per row (before, then each run's mean and sd over seeds), saliency minus control paired by seed, every run."
    def row(rs):
        m = np.array([[r["after"][k] for k in columns] for r in rs])
        return dict(mean=np.round(m.mean(0), 4).tolist(), sd=np.round(m.std(0, ddof=1), 4).tolist() if len(m) > 1 else None)
    minutes = [r["minutes"] for rs in runs.values() for r in rs]
    out = dict(settings=dict(steps=a.steps, start=f"pretrained_tiny(variant={a.variant or None!r})", prompts_per_step=a.prompts, generations=8,
                             learning_rate=a.lr, temperature=a.temperature, saliency_weight=a.saliency_weight, method=a.method, seeds=a.seeds,
                             held_out=a.n, eval_seed=a.eval_seed, threads=a.threads,
                             minutes_per_run=[round(min(minutes), 1), round(max(minutes), 1)], out=os.path.relpath(Path(a.out).resolve(), ROOT)),
               columns=columns, rows={"before": dict(mean=[before[k] for k in columns])} | {name: row(rs) for name, rs in runs.items()})
    if a.control:
        sal, ctl = runs.values()
        out["paired_by_seed"] = {k: dict(mean=round(float(np.mean(d)), 4), per_seed=d) for k in columns[:4]
                                 for d in [[round(s["after"][k] - c["after"][k], 4) for s, c in zip(sal, ctl)]]}
    return out | dict(uniform_energy_pg=before["uniform_energy_pg"], before=before, runs=runs)

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300); p.add_argument("--n", type=int, default=200)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2]); p.add_argument("--eval-seed", type=int, default=4242)
    p.add_argument("--prompts", type=int, default=4, help="prompts per step (8 generations each)")
    p.add_argument("--threads", type=int, default=1); p.add_argument("--control", action="store_true")
    p.add_argument("--temperature", type=float, default=1.0); p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--saliency-weight", type=float, default=1.0)
    p.add_argument("--variant", default="wander", help="shipped tiny checkpoint to start from ('' for the plain SFT model)")
    p.add_argument("--method", default="chain", help="the saliency reward's map (also the first held-out metric)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "grpo_signal.json"), help="the results file to write")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    held_out = make_shapes_dataset(a.n, seed=a.eval_seed)
    model, processor = pretrained_tiny(variant=a.variant or None)
    methods = (a.method, "top_token") if a.method != "top_token" else ("top_token", "chain")
    epg, pg = f"{a.method}_energy_pg", f"{a.method}_pointing_game"
    before = summary(evaluate(model, processor, held_out, methods=methods, blank=False))
    print(f"start: pretrained_tiny(variant={a.variant or None!r}); {a.n} held-out questions, eval seed {a.eval_seed}")
    print("before GRPO:", json.dumps(before), flush=True)
    runs = [("saliency reward", a.saliency_weight)] + ([("control: saliency weight 0", 0.0)] if a.control else [])
    done = {name: [] for name, _ in runs}  # per run: seed, minutes, held-out summary after, training curve
    for seed in a.seeds:
        for name, w in runs:
            model, processor, minutes, curve = train(a.variant or None, a.steps, w, seed, a.temperature, a.lr, a.prompts, a.method)
            after = summary(evaluate(model, processor, held_out, methods=methods, blank=False, progress=False))
            done[name].append(dict(seed=seed, minutes=round(minutes, 2), after=after, curve=curve))
            print(f"after {a.steps} GRPO steps ({name}, seed {seed}, {a.prompts} prompts x 8 generations, lr {a.lr}, "
                  f"{minutes:.1f} min on {a.threads} threads):", json.dumps(after))
            print("  training curve (step, batch energy-PG, mean reward):", curve)
            print(f"  held-out energy-PG {before[epg]:.3f} -> {after[epg]:.3f}, pointing game "
                  f"{before[pg]:.3f} -> {after[pg]:.3f}, accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}, "
                  f"wandering thoughts {before['wander_share']:.0%} -> {after['wander_share']:.0%}", flush=True)
    print(f"\nsummary over seeds {a.seeds} (held-out energy-PG before: {before[epg]:.3f}; uniform map {before['uniform_energy_pg']:.3f})")
    keys = [(epg, f"{a.method} energy-PG"), (pg, f"{a.method} PG"),
            (f"{methods[1]}_energy_pg", f"{methods[1]} energy-PG (not rewarded)"), (f"{methods[1]}_pointing_game", f"{methods[1]} PG"),
            ("accuracy", "accuracy"), ("wander_share", "wandering")]
    print("\n| run | " + " | ".join(label for _, label in keys) + " |\n|---|" + "---|" * len(keys))
    print("| before | " + " | ".join(f"{before[k]:.3f}" for k, _ in keys) + " |")
    for name, rs in done.items():
        cells = [np.array([r["after"][k] for r in rs]) for k, _ in keys]
        print(f"| {name} | " + " | ".join(f"{c.mean():.3f} ± {c.std(ddof=1) if len(c) > 1 else 0:.3f}" for c in cells) + " |")
    if a.control:
        for k, label in keys[:4]:
            d = np.array([s_["after"][k] - c["after"][k] for s_, c in zip(*done.values())])
            print(f"  {label}: saliency minus control, paired by seed: {d.mean():+.3f} (per seed {np.round(d, 3).tolist()})")
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(provenance() | result_file(a, before, done, [k for k, _ in keys]), indent=1) + "\n")
    print(f"wrote {out}")

if __name__ == "__main__":
    main()
