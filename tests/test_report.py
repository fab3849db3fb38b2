"""benchmarks/report.py (and its stages, benchmarks/report_*.py) end to end on a tiny random BERT and GLUE-format fixtures (seconds), and its picks."""

import argparse
import json
import math
import re
from pathlib import Path

import pytest
import torch
from fixtures import load_script, save_tiny_bert, write_glue_task

from benchmarks import (
    report_aggregate,
    report_args,
    report_plan,
    report_render,
    report_replay,
    report_run,
    report_runs,
)
from pabee.evaluate import INTERLEAVE_EXAMPLES
from pabee.exit_rules import ExitRule
from pabee.tasks import get_task

REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "report.py"
LAYERS = 4  # save_tiny_bert's default depth


@pytest.fixture(scope="module")
def report():
    return load_script(REPORT, "pabee_report_script")


def sections(markdown: str) -> dict[str, str]:
    """"### minilm · RTE (...)" heading -> that section's text, keyed "RTE"."""
    parts = re.split(r"^### minilm · (\S+) .*$", markdown, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def rule_kinds(run: dict) -> set[str]:
    return {r["exit_rule"] for r in run["records"]}


def test_report_trains_aggregates_then_reuses_and_keeps_the_discussion(report, tmp_path, capsys):
    tiny = save_tiny_bert(tmp_path / "tiny")
    for task in ("RTE", "STS-B"):
        write_glue_task(tmp_path / "glue", task, n=16)
    work, out = tmp_path / "work", tmp_path / "out"
    argv = ["--quick", "--model-path", f"minilm={tiny}", "--glue-dir", str(tmp_path / "glue"), "--tasks", "RTE,STS-B",
            "--seeds", "RTE=42,43", "--max-train-samples", "12", "--max-eval-samples", "10",
            "--work-dir", str(work), "--out-dir", str(out)]
    assert report.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count(" start ") == printed.count(" finished ") == 6 and " reused " not in printed

    results = json.loads((out / "results.json").read_text())
    runs = {(r["task"], r["seed"], r["method"]): r for r in results["runs"]}
    assert sorted(runs) == [("RTE", 42, "pabee"), ("RTE", 42, "plain"), ("RTE", 43, "pabee"), ("RTE", 43, "plain"),
                            ("STS-B", 42, "pabee"), ("STS-B", 42, "plain")]
    for (task, _seed, method), run in runs.items():
        # every setting once, by replay (no batch size); only a few settings timed, at both batch sizes
        assert {r["batch_size"] for r in run["records"]} == {None} and set(run["timing"]) == {"1", "32"}
        assert {r["num_examples"] for r in run["records"]} == {10} and run["timing_examples"] == 10
        assert run["train_s_per_epoch"] > 0 and run["epochs"] == 1
        assert run["timed_settings"][0] == "patience:0"
        for entry in run["timing"].values():
            assert list(entry["settings"]) == run["timed_settings"]
            assert all(s["check"]["examples"] == 10 and s["check"]["unexplained"] == 0
                       for s in entry["settings"].values())
        if method == "plain":
            assert {(r["exit_rule"], r["exit_value"]) for r in run["records"]} == {("patience", 0)}
            assert run["tuning"] is None and run["timed_settings"] == ["patience:0"]
            continue
        assert run["tuning"]["honest"]["how"] == "cross-fit" and run["tuning"]["max_drop"] == 0.5
        assert run["tuning"]["dev"]["optimistic"] and run["tuning"]["dev"]["drop_vs_full"] <= 0.5 + 1e-9
        if task == "RTE":
            assert rule_kinds(run) == {"patience", "entropy", "confidence", "layer"}
            # full depth + patience 1..3 + 9 entropy + 7 confidence (all > 1/2) + layer 1..3
            assert len(run["records"]) == 1 + 3 + 9 + 7 + 3
            entropies = sorted(r["exit_value"] for r in run["records"] if r["exit_rule"] == "entropy")
            assert entropies == pytest.approx([f * math.log(2) for f in report_plan.ENTROPY_FRACTIONS])
        else:
            assert rule_kinds(run) == {"patience", "layer"}  # regression: no entropy / confidence
            # full depth + patience 1..3 at each regression threshold + layer 1..3
            assert len(run["records"]) == 1 + 3 * len(report_replay.REGRESSION_THRESHOLDS) + 3
    assert results["max_train_samples"] == {"minilm": 12} and results["max_eval_samples"] == {"minilm": 10}
    assert results["seeds"] == {"RTE": [42, 43], "STS-B": [42]}
    assert results["training_examples"] == {"minilm": {"RTE": {"available": 16, "used": 12},
                                                       "STS-B": {"available": 16, "used": 12}}}
    assert results["command"].startswith("python benchmarks/report.py --quick")
    assert {"platform", "logical_cores", "torch_num_threads", "torch_version", "transformers_version",
            "python_version"} <= set(results["machine"])
    assert results["hyper_parameters"]["minilm"]["num_train_epochs"] == 1 and results["total_seconds"] > 0
    assert results["timing_rounds"] == 1 and results["timing_rounds_used"] == [{"value": 1, "runs": 6}]
    for summary in results["summaries"]:
        assert summary["training"]["ratio"] > 0
        assert summary["best_patience"]["rule"] == "patience" and summary["best_patience"]["value"] >= 1

    assert results["evaluation"]["checks"]["unexplained"] == 0 and results["missing_runs"] == []
    assert [(c["task"], c["target"]) for s in results["summaries"] for c in s["targets"]] == [("RTE", 1.3),
                                                                                              ("STS-B", 1.2)]
    markdown = (out / "results.md").read_text()
    assert "## Tuned settings against plain fine-tuning" in markdown and "### Targets (issue #16)" in markdown
    assert "| minilm | RTE | pabee | 42, 43 (n = 2) |" in markdown and "cross-fit" in markdown
    assert "Trade-off over the regression thresholds" in markdown
    assert (out / "results" / "minilm-sts-b-thresholds.png").stat().st_size > 1000
    assert "only the first 12 training examples" in markdown
    by_task = sections(markdown)
    assert set(by_task) == {"RTE", "STS-B"}
    for task, text in by_task.items():
        for cell in ("| plain | plain fine-tuning |", "| PABEE | full depth |", "| PABEE | patience 1 |",
                     "| PABEE | patience 3 |", "wall speed-up bs 1", "wall speed-up bs 32", "wall / layer bs 1",
                     "best on dev", "fastest within 0.5 points", "PABEE / plain =",
                     f"--tasks {task}", f"results/minilm-{task.lower()}.png"):
            assert cell in text, (task, cell)
        assert ("entropy" in text) == (task == "RTE") and ("confidence 0." in text) == (task == "RTE")
        assert (out / "results" / f"minilm-{task.lower()}.png").stat().st_size > 1000
        assert re.search(r"≥ 1\.3×: (met|\*\*not met\*\*)", text)  # the MiniLM layer target, judged

    # A second invocation reuses every finished run and keeps the hand-written discussion.
    weights = {p: p.stat().st_mtime_ns for p in work.rglob("model.safetensors")}
    assert len(weights) == 6
    note = "Hand-written: the shallow layers agree early."
    (out / "results.md").write_text(markdown.replace(report_render.DISCUSSION_PLACEHOLDER, note))
    assert report.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count(" reused ") == 6 and " start " not in printed
    assert {p: p.stat().st_mtime_ns for p in work.rglob("model.safetensors")} == weights
    again = (out / "results.md").read_text()
    assert f"{report_render.DISCUSSION_START}\n{note}\n{report_render.DISCUSSION_END}" in again
    assert json.loads((out / "results.json").read_text())["num_reused"] == 6

    # The page is rendered from results.json alone: --render-only gives it again, discussion included.
    (out / "results.md").write_text(again.replace("| PABEE | full depth |", "| edited |"))
    assert report.main(["--render-only", "--out-dir", str(out)]) == 0
    assert (out / "results.md").read_text() == again
    assert report.main(["--render-only", "--out-dir", str(tmp_path / "nothing")]) == 2
    assert "cannot read" in one_error_line(capsys)


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("given", [None, "missing-folder"])
def test_a_missing_mpnet_model_is_one_line_and_exit_2(given, report, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PABEE_MPNET_PATH", raising=False)
    extra = [] if given is None else ["--mpnet-path", str(tmp_path / given)]
    argv = ["--models", "mpnet", "--work-dir", str(tmp_path / "w"), "--out-dir", str(tmp_path / "o"), *extra]
    assert report.main(argv) == 2
    assert "get-mpnet-base.sh" in one_error_line(capsys)
    assert not (tmp_path / "w").exists() and not (tmp_path / "o").exists()


def test_quick_never_writes_into_docs(report, capsys):
    assert report.main(["--quick", "--out-dir", str(REPORT.parents[1] / "docs")]) == 2
    assert "--quick never writes into docs/" in one_error_line(capsys)


def test_exit_rules_follow_the_task(report):
    mnli = report_plan.exit_rules_for(get_task("MNLI"), 6)  # 3 classes: confidence 0.55.. > 1/3, entropy of ln 3
    assert [r.value for r in mnli if r.kind == "patience"] == [1, 2, 3, 4, 5]
    assert [r.value for r in mnli if r.kind == "layer"] == [1, 2, 3, 4, 5]
    assert [r.value for r in mnli if r.kind == "confidence"] == list(report_plan.CONFIDENCES)
    assert max(r.value for r in mnli if r.kind == "entropy") == pytest.approx(0.8 * math.log(3))
    assert {r.kind for r in report_plan.exit_rules_for(get_task("STS-B"), 6)} == {"patience", "layer"}
    assert ExitRule("patience", 0) not in mnli  # full depth is added by the harness


def point(kind, value, metric, speedup):
    return {"rule": kind, "value": value, "label": f"{kind} {value}", "layer_speedup": speedup,
            "metrics": {"acc": {"mean": metric, "std": 0.0, "values": [metric]}}}


def test_picks_and_matching(report):
    patience = [point("patience", 1, 0.70, 2.0), point("patience", 2, 0.74, 1.5), point("patience", 3, 0.74, 1.2)]
    assert report_aggregate.pick_best(patience, "acc")["value"] == 2  # tie on the metric: the larger speed-up wins
    assert report_aggregate.pick_fastest_within(patience, "acc", 0.705)["value"] == 1  # 0.5 points below plain is allowed
    assert report_aggregate.pick_fastest_within(patience, "acc", 0.72)["value"] == 2
    assert report_aggregate.pick_fastest_within(patience, "acc", 0.80) is None
    others = [point("layer", 3, 0.6, 1.33), point("layer", 4, 0.7, 1.0), point("entropy", 0.1, 0.7, 1.9)]
    matched = report_aggregate.match_by_speedup(patience, others)
    assert [(m["rule"], m["value"], m["matched_to"]) for m in matched] == [
        ("entropy", 0.1, ["patience 1", "patience 2", "patience 3"]),
        ("layer", 3, ["patience 1", "patience 2", "patience 3"]),
    ]
    verdict = report_aggregate.verdicts({**patience[0], "wall_to_layer": {"1": 0.96, "32": 0.8}}, "minilm")
    assert verdict["layer_speedup"]["met"] and verdict["wall_to_layer_bs1"]["met"]
    assert not verdict["wall_to_layer_bs32"]["met"]


def config_for(report, argv: list[str]):
    return report_args.make_config(report_args.build_parser().parse_args(argv), argv)


def test_per_model_values_set_each_models_run_key_and_training(report, tmp_path):
    tiny = save_tiny_bert(tmp_path / "tiny")
    paths = ["--model-path", f"minilm={tiny}", "--model-path", f"mpnet={tiny}", "--models", "minilm,mpnet",
             "--work-dir", str(tmp_path / "w"), "--out-dir", str(tmp_path / "o")]
    config = config_for(report, [*paths, "--epochs", "2", "--max-train-samples", "MPNet=2000", "--learning-rate",
                                 "mpnet=2e-5", "--learning-rate", "1e-4", "--batch-size", "minilm=16",
                                 "--max-eval-samples", "mpnet=300"])
    assert config.hyper["minilm"] == report_plan.ModelHyper(epochs=2.0, learning_rate=1e-4, max_train_samples=None,
                                                       batch_size=16, task_epochs=dict(report_plan.TASK_EPOCHS))
    assert config.hyper["mpnet"] == report_plan.ModelHyper(epochs=2.0, learning_rate=2e-5, max_train_samples=2000,
                                                      batch_size=32, precision="bf16", max_eval_samples=300,
                                                      task_epochs=dict(report_plan.TASK_EPOCHS))
    assert config.timing_rounds == report_plan.DEFAULT_TIMING_ROUNDS
    plan = {(spec.model.name, spec.task.folder, spec.seed, spec.method): spec for spec in report_plan.plan_runs(config)}
    mpnet = plan[("mpnet", "RTE", 42, "pabee")]
    assert {k: v for k, v in config.run_key(mpnet).items() if k not in ("model", "task", "seed", "method")} == {
        "epochs": 2.0, "learning_rate": 2e-5, "batch_size": 32, "precision": "bf16", "max_train_samples": 2000,
        "max_eval_samples": 300}
    assert config.run_key(plan[("minilm", "RTE", 42, "plain")])["learning_rate"] == 1e-4
    assert config.run_key(plan[("minilm", "RTE", 42, "plain")])["max_eval_samples"] is None
    assert report_run.run_settings(mpnet, config, train=False).max_eval_samples == 300
    train = report_run.run_settings(mpnet, config, train=True)
    assert train.max_train_samples == 2000 and not train.do_eval
    assert train.train.bf16 and not report_run.run_settings(plan[("minilm", "RTE", 42, "pabee")], config, True).train.bf16
    assert (train.train.learning_rate, train.train.num_train_epochs, train.train.per_device_train_batch_size) == (
        2e-5, 2.0, 32)
    minilm = report_run.run_settings(plan[("minilm", "RTE", 42, "plain")], config, train=True)
    assert (minilm.max_train_samples, minilm.train.learning_rate, minilm.train.per_device_train_batch_size) == (
        None, 1e-4, 16)
    evaluate = report_run.run_settings(mpnet, config, train=False)
    assert evaluate.do_eval and not evaluate.do_train and evaluate.timing_rounds == report_plan.DEFAULT_TIMING_ROUNDS
    command = report_plan.subset_command(config, "mpnet", get_task("RTE"))
    assert "--learning-rate 2e-05 --max-train-samples 2000" in command and "--batch-size" not in command
    assert "--batch-size 16" in report_plan.subset_command(config, "minilm", get_task("RTE"))

    # No flag: the full report takes MODEL_DEFAULTS per model, --quick its own defaults for every model.
    full = config_for(report, paths)
    for name in ("minilm", "mpnet"):
        assert full.hyper[name] == report_plan.ModelHyper(**report_plan.MODEL_DEFAULTS[name], task_epochs=dict(report_plan.TASK_EPOCHS))
    # SST-2's epochs are shown only for the model that trains on SST-2 (MPNet does not by default)
    assert report_aggregate.hyper_parameters(full, "minilm")["task_epochs"] == {"SST-2": 2.0}
    assert report_aggregate.hyper_parameters(full, "mpnet")["task_epochs"] == {}
    quick = config_for(report, [*paths, "--quick", "--max-train-samples", "mpnet=all"])
    assert quick.hyper["minilm"].max_train_samples == report_plan.QUICK["max_train_samples"]
    assert quick.hyper["mpnet"].max_train_samples is None and quick.hyper["mpnet"].epochs == report_plan.QUICK["epochs"]
    assert quick.timing_rounds == 1
    assert "--max-train-samples all" in report_plan.subset_command(quick, "mpnet", get_task("RTE"))


def test_tasks_per_model(report, tmp_path):
    tiny = save_tiny_bert(tmp_path / "tiny")
    paths = ["--model-path", f"minilm={tiny}", "--model-path", f"mpnet={tiny}", "--models", "minilm,mpnet",
             "--work-dir", str(tmp_path / "w"), "--out-dir", str(tmp_path / "o")]
    names = lambda config: {m: [t.folder for t in ts] for m, ts in config.tasks.items()}  # noqa: E731
    assert names(config_for(report, paths)) == {"minilm": ["RTE", "MRPC", "STS-B", "CoLA", "SST-2"],
                                                "mpnet": ["RTE", "MRPC", "STS-B"]}
    assert names(config_for(report, [*paths, "--tasks", "minilm=RTE,CoLA"])) == {
        "minilm": ["RTE", "CoLA"], "mpnet": ["RTE", "MRPC", "STS-B"]}
    config = config_for(report, [*paths, "--tasks", "mrpc", "--tasks", "MPNet=STS-B"])
    assert names(config) == {"minilm": ["MRPC"], "mpnet": ["STS-B"]}
    assert {(s.model.name, s.task.folder) for s in report_plan.plan_runs(config)} == {("minilm", "MRPC"),
                                                                                       ("mpnet", "STS-B")}


@pytest.mark.parametrize("bad", [["--epochs", "bert=3"], ["--learning-rate", "0"], ["--max-train-samples", "-1"],
                                 ["--epochs", "minilm="], ["--timing-rounds", "0"], ["--shard", "3/2"],
                                 ["--shard", "1"], ["--tasks", "bert=RTE"], ["--tasks", "minilm=RTE,XNLI"]])
def test_bad_values_are_rejected(bad, report, capsys):
    with pytest.raises(SystemExit) as raised:
        report_args.build_parser().parse_args(bad)
    assert raised.value.code == 2
    assert f"argument {bad[0]}" in capsys.readouterr().err


def test_shard_needs_train_only(report, tmp_path, capsys):
    argv = ["--quick", "--shard", "1/2", "--work-dir", str(tmp_path / "w"), "--out-dir", str(tmp_path / "o")]
    assert report.main(argv) == 2
    assert "--shard works only with --train-only" in one_error_line(capsys)
    assert not (tmp_path / "w").exists() and not (tmp_path / "o").exists()


def test_without_train_only_drops_the_training_flags(report):
    argv = ["--quick", "--train-only", "--shard", "1/2", "--seeds", "42", "--shard=2/2", "--train", "--sh", "1/3"]
    assert report_args.without_train_only(argv) == ["--quick", "--seeds", "42"]


def test_sharded_training_then_one_invocation_evaluates_and_renders(report, tmp_path, capsys):
    minilm, mpnet = save_tiny_bert(tmp_path / "tiny"), save_tiny_bert(tmp_path / "tiny3", layers=3, seed=1)
    write_glue_task(tmp_path / "glue", "RTE", n=16)
    work, out = tmp_path / "work", tmp_path / "out"
    argv = ["--quick", "--models", "minilm,mpnet", "--model-path", f"minilm={minilm}", "--model-path",
            f"mpnet={mpnet}", "--glue-dir", str(tmp_path / "glue"), "--max-train-samples", "12",
            "--max-train-samples", "mpnet=8", "--learning-rate", "mpnet=1e-4", "--max-eval-samples", "10",
            "--max-eval-samples", "mpnet=6", "--work-dir", str(work), "--out-dir", str(out)]
    # plan order: minilm plain, minilm pabee, mpnet plain, mpnet pabee -> shard 1/2 trains the plain runs
    for shard, trained in (("1/2", ["minilm RTE seed 42 plain", "mpnet RTE seed 42 plain"]),
                           ("2/2", ["minilm RTE seed 42 pabee", "mpnet RTE seed 42 pabee"])):
        assert report.main([*argv, "--train-only", "--shard", shard]) == 0
        printed = capsys.readouterr().out
        assert re.findall(r" start (.*): train only", printed) == trained
        assert printed.count(" finished ") == 2 and "evaluate" not in printed.split("nothing evaluated")[0]
        assert "without --train-only and --shard" in printed.splitlines()[-1]
        assert "--shard" not in printed.splitlines()[-1].split(": ", 1)[1]
    assert not out.exists() and not list(work.rglob("eval_results.json"))
    metas = {p.parent.name + " " + p.parents[2].name: json.loads(p.read_text()) for p in work.rglob("report_run.json")}
    assert len(metas) == 4
    for name, meta in metas.items():
        assert meta["training"]["shard"] == ("1/2" if name.startswith("plain") else "2/2")
        assert meta["training"]["torch_threads"] >= 1 and meta["train_s"] > 0 and "eval_s" not in meta
    assert report.main([*argv, "--train-only", "--shard", "1/2"]) == 0  # nothing left to train
    assert capsys.readouterr().out.count("skipped") == 2

    weights = {p: p.stat().st_mtime_ns for p in work.rglob("model.safetensors")}
    assert report.main([*argv, "--timing-rounds", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.count(": evaluate the trained model") == 4 and "train + evaluate" not in printed
    assert {p: p.stat().st_mtime_ns for p in work.rglob("model.safetensors")} == weights  # nothing retrained

    results = json.loads((out / "results.json").read_text())
    assert results["timing_rounds"] == 2 and results["timing_rounds_used"] == [{"value": 2, "runs": 4}]
    hyper = results["hyper_parameters"]
    assert (hyper["minilm"]["max_train_samples"], hyper["minilm"]["learning_rate"]) == (12, 5e-5)
    assert (hyper["mpnet"]["max_train_samples"], hyper["mpnet"]["learning_rate"]) == (8, 1e-4)
    assert results["max_train_samples"] == {"minilm": 12, "mpnet": 8}
    assert results["max_eval_samples"] == {"minilm": 10, "mpnet": 6}
    assert {(run["model"], r["num_examples"]) for run in results["runs"] for r in run["records"]} == {
        ("minilm", 10), ("mpnet", 6)}
    assert results["training_examples"] == {"minilm": {"RTE": {"available": 16, "used": 12}},
                                            "mpnet": {"RTE": {"available": 16, "used": 8}}}
    assert [(c["shards"], c["runs"]) for c in results["training_conditions"]] == [(2, 4)]
    for run in results["runs"]:
        assert run["train_shard"] == ("1/2" if run["method"] == "plain" else "2/2") and not run["reused"]
        assert run["train_s"] > 0 and run["eval_s"] > 0 and run["timing_rounds"] == 2
        assert {len(s["eval_seconds_rounds"]) for e in run["timing"].values() for s in e["settings"].values()} == {2}
        assert set(run["timing"]) == {"1", "32"}
    for meta_path in work.rglob("report_run.json"):
        meta = json.loads(meta_path.read_text())
        assert meta["evaluation"]["timing_rounds"] == 2
        assert meta["elapsed_s"] == pytest.approx(meta["train_s"] + meta["eval_s"])
    assert {s["model"]: s["num_layers"] for s in results["summaries"]} == {"minilm": 4, "mpnet": 3}

    markdown = (out / "results.md").read_text()
    assert "only the first 12 training examples of each task were used for minilm" in markdown
    assert "only the first 8 training examples of each task were used for mpnet" in markdown
    assert "only the first 6 dev examples of each task were evaluated for mpnet" in markdown
    assert "2 timed rounds (`--timing-rounds 2`)" in markdown and "no repeats" not in markdown
    threads = torch.get_num_threads()
    assert results["eval_threads_used"] == [{"value": threads, "runs": 4}]
    assert f"Evaluations ran with {threads} torch thread" in markdown
    assert "`--train-only --shard K/2`" in markdown and "**mpnet** 1 epoch(s), learning rate 0.0001" in markdown
    assert "--learning-rate 0.0001 --max-train-samples 8" in markdown  # mpnet's own command


def test_a_run_folder_with_other_or_missing_settings_is_refused_never_reused(report, tmp_path):
    tiny = save_tiny_bert(tmp_path / "tiny")
    argv = ["--quick", "--model-path", f"minilm={tiny}", "--work-dir", str(tmp_path / "w"), "--out-dir",
            str(tmp_path / "o")]
    spec = report_plan.plan_runs(config_for(report, argv))[0]
    spec.output_dir.mkdir(parents=True)
    key = config_for(report, argv).run_key(spec)
    meta = spec.output_dir / report_run.RUN_META
    meta.write_text(json.dumps({"settings": key, "elapsed_s": 1.0}))
    assert report_run.run_status(spec, config_for(report, argv)) == "new"  # its training never finished
    with pytest.raises(report_plan.ReportError, match=r"batch_size 32 != 16"):
        report_run.run_status(spec, config_for(report, [*argv, "--batch-size", "16"]))
    with pytest.raises(report_plan.ReportError, match=r"learning_rate 5e-05 != 0.0001"):
        report_run.run_status(spec, config_for(report, [*argv, "--learning-rate", "minilm=1e-4"]))
    assert report_run.run_status(spec, config_for(report, [*argv, "--timing-rounds", "5"])) == "new"
    # a folder written before the batch size was part of a run's settings: regenerate it (no guessing)
    meta.write_text(json.dumps({"settings": {k: v for k, v in key.items() if k != "batch_size"}, "elapsed_s": 1.0}))
    with pytest.raises(report_plan.ReportError, match=r"batch_size None != 32"):
        report_run.run_status(spec, config_for(report, argv))


def test_a_run_another_process_holds_is_skipped_then_reused(report, tmp_path, capsys):
    """Two invocations on one work dir (two shards, or one command started twice) never work on the same run."""
    tiny = save_tiny_bert(tmp_path / "tiny")
    write_glue_task(tmp_path / "glue", "RTE", n=16)
    argv = ["--quick", "--model-path", f"minilm={tiny}", "--glue-dir", str(tmp_path / "glue"),
            "--max-train-samples", "8", "--max-eval-samples", "8", "--work-dir", str(tmp_path / "w"),
            "--out-dir", str(tmp_path / "o")]
    plain, pabee = report_plan.plan_runs(config_for(report, argv))
    with report_run.claim(pabee.output_dir) as mine:  # as if another process were training the PABEE run
        assert mine
        with report_run.claim(pabee.output_dir) as again:
            assert not again  # one holder at a time (flock on a file beside the folder)
        assert report.main([*argv, "--train-only"]) == 0
        printed = capsys.readouterr().out
        assert "start minilm RTE seed 42 plain: train only" in printed
        assert "skipped minilm RTE seed 42 pabee: another process is training it" in printed
        assert not pabee.output_dir.exists()
        assert report.main([*argv, "--evaluate-only"]) == 0  # evaluates the plain run, shows PABEE as missing
        printed = capsys.readouterr().out
        assert "start minilm RTE seed 42 plain: evaluate the trained model" in printed
        assert "missing minilm RTE seed 42 pabee" in printed
    assert report.main([*argv, "--train-only"]) == 0  # released: now it is trained
    printed = capsys.readouterr().out
    assert "start minilm RTE seed 42 pabee: train only" in printed and "plain: train only" not in printed
    assert report_run.run_status(pabee, config_for(report, argv)) == "trained"


def test_epochs_per_task_override_the_model_default(report):
    parse = report_args.per_model(report_args.positive_float, tasks=True)
    assert parse("SST2=2") == ("task:sst-2", 2.0)
    assert parse("minilm=4") == ("minilm", 4.0)
    with pytest.raises(argparse.ArgumentTypeError, match="model or task"):
        parse("nosuch=2")
    args = report_args.build_parser().parse_args(["--epochs", "5", "--epochs", "RTE=7"])
    hyper = report_args.resolve_hyper(args, "minilm", quick=False)
    assert hyper.epochs_for(get_task("mrpc")) == 5.0
    assert hyper.epochs_for(get_task("rte")) == 7.0
    assert hyper.epochs_for(get_task("sst-2")) == report_plan.TASK_EPOCHS["sst-2"]  # the full-report default
    quick = report_args.resolve_hyper(report_args.build_parser().parse_args(["--quick"]), "minilm", quick=True)
    assert quick.epochs_for(get_task("sst-2")) == report_plan.QUICK["epochs"]


def test_max_seeds_limits_one_models_runs(report, tmp_path):
    tiny = save_tiny_bert(tmp_path / "tiny")
    argv = ["--model-path", f"minilm={tiny}", "--model-path", f"mpnet={tiny}", "--models", "minilm,mpnet",
            "--tasks", "RTE", "--work-dir", str(tmp_path / "w"), "--out-dir", str(tmp_path / "o")]
    config = config_for(report, argv)
    assert config.max_seeds == report_plan.MAX_SEEDS
    runs = {(spec.model.name, spec.seed) for spec in report_plan.plan_runs(config)}
    assert runs == {("minilm", 42), ("minilm", 43), ("minilm", 44), ("mpnet", 42)}
    config = config_for(report, [*argv, "--max-seeds", "2", "--max-seeds", "minilm=3"])
    runs = {(spec.model.name, spec.seed) for spec in report_plan.plan_runs(config)}
    assert runs == {("minilm", 42), ("minilm", 43), ("minilm", 44), ("mpnet", 42), ("mpnet", 43)}
    assert "--seeds 42,43 " in report_plan.subset_command(config, "mpnet", get_task("RTE"))


def test_timing_text_says_how_the_rules_were_interleaved(report):
    blocks = [{"extra": {"eval_seconds_rounds": [1.0], "timing_block_batches": 16}}]
    batches = [{"extra": {"eval_seconds_rounds": [1.0]}}]
    assert report_runs.interleaving_of(blocks) == "blocks"
    assert report_runs.interleaving_of(batches + blocks) == "batches"
    assert report_runs.interleaving_of([]) == "batches"
    base = {"timing_rounds": 1, "timing_rounds_used": [{"value": 1, "runs": 3}],
            "eval_threads_used": [{"value": 2, "runs": 3}]}
    new = report_render.render_timing({**base, "timing_interleaving_used": [{"value": "blocks", "runs": 3}]})
    assert f"in blocks (every rule in turn runs {INTERLEAVE_EXAMPLES} examples'" in new
    assert "batch by batch" not in new
    old = report_render.render_timing({**base, "timing_interleaving_used": [{"value": "batches", "runs": 3}]})
    assert "interleaves all exit rules batch by batch" in old and "Evaluations ran with 2 torch threads" in old
    mixed = report_render.render_timing(
        {**base, "timing_interleaving_used": [{"value": "blocks", "runs": 1}, {"value": "batches", "runs": 2}]}
    )
    assert "consecutive inputs as in use) in 1 run" in mixed and "rotating order) in 2 runs" in mixed


def test_an_interrupted_training_resumes_from_its_last_checkpoint(report, tmp_path, monkeypatch, capsys):
    tiny = save_tiny_bert(tmp_path / "tiny")
    write_glue_task(tmp_path / "glue", "RTE", n=16)
    argv = ["--quick", "--model-path", f"minilm={tiny}", "--glue-dir", str(tmp_path / "glue"), "--epochs", "3",
            "--max-train-samples", "12", "--batch-size", "8", "--work-dir", str(tmp_path / "w"),
            "--out-dir", str(tmp_path / "o"), "--train-only", "--shard", "2/2"]  # shard 2/2: the PABEE run
    monkeypatch.setattr(report_plan, "CHECKPOINT_STEPS", 2)  # 12 examples / 8 = 2 steps an epoch, 6 in all
    real_run_logged = report_run.run_logged

    def interrupted(settings, folder):  # the first invocation stops after 4 steps, before it records its end
        settings.train.max_steps = 4
        real_run_logged(settings, folder)
        raise KeyboardInterrupt

    monkeypatch.setattr(report_run, "run_logged", interrupted)
    assert report.main(argv) == 130  # Ctrl-C
    folder = tmp_path / "w" / "minilm" / "rte" / "pabee-seed42"
    assert [p.name for p in folder.glob("checkpoint-*")] == ["checkpoint-4"]
    monkeypatch.setattr(report_run, "run_logged", real_run_logged)
    assert report.main(argv) == 0
    assert " start minilm RTE seed 42 pabee: train only" in capsys.readouterr().out
    meta = json.loads((folder / report_run.RUN_META).read_text())
    assert meta["resumed_from"] == ["checkpoint-4"] and "training" in meta
    assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == 6  # 4 before + 2 after
    assert not list(folder.glob("checkpoint-*"))
