"""Run an exported pabee model on ONNX Runtime: numpy in, numpy out; needs onnxruntime and numpy (and
``tokenizers`` for :meth:`PabeeOnnxModel.encode`), never torch.

:class:`PabeeOnnxModel` is called like the torch model and exits early the same way: its :class:`OnnxBackend`
runs the exported layer graphs for :func:`pabee.early_exit.run_early_exit`, the loop the torch model runs, with
the same rule objects of :mod:`pabee.exit_rules`. Rows that exit leave the batch, and the columns that are padding
in every remaining row are cut off, so every row gets the answer it gets alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ..early_exit import run_early_exit
from ..exit_defaults import default_exit_rule, resolve_call_rule
from ..exit_rules import DEFAULT_REGRESSION_THRESHOLD, ExitRule, check_regression_threshold
from . import MANIFEST_NAME, is_onnx_export
from .layer_inputs import cut_feed, first_feed

FORMAT = "pabee-onnx"
FORMAT_VERSION = 2  # 2: mask-derived inputs and MPNet's position bias computed once per batch (1: in every layer)
EMBEDDING_INPUTS = ("input_ids", "token_type_ids")
EMBEDDING_OUTPUTS = ("hidden_states",)  # format 2 adds "position_bias" where the layers take one (MPNet)
LAYER_INPUTS = ("hidden_states", "attention_mask")  # format 1; format 2 lists its own in the manifest
LAYER_OUTPUTS = ("next_hidden_states", "logits")


# ---------------------------------------------------------------------------------------------- sessions


def default_threads() -> int:
    """Intra-op threads when none are given: ``OMP_NUM_THREADS`` if set (torch follows it too), else 0, which lets
    ONNX Runtime use one thread per physical core, the rule torch's own default follows."""
    try:
        value = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return 0
    return value if value > 0 else 0


