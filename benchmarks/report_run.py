"""The results report's runs: train and evaluate each planned run in its own folder, or reuse it when it has
finished already (so an interrupted report resumes where it stopped).

A run folder is this report's when it holds ``report_run.json`` (:data:`RUN_META`); its ``settings`` must equal
the run's key (``ReportConfig.run_key``), otherwise the folder is refused, never overwritten: regenerate it by
removing it. The folder is "done" when its ``report_eval.json`` (:mod:`benchmarks.report_evaluate`: one
all-layer pass, replay scoring, tuning, a few timed settings and the replay == inference check) is complete and
made with the run's evaluation key, "trained" when its training finished (recorded in RUN_META) but its evaluation
did not, else "new". A folder evaluated only by the earlier scheme (``eval_results.json`` with every rule timed) is
"trained": it is evaluated again (cheaply), its old file is left as it was.

Invocations may share a work directory (two ``--shard``s, or the same command started twice): a process works on
a run only while it holds the run's lock (:func:`claim`, a file beside the folder); a run another process holds is
skipped, and one that another process finished meanwhile is reused.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from pabee.config import is_pabee_folder
from pabee.evaluate import RESULTS_NAME
from pabee.runner import RunSettings, run
from pabee.tables import format_group

from .report_evaluate import evaluate_run, evaluation_done, read_json, write_json
from .report_plan import BATCH_SIZES, DISTILL, PLAIN, ReportConfig, ReportError, RunSpec, shard_of
from .report_render import format_seconds

ARCHIVED = "archived"  # a run's status when results.json keeps it and its folder is gone (report_archive)
RUN_META = "report_run.json"  # written by this report into every run folder: settings, seconds, conditions


def value_key(value: float) -> float:
    return round(float(value), 9)


def threshold_key(threshold: float | None) -> float | None:
    """A rule's second setting (the hybrid rule's confidence threshold) as a key; None for the other rules."""
    return None if threshold is None else value_key(threshold)


def record_key(record: dict) -> tuple:
    return (record["split"], record["exit_rule"], value_key(record["exit_value"]),
            threshold_key(record.get("exit_threshold")), record["batch_size"])


def expected_keys(spec: RunSpec) -> set[tuple]:
    """(split, rule kind, value, threshold, batch size) of every record a run evaluated by the earlier scheme
    (every rule timed, ``eval_results.json``) has; kept for callers, the report no longer reads them."""
    return {(split, rule.kind, value_key(rule.value), threshold_key(rule.threshold), bs)
            for split in spec.task.dev_splits for rule in spec.rules for bs in BATCH_SIZES}


def final_records(spec: RunSpec) -> list[dict]:
    """The run's records of the final model for the expected rules and batch sizes (the earlier scheme's
    ``eval_results.json``; kept for callers)."""
    wanted = expected_keys(spec)
    records = read_json(spec.output_dir / RESULTS_NAME) or []
    return [r for r in records if r.get("checkpoint") == "final" and record_key(r) in wanted]


def run_status(spec: RunSpec, config: ReportConfig) -> str:
    """"done" (reuse), "trained" (evaluate again) or "new" (train). A folder this report did not write, or wrote
    with other settings, is an error: it is never overwritten."""
    folder = spec.output_dir
    if not folder.is_dir() or not any(folder.iterdir()):
        return "new"
    meta = read_json(folder / RUN_META)
    if not isinstance(meta, dict):
        raise ReportError(f"{folder} was not written by this report: remove it or choose another --work-dir")
    want = json.loads(json.dumps(config.run_key(spec)))
    have = meta.get("settings") if isinstance(meta.get("settings"), dict) else {}
    if have != want:
        diff = ", ".join(f"{k} {have.get(k)!r} != {v!r}" for k, v in want.items() if have.get(k) != v)
        raise ReportError(f"{folder} holds a run with other settings ({diff}): remove it or choose another --work-dir")
    if "training" not in meta or not is_pabee_folder(folder):
        return "new"  # its training did not finish
    if evaluation_done(spec, config):
        return "done"
    return "trained"


def status_of(spec: RunSpec, config: ReportConfig, archive: Mapping[Path, dict]) -> str:
    """:func:`run_status`, or ARCHIVED for a run kept from results.json (report_archive: its folder is gone)."""
    return ARCHIVED if spec.output_dir in archive else run_status(spec, config)


@contextlib.contextmanager
def claim(folder: Path) -> Iterator[bool]:
    """Hold the lock of the run in ``folder`` while the block runs: yields True, or False at once when another
    process holds it (it is training or evaluating that run). The lock file lies beside the folder, which training
    a run afresh removes and recreates."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder.with_name(folder.name + ".lock")), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def resumable(folder: Path) -> bool:
    """Whether an unfinished training of this report left a checkpoint in ``folder`` to resume from."""
    meta = read_json(folder / RUN_META)
    return isinstance(meta, dict) and "training" not in meta and any(folder.glob("checkpoint-*"))


