"""Words and the character edits DeepWordBug makes to them.

* :func:`word_spans`: where the words of a text are (runs of letters; digits, punctuation and spaces are left
  alone).
* :data:`TRANSFORMS` and :func:`apply_edit`: DeepWordBug's four "transformers" (Gao et al., 2018, Section
  3.2): swap two adjacent letters, substitute a letter with a random one, delete a letter, insert a random
  letter.
* :func:`candidate_edits`: the random edits tried on one word, drawn from a generator seeded by (seed, example
  key, word index), so every exit rule attacked with the same seed sees exactly the same candidate edits of a
  word.
* :func:`levenshtein`: edit distance (a swap of two different letters costs 2, the other edits 1).

Pure Python; no model, no numpy.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

WORD = re.compile(r"[^\W\d_]+")  # a run of letters (any script)
LETTERS = string.ascii_lowercase
TRANSFORMS = ("swap", "substitute", "delete", "insert")


@dataclass(frozen=True)
class Edit:
    """One character edit: ``kind`` (one of :data:`TRANSFORMS`) at ``position`` of a word; ``letter`` is the
    new letter of "substitute" and "insert" ("" otherwise). "swap" exchanges the letters at ``position`` and
    ``position + 1``; "insert" puts ``letter`` before ``position`` (``position == len(word)``: at the end)."""

    kind: str
    position: int
    letter: str = ""


def word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every word of ``text``, in order; ``text[start:end]`` is the word."""
    return [m.span() for m in WORD.finditer(text)]


def replace_spans(text: str, spans: Sequence[tuple[int, int]], words: Sequence[str]) -> str:
    """``text`` with ``text[start:end]`` replaced by ``words[k]`` for the k-th span (spans in order,
    disjoint)."""
    if len(spans) != len(words):
        raise ValueError(f"{len(spans)} spans but {len(words)} words")
    pieces, position = [], 0
    for (start, end), word in zip(spans, words):
        pieces += [text[position:start], word]
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def apply_edit(word: str, edit: Edit) -> str:
    """``word`` after ``edit``; ValueError when the position does not exist in the word."""
    n, i = len(word), edit.position
    if edit.kind == "swap":
        if not 0 <= i < n - 1:
            raise ValueError(f"cannot swap letters {i} and {i + 1} of {word!r}")
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if edit.kind == "substitute":
        if not 0 <= i < n:
            raise ValueError(f"no letter {i} in {word!r}")
        return word[:i] + edit.letter + word[i + 1 :]
    if edit.kind == "delete":
        if not 0 <= i < n:
            raise ValueError(f"no letter {i} in {word!r}")
        return word[:i] + word[i + 1 :]
    if edit.kind == "insert":
        if not 0 <= i <= n:
            raise ValueError(f"cannot insert at {i} in {word!r}")
        return word[:i] + edit.letter + word[i:]
    raise ValueError(f"unknown edit {edit.kind!r}; choose one of {', '.join(TRANSFORMS)}")


def random_edit(kind: str, word: str, rng: random.Random) -> Edit | None:
    """A random edit of ``kind`` that changes ``word``, or None when there is none (a swap needs two different
    adjacent letters, a deletion a word of two letters or more: deleting a one-letter word removes the
    word)."""
    n = len(word)
    if kind == "swap":
        positions = [i for i in range(n - 1) if word[i] != word[i + 1]]
        return Edit("swap", rng.choice(positions)) if positions else None
    if kind == "substitute":
        if n == 0:
            return None
        i = rng.randrange(n)
        return Edit("substitute", i, rng.choice([c for c in LETTERS if c != word[i].lower()]))
    if kind == "delete":
        return Edit("delete", rng.randrange(n)) if n >= 2 else None
    if kind == "insert":
        return Edit("insert", rng.randrange(n + 1), rng.choice(LETTERS))
    raise ValueError(f"unknown edit {kind!r}; choose one of {', '.join(TRANSFORMS)}")


def edit_rng(seed: int, key: str, word_index: int) -> random.Random:
    """The generator of the candidate edits of one word: the same (seed, key, index) gives the same draws in
    any process (string seeds are hashed with SHA-512, independent of PYTHONHASHSEED)."""
    return random.Random(f"{seed}:{key}:{word_index}")


def candidate_edits(word: str, rng: random.Random, per_transform: int = 1) -> list[tuple[Edit, str]]:
    """Up to ``per_transform`` random edits of each of the four kinds, as (edit, new word), in
    :data:`TRANSFORMS` order; edits that leave the word unchanged or repeat an earlier candidate are
    dropped."""
    if per_transform < 1:
        raise ValueError(f"per_transform must be >= 1, got {per_transform}")
    out, seen = [], {word}
    for kind in TRANSFORMS:
        for _ in range(per_transform):
            edit = random_edit(kind, word, rng)
            if edit is None:
                break
            new = apply_edit(word, edit)
            if new not in seen:
                seen.add(new)
                out.append((edit, new))
    return out


def levenshtein(a: str, b: str) -> int:
    """The Levenshtein distance (insertions, deletions and substitutions of one character each cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]
