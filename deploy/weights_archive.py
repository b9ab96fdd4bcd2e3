"""The weights archive an admin hosts for ``udf-dependency-archives``.

Layout (everything at the archive root, so that the job option
``"udf-dependency-archives": ["https://host/s2sr_weights.zip#s2sr_weights"]`` unpacks it to
``./s2sr_weights/`` where the UDF looks)::

    manifest.json          format, default model, per model: file, sha256, size (bytes), metadata
    carn_3x3x64g4sw.pt     TorchScript weights with their own s2sr_metadata.json

The manifest is the one ``s2sr.training.export.write_manifest`` writes (plus ``size``), so the
UDF's ``_verify_checksum`` checks every file it loads from the unpacked folder.

The zip is deterministic: sorted entries, fixed timestamps (1980-01-01) and permissions, and
no compression (TorchScript files are zip archives already; stored entries also keep the bytes
independent of the zlib build), so the same weights always give the same archive sha256.
"""

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from s2sr import engine
from s2sr.udf import default_weights_dir
from s2sr.engine.weights import sha256_file  # the check the UDF itself runs

MANIFEST_FORMAT = "s2sr-weights-manifest"
MANIFEST_FORMAT_VERSION = 1
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest timestamp a zip entry can hold
FILE_MODE = 0o100644  # regular file, rw-r--r--


@dataclass(frozen=True)
class ArchiveInfo:
    """What ``write_archive`` produced: the zip's path, its sha256 (hex) and size (bytes)."""

    path: Path
    sha256: str
    size: int
    manifest: Dict[str, Any]


def select_weights(weights_dir: Optional[Path] = None, models: Optional[Sequence[str]] = None) -> Dict[str, Path]:
    """Model name -> weights file: all ``*.pt`` of ``weights_dir`` (default: the shipped ones) or ``models``."""
    folder = Path(weights_dir) if weights_dir else default_weights_dir()
    available = {p.stem: p for p in sorted(folder.glob("*.pt"))}
    if not available:
        raise ValueError(f"no weights (*.pt) in {folder}")
    if not models:
        return available
    unknown = [m for m in models if m not in available]
    if unknown:
        raise ValueError(f"unknown models {unknown}: {folder} holds {sorted(available)}")
    return {m: available[m] for m in sorted(set(models))}


def build_manifest(weights: Dict[str, Path], default: Optional[str] = None) -> Dict[str, Any]:
    """The manifest for ``weights`` (name -> file): the UDF's checksum table and model list.

    Every file's metadata is validated with the UDF's own reader, so an archive never ships a
    file the UDF would refuse.  ``default``: the UDF's default model when present, else the
    first name.
    """
    if default is None:
        default = engine.DEFAULT_MODEL if engine.DEFAULT_MODEL in weights else sorted(weights)[0]
    if default not in weights:
        raise ValueError(f"default model {default!r} is not among {sorted(weights)}")
    entries = {}
    for name, path in sorted(weights.items()):
        entries[name] = {
            "file": f"{name}.pt",
            "sha256": sha256_file(path),
            "size": path.stat().st_size,
            "metadata": engine.read_metadata(path),
        }
    return {"format": MANIFEST_FORMAT, "format_version": MANIFEST_FORMAT_VERSION, "default": default, "models": entries}


def _zip_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = FILE_MODE << 16
    info.create_system = 3  # unix, so that the mode above is honoured on extraction
    return info


def archive_bytes(weights: Dict[str, Path], manifest: Dict[str, Any]) -> bytes:
    """The zip as bytes: ``manifest.json`` first, then the weights in name order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(_zip_entry(engine.MANIFEST_FILE), json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        for name, path in sorted(weights.items()):
            archive.writestr(_zip_entry(f"{name}.pt"), Path(path).read_bytes())
    return buffer.getvalue()


def write_archive(out: Path, weights_dir: Optional[Path] = None, models: Optional[Sequence[str]] = None,
                  default: Optional[str] = None) -> ArchiveInfo:
    """Write the weights archive to ``out``; returns its path, sha256 and manifest."""
    weights = select_weights(weights_dir, models)
    manifest = build_manifest(weights, default)
    data = archive_bytes(weights, manifest)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return ArchiveInfo(path=out, sha256=hashlib.sha256(data).hexdigest(), size=len(data), manifest=manifest)


def dependency_archive_option(url: str) -> Dict[str, List[str]]:
    """The job option that unpacks the hosted archive where the UDF looks (``s2sr_weights/``)."""
    return {"udf-dependency-archives": [f"{url}#{engine.ARCHIVE_DIR}"]}


__all__ = ["ArchiveInfo", "archive_bytes", "build_manifest", "dependency_archive_option", "select_weights", "sha256_file", "write_archive"]
