"""GLUE from the Hugging Face hub (optional ``datasets`` package), used only when no data folder is given."""

from __future__ import annotations

from typing import Any

from pabee.tasks import TaskSpec

from .examples import DataError, Example, _one_line
from .glue import _resolve_task

# --------------------------------------------------------------------------------------------------------------
# Hugging Face hub (optional)

_HUB_CONFIGS: dict[str, tuple[str, str, str | None]] = {
    "cola": ("cola", "sentence", None),
    "sst-2": ("sst2", "sentence", None),
    "mrpc": ("mrpc", "sentence1", "sentence2"),
    "sts-b": ("stsb", "sentence1", "sentence2"),
    "qqp": ("qqp", "question1", "question2"),
    "mnli": ("mnli", "premise", "hypothesis"),
    "qnli": ("qnli", "question", "sentence"),
    "rte": ("rte", "sentence1", "sentence2"),
    "wnli": ("wnli", "sentence1", "sentence2"),
}

HUB_DATASET = "nyu-mll/glue"


def _hub_split(split: str) -> str:
    if split == "dev":
        return "validation"
    if split.startswith("dev_"):
        return "validation_" + split[len("dev_") :]
    return split


def _hub_label_names(dataset: Any) -> list[str] | None:
    try:
        names = dataset.features["label"].names
    except (AttributeError, KeyError, TypeError):
        return None
    return [str(name) for name in names] if names else None


def load_glue_from_hub(task: TaskSpec | str, split: str) -> list[Example]:
    """Load a GLUE split from the Hugging Face hub with the optional ``datasets`` package.

    Only used when no data folder is given. ``split`` uses this library's names ("train", "dev",
    "dev_matched", "test", ...). Integer labels are mapped to ``task.label_list`` strings (by class name where
    the hub's names match, e.g. MNLI); -1 (unlabeled test rows) becomes None.

    Raises:
        DataError: ``datasets`` is not installed, or loading failed (e.g. no network); one line that tells the
            user to pass --data_dir.
    """
    task = _resolve_task(task)
    if task.name not in _HUB_CONFIGS:
        raise DataError(f"task {task.name!r} is not on the hub; pass --data_dir with its data files")
    if split not in task.splits:
        raise DataError(
            f"unknown split {split!r} for task {task.name} (choose from {', '.join(task.splits)})"
        )
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"no GLUE data folder given and the `datasets` package is not installed: pass --data_dir with the "
            f"GLUE folder, or `pip install datasets` to download {task.name} from the Hugging Face hub"
        ) from None
    config, column_a, column_b = _HUB_CONFIGS[task.name]
    hub_split = _hub_split(split)
    try:
        dataset = datasets.load_dataset(HUB_DATASET, config, split=hub_split)
        names = _hub_label_names(dataset)
        rows = list(dataset)
    except Exception as err:  # any failure (network, cache, missing split) gets the same advice
        reason = _one_line(err) or type(err).__name__
        raise DataError(
            f"could not load GLUE {task.name} ({split}) from the Hugging Face hub: {type(err).__name__}: {reason}; "
            f"pass --data_dir with the GLUE folder instead"
        ) from None

    use_names = task.label_list is not None and names is not None and set(names) <= set(task.label_list)
    examples: list[Example] = []
    for position, row in enumerate(rows):
        try:
            raw = row.get("label")
            index = row.get("idx", position)
            text_a = str(row[column_a])
            text_b = str(row[column_b]) if column_b is not None else None
        except (KeyError, AttributeError, TypeError) as err:
            raise DataError(f"hub GLUE {task.name} ({split}) row {position}: missing field {err}") from None
        label: str | float | None
        if raw is None or (task.label_list is not None and int(raw) < 0):
            label = None
        elif task.label_list is None:
            label = float(raw)
            if label < 0:  # unlabeled STS-B test rows carry -1
                label = None
        else:
            label = names[int(raw)] if use_names and names is not None else str(int(raw))
            if label not in task.label_list:
                raise DataError(
                    f"hub GLUE {task.name} ({split}) row {position}: label {raw!r} does not map to "
                    f"{list(task.label_list)}"
                )
        examples.append(Example(f"{split}-{index}", text_a, text_b, label))
    return examples
