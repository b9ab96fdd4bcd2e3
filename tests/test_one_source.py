"""One source of truth: the band lists, the grid maths and the int16 conversion each have one
implementation that the rest imports, and the modules import each other without a circle.

The static checks read the source tree (the packages, the benchmarks, the examples): a new copy
of a band list, of the pixel-centre maths or of the int16 cast, or a new import circle, fails
here; each checker is first shown to catch what it looks for."""

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import numpy as np
import pytest
import xarray

from s2sr.engine import coords, nodata, weights

ROOT = Path(__file__).resolve().parents[1]
#: s2sr's packages and the folders they live in (pyproject's package-dir)
PACKAGES = {"s2sr": "src/s2sr", "s2sr.udf": "udf", "s2sr.training": "training", "s2sr.deploy": "deploy"}
SOURCE_DIRS = ("src", "udf", "deploy", "training", "benchmarks", "examples")
BANDS_MODULE = Path("src/s2sr/engine/weights.py")
GRID_MODULE = Path("src/s2sr/engine/coords.py")
#: the backend's side of apply_neighborhood: its grid is its own on purpose (an independent
#: check of the UDF's, and loaded by workers without s2sr); test_the_grids_agree holds them equal
BACKEND_GRID = Path("deploy/neighborhood.py")
INT16_MODULE = Path("src/s2sr/engine/nodata.py")


def _sources(dirs=SOURCE_DIRS) -> Iterator[Tuple[Path, ast.AST]]:
    for folder in dirs:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path.relative_to(ROOT), ast.parse(path.read_text(encoding="utf-8"), str(path))


def _where(path: Path, node: ast.AST) -> str:
    return f"{path}:{node.lineno}"


# --------------------------------------------------------------------------- band lists

def band_list_copies(tree: ast.AST, bands=weights.MODEL_BANDS) -> List[ast.AST]:
    """Literal tuples, lists and sets of two or more band names that run along the models' band
    order (the list, its 10 m / 20 m split or a slice), and band-name strings cut with split().
    Band names in another order (a display's ``B04 B03 B02``) and dict keys are not lists."""
    found = []
    for node in ast.walk(tree):
        names = None
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            if len(node.elts) >= 2 and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                names = [e.value for e in node.elts]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "split"
              and isinstance(node.func.value, ast.Constant) and isinstance(node.func.value.value, str)):
            names = node.func.value.value.replace(",", " ").split()
        if not names or len(names) < 2 or not set(names) <= set(bands):
            continue
        start = bands.index(names[0])
        if tuple(names) == tuple(bands[start:start + len(names)]):
            found.append(node)
    return found


def test_the_band_checker_catches_a_copy():
    copies = band_list_copies(ast.parse('A = ("B02", "B03", "B04", "B08")\nB = ["B11", "B12"]\n'
                                        'C = "B05 B06 B07".split()\nD = ("B04", "B03", "B02")\nE = {"B02": 1, "B03": 2}\n'))
    assert sorted(n.lineno for n in copies) == [1, 2, 3]


def test_one_band_list():
    """Only the engine's weights module spells out the bands; everything else imports them."""
    copies = [_where(path, node) for path, tree in _sources() if path != BANDS_MODULE for node in band_list_copies(tree)]
    assert not copies, f"literal band lists outside {BANDS_MODULE} (import s2sr.engine.weights' instead): {copies}"
    assert weights.MODEL_BANDS == weights.BANDS_10M + weights.BANDS_20M and len(weights.MODEL_BANDS) == 10


def test_the_band_lists_are_the_engines():
    from s2sr import cli
    from s2sr.deploy import local, udp
    from s2sr.training import bands
    from s2sr.training.data import scene, sen2venus

    assert bands.BANDS is cli.REQUIRED_BANDS is local.UNNAMED_ORDER[10] is weights.MODEL_BANDS
    assert scene.BANDS_10M is local.BANDS_10M is weights.BANDS_10M and scene.BANDS_20M is local.BANDS_20M is weights.BANDS_20M
    assert (udp.BANDS_10M, udp.BANDS_20M) == (list(weights.BANDS_10M), list(weights.BANDS_20M))
    assert sen2venus.S2_10M_BANDS + sen2venus.S2_20M_BANDS + sen2venus.S2_SWIR_BANDS == weights.MODEL_BANDS
    assert [b for b in weights.MODEL_BANDS if bands.NATIVE_RESOLUTION_M[b] == 10] == list(weights.BANDS_10M)


