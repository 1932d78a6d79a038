"""A fresh machine: no ../shared, no $FACEGEO_ASSETS, an empty user cache. The default
morphable model (ICT-FaceKit, MIT) ships with the package (data/ict_facekit/), so the main
job runs; a copy in $FACEGEO_ASSETS or the cache still wins over the packaged one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facegeo import assets
from facegeo.assets import AssetNotFoundError, resolve

PACKAGED = assets.data_path("ict_facekit/ict_facekit.npz")


def _fresh_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a fresh install: no asset or media folder, an empty cache."""
    env = {k: v for k, v in os.environ.items() if k not in ("FACEGEO_ASSETS", "FACEGEO_MEDIA")}
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    env["FACEGEO_CACHE"] = str(cache)
    return env


def test_packaged_model_ships_with_its_licence():
    folder = PACKAGED.parent
    assert PACKAGED.is_file() and PACKAGED.stat().st_size > 1_000_000
    assert "MIT License" in (folder / "LICENSE.txt").read_text()
    readme = (folder / "README.md").read_text()
    assert "ICT-VGL/ICT-FaceKit" in readme and "da5f95a6" in readme and "MIT" in readme
    assert (folder / "__init__.py").is_file()  # installed like data/ldnet (facegeo_data)


def test_demo_runs_on_a_fresh_machine(tmp_path):
    work = tmp_path / "work"  # cwd with no ../shared beside it
    work.mkdir()
    out = tmp_path / "demo.mp4"
    proc = subprocess.run(
        [sys.executable, "-m", "facegeo_apps.reenact", "--demo", "--frames", "4", "--size",
         "64", "--output", str(out), "--quiet"],
        cwd=work, env=_fresh_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.is_file() and out.stat().st_size > 0
    assert list((tmp_path / "empty-cache").iterdir()) == []  # nothing downloaded


def test_default_model_resolves_to_packaged_copy_on_a_fresh_machine(tmp_path):
    code = (
        "import facegeo.assets as a\n"
        "from facegeo.morphable import MorphableModel\n"
        "seen = []\n"
        "_resolve = a.resolve\n"
        "a.resolve = lambda *args, **kw: seen.append(_resolve(*args, **kw)) or seen[-1]\n"
        "m = MorphableModel.load()\n"
        "print(m.name, seen[-1])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_fresh_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name, path = proc.stdout.split()[-2:]
    assert name == "ict_facekit"
    assert Path(path).resolve() == PACKAGED.resolve()


@pytest.mark.parametrize("where", ["FACEGEO_ASSETS", "FACEGEO_CACHE"])
def test_assets_folder_and_cache_win_over_packaged_copy(tmp_path, monkeypatch, where):
    root = tmp_path / "root"
    copy = root / "3dmm" / "ict_facekit.npz"
    copy.parent.mkdir(parents=True)
    shutil.copyfile(PACKAGED, copy)
    monkeypatch.delenv("FACEGEO_ASSETS", raising=False)
    monkeypatch.setenv("FACEGEO_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv(where, str(root))
    assert resolve("ict_facekit") == copy
    copy.unlink()  # gone from there: the packaged copy is next
    assert resolve("ict_facekit").resolve() == PACKAGED.resolve()
    explicit = tmp_path / "mine.npz"
    explicit.write_bytes(b"x")
    assert resolve("ict_facekit", path=explicit) == explicit


def test_missing_packaged_copy_is_reported(tmp_path, monkeypatch):
    monkeypatch.delenv("FACEGEO_ASSETS", raising=False)
    monkeypatch.setenv("FACEGEO_CACHE", str(tmp_path / "empty-cache"))

    def absent(relpath):
        raise FileNotFoundError(relpath)

    monkeypatch.setattr(assets, "data_path", absent)
    with pytest.raises(AssetNotFoundError, match=r"packaged copy: facegeo_data/ict_facekit"):
        resolve("ict_facekit")
