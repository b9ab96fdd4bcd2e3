"""Register the UDP on an openEO backend: checks, an idempotent save and a diff summary.

The flow (``s2sr-deploy register``): ``connect_backend`` -> ``preflight`` (every process the
graph uses, callbacks included, must be listed by the backend; collections and UDF runtimes
only warn) -> ``authenticate`` -> ``register``: fetch the stored UDP, compare it with ours
(``diff_udp``) and PUT only when something differs, then read it back.

Backends keep different subsets of a UDP document.  openeo-python-driver (the library behind
CDSE and Terrascope, and its dummy backend) keeps ``process_graph``, ``parameters``,
``returns``, ``summary``, ``description``, ``links`` and ``public``, and silently drops
``default_job_options`` and ``categories``.  Fields the backend does not return are therefore
not compared (they are reported as "not kept"), and ``registration_body`` adds a link to the
weights archive: a field every backend keeps, so that a new ``--weights-url`` still changes
the stored document (and shows up in the diff) where ``default_job_options`` are dropped.

openeo 0.53's ``Connection.save_user_defined_process`` has no ``default_job_options``
argument, so the document is PUT with the same authenticated connection
(``connection.put("/process_graphs/<id>")``): one request, the full document.
"""

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import requests
from openeo.rest import OpenEoApiError, OpenEoClientException

#: UDP fields compared between our document and the backend's copy (others are backend-specific)
COMPARED_FIELDS = (
    "summary", "description", "parameters", "returns", "categories", "deprecated", "experimental", "exceptions",
    "examples", "links", "process_graph", "default_job_options", "default_synchronous_options",
    "default_service_options", "public",
)
#: links a backend adds by itself (the public URL is a "canonical" link)
BACKEND_LINK_RELS = frozenset({"canonical", "self"})
#: the title of the links that carry the UDP's dependency archives (``<url>#<folder>``, as in the
#: job option), for backends that drop ``default_job_options``
WEIGHTS_LINK_TITLE = "dependency archive (job option udf-dependency-archives)"
#: namespaces that mean "a process of this backend" (others are remote definitions or UDPs)
BACKEND_NAMESPACES = (None, "backend")
PUT_STATUS = [200, 201, 204]


class DeployError(Exception):
    """A deployment failure with a one-line message for the user."""


# --------------------------------------------------------------------------- graph walking

