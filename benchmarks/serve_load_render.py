"""The serving benchmark's page: ``docs/serving.json`` -> Markdown, from ``templates/serving.md.j2``.

Everything shown is computed here from the raw per-round numbers of the JSON (``python benchmarks/serve_load.py
--render-only``): per row the median over rounds and their range, the target checks, the memory verdict.
"""

from __future__ import annotations

import functools
import statistics

import jinja2

from .pages import page_environment
from .speed_render import caches_text

SETTING_NAMES = {"full": "full depth", "early_exit": "early exit"}
TARGET_VS_OFFLINE = 0.8  # server at concurrency 16, full depth, >= this x the offline batch-32 throughput
TARGET_VS_LAYERS = 0.9  # early-exit server >= this x layer speed-up x full-depth server
TARGET_LEVEL = 16
FLAT_MIB, FLAT_SHARE = 5.0, 0.01  # memory is flat when it grows less than max(5 MiB, 1 % of the start)


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _weighted(pairs) -> float | None:
    """Mean of values weighted by counts: [(value, count), ...]."""
    pairs = [(v, n) for v, n in pairs if v is not None and n]
    total = sum(n for _, n in pairs)
    return sum(v * n for v, n in pairs) / total if total else None


def offline_rate(backend: dict, key: str = "inputs_per_s") -> float | None:
    """Median offline full-depth batch-32 inputs/s over the rounds: model only, as ``pabee eval`` times it
    (``key="inputs_per_s_with_tokenization"``: tokenization included)."""
    return _median(r[key] for r in backend["offline"]["rounds"])


def rows(backend: dict) -> list[dict]:
    """One row per (setting, concurrency): medians over the rounds and what the rounds add up to."""
    runs = backend["runs"]
    levels = sorted({r["concurrency"] for r in runs})
    offline = offline_rate(backend)
    out = []
    for setting in SETTING_NAMES:
        for level in levels:
            mine = [r for r in runs if r["setting"] == setting and r["concurrency"] == level]
            if not mine:
                continue
            rates = [r["inputs_per_s"] for r in mine if r["inputs_per_s"]]
            full = {r["round"]: r for r in runs if r["setting"] == "full" and r["concurrency"] == level}
            ratios = [r["inputs_per_s"] / full[r["round"]]["inputs_per_s"] for r in mine
                      if r["round"] in full and r["inputs_per_s"] and full[r["round"]]["inputs_per_s"]]
            median_rate = _median(rates)
            out.append({
                "setting": setting, "setting_name": SETTING_NAMES[setting], "concurrency": level,
                "rounds": len(mine), "rate": median_rate, "rate_min": min(rates, default=None),
                "rate_max": max(rates, default=None),
                **{q: _median(r["latency_ms"][q] for r in mine) for q in ("p50", "p95", "p99")},
                "batch": _weighted((r["server"]["mean_batch_size"], r["server"]["batches"]) for r in mine),
                "exit": _weighted((r["mean_exit_layer"], r["inputs_ok"]) for r in mine),
                "planned": sum(r["planned"] for r in mine), "ok": sum(r["ok"] for r in mine),
                "errors": sum(r["error_count"] for r in mine), "not_sent": sum(r["not_sent"] for r in mine),
                "error_kinds": sorted({k for r in mine for k in r["errors"]}),
                "vs_full": _median(ratios) if setting != "full" else None,
                "vs_offline": median_rate / offline if median_rate and offline else None,
                "busy": _median(r["server"].get("model_busy_s") / r["wall_s"] for r in mine
                                if r["server"].get("model_busy_s") is not None and r["wall_s"]),
                "server_inputs": sum(r["server"]["inputs"] for r in mine),
                "client_inputs": sum(r["inputs_ok"] for r in mine),
            })
    return out


def cpu_totals(backend: dict) -> dict:
    """CPU seconds over all timed load runs of a backend: the loaded server (also per input it answered), the idle
    one, this client; the model calls per batch and the padded tokens per real token (None: not exposed)."""
    runs = backend["runs"]

    def total(values) -> float | None:
        values = list(values)
        return None if any(v is None for v in values) else sum(values)

    server, inputs = total(r["cpu_s"]["server"] for r in runs), sum(r["server"]["inputs"] for r in runs)
    calls, tokens, padded = (total(r["server"].get(key) for r in runs) for key in ("model_calls", "tokens",
                                                                                   "padded_tokens"))
    batches = sum(r["server"]["batches"] for r in runs)
    return {"server": server, "idle": total(v for r in runs for v in r["cpu_s"]["idle_servers"]),
            "client": total(r["cpu_s"]["client"] for r in runs), "wall": sum(r["wall_s"] for r in runs),
            "server_ms_per_input": 1000 * server / inputs if server is not None and inputs else None,
            "calls_per_batch": calls / batches if calls is not None and batches else None,
            "padded_per_token": padded / tokens if padded is not None and tokens else None}


def _row(table: list[dict], setting: str, level: int) -> dict | None:
    return next((r for r in table if r["setting"] == setting and r["concurrency"] == level), None)


