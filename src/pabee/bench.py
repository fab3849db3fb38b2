"""A small wall-clock timing harness for inference benchmarks.

Everything here is plain Python around ``time.perf_counter``: no argument parsing, no printing. The benchmark
script (``benchmarks/speed.py``) builds on it.

* :func:`time_callable` times one callable: ``warmup`` untimed calls, then ``repeats`` timed calls.
* :func:`time_batches` times a full pass over a list of pre-tokenized batches (one timed run = the whole list).
* :func:`time_interleaved` times several configurations in turn, A B C A B C ..., so that slow drift of a shared
  machine (other processes, frequency changes) spreads over every configuration instead of biasing one of them.
* :func:`time_interleaved_batches` interleaves at a fine grain: for every block of a few consecutive batches, every
  configuration runs on it (in an order rotated from block to block); one run of a configuration is the sum over a
  full pass. Configurations are then compared on the same inputs a fraction of a second apart, and rounds disturbed
  by other processes (measured with Linux's CPU pressure stall information, :func:`cpu_stall_seconds`) can be
  discarded and re-run.
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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
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


@dataclass(frozen=True)
class RoundRecord:
    """One round of :func:`time_interleaved_batches`.

    wall_s: wall-clock length of the round.
    contention: share of the round during which some runnable task on the machine waited for a CPU (Linux PSI
        ``/proc/pressure/cpu`` "some"), or None when not measurable. Near 0 on a quiet machine.
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
        """Contention of the kept rounds (empty when not measurable)."""
        return [r.contention for r in self.rounds if r.kept and r.contention is not None]


def _check_block(block: int) -> None:
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be an integer >= 1, got {block!r}")


def interleaved_blocks(
    names: Sequence[Any], items: Sequence[Any], block: int = 1, rotate: bool = True
) -> Iterator[tuple[Any, Sequence[Any]]]:
    """The order of one interleaved round, as (name, block of consecutive items) pairs.

    ``items`` are cut into blocks of ``block``; for block j every name takes its turn on the whole block, the order
    shifted by j (A B C, B C A, C A B, ...) when ``rotate``, so none always goes first.
    """
    _check_block(block)
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
    timer: Timer = time.perf_counter,
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
    ``warmup`` untimed rounds come first.

    ``stall_probe`` returns a cumulative count of seconds during which some task waited for a CPU (e.g.
    :func:`cpu_stall_seconds`); a round whose stalled share of its wall time exceeds ``max_contention`` is discarded
    and run again, at most ``max_retries`` times in all (after that, rounds are kept whatever their contention, and
    their contention is recorded). ``before_round`` (e.g. a wait for a quiet machine) runs before every timed round.
    """
    _check_counts(warmup, repeats)
    if not fns:
        raise ValueError("no configurations to time")
    if len(batches) == 0:
        raise ValueError("no batches to run")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
    _check_block(block)
    names = list(fns)

    def one_round() -> dict[str, float]:
        totals = dict.fromkeys(names, 0.0)
        for name, group in interleaved_blocks(names, batches, block, rotate):
            fn = fns[name]
            for batch in group:
                start = timer()
                fn(batch)
                totals[name] += timer() - start
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
        start = timer()
        totals = one_round()
        wall = timer() - start
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


def cpu_stall_seconds(path: str = "/proc/pressure/cpu") -> float | None:
    """Cumulative seconds during which at least one runnable task waited for a CPU (Linux PSI "some" total).

    None where pressure stall information is not available (not Linux, or a kernel without PSI).
    """
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith("some"):
                    for field in line.split():
                        if field.startswith("total="):
                            return int(field[len("total=") :]) / 1e6
    except (OSError, ValueError):
        return None
    return None


def wait_for_quiet(
    stall_probe: Callable[[], float | None],
    max_contention: float,
    window_s: float = 1.0,
    timeout_s: float = 60.0,
    sleep: Callable[[float], object] = time.sleep,
) -> float:
    """Sleep in windows of ``window_s`` until one has CPU contention <= ``max_contention`` (or ``timeout_s`` passed).

    Returns the time spent waiting (0.0 right away when the probe gives None or the first window is quiet).
    """
    waited = 0.0
    while True:
        before = stall_probe()
        if before is None:
            return waited
        sleep(window_s)
        after = stall_probe()
        waited += window_s
        if after is None or (after - before) / window_s <= max_contention or waited >= timeout_s:
            return waited


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


def cpu_caches(root: str = "/sys/devices/system/cpu/cpu0/cache") -> list[dict[str, Any]]:
    """CPU 0's caches as Linux reports them: [{"level": 1, "type": "Data", "size_kib": 32}, ...] ([] elsewhere)."""
    caches = []
    for index in sorted(Path(root).glob("index*")):
        try:
            level = int((index / "level").read_text().strip())
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        factor = {"K": 1, "M": 1024, "G": 1024 * 1024}.get(size[-1:], None)
        try:
            kib = int(size[:-1]) * factor if factor else int(size) // 1024
        except ValueError:
            continue
        caches.append({"level": level, "type": kind, "size_kib": kib})
    return caches


def machine_info() -> dict[str, Any]:
    """CPU model and caches, logical cores (total and usable by this process), torch threads, library versions, OS."""
    import torch
    import transformers

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "cpu_caches": cpu_caches(),
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
