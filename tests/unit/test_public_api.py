"""The one public namespace: a sorted __all__ whose every name resolves."""

from __future__ import annotations

import batchkiln


def _isort_style(name: str) -> tuple[int, str]:
    """Ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical."""
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


def test_all_is_sorted() -> None:
    """__all__ is kept sorted (as ruff sorts it), so additions are easy to review."""
    assert batchkiln.__all__ == sorted(batchkiln.__all__, key=_isort_style)


def test_every_public_name_exists() -> None:
    """Each name in __all__ is importable from the package root."""
    missing = [name for name in batchkiln.__all__ if not hasattr(batchkiln, name)]
    assert missing == []


def test_no_duplicates_in_all() -> None:
    """A name is exported once."""
    assert len(set(batchkiln.__all__)) == len(batchkiln.__all__)
