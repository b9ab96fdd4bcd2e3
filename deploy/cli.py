"""``s2sr-deploy``: build, register and ship the openEO UDP ``sentinel2_superresolution``.

Commands::

    s2sr-deploy archive  --out s2sr_deps.zip [--with-torch --wheels-dir DIR]
    s2sr-deploy build    [--out PATH] [--archive-url URL]
    s2sr-deploy register --backend URL [--udp-id ID] [--public] [--archive-url URL]
                         [--auth auto|basic|oidc|none] [--user NAME] [--password PW] [--dry-run]
    s2sr-deploy weights  --out s2sr_weights.zip [--models NAME ...] [--weights-dir DIR]

``archive`` writes the job's dependency archive (the s2sr engine and weights, optionally
torch); hosted at a URL, ``build --archive-url URL`` / ``register --archive-url URL`` put
``URL#s2sr_deps`` in the UDP's job options, beside the hosted onnxruntime archive.  ``weights``
writes a weights-only archive (``#s2sr_weights``), for workers that have s2sr installed.

``register`` is idempotent: it compares the stored UDP with ours and only PUTs a changed one,
printing what changed.  Basic credentials: ``--user`` / ``--password``, else the environment
variables ``S2SR_OPENEO_USERNAME`` / ``S2SR_OPENEO_PASSWORD``, else the openeo client's auth
config (``openeo-auth add-basic``).  OIDC: the client's usual flow (stored refresh token,
``OPENEO_AUTH_METHOD=client_credentials`` with ``OPENEO_AUTH_CLIENT_ID`` / ``_SECRET``, else
the device flow).  Errors end with exit status 1 and one line on stderr.
"""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import requests
from openeo.rest import OpenEoApiError

from s2sr.deploy.register import (
    DeployError, RegisterResult, authenticate, connect_backend, one_line, preflight, register, weights_links,
)

NO_ARCHIVE = ("the UDP names no s2sr dependency archive, only the hosted onnxruntime one: workers need s2sr "
              "installed. Build it with `s2sr-deploy archive`, host it, and pass --archive-url")
USER_ENV = "S2SR_OPENEO_USERNAME"
PASSWORD_ENV = "S2SR_OPENEO_PASSWORD"


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- build

def cmd_build(args: argparse.Namespace) -> int:
    from s2sr.deploy.udp import UDP_JSON, write_udp_json

    path = write_udp_json(Path(args.out) if args.out else UDP_JSON, archive_url=args.archive_url)
    print(f"wrote {path}")
    if not args.archive_url:
        _warn(NO_ARCHIVE)
    return 0


# --------------------------------------------------------------------------- archive

def cmd_archive(args: argparse.Namespace) -> int:
    try:
        from s2sr.deploy import archive
    except ImportError as exc:
        raise DeployError(f"this s2sr has no archive builder (s2sr.deploy.archive: {exc})") from None
    try:
        info = archive.build(Path(args.out), with_torch=args.with_torch, wheels_dir=args.wheels_dir)
    except (ValueError, OSError) as exc:
        raise DeployError(str(exc)) from None
    print(f"wrote {info['path']} ({info['size']} bytes)")
    print(f"sha256 {info['sha256']}")
    print(f"size {info['size']}")
    name = Path(info["path"]).name
    print(f"host it, then: s2sr-deploy build --archive-url https://<host>/{name}  "
          f"(job option udf-dependency-archives: <url>#{archive.TARGET_DIR})")
    return 0


# --------------------------------------------------------------------------- weights

def cmd_weights(args: argparse.Namespace) -> int:
    from s2sr.deploy.weights_archive import dependency_archive_option, write_archive

    try:
        info = write_archive(Path(args.out), weights_dir=args.weights_dir, models=args.models, default=args.default)
    except (ValueError, OSError) as exc:
        raise DeployError(str(exc)) from None
    models = sorted(info.manifest["models"])
    print(f"wrote {info.path} ({info.size} bytes; models {', '.join(models)}; default {info.manifest['default']})")
    print(f"sha256 {info.sha256}")
    option = dependency_archive_option(f"https://<host>/{info.path.name}")
    print(f"for workers that have s2sr installed: host it and add to the job options {json.dumps(option)}")
    return 0


# --------------------------------------------------------------------------- register

def _load_udp(args: argparse.Namespace) -> Dict[str, Any]:
    """Our UDP document: built from the package, or read from ``--udp-json``."""
    from s2sr.deploy.udp import ARCHIVE_TARGET, archive_urls, build_udp, load_udp_json

    if args.udp_json:
        try:
            udp = load_udp_json(Path(args.udp_json))
        except (OSError, ValueError) as exc:
            raise DeployError(f"cannot read the UDP JSON {args.udp_json}: {exc}") from None
        if args.archive_url:
            options = udp.setdefault("default_job_options", {})
            others = [a for a in options.get("udf-dependency-archives") or [] if not a.endswith(f"#{ARCHIVE_TARGET}")]
            options["udf-dependency-archives"] = [f"{args.archive_url}#{ARCHIVE_TARGET}"] + others
    else:
        udp = build_udp(archive_url=args.archive_url)
    if not archive_urls(udp):
        _warn(NO_ARCHIVE)
    return udp


