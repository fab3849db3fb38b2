"""benchmarks/runtime.py end to end on a tiny random model (a smoke run: shapes and invariants of the report, no
timing assertions) and --render-only from the JSON alone."""

from __future__ import annotations

import json

from fixtures import write_glue_task
from run_fixtures import save_tiny_run

from benchmarks import runtime as bench
from pabee.onnx.export import INT8_SETTINGS


def test_smoke_run_then_render_only(tmp_path):
    run = save_tiny_run(tmp_path / "run", labels=("entailment", "not_entailment"), patience=2, layers=3)
    glue = tmp_path / "glue"
    write_glue_task(glue, "RTE", n=12)
    out_json, out_md = tmp_path / "runtime.json", tmp_path / "runtime.md"
    args = ["--model", str(run), "--task-dir", str(glue), "--quick", "--max-examples", "6", "--patience", "1",
            "--batch-sizes", "1,4", "--warmup", "0", "--threads", "1", "--output", str(out_json),
            "--markdown", str(out_md)]
    assert bench.main(args) == 0
    report = json.loads(out_json.read_text())
    (run_report,) = report["runs"]
    names = {r["name"] for r in run_report["results"]}
    assert names == {"torch p0", "torch p1", "onnx-full fp32", "onnx-full int8", "pabee-onnx fp32 p0",
                     "pabee-onnx fp32 p1", "pabee-onnx int8 p0", "pabee-onnx int8 p1"}
    assert len(run_report["results"]) == 2 * len(names)
    for row in run_report["results"]:
        assert row["num_examples"] == 6 and sum(row["exit_layer_histogram"]) == 6
        assert row["examples_per_second"] > 0 and "acc" in row["metrics"]
        if row["backend"] == "pabee-onnx" and row["precision"] == "fp32":
            assert row["exit_layers_equal_torch"] is True
        if row["name"] in ("onnx-full fp32", "pabee-onnx fp32 p0"):
            assert row["max_abs_logit_diff_vs_torch_full_depth"] < 1e-4
            assert row["agreement_with_torch_full_depth"] == 1.0
    page = out_md.read_text()
    assert "python benchmarks/runtime.py --model" in page and "### Batch size 4" in page
    # the plain int8 baseline is quantized like pabee export's layer graphs, and the page says how
    assert run_report["exports"]["int8_settings"] == INT8_SETTINGS
    assert run_report["settings"]["onnx_spinning"] is True and run_report["settings"]["onnx_shared_arena"] is True
    assert "one weight scale per output channel, 7-bit weights" in page
    assert "pabee-onnx int8 p1" in page and "--quick smoke run" in page

    out_md.unlink()
    assert bench.main(["--render-only", "--output", str(out_json), "--markdown", str(out_md)]) == 0
    assert out_md.read_text() == page


def test_runs_recorded_before_int8_settings_render_the_old_defaults():
    from benchmarks.runtime_render import int8_text

    assert int8_text({"exports": {"mib": {}}}).startswith("one weight scale per tensor, 8-bit weights")
    assert "per output channel" in int8_text({"exports": {"int8_settings": INT8_SETTINGS}})


def test_no_spinning_reaches_every_onnx_session(tmp_path, monkeypatch):
    """--no-spinning: the plain graph and the pabee model load with non-spinning workers, recorded and shown."""
    from benchmarks import runtime_measure
    from pabee.onnx.runtime import PabeeOnnxModel

    asked = []
    load_session, from_pretrained = runtime_measure.load_session, PabeeOnnxModel.from_pretrained.__func__
    monkeypatch.setattr(runtime_measure, "load_session",
                        lambda *a, **kw: asked.append(kw["spinning"]) or load_session(*a, **kw))
    monkeypatch.setattr(PabeeOnnxModel, "from_pretrained", classmethod(
        lambda cls, *a, **kw: asked.append(kw["spinning"]) or from_pretrained(cls, *a, **kw)))
    run = save_tiny_run(tmp_path / "run", labels=("entailment", "not_entailment"), patience=2, layers=2)
    write_glue_task(tmp_path / "glue", "RTE", n=4)
    out_json = tmp_path / "runtime.json"
    assert bench.main(["--model", str(run), "--task-dir", str(tmp_path / "glue"), "--quick", "--max-examples", "2",
                       "--patience", "1", "--batch-sizes", "1", "--warmup", "0", "--threads", "1", "--no-spinning",
                       "--output", str(out_json), "--markdown", str(tmp_path / "runtime.md")]) == 0
    assert asked == [False] * 4  # two plain graphs, two pabee exports
    assert json.loads(out_json.read_text())["runs"][0]["settings"]["onnx_spinning"] is False
    assert "never spin" in (tmp_path / "runtime.md").read_text()
