"""Builders for tiny on-disk fixtures: a random BERT with its tokenizer, and GLUE-format task folders."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

WORDS = "the a cat dog sat on mat man is not good bad movie great film plot slow fun sad happy".split()


def save_tiny_bert(folder: Path, layers: int = 4, seed: int = 0) -> Path:
    """A randomly initialised 4-layer BERT (hidden 32) and a word-level vocab, saved like a hub checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, ".", ",", "!", "?", "'", "-"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=37, max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) + "."


def _label(task: str, text: str, rng: random.Random) -> str:
    """A label that mostly follows the text (so a tiny model can learn it), sometimes random."""
    signal = ("good" in text or "great" in text) if rng.random() < 0.85 else rng.random() < 0.5
    if task == "STS-B":
        return f"{(3.5 if signal else 1.0) + rng.uniform(-1, 1):.3f}"
    if task == "MNLI":
        return "entailment" if signal else rng.choice(["contradiction", "neutral"])
    if task in ("QNLI", "RTE"):
        return "entailment" if signal else "not_entailment"
    return "1" if signal else "0"


def _rows(task: str, split: str, n: int, rng: random.Random) -> list[list[str]]:
    """Header (if any) + n rows in the task's real GLUE layout."""
    test = split.startswith("test")
    s, lab = _sentence, _label
    rows: list[list[str]] = []
    for i in range(n):
        a, b = s(rng), s(rng)
        y = lab(task, a, rng)
        if task == "CoLA":
            rows.append([str(i), a] if test else ["gj04", y, "" if y == "1" else "*", a])
        elif task == "SST-2":
            rows.append([str(i), a] if test else [a, y])
        elif task == "MRPC":
            rows.append([str(i), "1", "2", a, b] if test else [y, "1", "2", a, b])
        elif task == "STS-B":
            base = [str(i), "main-news", "f", "2012", "0001", "none", "none", a, b]
            rows.append(base if test else [*base, y])
        elif task == "QQP":
            rows.append([str(i), a, b] if test else [str(i), "1", "2", a, b, y])
        elif task == "MNLI":
            base = [str(i), "1", "1e", "fiction", "(x)", "(y)", "(X)", "(Y)", a, b]
            rows.append(base if test else [*base, y, y])
        else:  # QNLI, RTE, WNLI
            rows.append([str(i), a, b] if test else [str(i), a, b, y])
    header = {
        "CoLA": None if not test else ["index", "sentence"],
        "SST-2": ["index", "sentence"] if test else ["sentence", "label"],
        "MRPC": (["index", "#1 ID", "#2 ID", "#1 String", "#2 String"] if test
                 else ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]),
        "STS-B": ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]
        + ([] if test else ["score"]),
        "QQP": ["id", "question1", "question2"] if test else ["id", "qid1", "qid2", "question1", "question2",
                                                             "is_duplicate"],
        "MNLI": ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                 "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"] + ([] if test else ["label1",
                                                                                                   "gold_label"]),
        "QNLI": ["index", "question", "sentence"] + ([] if test else ["label"]),
    }.get(task, ["index", "sentence1", "sentence2"] + ([] if test else ["label"]))
    return ([header] if header else []) + rows


SPLITS = {"MNLI": ["train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched"]}


def write_glue_task(root: Path, task: str, n: int = 24, seed: int = 0) -> Path:
    """A GLUE-format folder root/<task> with train/dev/test files of ``n`` random rows each."""
    rng = random.Random(seed)
    folder = root / task
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS.get(task, ["train", "dev", "test"]):
        text = "\n".join("\t".join(row) for row in _rows(task, split, n, rng)) + "\n"
        (folder / f"{split}.tsv").write_text(("\ufeff" if task == "MRPC" else "") + text, encoding="utf-8")
    return folder


GLUE_TASKS = ["CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI"]


def load_script(path: Path, name: str):
    """Import a script outside the package (e.g. ``benchmarks/report.py``) as module ``name``; it is registered in
    ``sys.modules`` first, where dataclasses look their module up."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
