"""Readers for the standard GLUE folder layout and for custom csv/tsv/jsonl files, plus the GLUE
leaderboard prediction writer.

GLUE files are read with ``csv.reader(f, delimiter="\\t", quotechar=None)`` from ``utf-8-sig`` text (MRPC
starts with a BOM). Columns are found by header name where the file has a header; CoLA train/dev have none.
Every malformed row is reported as ``path:line: reason`` in a one-line :class:`DataError`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pabee.tasks import TaskSpec, get_task

__all__ = [
    "DataError",
    "Example",
    "example_index",
    "infer_label_list",
    "label_to_id",
    "load_glue_from_hub",
    "read_custom_file",
    "read_glue_split",
    "write_glue_predictions",
]


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One input row.

    Attributes:
        guid: ``"{split}-{index}"``: the row's ``index``/``id`` column when the file has one, otherwise its
            0-based position among the data rows. For test splits the part after the last "-" is the index
            written to the GLUE submission file.
        text_a: first (or only) text.
        text_b: second text for sentence-pair tasks, else None.
        label: a string from the task's label_list (classification), a float (regression), or None (test rows).
    """

    guid: str
    text_a: str
    text_b: str | None
    label: str | float | None


class DataError(ValueError):
    """A data file or folder is missing or malformed. The message is one line, ``path:line: reason`` for rows."""


def _one_line(text: object) -> str:
    """Collapse a message to its first non-empty line."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


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


def _rows(path: Path, reader: Iterator[list[str]]) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields), skipping blank lines; decoding errors become DataError."""
    line = 0
    try:
        for fields in reader:
            line = getattr(reader, "line_num", line + 1)
            if not fields:
                continue
            yield line, fields
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except csv.Error as err:
        raise DataError(f"{path}:{line + 1}: {_one_line(err)}") from None


def _not_utf8(path: Path) -> DataError:
    """The DataError for a file that is not UTF-8, naming the line and byte of its first bad byte.

    The text reader decodes ahead in blocks, so the row it had reached says nothing about where the bad byte is;
    the file is decoded again here, as bytes, to find it.
    """
    try:
        raw = path.read_bytes()
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        return DataError(
            f"{path}:{line}: not valid UTF-8 text (byte 0x{raw[err.start]:02x} at column {column}: {err.reason}); "
            "save the file as UTF-8"
        )
    except OSError as err:
        return DataError(f"cannot read {path}: {err.strerror}")
    return DataError(f"{path}: not valid UTF-8 text")


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
# Custom files


def _custom_text(value: Any, column: str, where: str) -> str:
    if value is None:
        raise DataError(f"{where}: column {column!r} is null")
    if isinstance(value, (dict, list)):
        raise DataError(f"{where}: column {column!r} holds a JSON {type(value).__name__}, expected text")
    return value if isinstance(value, str) else str(value)


