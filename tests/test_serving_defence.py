"""pabee serve's defence against inputs that never exit: admission by worst-case work (--max-queue-seconds).

The budget's logic on a fake clock (durations handed to it, a simulated server), the batcher's accounting, and the
app under a flood of full-depth inputs: only 200s and 429s, and bounded latency (unbounded without the budget).
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from run_fixtures import save_tiny_run

from pabee.predictor import Predictor
from pabee.serving import ServeSettings, create_app
from pabee.serving.admission import OverBudget, WorkBudget
from pabee.serving.batcher import DynamicBatcher, QueueFull
from pabee.serving.cli import serve_parser

LAYERS = 6


def budget(max_seconds=1.0, layers=4, batch=8, **kwargs) -> WorkBudget:
    """A budget whose results are plain ints: the layers each input ran."""
    return WorkBudget(layers, max_seconds, batch, layers_run=int, **kwargs)


# ---------------------------------------------------------------------- the budget alone


def test_speed_is_measured_from_the_layers_really_run():
    b = budget(None, layers=4)
    assert b.seconds_per_layer_row is None and not b.enforced
    b.admit(3)
    assert b.pending_layer_rows == 12  # counted at full depth while pending
    b.finish(3, 0.6, [1, 2, 3])  # 6 layer-rows run in 0.6 s
    assert b.seconds_per_layer_row == pytest.approx(0.1)
    assert b.pending_rows == 0 and b.busy_seconds == pytest.approx(0.6)
    b.admit(2)
    b.finish(2, 0.8, [4, 4])  # 8 layer-rows in 0.8 s: the decayed ratio of sums stays 0.1
    assert b.seconds_per_layer_row == pytest.approx(0.1)
    b.finish(0, 10.0, [])  # nothing ran: no change
    assert b.seconds_per_layer_row == pytest.approx(0.1)


def test_the_estimate_follows_a_slower_machine_and_weighs_big_batches_more():
    b = budget(None, decay=0.5)
    b.finish(0, 0.1, [1] * 100)  # 0.001 s per layer-row
    b.finish(0, 0.01, [1])  # a small slow batch (0.01) barely moves it
    assert b.seconds_per_layer_row < 0.0012
    for _ in range(12):  # the machine is now 10 times slower
        b.finish(0, 1.0, [1] * 100)
    assert b.seconds_per_layer_row == pytest.approx(0.01, rel=0.01)


def test_without_max_seconds_nothing_is_refused():
    b = budget(None, layers=4, batch=2)
    for _ in range(100):
        b.admit(50)
    assert b.pending_rows == 5000 and b.rejected == 0 and b.limit_layer_rows is None


def test_before_any_measurement_the_budget_is_one_full_depth_batch():
    b = budget(1.0, layers=4, batch=8)
    assert b.limit_layer_rows == 32
    b.admit(20)  # an idle server takes any one request, even one larger than the budget
    with pytest.raises(OverBudget) as refused:
        b.admit(1)
    assert refused.value.retry_after == 1 and "not measured yet" in str(refused.value)
    assert isinstance(refused.value, QueueFull)  # answered 429 like a full queue
    b.release(20)
    b.admit(6)
    b.admit(2)  # 8 rows x 4 layers = 32: fits exactly
    with pytest.raises(OverBudget):
        b.admit(1)
    assert b.rejected == 2 and b.pending_rows == 8  # a refused request counts nothing


def test_admission_bounds_the_worst_case_work_in_seconds():
    b = budget(1.0, layers=4, batch=8)
    b.finish(0, 0.4, [4] * 10)  # 40 layer-rows in 0.4 s: 0.01 s each -> at most 100 layer-rows = 25 inputs
    assert b.limit_layer_rows == pytest.approx(100)
    b.admit(20)
    b.admit(5)
    with pytest.raises(OverBudget) as refused:
        b.admit(3)  # 28 x 4 x 0.01 = 1.12 s > 1 s
    message = str(refused.value)
    assert "25 inputs pending and 3 more" in message
    assert "1.12 s at full depth, more than --max-queue-seconds 1" in message
    # 12 pending layer-rows must run first (100 + 12 - 100): 0.12 s -> Retry-After 1 (whole seconds, at least 1)
    assert refused.value.retry_after == 1
    b.release(2)
    b.admit(2)  # 25 pending again: fits after the release
    with pytest.raises(OverBudget) as big:
        b.admit(40)  # larger than the whole budget: fits only when idle, after all 100 pending layer-rows ran
    assert big.value.retry_after == math.ceil(100 * 0.01)


def test_retry_after_counts_the_work_that_must_run_first():
    b = budget(10.0, layers=2, batch=8)
    b.finish(0, 1.0, [2] * 10)  # 0.05 s per layer-row: the budget is 200 layer-rows = 100 inputs
    b.admit(100)
    with pytest.raises(OverBudget) as refused:
        b.admit(30)  # 60 layer-rows must run first: 3 s
    assert refused.value.retry_after == 3


def test_a_simulated_flood_of_full_depth_inputs_never_waits_longer_than_the_budget():
    """A fake clock: inputs arrive far faster than the model runs them, every one at full depth; the model takes
    a fixed overhead plus a cost per layer-row. Every admitted input starts within the budget plus one batch."""
    layers, batch_size, max_seconds, per_layer_row, overhead = 6, 8, 0.5, 0.002, 0.005
    b = budget(max_seconds, layers=layers, batch=batch_size)
    clock, queue, waits, refused = 0.0, [], [], 0
    next_arrival = 0.0
    for _ in range(100):  # batches
        while next_arrival <= clock:  # an input per millisecond arrives while the batch ran
            try:
                b.admit(1)
                queue.append(next_arrival)
            except OverBudget:
                refused += 1
            next_arrival += 0.001
        batch, queue = queue[:batch_size], queue[batch_size:]
        if not batch:
            clock = next_arrival
            continue
        waits.extend(clock - arrived for arrived in batch)
        seconds = overhead + per_layer_row * len(batch) * layers
        clock += seconds
        b.finish(len(batch), seconds, [layers] * len(batch))
    full_batch = overhead + per_layer_row * batch_size * layers
    assert refused > 10 * len(waits)  # the flood really was far beyond capacity
    assert max(waits) <= max_seconds + full_batch
    assert max(waits) > max_seconds / 2  # and the budget was used, not starved
    assert b.seconds_per_layer_row == pytest.approx(full_batch / (batch_size * layers))


# ---------------------------------------------------------------------- the batcher's accounting


def test_the_batcher_releases_refused_cancelled_and_failed_inputs():
    calls = []

    def run_batch(rows):
        calls.append(list(rows))
        if "fail" in rows:
            raise RuntimeError("boom")
        time.sleep(0.01)
        return [4 for _ in rows]

    b = budget(1.0, layers=4, batch=2)

    async def go():
        batcher = DynamicBatcher(run_batch, max_batch_size=2, max_wait_ms=0, max_queue=100, budget=b)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(["a", "b"]))
        await asyncio.sleep(0)
        with pytest.raises(OverBudget):  # 2 x 4 pending: the unmeasured budget (8) is full
            await batcher.submit(["c"])
        assert await first == [4, 4]
        assert b.pending_rows == 0 and b.seconds_per_layer_row is not None
        with pytest.raises(RuntimeError):
            await batcher.submit(["fail"])
        assert b.pending_rows == 0
        blocker = asyncio.ensure_future(batcher.submit(["x"]))
        gone = asyncio.ensure_future(batcher.submit(["y"]))
        await asyncio.sleep(0)
        gone.cancel()  # the caller went away while queued
        await blocker
        await batcher.stop()
        return b.pending_rows

    assert asyncio.run(go()) == 0
    assert ["c"] not in calls


# ---------------------------------------------------------------------- the server under a flood


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return save_tiny_run(tmp_path_factory.mktemp("defence") / "run", patience=2, layers=LAYERS)


class NeverExitsBackend:
    """A model on which no input exits early: every row runs all layers, at a fixed cost per layer-row (a sleep:
    it needs no CPU, so a busy machine delays it little); records each call's time."""

    name = "torch"

    def __init__(self, num_labels, num_layers, seconds_per_layer_row):
        self.num_labels, self.num_layers, self.cost = num_labels, num_layers, seconds_per_layer_row
        self.durations: list[float] = []

    def __call__(self, input_ids, attention_mask, token_type_ids, exit_rule):
        started = time.perf_counter()
        rows = len(input_ids)
        time.sleep(self.cost * rows * self.num_layers)
        self.durations.append(time.perf_counter() - started)
        return np.zeros((rows, self.num_labels), dtype=np.float32), np.full(rows, self.num_layers, dtype=np.int64)


