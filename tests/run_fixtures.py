"""Tiny saved run folders (model + tokenizer + saved exit defaults), as ``pabee train`` leaves them."""

from __future__ import annotations

from pathlib import Path

import torch
from fixtures import save_tiny_bert
from transformers import BertTokenizerFast

from pabee.modeling import PabeeForSequenceClassification


def save_tiny_run(folder: Path, labels=("sad", "happy", "meh"), patience: int = 2, layers: int = 6,
                  seed: int = 0) -> Path:
    """A random tiny BERT classifier saved with its tokenizer and a default patience.

    Mean pooling (a random model's pooled first token barely depends on the input) and classifiers that share a
    random direction plus noise of half its size per layer: the layers agree on some inputs and not on others,
    so inputs exit at different layers and get different labels."""
    backbone = save_tiny_bert(folder.parent / f"{folder.name}-backbone", layers=layers, seed=seed)
    model = PabeeForSequenceClassification.from_pretrained(
        backbone, num_labels=len(labels), id2label=dict(enumerate(labels)), patience=patience, pooling="mean"
    )
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        shared = torch.randn_like(model.classifiers[0].weight)
        for head in model.classifiers:
            head.weight.copy_(shared + 0.5 * torch.randn_like(shared))
            head.bias.zero_()
    model.save_pretrained(folder)
    # the word-level vocab passed as ``vocab`` (transformers 5 ignores ``vocab_file``, leaving only special tokens)
    tokenizer = BertTokenizerFast(vocab=str(backbone / "vocab.txt"), do_lower_case=True)
    assert len(tokenizer) > 5
    tokenizer.save_pretrained(folder)
    return folder
