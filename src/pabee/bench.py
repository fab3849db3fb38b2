"""A small wall-clock timing harness for inference benchmarks.

Everything here is plain Python around ``time.perf_counter``: no argument parsing, no printing. The benchmark
script (``benchmarks/speed.py``) builds on it.

* :func:`time_callable` times one callable: ``warmup`` untimed calls, then ``repeats`` timed calls.
* :func:`time_batches` times a full pass over a list of pre-tokenized batches (one timed run = the whole list).
* :func:`time_interleaved` times several configurations in turn, A B C A B C ..., so that slow drift of a shared
  machine (other processes, frequency changes) spreads over every configuration instead of biasing one of them.
* :func:`paired_ratios` turns two interleaved timings into per-repeat ratios (a speed-up with a spread).
* :func:`machine_info` records the facts a reader needs to judge the numbers (CPU, cores, versions, threads).

Torch's thread count is left as it is; :func:`machine_info` records ``torch.get_num_threads()``.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

Timer = Callable[[], float]


@dataclass(frozen=True)
class TimingResult:
    """Wall-clock times of ``len(runs)`` timed runs, in seconds.

    mean_s: arithmetic mean of ``runs``.
    std_s: sample standard deviation of ``runs`` (0.0 with a single run).
    min_s: fastest run.
    runs: every timed run, in the order they ran (warm-up runs are not included).
    """

    mean_s: float
    std_s: float
    min_s: float
    runs: tuple[float, ...]

    @classmethod
    def from_runs(cls, runs: Iterable[float]) -> TimingResult:
        """Summarise a non-empty sequence of run times."""
        values = tuple(float(r) for r in runs)
        if not values:
            raise ValueError("a TimingResult needs at least one run")
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(mean_s=statistics.fmean(values), std_s=std, min_s=min(values), runs=values)

    @property
    def median_s(self) -> float:
        return statistics.median(self.runs)

    @property
    def rel_std(self) -> float:
        """Standard deviation relative to the mean (0.0 when the mean is 0)."""
        return self.std_s / self.mean_s if self.mean_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``runs`` as a list, plus the median)."""
        values = asdict(self)
        values["runs"] = list(self.runs)
        values["median_s"] = self.median_s
        return values


def _check_counts(warmup: int, repeats: int) -> None:
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")


def time_callable(
    fn: Callable[[], object], warmup: int = 1, repeats: int = 5, timer: Timer = time.perf_counter
) -> TimingResult:
    """Call ``fn()`` ``warmup`` times untimed, then ``repeats`` times, each timed on its own with ``timer``.

    Returns the :class:`TimingResult` of the timed calls. ``timer`` is injectable for tests.
    """
    _check_counts(warmup, repeats)
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        start = timer()
        fn()
        runs.append(timer() - start)
    return TimingResult.from_runs(runs)


def pass_over(fn: Callable[[Any], object], batches: Sequence[Any]) -> Callable[[], None]:
    """A zero-argument callable that runs ``fn(batch)`` for every batch, in order (one full pass)."""
    if len(batches) == 0:
        raise ValueError("no batches to run")

    def run() -> None:
        for batch in batches:
            fn(batch)

    return run


def time_batches(
    fn: Callable[[Any], object],
    batches: Sequence[Any],
    warmup: int = 1,
    repeats: int = 5,
    timer: Timer = time.perf_counter,
) -> TimingResult:
    """Time full passes over pre-tokenized ``batches``: each run calls ``fn(batch)`` for every batch.

    ``warmup`` untimed passes come first. The result's times are per pass (divide by the number of examples for a
    per-example figure).
    """
    return time_callable(pass_over(fn, batches), warmup=warmup, repeats=repeats, timer=timer)


def time_interleaved(
    fns: Mapping[str, Callable[[], object]],
    warmup: int = 1,
    repeats: int = 5,
    timer: Timer = time.perf_counter,
) -> dict[str, TimingResult]:
    """Time several configurations interleaved: warm-up rounds, then ``repeats`` rounds of A B C ... in order.

    Each round calls every callable once (in the mapping's order); each call is timed on its own. Warm-up rounds
    are interleaved the same way and not timed. Returns one :class:`TimingResult` per name; run ``r`` of every
    result comes from the same round, so :func:`paired_ratios` can compare them round by round.
    """
    _check_counts(warmup, repeats)
    if not fns:
        raise ValueError("no configurations to time")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = timer()
            fn()
            runs[name].append(timer() - start)
    return {name: TimingResult.from_runs(values) for name, values in runs.items()}


def paired_ratios(numerator: TimingResult, denominator: TimingResult) -> list[float]:
    """Round-by-round ratios ``numerator.runs[r] / denominator.runs[r]`` of two interleaved timings.

    With ``numerator`` the reference and ``denominator`` a faster configuration this is a speed-up per round; its
    mean and standard deviation give the speed-up with a spread that cancels drift shared by the round.
    """
    if len(numerator.runs) != len(denominator.runs):
        raise ValueError(f"cannot pair {len(numerator.runs)} runs with {len(denominator.runs)} runs")
    return [a / b for a, b in zip(numerator.runs, denominator.runs, strict=True)]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation); the deviation is 0.0 for a single value."""
    if not values:
        raise ValueError("no values")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` or "unknown" elsewhere)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """CPU model, logical cores (total and usable by this process), torch threads, library versions, OS."""
    import torch
    import transformers

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cuda_available": torch.cuda.is_available(),
        "python_executable": sys.executable,
    }
