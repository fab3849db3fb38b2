"""Small, device-aware wall-clock timing shared by the evaluation sweep and the benchmarks.

* :func:`timer_for` gives the clock to time work on a device: ``time.perf_counter`` itself on the CPU, and on a
  CUDA device a clock that first waits for the kernels already queued (``torch.cuda.synchronize``), so that a
  reading covers the work launched before it and not only its launch.
* :func:`interleaved_blocks` is the order in which several configurations take turns on the same inputs.
* :func:`time_interleaved_batches` times configurations interleaved that way, round after round, optionally
  discarding rounds disturbed by other processes (the probe and the wait live in ``benchmarks/machine.py``).
* :class:`TimingResult`, :func:`paired_ratios` and :func:`mean_std` summarise the runs.

No argument parsing and no printing here; machine introspection belongs to the benchmarks.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

Timer = Callable[[], float]


def cuda_in_use(device: torch.device | str | None = None) -> bool:
    """Whether work on ``device`` runs asynchronously on a CUDA GPU; with no device, whether this process has
    started CUDA at all (cheap: no CUDA call on a machine or build without it)."""
    if device is not None:
        return torch.device(device).type == "cuda"
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def timer_for(device: torch.device | str | None = None) -> Timer:
    """The clock to time work on ``device`` with (see :func:`cuda_in_use`; None: decided for the whole process).

    On the CPU this is ``time.perf_counter`` itself, with no overhead. When CUDA is in use every reading first
    calls ``torch.cuda.synchronize``: GPU kernels run asynchronously, and a clock read right after a call would
    measure how long launching the kernels took rather than how long they ran.
    """
    if not cuda_in_use(device):
        return time.perf_counter
    target = None if device is None else torch.device(device)

    def synchronized_clock() -> float:
        torch.cuda.synchronize(target)
        return time.perf_counter()

    return synchronized_clock


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


@dataclass(frozen=True)
class RoundRecord:
    """One round of :func:`time_interleaved_batches`.

    wall_s: wall-clock length of the round.
    contention: share of the round during which some runnable task on the machine waited for a CPU (as the
        ``stall_probe`` measures it), or None when not measured. Near 0 on a quiet machine.
    kept: False when the round was discarded for contention and run again.
    """

    wall_s: float
    contention: float | None
    kept: bool


@dataclass(frozen=True)
class InterleavedTiming:
    """What :func:`time_interleaved_batches` returns: one :class:`TimingResult` per configuration (kept rounds only,
    ``runs[r]`` of every configuration from the same round) and the record of every round, kept or not."""

    results: dict[str, TimingResult]
    rounds: tuple[RoundRecord, ...]

    @property
    def discarded(self) -> int:
        return sum(not r.kept for r in self.rounds)

    def kept_contention(self) -> list[float]:
        """Contention of the kept rounds (empty when not measured)."""
        return [r.contention for r in self.rounds if r.kept and r.contention is not None]


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def interleaved_blocks(
    names: Sequence[Any], items: Sequence[Any], block: int = 1, rotate: bool = True
) -> Iterator[tuple[Any, Sequence[Any]]]:
    """The order of one interleaved round, as (name, block of consecutive items) pairs.

    ``items`` are cut into blocks of ``block``; for block j every name takes its turn on the whole block, the order
    shifted by j (A B C, B C A, C A B, ...) when ``rotate``, so none always goes first.
    """
    _check_count("block", block, 1)
    names = list(names)
    for j, start in enumerate(range(0, len(items), block)):
        group = items[start : start + block]
        shift = j % len(names) if rotate else 0
        for name in names[shift:] + names[:shift]:
            yield name, group


def time_interleaved_batches(
    fns: Mapping[str, Callable[[Any], object]],
    batches: Sequence[Any],
    warmup: int = 1,
    repeats: int = 5,
    rotate: bool = True,
    timer: Timer | None = None,
    stall_probe: Callable[[], float | None] | None = None,
    max_contention: float | None = None,
    max_retries: int = 0,
    before_round: Callable[[], object] | None = None,
    block: int = 1,
) -> InterleavedTiming:
    """Time configurations interleaved block by block; one run = the sum of a configuration's times over all batches.

    The batches are cut into blocks of ``block`` consecutive batches. For block ``j`` of every round, every
    configuration in turn runs on each batch of the block (``fns[name](batch)``, every call timed on its own); with
    ``rotate`` the order of the configurations shifts by one from block to block (A B C, B C A, C A B, ...) so none
    always runs first. ``block=1`` interleaves batch by batch; a larger block lets a configuration run consecutive
    inputs back to back, as it would in use (what one call leaves in the CPU caches then serves the next call of
    the same configuration, not of another one), while configurations stay a fraction of a second apart.
    ``warmup`` untimed rounds come first. ``timer`` defaults to :func:`timer_for` (synchronising when CUDA is in
    use).

    ``stall_probe`` returns a cumulative count of seconds during which some task waited for a CPU; a round whose
    stalled share of its wall time exceeds ``max_contention`` is discarded and run again, at most ``max_retries``
    times in all (after that, rounds are kept whatever their contention, and their contention is recorded).
    ``before_round`` (e.g. a wait for a quiet machine) runs before every timed round.
    """
    _check_count("warmup", warmup, 0)
    _check_count("repeats", repeats, 1)
    _check_count("max_retries", max_retries, 0)
    _check_count("block", block, 1)
    if not fns:
        raise ValueError("no configurations to time")
    if len(batches) == 0:
        raise ValueError("no batches to run")
    clock = timer_for() if timer is None else timer
    names = list(fns)

    def one_round() -> dict[str, float]:
        totals = dict.fromkeys(names, 0.0)
        for name, group in interleaved_blocks(names, batches, block, rotate):
            fn = fns[name]
            for batch in group:
                start = clock()
                fn(batch)
                totals[name] += clock() - start
        return totals

    for _ in range(warmup):
        one_round()
    runs: dict[str, list[float]] = {name: [] for name in names}
    rounds: list[RoundRecord] = []
    retries_left = max_retries
    while len(runs[names[0]]) < repeats:
        if before_round is not None:
            before_round()
        stall_start = stall_probe() if stall_probe is not None else None
        start = clock()
        totals = one_round()
        wall = clock() - start
        stall_end = stall_probe() if stall_probe is not None else None
        contention = None
        if stall_start is not None and stall_end is not None and wall > 0:
            contention = max(0.0, (stall_end - stall_start) / wall)
        disturbed = max_contention is not None and contention is not None and contention > max_contention
        keep = not (disturbed and retries_left > 0)
        if not keep:
            retries_left -= 1
        rounds.append(RoundRecord(wall_s=wall, contention=contention, kept=keep))
        if keep:
            for name, total in totals.items():
                runs[name].append(total)
    return InterleavedTiming(
        results={name: TimingResult.from_runs(values) for name, values in runs.items()}, rounds=tuple(rounds)
    )


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
