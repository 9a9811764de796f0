"""Reproduce Saliency-R1's claim at small scale, with ablations, placebos and seeds (issues 13 and 20).

Does a saliency reward make the tiny VLM's answers draw on the evidence, beyond seed noise, without costing accuracy,
and is what it does more than adding reward variance? Every arm starts from the same cold start,
`pretrained_tiny(variant="wander")` (about half of its greedy thoughts first describe the distractors), and trains with
the same GRPO steps, data and seeds:

    A  cold start only                       D  + saliency reward, the library's `chain` map
    B  GRPO, format + accuracy rewards       E  + saliency reward, raw `attention` map (ablation)
    C  + saliency reward, the paper's `cot`  F  + saliency reward, `direct` map, no thinking hop (ablation)
    S  placebo: D's reward scored against another question's boxes (`shuffled_boxes`)
    R  placebo: format + accuracy + a random reward with D's per-step mean and sd, same seed (`MatchedRandomReward`;
       runs after D)

The training questions carry a hint ("(Hint: the answer is X.)") at `--shortcut-rate`, naming the right answer with
probability `--cue-reliability`, so a policy can earn the accuracy reward by reading. Each run is measured on three
held-out sets of `--n` questions (seeds 4242/4243/4244: no hint, a right hint, a wrong hint) and, unless
`--no-validation`, on the validation split (seeds 5151-5153) that alone is used to choose settings: accuracy (overall,
per template, and about a grey image), format rate, energy pointing game and pointing game of the `chain` map and of
`top_token` (no arm is rewarded on it), the uniform-map and random-cell baselines, deletion and insertion AUC minus a
seeded random ranking (paired, first `--deletion` valid examples, no-hint set), and the share of wandering thoughts
("There is" in the thinking). Every GRPO step is logged (rewards, their spread, the share of groups with zero spread).
Writes `--out` (per-seed metrics under the arm letters, a summary, the verdicts, D against B, S and R paired by question,
provenance), a markdown table, and figures next to it.

    python bench/reproduce.py [--arms A B D S R] [--seeds 0 1 2 3] [--steps 300] [--n 300] [--deletion 60] [--workers 2]
    python bench/reproduce.py --split validation --tag TRY ...     # a setting tried on the validation split only

Runs go to a process pool (`--workers`, one torch thread each: on a busy 2-core machine two threads per process
oversubscribe the cores and a GRPO step took 10x longer). Each finished run (its LoRA adapter, training log, metrics and
per-question records) is cached under `--cache`, keyed by its settings, so an interrupted experiment resumes where it
stopped; the plan printed first says what the runs not yet cached will cost. A cached run made with other code (its
`code.txt`, a hash of this script and the library modules it reaches, differs) is deleted and run again.
"""
import argparse, dataclasses, hashlib, json, math, os, shutil, sys, tempfile, time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from saliency_r1.cli import _number, _count, _count0, _rate, _positive  # the CLI's checked argparse types

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from results import measured, provenance  # the code a bench script measures; command, versions, commit and hashes

ARMS = {"A": dict(label="cold start", method=None), "B": dict(label="GRPO format+accuracy", method=None),
        "C": dict(label="+ saliency (cot, paper)", method="cot"), "D": dict(label="+ saliency (chain, library)", method="chain"),
        "E": dict(label="+ saliency (attention)", method="attention"), "F": dict(label="+ saliency (direct)", method="direct"),
        "S": dict(label="placebo: shuffled boxes", method="chain"), "R": dict(label="placebo: random, D's moments", method=None)}
