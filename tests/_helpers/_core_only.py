"""pytest plugin: run tests as on a core-only install (``pip install facegeo``, no extras).

Loaded by ``tests/project/test_core_install.py`` in a subprocess (``-p _core_only``; imported as a
plain module by ``tests/benchmarks/test_gpu_check.py``). Every module
that an extra provides (``facegeo._optional.EXTRAS``) is made unimportable. A test that
then fails *because* such a module is missing (an ImportError naming one, a
``MissingExtraError``, a landmark ``BackendUnavailableError`` raised from one) is reported
as skipped with the reason ``needs extra``; any other failure stays a failure, so the core
code paths are checked to run without the extras.
"""

from __future__ import annotations

import importlib.abc
import os
import sys

import pytest

from facegeo._optional import EXTRAS

#: the extras' modules, plus any named in $FACEGEO_TEST_BLOCK (comma list; e.g. the
#: packages a bare GPU machine lacks: kornia, trimesh, platformdirs)
BLOCKED = frozenset(EXTRAS) | {m for m in os.environ.get("FACEGEO_TEST_BLOCK", "").split(",")
                               if m}


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (core-only install)",
                                      name=name)
        return None


for _m in [m for m in sys.modules if m.split(".")[0] in BLOCKED]:
    del sys.modules[_m]
sys.meta_path.insert(0, _Blocker())


def _missing_extra(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, ImportError) and "core-only install" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.excinfo is not None and _missing_extra(call.excinfo.value):
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1], "needs extra")
