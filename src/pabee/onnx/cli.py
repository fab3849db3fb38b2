"""``pabee export RUN_DIR OUT_DIR``: write the ONNX artifact folder of a trained model (see
:func:`pabee.onnx.export.export_onnx`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..cli import _Parser, int_at_least

_opset = int_at_least(14, "--opset")  # the dynamic-axis ops pabee needs exist from opset 14


def export_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="pabee export",
        description="Export a trained pabee model to ONNX: one graph for the embeddings and one per layer with its "
                    "internal classifier, plus the tokenizer, labels and exit defaults. The folder runs on ONNX "
                    "Runtime without torch (pabee.onnx.PabeeOnnxModel; pabee eval/predict --backend onnx).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder saved by pabee train (model and tokenizer)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="the folder to write (must be new, empty or an earlier export)")
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="int8: dynamic int8 quantization of the layer graphs (ONNX Runtime's quantize_dynamic: "
                        "int8 weights with a scale per output channel, activations quantized at run time)")
    p.add_argument("--opset", type=_opset, default=None, help="ONNX opset of the graphs (default 17)")
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                   help="torch.onnx exporter: torchscript (tracing, seconds per graph) or dynamo (torch.export); "
                        "either way the graphs are checked against the torch model")
    return p


def main(argv: list[str]) -> int:
    """``pabee export ...`` (``argv`` without the leading "export")."""
    args = export_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("pabee").setLevel(logging.INFO)
    try:
        from .export import DEFAULT_OPSET, export_onnx

        out = export_onnx(args.run_dir, args.out_dir, quantize=args.quantize,
                          opset=args.opset or DEFAULT_OPSET, exporter=args.exporter)
        from .runtime import read_manifest

        manifest = read_manifest(out)
    except (ValueError, OSError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"pabee export: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pabee export: interrupted (nothing was written)", file=sys.stderr)
        return 130
    print(describe_export(out, manifest))
    return 0


def _default_rule(manifest: dict) -> str:
    from ..exit_defaults import default_exit_rule

    return str(default_exit_rule(manifest.get("pabee_config", {})))


def describe_export(folder, manifest: dict) -> str:
    """A few lines saying what an export holds."""
    graphs = dict.fromkeys(entry["graph"] for entry in manifest["layers"])
    size = sum(manifest["files"].values()) / 2**20
    quantization = manifest.get("quantization") or {}
    precision = quantization.get("precision", "fp32")
    if quantization:
        precision += (" (" + ("per-channel" if quantization.get("per_channel") else "per-tensor")
                      + (", 7-bit" if quantization.get("reduce_range") else "") + " weights)")
    checks = manifest.get("check", {})
    lines = [
        f"exported {manifest.get('source')} -> {folder}",
        f"  {manifest.get('model_type')}, {manifest['num_layers']} layers in {len(graphs)} layer graph(s) + "
        f"embeddings.onnx, {precision} layers, opset {manifest.get('opset')}, {size:.1f} MiB of graphs",
        f"  labels {list(manifest['id2label'].values())}, pooling {manifest.get('pooling')}, "
        f"default exit rule {_default_rule(manifest)}",
    ]
    for name, check in checks.items():
        lines.append(f"  check vs torch ({name}): max |logit difference| {check['max_abs_diff']:.2g} "
                     f"on a {check['batch']}x{check['sequence']} padded batch")
    return "\n".join(lines)
