"""torchrun on the CPU (gloo): two processes train data-parallel and leave one coherent run."""

import json
import os
import socket
import subprocess
import sys

import pytest
from fixtures import save_tiny_bert, write_glue_task

from pabee.cli import main

pytest.importorskip("torch.distributed.run")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_processes_each_train_half_and_one_writes(tmp_path):
    tiny = save_tiny_bert(tmp_path / "tiny")
    glue = write_glue_task(tmp_path / "glue", "RTE", n=48)
    out = tmp_path / "out"
    args = ["train", "--model_name_or_path", str(tiny), "--task_name", "RTE", "--data_dir", str(glue),
            "--output_dir", str(out), "--per_device_train_batch_size", "4", "--num_train_epochs", "2",
            "--save_steps", "6", "--logging_steps", "3", "--max_eval_samples", "8", "--disable_tqdm"]
    assert main(args) == 0  # one process: 48 examples / 4 = 12 steps an epoch
    single = json.loads((out / "trainer_state.json").read_text())
    assert single["global_step"] == 24

    # no --use_cpu: on a machine without GPUs the run must still be distributed (over gloo)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), "-m", "pabee.cli", *args, "--overwrite_output_dir"],
        capture_output=True, text=True, env=env, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]  # torchrun fails if any process does
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in result.stderr

    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == single["global_step"] // 2  # each process a half of every epoch
    assert state["epoch"] == 2.0
    # one coherent run: one writer of checkpoints, logs, records; the previous run moved aside whole
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-6"]
    for checkpoint in out.glob("checkpoint-*"):
        assert (checkpoint / "rng_state_0.pth").is_file() and (checkpoint / "rng_state_1.pth").is_file()
        assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == int(
            checkpoint.name.split("-")[1])
    assert not (out / ".staging").exists()
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [3, 6, 9, 12]
    assert result.stdout.count("results: ") == 1 and result.stdout.count("checkpoint final |") == 1
    assert result.stdout.count("'train_runtime'") == 1 and result.stderr.count("training done") == 1
    records = json.loads((out / "eval_results.json").read_text())
    assert {r["checkpoint"] for r in records} == {"final"} and len(records) == 1
    (previous,) = out.glob("previous-run-*")
    assert json.loads((previous / "trainer_state.json").read_text())["global_step"] == 24


def test_without_an_accelerator_the_trainer_is_told_to_use_the_cpu(monkeypatch, tmp_path):
    import torch

    from pabee.train import TrainSettings, _train_on_cpu

    settings = TrainSettings(output_dir=str(tmp_path))
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda *a, **k: None)
    assert _train_on_cpu(settings)  # else accelerate starts a process group under torchrun and does not use it
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda *a, **k: torch.device("cuda"))
    assert not _train_on_cpu(settings) and _train_on_cpu(TrainSettings(output_dir=str(tmp_path), use_cpu=True))
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda *a, **k: torch.device("mps"))
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not _train_on_cpu(settings)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _train_on_cpu(settings)  # accelerate cannot distribute over MPS
