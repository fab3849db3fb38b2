"""The results report's aggregation: the finished runs' records -> results.json (means over seeds per exit-rule
setting, the matched rows, the picks and their verdicts against the targets, the setup the page states)."""

from __future__ import annotations

import dataclasses
import datetime
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pabee.exit_rules import DEFAULT_REGRESSION_THRESHOLD
from pabee.runner import RunSettings, load_task_data
from pabee.settings import default_of
from pabee.tasks import TaskSpec, get_task
from pabee.timing import mean_std
from pabee.train import CLASSIFIER_LR_RATIO

from .machine import machine_info
from .report_compare import compare_distill
from .report_evaluate import check_totals, kept_logits_path
from .report_plan import (
    BATCH_SIZES,
    DISTILL,
    LAYER_SPEEDUP_TARGETS,
    OTHER_KINDS,
    PABEE,
    PLAIN,
    QUALITY_TOLERANCE,
    WALL_TO_LAYER_TARGETS,
    ModelSpec,
    ReportConfig,
    RunSpec,
    command_line,
    display_path,
    subset_command,
)
from .report_run import threshold_key, value_key
from .report_runs import load_run, training_condition, training_ratio
from .report_tuned import regression_tradeoff, target_checks, tuned_by_method

# ---------------------------------------------------------------------------------------------------- points


def rule_label(kind: str, value: float, task: TaskSpec, threshold: float | None = None) -> str:
    """"patience 2", "entropy 0.3 ln C", "confidence 0.9", "layer 3", "hybrid 2@0.9"; "full depth" for
    patience 0."""
    if kind == "patience" and value == 0:
        return "full depth"
    if kind == "entropy":
        return f"entropy {value / math.log(task.num_labels):.3g} ln C"
    return f"{kind} {value:g}" + ("" if threshold is None else f"@{threshold:g}")


def point_stats(by_seed: dict[int, dict], task: TaskSpec) -> dict:
    """One rule setting over seeds. by_seed[seed] = the run's replay record, with ``wall_speedup`` {batch size:
    wall-clock speed-up or None} from the run's timing (:func:`index_records`). Speed-ups are means over seeds; a
    wall-clock speed-up only when the setting was timed in every seed."""
    seeds = sorted(by_seed)
    quality = [by_seed[s] for s in seeds]
    first = quality[0]
    metrics = {}
    for name in task.metric_names:
        values = [r["metrics"][name] for r in quality]
        mean, std = mean_std(values)
        metrics[name] = {"mean": mean, "std": std, "values": values}
    layer_speedup = mean_std([r["layer_speedup"] for r in quality])[0]
    wall = {}
    for bs in BATCH_SIZES:
        values = [r["wall_speedup"].get(str(bs)) for r in quality]
        wall[str(bs)] = mean_std(values)[0] if all(v is not None for v in values) else None
    histogram: dict[str, int] = {}
    for r in quality:
        for layer, count in r["exit_layer_histogram"].items():
            histogram[layer] = histogram.get(layer, 0) + count
    return {
        "rule": first["exit_rule"], "value": first["exit_value"], "threshold": first.get("exit_threshold"),
        "label": "",
        "seeds": seeds, "metrics": metrics, "num_examples": first["num_examples"],
        "avg_exit_layer": mean_std([r["avg_exit_layer"] for r in quality])[0],
        "layer_speedup": layer_speedup,
        "wall_speedup": wall,
        "wall_to_layer": {bs: (w / layer_speedup if w is not None else None) for bs, w in wall.items()},
        "exit_layer_histogram": histogram,
    }


FULL_SETTING = "patience:0"  # the timed setting name of full depth


def full_seconds(run: dict, bs: int) -> float | None:
    entry = run["timing"].get(str(bs))
    found = entry and entry["settings"].get(FULL_SETTING)
    return found["eval_seconds"] if found else None


def cross_run_wall_speedup(plain: Sequence[dict], full: Sequence[dict]) -> dict:
    """Plain fine-tuning's speed-up against PABEE full depth at each batch size: PABEE full-depth seconds / plain
    seconds (the same timed examples), paired by seed, mean over seeds. Both run the same layers, so this is a
    noise check (about 1). ``plain``, ``full``: the plain and PABEE runs."""
    by_seed = {r["seed"]: r for r in full}
    out = {}
    for bs in BATCH_SIZES:
        ratios = []
        for run in plain:
            other = by_seed.get(run["seed"])
            a, b = (full_seconds(other, bs) if other else None), full_seconds(run, bs)
            if a and b and other["timing_examples"] == run["timing_examples"]:
                ratios.append(a / b)
        out[str(bs)] = mean_std(ratios)[0] if ratios and len(ratios) == len(plain) else None
    return out


