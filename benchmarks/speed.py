#!/usr/bin/env python
"""Wall-clock speed of PABEE early exit, measured in one run on the same tokenized examples.

What is timed (``torch.inference_mode``, eval mode, torch threads left at their default):

* ``backbone``: the plain transformers encoder ``model.backbone(...)`` (embeddings, attention mask, every layer,
  its pooler) followed by the model's last linear classifier on the pooled output. This is exactly the computation
  of the wrapper at patience 0, done by transformers' own forward: the reference for the wrapper's overhead.
* ``patience 0``: ``model(..., patience=0)``, the PABEE wrapper at full depth (no early exit).
* ``patience p``: ``model(..., patience=p)``: per-example early exit.

One timed run of a configuration is a full pass over all examples at one batch size (batches made in dataset order,
padded to the longest in the batch; no padding at batch size 1). Configurations take turns on blocks of
``--block-examples`` consecutive examples (A B C on block 1, B C A on block 2, ...), so drift on a shared machine
spreads over all of them while each runs consecutive inputs as in use; at batch size 1 the example-by-example
interleaving is timed too, for comparison. Tokenization is done once, up front, and not timed.

Writes a JSON file with every measurement and a markdown report with the tables, the machine, the command and a
reading of the numbers against the targets (``speed_measure`` times, ``speed_render`` renders
``templates/speed.md.j2``; ``--render-only`` renders the JSON again). Run ``python benchmarks/speed.py --help``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if str(Path(__file__).resolve().parents[1]) not in sys.path:  # the benchmarks package beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402

import torch  # noqa: E402

from benchmarks.machine import machine_info  # noqa: E402
from benchmarks.speed_measure import (  # noqa: E402
    OVERHEAD_TARGET_PCT,
    RATIO_TARGET_BATCH1,
    RATIO_TARGET_BATCHED,
    layer_weights_mib,
    measure,
)
from benchmarks.speed_render import render_markdown  # noqa: E402
from pabee.cli import parse_int_list  # noqa: E402
from pabee.config import is_pabee_folder  # noqa: E402
from pabee.data import DataError, default_model_path, find_glue_dir, read_glue_split  # noqa: E402  # noqa: E402
from pabee.modeling import PabeeForSequenceClassification  # noqa: E402
from pabee.tasks import TaskSpec, get_task  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "vocab.json", "spiece.model")


# ---------------------------------------------------------------------------------------------------- inputs


def load_texts(task: TaskSpec, data_dir: str | None, limit: int) -> tuple[list[tuple[str, str | None]], Path]:
    """The first ``limit`` (first text, second text or None) pairs of the task's first dev split, read by the
    library's GLUE reader from ``data_dir`` (a task folder or the GLUE root; default: the runner's lookup), and
    the file they come from."""
    folder = find_glue_dir(task, data_dir)
    if folder is None:
        raise DataError(f"no GLUE folder found for {task.folder} (give --task-dir or set GLUE_DIR)")
    split = task.dev_splits[0]
    examples = read_glue_split(task, folder, split)[:limit]
    return [(e.text_a, e.text_b) for e in examples], folder / f"{split}.tsv"


def resolve_tokenizer_path(model_path: str, explicit: str | None) -> str:
    """The tokenizer folder: ``explicit``, else the model folder when it has tokenizer files, else the default model."""
    if explicit:
        return explicit
    if any((Path(model_path) / name).is_file() for name in TOKENIZER_FILES):
        return model_path
    return default_model_path()


def tokenize(
    tokenizer, texts, batch_size: int, max_length: int, keep_token_types: bool
) -> list[dict[str, torch.Tensor]]:
    """Consecutive chunks of ``batch_size`` examples, each padded to its longest member (dynamic padding)."""
    batches = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        first = [a for a, _ in chunk]
        second = [b for _, b in chunk] if chunk[0][1] is not None else None
        enc = tokenizer(first, second, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if keep_token_types and "token_type_ids" in enc:
            batch["token_type_ids"] = enc["token_type_ids"]
        batches.append(batch)
    return batches


# ---------------------------------------------------------------------------------------------------- main


def glue_task(text: str) -> TaskSpec:
    try:
        return get_task(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def command_line(argv: list[str]) -> str:
    script = Path(sys.argv[0])
    try:
        script_text = str(script.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        script_text = str(script)
    return shlex.join(["python", script_text, *argv])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Wall-clock speed of PABEE early exit vs the plain backbone, in one interleaved run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", default=None, help="encoder folder or pabee folder (default: embedded MiniLM-L6)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the model's, else MiniLM's)")
    parser.add_argument("--num-labels", type=int, default=2, help="labels of the fresh heads (plain encoders only)")
    parser.add_argument("--task", type=glue_task, default="RTE", help="GLUE task whose first dev split is timed")
    parser.add_argument("--task-dir", default=None,
                        help="the task's GLUE folder, or the GLUE root (default: $GLUE_DIR or ../shared/glue)")
    parser.add_argument("--num-examples", type=int, default=None, help="examples to use (default 256; --quick: 16)")
    parser.add_argument("--patience", type=lambda t: parse_int_list(t, "--patience"), default=[1, 2, 3, 4],
                        help="comma-separated patiences > 0")
    parser.add_argument("--batch-sizes", type=lambda t: parse_int_list(t, "--batch-sizes"), default=[1, 32],
                        help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5; --quick: 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds")
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0, help="seed for the fresh classifiers of a plain encoder")
    parser.add_argument("--output", default=None, help="JSON output (default: docs/speed.json in the repository)")
    parser.add_argument("--markdown", default=None, help="markdown report (default: docs/speed.md in the repository)")
    parser.add_argument("--render-only", action="store_true",
                        help="time nothing: render --markdown again from the JSON report in --output")
    parser.add_argument("--max-contention", type=float, default=0.05,
                        help="a timed round during which other tasks waited for a CPU more than this share of the "
                             "time (Linux CPU pressure) is discarded and run again")
    parser.add_argument("--max-retries", type=int, default=None,
                        help="re-runs of disturbed rounds per batch size (default 3; --quick: 0)")
    parser.add_argument("--quiet-timeout", type=float, default=None,
                        help="before each round wait up to this many seconds for a quiet CPU (default 60; --quick: "
                             "0 = no wait)")
    parser.add_argument("--block-examples", type=int, default=16,
                        help="a configuration runs this many consecutive examples (in whole batches, at least one) "
                             "before the next configuration takes its turn; 1 interleaves batch by batch")
    parser.add_argument("--quick", action="store_true", help="few examples and repeats, for smoke tests")
    return parser


def check_settings(args: argparse.Namespace) -> None:
    """Fill in the --quick-dependent defaults and refuse bad values (SystemExit with the message)."""
    if args.num_examples is None:
        args.num_examples = 16 if args.quick else 256
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.max_retries is None:
        args.max_retries = 0 if args.quick else 3
    if args.quiet_timeout is None:
        args.quiet_timeout = 0.0 if args.quick else 60.0
    if args.max_retries < 0 or args.quiet_timeout < 0 or not 0 <= args.max_contention <= 1:
        raise SystemExit("--max-retries and --quiet-timeout must be >= 0, --max-contention in [0, 1]")
    if args.num_examples < 1 or args.repeats < 1 or args.warmup < 0 or args.max_seq_length < 2:
        raise SystemExit("--num-examples, --repeats must be >= 1, --warmup >= 0, --max-seq-length >= 2")
    if any(p < 1 for p in args.patience):
        raise SystemExit("--patience values must be >= 1 (patience 0, full depth, is always measured)")
    if any(b < 1 for b in args.batch_sizes):
        raise SystemExit("--batch-sizes must be >= 1")
    if args.block_examples < 1:
        raise SystemExit("--block-examples must be >= 1")
    args.patience = sorted(set(args.patience))
    args.batch_sizes = sorted(set(args.batch_sizes))


def log(msg: str) -> None:
    print(f"[speed] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    out_json = Path(args.output) if args.output else REPO_ROOT / "docs" / "speed.json"
    out_md = Path(args.markdown) if args.markdown else REPO_ROOT / "docs" / "speed.md"
    if args.render_only:
        try:
            report = json.loads(out_json.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"cannot read {out_json}: {err}") from None
        out_md.write_text(render_markdown(report), encoding="utf-8")
        log(f"rendered {out_md} from {out_json}")
        return 0
    check_settings(args)

    load_start = os.getloadavg()[0]
    model_path = args.model or default_model_path()
    try:
        texts, tsv = load_texts(args.task, args.task_dir, args.num_examples)
    except DataError as err:
        raise SystemExit(str(err)) from None
    if len(texts) < args.num_examples:
        log(f"{tsv} has only {len(texts)} examples (asked for {args.num_examples})")

    from transformers import AutoTokenizer

    fine_tuned = is_pabee_folder(model_path)
    torch.manual_seed(args.seed)
    if fine_tuned:
        model = PabeeForSequenceClassification.from_pretrained(model_path)
    else:
        model = PabeeForSequenceClassification.from_pretrained(
            model_path, num_labels=args.num_labels, local_files_only=True
        )
    model.eval()
    tok_path = resolve_tokenizer_path(model_path, args.tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(tok_path)
    if len(tokenizer) > model.config.vocab_size:
        raise SystemExit(
            f"tokenizer {tok_path} has {len(tokenizer)} tokens but the model's vocabulary is {model.config.vocab_size}"
        )
    keep_types = model.driver.uses_token_type_ids
    batches_by_size = {
        bs: tokenize(tokenizer, texts, bs, args.max_seq_length, keep_types) for bs in args.batch_sizes
    }
    lengths = [
        int(b["attention_mask"].sum()) for b in tokenize(tokenizer, texts, 1, args.max_seq_length, False)
    ]
    log(
        f"model {model_path} ({'fine-tuned pabee folder' if fine_tuned else 'fresh heads'}), L={model.num_layers}; "
        f"{len(texts)} examples from {tsv}; batch sizes {args.batch_sizes}; patience 0 + {args.patience}"
    )

    with torch.inference_mode():
        measured = measure(args, model, batches_by_size, log)

    config = model.config
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "command": command_line(argv),
        "argv": argv,
        "cwd": str(Path.cwd()),
        "machine": machine_info(),
        "load_average": [load_start, os.getloadavg()[0]],
        "model": {
            "path": str(model_path),
            "fine_tuned": fine_tuned,
            "kind": "fine-tuned pabee folder (saved by save_pretrained)"
            if fine_tuned
            else f"pretrained backbone with freshly initialised classifiers (seed {args.seed})",
            "model_type": config.model_type,
            "backbone_class": type(model.backbone).__name__,
            "pooling": model.pabee_config.pooling,
            "num_layers": model.num_layers,
            "layer_weights_mib": layer_weights_mib(model),
            "hidden_size": getattr(config, "hidden_size", getattr(config, "dim", None)),
            "num_labels": model.num_labels,
            "attn_implementation": getattr(config, "_attn_implementation", None),
            "tokenizer": str(tok_path),
        },
        "data": {
            "tsv": str(tsv),
            "task": args.task.folder,
            "split": args.task.dev_splits[0],
            "num_examples": len(texts),
            "max_seq_length": args.max_seq_length,
            "mean_tokens": sum(lengths) / len(lengths),
            "max_tokens": max(lengths),
        },
        "settings": {
            "patience": args.patience,
            "batch_sizes": args.batch_sizes,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "seed": args.seed,
            "quick": args.quick,
            "max_contention": args.max_contention,
            "max_retries": args.max_retries,
            "quiet_timeout_s": args.quiet_timeout,
            "block_examples": args.block_examples,
        },
        "targets": {
            "overhead_pct_max": OVERHEAD_TARGET_PCT,
            "ratio_min_batch_size_1": RATIO_TARGET_BATCH1,
            "ratio_min_batched": RATIO_TARGET_BATCHED,
        },
        **measured,
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown = render_markdown(report)
    out_md.write_text(markdown, encoding="utf-8")
    log(f"wrote {out_json} and {out_md}")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
