"""DeepWordBug (Gao, Lanchantin, Soffa and Qi, 2018, "Black-box Generation of Adversarial Text Sequences to
Evade Deep Learning Classifiers", IEEE S&P Workshops), written for pabee's exit rules, with two goals.

The attack, black-box (it only queries ``classify``; see :mod:`pabee.attacks.classifier`):

1. **Word importance: the combined score** of the paper, from model queries on prefixes and suffixes of the
   perturbed text. With F(x) the goal's value of an input (for misclassification: the probability of the
   original label) and F(empty) fixed (1/C, as in the paper's code), word i of n scores ``CS(i) = (THS(i) +
   TTS(i)) / 2`` with the temporal head score ``THS(i) = F(x1..xi) - F(x1..x(i-1))`` and the temporal tail
   score ``TTS(i) = F(xi..xn) - F(x(i+1)..xn)``: 2(n - 1) queries (the full text is already known).
2. **Greedy search** down the ranking (as TextAttack's DeepWordBug recipe): each word is tried with one random
   edit of each of the paper's four character transformers (:mod:`pabee.attacks.text`); the candidate the goal
   likes best is kept if it improves on the current text, each word is modified at most once, and the search
   stops as soon as the goal is reached.
3. **Budgets**: the summed Levenshtein distance of the edited words (at most ``max_edit_distance``, 30 in the
   TextAttack recipe; an upper bound of the distance between the texts), optionally a number of perturbed
   words, and a number of queries (every input classified counts, the first, clean query included).

Goals: :class:`Misclassification` (untargeted: make the label differ from the original one; the paper's goal)
and :class:`Slowdown` (push the exit layer later, as WAFFLE, Coalson et al., NeurIPS 2023, does with other
attacks: maximise the exit layer under the rule, tie-broken by how close every internal classifier is to the
uniform distribution; needs a classifier that returns every layer's probabilities).

In a pair the second text (hypothesis, sentence 2) is perturbed; the first stays as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .classifier import Classifier, Outputs, Row, TextInput
from .text import candidate_edits, edit_rng, levenshtein, replace_spans, word_spans

# ---------------------------------------------------------------------------------------------------- goals


class Misclassification:
    """Untargeted misclassification of an input whose correct (original) label is ``label``.

    score (maximised): (label changed, 1 - probability of ``label``); F for the importance: the probability of
    ``label``; reached when the predicted label is not ``label``.
    """

    kind = "misclassification"
    needs_all_layers = False

    def __init__(self, label: int, num_labels: int):
        self.label, self.empty_value = int(label), 1.0 / num_labels

    def score(self, row: Row) -> tuple:
        return (row.label != self.label, 1.0 - float(row.probs[self.label]))

    def value(self, row: Row) -> float:
        return float(row.probs[self.label])

    def reached(self, clean: Row, row: Row) -> bool:
        return row.label != self.label

    def succeeded(self, clean: Row, row: Row) -> bool:
        return self.reached(clean, row)

    def skip(self, clean: Row) -> bool:
        """Already misclassified: nothing to attack (reported as skipped, as TextAttack does)."""
        return clean.label != self.label


def uniformity(layer_probs: np.ndarray) -> float:
    """How close every internal classifier is to the uniform distribution, in [0, 1] (1: all uniform): the
    mean over layers of 1 - |p - u|_1 / max |p - u|_1 (max = 2 (1 - 1/C)); WAFFLE's slowdown score for two
    classes."""
    layer_probs = np.asarray(layer_probs, dtype=np.float64)  # (L, C)
    c = layer_probs.shape[-1]
    distance = np.abs(layer_probs - 1.0 / c).sum(axis=-1) / (2.0 * (1.0 - 1.0 / c))
    return float(np.mean(1.0 - distance))


class Slowdown:
    """Push the exit layer later under the classifier's exit rule (``num_layers`` = L).

    score (maximised): (exit layer, :func:`uniformity` of all internal classifiers); F for the importance:
    -(exit layer + uniformity), F(empty) = -(L + 1) (full depth, all uniform); reached at exit layer L.
    Success: an exit layer later than the clean input's.
    """

    kind = "slowdown"
    needs_all_layers = True

    def __init__(self, num_layers: int):
        self.num_layers = int(num_layers)
        self.empty_value = -(self.num_layers + 1.0)

    def score(self, row: Row) -> tuple:
        if row.layer_probs is None:
            raise ValueError("the slowdown goal needs every layer's probabilities (all_layers=True)")
        return (row.exit_layer, uniformity(row.layer_probs))

    def value(self, row: Row) -> float:
        exit_layer, flat = self.score(row)
        return -(exit_layer + flat)

    def reached(self, clean: Row, row: Row) -> bool:
        return row.exit_layer >= self.num_layers

    def skip(self, clean: Row) -> bool:
        """Already at the last layer: no slowdown possible."""
        return clean.exit_layer >= self.num_layers

    def succeeded(self, clean: Row, row: Row) -> bool:
        return row.exit_layer > clean.exit_layer


# ---------------------------------------------------------------------------------------------------- attack


@dataclass(frozen=True)
class Budget:
    """Limits of one attack: summed per-word Levenshtein distance, perturbed words (None: no limit), queries
    (every classified input, the clean one included), and random edits tried per transformer and word."""

    max_edit_distance: int = 30
    max_words: int | None = None
    max_queries: int = 1000
    per_transform: int = 1

    def __post_init__(self) -> None:
        if self.max_edit_distance < 1 or self.max_queries < 1 or self.per_transform < 1:
            raise ValueError("max_edit_distance, max_queries and per_transform must be >= 1")
        if self.max_words is not None and self.max_words < 1:
            raise ValueError(f"max_words must be >= 1 or None, got {self.max_words}")


@dataclass
class AttackResult:
    """What one attack did.

    status: "succeeded" (goal's success), "failed" (budget or words exhausted) or "skipped" (nothing to
    attack: misclassified already, or already at the last layer). ``perturbed`` is the final input (==
    ``original`` when nothing was changed). ``queries``: inputs classified. ``num_words``: words of the
    perturbed text; ``edits``: (word index, transformer, old word, new word) in the order they were made;
    ``edit_distance``: their summed Levenshtein distances. ``clean`` / ``final``: the classifier's answers to
    the original and final input; ``scores``: the goal's score of both.
    """

    original: TextInput
    perturbed: TextInput
    status: str
    queries: int
    num_words: int
    edits: list[tuple[int, str, str, str]] = field(default_factory=list)
    edit_distance: int = 0
    clean: Row | None = None
    final: Row | None = None
    scores: tuple[tuple, tuple] | None = None

    @property
    def perturbed_words(self) -> int:
        return len(self.edits)

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


def _target(item: TextInput) -> str:
    return item if isinstance(item, str) else item[1]


def _with_target(item: TextInput, text: str) -> TextInput:
    return text if isinstance(item, str) else (item[0], text)


class _Queries:
    """``classify`` with a query counter and the query budget; a classifier may also answer with a plain
    (labels, probs, exit_layers[, layer_probs]) tuple."""

    def __init__(self, classify: Classifier, budget: int):
        self.classify, self.budget, self.used = classify, budget, 0

    @property
    def left(self) -> int:
        return self.budget - self.used

    def __call__(self, inputs: Sequence[TextInput]) -> Outputs:
        if len(inputs) > self.left:
            raise RuntimeError("query budget exceeded")  # a bug: callers check ``left`` first
        self.used += len(inputs)
        out = self.classify(list(inputs))
        return out if isinstance(out, Outputs) else Outputs(*(np.asarray(x) for x in out))


def combined_scores(values_head: Sequence[float], values_tail: Sequence[float]) -> np.ndarray:
    """DeepWordBug's combined score of n words from F of the head prefixes and tail suffixes.

    ``values_head[i]`` = F(first i words), i = 0..n (0: the empty value); ``values_tail[j]`` = F(words
    j+1..n), j = 0..n (n: the empty value). Returns (n,) (THS + TTS) / 2.
    """
    head, tail = np.asarray(values_head, dtype=np.float64), np.asarray(values_tail, dtype=np.float64)
    return ((head[1:] - head[:-1]) + (tail[:-1] - tail[1:])) / 2.0


def rank_words(queries: _Queries, item: TextInput, spans, goal, full: Row) -> list[int] | None:
    """Word indices, most important first (ties: earlier word first); None when the query budget cannot pay
    for the 2 (n - 1) ranking queries."""
    text, n = _target(item), len(spans)
    if n == 1:
        return [0]
    if 2 * (n - 1) > queries.left:
        return None
    heads = [_with_target(item, text[: spans[i - 1][1]]) for i in range(1, n)]  # first i words, i = 1..n-1
    tails = [_with_target(item, text[spans[j][0] :]) for j in range(1, n)]  # words j+1..n, j = 1..n-1
    out = queries(heads + tails)
    values = [goal.value(out.row(k)) for k in range(len(out))]
    full_value = goal.value(full)
    head = [goal.empty_value, *values[: n - 1], full_value]
    tail = [full_value, *values[n - 1 :], goal.empty_value]
    scores = combined_scores(head, tail)
    return sorted(range(n), key=lambda i: (-scores[i], i))


def deepwordbug(classify: Classifier, item: TextInput, goal, key: str = "", seed: int = 0,
                budget: Budget | None = None) -> AttackResult:
    """Attack one input (a text, or a pair whose second text is perturbed) with DeepWordBug toward ``goal``
    (:class:`Misclassification` or :class:`Slowdown`).

    ``key`` names the input (e.g. its dataset index): with ``seed`` it fixes the random candidate edits of
    each of its words, so attacks of different exit rules with the same key and seed search the same
    perturbation space.
    """
    budget = budget or Budget()
    queries = _Queries(classify, budget.max_queries)
    clean = queries([item]).row(0)
    text = _target(item)
    spans = word_spans(text)
    result = AttackResult(item, item, "failed", 0, len(spans), clean=clean, final=clean)
    if goal.skip(clean):
        result.status = "skipped"
    elif spans:
        _search(queries, item, spans, goal, clean, key, seed, budget, result)
    result.queries = queries.used
    result.scores = (goal.score(clean), goal.score(result.final))
    if result.status != "skipped":
        result.status = "succeeded" if goal.succeeded(clean, result.final) else "failed"
    return result


def _search(queries: _Queries, item, spans, goal, clean: Row, key, seed, budget: Budget,
            result: AttackResult) -> None:
    order = rank_words(queries, item, spans, goal, clean)
    if order is None:
        return
    text = _target(item)
    words = [text[s:e] for s, e in spans]
    current, current_score = clean, goal.score(clean)
    for i in order:
        if goal.reached(clean, current) or queries.left == 0:
            break
        if budget.max_words is not None and len(result.edits) >= budget.max_words:
            break
        original = text[spans[i][0] : spans[i][1]]
        room = budget.max_edit_distance - result.edit_distance
        candidates = [(e, w, levenshtein(original, w)) for e, w in
                      candidate_edits(original, edit_rng(seed, key, i), budget.per_transform)]
        candidates = [c for c in candidates if c[2] <= room][: queries.left]
        if not candidates:
            continue
        inputs = []
        for _, new, _ in candidates:
            trial = list(words)
            trial[i] = new
            inputs.append(_with_target(item, replace_spans(text, spans, trial)))
        out = queries(inputs)
        scores = [goal.score(out.row(k)) for k in range(len(out))]
        best = max(range(len(scores)), key=lambda k: (scores[k], -k))  # first of the best
        if scores[best] > current_score:
            edit, new, cost = candidates[best]
            words[i] = new
            result.edits.append((i, edit.kind, original, new))
            result.edit_distance += cost
            current, current_score = out.row(best), scores[best]
            result.perturbed = inputs[best]
    result.final = current
