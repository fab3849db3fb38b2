"""``pabee predict MODEL``: predictions on raw text, streamed to JSON Lines.

``pabee predict`` without a model folder as its first argument (and without ``--input``) keeps the GLUE
``--do_predict`` behaviour of :mod:`pabee.cli`; :func:`is_raw_text_mode` makes that choice.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .cli import _Parser
from .cli_args import add_settings_arguments, typed_values
from .predict_settings import ModelSettings, PredictTextSettings
from .settings import PREDICT_TEXT, default_of

CHUNK_SIZE = 256  # inputs read, predicted and written at a time: memory stays constant whatever the input size


def is_raw_text_mode(argv: list[str]) -> bool:
    """True for ``predict MODEL ...`` (a positional model folder first) or ``predict ... --input ...``."""
    if not argv or argv[0] != "predict":
        return False
    rest = argv[1:]
    return bool(rest and not rest[0].startswith("-")) or any(a == "--input" or a.startswith("--input=") for a in rest)


def add_model_arguments(p: argparse.ArgumentParser, front: str = PREDICT_TEXT) -> None:
    """Arguments shared by ``pabee predict MODEL`` and ``pabee serve MODEL``: the model and how it runs (the fields
    of :class:`~pabee.predict_settings.ModelSettings`)."""
    add_settings_arguments(p, ModelSettings, front)


def predict_parser() -> argparse.ArgumentParser:
    """The parser of ``pabee predict MODEL``, generated from :class:`~pabee.predict_settings.PredictTextSettings`."""
    p = _Parser(
        prog="pabee predict",
        description="Predict labels of raw texts with a saved pabee model; writes JSON Lines "
                    "(index, label, score, probabilities or value, exit_layer, truncated). "
                    "Without MODEL, pabee predict writes GLUE test predictions (see pabee predict --help).",
    )
    add_settings_arguments(p, PredictTextSettings, PREDICT_TEXT)
    return p


def load_predictor(args: ModelSettings, batch_size: int | None = None):
    """A :class:`~pabee.predictor.Predictor` from model settings (ValueError/OSError on a bad folder); batch_size
    defaults to ``pabee predict --batch_size``'s."""
    from .predictor import Predictor

    if batch_size is None:
        batch_size = default_of(PredictTextSettings, "batch_size")
    if args.threads is not None and args.backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
    return Predictor.from_pretrained(
        args.model, backend=args.backend, exit_rule=args.exit_rule, patience=args.patience,
        max_length=args.max_length, batch_size=batch_size, threads=args.threads if args.backend == "onnx" else None,
    )


def run_predict(args: PredictTextSettings) -> int:
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
        run_predict(PredictTextSettings(**typed_values(args, PredictTextSettings)))
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
