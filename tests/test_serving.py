"""pabee serve: the ASGI app in-process (every endpoint and error code, batching), and one real server process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from run_fixtures import save_tiny_run

from pabee.predictor import Predictor
from pabee.serving import ServeSettings, create_app
from pabee.serving.batcher import DynamicBatcher, QueueFull, ShuttingDown

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["the cat sat on the mat.", "good movie", ["good movie", "great film"], "bad plot, slow and sad!", "fun",
         ["a man is happy", "the dog is not sad"], "the movie is not good", "great great film"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return save_tiny_run(tmp_path_factory.mktemp("serve") / "run", patience=2)


@pytest.fixture(scope="module")
def predictor(run_dir):
    return Predictor.from_pretrained(run_dir)


@asynccontextmanager
async def served(app):
    """The app with its lifespan (batcher start, drain at the end) and an in-process HTTP client."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pabee.test") as client:
            yield client


def call(app, *requests, then=()):
    """Send (method, path, kwargs) requests concurrently, then the ``then`` requests one by one; the responses."""

    async def go():
        async with served(app) as client:
            responses = await asyncio.gather(*(client.request(m, p, **kw) for m, p, kw in requests))
            return [*responses, *[await client.request(m, p, **kw) for m, p, kw in then]]

    return asyncio.run(go())


def test_health_info_and_metrics(predictor, run_dir):
    app = create_app(predictor, ServeSettings(model_name=str(run_dir)))
    health, info, _, metrics = call(app, ("GET", "/health", {}), ("GET", "/info", {}),
                                    ("POST", "/predict", {"json": {"inputs": [["good"], ["bad", "sad"]]}}),
                                    then=[("GET", "/metrics", {})])
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    body = info.json()
    assert body["model"] == str(run_dir) and body["labels"] == ["sad", "happy", "meh"]
    assert (body["num_layers"], body["exit_rule"], body["backend"], body["max_input_length"]) == (6, "patience:2",
                                                                                                  "torch", 64)
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for layer in range(1, 7):  # one bucket per layer: operators see where inputs exit
        assert f'pabee_exit_layer_bucket{{le="{layer}.0"}}' in text
    assert "pabee_exit_layer_count 2.0" in text
    assert 'pabee_requests_total{path="/predict",status="200"} 1.0' in text
    for name in ("pabee_queue_depth", "pabee_request_latency_seconds_count", "pabee_batch_size_count"):
        assert name in text


def test_predict_shapes_match_text_embeddings_inference(predictor):
    app = create_app(predictor)
    single, pair, batch, raw = call(
        app,
        ("POST", "/predict", {"json": {"inputs": "good movie"}}),
        ("POST", "/predict", {"json": {"inputs": ["good movie", "great film"]}}),
        ("POST", "/predict", {"json": {"inputs": [["good movie"], ["good movie", "great film"]]}}),
        ("POST", "/predict", {"json": {"inputs": "good movie", "raw_scores": True}}),
    )
    expected = predictor.predict(["good movie", ("good movie", "great film")])
    for response, p in [(single, expected[0]), (pair, expected[1])]:
        assert response.status_code == 200
        entries = response.json()
        assert [e["label"] for e in entries] == sorted(p.probabilities, key=p.probabilities.get, reverse=True)
        assert [e["score"] for e in entries] == sorted((e["score"] for e in entries), reverse=True)
        assert sum(e["score"] for e in entries) == pytest.approx(1.0)
        assert {e["exit_layer"] for e in entries} == {p.exit_layer}
        assert response.headers["x-exit-layers"] == str(p.exit_layer)
    # a batch answers as the single requests did: the same labels and exit layers; scores equal up to float32
    # rounding (matrix kernels may sum in another order for another batch shape, e.g. with AMX on Intel CPUs)
    for batched, alone in zip(batch.json(), [single.json(), pair.json()], strict=True):
        assert [(e["label"], e["exit_layer"], e["truncated"]) for e in batched] == [
            (e["label"], e["exit_layer"], e["truncated"]) for e in alone]
        assert [e["score"] for e in batched] == pytest.approx([e["score"] for e in alone], rel=1e-5, abs=1e-7)
    assert batch.headers["x-exit-layers"] == f"{expected[0].exit_layer},{expected[1].exit_layer}"
    logits = {e["label"]: e["score"] for e in raw.json()}
    assert [logits[label] for label in ("sad", "happy", "meh")] == pytest.approx(expected[0].logits, abs=1e-5)


