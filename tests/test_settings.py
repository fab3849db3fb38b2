"""One source of settings: the dataclasses of pabee.settings hold every default, help text and check; the
command lines are generated from them (pabee.cli_args) and map the reference script's spellings onto them."""

import dataclasses
import subprocess
import sys

import pytest

from pabee.cli import _Parser, pabee_parser, seed_parser, settings_from_args
from pabee.cli_args import add_settings_arguments, typed_values
from pabee.exit_rules import ExitRule
from pabee.settings import RunSettings, TrainSettings, default_of, setting


def parse_pabee(*argv):
    return pabee_parser().parse_args(list(argv))


def test_without_flags_every_value_is_the_dataclass_default():
    args = parse_pabee("train", "--task_name", "RTE")
    settings = settings_from_args(args, True, True)
    assert settings.train == TrainSettings(output_dir="runs/rte")
    expected = RunSettings(output_dir="runs/rte", task_name="RTE", do_train=True, do_eval=True,
                           train=TrainSettings(output_dir="runs/rte"))
    assert settings == expected
    assert settings.exit_rules == [ExitRule("patience", 0)]


def test_a_changed_dataclass_default_reaches_the_command_line(monkeypatch):
    field = next(f for f in dataclasses.fields(TrainSettings) if f.name == "learning_rate")
    monkeypatch.setattr(field, "default", 1e-3)
    monkeypatch.setattr(TrainSettings.__init__, "__defaults__", tuple(
        1e-3 if d == 5e-5 else d for d in TrainSettings.__init__.__defaults__))
    settings = settings_from_args(parse_pabee("train", "--task_name", "RTE"), True, True)
    assert settings.train.learning_rate == 1e-3
    train_help = pabee_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "(default: 0.001)" in " ".join(train_help.split())


def test_help_shows_the_dataclass_help_and_default_without_importing_torch():
    code = ("import sys\nfrom pabee.cli import main\ntry:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "peak learning rate of the backbone (AdamW) (default: 5e-05)" in " ".join(result.stdout.split())
    assert "--per_device_train_batch_size PER_DEVICE_TRAIN_BATCH_SIZE, --per_gpu_train_batch_size" in result.stdout
    assert result.stdout.strip().endswith("False")  # torch not imported


def test_reference_script_spellings_map_onto_the_same_fields():
    args = seed_parser().parse_args(
        "--model_name_or_path m --task_name RTE --do_train --do_eval --output_dir o --per_gpu_train_batch_size 8 "
        "--per_gpu_eval_batch_size 1,16 --no_cuda --fp16_opt_level O2 --local_rank -1 --server_ip x --server_port 1 "
        "--overwrite_cache --config_name c --warmup_ratio 0.2 --group_by_length --patience 3,4".split())
    settings = settings_from_args(args)
    assert settings.do_train and settings.do_eval and not settings.do_predict
    assert settings.train.per_device_train_batch_size == 8 and settings.train.use_cpu
    assert settings.eval_batch_sizes == [1, 16] and settings.train.per_device_eval_batch_size == 16
    assert settings.train.warmup_steps == 0.2 and settings.train.train_sampling_strategy == "group_by_length"
    assert settings.exit_rules == [ExitRule("patience", 3), ExitRule("patience", 4)]


def test_exit_rules_is_the_one_exit_field():
    names = {f.name for f in dataclasses.fields(RunSettings)}
    assert "exit_rules" in names and "patience" not in names
    assert RunSettings(output_dir="x", exit_rules=["entropy:0.3", ExitRule("layer", 2)]).exit_rules == [
        ExitRule("entropy", 0.3), ExitRule("layer", 2)]
    with pytest.raises(ValueError, match="exit_rules is empty"):
        RunSettings(output_dir="x", exit_rules=[])
    with pytest.raises(ValueError, match="confidence threshold"):
        RunSettings(output_dir="x", exit_rules=["confidence:2"])
    args = parse_pabee("eval", "--exit_rule", "entropy", "--exit_values", "0.1,0.3")
    assert settings_from_args(args, False, True).exit_rules == [ExitRule("entropy", 0.1), ExitRule("entropy", 0.3)]


def test_adding_a_field_adds_its_flag():
    """The recipe for a new flag: one field with its default and help; the parser and the mapping follow."""

    @dataclasses.dataclass
    class Example:
        threads: int | None = setting(None, help="intra-op CPU threads", fronts=("eval",))
        backend: str = setting("torch", choices=("torch", "onnx"), help="runtime", aliases=("--runtime",))

    parser = _Parser(prog="x")
    add_settings_arguments(parser, Example, "eval")
    assert typed_values(parser.parse_args([]), Example) == {}
    assert Example(**typed_values(parser.parse_args(["--threads", "2", "--runtime", "onnx"]), Example)) == \
        Example(threads=2, backend="onnx")
    assert "runtime (default: torch)" in " ".join(parser.format_help().split())
    other = _Parser(prog="y")
    add_settings_arguments(other, Example, "train")
    assert "--threads" not in other.format_help() and "--backend" in other.format_help()


def test_default_of_reads_the_dataclass():
    assert default_of(TrainSettings, "learning_rate") == TrainSettings(output_dir="x").learning_rate
    assert default_of(RunSettings, "eval_batch_sizes") == [32]
    with pytest.raises(ValueError, match="no field"):
        default_of(RunSettings, "patience")
