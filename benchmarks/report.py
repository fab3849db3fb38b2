#!/usr/bin/env python
"""Regenerate the results report: plain fine-tuning against PABEE and other exit rules, on GLUE dev sets.

    python benchmarks/report.py            # the full report into docs/results.{md,json} (many hours on 2 CPU cores)
    python benchmarks/report.py --quick    # smoke run (minutes): MiniLM, RTE, one seed, 200 training examples

For every model, task and seed two models are fine-tuned with the same hyper-parameters and seed:

* ``plain``: one classifier on the last layer (loss weighting "last"), evaluated at full depth;
* ``pabee``: PABEE's joint training of every layer's classifier (the default weighting), evaluated in one harness
  (:func:`pabee.runner.run`) under every exit rule: patience, entropy and confidence thresholds, fixed layer
  (regression tasks: patience and fixed layer), plus full depth, at batch sizes 1 and 32.

Each run trains into its own folder under ``--work-dir``. A folder that already holds the finished run (its
``eval_results.json`` has every expected record) is reused, so an interrupted report resumes where it stopped; a
folder whose training finished but whose evaluation did not is only evaluated again.

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
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from transformers import AutoConfig  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from pabee.backbones import get_driver  # noqa: E402
from pabee.bench import machine_info, mean_std  # noqa: E402
from pabee.config import atomic_write_text, is_pabee_folder  # noqa: E402
from pabee.evaluate import RESULTS_NAME  # noqa: E402
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
QUICK = {"max_train_samples": 200, "max_eval_samples": 100, "epochs": 1.0}
DEFAULT_EPOCHS = 3.0
BATCH_SIZES = (1, 32)
PLAIN, PABEE = "plain", "pabee"
METHODS = (PLAIN, PABEE)

ENTROPY_FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # of ln C, the largest possible entropy
CONFIDENCES = (0.55, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)  # only those > 1/C are used
OTHER_KINDS = ("entropy", "confidence", "layer")  # rules matched to the patience points by layer speed-up

LAYER_SPEEDUP_TARGETS = {"minilm": 1.3, "mpnet": 1.6}
WALL_TO_LAYER_TARGETS = {1: 0.95, 32: 0.85}  # batch size -> minimum wall-clock / layer speed-up
QUALITY_TOLERANCE = 0.005  # "within 0.5 points" of plain fine-tuning, in metric units

RUN_META = "report_run.json"  # written by this script into every run folder: its settings and elapsed time
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


@dataclass
class ReportConfig:
    """Everything the report needs, resolved from the command line."""

    models: list[ModelSpec]
    tasks: dict[str, list[TaskSpec]]  # model name -> tasks
    seeds: dict[str, list[int]]  # TaskSpec.name -> seeds
    epochs: float
    learning_rate: float
    max_train_samples: int | None
    max_eval_samples: int | None
    work_dir: Path
    out_dir: Path
    glue_dir: str | None
    model_paths: dict[str, str]  # paths given on the command line (--model-path, --mpnet-path)
    quick: bool
    argv: list[str]

    def train_settings(self, output_dir: str = "", seed: int = 42) -> TrainSettings:
        """The training hyper-parameters of every run (only the seed and folder differ between runs).

        Checkpoints are written only at the end (the Trainer always saves one there) and deleted after the run:
        an interrupted run is trained again from the start, so that its training time stays comparable.
        """
        return TrainSettings(
            output_dir=output_dir, seed=seed, num_train_epochs=self.epochs, learning_rate=self.learning_rate,
            save_steps=10**9, disable_tqdm=True,
        )

    def run_key(self, spec: RunSpec) -> dict:
        """What a finished run must have been trained with to be reused (JSON-ready)."""
        return {
            "model": spec.model.name, "task": spec.task.folder, "seed": spec.seed, "method": spec.method,
            "epochs": self.epochs, "learning_rate": self.learning_rate,
            "max_train_samples": self.max_train_samples, "max_eval_samples": self.max_eval_samples,
        }


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=SCRIPT, description="Fine-tune, evaluate every exit rule and write the results report."
    )
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: minilm, {','.join(QUICK_TASKS)}, seed 42, {QUICK['max_train_samples']} "
                        f"training and {QUICK['max_eval_samples']} dev examples, 1 epoch, into runs/report-quick "
                        "(explicit flags override these)")
    p.add_argument("--models", type=model_list, default=None, help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--tasks", type=task_list, default=None,
                   help="comma-separated GLUE tasks for every model (default: MiniLM RTE,MRPC,STS-B,CoLA,SST-2; "
                        "MPNet RTE,MRPC,STS-B)")
    p.add_argument("--seeds", action="append", default=None, metavar="[TASK=]SEEDS",
                   help="comma-separated seeds for every task, or TASK=SEEDS for one task (repeatable); default "
                        "42,43,44 for RTE/MRPC/STS-B and 42 for the others")
    p.add_argument("--epochs", type=float, default=None, help=f"training epochs (default {DEFAULT_EPOCHS:g})")
    p.add_argument("--learning-rate", type=float, default=None,
                   help=f"backbone learning rate (default: TrainSettings' {TrainSettings.learning_rate:g})")
    p.add_argument("--max-train-samples", type=int, default=None, help="train on the first N examples only")
    p.add_argument("--max-eval-samples", type=int, default=None, help="evaluate on the first N dev examples only")
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


def make_config(args: argparse.Namespace, argv: list[str]) -> ReportConfig:
    """Resolve defaults (--quick ones where a flag is not given) and check the models exist."""
    quick = args.quick
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
        epochs=given_or_default(args.epochs, quick, QUICK["epochs"], DEFAULT_EPOCHS),
        learning_rate=args.learning_rate if args.learning_rate is not None else TrainSettings.learning_rate,
        max_train_samples=given_or_default(args.max_train_samples, quick, QUICK["max_train_samples"], None),
        max_eval_samples=given_or_default(args.max_eval_samples, quick, QUICK["max_eval_samples"], None),
        work_dir=Path(args.work_dir) if args.work_dir else (default_dir or REPO_ROOT / "runs" / "report"),
        out_dir=out_dir,
        glue_dir=args.glue_dir,
        model_paths=paths,
        quick=quick,
        argv=list(argv),
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
            for seed in config.seeds[task.name]:
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
    if meta.get("settings") != want:
        diff = ", ".join(f"{k} {meta.get('settings', {}).get(k)!r} != {v!r}" for k, v in want.items()
                         if meta.get("settings", {}).get(k) != v)
        raise ReportError(f"{folder} holds a run with other settings ({diff}): remove it or choose another --work-dir")
    if {record_key(r) for r in final_records(spec)} == expected_keys(spec):
        return "done"
    if (folder / "trainer_state.json").is_file() and is_pabee_folder(folder):
        return "trained"
    return "new"


def run_settings(spec: RunSpec, config: ReportConfig, train: bool) -> RunSettings:
    """The runner's settings: train and evaluate, or evaluate the already trained model in the folder."""
    folder = str(spec.output_dir)
    common = dict(
        output_dir=folder, task_name=spec.task.folder, data_dir=config.glue_dir, do_eval=True,
        exit_rules=list(spec.rules), eval_batch_sizes=list(BATCH_SIZES), max_eval_samples=config.max_eval_samples,
        progress=False,
    )
    if not train:
        return RunSettings(**common, model_name_or_path=folder)
    return RunSettings(
        **common, model_name_or_path=spec.model.path, do_train=True, overwrite_output_dir=True,
        max_train_samples=config.max_train_samples, loss_weighting="last" if spec.method == PLAIN else None,
        train=config.train_settings(folder, spec.seed),
    )


