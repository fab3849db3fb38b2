"""The serving benchmark's measurements of one model: the offline baseline, the load runs against an early-exit and
a full-depth server per backend, and the memory run.

Per backend: the offline baseline first (no server running), then both servers start and stay up together while
the load runs alternate between them (full depth, early exit, full depth, early exit, ... ``rounds`` times at each
concurrency level): what is compared runs interleaved in time, but never two loads at once (the idle server uses
no CPU: its CPU time is recorded to show it). With ``memory_requests`` the early-exit torch server then takes one
long run while its RSS is sampled.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .serve_load_client import metrics_delta, request_body, run_load
from .serve_load_server import (
    ServerProcess,
    ServerSpec,
    cached_export,
    cpu_seconds,
    folder_key,
    rss_mib,
    running_servers,
)

OFFLINE_BATCH_SIZE = 32
SETTINGS = ("full", "early_exit")  # the order the load runs alternate in
SERVER_WARMUP = (32, 8)  # requests sent to each server once it is up (not counted), at this concurrency


def requests_at(level: int, requests: int) -> int:
    """Requests in one load run at concurrency ``level``: ``requests``, half of it at concurrency 1 (one request at
    a time: enough for the percentiles, and the slowest level), and at least 8 × the concurrency (so the ramp up and
    the tail, when fewer than ``level`` requests are in flight, stay a small part of the run)."""
    return max(1, requests // 2) if level == 1 else max(requests, 8 * level)


def memory_warmup(requests: int, concurrency: int) -> int:
    """Requests sent before the memory run's start reading: a tenth of the run, at least 4 × the concurrency, so
    the allocators have met most batch shapes and the run starts from a steady state."""
    return max(4 * concurrency, requests // 10)


def cycled(request_inputs: Sequence[Any], counts: Sequence[int], singles: Sequence[bool], n: int) -> list[tuple]:
    """``n`` requests cycling through the inputs from the first: (JSON body, inputs in it, single input)."""
    bodies = [request_body(x) for x in request_inputs]
    return [(bodies[i % len(bodies)], counts[i % len(bodies)], singles[i % len(bodies)]) for i in range(n)]


def offline_baseline(folder: str, backend: str, threads: int, inputs: list, rounds: int, log) -> dict:
    """Full-depth throughput of the model on ``inputs`` in batches of 32, in this process, as ``pabee predict`` runs
    it (:func:`pabee.cli_predict.load_predictor`: the same loading and threads as ``pabee serve``), timed per round:
    tokenization apart, then the model on length-grouped batches (what ``pabee eval`` times)."""
    from pabee.cli_predict import load_predictor
    from pabee.predict_settings import ModelSettings

    predictor = load_predictor(ModelSettings(model=folder, backend=backend, patience=0, threads=threads),
                               batch_size=OFFLINE_BATCH_SIZE)
    predictor.predict(inputs[:OFFLINE_BATCH_SIZE])  # warm-up
    out = []
    for r in range(rounds):
        start = time.perf_counter()
        encoded = predictor.encode(inputs)
        tokenized = time.perf_counter()
        predictor.predict_encoded(encoded)
        done = time.perf_counter()
        out.append({"tokenize_s": tokenized - start, "model_s": done - tokenized,
                    "inputs_per_s": len(inputs) / (done - tokenized),
                    "inputs_per_s_with_tokenization": len(inputs) / (done - start)})
        log(f"offline {backend} full depth, batch {OFFLINE_BATCH_SIZE}, round {r + 1}: "
            f"{out[-1]['inputs_per_s']:.1f} inputs/s ({len(inputs)} inputs)")
    del predictor
    gc.collect()
    return {"batch_size": OFFLINE_BATCH_SIZE, "num_inputs": len(inputs), "threads": threads, "rounds": out}


def load_run(server: ServerProcess, requests: list[tuple], concurrency: int, args,
             others: Sequence[ServerProcess]) -> dict:
    """A warm-up of ``concurrency`` requests (not counted), then one timed load run; the server's /metrics before
    and after, and the CPU seconds of this client, the loaded server and the idle ones during it."""
    run_load(server.url, requests[:concurrency], concurrency, args.max_seconds, args.request_timeout)
    before = server.metrics_text()
    cpu_before = [cpu_seconds(s.pid) for s in (server, *others)]
    client_before = time.process_time()
    result = run_load(server.url, requests, concurrency, args.max_seconds, args.request_timeout)
    client_cpu = time.process_time() - client_before
    cpu_after = [cpu_seconds(s.pid) for s in (server, *others)]
    result["server"] = metrics_delta(before, server.metrics_text())
    spent = [None if a is None or b is None else a - b for a, b in zip(cpu_after, cpu_before)]
    result["cpu_s"] = {"client": client_cpu, "server": spent[0], "idle_servers": spent[1:]}
    return result


def _specs(folder: str, backend: str, patience: int, args) -> list[ServerSpec]:
    common = dict(folder=folder, backend=backend, threads=args.threads, max_batch_size=args.max_batch_size,
                  max_wait_ms=args.max_wait_ms, log_level=args.server_log_level, extra_args=tuple(args.server_arg))
    return [ServerSpec(name=f"{backend} {s}", patience=0 if s == "full" else patience, **common) for s in SETTINGS]


def measure_backend(run_dir: str, backend: str, patience: int, data: dict, args, log: Callable[[str], None],
                    memory_requests: int = 0) -> dict:
    """Offline baseline, servers, alternating load runs (and the memory run, with ``memory_requests``) of one model
    on one backend."""
    export = None
    folder = run_dir
    if backend == "onnx":
        export = cached_export(run_dir, Path(args.work_dir) / "onnx", log)
        folder = export["path"]
    offline = offline_baseline(folder, backend, args.threads, data["offline_inputs"], args.rounds, log)
    runs, memory = [], None
    log_dir = Path(args.work_dir) / "logs" / folder_key(run_dir)
    with running_servers(_specs(folder, backend, patience, args), log_dir, args.startup_timeout, log) as servers:
        by_setting = dict(zip(SETTINGS, servers))
        infos = {s: server.info() for s, server in by_setting.items()}
        warm_n, warm_c = SERVER_WARMUP if not args.quick else (8, 4)
        for server in servers:
            run_load(server.url, cycled(*data["requests"], warm_n), warm_c, args.max_seconds, args.request_timeout)
        for level in args.concurrency:
            requests = cycled(*data["requests"], requests_at(level, args.requests))
            for r in range(args.rounds):
                for setting in SETTINGS:
                    server = by_setting[setting]
                    others = [s for s in servers if s is not server]
                    result = load_run(server, requests, level, args, others)
                    runs.append({"setting": setting, "concurrency": level, "round": r + 1, **result})
                    log(f"{backend} {setting:10s} c={level:<3d} round {r + 1}: {result['inputs_per_s'] or 0:7.1f} "
                        f"inputs/s, p50 {result['latency_ms']['p50'] or 0:7.1f} ms, batch "
                        f"{result['server']['mean_batch_size'] or 0:.1f}, exit "
                        f"{result['mean_exit_layer'] or 0:.2f}, {result['ok']}/{result['planned']} ok, "
                        f"{result['error_count']} errors")
        if memory_requests:
            memory = memory_run(by_setting["early_exit"], data, memory_requests, args, log)
    return {"export": export, "offline": offline, "servers": infos, "runs": runs, "memory": memory}


def memory_run(server: ServerProcess, data: dict, n: int, args, log) -> dict:
    """``n`` requests at concurrency ``args.memory_concurrency`` while the server's RSS is sampled."""
    c = args.memory_concurrency
    warmup = memory_warmup(n, c)
    log(f"memory run: {warmup} warm-up + {n} requests at concurrency {c} against {server.spec.name} "
        f"(pid {server.pid}) ...")
    requests = cycled(*data["requests"], max(n, warmup))
    run_load(server.url, requests[:warmup], c, args.memory_max_seconds, args.request_timeout)
    requests = requests[:n]
    rss_start = rss_mib(server.pid)
    before = server.metrics_text()
    result = run_load(server.url, requests, c, args.memory_max_seconds, args.request_timeout, rss_pid=server.pid,
                      rss_interval_s=args.rss_interval)
    result["server"] = metrics_delta(before, server.metrics_text())
    result.update(rss_start_mib=rss_start, warmup_requests=warmup, rss_end_mib=rss_mib(server.pid),
                  server_name=server.spec.name, concurrency=c, patience=server.spec.patience,
                  backend=server.spec.backend)
    log(f"memory run: RSS {rss_start} -> {result['rss_end_mib']} MiB, {result['ok']}/{result['planned']} ok, "
        f"{result['error_count']} errors")
    return result
