"""How to drive each supported encoder layer by layer: a small per-architecture table.

The backbone is the model ``transformers.AutoModel`` loads (BertModel, AlbertModel, ...). pabee never copies its
code: it calls the backbone's own embedding module, its own layer modules one at a time, and its own pooler, in the
same order and with the same arguments as the backbone's ``forward`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

Tensor = torch.Tensor


def _absolute_positions(config: object) -> int | None:
    """Position ids 0..S-1: every row of the position table is one input position."""
    return getattr(config, "max_position_embeddings", None)


@dataclass(frozen=True)
class BackboneDriver:
    """Per-architecture facts, as functions of the backbone module.

    embed(backbone, input_ids (B,S), token_type_ids (B,S) | None) -> hidden (B,S,H) entering layer 1
    layers(backbone) -> the module that computes each layer, in order (``num_layers(config)`` entries; ALBERT's
        shared groups appear once per layer they compute)
    run_layer(module, hidden (B,S,H), mask (prepared by ``prepare_mask``), extra) -> hidden (B,S,H)
    layer_extra(backbone, hidden (B,S,H)) -> extra per-forward input shared by every layer (MPNet's relative
        position bias (1, heads, S, S)), or None
    pool(backbone, hidden (B,S,H)) -> (B,H), or None when the architecture has no pooler (pabee adds its own)
    max_positions(config) -> the longest input (tokens, special tokens included) the position table takes, or None
        when the config does not say
    """

    embed: Callable[[nn.Module, Tensor, Tensor | None], Tensor]
    layers: Callable[[nn.Module], list[nn.Module]]
    run_layer: Callable[[nn.Module, Tensor, Tensor | None, Tensor | None], Tensor]
    num_layers: Callable[[object], int]
    pooler: Callable[[nn.Module], Callable[[Tensor], Tensor] | None]
    layer_extra: Callable[[nn.Module, Tensor], Tensor | None] = lambda backbone, hidden: None
    uses_token_type_ids: bool = True
    max_positions: Callable[[object], int | None] = _absolute_positions

    def prepare_mask(self, backbone: nn.Module, hidden: Tensor, attention_mask: Tensor | None) -> Tensor | None:
        """The mask the layers expect (format depends on the attention implementation), from a (B,S) 0/1 mask.

        None when no position is masked (``attention_mask`` None or all ones): every attention implementation then
        attends everywhere, which is what the all-ones mask means, without building or adding a mask.
        """
        if attention_mask is None or bool(attention_mask.all()):
            return None
        return create_bidirectional_mask(config=backbone.config, inputs_embeds=hidden, attention_mask=attention_mask)


def trim_layer_extra(extra: Tensor | None, seq_len: int) -> Tensor | None:
    """Cut a (1, heads, S, S) position bias down to the first ``seq_len`` positions."""
    if extra is None or extra.size(-1) == seq_len:
        return extra
    return extra[..., :seq_len, :seq_len]


def _positions_after_padding_idx(padding_idx: Callable[[object], int]) -> Callable[[object], int | None]:
    """Position ids padding_idx+1..padding_idx+S (RoBERTa, XLM-R, MPNet): the first padding_idx+1 rows of the
    position table are never an input position (514 positions, padding_idx 1: inputs of up to 512 tokens)."""

    def limit(config: object) -> int | None:
        size = _absolute_positions(config)
        return None if size is None else size - padding_idx(config) - 1

    return limit


# --- BERT family: BERT, RoBERTa, ELECTRA (same encoder layout: embeddings -> encoder.layer[i] -> pooler) ---------


def _bert_embed(backbone: nn.Module, input_ids: Tensor, token_type_ids: Tensor | None) -> Tensor:
    return backbone.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)


def _electra_embed(backbone: nn.Module, input_ids: Tensor, token_type_ids: Tensor | None) -> Tensor:
    hidden = backbone.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    project = getattr(backbone, "embeddings_project", None)  # only when embedding size != hidden size
    return project(hidden) if project is not None else hidden


def _call_layer(module: nn.Module, hidden: Tensor, mask: Tensor | None, extra: Tensor | None) -> Tensor:
    return module(hidden, mask)


def _encoder_layers(backbone: nn.Module) -> list[nn.Module]:
    return list(backbone.encoder.layer)


def _hidden_layers(config: object) -> int:
    return config.num_hidden_layers


def _own_pooler(backbone: nn.Module) -> Callable[[Tensor], Tensor] | None:
    return getattr(backbone, "pooler", None)


_BERT = BackboneDriver(
    embed=_bert_embed, layers=_encoder_layers, run_layer=_call_layer, num_layers=_hidden_layers, pooler=_own_pooler
)
# RobertaEmbeddings numbers positions from config.pad_token_id + 1
_ROBERTA = replace(_BERT, max_positions=_positions_after_padding_idx(lambda config: config.pad_token_id or 0))
_ELECTRA = BackboneDriver(
    embed=_electra_embed, layers=_encoder_layers, run_layer=_call_layer, num_layers=_hidden_layers, pooler=lambda b: None
)

# --- ALBERT: embeddings -> embedding_hidden_mapping_in -> shared layer groups ------------------------------------


def _albert_embed(backbone: nn.Module, input_ids: Tensor, token_type_ids: Tensor | None) -> Tensor:
    hidden = backbone.embeddings(input_ids, token_type_ids=token_type_ids)
    return backbone.encoder.embedding_hidden_mapping_in(hidden)


def _albert_layers(backbone: nn.Module) -> list[nn.Module]:
    # AlbertTransformer.forward: layer i runs group int(i / (num_hidden_layers / num_hidden_groups)).
    config = backbone.config
    groups = backbone.encoder.albert_layer_groups
    per_group = config.num_hidden_layers / config.num_hidden_groups
    return [groups[int(i / per_group)] for i in range(config.num_hidden_layers)]


def _albert_pooler(backbone: nn.Module) -> Callable[[Tensor], Tensor] | None:
    if getattr(backbone, "pooler", None) is None:
        return None
    return lambda hidden: backbone.pooler_activation(backbone.pooler(hidden[:, 0]))


_ALBERT = BackboneDriver(
    embed=_albert_embed, layers=_albert_layers, run_layer=_call_layer, num_layers=_hidden_layers, pooler=_albert_pooler
)

# --- MPNet: relative position bias computed once per forward and given to every layer --------------------------


def _mpnet_embed(backbone: nn.Module, input_ids: Tensor, token_type_ids: Tensor | None) -> Tensor:
    return backbone.embeddings(input_ids=input_ids)


def _mpnet_run_layer(module: nn.Module, hidden: Tensor, mask: Tensor | None, extra: Tensor | None) -> Tensor:
    return module(hidden, mask, extra)[0]


def _mpnet_position_bias(backbone: nn.Module, hidden: Tensor) -> Tensor:
    # The bias depends only on the sequence length; computing it for one row (1, heads, S, S) and letting it
    # broadcast over the batch gives the same values as MPNetEncoder's (B, heads, S, S) copy.
    return backbone.encoder.compute_position_bias(hidden[:1])


_MPNET = BackboneDriver(
    embed=_mpnet_embed,
    layers=_encoder_layers,
    run_layer=_mpnet_run_layer,
    num_layers=_hidden_layers,
    pooler=_own_pooler,
    layer_extra=_mpnet_position_bias,
    uses_token_type_ids=False,
    max_positions=_positions_after_padding_idx(lambda config: 1),  # MPNetEmbeddings fixes padding_idx at 1
)

# --- DistilBERT: embeddings -> transformer.layer[i]; no pooler -------------------------------------------------


def _distilbert_embed(backbone: nn.Module, input_ids: Tensor, token_type_ids: Tensor | None) -> Tensor:
    return backbone.embeddings(input_ids)


_DISTILBERT = BackboneDriver(
    embed=_distilbert_embed,
    layers=lambda backbone: list(backbone.transformer.layer),
    run_layer=_call_layer,
    num_layers=lambda config: config.n_layers,
    pooler=lambda b: None,
    uses_token_type_ids=False,
)

DRIVERS: dict[str, BackboneDriver] = {
    "bert": _BERT,
    "roberta": _ROBERTA,
    "xlm-roberta": _ROBERTA,
    "electra": _ELECTRA,
    "albert": _ALBERT,
    "mpnet": _MPNET,
    "distilbert": _DISTILBERT,
}


def supported_model_types() -> list[str]:
    """The ``config.model_type`` values pabee can wrap."""
    return sorted(DRIVERS)


def get_driver(model_type: str) -> BackboneDriver:
    """The driver for ``model_type``; a ValueError naming the supported ones otherwise."""
    try:
        return DRIVERS[model_type]
    except KeyError:
        raise ValueError(
            f"unsupported architecture {model_type!r}: pabee supports {', '.join(supported_model_types())}"
        ) from None
