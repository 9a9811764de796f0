"""A tiny GRPO run that writes what each process saw (for tests/test_grpo.py, also under `accelerate launch`).

    python tests/grpo_worker.py OUT_DIR [max_steps] [save_steps] [resume_from|-] [lora|full]
"""
import json, sys
from pathlib import Path

import torch
from transformers import TrainerCallback

from saliency_r1.data import make_shapes_dataset
from saliency_r1.grpo import SaliencyGRPOConfig, SaliencyGRPOTrainer
from saliency_r1.models import pretrained_tiny
from saliency_r1.sft import make_lora_config

class Keep(TrainerCallback):
    "Keep each step's rollout (local advantages, gathered rewards per function)."
    def __init__(self): self.trainer, self.steps = None, []
    def on_step_end(self, args, state, control, **kw):
        r = self.trainer.last_rollout
        self.steps.append(dict(step=state.global_step, advantages=r["advantages"].tolist(),
                               rewards_per_func=r["rewards_per_func"].tolist()))

def main(out, max_steps=2, save_steps=0, resume=None, mode="lora"):
    torch.set_num_threads(1)
    cfg = SaliencyGRPOConfig(output_dir=out, max_steps=max_steps, per_device_train_batch_size=4, num_generations=4,
                             max_completion_length=40, learning_rate=1e-3, logging_steps=1, report_to="none", seed=0,
                             save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500, disable_tqdm=True)
    model, processor = pretrained_tiny()
    keep = Keep()
    lora = make_lora_config(model, ["q_proj", "v_proj"], dropout=0.0) if mode == "lora" else None
    trainer = SaliencyGRPOTrainer(model, cfg, train_dataset=make_shapes_dataset(16, seed=3), processing_class=processor,
                                  peft_config=lora, callbacks=[keep])
    keep.trainer = trainer
    trainer.train(resume_from_checkpoint=resume)
    rank = trainer.accelerator.process_index
    logs = [h for h in trainer.state.log_history if "loss" in h]
    if rank == 0: torch.save({n: p.detach().cpu() for n, p in trainer.model.named_parameters() if p.requires_grad},
                             Path(out, f"weights{'-resumed' if resume else ''}.pt"))
    Path(out, f"rank{rank}.json").write_text(json.dumps(dict(rank=rank, world=trainer.accelerator.num_processes,
                                                             weights=list(map(float, cfg.reward_weights)), steps=keep.steps, logs=logs)))

if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], int(a[1]) if len(a) > 1 else 2, int(a[2]) if len(a) > 2 else 0, a[3] if len(a) > 3 and a[3] != "-" else None,
         a[4] if len(a) > 4 else "lora")
