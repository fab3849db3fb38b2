"""Batch inference with Ray Data: a callable predictor class for ``Dataset.map_batches``.

Scoring millions of texts over many processes or machines is a Ray Data job::

    import ray
    from pabee.ray_data import PabeeBatchPredictor

    ds = ray.data.read_csv("texts.csv")
    preds = ds.map_batches(
        PabeeBatchPredictor,
        fn_constructor_kwargs={"model_dir": "runs/minilm-rte", "text_columns": ("sentence1", "sentence2")},
        compute=ray.data.ActorPoolStrategy(size=4),   # 4 actors, each loading the model once
        batch_size=64,
        batch_format="numpy",
    )
    preds.write_parquet("preds/")

Each actor builds one :class:`PabeeBatchPredictor`, which loads the model and tokenizer once (a
:class:`~pabee.predictor.Predictor`, as ``pabee predict MODEL`` does) and then predicts every batch it is given, each
input exiting at its own layer. The batch keeps its columns and gains the prediction columns of ``pabee predict``'s
JSON Lines records (:meth:`~pabee.predictor.Prediction.to_record`): ``label``, ``score``, ``probabilities`` (a list
column, one probability per label in the model's id order, :attr:`PabeeBatchPredictor.labels`) for a
classifier, or ``value`` for a regression model; then ``exit_layer`` and ``truncated``.

An actor holds its CPUs (``num_cpus``, 1 by default) for the whole job, and Ray Data's read and write tasks need
CPUs too: with as many actors as CPUs, a job that reads files waits forever. Leave CPUs free (fewer actors, or
``num_cpus=0.5`` per actor on a small machine).

This module does not import Ray (the class works on plain dicts of numpy arrays and pandas DataFrames too);
install Ray with ``pip install "pabee[ray]"``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .exit_rules import ExitRule
from .predictor import Prediction, Predictor, TextInput


class PabeeBatchPredictor:
    """Predict the texts of a batch's text column(s) with a saved pabee model; one instance per Ray actor.

    Args:
        model_dir: a folder saved by ``pabee train`` (model, tokenizer, exit rule), readable by every worker.
        text_columns: the column holding the texts, or two columns holding text pairs (a name or a sequence).
        backend: "torch" or "onnx".
        exit_rule: e.g. ``"entropy:0.3"`` or an :class:`~pabee.exit_rules.ExitRule` (default: the saved one).
        patience: shorthand for ``exit_rule="patience:N"``.
        max_length: truncate inputs to this many tokens (default and maximum: the model's limit).
        batch_size: inputs per model call (a Ray batch larger than this is run in several calls).
        threads: torch intra-op threads in this process (default: torch's; Ray sets ``OMP_NUM_THREADS`` of an
            actor to its ``num_cpus``, so the default already follows the CPUs Ray gives the actor).
        prefix: put before the names of the added columns, e.g. ``"pred_"`` when the data already has a
            ``label`` column (an existing column is never overwritten: that is an error).

    Calling the instance on a batch (a dict of numpy arrays, a pandas DataFrame or a pyarrow Table) returns a
    dict of numpy arrays: the batch's columns plus the prediction columns.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        text_columns: str | Sequence[str] = ("text",),
        backend: str = "torch",
        exit_rule: ExitRule | str | None = None,
        patience: int | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
        threads: int | None = None,
        prefix: str = "",
    ):
        self.text_columns = _text_columns(text_columns)
        self.prefix = prefix
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            if backend == "torch":
                import torch

                torch.set_num_threads(threads)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.predictor = Predictor.from_pretrained(
            model_dir, backend=backend, exit_rule=exit_rule, patience=patience, max_length=max_length,
            batch_size=batch_size,
        )

    @property
    def labels(self) -> tuple[str, ...]:
        """The model's labels in id order: the order of the ``probabilities`` column."""
        return self.predictor.info.labels

    def __call__(self, batch: Any) -> dict[str, np.ndarray]:
        """The batch's columns plus ``label``, ``score``, ``probabilities`` (or ``value``), ``exit_layer``,
        ``truncated`` (each name after ``prefix``)."""
        columns = _as_columns(batch)
        added = self.predict_columns(self.inputs(columns))
        added = {self.prefix + name: values for name, values in added.items()}
        clash = [name for name in added if name in columns]
        if clash:
            raise ValueError(
                f"the batch already has a column {clash[0]!r}: pass prefix= (e.g. 'pred_') or drop the column"
            )
        return {**columns, **added}

    def inputs(self, columns: Mapping[str, np.ndarray]) -> list[TextInput]:
        """The texts (or text pairs) of a batch given as columns; ValueError naming a missing column or a bad value."""
        texts = []
        for name in self.text_columns:
            if name not in columns:
                raise ValueError(
                    f"the batch has no column {name!r} (columns: {', '.join(map(str, columns))}): set text_columns"
                )
            texts.append([_text(value, name, row) for row, value in enumerate(columns[name])])
        return texts[0] if len(texts) == 1 else list(zip(texts[0], texts[1]))

    def predict_columns(self, inputs: Sequence[TextInput]) -> dict[str, np.ndarray]:
        """Predict ``inputs``; the prediction columns, built from the records ``pabee predict`` writes."""
        predictions = self.predictor.predict(inputs)
        if not predictions:
            return self._empty_columns()
        return records_to_columns([p.to_record(i) for i, p in enumerate(predictions)])

    def _empty_columns(self) -> dict[str, np.ndarray]:
        """The prediction columns of an empty batch, with the types a non-empty one has."""
        labels = self.labels
        if self.predictor.info.is_regression:
            template = Prediction(labels[0], 0.0, [0.0], 0, value=0.0)
        else:
            template = Prediction(labels[0], 0.0, [0.0] * len(labels), 0, probabilities=dict.fromkeys(labels, 0.0))
        return {name: values[:0] for name, values in records_to_columns([template.to_record(0)]).items()}


