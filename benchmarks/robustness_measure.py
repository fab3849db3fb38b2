"""The robustness benchmark's measurements for one model: matching entropy/confidence thresholds to the
patiences, the DeepWordBug misclassification attack at every setting, the slowdown attack at every early-exit
setting, and the batch-size-1 timing of clean against slowed-down inputs.

Every setting's attacker queries the same model under its own exit rule; the answers come from one shared
cache of all-layer logits (:class:`pabee.attacks.LayerLogits`), so each distinct text runs through the model
once whatever the number of settings. The timing then runs the real early-exit inference at batch size 1 and
checks that it gives the exit layers and labels the attacks saw.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from pabee.attacks import Budget, LayerLogits, Misclassification, ModelClassifier, Slowdown, deepwordbug
from pabee.attacks.classifier import encode, softmax
from pabee.exit_rules import ExitRule, max_softmax_probability, rule_exit_layers, softmax_entropy
from pabee.timing import mean_std, paired_ratios, time_interleaved_batches

from .machine import cpu_stall_seconds, wait_for_quiet

Log = Callable[[str], None]
FULL_DEPTH = ExitRule("patience", 0)


# ---------------------------------------------------------------------------------------- matched thresholds


def rule_summary(all_logits: np.ndarray, labels: np.ndarray, rule: ExitRule) -> dict:
    """Accuracy and mean exit layer of ``rule`` on all-layer logits (L, N, C) with gold ``labels`` (N,)."""
    exits = rule_exit_layers(all_logits, rule)
    predicted = all_logits[exits - 1, np.arange(all_logits.shape[1])].argmax(axis=1)
    return {"acc": float((predicted == labels).mean()), "mean_exit_layer": float(exits.mean())}


def match_threshold(all_logits: np.ndarray, kind: str, target: float) -> tuple[float, float]:
    """The ``kind`` ("entropy" or "confidence") threshold whose mean exit layer on ``all_logits`` (L, N, C) is
    closest to ``target``: (threshold, its mean exit layer).

    The rule only changes where the threshold crosses a value it tests (entropy < t, top probability >= t at
    layers 1..L-1): each such value v stands for the interval (previous value, v] of equivalent thresholds,
    of which a short decimal near the middle is returned. Mean exit layer is monotone in the threshold, so the
    closest interval is found by bisection.
    """
    inner = all_logits[:-1].reshape(-1, all_logits.shape[-1])
    if kind == "entropy":
        values = np.unique(softmax_entropy(inner).astype(np.float64))
        highs = np.concatenate([values, [values[-1] + 1.0]])  # the last: everything exits at layer 1
        lows = np.concatenate([[0.0], values])
    elif kind == "confidence":
        values = np.unique(max_softmax_probability(inner).astype(np.float64))
        values = values[(values > 0) & (values <= 1)]
        highs, lows = values, np.concatenate([[0.0], values[:-1]])
        if values[-1] < 1.0:  # thresholds above every value: nothing exits early
            highs, lows = np.append(highs, 1.0), np.append(lows, values[-1])
    else:
        raise ValueError(f"cannot match {kind!r} thresholds; choose entropy or confidence")
    sign = -1.0 if kind == "entropy" else 1.0  # entropy's mean exit falls as t grows, confidence's rises
    lo, hi = 0, len(highs) - 1
    while lo < hi:  # the first candidate with sign * mean >= sign * target
        mid = (lo + hi) // 2
        if sign * _mean_exit(all_logits, kind, highs[mid]) >= sign * target:
            hi = mid
        else:
            lo = mid + 1
    best = None
    for k in sorted({max(lo - 1, 0), lo}):
        value = _short_threshold(all_logits, kind, float(lows[k]), float(highs[k]))
        mean = _mean_exit(all_logits, kind, value)
        if best is None or abs(mean - target) < abs(best[1] - target) - 1e-12:
            best = (value, mean)
    return best  # type: ignore[return-value]


def _mean_exit(all_logits: np.ndarray, kind: str, value: float) -> float:
    return float(rule_exit_layers(all_logits, ExitRule(kind, float(value))).mean())


def _short_threshold(all_logits: np.ndarray, kind: str, low: float, high: float) -> float:
    """A threshold for the interval (low, high] of equivalent ones, far from both ends (a value the rule tests
    exactly at the threshold would flip with the ~1e-7 float noise of another batch size): the shortest decimal
    within a quarter of the interval of its middle that gives the middle's exit layers, else the middle."""
    middle = (low + high) / 2
    exact = rule_exit_layers(all_logits, ExitRule(kind, middle))
    for digits in range(1, 10):
        t = float(f"{middle:.{digits}g}")
        if abs(t - middle) <= (high - low) / 4 and 0 < t and (kind == "entropy" or t <= 1.0) and \
                np.array_equal(rule_exit_layers(all_logits, ExitRule(kind, t)), exact):
            return t
    return middle


