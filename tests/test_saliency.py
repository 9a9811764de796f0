"Saliency extractor (issue 3): exactness against a plain reference, recording, batching, a planted model, smoke tests."
import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from saliency_r1.data import Box, format_completion, make_shapes_dataset
from saliency_r1.metrics import energy_pointing_game
from saliency_r1.models import ARCHS, prepare_inputs, tiny_vlm
from saliency_r1.saliency import (METHODS, SALIENCY_ATTENTION, _trim, explain, explain_batch, find_spans, record_saliency,
                                  teacher_forced_inputs, tokenize_completions)

QUESTIONS = ["What colour is the circle?", "How many squares are there in this picture?", "Which shape is red?"]
THINK = "The circle is at the top left. It is red."


@pytest.fixture(scope="module", params=list(ARCHS))
def family(request):
    model, processor = tiny_vlm(request.param, seed=1)
    return model, processor


@pytest.fixture(scope="module")
def images():
    img = make_shapes_dataset(1, seed=5)[0]["image"]
    return [img, img.resize((168, 112)), img.resize((112, 196))]


def forced_inputs(processor, images, questions, completions, device="cpu"):
    "Prompt inputs, completion ids (right-padded) and mask, and the teacher-forced inputs, as `explain` builds them."
    prompt = prepare_inputs(processor, images, questions, device=device)
    seqs = tokenize_completions(processor, completions)
    n = max(map(len, seqs))
    ids = torch.tensor([s + [processor.tokenizer.pad_token_id] * (n - len(s)) for s in seqs])
    mask = torch.tensor([[int(j < len(s)) for j in range(n)] for s in seqs])
    return prompt, ids, mask, teacher_forced_inputs(prompt, ids, mask)


def text_parts(model):
    """Where the reference reads, per family: the decoder (`.layers`, `.norm`), γ of the final norm as the forward applies
    it, its ε, and each layer's post-attention norm (Gemma 3: between o_proj and the residual) or None."""
    inner = model.model
    lm = inner.text_model if hasattr(inner, "text_model") else inner.language_model   # Idefics3 / the others
    if model.config.model_type == "gemma3":   # Gemma RMSNorm: x / rms(x) * (1 + w)
        return lm, 1 + lm.norm.weight, lm.norm.eps, [layer.post_attention_layernorm for layer in lm.layers]
    return lm, lm.norm.weight, lm.norm.variance_epsilon, None


