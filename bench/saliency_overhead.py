"""What recording saliency during generation costs (issues 3 and 9).

Times, on one random-init Qwen2.5-VL (default: text stack 512-d x 8 layers, 8 heads / 2 KV heads, a 448 px image =
256 image tokens, batch 4, 96 new tokens, greedy, 2 threads):

  (a) plain SDPA generation,
  (b) generation inside `record_saliency` plus `explain_batch` (all "chain" answer maps, the library's default),
  (b_cot) the same with all "cot" answer maps,
  (c) the naive path: eager attention with `output_attentions=True` for every layer and step, then the same maps,

and prints the median wall times, the ratios (b)/(a), (b_cot)/(a) and (c)/(a), and the attention bytes each path
keeps. Then a scaling table: the map time of `explain_batch` (chain and cot) after one teacher-forced recording,
for 64, 256 and 512 thinking tokens and 256 and 1024 image tokens.
Every path generates the same scripted completion (`<think>` + thinking + `</think>` + answer + end of turn,
forced through `prefix_allowed_tokens_fn`), so all maps are computed and the three paths do the same token work.

    python bench/saliency_overhead.py            # the issue's configuration
    python bench/saliency_overhead.py --quick    # a small version that runs in seconds
    python bench/saliency_overhead.py --size 3b --device cuda --dtype bfloat16   # Qwen2.5-VL-3B-shaped (GPU)
"""
from __future__ import annotations
import argparse, statistics, time

import numpy as np
import torch
import torch.nn.functional as F

from saliency_r1.data import make_shapes_dataset
from saliency_r1.models import tiny_vlm, tiny_processor, prepare_inputs
from saliency_r1.attribution import (chain_weights, cot_bottleneck, direct_contribution, head_readout, saliency_map,
                                     token_chain, value_logits)
from saliency_r1.adapters import adapter_for
from saliency_r1.saliency import explain_batch, find_spans, record_saliency, teacher_forced_inputs

SIZES = {  # text stack (and vision tower) of the benchmarked model
    "bench": dict(hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=2, intermediate_size=2048, initializer_range=0.02),
    "quick": dict(hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=256, initializer_range=0.02),
    "3b": dict(hidden_size=2048, num_layers=36, num_heads=16, num_kv_heads=2, intermediate_size=11008, initializer_range=0.02,
               vision_hidden_size=1280, vision_depth=32, text=dict(vocab_size=151936, rms_norm_eps=1e-6),
               vision=dict(num_heads=16, intermediate_size=3420, fullatt_block_indexes=[7, 15, 23, 31])),
}


def scripted_completions(tok, batch: int, n_new: int, n_answer: int = 3, seed: int = 0) -> list[list[int]]:
    "Completions of exactly `n_new` ids: <think>, random word tokens, </think>, `n_answer` answer tokens, end of turn."
    rng = np.random.default_rng(seed)
    words = [i for t, i in tok.get_vocab().items() if t.isalpha() and i not in tok.all_special_ids][:200]
    open_, close = tok.convert_tokens_to_ids("<think>"), tok.convert_tokens_to_ids("</think>")
    n_think = n_new - n_answer - 3
    return [[open_, *rng.choice(words, n_think).tolist(), close, *rng.choice(words, n_answer).tolist(), tok.eos_token_id]
            for _ in range(batch)]


def forcing(scripts: list[list[int]], prompt_len: int):
    "A prefix_allowed_tokens_fn that makes greedy generation write `scripts`."
    return lambda b, ids: [scripts[b][min(len(ids) - prompt_len, len(scripts[b]) - 1)]]


