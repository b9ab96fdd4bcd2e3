"""s2sr-deploy: the weights archive, the UDP registration against a real openEO API (the
openeo-driver dummy backend on 127.0.0.1, see ``openeo_server.py``), and the UDP used by URL."""

import copy
import functools
import hashlib
import http.server
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import openeo
import pytest
import requests

from openeo_server import (  # noqa: F401  (fixtures)
    BASIC_PASSWORD, BASIC_USER, config_without, free_port, openeo_driver_python, openeo_server, start_server,
)
from s2sr.deploy import cli
from s2sr.deploy.register import (
    collection_warnings, diff_udp, missing_processes, process_nodes, registration_body, runtime_warnings, used_processes,
)
from s2sr.deploy.udp import ONNX_DEPS_ARCHIVE, PRODUCTS, build_udp
from s2sr.deploy.weights_archive import ZIP_EPOCH, sha256_file, write_archive
from s2sr import engine
from s2sr.udf import default_weights_dir
from s2sr_testing import make_cube, run_local

REPO = Path(__file__).resolve().parents[1]
W1, W2 = "https://deps.test/s2sr_deps-1.zip", "https://deps.test/s2sr_deps-2.zip"


@pytest.fixture(autouse=True)
def _isolated_client(tmp_path, monkeypatch):
    """No user openEO config / stored credentials, no weights override from the environment."""
    monkeypatch.setenv("OPENEO_CONFIG_HOME", str(tmp_path / "openeo-config"))
    for name in (cli.USER_ENV, cli.PASSWORD_ENV, "S2SR_WEIGHTS_DIR"):
        monkeypatch.delenv(name, raising=False)


@functools.lru_cache(maxsize=4)
def _udp(archive_url: str) -> str:
    return json.dumps(build_udp(archive_url=archive_url))


def udp(archive_url: str = W1) -> dict:
    return json.loads(_udp(archive_url))


def run_cli(capsys, *args: str):
    """``s2sr-deploy ARGS`` in-process: (exit status, stdout, stderr)."""
    rc = cli.main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def register_args(server, udp_id: str, *extra: str):
    return ("register", "--backend", server.url, "--udp-id", udp_id, "--user", BASIC_USER, "--password", BASIC_PASSWORD, *extra)


# --------------------------------------------------------------------------- pure functions

def test_used_processes_include_callbacks():
    graph = udp()["process_graph"]
    assert used_processes(graph) == {"load_collection", "lte", "resample_cube_spatial", "merge_cubes",
                                     "apply_neighborhood", "run_udf", "filter_bbox"}
    assert "applyneighborhood1/process/runudf1" in process_nodes(graph)  # the UDF node inside the callback
    everything = used_processes(graph) | {"ndvi"}
    assert missing_processes(graph, everything) == []
    assert missing_processes(graph, everything - {"run_udf", "lte"}) == ["lte", "run_udf"]
    # a node calling a UDP / remote definition is not a backend process
    remote = {"a": {"process_id": "sentinel2_superresolution", "namespace": "https://x/udp.json", "arguments": {}}}
    assert missing_processes(remote, []) == []


def test_diff_names_fields_nodes_and_parameters():
    ours = registration_body(udp(W1), "s2sr", public=False)
    stored = copy.deepcopy(ours)
    stored.pop("default_job_options")  # what openeo-python-driver does
    stored.pop("categories")
    stored["links"] = stored["links"] + [{"rel": "canonical", "href": "https://b/processes/u:me/s2sr"}]
    same = diff_udp(ours, stored)
    assert not same.changed and same.not_kept == ["categories", "default_job_options"]

    stored["process_graph"]["applyneighborhood1"]["arguments"]["process"]["process_graph"]["runudf1"]["arguments"]["context"]["overlap"] = 3
    stored["parameters"][3]["default"] = "other_model"
    stored["description"] = "old"
    diff = diff_udp(ours, stored)
    assert diff.changed
    assert diff.nodes_changed == {"applyneighborhood1/process/runudf1 (run_udf)": ["argument context"]}
    assert diff.params_changed == {"model": ["default"]} and list(diff.fields) == ["description"]
    summary = "\n".join(diff.summary())
    assert "runudf1 (run_udf) changed (argument context)" in summary and "model changed (default)" in summary

    new = registration_body(udp(W2), "s2sr", public=True)
    diff = diff_udp(new, ours)
    assert diff.fields["public"] == "False -> True"
    assert diff.fields["links"] == f"changed: -{W1}#s2sr_deps, +{W2}#s2sr_deps"
    assert diff.fields["default_job_options"] == "changed: udf-dependency-archives"
    assert not diff.nodes_changed and not diff.params_changed


