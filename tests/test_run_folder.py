"""--overwrite_output_dir moves the previous run aside; resuming refuses a checkpoint of another run."""

import json

import pytest
from fixtures import save_tiny_bert, write_glue_task

from pabee.cli import main
from pabee.run_folder import check_same_run, move_previous_run
from pabee.train import AtomicCheckpoints, PabeeTrainer, check_output_dir, rotate_checkpoints

QUIET = ["--disable_tqdm"]


@pytest.fixture(scope="module")
def glue_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue")
    for task in ("RTE", "SST-2"):
        write_glue_task(root, task)
    return root


def train_args(tiny_bert, glue_root, out, task, *extra):
    return ["train", "--model_name_or_path", str(tiny_bert), "--task_name", task, "--data_dir", str(glue_root),
            "--output_dir", str(out), "--per_device_train_batch_size", "4", "--save_steps", "2", "--no_eval",
            *QUIET, *extra]


def steps(out):
    return sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))


def test_overwrite_then_interrupt_then_resume_continues_the_new_run(tiny_bert, glue_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert main(train_args(tiny_bert, glue_root, out, "RTE", "--max_steps", "6")) == 0
    assert steps(out) == [2, 4, 6]

    original = AtomicCheckpoints.on_save

    def save_then_interrupt(self, *args, **kwargs):  # Ctrl-C right after the new run's first checkpoint
        original(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(AtomicCheckpoints, "on_save", save_then_interrupt)
    assert main(train_args(tiny_bert, glue_root, out, "SST-2", "--max_steps", "4", "--overwrite_output_dir")) == 130
    monkeypatch.undo()

    previous = list(out.glob("previous-run-*"))
    assert len(previous) == 1 and steps(previous[0]) == [2, 4, 6]  # the old run, kept whole, out of the way
    assert json.loads((previous[0] / "pabee_run.json").read_text())["task"] == "rte"
    assert steps(out) == [2] and not (out / "pabee_config.json").exists()

    assert main(train_args(tiny_bert, glue_root, out, "SST-2", "--max_steps", "4", "--resume_from_checkpoint")) == 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert [e["step"] for e in state["log_history"] if "train_runtime" in e] == [4]
    assert steps(out) == [2, 4]
    assert json.loads((out / "pabee_run.json").read_text())["task"] == "sst-2"

    # --eval_all_checkpoints sees this run's checkpoints only
    assert main(["eval", "--model_name_or_path", str(out), "--task_name", "SST-2", "--data_dir", str(glue_root),
                 "--eval_all_checkpoints", *QUIET]) == 0
    records = json.loads((out / "eval_results.json").read_text())
    # checkpoint-4 holds the final weights: evaluated once, as "final"
    assert sorted({r["checkpoint"] for r in records}) == ["checkpoint-2", "final"]

    # a second overwrite moves this run aside too, beside (not into) the first
    assert main(train_args(tiny_bert, glue_root, out, "SST-2", "--max_steps", "1", "--overwrite_output_dir")) == 0
    assert len(list(out.glob("previous-run-*"))) == 2 and steps(out) == [1]  # the Trainer saves the last step


@pytest.mark.parametrize("what", ["task", "model"])
def test_resuming_a_checkpoint_of_another_run_gives_one_line_error(what, tiny_bert, glue_root, tmp_path, capsys):
    old = tmp_path / "old"
    assert main(train_args(tiny_bert, glue_root, old, "RTE", "--max_steps", "2")) == 0
    capsys.readouterr()
    if what == "task":
        args = train_args(tiny_bert, glue_root, tmp_path / "new", "SST-2", "--max_steps", "4")
        expected = ["task rte there, sst-2 here", "labels entailment,not_entailment there, 0,1 here"]
    else:
        other = save_tiny_bert(tmp_path / "other-bert", seed=1)
        args = train_args(other, glue_root, tmp_path / "new", "RTE", "--max_steps", "4")
        expected = [f"model {tiny_bert.resolve()} there, {other.resolve()} here"]
    assert main([*args, "--resume_from_checkpoint", str(old / "checkpoint-2")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("pabee")]
    assert len(err) == 1 and "cannot resume from" in err[0], err
    for text in expected:
        assert text in err[0], err[0]


def test_checkpoints_saved_without_a_run_record_are_checked_by_their_labels(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "bert", "id2label": {"0": "entailment", "1": "not_entailment"}}))
    same = {"task": "rte", "labels": ["entailment", "not_entailment"], "num_labels": 2, "model_type": "bert",
            "base_model": "/m"}
    check_same_run(tmp_path, same)  # nothing that differs: accepted
    with pytest.raises(ValueError, match="labels entailment,not_entailment there, 0,1 here"):
        check_same_run(tmp_path, {**same, "task": "sst-2", "labels": ["0", "1"]})
    with pytest.raises(ValueError, match="labels entailment,not_entailment there, regression here"):
        check_same_run(tmp_path, {**same, "task": "sts-b", "labels": None, "num_labels": 1})


def test_overwrite_and_resume_from_the_same_folder_contradict(tmp_path):
    (tmp_path / "checkpoint-2").mkdir(parents=True)
    for resume in ("last", True, str(tmp_path / "checkpoint-2")):
        with pytest.raises(ValueError, match="cannot be combined with --resume_from_checkpoint"):
            check_output_dir(tmp_path, overwrite=True, resume=resume)
    elsewhere = tmp_path.parent / "elsewhere-checkpoint"
    check_output_dir(tmp_path, overwrite=True, resume=str(elsewhere))  # a checkpoint of another folder is fine


def test_move_previous_run_keeps_earlier_moves_apart_and_says_where(tmp_path, caplog):
    (tmp_path / "checkpoint-3").mkdir()
    (tmp_path / "eval_results.json").write_text("[]")
    (tmp_path / "tradeoff_rte_dev.png").write_bytes(b"")
    (tmp_path / "previous-run-20000101-000000").mkdir()
    (tmp_path / "notes.txt").write_text("not written by a run")
    with caplog.at_level("WARNING", logger="pabee"):
        target = move_previous_run(tmp_path)
    assert target is not None and target.parent == tmp_path and target.name.startswith("previous-run-")
    assert sorted(p.name for p in target.iterdir()) == ["checkpoint-3", "eval_results.json", "tradeoff_rte_dev.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["notes.txt", "previous-run-20000101-000000",
                                                                  target.name])
    assert str(target) in caplog.text
    assert move_previous_run(tmp_path) is None  # nothing left to move
    assert move_previous_run(tmp_path / "missing") is None