@torch.no_grad()
def naive_reference(model, inputs, P, b, think, answer, ks, covers=None):
    """Row b's D_k for completion tokens `ks`, Σ_{k∈A} C_k of "cot" (before the ReLU), cot's think flow, and the token
    chain's c(t), D_t and S, over the image tokens of the prompt (those `covers` keeps, if given), written plainly from eager `output_attentions`
    probabilities and explicit per-head value projections: one function G(j, keys, rows) = Σ_{l,h} row · (value logit
    of token j on each key). A post-attention norm (Gemma 3) scales head h's o_proj output by its gain and the 1/rms of
    the layer's whole o_proj output at that row."""
    tc = model.config.get_text_config()
    lm, gamma, eps, post = text_parts(model)
    H, Hkv = tc.num_attention_heads, tc.num_key_value_heads
    model.set_attn_implementation({"text_config": "eager"})
    normed, final, o_out = {}, {}, {}
    hooks = [layer.input_layernorm.register_forward_hook(lambda m, a, o, l=l: normed.__setitem__(l, o[b]))
             for l, layer in enumerate(lm.layers)]
    hooks.append(lm.norm.register_forward_hook(lambda m, a, o: final.__setitem__("r", a[0][b])))
    hooks += [m.register_forward_hook(lambda m, a, o, l=l: o_out.__setitem__(l, a[0][b])) for l, m in enumerate(post or ())]
    try: out = model(**inputs, output_attentions=True)
    finally:
        for h in hooks: h.remove()
        model.set_attn_implementation({"text_config": "sdpa"})
    ids = inputs["input_ids"][b]
    img = (ids[:P] == model.config.image_token_id).nonzero()[:, 0]
    img = img if covers is None else img[torch.as_tensor(covers)]
    d = lm.layers[0].self_attn.head_dim
    att = [a[b] for a in out.attentions]  # per layer (H, S, S)

    def G(j, keys, row=lambda l, h, q: att[l][h, q]):
        "Σ_{l,h} row(l, h, q_j)[keys] · value logit of y_j on `keys`: the direct logit attribution with any weights."
        q, y = P + j - 1, ids[P + j]
        inv_rms = 1 / torch.sqrt(final["r"][q].pow(2).mean() + eps)
        total = torch.zeros(len(keys))
        for l, layer in enumerate(lm.layers):
            v = layer.self_attn.v_proj(normed[l])  # (S, Hkv·d): the values, projected explicitly
            gain, scale = (1, 1) if post is None else (1 + post[l].weight, 1 / torch.sqrt(o_out[l][q].pow(2).mean() + post[l].eps))
            for h in range(H):
                kv = h // (H // Hkv)
                w = layer.self_attn.o_proj.weight[:, h * d:(h + 1) * d].T @ (gain * gamma * model.lm_head.weight[y])
                total += row(l, h, q)[keys] * (v[keys, kv * d:(kv + 1) * d] @ w) * inv_rms * scale
        return total

    D = torch.stack([G(k, img) for k in ks])
    # cot: the answer query's row on each thinking token, times the row of the query that generated it (P+t-1)
    per_t = [[G(k, img, lambda l, h, q, t=t: att[l][h, q, P + t] * att[l][h, P + t - 1]) for k in answer] for t in think]
    C, flow = sum(sum(x) for x in per_t), torch.stack([sum(x).sum() for x in per_t])
    c = sum(G(k, [P + t for t in think]).clamp(min=0) for k in answer)
    D_think = torch.stack([G(t, img) for t in think])
    return dict(D=D.numpy(), C=C.numpy(), flow=flow.numpy(), c=c.numpy(), D_think=D_think.numpy(),
                S=(c @ D_think).clamp(min=0).numpy())


def assert_rel(actual, expected, rel=1e-5):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(np.abs(expected).max(), 1e-30)
    assert np.abs(actual - expected).max() <= rel * scale, f"max abs diff {np.abs(actual - expected).max():.3g} vs scale {scale:.3g}"


def test_exact_against_naive_reference(family, images):
    "token_map(k), every routed map ('chain', 'cot', 'direct') and its think flow equal the plain reference to 1e-5, left-padded batch, mixed sizes."
    model, processor = family
    completions = [format_completion(THINK, "red"), format_completion("It is a square.", "two squares")]
    imgs, qs = images[:2], QUESTIONS[:2]
    chain = explain(model, processor, imgs, qs, completion=completions)
    cot = explain(model, processor, imgs, qs, completion=completions, method="cot")
    direct = explain(model, processor, imgs, qs, completion=completions, method="direct")
    prompt, ids, mask, full = forced_inputs(processor, imgs, qs, completions)
    P = prompt["input_ids"].shape[1]
    assert prompt["attention_mask"].min() == 0  # the batch really is padded
    for b, e in enumerate(chain):
        assert e.valid and e.method == "chain" and cot[b].think_span == e.think_span
        think, answer = list(e.think_span), list(e.answer_span)
        ks = sorted({0, think[0], think[-1], *answer, len(e.completion_ids) - 1})
        ref = naive_reference(model, full, P, b, think, answer, ks)
        for i, k in enumerate(ks): assert_rel(e.token_map(k).ravel(), ref["D"][i])
        assert_rel(e.think_flow, ref["c"])
        assert_rel(e.think_maps.reshape(len(think), -1), ref["D_think"])
        assert_rel(e.answer_map.ravel(), ref["S"])
        assert_rel(cot[b].answer_map.ravel(), np.clip(ref["C"], 0, None))
        assert_rel(cot[b].think_flow, ref["flow"])
        assert_rel(direct[b].answer_map.ravel(), np.clip(ref["D"][[ks.index(k) for k in answer]].sum(0), 0, None))


def scripted(processor, completions, P):
    "prefix_allowed_tokens_fn that makes generation write `completions` (then pad)."
    seqs = tokenize_completions(processor, completions)
    pad = processor.tokenizer.pad_token_id
    return lambda b, ids: [seqs[b][len(ids) - P] if len(ids) - P < len(seqs[b]) else pad]