def records_to_columns(records: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Columns of ``pabee predict`` records (without ``index``): a dict-valued field such as ``probabilities``
    becomes a (rows, labels) float array in the dicts' order; the others 1-D arrays (label: str, score: float64,
    exit_layer: int64, truncated: bool)."""
    columns: dict[str, np.ndarray] = {}
    for name in records[0]:
        if name == "index":
            continue
        values = [record[name] for record in records]
        if isinstance(values[0], Mapping):
            columns[name] = np.array([list(v.values()) for v in values], dtype=np.float64)
        elif isinstance(values[0], str):
            columns[name] = np.array(values, dtype=object)
        elif isinstance(values[0], bool):
            columns[name] = np.array(values, dtype=bool)
        elif isinstance(values[0], int):
            columns[name] = np.array(values, dtype=np.int64)
        else:
            columns[name] = np.array(values, dtype=np.float64)
    return columns


def _text_columns(text_columns: str | Sequence[str]) -> tuple[str, ...]:
    columns = (text_columns,) if isinstance(text_columns, str) else tuple(text_columns)
    if not 1 <= len(columns) <= 2 or not all(isinstance(c, str) and c for c in columns):
        raise ValueError(f"text_columns must name 1 or 2 columns (a pair), got {text_columns!r}")
    return columns


def _as_columns(batch: Any) -> dict[str, np.ndarray]:
    """A batch as a dict of numpy arrays: from a dict of arrays/lists, a pandas DataFrame or a pyarrow Table."""
    if isinstance(batch, Mapping):
        return {name: np.asarray(values) for name, values in batch.items()}
    if hasattr(batch, "column_names") and hasattr(batch, "column"):  # pyarrow.Table
        return {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.column_names}
    if hasattr(batch, "columns") and hasattr(batch, "iloc"):  # pandas.DataFrame
        return {str(name): batch[name].to_numpy() for name in batch.columns}
    raise TypeError(
        f"a batch must be a dict of arrays, a pandas DataFrame or a pyarrow Table, got {type(batch).__name__}"
    )


def _text(value: Any, column: str, row: int) -> str:
    """A text cell as a string (a number is written out, as the JSON Lines reader does); None/NaN is an error."""
    if isinstance(value, str):
        return str(value)  # also numpy.str_
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"column {column!r}, row {row} of the batch: not valid UTF-8 text") from None
    missing = value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))
    if missing or isinstance(value, (Mapping, list, tuple, np.ndarray)):
        shown = "a missing value" if missing else f"a {type(value).__name__}"
        raise ValueError(f"column {column!r}, row {row} of the batch holds {shown}, expected text")
    return str(value)
