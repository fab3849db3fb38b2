"""The results report's command line: flags -> :class:`~benchmarks.report_plan.ReportConfig` (defaults, per-model
values, checked model folders), and the command line without ``--train-only``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from transformers import AutoConfig

from pabee.backbones import get_driver
from pabee.data import default_model_path
from pabee.tasks import TaskSpec, get_task
from pabee.tuning import DEFAULT_MAX_DROP

from .arg_types import non_negative_float, positive_float
from .report_archive import readable_results
from .report_methods import add_method_arguments, resolve_methods
from .report_plan import (
    DEFAULT_TASKS,
    DEFAULT_TIMING_EXAMPLES,
    DEFAULT_TIMING_ROUNDS,
    HYPER_FLAGS,
    MAX_SEEDS,
    MODEL_DEFAULTS,
    MODELS,
    MPNET_HINT,
    MULTI_SEED_TASKS,
    MULTI_SEEDS,
    ONE_SEED,
    PRECISIONS,
    QUICK,
    QUICK_TASKS,
    REPO_ROOT,
    SCRIPT,
    TASK_EPOCHS,
    ModelHyper,
    ModelSpec,
    ReportConfig,
    ReportError,
)

TASK_PREFIX = "task:"  # per_model(..., tasks=True) marks a TASK=VALUE entry as ("task:<TaskSpec.name>", value)


# ---------------------------------------------------------------------------------------------------- value types


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


def sample_count(text: str) -> int | None:
    """A positive number of examples, or "all" (no limit)."""
    return None if text.strip().lower() == "all" else positive_int(text)


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


# ---------------------------------------------------------------------------------------------------- parser


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
    p.add_argument("--tasks", type=per_model(task_list), action="append", default=None, metavar="[MODEL=]TASKS",
                   help="comma-separated GLUE tasks for every model, or MODEL=TASKS for one model (repeatable; "
                        "default: MiniLM RTE,MRPC,STS-B,CoLA,SST-2; MPNet RTE,MRPC,STS-B)")
    p.add_argument("--max-seeds", type=per_model(positive_int), action="append", default=None,
                   metavar="[MODEL=]N",
                   help="use only the first N seeds of each task for every model or MODEL=N for one (default: "
                        + ", ".join(f"{m} {'all' if n is None else n}" for m, n in MAX_SEEDS.items())
                        + "; the larger model's runs cost about 6x MiniLM's)")
    p.add_argument("--seeds", action="append", default=None, metavar="[TASK=]SEEDS",
                   help="comma-separated seeds for every task, or TASK=SEEDS for one task (repeatable); default "
                        "42,43,44 for RTE/MRPC/STS-B and 42 for the others")
    per = " for every model, or MODEL=VALUE for one model (repeatable; default"
    task_epochs = ", ".join(f"{get_task(t).folder} {e:g}" for t, e in TASK_EPOCHS.items())
    p.add_argument("--epochs", type=per_model(positive_float, tasks=True), action="append", default=None,
                   metavar="[MODEL=|TASK=]EPOCHS",
                   help=f"training epochs{per} {hyper_default('epochs')}); TASK=EPOCHS sets one task's epochs for "
                        f"every model (full-report default: {task_epochs})")
    p.add_argument("--learning-rate", type=per_model(positive_float), action="append", default=None,
                   metavar="[MODEL=]LR", help=f"backbone learning rate{per} {hyper_default('learning_rate')})")
    p.add_argument("--max-train-samples", type=per_model(sample_count), action="append", default=None,
                   metavar="[MODEL=]N",
                   help=f"train on the first N examples only, \"all\" for no limit,{per} "
                        f"{hyper_default('max_train_samples')})")
    p.add_argument("--batch-size", type=per_model(positive_int), action="append", default=None,
                   metavar="[MODEL=]N", help=f"training batch size{per} {hyper_default('batch_size')})")
    p.add_argument("--precision", type=per_model(precision), action="append", default=None,
                   metavar="[MODEL=]fp32|bf16",
                   help=f"training precision (bf16 = mixed-precision autocast; evaluation is fp32){per} "
                        f"{hyper_default('precision')})")
    p.add_argument("--max-eval-samples", type=per_model(sample_count), action="append", default=None,
                   metavar="[MODEL=]N",
                   help=f"evaluate on the first N dev examples only, \"all\" for every one,{per} "
                        f"{hyper_default('max_eval_samples')})")
    p.add_argument("--timing-rounds", type=positive_int, default=None, metavar="N",
                   help="timed rounds of every evaluation, its timed settings interleaved in blocks; eval time = "
                        f"the median over the rounds, wall speed-up = the median of the per-round ratios "
                        f"(default {DEFAULT_TIMING_ROUNDS}; --quick: "
                        f"{QUICK['timing_rounds']}). Not part of a run's settings: finished runs are reused as they "
                        "were timed")
    p.add_argument("--timing-examples", type=per_model(sample_count), action="append", default=None,
                   metavar="[MODEL=]N",
                   help="wall-clock timing (of full depth and the tuned settings only; every other number comes "
                        "from the replay of one all-layer pass) runs on the first N evaluated dev examples, \"all\" "
                        "for every one, for every model or MODEL=N for one (default: "
                        + ", ".join(f"{m} {'all' if n is None else n}" for m, n in DEFAULT_TIMING_EXAMPLES.items())
                        + "; --quick: all)")
    p.add_argument("--max-drop", type=non_negative_float, default=None, metavar="POINTS",
                   help=f"tuning budget: the tuned setting is the fastest whose main metric is at most POINTS (x 100) "
                        f"below the run's full depth (default {DEFAULT_MAX_DROP:g})")
    add_method_arguments(p)
    p.add_argument("--train-only", action="store_true",
                   help="train the runs not trained yet and stop (no evaluation, no report); then run the same "
                        "command without --train-only (and --shard) to evaluate and render")
    p.add_argument("--shard", type=shard_spec, default=None, metavar="K/N",
                   help="with --train-only: train only the runs whose index in the plan %% N is K-1, so N processes "
                        "(e.g. each with OMP_NUM_THREADS=1) train disjoint parts at once")
    p.add_argument("--evaluate-only", action="store_true",
                   help="train nothing: evaluate every trained run of the plan not evaluated yet (reusing finished "
                        "ones) and render; runs not trained yet are shown as missing")
    p.add_argument("--render-only", action="store_true",
                   help="train and evaluate nothing: render results.md and the plots again from the results.json in "
                        "--out-dir (e.g. after changing the page's template)")
    p.add_argument("--keep-from", action="append", default=[], metavar="RESULTS_JSON",
                   help="another report's results.json: planned runs whose folders are gone are kept from it when "
                        "made with the same settings, like those of --out-dir's own results.json, which is read "
                        "first (repeatable)")
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


# ---------------------------------------------------------------------------------------------------- resolving


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


def out_dir_of(args: argparse.Namespace) -> Path:
    """--out-dir, else runs/report-quick with --quick, else docs."""
    if args.out_dir:
        return Path(args.out_dir)
    return REPO_ROOT / "runs" / "report-quick" if args.quick else REPO_ROOT / "docs"


def make_config(args: argparse.Namespace, argv: list[str]) -> ReportConfig:
    """Resolve defaults (--quick ones where a flag is not given) and check the models exist."""
    quick = args.quick
    methods = resolve_methods(args)
    if args.shard is not None and not args.train_only:
        raise ReportError("--shard works only with --train-only (evaluate and render with one invocation afterwards)")
    out_dir = out_dir_of(args)
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
    given_tasks = dict(args.tasks or [])  # {None: every model's, model: its own}, the last of each wins
    for m in models:
        chosen = given_tasks.get(m.name) or given_tasks.get(None) or [
            get_task(t) for t in (QUICK_TASKS if quick else DEFAULT_TASKS[m.name])]
        tasks[m.name] = list({t.name: t for t in chosen}.values())
    all_tasks = list({t.name: t for ts in tasks.values() for t in ts}.values())
    rounds = args.timing_rounds or (QUICK["timing_rounds"] if quick else DEFAULT_TIMING_ROUNDS)
    if args.evaluate_only and args.train_only:
        raise ReportError("--evaluate-only and --train-only exclude each other")
    timing_examples = {}
    for m in models:
        given = args.timing_examples or []
        one = [n for name, n in given if name == m.name]
        every = [n for name, n in given if name is None]
        timing_examples[m.name] = (one or every or [None if quick else DEFAULT_TIMING_EXAMPLES.get(m.name)])[-1]
    return ReportConfig(
        models=models,
        tasks=tasks,
        seeds=seeds_per_task(all_tasks, args.seeds, quick),
        max_seeds={m.name: resolve_max_seeds(args, m.name) for m in models},
        hyper={m.name: resolve_hyper(args, m.name, quick) for m in models},
        timing_rounds=rounds,
        work_dir=Path(args.work_dir) if args.work_dir else REPO_ROOT / "runs" / ("report-quick" if quick else "report"),
        out_dir=out_dir,
        glue_dir=args.glue_dir,
        model_paths=paths,
        quick=quick,
        argv=list(argv),
        train_only=args.train_only,
        shard=args.shard,
        timing_examples=timing_examples,
        max_drop=DEFAULT_MAX_DROP if args.max_drop is None else args.max_drop,
        evaluate_only=args.evaluate_only,
        keep_from=tuple(readable_results(path) for path in args.keep_from),
        **methods,
    )


# ---------------------------------------------------------------------------------------------------- commands


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
