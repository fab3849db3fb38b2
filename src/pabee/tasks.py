"""The GLUE task table: folders, label lists, metrics and split names for the 9 GLUE tasks.

Label lists follow the Hugging Face GLUE processors exactly (order matters: a label's id is its index).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: Every metric name that :mod:`pabee.metrics` can compute.
CLASSIFICATION_METRICS: tuple[str, ...] = ("acc", "f1", "mcc")
REGRESSION_METRICS: tuple[str, ...] = ("pearson", "spearmanr")
METRIC_NAMES: tuple[str, ...] = CLASSIFICATION_METRICS + REGRESSION_METRICS


@dataclass(frozen=True)
class TaskSpec:
    """Everything the library needs to know about one task.

    Attributes:
        name: canonical lower-case key ("cola", "sst-2", "mrpc", "sts-b", "qqp", "mnli", "qnli", "rte",
            "wnli", or "custom").
        folder: the GLUE folder name ("CoLA", "SST-2", ...); empty for custom tasks.
        label_list: label strings in id order, or None for regression (STS-B).
        metric_names: metrics reported for the task (names from :data:`METRIC_NAMES`).
        main_metric: the metric used to pick a best patience; one of ``metric_names``.
        dev_splits: names of the dev splits (file stems), e.g. ``("dev",)``.
        test_splits: names of the unlabeled test splits (file stems).
        submission_names: GLUE leaderboard file stem for each test split, same order as ``test_splits``.
    """

    name: str
    folder: str
    label_list: tuple[str, ...] | None
    metric_names: tuple[str, ...]
    main_metric: str
    dev_splits: tuple[str, ...] = ("dev",)
    test_splits: tuple[str, ...] = ("test",)
    submission_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.label_list is not None:
            labels = tuple(self.label_list)
            if len(labels) < 2:
                raise ValueError(
                    f"task {self.name}: a classification task needs at least 2 labels, got {labels}"
                )
            if len(set(labels)) != len(labels):
                raise ValueError(f"task {self.name}: duplicate labels in {list(labels)}")
        allowed = REGRESSION_METRICS if self.label_list is None else CLASSIFICATION_METRICS
        if not self.metric_names:
            raise ValueError(f"task {self.name}: metric_names is empty")
        for metric in self.metric_names:
            if metric not in allowed:
                kind = "regression" if self.label_list is None else "classification"
                raise ValueError(
                    f"task {self.name}: metric '{metric}' is not a {kind} metric (choose from {list(allowed)})"
                )
        if "f1" in self.metric_names and self.label_list is not None and len(self.label_list) != 2:
            raise ValueError(
                f"task {self.name}: metric 'f1' needs exactly 2 labels, got {len(self.label_list)}"
            )
        if self.main_metric not in self.metric_names:
            raise ValueError(
                f"task {self.name}: main_metric '{self.main_metric}' is not in {list(self.metric_names)}"
            )
        if len(self.submission_names) != len(self.test_splits):
            raise ValueError(
                f"task {self.name}: {len(self.test_splits)} test splits but "
                f"{len(self.submission_names)} submission names"
            )

    @property
    def is_regression(self) -> bool:
        """True when the task predicts a float (STS-B or a custom regression task)."""
        return self.label_list is None

    @property
    def num_labels(self) -> int:
        """Number of model outputs: the number of labels, or 1 for regression."""
        return 1 if self.label_list is None else len(self.label_list)

    @property
    def splits(self) -> tuple[str, ...]:
        """All split names of the task: train, the dev splits, then the test splits."""
        return ("train", *self.dev_splits, *self.test_splits)


_BINARY = ("0", "1")

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("cola", "CoLA", _BINARY, ("mcc",), "mcc", submission_names=("CoLA",)),
        TaskSpec("sst-2", "SST-2", _BINARY, ("acc",), "acc", submission_names=("SST-2",)),
        TaskSpec("mrpc", "MRPC", _BINARY, ("acc", "f1"), "acc", submission_names=("MRPC",)),
        TaskSpec("sts-b", "STS-B", None, ("pearson", "spearmanr"), "pearson", submission_names=("STS-B",)),
        TaskSpec("qqp", "QQP", _BINARY, ("acc", "f1"), "acc", submission_names=("QQP",)),
        TaskSpec(
            "mnli",
            "MNLI",
            ("contradiction", "entailment", "neutral"),
            ("acc",),
            "acc",
            dev_splits=("dev_matched", "dev_mismatched"),
            test_splits=("test_matched", "test_mismatched"),
            submission_names=("MNLI-m", "MNLI-mm"),
        ),
        TaskSpec(
            "qnli", "QNLI", ("entailment", "not_entailment"), ("acc",), "acc", submission_names=("QNLI",)
        ),
        TaskSpec("rte", "RTE", ("entailment", "not_entailment"), ("acc",), "acc", submission_names=("RTE",)),
        TaskSpec("wnli", "WNLI", _BINARY, ("acc",), "acc", submission_names=("WNLI",)),
    )
}


def _normalize(name: str) -> str:
    return name.strip().lower().replace("-", "").replace("_", "")


_ALIASES: dict[str, str] = {_normalize(key): key for key in TASKS}


def task_names() -> list[str]:
    """Return the canonical names of the supported GLUE tasks, in GLUE order."""
    return list(TASKS)


def get_task(name: str) -> TaskSpec:
    """Look up a GLUE task by name, case-insensitively ("SST-2", "sst2", "STS_B" and "stsb" all work).

    Raises:
        ValueError: the name is not a supported task; the message lists the supported ones.
    """
    key = _ALIASES.get(_normalize(name)) if isinstance(name, str) else None
    if key is None:
        raise ValueError(f"unknown task {name!r}; supported tasks: {', '.join(task_names())}")
    return TASKS[key]


def custom_task(
    label_list: Sequence[str] | None,
    metric_names: Sequence[str] | None = None,
    *,
    main_metric: str | None = None,
) -> TaskSpec:
    """Build a :class:`TaskSpec` named "custom" for user-supplied data files.

    Args:
        label_list: the label strings in id order, or None for a regression task.
        metric_names: metrics to report; default ("acc",) plus "f1" for two labels, or ("pearson", "spearmanr")
            for regression.
        main_metric: metric used to pick a best patience; defaults to the first of ``metric_names``.

    Raises:
        ValueError: fewer than 2 or duplicate labels, or a metric that does not fit the task kind.
    """
    labels = None if label_list is None else tuple(str(label) for label in label_list)
    if metric_names is None:
        if labels is None:
            metrics: tuple[str, ...] = REGRESSION_METRICS
        else:
            metrics = ("acc", "f1") if len(labels) == 2 else ("acc",)
    else:
        metrics = tuple(metric_names)
    main = main_metric if main_metric is not None else (metrics[0] if metrics else "")
    return TaskSpec(
        name="custom",
        folder="",
        label_list=labels,
        metric_names=metrics,
        main_metric=main,
        submission_names=("custom",),
    )
