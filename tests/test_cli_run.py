"""``s2sr run``: with no arguments it writes the SR, the bicubic product and a preview of the
sample scene on the right 5 m grid; bad input gives one clear line, a non-zero exit status and
no output folder.  Also ``s2sr evaluate`` forwarding and the example script."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from s2sr import cli
from s2sr.deploy import local
from s2sr.training.bands import BANDS
from s2sr.training.degradation import cubic_upsample

REPO = Path(__file__).resolve().parents[1]
X0, Y0 = 437020.0, 4178180.0  # the sample's upper-left corner (EPSG:32618)
SMALL_BBOX = ["437400", "4176800", "437800", "4177200"]  # 40 x 40 px of the sample, EPSG:32618


@pytest.fixture(scope="module")
def slim_dir(slim_weights, tmp_path_factory):
    """Slim weights under the default model's name, found by the UDF via $S2SR_WEIGHTS_DIR."""
    folder = tmp_path_factory.mktemp("slim_default")
    shutil.copy(slim_weights, folder / "carn_3x3x64g4sw.pt")
    return folder


@pytest.fixture
def workdir(tmp_path, slim_dir, monkeypatch):
    monkeypatch.setenv("S2SR_WEIGHTS_DIR", str(slim_dir))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _merged_sample():
    """The sample's ten bands on the 10 m grid, 20 m bands by the GDAL-exact cubic (x2)."""
    p10, p20 = local.sample_paths()
    with rasterio.open(p10) as a, rasterio.open(p20) as b:
        b10, b20 = a.read().astype(np.float32), b.read().astype(np.float32)
    return np.concatenate([b10, cubic_upsample(torch.from_numpy(b20)[None], 2)[0].numpy()])


def test_run_without_arguments_writes_three_products(workdir, capsys):
    assert cli.main(["run"]) == 0
    out = workdir / "s2sr_output"
    assert sorted(p.name for p in out.iterdir()) == ["bicubic_5m.tif", "preview.png", "s2sr_run.json", "sr_5m.tif"]
    assert not [p for p in workdir.iterdir() if p.name.startswith(".")], "temporary folders left behind"
    products = {}
    for name in ("sr_5m.tif", "bicubic_5m.tif"):
        with rasterio.open(out / name) as src:
            assert (src.count, src.width, src.height, src.dtypes[0]) == (10, 512, 512, "float32")
            assert src.crs.to_epsg() == 32618
            assert src.transform == rasterio.Affine(5, 0, X0, 0, -5, Y0)  # 5 m cells on the 10 m edges
            assert src.descriptions == tuple(BANDS)
            products[name] = src.read()
        assert np.isfinite(products[name]).all() and 500 < np.median(products[name]) < 5000
    # the comparison product is plain cubic (GDAL's, x2) of the same 10 m cube
    bicubic = cubic_upsample(torch.from_numpy(_merged_sample())[None], 2)[0].numpy()
    assert np.max(np.abs(products["bicubic_5m.tif"] - bicubic)) < 0.05
    assert np.max(np.abs(products["sr_5m.tif"] - bicubic)) > 1.0  # the SR is another product
    with Image.open(out / "preview.png") as png:
        assert png.size[0] > 2 * png.size[1] * 0.6 and png.mode in ("RGB", "RGBA")
    record = json.loads((out / "s2sr_run.json").read_text())
    assert record["arguments"]["product"] == "SENTINEL2_L1C" and record["model"] == "carn_3x3x64g4sw"
    assert record["stats"]["apply_neighborhood"][0]["windows"] == 1  # the 256 px sample fits one 512 px window
    assert "Udf.scala" in record["executor"]  # the backend's Python-Jep path
    (auto,) = record["auto"]  # the run's one auto decision, recorded with what it depends on
    assert auto["precision"] in ("fp32", "bf16", "int8_dynamic") and auto["cpu"]["vendor"] and auto["weights_sha256"]
    assert "wrote" in capsys.readouterr().err


