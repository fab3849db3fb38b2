"""The speed benchmark's page: the report's JSON -> Markdown, from ``templates/speed.md.j2``.

The page is a function of the JSON alone, so it can be rendered again without timing anything:
``python benchmarks/speed.py --render-only --output docs/speed.json --markdown docs/speed.md``.
"""

from __future__ import annotations

import functools

import jinja2

from .pages import page_environment
from .speed_measure import block_size


def blocks_text(report: dict) -> str:
    per_size = [
        f"{block_size(report['settings']['block_examples'], bs)} at batch size {bs}"
        for bs in report["settings"]["batch_sizes"]
    ]
    return ", ".join(per_size)


def cache_fit_text(report: dict) -> str:
    """How the encoder's weights compare with the largest CPU cache, for the interleaving check."""
    caches = report["machine"]["cpu_caches"]
    m = report["model"]
    if not caches:
        return "(This system does not report its CPU caches.)"
    last = max(caches, key=lambda c: c["level"])
    total = m["num_layers"] * m["layer_weights_mib"]
    size = last["size_kib"] / 1024
    if 2 * m["layer_weights_mib"] > size:
        return (
            f"One encoder layer holds {m['layer_weights_mib']:.1f} MiB of weights against a {size:.0f} MiB "
            f"L{last['level']} cache: not even the first two layers stay cached between examples, whatever runs "
            "in between, so interleaving should matter little here."
        )
    if total > size:
        return (
            f"The encoder's layers hold {total:.1f} MiB of weights, more than the {size:.0f} MiB L{last['level']} "
            "cache: full depth cannot keep them cached from one example to the next, whereas a configuration that "
            "stops after a few layers can keep those layers' weights cached when it runs examples back to back, "
            "and cannot when every call follows one of another configuration."
        )
    return (
        f"The encoder's layers hold {total:.1f} MiB of weights, which fit in the {size:.0f} MiB "
        f"L{last['level']} cache: interleaving should matter little here."
    )


def caches_text(caches: list[dict]) -> str:
    if not caches:
        return "not reported by this system"
    return ", ".join(
        f"L{c['level']} {c['type'].lower()} {c['size_kib'] // 1024} MiB"
        if c["size_kib"] >= 1024
        else f"L{c['level']} {c['type'].lower()} {c['size_kib']} KiB"
        for c in caches
    )


def fmt_s(t: dict) -> str:
    return f"{t['mean_s']:.3f} ± {t['std_s']:.3f}"


def yes(met: bool) -> str:
    return "yes" if met else "**no**"


