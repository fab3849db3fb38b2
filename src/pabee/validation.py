"""Checks of the numbers in TrainSettings and RunSettings, run when the settings are built.

Every message names the ``pabee`` command-line flag (the settings' field names are the flag names), so the CLI
front ends, which only map their arguments onto these dataclasses, report a bad value in one line before any work
starts, and Python users get the same message as a ValueError.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

SEED_MAX = 2**32 - 1  # numpy's seed range, which transformers.set_seed uses too
SAMPLING_STRATEGIES = ("group_by_length", "random")
BACKENDS = ("torch", "onnx")  # evaluation backends (pabee.eval_models)


def integer(flag: str, value: object, minimum: int, *, hint: str = "") -> int:
    """``value`` as an int when it is a whole number >= ``minimum``; else ValueError naming ``--flag``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"--{flag} must be an integer >= {minimum}{hint}, got {value!r}")
    return int(value)


def number(flag: str, value: object, *, above: float | None = None, at_least: float | None = None,
           below: float | None = None, at_most: float | None = None) -> float:
    """``value`` as a finite float within the given bounds; else ValueError naming ``--flag``."""
    bounds = []
    if above is not None:
        bounds.append(f"> {above:g}")
    if at_least is not None:
        bounds.append(f">= {at_least:g}")
    if below is not None:
        bounds.append(f"< {below:g}")
    if at_most is not None:
        bounds.append(f"<= {at_most:g}")
    wanted = f"--{flag} must be a finite number{' ' + ' and '.join(bounds) if bounds else ''}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{wanted}, got {value!r}")
    result = float(value)
    if (
        not math.isfinite(result)
        or (above is not None and not result > above)
        or (at_least is not None and not result >= at_least)
        or (below is not None and not result < below)
        or (at_most is not None and not result <= at_most)
    ):
        raise ValueError(f"{wanted}, got {value!r}")
    return result


def check_train_settings(s) -> None:
    """Raise ValueError naming the flag for the first invalid value of a :class:`pabee.settings.TrainSettings`.

    transformers conventions are kept: ``max_steps`` > 0 overrides ``num_train_epochs`` (-1: train by epochs);
    ``warmup_steps`` < 1 is a fraction of all steps, >= 1 a whole number of steps; ``max_grad_norm`` 0 turns
    gradient clipping off.
    """
    number("learning_rate", s.learning_rate, above=0)
    if s.classifier_learning_rate is not None:
        number("classifier_learning_rate", s.classifier_learning_rate, above=0)
    if isinstance(s.max_steps, bool) or not isinstance(s.max_steps, numbers.Integral) or not (
        s.max_steps == -1 or s.max_steps >= 1
    ):
        raise ValueError(
            f"--max_steps must be an integer >= 1 (or -1: train --num_train_epochs epochs), got {s.max_steps!r}"
        )
    epochs = number("num_train_epochs", s.num_train_epochs, at_least=0)
    if epochs == 0 and s.max_steps == -1:
        raise ValueError("nothing to train: --num_train_epochs is 0 (give a number of epochs > 0, or --max_steps)")
    integer("per_device_train_batch_size", s.per_device_train_batch_size, 1)
    integer("per_device_eval_batch_size", s.per_device_eval_batch_size, 1)
    integer("gradient_accumulation_steps", s.gradient_accumulation_steps, 1)
    number("weight_decay", s.weight_decay, at_least=0)
    number("adam_epsilon", s.adam_epsilon, above=0)
    number("max_grad_norm", s.max_grad_norm, at_least=0)
    warmup = number("warmup_steps", s.warmup_steps, at_least=0)
    if warmup >= 1 and warmup != int(warmup):
        raise ValueError(
            f"--warmup_steps must be a whole number of steps, or a fraction < 1 of all steps, got {s.warmup_steps!r}"
        )
    integer("logging_steps", s.logging_steps, 1)
    integer("save_steps", s.save_steps, 1)
    if s.save_total_limit is not None:
        integer("save_total_limit", s.save_total_limit, 1, hint=" (leave it out to keep every checkpoint)")
    if isinstance(s.seed, bool) or not isinstance(s.seed, numbers.Integral) or not 0 <= s.seed <= SEED_MAX:
        raise ValueError(f"--seed must be an integer from 0 to {SEED_MAX}, got {s.seed!r}")
    if s.train_sampling_strategy not in SAMPLING_STRATEGIES:
        raise ValueError(
            f"--train_sampling_strategy must be one of {', '.join(SAMPLING_STRATEGIES)}, "
            f"got {s.train_sampling_strategy!r}"
        )


def check_exit_rules(rules: object) -> list:
    """``RunSettings.exit_rules`` as a non-empty list of :class:`pabee.exit_rules.ExitRule` (``"kind:value"``
    strings are parsed); ValueError for an empty list or an invalid rule."""
    from .exit_rules import to_exit_rule

    if isinstance(rules, str) or not isinstance(rules, Iterable):
        rules = [rules]
    rules = [to_exit_rule(rule) for rule in rules]
    if not rules:
        raise ValueError("exit_rules is empty: give at least one exit rule (--patience or --exit_values)")
    return rules


def check_run_settings(s) -> None:
    """Raise ValueError naming the flag for the first invalid number of a :class:`pabee.settings.RunSettings`."""
    integer("max_seq_length", s.max_seq_length, 2)
    if s.max_train_samples is not None:
        integer("max_train_samples", s.max_train_samples, 1, hint=" (leave it out to use every example)")
    if s.max_eval_samples is not None:
        integer("max_eval_samples", s.max_eval_samples, 1, hint=" (leave it out to use every example)")
    integer("timing_rounds", s.timing_rounds, 1)
    sizes = list(s.eval_batch_sizes) if isinstance(s.eval_batch_sizes, Iterable) else [s.eval_batch_sizes]
    if not sizes:
        raise ValueError("--per_device_eval_batch_size is empty")
    for size in sizes:
        integer("per_device_eval_batch_size", size, 1)
    if s.regression_threshold is not None:
        number("regression_threshold", s.regression_threshold, at_least=0)
    if s.distillation_alpha is not None:
        number("distillation_alpha", s.distillation_alpha, at_least=0, at_most=1)
    if s.distillation_temperature is not None:
        number("distillation_temperature", s.distillation_temperature, above=0)
    if s.backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {s.backend!r}")
    if s.threads is not None:
        integer("threads", s.threads, 1, hint=" (leave it out for torch's default)")
    if s.tune_split is not None:
        from .data.holdout import check_tune_split

        s.tune_split = check_tune_split(s.tune_split)
    number("max_drop", s.max_drop, at_least=0)
    if s.max_drop > 100:
        raise ValueError(f"--max_drop must be a number of points (metric x 100) from 0 to 100, got {s.max_drop!r}")
