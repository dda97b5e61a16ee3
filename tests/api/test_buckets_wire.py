"""OSCAR's buckets API end to end on a real S3 server process (moto, through the ``minio``
SDK), with pytest-httpserver playing OpenFaaS (it says which services exist)."""

from __future__ import annotations

import io
import json

import pytest
import requests

from oscar_faas.api import create_app
from oscar_faas.config import Settings
from tests.s3server import S3Server

from .conftest import ADMIN, function_status

SERVICE = {"name": "grayify", "image": "alpine", "script": "echo", "token": "ab" * 32,
           "input": [{"storage_provider": "minio.default", "path": "svc-in/in"}]}


@pytest.fixture(scope="module")
def s3():
    with S3Server() as server:
        yield server


@pytest.fixture(scope="module")
def open_s3():
    """moto checks signatures in headers only (a presigned URL's query signature makes its
    IAM check fail with a 500), so presigned URLs are used on a server without auth."""
    with S3Server(iam_auth=False) as server:
        yield server


def _api(httpserver, s3):
    httpserver.expect_request("/system/functions").respond_with_json(
        [function_status(SERVICE)])
    env = {"OPENFAAS_URL": httpserver.url_for("/").rstrip("/"), "OSCAR_USERNAME": "oscar",
           "OSCAR_PASSWORD": "s3cret", "SERVICE_CACHE_TTL": "0", **s3.gateway_env()}
    return create_app(Settings.from_env(env)).test_client()


@pytest.fixture
def api(httpserver, s3):
    return _api(httpserver, s3)


def _empty(s3, bucket):
    client = s3.client()
    if client.bucket_exists(bucket):
        for obj in client.list_objects(bucket, recursive=True):
            client.remove_object(bucket, obj.object_name)
        client.remove_bucket(bucket)


def test_create_list_get_delete(api, s3):
    _empty(s3, "data1")
    resp = api.post("/system/buckets", json={"bucket_name": "data1/in/sub"}, headers=ADMIN)
    assert resp.status_code == 201 and resp.data == b""
    assert [o.object_name for o in s3.client().list_objects("data1", recursive=True)] \
        == ["in/sub/"]
    again = api.post("/system/buckets", json={"bucket_name": "data1"}, headers=ADMIN)
    assert again.status_code == 400 and "already exists" in again.text
    listed = api.get("/system/buckets", headers=ADMIN).get_json()
    mine = [b for b in listed if b["bucket_name"] == "data1"]
    assert mine == [{"bucket_name": "data1", "visibility": "private", "allowed_users": [],
                     "owner": "oscar", "metadata": {"owner_name": "oscar"}}]
    got = api.get("/system/buckets/data1", headers=ADMIN).get_json()
    assert got["objects"][0]["object_name"] == "in/sub/" and got["objects"][0]["size_bytes"] == 0
    assert got["objects"][0]["last_modified"].endswith("+0000 UTC")
    assert got["is_truncated"] is False and got["returned_items"] == 1
    assert got["metadata"] == {"owner": "oscar", "owner_name": "oscar"}  # as OSCAR's get
    assert "next_page" not in got
    assert api.delete("/system/buckets/data1", headers=ADMIN).status_code == 204
    assert not s3.client().bucket_exists("data1")
    gone = api.delete("/system/buckets/data1", headers=ADMIN)
    assert gone.status_code == 404 and "The bucket 'data1' does not exist" in gone.text
    assert api.get("/system/buckets/data1", headers=ADMIN).status_code == 404


def test_get_pages_through_objects(api, s3):
    _empty(s3, "many")
    client = s3.client()
    client.make_bucket("many")
    for i in range(75):
        client.put_object("many", f"k{i:03d}", io.BytesIO(b"x"), 1)
    first = api.get("/system/buckets/many", headers=ADMIN).get_json()
    assert first["returned_items"] == 70 and first["is_truncated"] is True
    second = api.get(f"/system/buckets/many?page={first['next_page']}&limit=3",
                     headers=ADMIN).get_json()
    assert second["returned_items"] == 5 and second["is_truncated"] is False
    names = [o["object_name"] for o in first["objects"] + second["objects"]]
    assert names == [f"k{i:03d}" for i in range(75)]
    _empty(s3, "many")