def test_collection_and_runtime_warnings():
    products = list(PRODUCTS)
    assert collection_warnings(None, products) == []
    assert collection_warnings(["SENTINEL2_L2A", "SENTINEL2_L1C", "X"], products) == []
    assert "product='SENTINEL2_L1C'" in collection_warnings(["SENTINEL2_L1C"], products)[0]
    assert "none of the collections" in collection_warnings(["SENTINEL2_L2A_SENTINELHUB"], products)[0]
    runtimes = {"Python": {"versions": {"3.11": {"libraries": {}}}}, "Python-Jep": {"versions": {"3.8": {}}}}
    assert runtime_warnings(runtimes, {"Python": {"3.11"}}) == []
    assert "no UDF runtime 'Python-Jep'" in runtime_warnings({"Python": {}}, {"Python-Jep": {"3.11"}})[0]
    assert "lists no version 3.11 (it has ['3.8'])" in runtime_warnings(runtimes, {"Python-Jep": {"3.11"}})[0]
    assert runtime_warnings(runtimes, {"Python-Jep": {None}}) == []


def test_build_command_writes_the_udp(tmp_path, capsys):
    out = tmp_path / "udp.json"
    rc, stdout, err = run_cli(capsys, "build", "--out", str(out), "--archive-url", W2)
    assert rc == 0 and str(out) in stdout and err == ""
    written = json.loads(out.read_text())
    assert written == udp(W2)
    assert written["default_job_options"]["udf-dependency-archives"] == [f"{W2}#s2sr_deps", ONNX_DEPS_ARCHIVE]
    rc, _, err = run_cli(capsys, "build", "--out", str(out))  # no archive: a template, and we say so
    assert rc == 0 and "names no s2sr dependency archive" in err and "s2sr-deploy archive" in err
    assert json.loads(out.read_text())["default_job_options"]["udf-dependency-archives"] == [ONNX_DEPS_ARCHIVE]


# --------------------------------------------------------------------------- dependency archive

def test_archive_command_prints_sha256_and_size(tmp_path, capsys):
    archive = pytest.importorskip("s2sr.deploy.archive", reason="s2sr.deploy.archive (the archive builder) not here yet")
    digests = []
    for name in ("a", "b"):
        out = tmp_path / name / "s2sr_deps.zip"
        rc, stdout, err = run_cli(capsys, "archive", "--out", str(out))
        assert rc == 0, err
        data = out.read_bytes()
        assert f"sha256 {hashlib.sha256(data).hexdigest()}" in stdout.splitlines()
        assert f"size {len(data)}" in stdout.splitlines()
        assert f"#{archive.TARGET_DIR}" in stdout and "s2sr-deploy build --archive-url" in stdout
        digests.append(hashlib.sha256(data).hexdigest())
    assert digests[0] == digests[1]  # deterministic
    with zipfile.ZipFile(out) as z:
        assert "s2sr/engine/weights.py" in z.namelist()  # the engine the UDF imports from s2sr_deps/
    rc, _, err = run_cli(capsys, "archive", "--out", str(tmp_path / "t.zip"), "--with-torch")
    assert rc == 1 and "wheels" in err and err.strip().count("\n") == 0


# --------------------------------------------------------------------------- weights archive

def test_weights_archive_is_deterministic(tmp_path):
    shipped = sorted(default_weights_dir().glob("*.pt"))
    copies = []
    for i, mtime in enumerate((1_000_000_000, 1_700_000_000)):  # same bytes, different file times
        folder = tmp_path / f"src{i}"
        folder.mkdir()
        for path in shipped:
            shutil.copyfile(path, folder / path.name)
            os.utime(folder / path.name, (mtime, mtime))
        copies.append(write_archive(tmp_path / f"a{i}.zip", weights_dir=folder))
    assert copies[0].sha256 == copies[1].sha256 == sha256_file(copies[0].path)
    assert copies[0].path.read_bytes() == copies[1].path.read_bytes()
    with zipfile.ZipFile(copies[0].path) as archive:
        infos = archive.infolist()
        assert [i.filename for i in infos] == ["manifest.json"] + [p.name for p in shipped]  # root, no folder
        assert {i.date_time for i in infos} == {ZIP_EPOCH}
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["default"] == engine.DEFAULT_MODEL
    for path in shipped:
        entry = manifest["models"][path.stem]
        assert entry["file"] == path.name and entry["sha256"] == sha256_file(path) and entry["size"] == path.stat().st_size
        assert entry["metadata"]["margin"] == engine.read_metadata(path)["margin"]


