"""End to end: a fine-tuned model's saved label names decide what its outputs mean, and --max_seq_length is capped
at what the model takes, in training, evaluation and prediction."""

import json
import random
from pathlib import Path

import pytest
import torch
from fixtures import WORDS, write_glue_task
from transformers import AutoTokenizer, RobertaConfig, RobertaModel

import pabee.run_inputs
import pabee.runner
from pabee.cli import main
from pabee.modeling import PabeeForSequenceClassification

QUIET = ["--disable_tqdm"]


def texts(n, seed=0, longest=9):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, longest))) for _ in range(n)]


def full_depth_labels(model, tokenizer, sentences):
    """What the model says for each sentence alone, through its own id2label."""
    with torch.no_grad():
        logits = torch.cat([model(**tokenizer(s, return_tensors="pt")).logits for s in sentences])
    return [model.config.id2label[int(i)] for i in logits.argmax(dim=1)], logits


@pytest.fixture(scope="module")
def pos_neg_model(tiny_bert, tmp_path_factory):
    """A pabee model whose labels are (pos, neg), in that id order (the sorted order is neg, pos), that answers
    both labels on ``texts(40)`` with a clear margin."""
    folder = tmp_path_factory.mktemp("posneg") / "model"
    torch.manual_seed(0)
    model = PabeeForSequenceClassification.from_pretrained(tiny_bert, num_labels=2, id2label={0: "pos", 1: "neg"})
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    head = model.classifiers[-1]
    head.weight.data *= 100
    _, logits = full_depth_labels(model, tokenizer, texts(40))
    diffs = sorted(set((logits[:, 0] - logits[:, 1]).tolist()))
    gaps = [(b - a, (a + b) / 2) for a, b in zip(diffs, diffs[1:])]
    middle = len(gaps) // 2
    _, cut = max(gaps[middle - 3 : middle + 3])  # a wide gap near the middle: both labels, no near-ties
    head.bias.data[0] -= cut
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_csv(path, sentences, labels=None):
    header = "text" if labels is None else "text,label"
    rows = sentences if labels is None else [f"{s},{y}" for s, y in zip(sentences, labels)]
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def records_of(output_dir):
    return json.loads((Path(output_dir) / "eval_results.json").read_text())


def test_custom_data_is_mapped_through_the_model_label_names(pos_neg_model, tmp_path):
    model = PabeeForSequenceClassification.from_pretrained(pos_neg_model)
    tokenizer = AutoTokenizer.from_pretrained(pos_neg_model)
    sentences = texts(40)
    said, _ = full_depth_labels(model, tokenizer, sentences)
    assert set(said) == {"pos", "neg"}
    gold = [("neg" if y == "pos" else "pos") if i % 4 == 0 else y for i, y in enumerate(said)]  # 3/4 agree
    expected_acc = sum(a == b for a, b in zip(said, gold)) / len(gold)
    assert expected_acc == 0.75  # read by position (sorted labels: neg = id 0) it would score 0.25

    dev = write_csv(tmp_path / "dev.csv", sentences, gold)
    order = sorted(range(40), key=lambda i: gold[i] != "neg")  # another file order: neg rows first
    dev_reordered = write_csv(tmp_path / "dev2.csv", [sentences[i] for i in order], [gold[i] for i in order])
    test = write_csv(tmp_path / "test.csv", sentences)
    accs = []
    for i, (data, extra) in enumerate([(dev, []), (dev_reordered, []), (dev, ["--label_list", "pos,neg"])]):
        out = tmp_path / f"eval{i}"
        assert main(["eval", "--model_name_or_path", str(pos_neg_model), "--validation_file", str(data),
                     "--text_columns", "text", "--output_dir", str(out), *extra, *QUIET]) == 0
        accs += [r["metrics"]["acc"] for r in records_of(out)]
    assert accs == pytest.approx([expected_acc] * 3)

    out = tmp_path / "pred"  # prediction needs no label list at all: the model has it
    assert main(["predict", "--model_name_or_path", str(pos_neg_model), "--test_file", str(test), "--text_columns",
                 "text", "--label_column", "", "--output_dir", str(out), *QUIET]) == 0
    lines = (out / "predictions" / "patience_0" / "custom.tsv").read_text().splitlines()
    assert [line.split("\t")[1] for line in lines[1:]] == said


