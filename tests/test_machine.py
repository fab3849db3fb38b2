"""benchmarks/machine.py: the machine facts a benchmark records and the CPU-contention probe, on fake files."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks.machine import (
    REPO_ROOT,
    cpu_caches,
    cpu_model,
    cpu_stall_seconds,
    machine_info,
    script_environment,
    wait_for_quiet,
)


def test_cpu_stall_seconds_parses_psi(tmp_path):
    psi = tmp_path / "cpu"
    psi.write_text(
        "some avg10=0.00 avg60=1.00 avg300=2.00 total=2500000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        encoding="ascii",
    )
    assert cpu_stall_seconds(str(psi)) == pytest.approx(2.5)
    assert cpu_stall_seconds(str(tmp_path / "missing")) is None


def test_wait_for_quiet_sleeps_until_a_quiet_window():
    stall = iter([0.0, 0.9, 0.9, 1.0, 1.0, 1.01])  # windows: 90 % busy, 10 % busy, 1 % busy
    slept = []
    waited = wait_for_quiet(lambda: next(stall), max_contention=0.05, window_s=1.0, sleep=slept.append)
    assert waited == 3.0 and slept == [1.0, 1.0, 1.0]
    assert wait_for_quiet(lambda: None, max_contention=0.05, sleep=slept.append) == 0.0
    busy = iter(range(0, 100, 1))
    assert (
        wait_for_quiet(lambda: float(next(busy)), 0.05, window_s=1.0, timeout_s=2.0, sleep=lambda s: None)
        == 2.0
    )


def test_cpu_model_reads_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Test CPU 9000\n", encoding="utf-8")
    assert cpu_model(str(info)) == "Test CPU 9000"
    assert isinstance(cpu_model(str(tmp_path / "missing")), str)


def test_cpu_caches_reads_sysfs(tmp_path):
    for i, (level, kind, size) in enumerate([(1, "Data", "32K"), (2, "Unified", "1024K"), (3, "Unified", "32M")]):
        folder = tmp_path / f"index{i}"
        folder.mkdir()
        (folder / "level").write_text(f"{level}\n")
        (folder / "type").write_text(f"{kind}\n")
        (folder / "size").write_text(f"{size}\n")
    (tmp_path / "index3").mkdir()  # unreadable entries are skipped
    assert cpu_caches(str(tmp_path)) == [
        {"level": 1, "type": "Data", "size_kib": 32},
        {"level": 2, "type": "Unified", "size_kib": 1024},
        {"level": 3, "type": "Unified", "size_kib": 32768},
    ]
    assert cpu_caches(str(tmp_path / "missing")) == []


def test_machine_info_fields():
    import torch

    info = machine_info()
    for key in ("cpu_model", "logical_cores", "usable_cores", "torch_version", "transformers_version"):
        assert info[key]
    assert info["torch_num_threads"] == torch.get_num_threads()
    json.dumps(info)


def test_script_environment_goes_offline_but_keeps_what_the_caller_set(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    script_environment()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true"
    assert (REPO_ROOT / "benchmarks" / "machine.py").is_file()
