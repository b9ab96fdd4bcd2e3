"""The job's dependency archive: what a geopyspark worker needs to run the s2sr UDF.

One zip for ``udf-dependency-archives`` (``<url>#s2sr_deps``): the backend unpacks it into the
job's working directory as ``s2sr_deps/``, and the UDF puts that folder first on ``sys.path``.
It holds:

- the ``s2sr`` package as the engine needs it (pure Python: ``s2sr/__init__.py`` and
  ``s2sr/engine/``), no training or deployment code;
- the weights (``s2sr/weights/<model>.pt``), each with its ONNX (the same network for workers
  without torch, which run it on onnxruntime from the hosted ``onnx_deps`` archive) and
  ``manifest.json`` (sha256 of every file, the engine checks them);
- optionally (``with_torch``) the CPU torch wheel and its dependencies unpacked, as VITO's
  WorldCereal ships torch: from wheels downloaded beforehand for the backend's Python (3.11,
  manylinux x86_64), e.g. ``pip download torch==2.13.0 --only-binary=:all: --platform
  manylinux_2_28_x86_64 --python-version 3.11 --implementation cp -d wheels/``.

Deterministic: the same inputs give the same bytes (sorted entries, fixed timestamps and modes).
"""

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

TARGET_DIR = "s2sr_deps"  # the folder the UDF puts on sys.path (udf/s2sr_udf.py DEPENDENCY_DIRS)
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
PYTHON_TAG = "cp311"  # the geopyspark backends' Python (run_udf version "3.11")
PLATFORM_TAG = "manylinux"
ONNX_CACHE = Path.home() / ".cache" / "s2sr" / "onnx"


def _entry(name: str, data: bytes) -> Tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info, data


def engine_files() -> List[Tuple[str, Path]]:
    """(archive name, file) of the s2sr package as the engine needs it on a worker."""
    import s2sr

    root = Path(s2sr.__file__).parent
    files = [("s2sr/__init__.py", root / "__init__.py")]
    engine = root / "engine"
    files += [(f"s2sr/engine/{p.name}", p) for p in sorted(engine.iterdir()) if p.suffix in (".py", ".json")]
    return files


def onnx_of(weights: Path) -> Path:
    """The ONNX of ``weights``, exported once per weights content (cached by sha256): export
    takes ~15 s a model, and the same weights give the same ONNX."""
    from s2sr.engine.weights import sha256_file
    from s2sr.training.onnx_export import export_onnx

    beside = weights.with_suffix(".onnx")
    if beside.is_file():
        return beside
    cached = ONNX_CACHE / f"{sha256_file(weights)}.onnx"
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(weights, cached)
    return cached


def weights_entries(models: Optional[Sequence[str]] = None) -> Iterable[Tuple[zipfile.ZipInfo, bytes]]:
    """The shipped weights (or ``models`` among them), their ONNX and the manifest listing both:
    ``s2sr-deploy weights``' manifest (``build_manifest``) with each model's ``onnx`` entry."""
    from s2sr.deploy.weights_archive import build_manifest, select_weights
    from s2sr.engine.weights import MANIFEST_FILE

    weights = select_weights(models=models)
    manifest = build_manifest(weights)
    for name, path in weights.items():
        onnx = onnx_of(path).read_bytes()
        manifest["models"][name]["onnx"] = {"file": f"{name}.onnx", "sha256": hashlib.sha256(onnx).hexdigest()}
        yield _entry(f"s2sr/weights/{path.name}", path.read_bytes())
        yield _entry(f"s2sr/weights/{name}.onnx", onnx)
    yield _entry(f"s2sr/weights/{MANIFEST_FILE}", (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())


def wheel_entries(wheels_dir: Path) -> Iterable[Tuple[zipfile.ZipInfo, bytes]]:
    """Every wheel in ``wheels_dir`` unpacked (what pip would install), after checking each is
    for the backend's Python and platform (or pure Python)."""
    wheels = sorted(Path(wheels_dir).glob("*.whl"))
    if not wheels:
        raise ValueError(f"no wheels in {wheels_dir}: download them first (pip download torch==2.13.0 "
                         "--only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp -d DIR)")
    for wheel in wheels:
        tags = wheel.stem.split("-")[-3:]  # python, abi, platform
        if not (tags[2] == "any" or (tags[0] == PYTHON_TAG and PLATFORM_TAG in tags[2] and "x86_64" in tags[2])):
            raise ValueError(f"{wheel.name} is not for the backend's Python 3.11 on manylinux x86_64 (tags {tags})")
        with zipfile.ZipFile(wheel) as source:
            for name in sorted(source.namelist()):
                if not name.endswith("/"):
                    yield _entry(name, source.read(name))


def build(out: Path, with_torch: bool = False, wheels_dir: Optional[Path] = None,
          models: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Write the archive to ``out``; returns its path, sha256, size and entry count."""
    if with_torch and wheels_dir is None:
        raise ValueError("with_torch needs wheels_dir: the torch wheel (and its dependencies) for Python 3.11, manylinux x86_64")
    entries = [_entry(name, path.read_bytes()) for name, path in engine_files()]
    entries += list(weights_entries(models))
    if with_torch:
        entries += list(wheel_entries(wheels_dir))
    names = [info.filename for info, _ in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"the archive would hold these names twice: {duplicates[:5]}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    with zipfile.ZipFile(tmp, "w") as archive:
        for info, data in sorted(entries, key=lambda e: e[0].filename):
            archive.writestr(info, data, compresslevel=9)
    tmp.replace(out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    return {"path": str(out), "sha256": digest, "size": out.stat().st_size, "entries": len(entries),
            "job_option": f"<url of {out.name}>#{TARGET_DIR}", "with_torch": with_torch}
