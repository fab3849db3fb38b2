"""``pabee export``: a trained pabee model as a folder of ONNX graphs that runs without torch.

The folder (see :func:`export_onnx`)::

    embeddings.onnx          input_ids [, token_type_ids] (B,S) -> hidden_states (B,S,H)
                             [, position_bias (1,heads,S,S): MPNet's relative position bias]
    layer_<i>.onnx           hidden_states (B,S,H), attention_bias (B,1,1,S) [, pool_weights (B,1,S)]
                             [, position_bias] -> next_hidden_states, logits (B,1,C)
                             (ALBERT: layer_group_<g>.onnx, one per shared layer group, logits (B,K,C) of the
                             K layers that run the group)
    pabee_onnx.json          the manifest: layers -> (graph, head), labels, pooling, exit defaults, max length,
                             opset, quantization, file sizes
    config.json, pabee_config.json, tokenizer files    copies from the run folder

The graphs are traced from the model's own modules (:mod:`pabee.onnx.graphs`) and checked against the torch model
before the folder is written. The inputs that depend only on the mask and the sequence length (the additive
attention mask, the mean-pooling weights, MPNet's position bias) are computed once per batch and given to every
layer graph (:mod:`pabee.onnx.graphs`). ``quantize="int8"`` applies ONNX Runtime's dynamic int8 quantization
(int8 weights of the MatMuls, settings :data:`INT8_SETTINGS`) to the layer graphs.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..config import PABEE_CONFIG_NAME, is_pabee_folder
from . import MANIFEST_NAME, is_onnx_export
from .graphs import (
    EmbeddingsGraph,
    FullDepthGraph,
    LayerGraph,
    additive_mask,
    embeddings_graph_outputs,
    layer_graph_inputs,
    layer_graph_plan,
)
from .runtime import FORMAT, FORMAT_VERSION, LAYER_OUTPUTS, OnnxBackend, graph_names, load_session

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
MIN_OPSET = 14  # the oldest opset tried (14, 17 and 18 reproduce the torch model)
EXPORTERS = ("torchscript", "dynamo")
QUANTIZATIONS = ("int8",)
QUANTIZED_OPS = ["MatMul"]  # the weights of every linear layer and classifier; embeddings (Gather) stay fp32
# ``pabee export --quantize int8`` (and the benchmarks' plain single-graph int8 baseline): int8 weights with one
# scale per output channel, in 7 bits (reduce_range: no int16 overflow in the u8 x s8 kernels of CPUs without VNNI),
# activations quantized per tensor at run time. On the README's MiniLM-L6 RTE model (dev set, batch size 1) this
# cut the mean |logit change| against fp32 from 0.31 (one scale per tensor, 8 bits) to 0.12 and the predictions
# that differ from fp32 from 6.5 % to 3.2 %, for a few % of int8 speed.
INT8_SETTINGS = {"weight_type": "QInt8", "per_channel": True, "reduce_range": True, "op_types": QUANTIZED_OPS,
                 "extra_options": {"MatMulConstBOnly": True}}
CHECK_TOLERANCE = 1e-3  # max |logit difference| between the exported graphs and torch, relative to the logits' scale
COPIED_FILES = ("config.json", PABEE_CONFIG_NAME, "pabee_run.json")


def max_opset(exporter: str) -> int:
    """The highest opset the installed torch.onnx exporter writes (20 / 23 for torch 2.13's torchscript / dynamo)."""
    from torch.onnx import _constants

    name = "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET" if exporter == "torchscript" else "ONNX_MAX_OPSET"
    return int(getattr(_constants, name, 20))


def load_model_for_export(run_dir: str | os.PathLike):
    """The trained model in ``run_dir`` in eval mode, with eager attention (the form the graphs are traced in);
    a one-line ValueError when the folder is not a trained pabee model."""
    from ..modeling import WEIGHTS_NAME, PabeeForSequenceClassification

    folder = Path(run_dir)
    if not folder.is_dir():
        raise ValueError(f"model folder not found: {folder}")
    if is_onnx_export(folder):
        raise ValueError(f"{folder} is already an ONNX export: give the trained model's folder")
    if not is_pabee_folder(folder) or not (folder / WEIGHTS_NAME).is_file():
        raise ValueError(
            f"{folder} is not a trained pabee model (no {PABEE_CONFIG_NAME} and {WEIGHTS_NAME}): train one with pabee train"
        )
    return PabeeForSequenceClassification.from_pretrained(folder, attn_implementation="eager").eval()


def export_onnx(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    quantize: str | None = None,
    opset: int = DEFAULT_OPSET,
    exporter: str = "torchscript",
) -> Path:
    """Export the trained model in ``run_dir`` to ``out_dir`` (see the module docstring); returns ``out_dir``.

    ``quantize``: None (fp32) or "int8". ``opset``: the ONNX opset of the graphs. ``exporter``: "torchscript"
    (torch.onnx's tracing exporter, fast) or "dynamo" (torch.export based). The folder is assembled beside
    ``out_dir`` and moved into place at the end, so an interrupted export leaves nothing half-written; an existing
    ``out_dir`` is replaced only when it is empty or an earlier export. ValueError (one line) for bad arguments,
    a folder that is not a trained model or graphs that do not reproduce the torch model.
    """
    if quantize not in (None, *QUANTIZATIONS):
        raise ValueError(f"unknown quantization {quantize!r}; choose {', '.join(QUANTIZATIONS)}")
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"opset must be an integer >= {MIN_OPSET}, got {opset!r}")
    if opset > max_opset(exporter):
        raise ValueError(f"opset {opset} is above the {exporter} exporter's highest, {max_opset(exporter)}")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    target = _check_out_dir(run_dir, out_dir)
    model = load_model_for_export(run_dir)
    tokenizer = _load_tokenizer(run_dir)
    staging = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        manifest = _write_graphs(model, staging, opset, exporter)
        check = {"fp32": check_export(model, staging, manifest)}
        manifest["quantization"] = None
        if quantize:
            for name in dict.fromkeys(entry["graph"] for entry in manifest["layers"]):
                quantize_graph(staging / name, staging / name)
            manifest["quantization"] = {"precision": "int8", "method": "onnxruntime.quantization.quantize_dynamic",
                                        **INT8_SETTINGS, "graphs": "layers"}
            check["int8"] = check_export(model, staging, manifest, tolerance=None)  # recorded, not enforced
        tokenizer.save_pretrained(staging)
        for name in COPIED_FILES:
            if (run_dir / name).is_file():
                shutil.copyfile(run_dir / name, staging / name)
        manifest.update(_model_facts(model, run_dir, tokenizer), opset=opset, exporter=exporter, check=check)
        graphs = [manifest["embeddings"], *dict.fromkeys(e["graph"] for e in manifest["layers"])]
        manifest["files"] = {name: (staging / name).stat().st_size for name in graphs}
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _move_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def export_full_depth_graph(
    model, path: str | os.PathLike, quantize: str | None = None, opset: int = DEFAULT_OPSET,
    exporter: str = "torchscript",
) -> Path:
    """The whole network at full depth in one graph (embeddings, every layer, the last classifier):
    input_ids, attention_mask [, token_type_ids] (B,S) -> logits (B,C). The plain export a user would deploy
    instead of early exit, for comparisons; ``model`` is a model from :func:`load_model_for_export`.
    ``quantize="int8"`` quantizes it like the layer graphs (:data:`INT8_SETTINGS`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids, mask, types = _sample_inputs(model)
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if types is not None else [])
    args = (ids, mask) + ((types,) if types is not None else ())
    _export(FullDepthGraph(model), args, path, names, ["logits"], {n: {0: "batch", 1: "sequence"} for n in names},
            opset, exporter)
    if quantize:
        quantize_graph(path, path)
    return path


def quantize_graph(source: Path, target: Path, settings: dict | None = None) -> None:
    """Dynamic int8 quantization (int8 MatMul weights, activations quantized at run time) of one graph, with
    ``settings`` like :data:`INT8_SETTINGS` (the default): weight_type ("QInt8" or "QUInt8"), per_channel,
    reduce_range, op_types, extra_options of ``onnxruntime.quantization.quantize_dynamic``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    settings = INT8_SETTINGS if settings is None else settings

    tmp = target.with_name(f".{target.name}.int8")
    hint = _QuantizerHint()
    root = logging.getLogger()
    root.addFilter(hint)
    try:
        quantize_dynamic(source, tmp, op_types_to_quantize=list(settings["op_types"]),
                         weight_type=QuantType[settings["weight_type"]], per_channel=settings["per_channel"],
                         reduce_range=settings["reduce_range"], extra_options=dict(settings["extra_options"]))
    finally:
        root.removeFilter(hint)
    os.replace(tmp, target)


