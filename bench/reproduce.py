"""Reproduce Saliency-R1's claim at small scale, with ablations and seeds (issue 13).

Does a saliency reward make the tiny VLM's answers draw on the evidence, beyond seed noise, without costing accuracy?
Every arm starts from the same cold start, `pretrained_tiny(variant="wander")` (about half of its greedy thoughts first
describe the distractors), and trains with the same GRPO steps, data and seeds:

    A  cold start only                       D  + saliency reward, the library's `chain` map
    B  GRPO, format + accuracy rewards       E  + saliency reward, raw `attention` map (ablation)
    C  + saliency reward, the paper's `cot`  F  + saliency reward, `direct` map, no thinking hop (ablation)

The training questions carry a textual shortcut ("(Hint: the answer is X.)") at `--shortcut-rate`, so a policy can
earn the accuracy reward without looking. Each run is measured on held-out questions without and with shortcuts
(`--n` each, seeds 4242/4243) and on a validation split (seeds 5151/5152) that alone is used to choose settings:
accuracy (overall, per template, and about a grey image), format rate, energy pointing game and pointing game of the
`chain` map and of `top_token` (no arm is rewarded on it), the uniform-map and random-cell baselines, deletion and
insertion AUC minus a seeded random ranking (paired, first `--deletion` valid examples), and the share of wandering
thoughts ("There is" in the thinking). Writes `--out` (per-seed metrics under the arm letters, a summary, the verdicts,
the command and versions), a markdown table, and figures next to it.

    python bench/reproduce.py [--arms A B C D E F] [--seeds 0 1 2] [--steps 300] [--n 300] [--deletion 60] [--workers 2]
    python bench/reproduce.py --split validation --tag TRY ...     # a setting tried on the validation split only

Runs go to a process pool (`--workers`, one torch thread each: on a busy 2-core machine two threads per process
oversubscribe the cores and a GRPO step took 10x longer). Each finished run is cached under `--cache`, keyed by its
settings, so an interrupted experiment resumes where it stopped.
"""
import argparse, hashlib, json, math, os, platform, shlex, subprocess, sys, tempfile, time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from importlib.metadata import version
from pathlib import Path

import numpy as np

from saliency_r1.cli import _number, _count, _count0, _rate, _positive  # the CLI's checked argparse types

ROOT = Path(__file__).resolve().parent.parent
ARMS = {"A": dict(label="cold start", method=None), "B": dict(label="GRPO format+accuracy", method=None),
        "C": dict(label="+ saliency (cot, paper)", method="cot"), "D": dict(label="+ saliency (chain, library)", method="chain"),
        "E": dict(label="+ saliency (attention)", method="attention"), "F": dict(label="+ saliency (direct)", method="direct")}
SPLITS = {"heldout": (4242, 4243), "validation": (5151, 5152)}  # (no shortcuts, every question with a shortcut)
MAPS = ("chain", "top_token")                                   # top_token: measured, never rewarded
CLAIM_METRICS = ("chain_energy_pg", "chain_pg", "top_token_energy_pg", "top_token_pg")
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "numpy", "saliency_r1")

def wanders(text: str) -> bool: return "There is" in text.split("</think>")[0]

