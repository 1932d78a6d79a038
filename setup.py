"""Package discovery for the import layout described in docs/architecture.md.

Everything else lives in pyproject.toml. The folders models/, apps/ and data/ are
installed under the distinctive import names ``facegeo_models``, ``facegeo_apps`` and
``facegeo_data`` so that no generic top-level name (``models``, ``apps``, ``data``) lands
in site-packages.
"""

from setuptools import find_packages, setup

RENAMED = {"models": "facegeo_models", "apps": "facegeo_apps", "data": "facegeo_data"}

packages = find_packages(include=["facegeo", "facegeo.*"])
for folder, name in RENAMED.items():
    for pkg in find_packages(include=[folder, folder + ".*"]):
        packages.append(name + pkg[len(folder):])

setup(packages=packages, package_dir={name: folder for folder, name in RENAMED.items()})
