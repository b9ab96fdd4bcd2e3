"""The inference benchmark's machinery (no time thresholds: the figures are the script's job):
its workers run the real paths, and the committed report is what its own JSON renders to."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ISSUE_KEYS = ("mpix_per_s", "onnxruntime_mpix_per_s", "speedup_vs_onnxruntime", "peak_fraction",
              "full_tile_minutes_1core", "peak_memory_gib", "onnxruntime_peak_memory_gib", "psnr_drop_db_vs_fp32")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("s2sr_bench", ROOT / "benchmarks" / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=["zen3", "zen4", "zen4_carn_2x3x64g4sw"])
def report(request):
    """Each committed full run (one per CPU)."""
    return dict(json.loads((ROOT / "docs" / f"benchmarks_{request.param}.json").read_text()), name=request.param)


def test_committed_report_is_its_json_rendered(bench, report):
    summary = bench.summarize(report, max(int(t) for t in report["peak_gflops"]))
    assert all(summary[k] is not None for k in ISSUE_KEYS)
    assert summary["speedup_vs_onnxruntime"] == pytest.approx(summary["mpix_per_s"] / summary["onnxruntime_mpix_per_s"])
    # overlap counted; no more than the core does: FLOPs are the direct convolution's, and ncnn's
    # Winograd F(4x4, 3x3) does 4x fewer on the 3 x 3 convs (70 % of them): at most 1 / (0.3 + 0.7 / 4) = 2.1x;
    # int8_dynamic's 1 x 1 products (the other 30 %) in int8, up to 4x the fp32 peak on VNNI: 1 / (0.3 / 4 + 0.7 / 4) = 4x
    bound = {"ncnn": 4.1 if summary["precision"] == "int8_dynamic" else 2.2}.get(summary["runtime"], 1.1)
    assert summary["peak_fraction"] < summary["peak_fraction_computed"] < bound
    assert {k: summary[k] for k in ISSUE_KEYS} == pytest.approx({k: report["summary"][k] for k in ISSUE_KEYS})
    # the markdown beside it says the same (the plot needs matplotlib, the bench extra)
    assert bench.to_markdown(report, report["command"]) == (ROOT / "docs" / f"benchmarks_{report['name']}.md").read_text()


@pytest.mark.parametrize("exact, words", [(True, "exact (VNNI"), (False, "saturating (no VNNI")])
def test_report_says_how_int8_sums(bench, report, exact, words):
    res = dict(report, int8_products_exact=exact, accuracy={**report["accuracy"], "int8": report["accuracy"]["fp32"]})
    assert words in bench.to_markdown(res, "cmd")


@pytest.mark.parametrize("path", ["udf", "udf_fp32", "eager"])
def test_workers_run_the_real_paths(bench, path):
    from s2sr import engine

    weights = str(engine.resolve_weights({}))
    margin = engine.read_metadata(weights)["margin"]
    r = bench._spawn({"path": path, "threads": 1, "window": 64, "reps": 1, "overlap": margin, "weights": weights})
    assert r["s"] > 0 and r["peak_rss_gib"] > 0.1
    if path == "udf":
        # auto's choice; never torch's int8 (static scales clip, dynamic ones follow the window)
        assert (r["precision"], r["runtime"]) in {("fp32", "torch"), ("fp32", "ncnn"), ("bf16", "torch"), ("bf16", "ncnn"),
                                                  ("int8_dynamic", "ncnn")}
    else:
        assert r["precision"] == {"eager": None, "udf_fp32": "fp32"}[path]


def test_gpu_benchmark_runs_end_to_end_on_the_cpu(tmp_path):
    """benchmarks/gpu.py runs where a GPU is lent; its machinery (inputs prepared here and read
    there without rasterio, the UDF with a device, eager, the report) is checked here on the CPU."""
    spec = importlib.util.spec_from_file_location("s2sr_gpu_bench", ROOT / "benchmarks" / "gpu.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    inputs = tmp_path / "inputs"
    assert gpu.main(["--prepare", str(inputs)]) == 0
    argv = ["--device", "cpu", "--windows", "48", "--dates", "1", "2", "--paths", "udf_fp32", "eager_fp32", "--reps", "1",
            "--accuracy", "fp32", "--inputs", str(inputs), "--out", str(tmp_path)]
    assert gpu.main(argv) == 0
    res = json.loads((tmp_path / "benchmarks_gpu.json").read_text())
    assert not res["errors"]
    assert [(r["path"], r["dates"]) for r in res["rows"]] == [("udf_fp32", 1), ("eager_fp32", 1), ("udf_fp32", 2), ("eager_fp32", 2)]
    assert all(r["mpix_per_s"] > 0 and r["size"] == 48 - 2 * res["margin_px"] for r in res["rows"])
    assert res["rows"][0]["precision"] == "fp32"
    assert res["accuracy"]["fp32"]["max_abs_reflectance_vs_fp32"] < 1e-5  # the fp32 contract
    assert "| udf_fp32 | fp32 | 48 (6) | 2 |" in (tmp_path / "benchmarks_gpu.md").read_text()


def test_full_tile_counts_the_edge_windows_by_what_they_compute(bench):
    """The UDP's 470 px windows (21 px overlap): 24 per axis over 10980 px, the last holding
    170 px of the tile after its overlap, so computing 170 + 2 x 21 px; with edge windows as
    costly as full ones the measured figure is 24^2 windows, and by area it is less."""
    assert bench.tile_layout(470, 21) == (24, 212)
    assert bench.tile_layout(10980, 21) == (1, 11022)  # one window: the whole tile
    full = bench.tile_minutes_measured(60.0, {"right": 60.0, "bottom": 60.0, "corner": 60.0}, 470)
    assert full == pytest.approx(24 ** 2)
    by_area = bench.tile_minutes_by_area(60.0, 512, 470)
    assert by_area == pytest.approx((23 * 512 + 212) ** 2 / 512 ** 2) and by_area < full


def test_backend_windows_benchmark_reports_per_window_figures(tmp_path):
    """benchmarks/backend_windows.py on three small windows: every figure the issue asks for."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "backend_windows.py"
    out = tmp_path / "b.json"
    run = subprocess.run([sys.executable, str(script), "--windows", "3", "--window", "64", "--warm", "2",
                          "--precision", "fp32", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    r = json.loads(out.read_text())
    assert len(r["window_s"]) == 3 and len(r["rss_mib"]) == 4 and len(r["warm_s"]) == 2
    assert r["one_time_cost_s"] > 0 and r["later_windows_median_s"] > 0  # the one-time costs, timed alone
    assert r["later_over_warm"] > 0 and r["one_time_cost_s"] > 0
    assert "window / the warm call after it" in run.stdout


@pytest.mark.parametrize("cpu, name", [
    ("AMD EPYC (family 25 model 1; avx2)", "zen3"),
    ("AMD EPYC 9R14 (family 25 model 17; avx2/avx512f/avx512_bf16/avx512_vnni)", "zen4"),
    ("AMD EPYC (family 26 model 2; avx2/avx512f/avx512_bf16/avx512_vnni)", "zen5"),
    ("Intel(R) Xeon(R) Platinum 8488C (family 6 model 143; avx2/avx512f/avx512_bf16/avx512_vnni)", "xeon"),
    ("Some CPU (family 1 model 2; no AVX2)", "some_cpu_family_1_model_2_no_avx2"),
])
def test_one_report_per_cpu(bench, tmp_path, cpu, name):
    assert bench.cpu_name(cpu) == name
    assert bench.report_path(tmp_path, cpu) == tmp_path / f"benchmarks_{name}.md"  # a folder: the CPU's file in it
    assert bench.report_path(tmp_path / "x.md", cpu) == tmp_path / "x.md"
    assert bench.report_path(tmp_path / "new", cpu) == tmp_path / "new" / f"benchmarks_{name}.md"  # a folder to make
    # another shipped model's run does not overwrite the default's report
    assert bench.report_path(tmp_path, cpu, "w/carn_2x3x64g4sw.pt") == tmp_path / f"benchmarks_{name}_carn_2x3x64g4sw.md"
    assert bench.report_path(tmp_path, cpu, "w/carn_3x3x64g4sw.pt") == tmp_path / f"benchmarks_{name}.md"


def test_report_states_the_targets(bench, report):
    res = dict(report, summary=bench.summarize(report, 2))
    md = bench.to_markdown(res, "cmd")
    s = res["summary"]
    met = "yes" if s["speedup_vs_onnxruntime"] >= 2 else "no"  # whatever the committed run measured
    assert f"| >= 2x | {s['speedup_vs_onnxruntime']:.2f}x | {met} |" in md
    # a full tile in core-minutes on the backend's path, task-cpus 2: 2 x (2-core minutes x the per-window ratio + the one-time load)
    two = s["full_tile_core_minutes_backend_2threads"]
    if two is not None:
        assert two > 2 * s["full_tile_minutes_2cores"] * 0.9
    deployed = s["full_tile_core_minutes_backend"]
    if deployed is not None:
        assert f"| <= 90 | {deployed:.0f} | {'yes' if deployed <= 90 else 'no'} |" in md
    elif two is not None and s["task_cpus"] == 1:  # a run from before the side-by-side tasks: the other layout beside
        assert f"| <= 90 | not measured (task-cpus 2: {two:.0f}) |  |" in md
    slow = dict(res, summary=dict(s, speedup_vs_onnxruntime=1.5))
    assert "| >= 2x | 1.50x | no |" in bench.to_markdown(slow, "cmd")
    fast = dict(res, summary=dict(s, speedup_vs_onnxruntime=2.5))
    assert "| >= 2x | 2.50x | yes |" in bench.to_markdown(fast, "cmd")


def test_the_int8_peer_is_onnxruntimes_own_static_int8(bench, slim_weights, tmp_path):
    """Issue 23's int8 peer: onnxruntime's QDQ quantization of the ONNX the reference runs, the
    trunk's convs in int8 and the head and tail in float32, timed by the benchmark's own worker."""
    import onnx

    from s2sr import engine
    from s2sr.training.onnx_export import export_onnx

    source = export_onnx(Path(slim_weights), tmp_path / "slim.onnx")
    peer = bench._spawn({"path": "quantize_onnx_int8", "threads": 1, "window": 0, "reps": 0, "onnx": str(source),
                         "folder": str(tmp_path)})
    graph = onnx.load(peer["path"]).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    made = {o: n for n in graph.node for o in n.output}
    quantized = {n.name for n in convs if made.get(n.input[0]) is not None and made[n.input[0]].op_type == "DequantizeLinear"}
    assert len(convs) == 42 and set(bench.ONNX_INT8_FLOAT_NODES).isdisjoint(quantized) and len(quantized) == 40
    margin = engine.read_metadata(slim_weights)["margin"]
    r = bench._spawn({"path": "onnxruntime_int8", "threads": 1, "window": 64, "reps": 1, "overlap": margin,
                      "onnx": str(source), "onnx_int8": peer["path"], "weights": str(slim_weights)})
    assert r["s"] > 0
    acc = bench.onnx_accuracy(str(slim_weights), peer["path"], reference=source)
    assert 0 < acc["max_abs_reflectance_vs_fp32"] < 0.5 and acc["psnr_drop_db_vs_fp32"] < 3  # int8, not broken


def test_tasks_side_by_side_time_their_calls_together(bench, tmp_path):
    """task-cpus 1: two 1-thread workers start at once and time their calls only once both are
    loaded and warm (a file barrier), so each one's figure is taken beside the other."""
    from s2sr import engine

    weights = str(engine.resolve_weights({}))
    margin = engine.read_metadata(weights)["margin"]
    side = bench._spawn_together({"path": "udf", "threads": 1, "window": 64, "reps": 1, "overlap": margin,
                                  "weights": weights}, 2)
    assert len(side) == 2 and all(r["s"] > 0 and r["peak_rss_gib"] > 0.1 for r in side)
    with pytest.raises(TimeoutError):  # a task alone never passes a barrier for two
        bench._wait_for_all(tmp_path, 2, timeout_s=0.05)


@pytest.mark.parametrize("path, layout", [("udf_strips", "strips"), ("udf_tiles", "tiles")])
def test_layout_paths_force_ncnns_window_layout(bench, path, layout):
    """``measure_layouts``' workers: the udf path on 2 threads with S2SR_NCNN_LAYOUT set, as an
    admin sets it (docs/udf.md); each says which layout ran."""
    pytest.importorskip("ncnn")
    from s2sr import engine

    weights = str(engine.resolve_weights({}))
    margin = engine.read_metadata(weights)["margin"]
    r = bench._spawn({"path": path, "threads": 2, "window": 64, "reps": 1, "overlap": margin, "weights": weights})
    if r["runtime"] != "ncnn":
        pytest.skip(f"auto runs {r['runtime']} on this CPU")
    assert r["layout"] == layout and r["s"] > 0


def test_report_shows_the_layouts_side_by_side(bench, report):
    res = dict(report, ncnn_layouts={"window": 512, "threads": 2, "s": {"strips": [8.0, 7.0], "tiles": [7.0, 7.5]},
                                     "peak_rss_gib": {"strips": 1.5, "tiles": 1.6}, "strips_over_tiles": [8 / 7, 7 / 7.5]})
    text = bench.to_markdown(res, "cmd")
    assert "row strips on one 2-thread network in turn 8.00, 7.00 s, tiles on two 1-thread networks at once 7.00, 7.50 s" in text
    assert "strips / tiles per round 1.14, 0.93 (median 1.04x); peak memory 1.50 / 1.60 GiB" in text


def test_a_models_report_takes_its_own_backend_figures_where_measured(bench, tmp_path, monkeypatch):
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import backend_windows

    cpu = "AMD EPYC (family 25 model 17; avx2/avx512f/avx512_bf16/avx512_vnni)"
    monkeypatch.setattr(backend_windows, "REPO", tmp_path)
    (tmp_path / "docs").mkdir()
    default = backend_windows.result_path(cpu, 1)
    fast = backend_windows.result_path(cpu, 1, "carn_2x3x64g4sw")
    assert fast.name == default.name.replace("_1thread.json", "_1thread_carn_2x3x64g4sw.json")
    assert backend_windows.result_path(cpu, 1, "carn_3x3x64g4sw") == default  # the default model: no suffix
    default.write_text(json.dumps({"context": {"precision": "auto"}, "later_over_warm": 1.01}))
    weights = "src/s2sr/weights/carn_2x3x64g4sw.pt"
    assert bench._backend_result(cpu, 1, weights)["later_over_warm"] == 1.01  # none of its own: the default's
    fast.write_text(json.dumps({"context": {"precision": "auto", "model": "carn_2x3x64g4sw"}, "later_over_warm": 1.02}))
    assert bench._backend_result(cpu, 1, weights)["later_over_warm"] == 1.02
    assert bench._backend_result(cpu, 1, "src/s2sr/weights/carn_3x3x64g4sw.pt")["later_over_warm"] == 1.01
    assert bench._backend_result(cpu, 2, weights) is None


def test_the_tile_counts_the_deployed_task_layout(bench, report, monkeypatch):
    """The tile target is read for the layout the UDP deploys: two 1-thread windows at once
    (task-cpus 1: core-minutes = the 1-core tile at the side-by-side speed, times the 1-thread
    backend ratio) or one 2-thread window (2 x the 2-core minutes, times the 2-thread ratio)."""
    from s2sr.deploy import udp

    one = bench._row(report, "udf", 1, 512)
    res = dict(report, tasks_side_by_side={"tasks": 2, "threads": 1, "window": 512, "peak_rss_gib": [1.5, 1.5],
                                           "s": [one["s_per_window"], 1.25 * one["s_per_window"]]})
    backend = {1: {"later_over_warm": 1.02, "one_time_cost_s": 3.0}, 2: {"later_over_warm": 1.03, "one_time_cost_s": 3.0}}
    monkeypatch.setattr(bench, "_backend_result", lambda cpu, threads=2, weights="": backend[threads])
    tile_1core = bench._measured_tile(res, [one], 512, 1)
    for task_cpus in (1, 2):
        monkeypatch.setattr(udp, "TASK_CPUS", task_cpus)
        s = bench.summarize(res, 2)
        assert s["full_tile_core_minutes_backend_1thread_tasks"] == pytest.approx(tile_1core * 1.25 * 1.02 + 0.1)
        assert s["full_tile_core_minutes_backend_2threads"] == pytest.approx(2 * (s["full_tile_minutes_2cores"] * 1.03 + 0.05))
        deployed = s["full_tile_core_minutes_backend_1thread_tasks" if task_cpus == 1 else "full_tile_core_minutes_backend_2threads"]
        assert s["task_cpus"] == task_cpus and s["full_tile_core_minutes_backend"] == deployed
        assert f"| full tile, core-minutes (task-cpus {task_cpus}), with the backend's per-window cost | <= 90 | {deployed:.0f} |" \
            in "\n".join(bench.targets_markdown(s))


def test_models_benchmark_times_each_model_at_its_own_and_the_udp_s_overlap(tmp_path):
    """benchmarks/models.py: every configuration timed on 1 and 2 threads and two at once, a model
    with a smaller margin than the UDP's overlap also at that overlap, and the report re-renders
    from its JSON; the committed report (one per CPU) is its JSON rendered."""
    spec = importlib.util.spec_from_file_location("s2sr_models_bench", ROOT / "benchmarks" / "models.py")
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    from s2sr import engine
    from s2sr.deploy.udp import neighborhood_geometry, shipped_models

    shipped, udp_overlap = models.shipped()
    assert udp_overlap == neighborhood_geometry(shipped_models())["overlap"] == max(m["overlap"] for m in shipped.values())
    smallest = min(shipped, key=lambda n: shipped[n]["overlap"])
    configs = models.configurations(shipped, sorted({engine.DEFAULT_MODEL, smallest}), udp_overlap)
    assert [(c["model"], c["overlap"]) for c in configs if c["model"] == engine.DEFAULT_MODEL] == [(engine.DEFAULT_MODEL, udp_overlap)]
    assert models.main(["--models", smallest, "--rounds", "1", "--window", "96", "--out", str(tmp_path)]) == 0
    (report,) = tmp_path.glob("models_*.json")
    res = json.loads(report.read_text())
    assert [r["overlap"] for r in res["rows"]] == sorted({shipped[smallest]["overlap"], udp_overlap})
    assert all(len(r[k]) == 1 and r[k][0] > 0 for r in res["rows"] for k in ("s_1", "s_2", "s_pair"))
    assert all(r["tile_core_min_task_cpus_1"] > 0 for r in res["rows"])
    assert models.to_markdown(res) == report.with_suffix(".md").read_text()
    for committed in (ROOT / "docs").glob("models_*.json"):
        assert models.to_markdown(json.loads(committed.read_text())) == committed.with_suffix(".md").read_text()
