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
from s2sr.udf import default_weights_path, s2sr_udf


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
        torch.testing.assert_close(module(x), model.eval()(x), rtol=1e-5, atol=1e-3)


def test_metadata_readable_without_torch_load(tmp_path):
    export(build_model("carn_1x3x64g4sw"), "carn_1x3x64g4sw", tmp_path / "m.pt")
    with zipfile.ZipFile(tmp_path / "m.pt") as archive:
        assert any(n.endswith("extra/" + s2sr_udf.METADATA_FILE) for n in archive.namelist())
    assert s2sr_udf.read_metadata(tmp_path / "m.pt")["architecture"] == "carn_1x3x64g4sw"


def test_packaged_default_weights():
    path = default_weights_path()
    meta = s2sr_udf.read_metadata(path)
    assert path.name == "carn_3x3x64g4sw.pt" and meta["architecture"] == "carn_3x3x64g4sw"
    assert meta["margin"] == 21 and meta["factor"] == 2 and meta["bands"] == list(BANDS)
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert manifest["default"] == "carn_3x3x64g4sw"
    assert manifest["models"]["carn_3x3x64g4sw"]["sha256"] == s2sr_udf._sha256(path)


def test_manifest_checksum_is_verified(tmp_path):
    folder = tmp_path / "w"
    folder.mkdir()
    export(build_model("carn_1x3x64g4sw"), "carn_1x3x64g4sw", folder / "carn_1x3x64g4sw.pt")
    write_manifest(folder, default="carn_1x3x64g4sw")
    s2sr_udf.load_model({"weights_dir": str(folder)})  # default from the manifest, checksum ok
    other = tmp_path / "other.pt"
    torch.manual_seed(5)
    export(build_model("carn_1x3x64g4sw"), "carn_1x3x64g4sw", other)
    shutil.copy(other, folder / "carn_1x3x64g4sw.pt")  # same format, different bytes
    with pytest.raises(ValueError, match="fails its checksum"):
        s2sr_udf.load_model({"weights_dir": str(folder)})
