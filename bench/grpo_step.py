"""Benchmark: the cost of the saliency reward in a GRPO step (issues 5 and 9).

Median step time of SaliencyGRPOTrainer with the saliency reward (maps recorded during generation; `--method`, default
the library's "chain") versus the same trainer with saliency_weight=0 and saliency_capture="off", on the shipped tiny
model, CPU. Target: ratio <= 1.05.
The two settings alternate over several rounds, in the order AB BA AB ..., so drift on a busy machine hits both
alike; the ratio is printed from the pooled medians and round by round (each round's two medians: paired, so the
drift between rounds cancels). The learning rate is 0,
so both settings sample the same completions step after step (same seed, same policy) and the difference is
only the saliency capture, the maps and the reward, not different completion lengths.

    python bench/grpo_step.py [--steps 11] [--rounds 10] [--threads 2]   # about a minute on 2 cores

With `--size` (a random-init model of that shape from bench/saliency_overhead.py's SIZES), every completion is forced
to a scripted `<think> ... </think> answer` of exactly `--length` tokens, so all completions have maps and both
settings do the same token work; the GPU check of issue 5 is

    python bench/grpo_step.py --size 3b --device cuda --dtype bfloat16 --batch 4 --generations 4 --length 256 --image 448 --steps 4 --rounds 1

which also prints the peak GPU memory of each setting.
"""
import argparse, functools, statistics, tempfile, time

import datasets, torch
from transformers import LogitsProcessor, LogitsProcessorList, PrinterCallback, TrainerCallback

import saliency_r1.grpo as grpo
from saliency_r1.data import make_shapes_dataset
from saliency_r1.grpo import SaliencyGRPOConfig, SaliencyGRPOTrainer, default_rewards
from saliency_r1.rewards import saliency_reward
from saliency_r1.models import pretrained_tiny, tiny_vlm
from saliency_r1.weights import unwrap_model
from saliency_r1.sft import make_lora_config
from saliency_overhead import SIZES, scripted_completions

class ForceScript(LogitsProcessor):
    "Makes every row of each `generate` call write `script` (one id per step), whatever the model would sample."
    def __init__(self, script: list[int]): self.script, self.start, self.last = script, 0, None
    def __call__(self, input_ids, scores):
        if self.last is None or input_ids.shape[1] <= self.last: self.start = input_ids.shape[1]  # a new generate call
        self.last = input_ids.shape[1]
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.script[min(input_ids.shape[1] - self.start, len(self.script) - 1)]] = 0.0
        return forced

SPENT = [0.0]  # seconds spent so far in the saliency work outside `generate` (see `timed`)

def timed(f):
    "`f`, adding the seconds each call takes to SPENT."
    @functools.wraps(f)
    def run(*args, **kwargs):
        t = time.perf_counter()
        try: return f(*args, **kwargs)
        finally:
            if torch.cuda.is_initialized(): torch.cuda.synchronize()  # a GPU's queued work belongs to this call
            SPENT[0] += time.perf_counter() - t
    return run

class StepTimer(TrainerCallback):
    "Wall time of each step, and the part of it spent in the saliency work outside `generate`."
    def __init__(self): self.times, self.spent, self.t = [], [], None
    def on_step_begin(self, args, state, control, **kw): self.t, self.s = time.perf_counter(), SPENT[0]
    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self.t); self.spent.append(SPENT[0] - self.s)

class AccountedTrainer(SaliencyGRPOTrainer):
    "The trainer, with its saliency work timed: the maps (explain_batch), scoring and logging them, and the saliency reward."
    _saliency_inputs = timed(SaliencyGRPOTrainer._saliency_inputs)
    _log_saliency = timed(SaliencyGRPOTrainer._log_saliency)

grpo.explain_batch = timed(grpo.explain_batch)  # the trainer's own call, after each generate

class ScriptedTrainer(AccountedTrainer):
    "The trainer, with the model's `generate` forced to `script` for the duration of each generation."
    def __init__(self, *args, script: list[int], **kwargs):
        self.script = script
        super().__init__(*args, **kwargs)

    def _generate_single_turn(self, *args, **kwargs):
        hf = unwrap_model(self.model)
        plain = type(hf).generate
        hf.generate = lambda *a, **k: plain(hf, *a, **k, logits_processor=LogitsProcessorList([ForceScript(self.script)]))
        try: return super()._generate_single_turn(*args, **kwargs)
        finally: del hf.generate