def main_mean(point: dict, metric: str) -> float:
    return point["metrics"][metric]["mean"]


def pick_best(patience: Sequence[dict], metric: str) -> dict | None:
    """Highest mean main metric on dev; ties go to the larger layer speed-up."""
    return max(patience, key=lambda p: (round(main_mean(p, metric), 12), p["layer_speedup"]), default=None)


def pick_fastest_within(patience: Sequence[dict], metric: str, reference: float) -> dict | None:
    """The largest layer speed-up among points within QUALITY_TOLERANCE of ``reference`` (or better)."""
    ok = [p for p in patience if main_mean(p, metric) >= reference - QUALITY_TOLERANCE - 1e-12]
    return max(ok, key=lambda p: (p["layer_speedup"], main_mean(p, metric)), default=None)


def match_by_speedup(patience: Sequence[dict], others: Sequence[dict]) -> list[dict]:
    """For every patience point and every other rule kind, the point of that kind whose mean layer speed-up is
    closest. Each matched point appears once, with the patience points it was matched to (``matched_to``)."""
    matched: dict[tuple, dict] = {}
    for target in patience:
        for kind in OTHER_KINDS:
            candidates = [p for p in others if p["rule"] == kind]
            if not candidates:
                continue
            best = min(candidates, key=lambda p: (abs(p["layer_speedup"] - target["layer_speedup"]), p["value"]))
            key = (best["rule"], best["value"], best.get("threshold"))
            matched.setdefault(key, {**best, "matched_to": []})["matched_to"].append(target["label"])
    return sorted(matched.values(),
                  key=lambda p: (OTHER_KINDS.index(p["rule"]), p["value"], p.get("threshold") or 0.0))


def verdicts(point: dict | None, model: str) -> dict:
    """Layer speed-up and wall/layer ratios of a picked point against the targets ("met" / "not met")."""
    if point is None:
        return {}
    out = {}
    target = LAYER_SPEEDUP_TARGETS.get(model)
    if target is not None:
        out["layer_speedup"] = {"value": point["layer_speedup"], "target": target,
                                "met": point["layer_speedup"] >= target}
    for bs, minimum in WALL_TO_LAYER_TARGETS.items():
        value = point["wall_to_layer"].get(str(bs))
        out[f"wall_to_layer_bs{bs}"] = {"value": value, "target": minimum,
                                         "met": None if value is None else value >= minimum}  # None: not timed
    return out


# ---------------------------------------------------------------------------------------------------- one task


def index_records(runs: Sequence[dict], split: str) -> dict[tuple, dict[int, dict]]:
    """{(method, rule kind, value, threshold): {seed: replay record + its wall_speedup}} for one split (threshold:
    the hybrid rule's, None for the other rules). Regression patience rows only at the default regression threshold
    (the others are the trade-off curve's, :func:`benchmarks.report_tuned.regression_tradeoff`)."""
    table: dict[tuple, dict[int, dict]] = {}
    for one in runs:
        for r in one["records"]:
            if r["split"] != split or r.get("regression_threshold") not in (None, DEFAULT_REGRESSION_THRESHOLD):
                continue
            key = (one["method"], r["exit_rule"], value_key(r["exit_value"]), threshold_key(r.get("exit_threshold")))
            wall = {bs: (entry["settings"].get(r.get("setting")) or {}).get("wall_speedup")
                    for bs, entry in one["timing"].items()}
            table.setdefault(key, {})[one["seed"]] = {**r, "wall_speedup": wall}
    return table


def labelled_points(runs: Sequence[dict], task: TaskSpec, split: str) -> dict[tuple, dict]:
    """{(method, rule kind, value, threshold): point over the runs' seeds, with its row label}."""
    points = {key: point_stats(by_seed, task) for key, by_seed in index_records(runs, split).items()}
    for (method, kind, value, threshold), point in points.items():
        point["label"] = "plain fine-tuning" if method == PLAIN else rule_label(kind, value, task, threshold)
    return points


