"""Settings of ``pabee tune RUN_DIR``: each field holds its default and help; :mod:`pabee.cli_args` generates the
flags from them (see :mod:`pabee.cli_tune`).

This module imports neither torch nor transformers (``pabee tune --help`` stays fast).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from .cli import _positive_int
from .settings import comma_strings, max_drop_points, setting
from .tuning import CANDIDATE_KINDS, DEFAULT_MAX_DROP, REGRESSION_THRESHOLDS, TUNE_KINDS
from .validation import number

TUNE = "tune"  # the front end's name in the settings' metadata
SPLITS = ("dev", "heldout")


def comma_numbers(text: str) -> tuple[float, ...]:
    """``"0.05,0.1"`` -> ``(0.05, 0.1)``: finite numbers >= 0."""
    values = []
    for part in text.split(","):
        try:
            value = float(part) if part.strip() else None
        except ValueError:
            value = math.nan
        if value is None:
            continue
        if not (math.isfinite(value) and value >= 0):
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers >= 0, got {text!r}")
        values.append(value)
    if not values:
        raise argparse.ArgumentTypeError("the list is empty")
    return tuple(values)


def _flag(name: str, default, help: str, **kwargs):
    """A ``pabee tune`` flag spelt ``--max-drop``, with ``--max_drop`` as its alias."""
    return setting(default, help=help, flag=f"--{name.replace('_', '-')}", aliases=(f"--{name}",), fronts=(TUNE,),
                   **kwargs)


@dataclass
class TuneSettings:
    """``pabee tune RUN_DIR``: where the run and its data are, the quality budget, the candidates, saving."""

    run_dir: str = setting(help="a folder saved by pabee train (model, tokenizer)", flag="run_dir", fronts=(TUNE,))
    max_drop: float = _flag(
        "max_drop", DEFAULT_MAX_DROP, parse=max_drop_points,
        help="the largest drop of the main metric below full depth, in points (metric x 100), for a faster setting")
    tune_split: str | None = setting(
        None, choices=SPLITS, aliases=("--tune-split",), fronts=(TUNE,),
        help="dev: the task's dev set (its figures are then optimistic); heldout: the training examples pabee train "
             "--tune_split held out (default: heldout when the run has one, else dev)")
    task_name: str | None = setting(
        None, fronts=(TUNE,), help="GLUE task (default: the run's, from pabee_run.json or its evaluation records)")
    data_dir: str | None = setting(
        None, fronts=(TUNE,), help="the task's GLUE folder (default: the run's, else $GLUE_DIR/<task>)")
    train_file: str | None = setting(None, fronts=(TUNE,), help="custom data: the training file (for heldout)")
    validation_file: str | None = setting(None, fronts=(TUNE,), help="custom data: the dev file")
    text_columns: tuple[str, ...] | None = setting(
        None, parse=comma_strings, fronts=(TUNE,), help="custom data: comma-separated text column(s)")
    label_column: str | None = setting(None, parse=str, fronts=(TUNE,),
                                       help="custom data: the label column (default: label; \"\": none)")
    label_list: tuple[str, ...] | None = setting(None, parse=comma_strings, fronts=(TUNE,),
                                                 help="custom data: the labels in id order (default: the model's)")
    regression: bool | None = setting(None, fronts=(TUNE,), help="custom data: the label is a number")
    max_seq_length: int | None = setting(
        None, parse=_positive_int, fronts=(TUNE,),
        help="longest input in tokens (default: the run's, else 128; capped at what the model takes)")
    max_samples: int | None = _flag("max_samples", None, parse=_positive_int,
                                    help="tune on the first N examples of the split only")
    batch_size: int = _flag("batch_size", 32, parse=_positive_int, help="examples per forward pass")
    rules: tuple[str, ...] = setting(
        TUNE_KINDS, parse=comma_strings, fronts=(TUNE,),
        help=f"the kinds of exit rule tried, comma-separated, from {', '.join(CANDIDATE_KINDS)} (default: "
             f"{','.join(TUNE_KINDS)}; layer = static truncation)")
    regression_thresholds: tuple[float, ...] = _flag(
        "regression_thresholds", REGRESSION_THRESHOLDS, parse=comma_numbers,
        help="regression tasks: the thresholds tried with every patience (default: "
             f"{','.join(f'{t:g}' for t in REGRESSION_THRESHOLDS)})")
    dry_run: bool = setting(False, flag="--dry-run", aliases=("--dry_run", "--no-save", "--no_save"), fronts=(TUNE,),
                            help="only print the decision table: change nothing in RUN_DIR")
    no_progress: bool = _flag("no_progress", False, help="no progress bar on stderr")

    def __post_init__(self) -> None:
        number("max_drop", self.max_drop, at_least=0)
        if self.max_drop > 100:
            raise ValueError(f"--max-drop must be a number of points from 0 to 100, got {self.max_drop!r}")
        if self.tune_split is not None and self.tune_split not in SPLITS:
            raise ValueError(f"--tune_split must be one of {', '.join(SPLITS)}, got {self.tune_split!r}")
        unknown = [kind for kind in self.rules if kind not in CANDIDATE_KINDS]
        if unknown or not self.rules:
            raise ValueError(f"--rules must name kinds from {', '.join(CANDIDATE_KINDS)}, got {','.join(self.rules)!r}")
        for size in (self.batch_size, self.max_samples, self.max_seq_length):
            if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
                raise ValueError(f"sizes must be integers >= 1, got {size!r}")
