"""``pabee predict MODEL``: predictions on raw text, streamed to JSON Lines.

``pabee predict`` without a model folder as its first argument (and without ``--input``) keeps the GLUE
``--do_predict`` behaviour of :mod:`pabee.cli`; :func:`is_raw_text_mode` makes that choice.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .cli import _Parser, _positive_int

CHUNK_SIZE = 256  # inputs read, predicted and written at a time: memory stays constant whatever the input size


def is_raw_text_mode(argv: list[str]) -> bool:
    """True for ``predict MODEL ...`` (a positional model folder first) or ``predict ... --input ...``."""
    if not argv or argv[0] != "predict":
        return False
    rest = argv[1:]
    return bool(rest and not rest[0].startswith("-")) or any(a == "--input" or a.startswith("--input=") for a in rest)


def _patience(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--patience must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"--patience must be an integer >= 0, got {text!r}")
    return value


def _exit_rule(text: str):
    from .exit_rules import ExitRule

    try:
        return ExitRule.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--exit_rule: {err}") from None


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by ``pabee predict MODEL`` and ``pabee serve MODEL``: the model and how it runs."""
    p.add_argument("model", metavar="MODEL", help="a folder saved by pabee train (model, tokenizer, exit rule)")
    p.add_argument("--exit_rule", "--exit-rule", type=_exit_rule, default=None,
                   help="KIND:VALUE, e.g. entropy:0.3, confidence:0.9, layer:3, patience:2 "
                        "(default: the exit rule saved with the model)")
    p.add_argument("--patience", type=_patience, default=None, help="shorthand for --exit_rule patience:N")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="onnx: MODEL is a folder written by pabee export, run on ONNX Runtime")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="intra-op CPU threads (default: torch's default; on ONNX Runtime the same rule: "
                        "OMP_NUM_THREADS if set, else one per physical core)")
    p.add_argument("--max_length", "--max-length", type=_positive_int, default=None,
                   help="truncate inputs to this many tokens (default and maximum: the model's limit)")


def predict_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="pabee predict",
        description="Predict labels of raw texts with a saved pabee model; writes JSON Lines "
                    "(index, label, score, probabilities or value, exit_layer, truncated). "
                    "Without MODEL, pabee predict writes GLUE test predictions (see pabee predict --help).",
    )
    add_model_arguments(p)
    p.add_argument("--input", default="-", help="input file, or - for standard input (default)")
    p.add_argument("--output", default="-", help="output JSON Lines file, or - for standard output (default)")
    p.add_argument("--format", choices=("text", "csv", "tsv", "jsonl"), default=None,
                   help="input format (default: from the extension; .csv .tsv .jsonl/.json, else one text per line "
                        "with a tab between the texts of a pair)")
    p.add_argument("--text_columns", "--text-columns", default=None,
                   help="csv/tsv/jsonl: the text column, or two comma-separated columns for pairs "
                        "(default: text, sentence or sentence1,sentence2)")
    p.add_argument("--batch_size", "--batch-size", type=_positive_int, default=32)
    p.add_argument("--no_progress", "--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def load_predictor(args: argparse.Namespace, batch_size: int = 32):
    """A :class:`~pabee.predictor.Predictor` from parsed model arguments (ValueError/OSError on a bad folder)."""
    from .predictor import Predictor

    if args.exit_rule is not None and args.patience is not None:
        raise ValueError("give either --exit_rule or --patience, not both")
    if args.threads is not None and args.backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
    return Predictor.from_pretrained(
        args.model, backend=args.backend, exit_rule=args.exit_rule, patience=args.patience,
        max_length=args.max_length, batch_size=batch_size, threads=args.threads if args.backend == "onnx" else None,
    )


def run_predict(args: argparse.Namespace) -> int:
    """Read, predict and write chunk by chunk; returns the number of inputs predicted."""
    from tqdm.auto import tqdm

    from .text_io import JsonLinesWriter, chunked, detect_format, open_input, read_inputs

    columns = [c.strip() for c in args.text_columns.split(",") if c.strip()] if args.text_columns else None
    fmt = detect_format(args.input, args.format)
    if fmt == "text" and columns:
        raise ValueError("--text_columns applies to csv, tsv and jsonl inputs, not to plain text (use --format)")
    stream = open_input(args.input)  # input and output problems are reported before the model loads
    name = "<stdin>" if args.input in (None, "-") else args.input
    count = 0
    with stream:
        writer = JsonLinesWriter(args.output)
        try:
            predictor = load_predictor(args, args.batch_size)
            with tqdm(desc="predict", unit=" inputs", disable=args.no_progress, file=sys.stderr) as bar:
                for chunk in chunked(read_inputs(stream, fmt, columns, name), CHUNK_SIZE):
                    predictions = predictor.predict(chunk)
                    writer.write(p.to_record(count + i) for i, p in enumerate(predictions))
                    count += len(chunk)
                    bar.update(len(chunk))
        except BaseException:
            writer.discard()
            raise
    writer.commit()
    if count == 0:
        logging.getLogger("pabee").warning("no inputs in %s", name)
    return count


def main(argv: list[str]) -> int:
    """``pabee predict MODEL ...`` (``argv`` without the leading "predict")."""
    args = predict_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        run_predict(args)
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"pabee predict: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pabee predict: interrupted", file=sys.stderr)
        return 130
    return 0
