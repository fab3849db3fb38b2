"""pabee export and the ONNX runtime: every architecture and exit rule gives the torch model's exit layers and
logits, alone and in padded batches; int8 exports run; the runtime needs no torch; bad folders fail in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import WORDS, write_glue_task
from run_fixtures import save_tiny_run
from tiny_models import ARCHS, random_batch, tiny_backbone
from transformers import BertTokenizerFast

from pabee.cli import main
from pabee.config import PabeeConfig
from pabee.modeling import PabeeForSequenceClassification
from pabee.onnx import PabeeOnnxModel
from pabee.onnx.export import export_full_depth_graph, export_onnx, load_model_for_export
from pabee.onnx.runtime import OnnxBackend, OnnxState, load_session

REPO = Path(__file__).resolve().parents[1]
CLS_POOLED = ("albert", "electra")  # the others use mean pooling: both poolings are exported


def spread_heads(model, seed):
    """Classifiers sharing a random direction plus noise: layers agree on some inputs and not on others, so rows
    exit at different layers (as in run_fixtures.save_tiny_run)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        shared = torch.randn_like(model.classifiers[0].weight)
        for head in model.classifiers:
            head.weight.copy_(shared + 0.5 * torch.randn_like(shared))
            head.bias.zero_()


def save_run(folder: Path, arch: str, num_labels: int = 3, layers: int = 4) -> Path:
    backbone = tiny_backbone(arch, num_labels=num_labels, layers=layers)
    pooling = "cls" if arch in CLS_POOLED else "mean"
    model = PabeeForSequenceClassification(backbone, PabeeConfig(pooling=pooling, patience=1))
    spread_heads(model, seed=len(arch))
    model.save_pretrained(folder)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab=str(vocab)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """arch -> (torch model, ONNX model) for the seven architectures and a regression BERT, exported once."""
    root = tmp_path_factory.mktemp("onnx")
    models = {}
    for name in [*ARCHS, "bert-regression"]:
        arch = name.split("-regression")[0]
        run = save_run(root / name, arch, num_labels=1 if name.endswith("regression") else 3)
        export_onnx(run, root / f"{name}-onnx")
        models[name] = (PabeeForSequenceClassification.from_pretrained(run),
                        PabeeOnnxModel.from_pretrained(root / f"{name}-onnx", threads=1))
    return models


def rules_for(model, ids, mask):
    """(exit rule, regression threshold) pairs covering every rule, the thresholds chosen from the model's own
    logits so that rows exit at different layers."""
    with torch.no_grad():
        all_logits = model(ids, attention_mask=mask, output_all_layers=True).all_logits
    if model.num_labels == 1:
        step = float((all_logits[1:] - all_logits[:-1]).abs().median())
        return [("patience:1", step), ("patience:2", step), ("patience:1", None), ("patience:0", None),
                ("layer:2", None)]
    probs = torch.softmax(all_logits[:-1], -1)
    entropy = -(probs * probs.log()).sum(-1)
    confidence = float(probs.max(-1).values.median())
    return [("patience:1", None), ("patience:2", None), ("patience:0", None), ("layer:2", None),
            (f"entropy:{float(entropy.median()):.6f}", None), (f"confidence:{confidence:.6f}", None),
            (f"hybrid:1@{float(probs.max(-1).values.quantile(0.3)):.6f}", None)]


@pytest.mark.parametrize("name", [*ARCHS, "bert-regression"])
def test_same_exits_and_logits_as_torch_alone_and_batched(exported, name):
    model, onnx_model = exported[name]
    ids, mask = random_batch(batch=6, max_len=12, seed=3)
    types = (torch.arange(12)[None, :] >= 5).long().expand(6, -1).contiguous() * mask  # a second segment
    if getattr(model.config, "type_vocab_size", 1) < 2:
        types = torch.zeros_like(ids)
    varied = set()
    for rule, threshold in rules_for(model, ids, mask):
        kw = {"exit_rule": rule, "regression_threshold": threshold}
        with torch.no_grad():
            ref = model(ids, attention_mask=mask, token_type_ids=types, **kw)
        out = onnx_model(ids.numpy(), mask.numpy(), types.numpy(), **kw)
        assert out.exit_layers.tolist() == ref.exit_layers.tolist(), rule
        assert np.allclose(out.logits, ref.logits.numpy(), atol=1e-5), rule
        for r in range(ids.size(0)):  # each row alone, its padding cut off: the same answer as in the batch
            n = int(mask[r].sum())
            alone = onnx_model(ids[r : r + 1, :n].numpy(), mask[r : r + 1, :n].numpy(), types[r : r + 1, :n].numpy(),
                               **kw)
            assert alone.exit_layers.tolist() == [int(ref.exit_layers[r])], rule
            assert np.allclose(alone.logits[0], ref.logits[r].numpy(), atol=1e-5), rule
        varied.add(tuple(out.exit_layers.tolist()))
    assert len(varied) > 2, "the rules must give different exits in this test"


