"""The evaluation records store: concurrent writers, bad files, interrupts, the final == last checkpoint dedup,
plots from every stored record, and the flags on suspect wall-clock speed-ups."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures import save_tiny_bert, write_glue_task
from test_evaluate_rules import record

import pabee.records
from pabee.cli import main
from pabee.config import weights_digest
from pabee.evaluate import EvalRecord, format_table, save_records
from pabee.records import (
    RecordsFileError,
    RecordStore,
    add_timing_spread,
    plot_points,
    record_from_dict,
    wall_flags,
)
from pabee.runner import RunSettings, _checkpoints_to_evaluate

REPO = Path(__file__).resolve().parents[1]
QUIET = ["--disable_tqdm"]

WRITER = """
import sys, time
from pathlib import Path
from pabee.records import RecordStore
folder, worker, start = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
while not start.exists():
    time.sleep(0.001)
store = RecordStore(folder)
for i in range(25):
    store.append([{"checkpoint": f"w{worker}", "task": "rte", "split": "dev", "exit_rule": "patience",
                   "exit_value": i, "patience": i, "regression_threshold": None, "batch_size": 1,
                   "metrics": {"acc": 0.5}, "num_layers": 4, "avg_exit_layer": 2.0}])
"""


def env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
            "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_four_concurrent_writers_keep_all_100_records(tmp_path):
    start = tmp_path / "start"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(w), str(start)], env=env())
             for w in range(4)]
    time.sleep(0.5)  # every writer is waiting on the start file: their appends overlap
    start.touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    saved = json.loads((tmp_path / "eval_results.json").read_text())
    assert sorted((r["checkpoint"], r["exit_value"]) for r in saved) == sorted(
        (f"w{w}", i) for w in range(4) for i in range(25))
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # the atomic writes left no temporary file


@pytest.mark.parametrize(
    ("content", "expected"),
    [('{"checkpoint": "final"}', "holds a JSON object, not a list"),
     ('"results"', "holds a JSON string"),
     ("[1, 2]", "item 0 is not an evaluation record (a JSON number)"),
     ('[{"checkpoint": "final", "task": "rte"}]', "missing split, metrics")],
)
def test_a_file_that_is_not_a_list_of_records_is_refused(tmp_path, content, expected):
    (tmp_path / "eval_results.json").write_text(content)
    store = RecordStore(tmp_path)
    with pytest.raises(RecordsFileError, match=re.escape(expected)) as err:
        store.validate()
    assert "\n" not in str(err.value)
    with pytest.raises(RecordsFileError):
        save_records([record("patience", 1)], tmp_path)
    assert (tmp_path / "eval_results.json").read_text() == content  # never overwritten


def test_a_file_that_is_not_json_is_moved_aside_with_a_warning(tmp_path, caplog):
    (tmp_path / "eval_results.json").write_text("[{half a fi")
    RecordStore(tmp_path).validate()
    assert not (tmp_path / "eval_results.json").exists()
    assert len(list(tmp_path.glob("eval_results.json.corrupt-*"))) == 1 and "not valid JSON" in caplog.text


def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = save_records([record("patience", 1)], tmp_path)
    before = path.read_text()

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(pabee.records.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_records([record("patience", 2)], tmp_path)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".eval_results.json.lock", "eval_results.json"]


def test_old_records_load_without_the_new_fields():
    old = {k: v for k, v in vars(record("patience", 3)).items()
           if k not in ("exit_rule", "exit_value", "wall_speedup", "extra", "layers_saved")}
    loaded = record_from_dict({**old, "some_future_field": 1})
    assert isinstance(loaded, EvalRecord)
    assert (loaded.exit_rule, loaded.exit_value, loaded.wall_speedup, loaded.extra) == ("patience", 3, None, {})
    assert loaded.layers_saved == pytest.approx(0.5)
    assert record_from_dict({"checkpoint": "final", "task": "rte", "split": "dev", "metrics": {}}) is None


# --- suspect wall-clock speed-ups ---------------------------------------------------------------------------


def timed(kind, value, avg, rounds, full_rounds=(1.0, 1.0, 1.0)):
    """Records of a full-depth baseline and one rule, with hand-made per-round seconds."""
    full = record("patience", 0, avg=4.0, wall=None)
    rule = record(kind, value, avg=avg, wall=None)
    full.extra["eval_seconds_rounds"], rule.extra["eval_seconds_rounds"] = list(full_rounds), list(rounds)
    full.eval_seconds, rule.eval_seconds = sum(full_rounds) / len(full_rounds), sum(rounds) / len(rounds)
    full.wall_speedup, rule.wall_speedup = 1.0, full.eval_seconds / rule.eval_seconds
    add_timing_spread([full, rule])
    return full, rule


def test_rounds_that_disagree_are_flagged():
    full, rule = timed("patience", 2, avg=2.0, rounds=(0.5, 0.8, 0.6))  # per round 2.0, 1.25, 1.67
    assert rule.extra["wall_speedup_rounds"] == [2.0, 1.25, 1.6667]
    assert rule.extra["wall_speedup_spread"] == pytest.approx(0.75 / (4.9167 / 3), abs=1e-3)
    assert wall_flags(rule) == rule.extra["wall_flags"] and "3 timing rounds disagree (1.25-2.00" in wall_flags(rule)[0]
    assert wall_flags(full) == [] and full.extra["wall_speedup_rounds"] == [1.0, 1.0, 1.0]
    _, steady = timed("patience", 2, avg=2.0, rounds=(0.55, 0.6, 0.58))
    assert wall_flags(steady) == [] and steady.extra["wall_flags"] == []


def test_a_wall_speedup_above_what_the_layers_allow_is_flagged():
    _, rule = timed("patience", 2, avg=2.2, rounds=(0.29, 0.29, 0.28))  # 3.5x wall at 1.82x layers
    assert any("more than its layer count allows" in f for f in wall_flags(rule))
    _, fine = timed("patience", 2, avg=2.2, rounds=(0.5, 0.5, 0.5))  # 2.0x at 1.82x: within 15 %
    assert wall_flags(fine) == []
    old = record("patience", 5, avg=4.0, wall=1.5)  # an old record: no rounds, only the layer bound applies
    assert len(wall_flags(old)) == 1 and wall_flags(record("patience", 5, avg=4.0, wall=1.1)) == []
    assert wall_flags(record("layer", 2, avg=2.0, wall=None)) == []


def test_the_table_marks_suspect_figures_and_explains_them():
    full, spread = timed("patience", 1, avg=2.0, rounds=(0.5, 0.8, 0.6))
    _, steady = timed("patience", 3, avg=3.0, rounds=(0.8, 0.8, 0.8))
    lines = format_table([full, spread, steady]).splitlines()
    wall = lines[0].index("wall x")
    assert [line[wall:wall + 6].strip() for line in lines[2:5]] == ["1.00", "1.58!", "1.25"]
    notes = lines[5:]
    assert len(notes) == 2 and notes[0].startswith("! final dev patience 1 bs 8: wall x its 3 timing rounds")
    assert "re-measure" in notes[1] and "--timing_rounds" not in notes[1]  # rounds were measured
    single = record("patience", 5, avg=4.0, wall=1.5)
    single.extra["eval_seconds_rounds"] = [0.6]
    assert "--timing_rounds 3 measures it" in format_table([single]).splitlines()[-1]
    assert "!" not in format_table([full, steady])  # nothing suspect: no mark, no footnote


# --- plots from every stored record ---------------------------------------------------------------------------


def test_plot_points_take_every_stored_run_and_one_batch_size():
    earlier = [record("patience", 0, avg=4), record("patience", 1, acc=0.6), record("patience", 2, acc=0.7),
               record("patience", 1, acc=0.6, batch_size=1), record("patience", 3, batch_size=1)]
    other = [record("patience", 4, checkpoint="final", batch_size=8)]
    other[0].task = "mrpc"
    thresholded = record("patience", 6)
    thresholded.regression_threshold = 0.1
    now = [record("patience", 0, avg=4), record("entropy", 0.3)]
    points = plot_points(earlier + other + [thresholded] + now, "rte", "dev", batch_size=8)
    assert sorted((p.exit_rule, p.exit_value, p.batch_size) for p in points) == [
        ("entropy", 0.3, 8), ("patience", 0, 8), ("patience", 1, 8), ("patience", 2, 8), ("patience", 3, 1)]
    assert next(p for p in points if p.exit_value == 0) is now[0]  # the latest measurement of an experiment
    assert plot_points(earlier, "rte", "dev", 8, metric="f1") == []


def pabee_folder(folder: Path, tiny_bert: Path, seed: int) -> Path:
    """A saved pabee model with random heads (no training) and the tiny tokenizer."""
    import torch

    from pabee.modeling import PabeeForSequenceClassification

    torch.manual_seed(seed)
    model = PabeeForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    for head in model.classifiers:
        torch.nn.init.normal_(head.weight, std=1.0)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_bert / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A model folder with checkpoint-1, checkpoint-2 (other weights) and checkpoint-3 (the final weights)."""
    root = tmp_path_factory.mktemp("swept")
    tiny_bert = save_tiny_bert(root / "tiny-bert")
    out = pabee_folder(root / "model", tiny_bert, seed=0)
    for step, seed in [(1, 1), (2, 2), (3, 0)]:
        pabee_folder(out / f"checkpoint-{step}", tiny_bert, seed)
    write_glue_task(root / "glue", "RTE", n=16)
    return out, root / "glue" / "RTE"


