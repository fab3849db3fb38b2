"""Fine-tuning with the transformers Trainer: joint training of the backbone and every internal classifier.

Runs data-parallel under ``torchrun`` / ``accelerate launch`` (the Trainer shards every epoch over the processes;
on a machine without GPUs they train on the CPU over gloo), and only the first process writes. Checkpoints are
written to a staging folder and renamed into place, so an interrupted run never leaves a half-written
``checkpoint-N`` behind and can resume from the last complete one.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from .features import Features
from .metrics import layer_metrics
from .run_folder import check_same_run, move_previous_run, run_identity, save_run_identity
from .settings import TrainSettings  # noqa: F401  (lives in pabee.settings; re-exported here)
from .tasks import TaskSpec

logger = logging.getLogger(__name__)

STAGING_DIR = ".staging"
CLASSIFIER_LR_RATIO = 20.0


def init_regression_heads(model, labels) -> float:
    """Start every regression head at the mean training label (bias = mean, weights untouched); returns the mean.

    Fresh heads predict about 0. On STS-B (labels 0..5, mean 2.4) the first steps' squared error is then mostly that
    offset, and in a short run the heads can end under-trained: on MPNet-base (2000 STS-B examples, 2 epochs) PABEE's
    full-depth dev Pearson was 0.80 with zero biases and 0.94 with this start. It is not a free win: on MiniLM-L6
    trained 5 epochs on the full set it cost 1.5-2.5 Pearson points (plain and PABEE alike), so ``pabee train``
    applies it only with ``--regression_head_init mean``. Call it only on fresh heads.
    """
    if model.num_labels != 1:
        raise ValueError(f"init_regression_heads is for regression models (1 label), this one has {model.num_labels}")
    values = [float(y) for y in labels]
    if not values:
        raise ValueError("init_regression_heads needs at least one training label")
    mean = sum(values) / len(values)
    with torch.no_grad():
        for head in model.classifiers:
            head.bias.fill_(mean)
    return mean


class AtomicCheckpoints(TrainerCallback):
    """Moves each checkpoint the Trainer wrote into the staging folder (``TrainingArguments.output_dir`` is
    ``<output_dir>/.staging``) to ``<output_dir>/checkpoint-N`` in one rename, and keeps the newest
    ``save_total_limit`` there. Under torchrun every process writes its RNG state into the staging checkpoint, so
    the first process renames it only when all have written."""

    def __init__(self, output_dir: str | os.PathLike, save_total_limit: int | None):
        self.output_dir = Path(output_dir)
        self.save_total_limit = save_total_limit

    def on_save(self, args, state, control, **kwargs):
        PartialState().wait_for_everyone()  # every process has written its part (no-op in a single process)
        if args.should_save:
            name = f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            final = self.output_dir / name
            if final.is_dir():
                shutil.rmtree(final)
            os.replace(Path(args.output_dir) / name, final)
            if self.save_total_limit:
                rotate_checkpoints(self.output_dir, self.save_total_limit)
        PartialState().wait_for_everyone()
        return control


def rotate_checkpoints(folder: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest (highest step) ``checkpoint-N`` folders of ``folder``; returns those
    deleted."""
    found = sorted((int(p.name.rsplit("-", 1)[1]), p) for p in Path(folder).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
                   if p.is_dir() and p.name.rsplit("-", 1)[1].isdigit())
    old = [p for _step, p in found[: max(len(found) - keep, 0)]]
    for path in old:
        shutil.rmtree(path)
    return old


