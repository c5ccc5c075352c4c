"""`imagestreams serve`: the Flask app under gunicorn, over TLS 1.2+.

Each worker builds its own app and index after the fork (threads do not survive a fork),
so in cluster mode every worker runs its own watch. A fresh worker takes connections only
once its indexes are loaded (or INDEX_WAIT has passed, so that probes are answered and say
why it is not ready; a streams file, however long it takes, with heartbeats meanwhile):
until then the other workers take them, and answer from a loaded index. Certificates are
re-read when their files change, so a rotated certificate is served without a restart.

Workers are gevent workers (`DeadlineWorker`): every connection has a greenlet of its own,
so a client slow to finish its TLS handshake, its headers or its body holds a few dozen
kilobytes, not one of a handful of threads, and each of those phases has a deadline. With
gthread (2 workers x 4 threads) 8 stalled connections stopped every review; with gevent,
1,000 leave reviews answered in milliseconds (bench/slow_clients.py). Probes may go to a
plain-HTTP port of their own (`health_bind`) that answers only /healthz and /readyz, with
its own listener and connection pool: no number of admission connections delays a probe.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import itertools
import logging
import math
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import gevent
from gevent import monkey
from gevent.pool import Pool
from gevent.server import StreamServer
from gevent.socket import wait_read
from gunicorn import glogging, http, util
from gunicorn.app.base import BaseApplication
from gunicorn.sock import ssl_wrap_socket
from gunicorn.workers.ggevent import GeventWorker

log = logging.getLogger(__name__)

# prometheus_client picks its value store when first imported, so this module must set
# the variable before anything imports it (serving/metrics.py reads it from here).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# How long a new worker waits for its first list before it takes connections anyway (then
# /readyz fails and /mutate warns until the list arrives). Well under gunicorn's worker
# timeout (30 s), which would otherwise kill a worker still waiting.
INDEX_WAIT = 5.0
# Streams per page of a worker's list: a page's raw JSON (~550 KiB at 100 streams of 5 tags
# x 3 history items) and its decoding leave freed memory among what the index keeps; at
# 10,000 streams a worker kept 65.8-68.0 MiB with pages of 500 (client-go's size), 60.4 with
# 100, 59.8 with 50, 55-58 fed from a file (docs/benchmarks.md, figure 4). 100 streams to
# a request is still 100 requests for 10,000 streams, which the API server answers in
# seconds.
LIST_PAGE = 100


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
    log_level: str = "info"
    # Each phase of a request has this long: the TLS handshake, the request line and
    # headers, then the body and the answer. The API server sends a review at once and
    # gives up after its webhook timeout (30 s at most), so a phase that takes longer is a
    # client we cannot help anyway.
    read_timeout: float = 10.0
    # How long a kept-alive connection may wait for its next request.
    keepalive: float = 30.0
    # Connections each worker holds at once; past that it stops accepting until one ends.
    connections: int = 2000
    # HOST:PORT of the plain-HTTP probe port, or None (probes then use the TLS port).
    health_bind: str | None = None
    index_wait: float = INDEX_WAIT

    @property
    def health_port(self) -> int | None:
        return _port(self.health_bind) if self.health_bind else None


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
    from webhook.kube.connect import GROUP, PLURAL, VERSION, connect, custom_objects, thin_client
    from webhook.kube.listwatch import collection_path
    from webhook.kube.policy_cache import PolicyIndex, StreamImages
    from webhook.kube.watch import StreamWatcher, Tee, Watcher
    from webhook.model.policy import GROUP as POLICY_GROUP
    from webhook.model.policy import PLURAL as POLICY_PLURAL
    from webhook.model.policy import VERSION as POLICY_VERSION
    from webhook.serving.app import AppConfig, create_app
    from webhook.serving.stream_index import StreamIndex

    index = StreamIndex()
    images = StreamImages()
    policy = PolicyIndex(index, images)
    connection = None
    rest = None
    file_loaded = None
    if options.streams_file:
        # On a thread (a greenlet, in a gevent worker), as a watch's list is: loading 50,000
        # streams takes longer than gunicorn's worker timeout, and a worker still in
        # build_app cannot tell the arbiter it is alive. DeadlineWorker.run waits for the
        # end of the load (file_loaded) before it takes connections, sending heartbeats.
        file_loaded = threading.Event()
        threading.Thread(
            target=_load_file,
            args=(Yielding(Tee(index, images)), options.streams_file, file_loaded),
            name="load-streams",
            daemon=True,
        ).start()
    else:
        rest = thin_client(options.kubeconfig, options.context, say_why=False)
        sinks = Yielding(Tee(index, images))
        if rest is not None:
            streams_path = collection_path(GROUP, VERSION, PLURAL)
            source = rest.resource(streams_path)
            Watcher(sinks, source, what="image streams", page_size=LIST_PAGE).start()
        else:
            connection = connect(options.kubeconfig, options.context)
            StreamWatcher(sinks, custom_objects(connection)).start()
    if file_loaded is not None:
        # A small file is loaded before the app is handed over, as it always was; a large
        # one goes on loading while DeadlineWorker.run sends heartbeats.
        file_loaded.wait(options.index_wait)
    if not options.policies:
        _wait_loaded([] if file_loaded else [index], options.index_wait)
        return _with_file_load(create_app(AppConfig(index=index)), file_loaded)
    if options.policies_file or options.streams_file:
        policy.load_files(options.policies_file)
    elif rest is not None:
        policies_path = collection_path(POLICY_GROUP, POLICY_VERSION, POLICY_PLURAL)
        policy.watch_sources(
            rest.resource(policies_path), rest.resource(collection_path("", "v1", "namespaces"))
        )
    elif connection is not None:
        policy.watch(connection.api_client)
    streams: list[_Loading] = [] if file_loaded else [index, images]  # file: run() waits
    _wait_loaded([*streams, policy.policies, policy.namespaces], options.index_wait)
    return _with_file_load(create_app(AppConfig(index=index, policy=policy)), file_loaded)


FILE_LOADED = "imagestreams.file_loaded"  # the app's extension: set when --streams-file is read


def _with_file_load(app: Any, loaded: threading.Event | None) -> Any:
    if loaded is not None:
        app.extensions[FILE_LOADED] = loaded
    return app


def _load_file(sink: Yielding, path: str, done: threading.Event) -> None:
    from webhook.serving.stream_index import iter_streams

    try:
        sink.replace_all(iter_streams(path))
        log.info("loaded %d streams from %s", len(sink), path)
    except Exception:  # serve() read it before the fork: the file changed since
        log.exception("could not load the streams file %s; this worker is not ready", path)
    finally:
        done.set()


class _Loading(Protocol):
    def wait_ready(self, timeout: float | None = None) -> bool: ...


def _wait_loaded(indexes: list[_Loading], timeout: float) -> None:
    """Block this worker (before it accepts connections) until `indexes` have loaded."""
    deadline = time.monotonic() + timeout
    for index in indexes:
        if not index.wait_ready(max(0.0, deadline - time.monotonic())):
            log.warning("indexes not loaded after %.0f s; serving, not ready yet", timeout)
            return


class Yielding:
    """A watch's sink whose replace_all lets the worker's connections run every few objects.

    A relist (at start, and after a 410 Gone, as when the API server restarts) of 10,000
    streams costs each sink seconds of CPU. The watch runs on a greenlet of the gevent
    worker, where nothing else runs until it yields: time.sleep yields (it is gevent's
    sleep once the worker has patched the standard library), so connections are served
    meanwhile (the longest stall measured went from 6.4 s to 0.1 s), as threads had their
    share of the interpreter with gthread. A sleep of 0 would not do: it lets other ready
    greenlets run, but not the loop that polls the sockets and fires the timers."""

    EVERY = 50  # objects between yields: tens of milliseconds of work at most
    PAUSE = 0.001

    def __init__(self, sink: Any) -> None:
        self._sink = sink

    def replace_all(self, objs: Iterable[Any]) -> None:
        self._sink.replace_all(self._yielding(objs))
        release_freed_memory()

    def _yielding(self, objs: Iterable[Any]) -> Iterator[Any]:
        for n, obj in enumerate(objs, 1):
            if n % self.EVERY == 0:
                time.sleep(self.PAUSE)
            yield obj

    def __len__(self) -> int:
        return len(self._sink)

    def __getattr__(self, name: str) -> Any:  # upsert, delete, ready: the sink's own
        return getattr(self._sink, name)


def release_freed_memory() -> bool:
    """Hand the C heap's free pages back to the kernel (glibc's malloc_trim), after a list
    or a streams file is loaded: its page buffers were freed among the index's allocations,
    where glibc keeps them for reuse and a worker's RSS counts them (1 MiB at 10,000
    streams). False where the C library has no malloc_trim (musl)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own C library
    except (OSError, AttributeError):
        return False
    trim(0)
    return True


HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
HEALTH_CONNECTIONS = 64  # kubelets probe a few times a second at most


class TooSlow(Exception):
    """A client did not finish one phase of a request within its deadline."""


@contextlib.contextmanager
def deadline(seconds: float, phase: str) -> Iterator[None]:
    """Raise TooSlow if the block has not finished within `seconds`.

    gevent's Timeout is raised at whatever the greenlet is waiting on (a read, a write, a
    handshake). It is a BaseException, so it passes through the application (Flask turns
    any Exception into a 500) and becomes TooSlow only here."""
    timeout = gevent.Timeout(seconds)
    timeout.start()
    try:
        yield
    except gevent.Timeout as err:
        if err is not timeout:
            raise
        raise TooSlow(f"{phase} not done within {seconds:g}s") from None
    finally:
        timeout.close()


class DeadlineWorker(GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker, with a deadline on each phase of a connection.

    gunicorn's own gevent worker does the TLS handshake with no deadline, bounds the
    request head only by the keep-alive timeout, the body not at all, and builds one SSL
    context per worker (a rotated certificate would not be served). Here each connection
    goes: handshake (read_timeout), request line and headers (read_timeout), body and
    answer (read_timeout), then an idle wait for the next request (keepalive), and the
    context comes from the `ssl_context` hook on every connection, as with gthread.
    """

    def init_process(self) -> None:
        self.options: ServeOptions = self.app.options
        self._health_sockets: set[Any] = set()
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        extensions = getattr(self.wsgi, "extensions", {})
        self._file_loaded: threading.Event | None = extensions.get(FILE_LOADED)
        self.wsgi: Callable[..., Any] = partial(_route, self.wsgi, self._health_sockets)

    def run(self) -> None:
        servers = []
        # Probes first: while a streams file loads, the probe port says alive, not ready.
        ordered = sorted(self.sockets, key=lambda s: s.getsockname()[1] != self.options.health_port)
        for listener in ordered:
            listener.setblocking(True)
            health = listener.getsockname()[1] == self.options.health_port
            if not health:
                self._wait_for_file()
            # Each listener has its own pool: a full admission pool never delays a probe.
            pool = Pool(HEALTH_CONNECTIONS if health else self.worker_connections)
            handle = partial(self.handle_health if health else self.handle, listener)
            server = StreamServer(listener, handle=handle, spawn=pool)
            if self.cfg.workers > 1:
                server.max_accept = 1  # one accept per turn spreads connections over workers
            server.start()
            servers.append(server)
        while self.alive:
            self.notify()
            gevent.sleep(1.0)
        self._drain(servers)

    def _wait_for_file(self) -> None:
        """A streams file still loading: no reviews yet (the other workers, or the other
        replicas, answer them), but heartbeats, or the arbiter would kill this worker."""
        while self.alive and self._file_loaded is not None and not self._file_loaded.wait(1.0):
            self.notify()

    def _drain(self, servers: Iterable[StreamServer]) -> None:
        """Stop accepting, let connections finish for graceful_timeout, then end them."""
        for server in servers:
            server.close()
        stop_at = time.monotonic() + self.cfg.graceful_timeout
        while time.monotonic() < stop_at:
            if all(s.pool.free_count() == s.pool.size for s in servers):
                return
            self.notify()
            gevent.sleep(0.2)
        self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
        for server in servers:
            server.stop(timeout=1)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        """One admission connection: TLS, then requests until it closes or is too slow."""
        client.setblocking(True)
        try:
            with deadline(self.options.read_timeout, "TLS handshake"):
                client = ssl_wrap_socket(client, self.cfg)
                client.do_handshake()
        except (TooSlow, OSError) as err:  # ssl.SSLError is an OSError
            self.log.debug("closing connection from %s: %s", addr, err)
            util.close(client)
            return
        self._serve(listener, client, addr)

    def handle_health(self, listener: Any, client: Any, addr: Any) -> None:
        """One probe connection: plain HTTP, /healthz and /readyz only (see _route)."""
        client.setblocking(True)
        self._health_sockets.add(client)
        try:
            self._serve(listener, client, addr)
        finally:
            self._health_sockets.discard(client)

    def _serve(self, listener: Any, client: Any, addr: Any) -> None:
        read_timeout = self.options.read_timeout
        parser = http.get_parser(self.cfg, client, addr)
        listener_name = listener.getsockname()
        req = None
        try:
            for served in itertools.count():  # ends at close, deadline or shutdown
                if served and not self._wait_for_request(client, parser):
                    return
                req = None
                with deadline(read_timeout, "request line and headers"):
                    req = next(parser)
                with deadline(read_timeout, "request body and answer"):
                    # Raises StopIteration when the answer closes the connection.
                    self.handle_request(listener_name, req, client, addr)
        except (StopIteration, http.errors.NoMoreData):
            pass
        except (TooSlow, OSError) as err:
            self.log.debug("closing connection from %s: %s", addr, err)
        except Exception as err:
            # A malformed request: gunicorn answers 400 (or 500). A client may be slow to
            # read that answer too, so writing it has a deadline as well.
            with contextlib.suppress(TooSlow), deadline(read_timeout, "error answer"):
                self.handle_error(req, client, addr, err)
        finally:
            util.close(client)

    def _wait_for_request(self, client: Any, parser: Any) -> bool:
        """Idle keep-alive: whether a next request starts within `keepalive` seconds.

        Waits in steps of a second so that a stopping worker closes idle connections at
        once instead of holding its shutdown for their keep-alive."""
        if parser.unreader.buf.getvalue() or (
            isinstance(client, ssl.SSLSocket) and client.pending()
        ):
            return True  # already read (pipelined), or decrypted and waiting
        give_up = time.monotonic() + self.options.keepalive
        while self.alive and (left := give_up - time.monotonic()) > 0:
            try:
                wait_read(client.fileno(), timeout=min(left, 1.0))
                return True
            except TimeoutError:
                continue
        return False


def _route(
    app: Callable[..., Any], health: set[Any], environ: dict[str, Any], start_response: Any
) -> Any:
    """The WSGI app, except on the probe port, where only the probes are served (never a
    review: that port has no TLS)."""
    if environ.get("gunicorn.socket") not in health:
        return app(environ, start_response)
    if (
        environ.get("REQUEST_METHOD") in ("GET", "HEAD")
        and environ.get("PATH_INFO") in HEALTH_PATHS
    ):
        return app(environ, start_response)
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"not found\n"]


def _port(bind: str) -> int:
    """The port of a HOST:PORT (HOST may be [IPv6])."""
    _host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{bind!r} is not HOST:PORT")
    return int(port)


class WebhookServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        opts = self.options
        binds = [opts.bind] if opts.health_bind is None else [opts.bind, opts.health_bind]
        settings = {
            "bind": binds,
            "certfile": opts.certfile,
            "keyfile": opts.keyfile,
            "workers": opts.workers,
            "worker_class": DeadlineWorker,
            "worker_connections": opts.connections,
            "loglevel": opts.log_level,
            "accesslog": None,
            "keepalive": max(1, math.ceil(opts.keepalive)),  # our idle wait uses the float
            "timeout": 30,
            "graceful_timeout": 10,
            "ssl_context": ReloadingSSLContext(opts.certfile, opts.keyfile),
            "child_exit": _mark_worker_dead,
            # gunicorn 25.1+ opens a control socket for `gunicornc` in $HOME (or
            # $XDG_RUNTIME_DIR), which a read-only root cannot hold: an error at every
            # start, for a tool nobody runs in a pod.
            "control_socket_disable": True,
            "logger_class": AppFormatLogger,
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return build_app(self.options)


class AppFormatLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's own lines (its error log, and its access log if turned on) in the format of
    the program's: the formatter the CLI gave the root logger (`--log-format`: JSON or text,
    ISO-8601 UTC times), instead of gunicorn's `[2026-11-29 08:07:27 +0000] [12] [INFO]`."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        handlers = logging.getLogger().handlers
        formatter = handlers[0].formatter if handlers else None
        if formatter is None:
            return  # not started by the CLI: keep gunicorn's own format
        for handler in (*self.error_log.handlers, *self.access_log.handlers):
            handler.setFormatter(formatter)

    def now(self) -> str:
        """The access log's %(t)s, in ISO-8601 UTC like every other time we write."""
        return "[" + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "]"


def _mark_worker_dead(_server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def serve(options: ServeOptions) -> None:
    for path in (options.certfile, options.keyfile):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} does not exist (make one with `imagestreams certs`)")
    if options.streams_file:
        from webhook.serving.stream_index import iter_streams

        # Fail now, with the file's error, not in every worker. Read one stream at a time
        # and kept nowhere: the master stays small (the workers are forked from it).
        for _ in iter_streams(options.streams_file):
            pass
    if options.health_port is not None and options.health_port == _port(options.bind):
        raise ValueError(f"--health-bind {options.health_bind} is the serving port")
    if options.policies_file:
        from webhook.kube.policy_cache import load_policy_documents

        load_policy_documents(options.policies_file)  # fail now, not in every worker
    # Metrics are shared across workers through files in this directory.
    if not os.environ.get(MULTIPROC_ENV):
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="imagestreams-metrics-")
    _share_modules(options)
    WebhookServer(options).run()


