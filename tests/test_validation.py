"""Bad numbers on the command line: one line `error:` naming the flag, exit code 2, before any work, in `pabee` and
in `run_glue_with_pabee.py` alike; the same checks for Python users of TrainSettings / RunSettings."""

import math

import pytest

from pabee.cli import main, seed_main
from pabee.runner import RunSettings
from pabee.train import TrainSettings

# (arguments, the flag the message must name)
BAD_NUMBERS = [
    (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size"),
    (["--per_gpu_train_batch_size", "0"], "--per_gpu_train_batch_size"),
    (["--per_device_train_batch_size", "-4"], "--per_device_train_batch_size"),
    (["--per_device_eval_batch_size", "0"], "--per_device_eval_batch_size"),
    (["--per_gpu_eval_batch_size", "0"], "--per_gpu_eval_batch_size"),
    (["--max_train_samples", "-3"], "--max_train_samples"),
    (["--max_train_samples", "0"], "--max_train_samples"),
    (["--max_eval_samples", "-1"], "--max_eval_samples"),
    (["--max_eval_samples", "0"], "--max_eval_samples"),
    (["--num_train_epochs", "0"], "--num_train_epochs"),
    (["--num_train_epochs", "-1"], "--num_train_epochs"),
    (["--num_train_epochs", "nan"], "--num_train_epochs"),
    (["--num_train_epochs", "inf"], "--num_train_epochs"),
    (["--num_train_epochs", "-1", "--max_steps", "3"], "--num_train_epochs"),
    (["--max_steps", "0"], "--max_steps"),
    (["--max_steps", "-2"], "--max_steps"),
    (["--save_steps", "0"], "--save_steps"),
    (["--save_steps", "-5"], "--save_steps"),
    (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps"),
    (["--logging_steps", "0"], "--logging_steps"),
    (["--learning_rate", "-1"], "--learning_rate"),
    (["--learning_rate", "0"], "--learning_rate"),
    (["--learning_rate", "nan"], "--learning_rate"),
    (["--learning_rate", "inf"], "--learning_rate"),
    (["--classifier_learning_rate", "0"], "--classifier_learning_rate"),
    (["--classifier_learning_rate", "nan"], "--classifier_learning_rate"),
    (["--warmup_steps", "-1"], "--warmup_steps"),
    (["--warmup_steps", "nan"], "--warmup_steps"),
    (["--warmup_steps", "2.5"], "--warmup_steps"),
    (["--warmup_ratio", "1"], "--warmup_ratio"),
    (["--warmup_ratio", "-0.1"], "--warmup_ratio"),
    (["--warmup_ratio", "nan"], "--warmup_ratio"),
    (["--weight_decay", "-0.01"], "--weight_decay"),
    (["--weight_decay", "nan"], "--weight_decay"),
    (["--adam_epsilon", "0"], "--adam_epsilon"),
    (["--max_grad_norm", "-1"], "--max_grad_norm"),
    (["--max_grad_norm", "nan"], "--max_grad_norm"),
    (["--save_total_limit", "0"], "--save_total_limit"),
    (["--save_total_limit", "-1"], "--save_total_limit"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**32)], "--seed"),
    (["--timing_rounds", "0"], "--timing_rounds"),
    (["--max_seq_length", "0"], "--max_seq_length"),
    (["--max_seq_length", "1"], "--max_seq_length"),
    (["--regression_threshold", "nan"], "--regression_threshold"),
]


def run_front_end(front_end, args, tmp_path):
    """Run `pabee train ...` or `run_glue_with_pabee.py --do_train ...` in-process; (exit code, stderr lines)."""
    common = ["--model_name_or_path", str(tmp_path / "never-loaded"), "--task_name", "RTE", "--data_dir",
              str(tmp_path / "no-data"), "--output_dir", str(tmp_path / "out"), *args]
    try:
        code = main(["train", *common]) if front_end == "pabee" else seed_main(["--do_train", "--do_eval", *common])
    except SystemExit as exited:
        code = exited.code
    return code


