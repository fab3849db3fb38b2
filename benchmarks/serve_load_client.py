"""The bounded load generator of the serving benchmark, and what it reads from the server's ``/metrics``.

:func:`run_load` is a closed loop on loopback: ``concurrency`` asyncio workers, each with its own
``httpx.AsyncClient`` and connection (one pool shared by all costs CPU that grows with the connections, enough at
128 workers to make the generator, not the server, the bottleneck on a 2-core machine); each sends the next request as soon as its previous one is answered, until the planned requests are all sent or
the time limit passes (requests in flight then still finish). Every request ends in exactly one outcome: answered
with a 2xx whose body holds one entry per input ("ok"), answered otherwise ("http 429", "bad response"), or failed
at the transport level ("connect error", "timeout", or the httpx error's name), so nothing goes uncounted. With
``pause_after_429`` a worker refused with 429 waits (the server's ``Retry-After``, or a fixed time) before its next
request, as a well-behaved client would. The summary also says how long requests waited inside the generator
before being sent and how much CPU it used, so a run where the generator itself was the bottleneck shows it.

:func:`metrics_delta` turns two ``/metrics`` readings into the server's view of the run between them (model calls,
mean batch size, inputs, mean exit layer).
"""

from __future__ import annotations

import asyncio
import json
import resource
import ssl
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from .serve_load_server import rss_mib


def request_body(inputs: Any) -> bytes:
    """The JSON body of ``POST /predict`` for ``inputs`` (serialised once, before the clock starts)."""
    return json.dumps({"inputs": inputs}).encode("utf-8")


def _exit_layers(payload: Any, n_inputs: int, single: bool) -> list[int] | None:
    """The exit layer of every input in a /predict answer (None when the answer does not have their shape)."""
    entries = [payload] if single else payload
    if not isinstance(entries, list) or len(entries) != n_inputs:
        return None
    try:
        return [int(entry[0]["exit_layer"]) for entry in entries]
    except (KeyError, IndexError, TypeError, ValueError):
        return None


async def _send(client: httpx.AsyncClient, body: bytes, n_inputs: int, single: bool) -> tuple:
    """One request: (outcome, seconds, exit layers, the Retry-After header of a 429 or None, seconds the request
    waited in this client before its first byte was written, or None if it never was). The wait is read from
    httpcore's ``trace`` extension; a load generator short of CPU shows up there instead of as server latency."""
    start = time.perf_counter()
    sent_at: list[float] = []

    async def trace(event: str, info: dict) -> None:
        if not sent_at and event.startswith("http11.send_request_headers.started"):
            sent_at.append(time.perf_counter())

    def waited() -> float | None:
        return sent_at[0] - start if sent_at else None

    try:
        response = await client.post("/predict", content=body, headers={"Content-Type": "application/json"},
                                     extensions={"trace": trace})
    except httpx.ConnectError:
        return "connect error", time.perf_counter() - start, [], None, waited()
    except httpx.TimeoutException:
        return "timeout", time.perf_counter() - start, [], None, waited()
    except httpx.HTTPError as err:
        return type(err).__name__, time.perf_counter() - start, [], None, waited()
    seconds = time.perf_counter() - start
    if not 200 <= response.status_code < 300:
        return f"http {response.status_code}", seconds, [], response.headers.get("retry-after"), waited()
    try:
        layers = _exit_layers(response.json(), n_inputs, single)
    except ValueError:
        layers = None
    if layers is None:
        return "bad response", seconds, [], None, waited()
    return "ok", seconds, layers, None, waited()


async def _rss_sampler(pid: int, interval_s: float, samples: list, start: float, stop: asyncio.Event) -> None:
    while True:
        rss = rss_mib(pid)
        if rss is not None:
            samples.append([round(time.perf_counter() - start, 3), round(rss, 2)])
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
            return
        except asyncio.TimeoutError:
            pass


