"""Asset resolver: each lookup step, checksums, failed downloads (no real network)."""

from __future__ import annotations

import hashlib
import io
import os
import urllib.error

import pytest

from facegeo import assets
from facegeo.assets import (
    AssetChecksumError,
    AssetNotFoundError,
    AssetSpec,
    atomic_write,
    register_asset,
    resolve,
)

PAYLOAD = b"facegeo test asset \x00\x01\x02" * 100
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    env, cache = tmp_path / "assets", tmp_path / "cache"
    env.mkdir()
    cache.mkdir()
    monkeypatch.setenv("FACEGEO_ASSETS", str(env))
    monkeypatch.setenv("FACEGEO_CACHE", str(cache))
    return env, cache


@pytest.fixture
def spec(monkeypatch):
    monkeypatch.setattr(assets, "_REGISTRY", dict(assets._REGISTRY))
    return register_asset(AssetSpec(
        name="unit_test_asset", relpath="weights/test/thing.bin", description="a test file",
        license="CC0 (test)", obtain="https://example.invalid/get-it",
        url="https://example.invalid/thing.bin", sha256=DIGEST,
    ))


class _FakeResponse(io.BytesIO):
    headers = {"Content-Length": str(len(PAYLOAD))}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _serve(monkeypatch, payload=PAYLOAD, calls=None):
    def fake_urlopen(url, timeout=None):
        if calls is not None:
            calls.append(url)
        return _FakeResponse(payload)

    monkeypatch.setattr(assets.urllib.request, "urlopen", fake_urlopen)


def _no_network(monkeypatch):
    def refuse(url, timeout=None):
        raise urllib.error.URLError("network unreachable (test)")

    monkeypatch.setattr(assets.urllib.request, "urlopen", refuse)


def _put(root, spec, data=PAYLOAD):
    p = root / spec.relpath
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def test_explicit_path_wins(dirs, spec, tmp_path, monkeypatch):
    _no_network(monkeypatch)
    explicit = tmp_path / "mine.bin"
    explicit.write_bytes(b"x")
    _put(dirs[0], spec)
    assert resolve("unit_test_asset", path=explicit) == explicit
    assert resolve(str(explicit)) == explicit  # a path in place of the name


def test_explicit_path_must_exist(dirs, spec, tmp_path):
    with pytest.raises(AssetNotFoundError, match="explicit path"):
        resolve("unit_test_asset", path=tmp_path / "missing.bin")


def test_env_dir_before_cache(dirs, spec, monkeypatch):
    _no_network(monkeypatch)
    env, cache = dirs
    in_cache = _put(cache, spec)
    assert resolve("unit_test_asset") == in_cache
    in_env = _put(env, spec)
    assert resolve("unit_test_asset") == in_env


def test_download_into_cache_verified(dirs, spec, monkeypatch):
    calls = []
    _serve(monkeypatch, calls=calls)
    path = resolve("unit_test_asset")
    assert path == dirs[1] / spec.relpath and path.read_bytes() == PAYLOAD
    assert calls == [spec.url]
    assert resolve("unit_test_asset") == path and len(calls) == 1  # cached now
    assert [p.name for p in path.parent.iterdir()] == ["thing.bin"]  # no temp files left


def test_checksum_mismatch_leaves_nothing(dirs, spec, monkeypatch):
    _serve(monkeypatch, payload=b"tampered")
    with pytest.raises(AssetChecksumError, match="expected"):
        resolve("unit_test_asset")
    folder = dirs[1] / "weights" / "test"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_verify_local_file(dirs, spec, monkeypatch):
    _no_network(monkeypatch)
    _put(dirs[0], spec, b"not the real thing")
    assert resolve("unit_test_asset")  # found, not checked by default
    with pytest.raises(AssetChecksumError):
        resolve("unit_test_asset", verify=True)


def test_unreachable_url_gives_helpful_error(dirs, spec, monkeypatch):
    _no_network(monkeypatch)
    with pytest.raises(AssetNotFoundError) as info:
        resolve("unit_test_asset")
    msg = str(info.value)
    for needle in ["unit_test_asset", str(dirs[0] / spec.relpath), str(dirs[1] / spec.relpath),
                   "network unreachable", spec.obtain, spec.license]:
        assert needle in msg


def test_no_download_when_disabled(dirs, spec, monkeypatch):
    calls = []
    _serve(monkeypatch, calls=calls)
    with pytest.raises(AssetNotFoundError, match="not attempted"):
        resolve("unit_test_asset", download=False)
    assert calls == []


def test_env_unset_is_reported(dirs, spec, monkeypatch):
    _no_network(monkeypatch)
    monkeypatch.delenv("FACEGEO_ASSETS")
    with pytest.raises(AssetNotFoundError, match=r"\$FACEGEO_ASSETS \(not set\)"):
        resolve("unit_test_asset")


def test_unknown_name_lists_known_ones():
    with pytest.raises(KeyError, match="ict_facekit"):
        resolve("no_such_asset")


