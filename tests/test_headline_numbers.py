"""The headline numbers of an evaluation (layer speed-up, layers saved, wall-clock speed-up, throughput) pinned to
values computed by hand, so that an inverted or swapped formula fails.

The model is a stand-in whose exit layers are set per example and whose calls advance a fake clock by a cost
proportional to the layers run, so every figure is exact."""

import time
from types import SimpleNamespace

import pytest
import torch

from pabee.evaluate import evaluate_exit_rules, format_table
from pabee.exit_rules import ExitRule
from pabee.features import Features
from pabee.tasks import get_task

NUM_LAYERS = 6
RULE = ExitRule("patience", 2)
# example k is the token 10 + k; its exit layer under each rule
EXITS = {"patience:0": [6, 6, 6, 6], "patience:2": [2, 4, 6, 6]}
CALL_MS, LAYER_MS = 1.0, 1.0  # fake cost of one call: 1 ms + 1 ms per layer run by each row


class FakeClock:
    def __init__(self):
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


class StandInModel:
    """What the evaluation reads of a model: num_layers, num_labels, parameters(), train()/eval(), and a call
    returning ``logits`` and ``exit_layers``. Every prediction is class 1."""

    num_layers, num_labels = NUM_LAYERS, 2

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.training = False
        self.calls = 0

    def parameters(self):
        return iter([torch.zeros(1)])

    def eval(self):
        return self.train(False)

    def train(self, mode=True):
        self.training = mode
        return self

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, exit_rule=None, **kwargs):
        rows = [int(ids[0]) - 10 for ids in input_ids]
        exits = [EXITS[str(exit_rule)][k] for k in rows]
        self.calls += 1
        self.clock.now_s += (CALL_MS + LAYER_MS * sum(exits)) / 1000.0
        logits = torch.tensor([[0.0, 1.0]] * len(rows))
        return SimpleNamespace(logits=logits, exit_layers=torch.tensor(exits))


@pytest.fixture
def records(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    model = StandInModel(clock)
    features = Features([[10 + k, 3, 3] for k in range(4)], None, [1, 1, 0, 1])  # one batch of 4 equal lengths
    out = evaluate_exit_rules(model, features, get_task("rte"), [RULE], 4, "final", "dev", warmup=False,
                              timing_rounds=2)
    assert model.calls == 4  # 2 rules x 2 rounds x 1 batch
    return out


def test_layer_speedup_and_layers_saved_are_pinned(records):
    full, rule = records
    # exits 2, 4, 6, 6 of 6 layers: mean 4.5, layer speed-up 6 / 4.5 = 4/3, layers saved 1 - 4.5/6 = 0.25
    assert rule.avg_exit_layer == 4.5
    assert rule.layer_speedup == pytest.approx(1.3333333333)
    assert rule.layers_saved == pytest.approx(0.25)
    assert rule.exit_layer_histogram == {"1": 0, "2": 1, "3": 0, "4": 1, "5": 0, "6": 2}
    assert (full.avg_exit_layer, full.layer_speedup, full.layers_saved) == (6.0, 1.0, 0.0)
    assert rule.metrics["acc"] == pytest.approx(0.75)  # 3 of the 4 labels are 1


def test_wall_speedup_and_throughput_are_pinned(records):
    full, rule = records
    # one call per round: full depth 1 + 6*4 = 25 ms, patience 2 1 + (2+4+6+6) = 19 ms
    assert full.eval_seconds == pytest.approx(0.025) and rule.eval_seconds == pytest.approx(0.019)
    assert rule.extra["eval_seconds_rounds"] == pytest.approx([0.019, 0.019])
    assert rule.wall_speedup == pytest.approx(25 / 19)  # 1.3158: full-depth time / rule time, not the inverse
    assert full.wall_speedup == pytest.approx(1.0)
    assert rule.examples_per_second == pytest.approx(4 / 0.019)  # 210.5 examples per second
    assert full.examples_per_second == pytest.approx(160.0)


def test_the_table_shows_the_pinned_numbers(records):
    lines = format_table(records).splitlines()
    header, full, rule = lines[0].split(), lines[2], lines[3]
    assert header[-9:] == ["avg", "exit", "layer", "x", "saved", "wall", "x", "ex/s", "bs"]
    assert rule.split()[-6:] == ["4.50/6", "1.33", "25.0%", "1.32", "210.5", "4"]
    assert full.split()[-6:] == ["6.00/6", "1.00", "0.0%", "1.00", "160.0", "4"]



def test_the_sweep_reads_the_device_aware_clock(monkeypatch):
    """evaluate_exit_rules times with pabee.timing.timer_for(device) (which synchronises CUDA before each
    reading), not with a bare perf_counter: with the clock handed out there, the pinned figures still come out."""
    import pabee.evaluate

    clock = FakeClock()
    devices = []

    def fake_timer_for(device=None):
        devices.append(device)
        return clock

    monkeypatch.setattr(pabee.evaluate, "timer_for", fake_timer_for)
    model = StandInModel(clock)
    features = Features([[10 + k, 3, 3] for k in range(4)], None, [1, 1, 0, 1])
    out = evaluate_exit_rules(model, features, get_task("rte"), [RULE], 4, "final", "dev", warmup=False,
                              timing_rounds=2)
    assert devices == [torch.device("cpu")]
    by_rule = {r.exit_rule + str(r.exit_value): r for r in out}
    assert by_rule["patience2"].wall_speedup == pytest.approx(25 / 19)
