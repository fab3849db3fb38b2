"""Admission control by worst-case work: inputs that never exit early cannot queue the server into timeouts.

An early-exit model's cost per input is not fixed: an input runs 1..L layers. A queue bounded in inputs
(``--max-queue``) is sized for the usual mix; when inputs stop exiting early (a shift in the traffic, or inputs
crafted to never exit) every queued input costs the full L layers and the same queue holds several times more
work, so waiting times grow until clients time out.

:class:`WorkBudget` bounds the queue in *work* instead. The unit is the layer-row: one input through one layer.
Every admitted input is counted at its worst case, L layer-rows, from its admission until its batch is done (or it
is dropped); ``pabee serve`` admits a request on arrival, before tokenizing it, so inputs still being tokenized
count too and a refusal costs no tokenizer work. The server's speed in seconds per layer-row is measured on every batch (the layer-rows a batch really
ran are the sum of its exit layers), as a ratio of exponentially decayed sums of batch seconds and layer-rows, so
big batches weigh more and the estimate follows the machine within a few batches. A request is admitted when
nothing is pending, or when the pending worst-case work including it would take at most ``max_seconds`` at the
measured speed; otherwise :class:`OverBudget` (HTTP 429) with the seconds after which it would fit
(``Retry-After``). Before the first batch is measured, the budget is one full-depth batch (``max_batch_size`` rows).

So, whatever the inputs do, an admitted input starts within about ``max_seconds`` plus one batch of its arrival
(one request larger than the budget is still admitted when the server is idle).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from .batcher import QueueFull


class OverBudget(QueueFull):
    """The request's worst-case work does not fit the budget now (answer 429); ``retry_after`` in whole seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


def _exit_layer(result: Any) -> int:
    return int(result.exit_layer)


class WorkBudget:
    """Worst-case pending work, the measured speed, and admission against ``max_seconds`` of work.

    Args:
        num_layers: L; each admitted input counts L layer-rows until it is done.
        max_seconds: most seconds of worst-case work admitted at once (None: measure and count, never refuse).
        max_batch_size: before any batch is measured, the budget is this many rows at full depth.
        decay: weight of the past at each new batch in the speed estimate (0 <= decay < 1).
        layers_run: a result -> the layers its input ran (default: its ``exit_layer``).
    """

    def __init__(self, num_layers: int, max_seconds: float | None, max_batch_size: int, decay: float = 0.8,
                 layers_run: Callable[[Any], int] = _exit_layer):
        if num_layers < 1 or max_batch_size < 1:
            raise ValueError("num_layers and max_batch_size must be >= 1")
        if max_seconds is not None and not 0 < max_seconds < math.inf:
            raise ValueError(f"max_seconds must be a positive number, got {max_seconds!r}")
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        self.num_layers, self.max_seconds, self.max_batch_size = num_layers, max_seconds, max_batch_size
        self.decay, self.layers_run = decay, layers_run
        self.pending_rows = 0  # admitted inputs not done yet (queued or in the running batch)
        self.rejected = 0  # requests refused by the budget
        self.busy_seconds = 0.0  # model time, summed over every measured batch
        self._seconds = 0.0  # decayed sums: the estimate is their ratio
        self._layer_rows = 0.0

    @property
    def enforced(self) -> bool:
        """True when requests can be refused (``max_seconds`` is set)."""
        return self.max_seconds is not None

    @property
    def pending_layer_rows(self) -> int:
        """The admitted inputs' worst-case work: pending inputs x L."""
        return self.pending_rows * self.num_layers

    @property
    def seconds_per_layer_row(self) -> float | None:
        """The measured speed (None until a batch has run)."""
        return self._seconds / self._layer_rows if self._layer_rows > 0 else None

    @property
    def limit_layer_rows(self) -> float | None:
        """The most worst-case layer-rows admitted at once (None when not enforced)."""
        if self.max_seconds is None:
            return None
        speed = self.seconds_per_layer_row
        if speed is None or speed <= 0:
            return float(self.max_batch_size * self.num_layers)
        return self.max_seconds / speed

    def check(self, rows: int) -> None:
        """Raise :class:`OverBudget` if ``rows`` new inputs would not be admitted now (nothing counted otherwise):
        lets a server refuse a request before the work of tokenizing it."""
        limit = self.limit_layer_rows
        new = rows * self.num_layers
        if limit is not None and self.pending_rows > 0 and self.pending_layer_rows + new > limit:
            self.rejected += 1
            raise OverBudget(self._refusal(new, limit), self._retry_after(new, limit))

    def admit(self, rows: int) -> None:
        """Count ``rows`` new inputs as pending, or raise :class:`OverBudget` (nothing counted)."""
        self.check(rows)
        self.pending_rows += rows

    def release(self, rows: int) -> None:
        """``rows`` admitted inputs are done (answered, failed or dropped)."""
        self.pending_rows = max(0, self.pending_rows - rows)

    def finish(self, rows: int, seconds: float | None = None, results: Sequence[Any] = ()) -> None:
        """A batch of ``rows`` admitted inputs is done: release them and, when it was timed, learn the speed from
        its ``seconds`` and the layers its ``results`` ran."""
        self.release(rows)
        if seconds is None or not results:
            return
        layer_rows = sum(self.layers_run(r) for r in results)
        if layer_rows <= 0 or not seconds >= 0:
            return
        self.busy_seconds += seconds
        self._seconds = self.decay * self._seconds + seconds
        self._layer_rows = self.decay * self._layer_rows + layer_rows

    def _retry_after(self, new: int, limit: float) -> int:
        """Whole seconds until enough pending work has run for ``new`` layer-rows to fit (or the server is idle)."""
        must_run = self.pending_layer_rows - (limit - new) if new <= limit else self.pending_layer_rows
        speed = self.seconds_per_layer_row
        if speed is None:
            return 1
        return max(1, math.ceil(must_run * speed))

    def _refusal(self, new: int, limit: float) -> str:
        speed = self.seconds_per_layer_row
        rows = new // self.num_layers
        if speed is None:
            return (f"the server is busy: {self.pending_rows} inputs pending and the speed is not measured yet "
                    f"(at most {self.max_batch_size} inputs until then): retry later")
        return (f"the server is busy: {self.pending_rows} inputs pending and {rows} more could take "
                f"{(self.pending_layer_rows + new) * speed:.2f} s at full depth, more than --max-queue-seconds "
                f"{self.max_seconds:g}: retry later")
