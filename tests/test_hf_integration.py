"""A saved pabee model works where transformers expects a sequence classifier: the text-classification pipeline,
the Auto classes and push_to_hub (upload mocked: no hub access here); folders saved in the old format still load."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from run_fixtures import save_tiny_run
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, pipeline

from pabee.hf import PabeeTransformersConfig, read_backbone_config
from pabee.model_checks import model_max_seq_length, read_model_labels
from pabee.modeling import PabeeForSequenceClassification
from pabee.run_folder import saved_run_identity
from pabee.runner import _check_model_type

TEXTS = ["the cat sat on the mat.", "bad plot, slow and sad!", "fun fun fun film", "the movie is not good",
         "a man is happy"]
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return save_tiny_run(tmp_path_factory.mktemp("hf") / "run", patience=2, layers=6)


def _direct(folder, texts, **forward):
    """The model called directly: softmax of its early-exit logits and its exit layers, one text at a time."""
    model = PabeeForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    probs, exits = [], []
    with torch.no_grad():
        for text in texts:
            out = model(**tokenizer(text, return_tensors="pt"), **forward)
            probs.append(out.logits.softmax(-1)[0])
            exits.append(int(out.exit_layers[0]))
    return model, torch.stack(probs), exits


def test_saved_config_is_a_registered_pabee_config(run):
    saved = json.loads((run / "config.json").read_text())
    assert saved["model_type"] == "pabee"
    assert saved["architectures"] == ["PabeeForSequenceClassification"]
    assert saved["backbone"]["model_type"] == "bert" and "_name_or_path" not in saved["backbone"]
    assert saved["id2label"] == {"0": "sad", "1": "happy", "2": "meh"}
    config = AutoConfig.from_pretrained(run)
    assert isinstance(config, PabeeTransformersConfig)
    backbone = read_backbone_config(run)
    assert backbone.model_type == "bert" and backbone.num_hidden_layers == 6
    assert backbone.id2label == {0: "sad", 1: "happy", 2: "meh"} and backbone.label2id["meh"] == 2
    assert read_model_labels(run).names == ("sad", "happy", "meh")
    assert saved_run_identity(run)["model_type"] == "bert"
    assert read_backbone_config(run).max_position_embeddings == 64
    with pytest.warns(UserWarning, match="max_position_embeddings=64"):  # read from the nested backbone config
        assert model_max_seq_length(128, str(run)) == 64
    _check_model_type("bert", str(run), None)  # --model_type bert matches a saved bert-based pabee folder
    with pytest.raises(ValueError, match="does not match"):
        _check_model_type("roberta", str(run), None)


def test_auto_model_loads_the_pabee_model(run):
    model = AutoModelForSequenceClassification.from_pretrained(run)
    assert isinstance(model, PabeeForSequenceClassification)
    assert model.pabee_config.patience == 2 and model.config.model_type == "bert"
    reference = PabeeForSequenceClassification.from_pretrained(run)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_pipeline_gives_the_models_early_exit_labels_and_scores(run):
    classify = pipeline("text-classification", model=str(run))
    assert isinstance(classify.model, PabeeForSequenceClassification)
    model, probs, exits = _direct(run, TEXTS)
    assert min(exits) < model.num_layers, "early exit should stop some texts before the last layer"
    expected = [{"label": model.config.id2label[int(p.argmax())], "score": float(p.max())} for p in probs]
    for answer in (classify(TEXTS), [classify(text)[0] for text in TEXTS], classify(TEXTS, batch_size=2)):
        assert [a["label"] for a in answer] == [e["label"] for e in expected]
        assert [a["score"] for a in answer] == pytest.approx([e["score"] for e in expected], abs=1e-5)
    # the answers are the early-exit ones, not those of the last classifier
    _, full, _ = _direct(run, TEXTS, patience=0)
    assert not torch.allclose(full, probs, atol=1e-4)
    every = classify(TEXTS[0], top_k=None)
    assert {a["label"]: a["score"] for a in every} == pytest.approx(
        {model.config.id2label[i]: float(p) for i, p in enumerate(probs[0])}, abs=1e-5
    )


def test_import_pabee_alone_registers_and_without_it_transformers_refuses(run):
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    with_pabee = (
        "import sys, pabee\n"
        "assert 'torch' not in sys.modules\n"  # import pabee stays light
        "from transformers import pipeline\n"
        f"p = pipeline('text-classification', model={str(run)!r})\n"
        "print(type(p.model).__name__, p('meh')[0]['label'])\n"
    )
    done = subprocess.run([sys.executable, "-c", with_pabee], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[0] == "PabeeForSequenceClassification"
    without = f"from transformers import pipeline\npipeline('text-classification', model={str(run)!r})\n"
    done = subprocess.run([sys.executable, "-c", without], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "model type `pabee`" in done.stderr


def test_old_format_folders_still_load(run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(run, old)
    model = PabeeForSequenceClassification.from_pretrained(run)
    # config.json as pabee wrote it before: the backbone's own config with the labels
    (old / "config.json").write_text(model.config.to_json_string(use_diff=True))
    assert json.loads((old / "config.json").read_text())["model_type"] == "bert"
    _, new_probs, new_exits = _direct(run, TEXTS)
    loaded, old_probs, old_exits = _direct(old, TEXTS)
    assert loaded.config.id2label == {0: "sad", 1: "happy", 2: "meh"}
    assert torch.allclose(new_probs, old_probs) and new_exits == old_exits
    assert read_model_labels(old).names == ("sad", "happy", "meh")
    assert read_backbone_config(old).model_type == "bert"
    # and saving it again writes the new format
    loaded.save_pretrained(tmp_path / "resaved")
    assert json.loads((tmp_path / "resaved" / "config.json").read_text())["model_type"] == "pabee"


class _FakeHub:
    """Stands in for huggingface_hub.HfApi: records the repo and copies the committed files."""

    def __init__(self, into: Path):
        self.into = into
        self.repos = []

    def create_repo(self, repo_id, **kwargs):
        self.repos.append(repo_id)
        return SimpleNamespace(repo_id=f"user/{repo_id}")

    def create_commit(self, repo_id, operations, **kwargs):
        self.into.mkdir(parents=True)
        for op in operations:
            shutil.copy(op.path_or_fileobj, self.into / op.path_in_repo)
        return SimpleNamespace(repo_id=repo_id, commit_message=kwargs.get("commit_message"))


@pytest.fixture()
def fake_hub(monkeypatch, tmp_path):
    import transformers.utils.hub as hub

    fake = _FakeHub(tmp_path / "uploaded")
    monkeypatch.setattr(hub, "hf_api", lambda: fake)
    monkeypatch.setattr(
        hub, "create_and_tag_model_card",
        lambda repo_id, tags=None, token=None: SimpleNamespace(save=lambda path: Path(path).write_text("card")),
    )
    return fake


def test_push_to_hub_uploads_what_save_pretrained_writes(run, fake_hub):
    model = PabeeForSequenceClassification.from_pretrained(run)
    model.push_to_hub("tiny-pabee")
    assert fake_hub.repos == ["tiny-pabee"]
    uploaded = fake_hub.into
    assert {"config.json", "pabee_config.json", "model.safetensors"} <= {p.name for p in uploaded.iterdir()}
    assert json.loads((uploaded / "config.json").read_text())["model_type"] == "pabee"
    again = PabeeForSequenceClassification.from_pretrained(uploaded)
    assert again.pabee_config.patience == 2 and again.config.id2label == model.config.id2label
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_save_pretrained_with_push_to_hub(run, fake_hub, tmp_path):
    model = PabeeForSequenceClassification.from_pretrained(run)
    model.save_pretrained(tmp_path / "local", push_to_hub=True, repo_id="mine", max_shard_size="1GB")
    assert (tmp_path / "local" / "model.safetensors").is_file()
    assert fake_hub.repos == ["mine"] and (fake_hub.into / "model.safetensors").is_file()


def _as_hub_cache(files: Path, cache: Path, repo_id: str) -> None:
    """Put ``files`` into a Hugging Face cache as the main revision of ``repo_id`` (what a download leaves)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(files, repo / "snapshots" / commit)


def test_a_pushed_model_loads_back_by_hub_id(run, fake_hub, tmp_path):
    model = PabeeForSequenceClassification.from_pretrained(run)
    model.push_to_hub("tiny-pabee")
    _as_hub_cache(fake_hub.into, tmp_path / "cache", "user/tiny-pabee")
    for loader in (PabeeForSequenceClassification, AutoModelForSequenceClassification):
        again = loader.from_pretrained("user/tiny-pabee", cache_dir=str(tmp_path / "cache"))
        assert isinstance(again, PabeeForSequenceClassification) and again.pabee_config.patience == 2
        for key, value in model.state_dict().items():
            assert torch.equal(again.state_dict()[key], value), key
