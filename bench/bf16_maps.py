"""How precise a bfloat16 map is, and where its error comes from (issue 22); the Qwen2.5-VL-3B shape on this CPU (issue 17).

Three maps of the same completion, per method ("chain", "cot", "direct", "top_token"):

  A   the bf16 model's forward, recorded; the map arithmetic in float32 (the library's default, `map_dtype=torch.float32`)
  A16 the same recording, the map arithmetic in bfloat16 (`map_dtype=torch.bfloat16`)
  B   a float32 forward of the *same* (bf16-rounded) weights, recorded; float32 arithmetic

A against B is the error a bf16 forward leaves in the map (what a user training in bf16 sees); A16 against B adds what
bf16 arithmetic would; A against a float32 computation from A's own recording upcast is the map arithmetic's own error
(tests/test_precision.py asserts it is below 1e-5). The float32 forward casts the vision tower for the whole forward and
the embeddings, each decoder layer, the final norm and lm_head one at a time, so the 3B shape fits in memory.

    python bench/bf16_maps.py --tiny     # the shipped tiny model in bf16, 24 scenes (seed 2024), about a minute; and what the
                                         # chain and cot maps of the batch take in float32 and in bf16 arithmetic
    python bench/bf16_maps.py --3b [--device cuda]  # a random-init Qwen2.5-VL-3B-shaped model, batch 1, 448 px, 128 thinking tokens:
                                         # generate time, map time, memory, maps against the naive eager path (~12 min here)
Writes bench/results/bf16_maps_{tiny,3b}.json, each with its provenance (tools/results.py's `provenance`: the command,
versions, commit and hashes of uncommitted files, taken when the run starts), which `make results` reads to tell when
the file is stale; the README's bf16 tables are rendered from them by tools/readme.py.
"""
from __future__ import annotations
import argparse, contextlib, copy, json, os, resource, statistics, sys, time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from results import provenance  # the command, versions, commit and uncommitted files a results file stores
from saliency_overhead import build, forcing, naive_maps, scripted_completions  # the overhead benchmark's model and scripts

from saliency_r1.data import make_shapes_dataset
from saliency_r1.metrics import energy_pointing_game
from saliency_r1.models import pretrained_tiny, prepare_inputs
from saliency_r1.adapters import adapter_for
from saliency_r1.saliency import explain_batch, record_saliency, teacher_forced_inputs

METHODS = ("chain", "cot", "direct", "top_token")
RESULTS = Path(__file__).parent / "results"


@contextlib.contextmanager
def float32_forward(model):
    """Run `model` with float32 weights: the vision tower for the whole context (the model casts the pixels to its
    dtype before calling it), the embeddings, each decoder layer, the final norm and lm_head one at a time, around
    their own forward; the bf16 weights are put back after each."""
    ad = adapter_for(model)
    kept = {}
    def up(module, args=None):
        kept[module] = [(p, p.data) for p in module.parameters()]
        for p, d in kept[module]: p.data = d.float()
    def down(module, args=None, out=None):
        for p, d in kept.pop(module): p.data = d
    blocks = [ad.text.embed_tokens, *ad.text.layers, ad.final_norm, ad.model.lm_head]
    hooks = [h for b in blocks for h in (b.register_forward_pre_hook(up), b.register_forward_hook(down))]
    up(ad.vision)
    try: yield
    finally:
        down(ad.vision)
        for h in hooks: h.remove()


def rel(a: np.ndarray, b: np.ndarray) -> float:
    "max |a − b| relative to b's peak."
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def forced_maps(model, processor, inputs, ids, method, map_dtype=torch.float32):
    "Explanations of the completions `ids` (B, N) from one teacher-forced forward."
    return forced(model, processor, inputs, ids, (method,), map_dtype)[method][0]