def session_options(threads: int | None = None, spinning: bool = True) -> ort.SessionOptions:
    """ONNX Runtime options: ``threads`` intra-op threads (None: :func:`default_threads`; 0: ONNX Runtime's
    default), one inter-op thread (the graphs run one after another), sequential execution, every graph
    optimization, worker threads that stop spinning as soon as a run ends, CPU memory from one arena per process.

    Stopping the workers matters for early exit: the graphs of one model run one after another, and by default the
    workers of the graph that just finished keep spinning, waiting for more work, while the next graph's workers
    start; they then fight for the cores (measured on a busy 2-core machine: 3-4x slower than the same computation
    in one graph, 2 threads each). With the workers stopped at the end of each run, the layer graphs in a row ran
    about as fast as the one graph there. ``spinning=False``: workers that never spin but sleep until there is work
    (MiniLM-L6 int8, batch size 1, 2 threads: 2x (plain graph) and 3x (layer graphs) faster on a 2-core CPU that
    other processes kept busy, about 20 % slower on an idle one). The shared arena (:func:`shared_cpu_arena`): the
    next layer graph reuses the buffers the previous one just freed, still in the CPU caches (MiniLM-L6, batch size
    1, one thread: int8 layer graphs about 5 % faster, fp32 within the noise).
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
        raise ValueError(f"threads must be an integer >= 0 (0: ONNX Runtime's default), got {threads!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = default_threads() if threads is None else threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.force_spinning_stop", "1")
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if shared_cpu_arena():
        options.add_session_config_entry("session.use_env_allocators", "1")
    options.log_severity_level = 3  # errors only: a CPU-only machine is not worth a warning per session
    return options


_SHARED_ARENA: list[bool] = []  # [registered?] once the first session options are made


def shared_cpu_arena() -> bool:
    """Register, once per process, a CPU arena allocator with ONNX Runtime's environment, for the sessions whose
    options ask for the environment's allocators; False when this onnxruntime cannot register one (the sessions
    then keep their own arenas)."""
    if not _SHARED_ARENA:
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        try:
            ort.create_and_register_allocator(info, None)  # (a second registration is accepted, not raised)
            _SHARED_ARENA.append(True)
        except Exception:  # onnxruntime's own exception types: an old or unusual build
            _SHARED_ARENA.append(False)
    return _SHARED_ARENA[0]


def load_session(
    path: str | os.PathLike, threads: int | None = None, providers: list[str] | None = None, spinning: bool = True
) -> ort.InferenceSession:
    """An inference session on the graph at ``path`` (options: :func:`session_options`); a one-line ValueError
    naming the file when it is missing or not a loadable ONNX graph."""
    path = Path(path)
    options = session_options(threads, spinning)
    if not path.is_file():
        raise ValueError(f"{path} is missing: export the model again with pabee export")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers or ["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot load the ONNX graph {path}: {detail[:300]}") from None


# ---------------------------------------------------------------------------------------------- the backend


class OnnxState:
    """The running rows: hidden (A,S,H) float32, mask (A,S) int64, the logits (A,C) of the layer just run, and
    ``feed``, the layer graphs' inputs by name (hidden_states among them), made once per batch and cut down when
    rows leave."""

    __slots__ = ("hidden", "mask", "logits", "feed")

    def __init__(self, hidden: np.ndarray, mask: np.ndarray, feed: dict[str, np.ndarray] | None = None):
        self.hidden = hidden
        self.mask = mask
        self.logits: np.ndarray | None = None
        self.feed = {} if feed is None else feed


class OnnxBackend:
    """:class:`pabee.early_exit.ExitBackend` over the layer graphs: ``layers[i]`` is (session, head), the session
    of layer i's graph and the position of layer i's classifier among the graph's logits (B,K,C); ``inputs`` the
    layer graphs' input names (:data:`LAYER_INPUTS` for a format 1 export; format 2:
    :func:`pabee.onnx.graphs.layer_graph_inputs`)."""

    def __init__(self, layers: list[tuple[ort.InferenceSession, int]], inputs=LAYER_INPUTS):
        self.num_layers = len(layers)
        self._layers = layers
        self.inputs = tuple(inputs)

    def start(self, hidden: np.ndarray, mask: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> OnnxState:
        """The state entering layer 1: hidden (B,S,H) from the embeddings graph, mask (B,S) 0/1 int64, ``extra``
        the embeddings graph's other outputs by name (position_bias)."""
        return OnnxState(hidden, mask, first_feed(self.inputs, hidden, mask, extra))

    def run_layer(self, i: int, state: OnnxState) -> OnnxState:
        session, head = self._layers[i]
        feed = state.feed
        feed["hidden_states"] = state.hidden
        state.hidden, logits = session.run(LAYER_OUTPUTS, feed)
        state.logits = logits[:, head]
        return state

    def classify(self, i: int, state: OnnxState) -> np.ndarray:
        return state.logits  # the layer graph computed its classifier with the layer

    def keep_rows(self, state: OnnxState, keep: np.ndarray) -> OnnxState:
        rows = np.flatnonzero(keep)
        mask = state.mask[rows]
        width = needed_length(mask)
        state.mask = np.ascontiguousarray(mask[:, :width])
        state.hidden = np.ascontiguousarray(state.hidden[rows, :width])  # one copy: rows and columns at once
        cut_feed(state.feed, rows, width)
        state.logits = None
        return state


def needed_length(mask: np.ndarray) -> int:
    """1 + the last column some row attends to (at least 1): the width after cutting trailing padding."""
    used = np.flatnonzero(mask.any(axis=0))
    return int(used[-1]) + 1 if used.size else mask.shape[1]


# ---------------------------------------------------------------------------------------------- the model


@dataclass
class PabeeOnnxOutput:
    """logits (B,C) float32: each row's logits at its exit layer; exit_layers (B,) int64 in 1..L."""

    logits: np.ndarray
    exit_layers: np.ndarray

    def __getitem__(self, key: str) -> np.ndarray:
        return getattr(self, key)


