"""The results report's optional distill method (PABEE's weighting + self-distillation) and hybrid exit rules:
the default plan and the run keys of plain and PABEE runs stay as they were, distill runs are planned, trained and
compared with PABEE at the same seeds, and the page renders with and without them."""

import json
from pathlib import Path

import pytest
from fixtures import load_script, save_tiny_bert, write_glue_task

from benchmarks import report_args, report_compare, report_plan, report_render, report_run
from pabee.exit_rules import ExitRule
from pabee.tasks import get_task

REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "report.py"
# the run key of plain and PABEE runs before the distill method existed: finished runs must still be reused
OLD_KEY = {"model", "task", "seed", "method", "epochs", "learning_rate", "batch_size", "precision",
           "max_train_samples", "max_eval_samples"}


@pytest.fixture(scope="module")
def report():
    return load_script(REPORT, "pabee_report_script_distill")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny"))


def config_for(argv):
    return report_args.make_config(report_args.build_parser().parse_args(argv), argv)


def plan_of(config):
    return {(s.task.folder, s.seed, s.method): s for s in report_plan.plan_runs(config)}


def test_default_plan_and_keys_are_unchanged_and_distill_is_added(tiny, tmp_path):
    base = ["--model-path", f"minilm={tiny}", "--models", "minilm", "--tasks", "RTE,STS-B", "--seeds", "42,43",
            "--work-dir", str(tmp_path / "w"), "--out-dir", str(tmp_path / "o")]
    default, with_distill = config_for(base), config_for([*base, "--methods", "distill,pabee,plain"])
    assert default.methods == ("plain", "pabee") and with_distill.methods == ("plain", "pabee", "distill")
    old, new = plan_of(default), plan_of(with_distill)
    assert {m for _, _, m in old} == {"plain", "pabee"}
    assert set(new) - set(old) == {(t, s, "distill") for t in ("RTE", "STS-B") for s in (42, 43)}
    for key, spec in old.items():  # same folders, rules and keys: finished runs are reused as they are
        assert new[key] == spec
        assert set(default.run_key(spec)) == OLD_KEY
        assert with_distill.run_key(new[key]) == default.run_key(spec)
    distill = new[("RTE", 42, "distill")]
    assert distill.rules == new[("RTE", 42, "pabee")].rules
    assert distill.output_dir == tmp_path / "w" / "minilm" / "rte" / "distill-seed42"
    assert with_distill.run_key(distill) == {**default.run_key(old[("RTE", 42, "pabee")]), "method": "distill",
                                             "distillation_alpha": 0.5, "distillation_temperature": 2.0}
    other = config_for([*base, "--methods", "plain,pabee,distill", "--distill-alpha", "0.3",
                        "--distill-temperature", "4"])
    assert other.run_key(plan_of(other)[("RTE", 42, "distill")])["distillation_alpha"] == 0.3
    # the runner trains distill runs with the option, and only them
    train = report_run.run_settings(distill, with_distill, train=True)
    assert (train.distillation_alpha, train.distillation_temperature, train.loss_weighting) == (0.5, 2.0, None)
    pabee = report_run.run_settings(new[("RTE", 42, "pabee")], with_distill, train=True)
    assert (pabee.distillation_alpha, pabee.distillation_temperature) == (None, None)
    # the one-table command repeats the methods and distillation settings
    command = report_plan.subset_command(other, "minilm", get_task("RTE"))
    assert "--methods plain,pabee,distill --distill-alpha 0.3 --distill-temperature 4" in command
    assert "--methods" not in report_plan.subset_command(default, "minilm", get_task("RTE"))


def test_hybrid_rules_are_opt_in_and_keyed_by_their_threshold(tiny, tmp_path):
    rte, stsb = get_task("RTE"), get_task("STS-B")
    assert not any(r.kind == "hybrid" for r in report_plan.exit_rules_for(rte, 6))
    hybrid = [r for r in report_plan.exit_rules_for(rte, 6, hybrid=True) if r.kind == "hybrid"]
    assert hybrid == [ExitRule("hybrid", t, c) for t, c in report_plan.HYBRID_RULES]
    assert not any(r.kind == "hybrid" for r in report_plan.exit_rules_for(stsb, 6, hybrid=True))
    config = config_for(["--model-path", f"minilm={tiny}", "--models", "minilm", "--tasks", "RTE", "--seeds", "42",
                         "--hybrid-rules", "--work-dir", str(tmp_path / "w"), "--out-dir", str(tmp_path / "o")])
    spec = plan_of(config)[("RTE", 42, "pabee")]
    keys = report_run.expected_keys(spec)
    assert ("dev", "hybrid", 2.0, 0.8, 32) in keys and ("dev", "hybrid", 2.0, 0.9, 32) in keys
    # a record written before records had exit_threshold matches its rule's key
    assert report_run.record_key({"split": "dev", "exit_rule": "patience", "exit_value": 2, "batch_size": 1}) in keys


