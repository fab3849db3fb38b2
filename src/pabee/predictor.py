"""Predictions on raw text: a tokenizer and a model behind one small backend adapter.

:class:`Predictor` is what ``pabee predict MODEL`` and ``pabee serve`` run. It takes texts or text pairs, tokenizes
them (truncating to the model's limit, and saying so), pads them into batches, runs the model through a
:class:`Backend` and returns one :class:`Prediction` per input: the label (from the model's ``id2label``), its
probability, every class probability (softmax) or the regression value, and the layer the input exited at.

A backend is anything that maps numpy token arrays and an exit rule to numpy logits and exit layers, so a torch
model and an ONNX runtime model plug in the same way (:func:`load_backend`).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .exit_defaults import default_exit_rule
from .exit_rules import ExitRule, check_rule_supported, to_exit_rule

BACKENDS = ("torch", "onnx")
# architectures whose position ids start after the padding index (pad_token_id + 1 positions are unusable)
POSITION_OFFSET_TYPES = ("roberta", "xlm-roberta", "camembert", "mpnet")
TextInput = str | tuple[str, str]


class Backend(Protocol):
    """Runs a padded batch: numpy (B,S) int64 arrays and an exit rule -> logits (B,C) float32, exit layers (B,)."""

    name: str

    def __call__(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None, exit_rule: ExitRule
    ) -> tuple[np.ndarray, np.ndarray]: ...


class TorchBackend:
    """A :class:`~pabee.modeling.PabeeForSequenceClassification` (or anything with its call interface)."""

    name = "torch"

    def __init__(self, model: Any):
        self.model = model

    def __call__(self, input_ids, attention_mask, token_type_ids, exit_rule):
        import torch

        with torch.inference_mode():
            out = self.model(
                input_ids=torch.from_numpy(input_ids),
                attention_mask=torch.from_numpy(attention_mask),
                token_type_ids=None if token_type_ids is None else torch.from_numpy(token_type_ids),
                exit_rule=exit_rule,
            )
        return out.logits.float().cpu().numpy(), out.exit_layers.cpu().numpy()


class ArrayBackend:
    """A model called with numpy arrays that returns ``.logits`` and ``.exit_layers`` as arrays (the ONNX runtime)."""

    def __init__(self, model: Any, name: str = "onnx"):
        self.model = model
        self.name = name

    def __call__(self, input_ids, attention_mask, token_type_ids, exit_rule):
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, exit_rule=exit_rule
        )
        return np.asarray(out.logits, dtype=np.float32), np.asarray(out.exit_layers)


@dataclass(frozen=True)
class ModelInfo:
    """What the predictor needs to know about a model, whatever runs it."""

    labels: tuple[str, ...]  # id order; one entry for a regression model
    num_layers: int
    default_exit_rule: ExitRule
    max_positions: int | None  # usable positions of the position embeddings (None: unlimited)
    model_type: str = ""

    @property
    def is_regression(self) -> bool:
        return len(self.labels) == 1

    @classmethod
    def of(cls, config: Any, pabee_config: Any, num_layers: int) -> ModelInfo:
        """From a transformers config (labels, positions) and a :class:`~pabee.config.PabeeConfig` (saved rule)."""
        num_labels = int(config.num_labels)
        id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
        labels = tuple(id2label.get(i, f"LABEL_{i}") for i in range(num_labels))
        positions = getattr(config, "max_position_embeddings", None)
        model_type = str(getattr(config, "model_type", ""))
        if positions and model_type in POSITION_OFFSET_TYPES:
            positions -= (getattr(config, "pad_token_id", None) or 1) + 1
        return cls(labels, int(num_layers), saved_exit_rule(pabee_config), positions or None, model_type)


def saved_exit_rule(pabee_config: Any) -> ExitRule:
    """The exit rule saved with a model: its ``exit_rule`` entry if it has one, else its default patience
    (:func:`pabee.exit_defaults.default_exit_rule`, the resolution the models themselves use)."""
    return default_exit_rule(pabee_config)


def load_backend(
    folder: str | os.PathLike, backend: str = "torch", threads: int | None = None
) -> tuple[Backend, ModelInfo]:
    """Load the model saved in ``folder`` with the named backend ("torch", or "onnx" for a folder written by
    ``pabee export``). ``threads``: the ONNX sessions' intra-op threads (default: see
    :func:`pabee.onnx.runtime.default_threads`); the torch backend leaves torch's setting alone.

    Raises ValueError for an unknown or unavailable backend (one line), OSError/ValueError for a bad folder.
    """
    from .config import is_pabee_folder

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if not Path(folder).is_dir():
        raise ValueError(f"model folder not found: {folder}")
    if not is_pabee_folder(folder):
        raise ValueError(f"{folder} is not a pabee model folder (no pabee_config.json): train or save one first")
    if backend == "torch":
        from .modeling import PabeeForSequenceClassification
        from .onnx import is_onnx_export

        if is_onnx_export(folder):
            raise ValueError(f"{folder} is an ONNX export: run it with --backend onnx")

        model = PabeeForSequenceClassification.from_pretrained(folder)
        return TorchBackend(model), ModelInfo.of(model.config, model.pabee_config, model.num_layers)
    try:
        from .onnx import PabeeOnnxModel  # type: ignore[import-not-found]
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("pabee"):
            raise ValueError(f"the onnx backend cannot be loaded: {err}") from None
        raise ValueError(f"the onnx backend needs {err.name}: pip install 'pabee[onnx]'") from None
    model = PabeeOnnxModel.from_pretrained(folder, threads=threads)
    return ArrayBackend(model, "onnx"), _onnx_info(model)


def _onnx_info(model: Any) -> ModelInfo:
    """ModelInfo of an ONNX export, from its manifest (no torch, no transformers)."""
    manifest = model.manifest
    labels = tuple(model.id2label.get(i, f"LABEL_{i}") for i in range(model.num_labels))
    rule = model.default_exit_rule  # resolved from the manifest's pabee_config by the runtime itself
    return ModelInfo(labels, model.num_layers, rule, manifest.get("max_length"), str(manifest.get("model_type", "")))


@dataclass(frozen=True)
class Encoded:
    """One tokenized input: token ids (and segment ids for pairs), how many tokens it had before truncation."""

    input_ids: list[int]
    token_type_ids: list[int] | None
    num_tokens: int

    @property
    def truncated(self) -> bool:
        return self.num_tokens > len(self.input_ids)


@dataclass
class Prediction:
    """The prediction for one input.

    Classification: ``label`` and ``score`` (its probability), ``probabilities`` (label -> softmax probability, in
    id order). Regression: ``value`` (``label`` is the model's only label, ``score`` the value).
    ``logits`` are the raw outputs of the classifier at ``exit_layer`` (1..L); ``truncated`` is True when the
    input was cut to the model's limit.
    """

    label: str
    score: float
    logits: list[float]
    exit_layer: int
    truncated: bool = False
    probabilities: dict[str, float] | None = None
    value: float | None = None

    def to_record(self, index: int) -> dict[str, Any]:
        """One JSON Lines record: index, label, score, probabilities or value, exit layer, truncated."""
        record: dict[str, Any] = {"index": index}
        if self.value is not None:
            record["value"] = self.value
        else:
            record.update(label=self.label, score=self.score, probabilities=self.probabilities)
        record.update(exit_layer=self.exit_layer, truncated=self.truncated)
        return record

    def ranked(self, raw_scores: bool = False) -> list[dict[str, Any]]:
        """text-embeddings-inference ``/predict`` entries: every label with its probability (or logit with
        ``raw_scores``; the value for regression), highest first, each with the exit layer and truncation flag."""
        if self.probabilities is None:
            pairs = [(self.label, self.score)]
        elif raw_scores:
            pairs = list(zip(self.probabilities, self.logits))
        else:
            pairs = list(self.probabilities.items())
        pairs.sort(key=lambda p: -p[1] if p[1] == p[1] else math.inf)
        extra = {"exit_layer": self.exit_layer, "truncated": self.truncated}
        return [{"label": label, "score": score, **extra} for label, score in pairs]


@dataclass
class Predictor:
    """A tokenizer and a model backend: texts or text pairs in, :class:`Prediction` objects out.

    Args:
        backend: runs padded batches (:class:`TorchBackend`, :class:`ArrayBackend` or any :class:`Backend`).
        tokenizer: a Hugging Face tokenizer (callable on lists of texts and text pairs).
        info: the model's labels, depth, saved exit rule and position limit.
        exit_rule: the rule used when a call gives none (default: the one saved with the model).
        max_length: truncate inputs to this many tokens (default and maximum: the model's limit).
        batch_size: inputs per model call in :meth:`predict`.
    """

    backend: Backend
    tokenizer: Any
    info: ModelInfo
    exit_rule: ExitRule | None = None
    max_length: int | None = None
    batch_size: int = 32
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.exit_rule = self.info.default_exit_rule if self.exit_rule is None else to_exit_rule(self.exit_rule)
        check_rule_supported(self.exit_rule, len(self.info.labels))
        limit = model_length_limit(self.tokenizer, self.info)
        if self.max_length is None:
            self.max_length = limit
        elif self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        elif limit is not None and self.max_length > limit:
            raise ValueError(f"max_length {self.max_length} is more than the model's limit of {limit} tokens")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.pad_token_id = self.tokenizer.pad_token_id or 0

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        backend: str = "torch",
        exit_rule: ExitRule | str | None = None,
        patience: int | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
        threads: int | None = None,
    ) -> Predictor:
        """Load a saved run folder (model + tokenizer), or with ``backend="onnx"`` a folder written by ``pabee
        export``. ``patience`` is shorthand for ``exit_rule="patience:N"``; ``threads``: see :func:`load_backend`."""
        from transformers import AutoTokenizer

        if exit_rule is not None and patience is not None:
            raise ValueError("give either an exit rule or a patience, not both")
        if patience is not None:
            exit_rule = ExitRule("patience", patience)
        model_backend, info = load_backend(folder, backend, threads)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot load the tokenizer saved in {folder}: {str(err).splitlines()[0]}") from None
        return cls(model_backend, tokenizer, info, exit_rule, max_length, batch_size)

    # ------------------------------------------------------------------ public API

    def predict(self, inputs: Sequence[TextInput], exit_rule: ExitRule | str | None = None) -> list[Prediction]:
        """Predict every input (a text or a (text, text) pair), ``batch_size`` at a time, in input order."""
        return self.predict_encoded(self.encode(inputs), exit_rule)

    def predict_encoded(self, encoded: Sequence[Encoded], exit_rule: ExitRule | str | None = None) -> list[Prediction]:
        """Predict rows made by :meth:`encode`: ``batch_size`` at a time, grouped by length (less padding, as in
        ``pabee eval``), answers in input order. Lets a caller time the model apart from tokenization."""
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))  # less padding per batch
        results: list[Prediction | None] = [None] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for i, prediction in zip(chunk, self.run([encoded[i] for i in chunk], exit_rule)):
                results[i] = prediction
        return results  # type: ignore[return-value]

    def encode(self, inputs: Sequence[TextInput]) -> list[Encoded]:
        """Tokenize texts and pairs, truncated to ``max_length``; thread-safe (one tokenizer call at a time)."""
        singles, pairs = [], []
        for i, item in enumerate(inputs):
            if isinstance(item, str):
                singles.append(i)
            elif isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(t, str) for t in item):
                pairs.append(i)
            else:
                raise TypeError(f"input {i} must be a string or a pair of strings, got {type(item).__name__}")
        out: list[Encoded | None] = [None] * len(inputs)
        with self._lock:
            if singles:
                self._encode_into(out, singles, [inputs[i] for i in singles], None)
            if pairs:
                self._encode_into(out, pairs, [inputs[i][0] for i in pairs], [inputs[i][1] for i in pairs])
        return out  # type: ignore[return-value]

    def run(self, rows: Sequence[Encoded], exit_rule: ExitRule | str | None = None) -> list[Prediction]:
        """One model call on already encoded rows (the dynamic batcher's unit of work)."""
        if not rows:
            return []
        rule = self.exit_rule if exit_rule is None else to_exit_rule(exit_rule)
        ids, mask, types = self.pad(rows)
        logits, exits = self.backend(ids, mask, types, rule)
        return [self._prediction(row, logit, int(layer)) for row, logit, layer in zip(rows, logits, exits)]

    def pad(self, rows: Sequence[Encoded]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Right-pad rows into (B,S) int64 input ids, attention mask and (if any row has them) token type ids."""
        width = max(len(r.input_ids) for r in rows)
        ids = np.full((len(rows), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        with_types = any(r.token_type_ids is not None for r in rows)
        types = np.zeros((len(rows), width), dtype=np.int64) if with_types else None
        for r, row in enumerate(rows):
            n = len(row.input_ids)
            ids[r, :n] = row.input_ids
            mask[r, :n] = 1
            if types is not None and row.token_type_ids is not None:
                types[r, :n] = row.token_type_ids
        return ids, mask, types

    def describe(self) -> dict[str, Any]:
        """Labels, depth, exit rule, backend and length limit, for ``/info`` and logs."""
        return {
            "model_type": self.info.model_type,
            "labels": list(self.info.labels),
            "regression": self.info.is_regression,
            "num_layers": self.info.num_layers,
            "exit_rule": str(self.exit_rule),
            "backend": self.backend.name,
            "max_input_length": self.max_length,
        }

    # ------------------------------------------------------------------ internals

    def _encode_into(self, out, positions, texts, pairs) -> None:
        kwargs = {"truncation": True, "max_length": self.max_length} if self.max_length else {}
        encoded = self.tokenizer(texts, pairs, padding=False, **kwargs)
        types = encoded.get("token_type_ids")
        for j, position in enumerate(positions):
            ids = list(encoded["input_ids"][j])
            num_tokens = len(ids)
            if self.max_length is not None and num_tokens >= self.max_length:  # at the limit: was it cut?
                full = self.tokenizer(texts[j], None if pairs is None else pairs[j], verbose=False)
                num_tokens = len(full["input_ids"])
            row_types = list(types[j]) if types is not None else None
            out[position] = Encoded(ids, row_types, num_tokens)

    def _prediction(self, row: Encoded, logits: np.ndarray, layer: int) -> Prediction:
        values = [float(x) for x in logits]
        labels = self.info.labels
        if self.info.is_regression:
            return Prediction(labels[0], values[0], values, layer, row.truncated, value=values[0])
        probs = _softmax(np.asarray(logits, dtype=np.float64))
        best = int(np.argmax(probs))
        probabilities = {label: float(p) for label, p in zip(labels, probs)}
        return Prediction(labels[best], float(probs[best]), values, layer, row.truncated, probabilities)


def model_length_limit(tokenizer: Any, info: ModelInfo) -> int | None:
    """The longest input (in tokens) the model takes: its position embeddings and the tokenizer's own limit."""
    limits = [info.max_positions] if info.max_positions else []
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared < 1_000_000:  # transformers' "no limit" is a huge number
        limits.append(declared)
    return min(limits) if limits else None


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - np.max(x))
    return shifted / shifted.sum()
