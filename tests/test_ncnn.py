"""The ncnn runtime: the UDF converts the TorchScript backbone of float weights into an ncnn
network at load (Winograd 3 x 3 convolutions in float32) and must give the torch result within
the FP32 contract, seams included; a backbone it cannot convert, or a worker without ncnn,
falls back to torch under ``runtime: "auto"`` and is a clear error when ``"ncnn"`` is forced."""

import contextlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from s2sr import engine
from s2sr_testing import patch_engine
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2sr.deploy.neighborhood import apply_neighborhood
from s2sr.training.export import export, script
from s2sr.training.models import ARCHITECTURES, build_model_from_config
from s2sr_testing import chunking_vs_own_error, cube_with_gap, error_vs_fp32, make_cube, run_local

pytest.importorskip("ncnn")

TOL_REFLECTANCE = 1e-5  # the FP32 contract


@pytest.fixture(scope="module")
def cube():
    return cube_with_gap(46, 42, 5, 3, slice(12, 17), slice(20, 26))  # no-data crossing window borders below


def _export(tmp_path: Path, name: str, cfg, padding: str = "zeros", seed: int = 0, hard_constraint: bool = False) -> Path:
    torch.manual_seed(seed)
    model = build_model_from_config(cfg, hard_constraint=hard_constraint)
    with torch.no_grad():
        model.backbone.last_conv().weight.mul_(0.3)
    path = tmp_path / f"{name}.pt"
    export(model, name, path, {"trained": False, "note": "test weights"}, padding=padding)
    return path


@pytest.mark.parametrize("arch, cfg_changes, padding, hard_constraint", [
    ("carn_3x3x4g4sw", {"features": 4}, "zeros", False),
    ("carn_3x3x4g4sw", {"features": 4}, "reflect", False),
    ("carn_1x3x4g4", {"features": 4, "cascades": 1, "shared": False}, "zeros", False),
    ("carn_1x3x4g1sw", {"features": 4, "cascades": 1, "groups": 1}, "zeros", True),  # the hard constraint after ncnn
])
def test_backbone_converts_to_the_same_function(udf_module, tmp_path, arch, cfg_changes, padding, hard_constraint):
    base = ARCHITECTURES["carn_3x3x64g4sw"]
    path = _export(tmp_path, arch, replace(base, **cfg_changes), padding, hard_constraint=hard_constraint)
    ncnn_model, meta, _ = engine.load_model({"weights": str(path), "runtime": "ncnn", "precision": "fp32", "threads": 1})
    torch_model, _, _ = engine.load_model({"weights": str(path), "runtime": "torch", "precision": "fp32"})
    assert type(ncnn_model).__name__ == "NcnnModel"
    # unpadded convs where the weights pad inside their convs (zeros); reflection-padded ones pad
    assert (ncnn_model.shrink > 0) == (padding == "zeros") and ncnn_model.shrink <= 2 * meta["margin"]
    x = engine.texture(meta, "cpu", 40 + 2 * meta["margin"])
    with torch.inference_mode():
        a, b = ncnn_model(x), torch_model(x.contiguous(memory_format=torch.channels_last))
    n = 2 * x.shape[-1]
    assert a.shape == b.shape == (1, 10, n, n)
    # equal wherever the receptive field lies in the window (the constraint reaches further: the margin)
    s = ncnn_model.shrink if not hard_constraint else 2 * meta["margin"]
    inside = (..., slice(s, n - s), slice(s, n - s))
    assert float((a[inside] - b[inside]).abs().max()) / 10000.0 <= TOL_REFLECTANCE


