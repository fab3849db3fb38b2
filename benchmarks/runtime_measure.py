"""The runtime benchmark's measurements: torch, a plain single-graph ONNX export and pabee on ONNX Runtime (fp32
and int8), at full depth and every patience, interleaved on the same batches.

:func:`export_all` writes the four ONNX artifacts of a model; :func:`measure` does every timing of one model and
returns the JSON-ready part of its report.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pabee.features import Features, pad_batch
from pabee.metrics import compute_metrics
from pabee.onnx.export import INT8_SETTINGS, export_full_depth_graph, export_onnx, load_model_for_export
from pabee.onnx.runtime import PabeeOnnxModel, load_session
from pabee.tasks import TaskSpec
from pabee.timing import TimingResult, mean_std, paired_ratios, time_interleaved_batches

from .machine import cpu_stall_seconds, wait_for_quiet
from .speed_measure import block_size

PRECISIONS = ("fp32", "int8")


@dataclasses.dataclass
class Batch:
    """One batch: torch tensors for the torch model, the same values as numpy arrays for ONNX Runtime (made once,
    not timed), and the examples' indices."""

    tensors: dict[str, torch.Tensor]
    arrays: dict[str, np.ndarray]
    indices: list[int]


def make_batches(features: Features, batch_size: int, pad_token_id: int, token_types: bool) -> list[Batch]:
    """Consecutive examples in dataset order, each batch padded to its longest member."""
    batches = []
    for start in range(0, len(features), batch_size):
        indices = list(range(start, min(start + batch_size, len(features))))
        tensors = pad_batch(features, indices, pad_token_id)
        if not token_types:
            tensors.pop("token_type_ids", None)
        batches.append(Batch(tensors, {k: v.numpy() for k, v in tensors.items()}, indices))
    return batches


def export_all(run_dir: str, folder: Path, log: Callable[[str], None]) -> dict:
    """pabee exports (fp32, int8) and plain single-graph exports (fp32, int8) of ``run_dir`` into ``folder``, both
    int8 ones quantized with the same settings (:data:`pabee.onnx.export.INT8_SETTINGS`, what ``pabee export
    --quantize int8`` uses): {"paths": ..., "seconds": ..., "mib": ..., "int8_settings": ...}."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, seconds, sizes = {}, {}, {}
    for precision in PRECISIONS:
        start = time.perf_counter()
        out = export_onnx(run_dir, folder / f"pabee-{precision}", quantize=None if precision == "fp32" else precision)
        seconds[f"pabee-{precision}"] = time.perf_counter() - start
        paths[f"pabee-{precision}"] = str(out)
        sizes[f"pabee-{precision}"] = sum(p.stat().st_size for p in out.glob("*.onnx")) / 2**20
    model = load_model_for_export(run_dir)
    for precision in PRECISIONS:
        start = time.perf_counter()
        path = export_full_depth_graph(model, folder / f"full-{precision}.onnx",
                                       quantize=None if precision == "fp32" else precision)
        seconds[f"full-{precision}"] = time.perf_counter() - start
        paths[f"full-{precision}"] = str(path)
        sizes[f"full-{precision}"] = path.stat().st_size / 2**20
    log("exported: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    return {"paths": paths, "seconds": seconds, "mib": sizes, "int8_settings": dict(INT8_SETTINGS)}


def build_configs(model, exports: dict, patiences: list[int], threads: int, spinning: bool = True) -> dict[str, dict]:
    """name -> {"fn": batch -> (logits, exit layers or None), "backend", "precision", "patience", "reference"}."""
    configs: dict[str, dict] = {}

    def torch_fn(p):
        def run(batch: Batch):
            out = model(**batch.tensors, patience=p)
            return out.logits.numpy(), out.exit_layers.numpy()

        return run

    for p in [0, *patiences]:
        configs[f"torch p{p}"] = {"fn": torch_fn(p), "backend": "torch", "precision": "fp32", "patience": p}
    for precision in PRECISIONS:
        session = load_session(exports["paths"][f"full-{precision}"], threads, spinning=spinning)

        def full_fn(batch: Batch, session=session):
            return session.run(["logits"], batch.arrays)[0], None

        configs[f"onnx-full {precision}"] = {"fn": full_fn, "backend": "onnx-full", "precision": precision,
                                             "patience": 0}
    for precision in PRECISIONS:
        onnx_model = PabeeOnnxModel.from_pretrained(exports["paths"][f"pabee-{precision}"], threads=threads,
                                                    spinning=spinning)
        for p in [0, *patiences]:
            def pabee_fn(batch: Batch, onnx_model=onnx_model, p=p):
                out = onnx_model(**batch.arrays, patience=p)
                return out.logits, out.exit_layers

            configs[f"pabee-onnx {precision} p{p}"] = {"fn": pabee_fn, "backend": "pabee-onnx",
                                                       "precision": precision, "patience": p}
    return configs


def untimed_pass(fn, batches: list[Batch], n: int, num_layers: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N,C) and exit layers (N,) of one configuration over every batch (full-depth graphs: layer L)."""
    logits, exits = None, np.full(n, num_layers, dtype=np.int64)
    for batch in batches:
        out, layers = fn(batch)
        if logits is None:
            logits = np.zeros((n, out.shape[1]), dtype=np.float32)
        logits[batch.indices] = out
        if layers is not None:
            exits[batch.indices] = layers
    return logits, exits