SPLITS = {"heldout": (4242, 4243, 4244), "validation": (5151, 5152, 5153)}  # seeds of the (absent, right, conflict) hint sets
# CPU seconds (one torch thread), measured in the placebo study: a GRPO step of 4 prompts x 8 generations, what a recorded
# saliency reward adds to it, one evaluated question (with its grey-image twin), one deletion + insertion curve
STEP_CPU_S, STEP_SALIENCY_CPU_S, QUESTION_CPU_S, DELETION_CPU_S = 1.3, 0.05, 0.06, 0.3
MAPS = ("chain", "top_token")                                   # top_token: measured, never rewarded
CLAIM_METRICS = ("chain_energy_pg", "chain_pg", "top_token_energy_pg", "top_token_pg")

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
CURVE_KEYS = ("reward", "reward_std", "frac_reward_zero_std", "rewards/accuracy_reward/mean", "rewards/saliency_reward/mean",
              "rewards/saliency_reward/std", "rewards/placebo_reward/mean", "rewards/placebo_reward/std", "saliency/energy_pg", "kl")

def training_data(arm: str, seed: int, a: dict):
    "The GRPO questions of (arm, seed): hints on `shortcut_rate` of them, right with `cue_reliability`; S: shuffled boxes."
    from saliency_r1.data import make_shapes_dataset
    from saliency_r1.rewards import shuffled_boxes
    data = make_shapes_dataset(a["steps"] * a["prompts"], seed=1000 + seed, shortcut_rate=a["shortcut_rate"],
                               cue_reliability=a["cue_reliability"])
    if arm != "S": return data
    return data.rename_column("bbox", "true_bbox").add_column("bbox", shuffled_boxes(data["bbox"], seed))

def rewards_of(arm: str, seed: int, a: dict, cache: Path):
    "None (the config's rewards), or for R: format, accuracy and a random reward with D's (same seed) per-step moments."
    if arm != "R": return None
    from saliency_r1.rewards import MatchedRandomReward, accuracy_reward, format_reward
    log = run_dir(cache, "D", seed, a) / "train.json"
    if not log.exists(): raise FileNotFoundError(f"arm R needs D's training log of seed {seed} ({log}): run arm D first")
    return [format_reward, accuracy_reward, MatchedRandomReward.from_log(json.loads(log.read_text())["curve"], seed=seed)]

def train(arm: str, seed: int, a: dict, cache: Path):
    "The cold start after `a['steps']` GRPO steps of `arm` (LoRA on q_proj/v_proj), its processor and the log of every step."
    from transformers import PrinterCallback, set_seed
    from saliency_r1.grpo import SaliencyGRPOConfig, SaliencyGRPOTrainer
    from saliency_r1.models import pretrained_tiny
    from saliency_r1.sft import make_lora_config
    model, processor = pretrained_tiny(variant="wander")
    if arm == "A": return model, processor, {}
    method, funcs = ARMS[arm]["method"], rewards_of(arm, seed, a, cache)
    cfg = SaliencyGRPOConfig(output_dir=tempfile.mkdtemp(prefix=f"reproduce_{arm}{seed}_"), max_steps=a["steps"],
                             per_device_train_batch_size=8 * a["prompts"], num_generations=8, max_completion_length=64,
                             learning_rate=a["lr"], lr_scheduler_type="constant", beta=a["beta"], temperature=a["temperature"],
                             logging_steps=1, save_strategy="no", report_to="none", seed=seed, disable_tqdm=True,
                             format_weight=1.0, accuracy_weight=1.0, saliency_weight=a["saliency_weight"] if method else 0.0,
                             saliency_method=method or "chain", saliency_capture="generate" if method else "off",
                             reward_weights=[1.0, 1.0, a["saliency_weight"]] if funcs else None)
    set_seed(seed)  # the LoRA init happens before the trainer seeds itself
    trainer = SaliencyGRPOTrainer(model, cfg, train_dataset=training_data(arm, seed, a), processing_class=processor,
                                  reward_funcs=funcs, peft_config=make_lora_config(model, ["q_proj", "v_proj"], dropout=0.0))
    trainer.remove_callback(PrinterCallback)
    t, c = time.time(), time.process_time()
    trainer.train()
    curve = [dict(step=h["step"], **{k: round(h[k], 4) for k in CURVE_KEYS if k in h}) for h in trainer.state.log_history if "loss" in h]
    return trainer.model.eval(), processor, dict(train_minutes=round((time.time() - t) / 60, 2),
                                                 train_cpu_minutes=round((time.process_time() - c) / 60, 2), curve=curve)

