"""Command-line flags generated from the settings dataclasses (:mod:`pabee.settings`).

Each field described with :func:`pabee.settings.setting` becomes one flag (plus its aliases and extra spellings),
with the field's help and its default shown from the dataclass. Flags default to ``argparse.SUPPRESS``: the
parsed namespace holds only what the user typed, and :func:`typed_values` hands exactly that to the dataclass, so
every other value keeps the dataclass default, stated once.

Why not ``transformers.HfArgumentParser``: it imports transformers (and torch) before ``--help`` can answer, makes
every boolean a ``--flag [true|false]`` pair, cannot nest :class:`~pabee.settings.TrainSettings` in
:class:`~pabee.settings.RunSettings`, and has no place for the comma-separated lists, the optional-value
``--resume_from_checkpoint``, the per-front-end flags or the extra spellings (``--group_by_length``,
``--warmup_ratio``) the existing command lines use. This is ~100 lines over :func:`dataclasses.fields`.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


def flag_of(f: dataclasses.Field) -> str:
    """The main spelling of a field's flag."""
    return f.metadata.get("flag") or f"--{f.name}"


def _help(f: dataclasses.Field, kind: type | None) -> str:
    text = f.metadata.get("help", "")
    default = f.default
    if default not in (dataclasses.MISSING, None, False, "") and kind is not bool and "(default" not in text:
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text = f"{text} (default: {shown})"
    return text.replace("%", "%%")


def add_settings_arguments(parser: argparse.ArgumentParser, settings_class: type, front: str) -> None:
    """Add a flag for every field of ``settings_class`` offered in ``front`` ("seed", "train", "eval", ...)."""
    hints = typing.get_type_hints(settings_class, localns=_lazy_types())
    for f in dataclasses.fields(settings_class):
        meta = f.metadata
        if front not in meta.get("fronts", ()):
            continue
        kind = _scalar_type_from_hint(hints.get(f.name))
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": _help(f, kind)}
        if meta.get("parse") is None and kind is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = meta.get("parse") or kind or str
            for key in ("choices", "nargs", "const"):
                if meta.get(key) is not None:
                    kwargs[key] = meta[key]
            if meta.get("choices") is None:
                kwargs["metavar"] = flag_of(f).lstrip("-").upper().replace("-", "_")
        if front in meta.get("required_in", ()):
            kwargs["required"] = True
        if not flag_of(f).startswith("-"):  # a positional argument (e.g. MODEL): required, named by the field
            del kwargs["dest"], kwargs["default"]
        parser.add_argument(flag_of(f), *meta.get("aliases", ()), **kwargs)
        for spelling in meta.get("spellings", ()):
            extra = {k: v for k, v in spelling.items() if k != "flag"}
            if "type" in extra:
                extra.setdefault("metavar", spelling["flag"].lstrip("-").upper())
            parser.add_argument(spelling["flag"], dest=f.name, default=argparse.SUPPRESS, **extra)


def _lazy_types() -> dict:
    """Names used only in annotations whose modules are not imported (ExitRule would import torch)."""
    return {"ExitRule": object}


def _scalar_type_from_hint(hint: Any) -> type | None:
    if hint is None:
        return None
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    kinds = [a for a in args if a is not type(None)]
    return kinds[0] if kinds and kinds[0] in (int, float, str, bool) else None


def typed_values(args: argparse.Namespace, settings_class: type) -> dict[str, Any]:
    """The fields of ``settings_class`` the user gave on the command line, as keyword arguments (fields without a
    flag are left out even when another class's flag has their name)."""
    given = vars(args)
    return {f.name: given[f.name] for f in dataclasses.fields(settings_class)
            if f.metadata.get("fronts") and f.name in given}


def flag_spellings(settings_classes: list[type]) -> dict[str, list[str]]:
    """main flag -> its other spellings, over the fields of ``settings_classes`` (for error messages)."""
    table: dict[str, list[str]] = {}
    for cls in settings_classes:
        for f in dataclasses.fields(cls):
            if not f.metadata.get("fronts"):
                continue
            table[flag_of(f)] = [*f.metadata.get("aliases", ()),
                                 *(s["flag"] for s in f.metadata.get("spellings", ()))]
    return table