def forced(model, processor, inputs, ids, methods=METHODS, *dtypes) -> dict:
    "{method: [explanations in each of `dtypes` (default float32)]} of the completions `ids` from one teacher-forced forward."
    P = inputs["input_ids"].shape[1]
    with torch.no_grad(), record_saliency(model, prompt_length=P) as rec:
        model(**teacher_forced_inputs(inputs, ids, torch.ones_like(ids)), use_cache=False)
    return from_recording(rec, ids, processor, methods, *dtypes)


def from_recording(rec, ids, processor, methods=METHODS, *dtypes) -> dict:
    with torch.no_grad(): return {m: [explain_batch(rec, ids, processor, m, map_dtype=d) for d in dtypes or (torch.float32,)] for m in methods}


def summary(values: list[float]) -> dict:
    return dict(median=float(statistics.median(values)), max=float(max(values)))


def compare(a_maps: dict, b_maps: dict, boxes=None) -> dict:
    """Per method: A (float32 arithmetic) and A16 (bf16 arithmetic) of a bf16 forward against B (a float32 forward of the
    same weights): median and max over examples of the difference relative to B's peak; energy-PG of A and B."""
    out = {}
    for method, (a, a16) in a_maps.items():
        b = b_maps[method][0]
        ok = [i for i, e in enumerate(b) if e.valid and np.abs(e.answer_map).max() > 0]
        row = {"forward (A vs B)": summary([rel(a[i].answer_map, b[i].answer_map) for i in ok]),
               "bf16 arithmetic too (A16 vs B)": summary([rel(a16[i].answer_map, b[i].answer_map) for i in ok])}
        if boxes is not None:
            ea, eb = ([energy_pointing_game(x[i].answer_map, boxes[i]) for i in ok] for x in (a, b))
            diff = np.abs(np.subtract(ea, eb))
            row["energy-PG"] = dict(A=float(np.mean(ea)), B=float(np.mean(eb)), mean_abs_diff=float(diff.mean()), max_abs_diff=float(diff.max()))
        out[method] = row
        f, t = row["forward (A vs B)"], row["bf16 arithmetic too (A16 vs B)"]
        print(f"{method:<10} A vs B: median {f['median']:.1e}, max {f['max']:.1e}; A16 vs B: median {t['median']:.1e}, max {t['max']:.1e}"
              + (f"; energy-PG A {row['energy-PG']['A']:.3f} B {row['energy-PG']['B']:.3f} (mean |Δ| {row['energy-PG']['mean_abs_diff']:.4f})"
                 if boxes is not None else ""))
    return out


def map_seconds(model, processor, inputs, ids, methods=("chain", "cot"), repeats: int = 5) -> dict:
    "{'METHOD DTYPE': median wall seconds over `repeats`} of one method's maps of the whole batch from one recording, with float32 and bf16 arithmetic."
    P = inputs["input_ids"].shape[1]
    with torch.no_grad(), record_saliency(model, prompt_length=P) as rec:
        model(**teacher_forced_inputs(inputs, ids, torch.ones_like(ids)), use_cache=False)
    out = {}
    for m in methods:
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            seconds = []
            for _ in range(repeats):
                t = time.perf_counter(); from_recording(rec, ids, processor, (m,), dtype); seconds.append(time.perf_counter() - t)
            out[f"{m} {name}"] = statistics.median(seconds)
    print("maps of the batch from one recording: " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in out.items()))
    return out | {"load_average": round(os.getloadavg()[0], 2)}  # above the threads used, the machine was shared


