"""The results report's replay evaluation (benchmarks/report_evaluate.py, report_replay.py, report_tuned.py): the
replayed exits equal the real early-exit inference (and a disagreement stops the report), the honest tuning
(cross-fitting, held-out split), resuming an interrupted evaluation, re-evaluating old folders, and a partial grid."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from fixtures import load_script, write_glue_task
from tiny_models import random_features, spread_model

from benchmarks import report_args, report_evaluate, report_plan, report_replay, report_run, report_tuned
from pabee.exit_rules import ExitRule
from pabee.tasks import get_task
from pabee.tuning import Candidate, all_layer_logits, score, tune, tuning_candidates

REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "report.py"


@pytest.fixture(scope="module")
def report():
    return load_script(REPORT, "pabee_report_script_replay")


@pytest.mark.parametrize("num_labels", [2, 1])
def test_replay_equals_real_early_exit_inference_at_both_batch_sizes(num_labels):
    model = spread_model(num_labels)
    features = random_features(16, num_labels)
    logits = all_layer_logits(model, features, 32)
    rules = report_plan.exit_rules_for(get_task("STS-B" if num_labels == 1 else "RTE"), 6, hybrid=num_labels == 2)
    every = report_replay.replay_candidates(rules, num_labels)
    assert every[0].is_full_depth and len(every) == len(set(every))
    settings = every[:1] + every[1::3]  # every third setting of each kind, to stay fast
    assert {c.rule.kind for c in settings} == {c.rule.kind for c in every}
    exits = {c: c.exit_layers(logits) for c in settings}
    assert len({float(e.mean()) for e in exits.values()}) > 4, "the settings should exit at different layers"
    for bs in (1, 32):
        measured = report_evaluate.time_settings(model, features, settings, bs, 1, 0)
        for c in settings:
            check = report_replay.compare_with_replay(logits, c, measured[c]["logits"], measured[c]["exits"],
                                                      num_labels)
            assert check["unexplained"] == 0 and check["exit_mismatches"] <= check["near_ties"], (c, bs, check)
            assert check["max_abs_logit_difference"] < 1e-4
            assert (measured[c]["exits"] == exits[c]).mean() >= 0.9
    # the report's records are pabee.tuning's scores of the same settings
    task = get_task("STS-B" if num_labels == 1 else "RTE")
    records = report_replay.replay_records(logits, features.labels, task, settings, "dev")
    for record, c in zip(records, settings):
        assert record["avg_exit_layer"] == pytest.approx(float(exits[c].mean()))
        assert report_replay.candidate_of(record) == c


def test_a_disagreement_is_counted_unless_it_is_a_near_tie():
    logits = np.zeros((3, 4, 2), dtype=np.float32)
    logits[:, :, 0] = [[2.0, 3.0, 1.0, 2.0]] * 3  # every layer says class 0, clearly: patience 1 exits at layer 2
    full = Candidate(ExitRule("patience", 1))
    exits = full.exit_layers(logits)
    assert exits.tolist() == [2, 2, 2, 2]
    real_logits = logits[1].copy()
    wrong = exits.copy()
    wrong[0] = 3
    check = report_replay.compare_with_replay(logits, full, real_logits, wrong, 2)
    assert (check["mismatches"], check["unexplained"], check["exit_mismatches"]) == (1, 1, 1)
    tied = logits.copy()
    tied[:, 0] = [1.0, 1.0 + 1e-6]  # row 0: both classes tied within float noise at every layer
    check = report_replay.compare_with_replay(tied, full, tied[1], np.array([3, 2, 2, 2]), 2)
    assert (check["mismatches"], check["near_ties"], check["unexplained"]) == (1, 1, 0)


def test_cross_fitting_predicts_each_half_with_the_setting_chosen_on_the_other():
    model = spread_model(2)
    features = random_features(40, 2, seed=3)
    logits = all_layer_logits(model, features, 32)
    labels = np.asarray(features.labels)
    task = get_task("RTE")
    candidates = tuning_candidates(2, 6)
    honest = report_replay.cross_fit(logits, labels, task, candidates, 0.5, seed=7)
    parts = np.array_split(np.random.default_rng(7).permutation(40), 2)
    exits = np.zeros(40, dtype=np.int64)
    for k in (0, 1):
        fit, held = np.sort(parts[1 - k]), np.sort(parts[k])
        chosen = tune(logits[:, fit], labels[fit], task, 0.5, candidates).chosen.candidate
        assert honest["choices"][k]["label"] == chosen.label and honest["choices"][k]["fit_examples"] == 20
        exits[held] = chosen.exit_layers(logits[:, held])
    assert honest["avg_exit_layer"] == pytest.approx(exits.mean())
    assert honest["layer_speedup"] == pytest.approx(6 / exits.mean())
    final = logits[exits - 1, np.arange(40)]
    assert honest["metrics"]["acc"] == pytest.approx((final.argmax(1) == labels).mean())
    # the summary: dev choice (optimistic), cross-fit (honest), fastest patience
    summary = report_replay.tuning_summary(logits, labels, task, 0.5, seed=7)
    assert summary["honest"]["how"] == "cross-fit" and summary["dev"]["optimistic"]
    assert summary["honest"]["metrics"] == honest["metrics"]
    assert summary["dev"]["drop_vs_full"] <= 0.5 + 1e-9 and summary["patience"]["exit_rule"].startswith("patience")


def test_held_out_tuning_is_scored_on_dev():
    task = get_task("RTE")
    # layer 1 is right on the held-out rows and wrong on dev: chosen on the held-out split, the fast setting is
    # scored on dev, where it loses; chosen on dev (optimistic), full depth
    dev_labels = np.array([0, 1] * 10)
    heldout_labels = np.array([0, 1] * 10)

    def logits_for(labels, first_right: bool):
        out = np.zeros((3, len(labels), 2), dtype=np.float32)
        out[np.arange(3)[:, None], np.arange(len(labels))[None, :], labels[None, :]] = 5.0  # every layer right
        if not first_right:
            out[0] = out[0][:, ::-1]  # layer 1 confidently wrong
        return out

    dev = logits_for(dev_labels, first_right=False)
    held = logits_for(heldout_labels, first_right=True)
    summary = report_replay.tuning_summary(dev, dev_labels, task, 0.5, 42, (held, heldout_labels, {"size": 20}))
    honest = summary["honest"]
    assert honest["how"] == "held-out" and honest["heldout_examples"] == 20
    assert honest["layer_speedup"] == pytest.approx(3.0) and honest["metrics"]["acc"] == 0.0
    assert honest["drop_vs_full"] == pytest.approx(100.0)
    assert summary["dev"]["metrics"]["acc"] == 1.0 and summary["dev"]["layer_speedup"] < 3.0
    want = score(dev, dev_labels, task, report_evaluate.candidate_of_choice(honest))
    assert want.metrics == honest["metrics"]


def quick_argv(tiny, tmp_path, *extra):
    return ["--quick", "--model-path", f"minilm={tiny}", "--glue-dir", str(tmp_path / "glue"), "--tasks", "RTE",
            "--max-train-samples", "12", "--max-eval-samples", "12", "--work-dir", str(tmp_path / "work"),
            "--out-dir", str(tmp_path / "out"), *extra]


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_an_interrupted_evaluation_resumes_and_old_folders_are_evaluated_again(report, tiny_bert, tmp_path,
                                                                                monkeypatch, capsys):
    write_glue_task(tmp_path / "glue", "RTE", n=16)
    argv = quick_argv(tiny_bert, tmp_path, "--timing-examples", "8")
    assert report.main([*argv, "--train-only"]) == 0
    folder = tmp_path / "work" / "minilm" / "rte" / "pabee-seed42"
    real_time = report_evaluate.time_settings
    timed = []

    def interrupted_at_32(model, features, settings, batch_size, rounds, pad):
        timed.append(batch_size)
        if batch_size == 32:
            raise KeyboardInterrupt
        return real_time(model, features, settings, batch_size, rounds, pad)

    monkeypatch.setattr(report_evaluate, "time_settings", interrupted_at_32)
    assert report.main(argv) == 130  # Ctrl-C during the plain run's batch size 32
    plain = tmp_path / "work" / "minilm" / "rte" / "plain-seed42"
    kept = json.loads((plain / report_evaluate.EVAL_FILE).read_text())
    assert set(kept["timing"]) == {"1"} and not kept["complete"] and (plain / report_evaluate.LOGITS_FILE).is_file()
    assert kept["timing_examples"] == 8

    def no_second_pass(*args, **kwargs):
        raise AssertionError("the all-layer pass was computed again")

    monkeypatch.setattr(report_evaluate, "all_layer_logits", no_second_pass)
    monkeypatch.setattr(report_evaluate, "time_settings", real_time)
    timed.clear()
    monkeypatch.setattr(report_evaluate, "time_settings",
                        lambda *a: timed.append(a[3]) or real_time(*a))
    # the plain run resumes (only batch size 32 left); the PABEE run has no logits yet: allow its pass
    passes = []

    def pass_once(model, features, *rest):
        passes.append(len(features))
        return all_layer_logits(model, features, *rest)

    monkeypatch.setattr(report_evaluate, "all_layer_logits", pass_once)
    assert report.main(argv) == 0
    assert passes == [12] and timed == [32, 1, 32]  # plain: bs 32 only; PABEE: both
    printed = capsys.readouterr().out
    assert "evaluate the trained model" in printed
    for run in (plain, folder):
        assert report_run.run_status(spec_of(report, argv, run), config_of(argv)) == "done"

    # a folder evaluated by the earlier scheme (eval_results.json only) is evaluated again, its old file kept
    (folder / report_evaluate.EVAL_FILE).unlink()
    old = folder / "eval_results.json"
    old.write_text("[]\n")
    assert report_run.run_status(spec_of(report, argv, folder), config_of(argv)) == "trained"
    # another budget or timing subset is another evaluation: evaluated again from the cached logits
    other = [*argv[:-2], "--timing-examples", "4"]
    assert report_run.run_status(spec_of(report, other, plain), config_of(other)) == "trained"
    passes.clear()
    assert report.main(argv) == 0
    assert passes == [] and old.read_text() == "[]\n"
    assert json.loads((folder / report_evaluate.EVAL_FILE).read_text())["complete"]


def config_of(argv):
    return report_args.make_config(report_args.build_parser().parse_args(argv), argv)


def spec_of(report, argv, folder):
    return next(s for s in report_plan.plan_runs(config_of(argv)) if s.output_dir == folder)


def test_a_replay_mismatch_stops_the_report_with_one_line(report, tiny_bert, tmp_path, monkeypatch, capsys):
    write_glue_task(tmp_path / "glue", "RTE", n=16)
    real_time = report_evaluate.time_settings

    def off_by_one(*args):  # fault injection: the "real" inference exits one layer later than it should
        measured = real_time(*args)
        for out in measured.values():
            out["exits"] = np.minimum(out["exits"] + 1, 5)
        return measured

    monkeypatch.setattr(report_evaluate, "time_settings", off_by_one)
    assert report.main(quick_argv(tiny_bert, tmp_path, "--methods", "plain,pabee")) == 2
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("benchmarks/report.py: error")]
    assert len(errors) == 1  # (the training before it may warn about the tiny model's length)
    line = errors[0]
    assert "disagrees with the replay" in line and "patience:0 at batch size 1" in line
    stored = json.loads((tmp_path / "work" / "minilm" / "rte" / "plain-seed42" / report_evaluate.EVAL_FILE).read_text())
    assert not stored["complete"] and stored["timing"]["1"]["settings"]["patience:0"]["check"]["unexplained"] == 12


def test_a_partial_grid_renders_with_missing_runs(report, tiny_bert, tmp_path, capsys):
    write_glue_task(tmp_path / "glue", "RTE", n=16)
    argv = [*quick_argv(tiny_bert, tmp_path), "--seeds", "42,43"]
    # plan: plain 42, pabee 42, plain 43, pabee 43; shard 1/3 trains plain 42 and pabee 43 only
    assert report.main([*argv, "--train-only", "--shard", "1/3"]) == 0
    assert report.main([*argv, "--evaluate-only"]) == 0
    printed = capsys.readouterr().out
    assert printed.count(" missing ") == 2 and "train + evaluate" not in printed
    assert printed.count(": evaluate the trained model") == 2
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(m["method"], m["seed"]) for m in results["missing_runs"]] == [("pabee", 42), ("plain", 43)]
    (summary,) = results["summaries"]
    assert summary["missing"] == ["pabee seed 42", "plain seed 43"]
    tuned = summary["tuned"]["pabee"]
    assert tuned["dev"]["seeds"] == [43] and tuned["plain_same_seeds"] is None  # plain 43 is not there
    assert tuned["dev"]["drop_vs_plain"] is None
    (target,) = summary["targets"]
    assert target["honest"]["status"] == "missing"  # never judged without its plain runs
    page = (tmp_path / "out" / "results.md").read_text()
    assert "**Partial grid**: 2 planned runs not trained yet" in page
    assert "Missing (not trained yet): pabee seed 42, plain seed 43." in page
    assert re.search(r"\| minilm \| RTE \| pabee \| ≥ 1\.3× within 0\.5 \| \d\.\d\d\d×, – \| missing \|", page)
    assert target["honest"]["layer_speedup"] == pytest.approx(tuned["honest"]["layer_speedup"]["mean"])
    assert report.main([*argv, "--evaluate-only", "--train-only"]) == 2
    assert "exclude each other" in one_error_line(capsys)


def test_target_checks_pair_seeds_with_plain():
    def run(method, seed, full, dev=None, honest=None):
        records = [{"exit_rule": "patience", "exit_value": 0, "metrics": {"acc": full}}]
        tuning = None
        if dev is not None:
            def pick(metric, speedup, how):
                return {"how": how, "label": "patience 2", "setting": "patience:2", "exit_rule": "patience:2",
                        "metrics": {"acc": metric}, "layer_speedup": speedup, "drop_vs_full": 100 * (full - metric)}
            tuning = {"max_drop": 0.5, "dev": pick(*dev, "dev"), "honest": pick(*honest, "cross-fit"),
                      "patience": pick(*dev, "dev")}
        return {"method": method, "seed": seed, "records": records, "tuning": tuning, "timing": {}}

    task = get_task("RTE")
    runs = [run("plain", 42, 0.70), run("plain", 43, 0.60),
            run("pabee", 42, 0.71, dev=(0.70, 2.0), honest=(0.69, 1.7)),
            run("pabee", 43, 0.61, dev=(0.61, 1.8), honest=(0.60, 1.5))]
    tuned = report_tuned.tuned_by_method(runs, task)
    assert tuned["pabee"]["honest"]["drop_vs_plain"]["mean"] == pytest.approx(0.5)  # (1 + 0) / 2 points
    assert tuned["pabee"]["honest"]["layer_speedup"]["mean"] == pytest.approx(1.6)
    (check,) = report_tuned.target_checks("mpnet", task, tuned)
    assert check["target"] == 1.6 and check["honest"]["status"] == "met" and check["aim_met"] is False
    assert check["optimistic"]["status"] == "met"
    assert report_tuned.target_checks("minilm", get_task("SST-2"), tuned) == []


def test_timing_examples_and_max_drop_flags(tiny_bert, tmp_path):
    base = ["--model-path", f"minilm={tiny_bert}", "--model-path", f"mpnet={tiny_bert}", "--models",
            "minilm,mpnet", "--work-dir", str(tmp_path / "w"), "--out-dir", str(tmp_path / "o")]
    config = config_of(base)
    assert config.timing_examples == {"minilm": None, "mpnet": 64} and config.max_drop == 0.5
    config = config_of([*base, "--timing-examples", "mpnet=all", "--timing-examples", "minilm=16",
                        "--max-drop", "1"])
    assert config.timing_examples == {"minilm": 16, "mpnet": None} and config.max_drop == 1.0
    command = report_plan.subset_command(config, "mpnet", get_task("RTE"))
    assert "--timing-examples all" in command and "--max-drop 1" in command
    spec = report_plan.plan_runs(config)[1]
    assert report_evaluate.eval_key(spec, config)["timing_examples"] == 16
    with pytest.raises(SystemExit):
        report_args.build_parser().parse_args(["--max-drop", "-1"])


def test_a_run_with_a_held_out_split_is_tuned_on_it(report, tiny_bert, tmp_path):
    from pabee.data.holdout import hold_out, save_holdout
    from pabee.runner import RunSettings, load_task_data

    write_glue_task(tmp_path / "glue", "RTE", n=16)
    argv = quick_argv(tiny_bert, tmp_path)
    assert report.main([*argv, "--train-only", "--shard", "2/2"]) == 0  # the PABEE run only
    folder = tmp_path / "work" / "minilm" / "rte" / "pabee-seed42"
    train = load_task_data(RunSettings(output_dir="", task_name="RTE", data_dir=str(tmp_path / "glue"),
                                       do_train=True)).train
    _kept, held = hold_out(train[:12], 6, 42)  # as pabee train --tune_split 6 would have kept it
    save_holdout(folder, held)
    assert report.main([*argv, "--evaluate-only"]) == 0
    stored = json.loads((folder / report_evaluate.EVAL_FILE).read_text())
    honest = stored["tuning"]["honest"]
    assert honest["how"] == "held-out" and honest["heldout_examples"] == 6 and honest["detail"]["size"] == 6
    assert stored["timed_settings"][0] == "patience:0"
    assert honest["setting"] in stored["timed_settings"]  # the held-out choice is timed and checked too
    with np.load(folder / report_evaluate.LOGITS_FILE) as npz:
        assert npz["heldout"].shape == (4, 6, 2) and npz["dev"].shape == (4, 12, 2)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["summaries"][0]["tuned"]["pabee"]["honest"]["how"] == ["held-out"]
    assert "| held-out |" in (tmp_path / "out" / "results.md").read_text()


def test_a_disturbed_round_does_not_decide_the_wall_speedup():
    """Eval time is the median round and the speed-up the median per-round ratio: one round slowed by another
    process (here round 3 of the early-exit setting, 10x) leaves both at the undisturbed value."""
    logits = np.random.default_rng(0).normal(size=(6, 4, 2)).astype(np.float32)
    full, early = Candidate(ExitRule("patience", 0)), Candidate(ExitRule("patience", 1))
    measured = {}
    for c, rounds in ((full, [2.0, 2.0, 2.0]), (early, [1.0, 1.0, 10.0])):
        exits = c.exit_layers(logits)
        measured[c] = {"rounds": rounds, "exits": exits, "logits": logits[exits - 1, np.arange(4)]}
    entry = report_evaluate.timing_entry([full, early], measured, logits, 2, 1)
    timed = entry["settings"][report_evaluate.setting_name(early)]
    assert timed["eval_seconds"] == pytest.approx(1.0)
    assert timed["wall_speedup"] == pytest.approx(2.0)
    assert timed["check"]["unexplained"] == 0
