"""``pabee tune RUN_DIR``: choose and save a trained model's default exit rule (see :mod:`pabee.tune_run`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .cli import _Parser
from .cli_args import add_settings_arguments, typed_values
from .tune_settings import TUNE, TuneSettings


def tune_parser() -> argparse.ArgumentParser:
    """The parser of ``pabee tune``, generated from :class:`~pabee.tune_settings.TuneSettings`."""
    p = _Parser(
        prog="pabee tune",
        description="Choose a trained model's default exit rule: all layers' logits are computed once on the tuning "
                    "split, every patience, entropy and confidence threshold (and regression threshold) is scored "
                    "from them, and the fastest setting (layer speed-up) whose main metric is at most --max-drop "
                    "points below full depth is saved in RUN_DIR/pabee_config.json (decision table: "
                    "RUN_DIR/tuning.json). pabee predict, serve, export and the Python API then use it by default.",
    )
    add_settings_arguments(p, TuneSettings, TUNE)
    return p


def main(argv: list[str]) -> int:
    """``pabee tune RUN_DIR ...`` (``argv`` without the leading "tune")."""
    args = tune_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    try:
        settings = TuneSettings(**typed_values(args, TuneSettings))
        from .tune_run import run_tune, saved_message
        from .tuning import format_tuning

        result, written = run_tune(settings)
    except (ValueError, OSError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"pabee tune: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pabee tune: interrupted (nothing was saved)", file=sys.stderr)
        return 130
    print(format_tuning(result))
    print(saved_message(settings.run_dir, result, written))
    return 0
