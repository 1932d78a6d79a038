"""LD-Net: landmark disentanglement network (LD-Net / FD-GAN paper, section 3.1 + appendix).

Networks (all MLPs on flattened normalised landmarks, 68 x 2 = 136 inputs):

* ``E_P``: landmarks -> pose/expression code (64);
* ``E_I``: landmarks -> identity code (128) (Stage 2);
* ``N_I``: one linear layer, one-hot identity label -> identity code (Stage 1 only);
* ``G``:   [pose code, identity code] (192) -> landmarks (136);
* ``C``:   landmarks -> identity logits (adversarial classifier; one for each stage);
* ``D``:   landmarks -> scalar (least-squares GAN discriminator, Stage 2).

Each MLP has ``n_hidden`` = 10 hidden layers of ``hidden`` = 512 features (paper appendix).
The paper does not name the activation or the initialisation; we use LeakyReLU(0.2) after every
hidden layer, a linear output, and He-normal weights with zero biases.

Losses (``l`` normalised landmarks, per-point squared Euclidean distances averaged over the 68
points, codes' squared norms summed over the code, all averaged over the batch):

Stage 1 (Adam, lr 1e-4, batch 32), ``l = l_S2`` of identity ``S1``, ``T`` another identity::

    l'_S1 = G(E_P(l), N_I(S1)),  l'_T = G(E_P(l), N_I(T))
    L_C = -log P_C(S1 | l'_T)                                             (1)
    L_G = 1000 |l - l'_S1|^2 + 0.1 log P_C(S1 | l'_T)                     (2)

``log P`` in (2) is clamped below at log(1e-6) (it is unbounded; the clamp only removes the
gradient once the classifier is fooled that much).

Stage 2 (Adam, lr 5e-5, batch 32; ``E_P`` frozen from Stage 1, ``G`` continues from Stage 1, new
``E_I``, ``C``, ``D``), ``l_S1, l_S2`` of one identity, ``l_T`` of identity ``k`` != it::

    l'_S2 = G(E_P(l_S2), E_I(l_S1)),  l'_T = G(E_P(l_S2), E_I(l_T))
    L_D = (D(l_S2) - 1)^2 + (D(l'_T) + 1)^2                               (3)
    L_C = -log P_C(k | l_T) - log(1 - P_C(k | l'_T))                      (4)
    L_G = 1000 |l_S2 - l'_S2|^2 + 0.01 |E_P(l_S2) - E_P(l'_T)|^2
          + 0.1 D(l'_T)^2 + 0.1 (-log P_C(k | l'_T))                      (5)-(7)

Inference: ``LDNet(target, driving) = G(E_P(driving), E_I(target))`` on normalised landmarks.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LDNetConfig",
    "MLP",
    "LDNet",
    "LDNetTrainer",
    "save_inference_weights",
    "load_inference_weights",
]


@dataclass
class LDNetConfig:
    """Sizes, loss weights and optimisation settings (defaults = the paper)."""

    n_points: int = 68
    hidden: int = 512
    n_hidden: int = 10
    pose_dim: int = 64
    id_dim: int = 128
    n_identities: int = 1000
    leaky_slope: float = 0.2
    lambda_rec: float = 1000.0
    lambda_c1: float = 0.1
    lambda_cont: float = 0.01
    lambda_d: float = 0.1
    lambda_c2: float = 0.1
    lr1: float = 1e-4
    lr2: float = 5e-5
    betas: tuple[float, float] = (0.9, 0.999)
    batch: int = 32
    iters1: int = 400_000
    iters2: int = 1_000_000
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LDNetConfig:
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown LDNetConfig fields: {sorted(unknown)}")
        return cls(**d)


class MLP(nn.Sequential):
    """``n_hidden`` hidden layers of ``hidden`` features, LeakyReLU, linear output.

    (B, d_in) -> (B, d_out)."""

    def __init__(self, d_in: int, d_out: int, hidden: int = 512, n_hidden: int = 10,
                 slope: float = 0.2):
        if n_hidden < 1:
            raise ValueError(f"n_hidden must be >= 1, got {n_hidden}")
        layers: list[nn.Module] = []
        d = d_in
        for _ in range(n_hidden):
            layers += [nn.Linear(d, hidden), nn.LeakyReLU(slope)]
            d = hidden
        layers.append(nn.Linear(d, d_out))
        super().__init__(*layers)
        # He-normal initialisation (fan-in, LeakyReLU gain) and zero biases; the output layer
        # gets gain 1. PyTorch's default init shrinks the signal through 10 layers and stalls
        # training (measured: Stage-1 reconstruction plateaus at 0.18 instead of 0.014 after
        # 150 iterations).
        lin = [m for m in self if isinstance(m, nn.Linear)]
        for m in lin[:-1]:
            nn.init.kaiming_normal_(m.weight, a=slope, nonlinearity="leaky_relu")
            nn.init.zeros_(m.bias)
        nn.init.kaiming_normal_(lin[-1].weight, nonlinearity="linear")
        nn.init.zeros_(lin[-1].bias)


def _flat(lm: torch.Tensor, n_points: int) -> torch.Tensor:
    if lm.ndim != 3 or lm.shape[1:] != (n_points, 2):
        raise ValueError(f"landmarks must have shape (B, {n_points}, 2), got {tuple(lm.shape)}")
    return lm.reshape(lm.shape[0], -1)


class LDNet(nn.Module):
    """The inference part of LD-Net: ``E_P``, ``E_I`` and ``G`` (normalised landmarks).

    ``forward(target (B, 68, 2), driving (B, 68, 2)) -> (B, 68, 2)``: the identity of ``target``
    with the pose and expression of ``driving``. Inputs and output are normalised landmarks
    (:func:`facegeo.disentangle.normalize_landmarks`)."""

    def __init__(self, config: LDNetConfig | None = None):
        super().__init__()
        c = config or LDNetConfig()
        self.config = c
        d = 2 * c.n_points
        self.E_P = MLP(d, c.pose_dim, c.hidden, c.n_hidden, c.leaky_slope)
        self.E_I = MLP(d, c.id_dim, c.hidden, c.n_hidden, c.leaky_slope)
        self.G = MLP(c.pose_dim + c.id_dim, d, c.hidden, c.n_hidden, c.leaky_slope)

    def pose_code(self, lm: torch.Tensor) -> torch.Tensor:
        """(B, 68, 2) -> (B, pose_dim)."""
        return self.E_P(_flat(lm, self.config.n_points))

    def id_code(self, lm: torch.Tensor) -> torch.Tensor:
        """(B, 68, 2) -> (B, id_dim)."""
        return self.E_I(_flat(lm, self.config.n_points))

    def generate(self, pose_code: torch.Tensor, id_code: torch.Tensor) -> torch.Tensor:
        """(B, pose_dim), (B, id_dim) -> (B, 68, 2)."""
        out = self.G(torch.cat([pose_code, id_code], dim=-1))
        return out.reshape(out.shape[0], self.config.n_points, 2)

    def forward(self, target: torch.Tensor, driving: torch.Tensor) -> torch.Tensor:
        if target.shape != driving.shape:
            raise ValueError(f"target {tuple(target.shape)} and driving {tuple(driving.shape)} "
                             "must have the same shape")
        return self.generate(self.pose_code(driving), self.id_code(target))


def _point_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over batch and points of the squared Euclidean distance, (B, N, 2) inputs."""
    return ((a - b) ** 2).sum(-1).mean()


