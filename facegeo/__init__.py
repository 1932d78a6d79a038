"""facegeo: a geometry toolkit for 3D faces.

The geometry core (this package) never imports from ``facegeo_models`` (the reenactment
models, folder ``models/``) or ``facegeo_apps`` (command-line programs, folder ``apps/``);
``tests/test_layering.py`` enforces it. Sub-modules are imported on demand, e.g.
``from facegeo import mls`` or ``import facegeo.assets``.
"""

__version__ = "0.1.0"
