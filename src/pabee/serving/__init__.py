"""HTTP serving of a saved pabee model: a FastAPI app with dynamic batching and Prometheus metrics.

``create_app(predictor, settings)`` builds the ASGI app (:mod:`pabee.serving.app`); ``pabee serve MODEL`` runs it
on uvicorn (:mod:`pabee.serving.cli`). Needs the ``serving`` extra: ``pip install "pabee[serving]"``.
"""

from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def create_app(*args, **kwargs):
    """See :func:`pabee.serving.app.create_app` (imported lazily: FastAPI loads only when serving)."""
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)
