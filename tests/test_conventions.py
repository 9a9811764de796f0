"""Issue 18: the data and conventions a new user brings. Eval sets, streams, lists and undecoded images reach every stage
decoded; phone photos are upright; a chat template that opens `<think>` in the prompt, the R1-V `<answer>` tags and
`\\boxed{}` are read end to end; `explain` computes in eval mode; sizes are bounded before anything large is allocated."""
import copy, warnings

import datasets
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from PIL import Image

from saliency_r1.data import format_completion, load_image, make_shapes_dataset, to_rgb
from saliency_r1.grpo import SaliencyGRPOConfig, SaliencyGRPOTrainer, grpo_dataset
from saliency_r1.metrics import cell_coverage, cell_coverage_batch, energy_pointing_game
from saliency_r1.models import pretrained_tiny
from saliency_r1.rewards import _WARNED, accuracy_reward, final_answer, format_reward, match_answer
from saliency_r1.saliency import explain
from saliency_r1.sft import make_lora_config


def _args(out, **kw):
    base = dict(output_dir=str(out), max_steps=1, per_device_train_batch_size=4, num_generations=4, max_completion_length=24,
                learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none", seed=0, disable_tqdm=True)
    return SaliencyGRPOConfig(**(base | kw))


def _train(tmp_path, train, **kw):
    "One GRPO step of the shipped tiny model on `train` (a fresh model: training changes it); the trainer."
    model, processor = pretrained_tiny()
    trainer = SaliencyGRPOTrainer(model, _args(tmp_path, **{k: v for k, v in kw.items() if k != "eval_dataset"}),
                                  train_dataset=train, processing_class=processor, eval_dataset=kw.get("eval_dataset"))
    trainer.train()
    return trainer


# ---------------------------------------------------------------- 1-3: every dataset form reaches the trainer
def test_eval_dataset_is_converted_and_evaluated(tmp_path):
    "Issue 18 case 1: a raw eval set (KeyError 'prompt' after one step before) is converted like the training set."
    t = _train(tmp_path, make_shapes_dataset(8, seed=3), eval_dataset=make_shapes_dataset(4, seed=9), eval_strategy="steps",
               eval_steps=1, per_device_eval_batch_size=4)
    assert any(k.startswith("eval_") for h in t.state.log_history for k in h)


@pytest.mark.parametrize("form", ["stream", "stream with prompts", "undecoded", "list of paths"])
def test_every_dataset_form_trains(tmp_path, form):
    "Issue 18 cases 2 and 3: a stream, a stream already holding prompts, undecoded {bytes, path} images, a list of rows with paths."
    ds = make_shapes_dataset(8, seed=3)
    if form == "stream": train = ds.to_iterable_dataset()
    elif form == "stream with prompts": train = grpo_dataset(ds).to_iterable_dataset()
    elif form == "undecoded": train = ds.cast_column("image", datasets.Image(decode=False))
    else:
        train = ds.to_list()
        for i, r in enumerate(train):
            ds[i]["image"].save(tmp_path / f"{i}.png"); r["image"] = str(tmp_path / f"{i}.png")
    t = _train(tmp_path, train)
    assert t.state.global_step == 1 and t.last_explanations


@pytest.mark.parametrize("form", ["dataset", "undecoded", "stream", "list"])
def test_grpo_rows_are_decoded(form):
    "What goes in is what every later stage gets: decoded RGB PIL images and box lists, whatever the input form."
    ds = make_shapes_dataset(3, seed=1)
    data = {"dataset": ds, "undecoded": ds.cast_column("image", datasets.Image(decode=False)), "stream": ds.to_iterable_dataset(),
            "list": [dict(r, image=np.asarray(r["image"])) for r in ds]}[form]
    rows = list(grpo_dataset(data))
    assert len(rows) == 3 and all(isinstance(r["image"], Image.Image) and r["image"].mode == "RGB" for r in rows)
    for r, boxes in zip(rows, ds["bbox"]): np.testing.assert_allclose(r["bbox"], boxes)


def test_bad_or_empty_datasets_are_one_line():
    stream = make_shapes_dataset(2).cast_column("image", datasets.Image(decode=False)).to_iterable_dataset()
    with pytest.raises(ValueError, match="on_error='skip' needs a Dataset"): grpo_dataset(stream, on_error="skip")
    with pytest.raises(ValueError, match="empty"): grpo_dataset([])
    with pytest.raises(ValueError, match="GRPO row 1 cannot be trained on: image file not found"):
        grpo_dataset([dict(r) for r in make_shapes_dataset(1)] + [dict(image="nope.png", problem="q", solution="a", bbox=[])])
    bad = datasets.Dataset.from_list([dict(image={"bytes": b"junk", "path": None}, problem="q", solution="a", bbox=[[0, 0, 1, 1]])])
    with pytest.raises(ValueError, match="GRPO row 0 cannot be trained on: unreadable image"): list(grpo_dataset(bad.to_iterable_dataset()))
    with pytest.raises(TypeError, match="pass a datasets.Dataset"): grpo_dataset({"image": 1})


# ---------------------------------------------------------------- 4: phone photos
def _turned(tmp_path, upright: Image.Image):
    "`upright` stored as a phone does when held sideways: pixels turned 90° counter-clockwise, EXIF Orientation 6."
    exif = Image.Exif(); exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    upright.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif.tobytes(), quality=98)
    return path


