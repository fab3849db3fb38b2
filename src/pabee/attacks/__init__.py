"""Adversarial attacks on pabee models under any exit rule (``benchmarks/robustness.py`` runs them).

* :mod:`.deepwordbug`: DeepWordBug (Gao et al., 2018) with a misclassification goal
  (:class:`Misclassification`) or a WAFFLE-style slowdown goal (:class:`Slowdown`): :func:`deepwordbug`,
  :class:`Budget`, :class:`AttackResult`.
* :mod:`.classifier`: the black box they query, ``classify(inputs) -> Outputs`` (:class:`ModelClassifier`).
* :mod:`.text`: words and DeepWordBug's four character edits.
"""

from .classifier import Classifier, LayerLogits, ModelClassifier, Outputs, Row
from .deepwordbug import AttackResult, Budget, Misclassification, Slowdown, deepwordbug, uniformity

__all__ = [
    "AttackResult",
    "Budget",
    "Classifier",
    "LayerLogits",
    "Misclassification",
    "ModelClassifier",
    "Outputs",
    "Row",
    "Slowdown",
    "deepwordbug",
    "uniformity",
]
