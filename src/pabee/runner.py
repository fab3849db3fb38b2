"""The main job as one typed function: locate data, fine-tune, sweep exit rules over checkpoints, predict."""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import set_seed

from .config import is_pabee_folder
from .data import (
    DataError,
    write_glue_predictions,
)
from .data.holdout import hold_out, save_holdout
from .eval_models import backend_info, backend_name, load_eval_model
from .evaluate import (
    EvalRecord,
    evaluate_exit_rules,
    plot_tradeoff,
    predict,
    predicted_labels,
)
from .exit_rules import ExitRule, check_rule_supported
from .features import tokenize_examples
from .loading import (
    load_tokenizer,
)
from .model_checks import (
    ModelLabels,
    check_task_labels,
    model_max_seq_length,
    read_model_labels,
)
from .records import RecordStore, plot_points
from .run_inputs import (  # re-exported: their old home
    TaskData as TaskData,
)
from .run_inputs import (
    _check_model_type,
    _checkpoints_to_evaluate,
    _limit,
    labelled_model,
    load_task_data,
    model_source,
)
from .settings import RunSettings, TrainSettings  # noqa: F401  (RunSettings lives in pabee.settings; re-exported)
from .tasks import TaskSpec
from .train import check_output_dir, init_regression_heads, train
from .tune_run import data_record, tune_after_training, tunes_after_training
from .tuning import TuningResult
from .validation import check_exit_rules

logger = logging.getLogger(__name__)


@dataclass
class ResultGroup:
    """The records of one evaluation: one checkpoint on one dev split at one batch size (one printed table)."""

    task: str
    checkpoint: str
    split: str
    batch_size: int
    records: list[EvalRecord]


@dataclass
class RunResult:
    """What :func:`run` did: the evaluation records (also grouped as measured) and the files it wrote.

    Attributes:
        records: every evaluation record of this run (empty without ``do_eval``, and on torchrun ranks > 0).
        groups: the same records per (checkpoint, split, batch size), in the order measured.
        results_file: the records file (``eval_results.json``) the records were merged into, or None.
        plots: the trade-off plots redrawn after the evaluation.
        predictions: ``(split, exit rule label, path)`` of every prediction file written.
        tuning: with several exit rules at training, the :class:`pabee.tuning.TuningResult` whose choice became
            the saved model's default exit rule (else None); tuning_file: the ``tuning.json`` written.
    """

    records: list[EvalRecord] = field(default_factory=list)
    groups: list[ResultGroup] = field(default_factory=list)
    results_file: Path | None = None
    plots: list[Path] = field(default_factory=list)
    predictions: list[tuple[str, str, Path]] = field(default_factory=list)
    tuning: TuningResult | None = None
    tuning_file: Path | None = None