def _process_cpu_s() -> float:
    """CPU seconds this process has used (user + system), for the load generator's own share of the machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pause_seconds(pause_after_429: float | str | None, retry_after: str | None) -> float:
    """How long a worker refused with 429 waits: ``"retry-after"`` the server's ``Retry-After`` seconds (1 when it
    sends none or an unreadable one), a number that many seconds, None not at all."""
    if pause_after_429 is None:
        return 0.0
    if pause_after_429 == "retry-after":
        try:
            return max(0.0, float(retry_after)) if retry_after is not None else 1.0
        except ValueError:
            return 1.0
    return float(pause_after_429)


async def _load(url: str, requests: Sequence[tuple[bytes, int, bool]], concurrency: int, max_seconds: float,
                timeout_s: float, rss_pid: int | None, rss_interval_s: float,
                pause_after_429: float | str | None = None) -> dict:
    outcomes: list[tuple | None] = [None] * len(requests)
    next_index = 0
    samples: list = []
    # One client (and connection) per worker, made before the clock starts: a single shared pool costs CPU that
    # grows with the number of connections, and at high concurrency the generator, not the server, was the queue.
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    tls = ssl.create_default_context()  # loading the CA bundle once, not once per client (loopback is plain HTTP)
    clients = [httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=one, verify=tls) for _ in range(concurrency)]
    try:
        cpu_start = _process_cpu_s()
        start = time.perf_counter()
        deadline = start + max_seconds
        stop = asyncio.Event()
        sampler = (asyncio.create_task(_rss_sampler(rss_pid, rss_interval_s, samples, start, stop))
                   if rss_pid is not None else None)

        async def worker(client: httpx.AsyncClient) -> None:
            nonlocal next_index
            while next_index < len(requests) and time.perf_counter() < deadline:
                i = next_index
                next_index += 1
                outcomes[i] = await _send(client, *requests[i])
                # a well-behaved client waits after a 429: not past the time limit, nor when nothing is left
                if outcomes[i][0] == "http 429" and pause_after_429 is not None and next_index < len(requests):
                    pause = min(pause_seconds(pause_after_429, outcomes[i][3]), deadline - time.perf_counter())
                    if pause > 0:
                        await asyncio.sleep(pause)

        try:
            await asyncio.gather(*(worker(client) for client in clients))
        finally:
            wall = time.perf_counter() - start
            client_cpu = _process_cpu_s() - cpu_start
            stop.set()
            if sampler is not None:
                await sampler
    finally:
        await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)
    return {"outcomes": outcomes, "wall_s": wall, "rss_samples": samples, "client_cpu_s": client_cpu}


def run_load(url: str, requests: Sequence[tuple[bytes, int, bool]], concurrency: int, max_seconds: float = 120.0,
             timeout_s: float = 60.0, rss_pid: int | None = None, rss_interval_s: float = 0.5,
             pause_after_429: float | str | None = None) -> dict:
    """Send ``requests`` ((body, inputs in it, whether it is a single input) each) with ``concurrency`` workers;
    stop sending after ``max_seconds``. ``rss_pid``: sample that process's RSS every ``rss_interval_s`` meanwhile.
    ``pause_after_429``: a worker refused with 429 waits before its next request (:func:`pause_seconds`).

    Returns the run's summary (:func:`summarize`), plus ``rss_samples`` ([seconds, MiB] pairs) when sampling.
    """
    raw = asyncio.run(_load(url, requests, concurrency, max_seconds, timeout_s, rss_pid, rss_interval_s,
                            pause_after_429))
    summary = summarize(raw["outcomes"], [n for _, n, _ in requests], raw["wall_s"])
    summary["client_cpu_s"] = raw["client_cpu_s"]
    summary["client_cpu_share"] = raw["client_cpu_s"] / raw["wall_s"] if raw["wall_s"] > 0 else None
    if rss_pid is not None:
        summary["rss_samples"] = raw["rss_samples"]
    return summary


def percentile_ms(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q) * 1000) if len(values) else None


def summarize(outcomes: Sequence[tuple | None], inputs_per_request: Sequence[int], wall_s: float) -> dict:
    """Counts (planned = ok + errors + not sent), throughput, latency percentiles of the answered requests (and of
    the errors, by kind), exit layers of the answered inputs."""
    sent = [o for o in outcomes if o is not None]
    ok = [o for o in sent if o[0] == "ok"]
    errors = Counter(o[0] for o in sent if o[0] != "ok")
    layers = [layer for o in ok for layer in o[2]]
    latencies = [o[1] for o in ok]
    waits = [o[4] for o in sent if len(o) > 4 and o[4] is not None]
    inputs_ok = sum(n for o, n in zip(outcomes, inputs_per_request) if o is not None and o[0] == "ok")
    return {
        "planned": len(outcomes), "sent": len(sent), "ok": len(ok), "errors": dict(sorted(errors.items())),
        "error_count": sum(errors.values()), "not_sent": len(outcomes) - len(sent),
        "inputs_ok": inputs_ok, "wall_s": wall_s,
        "inputs_per_s": inputs_ok / wall_s if wall_s > 0 else None,
        "requests_per_s": len(ok) / wall_s if wall_s > 0 else None,
        "latency_ms": {
            "p50": percentile_ms(latencies, 50), "p95": percentile_ms(latencies, 95),
            "p99": percentile_ms(latencies, 99), "mean": statistics.fmean(latencies) * 1000 if latencies else None,
            "max": max(latencies) * 1000 if latencies else None,
        },
        # time requests spent in the load generator before their first byte left it (its own queueing)
        "client_wait_ms": {"p50": percentile_ms(waits, 50), "p99": percentile_ms(waits, 99),
                           "max": max(waits) * 1000 if waits else None},
        "error_latency_ms": {kind: {"p50": percentile_ms(seconds, 50), "p99": percentile_ms(seconds, 99),
                                    "max": max(seconds) * 1000}
                             for kind, seconds in _by_kind((o[0], o[1]) for o in sent if o[0] != "ok").items()},
        "mean_exit_layer": statistics.fmean(layers) if layers else None,
        "exit_layer_counts": {str(k): v for k, v in sorted(Counter(layers).items())},
    }


def _by_kind(pairs) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for kind, seconds in pairs:
        out.setdefault(kind, []).append(seconds)
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------------------------------------- /metrics


def metric_samples(text: str) -> dict[str, float]:
    """Prometheus exposition text -> {sample name: value} for the unlabelled samples (sums, counts, totals)."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels:
                values[sample.name] = sample.value
    return values


