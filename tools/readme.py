"""Write README.md from nbs/index.ipynb (what nbdev_readme does, without Quarto), with the results tables of every notebook
regenerated from bench/results; or check that they all agree.

    python tools/readme.py          # refresh the results blocks of nbs/*.ipynb, write README.md and its figure
    python tools/readme.py --check  # fail if a results block or README.md is out of date

Markdown cells are copied as they are; code cells become ```python blocks; cells flagged `#| hide` are left out. The
first figure among the notebook's outputs (the landing figure) is written to `FIGURE` and shown in the README under
the code that made it (the docs site shows the cell's output itself).

A results block is a stretch of a markdown cell (of any notebook: the chapters show the tables they discuss) between `<!-- results: NAME -->` and `<!-- /results -->` (HTML
comments: invisible on GitHub and on the site). `RENDERERS[NAME]` writes it from the results file it names under
bench/results (`FILES[NAME]`), so every number in those blocks comes from a file a bench script wrote. `make results`
(tools/results.py) reruns the benches whose measured code changed since their file was made, then this.
"""
import base64, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INDEX = ROOT / "nbs" / "index.ipynb"
RESULTS = ROOT / "bench" / "results"
FIGURE = Path("nbs/images/landing.png")  # relative to ROOT: the README links it from there
BLOB = "https://github.com/saliency-r1/saliency_r1/blob/main/"  # settings.ini's git_url: results files link there (the site does not publish them)
_BLOCK = re.compile(r"(<!-- results: ([\w-]+) -->\n)((?:(?!<!-- /?results)[^\n]*\n)*)(<!-- /results -->)")  # lines up to its own end marker


def _load(name: str) -> dict: return json.loads((RESULTS / f"{name}.json").read_text())


def _pair(a, b, fmt="{:.3f}", se=None) -> str:
    "'a / b' (the shipped model / its wander variant), each with ± its SE when given; '–' for a missing value."
    def one(v, s): return "–" if v is None else fmt.format(v).replace("-", "−") + (f" ± {s:.3f}" if s is not None else "")
    return f"{one(a, se[0] if se else None)} / {one(b, se[1] if se else None)}"


def _signed(v): return "{:+.3f}".format(v)


def map_quality() -> str:
    "The map table: energy-PG, pointing game and deletion AUC − random per method, shipped model / wander variant."
    d = _load("map_quality")
    sft, wander = (d["reports"][k]["summary"]["maps"] for k in ("sft", "wander"))
    names = {"chain": "**chain** (the library's default)", "cot": "cot (the paper's map, as its authors compute it)",
             "top_token": "top_token (the most-drawn thinking token's map)", "uniform": "uniform map"}
    rows = ["| map | energy pointing game | × uniform | pointing game | deletion AUC − random (± SE) |", "|---|---|---|---|---|"]
    mean = lambda s, k: s[k]["mean"]
    for m in [*d["reports"]["sft"]["methods"], "uniform"]:
        a, b = sft[m], wander[m]
        dele = ("–" if m == "uniform" else _pair(mean(a, "deletion"), mean(b, "deletion"), "{:+.3f}", (a["deletion"]["se"], b["deletion"]["se"])))
        pg = "–" if m == "uniform" else _pair(mean(a, "pointing_game"), mean(b, "pointing_game"), "{:.2f}")
        ratio = "1" if m == "uniform" else _pair(mean(a, "energy_pg") / mean(sft["uniform"], "energy_pg"),
                                                 mean(b, "energy_pg") / mean(wander["uniform"], "energy_pg"), "{:.2f}")
        cells = [names.get(m, m), _pair(mean(a, "energy_pg"), mean(b, "energy_pg")), ratio, pg, dele]
        if m == "chain": cells = [cells[0]] + [f"**{c}**" for c in cells[1:]]
        rows.append("| " + " | ".join(cells) + " |")
    acc = _pair(d["reports"]["sft"]["summary"]["accuracy"], d["reports"]["wander"]["summary"]["accuracy"])
    return (f"`{d['command']}` ({d['minutes']['total']} min wall on {d['settings']['threads']} CPU thread; "
            f"[`bench/results/map_quality.json`]({BLOB}bench/results/map_quality.json)): {d['settings']['n']} held-out questions "
            f"(seed {d['settings']['seed']}), deletion on the first {d['settings']['deletion']}; accuracy {acc}. Each cell: "
            "the shipped model / its \"wander\" variant.\n\n" + "\n".join(rows))


