"""A finished run's entry in the report's results.json (its metadata, training time and conditions, evaluation,
settings and CPU) and the training-time comparison of a task's runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pabee.timing import mean_std

from .machine import cpu_model
from .report_archive import current_settings
from .report_evaluate import read_evaluation
from .report_plan import ALL_METHODS, DISTILL, PABEE, PLAIN, ReportConfig, RunSpec, display_path
from .report_run import RUN_META, read_json


def training_time(folder: Path) -> dict:
    """train_runtime and epochs from the Trainer's final state, and their ratio (seconds per epoch)."""
    state = read_json(folder / "trainer_state.json") or {}
    final = next((e for e in reversed(state.get("log_history", [])) if "train_runtime" in e), None)
    if final is None:
        return {"train_runtime_s": None, "epochs": None, "train_s_per_epoch": None}
    epochs = final.get("epoch") or state.get("epoch") or state.get("num_train_epochs")
    runtime = float(final["train_runtime"])
    return {"train_runtime_s": runtime, "epochs": epochs, "train_s_per_epoch": runtime / epochs if epochs else None}


def timing_rounds_of(records: Sequence[dict]) -> int:
    """The timed rounds the records were evaluated with (the most, if they differ)."""
    return max((len(r["extra"].get("eval_seconds_rounds", ())) for r in records), default=0)


def interleaving_of(records: Sequence[dict]) -> str:
    """"blocks" when the records were timed with the exit rules taking turns on blocks of consecutive batches
    (``extra.timing_block_batches``), "batches" when the rules took turns batch by batch."""
    if records and all("timing_block_batches" in r["extra"] for r in records):
        return "blocks"
    return "batches"


def load_run(spec: RunSpec, reused: bool, config: ReportConfig) -> dict:
    """A run's metadata, training time and conditions, its evaluation (report_eval.json: the replay records of
    every setting, the tuned settings, the timed settings and their equivalence checks), the settings it was made
    with and the CPU it was timed on, as stored in results.json (and kept from there by report_archive once the
    folder is gone)."""
    meta = read_json(spec.output_dir / RUN_META)
    evaluation = read_evaluation(spec.output_dir)
    return {
        **current_settings(spec, config), "archived": False,
        # evaluations written before they recorded their CPU were timed here: run folders do not move between machines
        "timed_on": evaluation.get("cpu_model") or cpu_model(),
        "model": spec.model.name, "task": spec.task.folder, "seed": spec.seed, "method": spec.method,
        "output_dir": display_path(spec.output_dir), "reused": reused, "elapsed_s": meta["elapsed_s"],
        "train_s": meta["train_s"], "eval_s": meta.get("eval_s", 0.0),
        "train_threads": meta["training"]["torch_threads"], "train_shard": meta["training"]["shard"],
        "timing_rounds": evaluation["timing_rounds"], "eval_threads": evaluation["torch_threads"],
        "timing_interleaving": "blocks", "timing_examples": evaluation["timing_examples"],
        "num_examples": evaluation["num_examples"], **training_time(spec.output_dir),
        "records": evaluation["records"], "tuning": evaluation["tuning"],
        "timed_settings": evaluation["timed_settings"], "timing": evaluation["timing"],
    }



def training_condition(run: dict) -> tuple[int, int | None, str | None]:
    """(torch threads, number of shards or None, CPU) the run was trained with. A run is trained and evaluated in
    the same folder, which does not move between machines: its CPU is the one its timings were taken on."""
    shard = run["train_shard"]
    return run["train_threads"], int(shard.split("/")[1]) if shard else None, run.get("timed_on")


def training_ratio(runs: Sequence[dict]) -> dict:
    """Seconds per training epoch of each method (mean over seeds) and PABEE / plain; ``mixed_conditions`` when
    the runs were trained with different torch threads, sharding or CPUs (the ratio is then the mean over the seeds
    whose plain and PABEE runs share their conditions). Distill's seconds per epoch only when the task has distill
    runs."""
    per_method = {}
    for method in ALL_METHODS:
        values = [r["train_s_per_epoch"] for r in runs if r["method"] == method and r["train_s_per_epoch"]]
        per_method[method] = mean_std(values)[0] if values else None
    plain, pabee = per_method[PLAIN], per_method[PABEE]
    conditions = {training_condition(r) for r in runs if r["train_s_per_epoch"]}
    mixed = len(conditions) > 1
    ratio = pabee / plain if plain and pabee else None
    if mixed:  # mean of per-seed ratios of plain and PABEE runs trained under the same conditions (None if none)
        timed = {(r["seed"], r["method"]): r for r in runs if r["train_s_per_epoch"]}
        pairs = [timed[seed, PABEE]["train_s_per_epoch"] / timed[seed, PLAIN]["train_s_per_epoch"]
                 for seed in sorted({seed for seed, _ in timed})
                 if (seed, PLAIN) in timed and (seed, PABEE) in timed
                 and training_condition(timed[seed, PLAIN]) == training_condition(timed[seed, PABEE])]
        ratio = mean_std(pairs)[0] if pairs else None
    out = {"plain_s_per_epoch": plain, "pabee_s_per_epoch": pabee, "ratio": ratio, "mixed_conditions": mixed}
    if any(r["method"] == DISTILL for r in runs):
        out["distill_s_per_epoch"] = per_method[DISTILL]
    return out
