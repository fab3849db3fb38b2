"""The server's settings: one dataclass holding defaults and validation, read by the CLI and the app."""

from __future__ import annotations

from dataclasses import dataclass

API_KEY_ENV = "PABEE_API_KEY"


@dataclass
class ServeSettings:
    """How ``pabee serve`` listens, batches and limits requests.

    Attributes:
        host, port: where uvicorn listens (loopback by default: expose it on purpose, behind a proxy).
        api_key: if set, every endpoint but ``/health`` needs ``Authorization: Bearer <api_key>`` (else 401).
        max_batch_size: most inputs per model call; requests' inputs are batched together up to this size.
        max_wait_ms: how long the first queued input waits for others to fill a batch.
        max_queue: most inputs waiting for the model; a request that does not fit gets 429.
        max_inputs: most inputs in one request (more: 413).
        max_input_bytes: largest request body in bytes (more: 413).
        model_name: what ``/info`` calls the model (the folder it was loaded from).
    """

    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    max_inputs: int = 256
    max_input_bytes: int = 2 * 1024 * 1024
    model_name: str = ""

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
        if not self.max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("the API key is empty")
