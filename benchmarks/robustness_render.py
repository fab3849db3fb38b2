"""The robustness benchmark's page: ``docs/robustness.json`` -> Markdown, from ``templates/robustness.md.j2``.

Every figure and every verdict on the page is computed here from the JSON (``--render-only`` renders it
again). A difference between two settings counts only when it exceeds twice its paired standard error over the
examples.
"""

from __future__ import annotations

import functools
import math
import statistics

import jinja2

from .pages import page_environment
from .speed_render import caches_text

PAPER = ("the PABEE paper (Zhou et al., 2020) reports that patience-based early exit makes the model more "
         "robust than the same model at full depth (TextFooler against ALBERT-base: higher accuracy under "
         "attack, more queries needed)")
WAFFLE = ("WAFFLE (Coalson et al., 2023) reports that slowdown attacks take back much of the computation "
          "early exit saves, and that the more complex an exit mechanism is, the more vulnerable it is "
          "(PABEE more than the entropy rule of DeeBERT)")


def pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}"


def num(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def robust_flags(setting: dict) -> list[int]:
    """Per example: 1 when the setting classified it correctly and the attack failed, else 0."""
    return [int(r["status"] == "failed") for r in setting["misclassification"]["examples"]]


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of a - b and its standard error (paired over examples)."""
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var / n)


def verdict(mean: float, se: float, better: str, worse: str) -> str:
    if mean == 0 and se == 0:
        return "no difference"
    if mean > 2 * se:
        return better
    if mean < -2 * se:
        return worse
    return "no clear difference (within 2 standard errors)"


def by_rule(run: dict) -> dict[str, dict]:
    return {s["label"]: s for s in run["results"]}


def patience_verdicts(run: dict) -> list[tuple[dict, float, float, str]]:
    """Each patience > 0 against full depth: (setting, paired difference in examples surviving the attack, its
    standard error, verdict "more robust" / "less robust" / unclear)."""
    base = robust_flags(by_rule(run)["patience 0"])
    out = []
    for s in run["results"]:
        if s["kind"] != "patience" or s["value"] == 0:
            continue
        d, se = paired(robust_flags(s), base)
        out.append((s, d, se, verdict(d, se, "more robust", "less robust")))
    return out


def paper_claim(counts: dict[str, int]) -> str:
    """What the patience verdicts say of the paper's robustness claim."""
    if counts["more robust"] and not counts["less robust"]:
        return "agree with the paper's claim"
    if counts["less robust"] and not counts["more robust"]:
        return "disagree with the paper's claim"
    if counts["less robust"] and counts["more robust"]:
        return "are mixed on the paper's claim"
    return "neither confirm nor refute the paper's claim: every difference is within its noise"


def summary_reading(reports: dict) -> list[str]:
    """One line per attacked model (the verdict on the paper's claim, with the accuracy under attack at full depth
    and over the patiences, and the share of saved layers the slowdown took back per rule), then the overall
    reading across them."""
    out, verdicts = [], []
    for run in reports["runs"]:
        full = by_rule(run)["patience 0"]["misclassification"]
        found = patience_verdicts(run)
        counts = {"more robust": 0, "less robust": 0, "unclear": 0}
        for _, _, _, v in found:
            counts[v if v in counts else "unclear"] += 1
        claim = paper_claim(counts)
        verdicts.append((f"{run['data']['task']} ({run['model']['model_type']}, {run['model']['num_layers']} layers)", claim))
        under = [100 * s["misclassification"]["accuracy_under_attack"] for s, *_ in found]
        lost: dict[str, list[float]] = {}
        for s in run["results"]:
            value = (s.get("slowdown") or {}).get("saving_lost")
            if value is not None:
                lost.setdefault(s["kind"], []).append(100 * value)
        slow = "; ".join(f"{kind} {min(v):.0f}-{max(v):.0f} %" for kind, v in lost.items())
        out.append(f"**{run['data']['task']}** ({run['model']['model_type']}, {run['model']['num_layers']} layers, "
                   f"{full['num_examples']} examples): accuracy under attack {pct(full['accuracy_under_attack'])} % "
                   f"at full depth, {min(under):.1f}-{max(under):.1f} % over patience "
                   f"{', '.join(str(s['value']) for s, *_ in found)}; {counts['more robust']} of {len(found)} "
                   f"patience settings measurably more robust, {counts['less robust']} less: these measurements "
                   f"{claim}." + (f" Slowdown: share of the saved layers taken back: {slow}." if slow else ""))
    lost_all = [(s.get("slowdown") or {}).get("saving_lost") for run in reports["runs"] for s in run["results"]]
    lost_all = [v for v in lost_all if v is not None]
    agree = [task for task, claim in verdicts if claim.startswith("agree")]
    other = [f"{task} ({claim.split(':')[0]})" for task, claim in verdicts if not claim.startswith("agree")]
    out.append(f"Overall: the paper's robustness claim is supported on {len(agree)} of {len(verdicts)} attacked "
               "model(s)"
               + (f" ({', '.join(agree)})" if agree else "") + (f"; not on {'; '.join(other)}" if other else "")
               + "." + (f" The slowdown attack took back part of the saving in {sum(v > 0 for v in lost_all)} of "
                        f"{len(lost_all)} early-exit settings (median {100 * statistics.median(lost_all):.0f} %), "
                        "as WAFFLE reports: a server sized for the clean mean exit layer is undersized under such "
                        "inputs (`docs/serving-defence.md` measures the server's work budget against them)."
                        if lost_all else ""))
    return out


def robustness_reading(run: dict) -> list[str]:
    """Findings of the misclassification attack, and the verdict on the paper's claim."""
    rules = by_rule(run)
    full = rules["patience 0"]
    f = full["misclassification"]
    out = [f"Full depth: accuracy {pct(f['accuracy_clean'])} % on the {f['num_examples']} examples, "
           f"{pct(f['accuracy_under_attack'])} % under attack; the attack flipped {f['succeeded']} of the "
           f"{f['attacked']} it attacked ({pct(f['success_rate'])} %) with {num(f['mean_queries'], 1)} "
           f"queries and {num(f['mean_perturbed_words'])} perturbed words on average."]
    counts = {"more robust": 0, "less robust": 0, "unclear": 0}
    for s, d, se, v in patience_verdicts(run):
        m = s["misclassification"]
        counts[v if v in counts else "unclear"] += 1
        out.append(f"{s['label']} (mean exit layer {num(s['dev']['mean_exit_layer'])} on clean dev): "
                   f"accuracy under attack {pct(m['accuracy_under_attack'])} % vs "
                   f"{pct(f['accuracy_under_attack'])} % "
                   f"at full depth, a difference of {100 * d:+.1f} points (paired standard error "
                   f"{100 * se:.1f}): {v}; success rate {pct(m['success_rate'])} % vs "
                   f"{pct(f['success_rate'])} %, queries {num(m['mean_queries'], 1)} vs "
                   f"{num(f['mean_queries'], 1)}.")
    for s in run["results"]:
        if "matched_to" not in s:
            continue
        p = rules[s["matched_to"]]
        d, se = paired(robust_flags(p), robust_flags(s))
        v = verdict(d, se, f"{p['label']} more robust", f"{s['label']} more robust")
        out.append(f"{s['label']} (mean exit layer {num(s['dev']['mean_exit_layer'])} on clean dev, "
                   f"matched to {p['label']}'s {num(p['dev']['mean_exit_layer'])}): accuracy under attack "
                   f"{pct(s['misclassification']['accuracy_under_attack'])} % vs "
                   f"{pct(p['misclassification']['accuracy_under_attack'])} % for {p['label']}, a difference "
                   f"of {100 * d:+.1f} points for patience (paired standard error {100 * se:.1f}): {v}.")
    total = sum(counts.values())
    claim = paper_claim(counts)
    out.append(f"Against the paper: {PAPER}. Here, of {total} patience setting(s), {counts['more robust']} "
               f"{'is' if counts['more robust'] == 1 else 'are'} measurably more robust than full depth, "
               f"{counts['less robust']} measurably less robust and {counts['unclear']} not distinguishable "
               f"on {f['num_examples']} examples: these measurements {claim}.")
    return out


def _added_layers(part: dict) -> list[int]:
    return [r["final_exit_layer"] - r["clean_exit_layer"] for r in part["examples"]]


def slowdown_reading(run: dict) -> list[str]:
    """Findings of the slowdown attack (exit layers, time, accuracy), patience vs its matched rules, and the
    comparison with WAFFLE's findings."""
    rules = by_rule(run)
    out = []
    for s in run["results"]:
        part = s.get("slowdown")
        if part is None:
            continue
        t = part.get("timing") or {}
        timing = "" if not t else (
            f"; time per example {num(t['ms_per_example_clean'], 1)} -> "
            f"{num(t['ms_per_example_attacked'], 1)} ms ({num(t['attacked_over_clean'])}x; full depth "
            f"{num(t['ms_per_example_full_depth'], 1)} ms)")
        out.append(f"{s['label']}: mean exit layer {num(part['mean_exit_layer_clean'])} -> "
                   f"{num(part['mean_exit_layer_attacked'])} ({pct(part['saving_lost'], 0)} % of the layers "
                   f"it saved lost; {part['slowed']} of {part['num_examples']} examples slowed, "
                   f"{part['at_last_layer_attacked']} at the last layer){timing}; accuracy "
                   f"{pct(part['accuracy_clean'])} -> {pct(part['accuracy_attacked'])} %.")
    counts = {"patience": 0, "other": 0, "unclear": 0}
    for s in run["results"]:
        if "matched_to" not in s or "slowdown" not in s:
            continue
        p = rules[s["matched_to"]]
        d, se = paired(_added_layers(p["slowdown"]), _added_layers(s["slowdown"]))
        v = verdict(d, se, "patience", "other")
        counts[v if v in counts else "unclear"] += 1
        named = {"patience": p["label"], "other": s["label"]}
        v = f"{named[v]} is slowed down more" if v in named else v
        out.append(f"{p['label']} vs {s['label']} (same mean exit layer on clean dev): the attack adds "
                   f"{num(sum(_added_layers(p['slowdown'])) / p['slowdown']['num_examples'])} vs "
                   f"{num(sum(_added_layers(s['slowdown'])) / s['slowdown']['num_examples'])} layers per "
                   f"example (difference {d:+.2f}, paired standard error {se:.2f}): {v}.")
    lost = [(s["kind"], s["slowdown"]["saving_lost"]) for s in run["results"]
            if (s.get("slowdown") or {}).get("saving_lost") is not None]
    if lost:
        ranges = []
        for kind in dict.fromkeys(k for k, _ in lost):
            values = [100 * v for k, v in lost if k == kind]
            ranges.append(f"{kind} {min(values):.0f}-{max(values):.0f} %")
        out.append(f"Against WAFFLE: {WAFFLE}. Here the slowdown attack took back this share of the layers "
                   f"each setting saved: {'; '.join(ranges)}; of {sum(counts.values())} matched pair(s), "
                   f"patience was slowed down measurably more in {counts['patience']}, the matched rule in "
                   f"{counts['other']}, and {counts['unclear']} could not be told apart.")
    checked = [(s["label"], s["slowdown"]["timing"]) for s in run["results"]
               if (s.get("slowdown") or {}).get("timing")]
    wrong = [f"{label} ({t['confirmed']} of {len(rules[label]['slowdown']['examples'])})"
             for label, t in checked if t["confirmed"] != len(rules[label]["slowdown"]["examples"])]
    if checked and not wrong:
        out.append("Early-exit inference at batch size 1 gave every attacked input the exit layer and label "
                   "the attack saw.")
    elif wrong:
        out.append("Early-exit inference at batch size 1 disagreed with what the attack saw for some inputs "
                   f"(confirmed: {', '.join(wrong)}).")
    return out


def attack_time(run: dict) -> str:
    """Wall and CPU seconds of each attack, in all and per example and setting."""
    parts = []
    for goal in ("misclassification", "slowdown"):
        rows = [s[goal] for s in run["results"] if goal in s]
        if not rows:
            continue
        wall, cpu = sum(r["seconds"] for r in rows), sum(r["cpu_seconds"] for r in rows)
        per = len(rows) * run["data"]["num_examples"]
        parts.append(f"{goal} {wall:.0f} s ({cpu:.0f} s CPU; {wall / per:.2f} s, {cpu / per:.2f} s CPU per "
                     f"example and setting, {len(rows)} settings)")
    return "; ".join(parts)


def caveats(run: dict) -> list[str]:
    out = []
    n = run["data"]["num_examples"]
    if run["settings"]["quick"]:
        out.append("This is a --quick smoke run: far too few examples for any conclusion.")
    elif n < 100:
        out.append(f"Only {n} examples: differences of a few points are noise (see the standard errors).")
    return out


def contention_text(run: dict) -> str:
    t = run.get("timing")
    if not t:
        return "no timing (slowdown not run)."
    if not t.get("contention_measured"):
        return "CPU pressure (Linux PSI) not available: rounds were not checked for competing processes."
    worst = max((r["contention"] or 0 for r in t["rounds"] if r["kept"]), default=0)
    return (f"{len(t['rounds'])} round(s), {t['discarded']} discarded for contention, worst kept round "
            f"{100 * worst:.1f} % (share of the round other tasks waited for a CPU).")


@functools.cache
def environment() -> jinja2.Environment:
    return page_environment(pct=pct, num=num, robustness_reading=robustness_reading,
                            slowdown_reading=slowdown_reading, summary_reading=summary_reading, caveats=caveats, attack_time=attack_time,
                            contention_text=contention_text, caches_text=caches_text)


def render_markdown(reports: dict) -> str:
    """The Markdown page of every run in ``docs/robustness.json``."""
    return environment().get_template("robustness.md.j2").render(reports=reports)
