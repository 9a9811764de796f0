"""The 4-bit (QLoRA) and 8-bit bases at a real shape (issue 17): maps, time and peak memory.

A random-init model of `--size` (bench/saliency_overhead.py's SIZES) is saved, reloaded through `from_pretrained` with a
bitsandbytes config (nf4 4-bit or LLM.int8 8-bit; lm_head and the vision tower kept dense, as QLoRA recipes do), and
one scripted completion (`<think>` + `--think` tokens + `</think>` + answer) is teacher-forced and explained ("chain",
"cot"). The same is done on its dequantized twin; the script prints the maps' largest difference relative to their
peak, the map time and the peak memory of each.

    python bench/quantized_maps.py --size quick                    # seconds, on a CPU
    python bench/quantized_maps.py --size 3b --device cuda --bits 4 # the GPU check (bench/gpu_check.sh)
"""
from __future__ import annotations
import argparse, json, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, BitsAndBytesConfig

sys.path.insert(0, str(Path(__file__).parent))
from saliency_overhead import SIZES, build, scripted_completions

from saliency_r1.saliency import explain_batch, record_saliency, teacher_forced_inputs


def maps(model, processor, inputs, ids) -> tuple[dict, float]:
    "chain and cot explanations of the forced completions, and the map time in seconds."
    P = inputs["input_ids"].shape[1]
    with torch.no_grad(), record_saliency(model, prompt_length=P) as rec:
        model(**teacher_forced_inputs(inputs, ids, torch.ones_like(ids)), use_cache=False)
        t = time.perf_counter()
        out = {m: explain_batch(rec, ids, processor, m) for m in ("chain", "cot")}
        return out, time.perf_counter() - t


def peak_gb(device: str) -> float:
    if device.startswith("cuda"): return torch.cuda.max_memory_allocated() / 2 ** 30
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=list(SIZES), default="quick")
    ap.add_argument("--bits", type=int, choices=[4, 8], default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--image", type=int, default=448)
    ap.add_argument("--think", type=int, default=128)
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model, processor, inputs = build(args.size, dtype, args.device, args.image, 1)
    ids = torch.tensor(scripted_completions(processor.tokenizer, 1, args.think + 6), device=args.device)
    quant = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                                llm_int8_skip_modules=["lm_head", "model.visual"]) if args.bits == 4 else
             BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=["lm_head", "model.visual"]))
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        del model
        load = lambda: AutoModelForImageTextToText.from_pretrained(folder, quantization_config=quant, dtype=dtype,
                                                                   device_map=args.device).eval()
        q = load()
        if args.device.startswith("cuda"): torch.cuda.reset_peak_memory_stats()
        q_maps, q_secs = maps(q, processor, inputs, ids)
        q_peak = peak_gb(args.device)
        del q
        twin = load().dequantize().to(dtype)
        t_maps, t_secs = maps(twin, processor, inputs, ids)
    rel = {m: float(np.abs(a[0].answer_map - b[0].answer_map).max() / max(np.abs(b[0].answer_map).max(), 1e-30))
           for m, (a, b) in ((m, (q_maps[m], t_maps[m])) for m in q_maps)}
    result = dict(size=args.size, bits=args.bits, device=args.device, valid=bool(q_maps["chain"][0].valid),
                  max_rel_diff_vs_dequantized=rel, map_seconds=dict(quantized=q_secs, dequantized=t_secs),
                  peak_memory_gb_quantized=q_peak)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
