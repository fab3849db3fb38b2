"""benchmarks/serve_load.py: the load generator's accounting (with a server forced to refuse, and with none
listening), what it reads from /metrics, its inputs and one-line errors, the memory verdict, and one --quick run
end to end against real ``pabee serve`` processes on a tiny model (slow: two server start-ups); the ONNX export
cache and the offline baseline on ONNX Runtime without servers."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from fixtures import write_glue_task
from run_fixtures import save_tiny_run

from benchmarks import serve_load as bench
from benchmarks.serve_load_client import metrics_delta, request_body, run_load
from benchmarks.serve_load_measure import offline_baseline
from benchmarks.serve_load_render import memory_summary, targets
from benchmarks.serve_load_server import cached_export, current_export
from pabee.predictor import Predictor
from pabee.serving import ServeSettings, create_app
from pabee.serving.metrics import ServerMetrics

LABELS = ("entailment", "not_entailment")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return save_tiny_run(tmp_path_factory.mktemp("serve-load") / "run", labels=LABELS, patience=2, layers=4)


def _requests(values, n):
    return [(request_body(values[i % len(values)]), 1, True) for i in range(n)]


def test_every_request_is_accounted_for_when_the_server_refuses_or_is_gone(run_dir):
    """Fault injection: a one-input queue and a 300 ms batching wait make concurrent requests get 429; then nobody
    listens on the port at all. Every planned request ends as answered, an error, or not sent."""
    import uvicorn

    from pabee.serving.cli import bind_socket

    app = create_app(Predictor.from_pretrained(run_dir),
                     ServeSettings(max_queue=1, max_inputs=1, max_wait_ms=300, log_level="warning"))
    sock = bind_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        result = run_load(url, _requests([["good movie", "great film"], "bad plot"], 12), concurrency=4)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    assert result["planned"] == result["sent"] == 12 and result["not_sent"] == 0
    assert result["errors"].get("http 429", 0) > 0 and result["ok"] > 0
    assert result["ok"] + result["error_count"] == 12 and result["inputs_ok"] == result["ok"]
    assert result["latency_ms"]["p50"] > 0 and 1 <= result["mean_exit_layer"] <= 4
    # the generator's own share is recorded: every request's wait before it was sent is part of its latency
    wait = result["client_wait_ms"]
    assert 0 <= wait["p50"] <= wait["p99"] <= wait["max"] < max(result["latency_ms"]["max"],
                                                                result["error_latency_ms"]["http 429"]["max"])
    assert result["client_cpu_s"] > 0 and 0 < result["client_cpu_share"]

    gone = run_load(url, _requests(["good movie"], 5), concurrency=2, timeout_s=5)
    assert gone["ok"] == 0 and gone["errors"] == {"connect error": 5} and gone["inputs_per_s"] == 0
    assert gone["client_wait_ms"]["max"] is None  # nothing was ever sent


def test_predict_encoded_is_predict_without_tokenization(run_dir):
    """What the offline baseline times: encode once, then predict_encoded gives what predict gives."""
    predictor = Predictor.from_pretrained(run_dir, batch_size=2)
    texts = ["good movie", ("a dog", "is happy"), "the cat sat on the mat and the dog is not sad", "fun"]
    direct = predictor.predict(texts)
    encoded = predictor.predict_encoded(predictor.encode(texts))
    assert [(p.label, p.exit_layer, p.logits) for p in encoded] == [(p.label, p.exit_layer, p.logits) for p in direct]


def test_metrics_delta_reads_the_batch_size_and_exit_layer_histograms():
    metrics = ServerMetrics(num_layers=4, max_batch_size=32)
    metrics.observe_batch(5, [1, 1, 2, 4, 4], 0)
    before = metrics.render()[0].decode()
    metrics.observe_batch(3, [1, 2, 4], 0)
    metrics.observe_batch(1, [4], 1)
    delta = metrics_delta(before, metrics.render()[0].decode())
    assert delta == {"batches": 2, "inputs": 4, "mean_batch_size": 2.0, "mean_exit_layer": 11 / 4,
                     "model_busy_s": None, "model_calls": None, "tokens": None,
                     "padded_tokens": None}  # no work budget nor length groups watched: no such metrics


def test_inputs_file_requests_and_one_line_errors(run_dir, tmp_path, capsys):
    lines = tmp_path / "inputs.jsonl"
    lines.write_text('["good movie", "great film"]\n\n"a bad plot"\n[["the cat"], ["a dog", "is happy"]]\n')
    args = bench.build_parser().parse_args(["--model", str(run_dir), "--inputs", str(lines), "--requests", "2"])
    data = bench.load_requests(args)
    values, counts, singles = data["requests"]
    assert counts == [1, 1, 2] and singles == [True, True, False]
    assert data["offline_inputs"] == [("good movie", "great film"), "a bad plot"]  # those of the first 2 requests
    assert data["source"]["num_inputs"] == 4

    lines.write_text('["good movie", "great film"]\n{"text": 3}\n')
    out = tmp_path / "serving.json"
    assert bench.main(["--model", str(run_dir), "--inputs", str(lines), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "request 2: inputs must be a string" in err and not out.exists()

    no_patience = save_tiny_run(tmp_path / "p0", labels=LABELS, patience=0, layers=2)
    capsys.readouterr()  # the fixture's own output
    assert bench.main(["--model", str(no_patience), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "saves no early-exit patience" in err and "give --patience P" in err
    assert bench.main(["--model", str(run_dir), "--model", str(no_patience), "--patience", "1,2,3",
                       "--output", str(out)]) == 2
    assert "--patience has 3 values for 2 models" in capsys.readouterr().err


def test_memory_verdict_from_the_samples():
    base = {"rss_start_mib": 400.0, "rss_end_mib": 401.0, "requests_per_s": 50.0}
    flat = memory_summary({**base, "rss_samples": [[t, 400.0 + 0.01 * t] for t in range(100)]})
    assert flat["flat"] and flat["growth"] == pytest.approx(0.75) and flat["max"] == pytest.approx(400.99)
    assert flat["per_minute"] == pytest.approx(0.6) and flat["per_1000_requests"] == pytest.approx(0.2)
    growing = memory_summary({**base, "rss_samples": [[t, 400.0 + 0.2 * t] for t in range(100)]})
    assert not growing["flat"] and growing["growth"] == pytest.approx(15.0)


def test_onnx_export_is_made_once_per_model_version_and_runs_offline(tmp_path):
    """The ONNX backend's side of a run without servers: the export into the cache, its reuse while the run
    folder's model files are unchanged, and the offline baseline on it."""
    run = save_tiny_run(tmp_path / "run", labels=LABELS, patience=2, layers=2)
    cache, messages = tmp_path / "cache", []
    first = cached_export(run, cache, messages.append)
    assert first["reused"] is False and current_export(run, cache) == Path(first["path"])
    assert cached_export(run, cache, messages.append) == {"path": first["path"], "reused": True, "seconds": 0.0}
    assert "reusing the ONNX export" in messages[-1]
    offline = offline_baseline(first["path"], "onnx", 1, ["good movie", ["a dog", "is happy"]] * 3, 2, messages.append)
    assert offline["num_inputs"] == 6 and len(offline["rounds"]) == 2
    assert all(r["inputs_per_s"] > 0 and r["tokenize_s"] >= 0 for r in offline["rounds"])
    os.utime(run / "pabee_config.json", ns=(1, 1))  # the model changed: the export is stale
    assert current_export(run, cache) is None


