"""GPU memory of a Saliency-R1 GRPO step, computed from the model shapes (issue 17): Qwen2.5-VL-3B and -7B under LoRA in
bf16 on one GPU, QLoRA (4-bit base) on one GPU, and ZeRO-3 over 8 GPUs, per GPU. Computed, not measured: every term is
a formula below, with the paper's setup (8 completions per GPU of up to 512 tokens, a 512-token image, LoRA r=64 on
q_proj/v_proj, AdamW, activation checkpointing). bench/gpu_check.sh measures the 3B shape on a GPU.

    python bench/memory_table.py            # prints the markdown table of 09_grpo and writes bench/results/memory_table.json
"""
import json
from pathlib import Path

GB = 1e9
SHAPES = {  # Qwen2.5-VL configs: text layers, d_model, heads, KV heads, d_head, MLP width, vocab, tied embeddings, vision params
    "3B": dict(L=36, d=2048, H=16, Hkv=2, dh=128, ff=11008, vocab=151936, tied=True, vision=0.67e9),
    "7B": dict(L=28, d=3584, H=28, Hkv=4, dh=128, ff=18944, vocab=152064, tied=False, vision=0.68e9),
}
B, PROMPT, COMPLETION, V_DISTINCT, RANK, GPUS = 8, 600, 512, 1500, 64, 8  # per-GPU completions, tokens, distinct ids, LoRA rank


def terms(s: dict) -> dict:
    "Parameter counts and the per-GPU bytes of each part of a step, for one shape (before the setting divides or quantizes them)."
    S = PROMPT + COMPLETION
    layer = s["d"] * s["H"] * s["dh"] * 2 + s["d"] * s["Hkv"] * s["dh"] * 2 + 3 * s["d"] * s["ff"]  # q, o, k, v, MLP
    embed = s["vocab"] * s["d"] * (1 if s["tied"] else 2)
    lora = s["L"] * RANK * ((s["d"] + s["H"] * s["dh"]) + (s["d"] + s["Hkv"] * s["dh"]))  # q_proj and v_proj
    return dict(
        linear=s["L"] * layer, embed=embed, vision=s["vision"], lora=lora,
        lora_state=16 * lora,                                                  # fp32 weight, gradient, Adam m and v
        checkpoints=2 * B * S * s["d"] * s["L"],                               # one bf16 hidden state per layer (checkpointing)
        recompute=2 * B * S * (3 * s["ff"] + 4 * s["d"]),                      # one layer's activations while it is recomputed
        logits=4 * B * COMPLETION * s["vocab"],                                # float32 logits of the completion tokens
        kv_cache=2 * B * S * s["L"] * 2 * s["Hkv"] * s["dh"],                   # bf16 keys and values while generating
        recording=2 * B * s["H"] * (COMPLETION + 1) * s["dh"] * s["L"],       # bf16 query rows from P-1 on, every layer
        readouts=4 * s["L"] * V_DISTINCT * s["d"],                             # float32 head readouts, every layer
        chain_block=4 * s["H"] * (COMPLETION + 1) * S,                         # one example's float32 attention block, one layer
        o_proj=4 * s["d"] * s["H"] * s["dh"],                                  # one gathered/dequantized o_proj in float32
    )


def table() -> dict:
    out = {}
    for name, s in SHAPES.items():
        t = terms(s)
        dense = 2 * (t["linear"] + t["embed"] + t["vision"])                       # bf16 weights
        nf4 = 0.53 * t["linear"] + 2 * (t["embed"] + t["vision"])                 # nf4 + double-quant state; embeddings, lm_head, vision bf16
        activations = t["checkpoints"] + t["recompute"] + t["logits"] + t["kv_cache"]
        maps = t["readouts"] + t["chain_block"] + t["o_proj"]
        settings = {"LoRA, bf16, 1 GPU": dict(model=dense, optimizer=t["lora_state"], extra=0),
                    "QLoRA (4-bit base), 1 GPU": dict(model=nf4, optimizer=t["lora_state"], extra=0),
                    # ZeRO-3: 1/8 of the weights, up to 1e9 gathered (bf16) parameters live, the whole lm_head while the maps read it
                    "ZeRO-3, 8 GPUs": dict(model=dense / GPUS + 2 * 1e9, optimizer=t["lora_state"] / GPUS,
                                           extra=2 * s["vocab"] * s["d"])}
        out[name] = {k: dict(model=v["model"] / GB, optimizer=v["optimizer"] / GB, activations=activations / GB,
                             recording=t["recording"] / GB, maps=(maps + v["extra"]) / GB,
                             total=(v["model"] + v["optimizer"] + activations + t["recording"] + maps + v["extra"]) / GB)
                     for k, v in settings.items()}
    return out


if __name__ == "__main__":
    result = table()
    print("| model | setting | weights | LoRA + AdamW | activations, logits, KV cache | recording | maps | total |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rows in result.items():
        for setting, r in rows.items():
            print(f"| Qwen2.5-VL-{name} | {setting} | {r['model']:.1f} | {r['optimizer']:.2f} | {r['activations']:.1f} | "
                  f"{r['recording']:.2f} | {r['maps']:.2f} | **{r['total']:.1f}** |")
    Path(__file__).parent.joinpath("results", "memory_table.json").write_text(json.dumps(result, indent=1))
