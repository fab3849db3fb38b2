"""Reader for the standard GLUE folder layout, and the GLUE leaderboard prediction writer.

GLUE files are read with ``csv.reader(f, delimiter="\\t", quotechar=None)`` from ``utf-8-sig`` text (MRPC
starts with a BOM). Columns are found by header name where the file has a header; CoLA train/dev have none.
Every malformed row is reported as ``path:line: reason`` in a one-line :class:`DataError`.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pabee.files import atomic_write_text
from pabee.tasks import TaskSpec, get_task

from .examples import DataError, Example, _rows

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------
# GLUE layouts


@dataclass(frozen=True)
class _Layout:
    """Where the fields of one GLUE file live: header names, or positions when ``n_fields`` is set (no header)."""

    text_a: str | int
    text_b: str | int | None
    label: str | int | None
    index: str | int | None
    n_fields: int | None = None  # set for headerless files (CoLA train/dev)


_PAIR = _Layout("sentence1", "sentence2", "label", "index")
_PAIR_TEST = _Layout("sentence1", "sentence2", None, "index")

_LABELED_LAYOUTS: dict[str, _Layout] = {
    "cola": _Layout(text_a=3, text_b=None, label=1, index=None, n_fields=4),
    "sst-2": _Layout("sentence", None, "label", None),
    "mrpc": _Layout("#1 String", "#2 String", "Quality", None),
    "sts-b": _Layout("sentence1", "sentence2", "score", "index"),
    "qqp": _Layout("question1", "question2", "is_duplicate", "id"),
    "mnli": _Layout("sentence1", "sentence2", "gold_label", "index"),
    "qnli": _Layout("question", "sentence", "label", "index"),
    "rte": _PAIR,
    "wnli": _PAIR,
}

_TEST_LAYOUTS: dict[str, _Layout] = {
    "cola": _Layout("sentence", None, None, "index"),
    "sst-2": _Layout("sentence", None, None, "index"),
    "mrpc": _Layout("#1 String", "#2 String", None, "index"),
    "sts-b": _PAIR_TEST,
    "qqp": _Layout("question1", "question2", None, "id"),
    "mnli": _PAIR_TEST,
    "qnli": _Layout("question", "sentence", None, "index"),
    "rte": _PAIR_TEST,
    "wnli": _PAIR_TEST,
}


# The real QQP train file has a few rows with missing fields; like the Hugging Face GLUE processors, we skip such
# rows there (with a warning that names the file, the count and the first line) instead of refusing the file.
_SKIP_MALFORMED_ROWS = frozenset({"qqp"})


def _is_test_split(task: TaskSpec, split: str) -> bool:
    return split in task.test_splits or split.startswith("test")


def _resolve_task(task: TaskSpec | str) -> TaskSpec:
    return get_task(task) if isinstance(task, str) else task


def _check_label(task: TaskSpec, raw: str, where: str) -> str | float:
    """Validate a raw label field: a member of label_list, or a finite float for regression."""
    value = raw.strip()
    if task.label_list is None:
        try:
            number = float(value)
        except ValueError:
            raise DataError(f"{where}: score {raw!r} is not a number (task {task.name})") from None
        if not math.isfinite(number):
            raise DataError(f"{where}: score {raw!r} is not a finite number (task {task.name})")
        return number
    if value not in task.label_list:
        raise DataError(
            f"{where}: label {value!r} is not one of {list(task.label_list)} for task {task.name}"
        )
    return value


def _column_position(path: Path, header: list[str], column: str | int | None) -> int | None:
    if column is None or isinstance(column, int):
        return column
    try:
        return header.index(column)
    except ValueError:
        raise DataError(f"{path}:1: missing column {column!r} (columns: {', '.join(header)})") from None


def _check_data_dir(task: TaskSpec, data_dir: Path, split: str) -> Path:
    """Return the path of ``{split}.tsv`` or raise a DataError explaining what is missing."""
    if not data_dir.exists():
        raise DataError(f"GLUE data folder not found: {data_dir} (expected the {task.folder} task folder)")
    if not data_dir.is_dir():
        raise DataError(f"GLUE data folder is not a folder: {data_dir}")
    path = data_dir / f"{split}.tsv"
    if path.is_file():
        return path
    present = sorted(p.name for p in data_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    has = f"it has: {', '.join(present)}" if present else "the folder has no files"
    hint = ""
    if task.folder and (data_dir / task.folder / f"{split}.tsv").is_file():
        hint = f"; did you mean --data_dir {data_dir / task.folder}?"
    expected = ", ".join(f"{s}.tsv" for s in task.splits)
    raise DataError(f"GLUE file not found: {path} ({has}; {task.name} expects {expected}){hint}")


def read_glue_split(task: TaskSpec | str, data_dir: str | Path, split: str) -> list[Example]:
    """Read ``{data_dir}/{split}.tsv`` in the standard GLUE layout of ``task``.

    Args:
        task: a GLUE :class:`TaskSpec` (or its name).
        data_dir: the task folder, e.g. ``glue/MRPC``.
        split: file stem: "train", one of ``task.dev_splits`` or one of ``task.test_splits``. Splits whose name
            starts with "test" are read as unlabeled (label None).

    Returns:
        The examples in file order; guids are ``"{split}-{index}"``.

    Raises:
        DataError: missing folder/file, empty file, missing column, wrong field count, bad label or score.
    """
    task = _resolve_task(task)
    if task.name not in _LABELED_LAYOUTS:
        raise DataError(f"task {task.name!r} has no GLUE layout; use read_custom_file for custom data")
    path = _check_data_dir(task, Path(data_dir), split)
    is_test = _is_test_split(task, split)
    layout = _TEST_LAYOUTS[task.name] if is_test else _LABELED_LAYOUTS[task.name]

    examples: list[Example] = []
    try:
        handle = open(path, encoding="utf-8-sig", newline="")
    except OSError as err:
        raise DataError(f"cannot open {path}: {err.strerror}") from None
    with handle:
        reader = csv.reader(handle, delimiter="\t", quotechar=None, quoting=csv.QUOTE_NONE)
        rows = _rows(path, reader)
        if layout.n_fields is None:
            first = next(rows, None)
            if first is None:
                raise DataError(f"{path}: file is empty")
            header = first[1]
            n_fields = len(header)
            pos_a = _column_position(path, header, layout.text_a)
            pos_b = _column_position(path, header, layout.text_b)
            pos_label = _column_position(path, header, layout.label)
            pos_index = _column_position(path, header, layout.index)
        else:
            n_fields = layout.n_fields
            pos_a, pos_b, pos_label, pos_index = layout.text_a, layout.text_b, layout.label, layout.index

        skipped: list[int] = []
        for line, fields in rows:
            where = f"{path}:{line}"
            if len(fields) != n_fields:
                if task.name in _SKIP_MALFORMED_ROWS:
                    skipped.append(line)
                    continue
                raise DataError(f"{where}: expected {n_fields} tab-separated fields, found {len(fields)}")
            index = fields[pos_index].strip() if pos_index is not None else str(len(examples))
            label = _check_label(task, fields[pos_label], where) if pos_label is not None else None
            examples.append(
                Example(
                    guid=f"{split}-{index}",
                    text_a=fields[pos_a],
                    text_b=fields[pos_b] if pos_b is not None else None,
                    label=label,
                )
            )
        if skipped:
            logger.warning(
                "%s: skipped %d malformed row(s) (first at line %d): wrong number of fields", path, len(skipped),
                skipped[0],
            )
    if not examples:
        raise DataError(f"{path}: file is empty" if layout.n_fields is not None else f"{path}: no data rows")
    return examples


def label_to_id(task: TaskSpec, label: str | float | int) -> int | float:
    """Map an example's label to the model target: its index in ``task.label_list``, or a float for regression.

    Raises:
        ValueError: the label is None (unlabeled row) or not in the task's label list.
    """
    if label is None:
        raise ValueError(f"task {task.name}: example has no label (unlabeled test row?)")
    if task.label_list is None:
        return float(label)
    key = label if isinstance(label, str) else str(label)
    try:
        return task.label_list.index(key)
    except ValueError:
        raise ValueError(
            f"label {label!r} is not one of {list(task.label_list)} for task {task.name}"
        ) from None


def example_index(example: Example) -> str:
    """The row index carried by an example's guid (the text after the last "-")."""
    return example.guid.rsplit("-", 1)[-1]



