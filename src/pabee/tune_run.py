"""Tuning a trained run folder's default exit rule: ``pabee tune RUN_DIR`` and the tuning ``pabee train`` ends
with when it is given several exit rules.

The tuning split is the task's dev set, or the part of the training set ``pabee train --tune_split`` held out
(``tune_split.json``, :mod:`pabee.data.holdout`). :func:`tune_model` computes all layers' logits on it (and on dev,
to report the choice there too) and lets :func:`pabee.tuning.tune` choose; :func:`save_tuning` makes the choice the
model's default (``pabee_config.json``, written atomically by :meth:`pabee.config.PabeeConfig.save`) and writes the
decision to ``tuning.json``.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from .config import PABEE_CONFIG_NAME, PabeeConfig
from .data import DataError, Example
from .data.holdout import TUNE_SPLIT_FILE, HeldOut, read_holdout, rebuild_holdout
from .files import atomic_write_text
from .settings import RunSettings
from .tasks import TaskSpec
from .tuning import REGRESSION_THRESHOLDS, TUNE_KINDS, TuningResult, all_layer_logits, tune, tuning_candidates

TUNING_FILE = "tuning.json"
DEFAULT_MAX_SEQ_LENGTH = 128
# where the data is: the RunSettings fields pabee tune takes from its flags, else from tune_split.json
LOCATION_FIELDS = ("task_name", "data_dir", "train_file", "validation_file")
DATA_FIELDS = (*LOCATION_FIELDS, "text_columns", "label_column", "label_list", "regression", "max_seq_length")


def tunes_after_training(settings: RunSettings) -> bool:
    """Whether ``pabee train`` ends by tuning: it trains and was given several exit settings to compare (e.g.
    ``--patience 1,2,3,4,5``). A single ``--patience N`` is saved as the default as it is, as before."""
    return bool(settings.do_train) and len({r for r in settings.exit_rules if not r.is_full_depth}) > 1


def data_record(settings: RunSettings, task: TaskSpec, max_seq_length: int) -> dict:
    """Where a run's data came from, saved beside its held-out split so ``pabee tune`` can read it again."""
    from .data import find_glue_dir

    record = {name: getattr(settings, name) for name in DATA_FIELDS}
    for name in ("train_file", "validation_file"):
        if record[name]:
            record[name] = str(Path(record[name]).resolve())
    if not (settings.train_file or settings.validation_file):
        folder = find_glue_dir(task, settings.data_dir)
        record["data_dir"] = None if folder is None else str(folder.resolve())
    record["max_seq_length"] = max_seq_length
    return record


