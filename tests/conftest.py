"""Test-wide settings: one torch thread (tiny models gain nothing from more, and it keeps timings of a shared
2-core machine from collapsing when another process is busy), and no hub access."""

import os

import pytest
import torch
from fixtures import save_tiny_bert

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A saved tiny BERT folder (model + a tokenizer that knows its words), made once per test module."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
