"""End-to-end runs of the seed script's commands and of `pabee` on a tiny random BERT and GLUE-format fixtures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import GLUE_TASKS, write_glue_task

from pabee.cli import main, seed_main
from pabee.data import read_glue_split

REPO = Path(__file__).resolve().parents[1]
QUIET = ["--disable_tqdm"]


@pytest.fixture(scope="module")
def glue_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue")
    for task in GLUE_TASKS:
        write_glue_task(root, task)
    return root


def records_of(output_dir):
    return json.loads((Path(output_dir) / "eval_results.json").read_text())


def seed_train_command(tiny_bert, data_dir, out, save_steps=50):
    # The reference README's training command, verbatim apart from paths.
    return (
        f"--model_type bert --model_name_or_path {tiny_bert} --task_name {data_dir.name} --do_train --do_eval --do_lower_case "
        f"--data_dir {data_dir} --max_seq_length 128 --per_gpu_train_batch_size 32 --per_gpu_eval_batch_size 32 "
        f"--learning_rate 2e-5 --save_steps {save_steps} --logging_steps 50 --num_train_epochs 5 --output_dir {out} "
        "--evaluate_during_training"
    ).split()


def seed_infer_command(data_dir, out, patience="3,4,5,6,7,8", extra=""):
    return (
        f"--model_name_or_path {out} --task_name {data_dir.name} --do_eval --do_lower_case --data_dir {data_dir} "
        f"--max_seq_length 128 --per_gpu_eval_batch_size 1 --learning_rate 2e-5 --logging_steps 50 "
        f"--num_train_epochs 15 --output_dir {out} --eval_all_checkpoints --patience {patience} {extra}"
    ).split()


def test_seed_commands_train_then_sweep_patience(tiny_bert, glue_root, tmp_path):
    out = tmp_path / "rte"
    data = glue_root / "RTE"
    assert seed_main(seed_train_command(tiny_bert, data, out, save_steps=2) + QUIET) == 0
    assert (out / "pabee_config.json").is_file() and (out / "model.safetensors").is_file()
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2", "checkpoint-4", "checkpoint-5"]  # 24 rows / 32 = 1 step a epoch, 5 epochs
    assert not (out / ".staging").exists()
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    layer_accs = [k for entry in state["log_history"] for k in entry if k.startswith("eval_layer_")]
    assert {"eval_layer_1_acc", "eval_layer_4_acc"} <= set(layer_accs)  # every internal classifier evaluated

    assert seed_main(seed_infer_command(data, out) + QUIET) == 0
    records = records_of(out)
    batch1 = [r for r in records if r["batch_size"] == 1]
    seen = {(r["checkpoint"], r["patience"]) for r in batch1}
    for ckpt in ["checkpoint-2", "checkpoint-4", "final"]:
        for patience in [0, 3, 4, 5, 6, 7, 8]:
            assert (ckpt, patience) in seen
    assert "checkpoint-5" not in {r["checkpoint"] for r in records}  # the final model's weights: evaluated once
    n = len(read_glue_split("rte", data, "dev"))
    for r in records:
        for key in ["checkpoint", "task", "patience", "metrics", "num_layers", "avg_exit_layer", "layer_speedup",
                    "eval_seconds", "examples_per_second", "num_examples", "batch_size", "exit_layer_histogram"]:
            assert key in r
        assert r["task"] == "rte" and set(r["metrics"]) == {"acc"} and r["num_examples"] == n
        assert sum(r["exit_layer_histogram"].values()) == n
        assert 1 <= r["avg_exit_layer"] <= r["num_layers"] == 4
        assert r["layer_speedup"] == pytest.approx(4 / r["avg_exit_layer"])
        assert r["layers_saved"] == pytest.approx(1 - r["avg_exit_layer"] / 4)
    assert (out / "tradeoff_rte_dev.png").stat().st_size > 1000

    # Another sweep with other patiences adds records; it never drops the earlier ones.
    before = len(records)
    assert seed_main(seed_infer_command(data, out, patience="1,2") + QUIET) == 0
    after = records_of(out)
    assert len(after) == before + 2 * 3  # patience 1 and 2 for 3 models (full depth is re-measured in place)
    assert {r["patience"] for r in after} == {0, 1, 2, 3, 4, 5, 6, 7, 8}


def test_batch_size_does_not_change_results(tiny_bert, glue_root, tmp_path):
    out = tmp_path / "m"
    data = glue_root / "MRPC"
    args = ["train", "--model_name_or_path", str(tiny_bert), "--task_name", "MRPC", "--data_dir", str(data),
            "--output_dir", str(out), "--num_train_epochs", "10", "--learning_rate", "3e-3", "--no_eval",
            "--per_device_train_batch_size", "8", *QUIET]
    assert main(args) == 0
    assert main(["eval", "--model_name_or_path", str(out), "--task_name", "MRPC", "--data_dir", str(data),
                 "--per_device_eval_batch_size", "1,8", "--patience", "1,2,3", *QUIET]) == 0
    records = records_of(out)
    by_key = {(r["patience"], r["batch_size"]): r for r in records}
    for patience in [0, 1, 2, 3]:
        one, eight = by_key[(patience, 1)], by_key[(patience, 8)]
        assert one["metrics"] == pytest.approx(eight["metrics"], abs=1e-9)
        assert one["exit_layer_histogram"] == eight["exit_layer_histogram"]
    assert len({r["avg_exit_layer"] for r in records}) > 1, "patiences must give different exits in this test"


@pytest.mark.parametrize("task", GLUE_TASKS)
def test_every_glue_task_trains_evaluates_and_predicts(task, tiny_bert, glue_root, tmp_path):
    out = tmp_path / task
    args = ["train", "--model_name_or_path", str(tiny_bert), "--task_name", task, "--data_dir", str(glue_root),
            "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "8",
            "--patience", "1,2", "--do_predict", *QUIET]
    if task == "STS-B":
        args += ["--regression_threshold", "0.2"]
    assert main(args) == 0
    records = records_of(out)
    expected_metrics = {"CoLA": {"mcc"}, "MRPC": {"acc", "f1"}, "QQP": {"acc", "f1"},
                        "STS-B": {"pearson", "spearmanr"}}.get(task, {"acc"})
    assert all(set(r["metrics"]) == expected_metrics for r in records)
    splits = {r["split"] for r in records}
    assert splits == ({"dev_matched", "dev_mismatched"} if task == "MNLI" else {"dev"})
    stems = {"MNLI": ["MNLI-m", "MNLI-mm"]}.get(task, [task])
    for patience in (1, 2):
        for stem in stems:
            lines = (out / "predictions" / f"patience_{patience}" / f"{stem}.tsv").read_text().splitlines()
            assert lines[0] == "index\tprediction" and len(lines) == 1 + 24
            if task == "STS-B":
                float(lines[1].split("\t")[1])
            else:
                assert lines[1].split("\t")[1] in {"0", "1", "entailment", "not_entailment", "neutral",
                                                   "contradiction"}


def test_regression_head_init_mean_starts_fresh_heads_at_the_mean_label(tiny_bert, glue_root, tmp_path):
    import torch

    from pabee.modeling import PabeeForSequenceClassification

    def biases(folder):
        return [float(h.bias.detach()) for h in PabeeForSequenceClassification.from_pretrained(folder).classifiers]

    labels = [float(row.label) for row in read_glue_split("STS-B", glue_root / "STS-B", "train")]
    mean = sum(labels) / len(labels)
    assert abs(mean) > 0.1, "the fixture's labels must have a mean away from the zero-initialised bias"
    frozen = ["--learning_rate", "1e-12", "--classifier_learning_rate", "1e-12", "--max_steps", "1", "--no_eval", *QUIET]
    common = ["train", "--task_name", "STS-B", "--data_dir", str(glue_root / "STS-B"), *frozen]
    assert main([*common, "--model_name_or_path", str(tiny_bert), "--output_dir", str(tmp_path / "zero")]) == 0
    assert biases(tmp_path / "zero") == pytest.approx([0.0] * 4, abs=1e-6)  # the default: as transformers does
    mean_init = ["--regression_head_init", "mean"]
    assert main([*common, *mean_init, "--model_name_or_path", str(tiny_bert), "--output_dir", str(tmp_path / "a")]) == 0
    assert biases(tmp_path / "a") == pytest.approx([mean] * 4, abs=1e-6)

    # Training further from a saved pabee model never resets its trained heads.
    model = PabeeForSequenceClassification.from_pretrained(tmp_path / "a")
    with torch.no_grad():
        for head in model.classifiers:
            head.bias.fill_(-7.0)
    model.save_pretrained(tmp_path / "b")
    assert main([*common, *mean_init, "--model_name_or_path", str(tmp_path / "b"), "--tokenizer_name", str(tiny_bert),
                 "--output_dir", str(tmp_path / "c")]) == 0  # b has no tokenizer files: save_pretrained writes none
    assert biases(tmp_path / "c") == pytest.approx([-7.0] * 4, abs=1e-6)


def test_bad_regression_head_init_is_refused(tiny_bert, glue_root, tmp_path, capsys):
    from pabee.runner import RunSettings, run

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--task_name", "STS-B", "--data_dir", str(glue_root / "STS-B"), "--model_name_or_path",
              str(tiny_bert), "--output_dir", str(tmp_path / "x"), "--regression_head_init", "median"])
    assert exit_info.value.code == 2 and "--regression_head_init" in capsys.readouterr().err
    settings = RunSettings(task_name="STS-B", data_dir=str(glue_root / "STS-B"), model_name_or_path=str(tiny_bert),
                           output_dir=str(tmp_path / "y"), do_train=True, regression_head_init="Mean")
    with pytest.raises(ValueError, match="regression_head_init must be 'zero' or 'mean'"):
        run(settings)


def test_same_seed_gives_the_same_trained_model_and_another_seed_does_not(tiny_bert, glue_root, tmp_path):
    from safetensors.torch import load_file

    def train(name, seed):
        args = ["train", "--model_name_or_path", str(tiny_bert), "--task_name", "RTE", "--data_dir",
                str(glue_root / "RTE"), "--output_dir", str(tmp_path / name), "--max_steps", "2", "--seed", seed,
                "--no_eval", *QUIET]
        assert main(args) == 0
        return load_file(str(tmp_path / name / "model.safetensors"))

    a, b, c = train("a", "42"), train("b", "42"), train("c", "7")
    assert all(a[k].equal(b[k]) for k in a)  # the fresh classifiers are initialised after seeding
    assert not a["classifiers.0.weight"].equal(c["classifiers.0.weight"])


def test_custom_csv_files(tiny_bert, tmp_path):
    rows = ["text,label"] + [f"the cat is {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}" for i in range(20)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "dev.csv").write_text("\n".join(rows[:9]) + "\n")
    out = tmp_path / "out"
    assert main(["train", "--model_name_or_path", str(tiny_bert), "--train_file", str(tmp_path / "train.csv"),
                 "--validation_file", str(tmp_path / "dev.csv"), "--text_columns", "text", "--output_dir", str(out),
                 "--max_steps", "2", "--patience", "1", *QUIET]) == 0
    records = records_of(out)
    assert {r["num_examples"] for r in records} == {8}
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}


def test_resume_continues_from_the_last_checkpoint(tiny_bert, glue_root, tmp_path):
    out = tmp_path / "resume"
    base = ["train", "--model_name_or_path", str(tiny_bert), "--task_name", "SST-2", "--data_dir", str(glue_root),
            "--output_dir", str(out), "--per_device_train_batch_size", "4", "--save_steps", "2", "--no_eval", *QUIET]
    assert main([*base, "--max_steps", "2"]) == 0  # stands in for a run stopped after its checkpoint at step 2
    assert main([*base, "--max_steps", "4"]) == 2  # a non-empty output folder is not silently reused
    assert main([*base, "--max_steps", "4", "--resume_from_checkpoint"]) == 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]


def run_cli(args, cwd=REPO):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_seed_script_runs_as_a_user_would(tiny_bert, glue_root, tmp_path):
    out = tmp_path / "s"
    result = run_cli(["run_glue_with_pabee.py", *seed_train_command(tiny_bert, glue_root / "WNLI", out), *QUIET])
    assert result.returncode == 0, result.stderr[-2000:]
    result = run_cli(["run_glue_with_pabee.py", *seed_infer_command(glue_root / "WNLI", out, "1,2"), *QUIET])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "patience" in result.stdout and "layer x" in result.stdout


def one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def trained_rte(tiny_bert, glue_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "rte"
    assert main(["train", "--model_name_or_path", str(tiny_bert), "--task_name", "RTE", "--data_dir",
                 str(glue_root / "RTE"), "--output_dir", str(out), "--max_steps", "1", "--no_eval", *QUIET]) == 0
    return out


def bad_glue(tmp_path, name, content):
    folder = tmp_path / "RTE"
    folder.mkdir()
    (folder / "dev.tsv").write_text(content)
    (folder / "train.tsv").write_text(content)
    return folder


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_dir", "data folder not found"),
        ("missing_file", "dev.tsv"),
        ("unknown_task", "unknown task"),
        ("malformed_row", "dev.tsv:3"),
        ("bad_label", "maybe"),
        ("bad_patience", "--patience"),
        ("negative_patience", "--patience"),
        ("bad_threshold", "--regression_threshold"),
        ("bad_exit_values", "--exit_values must be a comma-separated list of numbers"),
        ("exit_value_out_of_range", "confidence threshold must be in (0, 1]"),
        ("existing_output", "--overwrite_output_dir"),
        ("not_trained", "pabee_config.json"),
        ("wrong_model_type", "--model_type albert"),
    ],
)
def test_bad_input_gives_one_line_error(case, expected, trained_rte, tiny_bert, glue_root, tmp_path):
    eval_args = ["-m", "pabee.cli", "eval", "--model_name_or_path", str(trained_rte), "--task_name", "RTE", *QUIET]
    header = "index\tsentence1\tsentence2\tlabel\n"
    if case == "missing_dir":
        args = [*eval_args, "--data_dir", str(tmp_path / "nowhere")]
    elif case == "missing_file":
        (tmp_path / "RTE").mkdir()
        args = [*eval_args, "--data_dir", str(tmp_path / "RTE")]
    elif case == "unknown_task":
        args = ["-m", "pabee.cli", "eval", "--model_name_or_path", str(trained_rte), "--task_name", "XNLI"]
    elif case == "malformed_row":
        folder = bad_glue(tmp_path, "RTE", header + "0\ta\tb\tentailment\n1\tonly two\n")
        args = [*eval_args, "--data_dir", str(folder)]
    elif case == "bad_label":
        folder = bad_glue(tmp_path, "RTE", header + "0\ta\tb\tmaybe\n")
        args = [*eval_args, "--data_dir", str(folder)]
    elif case == "bad_patience":
        args = [*eval_args, "--patience", "3,four"]
    elif case == "negative_patience":
        args = [*eval_args, "--patience", "-1"]
    elif case == "bad_threshold":
        args = [*eval_args, "--regression_threshold", "-0.5"]
    elif case == "bad_exit_values":
        args = [*eval_args, "--exit_rule", "confidence", "--exit_values", "0.5,high"]
    elif case == "exit_value_out_of_range":
        args = [*eval_args, "--exit_rule", "confidence", "--exit_values", "0.5,1.5"]
    elif case == "existing_output":
        args = ["-m", "pabee.cli", "train", "--model_name_or_path", str(tiny_bert), "--task_name", "RTE",
                "--output_dir", str(trained_rte)]
    elif case == "not_trained":
        args = ["-m", "pabee.cli", "eval", "--model_name_or_path", str(tiny_bert), "--task_name", "RTE",
                "--data_dir", str(glue_root / "RTE")]
    else:
        args = ["run_glue_with_pabee.py", "--model_type", "albert", "--model_name_or_path", str(tiny_bert),
                "--task_name", "RTE", "--data_dir", str(glue_root / "RTE"), "--do_train", "--output_dir",
                str(tmp_path / "o")]
    line = one_line_error(run_cli(args))
    assert expected in line, line


def test_threshold_on_classification_task_warns(trained_rte, glue_root, tmp_path):
    result = run_cli(["-m", "pabee.cli", "eval", "--model_name_or_path", str(trained_rte), "--task_name", "RTE",
                      "--data_dir", str(glue_root / "RTE"), "--regression_threshold", "0.1", "--patience", "1",
                      *QUIET])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--regression_threshold is ignored" in result.stderr


def test_without_a_data_folder_the_hub_fallback_fails_clearly(trained_rte, monkeypatch, capsys):
    import pabee.run_inputs

    monkeypatch.setattr(pabee.run_inputs, "find_glue_dir", lambda task, data_dir: None)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert main(["eval", "--model_name_or_path", str(trained_rte), "--task_name", "RTE", *QUIET]) == 2
    assert "--data_dir" in capsys.readouterr().err


def test_exit_rules_are_evaluated_beside_patience(trained_rte, glue_root, tmp_path, capsys):
    out = tmp_path / "rules"
    base = ["eval", "--model_name_or_path", str(trained_rte), "--task_name", "RTE", "--data_dir",
            str(glue_root / "RTE"), "--output_dir", str(out), "--per_device_eval_batch_size", "8", *QUIET]
    assert main([*base, "--patience", "1,2"]) == 0
    assert main([*base, "--exit_rule", "confidence", "--exit_values", "0.5,0.9"]) == 0
    printed = capsys.readouterr().out
    assert "rule" in printed and "confidence 0.5" in printed and "confidence 0.9" in printed
    records = records_of(out)
    assert sorted((r["exit_rule"], r["exit_value"]) for r in records) == [
        ("confidence", 0.5), ("confidence", 0.9), ("patience", 0), ("patience", 1), ("patience", 2)]
    for r in records:
        assert r["patience"] == (r["exit_value"] if r["exit_rule"] == "patience" else None)
        assert sum(r["exit_layer_histogram"].values()) == r["num_examples"] == 24
    by_rule = {(r["exit_rule"], r["exit_value"]): r for r in records}
    # RTE has two labels, so the top probability is always >= 0.5: every example leaves after layer 1
    assert by_rule[("confidence", 0.5)]["avg_exit_layer"] == 1
    assert by_rule[("confidence", 0.5)]["regression_threshold"] is None
    assert (out / "tradeoff_rte_dev.png").stat().st_size > 1000

    assert main([*base, "--exit_rule", "layer", "--exit_values", "2", "--do_predict"]) == 0
    records = records_of(out)
    assert len(records) == 6
    layer = next(r for r in records if r["exit_rule"] == "layer")
    assert layer["exit_value"] == 2 and layer["avg_exit_layer"] == 2 and layer["exit_layer_histogram"]["2"] == 24
    lines = (out / "predictions" / "layer_2" / "RTE.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 25


def test_seed_script_takes_exit_rules(trained_rte, glue_root, tmp_path):
    out = tmp_path / "seed-rules"
    args = (f"--model_name_or_path {trained_rte} --task_name RTE --do_eval --do_lower_case --data_dir "
            f"{glue_root / 'RTE'} --per_gpu_eval_batch_size 1 --output_dir {out} --exit_rule entropy "
            "--exit_values 0.5,100").split()
    assert seed_main([*args, *QUIET]) == 0
    records = records_of(out)
    assert sorted((r["exit_rule"], r["exit_value"]) for r in records) == [
        ("entropy", 0.5), ("entropy", 100.0), ("patience", 0)]
    assert next(r for r in records if r["exit_value"] == 100.0)["avg_exit_layer"] == 1  # H <= ln 2 < 100


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--exit_rule", "confidence", "--exit_values", "0.5,abc"], "--exit_values must be a comma-separated list"),
        (["--exit_rule", "confidence", "--exit_values", "1.5"], "--exit_values: the confidence threshold must be in"),
        (["--exit_rule", "layer", "--exit_values", "0"], "the layer value must be an integer >= 1"),
        (["--exit_rule", "layer", "--exit_values", "1.5"], "the layer value must be an integer"),
        (["--exit_rule", "entropy", "--exit_values", "-0.1"], "the entropy threshold must be >= 0"),
        (["--exit_rule", "entropy"], "--exit_rule entropy needs --exit_values"),
        (["--exit_rule", "entropy", "--exit_values", "0.1", "--patience", "2"], "--patience applies to"),
        (["--patience", "2", "--exit_values", "3"], "--patience or with --exit_values, not both"),
        (["--exit_values", "1.5"], "the patience value must be an integer"),
        (["--exit_rule", "depth", "--exit_values", "1"], "invalid choice: 'depth'"),
        (["--exit_values", ","], "--exit_values is empty"),
    ],
)
@pytest.mark.parametrize("front_end", ["pabee", "seed"])
def test_bad_exit_rule_arguments_give_one_line_and_exit_2(front_end, extra, expected, tmp_path, capsys):
    common = ["--model_name_or_path", str(tmp_path), "--task_name", "RTE", "--output_dir", str(tmp_path), *extra]
    with pytest.raises(SystemExit) as exited:
        if front_end == "pabee":
            main(["eval", *common])
        else:
            seed_main(["--do_eval", *common])
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], lines
    assert expected in lines[0], lines[0]


def test_probability_rules_on_a_regression_task_fail_before_training(tiny_bert, glue_root, tmp_path, capsys):
    out = tmp_path / "stsb"
    assert main(["train", "--model_name_or_path", str(tiny_bert), "--task_name", "STS-B", "--data_dir",
                 str(glue_root), "--output_dir", str(out), "--max_steps", "1", "--exit_rule", "entropy",
                 "--exit_values", "0.3", *QUIET]) == 2
    err = capsys.readouterr().err
    assert "--exit_rule entropy works only for classification" in err and "regression" in err
    assert not (out / "model.safetensors").exists()
