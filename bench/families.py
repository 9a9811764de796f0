"""Benchmark: are the adapters' token layouts right? Tiny models of more families, trained on the synthetic world (issue 21).

A wrong token-to-region mapping (which image token covers which pixels) cannot be seen in a map's exactness tests: the
map is computed right and drawn in the wrong place. It shows up when a model that has learned to use the image is
explained: its chain map then points at the evidence no better than a uniform map. So tiny models of two more
families, one of them tiled, are trained from scratch on the synthetic world exactly as the shipped Qwen2.5-VL one was
(`saliency-r1 sft`, two stages, bench/sft_tiny.py), shipped as `pretrained_tiny(arch)`, and scored here beside it.

For each family, on 300 held-out questions (`make_shapes_dataset(300, seed=4242)`, greedy, 64 new tokens):
accuracy and format rate, the blank-image control against chance, and the `chain` and `top_token` maps' energy
pointing game and pointing game next to the uniform map on the same examples (`saliency_r1.evaluate.evaluate`, maps
scored over each token's image rectangle); deletion AUC minus a seeded random ranking on the first 60 valid examples;
and the chain maps scored once more with their values moved to a seeded permutation of the tokens' rectangles, the
score a wrong layout would get.

Target (issue 21): chain energy-PG at least 1.5x the uniform map's for each newly trained family.

    python bench/families.py [--archs gemma3 llava_onevision qwen2_5_vl] [--n 300] [--out bench/results/families.json]
    python bench/families.py --train gemma3 --minutes 75 --work runs/families   # train one family first (~80 min), then ship it

`--train` runs the shipped two-stage recipe with `--arch ARCH` (stage 1 from scratch for `--minutes`, stage 2 at lr
3e-4 for 4.5 minutes), writes training_info.json with both stages and copies the result to
`saliency_r1/checkpoints/tiny-ARCH`. Stores `provenance()` (tools/results.py) as every README bench does, and the table beside the JSON (families.md).
"""
import os, argparse, json, shutil, subprocess, sys, time
from pathlib import Path

import numpy as np
import torch

from saliency_r1.data import make_shapes_dataset
from saliency_r1.evaluate import evaluate
from saliency_r1.metrics import energy_pointing_game
from saliency_r1.models import CHECKPOINTS, pretrained_tiny

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from results import provenance  # the command, versions, commit and uncommitted files a results file stores
from sft_tiny import stage_commands  # the shipped two-stage recipe (bench/ is this script's folder, first on sys.path)

METHODS = ("chain", "top_token")
TARGET = 1.5

