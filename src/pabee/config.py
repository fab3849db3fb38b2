"""What pabee saves beside the backbone's weights: the early-exit defaults and the loss weighting."""

from __future__ import annotations

import dataclasses
import json
import logging
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

from .exit_defaults import canonical_exit_rule
from .exit_defaults import default_exit_rule as default_exit_rule  # re-exported: the saved rule, resolved
from .exit_rules import DEFAULT_REGRESSION_THRESHOLD, check_patience, check_regression_threshold
from .files import atomic_write_text
from .losses import DEFAULT_DISTILLATION_TEMPERATURE, LOSS_WEIGHTINGS, check_distillation
from .model_files import sentence_transformers_pooling as sentence_transformers_pooling  # re-exported
from .model_files import weights_digest as weights_digest  # re-exported: the old home

logger = logging.getLogger(__name__)

PABEE_CONFIG_NAME = "pabee_config.json"
POOLINGS = ("cls", "mean")


@dataclass
class PabeeConfig:
    """Early-exit settings saved with a model as ``pabee_config.json``.

    Attributes:
        patience: default patience used when ``forward`` gets no rule (0 = full depth, last classifier).
        exit_rule: default exit rule of any kind, ``"kind:value"`` (e.g. ``"entropy:0.3"``, what ``pabee tune``
            saves), or None: patience ``patience`` is the default, as in folders saved before this field existed.
            A patience rule is stored as ``patience`` (``exit_rule="patience:3"`` becomes ``patience=3,
            exit_rule=None``), so every saved default has one spelling. :func:`default_exit_rule` resolves both.
        regression_threshold: default agreement threshold for regression models (|delta| < threshold).
        loss_weighting: how the classifiers' losses are weighted in training ("linear": i / sum(1..L)).
        classifier_dropout: dropout before every internal classifier (None: the backbone's hidden dropout).
        pooling: what every internal classifier reads. "cls": the backbone's pooler (dense + tanh) on the first
            token, as in the PABEE paper and BertForSequenceClassification; "mean": the mean of the token states
            (padding excluded), as sentence-transformers models such as all-MiniLM-L6-v2 were trained.
        distillation_alpha: self-distillation in training (0 = off): each internal classifier i < L learns
            (1 - alpha) * its label loss + alpha * the KL divergence to the last classifier's softened predictions
            (:func:`pabee.losses.distilled_layer_loss`); the layer weighting applies on top.
        distillation_temperature: the softmax temperature T of that KL term (scaled by T^2).
    """

    patience: int = 0
    regression_threshold: float = DEFAULT_REGRESSION_THRESHOLD
    loss_weighting: str = "linear"
    classifier_dropout: float | None = None
    pooling: str = "cls"
    distillation_alpha: float = 0.0
    distillation_temperature: float = DEFAULT_DISTILLATION_TEMPERATURE
    pabee_version: str = ""
    exit_rule: str | None = None  # last: the fields before it keep their positions

    def __post_init__(self) -> None:
        self.patience = check_patience(self.patience)
        rule = canonical_exit_rule(self.exit_rule)  # ValueError for an invalid rule
        if rule is not None and rule.kind == "patience":
            self.patience, rule = int(rule.value), None
        self.exit_rule = None if rule is None else str(rule)
        self.regression_threshold = check_regression_threshold(self.regression_threshold)
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(
                f"unknown loss weighting {self.loss_weighting!r}; choose one of {', '.join(LOSS_WEIGHTINGS)}"
            )
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLINGS)}")
        self.distillation_alpha, self.distillation_temperature = check_distillation(
            self.distillation_alpha, self.distillation_temperature)
        dropout = self.classifier_dropout
        if dropout is not None and (isinstance(dropout, bool) or not isinstance(dropout, numbers.Real)
                                    or not 0.0 <= float(dropout) < 1.0):
            raise ValueError(f"classifier_dropout must be a number in [0, 1), got {self.classifier_dropout!r}")
        if not self.pabee_version:
            from . import __version__

            self.pabee_version = __version__

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> PabeeConfig:
        """Build from a dict, ignoring (with a warning) keys this version does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            logger.warning("ignoring unknown keys in %s: %s", PABEE_CONFIG_NAME, ", ".join(unknown))
        return cls(**{k: v for k, v in values.items() if k in known})

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``pabee_config.json`` into ``folder`` atomically."""
        path = Path(folder) / PABEE_CONFIG_NAME
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> PabeeConfig:
        path = Path(folder) / PABEE_CONFIG_NAME
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a JSON object")
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as err:  # e.g. "patience": "3"
            raise ValueError(f"{path}: {err}") from None


def is_pabee_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder written by ``PabeeForSequenceClassification.save_pretrained``."""
    return (Path(path) / PABEE_CONFIG_NAME).is_file()
