"""Command-line front ends. This is the only module that reads argv.

- ``pabee train|eval|predict``: flags follow the current Hugging Face conventions (``per_device_*``).
- ``run_glue_with_pabee.py`` (``seed_main``): accepts the reference PABEE script's commands verbatim.
Both only parse arguments and call :func:`pabee.runner.run`.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import warnings
from typing import TYPE_CHECKING

from .cli_args import add_settings_arguments, flag_spellings, typed_values
from .settings import SEED, ReferenceScriptOnly, RunSettings, TrainSettings, comma_ints

if TYPE_CHECKING:
    from .exit_rules import ExitRule


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage dump) and exits with 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_int_list(text: str, name: str) -> list[int]:
    """"3,4,5" -> [3, 4, 5]; a clear argparse error otherwise."""
    return comma_ints(name)(text)


# the exit rule kinds, as in pabee.exit_rules.EXIT_RULE_KINDS (not imported here: argument parsing stays torch-free)
EXIT_RULE_CHOICES = ("patience", "entropy", "confidence", "layer", "hybrid")


def _number(text: str) -> float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _number_list(text: str) -> list[float | tuple[float, float]]:
    """"0.05,0.1" -> [0.05, 0.1] (integers stay ints); "3@0.9,2@0.95" (the hybrid rule's patience@confidence)
    -> [(3, 0.9), (2, 0.95)]; a clear argparse error otherwise."""
    values: list[float | tuple[float, float]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            values.append(tuple(_number(x.strip()) for x in part.split("@", 1)) if "@" in part else _number(part))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--exit_values must be a comma-separated list of numbers (hybrid: PATIENCE@CONFIDENCE), got {text!r}"
            ) from None
    if not values:
        raise argparse.ArgumentTypeError("--exit_values is empty")
    return values


def int_at_least(minimum: int, flag: str | None = None):
    """An argparse type: an integer >= ``minimum``. Its one-line error names ``flag`` when given."""
    if flag:
        what = f"{flag} must be an integer >= {minimum}"
    else:
        what = "expected a positive integer" if minimum == 1 else f"expected an integer >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}")
        return value

    return parse


_positive_int = int_at_least(1)


def _add_exit_rule_arguments(p: argparse.ArgumentParser) -> None:
    """The command-line spellings of ``RunSettings.exit_rules`` (turned into it by :func:`exit_rules_from_args`)."""
    p.add_argument("--patience", type=comma_ints("--patience"), default=None,
                   help="comma-separated, e.g. 3,4,5 (0 = full depth, the default)")
    p.add_argument("--exit_rule", choices=EXIT_RULE_CHOICES, default="patience",
                   help="the early-exit rule: patience (PABEE), entropy (exit when the prediction entropy, in nats, "
                        "is < value), confidence (exit when the top class probability is >= value), layer (every "
                        "example runs value layers) or hybrid (patience counting only agreeing layers whose top "
                        "probability is >= a confidence threshold: values PATIENCE@CONFIDENCE); full depth is always "
                        "evaluated as the baseline")
    p.add_argument("--exit_values", type=_number_list, default=None,
                   help="comma-separated values of --exit_rule, e.g. --exit_rule entropy --exit_values 0.05,0.1,0.3 "
                        "or --exit_rule hybrid --exit_values 2@0.9,3@0.9")


def _add_common(p: argparse.ArgumentParser, front: str) -> None:
    """The flags of ``front`` ("seed", "train", "eval" or "predict"): generated from the settings dataclasses
    (:mod:`pabee.settings`: defaults, help, aliases), plus the exit-rule spellings."""
    add_settings_arguments(p, RunSettings, front)
    _add_exit_rule_arguments(p)
    add_settings_arguments(p, TrainSettings, front)


def seed_parser() -> argparse.ArgumentParser:
    """The reference script's interface (run_glue_with_pabee.py)."""
    p = _Parser(prog="run_glue_with_pabee.py", description="PABEE fine-tuning and evaluation on GLUE")
    _add_common(p, SEED)
    add_settings_arguments(p, ReferenceScriptOnly, SEED)
    return p


def pabee_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pabee", description="Patience-based Early Exit for Hugging Face encoders")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, text in [
        ("train", "fine-tune (default model: the embedded MiniLM-L6) and evaluate every patience"),
        ("eval", "evaluate a fine-tuned model over patiences (and checkpoints)"),
        ("predict", "write GLUE-format test predictions (pabee predict MODEL --input FILE: predict raw texts, "
                    "see pabee predict MODEL --help)"),
    ]:
        cmd = sub.add_parser(name, help=text, description=text)
        _add_common(cmd, name)
        if name == "train":
            cmd.add_argument("--no_eval", action="store_true", help="skip the evaluation after training")
    # listed for --help only: main() hands "serve" to pabee.serving.cli before this parser runs
    sub.add_parser("serve", help="serve a saved model over HTTP (see pabee serve --help)", add_help=False)
    sub.add_parser("export", help="export a trained model to ONNX (see pabee export --help)", add_help=False)
    sub.add_parser("tune", help="choose and save a trained model's default exit rule (see pabee tune --help)",
                   add_help=False)
    return p


