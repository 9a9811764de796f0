"Family adapters (issue 21): per family, the recorded maps equal a plain eager reference (teacher-forced and during generate), explain and evaluate run, unsupported families are refused."
import copy, json

import numpy as np
import pytest
import torch

from saliency_r1.adapters import ADAPTERS, adapter_for
from saliency_r1.cli import main as cli_main
from saliency_r1.data import format_completion, make_conversation, make_shapes_dataset
from saliency_r1.grpo import SaliencyGRPOConfig, SaliencyGRPOTrainer, _scored, forward_explanations
from saliency_r1.rewards import SaliencyReward
from saliency_r1.sft import make_lora_config
from saliency_r1.evaluate import evaluate, map_scores, perturbation_aucs
from saliency_r1.data import parse_boxes
from saliency_r1.models import image_token_boxes, tiny_vlm
from saliency_r1.saliency import explain, explain_batch, record_saliency
from test_saliency import forced_inputs, naive_reference, scripted

FAMILY_ORDER = ["llava_onevision", "llava_next", "idefics3", "smolvlm", "internvl", "gemma3"]
QUESTIONS = ["What colour is the circle?", "Which shape is red?"]
COMPLETIONS = [format_completion("The circle is at the top left. It is red.", "red"), format_completion("It is a square.", "the square")]
MAP_METHODS = ("chain", "top_token", "cot", "direct")
WORST = {}  # family -> largest relative error against the reference, reported at the end


@pytest.fixture(scope="module", params=FAMILY_ORDER)
def family(request):
    model, processor = tiny_vlm(request.param, seed=1)
    return request.param, model, processor


@pytest.fixture(scope="module")
def images():
    img = make_shapes_dataset(1, seed=5, image_size=(200, 150))[0]["image"]
    return [img, img.resize((112, 112))]


def rel_err(actual, expected, scale=None) -> float:
    "Largest difference relative to the largest |expected| (or to `scale`: a rectified map against the signed map it clips)."
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max() if scale is None else scale, 1e-30))


def check_against_reference(name, model, processor, images, exps, inputs, P):
    "Every method's maps of each row against `naive_reference`, restricted to the image tokens that cover a region."
    worst = 0.0
    for b, e in enumerate(exps["chain"]):
        assert e.valid, e.text
        think, answer = list(e.think_span), list(e.answer_span)
        ks = sorted({0, think[0], *answer})
        covers = ~np.isnan(image_token_boxes(processor, images[b].height, images[b].width)[:, 0])  # LLaVA-OV newlines: no region
        ref = naive_reference(model, inputs, P, b, think, answer, ks, covers)
        D, D_think, S, C = ref["D"], ref["D_think"], ref["S"], ref["C"]
        errs = [rel_err(e.answer_map.ravel(), S), rel_err(e.think_flow, ref["c"]), rel_err(e.think_maps.reshape(len(think), -1), D_think),
                rel_err(exps["top_token"][b].answer_map.ravel(), np.clip(top := D_think[ref["c"].argmax()], 0, None), np.abs(top).max()),
                rel_err(exps["cot"][b].answer_map.ravel(), np.clip(C, 0, None)), rel_err(exps["cot"][b].think_flow, ref["flow"]),
                rel_err(exps["direct"][b].answer_map.ravel(), np.clip(D[[ks.index(k) for k in answer]].sum(0), 0, None))]
        errs += [rel_err(e.token_map(k).ravel(), D[i]) for i, k in enumerate(ks)]
        assert max(errs) <= 1e-5, (name, b, errs)
        assert len(e.token_boxes) == int(covers.sum()) and not np.isnan(e.token_boxes).any()
        worst = max(worst, *errs)
    WORST[name] = max(WORST.get(name, 0.0), worst)
    return worst


def test_teacher_forced_maps_equal_reference(family, images):
    "direct, cot, chain and top_token of a left-padded batch of two image sizes equal the eager reference to 1e-5 relative."
    name, model, processor = family
    exps = {m: explain(model, processor, images, QUESTIONS, completion=COMPLETIONS, method=m) for m in MAP_METHODS}
    prompt, ids, mask, full = forced_inputs(processor, images, QUESTIONS, COMPLETIONS)
    assert prompt["attention_mask"].min() == 0  # the batch really is padded
    print(f"{name}: teacher-forced max relative error {check_against_reference(name, model, processor, images, exps, full, prompt['input_ids'].shape[1]):.2e}")


