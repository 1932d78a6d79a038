"""The core install: which dependencies are extras, and the core running without them."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from facegeo._optional import EXTRAS, MissingExtraError, missing_extra_message, require

from _paths import HELPERS, REPO

tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads pyproject.toml")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}


def _expand(extra: str) -> set[str]:
    """Distribution names an extra installs, following ``facegeo[...]`` references."""
    out: set[str] = set()
    for r in PYPROJECT["optional-dependencies"][extra]:
        m = re.fullmatch(r"facegeo\[([\w,-]+)\]", r)
        if m:
            for e in m.group(1).split(","):
                out |= _expand(e)
        else:
            out |= _names([r])
    return out


def test_heavy_packages_are_extras_not_core():
    core = _names(PYPROJECT["dependencies"])
    for extra, dist in EXTRAS.values():
        assert dist.lower() not in core, f"{dist} must be an extra, not a core dependency"
        assert dist.lower() in _expand(extra), f"extra {extra!r} does not install {dist}"
    # the runtime pin for face_recognition_models only comes with the dlib extra
    assert "setuptools" not in core and "setuptools" in _expand("dlib")
    assert "torch-geometric" not in core and "imageio-ffmpeg" not in core
    # the apps' extra covers what the main job needs; dev (the README's set-up) covers all
    assert {"av", "dlib-bin", "face_recognition_models", "scikit-image"} <= _expand("apps")
    assert {dist.lower() for _, dist in EXTRAS.values()} <= _expand("dev")


def test_missing_extra_error_names_the_extra():
    with pytest.raises(KeyError):
        require("numpy", "anything")
    msg = missing_extra_message("av", "reading video")
    assert 'pip install "facegeo[video]"' in msg and "'av'" in msg
    assert issubclass(MissingExtraError, ImportError)


def test_core_tests_pass_without_any_extra(tmp_path):
    """The core test files in a subprocess where every extra's module is unimportable.

    Tests that fail only because an extra is missing (a real photo needs dlib, a reference
    needs open3d) are skipped there by ``tests/_helpers/_core_only.py``; everything else must pass,
    and every feature behind an extra must say which extra to install.
    """
    files = ["facegeo/test_coords.py", "facegeo/test_mls.py", "facegeo/mesh/test_operators.py",
             "facegeo/test_metrics.py", "facegeo/morphable/test_ict.py",
             "facegeo/raster/test_core.py", "facegeo/test_fitting.py",
             "facegeo/test_graphconv.py", "project/test_package.py"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(HELPERS))
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "_core_only", "-p", "no:cacheprovider",
         "-o", "addopts=-p no:dash --import-mode=importlib", "-rs",
         *[str(REPO / "tests" / f) for f in files]],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    tail = r.stdout[-3000:] + r.stderr[-2000:]
    assert r.returncode == 0, tail
    passed = int(re.search(r"(\d+) passed", r.stdout).group(1))
    skipped = re.search(r"(\d+) skipped", r.stdout)
    assert passed > 150 and (skipped is None or int(skipped.group(1)) < 10), tail

    # the features behind extras fail with the extra's name, in the same setting
    probe = (
        "import _core_only, torch, pytest\n"
        "from facegeo import video, raster, landmarks\n"
        "from facegeo._optional import MissingExtraError\n"
        "from facegeo_apps._cli import demo_source\n"
        "for f, extra in [(lambda: video.video_info('x.mp4'), 'video'),\n"
        "                 (lambda: landmarks.detect_face(torch.zeros(3, 8, 8)), 'dlib'),\n"
        "                 (lambda: raster.rasterize(torch.zeros(1, 3, 3),\n"
        "                      torch.tensor([[0, 1, 2]]), 4, 4, backend='open3d'), 'open3d'),\n"
        "                 (demo_source, 'demo')]:\n"
        "    with pytest.raises(Exception, match=rf'facegeo\\[{extra}\\]'):\n"
        "        f()\n"
        "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr
