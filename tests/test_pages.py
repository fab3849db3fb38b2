"""benchmarks/pages.py: what every benchmark script does around its page (read, merge, write atomically, render)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from benchmarks.pages import PageError, read_reports, record_and_render, replace_run, signals_interrupt


def test_read_replace_write_and_render(tmp_path, capsys):
    out_json, out_md = tmp_path / "docs" / "b.json", tmp_path / "docs" / "b.md"
    assert read_reports(out_json, "b") == {"benchmark": "b", "runs": []}

    def render(reports):
        return "".join(f"- {r['model']}: {r['value']}\n" for r in reports["runs"])

    def key(r):
        return r["model"]

    merge = lambda reports, report: replace_run(reports, report, key)  # noqa: E731
    for model, value in (("a", 1), ("b", 2), ("a", 3)):  # re-measuring a model replaces its run
        assert record_and_render("b.py", "b", out_json, out_md, render, lambda m=model, v=value: {"model": m, "value": v},
                                 merge, log=lambda _: None) == 0
    assert out_md.read_text() == "- b: 2\n- a: 3\n"
    assert json.loads(out_json.read_text())["runs"] == [{"model": "b", "value": 2}, {"model": "a", "value": 3}]
    assert not [p for p in out_json.parent.iterdir() if p.name not in ("b.json", "b.md")]  # no temporary left

    # render only: nothing measured, the JSON untouched
    before = out_json.read_bytes()
    assert record_and_render("b.py", "b", out_json, out_md, render, log=lambda _: None) == 0
    assert out_json.read_bytes() == before


def test_errors_and_interruptions_are_one_line_and_write_nothing(tmp_path, capsys):
    out_json, out_md = tmp_path / "b.json", tmp_path / "b.md"
    assert record_and_render("b.py", "b", out_json, out_md, str, log=lambda _: None) == 2
    assert capsys.readouterr().err.strip() == f"b.py: error: {out_json} holds no runs to render"

    out_json.write_text("{truncated")
    with pytest.raises(PageError, match="cannot read"):
        read_reports(out_json, "b")
    assert record_and_render("b.py", "b", out_json, out_md, str, lambda: {"x": 1}, log=lambda _: None) == 2
    assert capsys.readouterr().err.startswith(f"b.py: error: cannot read {out_json}")
    assert out_json.read_text() == "{truncated" and not out_md.exists()

    class ServerDown(Exception):
        pass

    def down():
        raise ServerDown("the server did not start\nmore detail")

    out_json.unlink()
    assert record_and_render("b.py", "b", out_json, out_md, str, down, errors=(ServerDown,), log=print) == 2
    assert capsys.readouterr().err.strip() == "b.py: error: the server did not start"

    def interrupted():
        with signals_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)  # SIGTERM becomes KeyboardInterrupt inside the block
        raise AssertionError("not reached")

    previous = signal.getsignal(signal.SIGTERM)
    assert record_and_render("b.py", "b", out_json, out_md, str, interrupted, log=print) == 130
    assert "interrupted" in capsys.readouterr().err and not out_json.exists() and not out_md.exists()
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is restored
