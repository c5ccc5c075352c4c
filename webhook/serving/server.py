"""`imagestreams serve`: the Flask app under gunicorn, over TLS 1.2+.

Each worker builds its own app and index after the fork (threads do not survive a fork),
so in cluster mode every worker runs its own watch. Certificates are re-read when their
files change, so a rotated certificate is served without a restart.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

log = logging.getLogger(__name__)

# prometheus_client picks its value store when first imported, so this module must set
# the variable before anything imports it (serving/metrics.py reads it from here).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True)
class ServeOptions:
    bind: str
    certfile: str
    keyfile: str
    streams_file: str | None = None
    policies_file: str | None = None
    policies: bool = True  # False: no policy caches, /validate allows everything
    kubeconfig: str | None = None
    context: str | None = None
    workers: int = 2
    threads: int = 4
    log_level: str = "info"


class ReloadingSSLContext:
    """gunicorn's `ssl_context` hook: one context, rebuilt when the files change.

    gunicorn asks for a context on every new connection; a stat of two files is cheap,
    loading a chain is not, so the context is cached against the files' stamps. A
    half-written rotation (unreadable pair) keeps the previous context.
    """

    def __init__(self, certfile: str, keyfile: str) -> None:
        self._files = (certfile, keyfile)
        self._stamp: tuple[int, ...] | None = None
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def __call__(self, _conf: Any, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        stamp = self._read_stamp()
        with self._lock:
            if self._context is None or stamp != self._stamp:
                try:
                    context = default_factory()
                    context.minimum_version = ssl.TLSVersion.TLSv1_2
                    self._context, self._stamp = context, stamp
                    log.info("loaded serving certificate %s", self._files[0])
                except (OSError, ssl.SSLError) as err:
                    if self._context is None:
                        raise
                    log.warning("keeping previous certificate; reload failed: %s", err)
            return self._context

    def _read_stamp(self) -> tuple[int, ...]:
        stamp: tuple[int, ...] = ()
        for file in self._files:
            try:
                st = os.stat(file)
                stamp += (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                stamp += (-1,)
        return stamp


def build_app(options: ServeOptions) -> Any:
    """The WSGI app for one worker: its indexes (file- or watch-fed) and the Flask app.

    Policies come from --policies-file, else from the cluster when the streams do, else
    there are none (file mode without policies)."""
    from webhook.kube.connect import connect, custom_objects
    from webhook.kube.policy_cache import PolicyIndex, StreamImages
    from webhook.kube.watch import StreamWatcher, Tee
    from webhook.serving.app import AppConfig, create_app
    from webhook.serving.stream_index import StreamIndex, load_streams

    index = StreamIndex()
    images = StreamImages()
    policy = PolicyIndex(index, images)
    connection = None
    if options.streams_file:
        Tee(index, images).replace_all(load_streams(options.streams_file))
    else:
        connection = connect(options.kubeconfig, options.context)
        StreamWatcher(Tee(index, images), custom_objects(connection)).start()
    if not options.policies:
        return create_app(AppConfig(index=index))
    if options.policies_file or connection is None:
        policy.load_files(options.policies_file)
    else:
        policy.watch(connection.api_client)
    return create_app(AppConfig(index=index, policy=policy))


class WebhookServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        opts = self.options
        settings = {
            "bind": opts.bind,
            "certfile": opts.certfile,
            "keyfile": opts.keyfile,
            "workers": opts.workers,
            "threads": opts.threads,
            "worker_class": "gthread",
            "loglevel": opts.log_level,
            "accesslog": None,
            "keepalive": 30,
            "timeout": 30,
            "graceful_timeout": 10,
            "ssl_context": ReloadingSSLContext(opts.certfile, opts.keyfile),
            "child_exit": _mark_worker_dead,
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return build_app(self.options)


def _mark_worker_dead(_server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def serve(options: ServeOptions) -> None:
    for path in (options.certfile, options.keyfile):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} does not exist (make one with `imagestreams certs`)")
    if options.streams_file and not Path(options.streams_file).exists():
        raise FileNotFoundError(f"streams file {options.streams_file} does not exist")
    if options.policies_file:
        from webhook.kube.policy_cache import load_policy_documents

        load_policy_documents(options.policies_file)  # fail now, not in every worker
    # Metrics are shared across workers through files in this directory.
    if not os.environ.get(MULTIPROC_ENV):
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="imagestreams-metrics-")
    WebhookServer(options).run()