@pytest.mark.parametrize(("argv", "message"), [
    (["--methods", "plain,distill"], "the report always has plain and pabee"),
    (["--methods", "plain,pabee,deebert"], "unknown method 'deebert'"),
    (["--distill-alpha", "0.3"], "--distill-alpha and --distill-temperature set the distill method"),
    (["--methods", "plain,pabee,distill", "--distill-alpha", "0"], "expected a number in (0, 1]"),
    (["--methods", "plain,pabee,distill", "--distill-temperature", "-1"], "expected a positive number"),
    (["--methods", "plain,pabee,distill", "--distill-alpha", "half"], "expected a number in (0, 1]"),
    (["--methods", "plain,pabee,distill", "--distill-temperature", "nan"], "expected a positive number"),
])
def test_bad_method_flags_are_one_line_errors(argv, message, report, tiny, tmp_path, capsys):
    code = None
    try:
        code = report.main(["--model-path", f"minilm={tiny}", "--work-dir", str(tmp_path / "w"),
                            "--out-dir", str(tmp_path / "o"), *argv])
    except SystemExit as done:  # argparse's own errors
        code = done.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and not (tmp_path / "w").exists()


def point(kind, value, metric, speedup, seeds=(42, 43), threshold=None):
    return {"rule": kind, "value": value, "threshold": threshold, "label": f"{kind} {value}", "seeds": list(seeds),
            "layer_speedup": speedup, "metrics": {"acc": {"mean": metric, "std": 0.0, "values": [metric]}}}


def test_compare_distill_rows():
    task = get_task("RTE")  # main metric acc
    plain = point("patience", 0, 0.70, 1.0)
    points = {("plain", "patience", 0.0, None): plain}
    for method, shift in (("pabee", 0.0), ("distill", 0.02)):
        points[(method, "patience", 0.0, None)] = point("patience", 0, 0.72 + shift, 1.0)
        points[(method, "patience", 1.0, None)] = point("patience", 1, 0.66 + shift, 2.0)
        points[(method, "patience", 2.0, None)] = point("patience", 2, 0.71 + shift, 1.5)
        points[(method, "layer", 1.0, None)] = point("layer", 1, 0.55 + 2 * shift, 3.0)
        points[(method, "layer", 2.0, None)] = point("layer", 2, 0.65 + shift, 1.5)
    assert report_compare.compare_distill({k: v for k, v in points.items() if k[0] != "distill"}, task, 3,
                                          plain) is None
    d = report_compare.compare_distill(points, task, 3, plain)
    rows = {r["name"]: r for r in d["rows"]}
    assert list(rows) == ["full depth", "layer 1", "layer 2", "best patience", "fastest patience within 0.5 points"]
    assert rows["layer 1"]["difference"] == pytest.approx(0.04) and rows["full depth"]["difference"] == pytest.approx(0.02)
    # PABEE: patience 2 (0.71) is the best and the only one within 0.5 points of plain's 0.70; distill: patience 2
    # (0.73) is the best, and patience 1 (0.68) is not within 0.5 points
    assert rows["best patience"]["pabee"]["value"] == 2 and rows["best patience"]["distill"]["value"] == 2
    assert rows["fastest patience within 0.5 points"]["distill"]["value"] == 2
    assert [r["pick"] for r in d["rows"]] == [False, False, False, True, True]
    assert d["same_seeds"] and d["seeds"] == [42, 43] and [p["value"] for p in d["patience"]] == [1, 2]
    points[("distill", "patience", 0.0, None)]["seeds"] = [42]
    assert not report_compare.compare_distill(points, task, 3, plain)["same_seeds"]


