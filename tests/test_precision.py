"""Maps of a bfloat16 model (issue 22): the map arithmetic runs in float32 whatever the model's dtype, so a bf16 map
equals a float32 computation from the same recorded bf16 activations; what remains is the bf16 forward's own error,
measured by bench/bf16_maps.py and stated in 05_saliency."""
import copy

import numpy as np
import pytest
import torch

from saliency_r1.data import make_shapes_dataset
from saliency_r1.models import pretrained_tiny, prepare_inputs
from saliency_r1.adapters import adapter_for
from saliency_r1.saliency import explain, explain_batch, record_saliency, teacher_forced_inputs

METHODS = ("chain", "cot", "direct", "top_token")


@pytest.fixture(scope="module")
def recorded():
    "The shipped model in bf16, four scenes, its own completions, and one teacher-forced recording of them."
    model, processor = pretrained_tiny(dtype=torch.bfloat16)
    rows = make_shapes_dataset(4, seed=2024)
    inputs = prepare_inputs(processor, list(rows["image"]), list(rows["problem"]))
    P = inputs["input_ids"].shape[1]
    with torch.no_grad():
        ids = model.generate(**inputs, do_sample=False, max_new_tokens=48)[:, P:]
        with record_saliency(model, prompt_length=P) as rec:
            model(**teacher_forced_inputs(inputs, ids, torch.ones_like(ids)), use_cache=False)
    return model, processor, rec, ids


def upcast(rec, model32):
    "The recording with every recorded tensor in float32 and the weights read from a float32 copy: a plain float32 computation."
    r = copy.copy(rec)
    r.adapter = adapter_for(model32)
    r._queries = [[q.float() for q in qs] for qs in rec._queries]
    r._keys, r._values = [k.float() for k in rec._keys], [v.float() for v in rec._values]
    r._inv_rms = [x.float() for x in rec._inv_rms]
    return r


def rel(a, b): return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("method", METHODS)
def test_bf16_maps_are_float32_arithmetic(recorded, method):
    """A bf16 recording's maps equal the float32 computation from the same activations upcast to 1e-5 of their peak;
    the same maps computed in bf16 arithmetic (map_dtype=torch.bfloat16) do not (the test can tell them apart)."""
    model, processor, rec, ids = recorded
    assert rec.queries(0).dtype == rec.layer_kv(0)[1].dtype == torch.bfloat16
    reference = explain_batch(upcast(rec, copy.deepcopy(model).float()), ids, processor, method)
    default = explain_batch(rec, ids, processor, method)
    bf16 = explain_batch(rec, ids, processor, method, map_dtype=torch.bfloat16)
    assert sum(e.valid for e in reference) >= 3
    for d, b, r in zip(default, bf16, reference):
        if not r.valid: continue
        assert d.answer_map.dtype == np.float32 and rel(d.answer_map, r.answer_map) <= 1e-5
    assert max(rel(b.answer_map, r.answer_map) for b, r in zip(bf16, reference) if r.valid) > 1e-3


def test_map_dtype_is_checked(recorded):
    model, processor, rec, ids = recorded
    with pytest.raises(ValueError, match="map_dtype must be a floating-point torch dtype"): explain_batch(rec, ids, processor, map_dtype=torch.int8)
    with pytest.raises(ValueError, match="map_dtype must be a floating-point torch dtype"): explain_batch(rec, ids, processor, map_dtype="float32")
