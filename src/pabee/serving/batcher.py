"""Dynamic batching: inputs of concurrent requests share model calls.

Every request puts its inputs (already tokenized) in one queue. A worker task takes the queue's first input, waits
at most ``max_wait_ms`` for more to arrive (or until ``max_batch_size`` are there), and runs the batch in a
dedicated thread, so the event loop keeps accepting and answering requests meanwhile. Each input of a batch exits
the model on its own (the early-exit loop works row by row); each request's future resolves when all its inputs
are done. A full queue refuses a request as a whole (:class:`QueueFull`); :meth:`DynamicBatcher.stop` drains what
is queued before returning. With a :class:`~pabee.serving.admission.WorkBudget`, a request is also refused when
its inputs' worst-case work does not fit the budget (:class:`~pabee.serving.admission.OverBudget`, a QueueFull),
and every batch's time and layers teach the budget the model's speed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .admission import WorkBudget

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue cannot take the request's inputs now (answer 429)."""


class ShuttingDown(Exception):
    """The batcher is stopping and takes no new work (answer 503)."""


@dataclass
class _Item:
    row: Any
    future: asyncio.Future
    queued_at: float


class DynamicBatcher:
    """Batches single inputs from concurrent callers into model calls.

    Args:
        run_batch: called in the worker thread with a list of rows; returns one result per row, in order.
        max_batch_size: most rows per call.
        max_wait_ms: how long the oldest queued row waits for others before its batch runs anyway.
        max_queue: most rows waiting (not counting the batch being run).
        on_batch: called (in the event loop) with the rows and results of every completed batch, e.g. for metrics.
        on_depth: called with the queue depth whenever it changes.
        budget: admits requests by worst-case work and learns the model's speed from every batch (None: no budget).
    """

    def __init__(
        self,
        run_batch: Callable[[list[Any]], Sequence[Any]],
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        on_batch: Callable[[list[Any], Sequence[Any]], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
        budget: WorkBudget | None = None,
    ):
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.on_depth = on_depth
        self.budget = budget
        self._queue: deque[_Item] = deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False

    @property
    def depth(self) -> int:
        """Rows waiting for the model."""
        return len(self._queue)

    @property
    def closing(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._closing

    def start(self) -> None:
        """Start the worker in the running event loop (idempotent)."""
        if self._task is not None and not self._task.done():
            return
        self._closing = False
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pabee-model")
        self._task = asyncio.get_running_loop().create_task(self._work(), name="pabee-batcher")

    async def submit(self, rows: Sequence[Any], reserved: bool = False) -> list[Any]:
        """Queue ``rows`` and wait for their results (in order). QueueFull / ShuttingDown when refused; the
        exception of ``run_batch`` if the model call failed. ``reserved``: the caller already admitted the rows
        into the budget (``budget.admit``); a refusal here then releases them, and once queued the batcher
        releases them as for its own admissions."""
        try:
            if self._closing:
                raise ShuttingDown("the server is shutting down")
            if len(self._queue) + len(rows) > self.max_queue:
                raise QueueFull(
                    f"the queue is full ({len(self._queue)} inputs waiting, at most {self.max_queue}): retry later"
                )
        except (QueueFull, ShuttingDown):
            if reserved and self.budget is not None:
                self.budget.release(len(rows))
            raise
        self.start()
        if self.budget is not None and not reserved:
            self.budget.admit(len(rows))  # OverBudget: nothing was queued
        loop = asyncio.get_running_loop()
        now = loop.time()
        items = [_Item(row, loop.create_future(), now) for row in rows]
        self._queue.extend(items)
        self._depth_changed()
        self._arrived.set()
        return list(await asyncio.gather(*(item.future for item in items)))

    async def stop(self) -> None:
        """Stop taking work, run everything already queued, then stop the worker."""
        self._closing = True
        if self._task is None:
            return
        self._arrived.set()
        await self._task
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ worker

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._fill(loop)
            batch = [self._queue.popleft() for _ in range(min(self.max_batch_size, len(self._queue)))]
            self._depth_changed()
            popped = len(batch)
            batch = [item for item in batch if not item.future.done()]  # the caller went away (cancelled)
            if self.budget is not None and popped > len(batch):
                self.budget.release(popped - len(batch))
            if not batch:
                continue
            rows = [item.row for item in batch]
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self.run_batch, rows)
                if len(results) != len(rows):
                    raise RuntimeError(f"the model returned {len(results)} results for {len(rows)} inputs")
            except Exception as err:  # a failed batch fails its requests, never the worker
                logger.exception("model call on a batch of %d inputs failed", len(rows))
                self._finish(len(rows))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(err)
                continue
            self._finish(len(rows), time.perf_counter() - started, results)
            for item, result in zip(batch, results):
                if not item.future.done():
                    item.future.set_result(result)
            if self.on_batch is not None:
                try:
                    self.on_batch(rows, results)
                except Exception:
                    logger.exception("batch callback failed")

    async def _fill(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until a full batch is queued, the oldest row has waited max_wait, or the batcher is stopping."""
        deadline = self._queue[0].queued_at + self.max_wait
        while len(self._queue) < self.max_batch_size and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _finish(self, rows: int, seconds: float | None = None, results: Sequence[Any] = ()) -> None:
        """Tell the budget a batch is done (its inputs are no longer pending; its time and layers, if it ran)."""
        if self.budget is None:
            return
        try:
            self.budget.finish(rows, seconds, results)
        except Exception:  # never stop the worker (the budget released the inputs before it failed)
            logger.exception("work budget update failed")

    def _depth_changed(self) -> None:
        if self.on_depth is not None:
            self.on_depth(len(self._queue))
