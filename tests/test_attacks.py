"""pabee.attacks: DeepWordBug's character edits, word ranking, budgets and query counting, the
misclassification and slowdown goals, on hand-made fake classifiers and on a tiny random pabee model."""

from __future__ import annotations

import random

import numpy as np
import pytest
from run_fixtures import save_tiny_run
from transformers import AutoTokenizer

from pabee.attacks import (
    Budget,
    LayerLogits,
    Misclassification,
    ModelClassifier,
    Outputs,
    Slowdown,
    deepwordbug,
    uniformity,
)
from pabee.attacks.deepwordbug import combined_scores
from pabee.attacks.text import (
    TRANSFORMS,
    Edit,
    apply_edit,
    candidate_edits,
    edit_rng,
    levenshtein,
    random_edit,
    replace_spans,
    word_spans,
)
from pabee.modeling import PabeeForSequenceClassification

# ------------------------------------------------------------------------------------------ character edits


def test_the_four_transformers():
    assert apply_edit("movie", Edit("swap", 1)) == "mvoie"
    assert apply_edit("movie", Edit("substitute", 0, "z")) == "zovie"
    assert apply_edit("movie", Edit("delete", 4)) == "movi"
    assert apply_edit("movie", Edit("insert", 5, "s")) == "movies"
    assert apply_edit("movie", Edit("insert", 0, "a")) == "amovie"
    with pytest.raises(ValueError, match="cannot swap"):
        apply_edit("movie", Edit("swap", 4))
    with pytest.raises(ValueError, match="unknown edit"):
        apply_edit("movie", Edit("reverse", 0))


def test_random_edits_change_the_word_by_one_step():
    rng = random.Random(0)
    for word in ["a", "ab", "good", "Egypt", "aaaa"]:
        for kind in TRANSFORMS:
            edit = random_edit(kind, word, rng)
            if edit is None:  # a swap of identical letters or the deletion of a one-letter word
                assert (kind == "swap" and len(set(word)) == 1) or (kind == "delete" and len(word) == 1)
                continue
            new = apply_edit(word, edit)
            assert new != word
            assert levenshtein(word, new) == (2 if kind == "swap" else 1)
            assert len(new) == len(word) + {"insert": 1, "delete": -1}.get(kind, 0)


def test_candidate_edits_are_seeded_and_distinct():
    first = candidate_edits("patience", edit_rng(3, "dev-7", 2), per_transform=2)
    again = candidate_edits("patience", edit_rng(3, "dev-7", 2), per_transform=2)
    assert first == again and len(first) <= 8
    assert len({w for _, w in first}) == len(first) and all(w != "patience" for _, w in first)
    assert {e.kind for e, _ in first} == set(TRANSFORMS)
    other_example = candidate_edits("patience", edit_rng(3, "dev-8", 2), per_transform=2)
    assert other_example != first


def test_levenshtein_and_words():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3 and levenshtein("same", "same") == 0
    text = "The Israel-Egypt accord, signed in 1979."
    spans = word_spans(text)
    assert [text[s:e] for s, e in spans] == ["The", "Israel", "Egypt", "accord", "signed", "in"]
    words = [text[s:e] for s, e in spans]
    words[2] = "Egytp"
    assert replace_spans(text, spans, words) == "The Israel-Egytp accord, signed in 1979."


# ------------------------------------------------------------------------------------------ fake classifiers


class WordClassifier:
    """Two classes; the probability of class 1 rises with the words in ``weights`` (exact words only: a
    misspelt word loses its weight). Exit layer: L - the number of weighted words present (at least 1). Counts
    queries."""

    def __init__(self, weights: dict[str, float], layers: int = 4):
        self.weights, self.layers, self.calls = weights, layers, 0

    def __call__(self, inputs):
        self.calls += len(inputs)
        probs, exits, layer_probs = [], [], []
        for item in inputs:
            words = (item if isinstance(item, str) else item[1]).split()
            z = sum(self.weights.get(w.strip(".,"), 0.0) for w in words) - 0.5
            p1 = 1 / (1 + np.exp(-z))
            probs.append([1 - p1, p1])
            hits = sum(w.strip(".,") in self.weights for w in words)
            exits.append(max(self.layers - hits, 1))
            layer_probs.append([[1 - p1, p1]] * self.layers)
        probs = np.array(probs)
        return Outputs(probs.argmax(1), probs, np.array(exits), np.array(layer_probs).transpose(1, 0, 2))


