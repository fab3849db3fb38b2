"""Tiny randomly initialised encoders of every supported architecture (hidden 32), for fast tests."""

from __future__ import annotations

import torch
from transformers import (
    AlbertConfig,
    AutoModel,
    BertConfig,
    DistilBertConfig,
    ElectraConfig,
    MPNetConfig,
    RobertaConfig,
    XLMRobertaConfig,
)

VOCAB = 99
COMMON = dict(vocab_size=VOCAB, hidden_size=32, num_attention_heads=4, intermediate_size=37)


def tiny_config(arch: str, num_labels: int = 3, layers: int = 4):
    """A small config of ``arch``; ALBERT gets several layer groups with two layers each."""
    if arch == "bert":
        config = BertConfig(num_hidden_layers=layers, **COMMON)
    elif arch == "albert":
        config = AlbertConfig(
            num_hidden_layers=6, num_hidden_groups=3, inner_group_num=2, embedding_size=16, **COMMON
        )
    elif arch == "mpnet":
        config = MPNetConfig(num_hidden_layers=layers, **COMMON)
    elif arch == "roberta":
        config = RobertaConfig(num_hidden_layers=layers, **COMMON)
    elif arch == "xlm-roberta":
        config = XLMRobertaConfig(num_hidden_layers=layers, **COMMON)
    elif arch == "electra":
        config = ElectraConfig(num_hidden_layers=layers, embedding_size=16, **COMMON)
    elif arch == "distilbert":
        config = DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=layers, n_heads=4, hidden_dim=37)
    else:
        raise KeyError(arch)
    config.num_labels = num_labels
    return config


def tiny_backbone(arch: str, num_labels: int = 3, layers: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    return AutoModel.from_config(tiny_config(arch, num_labels, layers)).eval()


ARCHS = ["bert", "albert", "mpnet", "roberta", "xlm-roberta", "electra", "distilbert"]


def random_batch(batch: int = 6, max_len: int = 12, seed: int = 1, min_len: int = 3):
    """Right-padded token ids (B,S) with varied lengths and the matching 0/1 attention mask."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (batch,), generator=g)
    lengths[0] = max_len
    ids = torch.randint(5, VOCAB, (batch, max_len), generator=g)
    mask = (torch.arange(max_len)[None, :] < lengths[:, None]).long()
    ids = ids * mask + 1 * (1 - mask)  # pad id 1 (a real id for every tiny vocab; the mask hides it)
    return ids, mask


def one_at_a_time(model, ids, mask, **kw):
    """Run every row alone (its padding cut off): logits (B,C) and exit layers (B,), for batched == alone tests."""
    logits, exits = [], []
    for r in range(ids.size(0)):
        n = int(mask[r].sum())
        out = model(ids[r : r + 1, :n], attention_mask=mask[r : r + 1, :n], **kw)
        logits.append(out.logits)
        exits.append(out.exit_layers)
    return torch.cat(logits), torch.cat(exits)


def spread_model(num_labels: int, layers: int = 6, seed: int = 0):
    """A tiny mean-pooled BERT whose heads share a direction plus noise: rows exit at different layers."""
    from pabee.config import PabeeConfig
    from pabee.modeling import PabeeForSequenceClassification

    model = PabeeForSequenceClassification(tiny_backbone("bert", num_labels, layers, seed), PabeeConfig(pooling="mean"))
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        shared = torch.randn_like(model.classifiers[0].weight) * 2
        for head in model.classifiers:
            head.weight.copy_(shared + 0.7 * torch.randn_like(shared))
            head.bias.zero_()
    return model.eval()


def random_features(n: int, num_labels: int, seed: int = 0, vocab: int = VOCAB):
    """n random token-id rows (lengths 4..15) with labels (regression targets when num_labels == 1)."""
    import numpy as np

    from pabee.features import Features

    rng = np.random.default_rng(seed)
    ids = [[2, *rng.integers(5, vocab, rng.integers(2, 14)).tolist(), 3] for _ in range(n)]
    labels = rng.normal(2.5, 1.0, n).tolist() if num_labels == 1 else rng.integers(0, num_labels, n).tolist()
    return Features(ids, None, labels)
