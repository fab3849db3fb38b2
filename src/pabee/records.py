"""The evaluation records file (``eval_results.json``): the one place that reads, merges and writes it, and the
checks a reader of its wall-clock figures needs.

* :class:`RecordStore` guards every read-merge-write with a file lock (``.eval_results.json.lock`` beside it), so
  several ``pabee eval`` processes writing one folder keep every record of every process; the file is replaced
  atomically (temporary file, fsync, ``os.replace``), so a reader or an interrupt never meets half a file.
  :meth:`RecordStore.validate` checks an existing file before any evaluation starts.
* :func:`record_from_dict` turns a stored record (of any pabee version) back into an ``EvalRecord``;
  :func:`plot_points` picks from all stored records the points of one task and split for the trade-off plot.
* :func:`wall_flags` says why a wall-clock speed-up is suspect: its timing rounds disagree, or it exceeds what
  its layer count allows.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from .files import atomic_write_text

if TYPE_CHECKING:
    from .evaluate import EvalRecord

logger = logging.getLogger(__name__)

RESULTS_NAME = "eval_results.json"
LOCK_TIMEOUT = 600.0  # seconds to wait for another process's read-merge-write (each takes milliseconds)
REQUIRED_KEYS = ("checkpoint", "task", "split", "metrics")  # what every record of every pabee version has

SPREAD_TOLERANCE = 0.20  # rounds disagree: (max - min) / mean of the per-round wall speed-ups above this
LAYER_TOLERANCE = 1.15  # a wall speed-up above LAYER_TOLERANCE x the layer speed-up is more than the layers allow


class RecordsFileError(ValueError):
    """An existing records file that is not a JSON list of evaluation records (the message is one line)."""


class RecordStore:
    """``output_dir/eval_results.json``: a JSON list of evaluation records, one per experiment.

    A record replaces a stored one only when it is the same experiment (same :func:`record_key`: checkpoint,
    task, split, exit rule and value, regression threshold, batch size); every other record is kept.
    """

    def __init__(self, output_dir: str | os.PathLike):
        self.folder = Path(output_dir)
        self.path = self.folder / RESULTS_NAME
        self.lock_path = self.folder / f".{RESULTS_NAME}.lock"

    def _lock(self) -> FileLock:
        return FileLock(str(self.lock_path), timeout=LOCK_TIMEOUT)

    def validate(self) -> None:
        """Check, before an evaluation runs, that the file is absent or a JSON list of records.

        Raises :class:`RecordsFileError` (one line) when it is valid JSON of another shape; a file that is not
        JSON at all is moved aside (``eval_results.json.corrupt-<time>``, with a warning), as writing does.
        """
        if self.path.exists():
            with self._locked():
                self._read_unlocked()

    def read(self) -> list[dict]:
        """Every stored record (as dicts, in file order); [] when there is no file yet."""
        if not self.path.exists():
            return []
        with self._locked():
            return self._read_unlocked()

    def load(self) -> list[EvalRecord]:
        """Every stored record as an ``EvalRecord`` (records too incomplete to convert are skipped)."""
        out = []
        for item in self.read():
            record = record_from_dict(item)
            if record is not None:
                out.append(record)
        return out

    def append(self, records: Iterable[EvalRecord | dict]) -> Path:
        """Merge ``records`` into the file under the lock: a stored record with the same key is replaced, all
        others are kept. Returns the file's path."""
        new = [_as_dict(r) for r in records]
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._locked():
            existing = self._read_unlocked()
            new_keys = {record_key(r) for r in new}
            merged = [r for r in existing if record_key(r) not in new_keys] + new
            atomic_write_text(self.path, json.dumps(merged, indent=2) + "\n")
        return self.path

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = self._lock()
        try:
            lock.acquire()
        except Timeout:
            raise TimeoutError(
                f"{self.path} stayed locked for {LOCK_TIMEOUT:.0f} s by another process ({self.lock_path})"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def _read_unlocked(self) -> list[dict]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            backup = self.path.with_name(f"{RESULTS_NAME}.corrupt-{int(time.time())}")
            os.replace(self.path, backup)
            logger.warning("%s was not valid JSON; moved it to %s", self.path, backup)
            return []
        check_records(data, self.path)
        return data


def check_records(data: Any, path: str | os.PathLike) -> None:
    """Raise :class:`RecordsFileError` unless ``data`` is a list of record objects."""
    if not isinstance(data, list):
        raise RecordsFileError(
            f"{path} holds a JSON {_json_kind(data)}, not a list of evaluation records: move it away or delete it"
        )
    for i, item in enumerate(data):
        missing = [k for k in REQUIRED_KEYS if k not in item] if isinstance(item, dict) else None
        if missing is None or missing:
            what = f"a JSON {_json_kind(item)}" if missing is None else f"missing {', '.join(missing)}"
            raise RecordsFileError(
                f"{path}: item {i} is not an evaluation record ({what}): move the file away or delete it"
            )


def _json_kind(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _as_dict(record: EvalRecord | dict) -> dict:
    return asdict(record) if is_dataclass(record) else dict(record)


def record_key(record: dict) -> tuple:
    """The experiment a stored record measures: (checkpoint, task, split, rule kind, rule value, rule threshold
    (hybrid only, else None), regression threshold, batch size). Records written before exit rules existed count
    as patience records."""
    if record.get("exit_rule") is None:
        rule = ("patience", record.get("patience"), None)
    else:
        rule = (record["exit_rule"], record.get("exit_value"), record.get("exit_threshold"))
    return (
        *(record.get(k) for k in ("checkpoint", "task", "split")),
        *rule,
        *(record.get(k) for k in ("regression_threshold", "batch_size")),
    )


def record_from_dict(item: dict) -> EvalRecord | None:
    """An ``EvalRecord`` from a stored record of any pabee version (fields it lacks get their defaults or are
    derived; unknown keys are ignored), or None when it lacks what a record needs."""
    from .evaluate import EvalRecord

    values = dict(item)
    if values.get("exit_rule") is None:
        values["exit_rule"], values["exit_value"] = "patience", values.get("patience")
    try:
        num_layers, avg = int(values["num_layers"]), float(values["avg_exit_layer"])
        values.setdefault("layer_speedup", num_layers / avg)
        values.setdefault("layers_saved", 1.0 - avg / num_layers)
        seconds, n = float(values.get("eval_seconds", 0.0)), int(values.get("num_examples", 0))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    defaults = {"patience": None, "regression_threshold": None, "eval_seconds": seconds, "num_examples": n,
                "examples_per_second": n / seconds if seconds > 0 else 0.0, "batch_size": 0,
                "exit_layer_histogram": {}}
    for key, value in defaults.items():
        values.setdefault(key, value)
    known = {f.name for f in fields(EvalRecord)}
    try:
        return EvalRecord(**{k: v for k, v in values.items() if k in known})
    except TypeError:
        return None


def plot_points(
    records: Sequence[EvalRecord],
    task: str,
    split: str,
    batch_size: int,
    regression_threshold: float | None = None,
    metric: str | None = None,
) -> list[EvalRecord]:
    """The points of one task and split's trade-off plot, from every stored record (this run's and earlier ones).

    One record per (checkpoint, exit rule, value, threshold): the one at ``batch_size`` when there is one, else the one at
    the largest batch size measured (exits do not depend on the batch size). Patience records must have been
    measured with ``regression_threshold`` (give the threshold a regression run records, None otherwise), so a
    curve never mixes two thresholds. With ``metric``, records without that metric are left out.
    """
    chosen: dict[tuple, EvalRecord] = {}
    for r in records:
        if r.task != task or r.split != split:
            continue
        if r.exit_rule == "patience" and r.regression_threshold != regression_threshold:
            continue
        if metric is not None and metric not in r.metrics:
            continue
        key = (r.checkpoint, r.exit_rule, r.exit_value, r.exit_threshold)
        best = chosen.get(key)
        if best is None or _prefer(r, best, batch_size):
            chosen[key] = r
    return list(chosen.values())


def _prefer(candidate: EvalRecord, current: EvalRecord, batch_size: int) -> bool:
    if (candidate.batch_size == batch_size) != (current.batch_size == batch_size):
        return candidate.batch_size == batch_size
    return candidate.batch_size >= current.batch_size  # same batch size: the later record wins


def relative_spread(values: Sequence[float]) -> float | None:
    """(max - min) / mean of ``values``; None with fewer than two values."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return (max(values) - min(values)) / mean if mean > 0 else None


def wall_flags(record: EvalRecord) -> list[str]:
    """Why ``record``'s wall-clock speed-up is suspect ([] when it is not, or when it has none).

    * its timing rounds disagree: the per-round speed-ups (``extra["wall_speedup_rounds"]``) spread by more than
      ``SPREAD_TOLERANCE`` of their mean;
    * it exceeds what its layer count allows: more than ``LAYER_TOLERANCE`` x the layer speed-up (an exit rule
      saves at most the layers it skips; a little more can come from shorter batches running in cache).
    The full-depth baseline (1 by definition) is never flagged.
    """
    wall = record.wall_speedup
    if wall is None or (record.exit_rule == "patience" and record.exit_value == 0):
        return []
    flags = []
    rounds = record.extra.get("wall_speedup_rounds") or []
    spread = relative_spread(rounds)
    if spread is not None and spread > SPREAD_TOLERANCE:
        flags.append(f"its {len(rounds)} timing rounds disagree ({min(rounds):.2f}-{max(rounds):.2f}, "
                     f"spread {spread:.0%} > {SPREAD_TOLERANCE:.0%})")
    if wall > LAYER_TOLERANCE * record.layer_speedup:
        flags.append(f"{wall:.2f} is more than its layer count allows ({LAYER_TOLERANCE:g} x layer speed-up "
                     f"{record.layer_speedup:.2f})")
    return flags


def add_timing_spread(records: Sequence[EvalRecord]) -> None:
    """Fill each record's ``extra`` with the per-round wall speed-ups (full-depth round time / the rule's round
    time, from ``extra["eval_seconds_rounds"]``; ``records[0]`` is the full-depth baseline), their relative
    spread (None with one round) and :func:`wall_flags`."""
    full_rounds = records[0].extra.get("eval_seconds_rounds") or []
    for record in records:
        mine = record.extra.get("eval_seconds_rounds") or []
        per_round = [round(f / t, 4) for f, t in zip(full_rounds, mine) if t > 0]
        record.extra["wall_speedup_rounds"] = per_round
        spread = relative_spread(per_round)
        record.extra["wall_speedup_spread"] = None if spread is None else round(spread, 4)
        record.extra["wall_flags"] = wall_flags(record)