_LOG_EPS = math.log(1e-6)


class LDNetTrainer:
    """Two-stage LD-Net training (see the module docstring for the losses).

    Args:
        config: :class:`LDNetConfig` (``n_identities`` must equal the data's identities).
        device: training device.
        seed: seed of the network initialisation.
    """

    def __init__(self, config: LDNetConfig, device: str | torch.device = "cpu", seed: int = 0):
        torch.manual_seed(seed)
        c = config
        self.config = c
        self.device = torch.device(device)
        d = 2 * c.n_points
        self.net = LDNet(c).to(self.device)
        self.N_I = nn.Linear(c.n_identities, c.id_dim).to(self.device)
        # N_I's initialisation is not given by the paper. Default ("linear"): nn.Linear's own
        # (entries ~U(+-1/sqrt(K)), |w| <= 0.045 for K = 500; the first shipped weights). Option
        # ``extra={"ni_init": "normal"}``: the embedding convention (nn.Embedding: N(0, 1)
        # entries, zero bias), identity codes as large as E_P's codes; the shipped weights since
        # the retraining use it (docs/disentangle.md, "Why E_I collapsed": with the default
        # init Stage-1 G reads identity from E_P; its contribution vs the longer training of
        # the shipped run is not separated).
        ni_init = c.extra.get("ni_init", "linear")
        if ni_init == "normal":
            nn.init.normal_(self.N_I.weight, 0.0, 1.0)
            nn.init.zeros_(self.N_I.bias)
        elif ni_init != "linear":
            raise ValueError(f"extra['ni_init'] must be 'linear' or 'normal', got {ni_init!r}")
        self.C1 = MLP(d, c.n_identities, c.hidden, c.n_hidden, c.leaky_slope).to(self.device)
        self.C2 = MLP(d, c.n_identities, c.hidden, c.n_hidden, c.leaky_slope).to(self.device)
        self.D = MLP(d, 1, c.hidden, c.n_hidden, c.leaky_slope).to(self.device)
        b = c.betas
        self.opt_g1 = torch.optim.Adam(
            [*self.net.E_P.parameters(), *self.net.G.parameters(), *self.N_I.parameters()],
            lr=c.lr1, betas=b)
        self.opt_c1 = torch.optim.Adam(self.C1.parameters(), lr=c.lr1, betas=b)
        self.opt_g2 = torch.optim.Adam(
            [*self.net.E_I.parameters(), *self.net.G.parameters()], lr=c.lr2, betas=b)
        self.opt_c2 = torch.optim.Adam(self.C2.parameters(), lr=c.lr2, betas=b)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=c.lr2, betas=b)
        self.iter1 = 0
        self.iter2 = 0
        self.history: list[dict] = []

    # ------------------------------------------------------------------ helpers
    def _onehot(self, k: torch.Tensor) -> torch.Tensor:
        return F.one_hot(k, self.config.n_identities).to(torch.float32)

    def _flat(self, lm):
        return _flat(lm, self.config.n_points)

    # ------------------------------------------------------------------ stage 1
    def stage1_step(self, l: torch.Tensor, k: torch.Tensor, k_t: torch.Tensor) -> dict:
        """One Stage-1 iteration. l (B, 68, 2) normalised landmarks of identities k (B,);
        k_t (B,) other identities. Returns the losses as floats."""
        c, net = self.config, self.net
        net.train()
        lf = self._flat(l)
        pose = net.E_P(lf)
        rec = net.generate(pose, self.N_I(self._onehot(k)))
        fake_t = net.generate(pose, self.N_I(self._onehot(k_t)))
        # classifier C: classify l'_T as the pose-source identity S1 = k
        loss_c = F.cross_entropy(self.C1(self._flat(fake_t.detach())), k)
        self.opt_c1.zero_grad(set_to_none=True)
        loss_c.backward()
        self.opt_c1.step()
        # E_P, G, N_I: reconstruction minus the classifier's success
        logp = F.log_softmax(self.C1(self._flat(fake_t)), dim=-1).gather(1, k[:, None])
        loss_rec = _point_sq(rec, l)
        loss_adv = logp.clamp(min=_LOG_EPS).mean()
        loss_g = c.lambda_rec * loss_rec + c.lambda_c1 * loss_adv
        self.opt_g1.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g1.step()
        self.iter1 += 1
        return {"stage": 1, "iter": self.iter1, "rec": loss_rec.item(), "C": loss_c.item(),
                "logP_S1": loss_adv.item(), "G": loss_g.item()}

    # ------------------------------------------------------------------ stage 2
    def stage2_step(self, l_s1: torch.Tensor, l_s2: torch.Tensor, l_t: torch.Tensor,
                    k_t: torch.Tensor) -> dict:
        """One Stage-2 iteration. l_s1, l_s2 (B, 68, 2) two faces of one identity, l_t (B, 68, 2)
        faces of identities k_t (B,) (different). Returns the losses as floats."""
        c, net = self.config, self.net
        net.train()
        for p in net.E_P.parameters():
            p.requires_grad_(False)
        f_s1, f_s2, f_t = self._flat(l_s1), self._flat(l_s2), self._flat(l_t)
        with torch.no_grad():
            pose = net.E_P(f_s2)
        rec = net.generate(pose, net.E_I(f_s1))
        fake_t = net.generate(pose, net.E_I(f_t))
        ff = self._flat(fake_t)
        # discriminator (LSGAN, a = -1, b = 1)
        loss_d = ((self.D(f_s2) - 1) ** 2).mean() + ((self.D(ff.detach()) + 1) ** 2).mean()
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        # classifier: real l_T -> k, generated l'_T -> not k
        z_fake = self.C2(ff.detach())
        loss_c = F.cross_entropy(self.C2(f_t), k_t) + _neg_log_not(z_fake, k_t).mean()
        self.opt_c2.zero_grad(set_to_none=True)
        loss_c.backward()
        self.opt_c2.step()
        # E_I, G
        loss_rec = _point_sq(rec, l_s2)
        loss_cont = ((pose - net.E_P(ff)) ** 2).sum(-1).mean()
        loss_adv_d = (self.D(ff) ** 2).mean()
        loss_adv_c = F.cross_entropy(self.C2(ff), k_t)
        loss_g = (c.lambda_rec * loss_rec + c.lambda_cont * loss_cont + c.lambda_d * loss_adv_d
                  + c.lambda_c2 * loss_adv_c)
        self.opt_g2.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g2.step()
        self.iter2 += 1
        return {"stage": 2, "iter": self.iter2, "rec": loss_rec.item(), "cont": loss_cont.item(),
                "D": loss_d.item(), "C": loss_c.item(), "adv_D": loss_adv_d.item(),
                "adv_C": loss_adv_c.item(), "G": loss_g.item()}

    # ------------------------------------------------------------------ loops
    def train(self, synth, *, iters1: int | None = None, iters2: int | None = None,
              time_limit_s: float | None = None, stage1_fraction: float = 0.3,
              checkpoint: str | Path | None = None, weights_out: str | Path | None = None,
              checkpoint_every_s: float = 120.0, log_every: int = 100, log=print,
              metadata: dict | None = None) -> list[dict]:
        """Run Stage 1 then Stage 2 on a :class:`~facegeo.disentangle.LandmarkSynth`.

        Args:
            synth: data generator (its ``n_identities`` must equal ``config.n_identities``).
            iters1, iters2: iteration budgets (default: the config's, i.e. the paper's).
            time_limit_s: optional wall-clock budget for both stages; Stage 1 gets
                ``stage1_fraction`` of it, Stage 2 the rest (a stage ends at whichever limit
                comes first).
            checkpoint: path of a resumable training checkpoint (written every
                ``checkpoint_every_s`` and at the end; loaded first if it exists).
            weights_out: inference weights (fp16 safetensors) written with each checkpoint.
        Returns:
            the logged loss history (one averaged dict per ``log_every`` iterations).
        """
        c = self.config
        if synth.n_identities != c.n_identities:
            raise ValueError(f"data has {synth.n_identities} identities but the config says "
                             f"{c.n_identities}")
        it1 = c.iters1 if iters1 is None else int(iters1)
        it2 = c.iters2 if iters2 is None else int(iters2)
        if checkpoint is not None and Path(checkpoint).exists():
            self.load_checkpoint(checkpoint)
            log(f"resumed from {checkpoint}: stage1 {self.iter1}, stage2 {self.iter2}")
        t0 = time.time()
        spent = sum(h.get("elapsed_s", 0.0) for h in self.history[-1:])
        budget1 = budget2 = math.inf
        if time_limit_s is not None:
            budget1 = time_limit_s * stage1_fraction
            budget2 = time_limit_s
        last_ck = time.time()

        def save():
            if checkpoint is not None:
                self.save_checkpoint(checkpoint)
            if weights_out is not None:
                meta = dict(metadata or {})
                meta.update(iter1=self.iter1, iter2=self.iter2)
                save_inference_weights(self.net, weights_out, meta)

        acc: dict[str, float] = {}
        n_acc = 0

        def record(d):
            nonlocal acc, n_acc
            for kk, v in d.items():
                if kk not in ("stage", "iter"):
                    acc[kk] = acc.get(kk, 0.0) + v
            n_acc += 1
            if n_acc >= log_every:
                row = {kk: v / n_acc for kk, v in acc.items()}
                row.update(stage=d["stage"], iter=d["iter"],
                           elapsed_s=spent + time.time() - t0)
                self.history.append(row)
                log(json.dumps({kk: (round(v, 5) if isinstance(v, float) else v)
                                for kk, v in row.items()}))
                acc, n_acc = {}, 0

        B = c.batch
        # Stage 1 never resumes once Stage 2 has started (E_P is frozen from then on)
        while self.iter2 == 0 and self.iter1 < it1 and (spent + time.time() - t0) < budget1:
            s2, _, t = synth.triplets(B)
            record(self.stage1_step(s2.landmarks, s2.id_label, t.id_label))
            if time.time() - last_ck > checkpoint_every_s:
                save()
                last_ck = time.time()
        acc, n_acc = {}, 0
        while self.iter2 < it2 and (spent + time.time() - t0) < budget2:
            s1, s2, t = synth.triplets(B)
            record(self.stage2_step(s1.landmarks, s2.landmarks, t.landmarks, t.id_label))
            if time.time() - last_ck > checkpoint_every_s:
                save()
                last_ck = time.time()
        save()
        return self.history

    # ------------------------------------------------------------------ checkpoints
    def _modules(self):
        return {"net": self.net, "N_I": self.N_I, "C1": self.C1, "C2": self.C2, "D": self.D}

    def _opts(self):
        return {"opt_g1": self.opt_g1, "opt_c1": self.opt_c1, "opt_g2": self.opt_g2,
                "opt_c2": self.opt_c2, "opt_d": self.opt_d}

    def save_checkpoint(self, path: str | Path) -> Path:
        """Full training state (all networks, optimisers, counters, history), atomic write."""
        from facegeo.assets import atomic_write

        state = {k: m.state_dict() for k, m in self._modules().items()}
        state.update({k: o.state_dict() for k, o in self._opts().items()})
        state["counters"] = {"iter1": self.iter1, "iter2": self.iter2}
        state["history"] = json.dumps(self.history)
        state["config"] = json.dumps(self.config.to_dict())
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self, path: str | Path) -> None:
        """Load a state written by :meth:`save_checkpoint` (``weights_only=True``)."""
        state = torch.load(path, map_location=self.device, weights_only=True)
        cfg = LDNetConfig.from_dict(json.loads(state["config"]))
        for name in ("hidden", "n_hidden", "pose_dim", "id_dim", "n_identities", "n_points"):
            if getattr(cfg, name) != getattr(self.config, name):
                raise ValueError(f"checkpoint {path} has {name}={getattr(cfg, name)}, trainer "
                                 f"has {getattr(self.config, name)}")
        for k, m in self._modules().items():
            m.load_state_dict(state[k])
        for k, o in self._opts().items():
            o.load_state_dict(state[k])
        self.iter1 = int(state["counters"]["iter1"])
        self.iter2 = int(state["counters"]["iter2"])
        self.history = json.loads(state["history"])