class PabeeOnnxModel:
    """An exported pabee model on ONNX Runtime (load it with :meth:`from_pretrained`).

    Called like :class:`~pabee.modeling.PabeeForSequenceClassification` with numpy (B,S) arrays:
    ``model(input_ids, attention_mask=None, token_type_ids=None, patience=None, exit_rule=None,
    regression_threshold=None)`` returns :class:`PabeeOnnxOutput` (``logits``, ``exit_layers``).
    Attributes: ``manifest`` (the export's ``pabee_onnx.json``), ``num_layers``, ``num_labels``, ``id2label``,
    ``threads`` (intra-op threads asked for; 0 = ONNX Runtime's default), ``default_exit_rule`` (the rule saved
    with the model, from the manifest's ``pabee_config``: its ``exit_rule``, else its ``patience``).
    """

    def __init__(self, folder: Path, manifest: dict, embeddings: ort.InferenceSession,
                 layers: list[tuple[ort.InferenceSession, int]], threads: int):
        self.folder = folder
        self.manifest = manifest
        self.threads = threads
        self._embeddings = embeddings
        self._embedding_outputs = list(graph_names(manifest)[0])
        self._backend = OnnxBackend(layers, graph_names(manifest)[1])
        self.num_layers = int(manifest["num_layers"])
        self.num_labels = int(manifest["num_labels"])
        self.id2label = {int(k): str(v) for k, v in manifest["id2label"].items()}
        self.uses_token_type_ids = bool(manifest["uses_token_type_ids"])
        self.max_length = manifest.get("max_length")
        saved = manifest.get("pabee_config", {})
        self._saved = saved
        self.default_patience = int(saved.get("patience", 0))
        self.default_exit_rule = default_exit_rule(saved)
        self.default_regression_threshold = check_regression_threshold(
            saved.get("regression_threshold", DEFAULT_REGRESSION_THRESHOLD)
        )
        self._tokenizer = None

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    @property
    def quantized(self) -> str | None:
        """"int8" for an export whose layer graphs were quantized, else None."""
        quantization = self.manifest.get("quantization")
        return quantization.get("precision") if isinstance(quantization, dict) else None

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike, threads: int | None = None, providers: list[str] | None = None,
        spinning: bool = True,
    ) -> PabeeOnnxModel:
        """Load the folder ``pabee export`` wrote. ``threads``: intra-op threads of every session (default:
        :func:`default_threads`); ``providers``: ONNX Runtime execution providers (default: CPU); ``spinning``:
        False for worker threads that never spin (:func:`session_options`).

        Raises ValueError (one line, naming the file) for a folder that is not an export, a missing, truncated or
        corrupt graph, or a manifest this version cannot read.
        """
        folder = Path(folder)
        manifest = read_manifest(folder)
        threads = default_threads() if threads is None else threads
        session_options(threads)  # a bad thread count fails before anything loads
        files = manifest["files"]
        for name in dict.fromkeys([manifest["embeddings"], *(entry["graph"] for entry in manifest["layers"])]):
            _check_file(folder, name, files.get(name))
        embedding_outputs, layer_inputs = graph_names(manifest)
        embeddings = load_session(folder / manifest["embeddings"], threads, providers, spinning)
        _check_io(embeddings, folder / manifest["embeddings"], EMBEDDING_INPUTS[: 1 + manifest["uses_token_type_ids"]],
                  embedding_outputs)
        sessions: dict[str, ort.InferenceSession] = {}
        layers = []
        for entry in manifest["layers"]:
            name = entry["graph"]
            if name not in sessions:
                sessions[name] = load_session(folder / name, threads, providers, spinning)
                _check_io(sessions[name], folder / name, layer_inputs, LAYER_OUTPUTS)
            layers.append((sessions[name], int(entry["head"])))
        return cls(folder, manifest, embeddings, layers, threads)

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        patience: int | None = None,
        exit_rule: ExitRule | str | None = None,
        regression_threshold: float | None = None,
    ) -> PabeeOnnxOutput:
        """Early-exit inference on a batch of (B,S) token arrays (int64; lists work too). ``exit_rule`` or
        ``patience`` as in the torch model (default: the exit rule saved with the model)."""
        rule = resolve_call_rule(exit_rule, patience, self._saved, self.num_labels).build(
            self.default_regression_threshold
            if regression_threshold is None
            else check_regression_threshold(regression_threshold)
        )
        ids = _token_array(input_ids, "input_ids")
        if ids.shape[0] == 0 or ids.shape[1] == 0:
            raise ValueError(f"empty batch: input_ids has shape {ids.shape}")
        mask = np.ones_like(ids) if attention_mask is None else _token_array(attention_mask, "attention_mask", ids.shape)
        feed = {"input_ids": ids}
        if self.uses_token_type_ids:
            types = np.zeros_like(ids) if token_type_ids is None else token_type_ids
            feed["token_type_ids"] = _token_array(types, "token_type_ids", ids.shape)
        if self.max_length and ids.shape[1] > self.max_length:
            raise ValueError(f"inputs have {ids.shape[1]} positions but the model takes at most {self.max_length}")
        width = needed_length(mask)
        if width < ids.shape[1]:  # trailing padding of every row: never computed
            feed = {k: np.ascontiguousarray(v[:, :width]) for k, v in feed.items()}
            mask = np.ascontiguousarray(mask[:, :width])
        hidden, *extra = self._embeddings.run(self._embedding_outputs, feed)
        backend = self._backend
        state = backend.start(hidden, mask, dict(zip(self._embedding_outputs[1:], extra)))
        logits, exit_layers = run_early_exit(backend, rule, state, ids.shape[0])
        return PabeeOnnxOutput(np.ascontiguousarray(logits, dtype=np.float32), exit_layers)

    forward = __call__

    # ------------------------------------------------------------------ text

    @property
    def tokenizer(self) -> Any:
        """The export's ``tokenizers.Tokenizer`` (tokenizer.json), truncating to ``max_length`` and padding to the
        longest input of a batch."""
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            path = self.folder / "tokenizer.json"
            if not path.is_file():
                raise ValueError(f"{path} is missing: the export has no fast tokenizer")
            tokenizer = Tokenizer.from_file(str(path))
            if self.max_length:
                tokenizer.enable_truncation(int(self.max_length))
            pad = self.manifest.get("pad_token_id")
            tokenizer.enable_padding(pad_id=int(pad or 0), pad_token=self.manifest.get("pad_token") or "[PAD]")
            self._tokenizer = tokenizer
        return self._tokenizer

    def encode(self, texts: list[str], pairs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Tokenize texts (or text pairs) into the (B,S) int64 arrays a call takes."""
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        encodings = self.tokenizer.encode_batch(inputs)
        arrays = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }
        if self.uses_token_type_ids:
            arrays["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        return arrays


# ---------------------------------------------------------------------------------------------- checks


REQUIRED_KEYS = ("format_version", "num_layers", "num_labels", "id2label", "uses_token_type_ids", "embeddings",
                 "layers", "files")


def read_manifest(folder: Path) -> dict:
    """The export's ``pabee_onnx.json``, checked; a one-line ValueError naming the problem otherwise."""
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise ValueError(f"model folder not found: {folder}")
    if not is_onnx_export(folder):
        raise ValueError(f"{folder} is not an ONNX export (no {MANIFEST_NAME}): export it with pabee export")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a pabee ONNX manifest")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: export the model again")
    version = manifest["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path} has format version {version!r}; this pabee reads up to {FORMAT_VERSION}: upgrade")
    layers = manifest["layers"]
    if not isinstance(layers, list) or len(layers) != manifest["num_layers"] or not all(
        isinstance(e, dict) and isinstance(e.get("graph"), str) and isinstance(e.get("head"), int) for e in layers
    ):
        raise ValueError(f"{path}: 'layers' must list num_layers entries {{graph, head}}")
    for key in ("embedding_outputs", "layer_inputs") if version >= 2 else ():
        names = manifest.get(key)
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{path}: '{key}' must list the graph's tensor names: export the model again")
    return manifest


