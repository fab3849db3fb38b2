"""``pabee serve`` processes for the serving load benchmark, the ONNX exports they run, and what /proc says about
them.

* :class:`ServerSpec` / :class:`ServerProcess` / :func:`running_servers`: start ``pabee serve`` as child processes
  on free loopback ports (``--port 0``; the port is read from the server's start-up line), wait for ``/health``,
  and stop them by their pid (SIGTERM, then wait; SIGKILL only if one does not exit) whatever happens, Ctrl-C
  included.
* :func:`cached_export`: ``pabee export`` of a run folder into a cache folder, reused while the run folder's model
  files are unchanged.
* :func:`rss_mib` and :func:`cpu_seconds`: a process's resident memory and CPU time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from pabee.cli import int_at_least

READY_LINE = re.compile(r" on http://(?P<host>\S+?):(?P<port>\d+) \(exit rule")
# the files of a run folder an export is made from: a change to any of them makes a cached export stale
MODEL_FILES = ("model.safetensors", "pytorch_model.bin", "config.json", "pabee_config.json", "tokenizer.json",
               "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


class ServerError(RuntimeError):
    """A server did not start or answer (the message is one line, with the end of its log)."""


@dataclasses.dataclass
class ServerSpec:
    """How one ``pabee serve`` process is started."""

    name: str  # e.g. "torch full depth"
    folder: str  # the run folder (torch) or its export (onnx)
    backend: str
    patience: int
    threads: int
    max_batch_size: int
    max_wait_ms: float
    log_level: str = "warning"
    extra_args: tuple[str, ...] = ()

    def command(self) -> list[str]:
        """The ``pabee serve`` command line (this Python, so the same environment and ``PYTHONPATH``)."""
        return [
            sys.executable, "-m", "pabee.cli", "serve", self.folder, "--backend", self.backend,
            "--patience", str(self.patience), "--threads", str(self.threads),
            "--max-batch-size", str(self.max_batch_size), "--max-wait-ms", f"{self.max_wait_ms:g}",
            "--host", "127.0.0.1", "--port", "0", "--log-level", self.log_level, *self.extra_args,
        ]


class ServerProcess:
    """One running ``pabee serve``; its stdout and stderr go to ``log_path``."""

    def __init__(self, spec: ServerSpec, log_path: Path):
        self.spec, self.log_path = spec, log_path
        self.url: str | None = None
        self.terminated = False
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        with open(log_path, "wb") as log:
            # a session of its own: Ctrl-C in the terminal reaches the benchmark, which then stops the server
            self.process = subprocess.Popen(spec.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self) -> str:
        try:
            lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return ""
        return lines[-1].strip() if lines else ""

    def wait_ready(self, timeout_s: float) -> None:
        """Wait for the start-up line (the port) and a 200 from ``/health``; ServerError if the process exits or
        ``timeout_s`` passes first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"{self.spec.name}: pabee serve exited with {self.process.returncode}: "
                                  f"{self.log_tail() or 'no output'} (log: {self.log_path})")
            if self.url is None:
                match = READY_LINE.search(self.log_path.read_text(errors="replace"))
                if match:
                    self.url = f"http://{match['host']}:{match['port']}"
            if self.url is not None:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                        return
            time.sleep(0.2)
        raise ServerError(f"{self.spec.name}: not ready after {timeout_s:.0f} s: {self.log_tail() or 'no output'} "
                          f"(log: {self.log_path})")

    def get(self, path: str) -> httpx.Response:
        response = httpx.get(f"{self.url}{path}", timeout=30)
        response.raise_for_status()
        return response

    def info(self) -> dict:
        """The server's ``/info`` (model, layers, exit rule, backend, limits)."""
        return self.get("/info").json()

    def metrics_text(self) -> str:
        """The server's ``/metrics`` (Prometheus text)."""
        return self.get("/metrics").text

    def terminate(self) -> None:
        """Send SIGTERM once (the server finishes what is queued, then exits; a second one would cut its graceful
        shutdown short)."""
        if not self.terminated and self.process.poll() is None:
            self.terminated = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM, then wait (SIGKILL after ``timeout_s``); returns the exit status."""
        self.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        return self.process.returncode


def add_server_arguments(p: argparse.ArgumentParser, server_arg_help: str,
                         threads_help: str = "pabee serve --threads") -> None:
    """The options of the ``pabee serve`` processes a load benchmark starts (shared by serve_load.py and
    defence_load.py): threads, batching, extra flags, log level, start-up and request timeouts."""
    positive = int_at_least(1)
    p.add_argument("--request-timeout", type=float, default=60.0, help="client timeout of one request (seconds)")
    p.add_argument("--threads", type=positive, default=2, help=threads_help)
    p.add_argument("--max-batch-size", type=positive, default=32, help="pabee serve --max-batch-size")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="pabee serve --max-wait-ms")
    p.add_argument("--server-arg", action="append", default=[], help=f"passed to {server_arg_help} as is "
                   "(repeatable; write --server-arg=--flag=value for flags)")
    p.add_argument("--server-log-level", default="warning", help="pabee serve --log-level (info logs every request)")
    p.add_argument("--startup-timeout", type=float, default=600.0, help="seconds a server may take to answer "
                   "/health")


@contextlib.contextmanager
def running_servers(specs: list[ServerSpec], log_dir: Path, timeout_s: float,
                    log: Callable[[str], None]) -> Iterator[list[ServerProcess]]:
    """Start every server (together: their start-ups overlap), wait until all answer, yield them; stop them all
    on the way out, on errors and Ctrl-C too."""
    servers: list[ServerProcess] = []
    try:
        for spec in specs:
            servers.append(ServerProcess(spec, log_dir / f"{spec.name.replace(' ', '-')}.log"))
            log(f"started {spec.name} (pid {servers[-1].pid}): {' '.join(spec.command()[1:])}")
        for server in servers:
            server.wait_ready(timeout_s)
            log(f"{server.spec.name} ready at {server.url}")
        yield servers
    finally:
        for server in servers:  # all at once: their graceful shutdowns overlap
            server.terminate()
        for server in servers:
            code = server.stop()
            log(f"stopped {server.spec.name} (pid {server.pid}, exit status {code})")


# ---------------------------------------------------------------------------------------------------- exports


def folder_key(folder: str | os.PathLike) -> str:
    """A file name for a folder: its name and a hash of its absolute path (two runs named alike stay apart)."""
    path = Path(folder).resolve()
    return f"{path.name}-{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"


def _source_stamp(run_dir: Path) -> dict:
    """Name, size and modification time of the run folder's model files."""
    stamp = {"source": str(run_dir.resolve())}
    for name in MODEL_FILES:
        path = run_dir / name
        if path.is_file():
            st = path.stat()
            stamp[name] = [st.st_size, st.st_mtime_ns]
    return stamp