def test_concurrent_requests_equal_one_at_a_time(predictor):
    app = create_app(predictor, ServeSettings(max_wait_ms=50, max_batch_size=8))
    requests = [("POST", "/predict", {"json": {"inputs": TEXTS[i % len(TEXTS)], "raw_scores": True}})
                for i in range(20)]
    *responses, metrics = call(app, *requests, then=[("GET", "/metrics", {})])
    for i, response in enumerate(responses):
        item = TEXTS[i % len(TEXTS)]
        alone = predictor.run(predictor.encode([tuple(item) if isinstance(item, list) else item]))[0]
        assert response.status_code == 200
        logits = {e["label"]: e["score"] for e in response.json()}
        assert np.allclose([logits[label] for label in ("sad", "happy", "meh")], alone.logits, atol=1e-5)
        assert response.json()[0]["label"] == alone.label
        assert response.json()[0]["exit_layer"] == alone.exit_layer
    assert len({r.json()[0]["exit_layer"] for r in responses}) > 1  # rows of one batch exited on their own
    count = float(next(line.split()[-1] for line in metrics.text.splitlines()
                       if line.startswith("pabee_batch_size_count")))
    assert count < 20  # requests really shared model calls


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"content": b"{not json"}, 422, "Invalid JSON"),
        ({"json": {"raw_scores": True}}, 422, "inputs: Field required"),
        ({"json": {"inputs": 3}}, 422, "inputs must be a string"),
        ({"json": {"inputs": []}}, 422, "inputs is empty"),
        ({"json": {"inputs": ["a", "b", "c"]}}, 422, "inputs has 3 strings"),
        ({"json": {"inputs": [["a"], "b"]}}, 422, "inputs[1] must be [string] or [string, string]"),
        ({"json": {"inputs": [["a"], []]}}, 422, "inputs[1] has 0 strings"),
        ({"json": {"inputs": "a", "raw_scores": "maybe"}}, 422, "raw_scores: Input should be a valid boolean"),
        ({"json": {"inputs": [["a"]] * 5}}, 413, "5 inputs in one request, more than the limit of 4"),
        ({"json": {"inputs": "good " * 300}}, 413, "more than the limit of 1000"),
        ({"content": "chunked"}, 413, "more than the limit of 1000 bytes"),  # no Content-Length: counted
        ({"json": {"inputs": "good " * 100, "truncate": False}}, 413, "more than the model's limit of 64"),
    ],
)
def test_bad_requests_get_4xx_with_a_message(predictor, kwargs, status, message):
    app = create_app(predictor, ServeSettings(max_inputs=4, max_input_bytes=1000))
    if kwargs.get("content") == "chunked":
        kwargs = {"content": _chunks(b"x" * 600, 3)}
    response, after = call(app, ("POST", "/predict", kwargs), then=[("POST", "/predict", {"json": {"inputs": "good"}})])
    assert response.status_code == status
    assert message in response.json()["error"]
    assert response.json()["error_type"] == "Validation"
    assert after.status_code == 200  # the server keeps serving


async def _chunks(chunk: bytes, n: int):
    for _ in range(n):
        yield chunk


def test_long_input_is_truncated_and_flagged(predictor):
    (response,) = call(create_app(predictor), ("POST", "/predict", {"json": {"inputs": [["good " * 100], ["fun"]]}}))
    assert response.status_code == 200
    assert [entries[0]["truncated"] for entries in response.json()] == [True, False]


def test_unknown_route_and_method_are_json_errors(predictor):
    missing, method = call(create_app(predictor), ("GET", "/nope", {}), ("GET", "/predict", {}))
    assert (missing.status_code, method.status_code) == (404, 405)
    assert missing.json()["error"] == "Not Found"


def test_api_key_guards_every_endpoint_but_health(predictor):
    app = create_app(predictor, ServeSettings(api_key="s3cret"))
    good = {"headers": {"Authorization": "Bearer s3cret"}}
    bad = {"headers": {"Authorization": "Bearer nope"}}
    responses = call(
        app,
        ("GET", "/health", {}), ("GET", "/info", {}), ("GET", "/metrics", bad),
        ("POST", "/predict", {"json": {"inputs": "good"}}), ("POST", "/predict", {"json": {"inputs": "good"}, **good}),
        ("GET", "/info", good),
    )
    assert [r.status_code for r in responses] == [200, 401, 401, 401, 200, 200]
    assert responses[1].json()["error_type"] == "Unauthorized"
    assert responses[1].headers["www-authenticate"] == "Bearer"


class SlowBackend:
    """The real backend, slowed down: the queue fills while it runs."""

    def __init__(self, backend, seconds):
        self.backend, self.seconds, self.name = backend, seconds, backend.name

    def __call__(self, *args):
        time.sleep(self.seconds)
        return self.backend(*args)


def test_full_queue_gets_429(predictor):
    slow = Predictor(SlowBackend(predictor.backend, 0.3), predictor.tokenizer, predictor.info)
    app = create_app(slow, ServeSettings(max_queue=2, max_batch_size=1, max_inputs=2, max_wait_ms=0))
    responses = call(app, *[("POST", "/predict", {"json": {"inputs": f"good {i}"}}) for i in range(6)])
    codes = sorted(r.status_code for r in responses)
    assert 200 in codes and 429 in codes and set(codes) <= {200, 429}, codes
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error_type"] == "Overloaded" and "queue is full" in refused.json()["error"]


class FailingBackend:
    name = "torch"

    def __call__(self, *args):
        raise RuntimeError("boom")


