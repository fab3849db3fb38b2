"""pabee on ONNX Runtime: ``pabee export`` (:mod:`pabee.onnx.export`, needs torch) writes a folder of ONNX graphs
that :class:`PabeeOnnxModel` (:mod:`pabee.onnx.runtime`, needs only onnxruntime, numpy and tokenizers) runs with
the same early exit as the torch model.

    from pabee.onnx import PabeeOnnxModel
    model = PabeeOnnxModel.from_pretrained("exported/")
    out = model(**model.encode(["a text"]), patience=2)   # out.logits (B,C), out.exit_layers (B,)

Importing this package imports neither torch nor onnxruntime; the names below load on first use.
"""

import os
from pathlib import Path

__all__ = ["MANIFEST_NAME", "OnnxBackend", "PabeeOnnxModel", "PabeeOnnxOutput", "export_onnx", "is_onnx_export"]

MANIFEST_NAME = "pabee_onnx.json"
_RUNTIME = ("OnnxBackend", "PabeeOnnxModel", "PabeeOnnxOutput")


def is_onnx_export(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds the manifest ``pabee export`` writes."""
    return (Path(folder) / MANIFEST_NAME).is_file()


def __getattr__(name):
    if name in _RUNTIME:
        from . import runtime

        return getattr(runtime, name)
    if name == "export_onnx":
        from .export import export_onnx

        return export_onnx
    raise AttributeError(f"module 'pabee.onnx' has no attribute {name!r}")