def test_patience_argument_and_saved_default(exported):
    model, onnx_model = exported["bert"]
    ids, mask = random_batch(batch=5, max_len=9, seed=4)
    with torch.no_grad():
        default, two = model(ids, attention_mask=mask), model(ids, attention_mask=mask, patience=2)
    assert onnx_model(ids.numpy(), mask.numpy()).exit_layers.tolist() == default.exit_layers.tolist()  # saved: 1
    assert onnx_model(ids.numpy(), mask.numpy(), patience=2).exit_layers.tolist() == two.exit_layers.tolist()
    assert onnx_model(ids.numpy()).exit_layers.shape == (5,)  # no mask: every position counts
    with pytest.raises(ValueError, match="either exit_rule or patience"):
        onnx_model(ids.numpy(), patience=1, exit_rule="layer:1")
    with pytest.raises(ValueError, match="only for classification"):
        exported["bert-regression"][1](ids.numpy(), exit_rule="entropy:0.1")
    with pytest.raises(ValueError, match="at most"):
        onnx_model(np.ones((1, 600), dtype=np.int64))


def test_exit_decisions_come_from_the_shared_rule_objects(exported, monkeypatch):
    """Patch the one PatienceRule.step both models use: torch and ONNX follow it alike."""
    from pabee.exit_rules import PatienceRule

    def leave_odd_rows_after_layer_2(self, state, logits, layer):
        done = np.zeros(len(logits), dtype=bool)
        if layer == 1:
            done[1::2] = True
        return state, done

    monkeypatch.setattr(PatienceRule, "step", leave_odd_rows_after_layer_2)
    model, onnx_model = exported["mpnet"]
    ids, mask = random_batch(batch=5, max_len=10, seed=6)
    with torch.no_grad():
        ref = model(ids, attention_mask=mask, patience=3)
    out = onnx_model(ids.numpy(), mask.numpy(), patience=3)
    assert out.exit_layers.tolist() == ref.exit_layers.tolist() == [4, 2, 4, 2, 4]
    assert np.allclose(out.logits, ref.logits.numpy(), atol=1e-5)


def test_keep_rows_drops_rows_and_the_padding_they_leave():
    hidden = np.arange(3 * 5 * 2, dtype=np.float32).reshape(3, 5, 2)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    state = OnnxBackend([]).keep_rows(OnnxState(hidden, mask), np.array([False, True, True]))
    assert state.mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert np.array_equal(state.hidden, hidden[1:, :3]) and state.hidden.flags.c_contiguous


def test_int8_export_loads_and_runs_with_small_drift(exported, tmp_path):
    run = save_run(tmp_path / "run", "bert")
    export_onnx(run, tmp_path / "int8", quantize="int8")
    int8 = PabeeOnnxModel.from_pretrained(tmp_path / "int8", threads=1)
    assert int8.quantized == "int8" and int8.manifest["quantization"]["weight_type"] == "QInt8"
    ids, mask = random_batch(batch=6, max_len=12, seed=3)
    fp32 = exported["bert"][1](ids.numpy(), mask.numpy(), patience=0)
    out = int8(ids.numpy(), mask.numpy(), patience=0)
    assert out.logits.shape == fp32.logits.shape and out.exit_layers.tolist() == [4] * 6
    scale = np.abs(fp32.logits).max()
    assert 0 < np.abs(out.logits - fp32.logits).max() < 0.1 * max(scale, 1.0)  # quantized, and close
    assert int8(ids.numpy(), mask.numpy(), exit_rule="patience:1").exit_layers.min() >= 2