# The flood lasts a number of model calls, not a wall-clock time, and the latency bound is built from what the
# same flood measured (the batches as the server timed them, the refused requests' latency): on a busy machine the
# model calls, the event loop and the test's own clients all slow down, and the checks keep their meaning.
FLOOD_BATCHES = 12  # ~1.5 s of model time at 10 ms per layer-row
FLOOD_LIMIT_SECONDS = 120  # a machine too slow to run them in this time fails the test rather than hanging it


@dataclass
class Flood:
    """What a flood measured."""

    results: list[tuple[int, float, str | None]]  # every response's (status, latency in s, Retry-After)
    metrics: str  # /metrics after the flood
    batches: list[tuple[int, float]]  # (rows, seconds) of every batch the server timed (what its budget learns from)

    def codes(self) -> list[int]:
        return [code for code, _, _ in self.results]

    def latencies(self, status: int) -> list[float]:
        return [latency for code, latency, _ in self.results if code == status]

    def latency_bound(self, max_seconds: float) -> float:
        """How long an admitted request may take: its budget's seconds of work, three batches (the one running when
        it came, the last admitted and its own) at the longest the server timed, 0.5 s for the request itself, and
        the longest a refused request took (it never waited for the model: the clients' and the server's own time
        under this load; 0 without refusals)."""
        longest_batch = max(seconds for _, seconds in self.batches)
        return max_seconds + 3 * longest_batch + 0.5 + max(self.latencies(429), default=0.0)


