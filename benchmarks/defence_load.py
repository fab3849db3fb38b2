#!/usr/bin/env python
"""``pabee serve`` under a load of slowdown-attacked inputs, with and without the work budget
(``--max-queue-seconds S``, :mod:`pabee.serving.admission`): goodput, latency of the answered requests and of the
refused ones, exit layers, and the server's budget metrics.

Two ``pabee serve`` processes of one model (torch, early exit at ``--patience P``) run side by side on loopback:
one without the defence, one with ``--max-queue-seconds S``. Each takes closed-loop loads (``serve_load_client``)
of the clean inputs and of their attacked versions (JSON Lines written by ``benchmarks/robustness.py
--write-attacked``), at each ``--concurrency`` level; the four configurations {clean, attacked} x {no defence,
defence} alternate within a round (in reverse order every other round), ``--rounds`` times, one load at a time. A
client refused with 429 waits the server's ``Retry-After`` before its next request (``--pause-after-429``), and
every planned request ends as answered (2xx), refused (429), another error, or not sent before the time limit.

The run is written to ``docs/serving-defence.json`` (a new run replaces earlier runs of the same model) and
``docs/serving-defence.md`` is rendered from it (``defence_load_render``; ``--render-only`` renders again).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if str(Path(__file__).resolve().parents[1]) not in sys.path:  # the benchmarks package beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import datetime  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

from benchmarks.defence_load_render import render_markdown  # noqa: E402
from benchmarks.machine import machine_info, script_command  # noqa: E402
from benchmarks.pages import output_paths, replace_run, server_benchmark_main  # noqa: E402
from benchmarks.serve_load import DEFAULT_WORK_DIR, BenchError, load_requests, versions  # noqa: E402
from benchmarks.serve_load_client import metric_samples, metrics_delta, run_load  # noqa: E402
from benchmarks.serve_load_measure import SERVER_WARMUP, cycled  # noqa: E402
from benchmarks.serve_load_server import (  # noqa: E402
    ServerError,
    ServerSpec,
    add_server_arguments,
    cpu_seconds,
    folder_key,
    running_servers,
)
from pabee.cli import _Parser, int_at_least, parse_int_list  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = "/work/runs/minilm-rte"  # the model docs/robustness/attacked-rte-bert6.jsonl was attacked on
DEFAULT_ATTACKED = REPO_ROOT / "docs" / "robustness" / "attacked-rte-bert6.jsonl"
DEFENCES = ("off", "on")
INPUT_KINDS = ("clean", "attacked")
CONFIGS = [(d, k) for k in INPUT_KINDS for d in DEFENCES]  # the order of a round: alternating servers


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="defence_load.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                description="Load pabee serve with clean and slowdown-attacked inputs, with and without "
                            "--max-queue-seconds, and write docs/serving-defence.md.")
    positive = int_at_least(1)
    p.add_argument("--model", default=DEFAULT_MODEL, help="the trained pabee run folder the inputs were attacked on")
    p.add_argument("--patience", type=positive, default=2, help="the servers' early-exit patience (the one the "
                   "inputs were attacked against)")
    p.add_argument("--attacked", default=str(DEFAULT_ATTACKED), help="JSON Lines: the attacked inputs, one "
                   "request's \"inputs\" per line")
    p.add_argument("--clean", default=None, help="JSON Lines: their clean originals (default: the --attacked file "
                   "with .clean.jsonl for .jsonl)")
    p.add_argument("--max-queue-seconds", type=float, default=2.0, help="the defended server's work budget S")
    p.add_argument("--concurrency", type=lambda t: parse_int_list(t, "--concurrency"), default=None,
                   help="concurrency levels (default 16,128; --quick: 4)")
    p.add_argument("--requests", type=positive, default=None, help="requests per load run, at least 8 x the "
                   "concurrency (default 400; --quick: 16)")
    p.add_argument("--rounds", type=positive, default=1, help="rounds of the four configurations per level")
    p.add_argument("--max-seconds", type=float, default=300.0, help="a load run stops sending after this long")
    p.add_argument("--pause-after-429", default="retry-after", help="what a client refused with 429 waits before "
                   "its next request: retry-after (the server's Retry-After) or a number of seconds")
    add_server_arguments(p, "both servers")
    p.add_argument("--work-dir", default=str(DEFAULT_WORK_DIR), help="server logs (under logs-defence/)")
    p.add_argument("--output", default=None, help="JSON report (default docs/serving-defence.json; --quick: a "
                   "temporary folder)")
    p.add_argument("--markdown", default=None, help="the page (default docs/serving-defence.md; --quick: beside "
                   "--output)")
    p.add_argument("--render-only", action="store_true", help="measure nothing: render --markdown from --output")
    p.add_argument("--quick", action="store_true", help="a smoke run: 16 requests at concurrency 4, output in a "
                   "temporary folder")
    return p


def requests_per_run(level: int, requests: int) -> int:
    """Requests of one load run at concurrency ``level``: ``requests``, at least 8 x the concurrency."""
    return max(requests, 8 * level)


def check_settings(args: argparse.Namespace) -> None:
    """Fill in the --quick-dependent defaults and refuse bad values (BenchError)."""
    args.concurrency = sorted(set(args.concurrency or ([4] if args.quick else [16, 128])))
    args.requests = args.requests or (16 if args.quick else 400)
    if any(c < 1 for c in args.concurrency):
        raise BenchError("--concurrency levels must be >= 1")
    for name in ("max_queue_seconds", "max_seconds", "request_timeout", "startup_timeout"):
        if not 0 < getattr(args, name) < math.inf:
            raise BenchError(f"--{name.replace('_', '-')} must be a positive number, got {getattr(args, name)}")
    if not 0 <= args.max_wait_ms < math.inf:
        raise BenchError(f"--max-wait-ms must be >= 0, got {args.max_wait_ms}")
    if args.pause_after_429 != "retry-after":
        try:
            args.pause_after_429 = float(args.pause_after_429)
        except ValueError:
            args.pause_after_429 = math.nan
        if not 0 <= args.pause_after_429 < math.inf:
            raise BenchError("--pause-after-429 must be retry-after or a number of seconds >= 0")
    from pabee.config import is_pabee_folder
    from pabee.onnx import is_onnx_export

    if not Path(args.model).is_dir() or not is_pabee_folder(args.model) or is_onnx_export(args.model):
        raise BenchError(f"--model {args.model} is not a trained pabee run folder (no pabee_config.json)")
    if args.clean is None:
        if not args.attacked.endswith(".jsonl"):
            raise BenchError(f"--attacked {args.attacked} does not end in .jsonl: give --clean FILE too")
        args.clean = args.attacked[: -len(".jsonl")] + ".clean.jsonl"
    for flag, path in (("--attacked", args.attacked), ("--clean", args.clean)):
        if not Path(path).is_file():
            raise BenchError(f"{flag} {path}: no such file")


def load_inputs(args: argparse.Namespace) -> dict:
    """The requests of both input files (``serve_load.load_requests``: parsed and checked like the server does)."""
    out = {}
    for kind in INPUT_KINDS:
        path = args.attacked if kind == "attacked" else args.clean
        out[kind] = load_requests(argparse.Namespace(inputs=path, requests=args.requests))
    return out


def budget_metrics(before: str, after: str) -> dict:
    """The work budget's side of a run from two ``/metrics`` readings: requests refused by it, /predict answers by
    status, and the measured speed, the budget and the pending work at the end."""
    from prometheus_client.parser import text_string_to_metric_families

    def statuses(text: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "pabee_requests_total" and s.labels.get("path") == "/predict":
                    out[s.labels["status"]] = out.get(s.labels["status"], 0.0) + s.value
        return out

    b, a = metric_samples(before), metric_samples(after)
    sb, sa = statuses(before), statuses(after)

    def finite(name: str) -> float | None:
        value = a.get(name)
        return value if value is not None and math.isfinite(value) else None

    return {
        "budget_rejections": int(a.get("pabee_budget_rejections_total", 0) - b.get("pabee_budget_rejections_total", 0)),
        "statuses": {k: int(sa[k] - sb.get(k, 0)) for k in sorted(sa) if sa[k] - sb.get(k, 0)},
        "seconds_per_layer_row": finite("pabee_seconds_per_layer_row"),
        "budget_layer_rows": finite("pabee_work_budget_layer_rows"),
        "pending_layer_rows_after": a.get("pabee_pending_work_layer_rows"),
    }


def load_run(server, requests: list[tuple], level: int, args: argparse.Namespace) -> dict:
    """A warm-up of ``level`` requests (not counted), then one timed closed-loop run, with the server's /metrics
    before and after it and its CPU seconds."""
    pause = args.pause_after_429
    run_load(server.url, requests[:level], level, args.max_seconds, args.request_timeout, pause_after_429=pause)
    before, cpu = server.metrics_text(), cpu_seconds(server.pid)
    result = run_load(server.url, requests, level, args.max_seconds, args.request_timeout, pause_after_429=pause)
    after, cpu_after = server.metrics_text(), cpu_seconds(server.pid)
    result["server"] = {**metrics_delta(before, after), **budget_metrics(before, after)}
    result["server_cpu_s"] = None if cpu is None or cpu_after is None else cpu_after - cpu
    result["refused"] = result["errors"].get("http 429", 0)
    result["failures"] = result["error_count"] - result["refused"]  # 5xx, timeouts, transport errors, ...
    return result


def log(msg: str) -> None:
    print(f"[defence-load] {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def measure(args: argparse.Namespace, data: dict) -> dict:
    """Both servers up; the load runs of every level, round and configuration."""
    common = dict(folder=args.model, backend="torch", patience=args.patience, threads=args.threads,
                  max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, log_level=args.server_log_level)
    specs = [ServerSpec(name="no defence", extra_args=tuple(args.server_arg), **common),
             ServerSpec(name="defence", extra_args=(*args.server_arg, "--max-queue-seconds",
                                                     f"{args.max_queue_seconds:g}"), **common)]
    log_dir = Path(args.work_dir) / "logs-defence" / folder_key(args.model)
    runs = []
    with running_servers(specs, log_dir, args.startup_timeout, log) as servers:
        by_defence = dict(zip(DEFENCES, servers))
        infos = {d: s.info() for d, s in by_defence.items()}
        warm_n, warm_c = (8, 4) if args.quick else SERVER_WARMUP
        for server in servers:
            for kind in INPUT_KINDS:
                run_load(server.url, cycled(*data[kind]["requests"], warm_n), warm_c, args.max_seconds,
                         args.request_timeout, pause_after_429=args.pause_after_429)
        for level in args.concurrency:
            requests = {k: cycled(*data[k]["requests"], requests_per_run(level, args.requests)) for k in INPUT_KINDS}
            for r in range(args.rounds):
                for defence, kind in CONFIGS if r % 2 == 0 else CONFIGS[::-1]:
                    result = load_run(by_defence[defence], requests[kind], level, args)
                    runs.append({"defence": defence, "inputs": kind, "concurrency": level, "round": r + 1, **result})
                    lat = result["latency_ms"]
                    log(f"defence {defence:3s} {kind:8s} c={level:<3d} round {r + 1}: {result['inputs_per_s'] or 0:6.1f} "
                        f"inputs/s, p99 {lat['p99'] or 0:7.1f} ms, exit {result['mean_exit_layer'] or 0:.2f}, "
                        f"{result['ok']} ok / {result['refused']} 429 / {result['failures']} other errors / "
                        f"{result['not_sent']} not sent of {result['planned']}")
    return {"servers": infos, "runs": runs}


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    """This invocation's report."""
    data = load_inputs(args)
    load_start, start = os.getloadavg()[0], time.perf_counter()
    log(f"{args.model} at patience {args.patience}, --max-queue-seconds {args.max_queue_seconds:g}, concurrency "
        f"{args.concurrency}, {args.rounds} round(s)")
    measured = measure(args, data)
    info = measured["servers"]["off"]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "command": script_command(__file__, argv), "cwd": str(Path.cwd()),
        "machine": {**machine_info(), "versions": versions()},
        "load_average": [load_start, os.getloadavg()[0]], "wall_s": time.perf_counter() - start,
        "model": {"path": str(args.model), "model_type": info["model_type"], "num_layers": info["num_layers"],
                  "patience": args.patience, "exit_rule": info["exit_rule"]},
        "inputs": {k: data[k]["source"] for k in INPUT_KINDS},
        "settings": {
            "max_queue_seconds": args.max_queue_seconds, "concurrency": args.concurrency, "rounds": args.rounds,
            "requests": args.requests, "requests_per_level": {str(c): requests_per_run(c, args.requests)
                                                              for c in args.concurrency},
            "max_seconds": args.max_seconds, "request_timeout_s": args.request_timeout,
            "pause_after_429": args.pause_after_429, "threads": args.threads, "max_batch_size": args.max_batch_size,
            "max_wait_ms": args.max_wait_ms, "server_args": args.server_arg, "quick": args.quick,
            "server_log_level": args.server_log_level,
        },
        **measured,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    paths = output_paths(args, "serving-defence", REPO_ROOT)
    return server_benchmark_main("defence_load.py", "serving-defence", paths, args, render_markdown,
                                 lambda: check_settings(args), lambda: run(args, argv),
                                 lambda reports, report: replace_run(reports, report, key=lambda r: r["model"]["path"]),
                                 errors=(BenchError, ServerError), log=log)


if __name__ == "__main__":
    sys.exit(main())
