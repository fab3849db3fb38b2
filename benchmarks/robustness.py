#!/usr/bin/env python
"""Adversarial robustness and adversarial slowdown of one trained pabee model per task, at full depth, at each
patience and at entropy (or confidence) thresholds with the same mean exit layer on clean dev.

1. **Misclassification** (DeepWordBug, Gao et al. 2018; :mod:`pabee.attacks.deepwordbug`): every setting's own
   early-exit model is attacked, black-box, on the first ``--max-examples`` dev examples; examples it
   misclassifies already are skipped (as TextAttack does). Reported: clean accuracy, accuracy under attack,
   attack success rate, mean queries, mean perturbed words and perturbed-word %.
2. **Slowdown** (the same attack and budget with a WAFFLE-style objective: a later exit layer, then flatter
   internal predictions): every early-exit setting, every example. Reported: mean exit layer and accuracy,
   clean and attacked, and the time per example at batch size 1 (torch, ``pabee.timing``, clean and attacked
   inputs interleaved). The attacked inputs of ``--replay-rule`` are written as JSON Lines of
   text-embeddings-inference ``/predict`` "inputs" values (with their clean twins) for a server load test.

Each run adds (or replaces) its task's section of ``docs/robustness.json`` and renders ``docs/robustness.md``
from all sections (``--render-only`` renders again). ``--quick``: a smoke run into a temporary folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # the benchmarks package beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import REPO_ROOT, machine_info, script_environment  # noqa: E402

script_environment()  # before transformers is imported

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.pages import PageError, read_reports, replace_run, write_page, write_reports  # noqa: E402
from benchmarks.robustness_measure import plan_settings, run_attacks, time_slowdown  # noqa: E402
from benchmarks.robustness_render import render_markdown  # noqa: E402
from pabee.attacks import Budget, LayerLogits  # noqa: E402
from pabee.cli import parse_int_list  # noqa: E402
from pabee.config import is_pabee_folder  # noqa: E402
from pabee.data import DataError, find_glue_dir, label_to_id, read_glue_split  # noqa: E402
from pabee.exit_rules import ExitRule  # noqa: E402
from pabee.files import atomic_write_text  # noqa: E402
from pabee.tasks import TaskSpec, get_task  # noqa: E402

MATCHED_KINDS = ("entropy", "confidence")


def model_spec(text: str) -> tuple[TaskSpec, str]:
    """``TASK=RUN_DIR`` -> (task, run folder)."""
    task, sep, folder = text.partition("=")
    if not sep or not folder:
        raise argparse.ArgumentTypeError(f"expected TASK=RUN_DIR (e.g. RTE=runs/minilm-rte), got {text!r}")
    try:
        spec = get_task(task)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if spec.is_regression:
        raise argparse.ArgumentTypeError(f"{spec.folder} is a regression task: the attacks need class labels")
    return spec, folder


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="DeepWordBug misclassification and slowdown attacks on a pabee model at full depth, each "
                    "patience and matched entropy/confidence thresholds.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", type=model_spec, action="append", default=[], metavar="TASK=RUN_DIR",
                   help="a trained pabee run folder and its GLUE task (repeatable: one section per task)")
    p.add_argument("--task-dir", default=None, help="the GLUE root (default: $GLUE_DIR or ../shared/glue)")
    p.add_argument("--max-examples", type=int, default=None,
                   help="first N dev examples attacked (default 100; --quick: 4)")
    p.add_argument("--patience", type=lambda t: parse_int_list(t, "--patience"), default=None,
                   help="patiences > 0 (default 1..L-2; --quick: 1,2); full depth is always attacked")
    p.add_argument("--matched", default="entropy",
                   help="comma-separated kinds of threshold rules matched to each patience's mean exit "
                        "layer on clean dev (entropy, confidence; '' for none). With two classes confidence "
                        ">= t is the entropy rule of threshold H(t), so it adds nothing there")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random character edits (the same for every setting)")
    p.add_argument("--max-edit-distance", type=int, default=30,
                   help="Levenshtein budget: summed distance of the edited words (TextAttack's recipe: 30)")
    p.add_argument("--max-words", type=int, default=None,
                   help="at most this many perturbed words (default: only the edit budget limits)")
    p.add_argument("--max-queries", type=int, default=1000, help="query budget per attacked example")
    p.add_argument("--per-transform", type=int, default=1, help="random edits tried per transformer and word")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--batch-size", type=int, default=32, help="inputs per model call while attacking")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--no-slowdown", action="store_true", help="skip the slowdown attack and its timing")
    p.add_argument("--replay-rule", default=None,
                   help="exit rule whose slowdown inputs are written for replay (default: the model's saved "
                        "rule if it exits early, else patience 2 or the first patience)")
    p.add_argument("--write-attacked", default=None, metavar="FILE",
                   help="JSON Lines of the attacked inputs (one /predict 'inputs' value per line; the clean "
                        "inputs go to FILE with '.clean' before the suffix; with several --model, '-<task>' "
                        "is added to the name). Default: docs/robustness/attacked-<task>.jsonl beside the "
                        "page")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3; --quick: 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up rounds (default 1; --quick: 0)")
    p.add_argument("--block-examples", type=int, default=16,
                   help="a configuration runs this many consecutive examples before the next takes its turn")
    p.add_argument("--max-contention", type=float, default=0.05,
                   help="a round during which other tasks waited for a CPU more than this share is re-run")
    p.add_argument("--max-retries", type=int, default=None,
                   help="re-runs of disturbed rounds (default 3; --quick: 0)")
    p.add_argument("--quiet-timeout", type=float, default=None,
                   help="before each round wait up to this many seconds for a quiet CPU (default 60; "
                        "--quick: 0)")
    p.add_argument("--output", default=None,
                   help="JSON report (default: docs/robustness.json; --quick: a temporary folder)")
    p.add_argument("--markdown", default=None,
                   help="page (default: docs/robustness.md; --quick: a temporary folder)")
    p.add_argument("--render-only", action="store_true",
                   help="attack nothing: render --markdown from --output")
    p.add_argument("--quick", action="store_true", help="4 examples, 2 patiences, one round, into a temp dir")
    return p


def fail(message: str) -> None:
    """A one-line error and exit code 2."""
    print(f"robustness.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_settings(args: argparse.Namespace) -> None:
    """Fill in the --quick-dependent defaults and refuse bad values (one line, exit code 2)."""
    quick = args.quick
    defaults = {"max_examples": (4, 100), "repeats": (1, 3), "warmup": (0, 1), "max_retries": (0, 3),
                "quiet_timeout": (0.0, 60.0)}
    for name, (q, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, q if quick else full)
    if not args.model:
        fail("give --model TASK=RUN_DIR (e.g. --model RTE=runs/minilm-rte), or --render-only")
    tasks = [t.name for t, _ in args.model]
    if len(set(tasks)) != len(tasks):
        fail("one --model per task")
    for _task, folder in args.model:
        if not is_pabee_folder(folder):
            fail(f"{folder} is not a trained pabee run folder (no pabee_config.json)")
    positive = {"--max-examples": args.max_examples, "--repeats": args.repeats, "--threads": args.threads,
                "--batch-size": args.batch_size, "--max-edit-distance": args.max_edit_distance,
                "--max-queries": args.max_queries, "--per-transform": args.per_transform,
                "--block-examples": args.block_examples}
    for flag, value in positive.items():
        if value < 1:
            fail(f"{flag} must be >= 1, got {value}")
    if args.max_words is not None and args.max_words < 1:
        fail(f"--max-words must be >= 1, got {args.max_words}")
    if args.max_seq_length < 2 or args.warmup < 0 or args.max_retries < 0 or args.quiet_timeout < 0:
        fail("--max-seq-length must be >= 2; --warmup, --max-retries and --quiet-timeout >= 0")
    if not 0 <= args.max_contention <= 1:
        fail("--max-contention must be in [0, 1]")
    if args.patience is not None and any(p < 1 for p in args.patience):
        fail("--patience values must be >= 1 (full depth is always attacked)")
    args.matched = [k.strip() for k in args.matched.split(",") if k.strip()]
    for kind in args.matched:
        if kind not in MATCHED_KINDS:
            fail(f"--matched takes {' and '.join(MATCHED_KINDS)}, got {kind!r}")
    if args.replay_rule is not None:
        try:
            args.replay_rule = str(ExitRule.parse(args.replay_rule))
        except (TypeError, ValueError) as err:
            fail(f"--replay-rule: {err}")


def command_line(argv: list[str]) -> str:
    """The command that regenerates a run: this script (relative to the working directory when inside it)."""
    script = Path(__file__).resolve()
    try:
        script_text = str(script.relative_to(Path.cwd().resolve()))
    except ValueError:
        script_text = str(script)
    return shlex.join(["python", script_text, *argv])


def log(msg: str) -> None:
    print(f"[robustness] {msg}", file=sys.stderr, flush=True)


def replay_rule(args, model, settings: list[dict]) -> str | None:
    """The early-exit setting whose slowdown inputs are written for replay."""
    from pabee.predictor import saved_exit_rule

    early = [s["rule"] for s in settings if s["rule"] != "patience:0"]
    if not early:
        return None
    if args.replay_rule is not None:
        if args.replay_rule not in early:
            fail(f"--replay-rule {args.replay_rule} is not an attacked early-exit setting "
                 f"({', '.join(early)})")
        return args.replay_rule
    saved = str(saved_exit_rule(model.pabee_config))
    return next((r for r in (saved, "patience:2") if r in early), early[0])


def replay_paths(args, task: TaskSpec, markdown: Path, model_name: str) -> tuple[Path, Path]:
    """(attacked file, clean file) of one task; by default named after the task and the model (``model_name``, e.g.
    ``bert6``), so attacking another model on the same task does not overwrite the first one's inputs."""
    if args.write_attacked:
        path = Path(args.write_attacked)
        if len(args.model) > 1:
            path = path.with_name(f"{path.stem}-{task.name}{path.suffix}")
    else:
        path = markdown.parent / "robustness" / f"attacked-{task.name}-{model_name}.jsonl"
    return path, path.with_name(f"{path.stem}.clean{path.suffix}")


