"""The API reference (docs/api, Sphinx autodoc + napoleon) builds without warnings.

Every public module listed in docs/api/index.rst must import and its docstrings must render;
``-W --keep-going`` turns every Sphinx warning (a module that fails to import, a missing
page, a duplicate object) into a failure and reports all of them at once. The ``dummy``
builder runs the whole read phase (autodoc imports and docstring parsing) without writing
HTML; ``python -m sphinx -b html docs/api build/api`` builds the browsable pages.
"""

import subprocess
import sys

from _paths import REPO

API = REPO / "docs" / "api"


def test_api_docs_build_without_warnings(tmp_path):
    cmd = [sys.executable, "-m", "sphinx", "-b", "dummy", "-E", "-W", "--keep-going", "-q",
           "-d", str(tmp_path / "doctrees"), str(API), str(tmp_path / "out")]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (
        f"sphinx exited {result.returncode}:\n{result.stdout}\n{result.stderr}")


def test_api_index_lists_every_module_page():
    index = (API / "index.rst").read_text()
    pages = sorted(p.stem for p in (API / "modules").glob("*.rst"))
    assert pages, "no module pages under docs/api/modules"
    for page in pages:
        assert f"modules/{page}\n" in index, f"{page} is not in docs/api/index.rst's toctree"
        text = (API / "modules" / f"{page}.rst").read_text()
        assert f".. automodule:: {page}\n" in text, page