def targets(model: dict) -> list[dict]:
    """The targets of every backend: {"backend", "check", "measured", "met" (None: not measured)}."""
    out = []
    num_layers = model["num_layers"]
    for name, backend in model["backends"].items():
        table = rows(backend)
        offline = offline_rate(backend)
        full16 = _row(table, "full", TARGET_LEVEL)
        if full16 is None or not offline or not full16["rate"]:
            measured, met = f"concurrency {TARGET_LEVEL} not measured", None
        else:
            ratio = full16["rate"] / offline
            measured, met = (f"{full16['rate']:.1f} vs offline {offline:.1f} inputs/s = {ratio:.2f}×",
                             ratio >= TARGET_VS_OFFLINE)
        out.append({"backend": name, "check": f"full-depth server at concurrency {TARGET_LEVEL} ≥ "
                    f"{TARGET_VS_OFFLINE}× offline batch-32 throughput", "measured": measured, "met": met})
        for level in sorted({r["concurrency"] for r in table}):
            full, early = _row(table, "full", level), _row(table, "early_exit", level)
            if not (full and early and full["rate"] and early["rate"] and early["exit"]):
                continue
            layer_x = num_layers / early["exit"]
            wanted = TARGET_VS_LAYERS * layer_x * full["rate"]
            out.append({"backend": name, "check": f"concurrency {level}: early exit ≥ {TARGET_VS_LAYERS} × layer "
                        "speed-up × full depth", "measured": f"{early['rate']:.1f} vs {wanted:.1f} inputs/s "
                        f"({TARGET_VS_LAYERS} × {layer_x:.2f} × {full['rate']:.1f}); "
                        f"{early['rate'] / full['rate']:.2f}× full depth", "met": early["rate"] >= wanted})
        full1, early1 = _row(table, "full", 1), _row(table, "early_exit", 1)
        if full1 and early1 and full1["p50"] is not None and early1["p50"] is not None:
            out.append({"backend": name, "check": "concurrency 1: early exit has the lower p50",
                        "measured": f"{early1['p50']:.1f} vs {full1['p50']:.1f} ms",
                        "met": early1["p50"] < full1["p50"]})
        errors = sum(r["errors"] for r in table)
        unanswered = sum(r["planned"] - r["ok"] - r["errors"] - r["not_sent"] for r in table)
        mismatch = sum(r["server_inputs"] != r["client_inputs"] for r in table)
        out.append({"backend": name, "check": "no errors, every request accounted for",
                    "measured": f"{errors} errors, {unanswered} unaccounted, {sum(r['not_sent'] for r in table)} "
                    f"not sent (time limit); server and client input counts differ in {mismatch} row(s)",
                    "met": errors == 0 and unanswered == 0 and mismatch == 0})
    return out


def memory_summary(memory: dict) -> dict:
    """RSS at start (after warm-up), end and max; the means of the first and last quarter of the samples, the
    slope between them and whether memory stayed flat."""
    samples = memory["rss_samples"]
    if not samples:
        return {"samples": 0, "start": memory["rss_start_mib"], "end": memory["rss_end_mib"], "max": None,
                "first_quarter": None, "last_quarter": None, "growth": None, "per_minute": None,
                "per_1000_requests": None, "limit": None, "flat": None}
    q = max(1, len(samples) // 4)
    first, last = samples[:q], samples[-q:]
    t0, r0 = statistics.fmean(s[0] for s in first), statistics.fmean(s[1] for s in first)
    t1, r1 = statistics.fmean(s[0] for s in last), statistics.fmean(s[1] for s in last)
    per_s = (r1 - r0) / (t1 - t0) if t1 > t0 else 0.0
    start = memory["rss_start_mib"] or (samples[0][1] if samples else 0.0)
    growth = r1 - r0
    rate = memory["requests_per_s"] or 0.0
    return {
        "samples": len(samples), "start": start, "end": memory["rss_end_mib"],
        "max": max((s[1] for s in samples), default=None), "first_quarter": r0, "last_quarter": r1,
        "growth": growth, "per_minute": per_s * 60, "per_1000_requests": per_s / rate * 1000 if rate else None,
        "limit": max(FLAT_MIB, FLAT_SHARE * start), "flat": growth <= max(FLAT_MIB, FLAT_SHARE * start),
    }


def fmt(value, spec: str = ".1f", missing: str = "—") -> str:
    return missing if value is None else format(value, spec)


def met_text(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "**not met**")


@functools.cache
def environment() -> jinja2.Environment:
    return page_environment(
        {"fmt": fmt, "met": met_text}, rows=rows, cpu_totals=cpu_totals, targets=targets,
        memory_summary=memory_summary, offline_rate=offline_rate, caches_text=caches_text, target_level=TARGET_LEVEL,
        flat_mib=FLAT_MIB, flat_share=FLAT_SHARE,
    )


def render_markdown(reports: dict) -> str:
    """The Markdown page of every run in ``docs/serving.json``."""
    return environment().get_template("serving.md.j2").render(reports=reports)
