"""The torch modules that become ONNX graphs: thin wrappers that call a pabee model's own code.

* :class:`EmbeddingsGraph`: token ids (and segment ids where the architecture has them) -> the hidden states
  entering layer 1, through the architecture driver's ``embed``.
* :class:`LayerGraph`: one encoder layer module and the internal classifiers of every layer that runs it
  (one, except for ALBERT's shared layer groups) -> the layer's output and those classifiers' logits (B, K, C).
* :class:`FullDepthGraph`: the whole network at full depth in one graph (embeddings, every layer, the last
  classifier): the plain export a user would otherwise deploy, used as the benchmark's baseline.

Each graph takes the plain 0/1 attention mask and builds the additive mask itself, the form the backbones' eager
attention adds to the attention scores; a runtime therefore passes the same (B, S) mask to every graph. MPNet's
relative position bias is computed inside each layer graph from the sequence length.
"""

from __future__ import annotations

import torch
from torch import nn


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, S) 0/1 -> (B, 1, 1, S): 0 where a key may be attended to, the dtype's minimum where it is padding."""
    keep = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - keep) * torch.finfo(dtype).min


class EmbeddingsGraph(nn.Module):
    """input_ids (B,S) [, token_type_ids (B,S)] -> hidden_states (B,S,H)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.driver.embed(self.model.backbone, input_ids, token_type_ids)


class LayerGraph(nn.Module):
    """hidden_states (B,S,H), attention_mask (B,S) -> (hidden_states of the next layer, logits (B,K,C)).

    ``layer`` is one module of ``driver.layers(backbone)``; ``heads`` are the indices of the layers that run it
    (their classifiers' logits come out in that order). Pooling is the model's own (``_pool_input`` and
    ``_classify``: mean pooling with the mask's averaging weights, or the cls pooler).
    """

    def __init__(self, model, layer: nn.Module, heads: list[int]):
        super().__init__()
        self.model = model
        self.layer = layer
        self.heads = list(heads)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        driver = model.driver
        extra = driver.layer_extra(model.backbone, hidden)
        hidden = driver.run_layer(self.layer, hidden, additive_mask(attention_mask, hidden.dtype), extra)
        pool = model._pool_input(hidden, attention_mask)
        logits = [model._classify(model.classifiers[i], hidden, pool) for i in self.heads]
        return hidden, torch.stack(logits, dim=1)


class FullDepthGraph(nn.Module):
    """input_ids, attention_mask [, token_type_ids] (B,S) -> logits (B,C) of the last classifier, every layer run."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        model = self.model
        driver = model.driver
        hidden = driver.embed(model.backbone, input_ids, token_type_ids)
        mask = additive_mask(attention_mask, hidden.dtype)
        extra = driver.layer_extra(model.backbone, hidden)
        for layer in driver.layers(model.backbone):
            hidden = driver.run_layer(layer, hidden, mask, extra)
        return model._classify(model.classifiers[-1], hidden, model._pool_input(hidden, attention_mask))


def layer_graph_plan(model) -> list[tuple[nn.Module, list[int]]]:
    """The layer graphs to export: (module, indices of the layers that run it), in order of first use.

    Every layer gets its own graph unless several layers run the same module (ALBERT's shared groups), which then
    share one graph holding all their classifiers.
    """
    plan: dict[int, tuple[nn.Module, list[int]]] = {}
    for i, module in enumerate(model.driver.layers(model.backbone)):
        plan.setdefault(id(module), (module, []))[1].append(i)
    return list(plan.values())