def test_generate_maps_equal_reference(family, images):
    "The same maps recorded during `generate` (scripted to write the completions) equal the reference of the same ids."
    name, model, processor = family
    prompt, ids, mask, full = forced_inputs(processor, images, QUESTIONS, COMPLETIONS)
    P = prompt["input_ids"].shape[1]
    with torch.no_grad(), record_saliency(model, image_sizes=[(im.height, im.width) for im in images]) as rec:
        out = model.generate(**prompt, max_new_tokens=ids.shape[1] + 2, do_sample=False,
                             prefix_allowed_tokens_fn=scripted(processor, COMPLETIONS, P))
    exps = {m: explain_batch(rec, out[:, P:], processor, m) for m in MAP_METHODS}
    if name == "gemma3":  # the sliding layers' cache dropped keys (window 64 < prompt + completion): the recording kept its own
        assert rec._own == [True, True, False] and rec.layer_kv(0)[0].shape[2] == rec.layer_kv(2)[0].shape[2] > 64
    print(f"{name}: generate max relative error {check_against_reference(name, model, processor, images, exps, full, P):.2e}")


def test_explain_and_evaluate_run(family):
    "explain (generating) and evaluate (maps, energy-PG against the uniform map, one deletion curve) on the family's tiny model."
    name, model, processor = family
    rows = make_shapes_dataset(2, seed=3, image_size=(200, 150))
    e = explain(model, processor, rows[0]["image"], rows[0]["problem"], max_new_tokens=8)
    assert e.answer_map.shape == e.map_shape and len(e.token_boxes) == (e.map_shape[0] if e.grid is None else np.prod(e.grid))
    forced = explain(model, processor, rows["image"], rows["problem"], completion=[format_completion("Red circle.", "red")] * 2)
    assert all(x.valid for x in forced) and forced[0].upsample((150, 200)).shape == (150, 200)
    for method in ("attention", "rollout"):   # the baselines run over the same token set (rollout: from after the whole image)
        base = explain(model, processor, rows["image"], rows["problem"], completion=[forced[0].text] * 2, method=method)
        assert all(b.answer_map.shape == forced[0].map_shape and b.answer_map.sum() > 0 for b in base)
    report = evaluate(model, processor, rows, methods=("chain",), max_new_tokens=8, blank=False, progress=False)
    assert len(report.records) == 2 and "uniform" in report.records[0]["maps"]
    import matplotlib.pyplot as plt
    plt.close(report.plot())   # its example rows draw each map over the family's token rectangles
    tokens = [None if x.grid is not None else x.token_boxes for x in forced]  # what evaluate scores valid maps with
    boxes = [parse_boxes(b) for b in rows["bbox"]]
    scores = map_scores([x.answer_map for x in forced], boxes, [True, True], tokens)
    uniform = map_scores([np.ones(x.map_shape) for x in forced], boxes, [True, True], tokens)["energy_pg"]
    area = [sum((b.x2 - b.x1) * (b.y2 - b.y1) for b in bs) for bs in boxes]  # one box per row: a uniform map's energy is its area
    assert np.isfinite(scores["energy_pg"]).all() and np.allclose(uniform, area, atol=0.02), (uniform, area)
    aucs = perturbation_aucs(model, processor, rows["image"][:1], rows["problem"][:1], [forced[0].text], {"chain": [forced[0].answer_map]},
                             modes=("deletion",), progress=False, token_boxes=tokens[:1])
    assert np.isfinite(aucs["chain"]["deletion_auc"]).all()


def test_unsupported_family_is_one_line(family):
    name, model, processor = family
    assert type(adapter_for(model)).__name__ != "VLMAdapter"
    saved = model.config.model_type
    model.config.model_type = "not_a_vlm"
    try:
        with pytest.raises(ValueError) as err: adapter_for(model)
    finally: model.config.model_type = saved
    assert "\n" not in str(err.value) and ", ".join(sorted(ADAPTERS)) in str(err.value)


def test_rewards_score_token_maps(family):
    "The trainer's scoring (`_scored`) and the saliency reward read token maps with their rectangles, and agree."
    name, model, processor = family
    rows = make_shapes_dataset(2, seed=3, image_size=(200, 150))
    exps = explain(model, processor, rows["image"], rows["problem"], completion=[format_completion("Red circle.", "red")] * 2)
    scored = _scored([dict(bbox=r["bbox"], saliency_maps=e.answer_map, valid=e.valid,
                           saliency_token_boxes=None if e.grid is not None else e.token_boxes) for r, e in zip(rows, exps)])
    energy = [s["saliency_score"][0] for s in scored]
    assert all(s["saliency_score"][2] in ("ok", "zero map") for s in scored)
    reward = SaliencyReward()([e.text for e in exps], bbox=rows["bbox"], saliency_maps=[e.answer_map for e in exps], valid=[True, True],
                              saliency_token_boxes=[None if e.grid is not None else e.token_boxes for e in exps])
    np.testing.assert_allclose(reward, np.nan_to_num(energy), atol=1e-12)
    forward = forward_explanations(model, processor, [make_conversation(r) for r in rows], rows["image"], [e.completion_ids for e in exps])
    for f, e in zip(forward, exps):   # the trainer's "forward" capture: the same maps and rectangles
        np.testing.assert_array_equal(f.token_boxes, e.token_boxes); assert rel_err(f.answer_map, e.answer_map) <= 1e-6