def tiny(args, prov: dict):
    """The shipped tiny model in bf16 against a float32 forward of its bf16 weights, on 24 scenes; checks the per-block float32
    forward too. `prov`: the provenance stored in the results file."""
    model, processor = pretrained_tiny(dtype=torch.bfloat16)
    rows = make_shapes_dataset(args.scenes, seed=2024)
    inputs = prepare_inputs(processor, list(rows["image"]), list(rows["problem"]))
    P = inputs["input_ids"].shape[1]
    with torch.no_grad(): ids = model.generate(**inputs, do_sample=False, max_new_tokens=64)[:, P:]  # padded after end of turn
    twin = copy.deepcopy(model).float()  # the same weights in float32: the per-block float32 forward must give its maps
    with float32_forward(model): per_block = forced_maps(model, processor, inputs, ids, "chain")
    check = max(rel(x.answer_map, y.answer_map) for x, y in zip(per_block, forced_maps(twin, processor, inputs, ids, "chain")) if y.valid)
    print(f"tiny model, bf16, {args.scenes} scenes: per-block float32 forward vs a float32 copy: {check:.1e}")
    a = forced(model, processor, inputs, ids, METHODS, torch.float32, torch.bfloat16)
    with float32_forward(model): b = forced(model, processor, inputs, ids)
    result = prov | dict(scenes=args.scenes, seed=2024, threads=args.threads, per_block_float32_check=check,
                         methods=compare(a, b, [r["bbox"] for r in rows]), map_seconds=map_seconds(model, processor, inputs, ids))
    (RESULTS / "bf16_maps_tiny.json").write_text(json.dumps(result, indent=1) + "\n")


def peak_gb() -> float:
    "Peak resident memory of this process so far, GiB (on a GPU: peak allocated device memory)."
    if torch.cuda.is_available() and torch.cuda.is_initialized(): return torch.cuda.max_memory_allocated() / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


@contextlib.contextmanager
def cached_vision(vision):
    "Within the context `vision` returns what it returned the first time (the same pixels: the same bf16 features), without recomputing."
    saved = {}
    def keep(module, args, out):
        if not saved: saved.update(cls=type(out), last_hidden_state=out.last_hidden_state, pooler_output=out.pooler_output)
    hook = vision.register_forward_hook(keep)
    try: yield lambda: setattr(vision, "forward", lambda *a, **k: saved["cls"](last_hidden_state=saved["last_hidden_state"],
                                                                             pooler_output=saved["pooler_output"]))
    finally: hook.remove(); vision.__dict__.pop("forward", None)


def naive_forced(model, inputs, ids, tok) -> dict:
    "The naive path on the same completion: one eager teacher-forced forward with output_attentions, then the chain and cot maps."
    P, ad = inputs["input_ids"].shape[1], adapter_for(model)
    model.set_attn_implementation({"text_config": "eager"})
    norm = []
    hook = ad.final_norm.register_forward_hook(lambda m, a, o: norm.append(torch.rsqrt(a[0].float().pow(2).mean(-1) + m.variance_epsilon)))
    try: out = model(**teacher_forced_inputs(inputs, ids, torch.ones_like(ids)), output_attentions=True, use_cache=True)
    finally: hook.remove(); model.set_attn_implementation({"text_config": "sdpa"})
    # as generate would hand them over: per layer one "step" whose rows are the queries from P-1 on
    steps = [tuple(a[:, :, q:q + 1] for a in out.attentions) for q in range(P - 1, out.attentions[0].shape[2] - 1)]
    gen = type("Out", (), dict(attentions=steps, cache=out.cache, sequences=torch.cat([inputs["input_ids"], ids], 1)))
    maps = naive_maps(model, gen, P, tok, {tok.eos_token_id, tok.pad_token_id}, norm[0][:, P - 1:])
    return maps, sum(a.numel() * a.element_size() for a in out.attentions)


