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

if TYPE_CHECKING:
    from .exit_rules import ExitRule


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage dump) and exits with 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_int_list(text: str, name: str) -> list[int]:
    """"3,4,5" -> [3, 4, 5]; a clear argparse error otherwise."""
    try:
        values = [int(part) for part in text.split(",") if part.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} must be a comma-separated list of integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"{name} is empty")
    return values


def _patience_list(text: str) -> list[int]:
    values = parse_int_list(text, "--patience")
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"--patience values must be >= 0, got {text!r}")
    return values


# the exit rule kinds, as in pabee.exit_rules.EXIT_RULE_KINDS (not imported here: argument parsing stays torch-free)
EXIT_RULE_CHOICES = ("patience", "entropy", "confidence", "layer")


def _number_list(text: str) -> list[float]:
    """"0.05,0.1" -> [0.05, 0.1] (integers stay ints); a clear argparse error otherwise."""
    values: list[float] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            values.append(int(part))
        except ValueError:
            try:
                values.append(float(part))
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"--exit_values must be a comma-separated list of numbers, got {text!r}"
                ) from None
    if not values:
        raise argparse.ArgumentTypeError("--exit_values is empty")
    return values


def _batch_sizes(text: str) -> list[int]:
    values = parse_int_list(text, "eval batch size")
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"eval batch sizes must be >= 1, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--regression_threshold must be a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"--regression_threshold must be a finite number >= 0, got {text!r}")
    return value


def _add_common(p: argparse.ArgumentParser, *, seed: bool) -> None:
    """Arguments shared by the seed script and the pabee subcommands."""
    p.add_argument("--model_name_or_path", default=None, help="encoder checkpoint (folder or hub id) or pabee folder")
    p.add_argument("--model_type", default=None, help="architecture check: bert, albert, mpnet, roberta, ...")
    p.add_argument("--tokenizer_name", default=None)
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--task_name", default=None, help="GLUE task: CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI")
    p.add_argument("--data_dir", default=None, help="the task's GLUE folder (default: $GLUE_DIR/<task>)")
    p.add_argument("--output_dir", required=seed, default=None)
    p.add_argument("--max_seq_length", type=int, default=128,
                   help="longest input in tokens; capped, with a warning, at what the model takes")
    p.add_argument("--do_lower_case", action="store_true")
    p.add_argument("--patience", type=_patience_list, default=None,
                   help="comma-separated, e.g. 3,4,5 (0 = full depth, the default)")
    p.add_argument("--exit_rule", choices=EXIT_RULE_CHOICES, default="patience",
                   help="the early-exit rule: patience (PABEE), entropy (exit when the prediction entropy, in nats, "
                        "is < value), confidence (exit when the top class probability is >= value) or layer (every "
                        "example runs value layers); full depth is always evaluated as the baseline")
    p.add_argument("--exit_values", type=_number_list, default=None,
                   help="comma-separated values of --exit_rule, e.g. --exit_rule entropy --exit_values 0.05,0.1,0.3")
    p.add_argument("--regression_threshold", type=_threshold, default=None)
    p.add_argument("--learning_rate", type=float, default=None)
    p.add_argument("--weight_decay", type=float, default=0.0)
    p.add_argument("--adam_epsilon", type=float, default=1e-8)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--num_train_epochs", type=float, default=None)
    p.add_argument("--max_steps", type=int, default=-1)
    p.add_argument("--warmup_steps", type=float, default=None, help="steps, or a fraction of all steps if < 1")
    p.add_argument("--warmup_ratio", type=float, default=None)
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--logging_steps", type=int, default=50)
    p.add_argument("--save_steps", type=int, default=500)
    p.add_argument("--save_total_limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--bf16", action="store_true",
                   help="bfloat16 mixed precision (CUDA GPUs with bf16, or CPUs with AVX512-BF16/AMX)")
    p.add_argument("--train_sampling_strategy", choices=["group_by_length", "random"], default=None,
                   help="group_by_length (default): batches of similar lengths, so dynamic padding adds few pad "
                        "tokens (about 2x faster on RTE); random: plain shuffling")
    p.add_argument("--group_by_length", dest="train_sampling_strategy", action="store_const",
                   const="group_by_length", help="same as --train_sampling_strategy group_by_length")
    p.add_argument("--no_cuda", "--use_cpu", dest="use_cpu", action="store_true")
    p.add_argument("--overwrite_output_dir", action="store_true")
    p.add_argument("--resume_from_checkpoint", nargs="?", const="last", default=None,
                   help="continue from the last checkpoint in output_dir (or from the given one)")
    p.add_argument("--evaluate_during_training", action="store_true")
    p.add_argument("--eval_all_checkpoints", action="store_true")
    p.add_argument("--per_device_train_batch_size", "--per_gpu_train_batch_size", dest="train_batch_size",
                   type=int, default=None)
    p.add_argument("--per_device_eval_batch_size", "--per_gpu_eval_batch_size", dest="eval_batch_sizes",
                   type=_batch_sizes, default=None, help="one size or several, e.g. 1,32")
    p.add_argument("--timing_rounds", type=_positive_int, default=1,
                   help="timed passes over the dev set per batch size, the exit rules taking turns on blocks of "
                        "consecutive batches; "
                        "eval_seconds is their mean (more rounds: steadier wall-clock speed-ups)")
    p.add_argument("--train_file", default=None, help="custom CSV/TSV/JSON Lines training file")
    p.add_argument("--validation_file", default=None)
    p.add_argument("--test_file", default=None)
    p.add_argument("--text_columns", default="sentence", help="custom files: comma-separated text column(s)")
    p.add_argument("--label_column", default="label")
    p.add_argument("--label_list", default=None,
                   help="custom files: comma-separated labels in id order for training from a plain encoder "
                        "(default: the training file's sorted labels); a fine-tuned model uses the labels saved "
                        "with it, and a --label_list must repeat them in the same order")
    p.add_argument("--regression", action="store_true", help="custom files: the label is a number")
    p.add_argument("--max_train_samples", type=int, default=None)
    p.add_argument("--max_eval_samples", type=int, default=None)
    p.add_argument("--loss_weighting", choices=["linear", "uniform", "last"], default=None,
                   help="linear: PABEE's i/sum(i) (default); uniform; last: plain fine-tuning of the last classifier")
    p.add_argument("--pooling", choices=["cls", "mean"], default=None,
                   help="what the internal classifiers read (default: the model's own sentence-transformers "
                        "pooling if it declares one, else cls = the pooler on the first token)")
    p.add_argument("--regression_head_init", choices=["zero", "mean"], default="zero",
                   help="regression tasks trained from fresh heads: start every head's bias at 0 (default, as "
                        "transformers does) or at the mean training label (helps short runs, see README)")
    p.add_argument("--classifier_learning_rate", type=float, default=None,
                   help="learning rate of the internal classifiers (default: 20 x --learning_rate)")
    p.add_argument("--disable_tqdm", action="store_true")


