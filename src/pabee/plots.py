"""The trade-off plot: a metric against the layer or wall-clock speed-up, one curve per exit rule kind."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .files import atomic_path
from .tables import is_full_depth

if TYPE_CHECKING:
    from .evaluate import EvalRecord

_SHORT_NAMES = {"patience": "t={}", "entropy": "H<{}", "confidence": "p>={}", "layer": "k={}", "hybrid": "t={}"}
SPEEDUPS = ("layer", "wall")


def plot_tradeoff(
    records: Sequence[EvalRecord], path: str | os.PathLike, metric: str, speedup: str = "layer"
) -> Path:
    """PNG of ``metric`` against speed-up, one curve per (checkpoint, split, exit rule kind; hybrid: and confidence
    threshold), values annotated.

    ``speedup``: "layer" (L / mean exit layer) or "wall" (measured wall-clock speed-up over full depth; records
    without one are left out). Every curve starts at the full-depth baseline (patience 0) of its checkpoint and
    split, which is drawn once as a star.
    """
    if speedup not in SPEEDUPS:
        raise ValueError(f"unknown speedup {speedup!r}; choose one of {', '.join(SPEEDUPS)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def x_of(r: EvalRecord) -> float | None:
        return r.layer_speedup if speedup == "layer" else r.wall_speedup

    records = [r for r in records if x_of(r) is not None]
    if not records:
        raise ValueError(f"no record has a {speedup} speed-up to plot")
    fig, ax = plt.subplots(figsize=(6, 4))
    baselines = {(r.checkpoint, r.split): r for r in records if is_full_depth(r)}
    groups: dict[tuple[str, str, str], list[EvalRecord]] = {}
    for r in records:
        if not is_full_depth(r):
            groups.setdefault((r.checkpoint, r.split, _curve_name(r)), []).append(r)
    several_runs = len({(r.checkpoint, r.split) for r in records}) > 1
    for (checkpoint, split, kind), group in groups.items():
        base = baselines.get((checkpoint, split))
        group = sorted(([base] if base is not None else []) + group, key=x_of)
        xs = [x_of(r) for r in group]
        ys = [r.metrics[metric] for r in group]
        ax.plot(xs, ys, marker="o", label=f"{checkpoint} ({split}) {kind}" if several_runs else kind)
        for r, x, y in zip(group, xs, ys):
            if not is_full_depth(r):
                ax.annotate(_SHORT_NAMES[r.exit_rule].format(_short_value(r.exit_value)), (x, y), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
    for (checkpoint, split), base in baselines.items():
        ax.plot([x_of(base)], [base.metrics[metric]], marker="*", markersize=11, color="black", linestyle="none",
                label=f"full depth ({checkpoint}, {split})" if several_runs else "full depth")
    if speedup == "layer":
        ax.set_xlabel("layer speed-up (L / mean exit layer)")
    else:
        ax.set_xlabel("wall-clock speed-up (full-depth time / time)")
    ax.set_ylabel(metric)
    ax.set_title(f"{records[0].task}: {metric} vs {speedup} speed-up")
    ax.grid(alpha=0.3)
    if len(groups) + len(baselines) <= 12:
        ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=120)


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Lay out ``fig``, write it to ``path`` (PNG) atomically, creating its folder, and close it; returns the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    return path


def _curve_name(r: EvalRecord) -> str:
    """The rule kind, with the confidence threshold of a hybrid rule ("hybrid@0.9"): one curve per threshold."""
    return r.exit_rule if r.exit_threshold is None else f"{r.exit_rule}@{_short_value(r.exit_threshold)}"


def _short_value(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"
