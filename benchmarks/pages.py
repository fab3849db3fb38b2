"""What the benchmark scripts share around their pages (``docs/*.md|json``): the Jinja environment over
``benchmarks/templates/``, reading and atomically writing the recorded runs and the page, and SIGTERM handling."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jinja2

from pabee.files import atomic_write_text

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


class PageError(ValueError):
    """A benchmark's results file cannot be read (a one-line message)."""


def read_reports(path: Path, benchmark: str) -> dict:
    """The runs recorded in a benchmark's JSON (``{"benchmark": benchmark, "runs": []}`` when there is no file
    yet); :class:`PageError` when it cannot be read."""
    if not path.is_file():
        return {"benchmark": benchmark, "runs": []}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise PageError(f"cannot read {path}: {err}") from None


def replace_run(reports: dict, report: dict, key: Callable[[dict], Any]) -> dict:
    """``reports`` with ``report`` added last, replacing the recorded run with the same ``key`` (e.g. the model)."""
    kept = [r for r in reports.get("runs", []) if key(r) != key(report)]
    return {**reports, "runs": [*kept, report]}


def write_reports(path: Path, reports: dict, indent: int = 1) -> None:
    """Write a benchmark's JSON atomically (a reader never sees half a file; an interrupted write loses nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(reports, indent=indent) + "\n")


def write_page(path: Path, text: str) -> None:
    """Write a rendered page atomically, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (like SIGINT) raises KeyboardInterrupt in the main thread, so a benchmark that
    started servers stops them on its way out; the previous handlers come back after it."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def record_and_render(script: str, benchmark: str, out_json: Path, out_md: Path, render: Callable[[dict], str],
                      measure: Callable[[], dict] | None = None,
                      merge: Callable[[dict, dict], dict] | None = None,
                      errors: tuple[type[BaseException], ...] = (), log: Callable[[str], None] = print) -> int:
    """The end every server benchmark shares: read the recorded runs, ``measure`` a new one (None: render only),
    ``merge`` it in (default: append) and write the JSON atomically, then render the page. Returns the exit status:
    2 after a one-line error (a :class:`PageError`, a ValueError or one of ``errors``), 130 when interrupted
    (nothing written), else 0."""
    try:
        reports = read_reports(out_json, benchmark)
        if measure is not None:
            report = measure()
            reports = merge(reports, report) if merge else {**reports, "runs": [*reports.get("runs", []), report]}
            write_reports(out_json, reports)
        if not reports.get("runs"):
            raise PageError(f"{out_json} holds no runs to render")
    except (ValueError, *errors) as err:
        print(f"{script}: error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{script}: interrupted (servers stopped; nothing written)", file=sys.stderr)
        return 130
    write_page(out_md, render(reports))
    log(f"wrote {out_md}" + ("" if measure is None else f" and {out_json}"))
    return 0


def output_paths(args, stem: str, repo_root: Path) -> tuple[Path, Path]:
    """The JSON and Markdown a server benchmark writes: ``--output`` / ``--markdown``, by default
    ``docs/<stem>.json|md`` (the Markdown beside ``--output`` when only that is given); a ``--quick`` run without
    ``--output`` writes into a temporary folder, never into docs/."""
    if args.quick and args.output is None:
        args.output = str(Path(tempfile.gettempdir()) / f"pabee-{stem}-quick" / f"{stem}.json")
    out_json = Path(args.output) if args.output else repo_root / "docs" / f"{stem}.json"
    out_md = Path(args.markdown) if args.markdown else (out_json.with_suffix(".md") if args.output
                                                        else repo_root / "docs" / f"{stem}.md")
    return out_json, out_md


def server_benchmark_main(script: str, benchmark: str, paths: tuple[Path, Path], args, render: Callable[[dict], str],
                          check: Callable[[], None], run: Callable[[], dict], merge: Callable[[dict, dict], dict],
                          errors: tuple[type[BaseException], ...], log: Callable[[str], None]) -> int:
    """A server benchmark's ``main`` after parsing: with SIGTERM and SIGINT stopping its servers first, ``check``
    the settings and ``run`` it (unless ``--render-only``), then :func:`record_and_render`."""
    def measure() -> dict:
        check()
        return run()

    with signals_interrupt():
        return record_and_render(script, benchmark, *paths, render, None if args.render_only else measure, merge,
                                 errors=errors, log=log)
