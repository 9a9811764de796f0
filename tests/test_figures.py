"""Every public figure of the library, rendered at its default size, must be readable: no drawn text below `MIN_PT`
points, no text outside the canvas (clipped when saved), no two texts on top of each other, no figure-level text
(caption, suptitle) on an axes, and a figure no wider than `MAX_WIDTH_IN` inches. The notebooks save figures at 100 dpi
and the docs page scales them to its column (about 950 px), so a figure of at most 11.5 in keeps at least 0.8 of its
size there and 7 pt text stays about 8 px (digits 6 px); it is rendered here at 72 dpi, where a point is a pixel.
Matplotlib knows each drawn text's extent: `drawn_texts` records them while the figure renders.

`FIGURES` lists every public function of the package that makes a figure; `test_every_figure_function_is_checked` fails
when one is added to `saliency_r1.viz`, `saliency_r1.evaluate` or `saliency_r1.metrics` without an entry here."""
import inspect, os

os.environ.setdefault("MPLBACKEND", "Agg")
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.text
import numpy as np
import pytest

MIN_PT, MAX_WIDTH_IN, DPI = 7.0, 11.5, 72


def drawn_texts(fig, dpi: int = DPI) -> list[tuple[matplotlib.text.Text, object]]:
    "(text, its window extent) for every non-empty text drawn when `fig` renders at `dpi` (layout engines included)."
    seen, orig = [], matplotlib.text.Text.draw
    def draw(self, renderer):
        orig(self, renderer)
        if self.get_visible() and self.get_text().strip() and self.get_alpha() != 0:
            seen.append((self, self.get_window_extent(renderer)))
    fig.set_dpi(dpi)
    matplotlib.text.Text.draw = draw
    try: fig.canvas.draw()
    finally: matplotlib.text.Text.draw = orig
    return seen


def problems(fig, min_pt: float = MIN_PT, max_width_in: float = MAX_WIDTH_IN) -> list[str]:
    "What makes `fig` hard to read at its size (empty when nothing)."
    texts = drawn_texts(fig)
    W, H = fig.bbox.width, fig.bbox.height
    out = []
    if fig.get_figwidth() > max_width_in:
        out.append(f"figure {fig.get_figwidth():.1f} in wide (at most {max_width_in}: wrap its panels into rows)")
    for t, bb in texts:
        s = repr(t.get_text()[:40])
        if t.get_fontsize() < min_pt: out.append(f"{s}: {t.get_fontsize():.1f} pt (at least {min_pt})")
        if bb.x0 < -1 or bb.y0 < -1 or bb.x1 > W + 1 or bb.y1 > H + 1:
            out.append(f"{s} outside the canvas: x {bb.x0:.0f}..{bb.x1:.0f} of {W:.0f}, y {bb.y0:.0f}..{bb.y1:.0f} of {H:.0f}")
    for i, (a, ba) in enumerate(texts):
        for b, bb in texts[i + 1:]:
            inter = ba.intersection(ba, bb)
            if inter is not None and inter.width > 1 and inter.height > 1:
                out.append(f"{a.get_text()[:30]!r} overlaps {b.get_text()[:30]!r}")
    axes = [ax.get_window_extent() for ax in fig.get_axes() if ax.get_visible()]
    for t, bb in texts:
        if t.axes is None:
            for ab in axes:
                inter = bb.intersection(bb, ab)
                if inter is not None and inter.width > 1 and inter.height > 1:
                    out.append(f"figure text {t.get_text()[:40]!r} lies on an axes"); break
    return out


# ---------- the figures ----------

def tiny_setup() -> dict:
    "The shipped tiny model, four synthetic questions and a chain explanation of the first."
    import torch; torch.set_num_threads(1)
    from saliency_r1.data import make_shapes_dataset
    from saliency_r1.models import pretrained_tiny
    from saliency_r1.saliency import explain
    model, processor = pretrained_tiny()
    ds = make_shapes_dataset(4, seed=0)
    row = ds[0]
    e = explain(model, processor, row["image"], row["problem"], max_new_tokens=48)
    assert e.valid, e.text
    return dict(model=model, processor=processor, ds=ds, row=row, e=e)


@pytest.fixture(scope="module")
def tiny(): return tiny_setup()


def _report(t):
    from saliency_r1.evaluate import evaluate
    return evaluate(t["model"], t["processor"], t["ds"], methods=("chain", "cot", "attention"), max_new_tokens=48)


def _comparison(t):
    from saliency_r1.evaluate import compare, evaluate
    from saliency_r1.models import pretrained_tiny
    model, processor = pretrained_tiny(variant="wander")
    return compare(_report(t), evaluate(model, processor, t["ds"], methods=("chain", "cot", "attention"), max_new_tokens=48), n_boot=200)


def _explorer(t, which):
    from saliency_r1.viz import SaliencyExplorer
    pytest.importorskip("ipywidgets")
    x = SaliencyExplorer(t["model"], t["processor"], t["ds"].select(range(1)), methods=("chain", "cot"))
    return getattr(x, which)()


def _curve(t):
    from saliency_r1.metrics import PerturbationCurve
    fr = np.array([0.0, 0.05, 0.15, 0.3, 0.5, 0.75, 1.0])
    c = PerturbationCurve("deletion", fr, np.round(fr * 16), np.exp(-3 * fr), np.exp(-fr))
    return c.plot().figure


