"""pabee tune RUN_DIR and the tuning pabee train ends with, end to end on a tiny BERT and a small GLUE folder:
the held-out split (not trained on, saved, rebuilt), the decision table, tuning.json, the saved default, dry runs,
and one-line errors."""

from __future__ import annotations

import json

import pytest
from fixtures import write_glue_task

import pabee.runner
from pabee.cli import main
from pabee.config import PabeeConfig
from pabee.data import read_glue_split
from pabee.exit_defaults import default_exit_rule

QUIET = ["--disable_tqdm"]


@pytest.fixture(scope="module")
def glue_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue")
    write_glue_task(root, "RTE", n=40)
    return root


@pytest.fixture(scope="module")
def tuned_at_training(tiny_bert, glue_root, tmp_path_factory):
    """pabee train --patience 1,2,3 --tune_split 0.25: trains on 30 of the 40 examples, tunes on the other 10."""
    out = tmp_path_factory.mktemp("train") / "rte"
    seen = {}
    original = pabee.runner.train

    def spy(model, tokenizer, task, features, *args, **kwargs):
        seen["trained_on"] = [tokenizer.decode(ids, skip_special_tokens=True) for ids in features.input_ids]
        return original(model, tokenizer, task, features, *args, **kwargs)

    pabee.runner.train = spy
    try:
        code = main(["train", "--model_name_or_path", str(tiny_bert), "--task_name", "RTE", "--data_dir",
                     str(glue_root / "RTE"), "--output_dir", str(out), "--max_steps", "2", "--patience", "1,2,3",
                     "--tune_split", "0.25", "--max_drop", "100", "--no_eval", "--seed", "5", *QUIET])
    finally:
        pabee.runner.train = original
    assert code == 0
    return out, seen["trained_on"]


def test_train_holds_out_tunes_and_saves_the_choice(tuned_at_training, glue_root, capsys):
    out, trained_on = tuned_at_training
    split = json.loads((out / "tune_split.json").read_text())
    assert (split["size"], split["num_training_examples"], split["seed"]) == (10, 40, 5)
    training = read_glue_split("RTE", glue_root / "RTE", "train")
    held = [training[i] for i in split["indices"]]
    assert len(trained_on) == 30 and split["guids"] == [e.guid for e in held]
    decision = json.loads((out / "tuning.json").read_text())
    assert decision["split"] == "heldout" and decision["num_examples"] == 10 and decision["dev"]["split"] == "dev"
    assert decision["max_drop_points"] == 100.0
    chosen = decision["chosen"]
    saved = default_exit_rule(PabeeConfig.load(out))
    assert str(saved) == ("patience:0" if chosen["full_depth"] else chosen["exit_rule"]) == decision["saved_default"]
    assert not chosen["full_depth"], "with a 100-point budget any faster setting qualifies"
    assert {c["exit_rule"].split(":")[0] for c in decision["candidates"]} == {"patience", "entropy", "confidence"}


def test_exactly_the_other_rows_are_trained_on(tuned_at_training, glue_root):
    from transformers import AutoTokenizer

    out, trained_on = tuned_at_training
    held = set(json.loads((out / "tune_split.json").read_text())["indices"])
    tokenizer = AutoTokenizer.from_pretrained(out)
    training = read_glue_split("RTE", glue_root / "RTE", "train")
    decode = lambda e: tokenizer.decode(tokenizer(e.text_a, e.text_b)["input_ids"], skip_special_tokens=True)  # noqa: E731
    assert sorted(trained_on) == sorted(decode(e) for i, e in enumerate(training) if i not in held)