def plan_settings(all_logits: np.ndarray, labels: np.ndarray, patiences: Sequence[int],
                  matched_kinds: Sequence[str]) -> list[dict]:
    """Full depth, each patience, and per patience one threshold of each matched kind with the closest mean
    exit layer on the clean dev logits. Each setting: rule, label, dev summary, matched_to / target (matched
    rules)."""
    settings = []
    for p in [0, *patiences]:
        rule = ExitRule("patience", p)
        settings.append({"rule": str(rule), "label": rule.label, "kind": "patience", "value": p,
                         "dev": rule_summary(all_logits, labels, rule)})
    for kind in matched_kinds:
        for s in settings[1 : 1 + len(patiences)]:
            target = s["dev"]["mean_exit_layer"]
            value, _ = match_threshold(all_logits, kind, target)
            rule = ExitRule(kind, value)
            if any(x["rule"] == str(rule) for x in settings):
                continue
            settings.append({"rule": str(rule), "label": rule.label, "kind": kind, "value": value,
                             "dev": rule_summary(all_logits, labels, rule), "matched_to": s["label"],
                             "target_mean_exit_layer": target})
    return settings


# ------------------------------------------------------------------------------------------ attacks


def example_record(index: int, result, label: int) -> dict:
    """What the JSON keeps of one attack (the perturbed text only when it changed)."""
    clean, final = result.clean, result.final
    record = {
        "index": index, "status": result.status, "queries": result.queries, "num_words": result.num_words,
        "perturbed_words": result.perturbed_words, "edit_distance": result.edit_distance,
        "gold": label, "clean_label": clean.label, "final_label": final.label,
        "clean_exit_layer": clean.exit_layer, "final_exit_layer": final.exit_layer,
    }
    if result.edits:
        record["edits"] = [list(e) for e in result.edits]
        record["perturbed"] = result.perturbed if isinstance(result.perturbed, str) else result.perturbed[1]
    return record


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def summarize_misclassification(records: list[dict]) -> dict:
    """TextAttack's summary: accuracy before / under attack over all N, success rate over the attacked
    (correct) examples, queries over the attacked ones, perturbed words (and % of the text's words) over the
    successes."""
    n = len(records)
    attacked = [r for r in records if r["status"] != "skipped"]
    won = [r for r in attacked if r["status"] == "succeeded"]
    return {
        "num_examples": n, "attacked": len(attacked), "succeeded": len(won),
        "failed": len(attacked) - len(won), "skipped": n - len(attacked),
        "accuracy_clean": len(attacked) / n if n else None,
        "accuracy_under_attack": (len(attacked) - len(won)) / n if n else None,
        "success_rate": len(won) / len(attacked) if attacked else None,
        "mean_queries": _mean([r["queries"] for r in attacked]),
        "mean_perturbed_words": _mean([r["perturbed_words"] for r in won]),
        "mean_perturbed_pct": _mean([100.0 * r["perturbed_words"] / r["num_words"] for r in won]),
        "mean_edit_distance": _mean([r["edit_distance"] for r in won]),
        "mean_exit_layer_clean": _mean([r["clean_exit_layer"] for r in records]),
        "mean_exit_layer_adversarial": _mean([r["final_exit_layer"] for r in won]),
    }


