"""The defence benchmark's page: ``docs/serving-defence.json`` -> Markdown, from
``templates/serving-defence.md.j2``.

Everything the page states is computed here from the raw per-run numbers of the JSON (``python
benchmarks/defence_load.py --render-only``): per configuration the median over rounds, the bound on the answered
requests' latency (S + the batching wait + one full-depth batch at the speed the defended server measured), the failures, the goodput
cost of the defence and the slowdown's cost (attacked vs clean).
"""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2

from .serve_load_render import _median, _weighted, fmt
from .speed_render import caches_text

TEMPLATES = Path(__file__).resolve().parent / "templates"
DEFENCE_NAMES = {"off": "no defence", "on": "--max-queue-seconds"}



def one_batch_ms(run: dict, speed: float | None) -> float | None:
    """A full-depth batch of the servers' largest size at ``speed`` (seconds per layer-row), in ms."""
    if speed is None:
        return None
    return run["settings"]["max_batch_size"] * run["model"]["num_layers"] * speed * 1000


def bound_ms(run: dict, batch_ms: float | None) -> float | None:
    """What an admitted input should wait at most, in ms: S seconds of worst-case queued work, the batching wait
    (``--max-wait-ms``) and one full-depth batch (``batch_ms``)."""
    if batch_ms is None:
        return None
    return run["settings"]["max_queue_seconds"] * 1000 + run["settings"]["max_wait_ms"] + batch_ms


def row(run: dict, defence: str, kind: str, level: int) -> dict | None:
    """One configuration at one level: medians over the rounds (goodput range, latency percentiles), the rounds'
    sums (requests, answers, refusals, failures), the latency bound of the defended server."""
    mine = [r for r in run["runs"] if (r["defence"], r["inputs"], r["concurrency"]) == (defence, kind, level)]
    if not mine:
        return None
    rates = [r["inputs_per_s"] for r in mine if r["inputs_per_s"] is not None]
    speed = _median(r["server"]["seconds_per_layer_row"] for r in mine)
    batch = one_batch_ms(run, speed)
    limit_s = run["settings"]["max_queue_seconds"]
    refused_lat = [r["error_latency_ms"].get("http 429") for r in mine]
    failure_kinds = sorted({k for r in mine for k in r["errors"] if k != "http 429"})
    out = {
        "defence": defence, "defence_name": DEFENCE_NAMES[defence] + (f" {limit_s:g}" if defence == "on" else ""),
        "inputs": kind, "concurrency": level, "rounds": len(mine),
        "goodput": _median(rates), "goodput_min": min(rates, default=None), "goodput_max": max(rates, default=None),
        **{q: _median(r["latency_ms"][q] for r in mine) for q in ("p50", "p95", "p99")},
        "max": max((r["latency_ms"]["max"] for r in mine if r["latency_ms"]["max"] is not None), default=None),
        "planned": sum(r["planned"] for r in mine), "ok": sum(r["ok"] for r in mine),
        "refused": sum(r["refused"] for r in mine), "failures": sum(r["failures"] for r in mine),
        "failure_kinds": failure_kinds, "not_sent": sum(r["not_sent"] for r in mine),
        "refused_p50": _median(x["p50"] for x in refused_lat if x),
        "refused_max": max((x["max"] for x in refused_lat if x), default=None),
        "exit": _weighted((r["mean_exit_layer"], r["inputs_ok"]) for r in mine),
        "batch": _weighted((r["server"]["mean_batch_size"], r["server"]["batches"]) for r in mine),
        "busy": _median(r["server"]["model_busy_s"] / r["wall_s"] for r in mine
                        if r["server"].get("model_busy_s") is not None and r["wall_s"]),
        "budget_rejections": sum(r["server"]["budget_rejections"] for r in mine),
        "server_429": sum(r["server"]["statuses"].get("429", 0) for r in mine),
        "speed": speed, "one_batch_ms": batch,
        # the load generator's own share: requests' wait in it before being sent, and its CPU (None: not recorded)
        "client_wait_p99": _median((r.get("client_wait_ms") or {}).get("p99") for r in mine),
        "client_cpu": _median(r.get("client_cpu_share") for r in mine),
        "refusals_per_s": _median(r["refused"] / r["wall_s"] for r in mine if r["wall_s"]),
        "bound_ms": bound_ms(run, batch) if defence == "on" else None,
    }
    out["accounted"] = out["ok"] + out["refused"] + out["failures"] + out["not_sent"] == out["planned"]
    return out


