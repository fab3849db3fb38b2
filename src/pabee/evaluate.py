"""Evaluation over exit rules (patiences, entropy / confidence thresholds, fixed layers) and checkpoints:
predictions, timings, exit statistics, records, table, plot."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .exit_rules import ExitRule, check_rule_supported, patience_rule, to_exit_rule
from .features import Features, length_sorted_batches
from .metrics import compute_metrics
from .metrics import layer_metrics as layer_metrics  # re-exported: the old home
from .metrics import predicted_labels as predicted_labels  # re-exported: the old home
from .plots import SPEEDUPS as SPEEDUPS  # re-exported: the old home
from .plots import plot_tradeoff as plot_tradeoff  # re-exported: the old home
from .records import RESULTS_NAME as RESULTS_NAME  # re-exported: callers import it from here
from .records import RecordStore, add_timing_spread, record_key
from .tables import format_table as format_table  # re-exported: the old home
from .tasks import TaskSpec
from .timing import interleaved_blocks, timer_for

logger = logging.getLogger(__name__)

INTERLEAVE_EXAMPLES = 16  # timing: each rule runs this many consecutive examples (whole batches) before the next


@dataclass
class Predictions:
    """Per-example outputs of one pass: logits (N,C), exit_layers (N,), and the wall-clock seconds it took."""

    logits: np.ndarray
    exit_layers: np.ndarray
    seconds: float


@dataclass
class EvalRecord:
    """One (checkpoint, split, exit rule, batch size) evaluation. ``exit_rule`` is the rule's kind ("patience",
    "entropy", "confidence", "layer", "hybrid") and ``exit_value`` its setting (``exit_threshold``: the hybrid
    rule's confidence threshold, None for the others); ``patience`` repeats the value for patience rows and is None
    for the other rules. ``layer_speedup`` = num_layers / avg_exit_layer;
    ``layers_saved`` = 1 - avg_exit_layer / num_layers (what the reference code prints as "Speed Up");
    ``wall_speedup`` = eval_seconds at full depth (patience 0) / eval_seconds, measured in the same run."""

    checkpoint: str
    task: str
    split: str
    patience: int | None
    exit_rule: str
    exit_value: float
    regression_threshold: float | None
    metrics: dict[str, float]
    num_layers: int
    avg_exit_layer: float
    layer_speedup: float
    layers_saved: float
    eval_seconds: float
    examples_per_second: float
    num_examples: int
    batch_size: int
    exit_layer_histogram: dict[str, int]
    wall_speedup: float | None = None
    extra: dict = field(default_factory=dict)
    exit_threshold: float | None = None


def predict(
    model,
    features: Features,
    batch_size: int,
    patience: int | None = None,
    regression_threshold: float | None = None,
    pad_token_id: int = 0,
    progress: bool = False,
    exit_rule: ExitRule | str | None = None,
) -> Predictions:
    """Run early-exit inference over ``features``; outputs are in dataset order.

    The rule is ``exit_rule`` if given, else patience ``patience`` (the model's default when both are None).
    Batches are padded to their longest row and grouped by length. The time covers padding and the model, not
    tokenization.
    """
    rule_kwargs = {"patience": patience} if exit_rule is None else {"exit_rule": exit_rule}
    batches = length_sorted_batches(features, batch_size, pad_token_id)
    logits = np.zeros((len(features), model.num_labels), dtype=np.float32)
    exits = np.zeros(len(features), dtype=np.int64)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    iterator = batches
    if progress:
        from tqdm.auto import tqdm

        name = f"patience {patience}" if exit_rule is None else to_exit_rule(exit_rule).label
        iterator = tqdm(batches, desc=f"eval {name}", leave=False, unit="batch")
    clock = timer_for(device)  # CUDA: synchronised before each reading
    start = clock()
    with torch.inference_mode():
        for indices, batch in iterator:
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch, **rule_kwargs, regression_threshold=regression_threshold)
            logits[indices] = out.logits.float().cpu().numpy()
            exits[indices] = out.exit_layers.cpu().numpy()
    seconds = clock() - start
    model.train(was_training)
    return Predictions(logits, exits, seconds)


def evaluate_exit_rules(
    model,
    features: Features,
    task: TaskSpec,
    rules: Sequence[ExitRule | str],
    batch_size: int,
    checkpoint: str,
    split: str,
    regression_threshold: float | None = None,
    pad_token_id: int = 0,
    warmup: bool = True,
    progress: bool = False,
    timing_rounds: int = 1,
) -> list[EvalRecord]:
    """Evaluate every exit rule (plus full depth, patience 0, as the baseline) on labeled ``features``.

    ``rules`` may mix kinds (``[ExitRule("patience", 3), "entropy:0.3"]``); the baseline comes first, duplicates
    are dropped. Entropy and confidence rules on a regression task raise ValueError before anything runs.

    Timing: the rules are interleaved block by block: the batches are cut into blocks of ``INTERLEAVE_EXAMPLES``
    examples' worth of consecutive batches (at least one batch), and on block j every rule runs the whole block,
    the order shifted by j so none always goes first. A slow spell of a shared machine then hits every rule alike,
    so the wall-clock speed-ups (full-depth time / rule time) compare like with like, while each rule still runs
    consecutive inputs back to back as it would in use (interleaving single examples would make every call start
    from the CPU caches another rule left). ``timing_rounds`` passes are made; a record's
    ``eval_seconds`` is the mean over them (each round's total is kept in ``extra["eval_seconds_rounds"]``).
    Predictions come from the first round; every round gives the same answers.
    """
    if features.labels is None:
        raise ValueError(f"split {split!r} has no labels: cannot evaluate")
    if isinstance(timing_rounds, bool) or not isinstance(timing_rounds, int) or timing_rounds < 1:
        raise ValueError(f"timing_rounds must be an integer >= 1, got {timing_rounds!r}")
    rules = list(dict.fromkeys([patience_rule(0), *(to_exit_rule(r) for r in rules)]))  # full depth first
    for rule in rules:
        check_rule_supported(rule, task.num_labels)
    device = next(model.parameters()).device
    batches = [
        (indices, {k: v.to(device) for k, v in batch.items()})
        for indices, batch in length_sorted_batches(features, batch_size, pad_token_id)
    ]
    was_training = model.training
    model.eval()
    outputs = {rule: _empty_predictions(len(features), model.num_labels) for rule in rules}
    rounds: dict[ExitRule, list[float]] = {rule: [] for rule in rules}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=timing_rounds * len(batches) * len(rules), desc=f"eval {len(rules)} rules, bs {batch_size}",
                   leave=False, unit="batch")
    clock = timer_for(device)  # CUDA: synchronised before each reading, so a call's time includes its kernels
    with torch.inference_mode():
        if warmup:  # an untimed pass over the first batch, so no timed call pays for lazy initialisation
            for rule in rules:
                model(**batches[0][1], exit_rule=rule, regression_threshold=regression_threshold)
        block = max(1, INTERLEAVE_EXAMPLES // batch_size)
        for round_index in range(timing_rounds):
            totals = dict.fromkeys(rules, 0.0)
            for rule, group in interleaved_blocks(rules, batches, block):
                for indices, batch in group:
                    start = clock()
                    out = model(**batch, exit_rule=rule, regression_threshold=regression_threshold)
                    totals[rule] += clock() - start
                    if round_index == 0:
                        logits, exits = outputs[rule]
                        logits[indices] = out.logits.float().cpu().numpy()
                        exits[indices] = out.exit_layers.cpu().numpy()
                if bar is not None:
                    bar.update(len(group))
            for rule in rules:
                rounds[rule].append(totals[rule])
    if bar is not None:
        bar.close()
    model.train(was_training)
    records = []
    for rule in rules:
        logits, exits = outputs[rule]
        pred = Predictions(logits, exits, float(np.mean(rounds[rule])))
        metrics = compute_metrics(task, predicted_labels(task, pred.logits), features.labels)
        # the regression threshold is part of the experiment only where it is used: patience on a regression task
        threshold = regression_threshold if task.is_regression and rule.kind == "patience" else None
        record = _record(model, task, checkpoint, split, rule, threshold, batch_size, pred, metrics)
        record.extra["eval_seconds_rounds"] = [round(t, 6) for t in rounds[rule]]
        record.extra["timing_block_batches"] = block
        records.append(record)
    full_seconds = records[0].eval_seconds
    for record in records:
        record.wall_speedup = full_seconds / record.eval_seconds if record.eval_seconds > 0 else None
    add_timing_spread(records)
    return records


def _empty_predictions(n: int, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((n, num_labels), dtype=np.float32), np.zeros(n, dtype=np.int64)


def evaluate_patiences(
    model,
    features: Features,
    task: TaskSpec,
    patiences: Sequence[int],
    batch_size: int,
    checkpoint: str,
    split: str,
    regression_threshold: float | None = None,
    pad_token_id: int = 0,
    warmup: bool = True,
    progress: bool = False,
    timing_rounds: int = 1,
) -> list[EvalRecord]:
    """Evaluate every patience (plus full depth, patience 0, as the baseline) on labeled ``features``."""
    return evaluate_exit_rules(
        model, features, task, [ExitRule("patience", p) for p in patiences], batch_size, checkpoint, split,
        regression_threshold, pad_token_id, warmup, progress, timing_rounds,
    )


def _record(model, task, checkpoint, split, rule: ExitRule, threshold, batch_size, pred, metrics) -> EvalRecord:
    num_layers = model.num_layers
    avg = float(pred.exit_layers.mean())
    counts = np.bincount(pred.exit_layers, minlength=num_layers + 1)[1:]
    return EvalRecord(
        checkpoint=checkpoint,
        task=task.name,
        split=split,
        patience=rule.value if rule.kind == "patience" else None,
        exit_rule=rule.kind,
        exit_value=rule.value,
        exit_threshold=rule.threshold,
        regression_threshold=threshold,
        metrics=metrics,
        num_layers=num_layers,
        avg_exit_layer=avg,
        layer_speedup=num_layers / avg,
        layers_saved=1.0 - avg / num_layers,
        eval_seconds=pred.seconds,
        examples_per_second=len(pred.exit_layers) / pred.seconds if pred.seconds > 0 else math.inf,
        num_examples=len(pred.exit_layers),
        batch_size=batch_size,
        exit_layer_histogram={str(i + 1): int(c) for i, c in enumerate(counts)},
    )


def _record_key(record: dict) -> tuple:
    return record_key(record)  # kept for callers of the old name: the key lives in pabee.records


def save_records(records: Sequence[EvalRecord], output_dir: str | os.PathLike) -> Path:
    """Merge ``records`` into ``output_dir/eval_results.json`` (through :class:`pabee.records.RecordStore`).

    A record replaces an earlier one only when it is the same experiment (checkpoint, task, split, exit rule and
    value, threshold, batch size); all other results are kept. The merge holds a file lock, so concurrent
    evaluations writing one folder keep every record; the file is replaced atomically.
    """
    return RecordStore(output_dir).append(records)
