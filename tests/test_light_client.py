"""The light client: a virtual environment with only ``openeo`` and numpy, plus s2sr installed
from its wheel without dependencies, builds the UDP, registers it on a real openEO API and
validates a graph calling it, with no torch (nor any other extra) installed at all.

The venv is created once under ``~/.cache/s2sr/light-client-venv`` (``$S2SR_LIGHT_VENV``);
s2sr's wheel is rebuilt and reinstalled into it on every run.  Where the package registry is
unreachable, the tests skip and say so.
"""

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from openeo_server import BASIC_PASSWORD, BASIC_USER, openeo_driver_python, openeo_server  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[1]
VENV_ENV = "S2SR_LIGHT_VENV"
REQUIREMENTS = ["openeo", "numpy"]
HEAVY = ("torch", "onnxruntime", "ncnn", "rasterio", "rioxarray", "dask", "tqdm", "matplotlib", "scipy")


def _venv() -> Path:
    return Path(os.environ.get(VENV_ENV) or Path.home() / ".cache" / "s2sr" / "light-client-venv")


def _run(cmd, timeout=600, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)


def _works(python: Path) -> bool:
    return python.is_file() and _run([python, "-c", "import openeo, numpy"], timeout=120).returncode == 0


@pytest.fixture(scope="module")
def light_python(tmp_path_factory) -> Path:
    venv = _venv()
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _works(python):
            done = _run([sys.executable, "-m", "venv", "--clear", venv], timeout=300)
            assert done.returncode == 0, done.stderr
            done = _run([python, "-m", "pip", "install", "--quiet", *REQUIREMENTS], timeout=900)
            if done.returncode != 0:
                pytest.skip(f"the package registry is unreachable (pip install {' '.join(REQUIREMENTS)} failed: "
                            f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode})")
        wheels = tmp_path_factory.mktemp("wheel")
        done = _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", wheels, REPO])
        assert done.returncode == 0, done.stderr[-3000:]
        (wheel,) = wheels.glob("s2sr-*.whl")
        done = _run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", wheel])
        assert done.returncode == 0, done.stderr[-3000:]
    return python


def test_only_openeo_and_numpy_and_no_extra(light_python):
    done = _run([light_python, "-c", "import importlib.util as u, json; "
                 f"print(json.dumps({{m: u.find_spec(m) is not None for m in {HEAVY!r}}}))"])
    assert done.returncode == 0, done.stderr
    assert not any(json.loads(done.stdout).values()), done.stdout  # torch & co are not even installed


def test_builds_the_udp_without_torch(light_python, tmp_path):
    out = tmp_path / "udp.json"
    code = (
        "import sys, json\n"
        "from s2sr.deploy.udp import build_udp, load_udp_json, write_udp_json\n"
        "udp = build_udp()\n"
        "assert udp == load_udp_json(), 'the wheel builds the committed UDP'\n"
        f"write_udp_json({str(out)!r}, archive_url='https://deps.test/s2sr_deps.zip')\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = _run([light_python, "-c", code], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    options = json.loads(out.read_text())["default_job_options"]
    assert options["udf-dependency-archives"][0] == "https://deps.test/s2sr_deps.zip#s2sr_deps"


def test_registers_and_validates_on_a_real_openeo_api(light_python, openeo_server, tmp_path):
    """``s2sr-deploy register`` from the light venv (checks every process the graph uses), then
    the backend's own validation of a graph calling the UDP by its public URL."""
    deploy = light_python.parent / "s2sr-deploy"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OPENEO_CONFIG_HOME"] = str(tmp_path / "openeo-config")
    done = _run([deploy, "register", "--backend", openeo_server.url, "--udp-id", "sentinel2_superresolution",
                 "--user", BASIC_USER, "--password", BASIC_PASSWORD, "--public",
                 "--archive-url", "https://deps.test/s2sr_deps.zip"], env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert done.stdout.startswith("created: sentinel2_superresolution")
    url = done.stdout.split("public URL: ", 1)[1].split()[0]
    code = (
        "import json, sys, openeo\n"
        f"c = openeo.connect({openeo_server.url!r}, auto_validate=False)\n"
        f"c.authenticate_basic({BASIC_USER!r}, {BASIC_PASSWORD!r})\n"
        "extent = {'west': 5.05, 'south': 51.21, 'east': 5.08, 'north': 51.23, 'crs': 'EPSG:4326'}\n"
        f"cube = c.datacube_from_process('sentinel2_superresolution', namespace={url!r}, spatial_extent=extent,\n"
        "    temporal_extent=['2023-06-01', '2023-06-15'], product='SENTINEL2_L2A_SENTINELHUB')\n"
        "print(json.dumps(c.validate_process_graph(cube.save_result(format='GTiff'))))\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = _run([light_python, "-c", code], env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []  # the dry run follows the URL into our graph
