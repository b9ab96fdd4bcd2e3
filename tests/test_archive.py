"""The dependency archive (s2sr.deploy.archive) and the UDF running from it, as a worker does:
unpacked as ``s2sr_deps/`` in the job's working directory, with torch and without it
(onnxruntime, in a virtual environment that has no torch), through the geopyspark executor's
sequence (s2sr.deploy.geopyspark, after openeo-geotrellis-extensions Udf.scala)."""

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from s2sr.deploy import archive
from s2sr_testing import make_cube

REPO = Path(__file__).resolve().parents[1]
MODEL = "carn_3x3x64g4sw"
OVERLAP = 24  # the default model's margin (21) + the SWIR cap's reach (1) + the no-data fill's (2): seams exact
#: what a CDSE worker has (numpy, xarray, openeo) plus onnxruntime from the hosted onnx_deps archive
NO_TORCH_REQUIREMENTS = ["numpy", "xarray", "openeo", "onnxruntime"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("archive")
    return archive.build(folder / "s2sr_deps.zip", models=[MODEL]), folder


def test_the_overlap_is_the_model_s():
    from s2sr import engine

    assert engine.required_overlap(engine.read_metadata(engine.resolve_weights({"model": MODEL}))) == OVERLAP


def test_the_archive_is_deterministic_and_complete(built, tmp_path):
    info, _ = built
    again = archive.build(tmp_path / "again.zip", models=[MODEL])
    assert again["sha256"] == info["sha256"] == hashlib.sha256(Path(info["path"]).read_bytes()).hexdigest()
    with zipfile.ZipFile(info["path"]) as z:
        names = z.namelist()
        manifest = json.loads(z.read("s2sr/weights/manifest.json"))
        assert z.testzip() is None
        for entry in manifest["models"].values():  # every listed file is there with its sha256
            for listed in (entry, entry["onnx"]):
                assert hashlib.sha256(z.read(f"s2sr/weights/{listed['file']}")).hexdigest() == listed["sha256"]
    assert names == sorted(names)
    assert {"s2sr/__init__.py", "s2sr/engine/cube.py", "s2sr/engine/auto_choices.json",
            f"s2sr/weights/{MODEL}.pt", f"s2sr/weights/{MODEL}.onnx"} <= set(names)
    assert not any(n.startswith(("s2sr/training", "s2sr/deploy", "torch/")) for n in names)  # the engine only
    assert manifest["default"] == MODEL and list(manifest["models"]) == [MODEL]


def test_wheels_must_be_for_the_backend_s_python(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "torch-2.13.0-cp312-cp312-manylinux_2_28_x86_64.whl").write_bytes(b"")
    with pytest.raises(ValueError, match="not for the backend's Python 3.11"):
        archive.build(tmp_path / "a.zip", with_torch=True, wheels_dir=wheels, models=[MODEL])
    with pytest.raises(ValueError, match="needs wheels_dir"):
        archive.build(tmp_path / "a.zip", with_torch=True, models=[MODEL])


def test_a_pure_python_wheel_is_unpacked(tmp_path):
    """--with-torch unpacks wheels as pip would: shown here with a small real wheel from the registry."""
    wheels = tmp_path / "wheels"
    out = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                          "six==1.16.0", "-d", str(wheels)], capture_output=True, text=True, timeout=300)
    if out.returncode:
        pytest.skip(f"the package registry is unreachable: {out.stderr[-300:]}")
    info = archive.build(tmp_path / "a.zip", with_torch=True, wheels_dir=wheels, models=[MODEL])
    with zipfile.ZipFile(info["path"]) as z:
        assert "six.py" in z.namelist() and "s2sr/engine/cube.py" in z.namelist()


# A worker's job: the archive unpacked as s2sr_deps/ in the working directory, the UDF text run
# by the executor's sequence on a scene of 2 x 2 keys with a no-data hole; prints where s2sr
# came from, whether torch was imported, and saves the mosaic.
WORKER = r"""
import importlib.util, json, sys, types
import numpy as np, xarray

def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

args = json.loads(sys.argv[1])
neighborhood = load("s2sr_test_neighborhood", args["repo"] + "/deploy/neighborhood.py")
geopyspark = load("s2sr_test_geopyspark", args["repo"] + "/deploy/geopyspark.py")
data = np.load(args["cube"])
cube = xarray.DataArray(data["values"], dims=("t", "bands", "y", "x"),
                        coords={"t": data["t"], "bands": list(data["bands"]), "y": data["y"], "x": data["x"]})
sys.modules["s2sr.deploy"] = types.SimpleNamespace(neighborhood=neighborhood)  # what job_windows imports
code = open(args["udf"]).read()
overlap = args["context"]["overlap"]
mosaic, step = geopyspark.run_job(code, cube, (40, 40), (overlap, overlap), args["context"])
import s2sr
from s2sr.engine.cube import superresolve_cube
whole = superresolve_cube(cube, {k: v for k, v in args["context"].items() if k != "overlap"}).values
np.save(args["out"], np.stack([mosaic, whole]))
print(json.dumps({"s2sr": s2sr.__file__, "torch": "torch" in sys.modules, "step": step}))
"""