def test_visibility_maps_onto_the_bucket_policy(api, s3):
    _empty(s3, "vis1")
    api.post("/system/buckets", json={"bucket_name": "vis1", "visibility": "public"},
             headers=ADMIN)
    client = s3.client()
    client.put_object("vis1", "a.txt", io.BytesIO(b"hello"), 5)
    policy = json.loads(client.get_bucket_policy("vis1"))
    assert {"s3:GetObject"} <= {a for st in policy["Statement"] for a in st["Action"]}
    assert api.get("/system/buckets/vis1", headers=ADMIN).get_json()["visibility"] == "public"
    update = api.put("/system/buckets", json={"bucket_name": "vis1", "visibility": "restricted",
                                              "allowed_users": ["alice@egi.eu", "bob"]},
                     headers=ADMIN)
    assert update.status_code == 204
    got = api.get("/system/buckets/vis1", headers=ADMIN).get_json()
    assert got["visibility"] == "restricted"
    assert got["allowed_users"] == ["alice@egi.eu", "bob"]
    with pytest.raises(Exception) as no_policy:  # restricted: no anonymous access any more
        client.get_bucket_policy("vis1")
    assert "NoSuchBucketPolicy" in str(no_policy.value)
    private = api.put("/system/buckets", json={"bucket_name": "vis1"}, headers=ADMIN)
    assert private.status_code == 204
    assert api.get("/system/buckets/vis1", headers=ADMIN).get_json()["visibility"] == "private"
    bad = api.put("/system/buckets", json={"bucket_name": "vis1", "visibility": "secret"},
                  headers=ADMIN)
    assert bad.status_code == 400 and "visibility must be one of" in bad.text
    _empty(s3, "vis1")


def test_service_buckets_are_protected(api, s3):
    client = s3.client()
    if not client.bucket_exists("svc-in"):
        client.make_bucket("svc-in")
    listed = {b["bucket_name"]: b for b in api.get("/system/buckets", headers=ADMIN).get_json()}
    assert listed["svc-in"]["metadata"]["from_service"] == "grayify"
    delete = api.delete("/system/buckets/svc-in", headers=ADMIN)
    assert delete.status_code == 403 and "A bucket from a service can't be deleted" in delete.text
    update = api.put("/system/buckets", json={"bucket_name": "svc-in", "visibility": "public"},
                     headers=ADMIN)
    assert update.status_code == 403 and "grayify" in update.text
    assert client.bucket_exists("svc-in")


def test_presigned_put_then_get(httpserver, open_s3):
    s3, api = open_s3, _api(httpserver, open_s3)
    _empty(s3, "up1")
    api.post("/system/buckets", json={"bucket_name": "up1"}, headers=ADMIN)
    resp = api.post("/system/buckets/up1/presign", headers=ADMIN, json={
        "object_key": "/in/photo.jpg", "operation": "upload", "expires_in": 600,
        "content_type": "image/jpeg"})
    assert resp.status_code == 200
    up = resp.get_json()
    assert up["object_key"] == "in/photo.jpg" and up["method"] == "PUT"
    assert up["operation"] == "upload" and up["headers"] == {"Content-Type": "image/jpeg"}
    assert "X-Amz-Signature=" in up["url"] and "X-Amz-Expires=600" in up["url"]
    assert up["expires_at"].endswith("Z")
    put = requests.put(up["url"], data=b"\xff\xd8jpeg", headers=up["headers"], timeout=10)
    assert put.status_code == 200, put.text
    stat = s3.client().stat_object("up1", "in/photo.jpg")
    assert stat.size == 6 and stat.content_type == "image/jpeg"
    down = api.post("/system/buckets/up1/presign", headers=ADMIN, json={
        "object_key": "in/photo.jpg", "operation": "download",
        "content_type": "application/octet-stream"}).get_json()
    assert down["method"] == "GET" and "X-Amz-Expires=900" in down["url"]  # the default
    got = requests.get(down["url"], timeout=10)
    assert got.status_code == 200 and got.content == b"\xff\xd8jpeg"
    assert got.headers["Content-Type"] == "application/octet-stream"
    _empty(s3, "up1")