@pytest.mark.parametrize(("args", "flag"), BAD_NUMBERS, ids=[" ".join(a) for a, _ in BAD_NUMBERS])
@pytest.mark.parametrize("front_end", ["pabee", "seed"])
def test_bad_number_gives_one_line_naming_the_flag_and_exit_2(front_end, args, flag, tmp_path, capsys):
    code = run_front_end(front_end, args, tmp_path)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    prog = "pabee train" if front_end == "pabee" else "run_glue_with_pabee.py"
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    assert flag in lines[0], lines[0]
    assert not (tmp_path / "out").exists()  # refused before any work


@pytest.mark.parametrize(
    "changes",
    [
        {"learning_rate": float("nan")}, {"learning_rate": 0.0}, {"classifier_learning_rate": -1e-3},
        {"num_train_epochs": 0.0}, {"num_train_epochs": math.inf, "max_steps": 10}, {"max_steps": 0},
        {"per_device_train_batch_size": 0}, {"per_device_eval_batch_size": 0}, {"gradient_accumulation_steps": 0},
        {"weight_decay": -1.0}, {"adam_epsilon": 0.0}, {"max_grad_norm": -0.5}, {"warmup_steps": -1},
        {"warmup_steps": 1.5}, {"logging_steps": 0}, {"save_steps": 0}, {"save_total_limit": 0}, {"seed": -3},
        {"per_device_train_batch_size": 8.0}, {"save_steps": True}, {"learning_rate": "5e-5"},
    ],
)
def test_train_settings_refuse_bad_numbers_for_python_users_too(changes):
    flag = "--" + next(iter(changes))
    with pytest.raises(ValueError, match=flag):
        TrainSettings(output_dir="x", **changes)


def test_train_settings_keep_the_transformers_conventions():
    TrainSettings(output_dir="x", num_train_epochs=0, max_steps=5)  # max_steps > 0 overrides the epochs
    TrainSettings(output_dir="x", warmup_steps=0.25)  # a fraction of all steps
    TrainSettings(output_dir="x", warmup_steps=10)  # a number of steps
    TrainSettings(output_dir="x", warmup_steps=0, max_grad_norm=0.0, weight_decay=0.0)  # no warmup, no clipping
    TrainSettings(output_dir="x", seed=0, save_total_limit=1, classifier_learning_rate=1e-3)


@pytest.mark.parametrize(
    ("changes", "flag"),
    [
        ({"max_train_samples": -3}, "--max_train_samples"), ({"max_eval_samples": 0}, "--max_eval_samples"),
        ({"max_seq_length": 1}, "--max_seq_length"), ({"timing_rounds": 0}, "--timing_rounds"),
        ({"eval_batch_sizes": [32, 0]}, "--per_device_eval_batch_size"),
        ({"eval_batch_sizes": []}, "--per_device_eval_batch_size"),
        ({"regression_threshold": -0.1}, "--regression_threshold"),
    ],
)
def test_run_settings_refuse_bad_numbers(changes, flag):
    with pytest.raises(ValueError, match=flag):
        RunSettings(output_dir="x", **changes)


def test_good_numbers_still_run(tmp_path, capsys):
    """The checks refuse nothing the reference commands use (here: parsed and turned into settings)."""
    from pabee.cli import seed_parser, settings_from_args

    args = seed_parser().parse_args(
        "--model_name_or_path m --task_name RTE --do_train --output_dir o --per_gpu_train_batch_size 32 "
        "--per_gpu_eval_batch_size 1 --learning_rate 2e-5 --save_steps 50 --logging_steps 50 --num_train_epochs 5 "
        "--max_steps -1 --warmup_steps 0 --seed 42 --max_seq_length 128".split()
    )
    settings = settings_from_args(args, True, True, False)
    assert settings.train.per_device_train_batch_size == 32 and settings.eval_batch_sizes == [1]
