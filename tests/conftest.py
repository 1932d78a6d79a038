"""Shared test fixtures.

The test tree mirrors the package tree (CONTRIBUTING.md, "Tests"); the test files have no
``__init__.py`` and are imported with ``--import-mode=importlib`` (pyproject.toml), so two
folders may hold files of the same name. Helper modules live in ``tests/_helpers/``, which
this file puts on ``sys.path`` (``from _paths import REPO``).

Third-party assets and media live outside the repository (``../shared`` next to the
checkout in CI). ``FACEGEO_ASSETS`` is honoured when set; otherwise it defaults to
``<repo>/../shared/assets`` when that folder exists. ``FACEGEO_MEDIA`` (default
``<repo>/../shared/media``) holds the real photos and videos used by integration tests.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

_HELPERS = Path(__file__).resolve().parent / "_helpers"
if str(_HELPERS) not in sys.path:
    sys.path.insert(0, str(_HELPERS))

from _paths import REPO  # noqa: E402

_SHARED = REPO.parent / "shared"

if not os.environ.get("FACEGEO_ASSETS") and (_SHARED / "assets").is_dir():
    os.environ["FACEGEO_ASSETS"] = str(_SHARED / "assets")
if not os.environ.get("FACEGEO_MEDIA") and (_SHARED / "media").is_dir():
    os.environ["FACEGEO_MEDIA"] = str(_SHARED / "media")
if not os.environ.get("FACEGEO_CORPUS") and (_SHARED / "corpus").is_dir():
    os.environ["FACEGEO_CORPUS"] = str(_SHARED / "corpus")
# The test-only models (``_test_...``) register when their module is imported.
import facegeo_models.common.testing  # noqa: E402, F401

# Tests never write into the real user cache.
os.environ.setdefault("FACEGEO_CACHE", str(REPO / ".pytest_cache" / "facegeo-cache"))


def _require_dir(var: str) -> Path:
    value = os.environ.get(var)
    if not value or not Path(value).is_dir():
        # In CI these folders always exist; locally, say what is missing instead of skipping
        # silently.
        what = {
            "FACEGEO_ASSETS": "the third-party assets (3DMMs, network weights) this test "
                              "loads",
            "FACEGEO_MEDIA": "the project's internal test media (real photos, driving videos, "
                             "media.json), which are not public and not in the repository",
            "FACEGEO_CORPUS": "the training corpus (face videos and manifest.json with "
                              "identities and an identity-disjoint split), not in the "
                              "repository",
        }.get(var, "files this test needs")
        state = f"is set to {value!r}, which is not a folder" if value else "is not set"
        pytest.fail(
            f"{var} {state}. This test needs {what}. Set {var}, or put the folder at "
            f"{_SHARED / var.removeprefix('FACEGEO_').lower()} (../shared next to the "
            "repository, as in CI).",
            pytrace=False,
        )
    return Path(value)


@pytest.fixture
def one_thread():
    """Run a test with one intra-op torch thread (restored afterwards). Opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")`` for modules of tiny tensors, where
    one thread is faster than two on a loaded 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    """The third-party assets folder (``$FACEGEO_ASSETS``)."""
    return _require_dir("FACEGEO_ASSETS")


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The training corpus (``$FACEGEO_CORPUS``: videos, photos, manifest.json)."""
    return _require_dir("FACEGEO_CORPUS")


@pytest.fixture(scope="session")
def media_dir() -> Path:
    """The real test media folder (``$FACEGEO_MEDIA``: photos, driving videos, media.json)."""
    return _require_dir("FACEGEO_MEDIA")
