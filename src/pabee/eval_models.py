"""Which model an evaluation runs: the torch model, or a folder written by ``pabee export`` on ONNX Runtime behind
the torch-facing adapter (:class:`pabee.onnx.torch_adapter.OnnxEvalModel`), so both go through the same sweep,
timing, records and tables. ONNX Runtime is imported only for the onnx backend."""

from __future__ import annotations

from .validation import BACKENDS


def load_eval_model(path: str, backend: str = "torch", threads: int | None = None):
    """The model saved in ``path`` for evaluation and predictions: a ``PabeeForSequenceClassification`` (torch), or
    an export (``pabee export``) on ONNX Runtime behind :class:`pabee.onnx.torch_adapter.OnnxEvalModel`.
    ``threads`` sets torch's intra-op threads, and the ONNX sessions' (default: torch's count)."""
    from .onnx import is_onnx_export

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if backend == "onnx":
        if not is_onnx_export(path):
            raise ValueError(f"{path} is not an ONNX export (no pabee_onnx.json): export it with pabee export")
        from .onnx.torch_adapter import OnnxEvalModel

        return OnnxEvalModel.from_pretrained(path, threads)
    if is_onnx_export(path):
        raise ValueError(f"{path} is an ONNX export: evaluate it with --backend onnx")
    from .modeling import PabeeForSequenceClassification

    return PabeeForSequenceClassification.from_pretrained(path)


def backend_info(model) -> dict:
    """What runs ``model``, for the records: {"name": "torch" | "onnx" | "onnx-int8", "threads": intra-op threads}."""
    import torch

    name = getattr(model, "backend", "torch")
    return {"name": name, "threads": model.threads if name != "torch" else torch.get_num_threads()}


def backend_name(checkpoint: str, model) -> str:
    """The checkpoint's name in records and tables: "final" on torch, "final@onnx" or "final@onnx-int8" on ONNX
    Runtime, so the records of every backend sit side by side in one eval_results.json."""
    backend = getattr(model, "backend", "torch")
    return checkpoint if backend == "torch" else f"{checkpoint}@{backend}"
