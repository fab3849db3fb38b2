"""The results report's comparison of the distill method (PABEE's weighting + self-distillation from the last
classifier) with PABEE, on one model and task: full depth, every fixed layer (how good the shallow classifiers are
on their own), the best patience and the fastest patience within 0.5 points of plain fine-tuning, each as the mean
over the same seeds for both methods."""

from __future__ import annotations

from pabee.tasks import TaskSpec

from .report_plan import DISTILL, PABEE


def method_points(points: dict[tuple, dict], method: str) -> dict[tuple, dict]:
    """{(rule kind, value, threshold): point} of one method, from the (method, kind, value, threshold) table."""
    return {key[1:]: point for key, point in points.items() if key[0] == method}


def patience_points(mine: dict[tuple, dict]) -> list[dict]:
    """A method's patience points 1.. in order (full depth excluded)."""
    return sorted((p for (kind, value, _), p in mine.items() if kind == "patience" and value > 0),
                  key=lambda p: p["value"])


def compare_distill(points: dict[tuple, dict], task: TaskSpec, num_layers: int, plain: dict | None) -> dict | None:
    """Distill against PABEE for one task (None when the task has no distill runs).

    ``points``: {(method, rule kind, value, threshold): point} (means over seeds, from ``point_stats``). Rows:
    full depth, layer 1..L-1, best patience, fastest patience within 0.5 points of ``plain`` (None without it);
    each with both methods' points and ``difference`` = distill - PABEE in the main metric (None when either is
    missing). ``same_seeds``: both methods' full-depth points average the same seeds (the plan always trains both
    at every seed; the comparison is only meaningful then).
    """
    # imported here: report_aggregate imports this module
    from .report_aggregate import main_mean, pick_best, pick_fastest_within

    distill, pabee = method_points(points, DISTILL), method_points(points, PABEE)
    if not distill:
        return None
    metric = task.main_metric

    def picks(mine: dict[tuple, dict]) -> dict[str, dict | None]:
        patience = patience_points(mine)
        out = {"full depth": mine.get(("patience", 0, None))}
        out.update({f"layer {k}": mine.get(("layer", k, None)) for k in range(1, num_layers)})
        out["best patience"] = pick_best(patience, metric)
        out["fastest patience within 0.5 points"] = (
            pick_fastest_within(patience, metric, main_mean(plain, metric)) if plain is not None else None)
        return out

    ours, theirs = picks(distill), picks(pabee)
    rows = []
    for name, point in ours.items():
        other = theirs[name]
        difference = None if point is None or other is None else main_mean(point, metric) - main_mean(other, metric)
        rows.append({"name": name, "pick": name.endswith(("patience", "points")), "pabee": other,
                     "distill": point, "difference": difference})
    full_seeds = [p["seeds"] for p in (ours["full depth"], theirs["full depth"]) if p is not None]
    return {
        "seeds": full_seeds[0] if full_seeds else [],
        "same_seeds": len(full_seeds) == 2 and full_seeds[0] == full_seeds[1],
        "full_depth": ours["full depth"],
        "patience": patience_points(distill),
        "best_patience": ours["best patience"],
        "fastest_within": ours["fastest patience within 0.5 points"],
        "pabee": {"full_depth": theirs["full depth"], "best_patience": theirs["best patience"],
                  "fastest_within": theirs["fastest patience within 0.5 points"]},  # PABEE over the same runs
        "rows": rows,
    }
