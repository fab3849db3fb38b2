#!/usr/bin/env python
"""pabee on ONNX Runtime against torch and against a plain single-graph ONNX export, in one interleaved run per
model, on the same tokenized dev examples.

Configurations (every one at batch sizes 1 and 32 by default):

* ``torch pP``: ``PabeeForSequenceClassification`` at full depth (P=0) and each patience.
* ``onnx-full fp32|int8``: the whole network at full depth in one ONNX graph (embeddings, every layer, the last
  classifier: :func:`pabee.onnx.export.export_full_depth_graph`), fp32 and dynamic int8: the plain export a user
  would deploy instead of early exit.
* ``pabee-onnx fp32|int8 pP``: the ``pabee export`` folder on ONNX Runtime (:class:`pabee.onnx.PabeeOnnxModel`)
  at full depth and each patience.

Every configuration runs the same batches (consecutive dev examples, padded to the longest in the batch); they take
turns on blocks of ``--block-examples`` consecutive examples (``pabee.timing.time_interleaved_batches``, rounds
disturbed by other processes re-run, as in ``benchmarks/speed.py``). Reported: the task metric, mean exit layer,
examples per second, and the speed-up against torch full depth and against the plain ONNX export of the same
precision. Each run adds (or replaces) its model's section of ``docs/runtime.json`` and renders
``docs/runtime.md`` from all sections (``--render-only`` renders again without timing).
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
import tempfile  # noqa: E402

import torch  # noqa: E402

from benchmarks.machine import machine_info, script_command  # noqa: E402
from benchmarks.pages import PageError, read_reports, replace_run, write_page, write_reports  # noqa: E402
from benchmarks.runtime_measure import export_all, measure  # noqa: E402
from benchmarks.runtime_render import render_markdown  # noqa: E402
from benchmarks.speed import glue_task  # noqa: E402
from pabee.cli import parse_int_list  # noqa: E402
from pabee.config import is_pabee_folder  # noqa: E402
from pabee.data import (  # noqa: E402
    DataError,
    find_glue_dir,  # noqa: E402
    read_glue_split,
)
from pabee.features import tokenize_examples  # noqa: E402
from pabee.modeling import PabeeForSequenceClassification  # noqa: E402
from pabee.onnx.runtime import shared_cpu_arena  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
RTE_DEV_SIZE = 277


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="pabee on ONNX Runtime vs torch vs a plain single-graph ONNX export (fp32 and int8), one "
                    "interleaved run per model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", default=None, help="a fine-tuned pabee run folder (model and tokenizer)")
    parser.add_argument("--task", type=glue_task, default="RTE", help="GLUE task whose first dev split is used")
    parser.add_argument("--task-dir", default=None,
                        help="the task's GLUE folder, or the GLUE root (default: $GLUE_DIR or ../shared/glue)")
    parser.add_argument("--max-examples", type=int, default=None,
                        help=f"first N dev examples (default {RTE_DEV_SIZE}, all of RTE dev; --quick: 16)")
    parser.add_argument("--patience", type=lambda t: parse_int_list(t, "--patience"), default=[1, 2, 3, 4],
                        help="comma-separated patiences > 0 (full depth is always measured)")
    parser.add_argument("--batch-sizes", type=lambda t: parse_int_list(t, "--batch-sizes"), default=[1, 32])
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads of torch and of every ONNX Runtime session (default: torch's)")
    parser.add_argument("--no-spinning", action="store_true",
                        help="ONNX Runtime worker threads that never spin (session.intra_op.allow_spinning=0), for "
                             "every ONNX session alike (default: they spin during a run and stop at its end)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3; --quick: 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds")
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--block-examples", type=int, default=16,
                        help="a configuration runs this many consecutive examples before the next takes its turn")
    parser.add_argument("--max-contention", type=float, default=0.05,
                        help="a round during which other tasks waited for a CPU more than this share is re-run")
    parser.add_argument("--max-retries", type=int, default=None, help="re-runs of disturbed rounds (default 3; "
                        "--quick: 0)")
    parser.add_argument("--quiet-timeout", type=float, default=None,
                        help="before each round wait up to this many seconds for a quiet CPU (default 60; --quick: 0)")
    parser.add_argument("--export-dir", default=None,
                        help="where the four ONNX artifacts are written (default: a temporary folder, removed)")
    parser.add_argument("--output", default=None, help="JSON report (default: docs/runtime.json)")
    parser.add_argument("--markdown", default=None, help="markdown page (default: docs/runtime.md)")
    parser.add_argument("--render-only", action="store_true", help="time nothing: render --markdown from --output")
    parser.add_argument("--quick", action="store_true", help="few examples, one round: a smoke test")
    return parser


def check_settings(args: argparse.Namespace) -> None:
    """Fill in the --quick-dependent defaults and refuse bad values (SystemExit with the message)."""
    if args.max_examples is None:
        args.max_examples = 16 if args.quick else RTE_DEV_SIZE
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.max_retries is None:
        args.max_retries = 0 if args.quick else 3
    if args.quiet_timeout is None:
        args.quiet_timeout = 0.0 if args.quick else 60.0
    if args.model is None:
        raise SystemExit("give --model, a fine-tuned pabee run folder (e.g. runs/minilm-rte from the README's job)")
    if not is_pabee_folder(args.model):
        raise SystemExit(f"{args.model} is not a fine-tuned pabee folder (no pabee_config.json)")
    if args.max_examples < 1 or args.repeats < 1 or args.warmup < 0 or args.block_examples < 1:
        raise SystemExit("--max-examples, --repeats and --block-examples must be >= 1, --warmup >= 0")
    if args.max_retries < 0 or args.quiet_timeout < 0 or not 0 <= args.max_contention <= 1:
        raise SystemExit("--max-retries and --quiet-timeout must be >= 0, --max-contention in [0, 1]")
    if any(p < 1 for p in args.patience) or any(b < 1 for b in args.batch_sizes):
        raise SystemExit("--patience values must be >= 1 and --batch-sizes >= 1")
    if args.threads is not None and args.threads < 1:
        raise SystemExit("--threads must be >= 1")
    args.patience = sorted(set(args.patience))
    args.batch_sizes = sorted(set(args.batch_sizes))


def command_line(argv: list[str]) -> str:
    """The command that regenerates a run: this script (relative to the working directory when inside it)."""
    return script_command(__file__, argv)


def log(msg: str) -> None:
    print(f"[runtime] {msg}", file=sys.stderr, flush=True)


def run_model(args: argparse.Namespace, argv: list[str]) -> dict:
    """One model: export, tokenize, time. Returns its report."""
    from transformers import AutoTokenizer

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    load_start = os.getloadavg()[0]
    folder = find_glue_dir(args.task, args.task_dir)
    if folder is None:
        raise SystemExit(f"no GLUE folder found for {args.task.folder} (give --task-dir or set GLUE_DIR)")
    split = args.task.dev_splits[0]
    try:
        examples = read_glue_split(args.task, folder, split)[: args.max_examples]
    except DataError as err:
        raise SystemExit(str(err)) from None
    model = PabeeForSequenceClassification.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    features = tokenize_examples(tokenizer, args.task, examples, args.max_seq_length)
    log(f"model {args.model} ({model.config.model_type}, L={model.num_layers}); {len(features)} examples of "
        f"{folder / split}.tsv; batch sizes {args.batch_sizes}; patience 0 + {args.patience}; {args.threads} threads")
    with tempfile.TemporaryDirectory(prefix="pabee-runtime-") as tmp:
        exports = export_all(args.model, Path(args.export_dir or tmp), log)
        with torch.inference_mode():
            measured = measure(args, model, args.task, features, tokenizer.pad_token_id or 0, exports, log)
    import onnxruntime

    lengths = [len(ids) for ids in features.input_ids]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "command": command_line(argv),
        "cwd": str(Path.cwd()),
        "machine": {**machine_info(), "onnxruntime_version": onnxruntime.__version__},
        "load_average": [load_start, os.getloadavg()[0]],
        "model": {
            "path": str(args.model), "model_type": model.config.model_type, "num_layers": model.num_layers,
            "num_labels": model.num_labels, "pooling": model.pabee_config.pooling,
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
        },
        "exports": {"seconds": exports["seconds"], "mib": exports["mib"], "int8_settings": exports["int8_settings"]},
        "data": {"tsv": str(folder / f"{split}.tsv"), "task": args.task.folder, "split": split,
                 "num_examples": len(features), "max_seq_length": args.max_seq_length,
                 "mean_tokens": sum(lengths) / len(lengths), "max_tokens": max(lengths),
                 "main_metric": args.task.main_metric},
        "settings": {"patience": args.patience, "batch_sizes": args.batch_sizes, "threads": args.threads,
                     "onnx_spinning": not args.no_spinning, "onnx_shared_arena": shared_cpu_arena(),
                     "repeats": args.repeats, "warmup": args.warmup, "quick": args.quick,
                     "block_examples": args.block_examples, "max_contention": args.max_contention,
                     "max_retries": args.max_retries, "quiet_timeout_s": args.quiet_timeout},
        **measured,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    out_json = Path(args.output) if args.output else REPO_ROOT / "docs" / "runtime.json"
    out_md = Path(args.markdown) if args.markdown else REPO_ROOT / "docs" / "runtime.md"
    try:
        reports = read_reports(out_json, "runtime")
    except PageError as err:
        raise SystemExit(str(err)) from None
    if not args.render_only:
        check_settings(args)
        reports = replace_run(reports, run_model(args, argv), key=lambda r: r["model"]["path"])
        write_reports(out_json, reports, indent=2)
    if not reports["runs"]:
        raise SystemExit(f"{out_json} holds no runs to render")
    write_page(out_md, render_markdown(reports))
    log(f"wrote {out_md}" + ("" if args.render_only else f" and {out_json}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
