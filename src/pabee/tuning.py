"""Choosing a model's default exit rule (``pabee tune``): the fastest setting within a quality budget.

Every layer's logits are computed once on a tuning split (one batched pass with ``output_all_layers=True``,
:func:`all_layer_logits`). Each candidate setting is then scored without running the model again: its exit layers
are recomputed from those logits by the rule object itself (``ExitRule.build().exit_layers``, the early-exit loop
of :mod:`pabee.early_exit` over a :class:`~pabee.early_exit.ReplayBackend`), so the answers are the ones the
layer-by-layer inference gives. The candidates (:func:`tuning_candidates`) are every patience 1..L-1, entropy
thresholds (fractions of ln C, the largest entropy C classes can have), confidence thresholds above 1/C, and on
regression tasks patience x a grid of regression thresholds.

:func:`choose` picks the one with the largest layer speed-up (L / mean exit layer) whose main metric is at most
``max_drop`` points (metric x 100) below full depth's, the higher metric breaking ties; full depth when none is
faster. :func:`tune` does all of it and returns a :class:`TuningResult`; :mod:`pabee.tune_run` reads run folders,
saves the choice and writes ``tuning.json``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .exit_rules import DEFAULT_REGRESSION_THRESHOLD, ExitRule, patience_rule
from .metrics import compute_metrics, predicted_labels
from .tasks import TaskSpec

ENTROPY_FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # of ln C, the largest possible entropy
CONFIDENCES = (0.55, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)  # only those > 1/C are used
REGRESSION_THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0)  # tried with every patience (regression)
CANDIDATE_KINDS = ("patience", "entropy", "confidence", "layer", "hybrid")
HYBRID_RULES = ((1, 0.8), (2, 0.7), (2, 0.8), (2, 0.9))  # (patience, confidence) of the hybrid candidates
TUNE_KINDS = ("patience", "entropy", "confidence")  # what pabee tune tries unless told otherwise
DEFAULT_MAX_DROP = 0.5  # points of the main metric (x 100) below full depth
FULL_DEPTH = patience_rule(0)


def candidate_exit_rules(num_labels: int, num_layers: int, kinds: Sequence[str] = CANDIDATE_KINDS) -> list[ExitRule]:
    """The exit rules worth comparing on a model of ``num_layers`` layers: patience 1..L-1, and for
    classification (``num_labels`` >= 2) entropy thresholds (:data:`ENTROPY_FRACTIONS` of ln C) and confidence
    thresholds (:data:`CONFIDENCES` above 1/C), then fixed layers 1..L-1 and (classification) the :data:`HYBRID_RULES`; only the ``kinds`` asked for. Full depth
    is not among them (it is the baseline)."""
    unknown = sorted(set(kinds) - set(CANDIDATE_KINDS))
    if unknown:
        raise ValueError(f"unknown exit rule kind {unknown[0]!r}; choose from {', '.join(CANDIDATE_KINDS)}")
    depths = range(1, num_layers)
    rules = [ExitRule("patience", t) for t in depths] if "patience" in kinds else []
    if num_labels >= 2:
        if "entropy" in kinds:
            rules += [ExitRule("entropy", f * math.log(num_labels)) for f in ENTROPY_FRACTIONS]
        if "confidence" in kinds:
            rules += [ExitRule("confidence", c) for c in CONFIDENCES if c > 1 / num_labels]
    if "layer" in kinds:
        rules += [ExitRule("layer", k) for k in depths]
    if "hybrid" in kinds and num_labels >= 2:
        rules += [ExitRule("hybrid", t, c) for t, c in HYBRID_RULES if t < num_layers and c > 1 / num_labels]
    return rules


@dataclass(frozen=True)
class Candidate:
    """One exit setting: a rule, and for patience on a regression model its ``regression_threshold``."""

    rule: ExitRule
    regression_threshold: float | None = None

    @property
    def is_full_depth(self) -> bool:
        return self.rule.is_full_depth

    @property
    def label(self) -> str:
        """"full", "patience 3", "entropy 0.139", "patience 2, threshold 0.3"."""
        if self.is_full_depth:
            return "full"
        name = self.rule.label if self.rule.kind == "patience" else f"{self.rule.kind} {self.rule.value:.3g}"
        return name if self.regression_threshold is None else f"{name}, threshold {self.regression_threshold:g}"

    def exit_layers(self, all_logits: np.ndarray) -> np.ndarray:
        """Every row's exit layer (1..L) under this setting, recomputed from all layers' logits (L, N, C)."""
        threshold = DEFAULT_REGRESSION_THRESHOLD if self.regression_threshold is None else self.regression_threshold
        return self.rule.build(threshold).exit_layers(all_logits)

    def to_dict(self) -> dict:
        return {"exit_rule": str(self.rule), "regression_threshold": self.regression_threshold}


def tuning_candidates(num_labels: int, num_layers: int, kinds: Sequence[str] = TUNE_KINDS,
                      regression_thresholds: Sequence[float] = REGRESSION_THRESHOLDS) -> list[Candidate]:
    """The settings :func:`tune` scores: :func:`candidate_exit_rules`, each patience paired with every regression
    threshold on a regression model (``num_labels == 1``)."""
    rules = candidate_exit_rules(num_labels, num_layers, kinds)
    if num_labels >= 2:
        return [Candidate(rule) for rule in rules]
    return [Candidate(rule, float(t) if rule.kind == "patience" else None)
            for rule in rules for t in (regression_thresholds if rule.kind == "patience" else [None])]


@dataclass
class Score:
    """A candidate's result on one split: every metric of the task, the mean exit layer and L / that mean."""

    candidate: Candidate
    metrics: dict[str, float]
    avg_exit_layer: float
    layer_speedup: float
    exit_layer_histogram: list[int] = field(default_factory=list)  # rows that left at layer 1..L

    def to_dict(self) -> dict:
        return {**self.candidate.to_dict(), "label": self.candidate.label, "metrics": self.metrics,
                "avg_exit_layer": self.avg_exit_layer, "layer_speedup": self.layer_speedup,
                "exit_layer_histogram": self.exit_layer_histogram}


