"""The runtime benchmark's page: ``docs/runtime.json`` -> Markdown, from ``templates/runtime.md.j2``.

The page is a function of the JSON alone: ``python benchmarks/runtime.py --render-only``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2

from .speed_render import caches_text

TEMPLATES = Path(__file__).resolve().parent / "templates"


def ratio(r: dict) -> str:
    """"1.23× (1.22 ± 0.02)": ratio of mean times, then the mean ± std of the per-round ratios."""
    return f"{r['ratio_of_means']:.2f}× ({r['paired_mean']:.2f} ± {r['paired_std']:.2f})"


def metric(row: dict, name: str) -> str:
    return f"{100 * row['metrics'][name]:.1f}" if name in ("acc", "f1", "mcc") else f"{row['metrics'][name]:.4f}"


def rows_at(run: dict, batch_size: int) -> list[dict]:
    return [r for r in run["results"] if r["batch_size"] == batch_size]


def reading(run: dict) -> list[str]:
    """Plain-language findings computed from one run."""
    out = []
    name = run["data"]["main_metric"]
    for bs in run["settings"]["batch_sizes"]:
        rows = {r["name"]: r for r in rows_at(run, bs)}
        for precision in ("fp32", "int8"):
            full = rows[f"onnx-full {precision}"]
            p0 = rows[f"pabee-onnx {precision} p0"]
            best = max((r for r in rows.values() if r["backend"] == "pabee-onnx" and r["precision"] == precision),
                       key=lambda r: r["examples_per_second"])
            out.append(
                f"Batch size {bs}, {precision}: the plain ONNX graph runs {full['examples_per_second']:.1f} "
                f"examples/s ({full['vs_torch_full_depth']['ratio_of_means']:.2f}× torch full depth); pabee on ONNX "
                f"Runtime at full depth {p0['examples_per_second']:.1f} "
                f"({p0['vs_onnx_full_depth_same_precision']['ratio_of_means']:.2f}× the plain graph, the same "
                f"computation run as one graph per layer); its fastest setting, patience {best['patience']}, "
                f"{best['examples_per_second']:.1f} examples/s "
                f"({best['vs_onnx_full_depth_same_precision']['ratio_of_means']:.2f}× the plain graph, mean exit "
                f"layer {best['mean_exit_layer']:.2f}, {name} {metric(best, name)} vs {metric(full, name)})."
            )
        mismatched = [r["name"] for r in rows.values() if r["exit_layers_equal_torch"] is False]
        if mismatched:
            out.append(f"Batch size {bs}: exit layers differ from torch for {', '.join(mismatched)} (fp32 should "
                       "match: the same rule code runs on logits equal to ~1e-6).")
    worst = max((r["max_abs_logit_diff_vs_torch_full_depth"] or 0) for r in run["results"]
                if r["backend"] == "onnx-full" and r["precision"] == "fp32")
    out.append(f"The plain fp32 graph's logits differ from torch full depth by at most {worst:.1e}.")
    if run["settings"]["quick"]:
        out.append("This is a --quick smoke run: too few examples and rounds for its timings to mean anything.")
    return out


def int8_text(run: dict) -> str:
    """The int8 quantization settings of a run's exports (runs recorded before they were: the old defaults)."""
    q = run["exports"].get("int8_settings")
    if q is None:
        return "one weight scale per tensor, 8-bit weights (the settings before per-channel quantization)"
    scales = "one weight scale per output channel" if q["per_channel"] else "one weight scale per tensor"
    bits = "7-bit weights (reduce_range)" if q["reduce_range"] else "8-bit weights"
    return (f"{q['weight_type']} {', '.join(q['op_types'])} weights, {scales}, {bits}, activations quantized per "
            "tensor at run time")


def contention_text(run: dict) -> str:
    if not run.get("contention_measured"):
        return "CPU pressure (Linux PSI) not available: rounds were not checked for competing processes."
    s = run["settings"]
    parts = [
        f"batch size {t['batch_size']}: {len(t['rounds'])} round(s), {t['discarded']} discarded, worst kept "
        f"{100 * (t['kept_contention_max'] or 0):.1f} %"
        for t in run["timing_rounds"]
    ]
    return (f"rounds during which other tasks waited for a CPU more than {100 * s['max_contention']:.0f} % of the "
            f"time are re-run (at most {s['max_retries']} times); {'; '.join(parts)}.")


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True, keep_trailing_newline=True, autoescape=False,
    )
    env.filters.update(ratio=ratio)
    env.globals.update(rows_at=rows_at, reading=reading, metric=metric, contention_text=contention_text,
                       caches_text=caches_text, int8_text=int8_text)
    return env


def render_markdown(reports: dict) -> str:
    """The Markdown page of every run in ``docs/runtime.json``."""
    return environment().get_template("runtime.md.j2").render(reports=reports)