def seed_parser() -> argparse.ArgumentParser:
    """The reference script's interface (run_glue_with_pabee.py)."""
    p = _Parser(prog="run_glue_with_pabee.py", description="PABEE fine-tuning and evaluation on GLUE")
    _add_common(p, seed=True)
    p.add_argument("--do_train", action="store_true")
    p.add_argument("--do_eval", action="store_true")
    p.add_argument("--do_predict", action="store_true")
    p.add_argument("--overwrite_cache", action="store_true", help="accepted for compatibility (no cache is kept)")
    p.add_argument("--config_name", default=None, help="accepted for compatibility")
    p.add_argument("--fp16_opt_level", default="O1", help="accepted for compatibility (apex is not used)")
    p.add_argument("--local_rank", type=int, default=-1, help="accepted for compatibility (use torchrun)")
    p.add_argument("--server_ip", default="")
    p.add_argument("--server_port", default="")
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
        _add_common(cmd, seed=False)
        if name == "train":
            cmd.add_argument("--no_eval", action="store_true", help="skip the evaluation after training")
            cmd.add_argument("--do_predict", action="store_true")
        if name == "eval":
            cmd.add_argument("--do_predict", action="store_true")
    # listed for --help only: main() hands "serve" to pabee.serving.cli before this parser runs
    sub.add_parser("serve", help="serve a saved model over HTTP (see pabee serve --help)", add_help=False)
    return p


def exit_rules_from_args(args: argparse.Namespace) -> tuple[list[int], list[ExitRule] | None]:
    """(patiences, exit rules or None) from --patience, --exit_rule and --exit_values; ValueError when they clash
    or a value is invalid for its rule."""
    from .exit_rules import ExitRule

    if args.exit_rule == "patience":
        if args.exit_values is not None and args.patience is not None:
            raise ValueError("give the patiences with --patience or with --exit_values, not both")
        values = args.exit_values if args.exit_values is not None else (args.patience or [0])
        rules = [_rule(ExitRule, "patience", v) for v in values]
        return [rule.value for rule in rules], None
    if args.patience is not None:
        raise ValueError(
            f"--patience applies to --exit_rule patience; give the {args.exit_rule} values with --exit_values"
        )
    if args.exit_values is None:
        raise ValueError(f"--exit_rule {args.exit_rule} needs --exit_values (comma-separated, e.g. 0.1,0.3)")
    return [0], [_rule(ExitRule, args.exit_rule, v) for v in args.exit_values]


def _rule(rule_type: type[ExitRule], kind: str, value: float) -> ExitRule:
    try:
        return rule_type(kind, value)
    except ValueError as err:
        raise ValueError(f"--exit_values: {err}") from None


