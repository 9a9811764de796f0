"""`saliency-r1 compare` end to end: two report.json files of the same questions (the shipped tiny model and its "wander"
variant, written by the API as `saliency-r1 eval` writes them), compared as a user runs it, and mismatched question sets
refused in one line with exit status 2. Starting the console script costs most of the time (its imports), so it runs once."""
import contextlib, io, json, os, subprocess, sys

import pytest

ENV = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", MPLBACKEND="Agg")


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    "sft/report.json and wander/report.json on the same 12 questions (deletion on 2), and part/report.json on 10 of them."
    import torch; torch.set_num_threads(1)
    from saliency_r1.data import make_shapes_dataset
    from saliency_r1.evaluate import EvalReport, evaluate
    from saliency_r1.models import pretrained_tiny
    root, ds = tmp_path_factory.mktemp("reports"), make_shapes_dataset(12, seed=4242)
    for name in ("sft", "wander", "part"): (root / name).mkdir()
    for name, variant in (("sft", None), ("wander", "wander")):
        model, processor = pretrained_tiny(variant=variant)
        evaluate(model, processor, ds, methods=("chain", "cot"), deletion=2, blank=False, progress=False).to_json(root / name / "report.json")
    part = EvalReport.from_json(root / "sft" / "report.json")
    part.records = part.records[:10]
    part.to_json(root / "part" / "report.json")
    return root


def test_compare_prints_and_writes_what_the_api_computes(reports, tmp_path):
    r = subprocess.run([sys.executable, "-m", "saliency_r1.cli", "compare", str(reports / "sft" / "report.json"), str(reports / "wander"),
                        "--n-boot", "500", "--seed", "3", "--out", str(tmp_path / "c")], capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr
    assert "**wander − sft** over 12 questions" in r.stdout and "| energy-PG: chain |" in r.stdout and "exact McNemar p" in r.stdout
    assert "By question template" in r.stdout and "deletion − random: chain" in r.stdout
    c = json.loads((tmp_path / "c" / "comparison.json").read_text())
    acc, dele = c["summary"]["accuracy"], c["summary"]["maps"]["chain"]["deletion"]
    assert c["names"] == ["sft", "wander"] and (c["info"]["seed"], c["info"]["n_boot"]) == (3, 500)
    assert {"diff", "ci_low", "ci_high", "n", "b01", "b10", "p"} <= set(acc) and acc["n"] == 12 and dele["n"] == 2
    assert (tmp_path / "c" / "comparison.md").read_text() in r.stdout and (tmp_path / "c" / "comparison.png").stat().st_size > 10_000
    from saliency_r1.evaluate import EvalReport, compare
    api = compare(*(EvalReport.from_json(reports / n / "report.json") for n in ("sft", "wander")), n_boot=500, seed=3, names=("sft", "wander"))
    assert json.loads(api.to_json()) == c


def test_mismatched_question_sets_are_one_line(reports, tmp_path):
    "The console script's `main` (its exit status): 2 questions only in sft, none only in part, and what to do."
    from saliency_r1.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["compare", str(reports / "sft"), str(reports / "part"), "--out", str(tmp_path / "c")])
    assert code == 2 and err.getvalue().count("\n") == 1, err.getvalue()
    assert "2 only in sft, 0 only in part" in err.getvalue() and "evaluate both on the same dataset" in err.getvalue()
    assert not (tmp_path / "c").exists()
