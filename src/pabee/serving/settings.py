"""The server's settings: one dataclass holding defaults, help and validation, read by the CLI and the app.

``pabee serve``'s flags are generated from the fields (:mod:`pabee.cli_args`), together with the model's
(:class:`pabee.predict_settings.ModelSettings`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..cli import _positive_int, int_at_least
from ..length_groups import DEFAULT_CALL_OVERHEAD
from ..settings import SERVE, setting

API_KEY_ENV = "PABEE_API_KEY"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def non_negative_number(text: str) -> float:
    """A finite number >= 0 (``--max-wait-ms``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """A finite number of seconds > 0 (``--max-queue-seconds``)."""
    value = non_negative_number(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _serve_flag(name: str, default, help: str, **kwargs):
    """A ``pabee serve`` flag spelt ``--max-batch-size``, with ``--max_batch_size`` as its alias."""
    return setting(default, help=help, flag=f"--{name.replace('_', '-')}", aliases=(f"--{name}",),
                   fronts=(SERVE,), **kwargs)


@dataclass
class ServeSettings:
    """How ``pabee serve`` listens, batches and limits requests.

    Attributes:
        host, port: where uvicorn listens (loopback by default: expose it on purpose, behind a proxy).
        api_key: if set, every endpoint but ``/health`` needs ``Authorization: Bearer <api_key>`` (else 401).
        max_batch_size: most inputs per model call; requests' inputs are batched together up to this size.
        max_wait_ms: how long the first queued input waits for others to fill a batch.
        max_queue: most inputs waiting for the model; a request that does not fit gets 429.
        max_queue_seconds: admission by worst-case work (:mod:`pabee.serving.admission`): a request is refused
            with 429 and ``Retry-After`` when the inputs pending, its own included, each counted at full depth,
            would take more than this many seconds at the measured speed (None: no such limit).
        call_overhead_tokens: a batch of inputs of different lengths runs as length groups, one model call each,
            when the padding that saves is worth more than this many padded tokens per extra call
            (:mod:`pabee.length_groups`); 0: one call per batch, however much is padded.
        max_inputs: most inputs in one request (more: 413).
        max_input_bytes: largest request body in bytes (more: 413).
        log_level: the level of pabee's and uvicorn's logs.
        model_name: what ``/info`` calls the model (the folder it was loaded from).
    """

    host: str = setting("127.0.0.1", fronts=(SERVE,), help="address to bind (default: loopback only)")
    port: int = setting(8080, fronts=(SERVE,), help="port to listen on (0: any free port)")
    api_key: str | None = _serve_flag(
        "api_key", None,
        help=f"require Authorization: Bearer <key> on every endpoint but /health (default: ${API_KEY_ENV} if set)")
    max_batch_size: int = _serve_flag("max_batch_size", 32, parse=_positive_int, help="most inputs per model call")
    max_wait_ms: float = _serve_flag("max_wait_ms", 5.0, parse=non_negative_number,
                                     help="how long an input waits for others to fill a batch")
    max_queue: int = _serve_flag("max_queue", 1024, parse=_positive_int,
                                 help="most inputs waiting; a request that does not fit gets 429")
    max_queue_seconds: float | None = _serve_flag(
        "max_queue_seconds", None, parse=positive_seconds,
        help="refuse a request (429 with Retry-After) when the inputs pending, its own included, would take more "
             "than this many seconds if every one ran at full depth, at the measured speed (default: no limit; "
             "see docs/serving-operations.md)")
    call_overhead_tokens: int = _serve_flag(
        "call_overhead_tokens", DEFAULT_CALL_OVERHEAD, parse=int_at_least(0),
        help="run a batch as length groups (less padding) when the padded tokens saved are more than this many "
             "per extra model call (0: one call per batch)")
    max_inputs: int = _serve_flag("max_inputs", 256, parse=_positive_int, help="most inputs in one request (more: 413)")
    max_input_bytes: int = _serve_flag("max_input_bytes", 2 * 1024 * 1024, parse=_positive_int,
                                       help="largest request body (more: 413)")
    log_level: str = _serve_flag("log_level", "info", choices=LOG_LEVELS, help="log level")
    model_name: str = setting("", fronts=(), help="what /info calls the model (the folder it was loaded from)")

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue", "max_inputs", "max_input_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_inputs > self.max_queue:
            raise ValueError(
                f"max_inputs ({self.max_inputs}) is more than max_queue ({self.max_queue}): such a request could "
                "never be queued"
            )
        if isinstance(self.call_overhead_tokens, bool) or not isinstance(self.call_overhead_tokens, int) \
                or self.call_overhead_tokens < 0:
            raise ValueError(f"call_overhead_tokens must be an integer >= 0, got {self.call_overhead_tokens!r}")
        if not self.max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms!r}")
        if self.max_queue_seconds is not None and not 0 < self.max_queue_seconds < float("inf"):
            raise ValueError(f"max_queue_seconds must be a positive number, got {self.max_queue_seconds!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("the API key is empty")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