def test_combined_score_formula():
    # F(first i words), i = 0..3 and F(words j+1..3), j = 0..3 (the empty value at both ends)
    scores = combined_scores([0.5, 0.9, 0.9, 0.8], [0.8, 0.2, 0.1, 0.5])
    np.testing.assert_allclose(scores, [((0.9 - 0.5) + (0.8 - 0.2)) / 2, (0.0 + 0.1) / 2, (-0.1 - 0.4) / 2])


def test_the_important_word_is_edited_first_and_the_label_flips():
    classify = WordClassifier({"great": 3.0, "good": 0.4})
    result = deepwordbug(classify, "a great film with a good plot", Misclassification(1, 2), key="x")
    assert result.status == "succeeded" and result.succeeded
    assert result.edits[0][2] == "great"  # ranked first by the combined score
    assert result.final.label == 0 and classify([result.perturbed]).labels[0] == 0  # re-queried: flipped
    assert result.queries == classify.calls - 1  # every query counted (the re-query is not the attack's)


def test_a_plain_tuple_classifier_works():
    inner = WordClassifier({"great": 3.0})

    def classify(texts):  # classify(texts) -> (labels, probs, exit_layers)
        out = inner(texts)
        return out.labels.tolist(), out.probs.tolist(), out.exit_layers.tolist()

    result = deepwordbug(classify, "a great film", Misclassification(1, 2), key="t")
    assert result.succeeded and result.queries == inner.calls


def test_already_misclassified_is_skipped_with_one_query():
    classify = WordClassifier({"great": 3.0})
    result = deepwordbug(classify, "a great film", Misclassification(0, 2))
    assert result.status == "skipped" and result.queries == 1 == classify.calls
    assert result.perturbed == "a great film"


def test_budgets_are_respected():
    text = "great good fine nice superb lovely"
    weights = dict.fromkeys(text.split(), 1.0)
    original_prob = WordClassifier(weights)([text]).probs[0, 1]
    budgets = [Budget(max_edit_distance=2), Budget(max_words=1), Budget(max_queries=14),
               Budget(max_queries=3)]
    for budget in budgets:
        classify = WordClassifier(weights)
        result = deepwordbug(classify, text, Misclassification(1, 2), key="k", budget=budget)
        assert result.queries == classify.calls <= budget.max_queries
        assert result.edit_distance <= budget.max_edit_distance
        assert result.edit_distance == sum(levenshtein(old, new) for _, _, old, new in result.edits)
        assert levenshtein(text, result.perturbed) <= result.edit_distance
        if budget.max_words is not None:
            assert result.perturbed_words <= budget.max_words
        if budget.max_queries == 3:  # cannot pay for the 2 (n - 1) = 10 ranking queries: nothing changed
            assert result.status == "failed" and result.perturbed == text and result.queries == 1
        else:
            assert result.status == "failed" and result.perturbed_words >= 1  # too little to flip 6 words
            assert result.final.probs[1] < original_prob  # but it made progress


def test_pairs_perturb_the_second_text_only():
    classify = WordClassifier({"great": 3.0})
    item = ("great premise stays", "a great hypothesis")
    result = deepwordbug(classify, item, Misclassification(1, 2), key="p")
    assert result.perturbed[0] == item[0] and result.perturbed[1] != item[1]


def test_slowdown_goal_pushes_the_exit_layer_and_never_goes_back():
    classify = WordClassifier({"great": 3.0, "good": 1.0, "fine": 1.0})
    result = deepwordbug(classify, "fine and good and great", Slowdown(4), key="s")
    assert result.status == "succeeded" and result.final.exit_layer > result.clean.exit_layer
    assert result.scores[1] >= result.scores[0]
    assert result.final.exit_layer == 4  # the goal: the last layer
    with pytest.raises(ValueError, match="every layer"):
        Slowdown(4).score(Outputs(np.array([0]), np.array([[0.6, 0.4]]), np.array([1])).row(0))


