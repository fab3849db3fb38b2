"""Finding and reading what a model is made of, with one-line errors that say what is wrong.

- :func:`resolve_model_source`: a local folder or a Hugging Face hub id, decided once. A path that is meant to be
  local and does not exist is reported at once ("model folder not found: models/nope") instead of being sent to
  the hub, and a hub id that is neither cached nor reachable fails without the hub client's retries.
- :func:`load_tokenizer`: ``AutoTokenizer`` behind a check that the folder has tokenizer files.
- :func:`read_weights`, :func:`check_weights`, :func:`load_backbone`: a corrupt weights file or weights that do not
  fit the model become a ValueError naming the folder, never a safetensors or torch traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlparse

from safetensors import SafetensorError

logger = logging.getLogger(__name__)

# Files that hold a tokenizer's vocabulary, one of which every tokenizer folder has.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")
HUB_PROBE_SECONDS = 5.0


def resolve_model_source(name_or_path: str | os.PathLike, *, what: str = "model", cache_dir: str | None = None,
                         local_files_only: bool = False) -> str:
    """The local folder or hub id to load ``name_or_path`` from.

    Raises FileNotFoundError ("model folder not found: ...") when there is nothing to load, ValueError when the
    folder is not a model (or tokenizer) folder.

    An existing path is a local folder: it must be a non-empty folder (with a ``config.json`` when ``what`` is
    "model"). A missing path that is clearly meant to be local (it starts with ``.``, ``/`` or ``~``, has more than
    one path separator, or its first component is an existing folder, as ``models/nope`` when ``models/`` exists)
    is reported as not found. Anything else is a hub id: fine when it is in the local Hugging Face cache; otherwise
    refused at once when the hub is off (``HF_HUB_OFFLINE``, ``local_files_only``) or cannot be reached.
    """
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.exists():
        check_local_folder(path, what)
        return str(path)
    if _looks_local(name):
        raise FileNotFoundError(f"{what} folder not found: {name}")
    hub_id = _hub_id(name)
    if hub_id is None:
        raise FileNotFoundError(f"{what} folder not found: {name} (and it is not a Hugging Face hub id either)")
    if _in_hub_cache(hub_id, cache_dir):
        return name
    if local_files_only or _hub_offline():
        why = "local_files_only is set" if local_files_only else "HF_HUB_OFFLINE is set"
        raise FileNotFoundError(
            f"{what} folder not found: {name} (nor is {name} a hub model in the local Hugging Face cache, and the "
            f"hub is off: {why})"
        )
    problem = _hub_unreachable()
    if problem:
        raise FileNotFoundError(
            f"{what} folder not found: {name} (nor is {name} a hub model in the local Hugging Face cache, and the "
            f"hub cannot be reached to fetch it: {problem})"
        )
    return name


def require_model_folder(folder: str | os.PathLike, hint: str) -> str:
    """``folder`` when it is an existing model folder; else FileNotFoundError "model folder not found: ... (hint)"."""
    path = Path(folder).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model folder not found: {folder} ({hint})")
    check_local_folder(path, "model")
    return str(path)


def check_local_folder(path: Path, what: str = "model") -> None:
    """An existing ``path`` must be a non-empty folder; a model folder must have a config.json."""
    if not path.is_dir():
        raise ValueError(f"{path} is a file, not a {what} folder")
    if not any(path.iterdir()):
        raise ValueError(f"{path} is empty: not a {what} folder")
    if what == "model" and not (path / "config.json").is_file():
        raise ValueError(f"no config.json in {path}: not a model folder{unfinished_run_hint(path)}")


def unfinished_run_hint(folder: str | os.PathLike) -> str:
    """"; it holds checkpoint-N of a training that did not finish ..." when ``folder`` has checkpoints but not the
    trainer_state.json a finished ``pabee train`` writes last, else ""."""
    if (Path(folder) / "trainer_state.json").is_file():
        return ""
    steps = sorted(
        int(child.name.split("-", 1)[1]) for child in Path(folder).glob("checkpoint-*")
        if child.is_dir() and child.name.split("-", 1)[1].isdigit()
    )
    if not steps:
        return ""
    return (
        f"; it holds checkpoint-{steps[-1]} of a training that did not finish: continue it with "
        "--resume_from_checkpoint, or use the checkpoint folder"
    )


def load_tokenizer(name_or_path: str, *, cache_dir: str | None = None, do_lower_case: bool = False):
    """``AutoTokenizer.from_pretrained``, with a clear ValueError for a folder without tokenizer files or a
    tokenizer that cannot be built."""
    from transformers import AutoTokenizer

    folder = Path(name_or_path)
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"no tokenizer files in {folder} ({', '.join(TOKENIZER_FILES[:3])}, ...)"
            + (unfinished_run_hint(folder) or ": give --tokenizer_name")
        )
    try:
        return AutoTokenizer.from_pretrained(
            name_or_path, cache_dir=cache_dir, **({"do_lower_case": True} if do_lower_case else {})
        )
    except Exception as err:  # the tokenizers library raises bare Exceptions for a damaged tokenizer.json
        reason = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
        raise ValueError(f"cannot load the tokenizer in {name_or_path}: {reason}") from None


def read_weights(path: Path) -> dict:
    """The tensors of a safetensors file; ValueError when it is corrupt, truncated or empty."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except SafetensorError as err:
        raise ValueError(corrupt_weights_message(path.parent, err, path.name)) from None


