#!/usr/bin/env python
"""``pabee serve`` under load: throughput, latency, batching and exit layers with early exit and at full depth, on
torch and on ONNX Runtime, against the same model's offline throughput; and whether the server's memory stays flat.

For every ``--model`` and backend two servers run side by side on loopback: early exit (``--patience P``) and full
depth (``--patience 0``), both with ``--threads``, ``--max-batch-size`` and ``--max-wait-ms``. A bounded asyncio
client (httpx) sends one input per request (a dev pair ``["a", "b"]``, or a line of ``--inputs FILE.jsonl``),
cycling through the inputs, at each ``--concurrency`` level; the runs alternate between the two servers, ``--rounds``
times per level (``serve_load_measure``; client: ``serve_load_client``; processes and exports:
``serve_load_server``).

Early exit is ``--patience P`` (one value, or one per ``--model``); without it, the patience saved with the model
when it is > 0, else the run stops and asks for ``--patience``. A load run sends ``--requests`` requests (half of it
at concurrency 1, at least 8 x the concurrency) or stops sending after ``--max-seconds``. The dev inputs are found
like ``pabee train`` finds GLUE: ``--task-dir``, ``$GLUE_DIR``, then ``../shared/glue`` from the working directory.
Each run adds (or replaces) its models' sections of ``docs/serving.json`` and renders
``docs/serving.md`` from all of them (``serve_load_render``; ``--render-only`` renders again without measuring).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # the benchmarks package beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import REPO_ROOT, machine_info, script_command, script_environment  # noqa: E402

script_environment()  # before transformers is imported

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

from benchmarks.pages import output_paths, server_benchmark_main  # noqa: E402
from benchmarks.serve_load_measure import measure_backend, requests_at  # noqa: E402
from benchmarks.serve_load_render import render_markdown  # noqa: E402
from benchmarks.serve_load_server import ServerError, add_server_arguments  # noqa: E402
from benchmarks.speed import glue_task, load_texts  # noqa: E402
from pabee.cli import _Parser, int_at_least, parse_int_list  # noqa: E402
from pabee.data import DataError  # noqa: E402

BACKENDS = ("torch", "onnx")
VERSIONED = ("pabee", "onnxruntime", "httpx", "fastapi", "uvicorn", "prometheus-client", "tokenizers")
DEFAULT_WORK_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pabee-serve-load"


class BenchError(Exception):
    """Bad input: reported in one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="serve_load.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                description="Load pabee serve (early exit vs full depth, torch and ONNX) and write docs/serving.md.")
    positive = int_at_least(1)
    p.add_argument("--model", action="append", default=[], help="a trained pabee run folder (repeatable: a section "
                   "per model)")
    p.add_argument("--patience", default=None, help="early-exit patience: one for every model or one per --model, "
                   "comma-separated (default: the patience saved with the model, when it is > 0)")
    p.add_argument("--backends", default="torch,onnx", help="comma-separated: torch, onnx (an export is made once "
                   "into --work-dir and reused)")
    p.add_argument("--concurrency", type=lambda t: parse_int_list(t, "--concurrency"), default=None,
                   help="concurrency levels (default 1,4,16,64; --quick: 1,4)")
    p.add_argument("--rounds", type=positive, default=None, help="load runs per server and level, alternating "
                   "full depth / early exit; also offline timing rounds (default 2; --quick: 1)")
    p.add_argument("--requests", type=positive, default=None, help="requests per load run (default 400; --quick: "
                   "16); half at concurrency 1, at least 8 x the concurrency")
    p.add_argument("--max-seconds", type=float, default=180.0, help="a load run stops sending after this long")
    add_server_arguments(p, "every pabee serve", threads_help="pabee serve --threads, and the offline baseline's")
    p.add_argument("--task", type=glue_task, default="RTE", help="GLUE task whose dev inputs are sent")
    p.add_argument("--task-dir", default=None, help="the task's GLUE folder or the GLUE root (default: $GLUE_DIR "
                   "or ../shared/glue)")
    p.add_argument("--inputs", default=None, help="JSON Lines file instead of the dev set: each line is the "
                   "\"inputs\" of one request (a text, a pair [a, b] or a batch)")
    p.add_argument("--memory-requests", type=int_at_least(0), default=None, help="requests of the memory run on "
                   "the first model's torch early-exit server (0: none; default 10000; --quick: 0)")
    p.add_argument("--memory-concurrency", type=positive, default=16)
    p.add_argument("--memory-max-seconds", type=float, default=3600.0)
    p.add_argument("--rss-interval", type=float, default=0.5, help="seconds between RSS samples")
    p.add_argument("--work-dir", default=str(DEFAULT_WORK_DIR), help="ONNX exports and server logs")
    p.add_argument("--output", default=None, help="JSON report (default docs/serving.json; --quick: a temporary "
                   "folder)")
    p.add_argument("--markdown", default=None, help="the page (default docs/serving.md; --quick: beside --output)")
    p.add_argument("--render-only", action="store_true", help="measure nothing: render --markdown from --output")
    p.add_argument("--quick", action="store_true", help="a smoke run: 16 requests, concurrency 1 and 4, one round, "
                   "no memory run, output in a temporary folder")
    return p