def flood(app, slow: NeverExitsBackend, clients: int, batches: int = FLOOD_BATCHES) -> Flood:
    """``clients`` callers each sending one-input requests back to back (a short pause after a 429) until the
    model ran ``batches`` calls (or FLOOD_LIMIT_SECONDS passed); the requests in flight then finish."""
    import httpx

    budget = app.state.batcher.budget
    learn, timed = budget.finish, []

    def finish(rows, seconds=None, results=()):  # records every batch the budget learns from, then learns
        if seconds is not None:
            timed.append((rows, seconds))
        learn(rows, seconds, results)

    budget.finish = finish

    async def client(http, i, stop_at, out):
        while len(slow.durations) < batches and time.perf_counter() < stop_at:
            started = time.perf_counter()
            response = await http.post("/predict", json={"inputs": f"the movie number {i} is not good"})
            out.append((response.status_code, time.perf_counter() - started, response.headers.get("retry-after")))
            if response.status_code == 429:
                await asyncio.sleep(0.2)

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://pabee.test", timeout=60) as http:
                out: list = []
                stop_at = time.perf_counter() + FLOOD_LIMIT_SECONDS
                await asyncio.gather(*(client(http, i, stop_at, out) for i in range(clients)))
                return out, (await http.get("/metrics")).text

    results, metrics = asyncio.run(go())
    assert len(slow.durations) >= batches, f"{len(slow.durations)} model calls in {FLOOD_LIMIT_SECONDS} s"
    return Flood(results, metrics, timed)


def flooded_app(run_dir, max_queue_seconds):
    """A model on which inputs never exit, costing 10 ms per layer-row, batches of 2 (~120 ms)."""
    real = Predictor.from_pretrained(run_dir)
    slow = NeverExitsBackend(len(real.info.labels), real.info.num_layers, 0.01)
    predictor = Predictor(slow, real.tokenizer, real.info)
    settings = ServeSettings(max_batch_size=2, max_wait_ms=2, max_queue_seconds=max_queue_seconds)
    return create_app(predictor, settings), slow


