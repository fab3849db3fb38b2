#!/usr/bin/env python
"""Regenerate the results report: plain fine-tuning against PABEE and other exit rules, on GLUE dev sets.

    python benchmarks/report.py            # the full report into docs/results.{md,json} (many hours on 2 CPU cores)
    python benchmarks/report.py --quick    # smoke run (minutes): MiniLM, RTE, one seed, 200 training examples

    # train first, two processes at once (one thread each), then evaluate and render with one plain invocation
    OMP_NUM_THREADS=1 python benchmarks/report.py --train-only --shard 1/2 &
    OMP_NUM_THREADS=1 python benchmarks/report.py --train-only --shard 2/2 &
    wait; python benchmarks/report.py

For every model, task and seed two models are fine-tuned with the same hyper-parameters and seed:

* ``plain``: one classifier on the last layer (loss weighting "last"), evaluated at full depth;
* ``pabee``: PABEE's joint training of every layer's classifier (the default weighting), evaluated in one harness
  (:func:`pabee.runner.run`) under every exit rule: patience, entropy and confidence thresholds, fixed layer
  (regression tasks: patience and fixed layer), plus full depth, at batch sizes 1 and 32.

The hyper-parameters may differ between models (``MODEL_DEFAULTS``; ``--epochs``, ``--learning-rate``,
``--max-train-samples`` and ``--batch-size`` take a value for every model or ``MODEL=VALUE`` for one). Every
evaluation interleaves all exit rules (in blocks of consecutive batches; batch by batch before) and makes
``--timing-rounds`` timed rounds (eval time = the mean over the rounds).

Each run trains into its own folder under ``--work-dir``. A folder that already holds the finished run (its
``eval_results.json`` has every expected record) is reused, so an interrupted report resumes where it stopped; a
folder whose training finished but whose evaluation did not (or that ``--train-only`` trained) is only evaluated.
``--train-only`` trains the new runs and stops there; with ``--shard K/N`` it takes only every N-th run of the plan
(from the K-th), so N processes can train disjoint parts at once. ``report_run.json`` in every run folder keeps the
run's settings, its training and evaluation seconds and how it was trained (torch threads, shard).

The stages are plan (which runs) -> run (train and evaluate, or reuse) -> aggregate (means over seeds, picks,
verdicts) -> render (``results.json``, ``results.md`` and plots under ``results/`` in ``--out-dir``). The text
between ``<!-- discussion -->`` and ``<!-- /discussion -->`` in an existing ``results.md`` is kept.
Only the first dev split of a task is reported (every default task has one).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from transformers import AutoConfig  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from pabee.backbones import get_driver  # noqa: E402
from pabee.bench import machine_info, mean_std  # noqa: E402
from pabee.config import atomic_write_text, is_pabee_folder  # noqa: E402
from pabee.evaluate import INTERLEAVE_EXAMPLES, RESULTS_NAME  # noqa: E402
from pabee.exit_rules import ExitRule  # noqa: E402
from pabee.runner import RunSettings, default_model_path, load_task_data, run  # noqa: E402
from pabee.tasks import TaskSpec, get_task  # noqa: E402
from pabee.train import CLASSIFIER_LR_RATIO, TrainSettings  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "benchmarks/report.py"

MODELS = ("minilm", "mpnet")
DEFAULT_TASKS = {"minilm": ("RTE", "MRPC", "STS-B", "CoLA", "SST-2"), "mpnet": ("RTE", "MRPC", "STS-B")}
QUICK_TASKS = ("RTE",)
MULTI_SEED_TASKS = ("rte", "mrpc", "sts-b")  # TaskSpec.name of the tasks that get several seeds by default
MULTI_SEEDS, ONE_SEED = (42, 43, 44), (42,)
# Training hyper-parameters per model for the full report (a flag, for every model or MODEL=VALUE, overrides them).
# max_train_samples None: every training example.
MODEL_DEFAULTS = {
    "minilm": {"epochs": 5.0, "learning_rate": 5e-5, "max_train_samples": None, "batch_size": 32,
               "precision": "fp32", "max_eval_samples": None},
    # MPNet-base is about 6x MiniLM's cost per token on the CPU and its dev evaluation sweeps 39 exit rules at two
    # batch sizes: to fit a 2-core CPU it trains 2 epochs on the first 2000 training examples (bf16 autocast halves
    # the training time) and is evaluated on the first 200 dev examples; the report states both subsets.
    "mpnet": {"epochs": 2.0, "learning_rate": 5e-5, "max_train_samples": 2000, "batch_size": 32,
              "precision": "bf16", "max_eval_samples": 200},
}
# --quick: the same for every model, and fewer dev examples and timing rounds
QUICK = {"epochs": 1.0, "learning_rate": 5e-5, "max_train_samples": 200, "batch_size": 32, "precision": "fp32",
         "max_eval_samples": 100, "timing_rounds": 1}
TASK_EPOCHS = {"sst-2": 2.0}  # full report: epochs of tasks with large training sets (TaskSpec.name -> epochs)
MAX_SEEDS = {"minilm": None, "mpnet": 1}  # full report: how many of each task's seeds a model runs (None: all)
HYPER_FLAGS = {"epochs": "--epochs", "learning_rate": "--learning-rate", "max_train_samples": "--max-train-samples",
               "batch_size": "--batch-size", "precision": "--precision",
               "max_eval_samples": "--max-eval-samples"}  # ModelHyper field -> its flag
PRECISIONS = ("fp32", "bf16")  # of training (bf16: mixed-precision autocast); evaluation always runs in fp32
RUN_KEY_ADDED = {"batch_size": 32, "precision": "fp32"}  # run-key entries added later: the value of folders written without them
DEFAULT_TIMING_ROUNDS = 3
BATCH_SIZES = (1, 32)
PLAIN, PABEE = "plain", "pabee"
METHODS = (PLAIN, PABEE)

ENTROPY_FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # of ln C, the largest possible entropy
CONFIDENCES = (0.55, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)  # only those > 1/C are used
OTHER_KINDS = ("entropy", "confidence", "layer")  # rules matched to the patience points by layer speed-up

LAYER_SPEEDUP_TARGETS = {"minilm": 1.3, "mpnet": 1.6}
WALL_TO_LAYER_TARGETS = {1: 0.95, 32: 0.85}  # batch size -> minimum wall-clock / layer speed-up
QUALITY_TOLERANCE = 0.005  # "within 0.5 points" of plain fine-tuning, in metric units

RUN_META = "report_run.json"  # written by this script into every run folder: settings, seconds, conditions
DISCUSSION_START, DISCUSSION_END = "<!-- discussion -->", "<!-- /discussion -->"
DISCUSSION_PLACEHOLDER = "_Hand-written discussion goes here. This block is kept when the report is regenerated._"
MPNET_HINT = (
    "get it with ../shared/models/get-mpnet-base.sh DEST, then pass --mpnet-path DEST or set PABEE_MPNET_PATH"
)


class ReportError(Exception):
    """A problem reported as one line (exit code 2)."""


# ---------------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class ModelSpec:
    """One encoder: its report name, where it is loaded from, and its depth (read from its config)."""

    name: str
    path: str
    model_type: str
    num_layers: int


@dataclass(frozen=True)
class RunSpec:
    """One (model, task, seed, method) run, its exit rules (full depth is added by the harness) and folder."""

    model: ModelSpec
    task: TaskSpec
    seed: int
    method: str
    rules: tuple[ExitRule, ...]
    output_dir: Path

    @property
    def label(self) -> str:
        return f"{self.model.name} {self.task.folder} seed {self.seed} {self.method}"


@dataclass(frozen=True)
class ModelHyper:
    """One model's training hyper-parameters, resolved from MODEL_DEFAULTS (or QUICK) and the flags.

    ``task_epochs`` overrides ``epochs`` for some tasks (TaskSpec.name -> epochs): a large training set such as
    SST-2's needs fewer passes than RTE's.
    """

    epochs: float
    learning_rate: float
    max_train_samples: int | None  # None: every training example
    batch_size: int
    precision: str = "fp32"
    max_eval_samples: int | None = None  # None: every dev example
    task_epochs: dict[str, float] = field(default_factory=dict)

    def epochs_for(self, task: TaskSpec | None) -> float:
        return self.epochs if task is None else self.task_epochs.get(task.name, self.epochs)


@dataclass
class ReportConfig:
    """Everything the report needs, resolved from the command line."""

    models: list[ModelSpec]
    tasks: dict[str, list[TaskSpec]]  # model name -> tasks
    seeds: dict[str, list[int]]  # TaskSpec.name -> seeds
    hyper: dict[str, ModelHyper]  # model name -> its training hyper-parameters
    timing_rounds: int
    work_dir: Path
    out_dir: Path
    glue_dir: str | None
    model_paths: dict[str, str]  # paths given on the command line (--model-path, --mpnet-path)
    quick: bool
    argv: list[str]
    train_only: bool = False
    shard: tuple[int, int] | None = None  # (K, N): only the runs whose plan index % N == K - 1
    max_seeds: dict[str, int | None] = field(default_factory=dict)  # model name -> first N seeds of each task

    def seeds_for(self, model: str, task: TaskSpec) -> list[int]:
        seeds = self.seeds[task.name]
        limit = self.max_seeds.get(model)
        return seeds if limit is None else seeds[:limit]

    def train_settings(
        self, model: str, output_dir: str = "", seed: int = 42, task: TaskSpec | None = None
    ) -> TrainSettings:
        """The training hyper-parameters of every run of ``model`` (only the seed and folder differ between runs).

        Checkpoints are written only at the end (the Trainer always saves one there) and deleted after the run:
        an interrupted run is trained again from the start, so that its training time stays comparable.
        """
        h = self.hyper[model]
        return TrainSettings(
            output_dir=output_dir, seed=seed, num_train_epochs=h.epochs_for(task), learning_rate=h.learning_rate,
            per_device_train_batch_size=h.batch_size, save_steps=10**9, disable_tqdm=True,
            bf16=h.precision == "bf16",
        )

    def run_key(self, spec: RunSpec) -> dict:
        """What a finished run must have been trained with to be reused (JSON-ready). The timing rounds are not
        part of it: a run evaluated with other rounds is reused as it is."""
        h = self.hyper[spec.model.name]
        return {
            "model": spec.model.name, "task": spec.task.folder, "seed": spec.seed, "method": spec.method,
            "epochs": h.epochs_for(spec.task), "learning_rate": h.learning_rate, "batch_size": h.batch_size, "precision": h.precision,
            "max_train_samples": h.max_train_samples, "max_eval_samples": h.max_eval_samples,
        }

    @property
    def shard_label(self) -> str | None:
        return None if self.shard is None else f"{self.shard[0]}/{self.shard[1]}"


def comma_list(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return values


def model_list(text: str) -> list[str]:
    names = [name.lower() for name in comma_list(text)]
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    return names


def task_list(text: str) -> list[TaskSpec]:
    try:
        return [get_task(name) for name in comma_list(text)]
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def seed_list(text: str) -> list[int]:
    try:
        return [int(part) for part in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}") from None


def name_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def precision(text: str) -> str:
    value = text.strip().lower()
    if value not in PRECISIONS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(PRECISIONS)}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def sample_count(text: str) -> int | None:
    """A positive number of examples, or "all" (no limit)."""
    return None if text.strip().lower() == "all" else positive_int(text)


TASK_PREFIX = "task:"  # per_model(..., tasks=True) marks a TASK=VALUE entry as ("task:<TaskSpec.name>", value)


def per_model(
    convert: Callable[[str], object], tasks: bool = False
) -> Callable[[str], tuple[str | None, object]]:
    """The argparse type of a flag given as VALUE (every model) or MODEL=VALUE (one model): -> (model or None,
    value). With ``tasks``, TASK=VALUE (a GLUE task name) is accepted too -> ("task:<name>", value)."""

    def parse(text: str) -> tuple[str | None, object]:
        name, sep, value = text.partition("=")
        if not sep:
            return None, convert(text.strip())
        model = name.strip().lower()
        if model not in MODELS:
            if tasks:
                try:
                    return TASK_PREFIX + get_task(name.strip()).name, convert(value.strip())
                except ValueError:
                    pass
            what = "model or task" if tasks else "model"
            raise argparse.ArgumentTypeError(f"unknown {what} {name.strip()!r} in {text!r}; choose from "
                                             f"{', '.join(MODELS)}" + (" or a GLUE task" if tasks else ""))
        return model, convert(value.strip())

    parse.__name__ = convert.__name__
    return parse


def shard_spec(text: str) -> tuple[int, int]:
    """"K/N" with 1 <= K <= N -> (K, N)."""
    k, sep, n = text.partition("/")
    try:
        shard = int(k), int(n)
    except ValueError:
        shard = 0, 0
    if not sep or not 1 <= shard[0] <= shard[1]:
        raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N, got {text!r}")
    return shard


def hyper_default(name: str) -> str:
    """How a per-model default reads in --help: "minilm 3, mpnet 3; --quick 1"."""
    def show(value) -> str:
        return "all" if value is None else value if isinstance(value, str) else f"{value:g}"

    return (", ".join(f"{m} {show(d[name])}" for m, d in MODEL_DEFAULTS.items())
            + f"; --quick {show(QUICK[name])}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=SCRIPT, description="Fine-tune, evaluate every exit rule and write the results report."
    )
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: minilm, {','.join(QUICK_TASKS)}, seed 42, {QUICK['max_train_samples']} "
                        f"training and {QUICK['max_eval_samples']} dev examples, {QUICK['epochs']:g} epoch, "
                        f"{QUICK['timing_rounds']} timing round, into runs/report-quick (explicit flags override "
                        "these)")
    p.add_argument("--models", type=model_list, default=None, help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--tasks", type=task_list, default=None,
                   help="comma-separated GLUE tasks for every model (default: MiniLM RTE,MRPC,STS-B,CoLA,SST-2; "
                        "MPNet RTE,MRPC,STS-B)")
    p.add_argument("--max-seeds", type=per_model(positive_int), action="append", default=None,
                   metavar="[MODEL=]N",
                   help="use only the first N seeds of each task for every model or MODEL=N for one (default: "
                        + ", ".join(f"{m} {'all' if n is None else n}" for m, n in MAX_SEEDS.items())
                        + "; the larger model's runs cost about 6x MiniLM's)")
    p.add_argument("--seeds", action="append", default=None, metavar="[TASK=]SEEDS",
                   help="comma-separated seeds for every task, or TASK=SEEDS for one task (repeatable); default "
                        "42,43,44 for RTE/MRPC/STS-B and 42 for the others")
    per = " for every model, or MODEL=VALUE for one model (repeatable; default"
    p.add_argument("--epochs", type=per_model(positive_float, tasks=True), action="append", default=None,
                   metavar="[MODEL=|TASK=]EPOCHS",
                   help=f"training epochs{per} {hyper_default('epochs')}); TASK=EPOCHS sets one task's epochs for "
                        f"every model (full-report default: {', '.join(f'{get_task(t).folder} {e:g}' for t, e in TASK_EPOCHS.items())})")
    p.add_argument("--learning-rate", type=per_model(positive_float), action="append", default=None,
                   metavar="[MODEL=]LR",
                   help=f"backbone learning rate{per} {hyper_default('learning_rate')})")
    p.add_argument("--max-train-samples", type=per_model(sample_count), action="append", default=None,
                   metavar="[MODEL=]N",
                   help=f"train on the first N examples only, \"all\" for no limit,{per} "
                        f"{hyper_default('max_train_samples')})")
    p.add_argument("--batch-size", type=per_model(positive_int), action="append", default=None,
                   metavar="[MODEL=]N",
                   help=f"training batch size{per} {hyper_default('batch_size')})")
    p.add_argument("--precision", type=per_model(precision), action="append", default=None,
                   metavar="[MODEL=]fp32|bf16",
                   help=f"training precision (bf16 = mixed-precision autocast; evaluation is fp32){per} "
                        f"{hyper_default('precision')})")
    p.add_argument("--max-eval-samples", type=per_model(sample_count), action="append", default=None,
                   metavar="[MODEL=]N",
                   help=f"evaluate on the first N dev examples only, \"all\" for every one,{per} "
                        f"{hyper_default('max_eval_samples')})")
    p.add_argument("--timing-rounds", type=positive_int, default=None, metavar="N",
                   help="timed rounds of every evaluation, all exit rules interleaved in blocks; eval time = "
                        f"the mean over the rounds (default {DEFAULT_TIMING_ROUNDS}; --quick: "
                        f"{QUICK['timing_rounds']}). Not part of a run's settings: finished runs are reused as they "
                        "were timed")
    p.add_argument("--train-only", action="store_true",
                   help="train the runs not trained yet and stop (no evaluation, no report); then run the same "
                        "command without --train-only (and --shard) to evaluate and render")
    p.add_argument("--shard", type=shard_spec, default=None, metavar="K/N",
                   help="with --train-only: train only the runs whose index in the plan %% N is K-1, so N processes "
                        "(e.g. each with OMP_NUM_THREADS=1) train disjoint parts at once")
    p.add_argument("--work-dir", default=None, help="run folders (default runs/report; --quick: runs/report-quick)")
    p.add_argument("--out-dir", default=None,
                   help="where results.json, results.md and results/ go (default docs; --quick: runs/report-quick)")
    p.add_argument("--glue-dir", default=None, help="GLUE root or task folder (default: the runner's lookup)")
    p.add_argument("--mpnet-path", default=None,
                   help="the all-mpnet-base-v2 folder made by ../shared/models/get-mpnet-base.sh "
                        "(default: $PABEE_MPNET_PATH)")
    p.add_argument("--model-path", type=name_value, action="append", default=[], metavar="NAME=PATH",
                   help="load model NAME from PATH (repeatable)")
    return p


def resolve_model(name: str, paths: dict[str, str]) -> ModelSpec:
    """The model's folder (checked) and its depth from its config."""
    if name in paths:
        path = paths[name]
    elif name == "minilm":
        path = default_model_path()
    else:
        path = os.environ.get("PABEE_MPNET_PATH", "")
        if not path:
            raise ReportError(f"no MPNet model given: {MPNET_HINT}")
    if not (Path(path) / "config.json").is_file():
        hint = MPNET_HINT if name == "mpnet" else "give --model-path NAME=PATH"
        raise ReportError(f"{name} model not found at {path}: {hint}")
    config = AutoConfig.from_pretrained(path)
    return ModelSpec(name, str(path), config.model_type, get_driver(config.model_type).num_layers(config))