def write_replay(args, task, markdown: Path, settings: list[dict], rule: str | None,
                 inputs: list, model_name: str) -> dict | None:
    if rule is None:
        return None
    part = next(s["slowdown"] for s in settings if s["rule"] == rule)
    attacked_path, clean_path = replay_paths(args, task, markdown, model_name)
    attacked_path.parent.mkdir(parents=True, exist_ok=True)
    as_json = [json.dumps(r["attacked_input"], ensure_ascii=False) for r in part["examples"]]
    atomic_write_text(attacked_path, "\n".join(as_json) + "\n")
    clean = [json.dumps(x if isinstance(x, str) else list(x), ensure_ascii=False) for x in inputs]
    atomic_write_text(clean_path, "\n".join(clean) + "\n")
    log(f"wrote {len(as_json)} attacked inputs ({rule}) to {attacked_path}, the clean ones to {clean_path}")
    return {"rule": rule, "attacked_file": str(attacked_path), "clean_file": str(clean_path),
            "lines": len(as_json)}


def run_task(args, task: TaskSpec, folder: str, argv: list[str], markdown: Path) -> dict:
    """Calibrate, attack, time one model. Returns its report."""
    from transformers import AutoTokenizer

    from pabee.modeling import PabeeForSequenceClassification

    load_start, started = os.getloadavg()[0], time.perf_counter()
    glue = find_glue_dir(task, args.task_dir)
    if glue is None:
        fail(f"no GLUE folder found for {task.folder} (give --task-dir or set GLUE_DIR)")
    split = task.dev_splits[0]
    try:
        dev = read_glue_split(task, glue, split)
    except DataError as err:
        fail(str(err))
    model = PabeeForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if model.num_labels != task.num_labels:
        fail(f"{folder} has {model.num_labels} labels but {task.folder} has {task.num_labels}")
    L = model.num_layers
    patiences = args.patience
    if patiences is None:  # 1..L-2: patience L-1 exits only at layer L, which is full depth
        patiences = list(range(1, max(L - 1, 2)))[: 2 if args.quick else None]
    inputs_all = [e.text_a if e.text_b is None else (e.text_a, e.text_b) for e in dev]
    labels_all = np.array([label_to_id(task, e.label) for e in dev])
    shared = LayerLogits(model, tokenizer, args.max_seq_length, args.batch_size)
    log(f"{task.folder}: {folder} (L={L}); calibrating on {len(dev)} {split} examples ...")
    with torch.inference_mode():
        dev_logits = shared(inputs_all)
    settings = plan_settings(dev_logits, labels_all, sorted(set(patiences)), args.matched)
    calibration_s = time.perf_counter() - started
    n = min(args.max_examples, len(dev))
    inputs, labels, keys = inputs_all[:n], [int(y) for y in labels_all[:n]], [e.guid for e in dev[:n]]
    budget = Budget(args.max_edit_distance, args.max_words, args.max_queries, args.per_transform)
    log(f"{len(settings)} settings: {', '.join(s['label'] for s in settings)}; {n} examples")
    run_attacks(model, tokenizer, shared, settings, inputs, labels, keys, budget, args.seed, args, log,
                "misclassification")
    timing, replay = None, None
    if not args.no_slowdown:
        run_attacks(model, tokenizer, shared, settings, inputs, labels, keys, budget, args.seed, args, log,
                    "slowdown")
        timing = time_slowdown(model, tokenizer, settings, inputs, labels, args, log)
        replay = write_replay(args, task, markdown, settings, replay_rule(args, model, settings), inputs,
                              f"{model.config.model_type}{L}")
    words = [len(_target(x).split()) for x in inputs]
    pair = not isinstance(inputs[0], str)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "command": command_line(argv), "cwd": str(Path.cwd()), "machine": machine_info(),
        "load_average": [load_start, os.getloadavg()[0]], "wall_seconds": time.perf_counter() - started,
        "calibration_seconds": calibration_s,
        "model": {"path": str(folder), "model_type": model.config.model_type, "num_layers": L,
                  "num_labels": model.num_labels, "pooling": model.pabee_config.pooling},
        "data": {"task": task.folder, "tsv": str(Path(glue) / f"{split}.tsv"), "split": split,
                 "dev_size": len(dev), "num_examples": n, "pair": pair,
                 "mean_target_words": float(np.mean(words)),
                 "perturbed_text": "second text (sentence2 / hypothesis)" if pair else "sentence"},
        "settings": {"seed": args.seed, "max_edit_distance": args.max_edit_distance,
                     "max_words": args.max_words, "max_queries": args.max_queries,
                     "per_transform": args.per_transform, "threads": args.threads,
                     "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
                     "patience": patiences,
                     "matched": args.matched, "quick": args.quick, "repeats": args.repeats,
                     "warmup": args.warmup, "block_examples": args.block_examples,
                     "max_contention": args.max_contention,
                     "max_retries": args.max_retries, "quiet_timeout_s": args.quiet_timeout},
        "model_inputs_run": shared.computed, "model_inputs_reused": shared.reused,
        "results": settings, "timing": timing, "replay": replay,
    }


def _target(item) -> str:
    return item if isinstance(item, str) else item[1]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    default_dir = REPO_ROOT / "docs"
    if args.quick and not args.render_only and (args.output is None or args.markdown is None):
        default_dir = Path(tempfile.mkdtemp(prefix="pabee-robustness-"))
    out_json = Path(args.output) if args.output else default_dir / "robustness.json"
    out_md = Path(args.markdown) if args.markdown else default_dir / "robustness.md"
    try:
        reports = read_reports(out_json, "robustness")
    except PageError as err:
        fail(str(err))
    if not args.render_only:
        check_settings(args)
        torch.set_num_threads(args.threads)
        for task, folder in args.model:
            report = run_task(args, task, folder, argv, out_md)
            reports = replace_run(reports, report, key=lambda r: (r["data"]["task"], r["model"]["path"]))  # as each is done
            write_reports(out_json, reports)
    if not reports["runs"]:
        fail(f"{out_json} holds no runs to render")
    write_page(out_md, render_markdown(reports))
    log(f"wrote {out_md}" + ("" if args.render_only else f" and {out_json}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