def test_tune_dry_run_rebuilds_the_held_out_split_and_changes_nothing(tuned_at_training, capsys):
    out, _ = tuned_at_training
    before = {name: (out / name).read_bytes() for name in ("pabee_config.json", "tuning.json")}
    assert main(["tune", str(out), "--dry-run", "--max-drop", "0", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "exit rule tuned on heldout (10 examples)" in printed and "acc (heldout)" in printed
    assert "acc (dev)" in printed and "on dev (40 examples)" in printed  # the choice's dev figure too
    assert "dry run:" in printed
    assert {name: (out / name).read_bytes() for name in before} == before


def test_tune_on_dev_saves_and_says_the_figure_is_optimistic(tuned_at_training, tmp_path, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(tuned_at_training[0], out)
    assert main(["tune", str(out), "--tune_split", "dev", "--max-drop", "0", "--rules", "patience",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "tuned on dev (40 examples)" in printed and "optimistic" in printed and "saved: default exit rule" in printed
    decision = json.loads((out / "tuning.json").read_text())
    assert decision["split"] == "dev" and decision["dev"] is None
    assert {c["exit_rule"].split(":")[0] for c in decision["candidates"]} == {"patience"}
    full = decision["full_depth"]["metrics"]["acc"]
    chosen = decision["chosen"]
    assert chosen["metrics"]["acc"] >= full  # max drop 0
    assert str(default_exit_rule(PabeeConfig.load(out))) == ("patience:0" if chosen["full_depth"]
                                                             else chosen["exit_rule"])


def test_custom_files_regression_run_is_tuned_again_from_what_tune_split_json_saved(tiny_bert, tmp_path, capsys):
    rows = ["text,score"] + [f"the cat is {'good' if i % 2 else 'bad'} {i},{i % 5 * 0.7:.2f}" for i in range(24)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "dev.csv").write_text("\n".join(rows[:9]) + "\n")
    out = tmp_path / "out"
    assert main(["train", "--model_name_or_path", str(tiny_bert), "--train_file", str(tmp_path / "train.csv"),
                 "--validation_file", str(tmp_path / "dev.csv"), "--text_columns", "text", "--label_column", "score",
                 "--regression", "--output_dir", str(out), "--max_steps", "1", "--patience", "1,2",
                 "--tune_split", "6", "--no_eval", *QUIET]) == 0
    first = json.loads((out / "tuning.json").read_text())
    assert first["metric"] == "pearson" and first["split"] == "heldout" and first["num_examples"] == 6
    assert {c["regression_threshold"] for c in first["candidates"]} == {0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0}
    capsys.readouterr()
    # no data flags: the files, columns and held-out rows come from tune_split.json
    assert main(["tune", str(out), "--max-drop", "100", "--regression-thresholds", "0.2,0.9", "--no-progress"]) == 0
    assert "tuned on heldout (6 examples)" in capsys.readouterr().out
    second = json.loads((out / "tuning.json").read_text())
    chosen = second["chosen"]
    config = PabeeConfig.load(out)
    assert not chosen["full_depth"], "with a 100-point budget any faster setting qualifies"
    assert chosen["regression_threshold"] in (0.2, 0.9) and config.regression_threshold == chosen["regression_threshold"]
    assert str(default_exit_rule(config)) == chosen["exit_rule"]


def test_a_single_patience_at_training_is_saved_as_before(tiny_bert, glue_root, tmp_path):
    out = tmp_path / "single"
    assert main(["train", "--model_name_or_path", str(tiny_bert), "--task_name", "RTE", "--data_dir",
                 str(glue_root / "RTE"), "--output_dir", str(out), "--max_steps", "1", "--patience", "2",
                 "--no_eval", *QUIET]) == 0
    config = PabeeConfig.load(out)
    assert (config.patience, config.exit_rule) == (2, None)
    assert not (out / "tuning.json").exists() and not (out / "tune_split.json").exists()


@pytest.mark.parametrize("args, expected", [
    (["tune", "{missing}"], "run folder not found"),
    (["tune", "{tiny_bert}"], "is not a trained pabee model"),
    (["tune", "{run}", "--max-drop", "-1"], "from 0 to 100"),
    (["tune", "{run}", "--max-drop", "lots"], "from 0 to 100"),
    (["tune", "{run}", "--max_drop", "101"], "from 0 to 100"),
    (["tune", "{run}", "--tune_split", "train"], "invalid choice"),
    (["tune", "{run}", "--rules", "patience,hybridish"], "--rules must name kinds"),
    (["tune", "{plain_run}", "--tune_split", "heldout"], "has no held-out split"),
    (["tune", "{plain_run}", "--validation_file", "{unlabelled}", "--text_columns", "sentence",
      "--label_column", ""], "has no labels"),
    (["train", "--task_name", "RTE", "--tune_split", "1.5"], "--tune_split must be a fraction"),
    (["train", "--task_name", "RTE", "--tune_split", "0"], "--tune_split must be a fraction"),
    (["train", "--task_name", "RTE", "--max_drop", "nan"], "from 0 to 100"),
    (["train", "--model_name_or_path", "{tiny_bert}", "--task_name", "RTE", "--data_dir", "{rte}",
      "--output_dir", "{fresh}", "--tune_split", "40"], "none would be left to train on"),
])
def test_errors_are_one_line_and_exit_2(args, expected, tuned_at_training, tiny_bert, glue_root, tmp_path, capsys):
    plain = tmp_path / "plain"
    if "{plain_run}" in args:
        import shutil

        shutil.copytree(tuned_at_training[0], plain)
        (plain / "tune_split.json").unlink()
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text("sentence\ngood movie\nbad film\n")
    names = {"missing": tmp_path / "nope", "tiny_bert": tiny_bert, "run": tuned_at_training[0], "plain_run": plain,
             "unlabelled": unlabelled, "rte": glue_root / "RTE", "fresh": tmp_path / "fresh"}
    try:
        code = main([a.format(**{k: str(v) for k, v in names.items()}) for a in args])
    except SystemExit as exit:  # argument errors exit from the parser
        code = exit.code
    assert code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("warning")]
    assert len(err) == 1 and expected in err[0] and "Traceback" not in err[0], err



def test_tuning_without_dev_data_fails_before_training(tiny_bert, tmp_path, capsys):
    rows = ["sentence,label"] + [f"the cat is {'good' if i % 2 else 'bad'},{i % 2}" for i in range(12)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    code = main(["train", "--model_name_or_path", str(tiny_bert), "--train_file", str(tmp_path / "train.csv"),
                 "--output_dir", str(out), "--max_steps", "1", "--patience", "1,2", "--no_eval", *QUIET])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("warning")]
    assert code == 2 and len(err) == 1 and "no dev data to tune the exit rule" in err[0]
    assert not (out / "model.safetensors").exists()  # nothing was trained to fail at its end