def check_settings(args: argparse.Namespace) -> None:
    """Fill in the --quick-dependent defaults and refuse bad values (BenchError)."""
    quick = args.quick
    args.concurrency = sorted(set(args.concurrency or ([1, 4] if quick else [1, 4, 16, 64])))
    args.rounds = args.rounds or (1 if quick else 2)
    args.requests = args.requests or (16 if quick else 400)
    if args.memory_requests is None:
        args.memory_requests = 0 if quick else 10000
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not args.model:
        raise BenchError("give --model RUN_DIR (a trained pabee run folder; repeatable)")
    if not args.backends or any(b not in BACKENDS for b in args.backends):
        raise BenchError(f"--backends must list some of {', '.join(BACKENDS)}, got {','.join(args.backends)!r}")
    if any(c < 1 for c in args.concurrency):
        raise BenchError("--concurrency levels must be >= 1")
    for name in ("max_seconds", "request_timeout", "max_wait_ms", "memory_max_seconds", "rss_interval",
                 "startup_timeout"):
        if not getattr(args, name) > 0 and not (name == "max_wait_ms" and getattr(args, name) == 0):
            raise BenchError(f"--{name.replace('_', '-')} must be > 0")
    from pabee.config import is_pabee_folder
    from pabee.onnx import is_onnx_export

    for folder in args.model:
        if not Path(folder).is_dir() or not is_pabee_folder(folder) or is_onnx_export(folder):
            raise BenchError(f"--model {folder} is not a trained pabee run folder (no pabee_config.json, or an ONNX "
                             "export: give the run folder it came from)")
    args.patiences = resolve_patiences(args.model, args.patience)


def resolve_patiences(models: list[str], given: str | None) -> list[int]:
    """The early-exit patience of every model: ``--patience`` (one for all, or one per model), else the patience
    saved with the model; BenchError when neither gives one >= 1."""
    if given is not None:
        try:
            values = parse_int_list(given, "--patience")
        except argparse.ArgumentTypeError as err:
            raise BenchError(str(err)) from None
        if len(values) not in (1, len(models)):
            raise BenchError(f"--patience has {len(values)} values for {len(models)} models: give one, or one per "
                             "--model")
        if any(v < 1 for v in values):
            raise BenchError("--patience must be >= 1 (full depth, patience 0, is always measured)")
        return values * len(models) if len(values) == 1 else values
    from pabee.config import PabeeConfig
    from pabee.predictor import saved_exit_rule

    out = []
    for folder in models:
        rule = saved_exit_rule(PabeeConfig.load(folder))
        if rule.kind != "patience" or int(rule.value) < 1:
            raise BenchError(f"{folder} saves no early-exit patience (its exit rule: {rule}): give --patience P")
        out.append(int(rule.value))
    return out


