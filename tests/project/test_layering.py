"""Layering guard (docs/architecture.md): imports point downward only.

* nothing under ``facegeo/`` (the core) imports ``facegeo_models`` or ``facegeo_apps``;
* nothing under ``models/`` imports ``facegeo_apps``;
* a model sub-package ``models/<name>/`` imports only ``facegeo``, ``facegeo_models.common``,
  ``facegeo_models`` registry-level modules (files directly in ``models/``) and itself, never
  another model's modules.

The checker works on the source text (``ast``), so it also catches imports inside
functions. ``test_checker_catches_*`` show that it fails when the rule is broken.
"""

from __future__ import annotations

import ast
from pathlib import Path

from _paths import REPO

FOLDERS = {"facegeo": "facegeo", "models": "facegeo_models", "apps": "facegeo_apps"}
# the names a checkout-relative import could also use
ALIASES = {"models": "facegeo_models", "apps": "facegeo_apps"}


def _module_name(root: Path, path: Path) -> tuple[str, bool]:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    parts[0] = FOLDERS[parts[0]]
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts = parts[:-1]
    return ".".join(parts), is_pkg


def _imports(path: Path, modname: str, is_pkg: bool) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = modname if is_pkg else modname.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
            out += [(node.lineno, n) for n in names]
    resolved = []
    for line, name in out:
        head, _, rest = name.partition(".")
        if head in ALIASES:
            name = ALIASES[head] + ("." + rest if rest else "")
        resolved.append((line, name))
    return resolved


def find_violations(root: Path) -> list[str]:
    """Return a human-readable line for every import that breaks the layering rules."""
    problems = []
    for folder in FOLDERS:
        base = root / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            modname, is_pkg = _module_name(root, path)
            parts = modname.split(".")
            for line, target in _imports(path, modname, is_pkg):
                tparts = target.split(".")
                where = f"{path.relative_to(root)}:{line} imports {target}"
                if folder == "facegeo" and tparts[0] in ("facegeo_models", "facegeo_apps"):
                    problems.append(f"{where} (the core must not depend on models/apps)")
                if folder == "models" and tparts[0] == "facegeo_apps":
                    problems.append(f"{where} (models must not depend on apps)")
                if (
                    folder == "models"
                    and len(parts) >= 2
                    and parts[1] != "common"
                    and tparts[0] == "facegeo_models"
                    and len(tparts) >= 2
                    and tparts[1] not in ("common", parts[1])
                    and (base / tparts[1]).is_dir()
                ):
                    problems.append(f"{where} (a model must not import another model)")
    return problems


def test_repository_respects_layering():
    assert find_violations(REPO) == []


def _write(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def _tree(tmp_path: Path) -> Path:
    for rel in ["facegeo/__init__.py", "facegeo/mesh.py", "models/__init__.py",
                "models/common/__init__.py", "models/alpha/__init__.py",
                "models/alpha/net.py", "models/beta/__init__.py", "models/beta/_private.py",
                "apps/__init__.py"]:
        _write(tmp_path, rel, "")
    return tmp_path


def test_checker_accepts_a_clean_tree(tmp_path):
    root = _tree(tmp_path)
    _write(root, "models/alpha/net.py",
           "import facegeo.mesh\nfrom facegeo_models.common import x\nfrom . import y\n"
           "from ..common import z\n")
    _write(root, "apps/run.py", "import facegeo_models.alpha\nimport facegeo\n")
    assert find_violations(root) == []


def test_checker_catches_core_importing_models(tmp_path):
    root = _tree(tmp_path)
    _write(root, "facegeo/mesh.py", "def f():\n    from facegeo_models.common import blocks\n")
    _write(root, "facegeo/raster.py", "import models.alpha\n")
    found = find_violations(root)
    assert len(found) == 2 and all("core must not depend" in p for p in found)


def test_checker_catches_core_importing_apps(tmp_path):
    root = _tree(tmp_path)
    _write(root, "facegeo/mesh.py", "from facegeo_apps import reenact\n")
    assert len(find_violations(root)) == 1


def test_checker_catches_model_importing_another_model(tmp_path):
    root = _tree(tmp_path)
    _write(root, "models/alpha/net.py", "from facegeo_models.beta._private import secret\n")
    _write(root, "models/alpha/loss.py", "from ..beta import _private\n")
    found = find_violations(root)
    assert len(found) == 2 and all("another model" in p for p in found)


def test_checker_catches_model_importing_apps(tmp_path):
    root = _tree(tmp_path)
    _write(root, "models/common/blocks.py", "import facegeo_apps.train\n")
    assert ["models must not depend on apps" in p for p in find_violations(root)] == [True]


def test_installed_import_names_are_distinctive(tmp_path):
    """The installed distribution provides facegeo, facegeo_models, facegeo_apps and
    facegeo_data, and no generic top-level name (run outside the checkout so the
    repository folders themselves are not on sys.path)."""
    import subprocess
    import sys

    code = (
        "import importlib.util as u, facegeo, facegeo_models, facegeo_apps, facegeo_data\n"
        "print(sorted(n for n in ('models', 'apps', 'data', 'benchmarks', 'tests')"
        " if u.find_spec(n) is not None))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"