def score(all_logits: np.ndarray, labels: Sequence, task: TaskSpec, candidate: Candidate) -> Score:
    """``candidate`` on the rows whose every layer's logits are ``all_logits`` (L, N, C) and labels ``labels``."""
    num_layers, rows = all_logits.shape[:2]
    exits = candidate.exit_layers(all_logits)
    logits = all_logits[exits - 1, np.arange(rows)]
    metrics = compute_metrics(task, predicted_labels(task, logits), labels)
    mean = float(exits.mean())
    histogram = np.bincount(exits, minlength=num_layers + 1)[1:].tolist()
    return Score(candidate, metrics, mean, num_layers / mean, histogram)


def choose(speedups: Sequence[float], metrics: Sequence[float], full_metric: float, max_drop: float) -> int | None:
    """The index of the fastest candidate (largest layer speed-up) whose metric is at least ``full_metric`` minus
    ``max_drop`` points (metrics are fractions: a point is 0.01); among equally fast ones the higher metric, then
    the first. None when no candidate qualifies or none is faster than full depth (speed-up > 1)."""
    floor = full_metric - max_drop / 100.0 - 1e-12  # rounding of max_drop / 100 must not exclude a borderline case
    best = None
    for i, (speedup, metric) in enumerate(zip(speedups, metrics)):
        if not (metric >= floor and speedup > 1.0):
            continue
        if best is None or (speedup, metric) > (speedups[best], metrics[best]):
            best = i
    return best


@dataclass
class TuningResult:
    """What :func:`tune` found. ``scores`` are the candidates on the tuning split, ``full`` is full depth there,
    ``chosen`` the pick (``full`` itself when nothing qualified; ``chosen_index`` is then None). ``dev`` holds the
    same on the dev split when it is not the tuning split (else None): ``{"split", "num_examples", "full",
    "scores"}``."""

    task: str
    metric: str
    split: str
    num_examples: int
    max_drop: float
    num_layers: int
    full: Score
    scores: list[Score]
    chosen_index: int | None
    split_detail: dict = field(default_factory=dict)
    dev: dict | None = None

    @property
    def chosen(self) -> Score:
        return self.full if self.chosen_index is None else self.scores[self.chosen_index]

    def drop(self, s: Score) -> float:
        """How many points (x 100) ``s``'s main metric is below full depth's (negative: above)."""
        return 100.0 * (self.full.metrics[self.metric] - s.metrics[self.metric])

    def to_dict(self) -> dict:
        """The decision as tuning.json holds it."""
        dev = None
        if self.dev is not None:
            dev = {"split": self.dev["split"], "num_examples": self.dev["num_examples"],
                   "full": self.dev["full"].to_dict(), "candidates": [s.to_dict() for s in self.dev["scores"]]}
        return {
            "task": self.task, "metric": self.metric, "split": self.split, "split_detail": self.split_detail,
            "num_examples": self.num_examples, "num_layers": self.num_layers, "max_drop_points": self.max_drop,
            "full_depth": self.full.to_dict(),
            "candidates": [{**s.to_dict(), "drop_points": self.drop(s),
                            "within_drop": self.drop(s) <= self.max_drop + 1e-10} for s in self.scores],
            "chosen": {**self.chosen.to_dict(), "index": self.chosen_index, "full_depth": self.chosen_index is None},
            "dev": dev,
        }


