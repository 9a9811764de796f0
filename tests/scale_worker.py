"""Saliency maps on a sharded model, one rank of a multi-process run (for tests/test_scale.py).

    torchrun --nproc_per_node 2 tests/scale_worker.py OUT_DIR SETTING [SETTING ...]    (zero3, fsdp2, fsdp1)
    deepspeed --num_gpus 2 tests/scale_worker.py OUT_DIR zero3

For each SETTING in turn (one process group: a launch costs more than the maps), each rank explains its own examples (`rank_rows`) with the shipped tiny model, sharded by SETTING, for the base model and
with a LoRA adapter on o_proj (`build_model`), teacher-forced on fixed completions and generated (greedy), with every
method of `METHODS`; then once more with rank 1's completions all invalid while rank 0's are valid. It writes
OUT_DIR/SETTING-rank{r}.json: one entry per case with each example's completion ids, validity and answer map.
"""
import contextlib, functools, json, sys
from pathlib import Path

import torch
import torch.distributed as dist

from saliency_r1.data import format_completion, make_shapes_dataset
from saliency_r1.models import prepare_inputs, pretrained_tiny
from saliency_r1.saliency import explain, explain_batch, record_saliency

METHODS = ("chain", "cot", "direct", "top_token")
MAX_NEW_TOKENS = 48

def build_model(lora: bool):
    "The shipped tiny model, plain or with a seeded LoRA adapter on o_proj whose B is not zero (so the adapter changes the maps)."
    model, processor = pretrained_tiny()
    if lora:
        from peft import LoraConfig, get_peft_model
        torch.manual_seed(0)
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["o_proj"], init_lora_weights=False))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name: p.normal_(0, 0.05)
    return model, processor

def rank_rows(rank: int, invalid: bool = False):
    "Images, questions and fixed completions of one rank's two examples; `invalid`: completions without the think tags."
    rows = make_shapes_dataset(4, seed=5).select([2 * rank, 2 * rank + 1])
    done = [r["solution"] if invalid else format_completion(r["thinking"], r["solution"]) for r in rows]
    return list(rows["image"]), list(rows["problem"]), done

def _entries(exps) -> list[dict]:
    return [dict(ids=e.completion_ids.tolist(), valid=bool(e.valid), map=e.answer_map.tolist()) for e in exps]

def maps(model, processor, rank: int, invalid: bool = False, generate_context=contextlib.nullcontext, **generate_kwargs) -> dict:
    """{'forced/METHOD': ..., 'generated/METHOD': ...} of one rank's examples: completion ids, validity and answer map of each.
    Forced: `explain` with the fixed completions. Generated: one greedy `generate` under `record_saliency`, every method
    read from that recording (`explain_batch`, as the GRPO trainer does). Explained: `explain` generating on its own."""
    images, questions, completions = rank_rows(rank, invalid)
    out = {f"forced/{m}": _entries(explain(model, processor, images, questions, completion=completions, method=m)) for m in METHODS}
    inputs = prepare_inputs(processor, images, questions, device=model.device)
    with torch.no_grad(), record_saliency(model) as rec, generate_context():
        ids = model.generate(**inputs, do_sample=False, max_new_tokens=3 if invalid else MAX_NEW_TOKENS, **generate_kwargs)
    ids = ids[:, inputs["input_ids"].shape[1]:]  # 3 new tokens: no answer, an invalid completion
    out |= {f"generated/{m}": _entries(explain_batch(rec, ids, processor, m)) for m in METHODS}
    # and `explain` generating by itself, with no help: it must step bare ZeRO-3 ranks together and gather an FSDP1 root
    n = 3 if invalid else MAX_NEW_TOKENS
    out["explained/chain"] = _entries(explain(model, processor, images, questions, do_sample=False, max_new_tokens=n))
    return out

def shard(model, setting: str):
    "`model` as the maps see it under `setting`: the DeepSpeed engine's module, the FSDP2-sharded model, or the FSDP1 wrapper."
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers, blocks = hf.model.language_model.layers, hf.model.visual.blocks
    if setting == "zero3":
        import deepspeed
        # persistence threshold 0: no parameter stays gathered after its first use (by default those under 1e5 elements do,
        # which is every weight of the tiny model; a 7B model's are far larger)
        zero = {"stage": 3, "stage3_param_persistence_threshold": 0}
        engine, *_ = deepspeed.initialize(model=model, config={"train_micro_batch_size_per_gpu": 1, "zero_optimization": zero})
        assert all(p.numel() == 0 for p in engine.module.parameters())  # every parameter partitioned outside the forward
        return engine.module
    if setting == "fsdp2":  # what accelerate's TRANSFORMER_BASED_WRAP does: each decoder layer and vision block, then the root
        from torch.distributed.fsdp import fully_shard
        for unit in [*layers, *blocks]: fully_shard(unit)
        return fully_shard(model)
    if setting == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
        policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={type(layers[0]), type(blocks[0])})
        return FSDP(model, auto_wrap_policy=policy, device_id=torch.device("cpu"), use_orig_params=True)
    raise ValueError(f"Unknown setting {setting!r}: zero3, fsdp2 or fsdp1")

def run(out: str, setting: str, rank: int, world: int):
    # ranks generate different lengths: the finished one keeps joining the sharded forwards (transformers turns this on by
    # itself for FSDP, and for ZeRO-3 only under accelerate/Trainer, not for a bare deepspeed.initialize)
    kw = dict(synced_gpus=True)
    result = dict(rank=rank, world=world, setting=setting)
    for variant in ("base", "lora"):
        model, processor = build_model(variant == "lora")
        model = shard(model.eval(), setting)
        if setting == "fsdp1":  # `generate` runs the inner model: the root unit's own parameters are gathered around it, as TRL does
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
            kw["generate_context"] = functools.partial(FSDP.summon_full_params, model, recurse=False, writeback=False)
        result[variant] = maps(model, processor, rank, **kw)
        if variant == "base":
            result["one_rank_invalid"] = maps(model, processor, rank, invalid=rank == 1, **kw)
            images, questions, completions = rank_rows(rank, False)
            try: explain(model, processor, images, questions, completion=completions, method="gradient")
            except NotImplementedError as e: result["gradient"] = str(e)  # refused on every rank, before any collective
    Path(out, f"{setting}-rank{rank}.json").write_text(json.dumps(result))

def main(out: str, *settings: str):
    torch.set_num_threads(1)
    if not dist.is_initialized(): dist.init_process_group("gloo")
    for setting in settings: run(out, setting, dist.get_rank(), dist.get_world_size())
    dist.barrier()
    dist.destroy_process_group()

if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]  # the deepspeed launcher adds --local_rank=N
    main(*args)