def current_export(run_dir: str | os.PathLike, cache_dir: Path) -> Path | None:
    """The export of ``run_dir`` under ``cache_dir`` if one was made from its present model files, else None."""
    from pabee.onnx import is_onnx_export

    target = cache_dir / folder_key(run_dir)
    try:
        stamp = json.loads((cache_dir / f"{target.name}.source.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return target if is_onnx_export(target) and stamp == _source_stamp(Path(run_dir)) else None


def cached_export(run_dir: str | os.PathLike, cache_dir: Path, log: Callable[[str], None]) -> dict:
    """The ``pabee export`` (fp32) of ``run_dir`` under ``cache_dir``, made with :func:`pabee.onnx.export_onnx`
    unless :func:`current_export` finds one of the same model files: {"path", "reused", "seconds"}."""
    from pabee.onnx import export_onnx

    found = current_export(run_dir, cache_dir)
    if found is not None:
        log(f"reusing the ONNX export {found} (the model files of {run_dir} are unchanged)")
        return {"path": str(found), "reused": True, "seconds": 0.0}
    target = cache_dir / folder_key(run_dir)
    log(f"exporting {run_dir} to ONNX in {target} ...")
    cache_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    export_onnx(run_dir, target)
    seconds = time.perf_counter() - start
    stamp = json.dumps(_source_stamp(Path(run_dir)), indent=1) + "\n"
    (cache_dir / f"{target.name}.source.json").write_text(stamp, encoding="utf-8")
    return {"path": str(target), "reused": False, "seconds": seconds}


# ---------------------------------------------------------------------------------------------------- /proc


def rss_mib(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB (``VmRSS`` of ``/proc/<pid>/status``; psutil elsewhere; None if gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        if not Path("/proc/self/status").exists():
            try:
                import psutil

                return psutil.Process(pid).memory_info().rss / 2**20
            except Exception:
                return None
    except (OSError, ValueError):
        pass
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds ``pid`` has used, all its threads (``/proc/<pid>/stat``; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
