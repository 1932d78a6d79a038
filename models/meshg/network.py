"""Network of the mesh-guided one-shot reenactment model (meshg).

Yao, Yuan, Shao, Zhou: "Mesh Guided One-shot Face Reenactment using Graph Convolutional
Networks" (ACM MM 2020). See docs/models/meshg.md for the choices the paper leaves open.

Data flow (the three modules of section 3; coordinates inside the network are normalized
``grid_sample`` coordinates, align_corners=False, see :mod:`facegeo.coords`)::

    fits (facegeo FaceFit: identity, expression, weak-perspective pose; the pipeline's)
      mesh regression (sec. 3.1): M_s = id_s + exp_s + pose_s,
                                  M_d = id_s + exp_d + pose_d   (the driver's id never enters)
      -> V* = [M_s xyz, M_d xyz] (B, V, 6), posed in image space, normalized     (MeshRegression)
    motion net (sec. 3.2): GCN encoder, ChebConv K=3 residual blocks + instance norm + ReLU +
      graph linear, quadric down-sampling D between blocks -> latent (B, D_z)  (MeshMotionEncoder)
      CNN decoder (up-sampling residual blocks, residual blocks) -> flow T* (B, h, h, 2)
                                                           (common.flow_decoder.LatentFlowDecoder)
    reenacting module (sec. 3.3): occlusion net (4-level hourglass on the source and the
      source warped by T*) -> flow mask M (softmax over {no motion, T*}) + occlusion map O
                                                          (common.blocks.DenseMotionNetwork)
      encoder-decoder generator: source features warped by the masked flow, times O
                                                       (common.blocks.OcclusionAwareGenerator)
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, replace

import torch
from torch import nn

from facegeo.coords import pixel_to_normalized
from facegeo.graphconv import GraphResBlock, SparsePool
from facegeo.pipeline import MODES, Conditioning
from facegeo.reenact import FaceFit, posed_vertices

from ..common.blocks import AntiAliasInterpolation2d, DenseMotionNetwork, OcclusionAwareGenerator
from ..common.flow_decoder import LatentFlowDecoder
from ..common.model import ReenactmentModel, batch_images, check_images
from ..common.registry import register_model

__all__ = ["MeshRegression", "MeshMotionEncoder", "MeshG", "MeshTopology", "mesh_topology",
           "fits_from_batch"]


# ---------------------------------------------------------------------------- topology
@dataclass
class MeshTopology:
    """The fixed mesh the motion net runs on: a CoMA pyramid of the morphable model.

    Attributes:
        vertex_ids: (V_l0,) int64 rows of the morphable model evaluated (the vertices of
            level ``input_level``).
        laplacians: scaled Chebyshev Laplacians of levels ``input_level ...`` (sparse).
        downs: down-sampling selection matrices D of those levels (sparse (V_{l+1}, V_l)).
        num_vertices: vertex count of every level from ``input_level`` on.
        faces: (F, 3) int64 triangles of the input level (rows of ``vertex_ids``).
    """

    vertex_ids: torch.Tensor
    laplacians: list[torch.Tensor]
    downs: list[torch.Tensor]
    num_vertices: list[int]
    faces: torch.Tensor | None = None


def _region_vertices(mm, regions) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertex rows of ``regions`` used by triangles inside them, and those triangles
    re-indexed: ((V,) int64, (F, 3) int64)."""
    V = mm.n_vertices
    if regions:
        if getattr(mm, "vertex_region", None) is None:
            raise ValueError(f"the morphable model {mm.name!r} has no vertex regions; use "
                             "regions: null")
        names = list(mm.region_names)
        missing = [r for r in regions if r not in names]
        if missing:
            raise ValueError(f"unknown regions {missing}; {mm.name} has {names}")
        keep = torch.isin(mm.vertex_region.cpu(), torch.tensor([names.index(r)
                                                                for r in regions]))
    else:
        keep = torch.ones(V, dtype=torch.bool)
    tri = mm.triangles.cpu().long()
    tri = tri[keep[tri].all(1)]
    used = torch.zeros(V, dtype=torch.bool)
    used[tri.reshape(-1)] = True
    ids = used.nonzero().squeeze(1)
    remap = torch.full((V,), -1, dtype=torch.long)
    remap[ids] = torch.arange(ids.numel())
    return ids, remap[tri]


