"""The early-exit loop, written once, over a small backend interface.

A backend runs the model; a rule object (:mod:`pabee.exit_rules`) decides. Neither knows the other: the loop
between them is :func:`run_early_exit`. The torch model (:mod:`pabee.torch_backend`), an ONNX runtime and the
recomputation of exits from all layers' logits (:func:`replay_exit_layers`) all run this same loop.

Nothing here imports torch.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

import numpy as np

State = TypeVar("State")


class ExitBackend(Protocol[State]):
    """What the loop asks of a model. ``State`` is the backend's own (hidden states, masks, ...) for the A rows
    still running; the loop only passes it along.

    num_layers: L, the number of layers (and internal classifiers).
    run_layer(i, state) -> state: layer i (0-based) on the running rows. A backend may update ``state`` in place
        and return it.
    classify(i, state) -> (A, C) float ndarray: classifier i on the running rows' output of layer i.
    keep_rows(state, keep) -> state: only the rows where ``keep`` ((A,) bool ndarray) is True, in order; a backend
        also drops the trailing columns that are padding in every row left.
    """

    num_layers: int

    def run_layer(self, i: int, state: State) -> State: ...

    def classify(self, i: int, state: State) -> np.ndarray: ...

    def keep_rows(self, state: State, keep: np.ndarray) -> State: ...


def run_early_exit(backend: ExitBackend, rule, state, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Layer-by-layer inference where each row leaves as soon as ``rule`` lets it out.

    ``rule`` is a rule object (``ExitRule(...).build()``); ``state`` is the backend's state of all ``batch_size``
    rows entering layer 1. Returns each row's logits at its exit layer (B, C) and its exit layer (B,) int64 in
    1..L. Rows that leave stop costing compute: the backend keeps only the others. A rule with a static depth
    (fixed layer, patience 0) runs that many layers and classifies once.
    """
    num_layers = backend.num_layers
    depth = rule.static_depth(num_layers)
    if depth is not None:
        for i in range(depth):
            state = backend.run_layer(i, state)
        return backend.classify(depth - 1, state), np.full(batch_size, depth, dtype=np.int64)

    exit_layers = np.full(batch_size, num_layers, dtype=np.int64)
    out = None  # (B, C), made when the first rows leave before the others
    rows = np.arange(batch_size)  # the running rows' places in the batch
    rule_state = rule.start(batch_size)
    last = num_layers - 1
    for i in range(num_layers):
        state = backend.run_layer(i, state)
        logits = backend.classify(i, state)  # (A, C)
        if i == last:
            break
        rule_state, done = rule.step(rule_state, logits, i)
        if not done.any():
            continue
        if done.all():  # every running row leaves here
            exit_layers[rows] = i + 1
            break
        if out is None:
            out = np.empty((batch_size, logits.shape[1]), dtype=logits.dtype)
        out[rows[done]] = logits[done]
        exit_layers[rows[done]] = i + 1
        keep = ~done
        rows = rows[keep]
        rule_state = rule.keep(rule_state, keep)
        state = backend.keep_rows(state, keep)
    if out is None:  # nobody left before the others: ``logits`` holds every row, in order
        return logits, exit_layers
    out[rows] = logits
    return out, exit_layers


class ReplayBackend:
    """A backend whose "layers" read precomputed logits: all_logits (L, B, C); its state is the running rows'
    indices into the batch. Running :func:`run_early_exit` over it recomputes the exits from all layers' logits."""

    def __init__(self, all_logits: np.ndarray):
        self.all_logits = all_logits
        self.num_layers = all_logits.shape[0]

    def run_layer(self, i: int, rows: np.ndarray) -> np.ndarray:
        return rows

    def classify(self, i: int, rows: np.ndarray) -> np.ndarray:
        return self.all_logits[i, rows]

    def keep_rows(self, rows: np.ndarray, keep: np.ndarray) -> np.ndarray:
        return rows[keep]


def replay_exit_layers(rule, all_logits: np.ndarray) -> np.ndarray:
    """The exit layer (1..L) of every row under the rule object ``rule``, from all layers' logits (L, B, C)."""
    all_logits = np.asarray(all_logits)
    batch = all_logits.shape[1]
    return run_early_exit(ReplayBackend(all_logits), rule, np.arange(batch), batch)[1]