def _callbacks(value: Any, path: str) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """``(path, flat graph)`` of every callback (``{"process_graph": {...}}``) inside an argument."""
    if isinstance(value, dict):
        if isinstance(value.get("process_graph"), dict):
            yield path, value["process_graph"]
            return
        for key, item in value.items():
            yield from _callbacks(item, f"{path}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _callbacks(item, f"{path}/{i}")


def process_nodes(graph: Dict[str, Any], prefix: str = "") -> Dict[str, Dict[str, Any]]:
    """Every node of a flat graph and its callbacks, by path (``node/argument/.../child``)."""
    nodes: Dict[str, Dict[str, Any]] = {}
    for node_id, node in graph.items():
        path = f"{prefix}{node_id}"
        nodes[path] = node
        for arg, value in (node.get("arguments") or {}).items():
            for sub_path, sub_graph in _callbacks(value, f"{path}/{arg}"):
                nodes.update(process_nodes(sub_graph, prefix=f"{sub_path}/"))
    return nodes


def used_processes(graph: Dict[str, Any]) -> Set[str]:
    """Ids of the backend processes a graph calls, callbacks included (not UDPs / remote ones)."""
    return {n["process_id"] for n in process_nodes(graph).values() if n.get("namespace") in BACKEND_NAMESPACES}


def missing_processes(graph: Dict[str, Any], available: Iterable[str]) -> List[str]:
    """The processes ``graph`` uses that are not in ``available`` (sorted)."""
    return sorted(used_processes(graph) - set(available))


def udf_runtimes_used(graph: Dict[str, Any]) -> Dict[str, Set[str]]:
    """UDF runtime -> the versions ``run_udf`` asks for (None where it names none)."""
    used: Dict[str, Set[str]] = {}
    for node in process_nodes(graph).values():
        if node["process_id"] == "run_udf":
            version = node["arguments"].get("version")
            used.setdefault(str(node["arguments"].get("runtime")), set()).add(None if version is None else str(version))
    return used


# --------------------------------------------------------------------------- checks (no auth needed)

def collection_warnings(collection_ids: Optional[Iterable[str]], products: Sequence[str]) -> List[str]:
    """Warnings when a backend lists collections but not the products the UDP loads.

    ``products``: the ``product`` parameter's values, the first being its default.
    """
    if collection_ids is None:
        return []
    ids = set(collection_ids)
    have = [p for p in products if p in ids]
    if not have:
        return [f"the backend lists none of the collections {list(products)}: the UDP's load_collection "
                "will fail there unless they exist under these ids"]
    if products[0] not in have:
        return [f"the backend lacks {products[0]} (the product parameter's default): callers must pass product={have[0]!r}"]
    return []


def runtime_warnings(runtimes: Optional[Dict[str, Any]], used: Dict[str, Set[str]]) -> List[str]:
    """Warnings for UDF runtimes (name -> versions the graph asks for) the backend does not list."""
    if runtimes is None:
        return []
    warnings = []
    for runtime in sorted(used):
        if runtime not in runtimes:
            warnings.append(f"the backend lists no UDF runtime {runtime!r} (it has {sorted(runtimes)}): "
                            "apply_neighborhood cannot change resolution without it")
            continue
        versions = set((runtimes[runtime] or {}).get("versions") or {})
        for version in sorted(v for v in used[runtime] if v and versions and v not in versions):
            warnings.append(f"UDF runtime {runtime!r} lists no version {version} (it has {sorted(versions)}): "
                            "the dependency archives are built for that Python")
    return warnings


def preflight(connection: Any, udp: Dict[str, Any], products: Sequence[str]) -> List[str]:
    """Check a backend can run ``udp``: DeployError for missing processes, warnings otherwise."""
    graph = udp["process_graph"]
    try:
        available = [p["id"] for p in connection.list_processes()]
    except (OpenEoApiError, requests.RequestException) as exc:
        raise DeployError(f"cannot list the processes of {connection.root_url}: {one_line(exc)}") from None
    missing = missing_processes(graph, available)
    if missing:
        raise DeployError(f"the backend {connection.root_url} lacks processes the UDP uses: {', '.join(missing)}")
    warnings = collection_warnings(_optional(connection.list_collection_ids), products)
    return warnings + runtime_warnings(_optional(connection.list_udf_runtimes), udf_runtimes_used(graph))


def _optional(call: Any) -> Any:
    """``call()``, or None when the backend lacks that (optional) endpoint."""
    try:
        return call()
    except (OpenEoApiError, OpenEoClientException, requests.RequestException, ValueError):
        return None


# --------------------------------------------------------------------------- documents and diff

def _is_weights_link(link: Any) -> bool:
    return isinstance(link, dict) and link.get("title") == WEIGHTS_LINK_TITLE


def weights_links(udp: Dict[str, Any]) -> List[Dict[str, str]]:
    """One ``related`` link per ``udf-dependency-archives`` entry, its ``#folder`` kept (a fragment:
    the URL still fetches the zip), so a caller can rebuild the job option from the links."""
    archives = (udp.get("default_job_options") or {}).get("udf-dependency-archives") or []
    return [{"rel": "related", "href": str(a), "type": "application/zip", "title": WEIGHTS_LINK_TITLE} for a in archives]


def registration_body(udp: Dict[str, Any], udp_id: str, public: bool) -> Dict[str, Any]:
    """The document PUT to ``/process_graphs/<udp_id>``: ``udp`` + weights links + ``public``."""
    body = copy.deepcopy(udp)
    body["id"] = udp_id
    links = [link for link in body.get("links") or [] if not _is_weights_link(link)] + weights_links(udp)
    if links:
        body["links"] = links
    body["public"] = bool(public)
    return body


def normalise(doc: Dict[str, Any]) -> Dict[str, Any]:
    """The compared fields of a UDP document; empty values and backend-made links dropped."""
    out = {}
    for key in COMPARED_FIELDS:
        value = doc.get(key)
        if key == "links" and value:
            value = [link for link in value if not (isinstance(link, dict) and link.get("rel") in BACKEND_LINK_RELS)]
        if value not in (None, [], {}, False, ""):
            out[key] = value
    return out


@dataclass
class UdpDiff:
    """What differs between our UDP document and the backend's copy."""

    fields: Dict[str, str] = field(default_factory=dict)  # top-level field -> short description
    nodes_added: List[str] = field(default_factory=list)
    nodes_removed: List[str] = field(default_factory=list)
    nodes_changed: Dict[str, List[str]] = field(default_factory=dict)  # node path -> changed keys
    params_added: List[str] = field(default_factory=list)
    params_removed: List[str] = field(default_factory=list)
    params_changed: Dict[str, List[str]] = field(default_factory=dict)  # parameter -> changed keys
    not_kept: List[str] = field(default_factory=list)  # fields we send that the backend does not return

    @property
    def changed(self) -> bool:
        return bool(self.fields or self.nodes_added or self.nodes_removed or self.nodes_changed
                    or self.params_added or self.params_removed or self.params_changed)

    def summary(self) -> List[str]:
        """One line per change: fields, process nodes, parameters."""
        lines = [f"{name}: {what}" for name, what in self.fields.items()]
        lines += [f"process_graph: node {p} added" for p in self.nodes_added]
        lines += [f"process_graph: node {p} removed" for p in self.nodes_removed]
        lines += [f"process_graph: node {p} changed ({', '.join(keys)})" for p, keys in self.nodes_changed.items()]
        lines += [f"parameters: {p} added" for p in self.params_added]
        lines += [f"parameters: {p} removed" for p in self.params_removed]
        lines += [f"parameters: {p} changed ({', '.join(keys)})" for p, keys in self.params_changed.items()]
        return lines


def _mask_callbacks(value: Any) -> Any:
    """An argument with its callbacks replaced by a marker (callback nodes are compared on their own)."""
    if isinstance(value, dict):
        if isinstance(value.get("process_graph"), dict):
            return "<callback>"
        return {k: _mask_callbacks(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_callbacks(v) for v in value]
    return value


def _node_changes(ours: Dict[str, Any], theirs: Dict[str, Any]) -> List[str]:
    keys = [k for k in ("process_id", "namespace", "result") if ours.get(k) != theirs.get(k)]
    args_a, args_b = ours.get("arguments") or {}, theirs.get("arguments") or {}
    for name in sorted(set(args_a) | set(args_b)):
        if _mask_callbacks(args_a.get(name)) != _mask_callbacks(args_b.get(name)):
            keys.append(f"argument {name}")
    return keys


def _graph_diff(diff: UdpDiff, ours: Dict[str, Any], theirs: Dict[str, Any]) -> None:
    a, b = process_nodes(ours), process_nodes(theirs)
    label = lambda path, nodes: f"{path} ({nodes[path].get('process_id')})"  # noqa: E731
    diff.nodes_added = [label(p, a) for p in a if p not in b]
    diff.nodes_removed = [label(p, b) for p in b if p not in a]
    for path in a:
        if path in b:
            keys = _node_changes(a[path], b[path])
            if keys:
                diff.nodes_changed[label(path, a)] = keys
    if not (diff.nodes_added or diff.nodes_removed or diff.nodes_changed):  # e.g. a node's description
        diff.fields["process_graph"] = "changed"


def _params_diff(diff: UdpDiff, ours: List[Dict[str, Any]], theirs: List[Dict[str, Any]]) -> None:
    a = {p.get("name"): p for p in ours}
    b = {p.get("name"): p for p in theirs}
    diff.params_added = [n for n in a if n not in b]
    diff.params_removed = [n for n in b if n not in a]
    for name in a:
        if name in b and a[name] != b[name]:
            diff.params_changed[name] = sorted(k for k in set(a[name]) | set(b[name]) if a[name].get(k) != b[name].get(k))
    if not (diff.params_added or diff.params_removed or diff.params_changed) and list(a) != list(b):
        diff.fields["parameters"] = "order changed"


def _hrefs(links: Any) -> List[str]:
    return [str(link.get("href")) for link in links or [] if isinstance(link, dict)]


def _field_change(name: str, ours: Any, theirs: Any) -> str:
    if name == "public":
        return f"{bool(theirs)} -> {bool(ours)}"
    if theirs is None:
        return "added"
    if ours is None:
        return "removed"
    if name == "links":
        gone = [h for h in _hrefs(theirs) if h not in _hrefs(ours)]
        new = [h for h in _hrefs(ours) if h not in _hrefs(theirs)]
        return "changed: " + ", ".join([f"-{h}" for h in gone] + [f"+{h}" for h in new]) if gone or new else "changed"
    if name == "default_job_options" and isinstance(ours, dict) and isinstance(theirs, dict):
        return "changed: " + ", ".join(sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k)))
    return "changed"


