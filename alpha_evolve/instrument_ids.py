"""A valid NautilusTrader symbol for any name a user gives an instrument (usually a data file's name).

NautilusTrader 1.221 reads ``_`` in a symbol as a spread separator (``SP_500.SIM`` fails with "Invalid symbol
format for component: SP" as soon as a strategy touches it), ``.`` separates the venue and ``-`` separates the
parts of a bar type, while file names carry spaces, dots, ``&``, accents and any other Unicode. The engine only
ever sees ``instrument_symbol(name)``; everything people read (tables, SUMMARY.json, errors) keeps their own name.

The mapping is deterministic (a resumed run gets the same ids) and injective enough for a universe: when cleaning
changed the name, a short hash of the original is appended, so ``SP 500`` and ``SP_500`` do not collide.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_SYMBOL_LENGTH = 48
"""Longer names are shortened (with their hash kept) so ids stay readable in the engine's logs."""

_ALLOWED = re.compile(r"[^A-Za-z0-9-]+")


def instrument_symbol(name: str) -> str:
    """``SP_500`` -> ``SP-500-<hash>``, ``AAPL`` -> ``AAPL``; ASCII letters, digits and single inner hyphens only."""
    original = str(name)
    ascii_form = unicodedata.normalize("NFKD", original).encode("ascii", "ignore").decode("ascii")
    cleaned = _ALLOWED.sub("-", ascii_form)
    cleaned = re.sub(r"-{2,}", "-", cleaned).strip("-")
    if cleaned == original and len(cleaned) <= MAX_SYMBOL_LENGTH:
        return cleaned
    digest = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:6].upper()
    stem = cleaned[: MAX_SYMBOL_LENGTH - len(digest) - 1].rstrip("-") or "X"
    return f"{stem}-{digest}"
