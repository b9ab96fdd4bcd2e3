"""The opt-in int8 path: quantization (zero padding exact inside the margin, scripted == eager),
the ``<model>_int8.pt`` companion the UDF pairs by sha256, its errors, and the chunking contract
within the path's own error against FP32."""

import logging
import os
import platform
import shutil

import pytest
from s2sr_testing import patch_engine
import torch

from s2sr.training import quantize
from s2sr.training.export import export_int8, model_from_weights
from s2sr import engine
from s2sr_testing import chunking_vs_own_error, cube_with_gap, error_vs_fp32, make_cube


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory, slim_weights):
    """A folder holding float weights and their int8 companion (calibrated on seeded cubes)."""
    folder = tmp_path_factory.mktemp("int8")
    base = folder / "slim.pt"
    shutil.copy(slim_weights, base)
    batches = [torch.from_numpy(make_cube(48, 48, seed=s).values[:1].copy()) for s in range(4)]
    export_int8(base, batches=batches, max_psnr_drop_db=None)
    return folder


@pytest.fixture(scope="module")
def cube():
    return cube_with_gap(44, 40, 31, 3, slice(5, 9), slice(20, 26))


def test_zero_padding_is_exact_inside_the_margin(slim_weights, slim_overlap):
    model, _ = model_from_weights(slim_weights)
    zero = quantize.float_backbone_for_int8(model.backbone)
    z = torch.randn(1, 10, 48, 52)
    with torch.no_grad():
        a, b = model.backbone(z), zero(z)
    core = (Ellipsis, slice(2 * slim_overlap, -2 * slim_overlap), slice(2 * slim_overlap, -2 * slim_overlap))
    assert torch.equal(a[core], b[core])
    assert not torch.equal(a, b)  # the padding really changed: only the margin absorbs it


def test_int8_weights_describe_themselves(weights_dir):
    meta = engine.read_metadata(weights_dir / "slim_int8.pt")
    assert meta["precision"] == "int8"
    q = meta["quantization"]
    assert q["base_sha256"] == engine.sha256_file(weights_dir / "slim.pt")
    assert "head" in q["float32"] and "tail" in q["float32"] and q["engine"] == "onednn"


_SCRIPTED_EQUALS_EAGER = """
import sys, torch
from s2sr.training import quantize
from s2sr.training.export import model_from_weights, script
torch.manual_seed(0)
model, _ = model_from_weights(sys.argv[1])
int8 = quantize.quantize_int8(model, [torch.rand(1, 10, 40, 40) * 3000])
assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in int8.modules())
scripted = script(int8)
x = torch.rand(2, 10, 36, 28) * 3000
with torch.no_grad():
    assert torch.equal(scripted(x), int8(x))
print("ok")
"""


