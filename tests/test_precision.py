"""Reduced-precision paths of the UDF: bf16 trunk, channels-last; the chunking contract holds
within the path's own error against FP32.  ``auto`` takes its precision from the benchmarked CPU
table (src/s2sr/engine/auto_choices.json: Zen 3 and Zen 4 int8_dynamic on ncnn, Zen 5 bf16 on torch),
fp32 elsewhere."""

import pytest

from s2sr_testing import chunking_vs_own_error, cube_with_gap, error_vs_fp32


@pytest.fixture(scope="module")
def cube():
    return cube_with_gap(44, 40, 21, 2, slice(10, 14), slice(30, 35))


def test_bf16_close_to_fp32_and_nodata_identical(udf_code, slim_weights, cube):
    err = error_vs_fp32(udf_code, cube, {"weights": str(slim_weights)}, "bf16")
    assert 0 < err < 0.01  # really a different path, and a bounded error (reflectance)


def test_bf16_chunking_within_its_own_error(udf_code, slim_weights, slim_overlap, cube):
    seams, own_error = chunking_vs_own_error(udf_code, cube, {"weights": str(slim_weights), "precision": "bf16"}, slim_overlap)
    assert seams <= own_error + 1e-3


ZEN3 = {"machine": "x86_64", "vendor": "AuthenticAMD", "family": 25, "model": 1, "name": "AMD EPYC", "flags": ["avx2", "fma"]}
ZEN4 = {**ZEN3, "model": 17, "flags": ["avx2", "avx512_bf16", "avx512_vnni", "avx512f", "fma"]}
XEON = {**ZEN3, "vendor": "GenuineIntel", "family": 6, "model": 143, "name": "Intel Xeon", "flags": ZEN4["flags"]}


#: what auto runs on each benchmarked CPU model (Zen 3: int8, on ncnn)
AUTO_CASES = [
    (ZEN3, ("int8_dynamic", "ncnn")),  # benchmarked: docs/benchmarks_zen3.json
    (ZEN4, ("int8_dynamic", "ncnn")),  # benchmarked: docs/benchmarks_zen4.json
    ({**ZEN4, "family": 26}, ("bf16", "torch")),  # Zen 5: issue 23's figures
]


@pytest.mark.parametrize("cpu, expected", AUTO_CASES + [(XEON, None)])
def test_the_cases_are_the_tables(cpu, expected):
    """The cases here say what auto_choices.json says (checked without ncnn or weights)."""
    from s2sr.engine.precision import table_choice

    entry = table_choice(cpu)
    assert (entry and (entry["precision"], entry["runtime"])) == expected


@pytest.mark.parametrize("cpu, expected", AUTO_CASES)
def test_auto_precision_follows_the_benchmarked_cpu_table(fresh_decisions, slim_weights, monkeypatch, cpu, expected):
    from pathlib import Path

    if expected[1] == "ncnn" and not fresh_decisions.ncnn_available():
        pytest.skip("needs the ncnn package")
    monkeypatch.setattr(fresh_decisions, "cpu_signature", lambda: cpu)
    loaded = []
    monkeypatch.setattr(fresh_decisions, "load", lambda *args: loaded.append(args[4:6]))  # no model needed to decide
    assert fresh_decisions.choose_path(Path(slim_weights).resolve(), "auto", "cpu")[1:] == expected
    assert loaded == [expected]  # the choice is checked by loading it once
    (record,) = fresh_decisions.decisions()
    assert record["key"]["cpu"] == cpu and "auto_choices.json" in record["reason"]


