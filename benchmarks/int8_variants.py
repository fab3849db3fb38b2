#!/usr/bin/env python
"""int8 quantization variants of a model's plain single-graph ONNX export (the computation of ``pabee export``'s
layer graphs at full depth), on a GLUE dev set: the task metric at batch sizes 1 and 32, agreement with the fp32
graph's predictions, the mean |logit change| and a rough speed at batch size 1 (CPU time of one thread,
interleaved, relative to the first variant: noisy on a shared machine).

    python benchmarks/int8_variants.py --model RUN_FOLDER [--task RTE] [--output docs/int8.json]

Adds (or replaces) the (model, task) run in the JSON and renders every run into a Markdown page beside it
(``docs/int8.md``). The variant names say which settings of
``onnxruntime.quantization.quantize_dynamic`` they use; ``pabee export --quantize int8`` uses
``pabee.onnx.export.INT8_SETTINGS`` ("per-channel 7-bit").
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.runtime_measure import make_batches  # noqa: E402
from benchmarks.speed import glue_task  # noqa: E402
from pabee.data import find_glue_dir, read_glue_split  # noqa: E402
from pabee.features import tokenize_examples  # noqa: E402
from pabee.metrics import compute_metrics  # noqa: E402
from pabee.onnx.export import INT8_SETTINGS, export_full_depth_graph, load_model_for_export, quantize_graph  # noqa: E402
from pabee.onnx.runtime import load_session  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
BASE = {"weight_type": "QInt8", "per_channel": False, "reduce_range": False, "op_types": ["MatMul"],
        "extra_options": {"MatMulConstBOnly": True}}


def variants(matmuls: list[str], num_layers: int) -> dict[str, tuple[dict, list[str]]]:
    """name -> (quantize_graph settings, MatMul nodes left in fp32). Node names are the torchscript exporter's
    module paths (BERT family: ``/layer.<i>/...``)."""
    ffn_out = [n for n in matmuls if n.endswith("/output/dense/MatMul") and "/attention/" not in n]
    edge = [n for n in matmuls if n.startswith(("/layer.0/", f"/layer.{num_layers - 1}/"))]
    channel = {**BASE, "per_channel": True}
    return {
        "per-tensor 8-bit (the old default)": (BASE, []),
        "per-tensor 7-bit (reduce_range)": ({**BASE, "reduce_range": True}, []),
        "per-channel 8-bit": (channel, []),
        "per-channel 7-bit (pabee export default)": (dict(INT8_SETTINGS), []),
        "QUInt8 weights, per-tensor": ({**BASE, "weight_type": "QUInt8"}, []),
        "QUInt8 weights, per-channel": ({**channel, "weight_type": "QUInt8"}, []),
        "per-channel 8-bit, FFN output MatMuls fp32": (channel, ffn_out),
        "per-tensor 8-bit, first and last layer fp32": (BASE, edge),
    }


def quantize(source: Path, target: Path, settings: dict, exclude: list[str]) -> None:
    if not exclude:
        quantize_graph(source, target, settings)
        return
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, target, op_types_to_quantize=settings["op_types"],
                     weight_type=QuantType[settings["weight_type"]], per_channel=settings["per_channel"],
                     reduce_range=settings["reduce_range"], extra_options=dict(settings["extra_options"]),
                     nodes_to_exclude=exclude)


def predict(session, batches, n: int) -> np.ndarray:
    logits = None
    for batch in batches:
        out = session.run(["logits"], batch.arrays)[0]
        if logits is None:
            logits = np.zeros((n, out.shape[1]), dtype=np.float32)
        logits[batch.indices] = out
    return logits


def cpu_seconds(sessions: dict, batches, rounds: int) -> dict[str, list[float]]:
    """Per-round CPU time of this thread (the sessions run with one intra-op thread), variants interleaved in
    blocks of 16 batches, the order rotating."""
    names = list(sessions)
    times = {name: [0.0] * rounds for name in names}
    for r in range(rounds + 1):  # round 0: warm-up
        for start in range(0, len(batches), 16):
            k = (r + start // 16) % len(names)
            for name in names[k:] + names[:k]:
                t = time.thread_time()
                for batch in batches[start : start + 16]:
                    sessions[name].run(["logits"], batch.arrays)
                if r:
                    times[name][r - 1] += time.thread_time() - t
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a fine-tuned pabee run folder")
    parser.add_argument("--task", type=glue_task, default="RTE")
    parser.add_argument("--task-dir", default=None, help="the task's GLUE folder or the GLUE root")
    parser.add_argument("--speed-examples", type=int, default=96, help="dev examples timed at batch size 1")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds")
    parser.add_argument("--output", default=str(REPO_ROOT / "docs" / "int8.json"))
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    folder = find_glue_dir(args.task, args.task_dir)
    if folder is None:
        raise SystemExit(f"no GLUE folder found for {args.task.folder} (give --task-dir or set GLUE_DIR)")
    split = args.task.dev_splits[0]
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    features = tokenize_examples(tokenizer, args.task, read_glue_split(args.task, folder, split), 128)
    model = load_model_for_export(args.model)
    types = model.driver.uses_token_type_ids
    n, labels = len(features), np.asarray(features.labels)
    by_size = {bs: make_batches(features, bs, tokenizer.pad_token_id or 0, types) for bs in (1, 32)}
    rows, sessions = [], {}
    with tempfile.TemporaryDirectory(prefix="pabee-int8-") as tmp:
        source = export_full_depth_graph(model, Path(tmp) / "fp32.onnx")
        import onnx

        graph = onnx.load(str(source)).graph
        matmuls = [node.name for node in graph.node if node.op_type == "MatMul"]
        fp32 = load_session(source, threads=1)
        reference = {bs: predict(fp32, batches, n) for bs, batches in by_size.items()}
        metric = args.task.main_metric

        def score(logits):
            predictions = logits[:, 0] if args.task.is_regression else logits.argmax(1)
            return float(compute_metrics(args.task, predictions, labels)[metric])

        fp32_row = {"name": "fp32", **{f"{metric}_bs{bs}": score(reference[bs]) for bs in by_size}}
        for k, (name, (settings, exclude)) in enumerate(variants(matmuls, model.num_layers).items()):
            path = Path(tmp) / f"v{k}.onnx"
            quantize(source, path, settings, exclude)
            sessions[name] = load_session(path, threads=1)
            row = {"name": name, "settings": settings, "fp32_nodes": len(exclude), "mib": path.stat().st_size / 2**20}
            for bs, batches in by_size.items():
                logits = predict(sessions[name], batches, n)
                row[f"{metric}_bs{bs}"] = score(logits)
                row[f"agree_bs{bs}"] = float((logits.argmax(1) == reference[bs].argmax(1)).mean())
                row[f"mean_abs_logit_change_bs{bs}"] = float(np.abs(logits - reference[bs]).mean())
            rows.append(row)
            print(f"[int8] {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()
                                                 if isinstance(v, float)), file=sys.stderr, flush=True)
        times = cpu_seconds(sessions, by_size[1][: args.speed_examples], args.rounds)
        first = rows[0]["name"]
        for row in rows:
            row["speed_vs_first"] = statistics.median(a / b for a, b in zip(times[first], times[row["name"]]))
            row["examples_per_cpu_second"] = args.speed_examples / statistics.median(times[row["name"]])
    report = {"model": str(args.model), "task": args.task.folder, "split": split, "num_examples": n,
              "metric": metric, "fp32": fp32_row, "variants": rows, "speed_examples": args.speed_examples,
              "rounds": args.rounds, "command": "python benchmarks/int8_variants.py " + " ".join(sys.argv[1:])}
    out = Path(args.output)
    runs = json.loads(out.read_text(encoding="utf-8"))["runs"] if out.is_file() else []
    runs = [r for r in runs if (r["model"], r["task"]) != (report["model"], report["task"])] + [report]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "int8_variants", "runs": runs}, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(render(runs), encoding="utf-8")
    print(render([report]))
    return 0


def render(runs: list[dict]) -> str:
    """The Markdown page: one table per (model, task) run."""
    lines = [
        "# int8 quantization variants",
        "",
        "Generated by `benchmarks/int8_variants.py` (the commands are under each table): a model's plain "
        "single-graph export (the computation of the pabee layer graphs at full depth) quantized with ONNX "
        "Runtime's `quantize_dynamic` in each variant, scored on a GLUE dev set. Activations are quantized per "
        "tensor at run time, over the whole padded batch, so a row's int8 result depends on the other rows of its "
        "batch: batch sizes 1 and 32 differ (fp32 gives the same logits at both, to 1e-6). Speed: CPU time of one "
        "thread at batch size 1, variants interleaved, median of the rounds, relative to the first variant (rough: "
        "other processes share the caches). `pabee export --quantize int8` uses the variant marked as its default.",
    ]
    for report in runs:
        m, fp32 = report["metric"], report["fp32"]
        lines += [
            "",
            f"## `{report['model']}`, {report['task']} {report['split']} ({report['num_examples']} examples)",
            "",
            f"`{report['command']}`; fp32: {m} {100 * fp32[f'{m}_bs1']:.1f} at batch size 1, "
            f"{100 * fp32[f'{m}_bs32']:.1f} at batch size 32; speed on {report['speed_examples']} examples, "
            f"{report['rounds']} rounds.",
            "",
            f"| variant | {m} bs 1 | {m} bs 32 | agrees with fp32 (bs 1 / 32) | mean abs logit change (bs 1) | "
            "speed (bs 1) | MiB |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in report["variants"]:
            lines.append(
                f"| {r['name']} | {100 * r[f'{m}_bs1']:.1f} | {100 * r[f'{m}_bs32']:.1f} | "
                f"{100 * r['agree_bs1']:.1f} % / {100 * r['agree_bs32']:.1f} % | "
                f"{r['mean_abs_logit_change_bs1']:.3f} | {r['speed_vs_first']:.2f}× | {r['mib']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