def corrupt_weights_message(folder, err: Exception, file_name: str | None = None) -> str:
    """One line: which weights file is damaged and what safetensors said."""
    if file_name is None:
        file_name = "model.safetensors" if (Path(folder) / "model.safetensors").is_file() else "a weights file"
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{file_name} in {folder} is corrupt or truncated: {reason}"


def check_weights(model, state: Mapping, folder) -> None:
    """ValueError unless ``state`` has exactly the model's tensors, each of the model's shape."""
    expected = model.state_dict()
    mismatched = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in state.items()
                  if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    problem = _weights_problem(mismatched, missing, unexpected)
    if problem:
        raise ValueError(f"weights in {folder} do not match the model: {problem}")


def load_backbone(name_or_path: str, config, kwargs: dict):
    """``AutoModel.from_pretrained`` that refuses weights that do not fit the config (a wrong shape, a missing
    backbone tensor, a tensor of a layer the config does not have) and a damaged weights file, with a one-line
    ValueError instead of transformers' report and traceback or silently random weights. A missing pooler (many
    checkpoints have none) is only logged. ``ignore_mismatched_sizes=True`` in ``kwargs`` lets wrong shapes pass.
    """
    from transformers import AutoModel

    allow_mismatch = bool(kwargs.get("ignore_mismatched_sizes", False))
    options = {**kwargs, "ignore_mismatched_sizes": True, "output_loading_info": True}
    try:
        with _without_load_report():
            backbone, info = AutoModel.from_pretrained(name_or_path, config=config, **options)
    except SafetensorError as err:
        raise ValueError(corrupt_weights_message(name_or_path, err)) from None
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith("pooler."))
    pooler_missing = any(k.startswith("pooler.") for k in info.get("missing_keys", ()))
    own_modules = {name for name, _ in backbone.named_children()}
    own_buffers = {name for name, _ in backbone.named_buffers()}
    unexpected = sorted(k for k in info.get("unexpected_keys", ())
                        if k.split(".", 1)[0] in own_modules and k not in own_buffers)
    mismatched = [] if allow_mismatch else [(k, tuple(a), tuple(b)) for k, a, b in info.get("mismatched_keys", ())]
    problem = _weights_problem(mismatched, missing, unexpected)
    if problem:
        raise ValueError(f"weights in {name_or_path} do not match the model: {problem}")
    if pooler_missing:
        logger.info("%s has no pooler weights: the pooler starts from random values", name_or_path)
    return backbone


def _weights_problem(mismatched: list, missing: list, unexpected: list) -> str:
    if mismatched:
        key, found, wanted = sorted(mismatched)[0]
        more = f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
        return f"{key} has shape {list(found)} in the file but the model expects {list(wanted)}{more}"
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            parts.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{more})")
    return ", ".join(parts)


@contextlib.contextmanager
def _without_load_report() -> Iterator[None]:
    """Drop transformers' multi-line "LOAD REPORT" warning (load_backbone reports what matters in one line) and
    its "Loading weights" progress bar (a fraction of a second for an encoder, and noise before an error line)."""
    from transformers.utils import logging as hf_logging

    target = logging.getLogger("transformers.modeling_utils")

    def keep(record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)

    bar_was_on = hf_logging.is_progress_bar_enabled()
    target.addFilter(keep)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        target.removeFilter(keep)
        if bar_was_on:
            hf_logging.enable_progress_bar()


def _looks_local(name: str) -> bool:
    if name.startswith((".", "/", "~", "\\")) or os.path.isabs(name) or "\\" in name:
        return True
    parts = name.split("/")
    return len(parts) > 2 or (len(parts) == 2 and Path(parts[0]).expanduser().is_dir())


def _hub_id(name: str) -> str | None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def _in_hub_cache(repo_id: str, cache_dir: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for file_name in ("config.json", "tokenizer_config.json"):
        if isinstance(try_to_load_from_cache(repo_id, file_name, cache_dir=cache_dir), str):
            return True
    return False


def _hub_offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get(name, "").strip().upper() for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any(flag in ("1", "ON", "YES", "TRUE") for flag in flags)


def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached (one quick connection, no retries), or None when it can or when a proxy is
    configured (the proxy decides; the hub client then reports its own errors)."""
    from huggingface_hub import constants

    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    if not host:
        return None
    try:
        with socket.create_connection((host, port), timeout=HUB_PROBE_SECONDS):
            return None
    except OSError as err:
        return f"{host}: {err.strerror or err}"