def test_a_flood_of_full_depth_inputs_gets_200_or_429_with_bounded_latency(run_dir):
    max_seconds = 0.5
    app, slow = flooded_app(run_dir, max_seconds)
    run = flood(app, slow, clients=40)
    codes, metrics = run.codes(), run.metrics
    assert set(codes) <= {200, 429}, sorted(set(codes))
    assert codes.count(200) >= 4 and codes.count(429) >= 4
    assert all(retry is not None and int(retry) >= 1 for code, _, retry in run.results if code == 429)
    # an admitted input waits for at most the budget's work plus the batch running when it came, then runs
    bound = run.latency_bound(max_seconds)
    assert max(run.latencies(200)) < bound, (max(run.latencies(200)), bound)
    rejections = float(re.search(r"^pabee_budget_rejections_total (\S+)$", metrics, re.M).group(1))
    assert rejections == codes.count(429)
    assert re.search(r'^pabee_exit_layer_bucket\{le="5.0"\} 0.0$', metrics, re.M)  # no input exited early
    assert f'pabee_exit_layer_bucket{{le="{LAYERS}.0"}} {codes.count(200)}.0' in metrics
    # the speed is learnt from the layers really run (6 per input), in the model calls' own time
    speed = float(re.search(r"^pabee_seconds_per_layer_row (\S+)$", metrics, re.M).group(1))
    per_layer_row = [seconds / (rows * LAYERS) for rows, seconds in run.batches]
    assert 0.01 <= min(per_layer_row) <= speed <= max(per_layer_row), (speed, per_layer_row)
    assert re.search(r"^pabee_pending_work_layer_rows 0.0$", metrics, re.M)
    busy = float(re.search(r"^pabee_model_busy_seconds_total (\S+)$", metrics, re.M).group(1))
    assert busy >= sum(slow.durations) > 0.5


def test_without_the_budget_the_same_flood_queues_into_long_waits(run_dir):
    """The same flood with the defence off (the default): nothing refused, and waits beyond the bound above."""
    app, slow = flooded_app(run_dir, None)
    run = flood(app, slow, clients=40)
    assert set(run.codes()) == {200}
    assert max(run.latencies(200)) > run.latency_bound(0.5), (max(run.latencies(200)), run.latency_bound(0.5))
    assert re.search(r"^pabee_work_budget_layer_rows \+Inf$", run.metrics, re.M)
    assert re.search(r"^pabee_budget_rejections_total 0.0$", run.metrics, re.M)


# ---------------------------------------------------------------------- settings and flags


def test_max_queue_seconds_flag_and_info(run_dir):
    args = serve_parser().parse_args([str(run_dir), "--max-queue-seconds", "2.5"])
    assert args.max_queue_seconds == 2.5
    assert ServeSettings().max_queue_seconds is None
    with pytest.raises(ValueError, match="max_queue_seconds must be a positive number"):
        ServeSettings(max_queue_seconds=0)
    predictor = Predictor.from_pretrained(run_dir)
    app = create_app(predictor, ServeSettings(max_queue_seconds=2.5))
    import httpx

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://pabee.test") as http:
                return (await http.get("/info")).json(), (await http.get("/metrics")).text

    info, metrics = asyncio.run(go())
    assert info["max_queue_seconds"] == 2.5
    assert re.search(r"^pabee_seconds_per_layer_row NaN$", metrics, re.M)  # nothing measured yet
    assert re.search(rf"^pabee_work_budget_layer_rows {32.0 * LAYERS}$", metrics, re.M)  # one full batch


@pytest.mark.parametrize("value", ["0", "-1", "inf", "soon"])
def test_bad_max_queue_seconds_is_a_one_line_error(run_dir, capsys, value):
    from pabee.cli import main

    try:
        code = main(["serve", str(run_dir), "--max-queue-seconds", value])
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "--max-queue-seconds" in err, err


# ---------------------------------------------------------------------- the documented alert rules

OPERATIONS_DOC = Path(__file__).resolve().parents[1] / "docs" / "serving-operations.md"


def documented_rules() -> str:
    """The Prometheus rules YAML of docs/serving-operations.md."""
    return re.search(r"```yaml\n(.*?)```", OPERATIONS_DOC.read_text(), re.S).group(1)


