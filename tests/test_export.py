"""Weights that describe themselves: metadata inside the TorchScript archive, checked on load."""

import json
import shutil
import zipfile

import pytest
import torch

import s2sr
from s2sr.training.bands import BANDS
from s2sr.training.export import export, load, write_manifest
from s2sr.training.models import build_model
from s2sr import engine
from s2sr.udf import default_weights_path


def test_metadata_roundtrip(tmp_path):
    torch.manual_seed(1)
    model = build_model("carn_1x3x64g4sw")
    meta = export(model, "carn_1x3x64g4sw", tmp_path / "m.pt", {"trained": False, "steps": 0})
    module, loaded = load(tmp_path / "m.pt")
    assert loaded == json.loads(json.dumps(meta))
    for key in ("architecture", "bands", "factor", "margin", "input_scaling", "nodata", "training", "package_version"):
        assert key in loaded
    assert loaded["bands"] == list(BANDS) and loaded["factor"] == 2 and loaded["margin"] == 9
    assert loaded["package_version"] == s2sr.__version__
    x = torch.rand(1, 10, 16, 16) * 3000
    with torch.no_grad():
        torch.testing.assert_close(module(x), model.eval()(x), rtol=1e-5, atol=1e-2)  # DN: 1e-6 reflectance


def test_metadata_readable_without_torch_load(tmp_path):
    export(build_model("carn_1x3x64g4sw"), "carn_1x3x64g4sw", tmp_path / "m.pt")
    with zipfile.ZipFile(tmp_path / "m.pt") as archive:
        assert any(n.endswith("extra/" + engine.METADATA_FILE) for n in archive.namelist())
    assert engine.read_metadata(tmp_path / "m.pt")["architecture"] == "carn_1x3x64g4sw"


def test_packaged_default_weights():
    path = default_weights_path()
    meta = engine.read_metadata(path)
    assert path.name == "carn_3x3x64g4sw.pt" and meta["architecture"] == "carn_3x3x64g4sw"
    assert meta["margin"] == 21 and meta["factor"] == 2 and meta["bands"] == list(BANDS)
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert manifest["default"] == "carn_3x3x64g4sw"
    assert manifest["models"]["carn_3x3x64g4sw"]["sha256"] == engine.sha256_file(path)


def test_manifest_checksum_is_verified(tmp_path):
    folder = tmp_path / "w"
    folder.mkdir()
    export(build_model("carn_1x3x64g4sw"), "carn_1x3x64g4sw", folder / "carn_1x3x64g4sw.pt")
    write_manifest(folder, default="carn_1x3x64g4sw")
    engine.load_model({"weights_dir": str(folder)})  # default from the manifest, checksum ok
    other = tmp_path / "other.pt"
    torch.manual_seed(5)
    export(build_model("carn_1x3x64g4sw"), "carn_1x3x64g4sw", other)
    shutil.copy(other, folder / "carn_1x3x64g4sw.pt")  # same format, different bytes
    with pytest.raises(ValueError, match="fails its checksum"):
        engine.load_model({"weights_dir": str(folder)})


def _archive_dir(folder, slim_weights, name="carn_3x3x64g4sw"):
    folder.mkdir(parents=True)
    shutil.copy(slim_weights, folder / f"{name}.pt")
    write_manifest(folder, default=name)
    return folder


def test_empty_context_prefers_the_dependency_archive_folder(tmp_path, monkeypatch, slim_weights):
    """On a backend, udf-dependency-archives unpacks to ./s2sr_weights: used before the package's copy."""
    _archive_dir(tmp_path / "s2sr_weights", slim_weights)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("S2SR_WEIGHTS_DIR", raising=False)
    assert engine.resolve_weights({}) == tmp_path / "s2sr_weights" / "carn_3x3x64g4sw.pt"
    _, meta, _ = engine.load_model({})
    assert meta["architecture"].endswith("_test")  # the slim test weights, not the packaged ones


def test_env_and_context_folders_come_first(tmp_path, monkeypatch, slim_weights):
    env = _archive_dir(tmp_path / "env", slim_weights, "mine")
    monkeypatch.setenv("S2SR_WEIGHTS_DIR", str(env))
    assert engine.resolve_weights({"model": "mine"}) == env / "mine.pt"
    assert engine.resolve_weights({}) == env / "mine.pt"  # the manifest's default
    ctx_dir = _archive_dir(tmp_path / "ctx", slim_weights, "mine")
    assert engine.resolve_weights({"model": "mine", "weights_dir": str(ctx_dir)}) == ctx_dir / "mine.pt"


def test_without_archive_the_installed_package_is_used(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("S2SR_WEIGHTS_DIR", raising=False)
    from s2sr.udf import default_weights_dir

    assert engine.resolve_weights({}) == default_weights_dir() / "carn_3x3x64g4sw.pt"
    assert engine.package_weights_dir() == default_weights_dir()  # found without importing s2sr


def test_zero_padding_export_equals_reflect_where_the_udf_keeps_pixels(tmp_path, udf_code):
    """Exported with zero padding (faster: no pad copy per conv), the UDF's output is the same:
    the UDF always feeds margin >= receptive field of context."""
    import numpy as np

    from s2sr.training.export import with_padding
    from s2sr_testing import make_cube, run_local

    torch.manual_seed(3)
    model = build_model("carn_1x3x64g4sw").eval()
    with torch.no_grad():
        model.backbone.tail.weight.normal_(0, 0.02)  # a trunk that really contributes
    export(model, "carn_1x3x64g4sw", tmp_path / "reflect.pt")
    meta = export(model, "carn_1x3x64g4sw", tmp_path / "zeros.pt", padding="zeros")
    assert meta["padding"]["mode"] == "zeros"
    cube = make_cube(30, 26, seed=4)
    a = run_local(udf_code, cube, {"weights": str(tmp_path / "reflect.pt"), "precision": "fp32"}).values
    b = run_local(udf_code, cube, {"weights": str(tmp_path / "zeros.pt"), "precision": "fp32"}).values
    assert np.nanmax(np.abs(a - b)) / 10000.0 < 1e-5
    # the eager nets differ only within the margin of the border
    m = meta["margin"]
    x = torch.rand(1, 10, 40, 40) * 3000
    with torch.no_grad():
        ya, yb = model(x), with_padding(model, "zeros")(x)
    assert not torch.allclose(ya, yb)
    torch.testing.assert_close(ya[..., 2 * m:-2 * m, 2 * m:-2 * m], yb[..., 2 * m:-2 * m, 2 * m:-2 * m], rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="unknown padding 'circular'"):
        with_padding(model, "circular")


def test_fine_tuned_weights_name_their_warm_start(tmp_path):
    from s2sr.training.export import training_summary

    start = tmp_path / "start.pt"
    start.write_bytes(b"weights")
    state = {"config": {"init_from": str(start)}, "step": 1500, "summary": {"trained": True, "steps": 1500, "init_from": str(start)}}
    s = training_summary(state)
    assert s["init_from"] == {"path": str(start), "steps_here": 1500, "sha256": engine.sha256_file(start)}
    assert training_summary({"config": {"init_from": ""}, "summary": {"steps": 3}}) == {"steps": 3}  # from scratch
    robust = training_summary({"config": {"augment": True, "haze_range": [0.0, 1.1], "snow_p": 0.2, "lr": 1e-4},
                               "summary": {"steps": 3}})
    assert robust["augment"] == {"haze_range": [0.0, 1.1], "snow_p": 0.2}  # the degradations, not the optimiser