def diff_udp(ours: Dict[str, Any], theirs: Dict[str, Any]) -> UdpDiff:
    """Compare our document with the backend's copy.

    A field we send that the backend does not return at all is listed in ``not_kept`` rather
    than as a change: a backend that drops a field (openeo-python-driver drops
    ``default_job_options``) would otherwise look changed at every run.
    """
    a, b = normalise(ours), normalise(theirs)
    diff = UdpDiff(not_kept=sorted(k for k in a if k not in b and k != "public"))
    for name in COMPARED_FIELDS:
        if name in diff.not_kept or a.get(name) == b.get(name):
            continue
        if name == "process_graph":
            _graph_diff(diff, a.get(name) or {}, b.get(name) or {})
        elif name == "parameters":
            _params_diff(diff, a.get(name) or [], b.get(name) or [])
        else:
            diff.fields[name] = _field_change(name, a.get(name), b.get(name))
    return diff


def public_url(doc: Optional[Dict[str, Any]]) -> Optional[str]:
    """The public URL the backend gives a UDP (its ``canonical`` link), if any."""
    for link in (doc or {}).get("links") or []:
        if isinstance(link, dict) and link.get("rel") == "canonical" and link.get("href"):
            return str(link["href"])
    return None


# --------------------------------------------------------------------------- backend calls

