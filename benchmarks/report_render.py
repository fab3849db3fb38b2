"""The results report's page: results.json -> results.md (from ``templates/results.md.j2``) and the plots.

Rendering reads nothing but the JSON (and the hand-written discussion of an existing results.md), so the page can be
rendered again without running anything: ``python benchmarks/report.py --render-only``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path, PurePath

import jinja2

from pabee.evaluate import INTERLEAVE_EXAMPLES
from pabee.files import atomic_write_text
from pabee.plots import save_figure
from pabee.tuning import REGRESSION_THRESHOLDS

from .report_plan import CONFIDENCES, ENTROPY_FRACTIONS, HYBRID_RULES, OTHER_KINDS, SCRIPT

TEMPLATES = Path(__file__).resolve().parent / "templates"
DISCUSSION_START, DISCUSSION_END = "<!-- discussion -->", "<!-- /discussion -->"
DISCUSSION_PLACEHOLDER = "_Hand-written discussion goes here. This block is kept when the report is regenerated._"
SAMPLING = {"group_by_length": "batches of similar length", "random": "random batches"}


# ---------------------------------------------------------------------------------------------------- cells


def format_seconds(seconds: float) -> str:
    """"12.3 s", "4 min 05 s", "1 h 02 min"."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min {secs:02d} s"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def times(value: float | None, mark: str = "", digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}×{mark}"


def ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def met(value: bool | None) -> str:
    """"met", "**not met**", or "not timed" (None: the value was not measured)."""
    if value is None:
        return "not timed"
    return "met" if value else "**not met**"


def stat_cell(stat: dict | None, scale: float = 100.0, digits: int = 1, suffix: str = "") -> str:
    """A mean over seeds {"mean", "std", "n"}: "67.1 ± 1.2" (the spread only with more than one seed)."""
    if stat is None:
        return "–"
    spread = f" ± {scale * stat['std']:.{digits}f}" if stat["n"] > 1 else ""
    return f"{scale * stat['mean']:.{digits}f}{suffix}{spread}"


def speedup_cell(stat: dict | None) -> str:
    """"1.45× ± 0.05"."""
    return stat_cell(stat, 1.0, 2, "×")


def drop_cell(stat: dict | None) -> str:
    """A mean drop in points against a reference, shown as a difference: "−0.3" (below), "+0.4" (above)."""
    return "–" if stat is None else f"{-stat['mean']:+.1f}".replace("-", "−")


def verdict_cell(check: dict) -> str:
    """"met" / "**not met**" / "missing" of a target check."""
    if check["status"] == "missing":
        return "missing"
    return met(check["met"])


def metric_cell(point: dict, name: str) -> str:
    """"67.1 ± 1.2" (× 100; the spread only with more than one seed)."""
    m = point["metrics"][name]
    return pct(m["mean"]) + (f" ± {pct(m['std'])}" if len(m["values"]) > 1 else "")


def difference_cell(value: float | None) -> str:
    """A metric difference in points: "+1.2", "–" when unknown."""
    return "–" if value is None else f"{100 * value:+.1f}"


def pick_cell(point: dict | None, metric: str) -> str:
    """A picked patience in the summary: "3: 67.1 ± 1.2 (1.45×)", or "none"."""
    if point is None:
        return "none"
    return f"{point['value']}: {metric_cell(point, metric)} ({times(point['layer_speedup'])})"


def shown_path(path: str, cwd: str) -> str:
    """``path`` relative to the directory the report was made in (the page's ``cd``) when inside it."""
    try:
        return str(PurePath(path).relative_to(cwd))
    except ValueError:
        return path


# ---------------------------------------------------------------------------------------------------- rows


def table_rows(s: dict) -> list[tuple[dict, str, str]]:
    """(point, method, matched-to) rows: plain, PABEE full depth, each patience, the matched other rules; then
    distill's full depth and patiences when the task has distill runs."""
    rows = [(s["plain"], "plain", ""), (s["full_depth"], "PABEE", "")]
    rows += [(p, "PABEE", "") for p in s["patience"]]
    rows += [(p, "PABEE", ", ".join(p["matched_to"])) for p in s["matched"]]
    distill = s.get("distill")  # results.json written before the distill method have no such key
    if distill:
        rows += [(distill["full_depth"], "distill", "")] + [(p, "distill", "") for p in distill["patience"]]
    return [row for row in rows if row[0] is not None]


def main_mean(point: dict, metric: str) -> float:
    return point["metrics"][metric]["mean"]


def with_distill(report: dict) -> list[dict]:
    """The summaries that compare distill with PABEE (none in a results.json written before that method)."""
    return [s for s in report["summaries"] if s.get("distill")]


def histogram(s: dict) -> list[tuple[str, int, float]] | None:
    """(layer, examples, percent) of PABEE's exits at the best patience, summed over seeds; None without one."""
    point = s["best_patience"]
    if point is None:
        return None
    layers = [str(i) for i in range(1, s["num_layers"] + 1)]
    total = sum(point["exit_layer_histogram"].values()) or 1
    counts = [point["exit_layer_histogram"].get(layer, 0) for layer in layers]
    return [(layer, c, 100 * c / total) for layer, c in zip(layers, counts)]


