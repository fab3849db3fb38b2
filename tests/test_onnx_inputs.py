"""The per-batch inputs of the layer graphs (export format 2): the additive mask, the mean-pooling weights and
MPNet's relative position bias are computed once per batch, cut down with the batch when rows leave, and give the
torch model's answers; exports of format 1 (everything computed inside every layer graph) still run."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from test_onnx import save_run
from tiny_models import random_batch, tiny_backbone

from pabee.config import PabeeConfig
from pabee.exit_rules import PatienceRule
from pabee.modeling import PabeeForSequenceClassification
from pabee.onnx import PabeeOnnxModel
from pabee.onnx.export import _export, export_onnx
from pabee.onnx.graphs import additive_mask
from pabee.onnx.layer_inputs import attention_bias, pool_weights
from pabee.onnx.runtime import OnnxBackend


@pytest.fixture(scope="module")
def mpnet(tmp_path_factory):
    root = tmp_path_factory.mktemp("mpnet")
    run = save_run(root / "run", "mpnet")
    export_onnx(run, root / "onnx")
    return PabeeForSequenceClassification.from_pretrained(run), PabeeOnnxModel.from_pretrained(root / "onnx", threads=1)


def op_types(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_mpnet_position_bias_comes_from_the_embeddings_graph(mpnet):
    _, onnx_model = mpnet
    manifest = onnx_model.manifest
    assert manifest["format_version"] == 2
    assert manifest["embedding_outputs"] == ["hidden_states", "position_bias"]
    assert manifest["layer_inputs"] == ["hidden_states", "attention_bias", "pool_weights", "position_bias"]
    # the bucketing of relative positions (a Log) runs in the embeddings graph only, not in every layer graph
    assert "Log" in op_types(onnx_model.folder / "embeddings.onnx")
    for i in range(onnx_model.num_layers):
        ops = op_types(onnx_model.folder / f"layer_{i}.onnx")
        assert "Log" not in ops and "ReduceSum" not in ops, ops  # nor the pooling weights' sum


def test_mpnet_bias_is_cut_with_the_padding_when_the_longest_rows_leave(mpnet, monkeypatch):
    """The longest rows leave after layer 1: the others run on fewer columns, with the bias cut to match, and get
    the torch model's exits and logits (the torch model cuts its own bias)."""
    model, onnx_model = mpnet
    ids, mask = random_batch(batch=5, max_len=11, seed=8, min_len=3)
    mask[1] = 1  # rows 0 and 1 are the longest; the rest end at least 2 positions earlier
    mask[2:, 9:] = 0
    lengths = mask.sum(1).numpy()

    def longest_leave_after_layer_1(self, state, logits, layer):
        return state, (lengths[: len(logits)] == 11) & (layer == 0)

    monkeypatch.setattr(PatienceRule, "step", longest_leave_after_layer_1)
    seen = []  # (hidden width, bias shape) of every layer run
    run_layer = OnnxBackend.run_layer

    def spy(self, i, state):
        seen.append((state.hidden.shape[1], state.feed["position_bias"].shape, state.feed["attention_bias"].shape))
        return run_layer(self, i, state)

    monkeypatch.setattr(OnnxBackend, "run_layer", spy)
    with torch.no_grad():
        ref = model(ids, attention_mask=mask, patience=3)
    out = onnx_model(ids.numpy(), mask.numpy(), patience=3)
    assert out.exit_layers.tolist() == ref.exit_layers.tolist() == [1, 1, 4, 4, 4]
    assert np.allclose(out.logits, ref.logits.numpy(), atol=1e-5)
    widths = [w for w, _, _ in seen]
    assert widths[0] == 11 and widths[1] == int(lengths[2:].max()) < 11
    assert all(bias[-2:] == (w, w) and attn[0] in (5, 3) and attn[-1] == w for w, bias, attn in seen)


