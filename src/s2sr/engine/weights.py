"""s2sr.engine.weights: weights files, their self-description, checksums and where they are found.

Needs no torch: ``apply_metadata`` and the UDP builder read a weights file's metadata (one entry
of its zip archive) without loading the network.  The caches are keyed by the file's path, size
and mtime and live in this module, so a backend's fresh interpreter per window reuses them."""

import functools
import hashlib
import importlib.util
import json
import logging
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

WEIGHTS_FORMAT = "s2sr-weights"
WEIGHTS_FORMAT_VERSION = 1
METADATA_FILE = "s2sr_metadata.json"
MANIFEST_FILE = "manifest.json"
DEFAULT_MODEL = "carn_3x3x64g4sw"
#: the Sentinel-2 bands at 10 m and at 20 m: s2sr's one list of band names (everything else
#: imports these; tests/test_one_source.py fails on a literal copy elsewhere)
BANDS_10M = ("B02", "B03", "B04", "B08")
BANDS_20M = ("B05", "B06", "B07", "B8A", "B11", "B12")
#: the bands of the shipped models, in their order (a weights file lists its own)
MODEL_BANDS = BANDS_10M + BANDS_20M
ARCHIVE_DIR = "s2sr_weights"
INT8_SUFFIX = "_int8"  # <model>_int8.pt: the int8 weights made from <model>.pt (s2sr-export --int8-from)

#: what a worker without any weights is told: where they come from on a backend
WEIGHTS_MISSING = (
    ". On a backend the weights come with the s2sr dependency archive: set the job option "
    "'udf-dependency-archives' to ['<url>#s2sr_deps'] (build the archive with `s2sr-deploy archive`, host it)"
)

log = logging.getLogger(__name__)


def canonical_band(name: Any) -> str:
    """'B2', 'b02', 'B8a', 'B08' -> 'B02', 'B02', 'B8A', 'B08'."""
    text = str(name).strip().upper()
    match = re.fullmatch(r"B0?(\d{1,2})(A?)", text)
    if not match:
        return text
    return f"B{int(match.group(1)):02d}" if not match.group(2) else f"B{int(match.group(1))}A"


