"""The results report's tuned settings over seeds: each early-exit method's setting tuned on dev (optimistic) and
the honest estimate (held-out split or cross-fitting), against plain fine-tuning of the same seeds; the target
checks of the issue; and the regression trade-off (the main metric against the layer speed-up over the regression
thresholds). Input: the runs as :func:`benchmarks.report_runs.load_run` gives them (their ``tuning`` is
:func:`benchmarks.report_replay.tuning_summary`'s)."""

from __future__ import annotations

from collections.abc import Sequence

from pabee.exit_rules import DEFAULT_REGRESSION_THRESHOLD
from pabee.tasks import TaskSpec
from pabee.timing import mean_std
from pabee.tuning import REGRESSION_THRESHOLDS

from .report_plan import DISTILL, PABEE, PLAIN, QUALITY_TOLERANCE, TUNED_AIM, TUNED_TARGETS

PICKS = ("dev", "honest", "patience")  # tuned on dev (optimistic), honest estimate, fastest patience on dev


def full_depth_metric(run: dict, metric: str) -> float | None:
    """A run's main metric at full depth (its replay record of patience 0)."""
    for r in run["records"]:
        if r["exit_rule"] == "patience" and r["exit_value"] == 0:
            return r["metrics"][metric]
    return None


def wall_of(run: dict, setting: str | None) -> dict[str, float | None]:
    """{batch size: wall-clock speed-up over full depth} of a timed setting of the run (None where not timed)."""
    out = {}
    for bs, entry in (run.get("timing") or {}).items():
        found = entry["settings"].get(setting) if setting else None
        out[bs] = None if found is None else found["wall_speedup"]
    return out


def seed_pick(run: dict, which: str, metric: str, plain: float | None) -> dict:
    """One run's pick ``which`` with its drops (points) against its full depth and the plain run of its seed."""
    c = run["tuning"][which]
    value = c["metrics"][metric]
    labels = [x["label"] for x in c["choices"]] if "choices" in c else [c["label"]]
    return {"seed": run["seed"], "how": c["how"], "labels": labels, "metric": value,
            "layer_speedup": c["layer_speedup"], "drop_vs_full": c["drop_vs_full"],
            "drop_vs_plain": None if plain is None else 100.0 * (plain - value),
            "wall_speedup": wall_of(run, c.get("setting") if "choices" not in c or len(c["choices"]) == 1 else None)}


def over_seeds(picks: Sequence[dict]) -> dict:
    """Means (and sample standard deviations) over seeds of one pick."""
    def stat(name: str) -> dict | None:
        values = [p[name] for p in picks if p[name] is not None]
        if not values:
            return None
        mean, std = mean_std(values)
        return {"mean": mean, "std": std, "n": len(values)}

    walls = {}
    for bs in sorted({bs for p in picks for bs in p["wall_speedup"]}, key=int):
        values = [p["wall_speedup"].get(bs) for p in picks]
        walls[bs] = mean_std(values)[0] if values and all(v is not None for v in values) else None
    return {"seeds": [p["seed"] for p in picks], "how": sorted({p["how"] for p in picks}),
            "metric": stat("metric"), "layer_speedup": stat("layer_speedup"), "drop_vs_full": stat("drop_vs_full"),
            "drop_vs_plain": stat("drop_vs_plain"), "wall_speedup": walls, "per_seed": list(picks)}


def tuned_by_method(runs: Sequence[dict], task: TaskSpec) -> dict[str, dict]:
    """{method: {"dev"|"honest"|"patience": over_seeds(...), "full_depth": ..., "plain": ...}} for every early-exit
    method with evaluated runs; drops against plain pair each run with the plain run of its seed."""
    metric = task.main_metric
    plain = {r["seed"]: full_depth_metric(r, metric) for r in runs if r["method"] == PLAIN}
    out = {}
    for method in (PABEE, DISTILL):
        mine = sorted((r for r in runs if r["method"] == method and r.get("tuning")), key=lambda r: r["seed"])
        if not mine:
            continue
        entry = {pick: over_seeds([seed_pick(r, pick, metric, plain.get(r["seed"])) for r in mine]) for pick in PICKS}
        fulls = [full_depth_metric(r, metric) for r in mine]
        paired = [plain[r["seed"]] for r in mine if r["seed"] in plain]
        entry["full_depth"] = {"mean": mean_std(fulls)[0], "std": mean_std(fulls)[1], "n": len(fulls)}
        entry["plain_same_seeds"] = ({"mean": mean_std(paired)[0], "std": mean_std(paired)[1], "n": len(paired)}
                                     if paired else None)
        entry["max_drop"] = mine[0]["tuning"]["max_drop"]
        out[method] = entry
    return out


