"""The floor: a no-op admission webhook under exactly `imagestreams serve`'s gunicorn and TLS.

    python -m bench.floor_app --bind 127.0.0.1:PORT --certfile F --keyfile F [--workers N]
        [--health-bind HOST:PORT] [--patch-file F] [--hold-streams-file F]

It reads the body, parses the JSON (it must, to echo the request's uid) and answers
`allowed: true`: everything a Python webhook cannot avoid, and nothing of ours. With
--patch-file it also returns a fixed JSONPatch (figure 5: the same patch ours returns, so
that what the API server spends applying a patch is counted in the floor, not in ours).
With --hold-streams-file each worker loads that streams file into the indexes ours keeps
(`StreamIndex`, and `StreamImages` for policies) and never reads them: the floor with ours'
memory, which shows what holding the index costs each request (goal 4 of issue 17).
It runs under `webhook.server.WebhookServer` itself, with only the WSGI app swapped, so the gunicorn
settings (worker class and its deadlines, keep-alive, the cached `ReloadingSSLContext`)
are the product's.
Not part of the product CLI on purpose.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flask import Flask, Response, request

from webhook.serving.server import ServeOptions, WebhookServer


def create_floor_app(patch: str | None = None) -> Flask:
    """The floor; with `patch` (a base64 JSONPatch), it answers every review with that
    patch, so that the API server's cost of applying one is in the floor too."""
    app = Flask("imagestreams-floor")
    extra = {"patchType": "JSONPatch", "patch": patch} if patch else {}

    @app.post("/mutate")
    def mutate() -> Response:
        body = json.loads(request.get_data())
        uid = body["request"]["uid"]
        answer = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": uid, "allowed": True, **extra},
        }
        return Response(json.dumps(answer), mimetype="application/json")

    @app.get("/readyz")
    def readyz() -> Response:
        return Response('{"status": "ok"}', mimetype="application/json")

    return app


class FloorServer(WebhookServer):
    def __init__(
        self, options: ServeOptions, patch: str | None = None, hold: str | None = None
    ) -> None:
        self.patch = patch
        self.hold = hold
        super().__init__(options)

    def load(self) -> Any:
        app = create_floor_app(self.patch)
        if self.hold:
            app.extensions["held_indexes"] = held_indexes(self.hold)
        return app


def held_indexes(path: str) -> tuple[Any, Any]:
    """The indexes a worker of ours builds from a streams file, built the same way."""
    from webhook.kube.policy_cache import StreamImages
    from webhook.serving.stream_index import StreamIndex, iter_streams

    index, images = StreamIndex(), StreamImages()
    index.replace_all(iter_streams(path))
    images.replace_all(iter_streams(path))
    return index, images


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor_app")
    parser.add_argument("--bind", required=True)
    parser.add_argument("--certfile", required=True)
    parser.add_argument("--keyfile", required=True)
    parser.add_argument("--workers", type=int, default=ServeOptions.workers)
    parser.add_argument("--health-bind")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--patch-file", help="answer every review with this base64 JSONPatch")
    parser.add_argument("--hold-streams-file", help="keep these streams indexed, unread")
    args = parser.parse_args(argv)
    patch = Path(args.patch_file).read_text().strip() if args.patch_file else None
    options = ServeOptions(
        bind=args.bind,
        certfile=args.certfile,
        keyfile=args.keyfile,
        workers=args.workers,
        log_level=args.log_level,
        health_bind=args.health_bind,
    )
    FloorServer(options, patch, args.hold_streams_file).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
