"""Length groups: a batch of inputs of different lengths runs as a few model calls of similar lengths.

A padded batch makes every row as wide as its longest one. ``pabee eval`` and ``pabee predict`` sort their whole
input by length before cutting batches, so little is padded; a server cannot: its batches are the requests that
happen to be waiting, in arrival order. On RTE dev pairs (MiniLM's tokenizer: median 53 tokens, longest 253), a
batch of 8 in arrival order pads to 2.0x the real tokens, one of 32 to 2.6x, against 1.12x for length-sorted
batches of 32 -- and on a CPU the model's time grows with the padded tokens, not the real ones.

Cost model: a model call on ``B`` rows padded to width ``W`` costs about ``overhead + B * W`` token-rows (one token
of one row through the model). Measured with MiniLM-L6 (6 layers, hidden 384) on one CPU thread: 9.5 ms per call
+ 0.28 ms per token-row, so one call's overhead is worth about 32 token-rows; attention's part that grows with
``W**2`` is under a fifth of the cost up to 256 tokens and is left out. :func:`plan_length_groups` cuts the rows,
sorted by length, into the consecutive groups of least total cost (exact, by dynamic programming): it splits only
where the padding saved is worth more than the extra calls. A bigger model has a higher cost per token-row and a
similar overhead per call, so for it the same overhead errs on the side of fewer calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
DEFAULT_CALL_OVERHEAD = 32  # token-rows one model call costs beyond its rows (MiniLM-L6 on a CPU, see above)


def plan_length_groups(lengths: Sequence[int], call_overhead: float) -> list[list[int]]:
    """The indices of ``lengths`` cut into groups, each run as one padded model call, so that the sum over groups
    of ``call_overhead + len(group) * max length in the group`` is least. Groups are consecutive in length order
    (shortest group first, indices in each by length); one group when splitting saves nothing. ``call_overhead``
    >= 0 in token-rows."""
    n = len(lengths)
    if call_overhead < 0 or call_overhead != call_overhead:
        raise ValueError(f"call_overhead must be >= 0, got {call_overhead!r}")
    if n <= 1:
        return [list(range(n))]
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    width = np.asarray(lengths, dtype=np.float64)[order]
    best = np.zeros(n + 1)  # best[j]: least cost of the j shortest rows
    start = np.zeros(n + 1, dtype=np.int64)  # start[j]: where the last group of that best plan begins
    first = np.arange(n, dtype=np.float64)
    for j in range(1, n + 1):
        # the last group is rows i..j-1 (i < j), as wide as row j-1
        cost = best[:j] + call_overhead + (j - first[:j]) * width[j - 1]
        i = int(np.argmin(cost))  # ties: the earliest start, i.e. fewer, larger groups
        best[j], start[j] = cost[i], i
    groups, j = [], n
    while j > 0:
        groups.append([int(k) for k in order[start[j] : j]])
        j = int(start[j])
    return groups[::-1]


def row_length(row: Any) -> int:
    """Tokens of an encoded row (:class:`pabee.predictor.Encoded`)."""
    return len(row.input_ids)


class LengthGroupedRunner:
    """Runs each batch through ``run`` in length groups (:func:`plan_length_groups`) and puts the results back in
    the batch's order; counts model calls, real tokens and padded tokens (for metrics).

    Args:
        run: one model call: a list of rows -> one result per row, in order (e.g. :meth:`Predictor.run`).
        call_overhead: one call's cost in token-rows (None: never split, one call per batch).
        length: a row -> its tokens.
    """

    def __init__(self, run: Callable[[list[T]], Sequence[Any]], call_overhead: float | None = DEFAULT_CALL_OVERHEAD,
                 length: Callable[[T], int] = row_length):
        if call_overhead is not None and not call_overhead >= 0:
            raise ValueError(f"call_overhead must be >= 0 or None, got {call_overhead!r}")
        self.run, self.call_overhead, self.length = run, call_overhead, length
        self.calls = 0  # model calls made
        self.tokens = 0  # real tokens of the rows run
        self.padded_tokens = 0  # tokens the model ran: rows x their call's width

    def plan(self, rows: Sequence[T]) -> list[list[int]]:
        """The groups ``rows`` would run in (indices into ``rows``)."""
        lengths = [self.length(r) for r in rows]
        if self.call_overhead is None:
            return [list(range(len(rows)))]
        return plan_length_groups(lengths, self.call_overhead)

    def __call__(self, rows: Sequence[T]) -> list[Any]:
        """One result per row, in the order of ``rows``; an exception of ``run`` propagates."""
        if not rows:
            return []
        results: list[Any] = [None] * len(rows)
        for group in self.plan(rows):
            batch = [rows[i] for i in group]
            out = self.run(batch)
            if len(out) != len(batch):
                raise RuntimeError(f"the model returned {len(out)} results for {len(batch)} inputs")
            for i, result in zip(group, out):
                results[i] = result
            lengths = [self.length(r) for r in batch]
            self.calls += 1
            self.tokens += sum(lengths)
            self.padded_tokens += len(batch) * max(lengths)
        return results