def _job(python: str, built, tmp_path: Path, udf_code: str, context: dict):
    info, _ = built
    work = tmp_path / "job"
    with zipfile.ZipFile(info["path"]) as z:
        z.extractall(work / archive.TARGET_DIR)
    cube = make_cube(70, 66, nt=1, seed=8)
    cube.values[0, :, 30:36, 10:20] = np.nan
    np.savez(tmp_path / "cube.npz", values=cube.values, t=cube.t.values, bands=np.array(cube.bands.values),
             y=cube.y.values, x=cube.x.values)
    (tmp_path / "udf.py").write_text(udf_code)
    args = {"repo": str(REPO), "cube": str(tmp_path / "cube.npz"), "udf": str(tmp_path / "udf.py"),
            "out": str(tmp_path / "out.npy"), "context": {**context, "overlap": OVERLAP}}
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "S2SR_WEIGHTS_DIR")}
    out = subprocess.run([python, "-c", WORKER, json.dumps(args)], capture_output=True, text=True, cwd=work, env=env,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    mosaic, whole = np.load(tmp_path / "out.npy")
    return report, mosaic, whole, cube


def test_the_udf_runs_from_the_unpacked_archive_with_torch(built, tmp_path, udf_code):
    report, mosaic, whole, _ = _job(sys.executable, built, tmp_path, udf_code, {"precision": "fp32", "runtime": "torch"})
    assert report["s2sr"].startswith(str(tmp_path / "job" / archive.TARGET_DIR))  # the archive's engine, not the install
    assert report["torch"] and report["step"] == [5.0, 5.0]
    assert np.array_equal(mosaic, whole, equal_nan=True)


def _no_torch_python() -> str:
    """A venv with what a CDSE worker has plus onnxruntime, and no torch: created once, reused."""
    venv = Path.home() / ".cache" / "s2sr" / "no-torch-venv"
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / ".no-torch-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        check = [str(python), "-c", "import onnxruntime, openeo, xarray, importlib.util as u; assert u.find_spec('torch') is None"]
        if not python.is_file() or subprocess.run(check, capture_output=True).returncode:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
            out = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *NO_TORCH_REQUIREMENTS],
                                 capture_output=True, text=True, timeout=900)
            if out.returncode:
                pytest.skip(f"could not build the no-torch venv (registry unreachable?): {out.stderr[-300:]}")
    return str(python)


def test_the_udf_runs_without_torch_on_onnxruntime(built, tmp_path, udf_code):
    """A worker without torch: the engine from the archive runs the ONNX on onnxruntime, within
    1e-5 reflectance of torch, seams exact, no-data identical."""
    from s2sr.engine.cube import superresolve_cube

    report, mosaic, whole, cube = _job(_no_torch_python(), built, tmp_path, udf_code, {})
    assert not report["torch"] and report["s2sr"].startswith(str(tmp_path / "job"))
    assert np.array_equal(mosaic, whole, equal_nan=True)  # seams: the mosaic equals its own whole-scene run
    reference = superresolve_cube(cube, {"model": MODEL, "precision": "fp32", "runtime": "torch"}).values
    assert np.array_equal(np.isnan(mosaic), np.isnan(reference)) and np.isnan(mosaic).any()
    assert np.nanmax(np.abs(mosaic - reference)) <= 1e-5 * 10000  # 1e-5 reflectance, in DN


def test_a_worker_without_weights_is_told_which_job_option_to_set(tmp_path, monkeypatch):
    from s2sr.engine import weights

    monkeypatch.setattr(weights, "package_weights_dir", lambda: None)
    monkeypatch.delenv("S2SR_WEIGHTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"udf-dependency-archives.*#s2sr_deps.*s2sr-deploy archive"):
        weights.resolve_weights({})


def test_a_worker_without_the_engine_is_told_which_job_option_to_set(tmp_path, udf_code):
    """No archive unpacked and no s2sr installed (the no-torch venv has none): the UDF's error
    names the job option, the archive's folder and the command that builds it."""
    (tmp_path / "udf.py").write_text(udf_code)
    script = ("import numpy as np, xarray\n"
              "scope = {}\n"
              f"exec(open({str(tmp_path / 'udf.py')!r}).read(), scope)\n"
              "scope['apply_datacube'](xarray.DataArray(np.ones((10, 4, 4), 'float32'), dims=('bands', 'y', 'x')), {})\n")
    out = subprocess.run([_no_torch_python(), "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode != 0
    assert "udf-dependency-archives" in out.stderr and "#s2sr_deps" in out.stderr and "s2sr-deploy archive" in out.stderr