def check_run_dir(run_dir: str) -> Path:
    """``run_dir`` when it holds a trained pabee model (a one-line ValueError otherwise)."""
    from .model_io import WEIGHTS_NAME
    from .onnx import is_onnx_export

    folder = Path(run_dir)
    if not folder.is_dir():
        raise ValueError(f"run folder not found: {folder}")
    if is_onnx_export(folder):
        raise ValueError(f"{folder} is an ONNX export: tune the trained model's folder, then export it again")
    if not (folder / PABEE_CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise ValueError(f"{folder} is not a trained pabee model (no {PABEE_CONFIG_NAME} and {WEIGHTS_NAME}): "
                         "train one with pabee train")
    PabeeConfig.load(folder)  # a damaged pabee_config.json is reported before any work
    return folder


def tune_model(model, task: TaskSpec, tokenizer, max_seq_length: int, tune_on: tuple[str, Sequence[Example]],
               dev: tuple[str, Sequence[Example]] | None = None, max_drop: float = 0.5,
               kinds: Sequence[str] = TUNE_KINDS, regression_thresholds: Sequence[float] = REGRESSION_THRESHOLDS,
               batch_size: int = 32, progress: bool = False, split_detail: dict | None = None) -> TuningResult:
    """Tune ``model`` on the examples ``tune_on`` = (split name, examples); ``dev`` = (name, examples) is scored
    too, for the report, when it is another split. Returns the :class:`~pabee.tuning.TuningResult`."""
    from .features import tokenize_examples

    def logits_of(name: str, examples: Sequence[Example]):
        if not examples:
            raise DataError(f"the {name} split is empty: nothing to tune on")
        features = tokenize_examples(tokenizer, task, list(examples), max_seq_length)
        if features.labels is None:
            raise DataError(f"the {name} split has no labels: cannot tune on it")
        logits = all_layer_logits(model, features, batch_size, tokenizer.pad_token_id or 0, progress)
        return logits, features.labels

    logits, labels = logits_of(*tune_on)
    candidates = tuning_candidates(model.num_labels, model.num_layers, kinds, regression_thresholds)
    dev_part = None if dev is None else (dev[0], *logits_of(*dev))
    result = tune(logits, labels, task, max_drop, candidates, tune_on[0], dev_part)
    result.split_detail = dict(split_detail or {})
    return result


def save_tuning(folder: str | Path, result: TuningResult) -> Path:
    """Make the choice the default of the model in ``folder`` (``pabee_config.json``: a patience as ``patience``,
    other rules as ``exit_rule``, and a chosen regression threshold), then write ``tuning.json``. Returns the
    path of tuning.json."""
    folder = Path(folder)
    saved = PabeeConfig.load(folder).to_dict()
    choice = result.chosen.candidate
    if choice.rule.kind == "patience":
        saved.update(patience=int(choice.rule.value), exit_rule=None)
    else:
        saved["exit_rule"] = str(choice.rule)
    if choice.regression_threshold is not None:
        saved["regression_threshold"] = choice.regression_threshold
    PabeeConfig.from_dict(saved).save(folder)
    path = folder / TUNING_FILE
    from . import __version__

    decision = {**result.to_dict(), "saved_default": str(choice.rule), "pabee_version": __version__,
                "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_text(path, json.dumps(decision, indent=2) + "\n")
    return path


def saved_message(folder: str | Path, result: TuningResult, tuning_file: Path | None) -> str:
    """The line saying what was saved (or that nothing was, for a dry run)."""
    choice = result.chosen.candidate
    rule = str(choice.rule) + ("" if choice.regression_threshold is None
                               else f" (regression threshold {choice.regression_threshold:g})")
    if tuning_file is None:
        return f"dry run: {Path(folder) / PABEE_CONFIG_NAME} not changed (it would get the default exit rule {rule})"
    return f"saved: default exit rule {rule} in {Path(folder) / PABEE_CONFIG_NAME}; decision table in {tuning_file}"


# ---------------------------------------------------------------------------------------------- pabee train


def tune_after_training(settings: RunSettings, task: TaskSpec, dev: dict[str, list[Example]], tokenizer,
                        max_seq_length: int, held: HeldOut | None) -> tuple[TuningResult, Path]:
    """The end of ``pabee train`` with several exit rules: tune the saved model on the held-out examples (else on
    the first dev split, limited by ``--max_eval_samples``) and save the choice as its default."""
    from .modeling import PabeeForSequenceClassification

    dev_name = next(iter(dev), None)
    dev_examples = dev[dev_name] if dev_name is not None else []
    if settings.max_eval_samples is not None:
        dev_examples = dev_examples[: settings.max_eval_samples]
    if held is not None:
        tune_on = ("heldout", held.examples)
        detail = {"from": "training set", **{k: held.record[k] for k in ("tune_split", "seed", "size")}}
        dev_part = (dev_name, dev_examples) if dev_examples else None
    elif dev_examples:
        tune_on, detail, dev_part = (dev_name, dev_examples), {"from": dev_name}, None
    else:
        raise DataError(f"no dev data to tune the exit rule of {task.name} on: give --tune_split to hold part "
                        "of the training set out")
    model = PabeeForSequenceClassification.from_pretrained(settings.output_dir)
    result = tune_model(model, task, tokenizer, max_seq_length, tune_on, dev_part, settings.max_drop,
                        batch_size=max(settings.eval_batch_sizes), progress=settings.progress, split_detail=detail)
    return result, save_tuning(settings.output_dir, result)


# ---------------------------------------------------------------------------------------------- pabee tune


def run_tune(settings) -> tuple[TuningResult, Path | None]:
    """``pabee tune``: tune the run folder ``settings.run_dir`` (a :class:`pabee.tune_settings.TuneSettings`);
    returns the result and the tuning.json written (None for a dry run)."""
    from .loading import load_tokenizer
    from .model_checks import model_max_seq_length, read_model_labels
    from .modeling import PabeeForSequenceClassification
    from .run_inputs import load_task_data

    folder = check_run_dir(settings.run_dir)
    record = read_holdout(folder)
    split = settings.tune_split or ("heldout" if record is not None else "dev")
    if split == "heldout" and record is None:
        raise ValueError(f"{folder} has no held-out split ({TUNE_SPLIT_FILE}): train with pabee train --tune_split "
                         "0.1 to hold one out, or tune on --tune_split dev")
    source = _data_settings(settings, folder, record, needs_training_data=split == "heldout")
    data = load_task_data(source, read_model_labels(folder))
    task = data.task
    dev_name = next(iter(data.dev), None)
    dev_examples = _first(data.dev[dev_name], settings.max_samples) if dev_name is not None else []
    if split == "heldout":
        if not data.train:
            raise DataError("no training data to rebuild the held-out split from: give --train_file or --data_dir")
        held = rebuild_holdout(record, data.train, str(folder / TUNE_SPLIT_FILE))
        tune_on = ("heldout", _first(held, settings.max_samples))
        detail = {"from": "training set", **{k: record.get(k) for k in ("tune_split", "seed", "size")}}
        dev_part = (dev_name, dev_examples) if dev_examples else None
    else:
        if not dev_examples:
            raise DataError(f"no labelled dev data to tune {task.name} on (give --validation_file, or train with "
                            "--tune_split and use --tune_split heldout)")
        tune_on, detail, dev_part = (dev_name, dev_examples), {"from": dev_name}, None
    tokenizer = load_tokenizer(str(folder))
    with warnings.catch_warnings():
        if settings.max_seq_length is None:  # a default longer than the model takes is capped without a word
            warnings.simplefilter("ignore", UserWarning)
        max_seq_length = model_max_seq_length(source.max_seq_length, str(folder), tokenizer)
    model = PabeeForSequenceClassification.from_pretrained(folder)
    result = tune_model(model, task, tokenizer, max_seq_length, tune_on, dev_part, settings.max_drop,
                        settings.rules, settings.regression_thresholds, settings.batch_size,
                        not settings.no_progress, detail)
    return result, None if settings.dry_run else save_tuning(folder, result)


def _first(examples: list[Example], n: int | None) -> list[Example]:
    return examples if n is None else examples[:n]


def _data_settings(settings, folder: Path, record: dict | None, needs_training_data: bool) -> RunSettings:
    """The RunSettings that read the run's data: the flags given, else what tune_split.json saved, else the task
    the run folder names."""
    given = {name: getattr(settings, name) for name in DATA_FIELDS if getattr(settings, name) is not None}
    saved = {k: v for k, v in ((record or {}).get("data") or {}).items() if k in DATA_FIELDS and v is not None}
    if any(name in given for name in LOCATION_FIELDS):  # the data is elsewhere: none of the saved location counts
        saved = {k: v for k, v in saved.items() if k not in LOCATION_FIELDS}
    values = {**saved, **given}
    if values.get("label_column") == "":  # --label_column "": the file has no labels
        values["label_column"] = None
    if not (values.get("task_name") or values.get("train_file") or values.get("validation_file")):
        values["task_name"] = run_task(folder)
    for name in ("text_columns", "label_list"):
        if isinstance(values.get(name), list):
            values[name] = tuple(values[name])
    values.setdefault("max_seq_length", DEFAULT_MAX_SEQ_LENGTH)
    known = {f.name for f in fields(RunSettings)}
    return RunSettings(output_dir=str(folder), model_name_or_path=str(folder), do_eval=True,
                       do_train=needs_training_data, **{k: v for k, v in values.items() if k in known})


def run_task(folder: Path) -> str:
    """The GLUE task a run folder was trained on: its ``pabee_run.json``, else the one task of its evaluation
    records; a one-line ValueError when neither says (or the run used custom files)."""
    from .records import RESULTS_NAME
    from .run_folder import saved_run_identity

    task = saved_run_identity(folder).get("task")
    if task == "custom":
        raise ValueError(f"{folder} was trained on custom data files: give --validation_file (and --text_columns, "
                         "--label_column) to tune on")
    if task:
        return task
    try:  # read only (no lock file, nothing moved aside): tuning must not change what it only reads
        stored = json.loads((folder / RESULTS_NAME).read_text(encoding="utf-8"))
        tasks = {r.get("task") for r in stored if isinstance(r, dict)} if isinstance(stored, list) else set()
    except (OSError, ValueError):
        tasks = set()
    tasks.discard(None)
    if len(tasks) == 1 and "custom" not in tasks:
        return tasks.pop()
    raise ValueError(f"{folder} does not say which task it was trained on: give --task_name (or --validation_file)")