def test_weights_command_archive_loads_in_the_udf(tmp_path, capsys, monkeypatch, udf_code):
    zip_path = tmp_path / "s2sr_weights.zip"
    rc, stdout, _ = run_cli(capsys, "weights", "--out", str(zip_path), "--models", engine.DEFAULT_MODEL)
    assert rc == 0 and f"sha256 {hashlib.sha256(zip_path.read_bytes()).hexdigest()}" in stdout
    # what udf-dependency-archives ["<url>#s2sr_weights"] does on a worker: unpack into ./s2sr_weights
    job_dir = tmp_path / "job"
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(job_dir / engine.ARCHIVE_DIR)
    monkeypatch.chdir(job_dir)
    weights = job_dir / engine.ARCHIVE_DIR / f"{engine.DEFAULT_MODEL}.pt"
    assert engine.resolve_weights({}) == Path.cwd() / engine.ARCHIVE_DIR / weights.name  # found before the package's
    margin = engine.read_metadata(weights)["margin"]
    cube = make_cube(12, 12)
    context = {"overlap": margin, "threads": 1}  # no padding: a small, fast window
    out = run_local(udf_code, cube, context)
    assert out.shape == (1, 10, 24, 24)

    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the tensor data
    weights.write_bytes(bytes(data))
    with pytest.raises(Exception, match="fails its (checksum|CRC check)"):
        run_local(udf_code, cube, context)
    with pytest.raises(Exception, match="fails its (checksum|CRC check)"):
        run_local(udf_code, cube, {**context, "weights_dir": str(weights.parent)})


def test_weights_command_unknown_model(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "weights", "--out", str(tmp_path / "w.zip"), "--models", "nope")
    assert rc == 1 and err.strip().count("\n") == 0 and "unknown models ['nope']" in err


# --------------------------------------------------------------------------- registration on a real openEO API

def describe(server, udp_id: str) -> dict:
    connection = openeo.connect(server.url, auto_validate=False)
    connection.authenticate_basic(BASIC_USER, BASIC_PASSWORD)
    return connection.get(f"/process_graphs/{udp_id}", expected_status=200).json()


def test_register_create_unchanged_update(openeo_server, capsys):
    udp_id = "s2sr_idempotence"
    puts = lambda: openeo_server.requests_made("PUT", f"/process_graphs/{udp_id}")  # noqa: E731
    rc, out, err = run_cli(capsys, *register_args(openeo_server, udp_id, "--archive-url", W1))
    assert rc == 0 and out.startswith(f"created: {udp_id}"), out + err
    stored = describe(openeo_server, udp_id)
    assert stored["id"] == udp_id and stored["process_graph"] == udp(W1)["process_graph"]
    assert stored["parameters"] == udp(W1)["parameters"]
    assert "default_job_options" not in stored  # the dummy backend drops them ...
    assert "does not keep categories, default_job_options" in err and f"{W1}#s2sr_deps" in err  # ... and we say so
    assert [link["href"] for link in stored["links"]] == [f"{W1}#s2sr_deps", ONNX_DEPS_ARCHIVE]  # the links it keeps
    assert puts() == 1

    rc, out, err = run_cli(capsys, *register_args(openeo_server, udp_id, "--archive-url", W1))
    assert rc == 0 and out.startswith(f"unchanged: {udp_id}"), out + err
    assert puts() == 1  # no second PUT
    assert describe(openeo_server, udp_id) == stored

    rc, out, err = run_cli(capsys, *register_args(openeo_server, udp_id, "--archive-url", W2))
    assert rc == 0 and out.startswith(f"updated: {udp_id}"), out + err
    assert f"links: changed: -{W1}#s2sr_deps, +{W2}#s2sr_deps" in out
    assert puts() == 2
    assert [link["href"] for link in describe(openeo_server, udp_id)["links"]] == [f"{W2}#s2sr_deps", ONNX_DEPS_ARCHIVE]

    rc, out, _ = run_cli(capsys, *register_args(openeo_server, udp_id, "--archive-url", W2, "--dry-run", "--public"))
    assert rc == 0 and out.startswith(f"would update: {udp_id}") and "public: False -> True" in out
    assert puts() == 2


