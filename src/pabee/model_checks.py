"""Checks of a run's data and settings against the model it uses: label names, and the longest input it takes.

A fine-tuned model's ``config.json`` holds its label names (``id2label``): they, not the order of a
``--label_list`` or the sorted labels of a data file, say which output is which label. Models saved with
transformers' default names (``LABEL_0``, ``LABEL_1``, ...) carry no names; their outputs are matched to labels
by position, with a warning, unless the data uses those very names.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from .backbones import get_driver
from .tasks import TaskSpec

__all__ = [
    "ModelLabels",
    "cap_max_seq_length",
    "check_task_labels",
    "custom_data_labels",
    "max_input_length",
    "model_max_seq_length",
    "read_model_labels",
]

_DEFAULT_NAME = re.compile(r"LABEL_(\d+)")
# transformers stands in int(1e30) for "no limit" in tokenizer.model_max_length; real limits are far smaller
_NO_TOKENIZER_LIMIT = 1_000_000


@dataclass(frozen=True)
class ModelLabels:
    """The labels a saved model was trained with.

    Attributes:
        path: where the model is (named in messages).
        names: ``id2label`` in id order (one entry, meaningless, for a regression model).
        generic: the names are transformers' defaults ``LABEL_<id>``, i.e. the model was saved without names.
    """

    path: str
    names: tuple[str, ...]
    generic: bool

    @property
    def num_labels(self) -> int:
        return len(self.names)

    @property
    def is_regression(self) -> bool:
        return len(self.names) == 1

    @classmethod
    def from_config(cls, config, path: str) -> ModelLabels:
        """From a transformers config (``num_labels``, ``id2label``)."""
        id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
        count = int(config.num_labels)
        names = tuple(id2label.get(i, f"LABEL_{i}") for i in range(count))
        generic = all(_DEFAULT_NAME.fullmatch(name) and int(name[6:]) == i for i, name in enumerate(names))
        return cls(str(path), names, generic)

    def describe(self) -> str:
        if self.is_regression:
            return f"the model at {self.path} is a regression model"
        return f"the model at {self.path} was trained with labels {list(self.names)}"


def read_model_labels(path) -> ModelLabels:
    """The labels saved in ``path/config.json`` (no weights are loaded)."""
    from .hf import read_backbone_config

    return ModelLabels.from_config(read_backbone_config(path), str(path))


def custom_data_labels(
    labels: ModelLabels | None, label_list: Sequence[str] | None, regression: bool
) -> tuple[str, ...] | None:
    """The label list custom data files must use with this model: its names, in id order.

    None when there is no model (the labels come from ``--label_list`` or the data), for regression, and when
    the model has no names (matched by position, see :func:`check_task_labels`).

    Raises:
        ValueError: ``--regression`` and the model disagree, or ``label_list`` differs from the model's names (as
            a set or in order).
    """
    if labels is None:
        return None
    if labels.is_regression != regression:
        if regression:
            raise ValueError(
                f"--regression does not fit the model at {labels.path}, a classifier with labels {list(labels.names)}"
            )
        raise ValueError(f"the model at {labels.path} is a regression model: give --regression")
    if regression or labels.generic:
        return None
    if label_list is not None and tuple(label_list) != labels.names:
        raise ValueError(
            f"--label_list {','.join(label_list)} contradicts the labels of the model at {labels.path}: "
            f"{','.join(labels.names)}"
        )
    return labels.names


def check_task_labels(task: TaskSpec, labels: ModelLabels, warn: bool = True) -> None:
    """Refuse a model whose labels are not the task's (same names in the same id order).

    A model without names (``LABEL_<id>``) fits any task with as many labels, matched by position: a
    UserWarning says so (when ``warn``), unless the task's labels are those very names.

    Raises:
        ValueError: regression against classification, other names or another order, another number of labels.
    """
    if labels.is_regression != task.is_regression:
        kind = "is a regression task" if task.is_regression else f"has labels {list(task.label_list)}"
        raise ValueError(f"{labels.describe()}, task {task.name} {kind}")
    if task.is_regression:
        return
    task_labels = tuple(task.label_list)
    if not labels.generic or set(task_labels) == set(labels.names):
        if task_labels != labels.names:
            raise ValueError(f"{labels.describe()}, task {task.name} has {list(task_labels)}")
        return
    if len(task_labels) != labels.num_labels:
        raise ValueError(
            f"the model at {labels.path} has {labels.num_labels} labels, task {task.name} has {len(task_labels)}: "
            f"{list(task_labels)}"
        )
    if warn:
        warnings.warn(
            f"the model at {labels.path} was saved without label names ({', '.join(labels.names)}): its outputs "
            f"are taken as {', '.join(task_labels)}, in this order",
            UserWarning,
            stacklevel=2,
        )


def max_input_length(config, tokenizer=None) -> tuple[int, str] | None:
    """The longest input (tokens, special tokens included) the model takes, and what sets it.

    The limit is the architecture's position table (``max_position_embeddings`` less the offset of
    RoBERTa-style position ids, see :class:`pabee.backbones.BackboneDriver`), or the tokenizer's
    ``model_max_length`` when that is smaller and a real limit. None when neither is known.
    """
    found: list[tuple[int, str]] = []
    try:
        positions = get_driver(config.model_type).max_positions(config)
    except ValueError:  # unsupported architecture: the model loader refuses it with its own message
        positions = None
    if positions is not None:
        found.append((int(positions), f"{config.model_type}, max_position_embeddings={config.max_position_embeddings}"))
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < _NO_TOKENIZER_LIMIT:
        found.append((tokenizer_limit, f"the tokenizer's model_max_length={tokenizer_limit}"))
    return min(found) if found else None


def cap_max_seq_length(requested: int, config, tokenizer=None, source: str = "the model") -> int:
    """``requested``, or the model's limit (:func:`max_input_length`) with a UserWarning when it is longer."""
    limit = max_input_length(config, tokenizer)
    if limit is None or requested <= limit[0]:
        return requested
    warnings.warn(
        f"--max_seq_length {requested} is longer than {source} takes: using {limit[0]} ({limit[1]})",
        UserWarning,
        stacklevel=2,
    )
    return limit[0]


def model_max_seq_length(requested: int, source: str, tokenizer=None, cache_dir: str | None = None) -> int:
    """:func:`cap_max_seq_length` for the model at ``source`` (its config is read; no weights are loaded)."""
    from .hf import read_backbone_config

    try:
        config = read_backbone_config(source, cache_dir=cache_dir)
    except (OSError, ValueError):
        return requested  # the model loader reports an unreadable checkpoint with its own message
    return cap_max_seq_length(requested, config, tokenizer, f"the model at {source}")
