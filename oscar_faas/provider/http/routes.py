"""The provider's route table: one short function per path and method.

The table mirrors faas-provider's ``serve.go`` (``/system/*``, ``/async-function/*``,
``/healthz``); ``/function/*`` is the proxy's (:mod:`.function_proxy`). :mod:`.app` adds basic
auth on ``/system/*`` and turns the package's errors into status codes, so handlers stay free
of HTTP plumbing. Routes are blocking: they take a :class:`Request` and return a
:class:`Response` on one of the app's threads.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Callable

from ... import __version__
from ...contract import basic_credentials
from ..async_calls import async_function
from ..backend import Backend
from ..logs import parse_since
from ..state.types import (DEFAULT_NAMESPACE, DeleteFunctionRequest, FunctionDeployment,
                     ScaleServiceRequest, Secret, check_namespace)
from .messages import Request, Response, empty_response, json_response, text_response

PROVIDER_NAME = "oscar-faas-local"
ORCHESTRATION = "local"

Handler = Callable[[Backend, Request], Response]


def _function_name(raw: str, query_namespace: str = "") -> str:
    """``name`` from ``name`` or ``name.openfaas-fn`` (plus ``?namespace=``).

    :raises InvalidService: a namespace other than ``openfaas-fn``.
    """
    name, _, namespace = raw.partition(".")
    check_namespace(namespace)
    check_namespace(query_namespace)
    return name


# --- /healthz and informational routes ---------------------------------------------------------

def healthz(backend: Backend, req: Request) -> Response:
    return text_response("OK", 200)


def system_info(backend: Backend, req: Request) -> Response:
    """faas-provider's ``ProviderInfo``, flat: the OpenFaaS gateway decodes exactly this and
    wraps it in its own ``GatewayInfo`` (``{"provider": ..., "version": ..., "arch": ...}``)."""
    return json_response({
        "provider": PROVIDER_NAME,
        "orchestration": ORCHESTRATION,
        "version": {"sha": "", "release": __version__},
    })


def list_namespaces(backend: Backend, req: Request) -> Response:
    return json_response([DEFAULT_NAMESPACE])


def get_namespace(backend: Backend, req: Request) -> Response:
    """``FunctionNamespace`` for ``faas-cli namespace get``: the one namespace, else 404."""
    namespace = req.params["namespace"]
    if namespace != DEFAULT_NAMESPACE:
        return text_response(f"namespace {namespace} not found", 404)
    return json_response({"name": DEFAULT_NAMESPACE})  # labels/annotations: omitempty


def mutate_namespace(backend: Backend, req: Request) -> Response:
    """Namespaces cannot be created, changed or removed here (faas-provider's 501)."""
    return text_response("Feature not implemented in this version of OpenFaaS", 501)


def function_logs(backend: Backend, req: Request) -> Response:
    """faas-provider's logs contract (see :mod:`..logs`): NDJSON, live with ``follow``."""
    logs = getattr(backend, "logs", None)
    if logs is None:
        return text_response("Feature not implemented in this version of OpenFaaS", 501)
    try:
        name = _function_name(req.arg("name"), req.arg("namespace"))
        tail = int(req.arg("tail") or 0)
        since = parse_since(req.arg("since"))
    except ValueError:
        return text_response("could not parse the log request", 422)
    if not name:
        return text_response("could not parse the log request: name is required", 422)
    if not logs.known(name) and not backend.known(name):
        return text_response(f"function {name} not found", 404)
    follow = req.arg("follow").lower() in ("1", "t", "true")
    stream = logs.query(name, req.arg("instance"), since, tail, follow)
    headers = {"Content-Type": "application/x-ndjson"}
    if follow:
        return Response(200, headers=headers, stream=stream)
    body = b"".join(stream)
    return Response(200, body, headers)


# --- /system/functions ---------------------------------------------------------------------

def list_functions(backend: Backend, req: Request) -> Response:
    check_namespace(req.arg("namespace"))
    return json_response([status.to_dict() for status in backend.list_functions()])


def get_function(backend: Backend, req: Request) -> Response:
    name = _function_name(req.params["name"], req.arg("namespace"))
    return json_response(backend.get_function(name).to_dict())


def deploy_function(backend: Backend, req: Request) -> Response:
    check_namespace(req.arg("namespace"))
    backend.deploy(FunctionDeployment.from_dict(req.json()))
    return empty_response(202)


def update_function(backend: Backend, req: Request) -> Response:
    check_namespace(req.arg("namespace"))
    backend.update(FunctionDeployment.from_dict(req.json()))
    return empty_response(202)


def delete_function(backend: Backend, req: Request) -> Response:
    request = DeleteFunctionRequest.from_dict(req.json())
    backend.delete(_function_name(request.function_name, req.arg("namespace")))
    return empty_response(202)


def scale_function(backend: Backend, req: Request) -> Response:
    name = _function_name(req.params["name"], req.arg("namespace"))
    backend.scale(name, ScaleServiceRequest.from_dict(req.json()))
    return empty_response(202)


# --- /system/secrets ----------------------------------------------------------------------

def list_secrets(backend: Backend, req: Request) -> Response:
    check_namespace(req.arg("namespace"))
    return json_response([secret.to_dict() for secret in backend.list_secrets()])


def create_secret(backend: Backend, req: Request) -> Response:
    check_namespace(req.arg("namespace"))
    backend.put_secret(Secret.from_dict(req.json()), create=True)
    return empty_response(202)


def update_secret(backend: Backend, req: Request) -> Response:
    check_namespace(req.arg("namespace"))
    backend.put_secret(Secret.from_dict(req.json()), create=False)
    return empty_response(202)


def delete_secret(backend: Backend, req: Request) -> Response:
    check_namespace(req.arg("namespace"))
    backend.delete_secret(Secret.from_dict(req.json()).name)
    return empty_response(202)


# --- the table ---------------------------------------------------------------------------------

_NAME = r"(?P<name>[-a-zA-Z_0-9.]+)"
_NAMESPACE = r"(?P<namespace>[-a-zA-Z_0-9.]+)"


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: Handler


def _route(methods: str, path: str, handler: Handler) -> Route:
    return Route(frozenset(methods.split()), re.compile(path), handler)


ROUTES: tuple[Route, ...] = (
    _route("GET", "/healthz", healthz),
    _route("POST", f"/async-function/{_NAME}(?P<rest>/.*)?", async_function),
    _route("GET", "/system/functions", list_functions),
    _route("POST", "/system/functions", deploy_function),
    _route("PUT", "/system/functions", update_function),
    _route("DELETE", "/system/functions", delete_function),
    _route("GET", f"/system/function/{_NAME}", get_function),
    _route("POST", f"/system/scale-function/{_NAME}", scale_function),
    _route("GET", "/system/secrets", list_secrets),
    _route("POST", "/system/secrets", create_secret),
    _route("PUT", "/system/secrets", update_secret),
    _route("DELETE", "/system/secrets", delete_secret),
    _route("GET", "/system/info", system_info),
    _route("GET", "/system/namespaces", list_namespaces),
    _route("GET", "/system/logs", function_logs),
    _route("GET", f"/system/namespace/{_NAMESPACE}", get_namespace),
    _route("POST PUT DELETE", f"/system/namespace/{_NAMESPACE}", mutate_namespace),
)


#: Handlers that neither block nor read the body: run on the event loop, which saves a
#: thread hand-off (about half the cost of a ``/healthz``, which every gateway health check
#: makes).
ON_LOOP: frozenset[Handler] = frozenset({healthz, system_info, list_namespaces, get_namespace,
                                         mutate_namespace})


def guarded(path: str) -> bool:
    """Paths that need the credentials when the provider has them: the REST API, as in
    faas-provider. ``/function/*`` stays open as there (the real OpenFaaS gateway sends no
    credentials on calls): an OSCAR service's runtime checks its own caller's token
    (:mod:`oscar_faas.runtime.caller`); ``/healthz`` stays open too."""
    return path == "/system" or path.startswith("/system/")


def check_basic_auth(header: str, username: str, password: str) -> bool:
    """Constant-time check of an ``Authorization: Basic`` header (faas-provider's rule)."""
    creds = basic_credentials(header)
    if creds is None:
        return False
    user_ok = hmac.compare_digest(creds[0].encode(), username.encode())
    password_ok = hmac.compare_digest(creds[1].encode(), password.encode())
    return user_ok and password_ok


def find(method: str, path: str) -> tuple[Handler | None, dict[str, str], int]:
    """The handler of ``method path`` and its path parameters; without a handler, the
    status to answer: 405 (the path exists for other methods) or 404."""
    allowed = False
    for route in ROUTES:
        match = route.pattern.fullmatch(path)
        if match is None:
            continue
        if method not in route.methods:
            allowed = True
            continue
        return route.handler, {k: v for k, v in match.groupdict().items() if v is not None}, 0
    return None, {}, 405 if allowed else 404
