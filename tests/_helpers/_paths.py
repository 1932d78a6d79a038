"""The repository's folders, for tests that read files of the checkout.

The one place that knows where the tests live in the repository (``tests/_helpers/``):
test modules write ``from _paths import REPO`` instead of counting ``parents[N]`` from
their own location, which changes when a test file moves. ``tests/conftest.py`` puts this
folder on ``sys.path``.
"""

from __future__ import annotations

from pathlib import Path

#: the repository root (the folder holding pyproject.toml)
REPO = Path(__file__).resolve().parents[2]
#: the test tree (``tests/``)
TESTS = REPO / "tests"
#: checked-in test data (``tests/data/``)
TEST_DATA = TESTS / "data"
#: the helper modules (this folder): put on ``PYTHONPATH`` for subprocesses that load
#: ``-p _core_only`` or import ``_reference_packages``. Never put ``tests/`` itself there:
#: its ``tests/facegeo/`` (no ``__init__.py``) would shadow the editable ``facegeo``.
HELPERS = Path(__file__).resolve().parent
