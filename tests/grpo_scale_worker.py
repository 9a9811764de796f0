"""One `SaliencyGRPOTrainer` step with LoRA, writing what each process recorded (for tests/test_scale.py).

    accelerate launch --config_file saliency_r1/configs/cpu_2proc_zero3.yaml tests/grpo_scale_worker.py OUT_DIR
    python tests/grpo_scale_worker.py OUT_DIR 4bit|8bit    (one process, a bitsandbytes base)

OUT_DIR/rank{r}.json: the dataset rows each rank trained on, each completion's ids, validity and the map recorded
during generation, the rewards gathered over processes, and the LoRA weights' change (rank 0: lora.pt, before/after).
"""
import json, os, sys
from pathlib import Path

import torch

from saliency_r1.data import make_shapes_dataset
from saliency_r1.grpo import GRPOScriptArguments, SaliencyGRPOConfig, SaliencyGRPOTrainer
from saliency_r1.models import CHECKPOINTS, load_vlm, pretrained_tiny
from saliency_r1.sft import make_lora_config

N_ROWS, SEED = 8, 3
TARGETS = ["q_proj", "v_proj", "o_proj"]  # o_proj: an adapter on a weight the maps read

def dataset():
    "The training rows, with their index as a column (it reaches the rewards: each rank says which rows it had)."
    data = make_shapes_dataset(N_ROWS, seed=SEED)
    return data.add_column("idx", list(range(N_ROWS)))

def load(base: str):
    "The shipped tiny model: dense, or with a bitsandbytes '4bit' / '8bit' base as `saliency-r1 train --load-in-4bit` loads it."
    if base == "dense": return pretrained_tiny()
    script = GRPOScriptArguments(load_in_4bit=base == "4bit", load_in_8bit=base == "8bit")
    return load_vlm(CHECKPOINTS / "tiny-qwen2_5_vl", dtype=torch.float32, quantization_config=script.quantization_config(torch.float32))

class Recorded(SaliencyGRPOTrainer):
    "Keeps each step's rows, completions, recorded maps and gathered rewards."
    seen = None
    def create_accelerator_and_postprocess(self):
        """Under `accelerate launch` with an FSDP config on a machine without a GPU, make accelerate shard after all.
        accelerate 1.15 resolves a CPU run to MULTI_CPU and switches to FSDP only from a GPU-family type (MULTI_GPU,
        MULTI_XPU, ...): it would silently train with DDP. Here the FSDP plugin the launcher described is put back and
        accelerate's own FSDP2 preparation wraps the model, as on GPUs."""
        super().create_accelerator_and_postprocess()
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
        state = self.accelerator.state
        if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and state.distributed_type != DistributedType.FSDP:
            if getattr(state, "fsdp_plugin", None) is None: state.fsdp_plugin = FullyShardedDataParallelPlugin()
            # both shared states: every later AcceleratorState() copies the PartialState's type over its own
            PartialState().distributed_type = state.distributed_type = DistributedType.FSDP
            self.is_fsdp_enabled = True
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self.seen = dict(idx=[int(x["idx"]) for x in inputs], ids=[list(map(int, c)) for c in completion_ids_list],
                         valid=[bool(e.valid) for e in self.last_explanations],
                         maps=[e.answer_map.tolist() for e in self.last_explanations],
                         rewards=rewards.tolist(), reward_names=[f.__name__ for f in self.reward_funcs],
                         # elements this rank holds of weights the maps read, right after they were read (ZeRO-3: 0, released)
                         held={n: p.numel() for n, p in self.model_wrapped.named_parameters()
                               if n.endswith(("layers.0.self_attn.o_proj.base_layer.weight", "lm_head.weight"))})
        return rewards

def lora_state(trainer) -> dict:
    "The LoRA weights, whole (a collective under ZeRO-3 and FSDP: every rank calls it; under ZeRO-3 only rank 0 gets them)."
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped) or {}
    return {k: v.detach().float().cpu().clone() for k, v in state.items() if "lora_" in k}

def sharding(model) -> str:
    "How the trained model holds its weights: 'zero3' (DeepSpeed partitions), 'fsdp2' (DTensors), 'fsdp1', or 'whole'."
    params = list(model.parameters())
    if any(hasattr(p, "ds_id") for p in params): return "zero3"
    if any(type(p).__name__ == "DTensor" for p in params): return "fsdp2"
    return "fsdp1" if type(model).__name__ == "FullyShardedDataParallel" else "whole"

def quantized(model) -> list[str]:
    "Names of the modules that hold bitsandbytes weights."
    return [n for n, m in model.named_modules() if type(getattr(m, "weight", None)).__name__ in ("Params4bit", "Int8Params")]

def main(out: str, base: str = "dense"):
    torch.set_num_threads(1)
    cfg = SaliencyGRPOConfig(output_dir=out, max_steps=1, per_device_train_batch_size=4, num_generations=4, max_completion_length=40,
                             learning_rate=1e-2, report_to="none", seed=0, save_strategy="no", disable_tqdm=True, logging_steps=1)
    model, processor = load(base)
    lora = make_lora_config(model, TARGETS, r=4, alpha=8, dropout=0.0)
    trainer = Recorded(model, cfg, train_dataset=dataset(), processing_class=processor, peft_config=lora)
    before = {k: v.detach().float().cpu().clone() for k, v in trainer.model.named_parameters() if "lora_" in k}
    trainer.train()
    after, rank = lora_state(trainer), trainer.accelerator.process_index
    if rank == 0: torch.save(dict(before=before, after=after), Path(out, "lora.pt"))
    Path(out, f"rank{rank}.json").write_text(json.dumps(dict(rank=rank, world=trainer.accelerator.num_processes,
                                                             distributed_type=str(trainer.accelerator.distributed_type),
                                                             sharding=sharding(trainer.model_wrapped), quantized=quantized(trainer.model),

                                                             **trainer.seen)))

if __name__ == "__main__":
    main(*sys.argv[1:])