def seeds_per_task(tasks: Sequence[TaskSpec], seed_args: Sequence[str] | None, quick: bool) -> dict[str, list[int]]:
    """--seeds values ("42,43" for every task, "RTE=42,43" for one) over the defaults."""
    every: list[int] | None = None
    one: dict[str, list[int]] = {}
    try:
        for text in seed_args or []:
            if "=" in text:
                name, values = name_value(text)
                one[get_task(name).name] = list(dict.fromkeys(seed_list(values)))
            else:
                every = list(dict.fromkeys(seed_list(text)))
    except (argparse.ArgumentTypeError, ValueError) as err:
        raise ReportError(f"--seeds: {err}") from None

    def default(task: TaskSpec) -> list[int]:
        return list(ONE_SEED if quick or task.name not in MULTI_SEED_TASKS else MULTI_SEEDS)

    return {t.name: one.get(t.name) or every or default(t) for t in tasks}


def given_or_default(given, quick: bool, quick_default, default):
    """A flag's value when given, else its --quick default in quick mode, else the full report's default."""
    if given is not None:
        return given
    return quick_default if quick else default


def resolve_max_seeds(args: argparse.Namespace, model: str) -> int | None:
    """--max-seeds MODEL=N, else --max-seeds N, else MAX_SEEDS (no limit in --quick mode, which has one seed)."""
    given = args.max_seeds or []
    one = [n for m, n in given if m == model]
    every = [n for m, n in given if m is None]
    default = None if args.quick else MAX_SEEDS.get(model)
    return (one or every or [default])[-1]