def naive_maps(model, out, prompt_len: int, tok, end_ids, inv_rms) -> dict[str, list[np.ndarray]]:
    "The 'chain' and 'cot' answer maps from the full eager attentions of every step (the naive path)."
    ad, P = adapter_for(model), prompt_len
    # per layer, the attention row of every query position from P-1 on: the prefill's last row, then one per decode step
    S = out.attentions[-1][0].shape[-1]
    rows = [torch.cat([F.pad(step[l][:, :, -1:], (0, S - step[l].shape[-1])) for step in out.attentions], 2)
            for l in range(ad.n_layers)]  # (B, H, N, S); row r is query position P-1+r, so token j's query is row j
    cache, ids = out.cache, out.sequences
    group = ad.n_heads // ad.n_kv_heads
    maps = {"chain": [], "cot": []}
    for b in range(len(ids)):
        seq = ids[b, P:].tolist()
        tokens = tok.batch_decode([[i] for i in seq], skip_special_tokens=False)
        think, answer = find_spans(tokens, seq, end_ids)
        think, answer = torch.tensor(list(think)), torch.tensor(list(answer))
        img = ad.image_mask(ids[b, :P]).nonzero()[:, 0]
        cot, D, G = 0, 0, 0
        for l in range(ad.n_layers):
            a = rows[l][b].float()
            values = cache.layers[l].values[b].float().repeat_interleave(group, 0)
            readout = lambda ks: head_readout(ad.o_weight(l), ad.gamma(), ad.unembedding(ids[b, P + ks]), ad.n_heads)
            a_at = a[:, answer][:, :, P + think]  # α(q_k → P+t)
            a_ti = a[:, think][:, :, img]         # α(q_t → p): the query that generated t
            m_answer_image = value_logits(readout(answer), values[:, img], inv_rms[b, answer])
            cot = cot + direct_contribution(cot_bottleneck(a_at, a_ti), m_answer_image)
            D = D + direct_contribution(a_ti, value_logits(readout(think), values[:, img], inv_rms[b, think]))
            G = G + direct_contribution(a_at, value_logits(readout(answer), values[:, P + think], inv_rms[b, answer]))
        maps["cot"].append(saliency_map(cot).cpu().numpy())
        maps["chain"].append(token_chain(chain_weights(G), D).cpu().numpy())
    return maps


def build(size: str, dtype, device: str, image_px: int, batch: int):
    "The benchmark model, its processor, and prompt inputs for `batch` synthetic questions about `image_px` images."
    with torch.device(device):
        model, processor = tiny_vlm("qwen2_5_vl", seed=0, dtype=dtype, **SIZES[size])
    processor.image_processor = tiny_processor(max_pixels=max(448, image_px) ** 2).image_processor  # 896 px: 1024 image tokens
    rows = make_shapes_dataset(batch, seed=0, image_size=image_px)
    return model, processor, prepare_inputs(processor, list(rows["image"]), list(rows["problem"]), device=device)


def overhead(args, size, dtype, image_px, batch, n_new, repeats):
    "(a) plain generate, (b) record + chain maps, (b') record + cot maps, (c) eager output_attentions + the same maps."
    model, processor, inputs = build(size, dtype, args.device, image_px, batch)
    tok = processor.tokenizer
    P = inputs["input_ids"].shape[1]
    n_img = int(adapter_for(model).image_mask(inputs["input_ids"][0]).sum())
    scripts = scripted_completions(tok, batch, n_new)
    gen = dict(max_new_tokens=n_new, do_sample=False, prefix_allowed_tokens_fn=forcing(scripts, P))
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    end_ids = {tok.eos_token_id, tok.pad_token_id}
    print(f"model: qwen2_5_vl {size} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, {args.dtype}, {args.device}, "
          f"{args.threads} threads); batch {batch}, prompt {P} tokens ({n_img} image tokens, {image_px} px), {n_new} new tokens")

    def plain():
        out = model.generate(**inputs, **gen)
        sync(); return out

    def recorded(method):
        def run():
            with record_saliency(model) as rec: out = model.generate(**inputs, **gen)
            exps = explain_batch(rec, out[:, P:], processor, method)
            sync(); return rec, exps
        return run

    def naive():
        model.set_attn_implementation({"text_config": "eager"})
        norm_in = []
        hook = adapter_for(model).final_norm.register_forward_hook(
            lambda m, a, o: norm_in.append(torch.rsqrt(a[0][:, -1:].float().pow(2).mean(-1) + m.variance_epsilon)))
        try: out = model.generate(**inputs, **gen, output_attentions=True, return_dict_in_generate=True)
        finally: hook.remove(); model.set_attn_implementation({"text_config": "sdpa"})
        maps = naive_maps(model, out, P, tok, end_ids, torch.cat(norm_in, 1))
        sync(); return out, maps

    paths = (("a", "plain SDPA generate", plain), ("b", "record + all chain maps", recorded("chain")),
             ("b_cot", "record + all cot maps", recorded("cot")), ("c", "eager output_attentions + maps", naive))
    times, kept = {k: [] for k, _, _ in paths}, {}
    with torch.no_grad():
        for _, _, fn in paths: fn()  # warm-up
        for i in range(repeats):  # interleaved, so drifting machine load hits every path alike
            for key, _, fn in paths:
                t = time.perf_counter(); res = fn(); times[key].append(time.perf_counter() - t)
                if i == repeats - 1: kept[key] = res
                del res  # earlier rounds' outputs (135 MB of attentions for (c)) must not weigh on the next runs
    tokens_a, (rec, chain), (_, cot), (out_c, maps_c) = kept["a"], kept["b"], kept["b_cot"], kept["c"]
    same_tokens = bool(torch.equal(tokens_a, out_c.sequences))
    rel = lambda exps, ref: max(float(np.abs(e.answer_map.ravel() - m).max() / max(np.abs(m).max(), 1e-30)) for e, m in zip(exps, ref))
    bytes_c = sum(t.numel() * t.element_size() for step in out_c.attentions for t in step)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"valid completions: {sum(e.valid for e in chain)}/{batch}; (a) and (c) tokens identical: {same_tokens}; max relative "
          f"difference of the recorded and naive maps: chain {rel(chain, maps_c['chain']):.1e}, cot {rel(cot, maps_c['cot']):.1e}")
    for key, name, _ in paths:
        print(f"({key}) {name:32s} median {med[key]:7.3f} s   runs {' '.join(f'{t:.3f}' for t in times[key])}")
    for key, target in (("b", 1.03), ("b_cot", 1.03)):
        paired = sorted(b / a for a, b in zip(times["a"], times[key]))  # each round runs every path back to back
        print(f"({key})/(a) = {med[key] / med['a']:.3f}   (target <= {target}); per-round ratios: median "
              f"{statistics.median(paired):.3f}, range {paired[0]:.3f}-{paired[-1]:.3f}")
    print(f"(c)/(a) = {med['c'] / med['a']:.3f}")
    print(f"attention bytes kept: (b) {rec.nbytes / 1e6:.2f} MB (query rows + norms; keys/values are the KV cache's own), "
          f"(c) {bytes_c / 1e6:.2f} MB; ratio {rec.nbytes / bytes_c:.2%} (target <= 5%)")