def test_generation_matches_teacher_forcing(family, images):
    "Maps recorded during generate equal those of one teacher-forced forward of the same ids; rows end at different steps."
    model, processor = family
    completions = [format_completion(THINK, "red"), format_completion("Two.", "two")]
    prompt, ids, mask, full = forced_inputs(processor, images[:2], QUESTIONS[1:3], completions)
    P = prompt["input_ids"].shape[1]
    with torch.no_grad(), record_saliency(model) as rec:
        out = model.generate(**prompt, max_new_tokens=ids.shape[1] + 2, do_sample=False,
                             prefix_allowed_tokens_fn=scripted(processor, completions, P))
    with torch.no_grad(), record_saliency(model, prompt_length=P) as rec_tf: model(**full)
    for method in ("chain", "cot"):
        gen, tf = explain_batch(rec, out[:, P:], processor, method), explain_batch(rec_tf, ids, processor, method)
        for g, t in zip(gen, tf):
            assert g.valid and t.valid and g.think_span == t.think_span and g.answer_span == t.answer_span
            np.testing.assert_array_equal(g.completion_ids, t.completion_ids)
            assert_rel(g.answer_map, t.answer_map)
            assert_rel(g.think_flow, t.think_flow)
            if method == "chain": assert_rel(g.think_maps, t.think_maps)
            for k in (0, g.answer_span.start, len(g.completion_ids) - 1): assert_rel(g.token_map(k), t.token_map(k))


def test_recorder_changes_no_token_or_logit(family, images):
    "Greedy generation with recording on gives the same tokens and logits as plain SDPA, and restores the attention."
    model, processor = family
    prompt = prepare_inputs(processor, images[:2], QUESTIONS[:2])
    kw = dict(max_new_tokens=10, do_sample=False, return_dict_in_generate=True, output_logits=True)
    with torch.no_grad():
        plain = model.generate(**prompt, **kw)
        with record_saliency(model) as rec: recorded = model.generate(**prompt, **kw)
    assert torch.equal(plain.sequences, recorded.sequences)
    assert torch.equal(torch.stack(plain.logits), torch.stack(recorded.logits))
    assert model.config.text_config._attn_implementation == "sdpa"
    assert rec.queries(0).shape[2] == 10 and rec.nbytes > 0
    # a training-style forward with the recording attention left on is plain SDPA
    model.set_attn_implementation({"text_config": SALIENCY_ATTENTION})
    try:
        with torch.no_grad(): logits = model(**prompt).logits
    finally: model.set_attn_implementation({"text_config": "sdpa"})
    with torch.no_grad(): torch.testing.assert_close(logits, model(**prompt).logits, rtol=0, atol=0)


def test_batch_equals_examples_one_at_a_time(images):
    "A padded batch with mixed image sizes gives each example the maps it gets alone (padding does not leak)."
    model, processor = tiny_vlm("qwen2_5_vl", seed=2)
    completions = [format_completion(THINK, "red"), format_completion("A square.", "two"), format_completion("Red.", "circle")]
    for method in ("chain", "cot", "rollout"):
        batch = explain(model, processor, images, QUESTIONS, completion=completions, method=method)
        for b in range(3):
            alone = explain(model, processor, images[b], QUESTIONS[b], completion=completions[b], method=method)
            assert_rel(batch[b].answer_map, alone.answer_map, 1e-4)
            if method == "chain": assert_rel(batch[b].token_map(2), alone.token_map(2), 1e-4)


def test_invalid_structure_gives_zero_maps(images):
    "Missing tags, an unclosed think, an empty answer, a truncated generation: valid=False, all-zero map, no NaN."
    model, processor = tiny_vlm("qwen2_5_vl", seed=3)
    bad = ["no tags at all", "<think>left open", "<think>fine</think>", "<think></think>red", "a<think>b</think>c"]
    for method in METHODS:
        exps = explain(model, processor, [images[0]] * len(bad), [QUESTIONS[0]] * len(bad), completion=bad, method=method)
        for e in exps:
            assert not e.valid and e.answer_map.shape == (4, 4) and e.answer_map.dtype == np.float32
            assert not e.answer_map.any() and np.isfinite(e.token_map(0)).all()
    truncated = explain(model, processor, images[0], QUESTIONS[0], max_new_tokens=5)
    assert not truncated.valid and truncated.answer_span is None and not truncated.answer_map.any()


