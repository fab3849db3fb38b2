"""The speed benchmark's measurements: the timed configurations (plain backbone, PABEE wrapper at each patience,
truncation at PABEE's own exit layers), interleaved on the same batches, and the figures computed from them.

:func:`measure` does every timing of one invocation and returns the JSON-ready part of the report it gives.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from pabee.exit_rules import ExitRule
from pabee.modeling import PabeeForSequenceClassification
from pabee.timing import TimingResult, mean_std, paired_ratios, time_interleaved_batches

from .machine import cpu_stall_seconds, wait_for_quiet

OVERHEAD_TARGET_PCT = 3.0  # the wrapper at patience 0 may cost at most this much more than the plain backbone
RATIO_TARGET_BATCH1 = 0.95  # wall-clock speed-up / layer speed-up at batch size 1
RATIO_TARGET_BATCHED = 0.85  # ... at larger batch sizes


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
