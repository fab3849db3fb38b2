"""int8 exports: the settings are recorded in pabee_onnx.json, the pabee layer graphs and the plain single-graph
baseline are quantized alike (one int8 scale per output channel, 7-bit weights), and every ONNX Runtime session
of a model takes its memory from the one shared arena."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from test_onnx import save_run

from pabee.onnx import runtime
from pabee.onnx.export import INT8_SETTINGS, export_full_depth_graph, export_onnx, load_model_for_export


def quantized_weights(path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """weight name -> (int8 values, scales) of every weight the quantizer wrote into the graph at ``path``."""
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    return {name[: -len("_quantized")]: (value, inits[name[: -len("_quantized")] + "_scale"])
            for name, value in inits.items() if name.endswith("_quantized")}


@pytest.fixture(scope="module")
def int8_exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    run = save_run(root / "run", "bert")
    out = export_onnx(run, root / "pabee-int8", quantize="int8")
    full = export_full_depth_graph(load_model_for_export(run), root / "full-int8.onnx", quantize="int8")
    return out, full


def test_int8_settings_are_recorded(int8_exports):
    out, _ = int8_exports
    quantization = json.loads((out / "pabee_onnx.json").read_text())["quantization"]
    assert quantization == {"precision": "int8", "method": "onnxruntime.quantization.quantize_dynamic",
                            **INT8_SETTINGS, "graphs": "layers"}
    assert quantization["per_channel"] is True and quantization["reduce_range"] is True
    assert quantization["weight_type"] == "QInt8" and quantization["op_types"] == ["MatMul"]


def test_layer_graphs_and_plain_graph_are_quantized_alike(int8_exports):
    """Every linear layer's weights (and each classifier's): int8 with one scale per output channel, in 7 bits, in
    the pabee layer graphs and in the plain single-graph baseline the benchmark compares them with."""
    out, full = int8_exports
    graphs = {"full": quantized_weights(full), **{i: quantized_weights(out / f"layer_{i}.onnx") for i in range(4)}}
    assert len(graphs["full"]) == 4 * 6 + 1  # 6 linear layers per encoder layer, and the last classifier
    assert all(len(weights) == 6 + 1 for key, weights in graphs.items() if key != "full")  # + the layer's classifier
    for weights in graphs.values():
        for values, scales in weights.values():
            assert values.dtype == np.int8 and scales.shape == (values.shape[1],)  # per output channel
            assert np.abs(values.astype(int)).max() <= 64  # reduce_range: 7 bits
    assert quantized_weights(out / "embeddings.onnx") == {}  # the embedding tables stay fp32


def test_sessions_share_one_cpu_arena(monkeypatch):
    assert runtime.shared_cpu_arena()
    assert runtime.session_options(1).get_session_config_entry("session.use_env_allocators") == "1"

    def refuse(*args, **kwargs):
        raise RuntimeError("not in this build")

    monkeypatch.setattr(runtime, "_SHARED_ARENA", [])
    monkeypatch.setattr(runtime.ort, "create_and_register_allocator", refuse)
    assert runtime.shared_cpu_arena() is False  # then every session keeps an arena of its own
    with pytest.raises(RuntimeError, match="use_env_allocators"):
        runtime.session_options(1).get_session_config_entry("session.use_env_allocators")


def test_int8_variants_benchmark_smoke(tmp_path):
    """benchmarks/int8_variants.py end to end on a tiny model: every variant scored at both batch sizes, the
    export's default among them, the page written (no timing assertions)."""
    from fixtures import write_glue_task
    from run_fixtures import save_tiny_run

    from benchmarks import int8_variants

    run = save_tiny_run(tmp_path / "run", labels=("entailment", "not_entailment"), layers=2)
    write_glue_task(tmp_path / "glue", "RTE", n=10)
    out = tmp_path / "int8.json"
    assert int8_variants.main(["--model", str(run), "--task-dir", str(tmp_path / "glue"), "--speed-examples", "3",
                               "--rounds", "1", "--output", str(out)]) == 0
    (report,) = json.loads(out.read_text())["runs"]
    rows = {r["name"]: r for r in report["variants"]}
    assert len(rows) == 8 and rows["per-channel 7-bit (pabee export default)"]["settings"] == INT8_SETTINGS
    assert rows["per-channel 8-bit, FFN output MatMuls fp32"]["fp32_nodes"] == 2  # one per layer
    for row in rows.values():
        assert 0 <= row["acc_bs1"] <= 1 and 0 <= row["agree_bs32"] <= 1 and row["speed_vs_first"] > 0
    assert "| per-tensor 8-bit (the old default) |" in out.with_suffix(".md").read_text()