def metrics_delta(before: str, after: str) -> dict:
    """What the server did between two ``/metrics`` readings: model calls (``pabee_batch_size`` observations),
    their mean size, inputs predicted, their mean exit layer (``pabee_exit_layer``) and the seconds spent in model
    calls (``pabee_model_busy_seconds_total``), the model calls the batches ran as and their real and padded tokens
    (``pabee_model_calls_total``, ``pabee_tokens_total``, ``pabee_padded_tokens_total``); None for what the server
    does not expose."""
    b, a = metric_samples(before), metric_samples(after)

    def delta(name: str) -> float:
        return a.get(name, 0.0) - b.get(name, 0.0)

    batches, batch_inputs = delta("pabee_batch_size_count"), delta("pabee_batch_size_sum")
    exits, exit_sum = delta("pabee_exit_layer_count"), delta("pabee_exit_layer_sum")
    busy = "pabee_model_busy_seconds_total"  # exposed since the work budget (admission.py); None before
    return {
        "batches": int(batches), "inputs": int(delta("pabee_inputs_total")),
        "mean_batch_size": batch_inputs / batches if batches else None,
        "mean_exit_layer": exit_sum / exits if exits else None,
        "model_busy_s": delta(busy) if busy in a else None,
        # exposed since length groups (pabee.length_groups): a batch's model calls and their padding; None before
        **{key: int(delta(name)) if name in a else None for key, name in (
            ("model_calls", "pabee_model_calls_total"), ("tokens", "pabee_tokens_total"),
            ("padded_tokens", "pabee_padded_tokens_total"))},
    }
