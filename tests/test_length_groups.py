"""Length groups: a batch of mixed lengths runs as model calls of similar lengths (pabee.length_groups), in the
server too (less padding, same answers, counted in /metrics)."""

from __future__ import annotations

import asyncio
import itertools
import random

import httpx
import numpy as np
import pytest
from run_fixtures import save_tiny_run

from pabee.length_groups import LengthGroupedRunner, plan_length_groups
from pabee.predictor import Predictor
from pabee.serving import ServeSettings, create_app


def cost(lengths, groups, overhead):
    return sum(overhead + len(g) * max(lengths[i] for i in g) for g in groups)


def brute_force(lengths, overhead):
    """The least cost over every cut of the length-sorted rows into consecutive groups."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = None
    for cuts in itertools.product((False, True), repeat=len(order) - 1):
        groups, current = [], [order[0]]
        for cut, i in zip(cuts, order[1:]):
            if cut:
                groups.append(current)
                current = []
            current.append(i)
        groups.append(current)
        c = cost(lengths, groups, overhead)
        best = c if best is None else min(best, c)
    return best


@pytest.mark.parametrize("overhead", [0, 5, 32, 200])
def test_plan_is_the_cheapest_cut(overhead):
    rng = random.Random(overhead)
    for _ in range(30):
        lengths = [rng.randint(3, 120) for _ in range(rng.randint(1, 9))]
        groups = plan_length_groups(lengths, overhead)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))  # every row exactly once
        assert cost(lengths, groups, overhead) == brute_force(lengths, overhead)


def test_plan_splits_only_when_padding_outweighs_calls():
    assert plan_length_groups([50] * 8, 0) == [list(range(8))]  # nothing padded: one call
    assert plan_length_groups([], 32) == [[]] and plan_length_groups([7], 32) == [[0]]
    lengths = [10, 200, 12, 210]
    assert plan_length_groups(lengths, 32) == [[0, 2], [1, 3]]  # saves 2 x 190 padded tokens for one call
    assert plan_length_groups(lengths, 1000) == [[0, 2, 1, 3]]  # a call costs more than the padding saved
    with pytest.raises(ValueError, match="call_overhead must be >= 0"):
        plan_length_groups(lengths, -1)


class Row:
    def __init__(self, n):
        self.input_ids = list(range(n))


def test_runner_answers_in_batch_order_and_counts_padding():
    calls = []

    def run(rows):
        calls.append([len(r.input_ids) for r in rows])
        return [len(r.input_ids) * 10 for r in rows]

    rows = [Row(n) for n in (10, 200, 12, 210, 11)]
    runner = LengthGroupedRunner(run, 32)
    assert runner(rows) == [100, 2000, 120, 2100, 110]
    assert calls == [[10, 11, 12], [200, 210]]
    assert (runner.calls, runner.tokens, runner.padded_tokens) == (2, 443, 3 * 12 + 2 * 210)
    plain = LengthGroupedRunner(run, None)  # never split
    assert plain(rows) == [100, 2000, 120, 2100, 110] and calls[-1] == [10, 200, 12, 210, 11]
    assert (plain.calls, plain.padded_tokens) == (1, 5 * 210)
    assert runner([]) == []
    with pytest.raises(RuntimeError, match="returned 1 results for 2 inputs"):
        LengthGroupedRunner(lambda rows: [0], 32)([Row(5), Row(6)])
    with pytest.raises(ValueError):
        LengthGroupedRunner(run, -3)


# ---------------------------------------------------------------------------------------------------- server

SHORT, LONG = "fun", "good movie " * 40  # the tiny model's limit is 64 tokens: LONG is cut to it


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return Predictor.from_pretrained(save_tiny_run(tmp_path_factory.mktemp("groups") / "run", patience=2))


def serve(predictor, settings, inputs):
    """Send every input as its own request, concurrently; the responses and the /metrics samples after."""
    app = create_app(predictor, settings)

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://pabee.test") as client:
                responses = await asyncio.gather(*(client.post("/predict", json={"inputs": x, "raw_scores": True})
                                                   for x in inputs))
                return responses, (await client.get("/metrics")).text

    responses, text = asyncio.run(go())
    samples = {line.split()[0]: float(line.split()[-1]) for line in text.splitlines()
               if line and not line.startswith("#")}
    return responses, samples


@pytest.mark.parametrize("overhead", [32, 0])
def test_server_runs_a_mixed_batch_in_length_groups(predictor, overhead):
    inputs = [SHORT, LONG] * 4
    settings = ServeSettings(max_batch_size=8, max_wait_ms=500, call_overhead_tokens=overhead)
    responses, m = serve(predictor, settings, inputs)
    for x, response in zip(inputs, responses):  # same answers as each input alone
        alone = predictor.run(predictor.encode([x]))[0]
        scores = {e["label"]: e["score"] for e in response.json()}
        assert response.status_code == 200
        assert np.allclose([scores[label] for label in predictor.info.labels], alone.logits, atol=1e-5)
        assert response.json()[0]["exit_layer"] == alone.exit_layer
    batches, calls = m["pabee_batch_size_count"], m["pabee_model_calls_total"]
    padding = m["pabee_padded_tokens_total"] / m["pabee_tokens_total"]
    assert batches < len(inputs)  # requests shared batches
    if overhead:  # the short inputs ran apart from the long ones: hardly any padding
        assert calls > batches and padding < 1.05, (calls, batches, padding)
    else:  # one call per batch: the short inputs padded to the long ones' 64 tokens
        assert calls == batches and padding > 1.5, (calls, batches, padding)


def test_call_overhead_flag_is_checked(tmp_path, capsys):
    from pabee.cli import main

    assert ServeSettings().call_overhead_tokens == 32
    with pytest.raises(ValueError, match="call_overhead_tokens must be an integer >= 0"):
        ServeSettings(call_overhead_tokens=-1)
    with pytest.raises(SystemExit) as stop:
        main(["serve", str(tmp_path), "--call-overhead-tokens", "-1"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1 and "expected an integer >= 0" in err, err