def reading(report: dict) -> list[str]:
    """Plain-language verdicts, computed from the report."""
    out = []
    m = report["model"]
    if m["fine_tuned"]:
        out.append(
            "The model is a fine-tuned pabee folder: its exit pattern reflects trained internal classifiers."
        )
    else:
        out.append(
            "The model is the pretrained backbone with **freshly initialised (untrained) classifiers** (seed "
            f"{report['settings']['seed']}): the exit pattern and the agreement with full depth are arbitrary and say "
            "nothing about accuracy. The timing relations (overhead, wall-clock vs layer speed-up) are still valid for "
            "the exit pattern that occurred."
        )
    for o in report["overhead"]:
        pp = o["overhead_pct_paired"]
        verdict = "met" if o["met"] else "NOT met"
        out.append(
            f"Overhead at batch size {o['batch_size']}: {o['overhead_pct']:+.1f} % (paired {pp['mean']:+.1f} ± "
            f"{pp['std']:.1f} %) vs target ≤ {o['target_pct']:.0f} %: {verdict}."
        )
    for bs in sorted({r["batch_size"] for r in report["results"]}):
        rows = [r for r in report["results"] if r["batch_size"] == bs and "met" in r]
        if not rows:
            continue
        missed = [r for r in rows if not r["met"]]
        ratios = ", ".join(f"p{r['patience']}: {r['ratio_wall_to_layer']:.3f}" for r in rows)
        target = rows[0]["ratio_target"]
        if missed:
            verdict = f"NOT met for patience {', '.join(str(r['patience']) for r in missed)}"
        else:
            verdict = "met for every patience"
        out.append(
            f"Wall-clock / layer speed-up at batch size {bs} ({ratios}) vs target ≥ {target}: {verdict}."
        )
        if missed:
            out.append(
                "Why a ratio falls below 1: the layer speed-up counts encoder layers only, but the wall clock also "
                "includes work that does not shrink with depth (embeddings, attention-mask preparation, input checks) "
                "and work PABEE adds per layer (the pooler + classifier after every layer up to the exit, and the "
                "exit test), whereas full depth runs one classifier. The smaller the batch, the larger that share."
            )
        trivial = [r for r in rows if r["layer_speedup"] < 1.05]
        if trivial:
            out.append(
                f"At batch size {bs}, patience {', '.join(str(r['patience']) for r in trivial)} exited almost nowhere "
                "early (layer speed-up < 1.05×): their ratio mostly measures the per-layer bookkeeping cost, not savings."
            )
    trunc_rows = [r for r in report["results"] if "truncation_wallclock_speedup" in r]
    if trunc_rows:
        ceilings = ", ".join(f"p{r['patience']}: {r['truncation_ratio_wall_to_layer']:.3f}" for r in trunc_rows)
        costs = ", ".join(f"p{r['patience']}: {r['exit_decision_cost_pct']:+.1f} %" for r in trunc_rows)
        out.append(
            f"Batch size 1, ceiling: truncating every example at its PABEE exit layer, with no exit test at all, "
            f"gives wall / layer ratios of {ceilings}. PABEE's exit decisions cost {costs} over that."
        )
    check = report.get("interleaving_check")
    if check:
        ratios = ", ".join(f"p{r['patience']}: {r['ratio_wall_to_layer']:.3f}" for r in check["results"])
        minimum = report["targets"]["ratio_min_batch_size_1"]
        missed = [r["patience"] for r in check["results"] if r["ratio_wall_to_layer"] < minimum]
        verdict = f"below {minimum} for patience {', '.join(map(str, missed))}" if missed else (
            f"at or above {minimum} for every patience"
        )
        out.append(
            f"Interleaving check: timed example by example against the other configurations, batch size 1 gives "
            f"wall / layer {ratios} ({verdict}). The tables above time each configuration on "
            f"{report['settings']['block_examples']} consecutive examples at a time, as it runs in use."
        )
    uniform = [
        r
        for r in report["results"]
        if r["patience"] > 0 and sum(1 for c in r["exit_layer_histogram"] if c) == 1
    ]
    if uniform and len(uniform) == sum(1 for r in report["results"] if r["patience"] > 0):
        out.append(
            "Every example exited at the same layer for each patience (see `exit_layer_histogram` in the JSON), so "
            "the batched path never had to drop rows mid-batch: the batch-size>1 rows measure per-layer "
            "classification cost, not the cost of shrinking the batch. A fine-tuned pabee folder gives a mixed exit "
            "pattern that exercises it."
        )
    for o in report["overhead"]:
        if o["max_abs_logit_diff_vs_backbone"] > 1e-4:
            out.append(
                f"Warning: at batch size {o['batch_size']} the wrapper's patience-0 logits differ from the plain "
                f"backbone's by up to {o['max_abs_logit_diff_vs_backbone']:.1e}."
            )
    spread = max(
        r["wallclock_speedup_paired"]["std"] / r["wallclock_speedup_paired"]["mean"]
        for r in report["results"]
    )
    spread_ovh = max(o["overhead_pct_paired"]["std"] for o in report["overhead"])
    out.append(
        f"Noise: the per-round speed-ups vary by up to {100 * spread:.1f} % (relative std) and the per-round "
        f"overhead by up to {spread_ovh:.1f} points; a verdict closer to its target than that is not robust."
    )
    contended = [
        t
        for t in report.get("timing_rounds", [])
        if (t["kept_contention_max"] or 0) > report["settings"]["max_contention"]
    ]
    if contended:
        out.append(
            "Caution: some kept rounds ran while other processes competed for the CPU (batch size "
            f"{', '.join(str(t['batch_size']) for t in contended)}); those numbers are pessimistic and noisier."
        )
    return out


def contention_text(report: dict) -> str:
    s = report["settings"]
    if not report.get("contention_measured"):
        return "CPU pressure (Linux PSI) not available here: rounds were not checked for competing processes."
    parts = []
    for t in report["timing_rounds"]:
        worst = t["kept_contention_max"]
        parts.append(
            f"batch size {t['batch_size']}: {len(t['rounds'])} round(s) run, {t['discarded']} discarded, worst kept "
            f"{100 * worst:.1f} %"
            + (f", {t['waited_for_quiet_s']:.0f} s waited" if t["waited_for_quiet_s"] else "")
        )
    return (
        "the share of each round's time during which some task waited for a CPU (`/proc/pressure/cpu`) is measured; "
        f"rounds above {100 * s['max_contention']:.0f} % are discarded and re-run (at most {s['max_retries']} re-runs "
        f"per batch size), and before each round the script waits up to {s['quiet_timeout_s']:.0f} s for a quiet "
        f"second. {'; '.join(parts)}."
    )


def batch1_by_patience(report: dict) -> dict[int, dict]:
    """The batch-size-1 rows of the results table, by patience."""
    return {r["patience"]: r for r in report["results"] if r["batch_size"] == 1}


@functools.cache
def environment() -> jinja2.Environment:
    return page_environment(
        {"fmt_s": fmt_s, "yes": yes, "f3": lambda v: f"{v:.3f}"},
        blocks_text=blocks_text, cache_fit_text=cache_fit_text, caches_text=caches_text, contention_text=contention_text,
        reading=reading, block_size=block_size, batch1_by_patience=batch1_by_patience,
    )


def render_markdown(report: dict) -> str:
    """The Markdown page of a speed report (the JSON that ``speed.py`` writes)."""
    return environment().get_template("speed.md.j2").render(r=report)
