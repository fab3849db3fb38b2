"""The torch model as an early-exit backend: shrinking the batch keeps every per-forward input consistent with the
rows left (padding columns, attention mask, MPNet's position bias, mean-pooling weights), and logits come back in
the classifiers' dtype."""

import numpy as np
import pytest
import torch
from tiny_models import random_batch, tiny_backbone

from pabee.config import PabeeConfig
from pabee.exit_rules import PatienceRule
from pabee.modeling import PabeeForSequenceClassification
from pabee.torch_backend import TorchBackend, tensor_to_numpy

ATOL = 1e-5


def run_rows_alone(model, ids, mask, rows, depth):
    """Logits of classifier ``depth`` for ``rows`` run as a batch of their own, their padding trimmed."""
    width = int(mask[rows].sum(1).max())
    ids, mask = ids[rows, :width], mask[rows, :width]
    backend = TorchBackend(model)
    state = backend.start(model.driver.embed(model.backbone, ids, None), None if bool(mask.all()) else mask)
    for i in range(depth):
        state = backend.run_layer(i, state)
    return backend.classify(depth - 1, state)


@pytest.mark.parametrize(("arch", "pooling"), [("mpnet", "mean"), ("mpnet", "cls"), ("bert", "mean"), ("bert", "cls")])
def test_keep_rows_trims_the_batch_to_the_rows_left(arch, pooling):
    model = PabeeForSequenceClassification(tiny_backbone(arch, 3), PabeeConfig(pooling=pooling))
    ids, mask = random_batch(batch=5, max_len=12, seed=2)  # row 0 is the longest (12 tokens)
    lengths = mask.sum(1).tolist()
    kept = [r for r in range(5) if lengths[r] < 12]
    with torch.no_grad():
        backend = TorchBackend(model)
        state = backend.start(model.driver.embed(model.backbone, ids, None), mask)
        state = backend.run_layer(0, state)
        state = backend.keep_rows(state, np.array([r in kept for r in range(5)]))
        width = max(lengths[r] for r in kept)
        assert state.hidden.shape[:2] == (len(kept), width) and state.attention_mask.shape == (len(kept), width)
        if arch == "mpnet":
            assert state.extra.shape[-2:] == (width, width)
        if pooling == "mean":
            assert state.pool.shape == (len(kept), 1, width)
        for i in range(1, model.num_layers):
            state = backend.run_layer(i, state)
        np.testing.assert_allclose(backend.classify(model.num_layers - 1, state),
                                   run_rows_alone(model, ids, mask, kept, model.num_layers), atol=ATOL, rtol=0)
        # keeping only rows of one length leaves nothing padded: the mask is dropped, pooling weights follow
        same = [r for r in kept if lengths[r] == lengths[kept[0]]]
        state = backend.keep_rows(state, np.array([r in same for r in kept]))
        assert state.attention_mask is None and state.mask is None
        assert state.hidden.shape[:2] == (len(same), lengths[kept[0]])
        if pooling == "mean":
            assert state.pool.shape == (len(same), 1, lengths[kept[0]])


def test_half_precision_logits_keep_their_dtype_and_decide_in_float32():
    model = PabeeForSequenceClassification(tiny_backbone("bert", 3), PabeeConfig()).to(torch.bfloat16)
    torch.manual_seed(3)
    for head in model.classifiers:
        torch.nn.init.normal_(head.weight, std=1.0)
    ids, mask = random_batch(batch=8)
    with torch.no_grad():
        full = model(ids, attention_mask=mask, output_all_layers=True)
        for patience in (1, 2):
            out = model(ids, attention_mask=mask, patience=patience)
            assert out.logits.dtype == torch.bfloat16 and out.exit_layers.dtype == torch.long
            expected = PatienceRule(patience).exit_layers(tensor_to_numpy(full.all_logits))
            assert out.exit_layers.tolist() == expected.tolist()