# ---------------------------------------------------------------------------------------------------- page


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True, keep_trailing_newline=True, autoescape=False,
    )
    env.filters.update(
        seconds=format_seconds, plural=plural, pct=pct, times=times, ratio=ratio, met=met, metric=metric_cell,
        pick=pick_cell, difference=difference_cell, shown=shown_path, g=lambda v: f"{v:g}",
        stat=stat_cell, speedup=speedup_cell, drop=drop_cell, verdict=verdict_cell,
        sampling=lambda v: SAMPLING.get(v, v),
    )
    env.globals.update(
        script=SCRIPT, entropy_fractions=ENTROPY_FRACTIONS, confidences=CONFIDENCES,
        interleave_examples=INTERLEAVE_EXAMPLES, table_rows=table_rows, histogram=histogram, main_mean=main_mean,
        with_distill=with_distill, hybrid_rules=[f"{t}@{c:g}" for t, c in HYBRID_RULES],
        discussion_start=DISCUSSION_START, discussion_end=DISCUSSION_END, pct=pct,
        regression_thresholds=[f"{t:g}" for t in REGRESSION_THRESHOLDS],
    )
    return env


def render_timing(report: dict) -> str:
    """The setup's sentence on how the evaluations were timed."""
    return str(environment().get_template("results_parts.md.j2").module.timing(report))


def render_markdown(report: dict, discussion: str, plots: dict[tuple[str, str], str | None]) -> str:
    """results.md: the page of ``report`` (results.json) with ``discussion`` between its markers; ``plots`` maps
    (model, task) to the plot's path relative to the page, or None."""
    page = environment().get_template("results.md.j2").render(r=report, discussion=discussion, plots=plots)
    return page.rstrip() + "\n"


def read_discussion(path: Path) -> str:
    """The text between the discussion markers of an existing results.md, else the placeholder."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return DISCUSSION_PLACEHOLDER
    start, end = text.find(DISCUSSION_START), text.find(DISCUSSION_END)
    if start < 0 or end < start:
        return DISCUSSION_PLACEHOLDER
    return text[start + len(DISCUSSION_START):end].strip("\n")


def plot_task(s: dict, path: Path, batch_size: int | None = None) -> Path | None:
    """Main metric against layer speed-up (from the replay of every setting; ``batch_size`` is unused, kept for
    callers): one curve per exit rule (each starting at full depth), plain fine-tuning as a horizontal line. None
    without PABEE points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = s["full_depth"]
    points = [p for p in s["all_points"] if p is not full]
    if full is None or not points:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for kind in ("patience", *OTHER_KINDS):
        curve = sorted([full, *(p for p in points if p["rule"] == kind)], key=lambda p: p["layer_speedup"])
        if len(curve) > 1:
            ax.plot([p["layer_speedup"] for p in curve], [100 * main_mean(p, s["main_metric"]) for p in curve],
                    marker="o", markersize=4, label=kind)
    if s["plain"] is not None:
        ax.axhline(100 * main_mean(s["plain"], s["main_metric"]), color="black", linestyle="--",
                   linewidth=1, label="plain fine-tuning")
    ax.plot([1.0], [100 * main_mean(full, s["main_metric"])], marker="*",
            markersize=12, color="black", linestyle="none", label="PABEE full depth")
    ax.set_xlabel("layer speed-up (L / mean exit layer)")
    ax.set_ylabel(f"{s['main_metric']} × 100 (mean over {len(s['seeds'])} seed(s))")
    ax.set_title(f"{s['model']} {s['task']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_regression_tradeoff(s: dict, path: Path) -> Path | None:
    """A regression task's main metric against layer speed-up, one curve per regression threshold (patience 1..L-1
    along it), PABEE's runs; plain fine-tuning as a horizontal line. None without such curves."""
    tradeoff = (s.get("regression_tradeoff") or {}).get("pabee")
    if not tradeoff or not tradeoff["curves"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for curve in tradeoff["curves"]:
        points = sorted(curve["points"], key=lambda p: p["layer_speedup"])
        ax.plot([p["layer_speedup"] for p in points], [100 * p["metric"] for p in points], marker="o", markersize=3,
                linewidth=1, label=f"threshold {curve['threshold']:g}")
    if s["plain"] is not None:
        ax.axhline(100 * main_mean(s["plain"], s["main_metric"]), color="black", linestyle="--", linewidth=1,
                   label="plain fine-tuning")
    ax.set_xlabel("layer speed-up (L / mean exit layer)")
    ax.set_ylabel(f"{s['main_metric']} × 100 (mean over {len(tradeoff['seeds'])} seed(s))")
    ax.set_title(f"{s['model']} {s['task']}: patience × regression threshold")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def write_page(report: dict, out_dir: Path) -> Path:
    """The plots under ``out_dir``/results/ and ``out_dir``/results.md (keeping its discussion block)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {}
    for s in report["summaries"]:
        name = f"{s['model']}-{s['task'].lower()}.png"
        path = plot_task(s, out_dir / "results" / name, report["eval_batch_sizes"][0])
        plots[(s["model"], s["task"])] = None if path is None else f"results/{name}"
        curve = f"{s['model']}-{s['task'].lower()}-thresholds.png"
        path = plot_regression_tradeoff(s, out_dir / "results" / curve)
        plots[(s["model"], s["task"], "thresholds")] = None if path is None else f"results/{curve}"
    md = out_dir / "results.md"
    atomic_write_text(md, render_markdown(report, read_discussion(md), plots))
    return md


def write_report(report: dict, out_dir: Path) -> Path:
    """results.json, then the page and its plots (:func:`write_page`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.json", json.dumps(report, indent=2) + "\n")
    return write_page(report, out_dir)


def render_again(out_dir: Path) -> Path:
    """--render-only: the page and plots of the results.json in ``out_dir``, rendered again."""
    path = out_dir / "results.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    return write_page(report, out_dir)
