"""Part of the training set held out of training for tuning the exit rule (``pabee train --tune_split``), and
found again later (``pabee tune RUN_DIR --tune_split heldout``).

The held-out rows are drawn at random with the run's seed, so the same command holds out the same rows (resuming
included). The run folder keeps ``tune_split.json``: the rows' positions in the training data, a digest of their
contents (the training file must not have changed when the split is rebuilt) and where the data came from.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import atomic_write_text
from .examples import Example

TUNE_SPLIT_FILE = "tune_split.json"


def check_tune_split(spec: object) -> float | int:
    """``--tune_split`` as given to ``pabee train``: a fraction in (0, 1) or a number of examples >= 1;
    ValueError naming the flag otherwise."""
    if isinstance(spec, bool) or not isinstance(spec, numbers.Real):
        raise ValueError(f"--tune_split must be a fraction in (0, 1) or a number of examples >= 1, got {spec!r}")
    if isinstance(spec, numbers.Integral):
        if spec < 1:
            raise ValueError(f"--tune_split must be a fraction in (0, 1) or a number of examples >= 1, got {spec}")
        return int(spec)
    if not 0 < float(spec) < 1:
        raise ValueError(f"--tune_split must be a fraction in (0, 1) or a whole number of examples, got {spec!r}")
    return float(spec)


def holdout_size(spec: float | int, num_examples: int) -> int:
    """How many of ``num_examples`` training examples ``spec`` holds out (a fraction rounds, to at least 1); at
    least one example must stay for training (ValueError otherwise)."""
    spec = check_tune_split(spec)
    size = spec if isinstance(spec, int) else max(1, round(spec * num_examples))
    if size >= num_examples:
        raise ValueError(f"--tune_split {spec} holds out {size} of the {num_examples} training examples: "
                         "none would be left to train on")
    return size


def holdout_indices(num_examples: int, size: int, seed: int) -> list[int]:
    """``size`` distinct positions in 0..num_examples-1, drawn with ``seed``, in increasing order."""
    chosen = np.random.default_rng(seed).permutation(num_examples)[:size]
    return sorted(int(i) for i in chosen)


def examples_digest(examples: Sequence[Example]) -> str:
    """A sha256 of the examples' ids, texts and labels, in order."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.guid, e.text_a, e.text_b, e.label], ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass
class HeldOut:
    """The training examples held out (``examples``) and the record ``tune_split.json`` keeps of them."""

    examples: list[Example]
    record: dict


def hold_out(examples: Sequence[Example], spec: float | int, seed: int) -> tuple[list[Example], HeldOut]:
    """Split the training ``examples``: (the ones to train on, the :class:`HeldOut` ones), by ``spec`` (fraction
    or count) and ``seed``. Both keep the examples' order."""
    size = holdout_size(spec, len(examples))
    indices = holdout_indices(len(examples), size, seed)
    chosen = set(indices)
    kept = [e for i, e in enumerate(examples) if i not in chosen]
    held = [examples[i] for i in indices]
    record = {"tune_split": spec, "seed": seed, "num_training_examples": len(examples), "size": size,
              "indices": indices, "guids": [e.guid for e in held], "digest": examples_digest(held)}
    return kept, HeldOut(held, record)


def save_holdout(folder: str | os.PathLike, held: HeldOut, data: dict | None = None) -> Path:
    """Write ``folder/tune_split.json`` (atomically): the held-out record plus ``data``, where the training data
    came from (task, data folder or files, columns, sequence length), so the split can be rebuilt from it."""
    path = Path(folder) / TUNE_SPLIT_FILE
    atomic_write_text(path, json.dumps({**held.record, "data": data or {}}, indent=2) + "\n")
    return path


def read_holdout(folder: str | os.PathLike) -> dict | None:
    """The record of ``folder/tune_split.json``, or None when the run held nothing out."""
    path = Path(folder) / TUNE_SPLIT_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    if not isinstance(record, dict) or not isinstance(record.get("indices"), list) or "digest" not in record:
        raise ValueError(f"{path} is not a held-out split record (no indices and digest)")
    return record


def rebuild_holdout(record: dict, training: Sequence[Example], where: str = TUNE_SPLIT_FILE) -> list[Example]:
    """The held-out examples ``record`` names, taken from the training data ``training`` (read again); ValueError
    when the data no longer holds them (another file, or changed rows)."""
    indices = record["indices"]
    if any(not isinstance(i, int) or not 0 <= i < len(training) for i in indices):
        raise ValueError(f"the held-out split of {where} names rows beyond the {len(training)} training examples: "
                         "the training data changed since training")
    held = [training[i] for i in indices]
    if examples_digest(held) != record["digest"]:
        raise ValueError(f"the held-out rows of {where} differ from those trained beside: the training data "
                         "changed since training")
    return held