def test_grpo_step_with_lora(family, tmp_path):
    "One SaliencyGRPOTrainer step with LoRA on q_proj/v_proj: generation recorded, maps explained over the family's token rectangles."
    name, model, processor = family
    cfg = SaliencyGRPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, num_generations=4,
                             max_completion_length=12, learning_rate=1e-3, logging_steps=1, report_to="none", seed=0,
                             save_strategy="no", disable_tqdm=True, beta=0.001)   # the recipes' KL term: a reference pass with the image inputs
    trainer = SaliencyGRPOTrainer(copy.deepcopy(model), cfg, train_dataset=make_shapes_dataset(4, seed=3, image_size=(200, 150)),
                                  processing_class=processor, peft_config=make_lora_config(model, ["q_proj", "v_proj"], dropout=0.0))
    trainer.train()
    exps = trainer.last_explanations
    assert len(exps) == 4 and all(len(e.token_boxes) == np.prod(e.map_shape) and e.answer_map.shape == e.map_shape for e in exps)
    assert "saliency/valid_rate" in trainer.state.log_history[0]


def test_cli_explain_with_a_saved_family_model(family, tmp_path):
    "`saliency-r1 explain --model <folder>` loads a saved tiny model of the family and writes its map (a token map where not a grid)."
    name, model, processor = family
    model.save_pretrained(tmp_path / "m"); processor.save_pretrained(tmp_path / "m")
    make_shapes_dataset(1, seed=2, image_size=(200, 150))[0]["image"].save(tmp_path / "img.png")
    assert cli_main(["explain", "--model", str(tmp_path / "m"), "--image", str(tmp_path / "img.png"), "--question", "What colour is the circle?",
                     "--max-new-tokens", "6", "--bbox", "[0.1, 0.1, 0.5, 0.5]", "--out", str(tmp_path / "out")]) == 0
    info = json.loads((tmp_path / "out" / "explanation.json").read_text())
    assert (info["grid"] is None) == (name != "gemma3") and len(info["answer_map"]) == (4 if name == "gemma3" else len(info["token_boxes"]))


def test_gradient_map_generate_equals_forced(family, images):
    "Method 'gradient' re-runs the forward with the processor's image inputs: the same map after `generate` as teacher-forced."
    name, model, processor = family
    P = forced_inputs(processor, images, QUESTIONS, COMPLETIONS)[0]["input_ids"].shape[1]
    gen = explain(model, processor, images, QUESTIONS, method="gradient", max_new_tokens=24, prefix_allowed_tokens_fn=scripted(processor, COMPLETIONS, P))
    forced = explain(model, processor, images, QUESTIONS, method="gradient", completion=COMPLETIONS)
    assert any(f.answer_map.max() > 0 for f in forced)   # ReLU(gradient × input) may leave a row all zero, not both
    for g, f in zip(gen, forced):
        assert g.valid and f.valid and rel_err(g.answer_map, f.answer_map) <= 1e-5


def test_report_worst_errors():
    print("max relative error against the eager reference:", {k: f"{v:.1e}" for k, v in WORST.items()})


def test_gradient_map_with_several_samples_per_prompt(family, images):
    "num_return_sequences > 1 repeats the rows, not the images: method 'gradient' gives each sample the map of its own text, teacher-forced on its image."
    name, model, processor = family
    P = forced_inputs(processor, images, QUESTIONS, COMPLETIONS)[0]["input_ids"].shape[1]
    gen = explain(model, processor, images, QUESTIONS, method="gradient", max_new_tokens=24, num_return_sequences=2, do_sample=True,
                  prefix_allowed_tokens_fn=scripted(processor, COMPLETIONS, P))   # generate's batch_id counts prompts, not samples
    assert [g.text for g in gen] == [COMPLETIONS[0]] * 2 + [COMPLETIONS[1]] * 2
    forced = explain(model, processor, [images[0]] * 2 + [images[1]] * 2, [QUESTIONS[0]] * 2 + [QUESTIONS[1]] * 2, method="gradient",
                     completion=[g.text for g in gen])
    assert len(gen) == 4 and all(g.valid for g in gen) and any(f.answer_map.max() > 0 for f in forced)
    for g, f in zip(gen, forced): assert rel_err(g.answer_map, f.answer_map) <= 1e-5
