"""Bucket triggers against pytest-httpserver playing MinIO, asserting exactly what is sent:
the admin API's webhook target (its body decrypted with the secret key, as MinIO does), the
restart, and the input bucket's notification (OSCAR's pkg/utils/minio.go)."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import pytest
import urllib3
from minio.crypto import decrypt

from oscar_faas import triggers
from oscar_faas.config import Settings
from oscar_faas.model import Service

NS = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
EMPTY = ('<NotificationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
         '<QueueConfiguration><Id>other</Id><Queue>arn:minio:sqs:us-east-1:other:webhook</Queue>'
         '<Event>s3:ObjectCreated:*</Event></QueueConfiguration></NotificationConfiguration>')


def settings(httpserver, **extra) -> Settings:
    return Settings.from_env({"MINIO_ENDPOINT": httpserver.url_for("/").rstrip("/"),
                              "MINIO_ACCESS_KEY": "minioadmin", "MINIO_SECRET_KEY": "minio123",
                              "JOB_CALLBACK_URL": "http://gateway:8080", **extra})


def service() -> Service:
    return Service.from_dict({
        "name": "photos", "image": "alpine", "script": "true", "token": "ab" * 32,
        "input": [{"storage_provider": "minio.default", "path": "photos/in"}],
        "output": [{"storage_provider": "minio.default", "path": "photos/out"}]})


def decrypted(body: bytes) -> str:
    return decrypt(urllib3.response.HTTPResponse(body=io.BytesIO(body),
                                                 preload_content=False), "minio123").decode()


@pytest.fixture
def minio(httpserver, monkeypatch):
    monkeypatch.setattr(triggers.time, "sleep", lambda _s: None)
    httpserver.expect_request("/minio/admin/v3/set-config-kv", method="PUT").respond_with_data("")
    httpserver.expect_request("/minio/admin/v3/del-config-kv", method="DELETE"
                              ).respond_with_data("")
    httpserver.expect_request("/minio/admin/v3/service", method="POST").respond_with_data("")
    httpserver.expect_request("/minio/admin/v3/info").respond_with_json({"mode": "online"})
    httpserver.expect_request("/photos", method="HEAD").respond_with_data("")
    httpserver.expect_request("/photos", method="GET", query_string={"location": ""}
                              ).respond_with_data(
        '<LocationConstraint xmlns="http://s3.amazonaws.com/doc/2006-03-01/">us-east-1'
        '</LocationConstraint>')
    httpserver.expect_request("/photos", method="GET", query_string={"notification": ""}
                              ).respond_with_data(EMPTY)
    httpserver.expect_request("/photos", method="PUT", query_string={"notification": ""}
                              ).respond_with_data("")
    return httpserver


def test_register_sets_the_webhook_restarts_and_subscribes_the_input_folder(minio):
    assert triggers.register(service(), settings(minio)) is True
    log = [(r.method, r.path, r.query_string.decode()) for r, _ in minio.log]
    config = next(r for r, _ in minio.log if r.path.endswith("set-config-kv"))
    assert decrypted(config.get_data()) == (
        f"notify_webhook:photos endpoint=http://gateway:8080/job/photos "
        f"auth_token={'ab' * 32}")
    restart = log.index(("POST", "/minio/admin/v3/service", "action=restart"))
    put = next(r for r, _ in minio.log if r.method == "PUT" and r.path == "/photos")
    assert restart < log.index(("PUT", "/photos", "notification="))  # target loaded first
    doc = ET.fromstring(put.get_data())
    queues = doc.findall("s3:QueueConfiguration", NS)
    by_arn = {q.findtext("s3:Queue", namespaces=NS): q for q in queues}
    assert set(by_arn) == {"arn:minio:sqs:us-east-1:other:webhook",  # kept as it was
                           "arn:minio:sqs:us-east-1:photos:webhook"}
    ours = by_arn["arn:minio:sqs:us-east-1:photos:webhook"]
    assert ours.findtext("s3:Event", namespaces=NS) == "s3:ObjectCreated:*"
    rule = ours.find("s3:Filter/s3:S3Key/s3:FilterRule", NS)
    assert (rule.findtext("s3:Name", namespaces=NS), rule.findtext("s3:Value", namespaces=NS)) \
        == ("prefix", "in/")


def test_unregister_removes_the_subscription_and_the_webhook(minio):
    triggers.unregister(service(), settings(minio))
    put = next(r for r, _ in minio.log if r.method == "PUT" and r.path == "/photos")
    queues = [q.findtext("s3:Queue", namespaces=NS)
              for q in ET.fromstring(put.get_data()).findall("s3:QueueConfiguration", NS)]
    assert queues == ["arn:minio:sqs:us-east-1:other:webhook"]
    delete = next(r for r, _ in minio.log if r.path.endswith("del-config-kv"))
    assert decrypted(delete.get_data()) == "notify_webhook:photos"


def test_no_admin_api_or_no_url_leaves_the_service_without_triggers(httpserver, caplog):
    httpserver.expect_request("/minio/admin/v3/set-config-kv").respond_with_data(
        "<Error><Code>NotImplemented</Code></Error>", 501)
    assert triggers.register(service(), settings(httpserver)) is False
    assert "admin API" in caplog.text
    assert triggers.register(service(), settings(httpserver, JOB_CALLBACK_URL="")) is False
    assert "JOB_CALLBACK_URL" in caplog.text
    no_inputs = Service.from_dict({"name": "plain", "image": "alpine", "script": "true"})
    assert triggers.register(no_inputs, settings(httpserver)) is False