def test_scripted_int8_equals_eager_int8(slim_weights):
    """In a fresh interpreter: TorchScript's table of builtins is keyed by id(), and after the
    suite has loaded and refreshed many ops a stale id can make ``torch.jit.script`` read a
    module's list attribute as a builtin ("builtin cannot be used as a value", seen once in CI)."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _SCRIPTED_EQUALS_EAGER, str(slim_weights)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def test_int8_close_to_fp32_nodata_identical(udf_code, weights_dir, cube):
    err = error_vs_fp32(udf_code, cube, {"weights_dir": str(weights_dir), "model": "slim"}, "int8")
    assert 0 < err < 0.05  # a different path, bounded (reflectance)


def test_int8_chunking_within_its_own_error(udf_code, weights_dir, slim_overlap, cube):
    ctx = {"weights_dir": str(weights_dir), "model": "slim", "precision": "int8"}
    seams, own_error = chunking_vs_own_error(udf_code, cube, ctx, slim_overlap)
    assert seams <= own_error


def test_int8_weights_named_directly(udf_module, weights_dir):
    module, meta, _ = engine.load_model({"weights": str(weights_dir / "slim_int8.pt"), "precision": "int8"})
    assert meta["precision"] == "int8"
    with pytest.raises(ValueError, match="holds int8 weights: precision must be 'int8' or 'auto'"):
        engine.load_model({"weights": str(weights_dir / "slim_int8.pt"), "precision": "fp32"})


def test_auto_never_picks_int8(udf_module, weights_dir):
    _, meta, _ = engine.load_model({"weights_dir": str(weights_dir), "model": "slim", "precision": "auto"})
    assert meta.get("precision", "fp32") != "int8"


def test_int8_without_companion_is_a_clear_error(udf_module, slim_weights):
    with pytest.raises(ValueError, match=r"no int8 weights made from slim.pt .*s2sr-export --int8-from"):
        engine.load_model({"weights": str(slim_weights), "precision": "int8"})


def test_stale_companion_is_refused(udf_module, weights_dir, tmp_path):
    from s2sr_testing import export_slim

    shutil.copy(weights_dir / "slim_int8.pt", tmp_path / "slim_int8.pt")
    export_slim(tmp_path / "slim.pt", seed=5)  # the float weights retrained: the companion is stale
    with pytest.raises(ValueError, match="no int8 weights made from slim.pt"):
        engine.load_model({"weights": str(tmp_path / "slim.pt"), "precision": "int8"})


def test_int8_export_refuses_an_inaccurate_model(slim_weights, tmp_path, monkeypatch):
    monkeypatch.setattr(quantize, "compare_with_fp32", lambda *a, **k: {"psnr_drop_db": 0.5})
    shutil.copy(slim_weights, tmp_path / "slim.pt")
    with pytest.raises(ValueError, match="lose 0.500 dB PSNR .* not written"):
        export_int8(tmp_path / "slim.pt", batches=[torch.rand(1, 10, 32, 32) * 3000], max_psnr_drop_db=0.1)
    assert not list(tmp_path.glob("slim_int8*"))


def test_int8_only_for_carn(tmp_path):
    from s2sr.training.models import build_model

    with pytest.raises(ValueError, match="supports the CARN family"):
        quantize.float_backbone_for_int8(build_model("esrgan_3x64x32").backbone)


def _cpu_flags() -> set:
    with open("/proc/cpuinfo") as f:
        return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not os.path.exists("/proc/cpuinfo"),
                    reason="the VNNI flags are read from Linux x86 /proc/cpuinfo")
def test_int8_probe_tells_vnni_cpus(udf_module):
    """Exact int8 sums where the CPU has VNNI or AMX; saturating 16-bit pair sums (AVX2's
    vpmaddubsw) where it has not: the probe measures what the engine does, the flags say which."""
    vnni = bool(_cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})
    assert engine.int8_products_exact() == vnni


def test_int8_on_saturating_cpu_warns(udf_module, weights_dir, tmp_path, monkeypatch, caplog):
    for name in ("slim.pt", "slim_int8.pt"):  # a fresh path: the load caches nothing for it yet
        shutil.copy(weights_dir / name, tmp_path / name)
    ctx = {"weights_dir": str(tmp_path), "model": "slim", "precision": "int8"}
    patch_engine(monkeypatch, "int8_products_exact", lambda: True)
    with caplog.at_level(logging.WARNING, logger="s2sr.engine"):
        engine.load_model(ctx)
    assert "saturate" not in caplog.text
    os.utime(tmp_path / "slim_int8.pt", (1, 1))  # a new file version: loaded again
    patch_engine(monkeypatch, "int8_products_exact", lambda: False)
    with caplog.at_level(logging.WARNING, logger="s2sr.engine"):
        _, meta, _ = engine.load_model(ctx)
    assert "int8 convolutions saturate (no VNNI" in caplog.text and "slim_int8.pt" in caplog.text
    assert meta["precision"] == "int8"  # a warning, not a refusal: the error stays within 0.1 dB