def test_a_failing_model_call_is_answered_and_logged(predictor, caplog):
    broken = Predictor(FailingBackend(), predictor.tokenizer, predictor.info)
    app = create_app(broken)
    failed, health = call(app, ("POST", "/predict", {"json": {"inputs": "good"}}), then=[("GET", "/health", {})])
    assert failed.status_code == 500 and failed.json()["error_type"] == "Backend"
    assert health.status_code == 200
    assert "model call on a batch of 1 inputs failed" in caplog.text


def test_batcher_drains_its_queue_when_stopped():
    def run_batch(rows):
        time.sleep(0.05)
        return [r * 10 for r in rows]

    async def go():
        batcher = DynamicBatcher(run_batch, max_batch_size=4, max_wait_ms=10_000, max_queue=6)
        batcher.start()
        waiting = [asyncio.ensure_future(batcher.submit([i])) for i in range(3)]
        await asyncio.sleep(0.05)
        assert batcher.depth == 3  # a partial batch, waiting up to 10 s for a fourth input
        with pytest.raises(QueueFull):
            await batcher.submit(list(range(4)))  # 3 + 4 > 6
        await batcher.stop()  # runs the queued inputs at once
        with pytest.raises(ShuttingDown):
            await batcher.submit([1])
        return await asyncio.wait_for(asyncio.gather(*waiting), 1)

    started = time.perf_counter()
    assert asyncio.run(go()) == [[0], [10], [20]]
    assert time.perf_counter() - started < 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def metric_value(text: str, name: str) -> float | None:
    """The value of an unlabelled sample ``name`` in a Prometheus text page (None when it is absent)."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def wait_until(condition, what: str, seconds: float, alive=lambda: True, log: Path | None = None) -> None:
    """Poll ``condition`` until it is true; fail (with ``log``'s text) after ``seconds`` or once ``alive`` is not.

    The limit is generous on purpose: on a busy machine the server is slow to start and answer, and waiting for
    an observed state instead of sleeping a guessed time keeps the test's meaning whatever the load."""
    deadline = time.monotonic() + seconds
    while not condition():
        detail = log.read_text() if log is not None else ""
        assert alive(), f"the server died while waiting for {what}\n{detail}"
        assert time.monotonic() < deadline, f"no {what} after {seconds:g} s\n{detail}"
        time.sleep(0.1)


MAX_WAIT_MS = 5000  # the SIGTERM test's batch wait


def test_serve_process_drains_queued_requests_on_sigterm(run_dir, tmp_path):
    """SIGTERM while four requests wait in the queue for a fuller batch: each is answered (200) and the server
    exits 0.

    SIGTERM is sent once /metrics shows all four inputs queued, not after a guessed sleep (which a busy machine
    outlasts or undercuts); the batch wait (MAX_WAIT_MS) leaves seconds for that and is far below the server's
    graceful-shutdown limit (60 s), after which requests still in flight would be cut off."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "PABEE_API_KEY": "k"}
    log_path = tmp_path / "server.log"
    log = open(log_path, "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "pabee.cli", "serve", str(run_dir), "--port", str(port),
         "--max-wait-ms", str(MAX_WAIT_MS), "--max-batch-size", "64", "--threads", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer k"}

    def alive() -> bool:
        return process.poll() is None

    def get(path, **kwargs) -> httpx.Response | None:
        try:
            return httpx.get(f"{base}{path}", timeout=10, **kwargs)
        except httpx.TransportError:
            return None

    try:
        wait_until(lambda: (r := get("/health")) is not None and r.status_code == 200, "answer on /health", 300,
                   alive, log_path)
        assert get("/info").status_code == 401  # the key came from the environment
        results: dict[int, httpx.Response] = {}

        def send(i):
            results[i] = httpx.post(f"{base}/predict", json={"inputs": TEXTS[i]}, headers=auth, timeout=300)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()

        def queued() -> float | None:
            response = get("/metrics", headers=auth)
            return None if response is None else metric_value(response.text, "pabee_queue_depth")

        wait_until(lambda: queued() == 4 or results, "4 inputs queued", 300, alive, log_path)
        assert not results, f"a batch ran before SIGTERM: 4 requests took over {MAX_WAIT_MS} ms to be queued"
        process.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(300)
        assert process.wait(300) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log_path.read_text()
    assert sorted(results) == [0, 1, 2, 3]
    for response in results.values():
        assert response.status_code == 200, output
        assert json.loads(response.text)[0]["label"] in ("sad", "happy", "meh")
    assert "Traceback" not in output
    assert f"http://127.0.0.1:{port}" in output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--max-batch-size", "0"], "expected a positive integer"),
        (["--max-inputs", "64", "--max-queue", "8"], "max_inputs (64) is more than max_queue (8)"),
        (["--backend", "onnx"], "not an ONNX export (no pabee_onnx.json)"),
    ],
)
def test_serve_argument_errors_are_one_line(run_dir, capsys, args, expected):
    from pabee.cli import main

    try:
        code = main(["serve", str(run_dir), *args])
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and expected in err, err