# --------------------------------------------------------------------------------------------------------------
# Predictions


def write_glue_predictions(
    task: TaskSpec,
    examples: Sequence[Example],
    predictions: Sequence[int | float],
    path: str | Path,
) -> Path:
    """Write a GLUE leaderboard file: header ``index\\tprediction``, then one row per example.

    ``index`` is the example's row index (see :func:`example_index`); the prediction is the label string for
    classification (``predictions`` are label ids) or the float with 3 decimals for regression. The file is
    written to a temporary file in the same folder and moved into place with ``os.replace``.

    Returns:
        The path written.

    Raises:
        ValueError: lengths differ or a prediction is not a valid label id.
    """
    path = Path(path)
    if len(examples) != len(predictions):
        raise ValueError(f"{len(examples)} examples but {len(predictions)} predictions")
    lines = ["index\tprediction\n"]
    for example, prediction in zip(examples, predictions, strict=True):
        if task.label_list is None:
            value = f"{float(prediction):.3f}"
        else:
            try:
                label_id = int(prediction)
                valid = label_id == prediction and 0 <= label_id < len(task.label_list)
            except (TypeError, ValueError, OverflowError):
                valid = False
            if not valid:
                raise ValueError(
                    f"prediction {prediction!r} for {example.guid} is not a label id in "
                    f"0..{len(task.label_list) - 1} for task {task.name}"
                )
            value = task.label_list[label_id]
        lines.append(f"{example_index(example)}\t{value}\n")

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(lines), newline="")
    return path