def run(settings: RunSettings, on_result: Callable[[ResultGroup], None] | None = None) -> RunResult:
    """Train and/or evaluate and/or predict, as the settings ask; prints nothing.

    ``on_result`` is called with each :class:`ResultGroup` as soon as it is measured (and stored), so a caller can
    show progress during a long sweep. Returns a :class:`RunResult`.
    """
    from .modeling import PabeeForSequenceClassification

    if not (settings.do_train or settings.do_eval or settings.do_predict):
        raise ValueError("nothing to do: give --do_train, --do_eval and/or --do_predict")
    rules = _exit_rules(settings)
    if settings.do_train:
        if settings.train is None:
            settings.train = TrainSettings(output_dir=settings.output_dir)
        check_output_dir(settings.output_dir, settings.overwrite_output_dir, settings.train.resume_from_checkpoint)
    store = RecordStore(settings.output_dir)
    if settings.do_eval:
        store.validate()  # a records file the results cannot be added to fails now, not after the evaluation
    source = model_source(settings)  # a missing or unusable model is reported before any work
    labelled = labelled_model(settings)
    data = load_task_data(settings, read_model_labels(labelled) if labelled is not None else None)
    task = data.task
    for rule in rules:  # before any training: a run must not fail at its evaluation
        try:
            check_rule_supported(rule, task.num_labels)
        except ValueError:
            raise ValueError(
                f"--exit_rule {rule.kind} works only for classification tasks, and {task.name} is a regression"
            ) from None
    if settings.regression_threshold is not None and not task.is_regression:
        warnings.warn(
            f"--regression_threshold is ignored: {task.name} is a classification task", UserWarning, stacklevel=2
        )
    if tunes_after_training(settings) and settings.tune_split is None and not data.dev:  # fail before training
        raise DataError(f"no dev data to tune the exit rule of {task.name} on after training: give --validation_file, "
                        "or --tune_split to hold part of the training set out")
    if settings.tune_split is not None and not settings.do_train:
        warnings.warn("--tune_split is ignored: it holds examples out of training", UserWarning, stacklevel=2)
    if settings.regression_head_init not in ("zero", "mean"):
        raise ValueError(f"regression_head_init must be 'zero' or 'mean', got {settings.regression_head_init!r}")
    if settings.regression_head_init == "mean" and not task.is_regression:
        warnings.warn(
            f"--regression_head_init is ignored: {task.name} is a classification task", UserWarning, stacklevel=2
        )
    if settings.distillation_alpha and settings.loss_weighting == "last":
        warnings.warn("--distillation_alpha has no effect with --loss_weighting last: only the last classifier "
                      "trains", UserWarning, stacklevel=2)
    if settings.model_type is not None:
        _check_model_type(settings.model_type, source, settings.cache_dir)
    tokenizer = load_tokenizer(
        settings.tokenizer_name or source, cache_dir=settings.cache_dir, do_lower_case=settings.do_lower_case
    )
    max_seq_length = model_max_seq_length(settings.max_seq_length, source, tokenizer, settings.cache_dir)
    # output_dir is created by what writes into it (the Trainer, save_records, the prediction writer), so a run
    # that fails before it has anything to write leaves no empty folder behind

    result = RunResult()
    held = None  # the training examples --tune_split holds out for tuning the exit rule
    if settings.do_train:
        if not data.train:
            raise DataError("no training data")
        train_examples = _limit(data.train, settings.max_train_samples)
        if settings.tune_split is not None:
            train_examples, held = hold_out(train_examples, settings.tune_split, settings.train.seed)
            logger.info("holding %d training examples out for tuning the exit rule", len(held.examples))
        set_seed(settings.train.seed)  # before the fresh classifiers are initialised: same seed, same run
        model = PabeeForSequenceClassification.from_pretrained(
            source,
            num_labels=task.num_labels,
            id2label=dict(enumerate(task.label_list)) if task.label_list else None,
            patience=_single_patience([r.value for r in rules if r.kind == "patience"] or [0]),
            regression_threshold=settings.regression_threshold if task.is_regression else None,
            loss_weighting=settings.loss_weighting,
            pooling=settings.pooling,
            distillation_alpha=settings.distillation_alpha,
            distillation_temperature=settings.distillation_temperature,
            cache_dir=settings.cache_dir,
        )
        dev_for_training = None
        if settings.train.evaluate_during_training:
            first_dev = next(iter(data.dev.values()))
            dev_for_training = tokenize_examples(
                tokenizer, task, _limit(first_dev, settings.max_eval_samples), max_seq_length
            )
        train_features = tokenize_examples(tokenizer, task, train_examples, max_seq_length)
        if settings.regression_head_init == "mean" and task.is_regression:
            if is_pabee_folder(source):
                logger.warning("--regression_head_init mean is ignored: %s has trained heads", source)
            else:
                mean = init_regression_heads(model, train_features.labels)
                logger.info("regression heads start at the mean training label %.4g", mean)
        logger.info("training on %d examples of %s", len(train_features), task.name)
        metrics = train(model, tokenizer, task, train_features, settings.train, dev_for_training,
                        base_model=source, overwrite_output_dir=settings.overwrite_output_dir)
        logger.info("training done: %s", metrics)

    if int(os.environ.get("RANK", "0")) != 0:
        return result  # under torchrun only the first process evaluates and writes results
    if held is not None:
        save_holdout(settings.output_dir, held, data_record(settings, task, max_seq_length))
    checkpoints = _checkpoints_to_evaluate(settings)
    if settings.do_eval:
        if not data.dev:
            raise DataError(f"no dev data for {task.name}")
        _evaluate_checkpoints(settings, data, tokenizer, rules, checkpoints, store, max_seq_length, result, on_result)

    if settings.do_predict:
        _name, path = checkpoints[-1]
        model = load_eval_model(path, settings.backend, settings.threads)
        _check_task_matches(model, task, path)
        for (split, examples), stem in zip(data.test.items(), task.submission_names or ["predictions"]):
            features = tokenize_examples(tokenizer, task, examples, max_seq_length)
            for rule in dict.fromkeys(rules):
                pred = predict(model, features, max(settings.eval_batch_sizes), None,
                               settings.regression_threshold, tokenizer.pad_token_id or 0, exit_rule=rule)
                out = Path(settings.output_dir) / "predictions" / _rule_folder(rule) / f"{stem}.tsv"
                out.parent.mkdir(parents=True, exist_ok=True)
                written = write_glue_predictions(task, examples, predicted_labels(task, pred.logits).tolist(), out)
                result.predictions.append((split, rule.label, written))
    if tunes_after_training(settings):  # several exit rules: the fastest within --max_drop becomes the default
        result.tuning, result.tuning_file = tune_after_training(
            settings, task, data.dev, tokenizer, max_seq_length, held)
    return result