def settings_from_args(args: argparse.Namespace, do_train: bool, do_eval: bool, do_predict: bool):
    """Map parsed arguments to RunSettings (defaults that differ by front end are resolved here)."""
    from .runner import RunSettings
    from .train import TrainSettings

    output_dir = args.output_dir
    if output_dir is None:
        task = (args.task_name or "custom").lower().replace("-", "")
        output_dir = f"runs/{task}" if do_train else (args.model_name_or_path or f"runs/{task}")
    patience, exit_rules = exit_rules_from_args(args)
    if args.warmup_ratio is not None and not 0 <= args.warmup_ratio < 1:  # NaN fails too
        raise ValueError(f"--warmup_ratio must be a fraction of all steps in [0, 1), got {args.warmup_ratio!r}")
    warmup = args.warmup_ratio if args.warmup_ratio is not None else args.warmup_steps
    train = None
    if do_train:
        train = TrainSettings(
            output_dir=output_dir,
            learning_rate=args.learning_rate if args.learning_rate is not None else 5e-5,
            classifier_learning_rate=args.classifier_learning_rate,
            num_train_epochs=args.num_train_epochs if args.num_train_epochs is not None else 3.0,
            max_steps=args.max_steps,
            per_device_train_batch_size=args.train_batch_size if args.train_batch_size is not None else 32,
            per_device_eval_batch_size=max(args.eval_batch_sizes or [32]),
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            weight_decay=args.weight_decay,
            adam_epsilon=args.adam_epsilon,
            max_grad_norm=args.max_grad_norm,
            warmup_steps=warmup if warmup is not None else 0.1,
            logging_steps=args.logging_steps,
            save_steps=args.save_steps,
            seed=args.seed,
            fp16=args.fp16,
            bf16=args.bf16,
            train_sampling_strategy=args.train_sampling_strategy or "group_by_length",
            use_cpu=args.use_cpu,
            evaluate_during_training=args.evaluate_during_training,
            resume_from_checkpoint=args.resume_from_checkpoint,
            save_total_limit=args.save_total_limit,
            disable_tqdm=True if args.disable_tqdm else None,
        )
    return RunSettings(
        output_dir=output_dir,
        task_name=args.task_name,
        data_dir=args.data_dir,
        model_name_or_path=args.model_name_or_path,
        model_type=args.model_type,
        tokenizer_name=args.tokenizer_name,
        cache_dir=args.cache_dir,
        train_file=args.train_file,
        validation_file=args.validation_file,
        test_file=args.test_file,
        text_columns=tuple(c.strip() for c in args.text_columns.split(",") if c.strip()),
        label_column=args.label_column or None,
        label_list=tuple(x.strip() for x in args.label_list.split(",")) if args.label_list else None,
        regression=args.regression,
        do_train=do_train,
        do_eval=do_eval,
        do_predict=do_predict,
        do_lower_case=args.do_lower_case,
        max_seq_length=args.max_seq_length,
        patience=patience,
        exit_rules=exit_rules,
        regression_threshold=args.regression_threshold,
        eval_batch_sizes=args.eval_batch_sizes or [32],
        timing_rounds=args.timing_rounds,
        eval_all_checkpoints=args.eval_all_checkpoints,
        overwrite_output_dir=args.overwrite_output_dir,
        max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples,
        loss_weighting=args.loss_weighting,
        pooling=args.pooling,
        regression_head_init=args.regression_head_init,
        progress=not args.disable_tqdm,
        train=train,
    )


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
    probe = argparse.ArgumentParser(add_help=False)
    _add_common(probe, seed=False)
    typed = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    for action in probe._actions:
        main, *aliases = action.option_strings or [""]
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
        settings = _settings_or_exit(args, prog, argv, True, not args.no_eval, args.do_predict)
    elif args.command == "eval":
        settings = _settings_or_exit(args, prog, argv, False, True, args.do_predict)
    else:
        settings = _settings_or_exit(args, prog, argv, False, False, True)
    return _execute(settings, prog)


def _dispatch(argv: list[str]) -> int | None:
    """Run the subcommands that live in their own modules (raw-text predict, serve); None for the others."""
    from .cli_predict import is_raw_text_mode

    if is_raw_text_mode(argv):
        from .cli_predict import main as predict_main

        return predict_main(argv[1:])
    if argv and argv[0] == "serve":
        from .serving.cli import main as serve_main

        return serve_main(argv[1:])
    return None


def seed_main(argv: list[str] | None = None) -> int:
    """Entry point of ``run_glue_with_pabee.py`` (the reference script's flags)."""
    parser = seed_parser()
    args = parser.parse_args(argv)
    _check_exit_args(parser, args)
    _setup_logging()
    if not args.task_name and not (args.train_file or args.validation_file):
        print("run_glue_with_pabee.py: error: --task_name is required", file=sys.stderr)
        return 2
    prog = "run_glue_with_pabee.py"
    settings = _settings_or_exit(args, prog, argv, args.do_train, args.do_eval, args.do_predict)
    return _execute(settings, prog)


if __name__ == "__main__":
    sys.exit(main())