def run_settings(spec: RunSpec, config: ReportConfig, train: bool, resume: bool = False) -> RunSettings:
    """The runner's settings: train the run (no evaluation; ``resume``: from its last checkpoint), or evaluate the
    trained model in its folder."""
    folder = str(spec.output_dir)
    common = dict(output_dir=folder, task_name=spec.task.folder, data_dir=config.glue_dir, progress=False)
    if not train:
        return RunSettings(
            **common, model_name_or_path=folder, do_eval=True, exit_rules=list(spec.rules),
            eval_batch_sizes=list(BATCH_SIZES), max_eval_samples=config.hyper[spec.model.name].max_eval_samples,
            timing_rounds=config.timing_rounds,
        )
    train_settings = config.train_settings(spec.model.name, folder, spec.seed, spec.task)
    if resume:
        train_settings.resume_from_checkpoint = "last"
    return RunSettings(
        **common, model_name_or_path=spec.model.path, do_train=True, overwrite_output_dir=not resume,
        max_train_samples=config.hyper[spec.model.name].max_train_samples,
        loss_weighting="last" if spec.method == PLAIN else None,
        distillation_alpha=config.distillation[0] if spec.method == DISTILL else None,
        distillation_temperature=config.distillation[1] if spec.method == DISTILL else None,
        train=train_settings,
    )


