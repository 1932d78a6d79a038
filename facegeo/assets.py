"""Asset resolver: where third-party data (3DMMs, network weights) comes from at run time.

Third-party assets are never part of the repository. A named asset is looked for, in order:

1. an explicit path given by the caller (``resolve(name, path=...)``, or a path string in
   place of the name);
2. ``$FACEGEO_ASSETS/<relpath>`` (CI sets ``FACEGEO_ASSETS=../shared/assets``);
3. the user cache ``<cache>/<relpath>`` where ``<cache>`` is ``$FACEGEO_CACHE`` or the
   platform cache directory (``~/.cache/facegeo`` on Linux);
4. the copy shipped with the package, for assets whose licence allows it (``packaged``: a
   path under ``data/``, found with :func:`data_path`; the default 3DMM ``ict_facekit``);
5. a registered public URL, downloaded with a progress bar into the cache, verified by
   sha256 and written atomically (temporary file + rename).

A missing asset raises :class:`AssetNotFoundError`, whose message names the asset, every
place that was looked at, where to obtain the file and its license.

Small files that belong to the project itself (index maps, configs, the project's own
trained weights), and the few third-party files whose licence lets the package ship them,
live in the repository's ``data/`` folder and are found with :func:`data_path`.

Every asset is registered in this module (bottom of the file), so ``resolve`` knows all of
them whatever else has been imported.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "AssetSpec",
    "AssetNotFoundError",
    "AssetChecksumError",
    "register_asset",
    "get_spec",
    "registered_assets",
    "resolve",
    "cache_dir",
    "data_path",
    "sha256_file",
    "atomic_write",
]


class AssetNotFoundError(FileNotFoundError):
    """A named asset could not be found anywhere (message says where it was looked for)."""


class AssetChecksumError(RuntimeError):
    """A file's sha256 does not match the registered checksum."""


@dataclass(frozen=True)
class AssetSpec:
    """Description of a third-party asset.

    Attributes:
        name: short name used in code, e.g. ``"ict_facekit"``.
        relpath: path relative to an assets root (``$FACEGEO_ASSETS`` or the cache).
        description: what the file is.
        license: license / terms of use, shown in the not-found message.
        obtain: human instructions for getting the file (registration page, converter...).
        url: public download URL, or ``None`` when the file cannot be downloaded directly.
        sha256: the full 64-digit hex digest, or exactly the 8-digit hex prefix that a
            torchvision-style file name carries (``vgg19-dcbb9e9d.pth``) where the full
            digest is not known. Required for a download.
        packaged: path under the project's ``data/`` folder (:func:`data_path`) of a copy
            shipped with the package, or ``None``. Only for files whose licence allows it.
    """

    name: str
    relpath: str
    description: str
    license: str
    obtain: str
    url: str | None = None
    sha256: str | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)
    packaged: str | None = None


#: Length of the sha256 prefix that torchvision-style file names carry (``-dcbb9e9d.pth``).
_NAME_PREFIX_LEN = 8


_REGISTRY: dict[str, AssetSpec] = {}


def register_asset(spec: AssetSpec, *, overwrite: bool = False) -> AssetSpec:
    """Add ``spec`` to the registry (also under its aliases). Returns the spec."""
    if spec.url is not None and not spec.sha256:
        raise ValueError(f"asset {spec.name!r}: a download URL needs a sha256")
    if spec.sha256 is not None and (
        len(spec.sha256) not in (64, _NAME_PREFIX_LEN)
        or any(c not in "0123456789abcdef" for c in spec.sha256.lower())
    ):
        raise ValueError(
            f"asset {spec.name!r}: sha256 must be the full 64 hex digits (or exactly the "
            f"{_NAME_PREFIX_LEN}-digit prefix of a torchvision-style file name)"
        )
    for key in (spec.name, *spec.aliases):
        if key in _REGISTRY and not overwrite and _REGISTRY[key] != spec:
            raise ValueError(f"asset name {key!r} is already registered")
        _REGISTRY[key] = spec
    return spec


