"""The package surface of ``facegeo``: sub-modules reachable as attributes, a fast import.

``import facegeo`` must not load torch or the heavy optional dependencies; the sub-modules
that need them are loaded on first attribute access (PEP 562 ``__getattr__``). The checks
run in a fresh interpreter, since the test session itself has already imported everything.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import pytest

import facegeo

from _paths import REPO

# must stay out of sys.modules after a bare `import facegeo`
HEAVY = ["torch", "open3d", "dlib", "numba", "av", "kornia", "trimesh", "torch_geometric",
         "skimage", "scipy", "cv2", "h5py"]


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_facegeo_loads_no_heavy_module():
    res = _run("import json, sys, facegeo\n"
               f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    assert res == []


def test_lazy_attributes_resolve_after_plain_import():
    res = _run("import json, sys, facegeo\n"
               "names = [facegeo.mls.warp_image.__name__, facegeo.raster.rasterize.__name__,\n"
               "         facegeo.fitting.fit_landmarks.__name__]\n"
               "print(json.dumps({'names': names, 'mls': 'facegeo.mls' in sys.modules}))")
    assert res == {"names": ["warp_image", "rasterize", "fit_landmarks"], "mls": True}


def test_submodule_list_matches_the_package_folder():
    pkg = REPO / "facegeo"
    found = {p.stem for p in pkg.glob("*.py") if not p.name.startswith("_")}
    found |= {p.name for p in pkg.iterdir()
              if p.is_dir() and (p / "__init__.py").exists() and not p.name.startswith("_")}
    assert set(facegeo.SUBMODULES) == found


def test_dir_lists_every_submodule_and_each_resolves():
    listed = dir(facegeo)
    for name in facegeo.SUBMODULES:
        assert name in listed
        assert getattr(facegeo, name).__name__ == f"facegeo.{name}"


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        facegeo.nope  # noqa: B018


def test_version_is_written_once():
    assert importlib.metadata.version("facegeo") == facegeo.__version__