def test_quick_report_with_distill_and_hybrid_rules(report, tiny, tmp_path, capsys):
    write_glue_task(tmp_path / "glue", "RTE", n=16)
    work, out = tmp_path / "work", tmp_path / "out"
    argv = ["--quick", "--model-path", f"minilm={tiny}", "--glue-dir", str(tmp_path / "glue"), "--tasks", "RTE",
            "--max-train-samples", "12", "--max-eval-samples", "10", "--methods", "plain,pabee,distill",
            "--hybrid-rules", "--work-dir", str(work), "--out-dir", str(out)]
    assert report.main(argv) == 0
    assert capsys.readouterr().out.count(" finished ") == 3
    results = json.loads((out / "results.json").read_text())
    runs = {r["method"]: r for r in results["runs"]}
    assert set(runs) == {"plain", "pabee", "distill"}
    assert json.loads((work / "minilm" / "rte" / "distill-seed42" / "pabee_config.json").read_text())[
        "distillation_alpha"] == 0.5
    for method in ("pabee", "distill"):
        hybrid = {(r["exit_value"], r["exit_threshold"]) for r in runs[method]["records"] if r["exit_rule"] == "hybrid"}
        assert hybrid == set(report_plan.HYBRID_RULES)
    assert results["methods"] == ["plain", "pabee", "distill"] and results["hybrid_rules"]
    assert results["distillation"] == {"alpha": 0.5, "temperature": 2.0}
    (summary,) = results["summaries"]
    d = summary["distill"]
    assert d["same_seeds"] and d["seeds"] == [42]
    assert [r["name"] for r in d["rows"]][:4] == ["full depth", "layer 1", "layer 2", "layer 3"]
    assert all(r["pabee"] is not None and r["distill"] is not None for r in d["rows"][:4])
    assert summary["training"]["distill_s_per_epoch"] > 0
    assert any(p["rule"] == "hybrid" for p in summary["all_points"])

    markdown = (out / "results.md").read_text()
    assert "Self-distillation against PABEE (same seeds" in markdown
    assert "| distill | full depth |" in markdown and "| layer 1 |" in markdown
    assert "α = 0.5, T = 2" in markdown and "hybrid (patience counting only agreeing layers" in markdown
    # both early-exit methods are tuned (the hybrid rule among the candidates) and judged against plain
    assert set(summary["tuned"]) == {"pabee", "distill"} and [c["method"] for c in summary["targets"]] == [
        "pabee", "distill"]
    assert "hybrid" in runs["distill"]["tuning"]["kinds"]
    assert "| minilm | RTE | distill | 42 (n = 1) |" in markdown

    # a results.json written before the distill method and the hybrid rules still renders (--render-only)
    for key in ("methods", "distillation", "hybrid_rules"):
        del results[key]
    for s in results["summaries"]:
        del s["distill"]
        del s["training"]["distill_s_per_epoch"]
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.json").write_text(json.dumps(results))
    assert report.main(["--render-only", "--out-dir", str(old)]) == 0
    page = (old / "results.md").read_text()
    assert "Self-distillation" not in page and "distill =" not in page and "| PABEE | full depth |" in page
    assert report_render.with_distill(results) == []


def test_distill_is_compared_with_pabee_on_the_seeds_both_have(report, tiny, tmp_path, capsys):
    write_glue_task(tmp_path / "glue", "RTE", n=16)
    base = ["--quick", "--model-path", f"minilm={tiny}", "--glue-dir", str(tmp_path / "glue"), "--tasks", "RTE",
            "--max-train-samples", "12", "--max-eval-samples", "10", "--work-dir", str(tmp_path / "work"),
            "--out-dir", str(tmp_path / "out")]
    assert report.main([*base, "--seeds", "42,43", "--train-only"]) == 0  # plain and PABEE at 42 and 43
    assert report.main([*base, "--seeds", "42", "--methods", "plain,pabee,distill", "--train-only"]) == 0
    assert report.main([*base, "--seeds", "42,43", "--methods", "plain,pabee,distill", "--evaluate-only"]) == 0
    capsys.readouterr()
    (summary,) = json.loads((tmp_path / "out" / "results.json").read_text())["summaries"]
    assert summary["full_depth"]["seeds"] == [42, 43]  # the PABEE table keeps both seeds
    d = summary["distill"]
    assert d["same_seeds"] and d["seeds"] == [42]
    for row in d["rows"]:
        if row["pabee"] is not None:
            assert row["pabee"]["seeds"] == [42], row["name"]  # PABEE restricted to distill's seed
    full = next(r for r in d["rows"] if r["name"] == "full depth")
    by_seed = {r["seed"]: r for r in json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
               if r["method"] == "pabee"}
    seed42_full = next(r for r in by_seed[42]["records"] if r["exit_rule"] == "patience" and r["exit_value"] == 0)
    assert full["pabee"]["metrics"]["acc"]["mean"] == pytest.approx(seed42_full["metrics"]["acc"])
    assert d["pabee"]["full_depth"]["seeds"] == [42]  # the summary's PABEE columns use the same seed
    page = (tmp_path / "out" / "results.md").read_text()
    assert "| minilm | RTE | 42 | " in page