@pytest.mark.slow
def test_quick_run_end_to_end_then_render_only(run_dir, tmp_path):
    glue = tmp_path / "glue"
    write_glue_task(glue, "RTE", n=10)
    out_json, out_md = tmp_path / "out" / "serving.json", tmp_path / "out" / "serving.md"
    args = ["--model", str(run_dir), "--task-dir", str(glue), "--quick", "--concurrency", "1,2", "--threads", "1",
            "--backends", "torch",
            "--requests", "6", "--memory-requests", "40", "--memory-concurrency", "2", "--rss-interval", "0.1",
            "--work-dir", str(tmp_path / "work"), "--output", str(out_json), "--markdown", str(out_md)]
    assert bench.main(args) == 0
    (run,) = json.loads(out_json.read_text())["runs"]
    (model,) = run["models"]
    assert model["num_layers"] == 4 and model["patience"] == 2 and set(model["backends"]) == {"torch"}
    for name, backend in model["backends"].items():
        assert backend["servers"]["early_exit"]["exit_rule"] == "patience:2"
        assert backend["servers"]["full"]["exit_rule"] == "patience:0"
        assert backend["servers"]["full"]["backend"] == name
        assert {(r["setting"], r["concurrency"]) for r in backend["runs"]} == {
            (s, c) for s in ("full", "early_exit") for c in (1, 2)}
        assert backend["offline"]["num_inputs"] == 6 and backend["offline"]["rounds"][0]["inputs_per_s"] > 0
        for r in backend["runs"]:
            assert r["planned"] == (3 if r["concurrency"] == 1 else 16)  # half at concurrency 1, >= 8 x level
            assert r["ok"] == r["planned"] and r["error_count"] == 0  # every request answered
            assert r["server"]["inputs"] == r["inputs_ok"] == r["ok"]  # the server saw exactly those inputs
            assert r["inputs_per_s"] > 0 and r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
            assert 1 <= r["server"]["mean_batch_size"] <= r["concurrency"]
            assert all(1 <= int(layer) <= 4 for layer in r["exit_layer_counts"])
            if r["setting"] == "full":
                assert r["mean_exit_layer"] == 4
            assert r["server"]["mean_exit_layer"] == pytest.approx(r["mean_exit_layer"])
            assert 0 < r["server"]["model_busy_s"] <= r["wall_s"]  # the time the server spent in model calls
            assert r["server"]["model_calls"] >= r["server"]["batches"]  # a batch runs as 1+ length groups
            assert r["server"]["tokens"] <= r["server"]["padded_tokens"]
    memory = run["memory"]
    assert memory["ok"] == 40 and memory["error_count"] == 0 and memory["backend"] == "torch"
    assert len(memory["rss_samples"]) >= 1 and memory["rss_start_mib"] > 0
    checks = {(t["backend"], t["check"]): t["met"] for t in targets(model)}
    assert checks[("torch", "no errors, every request accounted for")] is True
    assert checks[("torch", "full-depth server at concurrency 16 ≥ 0.8× offline batch-32 throughput")] is None

    page = out_md.read_text()
    assert "--quick smoke run" in page and "### torch" in page and "## Memory" in page
    assert "| full depth | 2 |" in page and "| early exit | 1 |" in page and "python " in page
    assert "ms per input)" in page and "padded tokens per real token" in page
    out_md.unlink()
    assert bench.main(["--render-only", "--output", str(out_json), "--markdown", str(out_md)]) == 0
    assert out_md.read_text() == page
