"""Acceptance property tests of issue 12 (hypothesis): random junk fed to the input gates (`parse_boxes`, `Box.parse`,
`load_image`, `to_rgb`, `validate_row`) and to the metric functions only ever gives a result that satisfies the
contract, or a `ValueError`/`TypeError` whose message names the input; the rows the data gate accepts go through the
tiny model's processor; `score_maps` and `saliency_reward` never raise on a map and never return NaN."""
import ast, math

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from PIL import Image

from saliency_r1.data import MAX_ASPECT_RATIO, Box, load_image, parse_boxes, shown, to_rgb, validate_row
from saliency_r1.metrics import (MAP_FLAGS, as_map, cell_coverage, cell_coverage_batch, cells_for_fractions,
                                 energy_pointing_game, energy_pointing_game_batch, pixel_mask, pointing_game,
                                 pointing_game_batch, score_maps)
from saliency_r1.rewards import SaliencyReward

# Examples per test come from the profile of tests/conftest.py ("ci": derandomized; `make fuzz`: fresh and many more).

# ---------------------------------------------------------------- junk
BOX_KEY_NAMES = ["x1", "y1", "x2", "y2", "xmin", "ymin", "xmax", "ymax", "x", "y", "w", "h", "width", "height",
                 "left", "top", "right", "bottom", "cx", "cy", "label"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True, allow_infinity=True),
                    st.floats(-0.1, 1.1), st.text(max_size=8), st.binary(max_size=6), st.sampled_from([0, 0.25, 0.5, 1]))
junk = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=6), st.tuples(kids, kids, kids, kids),
    st.dictionaries(st.one_of(st.sampled_from(BOX_KEY_NAMES), st.text(max_size=4), st.integers()), kids, max_size=5)), max_leaves=14)
np_junk = arrays(st.sampled_from([np.float64, np.float32, np.int64, np.uint8, np.bool_, np.complex128]),
                 array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
box_junk = st.one_of(junk, junk.map(repr), junk.map(str), np_junk, st.text(max_size=30),
                     st.lists(st.floats(-0.5, 1.5), min_size=4, max_size=4),
                     st.lists(st.lists(st.floats(-0.1, 1.1), min_size=4, max_size=4), max_size=3))


def _parts(value, depth=0) -> list:
    "The value and what it is made of (elements, dict values, a string's literal, an array's list), as error messages quote them."
    out = [value]
    if isinstance(value, str):
        try: out += _parts(ast.literal_eval(value.strip()), depth)
        except Exception: pass
    if isinstance(value, np.ndarray): out += _parts(value.tolist(), depth)
    if depth < 4 and isinstance(value, (list, tuple)): out += [p for v in value for p in _parts(v, depth + 1)] + [list(value)]
    if depth < 4 and isinstance(value, dict): out += [p for v in value.values() for p in _parts(v, depth + 1)]
    return out

def names_input(message: str, value) -> bool:
    "Whether `message` quotes `value` or one of its parts (as `shown` writes them)."
    return any(shown(p) in message for p in _parts(value))


# ---------------------------------------------------------------- boxes
@given(box_junk)
def test_parse_boxes_gives_boxes_or_names_the_input(value):
    try: boxes = parse_boxes(value)
    except (ValueError, TypeError) as e:
        assert names_input(str(e), value), (value, str(e))
        return
    assert isinstance(boxes, list) and all(isinstance(b, Box) for b in boxes)
    for b in boxes: assert 0 <= b.x1 < b.x2 <= 1 and 0 <= b.y1 < b.y2 <= 1


@given(box_junk)
def test_box_parse_gives_a_box_or_names_the_input(value):
    try: b = Box.parse(value)
    except (ValueError, TypeError) as e:
        assert names_input(str(e), value), (value, str(e))
        return
    assert 0 <= b.x1 < b.x2 <= 1 and 0 <= b.y1 < b.y2 <= 1


@given(st.sampled_from([("x1", "y1", "x2", "y2"), ("xmin", "ymin", "xmax", "ymax"), ("left", "top", "right", "bottom")]),
       st.lists(st.floats(0, 1), min_size=4, max_size=4, unique=True))
def test_every_corner_naming_reads_the_same_box(keys, coords):
    x1, x2 = sorted(coords[:2]); y1, y2 = sorted(coords[2:])
    if x2 - x1 < 1e-9 or y2 - y1 < 1e-9: return
    assert Box.parse(dict(zip(keys, (x1, y1, x2, y2)))) == Box(x1, y1, x2, y2)
    assert Box.parse({"x": x1, "y": y1, "w": x2 - x1, "h": y2 - y1}).to_list() == pytest.approx([x1, y1, x2, y2], abs=1e-12)


@given(st.integers(0, 3), st.sampled_from([None, "abc", [0.5], True, float("nan"), {}]))
def test_the_bad_coordinate_is_blamed(position, bad):
    box = [0.1, 0.2, 0.5, 0.6]; box[position] = bad
    with pytest.raises(ValueError) as e: parse_boxes(box)
    assert f"{('x1', 'y1', 'x2', 'y2')[position]} is {shown(bad)}" in str(e.value) or "non-finite" in str(e.value)


# ---------------------------------------------------------------- images
shapes = array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)
image_arrays = st.one_of(
    arrays(st.sampled_from([np.uint8, np.uint16, np.int8, np.int32, np.int64]), shapes, elements=st.integers(0, 127)),
    arrays(st.sampled_from([np.uint16, np.int32, np.int64]), shapes),                       # full integer ranges
    arrays(st.sampled_from([np.float32, np.float64]), shapes, elements=st.floats(0, 1, width=32)),
    arrays(st.sampled_from([np.float32, np.float64]), shapes),                              # NaN, inf, 1e308 ...
    arrays(np.bool_, shapes), arrays(np.complex64, shapes))
MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "LA", "PA", "RGBX", "RGBa", "La", "I;16", "I;16B"]
pil_images = st.builds(lambda mode, w, h: Image.new(mode, (w, h)), st.sampled_from(MODES),
                       st.sampled_from([0, 1, 2, 3, 7, 200, 201, 450]), st.sampled_from([0, 1, 2, 5, 40]))
image_junk = st.one_of(image_arrays, pil_images, junk, st.text(max_size=12), st.binary(max_size=40))


def _check_rgb(img):
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.width >= 1 and img.height >= 1
    assert max(img.size) / min(img.size) <= MAX_ASPECT_RATIO


def _image_named(message: str, value) -> bool:
    if isinstance(value, np.ndarray): return "image array" in message and (str(value.shape) in message or str(value.dtype) in message)
    if isinstance(value, Image.Image): return f"{value.width}x{value.height}" in message or value.mode in message
    if isinstance(value, (bytes, bytearray)): return f"{len(value)} bytes" in message
    if value is None or value == "" or (isinstance(value, str) and not value.strip()): return "no image" in message
    if isinstance(value, dict): return shown(value) in message
    return shown(value) in message or type(value).__name__ in message or str(value) in message


@given(image_junk)
@example("~0").via("issue 18: RuntimeError from expanduser")
@example("~")
def test_to_rgb_gives_rgb_or_names_the_input(value):
    try: img = to_rgb(value)
    except (ValueError, TypeError) as e:
        assert _image_named(str(e), value), (value, str(e))
        return
    _check_rgb(img)


@given(image_junk)
@example("~0").via("issue 18: RuntimeError from expanduser")
@example("~")
def test_load_image_gives_an_image_or_names_the_input(value):
    try: img = load_image(value)
    except (ValueError, TypeError) as e:
        assert _image_named(str(e), value), (value, str(e))
        return
    assert isinstance(img, Image.Image)


@given(arrays(np.uint16, array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8)))
def test_16_bit_scales_by_its_bit_depth(a):
    np.testing.assert_array_equal(np.asarray(to_rgb(a))[..., 0], np.round(a / 257).astype(np.uint8))
    np.testing.assert_array_equal(np.asarray(to_rgb(Image.fromarray(a)))[..., 0], np.round(a / 257).astype(np.uint8))


@given(arrays(np.float32, array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8), elements=st.floats(0, 1, width=32)))
def test_float_images_in_unit_range_scale_by_255(a):
    np.testing.assert_array_equal(np.asarray(to_rgb(Image.fromarray(a)))[..., 0], np.round(a.astype(np.float64) * 255).astype(np.uint8))


_processor = None

def _tiny_processor():
    global _processor
    if _processor is None:
        from saliency_r1.models import tiny_processor
        _processor = tiny_processor()
    return _processor


@settings(max_examples=max(1, settings().max_examples * 3 // 5))   # each example runs the processor
@given(st.sampled_from(MODES), st.integers(1, 600), st.integers(1, 60), st.booleans(), st.one_of(st.none(), box_junk))
def test_accepted_rows_go_through_the_processor(mode, w, h, tall, bbox):
    "The gate's promise: a row validate_row accepts is processed by the Qwen image processor; one it refuses is named."
    from saliency_r1.models import prepare_inputs
    image = Image.new(mode, (h, w) if tall else (w, h))
    try: row = validate_row(dict(image=image, problem="What is it?", solution="red", bbox=bbox))
    except ValueError as e:
        assert str(e) and (max(image.size) / min(image.size) > MAX_ASPECT_RATIO or "box" in str(e).lower() or "bbox" in str(e)), str(e)
        return
    _check_rgb(row["image"])
    proc = _tiny_processor()
    enc = prepare_inputs(proc, [row["image"]], [row["problem"]])
    n_image = int((enc["input_ids"] == proc.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum())
    assert n_image == int(enc["image_grid_thw"][0].prod()) // 4 > 0


# ---------------------------------------------------------------- metrics
map_junk = st.one_of(np_junk, junk, arrays(np.float64, array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=5),
                                            elements=st.floats(allow_nan=True, allow_infinity=True)),
                     arrays(np.float64, array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=5), elements=st.floats(0, 1e308)))
good_boxes = st.sampled_from([[0, 0, .5, .5], [[0, 0, .5, .5], [.25, .25, 1, 1]], "[0.1, 0.2, 0.6, 0.9]", {"xmin": .5, "ymin": 0, "xmax": 1, "ymax": .5}])
ARG_NAMES = ("saliency", "saliency_maps", "boxes", "box", "grid", "tolerance", "image_size", "fractions", "n_cells",
             "width", "height", "cells", "size", "evidence")


def _metric_error_ok(e: Exception) -> bool:
    return isinstance(e, (ValueError, TypeError)) and any(name in str(e).lower() for name in ARG_NAMES)


@given(map_junk, st.one_of(good_boxes, box_junk))
def test_energy_pointing_game_is_in_unit_interval_or_names_the_argument(s, boxes):
    try: e = energy_pointing_game(s, boxes)
    except Exception as err:
        assert _metric_error_ok(err), (s, boxes, repr(err))
        return
    assert 0.0 <= e <= 1.0


@given(map_junk, st.one_of(good_boxes, box_junk), st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 50), junk),
       st.one_of(st.none(), junk, st.tuples(st.floats(allow_nan=True), st.floats(allow_nan=True))))
