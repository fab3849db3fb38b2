"""pabee predict MODEL and pabee serve: their flags are generated from PredictTextSettings / ModelSettings /
ServeSettings (pabee.cli_args), which hold every default, help text and check."""

import dataclasses
import subprocess
import sys

import pytest

from pabee.cli_args import flag_of, typed_values
from pabee.cli_predict import predict_parser
from pabee.predict_settings import ModelSettings, PredictTextSettings
from pabee.serving.cli import serve_parser
from pabee.serving.settings import ServeSettings


def test_without_flags_every_value_is_the_dataclass_default():
    args = predict_parser().parse_args(["runs/rte"])
    assert typed_values(args, PredictTextSettings) == {"model": "runs/rte"}  # nothing restated by the parser
    assert PredictTextSettings(**typed_values(args, PredictTextSettings)) == PredictTextSettings(model="runs/rte")
    args = serve_parser().parse_args(["runs/rte"])
    assert typed_values(args, ServeSettings) == {}
    assert ModelSettings(**typed_values(args, ModelSettings)) == ModelSettings(model="runs/rte")


def test_every_field_has_its_flag_with_the_dataclass_default_in_the_help():
    serve_help = " ".join(serve_parser().format_help().split())
    for f in dataclasses.fields(ServeSettings):
        if f.metadata["fronts"]:
            assert flag_of(f) in serve_help, f.name
    assert "--max-batch-size MAX_BATCH_SIZE, --max_batch_size MAX_BATCH_SIZE most inputs per model call " \
           "(default: 32)" in serve_help
    predict_help = " ".join(predict_parser().format_help().split())
    assert "--batch_size BATCH_SIZE, --batch-size BATCH_SIZE inputs per model call (default: 32)" in predict_help
    assert "--backend {torch,onnx}" in predict_help and "(default: torch)" in predict_help


@pytest.mark.parametrize("spelling", ["--max-batch-size", "--max_batch_size"])
def test_dashed_and_underscored_serve_flags_set_the_same_field(spelling):
    args = serve_parser().parse_args(["m", spelling, "4", "--max_wait_ms", "0", "--log-level", "debug"])
    settings = ServeSettings(**typed_values(args, ServeSettings))
    assert (settings.max_batch_size, settings.max_wait_ms, settings.log_level) == (4, 0.0, "debug")


def test_model_options_are_parsed_and_checked_by_the_dataclass():
    from pabee.exit_rules import ExitRule

    args = predict_parser().parse_args(["m", "--exit-rule", "entropy:0.3", "--max-length", "16", "--no-progress"])
    settings = PredictTextSettings(**typed_values(args, PredictTextSettings))
    assert settings.exit_rule == ExitRule("entropy", 0.3) and settings.max_length == 16 and settings.no_progress
    with pytest.raises(ValueError, match="either --exit_rule or --patience"):
        ModelSettings(model="m", exit_rule=ExitRule("layer", 2), patience=1)
    with pytest.raises(ValueError, match="log_level must be one of"):
        ServeSettings(log_level="loud")


def test_serve_help_does_not_import_torch():
    code = ("import sys\nfrom pabee.cli import main\ntry:\n    main(['serve', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--max-input-bytes" in result.stdout and result.stdout.strip().endswith("False")
