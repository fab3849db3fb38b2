"""Reader for custom csv/tsv/jsonl data files (``--train_file`` and friends), and label-list inference."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .examples import DataError, Example, _not_utf8, _rows


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