def test_pointing_game_is_a_bool_or_names_the_argument(s, boxes, tolerance, size):
    try: hit = pointing_game(s, boxes, tolerance=tolerance, image_size=size)
    except Exception as err:
        assert _metric_error_ok(err), (s, boxes, tolerance, size, repr(err))
        return
    assert isinstance(hit, bool)


@given(st.one_of(junk, st.lists(map_junk, max_size=4)), st.one_of(junk, st.lists(st.one_of(good_boxes, box_junk), max_size=4)))
def test_batch_metrics_give_scores_or_name_the_argument(maps, boxes):
    for f in (energy_pointing_game_batch, pointing_game_batch):
        try: out = f(maps, boxes)
        except Exception as err:
            assert _metric_error_ok(err), (f.__name__, maps, boxes, repr(err))
            continue
        assert np.all(np.isnan(out) | ((out >= 0) & (out <= 1)))


@given(st.one_of(good_boxes, box_junk), st.one_of(junk, st.tuples(st.integers(-2, 6), st.integers(-2, 6))))
@example([[0, 0, .5, .5]], (60000, 60000)).via("issue 18: 3.35 GiB allocated, a fresh make_test killed at 24 GB")
@example([[0, 0, .5, .5]], (10**20, 3))
def test_cell_coverage_is_a_fraction_or_names_the_argument(boxes, grid):
    for call in (lambda: cell_coverage(boxes, grid), lambda: cell_coverage_batch([boxes, boxes], grid)):
        try: cover = call()
        except Exception as err:
            assert _metric_error_ok(err), (boxes, grid, repr(err))
            continue
        assert np.all((cover >= 0) & (cover <= 1))


@given(st.one_of(junk, st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4)), st.one_of(st.integers(-3, 30), junk),
       st.one_of(junk, st.tuples(st.integers(-2, 20), st.integers(-2, 20))), map_junk)
def test_small_helpers_name_their_arguments(fractions, n_cells, size, cells):
    for call in (lambda: cells_for_fractions(fractions, n_cells), lambda: pixel_mask(cells, size), lambda: as_map(cells)):
        try: call()
        except Exception as err: assert _metric_error_ok(err), (fractions, n_cells, size, repr(err))


# ---------------------------------------------------------------- never raising on a map
@given(st.lists(st.one_of(map_junk, st.none()), min_size=1, max_size=5), st.data())
def test_score_maps_never_raises_on_a_map(maps, data):
    boxes = [data.draw(st.one_of(good_boxes, st.just([]))) for _ in maps]
    scores = score_maps(maps, boxes)
    for e, p, reason in zip(scores.energy_pg, scores.pointing_game, scores.reasons):
        assert reason in ("ok", "no boxes") + MAP_FLAGS
        if reason == "ok": assert 0 <= e <= 1 and p in (0.0, 1.0)
        else: assert math.isnan(e) and math.isnan(p)


@given(st.lists(st.one_of(map_junk, st.none()), min_size=1, max_size=5), st.data())
def test_saliency_reward_is_finite_or_none_never_an_exception(maps, data):
    reward, logged = SaliencyReward(), []
    boxes = [data.draw(st.one_of(good_boxes, st.just([]))) for _ in maps]
    completions = [data.draw(st.sampled_from(["<think>a</think>b", "b", None, [{"role": "assistant", "content": 5}]])) for _ in maps]
    out = reward(completions, bbox=boxes, saliency_maps=maps, log_metric=lambda k, v: logged.append(v))
    assert len(out) == len(maps) and all(v is None or (isinstance(v, float) and 0 <= v <= 1) for v in out)
    assert len(logged) == 1 and 0 <= logged[0] <= 1 and sum(reward.flagged.values()) == round(logged[0] * len(maps))
