"""A stand-in for kube-apiserver on 127.0.0.1 (plain HTTP), just enough for Leases and for
listing and watching ImageStreams, that can be taken down and brought back on the same port.

While it is down, connections are refused, as they are while a real API server restarts;
watches that were open end when it goes down; it can come back answering 503 for a while,
or holding requests, as a starting API server does. Objects and resource versions survive.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.parse
from typing import Any

LEASES = "/apis/coordination.k8s.io/v1/namespaces/"
STREAMS = "/apis/image.openshift.io/v1/imagestreams"


class FakeApiServer:
    def __init__(self) -> None:
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[int, str, dict[str, Any]]] = []  # (version, type, object)
        self.streams: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 1
        self.compacted = 0  # a watch from an older version gets 410 Gone
        self.changed = threading.Condition()
        self.port = 0
        self.unready_until = 0.0
        self.hold = 0.0
        self._server: http.server.ThreadingHTTPServer | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api_client(self) -> Any:
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        return client.ApiClient(configuration)

    # -- up and down -----------------------------------------------------------------------

    def up(self, unready_for: float = 0.0, hold: float = 0.0) -> None:
        """Listen (again). For the first `unready_for` seconds, answer 503 (/readyz too),
        as an API server does while it starts; or with `hold`, answer the requests that
        arrive then only `hold` seconds after that, as kube-apiserver does with requests on
        connections it accepted before it served."""
        self.unready_until = time.monotonic() + unready_for
        self.hold = hold
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # for a chunked watch; every answer closes

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake.handle(self, "GET")

            def do_POST(self) -> None:
                fake.handle(self, "POST")

            def do_PUT(self) -> None:
                fake.handle(self, "PUT")

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self.changed:
            self.changed.notify_all()  # open watches notice and end

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def close(self) -> None:
        self.down()

    # -- objects -----------------------------------------------------------------------------

    def _next_version(self) -> str:
        self.version += 1
        return str(self.version)

    def add_stream(self, namespace: str, name: str) -> None:
        with self.changed:
            obj = {
                "apiVersion": "image.openshift.io/v1",
                "kind": "ImageStream",
                "metadata": {
                    "namespace": namespace,
                    "name": name,
                    "resourceVersion": self._next_version(),
                },
            }
            self.streams[(namespace, name)] = obj
            self.events.append((self.version, "ADDED", obj))
            self.changed.notify_all()

    def compact(self) -> None:
        """Forget every event so far, as etcd's compaction does: a watch from an older
        version then ends in an ERROR event, 410 Gone, and only a new list is complete."""
        with self.changed:
            self.events.clear()
            self.compacted = self.version

    def add_stream_unseen(self, namespace: str, name: str) -> None:
        """A stream whose event is compacted away at once: only a list shows it."""
        self.add_stream(namespace, name)
        self.compact()

    def lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self.changed:
            return self.leases.get((namespace, name))

    def put_lease(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        """Write a lease as another client would."""
        with self.changed:
            metadata = {"namespace": namespace, "name": name}
            metadata["resourceVersion"] = self._next_version()
            self.leases[(namespace, name)] = {"metadata": metadata, "spec": spec}

    # -- requests ----------------------------------------------------------------------------

    def handle(self, req: http.server.BaseHTTPRequestHandler, method: str) -> None:
        url = urllib.parse.urlsplit(req.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        body = None
        if method in ("POST", "PUT"):
            body = json.loads(req.rfile.read(int(req.headers.get("Content-Length", "0"))))
        try:
            early = self.unready_until - time.monotonic()
            if early > 0 and self.hold:
                time.sleep(early + self.hold)
            elif early > 0:
                self._status(req, 503, "ServiceUnavailable")
                return
            if url.path == "/readyz":
                self._send(req, 200, "ok")
            elif url.path.startswith(LEASES):
                self._lease(req, method, url.path[len(LEASES) :].split("/"), body)
            elif url.path == STREAMS and query.get("watch") in ("true", "True"):
                self._watch(req, int(query.get("resourceVersion") or 0), query)
            elif url.path == STREAMS:
                with self.changed:
                    items = list(self.streams.values())
                    listed = {"metadata": {"resourceVersion": str(self.version)}, "items": items}
                self._send(req, 200, listed)
            else:
                self._status(req, 404, "NotFound")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _lease(
        self,
        req: http.server.BaseHTTPRequestHandler,
        method: str,
        parts: list[str],
        body: Any,
    ) -> None:
        namespace, name = parts[0], (parts[2] if len(parts) > 2 else body["metadata"]["name"])
        with self.changed:
            current = self.leases.get((namespace, name))
            if method == "GET":
                if current is None:
                    return self._status(req, 404, "NotFound")
                return self._send(req, 200, current)
            if method == "POST":
                if current is not None:
                    return self._status(req, 409, "AlreadyExists")
            elif current is None:
                return self._status(req, 404, "NotFound")
            elif body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                return self._status(req, 409, "Conflict")
            stored = {
                "metadata": {
                    "namespace": namespace,
                    "name": name,
                    "resourceVersion": self._next_version(),
                },
                "spec": body.get("spec") or {},
            }
            self.leases[(namespace, name)] = stored
        self._send(req, 201 if method == "POST" else 200, stored)

    def _watch(
        self, req: http.server.BaseHTTPRequestHandler, since: int, query: dict[str, str]
    ) -> None:
        server = self._server
        req.send_response_only(200)
        req.send_header("Content-Type", "application/json")
        req.send_header("Transfer-Encoding", "chunked")  # an event per chunk, as the real one
        req.send_header("Connection", "close")
        req.end_headers()
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 300)
        sent = since
        if since < self.compacted:
            gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
            line = json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n"
            req.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(line), line))
            return
        while time.monotonic() < deadline:
            with self.changed:
                if self._server is not server:
                    return  # it went down: the connection drops, mid-stream
                pending = [e for e in self.events if e[0] > sent]
                if not pending:
                    self.changed.wait(0.2)
                    continue
            for version, kind, obj in pending:
                line = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
                req.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                req.wfile.flush()
                sent = version
        req.wfile.write(b"0\r\n\r\n")  # the watch's timeout: a clean end

    def _send(self, req: http.server.BaseHTTPRequestHandler, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        req.send_response_only(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.send_header("Connection", "close")  # no idle connection outlives a down()
        req.end_headers()
        req.wfile.write(data)

    def _status(self, req: http.server.BaseHTTPRequestHandler, code: int, reason: str) -> None:
        status = {"kind": "Status", "status": "Failure", "reason": reason, "code": code}
        self._send(req, code, status)