def mesh_topology(mm, regions=None, factors=(4, 4, 4, 4), input_level: int = 0
                  ) -> MeshTopology:
    """The motion net's mesh: the morphable model's mean face (restricted to ``regions``),
    decimated by ``factors`` with :func:`facegeo.mesh.mesh_hierarchy` (quadric edge
    collapse, cached on disk), used from level ``input_level`` on.

    Returns a :class:`MeshTopology` with ``len(factors) - input_level`` down-sampling
    matrices."""
    from facegeo.mesh.operators import chebyshev_laplacian
    from facegeo.mesh.sampling import mesh_hierarchy

    if not 0 <= input_level < len(factors):
        raise ValueError(f"input_level must be in [0, {len(factors)}), got {input_level}")
    key = (id(mm), tuple(regions or ()), tuple(float(f) for f in factors), input_level)
    hit = _TOPOLOGIES.get(key)
    if hit is not None and hit[0] is mm:
        return hit[1]
    ids, tri = _region_vertices(mm, regions)
    hier = mesh_hierarchy(mm.mean.cpu()[ids], tri, tuple(factors))
    for k in hier.kept[:input_level]:
        ids = ids[k]
    nv = hier.num_vertices
    laps = [chebyshev_laplacian(hier.faces[lv], nv[lv]) for lv in range(input_level,
                                                                        len(nv))]
    topo = MeshTopology(ids, laps, hier.down[input_level:], nv[input_level:],
                        hier.faces[input_level].long())
    _TOPOLOGIES[key] = (mm, topo)
    return topo


# topologies built in this process, keyed by the morphable model object and the options
# (the hierarchy itself is cached on disk; this saves the Laplacians' eigenvalues)
_TOPOLOGIES: dict = {}


@functools.lru_cache(maxsize=4)
def _morphable(name: str | None):
    """The morphable model asset ``name`` (None: the default), loaded once per process
    (the network only reads it)."""
    from facegeo.morphable import MorphableModel

    return MorphableModel.load(name) if name else MorphableModel.load()


def fits_from_batch(batch: dict, prefix: str, id_coeffs: torch.Tensor | None = None
                    ) -> FaceFit:
    """A :class:`~facegeo.reenact.FaceFit` from a training batch's fit arrays
    (``<prefix>_rotation`` (B, 3, 3), ``_scale`` (B,), ``_translation`` (B, 2),
    ``_exp_coeffs`` (B, K_exp)) with ``id_coeffs`` (default ``batch["id_coeffs"]``, the
    clip's identity, (B, K_id)). A (B, n_src, ...) source takes its first frame."""
    need = [f"{prefix}_{k}" for k in ("rotation", "scale", "translation", "exp_coeffs")]
    missing = [k for k in need + ["id_coeffs"] if k not in batch]
    if missing:
        raise KeyError(f"meshg needs the 3DMM fits in the batch (missing {missing}): train "
                       "on data preprocessed with --fit-3dmm and set data.conditioning: [fits]")
    rot, scale, trans, exp = (batch[k] for k in need)
    if rot.dim() == 4:  # (B, n_src, 3, 3): the first source
        rot, scale, trans, exp = rot[:, 0], scale[:, 0], trans[:, 0], exp[:, 0]
    ident = batch["id_coeffs"] if id_coeffs is None else id_coeffs
    return FaceFit(rot.float(), scale.float(), trans.float(), ident.float(), exp.float())


def _rescale_fit(fit: FaceFit, k: float) -> FaceFit:
    """``fit`` in the pixels of a crop ``k`` times larger (pixel centres:
    ``u -> (u + 0.5) k - 0.5``)."""
    if k == 1:
        return fit
    return replace(fit, scale=fit.scale * k, translation=(fit.translation + 0.5) * k - 0.5)


