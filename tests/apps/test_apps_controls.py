"""Integration tests of the controls (issue 24, item 3) and the mesh interpolation (item 4)
on real media: few frames, small sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from facegeo.controls import Controls
from facegeo.fitting import fit_landmarks
from facegeo.image_io import load_image
from facegeo.landmarks import detect, detect_face
from facegeo.morphable import MorphableModel
from facegeo.pipeline import ReenactmentPipeline
from facegeo.reenact import GeometricReenactor
from facegeo.video import read_video, video_info
from facegeo_apps import interpolate as interp_app
from facegeo_apps import reenact as reenact_app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model(assets_dir):
    return MorphableModel.load()


@pytest.fixture(scope="module")
def job(media_dir, model):
    """Einstein driven by 40 frames of lp_d12.mp4 (a man turning and talking), at 128 px."""
    rr = GeometricReenactor(model, size=128)
    return ReenactmentPipeline(rr).prepare(load_image(media_dir / "lp_s12.jpg"),
                                           media_dir / "lp_d12.mp4", max_frames=40)


def _fit(model, image):
    """Independent check: a fresh dlib detection + landmark fit of a (3, S, S) frame."""
    lm = detect_face(image).landmarks
    return fit_landmarks(model, lm[None]), lm


def _mouth_open(lm):
    """Inner-lip opening (landmarks 62/66) over the inter-ocular distance."""
    return float((lm[66, 1] - lm[62, 1]) / (lm[45, 0] - lm[36, 0]))


def test_region_control_and_multipliers_on_real_media(job, model):
    """--only expression / --motion-scale 0 keep the source's head pose while the driver
    turns; --only pose / --expression-scale 0 keep the source's mouth while the driver talks
    (measured by an independent detection + fit of the output frames)."""
    picks = [0, 13, 26, 39]
    drv = job.driving_fit
    d_yaw = drv.angles[picks, 0]
    s_yaw = float(job.sources[0].fit.angles[0, 0])
    assert float(d_yaw.max() - d_yaw.min()) > 5  # the driver turns in these frames

    def run(c):
        return torch.stack(list(job.frames(mode="relative", controls=c)))[picks]

    plain = run(None)
    for c in (Controls(only="expression"), Controls(motion_scale=0.0)):
        yaws = [float(_fit(model, f)[0].angles[0, 0]) for f in run(c)]
        assert max(abs(y - s_yaw) for y in yaws) < 4.0, (c, yaws, s_yaw)
    yaws_plain = [float(_fit(model, f)[0].angles[0, 0]) for f in plain]
    assert max(yaws_plain) - min(yaws_plain) > 4.0  # without controls the head turns
    src_open = _mouth_open(_fit(model, job.sources[0].image[0])[1])
    drv_open = [_mouth_open(_fit(model, f)[1]) for f in plain]
    for c in (Controls(only="pose"), Controls(expression_scale=0.0)):
        opens = [_mouth_open(_fit(model, f)[1]) for f in run(c)]
        assert max(abs(o - src_open) for o in opens) < 0.05, (c, opens, src_open, drv_open)


def test_best_frame_reference_reproduces_the_source(job, model):
    """With the best frame as reference and relative expression, the output at that frame
    is the source itself (its pose and expression), unlike the first frame's output."""
    rr = job.pipeline.reenactor
    best = job.reference_index("best")
    rr.relative_expression = True
    try:
        out = torch.stack(list(job.frames(mode="relative", reference="best")))
    finally:
        rr.relative_expression = False
    src = job.sources[0].image[0]
    err_best = float((out[best] - src).abs().mean())
    assert err_best < 0.01, err_best
    others = [float((out[t] - src).abs().mean()) for t in range(len(out)) if t != best]
    assert err_best <= min(others) + 1e-6
    with pytest.raises(ValueError, match="outside the clip"):
        job.reference_index(99)


