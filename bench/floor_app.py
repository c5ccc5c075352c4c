"""The floor: a no-op admission webhook under exactly `imagestreams serve`'s gunicorn and TLS.

    python -m bench.floor_app --bind 127.0.0.1:PORT --certfile F --keyfile F [--workers N]
        [--health-bind HOST:PORT]

It reads the body, parses the JSON (it must, to echo the request's uid) and answers
`allowed: true`: everything a Python webhook cannot avoid, and nothing of ours. It runs under
`webhook.server.WebhookServer` itself, with only the WSGI app swapped, so the gunicorn
settings (worker class and its deadlines, keep-alive, the cached `ReloadingSSLContext`)
are the product's.
Not part of the product CLI on purpose.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from flask import Flask, Response, request

from webhook.serving.server import ServeOptions, WebhookServer


def create_floor_app() -> Flask:
    app = Flask("imagestreams-floor")

    @app.post("/mutate")
    def mutate() -> Response:
        body = json.loads(request.get_data())
        uid = body["request"]["uid"]
        answer = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": uid, "allowed": True},
        }
        return Response(json.dumps(answer), mimetype="application/json")

    @app.get("/readyz")
    def readyz() -> Response:
        return Response('{"status": "ok"}', mimetype="application/json")

    return app


class FloorServer(WebhookServer):
    def load(self) -> Any:
        return create_floor_app()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor_app")
    parser.add_argument("--bind", required=True)
    parser.add_argument("--certfile", required=True)
    parser.add_argument("--keyfile", required=True)
    parser.add_argument("--workers", type=int, default=ServeOptions.workers)
    parser.add_argument("--health-bind")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    options = ServeOptions(
        bind=args.bind,
        certfile=args.certfile,
        keyfile=args.keyfile,
        workers=args.workers,
        log_level=args.log_level,
        health_bind=args.health_bind,
    )
    FloorServer(options).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