def measure_set(model, processor, data, deletion: int, examples=()) -> tuple[dict, list, object]:
    "Metrics of one question set (see the module docstring), the maps of the `examples` indices, and the `EvalReport`."
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
    return m, shown, rep

def example_indices(data, k: int = 4) -> list[int]:
    "The first question of each of `k` templates: the same questions for every arm's map grid."
    out, seen = [], set()
    for i, t in enumerate(data["template"]):
        if t not in seen: out.append(i); seen.add(t)
        if len(out) == k: break
    return out

TRAIN_KEYS = ("steps", "prompts", "lr", "beta", "temperature", "shortcut_rate", "cue_reliability")

def run_dir(cache: Path, arm: str, seed: int, a: dict) -> Path:
    "Where one (arm, seed)'s adapter and evaluations are kept, keyed by the settings that change its training."
    keys = TRAIN_KEYS + (("saliency_weight",) if ARMS[arm]["method"] or arm == "R" else ()) if arm != "A" else ()
    key = hashlib.sha256(json.dumps({k: a[k] for k in keys}, sort_keys=True).encode()).hexdigest()[:10]
    return cache / f"{arm}_{seed}_{key}"

def trained(arm: str, seed: int, a: dict, where: Path, cache: Path):
    "The model of (arm, seed): trained and its LoRA adapter saved in `where`, or the saved adapter loaded."
    from peft import PeftModel
    from saliency_r1.models import pretrained_tiny
    if arm == "A" or (where / "adapter_model.safetensors").exists():
        model, processor = pretrained_tiny(variant="wander")
        return (model if arm == "A" else PeftModel.from_pretrained(model, where)).eval(), processor
    model, processor, log = train(arm, seed, a, cache)
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
        if model is None: model, processor = trained(arm, seed, a, where, cache)
        t, m, shown = time.time(), {}, None
        for name, data in question_sets(split, n).items():  # deletion curves and the map grid on the hint-free questions
            ms, ex, rep = measure_set(model, processor, data, deletion if name == "absent" else 0,
                                      example_indices(data) if name == "absent" else ())
            m |= {(k if name == "absent" else f"{k}_{name}"): v for k, v in ms.items() if name == "absent" or k != "pg_chance"}
            shown = shown or ex
            save_records(rep, where / f"records_{split}_{n}_{deletion}_{name}.json.gz")
        path.write_text(json.dumps(dict(metrics=m, examples=shown, eval_minutes=round((time.time() - t) / 60, 2),
                                        load_average=round(os.getloadavg()[0], 2))))
    train_log = json.loads((where / "train.json").read_text()) if (where / "train.json").exists() else {}
    return dict(arm=arm, seed=seed, **train_log, **{split: json.loads((where / f"eval_{split}_{n}_{d}.json").read_text())
                                                     for split, n, d in evals})

def question_sets(split: str, n: int) -> dict:
    "The evaluation questions of `split`: the same kind of scenes with no hint, a hint that is right, one that is wrong."
    from saliency_r1.data import make_shapes_dataset
    absent, right, conflict = SPLITS[split]
    return dict(absent=make_shapes_dataset(n, seed=absent), right=make_shapes_dataset(n, seed=right, shortcut_rate=1.0),
                conflict=make_shapes_dataset(n, seed=conflict, shortcut_rate=1.0, cue_reliability=0.0))

def save_records(rep, path: Path):
    "The report's per-question records and settings, gzipped, for paired comparisons later (`compare`)."
    import gzip
    data = json.loads(rep.to_json(indent=None))
    for r in data["records"]: r.pop("blank_completion", None)
    model = Path(data["info"].get("model") or "")
    if model.is_absolute() and model.is_relative_to(ROOT): data["info"]["model"] = str(model.relative_to(ROOT))
    path.write_bytes(gzip.compress(json.dumps(dict(info=data["info"], methods=data["methods"], records=data["records"])).encode(), mtime=0))

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