def tune(all_logits: np.ndarray, labels: Sequence, task: TaskSpec, max_drop: float = DEFAULT_MAX_DROP,
         candidates: Sequence[Candidate] | None = None, split: str = "dev",
         dev: tuple[str, np.ndarray, Sequence] | None = None) -> TuningResult:
    """Score every candidate (default: :func:`tuning_candidates` for the model's shape) on the tuning split's
    logits ``all_logits`` (L, N, C) and ``labels``, and :func:`choose` one. ``dev``: (split name, its all-layers
    logits, labels) to report the same candidates on the dev split too (when tuning on a held-out split)."""
    if labels is None or len(labels) == 0:
        raise ValueError(f"the tuning split ({split}) has no labels: cannot tune")
    num_layers, _, num_labels = all_logits.shape
    if num_labels != task.num_labels:
        raise ValueError(f"the model has {num_labels} labels but task {task.name} has {task.num_labels}")
    if candidates is None:
        candidates = tuning_candidates(num_labels, num_layers)
    full = score(all_logits, labels, task, Candidate(FULL_DEPTH))
    scores = [score(all_logits, labels, task, c) for c in candidates]
    metric = task.main_metric
    index = choose([s.layer_speedup for s in scores], [s.metrics[metric] for s in scores], full.metrics[metric],
                   max_drop)
    result = TuningResult(task.name, metric, split, len(labels), max_drop, num_layers, full, scores, index)
    if dev is not None:
        name, dev_logits, dev_labels = dev
        result.dev = {"split": name, "num_examples": len(dev_labels),
                      "full": score(dev_logits, dev_labels, task, Candidate(FULL_DEPTH)),
                      "scores": [score(dev_logits, dev_labels, task, c) for c in candidates]}
    return result


def all_layer_logits(model, features, batch_size: int = 32, pad_token_id: int = 0, progress: bool = False) -> np.ndarray:
    """Every internal classifier's logits on ``features`` (:class:`pabee.features.Features`): (L, N, C) float32,
    rows in dataset order. One pass with ``output_all_layers=True``, batches of similar length."""
    import torch

    from .features import length_sorted_batches

    batches = length_sorted_batches(features, batch_size, pad_token_id)
    out = np.zeros((model.num_layers, len(features), model.num_labels), dtype=np.float32)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="all layers' logits", leave=False, unit="batch")
    with torch.inference_mode():
        for indices, batch in batches:
            result = model(**{k: v.to(device) for k, v in batch.items()}, output_all_layers=True)
            out[:, indices] = result.all_logits.float().cpu().numpy()
    model.train(was_training)
    return out


def format_tuning(result: TuningResult) -> str:
    """The decision table (the style of :func:`pabee.tables.format_table`): one row per candidate, full depth
    first; ``*`` marks the choice, ``+`` the other candidates within the budget. With a separate dev split a
    column gives each candidate's dev metric; tuned on dev, a note says the dev figure is optimistic."""
    metric = result.metric
    header = ["", "rule", f"{metric} ({result.split})", "drop", "avg exit", "layer x", "saved"]
    dev_scores = None
    if result.dev is not None:
        header.append(f"{metric} ({result.dev['split']})")
        dev_scores = [result.dev["full"], *result.dev["scores"]]
    rows = []
    for i, s in enumerate([result.full, *result.scores]):
        index = None if i == 0 else i - 1
        drop = result.drop(s)
        mark = "*" if index == result.chosen_index else ("+" if index is not None and drop <= result.max_drop
                                                          + 1e-10 and s.layer_speedup > 1.0 else "")
        row = [mark, s.candidate.label, f"{s.metrics[metric]:.4f}", "-" if index is None else f"{drop:+.2f}",
               f"{s.avg_exit_layer:.2f}/{result.num_layers}", f"{s.layer_speedup:.2f}",
               f"{100 * (1 - s.avg_exit_layer / result.num_layers):.1f}%"]
        if dev_scores is not None:
            row.append(f"{dev_scores[i].metrics[metric]:.4f}")
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    heading = (f"{result.task}: exit rule tuned on {result.split} ({result.num_examples} examples), main metric "
               f"{metric}, at most {result.max_drop:g} points below full depth")
    chosen = result.chosen
    if result.chosen_index is None:
        verdict = "chosen: full depth (no faster setting within the budget)"
    else:
        verdict = (f"chosen: {chosen.candidate.label} ({chosen.candidate.rule}): {metric} "
                   f"{chosen.metrics[metric]:.4f} on {result.split} against {result.full.metrics[metric]:.4f} at full "
                   f"depth, layer speed-up {chosen.layer_speedup:.2f}")
    notes = ["drop: points (x 100) below full depth; * the choice; + also within the budget", verdict]
    if result.dev is not None:
        dev_chosen = result.dev["full"] if result.chosen_index is None else result.dev["scores"][result.chosen_index]
        notes.append(f"on {result.dev['split']} ({result.dev['num_examples']} examples): {metric} "
                     f"{dev_chosen.metrics[metric]:.4f} against {result.dev['full'].metrics[metric]:.4f} at full "
                     f"depth, layer speed-up {dev_chosen.layer_speedup:.2f}")
    elif result.split == "dev":
        notes.append("note: tuned on dev, the dev figures are optimistic (chosen on the data they are measured on); "
                     "hold out part of the training set with pabee train --tune_split for an unbiased dev figure")
    return "\n".join([heading, *lines, *notes])
