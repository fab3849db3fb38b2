"""The torch modules that become ONNX graphs: thin wrappers that call a pabee model's own code.

* :class:`EmbeddingsGraph`: token ids (and segment ids where the architecture has them) -> the hidden states
  entering layer 1, through the architecture driver's ``embed``.
* :class:`LayerGraph`: one encoder layer module and the internal classifiers of every layer that runs it
  (one, except for ALBERT's shared layer groups) -> the layer's output and those classifiers' logits (B, K, C).
* :class:`FullDepthGraph`: the whole network at full depth in one graph (embeddings, every layer, the last
  classifier): the plain export a user would otherwise deploy, used as the benchmark's baseline.

What depends only on the mask and the sequence length is computed once per batch, not in every layer graph: the
layer graphs take the additive attention mask (:func:`additive_mask`, the form the backbones' eager attention adds
to the attention scores) and, with mean pooling, the pooling weights (``model._pool_input``) as inputs, which a
runtime computes from the (B, S) 0/1 mask (:mod:`pabee.onnx.runtime`); MPNet's relative position bias
(1, heads, S, S), which depends only on the sequence length, is a second output of the embeddings graph and an input
of every layer graph. :func:`layer_graph_inputs` and :func:`embeddings_graph_outputs` name them for a model.
:class:`FullDepthGraph` takes the plain mask and computes everything itself, like any single-graph export.
"""

from __future__ import annotations

import torch
from torch import nn


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, S) 0/1 -> (B, 1, 1, S): 0 where a key may be attended to, the dtype's minimum where it is padding."""
    keep = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - keep) * torch.finfo(dtype).min


def has_position_bias(model) -> bool:
    """True when the driver gives every layer a per-forward extra input (MPNet's relative position bias, which
    depends only on the sequence length); asked of the driver on a 2-position probe."""
    with torch.no_grad():
        return model.driver.layer_extra(model.backbone, torch.zeros(1, 2, 1)) is not None


def embeddings_graph_outputs(model) -> list[str]:
    """The embeddings graph's outputs: hidden_states, and position_bias where the layers take one (MPNet)."""
    return ["hidden_states"] + (["position_bias"] if has_position_bias(model) else [])


def layer_graph_inputs(model) -> list[str]:
    """A layer graph's inputs: hidden_states (B,S,H), attention_bias (B,1,1,S) (the additive mask), pool_weights
    (B,1,S) with mean pooling (1/n on each row's n unpadded positions), position_bias (1,heads,S,S) for MPNet."""
    return (["hidden_states", "attention_bias"] + (["pool_weights"] if model.pabee_config.pooling == "mean" else [])
            + (["position_bias"] if has_position_bias(model) else []))


class EmbeddingsGraph(nn.Module):
    """input_ids (B,S) [, token_type_ids (B,S)] -> hidden_states (B,S,H) [, position_bias (1,heads,S,S)]."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.position_bias = has_position_bias(model)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None):
        model = self.model
        hidden = model.driver.embed(model.backbone, input_ids, token_type_ids)
        if not self.position_bias:
            return hidden
        return hidden, model.driver.layer_extra(model.backbone, hidden)


class LayerGraph(nn.Module):
    """The inputs :func:`layer_graph_inputs` names, in that order -> (hidden_states of the next layer, logits
    (B,K,C)).

    ``layer`` is one module of ``driver.layers(backbone)``; ``heads`` are the indices of the layers that run it
    (their classifiers' logits come out in that order). Pooling is the model's own ``_classify``: mean pooling with
    the given averaging weights, or the cls pooler.
    """

    def __init__(self, model, layer: nn.Module, heads: list[int]):
        super().__init__()
        self.model = model
        self.layer = layer
        self.heads = list(heads)
        self.inputs = layer_graph_inputs(model)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        named = dict(zip(self.inputs, inputs))
        model = self.model
        hidden = model.driver.run_layer(self.layer, named["hidden_states"], named["attention_bias"],
                                        named.get("position_bias"))
        pool = named.get("pool_weights")
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
