"""3D morphable face models: :class:`MorphableModel` and loaders / converters.

``MorphableModel.load()`` gives the project's default model (ICT-FaceKit, resolved through
:func:`facegeo.assets.resolve`). Loaders: :func:`load_ict_facekit_dir` /
:func:`convert_ict_facekit` (original ICT ``FaceXModel/`` folder), :func:`load_bfm2009`,
:func:`load_bfm_front` (Deep3DFaceRecon), :func:`load_3ddfa` (3DDFA ``bfm_noneck_v3``),
:func:`load_bfm2017` (BFM2017/2019 ``.h5``). See ``docs/morphable.md`` for conventions and
file formats.
"""

from facegeo.morphable.bfm import (
    from_3ddfa_dict,
    load_3ddfa,
    load_bfm2009,
    load_bfm2017,
    load_bfm_front,
    load_bfm_mat,
    orient_outward,
    restricted_pickle_load,
)
from facegeo.morphable.ict import (
    convert_ict_facekit,
    ict_to_arkit_name,
    load_ict_facekit_dir,
    parse_ict_readme,
    read_obj,
    read_obj_vertices,
)
from facegeo.morphable.model import (
    FORMAT_VERSION,
    UNIT_TO_METRES,
    MorphableModel,
    linear_shape,
    register_loader,
    registered_loaders,
    unit_scale,
)

__all__ = [
    "MorphableModel",
    "FORMAT_VERSION",
    "UNIT_TO_METRES",
    "unit_scale",
    "linear_shape",
    "register_loader",
    "registered_loaders",
    "load_ict_facekit_dir",
    "convert_ict_facekit",
    "parse_ict_readme",
    "ict_to_arkit_name",
    "read_obj",
    "read_obj_vertices",
    "load_bfm_mat",
    "load_bfm2009",
    "load_bfm_front",
    "load_3ddfa",
    "from_3ddfa_dict",
    "load_bfm2017",
    "orient_outward",
    "restricted_pickle_load",
]
