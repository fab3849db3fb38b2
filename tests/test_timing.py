"""pabee.timing: the device-aware clock (CUDA synchronisation checked with mocks, so it runs on the CPU) and the
interleaved timing, with a fake clock (no timing assertions)."""

from __future__ import annotations

import json
import math
import time
from types import SimpleNamespace

import pytest
import torch

from pabee import timing
from pabee.timing import (
    TimingResult,
    interleaved_blocks,
    mean_std,
    paired_ratios,
    time_interleaved_batches,
    timer_for,
)


class FakeClock:
    """A timer whose time only moves when a fake workload says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# ------------------------------------------------------------------------------------------ the clock


def test_timer_on_the_cpu_is_perf_counter_and_never_synchronizes(monkeypatch):
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    assert timer_for("cpu") is time.perf_counter and timer_for(torch.device("cpu")) is time.perf_counter
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert timer_for() is time.perf_counter
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)  # CUDA present but this process never used it
    assert timer_for() is time.perf_counter
    assert synced == []


def fake_cuda(monkeypatch) -> list:
    """CUDA "in use" on a CPU machine: synchronize and the clock append to the returned event list."""
    events: list = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append(("sync", device)))
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=lambda: events.append("clock") or len(events)))
    return events


def test_timer_on_cuda_synchronizes_before_every_reading(monkeypatch):
    events = fake_cuda(monkeypatch)
    clock = timer_for("cuda:1")
    assert clock() == 2 and clock() == 4
    assert events == [("sync", torch.device("cuda:1")), "clock"] * 2
    events.clear()
    timer_for()()  # no device given: CUDA initialised in this process, synchronise the current device
    assert events == [("sync", None), "clock"]


def test_interleaved_timing_waits_for_the_gpu_before_reading_the_clock(monkeypatch):
    events = fake_cuda(monkeypatch)
    time_interleaved_batches({"A": lambda b: events.append(("run", b))}, [1, 2], warmup=0, repeats=1)
    runs = [i for i, e in enumerate(events) if isinstance(e, tuple) and e[0] == "run"]
    assert len(runs) == 2 and events.count("clock") == 6  # the round's start and end, each call's start and end
    for i in runs:  # after each call: synchronise, then read the clock
        assert events[i + 1] == ("sync", None) and events[i + 2] == "clock"
    assert all(events[i - 1][0] == "sync" for i, e in enumerate(events) if e == "clock")


# ------------------------------------------------------------------------------------------ TimingResult


def test_timing_result_from_runs():
    result = TimingResult.from_runs([3.0, 1.0, 2.0])
    assert result.runs == (3.0, 1.0, 2.0)
    assert result.mean_s == pytest.approx(2.0)
    assert result.std_s == pytest.approx(1.0)  # sample standard deviation
    assert result.min_s == 1.0
    assert result.median_s == 2.0
    assert result.rel_std == pytest.approx(0.5)
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert set(as_dict) == {"mean_s", "std_s", "min_s", "runs", "median_s"}
    assert as_dict["runs"] == [3.0, 1.0, 2.0]


def test_timing_result_single_run_and_empty():
    assert TimingResult.from_runs([0.5]).std_s == 0.0
    with pytest.raises(ValueError):
        TimingResult.from_runs([])


# ------------------------------------------------------------------------------------------ interleaving


def test_time_interleaved_batches_order_warmup_and_paired_ratios():
    clock = FakeClock()
    order = []

    def config(name, seconds):
        def run(batch):
            order.append(name)
            clock.advance(seconds)

        return run

    fns = {"A": config("A", 1.0), "B": config("B", 2.0), "C": config("C", 4.0)}
    timed = time_interleaved_batches(fns, [0], warmup=1, repeats=3, timer=clock)
    assert order == ["A", "B", "C"] * 4  # warm-up round, then A B C A B C A B C
    assert list(timed.results) == ["A", "B", "C"]
    assert [r.runs for r in timed.results.values()] == [(1.0,) * 3, (2.0,) * 3, (4.0,) * 3]
    assert paired_ratios(timed.results["C"], timed.results["A"]) == [4.0, 4.0, 4.0]


@pytest.mark.parametrize("warmup, repeats", [(-1, 3), (0, 0), (1, -2), (1.5, 3), (1, True)])
def test_time_interleaved_batches_rejects_bad_counts(warmup, repeats):
    with pytest.raises(ValueError):
        time_interleaved_batches({"A": lambda b: None}, [0], warmup=warmup, repeats=repeats)


def test_time_interleaved_batches_rotates_and_sums_per_pass():
    clock = FakeClock()
    order = []
    cost = {"A": 1.0, "B": 10.0, "C": 100.0}

    def config(name):
        def run(batch):
            order.append((name, batch))
            clock.advance(cost[name] * batch)

        return run

    timed = time_interleaved_batches(
        {name: config(name) for name in cost}, [1, 2], warmup=1, repeats=2, timer=clock
    )
    one_round = [("A", 1), ("B", 1), ("C", 1), ("B", 2), ("C", 2), ("A", 2)]  # order rotates batch by batch
    assert order == one_round * 3  # warm-up round + two timed rounds
    assert [r.runs for r in timed.results.values()] == [(3.0, 3.0), (30.0, 30.0), (300.0, 300.0)]
    assert len(timed.rounds) == 2 and timed.discarded == 0
    assert all(r.kept and r.contention is None for r in timed.rounds)


def test_time_interleaved_batches_runs_blocks_of_consecutive_batches():
    order = []

    def config(name):
        return lambda batch: order.append((name, batch))

    timed = time_interleaved_batches({n: config(n) for n in "AB"}, [0, 1, 2, 3, 4], warmup=0, repeats=1, block=2)
    # blocks [0, 1], [2, 3], [4]: each configuration runs a whole block, the order rotating from block to block
    assert order == [("A", 0), ("A", 1), ("B", 0), ("B", 1), ("B", 2), ("B", 3), ("A", 2), ("A", 3), ("A", 4), ("B", 4)]
    assert list(timed.results) == ["A", "B"]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="block"):
            time_interleaved_batches({"A": config("A")}, [0], repeats=1, block=bad)


def test_interleaved_blocks_without_rotation_keeps_the_order():
    order = [(name, list(group)) for name, group in interleaved_blocks("AB", [0, 1, 2], block=2, rotate=False)]
    assert order == [("A", [0, 1]), ("B", [0, 1]), ("A", [2]), ("B", [2])]


def test_time_interleaved_batches_discards_contended_rounds():
    clock = FakeClock()
    stalls = iter([0.0, 5.0, 5.0, 5.0, 5.0, 5.1, 5.1, 15.1, 15.1, 25.1])  # (start, end) of each round

    def work(batch):
        clock.advance(1.0)

    timed = time_interleaved_batches(
        {"A": work},
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        warmup=0,
        repeats=3,
        timer=clock,
        stall_probe=lambda: next(stalls),
        max_contention=0.05,
        max_retries=2,
    )
    # round 1: 5 s stalled in 10 s -> discarded; round 2: quiet; round 3: 0.1/10 -> kept (1 %);
    # round 4: 10/10 -> discarded (last retry); round 5: disturbed but no retry left -> kept
    assert [r.kept for r in timed.rounds] == [False, True, True, False, True]
    assert [r.contention for r in timed.rounds] == pytest.approx([0.5, 0.0, 0.01, 1.0, 1.0])
    assert timed.discarded == 2
    assert timed.results["A"].runs == (10.0, 10.0, 10.0)
    assert timed.kept_contention() == pytest.approx([0.0, 0.01, 1.0])


def test_time_interleaved_batches_before_round_and_bad_arguments():
    calls = []
    time_interleaved_batches(
        {"A": lambda b: None}, [1], warmup=1, repeats=3, before_round=lambda: calls.append(1)
    )
    assert len(calls) == 3  # before every timed round, not before warm-up
    with pytest.raises(ValueError):
        time_interleaved_batches({"A": lambda b: None}, [], repeats=1)
    with pytest.raises(ValueError):
        time_interleaved_batches({}, [1], repeats=1)
    with pytest.raises(ValueError):
        time_interleaved_batches({"A": lambda b: None}, [1], repeats=1, max_retries=-1)


def test_paired_ratios_and_mean_std():
    a = TimingResult.from_runs([2.0, 4.0])
    b = TimingResult.from_runs([1.0, 1.0])
    assert paired_ratios(a, b) == [2.0, 4.0]
    assert mean_std([2.0, 4.0]) == (3.0, pytest.approx(math.sqrt(2)))
    assert mean_std([5.0]) == (5.0, 0.0)
    with pytest.raises(ValueError):
        paired_ratios(a, TimingResult.from_runs([1.0]))
