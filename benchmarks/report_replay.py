"""The results report's replay scoring of one run: from every layer's logits on a split (one fp32 pass,
:func:`pabee.tuning.all_layer_logits`) to the metric, mean exit layer and layer speed-up of every exit setting the
report evaluates, the tuned settings, and the check that the real early-exit inference agrees with the replay.

Everything here is numpy over all-layer logits (L, N, C); the exit layers come from the rule objects themselves
(:meth:`pabee.tuning.Candidate.exit_layers`, the early-exit loop of :mod:`pabee.early_exit` over a replay backend),
so the replayed answers are those the layer-by-layer inference gives.

Tuning (:func:`tuning_summary`): the fastest setting within ``max_drop`` points of the run's own full depth
(:func:`pabee.tuning.choose`), among :data:`pabee.tuning.TUNE_KINDS` (regression: patience x the regression
thresholds). Chosen on dev itself (optimistic: chosen on the data it is scored on), and an honest estimate: chosen
on the held-out split ``pabee train --tune_split`` made, scored on dev; else 2-fold cross-fitting on dev (each half
predicted by the setting chosen on the other half, the metric computed over all of dev).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pabee.exit_rules import DEFAULT_REGRESSION_THRESHOLD, ExitRule
from pabee.exit_signals import max_softmax_probability, softmax_entropy
from pabee.metrics import compute_metrics, predicted_labels
from pabee.tasks import TaskSpec
from pabee.tuning import (
    FULL_DEPTH,
    REGRESSION_THRESHOLDS,
    TUNE_KINDS,
    Candidate,
    Score,
    score,
    tune,
    tuning_candidates,
)

TIE_TOLERANCE = 1e-4  # float noise between batched inference and the replay: decisions this close may differ
CROSS_FIT_FOLDS = 2


# ---------------------------------------------------------------------------------------------------- settings


def replay_candidates(rules: Sequence[ExitRule], num_labels: int) -> list[Candidate]:
    """The settings a run is scored under: full depth first, then every rule of ``rules``; on a regression task
    (``num_labels == 1``) every patience once per regression threshold of :data:`REGRESSION_THRESHOLDS`."""
    out = [Candidate(FULL_DEPTH)]
    for rule in rules:
        if rule.is_full_depth:
            continue
        if num_labels == 1 and rule.kind == "patience":
            out += [Candidate(rule, float(t)) for t in REGRESSION_THRESHOLDS]
        else:
            out.append(Candidate(rule))
    return list(dict.fromkeys(out))


def setting_name(candidate: Candidate) -> str:
    """"patience:3", "entropy:0.069", "patience:2 (regression threshold 0.3)"; the key of a timed setting."""
    rule = str(candidate.rule)
    return rule if candidate.regression_threshold is None else f"{rule} (regression threshold {candidate.regression_threshold:g})"


def candidate_of(record: dict) -> Candidate:
    """The setting a replay record (or a tuning choice) names."""
    rule = ExitRule(record["exit_rule"], record["exit_value"], record.get("exit_threshold"))
    return Candidate(rule, record.get("regression_threshold"))


def replay_record(s: Score, split: str) -> dict:
    """One setting's replay result, in the shape of the evaluation records (``batch_size`` None: not timed)."""
    rule = s.candidate.rule
    threshold = s.candidate.regression_threshold
    return {
        "source": "replay", "split": split, "exit_rule": rule.kind, "exit_value": rule.value,
        "exit_threshold": rule.threshold, "regression_threshold": threshold, "setting": setting_name(s.candidate),
        "label": s.candidate.label, "metrics": s.metrics, "num_layers": len(s.exit_layer_histogram),
        "avg_exit_layer": s.avg_exit_layer, "layer_speedup": s.layer_speedup,
        "num_examples": int(sum(s.exit_layer_histogram)), "batch_size": None,
        "exit_layer_histogram": {str(i + 1): int(c) for i, c in enumerate(s.exit_layer_histogram)},
    }


