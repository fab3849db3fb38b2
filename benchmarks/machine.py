"""What a reader needs to judge a benchmark's numbers, and whether the machine is quiet enough to time on.

* :func:`machine_info`: CPU model and caches, cores, torch threads, library versions, OS.
* :func:`cpu_stall_seconds`: Linux's CPU pressure stall count, the probe of
  :func:`pabee.timing.time_interleaved_batches` for discarding rounds disturbed by other processes.
* :func:`wait_for_quiet`: sleep until a window without CPU contention.
* :func:`script_command`: the command line that re-runs a benchmark script.
* :func:`script_environment` and :data:`REPO_ROOT`: the environment a benchmark script runs in, and where it writes.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout whose docs/ the benchmark scripts write


def cpu_stall_seconds(path: str = "/proc/pressure/cpu") -> float | None:
    """Cumulative seconds during which at least one runnable task waited for a CPU (Linux PSI "some" total).

    None where pressure stall information is not available (not Linux, or a kernel without PSI).
    """
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith("some"):
                    for field in line.split():
                        if field.startswith("total="):
                            return int(field[len("total=") :]) / 1e6
    except (OSError, ValueError):
        return None
    return None


def wait_for_quiet(
    stall_probe: Callable[[], float | None],
    max_contention: float,
    window_s: float = 1.0,
    timeout_s: float = 60.0,
    sleep: Callable[[float], object] = time.sleep,
) -> float:
    """Sleep in windows of ``window_s`` until one has CPU contention <= ``max_contention`` (or ``timeout_s`` passed).

    Returns the time spent waiting (0.0 right away when the probe gives None or the first window is quiet).
    """
    waited = 0.0
    while True:
        before = stall_probe()
        if before is None:
            return waited
        sleep(window_s)
        after = stall_probe()
        waited += window_s
        if after is None or (after - before) / window_s <= max_contention or waited >= timeout_s:
            return waited


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` or "unknown" elsewhere)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_caches(root: str = "/sys/devices/system/cpu/cpu0/cache") -> list[dict[str, Any]]:
    """CPU 0's caches as Linux reports them: [{"level": 1, "type": "Data", "size_kib": 32}, ...] ([] elsewhere)."""
    caches = []
    for index in sorted(Path(root).glob("index*")):
        try:
            level = int((index / "level").read_text().strip())
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        factor = {"K": 1, "M": 1024, "G": 1024 * 1024}.get(size[-1:], None)
        try:
            kib = int(size[:-1]) * factor if factor else int(size) // 1024
        except ValueError:
            continue
        caches.append({"level": level, "type": kind, "size_kib": kib})
    return caches


def machine_info() -> dict[str, Any]:
    """CPU model and caches, logical cores (total and usable by this process), torch threads, library versions, OS."""
    import torch
    import transformers

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "cpu_caches": cpu_caches(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cuda_available": torch.cuda.is_available(),
        "python_executable": sys.executable,
    }


def script_command(script: str | os.PathLike, argv: list[str]) -> str:
    """``python SCRIPT ARGS...``, the command that regenerates a benchmark's page: the script relative to the
    working directory when it lies inside it (the page then also records that directory), else absolute."""
    path = Path(script).resolve()
    try:
        text = str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        text = str(path)
    return shlex.join(["python", text, *argv])


def script_environment() -> None:
    """Settle what a benchmark script needs before it imports transformers, where the caller did not say otherwise:
    no Hugging Face hub access (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``) and no tokenizers thread pool
    (``TOKENIZERS_PARALLELISM=false``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
