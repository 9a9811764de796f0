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


def toy_json(ids=("q0", "q1", "q2"), methods=("chain",), **change) -> str:
    "A small report.json as `EvalReport.to_json` writes it (records only), with fields of every record replaced by `change`."
    maps = {m: dict(energy_pg=0.5, pointing_game=1.0) for m in (*methods, "uniform")} if methods else {}
    recs = [dict(id=q, template="colour", correct=k % 2 == 0, format=True, valid=True, blank_correct=None, maps=maps) | change
            for k, q in enumerate(ids)]
    return json.dumps(dict(info={}, methods=list(methods), records=recs))


def run_main(args) -> tuple[int, str]:
    "`main(args)`'s exit status and stderr."
    from saliency_r1.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()): code = main([str(a) for a in args])
    return code, err.getvalue()


@pytest.mark.parametrize("text, says", [
    (toy_json(correct="yes"), "bad.json is not a valid evaluation report: records[0] (id 'q0'): correct is 'yes', not true or false"),
    (toy_json(maps={}), "bad.json is not a valid evaluation report: records[0] (id 'q0'): maps lacks 'chain'"),
    (toy_json(ids=("q0", "q1", "q0")), "Report B has 1 question id more than once (q0)"),
    (toy_json(ids=()), "bad.json is not a valid evaluation report: records is [], not a non-empty list"),
    ("[1, 2]", "bad.json is not an evaluation report: it holds a JSON list"),
    ("", "bad.json is empty"),
    (b'{"methods": ["chain"], "info": "\xe9"}', "bad.json is not UTF-8 text (byte 32)"),
])
def test_bad_report_files_are_one_line(tmp_path, text, says):
    "A report.json that is not one (hand-edited, truncated, another encoding) is named in one line, exit status 2, nothing written."
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(toy_json())
    bad.write_bytes(text) if isinstance(text, bytes) else bad.write_text(text)
    code, err = run_main(["compare", good, bad, "--out", tmp_path / "c"])
    assert code == 2 and err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("extra, says", [
    (["--names", "x", "x"], "names must be two different non-empty strings"),
    (["--names", "x", " "], "names must be two different non-empty strings"),
    (["--n-boot", "99"], "n_boot must be an integer >= 100, got 99"),
])
def test_bad_compare_options_are_one_line(tmp_path, extra, says):
    (tmp_path / "a.json").write_text(toy_json()); (tmp_path / "b.json").write_text(toy_json())
    code, err = run_main(["compare", tmp_path / "a.json", tmp_path / "b.json", "--out", tmp_path / "c", *extra])
    assert code == 2 and err.count("\n") == 1 and says in err, err


def test_no_questions_and_no_method_in_common(tmp_path):
    "No question in common: refused. No saliency method in common: accuracy only, and the tables say so."
    (tmp_path / "a.json").write_text(toy_json()); (tmp_path / "x.json").write_text(toy_json(ids=("x0", "x1")))
    code, err = run_main(["compare", tmp_path / "a.json", tmp_path / "x.json", "--out", tmp_path / "c"])
    assert code == 2 and err.count("\n") == 1 and "No questions to compare: A has 3 questions, B 2, none in both" in err, err
    (tmp_path / "cot.json").write_text(toy_json(methods=("cot",)))
    out = io.StringIO()
    from saliency_r1.cli import main
    with contextlib.redirect_stdout(out): assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "cot.json"), "--out", str(tmp_path / "c")]) == 0
    assert "no saliency method in both reports (A: chain; B: cot): only accuracy compared" in out.getvalue()
    assert json.loads((tmp_path / "c" / "comparison.json").read_text())["methods"] == []


def test_out_that_is_a_file_fails_before_any_work(tmp_path, monkeypatch):
    "`eval --out FILE` (and `demo`, `compare`) stop in one line before loading data or a model, not with a traceback at the end."
    import saliency_r1.cli as cli
    def no_work(*a, **k): raise AssertionError("the evaluation started")
    monkeypatch.setattr(cli, "_eval_dataset", no_work); monkeypatch.setattr(cli, "_load_model", no_work)
    taken = tmp_path / "taken"; taken.write_text("x")
    for args in (["eval", "--dataset", "synthetic", "--out", taken], ["demo", "--out", taken / "sub"]):
        code, err = run_main(args)
        assert code == 2 and err.count("\n") == 1 and f"{taken} is a file, not a folder" in err, err
    (tmp_path / "a.json").write_text(toy_json())
    code, err = run_main(["compare", tmp_path / "a.json", tmp_path / "a.json", "--out", taken])
    assert code == 2 and err.count("\n") == 1 and "is a file, not a folder" in err, err


def test_help_shows_the_underscore_spelling():
    from saliency_r1.cli import build_parser
    assert "underscores (--max_new_tokens) are accepted too" in " ".join(build_parser().format_help().split())
