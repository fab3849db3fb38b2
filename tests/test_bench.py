"""pabee.bench (timing logic, with a fake clock: no timing assertions) and benchmarks/speed.py end to end."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pabee.bench import (
    TimingResult,
    cpu_caches,
    cpu_model,
    cpu_stall_seconds,
    interleaved_blocks,
    machine_info,
    mean_std,
    paired_ratios,
    pass_over,
    time_batches,
    time_callable,
    time_interleaved,
    time_interleaved_batches,
    wait_for_quiet,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEED = REPO_ROOT / "benchmarks" / "speed.py"


class FakeClock:
    """A timer whose time only moves when a fake workload says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# ------------------------------------------------------------------------------------------ TimingResult


def test_timing_result_from_runs():
    result = TimingResult.from_runs([3.0, 1.0, 2.0])
    assert result.runs == (3.0, 1.0, 2.0)
    assert result.mean_s == pytest.approx(2.0)
    assert result.std_s == pytest.approx(1.0)  # sample standard deviation
    assert result.min_s == 1.0
    assert result.median_s == 2.0
    assert result.rel_std == pytest.approx(0.5)
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert set(as_dict) == {"mean_s", "std_s", "min_s", "runs", "median_s"}
    assert as_dict["runs"] == [3.0, 1.0, 2.0]


def test_timing_result_single_run_and_empty():
    assert TimingResult.from_runs([0.5]).std_s == 0.0
    with pytest.raises(ValueError):
        TimingResult.from_runs([])


# ------------------------------------------------------------------------------------------ time_callable


def test_time_callable_warmup_then_repeats():
    clock = FakeClock()
    durations = iter([10.0, 20.0, 1.0, 2.0, 3.0])  # two warm-up calls, then three timed ones
    calls = []

    def work():
        calls.append(clock.now)
        clock.advance(next(durations))

    result = time_callable(work, warmup=2, repeats=3, timer=clock)
    assert len(calls) == 5
    assert result.runs == (1.0, 2.0, 3.0)  # warm-up calls are not in the result
    assert result.mean_s == pytest.approx(2.0)
    assert result.min_s == 1.0


def test_time_callable_no_warmup():
    count = []
    result = time_callable(lambda: count.append(1), warmup=0, repeats=4)
    assert len(count) == 4
    assert len(result.runs) == 4
    assert all(r >= 0 for r in result.runs)


@pytest.mark.parametrize("warmup, repeats", [(-1, 3), (0, 0), (1, -2), (1.5, 3), (1, True)])
def test_time_callable_rejects_bad_counts(warmup, repeats):
    with pytest.raises(ValueError):
        time_callable(lambda: None, warmup=warmup, repeats=repeats)


# ------------------------------------------------------------------------------------------ batches


def test_time_batches_runs_every_batch_per_pass():
    clock = FakeClock()
    seen = []

    def fn(batch):
        seen.append(batch)
        clock.advance(batch)

    result = time_batches(fn, [1.0, 2.0, 4.0], warmup=1, repeats=2, timer=clock)
    assert seen == [1.0, 2.0, 4.0] * 3  # one warm-up pass + two timed passes, in order
    assert result.runs == (7.0, 7.0)  # one run = one full pass


def test_pass_over_rejects_empty():
    with pytest.raises(ValueError):
        pass_over(lambda b: None, [])


# ------------------------------------------------------------------------------------------ interleaving


def test_time_interleaved_order_and_results():
    clock = FakeClock()
    order = []

    def config(name, seconds):
        def run():
            order.append(name)
            clock.advance(seconds)

        return run

    fns = {"A": config("A", 1.0), "B": config("B", 2.0), "C": config("C", 4.0)}
    results = time_interleaved(fns, warmup=1, repeats=3, timer=clock)
    assert order == ["A", "B", "C"] * 4  # warm-up round, then A B C A B C A B C
    assert list(results) == ["A", "B", "C"]
    assert [r.runs for r in results.values()] == [(1.0,) * 3, (2.0,) * 3, (4.0,) * 3]
    assert paired_ratios(results["C"], results["A"]) == [4.0, 4.0, 4.0]