def _auth_method(args: argparse.Namespace) -> str:
    if args.auth != "auto":
        return args.auth
    return "basic" if args.user else "oidc"


def _report(result: RegisterResult, backend: str, public: bool, job_options: Dict[str, Any]) -> None:
    verb = {"created": "created", "updated": "updated", "unchanged": "unchanged",
            "would-create": "would create", "would-update": "would update"}[result.status]
    print(f"{verb}: {result.udp_id} on {backend}")
    if result.diff is not None and result.status != "unchanged":
        for line in result.diff.summary():
            print(f"  - {line}")
    if result.not_kept:
        _warn(f"the backend does not keep {', '.join(result.not_kept)}: callers must pass the job options "
              "themselves (the UDP's links carry the dependency archives), e.g. job_options=" + json.dumps(job_options))
    if result.altered:
        _warn(f"the backend rewrote what it stored, so every run will update it: {'; '.join(result.altered)}")
    if public:
        if result.public_url:
            print(f"public URL: {result.public_url}")
        else:
            _warn("the backend returned no public URL (no 'canonical' link in the stored UDP)")


def cmd_register(args: argparse.Namespace) -> int:
    from s2sr.deploy.udp import PRODUCTS

    udp = _load_udp(args)
    connection = connect_backend(args.backend, timeout=args.timeout, retries=args.retries)
    for message in preflight(connection, udp, list(PRODUCTS)):
        _warn(message)
    method = _auth_method(args)
    if method == "none" and not args.dry_run:
        raise DeployError("registering needs authentication: use --auth basic or --auth oidc (or --dry-run)")
    authenticate(connection, method, args.user, args.password)
    if method == "none":
        print(f"checked: {args.backend} offers every process the UDP uses (not logged in: nothing compared)")
        return 0
    result = register(connection, udp, args.udp_id, public=args.public, dry_run=args.dry_run)
    _report(result, args.backend, args.public, udp.get("default_job_options") or {})
    return 0


# --------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    from s2sr.deploy.udp import UDP_ID

    parser = argparse.ArgumentParser(prog="s2sr-deploy", description="Build, register and ship the s2sr openEO UDP.")
    sub = parser.add_subparsers(dest="command", required=True)

    archive = sub.add_parser("archive", help="build the job's dependency archive (udf-dependency-archives <url>#s2sr_deps)")
    archive.add_argument("--out", required=True, type=Path, help="zip to write, e.g. s2sr_deps.zip")
    archive.add_argument("--with-torch", action="store_true",
                         help="also unpack torch (and its dependencies) from the wheels in --wheels-dir")
    archive.add_argument("--wheels-dir", type=Path,
                         help="wheels for the backend's Python (3.11, manylinux x86_64), from `pip download`")
    archive.set_defaults(func=cmd_archive)

    build = sub.add_parser("build", help="write the UDP JSON")
    build.add_argument("--out", help="output file (default: the committed deploy/sentinel2_superresolution.json)")
    build.add_argument("--archive-url", help="URL of the hosted dependency archive (s2sr-deploy archive)")
    build.set_defaults(func=cmd_build)

    weights = sub.add_parser("weights", help="a weights-only archive (#s2sr_weights), for workers that have s2sr installed")
    weights.add_argument("--out", required=True, help="zip to write, e.g. s2sr_weights.zip")
    weights.add_argument("--models", nargs="+", metavar="NAME", help="models to include (default: all)")
    weights.add_argument("--weights-dir", type=Path, help="folder of *.pt files (default: the shipped weights)")
    weights.add_argument("--default", help="the default model named in the manifest")
    weights.set_defaults(func=cmd_weights)

    reg = sub.add_parser("register", help="register (or update) the UDP on an openEO backend")
    reg.add_argument("--backend", required=True, help="openEO backend URL, e.g. https://openeo.dataspace.copernicus.eu")
    reg.add_argument("--udp-id", default=UDP_ID, help="process id (default %(default)s)")
    reg.add_argument("--public", action="store_true", help="make it public and print its public URL")
    reg.add_argument("--archive-url", help="URL of the hosted dependency archive (s2sr-deploy archive)")
    reg.add_argument("--udp-json", help="register this UDP JSON instead of building it")
    reg.add_argument("--auth", choices=["auto", "basic", "oidc", "none"], default="auto",
                     help="auto (default): basic when a user name is given, else oidc")
    reg.add_argument("--user", default=os.environ.get(USER_ENV), help=f"basic auth user (env {USER_ENV})")
    reg.add_argument("--password", default=os.environ.get(PASSWORD_ENV), help=f"basic auth password (env {PASSWORD_ENV})")
    reg.add_argument("--dry-run", action="store_true", help="check and compare, store nothing")
    reg.add_argument("--timeout", type=float, default=30, help="HTTP timeout in seconds (default %(default)s)")
    reg.add_argument("--retries", type=int, default=3, help="retries on HTTP 429/5xx (default %(default)s)")
    reg.set_defaults(func=cmd_register)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DeployError as exc:
        message = str(exc)
    except requests.RequestException as exc:  # the backend went away mid-way
        message = f"lost the connection to the backend: {one_line(exc)}"
    except OpenEoApiError as exc:
        message = f"the backend answered with an error: {one_line(exc)}"
    print(f"s2sr-deploy: error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
