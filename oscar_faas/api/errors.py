"""One error handler for the whole API.

Errors are short ``text/plain`` messages, as gin's ``c.String`` writes them, with the status
their class carries. Nothing unexpected ever reaches a client as a traceback: it is logged and
answered with a plain 500.
"""

from __future__ import annotations

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from ..auth import REALM
from ..errors import OscarFaasError, Unauthorized


def _text(message: str, status: int) -> Response:
    body = f"{message}\n" if message else ""
    return Response(body, status=status, mimetype="text/plain")


def error_answer(err: OscarFaasError) -> tuple[int, str, dict[str, str]]:
    """Status, text body and extra headers for ``err``: one wording for the Flask API and
    the ``/run`` handler, which answers outside Flask."""
    body = f"{err.message}\n" if err.message else ""
    headers = {"WWW-Authenticate": REALM} if isinstance(err, Unauthorized) else {}
    headers.update(err.headers)  # e.g. Retry-After of a 503
    return err.status, body, headers


def handle_error(err: OscarFaasError) -> Response:
    status, body, headers = error_answer(err)
    return Response(body, status=status, mimetype="text/plain", headers=headers)


def handle_http(err: HTTPException) -> Response:
    if err.code == 413:  # MAX_CONTENT_LENGTH, set from MAX_API_BODY_SIZE in create_app
        from flask import current_app
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        return _text(f"request body larger than the limit of {limit} bytes "
                     f"(MAX_API_BODY_SIZE)", 413)
    if err.code == 404:
        return _text("404 page not found", 404)  # gin's wording, which clients have seen
    return _text(err.description or err.name, err.code or 500)


def init_app(app: Flask) -> None:
    app.register_error_handler(OscarFaasError, handle_error)
    app.register_error_handler(HTTPException, handle_http)

    @app.errorhandler(Exception)
    def handle_unexpected(err: Exception) -> Response:
        app.logger.exception("unexpected error")
        return _text("internal error: see the gateway log", 500)
