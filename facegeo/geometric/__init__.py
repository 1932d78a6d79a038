"""Core primitives of the geometric (training-free) renderer of :mod:`facegeo.reenact`.

* :mod:`~facegeo.geometric.state`: the fitting state (:class:`FaceFit`,
  :class:`DrivingTrack`, :class:`SourceState`, :class:`RenderOutput`);
* :mod:`~facegeo.geometric.facemesh`: :class:`FaceMesh` (a 3DMM face region with its
  outline and capped eye / mouth holes), :func:`posed_vertices` (weak perspective to image
  space), :func:`boundary_loops`;
* :mod:`~facegeo.geometric.headproxy`: :class:`HeadEllipsoid` and
  :func:`ellipsoid_flow` (hair, ears, outline and the background next to the head turn with
  the head);
* :mod:`~facegeo.geometric.render`: the stages :func:`face_flow`, :func:`head_flow`,
  :func:`silhouette_weight`, :func:`compose`, :func:`mouth_fill`.

:class:`facegeo.reenact.GeometricReenactor` chains them; docs/reenact.md shows each stage.
"""

from facegeo.geometric.facemesh import FaceMesh, boundary_loops, posed_vertices
from facegeo.geometric.headproxy import HeadEllipsoid, ellipsoid_flow
from facegeo.geometric.render import (
    compose,
    eyelid_fill,
    face_flow,
    head_flow,
    min_stretch,
    mouth_fill,
    polygon_mask,
    silhouette_weight,
    soften_stretched,
)
from facegeo.geometric.state import DrivingTrack, FaceFit, RenderOutput, SourceState

__all__ = ["FaceMesh", "boundary_loops", "posed_vertices", "HeadEllipsoid", "ellipsoid_flow",
           "face_flow", "head_flow", "silhouette_weight", "compose", "mouth_fill",
           "polygon_mask", "min_stretch", "soften_stretched", "eyelid_fill", "FaceFit",
           "DrivingTrack", "SourceState", "RenderOutput"]