def exit_rules_from_args(args: argparse.Namespace) -> list[ExitRule] | None:
    """``RunSettings.exit_rules`` from its spellings --patience, --exit_rule and --exit_values (None: none given,
    the settings' default); ValueError naming the flag when they clash or a value is invalid for its rule."""
    if args.exit_rule == "patience":
        if args.exit_values is not None and args.patience is not None:
            raise ValueError("give the patiences with --patience or with --exit_values, not both")
        if args.exit_values is not None:
            return [_rule("--exit_values", "patience", v) for v in args.exit_values]
        if args.patience is not None:
            return [_rule("--patience", "patience", v) for v in args.patience]
        return None
    if args.patience is not None:
        raise ValueError(
            f"--patience applies to --exit_rule patience; give the {args.exit_rule} values with --exit_values"
        )
    if args.exit_values is None:
        example = "2@0.9,3@0.9" if args.exit_rule == "hybrid" else "0.1,0.3"
        raise ValueError(f"--exit_rule {args.exit_rule} needs --exit_values (comma-separated, e.g. {example})")
    return [_rule("--exit_values", args.exit_rule, v) for v in args.exit_values]


def _rule(flag: str, kind: str, value: float | tuple[float, float]) -> ExitRule:
    from .exit_rules import ExitRule

    try:
        return ExitRule(kind, *value) if isinstance(value, tuple) else ExitRule(kind, value)
    except ValueError as err:
        raise ValueError(f"{flag}: {err}") from None


def settings_from_args(args: argparse.Namespace, do_train: bool | None = None, do_eval: bool | None = None,
                       do_predict: bool | None = None) -> RunSettings:
    """Map parsed arguments onto RunSettings (and its TrainSettings when training). Only the values given on the
    command line are passed: every other one is the dataclass default. ``do_*``: what the subcommand implies (None:
    as the flags say)."""
    values = typed_values(args, RunSettings)
    values.update({k: v for k, v in [("do_train", do_train), ("do_eval", do_eval), ("do_predict", do_predict)]
                   if v is not None})
    training = bool(values.get("do_train"))
    if values.get("output_dir") is None:
        task = (values.get("task_name") or "custom").lower().replace("-", "")
        values["output_dir"] = f"runs/{task}" if training else (values.get("model_name_or_path") or f"runs/{task}")
    rules = exit_rules_from_args(args)
    if rules is not None:
        values["exit_rules"] = rules
    train_values = typed_values(args, TrainSettings)
    if train_values.get("disable_tqdm"):
        values["progress"] = False
    if training:
        if "eval_batch_sizes" in values:  # evaluation during training uses the largest
            train_values["per_device_eval_batch_size"] = max(values["eval_batch_sizes"])
        values["train"] = TrainSettings(output_dir=values["output_dir"], **train_values)
    return RunSettings(**values)


def _execute(settings, prog: str) -> int:
    from .runner import run
    from .tables import format_group

    try:
        result = run(settings, on_result=lambda group: print(format_group(group), flush=True))
    except (ValueError, OSError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"{prog}: {interrupt_message(err, settings)}", file=sys.stderr)
        return 130
    if result.tuning is not None:
        from .tune_run import saved_message
        from .tuning import format_tuning

        print(f"\n{format_tuning(result.tuning)}\n{saved_message(settings.output_dir, result.tuning, result.tuning_file)}")
    print_written(result)
    return 0


def print_written(result) -> None:
    """The files a run wrote (a :class:`pabee.runner.RunResult`): records file, plots, prediction files."""
    if result.results_file is not None:
        print(f"\nresults: {result.results_file}")
    for plot in result.plots:
        print(f"plot: {plot}")
    for split, rule, path in result.predictions:
        print(f"predictions ({split}, {rule}): {path}")


