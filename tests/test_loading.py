"""Loading a model, its tokenizer and its data: every problem is one line that names the folder or file, exit code 2,
at once (no hub retries for a missing local folder) and without leaving an empty output folder behind."""

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from fixtures import save_tiny_bert, write_glue_task
from safetensors.torch import load_file, save_file
from tiny_models import tiny_backbone

from pabee.cli import main, seed_main
from pabee.data import DataError, read_custom_file, read_glue_split
from pabee.loading import resolve_model_source
from pabee.modeling import PabeeForSequenceClassification

QUIET = ["--disable_tqdm"]


@pytest.fixture(scope="module")
def rte(tmp_path_factory):
    return write_glue_task(tmp_path_factory.mktemp("glue"), "RTE")


@pytest.fixture(scope="module")
def pabee_model(tiny_bert, tmp_path_factory):
    """A saved pabee folder (2 labels, as RTE) with its tokenizer, as `pabee train` leaves it."""
    folder = tmp_path_factory.mktemp("pabee") / "model"
    PabeeForSequenceClassification.from_pretrained(tiny_bert, num_labels=2).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copy(tiny_bert / name, folder / name)
    (folder / "trainer_state.json").write_text("{}")
    return folder


def copy_of(folder, tmp_path, name="copy"):
    return Path(shutil.copytree(folder, tmp_path / name))


def one_error_line(capsys, prog="pabee") -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(prog) and ": error: " in lines[0], lines[0]
    return lines[0]


def train_args(model, rte, out):
    return ["train", "--model_name_or_path", str(model), "--task_name", "RTE", "--data_dir", str(rte),
            "--output_dir", str(out), "--max_steps", "1", *QUIET]


def eval_args(model, rte):
    return ["eval", "--model_name_or_path", str(model), "--task_name", "RTE", "--data_dir", str(rte), *QUIET]


# ---------------------------------------------------------------------------------------------- damaged weights


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", ["truncated", "empty"])
@pytest.mark.parametrize("kind", ["encoder", "pabee"])
def test_a_damaged_weights_file_is_named(kind, damage, tiny_bert, pabee_model, rte, tmp_path, capsys):
    folder = copy_of(tiny_bert if kind == "encoder" else pabee_model, tmp_path)
    weights = folder / "model.safetensors"
    truncate(weights) if damage == "truncated" else weights.write_bytes(b"")
    out = tmp_path / "out"
    args = train_args(folder, rte, out) if kind == "encoder" else eval_args(folder, rte)
    assert main(args) == 2
    line = one_error_line(capsys)
    assert f"model.safetensors in {folder} is corrupt or truncated" in line, line
    assert not out.exists()


def test_foreign_or_wrong_size_weights_in_an_encoder_folder(tiny_bert, rte, tmp_path, capsys):
    # weights of another architecture (MPNet) in a BERT folder: shapes differ
    foreign = copy_of(tiny_bert, tmp_path, "foreign")
    mpnet = tiny_backbone("mpnet")
    save_file({k: v.contiguous() for k, v in mpnet.state_dict().items()}, str(foreign / "model.safetensors"))
    assert main(train_args(foreign, rte, tmp_path / "o1")) == 2
    line = one_error_line(capsys)
    assert f"weights in {foreign} do not match the model" in line and "has shape" in line, line
    # a file whose tensors have other names: every backbone weight would silently start from random values
    junk = copy_of(tiny_bert, tmp_path, "junk")
    save_file({"hello": torch.zeros(3)}, str(junk / "model.safetensors"))
    assert main(train_args(junk, rte, tmp_path / "o2")) == 2
    line = one_error_line(capsys)
    assert f"weights in {junk} do not match the model" in line and "missing" in line, line
    # six layers of weights for a four-layer config
    deeper = copy_of(tiny_bert, tmp_path, "deeper")
    shutil.copy(save_tiny_bert(tmp_path / "six", layers=6) / "model.safetensors", deeper / "model.safetensors")
    capsys.readouterr()  # the fixture's own progress bar
    assert main(train_args(deeper, rte, tmp_path / "o3")) == 2
    line = one_error_line(capsys)
    assert "do not match the model" in line and "unexpected (encoder.layer.4" in line, line
    assert not any((tmp_path / f"o{i}").exists() for i in (1, 2, 3))


def test_foreign_or_wrong_size_weights_in_a_pabee_folder(tiny_bert, pabee_model, rte, tmp_path, capsys):
    foreign = copy_of(pabee_model, tmp_path, "foreign")
    shutil.copy(tiny_bert / "model.safetensors", foreign / "model.safetensors")  # a plain encoder's weights
    assert main(eval_args(foreign, rte)) == 2
    line = one_error_line(capsys)
    assert f"weights in {foreign} do not match the model" in line and "missing" in line, line

    wrong = copy_of(pabee_model, tmp_path, "wrong")
    state = load_file(str(wrong / "model.safetensors"))
    state["classifiers.0.weight"] = torch.zeros(5, 32)
    save_file(state, str(wrong / "model.safetensors"))
    with pytest.raises(ValueError, match=r"classifiers\.0\.weight has shape \[5, 32\] in the file but the model "
                                         r"expects \[2, 32\]"):
        PabeeForSequenceClassification.from_pretrained(wrong)
    assert seed_main(["--model_name_or_path", str(wrong), "--task_name", "RTE", "--data_dir", str(rte),
                      "--do_eval", "--output_dir", str(wrong), *QUIET]) == 2
    assert "weights in" in one_error_line(capsys, "run_glue_with_pabee.py")


