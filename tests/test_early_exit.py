"""The early-exit loop over a backend, and every rule object through it, without a model: the recomputation from
all layers' logits equals a plain per-row reading of each rule, batched equals one row at a time, and rows that
leave stop costing compute."""

import subprocess
import sys

import numpy as np
import pytest

from pabee.early_exit import ReplayBackend, replay_exit_layers, run_early_exit
from pabee.exit_rules import (
    ConfidenceRule,
    EntropyRule,
    ExitRule,
    FixedLayerRule,
    HybridRule,
    PatienceRule,
    StepRule,
    max_softmax_probability,
    softmax_entropy,
)


class ScriptedRule(StepRule):
    """A new rule plugged in from outside: row b may leave after layer i when ``reached[i][b]`` (rows are the
    batch's original rows; the state tracks which of them are still running)."""

    kind = "scripted"

    def __init__(self, reached):
        self.reached = np.asarray(reached, dtype=bool)

    def start(self, batch):
        return np.arange(batch)

    def step(self, rows, logits, layer):
        return rows, self.reached[layer, rows].copy()

    def keep(self, rows, keep):
        return rows[keep]


class CountingBackend(ReplayBackend):
    """A replay backend that records how many rows each layer and classifier ran on."""

    def __init__(self, all_logits):
        super().__init__(all_logits)
        self.layer_rows, self.classified = [], []

    def run_layer(self, i, rows):
        self.layer_rows.append(len(rows))
        return rows

    def classify(self, i, rows):
        self.classified.append((i, len(rows)))
        return super().classify(i, rows)


def random_logits(layers=6, batch=40, classes=3, seed=0, decimals=1):
    """(L, B, C) float32 logits; rounding makes ties (equal maxima) common."""
    gen = np.random.default_rng(seed)
    return gen.normal(size=(layers, batch, classes)).round(decimals).astype(np.float32)


# ------------------------------------------------------------------------------ plain per-row readings of the rules


def first_max(row) -> int:
    row = list(row)
    return row.index(max(row))


def reference_patience(all_logits, patience, threshold):
    L, B = all_logits.shape[:2]
    exits = []
    for b in range(B):
        counter, exit_layer = 0, L
        for i in range(1, L - 1):
            prev, cur = all_logits[i - 1, b], all_logits[i, b]
            if all_logits.shape[-1] == 1:
                agree = abs(np.float32(prev[0]) - np.float32(cur[0])) < np.float32(threshold)
            else:
                agree = first_max(prev) == first_max(cur)
            counter = counter + 1 if agree else 0
            if patience and counter >= patience:
                exit_layer = i + 1
                break
        exits.append(exit_layer)
    return exits


def reference_hybrid(all_logits, patience, confidence):
    """Patience counting only the layers that agree with the previous one AND are confident enough."""
    L, B = all_logits.shape[:2]
    exits = []
    for b in range(B):
        counter, exit_layer = 0, L
        for i in range(1, L - 1):
            prev, cur = all_logits[i - 1, b], all_logits[i, b]
            counter = counter + 1 if first_max(prev) == first_max(cur) and _confidence(cur) >= confidence else 0
            if counter >= patience:
                exit_layer = i + 1
                break
        exits.append(exit_layer)
    return exits


def reference_threshold(all_logits, passes):
    L, B = all_logits.shape[:2]
    return [next((i + 1 for i in range(L - 1) if passes(all_logits[i, b])), L) for b in range(B)]


def midpoints(values, count=4):
    """Thresholds halfway between neighbouring observed values, so that none sits on a threshold."""
    ordered = np.unique(values.astype(np.float64))
    picks = np.linspace(1, len(ordered) - 2, count).astype(int)
    return [float((ordered[k] + ordered[k + 1]) / 2) for k in picks]


def rules_and_references(all_logits):
    """Every kind of rule, at several settings, with the exits a plain per-row reading gives."""
    out = []
    for patience in range(0, all_logits.shape[0] + 1):
        out.append((PatienceRule(patience), reference_patience(all_logits, patience, 0.1)))
    for t in midpoints(softmax_entropy(all_logits[:-1].reshape(-1, all_logits.shape[-1]))):
        out.append((EntropyRule(t), reference_threshold(all_logits, lambda row, t=t: _entropy(row) < t)))
    for t in midpoints(max_softmax_probability(all_logits[:-1].reshape(-1, all_logits.shape[-1]))):
        out.append((ConfidenceRule(t), reference_threshold(all_logits, lambda row, t=t: _confidence(row) >= t)))
    for k in range(1, all_logits.shape[0] + 2):
        out.append((FixedLayerRule(k), [min(k, all_logits.shape[0])] * all_logits.shape[1]))
    for c in midpoints(max_softmax_probability(all_logits[:-1].reshape(-1, all_logits.shape[-1])), count=3):
        for patience in (1, 2, 3):
            out.append((HybridRule(patience, c), reference_hybrid(all_logits, patience, c)))
    return out


def _entropy(row) -> float:
    p = np.exp(row.astype(np.float64) - row.max())
    p /= p.sum()
    return float(-(p[p > 0] * np.log(p[p > 0])).sum())


def _confidence(row) -> float:
    p = np.exp(row.astype(np.float64) - row.max())
    return float(p.max() / p.sum())


# ------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recomputed_exits_equal_a_plain_reading_of_every_rule(seed):
    all_logits = random_logits(seed=seed)
    seen = set()
    for rule, expected in rules_and_references(all_logits):
        assert rule.exit_layers(all_logits).tolist() == expected, (rule.kind, vars(rule))
        seen.update(expected)
    assert seen == set(range(1, 7)), "the rules must exercise every exit layer"