def fresh_copy(swept, tmp_path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(swept[0], out)
    return out


def eval_args(out, data, *extra):
    return ["eval", "--model_name_or_path", str(out), "--task_name", "RTE", "--data_dir", str(data), *QUIET, *extra]


def test_the_last_checkpoint_is_skipped_when_it_is_the_final_model(swept, caplog, tmp_path):
    out, _ = swept
    settings = RunSettings(output_dir=str(out), model_name_or_path=str(out), do_eval=True, eval_all_checkpoints=True)
    with caplog.at_level("INFO", logger="pabee"):
        names = [name for name, _ in _checkpoints_to_evaluate(settings)]
    assert names == ["checkpoint-1", "checkpoint-2", "final"]
    assert "checkpoint-3 holds the same weights as the final model" in caplog.text
    assert weights_digest(out / "checkpoint-2") != weights_digest(out)
    # the same weights saved with the safetensors metadata in another order: still the same model
    copy = fresh_copy(swept, tmp_path)
    raw = (copy / "checkpoint-2" / "model.safetensors").read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    header["__metadata__"] = dict(reversed(list(header["__metadata__"].items())))
    text = json.dumps(header, separators=(",", ":")).encode().ljust(size)
    assert len(text) == size
    shutil.copy(copy / "model.safetensors", copy / "checkpoint-3" / "model.safetensors")
    (copy / "checkpoint-2" / "model.safetensors").write_bytes(raw[:8] + text + raw[8 + size:])
    assert (copy / "checkpoint-2" / "model.safetensors").read_bytes() != raw
    assert weights_digest(copy / "checkpoint-2") == weights_digest(out / "checkpoint-2")
    shutil.rmtree(copy / "checkpoint-3")  # now checkpoint-2 is the last one, and it differs from the final model
    settings.output_dir = settings.model_name_or_path = str(copy)
    assert [name for name, _ in _checkpoints_to_evaluate(settings)] == ["checkpoint-1", "checkpoint-2", "final"]


def test_the_plot_is_redrawn_from_every_stored_record(swept, tmp_path, monkeypatch):
    import pabee.runner

    out, data = fresh_copy(swept, tmp_path), swept[1]
    plotted = []
    real_plot = pabee.runner.plot_tradeoff
    monkeypatch.setattr(pabee.runner, "plot_tradeoff", lambda recs, *a, **k: plotted.append(recs) or real_plot(
        recs, *a, **k))
    assert main(eval_args(out, data, "--patience", "1,2", "--per_device_eval_batch_size", "4")) == 0
    assert main(eval_args(out, data, "--exit_rule", "entropy", "--exit_values", "0.3",
                          "--per_device_eval_batch_size", "2")) == 0
    assert sorted((r.exit_rule, r.exit_value, r.batch_size) for r in plotted[-1]) == [
        ("entropy", 0.3, 2), ("patience", 0, 2), ("patience", 1, 4), ("patience", 2, 4)]
    assert len(json.loads((out / "eval_results.json").read_text())) == 5


def test_an_interrupted_sweep_keeps_what_it_measured(swept, tmp_path, monkeypatch, capsys):
    import pabee.runner

    out, data = fresh_copy(swept, tmp_path), swept[1]
    calls = []
    real = pabee.runner.evaluate_exit_rules

    def interrupt_on_the_third(*args, **kwargs):
        calls.append(args[5])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pabee.runner, "evaluate_exit_rules", interrupt_on_the_third)
    code = main(eval_args(out, data, "--eval_all_checkpoints", "--patience", "1,2",
                          "--per_device_eval_batch_size", "1,4"))
    assert code == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"pabee eval: evaluation interrupted; the 6 records measured before it (2 of 6 checkpoint x split x "
                   f"batch size results) are kept in {out / 'eval_results.json'}")
    saved = json.loads((out / "eval_results.json").read_text())
    assert sorted({(r["checkpoint"], r["batch_size"]) for r in saved}) == [("checkpoint-1", 1), ("checkpoint-1", 4)]
    assert len(saved) == 6 and "resume training" not in err


