"""A real openEO HTTP API on 127.0.0.1 for the deployment tests: openeo-driver's dummy backend.

``openeo-driver==0.136.0a4`` ships a dummy backend (``openeo_driver.dummy``) that implements
the openEO API (API versions 1.0 / 1.1 / 1.2 under ``/openeo/<version>/``, discovery at
``/.well-known/openeo``): process and collection listings, basic auth (users from
``dummy_config.py``: a name starting with a vowel has password ``<name lowercased>123``, others
``<NAME UPPERCASED>!!!``), UDP storage in memory (PUT / GET / list / DELETE
``/process_graphs``, public URLs ``/processes/u:<user>/<id>``), ``/validation`` (a dry run that
follows remote process definitions by URL), batch job creation.  It never executes UDF code.

It pins ``pystac~=1.8`` (which pulls openeo 0.52 and xarray 2025.1 back), so it gets its own
virtual environment: created once by ``ensure_venv`` (default ``~/.cache/s2sr/openeo-driver-venv``,
override with ``$S2SR_OPENEO_DRIVER_VENV``), reused while it imports the pinned version.  A
file lock serialises concurrent creation.  ``S2SR_SKIP_OPENEO_SERVER=1`` skips the server tests.

The server runs the same Werkzeug development server as ``flask --app
openeo_driver.dummy.local_app:create_app run``, through a three-line launcher that also turns
on INFO logging, so the log records every request ("PUT /openeo/1.2/process_graphs/...")
and the job options the backend derives: tests read the log to count requests.
"""

import fcntl
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest
import requests

DRIVER_VERSION = "0.136.0a4"
REQUIREMENTS = [f"openeo-driver=={DRIVER_VERSION}", "flask"]
VENV_ENV = "S2SR_OPENEO_DRIVER_VENV"
SKIP_ENV = "S2SR_SKIP_OPENEO_SERVER"
API_PREFIX = "/openeo/1.2/"
BASIC_USER, BASIC_PASSWORD = "alice", "alice123"  # dummy_config: vowel names -> "<name>123"
API_VERSIONS = ("1.0.0", "1.1.0", "1.2.0")

LAUNCHER = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
from openeo_driver.dummy.local_app import create_app
create_app().run(host="127.0.0.1", port=int(sys.argv[1]), threaded=True, use_reloader=False)
"""

EXCLUDE_CONFIG = """
import attrs
from openeo_driver.dummy.dummy_config import config as _dummy

config = attrs.evolve(_dummy, id="s2sr-test-no-{name}", processes_exclusion_list={exclusions!r})
"""


# --------------------------------------------------------------------------- virtual environment

def default_venv() -> Path:
    return Path(os.environ.get(VENV_ENV) or Path.home() / ".cache" / "s2sr" / "openeo-driver-venv")


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _venv_works(venv: Path) -> bool:
    python = venv_python(venv)
    if not python.is_file():
        return False
    probe = "import importlib.metadata as m; print(m.version('openeo-driver')); import flask"
    try:
        out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == DRIVER_VERSION


def _run(cmd: List[str], timeout: float) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{tail}")


def ensure_venv(venv: Optional[Path] = None, timeout: float = 900) -> Path:
    """The python of a venv holding openeo-driver (created once, reused); RuntimeError if pip fails."""
    venv = Path(venv or default_venv())
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be creating it right now
        if not _venv_works(venv):
            _run([sys.executable, "-m", "venv", "--clear", str(venv)], timeout=300)
            _run([str(venv_python(venv)), "-m", "pip", "install", "--quiet", *REQUIREMENTS], timeout=timeout)
            if not _venv_works(venv):
                raise RuntimeError(f"{venv} does not import openeo-driver {DRIVER_VERSION} after installing it")
    return venv_python(venv)


def dummy_config(python: Path) -> Path:
    """The dummy backend's config file inside the venv."""
    venv = python.parent.parent
    found = sorted(venv.glob("lib/python*/site-packages/openeo_driver/dummy/dummy_config.py"))
    if not found:
        raise RuntimeError(f"no openeo_driver/dummy/dummy_config.py under {venv}")
    return found[-1]


def config_without(path: Path, processes: List[str]) -> Path:
    """A config file: the dummy backend minus ``processes`` (for every API version)."""
    path.write_text(EXCLUDE_CONFIG.format(name="-".join(processes), exclusions={v: list(processes) for v in API_VERSIONS}))
    return path


# --------------------------------------------------------------------------- server

def free_port() -> int:
    """A port nothing listens on right now (also usable as a closed port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class OpenEoServer:
    """A running dummy backend: ``url`` (root, discovery at ``/.well-known/openeo``), ``api`` (1.2)."""

    url: str
    process: subprocess.Popen
    log_path: Path

    @property
    def api(self) -> str:
        return self.url + API_PREFIX

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def requests_made(self, method: str, path_part: str = "") -> int:
        """Requests with ``method`` whose path contains ``path_part`` (from the access log)."""
        return sum(1 for line in self.log().splitlines() if f'"{method} ' in line and path_part in line and "HTTP/1." in line)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _server_env(config: Path) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(OPENEO_BACKEND_CONFIG=str(config), PYTHONUNBUFFERED="1")
    return env


def start_server(python: Path, log_path: Path, config: Optional[Path] = None, timeout: float = 90) -> OpenEoServer:
    """Start the dummy backend on a free port; return once ``/.well-known/openeo`` answers."""
    port = free_port()
    log = open(log_path, "w")
    process = subprocess.Popen([str(python), "-c", LAUNCHER, str(port)], stdout=log, stderr=subprocess.STDOUT,
                               env=_server_env(config or dummy_config(python)), cwd=str(log_path.parent))
    log.close()  # the child holds its own descriptor
    server = OpenEoServer(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the openEO dummy backend exited ({process.returncode}):\n{server.log()[-3000:]}")
        try:
            if requests.get(server.url + "/.well-known/openeo", timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"the openEO dummy backend did not answer within {timeout} s:\n{server.log()[-3000:]}")


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def openeo_driver_python() -> Path:
    """The python of the openeo-driver venv (created on first use: a minute or two)."""
    if os.environ.get(SKIP_ENV):
        pytest.skip(f"{SKIP_ENV} is set")
    try:
        return ensure_venv()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"cannot set up the openeo-driver venv ({default_venv()}): {exc}")


@pytest.fixture(scope="module")
def openeo_server(openeo_driver_python, tmp_path_factory) -> Iterator[OpenEoServer]:
    """The dummy backend, one per test module."""
    server = start_server(openeo_driver_python, tmp_path_factory.mktemp("openeo_server") / "server.log")
    yield server
    server.stop()
