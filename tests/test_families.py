"Tiny models of the non-Qwen families (issue 21): build, token boxes against the model's measured receptive fields, generate, save/reload."
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

from saliency_r1.data import make_shapes_dataset
from saliency_r1.models import (FAMILIES, image_token_boxes, load_vlm, measured_token_boxes, prepare_inputs, tiny_processor,
                                tiny_vlm)

SIZES = [(112, 112), (150, 200), (100, 300), (300, 90), (60, 60), (113, 170)]  # (height, width)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    model, processor = tiny_vlm(request.param, seed=1)
    return request.param, model, processor


@pytest.fixture(scope="module")
def batch():
    rows = make_shapes_dataset(2, seed=0, image_size=(200, 150))
    return [rows["image"][0], make_shapes_dataset(1, seed=1)[0]["image"]], [rows["problem"][0], rows["problem"][1] + " Look at every shape."]


def test_boxes_count_and_range(family):
    _, model, processor = family
    for h, w in SIZES:
        enc = prepare_inputs(processor, [Image.new("RGB", (w, h))], ["Q?"])
        boxes = image_token_boxes(processor, h, w)
        assert len(boxes) == int((enc["input_ids"] == model.config.image_token_id).sum()), (h, w)
        real = boxes[~np.isnan(boxes[:, 0])]
        assert (real >= 0).all() and (real <= 1).all() and (real[:, 2] > real[:, 0]).all() and (real[:, 3] > real[:, 1]).all()


@pytest.mark.parametrize("size", [(150, 200), (113, 170)])
def test_boxes_match_measured_receptive_fields(family, size):
    "Through the model's own image path (resize, pad, crop, pixel shuffle, pool, unpad, newline): within ~1 resampled pixel."
    _, model, processor = family
    measured, predicted = measured_token_boxes(model, processor, Image.new("RGB", size[::-1])), image_token_boxes(processor, *size)
    assert (np.isnan(measured[:, 0]) == np.isnan(predicted[:, 0])).all()
    ok = ~np.isnan(predicted[:, 0])
    assert np.abs(measured[ok] - predicted[ok]).max() < 0.02   # measured: extent of pixel centres; a tile pixel is 1/56


def test_generate_left_padded_batch(family, batch):
    name, model, processor = family
    images, questions = batch
    enc = prepare_inputs(processor, images, questions)
    assert enc["attention_mask"][:, -1].tolist() == [1, 1] and enc["attention_mask"][:, 0].tolist().count(0) >= 1
    with torch.no_grad():
        two = model.generate(**enc, max_new_tokens=5, do_sample=False)
        one = model.generate(**prepare_inputs(processor, images[1:], questions[1:]), max_new_tokens=5, do_sample=False)
    assert torch.equal(two[1, -5:], one[0, -5:])


def test_teacher_forced_and_save_reload(family, batch):
    name, model, processor = family
    images, questions = batch
    enc = prepare_inputs(processor, images, questions, completions=["<think>The circle is red.</think>red"] * 2)
    ids = processor.tokenizer("<think>The circle is red.</think>red", add_special_tokens=False)["input_ids"]
    assert enc["input_ids"][0, -len(ids):].tolist() == ids
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d); processor.save_pretrained(d)
        model2, processor2 = load_vlm(d)
        assert type(processor2) is type(processor) and type(model2) is type(model)
        enc2 = prepare_inputs(processor2, images, questions, completions=["<think>The circle is red.</think>red"] * 2)
        assert torch.equal(enc["input_ids"], enc2["input_ids"])
        assert image_token_boxes(processor2, 150, 200).tobytes() == image_token_boxes(processor, 150, 200).tobytes()
        with torch.no_grad():
            real = enc["attention_mask"].bool()
            torch.testing.assert_close(model(**enc).logits[real], model2(**enc2).logits[real], rtol=1e-5, atol=1e-5)


def test_family_tokens_and_template(family):
    name, model, processor = family
    tok = processor.tokenizer
    assert model.config.get_text_config().eos_token_id == tok.eos_token_id == tok.convert_tokens_to_ids(FAMILIES[name].eos)
    assert tok.decode(tok("<think>a</think>b")["input_ids"], skip_special_tokens=True) == "<think>a</think>b"
    assert sum(p.numel() for p in model.parameters()) < 1.5e6


def test_qwen_boxes_are_the_grid():
    processor = tiny_processor("qwen2_5_vl")
    enc = prepare_inputs(processor, [Image.new("RGB", (200, 150))], ["Q?"])
    assert enc["image_grid_thw"][0].tolist() == [1, 10, 14] and len(image_token_boxes(processor, 150, 200)) == 35


def test_explorer_on_a_shipped_model_of_another_family(arch="llava_onevision"):
    "The explorer runs unchanged on the trained tiny LLaVA-OneVision (its maps are over token rectangles, not a grid): maps, flow, every widget."
    pytest.importorskip("ipywidgets")
    from saliency_r1.models import pretrained_tiny
    from saliency_r1.viz import SaliencyExplorer
    model, processor = pretrained_tiny(arch)
    x = SaliencyExplorer(model, processor, make_shapes_dataset(2, seed=4242), methods=("chain", "cot"))
    assert x.explanation().valid and x.renders == 1 and min(len(x.maps.value), len(x.flow.value)) > 1000
    for widget, value in ((x.token, x.token.value - 1), (x.method, "cot"), (x.opacity, 0.4), (x.example, 1)):
        before = x.renders; widget.value = value
        assert x.renders == before + 1, widget.description
    assert x.explanation("chain").answer_map.size == len(x.explanation().token_boxes)