def execute_run(spec: RunSpec, status: str, config: ReportConfig) -> float:
    """Train (status "new") and/or evaluate one run; its printed tables go to run.log. Returns the seconds taken."""
    folder = spec.output_dir
    meta = read_json(folder / RUN_META) if status == "trained" else None
    if status == "new":
        shutil.rmtree(folder, ignore_errors=True)  # a run of this report that did not finish: start it afresh
    folder.mkdir(parents=True, exist_ok=True)
    meta = meta or {"settings": config.run_key(spec), "elapsed_s": 0.0}
    write_json(folder / RUN_META, meta)
    start = time.perf_counter()
    with open(folder / "run.log", "a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        run(run_settings(spec, config, train=status == "new"))
    for checkpoint in folder.glob("checkpoint-*"):  # only needed to resume training, which the report never does
        shutil.rmtree(checkpoint, ignore_errors=True)
    elapsed = time.perf_counter() - start
    meta["elapsed_s"] += elapsed
    write_json(folder / RUN_META, meta)
    return elapsed


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min {secs:02d} s"


def run_all(plan: Sequence[RunSpec], config: ReportConfig, log: Callable[[str], None]) -> dict[Path, bool]:
    """Reuse, re-evaluate or train every planned run, with one progress line per run. -> {folder: reused}."""
    statuses = [run_status(spec, config) for spec in plan]  # every folder checked before anything runs
    todo = sum(s != "done" for s in statuses)
    log(f"plan: {len(plan)} runs, {len(plan) - todo} reused, {todo} to run (work dir {config.work_dir})")
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
        elapsed = execute_run(spec, status, config)
        log(f"{prefix} finished {spec.label} in {format_seconds(elapsed)} "
            f"(report so far {format_seconds(time.perf_counter() - start)})")
    return reused


def training_time(folder: Path) -> dict:
    """train_runtime and epochs from the Trainer's final state, and their ratio (seconds per epoch)."""
    state = read_json(folder / "trainer_state.json") or {}
    final = next((e for e in reversed(state.get("log_history", [])) if "train_runtime" in e), None)
    if final is None:
        return {"train_runtime_s": None, "epochs": None, "train_s_per_epoch": None}
    epochs = final.get("epoch") or state.get("epoch") or state.get("num_train_epochs")
    runtime = float(final["train_runtime"])
    return {"train_runtime_s": runtime, "epochs": epochs, "train_s_per_epoch": runtime / epochs if epochs else None}


def load_run(spec: RunSpec, reused: bool) -> dict:
    """A run's metadata, training time and raw records, as stored in results.json."""
    meta = read_json(spec.output_dir / RUN_META) or {}
    return {
        "model": spec.model.name, "task": spec.task.folder, "seed": spec.seed, "method": spec.method,
        "output_dir": display_path(spec.output_dir), "reused": reused, "elapsed_s": meta.get("elapsed_s"),
        **training_time(spec.output_dir), "records": final_records(spec),
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


def training_ratio(runs: Sequence[dict]) -> dict:
    """Seconds per training epoch of each method (mean over seeds) and PABEE / plain."""
    per_method = {}
    for method in METHODS:
        values = [r["train_s_per_epoch"] for r in runs if r["method"] == method and r["train_s_per_epoch"]]
        per_method[method] = mean_std(values)[0] if values else None
    plain, pabee = per_method[PLAIN], per_method[PABEE]
    return {"plain_s_per_epoch": plain, "pabee_s_per_epoch": pabee,
            "ratio": pabee / plain if plain and pabee else None}


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


def count_training_examples(task: TaskSpec, config: ReportConfig) -> dict:
    """Training examples available and used (after --max-train-samples); None when the data cannot be read."""
    try:
        data = load_task_data(RunSettings(output_dir="", task_name=task.folder, data_dir=config.glue_dir,
                                          do_train=True))
        available = len(data.train or [])
    except (ValueError, OSError):
        return {"available": None, "used": config.max_train_samples}
    used = available if config.max_train_samples is None else min(available, config.max_train_samples)
    return {"available": available, "used": used}


def aggregate(plan: Sequence[RunSpec], reused: dict[Path, bool], config: ReportConfig, started: float) -> dict:
    """results.json: settings, machine, every run with its raw records, and the per-task summaries."""
    runs = [load_run(spec, reused[spec.output_dir]) for spec in plan]
    summaries = []
    for model in config.models:
        for task in config.tasks[model.name]:
            task_runs = [r for r in runs if r["model"] == model.name and r["task"] == task.folder]
            summaries.append(summarize_task(model, task, task_runs))
    tasks = list({t.name: t for ts in config.tasks.values() for t in ts}.values())
    hyper = dataclasses.asdict(config.train_settings())
    for key in ("output_dir", "seed", "resume_from_checkpoint", "disable_tqdm"):
        hyper.pop(key)
    hyper["classifier_learning_rate"] = hyper["classifier_learning_rate"] or CLASSIFIER_LR_RATIO * config.learning_rate
    hyper["max_seq_length"] = RunSettings(output_dir="").max_seq_length
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
        "hyper_parameters": hyper,
        "eval_batch_sizes": list(BATCH_SIZES),
        "max_train_samples": config.max_train_samples,
        "max_eval_samples": config.max_eval_samples,
        "training_examples": {t.folder: count_training_examples(t, config) for t in tasks},
        "targets": {"layer_speedup": LAYER_SPEEDUP_TARGETS,
                    "wall_to_layer": {str(bs): v for bs, v in WALL_TO_LAYER_TARGETS.items()},
                    "quality_tolerance": QUALITY_TOLERANCE},
        "total_seconds": time.perf_counter() - started,
        "runs_seconds": sum(r["elapsed_s"] or 0.0 for r in runs),
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
    args = ["--models", model, "--tasks", task.folder, "--seeds", ",".join(map(str, config.seeds[task.name])),
            "--epochs", f"{config.epochs:g}", "--learning-rate", f"{config.learning_rate:g}"]
    for flag, value in (("--max-train-samples", config.max_train_samples),
                        ("--max-eval-samples", config.max_eval_samples), ("--glue-dir", config.glue_dir)):
        if value is not None:
            args += [flag, str(value)]
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
    return (f"Training time per epoch (mean over seeds): plain {format_seconds(t['plain_s_per_epoch'])}, PABEE "
            f"{format_seconds(t['pabee_s_per_epoch'])}; **PABEE / plain = {t['ratio']:.2f}**.")


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


def render_setup(report: dict) -> list[str]:
    mach, hyper = report["machine"], report["hyper_parameters"]
    models = "; ".join(f"**{m['name']}** `{display_path(m['path'])}` ({m['model_type']}, {m['num_layers']} layers)"
                       for m in report["models"].values())
    seeds = "; ".join(f"{task} {', '.join(map(str, s))}" for task, s in report["seeds"].items())
    examples = "; ".join(f"{task} {c['used'] if c['used'] is not None else '?'}"
                         + (f" of {c['available']}" if c["available"] is not None else "")
                         for task, c in report["training_examples"].items())
    lines = [
        f"- **Models**: {models}.",
        f"- **Training** (the same for plain and PABEE, per seed): {hyper['num_train_epochs']:g} epoch(s), learning "
        f"rate {hyper['learning_rate']:g} (classifiers {hyper['classifier_learning_rate']:g}), batch "
        f"{hyper['per_device_train_batch_size']}, warm-up {hyper['warmup_steps']:g}, weight decay "
        f"{hyper['weight_decay']:g}, max length {hyper['max_seq_length']}. Plain = loss weighting `last` (one "
        "classifier on the last layer); PABEE = the default weighting (classifier i weighted i / Σ i).",
        f"- **Seeds**: {seeds}. Tables give the mean over seeds (± sample standard deviation with more than one).",
        f"- **Training examples used**: {examples}.",
        "- **Exit rules** (PABEE model): patience 1..L−1; entropy < f · ln C for f in "
        f"{', '.join(map(str, ENTROPY_FRACTIONS))}; confidence ≥ {', '.join(map(str, CONFIDENCES))} (those > 1/C); "
        "fixed layer 1..L−1; regression tasks patience (default threshold) and fixed layer only; full depth always.",
        "- **Wall-clock speed-up** at batch size b = time of PABEE full depth / time of the rule, both measured at b "
        "in the same evaluation run (`wall_speedup` of the records): one timed pass per rule, no repeats, so a few "
        "percent of noise. † = plain fine-tuning, timed in its own run: PABEE full-depth time / plain time (both run "
        "every layer, so about 1). Wall / layer = wall-clock speed-up / layer speed-up (means over seeds).",
        f"- **Machine**: {mach['cpu_model']}, {mach['logical_cores']} logical cores ({mach['usable_cores']} usable), "
        f"torch threads {mach['torch_num_threads']}; Python {mach['python_version']}, torch {mach['torch_version']}, "
        f"transformers {mach['transformers_version']}; {mach['platform']}. Runs ran one after another on a machine "
        "other jobs may share.",
        f"- **Run time**: this invocation {format_seconds(report['total_seconds'])}; the {report['num_runs']} runs "
        f"took {format_seconds(report['runs_seconds'])} in all ({report['num_reused']} reused from earlier "
        "invocations).",
    ]
    return lines


def render_warnings(report: dict) -> list[str]:
    lines = []
    if report["quick"]:
        lines.append("> **Quick smoke run** (`--quick`): tiny training and dev subsets, not results.")
    if report["max_train_samples"] is not None:
        lines.append(f"> **Training subset**: only the first {report['max_train_samples']} training examples of "
                     "each task were used (`--max-train-samples`).")
    if report["max_eval_samples"] is not None:
        lines.append(f"> **Dev subset**: only the first {report['max_eval_samples']} dev examples of each task were "
                     "evaluated (`--max-eval-samples`).")
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
    """Plan, run (or reuse), aggregate and render. Returns 0, or 2 with a one-line error on stderr."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        config = make_config(args, argv)
        plan = plan_runs(config)
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
