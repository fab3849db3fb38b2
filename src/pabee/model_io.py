"""Saving and loading :class:`~pabee.modeling.PabeeForSequenceClassification` folders: what
``save_pretrained`` writes and how ``from_pretrained`` reads a saved pabee folder, a plain encoder checkpoint or a
pabee model pushed to the hub."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, PretrainedConfig

from .backbones import get_driver
from .config import PabeeConfig, is_pabee_folder
from .files import atomic_path, atomic_write_text
from .hf import PabeeTransformersConfig, download_saved_model, read_backbone_config
from .loading import check_weights, load_backbone, read_weights, resolve_model_source
from .model_files import sentence_transformers_pooling

logger = logging.getLogger(__name__)
WEIGHTS_NAME = "model.safetensors"


def save_model_folder(model, save_directory: str | os.PathLike) -> Path:
    """Write ``model``'s weights (model.safetensors), config.json and pabee_config.json into ``save_directory``,
    each atomically; returns the folder."""
    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "pabee": "1"})
    config = PabeeTransformersConfig.of_backbone(model.config)
    atomic_write_text(folder / "config.json", config.to_json_string(use_diff=True))
    model.pabee_config.save(folder)
    return folder


def load_model(cls, name_or_path, num_labels, id2label, label2id, overrides: dict, backbone_kwargs: dict):
    """``cls.from_pretrained``: a saved pabee folder (or hub id) restored whole, else a plain encoder with fresh
    classifiers. ``overrides`` are early-exit defaults that replace the saved ones."""
    _drop_auto_class_kwargs(backbone_kwargs)
    if num_labels is not None and (isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1):
        raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}")
    name_or_path = resolve_model_source(
        name_or_path, cache_dir=backbone_kwargs.get("cache_dir"),
        local_files_only=bool(backbone_kwargs.get("local_files_only")),
    )
    if is_pabee_folder(name_or_path):
        return load_saved(cls, Path(name_or_path), num_labels, id2label, label2id, overrides, backbone_kwargs)

    label_kwargs = _label_kwargs(num_labels, id2label, label2id)
    config = _load_config(name_or_path, label_kwargs, backbone_kwargs)
    if isinstance(config, PabeeTransformersConfig):  # a saved pabee model on the hub (e.g. via push_to_hub)
        try:
            folder = download_saved_model(name_or_path, backbone_kwargs)
        except OSError as err:
            raise OSError(_load_error(name_or_path, err)) from None
        return load_saved(cls, folder, num_labels, id2label, label2id, overrides, backbone_kwargs)
    get_driver(config.model_type)  # fail before loading any weights
    try:
        backbone = load_backbone(name_or_path, config, backbone_kwargs)
    except OSError as err:
        raise OSError(_load_error(name_or_path, err)) from None
    if "pooling" not in overrides:
        declared = sentence_transformers_pooling(name_or_path)
        if declared is not None:
            logger.info("%s is a sentence-transformers model trained with %s pooling: using it", name_or_path, declared)
            overrides["pooling"] = declared
    return cls(backbone, PabeeConfig(**overrides))


def load_saved(cls, folder: Path, num_labels, id2label, label2id, overrides: dict, backbone_kwargs: dict):
    """A folder written by ``save_pretrained`` (old format: the backbone's config.json; or the registered pabee
    config), weights checked against the model before they are loaded."""
    config = read_backbone_config(folder)
    if num_labels is not None and num_labels != config.num_labels:
        raise ValueError(
            f"num_labels={num_labels} contradicts the saved model in {folder}, which has {config.num_labels} labels"
        )
    if id2label is not None:
        config.id2label = {int(k): v for k, v in id2label.items()}
        config.label2id = {v: k for k, v in config.id2label.items()}
    if label2id is not None:
        config.label2id = dict(label2id)
    get_driver(config.model_type)
    saved = PabeeConfig.load(folder).to_dict()
    if "patience" in overrides and "exit_rule" not in overrides:
        saved["exit_rule"] = None  # a default patience asked for replaces a saved default rule of another kind
    saved.update(overrides)
    attn = backbone_kwargs.get("attn_implementation")
    backbone = AutoModel.from_config(config, **({"attn_implementation": attn} if attn else {}))
    model = cls(backbone, PabeeConfig(**{k: v for k, v in saved.items() if k != "pabee_version"}))
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing: the folder has a pabee config but no weights")
    state = read_weights(weights)
    check_weights(model, state, folder)
    model.load_state_dict(state)
    return model.eval()


def _drop_auto_class_kwargs(kwargs: dict) -> None:
    """Remove what transformers' Auto classes and pipelines add to ``from_pretrained``'s arguments: the pabee
    config they already read from the folder (read again here) and their bookkeeping keys."""
    if isinstance(kwargs.get("config"), PabeeTransformersConfig):
        del kwargs["config"]
    for key in ("_from_pipeline", "_from_auto", "_commit_hash"):
        kwargs.pop(key, None)


def _label_kwargs(num_labels, id2label, label2id) -> dict:
    kwargs = {}
    if id2label is not None:
        kwargs["id2label"] = {int(k): v for k, v in id2label.items()}
        kwargs["label2id"] = {v: int(k) for k, v in id2label.items()}
        if num_labels is not None and num_labels != len(id2label):
            raise ValueError(f"num_labels={num_labels} but id2label has {len(id2label)} labels")
    if label2id is not None:
        kwargs["label2id"] = dict(label2id)
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
        if num_labels == 1:
            kwargs["problem_type"] = "regression"
    return kwargs


def _load_config(name_or_path, label_kwargs, backbone_kwargs) -> PretrainedConfig:
    hub_keys = ("revision", "cache_dir", "local_files_only", "token", "trust_remote_code")
    try:
        return AutoConfig.from_pretrained(
            name_or_path, **label_kwargs, **{k: v for k, v in backbone_kwargs.items() if k in hub_keys}
        )
    except OSError as err:
        raise OSError(_load_error(name_or_path, err)) from None
    except ValueError as err:  # unknown model_type in config.json
        raise ValueError(f"cannot load {name_or_path!s}: {str(err).splitlines()[0]}") from None


def _load_error(name_or_path, err: Exception) -> str:
    if Path(name_or_path).exists():
        return f"cannot load {name_or_path!s}: {str(err).splitlines()[0]}"
    return (
        f"cannot load {name_or_path!s}: it is not a local folder and could not be fetched from the Hugging Face hub "
        f"(offline or unknown id): {str(err).splitlines()[0]}"
    )
