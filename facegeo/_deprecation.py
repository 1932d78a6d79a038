"""Deprecation warnings for renamed or reordered facegeo API (one release of grace).

Every old spelling that still works warns with :class:`FacegeoDeprecationWarning` (a
``DeprecationWarning``) whose message ends in ``"(removed in facegeo 0.3); use <new>"``.
The repository's own code must not use old spellings: ``pyproject.toml``'s pytest
``filterwarnings`` turns these messages into errors (``pytest.warns`` still sees them).
The list of old spellings is in ``docs/conventions.md`` ("Deprecated spellings").
"""

from __future__ import annotations

import warnings

__all__ = ["FacegeoDeprecationWarning", "REMOVED_IN", "warn_deprecated"]

#: The release in which the deprecated spellings stop working.
REMOVED_IN = "0.3"


class FacegeoDeprecationWarning(DeprecationWarning):
    """An old facegeo spelling was used; the message names the new one."""


def warn_deprecated(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new``.

    ``stacklevel=3`` attributes the warning to the caller of the function that calls this
    helper (i.e. to the user's line)."""
    warnings.warn(f"{old} is deprecated (removed in facegeo {REMOVED_IN}); use {new}",
                  FacegeoDeprecationWarning, stacklevel=stacklevel)