def test_a_wrongly_typed_pabee_config_value_names_the_file_and_the_key(pabee_model, rte, tmp_path, capsys):
    folder = copy_of(pabee_model, tmp_path)
    config = json.loads((folder / "pabee_config.json").read_text())
    config["patience"] = "3"
    (folder / "pabee_config.json").write_text(json.dumps(config))
    assert main(eval_args(folder, rte)) == 2
    line = one_error_line(capsys)
    assert str(folder / "pabee_config.json") in line and "patience" in line and "'3'" in line, line
    assert main(train_args(folder, rte, tmp_path / "out")) == 2
    assert "pabee_config.json: patience" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- model folders


@pytest.mark.parametrize("form", ["models/nope", "./models/nope", "absolute", "org/not-cached"])
def test_a_missing_model_folder_is_reported_at_once(form, rte, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    name = str(tmp_path / "models" / "nope") if form == "absolute" else form
    start = time.perf_counter()
    assert main(train_args(name, rte, tmp_path / "out")) == 2
    assert time.perf_counter() - start < 5
    line = one_error_line(capsys)
    assert f"error: model folder not found: {name}" in line, line
    if form == "org/not-cached":
        assert "HF_HUB_OFFLINE" in line
    assert not (tmp_path / "out").exists()


def test_an_unreachable_hub_fails_fast_without_retries(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="model folder not found: some-org/some-model .*cannot be reached"):
        resolve_model_source("some-org/some-model", cache_dir=str(tmp_path))
    assert time.perf_counter() - start < 5


def test_a_cached_hub_model_is_used_offline(tmp_path):
    snapshot = tmp_path / "models--some-org--some-model" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--some-org--some-model" / "refs").mkdir()
    (tmp_path / "models--some-org--some-model" / "refs" / "main").write_text("a" * 40)
    assert resolve_model_source("some-org/some-model", cache_dir=str(tmp_path)) == "some-org/some-model"


def test_an_empty_folder_or_a_folder_without_tokenizer_files(tiny_bert, rte, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(train_args(empty, rte, tmp_path / "out")) == 2
    assert f"error: {empty} is empty: not a model folder" in one_error_line(capsys)
    no_tokenizer = copy_of(tiny_bert, tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (no_tokenizer / name).unlink()
    assert main(train_args(no_tokenizer, rte, tmp_path / "out")) == 2
    assert f"error: no tokenizer files in {no_tokenizer}" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_a_run_stopped_during_its_final_save_is_explained(pabee_model, rte, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(pabee_model, run / "checkpoint-2")
    assert main(eval_args(run, rte)) == 2  # stopped before the final model was written
    line = one_error_line(capsys)
    assert "checkpoint-2 of a training that did not finish" in line and "--resume_from_checkpoint" in line, line
    for name in ("model.safetensors", "config.json", "pabee_config.json"):  # stopped before the tokenizer
        shutil.copy(pabee_model / name, run / name)
    assert main(eval_args(run, rte)) == 2
    line = one_error_line(capsys)
    assert f"no tokenizer files in {run}" in line and "did not finish" in line, line


def test_predict_without_a_model_leaves_no_folder(rte, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--task_name", "RTE", "--data_dir", str(rte), *QUIET]) == 2
    line = one_error_line(capsys)
    assert "model folder not found: runs/rte" in line and "--model_name_or_path" in line, line
    assert not (tmp_path / "runs").exists()


def test_eval_of_a_plain_encoder_fails_before_reading_data(tiny_bert, tmp_path, capsys):
    assert main(["eval", "--model_name_or_path", str(tiny_bert), "--task_name", "RTE", "--data_dir",
                 str(tmp_path / "no-such-data"), *QUIET]) == 2
    assert "is not a fine-tuned pabee model" in one_error_line(capsys)


# ---------------------------------------------------------------------------------------------- sequence length


def test_max_seq_length_beyond_the_position_embeddings_is_capped(tiny_bert, tmp_path, capsys):
    folder = tmp_path / "RTE"
    folder.mkdir()
    rows = ["index\tsentence1\tsentence2\tlabel"]
    rows += [f"{i}\t{' '.join(['good movie'] * 60)}\tthe cat\tentailment" for i in range(4)]
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match="--max_seq_length 100 is longer than the model .* takes: using 64"):
        assert main([*train_args(tiny_bert, folder, tmp_path / "out"), "--max_seq_length", "100"]) == 0


def test_a_non_utf8_byte_is_reported_at_its_line(pabee_model, tmp_path, capsys):
    folder = tmp_path / "RTE"
    folder.mkdir()
    rows = [b"index\tsentence1\tsentence2\tlabel"] + [b"%d\tthe cat\ta dog\tentailment" % i for i in range(400)]
    rows[300] = b"299\tthe caf\xe9\ta dog\tentailment"  # latin-1, beyond the reader's first block
    (folder / "dev.tsv").write_bytes(b"\n".join(rows) + b"\n")
    with pytest.raises(DataError, match=r"dev\.tsv:301: not valid UTF-8 text \(byte 0xe9 at column 12"):
        read_glue_split("RTE", folder, "dev")
    assert main(eval_args(pabee_model, folder)) == 2
    assert "dev.tsv:301: not valid UTF-8" in one_error_line(capsys)

    csv_file = tmp_path / "data.csv"
    csv_file.write_bytes(b"sentence,label\nok,1\n\xff bad,0\n")
    with pytest.raises(DataError, match=r"data\.csv:3: not valid UTF-8 text \(byte 0xff at column 1"):
        read_custom_file(csv_file, ("sentence",), "label", None, False)
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_bytes(b'{"sentence": "ok", "label": "1"}\n{"sentence": "\xff", "label": "0"}\n')
    with pytest.raises(DataError, match=r"data\.jsonl:2: not valid UTF-8"):
        read_custom_file(jsonl, ("sentence",), "label", None, False)
