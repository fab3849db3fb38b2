"""The plain-text results table printed after each evaluation, with footnotes for suspect wall-clock figures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .exit_rules import ExitRule
from .records import wall_flags

if TYPE_CHECKING:
    from .evaluate import EvalRecord


def format_table(records: Sequence[EvalRecord]) -> str:
    """A plain-text table: one row per record, its exit rule in the "rule" column ("full" = full depth).

    A suspect wall-clock speed-up (:func:`pabee.records.wall_flags`) is marked ``!`` and explained below the
    table."""
    if not records:
        return "(no results)"
    metric_names = list(records[0].metrics)
    header = ["checkpoint", "split", "rule", *metric_names, "avg exit", "layer x", "saved", "wall x", "ex/s", "bs"]
    rows = []
    for r in records:
        rows.append(
            [
                r.checkpoint,
                r.split,
                rule_name(r),
                *[f"{r.metrics[m]:.4f}" for m in metric_names],
                f"{r.avg_exit_layer:.2f}/{r.num_layers}",
                f"{r.layer_speedup:.2f}",
                f"{100 * r.layers_saved:.1f}%",
                "-" if r.wall_speedup is None else f"{r.wall_speedup:.2f}" + ("!" if wall_flags(r) else ""),
                f"{r.examples_per_second:.1f}",
                str(r.batch_size),
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + flag_notes(records))


def is_full_depth(r: EvalRecord) -> bool:
    return r.exit_rule == "patience" and r.exit_value == 0


def rule_name(r: EvalRecord) -> str:
    """The table's "rule" cell: "full" for the full-depth baseline, else e.g. "patience 3", "entropy 0.3"."""
    return "full" if is_full_depth(r) else ExitRule(r.exit_rule, r.exit_value, r.exit_threshold).label


def flag_notes(records: Sequence[EvalRecord]) -> list[str]:
    """Footnote lines for a table whose "wall x" cells carry a ``!``: one per flagged record, then advice."""
    notes = []
    single_round = False
    for r in records:
        flags = wall_flags(r)
        if flags:
            notes.append(f"! {r.checkpoint} {r.split} {rule_name(r)} bs {r.batch_size}: wall x {'; '.join(flags)}")
            single_round = single_round or len(r.extra.get("eval_seconds_rounds") or []) < 2
    if notes:
        advice = "  wall-clock figures marked ! are unreliable (a busy machine?): re-measure on an idle machine"
        if single_round:
            advice += "; one timing round shows no spread: --timing_rounds 3 measures it"
        notes.append(advice)
    return notes


def format_group(group) -> str:
    """One evaluation's heading and table: ``group`` is a :class:`pabee.runner.ResultGroup` (task, split,
    checkpoint, batch size and its records)."""
    heading = f"{group.task} {group.split} | checkpoint {group.checkpoint} | batch size {group.batch_size}"
    return f"\n{heading}\n{format_table(group.records)}"
