"""CORS over real HTTP: the gateway's ASGI front (as ``oscar-faas serve`` builds it) on a
live uvicorn, pytest-httpserver playing OpenFaaS, ``requests`` playing the browser."""

from __future__ import annotations

import pytest
import requests

from oscar_faas.api import create_asgi_app
from oscar_faas.config import DEFAULT_CORS_ORIGINS, Settings
from oscar_faas.errors import ConfigError

from ..asgiserver import ThreadedServer
from .conftest import ADMIN, function_status

TOKEN = "cd" * 32
SERVICE = {"name": "cowsay", "image": "alpine", "script": "cat", "token": TOKEN}
DASHBOARD = "https://dashboard.oscar.grycap.net"
ELSEWHERE = "https://evil.example.org"


def _served(settings: Settings, **overrides):
    return ThreadedServer(create_asgi_app(Settings(**{**settings.__dict__, **overrides}),
                                          threads=4))


@pytest.fixture
def gw(settings):
    with _served(settings) as url:
        yield url


def preflight(url: str, path: str, origin: str, method: str = "GET",
              headers: str = "authorization") -> requests.Response:
    """What a browser sends before a cross-origin call with ``Authorization``: no
    credentials at all."""
    return requests.options(url + path, timeout=10, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers})


@pytest.mark.parametrize("path,method", [("/system/info", "GET"),
                                         ("/system/services", "POST"),
                                         ("/system/services/cowsay", "DELETE"),
                                         ("/run/cowsay", "POST")])
def test_preflight_is_answered_without_credentials(gw, httpserver, path, method):
    resp = preflight(gw, path, DASHBOARD, method, "authorization,content-type")
    assert resp.status_code == 204
    assert resp.headers["Access-Control-Allow-Origin"] == DASHBOARD
    assert method in resp.headers["Access-Control-Allow-Methods"]
    assert resp.headers["Access-Control-Allow-Headers"] == "authorization,content-type"
    assert "Access-Control-Allow-Credentials" not in resp.headers
    assert "Origin" in resp.headers["Vary"]
    assert not httpserver.log  # nothing reached OpenFaaS


def test_preflight_from_another_origin_gets_no_cors_headers(gw):
    resp = preflight(gw, "/system/info", ELSEWHERE)
    assert resp.status_code == 204
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_every_answer_carries_cors_headers(gw, httpserver):
    httpserver.expect_request("/system/info").respond_with_json(
        {"provider": "p", "orchestration": "o", "version": {"sha": "", "release": "1"}})
    origin = {"Origin": DASHBOARD}
    ok = requests.get(gw + "/system/info", headers={**ADMIN, **origin}, timeout=10)
    assert ok.status_code == 200
    assert ok.headers["Access-Control-Allow-Origin"] == DASHBOARD
    assert "X-Duration-Seconds" in ok.headers["Access-Control-Expose-Headers"]
    # errors too, so the page can show them
    denied = requests.get(gw + "/system/info", headers=origin, timeout=10)
    assert denied.status_code == 401
    assert denied.headers["Access-Control-Allow-Origin"] == DASHBOARD
    health = requests.get(gw + "/health", headers=origin, timeout=10)
    assert health.headers["Access-Control-Allow-Origin"] == DASHBOARD
    # no Origin, no CORS headers; another origin, none either
    assert "Access-Control-Allow-Origin" not in requests.get(gw + "/health", timeout=10).headers
    other = requests.get(gw + "/health", headers={"Origin": ELSEWHERE}, timeout=10)
    assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers


def test_run_answers_carry_cors_headers(gw, httpserver):
    httpserver.expect_request("/system/function/cowsay").respond_with_json(
        function_status(SERVICE))
    httpserver.expect_request("/function/cowsay").respond_with_data(
        "moo", headers={"X-Duration-Seconds": "0.01"})
    origin = {"Origin": DASHBOARD}
    resp = requests.post(gw + "/run/cowsay", data=b"aGk=", timeout=10,
                         headers={"Authorization": f"Bearer {TOKEN}", **origin})
    assert resp.status_code == 200 and resp.text == "moo"
    assert resp.headers["Access-Control-Allow-Origin"] == DASHBOARD
    wrong = requests.post(gw + "/run/cowsay", data=b"aGk=", timeout=10,
                          headers={"Authorization": "Bearer nope", **origin})
    assert wrong.status_code == 401
    assert wrong.headers["Access-Control-Allow-Origin"] == DASHBOARD


def test_any_origin_and_none(settings):
    with _served(settings, cors_allowed_origins=("*",)) as url:
        resp = preflight(url, "/system/info", ELSEWHERE)
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in resp.headers
    with _served(settings, cors_allowed_origins=()) as url:
        resp = preflight(url, "/system/info", DASHBOARD)
        assert "Access-Control-Allow-Origin" not in resp.headers
        assert resp.status_code == 401  # CORS off: the API answers OPTIONS as before


def test_origins_setting():
    assert Settings.from_env({}).cors_allowed_origins == DEFAULT_CORS_ORIGINS
    assert DASHBOARD in DEFAULT_CORS_ORIGINS and "*" not in DEFAULT_CORS_ORIGINS
    got = Settings.from_env({"CORS_ALLOWED_ORIGINS": " https://a.org/, http://b:8080 "})
    assert got.cors_allowed_origins == ("https://a.org", "http://b:8080")
    assert Settings.from_env({"CORS_ALLOWED_ORIGINS": ""}).cors_allowed_origins == ()
    with pytest.raises(ConfigError, match="CORS_ALLOWED_ORIGINS"):
        Settings.from_env({"CORS_ALLOWED_ORIGINS": "a.org"})