def test_register_reports_changed_graph_nodes(openeo_server, capsys, tmp_path):
    udp_id = "s2sr_node_diff"
    assert run_cli(capsys, *register_args(openeo_server, udp_id, "--archive-url", W1))[0] == 0
    edited = udp(W1)
    edited["process_graph"]["applyneighborhood1"]["arguments"]["process"]["process_graph"]["runudf1"]["arguments"]["context"]["overlap"] += 1
    edited["parameters"] = [p for p in edited["parameters"] if p["name"] != "radiometric_offset"]
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(edited))
    rc, out, err = run_cli(capsys, *register_args(openeo_server, udp_id, "--udp-json", str(path)))
    assert rc == 0 and out.startswith(f"updated: {udp_id}"), out + err
    assert "process_graph: node applyneighborhood1/process/runudf1 (run_udf) changed (argument context)" in out
    assert "parameters: radiometric_offset removed" in out
    assert describe(openeo_server, udp_id)["process_graph"] == edited["process_graph"]


def test_public_url_resolves_and_serves_the_udp_by_url(openeo_server, capsys):
    udp_id = "sentinel2_superresolution"  # the remote-definition id must match the process id
    rc, out, err = run_cli(capsys, *register_args(openeo_server, udp_id, "--archive-url", W1, "--public"))
    assert rc == 0, err
    url = out.split("public URL: ", 1)[1].split()[0]
    assert url == f"{openeo_server.api}processes/u:{BASIC_USER}/{udp_id}"
    response = requests.get(url, timeout=10)  # no credentials: it is public
    assert response.status_code == 200
    assert response.json()["process_graph"] == udp(W1)["process_graph"]

    example = load_example()
    connection = openeo.connect(openeo_server.url, auto_validate=False)
    cube = example.build(connection, url, [5.05, 51.21, 5.08, 51.23], ["2023-06-01", "2023-06-15"], ndvi=True)
    graph = cube.flat_graph()
    node = next(n for n in graph.values() if n["process_id"] == udp_id)
    assert node["namespace"] == url
    assert node["arguments"]["spatial_extent"] == {"west": 5.05, "south": 51.21, "east": 5.08, "north": 51.23, "crs": "EPSG:4326"}
    assert node["arguments"]["temporal_extent"] == ["2023-06-01", "2023-06-15"]
    assert set(node["arguments"]) <= {p["name"] for p in response.json()["parameters"]}
    # the backend dropped default_job_options: the example rebuilds the archives from the links, memory from the UDP's defaults
    options = example.job_options(response.json())
    assert options["udf-dependency-archives"] == [f"{W1}#s2sr_deps", ONNX_DEPS_ARCHIVE]
    assert options["executor-memoryOverhead"] == udp(W1)["default_job_options"]["executor-memoryOverhead"]

    # the backend's dry run follows the URL into our graph: the dummy lacks SENTINEL2_L2A ...
    connection.authenticate_basic(BASIC_USER, BASIC_PASSWORD)
    errors = connection.validate_process_graph(cube)
    assert [e["code"] for e in errors] == ["CollectionNotFound"] and "SENTINEL2_L2A" in errors[0]["message"]
    # ... and accepts the whole graph with a collection it has
    other = example.build(connection, url, [5.05, 51.21, 5.08, 51.23], ["2023-06-01", "2023-06-15"],
                          product="SENTINEL2_L2A_SENTINELHUB")
    assert connection.validate_process_graph(other) == []


