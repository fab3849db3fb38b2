"""Register pabee with transformers' Auto classes as soon as transformers loads them, without importing
transformers (and torch) at ``import pabee``: ``pabee --help`` stays fast, and ``import pabee`` followed by
``transformers.pipeline("text-classification", model=<saved pabee folder>)`` loads the pabee model.

:func:`install` adds an import finder that lets Python load transformers' ``configuration_auto`` and
``modeling_auto`` modules as usual and then registers pabee's config (:func:`pabee.hf.register_config`) and model
(:func:`pabee.hf.register_auto_classes`). Modules already imported are handled at once.
"""

from __future__ import annotations

import importlib.abc
import logging
import sys

logger = logging.getLogger(__name__)

CONFIG_MODULE = "transformers.models.auto.configuration_auto"
MODEL_MODULE = "transformers.models.auto.modeling_auto"


def install() -> None:
    """Arrange for pabee's registration when transformers' Auto modules load (idempotent)."""
    if not any(isinstance(finder, _AutoModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AutoModuleFinder())
    for name in (CONFIG_MODULE, MODEL_MODULE):
        if name in sys.modules:
            _register(name)


def _register(name: str) -> None:
    try:
        from . import hf

        hf.register_auto_classes() if name == MODEL_MODULE else hf.register_config()
    except Exception as err:  # never break the user's import of transformers
        logger.warning("could not register pabee with transformers' Auto classes: %s", err)


class _AutoModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in (CONFIG_MODULE, MODEL_MODULE):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RegisteringLoader(spec.loader, name)
                return spec
        return None


class _RegisteringLoader(importlib.abc.Loader):
    """The module's own loader, then pabee's registration."""

    def __init__(self, loader, name: str):
        self._loader = loader
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _register(self._name)

    def __getattr__(self, attr):  # get_source, get_filename, ... of the wrapped loader
        return getattr(self._loader, attr)
