"""An exported model inside the torch evaluation harness: :class:`OnnxEvalModel` gives a
:class:`~pabee.onnx.runtime.PabeeOnnxModel` the surface :mod:`pabee.evaluate` uses (torch tensors in, a
:class:`~pabee.modeling.PabeeOutput` out, ``num_labels``, ``num_layers``, eval mode), so ``pabee eval --backend
onnx`` runs the same sweep, timing, records and tables as the torch model. The conversions are zero-copy views."""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import SimpleNamespace

import torch

from .runtime import PabeeOnnxModel


class OnnxEvalModel:
    """A :class:`PabeeOnnxModel` called like ``PabeeForSequenceClassification`` in eval mode."""

    training = False

    def __init__(self, model: PabeeOnnxModel):
        self.onnx = model
        self.num_labels = model.num_labels
        self.num_layers = model.num_layers
        self.threads = model.threads
        # what the harness reads of a transformers config (labels, architecture), from the export's manifest
        self.config = SimpleNamespace(num_labels=model.num_labels, id2label=dict(model.id2label),
                                      model_type=model.manifest.get("model_type"))
        self.backend = "onnx" if model.quantized is None else f"onnx-{model.quantized}"

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, threads: int | None = None) -> OnnxEvalModel:
        """Load an export; ``threads`` defaults to torch's intra-op thread count, so both backends get the same."""
        return cls(PabeeOnnxModel.from_pretrained(folder, threads=torch.get_num_threads() if threads is None else threads))

    def eval(self) -> OnnxEvalModel:
        return self

    def train(self, mode: bool = True) -> OnnxEvalModel:
        if mode:
            raise ValueError("an ONNX export cannot be trained")
        return self

    def parameters(self) -> Iterator[torch.Tensor]:
        """One empty CPU tensor: callers read the model's device from its first parameter, and ONNX Runtime takes
        its inputs from CPU memory."""
        yield torch.empty(0)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, patience=None, exit_rule=None,
                 regression_threshold=None):
        from ..modeling import PabeeOutput

        out = self.onnx(
            _array(input_ids), _array(attention_mask), _array(token_type_ids),
            patience=patience, exit_rule=exit_rule, regression_threshold=regression_threshold,
        )
        return PabeeOutput._of_inference(torch.from_numpy(out.logits), torch.from_numpy(out.exit_layers))


def _array(tensor):
    return None if tensor is None else tensor.detach().cpu().numpy()