def levels(run: dict) -> list[int]:
    return sorted({r["concurrency"] for r in run["runs"]})


def rows(run: dict, level: int) -> list[dict]:
    """The level's configurations in the page's order: clean, then attacked; no defence, then the defence."""
    out = [row(run, d, k, level) for k in ("clean", "attacked") for d in ("off", "on")]
    return [r for r in out if r is not None]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def findings(run: dict, level: int) -> dict:
    """What the level's numbers say: per input kind the defence's effect (p99 with vs without, against the bound,
    goodput cost), per defence setting the slowdown's cost (exit layer and goodput, attacked vs clean), the
    failures and whether every request is accounted for."""
    table = {(r["defence"], r["inputs"]): r for r in rows(run, level)}
    defence = []
    for kind in ("clean", "attacked"):
        off, on = table.get(("off", kind)), table.get(("on", kind))
        if not (off and on):
            continue
        defence.append({
            "inputs": kind, "p99_off": off["p99"], "p99_on": on["p99"], "max_on": on["max"],
            "bound_ms": on["bound_ms"], "one_batch_ms": on["one_batch_ms"],
            "within": None if on["bound_ms"] is None or on["p99"] is None else on["p99"] <= on["bound_ms"],
            "p99_ratio": _ratio(on["p99"], off["p99"]), "goodput_off": off["goodput"], "goodput_on": on["goodput"],
            "goodput_ratio": _ratio(on["goodput"], off["goodput"]), "refused": on["refused"],
            "answered_share": _ratio(on["ok"], on["planned"]),
            "refusals_per_s": on["refusals_per_s"], "speed_ratio": _ratio(on["speed"], off["speed"]),
            "client_cpu": on["client_cpu"],
        })
    slowdown = []
    for d in ("off", "on"):
        clean, attacked = table.get((d, "clean")), table.get((d, "attacked"))
        if not (clean and attacked):
            continue
        slowdown.append({
            "defence": d, "defence_name": clean["defence_name"], "exit_clean": clean["exit"],
            "exit_attacked": attacked["exit"], "goodput_clean": clean["goodput"],
            "goodput_attacked": attacked["goodput"], "goodput_ratio": _ratio(attacked["goodput"], clean["goodput"]),
            "p99_ratio": _ratio(attacked["p99"], clean["p99"]),
        })
    rs = list(table.values())
    return {
        "defence": defence, "slowdown": slowdown,
        "failures": sum(r["failures"] for r in rs), "failure_kinds": sorted({k for r in rs for k in r["failure_kinds"]}),
        "refused": sum(r["refused"] for r in rs), "refused_max": max((r["refused_max"] for r in rs
                                                                      if r["refused_max"] is not None), default=None),
        "refused_off": sum(r["refused"] for r in rs if r["defence"] == "off"),
        "accounted": all(r["accounted"] for r in rs),
        "server_agrees": all(r["refused"] == r["server_429"] for r in rs),
    }


def pct_change(ratio: float | None) -> str:
    """A ratio as a signed percentage change: 0.8 -> "−20 %"."""
    if ratio is None:
        return "—"
    change = round((ratio - 1) * 100)
    return "±0 %" if change == 0 else f"{'+' if change > 0 else '−'}{abs(change)} %"


def yes_no(value: bool | None) -> str:
    return "not measured" if value is None else ("yes" if value else "**no**")


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True, keep_trailing_newline=True, autoescape=False,
    )
    env.filters.update(fmt=fmt, pct_change=pct_change, yes_no=yes_no)
    env.globals.update(levels=levels, rows=rows, findings=findings, caches_text=caches_text)
    return env


def render_markdown(reports: dict) -> str:
    """The Markdown page of every run in ``docs/serving-defence.json``."""
    return environment().get_template("serving-defence.md.j2").render(reports=reports)
