"""argparse value types shared by the benchmark scripts' command lines (a bad value -> ``ArgumentTypeError``, which
argparse reports in one line)."""

from __future__ import annotations

import argparse
import math


def float_or_nan(text: str) -> float:
    """``text`` as a float, NaN when it is not a number (so one range test rejects both)."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = float_or_nan(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = float_or_nan(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value