class EvaluationInterrupted(KeyboardInterrupt):
    """An evaluation was interrupted (Ctrl-C). ``kept`` records, each written as soon as it was measured, are in
    ``path``; ``done`` of ``total`` (checkpoint, split, batch size) results were complete."""

    def __init__(self, kept: int, path: Path, done: int, total: int):
        super().__init__(f"evaluation interrupted; {kept} records kept in {path}")
        self.kept, self.path, self.done, self.total = kept, path, done, total


def _evaluate_checkpoints(settings: RunSettings, data: TaskData, tokenizer, rules: list[ExitRule],
                          checkpoints: list[tuple[str, str]], store: RecordStore,
                          max_seq_length: int, result: RunResult,
                          on_result: Callable[[ResultGroup], None] | None) -> None:
    """Sweep the exit rules over checkpoints x dev splits x batch sizes; each result's records go to ``store``
    as soon as they are measured, then into ``result`` and to ``on_result``; then redraw the plots. A
    KeyboardInterrupt becomes :class:`EvaluationInterrupted` (what was kept)."""

    task = data.task
    total = len(checkpoints) * len(data.dev) * len(settings.eval_batch_sizes)
    written: list[list[EvalRecord]] = []  # the results whose records are in the file (one append each: atomic)
    pending: list[EvalRecord] | None = None  # the result being written
    try:
        for name, path in checkpoints:
            model = load_eval_model(path, settings.backend, settings.threads)
            name = backend_name(name, model)
            _check_task_matches(model, task, path)
            for split, examples in data.dev.items():
                features = tokenize_examples(
                    tokenizer, task, _limit(examples, settings.max_eval_samples), max_seq_length
                )
                for batch_size in settings.eval_batch_sizes:
                    found = evaluate_exit_rules(
                        model, features, task, rules, batch_size, name, split,
                        settings.regression_threshold, tokenizer.pad_token_id or 0, progress=settings.progress,
                        timing_rounds=settings.timing_rounds,
                    )
                    for record in found:
                        record.extra["backend"] = backend_info(model)
                    pending = found
                    store.append(found)
                    written.append(found)
                    group = ResultGroup(task.name, name, split, batch_size, found)
                    result.records += found
                    result.groups.append(group)
                    result.results_file = store.path
                    if on_result is not None:
                        on_result(group)
        result.plots += _plot_stored(settings, task, list(data.dev), store)
    except KeyboardInterrupt:
        # Ctrl-C may land between writing a result and noting it: the file says whether it was written
        if pending is not None and (not written or written[-1] is not pending) and _in_store(store, pending):
            written.append(pending)
        raise EvaluationInterrupted(sum(len(g) for g in written), store.path, len(written), total) from None


def _in_store(store: RecordStore, found: list[EvalRecord]) -> bool:
    """True when every record of ``found`` is stored in ``store`` exactly as measured."""
    stored = store.read()
    return all(json.loads(json.dumps(asdict(r))) in stored for r in found)


def _plot_stored(settings: RunSettings, task: TaskSpec, splits: list[str], store: RecordStore) -> list[Path]:
    """Redraw each split's trade-off plot from every record stored for the task and split (this run's and
    earlier runs'), at the run's largest batch size where measured. Returns the plots written."""
    plots = []
    stored = store.load()
    threshold = settings.regression_threshold if task.is_regression else None
    for split in splits:
        points = plot_points(stored, task.name, split, max(settings.eval_batch_sizes), threshold, task.main_metric)
        if len({(r.exit_rule, r.exit_value) for r in points}) > 1:
            plot_path = Path(settings.output_dir) / f"tradeoff_{_slug(task.name)}_{split}.png"
            plots.append(plot_tradeoff(points, plot_path, task.main_metric))
    return plots


def _check_task_matches(model, task: TaskSpec, path: str) -> None:
    if model.num_labels != task.num_labels:
        raise ValueError(f"the model at {path} has {model.num_labels} labels but task {task.name} has {task.num_labels}")
    check_task_labels(task, ModelLabels.from_config(model.config, path), warn=False)


def _exit_rules(settings: RunSettings) -> list[ExitRule]:
    return check_exit_rules(settings.exit_rules)  # again: the field may have been reassigned since __post_init__


def _rule_folder(rule: ExitRule) -> str:
    """predictions/<folder>: "patience_3" (as before exit rules existed), "entropy_0.3", "layer_2"."""
    return str(rule).replace(":", "_")


def _single_patience(patiences: list[int]) -> int | None:
    distinct = set(patiences)
    return distinct.pop() if len(distinct) == 1 else None


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", name.lower())