def test_uniformity():
    assert uniformity(np.array([[0.5, 0.5], [0.5, 0.5]])) == pytest.approx(1.0)
    assert uniformity(np.array([[1.0, 0.0, 0.0]])) == pytest.approx(0.0)
    assert uniformity(np.array([[0.75, 0.25], [1.0, 0.0]])) == pytest.approx(0.25)


# ------------------------------------------------------------------------------------------ tiny pabee model

TEXTS = [("the cat sat on the mat .", "a good movie is not sad"),
         ("the man is happy .", "the plot is slow and bad"),
         ("a dog sat .", "great fun film , not sad"),
         ("the film is sad .", "a bad slow plot"),
         ("the mat is on the cat .", "the happy man sat on a mat"),
         ("fun movie !", "the great dog is good")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = save_tiny_run(tmp_path_factory.mktemp("attack") / "run", labels=("no", "yes"), patience=2,
                           layers=4)
    return PabeeForSequenceClassification.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("rule", ["patience:0", "patience:1", "patience:2", "entropy:0.6", "confidence:0.55"])
def test_shared_cache_answers_equal_early_exit_inference(tiny, rule):
    model, tok = tiny
    shared = LayerLogits(model, tok, batch_size=4)
    direct = ModelClassifier(model, tok, rule, batch_size=4)(TEXTS)
    cached = ModelClassifier(model, tok, rule, shared=shared)(TEXTS)
    alone = [ModelClassifier(model, tok, rule, batch_size=1)([t]) for t in TEXTS]
    assert (direct.exit_layers == cached.exit_layers).all() and (direct.labels == cached.labels).all()
    np.testing.assert_allclose(direct.probs, cached.probs, atol=1e-5)
    assert [int(a.exit_layers[0]) for a in alone] == cached.exit_layers.tolist()
    ModelClassifier(model, tok, rule, shared=shared)(TEXTS[:2])
    assert shared.computed == len(TEXTS) and shared.reused == 2


def test_attack_on_a_tiny_model_is_deterministic_and_flips_labels(tiny):
    model, tok = tiny
    runs = []
    for _ in range(2):
        classify = ModelClassifier(model, tok, "patience:2")
        results = []
        for i, item in enumerate(TEXTS):
            gold = int(classify([item]).labels[0])  # attack what the model gets "right"
            results.append(deepwordbug(classify, item, Misclassification(gold, 2), key=str(i), seed=5,
                                       budget=Budget(max_edit_distance=8)))
        runs.append(results)
    first, second = runs
    assert [(r.perturbed, r.edits, r.queries, r.status) for r in first] == \
        [(r.perturbed, r.edits, r.queries, r.status) for r in second]
    won = [r for r in first if r.succeeded]
    assert won, "the attack should flip some labels of a random model"
    fresh = ModelClassifier(model, tok, "patience:2", batch_size=1)
    for r in won:
        assert int(fresh([r.perturbed]).labels[0]) != r.clean.label  # the label really flipped
    for r in first:
        assert r.edit_distance <= 8


def test_slowdown_on_a_tiny_model_never_lowers_the_objective(tiny):
    model, tok = tiny
    classify = ModelClassifier(model, tok, "patience:1", all_layers=True)
    goal = Slowdown(model.num_layers)
    fresh = ModelClassifier(model, tok, "patience:1", batch_size=1)
    for i, item in enumerate(TEXTS):
        result = deepwordbug(classify, item, goal, key=str(i), seed=1)
        assert goal.score(result.final) >= goal.score(result.clean)
        assert result.final.exit_layer >= result.clean.exit_layer
        assert int(fresh([result.perturbed]).exit_layers[0]) == result.final.exit_layer


def test_regression_models_are_refused(tmp_path):
    folder = save_tiny_run(tmp_path / "reg", labels=("score",), layers=2)
    model = PabeeForSequenceClassification.from_pretrained(folder)
    with pytest.raises(ValueError, match="classification model"):
        ModelClassifier(model, AutoTokenizer.from_pretrained(folder), "patience:1")
