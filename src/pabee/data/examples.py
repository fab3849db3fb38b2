"""The row type every reader returns (:class:`Example`), the one error type of bad data (:class:`DataError`) and
the row helpers the readers share."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


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