def distill_comparison(runs: Sequence[dict], task: TaskSpec, num_layers: int, split: str) -> dict | None:
    """Distill against PABEE (:func:`benchmarks.report_compare.compare_distill`) over the seeds both methods have,
    with plain fine-tuning of those seeds for the within-0.5-points pick (None unless plain has every one of them);
    None without distill runs. With no seed in common, every run of both (``same_seeds`` then says no)."""
    if not any(r["method"] == DISTILL for r in runs):
        return None
    seeds = {r["seed"] for r in runs if r["method"] == DISTILL} & {r["seed"] for r in runs if r["method"] == PABEE}
    same = [r for r in runs if r["seed"] in seeds] if seeds else list(runs)
    points = labelled_points(same, task, split)
    plain = points.get((PLAIN, "patience", 0, None))
    if plain is not None and set(plain["seeds"]) != seeds:
        plain = None
    return compare_distill(points, task, num_layers, plain)


def summarize_task(model: ModelSpec, task: TaskSpec, runs: Sequence[dict]) -> dict:
    """Means over seeds of every point, the matched rows, the picks and their verdicts for one model and task."""
    split = task.dev_splits[0]
    points = labelled_points(runs, task, split)
    plain = points.get((PLAIN, "patience", 0, None))
    full = points.get((PABEE, "patience", 0, None))
    if plain is not None and full is not None:
        plain["wall_speedup"] = cross_run_wall_speedup([r for r in runs if r["method"] == PLAIN],
                                                       [r for r in runs if r["method"] == PABEE])
        plain["wall_to_layer"] = dict(plain["wall_speedup"])  # layer speed-up 1
        plain["cross_run"] = True
    pabee = [p for (method, *_), p in points.items() if method == PABEE]
    patience = sorted((p for p in pabee if p["rule"] == "patience" and p["value"] > 0), key=lambda p: p["value"])
    others = [p for p in pabee if p["rule"] in OTHER_KINDS]
    metric = task.main_metric
    tuned = tuned_by_method(runs, task)
    best = pick_best(patience, metric)
    fastest = pick_fastest_within(patience, metric, main_mean(plain, metric)) if plain else None
    return {
        "model": model.name, "task": task.folder, "split": split, "main_metric": task.main_metric,
        "metric_names": list(task.metric_names), "num_layers": model.num_layers,
        "seeds": sorted({r["seed"] for r in runs}),
        "num_examples": (plain or full or {}).get("num_examples"),
        "plain": plain, "full_depth": full, "patience": patience, "matched": match_by_speedup(patience, others),
        "all_points": sorted(pabee, key=lambda p: (p["rule"], p["value"])),
        "best_patience": best, "best_verdicts": verdicts(best, model.name),
        "fastest_within": fastest, "fastest_verdicts": verdicts(fastest, model.name),
        "training": training_ratio(runs),
        "distill": distill_comparison(runs, task, model.num_layers, split),  # None without distill runs
        "tuned": tuned,
        "targets": target_checks(model.name, task, tuned),
        "regression_tradeoff": regression_tradeoff(runs, task, None if plain is None else main_mean(plain, metric)),
        "runs_present": sorted(f"{r['method']} seed {r['seed']}" for r in runs),
        "checks": check_totals(runs),
    }


# ---------------------------------------------------------------------------------------------------- the report


def count_available(task: TaskSpec, config: ReportConfig) -> int | None:
    """Training examples of the task; None when the data cannot be read."""
    try:
        data = load_task_data(RunSettings(output_dir="", task_name=task.folder, data_dir=config.glue_dir,
                                          do_train=True))
    except (ValueError, OSError):
        return None
    return len(data.train or [])


def training_examples(config: ReportConfig) -> dict[str, dict[str, dict]]:
    """{model: {task: {"available", "used"}}}: examples used after the model's --max-train-samples."""
    available: dict[str, int | None] = {}
    out = {}
    for model in config.models:
        limit = config.hyper[model.name].max_train_samples
        out[model.name] = {}
        for task in config.tasks[model.name]:
            if task.name not in available:
                available[task.name] = count_available(task, config)
            n = available[task.name]
            used = limit if n is None else n if limit is None else min(n, limit)
            out[model.name][task.folder] = {"available": n, "used": used}
    return out


def hyper_parameters(config: ReportConfig, model: str) -> dict:
    """The model's training settings as stored in results.json (and shown in the setup)."""
    hyper = dataclasses.asdict(config.train_settings(model))
    for key in ("output_dir", "seed", "resume_from_checkpoint", "disable_tqdm"):
        hyper.pop(key)
    classifier_lr = hyper["classifier_learning_rate"] or CLASSIFIER_LR_RATIO * hyper["learning_rate"]
    hyper["classifier_learning_rate"] = classifier_lr
    hyper["max_seq_length"] = default_of(RunSettings, "max_seq_length")
    hyper["max_train_samples"] = config.hyper[model].max_train_samples
    runs = {t.name for t in config.tasks.get(model, [])}  # only the overrides of tasks this model trains on
    hyper["task_epochs"] = {get_task(name).folder: e for name, e in config.hyper[model].task_epochs.items()
                            if name in runs}
    return hyper