def scaling(args, size, dtype, batch, repeats):
    "Map time (explain_batch after one teacher-forced recording) against thinking length and image tokens."
    print(f"\nscaling: map time of explain_batch for a batch of {batch} ({size} model, {args.threads} threads, median of {repeats})")
    print("| image tokens | thinking tokens | prompt + completion | chain (s) | chain, 99% coverage (s) | its max rel. error | "
          "thinking tokens kept | cot (s) | chain per thinking token (ms) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for image_px in (448, 896):
        model, processor, inputs = build(size, dtype, args.device, image_px, batch)
        n_img = int(adapter_for(model).image_mask(inputs["input_ids"][0]).sum())
        for n_think in (64, 256, 512):
            scripts = scripted_completions(processor.tokenizer, batch, n_think + 6)
            ids = torch.tensor(scripts, device=args.device)
            P = inputs["input_ids"].shape[1]
            with torch.no_grad(), record_saliency(model, prompt_length=P) as rec:
                model(**teacher_forced_inputs(inputs, ids, torch.ones_like(ids)), use_cache=False)
            secs, exps = {}, {}
            for name, method, coverage in (("chain", "chain", 1.0), ("chain99", "chain", 0.99), ("cot", "cot", 1.0)):
                runs = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    exps[name] = explain_batch(rec, ids, processor, method, chain_coverage=coverage)
                    runs.append(time.perf_counter() - t)
                assert all(e.valid for e in exps[name])
                secs[name] = statistics.median(runs)
            err = max(float(np.abs(a.answer_map - b.answer_map).max() / max(np.abs(b.answer_map).max(), 1e-30))
                      for a, b in zip(exps["chain99"], exps["chain"]))
            kept = np.mean([int((np.abs(e.think_maps).sum((1, 2)) > 0).sum()) for e in exps["chain99"]])
            print(f"| {n_img} | {n_think + 1} | {P + ids.shape[1]} | {secs['chain']:.3f} | {secs['chain99']:.3f} | {err:.1e} | "
                  f"{kept:.0f} | {secs['cot']:.3f} | {1e3 * secs['chain'] / (batch * (n_think + 1)):.2f} |")
            del rec, exps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small model, 224 px, batch 2, 24 tokens, 2 repeats")
    ap.add_argument("--size", choices=list(SIZES), default=None)
    ap.add_argument("--image", type=int, default=None, help="image side in pixels (default 448; quick 224)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--new-tokens", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--scaling", action="store_true", help="only the scaling table (map time vs thinking length and image tokens)")
    ap.add_argument("--no-scaling", action="store_true", help="only the overhead comparison")
    args = ap.parse_args()
    q = args.quick
    size = args.size or ("quick" if q else "bench")
    image_px, batch = args.image or (224 if q else 448), args.batch or (2 if q else 4)
    n_new, repeats = args.new_tokens or (24 if q else 96), args.repeats or (2 if q else 9)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    if not args.scaling: overhead(args, size, dtype, image_px, batch, n_new, repeats)
    if not args.no_scaling and not q: scaling(args, size, dtype, batch, 3)


if __name__ == "__main__":
    main()
