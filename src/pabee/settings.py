"""The run's settings: the one place holding every default, the help of every flag and the validation.

:class:`RunSettings` (one run: data, model, exit rules, evaluation) and :class:`TrainSettings` (fine-tuning, names
as in ``transformers.TrainingArguments``) are plain dataclasses for Python users. Each field's metadata holds its
command-line help and spellings; :mod:`pabee.cli_args` builds the ``pabee`` and ``run_glue_with_pabee.py`` parsers
from them, so a default or a help text is written once, here. Values are checked once, in ``__post_init__``
(:mod:`pabee.validation`), with messages naming the flag.

This module imports neither torch nor transformers: building a parser (``pabee train --help``) stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from .validation import check_exit_rules, check_run_settings, check_train_settings

if TYPE_CHECKING:
    from .exit_rules import ExitRule

# the front ends a flag can appear in: the reference script and the pabee subcommands
SEED, TRAIN, EVAL, PREDICT = "seed", "train", "eval", "predict"
EVERYWHERE = (SEED, TRAIN, EVAL, PREDICT)
# the front ends of a saved model (pabee.predict_settings, pabee.serving.settings): pabee predict MODEL, pabee serve
PREDICT_TEXT, SERVE = "predict_text", "serve"


def setting(default: Any = MISSING, *, help: str, default_factory: Callable[[], Any] | Any = MISSING,
            flag: str | None = None, aliases: Sequence[str] = (), parse: Callable[[str], Any] | None = None,
            choices: Sequence[str] | None = None, nargs: str | None = None, const: Any = None,
            fronts: Sequence[str] = EVERYWHERE, spellings: Sequence[dict] = (), required_in: Sequence[str] = ()):
    """A dataclass field with its command-line description in ``metadata``.

    ``help``: the flag's help (also the field's documentation). ``flag``: the main spelling (default
    ``--<field name>``; a name without dashes, e.g. ``"model"``, makes a required positional argument); ``aliases``: other spellings (e.g. the reference script's ``--per_gpu_*``). ``parse``:
    text -> value (default: from the field's type; booleans are ``store_true`` switches). ``fronts``: the front ends
    offering the flag (``()``: no flag, e.g. a value derived from others). ``spellings``: extra flags writing the
    same field with their own argparse keywords (e.g. ``{"flag": "--group_by_length", "action": "store_const",
    "const": "group_by_length", "help": ...}``). ``required_in``: front ends where the flag must be given.
    """
    metadata = {"help": help, "flag": flag, "aliases": tuple(aliases), "parse": parse, "choices": choices,
                "nargs": nargs, "const": const, "fronts": tuple(fronts), "spellings": tuple(spellings),
                "required_in": tuple(required_in)}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def comma_ints(flag: str) -> Callable[[str], list[int]]:
    """A parser of ``"3,4,5"`` -> ``[3, 4, 5]`` for ``flag`` (the values' ranges are the settings' checks)."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(part) for part in text.split(",") if part.strip() != ""]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} must be a comma-separated list of integers, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"{flag} is empty")
        return values

    parse.__name__ = "comma-separated integers"  # what argparse calls the type in its own messages
    return parse


def comma_strings(text: str) -> tuple[str, ...]:
    """``"a, b"`` -> ``("a", "b")``."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def optional_text(text: str) -> str | None:
    """The text, or None for an empty string (``--label_column ""``: no label column)."""
    return text or None


def warmup_fraction(text: str) -> float:
    """``--warmup_ratio``: the transformers spelling of a fractional ``--warmup_steps`` (a number in [0, 1))."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"--warmup_ratio must be a fraction of all steps in [0, 1), got {text!r}")
    return value


def fraction_or_count(text: str) -> float | int:
    """``pabee train --tune_split``: ``"0.1"`` -> 0.1 (a fraction of the training examples), ``"500"`` -> 500."""
    try:
        value: float | int = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
    if isinstance(value, int) and value < 1 or isinstance(value, float) and not 0 < value < 1:  # NaN fails too
        raise argparse.ArgumentTypeError(
            f"--tune_split must be a fraction in (0, 1) or a number of training examples >= 1, got {text!r}")
    return value


def max_drop_points(text: str) -> float:
    """``--max_drop``: points of the main metric (x 100), a number from 0 to 100."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 100:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a number of points (metric x 100) from 0 to 100, got {text!r}")
    return value


def _default_exit_rules() -> list:
    from .exit_rules import ExitRule

    return [ExitRule("patience", 0)]


@dataclass
class TrainSettings:
    """Training hyper-parameters (names and conventions follow ``transformers.TrainingArguments``)."""

    output_dir: str = setting(help="where the model and checkpoints are written", fronts=())
    learning_rate: float = setting(5e-5, help="peak learning rate of the backbone (AdamW)")
    classifier_learning_rate: float | None = setting(
        None, help="learning rate of the internal classifiers (default: 20 x --learning_rate)")
    num_train_epochs: float = setting(3.0, help="epochs to train (unless --max_steps is given)")
    max_steps: int = setting(-1, help="optimizer steps to train; overrides --num_train_epochs (-1: by epochs)")
    per_device_train_batch_size: int = setting(
        32, help="training batch size per device", aliases=("--per_gpu_train_batch_size",))
    per_device_eval_batch_size: int = setting(
        32, help="batch size of the evaluation during training (the CLI: the largest --per_device_eval_batch_size)",
        fronts=())
    gradient_accumulation_steps: int = setting(1, help="batches accumulated per optimizer step")
    weight_decay: float = setting(0.0, help="AdamW weight decay")
    adam_epsilon: float = setting(1e-8, help="AdamW epsilon")
    max_grad_norm: float = setting(1.0, help="gradient clipping norm (0: no clipping)")
    warmup_steps: float = setting(
        0.1, help="steps, or a fraction of all steps if < 1",
        spellings=({"flag": "--warmup_ratio", "type": warmup_fraction,
                    "help": "warmup as a fraction of all steps (same as a --warmup_steps < 1)"},))
    logging_steps: int = setting(50, help="log the training loss every this many steps")
    save_steps: int = setting(500, help="write a checkpoint (and evaluate, with --evaluate_during_training) every "
                                        "this many steps")
    seed: int = setting(42, help="random seed of the fresh classifiers, the shuffling and dropout")
    fp16: bool = setting(False, help="float16 mixed precision (CUDA only)")
    bf16: bool = setting(False, help="bfloat16 mixed precision (CUDA GPUs with bf16, or CPUs with AVX512-BF16/AMX)")
    train_sampling_strategy: str = setting(
        "group_by_length", choices=("group_by_length", "random"),
        help="group_by_length: batches of similar lengths, so dynamic padding adds few pad tokens (about 2x faster "
             "on RTE); random: plain shuffling",
        spellings=({"flag": "--group_by_length", "action": "store_const", "const": "group_by_length",
                    "help": "same as --train_sampling_strategy group_by_length"},))
    use_cpu: bool = setting(False, help="train on the CPU even if a GPU is available", aliases=("--no_cuda",))
    evaluate_during_training: bool = setting(False, help="evaluate the dev set at every checkpoint")
    resume_from_checkpoint: str | bool | None = setting(
        None, nargs="?", const="last",
        help="continue from the last checkpoint in output_dir (or from the given one)")
    save_total_limit: int | None = setting(None, help="keep only this many checkpoints (default: all)")
    disable_tqdm: bool | None = setting(None, help="no progress bars")

    def __post_init__(self) -> None:
        check_train_settings(self)  # ValueError naming the flag, before any work


@dataclass
class RunSettings:
    """Everything one run needs. ``model_name_or_path=None`` uses the embedded default (MiniLM-L6).

    ``exit_rules`` are the exit rules evaluated (and used for predictions): :class:`pabee.exit_rules.ExitRule`
    objects or ``"kind:value"`` strings. On the command line they are spelt ``--patience 3,4,5`` or ``--exit_rule
    KIND --exit_values a,b``. Full depth (patience 0) is always evaluated as the baseline.
    """

    output_dir: str = setting(
        help="where results, plots and predictions are written (default: runs/<task> when training, else the "
             "model folder)", required_in=(SEED,))
    task_name: str | None = setting(
        None, help="GLUE task: CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI")
    data_dir: str | None = setting(None, help="the task's GLUE folder (default: $GLUE_DIR/<task>)")
    model_name_or_path: str | None = setting(
        None, help="encoder checkpoint (folder or hub id) or pabee folder (default: the embedded MiniLM-L6)")
    model_type: str | None = setting(None, help="architecture check: bert, albert, mpnet, roberta, ...")
    tokenizer_name: str | None = setting(None, help="tokenizer folder or hub id (default: the model's)")
    cache_dir: str | None = setting(None, help="cache folder for hub downloads")
    train_file: str | None = setting(None, help="custom CSV/TSV/JSON Lines training file")
    validation_file: str | None = setting(None, help="custom CSV/TSV/JSON Lines dev file")
    test_file: str | None = setting(None, help="custom CSV/TSV/JSON Lines file to predict")
    text_columns: tuple[str, ...] = setting(
        ("sentence",), parse=comma_strings, help="custom files: comma-separated text column(s)")
    label_column: str | None = setting("label", parse=optional_text, help="custom files: the label column")
    label_list: tuple[str, ...] | None = setting(
        None, parse=comma_strings,
        help="custom files: comma-separated labels in id order for training from a plain encoder (default: the "
             "training file's sorted labels); a fine-tuned model uses the labels saved with it, and a --label_list "
             "must repeat them in the same order")
    regression: bool = setting(False, help="custom files: the label is a number")
    do_train: bool = setting(False, help="fine-tune", fronts=(SEED,))
    do_eval: bool = setting(False, help="evaluate the dev set over the exit rules", fronts=(SEED,))
    do_predict: bool = setting(False, help="write test-set predictions", fronts=(SEED, TRAIN, EVAL))
    do_lower_case: bool = setting(False, help="lower-case the inputs")
    max_seq_length: int = setting(128, help="longest input in tokens; capped, with a warning, at what the model takes")
    exit_rules: list[ExitRule] = setting(
        default_factory=_default_exit_rules, fronts=(),
        help="the exit rules evaluated (--patience / --exit_rule and --exit_values on the command line)")
    regression_threshold: float | None = setting(
        None, help="regression tasks: two layers agree when their predictions differ by less than this")
    tune_split: float | int | None = setting(
        None, parse=fraction_or_count, aliases=("--tune-split",), fronts=(SEED, TRAIN),
        help="hold this fraction (0.1) or number (500) of the training examples out of training, drawn with "
             "--seed, to tune the exit rule on (listed in OUTPUT_DIR/tune_split.json; later: pabee tune RUN_DIR "
             "--tune_split heldout)")
    max_drop: float = setting(
        0.5, parse=max_drop_points, aliases=("--max-drop",), fronts=(SEED, TRAIN),
        help="with several exit rules (--patience 1,2,3,...), training ends with pabee tune: the fastest exit "
             "setting whose main metric is at most this many points (x 100) below full depth, on the --tune_split "
             "examples (else dev), becomes the saved default")
    eval_batch_sizes: list[int] = setting(
        default_factory=lambda: [32], flag="--per_device_eval_batch_size", aliases=("--per_gpu_eval_batch_size",),
        parse=comma_ints("eval batch size"), help="one size or several, e.g. 1,32")
    timing_rounds: int = setting(
        1, help="timed passes over the dev set per batch size, the exit rules taking turns on blocks of "
                "consecutive batches; eval_seconds is their mean (more rounds: steadier wall-clock speed-ups)")
    eval_all_checkpoints: bool = setting(False, help="evaluate every checkpoint-N in the output folder too")
    overwrite_output_dir: bool = setting(False, help="train into an output folder that holds a previous run")
    max_train_samples: int | None = setting(None, help="train on the first N examples only")
    max_eval_samples: int | None = setting(None, help="evaluate on the first N examples only")
    loss_weighting: str | None = setting(
        None, choices=("linear", "uniform", "last"),
        help="linear: PABEE's i/sum(i) (default); uniform; last: plain fine-tuning of the last classifier")
    distillation_alpha: float | None = setting(
        None, fronts=(SEED, TRAIN),
        help="self-distillation: every internal classifier but the last learns (1 - alpha) x its label loss + alpha x "
             "the KL divergence to the last classifier's softened predictions (regression: the squared error to "
             "its prediction), under the layer weighting (default: 0 = off, or the value saved with a pabee model)")
    distillation_temperature: float | None = setting(
        None, fronts=(SEED, TRAIN),
        help="softmax temperature T of --distillation_alpha's KL term, scaled by T^2 (default: 2, or the value "
             "saved with a pabee model)")
    pooling: str | None = setting(
        None, choices=("cls", "mean"),
        help="what the internal classifiers read (default: the model's own sentence-transformers pooling if it "
             "declares one, else cls = the pooler on the first token)")
    regression_head_init: str = setting(
        "zero", choices=("zero", "mean"),
        help="regression tasks trained from fresh heads: start every head's bias at 0 (default, as transformers "
             "does) or at the mean training label (helps short runs, see README)")
    backend: str = setting(
        "torch", choices=("torch", "onnx"), fronts=(EVAL, PREDICT),
        help="torch, or onnx: the model folder was written by pabee export and runs on ONNX Runtime (records and "
             "tables name its checkpoints final@onnx / final@onnx-int8)")
    threads: int | None = setting(
        None, fronts=(EVAL, PREDICT),
        help="intra-op CPU threads of evaluation and predictions, torch and ONNX Runtime alike (default: torch's)")
    progress: bool = setting(True, help="progress bars (the CLI: off with --disable_tqdm)", fronts=())
    train: TrainSettings | None = setting(None, help="training hyper-parameters (None: the defaults)", fronts=())

    def __post_init__(self) -> None:
        self.exit_rules = check_exit_rules(self.exit_rules)
        check_run_settings(self)  # ValueError naming the flag, before any work


@dataclass
class ReferenceScriptOnly:
    """Flags of the reference script that change nothing here; accepted so its commands run verbatim."""

    overwrite_cache: bool = setting(False, help="accepted for compatibility (no cache is kept)", fronts=(SEED,))
    config_name: str | None = setting(None, help="accepted for compatibility", fronts=(SEED,))
    fp16_opt_level: str = setting("O1", help="accepted for compatibility (apex is not used)", fronts=(SEED,))
    local_rank: int = setting(-1, help="accepted for compatibility (use torchrun)", fronts=(SEED,))
    server_ip: str = setting("", help="accepted for compatibility", fronts=(SEED,))
    server_port: str = setting("", help="accepted for compatibility", fronts=(SEED,))


def default_of(cls: type, name: str) -> Any:
    """The default of field ``name`` of settings dataclass ``cls`` (read by code that must not restate it)."""
    for f in fields(cls):
        if f.name == name:
            if f.default_factory is not MISSING:
                return f.default_factory()
            if f.default is MISSING:
                raise ValueError(f"{cls.__name__}.{name} has no default")
            return f.default
    raise ValueError(f"{cls.__name__} has no field {name!r}")
