"""A stand-in OpenFaaS gateway whose one function answers at once (bench section 2).

It measures what the gateway itself can carry. Through the embedded provider every call
also forks ``/bin/sh``, which caps the whole machine far below the gateway's own ceiling;
here the "function" is an OpenFaaS function that does nothing, as a real cluster would run
it on other nodes. It answers only what the gateway asks for ``/run``:

* ``GET /system/function/<name>`` and ``GET /system/functions``: the FunctionStatus of one
  service, built with the gateway's own model code, so its token is the one given;
* ``POST /function/<name>``: reads the body, answers ``200`` with a fixed base64 body and
  ``X-Duration-Seconds``, as the watchdog does.

Usage: ``python instant_openfaas.py --port P --name N --token T``
"""

from __future__ import annotations

import argparse
import json

import uvicorn

from oscar_faas.contract import SERVICE_ANNOTATION
from oscar_faas.model import Service

ANSWER = b"aGk="


def make_app(name: str, token: str):
    service = Service.from_dict({"name": name, "image": "alpine", "script": "true",
                                 "token": token}).normalized(token=token)
    status = json.dumps({"name": name, "image": "alpine", "replicas": 1,
                         "availableReplicas": 1, "invocationCount": 0,
                         "annotations": {SERVICE_ANNOTATION: json.dumps(service.to_dict())}
                         }).encode()
    listing = b"[" + status + b"]"

    async def reply(send, code: int, body: bytes, ctype: bytes, extra=()) -> None:
        await send({"type": "http.response.start", "status": code,
                    "headers": [(b"content-type", ctype),
                                (b"content-length", str(len(body)).encode()), *extra]})
        await send({"type": "http.response.body", "body": body})

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:  # drain the request body
            more = (await receive()).get("more_body", False)
        path = scope["path"]
        if path == f"/function/{name}":
            await reply(send, 200, ANSWER, b"text/plain",
                        [(b"x-duration-seconds", b"0.000001")])
        elif path == f"/system/function/{name}":
            await reply(send, 200, status, b"application/json")
        elif path == "/system/functions":
            await reply(send, 200, listing, b"application/json")
        elif path == "/healthz":
            await reply(send, 200, b"OK", b"text/plain")
        else:
            await reply(send, 404, b"not found\n", b"text/plain")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    uvicorn.run(make_app(args.name, args.token), host="127.0.0.1", port=args.port,
                loop="uvloop", http="httptools", lifespan="off", access_log=False,
                log_level="warning")


if __name__ == "__main__":
    main()