def test_the_operations_doc_names_only_metrics_the_server_exposes(run_dir):
    import httpx
    import yaml

    app = create_app(Predictor.from_pretrained(run_dir), ServeSettings(max_queue_seconds=1))

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://pabee.test") as http:
                await http.post("/predict", json={"inputs": [["good"], ["bad", "sad"]]})
                return (await http.get("/metrics")).text

    exposed = set()
    for line in asyncio.run(go()).splitlines():
        match = re.match(r"# TYPE (\w+)|(\w+)[{ ]", line)
        if match:
            exposed.add(match.group(1) or match.group(2))
    named = set(re.findall(r"\bpabee_[a-z_]+", OPERATIONS_DOC.read_text()))
    assert "pabee_exit_layer_bucket" in named and "pabee_budget_rejections_total" in named
    assert named <= exposed, sorted(named - exposed)
    rules = [rule for group in yaml.safe_load(documented_rules())["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in rules if "alert" in rule} >= {"PabeeInputsStopExitingEarly", "PabeeShedsLoad"}
    assert f'le="{LAYERS - 1}.0"' in documented_rules()  # the full-depth share of the 6-layer example


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Prometheus) is not installed")
def test_the_documented_alert_rules_pass_promtool(tmp_path):
    (tmp_path / "pabee-rules.yml").write_text(documented_rules())
    shutil.copy(Path(__file__).parent / "data" / "serving_alerts_promtool.yml", tmp_path / "test.yml")
    for command in (["check", "rules", "pabee-rules.yml"], ["test", "rules", "test.yml"]):
        done = subprocess.run(["promtool", *command], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_burst_is_admitted_on_arrival_not_after_tokenizing(run_dir):
    """Six requests arrive together while tokenizing takes 0.4 s each (in parallel threads). The budget before any
    measurement is one batch (2 inputs): two are admitted and four refused at once — counted on arrival, the
    inputs being tokenized are pending work, so the burst cannot all pass while the queue is still empty."""
    import httpx

    real = Predictor.from_pretrained(run_dir)
    slow = NeverExitsBackend(len(real.info.labels), real.info.num_layers, 0.001)
    predictor = Predictor(slow, real.tokenizer, real.info)
    encode = predictor.encode

    def slow_encode(inputs):
        time.sleep(0.4)
        return encode(inputs)

    predictor.encode = slow_encode
    app = create_app(predictor, ServeSettings(max_batch_size=2, max_wait_ms=2, max_queue_seconds=0.5))

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://pabee.test", timeout=60) as http:
                async def one(i):
                    started = time.perf_counter()
                    r = await http.post("/predict", json={"inputs": f"burst input {i}"})
                    return r.status_code, time.perf_counter() - started
                out = await asyncio.gather(*(one(i) for i in range(6)))
                return out, (await http.get("/metrics")).text

    results, metrics = asyncio.run(go())
    codes = sorted(code for code, _ in results)
    assert codes == [200, 200, 429, 429, 429, 429], codes
    refused = [latency for code, latency in results if code == 429]
    assert max(refused) < 0.4, refused  # refused before tokenizing, not after waiting for it
    assert re.search(r"^pabee_pending_work_layer_rows 0.0$", metrics, re.M)  # every reservation released


def test_a_full_budget_refuses_before_reading_the_body_and_after_the_api_key(run_dir):
    """With no room for even one input, POST /predict gets 429 without its body being read or parsed (a malformed
    body is refused, not reported as 422: shedding costs no work); the API key is still checked first, other routes
    still answer, and every answer is counted."""
    import httpx

    predictor = Predictor.from_pretrained(run_dir)
    app = create_app(predictor, ServeSettings(max_batch_size=2, max_queue_seconds=0.5, api_key="k"))
    budget = app.state.budget
    key = {"Authorization": "Bearer k"}

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://pabee.test") as http:
                budget.admit(2)  # before any measurement the budget is one batch: now full
                full = [await http.post("/predict", content=b"{not json", headers=key),
                        await http.post("/predict", json={"inputs": "fine"}),  # no key: 401 comes first
                        await http.get("/info", headers=key)]
                budget.release(2)
                free = await http.post("/predict", content=b"{not json", headers=key)
                return full, free, (await http.get("/metrics", headers=key)).text

    (refused, no_key, info), free, metrics = asyncio.run(go())
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error_type"] == "Overloaded" and "busy" in refused.json()["error"]
    assert no_key.status_code == 401 and info.status_code == 200
    assert free.status_code == 422  # with room again, the same body is read and found malformed
    assert budget.rejected == 1 and budget.pending_rows == 0
    assert re.search(r'^pabee_requests_total\{path="/predict",status="429"\} 1.0$', metrics, re.M)
    assert re.search(r'^pabee_requests_total\{path="/predict",status="401"\} 1.0$', metrics, re.M)
    assert re.search(r'^pabee_request_errors_total\{path="/predict",status="422"\} 1.0$', metrics, re.M)