def load_example():
    spec = importlib.util.spec_from_file_location("udp_by_url", REPO / "examples" / "udp_by_url.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def hosted_udp_json(tmp_path):
    """The UDP JSON with its default_job_options on a static web server (as a catalogue hosts it)."""
    folder = tmp_path / "www"
    folder.mkdir()
    (folder / "sentinel2_superresolution.json").write_text(_udp(W2))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/sentinel2_superresolution.json"
    httpd.shutdown()
    httpd.server_close()


def test_hosted_json_brings_its_job_options(openeo_server, hosted_udp_json):
    """A batch job on a UDP referenced by the URL of the hosted JSON gets its default_job_options."""
    connection = openeo.connect(openeo_server.url, auto_validate=False)
    connection.authenticate_basic(BASIC_USER, BASIC_PASSWORD)
    cube = load_example().build(connection, hosted_udp_json, [5.05, 51.21, 5.08, 51.23], ["2023-06-01", "2023-06-15"])
    cube.create_job(title="s2sr by URL")
    deadline = time.monotonic() + 10
    while "job_option_defaults" not in openeo_server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    line = next(x for x in openeo_server.log().splitlines() if "job_option_defaults" in x)
    assert f"{W2}#s2sr_deps" in line and "onnx_deps_python311.zip#onnx_deps" in line and "executor-memoryOverhead" in line


def test_wrong_password_is_a_clear_error(openeo_server, capsys):
    rc, out, err = run_cli(capsys, "register", "--backend", openeo_server.url, "--archive-url", W1,
                           "--auth", "basic", "--user", BASIC_USER, "--password", "wrong")
    assert rc == 1 and out == ""
    error = err.strip().splitlines()[-1]
    assert error.startswith("s2sr-deploy: error: authentication failed") and "CredentialsInvalid" in error


def test_check_only_without_login(openeo_server, capsys):
    rc, out, err = run_cli(capsys, "register", "--backend", openeo_server.url, "--archive-url", W1, "--auth", "none", "--dry-run")
    assert rc == 0 and "offers every process" in out
    assert "none of the collections" in err  # the dummy has no SENTINEL2_L2A / _L1C: a warning only
    rc, _, err = run_cli(capsys, "register", "--backend", openeo_server.url, "--archive-url", W1, "--auth", "none")
    assert rc == 1 and "needs authentication" in err


def test_unreachable_backend_is_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "s2sr.deploy.cli", "register", "--backend", url, "--archive-url", W1,
                           "--user", BASIC_USER, "--password", BASIC_PASSWORD], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == f"s2sr-deploy: error: cannot reach the openEO backend at {url}: Connection refused"
    assert time.monotonic() - start < 30  # no long retry loop on a refused connection


def test_silent_backend_times_out():
    """A server that accepts the connection and never answers: one timeout per request, no retry loop."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # keep it open, never reply
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "s2sr.deploy.cli", "register", "--backend", url, "--archive-url", W1,
                               "--timeout", "2", "--user", BASIC_USER, "--password", BASIC_PASSWORD],
                              capture_output=True, text=True, timeout=90)
    finally:
        stop.set()
    took = time.monotonic() - start
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == f"s2sr-deploy: error: the openEO backend at {url} did not answer within 2 s (--timeout)"
    assert held, "the server never saw a connection"
    assert took < 20, took  # two requests (version discovery, capabilities) at 2 s each, plus start-up
    assert cli.build_parser().parse_args(["register", "--backend", url]).timeout == 30  # the default is bounded too


def test_backend_without_run_udf(openeo_driver_python, tmp_path, capsys):
    config = config_without(tmp_path / "no_run_udf.py", ["run_udf"])
    server = start_server(openeo_driver_python, tmp_path / "server.log", config=config)
    try:
        ids = [p["id"] for p in openeo.connect(server.url).list_processes()]
        assert "run_udf" not in ids and "apply_neighborhood" in ids
        rc, out, err = run_cli(capsys, *register_args(server, "s2sr_no_udf", "--archive-url", W1))
    finally:
        server.stop()
    assert rc == 1 and out == ""
    assert err.strip().splitlines()[-1] == f"s2sr-deploy: error: the backend {server.api} lacks processes the UDP uses: run_udf"
    assert server.requests_made("PUT") == 0


def test_credentials_from_env_and_client_config(openeo_server, capsys, monkeypatch):
    base = ("register", "--backend", openeo_server.url, "--udp-id", "s2sr_creds", "--archive-url", W1, "--dry-run")
    monkeypatch.setenv(cli.USER_ENV, BASIC_USER)
    monkeypatch.setenv(cli.PASSWORD_ENV, BASIC_PASSWORD)
    rc, out, err = run_cli(capsys, *base)  # --auth auto: basic, since a user name is known
    assert rc == 0 and out.startswith("would create: s2sr_creds"), err
    monkeypatch.delenv(cli.USER_ENV)
    monkeypatch.delenv(cli.PASSWORD_ENV)
    rc, _, err = run_cli(capsys, *base, "--auth", "basic")
    assert rc == 1 and "authentication failed" in err  # nothing given, nothing stored
    from openeo.rest.auth.config import AuthConfig

    AuthConfig().set_basic_auth(backend=openeo_server.url, username=BASIC_USER, password=BASIC_PASSWORD)  # `openeo-auth add-basic`
    rc, out, err = run_cli(capsys, *base, "--auth", "basic")
    assert rc == 0 and out.startswith("would create: s2sr_creds"), err
