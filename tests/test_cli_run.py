"""``s2sr run``: with no arguments it writes the SR, the bicubic product and a preview of the
sample scene on the right 5 m grid; bad input gives one clear line, a non-zero exit status and
no output folder.  Also ``s2sr evaluate`` forwarding and the example script."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Tuple

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


# --------------------------------------------------------------------------- --weights

def _sr(path):
    with rasterio.open(path / "sr_5m.tif") as src:
        return src.read()


def test_weights_runs_ones_own_export(workdir, tmp_path_factory):
    """--weights FILE: the same file as the default gives the same image, other weights another
    one; the run file names the file."""
    from s2sr_testing import export_slim

    shutil.copy(_default_weights(), workdir / "mine.pt")
    other = export_slim(tmp_path_factory.mktemp("other") / "other.pt", seed=1)
    common = ["run", "--quiet", "--bbox", *SMALL_BBOX, "--bbox-crs", "EPSG:32618", "--precision", "fp32"]
    assert cli.main(common + ["--out", "default"]) == 0
    assert cli.main(common + ["--out", "mine", "--weights", "mine.pt"]) == 0
    assert cli.main(common + ["--out", "other", "--weights", str(other)]) == 0
    np.testing.assert_array_equal(_sr(workdir / "mine"), _sr(workdir / "default"))
    assert np.abs(_sr(workdir / "other") - _sr(workdir / "default")).max() > 1.0  # the file given is the one run
    record = json.loads((workdir / "other" / cli.RUN_FILE).read_text())
    assert record["weights"] == str(other) and record["model"] == "other.pt"


def test_swir_cap_option_reaches_the_udf(workdir):
    """--swir-cap K is the UDP's swir_cap: a tight cap changes B11 / B12 alone (GeoTIFF band
    order: the model's, B11 / B12 last), 0 leaves the network's output."""
    common = ["run", "--quiet", "--bbox", *SMALL_BBOX, "--bbox-crs", "EPSG:32618", "--precision", "fp32"]
    assert cli.main(common + ["--out", "none", "--swir-cap", "0"]) == 0
    assert cli.main(common + ["--out", "tight", "--swir-cap", "0.2"]) == 0
    none, tight = _sr(workdir / "none"), _sr(workdir / "tight")
    np.testing.assert_array_equal(none[:8], tight[:8])
    assert np.abs(none[8:] - tight[8:]).max() > 1.0
    assert cli.main(common + ["--out", "bad", "--swir-cap", "-1"]) != 0


def _default_weights():
    """The weights the default run finds ($S2SR_WEIGHTS_DIR: the slim ones, under the default name)."""
    import os

    return Path(os.environ["S2SR_WEIGHTS_DIR"]) / "carn_3x3x64g4sw.pt"


def _broken_weights(folder: Path, kind: str) -> Path:
    """Weights files that are not usable: missing, not a zip, a flipped byte, metadata without a network."""
    import zipfile

    good, path = _default_weights(), folder / f"{kind}.pt"
    if kind == "text":
        path.write_text("not weights")
    elif kind == "flipped":
        data = bytearray(good.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == "no_network":
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
            for name in src.namelist():
                if name.endswith("s2sr_metadata.json"):
                    dst.writestr(name, src.read(name))
    return path


@pytest.mark.parametrize("kind, message", [
    ("missing", "does not exist"),
    ("text", "is corrupt or truncated (not a TorchScript archive"),
    ("flipped", "fails its CRC check"),
    ("no_network", "TorchScript cannot load it"),
])
def test_unusable_weights_fail_in_one_line(workdir, capsys, kind, message):
    path = _broken_weights(workdir, kind)
    assert cli.main(["run", "--quiet", "--out", "out", "--weights", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("s2sr run: error: --weights: weights file ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (workdir / "out").exists()


def test_weights_and_model_exclude_each_other(workdir, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--model", "carn_3x3x64g4sw", "--weights", "x.pt"])
    assert exc.value.code == 2 and "give either --model or --weights" in capsys.readouterr().err


# --------------------------------------------------------------------------- Ctrl-C

INTERRUPTED_LINE = "s2sr run: interrupted: 0 of 1 windows x dates done; no output written"


def _interrupt(tmp_path: Path, signals: int) -> Tuple[int, float, str]:
    """``s2sr run`` on the sample scene with the shipped model at fp32 on torch, one thread (a
    window of ten seconds and more on 2 cores), SIGINT ``signals`` times 0.2 s apart once the
    window bar shows: (exit status, seconds from the first SIGINT to the exit, stderr)."""
    import os
    import selectors
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if k != "S2SR_WEIGHTS_DIR"}
    argv = [sys.executable, "-m", "s2sr.cli", "run", "--out", str(tmp_path / "out"), "--precision", "fp32",
            "--runtime", "torch", "--workers", "1"]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    err, started = b"", time.monotonic()
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        while b"0/1" not in err and time.monotonic() - started < 120:  # the window bar: windows started
            if sel.select(timeout=1):
                chunk = os.read(proc.stderr.fileno(), 4096)
                if not chunk:
                    break
                err += chunk
    assert b"0/1" in err, err.decode(errors="replace")
    time.sleep(0.5)  # inside the window's network pass
    sent = time.monotonic()
    for i in range(signals):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2 if i + 1 < signals else 0)
    try:
        _, rest = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, time.monotonic() - sent, (err + rest).decode(errors="replace")


@pytest.mark.parametrize("signals", [1, 2])
def test_ctrl_c_stops_at_once_and_writes_nothing(tmp_path, signals):
    """Ctrl-C (once, or twice while it stops) in the middle of a window: exit 130 within a few
    seconds, one line saying what was done, no traceback, no output or temporary folder."""
    status, seconds, err = _interrupt(tmp_path, signals)
    assert status == cli.INTERRUPTED, err
    assert seconds < 5, f"stopped {seconds:.1f} s after Ctrl-C"
    lines = [line.strip() for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert lines[-1] == INTERRUPTED_LINE and err.count("interrupted") == 1, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output, no temporary folder


def test_ctrl_c_while_the_products_are_written_leaves_no_output(workdir, capsys, monkeypatch):
    """A real SIGINT after the first GeoTIFF of the products: exit 130, the half-written folder
    removed, an earlier output left as it was."""
    import signal

    out = workdir / "res"
    out.mkdir()
    (out / cli.RUN_FILE).write_text("{}")  # an earlier s2sr output: kept
    written = []
    real = local.to_geotiff

    def to_geotiff_then_ctrl_c(cube, path, dtype="float32"):
        written.append(real(cube, path, dtype))
        signal.raise_signal(signal.SIGINT)
        return written[-1]

    monkeypatch.setattr(local, "to_geotiff", to_geotiff_then_ctrl_c)
    argv = ["run", "--quiet", "--bbox", *SMALL_BBOX, "--bbox-crs", "EPSG:32618", "--out", str(out)]
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    assert cli.main(argv) == cli.INTERRUPTED
    assert len(written) == 1 and not written[0].exists()  # the one product written is gone with its folder
    assert capsys.readouterr().err.strip() == "s2sr run: interrupted: 1 of 1 windows x dates done; no output written"
    assert sorted(p.name for p in workdir.iterdir()) == ["res"] and [p.name for p in out.iterdir()] == [cli.RUN_FILE]
    assert signal.getsignal(signal.SIGINT) is before  # SIGINT given back as it was
