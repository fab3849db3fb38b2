"""The results report's training methods and extra exit rules on the command line: ``--methods`` (plain and
PABEE, and optionally distill = PABEE's weighting + self-distillation), ``--distill-alpha``,
``--distill-temperature`` and ``--hybrid-rules``, resolved into the :class:`~benchmarks.report_plan.ReportConfig`
fields ``methods``, ``distillation`` and ``hybrid_rules``."""

from __future__ import annotations

import argparse

from .arg_types import float_or_nan, positive_float
from .report_plan import (
    ALL_METHODS,
    DISTILL,
    DISTILL_ALPHA,
    DISTILL_TEMPERATURE,
    HYBRID_RULES,
    METHODS,
    ReportError,
)


def method_list(text: str) -> tuple[str, ...]:
    """"plain,pabee,distill" -> the methods in ALL_METHODS order; plain and PABEE are always part of the report
    (every comparison is with them)."""
    names = {part.strip().lower() for part in text.split(",") if part.strip()}
    unknown = sorted(names - set(ALL_METHODS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method {unknown[0]!r}; choose from {', '.join(ALL_METHODS)}")
    missing = [m for m in METHODS if m not in names]
    if missing:
        raise argparse.ArgumentTypeError(f"the report always has {' and '.join(METHODS)} (every comparison is with "
                                         f"them): add {','.join(missing)}")
    return tuple(m for m in ALL_METHODS if m in names)


def alpha_value(text: str) -> float:
    """A distillation weight in (0, 1] (0 would be PABEE itself)."""
    value = float_or_nan(text)
    if not 0 < value <= 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def add_method_arguments(p: argparse.ArgumentParser) -> None:
    """--methods, --distill-alpha, --distill-temperature and --hybrid-rules."""
    p.add_argument("--methods", type=method_list, default=METHODS, metavar="plain,pabee[,distill]",
                   help=f"the training methods compared (default {','.join(METHODS)}); distill = PABEE's weighting "
                        "+ self-distillation from the last classifier (--distill-alpha, --distill-temperature), "
                        "trained and evaluated like PABEE at the same seeds")
    p.add_argument("--distill-alpha", type=alpha_value, default=None, metavar="ALPHA",
                   help=f"distill's --distillation_alpha (default {DISTILL_ALPHA:g}; part of its runs' settings)")
    p.add_argument("--distill-temperature", type=positive_float, default=None, metavar="T",
                   help=f"distill's --distillation_temperature (default {DISTILL_TEMPERATURE:g})")
    p.add_argument("--hybrid-rules", action="store_true",
                   help="also evaluate the hybrid exit rule (classification: "
                        + ", ".join(f"hybrid:{t}@{c:g}" for t, c in HYBRID_RULES)
                        + ") for every early-exit method; finished runs are evaluated again, not retrained")


def resolve_methods(args: argparse.Namespace) -> dict:
    """The ReportConfig fields ``methods``, ``distillation`` and ``hybrid_rules`` from the flags."""
    if DISTILL not in args.methods and (args.distill_alpha is not None or args.distill_temperature is not None):
        raise ReportError("--distill-alpha and --distill-temperature set the distill method: add --methods "
                          "plain,pabee,distill")
    alpha = DISTILL_ALPHA if args.distill_alpha is None else args.distill_alpha
    temperature = DISTILL_TEMPERATURE if args.distill_temperature is None else args.distill_temperature
    return {"methods": args.methods, "distillation": (alpha, temperature), "hybrid_rules": args.hybrid_rules}
