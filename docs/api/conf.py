"""Sphinx configuration of the facegeo API reference (generated from the docstrings).

Build: ``python -m sphinx -b html docs/api build/api`` (checked by tests/project/test_docs_build.py
with ``-W --keep-going``). The Markdown guides in docs/*.md are not part of this build.
"""

from __future__ import annotations

import facegeo

project = "facegeo"
author = "facegeo contributors"
release = version = facegeo.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # Google-style "Args:" / "Returns:" sections
    "sphinx.ext.viewcode",
]

# Built-in theme: no extra dependency.
html_theme = "alabaster"
exclude_patterns = ["_build"]
templates_path: list[str] = []
html_static_path: list[str] = []

autodoc_default_options = {
    "members": True,
    "undoc-members": False,
    "show-inheritance": True,
    "member-order": "bysource",
}
# Keep signatures readable: show annotations in the description, not in the signature.
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
# Optional backends (pytorch3d, face_alignment, mediapipe) are imported lazily; mock them
# in case a module references them at import time.
autodoc_mock_imports = ["pytorch3d", "face_alignment", "mediapipe"]

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# "Attributes:" sections of dataclasses/NamedTuples become :ivar: fields; as directives they
# would duplicate the attributes autodoc already documents ("duplicate object description").
napoleon_use_ivar = True
# "Methods:" sections (facegeo.pipeline.Reenactor) summarise methods autodoc documents
# anyway: render them as a plain section rather than as duplicate ``.. method::`` entries.
napoleon_custom_sections = ["Methods"]

# Unresolvable cross-references (torch.Tensor, numpy arrays, ...) are not errors: there is
# no intersphinx (the build runs offline).
nitpicky = False

# The docstrings are Google-style plain text written for ``help()`` and the source, not
# strict reStructuredText: math such as ``|a - b|`` reads as a substitution reference,
# ``x*y`` as emphasis, hand-drawn tables and indented code lines break docutils' layout
# rules. About 30 such docutils messages over a dozen modules (pfp_mls.network,
# common.blocks/losses/perceptual, metrics, mesh, morphable.model, pipeline, reenact,
# transforms, evaluation) are silenced here instead of rewriting those docstrings; the text
# still renders (as plain paragraphs). Autodoc import failures, missing modules, toctree and
# duplicate-object warnings stay errors under -W.
suppress_warnings = ["docutils"]
