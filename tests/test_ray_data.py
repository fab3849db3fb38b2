"""pabee.ray_data: the map_batches predictor gives exactly ``pabee predict``'s predictions, on a local Ray instance
(2 CPUs, 2 actors) and called directly on dicts, DataFrames and Arrow tables."""

from __future__ import annotations

import json
import os
import random
import sys

import numpy as np
import pytest
from fixtures import WORDS
from run_fixtures import save_tiny_run

from pabee.cli import main
from pabee.ray_data import PabeeBatchPredictor


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) for _ in range(n)]
    texts[3] = ""
    texts[7] = " ".join(["good movie"] * 60)  # over the tiny model's 64 positions: truncated
    return texts


TEXTS = _texts(40)
PAIRS = list(zip(_texts(12, seed=1), _texts(12, seed=2)))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return save_tiny_run(tmp_path_factory.mktemp("ray") / "run", patience=2)


def cli_records(run_dir, tmp_path, rows, *extra):
    """``pabee predict MODEL`` on ``rows`` (texts or pairs) written as JSON Lines, run in-process."""
    path = tmp_path / "inputs.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            record = {"text": row} if isinstance(row, str) else {"sentence1": row[0], "sentence2": row[1]}
            f.write(json.dumps(record) + "\n")
    out = tmp_path / "preds.jsonl"
    assert main(["predict", str(run_dir), "--input", str(path), "--output", str(out), "--no_progress", *extra]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def assert_same(columns, records, prefix=""):
    """Prediction columns (a dict of arrays, or a list of row dicts) equal to ``pabee predict`` records."""
    if isinstance(columns, list):
        columns = {k: np.array([row[k] for row in columns]) for k in columns[0]}
    assert len(columns[prefix + "exit_layer"]) == len(records)
    assert list(columns[prefix + "exit_layer"]) == [r["exit_layer"] for r in records]
    assert [bool(t) for t in columns[prefix + "truncated"]] == [r["truncated"] for r in records]
    if "value" in records[0]:
        assert np.allclose(columns[prefix + "value"], [r["value"] for r in records], atol=1e-6, rtol=0)
        return
    assert list(columns[prefix + "label"]) == [r["label"] for r in records]
    assert np.allclose(columns[prefix + "score"], [r["score"] for r in records], atol=1e-6, rtol=0)
    expected = [list(r["probabilities"].values()) for r in records]
    assert np.allclose(np.stack(list(columns[prefix + "probabilities"])), expected, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------- on Ray


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="the Ray integration needs the ray extra: pip install 'pabee[ray]'")
    pytest.importorskip("ray.data", reason="the Ray integration needs ray[data]: pip install 'pabee[ray]'")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # a local instance only (never an address from the environment); its workers inherit this environment
    # (HF_HUB_OFFLINE, OMP_NUM_THREADS from conftest.py, PYTHONPATH)
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
        object_store_memory=200 * 1024**2,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")  # Ray's own settings, not ours
def test_ray_map_batches_gives_the_cli_predictions(ray_local, run_dir, tmp_path):
    ray = ray_local
    ds = ray.data.from_items([{"id": i, "text": text} for i, text in enumerate(TEXTS)], override_num_blocks=4)
    preds = ds.map_batches(
        PabeeBatchPredictor,
        fn_constructor_kwargs={"model_dir": str(run_dir), "text_columns": "text", "threads": 1, "batch_size": 8},
        compute=ray.data.ActorPoolStrategy(size=2), batch_size=7, batch_format="numpy",
        num_cpus=0.5,  # the two actors leave a CPU free for any task Ray Data runs beside them: no deadlock
    )
    rows = sorted(preds.take_all(), key=lambda row: row["id"])
    assert [row["text"] for row in rows] == TEXTS  # the input columns are kept, row for row
    records = cli_records(run_dir, tmp_path, TEXTS)
    assert_same(rows, records)
    assert len({row["exit_layer"] for row in rows}) > 1  # inputs exit at different layers
    assert len({row["label"] for row in rows}) > 1
    assert rows[7]["truncated"]


# ------------------------------------------------------------------------------------ called directly


@pytest.fixture(scope="module")
def predictor(run_dir):
    return PabeeBatchPredictor(run_dir, text_columns=["sentence1", "sentence2"], exit_rule="entropy:0.5",
                               batch_size=4)


def test_pairs_and_exit_rule_give_the_cli_predictions(predictor, run_dir, tmp_path):
    batch = {"sentence1": np.array([a for a, _ in PAIRS], dtype=object), "sentence2": np.array([b for _, b in PAIRS])}
    out = predictor(batch)
    assert list(out["sentence1"]) == [a for a, _ in PAIRS]
    assert out["probabilities"].shape == (len(PAIRS), 3)
    assert predictor.labels == ("sad", "happy", "meh")
    assert_same(out, cli_records(run_dir, tmp_path, PAIRS, "--exit_rule", "entropy:0.5"))


def test_pandas_and_arrow_batches(predictor):
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    columns = {"sentence1": [a for a, _ in PAIRS], "sentence2": [b for _, b in PAIRS]}
    expected = predictor(dict(columns))
    for batch in (pd.DataFrame(columns), pa.table(columns)):
        out = predictor(batch)
        assert list(out["label"]) == list(expected["label"])
        assert np.array_equal(out["exit_layer"], expected["exit_layer"])
        assert np.allclose(out["probabilities"], expected["probabilities"], atol=1e-6)


def test_empty_batch_has_the_same_columns_and_types(predictor):
    full = predictor({"sentence1": np.array(["good film"]), "sentence2": np.array(["bad plot"])})
    empty = predictor({"sentence1": np.array([], dtype=object), "sentence2": np.array([], dtype=object)})
    assert list(empty) == list(full)
    for name in ("label", "score", "probabilities", "exit_layer", "truncated"):
        assert len(empty[name]) == 0
        assert empty[name].dtype == full[name].dtype, name
    assert empty["probabilities"].shape == (0, 3)


def test_existing_column_needs_a_prefix(run_dir):
    batch = {"text": np.array(["good movie", "sad plot"]), "label": np.array([1, 0])}
    with pytest.raises(ValueError, match="already has a column 'label'.*prefix="):
        PabeeBatchPredictor(run_dir)(batch)
    out = PabeeBatchPredictor(run_dir, prefix="pred_")(batch)
    assert list(out["label"]) == [1, 0]  # the gold labels are kept
    assert {"pred_label", "pred_score", "pred_probabilities", "pred_exit_layer", "pred_truncated"} <= set(out)


def test_regression_model_gives_a_value_column(tmp_path):
    run = save_tiny_run(tmp_path / "reg", labels=("similarity",))
    out = PabeeBatchPredictor(run)({"text": np.array(TEXTS[:10], dtype=object)})
    assert set(out) == {"text", "value", "exit_layer", "truncated"}
    assert out["value"].dtype == np.float64
    assert_same(out, cli_records(run, tmp_path, TEXTS[:10]))


@pytest.mark.parametrize(
    "batch, message",
    [
        ({"sentence": np.array(["a"])}, "has no column 'text' \\(columns: sentence\\): set text_columns"),
        ({"text": np.array(["good", None], dtype=object)}, "column 'text', row 1 of the batch holds a missing value"),
        ({"text": np.array(["good", float("nan")], dtype=object)}, "row 1 of the batch holds a missing value"),
        ({"text": np.array([b"\xff"], dtype=object)}, "row 0 of the batch: not valid UTF-8"),
    ],
)
def test_bad_batches_name_the_problem(run_dir, batch, message):
    with pytest.raises(ValueError, match=message):
        PabeeBatchPredictor(run_dir)(batch)


def test_bad_arguments(run_dir, tmp_path):
    with pytest.raises(ValueError, match="text_columns must name 1 or 2 columns"):
        PabeeBatchPredictor(run_dir, text_columns=("a", "b", "c"))
    with pytest.raises(ValueError, match="not a pabee model folder"):
        PabeeBatchPredictor(tmp_path)
    with pytest.raises(TypeError, match="a batch must be"):
        PabeeBatchPredictor(run_dir)(["good movie"])


def test_importing_pabee_does_not_import_ray():
    import subprocess

    code = "import sys, pabee, pabee.ray_data, pabee.predictor; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