def test_registration_rules(spec):
    with pytest.raises(ValueError, match="needs a sha256"):
        register_asset(AssetSpec("x1", "a", "d", "l", "o", url="https://example.invalid/x"))
    with pytest.raises(ValueError, match="hex"):
        register_asset(AssetSpec("x2", "a", "d", "l", "o", url="https://e.invalid", sha256="zz"))
    with pytest.raises(ValueError, match="already registered"):
        register_asset(AssetSpec("unit_test_asset", "other", "d", "l", "o"))


def test_bfm_error_says_where_to_register(dirs, monkeypatch):
    with pytest.raises(AssetNotFoundError, match="faces.dmi.unibas.ch"):
        resolve("bfm2009")


def test_default_model_resolves_from_shared_assets(assets_dir, monkeypatch):
    monkeypatch.setenv("FACEGEO_ASSETS", str(assets_dir))
    assert resolve("ict_facekit") == assets_dir / "3dmm" / "ict_facekit.npz"


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def failing(tmp):
        tmp.write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    atomic_write(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    with pytest.raises(FileNotFoundError, match="output folder"):
        atomic_write(tmp_path / "missing" / "x.txt", lambda tmp: None)


def test_data_path_finds_project_files():
    assert assets.data_path("__init__.py").is_file()
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        assets.data_path("nope.bin")


# Every asset the project knows, registered in one place (facegeo/assets.py). Adding an
# asset means adding it here too.
KNOWN_ASSETS = [
    "3ddfa_v2_mb05", "alexnet_lpips", "bfm2009", "bfm2017", "bfm_front", "bfm_noneck_v3",
    "faceboxes", "fan_2d", "ict_facekit", "inception_fid", "lpips_alex_lin", "mobilefacenet",
    "retinaface_mnet", "s3fd", "vgg19",
]


def test_all_assets_registered_without_other_imports(tmp_path):
    """Resolving any known name right after ``import facegeo.assets`` (nothing else
    imported, no network, empty cache) finds the file or raises AssetNotFoundError,
    never KeyError; and the registry holds exactly the known names."""
    import json
    import subprocess
    import sys

    code = f"""
import json, sys, urllib.error, urllib.request
import facegeo.assets as a

def refuse(url, timeout=None):
    raise urllib.error.URLError("no network in this test")

urllib.request.urlopen = refuse
out = {{"names": [s.name for s in a.registered_assets()], "results": {{}}}}
for name in {KNOWN_ASSETS!r}:
    try:
        a.resolve(name)
        out["results"][name] = "found"
    except a.AssetNotFoundError:
        out["results"][name] = "not found"
    except Exception as e:
        out["results"][name] = type(e).__name__ + ": " + str(e)
print(json.dumps(out))
"""
    env = dict(os.environ, FACEGEO_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["names"] == KNOWN_ASSETS
    bad = {k: v for k, v in out["results"].items() if v not in ("found", "not found")}
    assert not bad, bad


def test_checksum_needs_the_whole_digest():
    ok = assets._checksum_ok
    assert ok(DIGEST, DIGEST) and ok(DIGEST.upper(), DIGEST) and ok(DIGEST, DIGEST.upper())
    for shortened in (DIGEST[:63], DIGEST[:32], DIGEST[:9], DIGEST[:7], DIGEST[:1], ""):
        assert not ok(DIGEST, shortened), len(shortened)
    assert not ok(DIGEST, DIGEST[:-1] + ("0" if DIGEST[-1] != "0" else "1"))
    assert not ok(DIGEST[:40], DIGEST[:40])  # a truncated computed digest is no digest
    # the one allowed short form: exactly the 8 hex digits of a torchvision-style file name
    assert ok(DIGEST, DIGEST[:8]) and not ok(DIGEST, ("0" if DIGEST[0] != "0" else "1")
                                             + DIGEST[1:8])


def test_truncated_digest_is_refused(dirs, monkeypatch):
    with pytest.raises(ValueError, match="64 hex digits"):
        register_asset(AssetSpec("x3", "a", "d", "l", "o", url="https://e.invalid",
                                 sha256=DIGEST[:40]))
    # even if such a spec got into the registry, a local file does not pass verify=True
    truncated = AssetSpec("x4", "weights/test/x4.bin", "d", "l", "o", sha256=DIGEST[:40])
    monkeypatch.setitem(assets._REGISTRY, "x4", truncated)
    _put(dirs[0], truncated)
    with pytest.raises(AssetChecksumError):
        resolve("x4", verify=True)


def test_download_refuses_payload_matching_only_a_prefix(dirs, spec, monkeypatch):
    """A digest registered shortened (16 digits, bypassing register_asset) does not let a
    download through even though the file's sha256 starts with it: the file is discarded."""
    bad = b"other bytes"
    short = AssetSpec("x5", "weights/test/x5.bin", "d", "l", "o", url="https://e.invalid/x5",
                      sha256=hashlib.sha256(bad).hexdigest()[:16])
    monkeypatch.setitem(assets._REGISTRY, "x5", short)
    _serve(monkeypatch, payload=bad)
    with pytest.raises(AssetChecksumError):
        resolve("x5")