def test_exif_rotated_photo_is_upright_everywhere(tmp_path):
    "Issue 18 case 4: the rotated JPEG explained from its path scores as the upright image does (0.060 vs 0.526 before)."
    row = make_shapes_dataset(1, seed=5, image_size=(224, 112))[0]
    path = _turned(tmp_path, row["image"])
    assert load_image(path).size == (224, 112) and to_rgb(str(path)).size == (224, 112)
    model, processor = pretrained_tiny()
    done = format_completion(row["thinking"], row["solution"])
    from_path = explain(model, processor, str(path), row["problem"], completion=done)
    upright = explain(model, processor, to_rgb(str(path)), row["problem"], completion=done)
    np.testing.assert_allclose(from_path.answer_map, upright.answer_map, rtol=1e-5)
    assert upright.valid and energy_pointing_game(from_path.answer_map, row["bbox"]) == energy_pointing_game(upright.answer_map, row["bbox"])
    ds = datasets.Dataset.from_list([dict(image=str(path), problem=row["problem"], solution=row["solution"], bbox=row["bbox"])])
    assert list(grpo_dataset(ds))[0]["image"].size == (224, 112)
    import matplotlib.pyplot as plt
    import saliency_r1.viz  # noqa: F401  (Explanation.show)
    raw = Image.open(path)   # the map drawn on the photo as opened (sideways pixels): upright, as the model saw it
    np.testing.assert_array_equal(from_path.upsample(raw), from_path.upsample((112, 224)))
    ax = from_path.show(raw, boxes=row["bbox"])
    assert ax.get_images()[0].get_array().shape[:2] == (112, 224); plt.close(ax.figure)


# ---------------------------------------------------------------- 5-6: conventions
def _prefilling(processor):
    "The processor with a chat template that opens <think> at the end of the prompt (as Qwen3 thinking mode does)."
    p = copy.deepcopy(processor)
    p.chat_template = p.chat_template.replace("<|im_start|>assistant\n{% endif %}", "<|im_start|>assistant\n<think>{% endif %}")
    p.tokenizer.chat_template = p.chat_template
    assert p.chat_template != processor.chat_template
    return p


def test_prefilled_think_gives_the_same_map():
    "Issue 18 case 5: with <think> in the prompt the completion starts inside the thinking; spans and maps are the same."
    model, processor = pretrained_tiny()
    row = make_shapes_dataset(1, seed=2)[0]
    done = format_completion(row["thinking"], row["solution"])
    plain = explain(model, processor, row["image"], row["problem"], completion=done)
    pre = explain(model, _prefilling(processor), row["image"], row["problem"], completion=done)
    assert plain.valid and pre.valid and not pre.text.startswith("<think>")
    assert (pre.think_span.start, len(pre.think_span)) == (plain.think_span.start - 1, len(plain.think_span))
    np.testing.assert_allclose(pre.answer_map, plain.answer_map, rtol=1e-5, atol=1e-8)
    assert format_reward([pre.text], think_prefilled=[True]) == [1.0] and accuracy_reward([pre.text], solution=[row["solution"]]) == [1.0]


def test_trainer_reads_prefill_from_the_template(tmp_path):
    "SaliencyGRPOTrainer renders a prompt with the processor's template and marks the rows whose template opens <think>."
    model, processor = pretrained_tiny()
    ds = make_shapes_dataset(4, seed=3)
    t = SaliencyGRPOTrainer(model, _args(tmp_path), train_dataset=ds, processing_class=_prefilling(processor),
                            eval_dataset={"a": ds, "b": ds.to_iterable_dataset()})
    assert t.train_dataset["think_prefilled"] == [True] * 4
    assert all(r["think_prefilled"] for r in t.eval_dataset["b"]) and t.eval_dataset["a"]["think_prefilled"] == [True] * 4
    model, processor = pretrained_tiny()
    assert "think_prefilled" not in SaliencyGRPOTrainer(model, _args(tmp_path), train_dataset=ds, processing_class=processor).train_dataset.column_names


