"""What a run reads before it works, each checked up front: its task data (GLUE folder or custom files, labels
following the model's), the model it starts from, and the checkpoints it evaluates."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from .backbones import supported_model_types
from .config import PabeeConfig, is_pabee_folder
from .data import (
    Example,
    default_model_path,
    find_glue_dir,
    infer_label_list,
    load_glue_from_hub,
    read_custom_file,
    read_glue_split,
)
from .loading import require_model_folder, resolve_model_source, unfinished_run_hint
from .model_checks import ModelLabels, check_task_labels, custom_data_labels
from .model_files import weights_digest
from .settings import RunSettings
from .tasks import TaskSpec, custom_task, get_task
from .tune_run import tunes_after_training

logger = logging.getLogger(__name__)


@dataclass
class TaskData:
    task: TaskSpec
    train: list[Example] | None
    dev: dict[str, list[Example]]
    test: dict[str, list[Example]]


def load_task_data(settings: RunSettings, model_labels: ModelLabels | None = None) -> TaskData:
    """Read the splits the run needs, from custom files or a GLUE folder (or, failing that, the hub).

    ``model_labels``: the labels of the fine-tuned model the run uses (see :func:`labelled_model`). Custom data
    then takes the model's label names, in its id order; a GLUE task must have the model's labels. Both are
    checked before any data is read.
    """
    if settings.train_file or settings.validation_file or settings.test_file:
        return _load_custom(settings, model_labels)
    if not settings.task_name:
        raise ValueError("give --task_name (one of the GLUE tasks) or --train_file/--validation_file")
    task = get_task(settings.task_name)
    if model_labels is not None:
        check_task_labels(task, model_labels)
    folder = find_glue_dir(task, settings.data_dir)

    def read(split: str) -> list[Example]:
        if folder is None:
            return load_glue_from_hub(task, split)
        return read_glue_split(task, folder, split)

    train_examples = read("train") if settings.do_train else None
    needs_dev = (settings.do_eval or (settings.do_train and settings.train and settings.train.evaluate_during_training)
                 or tunes_after_training(settings))
    dev = {s: read(s) for s in task.dev_splits} if needs_dev else {}
    test = {s: read(s) for s in task.test_splits} if settings.do_predict else {}
    return TaskData(task, train_examples, dev, test)


def _load_custom(settings: RunSettings, model_labels: ModelLabels | None = None) -> TaskData:
    model_names = custom_data_labels(model_labels, settings.label_list, settings.regression)
    allowed = model_names or settings.label_list
    origin = f"the labels of the model at {model_labels.path}" if model_names else ""

    def read(path):
        if path is None:
            return None
        return read_custom_file(
            path, settings.text_columns, settings.label_column, allowed, settings.regression, label_origin=origin
        )

    train_examples = read(settings.train_file) if settings.do_train else None
    dev_examples = read(settings.validation_file)
    test_examples = read(settings.test_file) if settings.do_predict else None
    if settings.regression:
        label_list = None
    elif model_names:
        label_list = model_names
    elif settings.label_list:
        label_list = tuple(settings.label_list)
    else:
        source = train_examples or dev_examples
        if not source:
            raise ValueError("custom data: give --train_file (or --label_list) so the labels are known")
        label_list = infer_label_list(source)
        if model_labels is not None and set(label_list) <= set(model_labels.names):
            label_list = model_labels.names  # the data uses the model's (default LABEL_<id>) names
    task = custom_task(label_list)
    if model_labels is not None:
        check_task_labels(task, model_labels)  # a model without label names: by position, with a warning
    dev = {"dev": dev_examples} if dev_examples else {}
    test = {"test": test_examples} if test_examples else {}
    return TaskData(task, train_examples, dev, test)


def model_source(settings: RunSettings) -> str:
    """The folder or hub id the run loads its model from, checked before any work (ValueError otherwise).

    Training starts from ``model_name_or_path`` (default: the embedded MiniLM-L6); evaluation and prediction use
    ``model_name_or_path`` or else ``output_dir``, which must then be a model written by ``pabee train``. A
    ``tokenizer_name`` is checked too.
    """
    if settings.model_name_or_path:
        source = resolve_model_source(settings.model_name_or_path, cache_dir=settings.cache_dir)
    elif settings.do_train:
        source = default_model_path()
    else:
        source = require_model_folder(
            settings.output_dir, "give --model_name_or_path: a model folder written by pabee train"
        )
    if not settings.do_train:
        _checkpoints_to_evaluate(settings, quiet=True)  # a plain encoder, or an unfinished training, is refused here
    if is_pabee_folder(source):
        PabeeConfig.load(source)  # a damaged pabee_config.json, too
    if settings.tokenizer_name:
        resolve_model_source(settings.tokenizer_name, what="tokenizer", cache_dir=settings.cache_dir)
    return source


def _checkpoints_to_evaluate(settings: RunSettings, quiet: bool = False) -> list[tuple[str, str]]:
    """(name, path) pairs: every checkpoint-N under output_dir (with --eval_all_checkpoints), then the model.

    The last checkpoint is left out when it holds the same model as the final one (same weights digest): it
    would be evaluated twice and drawn as two identical curves."""
    target = settings.output_dir if settings.do_train else (settings.model_name_or_path or settings.output_dir)
    if not is_pabee_folder(target):
        hint = unfinished_run_hint(target) or ": train it first with --do_train"
        raise ValueError(f"{target} is not a fine-tuned pabee model (no pabee_config.json){hint}")
    found: list[tuple[str, str]] = []
    if settings.eval_all_checkpoints and settings.backend != "torch":
        raise ValueError("--eval_all_checkpoints works with --backend torch (checkpoints are torch folders)")
    if settings.eval_all_checkpoints:
        root = Path(settings.output_dir)
        steps = []
        for child in root.glob("checkpoint-*"):
            match = re.fullmatch(r"checkpoint-(\d+)", child.name)
            if match and is_pabee_folder(child):
                steps.append((int(match.group(1)), child))
        found = [(child.name, str(child)) for _, child in sorted(steps)]
        if found and _same_model(found[-1][1], target):
            if not quiet:
                logger.info("%s holds the same weights as the final model (%s): evaluating them once, as \"final\"",
                            found[-1][0], target)
            found.pop()
    found.append(("final", str(target)))
    return found


def _same_model(a: str, b: str) -> bool:
    if Path(a).resolve() == Path(b).resolve():
        return True
    digest = weights_digest(a)
    return digest is not None and digest == weights_digest(b)


def _check_model_type(model_type: str, source: str, cache_dir) -> None:
    from .hf import read_backbone_config

    if model_type not in supported_model_types():
        raise ValueError(f"unsupported --model_type {model_type!r}: pabee supports {', '.join(supported_model_types())}")
    try:
        actual = read_backbone_config(source, cache_dir=cache_dir).model_type
    except OSError:
        return  # the model loader reports unreachable checkpoints with its own message
    if actual != model_type:
        raise ValueError(f"--model_type {model_type} does not match the checkpoint at {source}, which is {actual}")


def labelled_model(settings: RunSettings) -> str | None:
    """The fine-tuned pabee model whose classifiers the run uses and whose saved labels it must follow: the model
    evaluated or used for predictions, or the one training continues from. None when training starts from a plain
    encoder (the labels then come from the data or --label_list)."""
    if settings.do_train:
        source = settings.model_name_or_path
    else:
        source = settings.model_name_or_path or settings.output_dir
    return source if source is not None and is_pabee_folder(source) else None


def _limit(examples: list[Example], n: int | None) -> list[Example]:
    return examples if n is None else examples[:n]
