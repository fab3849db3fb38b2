"""Facts read from a saved model folder's files: a digest that tells two saved models apart, and the pooling a
sentence-transformers folder was trained with."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def sentence_transformers_pooling(path: str | os.PathLike) -> str | None:
    """The pooling a local sentence-transformers folder was trained with ("mean" or "cls"), or None.

    sentence-transformers writes its pooling module's settings to ``<pooling module>/config.json``, the module
    being listed in ``modules.json``; other folders (and hub ids) give None.
    """
    folder = Path(path)
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    for module in modules if isinstance(modules, list) else []:
        if not isinstance(module, dict) or not str(module.get("type", "")).endswith("Pooling"):
            continue
        try:
            settings = json.loads((folder / str(module.get("path", "")) / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        if settings.get("pooling_mode_mean_tokens"):
            return "mean"
        if settings.get("pooling_mode_cls_token"):
            return "cls"
    return None


def weights_digest(folder: str | os.PathLike) -> str | None:
    """sha256 over a saved model: its weight files (``*.safetensors``, ``*.bin``), ``config.json`` and
    ``pabee_config.json``, in name order. Two folders with equal digests hold the same model. A safetensors
    header is hashed in canonical form (its JSON with sorted keys), since the writer's order of the metadata
    entries varies from save to save. None when the folder has no weight file."""
    root = Path(folder)
    weights = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin")
                     and not p.name.startswith(".") and p.name != "training_args.bin")
    if not weights:
        return None
    digest = hashlib.sha256()
    for path in [*weights, root / "config.json", root / "pabee_config.json"]:
        size = path.stat().st_size if path.is_file() else -1
        digest.update(f"{path.name}:{size}\0".encode())
        if size < 0:
            continue
        with path.open("rb") as f:
            if path.suffix == ".safetensors":
                header_size = int.from_bytes(f.read(8), "little")
                try:
                    header = json.loads(f.read(header_size).decode("utf-8"))
                except ValueError:  # not a safetensors file: no digest, so it is never taken for another
                    return None
                digest.update(json.dumps(header, sort_keys=True).encode() + b"\0")
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
