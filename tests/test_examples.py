"""Examples: the notebook is valid and its code compiles against today's API (it needs a
platform account to run; the offline examples run in test_cli_run.py / test_deploy.py)."""

import ast
import json
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_notebook_is_valid_and_compiles():
    nb = json.loads((EXAMPLES / "openeo_platform.ipynb").read_text())
    assert nb["nbformat"] == 4
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code
    names = set()
    for cell in code:
        src = "".join(line for line in cell["source"] if not line.lstrip().startswith("!"))
        tree = ast.parse(src)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("s2sr"):
                module = __import__(node.module, fromlist=[a.name for a in node.names])
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module}.{alias.name} does not exist"
                    names.add(alias.name)
    assert {"load_s2", "superresolve", "build_udp"} <= names


#: runs a script with every way out to the network refused (and any proxy a dead end)
OFFLINE = """
import runpy, socket, sys

def refused(*args, **kwargs):
    raise OSError("network disabled by the test")

socket.socket.connect = socket.socket.connect_ex = refused
socket.create_connection = socket.getaddrinfo = refused
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _offline(script: Path, *argv: str) -> "subprocess.CompletedProcess[str]":
    import os
    import subprocess
    import sys

    env = {**os.environ, "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    return subprocess.run([sys.executable, "-c", OFFLINE, str(script), *argv],
                          capture_output=True, text=True, timeout=120, env=env)


def test_udp_by_url_prints_its_graph_offline(tmp_path):
    """Without --run the example connects to nothing (its docstring says so), even given a --backend."""
    url = "https://openeo.example/openeo/1.2/processes/u:someone/sentinel2_superresolution"
    args = ["--udp-url", url, "--bbox", "5.05", "51.21", "5.08", "51.23", "--dates", "2023-06-01", "2023-06-15"]
    done = _offline(EXAMPLES / "udp_by_url.py", *args, "--ndvi", "--backend", "https://openeo.example")
    assert done.returncode == 0, done.stderr
    graph = json.loads(done.stdout)["process_graph"]
    node = next(n for n in graph.values() if n["process_id"] == "sentinel2_superresolution")
    assert node["namespace"] == url and node["arguments"]["temporal_extent"] == ["2023-06-01", "2023-06-15"]
    assert [n["process_id"] for n in graph.values()] == ["sentinel2_superresolution", "ndvi", "save_result"]
    # the harness does cut the network: openeo's own HTTP session fails in it
    probe = tmp_path / "connect.py"
    probe.write_text("import openeo\nopeneo.rest.connection.RestApiConnection('http://openeo.example', retry=False).get('/')\n")
    done = _offline(probe)
    assert done.returncode != 0 and "network disabled by the test" in done.stderr, done.stderr[-500:]
