"""The early-exit backend of the torch model: :class:`TorchBackend` runs a ``PabeeForSequenceClassification``'s
own modules (through its per-architecture driver) for :func:`pabee.early_exit.run_early_exit`, and the padding
trimming that keeps a shrinking batch no wider than its longest row."""

from __future__ import annotations

import numpy as np
import torch

from .backbones import trim_layer_extra


class TorchState:
    """The running rows of one forward: hidden (A,S,H); attention_mask (A,S) or None when no position is padding;
    mask and extra as the driver prepared them for the layers; pool as ``model._pool_input`` made it."""

    __slots__ = ("hidden", "attention_mask", "mask", "extra", "pool")

    def __init__(self, hidden, attention_mask, mask, extra, pool):
        self.hidden = hidden
        self.attention_mask = attention_mask
        self.mask = mask
        self.extra = extra
        self.pool = pool


class TorchBackend:
    """:class:`pabee.early_exit.ExitBackend` over a model's modules; made once per forward (cheap: it only looks
    the modules up). ``classify`` hands the rule float32 (or float64) numpy logits; :meth:`to_tensor` turns the
    loop's answer back into a tensor of the classifiers' dtype and device."""

    def __init__(self, model):
        driver, backbone = model.driver, model.backbone
        self.num_layers = model.num_layers
        self._model = model
        self._driver = driver
        self._backbone = backbone
        self._layers = driver.layers(backbone)
        self._run = driver.run_layer
        self._heads = list(model.classifiers)
        self._classify = model._classify  # looked up on the instance, so a test may wrap it
        self._dtype = None

    def start(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> TorchState:
        """The state entering layer 1: hidden (B,S,H) from the embeddings; attention_mask (B,S), None when no
        position is padding."""
        mask = self._driver.prepare_mask(self._backbone, hidden, attention_mask)
        if mask is None:
            attention_mask = None
        extra = self._driver.layer_extra(self._backbone, hidden)
        return TorchState(hidden, attention_mask, mask, extra, self._model._pool_input(hidden, attention_mask))

    def run_layer(self, i: int, state: TorchState) -> TorchState:
        state.hidden = self._run(self._layers[i], state.hidden, state.mask, state.extra)
        return state

    def classify(self, i: int, state: TorchState) -> np.ndarray:
        logits = self._classify(self._heads[i], state.hidden, state.pool)  # (A,C)
        self._dtype = logits.dtype
        return tensor_to_numpy(logits)

    def keep_rows(self, state: TorchState, keep: np.ndarray) -> TorchState:
        index = torch.from_numpy(keep).to(state.hidden.device)
        state.hidden = state.hidden[index]
        if state.attention_mask is not None:  # the rows left may need fewer columns, or none padded
            state.hidden, state.attention_mask = trim_trailing_columns(state.hidden, state.attention_mask[index])
            state.mask = self._driver.prepare_mask(self._backbone, state.hidden, state.attention_mask)
            if state.mask is None:
                state.attention_mask = None
            state.extra = trim_layer_extra(state.extra, state.hidden.size(1))
            state.pool = self._model._pool_input(state.hidden, state.attention_mask)
        elif state.pool is not None:
            state.pool = state.pool[index]
        return state

    def to_tensor(self, logits: np.ndarray, device: torch.device) -> torch.Tensor:
        """The loop's logits (B,C) as a tensor on ``device``, in the dtype the classifiers gave."""
        return torch.from_numpy(logits).to(device=device, dtype=self._dtype)


def tensor_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A detached CPU numpy view (zero-copy for a CPU float32 tensor); half precision becomes float32."""
    tensor = tensor.detach()
    if tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.float()
    return tensor.cpu().numpy()


def trim_trailing_padding(input_ids, attention_mask, token_type_ids):
    """Drop columns on the right that are padding in every row (right-padded batches). (B,S) -> (B,S')."""
    keep = needed_length(attention_mask)
    if keep == input_ids.size(1):
        return input_ids, attention_mask, token_type_ids
    if token_type_ids is not None:
        token_type_ids = token_type_ids[:, :keep]
    return input_ids[:, :keep], attention_mask[:, :keep], token_type_ids


def trim_trailing_columns(hidden, attention_mask):
    """Same as :func:`trim_trailing_padding` for hidden states (B,S,H) after rows left the batch."""
    keep = needed_length(attention_mask)
    if keep == hidden.size(1):
        return hidden, attention_mask
    return hidden[:, :keep], attention_mask[:, :keep]


def needed_length(attention_mask: torch.Tensor) -> int:
    """1 + the last column that some row attends to (at least 1)."""
    if bool(attention_mask[:, -1].any()):
        return attention_mask.size(1)
    used = attention_mask.bool().any(dim=0)  # (S,)
    nonzero = used.nonzero()
    return max(int(nonzero[-1]) + 1, 1) if nonzero.numel() else attention_mask.size(1)
