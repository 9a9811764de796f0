"bench/reproduce.py (issue 13): the acceptance rule on hand-made numbers, and a whole run at tiny sizes (JSON, table, figures, cache)."
import json, math, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import reproduce  # noqa: E402
from saliency_r1.data import Box  # noqa: E402
from test_figures import problems  # noqa: E402


def _runs(**metric_per_seed):
    "Fake runs: one per seed, each metric's value taken from the lists given."
    n = len(next(iter(metric_per_seed.values())))
    return [dict(seed=s, metrics={k: v[s] for k, v in metric_per_seed.items()}) for s in range(n)]


def test_verdict_needs_two_sd_of_a_difference_on_every_claim_metric_and_no_accuracy_loss():
    flat = lambda x, acc: _runs(**{m: x for m in reproduce.CLAIM_METRICS}, accuracy=acc)
    b = flat([0.30, 0.31, 0.32], [0.90, 0.90, 0.90])
    # +0.05 with sd 0.01 in both arms: the sd of a difference is 0.0141, so 3.5 sd
    v = reproduce.verdict(dict(B=b, D=flat([0.35, 0.36, 0.37], [0.895, 0.895, 0.895])), "D")
    assert v["holds"] and v["chain_energy_pg"]["sigmas"] == pytest.approx(0.05 / math.hypot(0.01, 0.01), abs=0.01)
    # +0.02 is under 2 sd of the difference (0.028): the claim does not hold
    assert not reproduce.verdict(dict(B=b, D=flat([0.32, 0.33, 0.34], [0.9, 0.9, 0.9])), "D")["holds"]
    # localization holds but accuracy is 2 points lower
    v = reproduce.verdict(dict(B=b, D=flat([0.35, 0.36, 0.37], [0.88, 0.88, 0.88])), "D")
    assert not v["holds"] and not v["accuracy"]["passes"] and v["chain_pg"]["passes"]
    assert reproduce.verdict(dict(D=b), "D") == {}  # no control arm, no verdict


def test_placebo_rule_needs_D_to_beat_grpo_and_both_placebos_on_conflict_accuracy_and_an_unrewarded_map():
    arm = lambda conflict, top, acc=(0.9, 0.9, 0.9): _runs(accuracy_conflict=conflict, top_token_energy_pg=top, accuracy=acc)
    low, high = [0.40, 0.41, 0.42], [0.50, 0.51, 0.52]
    res = dict(B=arm(low, low), S=arm(low, low), R=arm(low, low), D=arm(high, high))
    v = reproduce.placebo_verdict(res)
    assert v["holds"] and set(v) == {"B", "S", "R", "holds"} and v["S"]["accuracy_conflict"]["passes"]
    # D beats B but not the random placebo on the conflict split: the gain is reward variance, the rule fails
    v = reproduce.placebo_verdict(dict(res, R=arm(high, low)))
    assert not v["holds"] and v["B"]["holds"] and not v["R"]["accuracy_conflict"]["passes"] and v["R"]["top_token_energy_pg"]["passes"]
    # clean accuracy 2 points below a placebo's fails it; a placebo that was not run fails the rule
    assert not reproduce.placebo_verdict(dict(res, D=arm(high, high, (0.88, 0.88, 0.88))))["holds"]
    v = reproduce.placebo_verdict({k: r for k, r in res.items() if k != "S"})
    assert not v["holds"] and v["S"] is None


def test_pg_chance_is_the_share_of_cell_centres_in_the_boxes():
    assert reproduce.pg_chance([Box(0, 0, 0.5, 0.5)], (4, 4)) == 4 / 16
    assert reproduce.pg_chance([Box(0, 0, 0.5, 0.5), Box(0.5, 0.5, 1, 1)], (2, 2)) == 0.5
    assert reproduce.pg_chance([Box(0.1, 0.1, 0.2, 0.2)], (2, 2)) == 0.0


def test_wandering_is_read_in_the_thinking_only():
    assert reproduce.wanders("<think>There is a red square at the top left. The circle is blue.</think>blue")
    assert not reproduce.wanders("<think>The circle is blue.</think>There is")