def shape_3b(args, prov: dict):
    "Generate, record and map at the Qwen2.5-VL-3B shape in bf16 (batch 1, 448 px, 128 thinking tokens); `prov`: the provenance stored."
    t0, c0 = time.perf_counter(), time.process_time()  # wall and CPU seconds: on a shared machine CPU / threads is the free-machine time
    model, processor, inputs = build(args.size, torch.bfloat16, args.device, args.image, 1)
    res = dict(params=sum(p.numel() for p in model.parameters()), build_s=time.perf_counter() - t0,
               model_bytes=sum(p.numel() * p.element_size() for p in model.parameters()), peak_after_build_gb=peak_gb())
    tok, P, ad = processor.tokenizer, inputs["input_ids"].shape[1], adapter_for(model)
    n_new = args.think + 6  # <think>, thinking, </think>, 3 answer tokens, end of turn
    gen = dict(max_new_tokens=n_new, do_sample=False, prefix_allowed_tokens_fn=forcing(scripted_completions(tok, 1, n_new), P))
    res.update(image_tokens=int(ad.image_mask(inputs["input_ids"][0]).sum()), prompt_tokens=P, new_tokens=n_new, thinking_tokens=args.think)
    print(f"{args.size} shape: {res['params'] / 1e9:.2f}B params, bf16, built in {res['build_s']:.0f} s; prompt {P} tokens "
          f"({res['image_tokens']} image tokens), {n_new} new tokens", flush=True)
    with torch.no_grad(), cached_vision(ad.vision) as reuse_vision:
        t = time.perf_counter()
        with record_saliency(model) as rec: out = model.generate(**inputs, **gen)
        res["generate_recorded_s"], res["peak_after_generate_gb"] = time.perf_counter() - t, peak_gb()
        res["cpu_s_so_far"] = time.process_time() - c0
        ids = out[:, P:]
        t = time.perf_counter(); a = from_recording(rec, ids, processor, ("chain",)); res["maps_chain_s"] = time.perf_counter() - t
        t = time.perf_counter(); from_recording(rec, ids, processor, ("cot",)); res["maps_cot_s"] = time.perf_counter() - t
        a = from_recording(rec, ids, processor, METHODS, torch.float32, torch.bfloat16)
        res.update(recording_bytes=rec.nbytes, readout_bytes=a["chain"][0][0]._row.readouts.nbytes, peak_after_maps_gb=peak_gb(),
                   valid=bool(a["chain"][0][0].valid))
        print(json.dumps(res, indent=1), flush=True)
        del rec
        reuse_vision()  # the naive path runs the text stack on the same bf16 image features
        t = time.perf_counter(); naive, res["naive_attention_bytes"] = naive_forced(model, inputs, ids, tok)
        res["naive_forward_and_maps_s"] = time.perf_counter() - t
    res["recorded_vs_naive"] = {m: rel(a[m][0][0].answer_map.ravel(), naive[m][0]) for m in ("chain", "cot")}
    print(f"recorded vs naive eager maps: {res['recorded_vs_naive']}", flush=True)
    t = time.perf_counter()
    with float32_forward(model): b = forced(model, processor, inputs, ids)
    res["float32_forward_and_maps_s"] = time.perf_counter() - t
    res["precision"] = compare(a, b)
    res["peak_gb"], res["total_s"], res["total_cpu_s"] = peak_gb(), time.perf_counter() - t0, time.process_time() - c0
    settings = dict(size=args.size, image=args.image, device=args.device, threads=args.threads)
    (RESULTS / f"bf16_maps_{args.size}.json").write_text(json.dumps(prov | settings | res, indent=1) + "\n")
    print(f"total {res['total_s'] / 60:.1f} min wall, {res['total_cpu_s'] / 60:.1f} CPU min on {args.threads} threads; "
          f"peak memory {res['peak_gb']:.1f} GB", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="the shipped tiny model in bf16, 24 scenes")
    ap.add_argument("--3b", dest="b3", action="store_true", help="the Qwen2.5-VL-3B shape, random init, bf16")
    ap.add_argument("--scenes", type=int, default=24)
    ap.add_argument("--size", default="3b", help="with --3b: the model shape (bench/saliency_overhead.py's SIZES; 'quick' to try the script)")
    ap.add_argument("--image", type=int, default=448)
    ap.add_argument("--think", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (--3b only)")
    args = ap.parse_args()
    if not (args.tiny or args.b3): ap.error("pass --tiny, --3b or both")
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(exist_ok=True)
    prov = provenance()  # the code as the run starts
    if args.tiny: tiny(args, prov)
    if args.b3: shape_3b(args, prov)


if __name__ == "__main__":
    main()