def count_by(values: Sequence) -> list[dict]:
    """[{"value": v, "runs": n}] in order of first appearance."""
    counts: dict = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return [{"value": value, "runs": n} for value, n in counts.items()]


def aggregate(plan: Sequence[RunSpec], reused: dict[Path, bool], config: ReportConfig, started: float,
              archive: Mapping[Path, dict] | None = None) -> dict:
    """results.json: settings, machine, every run with its raw records, and the per-task summaries (each with the
    command that regenerates its table alone). ``archive``: the runs kept from the previous results.json
    (:func:`benchmarks.report_archive.archived_runs`), used as they are."""
    archive = archive or {}
    runs = [archive[spec.output_dir] if spec.output_dir in archive else load_run(spec, reused[spec.output_dir], config)
            for spec in plan if spec.output_dir in reused]
    missing = [spec for spec in plan if spec.output_dir not in reused]
    summaries = []
    for model in config.models:
        for task in config.tasks[model.name]:
            task_runs = [r for r in runs if r["model"] == model.name and r["task"] == task.folder]
            summary = summarize_task(model, task, task_runs)
            summary["command"] = subset_command(config, model.name, task)
            summary["missing"] = [f"{s.method} seed {s.seed}" for s in missing
                                  if s.model.name == model.name and s.task.name == task.name]
            summaries.append(summary)
    tasks = list({t.name: t for ts in config.tasks.values() for t in ts}.values())
    conditions = count_by([training_condition(r) for r in runs])
    return {
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "command": command_line(config.argv),
        "argv": config.argv,
        "cwd": str(Path.cwd()),
        "quick": config.quick,
        "machine": machine_info(),
        "models": {m.name: dataclasses.asdict(m) for m in config.models},
        "tasks": {name: [t.folder for t in ts] for name, ts in config.tasks.items()},
        "seeds": {t.folder: config.seeds[t.name] for t in tasks},
        "max_seeds": dict(config.max_seeds),
        "hyper_parameters": {m.name: hyper_parameters(config, m.name) for m in config.models},
        "eval_batch_sizes": list(BATCH_SIZES),
        "timing_rounds": config.timing_rounds,
        "timing_rounds_used": count_by([r["timing_rounds"] for r in runs]),
        "eval_threads_used": count_by([r["eval_threads"] for r in runs]),
        "timing_interleaving_used": count_by([r["timing_interleaving"] for r in runs]),
        "training_conditions": [{"torch_threads": c["value"][0], "shards": c["value"][1], "cpu_model": c["value"][2],
                                 "runs": c["runs"]} for c in conditions],
        "max_train_samples": {m.name: config.hyper[m.name].max_train_samples for m in config.models},
        "max_eval_samples": {m.name: config.hyper[m.name].max_eval_samples for m in config.models},
        "training_examples": training_examples(config),
        "targets": {"layer_speedup": LAYER_SPEEDUP_TARGETS,
                    "wall_to_layer": {str(bs): v for bs, v in WALL_TO_LAYER_TARGETS.items()},
                    "quality_tolerance": QUALITY_TOLERANCE},
        "total_seconds": time.perf_counter() - started,
        "runs_seconds": sum(r["elapsed_s"] for r in runs),
        "runs_train_seconds": sum(r["train_s"] for r in runs),
        "runs_eval_seconds": sum(r["eval_s"] for r in runs),
        "num_runs": len(runs),
        "missing_runs": [{"model": s.model.name, "task": s.task.folder, "seed": s.seed, "method": s.method,
                          "output_dir": display_path(s.output_dir)} for s in missing],
        "evaluation": {"scheme": "replay", "timing_examples": dict(config.timing_examples),
                       "max_drop": config.max_drop, "checks": check_totals(runs)},
        "num_reused": sum(r["reused"] for r in runs),
        "num_archived": sum(bool(r.get("archived")) for r in runs),
        "logits_kept": sum(kept_logits_path(config.out_dir, spec).is_file() for spec in plan
                           if spec.output_dir in reused),
        "timed_on": count_by([r.get("timed_on") or "unknown" for r in runs]),
        "methods": list(config.methods),
        "distillation": ({"alpha": config.distillation[0], "temperature": config.distillation[1]}
                         if DISTILL in config.methods else None),
        "hybrid_rules": config.hybrid_rules,
        "summaries": summaries,
        "runs": runs,
    }
