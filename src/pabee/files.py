"""Atomic file writes: the one helper every writer of pabee uses.

A file is written under a temporary name in its own folder (``.<name>.tmp-<random><suffix>``, a pattern
:data:`pabee.run_folder.RUN_ARTEFACTS` knows), flushed to disk and moved into place with ``os.replace``, so a reader
or an interrupt never meets half a file; on failure the temporary file is removed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_path(path: str | os.PathLike, suffix: str = "") -> Path:
    """Create (empty) and return a fresh temporary file beside ``path``; the caller renames or removes it."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that takes a file name (``save_file``, ``savefig``).

    When the block ends normally the file is synced and renamed to ``path``; when it raises, the temporary file is
    removed and the error propagates. ``suffix`` keeps an extension some writers look at (e.g. ``".png"``).
    """
    path = Path(path)
    tmp = temporary_path(path, suffix)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # no-op after a successful rename


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, newline: str | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; ``newline`` as for :func:`open`. Returns ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline=newline) as f:
            f.write(text)
    return Path(path)