@pytest.mark.parametrize("body, message", [
    ({"operation": "upload"}, "Object key cannot be empty"),
    ({"object_key": "a", "operation": "delete"}, "Unsupported operation 'delete'"),
    ({"object_key": "a", "operation": "upload", "expires_in": 604801},
     "Allowed range is 1-604800 seconds"),
    ({"object_key": "a", "operation": "upload", "expires_in": -5}, "Allowed range"),
    ({"object_key": "a", "operation": "upload", "expires_in": "soon"}, "expires_in must be"),
    ([1, 2], "must be a JSON object"),
])
def test_presign_validation(api, s3, body, message):
    if not s3.client().bucket_exists("val1"):
        s3.client().make_bucket("val1")
    resp = api.post("/system/buckets/val1/presign", json=body, headers=ADMIN)
    assert resp.status_code == 400 and message in resp.text


def test_bad_requests_are_4xx(api):
    missing = api.post("/system/buckets/nosuchbucket1/presign", headers=ADMIN,
                       json={"object_key": "a", "operation": "upload"})
    assert missing.status_code == 404 and "not found" in missing.text
    for body, message in [({"bucket_name": ""}, "bucket_name is required"),
                          ({"bucket_name": "Bad_Name"}, "not a valid bucket name"),
                          ({"bucket_name": "ok-name", "allowed_users": "x"}, "allowed_users")]:
        resp = api.post("/system/buckets", json=body, headers=ADMIN)
        assert resp.status_code == 400 and message in resp.text
    invalid = api.post("/system/buckets", data=b"{not json", headers=ADMIN)
    assert invalid.status_code == 400 and "invalid JSON" in invalid.text


def test_basic_auth_only(api):
    assert api.get("/system/buckets").status_code == 401
    bearer = {"Authorization": "Bearer " + SERVICE["token"]}
    assert api.get("/system/buckets", headers=bearer).status_code == 401
    wrong = api.post("/system/buckets", json={"bucket_name": "x1y"},
                     headers={"Authorization": "Basic b3NjYXI6d3Jvbmc="})
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Basic")


def test_status_counts_minio(api, s3):
    _empty(s3, "cnt1")
    api.post("/system/buckets", json={"bucket_name": "cnt1/folder"}, headers=ADMIN)
    s3.client().put_object("cnt1", "folder/a", io.BytesIO(b"abc"), 3)
    buckets = len(s3.client().list_buckets())
    objects = sum(1 for b in s3.client().list_buckets()
                  for o in s3.client().list_objects(b.name, recursive=True) if o.size)
    minio = api.get("/system/status", headers=ADMIN).get_json()["minio"]
    assert minio == {"buckets_count": buckets, "total_objects": objects}
    assert objects >= 1  # the folder marker is not counted, the object is
    _empty(s3, "cnt1")


def test_without_minio_every_route_names_the_settings(httpserver):
    settings = Settings.from_env({"OPENFAAS_URL": httpserver.url_for("/").rstrip("/"),
                                  "OSCAR_USERNAME": "oscar", "OSCAR_PASSWORD": "s3cret"})
    client = create_app(settings).test_client()
    for method, path in [("GET", "/system/buckets"), ("POST", "/system/buckets"),
                         ("PUT", "/system/buckets"), ("GET", "/system/buckets/b1c"),
                         ("DELETE", "/system/buckets/b1c"),
                         ("POST", "/system/buckets/b1c/presign")]:
        resp = client.open(path, method=method, json={"bucket_name": "b1c"}, headers=ADMIN)
        assert resp.status_code == 501 and "MINIO_ENDPOINT" in resp.text, (method, path)
