"""The provider's route table: one short function per path and method.

The table mirrors faas-provider's ``serve.go`` (``/system/*``, ``/function/*``, ``/healthz``);
:class:`App` adds basic auth on ``/system/*`` and ``/function/*`` and turns the package's errors into
status codes, so handlers stay free of HTTP plumbing. Routes take a :class:`Request` and return
a :class:`Response`; :mod:`.server` moves them over the socket.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import unquote

from .. import __version__
from ..contract import HOP_BY_HOP, basic_credentials, canonical_header
from ..errors import OscarFaasError, ServiceNotFound
from .async_calls import async_function
from .backend import Backend, Call
from .httpio import Request, Response, empty_response, json_response, text_response
from .logs import parse_since
from .types import (DEFAULT_NAMESPACE, DeleteFunctionRequest, FunctionDeployment,
                    ScaleServiceRequest, Secret, check_namespace)

log = logging.getLogger("oscar_faas.provider")

PROVIDER_NAME = "oscar-faas-local"
ORCHESTRATION = "local"
#: Methods the classic watchdog runs a function for; others get 405 from it.
WATCHDOG_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})

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
    """faas-provider's logs contract (see :mod:`.logs`): NDJSON, live with ``follow``."""
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
    if not logs.known(name) and not _known(backend, name):
        return text_response(f"function {name} not found", 404)
    follow = req.arg("follow").lower() in ("1", "t", "true")
    stream = logs.query(name, req.arg("instance"), since, tail, follow)
    headers = {"Content-Type": "application/x-ndjson"}
    if follow:
        return Response(200, headers=headers, stream=stream, chunked=True)
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


# --- /function/<name>[/path] -------------------------------------------------------------------

def invoke_function(backend: Backend, req: Request) -> Response:
    """Answer the call as gateway + provider + watchdog would: through the function's runtime,
    or a process per call (see :meth:`~.backend.LocalBackend.invoke`)."""
    started, start_ns = time.monotonic(), time.time_ns()
    call_id = req.header("X-Call-Id") or str(uuid.uuid4())
    internal = {"X-OpenFaaS-Internal": "proxy", "X-Call-Id": call_id}
    name, _, namespace = req.params["name"].partition(".")
    if req.method not in WATCHDOG_METHODS and not _exposed(backend, name):
        return text_response("Method not allowed", 405, {"X-Call-Id": call_id})
    if namespace not in ("", DEFAULT_NAMESPACE):
        return text_response(f"error finding function {req.params['name']}: not found", 404,
                             internal)
    raw_path = req.params.get("rest") or "/"
    call = Call(method=req.method, raw_path=raw_path, path=unquote(raw_path), query=req.query,
                headers=_forwarded_headers(req, call_id, start_ns), host=req.header("Host"),
                body=req.body, content_length=req.body.content_length,
                chunked=req.body.chunked)
    try:
        answer = backend.invoke(name, call)
    except ServiceNotFound as err:
        return text_response(err.message, err.status, internal)
    except OscarFaasError as err:
        return text_response(err.message, err.status,
                             {**(internal if err.status != 429 else {"X-Call-Id": call_id}),
                              **err.headers})
    # canonical names, so the runtime's x-duration-seconds is replaced rather than doubled
    headers = {canonical_header(k): v for k, v in answer.headers}
    headers.update({
        "X-Duration-Seconds": f"{time.monotonic() - started:f}",
        "X-Call-Id": call_id,
        "X-Start-Time": str(start_ns),
    })
    return Response(answer.status, headers=headers, stream=answer.chunks,
                    length=answer.length or 0, chunked=answer.length is None,
                    close_connection=answer.close_connection, on_close=[answer.close])


def _exposed(backend: Backend, name: str) -> bool:
    """An exposed service's server answers every method (HEAD, OPTIONS included)."""
    exposed = getattr(backend, "exposed", None)
    return bool(exposed and exposed(name))


def _forwarded_headers(req: Request, call_id: str, start_ns: int) -> list[tuple[str, str]]:
    """The headers a function sees: the client's minus hop-by-hop ones, plus what the
    OpenFaaS gateway adds (call id, start time, forwarded-for/host)."""
    headers = [(k, v) for k, v in req.headers if k.lower() not in HOP_BY_HOP]
    present = {canonical_header(k) for k, _ in headers}
    extra = {"X-Call-Id": call_id, "X-Start-Time": str(start_ns),
             "X-Forwarded-For": req.client, "X-Forwarded-Host": req.header("Host")}
    headers.extend((k, v) for k, v in extra.items() if k not in present and v)
    return headers


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
    _route("*", f"/function/{_NAME}(?P<rest>/.*)?", invoke_function),  # any method
)


def _known(backend: Backend, name: str) -> bool:
    try:
        backend.get_function(name)
    except ServiceNotFound:
        return False
    return True


def _guarded(path: str) -> bool:
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


class App:
    """Routing, auth and error mapping around a :class:`Backend`."""

    def __init__(self, backend: Backend, username: str | None = None,
                 password: str | None = None, routes: tuple[Route, ...] = ROUTES,
                 metrics: Any = None) -> None:
        self.backend = backend
        self.credentials = (username, password) if username and password else None
        self.routes = routes
        #: :class:`~oscar_faas.metrics.ProviderMetrics`, or None (no ``/metrics``)
        self.metrics = metrics

    def handle(self, req: Request) -> Response:
        """Answer one request; never raises for expected errors."""
        if self.metrics is not None:
            if req.path.startswith("/function/"):
                return self._counted(req)
            if req.path == "/metrics" and req.method == "GET":
                body, content_type = self.metrics.exposition()
                return Response(200, body, {"Content-Type": content_type})
        return self._handle(req)

    def _counted(self, req: Request) -> Response:
        """A function call, counted as the OpenFaaS gateway counts it (unknown functions,
        404, are not: their names would grow the label set)."""
        name = req.path[len("/function/"):].split("/", 1)[0].partition(".")[0]
        if not _known(self.backend, name):
            return self._handle(req)
        started = time.monotonic()
        self.metrics.started(name)
        resp = self._handle(req)
        self.metrics.observe(name, resp.status, time.monotonic() - started)
        return resp

    def _handle(self, req: Request) -> Response:
        if self.credentials and _guarded(req.path):
            if not check_basic_auth(req.header("Authorization"), *self.credentials):
                return text_response("invalid credentials", 401,
                                     {"WWW-Authenticate": 'Basic realm="Restricted"'})
        allowed = False
        for route in self.routes:
            match = route.pattern.fullmatch(req.path)
            if match is None:
                continue
            if req.method not in route.methods and "*" not in route.methods:
                allowed = True
                continue
            req.params = {k: v for k, v in match.groupdict().items() if v is not None}
            try:
                return route.handler(self.backend, req)
            except OscarFaasError as err:
                return text_response(err.message, err.status)
        if allowed:
            return text_response("Method Not Allowed", 405)
        return text_response("404 page not found", 404)