def _read_metadata_bytes(path: Path) -> bytes:
    """The metadata JSON stored in a TorchScript archive, without unpickling the model."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/extra/" + METADATA_FILE)]
            if not names:
                raise ValueError(
                    f"weights file {path} has no {METADATA_FILE}: not an s2sr weights file "
                    "(export it with s2sr.training.export)"
                )
            return archive.read(names[0])
    except zipfile.BadZipFile as exc:
        raise ValueError(f"weights file {path} is corrupt or truncated (not a TorchScript archive: {exc})") from None


def validate_metadata(meta: Any, path: Path) -> Dict[str, Any]:
    """Check the self-description of a weights file; ValueError naming what is wrong."""
    if not isinstance(meta, dict) or meta.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"weights file {path}: metadata is not in the {WEIGHTS_FORMAT!r} format")
    if meta.get("format_version") != WEIGHTS_FORMAT_VERSION:
        raise ValueError(
            f"weights file {path}: format version {meta.get('format_version')!r}, this UDF reads "
            f"version {WEIGHTS_FORMAT_VERSION}"
        )
    missing = [k for k in ("architecture", "bands", "factor", "margin", "input_scaling", "normalization") if k not in meta]
    if missing:
        raise ValueError(f"weights file {path}: metadata lacks {missing}")
    bands = meta["bands"]
    if not isinstance(bands, list) or not bands or len(set(map(canonical_band, bands))) != len(bands):
        raise ValueError(f"weights file {path}: metadata 'bands' must list distinct band names, got {bands!r}")
    factor, margin = meta["factor"], meta["margin"]
    if not isinstance(factor, int) or factor < 2:
        raise ValueError(f"weights file {path}: metadata 'factor' must be an integer >= 2, got {factor!r}")
    if not isinstance(margin, int) or margin < 0:
        raise ValueError(f"weights file {path}: metadata 'margin' must be an integer >= 0, got {margin!r}")
    scaling, norm = meta["input_scaling"], meta["normalization"]
    if not (isinstance(scaling, dict) and float(scaling.get("scale", 0)) > 0):
        raise ValueError(f"weights file {path}: metadata 'input_scaling' needs a positive 'scale'")
    if not (isinstance(norm, dict) and len(norm.get("mean", [])) == len(bands)):
        raise ValueError(f"weights file {path}: metadata 'normalization' needs one 'mean' per band")
    return meta


def read_metadata(path: Any) -> Dict[str, Any]:
    """The validated metadata of a weights file (cheap: reads one entry of the archive)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist")
    try:
        meta = json.loads(_read_metadata_bytes(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"weights file {path}: metadata is not valid JSON ({exc})") from None
    return validate_metadata(meta, path)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(path_str: str, size: int, version: Any) -> None:
    """The weights file is whole (zip CRCs, for TorchScript archives) and, where a manifest lies
    beside it and lists it, its sha256 matches: once per version of the file and of the manifest."""
    manifest = Path(path_str).parent / MANIFEST_FILE
    _verify(path_str, size, version, stat_key(manifest) if manifest.is_file() else None)


@functools.lru_cache(maxsize=32)
def _verify(path_str: str, size: int, version: Any, manifest_version: Any) -> None:
    path = Path(path_str)
    if zipfile.is_zipfile(path):
        _check_crc(path)
    if manifest_version is None:
        return
    entry = _manifest_entry(path.parent / MANIFEST_FILE, path.name)
    if entry is not None:
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise ValueError(
                f"weights file {path} fails its checksum: sha256 {actual} but {path.parent / MANIFEST_FILE} "
                f"lists {entry['sha256']} (corrupt or altered weights)"
            )


def _check_crc(path: Path) -> None:
    """ValueError where an entry of the archive fails its CRC (a flipped byte torch may not see)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:
        raise ValueError(f"weights file {path} is corrupt or truncated ({type(exc).__name__}: {exc})") from None
    if bad is not None:
        raise ValueError(f"weights file {path} is corrupt: its entry {bad!r} fails its CRC check")


def _manifest_entry(manifest_path: Path, name: str) -> Optional[Dict[str, Any]]:
    """The manifest's entry for file ``name`` (a model's or its ONNX's), or None; ValueError where
    the manifest is not JSON or not of the shape ``{"models": {name: {"file", "sha256", ...}}}``."""
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"weights manifest {manifest_path} is not valid JSON ({exc})") from None
    models = manifest.get("models") if isinstance(manifest, dict) else None
    if not isinstance(models, dict):
        raise ValueError(f"weights manifest {manifest_path} has the wrong shape: expected an object with a "
                         f"'models' object, got {type(manifest).__name__}" + ("" if not isinstance(manifest, dict) else f" with keys {sorted(manifest)}"))
    listed = []
    for model, entry in models.items():
        entries = [entry] + ([entry["onnx"]] if isinstance(entry, dict) and "onnx" in entry else [])
        for item in entries:
            if not (isinstance(item, dict) and isinstance(item.get("file"), str) and isinstance(item.get("sha256"), str)):
                raise ValueError(f"weights manifest {manifest_path} has the wrong shape: model {model!r} needs "
                                 f"'file' and 'sha256' strings, got {item!r:.120}")
            listed.append(item)
    return next((item for item in listed if item["file"] == name), None)


def package_weights_dir() -> Optional[Path]:
    """The weights shipped inside an installed s2sr package, located without importing it."""
    try:
        spec = importlib.util.find_spec("s2sr")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "weights"
        if candidate.is_dir():
            return candidate
    return None


def weights_search_dirs(context: Dict[str, Any]) -> List[Path]:
    """Folders searched for ``<model>.pt``, first match wins."""
    dirs = []
    if context.get("weights_dir"):
        dirs.append(Path(str(context["weights_dir"])))
    if os.environ.get("S2SR_WEIGHTS_DIR"):
        dirs.append(Path(os.environ["S2SR_WEIGHTS_DIR"]))
    dirs.append(Path.cwd() / ARCHIVE_DIR)
    package_dir = package_weights_dir()
    if package_dir is not None:
        dirs.append(package_dir)
    return dirs


def _default_model_name(dirs: Sequence[Path]) -> str:
    for folder in dirs:
        manifest = folder / MANIFEST_FILE
        if manifest.is_file():
            try:
                name = json.loads(manifest.read_text()).get("default")
            except (json.JSONDecodeError, AttributeError):
                continue
            if isinstance(name, str) and name:
                return name
    return DEFAULT_MODEL


def resolve_weights(context: Dict[str, Any]) -> Path:
    """The weights file the context asks for (``weights``, else ``model``, else the default)."""
    if context.get("weights"):
        path = Path(str(context["weights"]))
        if not path.is_file():
            raise ValueError(f"weights file {path} does not exist")
        return path
    dirs = weights_search_dirs(context)
    name = context.get("model") or _default_model_name(dirs)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name):
        raise ValueError(f"invalid model name {name!r}")
    for folder in dirs:
        candidate = folder / f"{name}.pt"
        if candidate.is_file():
            return candidate
    available = sorted({p.stem for folder in dirs if folder.is_dir() for p in folder.glob("*.pt")})
    raise ValueError(
        f"unknown model {name!r}: no {name}.pt in {[str(d) for d in dirs]}; available models: {available}"
        + ("" if available else WEIGHTS_MISSING)
    )


def weights_precision(meta: Dict[str, Any]) -> str:
    """``"int8"`` for quantized weights, else ``"fp32"`` (float weights run as fp32 or bf16)."""
    return "int8" if meta.get("precision") == "int8" else "fp32"



def int8_companion(path: Path) -> Optional[Path]:
    """``<model>_int8.pt`` beside float weights ``<model>.pt``, when present and made from them.

    A companion made from other weights (the float ones were retrained since) is ignored.
    """
    candidate = path.with_name(path.stem + INT8_SUFFIX + ".pt")
    if not candidate.is_file():
        return None
    meta = metadata_cached(str(candidate), *stat_key(candidate))
    base = meta.get("quantization", {}).get("base_sha256")
    if weights_precision(meta) != "int8" or base != sha256_cached(str(path), *stat_key(path)):
        log.warning("s2sr: ignoring %s: not int8 weights made from %s", candidate, path.name)
        return None
    return candidate


def stat_key(path: Path) -> Tuple[int, Tuple[int, int, int]]:
    """(size, version) of a file, the key of every cache of the engine: the version (mtime,
    ctime, inode) changes with any write, so a file rewritten with its old size and mtime is
    never served stale (ctime cannot be set back), while a worker hashes each version once."""
    stat = path.stat()
    return stat.st_size, (stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


@functools.lru_cache(maxsize=16)
def sha256_cached(path_str: str, size: int, mtime: float) -> str:
    return sha256_file(Path(path_str))


@functools.lru_cache(maxsize=16)
def metadata_cached(path_str: str, size: int, mtime: float) -> Dict[str, Any]:
    """``read_metadata`` once per file version: ``load_model`` runs for every window."""
    return read_metadata(Path(path_str))
