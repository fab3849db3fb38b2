"""``pabee serve MODEL``: run the HTTP server on uvicorn.

SIGTERM (or Ctrl+C) stops accepting connections, lets the requests in flight and the queued inputs finish, and
exits with status 0 (130 after Ctrl+C).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys

from ..cli import _Parser
from ..cli_args import add_settings_arguments, typed_values
from ..predict_settings import ModelSettings
from ..settings import SERVE
from .settings import API_KEY_ENV, ServeSettings

GRACEFUL_SHUTDOWN_SECONDS = 60  # at most this long for requests in flight after SIGTERM


class _Terminated(Exception):
    """SIGTERM arrived outside uvicorn's own handling (before it started, or re-raised by it after shutdown)."""


def serve_parser() -> argparse.ArgumentParser:
    """The parser of ``pabee serve``, generated from :class:`~pabee.predict_settings.ModelSettings` and
    :class:`~pabee.serving.settings.ServeSettings`."""
    p = _Parser(prog="pabee serve", description="Serve a saved pabee model over HTTP: POST /predict "
                "(text-embeddings-inference shapes), GET /health, /info, /metrics (Prometheus).")
    add_settings_arguments(p, ModelSettings, SERVE)
    add_settings_arguments(p, ServeSettings, SERVE)
    return p


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port); OSError with a clear message otherwise."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise OSError(f"cannot resolve --host {host}: {err.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


def main(argv: list[str]) -> int:
    """``pabee serve MODEL ...`` (``argv`` without the leading "serve")."""
    args = serve_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Installed before uvicorn: it restores this handler after its graceful shutdown and re-raises the signal,
    # which then ends the process with status 0 instead of killing it.
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _serve(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _serve(args: argparse.Namespace) -> int:
    try:
        try:
            import uvicorn

            from .app import create_app
        except ModuleNotFoundError as err:
            raise ValueError(f"pabee serve needs {err.name}: pip install 'pabee[serving]'") from None
        model = ModelSettings(**typed_values(args, ModelSettings))
        given = typed_values(args, ServeSettings)
        given["api_key"] = given.get("api_key") or os.environ.get(API_KEY_ENV) or None
        settings = ServeSettings(**given, model_name=str(model.model))
        from ..cli_predict import load_predictor

        predictor = load_predictor(model, batch_size=settings.max_batch_size)
        app = create_app(predictor, settings)
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
        logging.getLogger("pabee").setLevel(settings.log_level.upper())
        if settings.host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
            logging.getLogger("pabee").warning("listening on %s without an API key", settings.host)
        sock = bind_socket(settings.host, settings.port)
        host, port = sock.getsockname()[:2]
        print(f"pabee serve: {model.model} on http://{_url_host(host)}:{port} (exit rule {predictor.exit_rule}, "
              f"backend {predictor.backend.name})", file=sys.stderr, flush=True)
        config = uvicorn.Config(app, log_level=settings.log_level, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)
        uvicorn.Server(config).run(sockets=[sock])
    except _Terminated:
        return 0
    except (ValueError, OSError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"pabee serve: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