def run_attacks(model, tokenizer, shared: LayerLogits, settings: list[dict], inputs: list, labels: list[int],
                keys: list[str], budget: Budget, seed: int, args, log: Log, goal: str) -> None:
    """Attack every example at every setting toward ``goal`` ("misclassification" or "slowdown": the
    early-exit settings only); adds the per-example records and the summary to each setting's dict."""
    for s in settings:
        if goal == "slowdown" and s["rule"] == str(FULL_DEPTH):
            continue
        classify = ModelClassifier(model, tokenizer, s["rule"], args.max_seq_length, args.batch_size,
                                   all_layers=goal == "slowdown", shared=shared)
        start, before = time.perf_counter(), shared.computed
        cpu = time.process_time()
        records = []
        for i, (item, label, key) in enumerate(zip(inputs, labels, keys)):
            if goal == "slowdown":
                target = Slowdown(model.num_layers)
            else:
                target = Misclassification(label, model.num_labels)
            result = deepwordbug(classify, item, target, key=key, seed=seed, budget=budget)
            records.append(example_record(i, result, label))
            if goal == "slowdown":
                perturbed = result.perturbed
                records[-1]["attacked_input"] = perturbed if isinstance(perturbed, str) else list(perturbed)
        part = {"examples": records, "seconds": time.perf_counter() - start,
                "cpu_seconds": time.process_time() - cpu, "model_inputs_run": shared.computed - before}
        if goal == "slowdown":
            part.update(summarize_slowdown(records, labels, model.num_layers))
        else:
            part.update(summarize_misclassification(records))
        s[goal] = part
        log(f"{goal} {s['label']}: {part['seconds']:.0f} s ({part['cpu_seconds']:.0f} s CPU), "
            f"{part['model_inputs_run']} new model inputs; " + _short(part, goal))


def _short(part: dict, goal: str) -> str:
    if goal == "slowdown":
        return (f"mean exit {part['mean_exit_layer_clean']:.2f} -> {part['mean_exit_layer_attacked']:.2f}, "
                f"{part['slowed']} of {part['num_examples']} slowed")
    rate = part["success_rate"]
    return (f"accuracy {part['accuracy_clean']:.3f} -> {part['accuracy_under_attack']:.3f} under attack, "
            f"success rate {'n/a' if rate is None else f'{rate:.3f}'}")


def summarize_slowdown(records: list[dict], labels: list[int], num_layers: int) -> dict:
    """Mean exit layer and accuracy, clean and attacked, over all N examples; queries and perturbed words over
    the examples not skipped (already at the last layer) and over the slowed-down ones."""
    n = len(records)
    attacked = [r for r in records if r["status"] != "skipped"]
    slowed = [r for r in records if r["final_exit_layer"] > r["clean_exit_layer"]]
    clean_exit = float(np.mean([r["clean_exit_layer"] for r in records]))
    attacked_exit = float(np.mean([r["final_exit_layer"] for r in records]))
    saved = num_layers - clean_exit
    return {
        "num_examples": n, "attacked": len(attacked), "slowed": len(slowed),
        "at_last_layer_clean": sum(r["clean_exit_layer"] == num_layers for r in records),
        "at_last_layer_attacked": sum(r["final_exit_layer"] == num_layers for r in records),
        "mean_exit_layer_clean": clean_exit, "mean_exit_layer_attacked": attacked_exit,
        "saving_lost": (attacked_exit - clean_exit) / saved if saved > 0 else None,
        "accuracy_clean": float(np.mean([r["clean_label"] == y for r, y in zip(records, labels)])),
        "accuracy_attacked": float(np.mean([r["final_label"] == y for r, y in zip(records, labels)])),
        "mean_queries": _mean([r["queries"] for r in attacked]),
        "mean_perturbed_words": _mean([r["perturbed_words"] for r in slowed]),
        "mean_perturbed_pct": _mean([100.0 * r["perturbed_words"] / r["num_words"] for r in slowed]),
    }