def test_run_with_bbox_into_existing_output(workdir, capsys):
    out = workdir / "res"
    out.mkdir()
    (out / cli.RUN_FILE).write_text("{}")  # an earlier s2sr output: replaced
    (out / "old.tif").write_text("stale")
    argv = ["run", "--bbox", *SMALL_BBOX, "--bbox-crs", "EPSG:32618", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0
    assert not (out / "old.tif").exists()
    with rasterio.open(out / "sr_5m.tif") as src:  # what the backend returns: float32, NaN no-data
        assert (src.width, src.height, src.dtypes[0]) == (80, 80, "float32") and np.isnan(src.nodata)
        assert src.transform == rasterio.Affine(5, 0, 437400, 0, -5, 4177200)
        assert np.isfinite(src.read()).all()
    # the UDP has no output_dtype (the executor takes float32 only): nor has s2sr run
    with pytest.raises(SystemExit):
        cli.main(["run", "--output-dtype", "int16", "--out", str(workdir / "x")])
    assert "unrecognized arguments: --output-dtype" in capsys.readouterr().err


def _tif(path, count, names=None):
    with rasterio.open(local.sample_paths()[0]) as src:
        profile = {**src.profile, "count": count}
        data = np.concatenate([src.read()] * 3)[:count]
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if names:
            dst.descriptions = tuple(names)
    return path


@pytest.mark.parametrize("extra, message", [
    (["--model", "no_such_model"], "model 'no_such_model' is not one of"),
    (["--bbox", "10.0", "45.0", "10.1", "45.1"], "does not intersect collection"),
    (["--temporal", "2020-01-01", "2020-02-01"], "holds no date"),
    (["--input", "{tmp}/four.tif"], "the input lacks bands"),
    (["--input", "{tmp}/missing.tif"], "does not exist"),
    (["--input-10m", "{tmp}/four.tif", "--input-20m", "{tmp}/six.tif", "--date", "yesterday"], "cannot read the date"),
    (["--bbox", "435730", "4176900", "438290", "4179460"], "is not in degrees (EPSG:4326, the default); for metres give their CRS, e.g. --bbox-crs"),
    (["--bbox", "-75.7", "37.7", "-75.8", "37.8"], "W < E and S < N"),
])
def test_bad_input_exits_nonzero_and_leaves_nothing(workdir, capsys, extra, message):
    _tif(workdir / "four.tif", 4, ["B02", "B03", "B04", "B08"])
    _tif(workdir / "six.tif", 6, None)
    argv = ["run", "--quiet", "--out", str(workdir / "out")] + [a.format(tmp=workdir) for a in extra]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("s2sr run: error: ") and message in err and "Traceback" not in err
    assert sorted(p.name for p in workdir.iterdir()) == ["four.tif", "six.tif"]


def test_separate_10m_and_20m_inputs(workdir):
    """A user's own pair of files, registered as SENTINEL2_L2A: same result as the sample run."""
    p10, p20 = local.sample_paths()
    argv = ["run", "--quiet", "--input-10m", str(p10), "--input-20m", str(p20), "--bbox", *SMALL_BBOX,
            "--bbox-crs", "32618", "--out", "mine"]
    assert cli.main(argv) == 0
    assert json.loads((workdir / "mine" / cli.RUN_FILE).read_text())["arguments"]["product"] == "SENTINEL2_L2A"


def test_refuses_to_replace_a_foreign_folder(workdir, capsys):
    (workdir / "docs").mkdir()
    (workdir / "docs" / "keep.txt").write_text("mine")
    assert cli.main(["run", "--out", "docs"]) == 1
    assert "not an s2sr output folder" in capsys.readouterr().err
    assert [p.name for p in (workdir / "docs").iterdir()] == ["keep.txt"]


def test_usage_errors(capsys):
    assert cli.main([]) == 2
    assert cli.main(["frobnicate"]) == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--input", "a.tif", "--input-10m", "b.tif"])
    assert exc.value.code == 2


def test_evaluate_is_forwarded(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["evaluate", "--help"])
    assert exc.value.code == 0 and "s2sr evaluate" in capsys.readouterr().out


def test_module_entry_point():
    done = subprocess.run([sys.executable, "-m", "s2sr.cli", "run", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--bbox" in done.stdout and "--scheduler" in done.stdout


def test_example_script_runs(workdir, capsys):
    spec = importlib.util.spec_from_file_location("run_local_example", REPO / "examples" / "run_local.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    path = example.main(["--out", str(workdir / "example")])
    with rasterio.open(path) as src:
        assert (src.count, src.res, src.crs.to_epsg()) == (10, (5.0, 5.0), 32618)
        assert np.isfinite(src.read()).all()
    assert "windows: 1" in capsys.readouterr().out


def test_an_unusable_out_fails_in_one_line_before_computing(workdir, capsys):
    (workdir / "afile").write_text("x")
    for out, message in ((workdir / "afile" / "sub", "which is a file, not a folder"),):
        assert cli.main(["run", "--quiet", "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("s2sr run: error: ") and message in err and "Traceback" not in err
