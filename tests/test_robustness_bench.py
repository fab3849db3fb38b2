"""benchmarks/robustness.py on a tiny random model: a --quick run end to end (report, page, replay files), the
page from the JSON alone, bad arguments, and the threshold matching."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures import write_glue_task
from run_fixtures import save_tiny_run

from benchmarks import robustness as bench
from benchmarks.robustness_measure import match_threshold
from pabee.exit_rules import ExitRule, rule_exit_layers


def test_quick_run_then_render_only(tmp_path):
    run = save_tiny_run(tmp_path / "run", labels=("entailment", "not_entailment"), patience=2, layers=4)
    write_glue_task(tmp_path / "glue", "RTE", n=12)
    out_json, out_md, replay = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "replay" / "slow.jsonl"
    args = ["--model", f"RTE={run}", "--task-dir", str(tmp_path / "glue"), "--quick", "--max-examples", "5",
            "--output", str(out_json), "--markdown", str(out_md), "--write-attacked", str(replay)]
    assert bench.main(args) == 0
    (report,) = json.loads(out_json.read_text())["runs"]
    labels = [s["label"] for s in report["results"]]
    assert labels[:3] == ["patience 0", "patience 1", "patience 2"] and len(labels) >= 4
    assert all(s["kind"] == "entropy" and "matched_to" in s for s in report["results"][3:])
    for s in report["results"]:
        m = s["misclassification"]
        assert m["num_examples"] == 5 == len(m["examples"]) and m["attacked"] + m["skipped"] == 5
        assert m["accuracy_under_attack"] == (m["attacked"] - m["succeeded"]) / 5
        for r in m["examples"]:
            assert r["edit_distance"] <= 30 and r["queries"] <= 1000
            assert (r["final_label"] != r["gold"]) == (r["status"] == "succeeded") or r["status"] == "skipped"
        if s["label"] == "patience 0":
            assert "slowdown" not in s
        else:
            d = s["slowdown"]
            assert d["mean_exit_layer_attacked"] >= d["mean_exit_layer_clean"]
            assert d["timing"]["confirmed"] == 5 and d["timing"]["ms_per_example_attacked"] > 0
    assert report["replay"]["rule"] == "patience:2" and report["replay"]["attacked_file"] == str(replay)
    attacked = [json.loads(line) for line in replay.read_text().splitlines()]
    clean = [json.loads(line) for line in (tmp_path / "replay" / "slow.clean.jsonl").read_text().splitlines()]
    assert len(attacked) == len(clean) == 5
    for x in attacked + clean:
        assert isinstance(x, list) and len(x) == 2 and all(isinstance(t, str) for t in x)
    assert [a[0] for a in attacked] == [c[0] for c in clean]  # the premise is never perturbed
    page = out_md.read_text()
    assert "python benchmarks/robustness.py --model RTE=" in page and "### Slowdown" in page
    assert "Against the paper" in page and "--quick smoke run" in page

    out_md.unlink()
    assert bench.main(["--render-only", "--output", str(out_json), "--markdown", str(out_md)]) == 0
    assert out_md.read_text() == page


@pytest.mark.parametrize("argv, message", [
    (["--model", "RTE"], "expected TASK=RUN_DIR"),
    (["--model", "STS-B=x"], "regression task"),
    (["--model", "RTE=/nonexistent"], "not a trained pabee run folder"),
    ([], "give --model"),
])
def test_bad_arguments_give_one_line_and_exit_code_2(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        bench.main([*argv, "--quick", "--output", str(tmp_path / "r.json"),
                    "--markdown", str(tmp_path / "r.md")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]


@pytest.mark.parametrize("kind", ["entropy", "confidence"])
def test_matched_threshold_is_the_closest(kind):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 50, 3)).astype(np.float32) * 2
    for target in [1.5, 3.0, 4.2]:
        value, mean = match_threshold(logits, kind, target)
        assert mean == pytest.approx(rule_exit_layers(logits, ExitRule(kind, value)).mean())
        grid = np.linspace(0.0, 1.2, 400) if kind == "entropy" else np.linspace(0.34, 1.0, 400)
        best_on_grid = min(abs(rule_exit_layers(logits, ExitRule(kind, float(t))).mean() - target)
                           for t in grid)
        assert abs(mean - target) <= best_on_grid + 1e-9  # no threshold on the grid does better
        assert len(repr(value)) <= 12  # a short decimal
        exits = rule_exit_layers(logits, ExitRule(kind, value))
        for nudge in (-1e-6, 1e-6):  # not on a tested value: float noise of another batch size changes nothing
            nudged = min(value + nudge, 1.0) if kind == "confidence" else value + nudge
            assert np.array_equal(rule_exit_layers(logits, ExitRule(kind, nudged)), exits)


def test_single_sentence_task_writes_text_inputs(tmp_path):
    run = save_tiny_run(tmp_path / "run", labels=("0", "1"), patience=1, layers=3)
    write_glue_task(tmp_path / "glue", "SST-2", n=8)
    out = tmp_path / "out"
    args = ["--model", f"SST-2={run}", "--task-dir", str(tmp_path / "glue"), "--quick", "--max-examples", "3",
            "--output", str(out / "r.json"), "--markdown", str(out / "r.md")]
    assert bench.main(args) == 0
    (report,) = json.loads((out / "r.json").read_text())["runs"]
    assert report["data"]["perturbed_text"] == "sentence" and report["replay"]["rule"] == "patience:1"
    written = out / "robustness" / "attacked-sst-2-bert3.jsonl"  # named after the task and the model (bert, 3 layers)
    assert report["replay"]["attacked_file"] == str(written)
    lines = written.read_text().splitlines()
    assert len(lines) == 3 and all(isinstance(json.loads(line), str) for line in lines)


def _synthetic_run(task: str, full_survives: int, patience_survives: int, lost: float) -> dict:
    """A report with 20 attacked examples: how many survive at full depth and at patience 1 and 2."""
    def setting(kind, value, survive, saving_lost=None):
        examples = [{"status": "failed" if i < survive else "succeeded"} for i in range(20)]
        s = {"kind": kind, "value": value, "label": f"{kind} {value}",
             "misclassification": {"examples": examples, "num_examples": 20, "accuracy_under_attack": survive / 20}}
        if saving_lost is not None:
            s["slowdown"] = {"saving_lost": saving_lost}
        return s
    return {"data": {"task": task}, "model": {"model_type": "bert", "num_layers": 6},
            "results": [setting("patience", 0, full_survives), setting("patience", 1, patience_survives, lost),
                        setting("patience", 2, patience_survives, lost)]}


def test_summary_states_the_verdict_on_the_paper_per_task_and_overall():
    from benchmarks.robustness_render import summary_reading

    lines = summary_reading({"runs": [_synthetic_run("RTE", 2, 15, 0.5), _synthetic_run("MRPC", 5, 5, 0.0)]})
    assert "RTE" in lines[0] and "2 of 2 patience settings measurably more robust" in lines[0]
    assert "agree with the paper's claim" in lines[0] and "patience 50-50 %" in lines[0]
    assert "0 of 2" in lines[1] and "neither confirm nor refute" in lines[1]
    assert lines[-1].startswith("Overall: the paper's robustness claim is supported on 1 of 2 attacked model(s) "
                                "(RTE (bert, 6 layers)); not on MRPC (bert, 6 layers)")
    assert "in 2 of 4 early-exit settings" in lines[-1]
