"""fsrt: the converter of the authors' published checkpoint, on a synthetic state dict with
exactly the key names and shapes of their code (andrerochow/fsrt: srt/encoder.py,
srt/decoder.py, srt/layers.py, modules/expression_encoder.py, FOMM's KPDetector with their
vox256 settings), and the FOMM detector conventions (``detector.fomm_head``) it needs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from facegeo_models import fsrt
from facegeo_models.fsrt.convert import convert_official_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")


def _lin(sd, name, o, i, bias=True):
    sd[f"{name}.weight"] = torch.randn(o, i) / math.sqrt(i)
    if bias:
        sd[f"{name}.bias"] = torch.randn(o) * 0.01


def _norm(sd, name, c):
    sd[f"{name}.weight"] = 1 + 0.1 * torch.randn(c)
    sd[f"{name}.bias"] = 0.1 * torch.randn(c)


def official_layout(seed: int = 0) -> tuple[dict, dict]:
    """(checkpoint {encoder, decoder, expression_encoder}, kp_detector) with the authors'
    names and shapes (vox256: 10 keypoints, 16 pixel / 4 keypoint octaves, |e| = 256)."""
    torch.manual_seed(seed)
    kp: dict[str, torch.Tensor] = {}
    down = [(3, 64), (64, 128), (128, 256), (256, 512), (512, 1024)]
    up = [(1024, 512), (1024, 256), (512, 128), (256, 64), (128, 32)]
    for part, chans in (("encoder.down_blocks", down), ("decoder.up_blocks", up)):
        for i, (ci, co) in enumerate(chans):
            p = f"predictor.{part}.{i}"
            kp[f"{p}.conv.weight"] = torch.randn(co, ci, 3, 3) / math.sqrt(9 * ci)
            kp[f"{p}.conv.bias"] = 0.01 * torch.randn(co)
            _norm(kp, f"{p}.norm", co)
            kp[f"{p}.norm.running_mean"] = 0.1 * torch.randn(co)
            kp[f"{p}.norm.running_var"] = 1 + 0.1 * torch.rand(co)
            kp[f"{p}.norm.num_batches_tracked"] = torch.tensor(1000)
    kp["kp.weight"] = torch.randn(10, 35, 7, 7) / math.sqrt(35 * 49)
    kp["kp.bias"] = torch.zeros(10)
    kp["down.weight"] = torch.rand(3, 1, 13, 13)
    exp: dict[str, torch.Tensor] = {"expression.weight": torch.randn(320, 35, 7, 7) * 0.02,
                                    "expression.bias": torch.zeros(320)}
    for j, (o, i) in zip((0, 2, 4, 6), ((640, 320), (1280, 640), (640, 1280), (256, 640))):
        _lin(exp, f"expression_mlp.{j}", o, i)
    enc: dict[str, torch.Tensor] = {}
    for b, (ci, h, co) in enumerate(((483, 96, 192), (192, 192, 384), (384, 384, 768))):
        enc[f"conv_blocks.{b}.layers.0.weight"] = torch.randn(h, ci, 3, 3) / math.sqrt(9 * ci)
        enc[f"conv_blocks.{b}.layers.2.weight"] = torch.randn(co, h, 3, 3) / math.sqrt(9 * h)
    enc["per_patch_linear.weight"] = torch.randn(768, 768, 1, 1) / math.sqrt(768)
    enc["per_patch_linear.bias"] = 0.01 * torch.randn(768)
    for layer in range(5):
        p = f"transformer.layers.{layer}"
        _norm(enc, f"{p}.0.norm", 768)
        _lin(enc, f"{p}.0.fn.to_qkv", 2304, 768, bias=False)
        _lin(enc, f"{p}.0.fn.to_out.0", 768, 768)
        _norm(enc, f"{p}.1.norm", 768)
        _lin(enc, f"{p}.1.fn.net.0", 1536, 768)
        _lin(enc, f"{p}.1.fn.net.3", 768, 1536)
    dec: dict[str, torch.Tensor] = {}
    at = "allocation_transformer"
    _lin(dec, f"{at}.input_mlp.0", 720, 480)
    _lin(dec, f"{at}.input_mlp.2", 480, 720)
    for layer in range(2):
        p = f"{at}.transformer.layers.{layer}"
        _norm(dec, f"{p}.0.norm", 480)
        _lin(dec, f"{p}.0.fn.to_q", 768, 480, bias=False)
        _lin(dec, f"{p}.0.fn.to_kv", 1536, 768, bias=False)
        _lin(dec, f"{p}.0.fn.to_out.0", 480, 768)
        _norm(dec, f"{p}.1.norm", 480)
        _lin(dec, f"{p}.1.fn.net.0", 1536, 480)
        _lin(dec, f"{p}.1.fn.net.3", 480, 1536)
    for j, (o, i) in zip((0, 2, 4, 6, 8), ((1536, 480), (1536, 1536), (1536, 1536),
                                           (1536, 1536), (3, 1536))):
        _lin(dec, f"render_mlp.{j}", o, i)
    return {"encoder": enc, "decoder": dec, "expression_encoder": exp, "it": 1}, kp


def _their_attention(x, kv, wq, wk, wv, wo, bo, heads=12):
    """softmax(q k^T / sqrt(d)) v per head, their 'b n (h d) -> b h n d' split."""
    q, k, v = x @ wq.T, kv @ wk.T, kv @ wv.T
    split = [t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v)]
    att = torch.softmax(split[0] @ split[1].transpose(-1, -2) / math.sqrt(split[0].shape[-1]),
                        -1)
    return (att @ split[2]).transpose(1, 2).flatten(-2) @ wo.T + bo


def test_official_layout_loads_strictly_and_maps_correctly():
    ck, kp = official_layout()
    sd = convert_official_state_dict(ck, kp)
    torch.manual_seed(1)
    m = fsrt.from_config("paper_official").eval()
    m.load_state_dict(sd, strict=True)
    # fused projections are split row-wise into Q, K, V (heads contiguous, as einops)
    enc0 = ck["encoder"]["transformer.layers.0.0.fn.to_qkv.weight"]
    torch.testing.assert_close(m.encoder.blocks[0].self_attn.k_proj.weight, enc0[768:1536])
    d1 = ck["decoder"]["allocation_transformer.transformer.layers.1.0.fn.to_kv.weight"]
    torch.testing.assert_close(m.decoder.blocks[1].cross_attn.v_proj.weight, d1[768:])
    # one decoder block against their pre-norm cross-attention written out
    g = torch.Generator().manual_seed(2)
    x, z = torch.randn(1, 7, 480, generator=g), torch.randn(1, 9, 768, generator=g)
    p = "allocation_transformer.transformer.layers.0."
    dd = ck["decoder"]
    xn = F.layer_norm(x, (480,), dd[p + "0.norm.weight"], dd[p + "0.norm.bias"])
    kw, vw = dd[p + "0.fn.to_kv.weight"].chunk(2, 0)
    h = x + _their_attention(xn, z, dd[p + "0.fn.to_q.weight"], kw, vw,
                             dd[p + "0.fn.to_out.0.weight"], dd[p + "0.fn.to_out.0.bias"])
    hn = F.layer_norm(h, (480,), dd[p + "1.norm.weight"], dd[p + "1.norm.bias"])
    want = h + F.linear(F.gelu(F.linear(hn, dd[p + "1.fn.net.0.weight"],
                                        dd[p + "1.fn.net.0.bias"])),
                        dd[p + "1.fn.net.3.weight"], dd[p + "1.fn.net.3.bias"])
    with torch.no_grad():
        torch.testing.assert_close(m.decoder.blocks[0](x, z), want, atol=1e-4, rtol=1e-4)
        # the first conv sees their channel order [rgb, gamma_key, gamma_pix, e]
        img, kpt, e = torch.rand(1, 3, 16, 16), torch.rand(1, 10, 2) - 0.5, torch.randn(1, 256)
        rep = m.encoder.input_representation(img, kpt, e)          # ours: [rgb, pix, key, e]
        theirs = torch.cat([rep[:, :3], rep[:, 67:227], rep[:, 3:67], rep[:, 227:]], 1)
        torch.testing.assert_close(
            m.encoder.conv[0](rep),
            F.conv2d(theirs, ck["encoder"]["conv_blocks.0.layers.0.weight"], padding=1),
            atol=1e-4, rtol=1e-4)
    with pytest.raises(KeyError, match="expression_encoder"):
        convert_official_state_dict({"encoder": {}, "decoder": {}}, kp)
    bad = dict(kp, **{"jacobian.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="jacobian"):
        convert_official_state_dict(ck, bad)


def test_fomm_head_conventions():
    """fomm_head: 58x58 heat-maps at 64x64 features (7x7 heads without padding), keypoints
    = heat-map means over linspace(-1, 1) (brute force), FOMM's down-sampling (zero pad,
    samples at offset 0: a delta at (4a, 4b) peaks at (a, b))."""
    net = fsrt.KeypointExpressionNet(detector={"block_expansion": 8, "max_features": 32,
                                               "num_blocks": 2, "scale_factor": 0.25,
                                               "fomm_head": True}, expression_size=8,
                                     features_per_kp=4, mlp_hidden=(16, 16, 16)).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 256, 256))
    hm = out["heatmap"][0]
    assert hm.shape == (10, 58, 58) and out["expression"].shape == (1, 8)
    lin = torch.linspace(-1, 1, 58)
    want = torch.stack([(hm.sum(1) * lin).sum(-1), (hm.sum(2) * lin).sum(-1)], -1)
    torch.testing.assert_close(out["kp"][0], want, atol=1e-5, rtol=0)
    x = torch.zeros(1, 3, 64, 64)
    x[0, :, 20, 36] = 1.0
    y = net._downsample(x)
    assert y.shape == (1, 3, 16, 16)
    assert divmod(int(y[0, 0].argmax()), 16) == (5, 9)
    with pytest.raises(ValueError, match="fomm_head"):
        fsrt.KeypointExpressionNet(source="landmarks", detector={"fomm_head": True})


def test_pretrained_detector_switch(tmp_path):
    """keypoints.detector_weights loads a FOMM detector (the authors' kp_detector.pt, or a
    FOMM checkpoint with a Jacobian head, which is dropped) into the learned detector."""
    _, kp = official_layout(3)
    torch.save(kp, tmp_path / "kp_detector.pt")
    fomm = {"kp_detector": {**kp, "jacobian.weight": torch.zeros(40, 35, 7, 7),
                            "jacobian.bias": torch.zeros(40)}, "epoch": 99}
    torch.save(fomm, tmp_path / "vox-cpk.pth")
    for f in ("kp_detector.pt", "vox-cpk.pth"):
        net = fsrt.KeypointExpressionNet(detector={"fomm_head": True},
                                         detector_weights=str(tmp_path / f))
        torch.testing.assert_close(net.detector.kp.weight, kp["kp.weight"])
        torch.testing.assert_close(
            net.detector.predictor.decoder.up_blocks[1].norm.running_var,
            kp["predictor.decoder.up_blocks.1.norm.running_var"])
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="kp.weight"):
        fsrt.KeypointExpressionNet(detector_weights=str(tmp_path / "other.pt"))
    with pytest.raises(ValueError, match="learned detector"):
        fsrt.KeypointExpressionNet(source="landmarks", detector_weights="x.pt")