def _custom_label(
    value: Any, column: str, where: str, label_list: tuple[str, ...] | None, regression: bool, label_origin: str = ""
) -> str | float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: empty label in column {column!r}")
    if regression:
        if isinstance(value, bool):
            raise DataError(f"{where}: label {value!r} in column {column!r} is not a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise DataError(f"{where}: label {value!r} in column {column!r} is not a number") from None
        if not math.isfinite(number):
            raise DataError(f"{where}: label {value!r} in column {column!r} is not a finite number")
        return number
    if isinstance(value, (dict, list)):
        raise DataError(f"{where}: label in column {column!r} is a JSON {type(value).__name__}")
    label = value.strip() if isinstance(value, str) else str(value)
    if label_list is not None and label not in label_list:
        origin = f" ({label_origin})" if label_origin else ""
        raise DataError(f"{where}: label {label!r} is not one of {list(label_list)}{origin}")
    return label


def _custom_records(path: Path, suffix: str) -> Iterator[tuple[str, dict[str, Any], list[str]]]:
    """Yield (location, record, available columns) for each data row of a custom file."""
    try:
        handle = open(path, encoding="utf-8-sig", newline="")
    except OSError as err:
        raise DataError(f"cannot open {path}: {err.strerror}") from None
    with handle:
        if suffix in (".csv", ".tsv"):
            if suffix == ".csv":
                reader = csv.reader(handle)
            else:
                reader = csv.reader(handle, delimiter="\t", quotechar=None, quoting=csv.QUOTE_NONE)
            rows = _rows(path, reader)
            first = next(rows, None)
            if first is None:
                raise DataError(f"{path}: file is empty")
            header = [name.strip() for name in first[1]]
            for line, fields in rows:
                if len(fields) != len(header):
                    sep = "comma" if suffix == ".csv" else "tab"
                    raise DataError(
                        f"{path}:{line}: expected {len(header)} {sep}-separated fields, found {len(fields)}"
                    )
                yield f"{path}:{line}", dict(zip(header, fields, strict=True)), header
            return
        # JSON Lines (a .json file holding one JSON array of objects is accepted too)
        try:
            text = handle.read()
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
        located = [(f"{path}: item {i}", item) for i, item in enumerate(items)]
    else:
        located = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                located.append((f"{path}:{line_no}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{line_no}: invalid JSON ({err.msg} at column {err.colno})") from None
    for where, item in located:
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected a JSON object, found {type(item).__name__}")
        yield where, item, list(item)


def read_custom_file(
    path: str | Path,
    text_columns: Sequence[str],
    label_column: str | None,
    label_list: Sequence[str] | None = None,
    regression: bool = False,
    *,
    label_origin: str = "",
) -> list[Example]:
    """Read a user data file into Examples.

    Formats by extension: ``.csv`` (comma-separated, standard csv quoting), ``.tsv`` (tab-separated, no quoting,
    like GLUE), ``.jsonl``/``.json`` (JSON Lines: one object per line; a ``.json`` file holding a JSON array
    of objects is accepted too). csv/tsv files start with a header row.

    Args:
        path: the file.
        text_columns: one or two column names: text_a, then text_b for sentence pairs.
        label_column: the label column, or None for unlabeled data (labels are None).
        label_list: if given, every label must be one of these strings.
        regression: parse labels as floats instead of keeping them as strings.
        label_origin: where ``label_list`` comes from, named in the error for a label outside it (e.g. "the
            labels of the model at runs/sst2").

    Returns:
        Examples with guid ``"{file stem}-{row}"`` (0-based data row), string labels (JSON numbers become
        strings, e.g. 1 -> "1") or float labels when ``regression``.

    Raises:
        DataError: missing file, unknown extension, missing column, malformed row, bad JSON line or bad label.
    """
    path = Path(path)
    columns = [text_columns] if isinstance(text_columns, str) else list(text_columns)
    if not 1 <= len(columns) <= 2:
        raise DataError(f"text_columns must name 1 or 2 columns, got {columns}")
    if regression and label_list is not None:
        raise DataError("label_list cannot be used with regression=True")
    labels = None if label_list is None else tuple(str(label) for label in label_list)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl", ".json"):
        raise DataError(f"{path}: unknown file extension {path.suffix!r} (use .csv, .tsv, .jsonl or .json)")
    if not path.is_file():
        raise DataError(f"data file not found: {path}")

    needed = [*columns] + ([label_column] if label_column is not None else [])
    examples: list[Example] = []
    for where, record, available in _custom_records(path, suffix):
        for column in needed:
            if column not in record:
                raise DataError(f"{where}: missing column {column!r} (columns: {', '.join(available)})")
        text_a = _custom_text(record[columns[0]], columns[0], where)
        text_b = _custom_text(record[columns[1]], columns[1], where) if len(columns) == 2 else None
        label = (
            _custom_label(record[label_column], label_column, where, labels, regression, label_origin)
            if label_column is not None
            else None
        )
        examples.append(Example(f"{path.stem}-{len(examples)}", text_a, text_b, label))
    if not examples:
        raise DataError(f"{path}: no data rows")
    return examples


def infer_label_list(examples: Sequence[Example]) -> tuple[str, ...]:
    """Sorted unique string labels of ``examples`` (None labels are ignored).

    Labels that all look like integers are sorted numerically ("2" before "10"), others as strings.

    Raises:
        DataError: no labels at all, or float (regression) labels.
    """
    found: set[str] = set()
    for example in examples:
        if example.label is None:
            continue
        if not isinstance(example.label, str):
            raise DataError(
                f"{example.guid}: label {example.label!r} is not a string; use regression for numeric targets"
            )
        found.add(example.label)
    if not found:
        raise DataError("no labels found in the data (is the label column set?)")
    try:
        return tuple(sorted(found, key=lambda label: (int(label), label)))
    except ValueError:
        return tuple(sorted(found))


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
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.writelines(lines)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    return path


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