def replay_records(all_logits: np.ndarray, labels: Sequence, task: TaskSpec, candidates: Sequence[Candidate],
                   split: str) -> list[dict]:
    """Every candidate scored on the split whose all-layer logits are ``all_logits`` (L, N, C)."""
    return [replay_record(score(all_logits, labels, task, c), split) for c in candidates]


# ---------------------------------------------------------------------------------------------------- tuning


def _choice(s: Score, full: Score, metric: str) -> dict:
    return {**s.candidate.to_dict(), "setting": setting_name(s.candidate), "label": s.candidate.label,
            "metrics": s.metrics, "avg_exit_layer": s.avg_exit_layer, "layer_speedup": s.layer_speedup,
            "drop_vs_full": 100.0 * (full.metrics[metric] - s.metrics[metric])}


def cross_fit(all_logits: np.ndarray, labels: Sequence, task: TaskSpec, candidates: Sequence[Candidate],
              max_drop: float, seed: int, folds: int = CROSS_FIT_FOLDS) -> dict:
    """Honest estimate without a held-out split: dev cut at random (``seed``) into ``folds`` parts; each part is
    predicted with the setting :func:`pabee.tuning.tune` chooses on the other parts; metric, mean exit layer and
    layer speed-up are computed over every dev row so predicted."""
    labels = np.asarray(labels)
    num_layers, rows = all_logits.shape[:2]
    if rows < 2 * folds:
        raise ValueError(f"cross-fitting needs at least {2 * folds} dev examples, got {rows}")
    parts = np.array_split(np.random.default_rng(seed).permutation(rows), folds)
    exits = np.zeros(rows, dtype=np.int64)
    choices = []
    for k, part in enumerate(parts):
        part = np.sort(part)
        fit = np.sort(np.concatenate([p for j, p in enumerate(parts) if j != k]))
        chosen = tune(all_logits[:, fit], labels[fit], task, max_drop, candidates, split=f"dev without part {k + 1}").chosen
        exits[part] = chosen.candidate.exit_layers(all_logits[:, part])
        choices.append({"setting": setting_name(chosen.candidate), "label": chosen.candidate.label,
                        "fit_examples": int(len(fit)), "scored_examples": int(len(part))})
    logits = all_logits[exits - 1, np.arange(rows)]
    metrics = compute_metrics(task, predicted_labels(task, logits), labels)
    mean = float(exits.mean())
    return {"how": "cross-fit", "folds": folds, "seed": seed, "choices": choices, "metrics": metrics,
            "avg_exit_layer": mean, "layer_speedup": num_layers / mean}


def tuning_summary(dev_logits: np.ndarray, dev_labels: Sequence, task: TaskSpec, max_drop: float, seed: int,
                   heldout: tuple[np.ndarray, Sequence, dict] | None = None,
                   kinds: Sequence[str] = TUNE_KINDS) -> dict:
    """The run's tuned settings (see the module docstring): ``dev`` (chosen and scored on dev, optimistic),
    ``honest`` (held-out split when given as (logits, labels, detail), else cross-fitting), and ``patience``
    (the fastest patience within the budget on dev, PABEE's own rule). Drops are points below the run's full depth
    on dev. ``kinds``: the rule kinds tuned over (:data:`pabee.tuning.TUNE_KINDS`; the report adds "hybrid" with
    --hybrid-rules)."""
    num_layers, _, num_labels = dev_logits.shape
    metric = task.main_metric
    candidates = tuning_candidates(num_labels, num_layers, kinds)
    result = tune(dev_logits, dev_labels, task, max_drop, candidates)
    full = result.full
    patience_only = [c for c in candidates if c.rule.kind == "patience"]
    patience = tune(dev_logits, dev_labels, task, max_drop, patience_only).chosen
    out = {
        "max_drop": max_drop, "metric": metric, "candidates": len(candidates),
        "kinds": list(kinds) + (["regression thresholds"] if num_labels == 1 else []),
        "full_depth": _choice(full, full, metric),
        "dev": {**_choice(result.chosen, full, metric), "how": "dev", "optimistic": True},
        "patience": {**_choice(patience, full, metric), "how": "dev", "optimistic": True},
    }
    if heldout is not None:
        logits, labels, detail = heldout
        chosen = tune(logits, labels, task, max_drop, candidates, split="heldout").chosen
        on_dev = score(dev_logits, dev_labels, task, chosen.candidate)
        honest = {**_choice(on_dev, full, metric), "how": "held-out", "detail": detail,
                  "heldout_examples": int(logits.shape[1]),
                  "choices": [{"setting": setting_name(chosen.candidate), "label": chosen.candidate.label}]}
    else:
        honest = cross_fit(dev_logits, dev_labels, task, candidates, max_drop, seed)
        honest["drop_vs_full"] = 100.0 * (full.metrics[metric] - honest["metrics"][metric])
    out["honest"] = honest
    return out


