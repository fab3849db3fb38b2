"""Data: GLUE and custom-file readers, GLUE from the hub, GLUE prediction files, and finding data folders.

* :mod:`.examples`: :class:`Example` and :class:`DataError`;
* :mod:`.glue`: the standard GLUE folder layout, labels, the leaderboard prediction writer;
* :mod:`.custom`: user csv/tsv/jsonl files and label-list inference;
* :mod:`.hub`: GLUE from the Hugging Face hub (optional ``datasets``);
* :mod:`.discovery`: the GLUE folder of a task and the embedded default model.
"""

from .custom import infer_label_list, read_custom_file
from .discovery import default_model_path, find_glue_dir
from .examples import DataError, Example
from .glue import example_index, label_to_id, read_glue_split, write_glue_predictions
from .hub import HUB_DATASET, load_glue_from_hub

__all__ = [
    "HUB_DATASET",
    "DataError",
    "Example",
    "default_model_path",
    "example_index",
    "find_glue_dir",
    "infer_label_list",
    "label_to_id",
    "load_glue_from_hub",
    "read_custom_file",
    "read_glue_split",
    "write_glue_predictions",
]
