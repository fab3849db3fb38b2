"""The black box the attacks query: ``classify(inputs) -> Outputs``, one model under one exit rule.

:class:`Outputs` holds, for every input, the predicted label, the class probabilities at the layer the input
exited at, that exit layer and (when asked for) every internal classifier's probabilities.
:class:`ModelClassifier` builds this callable from a :class:`~pabee.modeling.PabeeForSequenceClassification`
and its tokenizer; the attacks accept any callable with the same contract (tests use fakes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..exit_rules import ExitRule, to_exit_rule

TextInput = str | tuple[str, str]


@dataclass(frozen=True)
class Row:
    """One input's answer: ``label`` (argmax of ``probs``), ``probs`` (C,) at ``exit_layer`` (1..L), and
    ``layer_probs`` (L, C), every internal classifier's probabilities, or None when not asked for."""

    label: int
    probs: np.ndarray
    exit_layer: int
    layer_probs: np.ndarray | None = None


@dataclass(frozen=True)
class Outputs:
    """A classifier's answer to B inputs: ``labels`` (B,) int, ``probs`` (B, C) at each input's exit layer,
    ``exit_layers`` (B,) in 1..L, ``layer_probs`` (L, B, C) or None."""

    labels: np.ndarray
    probs: np.ndarray
    exit_layers: np.ndarray
    layer_probs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def row(self, i: int) -> Row:
        """The answer to input ``i``."""
        layers = None if self.layer_probs is None else self.layer_probs[:, i]
        return Row(int(self.labels[i]), self.probs[i], int(self.exit_layers[i]), layers)


Classifier = Callable[[Sequence[TextInput]], Outputs]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def split_inputs(inputs: Sequence[TextInput]) -> tuple[list[str], list[str] | None]:
    """(first texts, second texts or None): every input a string, or every input a pair of strings."""
    if all(isinstance(x, str) for x in inputs):
        return list(inputs), None  # type: ignore[arg-type]
    if all(isinstance(x, (tuple, list)) and len(x) == 2 and all(isinstance(t, str) for t in x)
           for x in inputs):
        return [x[0] for x in inputs], [x[1] for x in inputs]
    raise TypeError("inputs must be all strings or all pairs of strings")


class LayerLogits:
    """Every internal classifier's logits of each distinct input, computed once at full depth and kept.

    ``model(**batch, output_all_layers=True)`` on the inputs not seen before; ``__call__(inputs)`` returns (L,
    B, C) float32. Classifiers of several exit rules that share one :class:`LayerLogits` run the model once
    per distinct input between them: each derives its answer from the logits with its rule's own code (the
    same code that decides at inference). ``computed`` counts the inputs run through the model, ``reused`` the
    others.
    """

    def __init__(self, model: Any, tokenizer: Any, max_length: int = 128, batch_size: int = 32):
        _check_sizes(batch_size, max_length)
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.batch_size = max_length, batch_size
        self.store: dict[TextInput, np.ndarray] = {}
        self.computed = self.reused = 0

    def encode(self, inputs: Sequence[TextInput]) -> dict:
        """The padded torch batch of ``inputs`` (input_ids, attention_mask, token_type_ids when the model has
        them)."""
        return encode(self.tokenizer, inputs, self.max_length)

    def __call__(self, inputs: Sequence[TextInput]) -> np.ndarray:
        import torch

        keys = [x if isinstance(x, str) else (x[0], x[1]) for x in inputs]
        todo = sorted({k for k in keys if k not in self.store}, key=_characters)  # less padding per batch
        with torch.inference_mode():
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                out = self.model(**self.encode(chunk), output_all_layers=True)
                logits = out.all_logits.float().numpy()  # (L, b, C)
                for j, key in enumerate(chunk):
                    self.store[key] = logits[:, j]
        self.computed += len(todo)
        self.reused += len(keys) - len(todo)
        return np.stack([self.store[k] for k in keys], axis=1)