def _share_modules(options: ServeOptions) -> None:
    """Import in the master what every worker imports, so that the workers share those
    pages (copy-on-write) instead of each holding its own copy: Flask, prometheus_client
    and our modules (~35 MiB), for a watch our thin list/watch client, and the kubernetes
    client with the API classes the webhook uses (~50 MiB, kube.connect.import_client) only
    for a configuration the thin client cannot serve. gc.freeze() keeps the collector from
    writing to their objects, which would copy the pages it touches into every worker.
    Indexes and threads are still built after the fork (build_app), in each worker.

    The master patches first, as each gevent worker does when it boots: urllib3 keeps
    references to ssl's classes, and patching ssl after that makes every TLS context in
    the workers recurse until RecursionError."""
    monkey.patch_all()
    modules = ["webhook.serving.app", "webhook.kube.policy_cache", "webhook.kube.watch"]
    if not options.streams_file:
        modules.append("webhook.kube.listwatch")
    for module in modules:
        importlib.import_module(module)  # Flask, prometheus_client, admission, the caches
    if not options.streams_file and _needs_client(options):
        from webhook.kube.connect import import_client

        import_client()
    gc.collect()
    gc.freeze()


def _needs_client(options: ServeOptions) -> bool:
    """Whether the workers' watches need the kubernetes client (and why, said once)."""
    from webhook.kube.connect import ClusterConfigError, rest_config
    from webhook.kube.kubeconfig import Unsupported

    try:
        rest_config(options.kubeconfig, options.context)
    except Unsupported as err:
        log.info("watching through the kubernetes client: %s", err)
        return True
    except ClusterConfigError:
        return True  # each worker's connect() says so
    return False