def test_app_controls_best_frame_and_bad_input(tmp_path, media_dir, capsys):
    out = tmp_path / "c.mp4"
    src, drv = str(media_dir / "lp_s12.jpg"), str(media_dir / "lp_d3.mp4")
    rc = reenact_app.main(["--source", src, "--driving", drv, "--output", str(out),
                           "--max-frames", "6", "--size", "64", "--quiet", "--find-best-frame",
                           "--only", "eyes,mouth", "--expression-scale", "1.3",
                           "--motion-scale", "0.5"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "measured from driving frame" in err and video_info(out).frames == 6
    base = ["--source", src, "--driving", drv, "--size", "64", "--quiet"]
    img = tmp_path / "x.png"
    for args, msg in [(["--only", "nostril"], "unknown region"),
                      (["--expression-scale", "nan"], "--expression-scale"),
                      (["--motion-scale", "5"], "--motion-scale"),
                      (["--find-best-frame", "--mode", "absolute"], "absolute mode"),
                      (["--driving", drv], "several --driving need --faces"),
                      (["--faces", "0,x"], "--faces"),
                      (["--faces", "all", "--crop"], "full frame")]:
        bad = tmp_path / "bad.mp4"
        rc = reenact_app.main(base + ["--output", str(bad)] + args)
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and not bad.exists(), (args, err)
    rc = reenact_app.main(["--source", str(media_dir / "lp_s18.mp4"), "--driving", drv,
                           "--output", str(img), "--quiet"])
    assert rc == 2 and "single driving image" in capsys.readouterr().err and not img.exists()


def test_app_several_faces_one_driver_or_one_each(tmp_path, media_dir, capsys):
    src = media_dir / "3ddfa_trump_hillary.jpg"
    image = load_image(src)
    faces = detect(image)
    assert len(faces) == 2
    out = tmp_path / "f.mp4"
    rc = reenact_app.main(["--source", str(src), "--faces", "all", "--driving",
                           str(media_dir / "lp_d3.mp4"), "--driving",
                           str(media_dir / "lp_d12.mp4"), "--output", str(out),
                           "--max-frames", "5", "--size", "96", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 0, err
    frames, _ = read_video(out)
    h, w = image.shape[1:]
    # the full source image (the H.264 writer pads odd sizes to even: 689 -> 690 rows)
    assert frames.shape[0] == 5 and frames.shape[1] - h in (0, 1) and frames.shape[2] == w
    res = torch.from_numpy(frames[:, :h]).permute(0, 3, 1, 2).float() / 255
    moved = []
    outside = torch.ones(image.shape[1:], dtype=torch.bool)
    for f in faces:
        x0, y0, x1, y1 = f.box.round().long().tolist()
        outside[max(0, y0 - 60):y1 + 60, max(0, x0 - 60):x1 + 60] = False
        moved.append(float((res[1:, :, y0:y1, x0:x1] - res[:1, :, y0:y1, x0:x1]).abs().max(0)
                           .values.mean()))
    noise = float((res[1:, :, outside] - res[:1, :, outside]).abs().max(0).values.mean())
    assert min(moved) > max(0.008, 4 * noise), (moved, noise)   # both faces move
    # far from the faces the picture is the source (up to video coding)
    assert float((res[:, :, outside] - image[:, outside]).abs().mean()) < 0.02
    bad = tmp_path / "b.mp4"
    rc = reenact_app.main(["--source", str(src), "--faces", "5", "--driving",
                           str(media_dir / "lp_d3.mp4"), "--output", str(bad), "--quiet"])
    assert rc == 2 and "has 2 face(s)" in capsys.readouterr().err and not bad.exists()


def test_app_video_source_keeps_the_source_motion_outside_the_face(tmp_path, media_dir,
                                                                   capsys):
    from facegeo.metrics import flicker

    src = media_dir / "lp_s18.mp4"
    out = tmp_path / "v.mp4"
    rc = reenact_app.main(["--source", str(src), "--driving", str(media_dir / "lp_d3.mp4"),
                           "--output", str(out), "--max-frames", "6", "--size", "96",
                           "--quiet"])
    assert rc == 0, capsys.readouterr().err
    got, _ = read_video(out)
    want, _ = read_video(src, max_frames=6)
    assert got.shape == want.shape
    g = torch.from_numpy(got).permute(0, 3, 1, 2).float() / 255
    w = torch.from_numpy(want).permute(0, 3, 1, 2).float() / 255
    face = detect_face(w[0]).box.round().long().tolist()
    x0, y0, x1, y1 = face
    mask = torch.ones(w.shape[-2:], dtype=torch.bool)
    side = max(x1 - x0, y1 - y0)
    mask[max(0, y0 - side):y1 + side, max(0, x0 - side):x1 + side] = False
    # outside the face the frames are the source video's, and as steady
    assert float((g[:, :, mask] - w[:, :, mask]).abs().mean()) < 0.02
    assert float(flicker(g, mask)) < float(flicker(w, mask)) + 0.005
    # the face itself is re-rendered (the driver's expression)
    inner = (slice(None), slice(None), slice(y0, y1), slice(x0, x1))
    assert float((g[inner] - w[inner]).abs().mean()) > 0.005


def test_interpolate_meshes_glb_and_identity_morph(tmp_path, media_dir, model, capsys):
    src, other = media_dir / "lp_s12.jpg", media_dir / "lp_s1.jpg"
    mesh_dir, glb = tmp_path / "meshes", tmp_path / "morph.glb"
    rc = interp_app.main(["--source", str(src), "--target-identity", str(other), "--yaw", "10",
                          "--frames", "4", "--size", "128", "--meshes", str(mesh_dir),
                          "--mesh-format", "ply", "--glb", str(glb), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    files = sorted(mesh_dir.iterdir())
    assert [p.name for p in files] == [f"frame_{k:04d}.ply" for k in range(4)]
    meshes = [trimesh.load(p, process=False) for p in files]
    assert all(m.vertices.shape == (model.n_vertices, 3) for m in meshes)
    assert np.array_equal(meshes[0].faces, model.triangles.numpy())
    # identity morph: the last frame's face shape is the other person's (an independent fit
    # of that photo), the first frame's Einstein's
    lm_ids = model.landmarks68.long().numpy()

    def shape_of(image):
        f = fit_landmarks(model, detect_face(image).landmarks[None])
        v = model.vertices(f.id_coeffs, torch.zeros(1, model.n_exp))[0].numpy()
        return v[lm_ids] - v[lm_ids].mean(0)

    def aligned(m, ref):
        """Landmark vertices of mesh m rigidly aligned onto ref (Kabsch): no head pose."""
        x = np.asarray(m.vertices)[lm_ids]
        x = x - x.mean(0)
        u, _, vt = np.linalg.svd(x.T @ ref)
        d = np.sign(np.linalg.det(u @ vt))
        return x @ (u @ np.diag([1, 1, d]) @ vt)

    sh_src, sh_other = shape_of(load_image(src)), shape_of(load_image(other))

    def dist(m, ref):
        return float(np.linalg.norm(aligned(m, ref) - ref))

    assert dist(meshes[0], sh_src) < dist(meshes[0], sh_other)
    # measured 4.36 vs 7.23 cm (the source's expression stays in both meshes)
    assert dist(meshes[-1], sh_other) < 0.75 * dist(meshes[-1], sh_src), (
        dist(meshes[-1], sh_other), dist(meshes[-1], sh_src))
    # colours: the nose tip vertex has the photo's colour near the detected nose tip
    img = load_image(src)
    lm = detect_face(img).landmarks
    x, y = lm[30].round().long().tolist()
    patch = img[:, y - 2:y + 3, x - 2:x + 3].reshape(3, -1).mean(1).numpy()
    c = meshes[0].visual.vertex_colors[lm_ids[30], :3] / 255.0
    assert np.abs(c - patch).max() < 0.12, (c, patch)
    assert len({tuple(m.visual.vertex_colors[:, :3].ravel()[:300]) for m in meshes}) == 1
    # the GLB: same vertex count, one morph target per later frame
    scene = trimesh.load(glb, process=False)
    (g,) = scene.geometry.values()
    assert g.vertices.shape == (model.n_vertices, 3)
    assert np.allclose(g.vertices, 0.01 * meshes[0].vertices, atol=1e-6)   # cm -> m
    # bad input: nothing written
    for args, msg in [(["--meshes", str(mesh_dir)], "not empty"),
                      (["--glb", str(tmp_path / "x.gltf")], ".glb"),
                      (["--only", "identity", "--meshes", str(tmp_path / "m2")],
                       "needs a --target"),
                      (["--only", "pose,,eyes", "--glb", str(tmp_path / "y.glb")],
                       "empty entry"),
                      (["--yaw", "5"], "missing --output")]:
        rc = interp_app.main(["--source", str(src), "--frames", "2", "--size", "64",
                              "--quiet"] + (["--yaw", "5"] if "--yaw" not in args else [])
                             + args)
        err = capsys.readouterr().err
        assert rc == 2 and msg in err, (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meshes", "morph.glb"]