def test_tiny_run_writes_json_table_figures_and_reuses_its_cache(tmp_path):
    "Arms A, B, D, S, R with 2 GRPO steps and 6 questions: every output appears, with the arm letters, command and versions; a cached run made with other code runs again."
    out, cache = tmp_path / "r.json", tmp_path / "cache"
    args = ["--arms", "A", "B", "D", "S", "R", "--seeds", "0", "--steps", "2", "--n", "6", "--deletion", "2", "--workers", "1",
            "--no-validation", "--out", str(out), "--cache", str(cache)]
    reproduce.main(args)
    r = json.loads(out.read_text())
    assert set(r["runs"]) == {"A", "B", "D", "S", "R"} and [x["seed"] for x in r["runs"]["D"]] == [0]
    m = r["runs"]["D"][0]["metrics"]
    for k in ("accuracy", "accuracy_right", "accuracy_conflict", "format_rate", "blank_accuracy_conflict", "chain_energy_pg", "chain_pg",
              "top_token_energy_pg", "top_token_pg", "uniform_energy_pg", "pg_chance", "chain_deletion", "chain_insertion",
              "wander_share", "accuracy_by_template"):
        assert k in m, k
    assert 0 <= m["chain_energy_pg"] <= 1 and m["chain_deletion_n"] <= 2
    assert r["runs"]["D"][0]["train_minutes"] > 0 and r["runs"]["A"][0]["train_minutes"] is None
    assert set(r["verdicts"]) == {"D"} and "holds" in r["verdicts"]["D"] and set(r["placebo_verdict"]) == {"B", "S", "R", "holds"}
    for arm, reward in (("D", "saliency_reward"), ("R", "placebo_reward")):  # logged every step, with the zero-spread share
        curve = r["runs"][arm][0]["curve"]
        assert [c["step"] for c in curve] == [1, 2] and all(f"rewards/{reward}/std" in c and "frac_reward_zero_std" in c for c in curve)
    for c in ("B", "S", "R"):  # D against each control, paired by question: McNemar counts and bootstrap intervals
        d = r["paired"][f"D-{c}"]["conflict"]
        assert d["pooled"]["n"] == 6 and set(d["per_seed"]) == {"0"} and 0 <= d["pooled"]["accuracy"]["p"] <= 1
        e = d["pooled"]["top_token_energy_pg"]
        assert e["ci_low"] <= e["diff"] <= e["ci_high"]
    assert r["compute"]["runs"] == 5 and r["compute"]["train_cpu_minutes"] > 0 and r["compute"]["eval_minutes"] > 0
    assert r["command"].startswith("python bench/reproduce.py") and r["versions"]["trl"] and r["versions"]["torch"]
    shown = r["examples"]["B"]  # the first question of each template (at most 4), the same for every arm, with 4x4 maps
    assert [e["index"] for e in shown] == [e["index"] for e in r["examples"]["D"]] and 1 <= len(shown) <= 4
    assert len(shown[0]["chain"]) == 4 and len(shown[0]["top_token"][0]) == 4
    table = out.with_suffix(".md").read_text()
    assert table.startswith("| metric | A: cold start | B: GRPO format+accuracy | D: + saliency (chain, library) |")
    for png in ("bars", "maps", "conflict", "zero_spread"): assert (tmp_path / f"r_{png}.png").stat().st_size < 200_000
    for name, fig in reproduce.figures(r).items():  # readable at their size, as every figure of the library (test_figures)
        assert problems(fig) == [], (name, problems(fig))
    stamps = {f: f.stat().st_mtime_ns for f in cache.rglob("*")}
    reproduce.main(args)  # everything cached: nothing trained or measured again, the same numbers
    assert {f: f.stat().st_mtime_ns for f in cache.rglob("*")} == stamps
    assert json.loads(out.read_text())["runs"]["D"][0]["metrics"] == m
    b = next(cache.glob("B_0_*"))  # a run made with other code (code.txt differs) is deleted and made again; the rest stay
    (b / "code.txt").write_text("0123456789ab\n"); (b / "stale-marker").write_text("")
    reproduce.main(args)
    assert (b / "code.txt").read_text().strip() == reproduce.code_fingerprint() and not (b / "stale-marker").exists()
    assert all(f.stat().st_mtime_ns == t for f, t in stamps.items() if b != f and b not in f.parents)


@pytest.mark.parametrize("arg", [["--n", "0"], ["--workers", "0"], ["--steps", "-1"], ["--shortcut-rate", "2"], ["--lr", "nan"],
                                 ["--lr", "0"], ["--deletion", "-3"], ["--seeds", "-1"], ["--temperature", "x"], ["--arms", "Z"]])
def test_bad_arguments_are_one_usage_line(arg, capsys):
    "Every numeric argument is checked before anything runs: argparse's usage error, exit code 2, naming the argument."
    with pytest.raises(SystemExit) as e: reproduce.main(arg)
    assert e.value.code == 2 and f"argument {arg[0]}" in capsys.readouterr().err