def check(pick: dict, target: float) -> dict:
    """A pick's mean layer speed-up against ``target`` and its mean drop against plain (same seeds) against
    QUALITY_TOLERANCE; "missing" when the pick or the plain runs of its seeds are not there (the mean speed-up is
    still given when the pick is)."""
    speedup, drop = pick["layer_speedup"], pick["drop_vs_plain"]
    values = {"layer_speedup": None if speedup is None else speedup["mean"],
              "drop_vs_plain": None if drop is None else drop["mean"], "seeds": 0 if drop is None else drop["n"]}
    if speedup is None or drop is None:  # the speed-up is shown, never judged without plain runs to pair with
        return {"status": "missing", "met": None, **values}
    met = speedup["mean"] >= target and drop["mean"] <= 100 * QUALITY_TOLERANCE + 1e-9
    return {"status": "met" if met else "not met", "met": met, **values}


def target_checks(model: str, task: TaskSpec, tuned: dict[str, dict]) -> list[dict]:
    """The issue's targets for (model, task), judged on the honest estimate (and, for comparison, on the setting
    tuned on dev): mean layer speed-up over seeds >= the target within 0.5 points of plain (same seeds). One row per
    early-exit method present; none when the task has no target."""
    target = TUNED_TARGETS.get(model, {}).get(task.folder)
    if target is None:
        return []
    rows = []
    for method in (PABEE, DISTILL):
        if method not in tuned and method != PABEE:
            continue
        entry = tuned.get(method)
        missing = {"status": "missing", "met": None, "layer_speedup": None, "drop_vs_plain": None}
        rows.append({"model": model, "task": task.folder, "method": method, "target": target,
                     "aim": TUNED_AIM.get(model, {}).get(task.folder),
                     "honest": check(entry["honest"], target) if entry else missing,
                     "optimistic": check(entry["dev"], target) if entry else missing})
    for row in rows:
        aim, honest = row["aim"], row["honest"]
        row["aim_met"] = (None if aim is None or honest["met"] is None
                          else honest["layer_speedup"] >= aim and honest["drop_vs_plain"] <= 100 * QUALITY_TOLERANCE)
    return rows


def regression_tradeoff(runs: Sequence[dict], task: TaskSpec, plain: float | None) -> dict | None:
    """A regression task's trade-off over the regression thresholds, per early-exit method: for every threshold
    the patience points (mean over seeds of the main metric and layer speed-up), the best of them and the
    fastest within 0.5 points of ``plain`` (the mean of plain fine-tuning). None for classification."""
    if not task.is_regression:
        return None
    metric = task.main_metric
    out = {}
    for method in (PABEE, DISTILL):
        mine = [r for r in runs if r["method"] == method]
        if not mine:
            continue
        curves = []
        for t in REGRESSION_THRESHOLDS:
            by_patience: dict[int, list[dict]] = {}
            for run in mine:
                for r in run["records"]:
                    if r["exit_rule"] == "patience" and r["exit_value"] > 0 and r.get("regression_threshold") == t:
                        by_patience.setdefault(int(r["exit_value"]), []).append(r)
            points = [{"patience": p, "metric": mean_std([r["metrics"][metric] for r in rs])[0],
                       "layer_speedup": mean_std([r["layer_speedup"] for r in rs])[0], "seeds": len(rs)}
                      for p, rs in sorted(by_patience.items()) if len(rs) == len(mine)]
            if not points:
                continue
            within = [p for p in points if plain is not None and p["metric"] >= plain - QUALITY_TOLERANCE - 1e-12]
            curves.append({"threshold": t, "default": t == DEFAULT_REGRESSION_THRESHOLD, "points": points,
                           "best": max(points, key=lambda p: (p["metric"], p["layer_speedup"])),
                           "fastest_within": max(within, key=lambda p: (p["layer_speedup"], p["metric"]),
                                                 default=None)})
        out[method] = {"seeds": sorted(r["seed"] for r in mine), "curves": curves}
    return out or None