def _check_file(folder: Path, name: str, size: int | None) -> None:
    path = folder / name
    if not path.is_file():
        raise ValueError(f"{path} is missing: export the model again with pabee export")
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise ValueError(f"{path} has {actual} bytes but the export wrote {size}: the file is corrupt or was replaced")


def graph_names(manifest: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The embeddings graph's outputs and the layer graphs' inputs of an export (format 1: the fixed names)."""
    return (tuple(manifest.get("embedding_outputs", EMBEDDING_OUTPUTS)),
            tuple(manifest.get("layer_inputs", LAYER_INPUTS)))


def _check_io(session: ort.InferenceSession, path: Path, inputs, outputs=EMBEDDING_OUTPUTS) -> None:
    have_in = tuple(i.name for i in session.get_inputs())
    have_out = tuple(o.name for o in session.get_outputs())
    if have_in != tuple(inputs) or have_out != tuple(outputs):
        raise ValueError(f"{path} is not the graph the manifest expects: inputs {have_in}, outputs {have_out}")


def _token_array(values, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 2 or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_)):
        raise TypeError(f"{name} must be a (batch, seq) array of integers, got {array.dtype} of shape {array.shape}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"{name} shape {array.shape} != input_ids shape {shape}")
    return np.ascontiguousarray(array, dtype=np.int64)