def test_answer_tags_are_not_the_answer():
    "Issue 18 case 6: R1-V <answer> tags in the completion or the solution, \\boxed{}; the map's span is the answer tokens only."
    assert accuracy_reward(["<think>x</think><answer>red</answer>"], solution=["red"]) == [1.0]
    assert accuracy_reward(["<think>x</think>red"], solution=["<answer> red </answer>"]) == [1.0]
    assert accuracy_reward(["<think>x</think>\\boxed{red}"], solution=["red"]) == [1.0]
    assert format_reward(["<think>x</think><answer>red</answer>", "<think>x</think><answer></answer>"]) == [1.0, 0.0]
    model, processor = pretrained_tiny()
    row = make_shapes_dataset(1, seed=2)[0]
    e = explain(model, processor, row["image"], row["problem"], completion=f"<think>{row['thinking']}</think><answer>{row['solution']}</answer>")
    assert e.valid and "".join(e.tokens[i] for i in e.answer_span) == row["solution"]


def test_unknown_convention_warns_once():
    _WARNED.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3): assert format_reward(["◁think▷It is red.◁/think▷red"]) == [0.0]
    assert len(caught) == 1 and "◁think▷" in str(caught[0].message)
    model, processor = pretrained_tiny()
    _WARNED.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        e = explain(model, processor, make_shapes_dataset(1)[0]["image"], "q", completion="<reasoning>x</reasoning>red")
    assert not e.valid and sum(str(w.message).startswith("Completions think inside <reasoning>") for w in caught) == 1   # the map says so too


ANSWER_FORMS = [("red", "{}"), ("red", "<answer>{}</answer>"), ("red", "\\boxed{{{}}}"), ("red", "The answer is {}."),
                ("2", "\\boxed{{{}}}"), ("(B)", "<answer>{}</answer>"), ("yes", "<answer> {} </answer>")]

@given(st.sampled_from(ANSWER_FORMS), st.sampled_from(ANSWER_FORMS), st.sampled_from(["", " ", "\n"]))
def test_answer_forms_match_each_other(a, s, pad):
    "Any wrapping of the answer (bare, tags, boxed, a lead-in) matches any wrapping of the same solution, and not another."
    (x, fa), (y, fs) = a, s
    assert match_answer(pad + fa.format(x) + pad, fs.format(y)) == (x == y)
    assert final_answer(f"<think>t</think>{fa.format(x)}".split("</think>")[1]) == final_answer(fa.format(x))


# ---------------------------------------------------------------- 7: eval mode
def test_explain_runs_in_eval_mode_and_restores_it():
    "Issue 18 case 7: a LoRA model left in training mode (dropout 0.05) gives the eval-mode map every time, and stays in training mode."
    from peft import get_peft_model
    model, processor = pretrained_tiny()
    lora = get_peft_model(model, make_lora_config(model, ["q_proj", "v_proj"]))
    row = make_shapes_dataset(1, seed=2)[0]
    done = format_completion(row["thinking"], row["solution"])
    lora.train()
    torch.manual_seed(0); a = explain(lora, processor, row["image"], row["problem"], completion=done)
    torch.manual_seed(1); b = explain(lora, processor, row["image"], row["problem"], completion=done)
    assert lora.training
    lora.eval(); c = explain(lora, processor, row["image"], row["problem"], completion=done)
    np.testing.assert_array_equal(a.answer_map, b.answer_map); np.testing.assert_array_equal(a.answer_map, c.answer_map)


# ---------------------------------------------------------------- 8: bounds
def test_sizes_are_bounded_before_allocating():
    "Issue 18 case 8: 3.35 GiB and 931 GiB grids are one line; many maps are scored in chunks."
    for g in [(60000, 60000), (10**6, 10**6)]:
        with pytest.raises(ValueError, match=r"grid height must be an integer in \[1, 1024\]"): cell_coverage([[0, 0, .5, .5]], g)
    assert cell_coverage_batch([[[0, 0, .5, .5]]] * 20000, (32, 32)).shape == (20000, 32, 32)
    with pytest.raises(ValueError, match="make them in parts"): make_shapes_dataset(10**7)