@pytest.mark.parametrize("runtime, ncnn", [("auto", False), ("torch", True), ("torch", False)])
def test_a_table_choice_runs_only_on_its_runtime(fresh_decisions, slim_weights, monkeypatch, runtime, ncnn):
    """Zen 3's int8_dynamic was measured on ncnn (per-pixel scales); on torch its per-tensor scales
    follow the window cut: without ncnn, or with torch asked, auto runs fp32."""
    from pathlib import Path

    monkeypatch.setattr(fresh_decisions, "cpu_signature", lambda: ZEN3)
    monkeypatch.setattr(fresh_decisions, "ncnn_available", lambda: ncnn)
    loaded = []
    monkeypatch.setattr(fresh_decisions, "load", lambda *args: loaded.append(args[4:6]))
    _, precision, used = fresh_decisions.choose_path(Path(slim_weights).resolve(), "auto", "cpu", runtime)
    assert (precision, used) == ("fp32", "torch") and loaded == [("fp32", "torch")]
    (record,) = fresh_decisions.decisions()
    why = "is not installed here" if not ncnn else "is not the runtime asked (torch)"
    assert f"its runtime ncnn {why}: fp32" in record["reason"]


def test_an_unlisted_cpu_runs_fp32_and_times_only_fp32_runtimes(fresh_decisions, slim_weights, monkeypatch):
    """No reduced precision without a benchmark of the CPU model: fp32, on torch or ncnn (the same
    function within 1e-5, so workers that time differently make no seam)."""
    from pathlib import Path

    monkeypatch.setattr(fresh_decisions, "cpu_signature", lambda: XEON)
    path, precision, runtime = fresh_decisions.choose_path(Path(slim_weights).resolve(), "auto", "cpu")
    assert precision == "fp32" and runtime in ("torch", "ncnn")
    (record,) = fresh_decisions.decisions()
    assert "not in auto_choices.json" in record["reason"]
    assert ("fp32 timed" in record["reason"]) == fresh_decisions.ncnn_available()


def test_the_decision_is_made_once_and_read_back_by_other_processes(fresh_decisions, slim_weights, monkeypatch):
    """The decision file: a later process (here: this one with its memory cleared) reads the
    decision instead of deciding again; a file for another key or a broken one is not used."""
    import json
    from pathlib import Path

    path = Path(slim_weights).resolve()
    monkeypatch.setattr(fresh_decisions, "cpu_signature", lambda: XEON)
    first = fresh_decisions.choose_path(path, "auto", "cpu", "torch")
    (record,) = fresh_decisions.decisions()
    file = Path(record["file"])
    assert json.loads(file.read_text())["precision"] == first[1]

    def must_not_decide(*args):
        raise AssertionError("decided again")

    monkeypatch.setattr(fresh_decisions, "_DECISIONS", {})
    monkeypatch.setattr(fresh_decisions, "_decide", must_not_decide)
    assert fresh_decisions.choose_path(path, "auto", "cpu", "torch") == first
    file.write_text("{broken")
    monkeypatch.setattr(fresh_decisions, "_DECISIONS", {})
    with pytest.raises(AssertionError, match="decided again"):
        fresh_decisions.choose_path(path, "auto", "cpu", "torch")


def test_a_table_choice_that_cannot_load_falls_back_to_fp32(fresh_decisions, slim_weights, monkeypatch):
    """Zen 4's int8_dynamic on ncnn that fails to load (an ncnn build without int8 Gemm): fp32 on torch."""
    from pathlib import Path

    monkeypatch.setattr(fresh_decisions, "cpu_signature", lambda: ZEN4)
    monkeypatch.setattr(fresh_decisions, "ncnn_available", lambda: True)
    loaded = []

    def load(path, size, mtime, device, precision, runtime, threads):
        loaded.append((precision, runtime))
        if precision == "int8_dynamic":
            raise ValueError("no int8 Gemm here")

    monkeypatch.setattr(fresh_decisions, "load", load)
    assert fresh_decisions.choose_path(Path(slim_weights).resolve(), "auto", "cpu")[1:] == ("fp32", "torch")
    assert loaded == [("int8_dynamic", "ncnn"), ("fp32", "torch")]


