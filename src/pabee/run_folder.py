"""What an output folder holds from one training run: whose checkpoints they are, and moving a previous run aside.

Every model and checkpoint a run saves carries ``pabee_run.json``: the task, its labels and the encoder the run
started from. Resuming compares it with the run being resumed, so a checkpoint of another task, label set or model
is refused instead of silently continued. ``--overwrite_output_dir`` moves everything a previous run wrote into
``previous-run-<time>/`` inside the folder, where neither resuming nor ``--eval_all_checkpoints`` looks; files a
run does not write (notes, a driver script's own logs) stay where they are.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import time
from pathlib import Path

from .files import atomic_write_text
from .tasks import TaskSpec

logger = logging.getLogger(__name__)

RUN_FILE = "pabee_run.json"
PREVIOUS_RUN_PREFIX = "previous-run-"
# What a run writes into its output folder (name patterns): checkpoints and their staging folder, the model and its
# tokenizer, the Trainer's state, arguments and TensorBoard logs, evaluation records, plots and predictions, and the
# temporary files of atomic writes. Code that writes something new into the output folder adds its pattern here.
RUN_ARTEFACTS = (
    "checkpoint-*", ".staging", ".*.tmp-*", "runs",
    "*.safetensors", "*.safetensors.index.json", "pytorch_model.bin*", "config.json", "pabee_config.json", RUN_FILE,
    "tokenizer*.json", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt", "*.model",
    "chat_template.jinja", "training_args.bin", "trainer_state.json", "*_results.json",
    "eval_results.json*", "tradeoff_*.png", "predictions", "tune_split.json", "tuning.json",
)


def run_identity(task: TaskSpec, model, base_model: str | os.PathLike | None = None) -> dict:
    """What makes a checkpoint part of this run: task name, label list (None for regression), number of labels,
    the encoder's model type and the model the run started from (a resolved local path or a hub id; None if
    unknown)."""
    base = None
    if base_model is not None:
        base = str(Path(base_model).resolve()) if Path(base_model).exists() else str(base_model)
    return {
        "task": task.name,
        "labels": list(task.label_list) if task.label_list is not None else None,
        "num_labels": task.num_labels,
        "model_type": getattr(model.config, "model_type", None),
        "base_model": base,
    }


def save_run_identity(folder: str | os.PathLike, identity: dict) -> None:
    """Write ``identity`` to ``folder/pabee_run.json`` (atomically)."""
    atomic_write_text(Path(folder) / RUN_FILE, json.dumps(identity, indent=2) + "\n")


def saved_run_identity(folder: str | os.PathLike) -> dict:
    """The identity saved in ``folder``. Folders saved before ``pabee_run.json`` existed give what their
    config.json tells: labels, number of labels and model type."""
    folder = Path(folder)
    if (folder / RUN_FILE).is_file():
        try:
            return json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read {folder / RUN_FILE}: {err}") from None
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    num_labels = len(config["id2label"]) if "id2label" in config else config.get("num_labels")
    model_type = config.get("model_type")
    if model_type == "pabee" and isinstance(config.get("backbone"), dict):  # pabee.hf's nested config
        model_type = config["backbone"].get("model_type")
    found = {"num_labels": num_labels, "model_type": model_type}
    if num_labels and num_labels > 1 and "id2label" in config:
        id2label = {int(k): v for k, v in config["id2label"].items()}
        found["labels"] = [id2label[i] for i in sorted(id2label)]
    return found


def _show(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "regression" if value is None else str(value)


def check_same_run(checkpoint: str | os.PathLike, identity: dict) -> None:
    """Refuse (ValueError, one line) to resume from ``checkpoint`` when it was saved by a run of another task,
    label set or model. A field either side does not know is not compared."""
    saved = saved_run_identity(checkpoint)
    differences = []
    for key, what in (("task", "task"), ("labels", "labels"), ("num_labels", "number of labels"),
                      ("model_type", "model type"), ("base_model", "model")):
        if key not in saved or key not in identity:
            continue
        old, new = saved[key], identity[key]
        if key in ("model_type", "base_model") and (old is None or new is None):
            continue
        if key == "num_labels" and any(d.startswith("labels ") for d in differences):
            continue
        if old != new:
            differences.append(f"{what} {_show(old)} there, {_show(new)} here")
    if differences:
        raise ValueError(
            f"cannot resume from {checkpoint}: it belongs to another run ({'; '.join(differences)}); "
            "train anew with --overwrite_output_dir or into another --output_dir"
        )


def is_run_artefact(name: str) -> bool:
    """Whether a file or folder of this name in an output folder was written by a run (see RUN_ARTEFACTS)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in RUN_ARTEFACTS)


def move_previous_run(output_dir: str | os.PathLike) -> Path | None:
    """Move what a previous run wrote in ``output_dir`` (:data:`RUN_ARTEFACTS`) into a new
    ``output_dir/previous-run-<YYYYmmdd-HHMMSS>/`` and log where; returns that folder (None if there was nothing).
    Other files, and the folders earlier overwrites made, stay."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    entries = sorted(p for p in root.iterdir() if is_run_artefact(p.name))
    if not entries:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = root / f"{PREVIOUS_RUN_PREFIX}{stamp}"
    n = 1
    while target.exists():
        target = root / f"{PREVIOUS_RUN_PREFIX}{stamp}-{n}"
        n += 1
    target.mkdir()
    for entry in entries:
        os.replace(entry, target / entry.name)
    logger.warning("--overwrite_output_dir: moved the previous run's %d files and folders to %s", len(entries), target)
    return target