def verdict(results: dict, arm: str, control: str = "B", metrics=CLAIM_METRICS) -> dict:
    """The acceptance rule: `arm` beats `control` on every claim metric by more than two seed standard deviations of a
    difference of two runs, sqrt(sd_arm^2 + sd_control^2), and its shortcut-free accuracy is at most 1 point lower."""
    if arm not in results or control not in results: return {}
    out, holds = {}, True
    for k in tuple(metrics) + ("accuracy",):
        x, b = arm_stats(results[arm], k), arm_stats(results[control], k)
        diff, sd = x["mean"] - b["mean"], math.hypot(x["sd"], b["sd"])
        ok = diff >= -0.01 if k == "accuracy" else diff > 2 * sd
        out[k] = dict(diff=round(diff, 4), sd_of_difference=round(sd, 4), sigmas=round(diff / sd, 2) if sd else None, passes=ok)
        holds &= ok
    return out | dict(holds=holds)

PLACEBO_METRICS = ("accuracy_conflict", "top_token_energy_pg")  # conflict-split accuracy; a map no arm is rewarded on

def placebo_verdict(results: dict, arm: str = "D", controls=("B", "S", "R")) -> dict:
    """The placebo study's rule, fixed before its held-out run: `arm` beats every control (GRPO and both placebos) on
    conflict-split accuracy and on top-token energy-PG by more than two seed sd of a difference, and its hint-free accuracy
    is at most 1 point below each control's. A control that was not run makes the rule fail."""
    if arm not in results: return {}
    out = {c: (verdict(results, arm, c, PLACEBO_METRICS) if c in results else None) for c in controls}
    return out | dict(holds=all(v and v["holds"] for v in out.values()))

def load_records(path: Path, prefix: str = ""):
    "An `EvalReport` (records and settings) from `save_records`' file; `prefix` makes its question ids distinct (per seed)."
    import gzip
    from saliency_r1.evaluate import EvalReport
    data = json.loads(gzip.decompress(path.read_bytes()))
    for r in data["records"]: r["id"] = prefix + r["id"]
    return EvalReport.from_json(json.dumps(data))

def _diffs(cmp) -> dict:
    "The numbers of a `ComparisonReport` this study reports: accuracy (McNemar) and energy-PG of both maps, with their CIs."
    s = cmp.summary()
    return dict(n=s["n"], accuracy=dataclasses.asdict(s["accuracy"]), **{f"{m}_energy_pg": dataclasses.asdict(s["maps"][m]["energy_pg"]) for m in MAPS})

def paired_comparisons(cache: Path, a: dict, seeds: list, split: str, arm: str = "D", controls=("B", "S", "R")) -> dict:
    """Per control, set (no hint, hint wrong) and seed, `arm` − control paired by question (`compare`: exact McNemar for
    accuracy, paired bootstrap for energy-PG); and pooled over seeds, each (seed, question) a pair."""
    from saliency_r1.evaluate import EvalReport, compare
    records = lambda k, s, name: run_dir(cache, k, s, a) / f"records_{split}_{a['n']}_{a['deletion']}_{name}.json.gz"
    pool = lambda reps: EvalReport(reps[0].methods, [r for rep in reps for r in rep.records], info=reps[0].info)
    out = {}
    for c in controls:
        for name in ("absent", "conflict"):
            have = [s for s in seeds if records(arm, s, name).exists() and records(c, s, name).exists()]
            if not have: continue
            pairs = [(load_records(records(c, s, name), f"{s}:"), load_records(records(arm, s, name), f"{s}:")) for s in have]
            per_seed = {s: _diffs(compare(x, y, methods=MAPS, names=(c, arm))) for s, (x, y) in zip(have, pairs)}
            pooled = compare(pool([x for x, _ in pairs]), pool([y for _, y in pairs]), methods=MAPS, names=(c, arm))
            out[f"{arm}-{c}"] = out.get(f"{arm}-{c}", {}) | {name: dict(pooled=_diffs(pooled), per_seed=per_seed)}
    return out

