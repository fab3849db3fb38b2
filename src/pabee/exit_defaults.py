"""The exit rule a saved model uses when a call names none: the one resolution every front end shares.

A model's ``pabee_config.json`` (:class:`pabee.config.PabeeConfig`) holds a default ``patience`` and, since
``pabee tune``, an optional default ``exit_rule`` (``"entropy:0.3"``). :func:`default_exit_rule` turns what was
saved into the :class:`~pabee.exit_rules.ExitRule` to run: the saved ``exit_rule`` when there is one, else patience
``patience`` (the only default older folders have). :func:`resolve_call_rule` adds a call's own ``exit_rule`` /
``patience`` arguments on top. The torch model's ``forward``, the ONNX runtime (from ``pabee_onnx.json``), the
raw-text predictor (``pabee predict``, ``pabee serve`` and its ``/info``, the Ray predictor) all go through these
two functions.

Nothing here imports torch.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from .exit_rules import ExitRule, check_rule_supported, patience_rule, resolve_exit_rule, to_exit_rule


@functools.lru_cache(maxsize=64)
def _parsed(text: str) -> ExitRule:
    return ExitRule.parse(text)  # forward() asks on every call: each saved string is parsed once


def canonical_exit_rule(rule: ExitRule | str | Mapping | None) -> ExitRule | None:
    """A saved default rule as an :class:`ExitRule` (None for none): a ``"kind:value"`` string, an ExitRule or a
    ``{"kind": ..., "value": ...}`` mapping; ValueError for anything else or an invalid rule."""
    if rule is None or rule == "":
        return None
    if isinstance(rule, Mapping):
        return ExitRule(rule["kind"], rule["value"])
    if isinstance(rule, str):
        return _parsed(rule.strip())
    return to_exit_rule(rule)


def default_exit_rule(saved: Any) -> ExitRule:
    """The rule a model saved with ``saved`` runs when a call names none.

    ``saved``: a :class:`~pabee.config.PabeeConfig`, the ``pabee_config`` mapping of an ONNX export's manifest, or
    anything with ``exit_rule`` / ``patience`` attributes. Its ``exit_rule`` wins when set; otherwise patience
    ``patience`` (0, full depth, when absent).
    """
    if isinstance(saved, Mapping):
        rule, patience = saved.get("exit_rule"), saved.get("patience", 0)
    else:
        rule, patience = getattr(saved, "exit_rule", None), getattr(saved, "patience", 0)
    found = canonical_exit_rule(rule)
    return found if found is not None else patience_rule(int(patience or 0))


def resolve_call_rule(
    exit_rule: ExitRule | str | None, patience: int | None, saved: Any, num_labels: int
) -> ExitRule:
    """The rule one model call runs: its ``exit_rule`` or ``patience`` argument when given (both is a ValueError),
    else the saved default (:func:`default_exit_rule` of ``saved``). A rule that needs class probabilities is
    refused for a regression model (``num_labels == 1``), the saved one included."""
    if exit_rule is None and patience is None:
        rule = default_exit_rule(saved)
        check_rule_supported(rule, num_labels)
        return rule
    return resolve_exit_rule(exit_rule, patience, 0, num_labels)