def test_time_interleaved_rejects_nothing_to_time():
    with pytest.raises(ValueError):
        time_interleaved({}, repeats=2)


def test_time_interleaved_batches_rotates_and_sums_per_pass():
    clock = FakeClock()
    order = []
    cost = {"A": 1.0, "B": 10.0, "C": 100.0}

    def config(name):
        def run(batch):
            order.append((name, batch))
            clock.advance(cost[name] * batch)

        return run

    timed = time_interleaved_batches(
        {name: config(name) for name in cost}, [1, 2], warmup=1, repeats=2, timer=clock
    )
    one_round = [("A", 1), ("B", 1), ("C", 1), ("B", 2), ("C", 2), ("A", 2)]  # order rotates batch by batch
    assert order == one_round * 3  # warm-up round + two timed rounds
    assert [r.runs for r in timed.results.values()] == [(3.0, 3.0), (30.0, 30.0), (300.0, 300.0)]
    assert len(timed.rounds) == 2 and timed.discarded == 0
    assert all(r.kept and r.contention is None for r in timed.rounds)


def test_time_interleaved_batches_runs_blocks_of_consecutive_batches():
    order = []

    def config(name):
        return lambda batch: order.append((name, batch))

    timed = time_interleaved_batches({n: config(n) for n in "AB"}, [0, 1, 2, 3, 4], warmup=0, repeats=1, block=2)
    # blocks [0, 1], [2, 3], [4]: each configuration runs a whole block, the order rotating from block to block
    assert order == [("A", 0), ("A", 1), ("B", 0), ("B", 1), ("B", 2), ("B", 3), ("A", 2), ("A", 3), ("A", 4), ("B", 4)]
    assert list(timed.results) == ["A", "B"]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="block"):
            time_interleaved_batches({"A": config("A")}, [0], repeats=1, block=bad)


def test_interleaved_blocks_without_rotation_keeps_the_order():
    order = [(name, list(group)) for name, group in interleaved_blocks("AB", [0, 1, 2], block=2, rotate=False)]
    assert order == [("A", [0, 1]), ("B", [0, 1]), ("A", [2]), ("B", [2])]


def test_time_interleaved_batches_discards_contended_rounds():
    clock = FakeClock()
    stalls = iter([0.0, 5.0, 5.0, 5.0, 5.0, 5.1, 5.1, 15.1, 15.1, 25.1])  # (start, end) of each round

    def work(batch):
        clock.advance(1.0)

    timed = time_interleaved_batches(
        {"A": work},
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        warmup=0,
        repeats=3,
        timer=clock,
        stall_probe=lambda: next(stalls),
        max_contention=0.05,
        max_retries=2,
    )
    # round 1: 5 s stalled in 10 s -> discarded; round 2: quiet; round 3: 0.1/10 -> kept (1 %);
    # round 4: 10/10 -> discarded (last retry); round 5: disturbed but no retry left -> kept
    assert [r.kept for r in timed.rounds] == [False, True, True, False, True]
    assert [r.contention for r in timed.rounds] == pytest.approx([0.5, 0.0, 0.01, 1.0, 1.0])
    assert timed.discarded == 2
    assert timed.results["A"].runs == (10.0, 10.0, 10.0)
    assert timed.kept_contention() == pytest.approx([0.0, 0.01, 1.0])


def test_time_interleaved_batches_before_round_and_bad_arguments():
    calls = []
    time_interleaved_batches(
        {"A": lambda b: None}, [1], warmup=1, repeats=3, before_round=lambda: calls.append(1)
    )
    assert len(calls) == 3  # before every timed round, not before warm-up
    with pytest.raises(ValueError):
        time_interleaved_batches({"A": lambda b: None}, [], repeats=1)
    with pytest.raises(ValueError):
        time_interleaved_batches({}, [1], repeats=1)
    with pytest.raises(ValueError):
        time_interleaved_batches({"A": lambda b: None}, [1], repeats=1, max_retries=-1)


def test_cpu_stall_seconds_parses_psi(tmp_path):
    psi = tmp_path / "cpu"
    psi.write_text(
        "some avg10=0.00 avg60=1.00 avg300=2.00 total=2500000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        encoding="ascii",
    )
    assert cpu_stall_seconds(str(psi)) == pytest.approx(2.5)
    assert cpu_stall_seconds(str(tmp_path / "missing")) is None


