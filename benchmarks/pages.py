"""The Jinja environment the benchmark pages (``docs/*.md``) are rendered in, from ``benchmarks/templates/``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).resolve().parent / "templates"


def page_environment(filters: dict[str, Callable] | None = None, **template_globals: Any) -> jinja2.Environment:
    """A Jinja environment over :data:`TEMPLATES` for Markdown pages: an undefined name is an error, block tags
    leave no blank lines, nothing is HTML-escaped; ``filters`` and ``template_globals`` are what the templates
    may use."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True, keep_trailing_newline=True, autoescape=False,
    )
    env.filters.update(filters or {})
    env.globals.update(template_globals)
    return env
