"""The ASGI app: ``POST /predict`` (text-embeddings-inference shapes), ``GET /health``, ``/info`` and ``/metrics``.

``POST /predict`` takes ``{"inputs": ..., "raw_scores": false, "truncate": true}`` where ``inputs`` is a text
(``"text"``), a pair (``["a", "b"]``; ``["a"]`` is one text) or a batch of texts and pairs
(``[["a"], ["a", "b"], ...]``). It answers, per input, every label with its probability (its logit with
``raw_scores``; the value for regression), highest first: a list for one input, a list of lists for a batch.
Each entry also carries ``exit_layer`` (the layer the input left the model at) and ``truncated`` (the input was cut
to the model's limit); the ``X-Exit-Layers`` header lists the exit layers, comma-separated, in input order.
With ``"truncate": false`` an input longer than the model's limit is refused with 413 instead.

Errors are JSON ``{"error": message, "error_type": kind}``: 401 (missing or wrong API key), 413 (body or batch too
large, input too long without truncation), 422 (invalid JSON or request), 429 (queue full; with
``--max-queue-seconds``, also when the pending worst-case work is over budget, with ``Retry-After``), 503 (shutting
down).
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..length_groups import LengthGroupedRunner
from ..predictor import Encoded, Prediction, Predictor
from .admission import OverBudget, WorkBudget
from .batcher import DynamicBatcher, QueueFull, ShuttingDown
from .guard import RequestGuard, error_response, over_budget_response
from .metrics import ServerMetrics
from .settings import ServeSettings

logger = logging.getLogger(__name__)


class PredictRequest(BaseModel):
    """The body of ``POST /predict`` (``inputs`` is checked by :func:`parse_inputs`, for clearer messages)."""

    inputs: Any
    raw_scores: bool = False
    truncate: bool = True


class ApiError(Exception):
    """An error answer: HTTP status, message and text-embeddings-inference error type."""

    def __init__(self, status: int, message: str, error_type: str = "Validation"):
        super().__init__(message)
        self.status, self.message, self.error_type = status, message, error_type

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        return error_response(self.status, self.message, self.error_type, headers)


def parse_inputs(value: Any) -> tuple[list[str | tuple[str, str]], bool]:
    """text-embeddings-inference ``inputs`` -> (texts and pairs, True when it was a single input)."""
    if isinstance(value, str):
        return [value], True
    if not isinstance(value, list):
        raise ApiError(422, f"inputs must be a string, a pair [string, string] or a list of them, got "
                            f"{type(value).__name__}")
    if not value:
        raise ApiError(422, "inputs is empty")
    if all(isinstance(v, str) for v in value):  # one text or one pair
        return [_sequence(value, "inputs")], True
    items = []
    for i, item in enumerate(value):
        if not isinstance(item, list) or not all(isinstance(v, str) for v in item):
            raise ApiError(422, f"inputs[{i}] must be [string] or [string, string] in a batch")
        items.append(_sequence(item, f"inputs[{i}]"))
    return items, False


def _sequence(item: list[str], where: str) -> str | tuple[str, str]:
    if len(item) not in (1, 2):
        raise ApiError(422, f"{where} has {len(item)} strings: an input is one text or a pair of two")
    for text in item:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(422, f"{where} is not valid Unicode text (unpaired surrogate)") from None
    return item[0] if len(item) == 1 else (item[0], item[1])


def _validation_message(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = first.get("msg", "invalid request")
    return f"{where}: {message}" if where else f"request body: {message}"


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body has {declared} bytes, more than the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body is more than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(predictor: Predictor, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app serving ``predictor``; its batcher starts with the app's lifespan (or at the first request)
    and, at shutdown, runs what is still queued before the app stops."""
    settings = settings or ServeSettings()
    metrics = ServerMetrics(predictor.info.num_layers, settings.max_batch_size)
    budget = WorkBudget(predictor.info.num_layers, settings.max_queue_seconds, settings.max_batch_size)
    metrics.watch_budget(budget)

    def on_batch(rows: list[Encoded], results: list[Prediction]) -> None:
        metrics.observe_batch(len(rows), [p.exit_layer for p in results], sum(p.truncated for p in results))

    # a batch is the requests waiting, in arrival order: run it as length groups, or it pads to its longest input
    runner = LengthGroupedRunner(predictor.run, settings.call_overhead_tokens or None)
    metrics.watch_calls(runner)
    batcher = DynamicBatcher(
        runner, settings.max_batch_size, settings.max_wait_ms, settings.max_queue,
        on_batch=on_batch, on_depth=metrics.queue_depth.set, budget=budget,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        logger.info("serving %s: %s", settings.model_name or "model", predictor.describe())
        yield
        logger.info("shutting down: running the %d queued inputs", batcher.depth)
        await batcher.stop()

    app = FastAPI(title="pabee", version=__version__, lifespan=lifespan,
                  description="Patience-based early exit classifier (text-embeddings-inference /predict shapes)")
    app.state.predictor, app.state.batcher, app.state.metrics, app.state.settings = predictor, batcher, metrics, settings
    app.state.budget, app.state.runner = budget, runner
    app.add_middleware(RequestGuard, metrics=metrics, budget=budget, api_key=settings.api_key)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, f"{where}: {first.get('msg', 'invalid request')}", "Validation")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        return error_response(err.status_code, str(err.detail), "Validation", getattr(err, "headers", None))

    @app.post("/predict", openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": PredictRequest.model_json_schema()}}}})
    async def predict(request: Request):
        """Classify one input or a batch (text-embeddings-inference request and response shapes)."""
        start = time.perf_counter()
        try:
            return await _predict(request)
        except ApiError as err:
            return err.response()
        finally:
            metrics.latency.observe(time.perf_counter() - start)

    async def _predict(request: Request) -> JSONResponse:
        body = await _read_body(request, settings.max_input_bytes)
        try:
            req = PredictRequest.model_validate_json(body)
        except ValidationError as err:
            raise ApiError(422, _validation_message(err)) from None
        inputs, single = parse_inputs(req.inputs)
        if len(inputs) > settings.max_inputs:
            raise ApiError(413, f"{len(inputs)} inputs in one request, more than the limit of {settings.max_inputs}")
        try:
            # Reserved from arrival, before the work of tokenizing: requests still being tokenized count as pending
            # work, so a burst cannot all pass the check while the queue is still empty, and a refusal is immediate.
            budget.admit(len(inputs))
        except OverBudget as err:
            return over_budget_response(err)
        try:
            rows = await run_in_threadpool(predictor.encode, inputs)
            if not req.truncate:
                for i, row in enumerate(rows):
                    if row.truncated:
                        raise ApiError(413, f"input {i} has {row.num_tokens} tokens, more than the model's limit "
                                            f"of {predictor.max_length}; shorten it or send \"truncate\": true")
        except BaseException:
            budget.release(len(inputs))  # never queued
            raise
        try:
            results = await batcher.submit(rows, reserved=True)
        except OverBudget as err:
            return over_budget_response(err)
        except QueueFull as err:
            raise ApiError(429, str(err), "Overloaded") from None
        except ShuttingDown as err:
            raise ApiError(503, str(err), "Unhealthy") from None
        except Exception as err:  # the model failed on a batch: logged by the batcher
            raise ApiError(500, f"the model failed on this batch: {type(err).__name__}", "Backend") from None
        payload = [p.ranked(req.raw_scores) for p in results]
        headers = {"X-Exit-Layers": ",".join(str(p.exit_layer) for p in results)}
        return JSONResponse(payload[0] if single else payload, headers=headers)

    @app.get("/health")
    async def health():
        """200 while serving; 503 once shutting down."""
        if batcher.closing:
            return error_response(503, "shutting down", "Unhealthy")
        return {"status": "ok"}

    @app.get("/info")
    async def info():
        """The model (labels, layers, exit rule, backend, length limit) and the server's limits."""
        return {
            "model": settings.model_name,
            **predictor.describe(),
            "max_batch_size": settings.max_batch_size,
            "max_wait_ms": settings.max_wait_ms,
            "max_queue": settings.max_queue,
            "max_queue_seconds": settings.max_queue_seconds,
            "max_inputs": settings.max_inputs,
            "max_input_bytes": settings.max_input_bytes,
            "version": __version__,
        }

    @app.get("/metrics")
    async def prometheus_metrics():
        """Prometheus text format."""
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return app