def _fig(ax_or_fig): return ax_or_fig if isinstance(ax_or_fig, matplotlib.figure.Figure) else ax_or_fig.figure


FIGURES = {
    "viz.show_saliency": lambda t: __import__("saliency_r1.viz").viz.show_saliency(t["row"]["image"], t["e"].answer_map, t["row"]["bbox"]),
    "viz.show_saliency(signed)": lambda t: __import__("saliency_r1.viz").viz.show_saliency(
        t["row"]["image"], t["e"].token_map(t["e"].think_span.start), signed=True, label="logit contribution"),
    "viz.show_example": lambda t: __import__("saliency_r1.viz").viz.show_example(
        plt.subplots(figsize=(2.6, 3.2))[1], t["row"]["image"], t["row"]["bbox"], t["row"]["problem"]),
    "viz.plot_examples": lambda t: __import__("saliency_r1.viz").viz.plot_examples(
        [r["image"] for r in t["ds"]], [r["problem"] for r in t["ds"]], [r["bbox"] for r in t["ds"]],
        answers=["red", "blue", "yes", "two"], truths=[r["solution"] for r in t["ds"]],
        saliency=[t["e"].answer_map] * 4, suptitle="accuracy 90.3% on 300 held-out questions; chain maps: energy pointing game 0.36"),
    "viz.plot_token_maps": lambda t: __import__("saliency_r1.viz").viz.plot_token_maps(t["e"]),
    "viz.plot_token_maps(image)": lambda t: __import__("saliency_r1.viz").viz.plot_token_maps(t["e"], image=t["row"]["image"],
                                                                                            boxes=t["row"]["bbox"]),
    "viz.plot_reasoning_flow": lambda t: __import__("saliency_r1.viz").viz.plot_reasoning_flow(
        t["e"], t["row"]["image"], t["row"]["bbox"], question=t["row"]["problem"]),
    "viz.compare_methods": lambda t: __import__("saliency_r1.viz").viz.compare_methods(
        t["model"], t["processor"], t["row"]["image"], t["row"]["problem"], boxes=t["row"]["bbox"], max_new_tokens=48),
    "viz.Explanation.show": lambda t: t["e"].show(t["row"]["image"], boxes=t["row"]["bbox"]),
    "viz.SaliencyExplorer._figure_maps": lambda t: _explorer(t, "_figure_maps"),
    "viz.SaliencyExplorer._figure_flow": lambda t: _explorer(t, "_figure_flow"),
    "evaluate.EvalReport.plot": lambda t: _report(t).plot(),
    "evaluate.ComparisonReport.plot": lambda t: _comparison(t).plot(),
    "metrics.PerturbationCurve.plot": _curve,
}


KNOWN = {}  # figure functions that are known to break a rule (strict xfail: fixing one fails until it is removed here)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN[n], strict=True)) if n in KNOWN else n
                                  for n in FIGURES])
def test_figure_is_readable(name, tiny):
    fig = _fig(FIGURES[name](tiny))
    try:
        bad = problems(fig)
        assert not bad, f"{name} at its default size ({fig.get_figwidth():.1f} × {fig.get_figheight():.1f} in):\n" + "\n".join(bad)
    finally: plt.close("all")


def test_every_figure_function_is_checked():
    "A public function or method whose source plots (makes a figure or draws on axes) has an entry in FIGURES."
    import saliency_r1.viz, saliency_r1.evaluate, saliency_r1.metrics
    plotting = ("plt.subplots", "plt.figure", ".colorbar(", ".imshow(", ".bar(", ".plot(")
    checked = {k.split("(")[0] for k in FIGURES}
    found = set()
    for mod in (saliency_r1.viz, saliency_r1.evaluate, saliency_r1.metrics):
        for name, obj in vars(mod).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__: continue
            members = [(name, obj)] if inspect.isfunction(obj) else [(f"{name}.{m}", f) for m, f in vars(obj).items()
                                                                      if inspect.isfunction(f)] if inspect.isclass(obj) else []
            for qual, f in members:
                try: src = inspect.getsource(f)
                except OSError: continue  # generated (dataclass methods)
                if any(p in src for p in plotting): found.add(f"{mod.__name__.split('.')[-1]}.{qual}")
    helpers = {"viz.shade_tokens", "viz.draw_boxes", "viz.map_rgba", "viz.SaliencyExplorer.__init__"}  # draw on a figure others check
    missing = found - checked - helpers
    assert not missing, f"figure functions without a readability check in tests/test_figures.py's FIGURES: {sorted(missing)}"


def test_the_checks_bite():
    "A caption cut at the canvas edge, 5 pt ticks, overlapping titles and a 20-inch figure are each caught."
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.set_title("a title"); ax.tick_params(labelsize=5)
    fig.text(0.5, 0.5, "a caption much too long for this figure, cut at both ends " * 2, ha="center", va="bottom", fontsize=9)
    fig.text(0.5, 0.99, "a title", ha="center", va="top")
    ax.text(0.5, 1.02, "another title", transform=ax.transAxes, ha="center", va="bottom")
    bad = "\n".join(problems(fig))
    assert "outside the canvas" in bad and "5.0 pt" in bad and "overlaps" in bad and "lies on an axes" in bad, bad
    assert "wide" in "\n".join(problems(plt.figure(figsize=(20, 2))))
    plt.close("all")