def test_table_matching():
    from s2sr.engine.precision import table_choice

    assert table_choice(ZEN3)["name"] == "AMD Zen 3"
    assert table_choice(ZEN4)["name"] == "AMD Zen 4"
    assert table_choice({**ZEN4, "family": 26})["name"] == "AMD Zen 5"
    assert table_choice(XEON) is None
    assert table_choice({**ZEN3, "flags": []}) is None  # family 25 without AVX2: not what was measured


def test_cpu_signature_reads_this_machine():
    from s2sr.engine.precision import cpu_signature

    cpu = cpu_signature()
    assert cpu["vendor"] and isinstance(cpu["family"], int) and isinstance(cpu["flags"], list)


def test_on_a_gpu_auto_is_bf16_where_it_has_bf16(fresh_decisions, slim_weights, monkeypatch):
    """A GPU (no GPU needed to choose): bf16 where the GPU has bf16 tensor cores, fp32 elsewhere;
    a forced precision is taken as it is; forward passes run cuDNN without TensorFloat-32."""
    import contextlib
    from pathlib import Path

    import torch

    from s2sr import engine

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setattr(fresh_decisions, "load", lambda *args: None)
    path = Path(slim_weights).resolve()
    assert engine.choose_path(path, "auto", "cuda")[1:] == ("bf16", "torch")
    assert engine.choose_path(path, "fp32", "cuda")[1:] == ("fp32", "torch")
    assert engine.choose_path(path, "bf16", "cuda", "torch")[1:] == ("bf16", "torch")
    with pytest.raises(ValueError, match="CPU only"):
        engine.choose_path(path, "fp32", "cuda", "ncnn")
    assert isinstance(engine.gpu_flags("cpu"), contextlib.nullcontext)
    before = torch.backends.cudnn.allow_tf32
    with engine.gpu_flags("cuda"):  # cuDNN's flags are process settings: they can be read without a GPU
        assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.allow_tf32 == before


def test_bf16_refuses_weights_without_the_cast(udf_module, tmp_path, slim_weights):
    import json

    import torch

    from s2sr.training.export import script
    from s2sr import engine

    class Old(torch.nn.Module):  # the pre-bf16 layout: no backbone.compute_dtype
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    meta = engine.read_metadata(slim_weights)
    model = Old(torch.jit.load(str(slim_weights)))
    path = tmp_path / "old.pt"
    torch.jit.save(script(model), str(path), _extra_files={engine.METADATA_FILE: json.dumps(meta)})
    with pytest.raises(ValueError, match="predates the bf16 path"):
        engine.load_model({"weights": str(path), "precision": "bf16"})


def test_a_decision_made_under_another_table_is_made_again(fresh_decisions, slim_weights, monkeypatch, tmp_path):
    """A worker upgraded to a package whose table changed its CPU's choice (Zen 4: bf16 on torch,
    then int8_dynamic on ncnn) must not read back the decision file the old table wrote."""
    import json
    from pathlib import Path

    table = tmp_path / "auto_choices.json"
    entry = {"name": "AMD Zen 4", "vendor": "AuthenticAMD", "family": 25, "flags": {"avx512_bf16": True},
             "precision": "bf16", "runtime": "torch", "evidence": "test"}
    table.write_text(json.dumps({"cpus": [entry]}))
    monkeypatch.setattr(fresh_decisions, "AUTO_TABLE", table)
    monkeypatch.setattr(fresh_decisions, "cpu_signature", lambda: ZEN4)
    monkeypatch.setattr(fresh_decisions, "load", lambda *args: None)
    path = Path(slim_weights).resolve()
    assert fresh_decisions.choose_path(path, "auto", "cpu", "torch")[1:] == ("bf16", "torch")
    table.write_text(json.dumps({"cpus": [dict(entry, precision="fp32")]}))
    monkeypatch.setattr(fresh_decisions, "_DECISIONS", {})  # a later process: only the file remains
    assert fresh_decisions.choose_path(path, "auto", "cpu", "torch")[1:] == ("fp32", "torch")
