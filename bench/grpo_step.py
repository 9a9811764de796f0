"""Benchmark: the cost of the saliency reward in a GRPO step (issue 5).

Median step time of SaliencyGRPOTrainer with the saliency reward (maps recorded during generation) versus the same
trainer with saliency_weight=0 and saliency_capture="off", on the shipped tiny model, CPU. Target: ratio <= 1.10.
The two settings alternate over several rounds so drift on a busy machine hits both alike. The learning rate is 0,
so both settings sample the same completions step after step (same seed, same policy) and the difference is
only the saliency capture, the maps and the reward, not different completion lengths.

    python bench/grpo_step.py [--steps 6] [--rounds 2] [--threads 2]
"""
import argparse, statistics, tempfile, time

import torch
from transformers import TrainerCallback

from saliency_r1.data import make_shapes_dataset
from saliency_r1.grpo import SaliencyGRPOConfig, SaliencyGRPOTrainer
from saliency_r1.models import pretrained_tiny
from saliency_r1.sft import make_lora_config

class StepTimer(TrainerCallback):
    def __init__(self): self.times, self.t = [], None
    def on_step_begin(self, args, state, control, **kw): self.t = time.perf_counter()
    def on_step_end(self, args, state, control, **kw): self.times.append(time.perf_counter() - self.t)

def step_times(with_saliency: bool, steps: int, batch: int, gens: int, length: int) -> list[float]:
    model, processor = pretrained_tiny()
    cfg = SaliencyGRPOConfig(output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=batch,
                             num_generations=gens, max_completion_length=length, learning_rate=0.0, logging_steps=1000,
                             save_strategy="no", report_to="none", seed=0, disable_tqdm=True,
                             saliency_weight=1.0 if with_saliency else 0.0, saliency_capture="generate" if with_saliency else "off")
    timer = StepTimer()
    trainer = SaliencyGRPOTrainer(model, cfg, train_dataset=make_shapes_dataset(steps * batch // gens, seed=5),
                                  processing_class=processor, peft_config=make_lora_config(model, ["q_proj", "v_proj"]),
                                  callbacks=[timer])
    trainer.train()
    return timer.times[1:]  # the first step includes one-off set-up

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=11); p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=16); p.add_argument("--generations", type=int, default=8)
    p.add_argument("--length", type=int, default=48); p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    on, off = [], []
    for r in range(a.rounds):
        on += step_times(True, a.steps, a.batch, a.generations, a.length)
        off += step_times(False, a.steps, a.batch, a.generations, a.length)
        print(f"round {r + 1}: with saliency {statistics.median(on):.3f} s/step, without {statistics.median(off):.3f} s/step", flush=True)
    m_on, m_off = statistics.median(on), statistics.median(off)
    print(f"tiny Qwen2.5-VL, batch {a.batch} = {a.batch // a.generations} prompts x {a.generations} generations, "
          f"<= {a.length} new tokens, {a.threads} threads, {len(on)} + {len(off)} timed steps")
    print(f"median step  with saliency reward: {m_on:.3f} s   without (weight 0, capture off): {m_off:.3f} s")
    print(f"ratio {m_on / m_off:.3f}  (target <= 1.10)")

if __name__ == "__main__":
    main()
