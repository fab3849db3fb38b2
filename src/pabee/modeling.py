"""PabeeForSequenceClassification: an encoder with an internal classifier after every layer and per-example
early exit at inference (patience-based by default; entropy, confidence and fixed-layer rules on request)."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput, PushToHubMixin

from .backbones import BackboneDriver, get_driver
from .config import PabeeConfig
from .early_exit import run_early_exit
from .exit_defaults import default_exit_rule, resolve_call_rule
from .exit_rules import (
    ExitRule,
    StepRule,
    check_regression_threshold,
    check_rule_supported,
)
from .hf import PabeeTransformersConfig, register_auto_classes
from .losses import distilled_layer_loss, layer_loss_weights
from .model_io import WEIGHTS_NAME as WEIGHTS_NAME  # re-exported: its old home
from .model_io import load_model, save_model_folder
from .torch_backend import TorchBackend, tensor_to_numpy, trim_trailing_padding

logger = logging.getLogger(__name__)


@dataclass
class PabeeOutput(ModelOutput):
    """What ``PabeeForSequenceClassification.forward`` returns.

    loss: scalar, sum_i i * L_i / sum_i i over the classifiers (only when labels are given; with self-distillation
        L_i also holds the KD term, see :func:`pabee.losses.distilled_layer_loss`).
    logits: (batch, num_labels), each example's logits at its exit layer.
    exit_layers: (batch,) long, how many layers each example ran (1..L).
    all_logits: (L, batch, num_labels), every classifier's logits (only with ``output_all_layers=True``).

    A transformers ``ModelOutput``: attributes, ``out["logits"]``, ``out[0]`` and ``to_tuple()`` skip None fields.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    exit_layers: torch.Tensor | None = None
    all_logits: torch.Tensor | None = None

    @classmethod
    def _of_inference(cls, logits: torch.Tensor, exit_layers: torch.Tensor) -> PabeeOutput:
        """``PabeeOutput(logits=logits, exit_layers=exit_layers)``, built directly.

        The same state as the dataclass __init__ and ``ModelOutput.__post_init__`` build (every field an
        attribute, the non-None ones dict entries in field order) without their generic per-field checks: at batch
        size 1 those cost as much as an internal classifier, once per forward.
        """
        out = cls.__new__(cls)
        for name, value in (("loss", None), ("logits", logits), ("exit_layers", exit_layers), ("all_logits", None)):
            object.__setattr__(out, name, value)
            if value is not None:
                OrderedDict.__setitem__(out, name, value)
        return out


