"""Finished runs kept from the report's previous ``results.json`` when their folders are gone.

A full-data 12-layer grid takes more CPU hours than one machine keeps its work directory: trained checkpoints
(440 MB each for MPNet-base) are not kept between machines, but ``results.json`` (in the repository) holds every
run's evaluation (replay records of every exit rule, tuning, timings and the replay == inference checks). A planned
run whose folder is missing (or empty) is "archived" when the previous ``results.json`` of the same ``--out-dir`` has it, made
with the same training and evaluation settings: it is neither trained again nor shown as missing, and the page
says how many runs came from there and on which CPU they were timed. Remove its entry (or the folder's absence)
to train it again: a run trained again in its folder always wins over its archived entry. ``--keep-from FILE``
names further results.json files (another report's out dir) read after the out dir's own.

Entries written before runs recorded their own settings are matched by the file's settings instead (the model's
hyper-parameters, dev subset, tuning budget, timed examples and rule set), which then held for every run in it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .report_evaluate import eval_key, read_json
from .report_plan import DISTILL, ReportConfig, ReportError, RunSpec

RESULTS_JSON = "results.json"


def run_identity(entry: dict) -> tuple:
    """(model, task folder, seed, method) of a results.json run entry."""
    return entry["model"], entry["task"], int(entry["seed"]), entry["method"]


def spec_identity(spec: RunSpec) -> tuple:
    return spec.model.name, spec.task.folder, spec.seed, spec.method


def current_settings(spec: RunSpec, config: ReportConfig) -> dict:
    """What an entry must have been made with to stand for ``spec``: its training key and evaluation key."""
    return {"settings": json.loads(json.dumps(config.run_key(spec))), "evaluation_key": eval_key(spec, config)}


def legacy_matches(previous: dict, spec: RunSpec, config: ReportConfig, hyper: dict) -> bool:
    """Whether a file written before runs carried their settings was made with this config's settings for
    ``spec`` (every run in such a file shared the file's settings). ``hyper``: this config's hyper_parameters of
    the model, as the aggregation stores them."""
    name = spec.model.name
    evaluation = previous.get("evaluation") or {}
    same = [
        (previous.get("hyper_parameters") or {}).get(name) == json.loads(json.dumps(hyper)),
        (previous.get("max_eval_samples") or {}).get(name) == config.hyper[name].max_eval_samples,
        evaluation.get("max_drop") == config.max_drop,
        (evaluation.get("timing_examples") or {}).get(name) == config.timing_examples.get(name),
        bool(previous.get("hybrid_rules")) == config.hybrid_rules,
    ]
    if spec.method == DISTILL:
        alpha, temperature = config.distillation
        same.append(previous.get("distillation") == {"alpha": alpha, "temperature": temperature})
    return all(same)


def archived_runs(plan: Sequence[RunSpec], config: ReportConfig, hyper: dict[str, dict]) -> dict[Path, dict]:
    """{folder: results.json entry} of the planned runs the previous results.json in ``config.out_dir`` (then
    each ``--keep-from`` file) holds with the same settings (see the module docstring). ``hyper``: {model: hyper_parameters as stored}. Entries are
    returned with ``settings``, ``evaluation_key``, ``archived`` True and ``timed_on`` (the CPU their timings were
    taken on; for older entries the file's machine) filled in."""
    found: dict[Path, dict] = {}
    for source in (config.out_dir / RESULTS_JSON, *config.keep_from):  # the first file that has a run wins
        previous = read_json(source)
        if not isinstance(previous, dict) or not isinstance(previous.get("runs"), list):
            continue
        machine = (previous.get("machine") or {}).get("cpu_model")
        entries = {}
        for entry in previous["runs"]:
            try:
                entries[run_identity(entry)] = entry
            except (KeyError, TypeError, ValueError):
                continue  # not a run entry this report wrote
        for spec in plan:
            entry = entries.get(spec_identity(spec))
            folder = spec.output_dir
            if entry is None or folder in found or (folder.is_dir() and any(folder.iterdir())):
                continue  # not archived here, found already, or its folder is here: the folder decides
            want = current_settings(spec, config)
            if "settings" in entry:
                ok = entry["settings"] == want["settings"] and entry.get("evaluation_key") == want["evaluation_key"]
            else:
                ok = legacy_matches(previous, spec, config, hyper[spec.model.name])
            if ok:
                found[folder] = {**entry, **want, "archived": True, "reused": True,
                                 "timed_on": entry.get("timed_on") or machine}
    return found


def readable_results(text: str) -> Path:
    """A --keep-from file: a results.json this report wrote (ReportError naming the problem otherwise)."""
    path = Path(text)
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"--keep-from {text}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"--keep-from {text}: not a readable JSON file ({type(err).__name__})") from None
    if not isinstance(found, dict) or not isinstance(found.get("runs"), list):
        raise ReportError(f"--keep-from {text}: not a results.json of this report (no \"runs\" list)")
    return path