def _ratio(reference: TimingResult, t: TimingResult) -> dict:
    ratios = paired_ratios(reference, t)
    mean, std = mean_std(ratios)
    return {"ratio_of_means": reference.mean_s / t.mean_s, "paired_mean": mean, "paired_std": std}


def measure(args, model, task: TaskSpec, features: Features, pad_token_id: int, exports: dict, log) -> dict:
    """Every configuration at every batch size: metric, mean exit layer, examples per second and speed-ups."""
    L, n = model.num_layers, len(features)
    configs = build_configs(model, exports, args.patience, args.threads, not args.no_spinning)
    token_types = model.driver.uses_token_type_ids
    probe = cpu_stall_seconds if cpu_stall_seconds() is not None else None
    results, timing_rounds = [], []
    t0 = time.perf_counter()
    for bs in args.batch_sizes:
        batches = make_batches(features, bs, pad_token_id, token_types)
        start = time.perf_counter()
        outputs = {name: untimed_pass(c["fn"], batches, n, L) for name, c in configs.items()}
        one_round = time.perf_counter() - start
        log(f"batch size {bs}: one pass of every configuration took {one_round:.0f} s; timing will take about "
            f"{one_round * (args.warmup + args.repeats):.0f} s (more if rounds are re-run for contention)")
        waited: list[float] = []

        def before_round(waited=waited):
            if probe is not None and args.quiet_timeout > 0:
                waited.append(wait_for_quiet(probe, args.max_contention, timeout_s=args.quiet_timeout))

        block = block_size(args.block_examples, bs)
        log(f"batch size {bs}: {len(configs)} configurations interleaved in blocks of {block} batch(es) over "
            f"{len(batches)} batches, {args.warmup} warm-up + {args.repeats} timed round(s) ...")
        start = time.perf_counter()
        timed = time_interleaved_batches(
            {name: c["fn"] for name, c in configs.items()}, batches, warmup=args.warmup, repeats=args.repeats,
            stall_probe=probe, max_contention=args.max_contention, max_retries=args.max_retries,
            before_round=before_round, block=block,
        )
        log(f"batch size {bs}: timed in {time.perf_counter() - start:.0f} s")
        kept = timed.kept_contention()
        timing_rounds.append({
            "batch_size": bs, "rounds": [dataclasses.asdict(r) for r in timed.rounds], "discarded": timed.discarded,
            "kept_contention_max": max(kept) if kept else None, "waited_for_quiet_s": sum(waited),
        })
        torch_full = timed.results["torch p0"]
        torch_logits = outputs["torch p0"][0]
        for name, c in configs.items():
            t = timed.results[name]
            logits, exits = outputs[name]
            predictions = logits[:, 0] if task.is_regression else logits.argmax(1)
            same_torch = outputs[f"torch p{c['patience']}"]
            results.append({
                "batch_size": bs, "name": name, "backend": c["backend"], "precision": c["precision"],
                "patience": c["patience"], "num_examples": n,
                "metrics": compute_metrics(task, predictions, features.labels),
                "mean_exit_layer": float(exits.mean()),
                "exit_layer_histogram": np.bincount(exits, minlength=L + 1)[1:].tolist(),
                "time": t.to_dict(), "examples_per_second": n / t.mean_s,
                "vs_torch_full_depth": _ratio(torch_full, t),
                "vs_onnx_full_depth_same_precision": _ratio(timed.results[f"onnx-full {c['precision']}"], t),
                "agreement_with_torch_full_depth": None if task.is_regression else float(
                    (predictions == torch_logits.argmax(1)).mean()),
                "max_abs_logit_diff_vs_torch_full_depth": float(np.abs(logits - torch_logits).max())
                if c["patience"] == 0 else None,
                "exit_layers_equal_torch": bool((exits == same_torch[1]).all())
                if c["backend"] == "pabee-onnx" and c["precision"] == "fp32" else None,
            })
    return {
        "results": results, "timing_rounds": timing_rounds, "timing_wall_s": time.perf_counter() - t0,
        "contention_measured": probe is not None,
    }