class ClsPooler(nn.Module):
    """dense + tanh on the first token, for backbones that have no pooler of their own (DistilBERT, ELECTRA)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B,S,H) -> (B,H)
        return torch.tanh(self.dense(hidden[:, 0]))


class PabeeForSequenceClassification(PushToHubMixin, nn.Module):
    """A Hugging Face encoder with one linear classifier per layer, trained jointly, that exits early at inference.

    Build it with :meth:`from_pretrained` (a plain encoder checkpoint or a folder saved by :meth:`save_pretrained`),
    or directly from a backbone module (``transformers.AutoModel``) for tests and custom setups.

    ``model.config`` is the backbone's transformers config (with ``num_labels``, ``id2label``, ``label2id``);
    ``model.pabee_config`` holds the early-exit defaults saved with the model.

    It fits where transformers expects a sequence classifier (see :mod:`pabee.hf`): once pabee is imported,
    ``AutoModelForSequenceClassification`` and ``pipeline("text-classification", model=folder)`` load a saved folder
    as this class (early exit on, with the saved exit rule), and ``push_to_hub`` uploads what ``save_pretrained`` writes.
    """

    config_class = PabeeTransformersConfig

    def __init__(self, backbone: PreTrainedModel, pabee_config: PabeeConfig | None = None):
        super().__init__()
        self.driver: BackboneDriver = get_driver(backbone.config.model_type)
        self.backbone = backbone
        self.pabee_config = pabee_config if pabee_config is not None else PabeeConfig()
        config = backbone.config
        num_labels = config.num_labels
        if not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}")
        check_rule_supported(default_exit_rule(self.pabee_config), num_labels)  # a saved entropy rule on regression
        hidden_size = config.hidden_size if hasattr(config, "hidden_size") else config.dim
        self.num_layers = self.driver.num_layers(config)
        dropout = self.pabee_config.classifier_dropout
        if dropout is None:
            dropout = _first_attr(config, ("classifier_dropout", "hidden_dropout_prob", "seq_classif_dropout"), 0.1)
        self.dropout = nn.Dropout(dropout)
        self._mean_pooling = self.pabee_config.pooling == "mean"  # read on every layer: decided once here
        self.pooler = None
        if not self._mean_pooling and self.driver.pooler(backbone) is None:
            self.pooler = ClsPooler(hidden_size)
        self.classifiers = nn.ModuleList(nn.Linear(hidden_size, num_labels) for _ in range(self.num_layers))
        self._regression = num_labels == 1  # fixed by the classifiers' shape; read through is_regression
        std = getattr(config, "initializer_range", 0.02)
        for module in [*self.classifiers, *([self.pooler.dense] if self.pooler is not None else [])]:
            nn.init.normal_(module.weight, mean=0.0, std=std)
            nn.init.zeros_(module.bias)
        self.register_buffer(
            "loss_weights", layer_loss_weights(self.num_layers, self.pabee_config.loss_weighting), persistent=False
        )
        self.eval()

    # ------------------------------------------------------------------ properties

    @property
    def config(self) -> PretrainedConfig:
        return self.backbone.config

    @property
    def num_labels(self) -> int:
        return self.backbone.config.num_labels

    @property
    def is_regression(self) -> bool:
        return self._regression

    @property
    def device(self) -> torch.device:
        """Where the weights are (what transformers' pipelines read)."""
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' floating-point type."""
        return next(self.parameters()).dtype

    def can_generate(self) -> bool:
        """False: a classifier (asked by transformers' pipelines)."""
        return False

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        patience: int | None = None,
        regression_threshold: float | None = None,
        output_all_layers: bool = False,
        exit_rule: ExitRule | str | None = None,
    ) -> PabeeOutput:
        """Run the encoder with early exit.

        input_ids, attention_mask, token_type_ids: (batch, seq). ``exit_rule`` (an :class:`ExitRule` or a string
        such as ``"entropy:0.3"``) chooses the exit rule, ``patience`` is short for ``exit_rule="patience:N"``;
        without either the rule saved with the model runs (``pabee_config.exit_rule``, else its ``patience``: see
        :func:`pabee.exit_defaults.default_exit_rule`). regression_threshold defaults to ``pabee_config``'s.
        Giving both ``exit_rule`` and ``patience`` is an error, and the entropy and confidence rules are refused for
        regression models (ValueError).
        In training mode, with ``labels`` or with ``output_all_layers`` every layer runs for every example (the
        loss needs every classifier); exit layers are then recomputed from all layers' logits with the same rule.
        Otherwise examples that exit stop costing compute: the active batch shrinks layer by layer (the "layer"
        rule simply runs its k layers and classifies once).
        """
        rule = self._resolve_exit_rule(exit_rule, patience).build(
            check_regression_threshold(
                self.pabee_config.regression_threshold if regression_threshold is None else regression_threshold
            )
        )
        input_ids, attention_mask, token_type_ids = self._check_inputs(input_ids, attention_mask, token_type_ids)
        # From here on attention_mask is None when no position is padding (checked here once instead of at every
        # step: at batch size 1 every tensor-to-Python read costs as much as a small op).
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        if attention_mask is not None:
            width = input_ids.size(1)
            input_ids, attention_mask, token_type_ids = trim_trailing_padding(input_ids, attention_mask, token_type_ids)
            if input_ids.size(1) < width and bool(attention_mask.all()):  # every row had the same trailing padding
                attention_mask = None
        hidden = self.driver.embed(self.backbone, input_ids, token_type_ids)  # (B,S,H)

        if self.training or labels is not None or output_all_layers:
            all_logits = self._all_layer_logits(hidden, attention_mask)  # (L,B,C)
            loss = None
            if labels is not None:
                if labels.size(0) != input_ids.size(0):
                    raise ValueError(f"labels has {labels.size(0)} rows but the batch has {input_ids.size(0)}")
                config = self.pabee_config
                loss = distilled_layer_loss(all_logits, labels, self.loss_weights, config.distillation_alpha,
                                            config.distillation_temperature)
            exit_layers = torch.from_numpy(rule.exit_layers(tensor_to_numpy(all_logits))).to(all_logits.device)
            return PabeeOutput(
                loss=loss,
                logits=gather_exit_logits(all_logits, exit_layers),
                exit_layers=exit_layers,
                all_logits=all_logits if output_all_layers else None,
            )
        logits, exit_layers = self._early_exit(hidden, attention_mask, rule)
        return PabeeOutput._of_inference(logits, exit_layers)

    def _resolve_exit_rule(self, exit_rule: ExitRule | str | None, patience: int | None) -> ExitRule:
        return resolve_call_rule(exit_rule, patience, self.pabee_config, self.num_labels)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The backbone's last hidden state (B,S,H), computed through pabee's layer-by-layer driver."""
        input_ids, attention_mask, token_type_ids = self._check_inputs(input_ids, attention_mask, token_type_ids)
        return self._run_layers(self.driver.embed(self.backbone, input_ids, token_type_ids), attention_mask)

    def _run_layers(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor | None, depth: int | None = None
    ) -> torch.Tensor:
        """The first ``depth`` layers (default: all) for every row, no classifiers: (B,S,H) -> (B,S,H).

        attention_mask (B,S), or None when no position is padding (as for every method below).
        """
        mask = self.driver.prepare_mask(self.backbone, hidden, attention_mask)
        extra = self.driver.layer_extra(self.backbone, hidden)
        run_layer = self.driver.run_layer
        for layer in self.driver.layers(self.backbone)[:depth]:
            hidden = run_layer(layer, hidden, mask, extra)
        return hidden

    def _check_inputs(self, input_ids, attention_mask, token_type_ids):
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise TypeError("input_ids must be a (batch, seq) tensor of token ids")
        if input_ids.size(0) == 0 or input_ids.size(1) == 0:
            raise ValueError(f"empty batch: input_ids has shape {tuple(input_ids.shape)}")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}"
            )
        if token_type_ids is not None and token_type_ids.shape != input_ids.shape:
            raise ValueError(
                f"token_type_ids shape {tuple(token_type_ids.shape)} != input_ids shape {tuple(input_ids.shape)}"
            )
        if not self.driver.uses_token_type_ids:
            token_type_ids = None
        return input_ids, attention_mask, token_type_ids

    def _pool_input(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """What ``_classify`` pools with, made once per forward (and again when the batch changes).

        Mean pooling at inference: (B,1,S) averaging weights, 1/n on each row's n unpadded positions and 0 on its
        padding, so that pooling is one batched matmul. Otherwise (training, or cls pooling) the (B,S) mask itself,
        None when no position is padding.
        """
        if not self._mean_pooling or self.training:
            return attention_mask
        batch, seq = hidden.shape[:2]
        if attention_mask is None:
            return hidden.new_full((batch, 1, seq), 1.0 / seq)
        weights = attention_mask.to(hidden.dtype)  # (B,S)
        return (weights / weights.sum(1, keepdim=True).clamp(min=1.0)).unsqueeze(1)

    def _classify(self, head: nn.Linear, hidden: torch.Tensor, pool: torch.Tensor | None) -> torch.Tensor:
        """One internal classifier (``head``, one of ``self.classifiers``) on the pooled layer output:
        hidden (B,S,H) -> (B,C).

        ``pool`` comes from :meth:`_pool_input`: (B,1,S) averaging weights (mean pooling at inference), else the
        (B,S) mask, None meaning no position is padding.
        """
        if self._mean_pooling:
            if pool is not None and pool.dim() == 3:
                # bmm + linear: the first ops after a layer pay for cold CPU caches, and matmuls reuse the code
                # path the layer just ran (a mean reduction costs twice as much there at batch size 1)
                return F.linear(torch.bmm(pool, hidden), head.weight, head.bias)[:, 0]  # (B,1,H) -> (B,C)
            pooled = _masked_mean(hidden, pool)
        elif self.pooler is not None:
            pooled = self.pooler(hidden)
        else:
            pooled = self.driver.pooler(self.backbone)(hidden)
        if self.training:
            pooled = self.dropout(pooled)
        return F.linear(pooled, head.weight, head.bias)

    def _all_layer_logits(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Every layer for every row; returns (L,B,C)."""
        mask = self.driver.prepare_mask(self.backbone, hidden, attention_mask)
        extra = self.driver.layer_extra(self.backbone, hidden)
        pool = self._pool_input(hidden, attention_mask if mask is not None else None)
        all_logits = []
        for layer, head in zip(self.driver.layers(self.backbone), self.classifiers):
            hidden = self.driver.run_layer(layer, hidden, mask, extra)
            all_logits.append(self._classify(head, hidden, pool))
        return torch.stack(all_logits)

    def _early_exit(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor | None, rule: StepRule
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-by-layer inference where each row leaves as soon as the rule object ``rule`` lets it out.

        hidden (B,S,H), attention_mask (B,S) -> logits (B,C), exit_layers (B,). Called by ``forward`` only, with
        attention_mask None unless some position is padded. The loop is :func:`pabee.early_exit.run_early_exit`
        over this model's :class:`pabee.torch_backend.TorchBackend`.
        """
        backend = TorchBackend(self)
        logits, exit_layers = run_early_exit(backend, rule, backend.start(hidden, attention_mask), hidden.size(0))
        device = hidden.device
        return backend.to_tensor(logits, device), torch.from_numpy(exit_layers).to(device)

    # ------------------------------------------------------------------ save / load (pabee.model_io)

    def save_pretrained(self, save_directory: str | os.PathLike, *, push_to_hub: bool = False, **kwargs) -> None:
        """Write config.json (a :class:`pabee.hf.PabeeTransformersConfig`: the backbone's config and the labels),
        pabee_config.json and model.safetensors (all weights).

        Each file is written to a temporary name and renamed, so an interrupted save never leaves a torn file.
        ``push_to_hub=True`` then uploads the folder (``repo_id`` in ``kwargs``, default the folder's name; the
        other ``kwargs`` go to :meth:`push_to_hub`). transformers' serialization options (``max_shard_size``,
        ``safe_serialization``) are accepted and ignored: the weights are always one safetensors file.
        """
        for ignored in ("max_shard_size", "safe_serialization", "is_main_process", "state_dict"):
            kwargs.pop(ignored, None)
        folder = save_model_folder(self, save_directory)
        if push_to_hub:
            self.push_to_hub(kwargs.pop("repo_id", folder.name), **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        num_labels: int | None = None,
        id2label: dict[int, str] | None = None,
        label2id: dict[str, int] | None = None,
        patience: int | None = None,
        regression_threshold: float | None = None,
        loss_weighting: str | None = None,
        classifier_dropout: float | None = None,
        pooling: str | None = None,
        exit_rule: ExitRule | str | None = None,
        distillation_alpha: float | None = None,
        distillation_temperature: float | None = None,
        **backbone_kwargs,
    ) -> PabeeForSequenceClassification:
        """Load a model in eval mode.

        ``name_or_path`` is either a folder written by :meth:`save_pretrained` (everything is restored; the options
        given here override the saved early-exit defaults, and ``num_labels`` must match), or a plain encoder
        checkpoint (local folder or hub id) whose backbone weights are loaded with ``transformers.AutoModel`` and
        which gets freshly initialised classifiers. ``pooling`` ("cls" or "mean", see :class:`PabeeConfig`) defaults
        to the pooling a local sentence-transformers folder declares, else "cls". ``exit_rule`` (``"entropy:0.3"``)
        sets the default exit rule; a ``patience`` given without it replaces a saved default rule of another kind.
        ``distillation_alpha`` / ``distillation_temperature``: self-distillation in training (see
        :class:`PabeeConfig`; default off). ``backbone_kwargs`` go to transformers (``revision``,
        ``attn_implementation``, ``local_files_only``...).
        """
        overrides = {
            "patience": patience,
            "regression_threshold": regression_threshold,
            "loss_weighting": loss_weighting,
            "classifier_dropout": classifier_dropout,
            "pooling": pooling,
            "exit_rule": None if exit_rule is None else str(exit_rule),
            "distillation_alpha": distillation_alpha,
            "distillation_temperature": distillation_temperature,
        }
        overrides = {k: v for k, v in overrides.items() if v is not None}
        return load_model(cls, name_or_path, num_labels, id2label, label2id, overrides, backbone_kwargs)


def gather_exit_logits(all_logits: torch.Tensor, exit_layers: torch.Tensor) -> torch.Tensor:
    """Pick each row's logits at its exit layer. all_logits (L, batch, C), exit_layers (batch,) in 1..L -> (batch, C)."""
    rows = torch.arange(all_logits.size(1), device=all_logits.device)
    return all_logits[exit_layers - 1, rows]


def _first_attr(config, names, default):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def _masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of the token states over the unmasked positions: (B,S,H), (B,S) or None (no padding) -> (B,H)."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B,S,1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


register_auto_classes()