def planted_model(region_cells):
    """A 1-layer Qwen2.5-VL whose logits depend on the image only through the image tokens in `region_cells`.

    The MLP is zeroed, text embeddings and all other image tokens are zero in the dimensions the value projection
    reads (and v_proj has no bias), so only region tokens have non-zero values; their feature is chosen so every
    head's contribution to the logit of 'red' is positive."""
    model, processor = tiny_vlm("qwen2_5_vl", seed=4, num_layers=1)
    lm, half = model.model.language_model, 64
    attn, tok = lm.layers[0].self_attn, processor.tokenizer
    with torch.no_grad():
        lm.layers[0].mlp.down_proj.weight.zero_()
        attn.v_proj.weight[:, :half] = 0; attn.v_proj.bias.zero_()
        lm.embed_tokens.weight[:, half:] = 0
        H, Hkv, d = 4, 2, attn.head_dim
        u = model.lm_head.weight[tok.convert_tokens_to_ids("red")]
        w = (attn.o_proj.weight.T @ (lm.norm.weight * u)).view(H, d)          # head readouts of 'red'
        Wv = attn.v_proj.weight.view(Hkv, d, -1)
        a = torch.stack([lm.layers[0].input_layernorm.weight * (Wv[h // 2].T @ w[h]) for h in range(H)])[:, half:]
        f = a.T @ torch.linalg.solve(a @ a.T, torch.ones(H))                   # a_h · f = 1 for every head
    feature = torch.zeros(128); feature[half:] = 5 * f / f.norm()

    def plant(module, args, out):
        x = torch.zeros_like(out.pooler_output)
        x[region_cells] = feature
        out.pooler_output = x
        return out
    model.model.visual.register_forward_hook(plant)
    return model, processor


def test_planted_region_gets_the_map(images):
    """A model that provably reads one region: 'cot', 'direct' and 'gradient' put all their mass there; D_k is complete.
    ('chain' has nothing to route here: the planted model's thinking tokens carry no value, so c(t) = 0.)"""
    completion = format_completion(THINK, "red")
    for cells, box in (([0, 1, 4, 5], Box(0, 0, 0.5, 0.5)), ([10, 11, 14, 15], Box(0.5, 0.5, 1, 1))):
        model, processor = planted_model(cells)
        for method in ("cot", "direct", "gradient"):
            e = explain(model, processor, images[0], QUESTIONS[0], completion=completion, method=method)
            assert e.valid and e.answer_map.sum() > 0
            assert energy_pointing_game(e.answer_map, [box]) == pytest.approx(1.0)
            assert (e.answer_map.ravel()[cells] > 0).all()
        # completeness: the logit of 'red' = the query's own embedding through the norm + Σ_p D(p)
        prompt, ids, mask, full = forced_inputs(processor, [images[0]], [QUESTIONS[0]], [completion])
        P, k = prompt["input_ids"].shape[1], e.answer_span.start
        lm, r = model.model.language_model, {}
        hook = lm.norm.register_forward_hook(lambda m, a, o: r.__setitem__("r", a[0][0]))
        with torch.no_grad(): logit = model(**full).logits[0, P + k - 1, ids[0, k]]
        hook.remove()
        q, y = P + k - 1, ids[0, k]
        inv_rms = torch.rsqrt(r["r"][q].pow(2).mean() + lm.norm.variance_epsilon)
        own = (model.lm_head.weight[y] * lm.norm.weight) @ lm.embed_tokens.weight[full["input_ids"][0, q]] * inv_rms
        with torch.no_grad(): assert float(own + e.token_map(k).sum()) == pytest.approx(float(logit), rel=1e-5)
        # without the region's features the answer loses exactly that contribution
        model.model.visual._forward_hooks.clear()
        with torch.no_grad(): erased = model(**full).logits[0, P + k - 1, ids[0, k]]
        assert float(erased) < float(logit)


def test_bfloat16_and_mixed_sizes_smoke(images):
    "bfloat16 weights, a batch of three image sizes, every method, generation and teacher forcing: finite maps."
    model, processor = tiny_vlm("qwen2_5_vl", seed=5, dtype=torch.bfloat16)
    completions = [format_completion(THINK, "red")] * 3
    for method in METHODS:
        for e, grid in zip(explain(model, processor, images, QUESTIONS, completion=completions, method=method),
                           [(4, 4), (4, 6), (7, 4)]):
            assert e.valid and e.grid == grid and e.answer_map.dtype == np.float32
            assert np.isfinite(e.answer_map).all() and (e.answer_map >= 0).all()
    for e in explain(model, processor, images, QUESTIONS, max_new_tokens=6):
        assert e.answer_map.shape == e.grid and np.isfinite(e.answer_map).all()
    assert explain(model, processor, images[0], QUESTIONS[0], completion=completions[0]).upsample(images[0]).shape == (112, 112)


def test_trainer_pattern_sampling_and_peft(images):
    "The trainer's calls: record around a sampled generate of a PEFT model, one Explanation per row; LoRA counted."
    from peft import LoraConfig, get_peft_model
    base, processor = tiny_vlm("qwen2_5_vl", seed=6)
    lora = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False))
    merged = copy.deepcopy(lora).merge_and_unload()
    prompt = prepare_inputs(processor, images[:2], QUESTIONS[:2])
    P = prompt["input_ids"].shape[1]
    completion = format_completion(THINK, "red")
    scripts = [completion, completion, format_completion("Two.", "two"), format_completion("A red square.", "square")]
    torch.manual_seed(0)
    with torch.no_grad(), record_saliency(lora) as rec:  # sampling, two samples per prompt, forced to valid completions
        out = lora.generate(**prompt, max_new_tokens=20, do_sample=True, temperature=1.0, num_return_sequences=2,
                            prefix_allowed_tokens_fn=scripted(processor, scripts, P))
    exps = explain_batch(rec, out[:, P:], processor)
    assert [e.grid for e in exps] == [(4, 4), (4, 4), (4, 6), (4, 6)] and all(e.valid for e in exps)
    assert_rel(exps[0].answer_map, exps[1].answer_map)
    grads = explain_batch(rec, out[:, P:], processor, method="gradient")
    assert all(g.valid and g.answer_map.sum() > 0 for g in grads)
    assert_rel(grads[0].answer_map, grads[1].answer_map, 1e-4)
    a = explain(lora, processor, images[0], QUESTIONS[0], completion=completion)
    b = explain(merged, processor, images[0], QUESTIONS[0], completion=completion)
    assert_rel(a.answer_map, b.answer_map, 1e-4)
    assert_rel(a.token_map(3), b.token_map(3), 1e-4)
    prompt, ids, mask, full = forced_inputs(processor, images[:1], QUESTIONS[:1], [completion])
    with torch.no_grad(), record_saliency(base, prompt_length=prompt["input_ids"].shape[1]) as rec: base(**full)
    with pytest.raises(ValueError, match="rollout=True"): explain_batch(rec, ids, processor, method="rollout")


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(st.sampled_from(["<", "think", ">", "</", "<think>", "</think>", "a", " ", "", "b c", ">a", "\n", "E"]), max_size=14))
def test_find_spans_is_its_definition(tokens):
    """find_spans (offsets searched by bisection) equals its definition token by token: the thinking tokens lie wholly
    between the two tags, the answer tokens start after the closing tag and end before the end of turn; edges trimmed."""
    ids = [1 if t == "E" else 0 for t in tokens]
    end = next((i for i, t in enumerate(ids) if t == 1), None)
    n = len(ids) if end is None else end
    text, starts = "".join(tokens[:n]), np.cumsum([0] + [len(t) for t in tokens[:n]])
    expected = (None, None)
    if text.count("<think>") == 1 and text.count("</think>") == 1:
        o, c = text.index("<think>"), text.index("</think>")
        if c > o and not text[:o].strip():
            expected = (_trim(tokens, [i for i in range(n) if starts[i] >= o + 7 and starts[i + 1] <= c]),
                        _trim(tokens, [i for i in range(n) if starts[i] >= c + 8]) if end is not None else None)
    assert find_spans(tokens, ids, {1}) == expected