def one_line_error(capsys):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("flipped", "pabee eval: error: --label_list neg,pos contradicts the labels of the model at {m}: pos,neg"),
        ("other_names", "pabee eval: error: --label_list yes,no contradicts the labels of the model at {m}: pos,neg"),
        ("file_label", "pabee eval: error: {d}:3: label 'yes' is not one of ['pos', 'neg'] (the labels of the model "
                       "at {m})"),
        ("regression", "pabee eval: error: --regression does not fit the model at {m}, a classifier with labels "
                       "['pos', 'neg']"),
    ],
    ids=["flipped", "other_names", "file_label", "regression"],
)
def test_labels_contradicting_the_model_are_one_line_errors(case, expected, pos_neg_model, tmp_path, monkeypatch,
                                                            capsys):
    dev = write_csv(tmp_path / "dev.csv", texts(3), ["pos", "yes" if case == "file_label" else "neg", "pos"])
    extra = {"flipped": ["--label_list", "neg,pos"], "other_names": ["--label_list", "yes,no"],
             "regression": ["--regression"]}.get(case, [])
    # refused before any model weights are loaded or anything is tokenized
    monkeypatch.setattr(pabee.runner, "tokenize_examples", lambda *a, **k: pytest.fail("tokenized"))
    monkeypatch.setattr(PabeeForSequenceClassification, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    assert main(["eval", "--model_name_or_path", str(pos_neg_model), "--validation_file", str(dev),
                 "--text_columns", "text", "--output_dir", str(tmp_path / "o"), *extra, *QUIET]) == 2
    assert one_line_error(capsys) == expected.format(m=pos_neg_model, d=dev)


def test_training_on_from_a_fine_tuned_model_keeps_its_labels(pos_neg_model, tiny_bert, tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", texts(8), ["pos", "neg"] * 4)
    base = ["train", "--train_file", str(train), "--text_columns", "text", "--max_steps", "1", "--no_eval",
            "--max_seq_length", "64", *QUIET]
    assert main([*base, "--model_name_or_path", str(pos_neg_model), "--output_dir", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "config.json").read_text())["id2label"] == {"0": "pos", "1": "neg"}
    capsys.readouterr()
    assert main([*base, "--model_name_or_path", str(pos_neg_model), "--output_dir", str(tmp_path / "b"),
                 "--label_list", "neg,pos"]) == 2
    assert "--label_list neg,pos contradicts the labels of the model at" in one_line_error(capsys)
    # from a plain encoder --label_list (or the sorted labels of the training file) still sets the ids
    assert main([*base, "--model_name_or_path", str(tiny_bert), "--output_dir", str(tmp_path / "c"),
                 "--label_list", "neg,pos"]) == 0
    assert json.loads((tmp_path / "c" / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}


def save_model(tiny_bert, folder, **labels):
    PabeeForSequenceClassification.from_pretrained(tiny_bert, num_labels=2, **labels).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    return folder


def test_glue_task_with_other_labels_is_refused(tiny_bert, tmp_path, monkeypatch, capsys):
    glue = write_glue_task(tmp_path, "MRPC", n=8)
    rte = save_model(tiny_bert, tmp_path / "rte-model", id2label={0: "entailment", 1: "not_entailment"})
    monkeypatch.setattr(pabee.run_inputs, "read_glue_split", lambda *a, **k: pytest.fail("read"))  # refused before
    capsys.readouterr()
    assert main(["eval", "--model_name_or_path", str(rte), "--task_name", "MRPC", "--data_dir", str(glue),
                 "--output_dir", str(tmp_path / "o"), *QUIET]) == 2
    assert one_line_error(capsys) == (
        f"pabee eval: error: the model at {rte} was trained with labels ['entailment', 'not_entailment'], task mrpc has "
        "['0', '1']"
    )


def test_model_saved_without_label_names_is_used_by_position_with_a_warning(tiny_bert, tmp_path):
    glue = write_glue_task(tmp_path, "MRPC", n=8)
    old = save_model(tiny_bert, tmp_path / "old-model")
    assert json.loads((old / "config.json").read_text()).get("id2label") in (None, {"0": "LABEL_0", "1": "LABEL_1"})
    with pytest.warns(UserWarning, match=rf"^the model at {old} was saved without label names \(LABEL_0, LABEL_1\): "
                                         "its outputs are taken as 0, 1, in this order$"):
        assert main(["eval", "--model_name_or_path", str(old), "--task_name", "MRPC", "--data_dir", str(glue),
                     "--output_dir", str(tmp_path / "o"), "--max_seq_length", "64", *QUIET]) == 0
    assert len(records_of(tmp_path / "o")) == 1


def save_tiny_roberta(folder, tokenizer_from):
    """A 2-layer RoBERTa with 64 positions, with the word-level test tokenizer. Its padding id is the tokenizer's
    (0, not RoBERTa's 1), so position ids run from 1: inputs of up to 63 tokens."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=37, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    RobertaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(("arch", "limit"), [("bert", 64), ("roberta", 63)])
def test_max_seq_length_is_capped_at_the_model_limit(arch, limit, tiny_bert, tmp_path, monkeypatch):
    encoder = tiny_bert if arch == "bert" else save_tiny_roberta(tmp_path / "roberta", tiny_bert)
    long_texts = texts(12, longest=150)
    data = write_csv(tmp_path / "train.csv", long_texts, ["pos", "neg"] * 6)
    lengths = []
    real = pabee.runner.tokenize_examples

    def spy(tokenizer, task, examples, max_seq_length):
        features = real(tokenizer, task, examples, max_seq_length)
        lengths.append(max(len(ids) for ids in features.input_ids))
        return features

    monkeypatch.setattr(pabee.runner, "tokenize_examples", spy)
    out = tmp_path / "out"
    common = ["--text_columns", "text", "--label_column", "label", "--max_seq_length", "1024", *QUIET]
    message = f"--max_seq_length 1024 is longer than the model at {{}} takes: using {limit}"
    with pytest.warns(UserWarning, match=message.format(encoder)) as seen:  # training, and its evaluation
        assert main(["train", "--model_name_or_path", str(encoder), "--train_file", str(data), "--validation_file",
                     str(data), "--output_dir", str(out), "--max_steps", "1", "--per_device_train_batch_size", "4",
                     *common]) == 0
    assert len([w for w in seen if "--max_seq_length" in str(w.message)]) == 1  # said once
    with pytest.warns(UserWarning, match=message.format(out)):  # evaluation and prediction of the trained model
        assert main(["eval", "--model_name_or_path", str(out), "--validation_file", str(data), "--do_predict",
                     "--test_file", str(data), *common]) == 0
    assert len(lengths) == 4 and max(lengths) == limit  # train, its dev set, then dev and test again
    predictions = (out / "predictions" / "patience_0" / "custom.tsv").read_text().splitlines()
    assert len(predictions) == 1 + len(long_texts)