# ------------------------------------------------------------------------------------------ timing


def time_slowdown(model, tokenizer, settings: list[dict], inputs: list, labels: list[int], args,
                  log: Log) -> dict:
    """Batch size 1, torch early-exit inference: full depth on the clean inputs, and every early-exit rule on
    the clean inputs and on the inputs its slowdown attack produced, interleaved (``pabee.timing``). Adds
    "timing" to each slowdown part; returns the rounds' record. Also checks that real inference gives the exit
    layers and labels the attacks saw (``confirmed``)."""
    configs: dict[str, tuple[ExitRule, list[dict]]] = {}
    clean = [encode(tokenizer, [x], args.max_seq_length) for x in inputs]
    configs["full depth clean"] = (FULL_DEPTH, clean)
    for s in settings:
        if "slowdown" not in s:
            continue
        attacked = [encode(tokenizer, [_as_input(r["attacked_input"])], args.max_seq_length)
                    for r in s["slowdown"]["examples"]]
        rule = ExitRule.parse(s["rule"])
        configs[f"{s['label']} clean"] = (rule, clean)
        configs[f"{s['label']} attacked"] = (rule, attacked)

    def fn(name):
        rule, batches = configs[name]
        return lambda i: model(**batches[i], exit_rule=rule)

    answers = {}
    with torch.inference_mode():
        for name in configs:  # untimed: the answers real inference gives
            outs = [fn(name)(i) for i in range(len(inputs))]
            answers[name] = (np.array([int(o.exit_layers[0]) for o in outs]),
                             np.array([int(softmax(o.logits.float().numpy())[0].argmax()) for o in outs]))
        probe = cpu_stall_seconds if cpu_stall_seconds() is not None else None

        def before_round():
            if probe is not None and args.quiet_timeout > 0:
                wait_for_quiet(probe, args.max_contention, timeout_s=args.quiet_timeout)

        log(f"timing {len(configs)} configurations x {len(inputs)} examples at batch size 1, "
            f"{args.warmup} warm-up + {args.repeats} round(s) ...")
        timed = time_interleaved_batches({name: fn(name) for name in configs}, list(range(len(inputs))),
                                         warmup=args.warmup, repeats=args.repeats, stall_probe=probe,
                                         max_contention=args.max_contention, max_retries=args.max_retries,
                                         before_round=before_round, block=args.block_examples)
    n = len(inputs)
    full = timed.results["full depth clean"]
    for s in settings:
        if "slowdown" not in s:
            continue
        t_clean, t_attacked = timed.results[f"{s['label']} clean"], timed.results[f"{s['label']} attacked"]
        ratios = paired_ratios(t_attacked, t_clean)
        exits, predicted = answers[f"{s['label']} attacked"]
        records = s["slowdown"]["examples"]
        s["slowdown"]["timing"] = {
            "ms_per_example_clean": 1000 * t_clean.mean_s / n,
            "ms_per_example_attacked": 1000 * t_attacked.mean_s / n,
            "ms_per_example_full_depth": 1000 * full.mean_s / n,
            "attacked_over_clean": t_attacked.mean_s / t_clean.mean_s,
            "attacked_over_clean_paired": mean_std(ratios),
            "clean": t_clean.to_dict(), "attacked": t_attacked.to_dict(),
            "real_mean_exit_layer_attacked": float(exits.mean()),
            "real_accuracy_attacked": float(np.mean(predicted == np.array(labels))),
            "confirmed": int(sum(e == r["final_exit_layer"] and p == r["final_label"]
                                 for e, p, r in zip(exits, predicted, records))),
        }
    return {"rounds": [r.__dict__ for r in timed.rounds], "discarded": timed.discarded,
            "full_depth": full.to_dict(), "ms_per_example_full_depth": 1000 * full.mean_s / n,
            "contention_measured": probe is not None}


def _as_input(value):
    return value if isinstance(value, str) else tuple(value)
