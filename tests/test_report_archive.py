"""Runs kept from the report's previous results.json once their folders are gone (benchmarks/report_archive.py):
reused as they were, never trained again, and only when they were made with the same settings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fixtures import load_script, write_glue_task

REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "report.py"


@pytest.fixture(scope="module")
def report():
    return load_script(REPORT, "pabee_report_script_archive")


@pytest.fixture(scope="module")
def finished(report, tiny_bert, tmp_path_factory):
    """A quick report on RTE (plain and PABEE, seed 42), trained and evaluated once for the module."""
    root = tmp_path_factory.mktemp("archive")
    write_glue_task(root / "glue", "RTE", n=16)
    assert report.main(argv_for(tiny_bert, root)) == 0
    return root


def argv_for(tiny, root: Path, *extra: str) -> list[str]:
    return ["--quick", "--model-path", f"minilm={tiny}", "--glue-dir", str(root / "glue"), "--tasks", "RTE",
            "--max-train-samples", "12", "--max-eval-samples", "12", "--timing-examples", "8",
            "--work-dir", str(root / "work"), "--out-dir", str(root / "out"), *extra]


def copy_of(finished: Path, tmp_path: Path) -> Path:
    """A copy of the finished report (work dir and out dir) this test may change."""
    shutil.copytree(finished, tmp_path / "r")
    return tmp_path / "r"


def results_of(root: Path) -> dict:
    return json.loads((root / "out" / "results.json").read_text())


def pabee_entry(results: dict) -> dict:
    return next(r for r in results["runs"] if r["method"] == "pabee")


def test_a_run_whose_folder_is_gone_is_reused_from_results_json(report, tiny_bert, finished, tmp_path, capsys):
    root = copy_of(finished, tmp_path)
    before = results_of(root)
    entry = pabee_entry(before)
    assert entry["archived"] is False and entry["timed_on"] and entry["settings"]["method"] == "pabee"
    shutil.rmtree(root / "work" / "minilm" / "rte" / "pabee-seed42")
    capsys.readouterr()
    assert report.main([*argv_for(tiny_bert, root), "--train-only"]) == 0
    printed = capsys.readouterr().out
    assert "in results.json (archived)" in printed and "start" not in printed  # nothing trained again
    assert not (root / "work" / "minilm" / "rte" / "pabee-seed42").exists()
    assert report.main([*argv_for(tiny_bert, root), "--evaluate-only"]) == 0
    printed = capsys.readouterr().out
    assert "reused minilm RTE seed 42 pabee from results.json" in printed
    after = results_of(root)
    kept = pabee_entry(after)
    assert kept["archived"] is True and after["num_archived"] == 1 and after["missing_runs"] == []
    for key in ("records", "tuning", "timing", "timed_settings", "train_s", "settings", "evaluation_key"):
        assert kept[key] == entry[key], key
    def tables(results: dict) -> list[dict]:
        return [{k: v for k, v in s.items() if k != "command"} for s in results["summaries"]]  # paths differ

    assert tables(after) == tables(before)  # the same means, picks and verdicts
    page = (root / "out" / "results.md").read_text()
    assert "1 of them are kept from an earlier `results.json`" in page
    # rendered again from that file, it is still there, and a third invocation keeps it too
    assert report.main([*argv_for(tiny_bert, root), "--evaluate-only"]) == 0
    assert pabee_entry(results_of(root))["records"] == entry["records"]


def test_an_archived_run_made_with_other_settings_is_missing_not_reused(report, tiny_bert, finished, tmp_path,
                                                                          capsys):
    root = copy_of(finished, tmp_path)
    shutil.rmtree(root / "work")  # both runs' folders are gone
    # another tuning budget changes the evaluation key; another learning rate the training key
    for extra in (["--max-drop", "1.5"], ["--learning-rate", "1e-3"]):
        shutil.copy(finished / "out" / "results.json", root / "out" / "results.json")
        assert report.main([*argv_for(tiny_bert, root, *extra), "--evaluate-only"]) == 0
        results = results_of(root)
        assert [(m["method"], m["seed"]) for m in results["missing_runs"]] == [("plain", 42), ("pabee", 42)], extra
        assert results["num_archived"] == 0
    capsys.readouterr()


def test_entries_written_before_runs_carried_settings_match_by_the_files_settings(report, tiny_bert, finished,
                                                                                    tmp_path):
    root = copy_of(finished, tmp_path)
    shutil.rmtree(root / "work" / "minilm" / "rte" / "pabee-seed42")
    path = root / "out" / "results.json"
    legacy = results_of(root)
    for run in legacy["runs"]:
        for key in ("settings", "evaluation_key", "archived", "timed_on"):
            run.pop(key)
    path.write_text(json.dumps(legacy))
    assert report.main([*argv_for(tiny_bert, root), "--evaluate-only"]) == 0
    kept = pabee_entry(results_of(root))
    assert kept["archived"] is True and kept["timed_on"] == legacy["machine"]["cpu_model"]
    assert kept["records"] == pabee_entry(legacy)["records"]
    # the same old file, but its hyper-parameters differ from this invocation's: not archived
    legacy["hyper_parameters"]["minilm"]["learning_rate"] *= 2
    path.write_text(json.dumps(legacy))
    assert report.main([*argv_for(tiny_bert, root), "--evaluate-only"]) == 0
    assert results_of(root)["num_archived"] == 0


def test_training_time_ratio_pairs_seeds_trained_on_the_same_cpu():
    from benchmarks.report_runs import training_ratio

    def run(seed, method, seconds, cpu):
        return {"seed": seed, "method": method, "train_s_per_epoch": seconds, "train_threads": 1,
                "train_shard": "1/2", "timed_on": cpu}

    # seed 42 on a slow CPU, seed 43 on a fast one: PABEE costs 10 % more on both
    runs = [run(42, "plain", 100.0, "slow"), run(42, "pabee", 110.0, "slow"),
            run(43, "plain", 20.0, "fast"), run(43, "pabee", 22.0, "fast")]
    out = training_ratio(runs)
    assert out["mixed_conditions"] and out["ratio"] == pytest.approx(1.1)
    # the plain run of 43 moved to the slow CPU: only seed 42 pairs
    runs[2] = run(43, "plain", 100.0, "slow")
    assert training_ratio(runs)["ratio"] == pytest.approx(1.1)
    same = training_ratio([run(42, "plain", 100.0, "x"), run(42, "pabee", 120.0, "x")])
    assert not same["mixed_conditions"] and same["ratio"] == pytest.approx(1.2)


def test_keep_from_reads_another_reports_results(report, tiny_bert, finished, tmp_path, capsys):
    root = copy_of(finished, tmp_path)
    shutil.rmtree(root / "work")
    other = tmp_path / "other-results.json"
    shutil.move(root / "out" / "results.json", other)  # this out dir has none: only --keep-from has the runs
    assert report.main([*argv_for(tiny_bert, root, "--keep-from", str(other)), "--evaluate-only"]) == 0
    results = results_of(root)
    assert results["num_archived"] == 2 and results["missing_runs"] == []
    assert f"--keep-from {other}" in results["summaries"][0]["command"]  # the table's own command keeps them too
    for bad, message in ((tmp_path / "nope.json", "no such file"), (root / "glue" / "RTE" / "dev.tsv", "not a")):
        capsys.readouterr()
        assert report.main([*argv_for(tiny_bert, root, "--keep-from", str(bad)), "--evaluate-only"]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert "--keep-from" in line and message in line


def test_the_page_keeps_each_runs_logits_and_replaying_them_gives_its_records(finished):
    import numpy as np

    from benchmarks.report_plan import exit_rules_for
    from benchmarks.report_replay import replay_candidates, replay_records
    from pabee.tasks import get_task

    results = results_of(finished)
    assert results["logits_kept"] == 2
    assert "**Logits kept**: 2 of the 2 runs" in (finished / "out" / "results.md").read_text()
    task = get_task("RTE")
    for entry in results["runs"]:
        path = finished / "out" / "results" / "logits" / f"minilm-rte-{entry['method']}-seed42.npz"
        with np.load(path, allow_pickle=False) as kept:
            logits, labels = kept["logits"], kept["labels"]
        assert logits.shape == (4, 12, 2) and logits.dtype == np.float32 and labels.shape == (12,)
        rules = exit_rules_for(task, 4) if entry["method"] == "pabee" else []  # plain: full depth only
        replayed = replay_records(logits, labels, task, replay_candidates(rules, 2), "dev")
        assert json.loads(json.dumps(replayed)) == entry["records"]
