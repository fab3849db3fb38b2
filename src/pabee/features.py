"""Turning Examples into token ids, and pre-tokenized examples into dynamically padded batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .data import Example, label_to_id
from .tasks import TaskSpec


@dataclass
class Features:
    """Tokenized examples, unpadded. ``labels`` is None for unlabeled (test) data."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list[int] | list[float] | None

    def __len__(self) -> int:
        return len(self.input_ids)

    def rows(self) -> list[dict]:
        """One dict per example, as the transformers Trainer and its collators expect."""
        rows = []
        for i, ids in enumerate(self.input_ids):
            row = {"input_ids": ids, "attention_mask": [1] * len(ids)}
            if self.token_type_ids is not None:
                row["token_type_ids"] = self.token_type_ids[i]
            if self.labels is not None:
                row["labels"] = self.labels[i]
            rows.append(row)
        return rows


def tokenize_examples(tokenizer, task: TaskSpec, examples: Sequence[Example], max_seq_length: int) -> Features:
    """Tokenize (and truncate to ``max_seq_length``) without padding; labels become ids (floats for regression)."""
    if max_seq_length < 2:
        raise ValueError(f"max_seq_length must be >= 2, got {max_seq_length}")
    if not examples:
        raise ValueError("no examples to tokenize")
    texts_a = [e.text_a for e in examples]
    pairs = [e.text_b for e in examples]
    has_pairs = any(t is not None for t in pairs)
    encoded = tokenizer(
        texts_a,
        [t or "" for t in pairs] if has_pairs else None,
        truncation=True,
        max_length=max_seq_length,
        padding=False,
    )
    labels = None
    if all(e.label is not None for e in examples):
        labels = [label_to_id(task, e.label) for e in examples]
    return Features(encoded["input_ids"], encoded.get("token_type_ids"), labels)


def pad_batch(features: Features, indices: Sequence[int], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad the chosen examples to their longest one: input_ids / attention_mask / token_type_ids (B,S)."""
    longest = max(len(features.input_ids[i]) for i in indices)
    ids = torch.full((len(indices), longest), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(indices), longest), dtype=torch.long)
    types = torch.zeros((len(indices), longest), dtype=torch.long) if features.token_type_ids is not None else None
    for row, i in enumerate(indices):
        n = len(features.input_ids[i])
        ids[row, :n] = torch.tensor(features.input_ids[i])
        mask[row, :n] = 1
        if types is not None:
            types[row, :n] = torch.tensor(features.token_type_ids[i])
    batch = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        batch["token_type_ids"] = types
    return batch


def length_sorted_batches(features: Features, batch_size: int, pad_token_id: int) -> list[tuple[list[int], dict]]:
    """Batches of similar length (less padding), each with the original indices of its rows.

    At batch size 1 the order is the dataset order. Results do not depend on the grouping: the model gives every
    example the same answer alone or in any batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    order = list(range(len(features)))
    if batch_size > 1:
        order.sort(key=lambda i: len(features.input_ids[i]))
    batches = []
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        batches.append((indices, pad_batch(features, indices, pad_token_id)))
    return batches