def one_line(exc: BaseException) -> str:
    """A short one-line reason for a client / HTTP exception."""
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if errno:
        return errno.group(1).strip()
    text = re.sub(r"\s*\(ref: [^)]*\)", "", text)  # openEO request ids: noise here
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first if len(first) <= 300 else first[:297] + "..."


def connect_backend(url: str, timeout: float = 30, retries: int = 3) -> Any:
    """An ``openeo`` connection whose capabilities were read; DeployError if unreachable.

    Connection errors are retried once (a refused port fails at once); HTTP 429/502/503/504
    ``retries`` times with the client's back-off.
    """
    import openeo

    # a read timeout is not retried: a server that accepts and never answers costs one timeout
    # per request (version discovery, capabilities), not one per retry
    retry = {"total": retries, "connect": min(1, retries), "read": 0} if retries > 0 else False
    try:
        try:
            connection = openeo.connect(url, default_timeout=timeout, retry=retry)
        except TypeError:  # an older openeo client without the retry argument
            connection = openeo.connect(url, default_timeout=timeout)
        connection.capabilities().api_version()
    except requests.RequestException as exc:
        # a read timeout, as itself or wrapped by the retry adapter
        if isinstance(exc, requests.Timeout) or "timed out" in str(exc).lower():
            raise DeployError(f"the openEO backend at {url} did not answer within {timeout:g} s (--timeout)") from None
        raise DeployError(f"cannot reach the openEO backend at {url}: {one_line(exc)}") from None
    except (OpenEoApiError, OpenEoClientException, ValueError, KeyError) as exc:
        raise DeployError(f"{url} does not answer as an openEO API: {one_line(exc)}") from None
    return connection


