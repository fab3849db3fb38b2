"""The results report's evaluation of one trained run folder (``report_eval.json``):

1. ONE fp32 pass over the dev split (the first ``max_eval_samples`` examples of the task's first dev split) giving
   every layer's logits (:func:`pabee.tuning.all_layer_logits`), kept in ``report_logits.npz`` (with the held-out
   split's, when ``pabee train --tune_split`` made one), so an interrupted evaluation never computes it again;
2. the metric, mean exit layer and layer speed-up of every exit setting of the run by replay
   (:mod:`benchmarks.report_replay`), and the tuned settings (PABEE and distill runs);
3. wall-clock timing of a few settings only (full depth, the setting tuned on dev, the one tuned on the held-out
   split if any, the fastest patience within the budget; plain runs: full depth) at every batch size on the first
   ``timing_examples`` dev examples, the settings interleaved in blocks of consecutive batches over
   ``timing_rounds`` rounds, as :func:`pabee.evaluate.evaluate_exit_rules` does;
4. the equivalence check: for each timed setting and batch size, the real early-exit inference's predictions and
   exit layers against the replay's on the timed examples; mismatches not explained by a near tie
   (:func:`benchmarks.report_replay.compare_with_replay`) stop the report with a one-line error.

``report_eval.json`` is written after the replay and after each batch size's timing, so an interruption keeps
what was finished; it is complete when ``complete`` is true and its ``key`` (:func:`eval_key`) is the run's. A
folder evaluated by the earlier report (``eval_results.json`` only, every rule timed) has no such file: it is
evaluated again with this scheme, its old file left as it was.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from pabee.data.holdout import examples_digest, read_holdout, rebuild_holdout
from pabee.evaluate import INTERLEAVE_EXAMPLES
from pabee.exit_rules import ExitRule
from pabee.features import Features, length_sorted_batches, tokenize_examples
from pabee.files import atomic_path, atomic_write_text
from pabee.timing import interleaved_blocks, timer_for
from pabee.tuning import FULL_DEPTH, TUNE_KINDS, Candidate, all_layer_logits

from .machine import cpu_model
from .report_plan import BATCH_SIZES, PLAIN, ReportConfig, ReportError, RunSpec
from .report_replay import (
    compare_with_replay,
    replay_candidates,
    replay_records,
    setting_name,
    tuning_summary,
)

EVAL_FILE = "report_eval.json"
LOGITS_FILE = "report_logits.npz"
EVAL_FORMAT = 2  # the earlier report's evaluation (eval_results.json, every rule timed) was format 1


def read_json(path: Path):
    """The parsed file, or None when it is missing or not valid JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def write_json(path: Path, value) -> None:
    """Write atomically (a reader never sees half a file)."""
    atomic_write_text(path, json.dumps(value, indent=2) + "\n")


def eval_key(spec: RunSpec, config: ReportConfig) -> dict:
    """What a finished evaluation must have been made with to be reused (JSON-ready). The timing rounds are not
    part of it (as before: a run timed with other rounds is reused as it is)."""
    return json.loads(json.dumps({
        "format": EVAL_FORMAT, "rules": [str(r) for r in spec.rules],
        "max_eval_samples": config.hyper[spec.model.name].max_eval_samples, "max_drop": config.max_drop,
        "timing_examples": config.timing_examples.get(spec.model.name),
    }))


def read_evaluation(folder: Path) -> dict | None:
    """The folder's report_eval.json, or None when missing or unreadable."""
    found = read_json(folder / EVAL_FILE)
    return found if isinstance(found, dict) else None


def evaluation_done(spec: RunSpec, config: ReportConfig) -> bool:
    """Whether the folder holds a complete evaluation made with the run's key."""
    found = read_evaluation(spec.output_dir)
    return bool(found and found.get("complete") and found.get("key") == eval_key(spec, config))


# ---------------------------------------------------------------------------------------------------- logits


