"""Streaming readers of raw-text inputs and a JSON Lines writer, for ``pabee predict MODEL``.

Formats (chosen by ``--format``, else by the file's extension; standard input is plain text unless told):

* ``text`` (any other extension): one input per line; a tab separates the two texts of a pair. Every line is an
  input (an empty line is an empty text), so output ``index`` i belongs to line i + 1.
* ``csv`` (header row, standard quoting), ``tsv`` (header row, no quoting, as GLUE), ``jsonl`` (one JSON object per
  line; blank lines skipped): the text is read from ``text_columns`` (one column, or two for pairs); by default the
  first of ``text``, ``sentence`` or ``sentence1,sentence2`` the file has.

Readers are generators: a file of any size is read one record at a time. Malformed input raises
:class:`~pabee.data.DataError` naming the file and line.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from .data import DataError
from .files import temporary_path

FORMATS = ("text", "csv", "tsv", "jsonl")
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
DEFAULT_COLUMNS = (("text",), ("sentence",), ("sentence1", "sentence2"))
Row = str | tuple[str, str]


def detect_format(path: str | None, declared: str | None = None) -> str:
    """The input format: ``declared`` if given, else from the extension ("-" and None mean standard input: text)."""
    if declared:
        if declared not in FORMATS:
            raise DataError(f"unknown input format {declared!r}; choose one of {', '.join(FORMATS)}")
        return declared
    if path in (None, "-"):
        return "text"
    return EXTENSIONS.get(Path(path).suffix.lower(), "text")


def open_input(path: str | None) -> IO[str]:
    """A UTF-8 text stream (a leading byte-order mark is dropped) for a file, or standard input for None or "-"."""
    if path in (None, "-"):
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
    if Path(path).is_dir():
        raise DataError(f"{path} is a folder, not an input file")
    try:
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as err:
        raise DataError(f"cannot open {path}: {err.strerror}") from None


def read_inputs(
    stream: IO[str], fmt: str, text_columns: Sequence[str] | None = None, name: str = "<stdin>"
) -> Iterator[Row]:
    """Yield each input of ``stream`` (a text, or a (text, text) pair), lazily."""
    if fmt == "text":
        if text_columns:
            raise DataError("--text_columns applies to csv, tsv and jsonl inputs, not to plain text")
        rows = _text_rows(stream, name)
    elif fmt in ("csv", "tsv"):
        rows = _table_rows(stream, fmt, text_columns, name)
    elif fmt == "jsonl":
        rows = _json_rows(stream, text_columns, name)
    else:
        raise DataError(f"unknown input format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return _decoded(rows, name)


def _decoded(rows: Iterator[Row], name: str) -> Iterator[Row]:
    try:
        yield from rows
    except UnicodeDecodeError as err:
        raise DataError(f"{name}: not valid UTF-8 text ({err.reason})") from None
    except csv.Error as err:
        raise DataError(f"{name}: malformed CSV ({err})") from None


def _text_rows(stream: IO[str], name: str) -> Iterator[Row]:
    for line_no, line in enumerate(stream, start=1):
        line = line.rstrip("\r\n")
        fields = line.split("\t")
        if len(fields) > 2:
            raise DataError(
                f"{name}:{line_no}: {len(fields)} tab-separated fields; a line holds one text, or two separated "
                "by one tab"
            )
        yield fields[0] if len(fields) == 1 else (fields[0], fields[1])


def _table_rows(stream: IO[str], fmt: str, text_columns: Sequence[str] | None, name: str) -> Iterator[Row]:
    if fmt == "csv":
        reader = csv.reader(stream)
    else:
        reader = csv.reader(stream, delimiter="\t", quotechar=None, quoting=csv.QUOTE_NONE)
    header = next(reader, None)
    if header is None:
        raise DataError(f"{name}: file is empty (expected a header row)")
    header = [column.strip() for column in header]
    positions = [header.index(c) for c in _columns(text_columns, header, name)]
    for fields in reader:
        line = reader.line_num
        if not fields or fields == [""]:
            continue
        if len(fields) != len(header):
            sep = "comma" if fmt == "csv" else "tab"
            raise DataError(f"{name}:{line}: expected {len(header)} {sep}-separated fields, found {len(fields)}")
        texts = [fields[p] for p in positions]
        yield texts[0] if len(texts) == 1 else (texts[0], texts[1])


def _json_rows(stream: IO[str], text_columns: Sequence[str] | None, name: str) -> Iterator[Row]:
    columns: list[str] | None = None
    for line_no, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        where = f"{name}:{line_no}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: invalid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, found {type(record).__name__}")
        if columns is None:
            columns = _columns(text_columns, list(record), where)
        texts = []
        for column in columns:
            if column not in record:
                raise DataError(f"{where}: missing column {column!r} (columns: {', '.join(record)})")
            value = record[column]
            if value is None or isinstance(value, (dict, list)):
                raise DataError(f"{where}: column {column!r} holds {json.dumps(value)[:40]}, expected text")
            texts.append(value if isinstance(value, str) else str(value))
        yield texts[0] if len(texts) == 1 else (texts[0], texts[1])


def _columns(text_columns: Sequence[str] | None, available: list[str], where: str) -> list[str]:
    if text_columns:
        columns = list(text_columns)
        if not 1 <= len(columns) <= 2:
            raise DataError(f"--text_columns must name 1 or 2 columns, got {','.join(columns)}")
        for column in columns:
            if column not in available:
                raise DataError(f"{where}: missing column {column!r} (columns: {', '.join(available)})")
        return columns
    for candidate in DEFAULT_COLUMNS:
        if all(c in available for c in candidate):
            return list(candidate)
    raise DataError(f"{where}: give the text column(s) with --text_columns (columns: {', '.join(available)})")


def chunked(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    """Consecutive lists of at most ``size`` rows (the last may be shorter), read lazily."""
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class JsonLinesWriter:
    """Writes one JSON object per line to standard output ("-" or None) or to a file.

    A file is written under a temporary name and renamed by :meth:`commit`, so a failed run never leaves a partial
    file that looks complete; :meth:`discard` removes the temporary file.
    """

    def __init__(self, path: str | None):
        self.path = None if path in (None, "-") else Path(path)
        if self.path is None:
            self._tmp = None
            self.stream: IO[str] = sys.stdout
            return
        if self.path.is_dir():
            raise DataError(f"--output {path} is a folder")
        try:
            self._tmp = temporary_path(self.path)
            self.stream = open(self._tmp, "w", encoding="utf-8")
        except OSError as err:
            raise DataError(f"cannot write {path}: {err.strerror}") from None

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        self.stream.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self.stream.flush()

    def commit(self) -> None:
        """Finish: close and rename the file into place (standard output is only flushed)."""
        if self._tmp is None:
            self.stream.flush()
            return
        self.stream.close()
        os.replace(self._tmp, self.path)

    def discard(self) -> None:
        """Abandon a file output (remove the temporary file)."""
        if self._tmp is not None:
            self.stream.close()
            self._tmp.unlink(missing_ok=True)
