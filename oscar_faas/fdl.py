"""Read an FDL file into services, the way oscar-cli does.

An FDL lists services under ``functions.oscar`` as ``{cluster-id: service}`` maps, with
top-level ``storage_providers`` and ``clusters`` copied into every service, and ``script``
naming a file relative to the FDL file whose content replaces it. Any cluster-id key is
accepted: this tool talks to one endpoint, chosen by its own flags.

Keys no OSCAR service has (``memroy:``, ``Varaibles:``) are dropped, as Go's
``encoding/json`` and the gateway drop them (clients may send fields of newer OSCAR
versions, so the server must keep accepting them), but here each one becomes a warning
naming the closest valid key: a typo in a file should not vanish without a word.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import FDLError, InvalidService
from .model import Service
from .service_parts import (StorageIOConfig, parse_environment, parse_expose,
                            parse_synchronous)

#: Keys of an FDL document's top level, and of its ``functions`` map.
FDL_KEYS = ("functions", "storage_providers", "clusters")
FUNCTIONS_KEYS = ("oscar",)
#: A service's keys, and the keys of its parts that are fixed structs (from the parsers
#: themselves, so a field added there is known here). Maps of names (variables,
#: storage_providers, clusters, labels) take any key.
SERVICE_KEYS = tuple(f.name for f in fields(Service))
STRUCT_KEYS: dict[str, tuple[str, ...]] = {
    "synchronous": tuple(parse_synchronous(None, "")),
    "expose": tuple(parse_expose(None, "")),
    "environment": tuple(parse_environment(None, "")),
    "mount": tuple(f.name for f in fields(StorageIOConfig)),
}
#: Lists whose items are structs.
LIST_KEYS = {"input": STRUCT_KEYS["mount"], "output": STRUCT_KEYS["mount"]}


@dataclass
class FDL:
    """A parsed FDL file: its services (script content embedded) and where they came from."""

    path: Path
    services: list[Service] = field(default_factory=list)
    #: The cluster-id key each service was listed under, in the same order.
    cluster_ids: list[str] = field(default_factory=list)
    #: One line per key that no service has, ignored (see :func:`unknown_keys`).
    warnings: list[str] = field(default_factory=list)


def load_fdl(path: str | Path) -> FDL:
    """Load ``path``, embed each script and return the services, not yet validated.

    :raises FDLError: the file cannot be read, is not YAML (the message has the line), has
        no ``functions.oscar`` list, or names a script file that does not exist.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
    except OSError as exc:
        raise FDLError(f"cannot read FDL file {path}: {exc.strerror or exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise FDLError(f"invalid YAML in FDL file {path}{where}: {problem}") from None
    return parse_fdl(document, path)


def parse_fdl(document: Any, path: Path) -> FDL:
    """Turn a loaded FDL document into services; ``path`` locates scripts and errors."""
    functions = document.get("functions") if isinstance(document, dict) else None
    entries = functions.get("oscar") if isinstance(functions, dict) else None
    if not isinstance(entries, list) or not entries:
        raise FDLError(f"FDL file {path} has no 'functions.oscar' list of services")
    shared_providers = document.get("storage_providers") or {}
    shared_clusters = document.get("clusters") or {}
    fdl = FDL(path=path)
    fdl.warnings += [f"FDL file {path}: {w}" for w in unknown_keys(document, FDL_KEYS, "")]
    fdl.warnings += [f"FDL file {path}: {w}"
                     for w in unknown_keys(functions, FUNCTIONS_KEYS, "functions.")]
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry:
            raise FDLError(
                f"FDL file {path}: functions.oscar[{index}] must be a map of "
                f"'<cluster-id>: <service>'")
        for cluster_id, body in entry.items():
            if isinstance(body, dict):
                name = body.get("name") or f"functions.oscar[{index}]"
                fdl.warnings += [f"FDL file {path}: service '{name}': {w}"
                                 for w in service_unknown_keys(body)]
            fdl.services.append(_service(body, str(cluster_id), shared_providers,
                                         shared_clusters, path, index))
            fdl.cluster_ids.append(str(cluster_id))
    return fdl


def _service(body: Any, cluster_id: str, providers: Any, clusters: Any, path: Path,
             index: int) -> Service:
    if not isinstance(body, dict):
        raise FDLError(f"FDL file {path}: service '{cluster_id}' in functions.oscar[{index}] "
                       f"must be a map of service fields")
    data = dict(body)
    script = data.get("script")
    if isinstance(script, str) and script:
        script_path = (path.parent / script) if not Path(script).is_absolute() else Path(script)
        try:
            data["script"] = script_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise FDLError(
                f"FDL file {path}: script file {script_path} of service "
                f"'{data.get('name', '?')}' cannot be read: {exc.strerror or exc}") from None
    data["cluster_id"] = cluster_id
    if providers and not data.get("storage_providers"):
        data["storage_providers"] = providers
    if clusters and not data.get("clusters"):
        data["clusters"] = clusters
    try:
        return Service.from_dict(data)
    except InvalidService as exc:
        raise FDLError(f"FDL file {path}: {exc}") from None


def unknown_keys(data: Any, known: tuple[str, ...], where: str) -> list[str]:
    """A warning for each key of the map ``data`` not in ``known`` (matched ignoring case,
    as Go does), naming the closest known key when there is one."""
    if not isinstance(data, dict):
        return []
    lowered = {k.lower(): k for k in known}
    out = []
    for key in data:
        if str(key).lower() in lowered:
            continue
        close = difflib.get_close_matches(str(key).lower(), list(lowered), n=1, cutoff=0.6)
        hint = f"; did you mean '{where}{lowered[close[0]]}'?" if close else ""
        out.append(f"unknown key '{where}{key}' is ignored{hint}")
    return out


def service_unknown_keys(body: dict[str, Any]) -> list[str]:
    """:func:`unknown_keys` of a service and of its struct parts (``environment``,
    ``synchronous``, ``expose``, ``mount``, each ``input`` and ``output``)."""
    out = unknown_keys(body, SERVICE_KEYS, "")
    for key, value in body.items():
        part = str(key).lower()
        if part in STRUCT_KEYS:
            out += unknown_keys(value, STRUCT_KEYS[part], f"{part}.")
        elif part in LIST_KEYS and isinstance(value, list):
            for i, item in enumerate(value):
                out += unknown_keys(item, LIST_KEYS[part], f"{part}[{i}].")
    return out