def resolve_hyper(args: argparse.Namespace, model: str, quick: bool) -> ModelHyper:
    """One model's hyper-parameters: its MODEL=VALUE flag, else a plain VALUE flag (the last one given wins), else
    the --quick default in quick mode, else MODEL_DEFAULTS."""
    values = {}
    for name in HYPER_FLAGS:
        given = getattr(args, name, None) or []
        one = [value for m, value in given if m == model]
        every = [value for m, value in given if m is None]
        default = QUICK[name] if quick else MODEL_DEFAULTS[model][name]
        values[name] = (one or every or [default])[-1]
    task_epochs = {} if quick else dict(TASK_EPOCHS)
    task_epochs.update({m[len(TASK_PREFIX):]: v for m, v in (args.epochs or []) if m and m.startswith(TASK_PREFIX)})
    return ModelHyper(**values, task_epochs=task_epochs)


def make_config(args: argparse.Namespace, argv: list[str]) -> ReportConfig:
    """Resolve defaults (--quick ones where a flag is not given) and check the models exist."""
    quick = args.quick
    if args.shard is not None and not args.train_only:
        raise ReportError("--shard works only with --train-only (evaluate and render with one invocation afterwards)")
    default_dir = REPO_ROOT / "runs" / "report-quick" if quick else None
    out_dir = Path(args.out_dir) if args.out_dir else (default_dir or REPO_ROOT / "docs")
    if quick and out_dir.resolve().is_relative_to((REPO_ROOT / "docs").resolve()):
        raise ReportError("--quick never writes into docs/: give another --out-dir")
    paths = dict(args.model_path)
    unknown = sorted(set(paths) - set(MODELS))
    if unknown:
        raise ReportError(f"--model-path: unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    if args.mpnet_path:
        paths.setdefault("mpnet", args.mpnet_path)
    names = args.models or (["minilm"] if quick else list(MODELS))
    models = [resolve_model(name, paths) for name in dict.fromkeys(names)]
    tasks = {}
    for m in models:
        chosen = args.tasks or [get_task(t) for t in (QUICK_TASKS if quick else DEFAULT_TASKS[m.name])]
        tasks[m.name] = list({t.name: t for t in chosen}.values())
    all_tasks = list({t.name: t for ts in tasks.values() for t in ts}.values())
    return ReportConfig(
        models=models,
        tasks=tasks,
        seeds=seeds_per_task(all_tasks, args.seeds, quick),
        max_seeds={m.name: resolve_max_seeds(args, m.name) for m in models},
        hyper={m.name: resolve_hyper(args, m.name, quick) for m in models},
        timing_rounds=given_or_default(args.timing_rounds, quick, QUICK["timing_rounds"], DEFAULT_TIMING_ROUNDS),
        work_dir=Path(args.work_dir) if args.work_dir else (default_dir or REPO_ROOT / "runs" / "report"),
        out_dir=out_dir,
        glue_dir=args.glue_dir,
        model_paths=paths,
        quick=quick,
        argv=list(argv),
        train_only=args.train_only,
        shard=args.shard,
    )


def exit_rules_for(task: TaskSpec, num_layers: int) -> list[ExitRule]:
    """The rules PABEE is evaluated with: patience and fixed layer 1..L-1, and for classification entropy
    (fractions of ln C) and confidence (thresholds above 1/C). Full depth is added by the harness."""
    depths = range(1, num_layers)
    rules = [ExitRule("patience", t) for t in depths]
    if not task.is_regression:
        classes = task.num_labels
        rules += [ExitRule("entropy", f * math.log(classes)) for f in ENTROPY_FRACTIONS]
        rules += [ExitRule("confidence", c) for c in CONFIDENCES if c > 1 / classes]
    return rules + [ExitRule("layer", k) for k in depths]


def plan_runs(config: ReportConfig) -> list[RunSpec]:
    """Every (model, task, seed, method) run, plain before PABEE."""
    plan = []
    for model in config.models:
        for task in config.tasks[model.name]:
            for seed in config.seeds_for(model.name, task):
                for method in METHODS:
                    rules = exit_rules_for(task, model.num_layers) if method == PABEE else []
                    folder = config.work_dir / model.name / task.folder.lower() / f"{method}-seed{seed}"
                    plan.append(RunSpec(model, task, seed, method, (ExitRule("patience", 0), *rules), folder))
    return plan


# ---------------------------------------------------------------------------------------------------- run


def read_json(path: Path):
    """The parsed file, or None when it is missing or not valid JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def write_json(path: Path, value) -> None:
    """Write atomically (a reader never sees half a file)."""
    atomic_write_text(path, json.dumps(value, indent=2) + "\n")


def _value_key(value: float) -> float:
    return round(float(value), 9)


def record_key(record: dict) -> tuple:
    return record["split"], record["exit_rule"], _value_key(record["exit_value"]), record["batch_size"]


def expected_keys(spec: RunSpec) -> set[tuple]:
    """(split, rule kind, value, batch size) of every record a finished run has."""
    return {(split, rule.kind, _value_key(rule.value), bs)
            for split in spec.task.dev_splits for rule in spec.rules for bs in BATCH_SIZES}


def final_records(spec: RunSpec) -> list[dict]:
    """The run's records of the final model for the expected rules and batch sizes."""
    wanted = expected_keys(spec)
    records = read_json(spec.output_dir / RESULTS_NAME) or []
    return [r for r in records if r.get("checkpoint") == "final" and record_key(r) in wanted]


def run_status(spec: RunSpec, config: ReportConfig) -> str:
    """"done" (reuse), "trained" (evaluate again) or "new" (train). A folder this report did not write, or wrote
    with other settings, is an error: it is never overwritten."""
    folder = spec.output_dir
    if not folder.is_dir() or not any(folder.iterdir()):
        return "new"
    meta = read_json(folder / RUN_META)
    if not isinstance(meta, dict):
        raise ReportError(f"{folder} was not written by this report: remove it or choose another --work-dir")
    want = json.loads(json.dumps(config.run_key(spec)))
    have = meta.get("settings")
    have = {**RUN_KEY_ADDED, **have} if isinstance(have, dict) else {}
    if have != want:
        diff = ", ".join(f"{k} {have.get(k)!r} != {v!r}" for k, v in want.items() if have.get(k) != v)
        raise ReportError(f"{folder} holds a run with other settings ({diff}): remove it or choose another --work-dir")
    if {record_key(r) for r in final_records(spec)} == expected_keys(spec):
        return "done"
    if (folder / "trainer_state.json").is_file() and is_pabee_folder(folder):
        return "trained"
    return "new"


def run_settings(spec: RunSpec, config: ReportConfig, train: bool) -> RunSettings:
    """The runner's settings: train the run (no evaluation), or evaluate the trained model in its folder."""
    folder = str(spec.output_dir)
    common = dict(output_dir=folder, task_name=spec.task.folder, data_dir=config.glue_dir, progress=False)
    if not train:
        return RunSettings(
            **common, model_name_or_path=folder, do_eval=True, exit_rules=list(spec.rules),
            eval_batch_sizes=list(BATCH_SIZES), max_eval_samples=config.hyper[spec.model.name].max_eval_samples,
            timing_rounds=config.timing_rounds,
        )
    return RunSettings(
        **common, model_name_or_path=spec.model.path, do_train=True, overwrite_output_dir=True,
        max_train_samples=config.hyper[spec.model.name].max_train_samples,
        loss_weighting="last" if spec.method == PLAIN else None,
        train=config.train_settings(spec.model.name, folder, spec.seed, spec.task),
    )


def _timed_run(settings: RunSettings, folder: Path) -> float:
    """pabee.runner.run with its printed output appended to the folder's run.log; -> seconds taken."""
    start = time.perf_counter()
    with open(folder / "run.log", "a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        run(settings)
    return time.perf_counter() - start


def execute_run(spec: RunSpec, status: str, config: ReportConfig, evaluate: bool = True) -> dict[str, float]:
    """Train (status "new") and then, when ``evaluate``, evaluate one run (status "new" or "trained"); its printed
    output goes to run.log. -> the seconds taken: {"train_s": ..., "eval_s": ...} (what was done).

    RUN_META keeps the run key ("settings"), "elapsed_s" (every invocation's seconds on the run), "train_s" and
    "training" (torch threads and shard of the training process), "eval_s" and "evaluation" (threads, timing rounds)
    of the last evaluation. Training and evaluation may happen in different invocations (--train-only)."""
    folder = spec.output_dir
    taken: dict[str, float] = {}
    if status == "new":
        shutil.rmtree(folder, ignore_errors=True)  # a run of this report that did not finish: start it afresh
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"settings": config.run_key(spec), "elapsed_s": 0.0}
        write_json(folder / RUN_META, meta)  # from now on the folder is known as this report's
        taken["train_s"] = _timed_run(run_settings(spec, config, train=True), folder)
        for checkpoint in folder.glob("checkpoint-*"):  # only needed to resume training, which the report never does
            shutil.rmtree(checkpoint, ignore_errors=True)
        meta["train_s"] = taken["train_s"]
        meta["training"] = {"torch_threads": torch.get_num_threads(), "shard": config.shard_label,
                            "train_only": config.train_only}
        meta["elapsed_s"] += taken["train_s"]
        write_json(folder / RUN_META, meta)
    else:
        meta = read_json(folder / RUN_META)
        if not isinstance(meta, dict):  # run_status checked it; it went away since
            raise ReportError(f"{folder / RUN_META} is missing or unreadable: remove {folder} to train it again")
    if evaluate:
        taken["eval_s"] = _timed_run(run_settings(spec, config, train=False), folder)
        meta["eval_s"] = taken["eval_s"]
        meta["evaluation"] = {"torch_threads": torch.get_num_threads(), "timing_rounds": config.timing_rounds}
        meta["elapsed_s"] = float(meta.get("elapsed_s") or 0.0) + taken["eval_s"]
        write_json(folder / RUN_META, meta)
    return taken


def describe_taken(taken: dict[str, float]) -> str:
    """"12.0 s (training 10.0 s, evaluation 2.0 s)"."""
    names = {"train_s": "training", "eval_s": "evaluation"}
    parts = [f"{name} {format_seconds(taken[key])}" for key, name in names.items() if key in taken]
    total = format_seconds(sum(taken.values()))
    return f"{total} ({', '.join(parts)})" if len(parts) > 1 else total


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min {secs:02d} s"


def run_all(plan: Sequence[RunSpec], config: ReportConfig, log: Callable[[str], None]) -> dict[Path, bool]:
    """Reuse, re-evaluate or train every planned run, with one progress line per run. -> {folder: reused}."""
    statuses = [run_status(spec, config) for spec in plan]  # every folder checked before anything runs
    todo = sum(s != "done" for s in statuses)
    trained = sum(s == "trained" for s in statuses)
    log(f"plan: {len(plan)} runs, {len(plan) - todo} reused, {todo} to run ({trained} of them trained already, "
        f"only evaluated) (work dir {config.work_dir})")
    start = time.perf_counter()
    reused = {}
    for i, (spec, status) in enumerate(zip(plan, statuses), start=1):
        prefix = f"({i}/{len(plan)})"
        reused[spec.output_dir] = status == "done"
        if status == "done":
            log(f"{prefix} reused {spec.label} ({spec.output_dir})")
            continue
        what = "train + evaluate" if status == "new" else "evaluate the trained model"
        log(f"{prefix} start {spec.label}: {what} -> {spec.output_dir}")
        taken = execute_run(spec, status, config)
        log(f"{prefix} finished {spec.label} in {describe_taken(taken)} "
            f"(report so far {format_seconds(time.perf_counter() - start)})")
    return reused


def shard_of(plan: Sequence[RunSpec], shard: tuple[int, int] | None) -> list[tuple[int, RunSpec]]:
    """(index in the plan, run) of the runs a --shard K/N invocation handles: index % N == K - 1."""
    if shard is None:
        return list(enumerate(plan))
    k, n = shard
    return [(i, spec) for i, spec in enumerate(plan) if i % n == k - 1]


def train_all(plan: Sequence[RunSpec], config: ReportConfig, log: Callable[[str], None]) -> int:
    """--train-only: train every run (of this shard) that is not trained yet, evaluate nothing. -> runs trained."""
    mine = shard_of(plan, config.shard)
    statuses = [run_status(spec, config) for _, spec in mine]  # this shard's folders checked before anything runs
    todo = sum(s == "new" for s in statuses)
    part = f"shard {config.shard_label}: {len(mine)} of them, " if config.shard else ""
    log(f"plan: {len(plan)} runs, {part}{len(mine) - todo} trained already, {todo} to train "
        f"(train only, work dir {config.work_dir})")
    start = time.perf_counter()
    for (i, spec), status in zip(mine, statuses):
        prefix = f"({i + 1}/{len(plan)})"
        if status != "new":
            what = "evaluated" if status == "done" else "trained, not evaluated"
            log(f"{prefix} skipped {spec.label}: already {what} ({spec.output_dir})")
            continue
        log(f"{prefix} start {spec.label}: train only -> {spec.output_dir}")
        taken = execute_run(spec, status, config, evaluate=False)
        log(f"{prefix} finished {spec.label} in {describe_taken(taken)} "
            f"(training so far {format_seconds(time.perf_counter() - start)})")
    return todo


def without_train_only(argv: Sequence[str]) -> list[str]:
    """The command line without --train-only and --shard K/N (also abbreviated, as argparse accepts them)."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        name = token.split("=", 1)[0]
        if len(name) > 2 and name.startswith("--") and "--train-only".startswith(name):
            continue
        if len(name) > 2 and name.startswith("--") and "--shard".startswith(name):
            skip = "=" not in token
            continue
        out.append(token)
    return out


def training_time(folder: Path) -> dict:
    """train_runtime and epochs from the Trainer's final state, and their ratio (seconds per epoch)."""
    state = read_json(folder / "trainer_state.json") or {}
    final = next((e for e in reversed(state.get("log_history", [])) if "train_runtime" in e), None)
    if final is None:
        return {"train_runtime_s": None, "epochs": None, "train_s_per_epoch": None}
    epochs = final.get("epoch") or state.get("epoch") or state.get("num_train_epochs")
    runtime = float(final["train_runtime"])
    return {"train_runtime_s": runtime, "epochs": epochs, "train_s_per_epoch": runtime / epochs if epochs else None}


def timing_rounds_of(records: Sequence[dict]) -> int | None:
    """The timed rounds the records were evaluated with (the most, if they differ); None for records of an
    evaluation from before the rounds were recorded (one pass per rule, not interleaved)."""
    rounds = [len(r.get("extra", {}).get("eval_seconds_rounds") or []) for r in records]
    return (max(rounds) or None) if rounds else None


def interleaving_of(records: Sequence[dict]) -> str:
    """"blocks" when the records were timed with the exit rules taking turns on blocks of consecutive batches
    (``extra.timing_block_batches``), "batches" for evaluations from before (rules interleaved batch by batch)."""
    if records and all("timing_block_batches" in r.get("extra", {}) for r in records):
        return "blocks"
    return "batches"


def load_run(spec: RunSpec, reused: bool) -> dict:
    """A run's metadata, training time and conditions, evaluation timing and raw records, as stored in
    results.json."""
    meta = read_json(spec.output_dir / RUN_META) or {}
    training = meta.get("training") or {}
    evaluation = meta.get("evaluation") or {}
    records = final_records(spec)
    return {
        "model": spec.model.name, "task": spec.task.folder, "seed": spec.seed, "method": spec.method,
        "output_dir": display_path(spec.output_dir), "reused": reused, "elapsed_s": meta.get("elapsed_s"),
        "train_s": meta.get("train_s"), "eval_s": meta.get("eval_s"),
        "train_threads": training.get("torch_threads"), "train_shard": training.get("shard"),
        "timing_rounds": timing_rounds_of(records), "eval_threads": evaluation.get("torch_threads"),
        "timing_interleaving": interleaving_of(records), **training_time(spec.output_dir), "records": records,
    }


# ---------------------------------------------------------------------------------------------------- aggregate


def rule_label(kind: str, value: float, task: TaskSpec) -> str:
    """"patience 2", "entropy 0.3 ln C", "confidence 0.9", "layer 3"; "full depth" for patience 0."""
    if kind == "patience" and value == 0:
        return "full depth"
    if kind == "entropy":
        return f"entropy {value / math.log(task.num_labels):.3g} ln C"
    return f"{kind} {value:g}"


def point_stats(by_seed: dict[int, dict[int, dict]], task: TaskSpec) -> dict:
    """One rule setting over seeds. by_seed[seed][batch size] = record. Quality and exit layers come from the
    largest batch size (they are the same at every batch size); speed-ups are means over seeds."""
    seeds = sorted(by_seed)
    quality = [by_seed[s][max(by_seed[s])] for s in seeds]
    first = quality[0]
    metrics = {}
    for name in task.metric_names:
        values = [r["metrics"][name] for r in quality]
        mean, std = mean_std(values)
        metrics[name] = {"mean": mean, "std": std, "values": values}
    layer_speedup = mean_std([r["layer_speedup"] for r in quality])[0]
    wall = {}
    for bs in BATCH_SIZES:
        values = [by_seed[s][bs]["wall_speedup"] for s in seeds if by_seed[s].get(bs, {}).get("wall_speedup")]
        wall[str(bs)] = mean_std(values)[0] if len(values) == len(seeds) else None
    histogram: dict[str, int] = {}
    for r in quality:
        for layer, count in r["exit_layer_histogram"].items():
            histogram[layer] = histogram.get(layer, 0) + count
    return {
        "rule": first["exit_rule"], "value": first["exit_value"], "label": "",
        "seeds": seeds, "metrics": metrics, "num_examples": first["num_examples"],
        "avg_exit_layer": mean_std([r["avg_exit_layer"] for r in quality])[0],
        "layer_speedup": layer_speedup,
        "wall_speedup": wall,
        "wall_to_layer": {bs: (w / layer_speedup if w is not None else None) for bs, w in wall.items()},
        "exit_layer_histogram": histogram,
    }


def cross_run_wall_speedup(plain: dict[int, dict[int, dict]], full: dict[int, dict[int, dict]]) -> dict:
    """Plain fine-tuning's speed-up against PABEE full depth at each batch size: PABEE full-depth seconds / plain
    seconds, paired by seed, mean over seeds. Both run the same layers, so this is a noise check (about 1)."""
    out = {}
    for bs in BATCH_SIZES:
        ratios = [full[s][bs]["eval_seconds"] / plain[s][bs]["eval_seconds"] for s in plain
                  if s in full and bs in full[s] and bs in plain[s] and plain[s][bs]["eval_seconds"] > 0]
        out[str(bs)] = mean_std(ratios)[0] if ratios and len(ratios) == len(plain) else None
    return out


def main_mean(point: dict, metric: str) -> float:
    return point["metrics"][metric]["mean"]


def pick_best(patience: Sequence[dict], metric: str) -> dict | None:
    """Highest mean main metric on dev; ties go to the larger layer speed-up."""
    return max(patience, key=lambda p: (round(main_mean(p, metric), 12), p["layer_speedup"]), default=None)


def pick_fastest_within(patience: Sequence[dict], metric: str, reference: float) -> dict | None:
    """The largest layer speed-up among points within QUALITY_TOLERANCE of ``reference`` (or better)."""
    ok = [p for p in patience if main_mean(p, metric) >= reference - QUALITY_TOLERANCE - 1e-12]
    return max(ok, key=lambda p: (p["layer_speedup"], main_mean(p, metric)), default=None)


def match_by_speedup(patience: Sequence[dict], others: Sequence[dict]) -> list[dict]:
    """For every patience point and every other rule kind, the point of that kind whose mean layer speed-up is
    closest. Each matched point appears once, with the patience points it was matched to (``matched_to``)."""
    matched: dict[tuple, dict] = {}
    for target in patience:
        for kind in OTHER_KINDS:
            candidates = [p for p in others if p["rule"] == kind]
            if not candidates:
                continue
            best = min(candidates, key=lambda p: (abs(p["layer_speedup"] - target["layer_speedup"]), p["value"]))
            key = (best["rule"], best["value"])
            matched.setdefault(key, {**best, "matched_to": []})["matched_to"].append(target["label"])
    return sorted(matched.values(), key=lambda p: (OTHER_KINDS.index(p["rule"]), p["value"]))


def verdicts(point: dict | None, model: str) -> dict:
    """Layer speed-up and wall/layer ratios of a picked point against the targets ("met" / "not met")."""
    if point is None:
        return {}
    out = {}
    target = LAYER_SPEEDUP_TARGETS.get(model)
    if target is not None:
        out["layer_speedup"] = {"value": point["layer_speedup"], "target": target,
                                "met": point["layer_speedup"] >= target}
    for bs, minimum in WALL_TO_LAYER_TARGETS.items():
        value = point["wall_to_layer"].get(str(bs))
        out[f"wall_to_layer_bs{bs}"] = {"value": value, "target": minimum,
                                         "met": value is not None and value >= minimum}
    return out


def index_records(runs: Sequence[dict], split: str) -> dict[tuple, dict[int, dict[int, dict]]]:
    """{(method, rule kind, value): {seed: {batch size: record}}} for one split."""
    table: dict[tuple, dict[int, dict[int, dict]]] = {}
    for one in runs:
        for r in one["records"]:
            if r["split"] == split:
                key = (one["method"], r["exit_rule"], _value_key(r["exit_value"]))
                table.setdefault(key, {}).setdefault(one["seed"], {})[r["batch_size"]] = r
    return table


def training_condition(run: dict) -> tuple[int | None, int | None]:
    """(torch threads, number of shards or None) the run was trained with; (None, None) when not recorded."""
    shard = run.get("train_shard")
    return run.get("train_threads"), int(shard.split("/")[1]) if shard else None


def training_ratio(runs: Sequence[dict]) -> dict:
    """Seconds per training epoch of each method (mean over seeds) and PABEE / plain; ``mixed_conditions`` when
    the runs were trained with different torch threads or sharding (the ratio is then less comparable)."""
    per_method = {}
    for method in METHODS:
        values = [r["train_s_per_epoch"] for r in runs if r["method"] == method and r["train_s_per_epoch"]]
        per_method[method] = mean_std(values)[0] if values else None
    plain, pabee = per_method[PLAIN], per_method[PABEE]
    conditions = {training_condition(r) for r in runs if r["train_s_per_epoch"]}
    return {"plain_s_per_epoch": plain, "pabee_s_per_epoch": pabee,
            "ratio": pabee / plain if plain and pabee else None, "mixed_conditions": len(conditions) > 1}


def summarize_task(model: ModelSpec, task: TaskSpec, runs: Sequence[dict]) -> dict:
    """Means over seeds of every point, the matched rows, the picks and their verdicts for one model and task."""
    split = task.dev_splits[0]
    table = index_records(runs, split)
    points = {key: point_stats(by_seed, task) for key, by_seed in table.items()}
    for (method, kind, value), point in points.items():
        point["label"] = "plain fine-tuning" if method == PLAIN else rule_label(kind, value, task)
    plain = points.get((PLAIN, "patience", 0))
    full = points.get((PABEE, "patience", 0))
    if plain is not None and full is not None:
        plain["wall_speedup"] = cross_run_wall_speedup(table[(PLAIN, "patience", 0)], table[(PABEE, "patience", 0)])
        plain["wall_to_layer"] = dict(plain["wall_speedup"])  # layer speed-up 1
        plain["cross_run"] = True
    pabee = [p for (method, _, _), p in points.items() if method == PABEE]
    patience = sorted((p for p in pabee if p["rule"] == "patience" and p["value"] > 0), key=lambda p: p["value"])
    others = [p for p in pabee if p["rule"] in OTHER_KINDS]
    metric = task.main_metric
    best = pick_best(patience, metric)
    fastest = pick_fastest_within(patience, metric, main_mean(plain, metric)) if plain else None
    return {
        "model": model.name, "task": task.folder, "split": split, "main_metric": task.main_metric,
        "metric_names": list(task.metric_names), "num_layers": model.num_layers,
        "seeds": sorted({r["seed"] for r in runs}),
        "num_examples": (plain or full or {}).get("num_examples"),
        "plain": plain, "full_depth": full, "patience": patience, "matched": match_by_speedup(patience, others),
        "all_points": sorted(pabee, key=lambda p: (p["rule"], p["value"])),
        "best_patience": best, "best_verdicts": verdicts(best, model.name),
        "fastest_within": fastest, "fastest_verdicts": verdicts(fastest, model.name),
        "training": training_ratio(runs),
    }


def count_available(task: TaskSpec, config: ReportConfig) -> int | None:
    """Training examples of the task; None when the data cannot be read."""
    try:
        data = load_task_data(RunSettings(output_dir="", task_name=task.folder, data_dir=config.glue_dir,
                                          do_train=True))
    except (ValueError, OSError):
        return None
    return len(data.train or [])


def training_examples(config: ReportConfig) -> dict[str, dict[str, dict]]:
    """{model: {task: {"available", "used"}}}: examples used after the model's --max-train-samples."""
    available: dict[str, int | None] = {}
    out = {}
    for model in config.models:
        limit = config.hyper[model.name].max_train_samples
        out[model.name] = {}
        for task in config.tasks[model.name]:
            if task.name not in available:
                available[task.name] = count_available(task, config)
            n = available[task.name]
            used = limit if n is None else n if limit is None else min(n, limit)
            out[model.name][task.folder] = {"available": n, "used": used}
    return out


def hyper_parameters(config: ReportConfig, model: str) -> dict:
    """The model's training settings as stored in results.json (and shown in the setup)."""
    hyper = dataclasses.asdict(config.train_settings(model))
    for key in ("output_dir", "seed", "resume_from_checkpoint", "disable_tqdm"):
        hyper.pop(key)
    classifier_lr = hyper["classifier_learning_rate"] or CLASSIFIER_LR_RATIO * hyper["learning_rate"]
    hyper["classifier_learning_rate"] = classifier_lr
    hyper["max_seq_length"] = RunSettings(output_dir="").max_seq_length
    hyper["max_train_samples"] = config.hyper[model].max_train_samples
    runs = {t.name for t in config.tasks.get(model, [])}  # only the overrides of tasks this model trains on
    hyper["task_epochs"] = {get_task(name).folder: e for name, e in config.hyper[model].task_epochs.items()
                            if name in runs}
    return hyper


def count_by(values: Sequence) -> list[dict]:
    """[{"value": v, "runs": n}] in order of first appearance."""
    counts: dict = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return [{"value": value, "runs": n} for value, n in counts.items()]


def aggregate(plan: Sequence[RunSpec], reused: dict[Path, bool], config: ReportConfig, started: float) -> dict:
    """results.json: settings, machine, every run with its raw records, and the per-task summaries."""
    runs = [load_run(spec, reused[spec.output_dir]) for spec in plan]
    summaries = []
    for model in config.models:
        for task in config.tasks[model.name]:
            task_runs = [r for r in runs if r["model"] == model.name and r["task"] == task.folder]
            summaries.append(summarize_task(model, task, task_runs))
    tasks = list({t.name: t for ts in config.tasks.values() for t in ts}.values())
    conditions = count_by([training_condition(r) for r in runs])
    return {
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "command": command_line(config.argv),
        "argv": config.argv,
        "cwd": str(Path.cwd()),
        "quick": config.quick,
        "machine": machine_info(),
        "models": {m.name: dataclasses.asdict(m) for m in config.models},
        "tasks": {name: [t.folder for t in ts] for name, ts in config.tasks.items()},
        "seeds": {t.folder: config.seeds[t.name] for t in tasks},
        "max_seeds": dict(config.max_seeds),
        "hyper_parameters": {m.name: hyper_parameters(config, m.name) for m in config.models},
        "eval_batch_sizes": list(BATCH_SIZES),
        "timing_rounds": config.timing_rounds,
        "timing_rounds_used": count_by([r["timing_rounds"] for r in runs]),  # None: before rounds were recorded
        "eval_threads_used": count_by([r["eval_threads"] for r in runs]),  # None: not recorded
        "timing_interleaving_used": count_by([r.get("timing_interleaving", "batches") for r in runs]),
        "training_conditions": [{"torch_threads": c["value"][0], "shards": c["value"][1], "runs": c["runs"]}
                                for c in conditions],  # torch_threads None: not recorded
        "max_train_samples": {m.name: config.hyper[m.name].max_train_samples for m in config.models},
        "max_eval_samples": {m.name: config.hyper[m.name].max_eval_samples for m in config.models},
        "training_examples": training_examples(config),
        "targets": {"layer_speedup": LAYER_SPEEDUP_TARGETS,
                    "wall_to_layer": {str(bs): v for bs, v in WALL_TO_LAYER_TARGETS.items()},
                    "quality_tolerance": QUALITY_TOLERANCE},
        "total_seconds": time.perf_counter() - started,
        "runs_seconds": sum(r["elapsed_s"] or 0.0 for r in runs),
        "runs_train_seconds": sum(r["train_s"] or 0.0 for r in runs),  # 0 for runs from before it was recorded
        "runs_eval_seconds": sum(r["eval_s"] or 0.0 for r in runs),
        "num_runs": len(runs),
        "num_reused": sum(r["reused"] for r in runs),
        "summaries": summaries,
        "runs": runs,
    }


# ---------------------------------------------------------------------------------------------------- render


def display_path(path: Path | str) -> str:
    """Relative to the repository when inside it, else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(["python", SCRIPT, *argv])


def subset_command(config: ReportConfig, model: str, task: TaskSpec) -> str:
    """The command that regenerates one table's runs (reusing them when present) into its own out dir."""
    h = config.hyper[model]
    args = ["--models", model, "--tasks", task.folder, "--seeds",
            ",".join(map(str, config.seeds_for(model, task))), "--epochs", f"{h.epochs_for(task):g}", "--learning-rate", f"{h.learning_rate:g}"]
    defaults = QUICK if config.quick else MODEL_DEFAULTS[model]
    for name in ("batch_size", "precision"):
        if getattr(h, name) != defaults[name]:
            args += [HYPER_FLAGS[name], str(getattr(h, name))]
    for name in ("max_train_samples", "max_eval_samples"):  # a subset is always spelled out; "all" overrides one
        value = getattr(h, name)
        if value is not None:
            args += [HYPER_FLAGS[name], str(value)]
        elif defaults[name] is not None:
            args += [HYPER_FLAGS[name], "all"]
    if config.glue_dir is not None:
        args += ["--glue-dir", str(config.glue_dir)]
    if config.timing_rounds != (QUICK["timing_rounds"] if config.quick else DEFAULT_TIMING_ROUNDS):
        args += ["--timing-rounds", str(config.timing_rounds)]
    if model in config.model_paths:
        args += ["--model-path", f"{model}={config.model_paths[model]}"]
    if config.quick:
        args.append("--quick")
    args += ["--work-dir", display_path(config.work_dir),
             "--out-dir", display_path(config.work_dir / f"report-{model}-{task.folder.lower()}")]
    return command_line(args)


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def times(value: float | None, mark: str = "") -> str:
    return "–" if value is None else f"{value:.2f}×{mark}"


def ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def met(value: bool) -> str:
    return "met" if value else "**not met**"


def metric_cell(point: dict, name: str) -> str:
    m = point["metrics"][name]
    return pct(m["mean"]) + (f" ± {pct(m['std'])}" if len(m["values"]) > 1 else "")


def table_rows(s: dict) -> list[tuple[dict, str, str]]:
    """(point, method, matched-to) rows: plain, PABEE full depth, each patience, the matched other rules."""
    rows = [(s["plain"], "plain", ""), (s["full_depth"], "PABEE", "")]
    rows += [(p, "PABEE", "") for p in s["patience"]]
    rows += [(p, "PABEE", ", ".join(p["matched_to"])) for p in s["matched"]]
    return [row for row in rows if row[0] is not None]


def render_table(s: dict) -> list[str]:
    others = [m for m in s["metric_names"] if m != s["main_metric"]]
    head = ["training", "exit rule", "matched to", f"{s['main_metric']} (mean ± std)", *others, "mean exit layer",
            "layer speed-up", *(f"wall speed-up bs {bs}" for bs in BATCH_SIZES),
            *(f"wall / layer bs {bs}" for bs in BATCH_SIZES)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for point, method, matched_to in table_rows(s):
        mark = "†" if point.get("cross_run") else ""
        cells = [method, point["label"], matched_to, metric_cell(point, s["main_metric"]),
                 *(metric_cell(point, m) for m in others),
                 f"{point['avg_exit_layer']:.2f} / {s['num_layers']}", times(point["layer_speedup"]),
                 *(times(point["wall_speedup"][str(bs)], mark) for bs in BATCH_SIZES),
                 *(ratio(point["wall_to_layer"][str(bs)]) for bs in BATCH_SIZES)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_picks(s: dict) -> list[str]:
    plain = s["plain"]
    lines = [
        "| pick | patience | " + f"{s['main_metric']} | vs plain | layer speed-up | target | "
        + " | ".join(f"wall / layer bs {bs} (≥ {t})" for bs, t in WALL_TO_LAYER_TARGETS.items()) + " |",
        "|---|---|---:|---:|---:|---|" + "---|" * len(WALL_TO_LAYER_TARGETS),
    ]
    picks = (("best on dev", s["best_patience"], s["best_verdicts"]),
             ("fastest within 0.5 points of plain", s["fastest_within"], s["fastest_verdicts"]))
    for name, point, verdict in picks:
        if point is None:
            lines.append(f"| {name} | none | – | – | – | – |" + " – |" * len(WALL_TO_LAYER_TARGETS))
            continue
        delta = main_mean(point, s["main_metric"]) - main_mean(plain, s["main_metric"]) if plain else None
        layer = verdict.get("layer_speedup")
        target = f"≥ {layer['target']}×: {met(layer['met'])}" if layer else "(no target)"
        walls = [f"{ratio(v['value'])}: {met(v['met'])}"
                 for v in (verdict[f"wall_to_layer_bs{bs}"] for bs in WALL_TO_LAYER_TARGETS)]
        lines.append(f"| {name} | {point['value']} | {metric_cell(point, s['main_metric'])} | "
                     f"{'–' if delta is None else f'{100 * delta:+.1f}'} | {times(point['layer_speedup'])} | "
                     f"{target} | " + " | ".join(walls) + " |")
    return lines


def render_histogram(s: dict) -> list[str]:
    point = s["best_patience"]
    if point is None:
        return []
    layers = [str(i) for i in range(1, s["num_layers"] + 1)]
    total = sum(point["exit_layer_histogram"].values()) or 1
    counts = [point["exit_layer_histogram"].get(layer, 0) for layer in layers]
    return [
        f"Exit layers of PABEE at the best patience ({point['value']}), summed over {len(point['seeds'])} seed(s):",
        "",
        "| layer | " + " | ".join(layers) + " |",
        "|---|" + "---:|" * len(layers),
        "| examples | " + " | ".join(f"{c} ({100 * c / total:.0f} %)" for c in counts) + " |",
    ]


def render_training(s: dict) -> str:
    t = s["training"]
    if t["ratio"] is None:
        return "Training time: not available."
    mixed = (" (plain and PABEE runs were trained under different conditions, see Setup: the ratio is less "
             "reliable)") if t.get("mixed_conditions") else ""
    return (f"Training time per epoch (mean over seeds): plain {format_seconds(t['plain_s_per_epoch'])}, PABEE "
            f"{format_seconds(t['pabee_s_per_epoch'])}; **PABEE / plain = {t['ratio']:.2f}**{mixed}.")


def pick_cell(point: dict | None, metric: str) -> str:
    """A picked patience in the summary: "3: 67.1 ± 1.2 (1.45×)", or "none"."""
    if point is None:
        return "none"
    return f"{point['value']}: {metric_cell(point, metric)} ({times(point['layer_speedup'])})"


def render_summary(report: dict) -> list[str]:
    lines = ["| model | task | metric | plain | PABEE full depth | best patience (layer ×) | fastest patience "
             "within 0.5 points (layer ×) | layer target | train time PABEE / plain |",
             "|---|---|---|---:|---:|---|---|---|---:|"]
    for s in report["summaries"]:
        metric = s["main_metric"]
        target = "–"
        if s["model"] in LAYER_SPEEDUP_TARGETS:  # no qualifying patience: the target is not met
            layer = s["fastest_verdicts"].get("layer_speedup", {"met": False})
            target = f"≥ {LAYER_SPEEDUP_TARGETS[s['model']]}×: {met(layer['met'])}"
        plain = metric_cell(s["plain"], metric) if s["plain"] else "–"
        full = metric_cell(s["full_depth"], metric) if s["full_depth"] else "–"
        lines.append(f"| {s['model']} | {s['task']} | {metric} | {plain} | {full} | "
                     f"{pick_cell(s['best_patience'], metric)} | {pick_cell(s['fastest_within'], metric)} | "
                     f"{target} | {ratio(s['training']['ratio'])} |")
    return lines


def render_hyper(hyper: dict) -> str:
    """One model's training settings: "3 epoch(s), learning rate 5e-05 (classifiers ...), batch 32, ..."."""
    sampling = {"group_by_length": "batches of similar length", "random": "random batches"}.get(
        hyper.get("train_sampling_strategy"), hyper.get("train_sampling_strategy"))
    precision = "bf16" if hyper.get("bf16") else "fp16" if hyper.get("fp16") else "fp32"
    subset = ("all training examples" if hyper.get("max_train_samples") is None
              else f"the first {hyper['max_train_samples']} training examples")
    overrides = "".join(f" ({task}: {e:g})" for task, e in (hyper.get("task_epochs") or {}).items())
    return (f"{hyper['num_train_epochs']:g} epoch(s){overrides}, learning rate {hyper['learning_rate']:g} (classifiers "
            f"{hyper['classifier_learning_rate']:g}), batch {hyper['per_device_train_batch_size']} ({sampling}), "
            f"warm-up {hyper['warmup_steps']:g}, weight decay {hyper['weight_decay']:g}, max length "
            f"{hyper['max_seq_length']}, {precision}, {subset}")


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def render_conditions(report: dict) -> str:
    """How the runs were trained (torch threads, sharded or not), for comparing training times."""
    parts = []
    for c in report["training_conditions"]:
        runs = plural(c["runs"], "run")
        if c["torch_threads"] is None:
            parts.append(f"{runs} trained before the conditions were recorded (unknown)")
        elif c["shards"] is None:
            parts.append(f"{runs} with {plural(c['torch_threads'], 'torch thread')}, not sharded (one training at "
                         "a time)")
        else:
            parts.append(f"{runs} with {plural(c['torch_threads'], 'torch thread')} in `--train-only --shard K/"
                         f"{c['shards']}` processes (up to {c['shards']} trainings in parallel)")
    return ("- **How the runs were trained**: " + "; ".join(parts) + ". Plain and PABEE training times are only "
            "comparable under the same conditions (a per-task note says when they differ).")


def render_timing(report: dict) -> str:
    rounds = report["timing_rounds"]
    ways = {c["value"]: c["runs"] for c in report.get("timing_interleaving_used", [])} or {"batches": 1}
    how = {
        "blocks": f"in blocks (every rule in turn runs {INTERLEAVE_EXAMPLES} examples' worth of consecutive batches, "
                  "in a rotating order, so each runs consecutive inputs as in use)",
        "batches": "batch by batch (each batch runs through every rule, in a rotating order)",
    }
    if len(ways) == 1:
        interleaving = how[next(iter(ways))]
    else:
        interleaving = "; ".join(f"{how[way]} in {plural(runs, 'run')}" for way, runs in sorted(ways.items()))
    text = (f"- **Timing**: every evaluation interleaves all exit rules {interleaving} and makes "
            f"{plural(rounds, 'timed round')} (`--timing-rounds {rounds}`); a record's eval time (`eval_seconds`) is "
            "the mean over the rounds, each round's total is in `extra.eval_seconds_rounds`.")
    other = [c for c in report["timing_rounds_used"] if c["value"] != rounds]
    if other:
        text += " Runs evaluated by earlier invocations with other settings: " + "; ".join(
            f"{plural(c['runs'], 'run')} with " + (plural(c["value"], "round") if c["value"] is not None
                                                    else "one pass per rule, not interleaved (older evaluation)")
            for c in other) + "."
    threads = [c for c in report.get("eval_threads_used", []) if c["value"] is not None]
    if threads:
        text += " Evaluations ran with " + "; ".join(
            f"{plural(c['value'], 'torch thread')} ({plural(c['runs'], 'run')})" for c in threads) + "."
    return text


def render_split(report: dict) -> str:
    """" (training 1 h 02 min, evaluation 12 min 10 s)" when recorded."""
    train, evaluate = report.get("runs_train_seconds"), report.get("runs_eval_seconds")
    if not train and not evaluate:
        return ""
    return f" (training {format_seconds(train or 0.0)}, evaluation {format_seconds(evaluate or 0.0)})"


def render_setup(report: dict) -> list[str]:
    mach, hypers = report["machine"], report["hyper_parameters"]
    models = "; ".join(f"**{m['name']}** `{display_path(m['path'])}` ({m['model_type']}, {m['num_layers']} layers)"
                       for m in report["models"].values())
    seeds = "; ".join(f"{task} {', '.join(map(str, s))}" for task, s in report["seeds"].items())
    limited = [f"{m} runs only the first {n} seed(s) of each task" for m, n in report.get("max_seeds", {}).items()
               if n is not None]
    if limited:
        seeds += " (" + "; ".join(limited) + ")"

    def examples(counts: dict) -> str:
        return ", ".join(f"{task} {c['used'] if c['used'] is not None else '?'}"
                         + (f" of {c['available']}" if c["available"] is not None else "")
                         for task, c in counts.items())

    lines = [
        f"- **Models**: {models}.",
        "- **Training** (the same for plain and PABEE of a model, per seed): "
        + "; ".join(f"**{name}** {render_hyper(hyper)}" for name, hyper in hypers.items())
        + ". Plain = loss weighting `last` (one classifier on the last layer); PABEE = the default weighting "
        "(classifier i weighted i / Σ i).",
        render_conditions(report),
        f"- **Seeds**: {seeds}. Tables give the mean over seeds (± sample standard deviation with more than one).",
        "- **Training examples used**: "
        + "; ".join(f"{name}: {examples(counts)}" for name, counts in report["training_examples"].items()) + ".",
        "- **Exit rules** (PABEE model): patience 1..L−1; entropy < f · ln C for f in "
        f"{', '.join(map(str, ENTROPY_FRACTIONS))}; confidence ≥ {', '.join(map(str, CONFIDENCES))} (those > 1/C); "
        "fixed layer 1..L−1; regression tasks patience (default threshold) and fixed layer only; full depth always.",
        render_timing(report),
        "- **Wall-clock speed-up** at batch size b = eval time of PABEE full depth / eval time of the rule, both "
        "measured at b in the same evaluation (`wall_speedup` of the records). † = plain fine-tuning, timed in its "
        "own evaluation: PABEE full-depth time / plain time (both run every layer, so about 1; a noise check). "
        "Wall / layer = wall-clock speed-up / layer speed-up (means over seeds).",
        f"- **Machine**: {mach['cpu_model']}, {mach['logical_cores']} logical cores ({mach['usable_cores']} usable), "
        f"torch threads {mach['torch_num_threads']} (this invocation); Python {mach['python_version']}, torch "
        f"{mach['torch_version']}, transformers {mach['transformers_version']}; {mach['platform']}. One invocation "
        "evaluates its runs one after another, but invocations (and other jobs) may share the machine: this is not "
        "recorded, the discussion says how the runs were made.",
        f"- **Run time**: this invocation {format_seconds(report['total_seconds'])}; the {report['num_runs']} runs "
        f"took {format_seconds(report['runs_seconds'])} in all{render_split(report)}, summed over runs whatever "
        f"invocation ran them ({report['num_reused']} finished runs reused from earlier invocations).",
    ]
    return lines


def render_warnings(report: dict) -> list[str]:
    lines = []
    if report["quick"]:
        lines.append("> **Quick smoke run** (`--quick`): tiny training and dev subsets, not results.")
    for key, what, done in (("max_train_samples", "Training", "used for"), ("max_eval_samples", "Dev", "evaluated for")):
        for model, limit in report[key].items():
            if limit is not None:
                lines.append(f"> **{what} subset**: only the first {limit} {what.lower()} examples of each task were "
                             f"{done} {model} (`{HYPER_FLAGS[key]}`).")
    return [*lines, ""] if lines else []


def render_task(s: dict, plot: Path | None, command: str) -> list[str]:
    seeds = ", ".join(map(str, s["seeds"]))
    lines = [f"### {s['model']} · {s['task']} ({s['split']}, {s['num_examples']} examples, seeds {seeds})", ""]
    lines += render_table(s)
    lines += ["", f"Picks on dev (targets: layer speed-up for {s['model']}, wall / layer at each batch size):", ""]
    lines += render_picks(s)
    lines += ["", *render_histogram(s), "", render_training(s), ""]
    if plot is not None:
        lines += [f"![{s['model']} {s['task']}: {s['main_metric']} vs wall-clock speed-up at batch size 1]"
                  f"({plot.as_posix()})", ""]
    lines += ["This table alone (reuses the runs in the work directory, writes its own report):", "",
              "```bash", command, "```", ""]
    return lines


def render_markdown(report: dict, discussion: str, plots: dict[tuple[str, str], Path | None],
                    commands: dict[tuple[str, str], str]) -> str:
    lines = ["# Results: plain fine-tuning vs PABEE and other exit rules (GLUE dev)", "",
             f"Generated by `{SCRIPT}` on {report['generated']} (UTC). Every number comes from that run and is "
             "stored with the raw records in `results.json`.", ""]
    lines += render_warnings(report)
    lines += ["## Command", "", "Every number on this page is regenerated by (runs already finished in the work "
              "directory are reused, so an interrupted report resumes):", "",
              "```bash", f"cd {report['cwd']}", report["command"], "```", ""]
    lines += ["## Setup", "", *render_setup(report), ""]
    lines += ["## Summary", "", "Main metric × 100. *Best patience*: highest mean dev metric (ties: larger speed-up). "
              "*Fastest within 0.5 points*: the largest layer speed-up whose mean metric is at most 0.5 points "
              "below plain fine-tuning; the layer target applies to it "
              f"({', '.join(f'{m} ≥ {t}×' for m, t in LAYER_SPEEDUP_TARGETS.items())}).", ""]
    lines += render_summary(report)
    lines += ["", "## Discussion", "", DISCUSSION_START, discussion, DISCUSSION_END, ""]
    lines += ["## Per model and task", "",
              "Rows: plain fine-tuning, PABEE at full depth, PABEE at each patience, then for every patience the "
              "entropy, confidence and fixed-layer settings whose mean layer speed-up is closest (*matched to*). "
              "Metrics × 100.", ""]
    for s in report["summaries"]:
        key = (s["model"], s["task"])
        lines += render_task(s, plots.get(key), commands[key])
    return "\n".join(lines).rstrip() + "\n"


def read_discussion(path: Path) -> str:
    """The text between the discussion markers of an existing results.md, else the placeholder."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return DISCUSSION_PLACEHOLDER
    start, end = text.find(DISCUSSION_START), text.find(DISCUSSION_END)
    if start < 0 or end < start:
        return DISCUSSION_PLACEHOLDER
    return text[start + len(DISCUSSION_START):end].strip("\n")


def plot_task(s: dict, path: Path) -> Path | None:
    """Main metric against measured wall-clock speed-up at batch size 1: one curve per exit rule (each starting at
    full depth), plain fine-tuning as a horizontal line. None when nothing has a wall-clock speed-up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bs = str(BATCH_SIZES[0])
    full = s["full_depth"]
    points = [p for p in s["all_points"] if p["wall_speedup"][bs] is not None and p is not full]
    if full is None or full["wall_speedup"][bs] is None or not points:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for kind in ("patience", *OTHER_KINDS):
        curve = sorted([full, *(p for p in points if p["rule"] == kind)], key=lambda p: p["wall_speedup"][bs])
        if len(curve) > 1:
            ax.plot([p["wall_speedup"][bs] for p in curve], [100 * main_mean(p, s["main_metric"]) for p in curve],
                    marker="o", markersize=4, label=kind)
    if s["plain"] is not None:
        ax.axhline(100 * main_mean(s["plain"], s["main_metric"]), color="black", linestyle="--",
                   linewidth=1, label="plain fine-tuning")
    ax.plot([full["wall_speedup"][bs]], [100 * main_mean(full, s["main_metric"])], marker="*",
            markersize=12, color="black", linestyle="none", label="PABEE full depth")
    ax.set_xlabel("wall-clock speed-up at batch size 1 (vs PABEE full depth)")
    ax.set_ylabel(f"{s['main_metric']} × 100 (mean over {len(s['seeds'])} seed(s))")
    ax.set_title(f"{s['model']} {s['task']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_report(report: dict, config: ReportConfig) -> Path:
    """results.json, the plots under results/ and results.md (keeping its discussion block)."""
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    plots, commands = {}, {}
    for s in report["summaries"]:
        key = (s["model"], s["task"])
        path = plot_task(s, out / "results" / f"{s['model']}-{s['task'].lower()}.png")
        plots[key] = None if path is None else path.relative_to(out)
        commands[key] = subset_command(config, s["model"], get_task(s["task"]))
    write_json(out / "results.json", report)
    md = out / "results.md"
    text = render_markdown(report, read_discussion(md), plots, commands)
    atomic_write_text(md, text)
    return md


# ---------------------------------------------------------------------------------------------------- main


def log(message: str) -> None:
    print(f"[report] {message}", flush=True)


@contextlib.contextmanager
def no_progress_bars():
    """Hide transformers' weight-loading bars (they would sit between the progress lines), then restore them."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Plan, run (or reuse), aggregate and render (with --train-only: plan and train only). Returns 0, or 2 with a
    one-line error on stderr."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        config = make_config(args, argv)
        plan = plan_runs(config)
        if config.train_only:
            with no_progress_bars():
                trained = train_all(plan, config, log)
            after = "once every shard has finished, " if config.shard else ""
            log(f"trained {plural(trained, 'run')} in {format_seconds(time.perf_counter() - started)}; nothing "
                f"evaluated. To evaluate and render the report, {after}run the same command without --train-only"
                f"{' and --shard' if config.shard else ''}: {command_line(without_train_only(argv))}")
            return 0
        with no_progress_bars():
            reused = run_all(plan, config, log)
        report = aggregate(plan, reused, config, started)
        md = write_report(report, config)
    except (ReportError, ValueError, OSError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"{SCRIPT}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{SCRIPT}: interrupted; run the same command again to resume (finished runs are reused)",
              file=sys.stderr)
        return 130
    log(f"wrote {display_path(md)}, {display_path(config.out_dir / 'results.json')} and the plots under "
        f"{display_path(config.out_dir / 'results')} in {format_seconds(time.perf_counter() - started)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