def authenticate(connection: Any, method: str, username: Optional[str] = None, password: Optional[str] = None) -> None:
    """Log in the client's usual way: basic (arguments, else the client's auth config), OIDC
    (refresh token, client credentials from ``OPENEO_AUTH_*`` env vars, else device flow), or
    none.  DeployError on failure."""
    if method == "none":
        return
    try:
        if method == "basic":
            connection.authenticate_basic(username=username, password=password)
        elif method == "oidc":
            connection.authenticate_oidc()
        else:
            raise DeployError(f"unknown authentication method {method!r}: use basic, oidc or none")
    except (OpenEoApiError, OpenEoClientException, requests.RequestException) as exc:
        who = f" as {username}" if method == "basic" and username else ""
        raise DeployError(f"authentication failed at {connection.root_url} ({method}{who}): {one_line(exc)}") from None


def fetch_udp(connection: Any, udp_id: str) -> Optional[Dict[str, Any]]:
    """The stored UDP document, or None when the user has none under ``udp_id``."""
    try:
        return connection.get(f"/process_graphs/{udp_id}", expected_status=200).json()
    except OpenEoApiError as exc:
        if exc.http_status_code == 404:
            return None
        if exc.http_status_code in (401, 403):
            raise DeployError(f"not allowed to read /process_graphs/{udp_id} ({one_line(exc)}): authenticate first") from None
        raise DeployError(f"the backend refused to describe {udp_id!r}: {one_line(exc)}") from None


def put_udp(connection: Any, udp_id: str, body: Dict[str, Any]) -> None:
    try:
        connection.put(f"/process_graphs/{udp_id}", json=body, expected_status=PUT_STATUS)
    except OpenEoApiError as exc:
        raise DeployError(f"the backend refused to store {udp_id!r}: {one_line(exc)}") from None


@dataclass
class RegisterResult:
    """``status``: created, updated, unchanged (or would-create / would-update in a dry run)."""

    status: str
    udp_id: str
    diff: Optional[UdpDiff]
    not_kept: List[str]
    public_url: Optional[str]
    stored: Optional[Dict[str, Any]]
    altered: List[str] = field(default_factory=list)  # kept fields the backend rewrote


def register(connection: Any, udp: Dict[str, Any], udp_id: str, public: bool = False, dry_run: bool = False) -> RegisterResult:
    """Save ``udp`` as ``udp_id`` unless the backend already holds the same document."""
    body = registration_body(udp, udp_id, public)
    existing = fetch_udp(connection, udp_id)
    diff = diff_udp(body, existing) if existing is not None else None
    if diff is not None and not diff.changed:
        return RegisterResult("unchanged", udp_id, diff, diff.not_kept, public_url(existing), existing)
    if dry_run:
        status = "would-create" if existing is None else "would-update"
        return RegisterResult(status, udp_id, diff, diff.not_kept if diff else [], public_url(existing), existing)
    put_udp(connection, udp_id, body)
    stored = fetch_udp(connection, udp_id)
    if stored is None or "process_graph" not in stored:
        raise DeployError(f"the backend accepted {udp_id!r} but does not return it")
    after = diff_udp(body, stored)  # a rewritten field makes every later run PUT again: report it
    status = "created" if existing is None else "updated"
    return RegisterResult(status, udp_id, diff, after.not_kept, public_url(stored), stored, after.summary())


__all__ = [
    "DeployError", "RegisterResult", "UdpDiff", "authenticate", "collection_warnings", "connect_backend", "diff_udp",
    "fetch_udp", "missing_processes", "normalise", "preflight", "process_nodes", "public_url", "register",
    "registration_body", "runtime_warnings", "used_processes", "weights_links",
]
