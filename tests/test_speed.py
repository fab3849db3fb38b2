"""benchmarks/speed.py (timing with speed_measure, page from speed_render) and benchmarks/padding.py end to end on
tiny random models: shapes and invariants of the reports, no timing assertions."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import load_script, write_glue_task

from pabee.data import DataError, read_glue_split
from pabee.tasks import get_task

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEED = REPO_ROOT / "benchmarks" / "speed.py"

WORDS = "the a cat dog sat on mat is not big small red blue runs ran and".split()


def _tiny_model_folder(folder: Path, layers: int = 4, pabee: bool = False, num_labels: int = 3) -> Path:
    """A random 4-layer BERT (hidden 32) + a word-level BERT tokenizer over WORDS, saved to ``folder``."""
    import torch
    from transformers import AutoModel, BertConfig, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n", encoding="utf-8"
    )
    tokenizer = BertTokenizerFast(vocab_file=str(vocab))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=37,
    )
    if pabee:
        from pabee.modeling import PabeeForSequenceClassification

        config.num_labels = num_labels
        PabeeForSequenceClassification(AutoModel.from_config(config)).save_pretrained(folder)
    else:
        AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _tiny_rte(folder: Path, rows: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["index\tsentence1\tsentence2\tlabel"]
    for i in range(rows):
        first = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(3 + i % 7))
        second = " ".join(WORDS[(2 * i + j) % len(WORDS)] for j in range(2 + i % 3))
        lines.append(f"{i}\t{first}\t{second}\t{'entailment' if i % 2 else 'not_entailment'}")
    (folder / "dev.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _check_report(report: dict, layers: int, batch_sizes: list[int], patiences: list[int], num_examples: int):
    for key in ("command", "machine", "model", "data", "settings", "targets", "overhead", "results"):
        assert key in report
    assert report["model"]["num_layers"] == layers
    assert report["data"]["num_examples"] == num_examples
    assert [o["batch_size"] for o in report["overhead"]] == batch_sizes
    for o in report["overhead"]:
        assert o["backbone"]["mean_s"] > 0 and o["wrapper_p0"]["mean_s"] > 0
        assert math.isfinite(o["overhead_pct"])
        assert o["max_abs_logit_diff_vs_backbone"] < 1e-4  # wrapper at patience 0 == backbone + last head
        assert isinstance(o["met"], bool)
    assert {(r["batch_size"], r["patience"]) for r in report["results"]} == {
        (b, p) for b in batch_sizes for p in [0, *patiences]
    }
    for r in report["results"]:
        assert 1 <= r["mean_exit_layer"] <= layers
        assert sum(r["exit_layer_histogram"]) == num_examples
        assert len(r["exit_layer_histogram"]) == layers
        assert r["layer_speedup"] > 0 and r["wallclock_speedup"] > 0 and r["ratio_wall_to_layer"] > 0
        assert r["time"]["mean_s"] > 0 and len(r["time"]["runs"]) == report["settings"]["repeats"]
        if r["patience"] == 0:
            assert r["mean_exit_layer"] == layers and r["wallclock_speedup"] == 1.0
        else:
            assert r["mean_exit_layer"] >= min(r["patience"] + 1, layers)  # p agreements need p + 1 layers
            assert isinstance(r["met"], bool)
        # batch size 1 also times the truncation at PABEE's own exit layers (the ceiling of any exit rule)
        has_truncation = r["batch_size"] == 1 and r["patience"] > 0
        assert ("truncation_wallclock_speedup" in r) == has_truncation
        if has_truncation:
            assert len(r["truncation_time"]["runs"]) == report["settings"]["repeats"]
            assert r["truncation_ratio_wall_to_layer"] == pytest.approx(
                r["truncation_wallclock_speedup"] / r["layer_speedup"])
            assert r["exit_decision_cost_pct"] == pytest.approx(
                100 * (r["time"]["mean_s"] / r["truncation_time"]["mean_s"] - 1))


def test_speed_script_quick_end_to_end(tmp_path):
    model = _tiny_model_folder(tmp_path / "tiny-bert")
    task = _tiny_rte(tmp_path / "RTE", rows=12)
    out_json, out_md = tmp_path / "speed.json", tmp_path / "speed.md"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [
        sys.executable, str(SPEED), "--quick", "--model", str(model), "--task-dir", str(task),
        "--batch-sizes", "1,4", "--patience", "1,2", "--output", str(out_json), "--markdown", str(out_md),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out_json.read_text(encoding="utf-8"))
    _check_report(report, layers=4, batch_sizes=[1, 4], patiences=[1, 2], num_examples=12)
    assert report["settings"]["quick"] is True and report["settings"]["repeats"] == 2
    assert report["model"]["fine_tuned"] is False
    markdown = out_md.read_text(encoding="utf-8")
    for text in (
        "## Machine",
        "## Command",
        "--quick",
        "freshly initialised",
        "| batch size |",
        "ceiling of any early exit",
        "## Batch size 1: interleaving check",
        "## Reading",
    ):
        assert text in markdown
    # blocks of 16 examples: 16 batches at batch size 1, 4 at batch size 4; the check re-times batch size 1 one by one
    assert "16 at batch size 1, 4 at batch size 4" in markdown
    check = report["interleaving_check"]
    assert check["block"] == 1 and [r["patience"] for r in check["results"]] == [1, 2]
    for r in check["results"]:
        assert len(r["ratio_wall_to_layer_per_round"]) == 2 and r["ratio_wall_to_layer"] > 0
    assert report["model"]["layer_weights_mib"] > 0 and isinstance(report["machine"]["cpu_caches"], list)


def _load_speed_module():
    return load_script(SPEED, "pabee_speed_benchmark")


def test_speed_script_on_a_saved_pabee_folder_in_process(tmp_path):
    speed = _load_speed_module()
    model = _tiny_model_folder(tmp_path / "pabee-folder", layers=3, pabee=True)
    task = _tiny_rte(tmp_path / "RTE", rows=5)
    out_json = tmp_path / "s.json"
    argv = ["--model", str(model), "--task-dir", str(task), "--num-examples", "5", "--repeats", "1", "--warmup", "0",
            "--batch-sizes", "2", "--patience", "1", "--output", str(out_json), "--markdown", str(tmp_path / "s.md")]  # fmt: skip
    assert speed.main(argv) == 0
    report = json.loads(out_json.read_text(encoding="utf-8"))
    _check_report(report, layers=3, batch_sizes=[2], patiences=[1], num_examples=5)
    assert report["model"]["fine_tuned"] is True and report["model"]["num_labels"] == 3
    markdown = (tmp_path / "s.md").read_text(encoding="utf-8")
    assert "fine-tuned pabee folder" in markdown and "examples of `" in markdown and "(RTE dev split)" in markdown
    # the page is a function of the JSON: --render-only gives it again
    again = tmp_path / "again.md"
    assert speed.main(["--render-only", "--output", str(out_json), "--markdown", str(again)]) == 0
    assert again.read_text(encoding="utf-8") == markdown


def test_speed_reads_its_texts_with_the_library_reader(tmp_path):
    speed = _load_speed_module()
    glue = tmp_path / "glue"
    write_glue_task(glue, "MRPC", n=5)  # with a byte-order mark
    write_glue_task(glue, "SST-2", n=5)
    texts, tsv = speed.load_texts(get_task("MRPC"), str(glue), limit=3)  # the GLUE root: its MRPC folder
    assert tsv == glue / "MRPC" / "dev.tsv"
    assert texts == [(e.text_a, e.text_b) for e in read_glue_split("MRPC", glue / "MRPC", "dev")[:3]]
    assert all(second is not None for _, second in texts)
    single, _ = speed.load_texts(get_task("SST-2"), str(glue / "SST-2"), limit=2)  # the task folder itself
    assert len(single) == 2 and all(second is None for _, second in single)
    with pytest.raises(DataError, match="GLUE file not found"):
        speed.load_texts(get_task("RTE"), str(glue), limit=2)


def test_padding_benchmark_compares_three_pipelines_on_the_same_examples(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("pabee_padding_benchmark", REPO_ROOT / "benchmarks" / "padding.py")
    padding = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(padding)
    model = _tiny_model_folder(tmp_path / "pabee-folder", layers=3, pabee=True, num_labels=2)
    task = _tiny_rte(tmp_path / "RTE", rows=6)
    out = tmp_path / "padding.json"
    argv = ["--model", str(model), "--task", "RTE", "--data-dir", str(task), "--patience", "1", "--num-examples", "6",
            "--max-seq-length", "16", "--repeats", "2", "--output", str(out)]  # fmt: skip
    assert padding.main(argv) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["num_examples"] == 6 and result["repeats"] == 2
    names = [r["pipeline"] for r in result["rows"]]
    assert names == ["padded to max_seq_length, full depth", "pabee, no padding, full depth",
                     "pabee, no padding, patience 1"]
    base = result["rows"][0]["seconds_mean"]
    for row in result["rows"]:
        assert len(row["seconds_all"]) == 2 and all(t > 0 for t in row["seconds_all"])
        assert row["speedup_vs_padded"] == pytest.approx(base / row["seconds_mean"])
    assert "ex/s" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--block-examples", "0"], "--block-examples must be >= 1"),
        (["--batch-sizes", "0"], "--batch-sizes must be >= 1"),
        (["--patience", "0"], "--patience values must be >= 1"),
        (["--task-dir", "/nonexistent/glue"], "data folder not found: /nonexistent/glue"),
        (["--render-only", "--output", "/nonexistent/speed.json"], "cannot read /nonexistent/speed.json"),
    ],
)
def test_speed_script_refuses_bad_settings_before_loading_anything(argv, message):
    speed = _load_speed_module()
    with pytest.raises(SystemExit, match=message):
        speed.main(argv)
