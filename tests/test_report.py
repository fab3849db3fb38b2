"""benchmarks/report.py end to end on a tiny random BERT and GLUE-format fixtures (seconds), and its picks."""

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest
from fixtures import save_tiny_bert, write_glue_task

from pabee.exit_rules import ExitRule
from pabee.tasks import get_task

REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "report.py"
LAYERS = 4  # save_tiny_bert's default depth


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("pabee_report_script", REPORT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(module)
    return module


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
        assert {r["batch_size"] for r in run["records"]} == {1, 32}
        assert {r["num_examples"] for r in run["records"]} == {10}
        assert run["train_s_per_epoch"] > 0 and run["epochs"] == 1
        if method == "plain":
            assert {(r["exit_rule"], r["exit_value"]) for r in run["records"]} == {("patience", 0)}
        elif task == "RTE":
            assert rule_kinds(run) == {"patience", "entropy", "confidence", "layer"}
            # full depth + patience 1..3 + 9 entropy + 7 confidence (all > 1/2) + layer 1..3, at two batch sizes
            assert len(run["records"]) == 2 * (1 + 3 + 9 + 7 + 3)
            entropies = sorted(r["exit_value"] for r in run["records"] if r["exit_rule"] == "entropy")[::2]
            assert entropies == pytest.approx([f * math.log(2) for f in report.ENTROPY_FRACTIONS])
        else:
            assert rule_kinds(run) == {"patience", "layer"}  # regression: no entropy / confidence
    assert results["max_train_samples"] == 12 and results["max_eval_samples"] == 10
    assert results["seeds"] == {"RTE": [42, 43], "STS-B": [42]}
    assert results["training_examples"] == {"RTE": {"available": 16, "used": 12},
                                            "STS-B": {"available": 16, "used": 12}}
    assert results["command"].startswith("python benchmarks/report.py --quick")
    assert {"platform", "logical_cores", "torch_num_threads", "torch_version", "transformers_version",
            "python_version"} <= set(results["machine"])
    assert results["hyper_parameters"]["num_train_epochs"] == 1 and results["total_seconds"] > 0
    for summary in results["summaries"]:
        assert summary["training"]["ratio"] > 0
        assert summary["best_patience"]["rule"] == "patience" and summary["best_patience"]["value"] >= 1

    markdown = (out / "results.md").read_text()
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
    (out / "results.md").write_text(markdown.replace(report.DISCUSSION_PLACEHOLDER, note))
    assert report.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count(" reused ") == 6 and " start " not in printed
    assert {p: p.stat().st_mtime_ns for p in work.rglob("model.safetensors")} == weights
    again = (out / "results.md").read_text()
    assert f"{report.DISCUSSION_START}\n{note}\n{report.DISCUSSION_END}" in again
    assert json.loads((out / "results.json").read_text())["num_reused"] == 6


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
    mnli = report.exit_rules_for(get_task("MNLI"), 6)  # 3 classes: confidence 0.55.. > 1/3, entropy of ln 3
    assert [r.value for r in mnli if r.kind == "patience"] == [1, 2, 3, 4, 5]
    assert [r.value for r in mnli if r.kind == "layer"] == [1, 2, 3, 4, 5]
    assert [r.value for r in mnli if r.kind == "confidence"] == list(report.CONFIDENCES)
    assert max(r.value for r in mnli if r.kind == "entropy") == pytest.approx(0.8 * math.log(3))
    assert {r.kind for r in report.exit_rules_for(get_task("STS-B"), 6)} == {"patience", "layer"}
    assert ExitRule("patience", 0) not in mnli  # full depth is added by the harness


def point(kind, value, metric, speedup):
    return {"rule": kind, "value": value, "label": f"{kind} {value}", "layer_speedup": speedup,
            "metrics": {"acc": {"mean": metric, "std": 0.0, "values": [metric]}}}


def test_picks_and_matching(report):
    patience = [point("patience", 1, 0.70, 2.0), point("patience", 2, 0.74, 1.5), point("patience", 3, 0.74, 1.2)]
    assert report.pick_best(patience, "acc")["value"] == 2  # tie on the metric: the larger speed-up wins
    assert report.pick_fastest_within(patience, "acc", 0.705)["value"] == 1  # 0.5 points below plain is allowed
    assert report.pick_fastest_within(patience, "acc", 0.72)["value"] == 2
    assert report.pick_fastest_within(patience, "acc", 0.80) is None
    others = [point("layer", 3, 0.6, 1.33), point("layer", 4, 0.7, 1.0), point("entropy", 0.1, 0.7, 1.9)]
    matched = report.match_by_speedup(patience, others)
    assert [(m["rule"], m["value"], m["matched_to"]) for m in matched] == [
        ("entropy", 0.1, ["patience 1", "patience 2", "patience 3"]),
        ("layer", 3, ["patience 1", "patience 2", "patience 3"]),
    ]
    verdict = report.verdicts({**patience[0], "wall_to_layer": {"1": 0.96, "32": 0.8}}, "minilm")
    assert verdict["layer_speedup"]["met"] and verdict["wall_to_layer_bs1"]["met"]
    assert not verdict["wall_to_layer_bs32"]["met"]
