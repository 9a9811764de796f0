"""Benchmark: where each saliency method's answer map points, on both shipped tiny checkpoints (issue 9, item 4).

For `pretrained_tiny()` and `pretrained_tiny(variant="wander")`, on 300 held-out synthetic questions
(`make_shapes_dataset(300, seed=4242)`, greedy, 64 new tokens), every method of `saliency_r1.saliency.METHODS` is
scored by `saliency_r1.evaluate.evaluate` on the same completions (one generation per checkpoint): energy pointing
game and pointing game against the evidence boxes, next to a uniform map on the same examples, overall and per
question template; and, on the first 60 examples with a valid completion, deletion and insertion AUC minus the AUC of
a seeded random ranking of the cells (paired by example, ± one standard error).

Targets (issue 9): the chain map's energy-PG at least 1.6x the uniform map's on both checkpoints, and its deletion
AUC below the random control by more than 3 SE.

    python bench/map_quality.py [--n 300] [--deletion 60] [--threads 1] [--out bench/results/map_quality.json]

Prints markdown tables and the minutes taken; writes the JSON (its provenance: tools/results.py's `provenance`, the
command, versions, commit and hashes of uncommitted files as the run starts, which `make results` reads to tell when the
file is stale; settings, targets, both reports' summaries overall and per template; the per-example records stay in
memory, `EvalReport.records`, to keep the file small). One torch thread
by default: on 2 cores shared with other work, two threads whose parallel regions wait on each other made evaluation
about ten times slower.

Measured (one thread, 2 cores busy with other work, 5.3 minutes): chain energy-PG 0.357 / 0.342 against 0.203 for the
uniform map (1.76x / 1.68x), pointing game 0.60 / 0.57, deletion AUC 0.089 ± 0.016 / 0.074 ± 0.013 below the random
ranking (5.7 / 5.6 SE); cot 0.146 / 0.170, direct 0.149 / 0.125; count, exists and relation questions at or near the
uniform map. Insertion barely moves for any method (within ± 0.004 of random).
"""
import os, argparse, json, sys, time
from pathlib import Path

import torch

from saliency_r1.data import make_shapes_dataset
from saliency_r1.evaluate import evaluate
from saliency_r1.models import pretrained_tiny
from saliency_r1.saliency import METHODS

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from results import provenance  # the command, versions, commit and uncommitted files a results file stores

CHECKPOINTS = {"sft": None, "wander": "wander"}  # label -> pretrained_tiny variant

def cell(stats: list, key: str, digits: int = 3, signed: bool = False, se: bool = False) -> str:
    "One table cell: the checkpoints' values of `key` separated by ' / ' (with ± SE if asked)."
    out = []
    for st in stats:
        s = st[key]
        if s.n == 0: out.append("–"); continue
        v = f"{s.mean:+.{digits}f}" if signed else f"{s.mean:.{digits}f}"
        out.append(f"{v} ± {s.se:.{digits}f}" if se else v)
    return " / ".join(out)

def table(reports: dict) -> str:
    "Methods × metrics, each cell 'sft / wander', the uniform map last."
    sums = [r.summary()["maps"] for r in reports.values()]
    rows = ["| method | energy-PG | × uniform | pointing game | deletion AUC − random AUC (± SE) | insertion AUC − random AUC (± SE) |",
            "|---|---|---|---|---|---|"]
    for m in (*METHODS, "uniform"):
        st = [s[m] for s in sums]
        ratio = " / ".join(f"{a['energy_pg'].mean / s['uniform']['energy_pg'].mean:.2f}" for a, s in zip(st, sums))
        rows.append(f"| {m} | {cell(st, 'energy_pg')} | {ratio} | {cell(st, 'pointing_game', 2)} | "
                    f"{cell(st, 'deletion', signed=True, se=True)} | {cell(st, 'insertion', signed=True, se=True)} |")
    return "\n".join(rows)