def test_unpadded_network_leaves_the_bicubic_skip_outside(udf_module, slim_weights):
    """Nearer the window's edge than the receptive field (the overlap the UDF or the backend
    crops) the unpadded network computes nothing: the output there is the bicubic skip."""
    model, meta, _ = engine.load_model({"weights": str(slim_weights), "runtime": "ncnn", "precision": "fp32"})
    s = model.shrink
    assert s > 0
    x = engine.texture(meta, "cpu", 50)
    with torch.inference_mode():
        z = model.module.normalize(x)
        skip = model.module.denormalize(torch.nn.functional.interpolate(z, scale_factor=2.0, mode="bicubic", align_corners=False))
        y = model(x)
    ring = torch.ones_like(y, dtype=torch.bool)
    ring[..., s:-s, s:-s] = False
    assert float((y - skip)[ring].abs().max()) < 1e-2  # float rounding of the same skip, in DN
    assert float((y - skip)[~ring].abs().max()) > 1.0  # the network did compute inside
    tiny = engine.texture(meta, "cpu", s // 2)  # no pixel with its receptive field inside
    with torch.inference_mode():
        assert torch.isfinite(model(tiny)).all()


def test_udf_on_ncnn_equals_torch_with_identical_nodata(udf_code, slim_weights, cube):
    ctx = {"weights": str(slim_weights), "precision": "fp32"}
    on_ncnn = run_local(udf_code, cube, {**ctx, "runtime": "ncnn"}).values
    on_torch = run_local(udf_code, cube, {**ctx, "runtime": "torch"}).values
    assert np.array_equal(np.isnan(on_ncnn), np.isnan(on_torch)) and np.isnan(on_ncnn).any()
    assert np.nanmax(np.abs(on_ncnn - on_torch)) / 10000.0 <= TOL_REFLECTANCE


def test_dates_batched_equal_dates_one_by_one(udf_code, slim_weights):
    cube = make_cube(30, 26, nt=3, seed=8)
    ctx = {"weights": str(slim_weights), "runtime": "ncnn", "precision": "fp32"}
    one = run_local(udf_code, cube, ctx).values
    batched = run_local(udf_code, cube, {**ctx, "batch": 2}).values
    np.testing.assert_array_equal(batched, one)


@pytest.mark.parametrize("size", [14, 23])
def test_ncnn_chunking_is_seam_free(udf_code, slim_weights, slim_overlap, cube, size):
    ctx = {"weights": str(slim_weights), "runtime": "ncnn", "precision": "fp32"}
    whole = run_local(udf_code, cube, ctx).values
    chunked = apply_neighborhood(cube, lambda w: run_local(udf_code, w, {**ctx, "overlap": slim_overlap}),
                                 size=size, overlap=slim_overlap).values
    assert np.array_equal(np.isnan(chunked), np.isnan(whole))
    assert np.nanmax(np.abs(chunked - whole)) / 10000.0 <= TOL_REFLECTANCE


def test_row_strips_give_the_whole_window_result(udf_module, slim_weights, monkeypatch):
    """Large windows run in row strips with the margin as context: the same result, strips or not."""
    model, meta, _ = engine.load_model({"weights": str(slim_weights), "runtime": "ncnn", "precision": "fp32"})
    x = engine.texture(meta, "cpu", 130)
    with torch.inference_mode():
        whole = model(x)
        patch_engine(monkeypatch, "NCNN_STRIP_PIXELS", 130 * 72)  # 130 x 72 px per call: 3 strips
        assert len(engine.ncnn_runtime.strips(130, 130, meta["margin"])) == 3
        strips = model(x)
    assert float((strips - whole).abs().max()) / 10000.0 <= TOL_REFLECTANCE


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(1, 1200), w=st.integers(1, 1200), margin=st.integers(0, 40), limit=st.integers(1, 400_000))
def test_strips_tile_the_rows_with_their_margins(udf_module, monkeypatch, h, w, margin, limit):
    patch_engine(monkeypatch, "NCNN_STRIP_PIXELS", limit)
    parts = engine.ncnn_runtime.strips(h, w, margin)
    assert parts[0][2] == 0 and parts[-1][3] == h
    assert all(a[3] == b[2] for a, b in zip(parts, parts[1:]))  # kept rows tile [0, h) once
    assert len({stop - start for start, stop, _, _ in parts}) == 1  # one height: the pools fit every strip
    for start, stop, top, bottom in parts:
        assert 0 <= start <= top < bottom <= stop <= h
        assert (top == 0 or top - start >= margin) and (bottom == h or stop - bottom >= margin)
    if len(parts) > 1:
        assert (parts[0][1] - parts[0][0]) < h


@settings(max_examples=100, deadline=None)
@given(count=st.integers(1, 6), margin=st.integers(0, 30), extra=st.integers(0, 600))
def test_strips_of_a_given_count_tile_the_rows_with_their_margins(count, margin, extra):
    h = 2 * margin * count + count + extra  # room for count strips and their margins
    parts = engine.ncnn_runtime.strips(h, 512, margin, count)
    assert len(parts) == count and parts[0][2] == 0 and parts[-1][3] == h
    assert all(a[3] == b[2] for a, b in zip(parts, parts[1:]))
    assert len({stop - start for start, stop, _, _ in parts}) == 1
    for start, stop, top, bottom in parts:
        assert 0 <= start <= top < bottom <= stop <= h
        assert (top == 0 or top - start >= margin) and (bottom == h or stop - bottom >= margin)