def test_an_interrupted_checkpoint_save_leaves_no_torn_checkpoint(tiny_bert, glue_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    original = PabeeTrainer.save_model

    def save_half_then_interrupt(self, output_dir=None, _internal_call=False):  # Ctrl-C in checkpoint-4's save
        original(self, output_dir, _internal_call)
        if output_dir is not None and output_dir.endswith("checkpoint-4"):
            raise KeyboardInterrupt

    monkeypatch.setattr(PabeeTrainer, "save_model", save_half_then_interrupt)
    assert main(train_args(tiny_bert, glue_root, out, "RTE", "--max_steps", "6")) == 130
    monkeypatch.undo()
    assert steps(out) == [2]  # checkpoint-4 stayed in the staging folder, never in the run folder
    assert (out / ".staging" / "checkpoint-4").is_dir()
    assert main(train_args(tiny_bert, glue_root, out, "RTE", "--max_steps", "6", "--resume_from_checkpoint")) == 0
    assert steps(out) == [2, 4, 6] and not (out / ".staging").exists()


def test_rotate_checkpoints_keeps_the_newest_by_step(tmp_path):
    for step in (2, 10, 4, 30):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-best").mkdir()  # not a step: never touched
    deleted = rotate_checkpoints(tmp_path, 2)
    assert sorted(p.name for p in deleted) == ["checkpoint-2", "checkpoint-4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-30", "checkpoint-best"]