def load_requests(args: argparse.Namespace) -> dict:
    """The requests' "inputs" values (cycled through by every load run), how many inputs each holds, and the inputs
    of the offline baseline (those of the first --requests requests)."""
    from pabee.serving.app import ApiError, parse_inputs

    if args.inputs:
        values = []
        try:
            with open(args.inputs, encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            values.append(json.loads(line))
                        except json.JSONDecodeError as err:
                            raise BenchError(f"{args.inputs}:{number}: not JSON ({err.msg})") from None
        except OSError as err:
            raise BenchError(f"cannot read --inputs {args.inputs}: {err.strerror}") from None
        source = {"kind": "file", "path": str(Path(args.inputs).resolve())}
    else:
        try:
            pairs, tsv = load_texts(args.task, args.task_dir, sys.maxsize)
        except DataError as err:
            raise BenchError(str(err)) from None
        values = [[a, b] if b is not None else a for a, b in pairs]
        source = {"kind": "glue", "task": args.task.folder, "path": str(tsv)}
    if not values:
        raise BenchError(f"no inputs in {source['path']}")
    parsed = []
    for i, value in enumerate(values):
        try:
            parsed.append(parse_inputs(value))
        except ApiError as err:
            raise BenchError(f"{source['path']}: request {i + 1}: {err.message}") from None
    offline = [x for items, _ in parsed[: args.requests] for x in items]
    return {
        "requests": (values, [len(items) for items, _ in parsed], [single for _, single in parsed]),
        "offline_inputs": offline,
        "source": {**source, "num_requests": len(values), "num_inputs": sum(len(items) for items, _ in parsed)},
    }


def log(msg: str) -> None:
    print(f"[serve-load] {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def versions() -> dict:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    """Every model on every backend; the report of this invocation."""
    data = load_requests(args)
    load_start, start = os.getloadavg()[0], time.perf_counter()
    log(f"{len(args.model)} model(s), backends {args.backends}, concurrency {args.concurrency}, {args.rounds} "
        f"round(s), {data['source']['num_requests']} distinct requests from {data['source']['path']}")
    models, memory = [], None
    for index, (run_dir, patience) in enumerate(zip(args.model, args.patiences)):
        section = {"path": str(run_dir), "patience": patience, "backends": {}}
        for backend in args.backends:
            wanted = args.memory_requests if index == 0 and backend == "torch" else 0
            measured = measure_backend(run_dir, backend, patience, data, args, log, wanted)
            if measured["memory"] is not None:
                memory = {"model": str(run_dir), **measured["memory"]}
            del measured["memory"]
            section["backends"][backend] = measured
        info = next(iter(section["backends"].values()))["servers"]["early_exit"]
        section.update(model_type=info["model_type"], num_layers=info["num_layers"], labels=info["labels"])
        models.append(section)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "command": script_command(__file__, argv), "cwd": str(Path.cwd()),
        "machine": {**machine_info(), "versions": versions()},
        "load_average": [load_start, os.getloadavg()[0]], "wall_s": time.perf_counter() - start,
        "inputs": data["source"],
        "settings": {
            "backends": args.backends, "concurrency": args.concurrency, "rounds": args.rounds,
            "requests": args.requests, "requests_per_level": {str(c): requests_at(c, args.requests)
                                                              for c in args.concurrency},
            "max_seconds": args.max_seconds, "request_timeout_s": args.request_timeout, "threads": args.threads,
            "max_batch_size": args.max_batch_size, "max_wait_ms": args.max_wait_ms, "server_args": args.server_arg,
            "server_log_level": args.server_log_level, "memory_requests": args.memory_requests,
            "memory_concurrency": args.memory_concurrency, "rss_interval_s": args.rss_interval, "quick": args.quick,
        },
        "models": models, "memory": memory,
    }


def merge(reports: dict, report: dict) -> dict:
    """Add this invocation's report; earlier sections of the same models are dropped (and invocations left
    without a model, with their memory run when its model was re-measured)."""
    paths = {m["path"] for m in report["models"]}
    kept = []
    for old in reports.get("runs", []):
        old["models"] = [m for m in old["models"] if m["path"] not in paths]
        if old.get("memory") and old["memory"]["model"] in paths:
            old["memory"] = None
        if old["models"]:
            kept.append(old)
    return {"benchmark": "serving", "runs": [*kept, report]}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    paths = output_paths(args, "serving", REPO_ROOT)
    return server_benchmark_main("serve_load.py", "serving", paths, args, render_markdown,
                                 lambda: check_settings(args), lambda: run(args, argv),
                                 merge,
                                 errors=(BenchError, ServerError), log=log)


if __name__ == "__main__":
    sys.exit(main())
