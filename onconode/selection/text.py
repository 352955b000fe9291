"""Free-text header values as comparable words: lower case, accents folded, split on anything that
is not a letter, digit or ``+``.

Why a module of its own: every classifier here searches descriptions typed by technologists in
many languages ("Thorax 2.0 B31f", "SCHÄDEL nativ", "t1_mpr_tra_iso", "Ax T1 +C"), and the same
normalisation must hold for all of them, or one classifier finds a word another misses.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_SPLIT = re.compile(r"[^a-z0-9+]+")


def fold(value: str) -> str:
    """Lower case without accents: "Schädel Tórax" → "schadel torax"."""
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower().replace("ß", "ss")


def words(value: str) -> tuple[str, ...]:
    """The words of ``value``; ``+`` stays a word of its own so "T1+C" gives ("t1", "+", "c")."""
    spaced = fold(value).replace("+", " + ")
    return tuple(w for w in _SPLIT.split(spaced) if w)


def has_word(found: Iterable[str], wanted: frozenset[str]) -> str | None:
    """The first of ``found`` that is in ``wanted``, else None."""
    for word in found:
        if word in wanted:
            return word
    return None


def has_phrase(value: str, phrases: Iterable[str]) -> str | None:
    """The first phrase (words separated by single spaces) that occurs in ``value`` word by word."""
    joined = " " + " ".join(words(value)) + " "
    for phrase in phrases:
        if f" {phrase} " in joined:
            return phrase
    return None


def has_prefix(found: Iterable[str], prefixes: tuple[str, ...]) -> str | None:
    """The first word of ``found`` that starts with one of ``prefixes``, else None."""
    for word in found:
        if word.startswith(prefixes):
            return word
    return None
