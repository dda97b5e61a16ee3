"""OSCAR's buckets API on the gateway's MinIO (``minio.default``), through the ``minio`` SDK.

Shapes and rules are OSCAR's (``pkg/handlers/buckets``, reference/oscar-async-buckets.md
section 2); what differs is where the facts live, because oscar-faas has one MinIO account
(the gateway's) and no per-user MinIO users or groups:

* **Owner and metadata** are bucket tags, as OSCAR keeps them: ``owner``, ``owner_name``.
* **Visibility** is kept in the ``visibility`` tag (``allowed_users`` in another, space
  separated) and mapped onto the one thing plain S3/MinIO enforces for everyone: the bucket
  policy. ``public`` sets an anonymous read-and-list policy (``mc anonymous set download``),
  ``private`` and ``restricted`` remove it. OSCAR's ``restricted`` (a MinIO group of the
  allowed users) needs MinIO's admin API and per-user accounts, which oscar-faas does not
  create: the users are recorded and returned, not enforced by MinIO.
* **Service buckets** (a service's ``minio.default`` input or output) cannot be changed or
  deleted through this API while the service exists (OSCAR: 403 "A bucket from a service
  can't be modified"); delete the service (``?purge=true``) instead.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, TypeVar

import urllib3

from .errors import BadBucketRequest, BucketForbidden, BucketNotFound, StorageError

if TYPE_CHECKING:
    from minio import Minio

T = TypeVar("T")

VISIBILITIES = ("private", "public", "restricted")
#: Objects per page of ``GET /system/buckets/<b>`` (OSCAR's ``JOB_LISTING_LIMIT`` default).
PAGE_SIZE = 70
#: Presigned URL lifetime: OSCAR's default and bounds (7 days, as S3 allows).
PRESIGN_DEFAULT = 900
PRESIGN_MIN, PRESIGN_MAX = 1, 604800
#: S3's rule for bucket names (3-63 lower-case letters, digits, '.', '-').
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
#: Characters S3 allows in a tag value (user ids go there).
_TAG_VALUE = re.compile(r"[\w .:/=+\-@]*")
_INTERNAL_TAGS = ("owner", "visibility", "allowed_users")


@dataclass(frozen=True)
class PresignRequest:
    """OSCAR's presign body, validated."""

    object_key: str
    operation: str
    expires_in: int
    content_type: str
    extra_headers: dict[str, str]

    @classmethod
    def from_dict(cls, body: Any) -> "PresignRequest":
        """:raises BadBucketRequest: a field is missing or out of bounds (named)."""
        if not isinstance(body, dict):
            raise BadBucketRequest("Invalid presign request: the body must be a JSON object")
        key = str(body.get("object_key") or "").strip().strip("/")
        if not key:
            raise BadBucketRequest("Object key cannot be empty")
        operation = str(body.get("operation") or "").strip().lower()
        if operation not in ("upload", "download"):
            raise BadBucketRequest(f"Unsupported operation '{body.get('operation') or ''}'. "
                                   f"Allowed values are 'upload' or 'download'")
        expires = body.get("expires_in", 0)
        if isinstance(expires, bool) or not isinstance(expires, int):
            raise BadBucketRequest("Invalid presign request: expires_in must be a whole "
                                   "number of seconds")
        expires = expires or PRESIGN_DEFAULT
        if not PRESIGN_MIN <= expires <= PRESIGN_MAX:
            raise BadBucketRequest(f"Invalid expiration requested: {expires}. Allowed range "
                                   f"is {PRESIGN_MIN}-{PRESIGN_MAX} seconds")
        extra = body.get("extra_headers") or {}
        if not isinstance(extra, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
            raise BadBucketRequest("Invalid presign request: extra_headers must map header "
                                   "names to strings")
        content_type = body.get("content_type") or ""
        if not isinstance(content_type, str):
            raise BadBucketRequest("Invalid presign request: content_type must be a string")
        return cls(key, operation, expires, content_type.strip(), extra)


def split_path(raw: Any) -> tuple[str, str]:
    """``"bucket/folder/sub"`` -> ``("bucket", "folder/sub")``, checked.

    :raises BadBucketRequest: no name, or not a valid S3 bucket name.
    """
    if not isinstance(raw, str) or not raw.strip(" /"):
        raise BadBucketRequest("The Bucket specification is not valid: bucket_name is required")
    bucket, _, folder = raw.strip(" /").partition("/")
    check_name(bucket)
    return bucket, folder.strip("/")


def check_name(bucket: str) -> None:
    if not _BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
        raise BadBucketRequest(
            f"'{bucket}' is not a valid bucket name: 3 to 63 lower-case letters, digits, "
            f"'.' and '-', starting and ending with a letter or digit")


def visibility_of(body: Mapping[str, Any]) -> tuple[str, list[str]]:
    """``(visibility, allowed_users)`` from a bucket body (private by default).

    :raises BadBucketRequest: an unknown visibility or a malformed user list.
    """
    visibility = str(body.get("visibility") or "private").strip().lower()
    if visibility not in VISIBILITIES:
        raise BadBucketRequest(f"The Bucket specification is not valid: visibility must be "
                               f"one of {', '.join(VISIBILITIES)}, got {visibility!r}")
    users = body.get("allowed_users") or []
    if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
        raise BadBucketRequest("The Bucket specification is not valid: allowed_users must "
                               "be a list of user ids")
    users = [u.strip() for u in users if u.strip()]
    for user in users:
        if " " in user or not _TAG_VALUE.fullmatch(user):
            raise BadBucketRequest(f"allowed_users: {user!r} has characters a MinIO tag "
                                   f"cannot hold")
    return visibility, users


def public_policy(bucket: str) -> str:
    """Anonymous list and read, as ``mc anonymous set download`` writes it."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": ["*"]},
         "Action": ["s3:GetBucketLocation", "s3:ListBucket"],
         "Resource": [f"arn:aws:s3:::{bucket}"]},
        {"Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": ["s3:GetObject"],
         "Resource": [f"arn:aws:s3:::{bucket}/*"]}]})


def _s3(what: str, call: Callable[[], T]) -> T:
    """Run one SDK call; S3 and transport errors become :class:`StorageError` (502) naming
    ``what``, a missing bucket :class:`BucketNotFound`."""
    from minio.error import MinioException, S3Error

    try:
        return call()
    except S3Error as exc:
        if exc.code == "NoSuchBucket":
            raise BucketNotFound(f"The bucket '{exc.bucket_name or what}' does not exist")
        raise StorageError(f"{what}: {exc.code}: {exc.message}") from None
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise StorageError(f"{what}: MinIO could not be reached: {exc}") from None


class BucketStore:
    """The buckets of one MinIO account. ``service_buckets`` maps bucket -> service for the
    buckets live services use (read when a change needs it)."""

    def __init__(self, client: Minio, owner: str,
                 service_buckets: Callable[[], Mapping[str, str]]) -> None:
        self.client = client
        self.owner = owner
        self.service_buckets = service_buckets

    # --- reading ----------------------------------------------------------------------------

    def _tags(self, bucket: str) -> dict[str, str]:
        from minio.error import S3Error

        try:
            tags = self.client.get_bucket_tags(bucket)
        except S3Error as exc:
            if exc.code in ("NoSuchTagSet", "NoSuchTagSetError"):
                return {}
            if exc.code == "NoSuchBucket":
                raise BucketNotFound(f"The bucket '{bucket}' does not exist") from None
            raise StorageError(f"bucket '{bucket}': {exc.code}: {exc.message}") from None
        return dict(tags or {})

    def describe(self, bucket: str, services: Mapping[str, str]) -> dict[str, Any]:
        """OSCAR's ``MinIOBucket`` without objects."""
        tags = _s3(f"bucket '{bucket}'", lambda: self._tags(bucket))
        visibility = tags.get("visibility") or "private"
        metadata = {k: v for k, v in tags.items() if k not in _INTERNAL_TAGS}
        if bucket in services:
            metadata["from_service"] = services[bucket]
        metadata.setdefault("owner_name", tags.get("owner") or self.owner)
        return {"bucket_name": bucket, "visibility": visibility,
                "allowed_users": (tags.get("allowed_users") or "").split()
                if visibility == "restricted" else [],
                "owner": tags.get("owner") or self.owner, "metadata": metadata}

    def list(self) -> list[dict[str, Any]]:
        buckets = _s3("list buckets", self.client.list_buckets)
        services = self.service_buckets()
        return [self.describe(b.name, services) for b in buckets]

    def get(self, bucket: str, page: str = "") -> dict[str, Any]:
        """The bucket with one page of its objects (``page``: the previous answer's
        ``next_page``, the last key it returned)."""
        check_name(bucket)
        if not _s3(f"bucket '{bucket}'", lambda: self.client.bucket_exists(bucket)):
            raise BucketNotFound(f"The bucket '{bucket}' does not exist")
        info = self.describe(bucket, self.service_buckets())
        info["metadata"]["owner"] = info["owner"]  # OSCAR's get keeps it there (list drops it)

        def page_of_objects() -> list[Any]:
            found = []
            for obj in self.client.list_objects(bucket, recursive=True,
                                                start_after=page or None):
                found.append(obj)
                if len(found) > PAGE_SIZE:
                    break
            return found

        found = _s3(f"bucket '{bucket}'", page_of_objects)
        truncated = len(found) > PAGE_SIZE
        found = found[:PAGE_SIZE]
        info["objects"] = [{"object_name": o.object_name, "size_bytes": o.size or 0,
                            "last_modified": _go_time(o.last_modified)} for o in found]
        if truncated:
            info["next_page"] = found[-1].object_name
        info["is_truncated"] = truncated
        info["returned_items"] = len(found)
        return info

    def counts(self, limit: int = 100_000) -> tuple[int, int]:
        """``(buckets, objects)``, objects counted as OSCAR does (size > 0, not folder
        markers), at most ``limit`` of them."""
        def count() -> tuple[int, int]:
            buckets = self.client.list_buckets()
            objects = 0
            for bucket in buckets:
                for obj in self.client.list_objects(bucket.name, recursive=True):
                    objects += 1 if (obj.size or 0) > 0 else 0
                    if objects >= limit:
                        return len(buckets), objects
            return len(buckets), objects
        return _s3("count buckets", count)

    # --- writing ----------------------------------------------------------------------------

    def create(self, body: Any, owner: str) -> None:
        """Create ``bucket[/folder]`` (a folder marker object), tagged with its owner and
        visibility. :raises BadBucketRequest: bad body, or the bucket exists (as OSCAR)."""
        if not isinstance(body, dict):
            raise BadBucketRequest("The Bucket specification is not valid: a JSON object is "
                                   "required")
        bucket, folder = split_path(body.get("bucket_name"))
        visibility, users = visibility_of(body)

        def make() -> None:
            if self.client.bucket_exists(bucket):
                raise BadBucketRequest(f"Error creating bucket with name '{bucket}': it "
                                       f"already exists")
            self.client.make_bucket(bucket)
            if folder:
                self.client.put_object(bucket, folder + "/", io.BytesIO(b""), 0)
        _s3(f"create bucket '{bucket}'", make)
        self._apply(bucket, visibility, users, owner)

    def update(self, body: Any) -> None:
        """Change a bucket's visibility or allowed users.

        :raises BucketForbidden: a live service uses the bucket.
        """
        if not isinstance(body, dict):
            raise BadBucketRequest("The Bucket specification is not valid: a JSON object is "
                                   "required")
        bucket, _ = split_path(body.get("bucket_name"))
        visibility, users = visibility_of(body)
        tags = _s3(f"bucket '{bucket}'", lambda: self._tags(bucket))
        self._not_a_service_bucket(bucket, "modified")
        self._apply(bucket, visibility, users, tags.get("owner") or self.owner, tags)

    def delete(self, bucket: str) -> None:
        """Delete a bucket and everything in it.

        :raises BucketNotFound: no such bucket; :raises BucketForbidden: a service's bucket.
        """
        check_name(bucket)
        if not _s3(f"bucket '{bucket}'", lambda: self.client.bucket_exists(bucket)):
            raise BucketNotFound(f"The bucket '{bucket}' does not exist")
        self._not_a_service_bucket(bucket, "deleted")

        def remove() -> None:
            for obj in self.client.list_objects(bucket, recursive=True):
                self.client.remove_object(bucket, obj.object_name)
            self.client.remove_bucket(bucket)
        _s3(f"delete bucket '{bucket}'", remove)

    def presign(self, bucket: str, req: PresignRequest) -> dict[str, Any]:
        """OSCAR's presign answer: a URL for one PUT (upload) or GET (download)."""
        check_name(bucket)
        if not _s3(f"bucket '{bucket}'", lambda: self.client.bucket_exists(bucket)):
            raise BucketNotFound(f"Bucket '{bucket}' not found")
        method = "PUT" if req.operation == "upload" else "GET"
        response_headers = ({"response-content-type": req.content_type}
                            if method == "GET" and req.content_type else None)
        url = _s3(f"presign on bucket '{bucket}'", lambda: self.client.get_presigned_url(
            method, bucket, req.object_key, expires=timedelta(seconds=req.expires_in),
            response_headers=response_headers))
        headers = {"-".join(p.capitalize() for p in k.split("-")): v
                   for k, v in req.extra_headers.items()}
        if method == "PUT" and req.content_type:
            headers["Content-Type"] = req.content_type
        answer: dict[str, Any] = {
            "object_key": req.object_key, "operation": req.operation, "method": method,
            "url": url,
            "expires_at": (datetime.now(timezone.utc) + timedelta(seconds=req.expires_in))
            .strftime("%Y-%m-%dT%H:%M:%SZ")}
        if headers:
            answer["headers"] = headers
        return answer

    # --- helpers ----------------------------------------------------------------------------

    def _not_a_service_bucket(self, bucket: str, what: str) -> None:
        service = self.service_buckets().get(bucket)
        if service:
            raise BucketForbidden(
                f"Forbidden action: A bucket from a service can't be {what}: '{bucket}' "
                f"belongs to service '{service}' (delete the service with ?purge=true)")

    def _apply(self, bucket: str, visibility: str, users: Iterable[str], owner: str,
               tags: Mapping[str, str] | None = None) -> None:
        from minio.commonconfig import Tags

        new = Tags.new_bucket_tags()
        for key, value in (tags or {}).items():
            if key not in _INTERNAL_TAGS:
                new[key] = value
        new["owner"] = owner
        new.setdefault("owner_name", owner)
        new["visibility"] = visibility
        if visibility == "restricted" and users:
            new["allowed_users"] = " ".join(users)

        def write() -> None:
            self.client.set_bucket_tags(bucket, new)
            if visibility == "public":
                self.client.set_bucket_policy(bucket, public_policy(bucket))
            else:
                self.client.delete_bucket_policy(bucket)
        _s3(f"bucket '{bucket}'", write)


def _go_time(moment: datetime | None) -> str:
    """Go's ``time.Time.String()`` of a UTC time, as OSCAR writes ``last_modified``."""
    if moment is None:
        return ""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")