class ModelClassifier:
    """A pabee model and its tokenizer as a classifier under one exit rule.

    Args:
        model: a :class:`~pabee.modeling.PabeeForSequenceClassification` (classification, eval mode).
        tokenizer: its Hugging Face tokenizer.
        exit_rule: the rule every query runs under (an :class:`ExitRule` or ``"patience:2"``...).
        max_length: inputs are truncated to this many tokens (longest first for pairs), as in ``pabee eval``.
        batch_size: inputs per model call; inputs are grouped by length. Answers do not depend on the grouping
            (pabee gives every row the answer it gets alone).
        all_layers: also return every internal classifier's probabilities (``output_all_layers``: every layer
            runs; the exit layers are those of the rule, recomputed from all layers' logits by the same code).
        shared: a :class:`LayerLogits` of the same model: answers are derived from its cached all-layer logits
            (identical to the early-exit answers; the model runs once per distinct input across all
            classifiers sharing it). Without it, queries run the model with early exit (or every layer with
            ``all_layers``).

    ``calls`` counts the inputs classified so far (the queries, whether or not the model had to run).
    """

    def __init__(self, model: Any, tokenizer: Any, exit_rule: ExitRule | str, max_length: int = 128,
                 batch_size: int = 32, all_layers: bool = False, shared: LayerLogits | None = None):
        if model.num_labels < 2:
            raise ValueError("the attacks need a classification model (num_labels >= 2), not regression")
        _check_sizes(batch_size, max_length)
        if shared is not None and shared.model is not model:
            raise ValueError("the shared LayerLogits belongs to another model")
        self.model, self.tokenizer = model, tokenizer
        self.exit_rule = to_exit_rule(exit_rule)
        self.rule = self.exit_rule.build()
        self.max_length, self.batch_size = max_length, batch_size
        self.all_layers, self.shared = all_layers, shared
        self.num_layers, self.num_labels = model.num_layers, model.num_labels
        self.calls = 0

    def __call__(self, inputs: Sequence[TextInput]) -> Outputs:
        n = len(inputs)
        if n == 0:
            raise ValueError("nothing to classify")
        split_inputs(inputs)  # all texts or all pairs
        if self.shared is not None or self.all_layers:
            outputs = self._from_all_layers(inputs)
        else:
            outputs = self._early_exit(inputs)
        self.calls += n
        return outputs

    def _from_all_layers(self, inputs: Sequence[TextInput]) -> Outputs:
        source = self.shared or LayerLogits(self.model, self.tokenizer, self.max_length, self.batch_size)
        all_logits = source(inputs)  # (L, B, C)
        exits = self.rule.exit_layers(all_logits)
        probs = softmax(all_logits[exits - 1, np.arange(len(inputs))])
        return Outputs(probs.argmax(axis=1), probs, exits, softmax(all_logits) if self.all_layers else None)

    def _early_exit(self, inputs: Sequence[TextInput]) -> Outputs:
        import torch

        n = len(inputs)
        order = sorted(range(n), key=lambda i: _characters(inputs[i]))  # less padding per batch
        probs = np.zeros((n, self.num_labels))
        exits = np.zeros(n, dtype=np.int64)
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                chunk = order[start : start + self.batch_size]
                out = self.model(**encode(self.tokenizer, [inputs[i] for i in chunk], self.max_length),
                                 exit_rule=self.exit_rule)
                probs[chunk] = softmax(out.logits.float().numpy())
                exits[chunk] = out.exit_layers.numpy()
        return Outputs(probs.argmax(axis=1), probs, exits)


def encode(tokenizer: Any, inputs: Sequence[TextInput], max_length: int) -> dict:
    """The padded torch batch of ``inputs`` (truncated longest-first to ``max_length`` tokens)."""
    first, second = split_inputs(inputs)
    return dict(tokenizer(first, second, truncation=True, max_length=max_length, padding=True,
                          return_tensors="pt"))


def _check_sizes(batch_size: int, max_length: int) -> None:
    if batch_size < 1 or max_length < 2:
        raise ValueError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size} and {max_length}")


def _characters(item: TextInput) -> int:
    return len(item) if isinstance(item, str) else sum(len(t) for t in item)