def test_ties_follow_the_first_maximum():
    # rows: a tie (0, 1 -> class 0) then class 0, or a tie then class 1: patience 1 exits at 2 only for row 0
    all_logits = np.array([[[1.0, 1.0], [1.0, 1.0]], [[2.0, 0.0], [0.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]],
                          dtype=np.float32)
    assert PatienceRule(1).exit_layers(all_logits).tolist() == [2, 3]


@pytest.mark.parametrize("threshold", [0.0, 0.05, 0.3, 1.0, 10.0])
def test_regression_patience_recomputed_equals_a_plain_reading(threshold):
    all_logits = random_logits(layers=8, batch=30, classes=1, seed=5, decimals=2)
    for patience in range(0, 5):
        expected = reference_patience(all_logits, patience, threshold)
        assert PatienceRule(patience, threshold).exit_layers(all_logits).tolist() == expected


@pytest.mark.parametrize("seed", [0, 3])
def test_batched_equals_one_row_at_a_time_through_the_loop(seed):
    all_logits = random_logits(seed=seed, batch=25)
    for rule, _ in rules_and_references(all_logits):
        logits, exits = run_early_exit(ReplayBackend(all_logits), rule, np.arange(25), 25)
        for b in range(25):
            alone = ReplayBackend(all_logits[:, b : b + 1])
            row_logits, row_exit = run_early_exit(alone, rule, np.arange(1), 1)
            assert row_exit.tolist() == [exits[b]]
            assert np.array_equal(row_logits[0], logits[b])
        # each row's logits are those of its exit layer
        assert np.array_equal(logits, all_logits[exits - 1, np.arange(25)])
        assert exits.dtype == np.int64 and logits.shape == (25, 3)


def test_rows_that_leave_stop_costing_compute():
    all_logits = random_logits(seed=4, batch=16)
    for rule in (PatienceRule(1), PatienceRule(2), EntropyRule(1.0), ConfidenceRule(0.5)):
        backend = CountingBackend(all_logits)
        _, exits = run_early_exit(backend, rule, np.arange(16), 16)
        # layer i runs on the rows that have not left before it: sum over layers = sum of exit layers
        assert backend.layer_rows == [int((exits > i).sum()) for i in range(len(backend.layer_rows))]
        assert sum(backend.layer_rows) == int(exits.sum())
        assert [n for _, n in backend.classified] == backend.layer_rows


def test_static_depth_runs_k_layers_and_classifies_once():
    all_logits = random_logits(seed=6, batch=5)
    for rule, depth in [(FixedLayerRule(2), 2), (FixedLayerRule(10), 6), (PatienceRule(0), 6)]:
        backend = CountingBackend(all_logits)
        logits, exits = run_early_exit(backend, rule, np.arange(5), 5)
        assert backend.layer_rows == [5] * depth and backend.classified == [(depth - 1, 5)]
        assert exits.tolist() == [depth] * 5 and np.array_equal(logits, all_logits[depth - 1])


@pytest.mark.parametrize("rule", [FixedLayerRule(1), FixedLayerRule(3), FixedLayerRule(6), FixedLayerRule(9),
                                  PatienceRule(0)])
def test_static_rules_step_as_their_shortcut_decides(rule):
    """Without the static shortcut, the rule's own per-layer step lets every row out at the same depth."""
    stepped = type(rule).__new__(type(rule))
    stepped.__dict__.update(vars(rule))
    stepped.static_depth = lambda num_layers: None
    all_logits = random_logits(seed=8, batch=7)
    shortcut = run_early_exit(ReplayBackend(all_logits), rule, np.arange(7), 7)
    by_step = run_early_exit(ReplayBackend(all_logits), stepped, np.arange(7), 7)
    assert by_step[1].tolist() == shortcut[1].tolist() == [rule.static_depth(6)] * 7
    assert np.array_equal(by_step[0], shortcut[0])


def test_a_new_rule_plugs_into_the_loop():
    # first layer that lets the row out, else the last: was first_exit_layers
    reached = np.array([[False, True, False], [True, True, False], [False, False, False]])
    assert ScriptedRule(reached).exit_layers(np.zeros((3, 3, 2), dtype=np.float32)).tolist() == [2, 1, 3]
    assert reached[2].tolist() == [False, False, False], "the input is not modified"
    assert replay_exit_layers(ScriptedRule(reached), np.zeros((3, 3, 2))).tolist() == [2, 1, 3]


def test_exit_layers_take_torch_tensors_and_refuse_regression_for_probability_rules():
    torch = pytest.importorskip("torch")
    all_logits = random_logits(seed=7)
    rule = ExitRule("confidence", 0.6).build()
    assert rule.exit_layers(torch.from_numpy(all_logits)).tolist() == rule.exit_layers(all_logits).tolist()
    with pytest.raises(ValueError, match="entropy exit rule .*classification"):
        EntropyRule(0.3).exit_layers(np.zeros((4, 2, 1), dtype=np.float32))


def test_rules_and_loop_import_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "import numpy as np\n"
        "import pabee.exit_rules, pabee.early_exit\n"
        "from pabee.exit_rules import ExitRule, rule_exit_layers\n"
        "logits = np.array([[[2.0, 0.0]], [[3.0, 0.0]], [[0.0, 1.0]]], dtype=np.float32)\n"
        "print(rule_exit_layers(logits, 'patience:1').tolist(), ExitRule.parse('entropy:0.3').build().kind)\n"
        "assert not any(name.startswith(('torch', 'transformers')) and sys.modules[name] is not None\n"
        "               for name in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "[2] entropy"