def nanmean(x) -> float:
    x = np.asarray(x, float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else math.nan

def pg_chance(boxes, grid) -> float:
    "Pointing game of a map whose maximum is a random cell: the share of cell centres inside the boxes."
    gh, gw = grid
    cy, cx = (np.arange(gh)[:, None] + 0.5) / gh, (np.arange(gw)[None, :] + 0.5) / gw
    inside = np.zeros((gh, gw), bool)
    for b in boxes: inside |= (cx >= b.x1) & (cx <= b.x2) & (cy >= b.y1) & (cy <= b.y2)
    return float(inside.mean())

# ---------------------------------------------------------------------------------------------------------- one run
def train(arm: str, seed: int, a: dict):
    "The cold start after `a['steps']` GRPO steps of `arm` (LoRA on q_proj/v_proj), its processor and the training log."
    import torch
    from transformers import PrinterCallback, set_seed
    from saliency_r1.data import make_shapes_dataset
    from saliency_r1.grpo import SaliencyGRPOConfig, SaliencyGRPOTrainer
    from saliency_r1.models import pretrained_tiny
    from saliency_r1.sft import make_lora_config
    model, processor = pretrained_tiny(variant="wander")
    if arm == "A": return model, processor, {}
    method = ARMS[arm]["method"]
    cfg = SaliencyGRPOConfig(output_dir=tempfile.mkdtemp(prefix=f"reproduce_{arm}{seed}_"), max_steps=a["steps"],
                             per_device_train_batch_size=8 * a["prompts"], num_generations=8, max_completion_length=64,
                             learning_rate=a["lr"], lr_scheduler_type="constant", beta=a["beta"], temperature=a["temperature"],
                             logging_steps=10, save_strategy="no", report_to="none", seed=seed, disable_tqdm=True,
                             format_weight=1.0, accuracy_weight=1.0, saliency_weight=a["saliency_weight"] if method else 0.0,
                             saliency_method=method or "chain", saliency_capture="generate" if method else "off")
    data = make_shapes_dataset(a["steps"] * a["prompts"], seed=1000 + seed, shortcut_rate=a["shortcut_rate"])
    set_seed(seed)  # the LoRA init happens before the trainer seeds itself
    trainer = SaliencyGRPOTrainer(model, cfg, train_dataset=data, processing_class=processor,
                                  peft_config=make_lora_config(model, ["q_proj", "v_proj"], dropout=0.0))
    trainer.remove_callback(PrinterCallback)
    t, c = time.time(), time.process_time()
    trainer.train()
    keys = ("reward", "rewards/accuracy_reward/mean", "rewards/saliency_reward/mean", "saliency/energy_pg", "kl")
    curve = [dict(step=h["step"], **{k: round(h[k], 4) for k in keys if k in h}) for h in trainer.state.log_history if "loss" in h]
    return trainer.model.eval(), processor, dict(train_minutes=round((time.time() - t) / 60, 2),
                                                 train_cpu_minutes=round((time.process_time() - c) / 60, 2), curve=curve)

def measure_set(model, processor, data, deletion: int, examples=()) -> tuple[dict, list]:
    "Metrics of one question set (see the module docstring) and the maps of the `examples` indices."
    from saliency_r1.data import parse_boxes
    from saliency_r1.evaluate import evaluate
    rep = evaluate(model, processor, data, methods=MAPS, deletion=deletion, progress=False)
    recs, s = rep.records, rep.summary()
    valid = np.array([r["valid"] for r in recs])
    m = dict(accuracy=s["accuracy"], format_rate=s["format_rate"], valid_rate=s["valid_rate"], blank_accuracy=s["blank_accuracy"],
             accuracy_by_template={t: rep.summary(t)["accuracy"] for t in rep.templates},
             wander_share=float(np.mean([wanders(r["completion"]) for r in recs])),
             uniform_energy_pg=nanmean([r["maps"]["uniform"]["energy_pg"] for r in recs]),
             pg_chance=nanmean([pg_chance(parse_boxes(b), e.grid) if v else np.nan
                                for b, e, v in zip(data["bbox"], rep.explanations["chain"], valid)]))
    for meth in MAPS:
        col = lambda k: np.array([r["maps"][meth].get(k, np.nan) for r in recs], float)
        m[f"{meth}_energy_pg"], m[f"{meth}_pg"] = nanmean(col("energy_pg")), nanmean(col("pointing_game"))
        for mode in ("deletion", "insertion") if deletion else ():
            d = col(f"{mode}_auc") - col(f"{mode}_random_auc")
            m[f"{meth}_{mode}"], m[f"{meth}_{mode}_se"] = nanmean(d), float(np.nanstd(d, ddof=1) / math.sqrt(np.isfinite(d).sum()))
            m[f"{meth}_{mode}_n"] = int(np.isfinite(d).sum())
    shown = [dict(index=i, question=recs[i]["question"], completion=recs[i]["completion"], correct=recs[i]["correct"],
                  **{meth: np.round(rep.explanations[meth][i].answer_map, 5).tolist() for meth in MAPS}) for i in examples]
    return m, shown

def example_indices(data, k: int = 4) -> list[int]:
    "The first question of each of `k` templates: the same questions for every arm's map grid."
    out, seen = [], set()
    for i, t in enumerate(data["template"]):
        if t not in seen: out.append(i); seen.add(t)
        if len(out) == k: break
    return out

TRAIN_KEYS = ("steps", "prompts", "lr", "beta", "temperature", "shortcut_rate")

def run_dir(cache: Path, arm: str, seed: int, a: dict) -> Path:
    "Where one (arm, seed)'s adapter and evaluations are kept, keyed by the settings that change its training."
    keys = TRAIN_KEYS + (("saliency_weight",) if ARMS[arm]["method"] else ()) if arm != "A" else ()
    key = hashlib.sha256(json.dumps({k: a[k] for k in keys}, sort_keys=True).encode()).hexdigest()[:10]
    return cache / f"{arm}_{seed}_{key}"

def trained(arm: str, seed: int, a: dict, where: Path):
    "The model of (arm, seed): trained and its LoRA adapter saved in `where`, or the saved adapter loaded."
    from peft import PeftModel
    from saliency_r1.models import pretrained_tiny
    if arm == "A" or (where / "adapter_model.safetensors").exists():
        model, processor = pretrained_tiny(variant="wander")
        return (model if arm == "A" else PeftModel.from_pretrained(model, where)).eval(), processor
    model, processor, log = train(arm, seed, a)
    model.save_pretrained(where)
    (where / "train.json").write_text(json.dumps(log))
    return model, processor

def run_one(arm: str, seed: int, a: dict, cache: Path, evals: list) -> dict:
    "Train (or load) one (arm, seed) and measure it on each `(split, n, deletion)` of `evals` not measured before."
    import torch
    torch.set_num_threads(1)
    from saliency_r1.data import make_shapes_dataset
    where = run_dir(cache, arm, seed, a)
    where.mkdir(parents=True, exist_ok=True)
    model = None
    for split, n, deletion in evals:
        path = where / f"eval_{split}_{n}_{deletion}.json"
        if path.exists(): continue
        if model is None: model, processor = trained(arm, seed, a, where)
        t = time.time()
        plain, hint = make_shapes_dataset(n, seed=SPLITS[split][0]), make_shapes_dataset(n, seed=SPLITS[split][1], shortcut_rate=1.0)
        m, shown = measure_set(model, processor, plain, deletion, example_indices(plain))
        mh, _ = measure_set(model, processor, hint, 0)
        m |= {f"{k}_hint": v for k, v in mh.items() if k != "pg_chance"}
        path.write_text(json.dumps(dict(metrics=m, examples=shown, eval_minutes=round((time.time() - t) / 60, 2),
                                        load_average=round(os.getloadavg()[0], 2))))
    train_log = json.loads((where / "train.json").read_text()) if (where / "train.json").exists() else {}
    return dict(arm=arm, seed=seed, **train_log, **{split: json.loads((where / f"eval_{split}_{n}_{d}.json").read_text())
                                                     for split, n, d in evals})

def _worker_init():
    "One torch thread per process, and no per-run progress bars of weight loading or dataset maps in the log."
    import datasets, torch, transformers, warnings
    warnings.simplefilter("ignore", FutureWarning)
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error(); transformers.logging.disable_progress_bar(); datasets.disable_progress_bars()

def save_png(fig, path: Path, dpi: int):
    "Save `fig` as a small PNG: rendered at `dpi`, then reduced to a 96-colour palette."
    import io
    import matplotlib.pyplot as plt
    from PIL import Image
    buf = io.BytesIO(); fig.savefig(buf, dpi=dpi); plt.close(fig)
    Image.open(buf).convert("RGB").quantize(96).save(path, optimize=True)

# ---------------------------------------------------------------------------------------------------------- summary
def arm_stats(runs: list[dict], key: str) -> dict:
    v = np.array([r["metrics"][key] for r in runs], float)
    v = v[np.isfinite(v)]
    return dict(mean=float(v.mean()) if len(v) else None, sd=float(v.std(ddof=1)) if len(v) > 1 else 0.0, n=len(v))

def verdict(results: dict, arm: str, control: str = "B") -> dict:
    """The acceptance rule: `arm` beats `control` on every claim metric by more than two seed standard deviations of a
    difference of two runs, sqrt(sd_arm^2 + sd_control^2), and its shortcut-free accuracy is at most 1 point lower."""
    if arm not in results or control not in results: return {}
    out, holds = {}, True
    for k in CLAIM_METRICS + ("accuracy",):
        x, b = arm_stats(results[arm], k), arm_stats(results[control], k)
        diff, sd = x["mean"] - b["mean"], math.hypot(x["sd"], b["sd"])
        ok = diff >= -0.01 if k == "accuracy" else diff > 2 * sd
        out[k] = dict(diff=round(diff, 4), sd_of_difference=round(sd, 4), sigmas=round(diff / sd, 2) if sd else None, passes=ok)
        holds &= ok
    return out | dict(holds=holds)

ROWS = [("accuracy", "accuracy (no shortcut)", 3), ("accuracy_hint", "accuracy (shortcut)", 3),
        ("blank_accuracy_hint", "shortcut, grey image", 3), ("format_rate", "format", 3),
        ("chain_energy_pg", "chain energy-PG", 3), ("chain_pg", "chain PG", 3),
        ("top_token_energy_pg", "top-token energy-PG", 3), ("top_token_pg", "top-token PG", 3),
        ("chain_deletion", "chain deletion − random", 3), ("chain_insertion", "chain insertion − random", 3),
        ("top_token_deletion", "top-token deletion − random", 3), ("wander_share", "wandering thoughts", 2)]

def markdown_table(results: dict, info: dict) -> str:
    "Mean ± seed sd per arm (columns) and metric (rows), with the baselines of the question set."
    arms = [k for k in ARMS if k in results]
    head = "| metric | " + " | ".join(f"{k}: {ARMS[k]['label']}" for k in arms) + " |\n|---|" + "---|" * len(arms) + "\n"
    def cell(k, key, d):
        s = arm_stats(results[k], key)
        return "–" if s["mean"] is None else f"{s['mean']:.{d}f}" + (f" ± {s['sd']:.{d}f}" if s["n"] > 1 and k != "A" else "")
    lines = [f"| {name} | " + " | ".join(cell(k, key, d) for k in arms) + " |" for key, name, d in ROWS
             if any(key in r["metrics"] for r in results[arms[0]])]
    base = results[arms[0]][0]["metrics"]
    foot = (f"\n\nBaselines on the same questions: uniform-map energy-PG {base['uniform_energy_pg']:.3f}, random-cell pointing "
            f"game {base['pg_chance']:.3f}. {info['n']} questions per set"
            + (f"; deletion/insertion on the first {info['deletion']} valid questions" if info["deletion"] else "")
            + f"; seeds {info['seeds']} (A is deterministic: one evaluation).")
    return head + "\n".join(lines) + foot

def plot_bars(results: dict, path: Path):
    "One panel per metric: bars = mean over seeds, error bars = seed sd, dots = seeds; dashed = baseline."
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    arms = [k for k in ARMS if k in results]
    rows = [r for r in ROWS if r[0] in results[arms[0]][0]["metrics"]]
    base = results[arms[0]][0]["metrics"]
    lines = {"chain_energy_pg": base["uniform_energy_pg"], "top_token_energy_pg": base["uniform_energy_pg"],
             "chain_pg": base["pg_chance"], "top_token_pg": base["pg_chance"], "chain_deletion": 0, "chain_insertion": 0,
             "top_token_deletion": 0}
    cols = 4
    fig, axs = plt.subplots(math.ceil(len(rows) / cols), cols, figsize=(11, 2.3 * math.ceil(len(rows) / cols)), layout="constrained")
    for ax, (key, name, _) in zip(axs.flat, rows):
        st = [arm_stats(results[k], key) for k in arms]
        ax.bar(range(len(arms)), [s["mean"] or 0 for s in st], yerr=[s["sd"] for s in st], capsize=3,
               color=["grey", "tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown"][:len(arms)])
        for i, k in enumerate(arms):
            ax.plot([i] * len(results[k]), [r["metrics"][key] for r in results[k]], "k.", ms=3)
        if key in lines: ax.axhline(lines[key], ls="--", color="k", lw=0.8)
        lo = min(min(r["metrics"][key] for r in results[k]) for k in arms)
        hi = max(max(r["metrics"][key] for r in results[k]) for k in arms)
        if lo > 0: ax.set_ylim(max(0, lo - 0.15 * (hi - lo + 0.02)), hi + 0.15 * (hi - lo + 0.02))
        ax.set_xticks(range(len(arms)), arms); ax.set_title(name, fontsize=9); ax.tick_params(labelsize=8)
    for ax in list(axs.flat)[len(rows):]: ax.axis("off")
    save_png(fig, path, 72)

def plot_maps(results: dict, path: Path, split: str, n: int):
    "Rows: arms (first seed); columns: the same held-out questions; each cell the chain map with the evidence box."
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from saliency_r1.data import make_shapes_dataset
    from saliency_r1.viz import show_saliency
    arms = [k for k in ARMS if k in results]
    data = make_shapes_dataset(n, seed=SPLITS[split][0])
    ex = results[arms[0]][0]["examples"]
    fig, axs = plt.subplots(len(arms), len(ex), figsize=(1.9 * len(ex), 2.05 * len(arms)), layout="constrained", squeeze=False)
    for i, (row, k) in enumerate(zip(axs, arms)):
        for ax, e in zip(row, results[k][0]["examples"]):
            r = data[e["index"]]
            answer = e["completion"].split("</think>")[-1].strip()[:14]
            question = r["problem"][:32] + "\n" if i == 0 else ""
            show_saliency(r["image"], np.array(e["chain"]), r["bbox"], ax, colorbar=False,
                          title=f"{question}{k}: {answer} {'✓' if e['correct'] else '✗'}")
            ax.set_xticks([]); ax.set_yticks([])
    save_png(fig, path, 60)

def compute(runs, workers: int) -> dict:
    """What the runs cost when they were made (a cached rerun takes seconds, so `minutes_total` alone says little): minutes
    of training (wall and CPU, one torch thread per run) and of evaluation, summed over runs, and the wall time those
    sums imply on `workers` cores."""
    runs = list(runs)
    total = lambda k: round(sum(r.get(k) or 0 for r in runs), 1)
    evals = round(sum(v["eval_minutes"] for r in runs for v in r.values() if isinstance(v, dict) and "eval_minutes" in v), 1)
    return dict(runs=len(runs), train_minutes=total("train_minutes"), train_cpu_minutes=total("train_cpu_minutes"),
                eval_minutes=evals, cpu_minutes_per_core=round((total("train_cpu_minutes") + evals) / workers, 1))

# ---------------------------------------------------------------------------------------------------------- main
def versions() -> dict:
    git = lambda *c: subprocess.run(["git", *c], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = git("status", "--porcelain", "--", "saliency_r1").splitlines()
    return dict(python=platform.python_version(), **{p: version(p) for p in PACKAGES}, git_commit=git("rev-parse", "HEAD"),
                saliency_r1_uncommitted={line[3:]: hashlib.sha256((ROOT / line[3:]).read_bytes()).hexdigest()[:12]
                                         for line in dirty if (ROOT / line[3:]).is_file()})

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--seeds", type=_count0, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=_count, default=300); p.add_argument("--prompts", type=_count, default=4, help="prompts per step, 8 generations each")
    p.add_argument("--lr", type=_positive, default=5e-4); p.add_argument("--beta", type=_number(float, 0.0), default=0.001, help="KL coefficient")
    p.add_argument("--temperature", type=_positive, default=1.0); p.add_argument("--saliency-weight", type=_number(float, 0.0), default=1.0)
    p.add_argument("--shortcut-rate", type=_rate, default=0.5, help="share of training questions with the answer in the wording")
    p.add_argument("--n", type=_count, default=300, help="questions per evaluation set (without and with shortcuts)")
    p.add_argument("--deletion", type=_count0, default=60, help="deletion/insertion curves on this many valid questions")
    p.add_argument("--split", choices=list(SPLITS), default="heldout", help="validation: for choosing settings")
    p.add_argument("--workers", type=_count, default=2); p.add_argument("--tag", default="", help="name of an investigation try")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/reproduce.json")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "reproduce_runs")
    p.add_argument("--no-validation", action="store_true", help="with --split heldout: skip measuring the validation split too")
    a = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1"); os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    settings = {k: v for k, v in vars(a).items() if k not in ("arms", "seeds", "workers", "out", "cache", "tag", "no_validation")}
    evals = [(a.split, a.n, a.deletion)] + ([("validation", a.n, 0)] if a.split == "heldout" and not a.no_validation else [])
    a.cache.mkdir(parents=True, exist_ok=True); a.out.parent.mkdir(parents=True, exist_ok=True)
    jobs = [(k, s) for s in a.seeds for k in a.arms if k != "A" or s == a.seeds[0]]  # seed-major: whole seeds finish first
    done, t0 = {}, time.time()
    print(f"{len(jobs)} runs, cache {a.cache}, measured on {evals}; settings {settings}", flush=True)
    if a.workers > 1:
        pool = ProcessPoolExecutor(a.workers, initializer=_worker_init, mp_context=get_context("spawn"))
        futures = {pool.submit(run_one, k, s, settings, a.cache, evals): (k, s) for k, s in jobs}
        finished = ((*futures[f], f.result()) for f in as_completed(futures))
    else:  # one worker: in this process, without starting another
        _worker_init()
        finished = ((k, s, run_one(k, s, settings, a.cache, evals)) for k, s in jobs)
    for k, s, r in finished:
        done[k, s] = r
        m = r[a.split]["metrics"]
        print(f"[{(time.time() - t0) / 60:5.1f} min] {k} seed {s}: train {r.get('train_minutes', 0):.1f} min "
              f"(cpu {r.get('train_cpu_minutes', 0):.1f}), eval {r[a.split]['eval_minutes']:.1f} min, load {r[a.split]['load_average']}; "
              f"acc {m['accuracy']:.3f} / hint {m['accuracy_hint']:.3f}, chain ePG {m['chain_energy_pg']:.3f} PG {m['chain_pg']:.3f}, "
              f"top ePG {m['top_token_energy_pg']:.3f} PG {m['top_token_pg']:.3f}, wander {m['wander_share']:.2f}", flush=True)
    if a.workers > 1: pool.shutdown()
    view = lambda split: {k: [dict(seed=s, **done[k, s][split]) for s in a.seeds if (k, s) in done] for k in a.arms}
    results = view(a.split)
    runs = {k: [dict(seed=r["seed"], metrics=r["metrics"], train_minutes=done[k, r["seed"]].get("train_minutes"),
                     train_cpu_minutes=done[k, r["seed"]].get("train_cpu_minutes"), eval_minutes=r["eval_minutes"],
                     load_average=r["load_average"], curve=done[k, r["seed"]].get("curve", [])) for r in rs] for k, rs in results.items()}
    summarize = lambda res: dict(summary={k: {m: arm_stats(rs, m) for m, _, _ in ROWS if m in rs[0]["metrics"]} for k, rs in res.items()},
                                 verdicts={k: verdict(res, k) for k in ("C", "D", "E", "F") if k in res})
    out = dict(command=shlex.join(["python", "bench/reproduce.py", *(sys.argv[1:] if argv is None else argv)]),
               tag=a.tag, settings=settings, split=a.split, split_seeds=dict(zip(("no_shortcut", "shortcut"), SPLITS[a.split])),
               training_data_seed="1000 + seed", arms={k: ARMS[k]["label"] for k in a.arms}, runs=runs, **summarize(results),
               examples={k: rs[0]["examples"] for k, rs in results.items()},
               validation=({k: [dict(seed=r["seed"], metrics=r["metrics"]) for r in rs] for k, rs in view("validation").items()}
                           | summarize(view("validation"))) if len(evals) > 1 else None,
               minutes_total=round((time.time() - t0) / 60, 1), compute=compute(done.values(), a.workers), versions=versions())
    a.out.write_text(json.dumps(out, indent=1))
    table = markdown_table(results, dict(n=a.n, deletion=a.deletion, seeds=a.seeds))
    a.out.with_suffix(".md").write_text(table + "\n")
    plot_bars(results, a.out.with_name(a.out.stem + "_bars.png"))
    plot_maps(results, a.out.with_name(a.out.stem + "_maps.png"), a.split, a.n)
    print(table)
    for k, v in out["verdicts"].items():
        if v: print(f"claim for {k}: {'holds' if v['holds'] else 'does not hold'}: " +
                    ", ".join(f"{m} {d['diff']:+.3f} ({d['sigmas']} sd)" for m, d in v.items() if m != "holds"))
    c = out["compute"]
    print(f"wrote {a.out} ({out['minutes_total']} min now; the {c['runs']} runs took {c['train_cpu_minutes']} CPU min of training "
          f"and {c['eval_minutes']} min of evaluation: {c['cpu_minutes_per_core']} min on {a.workers} cores)")

if __name__ == "__main__":
    main()