def template_table(reports: dict) -> str:
    "Energy-PG per template (rows: methods and the uniform map; cells 'sft / wander'), with accuracy."
    r0 = next(iter(reports.values()))
    ts = r0.templates
    by = {t: [r.summary(t) for r in reports.values()] for t in ts}
    rows = ["| energy-PG | " + " | ".join(ts) + " |", "|---|" + "---|" * len(ts),
            "| accuracy | " + " | ".join(" / ".join(f"{s['accuracy']:.0%}" for s in by[t]) for t in ts) + " |"]
    for m in (*METHODS, "uniform"):
        rows.append(f"| {m} | " + " | ".join(cell([s["maps"][m] for s in by[t]], "energy_pg") for t in ts) + " |")
    return "\n".join(rows)

def targets(reports: dict) -> dict:
    "Issue 9's targets for the chain map, per checkpoint."
    out = {}
    for name, r in reports.items():
        s = r.summary()["maps"]
        ratio, d = s["chain"]["energy_pg"].mean / s["uniform"]["energy_pg"].mean, s["chain"]["deletion"]
        out[name] = dict(energy_pg_ratio=round(ratio, 3), energy_pg_target_met=bool(ratio >= 1.6),
                         deletion_se_below_random=round(-d.mean / d.se, 2), deletion_target_met=bool(-d.mean > 3 * d.se))
    return out

def stored(report) -> dict:
    "An EvalReport as this file stores it: without per-question records, the model's path relative to the repository."
    d = {f: v for f, v in json.loads(report.to_json()).items() if f != "records"}
    if (m := Path(d["info"].get("model") or "")).is_absolute() and m.is_relative_to(ROOT): d["info"]["model"] = os.path.relpath(m, ROOT)
    return d

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=300); p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--deletion", type=int, default=60, help="examples with deletion/insertion curves (the first valid ones)")
    p.add_argument("--max-new-tokens", type=int, default=64); p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "map_quality.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    prov = provenance()  # the code as the run starts
    t0 = time.time()
    data = make_shapes_dataset(a.n, seed=a.seed)
    reports, minutes = {}, {}
    for name, variant in CHECKPOINTS.items():
        t = time.time()
        model, processor = pretrained_tiny(variant=variant)
        reports[name] = evaluate(model, processor, data, methods=METHODS, deletion=a.deletion, max_new_tokens=a.max_new_tokens,
                                 seed=0, progress=True)
        minutes[name] = round((time.time() - t) / 60, 2)
        print(f"pretrained_tiny(variant={variant!r}): {minutes[name]} min", flush=True)
    total = round((time.time() - t0) / 60, 2)
    s = {k: r.summary() for k, r in reports.items()}
    print(f"\n## Map quality on {a.n} held-out questions (seed {a.seed}), pretrained_tiny() / variant 'wander'\n")
    print("accuracy " + " / ".join(f"{x['accuracy']:.1%}" for x in s.values()) + ", valid format "
          + " / ".join(f"{x['valid_rate']:.1%}" for x in s.values()) + f"; deletion and insertion on the first {a.deletion} valid examples\n")
    print(table(reports))
    print("\n### Energy-PG per question template\n")
    print(template_table(reports))
    tg = targets(reports)
    print("\ntargets (chain): " + "; ".join(f"{k}: energy-PG {v['energy_pg_ratio']:.2f}x uniform ({'met' if v['energy_pg_target_met'] else 'NOT met'}, "
                                        f"target 1.6x), deletion {v['deletion_se_below_random']:.1f} SE below random "
                                        f"({'met' if v['deletion_target_met'] else 'NOT met'}, target 3)" for k, v in tg.items()))
    print(f"\ntotal {total} minutes on {a.threads} thread(s) ({minutes})")
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    result = prov | dict(settings=dict(vars(a), out=os.path.relpath(out.resolve(), ROOT)), minutes=dict(minutes, total=total), targets=tg,
                         reports={k: stored(r) for k, r in reports.items()})
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")

if __name__ == "__main__":
    main()
