"""benchmarks/defence_load.py: one-line errors for bad settings, the 429 pause of the load client against a real
work budget, what the page computes from the numbers, and one run end to end against two real ``pabee serve``
processes on a tiny model (slow: two server start-ups) with the defence forced to refuse."""

from __future__ import annotations

import json
import threading
import time

import pytest
from run_fixtures import save_tiny_run

from benchmarks import defence_load as bench
from benchmarks.defence_load_render import findings, pct_change, render_markdown, rows
from benchmarks.serve_load_client import pause_seconds, request_body, run_load
from pabee.predictor import Predictor
from pabee.serving import ServeSettings, create_app

LABELS = ("entailment", "not_entailment")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return save_tiny_run(tmp_path_factory.mktemp("defence-load") / "run", labels=LABELS, patience=2, layers=4)


@pytest.fixture()
def inputs(tmp_path):
    attacked = tmp_path / "attacked.jsonl"
    attacked.write_text('["a dog runs", "the dgo is rnuning"]\n"a bad plto"\n["cats sleep", "cat slepe"]\n')
    (tmp_path / "attacked.clean.jsonl").write_text('["a dog runs", "the dog is running"]\n"a bad plot"\n'
                                                   '["cats sleep", "a cat sleeps"]\n')
    return attacked


@pytest.mark.parametrize("extra, message", [
    (["--max-queue-seconds", "0"], "--max-queue-seconds must be a positive number"),
    (["--max-queue-seconds", "inf"], "--max-queue-seconds must be a positive number"),
    (["--pause-after-429", "soon"], "--pause-after-429 must be retry-after or a number of seconds >= 0"),
    (["--pause-after-429", "-1"], "--pause-after-429 must be retry-after or a number of seconds >= 0"),
    (["--max-seconds", "nan"], "--max-seconds must be a positive number"),
    (["--concurrency", "0"], "--concurrency"),
    (["--clean", "missing.jsonl"], "--clean missing.jsonl: no such file"),
])
def test_bad_settings_are_one_line_errors(run_dir, inputs, tmp_path, capsys, extra, message):
    out = tmp_path / "out" / "d.json"
    code = bench.main(["--model", str(run_dir), "--attacked", str(inputs), "--output", str(out), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and message in err, err
    assert not out.exists()


def test_bad_model_and_input_files_are_one_line_errors(run_dir, inputs, tmp_path, capsys):
    out = tmp_path / "d.json"
    assert bench.main(["--model", str(tmp_path / "nothing"), "--attacked", str(inputs), "--output", str(out)]) == 2
    assert "is not a trained pabee run folder" in capsys.readouterr().err
    other = tmp_path / "attacked.txt"
    other.write_text('"a text"\n')
    assert bench.main(["--model", str(run_dir), "--attacked", str(other), "--output", str(out)]) == 2
    assert "does not end in .jsonl: give --clean FILE too" in capsys.readouterr().err
    inputs.write_text('"fine"\n{"text": 3}\n')  # the second request is no /predict "inputs"
    assert bench.main(["--model", str(run_dir), "--attacked", str(inputs), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "request 2: inputs must be a string" in err and not out.exists()


def test_pause_seconds():
    assert pause_seconds(None, "3") == 0.0
    assert pause_seconds("retry-after", "3") == 3.0 and pause_seconds("retry-after", None) == 1.0
    assert pause_seconds("retry-after", "soon") == 1.0 and pause_seconds(0.25, "3") == 0.25


def test_a_client_refused_by_the_work_budget_waits_its_retry_after(run_dir):
    """Fault injection: a one-input batch, a 200 ms batching wait and a tiny work budget refuse concurrent requests
    with 429 and Retry-After: 1; a client waiting it out takes over a second for six tiny requests."""
    import uvicorn

    from pabee.serving.cli import bind_socket

    settings = ServeSettings(max_batch_size=1, max_wait_ms=200, max_queue_seconds=0.001, log_level="warning")
    app = create_app(Predictor.from_pretrained(run_dir), settings)
    sock = bind_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    requests = [(request_body(f"movie number {i}"), 1, True) for i in range(6)]
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        impatient = run_load(url, requests, concurrency=3)
        polite = run_load(url, requests, concurrency=3, pause_after_429="retry-after")
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    for result in (impatient, polite):
        assert result["ok"] + result["errors"].get("http 429", 0) == 6 and result["error_count"] == result[
            "errors"].get("http 429", 0)
    assert polite["errors"]["http 429"] > 0 and polite["wall_s"] >= 1.0  # waited out a Retry-After of >= 1 s
    assert impatient["errors"]["http 429"] > 0 and impatient["error_latency_ms"]["http 429"]["p50"] > 0


def _run(defence, kind, ok, refused, p99, goodput, exit_layer, speed=None, failures=0):
    planned = ok + refused + failures
    errors = {**({"http 429": refused} if refused else {}), **({"timeout": failures} if failures else {})}
    return {"defence": defence, "inputs": kind, "concurrency": 8, "round": 1, "planned": planned, "ok": ok,
            "refused": refused, "failures": failures, "not_sent": 0, "errors": errors, "inputs_ok": ok,
            "inputs_per_s": goodput, "wall_s": 10.0, "mean_exit_layer": exit_layer,
            "latency_ms": {"p50": p99 / 2, "p95": p99 * 0.9, "p99": p99, "max": p99 * 1.1},
            "error_latency_ms": {"http 429": {"p50": 2.0, "p99": 4.0, "max": 5.0}} if refused else {},
            "server": {"mean_batch_size": 8.0, "batches": ok // 8, "model_busy_s": 9.0, "budget_rejections": refused,
                       "statuses": {"200": ok, **({"429": refused} if refused else {})},
                       "seconds_per_layer_row": speed}}


def test_the_page_states_what_the_numbers_give():
    run = {"settings": {"max_queue_seconds": 2.0, "max_wait_ms": 5.0, "max_batch_size": 32},
           "model": {"num_layers": 6}, "runs": [
               _run("off", "clean", 100, 0, 3000.0, 40.0, 3.0, 0.002),
               _run("on", "clean", 100, 0, 2900.0, 38.0, 3.0, 0.002),
               _run("off", "attacked", 100, 0, 6000.0, 20.0, 5.5, 0.002),
               _run("on", "attacked", 60, 40, 2500.0, 19.0, 5.5, 0.0025, failures=1)]}
    (clean, attacked) = findings(run, 8)["defence"]
    # bound = S + W + a full-depth batch of 32 at the measured speed: 2000 + 5 + 32 x 6 x 2.5 ms
    assert attacked["bound_ms"] == pytest.approx(2000 + 5 + 480) and attacked["within"] is False
    assert clean["bound_ms"] == pytest.approx(2000 + 5 + 384) and clean["within"] is False
    assert attacked["goodput_ratio"] == pytest.approx(0.95) and attacked["refused"] == 40
    f = findings(run, 8)
    assert f["failures"] == 1 and f["failure_kinds"] == ["timeout"] and f["accounted"] and f["server_agrees"]
    off, on = f["slowdown"]
    assert (off["exit_clean"], off["exit_attacked"], off["goodput_ratio"]) == (3.0, 5.5, 0.5)
    assert pct_change(off["goodput_ratio"]) == "−50 %" and pct_change(1.004) == "±0 %"
    assert [(r["inputs"], r["defence"]) for r in rows(run, 8)] == [
        ("clean", "off"), ("clean", "on"), ("attacked", "off"), ("attacked", "on")]


@pytest.mark.slow
def test_quick_run_end_to_end_counts_the_429s_then_render_only(run_dir, inputs, tmp_path):
    """Two real servers on the tiny model; a batch of 2, a 50 ms batching wait and a 1 ms budget make the defended
    server refuse: every refusal is counted by the client and by the server, nothing is lost."""
    out_json, out_md = tmp_path / "out" / "serving-defence.json", tmp_path / "out" / "serving-defence.md"
    args = ["--model", str(run_dir), "--attacked", str(inputs), "--quick", "--threads", "1", "--max-batch-size", "2",
            "--max-wait-ms", "50", "--max-queue-seconds", "0.001", "--pause-after-429", "0.02",
            "--work-dir", str(tmp_path / "work"), "--output", str(out_json), "--markdown", str(out_md)]
    assert bench.main(args) == 0
    (run,) = json.loads(out_json.read_text())["runs"]
    assert run["model"]["num_layers"] == 4 and run["model"]["exit_rule"] == "patience:2"
    assert run["servers"]["on"]["max_queue_seconds"] == 0.001 and run["servers"]["off"]["max_queue_seconds"] is None
    assert {(r["defence"], r["inputs"]) for r in run["runs"]} == set(bench.CONFIGS) and len(run["runs"]) == 4
    for r in run["runs"]:
        assert r["planned"] == 32 and r["concurrency"] == 4  # 16 requests, at least 8 x the concurrency
        assert r["ok"] + r["refused"] + r["failures"] + r["not_sent"] == r["planned"] and r["failures"] == 0
        assert r["server"]["inputs"] == r["inputs_ok"] == r["ok"]  # the server predicted exactly the answered
        assert r["server"]["statuses"].get("429", 0) == r["refused"] == r["server"]["budget_rejections"]
        assert r["server"]["pending_layer_rows_after"] == 0 and 1 <= r["mean_exit_layer"] <= 4
        if r["defence"] == "off":
            assert r["refused"] == 0 and r["ok"] == 32
        else:
            assert r["refused"] > 0 and r["ok"] > 0 and r["error_latency_ms"]["http 429"]["max"] > 0
            assert r["server"]["seconds_per_layer_row"] > 0
    page = out_md.read_text()
    assert "--quick smoke run" in page and "### Concurrency 4" in page and "python " in page
    assert "no 5xx, timeout or other error (besides 429) in any run" in page
    assert "every planned request accounted for (2xx + 429 + other errors + not sent = planned): yes" in page
    assert page == render_markdown(json.loads(out_json.read_text()))
    out_md.unlink()
    assert bench.main(["--render-only", "--output", str(out_json), "--markdown", str(out_md)]) == 0
    assert out_md.read_text() == page