def map_quality_headline() -> str:
    "One sentence: the chain map against the uniform and cot maps, and its deletion result, from map_quality.json."
    d = _load("map_quality")
    s = {k: d["reports"][k]["summary"]["maps"] for k in ("sft", "wander")}
    e = lambda k, m: s[k][m]["energy_pg"]["mean"]
    dl = s["sft"]["chain"]["deletion"]
    return (f"On {d['settings']['n']} held-out questions the chain map puts **{e('sft', 'chain'):.3f}** of its mass inside the "
            f"evidence boxes ({e('wander', 'chain'):.3f} for the second shipped model), **{e('sft', 'chain') / e('sft', 'uniform'):.2f}×** "
            f"a uniform map's {e('sft', 'uniform'):.3f}; the paper's map scores {e('sft', 'cot'):.3f} / {e('wander', 'cot'):.3f}. Hiding "
            f"the chain map's top cells first lowers the model's probability of its own answer faster than a random order "
            f"(deletion AUC {dl['mean']:+.3f} ± {dl['se']:.3f} against random).").replace("-0.", "−0.")


def grpo_signal() -> str:
    "The GRPO table: before, with the chain saliency reward, and the control, from grpo_signal.json."
    d = _load("grpo_signal")
    st, cols = d["settings"], d["columns"]
    shown = ["chain_energy_pg", "chain_pointing_game", "top_token_energy_pg", "top_token_pointing_game", "accuracy", "wander_share"]
    heads = ["chain energy-PG", "chain PG", "top_token energy-PG (never rewarded)", "top_token PG", "accuracy", "wandering thoughts"]
    rows = ["| | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for name, r in d["rows"].items():
        cells = []
        for k in shown:
            i = cols.index(k)
            v, sd = r["mean"][i], (r.get("sd") or [None] * len(cols))[i]
            fmt = "{:.0%}" if k == "wander_share" else "{:.3f}"
            txt = fmt.format(v) + (" ± " + fmt.format(sd) if sd is not None else "")
            cells.append(f"**{txt}**" if name == "saliency reward" and k not in ("accuracy", "wander_share") else txt)
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    paired = lambda k: (f"{d['paired_by_seed'][k]['mean']:+.3f} ("
                        + ", ".join(f"{x:+.3f}" for x in d["paired_by_seed"][k]["per_seed"]) + ")")
    return (f"`{d['command']}` ({st['steps']} steps from the \"wander\" cold start, seeds {', '.join(map(str, st['seeds']))}, "
            f"{st['minutes_per_run'][0]}-{st['minutes_per_run'][1]} min wall per run on "
            f"{'one CPU thread' if st['threads'] == 1 else str(st['threads']) + ' CPU threads'}; {st['held_out']} held-out "
            f"questions; mean ± sd over seeds; [`bench/results/grpo_signal.json`]({BLOB}bench/results/grpo_signal.json)):\n\n"
            + "\n".join(rows) + f"\n\nPaired by seed, the saliency reward minus the control: chain energy-PG {paired('chain_energy_pg')}, "
            f"top_token energy-PG {paired('top_token_energy_pg')} (a uniform map scores {d['uniform_energy_pg']:.3f})."
            + _by_thinking_style(d.get("before", {})))


def _by_thinking_style(before: dict) -> str:
    "A sentence: the chain map's energy-PG after direct and after wandering thoughts before GRPO, or nothing (older files)."
    if "energy_pg_wandering_thoughts" not in before: return ""
    return (f" Before training, the chain map's energy-PG is {before['energy_pg_direct_thoughts']:.2f} after direct thoughts and "
            f"{before['energy_pg_wandering_thoughts']:.2f} after thoughts that wander.")


def _pct(v: float) -> str: return f"{v:.1%}"
def _spread(s: dict) -> str: return _pct(s["median"]) if s["median"] == s["max"] else f"{_pct(s['median'])} / {_pct(s['max'])}"
def _link(name: str) -> str: return f"[`bench/results/{name}.json`]({BLOB}bench/results/{name}.json)"
_FORWARD, _ARITH = "forward (A vs B)", "bf16 arithmetic too (A16 vs B)"  # bench/bf16_maps.py's keys


def bf16_maps_tiny() -> str:
    "What a bf16 forward does to each map of the shipped tiny model, from bf16_maps_tiny.json."
    d = _load("bf16_maps_tiny")
    rows = ["| map | bf16 forward (median / max) | bf16 forward and map arithmetic (median / max) | energy-PG, bf16 / float32 forward (mean / max abs. difference) |",
            "|---|---|---|---|"]
    for m, r in d["methods"].items():
        e = r["energy-PG"]
        rows.append(f"| {m} | {_spread(r[_FORWARD])} | {_spread(r[_ARITH])} | {e['A']:.3f} / {e['B']:.3f} ({e['mean_abs_diff']:.4f} / {e['max_abs_diff']:.4f}) |")
    return (f"`{d['command']}` ({_link('bf16_maps_tiny')}): the shipped tiny model in bf16 on its own completions of "
            f"{d['scenes']} scenes (seed {d['seed']}). Each map from the bf16 forward (with the library's float32 map arithmetic; "
            "then with bf16 arithmetic too) against the map from a float32 forward of the same weights: the largest difference "
            "relative to that map's peak, median / max over the scenes.\n\n" + "\n".join(rows) + _map_timings(d))


def _map_timings(d: dict) -> str:
    "A sentence: the batch's maps timed in float32 and in bf16 arithmetic (bf16_maps.py's `map_seconds`), or nothing."
    t = dict(d.get("map_seconds") or {})
    if not t: return ""
    load = t.pop("load_average", None)
    methods = dict.fromkeys(k.split()[0] for k in t)
    return ("\n\nThe maps of the whole batch from one recording take " + "; ".join(
        f"{m}: {t[m + ' float32'] * 1e3:.0f} ms with float32 arithmetic, {t[m + ' bfloat16'] * 1e3:.0f} ms with bf16" for m in methods)
        + f" ({d['threads']} CPU threads, load average {load}).")


def bf16_maps_3b() -> str:
    "Cost and precision of the maps at the Qwen2.5-VL-3B shape in bf16, from bf16_maps_3b.json."
    d = _load("bf16_maps_3b")
    forward = ", ".join(f"{_spread(r[_FORWARD])} ({m})" for m, r in d["precision"].items())
    naive = " / ".join(_pct(d["recorded_vs_naive"][m]) for m in ("chain", "cot"))
    return (f"`{d['command']}` ({_link('bf16_maps_3b')}, not in the suite): a randomly initialised model of the "
            f"Qwen2.5-VL-3B shape ({d['params'] / 1e9:.2f}B parameters, {d['model_bytes'] / 1e9:.1f} GB of bf16 weights) on "
            f"{'CPU' if d['device'] == 'cpu' else 'a GPU'}, one {d['image']} px image ({d['image_tokens']} image tokens) and "
            f"{d['thinking_tokens']} thinking tokens. The recorded generate took {d['generate_recorded_s']:.0f} s; the chain map "
            f"then {d['maps_chain_s']:.1f} s and the cot map {d['maps_cot_s']:.1f} s, from a recording of "
            f"{d['recording_bytes'] / 1e6:.0f} MB and readouts of {d['readout_bytes'] / 1e6:.0f} MB. Against a float32 forward of "
            f"the same weights the bf16 forward moves the maps by {forward} of their peak; the chain / cot maps are within "
            f"{naive} of the naive path's (one eager forward with `output_attentions`).")


def bf16_maps_3b_costs() -> str:
    "What recording, the maps and the naive path cost at the Qwen2.5-VL-3B shape, row by row, from bf16_maps_3b.json."
    d = _load("bf16_maps_3b")
    gib = lambda k: f"{d[k]:.2f} GiB"
    rows = ["| what | measured |", "|---|---|",
            f"| model weights (bf16) | {d['model_bytes'] / 1e9:.2f} GB; peak memory after building {gib('peak_after_build_gb')} |",
            f"| recorded `generate` (prefill + {d['new_tokens']} steps, {d['threads']} threads) | {d['generate_recorded_s']:.0f} s; peak {gib('peak_after_generate_gb')} |",
            f"| recording kept (query rows from $P-1$ on, norms) | {d['recording_bytes'] / 1e6:.1f} MB |",
            f"| head readouts of the batch ($4 \\cdot L \\cdot V \\cdot d_{{model}}$ bytes, $V$ distinct token ids) | {d['readout_bytes'] / 1e6:.1f} MB |",
            f"| \"chain\" maps / \"cot\" maps after it | {d['maps_chain_s']:.2f} s / {d['maps_cot_s']:.2f} s |",
            f"| peak memory after the maps | {gib('peak_after_maps_gb')} (+{d['peak_after_maps_gb'] - d['peak_after_generate_gb']:.2f} GiB over generation: readouts, one float32 `o_proj`, the attention block) |",
            f"| the naive path: one eager forward with `output_attentions`, then the same maps | {d['naive_forward_and_maps_s']:.0f} s (vision features reused), "
            f"{d['naive_attention_bytes'] / 1e6:.0f} MB of attention |",
            f"| recorded maps against the naive path's | {_pct(d['recorded_vs_naive']['chain'])} (chain), {_pct(d['recorded_vs_naive']['cot'])} (cot) of the peak |",
            f"| the whole script (build, recorded run, naive path, the float32 forward of the precision check) | "
            f"{d['total_s'] / 60:.1f} min wall, {d['total_cpu_s'] / 60:.1f} CPU min |",
            "| the bf16 forward's maps against a float32 forward of the same weights (largest difference / peak) | "
            + ", ".join(f"{_spread(r[_FORWARD])} ({m})" for m, r in d["precision"].items()) + "; with bf16 map arithmetic too: "
            + ", ".join(f"{_spread(r[_ARITH])}" for r in d["precision"].values()) + " |"]
    return (f"`{d['command']}` ({_link('bf16_maps_3b')}): {d['params'] / 1e9:.2f} B parameters, one {d['image']} px image "
            f"({d['image_tokens']} image tokens, a {d['prompt_tokens']}-token prompt), {d['new_tokens']} new tokens of which "
            f"{d['thinking_tokens']} thinking, on {'CPU' if d['device'] == 'cpu' else 'a GPU'}:\n\n" + "\n".join(rows))


def _zero_spread(runs: list, last: int = 50) -> float:
    "Mean over seeds of the share of GRPO groups with zero reward spread over the last `last` logged steps."
    logs = [[c["frac_reward_zero_std"] for c in r["curve"][-last:] if "frac_reward_zero_std" in c] for r in runs]
    return sum(sum(l) / len(l) for l in logs if l) / max(1, sum(1 for l in logs if l))

def placebo() -> str:
    "The placebo study: per arm, accuracy on the three hint sets, top-token energy-PG, zero-spread share; the rule's verdict."
    d = _load("placebo")
    st, s, v = d["settings"], d["summary"], d["placebo_verdict"]
    cols = [("accuracy", "accuracy, no hint"), ("accuracy_right", "hint right"), ("accuracy_conflict", "**hint wrong**"),
            ("top_token_energy_pg", "top-token energy-PG (never rewarded)")]
    rows = ["| arm | " + " | ".join(h for _, h in cols) + " | groups with zero reward spread |", "|---|" + "---|" * (len(cols) + 1)]
    cell = lambda x: f"{x['mean']:.3f}" + (f" ± {x['sd']:.3f}" if x["n"] > 1 else "")
    for arm, label in d["arms"].items():
        spread = f"{_zero_spread(d['runs'][arm]):.2f}" if arm != "A" else "–"
        rows.append(f"| {arm}: {label} | " + " | ".join(cell(s[arm][k]) for k, _ in cols) + f" | {spread} |")
    seeds = len(d["runs"]["B"])
    return (f"`{d['command']}` ({st['steps']} GRPO steps from the \"wander\" cold start; training hints on "
            f"{st['shortcut_rate']:.0%} of questions, right {st['cue_reliability']:.0%} of the time; {seeds} seeds; "
            f"{st['n']} held-out questions per set; mean ± seed sd; {_link('placebo')}). By the rule fixed before the run "
            f"(D beats B and both placebos on hint-wrong accuracy and top-token energy-PG by more than two seed sd of a "
            f"difference) the claim **{'holds' if v['holds'] else 'does not hold'}**:\n\n" + "\n".join(rows))


def families() -> str:
    "The trained tiny models of each family: accuracy, blank-image control, chain energy-PG against the uniform map (families.json)."
    d = _load("families")
    rows = ["| family | trained from scratch | accuracy | blank image (chance) | chain energy-PG | uniform map | × uniform | same maps, rectangles shuffled |",
            "|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        m = r["maps"]
        rows.append(f"| `{r['arch']}` | {r['training_steps']} steps, {r['training_minutes']:.0f} min | {_pct(r['accuracy'])} | "
                    f"{_pct(r['blank_accuracy'])} ({_pct(r['chance'])}) | {m['chain']['energy_pg']:.3f} | {m['uniform']['energy_pg']:.3f} | "
                    f"**{r['chain_ratio']:.2f}×** | {m['chain']['energy_pg_shuffled_rectangles']:.3f} |")
    st = d["settings"]
    return (f"`{d['command']}` ({_link('families')}): {st['n']} held-out questions (seed {st['seed']}), maps scored over each image "
            f"token's rectangle of the image; target for the new families: {d['target']}× the uniform map.\n\n" + "\n".join(rows))


RENDERERS = {"map_quality": map_quality, "map_quality_headline": map_quality_headline, "grpo_signal": grpo_signal,
             "bf16_maps_tiny": bf16_maps_tiny, "bf16_maps_3b": bf16_maps_3b, "bf16_maps_3b_costs": bf16_maps_3b_costs,
             "placebo": placebo, "families": families}
FILES = {name: name for name in RENDERERS} | {"map_quality_headline": "map_quality", "bf16_maps_3b_costs": "bf16_maps_3b"}  # block -> its file


def refresh(text: str) -> str:
    "`text` with every results block rewritten by its renderer."
    def fill(m):
        if m.group(2) not in RENDERERS: raise SystemExit(f"unknown results block {m.group(2)!r}: one of {sorted(RENDERERS)}")
        return m.group(1) + RENDERERS[m.group(2)]() + "\n" + m.group(4)
    return _BLOCK.sub(fill, text)


def refresh_notebook(nb_path: Path = INDEX, write: bool = True) -> list[str]:
    "Refresh the results blocks of `nb_path`'s markdown cells (written back when `write`); the names of stale blocks."
    nb = json.loads(nb_path.read_text())
    stale = []
    for c in nb["cells"]:
        if c["cell_type"] != "markdown": continue
        src = "".join(c["source"])
        new = refresh(src)
        if new != src:
            stale += [m.group(2) for m, n in zip(_BLOCK.finditer(src), _BLOCK.finditer(new)) if m.group(0) != n.group(0)]
            lines = new.split("\n"); c["source"] = [l + "\n" for l in lines[:-1]] + [lines[-1]]
    if stale and write: nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return stale


def figure(nb_path: Path = INDEX) -> bytes | None:
    "The PNG bytes of the notebook's first figure output, if any."
    for c in json.loads(nb_path.read_text())["cells"]:
        for o in c.get("outputs", []):
            png = o.get("data", {}).get("image/png")
            if png: return base64.b64decode(png if isinstance(png, str) else "".join(png))
    return None


def render(nb_path=INDEX) -> str:
    cells = json.loads(Path(nb_path).read_text())["cells"]
    parts, shown = [], False
    for c in cells:
        src = "".join(c["source"]).strip()
        if not src or src.startswith("#| hide") or "#| hide" in src.splitlines()[0:3]: continue
        if c["cell_type"] == "markdown": parts.append(src)
        elif c["cell_type"] == "code":
            lines = [l for l in src.splitlines() if not l.startswith("#|")]
            if lines: parts.append("```python\n" + "\n".join(lines) + "\n```")
            if not shown and any("image/png" in o.get("data", {}) for o in c.get("outputs", [])):
                parts.append(f"![What the code above draws: the thinking shaded by how much the answer draws on each token, the "
                             f"maps of the heaviest tokens and the answer map, over the image with its evidence box]({FIGURE.as_posix()})")
                shown = True
    return ("<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, then run "
            "`python tools/readme.py`. -->\n\n" + "\n\n".join(parts) + "\n")


def notebooks() -> list[Path]:
    "Every notebook of nbs/: the landing page and the chapters may all hold results blocks."
    return sorted(INDEX.parent.glob("*.ipynb"))


def refresh_all(write: bool = True) -> dict:
    "Refresh the results blocks of every notebook (`refresh_notebook`); {notebook name: its stale blocks} for those that had any."
    return {nb.name: stale for nb in notebooks() if (stale := refresh_notebook(nb, write))}


if __name__ == "__main__":
    readme = ROOT / "README.md"
    if "--check" in sys.argv:
        stale = refresh_all(write=False)
        if stale: raise SystemExit(f"results blocks differ from bench/results: {stale}; run `python tools/readme.py`")
        if readme.read_text() != render(): raise SystemExit("README.md differs from nbs/index.ipynb: run `python tools/readme.py`")
        png = figure()
        if png is not None and (not (ROOT / FIGURE).exists() or (ROOT / FIGURE).read_bytes() != png):
            raise SystemExit(f"{FIGURE} differs from nbs/index.ipynb's figure: run `python tools/readme.py`")
        print("README.md, its figure and the results blocks agree with nbs/index.ipynb and bench/results")
    else:
        for name, blocks in refresh_all().items(): print(f"refreshed results blocks in nbs/{name}: {', '.join(blocks)}")
        png = figure()
        if png is not None: (ROOT / FIGURE).parent.mkdir(parents=True, exist_ok=True); (ROOT / FIGURE).write_bytes(png)
        readme.write_text(render()); print(f"wrote {readme}" + (f" and {FIGURE}" if png is not None else ""))