def _neg_log_not(logits: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """-log(1 - softmax(logits)[k]) computed stably: (B, K), (B,) -> (B,)."""
    masked = logits.scatter(1, k[:, None], float("-inf"))
    return torch.logsumexp(logits, dim=1) - torch.logsumexp(masked, dim=1)


def save_inference_weights(net: LDNet, path: str | Path, metadata: dict | None = None) -> Path:
    """Write ``E_P``, ``E_I``, ``G`` as fp16 safetensors (atomic); the config and ``metadata``
    go into the safetensors header as JSON strings."""
    from safetensors.torch import save_file

    from facegeo.assets import atomic_write

    tensors = {k: v.detach().to("cpu", torch.float16).contiguous()
               for k, v in net.state_dict().items()}
    meta = {"format": "facegeo.ldnet", "config": json.dumps(net.config.to_dict()),
            "metadata": json.dumps(metadata or {})}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_inference_weights(path: str | Path, device: str | torch.device = "cpu",
                           dtype: torch.dtype = torch.float32) -> LDNet:
    """Load an :class:`LDNet` written by :func:`save_inference_weights` (eval mode, no grad)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"LD-Net weights not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != "facegeo.ldnet":
                raise ValueError(f"{path} is not a facegeo LD-Net weight file")
            state = {k: f.get_tensor(k) for k in f.keys()}
        config = LDNetConfig.from_dict(json.loads(meta["config"]))
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: corrupt or truncated LD-Net weights file (.safetensors) "
                         f"({type(e).__name__}: {e}); replace it with an intact copy") from e
    net = LDNet(config)
    net.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    net.metadata = json.loads(meta.get("metadata", "{}"))
    net = net.to(device=device, dtype=dtype).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