def interrupt_message(err: KeyboardInterrupt, settings) -> str:
    """What an interrupted run kept: the evaluation records already written, or how to resume training."""
    from .runner import EvaluationInterrupted

    if isinstance(err, EvaluationInterrupted):
        if err.kept == 0:
            return f"evaluation interrupted before its first result was complete; {err.path} was not changed"
        return (f"evaluation interrupted; the {err.kept} records measured before it ({err.done} of {err.total} "
                f"checkpoint x split x batch size results) are kept in {err.path}")
    if settings.do_train:
        return "interrupted; resume training with --resume_from_checkpoint"
    return "interrupted"


def _settings_or_exit(args: argparse.Namespace, prog: str, argv: list[str] | None, *todo: bool):
    """settings_from_args, an invalid value (the settings' own checks) reported like any argument error: one line
    ``prog: error: ...`` naming the flag as the user typed it, and exit code 2, before any work starts."""
    try:
        return settings_from_args(args, *todo)
    except ValueError as err:
        typed = sys.argv[1:] if argv is None else argv
        print(f"{prog}: error: {_as_typed(str(err).strip(), typed)}", file=sys.stderr)
        raise SystemExit(2) from None


def _as_typed(message: str, argv: list[str]) -> str:
    """Name a flag in ``message`` by the alias the user typed (``--per_gpu_train_batch_size`` for the seed
    script's users) rather than by its main name, which the settings' checks use."""
    typed = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    for main, aliases in flag_spellings([RunSettings, TrainSettings]).items():
        used = [alias for alias in aliases if alias in typed]
        if used and main not in typed and re.search(rf"{re.escape(main)}\b", message):
            message = re.sub(rf"{re.escape(main)}\b", used[0], message)
    return message


def _check_exit_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Report clashing or invalid exit-rule arguments like any other argument error (one line, exit 2)."""
    try:
        exit_rules_from_args(args)
    except ValueError as err:
        parser.error(str(err))


def _setup_logging() -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    # under torchrun / accelerate launch only the first process reports; the others say only what goes wrong
    first = int(os.environ.get("RANK", "0")) == 0
    logging.getLogger("pabee").setLevel(logging.INFO if first else logging.WARNING)
    warnings.simplefilter("default", UserWarning)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pabee`` console command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    dispatched = _dispatch(argv)
    if dispatched is not None:
        return dispatched
    parser = pabee_parser()
    args = parser.parse_args(argv)
    _check_exit_args(parser, args)
    _setup_logging()
    prog = f"pabee {args.command}"
    if args.command == "train":
        settings = _settings_or_exit(args, prog, argv, True, not args.no_eval)
    elif args.command == "eval":
        settings = _settings_or_exit(args, prog, argv, False, True)
    else:
        settings = _settings_or_exit(args, prog, argv, False, False, True)
    return _execute(settings, prog)


def _dispatch(argv: list[str]) -> int | None:
    """Run the subcommands that live in their own modules (raw-text predict, serve, export, tune); None for the
    others."""
    from .cli_predict import is_raw_text_mode

    if is_raw_text_mode(argv):
        from .cli_predict import main as predict_main

        return predict_main(argv[1:])
    if argv and argv[0] == "serve":
        from .serving.cli import main as serve_main

        return serve_main(argv[1:])
    if argv and argv[0] == "export":
        from .onnx.cli import main as export_main

        return export_main(argv[1:])
    if argv and argv[0] == "tune":
        from .cli_tune import main as tune_main

        return tune_main(argv[1:])
    return None


def seed_main(argv: list[str] | None = None) -> int:
    """Entry point of ``run_glue_with_pabee.py`` (the reference script's flags)."""
    parser = seed_parser()
    args = parser.parse_args(argv)
    _check_exit_args(parser, args)
    _setup_logging()
    given = vars(args)
    if not given.get("task_name") and not (given.get("train_file") or given.get("validation_file")):
        print("run_glue_with_pabee.py: error: --task_name is required", file=sys.stderr)
        return 2
    prog = "run_glue_with_pabee.py"
    settings = _settings_or_exit(args, prog, argv)
    return _execute(settings, prog)


if __name__ == "__main__":
    sys.exit(main())
