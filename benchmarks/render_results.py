"""Render eval_results.json files of one or more runs as Markdown tables (one per run and split).

    python benchmarks/render_results.py runs/minilm-rte runs/minilm-mrpc > docs/glue-minilm.md
    python benchmarks/render_results.py --rules patience runs/minilm-rte     # only some exit rules (comma-separated)

Only the final checkpoint is shown; batch sizes 1 and the largest one sit side by side.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RULE_ORDER = {"patience": 0, "entropy": 1, "confidence": 2, "layer": 3}


def _rule(record: dict) -> tuple[str, float]:
    """(kind, value) of a record; records written before exit rules existed are patience records."""
    return record.get("exit_rule", "patience"), record.get("exit_value", record.get("patience"))


def _label(kind: str, value: float) -> str:
    if kind == "patience":
        return "full depth" if value == 0 else f"patience {int(value)}"
    return f"{kind} {int(value) if kind == 'layer' else value:g}"


def render(run_dir: Path, kinds: set[str] | None = None) -> str:
    """Markdown tables of the run's final-checkpoint records (only the exit-rule kinds in ``kinds`` when given)."""
    records = [r for r in json.loads((run_dir / "eval_results.json").read_text()) if r["checkpoint"] == "final"]
    if kinds is not None:
        records = [r for r in records if _rule(r)[0] in kinds]
    out = []
    for split in sorted({r["split"] for r in records}):
        rows = [r for r in records if r["split"] == split]
        sizes = sorted({r["batch_size"] for r in rows})
        small, large = sizes[0], sizes[-1]
        metric_names = list(rows[0]["metrics"])
        task = rows[0]["task"]
        n = rows[0]["num_examples"]
        out.append(f"### {task} ({split}, {n} examples) — `{run_dir}`\n")
        head = ["exit rule", *metric_names, "mean exit layer", "layer speed-up", "layers saved"]
        for b in dict.fromkeys([small, large]):
            head += [f"eval s (bs {b})", f"ex/s (bs {b})", f"wall speed-up (bs {b})"]
        head.append("exit-layer histogram")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        by = {(*_rule(r), r["batch_size"]): r for r in rows}
        for kind, value in sorted({_rule(r) for r in rows}, key=lambda kv: (RULE_ORDER.get(kv[0], 9), kv[1])):
            ref = by.get((kind, value, large)) or by[(kind, value, small)]
            cells = [_label(kind, value)]
            cells += [f"{ref['metrics'][m]:.4f}" for m in metric_names]
            cells += [f"{ref['avg_exit_layer']:.2f} / {ref['num_layers']}", f"{ref['layer_speedup']:.2f}×",
                      f"{100 * ref['layers_saved']:.1f} %"]
            for b in dict.fromkeys([small, large]):
                r = by.get((kind, value, b))
                cells += ["–"] * 3 if r is None else [
                    f"{r['eval_seconds']:.2f}", f"{r['examples_per_second']:.1f}", f"{r['wall_speedup']:.2f}×"]
            cells.append(" ".join(f"{k}:{v}" for k, v in ref["exit_layer_histogram"].items()))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    kinds = None
    if argv[:1] == ["--rules"] and len(argv) >= 2:
        kinds = set(argv[1].split(","))
        unknown = kinds - set(RULE_ORDER)
        if unknown:
            print(f"render_results.py: unknown exit rule {sorted(unknown)[0]!r}; choose from {', '.join(RULE_ORDER)}",
                  file=sys.stderr)
            return 2
        argv = argv[2:]
    if not argv:
        print(__doc__)
        return 2
    print("\n".join(render(Path(d), kinds) for d in argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