def run_logged(settings: RunSettings, folder: Path) -> float:
    """pabee.runner.run with each result table (and the Trainer's printed logs) appended to the folder's run.log;
    -> seconds taken. (The records are read back from the folder's eval_results.json afterwards, with those of
    earlier evaluations: see :func:`final_records`.)"""
    start = time.perf_counter()
    with open(folder / "run.log", "a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        run(settings, on_result=lambda group: print(format_group(group), file=log, flush=True))
    return time.perf_counter() - start


def execute_run(spec: RunSpec, status: str, config: ReportConfig, evaluate: bool = True,
                log: Callable[[str], None] = lambda message: None) -> dict[str, float]:
    """Train (status "new") and then, when ``evaluate``, evaluate one run (status "new" or "trained"); its printed
    output goes to run.log. -> the seconds taken: {"train_s": ..., "eval_s": ...} (what was done).

    RUN_META keeps the run key ("settings"), "elapsed_s" (every invocation's seconds on the run), "train_s" and
    "training" (torch threads and shard of the training process), "eval_s" and "evaluation" (threads, timing rounds
    and examples) of the last evaluation (:func:`benchmarks.report_evaluate.evaluate_run`, progress to ``log``). Training and evaluation may happen in different invocations (--train-only)."""
    folder = spec.output_dir
    taken: dict[str, float] = {}
    if status == "new":
        resume = resumable(folder)  # an interrupted training of this run: continue from its last checkpoint
        if resume:
            meta = read_json(folder / RUN_META)
            meta.setdefault("resumed_from", []).append(sorted(p.name for p in folder.glob("checkpoint-*"))[-1])
        else:
            shutil.rmtree(folder, ignore_errors=True)  # nothing to resume: start it afresh
            folder.mkdir(parents=True, exist_ok=True)
            meta = {"settings": config.run_key(spec), "elapsed_s": 0.0}
        write_json(folder / RUN_META, meta)  # from now on the folder is known as this report's
        taken["train_s"] = run_logged(run_settings(spec, config, train=True, resume=resume), folder)
        for checkpoint in folder.glob("checkpoint-*"):  # only needed to resume an interrupted training
            shutil.rmtree(checkpoint, ignore_errors=True)
        meta["train_s"] = taken["train_s"]  # after a resume: the last invocation's part only ("resumed_from")
        meta["training"] = {"torch_threads": torch.get_num_threads(), "shard": config.shard_label,
                            "train_only": config.train_only}
        meta["elapsed_s"] += taken["train_s"]
        write_json(folder / RUN_META, meta)
    else:
        meta = read_json(folder / RUN_META)
        if not isinstance(meta, dict):  # run_status checked it; it went away since
            raise ReportError(f"{folder / RUN_META} is missing or unreadable: remove {folder} to train it again")
    if evaluate:
        start = time.perf_counter()
        evaluate_run(spec, config, log)
        taken["eval_s"] = time.perf_counter() - start
        meta["eval_s"] = taken["eval_s"]
        meta["evaluation"] = {"torch_threads": torch.get_num_threads(), "timing_rounds": config.timing_rounds,
                              "timing_examples": config.timing_examples.get(spec.model.name),
                              "scheme": "replay"}
        meta["elapsed_s"] += taken["eval_s"]
        write_json(folder / RUN_META, meta)
    return taken


def describe_taken(taken: dict[str, float]) -> str:
    """"12.0 s (training 10.0 s, evaluation 2.0 s)"."""
    names = {"train_s": "training", "eval_s": "evaluation"}
    parts = [f"{name} {format_seconds(taken[key])}" for key, name in names.items() if key in taken]
    total = format_seconds(sum(taken.values()))
    return f"{total} ({', '.join(parts)})" if len(parts) > 1 else total


def run_all(plan: Sequence[RunSpec], config: ReportConfig, log: Callable[[str], None],
            archive: Mapping[Path, dict] | None = None) -> dict[Path, bool]:
    """Reuse, re-evaluate or train every planned run, with one progress line per run. -> {folder: reused} of the
    runs present afterwards (archived runs included). With ``config.evaluate_only`` runs not trained yet are
    skipped (the report shows them as missing), nothing is trained. ``archive``: {folder: entry} of the runs kept
    from the previous results.json (:mod:`benchmarks.report_archive`), neither trained nor evaluated."""
    archive = archive or {}
    statuses = [status_of(spec, config, archive) for spec in plan]  # every folder checked before anything runs
    missing = sum(s == "new" for s in statuses) if config.evaluate_only else 0
    todo = sum(s not in ("done", ARCHIVED) for s in statuses) - missing
    trained = sum(s == "trained" for s in statuses)
    skipped = f", {missing} not trained yet (skipped: --evaluate-only)" if config.evaluate_only else ""
    kept = sum(s == ARCHIVED for s in statuses)
    archived = f" ({kept} of them kept from results.json, their folders gone)" if kept else ""
    log(f"plan: {len(plan)} runs, {len(plan) - todo - missing} reused{archived}, {todo} to run ({trained} of them "
        f"trained already, only evaluated){skipped} (work dir {config.work_dir})")
    start = time.perf_counter()
    reused = {}
    for i, (spec, status) in enumerate(zip(plan, statuses), start=1):
        prefix = f"({i}/{len(plan)})"
        if status == "new" and config.evaluate_only:
            log(f"{prefix} missing {spec.label}: not trained yet ({spec.output_dir})")
            continue
        if status == ARCHIVED:
            log(f"{prefix} reused {spec.label} from results.json (its folder {spec.output_dir} is gone)")
        elif status == "done":
            log(f"{prefix} reused {spec.label} ({spec.output_dir})")
        if status in ("done", ARCHIVED):
            reused[spec.output_dir] = True
            continue
        with claim(spec.output_dir) as mine:
            if not mine:
                log(f"{prefix} missing {spec.label}: another process is working on it ({spec.output_dir})")
                continue
            status = run_status(spec, config)  # another process may have finished it meanwhile
            reused[spec.output_dir] = status == "done"
            if status == "done":
                log(f"{prefix} reused {spec.label}: another process finished it ({spec.output_dir})")
                continue
            what = "train + evaluate" if status == "new" else "evaluate the trained model"
            log(f"{prefix} start {spec.label}: {what} -> {spec.output_dir}")
            taken = execute_run(spec, status, config, log=log)
        log(f"{prefix} finished {spec.label} in {describe_taken(taken)} "
            f"(report so far {format_seconds(time.perf_counter() - start)})")
    return reused


def train_all(plan: Sequence[RunSpec], config: ReportConfig, log: Callable[[str], None],
              archive: Mapping[Path, dict] | None = None) -> int:
    """--train-only: train every run (of this shard) that is not trained yet and not archived, evaluate nothing.
    -> runs trained."""
    archive = archive or {}
    mine = shard_of(plan, config.shard)
    statuses = [status_of(spec, config, archive) for _, spec in mine]  # checked before anything runs
    todo = sum(s == "new" for s in statuses)
    part = f"shard {config.shard_label}: {len(mine)} of them, " if config.shard else ""
    log(f"plan: {len(plan)} runs, {part}{len(mine) - todo} trained already, {todo} to train "
        f"(train only, work dir {config.work_dir})")
    start = time.perf_counter()
    for (i, spec), status in zip(mine, statuses):
        prefix = f"({i + 1}/{len(plan)})"
        if status != "new":
            what = {"done": "evaluated", ARCHIVED: "in results.json (archived)"}.get(status, "trained, not evaluated")
            log(f"{prefix} skipped {spec.label}: already {what} ({spec.output_dir})")
            continue
        with claim(spec.output_dir) as mine:
            if not mine or run_status(spec, config) != "new":  # being trained, or trained meanwhile, elsewhere
                why = "another process is training it" if not mine else "another process trained it"
                log(f"{prefix} skipped {spec.label}: {why} ({spec.output_dir})")
                todo -= 1
                continue
            log(f"{prefix} start {spec.label}: train only -> {spec.output_dir}")
            taken = execute_run(spec, status, config, evaluate=False)
        log(f"{prefix} finished {spec.label} in {describe_taken(taken)} "
            f"(training so far {format_seconds(time.perf_counter() - start)})")
    return todo
