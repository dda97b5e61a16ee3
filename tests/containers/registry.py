"""A read-only container registry (the pull side of the OCI distribution API) serving images
made from root file system tarballs: enough for an engine to pull, so the provider's real pull
path runs on a machine that reaches no registry."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Registry:
    """``add(name, tag, rootfs_tar)`` then pull ``127.0.0.1:<port>/<name>:<tag>``."""

    def __init__(self, certfile: str | None = None, keyfile: str | None = None) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], bytes] = {}
        self.requests: list[str] = []
        self.references: list[str] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self._answer(head=True)

            def do_GET(self) -> None:
                self._answer(head=False)

            def _answer(self, head: bool) -> None:
                registry.requests.append(f"{self.command} {self.path}")
                path = self.path.split("?", 1)[0]
                body, kind = b"{}", "application/json"
                manifest = re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", path)
                blob = re.fullmatch(r"/v2/(.+)/blobs/([^/]+)", path)
                found: bytes | None = body if path in ("/v2/", "/v2") else None
                if manifest:
                    found, kind = registry.manifests.get(manifest.groups()), MANIFEST_TYPE
                    if found is None:  # by digest
                        found = next((m for m in registry.manifests.values()
                                      if _digest(m) == manifest.group(2)), None)
                elif blob:
                    found, kind = registry.blobs.get(blob.group(2)), "application/octet-stream"
                if found is None:
                    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN" if manifest
                                                   else "NAME_UNKNOWN",
                                                   "message": "not here"}]}).encode()
                    self.send_response(404)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if not head:
                        self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(found)))
                self.send_header("Docker-Content-Digest", _digest(found))
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                self.end_headers()
                if not head:
                    self.wfile.write(found)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        if certfile:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile, keyfile)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, name: str, tag: str, rootfs_tar: bytes) -> str:
        """Serve ``rootfs_tar`` as image ``name:tag``; return the reference to pull."""
        layer = gzip.compress(rootfs_tar, mtime=0)
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                       "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [_digest(rootfs_tar)]},
        }).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "size": len(config), "digest": _digest(config)},
            "layers": [{"mediaType": LAYER_TYPE, "size": len(layer), "digest": _digest(layer)}],
        }).encode()
        self.blobs[_digest(layer)] = layer
        self.blobs[_digest(config)] = config
        self.manifests[(name, tag)] = manifest
        self.references.append(f"127.0.0.1:{self.port}/{name}:{tag}")
        return self.references[-1]

    def __enter__(self) -> "Registry":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def self_signed_cert(directory: str) -> tuple[str, str]:
    """A certificate for 127.0.0.1 (its own CA) and its key, as PEM files in ``directory``."""
    import datetime
    import ipaddress
    import os

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    certfile, keyfile = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(certfile, "wb") as out:
        out.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(keyfile, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption()))
    return certfile, keyfile
