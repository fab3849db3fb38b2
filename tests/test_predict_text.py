"""pabee predict MODEL: raw-text inputs in every format, labels and exit rule from the saved model."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
import torch
from run_fixtures import save_tiny_run
from transformers import AutoTokenizer

from pabee import cli_predict
from pabee.cli import main
from pabee.cli_predict import is_raw_text_mode
from pabee.modeling import PabeeForSequenceClassification
from pabee.predictor import Predictor

TEXTS = [
    "the cat sat on the mat.",
    ("good movie", "great film"),
    "bad plot, slow and sad!",
    "",
    ("a man is happy", "the dog is not sad"),
    "fun fun fun film",
    "the movie is not good",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return save_tiny_run(tmp_path_factory.mktemp("predict") / "run", patience=2)


@pytest.fixture(scope="module")
def reference(run_dir):
    """Each input run alone through the model as saved (its default patience 2)."""
    model = PabeeForSequenceClassification.from_pretrained(run_dir)
    tok = AutoTokenizer.from_pretrained(run_dir)

    def run(items, **kw):
        probs, exits = [], []
        for item in items:
            a, b = (item, None) if isinstance(item, str) else item
            enc = tok(a, b, return_tensors="pt", truncation=True, max_length=64)
            with torch.no_grad():
                out = model(**enc, **kw)
            probs.append(torch.softmax(out.logits[0].double(), -1).numpy())
            exits.append(int(out.exit_layers[0]))
        return np.stack(probs), exits

    return model, run


def read_records(text):
    return [json.loads(line) for line in text.splitlines()]


def check_against_reference(records, items, reference, **kw):
    model, run = reference
    probs, exits = run(items, **kw)
    labels = model.config.id2label
    assert [r["index"] for r in records] == list(range(len(items)))
    assert [r["exit_layer"] for r in records] == exits
    for record, p in zip(records, probs):
        assert list(record["probabilities"]) == ["sad", "happy", "meh"]  # the model's labels, in id order
        assert np.allclose(list(record["probabilities"].values()), p, atol=1e-5)
        assert record["label"] == labels[int(np.argmax(p))]
        assert record["score"] == pytest.approx(float(p.max()), abs=1e-5)
        assert record["truncated"] is False


def predict_cli(capsys, *args):
    try:
        code = main(["predict", *map(str, args), "--no_progress"])
    except SystemExit as stop:  # argument errors exit from argparse
        code = stop.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_plain_text_with_pairs_uses_the_saved_patience(run_dir, reference, tmp_path, capsys):
    path = tmp_path / "in.txt"
    path.write_text("".join((t if isinstance(t, str) else "\t".join(t)) + "\n" for t in TEXTS), encoding="utf-8")
    code, out, err = predict_cli(capsys, run_dir, "--input", path)
    assert code == 0, err
    records = read_records(out)
    check_against_reference(records, TEXTS, reference, patience=2)
    exits = [r["exit_layer"] for r in records]
    assert min(exits) < 6 and len(set(exits)) > 1  # patience 2 really let inputs out early, at different layers
    # the saved rule was used, not full depth: --patience 0 overrides it
    code, out, _ = predict_cli(capsys, run_dir, "--input", path, "--patience", "0")
    assert code == 0 and {r["exit_layer"] for r in read_records(out)} == {6}


def test_exit_rule_override(run_dir, reference, tmp_path, capsys):
    path = tmp_path / "in.txt"
    path.write_text("good movie\nbad plot\n", encoding="utf-8")
    code, out, _ = predict_cli(capsys, run_dir, "--input", path, "--exit_rule", "layer:2")
    assert code == 0
    check_against_reference(read_records(out), ["good movie", "bad plot"], reference, exit_rule="layer:2")
    assert {r["exit_layer"] for r in read_records(out)} == {2}


def test_csv_pairs_with_quoting(run_dir, reference, tmp_path, capsys):
    path = tmp_path / "in.csv"
    path.write_text('id,first,second\n1,"good, great movie",the plot\n2,bad film,"sad ""slow"" dog"\n', encoding="utf-8")
    code, out, err = predict_cli(capsys, run_dir, "--input", path, "--text_columns", "first,second")
    assert code == 0, err
    check_against_reference(read_records(out), [("good, great movie", "the plot"), ("bad film", 'sad "slow" dog')],
                            reference)


def test_tsv_single_column(run_dir, reference, tmp_path, capsys):
    path = tmp_path / "in.tsv"
    path.write_text("sentence\tlabel\nthe cat is happy\t1\na bad movie\t0\n", encoding="utf-8")
    code, out, err = predict_cli(capsys, run_dir, "--input", path)  # default column: sentence
    assert code == 0, err
    check_against_reference(read_records(out), ["the cat is happy", "a bad movie"], reference)


def test_jsonl_to_output_file(run_dir, reference, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    rows = [{"q": "is the film good", "a": "the film is great", "n": 1}, {"q": "sad dog", "a": 7}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    target = tmp_path / "out" / "predictions.jsonl"
    target.parent.mkdir()
    code, out, err = predict_cli(capsys, run_dir, "--input", path, "--text_columns", "q,a", "--output", target)
    assert code == 0, err
    assert out == ""
    check_against_reference(read_records(target.read_text()), [("is the film good", "the film is great"),
                                                               ("sad dog", "7")], reference)
    assert [p.name for p in target.parent.iterdir()] == ["predictions.jsonl"]  # no temporary file left


def test_standard_input_streams_in_chunks(run_dir, reference, monkeypatch, capsys):
    monkeypatch.setattr(cli_predict, "CHUNK_SIZE", 3)  # 7 inputs: chunks of 3, 3 and 1
    data = "".join((t if isinstance(t, str) else "\t".join(t)) + "\n" for t in TEXTS)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data.encode())))
    code = main(["predict", str(run_dir)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    check_against_reference(read_records(captured.out), TEXTS, reference, patience=2)
    assert "7 inputs" in captured.err  # the progress bar, on stderr


def test_long_input_is_truncated_and_flagged(run_dir, tmp_path, capsys):
    path = tmp_path / "long.txt"
    path.write_text("good " * 200 + "\nshort\n", encoding="utf-8")
    code, out, _ = predict_cli(capsys, run_dir, "--input", path)
    assert code == 0
    assert [r["truncated"] for r in read_records(out)] == [True, False]


def test_regression_model_writes_values(tmp_path, capsys):
    run = save_tiny_run(tmp_path / "reg", labels=("score",), patience=1)
    path = tmp_path / "in.txt"
    path.write_text("good movie\tgreat film\nsad\n", encoding="utf-8")
    code, out, _ = predict_cli(capsys, run, "--input", path)
    assert code == 0
    records = read_records(out)
    assert all(set(r) == {"index", "value", "exit_layer", "truncated"} for r in records)
    predictor = Predictor.from_pretrained(run)
    expected = predictor.predict([("good movie", "great film"), "sad"])
    assert [r["value"] for r in records] == pytest.approx([p.value for p in expected], abs=1e-6)


@pytest.mark.parametrize(
    ("name", "content", "extra", "expected"),
    [
        ("in.csv", "a,b\nx,y\n", ["--text_columns", "text"], "missing column 'text'"),
        ("in.csv", "a,b\nx,y,z\n", [], "give the text column(s) with --text_columns"),
        ("in.tsv", "sentence\tlabel\nx\ty\tz\n", [], "in.tsv:2: expected 2 tab-separated fields, found 3"),
        ("in.jsonl", '{"text": "a"}\n{"text": \n', [], "in.jsonl:2: invalid JSON"),
        ("in.jsonl", '{"text": ["a"]}\n', [], "column 'text' holds"),
        ("in.txt", "a\tb\tc\n", [], "in.txt:1: 3 tab-separated fields"),
        ("in.txt", "a\n", ["--text_columns", "x"], "--text_columns applies to csv, tsv and jsonl"),
        ("in.txt", b"caf\xe9\n", [], "not valid UTF-8"),
        ("missing.txt", None, [], "cannot open"),
        ("in.txt", "a\n", ["--exit_rule", "entropy"], "--exit_rule: an exit rule is written 'kind:value'"),
        ("in.txt", "a\n", ["--exit_rule", "layer:2", "--patience", "1"], "either --exit_rule or --patience"),
        ("in.txt", "a\n", ["--max_length", "1000"], "more than the model's limit of 64"),
        ("in.txt", "a\n", ["--backend", "onnx"], "not an ONNX export (no pabee_onnx.json)"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(run_dir, tmp_path, capsys, name, content, extra, expected):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    target = tmp_path / "out.jsonl"
    code, _, err = predict_cli(capsys, run_dir, "--input", path, "--output", target, *extra)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], err
    assert not target.exists() and not list(tmp_path.glob(".out.jsonl.tmp*"))  # no partial output


def test_missing_model_folder(tmp_path, capsys):
    (tmp_path / "in.txt").write_text("good\n")
    code, _, err = predict_cli(capsys, tmp_path / "nope", "--input", tmp_path / "in.txt")
    assert code == 2 and err.strip() == f"pabee predict: error: model folder not found: {tmp_path / 'nope'}"


def test_mode_selection_keeps_the_glue_path():
    assert is_raw_text_mode(["predict", "runs/rte"])
    assert is_raw_text_mode(["predict", "--input", "x.txt", "runs/rte"])
    assert not is_raw_text_mode(["predict", "--task_name", "RTE", "--output_dir", "runs/rte"])
    assert not is_raw_text_mode(["eval", "runs/rte"])


def test_the_exit_rule_saved_with_a_model_is_the_default():
    from types import SimpleNamespace

    from pabee.exit_rules import ExitRule
    from pabee.predictor import saved_exit_rule

    assert saved_exit_rule(SimpleNamespace(patience=3)) == ExitRule("patience", 3)
    assert saved_exit_rule(SimpleNamespace(patience=3, exit_rule="entropy:0.3")) == ExitRule("entropy", 0.3)
    assert saved_exit_rule(SimpleNamespace(patience=0, exit_rule={"kind": "layer", "value": 2})) == ExitRule("layer", 2)


def test_predict_without_a_model_folder_keeps_the_glue_path(monkeypatch):
    import pabee.cli

    seen = {}
    monkeypatch.setattr(pabee.cli, "_execute", lambda settings, prog: seen.setdefault("settings", settings) and 0)
    assert main(["predict", "--task_name", "RTE", "--model_name_or_path", "runs/rte", "--output_dir", "out"]) == 0
    settings = seen["settings"]
    assert (settings.task_name, settings.do_predict, settings.do_eval, settings.output_dir) == ("RTE", True, False, "out")
