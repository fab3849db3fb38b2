"""Prometheus metrics of one server, in a registry of its own (several apps in one process do not collide)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ..length_groups import LengthGroupedRunner
    from .admission import WorkBudget

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _powers_of_two(limit: int) -> list[float]:
    buckets, size = [], 1
    while size < limit:
        buckets.append(float(size))
        size *= 2
    return [*buckets, float(limit)]


class ServerMetrics:
    """The counters, gauges and histograms ``GET /metrics`` exposes.

    * ``pabee_requests_total{path,status}``: HTTP requests answered, by route and status code.
    * ``pabee_request_errors_total{path,status}``: the requests answered with an error (4xx, 5xx).
    * ``pabee_queue_depth``: inputs waiting for the model; ``pabee_inputs_total``, ``pabee_truncated_inputs_total``.
    * ``pabee_request_latency_seconds``: ``/predict`` time from arrival to response.
    * ``pabee_batch_size``: inputs per batch (buckets 1, 2, 4, ... max batch size); a batch runs as one or more
      model calls of similar lengths (``pabee_model_calls_total``).
    * ``pabee_exit_layer``: the layer each input exited at (buckets 1..L): when inputs stop exiting early, the mass
      moves to the last bucket. Its ``_sum`` counts the layer-rows run (one input through one layer).

    With :meth:`watch_budget`, the work budget's state at each scrape (:class:`BudgetCollector`); with
    :meth:`watch_calls`, the model calls and padding of the length-grouped batches (:class:`CallsCollector`).
    """

    def __init__(self, num_layers: int, max_batch_size: int):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("pabee_requests", "HTTP requests answered", ["path", "status"], registry=r)
        self.errors = Counter(
            "pabee_request_errors", "HTTP requests answered with an error (4xx, 5xx)", ["path", "status"], registry=r
        )
        self.queue_depth = Gauge("pabee_queue_depth", "inputs waiting for the model", registry=r)
        self.inputs = Counter("pabee_inputs", "inputs predicted", registry=r)
        self.truncated = Counter("pabee_truncated_inputs", "inputs cut to the model's length limit", registry=r)
        self.latency = Histogram(
            "pabee_request_latency_seconds", "/predict latency from arrival to response", buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "pabee_batch_size", "inputs per batch (one or more model calls)", buckets=_powers_of_two(max_batch_size), registry=r
        )
        self.exit_layer = Histogram(
            "pabee_exit_layer", "layer at which each input exited (1..L)",
            buckets=[float(i) for i in range(1, num_layers + 1)], registry=r,
        )

    def watch_budget(self, budget: WorkBudget) -> None:
        """Expose ``budget``'s pending work, speed estimate, limit, refusals and model time."""
        self.registry.register(BudgetCollector(budget))

    def watch_calls(self, runner: LengthGroupedRunner) -> None:
        """Expose ``runner``'s model calls, real tokens and padded tokens."""
        self.registry.register(CallsCollector(runner))

    def observe_batch(self, size: int, exit_layers: list[int], truncated: int) -> None:
        """Record one model call: its size, every input's exit layer and how many inputs were truncated."""
        self.batch_size.observe(size)
        self.inputs.inc(size)
        if truncated:
            self.truncated.inc(truncated)
        for layer in exit_layers:
            self.exit_layer.observe(layer)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class BudgetCollector(Collector):
    """The work budget (:class:`~pabee.serving.admission.WorkBudget`), read at every scrape.

    * ``pabee_pending_work_layer_rows``: the worst-case work admitted and not done (pending inputs x L).
    * ``pabee_work_budget_layer_rows``: the most worst-case work admitted at once (+Inf without
      ``--max-queue-seconds``).
    * ``pabee_seconds_per_layer_row``: the measured speed (NaN until a batch has run).
    * ``pabee_budget_rejections_total``: requests refused with 429 because their work did not fit.
    * ``pabee_model_busy_seconds_total``: time spent in model calls (its rate: the model's utilisation, 0..1).
    """

    def __init__(self, budget: WorkBudget):
        self.budget = budget

    def collect(self):
        b = self.budget
        speed, limit = b.seconds_per_layer_row, b.limit_layer_rows
        yield GaugeMetricFamily("pabee_pending_work_layer_rows",
                                "worst-case work admitted and not done: pending inputs x layers",
                                value=b.pending_layer_rows)
        yield GaugeMetricFamily("pabee_work_budget_layer_rows",
                                "most worst-case work admitted at once (+Inf: no --max-queue-seconds)",
                                value=math.inf if limit is None else limit)
        yield GaugeMetricFamily("pabee_seconds_per_layer_row", "measured model seconds per input-layer (NaN: none yet)",
                                value=math.nan if speed is None else speed)
        yield CounterMetricFamily("pabee_budget_rejections", "requests refused (429) by the work budget",
                                  value=b.rejected)
        yield CounterMetricFamily("pabee_model_busy_seconds", "seconds spent in model calls", value=b.busy_seconds)


class CallsCollector(Collector):
    """The model calls a :class:`~pabee.length_groups.LengthGroupedRunner` made, read at every scrape.

    * ``pabee_model_calls_total``: model calls (a batch of ``pabee_batch_size`` runs as one or more length groups).
    * ``pabee_tokens_total``: the tokens of the inputs run.
    * ``pabee_padded_tokens_total``: the tokens the model ran, padding included (rows x their call's width); its
      ratio to ``pabee_tokens_total`` is the padding overhead (1.0: none).
    """

    def __init__(self, runner: LengthGroupedRunner):
        self.runner = runner

    def collect(self):
        r = self.runner
        yield CounterMetricFamily("pabee_model_calls", "model calls (length groups of the batches)", value=r.calls)
        yield CounterMetricFamily("pabee_tokens", "tokens of the inputs run", value=r.tokens)
        yield CounterMetricFamily("pabee_padded_tokens", "tokens the model ran, padding included",
                                  value=r.padded_tokens)