# ---------------------------------------------------------------------------------------------------- equivalence


def near_ties(all_logits: np.ndarray, candidate: Candidate, upto: np.ndarray, tol: float = TIE_TOLERANCE) -> np.ndarray:
    """(N,) bool: rows where some decision of the first ``upto`` (N,) layers is within float noise of flipping: two
    classes' logits (nearly) tied, an entropy or top probability at the rule's threshold, or a regression step at
    the regression threshold. Only there may batched inference and the replay disagree."""
    num_layers, rows, num_labels = all_logits.shape
    x = all_logits.astype(np.float64)
    scale = tol * np.maximum(1.0, np.abs(x).max(axis=2))  # (L, N)
    close = np.zeros((num_layers, rows), dtype=bool)
    rule = candidate.rule
    if num_labels >= 2:
        top2 = np.sort(x, axis=2)[:, :, -2:]
        close |= (top2[:, :, 1] - top2[:, :, 0]) <= scale
        flat = x.reshape(-1, num_labels)
        if rule.kind == "entropy":
            close |= np.abs(softmax_entropy(flat).reshape(num_layers, rows) - rule.value) <= tol
        if rule.kind in ("confidence", "hybrid"):
            level = rule.value if rule.kind == "confidence" else rule.threshold
            close |= np.abs(max_softmax_probability(flat).reshape(num_layers, rows) - level) <= tol
    else:
        threshold = candidate.regression_threshold or DEFAULT_REGRESSION_THRESHOLD
        step = np.abs(np.diff(x[:, :, 0], axis=0))
        close[1:] |= np.abs(step - threshold) <= scale[1:]
    within = np.arange(num_layers)[:, None] < upto[None, :]
    return (close & within).any(axis=0)


def compare_with_replay(all_logits: np.ndarray, candidate: Candidate, logits: np.ndarray, exits: np.ndarray,
                        num_labels: int, tol: float = TIE_TOLERANCE) -> dict:
    """The real inference's exit-layer logits (N, C) and exit layers (N,) against the replay of ``candidate`` over
    the same rows' all-layer logits (L, N, C). ``mismatches``: rows whose exit layer or prediction differ;
    ``near_ties``: those explained by a decision within float noise (:func:`near_ties`); ``unexplained``: the
    others (a defect); ``max_abs_logit_difference``: over the rows that agree."""
    rows = all_logits.shape[1]
    replay_exits = candidate.exit_layers(all_logits)
    replay_logits = all_logits[replay_exits - 1, np.arange(rows)]
    if num_labels >= 2:
        differs = replay_logits.argmax(axis=1) != logits.argmax(axis=1)
    else:
        differs = np.abs(replay_logits[:, 0] - logits[:, 0]) > tol * np.maximum(1.0, np.abs(logits[:, 0]))
    bad = differs | (replay_exits != exits)
    tied = bad & near_ties(all_logits, candidate, np.maximum(replay_exits, exits), tol)
    agree = ~bad
    diff = float(np.abs(replay_logits[agree] - logits[agree]).max()) if agree.any() else 0.0
    return {"examples": int(rows), "mismatches": int(bad.sum()), "near_ties": int(tied.sum()),
            "unexplained": int((bad & ~tied).sum()), "exit_mismatches": int((replay_exits != exits).sum()),
            "max_abs_logit_difference": diff}