# --------------------------------------------------------------------------- grid maths

def _is_arange(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "arange"


def grid_maths_copies(tree: ast.AST) -> List[ast.AST]:
    """``arange(...) + 0.5`` (pixel centres from an edge) and ``(v[-1] - v[0]) / (n - 1)`` (a
    regular axis's step): the pixel-centre maths that ``s2sr.engine.coords`` implements."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.BinOp):
            continue
        if isinstance(node.op, ast.Add) and any(_is_arange(a) for a in (node.left, node.right)) \
                and any(isinstance(a, ast.Constant) and a.value == 0.5 for a in (node.left, node.right)):
            found.append(node)
        elif isinstance(node.op, ast.Div) and isinstance(node.left, ast.BinOp) and isinstance(node.left.op, ast.Sub) \
                and isinstance(node.right, ast.BinOp) and isinstance(node.right.op, ast.Sub) \
                and isinstance(node.right.right, ast.Constant) and node.right.right.value == 1 \
                and all(isinstance(s, ast.Subscript) for s in (node.left.left, node.left.right)):
            found.append(node)
    return found


def test_the_grid_checker_catches_a_copy():
    code = ("x = t.c + (np.arange(w) + 0.5) * t.a\nstep = (v[-1] - v[0]) / (v.size - 1)\n"
            "y = np.linspace(a + 0.5 * g, b - 0.5 * g, n)\nk = torch.arange(n) + 1\n")
    assert sorted(n.lineno for n in grid_maths_copies(ast.parse(code))) == [1, 2]


def test_one_grid_maths():
    """The geo code (engine, UDF, deploy, benchmarks, examples) computes pixel centres and steps
    through s2sr.engine.coords only, but for the backend's emulation (``BACKEND_GRID``).
    (training/ resamples images: its ``(i + 0.5) / f - 0.5`` maps are kernels' sample
    positions, not grids.)"""
    copies = [_where(path, node) for path, tree in _sources(("src", "udf", "deploy", "benchmarks", "examples"))
              if path not in (GRID_MODULE, BACKEND_GRID) for node in grid_maths_copies(tree)]
    assert grid_maths_copies(ast.parse((ROOT / BACKEND_GRID).read_text()))  # the exemption still has a reason
    assert not copies, f"pixel-centre maths outside {GRID_MODULE} (call s2sr.engine.coords): {copies}"


def test_the_grids_agree():
    """The local engine's grids, the backend's (apply_neighborhood's windows and stitched output)
    and the UDF's output grid are one grid: a 10 m raster, its windows and its 5 m refinement."""
    from rasterio.transform import Affine

    from s2sr.deploy import local, neighborhood

    grid = local.Grid("EPSG:32618", Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4200000.0), 7, 5)
    c = grid.coords()
    assert np.array_equal(c["x"], 500005.0 + 10.0 * np.arange(7)) and np.array_equal(c["y"], 4199995.0 - 10.0 * np.arange(5))
    cube = xarray.DataArray(np.zeros((5, 7), np.float32), dims=("y", "x"), coords=c, attrs={"crs": grid.crs})
    assert local.cube_grid(cube) == grid  # centres -> edges -> centres
    fine = local.Grid(grid.crs, grid.transform @ Affine.scale(0.5), 14, 10).coords()
    for axis in ("x", "y"):
        assert np.array_equal(coords.fine_axis(c[axis], 2, axis, None), fine[axis])
        assert np.array_equal(coords.fine_axis(c[axis], 2, axis, 10.0), fine[axis])
        assert np.array_equal(neighborhood.fine_coords(c[axis], 2), fine[axis])
        # a window reaching 3 pixels past the start: the same grid, extended
        step = 10.0 if axis == "x" else -10.0
        assert coords.regular_step(c[axis]) == step
        assert np.array_equal(neighborhood._regular_coords(c[axis], -3, 13, None), c[axis][0] + step * np.arange(-3, 10))
    seen = []

    def double(window):
        seen.append(window)
        y = coords.fine_axis(window.y.values, 2, "y", None)
        x = coords.fine_axis(window.x.values, 2, "x", None)
        return xarray.DataArray(np.zeros((y.size, x.size), np.float32), dims=("y", "x"), coords={"y": y, "x": x})

    out = neighborhood.apply_neighborhood(cube, double, size=4, overlap=1)
    assert len(seen) == 4 and np.array_equal(out.x.values, fine["x"]) and np.array_equal(out.y.values, fine["y"])
    assert np.allclose(seen[0].x.values, 500005.0 + 10.0 * np.arange(-1, 5))


# --------------------------------------------------------------------------- int16

def int16_casts(tree: ast.AST) -> List[ast.AST]:
    """``.astype(<int16>)`` and ``np.clip(..., -10000, ...)``-style conversions to int16."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "astype" and node.args:
            arg = node.args[0]
            if (isinstance(arg, ast.Attribute) and arg.attr == "int16") or (isinstance(arg, ast.Constant) and arg.value == "int16"):
                found.append(node)
    return found


def test_the_int16_checker_catches_a_copy():
    code = 'a = v.astype(np.int16)\nb = v.astype("int16")\nc = v.astype(np.uint16)\n'
    assert sorted(n.lineno for n in int16_casts(ast.parse(code))) == [1, 2]


def test_one_int16_conversion():
    copies = [_where(path, node) for path, tree in _sources(("src", "udf", "deploy", "benchmarks", "examples"))
              if path != INT16_MODULE for node in int16_casts(tree)]
    assert not copies, f"int16 conversions outside {INT16_MODULE} (call s2sr.engine.nodata.to_int16): {copies}"


#: valid values at and beyond the no-data value, rounding onto it, past int16; then no-data
INT16_CASES = np.array([-10000.4, -9999.6, -10000.0, -20000.0, -40000.0, 40000.0, 12.5, -0.4, np.nan, np.inf], np.float32)
INT16_EXPECTED = [-9999, -9999, -9999, -9999, -9999, 32767, 12, 0, -10000, -10000]


def test_a_valid_value_never_becomes_nodata():
    assert nodata.to_int16(INT16_CASES.copy()).tolist() == INT16_EXPECTED


def test_the_geotiff_writer_converts_as_the_udf(tmp_path):
    """``s2sr run``'s int16 GeoTIFF and the UDF's ``output_dtype: int16`` write the same values: a
    valid very negative value is not written as no-data (it was: clipped to -10000)."""
    import rasterio

    from s2sr.deploy import local

    values = np.broadcast_to(INT16_CASES, (2, 3, INT16_CASES.size)).astype(np.float64)  # float64: the writer's own copy
    cube = xarray.DataArray(values, dims=("bands", "y", "x"),
                            coords={"bands": ["B02", "B03"], "y": 4199997.5 - 5.0 * np.arange(3),
                                    "x": 500002.5 + 5.0 * np.arange(INT16_CASES.size)}, attrs={"crs": "EPSG:32618"})
    before = cube.values.copy()
    path = local.to_geotiff(cube, tmp_path / "x.tif", "int16")
    assert np.array_equal(cube.values, before, equal_nan=True)  # the cube is not rounded in place
    with rasterio.open(path) as src:
        assert src.nodata == nodata.INT16_NODATA
        assert src.read(2)[1].tolist() == INT16_EXPECTED


# --------------------------------------------------------------------------- import circles

def _modules() -> Dict[str, Path]:
    mods = {}
    for package, folder in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([package] + parts)
            if not any(name == other or name.startswith(other + ".") for other in PACKAGES if other.startswith(package + ".")):
                mods[name] = path
    return mods


def imported(name: str, tree: ast.AST, is_package: bool, known) -> Set[str]:
    """The modules of ``known`` that module ``name`` imports, at its top or inside functions."""
    base = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module
            if node.level:
                parent = base
                for _ in range(node.level - 1):
                    parent = parent.rpartition(".")[0]
                module = parent + (f".{node.module}" if node.module else "")
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def circles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_circle_checker_catches_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    code = ast.parse("def f():\n    from .export import model_from_weights\n")
    assert imported("s2sr.training.evaluate", code, False, {"s2sr.training.export"}) == {"s2sr.training.export"}


def test_no_import_circle():
    """Not even through imports inside functions (evaluate -> export -> quantize -> evaluate was one)."""
    mods = _modules()
    assert "s2sr.training.quantize" in mods and "s2sr.engine.coords" in mods and "s2sr.udf" in mods
    graph = {name: imported(name, ast.parse(path.read_text(encoding="utf-8")), path.name == "__init__.py", mods)
             for name, path in mods.items()}
    assert not circles(graph)


@pytest.mark.parametrize("module", ["s2sr.training.quantize", "s2sr.training.export", "s2sr.training.evaluate",
                                    "s2sr.training.protocol"])
def test_imports_first_in_a_fresh_interpreter(module):
    out = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
