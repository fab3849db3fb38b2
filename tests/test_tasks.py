"""Tests for the GLUE task table."""

from __future__ import annotations

import pytest

from pabee.tasks import TASKS, TaskSpec, custom_task, get_task, task_names

EXPECTED = {
    # name: (folder, label_list, metric_names, main_metric)
    "cola": ("CoLA", ("0", "1"), ("mcc",), "mcc"),
    "sst-2": ("SST-2", ("0", "1"), ("acc",), "acc"),
    "mrpc": ("MRPC", ("0", "1"), ("acc", "f1"), "acc"),
    "sts-b": ("STS-B", None, ("pearson", "spearmanr"), "pearson"),
    "qqp": ("QQP", ("0", "1"), ("acc", "f1"), "acc"),
    "mnli": ("MNLI", ("contradiction", "entailment", "neutral"), ("acc",), "acc"),
    "qnli": ("QNLI", ("entailment", "not_entailment"), ("acc",), "acc"),
    "rte": ("RTE", ("entailment", "not_entailment"), ("acc",), "acc"),
    "wnli": ("WNLI", ("0", "1"), ("acc",), "acc"),
}


def test_task_names_in_glue_order():
    assert task_names() == list(EXPECTED)
    assert list(TASKS) == list(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_table_entries(name):
    folder, labels, metrics, main = EXPECTED[name]
    spec = get_task(name)
    assert spec.name == name
    assert spec.folder == folder
    assert spec.label_list == labels
    assert spec.metric_names == metrics
    assert spec.main_metric == main
    assert spec.is_regression is (labels is None)
    assert spec.num_labels == (1 if labels is None else len(labels))
    assert len(spec.submission_names) == len(spec.test_splits)


def test_splits_and_submission_names():
    mnli = get_task("mnli")
    assert mnli.dev_splits == ("dev_matched", "dev_mismatched")
    assert mnli.test_splits == ("test_matched", "test_mismatched")
    assert mnli.submission_names == ("MNLI-m", "MNLI-mm")
    assert mnli.splits == ("train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched")
    for name in ("cola", "sst-2", "mrpc", "sts-b", "qqp", "qnli", "rte", "wnli"):
        spec = get_task(name)
        assert spec.dev_splits == ("dev",)
        assert spec.test_splits == ("test",)
        assert spec.submission_names == (spec.folder,)


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("sst2", "sst-2"),
        ("SST-2", "sst-2"),
        ("stsb", "sts-b"),
        ("STS-B", "sts-b"),
        ("sts_b", "sts-b"),
        ("MNLI", "mnli"),
        ("CoLA", "cola"),
        (" rte ", "rte"),
        ("Qqp", "qqp"),
    ],
)
def test_get_task_aliases(alias, name):
    assert get_task(alias).name == name


def test_unknown_task_message():
    with pytest.raises(ValueError) as info:
        get_task("squad")
    message = str(info.value)
    assert "\n" not in message
    assert "'squad'" in message
    for name in EXPECTED:
        assert name in message


def test_num_labels():
    assert get_task("mnli").num_labels == 3
    assert get_task("sts-b").num_labels == 1
    assert get_task("mrpc").num_labels == 2


def test_task_spec_is_frozen():
    spec = get_task("rte")
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]


def test_custom_task_defaults():
    binary = custom_task(["neg", "pos"])
    assert binary.name == "custom"
    assert binary.label_list == ("neg", "pos")
    assert binary.metric_names == ("acc", "f1")
    assert binary.main_metric == "acc"
    assert binary.num_labels == 2

    three = custom_task(("a", "b", "c"))
    assert three.metric_names == ("acc",)

    regression = custom_task(None)
    assert regression.is_regression
    assert regression.metric_names == ("pearson", "spearmanr")
    assert regression.main_metric == "pearson"
    assert regression.num_labels == 1


def test_custom_task_explicit_metrics():
    spec = custom_task(["0", "1"], metric_names=["mcc", "acc"])
    assert spec.metric_names == ("mcc", "acc")
    assert spec.main_metric == "mcc"
    spec = custom_task(["0", "1"], metric_names=["acc", "mcc"], main_metric="mcc")
    assert spec.main_metric == "mcc"
    assert custom_task([0, 1]).label_list == ("0", "1")


@pytest.mark.parametrize(
    ("labels", "metrics", "fragment"),
    [
        (["a", "b", "c"], ["f1"], "exactly 2 labels"),
        (["a", "b"], ["pearson"], "not a classification metric"),
        (None, ["acc"], "not a regression metric"),
        (["a", "b"], ["bleu"], "bleu"),
        (["a"], None, "at least 2 labels"),
        (["a", "a"], None, "duplicate"),
        (["a", "b"], [], "empty"),
    ],
)
def test_custom_task_rejects(labels, metrics, fragment):
    with pytest.raises(ValueError, match=fragment):
        custom_task(labels, metric_names=metrics)


def test_main_metric_must_be_listed():
    with pytest.raises(ValueError, match="main_metric"):
        custom_task(["a", "b"], metric_names=["acc"], main_metric="f1")
    with pytest.raises(ValueError, match="submission names"):
        TaskSpec("x", "X", ("0", "1"), ("acc",), "acc", test_splits=("test",), submission_names=())
