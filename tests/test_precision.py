"""Reduced-precision paths of the UDF: bf16 trunk, channels-last; the chunking contract holds
within the path's own error against FP32."""

import pytest

from s2sr_testing import chunking_vs_own_error, cube_with_gap, error_vs_fp32


@pytest.fixture(scope="module")
def cube():
    return cube_with_gap(44, 40, 21, 2, slice(10, 14), slice(30, 35))


def test_bf16_close_to_fp32_and_nodata_identical(udf_code, slim_weights, cube):
    err = error_vs_fp32(udf_code, cube, {"weights": str(slim_weights)}, "bf16")
    assert 0 < err < 0.01  # really a different path, and a bounded error (reflectance)


def test_bf16_chunking_within_its_own_error(udf_code, slim_weights, slim_margin, cube):
    seams, own_error = chunking_vs_own_error(udf_code, cube, {"weights": str(slim_weights), "precision": "bf16"}, slim_margin)
    assert seams <= own_error + 1e-3


def test_auto_picks_a_supported_precision(udf_module, slim_weights):
    import torch

    from pathlib import Path

    _, precision, runtime = udf_module["choose_path"](Path(slim_weights).resolve(), "auto", "cpu")
    assert precision in ("fp32", "bf16")  # int8 is never picked by auto
    assert runtime == "torch" or (precision, runtime) == ("fp32", "ncnn")
    module, meta, device = udf_module["load_model"]({"weights": str(slim_weights), "precision": "auto"})
    x = torch.full((1, len(meta["bands"]), 16, 16), 1000.0)
    with torch.inference_mode():
        assert module(x).dtype == torch.float32  # radiometry in float32 on every path


def test_bf16_refuses_weights_without_the_cast(udf_module, tmp_path, slim_weights):
    import json

    import torch

    from s2sr.training.export import script
    from s2sr.udf import s2sr_udf

    class Old(torch.nn.Module):  # the pre-bf16 layout: no backbone.compute_dtype
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    meta = s2sr_udf.read_metadata(slim_weights)
    model = Old(torch.jit.load(str(slim_weights)))
    path = tmp_path / "old.pt"
    torch.jit.save(script(model), str(path), _extra_files={s2sr_udf.METADATA_FILE: json.dumps(meta)})
    with pytest.raises(ValueError, match="predates the bf16 path"):
        udf_module["load_model"]({"weights": str(path), "precision": "bf16"})


@pytest.mark.parametrize("speedup, offered", [(0.13, None), (2.0, (("fp32", "torch"), ("bf16", "torch")))])
def test_auto_screens_out_emulated_bf16(slim_weights, monkeypatch, speedup, offered):
    """Where one bf16 conv runs slower than FP32 (torch emulating bf16), auto does not load and
    time a whole bf16 model."""
    from pathlib import Path

    from s2sr.udf import s2sr_udf

    seen = {}

    def fake_auto(candidates, device, threads):
        seen["offered"] = tuple(c[:2] for c in candidates)
        return "fp32", "torch"

    monkeypatch.setattr(s2sr_udf, "bf16_conv_speedup", lambda threads: speedup)
    monkeypatch.setattr(s2sr_udf, "_auto_precision", fake_auto)
    # runtime torch: the bf16 screen alone (tests/test_ncnn.py covers the ncnn candidate)
    assert s2sr_udf.choose_path(Path(slim_weights).resolve(), "auto", "cpu", "torch")[1:] == ("fp32", "torch")
    assert seen.get("offered") == offered  # None: fp32 alone, nothing to time


def test_bf16_conv_screen_measures_a_positive_ratio():
    from s2sr.udf import s2sr_udf

    assert s2sr_udf.bf16_conv_speedup(1) > 0


def test_on_a_gpu_auto_times_fp32_against_bf16(slim_weights, monkeypatch):
    """A GPU (no GPU needed to choose): auto offers bf16 beside fp32 (tensor cores), a forced
    precision is taken as it is, and forward passes run cuDNN without TensorFloat-32."""
    import contextlib
    from pathlib import Path

    from s2sr.udf import s2sr_udf

    seen = {}

    def fake_auto(candidates, device, threads):
        seen["offered"], seen["device"] = tuple(c[:2] for c in candidates), device
        return "bf16", "torch"

    monkeypatch.setattr(s2sr_udf, "_auto_precision", fake_auto)
    path = Path(slim_weights).resolve()
    assert s2sr_udf.choose_path(path, "auto", "cuda")[1:] == ("bf16", "torch")
    assert seen == {"offered": (("fp32", "torch"), ("bf16", "torch")), "device": "cuda"}
    seen.clear()
    assert s2sr_udf.choose_path(path, "fp32", "cuda")[1:] == ("fp32", "torch") and not seen
    assert s2sr_udf.choose_path(path, "bf16", "cuda")[1:] == ("bf16", "torch") and not seen
    with pytest.raises(ValueError, match="CPU only"):
        s2sr_udf.choose_path(path, "fp32", "cuda", "ncnn")
    assert isinstance(s2sr_udf.gpu_flags("cpu"), contextlib.nullcontext)
    import torch

    before = torch.backends.cudnn.allow_tf32
    with s2sr_udf.gpu_flags("cuda"):  # cuDNN's flags are process settings: they can be read without a GPU
        assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.allow_tf32 == before
