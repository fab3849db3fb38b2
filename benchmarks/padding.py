"""Evaluation throughput at batch size 1: pabee's pipeline (no padding, early exit) vs a pipeline that pads every
example to max_seq_length and runs full depth (what the reference script's evaluation does).

    python benchmarks/padding.py --model runs/minilm-rte --task RTE --patience 3 --num-examples 200

Writes docs/padding-<task>.json and prints a small table. Every figure comes from the run. The three pipelines are
interleaved example by example (the order rotating), so a slow spell of a shared machine hits them alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer

from pabee.data import find_glue_dir, read_glue_split
from pabee.features import Features, tokenize_examples
from pabee.modeling import PabeeForSequenceClassification
from pabee.tasks import get_task
from pabee.timing import time_interleaved_batches

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a fine-tuned pabee folder")
    p.add_argument("--task", default="RTE")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--num-examples", type=int, default=200)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--output", default=None, help="default: docs/padding-<task>.json")
    args = p.parse_args(argv)

    task = get_task(args.task)
    folder = find_glue_dir(task, args.data_dir)
    examples = read_glue_split(task, folder, task.dev_splits[0])[: args.num_examples]
    tok = AutoTokenizer.from_pretrained(args.model)
    model = PabeeForSequenceClassification.from_pretrained(args.model)
    feats: Features = tokenize_examples(tok, task, examples, args.max_seq_length)
    dynamic = [
        {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
         **({"token_type_ids": torch.tensor([feats.token_type_ids[i]])} if feats.token_type_ids else {})}
        for i, ids in enumerate(feats.input_ids)
    ]
    padded = []
    for e in examples:
        enc = tok(e.text_a, e.text_b, truncation=True, max_length=args.max_seq_length, padding="max_length",
                  return_tensors="pt")
        padded.append(dict(enc))

    class FullLength(torch.nn.Module):
        """The padded pipeline: all max_seq_length columns through every layer (no trimming, no early exit)."""

        def forward(self, input_ids, attention_mask, token_type_ids=None, patience=None):
            hidden = model.encode(input_ids, attention_mask, token_type_ids)
            padded = None if bool(attention_mask.all()) else attention_mask
            return model._classify(model.classifiers[-1], hidden, model._pool_input(hidden, padded))

    full_length = FullLength()
    configs = {
        "padded to max_seq_length, full depth": (full_length, padded, 0),
        "pabee, no padding, full depth": (model, dynamic, 0),
        f"pabee, no padding, patience {args.patience}": (model, dynamic, args.patience),
    }
    def call(m, batches, patience):
        return lambda j: m(**batches[j], patience=patience)

    fns = {name: call(m, batches, patience) for name, (m, batches, patience) in configs.items()}
    with torch.inference_mode():
        timed = time_interleaved_batches(fns, list(range(len(examples))), warmup=1, repeats=args.repeats)
    times = {name: list(result.runs) for name, result in timed.results.items()}
    base = sum(times["padded to max_seq_length, full depth"]) / args.repeats
    rows = []
    print(f"{task.name}: {len(examples)} dev examples at batch size 1, {args.repeats} repeats")
    for name, values in times.items():
        mean = sum(values) / len(values)
        rows.append({"pipeline": name, "seconds_mean": mean, "seconds_all": values,
                     "examples_per_second": len(examples) / mean, "speedup_vs_padded": base / mean})
        print(f"  {name:42s} {len(examples) / mean:7.1f} ex/s  x{base / mean:.2f} vs padded")
    result = {"command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]), "model": args.model,
              "task": task.name, "num_examples": len(examples), "repeats": args.repeats,
              "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
              "rows": rows}
    output = Path(args.output or REPO / "docs" / f"padding-{task.folder.lower()}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
