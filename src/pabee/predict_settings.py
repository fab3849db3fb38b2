"""Settings of the saved-model front ends: ``pabee predict MODEL`` (raw text) and, shared with ``pabee serve``, the
model and how it runs. Each field holds its default and help; :mod:`pabee.cli_args` generates the flags from them.

This module imports neither torch nor transformers (``pabee predict MODEL --help`` stays fast).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .cli import _positive_int, int_at_least
from .settings import PREDICT_TEXT, SERVE, setting

if TYPE_CHECKING:
    from .exit_rules import ExitRule

SAVED_MODEL = (PREDICT_TEXT, SERVE)


patience_count = int_at_least(0, "--patience")  # --patience: an integer >= 0


def exit_rule_text(text: str) -> ExitRule:
    """``--exit_rule KIND:VALUE`` -> :class:`pabee.exit_rules.ExitRule`."""
    from .exit_rules import ExitRule

    try:
        return ExitRule.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--exit_rule: {err}") from None


@dataclass
class ModelSettings:
    """A saved pabee model and how it runs (``pabee predict MODEL`` and ``pabee serve MODEL``)."""

    model: str = setting(help="a folder saved by pabee train (model, tokenizer, exit rule)", flag="model",
                         fronts=SAVED_MODEL)
    exit_rule: ExitRule | None = setting(
        None, parse=exit_rule_text, aliases=("--exit-rule",), fronts=SAVED_MODEL,
        help="KIND:VALUE, e.g. entropy:0.3, confidence:0.9, layer:3, patience:2, hybrid:2@0.9 (default: the exit "
             "rule saved with the model)")
    patience: int | None = setting(None, parse=patience_count, fronts=SAVED_MODEL,
                                   help="shorthand for --exit_rule patience:N")
    backend: str = setting("torch", choices=("torch", "onnx"), fronts=SAVED_MODEL,
                           help="onnx: MODEL is a folder written by pabee export, run on ONNX Runtime")
    threads: int | None = setting(
        None, parse=_positive_int, fronts=SAVED_MODEL,
        help="intra-op CPU threads (default: torch's default; on ONNX Runtime the same rule: OMP_NUM_THREADS if "
             "set, else one per physical core)")
    max_length: int | None = setting(
        None, parse=_positive_int, aliases=("--max-length",), fronts=SAVED_MODEL,
        help="truncate inputs to this many tokens (default and maximum: the model's limit)")

    def __post_init__(self) -> None:
        if self.exit_rule is not None and self.patience is not None:
            raise ValueError("give either --exit_rule or --patience, not both")


@dataclass
class PredictTextSettings(ModelSettings):
    """``pabee predict MODEL``: where the texts come from, where the JSON Lines go, and the batch size."""

    input: str = setting("-", fronts=(PREDICT_TEXT,), help="input file, or - for standard input (default)")
    output: str = setting("-", fronts=(PREDICT_TEXT,),
                          help="output JSON Lines file, or - for standard output (default)")
    format: str | None = setting(
        None, choices=("text", "csv", "tsv", "jsonl"), fronts=(PREDICT_TEXT,),
        help="input format (default: from the extension; .csv .tsv .jsonl/.json, else one text per line with a tab "
             "between the texts of a pair)")
    text_columns: str | None = setting(
        None, aliases=("--text-columns",), fronts=(PREDICT_TEXT,),
        help="csv/tsv/jsonl: the text column, or two comma-separated columns for pairs (default: text, sentence "
             "or sentence1,sentence2)")
    batch_size: int = setting(32, parse=_positive_int, aliases=("--batch-size",), fronts=(PREDICT_TEXT,),
                              help="inputs per model call")
    no_progress: bool = setting(False, aliases=("--no-progress",), fronts=(PREDICT_TEXT,),
                                help="no progress bar on stderr")
