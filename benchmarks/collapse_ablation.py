"""The controlled experiment behind the pooling and classifier-learning-rate defaults (docs/glue-minilm.md).

A plain training loop (AdamW, linear schedule with 10 % warm-up, batch 32, gradient clipping) on the first
--train-examples pairs of a GLUE task, scored per layer on the first --dev-examples dev pairs. Only the variant's
settings change between runs:

    python benchmarks/collapse_ablation.py --variant plain             # BertForSequenceClassification, one head
    python benchmarks/collapse_ablation.py --pooling cls --weighting linear --head-lr-ratio 1   # the first runs
    python benchmarks/collapse_ablation.py --pooling mean --weighting last --head-lr-ratio 1
    python benchmarks/collapse_ablation.py --pooling mean --weighting linear --head-lr-ratio 20  # today's defaults
"""

from __future__ import annotations

import argparse
import math
import random
import sys

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pabee import PabeeForSequenceClassification
from pabee.data import default_model_path, find_glue_dir, read_glue_split
from pabee.features import pad_batch, tokenize_examples
from pabee.metrics import compute_metrics
from pabee.tasks import get_task


def build_model(args, num_labels: int):
    if args.variant == "plain":
        return AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=num_labels)
    return PabeeForSequenceClassification.from_pretrained(
        args.model, num_labels=num_labels, pooling=args.pooling, loss_weighting=args.weighting
    )


def optimizer_for(model, args) -> torch.optim.Optimizer:
    heads = [p for n, p in model.named_parameters() if n.startswith("classifier")]  # "classifier." / "classifiers."
    body = [p for n, p in model.named_parameters() if not n.startswith("classifier")]
    groups = [{"params": body, "lr": args.lr}, {"params": heads, "lr": args.lr * args.head_lr_ratio}]
    return torch.optim.AdamW(groups, lr=args.lr, weight_decay=0.01)


def layer_logits(model, features, plain: bool) -> torch.Tensor:
    """(L,N,C) logits of every classifier (L = 1 for the plain model) on the dev slice."""
    model.eval()
    chunks = []
    with torch.no_grad():
        for start in range(0, len(features), 64):
            batch = pad_batch(features, list(range(start, min(start + 64, len(features)))), 0)
            chunks.append(model(**batch).logits[None] if plain else model(**batch, output_all_layers=True).all_logits)
    return torch.cat(chunks, dim=1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=["plain", "pabee"], default="pabee")
    p.add_argument("--pooling", choices=["cls", "mean"], default="mean")
    p.add_argument("--weighting", choices=["linear", "uniform", "last"], default="linear")
    p.add_argument("--head-lr-ratio", type=float, default=20.0)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--task", default="STS-B")
    p.add_argument("--model", default=None, help="default: the embedded MiniLM-L6")
    p.add_argument("--train-examples", type=int, default=1500)
    p.add_argument("--dev-examples", type=int, default=400)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.model = args.model or default_model_path()

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    task = get_task(args.task)
    folder = find_glue_dir(task, None)
    tok = AutoTokenizer.from_pretrained(args.model)
    train = tokenize_examples(tok, task, read_glue_split(task, folder, "train")[: args.train_examples], 128)
    dev = tokenize_examples(tok, task, read_glue_split(task, folder, task.dev_splits[0])[: args.dev_examples], 128)
    model = build_model(args, task.num_labels)
    optimizer = optimizer_for(model, args)
    steps = args.epochs * math.ceil(len(train) / 32)
    warmup = int(0.1 * steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / max(1, warmup), max(0.0, (steps - s) / max(1, steps - warmup)))
    )
    label_dtype = torch.float if task.is_regression else torch.long
    model.train()
    for epoch in range(args.epochs):
        order = list(range(len(train)))
        random.shuffle(order)
        for start in range(0, len(order), 32):
            rows = order[start : start + 32]
            labels = torch.tensor([train.labels[i] for i in rows], dtype=label_dtype)
            loss = model(**pad_batch(train, rows, 0), labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
        print(f"epoch {epoch + 1}: last batch loss {loss.item():.3f}", flush=True)

    logits = layer_logits(model, dev, plain=args.variant == "plain")
    for i, layer in enumerate(logits):
        pred = layer[:, 0].numpy() if task.is_regression else layer.argmax(-1).numpy()
        scores = compute_metrics(task, pred, np.array(dev.labels))
        shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
        print(f"layer {i + 1 if args.variant == 'pabee' else 'last'}: {shown}; prediction std {np.std(pred):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
