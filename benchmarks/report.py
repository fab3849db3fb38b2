#!/usr/bin/env python
"""Regenerate the results report: plain fine-tuning against PABEE and other exit rules, on GLUE dev sets.

    python benchmarks/report.py            # the full report into docs/results.{md,json} (many hours on 2 CPU cores)
    python benchmarks/report.py --quick    # smoke run (minutes): MiniLM, RTE, one seed, 200 training examples
    python benchmarks/report.py --render-only   # results.md and the plots again from docs/results.json

    # train first, two processes at once (one thread each), then evaluate and render with one plain invocation
    OMP_NUM_THREADS=1 python benchmarks/report.py --train-only --shard 1/2 &
    OMP_NUM_THREADS=1 python benchmarks/report.py --train-only --shard 2/2 &
    wait; python benchmarks/report.py

    # evaluate every trained run of the plan in the work dir (the same plan flags as the training) and render;
    # runs not trained yet are shown as missing, nothing is trained
    python benchmarks/report.py --evaluate-only [the training's flags without --train-only/--shard]

For every model, task and seed two models are fine-tuned with the same hyper-parameters and seed:

* ``plain``: one classifier on the last layer (loss weighting "last"), evaluated at full depth;
* ``pabee``: PABEE's joint training of every layer's classifier (the default weighting), evaluated under every
  exit rule: patience, entropy and confidence thresholds, fixed layer (regression tasks: patience at every
  regression threshold, and fixed layer), plus full depth.

Evaluation (``report_evaluate``, per run): ONE fp32 pass over the dev examples gives every layer's logits; the
metric, mean exit layer and layer speed-up of every exit setting are replayed from them with the rule objects the
model runs. Each PABEE (and distill) run is tuned (``pabee.tuning``: the fastest setting within ``--max-drop``
points of its full depth): on dev itself (optimistic) and honestly (on the held-out split of ``pabee train
--tune_split`` when the run has one, else 2-fold cross-fitting on dev). Only a few settings are timed (full depth,
the tuned ones, the fastest patience within the budget; plain runs: full depth) at batch sizes 1 and 32 on the
first ``--timing-examples`` dev examples, and for each the real early-exit inference must give the replay's
predictions and exit layers (a mismatch beyond near ties of float noise stops the report with an error).

The hyper-parameters may differ between models (``MODEL_DEFAULTS``; ``--epochs``, ``--learning-rate``,
``--max-train-samples`` and ``--batch-size`` take a value for every model or ``MODEL=VALUE`` for one). The timed
settings of a run are interleaved in blocks of consecutive batches over ``--timing-rounds`` timed rounds (eval time
= the median over the rounds, speed-up = median per-round ratio).

Each run trains into its own folder under ``--work-dir``. A folder that already holds the finished run (its
``report_eval.json`` is complete for the run's evaluation settings) is reused, so an interrupted report resumes where it stopped; a
folder whose training finished but whose evaluation did not (or that ``--train-only`` trained) is only evaluated.
``--train-only`` trains the new runs and stops there; with ``--shard K/N`` it takes only every N-th run of the plan
(from the K-th), so N processes can train disjoint parts at once. ``report_run.json`` in every run folder keeps the
run's settings, its training and evaluation seconds and how it was trained (torch threads, shard).

The stages are modules beside this script: ``report_plan`` (which runs; ``report_args`` reads the command line) ->
``report_run`` (train, or reuse) -> ``report_evaluate`` (+ ``report_replay``) -> ``report_aggregate`` (+
``report_tuned``, ``report_compare``) (means over seeds, picks, verdicts ->
``results.json``) -> ``report_render`` (``results.md`` from ``templates/results.md.j2`` and the plots under
``results/`` in ``--out-dir``). The text between ``<!-- discussion -->`` and ``<!-- /discussion -->`` in an
existing ``results.md`` is kept. Only the first dev split of a task is reported (every default task has one).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if str(Path(__file__).resolve().parents[1]) not in sys.path:  # the benchmarks package beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib  # noqa: E402
import time  # noqa: E402

from transformers.utils import logging as hf_logging  # noqa: E402

from benchmarks.report_aggregate import aggregate, hyper_parameters  # noqa: E402
from benchmarks.report_archive import archived_runs  # noqa: E402
from benchmarks.report_args import build_parser, make_config, out_dir_of, without_train_only  # noqa: E402
from benchmarks.report_plan import SCRIPT, ReportError, command_line, display_path, plan_runs  # noqa: E402
from benchmarks.report_render import format_seconds, plural, render_again, write_report  # noqa: E402
from benchmarks.report_run import run_all, train_all  # noqa: E402


def log(message: str) -> None:
    print(f"[report] {message}", flush=True)


@contextlib.contextmanager
def no_progress_bars():
    """Hide transformers' weight-loading bars (they would sit between the progress lines), then restore them."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def report(argv: list[str], started: float) -> int:
    """Plan, run (or reuse), aggregate and render; with --train-only plan and train only; with --render-only
    render only."""
    args = build_parser().parse_args(argv)
    if args.render_only:
        if args.train_only or args.shard or args.evaluate_only:
            raise ReportError("--render-only renders an existing results.json: it cannot be combined with "
                              "--train-only, --evaluate-only or --shard")
        md = render_again(out_dir_of(args))
        log(f"rendered {display_path(md)} and its plots from {display_path(md.with_name('results.json'))}")
        return 0
    config = make_config(args, argv)
    plan = plan_runs(config)
    archive = archived_runs(plan, config, {m.name: hyper_parameters(config, m.name) for m in config.models})
    if config.train_only:
        with no_progress_bars():
            trained = train_all(plan, config, log, archive)
        after = "once every shard has finished, " if config.shard else ""
        log(f"trained {plural(trained, 'run')} in {format_seconds(time.perf_counter() - started)}; nothing "
            f"evaluated. To evaluate and render the report, {after}run the same command without --train-only"
            f"{' and --shard' if config.shard else ''}: {command_line(without_train_only(argv))}")
        return 0
    with no_progress_bars():
        reused = run_all(plan, config, log, archive)
    md = write_report(aggregate(plan, reused, config, started, archive), config.out_dir)
    log(f"wrote {display_path(md)}, {display_path(config.out_dir / 'results.json')} and the plots under "
        f"{display_path(config.out_dir / 'results')} in {format_seconds(time.perf_counter() - started)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The report (see the module docstring). Returns 0, or 2 with a one-line error on stderr."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return report(argv, time.perf_counter())
    except (ReportError, ValueError, OSError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"{SCRIPT}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{SCRIPT}: interrupted; run the same command again to resume (finished runs are reused, an interrupted training continues from its last checkpoint)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