# ---------------------------------------------------------------------- mesh regression
class MeshRegression(nn.Module):
    """Mesh regression module (section 3.1) on facegeo's fits: the stacked mesh V*.

    The source mesh is the source's identity, expression and pose; the driving mesh is the
    *source* identity with the driving expression and pose (the caller builds that fit with
    :meth:`facegeo.reenact.FaceConditioner.target_fits`, absolute or relative): the
    driver's identity never reaches the motion net. Both are posed in image space (weak
    perspective, :func:`facegeo.reenact.posed_vertices`) and normalized by the crop size:
    ``x, y`` in ``grid_sample`` coordinates, ``z * 2 / S``.

    Args:
        mean: (V, 3); id_basis: (K_id, V, 3); exp_basis: (K_exp, V, 3), at the vertices
            of the motion net's input level (non-persistent buffers: they come from the
            morphable-model asset, not from the checkpoint).

    forward(source_fit (B rows), target_fit (B rows), size) -> V* (B, V, 6).
    """

    def __init__(self, mean: torch.Tensor, id_basis: torch.Tensor, exp_basis: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.float().contiguous(), persistent=False)
        self.register_buffer("id_basis", id_basis.float().contiguous(), persistent=False)
        self.register_buffer("exp_basis", exp_basis.float().contiguous(), persistent=False)

    @property
    def num_id(self) -> int:
        return self.id_basis.shape[0]

    @property
    def num_exp(self) -> int:
        return self.exp_basis.shape[0]

    def vertices(self, fit: FaceFit, size: int) -> torch.Tensor:
        """(B, V, 3) posed, normalized vertices of ``fit`` (crop pixels of a ``size`` crop)."""
        from facegeo.morphable import linear_shape

        if fit.id_coeffs.shape[-1] != self.num_id or fit.exp_coeffs.shape[-1] != self.num_exp:
            raise ValueError(
                f"the fits have {fit.id_coeffs.shape[-1]} identity / "
                f"{fit.exp_coeffs.shape[-1]} expression coefficients, the model's 3DMM "
                f"{self.num_id} / {self.num_exp}: fit with the same morphable model")
        dev = self.mean.device
        f = fit.to(dev)
        v = linear_shape(self.mean, self.id_basis, self.exp_basis, f.id_coeffs.float(),
                         f.exp_coeffs.float())
        p = posed_vertices(v, f.rotation.float(), f.scale.float(), f.translation.float())
        xy = pixel_to_normalized(p[..., :2], (size, size))
        return torch.cat([xy, p[..., 2:] * (2.0 / size)], -1)

    def forward(self, source_fit: FaceFit, target_fit: FaceFit, size: int) -> torch.Tensor:
        if len(source_fit) != len(target_fit):
            raise ValueError(f"source and target fits must have the same rows, got "
                             f"{len(source_fit)} and {len(target_fit)}")
        return torch.cat([self.vertices(source_fit, size), self.vertices(target_fit, size)],
                         -1)