def test_runtime_errors_are_clear(udf_module, slim_weights):
    path = Path(slim_weights).resolve()
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        engine.check_context({"runtime": "tensorrt"})
    with pytest.raises(ValueError, match="precision 'fp32', 'bf16' or 'int8_dynamic' only"):
        engine.choose_path(path, "int8", "cpu", "ncnn")
    with pytest.raises(ValueError, match="CPU only"):
        engine.choose_path(path, "fp32", "cuda", "ncnn")


def test_without_ncnn_auto_runs_torch_and_forcing_it_says_why(udf_module, slim_weights, monkeypatch):
    patch_engine(monkeypatch, "ncnn_available", lambda: False)
    path = Path(slim_weights).resolve()
    assert engine.choose_path(path, "fp32", "cpu", "auto")[1:] == ("fp32", "torch")
    with pytest.raises(ValueError, match="pip install ncnn"):
        engine.choose_path(path, "fp32", "cpu", "ncnn")


@dataclass(frozen=True)
class DenseCatConfig:
    bands: int = 10
    factor: int = 2


class DenseCat(torch.nn.Module):
    """The other operations the conversion knows: a concatenated list built by appends, a
    learned scalar, ReLU, explicit reflection padding (a dense block in miniature)."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = DenseCatConfig()
        self.first = torch.nn.Conv2d(10, 8, 3, padding=1)
        self.grow = torch.nn.Conv2d(8, 4, 3, padding=1, padding_mode="reflect")
        self.fuse = torch.nn.Conv2d(12, 40, 1)
        self.scale = torch.nn.Parameter(torch.tensor(0.2))
        self.shuffle = torch.nn.PixelShuffle(2)
        self.last = torch.nn.Conv2d(10, 10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.first(x)
        feats = [feat]
        feats.append(torch.relu(self.grow(feat)))
        up = self.shuffle(self.scale * self.fuse(torch.cat(feats, 1)))
        return self.last(torch.nn.functional.pad(up, [1, 1, 1, 1], mode="reflect"))

    def compute_dtype(self) -> torch.dtype:
        return self.first.weight.dtype


def test_concat_scalar_and_padding_convert(udf_module, tmp_path, monkeypatch):
    import s2sr.training.export as export_module
    from s2sr.training.models.receptive_field import ReceptiveField

    torch.manual_seed(1)
    model = build_model_from_config(replace(ARCHITECTURES["carn_3x3x64g4sw"], features=4, cascades=1))
    model.backbone = DenseCat()
    monkeypatch.setattr(export_module, "receptive_field", lambda m: ReceptiveField(2, 5, 3, 2))  # no rule for a test net
    path = tmp_path / "densecat.pt"
    export(model, "carn_1x3x4g4sw", path, {"trained": False})
    ncnn_model, meta, _ = engine.load_model({"weights": str(path), "runtime": "ncnn", "precision": "fp32"})
    torch_model, _, _ = engine.load_model({"weights": str(path), "runtime": "torch", "precision": "fp32"})
    x = engine.texture(meta, "cpu", 24)
    with torch.inference_mode():
        assert float((ncnn_model(x) - torch_model(x)).abs().max()) / 10000.0 <= TOL_REFLECTANCE


def test_unconvertible_backbone_falls_back_or_fails_clearly(udf_module, tmp_path, caplog):
    """ESRGAN (RRDBNet): TorchScript keeps F.interpolate's branches on the input's rank (its
    nearest upsampling), which the conversion does not resolve; ``auto`` runs it on torch."""
    torch.manual_seed(0)
    model = build_model_from_config(replace(ARCHITECTURES["esrgan_3x64x32"], features=8, growth=4, blocks=1))
    path = tmp_path / "esrgan.pt"
    export(model, "esrgan_3x64x32", path, {"trained": False})
    with pytest.raises(ValueError, match="runtime 'ncnn' cannot run esrgan.pt: operation prim::"):
        engine.load_model({"weights": str(path), "runtime": "ncnn", "precision": "fp32"})
    with caplog.at_level("WARNING", logger="s2sr.engine"):
        module, _, _ = engine.load_model({"weights": str(path), "precision": "fp32"})
    assert type(module).__name__ != "NcnnModel" and "cannot run esrgan.pt" in caplog.text


def test_a_wrong_conversion_is_refused(udf_module, slim_weights, monkeypatch):
    """The load-time check compares the ncnn network with TorchScript on a texture."""
    real = engine.ncnn_runtime._ncnn_ops

    def off_by_one_slope(graph, *options):  # a converter bug: the LeakyReLUs fused into the convs dropped
        return [(t, n, i, o, p.replace(" 9=2 -23310=1,", " 9=0 -23310=1,"), b) for t, n, i, o, p, b in real(graph, *options)]

    patch_engine(monkeypatch, "_ncnn_ops", off_by_one_slope)
    engine.ncnn_runtime.load_ncnn.cache_clear()
    try:
        with pytest.raises(ValueError, match="runtime 'ncnn' is off by"):
            engine.load_model({"weights": str(slim_weights), "runtime": "ncnn", "precision": "fp32", "threads": 3})
    finally:
        engine.ncnn_runtime.load_ncnn.cache_clear()


def test_auto_runtime_times_fp32_on_torch_against_ncnn(fresh_decisions, slim_weights):
    """fp32 with runtime auto: the two runtimes compute the same function within 1e-5, so the
    faster one is taken by a timing (once per worker: the decision is recorded)."""
    _, precision, runtime = engine.choose_path(Path(slim_weights).resolve(), "fp32", "cpu", "auto")
    assert (precision, runtime) in (("fp32", "torch"), ("fp32", "ncnn"))
    (record,) = fresh_decisions.decisions()
    assert "fp32 timed" in record["reason"] and "torch" in record["reason"] and "ncnn" in record["reason"]


def test_auto_times_unpadded_ncnn_on_a_window_of_the_same_work(fresh_decisions, slim_weights, monkeypatch):
    """An unpadded network computes shrinking layers: timed on the same small window as a padded
    one it would look faster than it is on a real window, so it gets the margin it drops."""
    sizes = {}
    real_min_time = engine.min_time

    def record(module, x, runs=2):
        sizes[type(module).__name__] = x.shape[-1]
        return real_min_time(module, x, runs=1)

    patch_engine(monkeypatch, "min_time", record)
    engine.choose_path(Path(slim_weights).resolve(), "fp32", "cpu", "auto")
    model, _, _ = engine.load_model({"weights": str(slim_weights), "runtime": "ncnn", "precision": "fp32"})
    torch_size = [n for name, n in sizes.items() if name != "NcnnModel"]
    assert model.shrink == 41 and torch_size == [128] and sizes["NcnnModel"] == 128 + 2 * 11


@pytest.mark.parametrize("precision, has_ncnn, expected", [
    ("int8_dynamic", True, "ncnn"),  # per-pixel scales: no chunking effect
    ("int8_dynamic", False, "torch"),
    ("bf16", True, "torch"),
    ("fp32", False, "torch"),
])
def test_an_asked_precision_gets_its_runtime_by_rule(fresh_decisions, slim_weights, monkeypatch, precision, has_ncnn, expected):
    """Only fp32's runtime is timed: the others' runtimes compute different roundings, which
    workers that timed differently would mix."""
    patch_engine(monkeypatch, "ncnn_available", lambda: has_ncnn)
    patch_engine(monkeypatch, "load", lambda *args: None)
    patch_engine(monkeypatch, "min_time", lambda *args: pytest.fail("timed"))
    assert engine.choose_path(Path(slim_weights).resolve(), precision, "cpu", "auto")[1:] == (precision, expected)


def test_concurrent_windows_share_one_network(udf_module, slim_weights):
    """The local engine runs windows on threads: one cached ncnn network, one extractor per call."""
    import threading

    model, meta, _ = engine.load_model({"weights": str(slim_weights), "runtime": "ncnn", "precision": "fp32"})
    inputs = [engine.texture(meta, "cpu", 48) * (1 + 0.1 * i) for i in range(4)]
    with torch.inference_mode():
        alone = [model(x) for x in inputs]
    together = [None] * len(inputs)

    def work(i):
        with torch.inference_mode():
            for _ in range(3):
                together[i] = model(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(a, b) for a, b in zip(alone, together))


def test_bf16_on_ncnn_close_to_fp32_with_identical_nodata(udf_code, udf_module, slim_weights, cube):
    ctx = {"weights": str(slim_weights), "runtime": "ncnn", "precision": "fp32"}
    model, _, _ = engine.load_model({**ctx, "precision": "bf16"})
    assert type(model).__name__ == "NcnnModel" and model.precision == "bf16"
    err = error_vs_fp32(udf_code, cube, ctx, "bf16")
    assert 0 < err < 0.01  # really bfloat16 (not the fp32 network), and a bounded error (reflectance)


def test_bf16_on_ncnn_chunking_within_its_own_error(udf_code, slim_weights, slim_overlap, cube):
    ctx = {"weights": str(slim_weights), "runtime": "ncnn", "precision": "bf16"}
    seams, own_error = chunking_vs_own_error(udf_code, cube, ctx, slim_overlap)
    assert seams <= own_error + 1e-3


@pytest.mark.parametrize("precision, bound", [("bf16", 1e-6), ("int8_dynamic", 1e-7)])
def test_a_broken_reduced_precision_network_is_refused(udf_module, slim_weights, monkeypatch, precision, bound):
    """bf16 and int8 ncnn networks are checked against TorchScript float32 too, each with its own
    bound (here tighter than bfloat16 or int8 can be)."""
    patch_engine(monkeypatch, "NCNN_REDUCED", {**engine.ncnn_runtime.NCNN_REDUCED, precision: bound})
    engine.ncnn_runtime.load_ncnn.cache_clear()
    try:
        with pytest.raises(ValueError, match=f"runtime 'ncnn' in {precision} is off by"):
            engine.load_model({"weights": str(slim_weights), "runtime": "ncnn", "precision": precision, "threads": 3})
    finally:
        engine.ncnn_runtime.load_ncnn.cache_clear()


def _run_network(network, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """An ncnn network (``ncnn_network``'s) on ``[C, H, W]`` float32, in float32 storage."""
    import ncnn

    net = ncnn.Net()
    net.opt.num_threads = threads
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    net.opt.use_bf16_storage = False
    assert net.load_param_mem(network.param) == 0
    net.load_model_mem(network.weights)
    extractor = net.create_extractor()
    x = np.ascontiguousarray(x)  # referenced until extract returns: the Mat is a view of it
    extractor.input("in", ncnn.Mat(x))
    status, y = extractor.extract("out")
    assert status == 0
    return np.array(y)


def _pointwise(cin: int = 24, cout: int = 16, relu: bool = False):
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(cin, cout, 1)
    return script(torch.nn.Sequential(conv, torch.nn.ReLU()) if relu else conv).eval(), conv


def _per_pixel_int8(conv, x: np.ndarray) -> np.ndarray:
    """What ncnn's int8 Gemm computes: each pixel's channels scaled by 127 / their absolute max,
    the weights by 127 / the tensor's, both rounded half away from zero, exact integer sums."""
    def q(v, scale):
        return np.clip(np.trunc(v * scale + np.copysign(0.5, v)), -127, 127)

    w = conv.weight.detach().double().numpy()[:, :, 0, 0]
    cols = x.reshape(x.shape[0], -1).astype(np.float64)
    amax = np.abs(cols).max(0)
    sx = np.where(amax > 0, 127.0 / np.where(amax > 0, amax, 1), 1.0)
    sw = 127.0 / np.abs(w).max()
    y = (q(w, sw) @ q(cols, sx)) / (sw * sx) + conv.bias.detach().double().numpy()[:, None]
    return y.reshape(w.shape[0], *x.shape[1:])


def test_pointwise_convs_are_products_on_views_of_the_tensor(udf_module):
    """A 1 x 1 conv runs as ncnn's Gemm between two reshapes that share the tensor's memory:
    the Convolution layer's function, in float32; one with an activation fused stays a conv."""
    module, conv = _pointwise()
    network = engine.ncnn_network(module)
    assert "Gemm " in network.param and "Convolution " not in network.param
    x = np.random.default_rng(0).standard_normal((24, 7, 9)).astype(np.float32)
    with torch.no_grad():
        want = conv(torch.from_numpy(x)[None])[0].numpy()
    got = _run_network(network, x)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    relu, _ = _pointwise(relu=True)
    assert "Gemm " not in engine.ncnn_network(relu).param


def test_int8_pointwise_products_scale_each_pixel_by_itself(udf_module):
    """int8 1 x 1 products: ncnn's result is the per-pixel quantization's (not float's); a
    pixel's output depends on its own values only (no chunking changes it beyond float32
    rounding), and a pixel 1000x brighter than the rest is not clipped, nor does it coarsen
    its neighbours."""
    module, conv = _pointwise()
    network = engine.ncnn_network(module, int8_pointwise=True)
    assert " 18=2" in network.param
    x = np.random.default_rng(1).standard_normal((24, 7, 9)).astype(np.float32)
    got, want = _run_network(network, x), _per_pixel_int8(conv, x)
    with torch.no_grad():
        exact = conv(torch.from_numpy(x)[None])[0].numpy()
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-5 * scale
    assert np.abs(got - exact).max() > 1e-3 * scale  # really int8
    ulp = 1e-6 * scale  # the same integers: only the float rescaling may round differently in another kernel tile
    np.testing.assert_allclose(_run_network(network, x[:, :3, :5]), got[:, :3, :5], rtol=0, atol=ulp)
    np.testing.assert_allclose(_run_network(network, x, threads=2), got, rtol=0, atol=ulp)
    bright = x.copy()
    bright[:, 4, 4] *= 1000
    lit = _run_network(network, bright)
    with torch.no_grad():
        exact_lit = conv(torch.from_numpy(bright)[None])[0].numpy()
    assert np.abs(lit[:, 4, 4] - exact_lit[:, 4, 4]).max() <= 0.02 * np.abs(exact_lit[:, 4, 4]).max()
    others = np.ones(x.shape[1:], bool)
    others[4, 4] = False
    np.testing.assert_allclose(lit[:, others], got[:, others], rtol=0, atol=ulp)


def test_int8_on_ncnn_close_to_fp32_with_identical_nodata(udf_code, udf_module, slim_weights, cube):
    ctx = {"weights": str(slim_weights), "runtime": "ncnn"}
    model, _, _ = engine.load_model({**ctx, "precision": "int8_dynamic"})
    assert type(model).__name__ == "NcnnModel" and model.precision == "int8_dynamic"
    err = error_vs_fp32(udf_code, cube, ctx, "int8_dynamic")
    assert 0 < err < 0.01  # really int8 (not the fp32 network), and a bounded error (reflectance)


def test_int8_on_ncnn_chunking_within_its_own_error(udf_code, slim_weights, slim_overlap, cube):
    """The reduced-precision contract (``auto`` may pick this path): per-pixel scales do not
    follow the window, so chunkings differ by no more than the path's own error."""
    ctx = {"weights": str(slim_weights), "runtime": "ncnn", "precision": "int8_dynamic"}
    seams, own_error = chunking_vs_own_error(udf_code, cube, ctx, slim_overlap)
    assert seams <= own_error


def test_released_pools_give_the_same_result(udf_module, slim_weights):
    model, meta, _ = engine.load_model({"weights": str(slim_weights), "runtime": "ncnn", "precision": "fp32"})
    x = engine.texture(meta, "cpu", 40)
    with torch.inference_mode():
        before = model(x)
        model.release()
        assert torch.equal(model(x), before)


def test_grouped_convs_split_per_group_are_the_same_function(udf_module, slim_weights):
    """bf16 networks run each group's conv as its own layer (ncnn's grouped conv has no bf16
    kernels): in float32 the split network must equal TorchScript as the grouped one does."""
    module, meta = engine.torch_runtime.load_torchscript(str(Path(slim_weights).resolve()), *engine.stat_key(Path(slim_weights).resolve()), "cpu")
    network = engine.ncnn_network(module.backbone, split_groups=True)
    # 9 units of two grouped convs, 4 groups: the second reads the first's groups as they are,
    # so one set of crops (the unit's input) and one concatenation (for its 1 x 1 conv) per unit
    assert "ConvolutionDepthWise" not in network.param
    assert (network.param.count("\nCrop "), network.param.count("\nConcat ")) == (9 * 4, 9)
    split = engine.NcnnModel(module, network, meta, 1)
    x = engine.texture(meta, "cpu", 40)
    with torch.inference_mode():
        assert float((split(x) - module(x)).abs().max()) / 10000.0 <= TOL_REFLECTANCE


def test_split_groups_stay_apart_only_where_nothing_reads_them_whole(udf_module):
    """A split grouped conv feeding another with the same groups: the second reads the first's
    per-group outputs; where the concatenation is also read whole, or cropped across the
    groups, the network keeps it."""
    w = torch.randn(8, 2, 3, 3)
    params = "0=8 1=3 11=3 2=1 12=1 3=1 13=1 4=1 14=1 5=0 6=144 7=4"
    first = engine.ncnn_runtime._conv_per_group("g1", "x", "a", w, None, 4, params)
    second = engine.ncnn_runtime._conv_per_group("g2", "a", "b", w, None, 4, params)
    ops = engine.ncnn_runtime._keep_groups_apart(first + second, "b")
    assert [op[0] for op in ops].count("Crop") == 4 and [op[0] for op in ops].count("Concat") == 1
    g2 = [op for op in ops if op[1].startswith("g2_g")]
    assert [op[2] for op in g2] == [[("g1", "conv", k)] for k in range(4)]
    whole = ("BinaryOp", "sum", ["a", "b"], "c", "0=0", b"")  # a read whole too: unchanged
    assert engine.ncnn_runtime._keep_groups_apart(first + second + [whole], "c") == first + second + [whole]
    other = engine.ncnn_runtime._conv_per_group("g3", "a", "b", torch.randn(8, 4, 3, 3), None, 2, params.replace("7=4", "7=2"))
    assert engine.ncnn_runtime._keep_groups_apart(first + other, "b") == first + other  # 2 groups across the 4


def test_sums_are_reassociated_so_that_a_units_input_dies_early(udf_module):
    """``a + (c + d)`` with ``c + d`` read once becomes ``(a + c) + d``, ``d`` the newer operand;
    a sum read twice stays as it is."""
    conv = ("Convolution", "op1", ["x"], "d", "", b"w")
    inner = ("BinaryOp", "op2", ["c", "d"], "t", "0=0", b"")
    outer = ("BinaryOp", "op3", ["a", "t"], "out", "0=0", b"")
    produced = [("Input", "op0", [], "a", "", b""), ("Input", "opc", [], "c", "", b"")]
    ops = engine.ncnn_runtime._reassociate_sums(produced + [conv, inner, outer], "out")
    assert [(op[1], op[2], op[3]) for op in ops[2:]] == [("op1", ["x"], "d"), ("op2", ["a", "c"], "t"), ("op3", ["t", "d"], "out")]
    reader = ("BinaryOp", "op4", ["t", "a"], "more", "0=0", b"")  # t read twice: unchanged
    kept = produced + [conv, inner, outer, reader]
    assert engine.ncnn_runtime._reassociate_sums(kept, "more") == kept
    chained = ("BinaryOp", "op5", ["c", "out"], "top", "0=0", b"")  # its inner sum was rewritten: left alone
    ops = engine.ncnn_runtime._reassociate_sums(produced + [conv, inner, outer, chained], "top")
    assert [(op[1], op[2]) for op in ops[3:]] == [("op2", ["a", "c"]), ("op3", ["t", "d"]), ("op5", ["c", "out"])]


@settings(max_examples=200, deadline=None)
@given(h=st.integers(1, 1200), w=st.integers(1, 1200), margin=st.integers(0, 40), workers=st.integers(1, 4))
def test_tiles_cover_the_window_with_their_margins(h, w, margin, workers):
    """Tiles for networks that run at once: a grid of one tile size, kept rows and columns each
    ``margin`` inside their tile (or at the window's edge), covering the window once."""
    plan = engine.ncnn_runtime.tiles(h, w, margin, workers)
    rows = sorted({r for r, _ in plan})
    cols = sorted({c for _, c in plan})
    assert sorted(plan) == sorted((r, c) for r in rows for c in cols)  # a grid
    assert len({(r[1] - r[0], c[1] - c[0]) for r, c in plan}) == 1  # one size: the pools fit every tile
    for spans, n in ((rows, h), (cols, w)):
        assert spans[0][2] == 0 and spans[-1][3] == n
        assert all(a[3] == b[2] for a, b in zip(spans, spans[1:]))  # kept rows / columns tile [0, n) once
        for start, stop, keep0, keep1 in spans:
            assert 0 <= start <= keep0 < keep1 <= stop <= n
            assert (keep0 == 0 or keep0 - start >= margin) and (keep1 == n or stop - keep1 >= margin)
    if workers == 1:
        assert cols == [(0, w, 0, w)] and rows == engine.ncnn_runtime.strips(h, w, margin)


def test_tiles_of_the_udp_window():
    """The UDP's 512 px window (margin 21) on two networks: 3 x 2 tiles of 199 x 277 px, three
    rounds of two (docs/speed_notes.md, *Tiles on 1-thread networks*)."""
    plan = engine.ncnn_runtime.tiles(512, 512, 21, 2)
    assert len(plan) == 6 and {(r[1] - r[0], c[1] - c[0]) for r, c in plan} == {(199, 277)}


def _ncnn_model(weights: Path, layout: str, threads: int = 2, precision: str = "fp32"):
    path = Path(weights).resolve()
    return engine.ncnn_runtime.load_ncnn(str(path), *engine.stat_key(path), threads, precision, layout)[0]


@pytest.mark.parametrize("precision", ["fp32", "int8_dynamic"])
def test_tiles_on_one_thread_networks_give_the_strips_result(udf_module, slim_weights, monkeypatch, precision):
    """``tiles``: one 1-thread network per thread, each taking the next tile: the strips' result."""
    strips, tiled = _ncnn_model(slim_weights, "strips", precision=precision), _ncnn_model(slim_weights, "tiles", precision=precision)
    assert len(strips.nets) == 1 and len(tiled.nets) == 2
    x = engine.texture(engine.read_metadata(slim_weights), "cpu", 130)[:, :, :, :110]
    patch_engine(monkeypatch, "NCNN_TILE_PIXELS", 60 * 50)  # several tiles per network
    assert len(engine.ncnn_runtime.tiles(130, 110, strips.margin, 2)) >= 6
    used = set()
    run = tiled._run
    monkeypatch.setattr(tiled, "_run", lambda part, worker=0: used.add(worker) or run(part, worker))
    with torch.inference_mode():
        a, b, exact = strips(x), tiled(x), _ncnn_model(slim_weights, "strips")(x)
    assert used == {0, 1}  # both networks ran tiles
    # fp32: the FP32 contract; int8_dynamic: within the path's own error (its chunking contract)
    bound = TOL_REFLECTANCE if precision == "fp32" else float((a - exact).abs().max()) / 10000.0
    assert float((a - b).abs().max()) / 10000.0 <= bound


def test_a_failing_tile_fails_the_window(udf_module, slim_weights, monkeypatch):
    tiled = _ncnn_model(slim_weights, "tiles")

    def fail(part, worker=0):
        raise RuntimeError(f"ncnn failed on a {part.shape} input (status -100)")

    monkeypatch.setattr(tiled, "_run", fail)
    with pytest.raises(RuntimeError, match="ncnn failed"), torch.inference_mode():
        tiled(engine.texture(engine.read_metadata(slim_weights), "cpu", 96))


@contextlib.contextmanager
def _cpu_table(monkeypatch, tmp_path, entry):
    """This CPU's table entry ``entry`` (fp32 on ncnn, plus its keys) in force inside the block."""
    precision = engine.precision
    cpu = precision.cpu_signature()
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"cpus": [{"name": "this CPU", "vendor": cpu["vendor"], "family": cpu["family"],
                                           "flags": {}, "precision": "fp32", "runtime": "ncnn", **entry}]}))
    monkeypatch.setattr(precision, "AUTO_TABLE", table)
    precision._table_layout.cache_clear()
    try:
        yield
    finally:
        precision._table_layout.cache_clear()