def test_ctrl_c_right_after_a_result_is_written_counts_it(swept, tmp_path, monkeypatch, capsys):
    """Ctrl-C between writing a result's records and noting them: the message still counts what the file holds."""
    from pabee.records import RecordStore

    out, data = fresh_copy(swept, tmp_path), swept[1]
    real, calls = RecordStore.append, []

    def write_then_interrupt(self, records):
        path = real(self, records)
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the second result is in the file, the sweep has not noted it yet
        return path

    monkeypatch.setattr(RecordStore, "append", write_then_interrupt)
    code = main(eval_args(out, data, "--eval_all_checkpoints", "--patience", "1,2",
                          "--per_device_eval_batch_size", "1,4"))
    assert code == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    saved = json.loads((out / "eval_results.json").read_text())
    assert len(saved) == 6
    assert err == (f"pabee eval: evaluation interrupted; the 6 records measured before it (2 of 6 checkpoint x split x "
                   f"batch size results) are kept in {out / 'eval_results.json'}")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_during_a_real_sweep(swept, tmp_path):
    out, data = fresh_copy(swept, tmp_path), swept[1]
    results = out / "eval_results.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pabee.cli", *eval_args(out, data, "--eval_all_checkpoints", "--patience", "1,2",
                                                        "--per_device_eval_batch_size", "1,2,4",
                                                        "--timing_rounds", "15")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=tmp_path,
        # a test run started in the background inherits SIGINT ignored; the child must see Ctrl-C as a user would
        preexec_fn=_default_sigint)
    deadline = time.monotonic() + 120
    while not results.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    kept = json.loads(results.read_text())
    assert 3 <= len(kept) < 3 * 9 and len(kept) % 3 == 0  # whole results only, and not all 9 of them
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"pabee eval: evaluation interrupted; the {len(kept)} records measured before it")
    assert last.endswith(f"are kept in {results}") and "Traceback" not in stderr
    assert stdout.count("| batch size") == len(kept) // 3


def test_not_a_list_fails_in_one_line_before_the_evaluation(swept, tmp_path, monkeypatch, capsys):
    import pabee.runner

    out, data = fresh_copy(swept, tmp_path), swept[1]
    (out / "eval_results.json").write_text('{"final": []}')
    monkeypatch.setattr(pabee.runner, "load_task_data", lambda settings: pytest.fail("the data was read"))
    assert main(eval_args(out, data, "--patience", "1")) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"pabee eval: error: {out / 'eval_results.json'} holds a JSON object, not a list of evaluation records: move it "
        "away or delete it"]
    assert captured.out == "" and (out / "eval_results.json").read_text() == '{"final": []}'