ROWS = [("accuracy", "accuracy (no shortcut)", 3), ("accuracy_hint", "accuracy (shortcut)", 3),
        ("blank_accuracy_hint", "shortcut, grey image", 3), ("accuracy_right", "accuracy (hint right)", 3),
        ("accuracy_conflict", "accuracy (hint wrong)", 3), ("blank_accuracy_right", "hint right, grey image", 3),
        ("blank_accuracy_conflict", "hint wrong, grey image", 3), ("format_rate", "format", 3),
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

COLOURS = dict(A="grey", B="tab:blue", C="tab:orange", D="tab:green", E="tab:purple", F="tab:brown", S="tab:pink", R="tab:olive")

def _plt():
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt

def bars_figure(results: dict):
    """One panel per metric, y from 0 (deletion and insertion are differences, centred on 0): bars = mean over seeds,
    error bars = seed sd, dots = seeds; dashed = baseline (uniform map, random cell; the random ranking is 0)."""
    plt, arms = _plt(), [k for k in ARMS if k in results]
    rows = [r for r in ROWS if r[0] in results[arms[0]][0]["metrics"]]
    base = results[arms[0]][0]["metrics"]
    lines = {"chain_energy_pg": base["uniform_energy_pg"], "top_token_energy_pg": base["uniform_energy_pg"],
             "chain_pg": base["pg_chance"], "top_token_pg": base["pg_chance"]}
    cols = 4
    fig, axs = plt.subplots(math.ceil(len(rows) / cols), cols, figsize=(10, 2.1 * math.ceil(len(rows) / cols)), layout="constrained")
    for ax, (key, name, _) in zip(axs.flat, rows):
        st = [arm_stats(results[k], key) for k in arms]
        ax.bar(range(len(arms)), [s["mean"] or 0 for s in st], yerr=[s["sd"] for s in st], capsize=3, color=[COLOURS[k] for k in arms])
        for i, k in enumerate(arms): ax.plot([i] * len(results[k]), [r["metrics"][key] for r in results[k]], "k.", ms=3)
        if key in lines: ax.axhline(lines[key], ls="--", color="k", lw=0.8)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(range(len(arms)), arms); ax.set_title(name, fontsize=9); ax.tick_params(labelsize=8)
    for ax in list(axs.flat)[len(rows):]: ax.axis("off")
    return fig

def maps_figure(results: dict, split: str, n: int):
    "Rows: arms (first seed); columns: the same held-out questions; each cell the chain map with the evidence box."
    from saliency_r1.viz import show_saliency
    plt, arms = _plt(), [k for k in ARMS if k in results]
    data = question_sets(split, n)["absent"]
    ex = results[arms[0]][0]["examples"]
    fig, axs = plt.subplots(len(arms), len(ex), figsize=(1.9 * len(ex), 2.0 * len(arms) + 0.4), layout="constrained", squeeze=False)
    for i, (row, k) in enumerate(zip(axs, arms)):
        for ax, e in zip(row, results[k][0]["examples"]):
            r = data[e["index"]]
            answer = e["completion"].split("</think>")[-1].strip()[:12]
            show_saliency(r["image"], np.array(e["chain"]), r["bbox"], ax, colorbar=False,
                          title=f"{k}: {answer} {'✓' if e['correct'] else '✗'}")
            ax.title.set_fontsize(9); ax.set_xticks([]); ax.set_yticks([])
            if i == 0: ax.set_title(r["problem"][:30] + "…" * (len(r["problem"]) > 30) + "\n" + ax.get_title(), fontsize=8)
    return fig

def zero_spread_figure(runs: dict, window: int = 10):
    "Per arm, the share of GRPO groups whose total reward has zero spread, per step (mean over seeds, `window`-step mean)."
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3), layout="constrained")
    for k, rs in runs.items():
        logs = [[c.get("frac_reward_zero_std") for c in r.get("curve", [])] for r in rs]
        logs = [l for l in logs if l and None not in l]
        if not logs: continue
        y = np.mean([l[:min(map(len, logs))] for l in logs], axis=0)
        w = min(window, len(y))
        y = np.convolve(y, np.ones(w) / w, mode="valid")
        ax.plot(np.arange(len(y)) + w, y, color=COLOURS[k], label=f"{k}: {ARMS[k]['label']}")
    ax.set(xlabel="GRPO step", ylabel="groups with zero reward spread", ylim=(0, 1))
    ax.legend(fontsize=8, ncols=2, loc="upper right")
    return fig