def test_wait_for_quiet_sleeps_until_a_quiet_window():
    stall = iter([0.0, 0.9, 0.9, 1.0, 1.0, 1.01])  # windows: 90 % busy, 10 % busy, 1 % busy
    slept = []
    waited = wait_for_quiet(lambda: next(stall), max_contention=0.05, window_s=1.0, sleep=slept.append)
    assert waited == 3.0 and slept == [1.0, 1.0, 1.0]
    assert wait_for_quiet(lambda: None, max_contention=0.05, sleep=slept.append) == 0.0
    busy = iter(range(0, 100, 1))
    assert (
        wait_for_quiet(lambda: float(next(busy)), 0.05, window_s=1.0, timeout_s=2.0, sleep=lambda s: None)
        == 2.0
    )


def test_paired_ratios_and_mean_std():
    a = TimingResult.from_runs([2.0, 4.0])
    b = TimingResult.from_runs([1.0, 1.0])
    assert paired_ratios(a, b) == [2.0, 4.0]
    assert mean_std([2.0, 4.0]) == (3.0, pytest.approx(math.sqrt(2)))
    assert mean_std([5.0]) == (5.0, 0.0)
    with pytest.raises(ValueError):
        paired_ratios(a, TimingResult.from_runs([1.0]))


# ------------------------------------------------------------------------------------------ machine facts


def test_cpu_model_reads_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Test CPU 9000\n", encoding="utf-8")
    assert cpu_model(str(info)) == "Test CPU 9000"
    assert isinstance(cpu_model(str(tmp_path / "missing")), str)


def test_cpu_caches_reads_sysfs(tmp_path):
    for i, (level, kind, size) in enumerate([(1, "Data", "32K"), (2, "Unified", "1024K"), (3, "Unified", "32M")]):
        folder = tmp_path / f"index{i}"
        folder.mkdir()
        (folder / "level").write_text(f"{level}\n")
        (folder / "type").write_text(f"{kind}\n")
        (folder / "size").write_text(f"{size}\n")
    (tmp_path / "index3").mkdir()  # unreadable entries are skipped
    assert cpu_caches(str(tmp_path)) == [
        {"level": 1, "type": "Data", "size_kib": 32},
        {"level": 2, "type": "Unified", "size_kib": 1024},
        {"level": 3, "type": "Unified", "size_kib": 32768},
    ]
    assert cpu_caches(str(tmp_path / "missing")) == []


def test_machine_info_fields():
    import torch

    info = machine_info()
    for key in ("cpu_model", "logical_cores", "usable_cores", "torch_version", "transformers_version"):
        assert info[key]
    assert info["torch_num_threads"] == torch.get_num_threads()
    json.dumps(info)


# ------------------------------------------------------------------------------------------ benchmarks/speed.py

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
    spec = importlib.util.spec_from_file_location("pabee_speed_benchmark", SPEED)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    assert "fine-tuned pabee folder" in (tmp_path / "s.md").read_text(encoding="utf-8")


def test_read_texts_pairs_single_and_bom(tmp_path):
    speed = _load_speed_module()
    pair = tmp_path / "pair.tsv"
    pair.write_text(
        '\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA "quoted\t B\n', encoding="utf-8"
    )
    texts, columns = speed.read_texts(pair)
    assert texts == [('A "quoted', " B")] and columns == ["#1 String", "#2 String"]
    single = tmp_path / "sst.tsv"
    single.write_text("sentence\tlabel\nit 's good\t1\nbad\t0\nworse\t0\n", encoding="utf-8")
    assert speed.read_texts(single, limit=2) == ([("it 's good", None), ("bad", None)], ["sentence"])
    unknown = tmp_path / "x.tsv"
    unknown.write_text("a\tb\n1\t2\n", encoding="utf-8")
    with pytest.raises(ValueError):
        speed.read_texts(unknown)


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
    ],
)
def test_speed_script_refuses_bad_settings_before_loading_anything(argv, message):
    speed = _load_speed_module()
    with pytest.raises(SystemExit, match=message):
        speed.main(argv)
