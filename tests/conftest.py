"""Test-wide settings: one torch thread (tiny models gain nothing from more, and it keeps timings of a shared
2-core machine from collapsing when another process is busy), and no hub access."""

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