def get_spec(name: str) -> AssetSpec:
    """Return the registered spec for ``name`` (KeyError listing known names otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted({s.name for s in _REGISTRY.values()}))
        raise KeyError(f"unknown asset {name!r}; registered assets: {known}") from None


def registered_assets() -> list[AssetSpec]:
    """All registered specs, one per asset, sorted by name."""
    return sorted({s.name: s for s in _REGISTRY.values()}.values(), key=lambda s: s.name)


def cache_dir() -> Path:
    """The user cache directory for downloaded assets (``$FACEGEO_CACHE`` overrides).

    ``platformdirs``' user cache directory; where that package is not installed (a bare
    GPU machine with only the numeric stack), the XDG default ``$XDG_CACHE_HOME/facegeo``
    or ``~/.cache/facegeo``."""
    env = os.environ.get("FACEGEO_CACHE")
    if env:
        return Path(env).expanduser()
    try:
        import platformdirs
    except ImportError:
        xdg = os.environ.get("XDG_CACHE_HOME")
        return (Path(xdg) if xdg else Path.home() / ".cache") / "facegeo"
    return Path(platformdirs.user_cache_dir("facegeo"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _checksum_ok(digest: str, expected: str) -> bool:
    """Whether the full hex ``digest`` of a file matches the registered ``expected``.

    ``expected`` must be the whole 64-digit digest; a shortened one (a prefix, an empty
    string) never matches. The only exception is exactly the 8 hex digits of a
    torchvision-style file name, registered where the full digest is not known."""
    digest, expected = digest.lower(), expected.lower()
    if len(digest) != 64:
        return False
    if len(expected) == 64:
        return hmac.compare_digest(digest, expected)
    if len(expected) == _NAME_PREFIX_LEN:
        return hmac.compare_digest(digest[:_NAME_PREFIX_LEN], expected)
    return False


class WriteInterrupted(BaseException):
    """SIGTERM / SIGHUP arrived during :func:`atomic_write` (the temporary file was
    removed). ``signum`` is the signal; a process exiting on it usually returns
    ``128 + signum``. A :class:`BaseException`, like :class:`KeyboardInterrupt`, so that
    ``except Exception`` does not swallow it."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"signal {signal.Signals(self.signum).name}")


_CLEANUP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


def _raise_interrupted(signum, frame):
    raise WriteInterrupted(signum)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write a file atomically: ``write(tmp)`` fills a temporary file in the destination's
    folder, which is then renamed over ``path``. On any error the temporary file is removed
    and ``path`` is left untouched. The destination folder must exist.

    In the main thread, SIGTERM and SIGHUP (unless ignored) raise :class:`WriteInterrupted`
    during the write, so the temporary file is removed as on Ctrl-C; the previous handlers
    are restored afterwards.

    Returns the final path.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {path.parent}")
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in _CLEANUP_SIGNALS:
            old = signal.getsignal(sig)
            if old is not signal.SIG_IGN and old is not None:
                previous[sig] = signal.signal(sig, _raise_interrupted)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix + ".part",
                                   dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            write(tmp_path)
            # mkstemp creates 0600 files; give the result the usual permissions (umask)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
            os.replace(tmp_path, path)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return path