# ------------------------------------------------------------------------- motion net
class MeshMotionEncoder(nn.Module):
    """The GCN encoder of the motion net (section 3.2): a spectral residual block
    (:class:`facegeo.graphconv.GraphResBlock`: ChebConv K -> instance norm -> ReLU ->
    graph linear, graph-linear skip) per level, each followed by CoMA's quadric
    down-sampling ``D`` (:class:`facegeo.graphconv.SparsePool`), then a linear layer of the
    flattened coarsest features to the latent motion vector.

    Args:
        laplacians: len(channels) sparse scaled Laplacians, one per level.
        downs: len(channels) sparse (V_{l+1}, V_l) down-sampling matrices.
        in_channels: 6 (source and driving xyz).
        channels: widths of the residual blocks.
        latent_dim: D_z.
        K: Chebyshev order (3 in the paper).

    forward(x (B, V_0, in_channels)) -> (B, latent_dim).
    """

    def __init__(self, laplacians, downs, in_channels: int = 6, channels=(32, 64, 128, 256),
                 latent_dim: int = 256, K: int = 3):
        super().__init__()
        channels = [int(c) for c in channels]
        if len(laplacians) < len(channels) or len(downs) < len(channels):
            raise ValueError(f"{len(channels)} blocks need as many mesh levels, the topology "
                             f"has {min(len(laplacians), len(downs))}")
        cins = [in_channels] + channels[:-1]
        self.blocks = nn.ModuleList(GraphResBlock(a, b, laplacians[i], K=K)
                                    for i, (a, b) in enumerate(zip(cins, channels)))
        self.pools = nn.ModuleList(SparsePool(downs[i]) for i in range(len(channels)))
        self.in_vertices = self.blocks[0].conv.num_vertices
        self.in_channels = in_channels
        self.out_vertices = self.pools[-1].out_vertices
        self.fc = nn.Linear(self.out_vertices * channels[-1], latent_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, V_0, C_in) -> (B, V_n, C_n) coarsest features (before the linear layer)."""
        if x.dim() != 3 or x.shape[1:] != (self.in_vertices, self.in_channels):
            raise ValueError(f"the motion encoder expects (B, {self.in_vertices}, "
                             f"{self.in_channels}) stacked meshes, got {tuple(x.shape)}")
        for block, pool in zip(self.blocks, self.pools):
            x = pool(block(x))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


# ------------------------------------------------------------------------------ model
@register_model("meshg", paper="Yao, Yuan, Shao, Zhou: Mesh Guided One-shot Face "
                "Reenactment using Graph Convolutional Networks (ACM MM 2020)",
                description="3DMM meshes -> GCN motion net -> dense flow -> occlusion-aware "
                "generator (model 2)")
class MeshG(ReenactmentModel):
    """The mesh-guided reenactment model (module docstring).

    Args (the configs in ``configs/*.yaml`` give the values):
        image_size: S (inputs of :meth:`reenact` are resized to it).
        morphable: morphable-model asset (``MorphableModel.load``; None: the default
            ICT-FaceKit); the fits it is driven by must come from the same model.
        regions: model regions forming the mesh (None: every vertex used by a triangle).
        mesh: ``{factors, input_level}``: the CoMA pyramid (:func:`mesh_topology`).
        motion_encoder: kwargs of :class:`MeshMotionEncoder` (channels, latent_dim, K).
        flow_decoder: kwargs of :class:`~facegeo_models.common.flow_decoder.LatentFlowDecoder`
            (channels, base_size, num_res_blocks, max_displacement); its output side h is
            the flow resolution, S / h must be an integer.
        occlusion: kwargs of the occlusion net
            (:class:`~facegeo_models.common.blocks.DenseMotionNetwork`: block_expansion,
            num_blocks, max_features), or ``{enabled: false}`` (the paper's "Baseline":
            the flow is used as it is, no occlusion map).
        generator: kwargs of :class:`~facegeo_models.common.blocks.OcclusionAwareGenerator`.
        norm: normalization of the convolutional parts.
        analytic_flow: beyond the paper (the issue's ablation): start the flow from the
            analytic mesh flow of the two meshes (:func:`facegeo.raster.mesh_flow` at the
            flow resolution, back faces culled, identity where the driving mesh does not
            cover a pixel) and let the motion net predict a correction on top; its
            coverage mask is an extra input channel of the occlusion net. Off in the
            paper's configs.

    forward(batch): ``batch["source"]`` (B, 3, S, S) (or (B, n, 3, S, S): the first),
    ``batch["driving"]`` (B, 3, S, S) in [0, 1] and the fit arrays of the dataset
    (``source_/driving_rotation, _scale, _translation, _exp_coeffs``, ``id_coeffs``; see
    :func:`fits_from_batch`). Returns a dict: ``prediction`` (B, 3, S, S), ``deformed``
    (source warped, (B, 3, S, S)), ``latent`` (B, D_z), ``flow`` (B, h, h, 2) the motion
    net's sampling grid T*, ``deformation`` (B, h, h, 2) the masked flow, ``mask``
    (B, 2, h, h) and ``occlusion`` (B, 1, h, h) (with the occlusion net).
    """

    requires = frozenset({"morphable_fit", "image"})
    modes = MODES   # ("relative", "absolute"): the pose composition of target_fits

    def __init__(self, image_size: int = 256, morphable: str | None = None,
                 regions: list[str] | None = None, mesh: dict | None = None,
                 motion_encoder: dict | None = None, flow_decoder: dict | None = None,
                 occlusion: dict | None = None, generator: dict | None = None,
                 norm: str = "batch", analytic_flow: bool = False):
        super().__init__()
        self._init_kwargs = copy.deepcopy(dict(
            image_size=image_size, morphable=morphable, regions=regions, mesh=mesh,
            motion_encoder=motion_encoder, flow_decoder=flow_decoder, occlusion=occlusion,
            generator=generator, norm=norm, analytic_flow=analytic_flow))
        self.image_size = int(image_size)
        self.morphable_name = morphable
        mm = _morphable(morphable)
        self._mm = mm
        mesh = dict(mesh or {})
        topo = mesh_topology(mm, regions, tuple(mesh.pop("factors", (4, 4, 4, 4))),
                             int(mesh.pop("input_level", 0)))
        if mesh:
            raise ValueError(f"unknown mesh options {sorted(mesh)}")
        self.topology = topo
        ids = topo.vertex_ids
        self.mesh = MeshRegression(mm.mean[ids], mm.id_basis[:, ids], mm.exp_basis[:, ids])
        enc = dict(motion_encoder or {})
        channels = enc.pop("channels", (32, 64, 128, 256))
        self.motion_encoder = MeshMotionEncoder(topo.laplacians, topo.downs, 6, channels,
                                                **enc)
        latent = self.motion_encoder.fc.out_features
        self.flow_decoder = LatentFlowDecoder(latent, norm=norm, **(flow_decoder or {}))
        h = self.flow_decoder.out_size
        if self.image_size % h:
            raise ValueError(f"image_size {self.image_size} must be a multiple of the flow "
                             f"size {h} (flow_decoder base_size * 2**(len(channels) - 1))")
        self.flow_size = h
        self.flow_down = AntiAliasInterpolation2d(3, h / self.image_size)
        occ = dict(occlusion or {})
        self.use_occlusion = bool(occ.pop("enabled", True))
        self.analytic_flow = bool(analytic_flow)
        self.occlusion_net = (DenseMotionNetwork(int(self.analytic_flow), num_motions=1,
                                                 norm=norm, **occ)
                              if self.use_occlusion else None)
        self.generator = OcclusionAwareGenerator(3, norm=norm, **(generator or {}))
        self._conditioner = None

    def __deepcopy__(self, memo):
        """A copy (the trainer's EMA): the sparse graph operators cannot be deep-copied, so
        the copy is rebuilt from the constructor arguments (mesh pyramid from the caches)
        and gets this model's state dict, device, dtype, mode and requires_grad flags."""
        new = type(self)(**copy.deepcopy(self._init_kwargs))
        new.load_state_dict(self.state_dict())
        p = next(self.parameters())
        new.to(device=p.device, dtype=p.dtype)
        for a, b in zip(new.parameters(), self.parameters()):
            a.requires_grad_(b.requires_grad)
        new.train(self.training)
        memo[id(self)] = new
        return new

    # ----------------------------------------------------------------- pieces
    @property
    def num_id(self) -> int:
        """K_id of the morphable model (identity coefficients)."""
        return self.mesh.num_id

    @property
    def num_exp(self) -> int:
        """K_exp of the morphable model (expression coefficients)."""
        return self.mesh.num_exp

    def motion_input(self, source_fit: FaceFit, target_fit: FaceFit, size: int
                     ) -> torch.Tensor:
        """V* (B, V, 6) for fits in the pixels of a ``size`` crop (see
        :class:`MeshRegression`)."""
        return self.mesh(source_fit, target_fit, size)

    def motion(self, stacked: torch.Tensor) -> dict[str, torch.Tensor]:
        """Motion net: V* (B, V, 6) -> ``latent`` (B, D_z) and ``flow`` (B, h, h, 2), the
        backward sampling grid T* (normalized); with ``analytic_flow`` T* is the analytic
        mesh flow plus the learned displacement, and ``analytic`` (B, h, h, 2) /
        ``coverage`` (B, 1, h, h) are returned too."""
        z = self.motion_encoder(stacked)
        if not self.analytic_flow:
            return {"latent": z, "flow": self.flow_decoder.grid(z)}
        ana, cov = self.analytic_mesh_flow(stacked)
        disp = self.flow_decoder(z).permute(0, 2, 3, 1)
        return {"latent": z, "flow": ana.to(disp.dtype) + disp, "analytic": ana,
                "coverage": cov}

    @torch.no_grad()
    def analytic_mesh_flow(self, stacked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training-free backward flow of the two meshes at the flow resolution h:
        V* (B, V, 6) -> (grid (B, h, h, 2) normalized source position of each pixel of the
        driving mesh, identity elsewhere; coverage (B, 1, h, h) float, 1 where the driving
        mesh covers the pixel and the transferred point lies in the source image)."""
        from facegeo.raster import mesh_flow

        h = self.flow_size
        v = stacked.detach().float()

        def pixels(x):   # normalized image space -> flow-resolution pixels
            return torch.cat([((x[..., :2] + 1) * h - 1) / 2, x[..., 2:] * (h / 2)], -1)

        faces = self.topology.faces.to(v.device)
        res = mesh_flow(pixels(v[..., :3]), pixels(v[..., 3:]), faces, h, h,
                        cull_backfaces=True)
        grid = pixel_to_normalized(res.src_xy, (h, h))
        return grid, res.valid[:, None].float()

    def generate(self, source: torch.Tensor, source_fit: FaceFit, target_fit: FaceFit,
                 size: int | None = None) -> dict[str, torch.Tensor]:
        """The generator of Fig. 2 for source images (B, 3, S, S) and fits in the pixels of
        a ``size`` crop (default S). Returns the dict of :meth:`forward`."""
        check_images(source, "source")
        stacked = self.motion_input(source_fit, target_fit, size or source.shape[-1])
        out = self.motion(stacked.to(source.dtype))
        flow = out["flow"]
        if self.occlusion_net is not None:
            small = self.flow_down(source)
            b, _, h, w = small.shape
            feat = (out["coverage"].to(small.dtype) if self.analytic_flow
                    else small.new_zeros(b, 0, h, w))
            dm = self.occlusion_net(small, flow, feat)
            out.update(deformation=dm["deformation"], mask=dm["mask"],
                       occlusion=dm["occlusion"])
        else:
            out["deformation"] = flow
        gen = self.generator(source, out["deformation"], out.get("occlusion"))
        out.update(prediction=gen["prediction"], deformed=gen["deformed"])
        return out

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        src, _ = batch_images(batch)
        ident = batch.get("id_coeffs")
        src_fit = fits_from_batch(batch, "source")
        # the driving mesh: the *source* identity with the driving expression and pose
        tgt_fit = fits_from_batch(batch, "driving", id_coeffs=src_fit.id_coeffs
                                  if ident is None else ident)
        return self.generate(src, src_fit, tgt_fit, src.shape[-1])

    def training_task(self, config: dict):
        """:class:`~facegeo_models.meshg.losses.MeshGTask`: the default task plus the
        coefficient loss of eq. (6) with its regressor critic."""
        from .losses import MeshGTask

        return MeshGTask(config)

    # ----------------------------------------------------------------- inference
    @property
    def conditioner(self):
        """A :class:`facegeo.reenact.FaceConditioner` on the model's 3DMM (its
        ``target_fits`` combines source identity with driving expression and pose)."""
        if self._conditioner is None:
            from facegeo.reenact import FaceConditioner

            self._conditioner = FaceConditioner(self._mm, size=max(32, self.image_size))
        return self._conditioner

    def target_fit(self, source_fit: FaceFit, driving: Conditioning, mode: str) -> FaceFit:
        """The driving mesh's fit (B rows): the source identity with the driving
        expression and pose, absolute or relative to ``driving.reference``."""
        dfit = driving.get("morphable_fit")
        ref = None
        if mode == "relative":
            if driving.reference is None or driving.reference.morphable_fit is None:
                raise ValueError("relative mode needs driving.reference with its "
                                 "morphable_fit (the first driving frame)")
            ref = driving.reference.morphable_fit.to(dfit.rotation.device)
        return self.conditioner.target_fits(source_fit, dfit, mode, reference=ref)

    @torch.no_grad()
    def encode_source(self, sources) -> dict:
        """``{"conditioning": the source Conditioning (image resized to S), "fit_size":
        the crop side its fit refers to}``; needs the source's ``morphable_fit``."""
        sources = self._as_conditioning(sources, "sources")
        fit_size = int(sources.get("image").shape[-1])
        sources.get("morphable_fit")   # a clear error when the pipeline did not fit it
        return {"conditioning": super().encode_source(sources), "fit_size": fit_size}

    def reenact(self, sources, driving, *, mode: str | None = None, **kw) -> torch.Tensor:
        """See :meth:`ReenactmentModel.reenact`; the conditionings must carry
        ``morphable_fit`` (fits in the pixels of their crops)."""
        drv = self._as_conditioning(driving, "driving")
        if drv.image is not None:
            kw.setdefault("fit_size", int(drv.image.shape[-1]))
        return super().reenact(sources, drv, mode=mode, **kw)

    def _reenact(self, sources, driving, *, mode: str, fit_size: int | None = None,
                 return_all: bool = False):
        """Animate the source with B driving fits. Returns (B, 3, S, S) (or the output dict
        with ``return_all``)."""
        cond, src_size = sources["conditioning"], sources["fit_size"]
        drv_size = fit_size or src_size
        b = len(driving.get("morphable_fit"))
        src_fit = cond.get("morphable_fit").index(0).to(self.device)
        k = src_size / drv_size   # driving fits -> the source crop's pixels
        drv = replace(driving, morphable_fit=_rescale_fit(driving.morphable_fit, k).to(
            self.device))
        if drv.reference is not None and drv.reference.morphable_fit is not None:
            drv = replace(drv, reference=replace(drv.reference, morphable_fit=_rescale_fit(
                drv.reference.morphable_fit, k)))
        tgt = self.target_fit(src_fit, drv, mode)
        src = cond.image[:1].expand(b, -1, -1, -1)
        out = self.generate(src, src_fit.expand(b), tgt, src_size)
        return out if return_all else out["prediction"]