SETS = (("", "no hint"), ("_right", "hint right"), ("_conflict", "hint wrong"))

def conflict_figure(results: dict):
    "Accuracy of each arm on the three held-out sets (no hint, hint right, hint wrong): mean over seeds, seed sd, seeds."
    plt, arms = _plt(), [k for k in ARMS if k in results]
    fig, ax = plt.subplots(figsize=(6.5, 3), layout="constrained")
    w = 0.8 / len(arms)
    for j, k in enumerate(arms):
        x = np.arange(len(SETS)) + (j - (len(arms) - 1) / 2) * w
        st = [arm_stats(results[k], f"accuracy{suffix}") for suffix, _ in SETS]
        ax.bar(x, [s["mean"] or 0 for s in st], w, yerr=[s["sd"] for s in st], capsize=2, color=COLOURS[k], label=k)
        for xi, (suffix, _) in zip(x, SETS): ax.plot([xi] * len(results[k]), [r["metrics"][f"accuracy{suffix}"] for r in results[k]], "k.", ms=2)
    ax.set_xticks(range(len(SETS)), [name for _, name in SETS]); ax.set(ylabel="accuracy", ylim=(0, 1))
    ax.legend(fontsize=8, ncols=len(arms), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return fig

def results_of(out: dict) -> dict:
    "Per arm, the per-seed metrics of a results JSON (what `markdown_table`, `verdict` and the figures read), examples on seed 0."
    return {k: [dict(seed=r["seed"], metrics=r["metrics"], **({"examples": out["examples"][k]} if i == 0 else {}))
                for i, r in enumerate(rs)] for k, rs in out["runs"].items()}

def figures(out: dict) -> dict:
    "The study's figures from its results JSON: bars, map grid, and in a world with misleading hints, conflict and zero spread."
    results = results_of(out)
    figs = dict(bars=bars_figure(results), maps=maps_figure(results, out["split"], out["settings"]["n"]))
    if "accuracy_conflict" in next(iter(results.values()))[0]["metrics"]:
        figs |= dict(conflict=conflict_figure(results), zero_spread=zero_spread_figure(out["runs"]))
    return figs

def write_figures(out: dict, path: Path):
    "Each of `figures(out)` as a small PNG next to `path` (`<stem>_<name>.png`)."
    for name, fig in figures(out).items(): save_png(fig, path.with_name(f"{path.stem}_{name}.png"), 100)

def code_fingerprint() -> str:
    "sha256[:12] of the code a run measures: this script and the saliency_r1 modules it reaches (tools/results.py's `measured`)."
    h = hashlib.sha256()
    for p in measured(os.path.relpath(__file__, ROOT)): h.update(p.encode() + (ROOT / p).read_bytes())
    return h.hexdigest()[:12]

def forget_stale(jobs: list, a: dict, cache: Path, code: str) -> int:
    """Delete the cached runs of `jobs` (and the D that an R draws on) made with other code, whose `code.txt` is not `code`
    or is missing, so that they are trained and measured again; returns how many."""
    dirs = {run_dir(cache, *j, a) for j in jobs} | {run_dir(cache, "D", s, a) for k, s in jobs if k == "R"}
    stale = [d for d in dirs if d.is_dir() and ((d / "code.txt").read_text().strip() if (d / "code.txt").exists() else None) != code]
    for d in stale: shutil.rmtree(d)
    return len(stale)

def waits_for(job: tuple[str, int], cache: Path, a: dict) -> tuple[str, int] | None:
    "R of a seed draws its rewards from D's training log of that seed: it waits for D unless that log is cached."
    arm, seed = job
    return ("D", seed) if arm == "R" and not (run_dir(cache, "D", seed, a) / "train.json").exists() else None

def finished_runs(jobs: list, a: dict, cache: Path, evals: list, workers: int):
    "Yield (arm, seed, result) as runs finish: in a pool of `workers` processes (or in this one), each R after its D."
    if workers == 1:  # in this process, without starting another; D comes before R in ARMS order within a seed
        _worker_init()
        yield from ((k, s, run_one(k, s, a, cache, evals)) for k, s in sorted(jobs, key=lambda j: (j[1], list(ARMS).index(j[0]))))
        return
    with ProcessPoolExecutor(workers, initializer=_worker_init, mp_context=get_context("spawn")) as pool:
        held = [j for j in jobs if waits_for(j, cache, a)]
        if any(waits_for(j, cache, a) not in jobs for j in held):
            raise ValueError("arm R needs arm D of the same seeds in this run (or D's cached training log): add D to --arms")
        futures = {pool.submit(run_one, *j, a, cache, evals): j for j in jobs if j not in held}
        while futures:
            f = next(as_completed(futures))
            k, s = futures.pop(f)
            yield k, s, f.result()
            for j in [j for j in held if j == ("R", s) and k == "D"]:
                held.remove(j); futures[pool.submit(run_one, *j, a, cache, evals)] = j

def plan(jobs: list, a: dict, evals: list, cache: Path, workers: int):
    "Print what the runs not yet cached will cost, from the measured cost of a GRPO step and of an evaluated question."
    todo_train = [j for j in jobs if j[0] != "A" and not (run_dir(cache, *j, a) / "train.json").exists()]
    todo_eval = sum(1 for j in jobs for split, n, d in evals if not (run_dir(cache, *j, a) / f"eval_{split}_{n}_{d}.json").exists())
    saliency = sum(1 for k, _ in todo_train if ARMS[k]["method"])
    train = (len(todo_train) * STEP_CPU_S + saliency * STEP_SALIENCY_CPU_S) * a["steps"] * a["prompts"] / 4 / 60
    evaluate = todo_eval * sum(n * (3 * QUESTION_CPU_S) + d * DELETION_CPU_S for _, n, d in evals) / len(evals) / 60
    print(f"plan: {len(todo_train)} trainings and {todo_eval} evaluations to run, about {train:.0f} + {evaluate:.0f} CPU-minutes: "
          f"{(train + evaluate) / workers:.0f} minutes on {workers} free cores", flush=True)

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
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--seeds", type=_count0, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=_count, default=300); p.add_argument("--prompts", type=_count, default=4, help="prompts per step, 8 generations each")
    p.add_argument("--lr", type=_positive, default=5e-4); p.add_argument("--beta", type=_number(float, 0.0), default=0.001, help="KL coefficient")
    p.add_argument("--temperature", type=_positive, default=1.0); p.add_argument("--saliency-weight", type=_number(float, 0.0), default=1.0)
    p.add_argument("--shortcut-rate", type=_rate, default=0.5, help="share of training questions with a hint")
    p.add_argument("--cue-reliability", type=_rate, default=0.8, help="share of training hints that name the right answer")
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
    if n := forget_stale(jobs, settings, a.cache, code := code_fingerprint()):
        print(f"{n} cached runs were made with other code (not {code}): they run again", flush=True)
    plan(jobs, settings, evals, a.cache, a.workers)
    for k, s, r in finished_runs(jobs, settings, a.cache, evals, a.workers):
        done[k, s] = r
        if not (stamp := run_dir(a.cache, k, s, settings) / "code.txt").exists(): stamp.write_text(code + "\n")
        m = r[a.split]["metrics"]
        print(f"[{(time.time() - t0) / 60:5.1f} min] {k} seed {s}: train {r.get('train_minutes', 0):.1f} min "
              f"(cpu {r.get('train_cpu_minutes', 0):.1f}), eval {r[a.split]['eval_minutes']:.1f} min, load {r[a.split]['load_average']}; "
              f"acc {m['accuracy']:.3f} / right {m['accuracy_right']:.3f} / conflict {m['accuracy_conflict']:.3f}, chain ePG {m['chain_energy_pg']:.3f} PG {m['chain_pg']:.3f}, "
              f"top ePG {m['top_token_energy_pg']:.3f} PG {m['top_token_pg']:.3f}, wander {m['wander_share']:.2f}", flush=True)
    view = lambda split: {k: [dict(seed=s, **done[k, s][split]) for s in a.seeds if (k, s) in done] for k in a.arms}
    results = view(a.split)
    runs = {k: [dict(seed=r["seed"], metrics=r["metrics"], train_minutes=done[k, r["seed"]].get("train_minutes"),
                     train_cpu_minutes=done[k, r["seed"]].get("train_cpu_minutes"), eval_minutes=r["eval_minutes"],
                     load_average=r["load_average"], curve=done[k, r["seed"]].get("curve", [])) for r in rs] for k, rs in results.items()}
    summarize = lambda res: dict(summary={k: {m: arm_stats(rs, m) for m, _, _ in ROWS if m in rs[0]["metrics"]} for k, rs in res.items()},
                                 verdicts={k: verdict(res, k) for k in ("C", "D", "E", "F") if k in res},
                                 placebo_verdict=placebo_verdict(res) if {"S", "R"} & set(res) else None)
    out = dict(**(provenance() if argv is None else provenance([__file__, *argv])), tag=a.tag, settings=settings, split=a.split, split_seeds=dict(zip(("absent", "right", "conflict"), SPLITS[a.split])),
               training_data_seed="1000 + seed", arms={k: ARMS[k]["label"] for k in a.arms}, runs=runs, **summarize(results),
               examples={k: rs[0]["examples"] for k, rs in results.items()},
               validation=({k: [dict(seed=r["seed"], metrics=r["metrics"]) for r in rs] for k, rs in view("validation").items()}
                           | summarize(view("validation"))) if len(evals) > 1 else None,
               paired=paired_comparisons(a.cache, settings, a.seeds, a.split) if {"S", "R"} & set(a.arms) else None,
               minutes_total=round((time.time() - t0) / 60, 1), compute=compute(done.values(), a.workers))
    a.out.write_text(json.dumps(out, indent=1))
    table = markdown_table(results, dict(n=a.n, deletion=a.deletion, seeds=a.seeds))
    a.out.with_suffix(".md").write_text(table + "\n")
    write_figures(out, a.out)
    print(table)
    for k, v in out["verdicts"].items():
        if v: print(f"claim for {k}: {'holds' if v['holds'] else 'does not hold'}: " +
                    ", ".join(f"{m} {d['diff']:+.3f} ({d['sigmas']} sd)" for m, d in v.items() if m != "holds"))
    if pv := out["placebo_verdict"]:
        print(f"placebo rule for D: {'holds' if pv['holds'] else 'does not hold'}: " + "; ".join(
            f"vs {c}: " + (", ".join(f"{m} {d['diff']:+.3f} ({d['sigmas']} sd)" for m, d in v.items() if m != "holds") if v else "not run")
            for c, v in pv.items() if c != "holds"))
    c = out["compute"]
    print(f"wrote {a.out} ({out['minutes_total']} min now; the {c['runs']} runs took {c['train_cpu_minutes']} CPU min of training "
          f"and {c['eval_minutes']} min of evaluation: {c['cpu_minutes_per_core']} min on {a.workers} cores)")

if __name__ == "__main__":
    main()
