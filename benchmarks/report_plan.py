"""The results report's plan: its fixed choices (models, tasks, seeds, hyper-parameters, exit rules, targets), the
resolved settings of one invocation (:class:`ReportConfig`), the list of runs they make (:func:`plan_runs`) and the
commands that make them again (:func:`subset_command`: one table's runs)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pabee.exit_rules import ExitRule
from pabee.settings import TrainSettings, default_of
from pabee.tasks import TaskSpec
from pabee.tuning import CONFIDENCES as CONFIDENCES  # re-exported: the report's candidates are the library's
from pabee.tuning import DEFAULT_MAX_DROP, candidate_exit_rules
from pabee.tuning import ENTROPY_FRACTIONS as ENTROPY_FRACTIONS  # re-exported (fractions of ln C)
from pabee.tuning import HYBRID_RULES as HYBRID_RULES  # re-exported (patience, confidence) pairs

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "benchmarks/report.py"

MODELS = ("minilm", "mpnet")
DEFAULT_TASKS = {"minilm": ("RTE", "MRPC", "STS-B", "CoLA", "SST-2"), "mpnet": ("RTE", "MRPC", "STS-B")}
QUICK_TASKS = ("RTE",)
MULTI_SEED_TASKS = ("rte", "mrpc", "sts-b")  # TaskSpec.name of the tasks that get several seeds by default
MULTI_SEEDS, ONE_SEED = (42, 43, 44), (42,)
# Training hyper-parameters per model for the full report (a flag, for every model or MODEL=VALUE, overrides them).
# max_train_samples None: every training example. The learning rate and batch size are pabee's own defaults.
_LR, _BATCH = default_of(TrainSettings, "learning_rate"), default_of(TrainSettings, "per_device_train_batch_size")
MODEL_DEFAULTS = {
    "minilm": {"epochs": 5.0, "learning_rate": _LR, "max_train_samples": None, "batch_size": _BATCH,
               "precision": "fp32", "max_eval_samples": None},
    # MPNet-base is about 6x MiniLM's cost per token on the CPU and its dev evaluation sweeps 39 exit rules at two
    # batch sizes: to fit a 2-core CPU it trains 2 epochs on the first 2000 training examples (bf16 autocast halves
    # the training time) and is evaluated on the first 200 dev examples; the report states both subsets.
    "mpnet": {"epochs": 2.0, "learning_rate": _LR, "max_train_samples": 2000, "batch_size": _BATCH,
              "precision": "bf16", "max_eval_samples": 200},
}
# --quick: the same for every model, and fewer dev examples and timing rounds
QUICK = {"epochs": 1.0, "learning_rate": _LR, "max_train_samples": 200, "batch_size": _BATCH, "precision": "fp32",
         "max_eval_samples": 100, "timing_rounds": 1}
CHECKPOINT_STEPS = 50  # an interrupted training resumes from its last checkpoint (MPNet-base: ~6 min of steps)
TASK_EPOCHS = {"sst-2": 2.0}  # full report: epochs of tasks with large training sets (TaskSpec.name -> epochs)
MAX_SEEDS = {"minilm": None, "mpnet": 1}  # full report: how many of each task's seeds a model runs (None: all)
HYPER_FLAGS = {"epochs": "--epochs", "learning_rate": "--learning-rate", "max_train_samples": "--max-train-samples",
               "batch_size": "--batch-size", "precision": "--precision",
               "max_eval_samples": "--max-eval-samples"}  # ModelHyper field -> its flag
PRECISIONS = ("fp32", "bf16")  # of training (bf16: mixed-precision autocast); evaluation always runs in fp32
DEFAULT_TIMING_ROUNDS = 3
# how many dev examples the few timed settings run on (None: every evaluated one); the metric, exit layers and
# layer speed-up of every setting come from the replay over all of them (report_evaluate)
DEFAULT_TIMING_EXAMPLES = {"minilm": None, "mpnet": 64}
BATCH_SIZES = (1, 32)
PLAIN, PABEE, DISTILL = "plain", "pabee", "distill"
METHODS = (PLAIN, PABEE)  # the default plan
ALL_METHODS = (PLAIN, PABEE, DISTILL)  # distill: PABEE's weighting + self-distillation (--methods plain,pabee,distill)
DISTILL_ALPHA, DISTILL_TEMPERATURE = 0.5, 2.0  # distill's --distillation_alpha / --distillation_temperature

OTHER_KINDS = ("entropy", "confidence", "layer", "hybrid")  # rules matched to the patience points by layer speed-up

LAYER_SPEEDUP_TARGETS = {"minilm": 1.3, "mpnet": 1.6}
WALL_TO_LAYER_TARGETS = {1: 0.95, 32: 0.85}  # batch size -> minimum wall-clock / layer speed-up
QUALITY_TOLERANCE = 0.005  # "within 0.5 points" of plain fine-tuning, in metric units
# issue #16's targets for the tuned setting (honest estimate, mean over seeds, within QUALITY_TOLERANCE of plain
# fine-tuning of the same seeds): model -> task folder -> minimum layer speed-up; STS-B's 1.2x for every model
TUNED_TARGETS = {"mpnet": {"RTE": 1.6, "MRPC": 1.6, "STS-B": 1.2},
                 "minilm": {"RTE": 1.3, "MRPC": 1.3, "CoLA": 1.3, "STS-B": 1.2}}
TUNED_AIM = {"mpnet": {"RTE": 2.0, "MRPC": 2.0}}  # what MPNet aims at with the best training option

MPNET_HINT = (
    "get it with ../shared/models/get-mpnet-base.sh DEST, then pass --mpnet-path DEST or set PABEE_MPNET_PATH"
)


class ReportError(Exception):
    """A problem reported as one line (exit code 2)."""


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
    """Everything the report needs, resolved from the command line (``report_args.make_config``)."""

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
    methods: tuple[str, ...] = METHODS  # in ALL_METHODS order
    distillation: tuple[float, float] = (DISTILL_ALPHA, DISTILL_TEMPERATURE)  # distill's (alpha, temperature)
    hybrid_rules: bool = False  # also evaluate HYBRID_RULES (classification tasks, every early-exit method)
    timing_examples: dict[str, int | None] = field(default_factory=lambda: dict(DEFAULT_TIMING_EXAMPLES))
    max_drop: float = DEFAULT_MAX_DROP  # tuning budget: points of the main metric below the run's full depth
    evaluate_only: bool = False  # train nothing: evaluate the trained runs, show the others as missing
    keep_from: tuple[Path, ...] = ()  # other results.json files to keep runs from once their folders are gone

    def seeds_for(self, model: str, task: TaskSpec) -> list[int]:
        seeds = self.seeds[task.name]
        limit = self.max_seeds.get(model)
        return seeds if limit is None else seeds[:limit]

    def train_settings(
        self, model: str, output_dir: str = "", seed: int = 42, task: TaskSpec | None = None
    ) -> TrainSettings:
        """The training hyper-parameters of every run of ``model`` (only the seed and folder differ between runs).

        A checkpoint is written every :data:`CHECKPOINT_STEPS` steps (only the last one is kept) so that an
        interrupted run resumes from it (its training time then covers only the last invocation: the run is
        marked ``resumed``); checkpoints are deleted once the run is trained.
        """
        h = self.hyper[model]
        return TrainSettings(
            output_dir=output_dir, seed=seed, num_train_epochs=h.epochs_for(task), learning_rate=h.learning_rate,
            per_device_train_batch_size=h.batch_size, save_steps=CHECKPOINT_STEPS, save_total_limit=1,
            disable_tqdm=True,
            bf16=h.precision == "bf16",
        )

    def run_key(self, spec: RunSpec) -> dict:
        """What a finished run must have been trained with to be reused (JSON-ready). The timing rounds are not
        part of it: a run evaluated with other rounds is reused as it is."""
        h = self.hyper[spec.model.name]
        key = {
            "model": spec.model.name, "task": spec.task.folder, "seed": spec.seed, "method": spec.method,
            "epochs": h.epochs_for(spec.task), "learning_rate": h.learning_rate, "batch_size": h.batch_size,
            "precision": h.precision, "max_train_samples": h.max_train_samples,
            "max_eval_samples": h.max_eval_samples,
        }
        if spec.method == DISTILL:  # only distill runs have these: the keys of plain and PABEE runs never change
            key["distillation_alpha"], key["distillation_temperature"] = self.distillation
        return key

    @property
    def shard_label(self) -> str | None:
        return None if self.shard is None else f"{self.shard[0]}/{self.shard[1]}"


def exit_rules_for(task: TaskSpec, num_layers: int, hybrid: bool = False) -> list[ExitRule]:
    """The rules PABEE is evaluated with: patience and fixed layer 1..L-1, and for classification entropy
    (fractions of ln C) and confidence (thresholds above 1/C), as :func:`pabee.tuning.candidate_exit_rules` lists
    them, and with ``hybrid`` its hybrid rules too. Full depth is added by the harness."""
    kinds = ("patience", "entropy", "confidence", "layer", "hybrid") if hybrid else ("patience", "entropy", "confidence", "layer")
    return candidate_exit_rules(task.num_labels, num_layers, kinds)


def plan_runs(config: ReportConfig) -> list[RunSpec]:
    """Every (model, task, seed, method) run, plain before PABEE (before distill, when planned)."""
    plan = []
    for model in config.models:
        for task in config.tasks[model.name]:
            for seed in config.seeds_for(model.name, task):
                for method in config.methods:
                    rules = [] if method == PLAIN else exit_rules_for(task, model.num_layers, config.hybrid_rules)
                    folder = config.work_dir / model.name / task.folder.lower() / f"{method}-seed{seed}"
                    plan.append(RunSpec(model, task, seed, method, (ExitRule("patience", 0), *rules), folder))
    return plan


def shard_of(plan: Sequence[RunSpec], shard: tuple[int, int] | None) -> list[tuple[int, RunSpec]]:
    """(index in the plan, run) of the runs a --shard K/N invocation handles: index % N == K - 1."""
    if shard is None:
        return list(enumerate(plan))
    k, n = shard
    return [(i, spec) for i, spec in enumerate(plan) if i % n == k - 1]


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
    args = ["--models", model, "--tasks", task.folder, "--seeds", ",".join(map(str, config.seeds_for(model, task))),
            "--epochs", f"{h.epochs_for(task):g}", "--learning-rate", f"{h.learning_rate:g}"]
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
    if config.methods != METHODS:
        args += ["--methods", ",".join(config.methods)]
    if DISTILL in config.methods and config.distillation != (DISTILL_ALPHA, DISTILL_TEMPERATURE):
        args += ["--distill-alpha", f"{config.distillation[0]:g}", "--distill-temperature",
                 f"{config.distillation[1]:g}"]
    if config.hybrid_rules:
        args.append("--hybrid-rules")
    if config.glue_dir is not None:
        args += ["--glue-dir", str(config.glue_dir)]
    if config.timing_rounds != (QUICK["timing_rounds"] if config.quick else DEFAULT_TIMING_ROUNDS):
        args += ["--timing-rounds", str(config.timing_rounds)]
    timing_examples = config.timing_examples.get(model)
    if timing_examples != (None if config.quick else DEFAULT_TIMING_EXAMPLES.get(model)):
        args += ["--timing-examples", "all" if timing_examples is None else str(timing_examples)]
    if config.max_drop != DEFAULT_MAX_DROP:
        args += ["--max-drop", f"{config.max_drop:g}"]
    for kept in (config.out_dir / "results.json", *config.keep_from):  # runs whose folders are gone stay reused
        args += ["--keep-from", str(display_path(kept))]
    if model in config.model_paths:
        args += ["--model-path", f"{model}={config.model_paths[model]}"]
    if config.quick:
        args.append("--quick")
    args += ["--work-dir", display_path(config.work_dir),
             "--out-dir", display_path(config.work_dir / f"report-{model}-{task.folder.lower()}")]
    return command_line(args)
