"""Tests for the GLUE / custom readers and the prediction writer, on small fixtures in the real layouts."""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

from pabee.data import (
    DataError,
    Example,
    example_index,
    infer_label_list,
    label_to_id,
    load_glue_from_hub,
    read_custom_file,
    read_glue_split,
    write_glue_predictions,
)
from pabee.tasks import custom_task, get_task

BOM = "\ufeff"


def write_tsv(folder: Path, split: str, rows: list[list[str]], bom: bool = False) -> Path:
    """Write rows as a GLUE .tsv file (tab-joined, no quoting) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.tsv"
    text = "".join("\t".join(row) + "\n" for row in rows)
    path.write_text((BOM if bom else "") + text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------------------
# Every GLUE layout


def test_cola_without_header(tmp_path):
    folder = tmp_path / "CoLA"
    write_tsv(
        folder,
        "train",
        [
            ["gj04", "1", "", "Our friends won't buy this analysis."],
            ["gj04", "0", "*", 'The more he "reads, the less.'],
            ["cj99", "1", "", ""],
        ],
    )
    examples = read_glue_split(get_task("cola"), folder, "train")
    assert examples == [
        Example("train-0", "Our friends won't buy this analysis.", None, "1"),
        Example("train-1", 'The more he "reads, the less.', None, "0"),
        Example("train-2", "", None, "1"),  # empty text is allowed
    ]


def test_cola_test_has_header(tmp_path):
    folder = tmp_path / "CoLA"
    write_tsv(folder, "test", [["index", "sentence"], ["0", "Bill whistled past the house."], ["1", "A b."]])
    examples = read_glue_split(get_task("cola"), folder, "test")
    assert examples == [
        Example("test-0", "Bill whistled past the house.", None, None),
        Example("test-1", "A b.", None, None),
    ]


def test_sst2(tmp_path):
    folder = tmp_path / "SST-2"
    write_tsv(folder, "dev", [["sentence", "label"], ["a charming journey . ", "1"], ["bleak ", "0"]])
    write_tsv(
        folder, "test", [["index", "sentence"], ["0", "uneasy mishmash ."], ["1", "a poor imitation ."]]
    )
    assert read_glue_split(get_task("sst-2"), folder, "dev") == [
        Example("dev-0", "a charming journey . ", None, "1"),
        Example("dev-1", "bleak ", None, "0"),
    ]
    test = read_glue_split(get_task("sst2"), folder, "test")
    assert [(e.guid, e.text_a, e.label) for e in test] == [
        ("test-0", "uneasy mishmash .", None),
        ("test-1", "a poor imitation .", None),
    ]


def test_mrpc_with_bom(tmp_path):
    folder = tmp_path / "MRPC"
    header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    write_tsv(
        folder,
        "dev",
        [
            header,
            ["1", "1355540", "1355592", "He said .", '" The pie .'],
            ["0", "2029631", "2029565", "A .", "B ."],
        ],
        bom=True,
    )
    write_tsv(
        folder,
        "test",
        [
            ["index", "#1 ID", "#2 ID", "#1 String", "#2 String"],
            ["0", "1089874", "1089925", "PCCW .", "Current ."],
        ],
    )
    assert read_glue_split(get_task("mrpc"), folder, "dev") == [
        Example("dev-0", "He said .", '" The pie .', "1"),
        Example("dev-1", "A .", "B .", "0"),
    ]
    assert read_glue_split(get_task("mrpc"), folder, "test") == [
        Example("test-0", "PCCW .", "Current .", None)
    ]


STSB_HEADER = [
    "index",
    "genre",
    "filename",
    "year",
    "old_index",
    "source1",
    "source2",
    "sentence1",
    "sentence2",
]


def test_stsb_float_labels(tmp_path):
    folder = tmp_path / "STS-B"
    write_tsv(
        folder,
        "dev",
        [
            [*STSB_HEADER, "score"],
            [
                "0",
                "main-captions",
                "MSRvid",
                "2012test",
                "0000",
                "none",
                "none",
                "A man.",
                "A man dances.",
                "5.000",
            ],
            [
                "1",
                "main-captions",
                "MSRvid",
                "2012test",
                "0002",
                "none",
                "none",
                "A child.",
                "A kid.",
                "4.750",
            ],
            ["2", "main-news", "MSRpar", "2012test", "0003", "none", "none", "X.", "Y.", "0"],
        ],
    )
    write_tsv(
        folder,
        "test",
        [
            STSB_HEADER,
            ["7", "main-captions", "MSRvid", "2012test", "0024", "none", "none", "A girl.", "A lady."],
        ],
    )
    dev = read_glue_split(get_task("sts-b"), folder, "dev")
    assert [e.label for e in dev] == [5.0, 4.75, 0.0]
    assert all(isinstance(e.label, float) for e in dev)
    assert dev[0] == Example("dev-0", "A man.", "A man dances.", 5.0)
    assert read_glue_split(get_task("stsb"), folder, "test") == [
        Example("test-7", "A girl.", "A lady.", None)
    ]


def test_qqp(tmp_path):
    folder = tmp_path / "QQP"
    write_tsv(
        folder,
        "train",
        [
            ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
            ["133273", "213221", "213222", "How is the life?", "How is life?", "0"],
            ["402555", "536040", "536041", "Why?", "Why not?", "1"],
        ],
    )
    write_tsv(folder, "test", [["id", "question1", "question2"], ["0", "Would you?", "Could you?"]])
    assert read_glue_split(get_task("qqp"), folder, "train") == [
        Example("train-133273", "How is the life?", "How is life?", "0"),
        Example("train-402555", "Why?", "Why not?", "1"),
    ]
    assert read_glue_split(get_task("qqp"), folder, "test") == [
        Example("test-0", "Would you?", "Could you?", None)
    ]


def test_qqp_rows_with_missing_fields_are_skipped_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "QQP"
    write_tsv(
        folder,
        "train",
        [
            ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
            ["1", "2", "3", "q1", "q2", "0"],
            ["4", "5", "6", "only one question"],
        ],
    )
    with caplog.at_level("WARNING", logger="pabee.data"):
        examples = read_glue_split(get_task("qqp"), folder, "train")
    assert [e.guid for e in examples] == ["train-1"]
    assert "skipped 1 malformed row(s) (first at line 3)" in caplog.text


MNLI_PREFIX = [
    "index",
    "promptID",
    "pairID",
    "genre",
    "sentence1_binary_parse",
    "sentence2_binary_parse",
    "sentence1_parse",
    "sentence2_parse",
    "sentence1",
    "sentence2",
]


def mnli_row(index: str, premise: str, hypothesis: str, *labels: str) -> list[str]:
    return [
        index,
        "31193",
        f"{index}n",
        "government",
        "( ( x ) )",
        "( y )",
        "(ROOT x)",
        "(ROOT y)",
        premise,
        hypothesis,
        *labels,
    ]


def test_mnli_train_dev_and_test(tmp_path):
    folder = tmp_path / "MNLI"
    write_tsv(
        folder,
        "train",
        [[*MNLI_PREFIX, "label1", "gold_label"], mnli_row("0", "P0.", "H0.", "neutral", "neutral")],
    )
    dev_header = [*MNLI_PREFIX, "label1", "label2", "label3", "label4", "label5", "gold_label"]
    write_tsv(
        folder,
        "dev_matched",
        [
            dev_header,
            mnli_row("0", "The new rights are nice.", "Everyone loves them.", *["neutral"] * 5, "neutral"),
            mnli_row(
                "1",
                "This site includes.",
                "The site has.",
                "entailment",
                *["contradiction"] * 4,
                "contradiction",
            ),
            mnli_row("2", "uh i don't know.", "I like it.", *["entailment"] * 5, "entailment"),
        ],
    )
    write_tsv(
        folder,
        "dev_mismatched",
        [dev_header, mnli_row("9", "Your contribution.", "You gave.", *["entailment"] * 5, "entailment")],
    )
    write_tsv(
        folder,
        "test_matched",
        [MNLI_PREFIX, mnli_row("0", "Hierbas.", "Hierbas is."), mnli_row("1", "A.", "")],
    )
    mnli = get_task("mnli")

    assert read_glue_split(mnli, folder, "train") == [Example("train-0", "P0.", "H0.", "neutral")]
    matched = read_glue_split(mnli, folder, "dev_matched")
    assert [e.label for e in matched] == ["neutral", "contradiction", "entailment"]
    assert matched[1] == Example("dev_matched-1", "This site includes.", "The site has.", "contradiction")
    mismatched = read_glue_split(mnli, folder, "dev_mismatched")
    assert mismatched == [Example("dev_mismatched-9", "Your contribution.", "You gave.", "entailment")]
    test = read_glue_split(mnli, folder, "test_matched")
    assert test == [
        Example("test_matched-0", "Hierbas.", "Hierbas is.", None),
        Example("test_matched-1", "A.", "", None),
    ]
    assert [example_index(e) for e in test] == ["0", "1"]


def test_qnli(tmp_path):
    folder = tmp_path / "QNLI"
    write_tsv(
        folder,
        "dev",
        [
            ["index", "question", "sentence", "label"],
            ["0", "What came into force?", "The treaty came.", "entailment"],
            ["1", "Who?", "Nobody.", "not_entailment"],
        ],
    )
    write_tsv(folder, "test", [["index", "question", "sentence"], ["0", "What?", "This."]])
    assert read_glue_split(get_task("qnli"), folder, "dev") == [
        Example("dev-0", "What came into force?", "The treaty came.", "entailment"),
        Example("dev-1", "Who?", "Nobody.", "not_entailment"),
    ]
    assert read_glue_split(get_task("qnli"), folder, "test") == [Example("test-0", "What?", "This.", None)]


@pytest.mark.parametrize(
    ("name", "labels"), [("rte", ["not_entailment", "entailment"]), ("wnli", ["0", "1"])]
)
def test_rte_and_wnli(tmp_path, name, labels):
    folder = tmp_path / get_task(name).folder
    write_tsv(
        folder,
        "dev",
        [
            ["index", "sentence1", "sentence2", "label"],
            ["0", "Dana Reeve died.", "Reeve had an accident.", labels[0]],
            ["1", "Bacteria mutate.", "Bacteria win.", labels[1]],
        ],
    )
    write_tsv(folder, "test", [["index", "sentence1", "sentence2"], ["0", "Mangla.", "Shukla."]])
    assert read_glue_split(get_task(name), folder, "dev") == [
        Example("dev-0", "Dana Reeve died.", "Reeve had an accident.", labels[0]),
        Example("dev-1", "Bacteria mutate.", "Bacteria win.", labels[1]),
    ]
    assert read_glue_split(name, folder, "test") == [Example("test-0", "Mangla.", "Shukla.", None)]


def test_columns_found_by_header_name(tmp_path):
    # extra and reordered columns are fine when the header names them
    folder = tmp_path / "RTE"
    write_tsv(
        folder,
        "dev",
        [["label", "extra", "sentence2", "sentence1", "index"], ["entailment", "x", "H.", "P.", "4"]],
    )
    assert read_glue_split(get_task("rte"), folder, "dev") == [Example("dev-4", "P.", "H.", "entailment")]


def test_crlf_line_endings(tmp_path):
    folder = tmp_path / "SST-2"
    folder.mkdir()
    (folder / "dev.tsv").write_bytes(b"sentence\tlabel\r\ngood .\t1\r\n")
    assert read_glue_split(get_task("sst-2"), folder, "dev") == [Example("dev-0", "good .", None, "1")]


def test_label_to_id():
    assert label_to_id(get_task("mnli"), "contradiction") == 0
    assert label_to_id(get_task("mnli"), "neutral") == 2
    assert label_to_id(get_task("rte"), "not_entailment") == 1
    assert label_to_id(get_task("mrpc"), "1") == 1
    assert label_to_id(get_task("sts-b"), 3.5) == 3.5
    assert isinstance(label_to_id(get_task("sts-b"), "4"), float)
    with pytest.raises(ValueError, match="not one of"):
        label_to_id(get_task("mrpc"), "2")
    with pytest.raises(ValueError, match="no label"):
        label_to_id(get_task("mrpc"), None)


# ------------------------------------------------------------------------------------------------------------
# GLUE errors


def test_missing_folder(tmp_path):
    missing = tmp_path / "nope" / "MRPC"
    with pytest.raises(DataError, match="not found") as info:
        read_glue_split(get_task("mrpc"), missing, "dev")
    assert str(missing) in str(info.value)


def test_missing_file_lists_folder_contents(tmp_path):
    folder = tmp_path / "MNLI"
    write_tsv(folder, "dev_matched", [["x"]])
    write_tsv(folder, "train", [["x"]])
    with pytest.raises(DataError) as info:
        read_glue_split(get_task("mnli"), folder, "dev")
    message = str(info.value)
    assert "\n" not in message
    assert str(folder / "dev.tsv") in message
    assert "dev_matched.tsv, train.tsv" in message


def test_missing_file_hints_at_task_folder(tmp_path):
    write_tsv(tmp_path / "RTE", "dev", [["index", "sentence1", "sentence2", "label"]])
    with pytest.raises(DataError, match="did you mean"):
        read_glue_split(get_task("rte"), tmp_path, "dev")


def test_empty_file(tmp_path):
    for name, folder in (("cola", "CoLA"), ("rte", "RTE")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "dev.tsv").write_text("")
        with pytest.raises(DataError, match="empty"):
            read_glue_split(get_task(name), tmp_path / folder, "dev")


def test_header_only_file(tmp_path):
    write_tsv(tmp_path / "RTE", "dev", [["index", "sentence1", "sentence2", "label"]])
    with pytest.raises(DataError, match="no data rows"):
        read_glue_split(get_task("rte"), tmp_path / "RTE", "dev")


def test_wrong_field_count_names_file_and_line(tmp_path):
    folder = tmp_path / "RTE"
    path = write_tsv(
        folder,
        "dev",
        [
            ["index", "sentence1", "sentence2", "label"],
            ["0", "a", "b", "entailment"],
            ["1", "a", "entailment"],
        ],
    )
    with pytest.raises(DataError) as info:
        read_glue_split(get_task("rte"), folder, "dev")
    assert str(info.value) == f"{path}:3: expected 4 tab-separated fields, found 3"


def test_wrong_field_count_headerless_cola(tmp_path):
    folder = tmp_path / "CoLA"
    path = write_tsv(folder, "dev", [["gj04", "1", "", "ok"], ["gj04", "1", "a", "b", "extra"]])
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(path))}:2: expected 4 tab-separated fields, found 5$"
    ):
        read_glue_split(get_task("cola"), folder, "dev")


def test_bad_label(tmp_path):
    folder = tmp_path / "MRPC"
    header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    path = write_tsv(folder, "dev", [header, ["1", "1", "2", "a", "b"], ["x", "1", "2", "a", "b"]], bom=True)
    with pytest.raises(DataError) as info:
        read_glue_split(get_task("mrpc"), folder, "dev")
    assert str(info.value) == f"{path}:3: label 'x' is not one of ['0', '1'] for task mrpc"


def test_bad_float(tmp_path):
    folder = tmp_path / "STS-B"
    row = ["0", "g", "f", "2012", "0", "none", "none", "a", "b"]
    path = write_tsv(folder, "dev", [[*STSB_HEADER, "score"], [*row, "1.5"], [*row, "high"]])
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:3: score 'high' is not a number"):
        read_glue_split(get_task("sts-b"), folder, "dev")
    write_tsv(folder, "dev", [[*STSB_HEADER, "score"], [*row, "nan"]])
    with pytest.raises(DataError, match=":2: score 'nan' is not a finite number"):
        read_glue_split(get_task("sts-b"), folder, "dev")


def test_missing_column_is_named(tmp_path):
    folder = tmp_path / "MNLI"
    write_tsv(
        folder, "dev_matched", [["index", "sentence1", "sentence2", "label1"], ["0", "a", "b", "neutral"]]
    )
    with pytest.raises(DataError, match="missing column 'gold_label'"):
        read_glue_split(get_task("mnli"), folder, "dev_matched")


def test_unknown_task_name():
    with pytest.raises(ValueError, match="unknown task 'squad'"):
        read_glue_split("squad", ".", "dev")


def test_custom_task_has_no_glue_layout(tmp_path):
    with pytest.raises(DataError, match="read_custom_file"):
        read_glue_split(custom_task(["a", "b"]), tmp_path, "dev")


# ------------------------------------------------------------------------------------------------------------
# Custom files


def test_custom_csv_with_quoting(tmp_path):
    path = tmp_path / "reviews.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "other", "label"])
        writer.writerow(["a", 'Good, "really" good', "x", "pos"])
        writer.writerow(["b", "line one\nline two", "y", "neg"])
    examples = read_custom_file(path, ["text"], "label", label_list=["neg", "pos"])
    assert examples == [
        Example("reviews-0", 'Good, "really" good', None, "pos"),
        Example("reviews-1", "line one\nline two", None, "neg"),
    ]
    assert infer_label_list(examples) == ("neg", "pos")


def test_custom_tsv_pairs_and_unlabeled(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text('premise\thypothesis\n" quoted start\tsecond\nthird\t\n', encoding="utf-8")
    examples = read_custom_file(path, ["premise", "hypothesis"], None)
    assert examples == [
        Example("pairs-0", '" quoted start', "second", None),
        Example("pairs-1", "third", "", None),
    ]


def test_custom_jsonl_int_labels_become_strings(tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [{"s": "good", "y": 1}, {"s": "bad", "y": 0}, {"s": "fine", "y": "1"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    examples = read_custom_file(path, ["s"], "y")
    assert [e.label for e in examples] == ["1", "0", "1"]
    assert examples[0] == Example("data-0", "good", None, "1")


def test_custom_json_array_and_regression(tmp_path):
    path = tmp_path / "scores.json"
    path.write_text(json.dumps([{"a": "x", "b": "y", "score": 2.5}, {"a": "z", "b": "w", "score": "1"}]))
    examples = read_custom_file(path, ["a", "b"], "score", regression=True)
    assert [e.label for e in examples] == [2.5, 1.0]
    with pytest.raises(DataError, match="infer|string|regression"):
        infer_label_list(examples)


def test_custom_regression_bad_value(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("text,score\na,1.0\nb,lots\n")
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(path))}:3: label 'lots' in column 'score' is not a number$"
    ):
        read_custom_file(path, ["text"], "score", regression=True)


def test_custom_label_not_in_list(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,pos\nb,meh\n")
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(path))}:3: label 'meh' is not one of \['neg', 'pos'\]$"
    ):
        read_custom_file(path, ["text"], "label", label_list=["neg", "pos"])


def test_custom_missing_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("sentence,label\na,1\n")
    with pytest.raises(DataError) as info:
        read_custom_file(path, ["text"], "label")
    message = str(info.value)
    assert "missing column 'text'" in message
    assert "sentence, label" in message

    jpath = tmp_path / "d.jsonl"
    jpath.write_text('{"text": "a", "label": 1}\n{"text": "b"}\n')
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(jpath))}:2: missing column 'label' \(columns: text\)$"
    ):
        read_custom_file(jpath, ["text"], "label")


def test_custom_bad_json_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": \n')
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: invalid JSON"):
        read_custom_file(path, ["text"], "label")
    path.write_text('{"text": "a", "label": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: expected a JSON object"):
        read_custom_file(path, ["text"], "label")


def test_custom_unknown_extension(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_text("x")
    with pytest.raises(DataError, match="unknown file extension '.parquet'"):
        read_custom_file(path, ["text"], "label")


def test_custom_other_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_custom_file(tmp_path / "none.csv", ["text"], "label")
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,1,extra\n")
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(path))}:2: expected 2 comma-separated fields, found 3$"
    ):
        read_custom_file(path, ["text"], "label")
    path.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_custom_file(path, ["text"], "label")
    path.write_text("text,label\na,\n")
    with pytest.raises(DataError, match="empty label"):
        read_custom_file(path, ["text"], "label")
    with pytest.raises(DataError, match="1 or 2 columns"):
        read_custom_file(path, ["a", "b", "c"], "label")


def test_infer_label_list():
    def ex(label):
        return Example("x-0", "t", None, label)

    assert infer_label_list([ex("b"), ex("a"), ex("b"), ex(None)]) == ("a", "b")
    # integer-looking labels sort numerically
    assert infer_label_list([ex("10"), ex("2"), ex("1")]) == ("1", "2", "10")
    with pytest.raises(DataError, match="no labels"):
        infer_label_list([ex(None)])


# ------------------------------------------------------------------------------------------------------------
# Prediction writer


def read_back(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="\t", quotechar=None))


def test_write_predictions_round_trip(tmp_path):
    folder = tmp_path / "MNLI"
    write_tsv(
        folder,
        "test_matched",
        [MNLI_PREFIX, mnli_row("0", "A.", "B."), mnli_row("1", "C.", "D."), mnli_row("2", "E.", "F.")],
    )
    mnli = get_task("mnli")
    examples = read_glue_split(mnli, folder, "test_matched")
    out = tmp_path / "submission" / "MNLI-m.tsv"
    result = write_glue_predictions(mnli, examples, [1, 0, 2], out)
    assert result == out
    assert read_back(out) == [
        ["index", "prediction"],
        ["0", "entailment"],
        ["1", "contradiction"],
        ["2", "neutral"],
    ]
    assert sorted(p.name for p in out.parent.iterdir()) == ["MNLI-m.tsv"]  # no temp file left behind


def test_write_predictions_regression_and_binary(tmp_path):
    examples = [Example("test-3", "a", "b", None), Example("test-10", "c", "d", None)]
    out = write_glue_predictions(get_task("sts-b"), examples, [4.12345, 0.5], tmp_path / "STS-B.tsv")
    assert out.read_text() == "index\tprediction\n3\t4.123\n10\t0.500\n"
    out = write_glue_predictions(get_task("mrpc"), examples, [1, 0], tmp_path / "MRPC.tsv")
    assert out.read_text() == "index\tprediction\n3\t1\n10\t0\n"
    # overwrite in place
    write_glue_predictions(get_task("mrpc"), examples, [0, 0], out)
    assert out.read_text() == "index\tprediction\n3\t0\n10\t0\n"


def test_write_predictions_errors(tmp_path):
    examples = [Example("test-0", "a", None, None)]
    with pytest.raises(ValueError, match="1 examples but 2 predictions"):
        write_glue_predictions(get_task("sst-2"), examples, [0, 1], tmp_path / "x.tsv")
    with pytest.raises(ValueError, match="not a label id"):
        write_glue_predictions(get_task("sst-2"), examples, [2], tmp_path / "x.tsv")
    with pytest.raises(ValueError, match="not a label id"):
        write_glue_predictions(get_task("sst-2"), examples, [0.5], tmp_path / "x.tsv")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------------------
# Hugging Face hub (error paths, plus the column mapping against a stand-in `datasets` module)


def test_hub_without_datasets_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(DataError) as info:
        load_glue_from_hub(get_task("rte"), "dev")
    message = str(info.value)
    assert "\n" not in message
    assert "--data_dir" in message
    assert "pip install datasets" in message


def test_hub_load_failure_is_one_line(monkeypatch):
    def load_dataset(*args, **kwargs):
        raise ConnectionError("Couldn't reach the hub\nsecond line of details")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(DataError) as info:
        load_glue_from_hub(get_task("mrpc"), "dev")
    message = str(info.value)
    assert "\n" not in message
    assert "Couldn't reach the hub" in message
    assert "--data_dir" in message


class _FakeDataset(list):
    def __init__(self, rows, names):
        super().__init__(rows)
        self.features = {"label": types.SimpleNamespace(names=names)}


def test_hub_column_mapping(monkeypatch):
    calls = []

    def load_dataset(path, config, split):
        calls.append((path, config, split))
        if config == "mnli":
            # the hub orders MNLI classes differently from the GLUE processors
            rows = [
                {"premise": "P.", "hypothesis": "H.", "label": 0, "idx": 0},
                {"premise": "Q.", "hypothesis": "I.", "label": 2, "idx": 1},
                {"premise": "R.", "hypothesis": "J.", "label": -1, "idx": 2},
            ]
            return _FakeDataset(rows, ["entailment", "neutral", "contradiction"])
        if config == "stsb":
            return _FakeDataset([{"sentence1": "a", "sentence2": "b", "label": 3.2, "idx": 5}], None)
        return _FakeDataset([{"sentence": "s", "label": 1, "idx": 0}], ["unacceptable", "acceptable"])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    mnli = load_glue_from_hub(get_task("mnli"), "dev_mismatched")
    assert mnli == [
        Example("dev_mismatched-0", "P.", "H.", "entailment"),
        Example("dev_mismatched-1", "Q.", "I.", "contradiction"),
        Example("dev_mismatched-2", "R.", "J.", None),
    ]
    assert load_glue_from_hub("sts-b", "train") == [Example("train-5", "a", "b", 3.2)]
    assert load_glue_from_hub("cola", "test") == [Example("test-0", "s", None, "1")]
    assert [c[1:] for c in calls] == [("mnli", "validation_mismatched"), ("stsb", "train"), ("cola", "test")]
    with pytest.raises(DataError, match="unknown split 'dev'"):
        load_glue_from_hub("mnli", "dev")


def test_hub_offline_with_real_datasets(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        examples = load_glue_from_hub(get_task("wnli"), "dev")
    except DataError as err:
        assert "--data_dir" in str(err)
        assert "\n" not in str(err)
    else:  # a warm local cache can serve the split even offline
        assert len(examples) == 71


# ------------------------------------------------------------------------------------------------------------
# Real GLUE data (never copied into the repository)


def _glue_dir() -> Path:
    env = os.environ.get("GLUE_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "glue")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    pytest.skip("real GLUE data not found (set GLUE_DIR or place shared/glue next to the repository)")


@pytest.mark.slow
def test_real_glue_row_counts():
    root = _glue_dir()
    expected = {
        "cola": (8551, 1043, 1063),
        "sst-2": (67349, 872, 1821),
        "mrpc": (3668, 408, 1725),
        "sts-b": (5749, 1500, 1379),
        "rte": (2490, 277, 3000),
        "wnli": (635, 71, 146),
    }
    for name, (n_train, n_dev, n_test) in expected.items():
        task = get_task(name)
        folder = root / task.folder
        if not folder.is_dir():
            pytest.skip(f"{folder} not found")
        train = read_glue_split(task, folder, "train")
        dev = read_glue_split(task, folder, "dev")
        test = read_glue_split(task, folder, "test")
        assert (len(train), len(dev), len(test)) == (n_train, n_dev, n_test), name
        assert all(e.label is not None for e in train + dev)
        assert all(e.label is None for e in test)
        assert len({e.guid for e in test}) == n_test
        if name == "mrpc":
            assert Counter(e.label for e in dev) == {"1": 279, "0": 129}
        if name == "sts-b":
            assert all(isinstance(e.label, float) and 0.0 <= e.label <= 5.0 for e in dev)
