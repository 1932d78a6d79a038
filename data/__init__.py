"""Small project-owned files the code needs at run time (installed as ``facegeo_data``).

Only files this project made itself live here (index maps, configs, the project's own
trained weights); third-party assets are resolved by ``facegeo.assets``.
"""