def test_full_depth_graph_matches_torch_full_depth(tmp_path):
    for arch in ("bert", "mpnet"):
        run = save_run(tmp_path / arch, arch)
        model = load_model_for_export(run)
        path = export_full_depth_graph(model, tmp_path / f"{arch}.onnx")
        session = load_session(path, threads=1)
        ids, mask = random_batch(batch=6, max_len=12, seed=5)
        feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        if arch == "bert":
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        (logits,) = session.run(None, feed)
        with torch.no_grad():
            ref = model(ids, attention_mask=mask, patience=0).logits.numpy()
        assert np.allclose(logits, ref, atol=1e-5), arch


def test_runtime_runs_without_torch(exported, tmp_path):
    """A subprocess where importing torch or transformers fails: load, tokenize and predict."""
    folder = exported["bert"][1].folder
    script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from pabee.onnx import PabeeOnnxModel
model = PabeeOnnxModel.from_pretrained({str(folder)!r}, threads=1)
out = model(**model.encode(["the cat sat on the mat .", "a good movie"]), patience=1)
assert out.logits.shape == (2, 3) and out.exit_layers.dtype.kind == "i", out
print(out.exit_layers.tolist())
"""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 2


# ---------------------------------------------------------------------------------------------- command line


def run_cli(capsys, *args):
    try:
        code = main([*map(str, args)])
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr()


@pytest.fixture(scope="module")
def rte_export(tmp_path_factory):
    """A tiny RTE-labelled run and its export (made with the command line)."""
    root = tmp_path_factory.mktemp("rte")
    run = save_tiny_run(root / "run", labels=("entailment", "not_entailment"), patience=2, layers=4)
    assert main(["export", str(run), str(root / "onnx")]) == 0
    return run, root / "onnx"


def test_export_folder_layout(rte_export):
    run, out = rte_export
    files = {p.name for p in out.iterdir()}
    assert {"embeddings.onnx", "layer_0.onnx", "layer_3.onnx", "pabee_onnx.json", "config.json", "pabee_config.json",
            "tokenizer.json"} <= files
    manifest = json.loads((out / "pabee_onnx.json").read_text())
    assert manifest["num_layers"] == 4 and manifest["id2label"] == {"0": "entailment", "1": "not_entailment"}
    assert manifest["pabee_config"]["patience"] == 2 and manifest["quantization"] is None
    assert manifest["check"]["fp32"]["max_abs_diff"] < 1e-4 and not any(out.parent.glob(".onnx.tmp-*"))


def test_albert_shares_one_graph_per_layer_group(exported):
    manifest = exported["albert"][1].manifest
    assert [e["graph"] for e in manifest["layers"]] == ["layer_group_0.onnx"] * 2 + ["layer_group_1.onnx"] * 2 + [
        "layer_group_2.onnx"] * 2
    assert [e["head"] for e in manifest["layers"]] == [0, 1] * 3


def test_eval_compares_backends_in_one_records_file(rte_export, tmp_path, capsys):
    run, out = rte_export
    data = write_glue_task(tmp_path / "glue", "RTE")
    common = ["--task_name", "RTE", "--data_dir", data, "--output_dir", tmp_path / "records", "--patience", "1,2",
              "--per_device_eval_batch_size", "1,8", "--disable_tqdm"]
    assert run_cli(capsys, "eval", "--model_name_or_path", run, *common)[0] == 0
    code, printed = run_cli(capsys, "eval", "--model_name_or_path", out, "--backend", "onnx", "--threads", "1", *common)
    assert code == 0 and "final@onnx" in printed.out
    records = json.loads((tmp_path / "records" / "eval_results.json").read_text())
    by_key = {(r["checkpoint"], r["patience"], r["batch_size"]): r for r in records}
    assert len(by_key) == len(records) == 12
    for (checkpoint, patience, batch_size), onnx_record in by_key.items():
        if checkpoint != "final@onnx":
            continue
        assert onnx_record["extra"]["backend"] == {"name": "onnx", "threads": 1}
        torch_record = by_key["final", patience, batch_size]
        assert onnx_record["exit_layer_histogram"] == torch_record["exit_layer_histogram"]
        assert onnx_record["metrics"] == pytest.approx(torch_record["metrics"])
    assert len({r["avg_exit_layer"] for r in records}) > 1


def test_predict_with_the_onnx_backend(rte_export, tmp_path, capsys):
    run, out = rte_export
    texts = tmp_path / "in.txt"
    texts.write_text("the cat sat on the mat.\ngood movie\tgreat film\nbad plot , slow and sad !\nfun film\n")
    _, torch_out = run_cli(capsys, "predict", run, "--input", texts, "--no_progress")
    code, onnx_out = run_cli(capsys, "predict", out, "--backend", "onnx", "--input", texts, "--no_progress")
    assert code == 0
    torch_records = [json.loads(line) for line in torch_out.out.splitlines()]
    onnx_records = [json.loads(line) for line in onnx_out.out.splitlines()]
    assert [(r["label"], r["exit_layer"]) for r in onnx_records] == [(r["label"], r["exit_layer"]) for r in torch_records]
    assert np.allclose([r["score"] for r in onnx_records], [r["score"] for r in torch_records], atol=1e-5)


def one_line_error(capsys, *args):
    code, printed = run_cli(capsys, *args)
    assert code == 2, printed
    # a warning printed before the error (e.g. a max_seq_length capped to the model's) is not part of it
    lines = [line for line in printed.err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1, printed.err
    assert "Traceback" not in printed.err
    return lines[0]


def test_bad_folders_give_one_line_errors(rte_export, tmp_path, capsys):
    run, out = rte_export
    texts = tmp_path / "in.txt"
    texts.write_text("a text\n")
    backbone = run.parent / f"{run.name}-backbone"  # a plain encoder: no pabee_config.json
    assert "not a trained pabee model" in one_line_error(capsys, "export", backbone, tmp_path / "x")
    assert "already an ONNX export" in one_line_error(capsys, "export", out, tmp_path / "x")
    assert "not empty" in one_line_error(capsys, "export", run, backbone)
    assert "is an ONNX export" in one_line_error(capsys, "predict", out, "--input", texts)
    assert "not an ONNX export" in one_line_error(capsys, "predict", run, "--backend", "onnx", "--input", texts)
    glue = ["--task_name", "RTE", "--data_dir", write_glue_task(tmp_path, "RTE")]
    assert "not an ONNX export" in one_line_error(capsys, "eval", "--model_name_or_path", run, "--backend", "onnx",
                                                  *glue)
    assert "--backend torch" in one_line_error(capsys, "eval", "--model_name_or_path", out, "--backend", "onnx",
                                               "--eval_all_checkpoints", "--output_dir", tmp_path / "ev", *glue)
    assert "evaluate it with --backend onnx" in one_line_error(capsys, "eval", "--model_name_or_path", out, *glue)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "manifest"])
def test_damaged_export_names_the_file(rte_export, tmp_path, capsys, damage):
    _, out = rte_export
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    graph = copy / "layer_1.onnx"
    if damage == "missing":
        graph.unlink()
    elif damage == "truncated":
        graph.write_bytes(graph.read_bytes()[:1000])
    elif damage == "garbage":
        graph.write_bytes(b"\xff" * graph.stat().st_size)  # same size: only the ONNX parser can tell
    else:
        (copy / "pabee_onnx.json").write_text("{not json")
    expected = "pabee_onnx.json" if damage == "manifest" else "layer_1.onnx"
    with pytest.raises(ValueError, match=expected):
        PabeeOnnxModel.from_pretrained(copy)
    texts = tmp_path / "in.txt"
    texts.write_text("a text\n")
    assert expected in one_line_error(capsys, "predict", copy, "--backend", "onnx", "--input", texts)


def test_export_arguments_are_checked(rte_export, tmp_path, capsys):
    run, _ = rte_export
    assert "--opset" in one_line_error(capsys, "export", run, tmp_path / "x", "--opset", "9")
    assert "exporter's highest" in one_line_error(capsys, "export", run, tmp_path / "x", "--opset", "99")
    assert "--quantize" in one_line_error(capsys, "export", run, tmp_path / "x", "--quantize", "int4")
    with pytest.raises(ValueError, match="quantization"):
        export_onnx(run, tmp_path / "x", quantize="int4")


@pytest.mark.slow
def test_dynamo_exporter(tmp_path):
    """The torch.export based exporter gives the same graphs (slow: seconds to tens of seconds per graph)."""
    run = save_run(tmp_path / "run", "distilbert", layers=1)
    export_onnx(run, tmp_path / "out", exporter="dynamo")
    model = PabeeOnnxModel.from_pretrained(tmp_path / "out", threads=1)
    assert model.manifest["exporter"] == "dynamo" and model.manifest["check"]["fp32"]["max_abs_diff"] < 1e-4