def step_times(with_saliency: bool, steps: int, batch: int, gens: int, length: int, a) -> tuple[list[float], dict]:
    dtype = getattr(torch, a.dtype)
    if a.size:
        with torch.device(a.device): model, processor = tiny_vlm("qwen2_5_vl", seed=0, dtype=dtype, **SIZES[a.size])
    else: model, processor = pretrained_tiny(dtype=dtype)
    model.to(a.device)
    cfg = SaliencyGRPOConfig(output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=batch,
                             num_generations=gens, max_completion_length=length, learning_rate=0.0, logging_steps=1000,
                             save_strategy="no", report_to="none", seed=0, disable_tqdm=True, bf16=a.dtype == "bfloat16",
                             use_cpu=a.device == "cpu", activation_checkpointing=bool(a.size and a.device != "cpu"),
                             saliency_weight=1.0 if with_saliency else 0.0, saliency_capture="generate" if with_saliency else "off",
                             saliency_method=a.method)
    timer = StepTimer()
    scripted = dict(script=scripted_completions(processor.tokenizer, 1, length)[0]) if a.size else {}
    funcs, cfg.reward_weights = default_rewards(cfg)
    funcs = [timed(f) if f is saliency_reward else f for f in funcs]
    trainer = (ScriptedTrainer if a.size else AccountedTrainer)(
        model, cfg, train_dataset=make_shapes_dataset(steps * batch // gens, seed=5, image_size=a.image), processing_class=processor,
        reward_funcs=funcs, peft_config=make_lora_config(model, ["q_proj", "v_proj"]), callbacks=[timer], **scripted)
    trainer.remove_callback(PrinterCallback)  # the timings are the output, not each run's log dict
    if a.device.startswith("cuda"): torch.cuda.reset_peak_memory_stats()
    trainer.train()
    logs = next((h for h in reversed(trainer.state.log_history) if "saliency/valid_rate" in h), {})
    info = dict(valid_rate=logs.get("saliency/valid_rate"), mean_length=next((h.get("completions/mean_length") for h in reversed(trainer.state.log_history) if "completions/mean_length" in h), None),
                peak_gb=torch.cuda.max_memory_allocated() / 2**30 if a.device.startswith("cuda") else None,
                spent=timer.spent[1:])
    return timer.times[1:], info  # the first step includes one-off set-up

def main():
    datasets.disable_progress_bars()  # each run maps its small dataset: its progress bar is not what this prints
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=11); p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--batch", type=int, default=16); p.add_argument("--generations", type=int, default=8)
    p.add_argument("--length", type=int, default=48); p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", choices=list(SIZES), default=None, help="random-init model of this shape, scripted completions "
                                                                    "(default: the shipped tiny model, sampled completions)")
    p.add_argument("--device", default="cpu"); p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--image", type=int, default=112, help="image side in pixels")
    p.add_argument("--method", default="chain", help="saliency method of the reward (default: chain)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    on, off = [], []
    paired, info = [], {}
    for r in range(a.rounds):
        times = {}
        for setting in ((True, False) if r % 2 == 0 else (False, True)):  # ABBA: a linear drift hits both settings alike
            times[setting], info[setting] = step_times(setting, a.steps, a.batch, a.generations, a.length, a)
        on, off = on + times[True], off + times[False]
        paired.append(statistics.median(times[True]) / statistics.median(times[False]))
        print(f"round {r + 1}: with saliency {statistics.median(times[True]):.3f} s/step, without {statistics.median(times[False]):.3f} s/step, "
              f"ratio {paired[-1]:.3f}", flush=True)
    info_on, info_off = info[True], info[False]
    m_on, m_off = statistics.median(on), statistics.median(off)
    print(f"{'Qwen2.5-VL ' + a.size + ' (random init, scripted completions)' if a.size else 'tiny Qwen2.5-VL'}, {a.dtype} on {a.device}, "
          f"batch {a.batch} = {a.batch // a.generations} prompts x {a.generations} generations, <= {a.length} new tokens, "
          f"{a.image} px, {a.threads} threads, {len(on)} + {len(off)} timed steps")
    print(f"with saliency: valid maps {info_on['valid_rate']}, mean completion length {info_on['mean_length']}"
          + (f"; peak GPU memory {info_on['peak_gb']:.1f} GiB with saliency, {info_off['peak_gb']:.1f} GiB without" if info_on["peak_gb"] else ""))
    print(f"median step  with {a.method} saliency reward: {m_on:.3f} s   without (weight 0, capture off): {m_off:.3f} s")
    spent = statistics.median(info_on["spent"])
    print(f"saliency work outside generate (maps, scoring and logging them, the reward): {1e3 * spent:.1f} ms per step, "
          f"{spent / m_off:.1%} of a step without saliency (the rest of the difference: recording inside generate, and noise)")
    q = statistics.quantiles(paired, n=4) if len(paired) > 1 else paired * 3
    print(f"ratio {m_on / m_off:.3f} of the pooled medians; per round: median {statistics.median(paired):.3f}, "
          f"quartiles {q[0]:.3f}-{q[2]:.3f}, range {min(paired):.3f}-{max(paired):.3f}  (target <= 1.05)")

if __name__ == "__main__":
    main()