def cached_logits(folder: Path, name: str, digest: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The all-layer logits ``name`` ("dev", "heldout") of the examples whose digest is ``digest``: read from
    LOGITS_FILE when it has them for those very examples, else computed and added to it (atomically)."""
    path = folder / LOGITS_FILE
    stored: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            stored = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError):
        stored = {}
    if f"{name}_digest" in stored and str(stored[f"{name}_digest"]) == digest:
        return stored[name]
    logits = compute()
    stored[name], stored[f"{name}_digest"] = logits, np.array(digest)
    buffer = io.BytesIO()
    np.savez(buffer, **stored)
    with atomic_path(path, suffix=".npz") as tmp:
        tmp.write_bytes(buffer.getvalue())
    return logits


def first_rows(features: Features, n: int) -> Features:
    return Features(features.input_ids[:n], None if features.token_type_ids is None else features.token_type_ids[:n],
                    None if features.labels is None else features.labels[:n])


# ---------------------------------------------------------------------------------------------------- timing


def candidate_of_choice(choice: dict) -> Candidate:
    return Candidate(ExitRule.parse(choice["exit_rule"]), choice.get("regression_threshold"))


def timed_settings(tuning: dict | None) -> list[Candidate]:
    """Full depth, then the settings tuned on dev, on the held-out split and the fastest patience (once each)."""
    out = [Candidate(FULL_DEPTH)]
    if tuning is not None:
        picks = [tuning["dev"], tuning["patience"]]
        if tuning["honest"]["how"] == "held-out":
            picks.insert(1, tuning["honest"])
        out += [candidate_of_choice(p) for p in picks]
    return list(dict.fromkeys(out))


def time_settings(model, features: Features, settings: list[Candidate], batch_size: int, rounds: int,
                  pad_token_id: int) -> dict[Candidate, dict]:
    """Real early-exit inference of every setting over ``features`` at ``batch_size``, interleaved in blocks of
    consecutive batches (rotating order) for ``rounds`` timed rounds after an untimed warm-up call each.
    -> {setting: {"rounds": seconds per round, "logits" (N, C), "exits" (N,)}} (outputs of the first round)."""
    device = next(model.parameters()).device
    batches = [(indices, {k: v.to(device) for k, v in batch.items()})
               for indices, batch in length_sorted_batches(features, batch_size, pad_token_id)]
    n = len(features)
    out = {c: {"rounds": [], "logits": np.zeros((n, model.num_labels), dtype=np.float32),
               "exits": np.zeros(n, dtype=np.int64)} for c in settings}

    def call(c: Candidate, batch: dict):
        return model(**batch, exit_rule=c.rule, regression_threshold=c.regression_threshold)

    clock = timer_for(device)
    block = max(1, INTERLEAVE_EXAMPLES // batch_size)
    with torch.inference_mode():
        for c in settings:  # warm-up: no timed call pays for lazy initialisation
            call(c, batches[0][1])
        for round_index in range(rounds):
            totals = dict.fromkeys(settings, 0.0)
            for c, group in interleaved_blocks(settings, batches, block):
                for indices, batch in group:
                    start = clock()
                    result = call(c, batch)
                    totals[c] += clock() - start
                    if round_index == 0:
                        out[c]["logits"][indices] = result.logits.float().cpu().numpy()
                        out[c]["exits"][indices] = result.exit_layers.cpu().numpy()
            for c in settings:
                out[c]["rounds"].append(totals[c])
    return out


def timing_entry(settings: list[Candidate], measured: dict[Candidate, dict], all_logits: np.ndarray,
                 num_labels: int, batch_size: int) -> dict:
    """One batch size's timings and equivalence checks (JSON-ready)."""
    # Medians, not means: one round disturbed by another process must not decide the figure. The speed-up is
    # the median of the per-round ratios (settings are interleaved, so a round's ratio shares its conditions).
    full_rounds = np.asarray(measured[settings[0]]["rounds"], dtype=float)
    entry = {"batch_size": batch_size, "block_batches": max(1, INTERLEAVE_EXAMPLES // batch_size), "settings": {}}
    for c in settings:
        rounds = np.asarray(measured[c]["rounds"], dtype=float)
        seconds = float(np.median(rounds))
        ratios = full_rounds / np.where(rounds > 0, rounds, np.nan)
        check = compare_with_replay(all_logits, c, measured[c]["logits"], measured[c]["exits"], num_labels)
        entry["settings"][setting_name(c)] = {
            "label": c.label, "eval_seconds": seconds, "eval_seconds_rounds": [round(t, 6) for t in measured[c]["rounds"]],
            "wall_speedup": float(np.nanmedian(ratios)) if np.isfinite(ratios).any() else None,
            "replay_layer_speedup": all_logits.shape[0] / float(c.exit_layers(all_logits).mean()),
            "check": check,
        }
    return entry


def check_failures(entry: dict) -> list[str]:
    return [f"{name} at batch size {entry['batch_size']}: {s['check']['unexplained']} of {s['check']['examples']} "
            f"examples" for name, s in entry["settings"].items() if s["check"]["unexplained"]]


def check_totals(runs: Sequence[dict]) -> dict:
    """The replay == real inference checks over every run, setting and batch size: examples compared,
    mismatches, those explained by near ties, and the largest logit difference where they agree."""
    total = {"comparisons": 0, "examples": 0, "mismatches": 0, "near_ties": 0, "unexplained": 0,
             "max_abs_logit_difference": 0.0}
    for run in runs:
        for entry in run["timing"].values():
            for timed in entry["settings"].values():
                c = timed["check"]
                total["comparisons"] += 1
                for name in ("examples", "mismatches", "near_ties", "unexplained"):
                    total[name] += c[name]
                total["max_abs_logit_difference"] = max(total["max_abs_logit_difference"],
                                                        c["max_abs_logit_difference"])
    return total


# ---------------------------------------------------------------------------------------------------- one run


def load_for_evaluation(spec: RunSpec, config: ReportConfig, with_training: bool):
    """The run's model (fp32, eval mode), tokenizer, max sequence length and task data."""
    from pabee.loading import load_tokenizer
    from pabee.model_checks import model_max_seq_length, read_model_labels
    from pabee.modeling import PabeeForSequenceClassification
    from pabee.runner import RunSettings, load_task_data

    folder = str(spec.output_dir)
    settings = RunSettings(output_dir=folder, model_name_or_path=folder, task_name=spec.task.folder,
                           data_dir=config.glue_dir, do_eval=True, do_train=with_training)
    data = load_task_data(settings, read_model_labels(folder))
    tokenizer = load_tokenizer(folder)
    with warnings.catch_warnings():  # a default longer than the model takes was reported at training
        warnings.simplefilter("ignore", UserWarning)
        max_seq_length = model_max_seq_length(settings.max_seq_length, folder, tokenizer)
    model = PabeeForSequenceClassification.from_pretrained(folder).float().eval()
    return model, tokenizer, max_seq_length, data


def kept_logits_path(out_dir: Path, spec: RunSpec) -> Path:
    """Where the report keeps a run's all-layer dev logits beside its page (they outlive the run folder)."""
    return out_dir / "results" / "logits" / f"{spec.model.name}-{spec.task.name}-{spec.method}-seed{spec.seed}.npz"


def keep_logits(out_dir: Path, spec: RunSpec, logits: np.ndarray, labels: np.ndarray, digest: str) -> None:
    """Keep the all-layer dev logits (L, N, C) and labels (N,) of a run beside the page (compressed, float32,
    written atomically): any exit rule can be replayed on them once the trained model is gone."""
    path = kept_logits_path(out_dir, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, logits=np.asarray(logits, dtype=np.float32), labels=labels, digest=np.asarray(digest))


def evaluate_run(spec: RunSpec, config: ReportConfig, log: Callable[[str], None] = lambda message: None) -> dict:
    """Evaluate one trained run (see the module docstring); -> the content of its report_eval.json. Raises
    ReportError when the real inference and the replay disagree beyond near ties."""
    folder = spec.output_dir
    key = eval_key(spec, config)
    previous = read_evaluation(folder) or {}
    holdout = read_holdout(folder) if spec.method != PLAIN else None
    model, tokenizer, max_seq_length, data = load_for_evaluation(spec, config, holdout is not None)
    task, pad = data.task, tokenizer.pad_token_id or 0
    split = task.dev_splits[0]
    limit = config.hyper[spec.model.name].max_eval_samples
    examples = data.dev[split] if limit is None else data.dev[split][:limit]
    features = tokenize_examples(tokenizer, task, examples, max_seq_length)
    if features.labels is None:
        raise ReportError(f"{spec.label}: the {split} split has no labels")
    log(f"  one pass over {len(features)} {split} examples for every layer's logits")
    digest = examples_digest(examples)
    logits = cached_logits(folder, "dev", digest, lambda: all_layer_logits(model, features, 32, pad))
    labels = np.asarray(features.labels)
    keep_logits(config.out_dir, spec, logits, labels, digest)
    records = replay_records(logits, labels, task, replay_candidates(spec.rules, task.num_labels), split)
    tuning = None
    if spec.method != PLAIN:
        heldout = None
        if holdout is not None:
            held = rebuild_holdout(holdout, data.train, str(folder / "tune_split.json"))
            held_features = tokenize_examples(tokenizer, task, held, max_seq_length)
            held_logits = cached_logits(folder, "heldout", holdout["digest"],
                                        lambda: all_layer_logits(model, held_features, 32, pad))
            detail = {k: holdout.get(k) for k in ("tune_split", "seed", "size")}
            heldout = (held_logits, np.asarray(held_features.labels), detail)
        kinds = (*TUNE_KINDS, "hybrid") if config.hybrid_rules else TUNE_KINDS
        tuning = tuning_summary(logits, labels, task, config.max_drop, spec.seed, heldout, kinds)
    settings = timed_settings(tuning)
    names = [setting_name(c) for c in settings]
    n = min(len(features), config.timing_examples.get(spec.model.name) or len(features))
    result = {"key": key, "split": split, "num_examples": len(features), "num_layers": model.num_layers,
              "records": records, "tuning": tuning, "timed_settings": names, "timing_examples": n,
              "timing_rounds": config.timing_rounds, "torch_threads": torch.get_num_threads(), "timing": {},
              "cpu_model": cpu_model(), "complete": False}
    if previous.get("timed_settings") == names and previous.get("timing_examples") == n and \
            previous.get("num_examples") == len(features):
        result["timing"] = {bs: entry for bs, entry in (previous.get("timing") or {}).items()
                            if not check_failures(entry)}  # finished batch sizes of an interrupted evaluation
    write_json(folder / EVAL_FILE, result)
    timed = first_rows(features, n)
    for bs in BATCH_SIZES:
        if str(bs) in result["timing"]:
            continue
        log(f"  timing {len(settings)} setting(s) at batch size {bs} on {n} examples, {config.timing_rounds} round(s)")
        measured = time_settings(model, timed, settings, bs, config.timing_rounds, pad)
        entry = timing_entry(settings, measured, logits[:, :n], task.num_labels, bs)
        result["timing"][str(bs)] = entry
        write_json(folder / EVAL_FILE, result)
        failures = check_failures(entry)
        if failures:
            raise ReportError(f"{spec.label}: the real early-exit inference disagrees with the replay beyond near "
                              f"ties ({'; '.join(failures)}); details in {folder / EVAL_FILE}")
    result["complete"] = True
    write_json(folder / EVAL_FILE, result)
    return result