def ship(arch: str, work: Path, env: str) -> Path:
    "Copy stage 2 of `work` to the package's checkpoints with one training_info.json listing both stages."
    stages = [json.loads((work / s / "training_info.json").read_text()) | {"env": env} for s in ("stage1", "stage2")]
    for s in stages: s["command"] = s["command"].replace(str(work), f"runs/tiny-{arch}")
    info = dict(stages=stages, total_minutes=round(sum(s["minutes"] for s in stages), 2), total_steps=sum(s["steps"] for s in stages),
                note="stage 1 trains from scratch (cosine over its minutes, lr 2e-3); stage 2 continues at lr 3e-4 for 4.5 min (--init)")
    dest = CHECKPOINTS / f"tiny-{arch}"
    if dest.exists(): shutil.rmtree(dest)
    shutil.copytree(work / "stage2", dest, ignore=shutil.ignore_patterns("checkpoint-*", "training_args.bin"))
    (dest / "training_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return dest

def train(arch: str, work: Path, minutes: float) -> Path:
    "Train `arch` from scratch in `work` with the two stages, then ship it."
    for cmd in stage_commands(work, minutes, arch=arch):
        print("training:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return ship(arch, work, f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")

def shuffled_rectangles(report, boxes: list, seed: int = 0) -> float:
    "Mean chain energy-PG with each map's values moved to other image tokens' rectangles (a seeded permutation): a wrong layout's score."
    rng, out = np.random.default_rng(seed), []
    for e, b in zip(report.explanations["chain"], boxes):
        if not e.valid: continue
        m = e.answer_map.ravel()[rng.permutation(e.answer_map.size)].reshape(e.answer_map.shape)
        out.append(energy_pointing_game(m, b, None if e.grid is not None else e.token_boxes))
    return float(np.mean(out))

def row(arch: str, report, boxes: list) -> dict:
    "One family's numbers: accuracy, blank control, maps against the uniform map and against shuffled token rectangles."
    s = report.summary()
    maps = {m: {k: s["maps"][m][k].mean for k in ("energy_pg", "pointing_game")} for m in (*METHODS, "uniform")}
    for m in METHODS: maps[m]["deletion"], maps[m]["deletion_se"] = s["maps"][m]["deletion"].mean, s["maps"][m]["deletion"].se
    ratio = maps["chain"]["energy_pg"] / maps["uniform"]["energy_pg"]
    maps["chain"]["energy_pg_shuffled_rectangles"] = shuffled_rectangles(report, boxes)
    info = json.loads((CHECKPOINTS / f"tiny-{arch}" / "training_info.json").read_text())
    return dict(arch=arch, accuracy=s["accuracy"], format_rate=s["format_rate"], blank_accuracy=s["blank_accuracy"], chance=s["chance"],
                valid=s["valid_rate"], maps=maps, chain_ratio=round(ratio, 3), target_met=bool(ratio >= TARGET),
                training_minutes=info.get("total_minutes"), training_steps=info.get("total_steps"))

def table(rows: list[dict]) -> str:
    "Markdown: one row per family."
    out = ["| family | trained | accuracy | blank image (chance) | chain energy-PG | uniform | × uniform | shuffled rectangles | top_token energy-PG | chain pointing game | chain deletion − random (± SE) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["maps"]
        out.append(f"| {r['arch']} | {r['training_steps']} steps, {r['training_minutes']:.0f} min | {r['accuracy']:.1%} | {r['blank_accuracy']:.1%} ({r['chance']:.1%}) | "
                   f"{m['chain']['energy_pg']:.3f} | {m['uniform']['energy_pg']:.3f} | **{r['chain_ratio']:.2f}×** | {m['chain']['energy_pg_shuffled_rectangles']:.3f} | "
                   f"{m['top_token']['energy_pg']:.3f} | "
                   f"{m['chain']['pointing_game']:.2f} | {m['chain']['deletion']:+.3f} ± {m['chain']['deletion_se']:.3f} |")
    return "\n".join(out)

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=["gemma3", "llava_onevision", "qwen2_5_vl"], help="shipped tiny models to score")
    p.add_argument("--n", type=int, default=300); p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--deletion", type=int, default=60); p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train", default=None, metavar="ARCH", help="train this family from scratch and ship it, then score")
    p.add_argument("--minutes", type=float, default=75, help="--train: stage 1's budget")
    p.add_argument("--work", default="runs/families", help="--train: folder of the stages")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "families.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.train: print("shipped", train(a.train, Path(a.work) / a.train, a.minutes), flush=True)
    prov = provenance()
    data, rows, minutes = make_shapes_dataset(a.n, seed=a.seed), [], {}
    for arch in a.archs:
        t = time.time()
        model, processor = pretrained_tiny(arch)
        report = evaluate(model, processor, data, methods=METHODS, deletion=a.deletion, max_new_tokens=a.max_new_tokens, seed=0)
        rows.append(row(arch, report, data["bbox"]))
        minutes[arch] = round((time.time() - t) / 60, 2)
        print(f"{arch}: {minutes[arch]} min, chain {rows[-1]['chain_ratio']:.2f}x uniform", flush=True)
    print(f"\n## Tiny models of each family on {a.n} held-out questions (seed {a.seed})\n\n{table(rows)}\n")
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(table(rows) + "\n")   # the table 04c shows
    new = [r for r in rows if r["arch"] != "qwen2_5_vl"]
    print("target (chain energy-PG >= 1.5x uniform): " + "; ".join(f"{r['arch']} {r['chain_ratio']:.2f}x ({'met' if r['target_met'] else 'NOT met'})" for r in new))
    result = prov | dict(settings=dict(vars(a), out=os.path.relpath(out.resolve(), ROOT)), target=TARGET, minutes=minutes, rows=rows)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")

if __name__ == "__main__":
    main()
