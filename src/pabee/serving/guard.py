"""The server's outermost layer, as plain ASGI: the API key, shedding load before any work, and counting answers.

Every HTTP request passes :class:`RequestGuard` first. It answers 401 when an API key is required and missing or
wrong; with a work budget (``--max-queue-seconds``) it answers ``POST /predict`` with 429 and ``Retry-After`` when
not even one more input would be admitted, *before the body is read*: under a flood, a refusal then costs the
server little more than the HTTP exchange, leaving the CPU to the model. (The full check, with the request's own
number of inputs, still runs once the body is parsed.) It counts every answer by path and status in
``pabee_requests_total`` (and errors in ``pabee_request_errors_total``), and turns an unexpected exception into a
logged JSON 500 so the server keeps running. Written as plain ASGI rather than an ``@app.middleware("http")``
function, whose wrapping of every request and response in Starlette's ``BaseHTTPMiddleware`` costs more CPU than
the refusal itself.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.responses import JSONResponse

from .admission import OverBudget, WorkBudget
from .metrics import ServerMetrics

logger = logging.getLogger(__name__)
ROUTES = ("/predict", "/health", "/info", "/metrics")
OPEN_ROUTES = ("/health",)  # answered without the API key

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def error_response(status: int, message: str, error_type: str, headers: dict | None = None) -> JSONResponse:
    """An error answer in text-embeddings-inference's shape: ``{"error": message, "error_type": kind}``."""
    return JSONResponse({"error": message, "error_type": error_type}, status_code=status, headers=headers)


def over_budget_response(err: OverBudget) -> JSONResponse:
    """429 with ``Retry-After`` for a request the work budget refused."""
    return error_response(429, str(err), "Overloaded", {"Retry-After": str(err.retry_after)})


def authorized(headers: list[tuple[bytes, bytes]], expected: bytes) -> bool:
    """True when the ``Authorization: Bearer <key>`` header carries ``expected`` (compared in constant time)."""
    value = next((v for k, v in headers if k == b"authorization"), b"")
    scheme, _, token = value.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), expected)


class RequestGuard:
    """ASGI middleware: API key (401), early refusal by the work budget (429), answer counting, 500 on a bug.

    Args:
        app: the application it guards.
        metrics: where answers are counted.
        budget: the work budget (its early check only runs when it is enforced).
        api_key: the key every route but ``/health`` requires (None: no key).
    """

    def __init__(self, app: Callable, metrics: ServerMetrics, budget: WorkBudget, api_key: str | None = None):
        self.app, self.metrics, self.budget = app, metrics, budget
        self.expected_key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        started: list[int] = []  # the status, once the response has started

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.append(message["status"])
            await send(message)

        try:
            early = self._early_answer(scope)
            if early is not None:
                await early(scope, receive, counted_send)
            else:
                await self.app(scope, receive, counted_send)
        except Exception:  # a server bug: logged, answered (if nothing was sent yet), counted; the server keeps running
            logger.exception("unexpected error on %s %s", scope.get("method"), path)
            if started:
                raise
            await error_response(500, "internal server error (logged)", "Backend")(scope, receive, counted_send)
        finally:
            if started:
                label = path if path in ROUTES else "other"
                self.metrics.requests.labels(label, str(started[0])).inc()
                if started[0] >= 400:
                    self.metrics.errors.labels(label, str(started[0])).inc()

    def _early_answer(self, scope: Scope) -> JSONResponse | None:
        """The answer given without calling the app (401, or 429 when the budget has no room), else None."""
        path = scope["path"]
        if self.expected_key is not None and path not in OPEN_ROUTES and not authorized(scope["headers"],
                                                                                      self.expected_key):
            return error_response(401, "missing or wrong API key: send Authorization: Bearer <key>",
                                  "Unauthorized", {"WWW-Authenticate": "Bearer"})
        if path == "/predict" and scope["method"] == "POST" and self.budget.enforced:
            try:
                self.budget.check(1)  # not even one more input fits: refuse before reading the body
            except OverBudget as err:
                return over_budget_response(err)
        return None