class PabeeTrainer(Trainer):
    """Trainer that saves pabee folders, writes checkpoints atomically and evaluates every internal classifier."""

    def __init__(self, *args, task: TaskSpec, classifier_learning_rate: float, run_identity: dict | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.task = task
        self.classifier_learning_rate = classifier_learning_rate
        self.run_identity = run_identity  # saved as pabee_run.json with every checkpoint and the final model

    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with the internal classifiers moved to groups of their own learning rate.

        Freshly initialised heads at the backbone's small learning rate learn slowly, and meanwhile the joint loss
        of every layer bends the pretrained backbone towards the label prior (early classifiers that all answer
        the majority class, regression heads stuck near a constant). A larger head learning rate avoids that.
        """
        had_optimizer = self.optimizer is not None
        optimizer = super().create_optimizer(model)
        if had_optimizer:
            return optimizer
        heads = {id(p) for p in self.accelerator.unwrap_model(self.model).classifiers.parameters()}
        for group in list(optimizer.param_groups):
            moved = [p for p in group["params"] if id(p) in heads]
            if moved:
                group["params"] = [p for p in group["params"] if id(p) not in heads]
                optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"},
                                           "params": moved, "lr": self.classifier_learning_rate})
        return optimizer

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Write a pabee folder (weights, configs, tokenizer, training arguments, run identity) from the first
        process; the Trainer calls this for every checkpoint too."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        model.save_pretrained(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))
        if self.run_identity is not None:
            save_run_identity(output_dir, self.run_identity)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        with torch.no_grad():
            out = model(**inputs, output_all_layers=True)
        if prediction_loss_only:
            return out.loss.detach(), None, None
        return out.loss.detach(), out.all_logits.detach().transpose(0, 1), labels  # (B, L, C)


def _layer_metrics_fn(task: TaskSpec):
    def compute(eval_pred) -> dict[str, float]:
        all_logits = np.asarray(eval_pred.predictions)  # (N, L, C)
        labels = np.asarray(eval_pred.label_ids)
        if not task.is_regression:
            labels = labels.astype(np.int64)
        return layer_metrics(task, all_logits, labels)

    return compute


def check_output_dir(output_dir: str | os.PathLike, overwrite: bool, resume: str | bool | None) -> None:
    """Refuse to train into a non-empty folder unless asked to overwrite it or to resume from it, and refuse to do
    both with a checkpoint of that folder (overwriting moves the previous run, checkpoints included, aside)."""
    path = Path(output_dir)
    if path.is_file():
        raise ValueError(f"output_dir {path} is a file")
    if overwrite and resume not in (None, False, ""):
        inside = resume is True or resume == "last" or path.resolve() in Path(resume).resolve().parents
        if inside:
            raise ValueError(
                "--overwrite_output_dir moves the previous run aside, checkpoints included, so it cannot be combined "
                f"with --resume_from_checkpoint from {path}: drop --overwrite_output_dir to resume, or "
                "--resume_from_checkpoint to train anew"
            )
    if path.is_dir() and any(path.iterdir()) and not overwrite and not resume:
        raise ValueError(
            f"output_dir {path} already exists and is not empty; use --overwrite_output_dir to train anew "
            "or --resume_from_checkpoint to continue"
        )


def resolve_resume(output_dir: str, resume: str | bool | None) -> str | None:
    """``True``/"last" -> the last complete checkpoint in output_dir (None when there is none yet)."""
    if resume in (None, False, ""):
        return None
    if resume is True or resume == "last":
        if not os.path.isdir(output_dir):
            return None
        last = get_last_checkpoint(output_dir)
        if last is None:
            logger.warning("no checkpoint in %s to resume from: starting from the beginning", output_dir)
        return last
    if not os.path.isdir(resume):
        raise ValueError(f"checkpoint to resume from does not exist: {resume}")
    return str(resume)


def _launched_processes() -> int:
    """How many processes torchrun / accelerate launch started (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _train_on_cpu(settings: TrainSettings) -> bool:
    """Whether to tell the Trainer ``use_cpu``: when asked, for bf16 without CUDA (CPU autocast), and when there
    is no accelerator to use. Not saying so on a GPU-less machine breaks torchrun: accelerate then initialises a
    process group but reports no distribution, and every process trains alone on all the data."""
    if settings.use_cpu or (settings.bf16 and not torch.cuda.is_available()):
        return True
    if hasattr(torch, "accelerator"):
        device = torch.accelerator.current_accelerator()
    else:  # torch < 2.6
        device = torch.device("cuda") if torch.cuda.is_available() else None
    if device is None:
        return True
    return device.type == "mps" and _launched_processes() > 1  # accelerate cannot spread processes over MPS


def train(
    model,
    tokenizer,
    task: TaskSpec,
    train_features: Features,
    settings: TrainSettings,
    eval_features: Features | None = None,
    *,
    base_model: str | os.PathLike | None = None,
    overwrite_output_dir: bool = False,
) -> dict:
    """Fine-tune ``model`` jointly (backbone + all classifiers) and save it into ``settings.output_dir``.

    Returns the Trainer's training metrics. Checkpoints go to ``output_dir/checkpoint-N`` every ``save_steps``,
    each with ``pabee_run.json`` (task, labels, ``base_model`` = what the model was loaded from); resuming refuses
    a checkpoint whose record differs. ``overwrite_output_dir`` first moves whatever the folder holds into
    ``output_dir/previous-run-<time>/``. Under torchrun / accelerate launch every process calls this; each trains
    on a shard of every epoch and only the first one writes.
    """
    if train_features.labels is None:
        raise ValueError("the training data has no labels")
    if settings.evaluate_during_training and (eval_features is None or eval_features.labels is None):
        raise ValueError("evaluate_during_training needs labeled dev data")
    fp16 = settings.fp16
    if fp16 and (settings.use_cpu or not torch.cuda.is_available()):
        logger.warning("--fp16 needs a CUDA GPU; training in fp32 on the CPU")
        fp16 = False
    use_cpu = _train_on_cpu(settings)
    report_to = ["tensorboard"] if importlib.util.find_spec("tensorboard") is not None else "none"
    staging = os.path.join(settings.output_dir, STAGING_DIR)  # checkpoints are written here, then renamed
    args = TrainingArguments(
        output_dir=staging,
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.num_train_epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.per_device_train_batch_size,
        per_device_eval_batch_size=settings.per_device_eval_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        weight_decay=settings.weight_decay,
        adam_epsilon=settings.adam_epsilon,
        max_grad_norm=settings.max_grad_norm,
        warmup_steps=settings.warmup_steps,
        logging_steps=settings.logging_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        eval_strategy="steps" if settings.evaluate_during_training else "no",
        eval_steps=settings.save_steps if settings.evaluate_during_training else None,
        seed=settings.seed,
        fp16=fp16,
        bf16=settings.bf16,
        train_sampling_strategy=settings.train_sampling_strategy,
        use_cpu=use_cpu,
        report_to=report_to,
        disable_tqdm=settings.disable_tqdm,
        remove_unused_columns=False,
        dataloader_pin_memory=torch.cuda.is_available() and not settings.use_cpu,
        label_names=["labels"],
    )
    classifier_lr = settings.classifier_learning_rate
    if classifier_lr is None:
        classifier_lr = CLASSIFIER_LR_RATIO * settings.learning_rate
    logger.info("learning rate %g for the backbone, %g for the internal classifiers", settings.learning_rate, classifier_lr)
    if overwrite_output_dir:
        with args.main_process_first(local=False, desc="moving the previous run aside"):
            if args.process_index == 0:
                move_previous_run(settings.output_dir)
    with args.main_process_first(local=False, desc="clearing the checkpoint staging folder"):
        if args.process_index == 0:
            shutil.rmtree(staging, ignore_errors=True)  # what an interrupted save left
    identity = run_identity(task, model, base_model)
    resume = resolve_resume(settings.output_dir, settings.resume_from_checkpoint)
    if resume is not None:
        check_same_run(resume, identity)
    model.train()
    trainer = PabeeTrainer(
        model=model,
        args=args,
        train_dataset=train_features.rows(),
        eval_dataset=eval_features.rows() if settings.evaluate_during_training else None,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=_layer_metrics_fn(task) if settings.evaluate_during_training else None,
        task=task,
        classifier_learning_rate=classifier_lr,
        run_identity=identity,
        callbacks=[AtomicCheckpoints(settings.output_dir, settings.save_total_limit)],
    )
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(settings.output_dir)
    if args.should_save:
        trainer.state.save_to_json(os.path.join(settings.output_dir, "trainer_state.json"))
        shutil.rmtree(staging, ignore_errors=True)
    model.eval()
    return dict(result.metrics)