def _download(spec: AssetSpec, dest: Path, timeout: float = 60.0) -> Path:
    from tqdm.auto import tqdm

    assert spec.url is not None and spec.sha256 is not None
    dest.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        h = hashlib.sha256()
        with urllib.request.urlopen(spec.url, timeout=timeout) as r, open(tmp, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {spec.name}") as bar:
                while block := r.read(1 << 20):
                    f.write(block)
                    h.update(block)
                    bar.update(len(block))
        digest = h.hexdigest()
        if not _checksum_ok(digest, spec.sha256):
            raise AssetChecksumError(
                f"asset {spec.name!r} downloaded from {spec.url} has sha256 {digest}, "
                f"expected {spec.sha256}; the file was discarded"
            )

    return atomic_write(dest, write)


def _verified(spec: AssetSpec, candidate: Path, verify: bool) -> Path:
    if verify and spec.sha256 and not _checksum_ok(sha256_file(candidate), spec.sha256):
        raise AssetChecksumError(
            f"asset {spec.name!r} at {candidate} does not match sha256 {spec.sha256}"
        )
    return candidate


def resolve(
    name: str | os.PathLike,
    *,
    path: str | os.PathLike | None = None,
    download: bool = True,
    verify: bool = False,
) -> Path:
    """Find an asset file and return its path.

    Args:
        name: a registered asset name (``"ict_facekit"``), or a path to an existing file.
        path: explicit path; if given it must exist (it is never silently ignored).
        download: allow the last step (download from the registered URL into the cache).
            The order is: ``path``, ``$FACEGEO_ASSETS``, the user cache, the packaged copy
            (``spec.packaged``), the download.
        verify: also check the sha256 of a file found locally (downloads are always checked).

    Raises:
        AssetNotFoundError: nowhere to be found; the message lists the places looked at,
            how to obtain the file and its license.
        AssetChecksumError: a download (or, with ``verify``, a local file) has the wrong hash.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise AssetNotFoundError(f"asset {str(name)!r}: explicit path {p} does not exist")
        return p
    if not isinstance(name, str) or name not in _REGISTRY:
        p = Path(name).expanduser()
        if p.is_file():
            return p
        if isinstance(name, str) and ("/" in name or os.sep in name or "." in Path(name).name):
            raise AssetNotFoundError(f"file {p} does not exist")
        get_spec(str(name))  # raises KeyError with the known names
    spec = _REGISTRY[str(name)]

    looked: list[str] = []
    roots: list[tuple[str, Path]] = []
    env = os.environ.get("FACEGEO_ASSETS")
    if env:
        roots.append(("$FACEGEO_ASSETS", Path(env).expanduser()))
    else:
        looked.append("$FACEGEO_ASSETS (not set)")
    cache = cache_dir()
    roots.append(("user cache", cache))
    for label, root in roots:
        candidate = root / spec.relpath
        if candidate.is_file():
            return _verified(spec, candidate, verify)
        looked.append(f"{label}: {candidate}")
    if spec.packaged is not None:
        try:
            candidate = data_path(spec.packaged)
        except FileNotFoundError:
            looked.append(f"packaged copy: facegeo_data/{spec.packaged} (not installed)")
        else:
            if candidate.is_file():
                return _verified(spec, candidate, verify)
            looked.append(f"packaged copy: {candidate} (not a file)")

    if spec.url is not None and download:
        try:
            return _download(spec, cache / spec.relpath)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            looked.append(f"download from {spec.url} failed: {e}")
    elif spec.url is not None:
        looked.append(f"download from {spec.url} not attempted (download=False)")

    lines = [
        f"asset {spec.name!r} ({spec.description}) was not found.",
        "Looked in:",
        *[f"  - {x}" for x in looked],
        f"How to obtain it: {spec.obtain}",
        f"License / terms: {spec.license}",
        f"Put it at <assets>/{spec.relpath} with <assets> = $FACEGEO_ASSETS or {cache}, "
        "or pass an explicit path.",
    ]
    raise AssetNotFoundError("\n".join(lines))


def data_path(relpath: str) -> Path:
    """Path of a project-owned file in the repository's ``data/`` folder (installed as the
    ``facegeo_data`` package). Raises FileNotFoundError naming the file if it is absent."""
    import importlib.util

    spec = importlib.util.find_spec("facegeo_data")
    bases = []
    if spec is not None and spec.submodule_search_locations:
        bases += [Path(p) for p in spec.submodule_search_locations]
    bases.append(Path(__file__).resolve().parent.parent / "data")
    for base in bases:
        p = base / relpath
        if p.exists():
            return p
    raise FileNotFoundError(f"project data file {relpath!r} not found under {bases[0]}")


# --------------------------------------------------------------------------- registry
_BFM_TERMS = (
    "University of Basel BFM license: academic, non-commercial use only, after registration"
)
_GH = "https://raw.githubusercontent.com"

register_asset(AssetSpec(
    name="ict_facekit",
    relpath="3dmm/ict_facekit.npz",
    description="ICT-FaceKit light face model (face + head/neck), facegeo npz conversion",
    license="MIT (ICT-VGL/ICT-FaceKit)",
    obtain=(
        "clone https://github.com/ICT-VGL/ICT-FaceKit and convert its FaceXModel/ folder "
        "with facegeo.morphable.convert_ict_facekit(<FaceXModel dir>, <out>.npz)"
    ),
    packaged="ict_facekit/ict_facekit.npz",
))
register_asset(AssetSpec(
    name="bfm2009",
    relpath="3dmm/bfm/01_MorphableModel.mat",
    description="Basel Face Model 2009 (01_MorphableModel.mat)",
    license=_BFM_TERMS,
    obtain="register at https://faces.dmi.unibas.ch/bfm/ (Basel Face Model 2009 download)",
))
register_asset(AssetSpec(
    name="bfm_front",
    relpath="3dmm/bfm/BFM_model_front.mat",
    description="Deep3DFaceRecon BFM_model_front.mat (BFM2009 front + Guo et al. expressions)",
    license=_BFM_TERMS + "; expression basis under FaceWarehouse research terms",
    obtain=(
        "register for BFM2009 at https://faces.dmi.unibas.ch/bfm/, get Exp_Pca.bin from "
        "Guo et al. (github.com/Juyong/3DFace, CoarseData), then build it with "
        "Deep3DFaceReconstruction's transferBFM09 (or facegeo's BFM loader, see docs)"
    ),
))
register_asset(AssetSpec(
    name="bfm2017",
    relpath="3dmm/bfm/model2017-1_face12_nomouth.h5",
    description="Basel Face Model 2017/2019 (.h5)",
    license="University of Basel BFM 2017/2019 license (registration required)",
    obtain="register at https://faces.dmi.unibas.ch/bfm/bfm2017.html (or bfm2019.html)",
))
register_asset(AssetSpec(
    name="mobilefacenet",
    relpath="weights/mobilefacenet/mobilefacenet.pt",
    description="ArcFace-loss MobileFaceNet face-recognition weights (128-d embedding)",
    license="Apache-2.0 (foamliu/MobileFaceNet); trained on MS-Celeb-1M (research only)",
    obtain="https://github.com/foamliu/MobileFaceNet (weights/mobilefacenet.pt)",
    url=f"{_GH}/foamliu/MobileFaceNet/a6cc903/weights/mobilefacenet.pt",
    sha256="90a00ba1d8b0b688af3deb731ed53dca582e6106805d1bc3cfdef55f570493f4",
))
register_asset(AssetSpec(
    name="retinaface_mnet",
    relpath="weights/retinaface/mobilenet0.25_Final.pth",
    description="RetinaFace MobileNet-0.25 face detector (box + 5 landmarks)",
    license="MIT (biubug6/Pytorch_Retinaface); trained on WIDER FACE",
    obtain="https://github.com/biubug6/Pytorch_Retinaface (mobilenet0.25_Final.pth)",
    url=f"{_GH}/foamliu/MobileFaceNet/a6cc903/retinaface/weights/mobilenet0.25_Final.pth",
    sha256="2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220",
))
register_asset(AssetSpec(
    name="3ddfa_v2_mb05",
    relpath="weights/3ddfa_v2/mb05_120x120.pth",
    description="3DDFA_V2 MobileNet (width 0.5) 62-parameter regressor",
    license="MIT (cleardusk/3DDFA_V2); trained on 300W-LP BFM fits (academic use)",
    obtain="https://github.com/cleardusk/3DDFA_V2 (weights/mb05_120x120.pth)",
    url=f"{_GH}/cleardusk/3DDFA_V2/1b6c676/weights/mb05_120x120.pth",
    sha256="f93ed7f1c4c0382b16d7c18480a5f67473c1917a47475a9823924f38aeb27280",
))
register_asset(AssetSpec(
    name="faceboxes",
    relpath="weights/3ddfa_v2/FaceBoxesProd.pth",
    description="FaceBoxes CPU face detector weights (3DDFA_V2)",
    license="MIT (3DDFA_V2); trained on WIDER FACE",
    obtain="https://github.com/cleardusk/3DDFA_V2 (FaceBoxes/weights/FaceBoxesProd.pth)",
    url=f"{_GH}/cleardusk/3DDFA_V2/1b6c676/FaceBoxes/weights/FaceBoxesProd.pth",
    sha256="c0cb2b1e40710c0aa5fc32a8759b1496a0fe0a126c907ca0ffe35b4bd0709d09",
))
register_asset(AssetSpec(
    name="vgg19",
    relpath="weights/vgg19/vgg19-dcbb9e9d.pth",
    description="VGG-19 ImageNet weights (torchvision state dict) for perceptual losses",
    license="BSD-3-Clause (torchvision); ImageNet terms apply to the training data",
    obtain="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    sha256="dcbb9e9d",
))
register_asset(AssetSpec(
    name="inception_fid",
    relpath="weights/inception/pt_inception-2015-12-05-6726825d.pth",
    description="FID Inception-v3 weights (pytorch-fid port of the TF 2015-12-05 graph)",
    license="Apache-2.0 (mseitzer/pytorch-fid)",
    obtain="https://github.com/mseitzer/pytorch-fid/releases (pt_inception-2015-12-05)",
    url=(
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
        "pt_inception-2015-12-05-6726825d.pth"
    ),
    sha256="6726825d",
))
register_asset(AssetSpec(
    name="fan_2d",
    relpath="weights/face_alignment/2DFAN4-cd938726ad.zip",
    description="face-alignment 2D-FAN-4 landmark network",
    license="BSD-3-Clause (1adrianb/face-alignment); trained on 300W-LP",
    obtain="https://www.adrianbulat.com/downloads/python-fan/2DFAN4-cd938726ad.zip",
    url="https://www.adrianbulat.com/downloads/python-fan/2DFAN4-cd938726ad.zip",
    sha256="cd938726adb1f15f361263cce2db9cb820c42585fa8796ec72ce19107f369a46",
))
register_asset(AssetSpec(
    name="s3fd",
    relpath="weights/face_alignment/s3fd-619a316812.pth",
    description="S3FD face detector used by face-alignment",
    license="BSD-3-Clause (1adrianb/face-alignment)",
    obtain="https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
    url="https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
    sha256="619a31681264d3f7f7fc7a16a42cbbe8b23f31a256f75a366e5a1bcd59b33543",
))
register_asset(AssetSpec(
    name="bfm_noneck_v3",
    relpath="3dmm/bfm/bfm_noneck_v3.pkl",
    description="3DDFA / 3DDFA_V2 BFM2009 no-neck model (bfm_noneck_v3.pkl, 38,365 vertices)",
    license="BFM2009 terms: academic, non-commercial use only (3DDFA_V2 bfm/readme.md)",
    obtain=(
        "register for BFM2009 at https://faces.dmi.unibas.ch/bfm/, then get configs/"
        "bfm_noneck_v3.pkl and configs/tri.pkl from https://github.com/cleardusk/3DDFA_V2 "
        "(put tri.pkl next to it)"
    ),
))
register_asset(AssetSpec(
    name="alexnet_lpips",
    relpath="weights/torchvision/alexnet-owt-7be5be79.pth",
    description="torchvision AlexNet ImageNet weights (backbone of LPIPS 'alex')",
    license="BSD-3-Clause (torchvision); ImageNet terms apply to the training data",
    obtain="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    sha256="7be5be79",
))
register_asset(AssetSpec(
    name="lpips_alex_lin",
    relpath="weights/lpips/v0.1/alex.pth",
    description="LPIPS v0.1 linear-layer weights for the AlexNet variant (lin0..lin4)",
    license="BSD-2-Clause (richzhang/PerceptualSimilarity)",
    obtain="https://github.com/richzhang/PerceptualSimilarity (lpips/weights/v0.1/alex.pth)",
    url=("https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/"
         "lpips/weights/v0.1/alex.pth"),
    sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
))