class _QuantizerHint(logging.Filter):
    """Drops the quantizer's advice to run its pre-processing first (tried: the same int8 outputs on these graphs,
    at several seconds per graph), which it logs on the root logger once per graph."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def check_export(model, folder: Path, manifest: dict, tolerance: float | None = CHECK_TOLERANCE) -> dict:
    """Run the graphs in ``folder`` on a small padded batch and compare every layer's logits with the torch
    model's; ValueError when they differ by more than ``tolerance`` relative to the logits' scale (None: only
    measure). Returns {"max_abs_diff": ..., "batch": ..., "sequence": ...} for the manifest."""
    ids, mask, types = _sample_inputs(model)
    with torch.inference_mode():
        reference = model(ids, attention_mask=mask, token_type_ids=types, output_all_layers=True).all_logits.numpy()
    feed = {"input_ids": ids.numpy()}
    if types is not None:
        feed["token_type_ids"] = types.numpy()
    embedding_outputs, layer_inputs = graph_names(manifest)
    hidden, *extra = load_session(folder / manifest["embeddings"], threads=1).run(list(embedding_outputs), feed)
    sessions = {}
    layers = []
    for entry in manifest["layers"]:
        name = entry["graph"]
        if name not in sessions:
            sessions[name] = load_session(folder / name, threads=1)
        layers.append((sessions[name], entry["head"]))
    backend = OnnxBackend(layers, layer_inputs)  # the runtime's own code feeds the graphs
    state = backend.start(hidden, mask.numpy(), dict(zip(embedding_outputs[1:], extra)))
    worst = 0.0
    for i in range(len(layers)):
        state = backend.run_layer(i, state)
        worst = max(worst, float(np.abs(backend.classify(i, state) - reference[i]).max()))
    scale = max(1.0, float(np.abs(reference).max()))
    if tolerance is not None and not worst <= tolerance * scale:
        raise ValueError(f"the exported graphs do not reproduce the torch model (max |logit difference| {worst:.3g})")
    return {"max_abs_diff": worst, "batch": int(ids.shape[0]), "sequence": int(ids.shape[1])}


# ---------------------------------------------------------------------------------------------- internals


def _write_graphs(model, folder: Path, opset: int, exporter: str) -> dict:
    """Trace the embeddings and layer graphs into ``folder``; the manifest's graph entries."""
    ids, mask, types = _sample_inputs(model)
    names = ["input_ids"] + (["token_type_ids"] if types is not None else [])
    args = (ids,) + ((types,) if types is not None else ())
    dims = {0: "batch", 1: "sequence"}
    embedding_outputs = embeddings_graph_outputs(model)
    positions = {2: "sequence", 3: "sequence"}  # (1, heads, S, S)
    _export(EmbeddingsGraph(model), args, folder / "embeddings.onnx", names, embedding_outputs,
            {n: dims for n in [*names, "hidden_states"]} | {n: positions for n in embedding_outputs[1:]}, opset,
            exporter)
    with torch.inference_mode():
        hidden = model.driver.embed(model.backbone, ids, types)
        sample = {"hidden_states": hidden, "attention_bias": additive_mask(mask, hidden.dtype),
                  "pool_weights": model._pool_input(hidden, mask), "position_bias": model.driver.layer_extra(
                      model.backbone, hidden)}
    inputs = layer_graph_inputs(model)
    axes = {"hidden_states": dims, "attention_bias": {0: "batch", 3: "sequence"},
            "pool_weights": {0: "batch", 2: "sequence"}, "position_bias": positions, "next_hidden_states": dims,
            "logits": {0: "batch"}}
    plan = layer_graph_plan(model)
    shared = len(plan) < model.num_layers
    layers: list[dict | None] = [None] * model.num_layers
    for g, (module, heads) in enumerate(plan):
        name = f"layer_group_{g}.onnx" if shared else f"layer_{heads[0]}.onnx"
        _export(LayerGraph(model, module, heads), tuple(sample[n] for n in inputs), folder / name, inputs,
                list(LAYER_OUTPUTS), {n: axes[n] for n in [*inputs, *LAYER_OUTPUTS]}, opset, exporter)
        for k, i in enumerate(heads):
            layers[i] = {"graph": name, "head": k}
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "embeddings": "embeddings.onnx",
            "embedding_outputs": embedding_outputs, "layer_inputs": inputs, "layers": layers}


