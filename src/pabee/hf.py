"""Hugging Face integration: the ``config.json`` pabee saves, and pabee's place in transformers' Auto classes.

A folder saved by :meth:`pabee.PabeeForSequenceClassification.save_pretrained` has a ``config.json`` of
``model_type`` "pabee" (:class:`PabeeTransformersConfig`) that nests the backbone's config (as
``EncoderDecoderConfig`` nests two) and repeats the labels at the top level, where transformers' tools read them.
Once pabee is registered (:func:`register_auto_classes`, done when :mod:`pabee.modeling` is imported, or when
transformers' Auto modules are imported after ``import pabee``), ``AutoConfig``,
``AutoModelForSequenceClassification`` and ``transformers.pipeline("text-classification", model=folder)`` load
such a folder as a pabee model. Without pabee they fail with "unrecognized model type pabee" instead of building
a plain classifier with a random head.

Folders saved before this format (``config.json`` = the backbone's own config) keep loading:
:func:`read_backbone_config` reads both.
"""

from __future__ import annotations

import os
from pathlib import Path

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

MODEL_TYPE = "pabee"
ARCHITECTURE = "PabeeForSequenceClassification"
_LABEL_KEYS = ("id2label", "label2id", "problem_type")
# what a saved pabee model is made of (config.json, pabee_config.json, weights; tokenizer files beside them)
SAVED_FILES = ["*.json", "*.safetensors", "*.txt", "*.model"]


class PabeeTransformersConfig(PreTrainedConfig):
    """The ``config.json`` of a saved pabee model: ``backbone`` (the encoder's config) plus the labels.

    The early-exit defaults stay in ``pabee_config.json`` (:class:`pabee.PabeeConfig`), their one source.
    """

    model_type = MODEL_TYPE
    sub_configs_defaults = {"backbone": SubConfigSpec(config_class=AutoConfig, model_type="bert")}
    backbone: PreTrainedConfig | dict | None = None

    @classmethod
    def of_backbone(cls, backbone: PreTrainedConfig) -> PabeeTransformersConfig:
        """The config saved for a model whose backbone config (with its labels) is ``backbone``."""
        labels = {key: getattr(backbone, key, None) for key in _LABEL_KEYS}
        nested = {k: v for k, v in backbone.to_dict().items() if k not in ("_name_or_path", "architectures")}
        return cls(backbone=nested, architectures=[ARCHITECTURE],
                   **{k: v for k, v in labels.items() if v is not None})

    def backbone_config(self) -> PreTrainedConfig:
        """The backbone's config with this config's labels (the top-level ones are those users and tools edit)."""
        backbone = type(self.backbone).from_dict(self.backbone.to_dict())
        if self.id2label is not None:
            backbone.id2label = {int(k): v for k, v in self.id2label.items()}
            backbone.label2id = dict(self.label2id) if self.label2id else {v: k for k, v in backbone.id2label.items()}
        if self.problem_type is not None:
            backbone.problem_type = self.problem_type
        return backbone


def read_backbone_config(source: str | os.PathLike, **kwargs) -> PreTrainedConfig:
    """The backbone config (with labels) of a saved pabee folder, old format or new, or of a plain checkpoint.

    ``kwargs`` go to ``AutoConfig.from_pretrained`` (``cache_dir``, ``revision``...). Raises what it raises.
    """
    register_config()
    config = AutoConfig.from_pretrained(source, **kwargs)
    return config.backbone_config() if isinstance(config, PabeeTransformersConfig) else config


def download_saved_model(repo_id: str, kwargs: dict) -> Path:
    """The local snapshot of a pabee model saved on the hub (from the Hugging Face cache when offline).

    ``kwargs``: ``revision``, ``cache_dir``, ``local_files_only``, ``token`` are used. Raises OSError when the
    files cannot be had.
    """
    from huggingface_hub import snapshot_download

    options = {k: kwargs[k] for k in ("revision", "cache_dir", "local_files_only", "token") if kwargs.get(k)}
    return Path(snapshot_download(repo_id, allow_patterns=SAVED_FILES, **options))


def register_config() -> None:
    """``AutoConfig.register("pabee", PabeeTransformersConfig)``, once."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if MODEL_TYPE not in CONFIG_MAPPING:
        AutoConfig.register(MODEL_TYPE, PabeeTransformersConfig)


def register_auto_classes() -> None:
    """Register pabee with transformers' ``AutoConfig`` and ``AutoModelForSequenceClassification`` (idempotent)."""
    import sys

    from transformers import AutoModelForSequenceClassification

    importing = sys.modules.get(f"{__package__}.modeling")
    if importing is not None and not hasattr(importing, "PabeeForSequenceClassification"):
        return  # pabee.modeling is being imported (its imports loaded transformers): it registers itself at its end
    from .modeling import PabeeForSequenceClassification

    register_config()
    AutoModelForSequenceClassification.register(
        PabeeTransformersConfig, PabeeForSequenceClassification, exist_ok=True
    )