def test_mask_inputs_equal_the_torch_models_own():
    model = PabeeForSequenceClassification(tiny_backbone("bert"), PabeeConfig(pooling="mean"))
    _, mask = random_batch(batch=4, max_len=7, seed=2)
    hidden = torch.zeros(4, 7, 32)
    assert np.array_equal(attention_bias(mask.numpy()), additive_mask(mask, torch.float32).numpy())
    assert np.array_equal(pool_weights(mask.numpy()), model.eval()._pool_input(hidden, mask).numpy())


def test_keep_rows_cuts_every_input():
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    bias = np.arange(2 * 5 * 5, dtype=np.float32).reshape(1, 2, 5, 5)
    hidden = np.zeros((3, 5, 2), dtype=np.float32)
    backend = OnnxBackend([], ["hidden_states", "attention_bias", "pool_weights", "position_bias"])
    state = backend.start(hidden, mask, {"position_bias": bias})
    state = backend.keep_rows(state, np.array([False, True, True]))
    kept = mask[1:, :3]
    assert state.mask.tolist() == kept.tolist() and state.hidden.shape == (2, 3, 2)
    assert np.array_equal(state.feed["attention_bias"], attention_bias(kept))
    assert np.array_equal(state.feed["pool_weights"], pool_weights(kept))
    assert np.array_equal(state.feed["position_bias"], bias[..., :3, :3])
    assert all(v.flags.c_contiguous for v in state.feed.values())
    assert set(state.feed) == {"hidden_states", "attention_bias", "pool_weights", "position_bias"}
    with pytest.raises(ValueError, match="position_bias"):
        backend.start(hidden, mask)  # an embeddings graph without the bias the layers take


class FormatOneLayer(torch.nn.Module):
    """A layer graph as format 1 exported it: the plain mask in, the additive mask and the pooling weights made
    inside."""

    def __init__(self, model, i):
        super().__init__()
        self.model, self.i = model, i

    def forward(self, hidden, attention_mask):
        model = self.model
        layer = model.driver.layers(model.backbone)[self.i]
        hidden = model.driver.run_layer(layer, hidden, additive_mask(attention_mask, hidden.dtype), None)
        pool = model._pool_input(hidden, attention_mask)
        return hidden, model._classify(model.classifiers[self.i], hidden, pool)[:, None]


def test_format_one_exports_still_run(tmp_path):
    run = save_run(tmp_path / "run", "bert")
    out = export_onnx(run, tmp_path / "onnx")
    model = PabeeForSequenceClassification.from_pretrained(run).eval()
    manifest = json.loads((out / "pabee_onnx.json").read_text())
    hidden = torch.zeros(2, 6, 32)
    mask = torch.ones(2, 6, dtype=torch.long)
    dims = {0: "batch", 1: "sequence"}
    for i in range(model.num_layers):
        _export(FormatOneLayer(model, i), (hidden, mask), out / f"layer_{i}.onnx", ["hidden_states", "attention_mask"],
                ["next_hidden_states", "logits"], {"hidden_states": dims, "attention_mask": dims,
                                                    "next_hidden_states": dims, "logits": {0: "batch"}}, 17,
                "torchscript")
        manifest["files"][f"layer_{i}.onnx"] = (out / f"layer_{i}.onnx").stat().st_size
    manifest["format_version"] = 1
    del manifest["layer_inputs"], manifest["embedding_outputs"]
    (out / "pabee_onnx.json").write_text(json.dumps(manifest))
    old = PabeeOnnxModel.from_pretrained(out, threads=1)
    ids, mask = random_batch(batch=6, max_len=12, seed=3)
    for rule in ("patience:1", "patience:0"):
        with torch.no_grad():
            ref = model(ids, attention_mask=mask, exit_rule=rule)
        got = old(ids.numpy(), mask.numpy(), exit_rule=rule)
        assert got.exit_layers.tolist() == ref.exit_layers.tolist()
        assert np.allclose(got.logits, ref.logits.numpy(), atol=1e-5)