def _export(module, args, path: Path, inputs, outputs, axes, opset: int, exporter: str) -> None:
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter: the export is checked numerically
            if exporter == "dynamo":
                dims = tuple({k: torch.export.Dim.DYNAMIC for k in axes[name]} for name in inputs)
                if _takes_varargs(module):  # LayerGraph.forward(*inputs): one entry, the tuple
                    dims = (dims,)
                torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                                  dynamic_shapes=dims, opset_version=opset, dynamo=True, verbose=False,
                                  external_data=False)
            else:
                torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                                  dynamic_axes=axes, opset_version=opset, dynamo=False)
    except Exception as err:  # the exporters raise many types; the CLI reports one line
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"exporting {path.name} failed ({exporter} exporter): {detail[:300]}") from None


def _takes_varargs(module) -> bool:
    return any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in inspect.signature(module.forward).parameters.values())


def _sample_inputs(model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A (2, S) batch of token ids with the second row padded, the mask and (where used) segment ids."""
    config = model.config
    limit = getattr(config, "max_position_embeddings", None) or 512
    seq = max(2, min(8, limit - 4))
    vocab = config.vocab_size
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(min(5, vocab - 1), vocab, (2, seq), generator=generator)
    mask = torch.ones(2, seq, dtype=torch.long)
    mask[1, seq // 2 :] = 0
    types = torch.zeros_like(ids) if model.driver.uses_token_type_ids else None
    if types is not None:
        types[:, seq // 2 :] = 1 if getattr(config, "type_vocab_size", 1) > 1 else 0
    return ids, mask, types


def _model_facts(model, run_dir: Path, tokenizer) -> dict:
    from ..predictor import ModelInfo

    config = model.config
    info = ModelInfo.of(config, model.pabee_config, model.num_layers)
    return {
        "pabee_version": __version__,
        "torch_version": torch.__version__,
        "source": str(run_dir.resolve()),
        "model_type": config.model_type,
        "num_layers": model.num_layers,
        "num_labels": model.num_labels,
        "id2label": {str(i): label for i, label in enumerate(info.labels)},
        "problem": "regression" if model.is_regression else "classification",
        "pooling": model.pabee_config.pooling,
        "uses_token_type_ids": model.driver.uses_token_type_ids,
        "hidden_size": getattr(config, "hidden_size", None) or getattr(config, "dim", None),
        "max_length": info.max_positions,
        "pad_token_id": tokenizer.pad_token_id,
        "pad_token": tokenizer.pad_token,
        "pabee_config": model.pabee_config.to_dict(),
        "default_exit_rule": str(info.default_exit_rule),  # what the runtime resolves from pabee_config (readable)
    }


def _load_tokenizer(run_dir: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(run_dir)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"cannot load the tokenizer saved in {run_dir}: {str(err).splitlines()[0]}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"the tokenizer in {run_dir} has no fast (tokenizer.json) version: the runtime needs one")
    return tokenizer


def _check_out_dir(run_dir: Path, out_dir: Path) -> Path:
    if out_dir.resolve() == run_dir.resolve():
        raise ValueError("OUT_DIR must differ from RUN_DIR: the export is a separate folder")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ValueError(f"{out_dir} exists and is not a folder")
        if any(out_dir.iterdir()) and not is_onnx_export(out_dir):
            raise ValueError(f"{out_dir} is not empty and not an earlier export: choose another OUT_DIR")
    return out_dir


def _move_into_place(staging: Path, target: Path) -> None:
    """Replace ``target`` (absent, empty or an earlier export) with ``staging``."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