def test_layout_from_the_environment_then_the_cpu_table(monkeypatch, tmp_path):
    precision = engine.precision
    monkeypatch.setenv(precision.LAYOUT_ENV, "tiles")
    assert precision.ncnn_layout() == "tiles"
    monkeypatch.setenv(precision.LAYOUT_ENV, "columns")
    with pytest.raises(ValueError, match="S2SR_NCNN_LAYOUT='columns': use one of strips, tiles"):
        precision.ncnn_layout()
    monkeypatch.delenv(precision.LAYOUT_ENV)
    per_net = {"ncnn_layout": {"carn_3x3x64g4sw": "tiles"}}  # one layout per architecture
    for entry, arch, expected in (({"ncnn_layout": "tiles"}, None, "tiles"), ({}, "carn_3x3x64g4sw", "strips"),
                                  (per_net, "carn_3x3x64g4sw", "tiles"), (per_net, "carn_2x3x64g4sw", "strips"),
                                  (per_net, None, "strips")):
        with _cpu_table(monkeypatch, tmp_path, entry):
            assert precision.ncnn_layout(arch) == expected


def test_the_table_picks_the_layout_by_the_weights_architecture(monkeypatch, tmp_path, slim_weights):
    """What loads: the table's layout for the weights' own architecture (2 threads: two 1-thread
    networks for tiles), strips for another architecture; the committed table names real ones."""
    precision = engine.precision
    monkeypatch.delenv(precision.LAYOUT_ENV, raising=False)
    arch = engine.read_metadata(slim_weights)["architecture"]
    shipped = {engine.read_metadata(p)["architecture"] for p in engine.package_weights_dir().glob("*.pt")}
    for entry in json.loads(precision.AUTO_TABLE.read_text())["cpus"]:
        layouts = entry.get("ncnn_layout", "strips")
        assert (set(layouts.values()) if isinstance(layouts, dict) else {layouts}) <= set(precision.LAYOUTS)
        assert not isinstance(layouts, dict) or set(layouts) <= shipped, entry["name"]
    size, mtime = engine.stat_key(slim_weights)
    for layout_of, expected in (({arch: "tiles"}, "tiles"), ({"another_net": "tiles"}, "strips")):
        with _cpu_table(monkeypatch, tmp_path, {"ncnn_layout": layout_of}):
            model, _ = precision.load(str(slim_weights), size, mtime, "cpu", "fp32", "ncnn", 2)
            assert model.layout == expected
